//! Recipient validation at RCPT time, as Postfix's smtpd does with `local_recipient_maps`:
//! mail for a domain of `mydestination` is taken only for a local part that local
//! delivery knows (a passwd user or an alias, or `user+ext` of either). Taking it and
//! bouncing it later would mail the bounce to the envelope sender, which on internet
//! mail is forged (backscatter).
//!
//! The tables (`local_recipient_maps`, default `proxy:unix:passwd.byname $alias_maps`):
//! - `unix:passwd.byname` (also behind `proxy:`): the passwd database, through
//!   getpwnam(3), so users added since the server started are seen;
//! - the file tables aliases support (`hash:`, `cdb:`, `btree:`, `lmdb:`, `dbm:`,
//!   `sdbm:`): the database `newaliases` compiles ([`AliasDb`]), re-read when it is
//!   rebuilt;
//! - anything else cannot be read: each lookup answers 451 (a temporary lookup failure,
//!   as Postfix answers for a table it cannot open), so mail is retried, never lost.
//!
//! An empty `local_recipient_maps` takes every local part (Postfix's meaning).
//!
//! Under `smtpd_chroot = yes` neither `/etc/passwd` nor the alias database is visible
//! once the sessions process has entered the queue directory: [`LocalRecipients::freeze`]
//! takes a snapshot of both before the chroot, which lasts until the daemon starts a new
//! sessions process (`mailroom reload`).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;

use super::reply::Reply;
use crate::address;
use crate::aliases::parse::{fold, unquote};
use crate::aliases::{AliasDb, split_extension};
use crate::config::Config;
use crate::log::Log;
use crate::sysexits::{Error, Result};

/// Table types whose source is a local file, read as alias databases.
use crate::aliases::rebuild::FILE_TYPES;

/// At most this many passwd entries are kept in a snapshot (a directory service that
/// enumerates without end must not exhaust memory).
const MAX_SNAPSHOT_USERS: usize = 1_000_000;

/// What the recipient check answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not a local domain, or a known local part: take it.
    Accept,
    /// A local domain and a local part no table has.
    Unknown,
    /// A table could not be read; the text says which and why.
    Unavailable(String),
}

/// The passwd database: asked live, or a snapshot of its names.
enum Passwd {
    Live,
    Snapshot(HashSet<String>),
}

impl Passwd {
    fn has(&self, name: &str) -> std::result::Result<bool, String> {
        match self {
            // Bounded there: a name longer than a local part is nobody's.
            Passwd::Live => crate::privilege::user_by_name(name)
                .map(|user| user.is_some())
                .map_err(|e| format!("getpwnam: {e}")),
            Passwd::Snapshot(names) => Ok(names.contains(name)),
        }
    }
}

/// One alias database; opened again at the next lookup when it could not be.
struct AliasTable {
    source: PathBuf,
    db: Option<AliasDb>,
    /// Frozen: answer from what was read, never look at the file again (chroot).
    frozen: bool,
}

impl AliasTable {
    fn has(&mut self, name: &str) -> std::result::Result<bool, String> {
        if self.db.is_none() {
            if self.frozen {
                return Err("not readable when the snapshot was taken".into());
            }
            self.db = Some(AliasDb::open(&self.source).map_err(|e| e.message)?);
        }
        let Some(db) = self.db.as_mut() else {
            return Err("not open".into());
        };
        if self.frozen {
            return Ok(db.get(name).is_some());
        }
        // Re-reads a database newaliases rebuilt since (compared by file identity).
        db.lookup(name).map(|v| v.is_some()).map_err(|e| e.message)
    }
}

enum Table {
    Passwd(Passwd),
    Aliases(Box<Mutex<AliasTable>>),
    /// A table type we cannot read, and why.
    Unusable(String),
}

/// One entry of `local_recipient_maps`, as named there (for log lines).
struct Named {
    name: String,
    table: Table,
}

/// The `local_recipient_maps` check of one server, shared by its sessions.
pub struct LocalRecipients {
    /// `None`: `local_recipient_maps` is empty, every local part is taken.
    tables: Option<Vec<Named>>,
    /// `recipient_delimiter`: each character is one.
    delimiters: String,
    /// `mydestination`, lower-cased.
    mydestination: Vec<String>,
    /// `unknown_local_recipient_reject_code`.
    reject_code: u16,
}

