//! The queue file's envelope: the records before the message, and how they are written
//! and read. `man/mailroom-queue.5` documents the format; keep the two in step.
//!
//! ```text
//! mailroom-queue 1
//! id 0cQ3x7Lk2a
//! arrival 1795561017.123456
//! size 00000000000000000243
//! uid 0
//! sender root@example.com
//! fullname Charlie%20Root
//! ret full
//! envid -
//! attempts 0
//! next 0
//! rcpt P - alice alice@example.com -
//! <empty line>
//! <the message, LF line endings>
//! ```
//!
//! One record per line, `KEY VALUE`. Values are percent-encoded (`%`, space, controls,
//! DEL), so no value can break a line or a field; a field that is exactly `-` is empty.
//! `size` is fixed-width so that it can be filled in after the message has been streamed,
//! and each `rcpt` line's state letter sits at a known offset so that delivery can mark a
//! recipient done with a one-byte write.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Read};

use super::id::QueueId;

pub const MAGIC: &str = "mailroom-queue 1";
/// Width of the `size` value, so it can be rewritten in place.
pub const SIZE_WIDTH: usize = 20;
/// An envelope larger than this is not a queue file we wrote: [`MAX_RECIPIENTS`] records
/// of [`MAX_RECORD`] bytes fit in it, with room to spare.
const MAX_ENVELOPE: usize = 64 << 20;

// Every field read from a queue file has a bound, so that a file nobody should trust
// (`maildrop/` takes files from every local user) cannot hand megabytes to code that
// expects an address: a value over its bound makes the file corrupt. The writers keep to
// the same bounds (`check_bounds`, and `serialize` cuts free text), so no file we write is
// ever refused by a reader. `man/mailroom-queue.5` lists them.

/// Addresses: `sender`, and each recipient's original and delivery address.
pub const MAX_ADDRESS: usize = crate::address::MAX_ADDRESS_LEN;
/// The sender's full name (free text: cut, when longer, by the writer).
pub const MAX_FULL_NAME: usize = 256;
/// DSN RET: `full` or `hdrs`.
pub const MAX_RET: usize = 4;
/// DSN ENVID: RFC 3461 section 4.4 allows 100 characters.
pub const MAX_ENVID: usize = 100;
/// DSN NOTIFY: `never`, or a list of `success`, `failure`, `delay`.
pub const MAX_NOTIFY: usize = 32;
/// A deferral reason (free text: cut, when longer, by the writer).
pub const MAX_REASON: usize = 1000;
/// Recipients of one message.
pub const MAX_RECIPIENTS: usize = 10_000;
/// One record line as stored (values percent-encoded, so up to three times their
/// decoded bound): the longest `rcpt` record is about 5,000 bytes.
pub const MAX_RECORD: usize = 8192;

/// The bound of a text field, by its record name (`rcpt` fields by their own names).
fn bound(field: &str) -> usize {
    match field {
        "sender" | "original" | "address" => MAX_ADDRESS,
        "fullname" => MAX_FULL_NAME,
        "ret" => MAX_RET,
        "envid" => MAX_ENVID,
        "notify" => MAX_NOTIFY,
        "reason" => MAX_REASON,
        _ => MAX_RECORD,
    }
}

/// Why an envelope is refused: by [`Envelope::parse`] (the file is corrupt) or by
/// [`Envelope::check_bounds`] (no reader would take it). The message is short: it goes in
/// a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    NotUtf8,
    /// The first line is not [`MAGIC`].
    BadMagic,
    /// A record line over [`MAX_RECORD`]: its key (shortened) and length.
    RecordTooLong {
        key: String,
        len: usize,
    },
    /// More than [`MAX_RECIPIENTS`]: how many, when known (a reader stops counting).
    TooManyRecipients(Option<usize>),
    /// A decoded field over its bound: the field and its length.
    FieldTooLong {
        field: &'static str,
        len: usize,
    },
    /// A record whose value does not parse: its key and value (shortened).
    BadRecord {
        key: String,
        value: String,
    },
    /// A required record is absent: its key.
    Missing(&'static str),
}

