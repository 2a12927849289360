//! Submission: turn what a caller piped into `sendmail` into a complete, durable queue
//! file in `maildrop/`, the way Postfix's sendmail, postdrop and cleanup do together.
//!
//! Headers are completed as Postfix's cleanup does for local submissions: a `Received:`
//! header is prepended; missing `Message-Id:`, `Date:` and `From:` are appended after the
//! caller's headers; bare local names in address headers are qualified with `$myorigin`;
//! `Bcc:` is removed; every other header passes byte for byte. The body is streamed to
//! disk, never held in memory.

use std::io::{BufRead, Write};

use chrono::{DateTime, Local, Utc};

use crate::address;
use crate::message::date::rfc2822_date;
use crate::message::headers::{self, Field};
use crate::message::input::{InputError, InputReader};
use crate::queue::envelope::{MAX_FULL_NAME, MAX_RECIPIENTS, clip};
use crate::queue::{Envelope, NewQueueFile, Queue, QueueId, Recipient};
use crate::sysexits::{Error, ExitCode, Result};

/// Who is submitting: the real uid and what the password database says about it.
#[derive(Debug, Clone)]
pub struct Invoker {
    pub uid: u32,
    /// Login name; `None` when the uid has no password entry.
    pub login: Option<String>,
    /// The GECOS full name, already reduced as Postfix does (up to the first comma, `&`
    /// replaced by the capitalised login).
    pub gecos_name: Option<String>,
}

impl Invoker {
    pub fn current() -> Invoker {
        let uid = nix::unistd::getuid();
        let user = nix::unistd::User::from_uid(uid).ok().flatten();
        let login = user.as_ref().map(|u| u.name.clone());
        let gecos_name = user.as_ref().and_then(|u| {
            let gecos = u.gecos.to_string_lossy();
            gecos_full_name(&gecos, &u.name)
        });
        Invoker {
            uid: uid.as_raw(),
            login,
            gecos_name,
        }
    }

    /// `root(0)`: how Postfix names the caller in fatal messages.
    pub fn tag(&self) -> String {
        format!(
            "{}({})",
            self.login.as_deref().unwrap_or("unknown"),
            self.uid
        )
    }
}

/// The GECOS field's full name: up to the first comma, `&` standing for the login name
/// with its first letter in upper case. Empty means none.
pub fn gecos_full_name(gecos: &str, login: &str) -> Option<String> {
    let name = gecos.split(',').next().unwrap_or("").trim();
    if name.is_empty() {
        return None;
    }
    let mut cap = login.to_string();
    if let Some(first) = cap.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    Some(name.replace('&', &cap))
}

/// What the caller asked for, from sendmail's argv.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `-f`/`-r`: `None` = the invoking user; `Some("")` or `Some("<>")` = null sender.
    pub sender: Option<String>,
    /// `-F`.
    pub full_name: Option<String>,
    /// Command-line recipients, each possibly an address list.
    pub recipients: Vec<String>,
    /// `-t`: also take recipients from the headers.
    pub extract: bool,
    /// A lone `.` ends the input (no `-i`/`-oi`).
    pub dot_ends: bool,
    /// `-N`, `-R`, `-V`.
    pub notify: String,
    pub ret: String,
    pub envid: String,
}

/// The parts of the configuration submission needs, resolved once.
#[derive(Debug, Clone)]
pub struct Settings {
    pub myhostname: String,
    pub myorigin: String,
    /// 0 = unlimited.
    pub message_size_limit: u64,
    pub header_size_limit: u64,
    /// `cleanup_replace_stray_cr_lf`.
    pub replace_stray_cr: bool,
}

impl Settings {
    pub fn from_config(config: &crate::config::Config) -> Result<Settings> {
        Ok(Settings {
            myhostname: config.myhostname()?,
            myorigin: config.myorigin()?,
            message_size_limit: config.message_size_limit()?,
            header_size_limit: config.number("header_size_limit")?,
            replace_stray_cr: config.boolean("cleanup_replace_stray_cr_lf")?,
        })
    }
}

/// What was queued.
#[derive(Debug, Clone)]
pub struct Queued {
    pub id: QueueId,
    pub sender: String,
    pub recipients: usize,
    pub size: u64,
}

/// How a message reached us; it becomes the message's `Received:` header.
#[derive(Debug, Clone)]
pub enum Trace {
    /// Piped into `sendmail` by this uid.
    Local { uid: u32 },
    /// Taken over SMTP (`sendmail -bs` or the listener).
    Smtp(SmtpTrace),
}

