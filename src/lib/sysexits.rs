//! The `sysexits.h` exit codes and the one error type every program maps onto them.
//!
//! Each binary's `main` turns an [`Error`] into `program: fatal: message` on stderr and
//! exits with [`Error::code`]. Callers of sendmail (cron, PHP, git send-email) read the
//! code: 75 means "try again later", the others mean "this will never work".

use std::fmt;
use std::io;

/// Exit codes from `sysexits.h`, with the meaning the original sendmail gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum ExitCode {
    Ok = 0,
    /// The command was used incorrectly: unknown flag, missing argument, no recipients.
    Usage = 64,
    /// The input data was incorrect: malformed address, no recipient headers with `-t`.
    DataErr = 65,
    /// An input file did not exist or was not readable.
    NoInput = 66,
    /// The addressee (or the invoking user) is unknown.
    NoUser = 67,
    /// A service is unavailable.
    Unavailable = 69,
    /// An internal software error.
    Software = 70,
    /// A system error (cannot fork, out of memory...).
    OsErr = 71,
    /// A file that must be created could not be.
    CantCreat = 73,
    /// An error in reading or writing a file.
    IoErr = 74,
    /// A temporary failure: the caller should try again later.
    TempFail = 75,
    /// The caller lacks the permission for what it asked.
    NoPerm = 77,
    /// Something was found unconfigured or misconfigured.
    Config = 78,
}

impl ExitCode {
    pub fn as_i32(self) -> i32 {
        self as i32
    }
}

/// An error that ends a program: what went wrong, and the exit code that says so.
#[derive(Debug)]
pub struct Error {
    pub code: ExitCode,
    pub message: String,
}

impl Error {
    pub fn new(code: ExitCode, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Error {
        Error::new(ExitCode::Usage, message)
    }

    pub fn data(message: impl Into<String>) -> Error {
        Error::new(ExitCode::DataErr, message)
    }

    pub fn config(message: impl Into<String>) -> Error {
        Error::new(ExitCode::Config, message)
    }

    pub fn temp(message: impl Into<String>) -> Error {
        Error::new(ExitCode::TempFail, message)
    }

    pub fn perm(message: impl Into<String>) -> Error {
        Error::new(ExitCode::NoPerm, message)
    }

    pub fn software(message: impl Into<String>) -> Error {
        Error::new(ExitCode::Software, message)
    }

    /// An I/O failure while working on `what` (a path or a description). Failures that
    /// may go away (disk full, quota, too many files) are temporary; a missing permission
    /// is not.
    pub fn io(what: impl fmt::Display, err: &io::Error) -> Error {
        let code = match err.kind() {
            io::ErrorKind::PermissionDenied => ExitCode::NoPerm,
            _ => ExitCode::TempFail,
        };
        Error::new(code, format!("{what}: {}", describe_io(err)))
    }

    pub fn code(&self) -> i32 {
        self.code.as_i32()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The C library's wording of an I/O error ("No such file or directory"), without the
/// " (os error 2)" suffix Rust appends, so our messages read like Postfix's.
pub fn describe_io(err: &io::Error) -> String {
    let text = err.to_string();
    match text.rfind(" (os error ") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_read_like_libc() {
        let err = io::Error::from_raw_os_error(libc::ENOENT);
        let e = Error::io("open /x/main.cf", &err);
        assert_eq!(e.message, "open /x/main.cf: No such file or directory");
        assert_eq!(e.code, ExitCode::TempFail);
        let err = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(Error::io("x", &err).code, ExitCode::NoPerm);
    }
}
