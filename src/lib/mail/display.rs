//! What the reader shows: the header summary (one line per message, bsd-mailx's columns)
//! and a message decoded for reading (MIME text parts decoded from quoted-printable or
//! base64 and converted from their charset by mail-parser; attachments listed, not shown).
//!
//! Everything printed passes through [`printable`]: a message must not be able to send
//! escape sequences to the user's terminal.

use std::io::{self, Write};

use mail_parser::{Address, MessageParser, MimeHeaders};

use super::folder::{Folder, Letter};

/// The summary's first line, as bsd-mailx prints it: `"/var/mail/u": 3 messages 2 new`.
pub fn folder_line(folder: &Folder) -> String {
    let live: Vec<&Letter> = folder.letters.iter().filter(|l| !l.deleted).collect();
    let new = live.iter().filter(|l| l.was_new && !l.is_read()).count();
    let unread = live.iter().filter(|l| !l.was_new && !l.is_read()).count();
    let mut line = format!(
        "\"{}\": {} message{}",
        folder.path.display(),
        live.len(),
        if live.len() == 1 { "" } else { "s" }
    );
    if new > 0 {
        line.push_str(&format!(" {new} new"));
    }
    if unread > 0 {
        line.push_str(&format!(" {unread} unread"));
    }
    line
}

/// The status column: `N` new, `U` unread from before, `R` read now, `*` saved, blank
/// for mail read in an earlier session.
pub fn status_char(letter: &Letter) -> char {
    if letter.saved {
        '*'
    } else if letter.read && !letter.was_read {
        'R'
    } else if letter.is_read() {
        ' '
    } else if letter.was_new {
        'N'
    } else {
        'U'
    }
}

/// One summary line: current marker, status, number, sender, date, lines/bytes, subject.
pub fn summary_line(letter: &Letter, number: usize, current: bool) -> String {
    let parsed = MessageParser::new().parse_headers(&letter.raw);
    let sender = parsed
        .as_ref()
        .and_then(|m| m.from())
        .and_then(|a| a.first())
        .and_then(|a| a.address().or(a.name()).map(str::to_string))
        .or_else(|| envelope_sender(letter))
        .unwrap_or_default();
    let date = envelope_date(letter)
        .or_else(|| {
            parsed
                .as_ref()
                .and_then(|m| m.date())
                .and_then(|d| chrono::DateTime::from_timestamp(d.to_timestamp(), 0))
                .map(|d| {
                    d.with_timezone(&chrono::Local)
                        .format("%a %b %e %H:%M")
                        .to_string()
                })
        })
        .unwrap_or_default();
    let subject = parsed
        .as_ref()
        .and_then(|m| m.subject())
        .unwrap_or("")
        .to_string();
    let lines = letter.raw.iter().filter(|&&c| c == b'\n').count();
    format!(
        "{}{}{:>3} {:<20}  {:<16} {:>3}/{:<5} {}",
        if current { '>' } else { ' ' },
        status_char(letter),
        number,
        clip(&printable(&sender), 20),
        clip(&printable(&date), 16),
        lines,
        letter.raw.len(),
        clip(&printable(&subject), 40),
    )
    .trim_end()
    .to_string()
}

/// The sender on the mbox `From ` line.
fn envelope_sender(letter: &Letter) -> Option<String> {
    let line = String::from_utf8_lossy(letter.from_line.as_ref()?).into_owned();
    line.split_whitespace().nth(1).map(str::to_string)
}

/// `Tue Nov 24 10:00` from the mbox `From sender Tue Nov 24 10:00:00 2020` line.
fn envelope_date(letter: &Letter) -> Option<String> {
    let line = String::from_utf8_lossy(letter.from_line.as_ref()?).into_owned();
    let words: Vec<&str> = line.split_whitespace().collect();
    let [_, _, day, month, date, time, ..] = words.as_slice() else {
        return None;
    };
    let time = time.get(..5).unwrap_or(time);
    Some(format!("{day} {month} {date:>2} {time}"))
}

fn clip(text: &str, width: usize) -> String {
    text.chars().take(width).collect()
}

