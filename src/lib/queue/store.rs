//! Writing a new queue file durably: temporary name, rename that never replaces, then one
//! `fsync` of the file. Until `commit` returns, the caller must not say the message is
//! queued; after it returns, the file survives a crash or power loss under its new name.
//!
//! One `fsync`, not two. The classic recipe is `fdatasync(file)`, `rename`,
//! `fsync(directory)`: two waits for the disk, and on a 2 KB message they are most of a
//! submission's time. On Linux's file systems an `fsync` of a file after a rename in the
//! same directory makes the new name durable along with the data: ext4 with a journal
//! commits the transaction that holds the rename, ext4 without one syncs the directory of
//! a newly linked inode (`ext4_sync_parent`), and XFS and btrfs log the inode's new name.
//! Postfix relies on the same (it never syncs a queue directory). The file is complete
//! before it is renamed, and locked from before the rename until it is durable and
//! closed, so the daemon never takes a message that is not yet promised to anyone.
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{RenameFlags, renameat2};

use super::envelope::{Envelope, SIZE_WIDTH};
use super::id::QueueId;

/// Prefix of temporary files in a queue directory. A leading dot never parses as a queue
/// ID, so listings skip these, and `postsuper -p` knows what it may remove.
pub const TEMP_PREFIX: &str = ".tmp.";

/// A queue file being written. Write the message through `Write`; call `write_id` where
/// the message itself names the queue ID (Received:, Message-Id:), so that the ID can be
/// changed in place if the name turns out to be taken. Dropped without `commit`, it
/// removes its temporary file.
pub struct NewQueueFile {
    dir: PathBuf,
    temp: PathBuf,
    file: BufWriter<File>,
    envelope: Envelope,
    message_bytes: u64,
    /// Offsets in the file where the ID is spelled out.
    id_spots: Vec<u64>,
    committed: bool,
}

impl NewQueueFile {
    /// Creates the temporary file in `dir` and writes the envelope. `envelope.size` is
    /// filled in at commit time. An envelope with a field over its bound
    /// ([`Envelope::check_bounds`]) is refused (`InvalidInput`) before anything is
    /// written: no reader would take the file.
    pub fn create(dir: &Path, mut envelope: Envelope) -> io::Result<NewQueueFile> {
        envelope
            .check_bounds()
            .map_err(|why| io::Error::new(io::ErrorKind::InvalidInput, why))?;
        let (temp, file) = loop {
            let temp = dir.join(format!(
                "{TEMP_PREFIX}{}.{}",
                envelope.id,
                std::process::id()
            ));
            // Readable too: `commit_locked` hands the descriptor on to a delivery.
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)
            {
                Ok(file) => break (temp, file),
                // A crashed process with our pid left it: draw another ID.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    envelope.id = QueueId::generate();
                }
                Err(e) => return Err(e),
            }
        };
        let header = envelope.serialize();
        let id_spots = vec![envelope.id_offset];
        // Built before the first write so that a failed write still removes the file.
        let mut new = NewQueueFile {
            dir: dir.to_path_buf(),
            temp,
            file: BufWriter::with_capacity(64 * 1024, file),
            envelope,
            message_bytes: 0,
            id_spots,
            committed: false,
        };
        new.file.write_all(&header)?;
        Ok(new)
    }

    pub fn id(&self) -> QueueId {
        self.envelope.id
    }

    /// Message bytes written so far.
    pub fn message_bytes(&self) -> u64 {
        self.message_bytes
    }

    /// Writes the queue ID into the message and remembers where.
    pub fn write_id(&mut self) -> io::Result<()> {
        let at = self.envelope.message_offset + self.message_bytes;
        self.id_spots.push(at);
        let id = self.envelope.id;
        self.write_all(id.as_bytes())
    }

    /// Makes the file durable and visible under its ID. Returns the ID it got (a new one
    /// if another process took the first in the same microsecond). The file is locked
    /// (flock, exclusive) from before its name appears until it is durable and closed.
    pub fn commit(self) -> io::Result<QueueId> {
        let (id, file) = self.commit_inner()?;
        // Unlocked before the last close: the kernel reports the close (inotify's
        // close-after-write, which wakes the daemon) before it drops the locks of a
        // closing file, and a daemon that found the file still locked would leave it
        // for its next periodic scan.
        let _ = file.unlock();
        Ok(id)
    }

    /// Like [`commit`](Self::commit), but the file stays locked as long as the returned
    /// descriptor is open: `sendmail -odi` delivers the message itself, and the daemon
    /// must not grab it first.
    pub fn commit_locked(self) -> io::Result<(QueueId, File)> {
        self.commit_inner()
    }

    fn commit_inner(mut self) -> io::Result<(QueueId, File)> {
        self.file.flush()?;
        // Locked before the name appears, and until the file is closed: the daemon, woken
        // by the new name, leaves the file alone until it is durable (it tries again when
        // the file is closed), rather than compete for the CPU with this process while its
        // `fsync` runs. `commit_locked` keeps the lock on for a delivery of its own.
        self.file.get_ref().lock()?;
        let file = self.file.get_ref();
        let size = format!("{:0width$}", self.message_bytes, width = SIZE_WIDTH);
        file.write_all_at(size.as_bytes(), self.envelope.size_offset)?;
        // O_PATH: the set-gid submitter may search and write maildrop/ (mode 1730) but
        // not read it, and a plain open needs read permission.
        let dir = nix::fcntl::open(
            &self.dir,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        loop {
            let id = self.envelope.id;
            let taken = match renameat2(
                &dir,
                &self.temp,
                &dir,
                id.as_str(),
                RenameFlags::RENAME_NOREPLACE,
            ) {
                Ok(()) => false,
                Err(Errno::EEXIST) => true,
                // File systems without RENAME_NOREPLACE: link() refuses to replace too.
                Err(Errno::EINVAL) | Err(Errno::ENOSYS) => {
                    match std::fs::hard_link(&self.temp, self.dir.join(id.as_str())) {
                        Ok(()) => {
                            std::fs::remove_file(&self.temp)?;
                            false
                        }
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => true,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e.into()),
            };
            if !taken {
                break;
            }
            // Spell a fresh ID everywhere the old one was written, then try again.
            let fresh = QueueId::generate();
            for &spot in &self.id_spots {
                file.write_all_at(fresh.as_bytes(), spot)?;
            }
            self.envelope.id = fresh;
        }
        // The temporary name is gone. A failed sync means the message is not queued:
        // the name goes too (unless a reader took the file meanwhile; then a delivery
        // of it is a duplicate at worst, never a loss).
        self.committed = true;
        if let Err(e) = file.sync_all() {
            let _ = nix::unistd::unlinkat(
                &dir,
                self.envelope.id.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
            return Err(e);
        }
        let file = file.try_clone()?;
        Ok((self.envelope.id, file))
    }
}

impl Write for NewQueueFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.message_bytes += n as u64;
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)?;
        self.message_bytes += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for NewQueueFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}
