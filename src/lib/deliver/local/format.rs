//! What a delivered copy looks like: the mbox `From ` line, the envelope headers local(8)
//! prepends, `>From ` quoting, and the trailing empty line, each switched on per target
//! as Postfix's `mail_copy()` flags are:
//!
//! | target  | From_ line | Return-Path, X-Original-To, Delivered-To | `>From ` | empty line |
//! |---------|------------|------------------------------------------|----------|------------|
//! | mbox, `/file` | yes  | yes                                      | yes      | yes        |
//! | Maildir | no         | yes                                      | no       | no         |
//! | command | yes        | yes                                      | no       | no         |

use std::io::{self, BufRead, BufReader, Read, Write};

use chrono::{DateTime, Local};

use crate::deliver::MessageSource;

/// Which parts a copy gets (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub from_line: bool,
    pub quote: bool,
    pub blank_line: bool,
}

impl Style {
    pub const MBOX: Style = Style {
        from_line: true,
        quote: true,
        blank_line: true,
    };
    pub const MAILDIR: Style = Style {
        from_line: false,
        quote: false,
        blank_line: false,
    };
    pub const COMMAND: Style = Style {
        from_line: true,
        quote: false,
        blank_line: false,
    };
}

/// The envelope facts a copy starts with.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    /// Envelope sender, empty for `<>`.
    pub sender: &'a str,
    /// The recipient as the sender gave it.
    pub original: &'a str,
    /// The final address being delivered to.
    pub delivered_to: &'a str,
}

/// `From SENDER  Tue Nov 24 22:55:38 2026`: two spaces, asctime's date in local time
/// (day padded with a space), `MAILER-DAEMON` for the null sender.
pub fn from_line(sender: &str, when: &DateTime<Local>) -> String {
    let who = if sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        sender
    };
    // A sender with white space would break the line for mbox readers.
    let who: String = who
        .chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    format!("From {who}  {}\n", when.format("%a %b %e %H:%M:%S %Y"))
}

/// The lines written before the message.
pub fn prefix(envelope: &Envelope, style: Style, when: &DateTime<Local>) -> Vec<u8> {
    let mut out = String::with_capacity(256);
    if style.from_line {
        out.push_str(&from_line(envelope.sender, when));
    }
    out.push_str(&format!("Return-Path: <{}>\n", clean(envelope.sender)));
    if !envelope.original.is_empty() {
        out.push_str(&format!("X-Original-To: {}\n", clean(envelope.original)));
    }
    out.push_str(&format!("Delivered-To: {}\n", clean(envelope.delivered_to)));
    out.into_bytes()
}

/// Envelope values never contain line breaks (the queue file encodes them), but a header
/// is no place to trust that.
fn clean(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Writes one copy of the message to `out`. Returns the bytes written.
pub fn write_copy(
    out: &mut (impl Write + ?Sized),
    envelope: &Envelope,
    message: &MessageSource,
    style: Style,
    when: &DateTime<Local>,
) -> io::Result<u64> {
    let head = prefix(envelope, style, when);
    out.write_all(&head)?;
    let mut written = head.len() as u64;
    written += copy_body(out, message.reader(), style)?;
    Ok(written)
}

/// Copies the message, quoting `From ` lines when asked (mboxo: a line already starting
/// with `>From ` is left alone), supplying a missing final newline, and adding the empty
/// line after it when asked.
pub fn copy_body(
    out: &mut (impl Write + ?Sized),
    input: impl Read,
    style: Style,
) -> io::Result<u64> {
    let mut reader = BufReader::with_capacity(64 * 1024, input);
    let mut written = 0u64;
    let mut last = b'\n';
    if style.quote {
        let mut line = Vec::with_capacity(1024);
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            if line.starts_with(b"From ") {
                out.write_all(b">")?;
                written += 1;
            }
            out.write_all(&line)?;
            written += line.len() as u64;
            last = line[line.len() - 1];
        }
    } else {
        loop {
            let buf = reader.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            out.write_all(buf)?;
            written += buf.len() as u64;
            last = buf[buf.len() - 1];
            let n = buf.len();
            reader.consume(n);
        }
    }
    if last != b'\n' {
        out.write_all(b"\n")?;
        written += 1;
    }
    if style.blank_line {
        out.write_all(b"\n")?;
        written += 1;
    }
    Ok(written)
}

/// A writer that refuses to grow past a limit with `EFBIG`, as the kernel does for a
/// process over its file size limit (Postfix enforces `mailbox_size_limit` that way).
pub struct Limited<W> {
    pub inner: W,
    /// Bytes still allowed; `None` for no limit.
    pub room: Option<u64>,
}

impl<W: Write> Write for Limited<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(room) = self.room {
            if buf.len() as u64 > room {
                return Err(io::Error::from_raw_os_error(libc::EFBIG));
            }
            let n = self.inner.write(buf)?;
            self.room = Some(room - n as u64);
            return Ok(n);
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn copy(text: &str, style: Style) -> String {
        let mut out = Vec::new();
        copy_body(&mut out, text.as_bytes(), style).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn mbox_quoting_is_mboxo() {
        let text = "Subject: x\n\nFrom here\n>From there\nFromage\n From x\nFrom ";
        assert_eq!(
            copy(text, Style::MBOX),
            "Subject: x\n\n>From here\n>From there\nFromage\n From x\n>From \n\n"
        );
        assert_eq!(
            copy(text, Style::MAILDIR),
            "Subject: x\n\nFrom here\n>From there\nFromage\n From x\nFrom \n"
        );
        assert_eq!(copy("", Style::MBOX), "\n");
    }

    #[test]
    fn from_line_looks_like_asctime() {
        let when = Local.with_ymd_and_hms(2026, 11, 4, 22, 55, 38).unwrap();
        assert_eq!(
            from_line("root@example.com", &when),
            "From root@example.com  Wed Nov  4 22:55:38 2026\n"
        );
        assert!(from_line("", &when).starts_with("From MAILER-DAEMON  "));
    }

    #[test]
    fn envelope_headers() {
        let when = Local.with_ymd_and_hms(2026, 11, 24, 22, 55, 38).unwrap();
        let env = Envelope {
            sender: "",
            original: "alice",
            delivered_to: "alice@example.com",
        };
        assert_eq!(
            String::from_utf8(prefix(&env, Style::MAILDIR, &when)).unwrap(),
            "Return-Path: <>\nX-Original-To: alice\nDelivered-To: alice@example.com\n"
        );
    }

    #[test]
    fn limits_refuse_with_efbig() {
        let mut out = Limited {
            inner: Vec::new(),
            room: Some(4),
        };
        assert!(out.write_all(b"abc").is_ok());
        let err = out.write_all(b"de").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EFBIG));
    }
}
