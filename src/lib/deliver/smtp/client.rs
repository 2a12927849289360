//! One SMTP session with one server address, spoken by lettre's low-level client
//! (`SmtpConnection`): greeting and EHLO, STARTTLS, AUTH, then one transaction (MAIL
//! FROM, a RCPT TO per recipient, DATA) and QUIT, or, when the context has a connection
//! cache and the server took the message, no QUIT: the connection waits in the cache
//! (`cache`) and the next session with the same server starts at MAIL FROM. Each RCPT
//! TO has its own reply, so each recipient gets its own outcome. A server that offers
//! PIPELINING gets MAIL FROM, the RCPT TOs and DATA in one write (see [`pipelined`]).
//!
//! What lettre does not offer, and how this module copes:
//!
//! - `connect` reads the greeting and sends EHLO in one call, under one time limit. The
//!   limit is the smaller of `smtp_connect_timeout` and `smtp_helo_timeout`; a refusal
//!   is told apart by its code (see [`refused`]); a time-out or lost connection in that
//!   call is reported as happening during the greeting.
//! - There is no HELO fallback: a server that refuses EHLO defers the mail.
//! - lettre's `ServerInfo` knows STARTTLS, 8BITMIME, SMTPUTF8 and AUTH, but not SIZE or
//!   DSN, and it keeps no EHLO reply. So once TLS is settled, EHLO is sent once more
//!   through lettre's `Ehlo` command and its reply read for SIZE and DSN (one more round
//!   trip per connection; RFC 5321 allows a second EHLO).
//! - A refused STARTTLS makes lettre close the connection; with `may` the delivery is
//!   retried over a new connection in plain text, as after a failed handshake.
//! - With `smtp_tls_wrappermode` the connection is TLS from the first byte (lettre's
//!   implicit TLS): the handshake runs as the greeting is read, STARTTLS is never sent,
//!   and a failed handshake is never retried in plain text.
//! - lettre does not say which TLS version and cipher it negotiated; `negotiated`
//!   finds out for the log line.

use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use lettre::Address;
use lettre::transport::smtp::Error as LettreError;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{SmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt};
use lettre::transport::smtp::extension::{
    ClientId, Extension, MailBodyParameter, MailParameter, RcptParameter,
};

use super::SmtpContext;
use super::auth;
use super::cache;
use super::ehlo::Features;
use super::negotiated;
use super::reply::{Peer, Reply, SmtpError, Stage, io_source};
use super::route::Target;
use super::tls::Level;
use crate::address;
use crate::deliver::{Dsn, Outcome};
use crate::queue::Recipient;

/// What one session is asked to deliver.
pub struct Job<'a> {
    /// Envelope sender; empty for `<>`.
    pub sender: &'a str,
    pub ret: &'a str,
    pub envid: &'a str,
    pub recipients: Vec<&'a Recipient>,
    /// The message as `body::load` made it.
    pub wire: &'a [u8],
    /// The size of the message in the queue, for SIZE.
    pub size: u64,
    pub eight_bit: bool,
    /// The next hop as written (`[relay.example]:587` or the recipient domain), the
    /// first key for the password maps.
    pub nexthop: &'a str,
}

/// What a session decided: an outcome per recipient of the job (same order), `None` for
/// those it never got to, and why it stopped early, if it did.
pub struct Session {
    pub peer: Peer,
    pub results: Vec<Option<Outcome>>,
    pub failure: Option<SmtpError>,
}

/// Talks to one address. `try_tls` false is the plain-text retry after a failed
/// opportunistic handshake.
pub fn attempt(ctx: &SmtpContext, target: &Target, job: &Job, try_tls: bool) -> Session {
    let peer = Peer {
        host: target.host.clone(),
        ip: target.ip,
        port: target.port,
    };
    let mut results = vec![None; job.recipients.len()];
    let failure = converse(ctx, &peer, job, try_tls, &mut results).err();
    Session {
        peer,
        results,
        failure,
    }
}

/// A socket time limit; zero means "block forever" to the socket API, never ask that.
fn limit(timeout: Duration) -> Option<Duration> {
    Some(timeout.max(Duration::from_millis(1)))
}

