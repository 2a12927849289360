//! The SMTP delivery agent against servers on 127.0.0.1: a real one (Python's aiosmtpd)
//! for what arrives, and scripted ones of our own for every way a server can fail. DNS
//! is a fake resolver; nothing here leaves the machine.

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::require_tool;
use common::smtp_server::Step::{self, *};
use common::smtp_server::{Aiosmtpd, Scripted, free_port};
use mailroom::config::Config;
use mailroom::deliver::smtp::{DnsError, Resolver, SmtpContext, deliver, destination_key};
use mailroom::deliver::{MessageSource, Outcome, Status};
use mailroom::log::Log;
use mailroom::queue::{Envelope, QueueId, Recipient};

// ---------------------------------------------------------------------------------------
// Fixtures: the context, the message, a fake resolver.

#[derive(Default)]
struct FakeResolver {
    mx: HashMap<String, Vec<(u16, String)>>,
    addresses: HashMap<String, Vec<IpAddr>>,
}

impl Resolver for FakeResolver {
    fn mx(&self, domain: &str) -> Result<Vec<(u16, String)>, DnsError> {
        match self.mx.get(domain) {
            Some(records) => Ok(records.clone()),
            None if self.addresses.contains_key(domain) => Ok(Vec::new()),
            None => Err(DnsError::NotFound),
        }
    }

    fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        self.addresses.get(host).cloned().ok_or(DnsError::NotFound)
    }
}

const LOCALHOST: &str = "127.0.0.1[127.0.0.1]";

/// A context with short timeouts and `extra` main.cf lines.
fn context_with(extra: &str, resolver: FakeResolver) -> SmtpContext {
    let mut text = String::from("myhostname = me.example\n");
    for name in [
        "connect",
        "helo",
        "starttls",
        "mail",
        "rcpt",
        "data_init",
        "data_xfer",
        "data_done",
        "quit",
    ] {
        text.push_str(&format!("smtp_{name}_timeout = 2s\n"));
    }
    text.push_str(extra);
    text.push('\n');
    let config = Config::from_text(&text, Path::new("/nonexistent/main.cf"));
    SmtpContext::from_config(&config)
        .expect("config")
        .with_resolver(Arc::new(resolver))
        .with_log(Arc::new(Log::discard()))
}

fn relay_context(port: u16, extra: &str) -> SmtpContext {
    context_with(
        &format!("relayhost = [127.0.0.1]:{port}\n{extra}"),
        FakeResolver::default(),
    )
}

struct Message {
    file: File,
    envelope: Envelope,
    recipients: Vec<Recipient>,
}

fn message(sender: &str, recipients: &[&str], body: &[u8]) -> Message {
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(body).unwrap();
    let mut envelope = Envelope::new(QueueId::generate(), 0, 0, sender);
    envelope.size = body.len() as u64;
    Message {
        file,
        envelope,
        recipients: recipients.iter().map(|r| Recipient::new(r, r)).collect(),
    }
}

fn send(ctx: &SmtpContext, m: &Message) -> Vec<Outcome> {
    let refs: Vec<&Recipient> = m.recipients.iter().collect();
    deliver(
        ctx,
        &m.envelope,
        MessageSource::for_envelope(&m.file, &m.envelope),
        &refs,
    )
}

const BODY: &[u8] = b"From: alice@example.com\nSubject: test\n\nhello\n.dotted line\n";

// ---------------------------------------------------------------------------------------
// Scripts for the scripted server (tests/common/smtp_server.rs).

/// The usual happy conversation after the greeting and EHLO.
fn accept_all(rcpts: usize) -> Vec<Step> {
    let mut steps = vec![Expect("MAIL FROM:"), Say("250 2.1.0 Ok")];
    for _ in 0..rcpts {
        steps.extend([Expect("RCPT TO:"), Say("250 2.1.5 Ok")]);
    }
    steps.extend([
        Expect("DATA"),
        Say("354 End data with <CR><LF>.<CR><LF>"),
        Data,
        Say("250 2.0.0 Ok: queued as ABC123"),
        Expect("QUIT"),
        Say("221 2.0.0 Bye"),
    ]);
    steps
}

