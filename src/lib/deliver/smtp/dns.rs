//! The real [`Resolver`]: hickory-resolver with the system's `/etc/resolv.conf`, or the
//! servers of `dns_nameservers`, driven from synchronous code by a small runtime of its
//! own.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use hickory_resolver::config::{LookupIpStrategy, NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{ResolveError, TokioResolver};

use super::route::{DnsError, Resolver};
use crate::dns::lookup::absolute;

/// Looks names up through the system's name servers, or through `servers` when that is
/// not empty (`dns_nameservers`). The resolver is built on first use, so a machine with a
/// broken resolv.conf still loads its configuration (and only remote mail waits).
#[derive(Default)]
pub struct SystemResolver {
    servers: Vec<SocketAddr>,
    inner: OnceLock<Result<(tokio::runtime::Runtime, TokioResolver), DnsError>>,
}

impl SystemResolver {
    pub fn new() -> SystemResolver {
        SystemResolver::default()
    }

    /// A resolver asking `servers` (UDP, then TCP for long answers) instead of the
    /// system's; empty: the system's.
    pub fn with_servers(servers: Vec<SocketAddr>) -> SystemResolver {
        SystemResolver {
            servers,
            inner: OnceLock::new(),
        }
    }

    fn get(&self) -> Result<&(tokio::runtime::Runtime, TokioResolver), DnsError> {
        let built = self.inner.get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| DnsError::Temporary(format!("cannot start the resolver: {e}")))?;
            let mut builder = if self.servers.is_empty() {
                TokioResolver::builder_tokio().map_err(|e| {
                    DnsError::Temporary(format!("cannot read the resolver configuration: {e}"))
                })?
            } else {
                TokioResolver::builder_with_config(
                    configured(&self.servers),
                    TokioConnectionProvider::default(),
                )
            };
            builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
            Ok((runtime, builder.build()))
        });
        built.as_ref().map_err(DnsError::clone)
    }
}

/// A resolver configuration of exactly `servers`, with no search list (names are
/// absolute anyway, see [`absolute`]).
fn configured(servers: &[SocketAddr]) -> ResolverConfig {
    let mut group = NameServerConfigGroup::with_capacity(servers.len() * 2);
    for server in servers {
        group.merge(NameServerConfigGroup::from_ips_clear(
            &[server.ip()],
            server.port(),
            true,
        ));
    }
    ResolverConfig::from_parts(None, Vec::new(), group)
}

fn classify(err: ResolveError) -> Result<(), DnsError> {
    if err.is_nx_domain() {
        Err(DnsError::NotFound)
    } else if err.is_no_records_found() {
        // The name exists but has no record of this type.
        Ok(())
    } else {
        Err(DnsError::Temporary(err.to_string()))
    }
}

impl Resolver for SystemResolver {
    fn mx(&self, domain: &str) -> Result<Vec<(u16, String)>, DnsError> {
        let (runtime, resolver) = self.get()?;
        let name = absolute(domain);
        match runtime.block_on(resolver.mx_lookup(name.as_str())) {
            Ok(lookup) => Ok(lookup
                .iter()
                .map(|mx| (mx.preference(), mx.exchange().to_utf8()))
                .collect()),
            Err(err) => classify(err).map(|()| Vec::new()),
        }
    }

    fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let (runtime, resolver) = self.get()?;
        let name = absolute(host);
        match runtime.block_on(resolver.lookup_ip(name.as_str())) {
            Ok(lookup) => Ok(lookup.iter().collect()),
            Err(err) => classify(err).map(|()| Vec::new()),
        }
    }
}
