//! Starting the daemon so that it outlives the command that started it: `mailroom start`
//! (and `sendmail -bd`, which execs it) re-executes this program, `mailroom`, as
//! `mailroom daemon` in a new session (setsid) with standard input on /dev/null and its
//! output on a pipe until it is ready, then /dev/null, so that it holds no terminal and
//! no pipe of the caller's (a cron job or a PHP request that waits for EOF on the
//! starter's output is not kept waiting).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::sysexits::{Error, ExitCode, Result};

/// Set in the environment of a daemon started by `mailroom start`: it logs to syslog instead of
/// stderr and reports readiness on its standard output.
pub const DETACHED_ENV: &str = "MAILROOM_DETACHED";
/// The line a detached daemon writes once it holds the queue's lock.
pub const READY: &str = "ready";

fn this_program() -> Result<std::path::PathBuf> {
    std::env::current_exe().map_err(|e| Error::io("cannot find this program", &e))
}

fn new_session(cmd: &mut Command) {
    // SAFETY: setsid is async-signal-safe and touches no memory of ours; between fork
    // and exec nothing else runs.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
}

/// `mailroom start`: starts `mailroom daemon` detached and returns its pid once it holds
/// the lock, or its error when it could not start (another daemon runs: 75).
/// `for_sendmail` (`sendmail -bd`) passes `--for-sendmail` on: sendmail has checked who
/// may start it.
pub fn start_daemon(config_dir: &Path, interval: Option<&str>, for_sendmail: bool) -> Result<u32> {
    let (reader, writer) =
        // Close-on-exec, so that in the daemon only the standard descriptors it is given
        // hold the pipe, and our read ends once it replaces them with /dev/null.
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::new(ExitCode::OsErr, format!("pipe: {e}")))?;
    let writer2 = writer.try_clone().map_err(|e| Error::io("dup", &e))?;
    let mut cmd = Command::new(this_program()?);
    if for_sendmail {
        cmd.arg("--for-sendmail");
    }
    cmd.arg("-c").arg(config_dir).arg("daemon");
    if let Some(interval) = interval {
        cmd.arg(format!("--interval={interval}"));
    }
    cmd.env(DETACHED_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer2));
    new_session(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io("cannot start the daemon", &e))?;
    drop(cmd);
    // The daemon writes "ready PID" and then lets go of the pipe; a daemon that fails
    // writes its error and exits. Either way the read ends at EOF.
    let mut said = String::new();
    let _ = std::fs::File::from(reader).read_to_string(&mut said);
    if let Some(pid) = said
        .lines()
        .find_map(|l| l.strip_prefix(READY))
        .and_then(|p| p.trim().parse().ok())
    {
        // The daemon lives on in its own session; reap nothing.
        return Ok(pid);
    }
    let status = child.wait().map_err(|e| Error::io("wait", &e))?;
    let message = said
        .lines()
        .map(|l| {
            ["mailroom: fatal: ", "sendmail: fatal: "]
                .iter()
                .find_map(|p| l.strip_prefix(p))
                .unwrap_or(l)
        })
        .collect::<Vec<_>>()
        .join("; ");
    let code = match status.code() {
        Some(75) => ExitCode::TempFail,
        Some(78) => ExitCode::Config,
        _ => ExitCode::Software,
    };
    let message = if message.is_empty() {
        format!("the daemon did not start ({status})")
    } else {
        message
    };
    Err(Error::new(code, message))
}

/// Called by a detached daemon once it holds its lock: tells the parent, then lets go of
/// the pipe by putting /dev/null on standard output and error.
pub fn report_ready(pid: u32) {
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{READY} {pid}");
    let _ = out.flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto the standard descriptors; `null` stays valid for the call.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
            libc::dup2(null.as_raw_fd(), 2);
        }
    }
    let _ = std::env::set_current_dir("/");
}
