//! The mbox format as Postfix's `local` writes it and readers parse it: each message starts
//! with a `From sender date` line at the start of the file or after a blank line, a body
//! line starting with `From ` is stored as `>From `, and a blank line ends each message.
//!
//! Everything here works on bytes and never fails on bad input: text that does not start
//! with a `From ` line is kept as a message of its own, so nothing in a damaged mailbox is
//! hidden or dropped by a rewrite.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::lock::{self, Policy};
use crate::message::headers;

/// Where one message lies in the mailbox bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The first byte of its `From ` line (or of the text, for leading garbage).
    pub start: usize,
    /// The first byte after the `From ` line: where the header starts.
    pub message_start: usize,
    /// One past its last byte, the separating blank line included.
    pub end: usize,
}

impl Span {
    pub fn has_from_line(&self) -> bool {
        self.message_start > self.start
    }
}

/// Splits a mailbox into messages.
pub fn split(data: &[u8]) -> Vec<Span> {
    let mut starts = Vec::new();
    let mut at = 0;
    let mut after_blank = true;
    while at < data.len() {
        let end = line_end(data, at);
        let line = &data[at..end];
        if after_blank && line.starts_with(b"From ") {
            starts.push(at);
        }
        after_blank = line == b"\n" || line == b"\r\n";
        at = end;
    }
    let mut spans = Vec::new();
    if starts.first() != Some(&0) && !data.is_empty() && !is_blank(data) {
        // Text before the first From line: keep it as a message without one.
        let end = starts.first().copied().unwrap_or(data.len());
        spans.push(Span {
            start: 0,
            message_start: 0,
            end,
        });
    }
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(data.len());
        spans.push(Span {
            start,
            message_start: line_end(data, start),
            end,
        });
    }
    spans
}

fn is_blank(data: &[u8]) -> bool {
    data.iter().all(|c| c.is_ascii_whitespace())
}

/// One past the `\n` ending the line that starts at `at` (or the end of `data`).
pub fn line_end(data: &[u8], at: usize) -> usize {
    match data[at..].iter().position(|&c| c == b'\n') {
        Some(i) => at + i + 1,
        None => data.len(),
    }
}

/// The message text of a span without the trailing separator blank line.
pub fn message_bytes<'a>(data: &'a [u8], span: &Span) -> &'a [u8] {
    let text = &data[span.message_start..span.end];
    text.strip_suffix(b"\n\n")
        .map(|t| &text[..t.len() + 1])
        .unwrap_or(text)
}

/// Undoes `>From ` quoting for display: one `>` is removed from lines that match
/// `^>+From ` (mboxrd's rule, which also reads mboxo files as written by Postfix).
pub fn unquote_from(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut at = 0;
    while at < text.len() {
        let end = line_end(text, at);
        let line = &text[at..end];
        let gts = line.iter().take_while(|&&c| c == b'>').count();
        if gts > 0 && line[gts..].starts_with(b"From ") {
            out.extend_from_slice(&line[1..]);
        } else {
            out.extend_from_slice(line);
        }
        at = end;
    }
    out
}

/// Quotes a message for storing in an mbox: `From ` at the start of a line becomes
/// `>From ` (and `>From ` becomes `>>From `, so that [`unquote_from`] gives it back).
pub fn quote_from(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 16);
    let mut at = 0;
    while at < text.len() {
        let end = line_end(text, at);
        let line = &text[at..end];
        let gts = line.iter().take_while(|&&c| c == b'>').count();
        if line[gts..].starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
        at = end;
    }
    out
}

/// The `From sender date` line that opens a message, in the `asctime` form readers
/// expect (`From alice@example.com Tue Nov 24 10:00:00 2020`).
pub fn from_line(sender: &str, when: chrono::DateTime<chrono::Local>) -> String {
    let sender = if sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        sender
    };
    let sender: String = sender
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect();
    format!("From {sender} {}\n", when.format("%a %b %e %H:%M:%S %Y"))
}