/// The greeting and lettre's EHLO (`SmtpConnection::connect`), nothing more.
fn greet_once() -> Vec<Step> {
    vec![
        Say("220 test.example ESMTP"),
        Expect("EHLO me.example"),
        Say("250-test.example\r\n250 8BITMIME"),
    ]
}

/// A second EHLO with the same answer. lettre keeps no EHLO reply and knows neither SIZE
/// nor DSN, so the client asks again once TLS is settled (see client.rs): every session
/// that gets past STARTTLS shows two EHLOs, where Postfix sends one.
fn ehlo_again(reply: &'static str) -> Vec<Step> {
    vec![Expect("EHLO me.example"), Say(reply)]
}

fn greet() -> Vec<Step> {
    script(&[greet_once(), ehlo_again("250-test.example\r\n250 8BITMIME")])
}

fn script(parts: &[Vec<Step>]) -> Vec<Step> {
    parts.concat()
}

#[test]
fn several_recipients_arrive_once_byte_exact_in_one_transaction() {
    let Some(server) = Aiosmtpd::start() else {
        return;
    };
    let ctx = relay_context(server.port, "");
    let body = "From: alice@example.com\nTo: bob@example.net\nSubject: caf\u{e9}\n\n\
                .a line starting with a dot\n..two dots\nlast line without newline";
    let m = message(
        "alice@example.com",
        &["bob@example.net", "carol@example.org", "dave@example.net"],
        body.as_bytes(),
    );
    let outcomes = send(&ctx, &m);
    for o in &outcomes {
        assert_eq!(o.status, Status::Sent, "{o:?}");
        assert_eq!(o.text, "250 2.0.0 Ok: queued as PY1");
        assert_eq!(o.relay, format!("{LOCALHOST}:{}", server.port));
        assert_eq!(o.dsn, "2.0.0");
    }
    let (meta, received) = server.received(0);
    assert_eq!(server.count(), 1, "one transaction for all recipients");
    assert_eq!(meta["mail_from"], "alice@example.com");
    assert_eq!(
        meta["rcpt_tos"],
        serde_json::json!(["bob@example.net", "carol@example.org", "dave@example.net"])
    );
    let options = meta["mail_options"].to_string();
    assert!(options.contains("BODY=8BITMIME"), "{options}");
    let expected = format!("{}\r\n", body.replace('\n', "\r\n"));
    assert_eq!(
        String::from_utf8_lossy(&received),
        expected,
        "the body arrives byte for byte (CRLF on the wire)"
    );
}

#[test]
fn null_sender_and_seven_bit_mail() {
    let Some(server) = Aiosmtpd::start() else {
        return;
    };
    let ctx = relay_context(server.port, "");
    let m = message("", &["bob@example.net"], BODY);
    assert_eq!(send(&ctx, &m)[0].status, Status::Sent);
    let (meta, received) = server.received(0);
    assert_eq!(meta["mail_from"], "<>");
    assert!(!meta["mail_options"].to_string().contains("8BITMIME"));
    assert_eq!(
        received,
        String::from_utf8_lossy(BODY)
            .replace('\n', "\r\n")
            .into_bytes()
    );
}

// ---------------------------------------------------------------------------------------
// Faults.

#[test]
fn greeting_421_defers_as_refused_to_talk() {
    let server = Scripted::start(vec![vec![Say("421 4.3.2 test server busy, closing")]]);
    let ctx = relay_context(server.port, "");
    let outcomes = send(&ctx, &message("a@example.com", &["b@example.net"], BODY));
    assert_eq!(outcomes[0].status, Status::Deferred);
    assert_eq!(outcomes[0].dsn, "4.3.2");
    assert_eq!(
        outcomes[0].text,
        format!("host {LOCALHOST} refused to talk to me: 421 4.3.2 test server busy, closing")
    );
    server.finish();
}

