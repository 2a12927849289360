//! The header block: read from a sender, or composed by the mail system, and completed
//! as Postfix's cleanup completes it.
//!
//! Mail from outside ([`HeaderBlock`]): bare local names in address headers are qualified
//! with `$myorigin` (local submissions only, as Postfix's `local_header_rewrite_clients`
//! does); `Bcc:` and `Resent-Bcc:` are removed; missing `Message-Id:`, `Date:` and
//! `From:` are appended after the sender's fields, in that order; every other field
//! passes byte for byte. Mail the system composes ([`Composed`]) is written as given,
//! with `Date:` and `Message-Id:` where the composer placed them.

use std::io::{self, BufRead, Write};

use super::write::Stamp;
use super::{Failure, Settings};
use crate::address;
use crate::message::headers::{self, Field};
use crate::message::input::{InputError, InputReader};
use crate::queue::NewQueueFile;

impl From<InputError> for Failure {
    fn from(e: InputError) -> Self {
        match e {
            InputError::TooBig { limit } => Failure::TooBig { limit },
            InputError::Io(e) => Failure::Input(e),
        }
    }
}

/// The header block of a message as read, before completion.
pub struct HeaderBlock {
    pub(super) fields: Vec<Field>,
    /// The line that ended the block (the empty line, or the first body line), or `None`
    /// when the input ended inside the headers.
    pub(super) ended_by: Option<Vec<u8>>,
}

impl HeaderBlock {
    /// The fields as read (for `sendmail -t`, which takes recipients from them).
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f.is(name))
    }
}

/// Reads the header block: up to the empty line, or the first line that is not a header
/// field; what ended it is kept for the body. A field longer than `header_size_limit` is
/// cut at the limit and the rest of it (the rest of its line, its further continuation
/// lines) discarded, as Postfix's cleanup does; the fields after it are read as usual.
pub fn read_headers<R: BufRead>(
    reader: &mut InputReader<R>,
    settings: &Settings,
) -> Result<HeaderBlock, Failure> {
    let limit = match settings.header_size_limit {
        0 => usize::MAX,
        n => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let mut fields: Vec<Field> = Vec::new();
    let mut line = Vec::with_capacity(256);
    let mut first = true;
    // The last field reached the limit: its continuation lines go nowhere.
    let mut full = false;
    loop {
        if !reader.next_line(&mut line)? {
            return Ok(HeaderBlock {
                fields,
                ended_by: None,
            });
        }
        // A leading mbox "From " line (or ">From ") is an artefact of the caller's
        // mailbox, not a header: Postfix drops it too.
        if first {
            let stripped = line
                .iter()
                .position(|&c| c != b'>')
                .map_or(&line[..], |p| &line[p..]);
            if stripped.starts_with(b"From ") {
                continue;
            }
        }
        first = false;
        if headers::is_continuation(&line)
            && let Some(last) = fields.last_mut()
        {
            if !full {
                last.raw.extend_from_slice(&line);
                full = last.truncate(limit);
            }
            continue;
        }
        match headers::start_field(&line) {
            Some(mut field) => {
                full = field.truncate(limit);
                fields.push(field);
            }
            None => {
                return Ok(HeaderBlock {
                    fields,
                    ended_by: Some(line),
                });
            }
        }
    }
}

/// Qualifies bare names in address headers with `$myorigin`.
pub(super) fn qualify_address_headers(head: &mut HeaderBlock, settings: &Settings) {
    for field in head
        .fields
        .iter_mut()
        .filter(|f| headers::is_address_header(f))
    {
        let rewritten = address::qualify_header_value(field.value(), &settings.myorigin);
        if rewritten != field.value() {
            field.set_value(&rewritten);
        }
    }
}

/// Writes the sender's fields without `Bcc:`, then the missing `Message-Id:`, `Date:` and
/// `From:` (for `sender`, named `full_name`).
pub(super) fn write_completed(
    file: &mut NewQueueFile,
    head: &HeaderBlock,
    sender: &str,
    full_name: &str,
    settings: &Settings,
    stamp: &Stamp,
) -> io::Result<()> {
    for field in &head.fields {
        if field.is("Bcc") || field.is("Resent-Bcc") {
            continue;
        }
        file.write_all(&field.raw)?;
    }
    if !head.has("Message-Id") {
        stamp.write_message_id(file)?;
    }
    if !head.has("Date") {
        writeln!(file, "Date: {}", stamp.date())?;
    }
    if !head.has("From") {
        writeln!(file, "From: {}", from_header(sender, full_name, settings))?;
    }
    Ok(())
}

/// A header field of a message the mail system composes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Composed {
    /// A whole field as it is to appear, continuation lines included, without the final
    /// line end.
    Text(String),
    /// `Date:` of the moment the file is written.
    Date,
    /// `Message-Id:` naming the queue ID.
    MessageId,
}

pub(super) fn write_composed(
    file: &mut NewQueueFile,
    fields: &[Composed],
    stamp: &Stamp,
) -> io::Result<()> {
    for field in fields {
        match field {
            Composed::Text(text) => writeln!(file, "{text}")?,
            Composed::Date => writeln!(file, "Date: {}", stamp.date())?,
            Composed::MessageId => stamp.write_message_id(file)?,
        }
    }
    Ok(())
}

/// `From: Full Name <sender>`; a bare address when there is no full name. Names with
/// specials are quoted, non-ASCII names RFC 2047-encoded.
fn from_header(sender: &str, full_name: &str, settings: &Settings) -> String {
    let address = if sender.is_empty() {
        format!("MAILER-DAEMON@{}", settings.myorigin)
    } else {
        sender.to_string()
    };
    if full_name.is_empty() {
        return address;
    }
    format!("{} <{address}>", encode_phrase(full_name))
}

fn encode_phrase(name: &str) -> String {
    if name.is_ascii() {
        if !name.bytes().any(|c| b"()<>@,;:\\\".[]".contains(&c)) {
            return name.to_string();
        }
        let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
        return format!("\"{escaped}\"");
    }
    use email_encoding::headers::writer::EmailWriter;
    let mut out = String::new();
    {
        // "From: " is already on the line.
        let mut writer = EmailWriter::new(&mut out, "From: ".len(), 0, false);
        if email_encoding::headers::rfc2047::encode(name, &mut writer).is_err() {
            return name.to_string();
        }
    }
    out.replace("\r\n", "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases_are_quoted_or_encoded() {
        assert_eq!(encode_phrase("CronDaemon"), "CronDaemon");
        assert_eq!(encode_phrase("Some Body"), "Some Body");
        assert_eq!(encode_phrase("Doe, John"), "\"Doe, John\"");
        assert!(encode_phrase("Jürgen").starts_with("=?utf-8?b?"));
    }
}