/// The facts an SMTP `Received:` header records (RFC 5321 section 4.4).
#[derive(Debug, Clone)]
pub struct SmtpTrace {
    /// What the client said in HELO/EHLO, or its name when it said nothing.
    pub helo: String,
    /// The client's name (`unknown` without a reverse lookup).
    pub client_name: String,
    pub client_addr: String,
    /// `SMTP`, `ESMTP` or `ESMTPS` (RFC 3848).
    pub protocol: &'static str,
    /// The recipient, named only when there is exactly one (as Postfix does), so that
    /// Bcc recipients of a multi-recipient message stay hidden.
    pub for_rcpt: Option<String>,
}

/// Everything about a message but its text: what its envelope and trace header say.
#[derive(Debug, Clone)]
pub struct Draft {
    /// Qualified; empty for the null sender.
    pub sender: String,
    pub full_name: String,
    pub uid: u32,
    pub recipients: Vec<Recipient>,
    pub ret: String,
    pub envid: String,
    pub trace: Trace,
    /// Qualify bare names in address headers with `$myorigin`: for local submissions
    /// only, as Postfix's `local_header_rewrite_clients` does; mail from elsewhere keeps
    /// its headers as the sender wrote them.
    pub qualify_headers: bool,
}

/// Why a message was not queued. Nothing is left in the queue in any case.
#[derive(Debug)]
pub enum QueueError {
    /// The message exceeds `message_size_limit`.
    TooBig { limit: u64 },
    /// Reading the message failed (the client went away, a timeout).
    Input(std::io::Error),
    /// Writing the queue file failed.
    Queue(Error),
}

impl QueueError {
    /// The error `sendmail` reports, naming the caller as `tag`.
    pub fn into_error(self, tag: &str) -> Error {
        match self {
            QueueError::TooBig { limit } => too_big(limit, tag),
            QueueError::Input(e) => Error::io(format!("{tag}: error reading input"), &e),
            QueueError::Queue(e) => e,
        }
    }
}

impl From<InputError> for QueueError {
    fn from(e: InputError) -> Self {
        match e {
            InputError::TooBig { limit } => QueueError::TooBig { limit },
            InputError::Io(e) => QueueError::Input(e),
        }
    }
}

/// Reads the message from `input` and queues it in `maildrop/`. Returns only after the
/// file is durable; on any error nothing is left in the queue.
pub fn submit(
    queue: &Queue,
    settings: &Settings,
    invoker: &Invoker,
    request: &Request,
    input: impl BufRead,
) -> Result<Queued> {
    submit_inner(queue, settings, invoker, request, input, false).map(|(queued, _)| queued)
}

/// Like [`submit`], but the queue file is locked before it appears in `maildrop/` and
/// stays locked while the returned descriptor is open (`sendmail -odi` delivers it
/// itself, and a running daemon must leave it alone).
pub fn submit_locked(
    queue: &Queue,
    settings: &Settings,
    invoker: &Invoker,
    request: &Request,
    input: impl BufRead,
) -> Result<(Queued, std::fs::File)> {
    let (queued, file) = submit_inner(queue, settings, invoker, request, input, true)?;
    let file = file.ok_or_else(|| Error::new(ExitCode::Software, "queue file was not locked"))?;
    Ok((queued, file))
}

fn submit_inner(
    queue: &Queue,
    settings: &Settings,
    invoker: &Invoker,
    request: &Request,
    input: impl BufRead,
    lock: bool,
) -> Result<(Queued, Option<std::fs::File>)> {
    let tag = invoker.tag();
    let sender = envelope_sender(request, invoker, settings, &tag)?;
    let mut recipients = Recipients::default();
    for arg in &request.recipients {
        recipients.add_list(arg.as_bytes(), settings, &tag, true)?;
    }
    if recipients.list.is_empty() && !request.extract {
        return Err(Error::usage(format!(
            "{tag}: Recipient addresses must be specified on the command line or via the -t option"
        )));
    }

    let mut reader = InputReader::new(input, request.dot_ends, settings.message_size_limit);
    let head = read_headers(&mut reader, settings).map_err(|e| e.into_error(&tag))?;
    if request.extract {
        let resent = head.fields.iter().any(|f| is_extract_header(f, true));
        for field in head.fields.iter().filter(|f| is_extract_header(f, resent)) {
            recipients.add_list(field.value(), settings, &tag, false)?;
        }
        if recipients.list.is_empty() {
            return Err(Error::data(format!(
                "{tag}: No recipient addresses found in message header"
            )));
        }
    }
    let draft = Draft {
        sender,
        full_name: request
            .full_name
            .clone()
            .or_else(|| invoker.gecos_name.clone())
            .map(|n| clip(&sanitize_line(&n), MAX_FULL_NAME).to_string())
            .unwrap_or_default(),
        uid: invoker.uid,
        recipients: recipients
            .list
            .iter()
            .map(|(original, address)| {
                let mut rcpt = Recipient::new(original, address);
                rcpt.notify = request.notify.clone();
                rcpt
            })
            .collect(),
        ret: request.ret.clone(),
        envid: request.envid.clone(),
        trace: Trace::Local { uid: invoker.uid },
        qualify_headers: true,
    };
    write_queue_file(queue, settings, &tag, draft, head, &mut reader, lock)
        .map_err(|e| e.into_error(&tag))
}

