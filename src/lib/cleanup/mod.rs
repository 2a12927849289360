//! Cleanup: the one path into the queue, named after Postfix's cleanup(8). Every new
//! message comes through here, whoever made it:
//!
//! | origin | caller |
//! |---|---|
//! | local submission | `sendmail` ([`crate::sendmail::submit`]) |
//! | SMTP | `sendmail -bs` and the listener ([`crate::smtpd::session`]) |
//! | bounce | the daemon's non-delivery notices ([`crate::deliver::bounce`]) |
//! | resubmission | alias and `.forward` expansion ([`crate::deliver::local::resubmit`]) |
//!
//! Callers describe the message ([`Message`]: its [`Origin`], its envelope [`Draft`] and
//! its [`Content`]); cleanup writes it, one part per module:
//!
//! | module | its job |
//! |---|---|
//! | [`received`] | the `Received:` header for each origin |
//! | [`headers`] | reading a sender's header block; completion (`Message-Id:`, `Date:`, `From:`, qualification, `Bcc:` removal); composed headers |
//! | [`body`] | streaming a sender's body, stray CRs |
//! | [`limits`] | `message_size_limit` |
//! | [`write`] | the durable write into `maildrop/` through [`crate::queue::NewQueueFile`] |
//!
//! This is where DKIM signing and header checks belong when they come: they see every
//! message, and only here.

pub mod body;
pub mod headers;
pub mod limits;
pub mod received;
pub mod write;

use std::fs::File;
use std::io::{self, BufRead};

use crate::message::input::InputReader;
use crate::queue::{Queue, QueueId, Recipient};
use crate::sysexits::{Error, Result};

pub use headers::{Composed, HeaderBlock, read_headers};
pub use received::SmtpTrace;
pub use write::{Commit, Failure};

/// The parts of the configuration cleanup needs for mail from outside, resolved once.
#[derive(Debug, Clone)]
pub struct Settings {
    pub myhostname: String,
    pub myorigin: String,
    /// 0 = unlimited.
    pub message_size_limit: u64,
    pub header_size_limit: u64,
    /// `cleanup_replace_stray_cr_lf`.
    pub replace_stray_cr: bool,
}

impl Settings {
    pub fn from_config(config: &crate::config::Config) -> Result<Settings> {
        Ok(Settings {
            myhostname: config.myhostname()?,
            myorigin: config.myorigin()?,
            message_size_limit: config.message_size_limit()?,
            header_size_limit: config.number("header_size_limit")?,
            replace_stray_cr: config.boolean("cleanup_replace_stray_cr_lf")?,
        })
    }
}

/// How a message reached us; it becomes the message's `Received:` header.
#[derive(Debug, Clone)]
pub enum Origin {
    /// Piped into `sendmail` by this uid.
    Local { uid: u32 },
    /// Taken over SMTP (`sendmail -bs` or the listener).
    Smtp(SmtpTrace),
    /// A non-delivery notice the mail system writes.
    Bounce,
    /// A copy sent on to the targets of an alias, `:include:` list or `.forward`.
    Resubmit,
}

/// The envelope of a new message: everything the queue file records before its text.
#[derive(Debug, Clone, Default)]
pub struct Draft {
    /// Qualified; empty for the null sender.
    pub sender: String,
    pub full_name: String,
    /// The uid the queue file records as the submitter's.
    pub uid: u32,
    pub recipients: Vec<Recipient>,
    /// DSN RET and ENVID; empty for none.
    pub ret: String,
    pub envid: String,
}

/// What the message says, and how much cleanup does to it.
pub enum Content<'a, R> {
    /// Mail from outside (`sendmail`'s input, SMTP DATA): the header block read so far
    /// ([`read_headers`]) and the rest of the input. Headers are completed, the body is
    /// streamed and limited.
    Input {
        settings: &'a Settings,
        head: HeaderBlock,
        body: &'a mut InputReader<R>,
        /// Qualify bare names in address headers with `$myorigin`: for local
        /// submissions only; mail from elsewhere keeps its headers as the sender wrote
        /// them.
        qualify_headers: bool,
    },
    /// Mail the system writes: these header fields, then whatever `body` writes (for a
    /// resubmission the whole original message, whose own header continues these
    /// fields). Written as given.
    Composed {
        fields: Vec<Composed>,
        body: ComposedBody<'a>,
    },
}

