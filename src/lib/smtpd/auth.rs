//! The AUTH command (RFC 4954) on the server side: the exchange between the SMTP client
//! and Dovecot, worded as Postfix's smtpd_sasl_glue.c words it. The client's base64
//! goes to Dovecot unread, so no password is ever decoded, logged or kept here.

use std::net::IpAddr;

use super::connection::{Connection, Line, is_timeout};
use super::reply::Reply;
use crate::log::Log;
use crate::sasl::dovecot::{self, Outcome, Request};
use crate::sasl::{SaslSettings, printable};

/// Postfix's `smtpd_sasl_resp_limit`: the longest response line a client may send.
pub const RESPONSE_LIMIT: usize = 12288;

/// Who logged in, for restrictions, the log and the `Received:` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// As Dovecot names the user (printable, bounded).
    pub user: String,
    /// The mechanism, upper case.
    pub method: String,
}

/// How an exchange ended.
pub enum Exchange {
    /// A reply to send: success (with the login), failure or refusal.
    Reply(Reply, Option<Login>),
    /// The client went away or timed out in the middle.
    Lost { timeout: bool },
}

/// What the session knows that Dovecot is told.
pub struct Peer<'a> {
    /// `unknown[192.0.2.1]`, for warnings.
    pub name: &'a str,
    pub local_ip: Option<IpAddr>,
    pub remote_ip: Option<IpAddr>,
    pub tls: bool,
}

/// The reply to AUTH where it is not offered.
pub fn not_enabled() -> Reply {
    Reply::new(503, "5.5.1 Error: authentication not enabled")
}

/// Runs `AUTH mechanism [initial-response]` to its end.
pub fn exchange(
    sasl: &SaslSettings,
    log: &Log,
    peer: &Peer<'_>,
    mechanism: &str,
    initial: Option<&str>,
    conn: &mut Connection<'_>,
) -> Exchange {
    let method = printable(mechanism, 64).to_ascii_uppercase();
    let offered = sasl.mechanisms(peer.tls, &mut |w| log.warning(&w));
    if !offered.contains(&method) {
        return failed(log, peer, &method, &invalid_mechanism(&method), None, false);
    }
    if initial.is_some_and(|r| !crate::sasl::is_base64(r)) {
        let why = "Invalid base64 data in initial response";
        return failed(log, peer, &method, why, None, false);
    }
    let mut client = match dovecot::connect(&sasl.path) {
        Ok(client) => client,
        Err(e) => return lost_dovecot(sasl, log, peer, &method, &e),
    };
    // The list may have changed since it was cached.
    if !sasl
        .offered(client.mechanisms(), peer.tls)
        .contains(&method)
    {
        return failed(log, peer, &method, &invalid_mechanism(&method), None, false);
    }
    let request = Request {
        mechanism: &method,
        service: &sasl.service,
        secured: peer.tls,
        local_ip: peer.local_ip,
        remote_ip: peer.remote_ip,
        initial_response: initial,
    };
    let mut outcome = client.start(&request);
    let mut line = Vec::with_capacity(256);
    loop {
        match outcome {
            Err(e) => return lost_dovecot(sasl, log, peer, &method, &e),
            Ok(Outcome::Success { user }) => {
                let login = Login { user, method };
                return Exchange::Reply(
                    Reply::new(235, "2.7.0 Authentication successful"),
                    Some(login),
                );
            }
            Ok(Outcome::Failure {
                user,
                reason,
                temporary,
            }) => {
                let reason = reason.unwrap_or_else(|| "(reason unavailable)".into());
                return failed(log, peer, &method, &reason, user.as_deref(), temporary);
            }
            Ok(Outcome::Continue(challenge)) => {
                conn.send(&Reply::new(334, challenge));
                match conn.read_line(&mut line, RESPONSE_LIMIT) {
                    Ok(Line::Complete) => {}
                    Ok(Line::TooLong) => {
                        return Exchange::Reply(
                            Reply::new(500, "5.5.6 SASL response limit exceeded"),
                            None,
                        );
                    }
                    Ok(Line::Eof) => return Exchange::Lost { timeout: false },
                    Err(e) => {
                        return Exchange::Lost {
                            timeout: is_timeout(&e),
                        };
                    }
                }
                let response = String::from_utf8_lossy(&line);
                if response == "*" {
                    log.warning(&format!(
                        "{}: SASL {method} authentication aborted",
                        peer.name
                    ));
                    return Exchange::Reply(Reply::new(501, "5.7.0 Authentication aborted"), None);
                }
                if !crate::sasl::is_base64(&response) {
                    let why = "Invalid base64 data in continued response";
                    return failed(log, peer, &method, why, None, false);
                }
                outcome = client.respond(&response);
            }
        }
    }
}

fn invalid_mechanism(method: &str) -> String {
    format!("Invalid authentication mechanism: '{method}'")
}

/// Postfix's warning and reply for a failed login: 535, or 454 when Dovecot says the
/// failure is its own (RFC 4954 section 6; Postfix answers 535 to those too, which
/// makes a mail client ask its user for a password that was right).
fn failed(
    log: &Log,
    peer: &Peer<'_>,
    method: &str,
    reason: &str,
    user: Option<&str>,
    temporary: bool,
) -> Exchange {
    log.warning(&format!(
        "{}: SASL {method} authentication failed: {reason}, sasl_username={}",
        peer.name,
        user.unwrap_or("(unavailable)")
    ));
    let reply = if temporary {
        Reply::new(
            454,
            format!("4.7.0 Temporary authentication failure: {reason}"),
        )
    } else {
        Reply::new(535, format!("5.7.8 Error: authentication failed: {reason}"))
    };
    Exchange::Reply(reply, None)
}

/// Dovecot could not be reached or broke off: nothing was judged, so the client is
/// told to try again later (454), with Postfix's wording, which fail2ban's Postfix
/// filter knows not to count as a password guess.
fn lost_dovecot(
    sasl: &SaslSettings,
    log: &Log,
    peer: &Peer<'_>,
    method: &str,
    e: &dovecot::Error,
) -> Exchange {
    log.warning(&sasl.connect_failed(e));
    failed(
        log,
        peer,
        method,
        "Connection lost to authentication server",
        None,
        true,
    )
}
