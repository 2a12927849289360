//! The compiled alias database: `SOURCE.cdb` beside the source file.
//!
//! Compiling writes the whole database to a temporary file in the same directory, fsyncs
//! it, renames it over the old one and fsyncs the directory, so a reader sees either the
//! old database or the new one, never a half-written file. A reader ([`AliasDb`]) reads
//! the file once per open and re-opens it when its identity (device, inode, size, mtime
//! with nanoseconds) changes: Postfix compares the one-second mtime only, and two
//! rebuilds in one second can leave its delivery agent answering from the older table.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::SystemTime;

use super::cdb;
use super::parse;
use crate::sysexits::{Error, ExitCode, Result, describe_io};

/// The database file of a source: `/etc/aliases` → `/etc/aliases.cdb`, whatever type
/// (`hash:`, `btree:`, `lmdb:`, `cdb:`) the configuration names; we only write CDB.
pub fn database_path(source: &Path) -> PathBuf {
    let mut name = source.as_os_str().to_owned();
    name.push(".cdb");
    PathBuf::from(name)
}

/// The result of one compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    pub database: PathBuf,
    /// Entries stored (duplicates and skipped entries not counted).
    pub entries: usize,
}

/// Compiles `source` into [`database_path`]`(source)`. Warnings (skipped entries,
/// duplicates) go to `warn` without a program prefix, in Postfix's wording:
/// `/etc/aliases, line 3: need name:value pair`, `/etc/aliases.cdb: duplicate entry: "dup"`.
///
/// When run as root on a source owned by someone else, the database is given to the
/// source's owner, as `postalias` does by running as that owner: commands and files named
/// in it then run with that owner's privileges, not `default_privs`.
pub fn compile(source: &Path, warn: &mut dyn FnMut(&str)) -> Result<Compiled> {
    let (text, metadata) = read_source(source)?;
    let database = database_path(source);
    let (bytes, entries) = compile_bytes(
        &text,
        &source.display().to_string(),
        &database.display().to_string(),
        warn,
    )?;
    let owner = (nix::unistd::geteuid().is_root() && metadata.uid() != 0)
        .then(|| (metadata.uid(), metadata.gid()));
    write_atomically(&database, &bytes, owner)?;
    Ok(Compiled { database, entries })
}

/// Compiles source text into the bytes of a CDB file; returns them and the entry count.
/// `source_name` and `database_name` only appear in warnings.
pub fn compile_bytes(
    text: &[u8],
    source_name: &str,
    database_name: &str,
    warn: &mut dyn FnMut(&str),
) -> Result<(Vec<u8>, usize)> {
    // About one entry per 25 bytes of source in real files; a hint, not a limit.
    let mut builder = cdb::Builder::with_capacity(text.len(), text.len() / 25);
    let mut too_large = false;
    parse::parse(text, |result| match result {
        Ok(entry) => match builder.insert_unique(entry.name, entry.value) {
            Ok(true) => {}
            // Postfix keeps the first and names the database file, not the source line.
            Ok(false) => warn(&format!(
                "{database_name}: duplicate entry: \"{}\"",
                String::from_utf8_lossy(entry.name)
            )),
            Err(cdb::TooLarge) => too_large = true,
        },
        Err(warning) => warn(&warning.message(source_name)),
    });
    let entries = builder.len();
    let bytes = match (too_large, builder.finish()) {
        (false, Ok(bytes)) => bytes,
        _ => {
            return Err(Error::data(format!(
                "{source_name}: too large for a CDB database (4 GiB)"
            )));
        }
    };
    Ok((bytes, entries))
}

fn read_source(source: &Path) -> Result<(Vec<u8>, fs::Metadata)> {
    let open_error = |err: &io::Error| {
        Error::new(
            ExitCode::NoInput,
            format!("open {}: {}", source.display(), describe_io(err)),
        )
    };
    let mut file = File::open(source).map_err(|err| open_error(&err))?;
    let metadata = file.metadata().map_err(|err| open_error(&err))?;
    if !metadata.is_file() {
        return Err(Error::new(
            ExitCode::NoInput,
            format!("open {}: not a regular file", source.display()),
        ));
    }
    let mut text = Vec::with_capacity(metadata.len() as usize + 1);
    file.read_to_end(&mut text).map_err(|err| {
        Error::new(
            ExitCode::IoErr,
            format!("read {}: {}", source.display(), describe_io(&err)),
        )
    })?;
    Ok((text, metadata))
}

