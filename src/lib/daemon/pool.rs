//! The delivery threads, and their turns at the disk.
//!
//! Pickup, local delivery and the queue's own records are bound by the disk (an fsync
//! each), where more writers than a few per core only queue on the file system. A remote
//! delivery is the opposite: its thread waits on an agent that waits on a server, for up
//! to the SMTP client's time limits (minutes). So a job holds one of a few *turns* while
//! it works, and gives its turn up while it waits on a remote agent, so that another thread
//! can take it. Slow or silent servers tie up threads, never the disk: local mail keeps
//! moving however many remote deliveries hang, and the deliveries in flight to one
//! destination can reach its concurrency limit.
//!
//! A thread beyond the number of turns is added only when jobs wait while deliveries have
//! been away for [`PATIENCE`]: one *standby* thread waits that long and then joins in, or
//! leaves if the others came back. Against a fast server (loopback, a LAN smart host) the
//! deliveries come back within a millisecond, and more connections than turns would only
//! share the same CPUs (draining 2,000 messages to smtp-sink on two CPUs took 0.78 s
//! with 20 at once against 0.60 s with 8). Threads beyond the turns end as soon as they
//! find no job, so a daemon that delivers locally keeps the same few threads it always
//! had.
//!
//! Idle threads wait on one condition variable, so a job wakes exactly one of them. Not a
//! channel: with std's single-consumer channel behind a mutex, each job also woke the
//! next thread in line for the mutex, only for it to wait again; crossbeam's
//! multi-consumer channel spins and yields a few times before it sleeps, which cost every
//! idle thread system calls after each job.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How many jobs may use the disk at once, and how many may be away from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Jobs that hold a turn at once: the threads that are always there.
    pub turns: usize,
    /// Jobs away at once: the caller keeps to it (the daemon takes a place for each
    /// remote delivery, `slots`), and the pool starts at most this many threads beyond
    /// the turns, so that jobs away never leave the disk without threads.
    pub away: usize,
}

impl Limits {
    /// At least one turn, and at least one job away.
    pub fn new(turns: usize, away: usize) -> Limits {
        Limits {
            turns: turns.max(1),
            away: away.max(1),
        }
    }

    /// Threads at most.
    fn threads(&self) -> usize {
        self.turns + self.away
    }
}

/// What a job does with its turn while it waits on something that is not the disk.
pub trait Turn {
    /// Gives the turn to another job until [`step_in`](Turn::step_in).
    fn step_out(&self);
    /// Takes a turn again; may wait for one.
    fn step_in(&self);
}

/// The turn of a delivery that shares the disk with no other (`sendmail -odi`).
pub struct Alone;

impl Turn for Alone {
    fn step_out(&self) {}
    fn step_in(&self) {}
}

/// Runs `f` with `turn` given up, and takes a turn again afterwards, even if `f` panics.
pub fn away_from_disk<R>(turn: &dyn Turn, f: impl FnOnce() -> R) -> R {
    struct Back<'a>(&'a dyn Turn);
    impl Drop for Back<'_> {
        fn drop(&mut self) {
            self.0.step_in();
        }
    }
    turn.step_out();
    let _back = Back(turn);
    f()
}

type Run<J> = dyn Fn(J, &dyn Turn) + Send + Sync;

/// How long deliveries must have been away before a thread is added for the jobs that
/// wait: well above a transaction with a server on the same machine or network, well
/// below one across the internet.
pub const PATIENCE: Duration = Duration::from_millis(20);

/// Threads that take jobs of type `J` in order and run each with `run`.
pub struct Pool<J: Send + 'static> {
    shared: Arc<Shared<J>>,
}

struct Shared<J> {
    state: Mutex<State<J>>,
    /// A job was queued, or the pool closed.
    work: Condvar,
    /// A turn was given back.
    turn_free: Condvar,
    /// The pool closed (for the standby thread).
    closing: Condvar,
    /// The last thread ended.
    gone: Condvar,
    limits: Limits,
    name: String,
    run: Box<Run<J>>,
}

struct State<J> {
    jobs: VecDeque<J>,
    closed: bool,
    /// Threads started and not yet ended, the standby among them.
    threads: usize,
    /// Threads waiting for a job.
    idle: usize,
    /// When each job that stepped out did so (one entry per thread away).
    away: Vec<Instant>,
    /// A standby thread is waiting to see whether it is needed.
    standby: bool,
    /// Turns held.
    taken: usize,
    /// For thread names.
    started: usize,
}

