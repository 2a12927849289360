//! Building an outgoing message: header fields (RFC 2047-encoded where they carry
//! non-ASCII text) and a MIME body (a text part, plus one part per attachment with its
//! content type guessed from the file name). lettre does the MIME and the encodings; we only
//! choose what goes in.
//!
//! Bcc recipients never appear in the message: they are returned in the envelope only.

use std::path::{Path, PathBuf};

use lettre::message::header::{
    self, ContentTransferEncoding, ContentType, Header as _, HeaderName, HeaderValue, Headers,
};
use lettre::message::{Attachment, Body, Mailboxes, MultiPart, SinglePart};

use crate::address;
use crate::sysexits::{Error, ExitCode, Result};

/// `User-Agent` we write, so a recipient can tell what sent a message.
pub const USER_AGENT: &str = concat!("mailroom-mail/", env!("CARGO_PKG_VERSION"));

/// A message to be sent, as the user described it.
#[derive(Debug, Default, Clone)]
pub struct Draft {
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub from: Option<String>,
    pub subject: Option<String>,
    /// `Name: value` fields given on the command line.
    pub extra_headers: Vec<String>,
    pub in_reply_to: Option<String>,
    pub references: Option<String>,
    pub body: Vec<u8>,
    pub attachments: Vec<PathBuf>,
}

impl Draft {
    /// Every envelope recipient: To, Cc and Bcc, each argument split as an address list.
    pub fn envelope_recipients(&self) -> Result<Vec<String>> {
        let mut all = Vec::new();
        for arg in self.to.iter().chain(&self.cc).chain(&self.bcc) {
            let found = address::parse_list(arg.as_bytes())
                .map_err(|e| Error::data(format!("{arg}: {e}")))?;
            for f in found {
                if !f.address.is_empty() {
                    all.push(f.address);
                }
            }
        }
        if all.is_empty() {
            return Err(Error::usage("no recipients"));
        }
        Ok(all)
    }

    /// The envelope sender for `-f`: the address part of `from`.
    pub fn envelope_sender(&self) -> Result<Option<String>> {
        let Some(from) = &self.from else {
            return Ok(None);
        };
        let found = address::parse_list(from.as_bytes())
            .map_err(|e| Error::data(format!("{from}: {e}")))?;
        match found.as_slice() {
            [one] => Ok(Some(one.address.clone())),
            _ => Err(Error::data(format!(
                "{from}: need exactly one From address"
            ))),
        }
    }

    /// True when there is nothing to send: no body text and no attachment (`-E`).
    pub fn is_empty(&self) -> bool {
        self.body.iter().all(u8::is_ascii_whitespace) && self.attachments.is_empty()
    }
}

/// The message bytes (Unix line endings) for `draft`, dated `date`.
pub fn build(draft: &Draft, date: &str) -> Result<Vec<u8>> {
    for text in [
        &draft.subject,
        &draft.from,
        &draft.in_reply_to,
        &draft.references,
    ]
    .into_iter()
    .flatten()
    .chain(&draft.to)
    .chain(&draft.cc)
    .chain(&draft.bcc)
    .chain(&draft.extra_headers)
    {
        // A line break would start a header of the caller's choosing.
        if text.contains(['\r', '\n']) {
            return Err(Error::usage(format!(
                "line break in header text: {}",
                text.escape_debug()
            )));
        }
    }
    let mut headers = Headers::new();
    if let Some(from) = &draft.from {
        address_header(&mut headers, "From", std::slice::from_ref(from));
    }
    headers.insert_raw(ascii_header("Date", date));
    if !draft.to.is_empty() {
        address_header(&mut headers, "To", &draft.to);
    }
    if !draft.cc.is_empty() {
        address_header(&mut headers, "Cc", &draft.cc);
    }
    if let Some(subject) = &draft.subject {
        headers.set(header::Subject::from(subject.clone()));
    }
    if let Some(id) = &draft.in_reply_to {
        headers.set(header::InReplyTo::from(id.clone()));
    }
    if let Some(refs) = &draft.references {
        headers.set(header::References::from(refs.clone()));
    }
    for field in &draft.extra_headers {
        let (name, value) = field.split_once(':').unwrap_or((field, ""));
        let name = HeaderName::new_from_ascii(name.trim().to_string())
            .map_err(|_| Error::usage(format!("bad header name: {field}")))?;
        headers.insert_raw(HeaderValue::new(name, value.trim().to_string()));
    }
    headers.set(header::UserAgent::from(USER_AGENT.to_string()));
    headers.set(header::MIME_VERSION_1_0);

    let text = text_part(&draft.body);
    let body = if draft.attachments.is_empty() {
        let mut single = text.formatted();
        // lettre ends a part with a line break of its own; without a boundary after it,
        // that would add a blank line to the body.
        if single.ends_with(b"\r\n\r\n") {
            single.truncate(single.len() - 2);
        }
        single
    } else {
        let mut mixed = MultiPart::mixed().singlepart(text);
        for path in &draft.attachments {
            mixed = mixed.singlepart(attachment(path)?);
        }
        mixed.formatted()
    };
    let mut out = headers.to_string().into_bytes();
    out.extend_from_slice(&body);
    Ok(unix_line_endings(&out))
}

