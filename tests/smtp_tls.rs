//! The SMTP client's TLS against Python's aiosmtpd on 127.0.0.1: implicit TLS
//! (`smtp_tls_wrappermode`, port 465 style) and STARTTLS used by default when offered.
//! Deliveries go through a `mailroom smtp-agent` process, as the daemon makes them, so
//! the log line "... TLS connection established to ..." comes back as the daemon gets it.

mod common;

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::MailSystem;
use common::smtp_server::{Aiosmtpd, Scripted, ServerTls, Step::*, self_signed_certificate};
use mailroom::config::Config;
use mailroom::deliver::smtp::agent::{AgentProcess, Reply};
use mailroom::deliver::smtp::{DnsError, Resolver, SmtpContext, Warnings, deliver};
use mailroom::deliver::{MessageSource, Status};
use mailroom::queue::{Envelope, QueueId, Recipient};

const MAILROOM: &str = env!("CARGO_BIN_EXE_mailroom");
const BODY: &[u8] = b"From: alice@example.com\nSubject: tls\n\nhello over TLS\n";

/// An agent for `dir` with these main.cf lines (short time limits).
fn agent(dir: &Path, lines: &str) -> AgentProcess {
    let owner = common::privilege_separation(dir);
    let text = format!(
        "myhostname = me.example\nsmtp_connect_timeout = 5s\nsmtp_helo_timeout = 5s\n\
         smtp_starttls_timeout = 5s\n{lines}\n{owner}"
    );
    std::fs::write(dir.join("main.cf"), text).unwrap();
    AgentProcess::start(Path::new(MAILROOM), dir).expect("the agent starts")
}

/// Sends one message to b@example.net through `agent`.
fn send(agent: &mut AgentProcess) -> Reply {
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(BODY).unwrap();
    let mut envelope = Envelope::new(QueueId::generate(), 0, 0, "alice@example.com");
    envelope.size = BODY.len() as u64;
    let rcpt = Recipient::new("b@example.net", "b@example.net");
    let message = MessageSource::for_envelope(&file, &envelope);
    agent
        .deliver(&envelope, message, &[&rcpt], Duration::from_secs(60))
        .expect("a reply from the agent")
}

/// The one "TLS connection established" line, checked against Postfix's wording.
fn established(reply: &Reply, trust: &str, port: u16) {
    let want = format!("{trust} TLS connection established to 127.0.0.1[127.0.0.1]:{port}: TLSv1.");
    let line = reply
        .notes
        .iter()
        .find(|n| n.contains("TLS connection established"))
        .unwrap_or_else(|| panic!("no TLS line: {:?}", reply.notes));
    assert!(line.starts_with(&want), "{line}");
    assert!(line.contains(" with cipher TLS_"), "{line}");
    assert!(line.ends_with(" bits)"), "{line}");
}

/// One message sent through a new agent to the relayhost 127.0.0.1:`port`, with these
/// main.cf lines besides.
fn relay(port: u16, lines: &str) -> Reply {
    let conf = tempfile::tempdir().unwrap();
    let mut a = agent(
        conf.path(),
        &format!("relayhost = [127.0.0.1]:{port}\n{lines}"),
    );
    send(&mut a)
}

#[derive(Clone, Copy)]
enum Tls {
    Implicit,
    Starttls,
}

/// The directory holding a new self-signed certificate, the certificate, and aiosmtpd
/// serving it with `tls`; None (the test returns) when a tool is missing.
fn tls_server(tls: Tls) -> Option<(tempfile::TempDir, PathBuf, Aiosmtpd)> {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_certificate(dir.path())?;
    let (cert_ref, key) = (cert.as_path(), key.as_path());
    let server = Aiosmtpd::start_with(match tls {
        Tls::Implicit => ServerTls::Implicit {
            cert: cert_ref,
            key,
        },
        Tls::Starttls => ServerTls::Starttls {
            cert: cert_ref,
            key,
        },
    })?;
    Some((dir, cert, server))
}

