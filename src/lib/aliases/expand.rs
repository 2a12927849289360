//! Expanding a local recipient through the alias tables into final destinations, with
//! local(8)'s rules: case-insensitive names, a name that lists itself means the user's
//! own mailbox, loops are errors, `owner-NAME` becomes the envelope sender, the
//! `recipient_delimiter` falls back from `user+ext` to `user`, `:include:` files are
//! read at expansion, and commands and files carry the privileges they must run with.
//!
//! The caller splits the domain off and decides local versus remote; expansion returns
//! addresses with a domain as [`Destination::Forward`] for the caller to route.

use std::collections::HashMap;
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::database::{AliasDb, Privileges};
use super::parse::{self, fold, split_targets, unquote};
use crate::config::Config;
use crate::deliver::Dsn;
use crate::sysexits::{Error, Result, describe_io};

/// One alias table entry as found: its right-hand side and the owner of the table it came
/// from (root: `default_privs` apply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasValue {
    pub value: String,
    pub owner: Privileges,
}

/// Where aliases come from: the compiled databases in production, a map in tests.
pub trait AliasSource {
    /// Looks up a case-folded name. `Err` means the table could not be read (the mail
    /// should be deferred), `Ok(None)` that no table has the name.
    fn lookup(&mut self, name: &str) -> Result<Option<AliasValue>>;
}

/// Aliases held in memory, first entry of a name wins (as in the database).
#[derive(Debug, Clone, Default)]
pub struct MemoryAliases {
    entries: HashMap<String, String>,
    /// The owner every entry is attributed to.
    pub owner: Privileges,
}

impl MemoryAliases {
    /// Parses `aliases(5)` text (skipped entries are dropped silently).
    pub fn from_source(text: &str, owner: Privileges) -> MemoryAliases {
        let mut entries = HashMap::new();
        for alias in parse::parse_all(text.as_bytes()).0 {
            entries.entry(alias.name).or_insert(alias.value);
        }
        MemoryAliases { entries, owner }
    }
}

impl AliasSource for MemoryAliases {
    fn lookup(&mut self, name: &str) -> Result<Option<AliasValue>> {
        Ok(self.entries.get(name).map(|value| AliasValue {
            value: value.clone(),
            owner: self.owner,
        }))
    }
}

/// The tables of `alias_maps`, searched in order; the first that has a name answers.
#[derive(Debug)]
pub struct AliasMaps {
    tables: Vec<AliasDb>,
}

impl AliasMaps {
    /// Opens the database of each source file.
    pub fn open<P: AsRef<Path>>(sources: &[P]) -> Result<AliasMaps> {
        let tables = sources
            .iter()
            .map(|s| AliasDb::open(s.as_ref()))
            .collect::<Result<_>>()?;
        Ok(AliasMaps { tables })
    }

    /// Re-reads the tables that were rebuilt since they were read
    /// ([`AliasDb::refresh`]); an error names a table that cannot be read or fails its
    /// checks.
    pub fn refresh(&mut self) -> Result<()> {
        for table in &mut self.tables {
            table.refresh()?;
        }
        Ok(())
    }

    /// The "database is older than source file" warnings of the tables, as of the last
    /// open or refresh.
    pub fn warnings(&self) -> Vec<String> {
        self.tables
            .iter()
            .filter_map(|t| t.warning().map(str::to_string))
            .collect()
    }
}

impl AliasSource for AliasMaps {
    fn lookup(&mut self, name: &str) -> Result<Option<AliasValue>> {
        for table in &mut self.tables {
            if let Some(value) = table.lookup(name)? {
                return Ok(Some(AliasValue {
                    value,
                    owner: table.owner(),
                }));
            }
        }
        Ok(None)
    }
}