impl std::fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvelopeError::NotUtf8 => f.write_str("envelope is not UTF-8"),
            EnvelopeError::BadMagic => f.write_str("not a mailroom queue file (bad magic line)"),
            EnvelopeError::RecordTooLong { key, len } => {
                write!(
                    f,
                    "{key} record longer than {MAX_RECORD} bytes ({len} bytes)"
                )
            }
            EnvelopeError::TooManyRecipients(Some(n)) => {
                write!(f, "more than {MAX_RECIPIENTS} recipients ({n})")
            }
            EnvelopeError::TooManyRecipients(None) => {
                write!(f, "more than {MAX_RECIPIENTS} recipients")
            }
            EnvelopeError::FieldTooLong { field, len } => {
                let max = bound(field);
                write!(f, "{field} longer than {max} bytes ({len} bytes)")
            }
            EnvelopeError::BadRecord { key, value } => write!(f, "bad {key} record: {value:?}"),
            EnvelopeError::Missing(key) => write!(f, "missing {key} record"),
        }
    }
}

impl std::error::Error for EnvelopeError {}

/// Checks a decoded field against its bound.
fn within(field: &'static str, value: &str) -> Result<(), EnvelopeError> {
    if value.len() > bound(field) {
        return Err(EnvelopeError::FieldTooLong {
            field,
            len: value.len(),
        });
    }
    Ok(())
}

/// The longest start of `text` that is at most `max` bytes and ends on a character
/// boundary.
pub fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Where a recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RcptState {
    /// Not yet delivered: never tried, or deferred (then `reason` says why).
    Pending,
    /// Delivered; never sent again.
    Delivered,
    /// Failed for good; the sender has been (or will not be) notified.
    Bounced,
}

impl RcptState {
    pub fn letter(self) -> u8 {
        match self {
            RcptState::Pending => b'P',
            RcptState::Delivered => b'D',
            RcptState::Bounced => b'B',
        }
    }

    fn from_letter(c: &str) -> Option<RcptState> {
        match c {
            "P" => Some(RcptState::Pending),
            "D" => Some(RcptState::Delivered),
            "B" => Some(RcptState::Bounced),
            _ => None,
        }
    }

    pub fn is_done(self) -> bool {
        self != RcptState::Pending
    }
}

/// One recipient of an [`Envelope`], whose `Text` it shares: `String`s of its own, or
/// text borrowed from the file's bytes in an [`EnvelopeView`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient<Text = String> {
    pub state: RcptState,
    /// DSN NOTIFY (`never`, or a comma list of `success`, `failure`, `delay`); empty for
    /// the default.
    pub notify: Text,
    /// The address as the sender gave it (for `X-Original-To:` and DSN
    /// `Original-Recipient`).
    pub original: Text,
    /// The qualified address we deliver to.
    pub address: Text,
    /// Why the last attempt was deferred, empty when never deferred.
    pub reason: Text,
    /// Byte offset of the state letter in the file, filled in when read from disk.
    pub state_offset: u64,
}

impl Recipient {
    pub fn new(original: &str, address: &str) -> Recipient {
        Recipient {
            state: RcptState::Pending,
            notify: String::new(),
            original: original.to_string(),
            address: address.to_string(),
            reason: String::new(),
            state_offset: 0,
        }
    }
}

/// A queue file's envelope. `Text` is `String` for a reader that keeps or changes it,
/// and borrowed text in an [`EnvelopeView`], for one that only looks: one set of fields
/// for both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<Text = String> {
    pub id: QueueId,
    /// Arrival time in microseconds since the epoch.
    pub arrival_micros: u64,
    /// Bytes of the message that follows the envelope.
    pub size: u64,
    /// The real uid of the submitting process.
    pub uid: u32,
    /// Envelope sender; empty for the null sender `<>`.
    pub sender: Text,
    pub full_name: Text,
    /// DSN RET (`full` or `hdrs`), empty for the default.
    pub ret: Text,
    /// DSN ENVID, empty when none.
    pub envid: Text,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Unix time of the next attempt for deferred mail, 0 for "as soon as possible".
    pub next_attempt: u64,
    pub recipients: Vec<Recipient<Text>>,
    /// Length of the envelope in bytes, including the empty line that ends it: the
    /// message starts at this offset. Filled in when read from disk or serialised.
    pub message_offset: u64,
    /// Offset of the `size` value, filled in by `serialize` and `parse`.
    pub size_offset: u64,
    /// Offset of the `id` value.
    pub id_offset: u64,
}

