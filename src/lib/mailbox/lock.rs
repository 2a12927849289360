//! The mailbox lock protocol, the one implementation shared by local delivery
//! (`deliver::local::lock`, a thin adapter) and by mail readers ([`lock`]).
//!
//! Order and names are Postfix's (`mailbox_delivery_lock = fcntl, dotlock`, taken dotlock
//! first, as `mbox_open()` does) and what procmail, mutt and bsd-mailx (through
//! liblockfile) expect on Debian:
//!
//! 1. a dot-lock `MAILBOX.lock` beside the mailbox ([`dotlock`]) holding the holder's
//!    pid, made under a private name and hard-linked to the lock's name (liblockfile's
//!    way); one whose pid names no process, or older than `stale_lock_time`
//!    ([`STALE_AFTER`] by default, Postfix's 500 seconds) is taken to be left over from a
//!    crash and removed. An appender notes in it where the mailbox ended, so that whoever
//!    breaks the lock of an appender killed mid-write can cut the torn message off
//!    ([`DotLock::note`], [`crate::mailbox::mbox::repair_interrupted`]);
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
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// A dot-lock older than this (by its modification time) was left by a crashed program
/// and is removed: Postfix's `stale_lock_time` default, which delivery takes from
/// `main.cf`. A lock whose holder's pid names no process goes at once.
pub const STALE_AFTER: Duration = Duration::from_secs(500);

/// Runs the dot-lock's file-system operations under some identity.
pub trait RunAs {
    /// Runs `op` under this identity; an error means the identity could not be taken on
    /// (and `op` did not run).
    fn run(&self, op: &mut dyn FnMut()) -> io::Result<()>;

    /// The user files made under this identity belong to.
    fn uid(&self) -> u32 {
        // SAFETY: geteuid cannot fail.
        unsafe { libc::geteuid() }
    }
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
    /// The lock file as we made it: [`DotLock::note`] writes through it, and dropping
    /// removes the name only while it is still this file.
    file: File,
    /// The length of the pid line, where a note goes.
    pid_len: u64,
    /// The note of a lock we broke because its holder had died holding it.
    inherited: Option<String>,
}

impl<I: RunAs> DotLock<I> {
    /// Leaves `note` in the lock file after our pid, for whoever finds the lock when we
    /// have died holding it ([`DotLock::inherited`]): an appender says where the mailbox
    /// ended before it wrote. One `pwrite` of one short line, so a kill leaves the note
    /// whole or absent; it need not be synced, as it only has to outlive this process.
    pub fn note(&self, note: &str) -> io::Result<()> {
        let line = format!("{}\n", note.replace('\n', " "));
        self.file.write_all_at(line.as_bytes(), self.pid_len)
    }

    /// The note left with [`DotLock::note`] in the lock this one replaced, when its
    /// holder had died holding it (and had made it as root or as the user we made ours).
    pub fn inherited(&self) -> Option<&str> {
        self.inherited.as_deref()
    }
}

impl<I: RunAs> Drop for DotLock<I> {
    fn drop(&mut self) {
        // Someone who took our lock for stale holds it now: leave theirs alone.
        let ours = self.file.metadata().ok().map(|m| (m.dev(), m.ino()));
        let _ = as_owner(&self.owner, || {
            let there = fs::symlink_metadata(&self.path).ok();
            if there.map(|m| (m.dev(), m.ino())) == ours {
                let _ = fs::remove_file(&self.path);
            }
        });
    }
}

