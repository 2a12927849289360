//! The SMTP server: `sendmail -bs` driven by swaks and Python's smtplib, and the
//! listener (run in-process on 127.0.0.1 with a port the system picks) driven by raw
//! sockets and smtplib. Only ever connects to 127.0.0.1.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::listening::InProcess;
use common::smtp_server::rsa_certificate;
use common::{MailSystem, require_tool, stderr};
use mailroom::queue::QueueName;

const SENDMAIL: &str = env!("CARGO_BIN_EXE_sendmail");

/// These tests are about the protocol and send to made-up local users (alice, carol,
/// nosuchuser): they turn off the check of local recipients, which tests/smtpd_rcpt.rs
/// covers.
const ANY_LOCAL_PART: &str = "local_recipient_maps =\n";

fn only_message(sys: &MailSystem) -> (mailroom::queue::Envelope, String) {
    let mut all = sys.messages(QueueName::Maildrop);
    assert_eq!(all.len(), 1, "exactly one message queued");
    let (env, bytes) = all.remove(0);
    (env, String::from_utf8_lossy(&bytes).into_owned())
}

fn recipients(env: &mailroom::queue::Envelope) -> Vec<(String, String)> {
    env.recipients
        .iter()
        .map(|r| (r.original.clone(), r.address.clone()))
        .collect()
}

fn maillog(sys: &MailSystem) -> String {
    std::fs::read_to_string(sys.root().join("maillog")).unwrap_or_default()
}

/// The log once it mentions `what` (sessions log their end after the client has its
/// last reply), or as it is after ten seconds.
fn maillog_with(sys: &MailSystem, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = maillog(sys);
        if log.contains(what) || Instant::now() > deadline {
            return log;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ----------------------------------------------------------------------------------
// sendmail -bs

#[test]
fn bs_pipelined_transcript_with_lf_and_crlf() {
    let sys = MailSystem::new(ANY_LOCAL_PART);
    // Everything at once, as a pipelining client sends it; some lines end in bare LF.
    let input = b"EHLO client.example\r\nMAIL FROM:<sender@example.org>\r\nRCPT TO:<alice>\n\
                  RCPT TO:<nosuchuser@mail.server.com>\r\nDATA\r\nSubject: hi\r\n\r\n..dot\r\n\
                  .\r\nVRFY alice\r\nNOOP\r\nRSET\r\nBOGUS\r\nRCPT TO:<x>\r\nDATA\r\n\
                  MAIL FROM:<a@b> SIZE=999999999999\r\nMAIL FROM:<a@b>\r\n\
                  RCPT TO:<a b@localhost>\r\nRCPT TO:<alice@>\r\nDATA\r\nQUIT\r\n";
    let out = sys.run(SENDMAIL, &["-bs"], input);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.split_inclusive('\n').all(|l| l.ends_with("\r\n")),
        "CRLF"
    );
    let (env, message) = only_message(&sys);
    let id = env.id.to_string();
    let expected = [
        "220 vm ESMTP mailroom",
        "250-vm",
        "250-PIPELINING",
        "250-SIZE 10240000",
        "250-VRFY",
        "250-ENHANCEDSTATUSCODES",
        "250 8BITMIME",
        "250 2.1.0 Ok",
        "250 2.1.5 Ok",
        "250 2.1.5 Ok",
        "354 End data with <CR><LF>.<CR><LF>",
        &format!("250 2.0.0 Ok: queued as {id}"),
        "252 2.0.0 alice",
        "250 2.0.0 Ok",
        "250 2.0.0 Ok",
        "500 5.5.2 Error: command not recognized",
        "503 5.5.1 Error: need MAIL command",
        "503 5.5.1 Error: need RCPT command",
        "552 5.3.4 Message size exceeds fixed limit",
        "250 2.1.0 Ok",
        "501 5.1.3 Bad recipient address syntax",
        "501 5.1.3 Bad recipient address syntax",
        "554 5.5.1 Error: no valid recipients",
        "221 2.0.0 Bye",
    ];
    assert_eq!(text.lines().collect::<Vec<_>>(), expected);
    // The envelope: sender as given, recipients qualified; the local user's uid.
    assert_eq!(env.sender, "sender@example.org");
    assert_eq!(
        recipients(&env),
        [
            ("alice".into(), "alice@mail.server.com".into()),
            (
                "nosuchuser@mail.server.com".into(),
                "nosuchuser@mail.server.com".into()
            )
        ]
    );
    assert_eq!(env.uid, nix::unistd::getuid().as_raw());
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(
        lines[0],
        "Received: from client.example (localhost [127.0.0.1])"
    );
    assert!(
        lines[1].starts_with(&format!("\tby vm (mailroom) with ESMTP id {id}; ")),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2], "Subject: hi");
    assert!(lines[3].starts_with("Message-Id: <") && lines[3].ends_with(&format!(".{id}@vm>")));
    assert!(lines[4].starts_with("Date: "));
    assert_eq!(lines[5], "From: sender@example.org");
    assert_eq!(&lines[6..], ["", ".dot"], "dot-unstuffed, CRLF gone");
    let log = maillog(&sys);
    assert!(log.contains("mailroom/smtpd["), "{log}");
    assert!(log.contains(": connect from localhost[127.0.0.1]"), "{log}");
    assert!(
        log.contains(&format!("]: {id}: client=localhost[127.0.0.1]")),
        "{log}"
    );
    assert!(
        log.contains(": disconnect from localhost[127.0.0.1] ehlo=1 mail=2/3"),
        "{log}"
    );
}