/// An envelope parsed where it lies ([`EnvelopeView::parse_in_place`]): text fields
/// borrow from the bytes it was read from, and only a value with a percent escape gets a
/// string of its own. Listing a queue reads each envelope once and drops it, where owned
/// strings would cost an allocation and a free for every field of every message.
pub type EnvelopeView<'a> = Envelope<Cow<'a, str>>;

impl<Text> Envelope<Text> {
    /// Arrival time in whole seconds since the epoch.
    pub fn arrival_secs(&self) -> i64 {
        (self.arrival_micros / 1_000_000) as i64
    }

    /// Recipients still waiting for delivery.
    pub fn pending(&self) -> impl Iterator<Item = &Recipient<Text>> {
        self.recipients.iter().filter(|r| !r.state.is_done())
    }
}

impl Envelope {
    pub fn new(id: QueueId, arrival_micros: u64, uid: u32, sender: &str) -> Envelope {
        Envelope {
            id,
            arrival_micros,
            size: 0,
            uid,
            sender: sender.to_string(),
            full_name: String::new(),
            ret: String::new(),
            envid: String::new(),
            attempts: 0,
            next_attempt: 0,
            recipients: Vec::new(),
            message_offset: 0,
            size_offset: 0,
            id_offset: 0,
        }
    }

    /// Whether every field is within the bounds a reader accepts (see [`MAX_ADDRESS`] and
    /// the others). Free text (the full name, deferral reasons) is cut by [`serialize`]
    /// instead, so it is not checked here.
    ///
    /// [`serialize`]: Envelope::serialize
    pub fn check_bounds(&self) -> Result<(), EnvelopeError> {
        within("sender", &self.sender)?;
        within("ret", &self.ret)?;
        within("envid", &self.envid)?;
        if self.recipients.len() > MAX_RECIPIENTS {
            return Err(EnvelopeError::TooManyRecipients(Some(
                self.recipients.len(),
            )));
        }
        for rcpt in &self.recipients {
            within("notify", &rcpt.notify)?;
            within("original", &rcpt.original)?;
            within("address", &rcpt.address)?;
        }
        Ok(())
    }

    /// The envelope as bytes, ready to be followed by the message. Records offsets of the
    /// in-place-editable fields. The full name and deferral reasons are cut to their
    /// bounds; the other fields must be within theirs ([`check_bounds`]).
    ///
    /// [`check_bounds`]: Envelope::check_bounds
    pub fn serialize(&mut self) -> Vec<u8> {
        let mut out = String::with_capacity(256 + 64 * self.recipients.len());
        out.push_str(MAGIC);
        out.push('\n');
        out.push_str("id ");
        self.id_offset = out.len() as u64;
        out.push_str(self.id.as_str());
        out.push('\n');
        let _ = writeln!(
            out,
            "arrival {}.{:06}",
            self.arrival_micros / 1_000_000,
            self.arrival_micros % 1_000_000
        );
        out.push_str("size ");
        self.size_offset = out.len() as u64;
        let _ = writeln!(out, "{:0width$}", self.size, width = SIZE_WIDTH);
        let _ = writeln!(out, "uid {}", self.uid);
        let _ = writeln!(out, "sender {}", encode(&self.sender));
        let _ = writeln!(
            out,
            "fullname {}",
            encode(clip(&self.full_name, MAX_FULL_NAME))
        );
        let _ = writeln!(out, "ret {}", encode(&self.ret));
        let _ = writeln!(out, "envid {}", encode(&self.envid));
        let _ = writeln!(out, "attempts {}", self.attempts);
        let _ = writeln!(out, "next {}", self.next_attempt);
        for rcpt in &mut self.recipients {
            out.push_str("rcpt ");
            rcpt.state_offset = out.len() as u64;
            out.push(rcpt.state.letter() as char);
            let _ = writeln!(
                out,
                " {} {} {} {}",
                encode(&rcpt.notify),
                encode(&rcpt.original),
                encode(&rcpt.address),
                encode(clip(&rcpt.reason, MAX_REASON))
            );
        }
        out.push('\n');
        self.message_offset = out.len() as u64;
        out.into_bytes()
    }

    /// Parses an envelope from its bytes (everything before the empty line; the empty line
    /// itself may or may not be included).
    pub fn parse(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        EnvelopeView::parse_in_place(bytes).map(EnvelopeView::into_owned)
    }
}

