//! The on-disk queue: the only module that knows the queue's directories, file names and
//! IDs. Everything that looks at or changes queued mail goes through here.
//!
//! ```text
//! $queue_directory/
//!     maildrop/   new submissions from sendmail (1730: writable by the submission group,
//!                 not listable by it)
//!     incoming/   picked up, being checked by the daemon
//!     active/     being delivered
//!     deferred/   waiting for another attempt
//!     hold/       held by the administrator (postsuper -h)
//!     corrupt/    files that failed to parse, kept for inspection
//!     pid/        the daemon's lock and pid file
//! ```
//!
//! A file's name is its queue ID; its format is in [`envelope`] and
//! `man/mailroom-queue.5`.

pub mod check;
pub mod dirs;
pub mod envelope;
pub mod id;
mod rewrite;
pub mod store;

use std::fs::{self, DirBuilder, File, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use nix::errno::Errno;
use nix::fcntl::{RenameFlags, renameat2};

pub use dirs::QueueDirs;
pub use envelope::{Envelope, EnvelopeView, RcptState, Recipient};
pub use id::QueueId;
pub use store::NewQueueFile;

/// The queues a message can sit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QueueName {
    Maildrop,
    Incoming,
    Active,
    Deferred,
    Hold,
    Corrupt,
}

impl QueueName {
    /// Every queue that holds mail waiting for delivery, in the order `mailq` reports
    /// ties. `corrupt` is not among them: its files are not mail we can read.
    pub const MAIL: [QueueName; 5] = [
        QueueName::Maildrop,
        QueueName::Incoming,
        QueueName::Active,
        QueueName::Deferred,
        QueueName::Hold,
    ];

    pub const ALL: [QueueName; 6] = [
        QueueName::Maildrop,
        QueueName::Incoming,
        QueueName::Active,
        QueueName::Deferred,
        QueueName::Hold,
        QueueName::Corrupt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QueueName::Maildrop => "maildrop",
            QueueName::Incoming => "incoming",
            QueueName::Active => "active",
            QueueName::Deferred => "deferred",
            QueueName::Hold => "hold",
            QueueName::Corrupt => "corrupt",
        }
    }

    pub fn parse(name: &str) -> Option<QueueName> {
        QueueName::ALL.into_iter().find(|q| q.as_str() == name)
    }

    /// The directory mode: maildrop takes submissions from the setgid group (write and
    /// search, no listing, sticky so nobody removes another's file); the rest can be read
    /// by that group (`mailq`), or by root alone when there is no such group.
    fn mode(self, group: Option<u32>) -> u32 {
        match (self, group) {
            (QueueName::Maildrop, _) => 0o1730,
            (_, Some(_)) => 0o750,
            (_, None) => 0o700,
        }
    }
}

/// Why a queue file could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The file is gone (delivered, deleted or moved meanwhile): not an error for a listing.
    Missing,
    /// The name is there but is not a regular file (a FIFO, a symbolic link, a
    /// directory...): what it is.
    NotRegular(&'static str),
    /// The file exists but is not a valid queue file.
    Corrupt(String),
    Io(io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Missing => f.write_str("no such file"),
            ReadError::NotRegular(what) => write!(f, "not a regular file ({what})"),
            ReadError::Corrupt(why) => f.write_str(why),
            ReadError::Io(e) => f.write_str(&crate::sysexits::describe_io(e)),
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> ReadError {
        match not_regular(&e) {
            Some(what) => ReadError::NotRegular(what),
            None if e.kind() == io::ErrorKind::NotFound => ReadError::Missing,
            None => ReadError::Io(e),
        }
    }
}

/// The error [`open_regular`] gives for a name that is not a regular file; it travels
/// inside an `io::Error` (see [`not_regular`]).
#[derive(Debug)]
pub struct NotRegular(pub &'static str);

impl std::fmt::Display for NotRegular {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not a regular file ({})", self.0)
    }
}

impl std::error::Error for NotRegular {}

/// What the entry is, when `e` says a queue file name is not a regular file.
pub fn not_regular(e: &io::Error) -> Option<&'static str> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<NotRegular>())
        .map(|n| n.0)
}

