//! The SMTP listener's abuse limits, through a started daemon (whose sessions run as
//! `mail_owner`): per-client connection counts and rates, message and recipient rates
//! (Postfix's anvil), clients in `mynetworks` exempt, `smtpd_timeout` as a deadline per
//! request, and the error limits. Replies and log lines are Postfix's.

mod common;

use std::time::{Duration, Instant};

use common::listening::ListeningDaemon;

/// The test's clients are not in `mynetworks` unless a case says so, and every local
/// part is taken (no passwd lookups in the way of the counts).
const BASE: &str = "mynetworks = 10.0.0.0/8\nlocal_recipient_maps =\n";

const TOO_MANY_CONNECTIONS: &str = "421 4.7.0 vm Error: too many connections from 127.0.0.1";

/// A session's script: (command, the start of the reply); an empty command reads a
/// reply without sending anything (the greeting, or the 421 that follows an error).
type Script<'a> = &'a [(&'a str, &'a str)];

/// Runs `script` on `client`; a script that ends in a 421 must see the server close.
fn run(client: &mut common::listening::Smtp, script: Script<'_>, what: &str) {
    for (command, want) in script {
        let got = if command.is_empty() {
            client.reply()
        } else {
            client.cmd(command)
        };
        assert!(
            got.starts_with(want),
            "{what}: {command:?} got {got:?}, want {want:?}"
        );
    }
    if script
        .last()
        .is_some_and(|(_, want)| want.starts_with("421"))
    {
        assert!(client.closed(), "{what}: the server closes after its 421");
    }
}

#[test]
fn client_limits_answer_as_postfix_and_mynetworks_is_exempt() {
    const GREET: (&str, &str) = ("", "220 vm ESMTP");
    const HELLO: (&str, &str) = ("EHLO client.example", "250");
    const MAIL: (&str, &str) = ("MAIL FROM:<sender@example.org>", "250 2.1.0 Ok");
    const RCPT: (&str, &str) = ("RCPT TO:<anyone@localhost>", "250 2.1.5 Ok");
    const RSET: (&str, &str) = ("RSET", "250 2.0.0 Ok");
    const QUIT: (&str, &str) = ("QUIT", "221 2.0.0 Bye");
    const REFUSED: (&str, &str) = ("", TOO_MANY_CONNECTIONS);
    struct Case<'a> {
        what: &'a str,
        config: &'a str,
        /// Sessions of 127.0.0.1, one after the other, each held open to the end.
        sessions: &'a [Script<'a>],
        /// The warning logged; None: no limit may be logged as exceeded.
        warning: Option<&'a str>,
    }
    let cases = [
        Case {
            what: "connection count",
            config: "smtpd_client_connection_count_limit = 2",
            sessions: &[&[GREET], &[GREET], &[REFUSED]],
            warning: Some(
                "warning: Connection concurrency limit exceeded: 3 from unknown[127.0.0.1] \
                 for service smtp",
            ),
        },
        Case {
            what: "connection rate",
            config: "smtpd_client_connection_rate_limit = 2",
            sessions: &[&[GREET, QUIT], &[GREET, QUIT], &[REFUSED]],
            warning: Some(
                "warning: Connection rate limit exceeded: 3 from unknown[127.0.0.1] for \
                 service smtp",
            ),
        },
        Case {
            what: "message rate",
            config: "smtpd_client_message_rate_limit = 2",
            sessions: &[
                &[
                    GREET,
                    HELLO,
                    MAIL,
                    RSET,
                    MAIL,
                    RSET,
                    (MAIL.0, "450 4.7.1 Error: too much mail from 127.0.0.1"),
                ],
                // Counted per client, not per session.
                &[
                    GREET,
                    HELLO,
                    (MAIL.0, "450 4.7.1 Error: too much mail from 127.0.0.1"),
                ],
            ],
            warning: Some(
                "warning: Message delivery request rate limit exceeded: 3 from \
                 unknown[127.0.0.1] for service smtp",
            ),
        },
        Case {
            what: "recipient rate",
            config: "smtpd_client_recipient_rate_limit = 2",
            sessions: &[&[
                GREET,
                HELLO,
                MAIL,
                RCPT,
                RCPT,
                (
                    RCPT.0,
                    "450 4.7.1 Error: too many recipients from 127.0.0.1",
                ),
                // Refused as a recipient, not as a session: the rest goes on.
                RSET,
                QUIT,
            ]],
            warning: Some(
                "warning: Recipient address rate limit exceeded: 3 from unknown[127.0.0.1] \
                 for service smtp",
            ),
        },
        Case {
            what: "mynetworks exempt",
            config: "mynetworks = 127.0.0.0/8\n\
                     smtpd_client_connection_count_limit = 1\n\
                     smtpd_client_connection_rate_limit = 1\n\
                     smtpd_client_message_rate_limit = 1\n\
                     smtpd_client_recipient_rate_limit = 1",
            sessions: &[
                &[GREET, HELLO, MAIL, RCPT, RCPT, RSET, MAIL, RCPT],
                &[GREET, HELLO, MAIL, RCPT],
            ],
            warning: None,
        },
    ];
    for case in cases {
        let daemon = ListeningDaemon::start(&format!("{BASE}{}\n", case.config));
        // Declared after the daemon: closed before it stops.
        let mut open = Vec::new();
        for script in case.sessions {
            let mut client = daemon.client("127.0.0.1");
            run(&mut client, script, case.what);
            open.push(client);
        }
        match case.warning {
            Some(warning) => {
                daemon.log_with(warning);
            }
            None => {
                let log = daemon.maillog();
                assert!(!log.contains("limit exceeded"), "{}: {log}", case.what);
            }
        }
    }
}