impl<'a> EnvelopeView<'a> {
    /// Parses an envelope from its bytes (everything before the empty line; the empty line
    /// itself may or may not be included). This is the one parser: [`Envelope::parse`]
    /// is this and [`into_owned`](Self::into_owned).
    pub fn parse_in_place(bytes: &'a [u8]) -> Result<EnvelopeView<'a>, EnvelopeError> {
        let text = std::str::from_utf8(bytes).map_err(|_| EnvelopeError::NotUtf8)?;
        let mut lines = text.split('\n');
        if lines.next() != Some(MAGIC) {
            return Err(EnvelopeError::BadMagic);
        }
        let mut offset = MAGIC.len() as u64 + 1;
        let mut fields = Fields::default();
        let mut recipients = Vec::new();
        for line in lines {
            let line_start = offset;
            offset += line.len() as u64 + 1;
            if line.is_empty() {
                break;
            }
            if line.len() > MAX_RECORD {
                let key = line.split(' ').next().unwrap_or("");
                return Err(EnvelopeError::RecordTooLong {
                    key: crate::address::shorten(key),
                    len: line.len(),
                });
            }
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            let value_offset = line_start + key.len() as u64 + 1;
            if key == "rcpt" {
                if recipients.len() == MAX_RECIPIENTS {
                    return Err(EnvelopeError::TooManyRecipients(None));
                }
                recipients.push(parse_rcpt(value, value_offset)?);
            } else {
                fields.take(key, value, value_offset)?;
            }
        }
        let mut env = fields.into_view()?;
        env.recipients = recipients;
        env.message_offset = offset;
        Ok(env)
    }

    /// The same envelope with strings of its own.
    pub fn into_owned(self) -> Envelope {
        Envelope {
            id: self.id,
            arrival_micros: self.arrival_micros,
            size: self.size,
            uid: self.uid,
            sender: self.sender.into_owned(),
            full_name: self.full_name.into_owned(),
            ret: self.ret.into_owned(),
            envid: self.envid.into_owned(),
            attempts: self.attempts,
            next_attempt: self.next_attempt,
            recipients: self
                .recipients
                .into_iter()
                .map(|r| Recipient {
                    state: r.state,
                    notify: r.notify.into_owned(),
                    original: r.original.into_owned(),
                    address: r.address.into_owned(),
                    reason: r.reason.into_owned(),
                    state_offset: r.state_offset,
                })
                .collect(),
            message_offset: self.message_offset,
            size_offset: self.size_offset,
            id_offset: self.id_offset,
        }
    }
}

/// The scalar records, collected before they are checked for completeness.
#[derive(Default)]
struct Fields<'a> {
    id: Option<(QueueId, u64)>,
    arrival: Option<u64>,
    size: Option<(u64, u64)>,
    uid: Option<u32>,
    sender: Option<Cow<'a, str>>,
    full_name: Cow<'a, str>,
    ret: Cow<'a, str>,
    envid: Cow<'a, str>,
    attempts: u32,
    next: u64,
}

impl<'a> Fields<'a> {
    fn take(&mut self, key: &str, value: &'a str, value_offset: u64) -> Result<(), EnvelopeError> {
        let bad = || EnvelopeError::BadRecord {
            key: key.to_string(),
            value: crate::address::shorten(value),
        };
        let text = |field: &'static str| -> Result<Cow<'a, str>, EnvelopeError> {
            let decoded = decode_in_place(value).ok_or_else(bad)?;
            within(field, &decoded)?;
            Ok(decoded)
        };
        match key {
            "id" => self.id = Some((QueueId::parse(value).ok_or_else(bad)?, value_offset)),
            "arrival" => {
                let (secs, micros) = value.split_once('.').unwrap_or((value, "0"));
                let secs: u64 = secs.parse().map_err(|_| bad())?;
                let micros: u64 = micros.parse().map_err(|_| bad())?;
                let arrival = secs
                    .checked_mul(1_000_000)
                    .and_then(|m| m.checked_add(micros.min(999_999)))
                    .ok_or_else(bad)?;
                self.arrival = Some(arrival);
            }
            "size" => self.size = Some((value.parse().map_err(|_| bad())?, value_offset)),
            "uid" => self.uid = Some(value.parse().map_err(|_| bad())?),
            "sender" => self.sender = Some(text("sender")?),
            "fullname" => self.full_name = text("fullname")?,
            "ret" => self.ret = text("ret")?,
            "envid" => self.envid = text("envid")?,
            "attempts" => self.attempts = value.parse().map_err(|_| bad())?,
            "next" => self.next = value.parse().map_err(|_| bad())?,
            // Records from a later minor revision are skipped, so an older reader can still
            // list a newer file.
            _ => {}
        }
        Ok(())
    }

