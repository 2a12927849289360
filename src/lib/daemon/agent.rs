//! Which delivery agent handles a recipient: local (`deliver::local`: aliases, `.forward`,
//! mbox, Maildir, commands, files) for domains in `mydestination`, SMTP
//! (`deliver::smtp`) for the rest. Agents are behind a trait so that tests can drive
//! the scheduler with fakes.

use std::sync::Arc;

use crate::address;
use crate::deliver::Dsn;
use crate::deliver::local::LocalContext;
use crate::deliver::smtp::SmtpContext;
use crate::deliver::{MessageSource, Outcome, Request};
use crate::queue::{Envelope, QueueId, Recipient};

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
    /// Recipients with equal keys may be delivered together.
    fn key(&self, address: &str) -> String;
    /// One outcome per recipient, in order.
    fn deliver(
        &self,
        envelope: &Envelope,
        message: MessageSource,
        recipients: &[&Recipient],
    ) -> Vec<Outcome>;
}

/// Recipients of one message to be delivered by one agent call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The program name that logs the outcomes (`local`, `smtp`), as Postfix's
    /// `postfix/local` and `postfix/smtp` do.
    pub program: &'static str,
    /// Indices into the envelope's recipients.
    pub recipients: Vec<usize>,
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
                });
                continue;
            }
            let key = self.remote.key(address);
            match remote_keys.iter().find(|(k, _)| *k == key) {
                Some(&(_, at)) => batches[at].recipients.push(i),
                None => {
                    remote_keys.push((key, batches.len()));
                    batches.push(Batch {
                        program: "smtp",
                        recipients: vec![i],
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

/// SMTP delivery: one transaction per destination.
pub struct Smtp(pub SmtpContext);

impl Remote for Smtp {
    fn key(&self, address: &str) -> String {
        crate::deliver::smtp::destination_key(&self.0, address)
    }

    fn deliver(
        &self,
        envelope: &Envelope,
        message: MessageSource,
        recipients: &[&Recipient],
    ) -> Vec<Outcome> {
        crate::deliver::smtp::deliver(&self.0, envelope, message, recipients)
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
