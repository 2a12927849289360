//! Acting on many queue files at once (`mailq`, `postsuper ... ALL`): the queue
//! directories are opened once and every file is reached relative to its directory's
//! descriptor (`openat`, `unlinkat`, `renameat2`), so the kernel does not walk the
//! whole `queue_directory` path again for each of 50,000 messages. Moves are not synced
//! one by one: a rename that is not yet on disk leaves the file under its old name after
//! a crash, never nowhere, so one `fsync` per directory at the end ([`QueueDirs::sync`])
//! is as safe and thousands of times cheaper.
//!
//! A `QueueDirs` is `Sync`: worker threads share one.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;

use nix::errno::Errno;
use nix::fcntl::{OFlag, RenameFlags, renameat2};
use nix::sys::stat::fstatat;

use super::envelope::{self, EnvelopeView};
use super::id::QueueId;
use super::{LockedFile, Queue, QueueName, ReadError};

/// Open descriptors of the queue directories that exist.
pub struct QueueDirs {
    dirs: [Option<OwnedFd>; 6],
}

fn slot(queue: QueueName) -> usize {
    match queue {
        QueueName::Maildrop => 0,
        QueueName::Incoming => 1,
        QueueName::Active => 2,
        QueueName::Deferred => 3,
        QueueName::Hold => 4,
        QueueName::Corrupt => 5,
    }
}

fn missing_dir(queue: QueueName) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("queue directory {} is missing", queue.as_str()),
    )
}

impl QueueDirs {
    /// Opens every queue directory that exists; a missing one is an empty queue for
    /// reading, and is created (with its mode) the first time a file is moved into it.
    pub fn open(queue: &Queue) -> io::Result<QueueDirs> {
        let mut dirs: [Option<OwnedFd>; 6] = Default::default();
        for name in QueueName::ALL {
            dirs[slot(name)] = open_dir(queue, name)?;
        }
        Ok(QueueDirs { dirs })
    }

    fn dir(&self, queue: QueueName) -> io::Result<&OwnedFd> {
        self.dirs[slot(queue)]
            .as_ref()
            .ok_or_else(|| missing_dir(queue))
    }

    /// Makes sure `queue`'s directory exists and is open, before threads share `self`.
    pub fn ensure(&mut self, queue: &Queue, name: QueueName) -> io::Result<()> {
        if self.dirs[slot(name)].is_none() {
            queue.ensure_dirs()?;
            self.dirs[slot(name)] = open_dir(queue, name)?;
        }
        self.dir(name).map(drop)
    }

    /// Opens a queue file, only if it is a regular file (see [`super::open_regular`]).
    fn open_file(&self, queue: QueueName, id: QueueId, access: OFlag) -> io::Result<File> {
        super::open_regular(self.dir(queue)?, id.as_str(), access)
    }