fn converse(
    ctx: &SmtpContext,
    peer: &Peer,
    job: &Job,
    try_tls: bool,
    results: &mut [Option<Outcome>],
) -> Result<(), SmtpError> {
    let key = cache::Key {
        addr: SocketAddr::new(peer.ip, peer.port),
        host: peer.host.clone(),
        nexthop: job.nexthop.to_string(),
        try_tls,
    };
    if let Some(cached) = ctx.cached_connection(&key) {
        match reuse(ctx, peer, job, cached, &key, results) {
            Some(result) => return result,
            // The server had closed it: a new connection, as if none had been cached.
            None => results.fill(None),
        }
    }
    let opened = Instant::now();
    let (mut conn, fd) = open(ctx, peer, &key)?;
    let features = match session(&mut conn, ctx, peer, job, try_tls) {
        Ok(features) => features,
        Err(err) => {
            if goodbye(&err) {
                cache::quit(&mut conn, ctx.timeouts.quit);
            }
            return Err(err);
        }
    };
    let mut connection = cache::Connection {
        conn,
        fd,
        features,
        opened,
        uses: 0,
    };
    let result = transaction(
        &mut connection.conn,
        ctx,
        peer,
        job,
        &connection.features,
        results,
    );
    finish(ctx, key, connection, result)
}

/// Whether a session that ended with `err` says QUIT: one that ends by our choice (TLS
/// missing, message too large, AUTH failed) or a refusal does; one that broke has
/// nobody left to tell, and one that broke inside DATA must not have QUIT taken for
/// message text.
fn goodbye(err: &SmtpError) -> bool {
    matches!(err, SmtpError::Local { .. } | SmtpError::Said(..))
}

/// The next transaction on a cached connection. `None` when the connection turned out
/// to be closed before the server answered MAIL FROM (it closed it while we were about
/// to send, or answered 421): nothing was delivered, and a new connection must be tried,
/// never a deferral for a connection the server was entitled to close.
fn reuse(
    ctx: &SmtpContext,
    peer: &Peer,
    job: &Job,
    mut cached: cache::Connection,
    key: &cache::Key,
    results: &mut [Option<Outcome>],
) -> Option<Result<(), SmtpError>> {
    let result = transaction(&mut cached.conn, ctx, peer, job, &cached.features, results);
    // `uses` counts the transactions before this one, so this is the next.
    let conn_use = cached.uses + 1;
    for outcome in results.iter_mut().flatten() {
        outcome.conn_use = conn_use;
    }
    let stale = match &result {
        Err(SmtpError::Lost(Stage::Mail) | SmtpError::Timeout(Stage::Mail)) => true,
        Err(SmtpError::Malformed(Stage::Mail)) => true,
        Err(SmtpError::Said(reply, Stage::Mail)) => reply.code == 421,
        _ => false,
    };
    if stale && results.iter().all(Option::is_none) {
        return None;
    }
    Some(finish(ctx, key.clone(), cached, result))
}

/// After a transaction: a connection whose message the server accepted goes to the
/// cache (which may QUIT it instead); any other says goodbye, unless it broke.
fn finish(
    ctx: &SmtpContext,
    key: cache::Key,
    mut connection: cache::Connection,
    result: Result<Done, SmtpError>,
) -> Result<(), SmtpError> {
    connection.uses += 1;
    match &result {
        Ok(Done::Accepted) => ctx.keep_connection(key, connection),
        Ok(Done::Other) => cache::quit(&mut connection.conn, ctx.timeouts.quit),
        Err(err) if goodbye(err) => cache::quit(&mut connection.conn, ctx.timeouts.quit),
        Err(_) => {}
    }
    result.map(|_| ())
}

/// How a transaction ended without breaking the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    /// The server took the message: the connection can carry another.
    Accepted,
    /// Every recipient refused, DATA refused, or the message refused at its end: the
    /// connection is closed rather than reset (RSET) and reused.
    Other,
}

/// A new connection through the greeting and the first EHLO, with its socket (for the
/// cache's check that the server has not closed it).
fn open(
    ctx: &SmtpContext,
    peer: &Peer,
    key: &cache::Key,
) -> Result<(SmtpConnection, Option<RawFd>), SmtpError> {
    let t = &ctx.timeouts;
    let id = ClientId::Domain(ctx.helo_name.clone());
    // With `smtp_tls_wrappermode`, TLS from the first byte: lettre runs the handshake as
    // it reads the greeting, so the TLS parameters go in with the connection.
    let wrapper = match ctx.wrapper {
        true => Some(tls_parameters(ctx, peer)?),
        false => None,
    };
    negotiated::clear();
    // One limit for the TCP connection, the greeting and EHLO: lettre sets no other.
    let conn = SmtpConnection::connect(
        key.addr,
        limit(t.connect.min(t.helo)),
        &id,
        wrapper.as_ref(),
        None,
    )
    .map_err(|err| match wrapper.is_some() && tls_error(&err).is_some() {
        true => handshake_failure(ctx, peer, &err),
        false => refused(&err),
    })?;
    if conn.is_encrypted() {
        established(ctx, peer, &conn);
    }
    let sockets = set_nodelay(key.addr);
    let cached = ctx.cached_sockets();
    let mut new = sockets.into_iter().filter(|fd| !cached.contains(fd));
    // Ours is the one socket to that address the cache does not hold; if there were
    // more (never, in an agent), the check is skipped and MAIL FROM finds out.
    let fd = match (new.next(), new.next()) {
        (Some(fd), None) => Some(fd),
        _ => None,
    };
    Ok((conn, fd))
}

