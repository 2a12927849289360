//! The six checks of `mailroom dns`, each a few queries through [`Lookup`]: what the
//! records are, against what they must be for this host and domain. The verdicts on SPF
//! and the parsing of DKIM and DMARC records are mail-auth's, as a receiver would reach
//! them; only the comparison of a DKIM key with ours is done here.

use std::net::IpAddr;

use mail_auth::SpfResult;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::dmarc::Dmarc;
use mail_auth::hickory_resolver::Name;
use mail_auth::spf::verify::SpfParameters;

use super::host::{Host, LocalKey, is_public};
use super::report::{Check, Status};
use crate::dns::lookup::relative;
use crate::dns::{Answer, Lookup};

/// Every check, in the order printed.
pub async fn all(lookup: &Lookup, host: &Host) -> Vec<Check> {
    let (a, addresses) = a(lookup, host).await;
    let (mx, ptr, spf, dkim, dmarc) = tokio::join!(
        mx(lookup, host),
        ptr(lookup, host, &addresses),
        spf(lookup, host, &addresses),
        dkim(lookup, host),
        dmarc(lookup, host),
    );
    vec![a, mx, ptr, spf, dkim, dmarc]
}

fn check(
    check: &'static str,
    status: Status,
    name: &str,
    found: Vec<String>,
    expected: String,
) -> Check {
    Check {
        check,
        status,
        name: name.to_string(),
        found,
        expected,
    }
}

/// A query that got no answer: the check cannot say ok.
fn no_answer(name: &'static str, at: &str, why: &str) -> Check {
    check(
        name,
        Status::Wrong,
        at,
        vec![format!("no answer ({why})")],
        "an answer from the name servers".into(),
    )
}

/// `a`: myhostname has A or AAAA records. Returns its addresses for the checks that
/// follow.
async fn a(lookup: &Lookup, host: &Host) -> (Check, Vec<IpAddr>) {
    let name = &host.myhostname;
    match lookup.addresses(name).await {
        Answer::Found(ips) => {
            let found = ips.iter().map(IpAddr::to_string).collect();
            let c = check("a", Status::Ok, name, found, "an A or AAAA record".into());
            (c, ips)
        }
        Answer::None => {
            let records: Vec<String> = host
                .suggested_addresses()
                .iter()
                .map(|ip| {
                    let kind = if ip.is_ipv4() { "A" } else { "AAAA" };
                    format!("{name}. IN {kind} {ip}")
                })
                .collect();
            let expected = if records.is_empty() {
                format!("{name}. IN A followed by this host's public IPv4 address")
            } else {
                records.join("; ")
            };
            (
                check("a", Status::Missing, name, Vec::new(), expected),
                Vec::new(),
            )
        }
        Answer::Failed(why) => (no_answer("a", name, &why), Vec::new()),
    }
}

/// `mx`: the domain has MX records, and every host they name has an address.
async fn mx(lookup: &Lookup, host: &Host) -> Check {
    let name = &host.domain;
    let publish = format!("{name}. IN MX 10 {}.", host.myhostname);
    let mut records = match lookup.mx(name).await {
        Answer::Found(records) => records,
        Answer::None => return check("mx", Status::Missing, name, Vec::new(), publish),
        Answer::Failed(why) => return no_answer("mx", name, &why),
    };
    records.sort();
    let mut found = Vec::new();
    let mut all_resolve = true;
    for (preference, exchange) in &records {
        // RFC 7505's null MX ("0 .") says the domain takes no mail at all.
        let addresses = if exchange.is_empty() {
            Answer::None
        } else {
            lookup.addresses(exchange).await
        };
        let shown = if exchange.is_empty() { "." } else { exchange };
        match addresses {
            Answer::Found(ips) => {
                let ips: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
                found.push(format!("{preference} {shown} ({})", ips.join(" ")));
            }
            Answer::None => {
                all_resolve = false;
                found.push(format!("{preference} {shown} (no address)"));
            }
            Answer::Failed(why) => {
                all_resolve = false;
                found.push(format!("{preference} {shown} (no answer: {why})"));
            }
        }
    }
    if all_resolve {
        check(
            "mx",
            Status::Ok,
            name,
            found,
            "MX hosts with addresses".into(),
        )
    } else {
        let expected = format!("every MX host with an A or AAAA record, e.g. {publish}");
        check("mx", Status::Wrong, name, found, expected)
    }
}

/// The addresses the PTR and SPF checks are about: myhostname's public addresses, then
/// the public addresses of `inet_interfaces` when it names specific ones.
fn public_addresses(host: &Host, addresses: &[IpAddr]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in addresses.iter().chain(&host.interfaces) {
        if is_public(*ip) && !out.contains(ip) {
            out.push(*ip);
        }
    }
    out
}

