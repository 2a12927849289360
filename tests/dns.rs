//! DNS as mailroom uses it, against a DNS server of the test's own (Python's dnslib):
//! `dns_nameservers` sends the SMTP client's MX lookups there, and `mailroom dns` checks a
//! domain's records in it.

mod common;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use common::dns_server::DnsServer;
use common::smtp_server::Aiosmtpd;
use mailroom::config::Config;
use mailroom::deliver::smtp::{DnsError, Resolver, SmtpContext, SystemResolver, deliver};
use mailroom::deliver::{MessageSource, Status};
use mailroom::log::Log;
use mailroom::queue::{Envelope, QueueId, Recipient};

// ---------------------------------------------------------------------------------------
// dns_nameservers and the SMTP client.

#[test]
fn mx_delivery_asks_the_servers_of_dns_nameservers() {
    // example.test exists only in this zone: the system's resolver would not find it.
    let Some(dns) = DnsServer::start(
        "example.test. 60 IN MX 10 mx1.example.test.\n\
         mx1.example.test. 60 IN A 127.0.0.1\n",
    ) else {
        return;
    };
    let Some(server) = Aiosmtpd::start() else {
        return;
    };
    // host:port without brackets: an MX lookup, then that port on each MX host.
    let text = format!(
        "myhostname = me.example\nrelayhost = example.test:{}\n{}",
        server.port,
        dns.main_cf_line()
    );
    let config = Config::from_text(&text, Path::new("/nonexistent/main.cf"));
    let ctx = SmtpContext::from_config(&config)
        .expect("config")
        .with_log(Arc::new(Log::discard()));
    let body = b"From: a@me.example\nSubject: mx\n\nhello\n";
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(body).unwrap();
    let mut envelope = Envelope::new(QueueId::generate(), 0, 0, "a@me.example");
    envelope.size = body.len() as u64;
    let rcpt = Recipient::new("b@example.test", "b@example.test");
    let outcomes = deliver(
        &ctx,
        &envelope,
        MessageSource::for_envelope(&file, &envelope),
        &[&rcpt],
    );
    assert_eq!(outcomes[0].status, Status::Sent, "{:?}", outcomes[0]);
    assert!(
        outcomes[0].relay.contains("mx1.example.test"),
        "{:?}",
        outcomes[0]
    );
    let (meta, _) = server.received(0);
    assert_eq!(meta["rcpt_tos"][0], "b@example.test");
    let queries = dns.queries();
    assert!(
        queries.contains(&"example.test MX".to_string()),
        "{queries:?}"
    );
    assert!(
        queries.contains(&"mx1.example.test A".to_string()),
        "{queries:?}"
    );
}

#[test]
fn the_smtp_resolver_tells_missing_names_and_records_from_failures() {
    let Some(dns) = DnsServer::start_failing(
        "example.test. 60 IN MX 10 mx1.example.test.\n\
         mx1.example.test. 60 IN A 127.0.0.1\n\
         nomx.test. 60 IN A 192.0.2.1\n\
         v6.test. 60 IN AAAA 2001:db8::1\n\
         halfbroken.test. 60 IN TXT \"exists\"\n",
        &["broken.test", "halfbroken.test/A", "v6.test/A"],
    ) else {
        return;
    };
    let resolver = SystemResolver::with_servers(vec![SocketAddr::from(([127, 0, 0, 1], dns.port))]);
    assert_eq!(
        resolver.mx("example.test"),
        Ok(vec![(10, "mx1.example.test.".to_string())])
    );
    // No MX: routing falls back to the domain's own addresses.
    assert_eq!(resolver.mx("nomx.test"), Ok(Vec::new()));
    // NXDOMAIN: the mail bounces.
    assert_eq!(resolver.mx("missing.test"), Err(DnsError::NotFound));
    assert_eq!(
        resolver.addresses("mx1.example.test"),
        Ok(vec![IpAddr::from([127, 0, 0, 1])])
    );
    assert_eq!(resolver.addresses("example.test"), Ok(Vec::new()));
    assert_eq!(resolver.addresses("missing.test"), Err(DnsError::NotFound));
    // SERVFAIL says nothing about the name: the mail waits for the next try. hickory
    // reports it as "no records found", which must not pass for an empty answer (that
    // would bounce the mail as "Host not found").
    let mx = resolver.mx("broken.test");
    assert!(matches!(mx, Err(DnsError::Temporary(_))), "{mx:?}");
    let addresses = resolver.addresses("broken.test");
    assert!(
        matches!(addresses, Err(DnsError::Temporary(_))),
        "{addresses:?}"
    );
    // Most hosts have no AAAA: an A question that fails beside it is still a failure...
    let addresses = resolver.addresses("halfbroken.test");
    assert!(
        matches!(addresses, Err(DnsError::Temporary(_))),
        "{addresses:?}"
    );
    // ...while what one family found is used whatever the other's answer.
    assert_eq!(
        resolver.addresses("v6.test"),
        Ok(vec!["2001:db8::1".parse::<IpAddr>().unwrap()])
    );
}

