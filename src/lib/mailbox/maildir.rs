//! Maildir as readers see it: messages in `new/` (never seen by a reader) and `cur/`
//! (seen; flags after `:2,` in the file name, `S` = read). Each message is its own file, so
//! no locking is needed: delivery only ever adds files through `tmp/`, and a reader only
//! renames or removes the files it listed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One message file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    /// In `new/`: delivered since a reader last looked.
    pub new: bool,
    /// The info flags (`S`, `R`, `F`, `T`, ...), sorted, from a `:2,` suffix.
    pub flags: String,
}

impl Entry {
    pub fn has_flag(&self, flag: char) -> bool {
        self.flags.contains(flag)
    }
}

/// True when `dir` looks like a Maildir (has `cur/` and `new/`).
pub fn is_maildir(dir: &Path) -> bool {
    dir.join("cur").is_dir() && dir.join("new").is_dir()
}

/// The messages of a Maildir, oldest first (by modification time, then name). Files whose
/// names start with `.` are skipped, as the Maildir convention asks.
pub fn list(dir: &Path) -> io::Result<Vec<Entry>> {
    let mut found: Vec<(SystemTime, Entry)> = Vec::new();
    for (sub, new) in [("new", true), ("cur", false)] {
        let entries = match fs::read_dir(dir.join(sub)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let when = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            found.push((
                when,
                Entry {
                    path: entry.path(),
                    new,
                    flags: flags_of(&name),
                },
            ));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.path.cmp(&b.1.path)));
    Ok(found.into_iter().map(|(_, e)| e).collect())
}

fn flags_of(name: &str) -> String {
    match name.rsplit_once(":2,") {
        Some((_, flags)) => {
            let mut f: Vec<char> = flags.chars().filter(char::is_ascii_alphabetic).collect();
            f.sort_unstable();
            f.dedup();
            f.into_iter().collect()
        }
        None => String::new(),
    }
}

fn base_name(name: &str) -> &str {
    name.split_once(':').map_or(name, |(base, _)| base)
}

/// Moves a message to `cur/` with exactly `flags` (a reader has seen it). Returns the new
/// entry. Renaming within one Maildir is atomic; a file gone meanwhile is an error.
pub fn set_flags(entry: &Entry, flags: &str) -> io::Result<Entry> {
    let name = entry
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let maildir = entry
        .path
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| io::Error::other("message file outside a Maildir"))?;
    let mut sorted: Vec<char> = flags.chars().collect();
    sorted.sort_unstable();
    sorted.dedup();
    let flags: String = sorted.into_iter().collect();
    let target = maildir
        .join("cur")
        .join(format!("{}:2,{flags}", base_name(&name)));
    if target != entry.path {
        fs::rename(&entry.path, &target)?;
    }
    Ok(Entry {
        path: target,
        new: false,
        flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_flags_messages() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["tmp", "new", "cur"] {
            fs::create_dir(dir.path().join(sub)).unwrap();
        }
        assert!(is_maildir(dir.path()));
        fs::write(dir.path().join("cur/1.a.host:2,S"), b"Subject: old\n\n").unwrap();
        fs::write(dir.path().join("new/2.b.host"), b"Subject: new\n\n").unwrap();
        fs::write(dir.path().join("new/.hidden"), b"").unwrap();
        let all = list(dir.path()).unwrap();
        assert_eq!(all.len(), 2);
        let new = all.iter().find(|e| e.new).unwrap();
        assert_eq!(new.flags, "");
        let old = all.iter().find(|e| !e.new).unwrap();
        assert!(old.has_flag('S'));
        let moved = set_flags(new, "SR").unwrap();
        assert_eq!(moved.path, dir.path().join("cur/2.b.host:2,RS"));
        assert!(moved.path.exists());
        let again = set_flags(&moved, "RS").unwrap();
        assert_eq!(again.path, moved.path);
    }
}
