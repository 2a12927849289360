//! Non-delivery notifications: RFC 3464 delivery status notifications in Postfix's layout,
//! queued in `maildrop/` from the null sender `<>` to the original envelope sender.
//!
//! ```text
//! From: Mail Delivery System <MAILER-DAEMON@$myorigin>
//! Subject: Undelivered Mail Returned to Sender
//! To: SENDER
//! Auto-Submitted: auto-replied
//! Content-Type: multipart/report; report-type=delivery-status; boundary="ID.EPOCH/HOST"
//!
//!   text/plain               the notice, one paragraph per failed recipient
//!   message/delivery-status  Reporting-MTA, X-Mailroom-Queue-ID, X-Mailroom-Sender,
//!                            Arrival-Date, then per recipient Final-Recipient,
//!                            Original-Recipient, Action, Status, [Remote-MTA],
//!                            Diagnostic-Code
//!   message/rfc822           the original message; only its header, as
//!                            text/rfc822-headers, with DSN RET=HDRS or when the message
//!                            is larger than bounce_size_limit
//! ```
//!
//! The structure is written directly rather than with a MIME builder: every part we
//! compose is 7-bit text we control (recipient addresses and reasons are reduced to
//! printable ASCII), and the original is attached byte for byte (`8bit`, as Postfix does),
//! streamed from the queue file so that a large message is never held in memory. No
//! content transfer encoding is ever needed. The boundary is checked against the
//! original, so a message cannot break out of its part.
//!
//! The queue file is written by [`crate::cleanup`], which adds the `Received:`, `Date:`
//! and `Message-Id:` headers where this module places them.
//!
//! A bounce never bounces: mail from `<>` gets no notification, and recipients whose DSN
//! NOTIFY excludes failures (`NEVER`, or `SUCCESS`/`DELAY` alone) are left out.

use std::io::{self, BufRead, BufReader, Write};

use chrono::{Local, TimeZone, Utc};

use super::{MessageSource, Outcome};
use crate::cleanup::{self, Commit, Composed, Draft, Message, Origin};
use crate::config::Config;
use crate::message::date::rfc2822_date;
use crate::queue::{Envelope, Queue, QueueId, Recipient};

/// What a bounce needs from the configuration.
#[derive(Debug, Clone)]
pub struct BounceSettings {
    pub myhostname: String,
    pub myorigin: String,
    /// The largest original returned whole; larger ones are returned as headers only.
    /// 0 means no limit.
    pub bounce_size_limit: u64,
}

impl BounceSettings {
    pub fn from_config(config: &Config) -> crate::sysexits::Result<BounceSettings> {
        Ok(BounceSettings {
            myhostname: config.myhostname()?,
            myorigin: config.myorigin()?,
            bounce_size_limit: config.number("bounce_size_limit")?,
        })
    }
}