#[test]
fn rcpt_451_defers_with_postfixs_words() {
    let server = Scripted::start(vec![script(&[
        greet(),
        vec![
            Expect("MAIL FROM:<a@example.com>"),
            Say("250 2.1.0 Ok"),
            Expect("RCPT TO:<b@example.net>"),
            Say("451 4.3.0 try later"),
            Expect("QUIT"),
            Say("221 Bye"),
        ],
    ])]);
    let ctx = relay_context(server.port, "");
    let outcomes = send(&ctx, &message("a@example.com", &["b@example.net"], BODY));
    assert_eq!(outcomes[0].status, Status::Deferred);
    assert_eq!(outcomes[0].dsn, "4.3.0");
    assert_eq!(
        outcomes[0].text,
        format!("host {LOCALHOST} said: 451 4.3.0 try later (in reply to RCPT TO command)")
    );
    let transcript = server.finish();
    assert!(!transcript.iter().any(|l| l == "DATA"), "{transcript:?}");
}

#[test]
fn one_rejected_recipient_bounces_and_the_other_is_sent() {
    let server = Scripted::start(vec![script(&[
        greet(),
        vec![
            Expect("MAIL FROM:<a@example.com>"),
            Say("250 2.1.0 Ok"),
            Expect("RCPT TO:<bad@example.net>"),
            Say("550 5.1.1 <bad@example.net>: Recipient address rejected: no such user"),
            Expect("RCPT TO:<good@example.net>"),
            Say("250 2.1.5 Ok"),
            Expect("DATA"),
            Say("354 go ahead"),
            Data,
            Say("250 2.0.0 Ok: queued as ABC123"),
            Expect("QUIT"),
            Say("221 Bye"),
        ],
    ])]);
    let ctx = relay_context(server.port, "");
    let m = message(
        "a@example.com",
        &["bad@example.net", "good@example.net"],
        BODY,
    );
    let outcomes = send(&ctx, &m);
    assert_eq!(outcomes[0].status, Status::Bounced);
    assert_eq!(outcomes[0].dsn, "5.1.1");
    assert_eq!(
        outcomes[0].text,
        format!(
            "host {LOCALHOST} said: 550 5.1.1 <bad@example.net>: Recipient address rejected: no such user (in reply to RCPT TO command)"
        )
    );
    let remote = outcomes[0].remote.clone().unwrap();
    assert_eq!(remote.mta, "127.0.0.1");
    assert_eq!(
        remote.reply,
        "550 5.1.1 <bad@example.net>: Recipient address rejected: no such user"
    );
    assert_eq!(outcomes[1].status, Status::Sent);
    assert_eq!(outcomes[1].text, "250 2.0.0 Ok: queued as ABC123");
    assert_eq!(outcomes[1].relay, format!("{LOCALHOST}:{}", server.port));
    server.finish();
}

#[test]
fn a_reply_after_data_applies_to_every_recipient() {
    let server = Scripted::start(vec![script(&[
        greet(),
        vec![
            Expect("MAIL FROM:"),
            Say("250 Ok"),
            Expect("RCPT TO:"),
            Say("250 Ok"),
            Expect("RCPT TO:"),
            Say("250 Ok"),
            Expect("DATA"),
            Say("354 go ahead"),
            Data,
            Say("554 5.7.1 spam"),
            Expect("QUIT"),
            Say("221 Bye"),
        ],
    ])]);
    let ctx = relay_context(server.port, "");
    let m = message("a@example.com", &["b@example.net", "c@example.net"], BODY);
    for o in send(&ctx, &m) {
        assert_eq!(o.status, Status::Bounced);
        assert_eq!(
            o.text,
            format!("host {LOCALHOST} said: 554 5.7.1 spam (in reply to end of DATA command)")
        );
    }
    server.finish();
}

#[test]
fn connection_dropped_during_data_defers() {
    let server = Scripted::start(vec![script(&[
        greet(),
        vec![
            Expect("MAIL FROM:"),
            Say("250 Ok"),
            Expect("RCPT TO:"),
            Say("250 Ok"),
            Expect("DATA"),
            Say("354 go ahead"),
            DropDuringData,
        ],
    ])]);
    let ctx = relay_context(server.port, "");
    // Large enough that the client is still writing when the server goes away.
    let mut body = BODY.to_vec();
    while body.len() < 16 << 20 {
        body.extend_from_slice(b"a line of filler text to make the message big enough\n");
    }
    let outcomes = send(&ctx, &message("a@example.com", &["b@example.net"], &body));
    assert_eq!(outcomes[0].status, Status::Deferred);
    assert_eq!(outcomes[0].dsn, "4.4.2");
    assert_eq!(
        outcomes[0].text,
        format!("lost connection with {LOCALHOST} while sending message body")
    );
    server.finish();
}

