//! The delivery daemon and the one-shot deliveries that stand in for it: pickup from
//! `maildrop/`, bounded parallel delivery, retries with backoff, bounces, the
//! single-instance lock and signals. `man/mailroom-daemon.8` describes the behaviour.
//!
//! A message moves `maildrop/` → `incoming/` (picked up, checked) → `active/` (being
//! delivered) → removed, or → `deferred/` (waiting for its next try) → `active/` ... Every
//! step holds the file's flock, so the daemon, one-shot deliveries (`sendmail -odb`,
//! `-odi`, `-q`) and `postsuper` never act on one file at once.

pub mod agent;
pub mod bounce;
pub mod detach;
pub mod lock;
pub mod logline;
pub mod modes;
pub mod pickup;
pub mod pool;
pub mod process;
pub mod retry;
pub mod scheduler;
pub mod sessions;
pub mod signals;
pub mod slots;
pub mod watch;

use std::sync::Arc;

use crate::config::Config;
use crate::deliver::bounce::BounceSettings;
use crate::deliver::local::LocalContext;
use crate::deliver::local::aliases::DatabaseAliases;
use crate::deliver::smtp::SmtpContext;
use crate::log::{Fallback, Log, Sink};
use crate::queue::Queue;
use crate::sysexits::Result;

pub use agent::{Agent, Router};
pub use bounce::Bouncer;
pub use retry::RetryPolicy;

/// The log of each program the daemon speaks for, as Postfix's separate processes would
/// (`mailroom/pickup`, `mailroom/qmgr`, `mailroom/local`...), all to one sink.
/// Shared (`Arc`) so that the delivery agents log through the same ones.
pub struct Logs {
    pub master: Arc<Log>,
    pub pickup: Arc<Log>,
    pub qmgr: Arc<Log>,
    pub local: Arc<Log>,
    pub smtp: Arc<Log>,
    pub bounce: Arc<Log>,
}

impl Logs {
    pub fn new(syslog_name: &str, host: &str, sink: Sink) -> Logs {
        let log = |program| Arc::new(Log::new(syslog_name, program, host, sink.clone()));
        Logs {
            master: log("master"),
            pickup: log("pickup"),
            qmgr: log("qmgr"),
            local: log("local"),
            smtp: log("smtp"),
            bounce: log("bounce"),
        }
    }

    /// `maillog_file` when set, else `fallback` (stderr for `-bD`, syslog otherwise).
    pub fn from_config(config: &Config, fallback: Fallback) -> Logs {
        let (name, host, sink) = crate::log::settings(config, fallback);
        Logs::new(&name, &host, sink)
    }

    pub fn discard() -> Logs {
        Logs::new("mailroom", "localhost", Sink::Discard)
    }

    /// The log of the agent program `name` (`local`, `smtp`).
    pub fn agent(&self, name: &str) -> &Log {
        match name {
            "local" => &self.local,
            _ => &self.smtp,
        }
    }
}

/// Everything a delivery needs, built from one reading of `main.cf`. SIGHUP builds a new
/// one; work already started finishes with the one it started with.
pub struct Runtime {
    pub queue: Queue,
    pub policy: RetryPolicy,
    pub router: Router,
    pub bouncer: Box<dyn Bouncer>,
    pub logs: Logs,
    /// Deliveries at once, and how many of them may use the disk at once.
    pub delivery: pool::Limits,
    /// How often deferred mail is looked at (`queue_run_delay`).
    pub queue_run_delay: std::time::Duration,
}

/// At most this many jobs use the disk at once, whatever `default_process_limit` says:
/// pickup and local delivery are disk-bound (one fsync per mailbox write and per state
/// record), and beyond a few writers per core more threads only queue on the file system.
pub const MOST_TURNS: usize = 8;

/// At most this many remote deliveries at once, whatever `default_process_limit` says.
/// Each is a thread here waiting on a `mailroom smtp-agent` process (a few MB each), so
/// the bound is on memory more than on work.
pub const MOST_REMOTE: usize = 1000;

impl Runtime {
    /// The runtime for `config`, with the agents of this version.
    pub fn from_config(config: &Config, log_fallback: Fallback) -> Result<Runtime> {
        let logs = Logs::from_config(config, log_fallback);
        let queue = Queue::from_config(config)?;
        let delivery = delivery_limits(config.number("default_process_limit")?);
        let warn_log = Arc::clone(&logs.local);
        let alias_log = Arc::clone(&logs.local);
        let alias_fatal = Arc::clone(&logs.local);
        let aliases = DatabaseAliases::from_config(
            config,
            Arc::new(move |w: &str| alias_log.warning(w)),
            Arc::new(move |f: &str| alias_fatal.fatal(f)),
        )?;
        let local = LocalContext::from_config(
            config,
            queue.clone(),
            Arc::new(aliases),
            Arc::new(move |w: &str| warn_log.warning(w)),
        )?;
        let destination_limit = config.number("smtp_destination_concurrency_limit")?;
        let max_idle = config.time("max_idle")?;
        // The agents read main.cf again themselves; reading it here finds its errors
        // once, before any mail waits on them.
        let agents = SmtpContext::from_config(config).and_then(|ctx| {
            let program = crate::programs::beside_this_program(crate::programs::MAILROOM)?;
            let dir = std::path::absolute(config.dir())
                .map_err(|e| crate::sysexits::Error::io("configuration directory", &e))?;
            Ok(agent::SmtpProcesses::new(
                ctx,
                program,
                dir,
                Arc::clone(&logs.smtp),
                (destination_limit, delivery.away),
                max_idle,
            ))
        });
        let remote: Box<dyn agent::Remote> = match agents {
            Ok(agents) => Box::new(agents),
            Err(e) => {
                // Local mail must not stop because remote settings are wrong.
                logs.smtp.warning(&format!(
                    "remote delivery disabled, remote mail is deferred: {e}"
                ));
                Box::new(agent::RemoteUnavailable)
            }
        };
        let router = Router {
            mydestination: config.mydestination()?,
            local: Box::new(agent::Local(Arc::new(local))),
            remote,
        };
        Ok(Runtime {
            queue,
            policy: RetryPolicy::from_config(config)?,
            router,
            bouncer: Box::new(bounce::DsnBouncer(BounceSettings::from_config(config)?)),
            logs,
            delivery,
            queue_run_delay: config.time("queue_run_delay")?,
        })
    }
}

/// The delivery threads for `default_process_limit`: that many remote deliveries at once
/// (at least one, at most [`MOST_REMOTE`]), as Postfix's smtp processes, and beside them
/// as many jobs at the disk (pickup, local delivery) as `default_process_limit`, four per
/// CPU and [`MOST_TURNS`] allow.
pub fn delivery_limits(process_limit: u64) -> pool::Limits {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let limit = usize::try_from(process_limit).unwrap_or(usize::MAX);
    pool::Limits::new(
        limit.min(MOST_TURNS.min(4 * cpus)),
        limit.clamp(1, MOST_REMOTE),
    )
}
