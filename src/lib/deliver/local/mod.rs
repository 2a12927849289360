//! The local delivery agent: one recipient whose domain is in `mydestination` (or who has
//! no domain), delivered the way Postfix's local(8) does.
//!
//! Order of business:
//! 1. A message that already carries `Delivered-To: ADDRESS` for this recipient has been
//!    here before: it bounces as a forwarding loop (5.4.6).
//! 2. Alias expansion (through [`AliasExpander`]). A recipient that is no alias, an
//!    alias with a single target, and an alias that names itself (`root: root, james`)
//!    go to the user directly. Commands and files are run here, with the alias owner's
//!    rights (`default_privs` for root-owned tables). Every other address (several
//!    targets, `:include:` members, addresses with a domain) is sent on as one new queue
//!    file per envelope sender: `owner-NAME@$myorigin` when the alias has an owner.
//! 3. The user's `~/.forward`, if it is safe (see `forward`); its addresses are sent on,
//!    its commands and files run as the user, `\user` (or the user's own name) means the
//!    mailbox.
//! 4. The mailbox: mbox in `mail_spool_directory` (default), a file under the home
//!    directory (`home_mailbox = Mailbox`), or a Maildir (`home_mailbox = Maildir/`).
//!
//! All file and command work runs with the recipient's rights, never root's (see
//! `privileges`). When one recipient fans out into several deliveries, its outcome is the
//! worst of them: any deferral defers it (and a retry repeats the parts that succeeded,
//! as with Postfix), else any bounce bounces it.

pub mod aliases;
pub mod command;
pub mod file;
pub mod format;
pub mod forward;
mod group_commit;
pub mod lock;
pub mod maildir;
pub mod mbox;
pub mod privileges;
pub mod resubmit;

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Local;

use crate::address;
use crate::config::Config;
use crate::deliver::{Dsn, Outcome, Request, Status};
use crate::queue::Queue;
use crate::sysexits::{Error, Result, describe_io};

pub use aliases::{
    AliasExpander, DatabaseAliases, Delivery, Destination, Expansion, ExpansionError, NoAliases,
};
pub use privileges::Identity;

use format::Style;
use forward::Forward;

const RELAY: &str = "local";

/// Where `allow_mail_to_commands` / `allow_mail_to_files` permit deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    pub alias: bool,
    pub forward: bool,
    pub include: bool,
}

impl Allowed {
    /// From the parameter's list (`alias, forward, include`).
    pub fn from_list(items: &[String]) -> Allowed {
        let has = |w: &str| items.iter().any(|i| i.eq_ignore_ascii_case(w));
        Allowed {
            alias: has("alias"),
            forward: has("forward"),
            include: has("include"),
        }
    }
}

/// Everything local delivery needs that does not change from one message to the next:
/// resolved once by the daemon and shared by its delivery threads.
pub struct LocalContext {
    pub myhostname: String,
    pub myorigin: String,
    pub mail_spool_directory: PathBuf,
    /// Empty: mbox in the spool; ends in `/`: Maildir under home; else an mbox file there.
    pub home_mailbox: String,
    pub recipient_delimiter: String,
    pub commands: Allowed,
    pub files: Allowed,
    /// The rights of commands and files from root-owned aliases and of root's `.forward`.
    pub default_privs: Identity,
    pub command_time_limit: Duration,
    /// The largest mailbox or Maildir file, 0 for no limit.
    pub mailbox_size_limit: u64,
    /// How long a locked mailbox is waited for before the delivery is deferred.
    pub lock_wait: Duration,
    /// `stale_lock_time`: a dot-lock older than this is broken (one whose holder's pid
    /// names no process at once).
    pub stale_lock_time: Duration,
    /// Where re-submitted messages go.
    pub queue: Queue,
    pub aliases: Arc<dyn AliasExpander>,
    /// Receives warnings worth logging (an unsafe `.forward`).
    pub warn: Arc<dyn Fn(&str) + Send + Sync>,
}

