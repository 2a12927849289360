//! The SMTPS listener (`smtps_port`, usually 465): mail submission over TLS from the
//! first byte (RFC 8314's "submissions": implicit TLS), as Postfix's master.cf
//! `submissions` (formerly `smtps`) entry runs smtpd with `smtpd_tls_wrappermode = yes`,
//! `smtpd_sasl_auth_enable = yes` and only `permit_sasl_authenticated`. Its sockets are
//! bound by the daemon with the others ([`super::listener::configured_addresses`]) and
//! told apart in the sessions process by their port. A session on one runs the
//! handshake, then goes on as a session of the submission port does after STARTTLS: no
//! STARTTLS offered, AUTH offered and required before MAIL (`530 5.7.0 Authentication
//! required`), a logged-in client sends to any domain, `ESMTPSA` in `Received:`. Its
//! log lines come from `$syslog_name/smtps/smtpd` and its client counts are those of
//! service `smtps`, as with Postfix's usual `-o syslog_name=postfix/smtps`.
//!
//! It needs `smtpd_tls_cert_file` (and `smtpd_tls_key_file`), whatever
//! `smtpd_tls_security_level` says, and `smtpd_sasl_type = dovecot`, whatever
//! `smtpd_sasl_auth_enable` says; without them it stays off with a warning (nobody could
//! send through it), and the plain listener is not affected.

use std::net::SocketAddr;
use std::sync::Arc;

use super::Service;
use super::connection::Connection;
use super::session::{Client, Server};
use crate::config::Config;
use crate::log::Log;
use crate::queue::Queue;
use crate::sysexits::{Error, Result};

/// The service name in log lines (`mailroom/smtps/smtpd[pid]`, through
/// [`Log::for_service`]) and client counts.
pub const SERVICE: &str = "smtps";

/// `smtps_port`: `None` when empty (the default: no SMTPS listener).
pub fn port(config: &Config) -> Result<Option<u16>> {
    let text = config.get("smtps_port")?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(Some(port)),
        _ => Err(Error::config(format!(
            "parameter smtps_port: not a port number: \"{text}\""
        ))),
    }
}

/// Why an SMTPS listener that `smtps_port` asks for cannot run, if it cannot: the
/// words of the warning in the log and of `mailroom check`.
pub fn unusable(config: &Config) -> Result<Option<String>> {
    let Some(port) = port(config)? else {
        return Ok(None);
    };
    Ok(usable(config, port)?.err())
}

/// The certificate and key of a listener on `port`, or why it cannot run. The one
/// place that loads them for SMTPS, so that [`server`] reads them once.
fn usable(
    config: &Config,
    port: u16,
) -> Result<std::result::Result<Arc<rustls::ServerConfig>, String>> {
    if config.get("smtpd_port")?.trim() == port.to_string() {
        return Ok(Err(format!(
            "smtps_port = {port} is also smtpd_port: the SMTPS listener is off"
        )));
    }
    let tls = match load(config) {
        Ok(tls) => tls,
        Err(why) => {
            return Ok(Err(format!(
                "smtps_port = {port}: {why}: the SMTPS listener is off"
            )));
        }
    };
    // Submission takes mail only from logged-in clients: without AUTH, nobody could
    // ever send through it.
    Ok(match super::listener::submission_auth_usable(config) {
        Ok(()) => Ok(tls),
        Err(why) => Err(format!(
            "smtps_port = {port}: {why} and submission requires AUTH: the SMTPS listener is off"
        )),
    })
}

/// The certificate and key, as the SMTPS sessions use them.
fn load(config: &Config) -> std::result::Result<Arc<rustls::ServerConfig>, String> {
    match super::tls::from_config(config).map_err(|e| e.to_string())? {
        Ok(tls) => Ok(tls),
        Err(e @ super::tls::TlsLoadError::NoCertFile) => Err(e.to_string()),
        Err(e) => Err(format!("cannot load TLS certificate: {e}")),
    }
}

/// The addresses of the SMTPS listener (`smtps_port` × `inet_interfaces` ×
/// `inet_protocols`): none when `smtps_port` is empty, or (with a warning to `log`)
/// when the listener cannot run.
pub fn addresses(config: &Config, log: &Log) -> Result<Vec<SocketAddr>> {
    let Some(port) = port(config)? else {
        return Ok(Vec::new());
    };
    if let Some(why) = unusable(config)? {
        log.warning(&why);
        return Ok(Vec::new());
    }
    let (addrs, _) = super::listener::bind_addresses(
        &config.list("inet_interfaces")?,
        &config.list("inet_protocols")?,
        port,
    );
    Ok(addrs)
}

/// The server for SMTPS sessions: the submission service's settings with the
/// certificate always loaded, its own log and its own client counts. Reads the key:
/// call it while still root. `None` when there is no usable SMTPS listener (its
/// sockets are then not served: the daemon does not bind them either).
pub fn server(config: &Config, queue: Queue, log: Arc<Log>) -> Result<Option<Server>> {
    let Some(port) = port(config)? else {
        return Ok(None);
    };
    // Unusable: the daemon has said why ([`addresses`]) and bound nothing.
    let Ok(tls) = usable(config, port)? else {
        return Ok(None);
    };
    let mut server = super::server_from_config(config, queue, log, Service::Smtps)?;
    server.features.tls = Some(tls);
    // Already encrypted: nothing is waiting for STARTTLS.
    server.tls_required = false;
    Ok(Some(server))
}

/// The TLS handshake that opens an SMTPS connection (within `smtpd_timeout`): whether
/// the session may go on. A client that cannot complete it (a plain-text client, a TLS
/// version or cipher in common with nobody) is logged as Postfix logs it; the caller
/// closes the connection.
pub(super) fn handshake(server: &Server, client: &Client, conn: &mut Connection) -> bool {
    let Some(tls) = server.features.tls.clone() else {
        return false;
    };
    let Err(e) = conn.start_tls(tls) else {
        return true;
    };
    let log = &server.log;
    log.info(&format!("connect from {client}"));
    log.warning(&format!("TLS handshake failed from {client}: {e}"));
    log.info(&format!("lost connection after CONNECT from {client}"));
    log.info(&format!("disconnect from {client} commands=0/0"));
    false
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(text: &str) -> Config {
        Config::from_text(text, Path::new("/nonexistent/main.cf"))
    }

    #[test]
    fn off_unless_asked_for_and_usable() {
        assert_eq!(port(&config("")).unwrap(), None);
        assert_eq!(port(&config("smtps_port = 465")).unwrap(), Some(465));
        assert!(port(&config("smtps_port = smtps")).is_err());
        assert!(port(&config("smtps_port = 0")).is_err());
        assert_eq!(unusable(&config("")).unwrap(), None);
        assert_eq!(
            unusable(&config("smtps_port = 465")).unwrap().as_deref(),
            Some("smtps_port = 465: smtpd_tls_cert_file is empty: the SMTPS listener is off")
        );
        let why = unusable(&config(
            "smtps_port = 465\nsmtpd_tls_cert_file = /nonexistent/cert.pem",
        ))
        .unwrap()
        .unwrap();
        assert!(
            why.starts_with("smtps_port = 465: cannot load TLS certificate: /nonexistent/cert.pem"),
            "{why}"
        );
        assert_eq!(
            unusable(&config("smtps_port = 25\nsmtpd_port = 25"))
                .unwrap()
                .as_deref(),
            Some("smtps_port = 25 is also smtpd_port: the SMTPS listener is off")
        );
        let log = Log::discard();
        assert!(
            addresses(&config("smtps_port = 465"), &log)
                .unwrap()
                .is_empty()
        );
    }
}
