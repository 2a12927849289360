//! Editing `main.cf` in place, as `postconf -e` and `postconf -X` do: a parameter's line
//! and its continuation lines are replaced where they stand (or removed); everything
//! else — comments, blank lines, order, other parameters, line endings — is kept byte for
//! byte. A parameter that is not set yet is appended at the end.
//!
//! The new file is written beside the old one, given its mode and owner, synced, and
//! renamed over it, then the directory is synced: a crash leaves the old file or the new
//! one, never half of either. Two editors at once are serialised by a lock on the
//! directory, so neither loses the other's change.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::sysexits::{Error, Result, describe_io};

/// One change to the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// `name = value`, replacing any earlier setting.
    Set(String, String),
    /// Remove the setting.
    Unset(String),
}

impl Edit {
    fn name(&self) -> &str {
        match self {
            Edit::Set(name, _) | Edit::Unset(name) => name,
        }
    }
}

/// Parses `NAME=VALUE` (white space around both trimmed). A value may not hold a line
/// break: it would end the setting and start a line of its own in `main.cf`.
pub fn parse_assignment(text: &str) -> Result<(String, String)> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(Error::usage(format!(
            "\"{text}\": expected NAME=VALUE (for example myhostname=mail.example.com)"
        )));
    };
    let (name, value) = (name.trim(), value.trim());
    check_name(name)?;
    if value.contains(['\n', '\r', '\0']) {
        return Err(Error::usage(format!(
            "{name}: a value cannot contain a line break or a NUL byte"
        )));
    }
    Ok((name.to_string(), value.to_string()))
}

/// A parameter name is letters, digits and `_`, as Postfix's.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!("\"{name}\" is not a parameter name")))
    }
}

/// What a physical line is, for editing.
enum Kind<'a> {
    /// Blank, or a comment: always kept, and it does not end a continued value (Postfix's
    /// reader skips such lines inside a value).
    Inert,
    /// Starts with white space: continues the logical line above.
    Continuation,
    /// Starts a logical line; the name is what precedes white space or `=`.
    Start(&'a str),
}

fn classify(line: &str) -> Kind<'_> {
    let content = line.trim_end_matches(['\n', '\r']);
    let trimmed = content.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        Kind::Inert
    } else if trimmed.len() != content.len() {
        Kind::Continuation
    } else {
        let end = content
            .find(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or(content.len());
        Kind::Start(&content[..end])
    }
}

/// Applies `edits` to the text of a `main.cf`. A parameter set twice in the file is
/// replaced at its first place and its later settings are removed, so that the file
/// ends up saying it once. When one name appears in several edits, the last one counts.
pub fn edit_text(text: &str, edits: &[Edit]) -> String {
    String::from_utf8_lossy(&edit_bytes(text.as_bytes(), edits)).into_owned()
}

/// [`edit_text`] on bytes: lines that are not UTF-8 (a Latin-1 comment) are kept as they
/// are; only names, which are ASCII, are looked at.
pub fn edit_bytes(text: &[u8], edits: &[Edit]) -> Vec<u8> {
    // The last edit of each name, in the order of first mention.
    let mut wanted: Vec<&Edit> = Vec::new();
    for edit in edits {
        match wanted.iter_mut().find(|e| e.name() == edit.name()) {
            Some(slot) => *slot = edit,
            None => wanted.push(edit),
        }
    }
    let mut done = vec![false; wanted.len()];
    let mut out: Vec<u8> = Vec::with_capacity(text.len() + 64);
    // Whether continuation lines belong to a line that was replaced or removed.
    let mut dropping = false;
    for line in text.split_inclusive(|&b| b == b'\n') {
        let shown = String::from_utf8_lossy(line);
        match classify(&shown) {
            Kind::Inert => out.extend_from_slice(line),
            Kind::Continuation if dropping => {}
            Kind::Continuation => out.extend_from_slice(line),
            Kind::Start(name) => match wanted.iter().position(|e| e.name() == name) {
                None => {
                    dropping = false;
                    out.extend_from_slice(line);
                }
                Some(i) => {
                    dropping = true;
                    if let (Edit::Set(name, value), false) = (wanted[i], done[i]) {
                        let ending = if line.ends_with(b"\r\n") {
                            "\r\n"
                        } else {
                            "\n"
                        };
                        out.extend_from_slice(setting_line(name, value).as_bytes());
                        out.extend_from_slice(ending.as_bytes());
                    }
                    done[i] = true;
                }
            },
        }
    }
    for (edit, done) in wanted.iter().zip(done) {
        if let (Edit::Set(name, value), false) = (edit, done) {
            if !out.is_empty() && !out.ends_with(b"\n") {
                out.push(b'\n');
            }
            out.extend_from_slice(setting_line(name, value).as_bytes());
            out.push(b'\n');
        }
    }
    out
}