/// Text safe for a terminal: control characters other than tab and newline become `?`.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// The whole summary.
pub fn write_summary_all(out: &mut impl Write, folder: &Folder) -> io::Result<()> {
    writeln!(out, "{}", folder_line(folder))?;
    for (i, letter) in folder.letters.iter().enumerate() {
        if !letter.deleted {
            writeln!(out, "{}", summary_line(letter, i + 1, false))?;
        }
    }
    Ok(())
}

/// Header fields shown when a message is printed, in this order.
const SHOWN: &[&str] = &["From", "Date", "To", "Cc", "Subject"];

/// A message for reading: the `From ` line, the main header fields decoded, then the
/// text parts decoded, and one line per attachment.
pub fn render(letter: &Letter) -> String {
    let text = letter.text();
    let mut out = String::new();
    if let Some(line) = &letter.from_line {
        out.push_str(&String::from_utf8_lossy(line));
    }
    let Some(message) = MessageParser::default().parse(&text) else {
        out.push_str(&String::from_utf8_lossy(&text));
        return printable(&out);
    };
    for name in SHOWN {
        let value = match *name {
            "From" => message.from().map(format_address),
            "To" => message.to().map(format_address),
            "Cc" => message.cc().map(format_address),
            "Subject" => message.subject().map(str::to_string),
            _ => message.header_raw(*name).map(|v| v.trim().to_string()),
        };
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            out.push_str(&format!("{name}: {value}\n"));
        }
    }
    out.push('\n');
    for i in 0..message.text_body_count() {
        if let Some(body) = message.body_text(i) {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&body);
            if !body.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    for (n, part) in message.attachments().enumerate() {
        let kind = part
            .content_type()
            .map(|t| match t.subtype() {
                Some(sub) => format!("{}/{sub}", t.ctype()),
                None => t.ctype().to_string(),
            })
            .unwrap_or_else(|| "application/octet-stream".into());
        let name = part.attachment_name().unwrap_or("(no name)");
        out.push_str(&format!(
            "[-- Attachment #{}: {name} ({kind}, {} bytes) --]\n",
            n + 1,
            part.len()
        ));
    }
    printable(&out)
}

fn format_address(address: &Address) -> String {
    address
        .iter()
        .map(|a| match (a.name(), a.address()) {
            (Some(name), Some(addr)) => format!("{name} <{addr}>"),
            (None, Some(addr)) => addr.to_string(),
            (Some(name), None) => name.to_string(),
            (None, None) => String::new(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(raw: &[u8]) -> Letter {
        Letter {
            raw: raw.to_vec(),
            from_line: Some(b"From alice@example.com Tue Nov 24 10:00:00 2020\n".to_vec()),
            stored: Vec::new(),
            maildir: None,
            was_new: true,
            was_read: false,
            read: false,
            deleted: false,
            saved: false,
        }
    }

    #[test]
    fn summary_has_mailx_columns() {
        let l = letter(
            b"From: Alice <alice@example.com>\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\n\nhi\n",
        );
        let line = summary_line(&l, 1, true);
        assert!(line.starts_with(">N  1 alice@example.com"), "{line}");
        assert!(line.contains("Tue Nov 24 10:00"), "{line}");
        assert!(line.ends_with("Grüße"), "{line}");
        assert!(line.contains("  4/"), "{line}");
    }

    #[test]
    fn renders_mime_text_and_lists_attachments() {
        let raw = b"From: a@x\nSubject: t\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n\
--b\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\nK=F6ln\n\
--b\nContent-Type: application/pdf\nContent-Disposition: attachment; filename=r.pdf\nContent-Transfer-Encoding: base64\n\nAAEC\n--b--\n";
        let text = render(&letter(raw));
        assert!(text.contains("Subject: t\n"), "{text}");
        assert!(text.contains("Köln"), "{text}");
        assert!(
            text.contains("Attachment #1: r.pdf (application/pdf, 3 bytes)"),
            "{text}"
        );
    }

    #[test]
    fn garbage_never_panics_and_escapes_are_neutralised() {
        for raw in [
            &b""[..],
            b"\xff\xfe",
            b"Subject: \x1b[31mred\n\n\x1b]0;x\x07",
            b"\n\n\n",
        ] {
            let l = letter(raw);
            let _ = summary_line(&l, 1, false);
            let shown = render(&l);
            assert!(!shown.contains('\x1b'), "{shown:?}");
        }
    }
}
