//! Keeping the queue sound (`postsuper -s` and `-p`): directories present with their
//! modes, nothing in a queue directory but readable queue files named by their ID, and
//! no temporary files left by crashed writers.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{RenameFlags, renameat2};
use nix::unistd::{Gid, Uid};

use super::dirs::write_id_record;
use super::store::TEMP_PREFIX;
use super::{Queue, QueueDirs, QueueId, QueueName, make_dir, read_envelope_from};

/// Whether a structure walk repairs what it finds or only reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Repair,
    Inspect,
}

/// A temporary file untouched for this long is garbage whoever wrote it (Postfix's
/// `MAX_TEMP_AGE`).
pub const TEMP_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// A temporary file whose writer has exited is garbage once it has been idle this long;
/// the delay covers a writer in another PID namespace, which we cannot see.
pub const TEMP_ORPHAN_AGE: Duration = Duration::from_secs(60);

impl Queue {
    /// Checks and repairs the queue's structure. Each repair is described through
    /// `report`; returns how many there were. Files another process holds locked are
    /// being delivered and are left alone.
    pub fn check_structure(&self, report: &mut dyn FnMut(String)) -> io::Result<u64> {
        self.walk_structure(Mode::Repair, report)
    }

    /// The same check as [`check_structure`](Queue::check_structure), changing nothing
    /// (`mailroom check`): each problem that `postsuper -s` would repair is described
    /// through `report`; returns how many there were. Files are read without being
    /// locked, so a file the daemon is rewriting at that moment may be reported as
    /// corrupt once; a real repair locks and looks again.
    pub fn inspect_structure(&self, report: &mut dyn FnMut(String)) -> io::Result<u64> {
        self.walk_structure(Mode::Inspect, report)
    }

    fn walk_structure(&self, mode: Mode, report: &mut dyn FnMut(String)) -> io::Result<u64> {
        let repair = mode == Mode::Repair;
        let mut found = 0;
        let mut note = |text: String| {
            found += 1;
            report(text);
        };
        if repair {
            make_dir(self.root(), 0o755)?;
        } else if !self.root().is_dir() {
            note(format!("{}: missing directory", self.root().display()));
            return Ok(found);
        }
        self.check_directories(mode, &mut note)?;
        self.check_queue_files(mode, &mut note)?;
        Ok(found)
    }

    /// The queue directories and the PID directory: present, directories, with their
    /// owner (`mail_owner`; the PID directory stays root's), group and mode.
    fn check_directories(&self, mode: Mode, note: &mut dyn FnMut(String)) -> io::Result<()> {
        let queues = Owners {
            uid: self.owner_uid(),
            gid: self.group(),
        };
        let mut wanted: Vec<(std::path::PathBuf, u32, Owners)> = QueueName::ALL
            .into_iter()
            .map(|q| (self.dir(q), self.dir_mode(q), queues))
            .collect();
        wanted.push((self.pid_dir(), 0o755, Owners::default()));
        for (dir, want, owners) in wanted {
            check_directory(&dir, want, owners, mode, note)?;
        }
        Ok(())
    }

