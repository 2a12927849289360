//! One SMTP session with one server address: greeting, EHLO (HELO when EHLO is refused),
//! STARTTLS, AUTH, then one transaction (MAIL FROM, a RCPT TO per recipient, DATA) and
//! QUIT. Each RCPT TO's reply is read on its own, so each recipient gets its own outcome.
//!
//! The protocol is written here on std's `TcpStream` and rustls rather than through
//! lettre's `SmtpConnection`, because Postfix's behaviour needs what that type hides: the
//! greeting read apart from EHLO ("refused to talk to me" and its own timeout), a HELO
//! fallback, separate connect and command timeouts, and raw reply lines for the DSN.
//! Every command goes out in one write and the message in 64 KiB chunks, with
//! `TCP_NODELAY`, so no write waits on a delayed ACK.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use rustls::ClientConnection;

use super::SmtpContext;
use super::auth;
use super::body::{self, BodyError};
use super::reply::{Failure, MAX_LINE, MAX_REPLY_LINES, Peer, Reply, Stage, push_line};
use super::route::Target;
use super::tls::{HandshakeError, Level};
use crate::deliver::{MessageSource, Outcome};
use crate::queue::Recipient;

/// What one session is asked to deliver.
pub struct Job<'a> {
    /// Envelope sender; empty for `<>`.
    pub sender: &'a str,
    pub ret: &'a str,
    pub envid: &'a str,
    pub recipients: Vec<&'a Recipient>,
    pub message: &'a MessageSource<'a>,
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
    pub failure: Option<Failure>,
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

/// What the server said it supports in its EHLO reply.
#[derive(Debug, Default)]
struct Features {
    starttls: bool,
    auth: Vec<String>,
    /// SIZE with its limit; `Some(0)` is "no limit announced".
    size: Option<u64>,
    eight_bit: bool,
    smtputf8: bool,
    dsn: bool,
}

impl Features {
    fn from_ehlo(reply: &Reply) -> Features {
        let mut f = Features::default();
        for (keyword, params) in reply.ehlo_keywords() {
            match keyword.as_str() {
                "STARTTLS" => f.starttls = true,
                "AUTH" => f.auth = params.split(' ').map(str::to_ascii_uppercase).collect(),
                "SIZE" => f.size = Some(params.parse().unwrap_or(0)),
                "8BITMIME" => f.eight_bit = true,
                "SMTPUTF8" => f.smtputf8 = true,
                "DSN" => f.dsn = true,
                _ => {}
            }
        }
        f
    }
}

fn converse(
    ctx: &SmtpContext,
    peer: &Peer,
    job: &Job,
    try_tls: bool,
    results: &mut [Option<Outcome>],
) -> Result<(), Failure> {
    let t = &ctx.timeouts;
    let addr = SocketAddr::new(peer.ip, peer.port);
    let tcp = TcpStream::connect_timeout(&addr, t.connect).map_err(Failure::Connect)?;
    // Commands are written whole; nothing is gained by Nagle's algorithm but latency.
    let _ = tcp.set_nodelay(true);
    let mut conn = Conn::new(tcp);

    conn.set_timeout(t.helo);
    let greeting = conn.read_reply(Stage::Greeting)?;
    if greeting.code / 100 != 2 {
        return Err(Failure::Refused(greeting));
    }
    let result = session(&mut conn, ctx, peer, job, try_tls, results);
    // A session that ends by our choice (TLS missing, message too large, AUTH failed)
    // or normally says goodbye; one that broke has nobody left to tell.
    if matches!(
        result,
        Ok(()) | Err(Failure::Local { .. } | Failure::Said(..))
    ) {
        conn.set_timeout(t.quit);
        let _ = conn.command("QUIT", Stage::EndOfData);
        let _ = conn.read_reply(Stage::EndOfData);
    }
    result
}

/// Everything after the greeting: EHLO, STARTTLS, AUTH, the transaction.
fn session(
    conn: &mut Conn,
    ctx: &SmtpContext,
    peer: &Peer,
    job: &Job,
    try_tls: bool,
    results: &mut [Option<Outcome>],
) -> Result<(), Failure> {
    let t = &ctx.timeouts;
    let mut features = hello(conn, ctx)?;

    if try_tls && ctx.tls.level != Level::None {
        if features.starttls {
            conn.set_timeout(t.starttls);
            conn.command("STARTTLS", Stage::Starttls)?;
            let reply = conn.read_reply(Stage::Starttls)?;
            if reply.code / 100 == 2 {
                conn.start_tls(ctx, peer)?;
                conn.set_timeout(t.helo);
                features = hello(conn, ctx)?;
            } else if ctx.tls.level.required() {
                return Err(Failure::Local {
                    dsn: "4.7.4".into(),
                    text: format!(
                        "TLS is required, but host {} refused to start TLS: {}",
                        peer.name(),
                        reply.text()
                    ),
                    permanent: false,
                });
            }
            // `may`: a refused STARTTLS leaves the session as it was; go on in plain text.
        } else if ctx.tls.level.required() {
            return Err(Failure::Local {
                dsn: "4.7.4".into(),
                text: format!(
                    "TLS is required, but was not offered by host {}",
                    peer.name()
                ),
                permanent: false,
            });
        }
    }

    if ctx.sasl.is_some() {
        conn.set_timeout(t.helo);
        authenticate(conn, ctx, peer, job, &features)?;
    }

    transaction(conn, ctx, peer, job, &features, results)
}

