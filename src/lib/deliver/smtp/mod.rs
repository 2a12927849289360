//! The SMTP delivery agent: mail for recipients outside `mydestination` goes to
//! `relayhost` or to each domain's MX hosts, one transaction per destination, and each
//! recipient comes back with an [`Outcome`] worded as Postfix's smtp(8) words it.
//!
//! The daemon calls it like this:
//!
//! ```no_run
//! # use mailroom::deliver::smtp::{SmtpContext, destination_key, deliver};
//! # use mailroom::deliver::MessageSource;
//! # fn f(config: &mailroom::config::Config, envelope: &mailroom::queue::Envelope,
//! #      file: &std::fs::File) -> mailroom::sysexits::Result<()> {
//! let ctx = SmtpContext::from_config(config)?;          // once per configuration
//! // Group the message's remote recipients by destination...
//! let mut groups = std::collections::BTreeMap::<String, Vec<_>>::new();
//! for rcpt in envelope.pending() {
//!     groups.entry(destination_key(&ctx, &rcpt.address)).or_default().push(rcpt);
//! }
//! // ...and deliver each group in one SMTP transaction.
//! for recipients in groups.values() {
//!     let outcomes = deliver(&ctx, envelope, MessageSource::for_envelope(file, envelope), recipients);
//!     // outcomes[i] is the fate of recipients[i]
//! }
//! # Ok(()) }
//! ```
//!
//! Jobs: `route` (relayhost, MX, addresses), `dns` (the real resolver), `client` (the SMTP
//! conversation, through lettre's `SmtpConnection`), `tls` (STARTTLS policy as lettre's
//! TLS parameters), `auth` (password maps), `body` (the message as it goes to lettre),
//! `signing` (the DKIM signature on the way out), `reply` (replies and failures as
//! Postfix words them), `agent` (the `mailroom smtp-agent`
//! processes the daemon runs all of this in, as `mail_owner`, and their protocol).

pub mod agent;
mod auth;
mod body;
mod cache;
mod client;
mod dns;
mod ehlo;
mod negotiated;
mod reply;
mod route;
mod signing;
mod tls;

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::address;
use crate::config::{Config, Table};
use crate::deliver::{Dsn, MessageSource, Outcome, Status};
use crate::log::Log;
use crate::queue::{Envelope, Recipient};
use crate::sysexits::{Error, Result};

pub use cache::Settings as ConnectionCacheSettings;
pub use dns::SystemResolver;
pub use route::{DnsError, Nexthop, Protocols, Resolver};
pub use tls::Level as TlsLevel;

/// Postfix's per-step time limits (`smtp_*_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub helo: Duration,
    pub starttls: Duration,
    pub mail: Duration,
    pub rcpt: Duration,
    pub data_init: Duration,
    pub data_xfer: Duration,
    pub data_done: Duration,
    pub quit: Duration,
}

impl Timeouts {
    /// All steps limited to `each` (for tests).
    pub fn all(each: Duration) -> Timeouts {
        Timeouts {
            connect: each,
            helo: each,
            starttls: each,
            mail: each,
            rcpt: each,
            data_init: each,
            data_xfer: each,
            data_done: each,
            quit: each,
        }
    }
}

/// SMTP AUTH settings (`smtp_sasl_auth_enable = yes`).
#[derive(Debug, Clone)]
pub struct Sasl {
    pub password_maps: Vec<Table>,
    /// Whether PLAIN/LOGIN may be used on an unencrypted connection: false while
    /// `smtp_sasl_security_options` says `noplaintext` (the default). Over TLS they are
    /// always allowed, unlike Postfix's default, which refuses them even there and leaves
    /// its users wondering why AUTH "has no mechanism".
    pub plaintext_allowed: bool,
    /// The password maps as read in advance ([`SmtpContext::with_password_maps_read`]);
    /// empty: each is read at each delivery.
    read: Vec<auth::ReadTable>,
}