impl LocalContext {
    /// Resolves the parameters of `config`. `default_privs` must name a user that is not
    /// root, as Postfix insists.
    pub fn from_config(
        config: &Config,
        queue: Queue,
        aliases: Arc<dyn AliasExpander>,
        warn: Arc<dyn Fn(&str) + Send + Sync>,
    ) -> Result<LocalContext> {
        let privs_name = config.get("default_privs")?;
        let default_privs = match Identity::by_name(&privs_name) {
            Ok(Some(id)) if id.uid != 0 => id,
            Ok(Some(_)) => {
                return Err(Error::config(format!(
                    "default_privs: unacceptable user: \"{privs_name}\" has uid 0"
                )));
            }
            _ => {
                return Err(Error::config(format!(
                    "default_privs: unknown user: \"{privs_name}\""
                )));
            }
        };
        Ok(LocalContext {
            myhostname: config.myhostname()?,
            myorigin: config.myorigin()?,
            mail_spool_directory: PathBuf::from(config.get("mail_spool_directory")?),
            home_mailbox: config.get("home_mailbox")?,
            recipient_delimiter: config.get("recipient_delimiter")?,
            commands: Allowed::from_list(&config.list("allow_mail_to_commands")?),
            files: Allowed::from_list(&config.list("allow_mail_to_files")?),
            default_privs,
            command_time_limit: config.time("command_time_limit")?,
            mailbox_size_limit: config.number("mailbox_size_limit")?,
            lock_wait: Duration::from_secs(20),
            stale_lock_time: config.time("stale_lock_time")?,
            queue,
            aliases,
            warn,
        })
    }

    /// The rights a command or file target runs with: its owner's, but never root's.
    fn privileges(&self, uid: u32, gid: u32) -> Identity {
        if uid == 0 {
            self.default_privs.clone()
        } else {
            Identity::by_ids(uid, gid)
        }
    }
}

/// What every delivery of one recipient shares.
struct Job<'a> {
    ctx: &'a LocalContext,
    req: &'a Request<'a>,
    /// The recipient address (qualified).
    address: &'a str,
}

/// Delivers one local recipient of one message. Never panics on bad input; every failure
/// becomes a deferral or a bounce with Postfix's wording.
pub fn deliver(ctx: &LocalContext, req: &Request) -> Outcome {
    let address = req.recipient.address.as_str();
    match already_delivered_to(req, address) {
        Ok(true) => {
            return Outcome::bounced(
                RELAY,
                Dsn::LOOP,
                format!("mail forwarding loop for {address}"),
            );
        }
        Ok(false) => {}
        Err(e) => {
            return Outcome::deferred(
                RELAY,
                Dsn::TEMP_LOCAL,
                format!("cannot read message: {}", describe_io(&e)),
            );
        }
    }
    let job = Job { ctx, req, address };
    let (local, _) = address::split(address);
    let expansion = ctx.aliases.expand(local);
    job.deliver_expansion(&expansion)
}