/// What a file of this `st_mode` is, when it is not a regular file.
pub(crate) fn not_regular_kind(mode: libc::mode_t) -> Option<&'static str> {
    use nix::sys::stat::SFlag;
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => None,
        SFlag::S_IFIFO => Some("a FIFO"),
        SFlag::S_IFLNK => Some("a symbolic link"),
        SFlag::S_IFDIR => Some("a directory"),
        SFlag::S_IFSOCK => Some("a socket"),
        SFlag::S_IFCHR => Some("a character device"),
        SFlag::S_IFBLK => Some("a block device"),
        _ => Some("of an unknown type"),
    }
}

/// Opens the queue file `name` (relative to the directory `dir`, or a path with
/// `nix::fcntl::AT_FDCWD`) with `access`, and only if it is a regular file. A FIFO in a
/// queue directory must not block the thread that opens it (`O_NONBLOCK`: the open of a
/// FIFO returns at once, and means nothing for a regular file), a symbolic link must not
/// lead a root-run program into someone else's file (`O_NOFOLLOW`), and what was opened
/// is checked with `fstat`, so nothing but a regular file is ever read or locked. Other
/// entries give an error for which [`not_regular`] says what they are.
pub fn open_regular<P: ?Sized + nix::NixPath>(
    dir: impl std::os::fd::AsFd,
    name: &P,
    access: nix::fcntl::OFlag,
) -> io::Result<File> {
    use nix::fcntl::OFlag;
    use nix::sys::stat::{Mode, fstat, fstatat};
    let dir = dir.as_fd();
    let flags = access | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
    let refuse = |what| io::Error::new(io::ErrorKind::InvalidInput, NotRegular(what));
    let fd = match nix::fcntl::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        // A symbolic link (O_NOFOLLOW), a directory opened for writing, a socket: say
        // what the name is, unless it changed into a regular file meanwhile.
        Err(e @ (Errno::ELOOP | Errno::EISDIR | Errno::ENXIO | Errno::ENODEV)) => {
            return match fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => match not_regular_kind(st.st_mode) {
                    Some(what) => Err(refuse(what)),
                    None => Err(e.into()),
                },
                Err(_) => Err(e.into()),
            };
        }
        Err(e) => return Err(e.into()),
    };
    let st = fstat(&fd)?;
    match not_regular_kind(st.st_mode) {
        None => Ok(File::from(fd)),
        Some(what) => Err(refuse(what)),
    }
}

/// A queue file opened and locked exclusively; the lock goes with the value.
pub struct LockedFile {
    pub file: File,
    pub queue: QueueName,
    pub id: QueueId,
}

impl Drop for LockedFile {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// The queue rooted at `queue_directory`.
#[derive(Debug, Clone)]
pub struct Queue {
    root: PathBuf,
    /// The gid of `setgid_group`, when that group exists: the group of the queue
    /// directories and (outside `maildrop/`) of the queue files.
    group: Lookup,
    /// The uid of `mail_owner`, when known: the owner of the queue directories and
    /// (outside `maildrop/`) of the queue files. Only looked up by root, the only one who
    /// can give files away; `None` leaves them root's.
    owner: Lookup,
}

/// An id from the user database, asked for the first time it is needed: a submission
/// needs neither the group nor the owner (the queue exists, and its new file stays the
/// submitter's until pickup), and each question costs an NSS lookup (a sixth of
/// `sendmail`'s own instructions for the two).
#[derive(Clone)]
struct Lookup(
    Arc<OnceLock<Option<u32>>>,
    Option<Arc<dyn Fn() -> Option<u32> + Send + Sync>>,
);

impl Lookup {
    fn known(id: Option<u32>) -> Lookup {
        Lookup(Arc::new(OnceLock::from(id)), None)
    }

    fn later(ask: impl Fn() -> Option<u32> + Send + Sync + 'static) -> Lookup {
        Lookup(Arc::new(OnceLock::new()), Some(Arc::new(ask)))
    }

