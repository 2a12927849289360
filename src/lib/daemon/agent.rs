//! Which delivery agent handles a recipient: local (`deliver::local`: aliases, `.forward`,
//! mbox, Maildir, commands, files) for domains in `mydestination`, SMTP
//! (`deliver::smtp`) for the rest. Agents are behind a trait so that tests can drive
//! the scheduler with fakes.
//!
//! The daemon's SMTP client runs in `mailroom smtp-agent` processes as `mail_owner`
//! ([`SmtpProcesses`], `deliver::smtp::agent`); [`Smtp`] runs it in this process, for
//! tests that have no `mailroom` program at hand.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::address;
use crate::deliver::Dsn;
use crate::deliver::local::LocalContext;
use crate::deliver::smtp::agent::AgentProcess;
use crate::deliver::smtp::{SmtpContext, Timeouts};
use crate::deliver::{MessageSource, Outcome, Request};
use crate::log::Log;
use crate::queue::{Envelope, QueueId, Recipient};

use super::slots::{DestinationSlots, Slot};

/// Something that delivers one recipient of one message and says what happened.
pub trait Agent: Send + Sync {
    fn deliver(&self, req: &Request) -> Outcome;
}

/// Any `Fn(&Request) -> Outcome` is an agent (tests use closures).
impl<F> Agent for F
where
    F: Fn(&Request) -> Outcome + Send + Sync,
{
    fn deliver(&self, req: &Request) -> Outcome {
        self(req)
    }
}

/// Remote delivery: recipients that share a destination go in one call (one SMTP
/// transaction with several `RCPT TO`).
pub trait Remote: Send + Sync {
    /// Recipients with equal keys may be delivered together: the destination.
    fn key(&self, address: &str) -> String;
    /// A place for one more delivery to destination `key`, held until dropped; `None`
    /// while it has all the deliveries in flight it may have
    /// (`smtp_destination_concurrency_limit`). No limit unless the agent has one.
    fn admit(&self, _key: &str) -> Option<Slot> {
        Some(Slot::unlimited())
    }
    /// Whether [`admit`](Remote::admit) would give `key` a place now.
    fn has_room(&self, _key: &str) -> bool {
        true
    }
    /// One outcome per recipient, in order.
    fn deliver(
        &self,
        envelope: &Envelope,
        message: MessageSource,
        recipients: &[&Recipient],
    ) -> Vec<Outcome>;
    /// Lets go of what has been idle too long (called every few seconds, without
    /// waiting on anything).
    fn tidy(&self) {}
}

/// Recipients of one message to be delivered by one agent call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The program name that logs the outcomes (`local`, `smtp`), as Postfix's
    /// `postfix/local` and `postfix/smtp` do.
    pub program: &'static str,
    /// Indices into the envelope's recipients.
    pub recipients: Vec<usize>,
    /// The remote destination ([`Remote::key`]); empty for local recipients.
    pub key: String,
}

/// Routes each recipient to the local or the remote agent by its domain
/// (`mydestination`).
pub struct Router {
    pub mydestination: Vec<String>,
    pub local: Box<dyn Agent>,
    pub remote: Box<dyn Remote>,
}

impl Router {
    /// Splits the pending recipients into agent calls: one per local recipient, one per
    /// remote destination (in the order destinations first appear).
    pub fn plan(&self, envelope: &Envelope, pending: &[usize]) -> Vec<Batch> {
        let mut batches: Vec<Batch> = Vec::new();
        let mut remote_keys: Vec<(String, usize)> = Vec::new();
        for &i in pending {
            let address = &envelope.recipients[i].address;
            if address::is_local(address, &self.mydestination) {
                batches.push(Batch {
                    program: "local",
                    recipients: vec![i],
                    key: String::new(),
                });
                continue;
            }
            let key = self.remote.key(address);
            match remote_keys.iter().find(|(k, _)| *k == key) {
                Some(&(_, at)) => batches[at].recipients.push(i),
                None => {
                    remote_keys.push((key.clone(), batches.len()));
                    batches.push(Batch {
                        program: "smtp",
                        recipients: vec![i],
                        key,
                    });
                }
            }
        }
        batches
    }

    /// Delivers one batch; one outcome per recipient, in the batch's order.
    pub fn deliver(
        &self,
        queue_id: QueueId,
        envelope: &Envelope,
        message: MessageSource,
        batch: &Batch,
    ) -> Vec<Outcome> {
        if batch.program == "local" {
            return batch
                .recipients
                .iter()
                .map(|&i| {
                    self.local.deliver(&Request {
                        queue_id,
                        envelope,
                        recipient: &envelope.recipients[i],
                        message,
                    })
                })
                .collect();
        }
        let recipients: Vec<&Recipient> = batch
            .recipients
            .iter()
            .map(|&i| &envelope.recipients[i])
            .collect();
        let mut outcomes = self.remote.deliver(envelope, message, &recipients);
        // An agent that answers for fewer recipients than asked must not make the
        // others look delivered: they wait for the next attempt.
        outcomes.resize_with(recipients.len(), || {
            Outcome::deferred(
                "none",
                Dsn::TEMP_LOCAL,
                "no outcome from the delivery agent",
            )
        });
        outcomes
    }
}