/// aiosmtpd's record of a message says it came over TLS 1.x.
fn assert_tls(meta: &serde_json::Value) {
    assert!(
        meta["tls"]
            .as_str()
            .is_some_and(|v| v.starts_with("TLSv1.")),
        "{meta}"
    );
}

#[test]
fn wrappermode_speaks_tls_from_the_first_byte() {
    let Some((_dir, cert, server)) = tls_server(Tls::Implicit) else {
        return;
    };
    // The levels that check no certificate take the self-signed one; `none` included:
    // with wrapper mode there is no plain text to choose.
    for level in ["", "none", "may", "encrypt"] {
        let reply = relay(
            server.port,
            &format!("smtp_tls_wrappermode = yes\nsmtp_tls_security_level = {level}"),
        );
        let o = &reply.outcomes[0];
        assert_eq!(
            o.status,
            Status::Sent,
            "level {level:?}: {o:?} {:?}",
            reply.warnings
        );
        established(&reply, "Untrusted", server.port);
    }
    let (meta, body) = server.received(0);
    assert_tls(&meta);
    assert!(String::from_utf8_lossy(&body).contains("hello over TLS"));

    // A CA file makes no difference to may, but for the log: the certificate chains
    // to it, so the connection is Trusted (as Postfix says), not Untrusted.
    let reply = relay(
        server.port,
        &format!(
            "smtp_tls_wrappermode = yes\nsmtp_tls_CAfile = {}",
            cert.display()
        ),
    );
    assert_eq!(reply.outcomes[0].status, Status::Sent, "{reply:?}");
    established(&reply, "Trusted", server.port);

    // verify checks the certificate: a self-signed one is refused, the mail waits.
    let reply = relay(
        server.port,
        "smtp_tls_wrappermode = yes\nsmtp_tls_security_level = verify",
    );
    assert_eq!(reply.outcomes[0].status, Status::Deferred, "{reply:?}");
    assert!(
        reply.outcomes[0]
            .text
            .contains("Server certificate not verified"),
        "{reply:?}"
    );
    // The CA file that holds the certificate makes it verified.
    let reply = relay(
        server.port,
        &format!(
            "smtp_tls_wrappermode = yes\nsmtp_tls_security_level = verify\nsmtp_tls_CAfile = {}",
            cert.display()
        ),
    );
    assert_eq!(reply.outcomes[0].status, Status::Sent, "{reply:?}");
    established(&reply, "Verified", server.port);
}

#[test]
fn wrappermode_never_falls_back_to_plain_text() {
    // A server that greets in plain text: the client's TLS hello gets a greeting back,
    // which is no TLS; the mail waits rather than go out unencrypted.
    let server = Scripted::start(vec![vec![Say("220 plain.example ESMTP"), Silence]]);
    let reply = relay(
        server.port,
        "smtp_tls_wrappermode = yes\nsmtp_tls_security_level = may",
    );
    let o = &reply.outcomes[0];
    assert_eq!(o.status, Status::Deferred, "{o:?}");
    assert!(
        o.text.contains("Cannot start TLS: handshake failure"),
        "{o:?}"
    );
    assert!(reply.notes.is_empty(), "{:?}", reply.notes);
    let transcript = server.finish();
    assert_eq!(
        transcript.len(),
        1,
        "one connection, no retry: {transcript:?}"
    );
}

#[test]
fn starttls_is_used_when_offered_and_the_level_is_unset() {
    let Some((_dir, _, server)) = tls_server(Tls::Starttls) else {
        return;
    };
    let reply = relay(server.port, "");
    assert_eq!(reply.outcomes[0].status, Status::Sent, "{reply:?}");
    established(&reply, "Untrusted", server.port);
    let (meta, _) = server.received(0);
    assert_tls(&meta);

    // An explicit none is honoured: plain text, no TLS line.
    let reply = relay(server.port, "smtp_tls_security_level = none");
    assert_eq!(reply.outcomes[0].status, Status::Sent, "{reply:?}");
    assert!(reply.notes.is_empty(), "{:?}", reply.notes);
    let (meta, _) = server.received(1);
    assert!(meta["tls"].is_null(), "{meta}");
}

