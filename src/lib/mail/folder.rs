//! The mailbox a `mail` session works on: its messages as read at the start, the marks the
//! user puts on them (read, deleted, saved), and writing those marks back on `quit`.
//!
//! What `quit` does, kept deliberately simple (bsd-mailx would also move read mail to
//! `~/mbox`; we never move mail anywhere the user did not ask for):
//! - deleted messages are removed;
//! - every other message stays, marked `Status: RO` when read and `Status: O` when seen
//!   in the summary but not read (so the next session shows it as `U`, not `N`);
//! - mail delivered while the session was open is kept as it is: under the delivery
//!   locks the mbox is re-read and everything past what we had read is carried over
//!   ([`mbox::rewrite`]); in a Maildir new mail is in files we never touch.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::mailbox::lock::{self, Policy};
use crate::mailbox::{maildir, mbox};
use crate::sysexits::{Error, ExitCode};

use super::ExitError;

/// One message.
#[derive(Debug, Clone)]
pub struct Letter {
    /// The message as stored (mbox: after the `From ` line, `>From`-quoted, without the
    /// separating blank line).
    pub raw: Vec<u8>,
    /// The mbox `From ` line, when there is one.
    pub from_line: Option<Vec<u8>>,
    /// The exact bytes of this message in the mbox, to write back unchanged when nothing
    /// about it changed.
    pub stored: Vec<u8>,
    pub maildir: Option<maildir::Entry>,
    /// Delivered since a reader last looked (no `O` in `Status`, or in Maildir's `new/`).
    pub was_new: bool,
    /// Read in an earlier session (`R` in `Status`, or Maildir's `S` flag).
    pub was_read: bool,
    pub read: bool,
    pub deleted: bool,
    pub saved: bool,
}

impl Letter {
    fn new(raw: Vec<u8>, from_line: Option<Vec<u8>>, stored: Vec<u8>) -> Letter {
        let status = if from_line.is_some() {
            mbox::header_value(&raw, "Status").unwrap_or_default()
        } else {
            // Text without a From line is not a message we can mark; show it as old.
            "RO".into()
        };
        Letter {
            was_new: !status.contains('O'),
            was_read: status.contains('R'),
            raw,
            from_line,
            stored,
            maildir: None,
            read: false,
            deleted: false,
            saved: false,
        }
    }

    pub fn is_read(&self) -> bool {
        self.read || self.was_read
    }