#[test]
fn an_invalid_dns_nameservers_is_a_configuration_error() {
    let config = Config::from_text(
        "dns_nameservers = ns.example.com\n",
        Path::new("/nonexistent/main.cf"),
    );
    let err = SmtpContext::from_config(&config).err().expect("an error");
    assert_eq!(err.code() as u8, 78);
    assert!(err.to_string().contains("dns_nameservers"), "{err}");
    assert!(err.to_string().contains("not an IP address"), "{err}");
}

// ---------------------------------------------------------------------------------------
// mailroom dns: a domain's records checked against a zone of the test's own.

const MAILROOM: &str = env!("CARGO_BIN_EXE_mailroom");

/// A configuration directory for mail.example.test in example.test, signing with
/// selector `sel`, and the record of its key as `mailroom dkim keygen` printed it.
struct Site {
    dir: tempfile::TempDir,
    dkim_line: String,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("main.cf"),
            format!(
                "myhostname = mail.example.test\nmydomain = example.test\n\
                 dkim_selector = sel\ndkim_key_directory = {}/dkim\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let site = Site {
            dir,
            dkim_line: String::new(),
        };
        let line = site.keygen("sel");
        Site {
            dkim_line: line,
            ..site
        }
    }

    /// Makes a key for `selector` and returns the record line printed.
    fn keygen(&self, selector: &str) -> String {
        let out = self
            .mailroom(&["dkim", "keygen", "--algorithm", "ed25519", "-s", selector])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", common::stderr(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn mailroom(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(MAILROOM);
        cmd.arg("-c").arg(self.dir.path()).args(args);
        cmd
    }

    /// The complete zone, one line per record, by the check it serves.
    fn zone(&self) -> Vec<(&'static str, String)> {
        vec![
            ("a", "mail.example.test. 60 IN A 192.0.2.10".into()),
            ("mx", "example.test. 60 IN MX 10 mail.example.test.".into()),
            (
                "ptr",
                "10.2.0.192.in-addr.arpa. 60 IN PTR mail.example.test.".into(),
            ),
            (
                "spf",
                "example.test. 60 IN TXT \"v=spf1 ip4:192.0.2.0/24 -all\"".into(),
            ),
            ("dkim", self.dkim_line.replacen(" IN ", " 60 IN ", 1)),
            (
                "dmarc",
                "_dmarc.example.test. 60 IN TXT \"v=DMARC1; p=reject\"".into(),
            ),
        ]
    }

    /// Runs `mailroom dns ARGS` against `zone`: exit status and standard output.
    fn check(&self, zone: &[(&'static str, String)], args: &[&str]) -> Option<(i32, String)> {
        let text: String = zone.iter().map(|(_, line)| format!("{line}\n")).collect();
        let dns = DnsServer::start(&text)?;
        let server = format!("127.0.0.1:{}", dns.port);
        let out = self
            .mailroom(&[&["dns", "--server", &server], args].concat())
            .output()
            .unwrap();
        let code = out.status.code().unwrap_or(-1);
        assert!(
            code == 0 || code == 1,
            "exit {code}: {}",
            common::stderr(&out)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        Some((code, stdout))
    }

    /// The check of the zone with `check`'s records replaced by `replacement`: exit
    /// code 1 and `check`'s line saying `status` are asserted; its output, or None (the
    /// test returns) when a tool is missing.
    fn check_failing(
        &self,
        check: &'static str,
        replacement: Vec<String>,
        status: &str,
    ) -> Option<String> {
        let mut zone: Vec<_> = self
            .zone()
            .into_iter()
            .filter(|(k, _)| *k != check)
            .collect();
        zone.extend(replacement.into_iter().map(|l| (check, l)));
        let (code, stdout) = self.check(&zone, &[])?;
        assert_eq!(code, 1, "{check}: {stdout}");
        assert_eq!(
            line(&stdout, check).split_whitespace().nth(1),
            Some(status),
            "{check}: {stdout}"
        );
        Some(stdout)
    }
}

/// The line of `check` in the text output.
fn line<'a>(stdout: &'a str, check: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(check))
        .unwrap_or_else(|| panic!("no {check} line in:\n{stdout}"))
}