fn setting_line(name: &str, value: &str) -> String {
    if value.is_empty() {
        format!("{name} =")
    } else {
        format!("{name} = {value}")
    }
}

/// Edits the `main.cf` at `path` with `edits` (see [`edit_text`]): reads it under the
/// directory's lock, computes the new text, lets `validate` refuse it, and replaces the
/// file atomically. A missing file is created (mode 0644). Nothing is written when the
/// text does not change. Returns whether the file changed.
pub fn edit_file(
    path: &Path,
    edits: &[Edit],
    validate: &dyn Fn(&str) -> Result<()>,
) -> Result<bool> {
    // Edit the file a symlink points to, not the symlink: the rename would replace it.
    let path = match fs::canonicalize(path) {
        Ok(real) => real,
        Err(e) if e.kind() == io::ErrorKind::NotFound => path.to_path_buf(),
        Err(e) => return Err(Error::io(format!("resolve {}", path.display()), &e)),
    };
    let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
    let lock = File::open(&dir).map_err(|e| Error::io(format!("open {}", dir.display()), &e))?;
    lock.lock()
        .map_err(|e| Error::io(format!("lock {}", dir.display()), &e))?;
    let (old, meta) = match crate::config::read_main_cf(&path) {
        Ok(bytes) => (bytes, fs::metadata(&path).ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (Vec::new(), None),
        // A FIFO, a device or a huge file is no main.cf to edit (and would hang us).
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::FileTooLarge
            ) =>
        {
            let message = format!("open {}: {}", path.display(), describe_io(&e));
            return Err(Error::config(message));
        }
        Err(e) => return Err(Error::io(format!("read {}", path.display()), &e)),
    };
    let new = edit_bytes(&old, edits);
    if new == old {
        return Ok(false);
    }
    validate(&String::from_utf8_lossy(&new))?;
    replace_file(&path, &new, meta.as_ref())
        .map_err(|e| Error::io(format!("write {}", path.display()), &e))?;
    drop(lock);
    Ok(true)
}

