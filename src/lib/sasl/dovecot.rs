//! The client side of Dovecot's authentication protocol, version 1 (Dovecot's
//! "auth-client" socket, the one Postfix's `smtpd_sasl_type = dovecot` talks to).
//! Lines of tab-separated fields:
//!
//! ```text
//! client: VERSION 1 0            server: VERSION 1 2
//!         CPID <pid>                     MECH PLAIN plaintext
//!                                        MECH LOGIN plaintext
//!                                        SPID <pid>  CUID <n>  COOKIE <hex>
//!                                        DONE
//! client: AUTH <id> PLAIN service=smtp nologin lip=.. rip=.. [secured] [resp=<base64>]
//! server: CONT <id> <base64>  |  OK <id> user=alice  |  FAIL <id> user=.. reason=.. [temp]
//! client: CONT <id> <base64>
//! ```
//!
//! Everything read is bounded: a line by Dovecot's own limit ([`MAX_LINE`]), the
//! handshake and the lines skipped while waiting for a reply by a count, each read by
//! [`TIMEOUT`]. Garbage is a [`Error::Protocol`], never a panic.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Dovecot's `AUTH_CLIENT_MAX_LINE_LENGTH`: no line of the protocol is longer.
pub const MAX_LINE: usize = 16384;
/// How long one read or write may take (Postfix's `AUTH_TIMEOUT`).
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The most lines a handshake may have (a handful of mechanisms and four others).
const MAX_HANDSHAKE_LINES: usize = 256;
/// The most lines about other requests skipped while waiting for our reply.
const MAX_SKIPPED_LINES: usize = 64;
/// The longest user name taken from Dovecot (longer is a protocol error, not a
/// truncated, different name).
pub const MAX_USER: usize = 320;
/// The longest failure reason kept (it is only shown and logged).
pub const MAX_REASON: usize = 200;

/// What went wrong talking to Dovecot. Every case is a temporary failure for the
/// SMTP client (454): the password was never judged.
#[derive(Debug)]
pub enum Error {
    /// The socket could not be reached.
    Connect(io::Error),
    /// Reading or writing failed, or Dovecot closed the connection.
    Io(io::Error),
    /// Dovecot said something that is not the protocol (or not this socket's).
    Protocol(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Connect(e) => write!(f, "{e}"),
            Error::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                write!(f, "connection closed by the auth server")
            }
            Error::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                write!(f, "no answer within {} s", TIMEOUT.as_secs())
            }
            Error::Io(e) => write!(f, "{e}"),
            Error::Protocol(why) => write!(f, "protocol error: {why}"),
        }
    }
}

impl std::error::Error for Error {}

/// One mechanism of the handshake's `MECH` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mechanism {
    /// Upper case, as Dovecot names them.
    pub name: String,
    /// Dovecot's security properties, lower case: `plaintext`, `anonymous`,
    /// `dictionary`, `active`, `forward-secrecy`, `mutual-auth`, and `private` (for
    /// Dovecot's own use, never offered to clients).
    pub flags: Vec<String>,
}

impl Mechanism {
    pub fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// The facts an `AUTH` request carries besides the mechanism.
#[derive(Clone, Default)]
pub struct Request<'a> {
    /// Upper case; one of the handshake's mechanisms.
    pub mechanism: &'a str,
    /// `smtp`, as Postfix's `smtpd_sasl_service`: Dovecot's passdb may look at it.
    pub service: &'a str,
    /// The SMTP session runs over TLS (Dovecot's `disable_plaintext_auth` looks at it).
    pub secured: bool,
    pub local_ip: Option<IpAddr>,
    pub remote_ip: Option<IpAddr>,
    /// The initial response, base64, as the SMTP client sent it.
    pub initial_response: Option<&'a str>,
}

/// By hand, not derived: the initial response is the password in base64 (PLAIN), and
/// a `{:?}` in a log line or a panic message must not carry it.
impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("mechanism", &self.mechanism)
            .field("service", &self.service)
            .field("secured", &self.secured)
            .field("local_ip", &self.local_ip)
            .field("remote_ip", &self.remote_ip)
            .field(
                "initial_response",
                &self.initial_response.map(|_| "<hidden>"),
            )
            .finish()
    }
}