/// Writes the body of a composed message.
pub type ComposedBody<'a> = Box<dyn FnOnce(&mut dyn io::Write) -> io::Result<()> + 'a>;

/// A message to write into the queue.
pub struct Message<'a, R> {
    pub origin: Origin,
    pub envelope: Draft,
    pub content: Content<'a, R>,
}

impl<'a> Message<'a, io::Empty> {
    /// A message the mail system composes (a bounce, a resubmission).
    pub fn composed(
        origin: Origin,
        envelope: Draft,
        fields: Vec<Composed>,
        body: impl FnOnce(&mut dyn io::Write) -> io::Result<()> + 'a,
    ) -> Message<'a, io::Empty> {
        Message {
            origin,
            envelope,
            content: Content::Composed {
                fields,
                body: Box::new(body),
            },
        }
    }
}

/// What was queued.
#[derive(Debug, Clone)]
pub struct Queued {
    pub id: QueueId,
    pub sender: String,
    pub recipients: usize,
    pub size: u64,
}

/// Writes `message` as a new queue file in `maildrop/`, its `Received:` header first.
/// Returns only after the file is durable (and, with [`Commit::Locked`], the file, still
/// locked); on any error nothing is left in the queue.
pub fn write<R: BufRead>(
    queue: &Queue,
    myhostname: &str,
    message: Message<'_, R>,
    commit: Commit,
) -> std::result::Result<(Queued, Option<File>), Failure> {
    let Message {
        origin,
        envelope,
        content,
    } = message;
    match content {
        Content::Input {
            settings,
            mut head,
            body,
            qualify_headers,
        } => {
            if qualify_headers {
                headers::qualify_address_headers(&mut head, settings);
            }
            if settings.replace_stray_cr {
                for field in &mut head.fields {
                    body::replace_stray_cr(&mut field.raw);
                }
                if let Some(line) = head.ended_by.as_mut() {
                    body::replace_stray_cr(line);
                }
            }
            let sender = envelope.sender.clone();
            let full_name = envelope.full_name.clone();
            write::durable(
                queue,
                myhostname,
                &origin,
                envelope,
                commit,
                |file, stamp| {
                    headers::write_completed(file, &head, &sender, &full_name, settings, stamp)
                        .map_err(Failure::Write)?;
                    body::copy_input(file, head.ended_by.take(), body, settings)
                },
            )
        }
        Content::Composed { fields, body } => write::durable(
            queue,
            myhostname,
            &origin,
            envelope,
            commit,
            |file, stamp| {
                headers::write_composed(file, &fields, stamp).map_err(Failure::Write)?;
                body(file).map_err(Failure::Write)
            },
        ),
    }
}

/// Why mail from outside was not queued, as `sendmail` and the SMTP server report it.
#[derive(Debug)]
pub enum QueueError {
    /// The message exceeds `message_size_limit`.
    TooBig { limit: u64 },
    /// Reading the message failed (the client went away, a timeout).
    Input(std::io::Error),
    /// Writing the queue file failed.
    Queue(Error),
}

impl QueueError {
    /// `failure`, its queue errors worded for the caller `tag` (`smtpd`, `root(0)`).
    pub fn new(failure: Failure, tag: &str, queue: &Queue) -> QueueError {
        match failure {
            Failure::TooBig { limit } => QueueError::TooBig { limit },
            Failure::Input(e) => QueueError::Input(e),
            Failure::Maildrop(e) => QueueError::Queue(Error::io(
                format!("{tag}: queue directory {}", queue.root().display()),
                &e,
            )),
            Failure::Create(dir, e) => QueueError::Queue(Error::io(
                format!("{tag}: create file in {}", dir.display()),
                &e,
            )),
            Failure::Write(e) => {
                QueueError::Queue(Error::io(format!("{tag}: error writing queue file"), &e))
            }
        }
    }

    /// The error `sendmail` reports, naming the caller as `tag`.
    pub fn into_error(self, tag: &str) -> Error {
        match self {
            QueueError::TooBig { limit } => Error::data(format!(
                "{tag}: message too large: it exceeds message_size_limit ({limit} bytes)"
            )),
            QueueError::Input(e) => Error::io(format!("{tag}: error reading input"), &e),
            QueueError::Queue(e) => e,
        }
    }
}

#[cfg(test)]
mod tests;
