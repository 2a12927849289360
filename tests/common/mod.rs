//! Shared test fixture: a temporary mail system (config dir, queue, spool) that the real
//! binaries are pointed at through `MAIL_CONFIG`.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use mailroom::queue::{Envelope, Queue, QueueId, QueueName};

pub mod dns_server;
pub mod dovecot;
pub mod listening;
pub mod smtp_server;
mod tools;
// Not every test binary that includes common uses them.
#[allow(unused_imports)]
pub use tools::{require_python_module, require_python_package, require_tool};

pub struct MailSystem {
    pub dir: tempfile::TempDir,
}

impl MailSystem {
    /// A mail system whose main.cf has `myhostname = vm`, `myorigin = mail.server.com`
    /// (the reference machine's names) and everything in a temporary directory, plus
    /// `extra` lines (later lines win). `smtpd_authentication_results = no`: a test must
    /// not wait on the internet's DNS; tests/dns.rs turns it on against a server of its own.
    pub fn new(extra: &str) -> MailSystem {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("config")).unwrap();
        std::fs::create_dir_all(root.join("spool")).unwrap();
        let main_cf = format!(
            "myhostname = vm\nmyorigin = mail.server.com\nmydestination = mail.server.com, $myhostname, localhost\n\
             queue_directory = {root}/queue\nmail_spool_directory = {root}/spool\n\
             maillog_file = {root}/maillog\nalias_maps = cdb:{root}/config/aliases\n\
             alias_database = cdb:{root}/config/aliases\nsmtpd_port =\n\
             setgid_group =\nsmtpd_authentication_results = no\n{owner}{extra}\n",
            root = root.display(),
            owner = privilege_separation(root),
        );
        std::fs::write(root.join("config/main.cf"), main_cf).unwrap();
        MailSystem { dir }
    }

    /// Adds `lines` at the end of main.cf (later lines win).
    pub fn append_to_main_cf(&self, lines: &str) {
        let main_cf = self.config_dir().join("main.cf");
        let text = std::fs::read_to_string(&main_cf).unwrap();
        std::fs::write(&main_cf, format!("{text}{lines}")).unwrap();
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_dir(&self) -> PathBuf {
        self.root().join("config")
    }

    /// The log (`maillog_file`), empty before the first line.
    pub fn maillog(&self) -> String {
        std::fs::read_to_string(self.root().join("maillog")).unwrap_or_default()
    }

    /// `user`'s mailbox in the spool, empty before the first delivery.
    pub fn mailbox(&self, user: &str) -> String {
        std::fs::read_to_string(self.root().join("spool").join(user)).unwrap_or_default()
    }

    pub fn queue(&self) -> Queue {
        Queue::new(self.root().join("queue"))
    }

    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("MAIL_CONFIG", self.config_dir()).env("TZ", "UTC");
        cmd
    }

    /// Runs a binary with `args`, feeding `stdin`.
    pub fn run(&self, program: &str, args: &[&str], stdin: &[u8]) -> Output {
        feed(self.command(program).args(args), stdin)
    }

    /// Every message in the given queue: its envelope and its message bytes.
    pub fn messages(&self, queue: QueueName) -> Vec<(Envelope, Vec<u8>)> {
        let q = self.queue();
        let mut out = Vec::new();
        for (id, name) in q.list(&[queue]).unwrap() {
            out.push(self.message(name, id));
        }
        out
    }

    pub fn message(&self, queue: QueueName, id: QueueId) -> (Envelope, Vec<u8>) {
        let q = self.queue();
        let env = q.read_envelope(queue, id).expect("envelope");
        let bytes = std::fs::read(q.path(queue, id)).unwrap();
        let message = bytes[env.message_offset as usize..].to_vec();
        assert_eq!(message.len() as u64, env.size, "size record matches");
        (env, message)
    }

    /// All files (temporary ones included) in a queue directory.
    pub fn files_in(&self, queue: QueueName) -> Vec<String> {
        match std::fs::read_dir(self.queue().dir(queue)) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Waits up to `limit` for `cond`; fails with `sys`'s log.
pub fn wait_for(
    sys: &MailSystem,
    what: &str,
    limit: std::time::Duration,
    mut cond: impl FnMut() -> bool,
) {
    let deadline = std::time::Instant::now() + limit;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}; log:\n{}",
            sys.maillog()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The user running the test, who the mail is for (a user other than root can deliver
/// only to itself).
pub fn me() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .expect("the test's user has a name")
}

/// The account a mail system run as root gives `mail_owner`: the SMTP sessions drop to
/// it. Created once per machine (a system account, never removed: tests run in
/// parallel, and twice).
pub const TEST_MAIL_OWNER: &str = "mailroom-tests";

/// What a test mail system in `root` needs for its processes to drop privileges: as
/// root, the `mail_owner` line naming [`TEST_MAIL_OWNER`] (created if missing), and
/// `root` made traversable (0755) so that it can reach the queue. Empty for another
/// user, whose processes run as itself.
pub fn privilege_separation(root: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        return String::new();
    }
    ensure_test_mail_owner();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("mail_owner = {TEST_MAIL_OWNER}\n")
}

/// Creates [`TEST_MAIL_OWNER`] unless it exists. Other test programs may be creating it
/// (or other users) at the same moment: `useradd` then finds it made, or the password
/// file locked, and is tried again.
fn ensure_test_mail_owner() {
    static DONE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    for _ in 0..100 {
        if nix::unistd::User::from_name(TEST_MAIL_OWNER)
            .ok()
            .flatten()
            .is_some()
        {
            *done = true;
            return;
        }
        let _ = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home"])
            .args(["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"])
            .arg(TEST_MAIL_OWNER)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("cannot create the test user {TEST_MAIL_OWNER} (useradd)");
}

/// Runs `cmd` with `stdin` as its input and returns what it wrote.
pub fn feed(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut input = child.stdin.take().expect("stdin");
    // The program may exit before reading everything (an error, a lone dot).
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().expect("wait")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Parses a message with Python's `email` package and returns what the script prints.
pub fn python(script: &str, input: &[u8]) -> String {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
