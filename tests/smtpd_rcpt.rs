//! Recipient validation at RCPT (`local_recipient_maps`), end to end: through the
//! listener of a started daemon (whose sessions run as `mail_owner`, also chrooted) and
//! through `sendmail -bs`. An unknown local user is refused with Postfix's reply and log
//! line while the known ones of the same transaction are taken and delivered, and no
//! bounce is made anywhere (the point: no backscatter).

mod common;

use std::time::Duration;

use common::listening::{Daemon, Smtp};
use common::smtp_server::free_port;
use common::{MailSystem, me, stderr};
use mailroom::queue::QueueName;

const SENDMAIL: &str = env!("CARGO_BIN_EXE_sendmail");
const NEWALIASES: &str = env!("CARGO_BIN_EXE_newaliases");
const MAILROOM: &str = env!("CARGO_BIN_EXE_mailroom");

const UNKNOWN_550: &str = "550 5.1.1 <nosuchuser@localhost>: Recipient address rejected: \
                           User unknown in local recipient table";

/// A mail system with `recipient_delimiter = +`, the alias `team: ME` compiled by
/// newaliases, and `extra` lines.
fn system(extra: &str) -> MailSystem {
    let sys = MailSystem::new(&format!("recipient_delimiter = +\n{extra}"));
    write_aliases(&sys, &format!("team: {}\n", me()));
    sys
}

fn write_aliases(sys: &MailSystem, text: &str) {
    std::fs::write(sys.config_dir().join("aliases"), text).unwrap();
    let out = sys.run(NEWALIASES, &[], b"");
    assert!(out.status.success(), "newaliases: {}", stderr(&out));
}

/// Waits up to 20 s for `cond`; fails with the log.
fn wait_for(sys: &MailSystem, what: &str, cond: impl FnMut() -> bool) {
    common::wait_for(sys, what, Duration::from_secs(20), cond)
}

fn queue_is_empty(sys: &MailSystem) -> bool {
    use QueueName::*;
    [Maildrop, Incoming, Active, Deferred, Hold]
        .iter()
        .all(|&q| sys.files_in(q).iter().all(|f| f.starts_with('.')))
}

/// After the delivery of the one message: the known recipients got it, and no bounce
/// was made: none in the log, none in the queue, none in the sender's (our) mailbox.
fn delivered_without_bounce(sys: &MailSystem, subject: &str) {
    let me = me();
    wait_for(sys, "the deliveries", || {
        let log = sys.maillog();
        [
            format!("to=<{me}@localhost>"),
            "to=<Team@localhost>".into(),
            format!("to=<{me}+tag@localhost>"),
        ]
        .iter()
        .all(|to| log.contains(&format!("{to}, relay=local, ")))
            && log.contains(": removed")
            && queue_is_empty(sys)
    });
    let log = sys.maillog();
    assert_eq!(log.matches("status=sent").count(), 3, "{log}");
    assert!(!log.contains("status=bounced"), "{log}");
    assert!(!log.contains("sender non-delivery notification"), "{log}");
    assert!(
        !log.contains("from=<>"),
        "no message from the null sender: {log}"
    );
    let mbox = sys.mailbox(&me);
    assert!(mbox.contains(&format!("Subject: {subject}")), "{mbox}");
    assert!(!mbox.contains("Undelivered Mail"), "{mbox}");
    assert!(!mbox.contains("MAILER-DAEMON"), "{mbox}");
}

/// The transaction both ways of speaking SMTP run: an unknown user between known ones.
fn transaction(me: &str, subject: &str) -> Vec<(String, String)> {
    [
        ("EHLO client.example", "250"),
        (&format!("MAIL FROM:<{me}@localhost>"), "250 2.1.0 Ok"),
        (&format!("RCPT TO:<{me}@localhost>"), "250 2.1.5 Ok"),
        ("RCPT TO:<nosuchuser@localhost>", UNKNOWN_550),
        ("RCPT TO:<Team@localhost>", "250 2.1.5 Ok"),
        (&format!("RCPT TO:<{me}+tag@localhost>"), "250 2.1.5 Ok"),
        ("DATA", "354"),
        (
            &format!("Subject: {subject}\r\n\r\nhello\r\n."),
            "250 2.0.0 Ok: queued as ",
        ),
        ("QUIT", "221 2.0.0 Bye"),
    ]
    .iter()
    .map(|(c, r)| (c.to_string(), r.to_string()))
    .collect()
}

