//! One delivery attempt of one queued message: make it active, deliver each pending
//! recipient, record each outcome, then remove the file, or defer it with its reasons and
//! next try, and tell the sender about recipients that failed for good.
//!
//! Crash safety rests on the order of writes. Delivered recipients are recorded with a
//! one-byte write each and one `fdatasync` before the next agent call starts, so a crash
//! repeats at most the deliveries of the call in flight. After the last call no marks are
//! written: removing the file records that every recipient is done, and a deferral
//! rewrites the whole envelope with its states (one sync saved per message, which is most
//! of a local delivery's cost after the mailbox's own). A bounce notification is queued
//! (durably) before the file that caused it is removed or rewritten, so a crash may send
//! it twice but never loses it.

use std::io::{Seek, SeekFrom};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::deliver::{MessageSource, Outcome, Status};
use crate::queue::{
    Envelope, LockedFile, QueueName, RcptState, ReadError, Recipient, read_envelope_from,
};

use super::logline::{self, Delays};
use super::pool::{Turn, away_from_disk};
use super::{Runtime, pickup};

/// What became of one attempt, for `sendmail -odi` and the tests.
#[derive(Debug, Default)]
pub struct Report {
    /// Each recipient tried, with its outcome.
    pub outcomes: Vec<(String, Outcome)>,
    /// Stopped by shutdown before every recipient was tried; the file waits in `active/`.
    pub interrupted: bool,
    /// The file could not be read or recorded; it stays queued and a later run retries it.
    pub trouble: Option<String>,
    /// Recipients were left untried because this destination had all the deliveries in
    /// flight it may have (`smtp_destination_concurrency_limit`): the file waits in
    /// `active/` until one of them ends, then [`resume`] takes it again.
    pub waiting: Option<String>,
}

impl Report {
    pub fn count(&self, status: Status) -> usize {
        self.outcomes
            .iter()
            .filter(|(_, o)| o.status == status)
            .count()
    }
}

/// Delivers what is pending in `locked` (from any queue but `maildrop/`, which goes
/// through pickup first). `stop` is checked between recipients.
pub fn process(rt: &Runtime, locked: LockedFile, stop: &AtomicBool, turn: &dyn Turn) -> Report {
    attempt(rt, locked, stop, turn, true)
}

/// [`process`] for a message that waited in `active/` for a place at its destination
/// ([`Report::waiting`]): the same attempt, without logging its activation again.
pub fn resume(rt: &Runtime, locked: LockedFile, stop: &AtomicBool, turn: &dyn Turn) -> Report {
    attempt(rt, locked, stop, turn, false)
}

fn attempt(
    rt: &Runtime,
    locked: LockedFile,
    stop: &AtomicBool,
    turn: &dyn Turn,
    announce: bool,
) -> Report {
    let (mut locked, mut env) = match activate(rt, locked) {
        Ok(active) => active,
        Err(report) => return report,
    };
    let id = locked.id;
    let activated = Instant::now();
    let now = SystemTime::now();
    let arrival = UNIX_EPOCH + Duration::from_micros(env.arrival_micros);
    let before_active = now.duration_since(arrival).unwrap_or_default();
    if announce {
        rt.logs.qmgr.info(&logline::active(
            id,
            &env.sender,
            env.size,
            env.recipients.len(),
        ));
    }

    let mut report = Report::default();
    let Tried {
        mut deferred,
        mut bounced,
        mut unmarked,
        waiting,
    } = deliver_pending(
        rt,
        &locked,
        &mut env,
        (stop, turn),
        &mut report,
        activated,
        before_active,
    );

    let now_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if !deferred.is_empty()
        && !report.interrupted
        && waiting.is_none()
        && rt
            .policy
            .expired(env.sender.is_empty(), env.arrival_secs(), now_secs as i64)
    {
        rt.logs.qmgr.info(&logline::expired(id, &env.sender));
        bounced.append(&mut deferred);
    }

    if !bounced.is_empty() {
        notify_bounced(rt, &locked, &mut env, &mut bounced, &mut deferred);
    }

    // Waiting for a place at a destination: it stays in active/ as an interrupted attempt
    // does, unless some recipients were deferred now; then the waiting ones go to
    // deferred/ with them (still pending), rather than be tried again before their
    // retry time.
    if deferred.is_empty() {
        report.waiting = waiting;
    }
    if report.interrupted || report.waiting.is_some() {
        // Left in active/: the next start (or scan) finishes it, without repeating what
        // was delivered.
        record(rt, &locked, &env, &mut unmarked, RcptState::Delivered);
        let mut notified: Vec<usize> = bounced.iter().map(|(i, _)| *i).collect();
        record(rt, &locked, &env, &mut notified, RcptState::Bounced);
        return report;
    }
    if deferred.is_empty() {
        // Removing the file records that every recipient is done.
        match rt.queue.remove(&locked) {
            Ok(_) => rt.logs.qmgr.info(&logline::removed(id)),
            Err(e) => {
                rt.logs
                    .qmgr
                    .warning(&format!("{id}: cannot remove queue file: {e}"));
            }
        }
        return report;
    }
    defer(rt, &mut locked, &mut env, &deferred, now_secs, report)
}

