//! The SMTP server side (RFC 5321): `sendmail -bs` on stdin/stdout, and the listener the
//! daemon runs on `smtpd_port`. Split by the nouns of the RFC, as lettre's client is:
//!
//! | module | its job |
//! |---|---|
//! | [`anvil`] | per-client connection, message and recipient counts and rates |
//! | [`command`] | parse command lines and their ESMTP parameters |
//! | [`reply`] | the replies, worded as Postfix's smtpd words them |
//! | [`session`] | the state machine of one session, limits, logging |
//! | [`data`] | the DATA section: final dot, dot-unstuffing, streaming |
//! | [`connection`] | buffered input, batched replies (PIPELINING), STARTTLS, deadlines |
//! | [`relay`] | who may send where: `mydestination`, `relay_domains`, `mynetworks` |
//! | [`restrictions`] | `smtpd_relay_restrictions`, `smtpd_recipient_restrictions` |
//! | [`auth`] | the AUTH command, checked by Dovecot ([`crate::sasl`]) |
//! | [`features`] | what the listener's sessions have and `sendmail -bs` does without |
//! | [`local_recipients`] | `local_recipient_maps`: unknown local users refused at RCPT |
//! | [`listener`] | sockets, accept threads, the session cap |
//! | [`sessions`] | the process that serves the daemon's sockets as `mail_owner` |
//! | [`tls`] | the server certificate |
//!
//! Accepted mail is written by [`crate::cleanup`], the path every new message takes,
//! into `maildrop/`. The listener's sessions run in their own process without root
//! ([`sessions`]); the daemon only binds the sockets.

pub mod anvil;
pub mod auth;
pub mod authres;
pub mod command;
pub mod connection;
pub mod data;
pub mod features;
pub mod listener;
pub mod local_recipients;
pub mod relay;
pub mod reply;
pub mod restrictions;
pub mod session;
pub mod sessions;
pub mod smtps;
pub mod tls;

use std::io::{Read, Write};
use std::sync::Arc;

use crate::cleanup::Settings;
use crate::config::Config;
use crate::log::Log;
use crate::queue::Queue;
use crate::sysexits::{Error, Result};
use connection::{Connection, Transport};
use features::{Features, ListenerFeatures, StdioFeatures};
pub use listener::Listeners;
use local_recipients::LocalRecipients;
use relay::{Network, RelayPolicy};
use restrictions::Restrictions;
use session::{BareNewline, Client, Server};

/// `sendmail -bs`: one SMTP session on `input`/`output` as the invoking user `uid`, who
/// may send to any domain (a local submission is trusted, as in Postfix). Returns after
/// QUIT or the end of input; protocol errors are answered, not returned.
pub fn run_stdio(config: &Config, uid: u32, input: impl Read, output: impl Write) -> Result<()> {
    let queue = Queue::from_config(config)?;
    let log = Arc::new(Log::from_config(config, "smtpd"));
    let server = stdio_server(config, queue, log)?;
    let mut conn = Connection::new(Transport::Pipe {
        input: Box::new(input),
        output: Box::new(output),
    });
    // A local user is not counted per client (Postfix's stand-alone mode is not either).
    session::run(&server, Client::local_user(uid), None, &mut conn);
    Ok(())
}

/// Which sessions a [`Server`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `sendmail -bs`: no STARTTLS, no AUTH, no restrictions.
    Stdio,
    /// The listener on `smtpd_port`.
    Smtp,
    /// The listener on `submission_port`: Postfix's master.cf `submission` entry.
    Submission,
    /// The listener on `smtps_port`: the submission service with TLS from the first
    /// byte (RFC 8314's "submissions"; [`smtps`]).
    Smtps,
}

impl Service {
    /// The service name in log lines, as master.cf names Postfix's services.
    pub fn name(self) -> &'static str {
        match self {
            Service::Stdio => "sendmail",
            Service::Smtp => "smtp",
            Service::Submission => "submission",
            Service::Smtps => smtps::SERVICE,
        }
    }

    /// Whether it takes mail only from logged-in clients (Postfix's master.cf
    /// `submission` and `submissions` entries): AUTH on whatever
    /// `smtpd_sasl_auth_enable` says, required before MAIL, and the one thing that
    /// lets a client send anywhere.
    pub fn is_submission(self) -> bool {
        matches!(self, Service::Submission | Service::Smtps)
    }
}

