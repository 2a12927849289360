//! What a session over the network has and `sendmail -bs` does without: STARTTLS, AUTH,
//! the relay restrictions and the `Authentication-Results:` header.
//!
//! A [`Server`](super::session::Server) and its sessions are generic over [`Features`]:
//! the listener's sessions run with [`ListenerFeatures`], `sendmail -bs` with
//! [`StdioFeatures`], which has none of them. Nothing of rustls, the Dovecot client or
//! mail-auth (SPF, DKIM and DMARC with their DNS resolver and async runtime) is then
//! reachable from `sendmail -bs`, so the set-gid `sendmail` does not carry that code: a
//! smaller program to trust, and one that starts faster (fewer pages to relocate and map
//! at each of the thousands of submissions a busy host makes).

use std::io;
use std::sync::Arc;

use rustls::ServerConfig;

use super::auth::{self, Exchange, Peer};
use super::authres::{self, AuthResults, Envelope};
use super::connection::Connection;
use super::relay::RelayPolicy;
use super::reply::Reply;
use super::restrictions::{Facts, Restrictions};
use crate::log::Log;
use crate::sasl::SaslSettings;

/// The parts of a session only the listener has. A session asks before it uses one:
/// each method of a part that is off (STARTTLS when [`offers_tls`](Self::offers_tls) is
/// false, AUTH when [`sasl`](Self::sasl) is `None`, the header when
/// [`authentication_results`](Self::authentication_results) is false) is not called.
///
/// Each default is what a session without that part does: [`StdioFeatures`] keeps them
/// all, and [`ListenerFeatures`] falls back on them for a part main.cf leaves off.
pub trait Features {
    /// STARTTLS is offered: a certificate is loaded.
    fn offers_tls(&self) -> bool {
        false
    }

    /// The TLS handshake, once `220 Ready to start TLS` has been flushed.
    fn start_tls(&self, _conn: &mut Connection<'_>) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "STARTTLS is not offered",
        ))
    }

    /// AUTH's settings when `smtpd_sasl_auth_enable` is on.
    fn sasl(&self) -> Option<&SaslSettings> {
        None
    }

    /// The mechanisms AUTH offers now; `tls`: the session is encrypted.
    fn mechanisms(&self, _tls: bool, _log: &Log) -> Vec<String> {
        Vec::new()
    }

    /// Runs `AUTH mechanism [initial-response]` to its end.
    fn authenticate(
        &self,
        _log: &Log,
        _peer: &Peer<'_>,
        _mechanism: &str,
        _initial: Option<&str>,
        _conn: &mut Connection<'_>,
    ) -> Exchange {
        Exchange::Reply(auth::not_enabled(), None)
    }

    /// `smtpd_relay_restrictions` then `smtpd_recipient_restrictions` for one RCPT: the
    /// refusal, if any.
    fn check_recipient(&self, _facts: &Facts<'_>, _relay: &RelayPolicy) -> Option<Reply> {
        None
    }

    /// An `Authentication-Results:` header is added to mail from outside `mynetworks`.
    fn authentication_results(&self) -> bool {
        false
    }

    /// `received` (the message text, LF line endings) with the `Authentication-Results:`
    /// fields that claim to be ours removed and ours on top.
    fn authenticated(&self, received: Vec<u8>, _envelope: &Envelope<'_>) -> Vec<u8> {
        received
    }
}

/// The listener's sessions (`smtpd_port`, `submission_port`, `smtps_port`).
pub struct ListenerFeatures {
    /// STARTTLS is offered when this is set; SMTPS sessions start with it.
    pub tls: Option<Arc<ServerConfig>>,
    /// `smtpd_relay_restrictions`, `smtpd_recipient_restrictions`.
    pub restrictions: Restrictions,
    /// AUTH through Dovecot (`smtpd_sasl_auth_enable`).
    pub sasl: Option<SaslSettings>,
    /// The `Authentication-Results:` header of mail from outside `mynetworks` (unless
    /// `smtpd_authentication_results = no`).
    pub authentication_results: Option<Arc<AuthResults>>,
}

