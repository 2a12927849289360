//! Telling the sender about recipients that failed for good: one RFC 3464 delivery status
//! notification per message and attempt, queued in `maildrop/` from the null sender like
//! any other mail (`deliver::bounce` builds it). Behind a trait so that tests can watch
//! what the scheduler asks for.

use std::io;

use crate::deliver::bounce::{BounceSettings, create_bounce};
use crate::deliver::{MessageSource, Outcome};
use crate::queue::{Envelope, Queue, QueueId, Recipient};

/// Builds and queues a notification about `failed`; `Ok(None)` when there is nobody to
/// tell (null sender, or NOTIFY=NEVER on every failed recipient).
pub trait Bouncer: Send + Sync {
    fn bounce(
        &self,
        queue: &Queue,
        envelope: &Envelope,
        message: MessageSource<'_>,
        failed: &[(Recipient, Outcome)],
    ) -> io::Result<Option<QueueId>>;
}

/// The bouncer the daemon runs: queues the DSN of `deliver::bounce`, in Postfix's layout.
pub struct DsnBouncer(pub BounceSettings);

impl Bouncer for DsnBouncer {
    fn bounce(
        &self,
        queue: &Queue,
        envelope: &Envelope,
        message: MessageSource<'_>,
        failed: &[(Recipient, Outcome)],
    ) -> io::Result<Option<QueueId>> {
        create_bounce(queue, &self.0, envelope, message, failed)
    }
}