/// `ptr`: each public address has a PTR record naming myhostname, and myhostname
/// resolves back to it (forward-confirmed reverse DNS).
async fn ptr(lookup: &Lookup, host: &Host, addresses: &[IpAddr]) -> Check {
    let me = &host.myhostname;
    let public = public_addresses(host, addresses);
    if public.is_empty() {
        let expected = if addresses.is_empty() {
            format!(
                "a PTR record naming {me} for each public address of {me} (it has none: see the a check)"
            )
        } else {
            format!(
                "a public address for {me} (only public addresses are checked; it has only private or loopback ones)"
            )
        };
        return check("ptr", Status::Missing, me, Vec::new(), expected);
    }
    let mut found = Vec::new();
    let mut expected = Vec::new();
    let (mut missing, mut wrong) = (false, false);
    for ip in public {
        let reverse = relative(&Name::from(ip).to_utf8());
        let publish = format!("{reverse}. IN PTR {me}.");
        match lookup.names_of(ip).await {
            Answer::Found(names) => {
                found.push(format!("{ip} -> {}", names.join(" ")));
                if !names.iter().any(|n| n == me) {
                    wrong = true;
                    expected.push(publish);
                } else if !addresses.contains(&ip) {
                    wrong = true;
                    expected.push(format!(
                        "{me}. IN {} {ip}",
                        if ip.is_ipv4() { "A" } else { "AAAA" }
                    ));
                }
            }
            Answer::None => {
                missing = true;
                expected.push(publish);
            }
            Answer::Failed(why) => {
                wrong = true;
                found.push(format!("{ip} -> no answer ({why})"));
                expected.push(publish);
            }
        }
    }
    let status = if wrong {
        Status::Wrong
    } else if missing {
        Status::Missing
    } else {
        Status::Ok
    };
    let expected = if expected.is_empty() {
        format!("PTR records naming {me}")
    } else {
        expected.join("; ")
    };
    check("ptr", status, me, found, expected)
}

/// Whether a TXT record starts with `tag` (`v=spf1`, `v=DMARC1`), as the RFCs select
/// the records that are theirs.
fn starts_with_version(record: &str, tag: &str) -> bool {
    let record = record.trim_start();
    record.len() >= tag.len()
        && record.as_bytes()[..tag.len()].eq_ignore_ascii_case(tag.as_bytes())
        && record[tag.len()..]
            .chars()
            .next()
            .is_none_or(|c| c == ' ' || c == ';' || c == '\t')
}

/// `spf`: the domain has an SPF record, and mail-auth's SPF verifier passes mail from
/// each of this host's addresses sent as postmaster@DOMAIN.
async fn spf(lookup: &Lookup, host: &Host, addresses: &[IpAddr]) -> Check {
    let name = &host.domain;
    let me = &host.myhostname;
    let publish = format!("{name}. IN TXT \"v=spf1 a:{me} ~all\"");
    let records: Vec<String> = match lookup.txt(name).await {
        Answer::Found(txt) => txt
            .into_iter()
            .filter(|r| starts_with_version(r, "v=spf1"))
            .collect(),
        Answer::None => Vec::new(),
        Answer::Failed(why) => return no_answer("spf", name, &why),
    };
    if records.is_empty() {
        return check("spf", Status::Missing, name, Vec::new(), publish);
    }
    // A host with no public address (behind NAT, in a test) is judged by the addresses
    // it has.
    let mut senders = public_addresses(host, addresses);
    if senders.is_empty() {
        senders = addresses.to_vec();
    }
    if senders.is_empty() {
        let expected = format!("{me} with an address for SPF to allow (see the a check)");
        return check("spf", Status::Wrong, name, records, expected);
    }
    let sender = format!("postmaster@{name}");
    let mut refused = Vec::new();
    for ip in &senders {
        let output = lookup
            .authenticator()
            .verify_spf(SpfParameters::verify_mail_from(*ip, me, me, &sender))
            .await;
        let result = output.result();
        if result != SpfResult::Pass {
            refused.push(format!("{ip}: {}", spf_word(result)));
        }
    }
    let allowed: Vec<String> = senders.iter().map(IpAddr::to_string).collect();
    if refused.is_empty() {
        let expected = format!("pass for {}", allowed.join(", "));
        check("spf", Status::Ok, name, records, expected)
    } else {
        let expected = format!(
            "pass for {}, got {}; e.g. {publish}",
            allowed.join(", "),
            refused.join(", ")
        );
        check("spf", Status::Wrong, name, records, expected)
    }
}

