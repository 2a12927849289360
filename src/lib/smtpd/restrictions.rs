//! `smtpd_relay_restrictions` and `smtpd_recipient_restrictions`: Postfix's access
//! lists for `RCPT TO`, with the restrictions that decide relaying. Each list is read
//! left to right: the first `permit_*` that matches ends the list (the next one is
//! still read), the first `reject*`/`defer*` that matches refuses the recipient, and a
//! list that ends without either lets it through. The relay list is read first, as
//! Postfix does by default (`smtpd_relay_before_recipient_restrictions = no` is not
//! offered).

use std::fmt;

use super::relay::RelayPolicy;
use super::reply::Reply;
use crate::config::Config;
use crate::sysexits::Result;

/// One restriction mailroom knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restriction {
    /// The client is in `mynetworks`.
    PermitMynetworks,
    /// The client has logged in with AUTH.
    PermitSaslAuthenticated,
    /// The recipient's domain is ours (`mydestination`) or in `relay_domains`.
    PermitAuthDestination,
    /// `554 5.7.1 <rcpt>: Relay access denied` unless the destination is ours.
    RejectUnauthDestination,
    /// The same with `454 4.7.1`: a mistake in `relay_domains` defers, not bounces.
    DeferUnauthDestination,
    Permit,
    Reject,
    Defer,
}

impl Restriction {
    fn parse(name: &str) -> Option<Restriction> {
        use Restriction::*;
        Some(match name.to_ascii_lowercase().as_str() {
            "permit_mynetworks" => PermitMynetworks,
            "permit_sasl_authenticated" => PermitSaslAuthenticated,
            "permit_auth_destination" => PermitAuthDestination,
            "reject_unauth_destination" => RejectUnauthDestination,
            "defer_unauth_destination" => DeferUnauthDestination,
            "permit" => Permit,
            "reject" => Reject,
            "defer" => Defer,
            _ => return None,
        })
    }

    /// Whether it can stop mail for other domains (Postfix insists on one).
    fn blocks_relaying(self) -> bool {
        matches!(
            self,
            Restriction::RejectUnauthDestination
                | Restriction::DeferUnauthDestination
                | Restriction::Reject
                | Restriction::Defer
        )
    }
}

impl fmt::Display for Restriction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Restriction::*;
        f.write_str(match self {
            PermitMynetworks => "permit_mynetworks",
            PermitSaslAuthenticated => "permit_sasl_authenticated",
            PermitAuthDestination => "permit_auth_destination",
            RejectUnauthDestination => "reject_unauth_destination",
            DeferUnauthDestination => "defer_unauth_destination",
            Permit => "permit",
            Reject => "reject",
            Defer => "defer",
        })
    }
}

/// What is known of the client and the recipient when the lists are read.
pub struct Facts<'a> {
    pub in_mynetworks: bool,
    pub authenticated: bool,
    pub recipient: &'a str,
}

/// The two lists of one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restrictions {
    pub relay: Vec<Restriction>,
    pub recipient: Vec<Restriction>,
}

enum Verdict {
    Permit,
    Dunno,
    Refuse(Reply),
}

impl Restrictions {
    /// Reads both lists. A restriction mailroom does not know (a table lookup, an RBL)
    /// is left out with a warning through `warn`; when what is left could not stop
    /// relaying, `reject_unauth_destination` is added to the relay list with a warning
    /// (Postfix refuses to start; an open relay is the one mistake never to make).
    pub fn from_config(config: &Config, warn: &mut dyn FnMut(String)) -> Result<Restrictions> {
        let mut read = |name: &str| -> Result<Vec<Restriction>> {
            let mut list = Vec::new();
            for entry in config.list(name)? {
                match Restriction::parse(&entry) {
                    Some(r) => list.push(r),
                    // The argument of the restriction before (a table, an RBL domain),
                    // already warned about with it.
                    None if entry.contains([':', '.', '/']) => {}
                    None => warn(format!(
                        "{name}: restriction \"{entry}\" is not supported by mailroom and is ignored"
                    )),
                }
            }
            Ok(list)
        };
        let relay = read("smtpd_relay_restrictions")?;
        let recipient = read("smtpd_recipient_restrictions")?;
        let mut restrictions = Restrictions { relay, recipient };
        if !restrictions.stops_relaying() {
            warn(
                "smtpd_relay_restrictions and smtpd_recipient_restrictions: neither has a \
                 working reject_unauth_destination, defer_unauth_destination, reject or \
                 defer; adding reject_unauth_destination, so that this server is no open relay"
                    .into(),
            );
            restrictions
                .relay
                .push(Restriction::RejectUnauthDestination);
        }
        Ok(restrictions)
    }

    fn stops_relaying(&self) -> bool {
        self.relay
            .iter()
            .chain(&self.recipient)
            .any(|r| r.blocks_relaying())
    }