/// Reads everything a listener's session of `service` needs from `main.cf` once.
pub(crate) fn server_from_config(
    config: &Config,
    queue: Queue,
    log: Arc<Log>,
    service: Service,
) -> Result<Server> {
    let common = Common::from_config(config, queue, log)?;
    let log = &common.log;
    let (tls, tls_required) = match service {
        // SMTPS loads its certificate itself, whatever the STARTTLS settings say
        // ([`smtps::server`]): not twice, and without their warnings again.
        Service::Stdio | Service::Smtps => (None, false),
        Service::Smtp => tls_from_config(config, log, None)?,
        // -o smtpd_tls_security_level=encrypt, whatever main.cf says.
        Service::Submission => tls_from_config(config, log, Some("encrypt"))?,
    };
    let mut restrictions = match service {
        // Never read for a local submission (trusted, as in Postfix): no warnings there.
        Service::Stdio => Restrictions {
            relay: Vec::new(),
            recipient: Vec::new(),
        },
        _ => Restrictions::from_config(config, &mut |w| log.warning(&w))?,
    };
    let sasl = match service {
        Service::Stdio => None,
        Service::Smtp => crate::sasl::SaslSettings::from_config(config, &mut |w| log.warning(&w))?,
        Service::Submission | Service::Smtps => {
            crate::sasl::SaslSettings::for_submission(config, &mut |w| log.warning(&w))?
        }
    };
    let mut tls_auth_only = config.boolean("smtpd_tls_auth_only")? || tls_required;
    if service.is_submission() {
        // -o smtpd_sasl_auth_enable=yes -o smtpd_tls_auth_only=yes
        // -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
        // (on SMTPS every session is encrypted before its first command, so AUTH is
        // offered from the first EHLO).
        tls_auth_only = true;
        restrictions = Restrictions {
            relay: Vec::new(),
            recipient: vec![
                restrictions::Restriction::PermitSaslAuthenticated,
                restrictions::Restriction::Reject,
            ],
        };
    }
    common.server(config, service, tls_required, tls_auth_only, || {
        Ok(ListenerFeatures {
            tls,
            restrictions,
            sasl,
            authentication_results: authres::AuthResults::from_config(config)?.map(Arc::new),
        })
    })
}

/// Reads what the session of `sendmail -bs` needs from `main.cf`: the listener's
/// settings but for its [`features`], which a local submission never uses.
fn stdio_server(config: &Config, queue: Queue, log: Arc<Log>) -> Result<Server<StdioFeatures>> {
    let common = Common::from_config(config, queue, log)?;
    // Read as the listener reads them, so that a value that would stop it stops
    // `sendmail -bs` too, as it always has; their values do not matter here.
    let tls_auth_only = config.boolean("smtpd_tls_auth_only")?;
    common.server(config, Service::Stdio, false, tls_auth_only, || {
        config.boolean("smtpd_authentication_results")?;
        Ok(StdioFeatures)
    })
}

/// What every server reads first: the settings shared with `sendmail`, who may relay,
/// who is a local recipient.
struct Common {
    settings: Settings,
    relay: RelayPolicy,
    local_recipients: LocalRecipients,
    queue: Queue,
    log: Arc<Log>,
}

impl Common {
    fn from_config(config: &Config, queue: Queue, log: Arc<Log>) -> Result<Common> {
        let settings = Settings::from_config(config)?;
        let relay = RelayPolicy::from_config(config, &mut |w| log.warning(&w))?;
        let local_recipients = LocalRecipients::from_config(config, &mut |w| log.warning(&w))?;
        Ok(Common {
            settings,
            relay,
            local_recipients,
            queue,
            log,
        })
    }

    /// The server of `service`, with the rest of the session limits read from `main.cf`
    /// and, last, its `features`.
    fn server<F: Features>(
        self,
        config: &Config,
        service: Service,
        tls_required: bool,
        tls_auth_only: bool,
        features: impl FnOnce() -> Result<F>,
    ) -> Result<Server<F>> {
        let Common {
            settings,
            relay,
            local_recipients,
            queue,
            log,
        } = self;
        let bare_newline = config.get("smtpd_forbid_bare_newline")?;
        let bare_newline = BareNewline::parse(&bare_newline).ok_or_else(|| {
            Error::config(format!(
                "smtpd_forbid_bare_newline: unknown value \"{bare_newline}\" (normalize, note, reject, no)"
            ))
        })?;
        let bare_newline_reject_code = config.number("smtpd_forbid_bare_newline_reject_code")?;
        let bare_newline_reject_code = u16::try_from(bare_newline_reject_code)
            .ok()
            .filter(|code| (500..600).contains(code))
            .ok_or_else(|| {
                Error::config(format!(
                    "smtpd_forbid_bare_newline_reject_code: {bare_newline_reject_code} is not a 5XX code"
                ))
            })?;
        let bare_newline_exclusions =
            networks(config, "smtpd_forbid_bare_newline_exclusions", &relay, &log)?;
        let count = |name: &str| -> Result<usize> {
            Ok(usize::try_from(config.number(name)?).unwrap_or(usize::MAX))
        };
        // Each listener counts its own clients, under its own service name in the
        // warnings, as Postfix's anvil keys its counters by service.
        let (anvil, limit_exceptions) = match service {
            Service::Stdio => (None, Vec::new()),
            Service::Smtp | Service::Submission | Service::Smtps => (
                Some(anvil::Anvil::new(anvil_limits(config)?, service.name())),
                networks(config, "smtpd_client_event_limit_exceptions", &relay, &log)?,
            ),
        };
        Ok(Server {
            banner: config.get("smtpd_banner")?,
            // Never more than a queue file holds, whatever main.cf says.
            recipient_limit: count("smtpd_recipient_limit")?
                .clamp(1, crate::queue::envelope::MAX_RECIPIENTS),
            recipient_overshoot_limit: count("smtpd_recipient_overshoot_limit")?,
            hard_error_limit: count("smtpd_hard_error_limit")?.max(1),
            soft_error_limit: count("smtpd_soft_error_limit")?,
            junk_command_limit: count("smtpd_junk_command_limit")?,
            error_sleep: config.time("smtpd_error_sleep_time")?,
            line_length_limit: count("line_length_limit")?.max(512),
            timeout: config
                .time("smtpd_timeout")?
                .max(std::time::Duration::from_secs(1)),
            per_request_deadline: config.boolean("smtpd_per_request_deadline")?,
            min_data_rate: config.number("smtpd_min_data_rate")?,
            anvil,
            limit_exceptions,
            settings,
            relay,
            tls_auth_only,
            auth_required: service.is_submission(),
            local_recipients,
            tls_required,
            queue,
            log,
            bare_newline,
            bare_newline_exclusions,
            bare_newline_reject_code,
            // Read last. Which sessions the listener's Authentication-Results applies to
            // is the session's to say (network clients outside mynetworks).
            features: features()?,
        })
    }
}

