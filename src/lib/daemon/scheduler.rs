//! The scheduler: which queued files to work on and when, and a small pool of threads that
//! do the work. New mail is noticed through inotify on `maildrop/` within milliseconds;
//! a periodic scan catches anything inotify missed (queue overflow, files another process
//! left unlocked in `incoming/` or `active/`). Deferred mail is looked at every
//! `queue_run_delay` (or the `-q` interval) and tried when its `next` time has passed.
//!
//! The main thread only decides; it never touches a message's bytes. It blocks on one
//! channel that carries inotify wake-ups, finished jobs and signals, with a timeout for
//! the next scan: no polling loop.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::queue::{QueueId, QueueName};
use crate::sysexits::{Error, ExitCode, Result};

use super::lock::{LockError, MasterLock};
use super::pool::{Limits, Pool, Turn};
use super::process::{self, Report};
use super::signals::{self, Sig};
use super::watch::{Announcement, MaildropWatch};
use super::{Runtime, pickup};

/// How often `maildrop/`, `incoming/` and `active/` are scanned when inotify works (a
/// safety net, so the cost hardly matters), and when it does not.
const SCAN_WITH_INOTIFY: Duration = Duration::from_secs(10);
const SCAN_WITHOUT_INOTIFY: Duration = Duration::from_secs(1);

/// What wakes the main thread.
pub enum Event {
    /// A name appeared in `maildrop/`; `None`: look at the whole directory.
    Maildrop(Option<QueueId>),
    /// The watch on `maildrop/` ended, for this reason.
    WatchLost(String),
    /// A job finished.
    Done(QueueId, Option<Report>),
    Signal(Sig),
}

struct Job {
    id: QueueId,
    queue: QueueName,
    /// Taken again after waiting in `active/` for a place at its destination.
    resumed: bool,
    rt: Arc<Runtime>,
}

/// The delivery threads ([`pool`](super::pool)), each job reported on the main
/// thread's channel when it is done.
struct Workers {
    pool: Pool<Job>,
    /// Set at shutdown: jobs still queued are taken and not run.
    stop: Arc<AtomicBool>,
}

impl Workers {
    fn new(limits: Limits, done: Sender<Event>) -> Result<Workers> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let pool = Pool::new("delivery", limits, move |job: Job, turn: &dyn Turn| {
            let report = if stopped.load(Ordering::Relaxed) {
                None
            } else {
                // A job that panics is reported as not taken, so that its file is not
                // left in flight for good: the next scan finds it again.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_job(&job, &stopped, turn)
                }))
                .unwrap_or(None)
            };
            let _ = done.send(Event::Done(job.id, report));
        })
        .map_err(|e| Error::io("cannot start a delivery thread", &e))?;
        Ok(Workers { pool, stop })
    }

    fn submit(&self, job: Job) {
        self.pool.submit(job);
    }

    /// Stops taking new jobs (queued ones are dropped: their files stay where they are)
    /// and waits for the deliveries in flight, which stop between recipients.
    fn shutdown(self, finish_queued: bool) {
        if !finish_queued {
            self.stop.store(true, Ordering::Relaxed);
        }
        self.pool.finish();
    }
}

/// One job: pick up (for `maildrop/`) or lock, then deliver. `None` when the file was not
/// ours to take (gone, or locked by another process).
fn run_job(job: &Job, stop: &AtomicBool, turn: &dyn Turn) -> Option<Report> {
    let rt = &job.rt;
    let locked = match job.queue {
        QueueName::Maildrop => pickup::pickup(rt, job.id)?,
        queue => match rt.queue.try_lock(queue, job.id) {
            Ok(locked) => locked?,
            Err(e) if crate::queue::not_regular(&e).is_some() => {
                pickup::quarantine_entry(rt, queue, job.id, &e.to_string());
                return None;
            }
            Err(e) => {
                rt.logs.qmgr.warning(&format!(
                    "{}/{}: open: {}",
                    queue.as_str(),
                    job.id,
                    crate::sysexits::describe_io(&e)
                ));
                return None;
            }
        },
    };
    Some(match job.resumed {
        true => process::resume(rt, locked, stop, turn),
        false => process::process(rt, locked, stop, turn),
    })
}

/// A file in the backlog: 12 bytes.
struct Queued {
    id: QueueId,
    queue: QueueName,
    /// Taken again after waiting for a place at its destination.
    resumed: bool,
}

