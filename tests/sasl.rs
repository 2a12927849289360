//! SMTP AUTH against a real Dovecot started by the test, with Python's smtplib as the
//! independent client: right and wrong passwords with PLAIN and LOGIN, relaying only
//! after AUTH, AUTH only after STARTTLS when asked, the Received: header and the log
//! line, the submission port (in this process and through a started daemon, whose
//! sessions run as mail_owner), and Dovecot down.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::dovecot::Dovecot;
use common::listening::{Daemon, InProcess};
use common::smtp_server::{free_port, rsa_certificate};
use common::{MailSystem, require_python_module, require_tool, stderr};
use mailroom::queue::QueueName;

const USER: &str = "alice";
const PASSWORD: &str = "s3cret-Pass";

/// base64 of `\0alice\0PASSWORD` (PLAIN) and of the LOGIN answers.
fn plain(password: &str) -> String {
    b64(&format!("\0{USER}\0{password}"))
}

fn b64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Runs SMTP sessions with smtplib: argv[1] is the port, argv[2] a JSON list of
/// sessions, each a list of steps: `starttls`, `ehlo` (the EHLO reply's lines),
/// `login USER PASSWORD` (smtplib's own AUTH, which picks a mechanism from EHLO),
/// `message TEXT` (DATA and the text), or a command line sent with docmd. Prints one JSON list of replies per session.
const CLIENT: &str = r#"
import json, smtplib, ssl, sys
port = int(sys.argv[1])
for steps in json.loads(sys.argv[2]):
    s = smtplib.SMTP("127.0.0.1", port, timeout=20)
    out = []
    for step in steps:
        try:
            if step == "starttls":
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                code, msg = s.starttls(context=ctx)
                out.append("%d %s" % (code, msg.decode()))
            elif step == "ehlo":
                code, msg = s.ehlo("client.example")
                out.append("%d %s" % (code, msg.decode()))
            elif step.startswith("message "):
                code, msg = s.data(step[len("message "):])
                out.append("%d %s" % (code, msg.decode()))
            elif step.startswith("login "):
                _, user, password = step.split(" ", 2)
                code, msg = s.login(user, password)
                out.append("%d %s" % (code, msg.decode()))
            else:
                code, msg = s.docmd(step)
                out.append("%d %s" % (code, msg.decode()))
        except smtplib.SMTPException as e:
            out.append("error: %s" % e)
            break
    try:
        s.close()
    except Exception:
        pass
    print(json.dumps(out))
"#;