/// Everything the agent needs, read once from the configuration.
pub struct SmtpContext {
    /// The name in EHLO/HELO (`smtp_helo_name`, default `$myhostname`).
    pub helo_name: String,
    /// Also the name an MX list must not point back to.
    pub myhostname: String,
    /// `relayhost`, parsed; empty means MX routing.
    pub relayhost: Vec<Nexthop>,
    /// The TCP port when the next hop names none (25).
    pub default_port: u16,
    pub protocols: Protocols,
    pub tls: tls::TlsPolicy,
    /// `smtp_tls_wrappermode`: TLS from the first byte (port 465), never STARTTLS.
    pub wrapper: bool,
    pub sasl: Option<Sasl>,
    pub timeouts: Timeouts,
    /// At most this many server addresses are tried per delivery (`smtp_mx_address_limit`).
    pub address_limit: usize,
    /// `smtp_discard_ehlo_keywords`.
    pub ehlo_discard: ehlo::Discarded,
    pub resolver: Arc<dyn Resolver>,
    /// Where warnings go (a world-readable password file, a failed TLS handshake).
    pub log: Arc<dyn Warnings>,
    /// The DKIM keys, read in advance ([`SmtpContext::with_dkim_keys_read`]); `None`: no
    /// signing.
    pub dkim: Option<Arc<crate::dkim::Signer>>,
    /// The `smtp_connection_*` parameters.
    pub connection_cache: cache::Settings,
    /// Connections kept for the next message ([`SmtpContext::with_connection_cache`]);
    /// `None`: each session ends with QUIT.
    cache: Option<Mutex<cache::Cache>>,
}

/// Where the client's warnings go: the mail log, or (in a `mailroom smtp-agent` process,
/// which cannot write the root-owned log) a list sent back to the daemon with the outcomes.
pub trait Warnings: Send + Sync {
    fn warning(&self, text: &str);
    /// A line that is not a warning (the TLS connection a session established). Kept
    /// by default nowhere: only the mail log and the agent's reply carry it.
    fn info(&self, _text: &str) {}
}

impl Warnings for Log {
    fn warning(&self, text: &str) {
        Log::warning(self, text);
    }
    fn info(&self, text: &str) {
        Log::info(self, text);
    }
}

