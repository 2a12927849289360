//! How one queued message is printed: Postfix's `mailq` layout (short queue IDs, from
//! `showq_compat.c`) and `postqueue -j`'s JSON, byte for byte.

use std::io::Write;

use chrono::{Local, TimeZone};

use crate::queue::{EnvelopeView, QueueId, QueueName};

/// The column heading, printed before the first message.
pub const HEADING: &str = "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n";
/// Exactly what Postfix prints for an empty queue; scripts compare against it.
pub const EMPTY: &str = "Mail queue is empty\n";
/// Recipient lines start in this column: `"%-11s %7s %-20s "` with empty fields.
const RECIPIENT_INDENT: &[u8] = &[b' '; 41];
/// A deferral reason is right-aligned so that its closing parenthesis is in column 78.
const REASON_WIDTH: usize = 76;

/// The summary line. Each block already ends with the blank line Postfix prints before it.
pub fn summary(messages: u64, bytes: u64) -> String {
    let plural = if messages == 1 { "" } else { "s" };
    format!(
        "-- {} Kbytes in {messages} Request{plural}.\n",
        bytes / 1024
    )
}

/// The status mark after the queue ID: Postfix's `*` for mail being delivered and `!`
/// for held mail; none for mail waiting (maildrop, incoming, deferred).
fn mark(queue: QueueName) -> &'static str {
    match queue {
        QueueName::Active => "*",
        QueueName::Hold => "!",
        _ => "",
    }
}

fn sender<'e>(env: &'e EnvelopeView<'_>) -> &'e str {
    if env.sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        &env.sender
    }
}

/// Arrival times as `asctime()` cut to 20 characters (`Tue Nov  4 09:05:01 `), in the
/// local time zone. Messages of one burst share a second, so the last one is cached:
/// converting to local time is the costliest step per message otherwise.
#[derive(Default)]
pub struct Clock {
    last: Option<(i64, [u8; 20])>,
}

impl Clock {
    pub fn asctime20(&mut self, secs: i64) -> [u8; 20] {
        if let Some((cached, text)) = self.last
            && cached == secs
        {
            return text;
        }
        let mut text = [b' '; 20];
        if let Some(time) = Local.timestamp_opt(secs, 0).earliest() {
            let formatted = time.format("%a %b %e %H:%M:%S ").to_string();
            let n = formatted.len().min(20);
            text[..n].copy_from_slice(&formatted.as_bytes()[..n]);
        }
        self.last = Some((secs, text));
        text
    }
}

/// Writes `text` with control characters shown as `?` (Postfix's `printable()`), so a
/// crafted address or reason cannot break the layout or reach the terminal raw.
fn put_printable(buf: &mut Vec<u8>, text: &str) {
    if !text.bytes().any(|b| b.is_ascii_control()) {
        buf.extend_from_slice(text.as_bytes());
        return;
    }
    for c in text.chars() {
        if c.is_control() {
            buf.push(b'?');
        } else {
            let mut utf8 = [0u8; 4];
            buf.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        }
    }
}

fn put_reason(buf: &mut Vec<u8>, reason: &str) {
    // Postfix pads by byte length (strlen), so we do too.
    let pad = REASON_WIDTH.saturating_sub(reason.len());
    buf.resize(buf.len() + pad, b' ');
    buf.push(b'(');
    put_printable(buf, reason);
    buf.extend_from_slice(b")\n");
}

/// One message in `mailq` layout, followed by the blank line that separates blocks.
pub fn text(
    buf: &mut Vec<u8>,
    id: QueueId,
    queue: QueueName,
    env: &EnvelopeView<'_>,
    clock: &mut Clock,
) {
    let start = buf.len();
    buf.extend_from_slice(id.as_bytes());
    buf.extend_from_slice(mark(queue).as_bytes());
    let width = buf.len() - start;
    buf.resize(buf.len() + 11usize.saturating_sub(width), b' ');
    // Writing into a Vec cannot fail.
    let _ = write!(buf, " {:>7} ", env.size);
    buf.extend_from_slice(&clock.asctime20(env.arrival_secs()));
    buf.push(b' ');
    put_printable(buf, sender(env));
    buf.push(b'\n');
    // The reason is printed once per run of recipients sharing it; a recipient without
    // one after a reason was shown gets Postfix's "(reason unavailable)".
    let mut shown: Option<&str> = None;
    for rcpt in env.pending() {
        let reason = if !rcpt.reason.is_empty() {
            Some(rcpt.reason.as_ref())
        } else if shown.is_some() {
            Some("reason unavailable")
        } else {
            None
        };
        if let Some(reason) = reason
            && shown != Some(reason)
        {
            put_reason(buf, reason);
            shown = Some(reason);
        }
        buf.extend_from_slice(RECIPIENT_INDENT);
        put_printable(buf, &rcpt.address);
        buf.push(b'\n');
    }
    buf.push(b'\n');
}

fn put_json_str(buf: &mut Vec<u8>, text: &str) {
    // serde_json's string escaping is exact JSON; a Vec cannot fail to take it.
    let _ = serde_json::to_writer(&mut *buf, text);
}