/// Queues a notification to the sender of `envelope` about the `failed` recipients.
/// `Ok(None)` when there is nobody to tell (null sender, or every recipient asked for no
/// failure notices). The new file is durable when this returns.
pub fn create_bounce(
    queue: &Queue,
    settings: &BounceSettings,
    envelope: &Envelope,
    message: MessageSource,
    failed: &[(Recipient, Outcome)],
) -> io::Result<Option<QueueId>> {
    if envelope.sender.is_empty() {
        return Ok(None);
    }
    let failed: Vec<&(Recipient, Outcome)> =
        failed.iter().filter(|(r, _)| wants_failure(r)).collect();
    if failed.is_empty() {
        return Ok(None);
    }
    let headers_only = envelope.ret.eq_ignore_ascii_case("hdrs")
        || (settings.bounce_size_limit > 0 && message.size > settings.bounce_size_limit);
    let boundary = pick_boundary(envelope, settings, &message, headers_only)?;

    let draft = Draft {
        uid: nix::unistd::geteuid().as_raw(),
        recipients: vec![Recipient::new(&envelope.sender, &envelope.sender)],
        ..Draft::default()
    };
    let host = &settings.myhostname;
    let fields = vec![
        Composed::Date,
        Composed::Text(format!(
            "From: Mail Delivery System <MAILER-DAEMON@{}>",
            settings.myorigin
        )),
        Composed::Text("Subject: Undelivered Mail Returned to Sender".to_string()),
        Composed::Text(format!("To: {}", ascii(&envelope.sender))),
        Composed::Text("Auto-Submitted: auto-replied".to_string()),
        Composed::Text("MIME-Version: 1.0".to_string()),
        Composed::Text(format!(
            "Content-Type: multipart/report; report-type=delivery-status;\n\tboundary=\"{boundary}\""
        )),
        Composed::Text("Content-Transfer-Encoding: 8bit".to_string()),
        Composed::MessageId,
    ];
    let body = |file: &mut dyn Write| -> io::Result<()> {
        writeln!(file)?;
        writeln!(file, "This is a MIME-encapsulated message.")?;
        writeln!(file)?;

        writeln!(file, "--{boundary}")?;
        writeln!(file, "Content-Description: Notification")?;
        writeln!(file, "Content-Type: text/plain; charset=us-ascii")?;
        writeln!(file)?;
        file.write_all(notice(host, &failed).as_bytes())?;
        writeln!(file)?;

        writeln!(file, "--{boundary}")?;
        writeln!(file, "Content-Description: Delivery report")?;
        writeln!(file, "Content-Type: message/delivery-status")?;
        writeln!(file)?;
        file.write_all(status_report(settings, envelope, &failed).as_bytes())?;
        writeln!(file)?;

        writeln!(file, "--{boundary}")?;
        if headers_only {
            writeln!(file, "Content-Description: Undelivered Message Headers")?;
            writeln!(file, "Content-Type: text/rfc822-headers")?;
        } else {
            writeln!(file, "Content-Description: Undelivered Message")?;
            writeln!(file, "Content-Type: message/rfc822")?;
        }
        writeln!(file, "Content-Transfer-Encoding: 8bit")?;
        writeln!(file)?;
        copy_original(file, &message, headers_only)?;
        writeln!(file)?;
        writeln!(file, "--{boundary}--")
    };
    let message = Message::composed(Origin::Bounce, draft, fields, body);
    let (queued, _) = cleanup::write(queue, host, message, Commit::Unlocked)?;
    Ok(Some(queued.id))
}

/// RFC 3461: no NOTIFY means "failure and delay"; NEVER, or a list without FAILURE,
/// means no failure notice.
fn wants_failure(rcpt: &Recipient) -> bool {
    let notify = rcpt.notify.to_ascii_lowercase();
    notify.is_empty() || notify.split(',').any(|w| w.trim() == "failure")
}

/// Postfix's boundary `QUEUEID.EPOCH/HOST`, made longer until no line of the attached
/// original starts with it.
fn pick_boundary(
    envelope: &Envelope,
    settings: &BounceSettings,
    message: &MessageSource,
    headers_only: bool,
) -> io::Result<String> {
    let epoch = Utc::now().timestamp();
    let mut boundary = format!("{}.{epoch}/{}", envelope.id, ascii(&settings.myhostname));
    let mut round = 0;
    while original_contains(message, &format!("--{boundary}"), headers_only)? {
        round += 1;
        boundary = format!("{}.{epoch}.{round}/{}", envelope.id, settings.myhostname);
    }
    Ok(boundary)
}

fn original_contains(
    message: &MessageSource,
    marker: &str,
    headers_only: bool,
) -> io::Result<bool> {
    let mut reader = BufReader::with_capacity(64 * 1024, message.reader());
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(false);
        }
        if line.starts_with(marker.as_bytes()) {
            return Ok(true);
        }
        if headers_only && line == b"\n" {
            return Ok(false);
        }
    }
}