/// lettre writes the message and its final `CRLF . CRLF` in two writes and leaves
/// Nagle's algorithm on, so the final dot waits for the server's delayed ACK of the
/// message: 40 ms per message on Linux, up to 200 ms elsewhere (measured: 44 ms instead
/// of 2.5 ms for a small message on 127.0.0.1). lettre gives no access to its socket, so
/// this finds it among the process's descriptors by its peer address and sets
/// `TCP_NODELAY` (commands are written whole, so nothing is gained by Nagle). Best
/// effort: another socket connected to the same address is another SMTP client
/// connection of ours, for which the option is as right; without `/proc`, nothing
/// happens. Returns the sockets it found, among which the connection cache tells the
/// new connection's from those it holds.
fn set_nodelay(peer: SocketAddr) -> Vec<RawFd> {
    use std::os::fd::BorrowedFd;
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        // SAFETY: the descriptor was open a moment ago and is only queried and given a
        // socket option here; if another thread closed it since, the calls fail with
        // EBADF, and if the number was reused, the option does no harm.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        if socket.peer_addr().ok().and_then(|a| a.as_socket()) == Some(peer) {
            let _ = socket.set_tcp_nodelay(true);
            found.push(fd.as_raw_fd());
        }
    }
    found
}

/// Why `connect` failed: no TCP connection, a refused greeting or EHLO, or a greeting
/// that never came.
fn refused(err: &LettreError) -> SmtpError {
    // lettre has no predicate for its connection errors; its Display names the kind.
    if err.to_string().starts_with("Connection error")
        && let Some(io) = io_source(err)
    {
        return SmtpError::Connect(std::io::Error::new(io.kind(), io.to_string()));
    }
    match SmtpError::from_lettre(err, Stage::Greeting) {
        // The greeting and EHLO share one call: the code tells them apart. 500, 501,
        // 502 and 504 are what a server that does not know EHLO says (no greeting is
        // ever refused with them); anything else (421, 554) is a server that will not
        // talk to us, whichever of the two it refused.
        SmtpError::Said(reply, _) if matches!(reply.code, 500 | 501 | 502 | 504) => {
            SmtpError::EhloRefused(reply)
        }
        SmtpError::Said(reply, _) => SmtpError::Refused(reply),
        other => other,
    }
}

/// Everything after the greeting and EHLO and before the transaction: STARTTLS, EHLO
/// again, AUTH. Returns what the last EHLO offered.
fn session(
    conn: &mut SmtpConnection,
    ctx: &SmtpContext,
    peer: &Peer,
    job: &Job,
    try_tls: bool,
) -> Result<Features, SmtpError> {
    let t = &ctx.timeouts;
    let id = ClientId::Domain(ctx.helo_name.clone());
    if try_tls && !conn.is_encrypted() && ctx.tls.level != Level::None {
        if conn.can_starttls() && ctx.ehlo_discard.keeps("STARTTLS") {
            let _ = conn.set_timeout(limit(t.starttls));
            start_tls(conn, ctx, peer, &id)?;
        } else if ctx.tls.level.required() {
            return Err(SmtpError::Local {
                dsn: Dsn::NO_TLS,
                text: format!(
                    "TLS is required, but was not offered by host {}",
                    peer.name()
                ),
                permanent: false,
            });
        }
    }

    let _ = conn.set_timeout(limit(t.helo));
    let ehlo = conn
        .command(Ehlo::new(id))
        .map_err(|err| SmtpError::from_lettre(&err, Stage::Ehlo))?;
    let (features, discarded) = Features::from_ehlo(&ehlo, &ctx.ehlo_discard);
    if !discarded.is_empty() && ctx.ehlo_discard.logged() {
        ctx.log.info(&format!(
            "{}: discarding EHLO keywords: {}",
            peer.name(),
            discarded.join(" ")
        ));
    }

    if ctx.sasl.is_some() {
        authenticate(conn, ctx, peer, job, &features)?;
    }
    Ok(features)
}