#[test]
fn a_complete_zone_is_all_ok_in_text_and_json() {
    let site = Site::new();
    let Some((code, stdout)) = site.check(&site.zone(), &[]) else {
        return;
    };
    assert_eq!(code, 0, "{stdout}");
    let checks = ["a", "mx", "ptr", "spf", "dkim", "dmarc"];
    assert_eq!(stdout.lines().count(), checks.len(), "{stdout}");
    for check in checks {
        let l = line(&stdout, check);
        assert_eq!(l.split_whitespace().nth(1), Some("ok"), "{l}");
    }
    assert!(
        line(&stdout, "a").contains("mail.example.test: 192.0.2.10"),
        "{stdout}"
    );
    assert!(
        line(&stdout, "ptr").contains("192.0.2.10 -> mail.example.test"),
        "{stdout}"
    );

    let Some((code, json)) = site.check(&site.zone(), &["--json"]) else {
        return;
    };
    assert_eq!(code, 0, "{json}");
    // An independent JSON reader.
    let verdict = common::python(
        r#"
import json, sys
checks = json.load(sys.stdin)
assert [c["check"] for c in checks] == ["a", "mx", "ptr", "spf", "dkim", "dmarc"], checks
for c in checks:
    assert set(c) == {"check", "status", "name", "found", "expected"}, c
    assert c["status"] == "ok", c
    assert isinstance(c["found"], list) and c["found"], c
    assert isinstance(c["name"], str) and isinstance(c["expected"], str), c
by = {c["check"]: c for c in checks}
assert by["a"]["found"] == ["192.0.2.10"], by["a"]
assert by["dkim"]["name"] == "sel._domainkey.example.test", by["dkim"]
assert by["dmarc"]["found"] == ["v=DMARC1; p=reject"], by["dmarc"]
print("ok")
"#,
        json.as_bytes(),
    );
    assert_eq!(verdict.trim(), "ok");
}

#[test]
fn each_record_missing_in_turn_is_reported_with_the_record_to_publish() {
    let site = Site::new();
    let dkim_line = site.dkim_line.clone();
    let cases: [(&str, &str); 6] = [
        ("a", "publish: mail.example.test. IN A"),
        ("mx", "publish: example.test. IN MX 10 mail.example.test."),
        (
            "ptr",
            "publish: 10.2.0.192.in-addr.arpa. IN PTR mail.example.test.",
        ),
        (
            "spf",
            "publish: example.test. IN TXT \"v=spf1 a:mail.example.test ~all\"",
        ),
        ("dkim", &dkim_line),
        (
            "dmarc",
            "publish: _dmarc.example.test. IN TXT \"v=DMARC1; p=none;",
        ),
    ];
    for (check, publish) in cases {
        let Some(stdout) = site.check_failing(check, Vec::new(), "missing") else {
            return;
        };
        let l = line(&stdout, check);
        assert!(l.contains(publish), "{check}: {l}");
        // The checks that do not depend on the record removed stay ok.
        for other in ["spf", "dkim", "dmarc"] {
            if other != check && check != "a" {
                let o = line(&stdout, other);
                assert_eq!(o.split_whitespace().nth(1), Some("ok"), "{check}: {stdout}");
            }
        }
    }
}

#[test]
fn each_record_wrong_in_turn_is_reported_with_what_was_expected() {
    let site = Site::new();
    // Another key's record, published under our selector.
    let other_key = site
        .keygen("other")
        .replacen("other._domainkey", "sel._domainkey", 1);
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "spf",
            vec!["example.test. 60 IN TXT \"v=spf1 ip4:198.51.100.1 -all\"".into()],
            "expected pass for 192.0.2.10, got 192.0.2.10: fail",
        ),
        (
            "dkim",
            vec![other_key.replacen(" IN ", " 60 IN ", 1)],
            &site.dkim_line,
        ),
        (
            "mx",
            vec!["example.test. 60 IN MX 10 nowhere.example.test.".into()],
            "10 nowhere.example.test (no address)",
        ),
        (
            "ptr",
            vec!["10.2.0.192.in-addr.arpa. 60 IN PTR vps-42.hoster.test.".into()],
            "expected 10.2.0.192.in-addr.arpa. IN PTR mail.example.test.",
        ),
        (
            "dmarc",
            vec!["_dmarc.example.test. 60 IN TXT \"v=DMARC1; p=everything\"".into()],
            "a DMARC record that parses",
        ),
    ];
    for (check, replacement, says) in cases {
        let Some(stdout) = site.check_failing(check, replacement, "wrong") else {
            return;
        };
        let l = line(&stdout, check);
        assert!(l.contains(says), "{check}: {l}");
        let wrong = stdout.lines().filter(|l| !l.contains(" ok ")).count();
        assert_eq!(wrong, 1, "{check}: only its line is not ok:\n{stdout}");
    }
}

