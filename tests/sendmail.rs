//! `sendmail` submission, run as the real binary against a temporary queue. Every test
//! passes `-odq` so the message stays in `maildrop/` where the test can look at it.

mod common;

use common::{MailSystem, python, stderr};
use mailroom::queue::QueueName;

const SENDMAIL: &str = env!("CARGO_BIN_EXE_sendmail");

fn submit(sys: &MailSystem, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut all = vec!["-odq"];
    all.extend_from_slice(args);
    sys.run(SENDMAIL, &all, stdin)
}

/// Submits and returns the one queued message.
fn submit_one(
    sys: &MailSystem,
    args: &[&str],
    stdin: &[u8],
) -> (mailroom::queue::Envelope, String) {
    let out = submit(sys, args, stdin);
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        stderr(&out)
    );
    assert_eq!(stderr(&out), "");
    let mut messages = sys.messages(QueueName::Maildrop);
    assert_eq!(messages.len(), 1);
    let (env, bytes) = messages.remove(0);
    (env, String::from_utf8_lossy(&bytes).into_owned())
}

fn addresses(env: &mailroom::queue::Envelope) -> Vec<(String, String)> {
    env.recipients
        .iter()
        .map(|r| (r.original.clone(), r.address.clone()))
        .collect()
}

#[test]
fn completes_headers_like_postfix_cleanup() {
    let sys = MailSystem::new("");
    let (env, text) = submit_one(&sys, &["alice"], b"Subject: hello\n\nbody\n");
    assert_eq!(env.sender, "root@mail.server.com");
    assert_eq!(
        addresses(&env),
        [("alice".into(), "alice@mail.server.com".into())]
    );
    let id = env.id.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "Received: by vm (mailroom, from userid 0)");
    assert!(
        lines[1].starts_with(&format!("\tid {id}; ")),
        "{}",
        lines[1]
    );
    assert!(lines[1].ends_with(" +0000 (UTC)"), "{}", lines[1]);
    assert_eq!(lines[2], "Subject: hello");
    assert!(lines[3].starts_with("Message-Id: <") && lines[3].ends_with(&format!(".{id}@vm>")));
    assert!(lines[4].starts_with("Date: "));
    assert_eq!(lines[5], "From: root <root@mail.server.com>");
    assert_eq!(&lines[6..], ["", "body"]);
    // An independent parser agrees.
    let parsed = python(
        "import sys,email; m=email.message_from_binary_file(sys.stdin.buffer); \
         print(m['Subject'], m['From'], m.get_payload(), sep='|', end='')",
        text.as_bytes(),
    );
    assert_eq!(parsed, "hello|root <root@mail.server.com>|body\n");
}

/// `Date:` and the `Received:` date are local time in the caller's zone, written as
/// coreutils' `date` writes the same moment in that zone, its name in parentheses.
#[test]
fn dates_are_in_the_callers_time_zone() {
    let sys = MailSystem::new("");
    for zone in [
        "Europe/Paris",
        "America/New_York",
        "Asia/Kolkata",
        "CET-1CEST",
    ] {
        let out = sys
            .command(SENDMAIL)
            .env("TZ", zone)
            .args(["-odq", "alice"])
            .stdin(std::process::Stdio::piped())
            .output()
            .unwrap();
        assert!(out.status.success(), "{zone}: {}", stderr(&out));
        let (id, _) = sys.queue().list(&[QueueName::Maildrop]).unwrap().remove(0);
        let (env, bytes) = sys.message(QueueName::Maildrop, id);
        std::fs::remove_file(sys.queue().path(QueueName::Maildrop, id)).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let date = std::process::Command::new("date")
            .env("TZ", zone)
            .arg(format!("--date=@{}", env.arrival_secs()))
            .arg("+%a, %-d %b %Y %H:%M:%S %z (%Z)")
            .output()
            .unwrap();
        let expected = String::from_utf8(date.stdout).unwrap();
        let expected = expected.trim_end();
        assert!(text.contains(&format!("; {expected}\n")), "{zone}: {text}");
        assert!(
            text.contains(&format!("\nDate: {expected}\n")),
            "{zone}: {text}"
        );
    }
}