impl<J> State<J> {
    /// Threads that are working or will soon: all but the standby and those that have
    /// been away for [`PATIENCE`] or more.
    fn at_hand(&self, now: Instant) -> usize {
        let long_away = self
            .away
            .iter()
            .filter(|since| now.saturating_duration_since(**since) >= PATIENCE)
            .count();
        self.threads - usize::from(self.standby) - long_away
    }

    /// Workers that are not away.
    fn present(&self) -> usize {
        self.threads - usize::from(self.standby) - self.away.len()
    }
}

impl<J: Send + 'static> Pool<J> {
    /// A pool with `limits.turns` threads started now (an error if one cannot be), named
    /// `name-N`.
    pub fn new(
        name: &str,
        limits: Limits,
        run: impl Fn(J, &dyn Turn) + Send + Sync + 'static,
    ) -> std::io::Result<Pool<J>> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                closed: false,
                threads: 0,
                idle: 0,
                away: Vec::new(),
                standby: false,
                taken: 0,
                started: 0,
            }),
            work: Condvar::new(),
            turn_free: Condvar::new(),
            closing: Condvar::new(),
            gone: Condvar::new(),
            limits,
            name: name.to_owned(),
            run: Box::new(run),
        });
        let pool = Pool { shared };
        for _ in 0..limits.turns {
            let mut state = pool.shared.lock();
            let mine = Arc::clone(&pool.shared);
            if let Err(e) = Shared::spawn(&pool.shared, &mut state, move || mine.work_until_done())
            {
                drop(state);
                pool.shared.close();
                pool.shared.wait_gone();
                return Err(e);
            }
        }
        Ok(pool)
    }

    /// Queues `job`; dropped if the pool is closed.
    pub fn submit(&self, job: J) {
        let mut state = self.shared.lock();
        if state.closed {
            return;
        }
        state.jobs.push_back(job);
        if state.idle > 0 {
            self.shared.work.notify_one();
        }
        Shared::stand_by_if_wanted(&self.shared, &mut state);
    }

    /// Takes no more jobs, lets the threads run the queued ones, and returns once every
    /// thread has ended.
    pub fn finish(self) {
        self.shared.close();
        self.shared.wait_gone();
    }

    /// Threads running now, the standby among them (for the tests).
    #[cfg(test)]
    fn threads(&self) -> usize {
        self.shared.lock().threads
    }
}

impl<J: Send + 'static> Shared<J> {
    fn lock(&self) -> MutexGuard<'_, State<J>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, on: &Condvar, state: MutexGuard<'a, State<J>>) -> MutexGuard<'a, State<J>> {
        on.wait(state).unwrap_or_else(|p| p.into_inner())
    }

    fn close(&self) {
        self.lock().closed = true;
        self.work.notify_all();
        self.closing.notify_all();
    }

    fn wait_gone(&self) {
        let mut state = self.lock();
        while state.threads > 0 {
            state = self.wait(&self.gone, state);
        }
    }

    fn spawn(
        shared: &Arc<Self>,
        state: &mut State<J>,
        body: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        let name = format!("{}-{}", shared.name, state.started);
        std::thread::Builder::new().name(name).spawn(body)?;
        state.threads += 1;
        state.started += 1;
        Ok(())
    }

    /// Counts a thread out; called under the same lock as its decision to end.
    fn leave(&self, state: &mut State<J>) {
        state.threads -= 1;
        if state.threads == 0 {
            self.gone.notify_all();
        }
    }

    /// Whether a queued job would wait while a turn is free: no idle thread will take
    /// it, and fewer threads than turns are not away.
    fn wanted(&self, state: &State<J>) -> bool {
        !state.closed
            && state.jobs.len() > state.idle
            && state.present() < self.limits.turns
            && state.threads < self.limits.threads()
    }

    /// Starts the standby thread if a thread may be wanted and none stands by.
    fn stand_by_if_wanted(shared: &Arc<Self>, state: &mut State<J>) {
        if state.standby || !shared.wanted(state) {
            return;
        }
        let mine = Arc::clone(shared);
        // A thread that cannot be started now leaves the job to the others.
        if Self::spawn(shared, state, move || mine.stand_by()).is_ok() {
            state.standby = true;
        }
    }

    /// The standby thread: after each [`PATIENCE`], it becomes a worker if jobs still
    /// wait and deliveries have been away that long, stays while a thread may be wanted,
    /// and ends otherwise.
    fn stand_by(self: Arc<Self>) {
        let mut state = self.lock();
        loop {
            state = self
                .closing
                .wait_timeout(state, PATIENCE)
                .map_or_else(|p| p.into_inner().0, |(state, _)| state);
            let needed =
                state.jobs.len() > state.idle && state.at_hand(Instant::now()) < self.limits.turns;
            if !state.closed && needed {
                state.standby = false;
                // The next standby, for a job still waiting after this one takes its own.
                Self::stand_by_if_wanted(&self, &mut state);
                drop(state);
                return self.work_until_done();
            }
            if !self.wanted(&state) {
                state.standby = false;
                self.leave(&mut state);
                return;
            }
        }
    }

    fn work_until_done(self: &Arc<Self>) {
        while let Some(job) = self.next_job() {
            let turn = Held {
                shared: self,
                since: Cell::new(None),
            };
            // A job that panics loses itself, not the thread nor the turn (given back
            // when `turn` drops); the caller's `run` says what became of the job.
            let _ =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.run)(job, &turn)));
        }
    }

    /// The next job, with a turn taken for it; `None` when this thread should end: the
    /// pool is closed and empty, or there is no job and enough threads are present
    /// without it.
    fn next_job(&self) -> Option<J> {
        let mut state = self.lock();
        let job = loop {
            if let Some(job) = state.jobs.pop_front() {
                break job;
            }
            if state.closed || state.present() > self.limits.turns {
                self.leave(&mut state);
                return None;
            }
            state.idle += 1;
            state = self.wait(&self.work, state);
            state.idle -= 1;
        };
        while state.taken >= self.limits.turns {
            state = self.wait(&self.turn_free, state);
        }
        state.taken += 1;
        Some(job)
    }
}

