//! The real [`Resolver`]: hickory-resolver as mail-auth carries it (the one hickory of
//! the build), configured by [`resolver_config`] like every other lookup of mailroom, and
//! driven from synchronous code by a small runtime of its own.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::name_server::TokioConnectionProvider;
use mail_auth::hickory_resolver::proto::ProtoError;

use super::route::{DnsError, Resolver};
use crate::dns::lookup::{Failure, absolute, failure, resolver_config};

/// How long one attempt of one query may take (two attempts, see [`resolver_config`]).
/// Five seconds is what the SMTP client waited before it shared the configuration:
/// hickory's default `ResolverOpts` for `dns_nameservers`, and glibc's (and hickory's
/// resolv.conf parser's) default for the system's servers. Longer than the 3 seconds of
/// the checker and of Authentication-Results: a queue runner can wait, and a slow answer
/// given up on defers mail. `options timeout:` and `attempts:` of /etc/resolv.conf no
/// longer change it, as they never did for the other lookups.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

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
            // Also Ipv4AndIpv6 (both address families in one lookup_ip) and no search
            // list for dns_nameservers; the names are absolute anyway, see [`absolute`].
            let (config, options) =
                resolver_config(&self.servers, QUERY_TIMEOUT).map_err(DnsError::Temporary)?;
            // Made inside the runtime that will drive it, as its connections belong there.
            let resolver = {
                let _inside = runtime.enter();
                TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
                    .with_options(options)
                    .build()
            };
            Ok((runtime, resolver))
        });
        built.as_ref().map_err(DnsError::clone)
    }
}

/// A failed lookup as routing needs it: NXDOMAIN bounces the mail, NODATA is an empty
/// answer (no MX: the domain's own addresses), anything else is tried again later.
fn classify(err: &ProtoError) -> Result<(), DnsError> {
    match failure(err) {
        Failure::NoSuchName => Err(DnsError::NotFound),
        Failure::NoRecords => Ok(()),
        Failure::Unanswered(why) => Err(DnsError::Temporary(why)),
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
            Err(err) => classify(&err).map(|()| Vec::new()),
        }
    }

    /// A and AAAA are asked side by side and judged apart. One lookup of both would
    /// report a single error when neither has addresses, whichever came first: an A
    /// query that failed (SERVFAIL, timeout) next to an AAAA one that found no records,
    /// the case of most hosts, could read as "no addresses" and bounce the mail.
    fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let (runtime, resolver) = self.get()?;
        let name = absolute(host);
        let (v4, v6) = runtime.block_on(async {
            tokio::join!(
                resolver.ipv4_lookup(name.as_str()),
                resolver.ipv6_lookup(name.as_str())
            )
        });
        let v4 = v4.map(|l| l.iter().map(|a| IpAddr::V4(a.0)).collect::<Vec<_>>());
        let v6 = v6.map(|l| l.iter().map(|a| IpAddr::V6(a.0)).collect::<Vec<_>>());
        combine([v4, v6])
    }
}

/// One answer from the answers for each address family: the addresses any of them
/// found; else a failure if either had no answer (the mail waits); else no such name if
/// either said so (it bounces); else none.
fn combine(answers: [Result<Vec<IpAddr>, ProtoError>; 2]) -> Result<Vec<IpAddr>, DnsError> {
    let mut found = Vec::new();
    let mut unanswered = None;
    let mut no_such_name = false;
    for answer in answers {
        match answer {
            Ok(ips) => found.extend(ips),
            Err(err) => match failure(&err) {
                Failure::NoSuchName => no_such_name = true,
                Failure::NoRecords => {}
                Failure::Unanswered(why) => unanswered = Some(why),
            },
        }
    }
    match (found.is_empty(), unanswered) {
        (false, _) => Ok(found),
        (true, Some(why)) => Err(DnsError::Temporary(why)),
        (true, None) if no_such_name => Err(DnsError::NotFound),
        (true, None) => Ok(Vec::new()),
    }
}
