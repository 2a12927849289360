//! The `sendmail` command: dispatches the mode chosen on the command line. Submission is
//! the common case and the one that must be fast: one config read, one durable write.
//!
//! The daemon and deliveries are not here: root's `-bd`, `-bD`, `-q` and `-odi` hand
//! over to `mailroom` by exec, and `-odb` starts it (see [`handover`]). This module and
//! its children must never use the `daemon` module: the set-gid program carries no
//! daemon code path (`handover`'s tests check).

pub mod argv;
pub mod handover;
pub mod submit;

use std::fs::File;
use std::io::{BufRead, Write};

use crate::aliases;
use crate::config::Config;
use crate::log::Log;
use crate::privilege;
use crate::queue::{Queue, QueueId};
use crate::sysexits::{Error, ExitCode, Result};
use argv::{DeliveryMode, Invocation, Mode};
use submit::Invoker;

/// Runs sendmail as `inv` asks, reading a message from `stdin` when submitting and
/// writing reports (`-bv`, `-bp`) to `stdout`. Warnings go to stderr.
///
/// Installed set-gid and run by someone other than root (see [`privilege`]), it submits
/// (`-bm`, `-t`, `-bs`), lists the queue as `authorized_mailq_users` allows (`-bp`) and
/// verifies (`-bv`, without the group); `-bi`, `-q`, `-bd` and `-bD` are root's and exit
/// 77, as Postfix's are, before anything is handed over. The message is left to the
/// daemon: `-odb` and `-odi` only queue.
///
/// For root, `-bd`, `-bD` and `-q` (and `-odi` once the message is queued) replace this
/// process with `mailroom` (see [`handover`]) and return only when that fails.
pub fn run(inv: &Invocation, stdin: impl BufRead, stdout: &mut dyn Write) -> Result<()> {
    let distrusted = privilege::distrusts_caller();
    let config = Config::load(inv.config_dir.as_deref())?;
    if distrusted {
        let root_only = |what: &str| {
            let uid = nix::unistd::getuid();
            privilege::require_root(&format!(
                "{what} is for the super-user only (you are uid {uid})"
            ))
        };
        match inv.mode {
            Mode::Newaliases => root_only("sendmail -bi (newaliases)")?,
            Mode::RunQueue => root_only("sendmail -q (running the queue)")?,
            Mode::Daemon | Mode::DaemonForeground => root_only("sendmail -bd/-bD (the daemon)")?,
            Mode::Verify | Mode::Nothing => privilege::drop_group()?,
            Mode::Submit | Mode::Smtp | Mode::ListQueue => {}
        }
    }
    match inv.mode {
        Mode::Submit => {
            let queued = submit_message(&config, inv, stdin);
            // The file is in place: the set-gid group has done its job.
            privilege::drop_group()?;
            if let Err(e) = &queued {
                // Postfix logs sendmail's fatal errors too, so the administrator sees
                // what callers were told.
                Log::from_config(&config, "sendmail").fatal(&e.message);
            }
            let (id, locked) = queued?;
            if distrusted {
                // Only root can move mail out of maildrop/; the daemon, woken by the new
                // name, delivers it (Postfix's sendmail never delivers by itself either).
                return Ok(());
            }
            after_submit(&config, inv.delivery, id, locked)
        }
        Mode::Newaliases => {
            aliases::rebuild_all(&config, &mut |w| eprintln!("sendmail: warning: {w}"))?;
            Ok(())
        }
        Mode::Verify => verify(&config, inv, stdout),
        Mode::Smtp => crate::smtpd::run_stdio(&config, Invoker::current().uid, stdin, stdout),
        Mode::ListQueue => crate::mailq::run_as(&config, "sendmail", false, stdout),
        Mode::Nothing => Ok(()),
        Mode::DaemonForeground => Err(handover_daemon(&config, "daemon", inv)),
        Mode::Daemon => Err(handover_daemon(&config, "start", inv)),
        Mode::RunQueue => {
            let mut args = vec!["deliver"];
            if let Some(id) = inv.queue_id.as_deref() {
                args.extend(["--", id]);
            }
            Err(handover::exec(&config, &args))
        }
    }
}

/// `-bD` (`mailroom daemon`) and `-bd` (`mailroom start`), with `-q30m`'s interval.
fn handover_daemon(config: &Config, command: &str, inv: &Invocation) -> Error {
    let interval = inv
        .queue_interval
        .as_deref()
        .map(|i| format!("--interval={i}"));
    let mut args = vec![command];
    args.extend(interval.as_deref());
    handover::exec(config, &args)
}

/// What happens to a message root has just queued: `-odq` leaves it; `-odb` leaves it
/// to a running daemon (whose watch on `maildrop/` has seen it) or starts a delivery of
/// it in the background; `-odi` hands it, still locked, to `mailroom deliver`, which
/// exits as `-odi` always did (0 delivered, 67, 69 bounced, 75 deferred).
fn after_submit(
    config: &Config,
    mode: DeliveryMode,
    id: QueueId,
    locked: Option<File>,
) -> Result<()> {
    match mode {
        DeliveryMode::QueueOnly => Ok(()),
        DeliveryMode::Interactive => match locked {
            Some(file) => Err(handover::exec_delivery(config, id, file)),
            None => Ok(()),
        },
        DeliveryMode::Background => {
            if handover::daemon_running(&Queue::from_config_lazily(config)?) {
                return Ok(());
            }
            // The message is safely queued; failing to start a delivery only delays it.
            let _ = handover::spawn_delivery(config, id);
            Ok(())
        }
    }
}

/// Queues the message; returns its ID, and for `-odi` the queue file, still locked.
fn submit_message(
    config: &Config,
    inv: &Invocation,
    stdin: impl BufRead,
) -> Result<(QueueId, Option<File>)> {
    let settings = crate::cleanup::Settings::from_config(config)?;
    let queue = Queue::from_config_lazily(config)?;
    let invoker = Invoker::current();
    if inv.delivery == DeliveryMode::Interactive {
        let (queued, file) =
            submit::submit_locked(&queue, &settings, &invoker, &inv.request, stdin)?;
        return Ok((queued.id, Some(file)));
    }
    let queued = submit::submit(&queue, &settings, &invoker, &inv.request, stdin)?;
    Ok((queued.id, None))
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
