//! What `mailroom daemon` (the daemon in the foreground), `mailroom start` (detached) and
//! `mailroom deliver` (the queue, or some messages, once) do. `sendmail -bD`, `-bd`, `-q`
//! and `-odi` hand over to these commands by exec, and `-odb` starts `mailroom deliver
//! ID` when no daemon runs (`sendmail::handover`): only the `mailroom` side calls here.

use std::fs::{File, TryLockError};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::config::Config;
use crate::deliver::Status;
use crate::log::Fallback;
use crate::queue::{LockedFile, Queue, QueueId, QueueName};
use crate::sysexits::{Error, ExitCode, Result, describe_io};

use super::process::{self, Report};
use super::{Runtime, detach, pickup, scheduler};

/// The configuration directory as an absolute path, for processes that run elsewhere.
fn absolute(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// `-q30m`: a bare number is minutes, as in sendmail.
pub fn parse_interval(text: &str) -> Result<Duration> {
    crate::config::parse_time(text, 'm').map_err(|why| Error::usage(format!("-q{text}: {why}")))
}

/// `mailroom daemon` (`sendmail -bD`, and the process `mailroom start` starts): runs
/// the daemon until SIGTERM.
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

/// `sendmail -bd` (`mailroom --for-sendmail start`): starts the daemon in the
/// background; returns once it runs, or fails (75) when one runs already.
pub fn background(config: &Config, interval: Option<&str>) -> Result<()> {
    if let Some(interval) = interval {
        parse_interval(interval)?;
    }
    detach::start_daemon(&absolute(config.dir()), interval, true).map(drop)
}

/// The whole queue once, in the foreground (`sendmail -q`), or only the messages whose
/// queue ID contains `only` (`-qI`; a full ID is looked up directly).
pub fn run_queue(config: &Config, only: Option<&str>) -> Result<()> {
    let rt = Runtime::from_config(config, Fallback::Syslog)?;
    scheduler::run_once(rt, only).map(drop)
}

/// The queues a message can be delivered from (`hold/` and `corrupt/` are not).
const DELIVERABLE: [QueueName; 4] = [
    QueueName::Maildrop,
    QueueName::Incoming,
    QueueName::Active,
    QueueName::Deferred,
];

/// `mailroom deliver [ID...]` (`sendmail -q`, `-qI`): with no ID the whole queue once, in
/// the foreground; otherwise the message of each ID, or, as sendmail's `-qI` takes it,
/// the messages whose ID contains it. `strict` (`mailroom` itself): an ID that matches
/// no message waiting for delivery is a fatal error (66), checked for all before any is
/// delivered; `sendmail -qI` never complained, and for it nothing is delivered then.
pub fn deliver(config: &Config, ids: &[String], strict: bool) -> Result<()> {
    if ids.is_empty() {
        return run_queue(config, None);
    }
    if let Some(empty) = ids.iter().find(|id| id.is_empty()) {
        return Err(Error::usage(format!("{empty:?} is not a queue ID")));
    }
    if strict {
        let queue = Queue::from_config(config)?;
        for id in ids {
            check_queued(&queue, id)?;
        }
    }
    for id in ids {
        run_queue(config, Some(id))?;
    }
    Ok(())
}

/// Whether `text` (a queue ID or part of one) names a message that can be delivered.
fn check_queued(queue: &Queue, text: &str) -> Result<()> {
    let found = |names: &[QueueName]| {
        names.iter().any(|&q| match QueueId::parse(text) {
            Some(id) => queue.find(id, &[q]).is_some(),
            None => queue
                .ids(q)
                .is_ok_and(|ids| ids.iter().any(|id| id.as_str().contains(text))),
        })
    };
    if found(&DELIVERABLE) {
        return Ok(());
    }
    let why = if found(&[QueueName::Hold]) {
        "the message is on hold (postsuper -H releases it)"
    } else if found(&[QueueName::Corrupt]) {
        "the message is in corrupt/ and cannot be delivered"
    } else {
        "no such message in the queue"
    };
    Err(Error::new(ExitCode::NoInput, format!("{text}: {why}")))
}

/// `mailroom deliver --queued-on-stdin ID` (`sendmail -odi`, which execs it): delivers
/// the message `sendmail` has just queued as `maildrop/ID`, whose file, still locked, is
/// `file` (standard input), so that no daemon or other delivery took it in between.
/// Reports each recipient not delivered on stderr as `PROGRAM: ID: <address>: ...` and
/// fails as [`interactive_result`] says.
pub fn deliver_submitted(config: &Config, id: &str, file: File, program: &str) -> Result<()> {
    let Some(id) = QueueId::parse(id) else {
        return Err(Error::usage(format!("{id:?} is not a queue ID")));
    };
    let queue = Queue::from_config(config)?;
    let path = queue.path(QueueName::Maildrop, id);
    let on_disk = std::fs::symlink_metadata(&path).map_err(|e| {
        Error::new(
            ExitCode::NoInput,
            format!("maildrop/{id}: {}", describe_io(&e)),
        )
    })?;
    let given = file
        .metadata()
        .map_err(|e| Error::io("standard input", &e))?;
    if !on_disk.file_type().is_file()
        || (given.dev(), given.ino()) != (on_disk.dev(), on_disk.ino())
    {
        return Err(Error::usage(format!(
            "standard input is not the queue file maildrop/{id}"
        )));
    }
    // Ours already when sendmail handed it over (a flock belongs to the open file);
    // taken now otherwise, and refused if another process holds it.
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(Error::temp(format!(
                "{id}: another process is delivering it"
            )));
        }
        Err(TryLockError::Error(e)) => return Err(Error::io(format!("lock maildrop/{id}"), &e)),
    }
    let rt = Runtime::from_config(config, Fallback::Syslog)?;
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
    let report = process::process(&rt, accepted, &AtomicBool::new(false), &super::pool::Alone);
    interactive_result(program, id, &report)
}

