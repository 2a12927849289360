//! Group commit for mailbox appends. When several delivery threads have mail for the same
//! mailbox at once (a burst of mail to one user, the common case for a busy address),
//! they queue here in-process instead of polling each other's dot-lock, and they share
//! one "run": the first takes the locks, each appends its own message in turn, and the
//! last one `fsync`s once for all of them and releases the locks. Nobody reports success
//! before that `fsync` has returned, so no delivery is acknowledged (and no queue file
//! removed) before its message is on disk; a run whose `fsync` fails is cut off whole
//! and every member of it defers.
//!
//! Other programs (mail readers, another MTA) still see the usual protocol: a dot-lock
//! and an `fcntl` lock held while the mailbox grows, and a note in the dot-lock of where
//! the mailbox ended before the run, so that a run killed half way is cut off by the
//! next delivery (none of its messages was reported delivered, so all are tried again).

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};
use std::time::Instant;

use super::mbox::{self, AppendError, Appended, Held, Target};
use crate::deliver::Dsn;

/// The most messages one run appends before it syncs: bounds how long the first of them
/// waits for its answer.
const MAX_RUN: usize = 64;

/// Appends through the gate of `target`'s mailbox (see the module documentation).
pub fn append(
    target: &Target,
    write: impl FnOnce(&mut dyn Write) -> io::Result<u64>,
) -> Result<Appended, AppendError> {
    let deadline = Instant::now() + target.lock_wait;
    let gate = Gate::of(target);
    let turn = gate.take_turn(deadline)?;
    // From here until the turn is passed on or ended, an unwinding thread must neither
    // keep the gate busy nor leave the run's members waiting.
    let mut guard = TurnGuard {
        gate: &gate,
        run: None,
    };
    let (held, members) = match turn.inherited {
        Some(open) => {
            guard.run = Some(open.run);
            (open.held, open.members)
        }
        None => {
            let held = mbox::acquire(target, deadline)?;
            guard.run = Some(Arc::new(Run::default()));
            (held, 0)
        }
    };
    let repaired = if members == 0 { held.repaired } else { 0 };
    let written = mbox::write_one(&held, target, write);
    let run = guard.run.take().unwrap_or_default();
    std::mem::forget(guard);
    match written {
        Ok(bytes) => {
            gate.pass_on(held, Arc::clone(&run), members + 1);
            run.wait().map(|()| Appended { bytes, repaired })
        }
        Err(e) => {
            // This message is cut off already; the run's earlier members still need
            // their sync.
            let outcome = mbox::finish(&held);
            drop(held);
            run.publish(outcome);
            gate.end_turn();
            Err(e)
        }
    }
}

/// Ends the turn, and answers the run with a failure, when a thread unwinds in it.
struct TurnGuard<'g> {
    gate: &'g Gate,
    run: Option<Arc<Run>>,
}

impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        if let Some(run) = &self.run {
            run.publish(Err(AppendError {
                text: "delivery thread failed".into(),
                dsn: Dsn::TEMP_LOCAL,
            }));
        }
        self.gate.end_turn();
    }
}

/// Which appends share a gate: the same file, written with the same rights.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    path: PathBuf,
    user: (u32, u32),
    creator: (u32, u32),
}

/// The gates of the mailboxes being appended to now; a gate goes when its last user
/// leaves, so the map stays as small as the set of busy mailboxes.
static GATES: LazyLock<Mutex<HashMap<Key, Arc<Gate>>>> = LazyLock::new(Default::default);

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A thread that panicked inside cannot leave these small states half changed in a
    // way that matters more than stopping every delivery would.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One mailbox's queue of appenders.
#[derive(Default)]
struct Gate {
    state: Mutex<State>,
    turn: Condvar,
}

#[derive(Default)]
struct State {
    /// An appender has its turn.
    busy: bool,
    /// Appenders waiting for a turn.
    waiting: usize,
    /// The run in progress, between two turns.
    open: Option<Open>,
}

/// A run handed from one appender to the next: the locks, and how to answer its members.
struct Open {
    held: Held,
    run: Arc<Run>,
    members: usize,
}

/// What an appender gets with its turn.
struct Turn {
    inherited: Option<Open>,
}

/// The shared answer of one run.
#[derive(Default)]
struct Run {
    outcome: Mutex<Option<Result<(), AppendError>>>,
    done: Condvar,
}

impl Run {
    /// Gives the run its answer; the first answer stands.
    fn publish(&self, outcome: Result<(), AppendError>) {
        let mut answer = locked(&self.outcome);
        if answer.is_none() {
            *answer = Some(outcome);
        }
        drop(answer);
        self.done.notify_all();
    }