#[test]
fn a_silent_server_times_out() {
    let server = Scripted::start(vec![vec![Silence]]);
    let ctx = relay_context(server.port, "smtp_helo_timeout = 1s");
    let started = Instant::now();
    let outcomes = send(&ctx, &message("a@example.com", &["b@example.net"], BODY));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(outcomes[0].status, Status::Deferred);
    assert_eq!(
        outcomes[0].text,
        format!(
            "conversation with {LOCALHOST} timed out while receiving the initial server greeting"
        )
    );
}

#[test]
fn refused_connection_defers_and_the_next_relayhost_is_tried() {
    let dead = free_port();
    let ctx = relay_context(dead, "");
    let outcomes = send(&ctx, &message("a@example.com", &["b@example.net"], BODY));
    assert_eq!(outcomes[0].status, Status::Deferred);
    assert_eq!(outcomes[0].dsn, "4.4.1");
    assert_eq!(
        outcomes[0].text,
        format!("connect to {LOCALHOST}:{dead}: Connection refused")
    );

    let server = Scripted::start(vec![script(&[greet(), accept_all(1)])]);
    let ctx = context_with(
        &format!(
            "relayhost = [127.0.0.1]:{dead}, [127.0.0.1]:{}",
            server.port
        ),
        FakeResolver::default(),
    );
    let outcomes = send(&ctx, &message("a@example.com", &["b@example.net"], BODY));
    assert_eq!(outcomes[0].status, Status::Sent, "{:?}", outcomes[0]);
    assert_eq!(outcomes[0].relay, format!("{LOCALHOST}:{}", server.port));
    server.finish();
}

#[test]
fn mx_hosts_are_tried_in_preference_order() {
    // The better MX is busy (421), the backup takes the mail.
    let server = Scripted::start(vec![
        vec![Say("421 4.3.2 busy")],
        script(&[greet(), accept_all(2)]),
    ]);
    let mut resolver = FakeResolver::default();
    resolver.mx.insert(
        "example.test".into(),
        vec![
            (20, "mx2.example.test.".into()),
            (10, "mx1.example.test.".into()),
        ],
    );
    let localhost: IpAddr = "127.0.0.1".parse().unwrap();
    resolver
        .addresses
        .insert("mx1.example.test".into(), vec![localhost]);
    resolver
        .addresses
        .insert("mx2.example.test".into(), vec![localhost]);
    let mut ctx = context_with("", resolver);
    ctx.default_port = server.port;
    let m = message("a@example.com", &["b@example.test", "c@EXAMPLE.test"], BODY);
    assert_eq!(
        destination_key(&ctx, &m.recipients[0].address),
        destination_key(&ctx, &m.recipients[1].address)
    );
    for o in send(&ctx, &m) {
        assert_eq!(o.status, Status::Sent, "{o:?}");
        assert_eq!(
            o.relay,
            format!("mx2.example.test[127.0.0.1]:{}", server.port)
        );
    }
    let transcript = server.finish();
    assert_eq!(
        transcript.iter().filter(|l| l.starts_with("RCPT")).count(),
        2
    );
}

#[test]
fn unknown_domains_bounce_without_a_connection() {
    let ctx = context_with("", FakeResolver::default());
    let o = &send(&ctx, &message("a@example.com", &["b@nosuch.test"], BODY))[0];
    assert_eq!(o.status, Status::Bounced);
    assert_eq!(o.dsn, "5.4.4");
    assert_eq!(o.relay, "none");
    assert_eq!(
        o.text,
        "Host or domain name not found. Name service error for name=nosuch.test type=MX: Host not found"
    );
}