#[test]
fn bs_eof_without_quit_exits_zero_and_queues_nothing_partial() {
    let sys = MailSystem::new(ANY_LOCAL_PART);
    let out = sys.run(
        SENDMAIL,
        &["-bs"],
        b"HELO x\nMAIL FROM:<a@b>\nRCPT TO:<alice>\nDATA\nSubject: cut\n\nhalf",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(sys.files_in(QueueName::Maildrop).is_empty());
    // As Postfix: the bytes of message text received, here "Subject: cut\n\nhalf".
    assert!(
        maillog(&sys).contains("lost connection after DATA (18 bytes) from localhost[127.0.0.1]")
    );
}

/// RFC 5321's limit (section 4.5.3.1): an address of at most 320 bytes. A local part
/// longer than RFC 5321's 64 is taken (VERP and SRS senders have them, and Postfix takes
/// them). Longer addresses get Postfix's answer to an address it cannot take (smtpd.c,
/// `mail_cmd` and `rcpt_cmd`), and the session goes on; what is queued stays within them.
#[test]
fn bs_over_long_addresses_are_bad_syntax() {
    let sys = MailSystem::new(ANY_LOCAL_PART);
    let local = |n: usize| "a".repeat(n);
    let domain = format!("{}.example", "d".repeat(320));
    // (command, reply)
    let table: Vec<(String, &str)> = vec![
        (
            format!("MAIL FROM:<{}@example.org>", local(400)),
            "501 5.1.7 Bad sender address syntax",
        ),
        (
            format!("MAIL FROM:<b@{domain}>"),
            "501 5.1.7 Bad sender address syntax",
        ),
        (
            format!("MAIL FROM:<{}@example.org>", local(100)),
            "250 2.1.0 Ok",
        ),
        (
            format!("RCPT TO:<{}@example.org>", local(400)),
            "501 5.1.3 Bad recipient address syntax",
        ),
        (
            format!("RCPT TO:<{}>", local(400)),
            "501 5.1.3 Bad recipient address syntax",
        ),
        (
            format!("RCPT TO:<b@{domain}>"),
            "501 5.1.3 Bad recipient address syntax",
        ),
        (
            format!("VRFY {}", local(400)),
            "501 5.1.3 Bad recipient address syntax",
        ),
        (
            format!("RCPT TO:<{}@mail.server.com>", local(100)),
            "250 2.1.5 Ok",
        ),
        ("DATA".into(), "354 End data with <CR><LF>.<CR><LF>"),
    ];
    let mut input = String::from("EHLO client.example\r\n");
    for (command, _) in &table {
        input.push_str(command);
        input.push_str("\r\n");
    }
    input.push_str("Subject: long\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    let out = sys.run(SENDMAIL, &["-bs"], input.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let replies: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("220 ") && !l.starts_with("250-"))
        .collect();
    // EHLO's last line, one reply per command, then the queued message and QUIT.
    assert_eq!(replies[0], "250 8BITMIME");
    for (i, (command, reply)) in table.iter().enumerate() {
        assert_eq!(
            replies[i + 1],
            *reply,
            "{}",
            &command[..command.len().min(40)]
        );
    }
    assert!(replies[table.len() + 1].starts_with("250 2.0.0 Ok: queued as "));
    let (env, _) = only_message(&sys);
    assert_eq!(env.sender, format!("{}@example.org", local(100)));
    assert_eq!(
        env.recipients[0].address,
        format!("{}@mail.server.com", local(100))
    );
}

#[test]
fn bs_with_swaks() {
    if !require_tool("swaks") {
        return;
    }
    let sys = MailSystem::new("");
    let out = sys
        .command("swaks")
        .args(["--pipe", &format!("{SENDMAIL} -bs")])
        .args(["--from", "swaks@example.org", "--to", "bob@example.net"])
        .args(["--helo", "swaks.example", "--pipeline"])
        .args([
            "--data",
            "Subject: via swaks\n\nfirst\n.leading dot\n..two dots\nlast\n",
        ])
        .output()
        .expect("swaks");
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{transcript}{}", stderr(&out));
    let (env, message) = only_message(&sys);
    assert!(
        transcript.contains(&format!("<-  250 2.0.0 Ok: queued as {}", env.id)),
        "{transcript}"
    );
    assert_eq!(env.sender, "swaks@example.org");
    // A local user may relay anywhere over -bs.
    assert_eq!(
        recipients(&env),
        [("bob@example.net".into(), "bob@example.net".into())]
    );
    assert!(message.starts_with("Received: from swaks.example (localhost [127.0.0.1])\n"));
    assert!(message.contains("\n\tfor <bob@example.net>; "), "{message}");
    assert!(
        message.contains("\n\nfirst\n.leading dot\n..two dots\nlast\n"),
        "{message}"
    );
}

const SMTPLIB_PIPE: &str = r#"
import smtplib, socket, subprocess, sys
a, b = socket.socketpair()
p = subprocess.Popen([sys.argv[1], '-bs'], stdin=b, stdout=b)
b.close()
s = smtplib.SMTP()
s.sock = a
s.file = a.makefile('rb')
code, banner = s.getreply()
assert code == 220, banner
s.ehlo('py.example')
assert s.has_extn('pipelining') and s.has_extn('8bitmime') and s.has_extn('size')
assert not s.has_extn('starttls')
refused = s.sendmail('py@example.org', ['carol', 'dave@localhost'],
                     b'Subject: smtplib\r\n\r\n.starts with a dot\r\nplain\r\n')
assert refused == {}, refused
print(s.quit()[0])
print(p.wait())
"#;

#[test]
fn bs_with_python_smtplib() {
    let sys = MailSystem::new(ANY_LOCAL_PART);
    let out = sys
        .command("python3")
        .args(["-c", SMTPLIB_PIPE, SENDMAIL])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "221\n0\n");
    let (env, message) = only_message(&sys);
    assert_eq!(env.sender, "py@example.org");
    assert_eq!(
        recipients(&env),
        [
            ("carol".into(), "carol@mail.server.com".into()),
            ("dave@localhost".into(), "dave@localhost".into())
        ]
    );
    // Two recipients: no "for" clause, so neither learns of the other.
    assert!(message.starts_with("Received: from py.example (localhost [127.0.0.1])\n"));
    assert!(!message.contains("\tfor <"));
    assert!(
        message.ends_with("\n\n.starts with a dot\nplain\n"),
        "{message}"
    );
}

// ----------------------------------------------------------------------------------
// The listener

/// The listener on 127.0.0.1 and a port the system chooses, over `sys`'s configuration:
/// one address.
fn listen(sys: &MailSystem) -> InProcess {
    let server = InProcess::start(sys);
    let addrs = &server.smtp_addrs;
    assert_eq!(addrs.len(), 1, "{addrs:?}");
    server
}

fn system(extra: &str) -> MailSystem {
    // smtpd_port = 0: the system picks a free port; later lines win over common's.
    MailSystem::new(&format!(
        "smtpd_port = 0\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nsmtpd_timeout = 5s\n\
         {ANY_LOCAL_PART}{extra}"
    ))
}

struct SmtpClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl SmtpClient {
    fn connect(addr: SocketAddr) -> SmtpClient {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        SmtpClient {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    /// The next complete reply, its lines joined with newlines.
    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap_or(0) == 0 {
                return all;
            }
            all.push_str(line.trim_end());
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
            all.push('\n');
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.reply()
    }

    /// A whole transaction; returns the reply to the final dot.
    fn send_mail(&mut self, from: &str, to: &str, body: &str) -> String {
        assert_eq!(self.cmd(&format!("MAIL FROM:<{from}>")), "250 2.1.0 Ok");
        assert_eq!(self.cmd(&format!("RCPT TO:<{to}>")), "250 2.1.5 Ok");
        assert!(self.cmd("DATA").starts_with("354 "));
        self.cmd(&format!("{body}\r\n."))
    }
}

/// A normal session still works: the server stayed up.
fn still_serves(addr: SocketAddr) {
    let mut c = SmtpClient::connect(addr);
    assert_eq!(c.reply(), "220 vm ESMTP mailroom");
    assert!(c.cmd("EHLO ok.example").starts_with("250-vm"));
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok");
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye");
}

#[test]
fn relay_control_from_outside_mynetworks() {
    let sys = system("mynetworks = 10.0.0.0/8\nrelay_domains = partner.example");
    let server = listen(&sys);
    let mut c = SmtpClient::connect(server.smtp());
    assert_eq!(c.reply(), "220 vm ESMTP mailroom");
    let ehlo = c.cmd("EHLO outside.example");
    assert!(
        ehlo.contains("250-PIPELINING") && ehlo.ends_with("250 8BITMIME"),
        "{ehlo}"
    );
    assert!(!ehlo.contains("STARTTLS"), "no certificate, no STARTTLS");
    assert_eq!(c.cmd("MAIL FROM:<s@outside.example>"), "250 2.1.0 Ok");
    assert_eq!(
        c.cmd("RCPT TO:<bob@example.net>"),
        "554 5.7.1 <bob@example.net>: Relay access denied"
    );
    assert_eq!(c.cmd("RCPT TO:<alice@localhost>"), "250 2.1.5 Ok");
    assert_eq!(c.cmd("RCPT TO:<p@mx.partner.example>"), "250 2.1.5 Ok");
    assert_eq!(c.cmd("RCPT TO:<carol>"), "250 2.1.5 Ok");
    assert!(c.cmd("DATA").starts_with("354 "));
    let queued = c.cmd("Subject: from outside\r\nTo: carol\r\n\r\nhello\r\n.");
    assert!(queued.starts_with("250 2.0.0 Ok: queued as "), "{queued}");
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye");

    let (env, message) = only_message(&sys);
    assert!(queued.ends_with(&env.id.to_string()));
    assert_eq!(env.sender, "s@outside.example");
    let rcpts: Vec<String> = env.recipients.iter().map(|r| r.address.clone()).collect();
    assert_eq!(
        rcpts,
        [
            "alice@localhost",
            "p@mx.partner.example",
            "carol@mail.server.com"
        ]
    );
    assert!(message.starts_with(&format!(
        "Received: from outside.example (unknown [127.0.0.1])\n\tby vm (mailroom) with ESMTP id {}; ",
        env.id
    )));
    let log = maillog_with(&sys, "disconnect from");
    assert!(
        log.contains(
            "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 554 5.7.1 <bob@example.net>: \
             Relay access denied; from=<s@outside.example> to=<bob@example.net> proto=ESMTP \
             helo=<outside.example>"
        ),
        "{log}"
    );
    assert!(log.contains(": connect from unknown[127.0.0.1]"));
    assert!(log.contains(&format!(": {}: client=unknown[127.0.0.1]", env.id)));
    assert!(
        log.contains(
            ": disconnect from unknown[127.0.0.1] ehlo=1 mail=1 rcpt=3/4 data=1 quit=1 commands=7/8"
        ),
        "{log}"
    );
}

#[test]
fn relay_from_inside_mynetworks() {
    let sys = system("mynetworks = 127.0.0.0/8, [::1]/128");
    let server = listen(&sys);
    let mut c = SmtpClient::connect(server.smtp());
    c.reply();
    assert_eq!(c.cmd("HELO inside"), "250 vm");
    let r = c.send_mail(
        "me@inside.example",
        "bob@example.net",
        "Subject: out\r\n\r\nbye",
    );
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    let (env, message) = only_message(&sys);
    assert_eq!(recipients(&env)[0].1, "bob@example.net");
    // HELO, not EHLO: "with SMTP".
    assert!(message.contains(" (mailroom) with SMTP id "), "{message}");
    assert!(message.contains("\n\tfor <bob@example.net>; "));
}

#[test]
fn mynetworks_style_host_trusts_this_machine() {
    // No mynetworks: computed from the interfaces; 127.0.0.1 is one of them.
    let sys = system("mynetworks_style = host");
    let server = listen(&sys);
    let mut c = SmtpClient::connect(server.smtp());
    c.reply();
    c.cmd("EHLO me");
    let r = c.send_mail("me@x.example", "bob@example.net", "x");
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
}

#[test]
fn message_too_big_is_refused_after_the_dot_and_the_session_goes_on() {
    let sys = system("mynetworks = 10.0.0.0/8\nmessage_size_limit = 1000");
    let server = listen(&sys);
    let mut c = SmtpClient::connect(server.smtp());
    c.reply();
    assert!(c.cmd("EHLO me").contains("250-SIZE 1000"));
    assert_eq!(
        c.cmd("MAIL FROM:<a@b.example> SIZE=1001"),
        "552 5.3.4 Message size exceeds fixed limit"
    );
    let big = "y".repeat(5000);
    let r = c.send_mail("a@b.example", "alice@localhost", &big);
    assert_eq!(r, "552 5.3.4 Error: message file too big");
    assert!(sys.files_in(QueueName::Maildrop).is_empty());
    let r = c.send_mail("a@b.example", "alice@localhost", "small");
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
}

const SMTPLIB_TLS: &str = r#"
import smtplib, ssl, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), local_hostname='tls.example', timeout=20)
s.ehlo()
assert s.has_extn('starttls'), s.esmtp_features
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s.starttls(context=ctx)
s.ehlo()
assert not s.has_extn('starttls')
s.sendmail('t@tls.example', ['alice@localhost'], b'Subject: secret\r\n\r\nover tls\r\n')
print(s.sock.version())
s.quit()
"#;