/// The settings expansion depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandOptions {
    /// `recipient_delimiter`: each character is a delimiter (`+`, or `+-`); empty: none.
    pub recipient_delimiter: String,
    /// `myorigin`, the domain of `owner-NAME@ORIGIN` senders.
    pub origin: String,
    /// `default_privs` resolved to ids: commands and files from root-owned tables run so.
    pub default_privs: Privileges,
    /// At most this many destinations and errors per recipient.
    pub max_destinations: usize,
    /// At most this many nested aliases and include files.
    pub max_depth: usize,
    /// Postfix's `allow_mail_to_commands` and `allow_mail_to_files` default to
    /// `alias, forward`: a `|command` or `/file` in an `:include:` file is refused.
    pub commands_in_includes: bool,
    pub files_in_includes: bool,
}

impl ExpandOptions {
    pub fn new(origin: &str, default_privs: Privileges) -> ExpandOptions {
        ExpandOptions {
            recipient_delimiter: String::new(),
            origin: origin.to_string(),
            default_privs,
            max_destinations: 1000,
            max_depth: 20,
            commands_in_includes: false,
            files_in_includes: false,
        }
    }
}

impl ExpandOptions {
    /// The options `main.cf` sets: `recipient_delimiter`, `myorigin`, `default_privs`
    /// (which must name a user other than root, as Postfix insists) and
    /// `allow_mail_to_commands` / `allow_mail_to_files` (`include` in them lifts the
    /// restriction on include files).
    pub fn from_config(config: &Config) -> Result<ExpandOptions> {
        let name = config.get("default_privs")?;
        let user = match crate::privilege::user_by_name(&name) {
            Ok(Some(user)) => user,
            _ => {
                return Err(Error::config(format!(
                    "default_privs: unknown user: \"{name}\""
                )));
            }
        };
        if user.uid.is_root() {
            return Err(Error::config(format!(
                "default_privs: unacceptable user: \"{name}\" has uid 0"
            )));
        }
        let default_privs = Privileges {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        };
        let mut options = ExpandOptions::new(&config.myorigin()?, default_privs);
        options.recipient_delimiter = config.get("recipient_delimiter")?;
        options.commands_in_includes = config
            .list("allow_mail_to_commands")?
            .iter()
            .any(|v| v == "include");
        options.files_in_includes = config
            .list("allow_mail_to_files")?
            .iter()
            .any(|v| v == "include");
        Ok(options)
    }
}

/// A final destination of a recipient.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// The mailbox of a local user (not checked to exist: that is the delivery's job).
    Mailbox { user: String },
    /// An address with a domain, for the caller to route (local or remote).
    Forward { address: String },
    /// `|command`: pipe the message into `command` (without the `|`) as `uid`/`gid`.
    Command { command: String, uid: u32, gid: u32 },
    /// `/path`: append the message to the file as `uid`/`gid`.
    File { path: String, uid: u32, gid: u32 },
}

/// A destination with how it was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub destination: Destination,
    /// The aliases (and `:include:PATH`s) expanded on the way, outermost first; empty
    /// when the recipient is no alias.
    pub chain: Vec<String>,
    /// `owner-NAME@ORIGIN` when the innermost alias with an owner has one: the envelope
    /// sender of what is sent on, so that errors for this delivery go to the list owner
    /// instead of to the original sender.
    pub sender: Option<String>,
}

/// A target that cannot be delivered, with the DSN status to bounce or defer it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpansionError {
    /// The target as written (or the name being expanded).
    pub target: String,
    pub chain: Vec<String>,
    pub reason: String,
    /// `5.x.x` bounces, `4.x.x` defers.
    pub dsn: Dsn,
}

/// Everything one recipient expands to: what local delivery delivers and what
/// `sendmail -bv` reports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expansion {
    pub deliveries: Vec<Delivery>,
    pub failures: Vec<ExpansionError>,
}

/// Expands a local recipient (the local part; the caller has split the domain off).
pub fn expand(source: &mut dyn AliasSource, recipient: &str, options: &ExpandOptions) -> Expansion {
    let mut expander = Expander {
        source,
        options,
        result: Expansion::default(),
        seen: HashSet::new(),
        chain: Vec::new(),
        full: false,
    };
    let context = Context {
        privileges: options.default_privs,
        sender: None,
        in_include: false,
        depth: 0,
    };
    expander.expand_name(recipient, &context);
    expander.result
}

