//! The durable write: every new queue file is made here, in `maildrop/`, through
//! [`NewQueueFile`] (temporary name, one `fsync`, rename that never replaces, directory
//! sync: see [`crate::queue::store`]). One clock reading gives the arrival time, the
//! `Received:` date and any `Date:`/`Message-Id:` cleanup adds.

use std::fs::File;
use std::io;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::{Draft, Origin, Queued, received};
use crate::message::date::rfc2822_date_at;
use crate::queue::{Envelope, NewQueueFile, Queue, QueueId};

/// How the new file is handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Visible in `maildrop/` for the daemon to pick up.
    Unlocked,
    /// Locked before it appears in `maildrop/`, and still locked while the returned
    /// descriptor is open (`sendmail -odi` delivers it itself; a running daemon must
    /// leave it alone).
    Locked,
}

/// Why a message was not written. Nothing is left in the queue in any case.
#[derive(Debug)]
pub enum Failure {
    /// The message exceeds `message_size_limit`.
    TooBig { limit: u64 },
    /// Reading the message from its sender failed (the client went away, a timeout).
    Input(io::Error),
    /// `maildrop/` could not be made ready.
    Maildrop(io::Error),
    /// The new file could not be created in this directory.
    Create(PathBuf, io::Error),
    /// Writing or committing the file failed.
    Write(io::Error),
}

impl From<Failure> for io::Error {
    /// For the mail system's own messages (bounces, resubmissions): the error as the
    /// queue gave it.
    fn from(failure: Failure) -> io::Error {
        match failure {
            Failure::TooBig { limit } => io::Error::new(
                io::ErrorKind::InvalidData,
                format!("message too large: it exceeds message_size_limit ({limit} bytes)"),
            ),
            Failure::Input(e)
            | Failure::Maildrop(e)
            | Failure::Create(_, e)
            | Failure::Write(e) => e,
        }
    }
}

/// The moment a message is written and the host that writes it: what the headers cleanup
/// writes say about both. The moment is kept in UTC: only [`Stamp::date`] needs the local
/// time zone, and asks the C library for it (see [`crate::message::date`]).
pub struct Stamp<'a> {
    pub(super) now: DateTime<Utc>,
    pub(super) myhostname: &'a str,
}

impl Stamp<'_> {
    /// The `Date:` value (and the `Received:` date).
    pub(super) fn date(&self) -> String {
        rfc2822_date_at(self.now.timestamp())
    }

    /// `Message-Id: <UTCSTAMP.QUEUEID@HOST>`, Postfix's form, with its line end.
    pub(super) fn write_message_id(&self, file: &mut NewQueueFile) -> io::Result<()> {
        use std::io::Write;
        let stamp = self.now.format("%Y%m%d%H%M%S");
        write!(file, "Message-Id: <{stamp}.")?;
        file.write_id()?;
        writeln!(file, "@{}>", self.myhostname)
    }
}

/// Creates the queue file for `draft` in `maildrop/`, writes the `Received:` header for
/// `origin`, lets `content` write the rest, and commits. Returns only once the file is
/// durable; on any error the temporary file is removed.
pub(super) fn durable(
    queue: &Queue,
    myhostname: &str,
    origin: &Origin,
    draft: Draft,
    commit: Commit,
    content: impl FnOnce(&mut NewQueueFile, &Stamp) -> Result<(), Failure>,
) -> Result<(Queued, Option<File>), Failure> {
    let stamp = Stamp {
        now: Utc::now(),
        myhostname,
    };
    let arrival_micros = stamp.now.timestamp_micros().max(0) as u64;
    let mut envelope = Envelope::new(
        QueueId::generate(),
        arrival_micros,
        draft.uid,
        &draft.sender,
    );
    envelope.full_name = draft.full_name;
    envelope.ret = draft.ret;
    envelope.envid = draft.envid;
    envelope.recipients = draft.recipients;
    let recipients = envelope.recipients.len();

    let maildrop = queue.maildrop().map_err(Failure::Maildrop)?;
    let mut file = match NewQueueFile::create(&maildrop, envelope) {
        Ok(file) => file,
        Err(e) => return Err(Failure::Create(maildrop, e)),
    };
    // Set-gid: the group is needed again only to rename the file into place (or to
    // remove it on failure: this guard is dropped before `file`, so its group comes back
    // first). See `privilege`. A no-op in a process that is not set-gid.
    let suspended = crate::privilege::suspend_group();
    received::write(&mut file, origin, &stamp).map_err(Failure::Write)?;
    content(&mut file, &stamp)?;
    let size = file.message_bytes();
    drop(suspended);
    let (id, locked) = match commit {
        Commit::Locked => {
            let (id, f) = file.commit_locked().map_err(Failure::Write)?;
            (id, Some(f))
        }
        Commit::Unlocked => (file.commit().map_err(Failure::Write)?, None),
    };
    let queued = Queued {
        id,
        sender: draft.sender,
        recipients,
        size,
    };
    Ok((queued, locked))
}
