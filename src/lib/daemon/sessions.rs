//! The daemon's side of the SMTP sessions process ([`crate::smtpd::sessions`]): the daemon
//! (root) binds the listening sockets, then starts `mailroom smtpd-sessions` with them
//! as descriptors 3, 4, ... and watches it, as Postfix's master watches smtpd:
//!
//! - when it dies while the daemon is not stopping, the death is logged (`warning:
//!   process /usr/sbin/mailroom pid 1234 killed by signal 11`) and a new one is started
//!   after a pause: one second, doubled each time it dies within [`QUICK_DEATH`] of its
//!   start, up to [`MAX_PAUSE`]. Connections that arrive meanwhile wait in the sockets'
//!   backlog: the daemon keeps the sockets, so nothing has to be bound again;
//! - on reload, a new one starts at once with the new `main.cf`; the old one is told to
//!   stop (SIGTERM) and finishes the sessions in progress. The sockets are bound again
//!   only when `smtpd_port`, `submission_port`, `inet_interfaces` or `inet_protocols`
//!   changed (or the submission port became usable or unusable);
//! - on stop, it gets SIGTERM, then SIGKILL after [`GRACE`].
//!
//! As root, `mail_owner` must name an account the sessions can run as; when it does not,
//! a fatal line says why and the listener stays off (pickup and delivery go on) until a
//! reload brings a usable one.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::log::{Fallback, Log};
use crate::smtpd::listener;
use crate::smtpd::sessions::{FIRST_FD, SUBCOMMAND};
use crate::sysexits::{Error, Result};

use super::Runtime;
use super::scheduler::Service;

/// The first pause before a new process, and the longest.
pub const MIN_PAUSE: Duration = Duration::from_secs(1);
pub const MAX_PAUSE: Duration = Duration::from_secs(60);
/// A process that dies sooner than this after its start doubles the next pause.
pub const QUICK_DEATH: Duration = Duration::from_secs(10);
/// How long a process told to stop may take (its sessions get 10 s) before SIGKILL.
pub const GRACE: Duration = Duration::from_secs(15);
/// How often the watching thread looks at its processes when nothing wakes it.
const TICK: Duration = Duration::from_millis(100);
/// How long it sleeps when there is nothing to watch (a reload or the stop wake it).
const IDLE: Duration = Duration::from_secs(3600);

/// What the sessions process is started with: the sockets (the daemon keeps them) and
/// where to log.
struct Plan {
    /// The sockets of the addresses asked for that could be bound: the SMTP ones, then
    /// the submission ones.
    sockets: Arc<Vec<TcpListener>>,
    /// How many of `sockets`, the last ones, are the submission port's.
    submission: usize,
    /// False when the sessions cannot run (no usable `mail_owner` as root).
    runnable: bool,
    /// The daemon's log (`mailroom/master`), for the processes' deaths.
    log: Arc<Log>,
}

struct Control {
    stopping: bool,
    /// A new plan to switch to (a reload).
    fresh: Option<Plan>,
}