/// Address list fields go through lettre when it can parse them, so display names are
/// quoted and encoded properly; bare local names (`root`), which lettre refuses, are
/// written as given (they are ASCII without line breaks, checked above).
fn address_header(headers: &mut Headers, name: &'static str, values: &[String]) {
    let joined = values.join(", ");
    let value = match joined.parse::<Mailboxes>() {
        Ok(list) => match name {
            "From" => header::From::from(list).display(),
            "To" => header::To::from(list).display(),
            _ => header::Cc::from(list).display(),
        },
        Err(_) if joined.is_ascii() => ascii_header(name, &joined),
        Err(_) => HeaderValue::new(HeaderName::new_from_ascii_str(name), joined),
    };
    headers.insert_raw(value);
}

fn ascii_header(name: &'static str, value: &str) -> HeaderValue {
    HeaderValue::dangerous_new_pre_encoded(
        HeaderName::new_from_ascii_str(name),
        value.to_string(),
        value.to_string(),
    )
}

/// The text part: UTF-8 text as `text/plain; charset=utf-8` (lettre picks 7bit,
/// quoted-printable or base64); other bytes are declared `unknown-8bit` and sent base64,
/// unchanged.
fn text_part(body: &[u8]) -> SinglePart {
    match std::str::from_utf8(body) {
        Ok(text) if !text.contains('\r') => SinglePart::builder()
            .header(ContentType::TEXT_PLAIN)
            .body(text_body(text)),
        _ => SinglePart::builder()
            .header(content_type("text/plain; charset=unknown-8bit"))
            .body(body.to_vec()),
    }
}

fn attachment(path: &Path) -> Result<SinglePart> {
    let bytes = std::fs::read(path).map_err(|e| {
        let code = match e.kind() {
            std::io::ErrorKind::PermissionDenied => ExitCode::NoPerm,
            _ => ExitCode::NoInput,
        };
        Error::new(
            code,
            format!("{}: {}", path.display(), crate::sysexits::describe_io(&e)),
        )
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "attachment".into());
    let guessed = mime_guess::from_path(path).first_or_octet_stream();
    let part = Attachment::new(name);
    // Text goes as text (readable in any client, quoted-printable at worst) when it is
    // UTF-8 without carriage returns, which lettre would turn into line breaks; anything
    // else as base64, so its bytes come back unchanged.
    Ok(match std::str::from_utf8(&bytes) {
        Ok(text) if guessed.type_() == mime_guess::mime::TEXT && !text.contains('\r') => {
            let kind = format!("{}; charset=utf-8", guessed.essence_str());
            part.body(text_body(text), content_type(&kind))
        }
        _ => part.body(bytes, content_type(guessed.essence_str())),
    })
}

/// A text body in 7bit when it can be, else quoted-printable. lettre would pick base64
/// for text with much non-ASCII, but it encodes text with CRLF line ends, and base64 keeps
/// those CRs in the decoded text where readers (Python's `email`, for one) leave them;
/// quoted-printable line breaks decode to the reader's own line ends.
///
/// Text with a line that starts with "From " is quoted-printable too, with that F written
/// `=46`, as s-nail and mutt write it: sent as it is, the line would be quoted to ">From "
/// by the first mbox it is delivered to, and the text would not come back as it was.
/// `text` has no carriage returns (the callers send such text as base64).
fn text_body(text: &str) -> Body {
    let body = Body::new(text.to_string());
    let from_line = text.starts_with("From ") || text.contains("\nFrom ");
    match body.encoding() {
        ContentTransferEncoding::SevenBit | ContentTransferEncoding::EightBit if !from_line => body,
        _ => quoted_printable(text),
    }
}

/// `text` quoted-printable, with no encoded line starting with "From ". lettre's encoder
/// (the `quoted_printable` crate) has no such option, so the lines are wrapped two short
/// of RFC 2045's 76 characters, which leaves room to write a leading F as `=46`.
fn quoted_printable(text: &str) -> Body {
    let options = quoted_printable::Options::default().line_length_limit(74);
    let encoded = quoted_printable::encode_with_options(text.replace('\n', "\r\n"), options);
    let mut out = String::with_capacity(encoded.len() + 16);
    for (i, line) in encoded.split("\r\n").enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        match line.strip_prefix('F') {
            Some(rest) if rest.starts_with("rom ") => {
                out.push_str("=46");
                out.push_str(rest);
            }
            _ => out.push_str(line),
        }
    }
    Body::dangerous_pre_encoded(out.into_bytes(), ContentTransferEncoding::QuotedPrintable)
}