/// Writes `bytes` to a temporary file beside `path` with the old file's mode and owner,
/// syncs it, renames it over `path` and syncs the directory.
fn replace_file(path: &Path, bytes: &[u8], old: Option<&fs::Metadata>) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "main.cf".into());
    let temp: PathBuf = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(bytes)?;
        let mode = old.map_or(0o644, |m| m.permissions().mode() & 0o7777);
        if let Some(meta) = old {
            // Only root can give a file away; anyone else keeps their own ownership,
            // which is the old file's when they could write the directory anyway.
            if nix::unistd::geteuid().is_root() {
                std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()))?;
            }
        }
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, value: &str) -> Edit {
        Edit::Set(name.into(), value.into())
    }

    fn unset(name: &str) -> Edit {
        Edit::Unset(name.into())
    }

    const FILE: &str = "# top comment\n\
        myhostname = old.example.com\n\
        mydestination = a,\n\
        # a comment inside the value\n\
        \x20   b,\n\
        \n\
        \tc\n\
        relayhost =\n";

    #[test]
    fn set_replaces_in_place_and_drops_continuations() {
        let got = edit_text(FILE, &[set("mydestination", "x, y")]);
        assert_eq!(
            got,
            "# top comment\nmyhostname = old.example.com\nmydestination = x, y\n\
             # a comment inside the value\n\nrelayhost =\n"
        );
    }

    #[test]
    fn set_appends_new_names_in_order() {
        let got = edit_text("a = 1", &[set("b", "2"), set("c", "")]);
        assert_eq!(got, "a = 1\nb = 2\nc =\n");
        assert_eq!(edit_text("", &[set("b", "2")]), "b = 2\n");
    }

    #[test]
    fn unset_removes_the_line_and_its_continuations() {
        let got = edit_text(FILE, &[unset("mydestination"), unset("nothere")]);
        assert_eq!(
            got,
            "# top comment\nmyhostname = old.example.com\n\
             # a comment inside the value\n\nrelayhost =\n"
        );
    }

    #[test]
    fn duplicates_collapse_to_the_first_place() {
        let text = "a = 1\nb = 2\na = 3\n  more\nc = 4\n";
        assert_eq!(edit_text(text, &[set("a", "9")]), "a = 9\nb = 2\nc = 4\n");
    }

    #[test]
    fn the_last_edit_of_a_name_wins() {
        let got = edit_text("a = 1\n", &[set("a", "2"), unset("a"), set("a", "3")]);
        assert_eq!(got, "a = 3\n");
        assert_eq!(edit_text("a = 1\n", &[set("a", "2"), unset("a")]), "");
    }

    #[test]
    fn crlf_lines_keep_their_ending_and_names_match_exactly() {
        let text = "a = 1\r\nab = 2\r\nA = 3\r\n";
        assert_eq!(
            edit_text(text, &[set("a", "x")]),
            "a = x\r\nab = 2\r\nA = 3\r\n"
        );
        // `a=1` without spaces is the same parameter.
        assert_eq!(edit_text("a=1\n", &[set("a", "2")]), "a = 2\n");
    }

    #[test]
    fn assignments() {
        assert_eq!(
            parse_assignment(" relayhost = [smtp.example.com]:587 ").unwrap(),
            ("relayhost".into(), "[smtp.example.com]:587".into())
        );
        assert_eq!(parse_assignment("a=").unwrap(), ("a".into(), "".into()));
        assert_eq!(parse_assignment("a=b=c").unwrap().1, "b=c");
        assert!(parse_assignment("novalue").is_err());
        assert!(parse_assignment("=x").is_err());
        assert!(parse_assignment("a b=x").is_err());
        assert!(parse_assignment("a=x\nevil = 1").is_err());
    }

    #[test]
    fn a_main_cf_that_is_no_regular_file_is_refused_not_waited_for() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("main.cf");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let zero = tmp.path().join("zero.cf");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        for path in [fifo, zero] {
            let (tx, rx) = std::sync::mpsc::channel();
            let edited = path.clone();
            std::thread::spawn(move || {
                let _ = tx.send(edit_file(&edited, &[set("a", "1")], &|_| Ok(())));
            });
            let err = rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("did not finish within 10 s")
                .unwrap_err();
            assert_eq!(err.code(), 78, "{}", err.message);
            assert!(
                err.message.ends_with(": not a regular file"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn files_keep_mode_and_are_replaced_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("main.cf");
        fs::write(&path, "a = 1\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let ok = |_: &str| Ok(());
        assert!(edit_file(&path, &[set("a", "2")], &ok).unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), "a = 2\n");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        assert!(!edit_file(&path, &[set("a", "2")], &ok).unwrap());
        let refuse = |_: &str| Err(Error::usage("no"));
        assert!(edit_file(&path, &[set("a", "3")], &refuse).is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), "a = 2\n");
        let names: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
        // Through a symlink, the target is edited and the link stays.
        let link = tmp.path().join("link.cf");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        edit_file(&link, &[set("b", "1")], &ok).unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "a = 2\nb = 1\n");
    }

    #[test]
    fn bytes_that_are_not_utf8_survive() {
        let text = b"# caf\xe9\na = 1\n";
        assert_eq!(edit_bytes(text, &[set("a", "2")]), b"# caf\xe9\na = 2\n");
    }
}