#[test]
fn keeps_existing_headers_byte_for_byte() {
    let sys = MailSystem::new("");
    let input = b"From: Someone <someone@example.org>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\
                  Message-ID: <abc@example.org>\nX-Weird:   spaced\tvalue \nSubject: =?utf-8?q?h=C3=A9?=\n\
                  \tfolded\n\nbody\n";
    let (_, text) = submit_one(&sys, &["alice"], input);
    let after_received = text.split_once("\n").unwrap().1.split_once("\n").unwrap().1;
    assert_eq!(after_received.as_bytes(), &input[..]);
}

#[test]
fn qualifies_bare_names_in_address_headers_only() {
    let sys = MailSystem::new("");
    let input = b"To: alice, Bob <bob@localhost>\nCc: carol\nFrom: root (Cron Daemon)\nSubject: alice\n\nx\n";
    let (_, text) = submit_one(&sys, &["alice"], input);
    assert!(text.contains("\nTo: alice@mail.server.com, Bob <bob@localhost>\n"));
    assert!(text.contains("\nCc: carol@mail.server.com\n"));
    assert!(text.contains("\nFrom: root@mail.server.com (Cron Daemon)\n"));
    assert!(text.contains("\nSubject: alice\n"));
    assert!(!text.contains("\nTo: \n"), "no To: is ever added");
}

#[test]
fn no_to_header_is_added() {
    let sys = MailSystem::new("");
    let (_, text) = submit_one(&sys, &["alice"], b"Subject: x\n\nbody\n");
    assert!(!text.contains("\nTo:"));
}

#[test]
fn full_name_and_sender_options() {
    let sys = MailSystem::new("");
    let (env, text) = submit_one(
        &sys,
        &["-f", "sender@example.org", "-F", "Some Body", "alice"],
        b"\n",
    );
    assert_eq!(env.sender, "sender@example.org");
    assert!(text.contains("\nFrom: Some Body <sender@example.org>\n"));

    let sys = MailSystem::new("");
    let (env, text) = submit_one(&sys, &["-r", "other@example.org", "alice"], b"");
    assert_eq!(env.sender, "other@example.org");
    assert!(
        text.contains("\nFrom: root <other@example.org>\n"),
        "{text}"
    );

    let sys = MailSystem::new("");
    let (env, _) = submit_one(&sys, &["-f", "<>", "alice"], b"x\n");
    assert_eq!(env.sender, "");

    let sys = MailSystem::new("");
    let (env, _) = submit_one(&sys, &["-fbob", "alice"], b"x\n");
    assert_eq!(env.sender, "bob@mail.server.com");
}

#[test]
fn every_real_caller_is_accepted() {
    let cron = b"From: root (Cron Daemon)\nTo: alice\nSubject: Cron <alice@vm> ls\n\
                 MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nX-Cron-Env: <SHELL=/bin/sh>\n\nout\n";
    let full = b"From: Me <me@example.org>\nTo: alice@example.org\nSubject: s\nMessage-Id: <1@x>\n\nhello\n";
    let php = b"To: alice@example.org\nCc: bob\nBcc: secret@example.org\nSubject: php\n\nbody\n";
    let mailx = b"To: alice, bob\nSubject: s\nMIME-Version: 1.0\nContent-Type: text/plain; charset=\"UTF-8\"\nContent-Transfer-Encoding: 8bit\n\nbody\n";
    let cases: Vec<(&[&str], &[u8], Vec<&str>)> = vec![
        (
            &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "alice"],
            cron,
            vec!["alice@mail.server.com"],
        ),
        (
            &["-oem", "-oi", "--", "alice@example.org", "bob"],
            full,
            vec!["alice@example.org", "bob@mail.server.com"],
        ),
        (
            &["-i", "alice@example.org", "bob@example.org"],
            full,
            vec!["alice@example.org", "bob@example.org"],
        ),
        (
            &["-i", "-f", "me@example.org", "alice@example.org"],
            full,
            vec!["alice@example.org"],
        ),
        (
            &["-t", "-i"],
            php,
            vec![
                "alice@example.org",
                "bob@mail.server.com",
                "secret@example.org",
            ],
        ),
        (
            &["-t"],
            php,
            vec![
                "alice@example.org",
                "bob@mail.server.com",
                "secret@example.org",
            ],
        ),
        (&["-i", "--", "alice"], full, vec!["alice@mail.server.com"]),
        (
            &["-i", "-t"],
            mailx,
            vec!["alice@mail.server.com", "bob@mail.server.com"],
        ),
    ];
    for (args, input, want) in cases {
        let sys = MailSystem::new("");
        let (env, text) = submit_one(&sys, args, input);
        let got: Vec<String> = env.recipients.iter().map(|r| r.address.clone()).collect();
        assert_eq!(got, want, "{args:?}");
        assert!(!text.contains("Bcc:"), "{args:?}: Bcc must never be stored");
        if args.contains(&"-FCronDaemon") {
            assert!(text.contains("\nFrom: root@mail.server.com (Cron Daemon)\n"));
        }
        if args.contains(&"me@example.org") {
            assert_eq!(env.sender, "me@example.org");
        }
    }
}