    /// Every entry of the mail queues: named by its ID, a regular file, readable, its ID
    /// record agreeing with its name. What fails is moved to `corrupt/` when repairing.
    fn check_queue_files(&self, mode: Mode, note: &mut dyn FnMut(String)) -> io::Result<()> {
        let repair = mode == Mode::Repair;
        let dirs = QueueDirs::open(self)?;
        let corrupt = match repair {
            true => Some(fs::File::open(self.dir(QueueName::Corrupt))?),
            false => None,
        };
        let mut buf = Vec::new();
        for queue in QueueName::MAIL {
            let entries = match fs::read_dir(self.dir(queue)) {
                Ok(entries) => entries,
                // Reported above as missing; there is nothing in it to look at.
                Err(e) if !repair && e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let from = fs::File::open(self.dir(queue))?;
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else {
                    let shown = name.to_string_lossy().into_owned();
                    match &corrupt {
                        Some(corrupt) => {
                            let to = move_aside(&from, name.as_os_str(), corrupt, "badname")?;
                            note(format!(
                                "{}/{shown}: not a queue file name; moved to corrupt/{to}",
                                queue.as_str()
                            ));
                        }
                        None => note(format!("{}/{shown}: not a queue file name", queue.as_str())),
                    }
                    continue;
                };
                if name.starts_with(TEMP_PREFIX) {
                    continue; // `-p`'s business: it may still be being written
                }
                let kind = entry.file_type()?;
                let id = QueueId::parse(name);
                let why = match id {
                    None => Some("not a queue file name".to_string()),
                    Some(_) if !kind.is_file() => Some("not a regular file".to_string()),
                    Some(id) if !repair => inspect_queue_file(&dirs, queue, id, &mut buf, note)?,
                    Some(id) => self.repair_queue_file(&dirs, queue, id, note)?,
                };
                if let Some(why) = why {
                    match &corrupt {
                        Some(corrupt) => {
                            let to = move_aside(&from, name, corrupt, name)?;
                            note(format!(
                                "{}/{name}: {why}; moved to corrupt/{to}",
                                queue.as_str()
                            ));
                        }
                        None => note(format!("{}/{name}: {why}", queue.as_str())),
                    }
                }
            }
            if repair {
                from.sync_all()?;
            }
        }
        if let Some(corrupt) = corrupt {
            corrupt.sync_all()?;
        }
        Ok(())
    }

    /// Checks one queue file under its lock, fixing its group sharing and ID record.
    /// Returns why it must be moved aside, if it must; a file being delivered (locked by
    /// another process) is left alone.
    fn repair_queue_file(
        &self,
        dirs: &QueueDirs,
        queue: QueueName,
        id: QueueId,
        note: &mut dyn FnMut(String),
    ) -> io::Result<Option<String>> {
        Ok(match dirs.try_lock(queue, id) {
            // Replaced by something else since the directory was read.
            Err(e) if super::not_regular(&e).is_some() => Some(e.to_string()),
            Err(e) => return Err(e),
            Ok(None) => None, // being delivered, or gone meanwhile
            Ok(Some(mut locked)) => match read_envelope_from(&mut locked.file) {
                Ok(env)
                    if queue != QueueName::Maildrop
                        && (self.group().is_some() || self.owner_uid().is_some())
                        && !owned_as_wanted(&locked.file, self)? =>
                {
                    // Picked up before the group or mail_owner existed (an upgrade),
                    // or changed by hand: mailq could not read it.
                    self.give_to_owner(&locked.file);
                    note(format!(
                        "{}/{id}: fixed owner and mode to uid {}, group {}, {:04o}",
                        queue.as_str(),
                        self.owner(),
                        self.group().unwrap_or(0),
                        file_mode(self)
                    ));
                    if env.id != id {
                        write_id_record(&locked.file, id)?;
                        locked.file.sync_data()?;
                    }
                    None
                }
                Ok(env) if env.id != id => {
                    write_id_record(&locked.file, id)?;
                    locked.file.sync_data()?;
                    note(format!(
                        "{}/{id}: id record said {}; corrected",
                        queue.as_str(),
                        env.id
                    ));
                    None
                }
                Ok(_) => None,
                Err(super::ReadError::Missing | super::ReadError::NotRegular(_)) => None,
                Err(super::ReadError::Io(e)) => return Err(e),
                Err(super::ReadError::Corrupt(why)) => Some(format!("corrupt queue file ({why})")),
            },
        })
    }