/// STARTTLS, the handshake and EHLO again, all inside lettre's `starttls`.
fn start_tls(
    conn: &mut SmtpConnection,
    ctx: &SmtpContext,
    peer: &Peer,
    id: &ClientId,
) -> Result<(), SmtpError> {
    let params = tls_parameters(ctx, peer)?;
    negotiated::clear();
    let Err(err) = conn.starttls(&params, id) else {
        established(ctx, peer, conn);
        return Ok(());
    };
    if let SmtpError::Said(reply, _) = SmtpError::from_lettre(&err, Stage::Starttls) {
        // STARTTLS refused (lettre has closed the connection).
        if ctx.tls.level.required() {
            return Err(SmtpError::Local {
                dsn: Dsn::NO_TLS,
                text: format!(
                    "TLS is required, but host {} refused to start TLS: {}",
                    peer.name(),
                    reply.text()
                ),
                permanent: false,
            });
        }
        ctx.log.warning(&format!(
            "host {} refused to start TLS: {}; trying again without",
            peer.name(),
            reply.text()
        ));
        return Err(SmtpError::TlsHandshake { verify: false });
    }
    // lettre runs the handshake as it writes the next EHLO, so a connection lost or
    // stalled then is a failed handshake too: for `may` that means a retry in plain
    // text, as Postfix does.
    Err(handshake_failure(ctx, peer, &err))
}

/// lettre's TLS parameters for this server, per `smtp_tls_security_level`.
fn tls_parameters(ctx: &SmtpContext, peer: &Peer) -> Result<TlsParameters, SmtpError> {
    ctx.tls
        .parameters(&peer.host, peer.ip)
        .map_err(|e| SmtpError::Local {
            dsn: Dsn::CRYPTO_FAILURE,
            text: e.to_string(),
            permanent: false,
        })
}

