//! The facts relay control is decided on: our own domains (`mydestination`),
//! `relay_domains`, and the trusted clients of `mynetworks`. The decision itself is
//! made by the restriction lists ([`super::restrictions`]): by default mail for our
//! domains and `relay_domains` is taken from anyone, mail for anywhere else only from
//! clients in `mynetworks` or logged in with AUTH (and from local users through
//! `sendmail -bs`).
//!
//! When `mynetworks` is not set it is computed from the machine's interfaces as
//! `mynetworks_style` says; [`compute_mynetworks`] is a pure function of the interface
//! list so that every style can be tested without the machine's real interfaces.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::address;
use crate::config::Config;
use crate::sysexits::Result;

/// An IP network: address and prefix length, the address's host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// The network of `addr` with `prefix` bits (clamped to the address size).
    pub fn new(addr: IpAddr, prefix: u8) -> Network {
        let addr = addr.to_canonical();
        let prefix = prefix.min(max_prefix(addr));
        Network {
            addr: mask(addr, prefix),
            prefix,
        }
    }

    /// `10.0.0.0/8`, `127.0.0.1` (one host), `[::1]/128`, `::1/128`, `[2001:db8::]/32`.
    pub fn parse(text: &str) -> Option<Network> {
        let (host, prefix) = match text.rsplit_once('/') {
            Some((h, p)) => (h, Some(p.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let addr: IpAddr = host.parse().ok()?;
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return None;
        }
        // An IPv4-mapped network (::ffff:127.0.0.0/104) is the IPv4 network it maps.
        match addr {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() && prefix >= 96 => {
                Some(Network::new(addr.to_canonical(), prefix - 96))
            }
            _ => Some(Network::new(addr, prefix)),
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        mask(ip, self.prefix) == self.addr
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}/{}", self.prefix),
            IpAddr::V6(a) => write!(f, "[{a}]/{}", self.prefix),
        }
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// How `mynetworks` is computed when it is not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// This machine's own addresses.
    Host,
    /// The subnets this machine's interfaces are on.
    Subnet,
    /// The class A/B/C networks of this machine's IPv4 addresses (IPv6: the subnet).
    Class,
}

impl Style {
    pub fn parse(text: &str) -> Option<Style> {
        match text.to_ascii_lowercase().as_str() {
            "host" => Some(Style::Host),
            "subnet" => Some(Style::Subnet),
            "class" => Some(Style::Class),
            _ => None,
        }
    }
}

/// One interface address and its netmask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interface {
    pub addr: IpAddr,
    pub netmask: Option<IpAddr>,
}

/// `mynetworks` for `style` on a machine with these interface addresses; duplicates
/// removed, in interface order.
pub fn compute_mynetworks(style: Style, interfaces: &[Interface]) -> Vec<Network> {
    let mut out: Vec<Network> = Vec::new();
    for iface in interfaces {
        let host = max_prefix(iface.addr);
        let subnet = iface.netmask.map_or(host, prefix_of_mask);
        let prefix = match (style, iface.addr) {
            (Style::Host, _) => host,
            (Style::Subnet, _) | (Style::Class, IpAddr::V6(_)) => subnet,
            (Style::Class, IpAddr::V4(a)) => match a.octets()[0] {
                0..=127 => 8,
                128..=191 => 16,
                192..=223 => 24,
                224..=239 => 4,
                _ => 32,
            },
        };
        let net = Network::new(iface.addr, prefix);
        if !out.contains(&net) {
            out.push(net);
        }
    }
    out
}

fn prefix_of_mask(mask: IpAddr) -> u8 {
    match mask {
        IpAddr::V4(m) => u32::from(m).leading_ones() as u8,
        IpAddr::V6(m) => u128::from(m).leading_ones() as u8,
    }
}

