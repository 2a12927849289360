//! Maildir delivery (`home_mailbox` ending in `/`): the message is written to `tmp/`
//! under a name unique to this process and thread, `fsync`ed, then hard-linked into
//! `new/` under Postfix's name `SECONDS.VdevIinodeMmicros.HOST` and removed from `tmp/`;
//! the `new/` directory is `fsync`ed so the name survives a crash. Readers never see a
//! partial file: it only appears in `new/` complete. Everything runs with the user's
//! rights (the caller switches), so the Maildir and its files belong to the user.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::format::Limited;
use super::mbox::{AppendError, dsn_for};
use crate::deliver::Dsn;
use crate::sysexits::describe_io;

/// Delivers one message written by `write` into the Maildir `dir` (without the trailing
/// slash). `host` is `myhostname`. Returns the path of the new file.
pub fn deliver(
    dir: &Path,
    host: &str,
    size_limit: u64,
    write: impl FnOnce(&mut dyn Write) -> io::Result<u64>,
) -> Result<PathBuf, AppendError> {
    for sub in ["", "tmp", "new", "cur"] {
        let path = dir.join(sub);
        if let Err(e) = DirBuilder::new().recursive(true).mode(0o700).create(&path) {
            return Err(fail(
                &format!("create maildir directory {}", path.display()),
                &e,
            ));
        }
    }
    let host = safe_host(host);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let tmp = dir.join("tmp").join(format!(
        "{}.P{}Q{}.{host}",
        now.as_secs(),
        std::process::id(),
        next_serial()
    ));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| fail(&format!("create maildir file {}", tmp.display()), &e))?;
    match write_and_link(dir, &tmp, &file, &host, now, size_limit, write) {
        Ok(path) => Ok(path),
        Err(failure) => {
            let _ = fs::remove_file(&tmp);
            Err(failure)
        }
    }
}

fn write_and_link(
    dir: &Path,
    tmp: &Path,
    file: &File,
    host: &str,
    now: std::time::Duration,
    size_limit: u64,
    write: impl FnOnce(&mut dyn Write) -> io::Result<u64>,
) -> Result<PathBuf, AppendError> {
    let room = (size_limit > 0).then_some(size_limit);
    let mut out = BufWriter::with_capacity(64 * 1024, Limited { inner: file, room });
    let written = write(&mut out)
        .and_then(|_| out.flush())
        .and_then(|()| file.sync_data());
    if let Err(e) = written {
        let _ = out.into_parts();
        return Err(fail(
            &format!(
                "create maildir file {}: error writing message",
                tmp.display()
            ),
            &e,
        ));
    }
    drop(out);
    let meta = file
        .metadata()
        .map_err(|e| fail(&format!("stat {}", tmp.display()), &e))?;
    let new_dir = dir.join("new");
    let name = format!(
        "{}.V{:x}I{:x}M{}.{host}",
        now.as_secs(),
        meta.dev(),
        meta.ino(),
        now.subsec_micros()
    );
    let new = new_dir.join(name);
    // link() never replaces an existing name, unlike rename().
    fs::hard_link(tmp, &new)
        .map_err(|e| fail(&format!("link to maildir file {}", new.display()), &e))?;
    let _ = fs::remove_file(tmp);
    File::open(&new_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| fail(&format!("sync {}", new_dir.display()), &e))?;
    Ok(new)
}

/// Postfix's Maildir errors default to "try again" (4.2.0): a missing or unwritable home
/// directory is usually fixed by an administrator soon.
fn fail(what: &str, err: &io::Error) -> AppendError {
    AppendError {
        text: format!("{what}: {}", describe_io(err)),
        dsn: dsn_for(err, Dsn::MAILBOX_BUSY),
    }
}

/// Maildir file names use `/` as a path separator and `:` before the flags, so the host
/// name spells them as octal escapes, as Postfix and qmail do.
fn safe_host(host: &str) -> String {
    host.replace('/', "\\057").replace(':', "\\072")
}

fn next_serial() -> u64 {
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    SERIAL.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_postfix() {
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("Maildir");
        let path = deliver(&md, "mail.example:com", 0, |w| {
            w.write_all(b"Subject: x\n\nhi\n")?;
            Ok(15)
        })
        .unwrap();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let parts: Vec<&str> = name.splitn(3, '.').collect();
        assert!(parts[0].parse::<u64>().is_ok(), "{name}");
        assert!(parts[1].starts_with('V') && parts[1].contains('I') && parts[1].contains('M'));
        assert!(name.ends_with(".mail.example\\072com"), "{name}");
        assert_eq!(path.parent().unwrap(), md.join("new"));
        assert_eq!(fs::read_dir(md.join("tmp")).unwrap().count(), 0);
        for sub in ["tmp", "new", "cur"] {
            let mode = fs::metadata(md.join(sub)).unwrap().mode() & 0o777;
            assert_eq!(mode, 0o700);
        }
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("Maildir");
        let err = deliver(&md, "h", 10, |w| {
            w.write_all(&[b'x'; 100])?;
            Ok(100)
        })
        .unwrap_err();
        assert_eq!(err.dsn, Dsn::MAILBOX_FULL);
        assert!(err.text.contains("File too large"), "{}", err.text);
        assert_eq!(fs::read_dir(md.join("tmp")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(md.join("new")).unwrap().count(), 0);
    }
}