    fn get(&self) -> Option<u32> {
        *self.0.get_or_init(|| self.1.as_ref().and_then(|ask| ask()))
    }
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.get() {
            Some(id) => write!(f, "{id:?}"),
            None => f.write_str("(not asked yet)"),
        }
    }
}

/// The mode of a queue file outside `maildrop/` when the queue has a group: readable by
/// it, for `mailq`.
pub const FILE_MODE_GROUP: u32 = 0o640;

impl Queue {
    /// The queue at `root`, owned by root alone (no `setgid_group`).
    pub fn new(root: impl Into<PathBuf>) -> Queue {
        Queue {
            root: root.into(),
            group: Lookup::known(None),
            owner: Lookup::known(None),
        }
    }

    /// The queue `config` names, with the gid of its `setgid_group` if that group exists.
    /// Both ids are looked up now, while the process can still read the user database
    /// (before a chroot or a change of user).
    pub fn from_config(config: &crate::config::Config) -> crate::sysexits::Result<Queue> {
        let queue = Queue::from_config_lazily(config)?;
        queue.group();
        queue.owner_uid();
        Ok(queue)
    }

    /// Like [`from_config`](Self::from_config), but the ids are looked up only when first
    /// needed: for `sendmail`'s submission, which needs neither (see [`Lookup`]). Not for
    /// a process that will chroot or change user while it holds the queue.
    pub fn from_config_lazily(config: &crate::config::Config) -> crate::sysexits::Result<Queue> {
        let name = config.get("setgid_group")?;
        let group = match name.is_empty() {
            true => Lookup::known(None),
            false => Lookup::later(move || {
                nix::unistd::Group::from_name(&name)
                    .ok()
                    .flatten()
                    .map(|g| g.gid.as_raw())
            }),
        };
        // Only root can give a file away, so only root asks who mail_owner is.
        let owner = if nix::unistd::geteuid().is_root() {
            let name = config.get("mail_owner")?;
            Lookup::later(move || {
                crate::privilege::MailOwner::lookup(&name)
                    .ok()
                    .map(|owner| owner.uid)
            })
        } else {
            Lookup::known(None)
        };
        let mut queue = Queue::new(config.queue_directory()?);
        queue.group = group;
        queue.owner = owner;
        Ok(queue)
    }

    /// The same queue with `owner` (the uid of `mail_owner`) as its owner.
    pub fn with_owner(mut self, owner: Option<u32>) -> Queue {
        self.owner = Lookup::known(owner);
        self
    }

    /// The first of `among` that has an entry named `id` (of whatever kind: callers that
    /// act on it open it through [`Queue::try_lock`], which refuses what is not a file).
    pub fn find(&self, id: QueueId, among: &[QueueName]) -> Option<QueueName> {
        among
            .iter()
            .copied()
            .find(|&q| self.path(q, id).symlink_metadata().is_ok())
    }

    /// The uid of `mail_owner`, when known.
    pub fn owner_uid(&self) -> Option<u32> {
        self.owner.get()
    }

    /// The uid that owns the queue's directories and files: `mail_owner`'s, else root's.
    pub fn owner(&self) -> u32 {
        self.owner.get().unwrap_or(0)
    }

    /// The same queue with `group` as its set-gid group.
    pub fn with_group(mut self, group: Option<u32>) -> Queue {
        self.group = Lookup::known(group);
        self
    }

    /// The set-gid group's gid, if the queue has one.
    pub fn group(&self) -> Option<u32> {
        self.group.get()
    }

    /// The mode a queue directory should have.
    pub fn dir_mode(&self, queue: QueueName) -> u32 {
        queue.mode(self.group())
    }

