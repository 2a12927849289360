//! Changing a queued message's envelope: a one-byte state write for a recipient that is
//! done, and a whole new envelope (reasons, attempts, next try) swapped in atomically.
//!
//! A new envelope changes lengths, so it cannot be written in place; the file is copied to
//! a temporary name in the same directory, locked, synced and renamed over the old name.
//! The lock is taken on the copy *before* the rename, so there is no moment when the name
//! refers to an unlocked file that another process could grab.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};

use nix::fcntl::{RenameFlags, renameat2};

use super::envelope::Envelope;
use super::store::TEMP_PREFIX;
use super::{LockedFile, Queue, QueueId, QueueName, RcptState, Recipient};

impl Queue {
    /// Records one recipient's new state with a one-byte write at its `state_offset`, made
    /// durable before returning, so that a crash after this never repeats the delivery.
    pub fn mark(&self, locked: &LockedFile, rcpt: &Recipient, state: RcptState) -> io::Result<()> {
        self.mark_all(locked, &[rcpt], state)
    }

    /// [`Queue::mark`] for several recipients, with one `fdatasync` for all of them.
    pub fn mark_all(
        &self,
        locked: &LockedFile,
        rcpts: &[&Recipient],
        state: RcptState,
    ) -> io::Result<()> {
        if rcpts.iter().any(|r| r.state_offset == 0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "recipient was not read from this file",
            ));
        }
        // The descriptor from `try_lock` is read-only; the state byte needs a writable one
        // on the same inode (the lock is per open file description, so it is not lost).
        // Never through a symbolic link, never blocked by a FIFO, should the name have
        // been replaced (the inode check below then refuses it).
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(self.path(locked.queue, locked.id))?;
        if !same_inode(&file, &locked.file)? {
            return Err(io::Error::other("queue file was replaced while locked"));
        }
        for rcpt in rcpts {
            file.write_all_at(&[state.letter()], rcpt.state_offset)?;
        }
        file.sync_data()
    }

    /// Replaces the envelope of a locked message with `envelope` (whose recipients keep
    /// their order), keeping the message bytes. On return `locked` holds the new file,
    /// already locked, and `envelope`'s offsets describe it. A crash at any point leaves
    /// either the old file or the new one under the ID, never neither.
    pub fn rewrite_envelope(
        &self,
        locked: &mut LockedFile,
        envelope: &mut Envelope,
    ) -> io::Result<()> {
        let dir_path = self.dir(locked.queue);
        let old_offset = envelope.message_offset;
        let size = envelope.size;
        envelope.id = locked.id;
        let header = envelope.serialize();
        let temp = dir_path.join(format!(
            "{TEMP_PREFIX}{}.{}.rw",
            locked.id,
            std::process::id()
        ));
        // A crashed rewrite by an earlier process with our pid may have left this name.
        let _ = std::fs::remove_file(&temp);
        let mut out = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        let result = (|| {
            // The copy keeps the owner, group and mode the original had (root's and the
            // group's outside maildrop/, the submitter's in it).
            if let Ok(meta) = locked.file.metadata() {
                use std::os::fd::AsFd;
                use std::os::unix::fs::{MetadataExt, PermissionsExt};
                let _ = nix::unistd::fchown(
                    out.as_fd(),
                    Some(meta.uid().into()),
                    Some(meta.gid().into()),
                );
                out.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o777))?;
            }
            out.try_lock()?;
            out.write_all(&header)?;
            copy_range(&locked.file, old_offset, size, &mut out)?;
            out.sync_data()?;
            let dir = File::open(&dir_path)?;
            renameat2(&dir, &temp, &dir, locked.id.as_str(), RenameFlags::empty())
                .map_err(io::Error::from)?;
            dir.sync_all()
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        let old = std::mem::replace(&mut locked.file, out);
        let _ = old.unlock();
        Ok(())
    }
}

