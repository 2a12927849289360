//! `sendmail`: submit a message to the queue (and the legacy modes `-bp`, `-bi`, ...).
//! Parses the legacy argv, calls the library, maps errors to sysexits codes.
//!
//! Started once per message by every script that sends mail, so it skips the Rust
//! runtime's start-up: with `no_main` the C runtime calls [`main`] directly. What that
//! start-up would do and why we can go without it:
//! - it reads `/proc/self/maps` and installs a `SIGSEGV` handler on an alternate stack to
//!   print "stack overflow" (and unmaps that stack at exit, a TLB flush): an overflow still
//!   stops at the kernel's guard gap, only with a plain `SIGSEGV`;
//! - it opens `/dev/null` on any of descriptors 0, 1 and 2 that the caller left closed,
//!   which [`main`] does itself ([`mailroom::privilege::open_standard_descriptors`]);
//! - it ignores `SIGPIPE`, which [`main`] does itself, so that a closed pipe is an error
//!   to report and not a silent death;
//! - it flushes `stdout` at exit, which [`main`] does itself.
//!
//! `std::env::args` needs none of it: on glibc the standard library takes `argv` from an
//! `.init_array` entry. Measured in the README's Performance section.
#![no_main]

use std::io::{self, Write};

use mailroom::sendmail;
use mailroom::sendmail::argv as sendmail_argv;

#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // SAFETY: setting a signal's disposition to SIG_IGN runs no code of ours; nothing
    // else is running yet.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    if let Err(e) = mailroom::privilege::open_standard_descriptors() {
        // Safe to say: stderr is the caller's, /dev/null, or closed (the text is lost).
        eprintln!("sendmail: fatal: open /dev/null: {e}");
        return mailroom::sysexits::ExitCode::OsErr.as_i32();
    }
    // A panic must not unwind into the C runtime; 101 is what a Rust `main` exits with.
    let code = std::panic::catch_unwind(sendmail).unwrap_or(101);
    // Nothing flushes stdout after `main` returns to the C runtime but this; like the
    // runtime's own flush at exit, a reader that has gone away is not an error.
    let _ = io::stdout().flush();
    i32::from(code)
}

fn sendmail() -> u8 {
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
            return mailroom::sysexits::ExitCode::Usage.as_i32() as u8;
        }
    };
    let inv = match sendmail_argv::parse(&program, &args) {
        Ok(inv) => inv,
        Err(e) => {
            if let Some(complaint) = &e.complaint {
                eprintln!("sendmail: {complaint}");
            }
            eprintln!("sendmail: fatal: {}", e.fatal);
            return mailroom::sysexits::ExitCode::Usage.as_i32() as u8;
        }
    };
    for warning in &inv.warnings {
        eprintln!("sendmail: warning: {warning}");
    }
    match sendmail::run(&inv, io::stdin().lock(), &mut io::stdout().lock()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("sendmail: fatal: {e}");
            e.code() as u8
        }
    }
}