    /// Gives a queue file that has left `maildrop/` (and so its submitter's ownership)
    /// to `mail_owner` (root when unknown) and the queue's group, mode 0640, so that
    /// `mailq` can read its envelope (0600 without a group). Does nothing when the queue
    /// has neither; best effort when not run as root.
    pub fn give_to_owner(&self, file: &File) {
        use std::os::fd::AsFd;
        if self.group().is_none() && self.owner_uid().is_none() {
            return;
        }
        let _ = nix::unistd::fchown(
            file.as_fd(),
            Some(nix::unistd::Uid::from_raw(self.owner())),
            self.group().map(nix::unistd::Gid::from_raw),
        );
        let mode = match self.group() {
            Some(_) => FILE_MODE_GROUP,
            None => 0o600,
        };
        let _ = file.set_permissions(fs::Permissions::from_mode(mode));
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dir(&self, queue: QueueName) -> PathBuf {
        self.root.join(queue.as_str())
    }

    pub fn path(&self, queue: QueueName, id: QueueId) -> PathBuf {
        self.dir(queue).join(id.as_str())
    }

    /// The directory of the daemon's lock and pid files.
    pub fn pid_dir(&self) -> PathBuf {
        self.root.join("pid")
    }

    /// Creates whatever directories are missing, with their modes. Existing directories
    /// are left alone (`postsuper -s` repairs modes). Fails only when a directory is
    /// missing and cannot be made.
    pub fn ensure_dirs(&self) -> io::Result<()> {
        make_dir(&self.root, 0o755)?;
        for queue in QueueName::ALL {
            self.make_queue_dir(queue)?;
        }
        make_dir(&self.pid_dir(), 0o755)
    }

    /// Gives the queue directories that are not `mail_owner`'s to it (and the queue's
    /// group), as `postsuper -s` would: a queue made before `mail_owner` existed, or
    /// before it changed. Returns what was changed, one line each. Nothing to do when
    /// the owner is not known (not root, or no such account).
    pub fn give_dirs_to_owner(&self) -> io::Result<Vec<String>> {
        use std::os::unix::fs::MetadataExt;
        let Some(owner) = self.owner_uid() else {
            return Ok(Vec::new());
        };
        let mut changed = Vec::new();
        for queue in QueueName::ALL {
            let dir = self.dir(queue);
            let meta = fs::symlink_metadata(&dir)?;
            if !meta.is_dir() || meta.uid() == owner {
                continue;
            }
            nix::unistd::chown(
                &dir,
                Some(nix::unistd::Uid::from_raw(owner)),
                self.group().map(nix::unistd::Gid::from_raw),
            )?;
            // chown may clear the set-id bits; maildrop/'s sticky bit stays, but be sure.
            fs::set_permissions(&dir, fs::Permissions::from_mode(self.dir_mode(queue)))?;
            changed.push(format!(
                "{}: fixed owner {} to {owner}",
                dir.display(),
                meta.uid()
            ));
        }
        Ok(changed)
    }

    /// Creates one queue directory if missing, with its mode and (when the queue has one)
    /// owned by root and its group.
    fn make_queue_dir(&self, queue: QueueName) -> io::Result<()> {
        let dir = self.dir(queue);
        if dir.is_dir() {
            return Ok(());
        }
        make_dir(&dir, self.dir_mode(queue))?;
        if self.group().is_some() || self.owner_uid().is_some() {
            // chown clears no bits of a directory, but a failed one (not root) leaves the
            // group's and mail_owner's access out, never in.
            let _ = nix::unistd::chown(
                &dir,
                self.owner_uid().map(nix::unistd::Uid::from_raw),
                self.group().map(nix::unistd::Gid::from_raw),
            );
        }
        Ok(())
    }

    /// The directory a submission goes into, created if needed.
    pub fn maildrop(&self) -> io::Result<PathBuf> {
        let dir = self.dir(QueueName::Maildrop);
        if !dir.is_dir() {
            self.ensure_dirs()?;
        }
        Ok(dir)
    }

    /// IDs of the files in one queue, in directory order. Temporary files and anything
    /// else that is not a queue ID are skipped. A missing directory is an empty queue.
    pub fn ids(&self, queue: QueueName) -> io::Result<Vec<QueueId>> {
        let mut ids = Vec::new();
        self.each_id(queue, |id| ids.push(id))?;
        Ok(ids)
    }

    /// Calls `found` with each queue ID in one queue, in directory order (see [`ids`]).
    ///
    /// [`ids`]: Queue::ids
    fn each_id(&self, queue: QueueName, mut found: impl FnMut(QueueId)) -> io::Result<()> {
        let entries = match fs::read_dir(self.dir(queue)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            if let Some(id) = entry?.file_name().to_str().and_then(QueueId::parse) {
                found(id);
            }
        }
        Ok(())
    }

    /// A guess at how many names `queues` hold, from their directories' sizes, to
    /// reserve the listing once: growing it by doubling left its smaller copies (up to
    /// 64 KB each, below glibc's mmap threshold) in the heap, in `mailq`'s peak RSS at
    /// 50,000 messages. A queue ID's entry takes about 20 bytes in ext4, btrfs and
    /// tmpfs alike. Directories do not shrink, so the guess may be far above the count,
    /// which costs nothing: a large list is mapped, and only the pages filled in become
    /// resident. A guess below the count just lets the list grow as before. At most a
    /// million (8 MB of address space).
    fn entries_guess(&self, queues: &[QueueName]) -> usize {
        queues
            .iter()
            .filter_map(|&q| fs::metadata(self.dir(q)).ok())
            .map(|m| (m.len() / 20) as usize)
            .sum::<usize>()
            .min(1 << 20)
    }

    /// Every message in the given queues, oldest first, packed eight bytes a message
    /// ([`Listing`]): what a listing of a huge queue holds while it sorts. The names are
    /// read straight into the one list, with no list per directory.
    pub fn listing(&self, queues: &[QueueName]) -> io::Result<Listing> {
        let mut packed = Vec::with_capacity(self.entries_guess(queues));
        for &queue in queues {
            match self.each_id(queue, |id| packed.push(Listing::pack(id, queue))) {
                // The set-gid group may write maildrop/ but not list it (mode 1730), so
                // an ordinary user's mailq sees mail from the moment the daemon picks it
                // up (within a second while it runs).
                Err(e)
                    if queue == QueueName::Maildrop
                        && e.kind() == io::ErrorKind::PermissionDenied => {}
                done => done?,
            }
        }
        packed.sort_unstable();
        Ok(Listing(packed))
    }

    /// Every message in the given queues, oldest first (IDs sort by arrival): the
    /// [`listing`](Queue::listing), unpacked.
    pub fn list(&self, queues: &[QueueName]) -> io::Result<Vec<(QueueId, QueueName)>> {
        Ok(self
            .listing(queues)?
            .0
            .into_iter()
            .map(Listing::unpack)
            .collect())
    }

    /// Reads the envelope of one message, and never its body. A name that is not a
    /// regular file is `ReadError::NotRegular`, and is never opened for reading.
    pub fn read_envelope(&self, queue: QueueName, id: QueueId) -> Result<Envelope, ReadError> {
        let path = self.path(queue, id);
        let mut file = open_regular(nix::fcntl::AT_FDCWD, &path, nix::fcntl::OFlag::O_RDONLY)?;
        read_envelope_from(&mut file)
    }

    /// Opens a message and takes its exclusive lock without waiting. `Ok(None)` when
    /// another process holds it (the daemon delivering it) or it is gone. A name that is
    /// not a regular file is an error for which [`not_regular`] says what it is.
    pub fn try_lock(&self, queue: QueueName, id: QueueId) -> io::Result<Option<LockedFile>> {
        let path = self.path(queue, id);
        let access = nix::fcntl::OFlag::O_RDONLY;
        lock_at(nix::fcntl::AT_FDCWD, &path, access, queue, id)
    }

    /// Removes a locked message. Returns false if it had already gone.
    pub fn remove(&self, locked: &LockedFile) -> io::Result<bool> {
        unlink_at(nix::fcntl::AT_FDCWD, &self.path(locked.queue, locked.id))
    }

    /// Moves a locked message to another queue, keeping its ID unless a file of that name
    /// already sits there (only possible if the clock went back); then it gets a new one.
    /// Returns the ID it has in its new queue. Both directories are synced so the move
    /// survives a crash.
    pub fn move_to(&self, locked: &mut LockedFile, to: QueueName) -> io::Result<QueueId> {
        let from_dir = File::open(self.dir(locked.queue))?;
        let to_path = self.dir(to);
        if !to_path.is_dir() {
            self.ensure_dirs()?;
        }
        let to_dir = File::open(&to_path)?;
        let mut id = locked.id;
        loop {
            match renameat2(
                &from_dir,
                locked.id.as_str(),
                &to_dir,
                id.as_str(),
                RenameFlags::RENAME_NOREPLACE,
            ) {
                Ok(()) => break,
                Err(Errno::EEXIST) => id = QueueId::generate(),
                Err(e) => return Err(e.into()),
            }
        }
        to_dir.sync_all()?;
        from_dir.sync_all()?;
        locked.queue = to;
        locked.id = id;
        Ok(id)
    }
}

/// Queue IDs with their queues, oldest first, eight bytes each: the ID's number (60 bits,
/// see [`QueueId::value`]) above the queue's place in [`QueueName::ALL`] (3 bits), so
/// that the numbers sort as `(QueueId, QueueName)` pairs do.
pub struct Listing(Vec<u64>);

impl Listing {
    fn pack(id: QueueId, queue: QueueName) -> u64 {
        let place = QueueName::ALL.iter().position(|&q| q == queue).unwrap_or(0);
        (id.value() << 3) | place as u64
    }