/// What a target inherits from the alias or include file that named it.
#[derive(Debug, Clone)]
struct Context {
    privileges: Privileges,
    sender: Option<String>,
    in_include: bool,
    depth: usize,
}

struct Expander<'a> {
    source: &'a mut dyn AliasSource,
    options: &'a ExpandOptions,
    result: Expansion,
    /// Destinations already listed: a user reached twice gets one copy, as Postfix's
    /// duplicate filter does.
    seen: HashSet<Destination>,
    chain: Vec<String>,
    /// The destination limit was hit (reported once).
    full: bool,
}

impl Expander<'_> {
    fn expand_name(&mut self, name: &str, context: &Context) {
        let key = fold(name.trim());
        if key.is_empty() {
            return self.fail(name, "empty recipient address", Dsn::BAD_ADDRESS);
        }
        let found = match self.lookup(&key) {
            Ok(found) => found,
            Err(e) => return self.fail(name, &e.to_string(), Dsn::TEMP_LOCAL),
        };
        let (matched, value, extension) = match found {
            Some(value) => (key, value, None),
            None => match split_extension(&key, &self.options.recipient_delimiter) {
                None => return self.deliver(Destination::Mailbox { user: key }, context),
                Some((base, extension)) => match self.lookup(base) {
                    Ok(Some(value)) => (base.to_string(), value, Some(extension.to_string())),
                    Ok(None) => {
                        return self.deliver(
                            Destination::Mailbox {
                                user: base.to_string(),
                            },
                            context,
                        );
                    }
                    Err(e) => return self.fail(name, &e.to_string(), Dsn::TEMP_LOCAL),
                },
            },
        };
        // `root: root, james`: the name the alias is being expanded for means the user
        // itself, not another round of expansion.
        if self.chain.last() == Some(&matched) {
            return self.deliver(Destination::Mailbox { user: matched }, context);
        }
        if self.chain.contains(&matched) {
            let current = self.chain.last().cloned().unwrap_or_default();
            return self.fail(
                name,
                &format!("alias database loop for {current}"),
                Dsn::LOOP,
            );
        }
        if context.depth >= self.options.max_depth {
            let reason = format!(
                "alias expansion of {matched} is nested more than {} levels deep",
                self.options.max_depth
            );
            return self.fail(name, &reason, Dsn::LOOP);
        }
        let privileges = if value.owner.uid == 0 {
            self.options.default_privs
        } else {
            value.owner
        };
        let owner = format!("owner-{matched}");
        let sender = match self.lookup(&owner) {
            Ok(Some(_)) => Some(format!("{owner}@{}", self.options.origin)),
            _ => context.sender.clone(),
        };
        let inner = Context {
            privileges,
            sender,
            in_include: false,
            depth: context.depth + 1,
        };
        self.chain.push(matched);
        for target in split_targets(&value.value) {
            self.expand_target(&target, extension.as_deref(), &inner);
        }
        self.chain.pop();
    }

    /// One target of an alias or include file. `extension` (`+ext`) is the part of the
    /// recipient the alias did not match; Postfix's `propagate_unmatched_extensions`
    /// default hands it on to the addresses the alias names.
    fn expand_target(&mut self, target: &str, extension: Option<&str>, context: &Context) {
        if self.full {
            return;
        }
        let unquoted = unquote(target);
        let plain = unquoted.trim();
        if plain.is_empty() {
            return;
        }
        let Privileges { uid, gid } = context.privileges;
        if let Some(command) = plain.strip_prefix('|') {
            if context.in_include && !self.options.commands_in_includes {
                return self.fail(target, "mail to command is restricted", Dsn::NOT_AUTHORIZED);
            }
            let command = command.to_string();
            return self.deliver(Destination::Command { command, uid, gid }, context);
        }
        if plain.starts_with('/') {
            if context.in_include && !self.options.files_in_includes {
                return self.fail(target, "mail to file is restricted", Dsn::NOT_AUTHORIZED);
            }
            let path = plain.to_string();
            return self.deliver(Destination::File { path, uid, gid }, context);
        }
        if plain.len() >= 9 && plain[..9].eq_ignore_ascii_case(":include:") {
            return self.include(target, plain[9..].trim(), extension, context);
        }
        if let Some(at) = target.rfind('@') {
            let address = match extension {
                Some(extension) => format!("{}{extension}{}", &target[..at], &target[at..]),
                None => target.to_string(),
            };
            return self.deliver(Destination::Forward { address }, context);
        }
        let name = format!("{plain}{}", extension.unwrap_or(""));
        self.expand_name(&name, context)
    }

    /// `:include:/path`: every non-comment line of the file is an address list. The file
    /// is read with the privileges of whoever named it (checked against its mode when we
    /// run as root, since local(8) opens it as that user), and a non-root owner's
    /// privileges apply to what it lists; a root-owned one keeps the including table's.
    fn include(&mut self, target: &str, path: &str, extension: Option<&str>, context: &Context) {
        let marker = format!(":include:{path}");
        if self.chain.contains(&marker) {
            return self.fail(target, &format!("include file loop for {path}"), Dsn::LOOP);
        }
        if context.depth >= self.options.max_depth {
            let reason = format!(
                "include file {path} is nested more than {} levels deep",
                self.options.max_depth
            );
            return self.fail(target, &reason, Dsn::LOOP);
        }
        let (text, owner) = match read_include(path, context.privileges) {
            Ok(read) => read,
            Err(e) => return self.fail(target, &e.to_string(), Dsn::CONFIG_ERROR),
        };
        let inner = Context {
            privileges: if owner.uid == 0 {
                context.privileges
            } else {
                owner
            },
            sender: context.sender.clone(),
            in_include: true,
            depth: context.depth + 1,
        };
        self.chain.push(marker);
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            for target in split_targets(line) {
                self.expand_target(&target, extension, &inner);
            }
        }
        self.chain.pop();
    }

    fn lookup(&mut self, name: &str) -> std::result::Result<Option<AliasValue>, Unavailable> {
        self.source.lookup(name).map_err(Unavailable)
    }

    fn has_room(&mut self) -> bool {
        let used = self.result.deliveries.len() + self.result.failures.len();
        if used < self.options.max_destinations {
            return true;
        }
        if !self.full {
            self.full = true;
            let reason = format!(
                "alias expansion exceeds {} destinations",
                self.options.max_destinations
            );
            let target = self.chain.first().cloned().unwrap_or_default();
            self.result.failures.push(ExpansionError {
                target,
                chain: self.chain.clone(),
                reason,
                dsn: Dsn::TOO_MANY_RECIPIENTS,
            });
        }
        false
    }

    fn deliver(&mut self, destination: Destination, context: &Context) {
        if self.seen.contains(&destination) || !self.has_room() {
            return;
        }
        self.seen.insert(destination.clone());
        self.result.deliveries.push(Delivery {
            destination,
            chain: self.chain.clone(),
            sender: context.sender.clone(),
        });
    }

    fn fail(&mut self, target: &str, reason: &str, dsn: Dsn) {
        if !self.has_room() {
            return;
        }
        self.result.failures.push(ExpansionError {
            target: target.to_string(),
            chain: self.chain.clone(),
            reason: reason.to_string(),
            dsn,
        });
    }
}

