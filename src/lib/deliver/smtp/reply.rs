//! SMTP replies, and every way a conversation can fail, turned into [`Outcome`]s worded
//! as Postfix's smtp(8) words them, since `mailq`, bounces and log tools show that text:
//!
//! ```text
//! host 127.0.0.1[127.0.0.1] said: 451 4.3.0 try later (in reply to RCPT TO command)
//! host 127.0.0.1[127.0.0.1] refused to talk to me: 421 4.3.2 test server busy, closing
//! connect to 127.0.0.1[127.0.0.1]:43349: Connection refused
//! lost connection with 127.0.0.1[127.0.0.1] while sending message body
//! conversation with 127.0.0.1[127.0.0.1] timed out while receiving the initial server greeting
//! ```

use std::error::Error as _;
use std::fmt;
use std::io;
use std::net::IpAddr;

use lettre::transport::smtp::Error as LettreError;
use lettre::transport::smtp::response::Response;

use crate::deliver::Outcome;
use crate::deliver::dsn::{Class, Dsn};

/// One server reply, possibly of several lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The reply code.
    pub code: u16,
    /// Each line as received, code included, without the line ending.
    pub lines: Vec<String>,
}

impl Reply {
    /// A positive reply as lettre parsed it, its lines rebuilt as they came
    /// (`250-first`, `250 last`).
    pub fn from_response(response: &Response) -> Reply {
        let code = u16::from(response.code());
        let texts: Vec<&str> = response.message().collect();
        let last = texts.len().saturating_sub(1);
        let lines = texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let separator = if i < last { '-' } else { ' ' };
                format!("{code}{separator}{text}")
            })
            .collect();
        Reply { code, lines }
    }

    /// A negative reply, from the error lettre makes of it. lettre keeps only the code
    /// and the text of the lines joined by spaces (an enhanced status code repeated on
    /// every line kept once), so a reply of several lines comes back as one line:
    /// `550 5.7.1 first line second line`.
    fn from_error(code: u16, err: &LettreError) -> Reply {
        let text = err.source().map(|s| s.to_string()).unwrap_or_default();
        let line = format!("{code} {text}").trim_end().to_string();
        Reply {
            code,
            lines: vec![line],
        }
    }

    /// A permanent refusal (5xx); everything else that is not positive is temporary.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The reply on one line, as Postfix logs it: the lines joined by spaces, codes kept.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }

    /// The enhanced status code (RFC 3463) of the first line, when it has one of the same
    /// class as the reply code; else `4.0.0` / `5.0.0` from the reply code, as Postfix
    /// derives it.
    pub fn dsn(&self) -> Dsn {
        let class = Class::of_reply(self.code);
        let first = self.lines.first().map(String::as_str).unwrap_or("");
        match enhanced_code(first) {
            Some(code) if code.class() == class => code,
            _ => Dsn::of_class(class),
        }
    }
}

/// `5.1.1` at the start of a reply line's text (`550 5.1.1 <x>: no such user`).
fn enhanced_code(line: &str) -> Option<Dsn> {
    let text = line.get(4..)?;
    text.split(' ').next()?.parse().ok()
}

/// The step of the conversation, for "in reply to X command" and "while X".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Greeting,
    Ehlo,
    Starttls,
    Auth,
    Mail,
    Rcpt,
    Data,
    Body,
    EndOfData,
}

impl Stage {
    /// What Postfix says after "in reply to".
    fn command(self) -> &'static str {
        match self {
            Stage::Greeting => "initial greeting",
            Stage::Ehlo => "EHLO command",
            Stage::Starttls => "STARTTLS command",
            Stage::Auth => "AUTH command",
            Stage::Mail => "MAIL FROM command",
            Stage::Rcpt => "RCPT TO command",
            Stage::Data => "DATA command",
            Stage::Body | Stage::EndOfData => "end of DATA command",
        }
    }

    /// What Postfix says after "while" for a lost connection or a time-out.
    fn activity(self) -> &'static str {
        match self {
            Stage::Greeting => "receiving the initial server greeting",
            Stage::Ehlo => "performing the EHLO handshake",
            Stage::Starttls => "sending STARTTLS",
            Stage::Auth => "performing SASL authentication",
            Stage::Mail => "sending MAIL FROM",
            Stage::Rcpt => "sending RCPT TO",
            Stage::Data => "sending DATA command",
            Stage::Body => "sending message body",
            Stage::EndOfData => "sending end of data -- message may be sent more than once",
        }
    }
}