/// This machine's interface addresses (getifaddrs), of the protocols in use.
pub fn local_interfaces(ipv4: bool, ipv6: bool) -> Vec<Interface> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let ip_of = |s: &nix::sys::socket::SockaddrStorage| -> Option<IpAddr> {
        if let Some(v4) = s.as_sockaddr_in() {
            return Some(IpAddr::V4(v4.ip()));
        }
        s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
    };
    addrs
        .filter_map(|a| {
            let addr = ip_of(a.address.as_ref()?)?;
            let netmask = a.netmask.as_ref().and_then(ip_of);
            Some(Interface { addr, netmask })
        })
        .filter(|i| if i.addr.is_ipv4() { ipv4 } else { ipv6 })
        .collect()
}

/// Who may send mail where.
#[derive(Debug, Clone)]
pub struct RelayPolicy {
    /// Lower-cased.
    pub mydestination: Vec<String>,
    /// Lower-cased; a domain also covers its subdomains, as in Postfix.
    pub relay_domains: Vec<String>,
    pub mynetworks: Vec<Network>,
}

impl RelayPolicy {
    /// Reads the policy; entries mailroom cannot use (lookup tables, negations, host
    /// names) are skipped, and each is reported through `warn`.
    pub fn from_config(config: &Config, warn: &mut dyn FnMut(String)) -> Result<RelayPolicy> {
        let mut relay_domains = Vec::new();
        for entry in config.list("relay_domains")? {
            if entry.contains(':') || entry.starts_with('/') {
                warn(format!(
                    "relay_domains: lookup tables are not supported, ignoring \"{entry}\""
                ));
                continue;
            }
            relay_domains.push(entry.to_ascii_lowercase());
        }
        let (ipv4, ipv6) = protocols(&config.list("inet_protocols")?);
        let mynetworks = if config.get("mynetworks")?.trim().is_empty() {
            let style_text = config.get("mynetworks_style")?;
            let style = Style::parse(&style_text).unwrap_or_else(|| {
                warn(format!(
                    "mynetworks_style: unknown value \"{style_text}\", using host"
                ));
                Style::Host
            });
            compute_mynetworks(style, &local_interfaces(ipv4, ipv6))
        } else {
            let mut nets = Vec::new();
            for entry in config.list("mynetworks")? {
                match Network::parse(&entry) {
                    Some(net) => nets.push(net),
                    None => warn(format!(
                        "mynetworks: not an address or network, ignoring \"{entry}\""
                    )),
                }
            }
            nets
        };
        Ok(RelayPolicy {
            mydestination: config.mydestination()?,
            relay_domains,
            mynetworks,
        })
    }

    pub fn in_mynetworks(&self, ip: IpAddr) -> bool {
        self.mynetworks.iter().any(|n| n.contains(ip))
    }

    /// Mail for `recipient` is taken from anyone: it is ours, or a domain we relay for.
    pub fn is_our_destination(&self, recipient: &str) -> bool {
        let Some(domain) = address::domain_of(recipient) else {
            return true;
        };
        self.mydestination.contains(&domain)
            || self.relay_domains.iter().any(|d| {
                domain == *d
                    || domain
                        .strip_suffix(d.as_str())
                        .is_some_and(|rest| rest.ends_with('.'))
            })
    }
}