/// EHLO, or HELO when the server refuses EHLO with anything but 421 (which closes).
fn hello(conn: &mut Conn, ctx: &SmtpContext) -> Result<Features, Failure> {
    conn.command(&format!("EHLO {}", ctx.helo_name), Stage::Ehlo)?;
    let reply = conn.read_reply(Stage::Ehlo)?;
    if reply.code / 100 == 2 {
        return Ok(Features::from_ehlo(&reply));
    }
    if reply.code == 421 {
        return Err(Failure::Refused(reply));
    }
    conn.command(&format!("HELO {}", ctx.helo_name), Stage::Helo)?;
    let reply = conn.read_reply(Stage::Helo)?;
    if reply.code / 100 != 2 {
        return Err(Failure::Refused(reply));
    }
    Ok(Features::default())
}

/// SMTP AUTH when credentials exist for this server. A server that does not offer AUTH
/// gets none (it may not need it). Failures defer: a wrong password is ours to fix, not
/// the sender's to be told about.
fn authenticate(
    conn: &mut Conn,
    ctx: &SmtpContext,
    peer: &Peer,
    job: &Job,
    features: &Features,
) -> Result<(), Failure> {
    let Some(sasl) = &ctx.sasl else {
        return Ok(());
    };
    let keys = [job.nexthop.to_string(), peer.host.clone()];
    let found = auth::lookup(&sasl.password_maps, &keys);
    for warning in &found.warnings {
        ctx.log.warning(warning);
    }
    let Some(credentials) = found.credentials else {
        return Ok(());
    };
    if features.auth.is_empty() {
        return Ok(());
    }
    let failed = |detail: String| Failure::Local {
        dsn: "4.7.0".into(),
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
        return Err(failed("no mechanism available".into()));
    }
    let offers = |m: &str| features.auth.iter().any(|a| a == m);
    let reply = if offers("PLAIN") {
        conn.command(
            &format!("AUTH PLAIN {}", auth::plain(&credentials)),
            Stage::Auth,
        )?;
        conn.read_reply(Stage::Auth)?
    } else if offers("LOGIN") {
        conn.command("AUTH LOGIN", Stage::Auth)?;
        let mut reply = conn.read_reply(Stage::Auth)?;
        for secret in [&credentials.user, &credentials.password] {
            if reply.code != 334 {
                break;
            }
            conn.command(&auth::base64(secret.as_bytes()), Stage::Auth)?;
            reply = conn.read_reply(Stage::Auth)?;
        }
        reply
    } else {
        return Err(failed("no mechanism available".into()));
    };
    if reply.code / 100 == 2 {
        return Ok(());
    }
    Err(Failure::Local {
        dsn: reply.dsn(),
        text: format!(
            "SASL authentication failed; server {} said: {}",
            peer.name(),
            reply.text()
        ),
        permanent: false,
    })
}

