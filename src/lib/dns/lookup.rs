//! Lookups for the DNS checker (and anything else that needs mail-auth's resolver):
//! hickory 0.26 as mail-auth carries it, asking the `dns_nameservers` servers or the
//! system's, with a bounded wait for each query, and counting answers against failures so
//! that a caller can tell "the records are missing" from "DNS cannot be reached".
//!
//! [`resolver_config`] is the one place that turns `dns_nameservers` (or
//! /etc/resolv.conf) into a hickory configuration; the SMTP client's resolver is built
//! from it too.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mail_auth::MessageAuthenticator;
use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::config::{
    LookupIpStrategy, NameServerConfigGroup, ResolverConfig, ResolverOpts,
};
use mail_auth::hickory_resolver::name_server::TokioConnectionProvider;
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::hickory_resolver::proto::{NoRecords, ProtoError, ProtoErrorKind};
use mail_auth::hickory_resolver::system_conf::read_system_conf;

/// The most records of one answer that are kept: a zone with thousands of TXT records
/// must not fill the checker's output or memory.
pub const MAX_RECORDS: usize = 32;

/// What one query found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    /// Records of the type asked for (at most [`MAX_RECORDS`]).
    Found(Vec<T>),
    /// The name does not exist or has no record of this type.
    None,
    /// No answer: a timeout, a refused connection, a server failure.
    Failed(String),
}

impl<T> Answer<T> {
    /// The records found; none for the other two.
    pub fn records(&self) -> &[T] {
        match self {
            Answer::Found(records) => records,
            _ => &[],
        }
    }
}

/// A resolver with its counts of answered and failed queries.
pub struct Lookup {
    authenticator: MessageAuthenticator,
    answered: AtomicUsize,
    failed: AtomicUsize,
}

impl Lookup {
    /// Asks `servers` (empty: the system's, from `/etc/resolv.conf`), waiting at most
    /// `timeout` for each attempt of each query, two attempts. Errors say why the system's
    /// configuration could not be read.
    pub fn new(servers: &[SocketAddr], timeout: Duration) -> Result<Lookup, String> {
        let (config, options) = resolver_config(servers, timeout)?;
        Ok(Lookup::with_config(config, options))
    }

    /// A resolver of a configuration read before (by a process that cannot read
    /// `/etc/resolv.conf` any more, after a chroot). It must be made and used inside
    /// one tokio runtime: its connections belong to the runtime that opened them.
    pub fn with_config(config: ResolverConfig, options: ResolverOpts) -> Lookup {
        let resolver =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
                .with_options(options)
                .build();
        Lookup {
            authenticator: MessageAuthenticator(resolver),
            answered: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
        }
    }

    /// mail-auth's verifier over the same resolver (SPF, DMARC).
    pub fn authenticator(&self) -> &MessageAuthenticator {
        &self.authenticator
    }

    fn resolver(&self) -> &TokioResolver {
        self.authenticator.resolver()
    }

    /// How many queries got an answer (records or "none"), and how many got none.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.answered.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    fn classify<L, T>(
        &self,
        result: Result<L, ProtoError>,
        each: impl Fn(L) -> Vec<T>,
    ) -> Answer<T> {
        match result {
            Ok(lookup) => {
                self.answered.fetch_add(1, Ordering::Relaxed);
                let mut records = each(lookup);
                records.truncate(MAX_RECORDS);
                if records.is_empty() {
                    Answer::None
                } else {
                    Answer::Found(records)
                }
            }
            Err(e) => match failure(&e) {
                Failure::NoSuchName | Failure::NoRecords => {
                    self.answered.fetch_add(1, Ordering::Relaxed);
                    Answer::None
                }
                Failure::Unanswered(why) => {
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    Answer::Failed(why)
                }
            },
        }
    }

    /// The A and AAAA addresses of `host`.
    pub async fn addresses(&self, host: &str) -> Answer<IpAddr> {
        let result = self.resolver().lookup_ip(absolute(host)).await;
        self.classify(result, |l| l.iter().collect())
    }

    /// The MX records of `domain`: preference and exchange (without its final dot).
    pub async fn mx(&self, domain: &str) -> Answer<(u16, String)> {
        let result = self.resolver().mx_lookup(absolute(domain)).await;
        self.classify(result, |l| {
            l.iter()
                .map(|mx| (mx.preference(), relative(&mx.exchange().to_utf8())))
                .collect()
        })
    }

    /// The names of `ip` (PTR), without their final dots.
    pub async fn names_of(&self, ip: IpAddr) -> Answer<String> {
        let result = self.resolver().reverse_lookup(ip).await;
        self.classify(result, |l| {
            l.iter().map(|n| relative(&n.0.to_utf8())).collect()
        })
    }

    /// The TXT records at `name`, each one's strings joined (RFC 7208 section 3.3, RFC 6376
    /// section 3.6.2.2); bytes that are not UTF-8 are replaced.
    pub async fn txt(&self, name: &str) -> Answer<String> {
        let result = self.resolver().txt_lookup(absolute(name)).await;
        self.classify(result, |l| {
            l.iter()
                .map(|txt| {
                    let bytes: Vec<u8> = txt
                        .txt_data()
                        .iter()
                        .flat_map(|s| s.iter().copied())
                        .collect();
                    String::from_utf8_lossy(&bytes).into_owned()
                })
                .collect()
        })
    }
}