/// `inet_protocols` as (IPv4, IPv6).
pub fn protocols(list: &[String]) -> (bool, bool) {
    let has = |p: &str| list.iter().any(|i| i.eq_ignore_ascii_case(p));
    if list.is_empty() || has("all") {
        return (true, true);
    }
    (has("ipv4"), has("ipv6"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn iface(addr: &str, mask: &str) -> Interface {
        Interface {
            addr: ip(addr),
            netmask: Some(ip(mask)),
        }
    }

    fn shown(nets: &[Network]) -> Vec<String> {
        nets.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn networks_parse_and_match() {
        let n = Network::parse("10.0.0.0/8").unwrap();
        assert!(n.contains(ip("10.1.2.3")));
        assert!(!n.contains(ip("127.0.0.1")));
        assert!(n.contains(ip("::ffff:10.9.9.9")), "mapped clients match");
        assert!(
            Network::parse("127.0.0.1")
                .unwrap()
                .contains(ip("127.0.0.1"))
        );
        assert!(
            !Network::parse("127.0.0.1")
                .unwrap()
                .contains(ip("127.0.0.2"))
        );
        let v6 = Network::parse("[2001:db8::]/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(Network::parse("[::1]/128").unwrap().contains(ip("::1")));
        assert!(
            Network::parse("[::ffff:127.0.0.0]/104")
                .unwrap()
                .contains(ip("127.0.0.9"))
        );
        assert_eq!(
            Network::parse("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            Network::parse("0.0.0.0/0").unwrap().to_string(),
            "0.0.0.0/0"
        );
        for bad in [
            "10.0.0.0/33",
            "host.example",
            "hash:/etc/x",
            "1.2.3.4/x",
            "",
        ] {
            assert!(Network::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn mynetworks_styles() {
        let ifaces = [
            iface("127.0.0.1", "255.0.0.0"),
            iface("192.168.1.20", "255.255.255.0"),
            iface("172.20.5.9", "255.255.0.0"),
            iface("10.1.2.3", "255.255.255.252"),
            iface("::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            iface("2001:db8:0:1::7", "ffff:ffff:ffff:ffff::"),
        ];
        assert_eq!(
            shown(&compute_mynetworks(Style::Host, &ifaces)),
            [
                "127.0.0.1/32",
                "192.168.1.20/32",
                "172.20.5.9/32",
                "10.1.2.3/32",
                "[::1]/128",
                "[2001:db8:0:1::7]/128"
            ]
        );
        assert_eq!(
            shown(&compute_mynetworks(Style::Subnet, &ifaces)),
            [
                "127.0.0.0/8",
                "192.168.1.0/24",
                "172.20.0.0/16",
                "10.1.2.0/30",
                "[::1]/128",
                "[2001:db8:0:1::]/64"
            ]
        );
        assert_eq!(
            shown(&compute_mynetworks(Style::Class, &ifaces)),
            [
                "127.0.0.0/8",
                "192.168.1.0/24",
                "172.20.0.0/16",
                "10.0.0.0/8",
                "[::1]/128",
                "[2001:db8:0:1::]/64"
            ]
        );
        // Two addresses on one subnet give it once; no netmask means the host alone.
        let same = [
            iface("192.168.1.2", "255.255.255.0"),
            iface("192.168.1.3", "255.255.255.0"),
            Interface {
                addr: ip("198.51.100.7"),
                netmask: None,
            },
        ];
        assert_eq!(
            shown(&compute_mynetworks(Style::Subnet, &same)),
            ["192.168.1.0/24", "198.51.100.7/32"]
        );
        assert_eq!(Style::parse("SUBNET"), Some(Style::Subnet));
        assert_eq!(Style::parse("bogus"), None);
    }

    #[test]
    fn destinations() {
        let policy = RelayPolicy {
            mydestination: vec!["vm".into(), "localhost".into()],
            relay_domains: vec!["example.org".into()],
            mynetworks: vec![],
        };
        assert!(policy.is_our_destination("alice"));
        assert!(policy.is_our_destination("alice@LOCALHOST"));
        assert!(policy.is_our_destination("a@example.org"));
        assert!(policy.is_our_destination("a@sub.example.org"));
        assert!(!policy.is_our_destination("a@badexample.org"));
        assert!(!policy.is_our_destination("bob@example.net"));
    }

    #[test]
    fn protocol_lists() {
        let l = |v: &[&str]| protocols(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(l(&["all"]), (true, true));
        assert_eq!(l(&["ipv4"]), (true, false));
        assert_eq!(l(&["ipv6"]), (false, true));
        assert_eq!(l(&["ipv4", "ipv6"]), (true, true));
    }
}