/// The server we talk to, as Postfix names it: `host[ip]`, and `host[ip]:port` for
/// `relay=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub host: String,
    pub ip: IpAddr,
    pub port: u16,
}

impl Peer {
    pub fn name(&self) -> String {
        format!("{}[{}]", self.host, self.ip)
    }

    pub fn relay(&self) -> String {
        format!("{}[{}]:{}", self.host, self.ip, self.port)
    }
}

/// Why a conversation (or one command of it) did not succeed.
#[derive(Debug)]
pub enum SmtpError {
    /// The TCP connection could not be made.
    Connect(io::Error),
    /// The connection closed or broke.
    Lost(Stage),
    /// The server did not answer, or did not read, in time.
    Timeout(Stage),
    /// The greeting or EHLO was refused: the server will not talk to us.
    Refused(Reply),
    /// EHLO was refused as not understood (500, 501, 502, 504). Postfix would say HELO
    /// instead; lettre cannot, so the mail waits rather than bounce for our limitation.
    EhloRefused(Reply),
    /// The server's answer was not an SMTP reply (lettre could not parse it).
    Malformed(Stage),
    /// A command was refused.
    Said(Reply, Stage),
    /// Something we decided ourselves, already worded (TLS required, message too large,
    /// authentication failed). `permanent` bounces, else defers.
    Local {
        dsn: Dsn,
        text: String,
        permanent: bool,
    },
    /// The TLS handshake failed; `verify` says whether a certificate check failed.
    TlsHandshake { verify: bool },
}

impl SmtpError {
    /// An I/O error while talking at `stage`: a time-out or a lost connection.
    pub fn io(err: &io::Error, stage: Stage) -> SmtpError {
        match err.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => SmtpError::Timeout(stage),
            _ => SmtpError::Lost(stage),
        }
    }

    /// What lettre's error means at `stage`: the server's refusal, a time-out, a lost
    /// connection, or an answer that is not a reply.
    pub fn from_lettre(err: &LettreError, stage: Stage) -> SmtpError {
        if let Some(code) = err.status() {
            return SmtpError::Said(Reply::from_error(u16::from(code), err), stage);
        }
        if let Some(io) = io_source(err) {
            return SmtpError::io(io, stage);
        }
        // lettre's words for a connection closed before the reply was complete.
        let closed = err
            .source()
            .is_some_and(|s| s.to_string() == "incomplete response");
        if err.is_response() && !closed {
            return SmtpError::Malformed(stage);
        }
        SmtpError::Lost(stage)
    }

    /// Whether the recipients should bounce rather than wait for another try.
    pub fn is_permanent(&self) -> bool {
        match self {
            SmtpError::Refused(reply) | SmtpError::Said(reply, _) => reply.is_permanent(),
            SmtpError::Local { permanent, .. } => *permanent,
            _ => false,
        }
    }

    /// The outcome for each recipient this failure applies to. When the server itself
    /// gave the verdict, the outcome carries its reply for the DSN (`Remote-MTA`,
    /// `Diagnostic-Code: smtp; ...`); our own findings carry none.
    pub fn outcome(&self, peer: &Peer) -> Outcome {
        let name = peer.name();
        let relay = peer.relay();
        let (dsn, text, reply) = match self {
            SmtpError::Connect(err) => (
                Dsn::NO_ANSWER,
                format!("connect to {relay}: {}", describe_connect(err)),
                None,
            ),
            SmtpError::Lost(stage) => (
                Dsn::BAD_CONNECTION,
                format!("lost connection with {name} while {}", stage.activity()),
                None,
            ),
            SmtpError::Timeout(stage) => (
                Dsn::BAD_CONNECTION,
                format!(
                    "conversation with {name} timed out while {}",
                    stage.activity()
                ),
                None,
            ),
            SmtpError::Refused(reply) => (
                reply.dsn(),
                format!("host {name} refused to talk to me: {}", reply.text()),
                Some(reply.text()),
            ),
            SmtpError::EhloRefused(reply) => (
                reply.dsn(),
                format!(
                    "host {name} said: {} (in reply to {})",
                    reply.text(),
                    Stage::Ehlo.command()
                ),
                Some(reply.text()),
            ),
            SmtpError::Malformed(stage) => (
                Dsn::PROTOCOL_TEMP,
                format!(
                    "host {name} sent a malformed reply (in reply to {})",
                    stage.command()
                ),
                None,
            ),
            SmtpError::Said(reply, stage) => (
                reply.dsn(),
                format!(
                    "host {name} said: {} (in reply to {})",
                    reply.text(),
                    stage.command()
                ),
                Some(reply.text()),
            ),
            SmtpError::Local { dsn, text, .. } => (*dsn, text.clone(), None),
            SmtpError::TlsHandshake { verify } => (
                Dsn::CRYPTO_FAILURE,
                match verify {
                    true => format!("Server certificate not verified: {name}"),
                    false => format!("Cannot start TLS: handshake failure with {name}"),
                },
                None,
            ),
        };
        let outcome = if self.is_permanent() {
            Outcome::bounced(&relay, dsn, text)
        } else {
            Outcome::deferred(&relay, dsn.softened(), text)
        };
        match reply {
            Some(reply) => outcome.with_remote(&peer.host, &reply),
            None => outcome,
        }
    }
}

