//! The `sendmail` command: dispatches the mode chosen on the command line. Submission is
//! the common case and the one that must be fast: one config read, one durable write.

use std::io::{BufRead, Write};

use crate::aliases;
use crate::config::Config;
use crate::log::Log;
use crate::queue::Queue;
use crate::sendmail_argv::{Invocation, Mode};
use crate::submit::{self, Invoker, Settings};
use crate::sysexits::{Error, ExitCode, Result};

/// Runs sendmail as `inv` asks, reading a message from `stdin` when submitting and
/// writing reports (`-bv`, `-bp`) to `stdout`. Warnings go to stderr.
pub fn run(inv: &Invocation, stdin: impl BufRead, stdout: &mut dyn Write) -> Result<()> {
    let config = Config::load(inv.config_dir.as_deref())?;
    match inv.mode {
        Mode::Submit => {
            let queued = submit_message(&config, inv, stdin);
            if let Err(e) = &queued {
                // Postfix logs sendmail's fatal errors too, so the administrator sees
                // what callers were told.
                Log::from_config(&config, "sendmail").fatal(&e.message);
            }
            queued.map(drop)
        }
        Mode::Newaliases => {
            aliases::rebuild_all(&config, &mut |w| eprintln!("sendmail: warning: {w}"))?;
            Ok(())
        }
        Mode::Verify => verify(&config, inv, stdout),
        Mode::Smtp => crate::smtpd::run_stdio(&config, Invoker::current().uid, stdin, stdout),
        Mode::ListQueue => crate::mailq::run_as(&config, "sendmail", false, stdout),
        Mode::Nothing => Ok(()),
        other => Err(Error::new(
            ExitCode::Unavailable,
            format!(
                "{} is not supported by this version of mailroom",
                mode_flag(other)
            ),
        )),
    }
}

fn submit_message(config: &Config, inv: &Invocation, stdin: impl BufRead) -> Result<()> {
    let settings = Settings {
        myhostname: config.myhostname()?,
        myorigin: config.myorigin()?,
        message_size_limit: config.message_size_limit()?,
        header_size_limit: config.number("header_size_limit")?,
    };
    let queue = Queue::new(config.queue_directory()?);
    submit::submit(&queue, &settings, &Invoker::current(), &inv.request, stdin)?;
    Ok(())
}

/// `-bv`: one line per address on stdout. Unlike Postfix, which mails the report and
/// always exits 0, the exit status says whether every address is deliverable.
fn verify(config: &Config, inv: &Invocation, stdout: &mut dyn Write) -> Result<()> {
    if inv.request.recipients.is_empty() {
        return Err(Error::usage("-bv requires at least one address"));
    }
    let verdicts = aliases::verify(config, &inv.request.recipients, &mut |w| {
        eprintln!("sendmail: warning: {w}")
    })?;
    for verdict in &verdicts {
        writeln!(stdout, "{verdict}").map_err(|e| Error::io("write", &e))?;
    }
    let failed = verdicts.iter().filter(|v| !v.deliverable).count();
    if failed == 0 {
        return Ok(());
    }
    Err(Error::new(
        ExitCode::NoUser,
        format!("{failed} of {} addresses not deliverable", verdicts.len()),
    ))
}

fn mode_flag(mode: Mode) -> &'static str {
    match mode {
        Mode::Submit => "-bm",
        Mode::ListQueue => "-bp",
        Mode::Newaliases => "-bi",
        Mode::Verify => "-bv",
        Mode::Smtp => "-bs",
        Mode::Daemon => "-bd",
        Mode::DaemonForeground => "-bD",
        Mode::RunQueue => "-q",
        Mode::Nothing => "-bh",
    }
}