    fn into_view(self) -> Result<EnvelopeView<'a>, EnvelopeError> {
        use EnvelopeError::Missing;
        let (id, id_offset) = self.id.ok_or(Missing("id"))?;
        let (size, size_offset) = self.size.ok_or(Missing("size"))?;
        Ok(EnvelopeView {
            id,
            arrival_micros: self.arrival.ok_or(Missing("arrival"))?,
            size,
            uid: self.uid.ok_or(Missing("uid"))?,
            sender: self.sender.ok_or(Missing("sender"))?,
            full_name: self.full_name,
            ret: self.ret,
            envid: self.envid,
            attempts: self.attempts,
            next_attempt: self.next,
            recipients: Vec::new(),
            message_offset: 0,
            size_offset,
            id_offset,
        })
    }
}

fn parse_rcpt(value: &str, value_offset: u64) -> Result<Recipient<Cow<'_, str>>, EnvelopeError> {
    let bad = || EnvelopeError::BadRecord {
        key: "rcpt".to_string(),
        value: crate::address::shorten(value),
    };
    let mut parts = value.split(' ');
    let state = parts
        .next()
        .and_then(RcptState::from_letter)
        .ok_or_else(bad)?;
    let mut next = |field: &'static str| -> Result<Cow<'_, str>, EnvelopeError> {
        let decoded = parts.next().and_then(decode_in_place).ok_or_else(bad)?;
        within(field, &decoded)?;
        Ok(decoded)
    };
    let notify = next("notify")?;
    let original = next("original")?;
    let address = next("address")?;
    let reason = next("reason")?;
    Ok(Recipient {
        state,
        notify,
        original,
        address,
        reason,
        state_offset: value_offset,
    })
}

/// Percent-encodes the bytes that would break a record: `%`, space, control characters
/// and DEL. Everything else, UTF-8 included, stays readable. The empty string is `-`, and
/// a literal `-` is `%2D`.
pub fn encode(value: &str) -> String {
    if value.is_empty() {
        return "-".to_string();
    }
    if value == "-" {
        return "%2D".to_string();
    }
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c == '%' || c == ' ' || c.is_ascii_control() {
            let _ = write!(out, "%{:02X}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// The inverse of [`encode`]; `None` for a malformed escape.
pub fn decode(value: &str) -> Option<String> {
    decode_in_place(value).map(Cow::into_owned)
}

/// [`decode`] without a copy when `value` has no escape to undo (the usual case).
fn decode_in_place(value: &str) -> Option<Cow<'_, str>> {
    if value == "-" {
        return Some(Cow::Borrowed(""));
    }
    if !value.contains('%') {
        return Some(Cow::Borrowed(value));
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// How much of a queue file the first read of its envelope asks for.
const FIRST_READ: usize = 1024;

/// Reads just the envelope from the start of a queue file, into a buffer the caller may
/// reuse (a listing of a large queue then allocates no fresh buffer per message): a few
/// kilobytes at most for ordinary mail, never the message. On success `buf` holds the
/// envelope including the empty line.
pub fn read_envelope_into(file: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<()> {
    // The envelope of a message to a few recipients is a few hundred bytes: a first read
    // of 1 KB takes it without copying the message behind it (a listing of 50,000 files
    // spent an eighth of its time copying 4 KB reads); bigger envelopes read on.
    if buf.len() < FIRST_READ {
        buf.resize(FIRST_READ, 0);
    }
    let mut filled = 0;
    let mut searched: usize = 0;
    loop {
        let n = file.read(&mut buf[filled..])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "queue file ends inside its envelope",
            ));
        }
        filled += n;
        // Look for "\n\n", starting one byte back in case it straddles two reads.
        let from = searched.saturating_sub(1);
        if let Some(pos) = find_blank_line(&buf[from..filled]) {
            buf.truncate(from + pos + 2);
            return Ok(());
        }
        searched = filled;
        if filled == buf.len() {
            if buf.len() >= MAX_ENVELOPE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "queue file envelope is too large",
                ));
            }
            buf.resize(buf.len() * 2, 0);
        }
    }
}