#[test]
fn a_client_at_its_connection_limit_does_not_shut_out_another() {
    // Fewer sessions than the flood: its refused connections must not take them.
    let daemon = ListeningDaemon::start(&format!(
        "{BASE}smtpd_client_connection_count_limit = 10\nsmtpd_process_limit = 20\n"
    ));
    let mut idle = Vec::new();
    let mut greetings = Vec::new();
    for _ in 0..100 {
        let mut client = daemon.client("127.0.0.1");
        greetings.push(client.reply());
        idle.push(client);
    }
    let served = greetings
        .iter()
        .filter(|g| g.starts_with("220 vm ESMTP"))
        .count();
    let refused = greetings
        .iter()
        .filter(|g| *g == TOO_MANY_CONNECTIONS)
        .count();
    assert_eq!((served, refused), (10, 90), "{greetings:?}");
    assert!(idle[10].closed(), "a refused client is disconnected");

    let mut other = daemon.client("127.0.0.2");
    run(
        &mut other,
        &[
            ("", "220 vm ESMTP"),
            ("EHLO other.example", "250"),
            ("MAIL FROM:<>", "250 2.1.0 Ok"),
            ("RCPT TO:<anyone@localhost>", "250 2.1.5 Ok"),
            ("QUIT", "221 2.0.0 Bye"),
        ],
        "the second address",
    );
    let log = daemon.log_with("disconnect from unknown[127.0.0.1] commands=0/0");
    assert!(
        log.contains(
            "warning: Connection concurrency limit exceeded: 11 from unknown[127.0.0.1] for \
             service smtp"
        ),
        "{log}"
    );
    assert!(log.contains("connect from unknown[127.0.0.2]"), "{log}");
    assert!(
        !log.contains("from unknown[127.0.0.2] for service"),
        "{log}"
    );
}

#[test]
fn a_client_sending_one_byte_per_second_is_cut_off() {
    const TIMEOUT: &str = "421 4.4.2 vm Error: timeout exceeded";
    struct Case<'a> {
        what: &'a str,
        config: &'a str,
        before: Script<'a>,
        dribble: &'a [u8],
        pause: Duration,
        reply: &'a str,
        /// The log line, when the client was cut off.
        log: Option<&'a str>,
    }
    let greet_to_data: Script<'_> = &[
        ("", "220 vm ESMTP"),
        ("EHLO slow.example", "250"),
        ("MAIL FROM:<>", "250 2.1.0 Ok"),
        ("RCPT TO:<anyone@localhost>", "250 2.1.5 Ok"),
        ("DATA", "354"),
    ];
    let cases = [
        Case {
            what: "a command line",
            config: "",
            before: &[("", "220 vm ESMTP")],
            dribble: b"EHLO slow.example\r\n",
            pause: Duration::from_secs(1),
            reply: TIMEOUT,
            log: Some("timeout after CONNECT from unknown[127.0.0.1]"),
        },
        Case {
            what: "the message text (500 bytes/s earn more time, 1 byte/s does not)",
            config: "",
            before: greet_to_data,
            dribble: b"Subject: slow\r\n\r\nand slower\r\n.\r\n",
            pause: Duration::from_secs(1),
            reply: TIMEOUT,
            log: Some("timeout after DATA (N bytes) from unknown[127.0.0.1]"),
        },
        Case {
            what: "Postfix's default: each read has the whole timeout",
            config: "smtpd_per_request_deadline = no",
            before: &[("", "220 vm ESMTP")],
            dribble: b"NOOP\r\n",
            pause: Duration::from_millis(500),
            reply: "250 2.0.0 Ok",
            log: None,
        },
    ];
    for case in cases {
        let daemon =
            ListeningDaemon::start(&format!("{BASE}smtpd_timeout = 2s\n{}\n", case.config));
        let mut client = daemon.client("127.0.0.1");
        run(&mut client, case.before, case.what);
        let (reply, sent) = client.dribble(case.dribble, case.pause);
        assert_eq!(reply, case.reply, "{}: after {sent} bytes", case.what);
        if let Some(line) = case.log {
            assert!(
                sent < case.dribble.len(),
                "{}: cut off before the end",
                case.what
            );
            assert!(client.closed(), "{}", case.what);
            let log = without_byte_counts(&daemon.log_with("timeout after"));
            assert!(log.contains(line), "{}: want {line} in\n{log}", case.what);
        }
    }
}