/// `message` (already `>From`-quoted, without a `From ` line) framed for an mbox:
/// `from_line`, the text, a final newline if missing, and the separating blank line.
pub fn frame(from_line: &[u8], message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(from_line.len() + message.len() + 2);
    out.extend_from_slice(from_line);
    out.extend_from_slice(message);
    if !message.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

/// Replaces the `Status:` field of a message's header (adding one at the end of the
/// header when there is none); `None` removes it.
pub fn set_status(message: &[u8], status: Option<&str>) -> Vec<u8> {
    let header_end = header_len(message);
    let mut out = Vec::with_capacity(message.len() + 12);
    let mut at = 0;
    let mut skipping = false;
    while at < header_end {
        let end = line_end(message, at);
        let line = &message[at..end];
        if skipping && headers::is_continuation(line) {
            at = end;
            continue;
        }
        skipping = headers::start_field(line).is_some_and(|f| f.is("Status"));
        if !skipping {
            out.extend_from_slice(line);
        }
        at = end;
    }
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    if let Some(status) = status {
        out.extend_from_slice(format!("Status: {status}\n").as_bytes());
    }
    out.extend_from_slice(&message[header_end..]);
    out
}

/// The length of the header block (up to, not including, the blank line).
pub fn header_len(message: &[u8]) -> usize {
    let mut at = 0;
    while at < message.len() {
        let end = line_end(message, at);
        let line = &message[at..end];
        if line == b"\n" || line == b"\r\n" {
            return at;
        }
        at = end;
    }
    message.len()
}

/// The value of the first `name:` field in a message's header, unfolded, as text.
pub fn header_value(message: &[u8], name: &str) -> Option<String> {
    let header = &message[..header_len(message)];
    let mut at = 0;
    let mut found: Option<Vec<u8>> = None;
    while at < header.len() {
        let end = line_end(header, at);
        let line = &header[at..end];
        match &mut found {
            Some(value) if headers::is_continuation(line) => value.extend_from_slice(line),
            Some(_) => break,
            None => {
                if let Some(field) = headers::start_field(line).filter(|f| f.is(name)) {
                    found = Some(field.value().to_vec());
                }
            }
        }
        at = end;
    }
    let value = found?;
    let text = String::from_utf8_lossy(&value);
    Some(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Why a rewrite did not happen.
#[derive(Debug)]
pub enum RewriteError {
    /// The part of the mailbox we had read was changed by someone else meanwhile.
    Changed,
    Io(io::Error),
}

impl From<io::Error> for RewriteError {
    fn from(e: io::Error) -> RewriteError {
        RewriteError::Io(e)
    }
}

/// Replaces the first `original.len()` bytes of the mailbox at `path` by `replacement`,
/// keeping whatever was appended after them (mail delivered meanwhile), under the
/// delivery locks.
///
/// The rewrite is made **in place** (write, truncate, fsync) rather than by renaming a
/// new file over the old one: a delivery agent that opened the mailbox before we took the
/// locks and now waits for them would otherwise append to the old, unlinked file and the
/// mail would be lost; in place also keeps the owner, mode and inode without needing
/// write access to the spool directory. Only the bytes from the first difference on are
/// written. Before that, they are copied to `backup` (fsynced); if the rewrite is
/// interrupted (crash, disk full) that copy holds the new text of the mailbox from
/// `backup_offset` on. It is removed once the mailbox is safely on disk.
pub fn rewrite(
    path: &Path,
    original: &[u8],
    replacement: &[u8],
    policy: &Policy,
    backup: &Path,
) -> Result<(), RewriteError> {
    let mut held = lock::lock(path, policy, || lock::open_existing(path))?;
    let file = held.file_mut();
    let mut current = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut current)?;
    if !current.starts_with(original) {
        return Err(RewriteError::Changed);
    }
    let tail = &current[original.len()..];
    let mut new = Vec::with_capacity(replacement.len() + tail.len());
    new.extend_from_slice(replacement);
    new.extend_from_slice(tail);
    let same = current
        .iter()
        .zip(new.iter())
        .take_while(|(a, b)| a == b)
        .count();
    if same == new.len() && new.len() == current.len() {
        return Ok(());
    }
    let changed = &new[same..];
    write_backup(backup, changed)?;
    file.seek(SeekFrom::Start(same as u64))?;
    file.write_all(changed)?;
    file.set_len(new.len() as u64)?;
    file.sync_all()?;
    let _ = std::fs::remove_file(backup);
    Ok(())
}

fn write_backup(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Appends `framed` (one or more messages, each from [`frame`]) to the mbox at `path`,
/// creating it (mode 0600) if missing, under the delivery locks. A blank line is added
/// first if the mailbox does not end with one, so the new `From ` line starts a message.
/// On a failed write the file is truncated back to its old length; where the append
/// began is noted in the dot-lock, for the case that we are killed mid-write.
pub fn append(path: &Path, framed: &[u8], policy: &Policy) -> io::Result<()> {
    let open = || -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
    };
    let held = lock::lock(path, policy, open)?;
    let mut file = held.file();
    let meta = file.metadata()?;
    let old_len = meta.len();
    let _ = held.note(&append_note(&meta));
    let result = separator(file, old_len)
        .and_then(|separator| file.write_all(separator))
        .and_then(|()| file.write_all(framed))
        .and_then(|()| file.sync_data());
    if result.is_err() {
        let _ = file.set_len(old_len);
    }
    result
}

/// What goes before a message appended to a mailbox of `len` bytes so that its `From `
/// line starts a message of its own (a blank line before it): nothing in an empty file or
/// after a blank line, else one or two newlines.
pub fn separator(file: &File, len: u64) -> io::Result<&'static [u8]> {
    if len == 0 {
        return Ok(b"");
    }
    let n = len.min(2);
    let mut last = [0u8; 2];
    file.read_exact_at(&mut last[..n as usize], len - n)?;
    let tail = &last[..n as usize];
    Ok(if tail.ends_with(b"\n\n") || tail == b"\n" {
        b""
    } else if tail.ends_with(b"\n") {
        b"\n"
    } else {
        b"\n\n"
    })
}

/// The first word of the note an appender leaves in its dot-lock.
const APPEND_NOTE: &str = "mailroom-append";

/// The note an appender leaves in its dot-lock ([`super::lock::DotLock::note`]) before
/// it writes: the mailbox (device and inode) and the length it had.
pub fn append_note(meta: &std::fs::Metadata) -> String {
    format!("{APPEND_NOTE} {} {} {}", meta.len(), meta.dev(), meta.ino())
}

/// Cuts off what an appender that died holding the locks left half written, as its
/// [`append_note`] (`note`, from the dot-lock we broke) says. Returns the bytes removed.
///
/// Only what an interrupted append leaves is removed: `file` must be the mailbox named
/// in the note and longer than it was, and what follows the old end must be at most two
/// newlines and then the beginning of one message, with no other message after it (a
/// writer that takes only the `fcntl` lock may have appended since). Anything else is
/// left alone, and the next append only starts its message on a line of its own.
pub fn repair_interrupted(file: &File, note: &str) -> io::Result<u64> {
    let mut words = note.split_whitespace();
    if words.next() != Some(APPEND_NOTE) {
        return Ok(0);
    }
    let mut number = || words.next().and_then(|w| w.parse::<u64>().ok());
    let (Some(old_len), Some(device), Some(inode)) = (number(), number(), number()) else {
        return Ok(0);
    };
    let meta = file.metadata()?;
    if (meta.dev(), meta.ino()) != (device, inode)
        || meta.len() <= old_len
        || !one_partial_message(file, old_len, meta.len())?
    {
        return Ok(0);
    }
    file.set_len(old_len)?;
    file.sync_data()?;
    Ok(meta.len() - old_len)
}

/// Whether bytes `from..to` of `file` are at most two newlines and then the start of a
/// message (a `From ` line, or the first bytes of one) with no other message after it.
fn one_partial_message(file: &File, from: u64, to: u64) -> io::Result<bool> {
    const NEXT: &[u8] = b"\n\nFrom ";
    let mut head = [0u8; 7];
    let head_len = (to - from).min(head.len() as u64) as usize;
    file.read_exact_at(&mut head[..head_len], from)?;
    let head = &head[..head_len];
    let newlines = head.iter().take_while(|&&c| c == b'\n').count();
    if newlines > 2 {
        return Ok(false);
    }
    let rest = &head[newlines..];
    let starts_message = rest.starts_with(b"From ") || b"From ".starts_with(rest);
    if !starts_message {
        return Ok(false);
    }
    // Another message starts where "\n\nFrom " is, except for the one the append began
    // with when the region starts with its blank line. Searched a chunk at a time, each
    // with the last bytes of the chunk before.
    let mut carry: Vec<u8> = Vec::new();
    let mut carry_start = 0u64;
    let mut at = from;
    let mut chunk = vec![0u8; ((to - from) as usize).min(1 << 20)];
    while at < to {
        let n = ((to - at) as usize).min(chunk.len());
        file.read_exact_at(&mut chunk[..n], at)?;
        at += n as u64;
        let mut window = std::mem::take(&mut carry);
        window.extend_from_slice(&chunk[..n]);
        let other = window
            .windows(NEXT.len())
            .enumerate()
            .filter(|(_, w)| *w == NEXT)
            .any(|(i, _)| !(carry_start + i as u64 == 0 && newlines == 2));
        if other {
            return Ok(false);
        }
        let keep = window.len().min(NEXT.len() - 1);
        carry_start += (window.len() - keep) as u64;
        carry = window.split_off(window.len() - keep);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOX: &[u8] = b"From a@x Tue Nov 24 10:00:00 2020\nSubject: one\n\nbody\n>From here\n\n\
From b@y Tue Nov 24 11:00:00 2020\nSubject: two\n\ntext\nFrom not after a blank line\n\n";

    #[test]
    fn splits_on_from_lines_after_blank_lines() {
        let spans = split(BOX);
        assert_eq!(spans.len(), 2);
        assert_eq!(
            message_bytes(BOX, &spans[0]),
            b"Subject: one\n\nbody\n>From here\n"
        );
        assert!(message_bytes(BOX, &spans[1]).starts_with(b"Subject: two"));
    }

    #[test]
    fn garbage_is_kept_not_dropped() {
        assert!(split(b"").is_empty());
        assert!(split(b"\n\n").is_empty());
        let data = b"junk\nmore\n\nFrom a Tue Nov 24 10:00:00 2020\n\nx\n";
        let spans = split(data);
        assert_eq!(spans.len(), 2);
        assert!(!spans[0].has_from_line());
        assert_eq!(&data[spans[0].start..spans[0].end], b"junk\nmore\n\n");
        // No newline at the end, binary bytes: no panic.
        let spans = split(b"From \xff\xfe");
        assert_eq!(spans.len(), 1);
        assert_eq!(message_bytes(b"From \xff\xfe", &spans[0]), b"");
    }

    #[test]
    fn quoting_round_trips() {
        let text = b"From me\n>From you\nok\n";
        let quoted = quote_from(text);
        assert_eq!(quoted, b">From me\n>>From you\nok\n");
        assert_eq!(unquote_from(&quoted), text);
    }

    #[test]
    fn status_is_replaced_or_added() {
        let m = b"Subject: x\nStatus: O\nX: y\n\nbody\nStatus: not a header\n";
        assert_eq!(
            set_status(m, Some("RO")),
            b"Subject: x\nX: y\nStatus: RO\n\nbody\nStatus: not a header\n"
        );
        assert_eq!(
            set_status(b"Subject: x\n", Some("O")),
            b"Subject: x\nStatus: O\n"
        );
        assert_eq!(header_value(m, "status").as_deref(), Some("O"));
        assert_eq!(
            header_value(b"Subject: a\n  b\nX: 1\n\n", "Subject").as_deref(),
            Some("a b")
        );
    }

    #[test]
    fn rewrite_keeps_mail_appended_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box");
        std::fs::write(&path, BOX).unwrap();
        let mut after = BOX.to_vec();
        after.extend_from_slice(b"From c@z Tue Nov 24 12:00:00 2020\nSubject: three\n\n");
        std::fs::write(&path, &after).unwrap();
        let spans = split(BOX);
        let keep = &BOX[spans[1].start..spans[1].end];
        let backup = dir.path().join("backup");
        rewrite(&path, BOX, keep, &Policy::default(), &backup).unwrap();
        let now = std::fs::read(&path).unwrap();
        assert!(now.starts_with(keep));
        assert!(now.ends_with(b"Subject: three\n\n"));
        assert_eq!(split(&now).len(), 2);
        assert!(!backup.exists());
        // A mailbox changed under us is left alone.
        std::fs::write(&path, b"something else").unwrap();
        assert!(matches!(
            rewrite(&path, BOX, keep, &Policy::default(), &backup),
            Err(RewriteError::Changed)
        ));
    }

    #[test]
    fn only_what_an_interrupted_append_left_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box");
        // Writes `contents` to the mailbox and opens it as an appender does; returns it
        // with the note an appender that started at `start` would have left, naming
        // another file when `other_inode`.
        let open_noted = |contents: &[u8], start: usize, other_inode: bool| {
            std::fs::write(&path, contents).unwrap();
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&path)
                .unwrap();
            let meta = file.metadata().unwrap();
            let inode = meta.ino() + u64::from(other_inode);
            let note = format!("mailroom-append {start} {} {inode}", meta.dev());
            (file, note)
        };
        let old = b"From a Tue Nov 24 10:00:00 2020\nSubject: 1\n\nx\n\n";
        let cases: &[(&[u8], &[u8], bool)] = &[
            // (old contents, what the append left, cut off?)
            (
                old,
                b"From b Tue Nov 24 10:00:00 2020\nSubject: 2\n\nhal",
                true,
            ),
            (
                old,
                b"From b Tue Nov 24 10:00:00 2020\nSubject: 2\n\npara\n\n",
                true,
            ),
            (old, b"Fro", true),
            (b"From a\n\ntext", b"\n\nFrom b\n\nhalf", true),
            (b"From a\n\ntext\n", b"\nFrom b\n\nhalf", true),
            (b"From a\n\ntext\n", b"\n", true),
            (b"", b"From b Tue", true),
            // A second message after it: someone appended since.
            (old, b"From b\n\nhalf\n\nFrom c\n\nwhole\n\n", false),
            (b"From a\n\ntext", b"\n\nFrom b\n\nhalf\n\nFrom c\n", false),
            // Not the start of a message.
            (old, b"Subject: 2\n\nhalf", false),
            (old, b"\n\n\nFrom b\n", false),
            (old, b"", false),
        ];
        for (n, (before, left, cut)) in cases.iter().enumerate() {
            let (file, note) = open_noted(&[*before, *left].concat(), before.len(), false);
            let removed = repair_interrupted(&file, &note).unwrap();
            let meta = file.metadata().unwrap();
            if *cut {
                assert_eq!(removed, left.len() as u64, "case {n}");
                assert_eq!(std::fs::read(&path).unwrap(), *before, "case {n}");
            } else {
                assert_eq!(removed, 0, "case {n}");
                assert_eq!(meta.len(), (before.len() + left.len()) as u64, "case {n}");
            }
        }
        // A note for another file, or no note of ours, changes nothing.
        let (file, other) = open_noted(&[&old[..], b"From b\n\nhalf"].concat(), old.len(), true);
        for note in [other.as_str(), "", "12 13", "mailroom-append x y z"] {
            assert_eq!(repair_interrupted(&file, note).unwrap(), 0, "{note:?}");
        }
        // A long message: the search for another one crosses chunks.
        let mut long = b"From b\n\n".to_vec();
        long.extend(std::iter::repeat_n(b"line of text\n".as_slice(), 200_000).flatten());
        for (tail, cut) in [(&b"half"[..], true), (&b"\nFrom c\n\n"[..], false)] {
            let (file, note) = open_noted(&[&old[..], &long, tail].concat(), old.len(), false);
            assert_eq!(repair_interrupted(&file, &note).unwrap() > 0, cut);
        }
    }

    #[test]
    fn append_separates_messages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("saved");
        let one = frame(b"From a Tue Nov 24 10:00:00 2020\n", b"Subject: 1\n\nx");
        append(&path, &one, &Policy::default()).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"trailing")
            .unwrap();
        let two = frame(b"From b Tue Nov 24 10:00:00 2020\n", b"Subject: 2\n\ny\n");
        append(&path, &two, &Policy::default()).unwrap();
        let data = std::fs::read(&path).unwrap();
        assert_eq!(split(&data).len(), 2);
        assert!(
            data.ends_with(b"trailing\n\nFrom b Tue Nov 24 10:00:00 2020\nSubject: 2\n\ny\n\n")
        );
    }
}
