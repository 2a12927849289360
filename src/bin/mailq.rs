//! `mailq`: list the mail queue in Postfix's format (`-j`/`--json`: one JSON object per
//! message, as `postqueue -j`). Parses argv, calls `mailroom::mailq`, maps errors to
//! sysexits codes.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use mailroom::config::Config;
use mailroom::mailq::Args;
use mailroom::sysexits::{Error, ExitCode as Sysexit};

fn main() -> ExitCode {
    // Installed set-gid (to read the queue's envelopes): trust none of the environment.
    mailroom::privilege::sanitize_environment();
    let Some(argv) = text_argv("mailq") else {
        return ExitCode::from(Sysexit::Usage.as_i32() as u8);
    };
    let args = match Args::try_parse_from(argv) {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(Sysexit::Usage.as_i32() as u8);
        }
    };
    match try_main(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mailq: fatal: {e}");
            ExitCode::from(e.code() as u8)
        }
    }
}

fn try_main(args: &Args) -> Result<(), Error> {
    let config = Config::load(args.config_dir.as_deref())?;
    for warning in config.warnings() {
        eprintln!("mailq: warning: {warning}");
    }
    // The listing comes in rendered chunks of a few dozen KB; a buffer of 64 KB writes
    // them in few system calls without growing the peak memory of a large listing.
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    mailroom::mailq::run(&config, args.json, &mut out)?;
    // `run` flushed; a failure here is a closed pipe after the fact.
    let _ = out.flush();
    Ok(())
}

/// argv as text, the program name first (as clap wants it); `None` after telling the
/// caller which argument is not UTF-8.
fn text_argv(program: &str) -> Option<Vec<String>> {
    match mailroom::getopt::text_args(std::env::args_os().skip(1)) {
        Ok(args) => Some(std::iter::once(program.to_string()).chain(args).collect()),
        Err(message) => {
            eprintln!("{program}: fatal: {message}");
            None
        }
    }
}