/// Writes one queue file in `maildrop/`: the envelope from `draft`, a `Received:` header,
/// the caller's headers (`head`, Bcc removed, completed with `Message-Id:`, `Date:` and
/// `From:` as Postfix's cleanup does), then the rest of `reader`, streamed. Returns only
/// after the file is durable. Both `sendmail` and the SMTP server come through here, so
/// both give the same guarantees. `tag` names the caller in error messages.
pub fn write_message<R: BufRead>(
    queue: &Queue,
    settings: &Settings,
    tag: &str,
    draft: Draft,
    head: HeaderBlock,
    reader: &mut InputReader<R>,
) -> std::result::Result<Queued, QueueError> {
    write_queue_file(queue, settings, tag, draft, head, reader, false).map(|(queued, _)| queued)
}

/// [`write_message`], optionally returning the queue file locked (see [`submit_locked`]).
fn write_queue_file<R: BufRead>(
    queue: &Queue,
    settings: &Settings,
    tag: &str,
    draft: Draft,
    mut head: HeaderBlock,
    reader: &mut InputReader<R>,
    lock: bool,
) -> std::result::Result<(Queued, Option<std::fs::File>), QueueError> {
    // Qualify only now, after any -t extraction, so recipients keep the form the sender
    // wrote as their original address (X-Original-To:, orig_to=).
    if draft.qualify_headers {
        qualify_address_headers(&mut head.fields, settings);
    }
    if settings.replace_stray_cr {
        for field in &mut head.fields {
            replace_stray_cr(&mut field.raw);
        }
        if let Some(line) = head.ended_by.as_mut() {
            replace_stray_cr(line);
        }
    }
    let now = Local::now();
    let arrival_micros = now.timestamp_micros().max(0) as u64;
    let sender = draft.sender;
    let mut envelope = Envelope::new(QueueId::generate(), arrival_micros, draft.uid, &sender);
    envelope.full_name = draft.full_name;
    envelope.ret = draft.ret;
    envelope.envid = draft.envid;
    envelope.recipients = draft.recipients;
    let rcpt_count = envelope.recipients.len();
    let full_name = envelope.full_name.clone();

    let queue_err = |e: Error| QueueError::Queue(e);
    let maildrop = queue
        .maildrop()
        .map_err(|e| {
            Error::io(
                format!("{tag}: queue directory {}", queue.root().display()),
                &e,
            )
        })
        .map_err(queue_err)?;
    let mut file = NewQueueFile::create(&maildrop, envelope)
        .map_err(|e| Error::io(format!("{tag}: create file in {}", maildrop.display()), &e))
        .map_err(queue_err)?;
    // Set-gid: the group is needed again only to rename the file into place (or to
    // remove it on failure: this guard is dropped before `file`, so its group comes back
    // first). See `privilege`.
    let suspended = crate::privilege::suspend_group();
    let write_err = |e: std::io::Error| {
        QueueError::Queue(Error::io(format!("{tag}: error writing queue file"), &e))
    };

    write_received(&mut file, settings, &draft.trace, &now).map_err(write_err)?;
    for field in &head.fields {
        if field.is("Bcc") || field.is("Resent-Bcc") {
            continue;
        }
        file.write_all(&field.raw).map_err(write_err)?;
    }
    if !head.has("Message-Id") {
        let stamp = now.with_timezone(&Utc).format("%Y%m%d%H%M%S");
        write!(file, "Message-Id: <{stamp}.").map_err(write_err)?;
        file.write_id().map_err(write_err)?;
        writeln!(file, "@{}>", settings.myhostname).map_err(write_err)?;
    }
    if !head.has("Date") {
        writeln!(file, "Date: {}", rfc2822_date(&now)).map_err(write_err)?;
    }
    if !head.has("From") {
        writeln!(file, "From: {}", from_header(&sender, &full_name, settings))
            .map_err(write_err)?;
    }

    // The rest: the line that ended the header block, then the body, streamed.
    if let Some(first) = head.ended_by {
        if first != b"\n" {
            // Headers ran straight into text: keep them apart, as cleanup does.
            file.write_all(b"\n").map_err(write_err)?;
        }
        file.write_all(&first).map_err(write_err)?;
    }
    let limit = settings.message_size_limit;
    let mut line = Vec::with_capacity(1024);
    while reader.next_line(&mut line)? {
        if settings.replace_stray_cr {
            replace_stray_cr(&mut line);
        }
        file.write_all(&line).map_err(write_err)?;
        if limit > 0 && file.message_bytes() > limit {
            return Err(QueueError::TooBig { limit });
        }
    }
    if limit > 0 && file.message_bytes() > limit {
        return Err(QueueError::TooBig { limit });
    }
    let size = file.message_bytes();
    drop(suspended);
    let (id, locked) = if lock {
        let (id, f) = file.commit_locked().map_err(write_err)?;
        (id, Some(f))
    } else {
        (file.commit().map_err(write_err)?, None)
    };
    let queued = Queued {
        id,
        sender,
        recipients: rcpt_count,
        size,
    };
    Ok((queued, locked))
}