fn transaction(
    conn: &mut Conn,
    ctx: &SmtpContext,
    peer: &Peer,
    job: &Job,
    features: &Features,
    results: &mut [Option<Outcome>],
) -> Result<(), Failure> {
    let t = &ctx.timeouts;
    let size = job.message.size;
    if let Some(limit) = features.size.filter(|&l| l > 0)
        && size > limit
    {
        return Err(Failure::Local {
            dsn: "5.3.4".into(),
            text: format!(
                "message size {size} exceeds size limit {limit} of server {}",
                peer.name()
            ),
            permanent: true,
        });
    }
    let utf8 = !job.sender.is_ascii() || job.recipients.iter().any(|r| !r.address.is_ascii());
    if utf8 && !features.smtputf8 {
        return Err(Failure::Local {
            dsn: "5.6.7".into(),
            text: format!(
                "SMTPUTF8 is required, but was not offered by host {}",
                peer.name()
            ),
            permanent: true,
        });
    }

    let mut mail = format!("MAIL FROM:<{}>", job.sender);
    if features.size.is_some() {
        mail.push_str(&format!(" SIZE={size}"));
    }
    if job.eight_bit && features.eight_bit {
        mail.push_str(" BODY=8BITMIME");
    }
    if utf8 {
        mail.push_str(" SMTPUTF8");
    }
    if features.dsn {
        match job.ret.to_ascii_lowercase().as_str() {
            "full" => mail.push_str(" RET=FULL"),
            "hdrs" => mail.push_str(" RET=HDRS"),
            _ => {}
        }
        if !job.envid.is_empty() {
            mail.push_str(&format!(" ENVID={}", xtext(job.envid)));
        }
    }
    conn.set_timeout(t.mail);
    conn.command(&mail, Stage::Mail)?;
    let reply = conn.read_reply(Stage::Mail)?;
    if reply.code / 100 != 2 {
        let failure = Failure::Said(reply, Stage::Mail);
        results.fill_with(|| Some(failure.outcome(peer)));
        return Ok(());
    }

    let mut accepted = Vec::new();
    conn.set_timeout(t.rcpt);
    for (i, rcpt) in job.recipients.iter().enumerate() {
        let mut line = format!("RCPT TO:<{}>", rcpt.address);
        if features.dsn {
            if !rcpt.notify.is_empty() {
                line.push_str(&format!(" NOTIFY={}", rcpt.notify.to_ascii_uppercase()));
            }
            if !rcpt.original.is_empty() {
                line.push_str(&format!(" ORCPT=rfc822;{}", xtext(&rcpt.original)));
            }
        }
        conn.command(&line, Stage::Rcpt)?;
        let reply = conn.read_reply(Stage::Rcpt)?;
        if reply.code / 100 == 2 {
            accepted.push(i);
        } else {
            results[i] = Some(Failure::Said(reply, Stage::Rcpt).outcome(peer));
        }
    }
    if accepted.is_empty() {
        return Ok(());
    }

    conn.set_timeout(t.data_init);
    conn.command("DATA", Stage::Data)?;
    let reply = conn.read_reply(Stage::Data)?;
    if reply.code / 100 != 3 {
        let failure = Failure::Said(reply, Stage::Data);
        for &i in &accepted {
            results[i] = Some(failure.outcome(peer));
        }
        return Ok(());
    }

    conn.set_timeout(t.data_xfer);
    match body::send(job.message, conn) {
        Ok(()) => {}
        // Dropping the connection without the final dot makes the server discard the
        // partial message.
        Err(BodyError::Read(err)) => {
            // Shut down first, so that nothing (not even QUIT) can follow the partial
            // message inside DATA.
            conn.shutdown();
            return Err(Failure::Local {
                dsn: "4.3.0".into(),
                text: format!(
                    "error reading the queue file: {}",
                    crate::sysexits::describe_io(&err)
                ),
                permanent: false,
            });
        }
        Err(BodyError::Write(err)) => return Err(Failure::io(&err, Stage::Body)),
    }
    conn.set_timeout(t.data_done);
    let reply = conn.read_reply(Stage::EndOfData)?;
    if reply.code / 100 == 2 {
        let text = reply.text();
        for &i in &accepted {
            let mut sent = Outcome::sent(&peer.relay(), text.clone());
            sent.dsn = reply.dsn();
            results[i] = Some(sent.with_remote(&peer.host, &text));
        }
    } else {
        let failure = Failure::Said(reply, Stage::EndOfData);
        for &i in &accepted {
            results[i] = Some(failure.outcome(peer));
        }
    }
    Ok(())
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

/// The connection, plain or encrypted, with our own read buffer (so that after STARTTLS
/// nothing the server sent in plain text can be taken for an encrypted reply).
struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<ClientConnection, TcpStream>>),
    /// Only between taking the plain stream and the end of the handshake.
    Closed,
}

impl Conn {
    fn new(tcp: TcpStream) -> Conn {
        Conn {
            stream: Stream::Plain(tcp),
            buf: vec![0; 4096],
            start: 0,
            end: 0,
        }
    }

    fn tcp(&self) -> Option<&TcpStream> {
        match &self.stream {
            Stream::Plain(tcp) => Some(tcp),
            Stream::Tls(tls) => Some(&tls.sock),
            Stream::Closed => None,
        }
    }

    fn shutdown(&self) {
        if let Some(tcp) = self.tcp() {
            let _ = tcp.shutdown(std::net::Shutdown::Both);
        }
    }

    fn is_encrypted(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// Read and write deadlines for the next step (Postfix's per-command timeouts).
    fn set_timeout(&self, timeout: Duration) {
        // A zero Duration means "block forever" to the socket API; never ask for that.
        let timeout = Some(timeout.max(Duration::from_millis(1)));
        if let Some(tcp) = self.tcp() {
            let _ = tcp.set_read_timeout(timeout);
            let _ = tcp.set_write_timeout(timeout);
        }
    }

    /// Sends one command line in a single write.
    fn command(&mut self, line: &str, stage: Stage) -> Result<(), Failure> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.write_all(&bytes)
            .and_then(|()| self.flush())
            .map_err(|e| Failure::io(&e, stage))
    }

