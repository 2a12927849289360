//! `sendmail -bv`: say where each address would go, deliver nothing.
//!
//! Postfix mails this report to the sender; we print it, one line per address, because
//! the person who runs `-bv` is at the terminal and may have no working mailbox yet.

use std::fmt;

use super::expand::{AliasMaps, AliasSource, Destination, ExpandOptions, Expansion, expand};
use super::parse::unquote;
use super::rebuild::local_files;
use crate::address;
use crate::config::Config;
use crate::sysexits::Result;

/// `sendmail -bv ADDR...`: one [`Verdict`] per address, from the tables in `alias_maps`.
/// Warnings (a table that is not a local file, a database older than its source) go to
/// `warn`. Users are checked in the passwd database.
pub fn verify(
    config: &Config,
    addresses: &[String],
    warn: &mut dyn FnMut(&str),
) -> Result<Vec<Verdict>> {
    let settings = VerifySettings {
        local_domains: config.mydestination()?,
        options: ExpandOptions::from_config(config)?,
    };
    let tables = config.tables("alias_maps")?;
    let mut maps = AliasMaps::open(&local_files(&tables, warn))?;
    for warning in maps.warnings() {
        warn(&warning);
    }
    let user_exists = |name: &str| matches!(crate::privilege::user_by_name(name), Ok(Some(_)));
    let user_name = |uid: u32| match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => format!("uid {uid}"),
    };
    Ok(verify_addresses(
        &mut maps,
        &settings,
        addresses,
        &user_exists,
        &user_name,
    ))
}

/// What `-bv` needs besides the alias tables.
#[derive(Debug, Clone)]
pub struct VerifySettings {
    /// `mydestination`, lowercased: domains delivered here.
    pub local_domains: Vec<String>,
    pub options: ExpandOptions,
}

/// The answer for one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub address: String,
    /// `delivers to mailbox of user alice`, `expands to ...`, `unknown user: "x"`...
    pub report: String,
    /// False when some part would bounce or defer.
    pub deliverable: bool,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.address, self.report)
    }
}

/// Verifies each address. `user_name` turns a uid into a name for the report;
/// `user_exists` says whether a local mailbox owner exists (both are passed in so tests
/// need no passwd entries).
pub fn verify_addresses(
    source: &mut dyn AliasSource,
    settings: &VerifySettings,
    addresses: &[String],
    user_exists: &dyn Fn(&str) -> bool,
    user_name: &dyn Fn(u32) -> String,
) -> Vec<Verdict> {
    addresses
        .iter()
        .map(|address| verify_one(source, settings, address, user_exists, user_name))
        .collect()
}

fn verify_one(
    source: &mut dyn AliasSource,
    settings: &VerifySettings,
    address: &str,
    user_exists: &dyn Fn(&str) -> bool,
    user_name: &dyn Fn(u32) -> String,
) -> Verdict {
    let verdict = |report: String, deliverable: bool| Verdict {
        address: address.to_string(),
        report,
        deliverable,
    };
    let bare = address.trim().trim_start_matches('<').trim_end_matches('>');
    if !address::is_local(bare, &settings.local_domains) {
        return verdict(format!("relays to remote host ({bare})"), true);
    }
    let local = address::split(bare).0;
    let expansion = expand(source, &unquote(local), &settings.options);
    match expansion.deliveries.as_slice() {
        [only] if only.chain.is_empty() && expansion.failures.is_empty() => {
            if let Destination::Mailbox { user } = &only.destination {
                return if user_exists(user) {
                    verdict(format!("delivers to mailbox of user {user}"), true)
                } else {
                    verdict(format!("unknown user: \"{user}\""), false)
                };
            }
        }
        [] if expansion.failures.len() == 1 && expansion.failures[0].chain.is_empty() => {
            let failure = &expansion.failures[0];
            return verdict(failure.reason.clone(), false);
        }
        _ => {}
    }
    describe_expansion(&expansion, settings, user_exists, user_name, verdict)
}