/// `cleanup_replace_stray_cr_lf`: every CR left in a line as read (CRLF endings are LF by
/// now, so each is stray) becomes a space, as Postfix's cleanup does. A server this
/// message is relayed to might read `\r.\r\n` as a line holding only a dot, the end of
/// the data, and the rest as commands: outbound SMTP smuggling.
fn replace_stray_cr(line: &mut [u8]) {
    for byte in line.iter_mut().filter(|b| **b == b'\r') {
        *byte = b' ';
    }
}

fn envelope_sender(
    request: &Request,
    invoker: &Invoker,
    settings: &Settings,
    tag: &str,
) -> Result<String> {
    let Some(given) = &request.sender else {
        let login = invoker.login.as_ref().ok_or_else(|| {
            Error::new(
                ExitCode::OsErr,
                format!("no login name found for user ID {}", invoker.uid),
            )
        })?;
        return Ok(address::qualify(login, &settings.myorigin));
    };
    if given.bytes().any(|c| c == b'\n' || c == b'\r' || c == 0) {
        return Err(Error::data(format!(
            "{tag}: malformed sender address: line break in -f value"
        )));
    }
    let bad = |why: address::AddressError| {
        Error::data(format!(
            "{tag}: malformed sender address \"{}\": {why}",
            address::shorten(given)
        ))
    };
    let found = address::parse_list(given.as_bytes()).map_err(bad)?;
    let Some(first) = found.first() else {
        return Ok(String::new());
    };
    if first.address.is_empty() {
        return Ok(String::new());
    }
    address::validate(&first.address).map_err(bad)?;
    let qualified = address::qualify(&first.address, &settings.myorigin);
    address::check_length(&qualified).map_err(bad)?;
    Ok(qualified)
}

/// Recipients in submission order without duplicates (Postfix sort-uniqs them too).
#[derive(Default)]
struct Recipients {
    /// (as given, qualified)
    list: Vec<(String, String)>,
    seen: std::collections::HashSet<String>,
}

impl Recipients {
    fn add_list(&mut self, text: &[u8], settings: &Settings, tag: &str, argv: bool) -> Result<()> {
        let shown = address::shorten(String::from_utf8_lossy(text).trim());
        let bad = |why: &dyn std::fmt::Display| {
            Error::data(format!(
                "{tag}: malformed recipient address \"{shown}\": {why}"
            ))
        };
        // A line break in an argument is never a legitimate address list; refuse it
        // rather than guess what the caller meant.
        if argv && text.iter().any(|&c| c == b'\n' || c == b'\r' || c == 0) {
            return Err(bad(&"line break in address"));
        }
        let found = address::parse_list(text).map_err(|e| bad(&e))?;
        if found.is_empty() && argv {
            return Err(bad(&address::AddressError::Empty));
        }
        for f in found {
            address::validate(&f.address).map_err(|e| bad(&e))?;
            let qualified = address::qualify(&f.address, &settings.myorigin);
            address::check_length(&qualified).map_err(|e| bad(&e))?;
            let (local, domain) = address::split(&qualified);
            let key = format!("{local}@{}", domain.unwrap_or("").to_ascii_lowercase());
            if self.seen.insert(key) {
                // The queue file's bound; Postfix has none, but a list that long is a
                // mailing list's job, not one message's.
                if self.list.len() == MAX_RECIPIENTS {
                    return Err(Error::data(format!(
                        "{tag}: more than {MAX_RECIPIENTS} recipients; send the message in parts"
                    )));
                }
                self.list.push((f.address, qualified));
            }
        }
        Ok(())
    }
}