/// The per-client limits: `smtpd_client_*_limit` per `anvil_rate_time_unit`.
fn anvil_limits(config: &Config) -> Result<anvil::Limits> {
    let limit =
        |name: &str| -> Result<u32> { Ok(u32::try_from(config.number(name)?).unwrap_or(u32::MAX)) };
    Ok(anvil::Limits {
        connection_count: limit("smtpd_client_connection_count_limit")?,
        connection_rate: limit("smtpd_client_connection_rate_limit")?,
        message_rate: limit("smtpd_client_message_rate_limit")?,
        recipient_rate: limit("smtpd_client_recipient_rate_limit")?,
        // A window of no time would count nothing.
        unit: config
            .time("anvil_rate_time_unit")?
            .max(std::time::Duration::from_secs(1)),
        ipv4_prefix: u8::try_from(config.number("smtpd_client_ipv4_prefix_length")?)
            .unwrap_or(u8::MAX)
            .min(32),
        ipv6_prefix: u8::try_from(config.number("smtpd_client_ipv6_prefix_length")?)
            .unwrap_or(u8::MAX)
            .min(128),
        max_clients: anvil::MAX_CLIENTS,
    })
}

/// A list of clients as in `mynetworks` (`smtpd_forbid_bare_newline_exclusions`,
/// `smtpd_client_event_limit_exceptions`). `$mynetworks` names the computed list too
/// when `mynetworks` itself is empty (its expansion is then empty text); entries that
/// are not networks are skipped with a warning.
fn networks(config: &Config, name: &str, relay: &RelayPolicy, log: &Log) -> Result<Vec<Network>> {
    let mut nets = Vec::new();
    let raw = config
        .raw(name)
        .map(str::to_string)
        .or_else(|| config.default_text(name))
        .unwrap_or_default();
    if ["$mynetworks", "${mynetworks}", "$(mynetworks)"]
        .iter()
        .any(|var| raw.contains(var))
    {
        nets.extend(relay.mynetworks.iter().copied());
    }
    for entry in config.list(name)? {
        match Network::parse(&entry) {
            Some(net) => nets.push(net),
            None => log.warning(&format!(
                "{name}: not an address or network, ignoring \"{entry}\""
            )),
        }
    }
    Ok(nets)
}

/// `smtpd_tls_security_level` (or `level`, a service's own): `none` is off; `may` and
/// `encrypt` need the certificate.
/// Empty means `may` when a certificate is configured: whoever sets
/// `smtpd_tls_cert_file` wants STARTTLS (Postfix would also need the level set).
/// A certificate that does not load is a warning; with `encrypt`, mail is then refused
/// rather than taken in plain text.
fn tls_from_config(
    config: &Config,
    log: &Log,
    level: Option<&str>,
) -> Result<(Option<Arc<rustls::ServerConfig>>, bool)> {
    let level = match level {
        Some(level) => level.to_string(),
        None => config.get("smtpd_tls_security_level")?.to_ascii_lowercase(),
    };
    let (wanted, required) = match level.as_str() {
        "" => (!config.get("smtpd_tls_cert_file")?.is_empty(), false),
        "none" => (false, false),
        "may" => (true, false),
        "encrypt" => (true, true),
        other => {
            log.warning(&format!(
                "smtpd_tls_security_level: unknown level \"{other}\", STARTTLS is off"
            ));
            (false, false)
        }
    };
    if !wanted {
        return Ok((None, false));
    }
    match tls::from_config(config)? {
        Ok(tls) => Ok((Some(tls), required)),
        Err(tls::TlsLoadError::NoCertFile) => {
            log.warning(
                "smtpd_tls_security_level is set but smtpd_tls_cert_file is empty: STARTTLS is off",
            );
            Ok((None, required))
        }
        Err(why) => {
            log.warning(&format!(
                "cannot load TLS certificate: {why}; STARTTLS is off"
            ));
            Ok((None, required))
        }
    }
}