/// `user+ext` → `("user", "+ext")` at the first delimiter character. As in Postfix, with
/// `-` among the delimiters `owner-foo` and `foo-request` are never split. Shared with
/// the SMTP server's recipient check, which must take `user+ext` as local(8) will.
pub fn split_extension<'a>(name: &'a str, delimiters: &str) -> Option<(&'a str, &'a str)> {
    if delimiters.is_empty() {
        return None;
    }
    if delimiters.contains('-')
        && (name.starts_with("owner-") || (name.len() > 8 && name.ends_with("-request")))
    {
        return None;
    }
    let at = name.find(|c| delimiters.contains(c))?;
    (at > 0).then(|| name.split_at(at))
}

/// An alias table that could not be read during an expansion (the mail is deferred).
#[derive(Debug)]
struct Unavailable(Error);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "alias database unavailable: {}", self.0)
    }
}

impl std::error::Error for Unavailable {}

/// Why an include file cannot be read; each carries its path as written.
#[derive(Debug)]
pub enum IncludeError {
    /// Not an absolute path (Postfix refuses those too).
    Relative(String),
    /// Opening, examining or reading it failed.
    Io(String, io::Error),
    /// A directory, a device...
    NotRegular(String),
    /// The reader's privileges do not allow it, though ours (root's) would.
    NotPermitted(String),
}