/// Takes the dot-lock for `mailbox` as `owner`. While it is held by someone else, asks
/// `again` (which waits) whether to try once more; when `again` says no, fails with
/// `EEXIST`. With `may_fail`, a directory we may not create files in (`EACCES`, `EPERM`,
/// `EROFS`) means "no dot-lock" (`None`) rather than an error.
///
/// A lock held by someone else is broken when it is stale: at once when it holds the pid
/// of a process that no longer exists (as liblockfile does, which Debian's mail readers
/// use), else when it is older than `stale_after` (Postfix's `stale_lock_time`; the pid
/// may belong to an unrelated process by now, and Postfix's own dot-locks hold no pid).
///
/// Our lock file always holds our pid: it is written before the file gets the lock's
/// name, so being killed at any moment never leaves a lock without its holder. A dead
/// holder's lock is replaced by ours in one step (an atomic exchange of names), and ours
/// carries its note ([`DotLock::note`]) from the start: whenever we are killed, the note
/// is in the lock that the next taker breaks.
pub fn dotlock<I: RunAs>(
    mailbox: &Path,
    owner: I,
    stale_after: Duration,
    may_fail: bool,
    again: &mut dyn FnMut() -> bool,
) -> io::Result<Option<DotLock<I>>> {
    let path = dotlock_path(mailbox);
    // The note of a dead holder's lock that was broken without an exchange (a file
    // system that cannot), for the lock we make next. Kept while someone else holds the
    // lock in between: whoever uses a note checks that it still applies.
    let mut carried: Option<String> = None;
    loop {
        let made = as_owner(&owner, || {
            let (private, file, pid_len) = make_private(&path, carried.as_deref())?;
            let linked = link_private(&private, &path, carried.as_deref());
            let _ = fs::remove_file(&private);
            linked.map(|made| made.unwrap_or((file, pid_len)))
        })?;
        match made {
            Ok((file, pid_len)) => {
                return Ok(Some(DotLock {
                    path,
                    owner,
                    file,
                    pid_len,
                    inherited: carried,
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
            Err(e) => return Err(e),
        }
        // A lock we cannot look at or break is waited on like a live one.
        if let Ok(Ok(found)) = as_owner(&owner, || look(&path)) {
            let dead = found.holder() == Holder::Dead;
            if dead || found.age.is_some_and(|age| age > stale_after) {
                // A dead holder's note, if it made its lock as the user we make ours, or
                // as root: in a directory others may write, their notes are not trusted.
                let trusted = found.uid == owner.uid() || found.uid == 0;
                let note = found
                    .note
                    .clone()
                    .filter(|_| dead && trusted)
                    .or_else(|| carried.clone());
                match as_owner(&owner, || replace(&path, &found, note.as_deref())) {
                    Ok(Ok(Replaced::Ours(file, pid_len))) => {
                        return Ok(Some(DotLock {
                            path,
                            owner,
                            file,
                            pid_len,
                            inherited: note,
                        }));
                    }
                    Ok(Ok(Replaced::Removed)) => {
                        carried = note;
                        continue;
                    }
                    Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => continue,
                    _ => {}
                }
            }
        }
        if !again() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
    }
}

static PRIVATE: AtomicU64 = AtomicU64::new(0);

/// A new file beside the lock, `LOCK.PID.N`, holding our pid (and `note` on a line of
/// its own). Returns its path, the file and the length of the pid line.
fn make_private(path: &Path, note: Option<&str>) -> io::Result<(PathBuf, File, u64)> {
    let pid_line = format!("{}\n", std::process::id());
    let content = match note {
        Some(note) => format!("{pid_line}{}\n", note.replace('\n', " ")),
        None => pid_line.clone(),
    };
    let mut private = path.as_os_str().to_owned();
    private.push(format!(
        ".{}.{}",
        std::process::id(),
        PRIVATE.fetch_add(1, Ordering::Relaxed)
    ));
    let private = PathBuf::from(private);
    let mut file = match new_file(&private) {
        // Left by a killed process that had our pid.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(&private)?;
            new_file(&private)?
        }
        made => made?,
    };
    if let Err(e) = file.write_all(content.as_bytes()) {
        let _ = fs::remove_file(&private);
        return Err(e);
    }
    Ok((private, file, pid_line.len() as u64))
}

/// Mode 0644, as liblockfile makes them: readers that find the lock must be able to read
/// its pid to tell a dead holder from a live one.
fn new_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Gives the private file the lock's name, failing with `EEXIST` when the lock is held
/// (liblockfile's way, also safe over NFS). On a file system without hard links the lock
/// is made in place instead, and returned (`Some`).
fn link_private(
    private: &Path,
    path: &Path,
    note: Option<&str>,
) -> io::Result<Option<(File, u64)>> {
    match fs::hard_link(private, path) {
        Ok(()) => Ok(None),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EPERM | libc::EOPNOTSUPP | libc::ENOSYS)
            ) =>
        {
            let mut file = new_file(path)?;
            let pid_line = format!("{}\n", std::process::id());
            file.write_all(pid_line.as_bytes())?;
            if let Some(note) = note {
                file.write_all(format!("{}\n", note.replace('\n', " ")).as_bytes())?;
            }
            Ok(Some((file, pid_line.len() as u64)))
        }
        Err(e) => Err(e),
    }
}

/// How a stale lock went.
enum Replaced {
    /// Ours is in its place: the file and the length of its pid line.
    Ours(File, u64),
    /// It is gone; ours is still to be made.
    Removed,
}

/// Replaces the stale lock `found` at `path` by ours (holding `note`), in one step where
/// the file system can exchange two names atomically, else by removing it. Only if what
/// was taken away is the file judged stale does it stay away: of several processes that
/// find one stale lock only one breaks it, and a fresh lock made in its place meanwhile
/// is put back (`NotFound` then, as if the lock had gone, and the caller looks again).
fn replace(path: &Path, found: &Found, note: Option<&str>) -> io::Result<Replaced> {
    let (private, file, pid_len) = make_private(path, note)?;
    let exchanged = exchange(&private, path);
    let result = match exchanged {
        Ok(()) => {
            // `private` now names what was the lock.
            let moved = fs::symlink_metadata(&private)?;
            if (moved.dev(), moved.ino()) == (found.device, found.inode) {
                Ok(Replaced::Ours(file, pid_len))
            } else {
                let _ = exchange(&private, path);
                Err(io::Error::from(io::ErrorKind::NotFound))
            }
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
            // No exchange here: move it aside, and remove it if it is the one.
            fs::remove_file(&private)?;
            fs::rename(path, &private)?;
            let moved = fs::symlink_metadata(&private)?;
            if (moved.dev(), moved.ino()) == (found.device, found.inode) {
                Ok(Replaced::Removed)
            } else {
                // If someone else has made a lock meanwhile, the one moved aside stays
                // lost; the fcntl lock still keeps writers apart.
                let _ = fs::hard_link(&private, path);
                Err(io::Error::from(io::ErrorKind::NotFound))
            }
        }
        Err(e) => Err(e),
    };
    let _ = fs::remove_file(&private);
    result
}

/// Exchanges the names `a` and `b` atomically (`renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let a = std::ffi::CString::new(a.as_os_str().as_bytes())?;
    let b = std::ffi::CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: two NUL-terminated paths that live across the call; the raw system call
    // because glibc's wrapper is not in every libc we may link with.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A dot-lock as found: which file it is, and what it says about its holder.
#[derive(Debug)]
struct Found {
    device: u64,
    inode: u64,
    uid: u32,
    /// How long ago it was last changed (`None`: in the future, or unknown).
    age: Option<Duration>,
    /// The holder's pid, from the first line (liblockfile's format).
    pid: Option<i32>,
    /// The second line, when the first held a pid.
    note: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
enum Holder {
    Alive,
    Dead,
    Unknown,
}

impl Found {
    fn holder(&self) -> Holder {
        let Some(pid) = self.pid else {
            return Holder::Unknown;
        };
        // SAFETY: signal 0 only checks that the process exists and may be signalled.
        if unsafe { libc::kill(pid, 0) } == 0 {
            return Holder::Alive;
        }
        match io::Error::last_os_error().raw_os_error() {
            // It exists, as another user.
            Some(libc::EPERM) => Holder::Alive,
            Some(libc::ESRCH) => Holder::Dead,
            _ => Holder::Unknown,
        }
    }
}

/// Reads the lock file at `path` without following a link or blocking on a FIFO.
fn look(path: &Path) -> io::Result<Found> {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path);
    let (meta, content) = match opened {
        Ok(file) => {
            let meta = file.metadata()?;
            let mut content = Vec::new();
            if meta.is_file() {
                file.take(1024).read_to_end(&mut content)?;
            }
            (meta, content)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
        // A symbolic link, or a file we may not read: only its age tells.
        Err(_) => (fs::symlink_metadata(path)?, Vec::new()),
    };
    let text = String::from_utf8_lossy(&content);
    let mut lines = text.lines();
    let pid = lines
        .next()
        .and_then(|line| line.trim().parse::<i32>().ok())
        .filter(|&pid| pid > 0);
    let note = pid
        .and_then(|_| lines.next())
        .map(|line| line.trim().to_string());
    let age = meta
        .modified()
        .ok()
        .and_then(|changed| SystemTime::now().duration_since(changed).ok());
    Ok(Found {
        device: meta.dev(),
        inode: meta.ino(),
        uid: meta.uid(),
        age,
        pid,
        note,
    })
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

    /// [`DotLock::note`], when there is a dot-lock.
    pub fn note(&self, note: &str) -> io::Result<()> {
        match &self.dotlock {
            Some(lock) => lock.note(note),
            None => Ok(()),
        }
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
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Err(locked_error(mailbox)),
        Err(e) => return Err(e),
    }
    // We broke the lock of an appender that died: whoever breaks it must cut off what it
    // left half written, or nobody will. Failing that, appenders still start the next
    // message on a line of its own.
    if let Some(note) = locked.dotlock.as_ref().and_then(|l| l.inherited()) {
        let _ = super::mbox::repair_interrupted(&locked.file, note);
    }
    Ok(locked)
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

    /// The pid of a process that has exited and been reaped.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    fn age(path: &Path, by: Duration) {
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(SystemTime::now() - by)
            .unwrap();
    }

    #[test]
    fn a_dead_holder_is_gone_at_once_a_live_one_waits_and_no_pid_goes_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("erin");
        let lock_file = dotlock_path(&mbox);
        fs::write(&mbox, b"").unwrap();
        let policy = quick();

        // A fresh lock whose holder has exited: removed at once.
        fs::write(&lock_file, format!("{}\n", dead_pid())).unwrap();
        let held = lock(&mbox, &policy, || open_existing(&mbox)).expect("dead holder");
        let pid = fs::read_to_string(&lock_file).unwrap();
        assert_eq!(
            pid.lines().next(),
            Some(std::process::id().to_string().as_str())
        );
        drop(held);

        // A holder that is alive is respected...
        let mut live = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        fs::write(&lock_file, format!("{}\n", live.id())).unwrap();
        let err = lock(&mbox, &policy, || open_existing(&mbox)).unwrap_err();
        assert!(err.to_string().contains("locked"), "{err}");
        assert_eq!(
            fs::read_to_string(&lock_file).unwrap(),
            format!("{}\n", live.id())
        );
        // ... until the lock is older than stale_lock_time, as with Postfix (the pid may
        // have been reused by an unrelated process).
        age(&lock_file, Duration::from_secs(600));
        drop(lock(&mbox, &policy, || open_existing(&mbox)).expect("old lock"));
        live.kill().unwrap();
        live.wait().unwrap();

        // No pid (Postfix's own dot-locks are empty): by age alone.
        for content in ["", "garbage\n", "0\n", "-1\n"] {
            fs::write(&lock_file, content).unwrap();
            let err = lock(&mbox, &policy, || open_existing(&mbox)).unwrap_err();
            assert!(err.to_string().contains("locked"), "{content:?}: {err}");
            age(&lock_file, Duration::from_secs(499));
            assert!(lock(&mbox, &policy, || open_existing(&mbox)).is_err());
            age(&lock_file, Duration::from_secs(501));
            drop(lock(&mbox, &policy, || open_existing(&mbox)).expect("stale"));
            assert!(!lock_file.exists());
        }
    }

    #[test]
    fn a_dead_appenders_note_passes_on_and_its_torn_message_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("frank");
        let lock_file = dotlock_path(&mbox);
        let whole = b"From a Tue Nov 24 10:00:00 2026\nSubject: 1\n\nbody\n\n";
        let torn = [&whole[..], b"From b Tue Nov 24 10:00:00 2026\nSubj"].concat();
        let plant = |owner: Option<u32>| {
            fs::write(&mbox, &torn).unwrap();
            let meta = fs::metadata(&mbox).unwrap();
            let note = format!(
                "mailroom-append {} {} {}",
                whole.len(),
                meta.dev(),
                meta.ino()
            );
            fs::write(&lock_file, format!("{}\n{note}\n", dead_pid())).unwrap();
            if let Some(uid) = owner {
                std::os::unix::fs::chown(&lock_file, Some(uid), None).unwrap();
            }
            note
        };
        // The lock that replaces the dead one carries its note from the start.
        let note = plant(None);
        let held = dotlock(&mbox, Myself, STALE_AFTER, false, &mut || false)
            .unwrap()
            .unwrap();
        assert_eq!(held.inherited(), Some(note.as_str()));
        assert_eq!(
            fs::read_to_string(&lock_file).unwrap(),
            format!("{}\n{note}\n", std::process::id())
        );
        drop(held);
        // Readers lock the same way, and cut off what the dead appender left.
        plant(None);
        let held = lock(&mbox, &quick(), || open_existing(&mbox)).unwrap();
        assert_eq!(fs::read(&mbox).unwrap(), whole);
        drop(held);
        // A note in a lock made by some other user is not trusted.
        if nix::unistd::geteuid().is_root() {
            plant(Some(65534));
            drop(lock(&mbox, &quick(), || open_existing(&mbox)).unwrap());
            assert_eq!(fs::read(&mbox).unwrap(), torn);
        }
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
