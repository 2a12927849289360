//! Sending a message on as a new queue file in `maildrop/`, as Postfix's local(8) does for
//! aliases with several targets, `:include:` lists and `.forward` addresses: each new
//! recipient then gets its own delivery status, retries and bounces. The copy starts with
//! a `Received:` line naming its new queue ID and a `Delivered-To:` of the address that
//! was expanded, so that a forwarding loop is noticed when the message comes back to it;
//! [`crate::cleanup`] writes it.

use std::io::{self, Write};

use crate::cleanup::{self, Commit, Composed, Draft, Message, Origin};
use crate::deliver::Request;
use crate::queue::envelope::{MAX_ADDRESS, MAX_RECIPIENTS};
use crate::queue::{Queue, QueueId, Recipient};

/// Queues the message of `req` for `recipients` from `sender`, marked as delivered to
/// `delivered_to`. Returns the new queue IDs once the files are durable: one per
/// [`MAX_RECIPIENTS`] recipients (the queue file's bound; a large `:include:` list is
/// more). An address over the queue file's bound is an `InvalidInput` error, before
/// anything is written.
pub fn resubmit(
    queue: &Queue,
    myhostname: &str,
    req: &Request,
    sender: &str,
    recipients: &[String],
    delivered_to: &str,
) -> io::Result<Vec<QueueId>> {
    let too_long = std::iter::once(sender)
        .chain(recipients.iter().map(String::as_str))
        .find(|a| a.len() > MAX_ADDRESS);
    if let Some(address) = too_long {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "address longer than {MAX_ADDRESS} bytes: {}",
                crate::address::shorten(address)
            ),
        ));
    }
    recipients
        .chunks(MAX_RECIPIENTS)
        .map(|part| resubmit_one(queue, myhostname, req, sender, part, delivered_to))
        .collect()
}

fn resubmit_one(
    queue: &Queue,
    myhostname: &str,
    req: &Request,
    sender: &str,
    recipients: &[String],
    delivered_to: &str,
) -> io::Result<QueueId> {
    let draft = Draft {
        sender: sender.to_string(),
        uid: nix::unistd::geteuid().as_raw(),
        recipients: recipients
            .iter()
            .map(|address| {
                let mut rcpt = Recipient::new(address, address);
                rcpt.notify = req.recipient.notify.clone();
                rcpt
            })
            .collect(),
        ret: req.envelope.ret.clone(),
        envid: req.envelope.envid.clone(),
        ..Draft::default()
    };
    let fields = vec![Composed::Text(format!(
        "Delivered-To: {}",
        one_line(delivered_to)
    ))];
    let body = |file: &mut dyn Write| io::copy(&mut req.message.reader(), file).map(drop);
    let message = Message::composed(Origin::Resubmit, draft, fields, body);
    let (queued, _) = cleanup::write(queue, myhostname, message, Commit::Unlocked)?;
    Ok(queued.id)
}

fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::testutil::queue_message;
    use crate::queue::QueueName;

    #[test]
    fn large_lists_are_split_and_over_long_addresses_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let queue = Queue::new(tmp.path());
        let queued = queue_message(&queue, "s@x", &[("list", "list@x")], b"Subject: t\n\nb\n");
        let req = queued.request(0);
        let many: Vec<String> = (0..MAX_RECIPIENTS + 1).map(|n| format!("u{n}@x")).collect();
        let ids = resubmit(&queue, "vm", &req, "s@x", &many, "list@x").unwrap();
        assert_eq!(ids.len(), 2);
        let counts: Vec<usize> = ids
            .iter()
            .map(|&id| {
                queue
                    .read_envelope(QueueName::Maildrop, id)
                    .unwrap()
                    .recipients
                    .len()
            })
            .collect();
        assert_eq!(counts, [MAX_RECIPIENTS, 1]);

        let before = queue.ids(QueueName::Maildrop).unwrap().len();
        let long = format!("{}@x", "a".repeat(MAX_ADDRESS));
        for (sender, rcpt) in [("s@x", long.as_str()), (long.as_str(), "b@x")] {
            let err = resubmit(&queue, "vm", &req, sender, &[rcpt.to_string()], "list@x")
                .expect_err("refused");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            assert!(err.to_string().len() < 200, "{err}");
        }
        assert_eq!(queue.ids(QueueName::Maildrop).unwrap().len(), before);
    }
}
