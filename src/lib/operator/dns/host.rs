//! What `mailroom dns` checks the records against: this host's names, its addresses
//! and its DKIM key, read from `main.cf` and the machine (no DNS).
//!
//! "This host's addresses" are the addresses `myhostname` resolves to (found by the `a`
//! check, in DNS) plus the addresses `inet_interfaces` names when it names specific ones
//! (not `all` or `loopback-only`). PTR and SPF are checked for the public ones among them:
//! loopback, private (RFC 1918, fc00::/7), shared (100.64.0.0/10), link-local and
//! unspecified addresses never reach a receiver. When none is public, SPF is checked
//! for the addresses there are.

use std::net::IpAddr;

use crate::config::Config;
use crate::dkim::{self, PrivateKey, Settings};
use crate::smtpd::listener::bind_addresses;
use crate::sysexits::{Error, Result};

/// The local DKIM key, as the `dkim` check needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalKey {
    /// `dkim_selector` is empty: no signing.
    Off,
    /// No key file for the domain and selector.
    Absent { selector: String, path: String },
    /// A key file that cannot be read or is no key (a caller who is not root).
    Unreadable { selector: String, why: String },
    /// The key: the record to publish and the `p=` it has.
    Present {
        selector: String,
        zone_line: String,
        p: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Lower-cased, without a final dot.
    pub myhostname: String,
    /// The domain checked (`$mydomain` or the one asked for), lower-cased.
    pub domain: String,
    /// The public addresses `inet_interfaces` names.
    pub interfaces: Vec<IpAddr>,
    /// The public addresses of this machine's network interfaces: what the A record
    /// to publish would hold.
    pub local: Vec<IpAddr>,
    pub dkim: LocalKey,
}

impl Host {
    pub fn from_config(config: &Config, domain: Option<&str>) -> Result<Host> {
        let domain = match domain {
            Some(d) => d.to_string(),
            None => config.mydomain()?,
        };
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        dkim::check_name("domain", &domain).map_err(Error::usage)?;
        let myhostname = config
            .myhostname()?
            .trim_end_matches('.')
            .to_ascii_lowercase();
        dkim::check_name("myhostname", &myhostname).map_err(Error::config)?;
        let (bound, _) = bind_addresses(
            &config.list("inet_interfaces")?,
            &config.list("inet_protocols")?,
            25,
        );
        let interfaces = bound
            .iter()
            .map(|a| a.ip())
            .filter(|ip| is_public(*ip))
            .collect();
        Ok(Host {
            myhostname,
            dkim: local_key(&Settings::from_config(config)?, &domain),
            domain,
            interfaces,
            local: interface_addresses(),
        })
    }

    /// The addresses an A/AAAA record for myhostname would hold: `inet_interfaces`'
    /// public ones, else the machine's.
    pub fn suggested_addresses(&self) -> &[IpAddr] {
        if self.interfaces.is_empty() {
            &self.local
        } else {
            &self.interfaces
        }
    }
}

/// Whether a receiver on the internet could see mail come from `ip`.
pub fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let shared = v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64;
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || shared)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// The public addresses of this machine's interfaces; none when they cannot be listed.
fn interface_addresses() -> Vec<IpAddr> {
    let Ok(list) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in list {
        let Some(address) = entry.address else {
            continue;
        };
        let ip = if let Some(v4) = address.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = address.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if is_public(ip) && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// The key `dkim_key_directory` holds for `domain` and `dkim_selector`.
fn local_key(settings: &Settings, domain: &str) -> LocalKey {
    if !settings.enabled() {
        return LocalKey::Off;
    }
    let selector = settings.selector.clone();
    let path = match settings.key_path(domain, &selector) {
        Ok(path) => path,
        Err(why) => return LocalKey::Unreadable { selector, why },
    };
    if let Err(e) = std::fs::metadata(&path)
        && e.kind() == std::io::ErrorKind::NotFound
    {
        let path = path.display().to_string();
        return LocalKey::Absent { selector, path };
    }
    let key: PrivateKey = match dkim::key::read_file(&path) {
        Ok((key, _mode)) => key,
        Err(why) => {
            let why = format!("{}: {why}", path.display());
            return LocalKey::Unreadable { selector, why };
        }
    };
    match key.public_key() {
        Ok(public) => {
            let value = dkim::record::record_value(key.algorithm(), &public);
            let p = value
                .rsplit_once("p=")
                .map(|(_, p)| p.to_string())
                .unwrap_or_default();
            LocalKey::Present {
                zone_line: dkim::record::zone_line(&selector, domain, key.algorithm(), &public),
                selector,
                p,
            }
        }
        Err(why) => LocalKey::Unreadable { selector, why },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses() {
        for (ip, public) in [
            ("192.0.2.10", true),
            ("203.0.113.5", true),
            ("127.0.0.1", false),
            ("10.1.2.3", false),
            ("192.168.1.1", false),
            ("172.16.0.1", false),
            ("100.64.0.1", false),
            ("169.254.0.1", false),
            ("0.0.0.0", false),
            ("2001:db8::1", true),
            ("::1", false),
            ("fd00::1", false),
            ("fe80::1", false),
            ("::ffff:10.0.0.1", false),
            ("::ffff:192.0.2.1", true),
        ] {
            assert_eq!(is_public(ip.parse().unwrap()), public, "{ip}");
        }
    }
}
