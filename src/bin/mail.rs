//! `mail`: send a message from a script or terminal, or read a mailbox interactively
//! (bsd-mailx/s-nail compatible). Parses argv, calls `mailroom::mail::run`, maps the result
//! to an exit status; messages are `mail: ...` on stderr.

use std::process::ExitCode;

use mailroom::mail::{self, argv};

fn main() -> ExitCode {
    let args = match mailroom::getopt::text_args(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("mail: fatal: {message}");
            return ExitCode::from(mailroom::sysexits::ExitCode::Usage.as_i32() as u8);
        }
    };
    let inv = match argv::parse(&args, |f| std::path::Path::new(f).exists()) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("mail: {e}");
            eprintln!("{}", argv::USAGE);
            return ExitCode::from(e.code() as u8);
        }
    };
    match mail::run(&inv) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(failure) => {
            if let Some(message) = &failure.message {
                eprintln!("mail: {message}");
            }
            ExitCode::from(failure.code.clamp(1, 255) as u8)
        }
    }
}