    /// The refusal for a recipient, if the lists refuse it.
    pub fn check_recipient(&self, facts: &Facts<'_>, relay: &RelayPolicy) -> Option<Reply> {
        for list in [&self.relay, &self.recipient] {
            if let Verdict::Refuse(reply) = evaluate(list, facts, relay) {
                return Some(reply);
            }
        }
        None
    }
}

fn evaluate(list: &[Restriction], facts: &Facts<'_>, relay: &RelayPolicy) -> Verdict {
    use Restriction::*;
    let rcpt = facts.recipient;
    let ours = || relay.is_our_destination(rcpt);
    for r in list {
        let verdict = match r {
            PermitMynetworks if facts.in_mynetworks => Verdict::Permit,
            PermitSaslAuthenticated if facts.authenticated => Verdict::Permit,
            PermitAuthDestination if ours() => Verdict::Permit,
            RejectUnauthDestination if !ours() => Verdict::Refuse(super::reply::relay_denied(rcpt)),
            DeferUnauthDestination if !ours() => Verdict::Refuse(Reply::new(
                454,
                format!("4.7.1 <{rcpt}>: Relay access denied"),
            )),
            Permit => Verdict::Permit,
            Reject => Verdict::Refuse(Reply::new(
                554,
                format!("5.7.1 <{rcpt}>: Recipient address rejected: Access denied"),
            )),
            Defer => Verdict::Refuse(Reply::new(
                450,
                format!("4.3.2 <{rcpt}>: Recipient address rejected: Try again later"),
            )),
            _ => Verdict::Dunno,
        };
        if !matches!(verdict, Verdict::Dunno) {
            return verdict;
        }
    }
    Verdict::Dunno
}

#[cfg(test)]
mod tests {
    use super::*;
    use Restriction::*;

    fn policy() -> RelayPolicy {
        RelayPolicy {
            mydestination: vec!["vm".into()],
            relay_domains: vec![],
            mynetworks: vec![],
        }
    }

    fn config(text: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.cf"), text).unwrap();
        Config::load_dir(dir.path().to_path_buf(), crate::config::DirSource::Explicit).unwrap()
    }

    #[test]
    fn lists_are_read_as_postfix_reads_them() {
        let default = Restrictions {
            relay: vec![
                PermitMynetworks,
                PermitSaslAuthenticated,
                RejectUnauthDestination,
            ],
            recipient: vec![],
        };
        // (in mynetworks, authenticated, recipient, reply code)
        let table = [
            (false, false, "bob@example.net", Some(554)),
            (true, false, "bob@example.net", None),
            (false, true, "bob@example.net", None),
            (false, false, "alice@vm", None),
        ];
        for (in_mynetworks, authenticated, recipient, code) in table {
            let facts = Facts {
                in_mynetworks,
                authenticated,
                recipient,
            };
            let got = default.check_recipient(&facts, &policy()).map(|r| r.code);
            assert_eq!(got, code, "{in_mynetworks} {authenticated} {recipient}");
        }
        let facts = Facts {
            in_mynetworks: false,
            authenticated: false,
            recipient: "bob@example.net",
        };
        let defer = Restrictions {
            relay: vec![DeferUnauthDestination],
            recipient: vec![],
        };
        assert_eq!(
            defer
                .check_recipient(&facts, &policy())
                .unwrap()
                .to_string(),
            "454 4.7.1 <bob@example.net>: Relay access denied"
        );
        // The submission service's lists: only a logged-in client, for any domain.
        let submission = Restrictions {
            relay: vec![],
            recipient: vec![PermitSaslAuthenticated, Reject],
        };
        let local = Facts {
            recipient: "alice@vm",
            ..facts
        };
        assert_eq!(
            submission
                .check_recipient(&local, &policy())
                .unwrap()
                .to_string(),
            "554 5.7.1 <alice@vm>: Recipient address rejected: Access denied"
        );
        let logged_in = Facts {
            authenticated: true,
            ..local
        };
        assert!(submission.check_recipient(&logged_in, &policy()).is_none());
    }

    #[test]
    fn unknown_restrictions_and_open_relays_are_warned_about() {
        let mut warnings = Vec::new();
        let r = Restrictions::from_config(
            &config("smtpd_relay_restrictions = permit_mynetworks, check_client_access hash:/x\n"),
            &mut |w| warnings.push(w),
        )
        .unwrap();
        assert_eq!(r.relay, [PermitMynetworks, RejectUnauthDestination]);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        let mut warnings = Vec::new();
        let r = Restrictions::from_config(&config(""), &mut |w| warnings.push(w)).unwrap();
        assert_eq!(
            r.relay,
            [
                PermitMynetworks,
                PermitSaslAuthenticated,
                RejectUnauthDestination
            ]
        );
        assert!(warnings.is_empty(), "{warnings:?}");
    }
}
