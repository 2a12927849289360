//! Appending to an mbox file safely: the mailbox in the spool, a mailbox file in the home
//! directory, and `/file` targets all come through here.
//!
//! Safety rules, after Postfix's `mbox_open()` and `safe_open()`:
//! - the file is opened with `O_NOFOLLOW` and checked with `fstat` on the open descriptor
//!   (never `stat` on the name, which could be swapped between check and use): a symbolic
//!   link, anything but a regular file, a file with more than one hard link, and (for
//!   mailboxes) a file not owned by the recipient are refused;
//! - an existing file is opened with the recipient's rights, so what the recipient may not
//!   write cannot be written for them;
//! - a missing mailbox in a spool the users cannot write (`/var/mail` is `root:mail 2775`
//!   on Debian) is created with the spool's rights, `O_EXCL`, and then given to the user;
//! - both locks are held while writing (see `lock`); the message is written, flushed and
//!   `fsync`ed (one `fsync` for a run of messages to the same mailbox, see
//!   [`super::group_commit`]), and on any error the file is cut back to its old size so
//!   that no half message is left for a mail reader to choke on;
//! - a delivery killed mid-write (kill -9, a crash) cannot cut back, so before writing it
//!   notes in its dot-lock where the mailbox ended; the next delivery breaks the lock of
//!   the dead holder at once and cuts the torn message off
//!   ([`crate::mailbox::mbox::repair_interrupted`]). A mailbox that still does not end in
//!   a blank line (no dot-lock, someone else's writer) gets one before the new message,
//!   so that its `From ` line is never glued onto the text before it.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use super::format::Limited;
use super::lock::{dotlock, fcntl_lock};
use super::privileges::{Identity, as_identity};
use crate::deliver::Dsn;
use crate::mailbox::mbox::{append_note, repair_interrupted, separator};
use crate::sysexits::describe_io;

/// Where and how to append.
pub struct Target<'a> {
    pub path: &'a Path,
    /// The rights the file is opened and written with.
    pub user: &'a Identity,
    /// The rights a missing file and the dot-lock are created with (the spool's for the
    /// mailbox in `mail_spool_directory`, else the user's).
    pub creator: &'a Identity,
    /// Give a file made by `creator` to `user`.
    pub chown_new: bool,
    /// Refuse a file that does not belong to `user` (mailboxes; not `/file` targets).
    pub require_owner: bool,
    /// Go on without a dot-lock when its directory may not be written.
    pub dotlock_may_fail: bool,
    /// Refuse executable files (`/file` targets, as Postfix does).
    pub refuse_executable: bool,
    /// The largest the file may grow to, 0 for no limit.
    pub size_limit: u64,
    /// How long to wait for the locks.
    pub lock_wait: Duration,
    /// A dot-lock older than this is broken (`stale_lock_time`); one whose holder is
    /// gone is broken at once.
    pub stale_after: Duration,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The bytes of the message appended.
    pub bytes: u64,
    /// The bytes of a message torn by a delivery that died mid-write, cut off first.
    pub repaired: u64,
}

/// Why an append failed: the text after Postfix's `cannot update mailbox ... for user X.`
/// and the enhanced status code (4.x.x defers, 5.x.x bounces).
#[derive(Debug, Clone)]
pub struct AppendError {
    pub text: String,
    pub dsn: Dsn,
}

impl AppendError {
    fn new(text: impl Into<String>, dsn: Dsn) -> AppendError {
        AppendError {
            text: text.into(),
            dsn,
        }
    }

    fn io(what: &str, err: &io::Error, default: Dsn) -> AppendError {
        AppendError::new(
            format!("{what}: {}", describe_io(err)),
            dsn_for(err, default),
        )
    }
}

impl std::fmt::Display for AppendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for AppendError {}

/// Postfix's `mbox_dsn()`: errors that may pass are temporary, a file that outgrew its
/// limit is permanent, anything else takes the caller's default.
pub fn dsn_for(err: &io::Error, default: Dsn) -> Dsn {
    match err.raw_os_error() {
        Some(libc::EAGAIN) => Dsn::MAILBOX_BUSY,
        Some(libc::ENOSPC) => Dsn::TEMP_LOCAL,
        Some(libc::EDQUOT) => Dsn::OVER_QUOTA,
        Some(libc::EFBIG) => Dsn::MAILBOX_FULL,
        _ => default,
    }
}

