//! `~/.forward`: read with the user's rights, trusted only when it belongs to the user (or
//! root) and nobody else may write it, and split into targets the way an alias's value is
//! split.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::privileges::{Identity, as_identity};
use crate::sysexits::describe_io;

/// What the user's `.forward` says.
#[derive(Debug, PartialEq, Eq)]
pub enum Forward {
    /// No usable file (missing, unreadable, or empty): deliver to the mailbox.
    Absent,
    /// A file that is not safe to act on; the text is the warning to log.
    Ignored(String),
    Targets(Vec<String>),
}

/// More than this is not a forward file anyone wrote by hand.
const MAX_SIZE: u64 = 64 * 1024;

/// Reads `HOME/.forward` as `user`.
pub fn read(user: &Identity) -> io::Result<Forward> {
    let path = user.home.join(".forward");
    as_identity(user, || read_as_is(&path, user))?
}

fn read_as_is(path: &Path, user: &Identity) -> io::Result<Forward> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::ENOTDIR | libc::EACCES)
            ) =>
        {
            return Ok(Forward::Absent);
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    let ignored = |why: &str| {
        Ok(Forward::Ignored(format!(
            "ignoring forward file {} for user {}: {why}",
            path.display(),
            user.name
        )))
    };
    if !meta.file_type().is_file() {
        return ignored("not a regular file");
    }
    if meta.uid() != user.uid && meta.uid() != 0 {
        return ignored(&format!(
            "owned by uid {}, not by the user or root",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return ignored("writable by group or others");
    }
    let mut bytes = Vec::new();
    if let Err(e) = (&mut file).take(MAX_SIZE).read_to_end(&mut bytes) {
        return ignored(&describe_io(&e));
    }
    let targets = split_targets(&String::from_utf8_lossy(&bytes));
    if targets.is_empty() {
        return Ok(Forward::Absent);
    }
    Ok(Forward::Targets(targets))
}

/// Splits a list of targets: separated by commas or line breaks outside double quotes,
/// `#` comment lines skipped, quotes removed. An unquoted element that is not a command
/// is split at white space too (`alice bob` is two addresses, as in aliases(5)).
pub fn split_targets(text: &str) -> Vec<String> {
    let mut elements = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        let mut current = String::new();
        let mut quoted = false;
        let mut escaped = false;
        for c in line.chars() {
            if escaped {
                current.push(c);
                escaped = false;
                continue;
            }
            match c {
                '\\' if quoted => escaped = true,
                '"' => {
                    quoted = !quoted;
                    current.push(c);
                }
                ',' if !quoted => elements.push(std::mem::take(&mut current)),
                _ => current.push(c),
            }
        }
        elements.push(current);
    }
    let mut targets = Vec::new();
    for element in elements {
        let element = element.trim();
        if element.is_empty() {
            continue;
        }
        if let Some(inner) = element.strip_prefix('"').and_then(|e| e.strip_suffix('"')) {
            targets.push(inner.to_string());
        } else if element.starts_with('|') || element.starts_with('/') {
            targets.push(element.to_string());
        } else {
            targets.extend(element.split_whitespace().map(str::to_string));
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_like_aliases() {
        assert_eq!(
            split_targets(
                "# comment\nalice, bob@example.org\n\"|/usr/bin/procmail -f-\"\n\\me, /tmp/x  \ncarol dave\n|/bin/cat\n\"a, b\""
            ),
            vec![
                "alice",
                "bob@example.org",
                "|/usr/bin/procmail -f-",
                "\\me",
                "/tmp/x",
                "carol",
                "dave",
                "|/bin/cat",
                "a, b"
            ]
        );
        assert!(split_targets("\n# only\n").is_empty());
    }

    #[test]
    fn unsafe_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut me = Identity::current();
        me.home = dir.path().to_path_buf();
        assert_eq!(read(&me).unwrap(), Forward::Absent);
        let path = dir.path().join(".forward");
        std::fs::write(&path, "bob@example.org\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            read(&me).unwrap(),
            Forward::Targets(vec!["bob@example.org".into()])
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
        assert!(
            matches!(read(&me).unwrap(), Forward::Ignored(w) if w.contains("writable by group"))
        );
    }
}