/// One message as a `postqueue -j` line.
pub fn json(buf: &mut Vec<u8>, id: QueueId, queue: QueueName, env: &EnvelopeView<'_>) {
    buf.extend_from_slice(b"{\"queue_name\": \"");
    buf.extend_from_slice(queue.as_str().as_bytes());
    buf.extend_from_slice(b"\", \"queue_id\": \"");
    buf.extend_from_slice(id.as_bytes());
    let _ = write!(
        buf,
        "\", \"arrival_time\": {}, \"message_size\": {}, \"forced_expire\": false, \"sender\": ",
        env.arrival_secs(),
        env.size
    );
    put_json_str(buf, sender(env));
    buf.extend_from_slice(b", \"recipients\": [");
    for (i, rcpt) in env.pending().enumerate() {
        if i > 0 {
            buf.extend_from_slice(b", ");
        }
        buf.extend_from_slice(b"{\"address\": ");
        put_json_str(buf, &rcpt.address);
        if !rcpt.reason.is_empty() {
            buf.extend_from_slice(b", \"delay_reason\": ");
            put_json_str(buf, &rcpt.reason);
        }
        buf.push(b'}');
    }
    buf.extend_from_slice(b"]}\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Envelope, RcptState, Recipient};

    fn env(sender: &str, rcpts: &[(&str, &str)]) -> Envelope {
        let id = QueueId::parse("0AbCdEfGh9").unwrap();
        let mut env = Envelope::new(id, 1_795_561_017_000_000, 0, sender);
        env.size = 243;
        for (addr, reason) in rcpts {
            let mut r = Recipient::new(addr, addr);
            r.reason = reason.to_string();
            env.recipients.push(r);
        }
        env
    }

    /// The envelope as a reader sees it: written out and parsed back, so that escaped
    /// fields (decoded into strings of their own) and plain ones (borrowed) both show.
    fn written(env: &Envelope) -> Vec<u8> {
        env.clone().serialize()
    }

    fn render(queue: QueueName, env: &Envelope) -> String {
        let bytes = written(env);
        let env = &EnvelopeView::parse_in_place(&bytes).unwrap();
        let mut buf = Vec::new();
        // Fixed zone: tests must not depend on the machine's.
        let mut clock = Clock {
            last: Some((env.arrival_secs(), *b"Tue Nov 24 22:56:57 ")),
        };
        text(&mut buf, env.id, queue, env, &mut clock);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn blocks_match_postfix() {
        let reason = "connect to 127.0.0.1[127.0.0.1]:2: Connection refused";
        let e = env(
            "root@mail.server.com",
            &[
                ("someone@example.com", reason),
                ("other@example.net", reason),
            ],
        );
        let expected = format!(
            "0AbCdEfGh9      243 Tue Nov 24 22:56:57  root@mail.server.com\n\
             {:>78}\n\
             {:41}someone@example.com\n\
             {:41}other@example.net\n\n",
            format!("({reason})"),
            "",
            ""
        );
        assert_eq!(render(QueueName::Deferred, &e), expected);
        let e = env("", &[("carol@mail.server.com", "")]);
        assert_eq!(
            render(QueueName::Hold, &e),
            "0AbCdEfGh9!     243 Tue Nov 24 22:56:57  MAILER-DAEMON\n\
             \x20                                        carol@mail.server.com\n\n"
        );
    }

    #[test]
    fn reasons_change_and_go_missing() {
        let long = "x".repeat(90);
        let e = env("a@b", &[("r1@x", "one"), ("r2@x", ""), ("r3@x", &long)]);
        let got = render(QueueName::Active, &e);
        let lines: Vec<&str> = got.lines().collect();
        assert!(lines[0].starts_with("0AbCdEfGh9*     243 "));
        assert_eq!(lines[1], format!("{}(one)", " ".repeat(73)));
        assert_eq!(lines[3], format!("{}(reason unavailable)", " ".repeat(58)));
        assert_eq!(lines[5], format!("({long})"));
        assert_eq!(lines[6], format!("{:41}r3@x", ""));
    }

    #[test]
    fn done_recipients_and_control_characters_are_not_shown() {
        let mut e = env("evil\n@x", &[("done@x", ""), ("left@x", "")]);
        e.recipients[0].state = RcptState::Delivered;
        let got = render(QueueName::Maildrop, &e);
        assert!(got.contains("  evil?@x\n"));
        assert!(!got.contains("done@x"));
        assert!(got.contains("left@x"));
    }

    #[test]
    fn json_matches_postqueue() {
        let e = env("", &[("a@x", "why \"so\""), ("b@x", "")]);
        let bytes = written(&e);
        let mut buf = Vec::new();
        json(
            &mut buf,
            e.id,
            QueueName::Hold,
            &EnvelopeView::parse_in_place(&bytes).unwrap(),
        );
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "{\"queue_name\": \"hold\", \"queue_id\": \"0AbCdEfGh9\", \"arrival_time\": 1795561017, \
             \"message_size\": 243, \"forced_expire\": false, \"sender\": \"MAILER-DAEMON\", \
             \"recipients\": [{\"address\": \"a@x\", \"delay_reason\": \"why \\\"so\\\"\"}, \
             {\"address\": \"b@x\"}]}\n"
        );
    }

    #[test]
    fn summary_counts() {
        assert_eq!(summary(1, 243), "-- 0 Kbytes in 1 Request.\n");
        assert_eq!(summary(3, 5000), "-- 4 Kbytes in 3 Requests.\n");
        assert_eq!(summary(0, 0), "-- 0 Kbytes in 0 Requests.\n");
    }
}
