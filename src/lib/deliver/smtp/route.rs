//! Where mail for a destination goes: `relayhost` as Postfix reads it, else the
//! recipient domain's MX records (with the implicit MX of RFC 5321 section 5.1), turned
//! into an ordered list of addresses to try. DNS is behind [`Resolver`] so that tests
//! inject a fake one and never touch the network.

use std::net::IpAddr;

use crate::deliver::Dsn;

/// Answers the two DNS questions routing asks.
pub trait Resolver: Send + Sync {
    /// The MX records of `domain` as (preference, host). `Ok(vec![])` when the domain
    /// exists but has no MX records (then its own addresses are used);
    /// `Err(DnsError::NotFound)` when the domain does not exist.
    fn mx(&self, domain: &str) -> Result<Vec<(u16, String)>, DnsError>;
    /// The IPv4 and IPv6 addresses of `host`; `Ok(vec![])` when it has none.
    fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// NXDOMAIN: the name does not exist. Mail to it bounces.
    NotFound,
    /// SERVFAIL, time-out, no resolver: try again later.
    Temporary(String),
}

/// One next hop: a `relayhost` entry or a recipient domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nexthop {
    /// The entry as written (`[mail.isp.example]:587`), or the recipient domain: the
    /// first key looked up in `smtp_sasl_password_maps`.
    pub text: String,
    /// Host or domain name, or an IP address for `[192.0.2.1]`.
    pub host: String,
    /// The port when one was given (`:587`), else the context's default.
    pub port: Option<u16>,
    /// Whether to look up MX records (`host`), or not (`[host]`).
    pub mx: bool,
}

impl Nexthop {
    /// Parses one `relayhost` entry: `[host]:port`, `[host]`, `host:port`, `host`, with
    /// `[ipv6:2001:db8::1]` and `[2001:db8::1]` address forms. The port may be a number
    /// or one of the service names `smtp`, `submission`, `smtps`.
    pub fn parse(entry: &str) -> Result<Nexthop, BadNexthop> {
        let bad = || BadNexthop(entry.to_string());
        let (host, port, mx) = if let Some(rest) = entry.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or_else(bad)?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(bad)?),
            };
            let inside = strip_ipv6_tag(inside);
            (inside, port, false)
        } else {
            match entry.rsplit_once(':') {
                Some((host, port)) => (host, Some(port), true),
                None => (entry, None, true),
            }
        };
        if host.is_empty() || host.contains(['[', ']', '/', ' ']) {
            return Err(bad());
        }
        let port = port.map(|p| parse_port(p).ok_or_else(bad)).transpose()?;
        Ok(Nexthop {
            text: entry.to_string(),
            host: host.trim_end_matches('.').to_ascii_lowercase(),
            port,
            mx,
        })
    }

    /// The next hop for a recipient domain (no relayhost): MX lookup, default port. An
    /// address literal (`user@[192.0.2.1]`) is used as it is.
    pub fn for_domain(domain: &str) -> Nexthop {
        match domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            Some(literal) => Nexthop {
                text: domain.to_string(),
                host: strip_ipv6_tag(literal).to_string(),
                port: None,
                mx: false,
            },
            None => Nexthop {
                text: domain.to_string(),
                host: domain.trim_end_matches('.').to_ascii_lowercase(),
                port: None,
                mx: true,
            },
        }
    }
}

fn strip_ipv6_tag(text: &str) -> &str {
    match text.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("ipv6:") => &text[5..],
        _ => text,
    }
}

fn parse_port(text: &str) -> Option<u16> {
    match text {
        "smtp" => Some(25),
        "submission" => Some(587),
        "smtps" | "submissions" => Some(465),
        _ => text.parse().ok().filter(|&p| p != 0),
    }
}

/// A `relayhost` entry that is none of the next-hop forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadNexthop(pub String);

impl std::fmt::Display for BadNexthop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bad next-hop \"{}\": expected host, host:port, [host] or [host]:port",
            self.0
        )
    }
}

impl std::error::Error for BadNexthop {}

