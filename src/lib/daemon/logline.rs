//! The text of the daemon's log lines, in Postfix's words so that pflogsumm and habits
//! built on Postfix logs keep working:
//!
//! ```text
//! ID: uid=0 from=<root@vm.example.com>
//! ID: from=<root@vm.example.com>, size=258, nrcpt=1 (queue active)
//! ID: to=<alice@vm.example.com>, orig_to=<alice>, relay=local, delay=0.01, delays=0.01/0/0/0, dsn=2.0.0, status=sent (delivered to mailbox)
//! ID: sender non-delivery notification: NEWID
//! ID: removed
//! ```

use std::time::Duration;

use crate::deliver::{Outcome, Status};
use crate::queue::{QueueId, Recipient};

/// Postfix's delays: `a` before the queue manager (arrival until the file became
/// active), `b` in the queue manager, `c` connection set-up, `d` transmission.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delays {
    pub before_active: Duration,
    pub in_qmgr: Duration,
    pub setup: Duration,
    pub transmission: Duration,
}

impl Delays {
    pub fn total(&self) -> Duration {
        self.before_active + self.in_qmgr + self.setup + self.transmission
    }
}

/// A delay as Postfix prints it: two significant decimals below ten seconds (`0.01`,
/// `1.2`, `0` for less than 5 ms), one below a hundred, whole seconds above.
pub fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    let text = if s >= 100.0 {
        format!("{s:.0}")
    } else if s >= 10.0 {
        format!("{s:.1}")
    } else {
        format!("{s:.2}")
    };
    if text.contains('.') {
        let trimmed = text.trim_end_matches('0').trim_end_matches('.');
        if trimmed.is_empty() {
            "0".into()
        } else {
            trimmed.into()
        }
    } else {
        text
    }
}

pub fn status_word(status: Status) -> &'static str {
    match status {
        Status::Sent => "sent",
        Status::Deferred => "deferred",
        Status::Bounced => "bounced",
    }
}

/// `ID: to=<...>, [orig_to=<...>, ]relay=..., [conn_use=N, ]delay=..., delays=a/b/c/d, dsn=..., status=... (...)`
pub fn delivery(id: QueueId, rcpt: &Recipient, outcome: &Outcome, delays: &Delays) -> String {
    let orig = if rcpt.original != rcpt.address && !rcpt.original.is_empty() {
        format!("orig_to=<{}>, ", rcpt.original)
    } else {
        String::new()
    };
    // Postfix names the connection's use only when it was not the first.
    let conn_use = if outcome.conn_use > 1 {
        format!("conn_use={}, ", outcome.conn_use)
    } else {
        String::new()
    };
    format!(
        "{id}: to=<{}>, {orig}relay={}, {conn_use}delay={}, delays={}/{}/{}/{}, dsn={}, status={} ({})",
        rcpt.address,
        outcome.relay,
        seconds(delays.total()),
        seconds(delays.before_active),
        seconds(delays.in_qmgr),
        seconds(delays.setup),
        seconds(delays.transmission),
        outcome.dsn,
        status_word(outcome.status),
        outcome.text
    )
}

pub fn pickup(id: QueueId, uid: u32, sender: &str) -> String {
    format!("{id}: uid={uid} from=<{sender}>")
}

pub fn active(id: QueueId, sender: &str, size: u64, nrcpt: usize) -> String {
    format!("{id}: from=<{sender}>, size={size}, nrcpt={nrcpt} (queue active)")
}

pub fn removed(id: QueueId) -> String {
    format!("{id}: removed")
}

pub fn bounce_sent(id: QueueId, bounce_id: QueueId) -> String {
    format!("{id}: sender non-delivery notification: {bounce_id}")
}

pub fn expired(id: QueueId, sender: &str) -> String {
    format!("{id}: from=<{sender}>, status=expired, returned to sender")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::Dsn;

    #[test]
    fn delays_are_printed_like_postfix() {
        let ms = Duration::from_millis;
        assert_eq!(seconds(ms(0)), "0");
        assert_eq!(seconds(ms(4)), "0");
        assert_eq!(seconds(ms(10)), "0.01");
        assert_eq!(seconds(ms(190)), "0.19");
        assert_eq!(seconds(ms(1100)), "1.1");
        assert_eq!(seconds(ms(2000)), "2");
        assert_eq!(seconds(ms(12_340)), "12.3");
        assert_eq!(seconds(ms(342_400)), "342");
    }

    #[test]
    fn delivery_line_matches_postfix() {
        let id = QueueId::parse("0cQ3x7Lk2a").unwrap();
        let rcpt = Recipient::new("alice", "alice@vm.example.com");
        let outcome = Outcome::sent("local", "delivered to mailbox");
        let delays = Delays {
            before_active: Duration::from_millis(10),
            ..Delays::default()
        };
        assert_eq!(
            delivery(id, &rcpt, &outcome, &delays),
            "0cQ3x7Lk2a: to=<alice@vm.example.com>, orig_to=<alice>, relay=local, delay=0.01, \
             delays=0.01/0/0/0, dsn=2.0.0, status=sent (delivered to mailbox)"
        );
        let same = Recipient::new("bob@x", "bob@x");
        let bounced = Outcome::bounced("local", Dsn::UNKNOWN_USER, "unknown user: \"bob\"");
        assert_eq!(
            delivery(id, &same, &bounced, &Delays::default()),
            "0cQ3x7Lk2a: to=<bob@x>, relay=local, delay=0, delays=0/0/0/0, dsn=5.1.1, \
             status=bounced (unknown user: \"bob\")"
        );
        // A message carried by a cached connection; the first use is not named.
        let remote = Recipient::new("carol@example.net", "carol@example.net");
        for (conn_use, named) in [(0, ""), (1, ""), (3, "conn_use=3, ")] {
            let mut sent = Outcome::sent("mx.example.net[192.0.2.1]:25", "250 2.0.0 Ok");
            sent.conn_use = conn_use;
            assert_eq!(
                delivery(id, &remote, &sent, &Delays::default()),
                format!(
                    "0cQ3x7Lk2a: to=<carol@example.net>, relay=mx.example.net[192.0.2.1]:25, \
                     {named}delay=0, delays=0/0/0/0, dsn=2.0.0, status=sent (250 2.0.0 Ok)"
                )
            );
        }
    }
}