#[test]
fn starttls_with_a_self_signed_certificate() {
    if !require_tool("openssl") {
        return;
    }
    let sys0 = tempfile::tempdir().unwrap();
    let (cert, key) = rsa_certificate(sys0.path());
    let sys = system(&format!(
        "mynetworks = 10.0.0.0/8\nsmtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\n",
        cert.display(),
        key.display()
    ));
    let server = listen(&sys);
    let out = Command::new("python3")
        .args(["-c", SMTPLIB_TLS, &server.smtp().port().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("TLSv1."));
    let (_, message) = only_message(&sys);
    assert!(message.starts_with("Received: from tls.example (unknown [127.0.0.1])\n"));
    assert!(message.contains(" (mailroom) with ESMTPS id "), "{message}");

    // Plain-text commands pipelined after STARTTLS are never taken as sent over TLS.
    let mut c = SmtpClient::connect(server.smtp());
    c.reply();
    c.cmd("EHLO x");
    assert_eq!(
        c.cmd("STARTTLS\r\nMAIL FROM:<inject@x>"),
        "220 2.0.0 Ready to start TLS"
    );
    drop(c);
    still_serves(server.smtp());
}

#[test]
fn encrypt_level_refuses_mail_before_starttls() {
    let sys = system("smtpd_tls_security_level = encrypt\nsmtpd_tls_cert_file = /nonexistent.pem");
    let server = listen(&sys);
    let mut c = SmtpClient::connect(server.smtp());
    c.reply();
    c.cmd("EHLO x");
    assert_eq!(
        c.cmd("MAIL FROM:<a@b>"),
        "530 5.7.0 Must issue a STARTTLS command first"
    );
    assert_eq!(
        c.cmd("STARTTLS"),
        "454 4.7.0 TLS not available due to local problem"
    );
    assert!(maillog(&sys).contains("cannot load TLS certificate"));
}

// ----------------------------------------------------------------------------------
// Abuse: the server answers or closes, stays up, and queues nothing partial.

#[test]
fn a_ten_megabyte_line() {
    let sys = system("mynetworks = 10.0.0.0/8");
    let server = listen(&sys);
    let mut c = SmtpClient::connect(server.smtp());
    c.reply();
    let writer = {
        let mut w = c.writer.try_clone().unwrap();
        std::thread::spawn(move || {
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..10 {
                w.write_all(&chunk).unwrap();
            }
            w.write_all(b"\r\nNOOP\r\n").unwrap();
        })
    };
    assert_eq!(c.reply(), "500 5.5.2 Error: command not recognized");
    assert_eq!(c.reply(), "250 2.0.0 Ok");
    writer.join().unwrap();
    // And one that never ends: the client gives up; the server must not mind.
    let mut c2 = SmtpClient::connect(server.smtp());
    c2.reply();
    c2.writer.write_all(&vec![b'z'; 10 << 20]).unwrap();
    drop(c2);
    still_serves(server.smtp());
    assert!(sys.files_in(QueueName::Maildrop).is_empty());
}

#[test]
fn ten_thousand_recipients() {
    let sys = system("mynetworks = 10.0.0.0/8");
    let server = listen(&sys);
    let mut c = SmtpClient::connect(server.smtp());
    c.reply();
    let writer = {
        let mut w = c.writer.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut all = String::from("EHLO many\r\nMAIL FROM:<a@b.example>\r\n");
            for i in 0..10_000 {
                all.push_str(&format!("RCPT TO:<user{i}@localhost>\r\n"));
            }
            all.push_str("DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n");
            // The server hangs up part way; that is the point.
            let _ = w.write_all(all.as_bytes());
        })
    };
    let mut text = String::new();
    let _ = c.reader.read_to_string(&mut text);
    writer.join().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let ok = lines.iter().filter(|l| **l == "250 2.1.5 Ok").count();
    let too_many = lines
        .iter()
        .filter(|l| **l == "452 4.5.3 Error: too many recipients")
        .count();
    assert_eq!(ok, 1000);
    assert_eq!(too_many, 1000 + 20);
    assert_eq!(
        *lines.last().unwrap(),
        "421 4.7.0 vm Error: too many errors"
    );
    assert!(sys.files_in(QueueName::Maildrop).is_empty());
    assert!(
        maillog_with(&sys, "too many errors")
            .contains("too many errors after RCPT from unknown[127.0.0.1]")
    );
    still_serves(server.smtp());
}