impl LocalRecipients {
    /// Reads `local_recipient_maps`, `unknown_local_recipient_reject_code`,
    /// `recipient_delimiter` and `mydestination`. Tables that cannot be used are reported
    /// to `warn` (their lookups then fail temporarily); a reject code that is not 4XX or
    /// 5XX is a configuration error.
    pub fn from_config(config: &Config, warn: &mut dyn FnMut(String)) -> Result<LocalRecipients> {
        const CODE: &str = "unknown_local_recipient_reject_code";
        let code = config.number(CODE)?;
        let reject_code = u16::try_from(code)
            .ok()
            .filter(|c| (400..600).contains(c))
            .ok_or_else(|| Error::config(format!("{CODE}: {code} is not a 4XX or 5XX code")))?;
        let items = config.list("local_recipient_maps")?;
        let tables = (!items.is_empty()).then(|| {
            items
                .iter()
                .map(|item| {
                    let table = open_table(item);
                    if let Table::Unusable(why) = &table {
                        warn(format!("{item} is unavailable. {why}"));
                    }
                    Named {
                        name: item.clone(),
                        table,
                    }
                })
                .collect()
        });
        Ok(LocalRecipients {
            tables,
            delimiters: config.get("recipient_delimiter")?,
            mydestination: config.mydestination()?,
            reject_code,
        })
    }

    /// Answers from now on from what can be read now: the passwd names and the alias
    /// databases as they are. For a process about to chroot, where neither is visible.
    pub fn freeze(&mut self, warn: &mut dyn FnMut(String)) {
        let Some(tables) = self.tables.as_mut() else {
            return;
        };
        let mut users = None;
        for named in tables {
            match &mut named.table {
                Table::Passwd(passwd) => {
                    let names = users.get_or_insert_with(passwd_names);
                    *passwd = Passwd::Snapshot(names.clone());
                }
                Table::Aliases(table) => {
                    let table = table.get_mut().unwrap_or_else(|e| e.into_inner());
                    // Opens it, or re-reads it when it changed since.
                    if let Err(why) = table.has("") {
                        warn(format!("{} is unavailable. {why}", named.name));
                    }
                    table.frozen = true;
                }
                Table::Unusable(_) => {}
            }
        }
    }

    /// Whether `recipient` (qualified: it has a domain) may be taken.
    pub fn check(&self, recipient: &str) -> Verdict {
        let Some(tables) = &self.tables else {
            return Verdict::Accept;
        };
        if !address::is_local(recipient, &self.mydestination) {
            return Verdict::Accept;
        }
        // As local(8) will: case-folded, quotes removed, `user+ext` also as `user`.
        let local = fold(&unquote(address::split(recipient).0));
        let mut keys = vec![local.as_str()];
        if let Some((base, _)) = split_extension(&local, &self.delimiters) {
            keys.push(base);
        }
        for key in keys {
            for named in tables {
                let found = match &named.table {
                    Table::Passwd(passwd) => passwd.has(key),
                    Table::Aliases(table) => {
                        table.lock().unwrap_or_else(|e| e.into_inner()).has(key)
                    }
                    Table::Unusable(why) => Err(why.clone()),
                };
                match found {
                    Ok(true) => return Verdict::Accept,
                    Ok(false) => {}
                    Err(why) => return Verdict::Unavailable(format!("{}: {why}", named.name)),
                }
            }
        }
        Verdict::Unknown
    }

    /// The reply refusing `recipient` (as the client wrote it; `qualified` is looked up),
    /// or `None` to take it. A table that cannot be read is logged as a warning.
    pub fn refuse(&self, recipient: &str, qualified: &str, log: &Log) -> Option<Reply> {
        match self.check(qualified) {
            Verdict::Accept => None,
            Verdict::Unknown => Some(unknown_user(self.reject_code, recipient)),
            Verdict::Unavailable(why) => {
                log.warning(&format!("{why}: lookup error for \"{qualified}\""));
                Some(temporary_failure(recipient))
            }
        }
    }
}

/// `550 5.1.1 <x@dom>: Recipient address rejected: User unknown in local recipient
/// table`; the enhanced code's class follows the reply code's (4.1.1 for 450).
pub fn unknown_user(code: u16, recipient: &str) -> Reply {
    let class = if code < 500 { 4 } else { 5 };
    Reply::new(
        code,
        format!(
            "{class}.1.1 <{recipient}>: Recipient address rejected: User unknown in local recipient table"
        ),
    )
}

/// `451 4.3.0 <x@dom>: Temporary lookup failure`.
pub fn temporary_failure(recipient: &str) -> Reply {
    Reply::new(
        451,
        format!("4.3.0 <{recipient}>: Temporary lookup failure"),
    )
}