    /// The entry an element of [`chunks`](Self::chunks) holds.
    pub fn unpack(packed: u64) -> (QueueId, QueueName) {
        let queue = QueueName::ALL
            .get((packed & 7) as usize)
            .copied()
            .unwrap_or(QueueName::Corrupt);
        (QueueId::from_value(packed >> 3), queue)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries in runs of `size`, in order; each element goes through [`unpack`](Self::unpack).
    pub fn chunks(&self, size: usize) -> std::slice::Chunks<'_, u64> {
        self.0.chunks(size)
    }
}

/// Reads and parses the envelope at the start of an open queue file.
pub fn read_envelope_from(file: &mut File) -> Result<Envelope, ReadError> {
    read_envelope_view(file, &mut Vec::new()).map(EnvelopeView::into_owned)
}

/// Reads the envelope at the start of an open queue file into `buf` (reused between
/// calls) and parses it where it lies, for a reader that only looks. When it cannot, and
/// the file is not a regular file (a listing opens names without checking first), says
/// what it is instead.
pub fn read_envelope_view<'b>(
    file: &mut File,
    buf: &'b mut Vec<u8>,
) -> Result<EnvelopeView<'b>, ReadError> {
    let read = envelope::read_envelope_into(file, buf).map_err(envelope_read_error);
    let parsed = read.and_then(|()| {
        EnvelopeView::parse_in_place(buf).map_err(|e| ReadError::Corrupt(e.to_string()))
    });
    if parsed.is_err()
        && let Some(what) = not_a_regular_file(file)
    {
        return Err(ReadError::NotRegular(what));
    }
    parsed
}

