//! `newaliases`: compile every table in `alias_database` into its CDB database.
//! Parses argv, calls `mailroom::aliases::rebuild_all`, maps errors to sysexits codes.

use std::process::ExitCode;

use clap::Parser;
use mailroom::aliases;
use mailroom::aliases::NewaliasesArgs as Args;
use mailroom::config::Config;
use mailroom::sysexits::Error;

fn main() -> ExitCode {
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("newaliases: fatal: {err}");
            ExitCode::from(err.code() as u8)
        }
    }
}

fn try_main() -> Result<(), Error> {
    let argv = mailroom::getopt::text_args(std::env::args_os().skip(1))
        .map_err(|e| Error::usage(e.to_string()))?;
    let args = match Args::try_parse_from(std::iter::once("newaliases".to_string()).chain(argv)) {
        Ok(args) => args,
        Err(err) if !err.use_stderr() => {
            // --help and --version: clap prints them to stdout.
            let _ = err.print();
            return Ok(());
        }
        Err(err) => return Err(Error::usage(usage_detail(&err))),
    };
    let config = Config::load(args.config_dir.as_deref())?;
    for warning in config.warnings() {
        eprintln!("newaliases: warning: {warning}");
    }
    let compiled = aliases::rebuild_all(&config, &mut |warning| {
        eprintln!("newaliases: warning: {warning}");
    })?;
    if args.verbose > 0 {
        for table in &compiled {
            eprintln!(
                "newaliases: {}: {} entries",
                table.database.display(),
                table.entries
            );
        }
    }
    Ok(())
}

/// clap's own one-line description of what was wrong (`unexpected argument '-x' found`).
fn usage_detail(err: &clap::Error) -> String {
    let text = err.to_string();
    let first = text.lines().next().unwrap_or("");
    format!(
        "{}; usage: newaliases [-v] [-c DIR]",
        first.strip_prefix("error: ").unwrap_or(first)
    )
}