struct Shared {
    control: Mutex<Control>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sessions process and the thread that watches it.
pub struct SessionsProcess {
    config_dir: PathBuf,
    /// Whether `mailroom` was found beside this program (else the listener stays off).
    program_found: bool,
    fallback: Fallback,
    /// The addresses asked for by the plan in force (SMTP, submission), to tell whether
    /// a reload must bind.
    addrs: (Vec<SocketAddr>, Vec<SocketAddr>),
    /// Sockets already bound, shared with the watching thread's plan.
    sockets: Arc<Vec<TcpListener>>,
    /// How many of them are the submission port's.
    submission: usize,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Binds the listener's sockets as `main.cf` (in `config_dir`) asks and starts the
/// sessions process on them. An empty `smtpd_port` starts nothing (a reload may).
/// Fails only for a value that cannot be used at all (a bad `smtpd_port`).
pub fn start(config_dir: &Path, fallback: Fallback, rt: &Runtime) -> Result<Box<dyn Service>> {
    let config = Config::load(Some(config_dir))?;
    let smtpd_log = Log::from_config_or(&config, "smtpd", fallback);
    make_socket_directory(&config, &smtpd_log);
    let mut addrs = all_addresses(&config, &smtpd_log)?;
    let program = match crate::programs::beside_this_program(crate::programs::MAILROOM) {
        Ok(program) => Some(program),
        Err(e) => {
            if !no_addresses(&addrs) {
                smtpd_log.fatal(&format!("{e}; the SMTP listener is off"));
            }
            None
        }
    };
    let runnable = no_addresses(&addrs) || (program.is_some() && usable_owner(&config, &smtpd_log));
    if !runnable {
        // Not even bound: a client is refused, not left waiting in the backlog.
        addrs = (Vec::new(), Vec::new());
    }
    let (sockets, submission) = bind_both(&addrs, &smtpd_log);
    let sockets = Arc::new(sockets);
    let plan = Plan {
        sockets: Arc::clone(&sockets),
        submission,
        runnable,
        log: Arc::clone(&rt.logs.master),
    };
    let shared = Arc::new(Shared {
        control: Mutex::new(Control {
            stopping: false,
            fresh: None,
        }),
        wake: Condvar::new(),
    });
    let watcher = Watcher {
        program: program.clone().unwrap_or_default(),
        config_dir: config_dir.to_path_buf(),
        stderr: fallback == Fallback::Stderr,
        shared: Arc::clone(&shared),
    };
    let thread = std::thread::Builder::new()
        .name("smtpd-master".into())
        .spawn(move || watcher.run(plan))
        .map_err(|e| Error::io("cannot start the thread that watches the SMTP sessions", &e))?;
    Ok(Box::new(SessionsProcess {
        config_dir: config_dir.to_path_buf(),
        program_found: program.is_some(),
        fallback,
        addrs,
        sockets,
        submission,
        shared,
        thread: Some(thread),
    }))
}

/// Makes the directory of Dovecot's auth socket under the queue (`private/`, mode 0700,
/// `mail_owner`'s, as Postfix's is `postfix`'s), when AUTH is configured and it is
/// missing: Dovecot cannot bind its listener there without it, and the sessions reach
/// the socket through it as `mail_owner`. Only one level is made, and only inside the
/// queue directory; a failure is a warning (AUTH then answers 454).
fn make_socket_directory(config: &Config, log: &Log) {
    use std::os::unix::fs::DirBuilderExt;
    let Some(dir) = crate::sasl::settings::socket_directory(config) else {
        return;
    };
    if dir.is_dir() {
        return;
    }
    if let Err(e) = std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        log.warning(&format!(
            "cannot make {} for Dovecot's auth socket: {}",
            dir.display(),
            crate::sysexits::describe_io(&e)
        ));
        return;
    }
    if nix::unistd::geteuid().is_root()
        && let Ok(owner) = config.mail_owner()
        && let Err(e) = nix::unistd::chown(
            &dir,
            Some(nix::unistd::Uid::from_raw(owner.uid)),
            Some(nix::unistd::Gid::from_raw(owner.gid)),
        )
    {
        log.warning(&format!(
            "cannot give {} to {}: {e}",
            dir.display(),
            owner.name
        ));
    }
}

/// The SMTP and the submission addresses `config` asks for.
fn all_addresses(config: &Config, log: &Log) -> Result<(Vec<SocketAddr>, Vec<SocketAddr>)> {
    let smtp = listener::configured_addresses(config, log)?;
    let submission = listener::submission_addresses(config, &log.for_service("submission"))?;
    Ok((smtp, submission))
}

fn no_addresses(addrs: &(Vec<SocketAddr>, Vec<SocketAddr>)) -> bool {
    addrs.0.is_empty() && addrs.1.is_empty()
}

/// Binds both kinds: the sockets (SMTP first) and how many are submission's.
fn bind_both(addrs: &(Vec<SocketAddr>, Vec<SocketAddr>), log: &Log) -> (Vec<TcpListener>, usize) {
    let mut sockets = listener::bind_all(&addrs.0, log);
    let submission = listener::bind_all(&addrs.1, &log.for_service("submission"));
    let count = submission.len();
    sockets.extend(submission);
    (sockets, count)
}

/// As root, whether `mail_owner` names an account the sessions may run as; when not, a
/// fatal line says why. Another user runs them as itself.
fn usable_owner(config: &Config, log: &Log) -> bool {
    if !nix::unistd::geteuid().is_root() {
        return true;
    }
    match config.mail_owner() {
        Ok(_) => true,
        Err(e) => {
            log.fatal(&format!(
                "{e}; the SMTP listener is off (pickup and delivery go on) until this is fixed \
                 and the configuration reloaded"
            ));
            false
        }
    }
}

impl Service for SessionsProcess {
    fn reload(&mut self, rt: &Runtime) {
        let config = match Config::load(Some(&self.config_dir)) {
            Ok(config) => config,
            Err(e) => {
                rt.logs.master.warning(&format!(
                    "reload: the SMTP sessions keep the old configuration: {e}"
                ));
                return;
            }
        };
        let smtpd_log = Log::from_config_or(&config, "smtpd", self.fallback);
        make_socket_directory(&config, &smtpd_log);
        let addrs = match all_addresses(&config, &smtpd_log) {
            Ok(addrs) => addrs,
            Err(e) => {
                rt.logs
                    .master
                    .warning(&format!("reload: the SMTP listener keeps its sockets: {e}"));
                self.addrs.clone()
            }
        };
        let runnable =
            no_addresses(&addrs) || (self.program_found && usable_owner(&config, &smtpd_log));
        let addrs = if runnable {
            addrs
        } else {
            (Vec::new(), Vec::new())
        };
        if addrs != self.addrs {
            // Closed here, and in the old process once it has stopped.
            let (sockets, submission) = bind_both(&addrs, &smtpd_log);
            self.sockets = Arc::new(sockets);
            self.submission = submission;
            self.addrs = addrs;
        }
        let plan = Plan {
            sockets: Arc::clone(&self.sockets),
            submission: self.submission,
            runnable,
            log: Arc::clone(&rt.logs.master),
        };
        self.shared.lock().fresh = Some(plan);
        self.shared.wake.notify_all();
    }