/// Writes `bytes` to a temporary file beside `path`, fsyncs, renames it over `path` and
/// fsyncs the directory. The temporary file is removed if any step fails.
pub fn write_atomically(path: &Path, bytes: &[u8], owner: Option<(u32, u32)>) -> Result<()> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = directory.join(format!(
        ".{file_name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&temporary)
        .map_err(|err| {
            Error::new(
                create_failure_code(&err),
                format!("create {}: {}", temporary.display(), describe_io(&err)),
            )
        })?;
    let result = (|| {
        file.write_all(bytes)
            .map_err(|err| Error::io(format!("write {}", temporary.display()), &err))?;
        // The umask must not make the database unreadable for the delivery agent, which
        // reads it as an unprivileged user.
        fs::set_permissions(
            &temporary,
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .map_err(|err| Error::io(format!("chmod {}", temporary.display()), &err))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
                .map_err(|err| Error::io(format!("chown {}", temporary.display()), &err))?;
        }
        file.sync_all()
            .map_err(|err| Error::io(format!("fsync {}", temporary.display()), &err))?;
        fs::rename(&temporary, path).map_err(|err| {
            Error::io(
                format!("rename {} to {}", temporary.display(), path.display()),
                &err,
            )
        })?;
        File::open(directory)
            .and_then(|dir| dir.sync_all())
            .map_err(|err| Error::io(format!("fsync {}", directory.display()), &err))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

/// The exit code for a database file that could not be created: a permission problem
/// (the caller may not write in the directory) is 77 (EX_NOPERM), as everywhere else;
/// anything else (no such directory, read-only file system, no inodes) stays 73
/// (EX_CANTCREAT).
fn create_failure_code(err: &io::Error) -> ExitCode {
    match err.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => ExitCode::NoPerm,
        _ => ExitCode::CantCreat,
    }
}

/// What tells one version of a file from another, finer than Postfix's one-second mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub device: u64,
    pub inode: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
}

impl Identity {
    /// Stands for "no file": no real file has inode 0.
    pub const ABSENT: Identity = Identity {
        device: 0,
        inode: 0,
        size: 0,
        mtime: 0,
        mtime_nsec: 0,
    };

    pub fn of(metadata: &fs::Metadata) -> Identity {
        Identity {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            mtime: metadata.mtime(),
            mtime_nsec: metadata.mtime_nsec(),
        }
    }
}

/// Whose privileges a `|command` or `/file` target runs with (default: root's, which
/// expansion replaces by `default_privs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Privileges {
    pub uid: u32,
    pub gid: u32,
}

impl Privileges {
    pub const ROOT: Privileges = Privileges { uid: 0, gid: 0 };

    /// The owner of a file: its uid, with that user's primary group as Postfix's local(8)
    /// takes it (the file's group when the uid has no passwd entry).
    pub fn owner_of(metadata: &fs::Metadata) -> Privileges {
        let gid = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(metadata.uid()))
            .ok()
            .flatten()
            .map_or(metadata.gid(), |user| user.gid.as_raw());
        Privileges {
            uid: metadata.uid(),
            gid,
        }
    }
}

/// An open alias database. Reads the whole file once per open; [`AliasDb::lookup`]
/// re-opens it first when it was rebuilt since.
#[derive(Debug)]
pub struct AliasDb {
    source: PathBuf,
    path: PathBuf,
    identity: Identity,
    owner: Privileges,
    reader: cdb::Reader,
    warning: Option<String>,
    /// The identity of the source file when the contents were compiled from it in
    /// memory because the database did not exist; `None` when read from the database.
    from_source: Option<Identity>,
    /// A database file that failed its checks, and why: not read again until it changes.
    refused: Option<(Identity, String)>,
}

impl AliasDb {
    /// Opens the database compiled from `source` (the path the configuration names,
    /// without `.cdb`).
    ///
    /// When neither the source nor the database exists, the table is empty rather than an
    /// error: the default `alias_maps = hash:/etc/aliases` must not defer all local mail
    /// on a machine that has no aliases file (Postfix would). A source without a database
    /// (a machine moving from Postfix has `aliases.db`, not `aliases.cdb`) is compiled in
    /// memory and used, with a warning that says to run `newaliases`: Postfix defers all
    /// local mail instead, which helps nobody.
    pub fn open(source: &Path) -> Result<AliasDb> {
        let path = database_path(source);
        let mut db = AliasDb {
            source: source.to_path_buf(),
            path,
            identity: Identity::ABSENT,
            owner: Privileges::ROOT,
            reader: cdb::Reader::empty(),
            warning: None,
            from_source: None,
            refused: None,
        };
        if !is_absent(&db.path) {
            let bytes;
            (db.identity, db.owner, bytes) = read_database(&db.path)?;
            db.reader = cdb::Reader::new(bytes).map_err(|why| corrupt_error(&db.path, &why))?;
            db.check_source_age();
        } else if !is_absent(source) {
            db.read_source()?;
        }
        Ok(db)
    }