/// Each session's replies, in order.
fn smtplib(port: u16, sessions: &[Vec<String>]) -> Vec<Vec<String>> {
    let script = serde_json::to_string(sessions).unwrap();
    let out = Command::new("python3")
        .args(["-c", CLIENT, &port.to_string(), &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn steps(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The tools every test here needs besides Dovecot.
fn tools() -> bool {
    require_tool("openssl") && require_python_module("smtplib")
}

/// A mail system whose clients on 127.0.0.1 are outside mynetworks, with AUTH through
/// `queue/private/auth` (relative, as Postfix writes it), a certificate, and `extra`.
fn system(extra: &str) -> MailSystem {
    let sys = MailSystem::new("");
    let (cert, key) = rsa_certificate(sys.root());
    sys.append_to_main_cf(&format!(
        "smtpd_port = 0\nlocal_recipient_maps =\nmynetworks = 10.0.0.0/8\ninet_interfaces = 127.0.0.1\n\
         inet_protocols = ipv4\nsmtpd_timeout = 10s\nsmtpd_sasl_auth_enable = yes\n\
         smtpd_sasl_path = private/auth\nsmtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\n{extra}\n",
        cert.display(),
        key.display()
    ));
    sys
}

fn socket_of(sys: &MailSystem) -> PathBuf {
    sys.root().join("queue/private/auth")
}

fn queued(sys: &MailSystem) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    for queue in [
        QueueName::Maildrop,
        QueueName::Incoming,
        QueueName::Active,
        QueueName::Deferred,
    ] {
        for (_, message) in sys.messages(queue) {
            all.push(String::from_utf8_lossy(&message).into_owned());
        }
    }
    all
}

const FAILED_535: &str = "535 5.7.8 Error: authentication failed: (reason unavailable)";

#[test]
fn plain_and_login_right_and_wrong_after_starttls() {
    if !tools() {
        return;
    }
    let sys = system("");
    let Some(_dovecot) = Dovecot::start(&socket_of(&sys), &[(USER, PASSWORD)]) else {
        return;
    };
    let server = InProcess::start(&sys);
    let right = plain(PASSWORD);
    let wrong = plain("guess");
    // (what the client says after STARTTLS and EHLO, what it is told)
    let table: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            steps(&[&format!("AUTH PLAIN {right}")]),
            vec!["235 2.7.0 Authentication successful"],
        ),
        (
            steps(&["AUTH PLAIN", &right]),
            vec!["334 ", "235 2.7.0 Authentication successful"],
        ),
        (
            steps(&["AUTH LOGIN", &b64(USER), &b64(PASSWORD)]),
            vec![
                "334 VXNlcm5hbWU6",
                "334 UGFzc3dvcmQ6",
                "235 2.7.0 Authentication successful",
            ],
        ),
        (
            steps(&["AUTH LOGIN", "*"]),
            vec!["334 VXNlcm5hbWU6", "501 5.7.0 Authentication aborted"],
        ),
        (
            steps(&["AUTH CRAM-MD5"]),
            vec![
                "535 5.7.8 Error: authentication failed: Invalid authentication mechanism: 'CRAM-MD5'",
            ],
        ),
        (steps(&["AUTH"]), vec!["501 5.5.4 Syntax: AUTH mechanism"]),
        (
            steps(&[
                &format!("AUTH PLAIN {right}"),
                &format!("AUTH PLAIN {right}"),
            ]),
            vec![
                "235 2.7.0 Authentication successful",
                "503 5.5.1 Error: already authenticated",
            ],
        ),
        (
            steps(&["MAIL FROM:<a@b.example>", &format!("AUTH PLAIN {right}")]),
            vec![
                "250 2.1.0 Ok",
                "503 5.5.1 Error: MAIL transaction in progress",
            ],
        ), // Last: Dovecot slows every later login from an address that failed.
        (steps(&[&format!("AUTH PLAIN {wrong}")]), vec![FAILED_535]),
        (
            steps(&["AUTH LOGIN", &b64(USER), &b64("guess")]),
            vec!["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6", FAILED_535],
        ),
    ];
    let sessions: Vec<Vec<String>> = table
        .iter()
        .map(|(said, _)| [steps(&["starttls", "ehlo"]), said.clone()].concat())
        .collect();
    let got = smtplib(server.smtp().port(), &sessions);
    for ((said, want), got) in table.iter().zip(&got) {
        assert!(
            got[0].starts_with("220 2.0.0 Ready to start TLS"),
            "{got:?}"
        );
        assert!(got[1].contains("\nAUTH PLAIN LOGIN\n"), "{got:?}");
        assert_eq!(&got[2..], want.as_slice(), "{said:?}");
    }
    let log = sys.maillog();
    assert!(
        log.contains(&format!(
            "warning: unknown[127.0.0.1]: SASL PLAIN authentication failed: (reason unavailable), sasl_username={USER}"
        )),
        "{log}"
    );
    assert!(log.contains("warning: unknown[127.0.0.1]: SASL LOGIN authentication aborted"));
    // Never a password, in clear or as the client sent it.
    for secret in [PASSWORD.to_string(), right, b64(PASSWORD)] {
        assert!(!log.contains(&secret), "{log}");
    }
}

#[test]
fn relaying_only_after_auth_and_the_header_and_log_say_who() {
    if !tools() {
        return;
    }
    let sys = system("smtpd_sasl_authenticated_header = yes");
    let Some(_dovecot) = Dovecot::start(&socket_of(&sys), &[(USER, PASSWORD)]) else {
        return;
    };
    let server = InProcess::start(&sys);
    let mail = |auth: bool| {
        let mut s = steps(&["starttls", "ehlo"]);
        if auth {
            s.push(format!("AUTH PLAIN {}", plain(PASSWORD)));
        }
        s.extend(steps(&[
            "MAIL FROM:<alice@mail.server.com> AUTH=alice@mail.server.com",
            "RCPT TO:<bob@example.net>",
            "message Subject: relayed\r\n\r\nhello\r\n",
        ]));
        s
    };
    let got = smtplib(server.smtp().port(), &[mail(false), mail(true)]);
    assert_eq!(
        got[0][3],
        "554 5.7.1 <bob@example.net>: Relay access denied"
    );
    assert!(
        got[0][4].contains("5.5.1 Error: no valid recipients"),
        "{:?}",
        got[0]
    );
    assert_eq!(got[1][2], "235 2.7.0 Authentication successful");
    assert_eq!(got[1][4], "250 2.1.5 Ok");
    assert!(
        got[1][5].starts_with("250 2.0.0 Ok: queued as "),
        "{:?}",
        got[1]
    );
    let messages = queued(&sys);
    assert_eq!(messages.len(), 1);
    assert!(
        messages[0].starts_with(
            "Received: from client.example (unknown [127.0.0.1])\n\t(Authenticated sender: alice)\n\tby vm (mailroom) with ESMTPSA id "
        ),
        "{}",
        messages[0]
    );
    let log = sys.maillog();
    assert!(
        log.contains("NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 554 5.7.1 <bob@example.net>: Relay access denied;"),
        "{log}"
    );
    let id = got[1][5].rsplit(' ').next().unwrap();
    assert!(
        log.contains(&format!(
            "{id}: client=unknown[127.0.0.1], sasl_method=PLAIN, sasl_username=alice, sasl_sender=alice@mail.server.com\n"
        )),
        "{log}"
    );
}

#[test]
fn auth_is_offered_before_starttls_only_when_allowed() {
    if !tools() {
        return;
    }
    const OK: &str = "235 2.7.0 Authentication successful";
    const OFF: &str = "503 5.5.1 Error: authentication not enabled";
    // (main.cf lines, AUTH offered before STARTTLS, the reply to AUTH then)
    let table = [
        ("", true, OK),
        ("smtpd_tls_auth_only = yes", false, OFF),
        ("smtpd_tls_security_level = encrypt", false, OFF),
        ("broken_sasl_auth_clients = yes", true, OK),
        (
            "smtpd_sasl_security_options = noanonymous, noplaintext\n\
             smtpd_sasl_tls_security_options = noanonymous",
            false,
            "535 5.7.8 Error: authentication failed: Invalid authentication mechanism: 'PLAIN'",
        ),
    ];
    // One Dovecot and one certificate; each row its own main.cf and listener.
    let sys = system("");
    let Some(_dovecot) = Dovecot::start(&socket_of(&sys), &[(USER, PASSWORD)]) else {
        return;
    };
    let main_cf = sys.config_dir().join("main.cf");
    let base = std::fs::read_to_string(&main_cf).unwrap();
    for (extra, before, reply) in table {
        std::fs::write(&main_cf, format!("{base}{extra}\n")).unwrap();
        let server = InProcess::start(&sys);
        let got = smtplib(
            server.smtp().port(),
            &[steps(&[
                "ehlo",
                &format!("AUTH PLAIN {}", plain(PASSWORD)),
                "starttls",
                "ehlo",
            ])],
        );
        let got = &got[0];
        assert_eq!(got[0].contains("\nAUTH"), before, "{extra}: {got:?}");
        assert_eq!(got[1], reply, "{extra}");
        assert_eq!(
            got[0].contains("\nAUTH=PLAIN LOGIN"),
            extra.starts_with("broken"),
            "{extra}: {got:?}"
        );
        assert!(
            got[3].contains("\nAUTH PLAIN LOGIN"),
            "{extra}: after STARTTLS {got:?}"
        );
    }
}

/// The submission session every submission test runs: refused before STARTTLS and
/// before AUTH, then a message to another domain queued.
fn submission_session() -> Vec<String> {
    steps(&[
        "ehlo",
        "MAIL FROM:<alice@mail.server.com>",
        "starttls",
        "ehlo",
        "MAIL FROM:<alice@mail.server.com>",
        &format!("login {USER} {PASSWORD}"),
        "MAIL FROM:<alice@mail.server.com>",
        "RCPT TO:<bob@example.net>",
        "message Subject: submitted\r\n\r\nhello\r\n",
    ])
}

fn check_submission(got: &[String]) {
    assert!(got[0].contains("\nSTARTTLS"), "{got:?}");
    assert!(
        !got[0].contains("AUTH"),
        "AUTH only after STARTTLS: {got:?}"
    );
    assert_eq!(got[1], "530 5.7.0 Must issue a STARTTLS command first");
    assert!(got[3].contains("\nAUTH PLAIN LOGIN"), "{got:?}");
    assert_eq!(got[4], "530 5.7.0 Authentication required");
    assert_eq!(got[5], "235 2.7.0 Authentication successful");
    assert_eq!(got[7], "250 2.1.5 Ok");
    assert!(got[8].starts_with("250 2.0.0 Ok: queued as "), "{got:?}");
}

#[test]
fn the_submission_port_requires_starttls_and_auth() {
    if !tools() {
        return;
    }
    // The service's own level (encrypt), whatever main.cf says for port 25.
    let sys = system("submission_port = 0\nsmtpd_tls_security_level = none");
    let Some(_dovecot) = Dovecot::start(&socket_of(&sys), &[(USER, PASSWORD)]) else {
        return;
    };
    let server = InProcess::start(&sys);
    let port = server.submission().expect("a submission socket").port();
    let got = smtplib(port, &[submission_session()]);
    check_submission(&got[0]);
    let log = sys.maillog();
    assert!(
        log.contains("mailroom/submission/smtpd[")
            && log.contains(
                "NOQUEUE: reject: MAIL from unknown[127.0.0.1]: 530 5.7.0 Authentication required;"
            ),
        "{log}"
    );
    let messages = queued(&sys);
    assert!(messages[0].contains(" with ESMTPSA id "), "{}", messages[0]);
}

#[test]
fn a_submission_port_that_could_not_work_is_not_opened() {
    // No certificate: nobody could ever log in.
    let sys = MailSystem::new(
        "smtpd_port = 0\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nsubmission_port = 0\n",
    );
    let server = InProcess::start(&sys);
    assert_eq!(server.submission(), None);
    assert!(
        sys.maillog().contains("mailroom/submission/smtpd[",)
            && sys
                .maillog()
                .contains("submission_port is set but smtpd_tls_cert_file is empty"),
        "{}",
        sys.maillog()
    );
}

#[test]
fn dovecot_down_is_a_temporary_failure() {
    if !tools() {
        return;
    }
    let sys = system("");
    let Some(mut dovecot) = Dovecot::start(&socket_of(&sys), &[(USER, PASSWORD)]) else {
        return;
    };
    let server = InProcess::start(&sys);
    // One EHLO while it is up, so that its mechanisms are known ...
    smtplib(server.smtp().port(), &[steps(&["ehlo"])]);
    dovecot.stop();
    // ... then AUTH with it gone.
    let got = smtplib(
        server.smtp().port(),
        &[steps(&["ehlo", &format!("AUTH PLAIN {}", plain(PASSWORD))])],
    );
    assert!(got[0][0].contains("\nAUTH PLAIN LOGIN"), "{got:?}");
    assert_eq!(
        got[0][1],
        "454 4.7.0 Temporary authentication failure: Connection lost to authentication server"
    );
    let log = sys.maillog();
    assert!(
        log.contains("warning: SASL: Connect to Dovecot auth socket 'private/auth' failed: "),
        "{log}"
    );
}

// ----------------------------------------------------------------------------------
// Through a started daemon: the root master binds the submission port and hands it to
// the sessions process, which runs as mail_owner (and chrooted, as root).

#[test]
fn a_daemon_serves_the_submission_port_as_mail_owner() {
    if !tools() {
        return;
    }
    let submission = free_port();
    let chroot = if nix::unistd::geteuid().is_root() {
        "smtpd_chroot = yes"
    } else {
        ""
    };
    let sys = system(&format!(
        "smtpd_port = {}\nsubmission_port = {submission}\n{chroot}",
        free_port()
    ));
    let _daemon = Daemon::start(&sys);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", submission)).is_err() {
        assert!(Instant::now() < deadline, "{}", sys.maillog());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The daemon made the socket's directory (Dovecot could not start without it),
    // mail_owner's and closed to others, as Postfix's private/ is.
    {
        use std::os::unix::fs::MetadataExt;
        let private = socket_of(&sys).parent().unwrap().to_path_buf();
        let meta = std::fs::metadata(&private).expect("queue/private made by the daemon");
        assert_eq!(meta.mode() & 0o7777, 0o700);
        if nix::unistd::geteuid().is_root() {
            let owner = nix::unistd::User::from_name(common::TEST_MAIL_OWNER)
                .unwrap()
                .unwrap();
            assert_eq!(meta.uid(), owner.uid.as_raw());
        }
    }
    let Some(_dovecot) = Dovecot::start(&socket_of(&sys), &[(USER, PASSWORD)]) else {
        return;
    };
    let got = smtplib(submission, &[submission_session()]);
    check_submission(&got[0]);
    let id = got[0][8].rsplit(' ').next().unwrap().to_string();
    let log = sys.maillog();
    let line = log
        .lines()
        .find(|l| l.contains(&format!(": {id}: client=")))
        .unwrap_or_else(|| panic!("no client= line for {id}: {log}"));
    assert!(
        line.contains("mailroom/submission/smtpd[")
            && line.ends_with(&format!(
                ": {id}: client=unknown[127.0.0.1], sasl_method=PLAIN, sasl_username={USER}"
            )),
        "{line}"
    );
}

#[test]
fn status_shows_the_submission_listener_or_why_it_is_off() {
    const MAILROOM: &str = env!("CARGO_BIN_EXE_mailroom");
    let sys = MailSystem::new("submission_port = 587\ninet_interfaces = 127.0.0.1\n");
    let out = sys.run(MAILROOM, &["status"], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "submission: none (not running; submission_port is set but smtpd_tls_cert_file is empty"
        ),
        "{text}{}",
        stderr(&out)
    );
    if !require_tool("openssl") {
        return;
    }
    let (cert, key) = rsa_certificate(sys.root());
    sys.append_to_main_cf(&format!(
        "smtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\n",
        cert.display(),
        key.display()
    ));
    let out = sys.run(MAILROOM, &["status"], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("submission: none (not running; configured: 127.0.0.1:587)\n"),
        "{text}"
    );
}