/// The original, whole or up to the end of its header, ending with a newline.
fn copy_original(
    out: &mut (impl Write + ?Sized),
    message: &MessageSource,
    headers_only: bool,
) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(64 * 1024, message.reader());
    let mut last = b'\n';
    if headers_only {
        let mut line = Vec::with_capacity(1024);
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 || line == b"\n" {
                break;
            }
            out.write_all(&line)?;
            last = line[line.len() - 1];
        }
    } else {
        loop {
            let buf = reader.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            out.write_all(buf)?;
            last = buf[buf.len() - 1];
            let n = buf.len();
            reader.consume(n);
        }
    }
    if last != b'\n' {
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn notice(host: &str, failed: &[&(Recipient, Outcome)]) -> String {
    let mut text = format!(
        "This is the mail system at host {}.\n\
         \n\
         I'm sorry to have to inform you that your message could not\n\
         be delivered to one or more recipients. It's attached below.\n\
         \n\
         For further assistance, please send mail to postmaster.\n\
         \n\
         If you do so, please include this problem report. You can\n\
         delete your own text from the attached returned message.\n\
         \n\
         \x20                  The mail system\n",
        ascii(host)
    );
    for (rcpt, outcome) in failed {
        let mut line = format!("<{}>", ascii(&rcpt.address));
        if !rcpt.original.is_empty() && rcpt.original != rcpt.address {
            line.push_str(&format!(" (expanded from <{}>)", ascii(&rcpt.original)));
        }
        let reason = match &outcome.remote {
            Some(remote) => format!("host {} said: {}", ascii(&remote.mta), ascii(&remote.reply)),
            None => ascii(&outcome.text),
        };
        line.push_str(&format!(": {reason}"));
        text.push('\n');
        text.push_str(&fold(&line, 4));
    }
    text
}

fn status_report(
    settings: &BounceSettings,
    envelope: &Envelope,
    failed: &[&(Recipient, Outcome)],
) -> String {
    let arrival = Local
        .timestamp_opt(envelope.arrival_secs(), 0)
        .single()
        .map(|t| rfc2822_date(&t))
        .unwrap_or_default();
    let mut text = format!(
        "Reporting-MTA: dns; {}\n\
         X-Mailroom-Queue-ID: {}\n\
         X-Mailroom-Sender: rfc822; {}\n\
         Arrival-Date: {arrival}\n",
        ascii(&settings.myhostname),
        envelope.id,
        ascii(&envelope.sender),
    );
    for (rcpt, outcome) in failed {
        text.push('\n');
        text.push_str(&format!(
            "Final-Recipient: rfc822; {}\n",
            ascii(&rcpt.address)
        ));
        if !rcpt.original.is_empty() {
            let original = crate::address::qualify(&rcpt.original, &settings.myorigin);
            text.push_str(&format!(
                "Original-Recipient: rfc822;{}\n",
                ascii(&original)
            ));
        }
        text.push_str("Action: failed\n");
        text.push_str(&format!("Status: {}\n", outcome.dsn));
        let diagnostic = match &outcome.remote {
            Some(remote) => {
                text.push_str(&format!("Remote-MTA: dns; {}\n", ascii(&remote.mta)));
                format!("Diagnostic-Code: smtp; {}", ascii(&remote.reply))
            }
            None => format!("Diagnostic-Code: X-Mailroom; {}", ascii(&outcome.text)),
        };
        text.push_str(&fold(&diagnostic, 4));
    }
    text
}

/// Printable ASCII only: our parts are declared us-ascii, and a control character in a
/// reason (a command's output) must not start a new header or MIME line.
fn ascii(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            ' '..='~' => c,
            '\t' | '\n' | '\r' => ' ',
            _ => '?',
        })
        .collect()
}

/// Folds a long line at spaces into lines of at most 78 characters where possible,
/// continuation lines indented by `indent` spaces (a header continuation in the status
/// part, Postfix's layout in the notice). Words longer than a line are cut at 900
/// characters so no line exceeds RFC 5322's 998.
fn fold(line: &str, indent: usize) -> String {
    const WIDTH: usize = 78;
    const HARD: usize = 900;
    let mut out = String::with_capacity(line.len() + 16);
    let mut current = String::new();
    for word in line.split(' ').filter(|w| !w.is_empty()) {
        let mut word = word;
        while word.len() > HARD {
            let (head, tail) = word.split_at(HARD);
            if !current.is_empty() {
                out.push_str(&current);
                out.push('\n');
                current = " ".repeat(indent);
            }
            current.push_str(head);
            out.push_str(&current);
            out.push('\n');
            current = " ".repeat(indent);
            word = tail;
        }
        let blank = current.trim().is_empty();
        if !blank && current.len() + 1 + word.len() > WIDTH {
            out.push_str(&current);
            out.push('\n');
            current = " ".repeat(indent);
        } else if !blank {
            current.push(' ');
        }
        current.push_str(word);
    }
    if !current.trim().is_empty() {
        out.push_str(&current);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
