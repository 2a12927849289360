//! Handing a message to `sendmail` as a separate program, the Unix way: `mail` needs no
//! privilege of its own, and whatever the local MTA is (ours, Postfix, an `msmtp` shim)
//! does the queueing. The program is the `sendmail` environment variable (mailx's
//! variable of that name), else `/usr/sbin/sendmail`.

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::ExitError;
use crate::sysexits::ExitCode;

pub const DEFAULT_SENDMAIL: &str = "/usr/sbin/sendmail";

/// The sendmail program to run.
pub fn program() -> PathBuf {
    program_from(std::env::var_os("sendmail"))
}

fn program_from(var: Option<OsString>) -> PathBuf {
    match var {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(DEFAULT_SENDMAIL),
    }
}

/// The argv after the program name: `-i` (a lone `.` is text), `-f` for an explicit sender,
/// `-v` if asked, and the recipients after `--` so none can be read as an option.
pub fn arguments(sender: Option<&str>, recipients: &[String], verbose: bool) -> Vec<String> {
    let mut args = vec!["-i".to_string()];
    if let Some(sender) = sender {
        args.push("-f".into());
        args.push(sender.into());
    }
    if verbose {
        args.push("-v".into());
    }
    args.push("--".into());
    args.extend(recipients.iter().cloned());
    args
}

/// Runs `program` with `args`, feeding it `message`. Its stderr goes straight to ours;
/// a non-zero exit becomes a failure with the same code (a death by signal, 75: the mail
/// may be retried).
pub fn run(program: &Path, args: &[String], message: &[u8]) -> Result<(), ExitError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            let code = match e.kind() {
                io::ErrorKind::NotFound => ExitCode::Unavailable,
                io::ErrorKind::PermissionDenied => ExitCode::NoPerm,
                _ => ExitCode::OsErr,
            };
            ExitError::new(
                code.as_i32(),
                format!(
                    "cannot run {}: {}",
                    program.display(),
                    crate::sysexits::describe_io(&e)
                ),
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A sendmail that exits early (bad address) closes the pipe; its exit status,
        // read below, says why, so a broken pipe here is not reported on its own.
        match stdin.write_all(message) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
            Err(e) => {
                return Err(ExitError::new(
                    ExitCode::IoErr.as_i32(),
                    format!("writing to {}: {e}", program.display()),
                ));
            }
        }
    }
    let status = child.wait().map_err(|e| {
        ExitError::new(
            ExitCode::OsErr.as_i32(),
            format!("waiting for {}: {e}", program.display()),
        )
    })?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(ExitError::new(
            code,
            format!("{} exited with status {code}", program.display()),
        )),
        None => Err(ExitError::new(
            ExitCode::TempFail.as_i32(),
            format!(
                "{} killed by signal {}",
                program.display(),
                status.signal().unwrap_or(0)
            ),
        )),
    }
}

/// Keeps an unsent message where mailx does (`$DEAD`, else `~/dead.letter`), appended in
/// mbox form, so a failed send never loses what the user typed. Returns where it went.
pub fn save_dead_letter(message: &[u8]) -> Option<PathBuf> {
    let path = match std::env::var_os("DEAD") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(std::env::var_os("HOME")?).join("dead.letter"),
    };
    let line = crate::mailbox::mbox::from_line(&super::login_name(), chrono::Local::now());
    let framed =
        crate::mailbox::mbox::frame(line.as_bytes(), &crate::mailbox::mbox::quote_from(message));
    let policy = crate::mailbox::lock::Policy {
        dotlock_optional: true,
        ..Default::default()
    };
    crate::mailbox::mbox::append(&path, &framed, &policy)
        .ok()
        .map(|()| path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_is_unix_style() {
        assert_eq!(
            arguments(Some("me@x"), &["a@x".into(), "-b".into()], false),
            ["-i", "-f", "me@x", "--", "a@x", "-b"]
        );
        assert_eq!(
            arguments(None, &["a".into()], true),
            ["-i", "-v", "--", "a"]
        );
        assert_eq!(program_from(None), PathBuf::from(DEFAULT_SENDMAIL));
        assert_eq!(
            program_from(Some("".into())),
            PathBuf::from(DEFAULT_SENDMAIL)
        );
        assert_eq!(
            program_from(Some("/x/fake".into())),
            PathBuf::from("/x/fake")
        );
    }

    #[test]
    fn exit_status_is_passed_on() {
        let ok = run(
            Path::new("/bin/sh"),
            &["-c".into(), "cat >/dev/null".into()],
            b"x",
        );
        assert!(ok.is_ok());
        let e = run(Path::new("/bin/sh"), &["-c".into(), "exit 75".into()], b"").unwrap_err();
        assert_eq!(e.code, 75);
        let e = run(Path::new("/nonexistent/sendmail"), &[], b"").unwrap_err();
        assert_eq!(e.code, 69);
    }
}