/// The log with each "(123 bytes)" as "(N bytes)": how much of a dribble arrived before
/// the cut depends on timing.
fn without_byte_counts(log: &str) -> String {
    let mut out = String::new();
    let mut rest = log;
    while let Some(open) = rest.find('(') {
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && rest[digits..].starts_with(" bytes)") {
            out.push('N');
            rest = &rest[digits..];
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn too_many_errors_or_junk_commands_end_the_session_unless_a_message_forgives_them() {
    const BOGUS: (&str, &str) = ("BOGUS", "500 5.5.2 Error: command not recognized");
    let forgiven: Script<'_> = &[
        ("", "220 vm ESMTP"),
        BOGUS,
        BOGUS,
        ("MAIL FROM:<>", "250 2.1.0 Ok"),
        ("RCPT TO:<anyone@localhost>", "250 2.1.5 Ok"),
        ("DATA", "354"),
        (
            "Subject: forgiven\r\n\r\nhello\r\n.",
            "250 2.0.0 Ok: queued as ",
        ),
        BOGUS,
        BOGUS,
        ("QUIT", "221 2.0.0 Bye"),
    ];
    let cut_off: Script<'_> = &[
        ("", "220 vm ESMTP"),
        BOGUS,
        ("NOOP", "250 2.0.0 Ok"),
        BOGUS,
        BOGUS,
        ("", "421 4.7.0 vm Error: too many errors"),
    ];
    const NOOP: (&str, &str) = ("NOOP", "250 2.0.0 Ok");
    // Over the limit of 2, the fourth is the first error and the sixth the third.
    let junk: Script<'_> = &[
        ("", "220 vm ESMTP"),
        NOOP,
        NOOP,
        NOOP,
        NOOP,
        NOOP,
        NOOP,
        ("", "421 4.7.0 vm Error: too many errors"),
    ];
    // (what, script, log line)
    let cases = [
        (
            "three errors",
            cut_off,
            Some("too many errors after UNKNOWN from unknown[127.0.0.1]"),
        ),
        ("a message in between", forgiven, None),
        (
            "junk commands",
            junk,
            Some("too many errors after NOOP from unknown[127.0.0.1]"),
        ),
    ];
    let daemon = ListeningDaemon::start(&format!(
        "{BASE}smtpd_hard_error_limit = 3\nsmtpd_junk_command_limit = 2\n"
    ));
    for (what, script, log) in cases {
        let mut client = daemon.client("127.0.0.1");
        run(&mut client, script, what);
        if let Some(line) = log {
            daemon.log_with(line);
        }
    }
}

#[test]
fn past_the_soft_error_limit_every_reply_waits() {
    let daemon = ListeningDaemon::start(&format!(
        "{BASE}smtpd_soft_error_limit = 2\nsmtpd_error_sleep_time = 1s\n"
    ));
    let mut client = daemon.client("127.0.0.1");
    assert!(client.reply().starts_with("220 "));
    // (command, reply, whether it waited the error sleep first)
    let script = [
        ("BOGUS", "500 5.5.2", false),
        ("BOGUS", "500 5.5.2", false),
        ("NOOP", "250 2.0.0 Ok", true),
        ("BOGUS", "500 5.5.2", true),
    ];
    for (command, want, slowed) in script {
        let started = Instant::now();
        let got = client.cmd(command);
        assert!(got.starts_with(want), "{command}: {got}");
        // Only the lower bound: a slow machine may take longer for anything.
        if slowed {
            assert!(
                started.elapsed() >= Duration::from_millis(950),
                "{command}: answered after {:?}",
                started.elapsed()
            );
        }
    }
}

/// The submission port counts its clients too, as its own service: its warning says
/// `for service submission`, and a client at its limit there is still served on port
/// 25. No Dovecot needed: the limit is applied before the greeting.
#[test]
fn the_submission_port_counts_its_clients_as_its_own_service() {
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = common::smtp_server::self_signed_certificate(dir.path()) else {
        return;
    };
    let submission = common::smtp_server::free_port();
    let daemon = ListeningDaemon::start(&format!(
        "{BASE}smtpd_client_connection_count_limit = 2\nsubmission_port = {submission}\n\
         smtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\n",
        cert.display(),
        key.display()
    ));
    let connect = || common::listening::Smtp::connect_from("127.0.0.1", submission).unwrap();
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut client = connect();
        run(&mut client, &[("", "220 vm ESMTP")], "submission");
        open.push(client);
    }
    let mut refused = connect();
    run(&mut refused, &[("", TOO_MANY_CONNECTIONS)], "submission");
    // Port 25's count is its own.
    let mut smtp = daemon.client("127.0.0.1");
    run(
        &mut smtp,
        &[("", "220 vm ESMTP"), ("QUIT", "221 2.0.0 Bye")],
        "smtp beside a full submission count",
    );
    let log = daemon.log_with(
        "warning: Connection concurrency limit exceeded: 3 from unknown[127.0.0.1] for \
         service submission",
    );
    assert!(
        log.lines().any(|l| l.contains("mailroom/submission/smtpd[")
            && l.contains("limit exceeded: 3 from unknown[127.0.0.1] for service submission")),
        "{log}"
    );
    assert!(!log.contains("for service smtp"), "{log}");
}