/// What `file` is when it is not a regular file.
fn not_a_regular_file(file: &File) -> Option<&'static str> {
    let st = nix::sys::stat::fstat(file).ok()?;
    not_regular_kind(st.st_mode)
}

/// A failed envelope read: a file that ends inside its envelope, or whose envelope is
/// not text, is corrupt; anything else is the system's error.
fn envelope_read_error(e: io::Error) -> ReadError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData => {
            ReadError::Corrupt(e.to_string())
        }
        _ => ReadError::Io(e),
    }
}

/// Opens the queue file `name` in `dir` ([`open_regular`]) and takes its exclusive lock
/// without waiting: what [`Queue::try_lock`] and [`QueueDirs::try_lock`] both do, one
/// by path, the other relative to an open directory. `Ok(None)` when the file is gone
/// or another process holds the lock.
fn lock_at<P: ?Sized + nix::NixPath>(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &P,
    access: nix::fcntl::OFlag,
    queue: QueueName,
    id: QueueId,
) -> io::Result<Option<LockedFile>> {
    let file = match open_regular(dir, name, access) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(None),
        Err(TryLockError::Error(e)) => return Err(e),
    }
    // Moved or removed between open and lock: only a lock on the file that still has
    // this name counts.
    let open = nix::sys::stat::fstat(&file)?;
    let named = match nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if open.st_dev != named.st_dev || open.st_ino != named.st_ino {
        return Ok(None);
    }
    Ok(Some(LockedFile { file, queue, id }))
}