#[test]
fn a_client_that_disconnects_mid_data() {
    let sys = system("mynetworks = 10.0.0.0/8");
    let server = listen(&sys);
    let mut c = SmtpClient::connect(server.smtp());
    c.reply();
    c.cmd("EHLO half");
    c.cmd("MAIL FROM:<a@b.example>");
    c.cmd("RCPT TO:<alice@localhost>");
    assert!(c.cmd("DATA").starts_with("354"));
    c.writer
        .write_all(&b"Subject: cut\r\n\r\n".repeat(1000))
        .unwrap();
    c.writer.write_all(b"half a line").unwrap();
    c.writer.shutdown(Shutdown::Both).unwrap();
    drop(c);
    // As Postfix: "lost connection after DATA (N bytes) from ...", N what arrived.
    let log = maillog_with(&sys, "lost connection");
    assert!(
        log.lines()
            .any(|l| l.contains("lost connection after DATA (")
                && l.ends_with(" bytes) from unknown[127.0.0.1]")),
        "{log}"
    );
    assert!(
        sys.files_in(QueueName::Maildrop).is_empty(),
        "no partial or temporary file"
    );
    still_serves(server.smtp());
}

#[test]
fn two_hundred_idle_connections() {
    // The session limit alone: without smtpd_client_connection_count_limit (50), which
    // would turn away this one client's connections before they reach it.
    let sys = system(
        "mynetworks = 10.0.0.0/8\nsmtpd_process_limit = 50\nsmtpd_client_connection_count_limit = 0",
    );
    let server = listen(&sys);
    let mut clients: Vec<SmtpClient> = (0..200)
        .map(|_| SmtpClient::connect(server.smtp()))
        .collect();
    let greetings: Vec<String> = clients.iter_mut().map(|c| c.reply()).collect();
    let served = greetings
        .iter()
        .filter(|g| *g == "220 vm ESMTP mailroom")
        .count();
    let refused = greetings
        .iter()
        .filter(|g| *g == "421 4.3.2 Service not available, too many connections")
        .count();
    assert_eq!((served, refused), (50, 150), "{greetings:?}");
    drop(clients);
    // The sessions notice their clients left; slots free up at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = SmtpClient::connect(server.smtp());
        if c.reply().starts_with("220 ") || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    still_serves(server.smtp());
}

