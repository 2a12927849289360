//! The SMTPS listener (`smtps_port`): the submission service with TLS from the first
//! byte (RFC 8314), served by the daemon's sessions process beside the plain listener:
//! mail only from clients logged in through a real Dovecot, as Postfix's master.cf
//! `submissions` entry. Python's `smtplib.SMTP_SSL` is the independent client.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::dovecot::Dovecot;
use common::listening::ListeningDaemon;
use common::smtp_server::{free_port, self_signed_certificate};
use common::{me, require_python_module, stderr};

/// Tries to send over SMTPS without logging in; prints whether STARTTLS was offered,
/// the TLS version and the reply to MAIL.
const SMTPLIB_SSL: &str = r#"
import smtplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP_SSL("127.0.0.1", int(sys.argv[1]), context=ctx, timeout=20)
s.ehlo("tls.example")
print("STARTTLS offered" if s.has_extn("starttls") else "no STARTTLS")
print(s.sock.version())
code, msg = s.mail("alice@example.com")
print("%d %s" % (code, msg.decode()))
s.quit()
"#;

fn daemon(cert: &Path, key: &Path, smtps: u16) -> ListeningDaemon {
    ListeningDaemon::start(&format!(
        "smtps_port = {smtps}\nsmtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\n\
         smtpd_timeout = 10s\nlocal_recipient_maps =\nmynetworks = 127.0.0.0/8\n",
        cert.display(),
        key.display()
    ))
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Port 465 is submission (RFC 8314): TLS before the greeting, and no mail without a
/// login, even from a client in mynetworks (127.0.0.1 here) to a local user. Needs no
/// Dovecot: MAIL is refused before anyone asks it.
#[test]
fn smtps_is_tls_from_the_first_byte_and_takes_no_mail_before_auth() {
    if !require_python_module("smtplib") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = self_signed_certificate(dir.path()) else {
        return;
    };
    let smtps = free_port();
    let d = daemon(&cert, &key, smtps);
    let out = Command::new("python3")
        .args(["-c", SMTPLIB_SSL, &smtps.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.maillog()
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("no STARTTLS\nTLSv1."), "{said}");
    assert!(
        said.ends_with("\n530 5.7.0 Authentication required\n"),
        "{said}"
    );
    // The session's lines are the smtps service's, as Postfix's usual master.cf names it.
    let log = d.log_with("NOQUEUE: reject: MAIL from ");
    assert!(
        log.lines().any(|l| l.contains("mailroom/smtps/smtpd[")
            && l.contains("]: connect from unknown[127.0.0.1]")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("mailroom/smtps/smtpd[")
            && l.contains(
                ": NOQUEUE: reject: MAIL from unknown[127.0.0.1]: 530 5.7.0 Authentication required;"
            )),
        "{log}"
    );
    assert!(!log.contains(": client=unknown[127.0.0.1]"), "{log}");

    // A client that speaks plain SMTP gets no greeting: the server waits for a TLS
    // hello, answers the plain text with a TLS alert at most, and closes.
    let mut plain = TcpStream::connect(("127.0.0.1", smtps)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    plain.write_all(b"EHLO plain.example\r\n").unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(
        !got.starts_with(b"220"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        got.is_empty() || got[0] == 0x15,
        "a TLS alert or nothing: {got:?}"
    );
    d.log_with("TLS handshake failed from unknown[127.0.0.1]");

    // The plain listener is as it was.
    let mut c = d.client("127.0.0.1");
    assert!(c.reply().starts_with("220 "));
    assert!(c.cmd("EHLO plain.example").starts_with("250"));

    // mailroom status names the SMTPS addresses apart from the plain ones.
    let text = status(&d.sys);
    assert!(
        text.contains(&format!("\nlistening: 127.0.0.1:{}\n", d.port)),
        "{text}"
    );
    assert!(
        text.contains(&format!("\nsmtps: 127.0.0.1:{smtps}\n")),
        "{text}"
    );
}

/// What `mailroom status` prints.
fn status(sys: &common::MailSystem) -> String {
    let out = sys
        .command(env!("CARGO_BIN_EXE_mailroom"))
        .arg("status")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn status_shows_the_smtps_listener_or_why_it_is_off() {
    let smtps = free_port();
    let sys = common::MailSystem::new(&format!(
        "smtps_port = {smtps}\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n"
    ));
    let text = status(&sys);
    assert!(
        text.contains(&format!(
            "\nsmtps: none (not running; smtps_port = {smtps}: smtpd_tls_cert_file is empty: \
             the SMTPS listener is off)\n"
        )),
        "{text}"
    );
    let Some((cert, key)) = self_signed_certificate(sys.root()) else {
        return;
    };
    sys.append_to_main_cf(&format!(
        "smtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\n",
        cert.display(),
        key.display()
    ));
    let text = status(&sys);
    assert!(
        text.contains(&format!(
            "\nsmtps: none (not running; configured: 127.0.0.1:{smtps})\n"
        )),
        "{text}"
    );
    // No line at all without smtps_port.
    let plain = common::MailSystem::new("");
    assert!(!status(&plain).contains("smtps:"));
}

/// Over SMTPS: EHLO (prints whether AUTH is offered), a relay attempt before AUTH
/// (prints the MAIL reply), a login as argv[3] with password argv[4] (prints its
/// reply), then one message to argv[2] (local) and bob@example.net (remote), whose
/// queue ID it prints.
const SMTPLIB_SSL_AUTH: &str = r#"
import smtplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP_SSL("127.0.0.1", int(sys.argv[1]), context=ctx, timeout=20)
s.ehlo("client.example")
print("AUTH " + s.esmtp_features.get("auth", "not offered").strip())
code, msg = s.mail("alice@mail.server.com")
print("%d %s" % (code, msg.decode()))
s.rset()
code, msg = s.login(sys.argv[3], sys.argv[4])
print("%d %s" % (code, msg.decode()))
s.mail("alice@mail.server.com")
for rcpt in [sys.argv[2], "bob@example.net"]:
    code, msg = s.rcpt(rcpt)
    print("%d %s" % (code, msg.decode()))
code, msg = s.data("Subject: submitted on 465\r\n\r\nhello from a mail client\r\n")
print("%d %s" % (code, msg.decode()))
s.quit()
"#;

/// Port 465 as mail clients use it: AUTH offered from the first EHLO (the connection
/// is already encrypted) whatever `smtpd_sasl_auth_enable` says, no mail before it
/// (`530` at MAIL, from mynetworks too), any domain after it, `ESMTPSA` in `Received:`,
/// and the login in the smtps service's log line. Through a started daemon, so the
/// sessions process (mail_owner, chrooted as root) serves it and reaches Dovecot.
#[test]
fn auth_on_the_smtps_port_lets_a_mail_client_relay() {
    const USER: &str = "alice";
    const PASSWORD: &str = "s3cret-Pass";
    if !require_python_module("smtplib") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = self_signed_certificate(dir.path()) else {
        return;
    };
    let chroot = if nix::unistd::geteuid().is_root() {
        "smtpd_chroot = yes\n"
    } else {
        ""
    };
    // (smtpd_sasl_auth_enable, mynetworks): the same session either way, for a
    // stranger on a host with AUTH on port 25 and for a trusted client on one without.
    let table = [("yes", "10.0.0.0/8"), ("no", "127.0.0.0/8")];
    for (auth_enable, mynetworks) in table {
        let case = format!("smtpd_sasl_auth_enable = {auth_enable}, mynetworks = {mynetworks}");
        let smtps = free_port();
        // A relayhost nobody listens on keeps the remote copy from going anywhere. The
        // submission port beside it must not take the SMTPS sockets as its own.
        let d = ListeningDaemon::start(&format!(
            "smtps_port = {smtps}\nsubmission_port = {}\nsmtpd_tls_cert_file = {}\n\
             smtpd_tls_key_file = {}\nsmtpd_timeout = 10s\nlocal_recipient_maps =\n\
             mynetworks = {mynetworks}\nsmtpd_sasl_auth_enable = {auth_enable}\n\
             smtpd_sasl_path = private/auth\nrelayhost = [127.0.0.1]:{}\n{chroot}",
            free_port(),
            cert.display(),
            key.display(),
            free_port()
        ));
        let Some(dovecot) = Dovecot::start(
            &d.sys.root().join("queue/private/auth"),
            &[(USER, PASSWORD)],
        ) else {
            return;
        };
        let out = Command::new("python3")
            .args(["-c", SMTPLIB_SSL_AUTH, &smtps.to_string(), &me(), USER])
            .arg(PASSWORD)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{case}: {}\nlog:\n{}\ndovecot:\n{}",
            stderr(&out),
            d.maillog(),
            dovecot.log()
        );
        let said = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = said.lines().collect();
        assert_eq!(lines[0], "AUTH PLAIN LOGIN", "{case}: {said}");
        assert_eq!(
            lines[1], "530 5.7.0 Authentication required",
            "{case}: {said}"
        );
        assert_eq!(
            lines[2], "235 2.7.0 Authentication successful",
            "{case}: {said}"
        );
        assert_eq!(
            lines[3..5],
            ["250 2.1.5 Ok", "250 2.1.5 Ok"],
            "{case}: {said}"
        );
        let id = lines[5]
            .strip_prefix("250 2.0.0 Ok: queued as ")
            .unwrap_or_else(|| panic!("{case}: {said}"));

        let mbox = d.sys.root().join("spool").join(me());
        wait_for("the message in the mailbox", || {
            std::fs::read_to_string(&mbox).is_ok_and(|m| m.contains("hello from a mail client"))
        });
        let mail = std::fs::read_to_string(&mbox).unwrap();
        assert!(mail.contains(" with ESMTPSA id "), "{case}: {mail}");
        let log = d.log_with(&format!(": {id}: client="));
        let line = log
            .lines()
            .find(|l| l.contains(&format!(": {id}: client=")))
            .unwrap();
        assert!(
            line.contains("mailroom/smtps/smtpd[")
                && line.ends_with(&format!(
                    ": {id}: client=unknown[127.0.0.1], sasl_method=PLAIN, sasl_username={USER}"
                )),
            "{case}: {line}"
        );
        assert!(
            log.lines().any(|l| l.contains("mailroom/smtps/smtpd[")
                && l.contains("NOQUEUE: reject: MAIL from unknown[127.0.0.1]: 530 5.7.0 Authentication required;")),
            "{case}: {log}"
        );
        // Every socket bound once, the SMTPS ones too.
        assert!(!log.contains("cannot listen on"), "{case}: {log}");
        assert!(!log.contains(PASSWORD), "{case}: {log}");
    }
}

/// An SMTPS listener nobody could send through stays off, and the log, `mailroom
/// check` and `mailroom status` say why: no certificate, or no AUTH (SMTPS is
/// submission: mail only after a login).
#[test]
fn an_smtps_listener_that_could_not_work_stays_off() {
    let dir = tempfile::tempdir().unwrap();
    // (main.cf, why it is off)
    let mut table = vec![(String::new(), "smtpd_tls_cert_file is empty")];
    if let Some((cert, key)) = self_signed_certificate(dir.path()) {
        table.push((
            format!(
                "smtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\nsmtpd_sasl_type = cyrus\n",
                cert.display(),
                key.display()
            ),
            "smtpd_sasl_type = cyrus is not supported (only dovecot) and submission requires AUTH",
        ));
    }
    for (extra, reason) in table {
        let smtps = free_port();
        let why = format!("smtps_port = {smtps}: {reason}: the SMTPS listener is off");
        let d = ListeningDaemon::start(&format!("smtps_port = {smtps}\n{extra}"));
        d.log_with("smtps_port = ");
        let log = d.maillog();
        assert!(log.contains(&format!("warning: {why}")), "{log}");
        assert!(
            TcpStream::connect(("127.0.0.1", smtps)).is_err(),
            "not bound: {why}"
        );
        // mailroom check says the same.
        let out = d
            .sys
            .command(env!("CARGO_BIN_EXE_mailroom"))
            .arg("check")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(said.contains(&why), "{said}");
        // And so does mailroom status, for the running daemon.
        let text = status(&d.sys);
        assert!(text.contains(&format!("\nsmtps: none ({why})\n")), "{text}");
    }
}