/// Removes the queue file `name` in `dir`; false if it had already gone.
fn unlink_at<P: ?Sized + nix::NixPath>(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &P,
) -> io::Result<bool> {
    match nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
        Ok(()) => Ok(true),
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn make_dir(path: &Path, mode: u32) -> io::Result<()> {
    match DirBuilder::new().mode(mode).create(path) {
        // The umask may have stripped bits (the sticky and group-write bits of maildrop):
        // set the mode exactly.
        Ok(()) => fs::set_permissions(path, fs::Permissions::from_mode(mode)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn new_message(queue: &Queue, rcpts: &[&str], body: &[u8]) -> QueueId {
        let mut env = Envelope::new(
            QueueId::generate(),
            1_700_000_000_000_000,
            0,
            "root@example.com",
        );
        for r in rcpts {
            env.recipients.push(Recipient::new(r, r));
        }
        let mut file = NewQueueFile::create(&queue.maildrop().unwrap(), env).unwrap();
        file.write_all(b"Received: id ").unwrap();
        file.write_id().unwrap();
        file.write_all(b"\n\n").unwrap();
        file.write_all(body).unwrap();
        file.commit().unwrap()
    }

    #[test]
    fn the_daemon_gives_a_queue_made_before_mail_owner_to_it() {
        use std::os::unix::fs::MetadataExt;
        if !nix::unistd::geteuid().is_root() {
            return; // chown needs root
        }
        const UID: u32 = 47_315;
        let tmp = tempfile::tempdir().unwrap();
        let before = Queue::new(tmp.path().join("q"));
        before.ensure_dirs().unwrap();
        // Without a known owner there is nothing to give.
        assert!(before.give_dirs_to_owner().unwrap().is_empty());
        let queue = before.with_owner(Some(UID));
        let changed = queue.give_dirs_to_owner().unwrap();
        assert_eq!(changed.len(), QueueName::ALL.len(), "{changed:?}");
        for name in QueueName::ALL {
            let meta = fs::metadata(queue.dir(name)).unwrap();
            assert_eq!(
                (meta.uid(), meta.mode() & 0o7777),
                (UID, queue.dir_mode(name)),
                "{name:?}"
            );
        }
        assert_eq!(fs::metadata(queue.pid_dir()).unwrap().uid(), 0);
        assert!(queue.give_dirs_to_owner().unwrap().is_empty(), "twice");
    }

    #[test]
    fn directories_get_their_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let queue = Queue::new(tmp.path().join("q"));
        queue.ensure_dirs().unwrap();
        let mode = |q| fs::metadata(queue.dir(q)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(QueueName::Maildrop), 0o1730);
        assert_eq!(mode(QueueName::Deferred), 0o700);
        queue.ensure_dirs().unwrap();
    }

    #[test]
    fn write_then_list_and_read() {
        let tmp = tempfile::tempdir().unwrap();
        let queue = Queue::new(tmp.path());
        let a = new_message(&queue, &["alice@example.com"], b"hello\n");
        let b = new_message(&queue, &["bob@example.com", "carol@example.com"], b"x\n");
        let listed = queue.list(&QueueName::MAIL).unwrap();
        let packed = queue.listing(&QueueName::MAIL).unwrap();
        let unpacked: Vec<(QueueId, QueueName)> = packed
            .chunks(3)
            .flatten()
            .map(|&p| Listing::unpack(p))
            .collect();
        assert_eq!(
            unpacked,
            vec![(a, QueueName::Maildrop), (b, QueueName::Maildrop)],
            "the packed listing, read in chunks, is every message in order"
        );
        assert_eq!(
            listed,
            vec![(a, QueueName::Maildrop), (b, QueueName::Maildrop)]
        );
        let env = queue.read_envelope(QueueName::Maildrop, b).unwrap();
        assert_eq!(env.id, b);
        assert_eq!(env.recipients.len(), 2);
        let text = fs::read(queue.path(QueueName::Maildrop, b)).unwrap();
        let message = &text[env.message_offset as usize..];
        assert_eq!(message, format!("Received: id {b}\n\nx\n").as_bytes());
        assert_eq!(env.size, message.len() as u64);
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(queue.dir(QueueName::Maildrop))
            .unwrap()
            .collect();
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn a_dropped_writer_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let queue = Queue::new(tmp.path());
        let env = Envelope::new(QueueId::generate(), 0, 0, "");
        let mut file = NewQueueFile::create(&queue.maildrop().unwrap(), env).unwrap();
        file.write_all(b"partial").unwrap();
        drop(file);
        assert_eq!(
            fs::read_dir(queue.dir(QueueName::Maildrop))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn a_taken_name_gets_a_fresh_id_everywhere() {
        let tmp = tempfile::tempdir().unwrap();
        let queue = Queue::new(tmp.path());
        let dir = queue.maildrop().unwrap();
        let id = QueueId::generate();
        fs::write(dir.join(id.as_str()), b"someone else's").unwrap();
        let mut env = Envelope::new(id, 0, 0, "");
        env.recipients.push(Recipient::new("a", "a"));
        let mut file = NewQueueFile::create(&dir, env).unwrap();
        file.write_all(b"Received: id ").unwrap();
        file.write_id().unwrap();
        file.write_all(b"\n\nbody\n").unwrap();
        let got = file.commit().unwrap();
        assert_ne!(got, id);
        assert_eq!(fs::read(dir.join(id.as_str())).unwrap(), b"someone else's");
        let env = queue.read_envelope(QueueName::Maildrop, got).unwrap();
        assert_eq!(env.id, got);
        let text = fs::read_to_string(queue.path(QueueName::Maildrop, got)).unwrap();
        assert!(text.contains(&format!("Received: id {got}\n")));
    }

    #[test]
    fn locks_exclude_each_other_and_moves_keep_ids() {
        let tmp = tempfile::tempdir().unwrap();
        let queue = Queue::new(tmp.path());
        let id = new_message(&queue, &["a@b"], b"x\n");
        let mut locked = queue.try_lock(QueueName::Maildrop, id).unwrap().unwrap();
        assert!(queue.try_lock(QueueName::Maildrop, id).unwrap().is_none());
        assert_eq!(queue.move_to(&mut locked, QueueName::Hold).unwrap(), id);
        assert!(queue.read_envelope(QueueName::Hold, id).is_ok());
        assert!(matches!(
            queue.read_envelope(QueueName::Maildrop, id),
            Err(ReadError::Missing)
        ));
        assert!(queue.remove(&locked).unwrap());
        drop(locked);
        assert!(queue.try_lock(QueueName::Hold, id).unwrap().is_none());
    }

    #[test]
    fn garbage_files_are_corrupt_not_fatal() {
        let tmp = tempfile::tempdir().unwrap();
        let queue = Queue::new(tmp.path());
        queue.ensure_dirs().unwrap();
        let id = QueueId::generate();
        fs::write(queue.path(QueueName::Deferred, id), b"\x00\xffgarbage").unwrap();
        assert!(matches!(
            queue.read_envelope(QueueName::Deferred, id),
            Err(ReadError::Corrupt(_))
        ));
        fs::write(queue.path(QueueName::Deferred, id), b"").unwrap();
        assert!(matches!(
            queue.read_envelope(QueueName::Deferred, id),
            Err(ReadError::Corrupt(_))
        ));
    }
}