    /// Removes temporary files left behind by crashed writers (`postsuper -p`): those
    /// idle for [`TEMP_MAX_AGE`], or idle for [`TEMP_ORPHAN_AGE`] when the process named
    /// in them (`.tmp.ID.PID`) no longer exists. Returns the paths removed, relative to
    /// the queue directory.
    pub fn purge_temp_files(&self) -> io::Result<Vec<String>> {
        let now = SystemTime::now();
        let mut removed = Vec::new();
        for queue in QueueName::ALL {
            let entries = match fs::read_dir(self.dir(queue)) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let Some(rest) = name.strip_prefix(TEMP_PREFIX) else {
                    continue;
                };
                let meta = match entry.metadata() {
                    Ok(m) if m.is_file() => m,
                    _ => continue,
                };
                let idle = meta
                    .modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .unwrap_or_default();
                let orphan = writer_is_gone(rest) && idle >= TEMP_ORPHAN_AGE;
                if idle >= TEMP_MAX_AGE || orphan {
                    match fs::remove_file(entry.path()) {
                        Ok(()) => removed.push(format!("{}/{name}", queue.as_str())),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(removed)
    }
}

impl Queue {
    /// Moves the entry `from/id`, whatever it is (a FIFO, a symbolic link, a directory:
    /// the entry itself, never what it points to), into `corrupt/` without replacing
    /// anything there. Returns the name it got there (`id`, or `id.N` when taken). Both
    /// directories are synced.
    pub fn move_entry_to_corrupt(&self, from: QueueName, id: QueueId) -> io::Result<String> {
        if !self.dir(QueueName::Corrupt).is_dir() {
            self.ensure_dirs()?;
        }
        let from_dir = fs::File::open(self.dir(from))?;
        let corrupt = fs::File::open(self.dir(QueueName::Corrupt))?;
        let name = move_aside(&from_dir, id.as_str(), &corrupt, id.as_str())?;
        corrupt.sync_all()?;
        from_dir.sync_all()?;
        Ok(name)
    }
}

/// True when the PID at the end of a temporary name (`ID.PID`) names no process.
fn writer_is_gone(rest: &str) -> bool {
    let Some(pid) = rest.rsplit('.').next().and_then(|p| p.parse::<i32>().ok()) else {
        return true; // not a name we write: nobody is writing it
    };
    if pid <= 0 {
        return true;
    }
    matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(Errno::ESRCH)
    )
}

/// Who a directory should belong to; `None` leaves that id unchecked.
#[derive(Debug, Clone, Copy, Default)]
struct Owners {
    uid: Option<u32>,
    gid: Option<u32>,
}

/// One directory of the queue: present and a directory, of `owners` and mode `want`.
fn check_directory(
    dir: &Path,
    want: u32,
    owners: Owners,
    mode: Mode,
    note: &mut dyn FnMut(String),
) -> io::Result<()> {
    let repair = mode == Mode::Repair;
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => check_existing_directory(dir, &meta, want, owners, mode, note),
        Ok(_) if repair => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} is not a directory", dir.display()),
        )),
        Ok(_) => {
            note(format!("{}: not a directory", dir.display()));
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if repair {
                make_dir(dir, want)?;
                if owners.uid.is_some() || owners.gid.is_some() {
                    nix::unistd::chown(
                        dir,
                        owners.uid.map(Uid::from_raw),
                        owners.gid.map(Gid::from_raw),
                    )?;
                }
                note(format!("{}: created missing directory", dir.display()));
            } else {
                note(format!("{}: missing directory", dir.display()));
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// An existing queue directory's owner, group and mode: each wrong one noted, and fixed
/// when repairing (owner and group before the mode: chown may clear set-id bits).
fn check_existing_directory(
    dir: &Path,
    meta: &fs::Metadata,
    want: u32,
    owners: Owners,
    mode: Mode,
    note: &mut dyn FnMut(String),
) -> io::Result<()> {
    let repair = mode == Mode::Repair;
    let mut check = |what: &str, have: u32, should: u32, fix: &dyn Fn() -> io::Result<()>| {
        if have == should {
            return Ok(());
        }
        let (have, should) = match what {
            "mode" => (format!("{have:04o}"), format!("{should:04o}")),
            _ => (have.to_string(), should.to_string()),
        };
        if repair {
            fix()?;
            note(format!(
                "{}: fixed {what} {have} to {should}",
                dir.display()
            ));
        } else {
            note(format!(
                "{}: {what} {have}, should be {should}",
                dir.display()
            ));
        }
        io::Result::Ok(())
    };
    if let Some(uid) = owners.uid {
        check("owner", meta.uid(), uid, &|| {
            Ok(nix::unistd::chown(dir, Some(Uid::from_raw(uid)), None)?)
        })?;
    }
    if let Some(gid) = owners.gid {
        check("group", meta.gid(), gid, &|| {
            Ok(nix::unistd::chown(dir, None, Some(Gid::from_raw(gid)))?)
        })?;
    }
    check("mode", meta.permissions().mode() & 0o7777, want, &|| {
        fs::set_permissions(dir, fs::Permissions::from_mode(want))
    })
}

/// Reads one queue file without locking it; returns why `postsuper -s` would move it
/// aside, if it would. A wrong ID record is only noted (a repair rewrites it).
fn inspect_queue_file(
    dirs: &QueueDirs,
    queue: QueueName,
    id: QueueId,
    buf: &mut Vec<u8>,
    note: &mut dyn FnMut(String),
) -> io::Result<Option<String>> {
    Ok(match dirs.read_envelope(queue, id, buf) {
        Ok(env) if env.id != id => {
            note(format!(
                "{}/{id}: id record says {}",
                queue.as_str(),
                env.id
            ));
            None
        }
        Ok(_) | Err(super::ReadError::Missing) => None,
        Err(super::ReadError::Io(e)) => return Err(e),
        Err(e @ super::ReadError::NotRegular(_)) => Some(e.to_string()),
        Err(super::ReadError::Corrupt(why)) => Some(format!("corrupt queue file ({why})")),
    })
}

/// Renames `name` from `from` into `corrupt/` without replacing anything there; returns
/// the name it got (`wanted`, or `wanted.N` when taken).
fn move_aside(
    from: &fs::File,
    name: &(impl nix::NixPath + ?Sized),
    corrupt: &fs::File,
    wanted: &str,
) -> io::Result<String> {
    let safe: String = wanted
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = if safe.starts_with('.') {
        format!("_{safe}")
    } else {
        safe
    };
    for n in 0u32.. {
        let to = if n == 0 {
            safe.clone()
        } else {
            format!("{safe}.{n}")
        };
        match renameat2(
            from,
            name,
            corrupt,
            Path::new(&to),
            RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => return Ok(to),
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other("no free name in corrupt/"))
}

/// The mode of a queue file outside `maildrop/`: readable by the group when there is one.
fn file_mode(queue: &Queue) -> u32 {
    match queue.group() {
        Some(_) => super::FILE_MODE_GROUP,
        None => 0o600,
    }
}

/// Whether a queue file outside `maildrop/` is `mail_owner`'s (root's when unknown), of
/// the queue's group, with [`file_mode`].
fn owned_as_wanted(file: &fs::File, queue: &Queue) -> io::Result<bool> {
    let meta = file.metadata()?;
    Ok(meta.uid() == queue.owner()
        && queue.group().is_none_or(|gid| meta.gid() == gid)
        && meta.mode() & 0o7777 == file_mode(queue))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repair_gives_the_directories_and_files_to_the_set_gid_group() {
        if !nix::unistd::geteuid().is_root() {
            return; // chown needs root
        }
        const GID: u32 = 47_313;
        let tmp = tempfile::tempdir().unwrap();
        let queue = Queue::new(tmp.path().join("q"));
        queue.ensure_dirs().unwrap();
        let id = {
            let mut env = crate::queue::Envelope::new(QueueId::generate(), 0, 0, "s@x");
            env.recipients
                .push(crate::queue::Recipient::new("r", "r@x"));
            let mut f =
                crate::queue::NewQueueFile::create(&queue.dir(QueueName::Hold), env).unwrap();
            std::io::Write::write_all(&mut f, b"Subject: x\n\nbody\n").unwrap();
            f.commit().unwrap()
        };
        let queue = queue.with_group(Some(GID));
        let mut seen = Vec::new();
        queue.check_structure(&mut |t| seen.push(t)).unwrap();
        for name in QueueName::ALL {
            let meta = fs::metadata(queue.dir(name)).unwrap();
            let want = if name == QueueName::Maildrop {
                0o1730
            } else {
                0o750
            };
            assert_eq!((meta.gid(), meta.mode() & 0o7777), (GID, want), "{name:?}");
        }
        let meta = fs::metadata(queue.path(QueueName::Hold, id)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (0, GID, 0o640)
        );
        assert!(seen.iter().any(|t| t.contains("fixed group")), "{seen:?}");
        // Twice changes nothing.
        let mut again = Vec::new();
        assert_eq!(
            queue.check_structure(&mut |t| again.push(t)).unwrap(),
            0,
            "{again:?}"
        );
        // An upgrade that introduces mail_owner: postsuper -s gives it the queue
        // directories (not pid/) and the files outside maildrop/.
        const UID: u32 = 47_314;
        let queue = queue.with_owner(Some(UID));
        let mut seen = Vec::new();
        queue.check_structure(&mut |t| seen.push(t)).unwrap();
        for name in QueueName::ALL {
            assert_eq!(
                fs::metadata(queue.dir(name)).unwrap().uid(),
                UID,
                "{name:?}"
            );
        }
        assert_eq!(fs::metadata(queue.pid_dir()).unwrap().uid(), 0);
        let meta = fs::metadata(queue.path(QueueName::Hold, id)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (UID, GID, 0o640)
        );
        assert!(seen.iter().any(|t| t.contains("fixed owner")), "{seen:?}");
        let mut again = Vec::new();
        assert_eq!(
            queue.check_structure(&mut |t| again.push(t)).unwrap(),
            0,
            "{again:?}"
        );
    }

    #[test]
    fn inspection_reports_what_repair_fixes_and_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let queue = Queue::new(tmp.path().join("q"));
        let mut seen = Vec::new();
        assert_eq!(queue.inspect_structure(&mut |t| seen.push(t)).unwrap(), 1);
        assert!(seen[0].ends_with("q: missing directory"), "{seen:?}");
        assert!(!queue.root().exists());

        queue.ensure_dirs().unwrap();
        fs::set_permissions(
            queue.dir(QueueName::Deferred),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        fs::remove_dir(queue.dir(QueueName::Hold)).unwrap();
        fs::write(queue.dir(QueueName::Active).join("junk"), b"x").unwrap();
        let id = QueueId::generate();
        fs::write(queue.path(QueueName::Deferred, id), b"not a queue file").unwrap();
        let mut seen = Vec::new();
        let found = queue.inspect_structure(&mut |t| seen.push(t)).unwrap();
        assert_eq!(found, 4, "{seen:?}");
        assert!(
            seen.iter()
                .any(|t| t.ends_with("deferred: mode 0755, should be 0700"))
        );
        assert!(seen.iter().any(|t| t.ends_with("hold: missing directory")));
        assert!(seen.contains(&"active/junk: not a queue file name".to_string()));
        assert!(
            seen.iter()
                .any(|t| t.starts_with(&format!("deferred/{id}: corrupt")))
        );
        // Nothing was touched.
        assert!(queue.dir(QueueName::Active).join("junk").exists());
        assert!(!queue.dir(QueueName::Hold).exists());

        let mut fixed = Vec::new();
        assert_eq!(queue.check_structure(&mut |t| fixed.push(t)).unwrap(), 4);
        assert_eq!(queue.inspect_structure(&mut |_| {}).unwrap(), 0);
    }
}