impl SmtpContext {
    /// Reads the SMTP client's parameters. DNS goes through the system resolver or
    /// `dns_nameservers` (replace it with [`SmtpContext::with_resolver`]); warnings go to
    /// the mail log as `$syslog_name/smtp`. An invalid value (relayhost, TLS level,
    /// timeout, inet_protocols, dns_nameservers) is an error of code 78.
    pub fn from_config(config: &Config) -> Result<SmtpContext> {
        let bad = |name: &str, why: &dyn std::fmt::Display| {
            Error::config(format!("parameter {name}: {why}"))
        };
        let relayhost =
            route::parse_relayhost(&config.get("relayhost")?).map_err(|m| bad("relayhost", &m))?;
        let protocols = Protocols::parse(&config.list("inet_protocols")?)
            .map_err(|m| bad("inet_protocols", &m))?;
        // Unset means `may`, not Postfix's `none`: STARTTLS costs nothing when offered
        // and every large receiver offers it. An explicit `none` is still honoured.
        let level = match config.get("smtp_tls_security_level")?.trim() {
            "" => tls::Level::May,
            value => tls::Level::parse(value).map_err(|m| bad("smtp_tls_security_level", &m))?,
        };
        let tls = tls::TlsPolicy::new(level, &config.get("smtp_tls_CAfile")?)
            .map_err(|m| bad("smtp_tls_CAfile", &m))?;
        let sasl = match config.boolean("smtp_sasl_auth_enable")? {
            false => None,
            true => Some(Sasl {
                password_maps: config.tables("smtp_sasl_password_maps")?,
                plaintext_allowed: !config
                    .list("smtp_sasl_security_options")?
                    .iter()
                    .any(|o| o.eq_ignore_ascii_case("noplaintext")),
                read: Vec::new(),
            }),
        };
        let timeouts = Timeouts {
            connect: config.time("smtp_connect_timeout")?,
            helo: config.time("smtp_helo_timeout")?,
            starttls: config.time("smtp_starttls_timeout")?,
            mail: config.time("smtp_mail_timeout")?,
            rcpt: config.time("smtp_rcpt_timeout")?,
            data_init: config.time("smtp_data_init_timeout")?,
            data_xfer: config.time("smtp_data_xfer_timeout")?,
            data_done: config.time("smtp_data_done_timeout")?,
            quit: config.time("smtp_quit_timeout")?,
        };
        let connection_cache = cache::Settings {
            enabled: config.boolean("smtp_connection_cache_on_demand")?,
            idle: config.time("smtp_connection_cache_time_limit")?,
            lifetime: config.time("smtp_connection_reuse_time_limit")?,
            reuses: config.number("smtp_connection_reuse_count_limit")?,
        };
        let address_limit = match config.number("smtp_mx_address_limit")? {
            0 => usize::MAX,
            n => n as usize,
        };
        Ok(SmtpContext {
            helo_name: config.get("smtp_helo_name")?,
            myhostname: config.myhostname()?,
            relayhost,
            default_port: 25,
            protocols,
            tls,
            wrapper: config.boolean("smtp_tls_wrappermode")?,
            sasl,
            timeouts,
            address_limit,
            ehlo_discard: ehlo::Discarded::parse(&config.list("smtp_discard_ehlo_keywords")?),
            resolver: Arc::new(SystemResolver::with_servers(
                crate::dns::servers::from_config(config)?,
            )),
            log: Arc::new(Log::from_config(config, "smtp")),
            dkim: None,
            connection_cache,
            cache: None,
        })
    }

    /// The same context with another resolver (tests use a fake one).
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolver>) -> SmtpContext {
        self.resolver = resolver;
        self
    }

    /// The same context logging elsewhere.
    pub fn with_log(mut self, log: Arc<Log>) -> SmtpContext {
        self.log = log;
        self
    }

    /// The same context with the password maps read now, once, instead of at each
    /// delivery: for a process about to lose the right to read them.
    pub fn with_password_maps_read(mut self) -> SmtpContext {
        if let Some(sasl) = &mut self.sasl {
            sasl.read = sasl
                .password_maps
                .iter()
                .map(auth::read_in_advance)
                .collect();
        }
        self
    }

    /// The same context with the DKIM keys of `config` read now, for a process about to
    /// lose the right to read them (they are root's, mode 0600). Each key that cannot be
    /// used is a warning, and so are DKIM parameters that make no sense: the mail then
    /// leaves unsigned rather than waiting in the queue.
    pub fn with_dkim_keys_read(mut self, config: &Config) -> SmtpContext {
        let log = Arc::clone(&self.log);
        let warn = |text: &str| log.warning(text);
        self.dkim = match crate::dkim::Settings::from_config(config) {
            Ok(settings) => crate::dkim::Signer::load(&settings, &warn).map(Arc::new),
            Err(e) => {
                warn(&format!("{e}; mail leaves unsigned"));
                None
            }
        };
        self
    }

    /// The same context keeping connections open after a successful transaction, for the
    /// next message to the same server, when `smtp_connection_cache_on_demand` allows.
    /// For a process that delivers message after message and calls
    /// [`SmtpContext::close_idle_connections`] by [`SmtpContext::next_connection_expiry`]
    /// (the `smtp-agent`); a context without it never leaves a connection open.
    pub fn with_connection_cache(mut self) -> SmtpContext {
        if self.connection_cache.enabled {
            let cache = cache::Cache::new(self.connection_cache, self.timeouts.quit);
            self.cache = Some(Mutex::new(cache));
        }
        self
    }

    /// When the next cached connection is due to be closed, if any is open.
    pub fn next_connection_expiry(&self) -> Option<Instant> {
        self.cache().and_then(|c| c.next_expiry())
    }

    /// Closes (QUIT) the cached connections unused for `smtp_connection_cache_time_limit`.
    pub fn close_idle_connections(&self) {
        if let Some(mut cache) = self.cache() {
            cache.expire(Instant::now());
        }
    }

    /// Closes (QUIT) every cached connection.
    pub fn close_connections(&self) {
        if let Some(mut cache) = self.cache() {
            cache.close_all();
        }
    }

    fn cache(&self) -> Option<MutexGuard<'_, cache::Cache>> {
        let cache = self.cache.as_ref()?;
        Some(cache.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn cached_connection(&self, key: &cache::Key) -> Option<cache::Connection> {
        self.cache()?.take(key, Instant::now())
    }

    fn cached_sockets(&self) -> Vec<std::os::fd::RawFd> {
        self.cache().map(|c| c.sockets()).unwrap_or_default()
    }

    /// Caches `connection` for `key`, or closes it (QUIT) when there is no cache.
    fn keep_connection(&self, key: cache::Key, mut connection: cache::Connection) {
        match self.cache() {
            Some(mut cache) => cache.put(key, connection, Instant::now()),
            None => cache::quit(&mut connection.conn, self.timeouts.quit),
        }
    }

    /// The same context with its warnings going to `warnings`.
    pub fn with_warnings(mut self, warnings: Arc<dyn Warnings>) -> SmtpContext {
        self.log = warnings;
        self
    }
}