impl Job<'_> {
    fn deliver_expansion(&self, expansion: &Expansion) -> Outcome {
        let ctx = self.ctx;
        let mut results: Vec<Outcome> = expansion
            .failures
            .iter()
            .map(|f| failure_outcome(f.dsn, f.reason.clone()))
            .collect();
        let single = expansion.deliveries.len() == 1 && expansion.failures.is_empty();
        let mut onward: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for delivery in &expansion.deliveries {
            let sender = delivery
                .sender
                .clone()
                .unwrap_or_else(|| self.req.envelope.sender.clone());
            let via_include = delivery.chain.iter().any(|c| c.starts_with(":include:"));
            let outcome = match &delivery.destination {
                Destination::Mailbox { user } => {
                    let names_itself = delivery
                        .chain
                        .last()
                        .is_some_and(|c| c.eq_ignore_ascii_case(user));
                    if delivery.chain.is_empty() || single || names_itself {
                        let delivered_to = if delivery.chain.is_empty() {
                            self.address.to_string()
                        } else {
                            format!("{user}@{}", ctx.myorigin)
                        };
                        self.deliver_user(user, &delivered_to, &sender, true)
                    } else {
                        onward
                            .entry(sender)
                            .or_default()
                            .push(format!("{user}@{}", ctx.myorigin));
                        continue;
                    }
                }
                Destination::Forward { address } => {
                    onward.entry(sender).or_default().push(address.clone());
                    continue;
                }
                Destination::Command { command, uid, gid } => {
                    let allowed = if via_include {
                        ctx.commands.include
                    } else {
                        ctx.commands.alias
                    };
                    if !allowed {
                        Outcome::bounced(
                            RELAY,
                            Dsn::NOT_AUTHORIZED,
                            "mail to command is restricted",
                        )
                    } else {
                        let id = ctx.privileges(*uid, *gid);
                        self.run_command(command, &id, self.address, &sender)
                    }
                }
                Destination::File { path, uid, gid } => {
                    let allowed = if via_include {
                        ctx.files.include
                    } else {
                        ctx.files.alias
                    };
                    if !allowed {
                        Outcome::bounced(RELAY, Dsn::NOT_AUTHORIZED, "mail to file is restricted")
                    } else {
                        let id = ctx.privileges(*uid, *gid);
                        self.append_file(path, &id, self.address, &sender)
                    }
                }
            };
            results.push(outcome);
        }
        for (sender, recipients) in onward {
            results.push(self.send_on(&sender, &recipients, self.address));
        }
        combine(results)
    }

    /// A local user: `.forward` (when `use_forward`), else the mailbox.
    fn deliver_user(
        &self,
        name: &str,
        delivered_to: &str,
        sender: &str,
        use_forward: bool,
    ) -> Outcome {
        let user = match self.lookup_user(name) {
            Ok(Some(user)) => user,
            Ok(None) => {
                return Outcome::bounced(
                    RELAY,
                    Dsn::UNKNOWN_USER,
                    format!("unknown user: \"{name}\""),
                );
            }
            Err(e) => {
                return Outcome::deferred(
                    RELAY,
                    Dsn::TEMP_LOCAL,
                    format!("user lookup error for \"{name}\": {}", describe_io(&e)),
                );
            }
        };
        if use_forward {
            match forward::read(&user) {
                Ok(Forward::Targets(targets)) => {
                    return self.deliver_forward(&user, &targets, delivered_to, sender);
                }
                Ok(Forward::Ignored(warning)) => (self.ctx.warn)(&warning),
                Ok(Forward::Absent) => {}
                Err(e) => {
                    return Outcome::deferred(
                        RELAY,
                        Dsn::TEMP_LOCAL,
                        format!(
                            "cannot read forward file of user {}: {}",
                            user.name,
                            describe_io(&e)
                        ),
                    );
                }
            }
        }
        self.deliver_mailbox(&user, delivered_to, sender)
    }

    /// Finds the passwd entry; `user+ext` falls back to `user` when `+` is a
    /// `recipient_delimiter`.
    fn lookup_user(&self, name: &str) -> io::Result<Option<Identity>> {
        if let Some(user) = Identity::by_name(name)? {
            return Ok(Some(user));
        }
        let delimiters = &self.ctx.recipient_delimiter;
        match name.find(|c| delimiters.contains(c)) {
            Some(at) if at > 0 && !delimiters.is_empty() => Identity::by_name(&name[..at]),
            _ => Ok(None),
        }
    }

    fn deliver_forward(
        &self,
        user: &Identity,
        targets: &[String],
        delivered_to: &str,
        sender: &str,
    ) -> Outcome {
        let ctx = self.ctx;
        let mut results = Vec::new();
        let mut onward = Vec::new();
        // Commands and files of root's .forward do not run as root.
        let rights = if user.uid == 0 {
            ctx.default_privs.clone()
        } else {
            user.clone()
        };
        let mut pending: Vec<(String, bool)> = targets.iter().map(|t| (t.clone(), false)).collect();
        let mut i = 0;
        while i < pending.len() {
            let (target, from_include) = pending[i].clone();
            i += 1;
            let (allowed_cmd, allowed_file) = if from_include {
                (ctx.commands.include, ctx.files.include)
            } else {
                (ctx.commands.forward, ctx.files.forward)
            };
            if let Some(command) = target.strip_prefix('|') {
                results.push(if allowed_cmd {
                    self.run_command(command, &rights, delivered_to, sender)
                } else {
                    Outcome::bounced(RELAY, Dsn::NOT_AUTHORIZED, "mail to command is restricted")
                });
            } else if target.starts_with('/') {
                results.push(if allowed_file {
                    self.append_file(&target, &rights, delivered_to, sender)
                } else {
                    Outcome::bounced(RELAY, Dsn::NOT_AUTHORIZED, "mail to file is restricted")
                });
            } else if target.len() > 9 && target[..9].eq_ignore_ascii_case(":include:") {
                if from_include {
                    results.push(Outcome::bounced(
                        RELAY,
                        Dsn::LOOP,
                        "nested include files in a forward file are not supported",
                    ));
                    continue;
                }
                match read_include(&target[9..], user) {
                    Ok(more) => pending.extend(more.into_iter().map(|t| (t, true))),
                    Err(e) => {
                        results.push(Outcome::bounced(RELAY, Dsn::CONFIG_ERROR, e.to_string()))
                    }
                }
            } else {
                let plain = target.strip_prefix('\\').unwrap_or(&target);
                let (local, domain) = address::split(plain);
                let own = local.eq_ignore_ascii_case(&user.name)
                    && domain.is_none_or(|d| d.eq_ignore_ascii_case(&ctx.myorigin));
                if own {
                    results.push(self.deliver_mailbox(user, delivered_to, sender));
                } else {
                    onward.push(address::qualify(plain, &ctx.myorigin));
                }
            }
        }
        if !onward.is_empty() {
            results.push(self.send_on(sender, &onward, delivered_to));
        }
        combine(results)
    }

    fn deliver_mailbox(&self, user: &Identity, delivered_to: &str, sender: &str) -> Outcome {
        let ctx = self.ctx;
        let envelope = format::Envelope {
            sender,
            original: self.original(),
            delivered_to,
        };
        let now = Local::now();
        let message = self.req.message;
        if ctx.home_mailbox.ends_with('/') {
            let dir = user.home.join(ctx.home_mailbox.trim_end_matches('/'));
            let result = privileges::as_identity(user, || {
                maildir::deliver(&dir, &ctx.myhostname, ctx.mailbox_size_limit, |w| {
                    format::write_copy(w, &envelope, &message, Style::MAILDIR, &now)
                })
            });
            return match result {
                Ok(Ok(_)) => Outcome::sent(RELAY, "delivered to maildir"),
                Ok(Err(f)) => {
                    failure_outcome(f.dsn, format!("maildir delivery failed: {}", f.text))
                }
                Err(e) => Outcome::deferred(
                    RELAY,
                    Dsn::TEMP_LOCAL,
                    format!("maildir delivery failed: {}", describe_io(&e)),
                ),
            };
        }
        let spool = Identity::current();
        let (path, creator) = if ctx.home_mailbox.is_empty() {
            (ctx.mail_spool_directory.join(&user.name), &spool)
        } else {
            (user.home.join(&ctx.home_mailbox), user)
        };
        let target = mbox::Target {
            path: &path,
            user,
            creator,
            chown_new: true,
            require_owner: true,
            dotlock_may_fail: false,
            refuse_executable: false,
            size_limit: ctx.mailbox_size_limit,
            lock_wait: ctx.lock_wait,
            stale_after: ctx.stale_lock_time,
        };
        match mbox::append(&target, |w| {
            format::write_copy(w, &envelope, &message, Style::MBOX, &now)
        }) {
            Ok(appended) => {
                warn_repaired(ctx, &path, appended.repaired);
                Outcome::sent(RELAY, "delivered to mailbox")
            }
            Err(f) => failure_outcome(
                f.dsn,
                format!(
                    "cannot update mailbox {} for user {}. {}",
                    path.display(),
                    user.name,
                    f.text
                ),
            ),
        }
    }

    fn append_file(
        &self,
        path: &str,
        rights: &Identity,
        delivered_to: &str,
        sender: &str,
    ) -> Outcome {
        file::deliver(
            self.ctx,
            self.req,
            path,
            rights,
            &format::Envelope {
                sender,
                original: self.original(),
                delivered_to,
            },
        )
    }

    fn run_command(
        &self,
        command: &str,
        rights: &Identity,
        delivered_to: &str,
        sender: &str,
    ) -> Outcome {
        let envelope = format::Envelope {
            sender,
            original: self.original(),
            delivered_to,
        };
        let head = format::prefix(&envelope, Style::COMMAND, &Local::now());
        let input = io::Cursor::new(head).chain(self.req.message.reader());
        let spec = command::Spec {
            command,
            identity: rights,
            env: self.command_env(rights, sender),
            time_limit: self.ctx.command_time_limit,
        };
        command::run(&spec, input)
    }

    /// local(8)'s command environment.
    fn command_env(&self, rights: &Identity, sender: &str) -> Vec<(String, String)> {
        let (local, domain) = address::split(self.address);
        let delimiters = &self.ctx.recipient_delimiter;
        let extension = match local.find(|c| delimiters.contains(c)) {
            Some(at) if !delimiters.is_empty() => &local[at + 1..],
            _ => "",
        };
        let mut env = vec![
            ("PATH".to_string(), "/usr/bin:/bin".to_string()),
            ("SHELL".into(), rights.shell.display().to_string()),
            ("HOME".into(), rights.home.display().to_string()),
            ("USER".into(), rights.name.clone()),
            ("LOGNAME".into(), rights.name.clone()),
            ("SENDER".into(), sender.to_string()),
            ("RECIPIENT".into(), self.address.to_string()),
            ("LOCAL".into(), local.to_string()),
            ("DOMAIN".into(), domain.unwrap_or("").to_string()),
            ("EXTENSION".into(), extension.to_string()),
            ("ORIGINAL_RECIPIENT".into(), self.original().to_string()),
        ];
        // Postfix's export_environment default.
        for name in ["TZ", "LANG", "MAIL_CONFIG"] {
            if let Ok(value) = std::env::var(name) {
                env.push((name.to_string(), value));
            }
        }
        env
    }

    fn send_on(&self, sender: &str, recipients: &[String], delivered_to: &str) -> Outcome {
        match resubmit::resubmit(
            &self.ctx.queue,
            &self.ctx.myhostname,
            self.req,
            sender,
            recipients,
            delivered_to,
        ) {
            Ok(ids) => {
                let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
                Outcome::sent(RELAY, format!("forwarded as {}", ids.join(", ")))
            }
            // An alias or .forward target no queue file can hold: retrying cannot help.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => Outcome::bounced(
                RELAY,
                Dsn::BAD_ADDRESS,
                format!("cannot forward message: {e}"),
            ),
            Err(e) => Outcome::deferred(
                RELAY,
                Dsn::TEMP_LOCAL,
                format!("cannot forward message: {}", describe_io(&e)),
            ),
        }
    }

    fn original(&self) -> &str {
        if self.req.recipient.original.is_empty() {
            &self.req.recipient.address
        } else {
            &self.req.recipient.original
        }
    }
}