#[test]
fn extract_adds_to_command_line_recipients_and_drops_bcc() {
    let sys = MailSystem::new("");
    let input = b"To: alice\nBcc: hidden@example.org,\n  hidden2@example.org\nSubject: s\n\nbody\n";
    let (env, text) = submit_one(&sys, &["-t", "bob"], input);
    let got: Vec<&str> = env.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(
        got,
        [
            "bob@mail.server.com",
            "alice@mail.server.com",
            "hidden@example.org",
            "hidden2@example.org"
        ]
    );
    assert_eq!(env.recipients[1].original, "alice");
    assert!(!text.contains("hidden"));
    assert!(text.contains("\nTo: alice@mail.server.com\nSubject: s\n"));
}

#[test]
fn extract_uses_resent_headers_when_present() {
    let sys = MailSystem::new("");
    let input = b"To: original@example.org\nResent-To: new@example.org\nResent-Bcc: quiet@example.org\n\nx\n";
    let (env, text) = submit_one(&sys, &["-t"], input);
    let got: Vec<&str> = env.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(got, ["new@example.org", "quiet@example.org"]);
    assert!(!text.contains("quiet@"));
}

#[test]
fn duplicate_recipients_are_queued_once() {
    let sys = MailSystem::new("");
    let (env, _) = submit_one(
        &sys,
        &["-t", "alice", "alice@mail.server.com"],
        b"To: alice\n\nx\n",
    );
    assert_eq!(env.recipients.len(), 1);
}

#[test]
fn address_lists_in_arguments() {
    let sys = MailSystem::new("");
    let (env, _) = submit_one(&sys, &["a b c", "Dee <d@example.org>, e"], b"x\n");
    let got: Vec<&str> = env.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(
        got,
        [
            "a@mail.server.com",
            "b@mail.server.com",
            "c@mail.server.com",
            "d@example.org",
            "e@mail.server.com"
        ]
    );
}

#[test]
fn lone_dot_ends_input_unless_i() {
    let input = b"Subject: dots\n\nline\n.\nafter\n";
    let sys = MailSystem::new("");
    let (_, text) = submit_one(&sys, &["alice"], input);
    assert!(text.ends_with("\nline\n"), "{text}");
    let sys = MailSystem::new("");
    let (_, text) = submit_one(&sys, &["-i", "alice"], input);
    assert!(text.ends_with("\nline\n.\nafter\n"));
    let sys = MailSystem::new("");
    let (_, text) = submit_one(&sys, &["-oi", "alice"], b"\n..\n");
    assert!(
        text.ends_with("\n\n..\n"),
        "dots are not unstuffed outside SMTP"
    );
}

