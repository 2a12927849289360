//! Which delivery agent handles a recipient, and the agents the daemon has until the real
//! ones land: remote recipients are deferred (never bounced, never lost) until the SMTP
//! client exists, and local ones go to a plain mbox writer until `deliver::local` replaces
//! it.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use fs2::FileExt;

use crate::address;
use crate::deliver::{Outcome, Request};

/// Something that delivers one recipient of one message and says what happened.
pub trait Agent: Send + Sync {
    fn deliver(&self, req: &Request) -> Outcome;
}

/// Any `Fn(&Request) -> Outcome` is an agent (tests use closures).
impl<F> Agent for F
where
    F: Fn(&Request) -> Outcome + Send + Sync,
{
    fn deliver(&self, req: &Request) -> Outcome {
        self(req)
    }
}

/// Routes each recipient to the local or the remote agent by its domain
/// (`mydestination`), and names the program that logs the outcome, as Postfix's
/// `postfix/local` and `postfix/smtp` do.
pub struct Router {
    pub mydestination: Vec<String>,
    pub local: Box<dyn Agent>,
    pub remote: Box<dyn Agent>,
}

impl Router {
    /// Delivers one recipient; returns the log program name and the outcome.
    pub fn deliver(&self, req: &Request) -> (&'static str, Outcome) {
        if address::is_local(&req.recipient.address, &self.mydestination) {
            ("local", self.local.deliver(req))
        } else {
            ("smtp", self.remote.deliver(req))
        }
    }
}

/// The remote agent of this version: there is no SMTP client yet, so remote mail waits in
/// the deferred queue (and `mailq` says why) instead of bouncing.
pub fn remote_unavailable(_req: &Request) -> Outcome {
    Outcome::deferred(
        "none",
        "4.3.0",
        "remote delivery is not available in this version",
    )
}

/// A minimal mbox writer used until the real local agent (aliases, `.forward`, Maildir,
/// privileges) is merged: appends to `mail_spool_directory/USER` with Postfix's From_
/// line, `>From` quoting and trailing empty line, under a flock, synced, and truncated
/// back if anything fails half-way.
pub struct SpoolMbox {
    pub spool: PathBuf,
}

impl Agent for SpoolMbox {
    fn deliver(&self, req: &Request) -> Outcome {
        let (local, _) = address::split(&req.recipient.address);
        let user = local.to_ascii_lowercase();
        let entry = match nix::unistd::User::from_name(&user) {
            Ok(Some(entry)) => entry,
            Ok(None) => {
                return Outcome::bounced("local", "5.1.1", format!("unknown user: \"{user}\""));
            }
            Err(e) => {
                return Outcome::deferred("local", "4.3.0", format!("user lookup failed: {e}"));
            }
        };
        match self.append(req, &user, &entry) {
            Ok(()) => Outcome::sent("local", "delivered to mailbox"),
            Err(e) => Outcome::deferred(
                "local",
                "4.2.0",
                format!(
                    "cannot update mailbox {}/{user} for user {user}. {}",
                    self.spool.display(),
                    crate::sysexits::describe_io(&e)
                ),
            ),
        }
    }
}

impl SpoolMbox {
    fn append(&self, req: &Request, user: &str, entry: &nix::unistd::User) -> io::Result<()> {
        if user.contains('/') || user.starts_with('.') || user.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad user name"));
        }
        let path = self.spool.join(user);
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
        if nix::unistd::geteuid().is_root() {
            let _ = std::os::unix::fs::fchown(&file, Some(entry.uid.as_raw()), None);
        }
        file.lock_exclusive()?;
        let start = file.metadata()?.len();
        let result = write_entry(&mut file, req).and_then(|()| file.sync_data());
        if result.is_err() {
            let _ = file.set_len(start);
        }
        result
    }
}

fn write_entry(file: &mut std::fs::File, req: &Request) -> io::Result<()> {
    let env = req.envelope;
    let sender = if env.sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        &env.sender
    };
    let stamp = chrono::Local::now().format("%a %b %e %H:%M:%S %Y");
    let mut out = Vec::with_capacity(env.size as usize + 512);
    writeln!(out, "From {sender}  {stamp}")?;
    writeln!(out, "Return-Path: <{}>", env.sender)?;
    writeln!(out, "X-Original-To: {}", req.recipient.original)?;
    writeln!(out, "Delivered-To: {}", req.recipient.address)?;
    let mut message = Vec::with_capacity(env.size as usize);
    req.message.reader().read_to_end(&mut message)?;
    for line in message.split_inclusive(|&c| c == b'\n') {
        if line.starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.push(b'\n');
    file.write_all(&out)
}