/// Appends one message written by `write` to the target. Appends to one mailbox from
/// several delivery threads take turns and share the locks and one `fsync` (see
/// [`super::group_commit`]); this returns once the message is on disk.
pub fn append(
    target: &Target,
    write: impl FnOnce(&mut dyn Write) -> io::Result<u64>,
) -> Result<Appended, AppendError> {
    super::group_commit::append(target, write)
}

/// A mailbox open for appending under both locks, as a run of appends holds it.
pub(super) struct Held {
    file: File,
    /// Released (removed) when this is dropped, after the `fcntl` lock, which goes
    /// with `file`.
    _dotlock: Option<super::lock::DotLock>,
    readable: bool,
    /// The size before the run's first append: what a failed `fsync` cuts back to.
    start: u64,
    /// Bytes of a torn message cut off when the locks were taken.
    pub(super) repaired: u64,
}

/// Takes both locks on the target (waiting until `deadline`), checks the file, repairs
/// what a dead appender left, and notes in the dot-lock where the mailbox ends now.
pub(super) fn acquire(target: &Target, deadline: Instant) -> Result<Held, AppendError> {
    let dotlock = dotlock(
        target.path,
        target.creator,
        deadline,
        target.stale_after,
        target.dotlock_may_fail,
    )
    .map_err(|e| AppendError::io(&e.text, &e.error, Dsn::MAILBOX_BUSY))?;
    let (file, readable) = open(target)?;
    check(target, &file)?;
    fcntl_lock(&file, deadline)
        .map_err(|e| AppendError::io(&e.text, &e.error, Dsn::MAILBOX_BUSY))?;
    let inherited = dotlock.as_ref().and_then(|lock| lock.inherited());
    let repaired = match inherited {
        // Not cutting it off is no reason to defer: the message is still separated.
        Some(note) if readable => repair_interrupted(&file, note).unwrap_or(0),
        _ => 0,
    };
    let meta = file
        .metadata()
        .map_err(|e| AppendError::io("cannot stat file", &e, Dsn::TEMP_LOCAL))?;
    if let Some(lock) = &dotlock {
        // Without the note a kill leaves a torn message that the next delivery can
        // only separate, not remove: still no reason to defer this one. The note covers
        // the whole run: a kill in its middle cuts off every message of it, none of
        // which has been reported delivered.
        let _ = lock.note(&append_note(&meta));
    }
    Ok(Held {
        file,
        _dotlock: dotlock,
        readable,
        start: meta.len(),
        repaired,
    })
}

/// Writes one message at the end of the held mailbox, without syncing. On failure the
/// file is cut back to where this message began (earlier messages of the run stay).
pub(super) fn write_one(
    held: &Held,
    target: &Target,
    write: impl FnOnce(&mut dyn Write) -> io::Result<u64>,
) -> Result<u64, AppendError> {
    let file = &held.file;
    let old_size = file
        .metadata()
        .map_err(|e| AppendError::io("cannot stat file", &e, Dsn::TEMP_LOCAL))?
        .len();
    let separator: &[u8] = if held.readable {
        separator(file, old_size)
            .map_err(|e| AppendError::io("cannot read file", &e, Dsn::TEMP_LOCAL))?
    } else {
        b""
    };
    let room = match target.size_limit {
        0 => None,
        limit => Some(limit.saturating_sub(old_size)),
    };
    let mut out = BufWriter::with_capacity(64 * 1024, Limited { inner: file, room });
    let result = out
        .write_all(separator)
        .and_then(|()| write(&mut out))
        .and_then(|n| out.flush().map(|()| n));
    match result {
        Ok(bytes) => Ok(bytes),
        Err(err) => {
            // Throw away what is still buffered rather than let a drop flush it after
            // the truncation.
            let _ = out.into_parts();
            let _ = file.set_len(old_size);
            Err(AppendError::io(
                "error writing message",
                &err,
                Dsn::TEMP_LOCAL,
            ))
        }
    }
}