/// Moves `locked` to `active/` and reads its envelope. A file that cannot be read is
/// left where it is, a corrupt one quarantined; either ends the attempt with the report
/// returned as the error.
fn activate(rt: &Runtime, mut locked: LockedFile) -> Result<(LockedFile, Envelope), Report> {
    let mut report = Report::default();
    if locked.queue != QueueName::Active
        && let Err(e) = rt.queue.relocate(&mut locked, QueueName::Active)
    {
        return Err(trouble(
            rt,
            &locked,
            report,
            "move to active",
            &e.to_string(),
        ));
    }
    let _ = locked.file.seek(SeekFrom::Start(0));
    let env = match read_envelope_from(&mut locked.file) {
        Ok(env) => env,
        Err(ReadError::Corrupt(why)) => {
            pickup::quarantine(rt, locked, &why);
            report.trouble = Some("corrupt queue file".into());
            return Err(report);
        }
        Err(e) => return Err(trouble(rt, &locked, report, "read", &e.to_string())),
    };
    let length = locked.file.metadata().map(|m| m.len()).unwrap_or(0);
    if env.message_offset.checked_add(env.size) != Some(length) {
        let why = format!("size record does not match the file ({length} bytes)");
        pickup::quarantine(rt, locked, &why);
        report.trouble = Some("corrupt queue file".into());
        return Err(report);
    }
    Ok((locked, env))
}

/// The recipients of one attempt that were not delivered, or not yet recorded as
/// delivered.
struct Tried {
    deferred: Vec<(usize, Outcome)>,
    bounced: Vec<(usize, Outcome)>,
    /// Delivered but not yet recorded on disk.
    unmarked: Vec<usize>,
    /// The first destination whose recipients were not tried, for want of a place.
    waiting: Option<String>,
}

/// Hands the pending recipients to the agents, batch by batch, logging each outcome
/// into `report`; stops early (setting `report.interrupted`) once `stop` is set. `turn`
/// at the disk is given up while a remote agent works.
fn deliver_pending(
    rt: &Runtime,
    locked: &LockedFile,
    env: &mut Envelope,
    (stop, turn): (&AtomicBool, &dyn Turn),
    report: &mut Report,
    activated: Instant,
    before_active: Duration,
) -> Tried {
    let id = locked.id;
    let mut tried = Tried {
        deferred: Vec::new(),
        bounced: Vec::new(),
        unmarked: Vec::new(),
        waiting: None,
    };
    let pending: Vec<usize> = (0..env.recipients.len())
        .filter(|&i| !env.recipients[i].state.is_done())
        .collect();
    let message = MessageSource::for_envelope(&locked.file, env);
    let batches = rt.router.plan(env, &pending);
    for batch in batches {
        // What the previous call delivered is on disk before the next call starts.
        record(rt, locked, env, &mut tried.unmarked, RcptState::Delivered);
        if stop.load(Ordering::Relaxed) {
            report.interrupted = true;
            break;
        }
        // Held through the delivery: the place is given back when the agent is done.
        let _slot = match batch.program {
            "local" => None,
            _ => match rt.router.remote.admit(&batch.key) {
                Some(slot) => Some(slot),
                None => {
                    tried.waiting.get_or_insert(batch.key);
                    continue;
                }
            },
        };
        let started = Instant::now();
        let outcomes = match batch.program {
            "local" => rt.router.deliver(id, env, message, &batch),
            _ => away_from_disk(turn, || rt.router.deliver(id, env, message, &batch)),
        };
        let delays = Delays {
            before_active,
            in_qmgr: started.duration_since(activated),
            setup: Duration::ZERO,
            transmission: started.elapsed(),
        };
        for (&i, outcome) in batch.recipients.iter().zip(outcomes) {
            rt.logs.agent(batch.program).info(&logline::delivery(
                id,
                &env.recipients[i],
                &outcome,
                &delays,
            ));
            report
                .outcomes
                .push((env.recipients[i].address.clone(), outcome.clone()));
            match outcome.status {
                Status::Sent => {
                    env.recipients[i].state = RcptState::Delivered;
                    tried.unmarked.push(i);
                }
                Status::Deferred => tried.deferred.push((i, outcome)),
                Status::Bounced => tried.bounced.push((i, outcome)),
            }
        }
    }
    tried
}