/// Parses `relayhost`: empty, or a list of next hops tried in order (Postfix 3.5's list
/// form; a single entry is the common case).
pub fn parse_relayhost(value: &str) -> Result<Vec<Nexthop>, BadNexthop> {
    value
        .split([' ', ',', '\t', '\r', '\n'])
        .filter(|entry| !entry.is_empty())
        .map(Nexthop::parse)
        .collect()
}

/// One address to try, with the name it was found under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The next hop this address was found for, as written.
    pub nexthop: String,
    pub host: String,
    pub ip: IpAddr,
    pub port: u16,
}

/// Why no address could be found; worded as Postfix words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    pub permanent: bool,
    pub dsn: Dsn,
    pub text: String,
}

/// What is wrong with `inet_protocols`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolsError {
    Unknown(String),
    /// An empty list.
    None,
}

impl std::fmt::Display for ProtocolsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtocolsError::Unknown(name) => write!(f, "unknown protocol \"{name}\""),
            ProtocolsError::None => write!(f, "no protocol enabled"),
        }
    }
}

impl std::error::Error for ProtocolsError {}

/// Which address families `inet_protocols` allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocols {
    pub ipv4: bool,
    pub ipv6: bool,
}

impl Protocols {
    /// Reads `inet_protocols`: `all`, `ipv4`, `ipv6` or both.
    pub fn parse(items: &[String]) -> Result<Protocols, ProtocolsError> {
        let mut p = Protocols {
            ipv4: false,
            ipv6: false,
        };
        for item in items {
            match item.to_ascii_lowercase().as_str() {
                "all" => {
                    p.ipv4 = true;
                    p.ipv6 = true;
                }
                "ipv4" => p.ipv4 = true,
                "ipv6" => p.ipv6 = true,
                other => return Err(ProtocolsError::Unknown(other.to_string())),
            }
        }
        if !p.ipv4 && !p.ipv6 {
            return Err(ProtocolsError::None);
        }
        Ok(p)
    }

    fn allows(&self, ip: &IpAddr) -> bool {
        match ip {
            IpAddr::V4(_) => self.ipv4,
            IpAddr::V6(_) => self.ipv6,
        }
    }

    fn address_type(&self) -> &'static str {
        if self.ipv4 { "A" } else { "AAAA" }
    }
}

/// What routing needs from the context.
pub struct RouteSettings<'a> {
    pub resolver: &'a dyn Resolver,
    pub protocols: Protocols,
    pub default_port: u16,
    /// Our own name: an MX list naming us is cut at our preference (mail loop guard).
    pub myhostname: &'a str,
    /// At most this many addresses are tried (Postfix's `smtp_mx_address_limit`).
    pub address_limit: usize,
}

/// The addresses to try for these next hops, best first. `relayhost` says whether the
/// hops came from `relayhost`: a relay host that does not resolve defers the mail rather
/// than bouncing it (a typo in main.cf must not bounce everything).
pub fn route(
    settings: &RouteSettings,
    hops: &[Nexthop],
    relayhost: bool,
) -> Result<Vec<Target>, RouteError> {
    let mut targets = Vec::new();
    let mut last_error = None;
    for hop in hops {
        match route_one(settings, hop) {
            Ok(found) => targets.extend(found),
            Err(err) => last_error = Some(err),
        }
        if targets.len() >= settings.address_limit {
            break;
        }
    }
    targets.truncate(settings.address_limit);
    if !targets.is_empty() {
        return Ok(targets);
    }
    let mut err = last_error.unwrap_or_else(|| RouteError {
        permanent: false,
        dsn: Dsn::TEMP_CONFIG,
        text: "no next-hop destination".into(),
    });
    if relayhost && err.permanent && err.dsn != Dsn::NULL_MX {
        err.permanent = false;
        err.dsn = Dsn::DNS_TEMP;
    }
    Err(err)
}