/// An SPF result as RFC 7208 section 2.6 (and `Received-SPF:`) words it.
fn spf_word(result: SpfResult) -> &'static str {
    match result {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

/// The `p=` tag of a DKIM key record (RFC 6376 section 3.6.1), white space removed.
fn public_key_tag(record: &str) -> Option<String> {
    record.split(';').find_map(|tag| {
        let (name, value) = tag.split_once('=')?;
        (name.trim() == "p").then(|| value.chars().filter(|c| !c.is_whitespace()).collect())
    })
}

/// `dkim`: the selector's record exists, parses as a DKIM key, and its `p=` is the
/// public half of our key.
async fn dkim(lookup: &Lookup, host: &Host) -> Check {
    let domain = &host.domain;
    let (selector, wanted) = match &host.dkim {
        LocalKey::Off => {
            let name = format!("{}._domainkey.{domain}", crate::dkim::DEFAULT_SELECTOR);
            let expected = format!(
                "signing turned on: mailroom dkim keygen -d {domain}, set dkim_selector = {}, publish the record it prints",
                crate::dkim::DEFAULT_SELECTOR
            );
            return check("dkim", Status::Missing, &name, Vec::new(), expected);
        }
        LocalKey::Absent { selector, path } => (
            selector,
            Err(format!(
                "a key in {path}: mailroom dkim keygen -d {domain} -s {selector}, then publish the record it prints"
            )),
        ),
        LocalKey::Unreadable { selector, why } => (
            selector,
            Err(format!(
                "the local key readable to compare ({why}; run mailroom dns as root)"
            )),
        ),
        LocalKey::Present {
            selector,
            zone_line,
            p,
        } => (selector, Ok((zone_line, p))),
    };
    let name = format!("{selector}._domainkey.{domain}");
    let records: Vec<String> = match lookup.txt(&name).await {
        Answer::Found(txt) => txt
            .into_iter()
            .filter(|r| public_key_tag(r).is_some())
            .collect(),
        Answer::None => Vec::new(),
        Answer::Failed(why) => return no_answer("dkim", &name, &why),
    };
    let (zone_line, p) = match wanted {
        Ok(wanted) => wanted,
        Err(expected) => {
            let status = if records.is_empty() {
                Status::Missing
            } else {
                Status::Wrong
            };
            return check("dkim", status, &name, records, expected);
        }
    };
    if records.is_empty() {
        return check(
            "dkim",
            Status::Missing,
            &name,
            Vec::new(),
            zone_line.clone(),
        );
    }
    let good = records.iter().any(|r| {
        DomainKey::parse(r.as_bytes()).is_ok() && public_key_tag(r).as_deref() == Some(p.as_str())
    });
    let status = if good { Status::Ok } else { Status::Wrong };
    check("dkim", status, &name, records, zone_line.clone())
}

/// `dmarc`: one DMARC record at `_dmarc.DOMAIN`, which mail-auth parses.
async fn dmarc(lookup: &Lookup, host: &Host) -> Check {
    let domain = &host.domain;
    let name = format!("_dmarc.{domain}");
    let publish = format!("{name}. IN TXT \"v=DMARC1; p=none; rua=mailto:postmaster@{domain}\"");
    let records: Vec<String> = match lookup.txt(&name).await {
        Answer::Found(txt) => txt
            .into_iter()
            .filter(|r| starts_with_version(r, "v=DMARC1"))
            .collect(),
        Answer::None => Vec::new(),
        Answer::Failed(why) => return no_answer("dmarc", &name, &why),
    };
    match records.as_slice() {
        [] => check("dmarc", Status::Missing, &name, Vec::new(), publish),
        [one] if Dmarc::parse(one.as_bytes()).is_ok() => check(
            "dmarc",
            Status::Ok,
            &name,
            records.clone(),
            "one DMARC record (RFC 7489)".into(),
        ),
        [_] => {
            let expected = format!("a DMARC record that parses (RFC 7489), e.g. {publish}");
            check("dmarc", Status::Wrong, &name, records, expected)
        }
        _ => check(
            "dmarc",
            Status::Wrong,
            &name,
            records,
            "exactly one DMARC record (receivers ignore them all when there are more)".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_tags_select_records() {
        assert!(starts_with_version("v=spf1 -all", "v=spf1"));
        assert!(starts_with_version("V=SPF1", "v=spf1"));
        assert!(!starts_with_version("v=spf10 -all", "v=spf1"));
        assert!(starts_with_version("v=DMARC1; p=none", "v=DMARC1"));
        assert!(!starts_with_version("v=DKIM1; p=x", "v=DMARC1"));
        assert!(!starts_with_version("v=", "v=spf1"));
        assert!(!starts_with_version("é", "v=spf1"));
    }

    #[test]
    fn the_key_tag_is_found_without_white_space() {
        assert_eq!(
            public_key_tag("v=DKIM1; k=rsa; p=AB CD").as_deref(),
            Some("ABCD")
        );
        assert_eq!(public_key_tag("p=").as_deref(), Some(""));
        assert_eq!(public_key_tag("v=DKIM1; k=rsa"), None);
    }
}