#[test]
fn idle_clients_time_out() {
    let sys = system("mynetworks = 10.0.0.0/8\nsmtpd_timeout = 1s");
    let server = listen(&sys);
    let mut c = SmtpClient::connect(server.smtp());
    c.reply();
    c.cmd("EHLO sleepy");
    let started = Instant::now();
    assert_eq!(c.reply(), "421 4.4.2 vm Error: timeout exceeded");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        maillog_with(&sys, "timeout after").contains("timeout after EHLO from unknown[127.0.0.1]")
    );
}

// ----------------------------------------------------------------------------------
// Bare line endings and SMTP smuggling (smtpd_forbid_bare_newline)

/// The DATA of a message whose text holds a non-standard end of data (`end`) followed by
/// a whole second transaction: a server that takes `end` for the end of the data takes
/// the second one as a message of its own, from a sender nobody checked.
fn smuggling(end: &str) -> String {
    format!(
        "Subject: outer\r\n\r\nbody{end}MAIL FROM:<forged@example.com>\r\n\
         RCPT TO:<alice>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n"
    )
}

/// The text of the only message queued, after its header.
fn only_body(sys: &MailSystem) -> String {
    let (_, message) = only_message(sys);
    message
        .split_once("\n\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// What a client that sends its lines with CRLF and DATA holding `end` inside gets
/// stored: the whole text as one message, the dot line kept as the sender wrote it.
fn one_message_with_the_dot_kept(sys: &MailSystem, dot_line: &str, what: &str) {
    let count = sys.files_in(QueueName::Maildrop).len();
    assert_eq!(count, 1, "{what}: one message, no smuggled second one");
    let body = only_body(sys);
    assert_eq!(
        body,
        format!(
            "{dot_line}MAIL FROM:<forged@example.com>\nRCPT TO:<alice>\nDATA\n\
             Subject: smuggled\n\nevil\n"
        ),
        "{what}"
    );
}

#[test]
fn bs_bare_line_endings_inside_data_are_text_for_a_crlf_client() {
    // (the end of data hidden in the text, the body lines it leaves)
    let cases = [
        ("\n.\n", "body\n.\n"),
        ("\r\n.\n", "body\n.\n"),
        ("\n.\r\n", "body\n.\n"),
        ("\n..\n", "body\n.\n"),
        // A bare CR ends nothing; as Postfix's cleanup does, it becomes a space, so
        // that no server this message is relayed to can read it as a line break.
        ("\r.\r\n", "body .\n"),
        ("\r\n.\r\r\n", "body\n \n"),
    ];
    for (end, dot_line) in cases {
        let sys = MailSystem::new(ANY_LOCAL_PART);
        let input = format!(
            "EHLO client.example\r\nMAIL FROM:<sender@example.org>\r\nRCPT TO:<alice>\r\n\
             DATA\r\n{}QUIT\r\n",
            smuggling(end)
        );
        let out = sys.run(SENDMAIL, &["-bs"], input.as_bytes());
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8(out.stdout).unwrap();
        let replies: Vec<&str> = text.lines().filter(|l| !l.starts_with("250-")).collect();
        assert_eq!(replies.len(), 7, "{end:?}: {text}");
        assert_eq!(replies[4], "354 End data with <CR><LF>.<CR><LF>");
        assert!(replies[5].starts_with("250 2.0.0 Ok: queued as "), "{text}");
        assert_eq!(replies[6], "221 2.0.0 Bye", "{end:?}: {text}");
        one_message_with_the_dot_kept(&sys, dot_line, &format!("{end:?}"));
    }
}

#[test]
fn bs_a_client_that_writes_lf_still_ends_data_with_lf_dot_lf() {
    // A person at a terminal, or a script with echo: LF everywhere, as Postfix's
    // sendmail -bs takes it.
    let sys = MailSystem::new(ANY_LOCAL_PART);
    let input = b"HELO me\nMAIL FROM:<s@example.org>\nRCPT TO:<alice>\nDATA\n\
                  Subject: typed\n\nline\n.\nQUIT\n";
    let out = sys.run(SENDMAIL, &["-bs"], input);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("250 2.0.0 Ok: queued as "), "{text}");
    assert!(text.ends_with("221 2.0.0 Bye\r\n"), "{text}");
    assert_eq!(only_body(&sys), "line\n");
}

/// Sends `input` at once to the listener and returns every reply line until it closes.
fn raw_session(addr: SocketAddr, input: &[u8]) -> Vec<String> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(input).unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.lines().map(str::to_string).collect()
}