/// A scripted auth server at `socket`: Dovecot's handshake, then `answer` to every
/// AUTH (and the connection closed, when `hang_up`), for as many connections as come.
fn fake_dovecot(socket: &std::path::Path, answer: &'static str, hang_up: bool) {
    use std::io::{BufRead, BufReader, Write};
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let _ = stream.write_all(
                    b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nSPID\t1\nCUID\t1\nCOOKIE\t00\nDONE\n",
                );
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    if line.starts_with("AUTH\t") {
                        let _ = stream.write_all(answer.as_bytes());
                        if hang_up {
                            return;
                        }
                    }
                    line.clear();
                }
            });
        }
    });
}

#[test]
fn what_the_auth_server_says_is_what_the_client_is_told() {
    // (Dovecot's answer to AUTH, it hangs up, the reply, a line the log must have)
    let table = [
        (
            "FAIL\t1\tuser=alice\ttemp\treason=Internal error occurred\n",
            false,
            "454 4.7.0 Temporary authentication failure: Internal error occurred",
            "SASL PLAIN authentication failed: Internal error occurred, sasl_username=alice",
        ),
        (
            "FAIL\t1\tcode=pass_expired\treason=Password expired\n",
            false,
            "535 5.7.8 Error: authentication failed: Password expired",
            "SASL PLAIN authentication failed: Password expired, sasl_username=(unavailable)",
        ),
        (
            "OK\t1\tuser=al\u{1}tice\u{1b}\n",
            false,
            "235 2.7.0 Authentication successful",
            "client=unknown[127.0.0.1], sasl_method=PLAIN, sasl_username=al?ice?\n",
        ),
        (
            "garbage\n",
            true,
            "454 4.7.0 Temporary authentication failure: Connection lost to authentication server",
            "warning: SASL: Dovecot auth socket 'private/auth': connection closed by the auth server",
        ),
    ];
    for (answer, hang_up, reply, logged) in table {
        let sys = MailSystem::new(
            "smtpd_port = 0\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n\
             mynetworks = 10.0.0.0/8\nsmtpd_sasl_auth_enable = yes\nlocal_recipient_maps =\n",
        );
        fake_dovecot(&socket_of(&sys), answer, hang_up);
        let server = InProcess::start(&sys);
        let mut lines = raw(
            server.smtp(),
            &format!(
                "EHLO x\r\nAUTH PLAIN {}\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.net>\r\n\
                 DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n",
                plain(PASSWORD)
            ),
        );
        assert!(
            lines.iter().any(|l| l == "250-AUTH PLAIN LOGIN"),
            "{lines:?}"
        );
        lines.retain(|l| !l.starts_with("250-") && !l.starts_with("220 "));
        // EHLO's last line, then AUTH's reply.
        assert_eq!(lines[1], reply, "{answer:?}: {lines:?}");
        let log = sys.maillog();
        assert!(log.contains(logged), "{answer:?}: {log}");
        if reply.starts_with("235") {
            assert_eq!(lines[3], "250 2.1.5 Ok", "a login may relay: {lines:?}");
        } else {
            assert_eq!(lines[3], "554 5.7.1 <bob@example.net>: Relay access denied");
        }
    }
}