/// Keeps each file to one job at a time, and only a few jobs in the pool's channel: the
/// rest wait in a compact backlog, so that a scan that finds 50,000 due files costs a
/// few dozen bytes a file rather than a queued job each (the daemon's memory stays flat
/// in the size of the queue).
struct Dispatcher {
    pool: Workers,
    /// Files waiting in `backlog` or being worked on.
    in_flight: HashSet<QueueId>,
    /// Files in flight that `maildrop/` announced again meanwhile (closed by their
    /// writer): taken again once their job is done.
    again: HashSet<QueueId>,
    backlog: VecDeque<Queued>,
    /// Files in flight that wait in `active/` for a place at their destination
    /// ([`Report::waiting`]), oldest first.
    waiting: HashMap<String, VecDeque<QueueId>>,
    /// Jobs handed to the pool and not yet done.
    running: usize,
    /// At most this many in the pool at once: enough to keep every thread busy, each
    /// turn at the disk with one more job to go on with.
    most_running: usize,
    rt: Arc<Runtime>,
}

impl Dispatcher {
    fn new(pool: Workers, limits: Limits, rt: Arc<Runtime>) -> Dispatcher {
        Dispatcher {
            pool,
            in_flight: HashSet::new(),
            again: HashSet::new(),
            backlog: VecDeque::new(),
            waiting: HashMap::new(),
            running: 0,
            most_running: limits.away + 2 * limits.turns,
            rt,
        }
    }

    fn dispatch(&mut self, id: QueueId, queue: QueueName) {
        if self.in_flight.insert(id) {
            self.backlog.push_back(Queued {
                id,
                queue,
                resumed: false,
            });
            self.feed();
        }
    }

    /// A new name in `maildrop/`, or one closed by its writer (see [`Announcements`]).
    /// A writer may close a file while its job runs (a job that found it still locked
    /// lets it be): that close must not be lost behind the job.
    fn announced(&mut self, id: QueueId) {
        if self.in_flight.contains(&id) {
            self.again.insert(id);
        } else {
            self.dispatch(id, QueueName::Maildrop);
        }
    }

    /// A job is done: its file may be taken again, and the next in the backlog goes. A
    /// file that must wait for a place at `waiting` stays in flight (no scan takes it)
    /// until [`wake`](Dispatcher::wake) finds one.
    fn finished(&mut self, id: QueueId, waiting: Option<String>) {
        self.running = self.running.saturating_sub(1);
        match waiting {
            Some(destination) => self.waiting.entry(destination).or_default().push_back(id),
            None => {
                self.in_flight.remove(&id);
                if self.again.remove(&id) {
                    self.dispatch(id, QueueName::Maildrop);
                }
            }
        }
        self.wake();
        self.feed();
    }

    /// Takes again, for each destination with room now, the file that has waited
    /// longest. One per destination each time: every delivery that ends frees at most
    /// one place, and ends with a call here. A file that finds its place taken meanwhile
    /// waits again.
    fn wake(&mut self) {
        let remote = &self.rt.router.remote;
        let backlog = &mut self.backlog;
        self.waiting.retain(|destination, ids| {
            if remote.has_room(destination)
                && let Some(id) = ids.pop_front()
            {
                backlog.push_back(Queued {
                    id,
                    queue: QueueName::Active,
                    resumed: true,
                });
            }
            !ids.is_empty()
        });
    }

    fn feed(&mut self) {
        while self.running < self.most_running {
            let Some(Queued { id, queue, resumed }) = self.backlog.pop_front() else {
                break;
            };
            self.running += 1;
            self.pool.submit(Job {
                id,
                queue,
                resumed,
                rt: Arc::clone(&self.rt),
            });
        }
    }