fn describe_expansion(
    expansion: &Expansion,
    settings: &VerifySettings,
    user_exists: &dyn Fn(&str) -> bool,
    user_name: &dyn Fn(u32) -> String,
    verdict: impl Fn(String, bool) -> Verdict,
) -> Verdict {
    let mut deliverable = expansion.failures.is_empty();
    let mut parts = Vec::new();
    for delivery in &expansion.deliveries {
        parts.push(match &delivery.destination {
            Destination::Mailbox { user } if user_exists(user) => user.clone(),
            Destination::Mailbox { user } => {
                deliverable = false;
                format!("{user} (unknown user)")
            }
            Destination::Forward { address } => {
                if address::is_local(address, &settings.local_domains) {
                    format!("{address} (local, expanded again on delivery)")
                } else {
                    format!("{address} (remote)")
                }
            }
            Destination::Command { command, uid, .. } => {
                format!("|{command} (command, runs as {})", user_name(*uid))
            }
            Destination::File { path, uid, .. } => {
                format!("{path} (file, written as {})", user_name(*uid))
            }
        });
    }
    for failure in &expansion.failures {
        parts.push(format!(
            "{} (error: {}, {})",
            failure.target, failure.reason, failure.dsn
        ));
    }
    let mut report = format!("expands to {}", parts.join(", "));
    let mut senders: Vec<&str> = expansion
        .deliveries
        .iter()
        .filter_map(|d| d.sender.as_deref())
        .collect();
    senders.dedup();
    if !senders.is_empty() {
        report.push_str(&format!("; errors go to {}", senders.join(", ")));
    }
    verdict(report, deliverable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aliases::database::Privileges;
    use crate::aliases::expand::MemoryAliases;

    fn check(aliases: &str, addresses: &[&str]) -> Vec<String> {
        let mut source = MemoryAliases::from_source(aliases, Privileges::ROOT);
        let settings = VerifySettings {
            local_domains: vec!["mail.example.com".into(), "localhost".into()],
            options: ExpandOptions::new(
                "mail.example.com",
                Privileges {
                    uid: 65534,
                    gid: 65534,
                },
            ),
        };
        let users = ["alice", "root", "james", "dave"];
        let addresses: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
        verify_addresses(
            &mut source,
            &settings,
            &addresses,
            &|user| users.contains(&user),
            &|uid| {
                if uid == 65534 {
                    "nobody".into()
                } else {
                    format!("uid {uid}")
                }
            },
        )
        .iter()
        .map(|v| format!("{}{v}", if v.deliverable { "" } else { "! " }))
        .collect()
    }

    #[test]
    fn one_line_per_address() {
        let aliases = "team: alice, \"|/usr/bin/foo\", bob@example.org, /var/log/team\nowner-team: dave\n\
                       loopa: loopb\nloopb: loopa\nroot: root, james, ghost\n";
        assert_eq!(
            check(
                aliases,
                &[
                    "alice",
                    "Alice@Mail.Example.com",
                    "team",
                    "bob@example.org",
                    "nosuchuser",
                    "loopa",
                    "root"
                ]
            ),
            vec![
                "alice: delivers to mailbox of user alice",
                "Alice@Mail.Example.com: delivers to mailbox of user alice",
                "team: expands to alice, |/usr/bin/foo (command, runs as nobody), bob@example.org (remote), \
                 /var/log/team (file, written as nobody); errors go to owner-team@mail.example.com",
                "bob@example.org: relays to remote host (bob@example.org)",
                "! nosuchuser: unknown user: \"nosuchuser\"",
                "! loopa: expands to loopa (error: alias database loop for loopb, 5.4.6)",
                "! root: expands to root, james, ghost (unknown user)",
            ]
        );
    }

    #[test]
    fn verify_reads_alias_maps_from_the_configuration() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("aliases");
        std::fs::write(&source, "team: root, nosuchuser-xyz\n").expect("write");
        crate::aliases::database::compile(&source, &mut |_| {}).expect("compiles");
        let text = format!(
            "mydestination = localhost\nmyorigin = example.com\nalias_maps = ldap:/x, cdb:{}\n",
            source.display()
        );
        let config = Config::from_text(&text, &dir.path().join("main.cf"));
        let mut warnings = Vec::new();
        let addresses: Vec<String> = ["team", "root@LOCALHOST", "x@example.org"]
            .map(String::from)
            .into();
        let verdicts: Vec<String> =
            verify(&config, &addresses, &mut |w| warnings.push(w.to_string()))
                .expect("verifies")
                .iter()
                .map(ToString::to_string)
                .collect();
        assert_eq!(
            verdicts,
            vec![
                "team: expands to root, nosuchuser-xyz (unknown user)",
                "root@LOCALHOST: delivers to mailbox of user root",
                "x@example.org: relays to remote host (x@example.org)",
            ]
        );
        assert_eq!(warnings, vec!["ldap:/x: not a local file table, skipped"]);
    }
}