/// A running job's turn: given back when the job ends.
struct Held<'a, J: Send + 'static> {
    shared: &'a Arc<Shared<J>>,
    /// When the job stepped out; `None` while it holds its turn.
    since: Cell<Option<Instant>>,
}

impl<J: Send + 'static> Held<'_, J> {
    /// Takes this job's entry out of the threads away.
    fn come_back(&self, state: &mut State<J>, since: Instant) {
        if let Some(at) = state.away.iter().position(|t| *t == since) {
            state.away.swap_remove(at);
        }
    }
}

impl<J: Send + 'static> Turn for Held<'_, J> {
    fn step_out(&self) {
        if self.since.get().is_some() {
            return;
        }
        let now = Instant::now();
        self.since.set(Some(now));
        let mut state = self.shared.lock();
        state.taken -= 1;
        state.away.push(now);
        self.shared.turn_free.notify_one();
        Shared::stand_by_if_wanted(self.shared, &mut state);
    }

    fn step_in(&self) {
        let Some(since) = self.since.take() else {
            return;
        };
        let mut state = self.shared.lock();
        self.come_back(&mut state, since);
        while state.taken >= self.shared.limits.turns {
            state = self.shared.wait(&self.shared.turn_free, state);
        }
        state.taken += 1;
    }
}

