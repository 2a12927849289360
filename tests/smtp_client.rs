//! The SMTP delivery agent against servers on 127.0.0.1: a real one (Python's aiosmtpd)
//! for what arrives, and scripted ones of our own for every way a server can fail. The
//! table-driven cases deliver through a `mailroom smtp-agent` process, as the daemon does
//! (as `mail_owner` when run as root); the routing cases call the library in this process
//! with a fake resolver. Nothing here leaves the machine.

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
use mailroom::deliver::smtp::agent::AgentProcess;
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
const MAILROOM: &str = env!("CARGO_BIN_EXE_mailroom");

/// A context with short timeouts and `extra` main.cf lines.
fn context_with(extra: &str, resolver: FakeResolver) -> SmtpContext {
    let text = config_text(extra);
    let config = Config::from_text(&text, Path::new("/nonexistent/main.cf"));
    SmtpContext::from_config(&config)
        .expect("config")
        .with_resolver(Arc::new(resolver))
        .with_log(Arc::new(Log::discard()))
}

/// main.cf with short timeouts and `extra` lines.
fn config_text(extra: &str) -> String {
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
    text
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

/// A `mailroom smtp-agent` process, as the daemon starts one, relaying to `port` with
/// `extra` main.cf lines (written to `dir`).
fn relay_agent(dir: &Path, port: u16, extra: &str) -> AgentProcess {
    let text = config_text(&format!("relayhost = [127.0.0.1]:{port}\n{extra}"));
    let owner = common::privilege_separation(dir);
    std::fs::write(dir.join("main.cf"), format!("{text}{owner}")).unwrap();
    AgentProcess::start(Path::new(MAILROOM), dir).expect("the agent starts")
}

/// Delivers `m` through `agent`, as the daemon does.
fn send_through(agent: &mut AgentProcess, m: &Message) -> Vec<Outcome> {
    let refs: Vec<&Recipient> = m.recipients.iter().collect();
    let message = MessageSource::for_envelope(&m.file, &m.envelope);
    agent
        .deliver(&m.envelope, message, &refs, Duration::from_secs(120))
        .expect("a reply from the agent")
        .outcomes
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

/// The server answers a command that starts with `command` with `reply`.
fn answer(command: &'static str, reply: &'static str) -> Vec<Step> {
    vec![Expect(command), Say(reply)]
}

fn script(parts: &[Vec<Step>]) -> Vec<Step> {
    parts.concat()
}

// ---------------------------------------------------------------------------------------
// Table-driven cases: a scripted server, a message from a@example.com, and what must come
// of it. Each family of behaviour is one test that runs its table; a failure names the case.

/// One conversation with the scripted server.
struct Case {
    name: &'static str,
    /// One script a connection the client makes.
    sessions: Vec<Vec<Step>>,
    /// main.cf lines; `{cafile}` stands for the test CA, `{map}` for the password map.
    config: &'static str,
    /// The password map's one line; `{port}` stands for the server's port.
    password: Option<&'static str>,
    /// The server has a certificate from the test CA (skipped without openssl).
    tls: bool,
    recipients: &'static [&'static str],
    /// A message large enough that the client is still writing when the server goes away.
    big: bool,
    /// How long the whole delivery may take.
    within: Option<Duration>,
    /// One a recipient, in order.
    want: Vec<Want>,
    /// What the server must (not) have heard.
    heard: Vec<Heard>,
}

impl Default for Case {
    fn default() -> Case {
        Case {
            name: "",
            sessions: Vec::new(),
            config: "",
            password: None,
            tls: false,
            recipients: &["b@example.net"],
            big: false,
            within: None,
            want: Vec::new(),
            heard: Vec::new(),
        }
    }
}

/// A recipient's outcome. An empty string is not checked; in the strings, `{host}` stands
/// for the server's name and address, `{port}` for its port, `{size}` for the message size.
#[derive(Clone)]
struct Want {
    status: Status,
    dsn: &'static str,
    text: &'static str,
    relay: &'static str,
    /// The remote MTA and its reply, for a bounce that reports them.
    remote: Option<(&'static str, &'static str)>,
}

fn sent() -> Want {
    Want {
        status: Status::Sent,
        dsn: "",
        text: "",
        relay: "",
        remote: None,
    }
}

fn deferred(dsn: &'static str, text: &'static str) -> Want {
    Want {
        status: Status::Deferred,
        dsn,
        text,
        ..sent()
    }
}

fn bounced(dsn: &'static str, text: &'static str) -> Want {
    Want {
        status: Status::Bounced,
        dsn,
        text,
        ..sent()
    }
}

/// A check of the server's transcript (the lines the client sent).
#[derive(Clone)]
enum Heard {
    /// No line starts with this.
    Never(&'static str),
    /// The first line that starts with the prefix is this one.
    First(&'static str, &'static str),
    /// This exact line, so many times.
    Times(&'static str, usize),
    /// The last line.
    Last(&'static str),
    /// A line starting with the first prefix comes before any starting with the second.
    Before(&'static str, &'static str),
}

impl Heard {
    fn check(&self, name: &str, transcript: &[String]) {
        let first = |prefix: &str| transcript.iter().position(|l| l.starts_with(prefix));
        match *self {
            Heard::Never(prefix) => assert!(
                first(prefix).is_none(),
                "{name}: no {prefix} wanted: {transcript:?}"
            ),
            Heard::First(prefix, line) => assert_eq!(
                first(prefix).map(|n| transcript[n].as_str()),
                Some(line),
                "{name}: {transcript:?}"
            ),
            Heard::Times(line, n) => assert_eq!(
                transcript.iter().filter(|l| *l == line).count(),
                n,
                "{name}: {line} {n} times wanted: {transcript:?}"
            ),
            Heard::Last(line) => assert_eq!(
                transcript.last().map(String::as_str),
                Some(line),
                "{name}: {transcript:?}"
            ),
            Heard::Before(a, b) => {
                let (a_at, b_at) = (first(a), first(b));
                assert!(
                    a_at.is_some() && b_at.is_some() && a_at < b_at,
                    "{name}: {a} before {b} wanted: {transcript:?}"
                );
            }
        }
    }
}

/// Runs every case; those that need a certificate are skipped without openssl.
fn run(cases: Vec<Case>) {
    let cert = if cases.iter().any(|c| c.tls) {
        test_certificates()
    } else {
        None
    };
    for case in cases {
        match (&cert, case.tls) {
            (None, true) => {}
            (Some(cert), true) => run_one(case, Some(cert)),
            (_, false) => run_one(case, None),
        }
    }
}

fn run_one(case: Case, cert: Option<&TestCert>) {
    let name = case.name;
    let dir = tempfile::tempdir().unwrap();
    let server = Scripted::start_tls(case.sessions, cert.map(server_tls));
    let port = server.port.to_string();
    let mut config = case.config.to_string();
    if let Some(line) = case.password {
        let map = password_file(dir.path(), &line.replace("{port}", &port));
        config = config.replace("{map}", &map.display().to_string());
    }
    if let Some(cert) = cert {
        config = config.replace("{cafile}", &cert.ca.display().to_string());
    }
    // Through an agent process, as the daemon delivers.
    let mut agent = relay_agent(dir.path(), server.port, &config);
    let mut body = BODY.to_vec();
    while case.big && body.len() < 16 << 20 {
        body.extend_from_slice(b"a line of filler text to make the message big enough\n");
    }
    let expand = |text: &str| {
        text.replace("{host}", LOCALHOST)
            .replace("{port}", &port)
            .replace("{size}", &body.len().to_string())
    };
    let started = Instant::now();
    let outcomes = send_through(
        &mut agent,
        &message("a@example.com", case.recipients, &body),
    );
    if let Some(limit) = case.within {
        let took = started.elapsed();
        assert!(took < limit, "{name}: took {took:?}, more than {limit:?}");
    }
    assert_eq!(outcomes.len(), case.want.len(), "{name}: {outcomes:?}");
    for (n, (o, want)) in outcomes.iter().zip(&case.want).enumerate() {
        let what = format!("{name}: recipient {n}: {o:?}");
        assert_eq!(o.status, want.status, "{what}");
        // The DSN as it is printed (in log lines and bounces), compared as text.
        let dsn = o.dsn.to_string();
        for (got, wanted) in [
            (&dsn, want.dsn),
            (&o.text, want.text),
            (&o.relay, want.relay),
        ] {
            if !wanted.is_empty() {
                assert_eq!(*got, expand(wanted), "{what}");
            }
        }
        if let Some((mta, reply)) = want.remote {
            let remote = o.remote.as_ref().expect(&what);
            assert_eq!(
                (remote.mta.as_str(), remote.reply.as_str()),
                (mta, reply),
                "{what}"
            );
        }
    }
    // The agent keeps a connection that delivered for its next job; closing it makes
    // it say QUIT now rather than after smtp_connection_cache_time_limit.
    drop(agent);
    let transcript = server.finish();
    for heard in &case.heard {
        heard.check(name, &transcript);
    }
}

// ---------------------------------------------------------------------------------------
// A real server: aiosmtpd.

/// What a real server receives: one transaction for all recipients, the sender as given
/// (`<>` for the null one), BODY=8BITMIME only for 8-bit mail, the body byte for byte.
#[test]
fn mail_arrives_at_a_real_server_once_and_byte_exact() {
    struct Arrival {
        name: &'static str,
        sender: &'static str,
        recipients: &'static [&'static str],
        body: &'static str,
        mail_from: &'static str,
        eight_bit: bool,
    }
    let cases = [
        Arrival {
            name: "several recipients, 8-bit, no final newline",
            sender: "alice@example.com",
            recipients: &["bob@example.net", "carol@example.org", "dave@example.net"],
            body: "From: alice@example.com\nTo: bob@example.net\nSubject: caf\u{e9}\n\n\
                   .a line starting with a dot\n..two dots\nlast line without newline",
            mail_from: "alice@example.com",
            eight_bit: true,
        },
        Arrival {
            name: "null sender, 7-bit",
            sender: "",
            recipients: &["bob@example.net"],
            body: "From: alice@example.com\nSubject: test\n\nhello\n.dotted line\n",
            mail_from: "<>",
            eight_bit: false,
        },
    ];
    // Each case to a server that offers PIPELINING, which gets the envelope in one go,
    // and to one that does not, which gets each command after the reply to the last.
    for (case, pipelining) in cases.iter().flat_map(|c| [(c, false), (c, true)]) {
        let name = format!(
            "{}{}",
            case.name,
            if pipelining { ", pipelined" } else { "" }
        );
        let server = match pipelining {
            true => Aiosmtpd::start_pipelining(),
            false => Aiosmtpd::start(),
        };
        let Some(server) = server else {
            return;
        };
        let ctx = relay_context(server.port, "");
        let m = message(case.sender, case.recipients, case.body.as_bytes());
        for o in &send(&ctx, &m) {
            assert_eq!(o.status, Status::Sent, "{name}: {o:?}");
            assert_eq!(o.text, "250 2.0.0 Ok: queued as PY1", "{name}");
            assert_eq!(o.relay, format!("{LOCALHOST}:{}", server.port), "{name}");
            assert_eq!(o.dsn.to_string(), "2.0.0", "{name}");
        }
        let (meta, received) = server.received(0);
        assert_eq!(
            server.count(),
            1,
            "{name}: one transaction for all recipients"
        );
        assert_eq!(meta["mail_from"], case.mail_from, "{name}");
        assert_eq!(meta["pipelined"], pipelining, "{name}");
        assert_eq!(
            meta["rcpt_tos"],
            serde_json::json!(case.recipients),
            "{name}"
        );
        let options = meta["mail_options"].to_string();
        assert_eq!(
            options.contains("BODY=8BITMIME"),
            case.eight_bit,
            "{name}: {options}"
        );
        if !case.eight_bit {
            assert!(!options.contains("8BITMIME"), "{name}: {options}");
        }
        let mut expected = case.body.replace('\n', "\r\n");
        if !expected.ends_with("\r\n") {
            expected.push_str("\r\n");
        }
        assert_eq!(
            String::from_utf8_lossy(&received),
            expected,
            "{name}: the body arrives byte for byte (CRLF on the wire)"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Faults.

/// Every way a server refuses or fails, in Postfix's words: the status, the enhanced
/// code and the text of each recipient's outcome.
#[test]
fn refusals_and_faults_defer_or_bounce_in_postfixs_words() {
    run(vec![
        Case {
            name: "greeting 421",
            sessions: vec![vec![Say("421 4.3.2 test server busy, closing")]],
            want: vec![deferred(
                "4.3.2",
                "host {host} refused to talk to me: 421 4.3.2 test server busy, closing",
            )],
            ..Case::default()
        },
        Case {
            name: "RCPT 451",
            sessions: vec![script(&[
                greet(),
                answer("MAIL FROM:<a@example.com>", "250 2.1.0 Ok"),
                answer("RCPT TO:<b@example.net>", "451 4.3.0 try later"),
                answer("QUIT", "221 Bye"),
            ])],
            want: vec![deferred(
                "4.3.0",
                "host {host} said: 451 4.3.0 try later (in reply to RCPT TO command)",
            )],
            heard: vec![Heard::Never("DATA")],
            ..Case::default()
        },
        Case {
            name: "one recipient rejected, the other sent",
            sessions: vec![script(&[
                greet(),
                answer("MAIL FROM:<a@example.com>", "250 2.1.0 Ok"),
                answer(
                    "RCPT TO:<bad@example.net>",
                    "550 5.1.1 <bad@example.net>: Recipient address rejected: no such user",
                ),
                answer("RCPT TO:<good@example.net>", "250 2.1.5 Ok"),
                answer("DATA", "354 go ahead"),
                vec![Data, Say("250 2.0.0 Ok: queued as ABC123")],
                answer("QUIT", "221 Bye"),
            ])],
            recipients: &["bad@example.net", "good@example.net"],
            want: vec![
                Want {
                    remote: Some((
                        "127.0.0.1",
                        "550 5.1.1 <bad@example.net>: Recipient address rejected: no such user",
                    )),
                    ..bounced(
                        "5.1.1",
                        "host {host} said: 550 5.1.1 <bad@example.net>: Recipient address rejected: no such user (in reply to RCPT TO command)",
                    )
                },
                Want {
                    text: "250 2.0.0 Ok: queued as ABC123",
                    relay: "{host}:{port}",
                    ..sent()
                },
            ],
            ..Case::default()
        },
        Case {
            name: "a reply after DATA applies to every recipient",
            sessions: vec![script(&[
                greet(),
                answer("MAIL FROM:", "250 Ok"),
                answer("RCPT TO:", "250 Ok"),
                answer("RCPT TO:", "250 Ok"),
                answer("DATA", "354 go ahead"),
                vec![Data, Say("554 5.7.1 spam")],
                answer("QUIT", "221 Bye"),
            ])],
            recipients: &["b@example.net", "c@example.net"],
            want: vec![
                bounced(
                    "",
                    "host {host} said: 554 5.7.1 spam (in reply to end of DATA command)",
                );
                2
            ],
            ..Case::default()
        },
        Case {
            name: "connection dropped during DATA",
            sessions: vec![script(&[
                greet(),
                answer("MAIL FROM:", "250 Ok"),
                answer("RCPT TO:", "250 Ok"),
                answer("DATA", "354 go ahead"),
                vec![DropDuringData],
            ])],
            big: true,
            want: vec![deferred(
                "4.4.2",
                "lost connection with {host} while sending message body",
            )],
            ..Case::default()
        },
        Case {
            name: "a silent server times out",
            sessions: vec![vec![Silence]],
            config: "smtp_helo_timeout = 1s",
            within: Some(Duration::from_secs(3)),
            want: vec![deferred(
                "",
                "conversation with {host} timed out while receiving the initial server greeting",
            )],
            ..Case::default()
        },
        // Changed by the port to lettre, which has no HELO fallback: Postfix (and
        // mailroom before) said HELO after a refused EHLO and delivered. Now the mail
        // waits, with the server's reply, instead of bouncing for the client's
        // limitation; no HELO is sent.
        Case {
            name: "EHLO refused: deferred, without HELO",
            sessions: vec![script(&[
                vec![Say("220 old.example SMTP")],
                answer("EHLO me.example", "502 5.5.2 command not recognized"),
                answer("HELO me.example", "250 old.example"),
            ])],
            want: vec![deferred(
                "4.5.2",
                "host {host} said: 502 5.5.2 command not recognized (in reply to EHLO command)",
            )],
            heard: vec![Heard::Never("HELO")],
            ..Case::default()
        },
        Case {
            name: "a message larger than the server's SIZE",
            sessions: vec![script(&[
                vec![Say("220 small.example ESMTP")],
                answer("EHLO", "250-small.example\r\n250 SIZE 10"),
                answer("EHLO", "250-small.example\r\n250 SIZE 10"),
                answer("QUIT", "221 Bye"),
            ])],
            want: vec![bounced(
                "5.3.4",
                "message size {size} exceeds size limit 10 of server {host}",
            )],
            ..Case::default()
        },
        // Changed by the port to lettre, which keeps only the code and the text of a
        // negative reply: a refusal of several lines reads as one line, its enhanced
        // status code once.
        Case {
            name: "a refusal of several lines reads as one",
            sessions: vec![script(&[
                greet(),
                answer("MAIL FROM:", "250 Ok"),
                answer("RCPT TO:", "550-5.7.1 first line\r\n550 5.7.1 second line"),
                answer("QUIT", "221 Bye"),
            ])],
            want: vec![bounced(
                "5.7.1",
                "host {host} said: 550 5.7.1 first line second line (in reply to RCPT TO command)",
            )],
            ..Case::default()
        },
        Case {
            name: "a reply that is not SMTP",
            sessions: vec![script(&[greet(), answer("MAIL FROM:", "hello there")])],
            want: vec![deferred(
                "4.5.0",
                "host {host} sent a malformed reply (in reply to MAIL FROM command)",
            )],
            ..Case::default()
        },
    ]);
}

/// A server that offers PIPELINING (RFC 2920) gets MAIL FROM, every RCPT TO and DATA
/// before it says anything (the scripted server logs `NOT PIPELINED` if it has to wait),
/// and each reply still decides what it decides one command at a time.
#[test]
fn pipelining_sends_the_envelope_in_one_go_and_reads_each_reply() {
    /// The one session of a case: a server that offers PIPELINING reads `envelope` in one
    /// go, says `replies` in order, then goes on with `after`.
    fn session(
        envelope: &'static [&'static str],
        replies: &[&'static str],
        after: Vec<Step>,
    ) -> Vec<Vec<Step>> {
        let mut steps = script(&[
            greet_once(),
            ehlo_again("250-test.example\r\n250-PIPELINING\r\n250 8BITMIME"),
        ]);
        steps.push(Together(envelope));
        steps.extend(replies.iter().map(|&t| Say(t)));
        steps.extend(after);
        vec![steps]
    }
    /// What the server heard: the whole envelope before any reply, then `more`.
    fn without_waiting(more: Vec<Heard>) -> Vec<Heard> {
        [
            vec![Heard::Never("NOT PIPELINED"), Heard::Never("UNEXPECTED")],
            more,
        ]
        .concat()
    }
    const QUEUED: &str = "250 2.0.0 Ok: queued as ABC123";
    const ONE: &[&str] = &[
        "MAIL FROM:<a@example.com>",
        "RCPT TO:<b@example.net>",
        "DATA",
    ];
    const TWO: &[&str] = &[
        "MAIL FROM:<a@example.com>",
        "RCPT TO:<b@example.net>",
        "RCPT TO:<c@example.net>",
        "DATA",
    ];
    let queued = || script(&[vec![Data, Say(QUEUED)], answer("QUIT", "221 Bye")]);
    let quit = || answer("QUIT", "221 Bye");
    let mail_refused = "host {host} said: 553 5.7.1 <a@example.com>: Sender address rejected (in reply to MAIL FROM command)";
    let no_such_user =
        "host {host} said: 550 5.1.1 <b@example.net>: no such user (in reply to RCPT TO command)";
    run(vec![
        Case {
            name: "two recipients, one round trip for the envelope",
            sessions: session(
                TWO,
                &[
                    "250 2.1.0 Ok",
                    "250 2.1.5 Ok",
                    "250 2.1.5 Ok",
                    "354 go ahead",
                ],
                queued(),
            ),
            recipients: &["b@example.net", "c@example.net"],
            want: vec![
                Want {
                    text: QUEUED,
                    relay: "{host}:{port}",
                    ..sent()
                };
                2
            ],
            heard: without_waiting(vec![Heard::Times("DATA 5 lines", 1)]),
            ..Case::default()
        },
        Case {
            name: "MAIL FROM refused: every recipient takes its reply, no message is sent",
            sessions: session(
                TWO,
                &[
                    "553 5.7.1 <a@example.com>: Sender address rejected",
                    "503 5.5.1 Error: need MAIL command",
                    "503 5.5.1 Error: need MAIL command",
                    "503 5.5.1 Error: need RCPT command",
                ],
                quit(),
            ),
            recipients: &["b@example.net", "c@example.net"],
            want: vec![bounced("5.7.1", mail_refused); 2],
            heard: without_waiting(vec![Heard::Never("DATA "), Heard::Last("QUIT")]),
            ..Case::default()
        },
        Case {
            name: "one recipient refused, the other sent",
            sessions: session(
                TWO,
                &[
                    "250 2.1.0 Ok",
                    "550 5.1.1 <b@example.net>: no such user",
                    "250 2.1.5 Ok",
                    "354 go ahead",
                ],
                queued(),
            ),
            recipients: &["b@example.net", "c@example.net"],
            want: vec![
                bounced("5.1.1", no_such_user),
                Want {
                    text: QUEUED,
                    ..sent()
                },
            ],
            heard: without_waiting(vec![]),
            ..Case::default()
        },
        Case {
            name: "every recipient refused: DATA's refusal is set aside",
            sessions: session(
                ONE,
                &[
                    "250 2.1.0 Ok",
                    "550 5.1.1 <b@example.net>: no such user",
                    "554 5.5.1 Error: no valid recipients",
                ],
                quit(),
            ),
            want: vec![bounced("5.1.1", no_such_user)],
            heard: without_waiting(vec![Heard::Never("DATA "), Heard::Last("QUIT")]),
            ..Case::default()
        },
        Case {
            name: "354 with no recipient: the empty message is ended with its dot",
            sessions: session(
                ONE,
                &[
                    "250 2.1.0 Ok",
                    "550 5.1.1 <b@example.net>: no such user",
                    "354 go ahead",
                ],
                script(&[
                    vec![Data, Say("554 5.5.1 Error: no valid recipients")],
                    quit(),
                ]),
            ),
            want: vec![bounced("5.1.1", no_such_user)],
            heard: without_waiting(vec![Heard::Times("DATA 0 lines", 1)]),
            ..Case::default()
        },
        Case {
            name: "DATA refused: every accepted recipient takes its reply",
            sessions: session(
                ONE,
                &["250 2.1.0 Ok", "250 2.1.5 Ok", "451 4.3.0 try again later"],
                quit(),
            ),
            want: vec![deferred(
                "4.3.0",
                "host {host} said: 451 4.3.0 try again later (in reply to DATA command)",
            )],
            heard: without_waiting(vec![Heard::Never("DATA ")]),
            ..Case::default()
        },
        Case {
            name: "the connection lost before the first reply",
            sessions: session(ONE, &[], vec![]),
            want: vec![deferred(
                "4.4.2",
                "lost connection with {host} while sending MAIL FROM",
            )],
            heard: without_waiting(vec![]),
            ..Case::default()
        },
        Case {
            name: "the connection lost after MAIL FROM's reply",
            sessions: session(ONE, &["250 2.1.0 Ok"], vec![]),
            want: vec![deferred(
                "4.4.2",
                "lost connection with {host} while sending RCPT TO",
            )],
            heard: without_waiting(vec![]),
            ..Case::default()
        },
        Case {
            name: "a server that stops answering times out",
            sessions: session(ONE, &[], vec![Silence]),
            config: "smtp_mail_timeout = 1s\nsmtp_rcpt_timeout = 1s\nsmtp_data_init_timeout = 1s",
            within: Some(Duration::from_secs(3)),
            want: vec![deferred(
                "",
                "conversation with {host} timed out while sending MAIL FROM",
            )],
            heard: without_waiting(vec![]),
            ..Case::default()
        },
    ]);
}

/// `smtp_discard_ehlo_keywords`: the client acts as if the server had not offered them.
#[test]
fn discarded_ehlo_keywords_are_not_used() {
    let starttls_offered = || {
        script(&[
            vec![Say("220 tls.example ESMTP")],
            answer(
                "EHLO me.example",
                "250-tls.example\r\n250-STARTTLS\r\n250 8BITMIME",
            ),
        ])
    };
    run(vec![
        Case {
            name: "STARTTLS discarded: the mail goes in plain text",
            sessions: vec![script(&[
                starttls_offered(),
                ehlo_again("250-tls.example\r\n250-STARTTLS\r\n250 8BITMIME"),
                accept_all(1),
            ])],
            config: "smtp_tls_security_level = may\nsmtp_discard_ehlo_keywords = starttls",
            want: vec![sent()],
            heard: vec![Heard::Never("STARTTLS"), Heard::Never("UNEXPECTED")],
            ..Case::default()
        },
        Case {
            name: "STARTTLS discarded where TLS is required: deferred",
            sessions: vec![script(&[starttls_offered(), answer("QUIT", "221 Bye")])],
            config: "smtp_tls_security_level = encrypt\nsmtp_discard_ehlo_keywords = STARTTLS",
            want: vec![deferred(
                "4.7.4",
                "TLS is required, but was not offered by host {host}",
            )],
            heard: vec![Heard::Never("STARTTLS"), Heard::Last("QUIT")],
            ..Case::default()
        },
        Case {
            name: "SIZE discarded: no SIZE= and no refusal over the limit",
            sessions: vec![script(&[
                vec![Say("220 small.example ESMTP")],
                answer("EHLO", "250-small.example\r\n250 SIZE 10"),
                answer("EHLO", "250-small.example\r\n250 SIZE 10"),
                accept_all(1),
            ])],
            config: "smtp_discard_ehlo_keywords = size, silent-discard",
            want: vec![sent()],
            heard: vec![Heard::First("MAIL FROM:", "MAIL FROM:<a@example.com>")],
            ..Case::default()
        },
    ]);

    // PIPELINING, against a real server that offers it: one command at a time, and the
    // discarding logged.
    let Some(server) = Aiosmtpd::start_pipelining() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let maillog = dir.path().join("maillog");
    let log_config = Config::from_text(
        &format!("maillog_file = {}\n", maillog.display()),
        Path::new("/nonexistent/main.cf"),
    );
    let ctx = relay_context(server.port, "smtp_discard_ehlo_keywords = pipelining")
        .with_log(Arc::new(Log::from_config(&log_config, "smtp")));
    let m = message("a@example.com", &["b@example.net", "c@example.net"], BODY);
    for o in &send(&ctx, &m) {
        assert_eq!(o.status, Status::Sent, "{o:?}");
    }
    let (meta, _) = server.received(0);
    assert_eq!(meta["pipelined"], false, "{meta}");
    let logged = std::fs::read_to_string(&maillog).unwrap();
    assert!(
        logged.contains(&format!(
            "{LOCALHOST}: discarding EHLO keywords: PIPELINING"
        )),
        "{logged}"
    );
}

#[test]
fn refused_connection_defers_and_the_next_relayhost_is_tried() {
    let dead = free_port();
    let ctx = relay_context(dead, "");
    let outcomes = send(&ctx, &message("a@example.com", &["b@example.net"], BODY));
    assert_eq!(outcomes[0].status, Status::Deferred);
    assert_eq!(outcomes[0].dsn.to_string(), "4.4.1");
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
    assert_eq!(o.dsn.to_string(), "5.4.4");
    assert_eq!(o.relay, "none");
    assert_eq!(
        o.text,
        "Host or domain name not found. Name service error for name=nosuch.test type=MX: Host not found"
    );
}

#[test]
fn dsn_parameters_go_to_a_server_that_offers_dsn() {
    let ehlo = "250-dsn.example\r\n250 DSN";
    let server = Scripted::start(vec![script(&[
        vec![Say("220 dsn.example ESMTP")],
        answer("EHLO me.example", ehlo),
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

/// A plain-text server that offers STARTTLS, up to the client's STARTTLS.
fn starttls_asked() -> Vec<Step> {
    script(&[
        vec![Say("220 tls.example ESMTP")],
        answer("EHLO me.example", "250-tls.example\r\n250 STARTTLS"),
        vec![Expect("STARTTLS")],
    ])
}

/// The connection after a failed STARTTLS: offered again, not used, the mail accepted.
fn plain_retry() -> Vec<Step> {
    let offer = "250-tls.example\r\n250 STARTTLS";
    script(&[
        vec![Say("220 tls.example ESMTP")],
        answer("EHLO me.example", offer),
        ehlo_again(offer),
        accept_all(1),
    ])
}

fn starttls_offer() -> Vec<Step> {
    script(&[
        vec![Say("220 tls.example ESMTP")],
        answer(
            "EHLO me.example",
            "250-tls.example\r\n250-STARTTLS\r\n250 8BITMIME",
        ),
        answer("STARTTLS", "220 2.0.0 Ready to start TLS"),
        vec![Tls],
        answer(
            "EHLO me.example",
            "250-tls.example\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME",
        ),
        answer(
            "EHLO me.example",
            "250-tls.example\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME",
        ),
    ])
}

/// STARTTLS as `smtp_tls_security_level` asks: `may` uses it unchecked and falls back to
/// plain text, `encrypt` insists on it, `verify`/`secure` check the certificate.
#[test]
fn starttls_follows_the_security_level() {
    run(vec![
        Case {
            name: "may: self-signed certificate, not checked",
            sessions: vec![script(&[starttls_offer(), accept_all(1)])],
            tls: true,
            config: "smtp_tls_security_level = may",
            want: vec![sent()],
            heard: vec![Heard::Before("<TLS>", "MAIL")],
            ..Case::default()
        },
        Case {
            name: "verify: a certificate from an unknown CA",
            sessions: vec![starttls_offer()],
            tls: true,
            config: "smtp_tls_security_level = verify",
            want: vec![deferred("4.7.5", "Server certificate not verified: {host}")],
            ..Case::default()
        },
        Case {
            name: "secure: a certificate from smtp_tls_CAfile",
            sessions: vec![script(&[starttls_offer(), accept_all(1)])],
            tls: true,
            config: "smtp_tls_security_level = secure\nsmtp_tls_CAfile = {cafile}",
            want: vec![sent()],
            ..Case::default()
        },
        Case {
            name: "encrypt: STARTTLS not offered",
            sessions: vec![script(&[greet_once(), answer("QUIT", "221 Bye")])],
            config: "smtp_tls_security_level = encrypt",
            want: vec![deferred(
                "4.7.4",
                "TLS is required, but was not offered by host {host}",
            )],
            heard: vec![Heard::Never("MAIL"), Heard::Last("QUIT")],
            ..Case::default()
        },
        // The first session's "TLS" is garbage; the retry never says STARTTLS.
        Case {
            name: "may: the handshake fails, retried in plain text",
            sessions: vec![
                script(&[
                    starttls_asked(),
                    vec![
                        Say("220 2.0.0 Ready to start TLS"),
                        Say("this is not a TLS server hello"),
                    ],
                ]),
                plain_retry(),
            ],
            config: "smtp_tls_security_level = may",
            want: vec![sent()],
            ..Case::default()
        },
        // lettre closes the connection when STARTTLS is refused, so `may` goes on in
        // plain text over a new one (the old client stayed on the same connection).
        Case {
            name: "may: STARTTLS refused, retried in plain text",
            sessions: vec![
                script(&[
                    starttls_asked(),
                    vec![Say("454 4.7.0 TLS not available"), Expect("QUIT")],
                ]),
                plain_retry(),
            ],
            config: "smtp_tls_security_level = may",
            want: vec![sent()],
            heard: vec![Heard::Times("STARTTLS", 1)],
            ..Case::default()
        },
        Case {
            name: "encrypt: STARTTLS refused",
            sessions: vec![script(&[
                starttls_asked(),
                vec![Say("454 4.7.0 TLS not available")],
            ])],
            config: "smtp_tls_security_level = encrypt",
            want: vec![deferred(
                "4.7.4",
                "TLS is required, but host {host} refused to start TLS: 454 4.7.0 TLS not available",
            )],
            ..Case::default()
        },
    ]);
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
    script(&[
        vec![Say("220 relay.example ESMTP")],
        answer(
            "EHLO me.example",
            "250-relay.example\r\n250-AUTH LOGIN PLAIN\r\n250 8BITMIME",
        ),
        answer(
            "EHLO me.example",
            "250-relay.example\r\n250-AUTH LOGIN PLAIN\r\n250 8BITMIME",
        ),
    ])
}

/// AUTH with the password map's entry for the relay, and what happens without one.
#[test]
fn auth_follows_the_password_map() {
    run(vec![
        Case {
            name: "the entry for [host]:port is used",
            sessions: vec![script(&[
                auth_offer(),
                answer("AUTH PLAIN ", "235 2.7.0 Authentication successful"),
                accept_all(1),
            ])],
            config: "smtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = hash:{map}\n\
                     smtp_sasl_security_options = noanonymous",
            password: Some("[127.0.0.1]:{port} relayuser:s3cret:pw"),
            want: vec![sent()],
            // base64("\0relayuser\0s3cret:pw")
            heard: vec![Heard::First(
                "AUTH",
                "AUTH PLAIN AHJlbGF5dXNlcgBzM2NyZXQ6cHc=",
            )],
            ..Case::default()
        },
        Case {
            name: "a failure defers with the server's reply",
            sessions: vec![script(&[
                auth_offer(),
                answer("AUTH PLAIN ", "535 5.7.8 Error: authentication failed"),
                answer("QUIT", "221 Bye"),
            ])],
            config: "smtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = texthash:{map}\n\
                     smtp_sasl_security_options = noanonymous",
            password: Some("127.0.0.1 relayuser:wrong"),
            want: vec![deferred(
                "4.7.8",
                "SASL authentication failed; server {host} said: 535 5.7.8 Error: authentication failed",
            )],
            ..Case::default()
        },
        Case {
            name: "no password goes out unencrypted by default",
            sessions: vec![script(&[auth_offer(), answer("QUIT", "221 Bye")])],
            config: "smtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = hash:{map}",
            password: Some("127.0.0.1 relayuser:secret"),
            want: vec![deferred(
                "",
                "SASL authentication failed; cannot authenticate to server {host}: no mechanism available",
            )],
            heard: vec![Heard::Never("AUTH")],
            ..Case::default()
        },
        Case {
            name: "over STARTTLS with the default security options",
            sessions: vec![script(&[
                starttls_offer(),
                answer("AUTH PLAIN ", "235 2.7.0 Ok"),
                accept_all(1),
            ])],
            tls: true,
            config: "smtp_tls_security_level = encrypt\nsmtp_sasl_auth_enable = yes\n\
                     smtp_sasl_password_maps = hash:{map}",
            password: Some("127.0.0.1 relayuser:secret"),
            want: vec![sent()],
            ..Case::default()
        },
    ]);
}