/// Makes the run's messages durable with one `fsync`; when that fails, cuts the file
/// back to where the run began, so that no message of it is left for a reader.
pub(super) fn finish(held: &Held) -> Result<(), AppendError> {
    match held.file.sync_data() {
        Ok(()) => Ok(()),
        Err(err) => {
            let _ = held.file.set_len(held.start);
            let _ = held.file.sync_data();
            Err(AppendError::io(
                "error writing message",
                &err,
                Dsn::TEMP_LOCAL,
            ))
        }
    }
}

/// Opens (or creates) the target for appending, and for reading when the rights allow
/// (a `/file` target may be writable only): returns the file and whether it can be read.
fn open(target: &Target) -> Result<(File, bool), AppendError> {
    let flags = libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK;
    // Two rounds: open, or create when missing; if someone else creates it in between,
    // open what they made (and check it like any other).
    for _ in 0..2 {
        let opened = as_identity(target.user, || {
            let open = |read: bool| {
                OpenOptions::new()
                    .read(read)
                    .append(true)
                    .custom_flags(flags)
                    .open(target.path)
            };
            match open(true) {
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    open(false).map(|file| (file, false))
                }
                opened => opened.map(|file| (file, true)),
            }
        })
        .map_err(|e| AppendError::io("cannot open file", &e, Dsn::TEMP_LOCAL))?;
        match opened {
            Ok(opened) => return Ok(opened),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(AppendError::new(
                    "file is a symbolic link",
                    Dsn::MAILBOX_UNUSABLE,
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(AppendError::io(
                    "cannot open file",
                    &e,
                    Dsn::MAILBOX_UNUSABLE,
                ));
            }
        }
        let created = as_identity(target.creator, || {
            OpenOptions::new()
                .read(true)
                .append(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(flags)
                .open(target.path)
        })
        .map_err(|e| AppendError::io("cannot create file", &e, Dsn::TEMP_LOCAL))?;
        match created {
            Ok(file) => {
                if target.chown_new && target.creator.uid != target.user.uid {
                    give_to_user(&file, target)?;
                }
                return Ok((file, true));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(AppendError::io(
                    "cannot create file",
                    &e,
                    Dsn::MAILBOX_UNUSABLE,
                ));
            }
        }
    }
    Err(AppendError::new(
        "file changed while being opened",
        Dsn::MAILBOX_BUSY,
    ))
}

/// Gives a new file to the user. The group stays the directory's when the directory is
/// set-group-ID (the spool's `mail` group, as on Debian), else becomes the user's.
fn give_to_user(file: &File, target: &Target) -> Result<(), AppendError> {
    let setgid_dir = target
        .path
        .parent()
        .and_then(|d| std::fs::metadata(d).ok())
        .is_some_and(|m| m.mode() & 0o2000 != 0);
    let gid = (!setgid_dir).then_some(target.user.gid);
    std::os::unix::fs::fchown(file, Some(target.user.uid), gid)
        .map_err(|e| AppendError::io("cannot set owner of new file", &e, Dsn::TEMP_LOCAL))
}

fn check(target: &Target, file: &File) -> Result<(), AppendError> {
    let meta = file
        .metadata()
        .map_err(|e| AppendError::io("cannot stat file", &e, Dsn::TEMP_LOCAL))?;
    if !meta.file_type().is_file() {
        return Err(AppendError::new(
            "file is not a regular file",
            Dsn::MAILBOX_UNUSABLE,
        ));
    }
    if meta.nlink() != 1 {
        return Err(AppendError::new(
            format!("file has {} hard links", meta.nlink()),
            Dsn::MAILBOX_UNUSABLE,
        ));
    }
    if target.require_owner && meta.uid() != target.user.uid {
        return Err(AppendError::new(
            "file has wrong owner",
            Dsn::MAILBOX_UNUSABLE,
        ));
    }
    if target.refuse_executable && meta.mode() & 0o111 != 0 {
        return Err(AppendError::new("file is executable", Dsn::NOT_AUTHORIZED));
    }
    Ok(())
}