fn transaction(data: &str) -> String {
    format!(
        "EHLO client.example\r\nMAIL FROM:<sender@example.org>\r\nRCPT TO:<alice@localhost>\r\n\
         DATA\r\n{data}QUIT\r\n"
    )
}

#[test]
fn listener_bare_newline_normalize_keeps_the_dot_and_smuggles_nothing() {
    // The default; mynetworks is no exclusion unless named.
    for end in ["\n.\n", "\r\n.\n", "\n.\r\n"] {
        let sys = system("");
        let server = listen(&sys);
        let replies = raw_session(server.smtp(), transaction(&smuggling(end)).as_bytes());
        let last: Vec<&str> = replies.iter().rev().take(2).map(String::as_str).collect();
        assert_eq!(last[0], "221 2.0.0 Bye", "{end:?}: {replies:?}");
        assert!(
            last[1].starts_with("250 2.0.0 Ok: queued as "),
            "{replies:?}"
        );
        drop(server);
        one_message_with_the_dot_kept(&sys, "body\n.\n", &format!("{end:?}"));
    }
}

#[test]
fn listener_bare_newline_reject_answers_as_postfix() {
    let sys = system("smtpd_forbid_bare_newline = reject");
    let server = listen(&sys);
    // In the text: read to the real end, then refused; the session goes on.
    let replies = raw_session(server.smtp(), transaction(&smuggling("\n.\n")).as_bytes());
    let n = replies.len();
    assert_eq!(
        replies[n - 2..],
        ["550 5.5.2 vm Error: bare <LF> received", "221 2.0.0 Bye"],
        "{replies:?}"
    );
    assert!(sys.files_in(QueueName::Maildrop).is_empty());
    // A command line: refused, and the connection closed.
    let replies = raw_session(server.smtp(), b"EHLO client.example\r\nNOOP\nNOOP\r\n");
    assert_eq!(
        replies.last().map(String::as_str),
        Some("550 5.5.2 vm Error: bare <LF> received"),
        "{replies:?}"
    );
    // Logged as Postfix logs it: under the last command it took.
    let log = maillog_with(&sys, "reject: EHLO from");
    assert!(
        log.contains(
            "NOQUEUE: reject: END-OF-MESSAGE from unknown[127.0.0.1]: bare <LF> received; \
             from=<sender@example.org> to=<alice@localhost> proto=ESMTP helo=<client.example>"
        ),
        "{log}"
    );
    assert!(
        log.contains(
            "NOQUEUE: reject: EHLO from unknown[127.0.0.1]: bare <LF> received; \
             proto=ESMTP helo=<client.example>"
        ),
        "{log}"
    );
    // Lines with CRLF only: taken.
    let replies = raw_session(
        server.smtp(),
        transaction("Subject: fine\r\n\r\nok\r\n.\r\n").as_bytes(),
    );
    assert!(
        replies[replies.len() - 2].starts_with("250 2.0.0 Ok: queued as "),
        "{replies:?}"
    );
}