fn find_blank_line(bytes: &[u8]) -> Option<usize> {
    memchr::memmem::find(bytes, b"\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        let mut env = Envelope::new(
            QueueId::generate(),
            1_795_561_017_123_456,
            1000,
            "root@example.com",
        );
        env.full_name = "Charlie Root".into();
        env.size = 243;
        env.ret = "hdrs".into();
        env.recipients
            .push(Recipient::new("alice", "alice@example.com"));
        let mut bob = Recipient::new("-", "bob 100%@example.com");
        bob.reason = "connect to 127.0.0.1[127.0.0.1]:2: Connection refused".into();
        bob.notify = "success,failure".into();
        env.recipients.push(bob);
        env
    }

    #[test]
    fn views_borrow_what_needs_no_decoding() {
        let mut env = sample();
        let bytes = env.serialize();
        let view = EnvelopeView::parse_in_place(&bytes).unwrap();
        assert!(matches!(view.sender, Cow::Borrowed("root@example.com")));
        assert!(matches!(view.ret, Cow::Borrowed("hdrs")));
        assert!(matches!(view.envid, Cow::Borrowed("")), "`-` is empty");
        assert!(matches!(view.recipients[0].address, Cow::Borrowed(_)));
        // Escaped values (a space, a `%`) are decoded into strings of their own.
        assert!(matches!(&view.full_name, Cow::Owned(n) if n == "Charlie Root"));
        assert!(
            matches!(&view.recipients[1].address, Cow::Owned(a) if a == "bob 100%@example.com")
        );
        assert_eq!(view.pending().count(), 2);
        assert_eq!(view.arrival_secs(), 1_795_561_017);
        assert_eq!(view.into_owned(), env);
    }

    #[test]
    fn round_trip() {
        let mut env = sample();
        let bytes = env.serialize();
        let parsed = Envelope::parse(&bytes).unwrap();
        assert_eq!(parsed, env);
        assert_eq!(parsed.message_offset, bytes.len() as u64);
        let at = parsed.recipients[1].state_offset as usize;
        assert_eq!(bytes[at], b'P');
        let at = parsed.size_offset as usize;
        assert_eq!(&bytes[at..at + SIZE_WIDTH], b"00000000000000000243");
        let at = parsed.id_offset as usize;
        assert_eq!(&bytes[at..at + 10], env.id.as_bytes());
    }

    #[test]
    fn values_cannot_break_records() {
        let mut env = sample();
        env.sender = "evil\nrcpt P - x x -".into();
        env.full_name = "a\r\nBcc: victim".into();
        let bytes = env.serialize();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(text.matches("\nrcpt ").count(), 2);
        let parsed = Envelope::parse(&bytes).unwrap();
        assert_eq!(parsed.sender, env.sender);
        assert_eq!(parsed.full_name, env.full_name);
    }

    #[test]
    fn encode_decode_edge_cases() {
        for v in ["", "-", "%", "a b", "ünïcode", "%2D", "\x7f\x01"] {
            assert_eq!(decode(&encode(v)).as_deref(), Some(v), "{v:?}");
        }
        assert_eq!(decode("%zz"), None);
        assert_eq!(decode("%4"), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(Envelope::parse(b"").is_err());
        assert!(Envelope::parse(b"hello\n\n").is_err());
        assert!(Envelope::parse(b"mailroom-queue 1\nid x\n\n").is_err());
        assert!(Envelope::parse(b"mailroom-queue 1\n\n").is_err());
        let mut env = sample();
        let bytes = env.serialize();
        let text = String::from_utf8(bytes)
            .unwrap()
            .replace("rcpt P", "rcpt Q");
        assert!(Envelope::parse(text.as_bytes()).is_err());
    }

    #[test]
    fn reads_only_the_envelope() {
        let mut env = sample();
        let mut bytes = env.serialize();
        let envelope_len = bytes.len();
        bytes.extend(std::iter::repeat_n(b'x', 100_000));
        let mut reader = io::Cursor::new(&bytes);
        let mut got = Vec::new();
        read_envelope_into(&mut reader, &mut got).unwrap();
        assert_eq!(got.len(), envelope_len);
        assert!(reader.position() <= 4096 + envelope_len as u64);
        let cut = &mut io::Cursor::new(b"mailroom-queue 1\nid");
        assert!(read_envelope_into(cut, &mut Vec::new()).is_err());
    }

    #[test]
    fn large_envelopes_grow_the_buffer() {
        let mut env = sample();
        for i in 0..2000 {
            env.recipients.push(Recipient::new(
                &format!("user{i}"),
                &format!("user{i}@example.com"),
            ));
        }
        let mut bytes = env.serialize();
        let n = bytes.len();
        bytes.extend_from_slice(b"Subject: x\n\nbody\n");
        let mut got = Vec::new();
        read_envelope_into(&mut io::Cursor::new(&bytes), &mut got).unwrap();
        assert_eq!(got.len(), n);
        assert_eq!(Envelope::parse(&got).unwrap().recipients.len(), 2002);
    }

    #[test]
    fn parse_errors_name_the_cause() {
        let good = String::from_utf8(sample().serialize()).unwrap();
        let without = |key: &str| {
            let lines: Vec<&str> = good
                .split_inclusive('\n')
                .filter(|l| !l.starts_with(&format!("{key} ")))
                .collect();
            lines.concat()
        };
        // (envelope, error, message)
        let table: Vec<(Vec<u8>, EnvelopeError, &str)> = vec![
            (
                b"\xff\n\n".to_vec(),
                EnvelopeError::NotUtf8,
                "envelope is not UTF-8",
            ),
            (
                b"hello\n\n".to_vec(),
                EnvelopeError::BadMagic,
                "not a mailroom queue file (bad magic line)",
            ),
            (
                good.replacen("uid 1000", "uid x", 1).into_bytes(),
                EnvelopeError::BadRecord {
                    key: "uid".into(),
                    value: "x".into(),
                },
                "bad uid record: \"x\"",
            ),
            (
                good.replacen("rcpt P", "rcpt Q", 1).into_bytes(),
                EnvelopeError::BadRecord {
                    key: "rcpt".into(),
                    value: "Q - alice alice@example.com -".into(),
                },
                "bad rcpt record: \"Q - alice alice@example.com -\"",
            ),
            (
                without("sender").into_bytes(),
                EnvelopeError::Missing("sender"),
                "missing sender record",
            ),
            (
                good.replacen("ret hdrs", "ret hdrsx", 1).into_bytes(),
                EnvelopeError::FieldTooLong {
                    field: "ret",
                    len: 5,
                },
                "ret longer than 4 bytes (5 bytes)",
            ),
        ];
        for (bytes, want, message) in table {
            let got = Envelope::parse(&bytes).unwrap_err();
            assert_eq!(got, want, "{message}");
            assert_eq!(got.to_string(), message);
        }
        let mut env = sample();
        env.recipients = vec![Recipient::new("a", "a@example.com"); MAX_RECIPIENTS + 1];
        let err = env.check_bounds().unwrap_err();
        assert_eq!(err.to_string(), "more than 10000 recipients (10001)");
    }
}