/// Sends `input` at once (as a pipelining client would not for AUTH, but the server
/// must cope) and reads every reply line until the server closes.
fn raw(addr: SocketAddr, input: &str) -> Vec<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(input.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out.lines().map(str::to_string).collect()
}

#[test]
fn swaks_logs_in_with_each_mechanism_and_relays() {
    if !tools() || !require_tool("swaks") {
        return;
    }
    // Without TLS (swaks may lack it): AUTH before STARTTLS is allowed by default.
    let sys = system("");
    let Some(_dovecot) = Dovecot::start(&socket_of(&sys), &[(USER, PASSWORD)]) else {
        return;
    };
    let server = InProcess::start(&sys);
    // (mechanism, password, swaks succeeds)
    let table = [
        ("PLAIN", PASSWORD, true),
        ("LOGIN", PASSWORD, true),
        // Last: Dovecot slows every later login from an address that failed.
        ("PLAIN", "guess", false),
        ("LOGIN", "guess", false),
    ];
    for (mechanism, password, ok) in table {
        let out = Command::new("swaks")
            .args(["--server", &server.smtp().to_string()])
            .args([
                "--auth",
                mechanism,
                "--auth-user",
                USER,
                "--auth-password",
                password,
            ])
            .args(["--from", "alice@mail.server.com", "--to", "bob@example.net"])
            .args(["--helo", "swaks.example", "--timeout", "20"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.success(), ok, "{mechanism} {password}: {text}");
        if ok {
            assert!(
                text.contains("<-  235 2.7.0 Authentication successful"),
                "{text}"
            );
            assert!(text.contains("<-  250 2.0.0 Ok: queued as "), "{text}");
        } else {
            assert!(
                text.contains("535 5.7.8 Error: authentication failed"),
                "{text}"
            );
        }
    }
    let messages = queued(&sys);
    assert_eq!(messages.len(), 2);
    assert!(messages.iter().all(|m| m.contains(" with ESMTPA id ")));
}