/// What a failed query says about the name asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// NXDOMAIN: the name does not exist.
    NoSuchName,
    /// NOERROR without records of the type asked (NODATA): the name exists.
    NoRecords,
    /// Nothing about the name: a timeout, no connection, SERVFAIL, REFUSED, ...
    Unanswered(String),
}

/// Classifies a failed query, the same way for every lookup of mailroom. Only NXDOMAIN
/// and NOERROR answers say something about the name: hickory reports SERVFAIL, REFUSED
/// and the other error codes as "no records found" too (with their code), and taking
/// those for missing records would bounce mail, or report a record as missing, over a
/// broken or unreachable name server.
pub fn failure(err: &ProtoError) -> Failure {
    match err.kind() {
        ProtoErrorKind::NoRecordsFound(NoRecords {
            response_code: ResponseCode::NXDomain,
            ..
        }) => Failure::NoSuchName,
        ProtoErrorKind::NoRecordsFound(NoRecords {
            response_code: ResponseCode::NoError,
            ..
        }) => Failure::NoRecords,
        ProtoErrorKind::NoRecordsFound(NoRecords {
            response_code,
            query,
            ..
        }) => Failure::Unanswered(format!("{response_code} for {query}")),
        _ => Failure::Unanswered(err.to_string()),
    }
}

/// The resolver configuration for `servers` (empty: the system's), with `timeout` for
/// each attempt of each query, two attempts.
pub fn resolver_config(
    servers: &[SocketAddr],
    timeout: Duration,
) -> Result<(ResolverConfig, ResolverOpts), String> {
    let (config, mut options) = if servers.is_empty() {
        read_system_conf().map_err(|e| format!("cannot read the resolver configuration: {e}"))?
    } else {
        let mut group = NameServerConfigGroup::with_capacity(servers.len() * 2);
        for server in servers {
            group.merge(NameServerConfigGroup::from_ips_clear(
                &[server.ip()],
                server.port(),
                true,
            ));
        }
        (
            ResolverConfig::from_parts(None, Vec::new(), group),
            ResolverOpts::default(),
        )
    };
    options.timeout = timeout;
    options.attempts = 2;
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    Ok((config, options))
}

/// Names are asked as absolute names: a search list must never turn `example.com` into
/// `example.com.corp.example`.
pub fn absolute(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// A name as people write it: without the final dot, lower-cased.
pub fn relative(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use mail_auth::hickory_resolver::proto::op::Query;

    use super::*;

    fn answered(code: ResponseCode) -> ProtoError {
        ProtoError::from(NoRecords::new(Query::default(), code))
    }

    #[test]
    fn only_nxdomain_and_noerror_say_something_about_the_name() {
        assert_eq!(
            failure(&answered(ResponseCode::NXDomain)),
            Failure::NoSuchName
        );
        assert_eq!(
            failure(&answered(ResponseCode::NoError)),
            Failure::NoRecords
        );
        for code in [
            ResponseCode::ServFail,
            ResponseCode::Refused,
            ResponseCode::FormErr,
        ] {
            assert!(
                matches!(failure(&answered(code)), Failure::Unanswered(_)),
                "{code:?}"
            );
        }
        assert!(matches!(
            failure(&ProtoError::from("timed out")),
            Failure::Unanswered(why) if why.contains("timed out")
        ));
    }
}