/// `-odi`'s exit status: 0 when every recipient was delivered; 67 (EX_NOUSER) when one
/// bounced for an unknown address (5.1.x), 69 (EX_UNAVAILABLE) for another bounce; 75
/// (EX_TEMPFAIL) when one was deferred. The message was accepted in every case: deferred
/// recipients stay queued, bounced ones were reported to the sender.
pub fn interactive_result(program: &str, id: QueueId, report: &Report) -> Result<()> {
    for (address, outcome) in &report.outcomes {
        if outcome.status != Status::Sent {
            eprintln!(
                "{program}: {id}: <{address}>: dsn={}, status={} ({})",
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
        interactive_result("sendmail", QueueId::generate(), &report)
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

    /// `sendmail` keeps no daemon code, so it checks for a running daemon by itself
    /// (`sendmail::handover::daemon_running`): it must agree with the daemon's lock.
    #[test]
    fn sendmail_sees_the_daemon_lock() {
        use super::super::lock::{self, MasterLock};
        use crate::sendmail::handover;
        assert_eq!(handover::MASTER_LOCK, lock::LOCK_FILE);
        let tmp = tempfile::tempdir().unwrap();
        let queue = Queue::new(tmp.path());
        assert!(!handover::daemon_running(&queue), "no lock file");
        let held = MasterLock::acquire(&queue).unwrap();
        assert!(handover::daemon_running(&queue));
        drop(held);
        assert!(
            !handover::daemon_running(&queue),
            "lock file, nobody holds it"
        );
    }

    #[test]
    fn deliver_names_what_it_cannot_find() {
        let tmp = tempfile::tempdir().unwrap();
        let queue = Queue::new(tmp.path());
        queue.ensure_dirs().unwrap();
        let waiting = QueueId::generate();
        let held = QueueId::generate();
        std::fs::write(queue.path(QueueName::Deferred, waiting), "").unwrap();
        std::fs::write(queue.path(QueueName::Hold, held), "").unwrap();
        let unknown = QueueId::generate();
        let part: String = waiting.as_str().chars().skip(2).take(5).collect();
        for (text, found) in [
            (waiting.as_str(), None),
            (part.as_str(), None),
            (held.as_str(), Some("on hold")),
            (unknown.as_str(), Some("no such message")),
        ] {
            let got = check_queued(&queue, text).err();
            assert_eq!(got.as_ref().map(Error::code), found.map(|_| 66), "{text}");
            if let (Some(e), Some(why)) = (got, found) {
                assert!(e.message.contains(why), "{text}: {}", e.message);
            }
        }
    }
}