impl std::fmt::Display for IncludeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cannot = "cannot open include file";
        match self {
            IncludeError::Relative(path) => {
                write!(f, "include file {path} must be an absolute pathname")
            }
            IncludeError::Io(path, e) => write!(f, "{cannot} {path}: {}", describe_io(e)),
            IncludeError::NotRegular(path) => write!(f, "{cannot} {path}: not a regular file"),
            IncludeError::NotPermitted(path) => write!(f, "{cannot} {path}: Permission denied"),
        }
    }
}

impl std::error::Error for IncludeError {}

/// Reads an include file for a reader with `privileges`; returns its text and owner.
fn read_include(
    path: &str,
    privileges: Privileges,
) -> std::result::Result<(String, Privileges), IncludeError> {
    let io_error = |err: io::Error| IncludeError::Io(path.to_string(), err);
    if !path.starts_with('/') {
        return Err(IncludeError::Relative(path.to_string()));
    }
    let mut file = File::open(path).map_err(io_error)?;
    let metadata = file.metadata().map_err(io_error)?;
    if !metadata.is_file() {
        return Err(IncludeError::NotRegular(path.to_string()));
    }
    if nix::unistd::geteuid().is_root()
        && privileges.uid != 0
        && !readable_by(&metadata, privileges)
    {
        return Err(IncludeError::NotPermitted(path.to_string()));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io_error)?;
    Ok((
        String::from_utf8_lossy(&bytes).into_owned(),
        Privileges::owner_of(&metadata),
    ))
}

