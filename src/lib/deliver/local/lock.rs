//! Mailbox locks for local delivery: the protocol of [`crate::mailbox::lock`] (a
//! dot-lock `MAILBOX.lock` made with `O_EXCL`, then an `fcntl` open-file-description
//! write lock on the open mailbox), with the dot-lock made and removed as the recipient
//! and each lock retried until one deadline rather than waited on indefinitely: a mailbox
//! held open by a stuck mail reader must defer one delivery, not hang a delivery thread.
//! This module only adds delivery's identity, deadline and error texts.

use std::fs::File;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use super::privileges::{Identity, as_identity};
use crate::mailbox::lock::{self, RunAs};

pub use crate::mailbox::lock::STALE_AFTER;

/// How often a busy lock is tried again.
const RETRY: Duration = Duration::from_millis(100);

impl RunAs for Identity {
    fn run(&self, op: &mut dyn FnMut()) -> io::Result<()> {
        as_identity(self, op)
    }

    fn uid(&self) -> u32 {
        self.uid
    }
}

/// A dot-lock we hold; removed (with the rights it was made with) when dropped.
pub type DotLock = lock::DotLock<Identity>;

/// Why a lock could not be had.
#[derive(Debug)]
pub struct LockError {
    pub text: String,
    pub error: io::Error,
}

/// Takes the dot-lock for `mailbox` (`MAILBOX.lock`) as `owner`, waiting until
/// `deadline`; a lock whose holder is gone, or older than `stale_after`
/// (`stale_lock_time`), is broken. With `may_fail`, a directory we may not create files
/// in means "no dot-lock" rather than an error (as Postfix does for `/file` deliveries,
/// which often go to directories the user cannot write).
pub fn dotlock(
    mailbox: &Path,
    owner: &Identity,
    deadline: Instant,
    stale_after: Duration,
    may_fail: bool,
) -> Result<Option<DotLock>, LockError> {
    lock::dotlock(
        mailbox,
        owner.clone(),
        stale_after,
        may_fail,
        &mut lock::until(deadline, RETRY),
    )
    .map_err(|error| LockError {
        text: format!(
            "unable to create lock file {}",
            lock::dotlock_path(mailbox).display()
        ),
        error,
    })
}

/// Takes an exclusive `fcntl` lock on the whole of `file`, waiting until `deadline`. The
/// lock goes away when the file is closed.
pub fn fcntl_lock(file: &File, deadline: Instant) -> Result<(), LockError> {
    lock::fcntl_lock(file, &mut lock::until(deadline, RETRY)).map_err(|error| LockError {
        text: "unable to lock for exclusive access".into(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, File};
    use std::time::SystemTime;

    #[test]
    fn dotlocks_exclude_and_stale_ones_are_broken() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("alice");
        let me = Identity::current();
        let soon = Instant::now() + Duration::from_millis(300);
        let held = dotlock(&mbox, &me, soon, STALE_AFTER, false)
            .unwrap()
            .unwrap();
        assert!(dir.path().join("alice.lock").exists());
        let started = Instant::now();
        let err = dotlock(
            &mbox,
            &me,
            Instant::now() + Duration::from_millis(300),
            STALE_AFTER,
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
            dotlock(&mbox, &me, Instant::now(), STALE_AFTER, false)
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
