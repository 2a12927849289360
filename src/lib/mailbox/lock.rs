//! The mailbox lock protocol shared by delivery and by mail readers.
//!
//! Order and names are Postfix's (`mailbox_delivery_lock = fcntl, dotlock`, taken dotlock
//! first, as `mbox_open()` does) and what procmail, mutt and bsd-mailx (through
//! liblockfile) expect on Debian:
//!
//! 1. a dot-lock `MAILBOX.lock` beside the mailbox, created with `O_CREAT|O_EXCL`; one
//!    older than [`Policy::stale_after`] is taken to be left over from a crash and removed;
//! 2. then an `fcntl` write lock on the whole mailbox file, as an open-file-description
//!    lock (`F_OFD_SETLK`): it conflicts with the classic POSIX locks other programs take,
//!    and is not dropped when some other descriptor of the file is closed.
//!
//! This is the protocol local delivery follows (`deliver::local::lock`, which also
//! switches file-system identity, so it keeps its own code): same names, same order, same
//! five-minute staleness (mutt's and procmail's; Postfix's `stale_lock_time` is 500s).
//! Each step is tried [`Policy::attempts`] times, [`Policy::delay`] apart (Postfix's
//! `deliver_lock_attempts = 20`, `deliver_lock_delay = 1s`), so a stuck holder gives a
//! clear "mailbox is locked" error instead of a hang.
//!
//! A reader that may not create files in the spool directory (Debian's `/var/mail` is
//! `root:mail 2775`, and `mail` is not set-gid) cannot make a dot-lock; with
//! [`Policy::dotlock_optional`] it goes on with the `fcntl` lock alone, which every
//! delivery agent on the machine also takes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How hard to try for a lock.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub attempts: u32,
    pub delay: Duration,
    pub stale_after: Duration,
    /// Go on without the dot-lock when the directory does not let us create it.
    pub dotlock_optional: bool,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            attempts: 20,
            delay: Duration::from_secs(1),
            stale_after: Duration::from_secs(300),
            dotlock_optional: false,
        }
    }
}

/// The dot-lock's path for `mailbox`.
pub fn dotlock_path(mailbox: &Path) -> PathBuf {
    let mut name = mailbox.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// A mailbox held under both locks. Dropping it releases them in reverse order: the
/// `fcntl` lock, then the dot-lock.
#[derive(Debug)]
pub struct Locked {
    file: File,
    dotlock: Option<PathBuf>,
}

impl Locked {
    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn file_mut(&mut self) -> &mut File {
        &mut self.file
    }

    /// True when the dot-lock was taken (false only with [`Policy::dotlock_optional`]).
    pub fn has_dotlock(&self) -> bool {
        self.dotlock.is_some()
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        let _ = fcntl_lock(&self.file, libc::F_UNLCK as libc::c_short);
        if let Some(path) = &self.dotlock {
            let _ = fs::remove_file(path);
        }
    }
}

/// Locks `mailbox` (dot-lock, then `fcntl` on the file `open` opens). `open` runs after
/// the dot-lock is held, so a mailbox replaced by a rename under someone else's dot-lock is
/// never the one we lock.
pub fn lock(
    mailbox: &Path,
    policy: &Policy,
    open: impl FnOnce() -> io::Result<File>,
) -> io::Result<Locked> {
    let dotlock = match take_dotlock(mailbox, policy) {
        Ok(path) => Some(path),
        Err(e) if policy.dotlock_optional && e.kind() == io::ErrorKind::PermissionDenied => None,
        Err(e) => return Err(e),
    };
    // From here on the dot-lock is released on every path by Locked's Drop; on an early
    // error we remove it ourselves.
    let file = match open() {
        Ok(file) => file,
        Err(e) => {
            if let Some(path) = &dotlock {
                let _ = fs::remove_file(path);
            }
            return Err(e);
        }
    };
    let locked = Locked { file, dotlock };
    for attempt in 1..=policy.attempts.max(1) {
        match fcntl_lock(&locked.file, libc::F_WRLCK as libc::c_short) {
            Ok(()) => return Ok(locked),
            Err(e) if is_busy(&e) && attempt < policy.attempts => std::thread::sleep(policy.delay),
            Err(e) if is_busy(&e) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{}: mailbox is locked by another process",
                        mailbox.display()
                    ),
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("unreachable lock state"))
}

/// Opens `path` for reading and writing without following a symbolic link (a link in a
/// spool could point into another user's files).
pub fn open_existing(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

fn is_busy(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES))
}