/// The rustls error under a lettre error, if the TLS layer failed.
fn tls_error(err: &LettreError) -> Option<&rustls::Error> {
    io_source(err)
        .and_then(|io| io.get_ref())
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// Postfix's line once TLS is up: `Untrusted TLS connection established to
/// mx.example[192.0.2.1]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`.
/// "Verified" when the certificate was checked against the trusted roots and the
/// server's name (`verify`, `secure`); for `may` and `encrypt`, "Trusted" when it
/// chains to `smtp_tls_CAfile`, else "Untrusted" (always, without a CA file, as
/// Postfix says).
fn established(ctx: &SmtpContext, peer: &Peer, conn: &SmtpConnection) {
    // Asked for only when needed: lettre's rustls side cannot fail here (a handshake
    // that succeeded had a certificate), but costs a copy of the chain.
    let chain = match ctx.tls.judges() {
        true => conn.certificate_chain().unwrap_or_default(),
        false => Vec::new(),
    };
    let trust = ctx.tls.trust(&peer.host, peer.ip, &chain);
    let what = match negotiated::take() {
        Some(n) => format!(": {n}"),
        None => String::new(),
    };
    ctx.log.info(&format!(
        "{trust} TLS connection established to {}{what}",
        peer.relay()
    ));
}

/// A failed handshake as the delivery sees it, with a warning that says why.
fn handshake_failure(ctx: &SmtpContext, peer: &Peer, err: &LettreError) -> SmtpError {
    match tls_error(err) {
        Some(rustls::Error::InvalidCertificate(reason)) => {
            ctx.log.warning(&format!(
                "server certificate of {} not verified: {reason:?}",
                peer.name()
            ));
            SmtpError::TlsHandshake { verify: true }
        }
        Some(other) => {
            ctx.log.warning(&format!(
                "TLS handshake with {} failed: {other}",
                peer.name()
            ));
            SmtpError::TlsHandshake { verify: false }
        }
        None => {
            ctx.log
                .warning(&format!("TLS handshake with {} failed: {err}", peer.name()));
            SmtpError::TlsHandshake { verify: false }
        }
    }
}

/// SMTP AUTH when credentials exist for this server. A server that does not offer AUTH
/// gets none (it may not need it). Failures defer: a wrong password is ours to fix, not
/// the sender's to be told about.
fn authenticate(
    conn: &mut SmtpConnection,
    ctx: &SmtpContext,
    peer: &Peer,
    job: &Job,
    features: &Features,
) -> Result<(), SmtpError> {
    let Some(sasl) = &ctx.sasl else {
        return Ok(());
    };
    let keys = [job.nexthop.to_string(), peer.host.clone()];
    let found = auth::lookup(&sasl.password_maps, &sasl.read, &keys);
    for warning in &found.warnings {
        ctx.log.warning(warning);
    }
    let Some(credentials) = found.credentials else {
        return Ok(());
    };
    if !features.auth {
        return Ok(());
    }
    let failed = |detail: &str| SmtpError::Local {
        dsn: Dsn::SECURITY_TEMP,
        text: format!(
            "SASL authentication failed; cannot authenticate to server {}: {detail}",
            peer.name()
        ),
        permanent: false,
    };
    if !conn.is_encrypted() && !sasl.plaintext_allowed {
        ctx.log.warning(&format!(
            "not sending a password to {} over an unencrypted connection; enable TLS, or remove noplaintext from smtp_sasl_security_options",
            peer.name()
        ));
        return Err(failed("no mechanism available"));
    }
    let mechanisms = [Mechanism::Plain, Mechanism::Login];
    let info = conn.server_info();
    if !mechanisms
        .iter()
        .any(|&m| info.supports_feature(Extension::Authentication(m)))
    {
        return Err(failed("no mechanism available"));
    }
    let _ = conn.set_timeout(limit(ctx.timeouts.helo));
    let credentials = Credentials::new(credentials.user, credentials.password);
    match conn.auth(&mechanisms, &credentials) {
        Ok(_) => Ok(()),
        // A LOGIN prompt lettre does not recognise, or too many challenges.
        Err(err) if err.is_client() || err.is_response() => Err(failed(&err.to_string())),
        Err(err) => match SmtpError::from_lettre(&err, Stage::Auth) {
            SmtpError::Said(reply, _) => Err(SmtpError::Local {
                dsn: reply.dsn(),
                text: format!(
                    "SASL authentication failed; server {} said: {}",
                    peer.name(),
                    reply.text()
                ),
                permanent: false,
            }),
            other => Err(other),
        },
    }
}

/// The address as lettre carries it. lettre's own parser is stricter than SMTP (and
/// than Postfix), so the address, already checked for anything that could break the
/// command, is taken as it is. A sender without a domain, which the queue should never
/// hold, gets `myhostname`: lettre's addresses always have one.
fn lettre_address(address: &str, myhostname: &str) -> Address {
    match address::split(address) {
        (user, Some(domain)) => Address::new_dangerous(user, domain),
        (user, None) => Address::new_dangerous(user, myhostname),
    }
}

fn transaction(
    conn: &mut SmtpConnection,
    ctx: &SmtpContext,
    peer: &Peer,
    job: &Job,
    features: &Features,
    results: &mut [Option<Outcome>],
) -> Result<Done, SmtpError> {
    let t = &ctx.timeouts;
    let utf8 = !job.sender.is_ascii() || job.recipients.iter().any(|r| !r.address.is_ascii());
    check_server_limits(peer, job, features, utf8)?;
    let params = mail_parameters(job, features, utf8);
    let sender = match job.sender {
        "" => None,
        sender => Some(lettre_address(sender, &ctx.myhostname)),
    };
    let mail = Mail::new(sender, params);
    if features.pipelining {
        return pipelined(conn, ctx, peer, job, features, &mail, results);
    }
    let _ = conn.set_timeout(limit(t.mail));
    if let Err(err) = conn.command(mail) {
        let failure = SmtpError::from_lettre(&err, Stage::Mail);
        // 421 is the server closing the connection, which a reused connection retries
        // on a new one: it is told apart from a refusal of this sender.
        if !matches!(failure, SmtpError::Said(..)) || closing(&failure) {
            return Err(failure);
        }
        results.fill_with(|| Some(failure.outcome(peer)));
        return Ok(Done::Other);
    }

    let accepted = send_recipients(conn, ctx, peer, job, features, results)?;
    if accepted.is_empty() {
        return Ok(Done::Other);
    }

    let _ = conn.set_timeout(limit(t.data_init));
    if let Err(err) = conn.command(Data) {
        let failure = SmtpError::from_lettre(&err, Stage::Data);
        if !matches!(failure, SmtpError::Said(..)) {
            return Err(failure);
        }
        for &i in &accepted {
            results[i] = Some(failure.outcome(peer));
        }
        return Ok(Done::Other);
    }
    send_message(conn, ctx, peer, job, &accepted, results)
}

/// The most one pipelined write carries. Its replies are read before the next write, so
/// neither side ever waits to write while the other does too (RFC 2920's deadlock): a
/// write this size fits in any socket's buffers, and its replies are smaller still. A
/// job's recipients (`smtp_destination_recipient_limit`, 50) nearly always fit in one.
const PIPELINE_WRITE: usize = 8192;

/// A transaction with a server that offers PIPELINING (RFC 2920): MAIL FROM, every RCPT
/// TO and DATA go out together, and their replies are read in order after: one round
/// trip where there were as many as commands. Each reply means what it means one
/// command at a time, except that a refused MAIL FROM no longer keeps the RCPT TOs and
/// DATA from being sent: their replies are read and set aside, every recipient takes
/// the MAIL FROM refusal, and should DATA nevertheless be answered 354, the empty
/// message is ended with its final dot (as it is when no recipient was accepted).
fn pipelined(
    conn: &mut SmtpConnection,
    ctx: &SmtpContext,
    peer: &Peer,
    job: &Job,
    features: &Features,
    mail: &Mail,
    results: &mut [Option<Outcome>],
) -> Result<Done, SmtpError> {
    let t = &ctx.timeouts;
    let mut commands = Vec::with_capacity(job.recipients.len() + 2);
    commands.push((Stage::Mail, mail.to_string()));
    for rcpt in &job.recipients {
        commands.push((Stage::Rcpt, rcpt_command(ctx, features, rcpt).to_string()));
    }
    commands.push((Stage::Data, Data.to_string()));
    let lengths: Vec<usize> = commands.iter().map(|(_, text)| text.len()).collect();

    let _ = conn.set_timeout(limit(t.mail.max(t.rcpt).max(t.data_init)));
    let mut mail_refused = false;
    let mut accepted = Vec::new();
    let mut data = None;
    for run in writes(&lengths, PIPELINE_WRITE) {
        let text: String = commands[run.clone()]
            .iter()
            .map(|(_, text)| text.as_str())
            .collect();
        for i in run.clone() {
            // lettre writes whatever it is given and reads one reply; the other replies
            // of the write are read on their own.
            let reply = match i == run.start {
                true => conn.command(text.as_str()),
                false => conn.read_response(),
            };
            let stage = commands[i].0;
            let reply = reply.map_err(|err| SmtpError::from_lettre(&err, stage));
            match (stage, reply) {
                (Stage::Mail, Ok(_)) => {}
                // 421 is the server closing the connection (see `transaction`).
                (Stage::Mail, Err(failure @ SmtpError::Said(..))) if !closing(&failure) => {
                    results.fill_with(|| Some(failure.outcome(peer)));
                    mail_refused = true;
                }
                (Stage::Rcpt, Ok(_)) if !mail_refused => accepted.push(i - 1),
                (Stage::Rcpt, Err(failure @ SmtpError::Said(..))) if !mail_refused => {
                    results[i - 1] = Some(failure.outcome(peer));
                }
                (Stage::Rcpt, Ok(_) | Err(SmtpError::Said(..))) => {}
                (Stage::Data, reply @ (Ok(_) | Err(SmtpError::Said(..)))) => data = Some(reply),
                (_, Err(failure)) => return Err(failure),
                (_, Ok(_)) => {}
            }
        }
    }
    match data {
        Some(Ok(_)) if !mail_refused && !accepted.is_empty() => {
            send_message(conn, ctx, peer, job, &accepted, results)
        }
        Some(Ok(_)) => {
            let _ = conn.set_timeout(limit(t.data_done));
            match conn.command(".\r\n") {
                Ok(_) => Ok(Done::Other),
                Err(err) => match SmtpError::from_lettre(&err, Stage::EndOfData) {
                    SmtpError::Said(..) => Ok(Done::Other),
                    failure => Err(failure),
                },
            }
        }
        Some(Err(failure)) => {
            if !mail_refused {
                for &i in &accepted {
                    results[i] = Some(failure.outcome(peer));
                }
            }
            Ok(Done::Other)
        }
        // DATA is the last command and each reply is read or the loop returned.
        None => Err(SmtpError::Lost(Stage::Data)),
    }
}

/// Whether a refusal is the server closing the connection: 421, whatever the command.
fn closing(failure: &SmtpError) -> bool {
    matches!(failure, SmtpError::Said(reply, _) if reply.code == 421)
}

/// Splits commands of these lengths, in order, into runs of at most `limit` bytes, one
/// write each; a command longer than `limit` goes alone.
fn writes(lengths: &[usize], limit: usize) -> Vec<Range<usize>> {
    let mut runs = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, &length) in lengths.iter().enumerate() {
        if i > start && size + length > limit {
            runs.push(start..i);
            (start, size) = (i, 0);
        }
        size += length;
    }
    if start < lengths.len() {
        runs.push(start..lengths.len());
    }
    runs
}

