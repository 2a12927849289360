//! Mailbox locks, both kinds Debian's mail tools (mutt, mailx, procmail, dovecot's mbox
//! driver) take: a dot-lock `MAILBOX.lock` made with `O_EXCL`, and an `fcntl` write lock
//! on the open mailbox.
//!
//! The `fcntl` lock is an open-file-description lock (`F_OFD_SETLK`): it conflicts with
//! the classic POSIX locks other programs take, and unlike those it also keeps two
//! threads of our own daemon apart (a classic lock belongs to the whole process, so two
//! of our threads would both "hold" it).
//!
//! Both are retried until a deadline rather than waited on indefinitely: a mailbox held
//! open by a stuck mail reader must defer one delivery, not hang a delivery thread.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::privileges::{Identity, as_identity};

/// A dot-lock older than this (by its modification time) was left by a crashed program
/// and is removed. Postfix's `stale_lock_time` is 500s; mutt and procmail use 5 minutes.
pub const STALE_AFTER: Duration = Duration::from_secs(300);
/// How often a busy lock is tried again.
const RETRY: Duration = Duration::from_millis(100);

/// A dot-lock we hold; removed (with the rights it was made with) when dropped.
#[derive(Debug)]
pub struct DotLock {
    path: PathBuf,
    owner: Identity,
}

impl Drop for DotLock {
    fn drop(&mut self) {
        let _ = as_identity(&self.owner, || fs::remove_file(&self.path));
    }
}

/// Why a lock could not be had.
#[derive(Debug)]
pub struct LockError {
    pub text: String,
    pub error: io::Error,
}

/// Takes the dot-lock for `mailbox` (`MAILBOX.lock`) as `owner`, waiting until
/// `deadline`. With `may_fail`, a directory we may not create files in means "no
/// dot-lock" rather than an error (as Postfix does for `/file` deliveries, which often go
/// to directories the user cannot write).
pub fn dotlock(
    mailbox: &Path,
    owner: &Identity,
    deadline: Instant,
    may_fail: bool,
) -> Result<Option<DotLock>, LockError> {
    let mut name = mailbox.as_os_str().to_os_string();
    name.push(".lock");
    let path = PathBuf::from(name);
    let fail = |error: io::Error| LockError {
        text: format!("unable to create lock file {}", path.display()),
        error,
    };
    loop {
        let made = as_identity(owner, || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
        })
        .map_err(fail)?;
        match made {
            Ok(_) => {
                return Ok(Some(DotLock {
                    path,
                    owner: owner.clone(),
                }));
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
            Err(e) => return Err(fail(e)),
        }
        if is_stale(&path) {
            let _ = as_identity(owner, || fs::remove_file(&path));
            continue;
        }
        if Instant::now() >= deadline {
            return Err(fail(io::Error::from_raw_os_error(libc::EEXIST)));
        }
        std::thread::sleep(RETRY);
    }
}

fn is_stale(path: &Path) -> bool {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false;
    };
    let Ok(modified) = meta.modified() else {
        return false;
    };
    SystemTime::now()
        .duration_since(modified)
        .is_ok_and(|age| age > STALE_AFTER)
}

/// Takes an exclusive `fcntl` lock on the whole of `file`, waiting until `deadline`. The
/// lock goes away when the file is closed.
pub fn fcntl_lock(file: &File, deadline: Instant) -> Result<(), LockError> {
    loop {
        // SAFETY: a zeroed flock is a valid value; we fill the fields the call reads.
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = libc::F_WRLCK as libc::c_short;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        lock.l_start = 0;
        lock.l_len = 0;
        // l_pid must be 0 for open-file-description locks.
        lock.l_pid = 0;
        // SAFETY: the descriptor is open for the life of `file`, the struct is ours.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
        if rc == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        let busy = matches!(error.raw_os_error(), Some(libc::EAGAIN | libc::EACCES));
        if !busy || Instant::now() >= deadline {
            return Err(LockError {
                text: "unable to lock for exclusive access".into(),
                error: if busy {
                    io::Error::from_raw_os_error(libc::EAGAIN)
                } else {
                    error
                },
            });
        }
        std::thread::sleep(RETRY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotlocks_exclude_and_stale_ones_are_broken() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("alice");
        let me = Identity::current();
        let soon = Instant::now() + Duration::from_millis(300);
        let held = dotlock(&mbox, &me, soon, false).unwrap().unwrap();
        assert!(dir.path().join("alice.lock").exists());
        let started = Instant::now();
        let err = dotlock(
            &mbox,
            &me,
            Instant::now() + Duration::from_millis(300),
            false,
        )
        .unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(err.text.contains("alice.lock"), "{}", err.text);
        drop(held);
        assert!(!dir.path().join("alice.lock").exists());

        // A lock file untouched for ten minutes is taken over.
        let lock = dir.path().join("alice.lock");
        fs::write(&lock, b"").unwrap();
        let old = SystemTime::now() - Duration::from_secs(600);
        File::options()
            .write(true)
            .open(&lock)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(
            dotlock(&mbox, &me, Instant::now(), false)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn fcntl_locks_exclude_threads_of_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box");
        fs::write(&path, b"").unwrap();
        let a = File::options().append(true).open(&path).unwrap();
        let b = File::options().append(true).open(&path).unwrap();
        fcntl_lock(&a, Instant::now()).unwrap();
        let err = fcntl_lock(&b, Instant::now() + Duration::from_millis(200)).unwrap_err();
        assert_eq!(err.error.raw_os_error(), Some(libc::EAGAIN));
        drop(a);
        fcntl_lock(&b, Instant::now()).unwrap();
    }
}