fn content_type(text: &str) -> ContentType {
    ContentType::parse(text)
        .unwrap_or_else(|_| ContentType::parse("application/octet-stream").expect("valid type"))
}

fn unix_line_endings(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'\r' && data.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(data[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(draft: &Draft) -> String {
        String::from_utf8(build(draft, "Tue, 24 Nov 2020 10:00:00 +0000").unwrap()).unwrap()
    }

    #[test]
    fn plain_message_headers() {
        let draft = Draft {
            to: vec!["admin@example.com".into()],
            cc: vec!["root".into()],
            bcc: vec!["secret@example.com".into()],
            subject: Some("test".into()),
            body: b"mail content\n".to_vec(),
            ..Draft::default()
        };
        let msg = text(&draft);
        assert!(msg.starts_with("Date: Tue, 24 Nov 2020"), "{msg}");
        assert!(msg.contains("\nTo: admin@example.com\n"), "{msg}");
        assert!(msg.contains("\nCc: root\n"), "{msg}");
        assert!(msg.contains("\nSubject: test\n"));
        assert!(msg.contains("\nMIME-Version: 1.0\n"));
        assert!(
            msg.contains("Content-Type: text/plain; charset=utf-8\n"),
            "{msg}"
        );
        assert!(!msg.contains("secret"));
        assert!(!msg.contains("From:"));
        assert!(!msg.contains('\r'));
        assert!(msg.ends_with("\n\nmail content\n"), "{msg}");
        assert_eq!(
            draft.envelope_recipients().unwrap(),
            ["admin@example.com", "root", "secret@example.com"]
        );
    }

    #[test]
    fn non_ascii_subject_is_encoded() {
        let draft = Draft {
            to: vec!["a@x".into()],
            subject: Some("Grüße aus Köln".into()),
            body: "Grüße\n".as_bytes().to_vec(),
            ..Draft::default()
        };
        let msg = text(&draft);
        assert!(msg.contains("Subject: =?utf-8?"), "{msg}");
        assert!(msg.is_ascii(), "{msg}");
    }

    #[test]
    fn refuses_header_injection() {
        let draft = Draft {
            to: vec!["a@x".into()],
            subject: Some("hi\nBcc: victim@y".into()),
            ..Draft::default()
        };
        assert_eq!(build(&draft, "x").unwrap_err().code(), 64);
    }

    #[test]
    fn from_and_envelope_sender() {
        let draft = Draft {
            to: vec!["a@x, b@y".into()],
            from: Some("Jo Doe <jo@example.com>".into()),
            ..Draft::default()
        };
        assert_eq!(
            draft.envelope_sender().unwrap().as_deref(),
            Some("jo@example.com")
        );
        assert_eq!(draft.envelope_recipients().unwrap(), ["a@x", "b@y"]);
        let msg = text(&draft);
        assert!(
            msg.starts_with("From: \"Jo Doe\" <jo@example.com>\n"),
            "{msg}"
        );
        assert!(draft.is_empty());
    }

    #[test]
    fn from_lines_are_encoded_and_lines_stay_short() {
        let mut typed = String::from("From the start\nnot From\n");
        for n in 60..80 {
            typed.push_str(&format!("{}From here\n", "x".repeat(n)));
        }
        let draft = Draft {
            to: vec!["a@x".into()],
            body: typed.clone().into_bytes(),
            ..Draft::default()
        };
        let msg = text(&draft);
        assert!(msg.contains("Content-Transfer-Encoding: quoted-printable\n"));
        let (_, body) = msg.split_once("\n\n").unwrap();
        assert!(body.starts_with("=46rom the start\nnot From\n"), "{body}");
        for line in body.lines() {
            assert!(!line.starts_with("From "), "{line:?} in\n{body}");
            assert!(line.len() <= 76, "{line:?}");
        }
        let decoded = quoted_printable::decode(
            body.replace('\n', "\r\n"),
            quoted_printable::ParseMode::Strict,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap().replace("\r\n", "\n"),
            typed
        );
        // Without such a line, short ASCII text stays 7bit.
        let plain = Draft {
            body: b"Dear From,\n".to_vec(),
            ..draft
        };
        assert!(text(&plain).contains("Content-Transfer-Encoding: 7bit\n"));
    }

    #[test]
    fn missing_attachment_is_no_input() {
        let draft = Draft {
            to: vec!["a@x".into()],
            attachments: vec!["/nonexistent/file.pdf".into()],
            ..Draft::default()
        };
        assert_eq!(build(&draft, "x").unwrap_err().code(), 66);
    }
}
