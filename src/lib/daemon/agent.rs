//! Which delivery agent handles a recipient: local (`deliver::local`: aliases, `.forward`,
//! mbox, Maildir, commands, files) for domains in `mydestination`, SMTP
//! (`deliver::smtp`) for the rest. Agents are behind a trait so that tests can drive
//! the scheduler with fakes.

use std::sync::Arc;

use crate::address;
use crate::deliver::local::LocalContext;
use crate::deliver::smtp::SmtpContext;
use crate::deliver::{Outcome, Request};

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

/// Routes each recipient to the local or the remote agent by its domain
/// (`mydestination`), and names the program that logs the outcome, as Postfix's
/// `postfix/local` and `postfix/smtp` do.
pub struct Router {
    pub mydestination: Vec<String>,
    pub local: Box<dyn Agent>,
    pub remote: Box<dyn Agent>,
}

impl Router {
    /// Delivers one recipient; returns the log program name and the outcome.
    pub fn deliver(&self, req: &Request) -> (&'static str, Outcome) {
        if address::is_local(&req.recipient.address, &self.mydestination) {
            ("local", self.local.deliver(req))
        } else {
            ("smtp", self.remote.deliver(req))
        }
    }
}

/// Local delivery.
pub struct Local(pub Arc<LocalContext>);

impl Agent for Local {
    fn deliver(&self, req: &Request) -> Outcome {
        crate::deliver::local::deliver(&self.0, req)
    }
}

/// SMTP delivery, one recipient per call.
pub struct Smtp(pub SmtpContext);

impl Agent for Smtp {
    fn deliver(&self, req: &Request) -> Outcome {
        crate::deliver::smtp::deliver(&self.0, req.envelope, req.message, &[req.recipient])
            .into_iter()
            .next()
            .unwrap_or_else(|| {
                Outcome::deferred("none", "4.3.0", "no outcome from the SMTP client")
            })
    }
}

/// The remote agent when the SMTP client cannot be configured: remote mail waits in the
/// deferred queue (and `mailq` says why) instead of bouncing, and local mail still flows.
pub fn remote_unavailable(_req: &Request) -> Outcome {
    Outcome::deferred(
        "none",
        "4.3.0",
        "remote delivery is not configured: see the daemon's start-up warning",
    )
}
