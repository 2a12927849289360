//! Telling the sender about recipients that failed for good: one RFC 3464 delivery status
//! notification per message and attempt, queued in `maildrop/` from the null sender like
//! any other mail. The builder is behind a trait so the local-delivery branch's full
//! `create_bounce` can replace the interim one here without touching the scheduler.

use std::io::{self, Read, Write};

use crate::deliver::MessageSource;
use crate::queue::{Envelope, NewQueueFile, Queue, QueueId, Recipient};

/// One recipient that failed, with the DSN code and the text logged for it.
pub struct Failed<'a> {
    pub recipient: &'a Recipient,
    pub dsn: String,
    pub text: String,
}

/// Builds and queues a bounce for `envelope`'s failed recipients; returns the new ID.
pub trait Bouncer: Send + Sync {
    fn bounce(
        &self,
        queue: &Queue,
        envelope: &Envelope,
        message: MessageSource<'_>,
        failed: &[Failed<'_>],
    ) -> io::Result<QueueId>;
}

/// The interim DSN: Postfix's subject, sender and three-part `multipart/report`, with the
/// original message's headers (not its body: enough to identify it, and never a second
/// copy of a large attachment).
pub struct SimpleDsn {
    pub myhostname: String,
}

impl Bouncer for SimpleDsn {
    fn bounce(
        &self,
        queue: &Queue,
        envelope: &Envelope,
        message: MessageSource<'_>,
        failed: &[Failed<'_>],
    ) -> io::Result<QueueId> {
        let now = chrono::Local::now();
        let mut env = Envelope::new(
            QueueId::generate(),
            now.timestamp_micros().max(0) as u64,
            nix::unistd::getuid().as_raw(),
            "",
        );
        env.recipients
            .push(Recipient::new(&envelope.sender, &envelope.sender));
        let host = &self.myhostname;
        let boundary = format!("{}.{}/{host}", envelope.id, now.timestamp());
        let date = crate::submit::rfc2822_date(&now);
        let mut file = NewQueueFile::create(&queue.maildrop()?, env)?;
        write!(file, "Received: by {host} (mailroom)\n\tid ")?;
        file.write_id()?;
        write!(
            file,
            "; {date}\nDate: {date}\nFrom: Mail Delivery System <MAILER-DAEMON@{host}>\n\
             Subject: Undelivered Mail Returned to Sender\nTo: {}\nAuto-Submitted: auto-replied\n\
             MIME-Version: 1.0\n\
             Content-Type: multipart/report; report-type=delivery-status;\n\tboundary=\"{boundary}\"\n\
             Message-Id: <{}.",
            envelope.sender,
            now.format("%Y%m%d%H%M%S"),
        )?;
        file.write_id()?;
        write!(
            file,
            "@{host}>\n\nThis is a MIME-encapsulated message.\n\n--{boundary}\n\
             Content-Description: Notification\nContent-Type: text/plain; charset=us-ascii\n\n\
             This is the mail system at host {host}.\n\n\
             I'm sorry to have to inform you that your message could not\n\
             be delivered to one or more recipients.\n\n"
        )?;
        for f in failed {
            writeln!(file, "<{}>: {}", f.recipient.address, f.text)?;
        }
        write!(
            file,
            "\n--{boundary}\nContent-Description: Delivery report\n\
             Content-Type: message/delivery-status\n\n\
             Reporting-MTA: dns; {host}\nX-Postfix-Queue-ID: {}\n\
             X-Postfix-Sender: rfc822; {}\nArrival-Date: {}\n",
            envelope.id,
            envelope.sender,
            chrono::DateTime::from_timestamp(envelope.arrival_secs(), 0)
                .map(|d| crate::submit::rfc2822_date(&d.with_timezone(&chrono::Local)))
                .unwrap_or_default(),
        )?;
        for f in failed {
            write!(
                file,
                "\nFinal-Recipient: rfc822; {}\nOriginal-Recipient: rfc822;{}\n\
                 Action: failed\nStatus: {}\nDiagnostic-Code: X-Postfix; {}\n",
                f.recipient.address, f.recipient.original, f.dsn, f.text
            )?;
        }
        write!(
            file,
            "\n--{boundary}\nContent-Description: Undelivered Message Headers\n\
             Content-Type: text/rfc822-headers\n\n"
        )?;
        let mut headers = Vec::new();
        message
            .reader()
            .take(256 * 1024)
            .read_to_end(&mut headers)?;
        let end = headers
            .windows(2)
            .position(|w| w == b"\n\n")
            .map_or(headers.len(), |p| p + 1);
        file.write_all(&headers[..end])?;
        write!(file, "\n--{boundary}--\n")?;
        file.commit()
    }
}