/// `-t` reads To, Cc and Bcc; when the message has Resent- recipient headers, only those
/// (it is being re-sent, and the original recipients already have it).
fn is_extract_header(field: &Field, resent: bool) -> bool {
    if resent {
        field.is("Resent-To") || field.is("Resent-Cc") || field.is("Resent-Bcc")
    } else {
        field.is("To") || field.is("Cc") || field.is("Bcc")
    }
}

/// The header block of a message as read, before completion.
pub struct HeaderBlock {
    fields: Vec<Field>,
    /// The line that ended the block (the empty line, or the first body line), or `None`
    /// when the input ended inside the headers.
    ended_by: Option<Vec<u8>>,
}

impl HeaderBlock {
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
) -> std::result::Result<HeaderBlock, QueueError> {
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
        match reader.next_line(&mut line) {
            Ok(true) => {}
            Ok(false) => {
                return Ok(HeaderBlock {
                    fields,
                    ended_by: None,
                });
            }
            Err(e) => return Err(e.into()),
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

/// Qualifies bare names in address headers.
fn qualify_address_headers(fields: &mut [Field], settings: &Settings) {
    for field in fields.iter_mut().filter(|f| headers::is_address_header(f)) {
        let rewritten = address::qualify_header_value(field.value(), &settings.myorigin);
        if rewritten != field.value() {
            field.set_value(&rewritten);
        }
    }
}

fn write_received(
    file: &mut NewQueueFile,
    settings: &Settings,
    trace: &Trace,
    now: &DateTime<Local>,
) -> std::io::Result<()> {
    match trace {
        Trace::Local { uid } => {
            write!(
                file,
                "Received: by {} (mailroom, from userid {uid})\n\tid ",
                settings.myhostname
            )?;
            file.write_id()?;
        }
        Trace::Smtp(smtp) => {
            // Postfix's layout: from-part, by-part, for-part on their own folded lines.
            write!(
                file,
                "Received: from {} ({} [{}])\n\tby {} (mailroom) with {} id ",
                smtp.helo, smtp.client_name, smtp.client_addr, settings.myhostname, smtp.protocol
            )?;
            file.write_id()?;
            if let Some(rcpt) = &smtp.for_rcpt {
                write!(file, "\n\tfor <{rcpt}>")?;
            }
        }
    }
    writeln!(file, "; {}", rfc2822_date(now))
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

/// Full names end up in a header: no line breaks or control characters may survive.
fn sanitize_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

fn too_big(limit: u64, tag: &str) -> Error {
    Error::data(format!(
        "{tag}: message too large: it exceeds message_size_limit ({limit} bytes)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gecos_names() {
        assert_eq!(gecos_full_name("root", "root").as_deref(), Some("root"));
        assert_eq!(
            gecos_full_name("Alice Smith,,,", "alice").as_deref(),
            Some("Alice Smith")
        );
        assert_eq!(
            gecos_full_name("& Jones,Room 1", "bob").as_deref(),
            Some("Bob Jones")
        );
        assert_eq!(gecos_full_name(",,,", "x"), None);
        assert_eq!(gecos_full_name("", "x"), None);
    }

    #[test]
    fn phrases_are_quoted_or_encoded() {
        assert_eq!(encode_phrase("CronDaemon"), "CronDaemon");
        assert_eq!(encode_phrase("Some Body"), "Some Body");
        assert_eq!(encode_phrase("Doe, John"), "\"Doe, John\"");
        assert!(encode_phrase("Jürgen").starts_with("=?utf-8?b?"));
    }

    #[test]
    fn sanitises_full_names() {
        assert_eq!(sanitize_line("Evil\r\nBcc: x"), "Evil  Bcc: x");
    }
}
