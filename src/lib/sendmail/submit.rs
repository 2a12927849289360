//! Submission: what is `sendmail`'s own in turning what a caller piped into it into a
//! queue file, the way Postfix's sendmail and postdrop do: who the invoker is, the
//! envelope from the command line (`-f`, `-F`, recipients, `-t`), and the caller's
//! errors. Completing the headers and the durable write are [`crate::cleanup`]'s, the
//! path every new message takes; the body is streamed through it, never held in memory.

use std::io::BufRead;

use crate::address;
use crate::cleanup::{
    self, Commit, Content, Draft, Message, Origin, QueueError, Queued, Settings, read_headers,
};
use crate::message::headers::Field;
use crate::message::input::InputReader;
use crate::queue::envelope::{MAX_FULL_NAME, MAX_RECIPIENTS, clip};
use crate::queue::{Queue, Recipient};
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

/// Reads the message from `input` and queues it in `maildrop/`. Returns only after the
/// file is durable; on any error nothing is left in the queue.
pub fn submit(
    queue: &Queue,
    settings: &Settings,
    invoker: &Invoker,
    request: &Request,
    input: impl BufRead,
) -> Result<Queued> {
    submit_inner(queue, settings, invoker, request, input, Commit::Unlocked)
        .map(|(queued, _)| queued)
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
    let (queued, file) = submit_inner(queue, settings, invoker, request, input, Commit::Locked)?;
    let file = file.ok_or_else(|| Error::new(ExitCode::Software, "queue file was not locked"))?;
    Ok((queued, file))
}

fn submit_inner(
    queue: &Queue,
    settings: &Settings,
    invoker: &Invoker,
    request: &Request,
    input: impl BufRead,
    commit: Commit,
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
    let failed = |f| QueueError::new(f, &tag, queue).into_error(&tag);
    let head = read_headers(&mut reader, settings).map_err(failed)?;
    if request.extract {
        let resent = head.fields().iter().any(|f| is_extract_header(f, true));
        for field in head
            .fields()
            .iter()
            .filter(|f| is_extract_header(f, resent))
        {
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
    };
    // Qualified only in cleanup, after any -t extraction, so recipients keep the form the
    // sender wrote as their original address (X-Original-To:, orig_to=).
    let message = Message {
        origin: Origin::Local { uid: invoker.uid },
        envelope: draft,
        content: Content::Input {
            settings,
            head,
            body: &mut reader,
            qualify_headers: true,
        },
    };
    cleanup::write(queue, &settings.myhostname, message, commit).map_err(failed)
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

/// Full names end up in a header: no line breaks or control characters may survive.
fn sanitize_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
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
    fn sanitises_full_names() {
        assert_eq!(sanitize_line("Evil\r\nBcc: x"), "Evil  Bcc: x");
    }
}
