//! `sendmail`: submit a message to the queue (and the legacy modes `-bp`, `-bi`, ...).
//! Parses the legacy argv, calls the library, maps errors to sysexits codes.

use std::io;
use std::process::ExitCode;

use mailroom::sendmail;
use mailroom::sendmail::argv as sendmail_argv;

fn main() -> ExitCode {
    // Installed set-gid: nothing of the caller's environment but the locale is trusted.
    mailroom::privilege::sanitize_environment();
    let mut args = std::env::args_os();
    let program = args
        .next()
        .as_deref()
        .and_then(|p| std::path::Path::new(p).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sendmail".into());
    // The name only picks a mode (`mailq`, `newaliases`); the arguments are refused rather
    // than altered when they are not UTF-8.
    let args = match mailroom::getopt::text_args(args) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("sendmail: fatal: {message}");
            return ExitCode::from(mailroom::sysexits::ExitCode::Usage.as_i32() as u8);
        }
    };
    let inv = match sendmail_argv::parse(&program, &args) {
        Ok(inv) => inv,
        Err(e) => {
            if let Some(complaint) = &e.complaint {
                eprintln!("sendmail: {complaint}");
            }
            eprintln!("sendmail: fatal: {}", e.fatal);
            return ExitCode::from(mailroom::sysexits::ExitCode::Usage.as_i32() as u8);
        }
    };
    for warning in &inv.warnings {
        eprintln!("sendmail: warning: {warning}");
    }
    match sendmail::run(&inv, io::stdin().lock(), &mut io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sendmail: fatal: {e}");
            ExitCode::from(e.code() as u8)
        }
    }
}
