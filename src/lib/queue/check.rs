//! Keeping the queue sound (`postsuper -s` and `-p`): directories present with their
//! modes, nothing in a queue directory but readable queue files named by their ID, and
//! no temporary files left by crashed writers.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{RenameFlags, renameat2};

use super::dirs::write_id_record;
use super::store::TEMP_PREFIX;
use super::{Queue, QueueDirs, QueueId, QueueName, make_dir, read_envelope_from};

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
        let mut fixes = 0;
        let mut note = |text: String| {
            fixes += 1;
            report(text);
        };
        make_dir(self.root(), 0o755)?;
        let mut wanted: Vec<(std::path::PathBuf, u32)> = QueueName::ALL
            .into_iter()
            .map(|q| (self.dir(q), q.mode()))
            .collect();
        wanted.push((self.pid_dir(), 0o755));
        for (dir, mode) in wanted {
            match fs::symlink_metadata(&dir) {
                Ok(meta) if meta.is_dir() => {
                    let have = meta.permissions().mode() & 0o7777;
                    if have != mode {
                        fs::set_permissions(&dir, fs::Permissions::from_mode(mode))?;
                        note(format!(
                            "{}: fixed mode {have:04o} to {mode:04o}",
                            dir.display()
                        ));
                    }
                }
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} is not a directory", dir.display()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    make_dir(&dir, mode)?;
                    note(format!("{}: created missing directory", dir.display()));
                }
                Err(e) => return Err(e),
            }
        }
        let dirs = QueueDirs::open(self)?;
        let corrupt = fs::File::open(self.dir(QueueName::Corrupt))?;
        for queue in QueueName::MAIL {
            let from = fs::File::open(self.dir(queue))?;
            for entry in fs::read_dir(self.dir(queue))? {
                let entry = entry?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else {
                    let shown = name.to_string_lossy().into_owned();
                    let to = move_aside(&from, name.as_os_str(), &corrupt, "badname")?;
                    note(format!(
                        "{}/{shown}: not a queue file name; moved to corrupt/{to}",
                        queue.as_str()
                    ));
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
                    Some(id) => match dirs.try_lock(queue, id)? {
                        None => None, // being delivered, or gone meanwhile
                        Some(mut locked) => match read_envelope_from(&mut locked.file) {
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
                            Err(super::ReadError::Missing) => None,
                            Err(super::ReadError::Io(e)) => return Err(e),
                            Err(super::ReadError::Corrupt(why)) => {
                                Some(format!("corrupt queue file ({why})"))
                            }
                        },
                    },
                };
                if let Some(why) = why {
                    let to = move_aside(&from, name, &corrupt, name)?;
                    note(format!(
                        "{}/{name}: {why}; moved to corrupt/{to}",
                        queue.as_str()
                    ));
                }
            }
            from.sync_all()?;
        }
        corrupt.sync_all()?;
        Ok(fixes)
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
