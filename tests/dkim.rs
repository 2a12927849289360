//! DKIM: `mailroom dkim keygen` and `record` (files, modes, refusals, the record's form),
//! and mail relayed through a running daemon to a real SMTP server (aiosmtpd), whose
//! signature an independent verifier (Python's dkimpy) accepts against the record
//! `mailroom dkim record` prints — RSA and Ed25519; mail of other domains, and mail
//! whose key is missing, leaves unsigned.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::listening::Daemon;
use common::smtp_server::Aiosmtpd;
use common::{MailSystem, require_python_package, stderr};

const SENDMAIL: &str = env!("CARGO_BIN_EXE_sendmail");
const MAILROOM: &str = env!("CARGO_BIN_EXE_mailroom");
const VERIFY: &str = include_str!("support/dkimpy_verify.py");

fn mailroom(sys: &MailSystem, args: &[&str]) -> Output {
    sys.run(MAILROOM, args, b"")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The record line's owner name and its TXT value (the quoted strings joined), checking
/// its form on the way: one line, `NAME IN TXT "..." "..."`, strings of at most 255.
fn parse_record(line: &str) -> (String, String) {
    assert!(
        line.ends_with('\n') && line.lines().count() == 1,
        "{line:?}"
    );
    let (name, strings) = line.trim_end().split_once(" IN TXT ").expect(line);
    let parts: Vec<&str> = strings.split('"').collect();
    // "a" "b" splits into ["", a, " ", b, ""]: text inside quotes at odd places.
    assert_eq!(parts.len() % 2, 1, "{line}");
    let mut value = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i % 2 == 1 {
            assert!(!part.is_empty() && part.len() <= 255, "{line}");
            value.push_str(part);
        } else {
            let between = i > 0 && i < parts.len() - 1;
            assert_eq!(*part, if between { " " } else { "" }, "{line}");
        }
    }
    (name.to_string(), value)
}

