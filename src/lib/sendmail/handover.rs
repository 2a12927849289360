//! How `sendmail` hands root's daemon and delivery modes over to `mailroom`, as Postfix's
//! sendmail hands `-bd`/`-q` over to `postfix`/`postqueue`: by exec, after the root
//! check and after giving up the set-gid group, so that the set-gid program carries no
//! daemon or delivery code at all (nothing in `src/lib/sendmail/` uses the `daemon`
//! module, which a test below checks; `tests/privilege.rs` checks that a refused caller
//! never reaches `mailroom`).
//!
//! `mailroom` is looked for beside this program: the two are installed side by side in
//! `$PREFIX/sbin`, and a test build finds its own in `target/`. It is given
//! `--for-sendmail`, so that it speaks as `sendmail` did (`sendmail: fatal: ...`,
//! `sendmail -bd`'s exit 75 when a daemon runs).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::config::Config;
use crate::privilege;
use crate::queue::{Queue, QueueId};
use crate::sysexits::{Error, ExitCode, Result};

/// The `mailroom` command that does what `sendmail` was asked: `mailroom --for-sendmail
/// -c DIR ARGS...`, with `DIR` the configuration `sendmail` loaded (its `-C`, or
/// `MAIL_CONFIG` for root, or the default), made absolute.
fn mailroom(config: &Config, args: &[&str]) -> Result<Command> {
    let program = crate::programs::beside_this_program(crate::programs::MAILROOM)?;
    let mut cmd = Command::new(program);
    cmd.arg("--for-sendmail")
        .arg("-c")
        .arg(absolute(config.dir()))
        .args(args);
    Ok(cmd)
}

fn absolute(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Replaces this process with `mailroom ARGS...`; returns only when that fails. The
/// set-gid group goes first: `mailroom` needs none, and runs as root only because root
/// asked (callers refuse everyone else before coming here).
pub fn exec(config: &Config, args: &[&str]) -> Error {
    exec_command(config, args, None)
}

/// `-odi`: `mailroom deliver` for message `id`, with its queue file, still locked, as
/// standard input. A flock belongs to the open file, which the exec keeps open, so no
/// daemon or other delivery can take the message in between.
pub fn exec_delivery(config: &Config, id: QueueId, locked: File) -> Error {
    exec_command(
        config,
        &["deliver", "--queued-on-stdin", "--", id.as_str()],
        Some(locked),
    )
}

fn exec_command(config: &Config, args: &[&str], stdin: Option<File>) -> Error {
    if let Err(e) = privilege::drop_group() {
        return e;
    }
    let mut cmd = match mailroom(config, args) {
        Ok(cmd) => cmd,
        Err(e) => return e,
    };
    if let Some(file) = stdin {
        cmd.stdin(Stdio::from(file));
    }
    let e = cmd.exec();
    Error::new(
        ExitCode::OsErr,
        format!(
            "cannot run {}: {}",
            cmd.get_program().to_string_lossy(),
            crate::sysexits::describe_io(&e)
        ),
    )
}

/// `-odb` after root's submission when no daemon runs: `mailroom deliver ID` in a new
/// session (setsid) with standard input, output and error on /dev/null, so that it holds
/// no terminal and no pipe of the caller's (a cron job or a PHP request waiting for EOF
/// on sendmail's output is not kept waiting). Not waited for.
pub fn spawn_delivery(config: &Config, id: QueueId) -> Result<()> {
    let mut cmd = mailroom(config, &["deliver", "--", id.as_str()])?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe and touches no memory of ours; between fork
    // and exec nothing else runs.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn()
        .map(drop)
        .map_err(|e| Error::io("cannot start a background delivery", &e))
}

/// Whether a daemon runs for `queue`: it holds `pid/master.lock` (exclusively) for its
/// whole life, so a shared lock that cannot be had says so. The daemon's side of this
/// contract is `daemon::lock`; `daemon::modes`' tests check that the two agree.
pub fn daemon_running(queue: &Queue) -> bool {
    let Ok(file) = File::open(queue.pid_dir().join(MASTER_LOCK)) else {
        return false;
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(_)) => false,
    }
}

/// The daemon's lock file in `queue_directory/pid/`.
pub const MASTER_LOCK: &str = "master.lock";

#[cfg(test)]
mod tests {
    /// The point of the handover: no source file of the set-gid program's module uses the
    /// daemon's (the needle is split so that this file does not match itself).
    #[test]
    fn sendmail_refers_to_no_daemon_code() {
        let needle = concat!("crate::", "daemon");
        for (name, text) in [
            ("mod.rs", include_str!("mod.rs")),
            ("argv.rs", include_str!("argv.rs")),
            ("handover.rs", include_str!("handover.rs")),
        ] {
            assert!(!text.contains(needle), "sendmail/{name} refers to {needle}");
        }
    }
}