#[test]
fn listener_bare_newline_no_and_exclusions_take_lf_dot_lf_as_postfix_does() {
    for extra in [
        "smtpd_forbid_bare_newline = no",
        "smtpd_forbid_bare_newline_exclusions = 10.0.0.0/8, 127.0.0.1",
        // mynetworks computed (mynetworks_style = host: this machine's addresses).
        "smtpd_forbid_bare_newline_exclusions = $mynetworks",
    ] {
        let sys = system(extra);
        let server = listen(&sys);
        let replies = raw_session(
            server.smtp(),
            transaction("Subject: old client\n\nbody\n.\n").as_bytes(),
        );
        let n = replies.len();
        assert!(
            replies[n - 2].starts_with("250 2.0.0 Ok: queued as "),
            "{extra}: {replies:?}"
        );
        assert_eq!(replies[n - 1], "221 2.0.0 Bye");
        drop(server);
        assert_eq!(only_body(&sys), "body\n", "{extra}");
    }
}

#[test]
fn listener_bare_newline_note_takes_the_mail_and_says_so_in_the_log() {
    let sys = system("smtpd_forbid_bare_newline = note");
    let server = listen(&sys);
    let replies = raw_session(
        server.smtp(),
        transaction("Subject: mixed\r\n\r\nlf line\nok\r\n.\r\n").as_bytes(),
    );
    assert!(
        replies[replies.len() - 2].starts_with("250 2.0.0 Ok: queued as "),
        "{replies:?}"
    );
    let log = maillog_with(&sys, "disconnect from");
    assert!(
        log.contains("disconnect from unknown[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5 notes=bare_lf"),
        "{log}"
    );
    drop(server);
    assert_eq!(only_body(&sys), "lf line\nok\n");
}