/// A resolver that sends every domain's mail to 127.0.0.1 through one MX host.
struct Loopback;

impl Resolver for Loopback {
    fn mx(&self, _domain: &str) -> Result<Vec<(u16, String)>, DnsError> {
        Ok(vec![(10, "mx.example.net.".into())])
    }
    fn addresses(&self, _host: &str) -> Result<Vec<IpAddr>, DnsError> {
        Ok(vec![IpAddr::from([127, 0, 0, 1])])
    }
}

/// What the client logged, kept for the test.
#[derive(Default)]
struct Kept(Mutex<Vec<String>>);

impl Warnings for Kept {
    fn warning(&self, text: &str) {
        self.0.lock().unwrap().push(format!("warning: {text}"));
    }
    fn info(&self, text: &str) {
        self.0.lock().unwrap().push(text.to_string());
    }
}

#[test]
fn mx_delivery_uses_starttls_when_offered_and_the_level_is_unset() {
    let Some((_dir, _, server)) = tls_server(Tls::Starttls) else {
        return;
    };
    // No relayhost: the recipient's domain is looked up (here, by a resolver that
    // answers with 127.0.0.1 for everything).
    let config = Config::from_text(
        "myhostname = me.example\n",
        Path::new("/nonexistent/main.cf"),
    );
    let kept = Arc::new(Kept::default());
    let mut ctx = SmtpContext::from_config(&config)
        .unwrap()
        .with_resolver(Arc::new(Loopback))
        .with_warnings(kept.clone());
    ctx.default_port = server.port;
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(BODY).unwrap();
    let mut envelope = Envelope::new(QueueId::generate(), 0, 0, "alice@example.com");
    envelope.size = BODY.len() as u64;
    let rcpt = Recipient::new("b@example.net", "b@example.net");
    let outcomes = deliver(
        &ctx,
        &envelope,
        MessageSource::for_envelope(&file, &envelope),
        &[&rcpt],
    );
    assert_eq!(outcomes[0].status, Status::Sent, "{outcomes:?}");
    assert_eq!(
        outcomes[0].relay,
        format!("mx.example.net[127.0.0.1]:{}", server.port)
    );
    let lines = kept.0.lock().unwrap().clone();
    let want = format!(
        "Untrusted TLS connection established to mx.example.net[127.0.0.1]:{}: TLSv1.3 with cipher TLS_",
        server.port
    );
    assert!(lines.iter().any(|l| l.starts_with(&want)), "{lines:?}");
    let (meta, _) = server.received(0);
    assert_tls(&meta);
}

#[test]
fn the_daemon_logs_the_tls_connection_as_postfix_does() {
    let Some((_dir, _, server)) = tls_server(Tls::Starttls) else {
        return;
    };
    let sys = MailSystem::new(&format!("relayhost = [127.0.0.1]:{}\n", server.port));
    let out = sys.run(
        env!("CARGO_BIN_EXE_sendmail"),
        &["-odi", "-f", "alice@example.com", "b@example.net"],
        b"Subject: tls\n\nhello\n",
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    let log = std::fs::read_to_string(sys.root().join("maillog")).unwrap_or_default();
    let tls = log
        .lines()
        .find(|l| l.contains("TLS connection established"))
        .unwrap_or_else(|| panic!("no TLS line:\n{log}"));
    let want = format!(
        ": Untrusted TLS connection established to 127.0.0.1[127.0.0.1]:{}: TLSv1.3 with cipher TLS_",
        server.port
    );
    assert!(tls.contains("mailroom/smtp["), "{tls}");
    assert!(tls.contains(&want), "{tls}");
    // Before the delivery's line, as Postfix writes them.
    let sent = log.find("status=sent").expect("status=sent");
    assert!(log.find(tls).unwrap() < sent, "{log}");
}