    /// Compiles the source file in memory (the database does not exist).
    fn read_source(&mut self) -> Result<()> {
        let metadata = fs::metadata(&self.source)
            .map_err(|err| Error::io(format!("open {}", self.source.display()), &err))?;
        let text = fs::read(&self.source)
            .map_err(|err| Error::io(format!("open {}", self.source.display()), &err))?;
        let name = self.source.display().to_string();
        // Syntax warnings are newaliases' to report; here they would repeat per lookup.
        let (bytes, _) = compile_bytes(&text, &name, &name, &mut |_| {})?;
        self.reader = cdb::Reader::new(bytes).map_err(|why| {
            Error::software(format!("aliases from {name} did not compile: {why}"))
        })?;
        self.owner = Privileges::owner_of(&metadata);
        self.from_source = Some(Identity::of(&metadata));
        self.warning = Some(format!(
            "database {} does not exist; using source file {name} directly: run newaliases",
            self.path.display()
        ));
        Ok(())
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The owner of the database file: expansion runs commands and files from it with
    /// these privileges, or `default_privs` when it is root.
    pub fn owner(&self) -> Privileges {
        self.owner
    }

    /// Postfix's warning when the source was changed after the last compile:
    /// `database /etc/aliases.cdb is older than source file /etc/aliases`.
    pub fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }

    /// Re-opens the database if the file at its path is no longer the one read (or, while
    /// there is no database, re-reads a changed source file). Returns
    /// whether it did. A database being replaced is always present under its name, so
    /// a failed stat or read means someone removed or broke it: that is an error (the
    /// caller defers the mail), and the contents read last stay loaded.
    pub fn refresh(&mut self) -> Result<bool> {
        let metadata = match fs::metadata(&self.path) {
            Ok(metadata) => metadata,
            Err(_) if self.identity == Identity::ABSENT && is_absent(&self.source) => {
                return Ok(false);
            }
            Err(err)
                if err.kind() == io::ErrorKind::NotFound && self.identity == Identity::ABSENT =>
            {
                // Still no database: follow the source file itself.
                let now = fs::metadata(&self.source).ok().map(|m| Identity::of(&m));
                if now.is_some() && now == self.from_source {
                    return Ok(false);
                }
                if now.is_none() {
                    *self = AliasDb::open(&self.source)?;
                    return Ok(true);
                }
                self.read_source()?;
                return Ok(true);
            }
            Err(err) => return Err(open_database_error(&self.path, &err)),
        };
        self.from_source = None;
        let now = Identity::of(&metadata);
        if now == self.identity {
            return Ok(false);
        }
        if let Some((refused, why)) = &self.refused
            && *refused == now
        {
            return Err(Error::temp(why.clone()));
        }
        let (identity, owner, bytes) = read_database(&self.path)?;
        let reader = match cdb::Reader::new(bytes) {
            Ok(reader) => reader,
            Err(why) => {
                let err = corrupt_error(&self.path, &why);
                self.refused = Some((identity, err.message.clone()));
                return Err(err);
            }
        };
        self.refused = None;
        self.identity = identity;
        self.owner = owner;
        self.reader = reader;
        self.check_source_age();
        Ok(true)
    }

    /// Looks a name up (case-folded here) in the contents read at the last open or
    /// refresh.
    pub fn get(&self, name: &str) -> Option<String> {
        let mut key = name.as_bytes().to_vec();
        parse::fold_name(&mut key);
        self.reader
            .get(&key)
            .map(|value| String::from_utf8_lossy(value).into_owned())
    }

    /// [`AliasDb::refresh`], then [`AliasDb::get`].
    pub fn lookup(&mut self, name: &str) -> Result<Option<String>> {
        self.refresh()?;
        Ok(self.get(name))
    }

    fn check_source_age(&mut self) {
        let modified = |path: &Path| fs::metadata(path).and_then(|m| m.modified()).ok();
        let database_time = SystemTime::UNIX_EPOCH
            + std::time::Duration::new(
                self.identity.mtime.max(0) as u64,
                self.identity.mtime_nsec.clamp(0, 999_999_999) as u32,
            );
        self.warning = match modified(&self.source) {
            Some(source_time) if source_time > database_time => Some(format!(
                "database {} is older than source file {}",
                self.path.display(),
                self.source.display()
            )),
            _ => None,
        };
    }
}