    fn wait(&self) -> Result<(), AppendError> {
        let mut outcome = locked(&self.outcome);
        loop {
            if let Some(result) = outcome.as_ref() {
                return result.clone();
            }
            outcome = self.done.wait(outcome).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Gate {
    fn of(target: &Target) -> Arc<Gate> {
        let key = Key {
            path: target.path.to_path_buf(),
            user: (target.user.uid, target.user.gid),
            creator: (target.creator.uid, target.creator.gid),
        };
        let mut gates = locked(&GATES);
        gates.retain(|_, gate| Arc::strong_count(gate) > 1);
        Arc::clone(gates.entry(key).or_default())
    }

    /// Waits (until `deadline`) for this appender's turn.
    fn take_turn(&self, deadline: Instant) -> Result<Turn, AppendError> {
        let mut state = locked(&self.state);
        state.waiting += 1;
        while state.busy {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                state.waiting -= 1;
                return Err(AppendError {
                    text: "unable to lock for exclusive access: mailbox is busy".into(),
                    dsn: Dsn::MAILBOX_BUSY,
                });
            }
            state = self
                .turn
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        state.waiting -= 1;
        state.busy = true;
        Ok(Turn {
            inherited: state.open.take(),
        })
    }

    /// Ends a turn that leaves no run open.
    fn end_turn(&self) {
        let mut state = locked(&self.state);
        state.busy = false;
        drop(state);
        self.turn.notify_one();
    }

    /// After a successful write: when someone is waiting and the run has room, leaves
    /// the run open for the next appender. Otherwise syncs, releases the locks and
    /// answers the run here.
    fn pass_on(&self, held: Held, run: Arc<Run>, members: usize) {
        let mut state = locked(&self.state);
        if state.waiting > 0 && members < MAX_RUN {
            state.open = Some(Open { held, run, members });
            state.busy = false;
            drop(state);
            self.turn.notify_one();
            return;
        }
        drop(state);
        let outcome = mbox::finish(&held);
        // The locks go before the next turn starts.
        drop(held);
        run.publish(outcome);
        self.end_turn();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::local::privileges::Identity;
    use std::time::Duration;

    fn target<'a>(path: &'a std::path::Path, me: &'a Identity) -> Target<'a> {
        Target {
            path,
            user: me,
            creator: me,
            chown_new: false,
            require_owner: false,
            dotlock_may_fail: true,
            refuse_executable: false,
            size_limit: 0,
            lock_wait: Duration::from_secs(10),
            stale_after: Duration::from_secs(500),
        }
    }

    #[test]
    fn concurrent_appends_all_arrive_whole_and_the_gate_is_gone_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box");
        let me = Identity::current();
        std::thread::scope(|s| {
            for t in 0..8 {
                let (path, me) = (&path, &me);
                s.spawn(move || {
                    for m in 0..25 {
                        let target = target(path, me);
                        let text = format!(
                            "From x  Thu Jan  1 00:00:00 1970\n\nthread {t} message {m}\n\n"
                        );
                        let got = append(&target, |w| {
                            w.write_all(text.as_bytes())?;
                            Ok(text.len() as u64)
                        })
                        .unwrap();
                        assert_eq!(got.bytes, text.len() as u64);
                    }
                });
            }
        });
        let body = std::fs::read_to_string(&path).unwrap();
        for t in 0..8 {
            for m in 0..25 {
                let line = format!("\nthread {t} message {m}\n");
                assert_eq!(body.matches(&line).count(), 1, "{line:?}");
            }
        }
        assert_eq!(body.matches("From x ").count(), 200);
        assert!(!dir.path().join("box.lock").exists());
        assert!(locked(&GATES).values().all(|g| Arc::strong_count(g) == 1));
    }

    #[test]
    fn a_failed_write_defers_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box");
        let me = Identity::current();
        let t = target(&path, &me);
        append(&t, |w| {
            w.write_all(b"From a  Thu Jan  1 00:00:00 1970\n\nfirst\n\n")?;
            Ok(1)
        })
        .unwrap();
        let err = append(&t, |w| {
            w.write_all(b"From b  Thu Jan  1 00:00:00 1970\n\nhalf")?;
            Err(io::Error::other("source went away"))
        })
        .unwrap_err();
        assert_eq!(err.dsn, Dsn::TEMP_LOCAL);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "From a  Thu Jan  1 00:00:00 1970\n\nfirst\n\n"
        );
        assert!(!dir.path().join("box.lock").exists());
    }
}