/// The table an entry of `local_recipient_maps` names.
fn open_table(item: &str) -> Table {
    // `proxy:` (Postfix's proxymap, which reads tables for chrooted daemons) changes
    // nothing here: the table is read in this process.
    let inner = item.strip_prefix("proxy:").unwrap_or(item);
    if inner == "unix:passwd.byname" {
        return Table::Passwd(Passwd::Live);
    }
    let Some((kind, path)) = inner.split_once(':') else {
        return Table::Unusable("not a type:name lookup table".into());
    };
    if path.is_empty() || !FILE_TYPES.iter().any(|t| t.eq_ignore_ascii_case(kind)) {
        return Table::Unusable(format!("unsupported dictionary type: {kind}"));
    }
    let source = PathBuf::from(path);
    // A database that cannot be read now is tried again at each lookup.
    let db = AliasDb::open(&source).ok();
    Table::Aliases(Box::new(Mutex::new(AliasTable {
        source,
        db,
        frozen: false,
    })))
}

/// Every user name in the passwd database (getpwent), for a snapshot.
fn passwd_names() -> HashSet<String> {
    let mut names = HashSet::new();
    // SAFETY: getpwent is not thread-safe; this runs in the sessions process before it
    // starts any thread (and in tests, on data no other thread of ours enumerates). Each
    // entry's name is copied before the next call.
    unsafe {
        libc::setpwent();
        while names.len() < MAX_SNAPSHOT_USERS {
            let entry = libc::getpwent();
            if entry.is_null() || (*entry).pw_name.is_null() {
                break;
            }
            let name = std::ffi::CStr::from_ptr((*entry).pw_name);
            if let Ok(name) = name.to_str() {
                names.insert(name.to_string());
            }
        }
        libc::endpwent();
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn main_cf(dir: &std::path::Path, extra: &str) -> Config {
        let text = format!(
            "myhostname = vm\nmydestination = vm, localhost\nmyorigin = vm\n\
             alias_maps = cdb:{}/aliases\n{extra}",
            dir.display()
        );
        std::fs::write(dir.join("main.cf"), text).unwrap();
        Config::load(Some(dir)).unwrap()
    }

    /// A check whose passwd has only `alice` and `Bob`, and an alias table with
    /// `postmaster` and `list`.
    fn fixture(dir: &std::path::Path, extra: &str) -> LocalRecipients {
        std::fs::write(
            dir.join("aliases"),
            "postmaster: root\nlist: alice, carol\n",
        )
        .unwrap();
        crate::aliases::compile(&dir.join("aliases"), &mut |_| {}).unwrap();
        let config = main_cf(dir, extra);
        let mut warnings = Vec::new();
        let mut check = LocalRecipients::from_config(&config, &mut |w| warnings.push(w)).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        for named in check.tables.iter_mut().flatten() {
            if let Table::Passwd(p) = &mut named.table {
                *p = Passwd::Snapshot(["alice", "Bob"].map(String::from).into());
            }
        }
        check
    }

    #[test]
    fn local_parts_are_checked_as_local_delivery_takes_them() {
        let dir = tempfile::tempdir().unwrap();
        let check = fixture(dir.path(), "recipient_delimiter = +-\n");
        use Verdict::{Accept, Unknown};
        let table = [
            ("alice@vm", Accept, "a passwd user"),
            ("ALICE@VM", Accept, "folded as Postfix folds lookup keys"),
            ("alice+news@localhost", Accept, "user+ext"),
            (
                "alice-news@localhost",
                Accept,
                "another delimiter character",
            ),
            ("postmaster@vm", Accept, "an alias"),
            ("List+x@vm", Accept, "alias+ext, uppercase"),
            ("\"alice\"@vm", Accept, "quotes are not part of the name"),
            (
                "bob@vm",
                Unknown,
                "passwd names are not folded: Bob is not bob",
            ),
            ("nosuchuser@vm", Unknown, "nobody"),
            ("nosuch+alice@vm", Unknown, "the extension is not the user"),
            ("+alice@vm", Unknown, "nothing before the delimiter"),
            (
                "nosuchuser@example.net",
                Accept,
                "not our domain: relay control's job",
            ),
            ("carol@vm", Unknown, "an alias target is not an alias"),
        ];
        for (recipient, want, why) in table {
            assert_eq!(check.check(recipient), want, "{recipient}: {why}");
        }
    }

    #[test]
    fn without_a_delimiter_an_extension_is_part_of_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let check = fixture(dir.path(), "");
        assert_eq!(check.check("alice+x@vm"), Verdict::Unknown);
        assert_eq!(check.check("alice@vm"), Verdict::Accept);
    }

    #[test]
    fn empty_maps_accept_every_local_part() {
        let dir = tempfile::tempdir().unwrap();
        let check = fixture(dir.path(), "local_recipient_maps =\n");
        assert!(check.tables.is_none());
        assert_eq!(check.check("nosuchuser@vm"), Verdict::Accept);
    }

    #[test]
    fn only_the_named_tables_are_asked() {
        let dir = tempfile::tempdir().unwrap();
        // Aliases only: a passwd user is unknown.
        let check = fixture(dir.path(), "local_recipient_maps = $alias_maps\n");
        assert_eq!(check.check("alice@vm"), Verdict::Unknown);
        assert_eq!(check.check("postmaster@vm"), Verdict::Accept);
        // The real passwd database, asked live: root exists everywhere.
        let check = fixture(dir.path(), "local_recipient_maps = unix:passwd.byname\n");
        let live = LocalRecipients {
            tables: Some(vec![Named {
                name: "unix:passwd.byname".into(),
                table: Table::Passwd(Passwd::Live),
            }]),
            ..check
        };
        assert_eq!(live.check("root@vm"), Verdict::Accept);
        assert_eq!(live.check("ROOT@vm"), Verdict::Accept);
        assert_eq!(
            live.check("no-such-user-mailroom-rcpt@vm"),
            Verdict::Unknown
        );
        let long = format!("{}@vm", "a".repeat(10_000));
        assert_eq!(live.check(&long), Verdict::Unknown);
    }

    #[test]
    fn a_table_that_cannot_be_read_fails_temporarily() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("aliases"), "").unwrap();
        let config = main_cf(
            dir.path(),
            "local_recipient_maps = ldap:/etc/ldap-users.cf, nocolon, $alias_maps\n",
        );
        let mut warnings = Vec::new();
        let check = LocalRecipients::from_config(&config, &mut |w| warnings.push(w)).unwrap();
        assert_eq!(
            warnings,
            [
                "ldap:/etc/ldap-users.cf is unavailable. unsupported dictionary type: ldap",
                "nocolon is unavailable. not a type:name lookup table",
            ]
        );
        assert_eq!(
            check.check("alice@vm"),
            Verdict::Unavailable(
                "ldap:/etc/ldap-users.cf: unsupported dictionary type: ldap".into()
            )
        );
        // Not ours: no table is asked.
        assert_eq!(check.check("alice@example.net"), Verdict::Accept);
        // A corrupt database: 451 too (never "unknown", which would be final).
        std::fs::write(dir.path().join("aliases.cdb"), b"garbage").unwrap();
        let config = main_cf(dir.path(), "local_recipient_maps = $alias_maps\n");
        let check = LocalRecipients::from_config(&config, &mut |_| {}).unwrap();
        assert!(
            matches!(check.check("alice@vm"), Verdict::Unavailable(_)),
            "{:?}",
            check.check("alice@vm")
        );
    }

    #[test]
    fn a_rebuilt_database_is_seen_and_a_frozen_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let live = fixture(dir.path(), "");
        let mut frozen = fixture(dir.path(), "");
        frozen.freeze(&mut |w| panic!("{w}"));
        assert_eq!(live.check("newalias@vm"), Verdict::Unknown);
        std::fs::write(dir.path().join("aliases"), "newalias: alice\n").unwrap();
        crate::aliases::compile(&dir.path().join("aliases"), &mut |_| {}).unwrap();
        assert_eq!(live.check("newalias@vm"), Verdict::Accept);
        assert_eq!(frozen.check("newalias@vm"), Verdict::Unknown);
        assert_eq!(frozen.check("list@vm"), Verdict::Accept);
        // The snapshot of passwd is of the real one: root is in it.
        assert_eq!(frozen.check("root@vm"), Verdict::Accept);
        assert_eq!(frozen.check("alice@vm"), Verdict::Unknown);
    }

    #[test]
    fn replies_and_reject_codes() {
        let table = [
            (
                550,
                "550 5.1.1 <x@vm>: Recipient address rejected: User unknown in local recipient table",
            ),
            (
                450,
                "450 4.1.1 <x@vm>: Recipient address rejected: User unknown in local recipient table",
            ),
        ];
        for (code, want) in table {
            assert_eq!(unknown_user(code, "x@vm").to_string(), want);
        }
        assert_eq!(
            temporary_failure("x@vm").to_string(),
            "451 4.3.0 <x@vm>: Temporary lookup failure"
        );
        let dir = tempfile::tempdir().unwrap();
        for (value, ok) in [("450", true), ("599", true), ("250", false), ("600", false)] {
            let config = main_cf(
                dir.path(),
                &format!("unknown_local_recipient_reject_code = {value}\n"),
            );
            let got = LocalRecipients::from_config(&config, &mut |_| {});
            assert_eq!(got.is_ok(), ok, "{value}");
        }
    }
}