fn is_absent(path: &Path) -> bool {
    matches!(fs::symlink_metadata(path), Err(err) if err.kind() == io::ErrorKind::NotFound)
}

fn open_database_error(path: &Path, err: &io::Error) -> Error {
    Error::io(format!("open database {}", path.display()), err)
}

/// A database that fails the checks of [`cdb::Reader::new`]: an error that defers the
/// mail (a table without the names it lost would bounce it).
fn corrupt_error(path: &Path, why: &cdb::Corrupt) -> Error {
    Error::temp(format!(
        "database {} is corrupt or truncated: {why}",
        path.display()
    ))
}

/// Opens, fstats and reads the database in that order, so the identity recorded is the
/// identity of the bytes read even if the file is replaced meanwhile.
fn read_database(path: &Path) -> Result<(Identity, Privileges, Vec<u8>)> {
    let mut file = File::open(path).map_err(|err| open_database_error(path, &err))?;
    let metadata = file
        .metadata()
        .map_err(|err| open_database_error(path, &err))?;
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.read_to_end(&mut bytes)
        .map_err(|err| Error::io(format!("read database {}", path.display()), &err))?;
    Ok((
        Identity::of(&metadata),
        Privileges::owner_of(&metadata),
        bytes,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    fn compile_collect(source: &Path) -> (Result<Compiled>, Vec<String>) {
        let mut warnings = Vec::new();
        let result = compile(source, &mut |w| warnings.push(w.to_string()));
        (result, warnings)
    }

    #[test]
    fn only_a_permission_problem_is_ex_noperm() {
        for (errno, code) in [
            (libc::EACCES, ExitCode::NoPerm),
            (libc::EPERM, ExitCode::NoPerm),
            (libc::ENOENT, ExitCode::CantCreat),
            (libc::EROFS, ExitCode::CantCreat),
            (libc::ENOSPC, ExitCode::CantCreat),
            (libc::EEXIST, ExitCode::CantCreat),
        ] {
            let err = io::Error::from_raw_os_error(errno);
            assert_eq!(create_failure_code(&err), code, "{err}");
        }
    }

    #[test]
    fn database_is_beside_the_source() {
        assert_eq!(
            database_path(Path::new("/etc/aliases")),
            Path::new("/etc/aliases.cdb")
        );
        assert_eq!(
            database_path(Path::new("aliases")),
            Path::new("aliases.cdb")
        );
    }

    #[test]
    fn seed_example_first_duplicate_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("aliases");
        fs::write(
            &source,
            "root: john\njsmith: john\nj.smith: john\nroot: root,james\n",
        )
        .expect("write");
        let (result, warnings) = compile_collect(&source);
        let compiled = result.expect("compiles");
        assert_eq!(compiled.entries, 3);
        assert_eq!(
            warnings,
            vec![format!(
                "{}.cdb: duplicate entry: \"root\"",
                source.display()
            )]
        );
        let mut db = AliasDb::open(&source).expect("opens");
        assert_eq!(db.lookup("root").expect("reads"), Some("john".to_string()));
        assert_eq!(
            db.lookup("JSmith").expect("reads"),
            Some("john".to_string())
        );
        assert_eq!(
            db.lookup("j.smith").expect("reads"),
            Some("john".to_string())
        );
        assert_eq!(db.lookup("james").expect("reads"), None);
        assert_eq!(db.warning(), None);
        let mode = fs::metadata(db.path()).expect("stat").mode() & 0o777;
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn missing_source_is_no_input() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("nonexist");
        let err = compile_collect(&source).0.expect_err("fails");
        assert_eq!(err.code, ExitCode::NoInput);
        assert_eq!(
            err.message,
            format!("open {}: No such file or directory", source.display())
        );
        assert!(!database_path(&source).exists());
    }

    #[test]
    fn bad_lines_warn_and_the_rest_compiles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("aliases");
        fs::write(&source, "a: b\nnocolon alice\nc: d\n").expect("write");
        let (result, warnings) = compile_collect(&source);
        assert_eq!(result.expect("compiles").entries, 2);
        assert_eq!(
            warnings,
            vec![format!(
                "{}, line 2: need name:value pair",
                source.display()
            )]
        );
    }

    #[test]
    fn no_source_and_no_database_is_an_empty_table_until_compiled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("aliases");
        let mut db = AliasDb::open(&source).expect("opens empty");
        assert_eq!(db.lookup("root").expect("reads"), None);
        fs::write(&source, "root: john\n").expect("write");
        // A source without its database is read directly, with a warning.
        assert_eq!(db.lookup("root").expect("reads"), Some("john".to_string()));
        assert!(db.warning().is_some_and(|w| w.ends_with("run newaliases")));
        fs::write(&source, "root: jack\n").expect("write");
        assert_eq!(db.lookup("root").expect("reads"), Some("jack".to_string()));
        compile_collect(&source).0.expect("compiles");
        assert_eq!(db.lookup("root").expect("reads"), Some("jack".to_string()));
        assert_eq!(db.warning(), None);
        let other = dir.path().join("other");
        fs::write(&other, "a: b\n").expect("write");
        let db = AliasDb::open(&other).expect("source without database");
        assert_eq!(db.get("a"), Some("b".to_string()));
    }

    #[test]
    fn stale_database_warns_and_rebuild_is_noticed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("aliases");
        fs::write(&source, "a: one\n").expect("write");
        compile_collect(&source).0.expect("compiles");
        let mut db = AliasDb::open(&source).expect("opens");
        assert_eq!(db.get("a"), Some("one".to_string()));
        // Same second, same size: only the inode and nanoseconds tell them apart.
        fs::write(&source, "a: two\n").expect("write");
        let future = SystemTime::now() + std::time::Duration::from_secs(5);
        File::options()
            .write(true)
            .open(&source)
            .and_then(|f| f.set_modified(future))
            .expect("touch");
        assert!(!db.refresh().expect("stat"));
        compile_collect(&source).0.expect("compiles");
        assert_eq!(db.lookup("a").expect("reads"), Some("two".to_string()));
        assert_eq!(
            db.warning(),
            Some(
                format!(
                    "database {}.cdb is older than source file {}",
                    source.display(),
                    source.display()
                )
                .as_str()
            )
        );
    }

    #[test]
    fn a_damaged_database_is_an_error_until_rebuilt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("aliases");
        fs::write(&source, "team: alice\n").expect("write");
        compile_collect(&source).0.expect("compiles");
        let database = database_path(&source);
        let good = fs::read(&database).expect("read");
        fs::write(&database, &good[..good.len() - 1]).expect("write");
        let err = AliasDb::open(&source).expect_err("refused");
        assert_eq!(err.code, ExitCode::TempFail);
        assert!(
            err.message.contains("is corrupt or truncated"),
            "{}",
            err.message
        );
        // Damaged after it was read: every lookup fails (and the file is not read
        // again until it changes), none answers from the old contents.
        fs::write(&database, &good).expect("write");
        let mut db = AliasDb::open(&source).expect("opens");
        fs::write(&database, &good[..2048]).expect("write");
        for _ in 0..2 {
            let err = db.lookup("team").expect_err("refused");
            assert!(
                err.message.contains("is corrupt or truncated"),
                "{}",
                err.message
            );
        }
        compile_collect(&source).0.expect("compiles");
        assert_eq!(db.lookup("team").expect("reads"), Some("alice".to_string()));
    }

    #[test]
    fn reader_never_sees_a_partial_database_while_rebuilding() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("aliases");
        let version = |n: usize| {
            let mut text = format!("stable: alice\nversion: v{n}\n");
            for i in 0..2000 {
                text.push_str(&format!("filler{i}: user{i}, other{n}\n"));
            }
            text
        };
        fs::write(&source, version(0)).expect("write");
        compile_collect(&source).0.expect("compiles");
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (source, done) = (source.clone(), done.clone());
            std::thread::spawn(move || {
                let mut db = AliasDb::open(&source).expect("opens");
                let (mut lookups, mut reopened) = (0usize, 0usize);
                while !done.load(Ordering::Relaxed) {
                    reopened += usize::from(db.refresh().expect("refresh never fails"));
                    assert_eq!(db.get("stable"), Some("alice".to_string()));
                    let version = db.get("version").expect("version present");
                    let n = &version[1..];
                    assert_eq!(db.get("filler1999"), Some(format!("user1999, other{n}")));
                    lookups += 1;
                }
                (lookups, reopened)
            })
        };
        for n in 1..=60 {
            fs::write(&source, version(n)).expect("write");
            compile_collect(&source).0.expect("compiles");
        }
        done.store(true, Ordering::Relaxed);
        let (lookups, reopened) = reader.join().expect("reader did not panic");
        assert!(
            lookups > 0 && reopened > 0,
            "{lookups} lookups, {reopened} reopens"
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