/// Changed by the port to lettre, which has no HELO fallback: Postfix (and mailroom
/// before) said HELO after a refused EHLO and delivered. Now the mail waits, with the
/// server's reply, instead of bouncing for the client's limitation; no HELO is sent.
#[test]
fn a_server_refusing_ehlo_defers_without_helo() {
    let server = Scripted::start(vec![vec![
        Say("220 old.example SMTP"),
        Expect("EHLO me.example"),
        Say("502 5.5.2 command not recognized"),
        Expect("HELO me.example"),
        Say("250 old.example"),
    ]]);
    let ctx = relay_context(server.port, "");
    let o = &send(&ctx, &message("a@example.com", &["b@example.net"], BODY))[0];
    assert_eq!(o.status, Status::Deferred, "{o:?}");
    assert_eq!(o.dsn, "4.5.2");
    assert_eq!(
        o.text,
        format!(
            "host {LOCALHOST} said: 502 5.5.2 command not recognized (in reply to EHLO command)"
        )
    );
    let transcript = server.finish();
    assert!(
        !transcript.iter().any(|l| l.starts_with("HELO")),
        "{transcript:?}"
    );
}

#[test]
fn a_message_larger_than_the_servers_size_bounces() {
    let server = Scripted::start(vec![vec![
        Say("220 small.example ESMTP"),
        Expect("EHLO"),
        Say("250-small.example\r\n250 SIZE 10"),
        Expect("EHLO"),
        Say("250-small.example\r\n250 SIZE 10"),
        Expect("QUIT"),
        Say("221 Bye"),
    ]]);
    let ctx = relay_context(server.port, "");
    let o = &send(&ctx, &message("a@example.com", &["b@example.net"], BODY))[0];
    assert_eq!(o.status, Status::Bounced);
    assert_eq!(o.dsn, "5.3.4");
    assert_eq!(
        o.text,
        format!(
            "message size {} exceeds size limit 10 of server {LOCALHOST}",
            BODY.len()
        )
    );
}

#[test]
fn dsn_parameters_go_to_a_server_that_offers_dsn() {
    let ehlo = "250-dsn.example\r\n250 DSN";
    let server = Scripted::start(vec![script(&[
        vec![
            Say("220 dsn.example ESMTP"),
            Expect("EHLO me.example"),
            Say(ehlo),
        ],
        ehlo_again(ehlo),
        accept_all(1),
    ])]);
    let ctx = relay_context(server.port, "");
    let mut m = message("a@example.com", &["b@example.net"], BODY);
    m.envelope.ret = "hdrs".into();
    m.envelope.envid = "id+1 x".into();
    m.recipients[0].notify = "success,failure".into();
    m.recipients[0].original = "B@example.net".into();
    assert_eq!(send(&ctx, &m)[0].status, Status::Sent);
    let transcript = server.finish();
    assert!(
        transcript.contains(&"MAIL FROM:<a@example.com> RET=HDRS ENVID=id+2B1+20x".to_string()),
        "{transcript:?}"
    );
    assert!(
        transcript.contains(
            &"RCPT TO:<b@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;B@example.net"
                .to_string()
        ),
        "{transcript:?}"
    );
}

/// Changed by the port to lettre, which keeps only the code and the text of a negative
/// reply: a refusal of several lines reads as one line, its enhanced status code once.
#[test]
fn a_refusal_of_several_lines_reads_as_one() {
    let server = Scripted::start(vec![script(&[
        greet(),
        vec![
            Expect("MAIL FROM:"),
            Say("250 Ok"),
            Expect("RCPT TO:"),
            Say("550-5.7.1 first line\r\n550 5.7.1 second line"),
            Expect("QUIT"),
            Say("221 Bye"),
        ],
    ])]);
    let ctx = relay_context(server.port, "");
    let o = &send(&ctx, &message("a@example.com", &["b@example.net"], BODY))[0];
    assert_eq!(o.status, Status::Bounced);
    assert_eq!(o.dsn, "5.7.1");
    assert_eq!(
        o.text,
        format!(
            "host {LOCALHOST} said: 550 5.7.1 first line second line (in reply to RCPT TO command)"
        )
    );
    server.finish();
}

#[test]
fn a_reply_that_is_not_smtp_defers() {
    let server = Scripted::start(vec![script(&[
        greet(),
        vec![Expect("MAIL FROM:"), Say("hello there")],
    ])]);
    let ctx = relay_context(server.port, "");
    let o = &send(&ctx, &message("a@example.com", &["b@example.net"], BODY))[0];
    assert_eq!(o.status, Status::Deferred);
    assert_eq!(o.dsn, "4.5.0");
    assert_eq!(
        o.text,
        format!("host {LOCALHOST} sent a malformed reply (in reply to MAIL FROM command)")
    );
    server.finish();
}

