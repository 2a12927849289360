//! A real Dovecot for the AUTH tests: only its auth service (`protocols =` none), users
//! from a passwd-file with plain-text passwords, its auth-client socket where the test
//! says (mode 0666, so that sessions running as `mail_owner` reach it). Everything it
//! writes is in its own temporary directory; it is killed when dropped.
//!
//! ```ignore
//! let Some(dovecot) = Dovecot::start(&socket, &[("alice", "secret")]) else {
//!     return; // "skipped: dovecot not installed"
//! };
//! ```

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::require_tool;

pub struct Dovecot {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub socket: PathBuf,
}

impl Dovecot {
    /// Starts `dovecot -F` with `users` (name, password) and its auth socket at
    /// `socket`, and waits until the socket answers. `None` (after the skip line) when
    /// Dovecot is not installed.
    pub fn start(socket: &Path, users: &[(&str, &str)]) -> Option<Dovecot> {
        // Debian puts it in /usr/sbin, which an ordinary user's PATH often lacks.
        const SBIN: &str = "/usr/sbin/dovecot";
        let program = if std::path::Path::new(SBIN).is_file() {
            SBIN
        } else if require_tool("dovecot") {
            "dovecot"
        } else {
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        if let Some(parent) = socket.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        let passwd: String = users
            .iter()
            .map(|(user, password)| format!("{user}:{{PLAIN}}{password}\n"))
            .collect();
        std::fs::write(root.join("users"), passwd).unwrap();
        // Dovecot's own processes run as these users: root in CI; anyone else can only
        // run it as itself, which also means no chown to the group dovecot and no
        // chroot (harmless settings for root too).
        let unprivileged = "service stats {\n  unix_listener stats-writer {\n    group =\n  }\n}\n\
            service dict {\n  unix_listener dict {\n    group =\n  }\n}\n\
            service dict-async {\n  unix_listener dict-async {\n    group =\n  }\n}\n\
            service anvil {\n  chroot =\n}\n";
        let me = nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map_or_else(|| "root".to_string(), |u| u.name);
        let conf = format!(
            "base_dir = {root}/run\nstate_dir = {root}/state\nlog_path = {root}/dovecot.log\n\
             protocols =\nssl = no\nauth_mechanisms = plain login\n\
             disable_plaintext_auth = no\nauth_failure_delay = 0\n\
             default_internal_user = {me}\ndefault_login_user = {me}\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN {root}/users\n}}\n\
             userdb {{\n  driver = static\n  args = uid={uid} gid={gid} home={root}\n}}\n\
             service auth {{\n  unix_listener {socket} {{\n    mode = 0666\n  }}\n}}\n\
             {unprivileged}",
            root = root.display(),
            socket = socket.display(),
            uid = nix::unistd::getuid(),
            gid = nix::unistd::getgid(),
        );
        std::fs::write(root.join("dovecot.conf"), conf).unwrap();
        let child = Command::new(program)
            .args(["-F", "-c"])
            .arg(root.join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dovecot");
        let mut dovecot = Dovecot {
            child: Some(child),
            dir,
            socket: socket.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while UnixStream::connect(socket).is_err() {
            if let Some(child) = dovecot.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!("dovecot exited ({status}): {err}\n{}", dovecot.log());
            }
            assert!(
                Instant::now() < deadline,
                "dovecot's socket {} never answered:\n{}",
                socket.display(),
                dovecot.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(dovecot)
    }

    /// Dovecot's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// Stops it now (the socket goes away with it).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM: Dovecot's master takes its children and its sockets with it.
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}