/// The same findings as [`SmtpError::outcome`], without the peer's name (which only the
/// outcome knows).
impl fmt::Display for SmtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SmtpError::Connect(err) => write!(f, "connect: {}", describe_connect(err)),
            SmtpError::Lost(stage) => write!(f, "lost connection while {}", stage.activity()),
            SmtpError::Timeout(stage) => {
                write!(f, "conversation timed out while {}", stage.activity())
            }
            SmtpError::Refused(reply) => write!(f, "host refused to talk to me: {}", reply.text()),
            SmtpError::EhloRefused(reply) => write!(
                f,
                "host said: {} (in reply to {})",
                reply.text(),
                Stage::Ehlo.command()
            ),
            SmtpError::Malformed(stage) => write!(
                f,
                "host sent a malformed reply (in reply to {})",
                stage.command()
            ),
            SmtpError::Said(reply, stage) => write!(
                f,
                "host said: {} (in reply to {})",
                reply.text(),
                stage.command()
            ),
            SmtpError::Local { text, .. } => f.write_str(text),
            SmtpError::TlsHandshake { verify: true } => {
                f.write_str("server certificate not verified")
            }
            SmtpError::TlsHandshake { verify: false } => {
                f.write_str("cannot start TLS: handshake failure")
            }
        }
    }
}

impl std::error::Error for SmtpError {}

/// The I/O error under a lettre error, if there is one.
pub fn io_source(err: &LettreError) -> Option<&io::Error> {
    let mut source = err.source();
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return Some(io);
        }
        source = err.source();
    }
    None
}