    fn read_reply(&mut self, stage: Stage) -> Result<Reply, Failure> {
        let mut reply = Reply {
            code: 0,
            lines: Vec::new(),
        };
        loop {
            let line = match self.read_line() {
                Ok(Some(line)) => line,
                Ok(None) => return Err(Failure::Lost(stage)),
                Err(err) => return Err(Failure::io(&err, stage)),
            };
            if push_line(&mut reply, &line) {
                return Ok(reply);
            }
            if reply.lines.len() >= MAX_REPLY_LINES {
                reply.code = 0;
                return Ok(reply);
            }
        }
    }

    /// One line without its line ending, cut at [`MAX_LINE`] bytes; `None` at end of
    /// stream.
    fn read_line(&mut self) -> io::Result<Option<String>> {
        let mut line = Vec::new();
        loop {
            if self.start == self.end {
                let n = self.fill()?;
                if n == 0 {
                    return Ok(None);
                }
            }
            let chunk = &self.buf[self.start..self.end];
            let (taken, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(at) => (at + 1, true),
                None => (chunk.len(), false),
            };
            let room = MAX_LINE.saturating_sub(line.len());
            line.extend_from_slice(&chunk[..taken.min(room)]);
            self.start += taken;
            if done {
                while matches!(line.last(), Some(b'\n' | b'\r')) {
                    line.pop();
                }
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
        }
    }

    fn fill(&mut self) -> io::Result<usize> {
        let n = loop {
            let result = match &mut self.stream {
                Stream::Plain(tcp) => tcp.read(&mut self.buf),
                Stream::Tls(tls) => tls.read(&mut self.buf),
                Stream::Closed => return Ok(0),
            };
            match result {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                // A peer that closes a TLS session without close_notify has still closed.
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => break 0,
                other => break other?,
            }
        };
        self.start = 0;
        self.end = n;
        Ok(n)
    }

    fn start_tls(&mut self, ctx: &SmtpContext, peer: &Peer) -> Result<(), Failure> {
        // Anything the server sent after its STARTTLS reply came in plain text and may
        // be an attacker's (CVE-2011-0411): drop it.
        self.start = 0;
        self.end = 0;
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err(Failure::Lost(Stage::Starttls));
        };
        match ctx.tls.handshake(tcp, &peer.host, peer.ip) {
            Ok(tls) => {
                self.stream = Stream::Tls(Box::new(tls));
                Ok(())
            }
            // A connection lost or stalled mid-handshake is a failed handshake too: for
            // `may` that means a retry in plain text, as Postfix does.
            Err(HandshakeError::Io(err)) => {
                ctx.log.warning(&format!(
                    "TLS handshake with {} failed: {}",
                    peer.name(),
                    crate::sysexits::describe_io(&err)
                ));
                Err(Failure::TlsHandshake { verify: false })
            }
            Err(HandshakeError::Certificate(detail)) => {
                ctx.log.warning(&format!(
                    "server certificate of {} not verified: {detail}",
                    peer.name()
                ));
                Err(Failure::TlsHandshake { verify: true })
            }
            Err(HandshakeError::Other(detail)) => {
                ctx.log.warning(&format!(
                    "TLS handshake with {} failed: {detail}",
                    peer.name()
                ));
                Err(Failure::TlsHandshake { verify: false })
            }
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.stream {
            Stream::Plain(tcp) => tcp.write(buf),
            Stream::Tls(tls) => tls.write(buf),
            Stream::Closed => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.stream {
            Stream::Plain(tcp) => tcp.flush(),
            Stream::Tls(tls) => tls.flush(),
            Stream::Closed => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext_encodes_plus_equals_and_spaces() {
        assert_eq!(xtext("a+b=c d@x"), "a+2Bb+3Dc+20d@x");
    }

    #[test]
    fn features_from_ehlo() {
        let mut r = Reply {
            code: 0,
            lines: Vec::new(),
        };
        for line in [
            "250-mx.example",
            "250-SIZE 10240000",
            "250-STARTTLS",
            "250-AUTH PLAIN login",
            "250-8BITMIME",
            "250 DSN",
        ] {
            push_line(&mut r, line);
        }
        let f = Features::from_ehlo(&r);
        assert!(f.starttls && f.eight_bit && f.dsn && !f.smtputf8);
        assert_eq!(f.size, Some(10240000));
        assert_eq!(f.auth, ["PLAIN", "LOGIN"]);
    }
}
