//! Helpers for delivery tests: queued messages, and Python's independent readers.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use crate::queue::{Envelope, NewQueueFile, Queue, QueueId, QueueName, Recipient};

/// A message queued in `maildrop/` of `queue`, opened for reading.
pub struct Queued {
    pub envelope: Envelope,
    pub file: File,
}

impl Queued {
    pub fn source(&self) -> super::MessageSource<'_> {
        super::MessageSource::for_envelope(&self.file, &self.envelope)
    }

    pub fn request<'a>(&'a self, rcpt: usize) -> super::Request<'a> {
        super::Request {
            queue_id: self.envelope.id,
            envelope: &self.envelope,
            recipient: &self.envelope.recipients[rcpt],
            message: self.source(),
        }
    }
}

/// Queues `message` from `sender` to `(original, address)` pairs.
pub fn queue_message(
    queue: &Queue,
    sender: &str,
    rcpts: &[(&str, &str)],
    message: &[u8],
) -> Queued {
    let mut env = Envelope::new(QueueId::generate(), 1_795_561_017_000_000, 0, sender);
    for (original, address) in rcpts {
        env.recipients.push(Recipient::new(original, address));
    }
    let mut file = NewQueueFile::create(&queue.maildrop().unwrap(), env).unwrap();
    file.write_all(message).unwrap();
    let id = file.commit().unwrap();
    open_queued(queue, id)
}

pub fn open_queued(queue: &Queue, id: QueueId) -> Queued {
    let envelope = queue.read_envelope(QueueName::Maildrop, id).unwrap();
    let file = File::open(queue.path(QueueName::Maildrop, id)).unwrap();
    Queued { envelope, file }
}

/// The message part of a queue file.
pub fn message_of(queue: &Queue, id: QueueId) -> Vec<u8> {
    let env = queue.read_envelope(QueueName::Maildrop, id).unwrap();
    let bytes = std::fs::read(queue.path(QueueName::Maildrop, id)).unwrap();
    bytes[env.message_offset as usize..].to_vec()
}

/// Runs a Python script with `args`; returns its stdout. Panics with its stderr when
/// it fails, so a test shows why.
pub fn python(script: &str, args: &[&Path]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