// ---------------------------------------------------------------------------------------
// TLS, with a certificate made for the test.

struct TestCert {
    _dir: tempfile::TempDir,
    /// The CA that signed the server's certificate (for smtp_tls_CAfile).
    ca: PathBuf,
    /// The server's certificate chain and key.
    cert: PathBuf,
    key: PathBuf,
}

/// A throw-away CA and a server certificate it signed for localhost and 127.0.0.1; None
/// (the test returns) when openssl is not installed.
fn test_certificates() -> Option<TestCert> {
    if !require_tool("openssl") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-days", "2", "-subj", "/CN=Test CA"],
            &["-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=localhost",
                "-keyout",
                "key.pem",
                "-out",
                "req.pem",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "req.pem",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "leaf.pem",
    ]);
    let chain = [
        std::fs::read(p("leaf.pem")).unwrap(),
        std::fs::read(p("ca.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(p("chain.pem"), chain).unwrap();
    Some(TestCert {
        ca: p("ca.pem"),
        cert: p("chain.pem"),
        key: p("key.pem"),
        _dir: dir,
    })
}

fn server_tls(cert: &TestCert) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(&cert.cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(&cert.key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    Arc::new(config)
}

fn starttls_offer() -> Vec<Step> {
    vec![
        Say("220 tls.example ESMTP"),
        Expect("EHLO me.example"),
        Say("250-tls.example\r\n250-STARTTLS\r\n250 8BITMIME"),
        Expect("STARTTLS"),
        Say("220 2.0.0 Ready to start TLS"),
        Tls,
        Expect("EHLO me.example"),
        Say("250-tls.example\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME"),
        Expect("EHLO me.example"),
        Say("250-tls.example\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME"),
    ]
}

#[test]
fn may_uses_starttls_without_checking_a_self_signed_certificate() {
    let Some(cert) = test_certificates() else {
        return;
    };
    let server = Scripted::start_tls(
        vec![script(&[starttls_offer(), accept_all(1)])],
        Some(server_tls(&cert)),
    );
    let ctx = relay_context(server.port, "smtp_tls_security_level = may");
    let o = &send(&ctx, &message("a@example.com", &["b@example.net"], BODY))[0];
    assert_eq!(o.status, Status::Sent, "{o:?}");
    let transcript = server.finish();
    let tls_at = transcript.iter().position(|l| l == "<TLS>").unwrap();
    let mail_at = transcript
        .iter()
        .position(|l| l.starts_with("MAIL"))
        .unwrap();
    assert!(tls_at < mail_at, "{transcript:?}");
}

#[test]
fn verify_refuses_a_certificate_from_an_unknown_ca() {
    let Some(cert) = test_certificates() else {
        return;
    };
    let server = Scripted::start_tls(vec![starttls_offer()], Some(server_tls(&cert)));
    let ctx = relay_context(server.port, "smtp_tls_security_level = verify");
    let o = &send(&ctx, &message("a@example.com", &["b@example.net"], BODY))[0];
    assert_eq!(o.status, Status::Deferred);
    assert_eq!(o.dsn, "4.7.5");
    assert_eq!(
        o.text,
        format!("Server certificate not verified: {LOCALHOST}")
    );
}

#[test]
fn verify_accepts_a_certificate_from_smtp_tls_cafile() {
    let Some(cert) = test_certificates() else {
        return;
    };
    let server = Scripted::start_tls(
        vec![script(&[starttls_offer(), accept_all(1)])],
        Some(server_tls(&cert)),
    );
    let ctx = relay_context(
        server.port,
        &format!(
            "smtp_tls_security_level = secure\nsmtp_tls_CAfile = {}",
            cert.ca.display()
        ),
    );
    let o = &send(&ctx, &message("a@example.com", &["b@example.net"], BODY))[0];
    assert_eq!(o.status, Status::Sent, "{o:?}");
    server.finish();
}

#[test]
fn encrypt_defers_when_starttls_is_not_offered() {
    let server = Scripted::start(vec![script(&[
        greet_once(),
        vec![Expect("QUIT"), Say("221 Bye")],
    ])]);
    let ctx = relay_context(server.port, "smtp_tls_security_level = encrypt");
    let o = &send(&ctx, &message("a@example.com", &["b@example.net"], BODY))[0];
    assert_eq!(o.status, Status::Deferred);
    assert_eq!(o.dsn, "4.7.4");
    assert_eq!(
        o.text,
        format!("TLS is required, but was not offered by host {LOCALHOST}")
    );
    let transcript = server.finish();
    assert!(
        !transcript.iter().any(|l| l.starts_with("MAIL")),
        "{transcript:?}"
    );
    assert_eq!(transcript.last().map(String::as_str), Some("QUIT"));
}

#[test]
fn may_retries_in_plain_text_when_the_handshake_fails() {
    // The first session's "TLS" is garbage; the retry never says STARTTLS.
    let server = Scripted::start(vec![
        vec![
            Say("220 tls.example ESMTP"),
            Expect("EHLO me.example"),
            Say("250-tls.example\r\n250 STARTTLS"),
            Expect("STARTTLS"),
            Say("220 2.0.0 Ready to start TLS"),
            Say("this is not a TLS server hello"),
        ],
        script(&[
            vec![
                Say("220 tls.example ESMTP"),
                Expect("EHLO me.example"),
                Say("250-tls.example\r\n250 STARTTLS"),
            ],
            ehlo_again("250-tls.example\r\n250 STARTTLS"),
            accept_all(1),
        ]),
    ]);
    let ctx = relay_context(server.port, "smtp_tls_security_level = may");
    let o = &send(&ctx, &message("a@example.com", &["b@example.net"], BODY))[0];
    assert_eq!(o.status, Status::Sent, "{o:?}");
    server.finish();
}

/// lettre closes the connection when STARTTLS is refused, so `may` goes on in plain text
/// over a new one (the old client stayed on the same connection).
#[test]
fn may_retries_in_plain_text_when_starttls_is_refused() {
    let offer = "250-tls.example\r\n250 STARTTLS";
    let server = Scripted::start(vec![
        vec![
            Say("220 tls.example ESMTP"),
            Expect("EHLO me.example"),
            Say(offer),
            Expect("STARTTLS"),
            Say("454 4.7.0 TLS not available"),
            Expect("QUIT"),
        ],
        script(&[
            vec![
                Say("220 tls.example ESMTP"),
                Expect("EHLO me.example"),
                Say(offer),
            ],
            ehlo_again(offer),
            accept_all(1),
        ]),
    ]);
    let ctx = relay_context(server.port, "smtp_tls_security_level = may");
    let o = &send(&ctx, &message("a@example.com", &["b@example.net"], BODY))[0];
    assert_eq!(o.status, Status::Sent, "{o:?}");
    let transcript = server.finish();
    assert_eq!(
        transcript.iter().filter(|l| *l == "STARTTLS").count(),
        1,
        "{transcript:?}"
    );
}

#[test]
fn encrypt_defers_when_starttls_is_refused() {
    let server = Scripted::start(vec![vec![
        Say("220 tls.example ESMTP"),
        Expect("EHLO me.example"),
        Say("250-tls.example\r\n250 STARTTLS"),
        Expect("STARTTLS"),
        Say("454 4.7.0 TLS not available"),
    ]]);
    let ctx = relay_context(server.port, "smtp_tls_security_level = encrypt");
    let o = &send(&ctx, &message("a@example.com", &["b@example.net"], BODY))[0];
    assert_eq!(o.status, Status::Deferred);
    assert_eq!(o.dsn, "4.7.4");
    assert_eq!(
        o.text,
        format!(
            "TLS is required, but host {LOCALHOST} refused to start TLS: 454 4.7.0 TLS not available"
        )
    );
    server.finish();
}

// ---------------------------------------------------------------------------------------
// AUTH.

fn password_file(dir: &Path, line: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("sasl_passwd");
    std::fs::write(&path, format!("{line}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn auth_offer() -> Vec<Step> {
    vec![
        Say("220 relay.example ESMTP"),
        Expect("EHLO me.example"),
        Say("250-relay.example\r\n250-AUTH LOGIN PLAIN\r\n250 8BITMIME"),
        Expect("EHLO me.example"),
        Say("250-relay.example\r\n250-AUTH LOGIN PLAIN\r\n250 8BITMIME"),
    ]
}

#[test]
fn auth_uses_the_password_map() {
    let dir = tempfile::tempdir().unwrap();
    let server = Scripted::start(vec![script(&[
        auth_offer(),
        vec![
            Expect("AUTH PLAIN "),
            Say("235 2.7.0 Authentication successful"),
        ],
        accept_all(1),
    ])]);
    let map = password_file(
        dir.path(),
        &format!("[127.0.0.1]:{} relayuser:s3cret:pw", server.port),
    );
    let ctx = relay_context(
        server.port,
        &format!(
            "smtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = hash:{}\n\
             smtp_sasl_security_options = noanonymous",
            map.display()
        ),
    );
    let o = &send(&ctx, &message("a@example.com", &["b@example.net"], BODY))[0];
    assert_eq!(o.status, Status::Sent, "{o:?}");
    let transcript = server.finish();
    let auth = transcript.iter().find(|l| l.starts_with("AUTH")).unwrap();
    // base64("\0relayuser\0s3cret:pw")
    assert_eq!(auth, "AUTH PLAIN AHJlbGF5dXNlcgBzM2NyZXQ6cHc=");
}

#[test]
fn auth_failure_defers_with_the_servers_reply() {
    let dir = tempfile::tempdir().unwrap();
    let server = Scripted::start(vec![script(&[
        auth_offer(),
        vec![
            Expect("AUTH PLAIN "),
            Say("535 5.7.8 Error: authentication failed"),
            Expect("QUIT"),
            Say("221 Bye"),
        ],
    ])]);
    let map = password_file(dir.path(), "127.0.0.1 relayuser:wrong");
    let ctx = relay_context(
        server.port,
        &format!(
            "smtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = texthash:{}\n\
             smtp_sasl_security_options = noanonymous",
            map.display()
        ),
    );
    let o = &send(&ctx, &message("a@example.com", &["b@example.net"], BODY))[0];
    assert_eq!(o.status, Status::Deferred);
    assert_eq!(o.dsn, "4.7.8");
    assert_eq!(
        o.text,
        format!(
            "SASL authentication failed; server {LOCALHOST} said: 535 5.7.8 Error: authentication failed"
        )
    );
}

#[test]
fn no_password_goes_out_unencrypted_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let server = Scripted::start(vec![script(&[
        auth_offer(),
        vec![Expect("QUIT"), Say("221 Bye")],
    ])]);
    let map = password_file(dir.path(), "127.0.0.1 relayuser:secret");
    let ctx = relay_context(
        server.port,
        &format!(
            "smtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = hash:{}",
            map.display()
        ),
    );
    let o = &send(&ctx, &message("a@example.com", &["b@example.net"], BODY))[0];
    assert_eq!(o.status, Status::Deferred);
    assert_eq!(
        o.text,
        format!(
            "SASL authentication failed; cannot authenticate to server {LOCALHOST}: no mechanism available"
        )
    );
    let transcript = server.finish();
    assert!(
        !transcript.iter().any(|l| l.starts_with("AUTH")),
        "{transcript:?}"
    );
}

#[test]
fn auth_over_starttls_with_the_default_security_options() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cert) = test_certificates() else {
        return;
    };
    let server = Scripted::start_tls(
        vec![script(&[
            starttls_offer(),
            vec![Expect("AUTH PLAIN "), Say("235 2.7.0 Ok")],
            accept_all(1),
        ])],
        Some(server_tls(&cert)),
    );
    let map = password_file(dir.path(), "127.0.0.1 relayuser:secret");
    let ctx = relay_context(
        server.port,
        &format!(
            "smtp_tls_security_level = encrypt\nsmtp_sasl_auth_enable = yes\n\
             smtp_sasl_password_maps = hash:{}",
            map.display()
        ),
    );
    let o = &send(&ctx, &message("a@example.com", &["b@example.net"], BODY))[0];
    assert_eq!(o.status, Status::Sent, "{o:?}");
    server.finish();
}