/// Local delivery.
pub struct Local(pub Arc<LocalContext>);

impl Agent for Local {
    fn deliver(&self, req: &Request) -> Outcome {
        crate::deliver::local::deliver(&self.0, req)
    }
}

/// SMTP delivery in `mailroom smtp-agent` processes, which run as `mail_owner`: no DNS
/// answer nor server reply is parsed in this (root) process. Processes are started on
/// demand and kept for the next batch, so there are at most as many as batches in
/// flight (`default_process_limit`); one that fails is killed, and the next batch starts
/// a new one. One left idle for `max_idle` is told to quit, as an idle Postfix process
/// ends itself, so that a burst of slow deliveries does not leave its agents behind.
pub struct SmtpProcesses {
    /// For [`Remote::key`] only (no DNS: `destination_key` looks at the address).
    ctx: SmtpContext,
    program: PathBuf,
    config_dir: PathBuf,
    /// The daemon's `$syslog_name/smtp`, for the agents' warnings.
    log: Arc<Log>,
    /// How long a batch may take before its agent is given up.
    deadline: Duration,
    idle: Mutex<Idle>,
    /// `max_idle`.
    max_idle: Duration,
    /// `smtp_destination_concurrency_limit`.
    slots: Arc<DestinationSlots>,
}

impl SmtpProcesses {
    /// Agents running `program` with the configuration in `config_dir`, which `ctx` was
    /// read from, at most `destination_limit` at once for one destination (0: no limit)
    /// and `total` for all.
    pub fn new(
        ctx: SmtpContext,
        program: PathBuf,
        config_dir: PathBuf,
        log: Arc<Log>,
        (destination_limit, total): (u64, usize),
        max_idle: Duration,
    ) -> SmtpProcesses {
        let deadline = job_deadline(&ctx.timeouts, ctx.address_limit);
        SmtpProcesses {
            ctx,
            program,
            config_dir,
            log,
            deadline,
            idle: Mutex::new(Idle::default()),
            max_idle,
            slots: DestinationSlots::new(destination_limit, total),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The agent used last that is still alive, or a new one.
    fn take(&self) -> Result<AgentProcess, String> {
        loop {
            let Some((mut agent, _)) = self.idle().ready.pop_back() else {
                break;
            };
            if !agent.exited() {
                return Ok(agent);
            }
        }
        AgentProcess::start(&self.program, &self.config_dir)
    }

    /// Keeps `agent` for the next batch, and lets go of those idle too long.
    fn put_back(&self, agent: AgentProcess) {
        let mut idle = self.idle();
        idle.ready.push_back((agent, Instant::now()));
        idle.expire(self.max_idle);
    }
}

/// The agents waiting for a batch, the one used last at the back, and those told to quit.
#[derive(Default)]
struct Idle {
    ready: VecDeque<(AgentProcess, Instant)>,
    /// Hung up, and not yet seen to end: they say QUIT to their servers first.
    leaving: Vec<AgentProcess>,
}

impl Idle {
    /// Hangs up on the agents idle for `max_idle` or more, and reaps those that ended;
    /// it waits for none of them.
    fn expire(&mut self, max_idle: Duration) {
        let now = Instant::now();
        while let Some((_, since)) = self.ready.front()
            && now.saturating_duration_since(*since) >= max_idle
        {
            if let Some((agent, _)) = self.ready.pop_front() {
                agent.hang_up();
                self.leaving.push(agent);
            }
        }
        // Dropping one that ended only collects its exit status.
        self.leaving.retain_mut(|agent| !agent.exited());
    }
}

impl Drop for SmtpProcesses {
    /// All agents are told to stop at once, so that they close their cached connections
    /// (QUIT) side by side rather than one after the other.
    fn drop(&mut self) {
        let idle = std::mem::take(&mut *self.idle());
        let agents: Vec<AgentProcess> = idle
            .ready
            .into_iter()
            .map(|(agent, _)| agent)
            .chain(idle.leaving)
            .collect();
        for agent in &agents {
            agent.hang_up();
        }
    }
}

/// The longest [`job_deadline`].
pub const MAX_JOB_DEADLINE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Well above the longest a batch can take in the client: every step's time limit, for
/// each address it may try, twice (the plain-text retry after a failed TLS handshake),
/// twice over, plus five minutes for DNS; a week at most. It only catches an agent that
/// hangs.
pub fn job_deadline(t: &Timeouts, address_limit: usize) -> Duration {
    let steps = [
        t.connect,
        t.helo,
        t.starttls,
        t.mail,
        t.rcpt,
        t.data_init,
        t.data_xfer,
        t.data_done,
        t.quit,
    ];
    let session = steps
        .iter()
        .fold(Duration::ZERO, |sum, step| sum.saturating_add(*step));
    let tries = address_limit.clamp(1, 20) as u32 * 2;
    session
        .saturating_mul(tries * 2)
        .saturating_add(Duration::from_secs(300))
        .min(MAX_JOB_DEADLINE)
}

impl Remote for SmtpProcesses {
    fn key(&self, address: &str) -> String {
        crate::deliver::smtp::destination_key(&self.ctx, address)
    }

    fn admit(&self, key: &str) -> Option<Slot> {
        self.slots.take(key)
    }

    fn has_room(&self, key: &str) -> bool {
        self.slots.has_room(key)
    }

    fn tidy(&self) {
        self.idle().expire(self.max_idle);
    }

    fn deliver(
        &self,
        envelope: &Envelope,
        message: MessageSource,
        recipients: &[&Recipient],
    ) -> Vec<Outcome> {
        let result = self.take().and_then(|mut agent| {
            let reply = agent.deliver(envelope, message, recipients, self.deadline)?;
            self.put_back(agent);
            Ok(reply)
        });
        match result {
            Ok(reply) => {
                for warning in &reply.warnings {
                    self.log.warning(warning);
                }
                for note in &reply.notes {
                    self.log.info(note);
                }
                reply.outcomes
            }
            // The failed agent was dropped (killed) on the way.
            Err(why) => recipients
                .iter()
                .map(|_| Outcome::deferred("none", Dsn::TEMP_LOCAL, why.clone()))
                .collect(),
        }
    }
}

/// The remote agent when the SMTP client cannot be configured: remote mail waits in the
/// deferred queue (and `mailq` says why) instead of bouncing, and local mail still flows.
pub struct RemoteUnavailable;

impl Remote for RemoteUnavailable {
    fn key(&self, _address: &str) -> String {
        String::new()
    }

    fn deliver(&self, _: &Envelope, _: MessageSource, recipients: &[&Recipient]) -> Vec<Outcome> {
        recipients
            .iter()
            .map(|_| {
                Outcome::deferred(
                    "none",
                    Dsn::TEMP_LOCAL,
                    "remote delivery is not configured: see the daemon's start-up warning",
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Recipient as Rcpt;

    struct ByDomain;

    impl Remote for ByDomain {
        fn key(&self, address: &str) -> String {
            address::domain_of(address).unwrap_or_default()
        }
        fn deliver(&self, _: &Envelope, _: MessageSource, r: &[&Recipient]) -> Vec<Outcome> {
            r.iter().map(|_| Outcome::sent("x", "ok")).collect()
        }
    }

    #[test]
    fn an_agent_gets_far_longer_than_the_client_can_take() {
        let t = Timeouts::all(Duration::from_secs(2));
        // 9 steps of 2 s, 5 addresses, twice each, twice over, plus 5 minutes.
        assert_eq!(job_deadline(&t, 5), Duration::from_secs(18 * 20 + 300));
        // No limit on addresses (0 in main.cf) is still a finite deadline.
        assert_eq!(
            job_deadline(&t, usize::MAX),
            Duration::from_secs(18 * 80 + 300)
        );
        let forever = Timeouts::all(Duration::MAX);
        assert_eq!(job_deadline(&forever, 5), MAX_JOB_DEADLINE);
    }

    #[test]
    fn remote_recipients_are_grouped_by_destination() {
        let router = Router {
            mydestination: vec!["here.example".into()],
            local: Box::new(|_: &Request| Outcome::sent("local", "ok")),
            remote: Box::new(ByDomain),
        };
        let mut env = Envelope::new(QueueId::generate(), 0, 0, "s@here.example");
        for a in ["a@x.org", "b@here.example", "c@y.org", "d@X.org", "e"] {
            env.recipients.push(Rcpt::new(a, a));
        }
        let plan = router.plan(&env, &[0, 1, 2, 3, 4]);
        let got: Vec<(&str, Vec<usize>)> = plan
            .iter()
            .map(|b| (b.program, b.recipients.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("smtp", vec![0, 3]),
                ("local", vec![1]),
                ("smtp", vec![2]),
                ("local", vec![4]),
            ]
        );
    }
}