fn route_one(settings: &RouteSettings, hop: &Nexthop) -> Result<Vec<Target>, RouteError> {
    let port = hop.port.unwrap_or(settings.default_port);
    if let Ok(ip) = hop.host.parse::<IpAddr>() {
        if !settings.protocols.allows(&ip) {
            return Err(RouteError {
                permanent: false,
                dsn: Dsn::NO_ROUTE_TEMP,
                text: format!("{}: address family disabled by inet_protocols", hop.host),
            });
        }
        return Ok(vec![Target {
            nexthop: hop.text.clone(),
            host: hop.host.clone(),
            ip,
            port,
        }]);
    }
    let hosts = if hop.mx {
        mx_hosts(settings, &hop.host)?
    } else {
        vec![hop.host.clone()]
    };
    let mut targets = Vec::new();
    let mut last_error = None;
    for host in hosts {
        match host_addresses(settings, &host) {
            Ok(ips) => targets.extend(ips.into_iter().map(|ip| Target {
                nexthop: hop.text.clone(),
                host: host.clone(),
                ip,
                port,
            })),
            Err(err) => last_error = Some(err),
        }
    }
    match (targets.is_empty(), last_error) {
        (true, Some(err)) => Err(err),
        _ => Ok(targets),
    }
}

/// The MX hosts of `domain` in preference order, or the domain itself when it has no MX.
fn mx_hosts(settings: &RouteSettings, domain: &str) -> Result<Vec<String>, RouteError> {
    let mut records = match settings.resolver.mx(domain) {
        Ok(records) => records,
        Err(err) => return Err(dns_failure(domain, "MX", &err)),
    };
    if records.is_empty() {
        return Ok(vec![domain.to_string()]);
    }
    // RFC 7505: a single MX of "." means the domain takes no mail at all.
    if records.len() == 1 && matches!(records[0].1.as_str(), "" | ".") {
        return Err(RouteError {
            permanent: true,
            dsn: Dsn::NULL_MX,
            text: format!("Domain {domain} does not accept mail (nullMX)"),
        });
    }
    // Equal preferences keep DNS order (Postfix shuffles them; a fixed order is easier
    // to reason about and test).
    records.sort_by_key(|(preference, _)| *preference);
    let me = settings.myhostname.trim_end_matches('.');
    if let Some(mine) = records
        .iter()
        .find(|(_, host)| host.trim_end_matches('.').eq_ignore_ascii_case(me))
        .map(|(preference, _)| *preference)
    {
        // As Postfix: only hosts better than ourselves; none means a mail loop.
        records.retain(|(preference, _)| *preference < mine);
        if records.is_empty() {
            return Err(RouteError {
                permanent: true,
                dsn: Dsn::LOOP,
                text: format!("mail for {domain} loops back to myself"),
            });
        }
    }
    let mut hosts: Vec<String> = Vec::new();
    for (_, host) in records {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if !host.is_empty() && !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    Ok(hosts)
}

/// The usable addresses of `host`, IPv4 first: a sending host's IPv6 often lacks the
/// reverse DNS that large receivers insist on, so IPv4 is the safer first try.
fn host_addresses(settings: &RouteSettings, host: &str) -> Result<Vec<IpAddr>, RouteError> {
    let address_type = settings.protocols.address_type();
    let mut ips = match settings.resolver.addresses(host) {
        Ok(ips) => ips,
        Err(err) => return Err(dns_failure(host, address_type, &err)),
    };
    ips.retain(|ip| settings.protocols.allows(ip));
    ips.sort_by_key(|ip| ip.is_ipv6());
    ips.dedup();
    if ips.is_empty() {
        return Err(dns_failure(host, address_type, &DnsError::NotFound));
    }
    Ok(ips)
}

fn dns_failure(name: &str, kind: &str, err: &DnsError) -> RouteError {
    match err {
        DnsError::NotFound => RouteError {
            permanent: true,
            dsn: Dsn::NO_ROUTE,
            text: format!(
                "Host or domain name not found. Name service error for name={name} type={kind}: Host not found"
            ),
        },
        DnsError::Temporary(_) => RouteError {
            permanent: false,
            dsn: Dsn::DNS_TEMP,
            text: format!(
                "Host or domain name not found. Name service error for name={name} type={kind}: Host not found, try again"
            ),
        },
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A resolver answering from tables; names in `temporary` fail temporarily.
    #[derive(Default)]
    pub struct FakeResolver {
        pub mx: HashMap<String, Vec<(u16, String)>>,
        pub addresses: HashMap<String, Vec<IpAddr>>,
        pub temporary: Vec<String>,
    }

    impl Resolver for FakeResolver {
        fn mx(&self, domain: &str) -> Result<Vec<(u16, String)>, DnsError> {
            if self.temporary.iter().any(|t| t == domain) {
                return Err(DnsError::Temporary("SERVFAIL".into()));
            }
            match self.mx.get(domain) {
                Some(records) => Ok(records.clone()),
                None if self.addresses.contains_key(domain) => Ok(Vec::new()),
                None => Err(DnsError::NotFound),
            }
        }

        fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
            if self.temporary.iter().any(|t| t == host) {
                return Err(DnsError::Temporary("SERVFAIL".into()));
            }
            match self.addresses.get(host) {
                Some(ips) => Ok(ips.clone()),
                None if self.mx.contains_key(host) => Ok(Vec::new()),
                None => Err(DnsError::NotFound),
            }
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn resolver() -> FakeResolver {
        let mut r = FakeResolver::default();
        r.mx.insert(
            "example.com".into(),
            vec![
                (20, "mx2.example.com.".into()),
                (10, "MX1.example.com".into()),
            ],
        );
        r.addresses.insert(
            "mx1.example.com".into(),
            vec![ip("2001:db8::1"), ip("192.0.2.1")],
        );
        r.addresses
            .insert("mx2.example.com".into(), vec![ip("192.0.2.2")]);
        r.addresses
            .insert("plain.example".into(), vec![ip("192.0.2.9")]);
        r.mx.insert("null.example".into(), vec![(0, ".".into())]);
        r.mx.insert(
            "loop.example".into(),
            vec![(10, "me.example".into()), (20, "mx2.example.com".into())],
        );
        r.mx.insert(
            "below.example".into(),
            vec![(5, "mx2.example.com".into()), (10, "me.example".into())],
        );
        r.temporary.push("flaky.example".into());
        r
    }

    fn settings(r: &FakeResolver, protocols: Protocols) -> RouteSettings<'_> {
        RouteSettings {
            resolver: r,
            protocols,
            default_port: 25,
            myhostname: "me.example",
            address_limit: 5,
        }
    }

    const ALL: Protocols = Protocols {
        ipv4: true,
        ipv6: true,
    };

    fn targets(r: &FakeResolver, p: Protocols, hop: &str) -> Result<Vec<String>, RouteError> {
        let hops = [Nexthop::for_domain(hop)];
        route(&settings(r, p), &hops, false).map(|t| {
            t.iter()
                .map(|t| format!("{}[{}]:{}", t.host, t.ip, t.port))
                .collect()
        })
    }

    #[test]
    fn relayhost_forms() {
        let n = |s| Nexthop::parse(s).unwrap();
        assert_eq!(
            n("[mail.isp.example]:587"),
            Nexthop {
                text: "[mail.isp.example]:587".into(),
                host: "mail.isp.example".into(),
                port: Some(587),
                mx: false
            }
        );
        assert_eq!(n("[mail.isp.example]").port, None);
        assert!(!n("[mail.isp.example]").mx);
        assert!(n("isp.example").mx);
        assert_eq!(n("isp.example:submission").port, Some(587));
        assert_eq!(n("[ipv6:2001:db8::1]:25").host, "2001:db8::1");
        assert_eq!(n("[127.0.0.1]:2525").host, "127.0.0.1");
        for bad in ["[x", "[x]y", "x:0", "x:port", "[]", "[x]:", ":25"] {
            assert!(Nexthop::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_relayhost("").unwrap(), []);
        assert_eq!(parse_relayhost("[a]:1, [b]:2").unwrap().len(), 2);
    }

    #[test]
    fn mx_records_in_preference_order_ipv4_first() {
        let r = resolver();
        assert_eq!(
            targets(&r, ALL, "example.com").unwrap(),
            [
                "mx1.example.com[192.0.2.1]:25",
                "mx1.example.com[2001:db8::1]:25",
                "mx2.example.com[192.0.2.2]:25"
            ]
        );
    }

    #[test]
    fn inet_protocols_filters_addresses() {
        let r = resolver();
        let v6 = Protocols {
            ipv4: false,
            ipv6: true,
        };
        assert_eq!(
            targets(&r, v6, "example.com").unwrap(),
            ["mx1.example.com[2001:db8::1]:25"]
        );
        let v4 = Protocols {
            ipv4: true,
            ipv6: false,
        };
        assert_eq!(targets(&r, v4, "example.com").unwrap().len(), 2);
        assert_eq!(
            Protocols::parse(&["ipv4".into(), "ipv6".into()]).unwrap(),
            ALL
        );
        assert_eq!(
            Protocols::parse(&["ipx".into()]).map_err(|e| e.to_string()),
            Err("unknown protocol \"ipx\"".to_string())
        );
        assert_eq!(
            Protocols::parse(&[]).map_err(|e| e.to_string()),
            Err("no protocol enabled".to_string())
        );
        assert_eq!(
            parse_relayhost("[a]:x").map_err(|e| e.to_string()),
            Err("bad next-hop \"[a]:x\": expected host, host:port, [host] or [host]:port".into())
        );
    }

    #[test]
    fn implicit_mx_uses_the_domains_own_address() {
        let r = resolver();
        assert_eq!(
            targets(&r, ALL, "plain.example").unwrap(),
            ["plain.example[192.0.2.9]:25"]
        );
        assert_eq!(
            targets(&r, ALL, "[192.0.2.7]").unwrap(),
            ["192.0.2.7[192.0.2.7]:25"]
        );
    }

    #[test]
    fn dns_failures_bounce_or_defer() {
        let r = resolver();
        let err = targets(&r, ALL, "nosuch.example").unwrap_err();
        assert!(err.permanent);
        assert_eq!(err.dsn, Dsn::NO_ROUTE);
        assert_eq!(
            err.text,
            "Host or domain name not found. Name service error for name=nosuch.example type=MX: Host not found"
        );
        let err = targets(&r, ALL, "flaky.example").unwrap_err();
        assert!(!err.permanent);
        assert_eq!(err.dsn, Dsn::DNS_TEMP);
        assert!(err.text.ends_with("type=MX: Host not found, try again"));
        let err = targets(&r, ALL, "null.example").unwrap_err();
        assert_eq!((err.permanent, err.dsn), (true, Dsn::NULL_MX));
    }

    #[test]
    fn an_unknown_relayhost_defers() {
        let r = resolver();
        let hops = parse_relayhost("[typo.example]").unwrap();
        let err = route(&settings(&r, ALL), &hops, true).unwrap_err();
        assert!(!err.permanent);
        assert_eq!(err.dsn, Dsn::DNS_TEMP);
    }

    #[test]
    fn mx_naming_us_is_cut_at_our_preference() {
        let r = resolver();
        let err = targets(&r, ALL, "loop.example").unwrap_err();
        assert_eq!(err.dsn, Dsn::LOOP);
        assert_eq!(err.text, "mail for loop.example loops back to myself");
        assert_eq!(
            targets(&r, ALL, "below.example").unwrap(),
            ["mx2.example.com[192.0.2.2]:25"]
        );
    }

    #[test]
    fn relayhost_list_is_tried_in_order_with_limit() {
        let r = resolver();
        let hops = parse_relayhost("[127.0.0.1]:1, [127.0.0.1]:2").unwrap();
        let mut s = settings(&r, ALL);
        let t = route(&s, &hops, true).unwrap();
        assert_eq!(t.iter().map(|t| t.port).collect::<Vec<_>>(), [1, 2]);
        s.address_limit = 1;
        assert_eq!(route(&s, &hops, true).unwrap().len(), 1);
    }
}