#[cfg(test)]
mod bounds_tests {
    use super::*;

    /// An envelope in the on-disk format, with `field` set to `value` (encoded) and every
    /// other field ordinary.
    fn text_with(field: &str, value: &str) -> String {
        let f = |name: &str, default: &str| {
            if name == field {
                encode(value)
            } else {
                default.to_string()
            }
        };
        format!(
            "mailroom-queue 1\nid 0cQ3x7Lk2a\narrival 1795561017.123456\n\
             size 00000000000000000243\nuid 0\nsender {}\nfullname {}\nret {}\nenvid {}\n\
             attempts 0\nnext 0\nrcpt P {} {} {} {}\n\n",
            f("sender", "root@example.com"),
            f("fullname", "Charlie%20Root"),
            f("ret", "full"),
            f("envid", "-"),
            f("notify", "-"),
            f("original", "alice"),
            f("address", "alice@example.com"),
            f("reason", "-"),
        )
    }

    /// The value of `field` as parsed.
    fn field_of(env: &Envelope, field: &str) -> String {
        let r = &env.recipients[0];
        match field {
            "sender" => env.sender.clone(),
            "fullname" => env.full_name.clone(),
            "ret" => env.ret.clone(),
            "envid" => env.envid.clone(),
            "notify" => r.notify.clone(),
            "original" => r.original.clone(),
            "address" => r.address.clone(),
            "reason" => r.reason.clone(),
            _ => unreachable!("{field}"),
        }
    }