#[test]
fn a_name_server_that_does_not_answer_is_exit_75() {
    // A UDP socket nobody reads from: every query times out.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = format!("127.0.0.1:{}", silent.local_addr().unwrap().port());
    let site = Site::new();
    let started = std::time::Instant::now();
    let out = site
        .mailroom(&["dns", "--server", &server])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(75), "{}", common::stderr(&out));
    assert!(
        common::stderr(&out).contains("cannot reach DNS"),
        "{}",
        common::stderr(&out)
    );
    assert!(out.stdout.is_empty());
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

#[test]
fn a_servfail_is_no_answer_not_a_missing_record() {
    let site = Site::new();
    let text: String = site
        .zone()
        .iter()
        .map(|(_, line)| format!("{line}\n"))
        .collect();
    let Some(dns) = DnsServer::start_failing(&text, &["_dmarc.example.test"]) else {
        return;
    };
    let server = format!("127.0.0.1:{}", dns.port);
    let out = site
        .mailroom(&["dns", "--server", &server])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let dmarc = line(&stdout, "dmarc");
    assert_eq!(dmarc.split_whitespace().nth(1), Some("wrong"), "{stdout}");
    assert!(dmarc.contains("no answer"), "{stdout}");
    assert_eq!(
        line(&stdout, "mx").split_whitespace().nth(1),
        Some("ok"),
        "{stdout}"
    );
}

#[test]
fn a_bad_server_or_domain_is_a_usage_error() {
    let site = Site::new();
    for args in [
        &["dns", "--server", "ns.example.test"][..],
        &["dns", "exa mple.test"][..],
        &["dns", "../etc"][..],
    ] {
        let out = site.mailroom(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(64),
            "{args:?}: {}",
            common::stderr(&out)
        );
    }
}

// ---------------------------------------------------------------------------------------
// Authentication-Results on mail the listener receives.

#[test]
fn mail_from_outside_mynetworks_gets_authentication_results() {
    use common::MailSystem;
    use common::listening::{InProcess, Smtp};
    use mailroom::queue::QueueName;

    // sender.test allows 127.0.0.2 only; 127.0.0.1 is mynetworks.
    let Some(dns) = DnsServer::start("sender.test. 60 IN TXT \"v=spf1 ip4:127.0.0.2 -all\"\n")
    else {
        return;
    };
    let sys = MailSystem::new(&format!(
        "smtpd_port = 0\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n\
         local_recipient_maps =\nmynetworks = 127.0.0.1/32\nsmtpd_authentication_results = yes\n{}",
        dns.main_cf_line()
    ));
    let server = InProcess::start(&sys);
    let port = server.smtp().port();

    for from in ["127.0.0.2", "127.0.0.3", "127.0.0.1"] {
        let mut c = Smtp::connect_from(from, port).unwrap();
        assert!(c.reply().starts_with("220 "));
        assert!(c.cmd("EHLO client.sender.test").starts_with("250 "));
        assert_eq!(c.cmd("MAIL FROM:<a@sender.test>"), "250 2.1.0 Ok");
        assert_eq!(c.cmd("RCPT TO:<alice@mail.server.com>"), "250 2.1.5 Ok");
        assert!(c.cmd("DATA").starts_with("354 "));
        // A forged verdict in our name is removed; another host's stays.
        let queued = c.cmd(&format!(
            "Authentication-Results: vm; spf=pass smtp.mailfrom=a@sender.test\r\n\
             Authentication-Results: elsewhere.test; spf=none\r\n\
             From: a@sender.test\r\nSubject: from {from}\r\n\r\nhello\r\n."
        ));
        assert!(queued.starts_with("250 "), "{from}: {queued}");
        c.cmd("QUIT");
    }
    drop(server);

    let messages: Vec<String> = sys
        .messages(QueueName::Maildrop)
        .into_iter()
        .map(|(_, bytes)| String::from_utf8_lossy(&bytes).into_owned())
        .collect();
    assert_eq!(messages.len(), 3);
    let of = |from: &str| {
        messages
            .iter()
            .find(|m| m.contains(&format!("Subject: from {from}\n")))
            .unwrap_or_else(|| panic!("no message from {from}"))
            .clone()
    };
    for (from, spf) in [("127.0.0.2", "spf=pass"), ("127.0.0.3", "spf=fail")] {
        let m = of(from);
        assert_eq!(m.matches("Authentication-Results: vm;").count(), 1, "{m}");
        assert!(
            m.contains("Authentication-Results: elsewhere.test; spf=none\n"),
            "{m}"
        );
        // One header right after Received:, its results folded onto their own lines.
        let header: String = m
            .lines()
            .skip_while(|l| !l.starts_with("Authentication-Results:"))
            .take_while(|l| l.starts_with("Authentication-Results:") || l.starts_with('\t'))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            header.starts_with("Authentication-Results: vm;"),
            "{header}"
        );
        assert!(header.contains(spf), "{from}: {header}");
        assert!(header.contains("(vm: domain of a@sender.test"), "{header}");
        assert!(header.contains("smtp.mailfrom=a@sender.test"), "{header}");
        assert!(header.contains("dkim=none"), "{header}");
        assert!(header.contains("dmarc="), "{header}");
        assert!(
            m.find("Received:") < m.find("Authentication-Results:"),
            "{m}"
        );
    }
    // A client in mynetworks is trusted, not judged.
    assert!(!of("127.0.0.1").contains("Authentication-Results: vm;\n"));
}