#[test]
fn keygen_writes_keys_safely_and_prints_the_record() {
    let sys = MailSystem::new("mydomain = example.org\n");
    let dir = sys.config_dir().join("dkim");

    // Defaults: RSA 2048, $mydomain, selector "mail" (dkim_selector is empty).
    let out = mailroom(&sys, &["dkim", "keygen"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out);
    let (name, value) = parse_record(&line);
    assert_eq!(name, "mail._domainkey.example.org.");
    assert!(value.starts_with("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"));
    assert!(
        line.matches('"').count() >= 4,
        "a 2048-bit key needs two strings: {line}"
    );
    let key = dir.join("example.org.mail.key");
    let meta = key.metadata().unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
    assert_eq!(dir.metadata().unwrap().mode() & 0o7777, 0o700);
    assert!(
        std::fs::read_to_string(&key)
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----\n")
    );

    // `record` prints the same line again.
    let again = mailroom(&sys, &["dkim", "record"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stdout(&again), line);

    // Never over an existing key without --force.
    let before = std::fs::read(&key).unwrap();
    let refused = mailroom(&sys, &["dkim", "keygen", "--algorithm", "ed25519"]);
    assert_eq!(refused.status.code(), Some(73), "{}", stderr(&refused));
    assert!(stdout(&refused).is_empty());
    let text = stderr(&refused);
    assert!(
        text.starts_with("mailroom: fatal: ")
            && text.contains("example.org.mail.key exists: use --force"),
        "{text}"
    );
    assert_eq!(std::fs::read(&key).unwrap(), before);
    let forced = mailroom(
        &sys,
        &["dkim", "keygen", "--algorithm", "ed25519", "--force"],
    );
    assert!(forced.status.success(), "{}", stderr(&forced));
    let (_, value) = parse_record(&stdout(&forced));
    assert!(value.starts_with("v=DKIM1; k=ed25519; p="), "{value}");
    assert_eq!(value.len(), "v=DKIM1; k=ed25519; p=".len() + 44);
    assert_eq!(key.metadata().unwrap().mode() & 0o7777, 0o600);
    assert_eq!(
        stdout(&mailroom(&sys, &["dkim", "record"])),
        stdout(&forced)
    );

    // Named domain and selector, and dkim_selector as the default selector.
    let out = mailroom(
        &sys,
        &[
            "dkim",
            "keygen",
            "-d",
            "Other.Example",
            "-s",
            "s2",
            "--algorithm",
            "ed25519",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("s2._domainkey.other.example. IN TXT \"v=DKIM1; k=ed25519; p=")
    );
    assert!(dir.join("other.example.s2.key").exists());

    // Wrong requests: usage errors (64), nothing written; a missing key: 66.
    for args in [
        &["dkim", "keygen", "--bits", "1024", "-s", "small"][..],
        &["dkim", "keygen", "--bits", "8192", "-s", "big"],
        &[
            "dkim",
            "keygen",
            "--algorithm",
            "ed25519",
            "--bits",
            "2048",
            "-s",
            "edbits",
        ],
        &["dkim", "keygen", "-s", "../../escape"],
        &["dkim", "keygen", "-d", "a/b"],
    ] {
        let out = mailroom(&sys, args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).starts_with("mailroom: fatal: "),
            "{}",
            stderr(&out)
        );
    }
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let missing = mailroom(&sys, &["dkim", "record", "-s", "nokey"]);
    assert_eq!(missing.status.code(), Some(66));
    assert!(stderr(&missing).contains("mailroom dkim keygen -d example.org -s nokey"));
}

// ---------------------------------------------------------------------------------------
// Signing, end to end.

fn daemon(sys: &MailSystem) -> Daemon {
    Daemon::start_and_wait(sys, Duration::from_secs(60))
}

fn wait_for(sys: &MailSystem, what: &str, done: impl FnMut() -> bool) {
    common::wait_for(sys, what, Duration::from_secs(60), done)
}

/// A mail system relaying everything to `server`, signing for example.org with
/// selector `sel`.
fn relaying(server: &Aiosmtpd, extra: &str) -> MailSystem {
    MailSystem::new(&format!(
        "mydomain = example.org\nrelayhost = [127.0.0.1]:{}\ndkim_selector = sel\n{extra}",
        server.port
    ))
}

/// Submits `message` to `to` and waits until the server has transaction `n` (from 0).
fn relay(sys: &MailSystem, server: &Aiosmtpd, message: &str, to: &str, n: usize) -> Vec<u8> {
    let out = sys.run(
        SENDMAIL,
        &["-i", "-f", "alice@example.org", to],
        message.as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for(sys, "the relayed message", || server.count() > n);
    server.received(n).1
}

/// dkimpy's verdict on `message` with DNS answering `name` with `txt`.
fn dkimpy(message: &[u8], name: &str, txt: &str) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), message).unwrap();
    let out = Command::new("python3")
        .arg("-c")
        .arg(VERIFY)
        .arg(file.path())
        .arg(name)
        .arg(txt)
        .output()
        .unwrap();
    format!(
        "{}{}",
        stdout(&out).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

fn signatures(message: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(message);
    let header = text.split("\r\n\r\n").next().unwrap_or("");
    header
        .replace("\r\n\t", " ")
        .replace("\r\n ", " ")
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("dkim-signature:"))
        .map(str::to_string)
        .collect()
}

/// A tag's value in a DKIM-Signature field (`h`, `d`, `s`, `a`, `c`).
fn tag(field: &str, name: &str) -> String {
    let value = field.split_once(':').map_or("", |(_, v)| v);
    value
        .split(';')
        .filter_map(|t| t.split_once('='))
        .find(|(n, _)| n.trim() == name)
        .map(|(_, v)| v.split_whitespace().collect::<String>())
        .unwrap_or_default()
}

const MESSAGE: &str = "From: \"Alice Example\" <alice@Example.ORG>\n\
To: Bob <bob@remote.example>\n\
Cc: carol@remote.example\n\
Subject: quarterly\n  report, folded\n\
Message-ID: <dkim-test@example.org>\n\
MIME-Version: 1.0\n\
Content-Type: text/plain; charset=us-ascii\n\
Reply-To: alice@example.org\n\
In-Reply-To: <earlier@remote.example>\n\
References: <earlier@remote.example>\n\
X-Not-Signed: anything\n\
\n\
Line with trailing spaces   \n\
.a line that starts with a dot\n\
\n\
\tindented\tline\n\
\n\
\n";

/// Relays a message signed with a key of `algorithm` and checks it with dkimpy; then
/// mail of another domain, which must leave unsigned, and the signed message sent
/// again, which must not get a second signature.
fn signed_and_verified(algorithm: &str) {
    if !require_python_package("dkim", "dkimpy") {
        return;
    }
    if algorithm == "ed25519" && !require_python_package("nacl", "pynacl") {
        return;
    }
    let Some(server) = Aiosmtpd::start() else {
        return;
    };
    let sys = relaying(&server, "");
    let out = mailroom(&sys, &["dkim", "keygen", "--algorithm", algorithm]);
    assert!(out.status.success(), "{}", stderr(&out));
    let record = stdout(&mailroom(&sys, &["dkim", "record"]));
    assert_eq!(record, stdout(&out));
    let (name, txt) = parse_record(&record);
    assert_eq!(name, "sel._domainkey.example.org.");
    let _daemon = daemon(&sys);

    let data = relay(&sys, &server, MESSAGE, "bob@remote.example", 0);
    let fields = signatures(&data);
    assert_eq!(fields.len(), 1, "{}", String::from_utf8_lossy(&data));
    let field = &fields[0];
    let want_a = if algorithm == "rsa" {
        "rsa-sha256"
    } else {
        "ed25519-sha256"
    };
    assert_eq!(tag(field, "a"), want_a);
    assert_eq!(tag(field, "c"), "relaxed/relaxed");
    assert_eq!(
        (tag(field, "d"), tag(field, "s")),
        ("example.org".into(), "sel".into())
    );
    let mut signed: Vec<String> = tag(field, "h")
        .split(':')
        .map(|h| h.to_ascii_lowercase())
        .collect();
    signed.sort();
    // Date was added by cleanup on the way in, and is signed with the rest.
    assert_eq!(
        signed,
        [
            "cc",
            "content-type",
            "date",
            "from",
            "in-reply-to",
            "message-id",
            "mime-version",
            "references",
            "reply-to",
            "subject",
            "to"
        ],
        "{field}"
    );
    assert_eq!(dkimpy(&data, &name, &txt), "pass");
    // The verifier is not easily pleased: a changed body, or another key, fails.
    let tampered = String::from_utf8_lossy(&data).replace("indented", "altered");
    assert!(dkimpy(tampered.as_bytes(), &name, &txt).starts_with("fail"));
    let other = stdout(&mailroom(
        &sys,
        &["dkim", "keygen", "-s", "other", "--algorithm", algorithm],
    ));
    let (_, other_txt) = parse_record(&other);
    assert!(dkimpy(&data, &name, &other_txt).starts_with("fail"));

    // Another domain's mail leaves unsigned.
    let foreign = MESSAGE.replace("alice@Example.ORG", "alice@elsewhere.example");
    let data = relay(&sys, &server, &foreign, "bob@remote.example", 1);
    assert!(
        signatures(&data).is_empty(),
        "{}",
        String::from_utf8_lossy(&data)
    );

    // Mail already signed for example.org keeps its one signature.
    let first = server.received(0).1;
    let again = String::from_utf8_lossy(&first).replace("\r\n", "\n");
    let data = relay(&sys, &server, &again, "bob@remote.example", 2);
    assert_eq!(signatures(&data).len(), 1);
    assert_eq!(dkimpy(&data, &name, &txt), "pass");
    assert!(!sys.maillog().contains("warning"), "{}", sys.maillog());
}

#[test]
fn rsa_signed_mail_verifies_with_dkimpy() {
    signed_and_verified("rsa");
}

#[test]
fn ed25519_signed_mail_verifies_with_dkimpy() {
    signed_and_verified("ed25519");
}

#[test]
fn a_missing_key_is_a_warning_the_mail_leaves_unsigned_and_a_reload_reads_a_new_key() {
    let Some(server) = Aiosmtpd::start() else {
        return;
    };
    let sys = relaying(&server, "dkim_domains = example.org, broken.example\n");
    let keys = sys.config_dir().join("dkim");
    std::fs::create_dir(&keys).unwrap();
    std::fs::write(
        keys.join("broken.example.sel.key"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n",
    )
    .unwrap();
    let daemon = daemon(&sys);
    let data = relay(&sys, &server, MESSAGE, "bob@remote.example", 0);
    assert!(signatures(&data).is_empty());
    assert!(String::from_utf8_lossy(&data).contains("Subject: quarterly"));
    let text = sys.maillog();
    let key = keys.join("example.org.sel.key");
    let want = format!(
        "warning: DKIM key {}: No such file or directory; mail from example.org leaves unsigned",
        key.display()
    );
    assert_eq!(text.matches(&want).count(), 1, "{text}");
    assert!(text.contains("broken.example.sel.key: "), "{text}");
    assert!(text.contains("status=sent"), "{text}");
    assert!(!Path::new(&key).exists());

    // mailroom check says so before any mail goes out.
    let check = mailroom(&sys, &["check"]);
    assert_eq!(check.status.code(), Some(1));
    let report = stdout(&check);
    let want = format!(
        "{}: DKIM key of example.org: No such file or directory; its mail leaves unsigned \
         (mailroom dkim keygen -d example.org makes one)",
        key.display()
    );
    assert!(report.contains(&want), "{report}");
    assert!(
        report.contains("broken.example.sel.key: DKIM key of broken.example: "),
        "{report}"
    );

    // The key made, `mailroom reload` (SIGHUP) brings new client processes, which read it.
    let made = mailroom(&sys, &["dkim", "keygen", "--algorithm", "ed25519"]);
    assert!(made.status.success(), "{}", stderr(&made));
    let pid = nix::unistd::Pid::from_raw(daemon.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for(&sys, "the reload", || {
        sys.maillog().contains("reload -- configuration re-read")
    });
    let data = relay(&sys, &server, MESSAGE, "bob@remote.example", 1);
    let fields = signatures(&data);
    assert_eq!(fields.len(), 1, "{}", sys.maillog());
    assert_eq!(tag(&fields[0], "d"), "example.org");
}