    /// Every file in `queues` that is not already being worked on. With `due_only`,
    /// deferred files are taken only when their next try has come.
    fn scan(&mut self, queues: &[QueueName], due_only: bool, filter: Option<&str>) {
        let now = unix_now();
        for &queue in queues {
            let ids = match self.rt.queue.ids(queue) {
                Ok(ids) => ids,
                Err(e) => {
                    self.rt.logs.qmgr.warning(&format!(
                        "scan {}: {}",
                        queue.as_str(),
                        crate::sysexits::describe_io(&e)
                    ));
                    continue;
                }
            };
            for id in ids {
                if filter.is_some_and(|f| !id.as_str().contains(f)) || self.in_flight.contains(&id)
                {
                    continue;
                }
                if due_only && queue == QueueName::Deferred {
                    // Only the envelope is read; a file that does not parse is taken so
                    // that delivery moves it to corrupt/.
                    if let Ok(env) = self.rt.queue.read_envelope(queue, id)
                        && env.next_attempt > now
                    {
                        continue;
                    }
                }
                self.dispatch(id, queue);
            }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The queues a start-up or one-shot run looks at, oldest stage first. `hold/` is never
/// delivered from.
const RUNNABLE: [QueueName; 4] = [
    QueueName::Active,
    QueueName::Incoming,
    QueueName::Maildrop,
    QueueName::Deferred,
];

/// What runs beside delivery (the SMTP sessions process): started once the daemon holds
/// its lock, told when `main.cf` has been read again, stopped on the way out.
pub trait Service {
    /// `main.cf` has been read again into `rt`.
    fn reload(&mut self, rt: &Runtime);
    /// Stops, and returns once stopped.
    fn stop(self: Box<Self>);
}

/// Runs the daemon until SIGTERM or SIGINT: takes the single-instance lock, calls
/// `ready` once it holds it, recovers what a crash left in `incoming/` and `active/`, then
/// picks up and delivers. `load` builds the runtime from `main.cf`, at start and on
/// SIGHUP. `interval` is `-q`'s, else `queue_run_delay`. `services` starts what else runs
/// beside delivery (the SMTP listener) once the lock is held, so a second daemon never
/// gets as far as binding ports; they are told of reloads and stopped on the way out.
pub fn run_daemon(
    load: impl Fn() -> Result<Runtime>,
    interval: Option<Duration>,
    config_name: &str,
    ready: impl FnOnce(u32),
    services: impl FnOnce(&Runtime) -> Result<Vec<Box<dyn Service>>>,
) -> Result<()> {
    // Before any thread exists, so that every thread inherits the mask.
    signals::block().map_err(|e| Error::new(ExitCode::OsErr, format!("sigprocmask: {e}")))?;
    let mut rt = Arc::new(load()?);
    rt.queue
        .ensure_dirs()
        .map_err(|e| Error::io(format!("queue directory {}", rt.queue.root().display()), &e))?;
    let _lock = match MasterLock::acquire(&rt.queue) {
        Ok(lock) => lock,
        Err(LockError::Running(pid)) => {
            let pid = pid.map_or(String::new(), |p| format!(" (pid {p})"));
            return Err(Error::temp(format!(
                "the mail system is already running{pid}"
            )));
        }
        Err(LockError::Io(e)) => {
            return Err(Error::io(
                format!("lock {}", rt.queue.pid_dir().display()),
                &e,
            ));
        }
    };
    rt.logs.master.info(&format!(
        "daemon started -- version {}, configuration {config_name}",
        env!("CARGO_PKG_VERSION")
    ));
    // A queue made before mail_owner existed (or changed): the directories go to it, so
    // that the SMTP sessions, which run as mail_owner, can write maildrop/.
    match rt.queue.give_dirs_to_owner() {
        Ok(fixed) => fixed.iter().for_each(|line| rt.logs.master.info(line)),
        Err(e) => rt.logs.master.warning(&format!(
            "cannot give the queue directories to mail_owner: {}",
            crate::sysexits::describe_io(&e)
        )),
    }
    let mut services = services(&rt)?;
    ready(std::process::id());

    let (tx, rx) = mpsc::channel::<Event>();
    signals::forward(tx.clone(), Event::Signal)
        .map_err(|e| Error::io("cannot start the signal thread", &e))?;
    let mut watcher = match watch_maildrop(&rt, &tx) {
        Ok(watch) => Some(watch),
        Err(e) => {
            rt.logs.pickup.warning(&format!(
                "cannot watch maildrop with inotify, scanning every second: {e}"
            ));
            None
        }
    };
    let run_every = |rt_delay: Duration| interval.unwrap_or(rt_delay).max(Duration::from_secs(1));
    let mut run_delay = run_every(rt.queue_run_delay);

    let mut d = Dispatcher::new(
        Workers::new(rt.delivery, tx.clone())?,
        rt.delivery,
        Arc::clone(&rt),
    );
    // Recovery: whatever a crash left behind is simply work to do.
    d.scan(&RUNNABLE, true, None);
    let mut next_scan = Instant::now() + scan_interval(watcher.as_ref());
    let mut next_run = Instant::now() + run_delay;

    let stopped_by = loop {
        let wait = next_scan
            .min(next_run)
            .saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Event::Maildrop(Some(id))) => d.announced(id),
            Ok(Event::Maildrop(None)) => d.scan(&[QueueName::Maildrop], true, None),
            Ok(Event::WatchLost(why)) => {
                rt.logs.pickup.warning(&format!(
                    "inotify watch on maildrop ended ({why}), scanning every second"
                ));
                watcher = None;
                next_scan = next_scan.min(Instant::now() + scan_interval(None));
            }
            Ok(Event::Done(id, report)) => {
                d.finished(id, report.and_then(|r| r.waiting));
            }
            Ok(Event::Signal(Sig::Stop(sig))) => break sig,
            Ok(Event::Signal(Sig::Flush)) => {
                rt.logs.master.info("flush -- deferred mail is tried now");
                d.scan(&[QueueName::Incoming, QueueName::Deferred], false, None);
            }
            Ok(Event::Signal(Sig::Reload)) => match load() {
                Ok(fresh) => {
                    rt = Arc::new(fresh);
                    d.rt = Arc::clone(&rt);
                    run_delay = run_every(rt.queue_run_delay);
                    for service in &mut services {
                        service.reload(&rt);
                    }
                    rt.logs.master.info("reload -- configuration re-read");
                }
                Err(e) => rt.logs.master.warning(&format!(
                    "reload failed, keeping the old configuration: {e}"
                )),
            },
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break 0,
        }
        let now = Instant::now();
        if now >= next_scan {
            // Without a watch, each scan tries to set one up again (the directory is
            // back, an inotify limit was raised), before it looks, so that nothing
            // falls between the two.
            if watcher.is_none()
                && let Ok(watch) = watch_maildrop(&rt, &tx)
            {
                rt.logs.pickup.info("watching maildrop with inotify again");
                watcher = Some(watch);
            }
            d.scan(
                &[QueueName::Maildrop, QueueName::Incoming, QueueName::Active],
                true,
                None,
            );
            rt.router.remote.tidy();
            // After a reload the places are counted afresh: nothing else may end.
            d.wake();
            d.feed();
            next_scan = now + scan_interval(watcher.as_ref());
        }
        if now >= next_run {
            d.scan(&[QueueName::Deferred], true, None);
            next_run = now + run_delay;
        }
    };
    drop(watcher);
    for service in services {
        service.stop();
    }
    d.pool.shutdown(false);
    rt.logs
        .master
        .info(&format!("terminating on signal {stopped_by}"));
    Ok(())
}

/// How often the daemon scans: seldom while a watch tells it of new mail, every second
/// without one.
fn scan_interval(watch: Option<&MaildropWatch>) -> Duration {
    match watch {
        Some(_) => SCAN_WITH_INOTIFY,
        None => SCAN_WITHOUT_INOTIFY,
    }
}

fn watch_maildrop(rt: &Runtime, tx: &Sender<Event>) -> std::io::Result<MaildropWatch> {
    let tx = tx.clone();
    let tell = move |said: Announcement| {
        let event = match said {
            Announcement::File(id) => Event::Maildrop(Some(id)),
            Announcement::Rescan => Event::Maildrop(None),
            Announcement::Lost(why) => Event::WatchLost(why),
            Announcement::Nothing => return true,
        };
        tx.send(event).is_ok()
    };
    MaildropWatch::start(&rt.queue.dir(QueueName::Maildrop), tell)
}

/// What a one-shot run did.
#[derive(Debug, Default)]
pub struct RunSummary {
    pub messages: usize,
    pub reports: Vec<Report>,
}

/// Runs the queue once in the foreground (`sendmail -q`, and the background delivery
/// `-odb` starts): everything in `maildrop/`, `incoming/`, `active/` and `deferred/`
/// (deferred mail is tried now, whatever its next time), or only IDs containing `filter`.
/// Files a running daemon is delivering are locked and skipped.
pub fn run_once(rt: Runtime, filter: Option<&str>) -> Result<RunSummary> {
    let rt = Arc::new(rt);
    let (tx, rx) = mpsc::channel::<Event>();
    let mut d = Dispatcher::new(Workers::new(rt.delivery, tx)?, rt.delivery, Arc::clone(&rt));
    // A full ID is looked up directly: a non-root `sendmail -odb` may not list maildrop/.
    match filter.and_then(QueueId::parse) {
        Some(id) => {
            if let Some(queue) = rt.queue.find(id, &RUNNABLE) {
                d.dispatch(id, queue);
            }
        }
        None => d.scan(&RUNNABLE, false, filter),
    }
    let mut summary = RunSummary::default();
    let mut seen: HashSet<QueueId> = d.in_flight.clone();
    loop {
        while !d.in_flight.is_empty() {
            match rx.recv() {
                Ok(Event::Done(id, report)) => {
                    let waiting = report.as_ref().and_then(|r| r.waiting.clone());
                    d.finished(id, waiting.clone());
                    // A message that waits for a place is counted when it is done.
                    if let Some(report) = report.filter(|_| waiting.is_none()) {
                        summary.messages += 1;
                        summary.reports.push(report);
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if filter.is_some() {
            break;
        }
        // Mail this run created (bounce notifications) is part of "the whole queue";
        // each file is taken once, so a file that cannot be handled ends the run.
        let fresh: Vec<QueueId> = rt
            .queue
            .ids(QueueName::Maildrop)
            .unwrap_or_default()
            .into_iter()
            .filter(|id| seen.insert(*id))
            .collect();
        if fresh.is_empty() {
            break;
        }
        for id in fresh {
            d.dispatch(id, QueueName::Maildrop);
        }
    }
    d.pool.shutdown(true);
    Ok(summary)
}