#[test]
fn a_lookup_that_times_out_is_temperror_and_the_mail_is_queued() {
    use common::MailSystem;
    use common::listening::{InProcess, Smtp};
    use mailroom::queue::QueueName;

    // A name server that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sys = MailSystem::new(&format!(
        "smtpd_port = 0\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n\
         local_recipient_maps =\nmynetworks = 127.0.0.1/32\nsmtpd_authentication_results = yes\n\
         dns_nameservers = {}\n",
        silent.local_addr().unwrap()
    ));
    let server = InProcess::start(&sys);
    let port = server.smtp().port();
    let mut c = Smtp::connect_from("127.0.0.2", port).unwrap();
    assert!(c.reply().starts_with("220 "));
    assert!(c.cmd("EHLO client.sender.test").starts_with("250 "));
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>"), "250 2.1.0 Ok");
    assert_eq!(c.cmd("RCPT TO:<alice@mail.server.com>"), "250 2.1.5 Ok");
    assert!(c.cmd("DATA").starts_with("354 "));
    let started = std::time::Instant::now();
    let queued = c.cmd("From: a@sender.test\r\nSubject: t\r\n\r\nhello\r\n.");
    assert!(queued.starts_with("250 "), "{queued}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    c.cmd("QUIT");
    drop(server);
    let messages = sys.messages(QueueName::Maildrop);
    assert_eq!(messages.len(), 1);
    let m = String::from_utf8_lossy(&messages[0].1).into_owned();
    assert!(m.contains("spf=temperror"), "{m}");
    assert!(m.contains("dmarc=temperror"), "{m}");
    assert!(m.contains("\n\nhello\n"), "{m}");
}

#[test]
fn without_a_dkim_selector_the_dkim_check_says_how_to_start_signing() {
    let site = Site::new();
    let main_cf = site.dir.path().join("main.cf");
    let text = std::fs::read_to_string(&main_cf).unwrap();
    std::fs::write(&main_cf, text.replace("dkim_selector = sel\n", "")).unwrap();
    let Some((code, stdout)) = site.check(&site.zone(), &[]) else {
        return;
    };
    assert_eq!(code, 1, "{stdout}");
    let l = line(&stdout, "dkim");
    assert!(
        l.starts_with("dkim  missing mail._domainkey.example.test"),
        "{l}"
    );
    assert!(l.contains("mailroom dkim keygen -d example.test"), "{l}");
    assert_eq!(line(&stdout, "spf").split_whitespace().nth(1), Some("ok"));
}

#[test]
fn mailroom_check_reports_a_bad_dns_nameservers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("main.cf"),
        "dns_nameservers = 192.0.2.1, ns.example.test\n",
    )
    .unwrap();
    let out = std::process::Command::new(MAILROOM)
        .arg("-c")
        .arg(dir.path())
        .arg("check")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("dns_nameservers")
            && stdout.contains("\"ns.example.test\": not an IP address"),
        "{stdout}"
    );
}