fn fcntl_lock(file: &File, kind: libc::c_short) -> io::Result<()> {
    // SAFETY: a zeroed flock is a valid "whole file from offset 0" request once l_type and
    // l_whence are set (l_pid must be 0 for open-file-description locks); fcntl only
    // reads it.
    let mut request: libc::flock = unsafe { std::mem::zeroed() };
    request.l_type = kind;
    request.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: F_OFD_SETLK with a pointer to a live flock struct on a descriptor we own.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &request) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn take_dotlock(mailbox: &Path, policy: &Policy) -> io::Result<PathBuf> {
    let path = dotlock_path(mailbox);
    for attempt in 1..=policy.attempts.max(1) {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut file) => {
                // The holder's pid helps an administrator; nothing depends on it.
                let _ = writeln!(file, "{}", std::process::id());
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if is_stale(&path, policy.stale_after) {
                    // Removing may race with another remover; whoever wins creates anew.
                    let _ = fs::remove_file(&path);
                    continue;
                }
                if attempt < policy.attempts {
                    std::thread::sleep(policy.delay);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::WouldBlock,
        format!("{}: mailbox is locked by another process", path.display()),
    ))
}

fn is_stale(path: &Path, stale_after: Duration) -> bool {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false;
    };
    let Ok(changed) = meta.modified() else {
        return false;
    };
    SystemTime::now()
        .duration_since(changed)
        .is_ok_and(|age| age > stale_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick() -> Policy {
        Policy {
            attempts: 2,
            delay: Duration::from_millis(10),
            stale_after: Duration::from_secs(500),
            dotlock_optional: false,
        }
    }

    #[test]
    fn takes_and_releases_both_locks() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("alice");
        fs::write(&mbox, b"").unwrap();
        let held = lock(&mbox, &quick(), || open_existing(&mbox)).unwrap();
        assert!(held.has_dotlock());
        assert!(dir.path().join("alice.lock").exists());
        // A second taker gives up with a clear error while the first holds it.
        let err = lock(&mbox, &quick(), || open_existing(&mbox)).unwrap_err();
        assert!(err.to_string().contains("locked"), "{err}");
        // The fcntl lock alone excludes too, even within one process.
        let other = Policy {
            dotlock_optional: true,
            ..quick()
        };
        let err = lock(&dir.path().join("elsewhere"), &other, || {
            open_existing(&mbox)
        })
        .unwrap_err();
        assert!(err.to_string().contains("locked"), "{err}");
        drop(held);
        assert!(!dir.path().join("alice.lock").exists());
        lock(&mbox, &quick(), || open_existing(&mbox)).unwrap();
    }

    #[test]
    fn stale_dotlock_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("bob");
        fs::write(&mbox, b"").unwrap();
        fs::write(dotlock_path(&mbox), b"999999\n").unwrap();
        let policy = Policy {
            stale_after: Duration::ZERO,
            ..quick()
        };
        std::thread::sleep(Duration::from_millis(20));
        lock(&mbox, &policy, || open_existing(&mbox)).unwrap();
    }

    #[test]
    fn dotlock_removed_when_open_fails() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("missing");
        assert!(lock(&mbox, &quick(), || open_existing(&mbox)).is_err());
        assert!(!dotlock_path(&mbox).exists());
    }
}