/// Says that an append first cut off what a delivery killed mid-write had left.
fn warn_repaired(ctx: &LocalContext, path: &Path, bytes: u64) {
    if bytes > 0 {
        (ctx.warn)(&format!(
            "{}: removed {bytes} bytes of a message left incomplete by an interrupted delivery",
            path.display()
        ));
    }
}

/// `:include:` in a `.forward`, read with the user's rights (the kernel checks them, so
/// no permission test of our own as for aliases' includes; the errors are the same).
fn read_include(
    path: &str,
    user: &Identity,
) -> std::result::Result<Vec<String>, crate::aliases::expand::IncludeError> {
    use crate::aliases::expand::IncludeError;
    let path = path.trim();
    if !path.starts_with('/') {
        return Err(IncludeError::Relative(path.to_string()));
    }
    let read = privileges::as_identity(user, || std::fs::read(path));
    match read {
        Ok(Ok(bytes)) => Ok(forward::split_targets(&String::from_utf8_lossy(&bytes))),
        Ok(Err(e)) | Err(e) => Err(IncludeError::Io(path.to_string(), e)),
    }
}

/// Whether the message already has `Delivered-To: ADDRESS` (case-insensitive) in its
/// header. Only the header is read, and at most a megabyte of it.
fn already_delivered_to(req: &Request, address: &str) -> io::Result<bool> {
    let mut reader = BufReader::new(req.message.reader().take(1 << 20));
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(false);
        }
        if line == b"\n" || line == b"\r\n" {
            return Ok(false);
        }
        if line.len() > 13 && line[..13].eq_ignore_ascii_case(b"delivered-to:") {
            let value = String::from_utf8_lossy(&line[13..]);
            if value.trim().eq_ignore_ascii_case(address) {
                return Ok(true);
            }
        }
    }
}

/// A failure with a DSN: 4.x.x defers, anything else bounces.
fn failure_outcome(dsn: Dsn, text: String) -> Outcome {
    if dsn.is_transient() {
        Outcome::deferred(RELAY, dsn, text)
    } else {
        Outcome::bounced(RELAY, dsn, text)
    }
}

/// The outcome of a recipient from those of its parts: any deferral defers, else any
/// bounce bounces, else it was sent. The texts of the deciding parts are joined.
fn combine(results: Vec<Outcome>) -> Outcome {
    let mut results = results;
    match results.len() {
        0 => return Outcome::bounced(RELAY, Dsn::CONFIG_ERROR, "alias expands to no destinations"),
        1 => return results.remove(0),
        _ => {}
    }
    for status in [Status::Deferred, Status::Bounced, Status::Sent] {
        let parts: Vec<&Outcome> = results.iter().filter(|o| o.status == status).collect();
        if let Some(first) = parts.first() {
            let text = parts
                .iter()
                .map(|o| o.text.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            let mut outcome = (*first).clone();
            outcome.text = text;
            return outcome;
        }
    }
    results.remove(0)
}

#[cfg(test)]
mod tests;
