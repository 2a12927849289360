//! Sending a message on as a new queue file in `maildrop/`, as Postfix's local(8) does for
//! aliases with several targets, `:include:` lists and `.forward` addresses: each new
//! recipient then gets its own delivery status, retries and bounces. The copy starts with
//! a `Received:` line naming its new queue ID and a `Delivered-To:` of the address that
//! was expanded, so that a forwarding loop is noticed when the message comes back to it.

use std::io::{self, Write};

use chrono::Local;

use crate::deliver::Request;
use crate::queue::{Envelope, NewQueueFile, Queue, QueueId, Recipient};
use crate::submit::rfc2822_date;

/// Queues the message of `req` for `recipients` from `sender`, marked as delivered to
/// `delivered_to`. Returns the new queue ID once the file is durable.
pub fn resubmit(
    queue: &Queue,
    myhostname: &str,
    req: &Request,
    sender: &str,
    recipients: &[String],
    delivered_to: &str,
) -> io::Result<QueueId> {
    let now = Local::now();
    let uid = nix::unistd::geteuid().as_raw();
    let mut envelope = Envelope::new(
        QueueId::generate(),
        now.timestamp_micros().max(0) as u64,
        uid,
        sender,
    );
    envelope.ret = req.envelope.ret.clone();
    envelope.envid = req.envelope.envid.clone();
    for address in recipients {
        let mut rcpt = Recipient::new(address, address);
        rcpt.notify = req.recipient.notify.clone();
        envelope.recipients.push(rcpt);
    }
    let mut file = NewQueueFile::create(&queue.maildrop()?, envelope)?;
    write!(file, "Received: by {myhostname} (mailroom)\n\tid ")?;
    file.write_id()?;
    writeln!(file, "; {}", rfc2822_date(&now))?;
    writeln!(file, "Delivered-To: {}", one_line(delivered_to))?;
    io::copy(&mut req.message.reader(), &mut file)?;
    file.commit()
}

fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