/// The reason a connection failed, worded as strerror(3) does, as Postfix logs it.
fn describe_connect(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => "Connection refused".into(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "Connection timed out".into(),
        _ => crate::sysexits::describe_io(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::Status;

    fn reply(lines: &[&str]) -> Reply {
        Reply {
            code: lines.last().unwrap()[..3].parse().unwrap(),
            lines: lines.iter().map(|l| l.to_string()).collect(),
        }
    }

    fn peer() -> Peer {
        Peer {
            host: "127.0.0.1".into(),
            ip: "127.0.0.1".parse().unwrap(),
            port: 43349,
        }
    }

    #[test]
    fn replies_from_lettre_keep_postfixs_form() {
        let response: Response = "250-mx.example.net\r\n250 2.0.0 Ok\r\n".parse().unwrap();
        let r = Reply::from_response(&response);
        assert_eq!(r.code, 250);
        assert_eq!(r.text(), "250-mx.example.net 250 2.0.0 Ok");
        let response: Response = "250 2.0.0 Ok: queued\r\n".parse().unwrap();
        assert_eq!(Reply::from_response(&response).dsn(), Dsn::SENT);
    }

    #[test]
    fn dsn_comes_from_the_enhanced_code_of_the_same_class() {
        assert_eq!(
            reply(&["550 5.1.1 <x>: no such user"]).dsn(),
            Dsn::UNKNOWN_USER
        );
        assert_eq!(reply(&["451 4.3.0 try later"]).dsn(), Dsn::TEMP_LOCAL);
        assert_eq!(reply(&["550 no such user"]).dsn().to_string(), "5.0.0");
        assert_eq!(reply(&["421 busy"]).dsn().to_string(), "4.0.0");
        assert_eq!(reply(&["550 4.1.1 mixed up"]).dsn().to_string(), "5.0.0");
        assert_eq!(reply(&["550 5.1.1234 too long"]).dsn().to_string(), "5.0.0");
        assert_eq!(reply(&["250 2.0.0 Ok"]).dsn(), Dsn::SENT);
    }

    #[test]
    fn wording_is_postfixs() {
        let p = peer();
        let o = SmtpError::Said(reply(&["451 4.3.0 try later"]), Stage::Rcpt).outcome(&p);
        assert_eq!(o.status, Status::Deferred);
        assert_eq!(o.dsn, Dsn::TEMP_LOCAL);
        assert_eq!(
            o.text,
            "host 127.0.0.1[127.0.0.1] said: 451 4.3.0 try later (in reply to RCPT TO command)"
        );
        assert_eq!(o.relay, "127.0.0.1[127.0.0.1]:43349");
        let remote = o.remote.unwrap();
        assert_eq!(remote.mta, "127.0.0.1");
        assert_eq!(remote.reply, "451 4.3.0 try later");

        let o = SmtpError::Refused(reply(&["421 4.3.2 test server busy, closing"])).outcome(&p);
        assert_eq!(
            o.text,
            "host 127.0.0.1[127.0.0.1] refused to talk to me: 421 4.3.2 test server busy, closing"
        );
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let o = SmtpError::Connect(refused).outcome(&p);
        assert_eq!(
            o.text,
            "connect to 127.0.0.1[127.0.0.1]:43349: Connection refused"
        );
        assert_eq!(o.dsn, Dsn::NO_ANSWER);
        assert!(o.remote.is_none(), "our own finding, not the server's");
        let o = SmtpError::Lost(Stage::Body).outcome(&p);
        assert_eq!(
            o.text,
            "lost connection with 127.0.0.1[127.0.0.1] while sending message body"
        );
        let o = SmtpError::Timeout(Stage::Greeting).outcome(&p);
        assert_eq!(
            o.text,
            "conversation with 127.0.0.1[127.0.0.1] timed out while receiving the initial server greeting"
        );
        let o = SmtpError::Said(
            reply(&["550-5.1.1 first line", "550 5.1.1 second line"]),
            Stage::EndOfData,
        )
        .outcome(&p);
        assert_eq!(o.status, Status::Bounced);
        assert_eq!(o.dsn, Dsn::UNKNOWN_USER);
        assert_eq!(
            o.text,
            "host 127.0.0.1[127.0.0.1] said: 550-5.1.1 first line 550 5.1.1 second line (in reply to end of DATA command)"
        );
    }

    #[test]
    fn deferrals_never_carry_a_permanent_code() {
        let o = SmtpError::Local {
            dsn: "5.7.8".parse().unwrap(),
            text: "SASL authentication failed".into(),
            permanent: false,
        }
        .outcome(&peer());
        assert_eq!(o.status, Status::Deferred);
        assert_eq!(o.dsn.to_string(), "4.7.8");
    }
}