/// The key the daemon groups remote recipients of one message by: recipients with the
/// same key go out in one SMTP transaction. With a relayhost that is the relayhost
/// (everything goes there); without, the recipient's domain, lower-cased.
pub fn destination_key(ctx: &SmtpContext, address: &str) -> String {
    if !ctx.relayhost.is_empty() {
        return "relayhost".into();
    }
    address::domain_of(address).unwrap_or_default()
}

/// Delivers one message to `recipients` (normally all of one [`destination_key`]; mixed
/// keys are split here) and returns one outcome per recipient, in the same order.
/// Never panics and never blocks past the configured timeouts (DNS aside, which has its
/// own); a recipient never comes back without an outcome.
pub fn deliver(
    ctx: &SmtpContext,
    envelope: &Envelope,
    message: MessageSource,
    recipients: &[&Recipient],
) -> Vec<Outcome> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; recipients.len()];
    if let Err(why) = check_address(&envelope.sender) {
        let text = format!("bad sender address syntax: {why}");
        return recipients
            .iter()
            .map(|_| Outcome::bounced("none", Dsn::BAD_SENDER, text.clone()))
            .collect();
    }
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, rcpt) in recipients.iter().enumerate() {
        match check_address(&rcpt.address).and_then(|()| {
            address::domain_of(&rcpt.address)
                .map(|_| ())
                .ok_or("no domain")
        }) {
            Ok(()) => groups
                .entry(destination_key(ctx, &rcpt.address))
                .or_default()
                .push(i),
            Err(why) => {
                outcomes[i] = Some(Outcome::bounced(
                    "none",
                    Dsn::BAD_ADDRESS,
                    format!("bad address syntax: {why}"),
                ))
            }
        }
    }
    for (key, indices) in groups {
        deliver_group(
            ctx,
            envelope,
            &message,
            recipients,
            &key,
            &indices,
            &mut outcomes,
        );
    }
    outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| {
                Outcome::deferred("none", Dsn::TEMP_LOCAL, "internal error: no outcome")
            })
        })
        .collect()
}

/// An address that could break the SMTP command it goes into is refused before any
/// connection (the queue file's encoding can carry any byte).
fn check_address(address: &str) -> std::result::Result<(), &'static str> {
    if address
        .bytes()
        .any(|b| b < 0x20 || b == 0x7f || b == b'<' || b == b'>')
    {
        return Err("control character or angle bracket");
    }
    if address.len() > 998 {
        return Err("too long");
    }
    Ok(())
}