    #[test]
    fn every_text_field_is_bounded() {
        // (record, bound in bytes of the decoded value)
        let table = [
            ("sender", 320),
            ("fullname", 256),
            ("ret", 4),
            ("envid", 100),
            ("notify", 32),
            ("original", 320),
            ("address", 320),
            ("reason", 1000),
        ];
        for (field, bound) in table {
            // At the bound, with bytes that encoding triples: still fine.
            for fill in ["a", "%", "é"] {
                let value: String = fill.repeat(bound / fill.len());
                let parsed = Envelope::parse(text_with(field, &value).as_bytes())
                    .unwrap_or_else(|e| panic!("{field} at {bound} bytes of {fill:?}: {e}"));
                assert_eq!(field_of(&parsed, field), value, "{field}");
            }
            // One byte over: a parse error, with a short message (it goes in a log line).
            let over = "a".repeat(bound + 1);
            let err = Envelope::parse(text_with(field, &over).as_bytes())
                .expect_err(&format!("{field} at {} bytes", bound + 1))
                .to_string();
            assert!(err.contains(field), "{field}: {err}");
            assert!(err.len() < 200, "{field}: {} bytes of error", err.len());
        }
    }

    #[test]
    fn records_and_counts_are_bounded() {
        let base = text_with("", "");
        let with = |from: &str, to: &str| base.replacen(from, to, 1);
        let four_mb = format!("rcpt P - alice {}@example.com -", "a".repeat(4 << 20));
        let many = |n: usize| {
            let line = "rcpt P - bob bob@example.com -\n";
            // The base ends with its one recipient and the empty line.
            format!("{}{}\n", &base[..base.len() - 1], line.repeat(n))
        };
        // (what, envelope text, parses)
        let table: Vec<(&str, String, bool)> = vec![
            ("ordinary", base.clone(), true),
            (
                "4 MB local part",
                with("rcpt P - alice alice@example.com -", &four_mb),
                false,
            ),
            (
                "arrival that overflows",
                with(
                    "arrival 1795561017.123456",
                    "arrival 18446744073709551615.0",
                ),
                false,
            ),
            (
                "number padded past a record's length",
                with("attempts 0", &format!("attempts {}1", "0".repeat(9000))),
                false,
            ),
            (
                "unknown record past a record's length",
                with("next 0", &format!("next 0\nx-later {}", "v".repeat(9000))),
                false,
            ),
            (
                "unknown short record",
                with("next 0", "next 0\nx-later v"),
                true,
            ),
            ("10,000 recipients", many(9_999), true),
            ("10,001 recipients", many(10_000), false),
        ];
        for (what, text, parses) in table {
            match Envelope::parse(text.as_bytes()) {
                Ok(env) => {
                    assert!(parses, "{what}: parsed");
                    assert!(env.recipients.len() <= 10_000, "{what}");
                }
                Err(e) => {
                    let e = e.to_string();
                    assert!(!parses, "{what}: {e}");
                    assert!(e.len() < 200, "{what}: {} bytes of error", e.len());
                }
            }
        }
    }

    #[test]
    fn writers_stay_within_the_bounds() {
        let mut env = Envelope::new(QueueId::generate(), 0, 0, "root@example.com");
        env.full_name = "é".repeat(300);
        let mut r = Recipient::new("bob", "bob@example.org");
        r.reason = format!("host said: {}", "x".repeat(5000));
        env.recipients.push(r);
        // Free text is cut to its bound (at a character boundary) rather than written
        // where no reader would take it.
        let parsed = Envelope::parse(&env.serialize()).unwrap();
        assert_eq!(parsed.full_name, "é".repeat(128));
        assert_eq!(parsed.recipients[0].reason.len(), 1000);
        assert!(parsed.recipients[0].reason.starts_with("host said: x"));
        // An address over its bound is refused before anything is written.
        let tmp = tempfile::tempdir().unwrap();
        for (sender, rcpt) in [
            ("a".repeat(321), "bob@example.org".to_string()),
            (
                "root".to_string(),
                format!("{}@example.org", "b".repeat(320)),
            ),
        ] {
            let mut env = Envelope::new(QueueId::generate(), 0, 0, &sender);
            env.recipients.push(Recipient::new(&rcpt, &rcpt));
            let err = super::super::NewQueueFile::create(tmp.path(), env)
                .err()
                .expect("refused");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        }
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
}