fn reject_line(sys: &MailSystem, client: &str, code: &str) -> String {
    let log = sys.maillog();
    let want = format!(
        "NOQUEUE: reject: RCPT from {client}: {code} <nosuchuser@localhost>: Recipient address \
         rejected: User unknown in local recipient table; from=<{}@localhost> \
         to=<nosuchuser@localhost> proto=ESMTP helo=<client.example>",
        me()
    );
    assert!(log.contains(&want), "want {want}\nin:\n{log}");
    want
}

// ----------------------------------------------------------------------------------
// The daemon's listener

/// A client of the listener on `port`, its greeting (220) read.
fn connect(port: u16) -> std::io::Result<Smtp> {
    let mut smtp = Smtp::connect_from("127.0.0.1", port)?;
    let banner = smtp.reply();
    if !banner.starts_with("220") {
        return Err(std::io::Error::other(format!("banner: {banner}")));
    }
    Ok(smtp)
}

/// Waits for a daemon's listener to answer.
fn connect_when_up(sys: &MailSystem, port: u16) -> Smtp {
    let mut smtp = None;
    wait_for(sys, "the SMTP listener", || {
        smtp = connect(port).ok();
        smtp.is_some()
    });
    smtp.unwrap()
}

/// Runs `script`, checking that each reply starts with what it says.
fn run(smtp: &mut Smtp, script: &[(String, String)]) {
    for (command, want) in script {
        let got = smtp.cmd(command);
        assert!(
            got.starts_with(want.as_str()),
            "{command}: {got} (want {want})"
        );
    }
}

fn listening_system(extra: &str) -> (MailSystem, u16) {
    let port = free_port();
    let sys = system(&format!(
        "smtpd_port = {port}\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n{extra}"
    ));
    (sys, port)
}

#[test]
fn the_listener_refuses_an_unknown_user_and_takes_the_others() {
    let (sys, port) = listening_system("");
    let _daemon = Daemon::start(&sys);
    let mut smtp = connect_when_up(&sys, port);
    run(&mut smtp, &transaction(&me(), "over the listener"));
    wait_for(&sys, "the reject line", || {
        sys.maillog().contains("NOQUEUE")
    });
    reject_line(&sys, "unknown[127.0.0.1]", "550 5.1.1");
    delivered_without_bounce(&sys, "over the listener");
    let log = sys.maillog();
    assert!(!log.contains("to=<nosuchuser@localhost>, relay="), "{log}");

    // An alias added by newaliases while the sessions process runs is known at once.
    write_aliases(&sys, &format!("team: {me}\nlate: {me}\n", me = me()));
    let mut smtp = connect_when_up(&sys, port);
    smtp.cmd("EHLO client.example");
    smtp.cmd("MAIL FROM:<>");
    assert_eq!(smtp.cmd("RCPT TO:<late@localhost>"), "250 2.1.5 Ok");
    assert_eq!(
        smtp.cmd("RCPT TO:<LATE+x@LOCALHOST>"),
        "250 2.1.5 Ok",
        "case-folded, with an extension"
    );
    assert_eq!(
        smtp.cmd("RCPT TO:<nosuchuser@localhost>"),
        UNKNOWN_550,
        "a refused RCPT does not end the session"
    );
    // Not a local domain: no local table is asked (127.0.0.1 is in mynetworks, so the
    // client may relay).
    assert_eq!(smtp.cmd("RCPT TO:<nosuchuser@example.net>"), "250 2.1.5 Ok");
    assert_eq!(smtp.cmd("QUIT"), "221 2.0.0 Bye");
}