/// Whether the mode bits let `privileges` read the file (supplementary groups aside).
fn readable_by(metadata: &std::fs::Metadata, privileges: Privileges) -> bool {
    let mode = metadata.mode();
    if metadata.uid() == privileges.uid {
        mode & 0o400 != 0
    } else if metadata.gid() == privileges.gid {
        mode & 0o040 != 0
    } else {
        mode & 0o004 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const NOBODY: Privileges = Privileges {
        uid: 65534,
        gid: 65534,
    };
    const ALICE: Privileges = Privileges {
        uid: 1500,
        gid: 1500,
    };

    fn options() -> ExpandOptions {
        ExpandOptions::new("mail.example.com", NOBODY)
    }

    fn run(aliases: &str, recipient: &str, options: &ExpandOptions) -> Expansion {
        let mut source = MemoryAliases::from_source(aliases, Privileges::ROOT);
        expand(&mut source, recipient, options)
    }

    fn mailbox(user: &str) -> Destination {
        Destination::Mailbox {
            user: user.to_string(),
        }
    }

    fn destinations(expansion: &Expansion) -> Vec<Destination> {
        expansion
            .deliveries
            .iter()
            .map(|d| d.destination.clone())
            .collect()
    }

    fn reasons(expansion: &Expansion) -> Vec<(String, Dsn)> {
        expansion
            .failures
            .iter()
            .map(|f| (f.reason.clone(), f.dsn))
            .collect()
    }

    #[test]
    fn a_name_that_is_no_alias_is_a_mailbox() {
        let result = run("root: john\n", "Alice", &options());
        assert_eq!(destinations(&result), vec![mailbox("alice")]);
        assert!(result.deliveries[0].chain.is_empty());
    }

    #[test]
    fn chains_are_followed_case_insensitively() {
        let aliases = "chain1: chain2\nchain2: JSmith\njsmith: john\n";
        let result = run(aliases, "CHAIN1", &options());
        assert_eq!(destinations(&result), vec![mailbox("john")]);
        assert_eq!(
            result.deliveries[0].chain,
            vec!["chain1", "chain2", "jsmith"]
        );
        assert_eq!(
            destinations(&run(aliases, "JSMITH", &options())),
            vec![mailbox("john")]
        );
    }

    #[test]
    fn self_reference_delivers_to_the_user() {
        let result = run("root: root, james\n", "root", &options());
        assert_eq!(
            destinations(&result),
            vec![mailbox("root"), mailbox("james")]
        );
        assert!(result.failures.is_empty());
    }

    #[test]
    fn loops_are_errors() {
        let result = run("loopa: loopb\nloopb: loopa\n", "loopa", &options());
        assert!(result.deliveries.is_empty());
        assert_eq!(
            reasons(&result),
            vec![("alias database loop for loopb".to_string(), Dsn::LOOP)]
        );
        assert_eq!(result.failures[0].chain, vec!["loopa", "loopb"]);
        let result = run("a: b, x\nb: a\n", "a", &options());
        assert_eq!(destinations(&result), vec![mailbox("x")]);
        assert_eq!(
            reasons(&result),
            vec![("alias database loop for b".to_string(), Dsn::LOOP)]
        );
    }

    #[test]
    fn targets_of_every_kind() {
        let aliases = "team: alice, bob@example.org, \"|/usr/bin/foo arg\", |/bin/cat, /var/log/team, Carol <carol@x>\n";
        let result = run(aliases, "team", &options());
        assert_eq!(
            destinations(&result),
            vec![
                mailbox("alice"),
                Destination::Forward {
                    address: "bob@example.org".into()
                },
                Destination::Command {
                    command: "/usr/bin/foo arg".into(),
                    uid: 65534,
                    gid: 65534
                },
                Destination::Command {
                    command: "/bin/cat".into(),
                    uid: 65534,
                    gid: 65534
                },
                Destination::File {
                    path: "/var/log/team".into(),
                    uid: 65534,
                    gid: 65534
                },
                Destination::Forward {
                    address: "carol@x".into()
                },
            ]
        );
    }

    #[test]
    fn privileges_come_from_a_non_root_owner() {
        let mut source = MemoryAliases::from_source("p: |/bin/cat, /tmp/f\n", ALICE);
        let result = expand(&mut source, "p", &options());
        assert_eq!(
            destinations(&result),
            vec![
                Destination::Command {
                    command: "/bin/cat".into(),
                    uid: 1500,
                    gid: 1500
                },
                Destination::File {
                    path: "/tmp/f".into(),
                    uid: 1500,
                    gid: 1500
                },
            ]
        );
    }

    #[test]
    fn owner_alias_becomes_the_sender() {
        let aliases =
            "team: alice, sub\nowner-team: dave\nsub: bob\nowner-sub: erin\nsolo: carol\n";
        let result = run(aliases, "team", &options());
        let senders: Vec<_> = result.deliveries.iter().map(|d| d.sender.clone()).collect();
        assert_eq!(
            senders,
            vec![
                Some("owner-team@mail.example.com".to_string()),
                Some("owner-sub@mail.example.com".to_string())
            ]
        );
        assert_eq!(run(aliases, "solo", &options()).deliveries[0].sender, None);
    }

    #[test]
    fn recipient_delimiter_falls_back_to_the_base_name() {
        let mut opts = options();
        opts.recipient_delimiter = "+".into();
        let aliases = "user+special: special\nuser: alice, bob@example.org\n";
        assert_eq!(
            destinations(&run(aliases, "user+special", &opts)),
            vec![mailbox("special")]
        );
        // The unmatched extension is handed on, as Postfix's propagate_unmatched_extensions.
        assert_eq!(
            destinations(&run(aliases, "User+Other", &opts)),
            vec![
                mailbox("alice"),
                Destination::Forward {
                    address: "bob+other@example.org".into()
                }
            ]
        );
        assert_eq!(
            destinations(&run(aliases, "carol+x", &opts)),
            vec![mailbox("carol")]
        );
        assert_eq!(
            destinations(&run("root: root, james\n", "root+x", &opts)),
            vec![mailbox("root"), mailbox("james")]
        );
        // Without a delimiter configured, `user+other` is just a name.
        assert_eq!(
            destinations(&run(aliases, "user+other", &options())),
            vec![mailbox("user+other")]
        );
        opts.recipient_delimiter = "-".into();
        assert_eq!(
            destinations(&run("owner: x\n", "owner-list", &opts)),
            vec![mailbox("owner-list")]
        );
    }

    #[test]
    fn expansion_is_bounded() {
        let mut aliases = String::from("big: ");
        for i in 0..1500 {
            aliases.push_str(&format!("u{i}, "));
        }
        aliases.push('\n');
        let result = run(&aliases, "big", &options());
        assert_eq!(result.deliveries.len(), 1000);
        assert_eq!(
            reasons(&result),
            vec![(
                "alias expansion exceeds 1000 destinations".to_string(),
                Dsn::TOO_MANY_RECIPIENTS
            )]
        );
        let mut deep = String::new();
        for i in 0..30 {
            deep.push_str(&format!("d{i}: d{}\n", i + 1));
        }
        let result = run(&deep, "d0", &options());
        assert!(result.deliveries.is_empty());
        assert_eq!(result.failures[0].dsn, Dsn::LOOP);
        assert!(
            result.failures[0].reason.contains("more than 20 levels"),
            "{:?}",
            result.failures
        );
    }

    #[test]
    fn duplicate_destinations_are_delivered_once() {
        let result = run(
            "team: alice, sub, ALICE\nsub: alice, bob\n",
            "team",
            &options(),
        );
        assert_eq!(
            destinations(&result),
            vec![mailbox("alice"), mailbox("bob")]
        );
    }

    #[test]
    fn include_files_are_read_at_expansion() {
        let dir = tempfile::tempdir().expect("tempdir");
        let list = dir.path().join("list");
        std::fs::write(
            &list,
            "# members\nalice, bob\n\n  carol@example.org\n|/bin/evil\n/tmp/evil\n",
        )
        .expect("write");
        std::fs::set_permissions(&list, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let aliases = format!("team: :include:{}, dave\n", list.display());
        let result = run(&aliases, "team", &options());
        assert_eq!(
            destinations(&result),
            vec![
                mailbox("alice"),
                mailbox("bob"),
                Destination::Forward {
                    address: "carol@example.org".into()
                },
                mailbox("dave"),
            ]
        );
        assert_eq!(
            reasons(&result),
            vec![
                (
                    "mail to command is restricted".to_string(),
                    Dsn::NOT_AUTHORIZED
                ),
                (
                    "mail to file is restricted".to_string(),
                    Dsn::NOT_AUTHORIZED
                ),
            ]
        );
        assert_eq!(
            result.deliveries[0].chain,
            vec!["team".to_string(), format!(":include:{}", list.display())]
        );
        let mut opts = options();
        opts.commands_in_includes = true;
        let result = run(&aliases, "team", &opts);
        assert!(destinations(&result).contains(&Destination::Command {
            command: "/bin/evil".into(),
            uid: 65534,
            gid: 65534
        }));
    }

    #[test]
    fn an_unreadable_include_file_fails_that_target_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing");
        let aliases = format!("team: :include:{}, dave\n", missing.display());
        let result = run(&aliases, "team", &options());
        assert_eq!(destinations(&result), vec![mailbox("dave")]);
        assert_eq!(
            reasons(&result),
            vec![(
                format!(
                    "cannot open include file {}: No such file or directory",
                    missing.display()
                ),
                Dsn::CONFIG_ERROR
            )]
        );
        assert_eq!(
            result.failures[0].target,
            format!(":include:{}", missing.display())
        );
        // A file that default_privs may not read is refused even though we could read it.
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "alice\n").expect("write");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let aliases = format!("team: :include:{}\n", secret.display());
        let result = run(&aliases, "team", &options());
        if nix::unistd::geteuid().is_root() {
            assert_eq!(
                reasons(&result),
                vec![(
                    format!(
                        "cannot open include file {}: Permission denied",
                        secret.display()
                    ),
                    Dsn::CONFIG_ERROR
                )]
            );
        }
        let result = run("rel: :include:relative/path\n", "rel", &options());
        assert_eq!(
            result.failures[0].reason,
            "include file relative/path must be an absolute pathname"
        );
        let aliases = format!("team: :include:{}\n", dir.path().display());
        let result = run(&aliases, "team", &options());
        assert_eq!(
            reasons(&result),
            vec![(
                format!(
                    "cannot open include file {}: not a regular file",
                    dir.path().display()
                ),
                Dsn::CONFIG_ERROR
            )]
        );
    }

    #[test]
    fn a_non_root_include_file_runs_as_its_owner() {
        if !nix::unistd::geteuid().is_root() {
            return; // Needs chown; CI runs as root.
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let list = dir.path().join("list");
        std::fs::write(&list, "|/bin/cat\n").expect("write");
        std::os::unix::fs::chown(&list, Some(ALICE.uid), Some(ALICE.gid)).expect("chown");
        let mut opts = options();
        opts.commands_in_includes = true;
        let result = run(&format!("l: :include:{}\n", list.display()), "l", &opts);
        assert_eq!(
            destinations(&result),
            vec![Destination::Command {
                command: "/bin/cat".into(),
                uid: 1500,
                gid: 1500
            }]
        );
    }

    #[test]
    fn include_loops_are_caught() {
        let dir = tempfile::tempdir().expect("tempdir");
        let list = dir.path().join("list");
        std::fs::write(&list, format!(":include:{}\nalice\n", list.display())).expect("write");
        std::fs::set_permissions(&list, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let result = run(
            &format!("l: :include:{}\n", list.display()),
            "l",
            &options(),
        );
        assert_eq!(destinations(&result), vec![mailbox("alice")]);
        assert_eq!(
            result.failures[0].reason,
            format!("include file loop for {}", list.display())
        );
    }

    struct Broken;
    impl AliasSource for Broken {
        fn lookup(&mut self, _: &str) -> Result<Option<AliasValue>> {
            Err(crate::sysexits::Error::temp(
                "open database /etc/aliases.cdb: Input/output error",
            ))
        }
    }

    #[test]
    fn an_unreadable_database_defers() {
        let result = expand(&mut Broken, "alice", &options());
        assert_eq!(
            reasons(&result),
            vec![(
                "alias database unavailable: open database /etc/aliases.cdb: Input/output error"
                    .to_string(),
                Dsn::TEMP_LOCAL
            )]
        );
    }

    #[test]
    fn database_tables_answer_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = dir.path().join("first");
        let second = dir.path().join("second");
        std::fs::write(&first, "a: one\n").expect("write");
        std::fs::write(&second, "a: two\nb: three\n").expect("write");
        for source in [&first, &second] {
            super::super::database::compile(source, &mut |_| {}).expect("compiles");
        }
        let mut maps = AliasMaps::open(&[&first, &second]).expect("opens");
        let opts = options();
        assert_eq!(
            destinations(&expand(&mut maps, "a", &opts)),
            vec![mailbox("one")]
        );
        assert_eq!(
            destinations(&expand(&mut maps, "b", &opts)),
            vec![mailbox("three")]
        );
        assert!(maps.warnings().is_empty());
    }
}