impl<J: Send + 'static> Drop for Held<'_, J> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        match self.since.take() {
            Some(since) => self.come_back(&mut state, since),
            None => {
                state.taken -= 1;
                self.shared.turn_free.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A job works "on the disk" for a moment; a remote one then takes a place among
    /// `limits.away` (as the daemon's destination slots do: without one it ends, as a
    /// message that waits in `active/`) and waits "on a server", until the test opens
    /// its gate or for a few milliseconds. The counters record the most at once.
    #[derive(Default)]
    struct Counters {
        on_disk: usize,
        most_on_disk: usize,
        remote: usize,
        most_remote: usize,
        done: usize,
    }

    enum Job {
        Local,
        Remote(Arc<(Mutex<bool>, Condvar)>),
        /// Away for a few milliseconds, as a server on the same network keeps it.
        Quick,
    }

    fn counting_pool(limits: Limits, counters: &Arc<Mutex<Counters>>) -> Pool<Job> {
        let counters = Arc::clone(counters);
        Pool::new("test", limits, move |job: Job, turn: &dyn Turn| {
            let bump = |f: &mut dyn FnMut(&mut Counters)| f(&mut counters.lock().unwrap());
            bump(&mut |c| {
                c.on_disk += 1;
                c.most_on_disk = c.most_on_disk.max(c.on_disk);
            });
            if !matches!(job, Job::Quick) {
                std::thread::sleep(Duration::from_millis(5));
            }
            let mut placed = false;
            bump(&mut |c| {
                c.on_disk -= 1;
                placed = !matches!(job, Job::Local) && c.remote < limits.away;
                if placed {
                    c.remote += 1;
                    c.most_remote = c.most_remote.max(c.remote);
                }
            });
            if placed {
                away_from_disk(turn, || match &job {
                    Job::Remote(gate) => {
                        let (open, opened) = &**gate;
                        let mut go = open.lock().unwrap();
                        while !*go {
                            go = opened.wait(go).unwrap();
                        }
                    }
                    _ => std::thread::sleep(Duration::from_millis(3)),
                });
            }
            bump(&mut |c| {
                if placed {
                    c.remote -= 1;
                }
                c.done += 1;
            });
        })
        .unwrap()
    }

    fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let end = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn jobs_waiting_on_remote_servers_leave_the_disk_to_local_ones() {
        // (turns, places away, remote jobs held)
        let cases = [(2, 4, 10), (2, 2, 3), (1, 3, 3), (3, 20, 8), (1, 1, 5)];
        for (turns, away, remote) in cases {
            let what = format!("{turns} turns, {away} away, {remote} remote");
            let counters = Arc::new(Mutex::new(Counters::default()));
            let pool = counting_pool(Limits::new(turns, away), &counters);
            assert_eq!(pool.threads(), turns, "{what}: threads at the start");
            let gate = Arc::new((Mutex::new(false), Condvar::new()));
            for _ in 0..remote {
                pool.submit(Job::Remote(Arc::clone(&gate)));
            }
            let most_away = remote.min(away);
            wait_until(&what, || {
                let c = counters.lock().unwrap();
                c.remote == most_away && c.done == remote - most_away
            });
            // While the remote jobs hang, local ones still get done.
            for _ in 0..5 {
                pool.submit(Job::Local);
            }
            wait_until(&what, || {
                counters.lock().unwrap().done == remote - most_away + 5
            });
            assert!(pool.threads() <= turns + away, "{what}: {}", pool.threads());
            let (open, opened) = &*gate;
            *open.lock().unwrap() = true;
            opened.notify_all();
            wait_until(&what, || counters.lock().unwrap().done == remote + 5);
            let c = counters.lock().unwrap();
            assert!(
                c.most_on_disk <= turns,
                "{what}: {} on disk",
                c.most_on_disk
            );
            assert_eq!(c.most_remote, most_away, "{what}");
            drop(c);
            // The extra threads end once there is nothing left to do.
            wait_until(&what, || pool.threads() == turns);
            pool.finish();
        }
    }

    #[test]
    fn deliveries_that_come_back_at_once_get_no_more_threads() {
        let counters = Arc::new(Mutex::new(Counters::default()));
        let pool = counting_pool(Limits::new(2, 18), &counters);
        for _ in 0..200 {
            pool.submit(Job::Quick);
        }
        wait_until("200 jobs", || counters.lock().unwrap().done == 200);
        let c = counters.lock().unwrap();
        // Two turns, and a third only if a thread was kept from running for PATIENCE
        // while it was away (a loaded machine); never anywhere near the 18 allowed.
        assert!(c.most_remote <= 4, "{} away at once", c.most_remote);
        drop(c);
        pool.finish();
    }

    #[test]
    fn a_pool_of_local_work_keeps_its_threads_and_runs_every_job_before_it_finishes() {
        let counters = Arc::new(Mutex::new(Counters::default()));
        let pool = counting_pool(Limits::new(3, 50), &counters);
        for _ in 0..40 {
            pool.submit(Job::Local);
        }
        assert_eq!(pool.threads(), 3, "no job stepped out: no thread is added");
        pool.finish();
        let c = counters.lock().unwrap();
        assert_eq!(c.done, 40);
        assert!(c.most_on_disk <= 3);
    }

    #[test]
    fn a_panicking_job_gives_back_its_turn_and_its_thread() {
        let (tx, rx) = mpsc::channel();
        let pool = Pool::new("test", Limits::new(1, 1), move |n: u32, turn: &dyn Turn| {
            if n == 0 {
                away_from_disk(turn, || panic!("job 0 fails"));
            }
            tx.send(n).unwrap();
        })
        .unwrap();
        pool.submit(0);
        pool.submit(1);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(1));
        // The standby its stepping out called up leaves again.
        wait_until("one thread", || pool.threads() == 1);
        pool.finish();
    }
}