    /// Reads one message's envelope into `buf` (reused between calls) and parses it where
    /// it lies: what a scan of many files (`mailq`, `postsuper -s`, `mailroom queue`)
    /// looks at without keeping.
    pub fn read_envelope<'b>(
        &self,
        queue: QueueName,
        id: QueueId,
        buf: &'b mut Vec<u8>,
    ) -> Result<EnvelopeView<'b>, ReadError> {
        let mut file = self.open_envelope(queue, id)?;
        super::read_envelope_view(&mut file, buf)
    }

    /// Opens one message's queue file to read its envelope with
    /// [`read_envelope_view`](super::read_envelope_view):
    /// [`ReadError::Missing`] when it is not there.
    pub fn open_envelope(&self, queue: QueueName, id: QueueId) -> Result<File, ReadError> {
        // The listing's hot path: open and read, and `fstat` only when something is off.
        // Reading a non-regular file is harmless here (O_NONBLOCK: a FIFO reads as empty,
        // and nothing is ever written or locked), and a name that is not a regular file
        // still gets its precise error from `open_regular` below.
        let dir = self.dir(queue)?;
        let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
        match nix::fcntl::openat(dir, id.as_str(), flags, nix::sys::stat::Mode::empty()) {
            Ok(fd) => Ok(File::from(fd)),
            Err(nix::errno::Errno::ENOENT) => Err(ReadError::Missing),
            // A symbolic link, a socket...: `open_regular` says what it is (or opens it,
            // if it became a regular file meanwhile).
            Err(_) => Ok(self.open_file(queue, id, OFlag::O_RDONLY)?),
        }
    }

    /// Like [`Queue::try_lock`]: `Ok(None)` when the file is gone or another process
    /// (the daemon delivering it) holds its lock.
    pub fn try_lock(&self, queue: QueueName, id: QueueId) -> io::Result<Option<LockedFile>> {
        // Read-write: a requeue rewrites the `id` record through this descriptor.
        let dir = self.dir(queue)?.as_fd();
        super::lock_at(dir, id.as_str(), OFlag::O_RDWR, queue, id)
    }

    /// Whether a file of that name exists in the queue (used to tell "locked by someone
    /// else" from "gone" after [`try_lock`](QueueDirs::try_lock) came back empty).
    pub fn exists(&self, queue: QueueName, id: QueueId) -> bool {
        let Ok(dir) = self.dir(queue) else {
            return false;
        };
        fstatat(dir, id.as_str(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).is_ok()
    }

    /// Removes a locked message; false if it had already gone.
    pub fn remove(&self, locked: &LockedFile) -> io::Result<bool> {
        super::unlink_at(self.dir(locked.queue)?.as_fd(), locked.id.as_str())
    }

    /// Moves a locked message to another queue under its ID (a fresh one, written into
    /// its `id` record, if the name is taken there). Not synced: call [`sync`] on both
    /// queues when the batch is done. The target directory must have been opened
    /// ([`ensure`]).
    ///
    /// [`sync`]: QueueDirs::sync
    /// [`ensure`]: QueueDirs::ensure
    pub fn move_to(&self, locked: &mut LockedFile, to: QueueName) -> io::Result<QueueId> {
        let id = self.rename_noreplace(locked, to, locked.id)?;
        locked.queue = to;
        locked.id = id;
        Ok(id)
    }

    /// Gives a locked message a new queue ID and moves it to `maildrop/`, as
    /// `postsuper -r` does: the daemon picks it up again as if newly submitted. The new ID
    /// is written into the `id` record (fixed width, so in place) before the rename. Like
    /// the rename, the write is made durable for the whole batch at once
    /// ([`sync_file_system`]); a crash before that can leave a file whose record and name
    /// disagree, never a lost file, and `postsuper -s` puts the record right.
    ///
    /// [`sync_file_system`]: QueueDirs::sync_file_system
    pub fn requeue(&self, locked: &mut LockedFile) -> io::Result<QueueId> {
        let fresh = QueueId::generate();
        let id = self.rename_noreplace(locked, QueueName::Maildrop, fresh)?;
        locked.queue = QueueName::Maildrop;
        locked.id = id;
        Ok(id)
    }

    fn rename_noreplace(
        &self,
        locked: &LockedFile,
        to: QueueName,
        wanted: QueueId,
    ) -> io::Result<QueueId> {
        let from_dir = self.dir(locked.queue)?;
        let to_dir = self.dir(to)?;
        let mut id = wanted;
        loop {
            if id != locked.id {
                write_id_record(&locked.file, id)?;
            }
            match renameat2(
                from_dir,
                locked.id.as_str(),
                to_dir,
                id.as_str(),
                RenameFlags::RENAME_NOREPLACE,
            ) {
                Ok(()) => return Ok(id),
                Err(Errno::EEXIST) => id = QueueId::generate(),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Makes everything written to the queue's file system durable (`syncfs`): one call
    /// after a batch of in-place record rewrites instead of one `fsync` per file.
    pub fn sync_file_system(&self) -> io::Result<()> {
        if let Some(dir) = self.dirs.iter().flatten().next() {
            nix::unistd::syncfs(dir).map_err(io::Error::from)?;
        }
        Ok(())
    }

    /// Makes the renames and removals in one queue directory durable.
    pub fn sync(&self, queue: QueueName) -> io::Result<()> {
        match &self.dirs[slot(queue)] {
            Some(dir) => nix::unistd::fsync(dir).map_err(io::Error::from),
            None => Ok(()),
        }
    }
}

fn open_dir(queue: &Queue, name: QueueName) -> io::Result<Option<OwnedFd>> {
    match File::open(queue.dir(name)) {
        Ok(f) => Ok(Some(OwnedFd::from(f))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        // Not listable by the set-gid group (mode 1730): see `Queue::list`.
        Err(e) if name == QueueName::Maildrop && e.kind() == io::ErrorKind::PermissionDenied => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Rewrites the fixed-width `id` record of an open queue file in place (not synced).
/// The record's offset is read from the file itself, so this works whatever else the
/// envelope holds.
pub fn write_id_record(file: &File, id: QueueId) -> io::Result<()> {
    let mut buf = Vec::new();
    envelope::read_envelope_into(&mut ReadAt { file, pos: 0 }, &mut buf)?;
    let env = EnvelopeView::parse_in_place(&buf)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    file.write_all_at(id.as_bytes(), env.id_offset)
}

/// `Read` over `pread`, so reading the envelope neither depends on nor moves the file
/// position.
struct ReadAt<'a> {
    file: &'a File,
    pos: u64,
}

impl io::Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Envelope, NewQueueFile, Recipient};
    use std::io::Write;

    fn message(queue: &Queue, to: QueueName) -> QueueId {
        queue.ensure_dirs().unwrap();
        let mut env = Envelope::new(QueueId::generate(), 0, 0, "s@x");
        env.recipients.push(Recipient::new("r", "r@x"));
        let mut file = NewQueueFile::create(&queue.dir(to), env).unwrap();
        file.write_all(b"Subject: x\n\nbody\n").unwrap();
        file.commit().unwrap()
    }

    #[test]
    fn requeue_rewrites_the_id_record_and_moves_to_maildrop() {
        let tmp = tempfile::tempdir().unwrap();
        let queue = Queue::new(tmp.path());
        let old = message(&queue, QueueName::Deferred);
        let dirs = QueueDirs::open(&queue).unwrap();
        let mut locked = dirs.try_lock(QueueName::Deferred, old).unwrap().unwrap();
        assert!(dirs.try_lock(QueueName::Deferred, old).unwrap().is_none());
        assert!(dirs.exists(QueueName::Deferred, old));
        let new = dirs.requeue(&mut locked).unwrap();
        assert_ne!(new, old);
        assert!(!dirs.exists(QueueName::Deferred, old));
        let env = queue.read_envelope(QueueName::Maildrop, new).unwrap();
        assert_eq!(env.id, new);
        let text = std::fs::read_to_string(queue.path(QueueName::Maildrop, new)).unwrap();
        assert!(text.ends_with("\nSubject: x\n\nbody\n"));
    }

    #[test]
    fn moves_keep_ids_and_removal_reports_gone_files() {
        let tmp = tempfile::tempdir().unwrap();
        let queue = Queue::new(tmp.path());
        let id = message(&queue, QueueName::Maildrop);
        let dirs = QueueDirs::open(&queue).unwrap();
        let mut locked = dirs.try_lock(QueueName::Maildrop, id).unwrap().unwrap();
        assert_eq!(dirs.move_to(&mut locked, QueueName::Hold).unwrap(), id);
        assert!(dirs.remove(&locked).unwrap());
        assert!(!dirs.remove(&locked).unwrap());
        assert!(dirs.try_lock(QueueName::Hold, id).unwrap().is_none());
        let mut buf = Vec::new();
        assert!(matches!(
            dirs.read_envelope(QueueName::Hold, id, &mut buf),
            Err(ReadError::Missing)
        ));
    }
}
