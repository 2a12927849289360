//! Pickup: take a new submission out of `maildrop/`, check it, and move it to
//! `incoming/`. `maildrop/` is writable by every local user (through the setgid
//! `sendmail`), so nothing in it is trusted: the entry must be a plain file with one link
//! (not a symlink or a hard link to someone else's file), its envelope must parse and its
//! size must match, and the submitter is the file's owner, whatever its `uid` record says.
//! A file that fails goes to `corrupt/` with a log line; it never stops the daemon.

use std::fs;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;

use crate::queue::{LockedFile, QueueId, QueueName, ReadError, read_envelope_from};

use super::Runtime;
use super::logline;

/// Picks up `maildrop/ID`. Returns the file, locked, in `incoming/`; `None` when it is
/// gone, locked by another process (a `sendmail -odi` delivering it itself, postsuper),
/// or was not acceptable (then it has been moved to `corrupt/`).
pub fn pickup(rt: &Runtime, id: QueueId) -> Option<LockedFile> {
    let queue = &rt.queue;
    let path = queue.path(QueueName::Maildrop, id);
    let meta = fs::symlink_metadata(&path).ok()?;
    if !meta.file_type().is_file() || meta.nlink() != 1 {
        // Renaming moves the entry itself, never what a symlink points to.
        let why = if meta.file_type().is_symlink() {
            "a symbolic link"
        } else if meta.file_type().is_file() {
            "a file with more than one link"
        } else {
            "not a regular file"
        };
        quarantine_entry(rt, QueueName::Maildrop, id, why);
        return None;
    }
    match queue.try_lock(QueueName::Maildrop, id) {
        Ok(Some(locked)) => accept(rt, locked),
        Ok(None) => None,
        // Replaced since the check above.
        Err(e) if crate::queue::not_regular(&e).is_some() => {
            quarantine_entry(rt, QueueName::Maildrop, id, &e.to_string());
            None
        }
        Err(e) => {
            rt.logs
                .pickup
                .warning(&format!("maildrop/{id}: open: {}", describe(&e)));
            None
        }
    }
}

/// Checks a locked maildrop file and moves it to `incoming/` (see [`pickup`]).
pub fn accept(rt: &Runtime, mut locked: LockedFile) -> Option<LockedFile> {
    let queue = &rt.queue;
    let id = locked.id;
    if let Err(e) = locked.file.seek(SeekFrom::Start(0)) {
        rt.logs
            .pickup
            .warning(&format!("maildrop/{id}: seek: {}", describe(&e)));
        return None;
    }
    let owner = match locked.file.metadata() {
        Ok(m) => m.uid(),
        Err(e) => {
            rt.logs
                .pickup
                .warning(&format!("maildrop/{id}: stat: {}", describe(&e)));
            return None;
        }
    };
    let mut envelope = match read_envelope_from(&mut locked.file) {
        Ok(env) => env,
        Err(ReadError::Corrupt(why)) => {
            quarantine(rt, locked, &why);
            return None;
        }
        Err(ReadError::Missing) => return None,
        Err(e @ (ReadError::Io(_) | ReadError::NotRegular(_))) => {
            rt.logs.pickup.warning(&format!("maildrop/{id}: read: {e}"));
            return None;
        }
    };
    let length = locked.file.metadata().map(|m| m.len()).unwrap_or(0);
    if envelope.message_offset.checked_add(envelope.size) != Some(length) {
        let why = format!(
            "size record says {} message bytes, the file has {}",
            envelope.size,
            length.saturating_sub(envelope.message_offset)
        );
        quarantine(rt, locked, &why);
        return None;
    }
    // A file of root's was put here by root (`postsuper -r` requeueing a message that
    // pickup had given to root): its record stands.
    if envelope.uid != owner && owner != 0 {
        // The record is the submitter's word; the owner is the kernel's.
        rt.logs.pickup.warning(&format!(
            "maildrop/{id}: uid record {} differs from the file owner {owner}; using {owner}",
            envelope.uid
        ));
        envelope.uid = owner;
        if let Err(e) = queue.rewrite_envelope(&mut locked, &mut envelope) {
            rt.logs
                .pickup
                .warning(&format!("maildrop/{id}: rewrite: {}", describe(&e)));
            return None;
        }
    }
    if let Err(e) = queue.relocate(&mut locked, QueueName::Incoming) {
        rt.logs.pickup.warning(&format!(
            "maildrop/{id}: move to incoming: {}",
            describe(&e)
        ));
        return None;
    }
    // Out of the submitter's hands: mail_owner's, and readable by mailq's group.
    queue.give_to_owner(&locked.file);
    let _ = locked.file.seek(SeekFrom::Start(0));
    rt.logs
        .pickup
        .info(&logline::pickup(locked.id, owner, &envelope.sender));
    Some(locked)
}

/// Moves a file that is not a valid queue file to `corrupt/` and says so.
pub fn quarantine(rt: &Runtime, mut locked: LockedFile, why: &str) {
    let from = locked.queue.as_str();
    let id = locked.id;
    match rt.queue.move_to(&mut locked, QueueName::Corrupt) {
        Ok(_) => rt.logs.qmgr.warning(&format!(
            "{from}/{id}: corrupt queue file: {why}; moved to corrupt"
        )),
        Err(e) => rt.logs.qmgr.warning(&format!(
            "{from}/{id}: corrupt queue file: {why}; cannot move it to corrupt: {}",
            describe(&e)
        )),
    }
}

/// Moves an entry that is not a regular file (a FIFO, a symbolic link, a directory...)
/// from `from/` to `corrupt/` as it is, and says so. Such an entry is never opened for
/// reading: a FIFO would block the thread that did.
pub fn quarantine_entry(rt: &Runtime, from: QueueName, id: QueueId, why: &str) {
    let log = match from {
        QueueName::Maildrop => &rt.logs.pickup,
        _ => &rt.logs.qmgr,
    };
    let queue = from.as_str();
    match rt.queue.move_entry_to_corrupt(from, id) {
        Ok(name) if name == id.as_str() => {
            log.warning(&format!("{queue}/{id}: {why}; moved to corrupt"))
        }
        Ok(name) => log.warning(&format!("{queue}/{id}: {why}; moved to corrupt/{name}")),
        Err(e) => log.warning(&format!(
            "{queue}/{id}: {why}; cannot move it to corrupt: {}",
            describe(&e)
        )),
    }
}

fn describe(e: &std::io::Error) -> String {
    crate::sysexits::describe_io(e)
}
