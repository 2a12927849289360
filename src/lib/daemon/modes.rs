//! What `sendmail`'s daemon and delivery modes do: `-bD` (daemon in the foreground), `-bd`
//! (detached), `-q` (run the queue once), and after a submission `-odb` (background
//! delivery, the default), `-odi` (deliver before exiting) and `-odq` (queue only).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::config::Config;
use crate::deliver::Status;
use crate::log::Fallback;
use crate::queue::{LockedFile, Queue, QueueId, QueueName};
use crate::sysexits::{Error, ExitCode, Result};

use super::process::{self, Report};
use super::{Runtime, detach, lock, pickup, scheduler};

/// `-odb` (deliver in the background, the default), `-odi` (deliver before exiting),
/// `-odq` (only queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliveryMode {
    #[default]
    Background,
    Interactive,
    QueueOnly,
}

/// The configuration directory as an absolute path, for processes that run elsewhere.
fn absolute(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// `-q30m`: a bare number is minutes, as in sendmail.
pub fn parse_interval(text: &str) -> Result<Duration> {
    crate::config::parse_time(text, 'm').map_err(|why| Error::usage(format!("-q{text}: {why}")))
}

/// `sendmail -bD` (and the process `-bd` starts): runs the daemon until SIGTERM.
pub fn foreground(config: &Config, interval: Option<&str>) -> Result<()> {
    let interval = interval.map(parse_interval).transpose()?;
    let detached = std::env::var_os(detach::DETACHED_ENV).is_some();
    let fallback = if detached {
        Fallback::Syslog
    } else {
        Fallback::Stderr
    };
    let dir = absolute(config.dir());
    let load = || {
        let fresh = Config::load(Some(&dir))?;
        Runtime::from_config(&fresh, fallback)
    };
    let ready = |pid| {
        if detached {
            detach::report_ready(pid);
        }
    };
    // The SMTP listener (smtpd_port; empty = none): the sockets are bound here, the
    // sessions run in a process of their own as mail_owner. Ports that cannot be bound
    // are logged and skipped: pickup and delivery go on regardless.
    let listen = |rt: &Runtime| super::sessions::start(&dir, fallback, rt).map(|s| vec![s]);
    scheduler::run_daemon(load, interval, &dir.display().to_string(), ready, listen)
}

/// `sendmail -bd`: starts the daemon in the background; returns once it runs.
pub fn background(config: &Config, interval: Option<&str>) -> Result<()> {
    if let Some(interval) = interval {
        parse_interval(interval)?;
    }
    detach::start_daemon(&absolute(config.dir()), interval).map(drop)
}

/// `sendmail -q` / `-qI<ID>`: delivers what is queued now, in the foreground.
pub fn run_queue(config: &Config, only: Option<&str>) -> Result<()> {
    let rt = Runtime::from_config(config, Fallback::Syslog)?;
    scheduler::run_once(rt, only).map(drop)
}

/// What happens to a message `sendmail` has just queued. `locked` is the queue file,
/// still locked, when the mode is `-odi`.
pub fn after_submit(
    config: &Config,
    mode: DeliveryMode,
    id: QueueId,
    locked: Option<File>,
) -> Result<()> {
    match mode {
        DeliveryMode::QueueOnly => Ok(()),
        DeliveryMode::Background => {
            let queue = Queue::from_config(config)?;
            if lock::running(&queue).is_some() {
                // The daemon's inotify watch has already seen the new name.
                return Ok(());
            }
            // The message is safely queued; failing to start a delivery only delays it.
            let _ = detach::spawn_delivery(&absolute(config.dir()), id.as_str());
            Ok(())
        }
        DeliveryMode::Interactive => {
            let rt = Runtime::from_config(config, Fallback::Syslog)?;
            let Some(file) = locked else {
                return Ok(());
            };
            let locked = LockedFile {
                file,
                queue: QueueName::Maildrop,
                id,
            };
            let Some(accepted) = pickup::accept(&rt, locked) else {
                return Err(Error::temp(format!(
                    "{id}: queued, but it could not be picked up; it will be delivered later"
                )));
            };
            let report = process::process(&rt, accepted, &AtomicBool::new(false));
            interactive_result(id, &report)
        }
    }
}

/// `-odi`'s exit status: 0 when every recipient was delivered; 67 (EX_NOUSER) when one
/// bounced for an unknown address (5.1.x), 69 (EX_UNAVAILABLE) for another bounce; 75
/// (EX_TEMPFAIL) when one was deferred. The message was accepted in every case: deferred
/// recipients stay queued, bounced ones were reported to the sender.
pub fn interactive_result(id: QueueId, report: &Report) -> Result<()> {
    for (address, outcome) in &report.outcomes {
        if outcome.status != Status::Sent {
            eprintln!(
                "sendmail: {id}: <{address}>: dsn={}, status={} ({})",
                outcome.dsn,
                super::logline::status_word(outcome.status),
                outcome.text
            );
        }
    }
    let bounced: Vec<_> = report
        .outcomes
        .iter()
        .filter(|(_, o)| o.status == Status::Bounced)
        .collect();
    if !bounced.is_empty() {
        let code = if bounced
            .iter()
            .any(|(_, o)| o.dsn.is_permanent() && o.dsn.subject() == 1)
        {
            ExitCode::NoUser
        } else {
            ExitCode::Unavailable
        };
        return Err(Error::new(
            code,
            format!(
                "{id}: {} recipient(s) bounced; the sender gets a delivery status notification",
                bounced.len()
            ),
        ));
    }
    let deferred = report.count(Status::Deferred);
    if deferred > 0 || report.trouble.is_some() || report.interrupted {
        return Err(Error::temp(format!(
            "{id}: delivery deferred; the message stays queued and will be retried"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::{Dsn, Outcome};

    fn exit_code(outcomes: Vec<Outcome>) -> Option<i32> {
        let report = Report {
            outcomes: outcomes
                .into_iter()
                .map(|o| ("u@example.com".to_string(), o))
                .collect(),
            ..Report::default()
        };
        interactive_result(QueueId::generate(), &report)
            .err()
            .map(|e| e.code())
    }

    #[test]
    fn an_unknown_address_exits_nouser_another_bounce_unavailable() {
        let sent = Outcome::sent("local", "delivered to mailbox");
        assert_eq!(exit_code(vec![sent.clone()]), None);
        let nouser = Outcome::bounced("local", Dsn::UNKNOWN_USER, "unknown user");
        assert_eq!(exit_code(vec![sent.clone(), nouser]), Some(67));
        let null_mx = Outcome::bounced("none", Dsn::NULL_MX, "nullMX");
        assert_eq!(exit_code(vec![null_mx]), Some(67));
        let denied = Outcome::bounced("local", Dsn::NOT_AUTHORIZED, "restricted");
        assert_eq!(exit_code(vec![denied]), Some(69));
        let later = Outcome::deferred("none", Dsn::TEMP_LOCAL, "try later");
        assert_eq!(exit_code(vec![later]), Some(75));
    }
}
