//! The mailbox lock protocol, the one implementation shared by local delivery
//! (`deliver::local::lock`, a thin adapter) and by mail readers ([`lock`]).
//!
//! Order and names are Postfix's (`mailbox_delivery_lock = fcntl, dotlock`, taken dotlock
//! first, as `mbox_open()` does) and what procmail, mutt and bsd-mailx (through
//! liblockfile) expect on Debian:
//!
//! 1. a dot-lock `MAILBOX.lock` beside the mailbox ([`dotlock`]), created with
//!    `O_CREAT|O_EXCL|O_NOFOLLOW`; one older than [`STALE_AFTER`] (mutt's and procmail's
//!    five minutes; Postfix's `stale_lock_time` is 500s) is taken to be left over from a
//!    crash and removed;
//! 2. then an `fcntl` write lock on the whole mailbox file ([`fcntl_lock`]), as an
//!    open-file-description lock (`F_OFD_SETLK`): it conflicts with the classic POSIX
//!    locks other programs take, is not dropped when some other descriptor of the file is
//!    closed, and also keeps two threads of one process apart (a classic lock belongs to
//!    the whole process).
//!
//! A busy lock is tried again while the caller's patience lasts ([`tries`]: Postfix's
//! `deliver_lock_attempts = 20`, `deliver_lock_delay = 1s` for readers; [`until`]: a
//! deadline for delivery), so a stuck holder gives a clear error instead of a hang.
//!
//! The dot-lock's file-system operations (creating, breaking a stale one, removing) run
//! through a [`RunAs`] hook: delivery makes and removes it as the recipient, readers as
//! themselves ([`Myself`]).
//!
//! A reader that may not create files in the spool directory (Debian's `/var/mail` is
//! `root:mail 2775`, and `mail` is not set-gid) cannot make a dot-lock; with
//! [`Policy::dotlock_optional`] (delivery: `may_fail`) it goes on with the `fcntl` lock
//! alone, which every delivery agent on the machine also takes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// A dot-lock older than this (by its modification time) was left by a crashed program
/// and is removed.
pub const STALE_AFTER: Duration = Duration::from_secs(300);

/// Runs the dot-lock's file-system operations under some identity.
pub trait RunAs {
    /// Runs `op` under this identity; an error means the identity could not be taken on
    /// (and `op` did not run).
    fn run(&self, op: &mut dyn FnMut()) -> io::Result<()>;
}

/// The identity we already have.
#[derive(Debug, Clone, Copy)]
pub struct Myself;

impl RunAs for Myself {
    fn run(&self, op: &mut dyn FnMut()) -> io::Result<()> {
        op();
        Ok(())
    }
}

/// Runs `op` as `owner`: the outer error is the identity switch's, the inner `op`'s.
fn as_owner<T>(owner: &impl RunAs, op: impl FnOnce() -> T) -> io::Result<T> {
    let mut op = Some(op);
    let mut out = None;
    owner.run(&mut || out = op.take().map(|op| op()))?;
    out.ok_or_else(|| io::Error::other("lock operation did not run"))
}

/// Patience that lasts `attempts` tries (at least one), `delay` apart.
pub fn tries(attempts: u32, delay: Duration) -> impl FnMut() -> bool {
    let mut left = attempts.max(1) - 1;
    move || {
        if left == 0 {
            return false;
        }
        left -= 1;
        std::thread::sleep(delay);
        true
    }
}

/// Patience that lasts until `deadline`, trying every `interval`.
pub fn until(deadline: Instant, interval: Duration) -> impl FnMut() -> bool {
    move || {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(interval);
        true
    }
}

