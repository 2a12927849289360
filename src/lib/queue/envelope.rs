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

use std::fmt::Write as _;
use std::io::{self, Read};

use super::id::QueueId;

pub const MAGIC: &str = "mailroom-queue 1";
/// Width of the `size` value, so it can be rewritten in place.
pub const SIZE_WIDTH: usize = 20;
/// An envelope larger than this is not a queue file we wrote (10,000 recipients with long
/// reasons fit comfortably).
const MAX_ENVELOPE: usize = 64 << 20;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub state: RcptState,
    /// DSN NOTIFY (`never`, or a comma list of `success`, `failure`, `delay`); empty for
    /// the default.
    pub notify: String,
    /// The address as the sender gave it (for `X-Original-To:` and DSN
    /// `Original-Recipient`).
    pub original: String,
    /// The qualified address we deliver to.
    pub address: String,
    /// Why the last attempt was deferred, empty when never deferred.
    pub reason: String,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub id: QueueId,
    /// Arrival time in microseconds since the epoch.
    pub arrival_micros: u64,
    /// Bytes of the message that follows the envelope.
    pub size: u64,
    /// The real uid of the submitting process.
    pub uid: u32,
    /// Envelope sender; empty for the null sender `<>`.
    pub sender: String,
    pub full_name: String,
    /// DSN RET (`full` or `hdrs`), empty for the default.
    pub ret: String,
    /// DSN ENVID, empty when none.
    pub envid: String,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Unix time of the next attempt for deferred mail, 0 for "as soon as possible".
    pub next_attempt: u64,
    pub recipients: Vec<Recipient>,
    /// Length of the envelope in bytes, including the empty line that ends it: the
    /// message starts at this offset. Filled in when read from disk or serialised.
    pub message_offset: u64,
    /// Offset of the `size` value, filled in by `serialize` and `parse`.
    pub size_offset: u64,
    /// Offset of the `id` value.
    pub id_offset: u64,
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

    /// Arrival time in whole seconds since the epoch.
    pub fn arrival_secs(&self) -> i64 {
        (self.arrival_micros / 1_000_000) as i64
    }

    /// Recipients still waiting for delivery.
    pub fn pending(&self) -> impl Iterator<Item = &Recipient> {
        self.recipients.iter().filter(|r| !r.state.is_done())
    }

    /// The envelope as bytes, ready to be followed by the message. Records offsets of the
    /// in-place-editable fields.
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
        let _ = writeln!(out, "fullname {}", encode(&self.full_name));
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
                encode(&rcpt.reason)
            );
        }
        out.push('\n');
        self.message_offset = out.len() as u64;
        out.into_bytes()
    }

    /// Parses an envelope from its bytes (everything before the empty line; the empty line
    /// itself may or may not be included).
    pub fn parse(bytes: &[u8]) -> Result<Envelope, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "envelope is not UTF-8".to_string())?;
        let mut lines = text.split('\n');
        if lines.next() != Some(MAGIC) {
            return Err("not a mailroom queue file (bad magic line)".into());
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
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            let value_offset = line_start + key.len() as u64 + 1;
            if key == "rcpt" {
                recipients.push(parse_rcpt(value, value_offset)?);
            } else {
                fields.take(key, value, value_offset)?;
            }
        }
        let mut env = fields.into_envelope()?;
        env.recipients = recipients;
        env.message_offset = offset;
        Ok(env)
    }
}

/// The scalar records, collected before they are checked for completeness.
#[derive(Default)]
struct Fields {
    id: Option<(QueueId, u64)>,
    arrival: Option<u64>,
    size: Option<(u64, u64)>,
    uid: Option<u32>,
    sender: Option<String>,
    full_name: String,
    ret: String,
    envid: String,
    attempts: u32,
    next: u64,
}

impl Fields {
    fn take(&mut self, key: &str, value: &str, value_offset: u64) -> Result<(), String> {
        let bad = || format!("bad {key} record: {value:?}");
        match key {
            "id" => self.id = Some((QueueId::parse(value).ok_or_else(bad)?, value_offset)),
            "arrival" => {
                let (secs, micros) = value.split_once('.').unwrap_or((value, "0"));
                let secs: u64 = secs.parse().map_err(|_| bad())?;
                let micros: u64 = micros.parse().map_err(|_| bad())?;
                self.arrival = Some(secs * 1_000_000 + micros.min(999_999));
            }
            "size" => self.size = Some((value.parse().map_err(|_| bad())?, value_offset)),
            "uid" => self.uid = Some(value.parse().map_err(|_| bad())?),
            "sender" => self.sender = Some(decode(value).ok_or_else(bad)?),
            "fullname" => self.full_name = decode(value).ok_or_else(bad)?,
            "ret" => self.ret = decode(value).ok_or_else(bad)?,
            "envid" => self.envid = decode(value).ok_or_else(bad)?,
            "attempts" => self.attempts = value.parse().map_err(|_| bad())?,
            "next" => self.next = value.parse().map_err(|_| bad())?,
            // Records from a later minor revision are skipped, so an older reader can still
            // list a newer file.
            _ => {}
        }
        Ok(())
    }

    fn into_envelope(self) -> Result<Envelope, String> {
        let (id, id_offset) = self.id.ok_or("missing id record")?;
        let (size, size_offset) = self.size.ok_or("missing size record")?;
        let mut env = Envelope::new(
            id,
            self.arrival.ok_or("missing arrival record")?,
            self.uid.ok_or("missing uid record")?,
            &self.sender.ok_or("missing sender record")?,
        );
        env.id_offset = id_offset;
        env.size = size;
        env.size_offset = size_offset;
        env.full_name = self.full_name;
        env.ret = self.ret;
        env.envid = self.envid;
        env.attempts = self.attempts;
        env.next_attempt = self.next;
        Ok(env)
    }
}

fn parse_rcpt(value: &str, value_offset: u64) -> Result<Recipient, String> {
    let bad = || format!("bad rcpt record: {value:?}");
    let mut parts = value.split(' ');
    let state = parts
        .next()
        .and_then(RcptState::from_letter)
        .ok_or_else(bad)?;
    let mut next = || parts.next().and_then(decode).ok_or_else(bad);
    let notify = next()?;
    let original = next()?;
    let address = next()?;
    let reason = next()?;
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
    if value == "-" {
        return Some(String::new());
    }
    if !value.contains('%') {
        return Some(value.to_string());
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
    String::from_utf8(out).ok()
}

/// Reads just the envelope from the start of a queue file: a few kilobytes at most for
/// ordinary mail, never the message. Returns the envelope bytes including the empty line.
pub fn read_envelope_bytes(file: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    read_envelope_into(file, &mut buf)?;
    Ok(buf)
}

/// Like [`read_envelope_bytes`], but into a buffer the caller reuses, so that listing a
/// large queue does not allocate a fresh buffer per message. On success `buf` holds the
/// envelope including the empty line.
pub fn read_envelope_into(file: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<()> {
    if buf.len() < 4096 {
        buf.resize(4096, 0);
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
    bytes.windows(2).position(|w| w == b"\n\n")
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
        let got = read_envelope_bytes(&mut reader).unwrap();
        assert_eq!(got.len(), envelope_len);
        assert!(reader.position() <= 4096 + envelope_len as u64);
        assert!(read_envelope_bytes(&mut io::Cursor::new(b"mailroom-queue 1\nid")).is_err());
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
        let got = read_envelope_bytes(&mut io::Cursor::new(&bytes)).unwrap();
        assert_eq!(got.len(), n);
        assert_eq!(Envelope::parse(&got).unwrap().recipients.len(), 2002);
    }
}