impl Features for ListenerFeatures {
    fn offers_tls(&self) -> bool {
        self.tls.is_some()
    }

    fn start_tls(&self, conn: &mut Connection<'_>) -> io::Result<()> {
        match &self.tls {
            Some(config) => conn.start_tls(Arc::clone(config)),
            None => StdioFeatures.start_tls(conn),
        }
    }

    fn sasl(&self) -> Option<&SaslSettings> {
        self.sasl.as_ref()
    }

    fn mechanisms(&self, tls: bool, log: &Log) -> Vec<String> {
        match &self.sasl {
            Some(sasl) => sasl.mechanisms(tls, &mut |w| log.warning(&w)),
            None => StdioFeatures.mechanisms(tls, log),
        }
    }

    fn authenticate(
        &self,
        log: &Log,
        peer: &Peer<'_>,
        mechanism: &str,
        initial: Option<&str>,
        conn: &mut Connection<'_>,
    ) -> Exchange {
        match &self.sasl {
            Some(sasl) => auth::exchange(sasl, log, peer, mechanism, initial, conn),
            None => StdioFeatures.authenticate(log, peer, mechanism, initial, conn),
        }
    }

    fn check_recipient(&self, facts: &Facts<'_>, relay: &RelayPolicy) -> Option<Reply> {
        self.restrictions.check_recipient(facts, relay)
    }

    fn authentication_results(&self) -> bool {
        self.authentication_results.is_some()
    }

    fn authenticated(&self, received: Vec<u8>, envelope: &Envelope<'_>) -> Vec<u8> {
        let Some(auth) = &self.authentication_results else {
            return StdioFeatures.authenticated(received, envelope);
        };
        let message = authres::remove_forged(&received, auth.hostname());
        drop(received);
        let mut text = auth.header(&message, envelope).into_bytes();
        text.extend_from_slice(&message);
        text
    }
}

/// `sendmail -bs`: a local user's submission over a pipe, trusted as Postfix's
/// stand-alone mode is. No STARTTLS (the pipe is not a network), no AUTH (the user is
/// known), no restrictions and no `Authentication-Results:` (only mail from the network
/// is judged).
pub struct StdioFeatures;

impl Features for StdioFeatures {}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    /// `sendmail -bs` has none of the listener's features, whatever main.cf configures
    /// for the listener: no STARTTLS, no AUTH, no TLS requirement, and not a word about
    /// the certificate that is not there.
    #[test]
    fn stdio_sessions_have_no_listener_features() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("maillog");
        let config = Config::from_text(
            &format!(
                "myhostname = mx.example\nqueue_directory = {}\nmaillog_file = {}\n\
                 smtpd_tls_cert_file = /nonexistent/cert.pem\n\
                 smtpd_tls_security_level = encrypt\nsmtpd_sasl_auth_enable = yes\n\
                 smtpd_authentication_results = yes\n",
                dir.path().display(),
                log.display()
            ),
            Path::new("/nonexistent/main.cf"),
        );
        let input = b"EHLO client\r\nSTARTTLS\r\nAUTH PLAIN AGEAYg==\r\n\
                      MAIL FROM:<a@example.org> AUTH=<>\r\nMAIL FROM:<a@example.org>\r\nQUIT\r\n";
        let mut output = Vec::new();
        super::super::run_stdio(&config, 1000, &input[..], &mut output).unwrap();
        let text = String::from_utf8(output).unwrap();
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                "220 mx.example ESMTP mailroom",
                "250-mx.example",
                "250-PIPELINING",
                "250-SIZE 10240000",
                "250-VRFY",
                "250-ENHANCEDSTATUSCODES",
                "250 8BITMIME",
                "502 5.5.1 Error: command not implemented",
                "503 5.5.1 Error: authentication not enabled",
                "555 5.5.4 Unsupported option: AUTH",
                "250 2.1.0 Ok",
                "221 2.0.0 Bye",
            ]
        );
        let logged = std::fs::read_to_string(&log).unwrap();
        assert!(!logged.contains("warning"), "{logged}");
    }
}
