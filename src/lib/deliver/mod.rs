//! Delivery agents and what they report. An agent takes one recipient of one queued
//! message and says what happened, in the terms Postfix logs (`dsn=`, `status=`, the text
//! in parentheses, `relay=`) so that the daemon can log, record and bounce uniformly.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use crate::queue::{Envelope, QueueId, Recipient};

pub use dsn::Dsn;

pub mod bounce;
pub mod dsn;
pub mod local;
pub mod smtp;
#[cfg(test)]
pub(crate) mod testutil;

/// The fate of one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Sent,
    /// Temporary failure: try again later.
    Deferred,
    /// Permanent failure: tell the sender.
    Bounced,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    /// Enhanced status code (RFC 3463): `2.0.0`, `4.4.1`, `5.1.1`.
    pub dsn: Dsn,
    /// What Postfix puts in parentheses after `status=`: `delivered to mailbox`,
    /// `unknown user: "x"`, `connect to host[ip]:25: Connection refused`.
    pub text: String,
    /// `relay=` in the log: `local`, `host[ip]:port`, `none`.
    pub relay: String,
    /// Set when a remote server gave the verdict: a bounce then reports it as
    /// `Remote-MTA:` and `Diagnostic-Code: smtp; REPLY` instead of our own wording.
    pub remote: Option<RemoteReply>,
    /// `conn_use=` in the log: which transaction on its SMTP connection this was, set
    /// (2 or more) only when a cached connection carried it, as Postfix logs it; 0
    /// otherwise.
    pub conn_use: u64,
}

/// A remote server's verdict on a recipient, as a DSN reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteReply {
    /// The server's name (`mx.example.net` or `127.0.0.1`).
    pub mta: String,
    /// Its reply, code first: `550 5.1.1 <bad@example.net>: no such user`.
    pub reply: String,
}

impl Outcome {
    /// The same outcome, marked as the verdict of remote server `mta` that replied `reply`.
    pub fn with_remote(mut self, mta: &str, reply: &str) -> Outcome {
        self.remote = Some(RemoteReply {
            mta: mta.into(),
            reply: reply.into(),
        });
        self
    }

    pub fn sent(relay: &str, text: impl Into<String>) -> Outcome {
        Outcome {
            status: Status::Sent,
            dsn: Dsn::SENT,
            text: text.into(),
            relay: relay.into(),
            remote: None,
            conn_use: 0,
        }
    }

    pub fn deferred(relay: &str, dsn: Dsn, text: impl Into<String>) -> Outcome {
        Outcome {
            status: Status::Deferred,
            dsn,
            text: text.into(),
            relay: relay.into(),
            remote: None,
            conn_use: 0,
        }
    }

    pub fn bounced(relay: &str, dsn: Dsn, text: impl Into<String>) -> Outcome {
        Outcome {
            status: Status::Bounced,
            dsn,
            text: text.into(),
            relay: relay.into(),
            remote: None,
            conn_use: 0,
        }
    }
}

/// The message part of an open queue file: `size` bytes from `offset`. Read with
/// positioned reads, so several readers may share one descriptor.
#[derive(Clone, Copy)]
pub struct MessageSource<'a> {
    pub file: &'a File,
    pub offset: u64,
    pub size: u64,
}

impl<'a> MessageSource<'a> {
    pub fn for_envelope(file: &'a File, envelope: &Envelope) -> MessageSource<'a> {
        MessageSource {
            file,
            offset: envelope.message_offset,
            size: envelope.size,
        }
    }

    /// A reader over the message from its first byte.
    pub fn reader(&self) -> MessageReader<'a> {
        MessageReader {
            file: self.file,
            position: self.offset,
            end: self.offset + self.size,
        }
    }
}

pub struct MessageReader<'a> {
    file: &'a File,
    position: u64,
    end: u64,
}

impl Read for MessageReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.position);
        if left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(left as usize);
        let n = self.file.read_at(&mut buf[..want], self.position)?;
        self.position += n as u64;
        Ok(n)
    }
}

/// One recipient of one message, as handed to an agent.
pub struct Request<'a> {
    pub queue_id: QueueId,
    pub envelope: &'a Envelope,
    pub recipient: &'a Recipient,
    pub message: MessageSource<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_only_the_message_part() {
        let mut tmp = tempfile::tempfile().unwrap();
        tmp.write_all(b"envelope\n\nSubject: x\n\nbody\ntrailing")
            .unwrap();
        let source = MessageSource {
            file: &tmp,
            offset: 10,
            size: 17,
        };
        let mut text = String::new();
        source.reader().read_to_string(&mut text).unwrap();
        assert_eq!(text, "Subject: x\n\nbody\n");
    }
}