impl Queue {
    /// Moves a locked message between the daemon's own queues (`maildrop` → `incoming` →
    /// `active` → `deferred`) without syncing the directories. Losing such a rename in a
    /// crash only puts the file back in an earlier queue, and the daemon scans all of them
    /// when it starts, so the message is never lost; the two fsyncs `move_to` pays for
    /// would double the cost of a delivery. The ID is kept (a new one is drawn only if the
    /// name is taken).
    pub fn relocate(&self, locked: &mut LockedFile, to: QueueName) -> io::Result<QueueId> {
        let from = self.path(locked.queue, locked.id);
        if !self.dir(to).is_dir() {
            self.ensure_dirs()?;
        }
        match renameat2(
            nix::fcntl::AT_FDCWD,
            &from,
            nix::fcntl::AT_FDCWD,
            &self.path(to, locked.id),
            RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => {
                locked.queue = to;
                Ok(locked.id)
            }
            // Taken, or a file system without RENAME_NOREPLACE: the careful path.
            Err(_) => self.move_to(locked, to),
        }
    }
}

/// Copies `len` bytes from `offset` of `from` to the end of `to`.
fn copy_range(from: &File, offset: u64, len: u64, to: &mut File) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = offset;
    let end = offset + len;
    while at < end {
        let want = buf.len().min((end - at) as usize);
        let n = from.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "queue file is shorter than its size record",
            ));
        }
        to.write_all(&buf[..n])?;
        at += n as u64;
    }
    Ok(())
}

fn same_inode(a: &File, b: &File) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (a.metadata()?, b.metadata()?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{NewQueueFile, read_envelope_from};
    use std::io::Write;

    fn queued(queue: &Queue) -> QueueId {
        let mut env = Envelope::new(QueueId::generate(), 1_700_000_000_000_000, 0, "s@x");
        env.recipients.push(Recipient::new("a", "a@x"));
        env.recipients.push(Recipient::new("b", "b@x"));
        let mut file = NewQueueFile::create(&queue.maildrop().unwrap(), env).unwrap();
        file.write_all(b"Subject: t\n\nbody\n").unwrap();
        file.commit().unwrap()
    }

    #[test]
    fn marks_in_place_and_rewrites_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let queue = Queue::new(tmp.path());
        let id = queued(&queue);
        let mut locked = queue.try_lock(QueueName::Maildrop, id).unwrap().unwrap();
        let mut env = read_envelope_from(&mut locked.file).unwrap();
        queue
            .mark(&locked, &env.recipients[0], RcptState::Delivered)
            .unwrap();
        let reread = queue.read_envelope(QueueName::Maildrop, id).unwrap();
        assert_eq!(reread.recipients[0].state, RcptState::Delivered);
        env.recipients[0].state = RcptState::Delivered;

        env.recipients[1].reason = "host said: 451 try later".into();
        env.attempts = 1;
        env.next_attempt = 1_800_000_000;
        queue.rewrite_envelope(&mut locked, &mut env).unwrap();
        // Still locked against others, under the same name.
        assert!(queue.try_lock(QueueName::Maildrop, id).unwrap().is_none());
        let reread = queue.read_envelope(QueueName::Maildrop, id).unwrap();
        assert_eq!(reread.recipients[1].reason, "host said: 451 try later");
        assert_eq!(reread.attempts, 1);
        assert_eq!(reread.next_attempt, 1_800_000_000);
        let text = std::fs::read(queue.path(QueueName::Maildrop, id)).unwrap();
        assert_eq!(
            &text[reread.message_offset as usize..],
            b"Subject: t\n\nbody\n"
        );
        // The in-place mark works on the new file too.
        queue
            .mark(&locked, &reread.recipients[1], RcptState::Delivered)
            .unwrap();
        let after = queue.read_envelope(QueueName::Maildrop, id).unwrap();
        assert!(after.recipients.iter().all(|r| r.state.is_done()));
        drop(locked);
        let leftovers = std::fs::read_dir(queue.dir(QueueName::Maildrop))
            .unwrap()
            .count();
        assert_eq!(leftovers, 1);
    }
}