/// The dot-lock's path for `mailbox`.
pub fn dotlock_path(mailbox: &Path) -> PathBuf {
    let mut name = mailbox.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// A dot-lock we hold; removed (as the identity it was made with) when dropped.
#[derive(Debug)]
pub struct DotLock<I: RunAs = Myself> {
    path: PathBuf,
    owner: I,
}

impl<I: RunAs> Drop for DotLock<I> {
    fn drop(&mut self) {
        let _ = as_owner(&self.owner, || fs::remove_file(&self.path));
    }
}

/// Takes the dot-lock for `mailbox` as `owner`. While it is held by someone else, asks
/// `again` (which waits) whether to try once more; when `again` says no, fails with
/// `EEXIST`. With `may_fail`, a directory we may not create files in (`EACCES`, `EPERM`,
/// `EROFS`) means "no dot-lock" (`None`) rather than an error.
pub fn dotlock<I: RunAs>(
    mailbox: &Path,
    owner: I,
    stale_after: Duration,
    may_fail: bool,
    again: &mut dyn FnMut() -> bool,
) -> io::Result<Option<DotLock<I>>> {
    let path = dotlock_path(mailbox);
    loop {
        let made = as_owner(&owner, || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
        })?;
        match made {
            Ok(mut file) => {
                // The holder's pid helps an administrator; nothing depends on it.
                let _ = writeln!(file, "{}", std::process::id());
                return Ok(Some(DotLock { path, owner }));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e)
                if may_fail
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EACCES | libc::EPERM | libc::EROFS)
                    ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        if is_stale(&path, stale_after) {
            // Removing may race with another remover; whoever wins creates anew. A stale
            // lock we cannot remove is waited on like a live one.
            match as_owner(&owner, || fs::remove_file(&path)) {
                Ok(Ok(())) => continue,
                Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => continue,
                _ => {}
            }
        }
        if !again() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
    }
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

/// Takes an exclusive `fcntl` (open-file-description) lock on the whole of `file`. While
/// it is busy, asks `again` (which waits) whether to try once more; when `again` says
/// no, fails with `EAGAIN`. The lock goes away with [`fcntl_unlock`] or when the file is
/// closed.
pub fn fcntl_lock(file: &File, again: &mut dyn FnMut() -> bool) -> io::Result<()> {
    loop {
        match set_ofd_lock(file, libc::F_WRLCK as libc::c_short) {
            Ok(()) => return Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => {
                if !again() {
                    return Err(io::Error::from_raw_os_error(libc::EAGAIN));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Releases the `fcntl` lock [`fcntl_lock`] took.
pub fn fcntl_unlock(file: &File) -> io::Result<()> {
    set_ofd_lock(file, libc::F_UNLCK as libc::c_short)
}

fn set_ofd_lock(file: &File, kind: libc::c_short) -> io::Result<()> {
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

/// How hard a reader tries for a lock.
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
            stale_after: STALE_AFTER,
            dotlock_optional: false,
        }
    }
}

/// A mailbox held under both locks. Dropping it releases them in reverse order: the
/// `fcntl` lock, then the dot-lock.
#[derive(Debug)]
pub struct Locked {
    file: File,
    dotlock: Option<DotLock>,
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
        let _ = fcntl_unlock(&self.file);
        // The dot-lock goes when the field is dropped, after this.
    }
}

fn locked_error(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::WouldBlock,
        format!("{}: mailbox is locked by another process", path.display()),
    )
}

/// Locks `mailbox` (dot-lock, then `fcntl` on the file `open` opens), each step tried
/// [`Policy::attempts`] times, [`Policy::delay`] apart. `open` runs after the dot-lock is
/// held, so a mailbox replaced by a rename under someone else's dot-lock is never the one
/// we lock.
pub fn lock(
    mailbox: &Path,
    policy: &Policy,
    open: impl FnOnce() -> io::Result<File>,
) -> io::Result<Locked> {
    let held = dotlock(
        mailbox,
        Myself,
        policy.stale_after,
        policy.dotlock_optional,
        &mut tries(policy.attempts, policy.delay),
    )
    .map_err(|e| match e.raw_os_error() {
        Some(libc::EEXIST) => locked_error(&dotlock_path(mailbox)),
        _ => e,
    })?;
    // From here on the dot-lock is released on every path when it is dropped.
    let locked = Locked {
        file: open()?,
        dotlock: held,
    };
    match fcntl_lock(&locked.file, &mut tries(policy.attempts, policy.delay)) {
        Ok(()) => Ok(locked),
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Err(locked_error(mailbox)),
        Err(e) => Err(e),
    }
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

    /// Counts the operations run through it, to show the hook carries all of them.
    #[derive(Debug, Default)]
    struct Counting(std::cell::Cell<u32>);

    impl RunAs for &Counting {
        fn run(&self, op: &mut dyn FnMut()) -> io::Result<()> {
            self.0.set(self.0.get() + 1);
            op();
            Ok(())
        }
    }

    #[test]
    fn dotlock_runs_its_file_operations_through_the_hook() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("carol");
        let hook = Counting::default();
        let held = dotlock(&mbox, &hook, STALE_AFTER, false, &mut || false)
            .unwrap()
            .unwrap();
        assert_eq!(hook.0.get(), 1);
        let pid = fs::read_to_string(dotlock_path(&mbox)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        // Busy: no waiting allowed, so EEXIST at once.
        let err = dotlock(&mbox, Myself, STALE_AFTER, false, &mut || false).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
        drop(held);
        assert_eq!(hook.0.get(), 2);
        assert!(!dotlock_path(&mbox).exists());
    }

    #[test]
    fn a_hook_that_cannot_switch_is_an_error_even_when_the_dotlock_may_fail() {
        #[derive(Debug)]
        struct Refusing;
        impl RunAs for Refusing {
            fn run(&self, _: &mut dyn FnMut()) -> io::Result<()> {
                Err(io::Error::from_raw_os_error(libc::EPERM))
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("dave");
        let err = dotlock(&mbox, Refusing, STALE_AFTER, true, &mut || false).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    }

    #[test]
    fn patience_by_tries_and_by_deadline() {
        let mut once = tries(0, Duration::ZERO);
        assert!(!once());
        let mut three = tries(3, Duration::ZERO);
        assert!(three() && three() && !three());
        let started = Instant::now();
        let mut soon = until(
            started + Duration::from_millis(50),
            Duration::from_millis(10),
        );
        while soon() {}
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn fcntl_lock_waits_then_gives_eagain_and_unlock_frees() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box");
        fs::write(&path, b"").unwrap();
        let a = open_existing(&path).unwrap();
        let b = open_existing(&path).unwrap();
        fcntl_lock(&a, &mut || false).unwrap();
        let mut waits = 0;
        let err = fcntl_lock(&b, &mut || {
            waits += 1;
            waits < 3
        })
        .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EAGAIN));
        assert_eq!(waits, 3);
        fcntl_unlock(&a).unwrap();
        fcntl_lock(&b, &mut || false).unwrap();
    }
}
