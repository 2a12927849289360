//! One daemon per queue: `pid/master.lock` is held with an exclusive flock for the
//! daemon's whole life, and `pid/master.pid` says who holds it. The kernel drops the lock
//! when the process dies however it dies, so a stale pid file never blocks a restart.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use crate::queue::Queue;

pub const LOCK_FILE: &str = "master.lock";
pub const PID_FILE: &str = "master.pid";

/// The lock held by the running daemon; released when dropped (or at exit).
pub struct MasterLock {
    _file: File,
    pid_path: PathBuf,
}

/// Why the lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another daemon holds it; its pid when the pid file says.
    Running(Option<u32>),
    Io(io::Error),
}

impl MasterLock {
    /// Takes the lock without waiting and writes our pid.
    pub fn acquire(queue: &Queue) -> Result<MasterLock, LockError> {
        let dir = queue.pid_dir();
        if !dir.is_dir() {
            queue.ensure_dirs().map_err(LockError::Io)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(dir.join(LOCK_FILE))
            .map_err(LockError::Io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(LockError::Running(read_pid(queue))),
            Err(TryLockError::Error(e)) => return Err(LockError::Io(e)),
        }
        let pid_path = dir.join(PID_FILE);
        let temp = dir.join(format!(".{PID_FILE}.{}", std::process::id()));
        let written = (|| {
            let mut f = File::create(&temp)?;
            writeln!(f, "{:>10}", std::process::id())?;
            std::fs::rename(&temp, &pid_path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(LockError::Io(e));
        }
        Ok(MasterLock {
            _file: file,
            pid_path,
        })
    }
}

impl Drop for MasterLock {
    fn drop(&mut self) {
        // Only the holder removes the pid file; the lock itself goes with the descriptor.
        let _ = std::fs::remove_file(&self.pid_path);
    }
}

/// The pid of the running daemon, or `None` when no daemon holds the lock. Used by
/// `sendmail` to decide whether a submission needs a delivery of its own.
pub fn running(queue: &Queue) -> Option<u32> {
    let file = File::open(queue.pid_dir().join(LOCK_FILE)).ok()?;
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            None
        }
        Err(TryLockError::WouldBlock) => Some(read_pid(queue).unwrap_or(0)),
        Err(TryLockError::Error(_)) => None,
    }
}

fn read_pid(queue: &Queue) -> Option<u32> {
    let mut text = String::new();
    File::open(queue.pid_dir().join(PID_FILE))
        .ok()?
        .read_to_string(&mut text)
        .ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let queue = Queue::new(tmp.path());
        assert_eq!(running(&queue), None);
        let lock = MasterLock::acquire(&queue).unwrap();
        // flock locks belong to open file descriptions: a second open in this process
        // conflicts just as another process would.
        match MasterLock::acquire(&queue) {
            Err(LockError::Running(pid)) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert_eq!(running(&queue), Some(std::process::id()));
        drop(lock);
        assert_eq!(running(&queue), None);
        assert!(MasterLock::acquire(&queue).is_ok());
    }
}