/// Dovecot's answer to a request or a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `CONT`: a challenge, base64, for the SMTP client (`334 <challenge>`).
    Continue(String),
    /// `OK`: the password was right; the login name to record.
    Success { user: String },
    /// `FAIL`: wrong, unknown or refused; `temporary` when Dovecot says its backend
    /// failed (`temp`, or `code=temp_fail` in newer versions).
    Failure {
        user: Option<String>,
        reason: Option<String>,
        temporary: bool,
    },
}

/// A connection to Dovecot's auth socket after the handshake.
pub struct Client<S: Read + Write> {
    stream: BufReader<S>,
    mechanisms: Vec<Mechanism>,
    /// The id of the request in progress (ids start at 1 on each connection).
    id: u32,
}

/// Connects to the socket at `path` and does the handshake.
pub fn connect(path: &Path) -> Result<Client<UnixStream>, Error> {
    let stream = UnixStream::connect(path).map_err(Error::Connect)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(Error::Io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(Error::Io)?;
    Client::handshake(stream)
}

impl<S: Read + Write> Client<S> {
    /// Sends our `VERSION` and `CPID`, reads the server's handshake up to `DONE`.
    pub fn handshake(stream: S) -> Result<Client<S>, Error> {
        let mut client = Client {
            stream: BufReader::with_capacity(4096, stream),
            mechanisms: Vec::new(),
            id: 0,
        };
        client.send(&format!("VERSION\t1\t0\nCPID\t{}\n", std::process::id()))?;
        let mut version = false;
        for _ in 0..MAX_HANDSHAKE_LINES {
            let line = client.read_line()?;
            let mut fields = line.split('\t');
            match fields.next().unwrap_or("") {
                "VERSION" => {
                    let major = fields.next().unwrap_or("");
                    if major != "1" {
                        return Err(Error::Protocol(format!(
                            "auth protocol version {} (expected 1)",
                            crate::sasl::printable(major, 20)
                        )));
                    }
                    version = true;
                }
                "MECH" => {
                    let name = fields.next().unwrap_or("");
                    if name.is_empty() || name.len() > 64 {
                        return Err(Error::Protocol("bad MECH line".into()));
                    }
                    // Bounded by the line; a mechanism has a handful.
                    let flags = fields.take(16).map(str::to_ascii_lowercase).collect();
                    client.mechanisms.push(Mechanism {
                        name: name.to_ascii_uppercase(),
                        flags,
                    });
                }
                // Postfix's test: the master socket (auth-userdb) sends SPID without
                // any MECH line first, and would never send DONE.
                "SPID" if client.mechanisms.is_empty() => {
                    return Err(Error::Protocol(
                        "connected to the wrong auth socket (auth-master or auth-userdb, not auth-client)"
                            .into(),
                    ));
                }
                "DONE" if version => return Ok(client),
                "DONE" => return Err(Error::Protocol("no VERSION line".into())),
                // SPID, CUID, COOKIE and anything newer: not needed by a client that
                // only authenticates.
                _ => {}
            }
        }
        Err(Error::Protocol("handshake without an end".into()))
    }

    /// The mechanisms of the handshake, in Dovecot's order.
    pub fn mechanisms(&self) -> &[Mechanism] {
        &self.mechanisms
    }

    /// Starts an authentication. The initial response must be base64 (the caller
    /// checks it, and this refuses anything that could break the line).
    pub fn start(&mut self, request: &Request<'_>) -> Result<Outcome, Error> {
        let plain = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !plain(request.mechanism) || !plain(request.service) {
            return Err(Error::Protocol("bad mechanism or service name".into()));
        }
        self.id = self.id.wrapping_add(1).max(1);
        let mut line = format!(
            "AUTH\t{}\t{}\tservice={}\tnologin",
            self.id, request.mechanism, request.service
        );
        if let Some(ip) = request.local_ip {
            line.push_str(&format!("\tlip={ip}"));
        }
        if let Some(ip) = request.remote_ip {
            line.push_str(&format!("\trip={ip}"));
        }
        if request.secured {
            line.push_str("\tsecured");
        }
        if let Some(resp) = request.initial_response {
            if !crate::sasl::is_base64(resp) {
                return Err(Error::Protocol("initial response is not base64".into()));
            }
            line.push_str(&format!("\tresp={resp}"));
        }
        line.push('\n');
        if line.len() > MAX_LINE {
            return Err(Error::Protocol("request too long".into()));
        }
        self.send(&line)?;
        self.reply()
    }

    /// Sends the client's response (base64) to the last challenge.
    pub fn respond(&mut self, response: &str) -> Result<Outcome, Error> {
        if !crate::sasl::is_base64(response) {
            return Err(Error::Protocol("response is not base64".into()));
        }
        let line = format!("CONT\t{}\t{response}\n", self.id);
        if line.len() > MAX_LINE {
            return Err(Error::Protocol("response too long".into()));
        }
        self.send(&line)?;
        self.reply()
    }

    /// Reads until the reply to the request in progress.
    fn reply(&mut self) -> Result<Outcome, Error> {
        for _ in 0..MAX_SKIPPED_LINES {
            let line = self.read_line()?;
            let mut fields = line.split('\t');
            let verb = fields.next().unwrap_or("");
            let id = fields.next().and_then(|id| id.parse::<u32>().ok());
            if !matches!(verb, "OK" | "CONT" | "FAIL") {
                continue;
            }
            if id != Some(self.id) {
                // A reply to another request: Postfix skips those too.
                continue;
            }
            let args: Vec<&str> = fields.collect();
            return match verb {
                "CONT" => {
                    let challenge = args.first().copied().unwrap_or("");
                    if !crate::sasl::is_base64(challenge) {
                        return Err(Error::Protocol("challenge is not base64".into()));
                    }
                    Ok(Outcome::Continue(challenge.to_string()))
                }
                "OK" => match field(&args, "user")? {
                    Some(user) if !user.is_empty() => Ok(Outcome::Success { user }),
                    _ => Err(Error::Protocol("OK without a user name".into())),
                },
                _ => {
                    let reason = field(&args, "reason")?
                        .map(|r| crate::sasl::printable(&r, MAX_REASON))
                        .filter(|r| !r.is_empty());
                    let temporary = args.contains(&"temp") || args.contains(&"code=temp_fail");
                    Ok(Outcome::Failure {
                        user: field(&args, "user")?,
                        reason,
                        temporary,
                    })
                }
            };
        }
        Err(Error::Protocol("no reply to the request".into()))
    }

    fn send(&mut self, text: &str) -> Result<(), Error> {
        let stream = self.stream.get_mut();
        stream.write_all(text.as_bytes()).map_err(Error::Io)?;
        stream.flush().map_err(Error::Io)
    }

    /// One line without its LF, at most [`MAX_LINE`] bytes; invalid UTF-8 replaced.
    fn read_line(&mut self) -> Result<String, Error> {
        let mut line = Vec::new();
        loop {
            let chunk = self.stream.fill_buf().map_err(Error::Io)?;
            if chunk.is_empty() {
                return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(end) => (end, true),
                None => (chunk.len(), false),
            };
            if line.len() + take > MAX_LINE {
                return Err(Error::Protocol("line too long".into()));
            }
            line.extend_from_slice(&chunk[..take]);
            self.stream.consume(take + usize::from(done));
            if done {
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
        }
    }
}

/// The value of `name=` among `args`, tab-unescaped; a user name is bounded and made
/// printable (it goes into log lines and a header comment).
fn field(args: &[&str], name: &str) -> Result<Option<String>, Error> {
    let Some(raw) = args
        .iter()
        .find_map(|a| a.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
    else {
        return Ok(None);
    };
    let value = unescape(raw);
    if name == "user" {
        if value.len() > MAX_USER {
            return Err(Error::Protocol("user name too long".into()));
        }
        return Ok(Some(crate::sasl::printable(&value, MAX_USER)));
    }
    Ok(Some(value))
}

/// Dovecot's tab escaping (`str_tabescape`): `\x01` followed by `1`, `t`, `r`, `n`
/// or `0` stands for `\x01`, TAB, CR, LF or NUL. Anything else is kept as it is.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1}' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('1') => out.push('\u{1}'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some('0') => out.push('\0'),
            Some(other) => {
                out.push('\u{1}');
                out.push(other);
            }
            None => out.push('\u{1}'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    use std::thread::JoinHandle;

    const HANDSHAKE: &str = "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\n\
        MECH\tANONYMOUS\tanonymous\nMECH\tDOVECOT-TOKEN\tprivate\nSPID\t123\nCUID\t7\n\
        COOKIE\t0123abcd\nDONE\n";

    /// A scripted Dovecot: sends `greeting` at once, then for each line of `script`
    /// reads one line from the client and answers with the script's text. Returns the
    /// lines it read.
    fn fake(
        greeting: &'static str,
        script: Vec<&'static str>,
    ) -> (UnixStream, JoinHandle<Vec<String>>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let server = std::thread::spawn(move || {
            let mut reader = BufReader::new(theirs.try_clone().unwrap());
            let mut writer = theirs;
            let _ = writer.write_all(greeting.as_bytes());
            let mut seen = Vec::new();
            let mut read = || {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap_or(0);
                line.trim_end_matches('\n').to_string()
            };
            // The client's VERSION and CPID.
            seen.push(read());
            seen.push(read());
            for answer in script {
                seen.push(read());
                let _ = writer.write_all(answer.as_bytes());
            }
            seen
        });
        (ours, server)
    }

    fn request(mech: &str, resp: Option<&'static str>) -> Request<'static> {
        Request {
            mechanism: if mech == "PLAIN" { "PLAIN" } else { "LOGIN" },
            service: "smtp",
            secured: true,
            local_ip: Some("127.0.0.1".parse().unwrap()),
            remote_ip: Some("192.0.2.7".parse().unwrap()),
            initial_response: resp,
        }
    }

    #[test]
    fn handshake_then_plain_with_an_initial_response() {
        let (stream, server) = fake(HANDSHAKE, vec!["OK\t1\tuser=alice\n"]);
        let mut client = Client::handshake(stream).unwrap();
        let names: Vec<&str> = client
            .mechanisms()
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(names, ["PLAIN", "LOGIN", "ANONYMOUS", "DOVECOT-TOKEN"]);
        assert!(client.mechanisms()[2].has("anonymous") && client.mechanisms()[3].has("private"));
        assert!(client.mechanisms()[0].has("plaintext"));
        let out = client
            .start(&request("PLAIN", Some("AGFsaWNlAHNlY3JldA==")))
            .unwrap();
        assert_eq!(
            out,
            Outcome::Success {
                user: "alice".into()
            }
        );
        let seen = server.join().unwrap();
        assert_eq!(seen[0], "VERSION\t1\t0");
        assert_eq!(seen[1], format!("CPID\t{}", std::process::id()));
        assert_eq!(
            seen[2],
            "AUTH\t1\tPLAIN\tservice=smtp\tnologin\tlip=127.0.0.1\trip=192.0.2.7\tsecured\tresp=AGFsaWNlAHNlY3JldA=="
        );
    }

    #[test]
    fn debug_hides_the_initial_response() {
        let request = Request {
            mechanism: "PLAIN",
            initial_response: Some("AGFsaWNlAHNlY3JldA=="),
            ..Request::default()
        };
        let shown = format!("{request:?}");
        assert!(!shown.contains("AGFsaWNlAHNlY3JldA=="), "{shown}");
        assert!(
            shown.contains("initial_response: Some(\"<hidden>\")"),
            "{shown}"
        );
    }

    #[test]
    fn login_continues_then_fails_with_a_reason() {
        let (stream, server) = fake(
            HANDSHAKE,
            vec![
                "CONT\t1\tVXNlcm5hbWU6\n",
                // A line about another request is skipped.
                "FAIL\t9\treason=other\nCONT\t1\tUGFzc3dvcmQ6\n",
                "FAIL\t1\tuser=al\u{1}tice\treason=authentication failure\n",
            ],
        );
        let mut client = Client::handshake(stream).unwrap();
        let mut r = request("LOGIN", None);
        r.secured = false;
        r.local_ip = None;
        r.remote_ip = None;
        assert_eq!(
            client.start(&r).unwrap(),
            Outcome::Continue("VXNlcm5hbWU6".into())
        );
        assert_eq!(
            client.respond("YWxpY2U=").unwrap(),
            Outcome::Continue("UGFzc3dvcmQ6".into())
        );
        assert_eq!(
            client.respond("d3Jvbmc=").unwrap(),
            Outcome::Failure {
                user: Some("al?ice".into()),
                reason: Some("authentication failure".into()),
                temporary: false
            }
        );
        let seen = server.join().unwrap();
        assert_eq!(seen[2], "AUTH\t1\tLOGIN\tservice=smtp\tnologin");
        assert_eq!(seen[3], "CONT\t1\tYWxpY2U=");
        assert_eq!(seen[4], "CONT\t1\td3Jvbmc=");
    }

    #[test]
    fn temporary_failures_in_both_spellings() {
        for fail in [
            "FAIL\t1\ttemp\n",
            "FAIL\t1\tcode=temp_fail\treason=db down\n",
        ] {
            let (stream, _server) = fake(HANDSHAKE, vec![fail]);
            let mut client = Client::handshake(stream).unwrap();
            match client.start(&request("PLAIN", Some("="))).unwrap() {
                Outcome::Failure { temporary, .. } => assert!(temporary, "{fail}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let long: &'static str =
            Box::leak(format!("{}\n", "x".repeat(MAX_LINE + 1)).into_boxed_str());
        // (what the server sends first, what the AUTH gets back)
        let table: Vec<(&'static str, Option<&'static str>)> = vec![
            ("VERSION\t2\t0\nDONE\n", None),
            ("MECH\tPLAIN\nDONE\n", None),
            ("VERSION\t1\t0\nSPID\t1\nDONE\n", None),
            (long, None),
            ("VERSION\t1\t0\nMECH\t\nDONE\n", None),
            ("\u{0}\u{ff}\n", None),
            ("", None),
            (HANDSHAKE, Some("OK\t1\n")),
            (HANDSHAKE, Some("CONT\t1\tnot base64!\n")),
            (HANDSHAKE, Some("OK\t1\tuser=\n")),
            (HANDSHAKE, Some("")),
            (HANDSHAKE, Some("garbage\ngarbage\n")),
        ];
        for (greeting, answer) in table {
            let (stream, _server) = fake(greeting, answer.into_iter().collect());
            let result = Client::handshake(stream);
            let Some(_) = answer else {
                assert!(result.is_err(), "{greeting:?}");
                continue;
            };
            let mut client = result.unwrap();
            // The fake stops answering after the script: a read then ends in EOF.
            assert!(client.start(&request("PLAIN", None)).is_err(), "{answer:?}");
        }
        let (stream, _server) = fake(HANDSHAKE, vec![]);
        let mut client = Client::handshake(stream).unwrap();
        for bad in ["a\tb", "x\nAUTH", "no spaces"] {
            assert!(client.respond(bad).is_err());
        }
        let mut evil = request("PLAIN", None);
        evil.mechanism = "PLAIN\tresp=x";
        assert!(matches!(client.start(&evil), Err(Error::Protocol(_))));
    }

    #[test]
    fn a_socket_that_is_not_there() {
        let dir = tempfile::tempdir().unwrap();
        let err = connect(&dir.path().join("auth")).err().unwrap();
        assert!(matches!(err, Error::Connect(_)), "{err}");
    }

    #[test]
    fn unescaping() {
        assert_eq!(unescape("a\u{1}tb\u{1}1c\u{1}n"), "a\tb\u{1}c\n");
        assert_eq!(unescape("x\u{1}"), "x\u{1}");
        assert_eq!(unescape("\u{1}z"), "\u{1}z");
    }
}