    /// The message for display or saving, with `>From` quoting undone (mbox only).
    pub fn text(&self) -> Vec<u8> {
        match self.maildir {
            Some(_) => self.raw.clone(),
            None => mbox::unquote_from(&self.raw),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Mbox,
    Maildir,
}

#[derive(Debug)]
pub struct Folder {
    pub path: PathBuf,
    pub kind: Kind,
    pub letters: Vec<Letter>,
    /// The mbox bytes as read: the part of the file this session owns.
    original: Vec<u8>,
    /// The file could not be opened for writing: `quit` changes nothing.
    pub read_only: bool,
}

/// How a reader locks: as delivery does, but without the dot-lock where the spool
/// directory does not let an ordinary user create one (Debian's `/var/mail`).
pub fn reader_policy() -> Policy {
    Policy {
        dotlock_optional: true,
        ..Policy::default()
    }
}

impl Folder {
    /// Reads the mbox file or Maildir directory at `path`. A missing mbox is an empty
    /// folder; a damaged one is read as well as it can be.
    pub fn open(path: &Path) -> Result<Folder, ExitError> {
        if path.is_dir() {
            return Folder::open_maildir(path);
        }
        let (data, read_only) = match read_locked(path) {
            Ok(data) => (data, false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Vec::new(), true),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                // Readable but not writable (someone else's mbox given with -f).
                let data = std::fs::read(path).map_err(|e| io_failure(path, &e))?;
                (data, true)
            }
            Err(e) => return Err(io_failure(path, &e)),
        };
        let letters = mbox::split(&data)
            .iter()
            .map(|span| {
                let stored = data[span.start..span.end].to_vec();
                let from_line = span
                    .has_from_line()
                    .then(|| data[span.start..span.message_start].to_vec());
                let raw = if span.has_from_line() {
                    mbox::message_bytes(&data, span).to_vec()
                } else {
                    stored.clone()
                };
                Letter::new(raw, from_line, stored)
            })
            .collect();
        Ok(Folder {
            path: path.to_path_buf(),
            kind: Kind::Mbox,
            letters,
            original: data,
            read_only,
        })
    }

    fn open_maildir(path: &Path) -> Result<Folder, ExitError> {
        if !maildir::is_maildir(path) {
            return Err(Error::new(
                ExitCode::NoInput,
                format!(
                    "{}: not a mailbox (a directory without cur/ and new/)",
                    path.display()
                ),
            )
            .into());
        }
        let entries = maildir::list(path).map_err(|e| io_failure(path, &e))?;
        let mut letters = Vec::new();
        for entry in entries {
            // A file removed meanwhile by another reader is simply not shown.
            let Ok(raw) = std::fs::read(&entry.path) else {
                continue;
            };
            letters.push(Letter {
                was_new: entry.new,
                was_read: entry.has_flag('S'),
                raw,
                from_line: None,
                stored: Vec::new(),
                maildir: Some(entry),
                read: false,
                deleted: false,
                saved: false,
            });
        }
        Ok(Folder {
            path: path.to_path_buf(),
            kind: Kind::Maildir,
            letters,
            original: Vec::new(),
            read_only: false,
        })
    }

    /// Messages that are not deleted.
    pub fn live_count(&self) -> usize {
        self.letters.iter().filter(|l| !l.deleted).count()
    }

    /// Writes the session's marks back (see the module comment). Returns how many
    /// messages the mailbox still holds.
    pub fn commit(&mut self) -> Result<usize, ExitError> {
        let held = self.live_count();
        match self.kind {
            Kind::Maildir => self.commit_maildir()?,
            Kind::Mbox => self.commit_mbox()?,
        }
        Ok(held)
    }

    fn commit_mbox(&self) -> Result<(), ExitError> {
        if self.read_only || self.original.is_empty() {
            return Ok(());
        }
        let mut replacement = Vec::with_capacity(self.original.len());
        for letter in &self.letters {
            if letter.deleted {
                continue;
            }
            let Some(from_line) = &letter.from_line else {
                replacement.extend_from_slice(&letter.stored);
                continue;
            };
            let want = if letter.is_read() { "RO" } else { "O" };
            let has = mbox::header_value(&letter.raw, "Status");
            if has.as_deref() == Some(want) {
                replacement.extend_from_slice(&letter.stored);
            } else {
                let raw = mbox::set_status(&letter.raw, Some(want));
                replacement.extend_from_slice(&mbox::frame(from_line, &raw));
            }
        }
        if replacement == self.original {
            return Ok(());
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let backup = std::env::temp_dir().join(format!(
            "mail-rewrite.{}.{}.{nanos}",
            super::login_name(),
            std::process::id()
        ));
        match mbox::rewrite(
            &self.path,
            &self.original,
            &replacement,
            &reader_policy(),
            &backup,
        ) {
            Ok(()) => Ok(()),
            Err(mbox::RewriteError::Changed) => Err(ExitError::new(
                ExitCode::TempFail.as_i32(),
                format!(
                    "{}: changed by another program while open; changes not saved",
                    self.path.display()
                ),
            )),
            Err(mbox::RewriteError::Io(e)) => {
                let mut failure = io_failure(&self.path, &e);
                if backup.exists() {
                    failure.message = Some(format!(
                        "{}; the rewritten tail of the mailbox is in {}",
                        failure.message.unwrap_or_default(),
                        backup.display()
                    ));
                }
                Err(failure)
            }
        }
    }

    fn commit_maildir(&self) -> Result<(), ExitError> {
        for letter in &self.letters {
            let Some(entry) = &letter.maildir else {
                continue;
            };
            let result = if letter.deleted {
                std::fs::remove_file(&entry.path)
            } else {
                let mut flags = entry.flags.clone();
                if letter.is_read() && !flags.contains('S') {
                    flags.push('S');
                }
                if flags != entry.flags || entry.new {
                    maildir::set_flags(entry, &flags).map(drop)
                } else {
                    Ok(())
                }
            };
            match result {
                Ok(()) => {}
                // Gone already: another reader acted on it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_failure(&entry.path, &e)),
            }
        }
        Ok(())
    }
}

/// Reads the whole mbox under the delivery locks, so a delivery in progress is never seen
/// half-written.
fn read_locked(path: &Path) -> io::Result<Vec<u8>> {
    let mut held = lock::lock(path, &reader_policy(), || lock::open_existing(path))?;
    let mut data = Vec::new();
    held.file_mut().read_to_end(&mut data)?;
    Ok(data)
}

fn io_failure(path: &Path, e: &io::Error) -> ExitError {
    Error::io(path.display(), e).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOX: &str = "From a@x Tue Nov 24 10:00:00 2020\nSubject: one\nStatus: RO\n\nbody\n\n\
From b@y Tue Nov 24 11:00:00 2020\nSubject: two\n\n>From quoted\n\n\
From c@z Tue Nov 24 12:00:00 2020\nSubject: three\nStatus: O\n\nthree\n\n";

    #[test]
    fn statuses_and_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user");
        std::fs::write(&path, BOX).unwrap();
        let mut folder = Folder::open(&path).unwrap();
        assert_eq!(folder.letters.len(), 3);
        let l = &folder.letters;
        assert!(l[0].was_read && !l[0].was_new);
        assert!(l[1].was_new && !l[1].was_read);
        assert!(!l[2].was_new && !l[2].was_read);
        assert_eq!(l[1].text(), b"Subject: two\n\nFrom quoted\n");
        folder.letters[0].deleted = true;
        folder.letters[1].read = true;
        // Mail arriving meanwhile.
        let mut grown = BOX.as_bytes().to_vec();
        grown.extend_from_slice(b"From d@w Tue Nov 24 13:00:00 2020\nSubject: four\n\nnew\n\n");
        std::fs::write(&path, &grown).unwrap();
        assert_eq!(folder.commit().unwrap(), 2);
        let after = std::fs::read_to_string(&path).unwrap();
        assert!(!after.contains("Subject: one"));
        assert!(
            after.contains("Subject: two\nStatus: RO\n\n>From quoted\n"),
            "{after}"
        );
        assert!(after.contains("Subject: three\nStatus: O\n"));
        assert!(after.ends_with("Subject: four\n\nnew\n\n"));
        let again = Folder::open(&path).unwrap();
        assert_eq!(again.letters.len(), 3);
        assert!(again.letters[2].was_new);
    }

    #[test]
    fn garbage_and_missing_mailboxes() {
        let dir = tempfile::tempdir().unwrap();
        let folder = Folder::open(&dir.path().join("none")).unwrap();
        assert!(folder.letters.is_empty());
        let path = dir.path().join("junk");
        std::fs::write(&path, b"\xff\xfe\x00garbage\nFrom \n\nFrom x\n").unwrap();
        let mut folder = Folder::open(&path).unwrap();
        assert_eq!(folder.letters.len(), 2);
        folder.letters[1].deleted = true;
        folder.commit().unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"\xff\xfe\x00garbage\nFrom \n\n"
        );
    }
}