#[test]
fn crlf_missing_newline_and_8bit() {
    let sys = MailSystem::new("");
    let (env, text) = submit_one(
        &sys,
        &["alice"],
        b"Subject: crlf\r\n\r\nline one\r\nno newline",
    );
    assert!(!text.contains('\r'));
    assert!(text.ends_with("\n\nline one\nno newline\n"));
    assert_eq!(env.size as usize, text.len());

    let sys = MailSystem::new("");
    let out = submit(
        &sys,
        &["alice"],
        b"Subject: caf\xc3\xa9\n\n\xff\xfe raw bytes\n",
    );
    assert!(out.status.success());
    let (_, bytes) = sys.messages(QueueName::Maildrop).remove(0);
    assert!(
        bytes.ends_with(b"Subject: caf\xc3\xa9\n\n\xff\xfe raw bytes\n") || {
            let s = String::from_utf8_lossy(&bytes);
            s.contains("Subject: caf\u{e9}")
        }
    );
    assert!(bytes.windows(2).any(|w| w == b"\xff\xfe"));
}

#[test]
fn empty_input_and_headerless_input() {
    let sys = MailSystem::new("");
    let (_, text) = submit_one(&sys, &["alice"], b"");
    assert!(text.contains("\nFrom: root <root@mail.server.com>\n"));
    assert!(text.ends_with("@mail.server.com>\n"));

    let sys = MailSystem::new("");
    let (_, text) = submit_one(&sys, &["alice"], b"just a body line\nsecond\n");
    assert!(text.ends_with(">\n\njust a body line\nsecond\n"), "{text}");
}

#[test]
fn leading_from_line_is_dropped() {
    let sys = MailSystem::new("");
    let (_, text) = submit_one(
        &sys,
        &["alice"],
        b"From someone@example.org Tue Nov 24 22:55:38 2026\nSubject: s\n\nFrom here\n",
    );
    assert!(!text.contains("From someone"));
    assert!(text.ends_with("\n\nFrom here\n"));
}

