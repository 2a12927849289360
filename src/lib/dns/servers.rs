//! `dns_nameservers`: which name servers every DNS lookup of mailroom asks.
//!
//! Empty (the default) means the system's resolver configuration, `/etc/resolv.conf`.
//! Otherwise a list of `ADDRESS[:PORT]` (an IPv6 address with a port as `[ADDRESS]:PORT`),
//! port 53 when none is given: tests and split-horizon set-ups point mailroom at their own
//! server. Only addresses: a name server named by a host name would need DNS to be found.

use std::net::{IpAddr, SocketAddr};

use crate::config::Config;
use crate::sysexits::{Error, Result};

/// The DNS port when an entry names none.
pub const DNS_PORT: u16 = 53;

/// The most servers kept from the list: every lookup may try each of them in turn, so a
/// long list would only multiply the wait for an answer that does not come.
pub const MAX_SERVERS: usize = 8;

/// The name servers `dns_nameservers` names, in order; empty: the system's. An entry
/// that is not an address is a configuration error (78), never skipped silently: a lookup
/// sent elsewhere than the operator meant would give wrong answers quietly.
pub fn from_config(config: &Config) -> Result<Vec<SocketAddr>> {
    parse_list(&config.list("dns_nameservers")?)
        .map_err(|why| Error::config(format!("parameter dns_nameservers: {why}")))
}

/// Parses the entries of the list (see the module's documentation).
pub fn parse_list(entries: &[String]) -> std::result::Result<Vec<SocketAddr>, String> {
    if entries.len() > MAX_SERVERS {
        return Err(format!(
            "{} servers listed; at most {MAX_SERVERS} are used",
            entries.len()
        ));
    }
    entries.iter().map(|e| parse_one(e)).collect()
}

/// One `ADDRESS`, `ADDRESS:PORT`, `[ADDRESS]` or `[ADDRESS]:PORT`.
pub fn parse_one(entry: &str) -> std::result::Result<SocketAddr, String> {
    let bad = |why: &str| format!("\"{entry}\": {why}");
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DNS_PORT));
    }
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or_else(|| bad("unbalanced ["))?;
        match after {
            "" => (inside, None),
            _ => (
                inside,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| bad("expected :PORT after ]"))?,
                ),
            ),
        }
    } else {
        match entry.rsplit_once(':') {
            // A bare IPv6 address has parsed above; more colons here mean one with a port
            // and no brackets, which cannot be told apart from an address.
            Some((host, _)) if host.contains(':') => {
                return Err(bad("write an IPv6 address with a port as [ADDRESS]:PORT"));
            }
            Some((host, port)) => (host, Some(port)),
            None => (entry, None),
        }
    };
    let ip: IpAddr = host
        .parse()
        .map_err(|_| bad("not an IP address (name servers are given by address)"))?;
    let port = match port {
        None => DNS_PORT,
        Some(text) => match text.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(bad("not a port number (1-65535)")),
        },
    };
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> std::result::Result<String, String> {
        parse_one(text).map(|a| a.to_string())
    }

    #[test]
    fn addresses_with_and_without_ports() {
        assert_eq!(one("192.0.2.1").unwrap(), "192.0.2.1:53");
        assert_eq!(one("192.0.2.1:5353").unwrap(), "192.0.2.1:5353");
        assert_eq!(one("::1").unwrap(), "[::1]:53");
        assert_eq!(one("[2001:db8::1]").unwrap(), "[2001:db8::1]:53");
        assert_eq!(one("[2001:db8::1]:5300").unwrap(), "[2001:db8::1]:5300");
    }

    #[test]
    fn bad_entries_say_why() {
        for (text, why) in [
            ("ns.example.com", "not an IP address"),
            ("192.0.2.1:0", "not a port number"),
            ("192.0.2.1:dns", "not a port number"),
            ("192.0.2.1:70000", "not a port number"),
            ("[::1", "unbalanced ["),
            ("[::1]x", "expected :PORT"),
            ("2001:db8::1:53x", "[ADDRESS]:PORT"),
            ("", "not an IP address"),
        ] {
            let err = one(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn the_list_is_bounded() {
        let many: Vec<String> = (0..=MAX_SERVERS).map(|i| format!("192.0.2.{i}")).collect();
        assert!(parse_list(&many).unwrap_err().contains("at most"));
        assert_eq!(parse_list(&many[..2]).unwrap().len(), 2);
    }
}