/// Queues the non-delivery notification for the `bounced` recipients and marks them
/// bounced (in memory); when it cannot be queued they move to `deferred`, to be bounced
/// again by the next attempt.
fn notify_bounced(
    rt: &Runtime,
    locked: &LockedFile,
    env: &mut Envelope,
    bounced: &mut Vec<(usize, Outcome)>,
    deferred: &mut Vec<(usize, Outcome)>,
) {
    let id = locked.id;
    let failed: Vec<(Recipient, Outcome)> = bounced
        .iter()
        .map(|(i, o)| (env.recipients[*i].clone(), o.clone()))
        .collect();
    let message = MessageSource::for_envelope(&locked.file, env);
    let notified = match rt.bouncer.bounce(&rt.queue, env, message, &failed) {
        Ok(Some(bounce_id)) => {
            rt.logs.bounce.info(&logline::bounce_sent(id, bounce_id));
            true
        }
        // A bounce never bounces; NOTIFY=NEVER asked for silence.
        Ok(None) => true,
        Err(e) => {
            rt.logs.bounce.warning(&format!(
                "{id}: cannot queue the non-delivery notification: {e}"
            ));
            false
        }
    };
    if notified {
        for (i, _) in bounced.iter() {
            env.recipients[*i].state = RcptState::Bounced;
        }
    } else {
        // Keep them for the next attempt, which bounces them again.
        deferred.append(bounced);
    }
}

/// Records the deferral (reasons, attempt count, next try) in the envelope and moves the
/// file to `deferred/`.
fn defer(
    rt: &Runtime,
    locked: &mut LockedFile,
    env: &mut Envelope,
    deferred: &[(usize, Outcome)],
    now_secs: u64,
    report: Report,
) -> Report {
    for (i, outcome) in deferred {
        env.recipients[*i].reason = outcome.text.clone();
    }
    env.attempts = env.attempts.saturating_add(1);
    env.next_attempt = now_secs + rt.policy.backoff(env.attempts).as_secs();
    if let Err(e) = rt.queue.rewrite_envelope(locked, env) {
        return trouble(rt, locked, report, "record deferral", &e.to_string());
    }
    if let Err(e) = rt.queue.relocate(locked, QueueName::Deferred) {
        return trouble(rt, locked, report, "move to deferred", &e.to_string());
    }
    report
}

/// Writes the states of `which` recipients to disk with one sync; empties `which`. A
/// failure is logged: the states are then only in memory and reach the disk with the
/// removal or the next envelope rewrite; a crash before that repeats those deliveries.
fn record(
    rt: &Runtime,
    locked: &LockedFile,
    env: &crate::queue::Envelope,
    which: &mut Vec<usize>,
    state: RcptState,
) {
    if which.is_empty() {
        return;
    }
    let rcpts: Vec<&Recipient> = which.iter().map(|&i| &env.recipients[i]).collect();
    let result = rt.queue.mark_all(locked, &rcpts, state);
    which.clear();
    if let Err(e) = result {
        rt.logs
            .qmgr
            .warning(&format!("{}: cannot record delivery: {e}", locked.id));
    }
}

fn trouble(rt: &Runtime, locked: &LockedFile, mut report: Report, what: &str, why: &str) -> Report {
    let text = format!("{}/{}: {what}: {why}", locked.queue.as_str(), locked.id);
    rt.logs.qmgr.warning(&text);
    report.trouble = Some(text);
    report
}