#[test]
fn oversize_message_is_refused_and_nothing_is_left() {
    let sys = MailSystem::new("message_size_limit = 1000");
    let big = vec![b'x'; 5000];
    let out = submit(&sys, &["alice"], &big);
    assert_eq!(out.status.code(), Some(65));
    assert!(
        stderr(&out).contains("message_size_limit"),
        "{}",
        stderr(&out)
    );
    assert!(sys.files_in(QueueName::Maildrop).is_empty());
    // Just under the limit (headers count) still goes through.
    let out = submit(&sys, &["alice"], &vec![b'y'; 400]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn usage_errors() {
    let sys = MailSystem::new("");
    let out = submit(&sys, &[], b"x\n");
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(
        stderr(&out),
        "sendmail: fatal: root(0): Recipient addresses must be specified on the command line or via the -t option\n"
    );
    let out = submit(&sys, &["-t"], b"Subject: none\n\nx\n");
    assert_eq!(out.status.code(), Some(65));
    assert_eq!(
        stderr(&out),
        "sendmail: fatal: root(0): No recipient addresses found in message header\n"
    );
    let out = submit(&sys, &["-Z", "alice"], b"x\n");
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(
        stderr(&out),
        "sendmail: invalid option -- 'Z'\nsendmail: fatal: usage: sendmail [options]\n"
    );
    let out = submit(&sys, &["--foo", "alice"], b"x\n");
    assert_eq!(out.status.code(), Some(64));
    let out = submit(&sys, &["-bz"], b"");
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(stderr(&out), "sendmail: fatal: unsupported: -bz\n");
    let out = submit(&sys, &["-n", "alice"], b"");
    assert_eq!(out.status.code(), Some(64));
    assert!(sys.files_in(QueueName::Maildrop).is_empty());
}

#[test]
fn malformed_addresses_are_refused_with_nothing_queued() {
    for bad in ["alice@", "@", "<alice", "bad address<<@", "", "a@b..c"] {
        let sys = MailSystem::new("");
        let out = submit(&sys, &["good@example.org", bad], b"x\n");
        assert_eq!(out.status.code(), Some(65), "{bad:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("malformed recipient address"),
            "{}",
            stderr(&out)
        );
        assert!(sys.files_in(QueueName::Maildrop).is_empty(), "{bad:?}");
    }
    let sys = MailSystem::new("");
    let out = submit(&sys, &["-t"], b"To: alice@\n\nx\n");
    assert_eq!(out.status.code(), Some(65));
    assert!(sys.files_in(QueueName::Maildrop).is_empty());
}

/// RFC 5321's length (320 bytes in all; a longer local part than 64 is taken, as Postfix
/// takes VERP and SRS addresses) bounds every address
/// sendmail takes, from argv, `-f` and `-t` headers alike: one over them is a malformed
/// address (65, nothing queued), and the message names it without repeating it whole.
#[test]
fn over_long_addresses_are_refused_with_nothing_queued() {
    let local = |n: usize| "a".repeat(n);
    let huge = format!("{}@example.org", local(100_000));
    let domain = format!("{}.org", "d".repeat(320));
    // (arguments, header block for -t, what the message says)
    let table: Vec<(Vec<String>, String, &str)> = vec![
        (
            vec![local(400)],
            String::new(),
            "malformed recipient address",
        ),
        (
            vec![format!("{}@x.org", local(400))],
            String::new(),
            "malformed recipient address",
        ),
        (
            vec![huge.clone()],
            String::new(),
            "malformed recipient address",
        ),
        (
            vec![format!("b@{domain}")],
            String::new(),
            "malformed recipient address",
        ),
        (
            vec!["-f".into(), format!("{}@x.org", local(400)), "bob".into()],
            String::new(),
            "malformed sender address",
        ),
        (
            vec!["-f".into(), huge.clone(), "bob".into()],
            String::new(),
            "malformed sender address",
        ),
        (
            vec!["-t".into()],
            format!("To: bob, {}\n", local(400)),
            "malformed recipient address",
        ),
        (
            vec!["-t".into()],
            format!("Cc: <{}@example.org>\n", local(400)),
            "malformed recipient address",
        ),
        (
            (0..10_001).map(|n| format!("u{n}@example.org")).collect(),
            String::new(),
            "more than 10000 recipients",
        ),
    ];
    for (args, headers, says) in table {
        let sys = MailSystem::new("");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = submit(
            &sys,
            &args,
            format!("{headers}Subject: x\n\nbody\n").as_bytes(),
        );
        let err = stderr(&out);
        let shown: String = format!("{args:?}").chars().take(60).collect();
        assert_eq!(out.status.code(), Some(65), "{shown}: {err}");
        assert!(err.contains(says), "{shown}: {err}");
        assert!(err.starts_with("sendmail: fatal: "), "{shown}: {err}");
        assert!(err.len() < 400, "{shown}: {} bytes of message", err.len());
        assert!(sys.files_in(QueueName::Maildrop).is_empty(), "{shown}");
    }
    // At the bounds, everything is taken; 10,000 recipients too.
    let sys = MailSystem::new("");
    let at = format!("{}@x.org", local(314));
    let mut args: Vec<String> = vec!["-f".into(), at.clone(), at.clone()];
    args.extend((0..9_999).map(|n| format!("u{n}@example.org")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = submit(&sys, &args, b"Subject: x\n\nbody\n");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (env, _) = sys.messages(QueueName::Maildrop).remove(0);
    assert_eq!(env.sender, at);
    assert_eq!(env.recipients.len(), 10_000);
}

/// The full name (`-F`, else the password file's) is free text: one longer than the
/// queue file's 256-byte bound is cut, at a character boundary.
#[test]
fn a_long_full_name_is_cut() {
    let sys = MailSystem::new("");
    let name = "é".repeat(200);
    let (env, message) = submit_one(&sys, &["-F", &name, "bob"], b"Subject: x\n\nbody\n");
    assert_eq!(env.full_name, "é".repeat(128));
    let from = python(
        "import email,sys\nm=email.message_from_binary_file(sys.stdin.buffer)\n\
         print(str(email.header.make_header(email.header.decode_header(m['From']))))",
        message.as_bytes(),
    );
    assert_eq!(
        from.trim(),
        format!("{} <root@mail.server.com>", "é".repeat(128))
    );
}

#[test]
fn config_errors_are_78() {
    let sys = MailSystem::new("");
    let out = sys
        .command(SENDMAIL)
        .env("MAIL_CONFIG", "/nonexistent")
        .arg("alice")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert_eq!(
        stderr(&out),
        "sendmail: fatal: open /nonexistent/main.cf: No such file or directory\n"
    );
    let out = sys
        .command(SENDMAIL)
        .args(["-C", "/nonexistent", "alice"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));

    let sys = MailSystem::new("myorigin = $loop_a\nloop_a = $loop_b\nloop_b = $loop_a");
    let out = submit(&sys, &["alice"], b"x\n");
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("recursive"), "{}", stderr(&out));
}

#[test]
fn unwritable_queue_is_a_temporary_failure() {
    let sys = MailSystem::new("");
    // A file where the queue directory should be: nothing can be created there.
    std::fs::write(sys.root().join("queue"), b"not a directory").unwrap();
    let out = submit(&sys, &["alice"], b"x\n");
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
}

#[test]
fn header_injection_through_argv_is_impossible() {
    let sys = MailSystem::new("");
    let (env, text) = submit_one(
        &sys,
        &["-F", "Evil\nBcc: victim@example.org", "alice"],
        b"x\n",
    );
    assert!(!text.contains("\nBcc:"));
    assert!(
        text.contains("\nFrom: Evil Bcc: victim@example.org <root@mail.server.com>\n")
            || text.contains("\nFrom: \"Evil Bcc: victim@example.org\" <"),
        "{text}"
    );
    assert!(!env.full_name.contains('\n'));

    let sys = MailSystem::new("");
    let out = submit(
        &sys,
        &["-f", "a@b\nBcc: victim@example.org", "alice"],
        b"x\n",
    );
    assert_eq!(out.status.code(), Some(65));
    assert!(sys.files_in(QueueName::Maildrop).is_empty());

    let sys = MailSystem::new("");
    let out = submit(&sys, &["alice\nBcc: victim@example.org"], b"x\n");
    assert_ne!(out.status.code(), Some(0));
    assert!(sys.files_in(QueueName::Maildrop).is_empty());
}

#[test]
fn sigkill_while_reading_leaves_no_visible_message() {
    use std::io::Write;
    use std::process::Stdio;
    let sys = MailSystem::new("");
    let mut child = sys
        .command(SENDMAIL)
        .args(["-odq", "alice"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"Subject: big\n\n").unwrap();
    let chunk = vec![b'z'; 64 * 1024];
    for _ in 0..16 {
        stdin.write_all(&chunk).unwrap();
    }
    // Give it time to write part of the message to disk, then kill it mid-read.
    std::thread::sleep(std::time::Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    let queue = sys.queue();
    assert!(queue.list(&QueueName::MAIL).unwrap().is_empty());
    // Only a temporary (dot) file may remain, which no listing shows.
    for name in sys.files_in(QueueName::Maildrop) {
        assert!(name.starts_with('.'), "{name}");
    }
}

#[test]
fn concurrent_submitters_get_distinct_parseable_files() {
    let sys = std::sync::Arc::new(MailSystem::new(""));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let sys = sys.clone();
            std::thread::spawn(move || {
                for i in 0..250 {
                    let body = format!("Subject: {t}-{i}\n\nbody {t} {i}\n");
                    let out = submit(&sys, &["-i", "alice"], body.as_bytes());
                    assert!(out.status.success(), "{}", stderr(&out));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let messages = sys.messages(QueueName::Maildrop);
    assert_eq!(messages.len(), 2000);
    let mut subjects: Vec<String> = messages
        .iter()
        .map(|(env, bytes)| {
            let text = String::from_utf8_lossy(bytes);
            assert!(text.contains(&format!("id {};", env.id)));
            text.lines()
                .find(|l| l.starts_with("Subject: "))
                .unwrap()
                .to_string()
        })
        .collect();
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), 2000);
    assert!(
        sys.files_in(QueueName::Maildrop)
            .iter()
            .all(|n| !n.starts_with('.'))
    );
}

#[test]
fn bi_compiles_aliases_and_bv_reports_where_mail_goes() {
    let sys = MailSystem::new("");
    std::fs::write(
        sys.config_dir().join("aliases"),
        "postmaster: root\nrootalias: root\nteam: root, |/usr/bin/true, bob@example.org\n",
    )
    .unwrap();
    let out = sys.run(SENDMAIL, &["-bi"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(sys.config_dir().join("aliases.cdb").exists());

    let out = sys.run(
        SENDMAIL,
        &["-bv", "rootalias", "team", "bob@example.org"],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("rootalias: expands to root"), "{report}");
    assert!(report.contains("(command, runs as nobody)"), "{report}");
    assert!(
        report.contains("bob@example.org: relays to remote host"),
        "{report}"
    );
    assert!(
        sys.files_in(QueueName::Maildrop).is_empty(),
        "-bv delivers nothing"
    );

    let out = sys.run(SENDMAIL, &["-bv", "nosuchuser_mr"], b"");
    assert_eq!(out.status.code(), Some(67));
    assert!(String::from_utf8_lossy(&out.stdout).contains("unknown user: \"nosuchuser_mr\""));
}

#[test]
fn bp_prints_the_same_bytes_as_mailq() {
    let sys = MailSystem::new("");
    let empty = sys.run(SENDMAIL, &["-bp"], b"");
    assert_eq!(
        String::from_utf8_lossy(&empty.stdout),
        "Mail queue is empty\n"
    );
    for i in 0..3 {
        let out = submit(
            &sys,
            &["-f", "sender@example.org", "alice", "bob@example.org"],
            format!("Subject: {i}\n\nx\n").as_bytes(),
        );
        assert!(out.status.success());
    }
    let bp = sys.run(SENDMAIL, &["-bp"], b"");
    let mailq = sys.run(env!("CARGO_BIN_EXE_mailq"), &[], b"");
    assert!(bp.status.success() && mailq.status.success());
    assert_eq!(bp.stdout, mailq.stdout);
    assert!(String::from_utf8_lossy(&bp.stdout).ends_with("in 3 Requests.\n"));
}

/// A header longer than `header_size_limit` (Postfix: 102400 bytes) is cut at the limit
/// and the rest of it discarded, as Postfix's cleanup does; the headers after it are
/// still headers and the body is untouched. (It used to end the header block, so the
/// later headers became body text.)
#[test]
fn an_oversized_header_is_truncated_and_the_rest_stay_headers() {
    let sys = MailSystem::new("");
    let long = "s".repeat(200 * 1024);
    let folded: String = (0..3000)
        .map(|n| format!("\tfold {n:04} {}\n", "f".repeat(90)))
        .collect();
    let input = format!(
        "Subject: {long}\nTo: alice@example.com\nX-Folded: start\n{folded}\
         X-Later: still a header\n\nbody line 1\nSubject: not a header\n"
    );
    let (_, message) = submit_one(&sys, &["-t", "-i"], input.as_bytes());
    let script = r#"
import sys, email, email.policy
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.compat32)
subject = m['Subject']
print(len('Subject: ' + subject), set(subject))
print(m['To'])
print(m['X-Later'])
folded = m['X-Folded']
print(len('X-Folded: ' + folded), folded.startswith('start'))
print(repr(m.get_payload()))
"#;
    let got = python(script, message.as_bytes());
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines[0], "102400 {'s'}", "{got}");
    assert_eq!(lines[1], "alice@example.com");
    assert_eq!(lines[2], "still a header");
    let (len, starts) = lines[3].split_once(' ').unwrap();
    assert!(len.parse::<usize>().unwrap() <= 102400, "{got}");
    assert!(len.parse::<usize>().unwrap() > 100000, "{got}");
    assert_eq!(starts, "True");
    assert_eq!(lines[4], "'body line 1\\nSubject: not a header\\n'");
}

/// `sendmail` skips the Rust runtime's start-up (see src/bin/sendmail.rs), so it opens
/// `/dev/null` itself on any standard descriptor its caller left closed. Otherwise the
/// files it opens would take descriptors 0 to 2, and a queue file or mailbox opened for
/// writing as descriptor 2 would receive its complaints.
#[test]
fn descriptors_the_caller_closed_become_dev_null() {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    struct Case {
        closed: &'static [i32],
        args: &'static [&'static str],
        queued: usize,
    }
    let cases = [
        // Nothing to read: an empty message is queued, as from `< /dev/null`.
        Case {
            closed: &[0],
            args: &["-odq", "-i", "alice"],
            queued: 1,
        },
        Case {
            closed: &[0, 1, 2],
            args: &["-odq", "-i", "alice"],
            queued: 1,
        },
        Case {
            closed: &[1, 2],
            args: &["-bp"],
            queued: 0,
        },
    ];
    let closing = |cmd: &mut std::process::Command, closed: &'static [i32]| {
        // SAFETY: close(2) is async-signal-safe and touches only the child's descriptors.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in closed {
                    libc::close(fd);
                }
                Ok(())
            });
        }
    };
    for case in cases {
        let sys = MailSystem::new("");
        let mut cmd = sys.command(SENDMAIL);
        cmd.args(case.args);
        closing(&mut cmd, case.closed);
        let status = cmd.status().unwrap();
        let closed = case.closed;
        assert!(
            status.success(),
            "{:?} closed {closed:?}: {status:?}",
            case.args
        );
        let messages = sys.messages(QueueName::Maildrop);
        assert_eq!(messages.len(), case.queued, "closed {closed:?}");
        for (env, bytes) in messages {
            // Only the headers sendmail adds to an empty message, nothing read.
            let text = String::from_utf8_lossy(&bytes);
            let names: Vec<&str> = text
                .lines()
                .filter(|l| !l.starts_with('\t'))
                .map(|l| l.split(':').next().unwrap_or(l))
                .collect();
            assert_eq!(
                names,
                ["Received", "Message-Id", "Date", "From"],
                "closed {closed:?}: {text}"
            );
            assert_eq!(env.recipients.len(), 1);
        }
    }

    // What the descriptors are, seen while sendmail waits for its input.
    let sys = MailSystem::new("");
    let mut cmd = sys.command(SENDMAIL);
    cmd.args(["-odq", "-i", "alice"]).stdin(Stdio::piped());
    closing(&mut cmd, &[1, 2]);
    let mut child = cmd.spawn().unwrap();
    let fd = |n: u32| std::fs::read_link(format!("/proc/{}/fd/{n}", child.id())).ok();
    let limit = std::time::Duration::from_secs(10);
    common::wait_for(&sys, "stdout and stderr on /dev/null", limit, || {
        [fd(1), fd(2)] == [Some("/dev/null".into()), Some("/dev/null".into())]
    });
    // Standard descriptors, so not close-on-exec: programs sendmail starts inherit them.
    for n in [1, 2] {
        let info = std::fs::read_to_string(format!("/proc/{}/fdinfo/{n}", child.id())).unwrap();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
            .unwrap();
        assert_eq!(flags & libc::O_CLOEXEC as u32, 0, "descriptor {n}: {info}");
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"Subject: open\n\nbody\n").unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let (_, bytes) = sys.messages(QueueName::Maildrop).remove(0);
    assert!(String::from_utf8_lossy(&bytes).ends_with("\n\nbody\n"));
}

/// The runtime sendmail skips would also have ignored `SIGPIPE`; sendmail does so itself,
/// so a reader that went away is a write error, never a death by signal.
#[test]
fn a_reader_gone_away_is_not_a_death_by_sigpipe() {
    use std::os::unix::process::ExitStatusExt;
    let sys = MailSystem::new("");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = sys
        .command(SENDMAIL)
        .arg("-bp")
        .stdout(writer)
        .status()
        .unwrap();
    assert_eq!(status.signal(), None, "{status:?}");
}