fn deliver_group(
    ctx: &SmtpContext,
    envelope: &Envelope,
    message: &MessageSource,
    recipients: &[&Recipient],
    key: &str,
    indices: &[usize],
    outcomes: &mut [Option<Outcome>],
) {
    let using_relayhost = !ctx.relayhost.is_empty();
    let hops = match using_relayhost {
        true => ctx.relayhost.clone(),
        false => vec![Nexthop::for_domain(key)],
    };
    let settings = route::RouteSettings {
        resolver: ctx.resolver.as_ref(),
        protocols: ctx.protocols,
        default_port: ctx.default_port,
        myhostname: &ctx.myhostname,
        address_limit: ctx.address_limit,
    };
    let targets = match route::route(&settings, &hops, using_relayhost) {
        Ok(targets) => targets,
        Err(err) => {
            for &i in indices {
                outcomes[i] = Some(match err.permanent {
                    true => Outcome::bounced("none", err.dsn, err.text.clone()),
                    false => Outcome::deferred("none", err.dsn, err.text.clone()),
                });
            }
            return;
        }
    };
    let mut body = match body::load(message) {
        Ok(body) => body,
        Err(err) => {
            let text = format!(
                "error reading the queue file: {}",
                crate::sysexits::describe_io(&err)
            );
            for &i in indices {
                outcomes[i] = Some(Outcome::deferred("none", Dsn::TEMP_LOCAL, text.clone()));
            }
            return;
        }
    };

    let size = match &ctx.dkim {
        Some(signer) => message.size + signing::sign(signer, &mut body, ctx.log.as_ref()) as u64,
        None => message.size,
    };

    // Recipients still to place: a temporary failure at one server is retried at the
    // next (backup MX, next relayhost), as Postfix does; only the last server's answer
    // stands. Successes and permanent failures are final at once.
    let mut pending: Vec<usize> = indices.to_vec();
    let mut unreachable: HashSet<(IpAddr, u16)> = HashSet::new();
    for target in &targets {
        if pending.is_empty() {
            break;
        }
        // An address that refused a connection once will again; don't wait on it twice.
        if unreachable.contains(&(target.ip, target.port)) {
            continue;
        }
        let job = client::Job {
            sender: &envelope.sender,
            ret: &envelope.ret,
            envid: &envelope.envid,
            recipients: pending.iter().map(|&i| recipients[i]).collect(),
            wire: &body.wire,
            size,
            eight_bit: body.eight_bit,
            nexthop: &target.nexthop,
        };
        let mut session = client::attempt(ctx, target, &job, true);
        let untouched = session.results.iter().all(Option::is_none);
        if matches!(session.failure, Some(reply::SmtpError::TlsHandshake { .. }))
            && ctx.tls.level == tls::Level::May
            && !ctx.wrapper
            && untouched
        {
            // Opportunistic TLS that fails is retried without it, as Postfix does:
            // delivery in plain text beats no delivery. Not in wrapper mode: a server
            // that speaks TLS from the first byte cannot be spoken to without it.
            session = client::attempt(ctx, target, &job, false);
        }
        if matches!(session.failure, Some(reply::SmtpError::Connect(_))) {
            unreachable.insert((target.ip, target.port));
        }
        let mut still_pending = Vec::new();
        for (k, &i) in pending.iter().enumerate() {
            let outcome = match session.results[k].take() {
                Some(outcome) => outcome,
                None => match &session.failure {
                    Some(failure) => failure.outcome(&session.peer),
                    None => Outcome::deferred(
                        &session.peer.relay(),
                        Dsn::TEMP_LOCAL,
                        "internal error: recipient not handled",
                    ),
                },
            };
            if outcome.status == Status::Deferred {
                still_pending.push(i);
            }
            outcomes[i] = Some(outcome);
        }
        pending = still_pending;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn ctx(extra: &str) -> SmtpContext {
        let text = format!("myhostname = me.example\n{extra}\n");
        let config = Config::from_text(&text, Path::new("/nonexistent/main.cf"));
        SmtpContext::from_config(&config).unwrap()
    }

    #[test]
    fn defaults_are_postfixs() {
        let c = ctx("");
        assert_eq!(c.helo_name, "me.example");
        assert!(c.relayhost.is_empty());
        // The one departure: opportunistic TLS unless told otherwise.
        assert_eq!(c.tls.level, tls::Level::May);
        assert_eq!(
            ctx("smtp_tls_security_level = none").tls.level,
            tls::Level::None
        );
        assert!(!c.wrapper);
        assert!(c.sasl.is_none());
        assert_eq!(c.timeouts.connect, Duration::from_secs(30));
        assert_eq!(c.timeouts.helo, Duration::from_secs(300));
        assert_eq!(c.timeouts.data_done, Duration::from_secs(600));
        assert_eq!(c.address_limit, 5);
        assert!(c.protocols.ipv4 && c.protocols.ipv6);
        assert_eq!(
            c.connection_cache,
            cache::Settings {
                enabled: true,
                idle: Duration::from_secs(2),
                lifetime: Duration::from_secs(300),
                reuses: 0,
            }
        );
        // Only the agent, which closes idle connections in time, keeps any.
        assert!(c.cache.is_none());
        assert!(c.with_connection_cache().cache.is_some());
    }

    #[test]
    fn reads_the_smtp_parameters() {
        let c = ctx(
            "relayhost = [smtp.isp.example]:587\nsmtp_tls_security_level = encrypt\n\
             smtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = hash:/etc/postfix/sasl_passwd\n\
             smtp_sasl_security_options = noanonymous\ninet_protocols = ipv4\nsmtp_connect_timeout = 5s",
        );
        assert_eq!(c.relayhost[0].port, Some(587));
        assert_eq!(c.tls.level, tls::Level::Encrypt);
        let sasl = c.sasl.unwrap();
        assert!(sasl.plaintext_allowed);
        assert_eq!(
            sasl.password_maps[0].to_string(),
            "hash:/etc/postfix/sasl_passwd"
        );
        assert!(!c.protocols.ipv6);
        assert_eq!(c.timeouts.connect, Duration::from_secs(5));
    }

    #[test]
    fn bad_values_are_configuration_errors() {
        for bad in [
            "relayhost = [oops",
            "smtp_tls_security_level = sometimes",
            "inet_protocols = ipx",
            "smtp_helo_timeout = soon",
        ] {
            let config = Config::from_text(
                &format!("myhostname = me.example\n{bad}\n"),
                Path::new("/nonexistent/main.cf"),
            );
            let err = SmtpContext::from_config(&config).err().expect(bad);
            assert_eq!(err.code(), 78, "{bad}");
        }
    }

    #[test]
    fn destination_keys_group_by_domain_or_relayhost() {
        let c = ctx("");
        assert_eq!(destination_key(&c, "a@Example.COM"), "example.com");
        assert_eq!(destination_key(&c, "b@example.com."), "example.com");
        let c = ctx("relayhost = [relay.example]");
        assert_eq!(destination_key(&c, "a@x.example"), "relayhost");
        assert_eq!(destination_key(&c, "a@y.example"), "relayhost");
    }

    #[test]
    fn unsafe_addresses_bounce_without_a_connection() {
        let c = ctx("relayhost = [127.0.0.1]:1");
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, b"Subject: x\n\nbody\n").unwrap();
        let envelope = Envelope::new(
            crate::queue::QueueId::generate(),
            0,
            0,
            "sender@example.com",
        );
        let bad = Recipient::new("x", "evil@example.com>\r\nDATA");
        let message = MessageSource {
            file: &file,
            offset: 0,
            size: 17,
        };
        let outcomes = deliver(&c, &envelope, message, &[&bad]);
        assert_eq!(outcomes[0].status, Status::Bounced);
        assert_eq!(outcomes[0].dsn, Dsn::BAD_ADDRESS);
    }
}