/// Refuses, before MAIL FROM, a message the server announced it would not take: larger
/// than its SIZE, or needing SMTPUTF8 it did not offer.
fn check_server_limits(
    peer: &Peer,
    job: &Job,
    features: &Features,
    utf8: bool,
) -> Result<(), SmtpError> {
    let size = job.size;
    if let Some(limit) = features.size.filter(|&l| l > 0)
        && size > limit
    {
        return Err(SmtpError::Local {
            dsn: Dsn::TOO_BIG,
            text: format!(
                "message size {size} exceeds size limit {limit} of server {}",
                peer.name()
            ),
            permanent: true,
        });
    }
    if utf8 && !features.smtputf8 {
        return Err(SmtpError::Local {
            dsn: Dsn::NO_SMTPUTF8,
            text: format!(
                "SMTPUTF8 is required, but was not offered by host {}",
                peer.name()
            ),
            permanent: true,
        });
    }
    Ok(())
}

/// The MAIL FROM parameters the server's extensions allow: SIZE, BODY, SMTPUTF8, and
/// the DSN's RET and ENVID.
fn mail_parameters(job: &Job, features: &Features, utf8: bool) -> Vec<MailParameter> {
    let mut params = Vec::new();
    if features.size.is_some() {
        params.push(MailParameter::Size(job.size as usize));
    }
    if job.eight_bit && features.eight_bit_mime {
        params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    if utf8 {
        params.push(MailParameter::SmtpUtfEight);
    }
    if features.dsn {
        match job.ret.to_ascii_lowercase().as_str() {
            "full" => params.push(other_mail("RET", "FULL")),
            "hdrs" => params.push(other_mail("RET", "HDRS")),
            _ => {}
        }
        if !job.envid.is_empty() {
            params.push(other_mail("ENVID", &xtext(job.envid)));
        }
    }
    params
}

/// RCPT TO for each recipient; a refused one gets its outcome in `results`. Returns the
/// indexes of those the server accepted.
fn send_recipients(
    conn: &mut SmtpConnection,
    ctx: &SmtpContext,
    peer: &Peer,
    job: &Job,
    features: &Features,
    results: &mut [Option<Outcome>],
) -> Result<Vec<usize>, SmtpError> {
    let mut accepted = Vec::new();
    let _ = conn.set_timeout(limit(ctx.timeouts.rcpt));
    for (i, rcpt) in job.recipients.iter().enumerate() {
        match conn.command(rcpt_command(ctx, features, rcpt)) {
            Ok(_) => accepted.push(i),
            Err(err) => match SmtpError::from_lettre(&err, Stage::Rcpt) {
                failure @ SmtpError::Said(..) => results[i] = Some(failure.outcome(peer)),
                failure => return Err(failure),
            },
        }
    }
    Ok(accepted)
}

/// RCPT TO for one recipient, with NOTIFY and ORCPT when the server offers DSN.
fn rcpt_command(ctx: &SmtpContext, features: &Features, rcpt: &Recipient) -> Rcpt {
    let mut params = Vec::new();
    if features.dsn {
        if !rcpt.notify.is_empty() {
            params.push(other_rcpt("NOTIFY", &rcpt.notify.to_ascii_uppercase()));
        }
        if !rcpt.original.is_empty() {
            let orcpt = format!("rfc822;{}", xtext(&rcpt.original));
            params.push(other_rcpt("ORCPT", &orcpt));
        }
    }
    Rcpt::new(lettre_address(&rcpt.address, &ctx.myhostname), params)
}

/// Sends the message after DATA was accepted, and records the server's final reply as
/// the outcome of each `accepted` recipient.
fn send_message(
    conn: &mut SmtpConnection,
    ctx: &SmtpContext,
    peer: &Peer,
    job: &Job,
    accepted: &[usize],
    results: &mut [Option<Outcome>],
) -> Result<Done, SmtpError> {
    let t = &ctx.timeouts;
    // lettre writes the message and waits for the reply in one call, so one limit
    // serves both: the longer of the two.
    let _ = conn.set_timeout(limit(t.data_xfer.max(t.data_done)));
    match conn.message(job.wire) {
        Ok(response) => {
            let reply = Reply::from_response(&response);
            let text = reply.text();
            for &i in accepted {
                let mut sent = Outcome::sent(&peer.relay(), text.clone());
                sent.dsn = reply.dsn();
                results[i] = Some(sent.with_remote(&peer.host, &text));
            }
            Ok(Done::Accepted)
        }
        Err(err) => {
            let failure = match SmtpError::from_lettre(&err, Stage::Body) {
                SmtpError::Said(reply, _) => SmtpError::Said(reply, Stage::EndOfData),
                // Whether the server stopped reading or stopped answering, lettre does
                // not say: a time-out warns that the message may arrive twice.
                SmtpError::Timeout(_) => SmtpError::Timeout(Stage::EndOfData),
                // The end of the stream while a reply was awaited: the message was sent.
                SmtpError::Lost(_) if io_source(&err).is_none() => {
                    SmtpError::Lost(Stage::EndOfData)
                }
                other => other,
            };
            if !matches!(failure, SmtpError::Said(..)) {
                return Err(failure);
            }
            for &i in accepted {
                results[i] = Some(failure.outcome(peer));
            }
            Ok(Done::Other)
        }
    }
}

/// A parameter whose value is already xtext (or needs none): lettre's own xtext
/// encoding writes bytes below 0x10 with one hex digit and passes non-ASCII through, so
/// the value goes in the keyword, which lettre writes as it is.
fn other_mail(keyword: &str, value: &str) -> MailParameter {
    MailParameter::Other {
        keyword: format!("{keyword}={value}"),
        value: None,
    }
}

fn other_rcpt(keyword: &str, value: &str) -> RcptParameter {
    RcptParameter::Other {
        keyword: format!("{keyword}={value}"),
        value: None,
    }
}

/// RFC 3461 xtext: `+`, `=`, controls, space and non-ASCII as `+HH`.
fn xtext(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext_encodes_plus_equals_and_spaces() {
        assert_eq!(xtext("a+b=c d@x"), "a+2Bb+3Dc+20d@x");
        assert_eq!(xtext("\t\u{e9}"), "+09+C3+A9");
    }

    #[test]
    fn parameters_go_out_as_written() {
        assert_eq!(other_mail("ENVID", "a+2Bb").to_string(), "ENVID=a+2Bb");
        assert_eq!(
            other_rcpt("NOTIFY", "SUCCESS,FAILURE").to_string(),
            "NOTIFY=SUCCESS,FAILURE"
        );
    }

    #[test]
    fn pipelined_commands_are_split_into_bounded_writes() {
        // Command lengths, the limit, and the runs as (start, end).
        type Case = (&'static [usize], usize, &'static [(usize, usize)]);
        let cases: &[Case] = &[
            (&[30, 30, 30, 6], 8192, &[(0, 4)]),
            (&[30, 30, 30, 6], 60, &[(0, 2), (2, 4)]),
            (&[30, 30, 30, 6], 59, &[(0, 1), (1, 2), (2, 4)]),
            (&[100, 10, 6], 50, &[(0, 1), (1, 3)]),
            (&[10, 100, 6], 50, &[(0, 1), (1, 2), (2, 3)]),
            (&[6], 1, &[(0, 1)]),
            (&[], 8192, &[]),
        ];
        for (lengths, limit, want) in cases {
            let got: Vec<(usize, usize)> = writes(lengths, *limit)
                .into_iter()
                .map(|r| (r.start, r.end))
                .collect();
            assert_eq!(got, *want, "{lengths:?} in {limit}");
        }
    }

    #[test]
    fn nodelay_is_set_on_the_connection_to_the_peer() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = listener.local_addr().unwrap();
        let stream = std::net::TcpStream::connect(peer).unwrap();
        assert!(!stream.nodelay().unwrap());
        set_nodelay(peer);
        assert!(stream.nodelay().unwrap());
    }

    #[test]
    fn addresses_as_lettre_carries_them() {
        let a = lettre_address("\"odd user\"@example.com", "me.example");
        assert_eq!(a.to_string(), "\"odd user\"@example.com");
        assert_eq!(
            lettre_address("root", "me.example").to_string(),
            "root@me.example"
        );
    }
}