    fn stop(mut self: Box<Self>) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The watching thread: starts, restarts and stops the sessions process.
struct Watcher {
    program: PathBuf,
    config_dir: PathBuf,
    stderr: bool,
    shared: Arc<Shared>,
}

/// A process told to stop, and when it gets SIGKILL.
struct Retiring {
    child: Child,
    deadline: Instant,
    killed: bool,
}

impl Watcher {
    fn run(&self, mut plan: Plan) {
        let mut current: Option<(Child, Instant)> = None;
        let mut retiring: Vec<Retiring> = Vec::new();
        let mut pause = MIN_PAUSE;
        let mut next_start = Instant::now();
        loop {
            // Processes to watch: a short tick; else until the next start is due, or
            // (no listener) until a reload or the stop wakes the thread.
            let wait = if current.is_some() || !retiring.is_empty() {
                TICK
            } else if plan.runnable && !plan.sockets.is_empty() {
                next_start.saturating_duration_since(Instant::now())
            } else {
                IDLE
            };
            let (stopping, fresh) = {
                let mut control = self.shared.lock();
                if !control.stopping && control.fresh.is_none() {
                    control = self
                        .shared
                        .wake
                        .wait_timeout(control, wait)
                        .map(|(guard, _)| guard)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
                (control.stopping, control.fresh.take())
            };
            if let Some(fresh) = fresh {
                if let Some((child, _)) = current.take() {
                    retire(child, &mut retiring);
                }
                plan = fresh;
                pause = MIN_PAUSE;
                next_start = Instant::now();
            }
            if stopping {
                if let Some((child, _)) = current.take() {
                    retire(child, &mut retiring);
                }
                while !retiring.is_empty() {
                    reap(&mut retiring, &plan.log);
                    std::thread::sleep(TICK / 2);
                }
                return;
            }
            reap(&mut retiring, &plan.log);
            let ended = match &mut current {
                Some((child, _)) => match child.try_wait() {
                    Ok(None) => None,
                    Ok(Some(status)) => Some(Some(status)),
                    Err(_) => Some(None),
                },
                None => None,
            };
            if let (Some(status), Some((child, started))) = (ended, &current) {
                let lived = started.elapsed();
                self.report(&plan.log, child.id(), status);
                current = None;
                if lived < QUICK_DEATH {
                    next_start = Instant::now() + pause;
                    if pause > MIN_PAUSE {
                        plan.log.warning(&format!(
                            "{}: bad command startup -- throttling",
                            self.program.display()
                        ));
                    }
                    pause = (pause * 2).min(MAX_PAUSE);
                } else {
                    next_start = Instant::now() + MIN_PAUSE;
                    pause = MIN_PAUSE;
                }
            }
            if current.is_none()
                && plan.runnable
                && !plan.sockets.is_empty()
                && Instant::now() >= next_start
            {
                match self.spawn(&plan.sockets, plan.submission) {
                    Ok(child) => current = Some((child, Instant::now())),
                    Err(e) => {
                        plan.log
                            .warning(&format!("cannot start {}: {e}", self.program.display()));
                        next_start = Instant::now() + pause;
                        pause = (pause * 2).min(MAX_PAUSE);
                    }
                }
            }
        }
    }

    /// A death the daemon did not ask for, as Postfix's master words it (a clean exit
    /// is not news).
    fn report(&self, log: &Log, pid: u32, status: Option<ExitStatus>) {
        let program = self.program.display();
        match status {
            Some(s) if s.success() => {}
            Some(s) => match (s.code(), s.signal()) {
                (Some(code), _) => {
                    log.warning(&format!("process {program} pid {pid} exit status {code}"))
                }
                (None, Some(sig)) => log.warning(&format!(
                    "process {program} pid {pid} killed by signal {sig}"
                )),
                (None, None) => log.warning(&format!("process {program} pid {pid} ended: {s}")),
            },
            None => log.warning(&format!("process {program} pid {pid} is lost")),
        }
    }

    /// Starts `mailroom smtpd-sessions` with `sockets` as descriptors 3, 4, ..., the
    /// last `submission` of them the submission port's.
    fn spawn(&self, sockets: &[TcpListener], submission: usize) -> std::io::Result<Child> {
        let count = sockets.len() as RawFd;
        // Out of the way of 3..3+count first, so that no dup2 below overwrites a socket
        // still to be moved; close-on-exec, so only the moved copies reach the child.
        let high: Vec<OwnedFd> = sockets
            .iter()
            .map(|s| {
                nix::fcntl::fcntl(
                    s.as_fd(),
                    nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(FIRST_FD + count),
                )
                .map(|fd| {
                    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that we own.
                    unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
                })
                .map_err(std::io::Error::from)
            })
            .collect::<std::io::Result<_>>()?;
        let raw: Vec<RawFd> = high.iter().map(AsRawFd::as_raw_fd).collect();
        let mut cmd = Command::new(&self.program);
        cmd.arg(SUBCOMMAND)
            .arg("-c")
            .arg(&self.config_dir)
            .arg("--fds")
            .arg(sockets.len().to_string())
            .arg("--submission-fds")
            .arg(submission.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if self.stderr {
            cmd.arg("--stderr");
        } else {
            cmd.stderr(Stdio::null());
        }
        // SAFETY: only dup2, which is async-signal-safe, between fork and exec; the
        // descriptors in `raw` stay open in the parent until spawn returns. dup2 clears
        // close-on-exec on the copy, and only on it.
        unsafe {
            cmd.pre_exec(move || {
                for (n, &fd) in raw.iter().enumerate() {
                    if libc::dup2(fd, FIRST_FD + n as RawFd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn();
        drop(high);
        child
    }
}

/// Tells `child` to stop (SIGTERM); [`reap`] waits for it.
fn retire(child: Child, retiring: &mut Vec<Retiring>) {
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    retiring.push(Retiring {
        child,
        deadline: Instant::now() + GRACE,
        killed: false,
    });
}

/// Forgets the retiring processes that have exited; SIGKILL for those past their grace.
fn reap(retiring: &mut Vec<Retiring>, log: &Log) {
    retiring.retain_mut(|r| match r.child.try_wait() {
        Ok(Some(_)) | Err(_) => false,
        Ok(None) => {
            if !r.killed && Instant::now() >= r.deadline {
                log.warning(&format!(
                    "process pid {} did not stop within {} s: killing it",
                    r.child.id(),
                    GRACE.as_secs()
                ));
                signal(&r.child, nix::sys::signal::Signal::SIGKILL);
                r.killed = true;
            }
            true
        }
    });
}

/// Sends `sig` to `child`, which has not been reaped (only this thread waits for it), so
/// its pid cannot belong to another process yet.
fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deaths_are_logged_as_postfix_master_logs_them() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("maillog");
        let log = Log::new(
            "mailroom",
            "master",
            "vm",
            crate::log::Sink::File(path.clone()),
        );
        let watcher = Watcher {
            program: PathBuf::from("/usr/sbin/mailroom"),
            config_dir: tmp.path().to_path_buf(),
            stderr: false,
            shared: Arc::new(Shared {
                control: Mutex::new(Control {
                    stopping: false,
                    fresh: None,
                }),
                wake: Condvar::new(),
            }),
        };
        // (shell command, the end of the log line; None: nothing logged)
        let table = [
            ("exit 0", None),
            ("exit 3", Some("exit status 3")),
            ("kill -SEGV $$", Some("killed by signal 11")),
        ];
        for (script, said) in table {
            let status = Command::new("sh").args(["-c", script]).status().unwrap();
            let before = std::fs::read_to_string(&path).unwrap_or_default();
            watcher.report(&log, 1234, Some(status));
            let after = std::fs::read_to_string(&path).unwrap_or_default();
            let new = &after[before.len()..];
            match said {
                None => assert_eq!(new, "", "{script}"),
                Some(end) => assert!(
                    new.ends_with(&format!(
                        "mailroom/master[{}]: warning: process /usr/sbin/mailroom pid 1234 {end}\n",
                        std::process::id()
                    )),
                    "{script}: {new}"
                ),
            }
        }
    }
}