#[test]
fn a_chrooted_listener_answers_from_a_snapshot_renewed_by_reload() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: chroot needs root");
        return;
    }
    let (sys, port) = listening_system("smtpd_chroot = yes\n");
    let _daemon = Daemon::start(&sys);
    let mut smtp = connect_when_up(&sys, port);
    run(&mut smtp, &transaction(&me(), "from the chroot"));
    wait_for(&sys, "the reject line", || {
        sys.maillog().contains("NOQUEUE")
    });
    reject_line(&sys, "unknown[127.0.0.1]", "550 5.1.1");
    delivered_without_bounce(&sys, "from the chroot");

    // The snapshot does not see a new alias ...
    write_aliases(&sys, "team: root\nlate: root\n");
    let mut smtp = connect_when_up(&sys, port);
    smtp.cmd("EHLO client.example");
    smtp.cmd("MAIL FROM:<>");
    assert_eq!(
        smtp.cmd("RCPT TO:<late@localhost>"),
        UNKNOWN_550.replace("nosuchuser", "late")
    );
    smtp.cmd("QUIT");
    // ... until a reload starts a new sessions process, which takes a new one.
    let out = sys.run(MAILROOM, &["reload"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for(&sys, "the new sessions process to know the alias", || {
        let Ok(mut smtp) = connect(port) else {
            return false;
        };
        smtp.cmd("EHLO client.example");
        smtp.cmd("MAIL FROM:<>");
        let reply = smtp.cmd("RCPT TO:<late@localhost>");
        smtp.cmd("QUIT");
        reply == "250 2.1.5 Ok"
    });
}

// ----------------------------------------------------------------------------------
// sendmail -bs

/// One `sendmail -bs` session over `script` (all sent at once, as a pipelining client
/// does); each reply is checked in order.
fn bs(sys: &MailSystem, script: &[(String, String)]) {
    let input: String = script.iter().map(|(c, _)| format!("{c}\r\n")).collect();
    let out = sys.run(SENDMAIL, &["-bs"], input.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let replies: Vec<&str> = text
        .lines()
        .filter(|l| l.as_bytes().get(3) != Some(&b'-'))
        .skip(1) // the greeting
        .collect();
    assert_eq!(replies.len(), script.len(), "{text}");
    for ((command, want), got) in script.iter().zip(replies) {
        assert!(
            got.starts_with(want.as_str()),
            "{command}: {got} (want {want})"
        );
    }
}

#[test]
fn sendmail_bs_refuses_an_unknown_user_and_takes_the_others() {
    let sys = system("");
    bs(&sys, &transaction(&me(), "over -bs"));
    reject_line(&sys, "localhost[127.0.0.1]", "550 5.1.1");
    // Nothing was queued for the refused recipient.
    let queued = sys.messages(QueueName::Maildrop);
    assert_eq!(queued.len(), 1);
    let to: Vec<&str> = queued[0]
        .0
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    let me = me();
    assert_eq!(
        to,
        [
            format!("{me}@localhost"),
            "Team@localhost".into(),
            format!("{me}+tag@localhost")
        ]
    );
    // Delivered by a queue run.
    let out = sys.run(SENDMAIL, &["-q"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    delivered_without_bounce(&sys, "over -bs");
}

#[test]
fn empty_local_recipient_maps_take_every_local_part() {
    let sys = system("local_recipient_maps =\n");
    let me = me();
    bs(
        &sys,
        &[
            ("HELO client.example", "250"),
            (&format!("MAIL FROM:<{me}@localhost>"), "250 2.1.0 Ok"),
            ("RCPT TO:<nosuchuser@localhost>", "250 2.1.5 Ok"),
            ("QUIT", "221 2.0.0 Bye"),
        ]
        .map(|(c, r)| (c.to_string(), r.to_string())),
    );
    assert!(!sys.maillog().contains("NOQUEUE"), "{}", sys.maillog());
}

#[test]
fn reject_code_450_says_4_1_1() {
    let sys = system("unknown_local_recipient_reject_code = 450\n");
    let me = me();
    bs(
        &sys,
        &[
            ("EHLO client.example", "250"),
            (&format!("MAIL FROM:<{me}@localhost>"), "250 2.1.0 Ok"),
            (
                "RCPT TO:<nosuchuser@localhost>",
                "450 4.1.1 <nosuchuser@localhost>: Recipient address rejected: \
                 User unknown in local recipient table",
            ),
            ("QUIT", "221 2.0.0 Bye"),
        ]
        .map(|(c, r)| (c.to_string(), r.to_string())),
    );
    reject_line(&sys, "localhost[127.0.0.1]", "450 4.1.1");
}

#[test]
fn a_table_that_cannot_be_read_defers_with_451() {
    let sys = system("local_recipient_maps = ldap:/etc/mailroom/ldap-users.cf $alias_maps\n");
    let me = me();
    bs(
        &sys,
        &[
            ("EHLO client.example", "250"),
            (&format!("MAIL FROM:<{me}@localhost>"), "250 2.1.0 Ok"),
            (
                "RCPT TO:<team@localhost>",
                "451 4.3.0 <team@localhost>: Temporary lookup failure",
            ),
            // Not ours: no table is asked (a local user relays anywhere over -bs).
            ("RCPT TO:<someone@example.net>", "250 2.1.5 Ok"),
            ("QUIT", "221 2.0.0 Bye"),
        ]
        .map(|(c, r)| (c.to_string(), r.to_string())),
    );
    let log = sys.maillog();
    assert!(
        log.contains("warning: ldap:/etc/mailroom/ldap-users.cf is unavailable. unsupported dictionary type: ldap"),
        "{log}"
    );
    assert!(
        log.contains("NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 451 4.3.0 <team@localhost>: Temporary lookup failure;"),
        "{log}"
    );
}
