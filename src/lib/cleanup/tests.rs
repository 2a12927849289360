//! Each origin's queue file as cleanup writes it: `Received:`, completed headers, body.

use std::io;

use chrono::{Local, TimeZone, Utc};

use super::*;
use crate::message::date::rfc2822_date;
use crate::queue::QueueName;

const HOST: &str = "mx.example.org";

fn settings() -> Settings {
    Settings {
        myhostname: HOST.to_string(),
        myorigin: "example.org".to_string(),
        message_size_limit: 0,
        header_size_limit: 102_400,
        replace_stray_cr: true,
    }
}

fn draft(sender: &str, full_name: &str, uid: u32, rcpts: &[&str]) -> Draft {
    Draft {
        sender: sender.to_string(),
        full_name: full_name.to_string(),
        uid,
        recipients: rcpts.iter().map(|r| Recipient::new(r, r)).collect(),
        ..Draft::default()
    }
}

fn smtp(protocol: &'static str, for_rcpt: Option<&str>) -> Origin {
    Origin::Smtp(SmtpTrace {
        helo: "helo.example".to_string(),
        client_name: "client.example".to_string(),
        client_addr: "192.0.2.1".to_string(),
        protocol,
        authenticated_sender: None,
        for_rcpt: for_rcpt.map(str::to_string),
    })
}

/// Writes mail from outside (`input`) through cleanup.
fn write_input(
    queue: &Queue,
    settings: &Settings,
    origin: Origin,
    envelope: Draft,
    input: &[u8],
    qualify_headers: bool,
) -> std::result::Result<(Queued, Option<File>), Failure> {
    let mut reader = InputReader::new(input, false, settings.message_size_limit);
    let head = read_headers(&mut reader, settings)?;
    let message = Message {
        origin,
        envelope,
        content: Content::Input {
            settings,
            head,
            body: &mut reader,
            qualify_headers,
        },
    };
    write(queue, &settings.myhostname, message, Commit::Unlocked)
}

/// The message text of a queued file, its queue ID, dates and Message-Id stamp replaced
/// by `{ID}`, `{DATE}` and `{STAMP}`.
fn queued_text(queue: &Queue, id: QueueId) -> String {
    let envelope = queue.read_envelope(QueueName::Maildrop, id).unwrap();
    let bytes = std::fs::read(queue.path(QueueName::Maildrop, id)).unwrap();
    let text = String::from_utf8(bytes[envelope.message_offset as usize..].to_vec()).unwrap();
    let now = Local
        .timestamp_micros(envelope.arrival_micros as i64)
        .single()
        .unwrap();
    let stamp = now.with_timezone(&Utc).format("%Y%m%d%H%M%S").to_string();
    text.replace(id.as_str(), "{ID}")
        .replace(&rfc2822_date(&now), "{DATE}")
        .replace(&stamp, "{STAMP}")
}

#[test]
fn mail_from_outside_gets_its_origin_s_received_and_completed_headers() {
    struct Case {
        name: &'static str,
        origin: Origin,
        envelope: Draft,
        qualify: bool,
        input: &'static str,
        expected: &'static str,
    }
    let cases = [
        Case {
            name: "local submission: completed, qualified, Bcc removed",
            origin: Origin::Local { uid: 1000 },
            envelope: draft(
                "alice@example.org",
                "Alice Smith",
                1000,
                &["bob@example.org"],
            ),
            qualify: true,
            input: "Subject: hi\nTo: bob\nBcc: secret@example.net\n\nbody\n",
            expected: "Received: by mx.example.org (mailroom, from userid 1000)\n\
                       \tid {ID}; {DATE}\n\
                       Subject: hi\n\
                       To: bob@example.org\n\
                       Message-Id: <{STAMP}.{ID}@mx.example.org>\n\
                       Date: {DATE}\n\
                       From: Alice Smith <alice@example.org>\n\
                       \n\
                       body\n",
        },
        Case {
            name: "local submission: an mbox From line dropped, stray CR, text right after the headers",
            origin: Origin::Local { uid: 0 },
            envelope: draft("root@example.org", "", 0, &["bob@example.org"]),
            qualify: true,
            input: "From root Sat Jan  1 00:00:00 2000\nMessage-Id: <a@b>\nDate: x\nFrom: root\nSubject: a\rb\nno blank line\r\n",
            expected: "Received: by mx.example.org (mailroom, from userid 0)\n\
                       \tid {ID}; {DATE}\n\
                       Message-Id: <a@b>\n\
                       Date: x\n\
                       From: root@example.org\n\
                       Subject: a b\n\
                       \n\
                       no blank line\n",
        },
        Case {
            name: "SMTP with TLS, one recipient: named in for, headers as sent",
            origin: smtp("ESMTPS", Some("bob@example.org")),
            envelope: draft("x@example.net", "", 8, &["bob@example.org"]),
            qualify: false,
            input: "From: x@example.net\nTo: bob\nBcc: hidden@example.net\nDate: d\nMessage-Id: <m@x>\n\nhello\n",
            expected: "Received: from helo.example (client.example [192.0.2.1])\n\
                       \tby mx.example.org (mailroom) with ESMTPS id {ID}\n\
                       \tfor <bob@example.org>; {DATE}\n\
                       From: x@example.net\n\
                       To: bob\n\
                       Date: d\n\
                       Message-Id: <m@x>\n\
                       \n\
                       hello\n",
        },
        Case {
            name: "SMTP without TLS, several recipients, null sender: completed",
            origin: smtp("ESMTP", None),
            envelope: draft("", "", 8, &["a@example.org", "b@example.org"]),
            qualify: false,
            input: "Subject: s\n\nhello\n",
            expected: "Received: from helo.example (client.example [192.0.2.1])\n\
                       \tby mx.example.org (mailroom) with ESMTP id {ID}; {DATE}\n\
                       Subject: s\n\
                       Message-Id: <{STAMP}.{ID}@mx.example.org>\n\
                       Date: {DATE}\n\
                       From: MAILER-DAEMON@example.org\n\
                       \n\
                       hello\n",
        },
        Case {
            name: "input that ends inside the headers",
            origin: smtp("SMTP", Some("c@example.org")),
            envelope: draft("s@example.net", "", 8, &["c@example.org"]),
            qualify: false,
            input: "Subject: only",
            expected: "Received: from helo.example (client.example [192.0.2.1])\n\
                       \tby mx.example.org (mailroom) with SMTP id {ID}\n\
                       \tfor <c@example.org>; {DATE}\n\
                       Subject: only\n\
                       Message-Id: <{STAMP}.{ID}@mx.example.org>\n\
                       Date: {DATE}\n\
                       From: s@example.net\n",
        },
    ];
    let tmp = tempfile::tempdir().unwrap();
    let queue = Queue::new(tmp.path());
    let settings = settings();
    for case in cases {
        let (queued, locked) = write_input(
            &queue,
            &settings,
            case.origin,
            case.envelope.clone(),
            case.input.as_bytes(),
            case.qualify,
        )
        .unwrap_or_else(|e| panic!("{}: {e:?}", case.name));
        assert!(locked.is_none(), "{}", case.name);
        assert_eq!(
            queued_text(&queue, queued.id),
            case.expected,
            "{}",
            case.name
        );
        let envelope = queue.read_envelope(QueueName::Maildrop, queued.id).unwrap();
        assert_eq!(envelope.sender, case.envelope.sender, "{}", case.name);
        assert_eq!(envelope.uid, case.envelope.uid, "{}", case.name);
        assert_eq!(
            envelope.recipients.len(),
            queued.recipients,
            "{}",
            case.name
        );
        assert_eq!(envelope.size, queued.size, "{}", case.name);
    }
}

#[test]
fn mail_the_system_composes_is_written_as_given() {
    let cases = [
        (
            Origin::Bounce,
            vec![
                Composed::Date,
                Composed::Text("Subject: Undelivered\n\tfolded".to_string()),
                Composed::MessageId,
            ],
            "\nnotice\n",
            "Received: by mx.example.org (mailroom)\n\
             \tid {ID}; {DATE}\n\
             Date: {DATE}\n\
             Subject: Undelivered\n\
             \tfolded\n\
             Message-Id: <{STAMP}.{ID}@mx.example.org>\n\
             \n\
             notice\n",
        ),
        (
            Origin::Resubmit,
            vec![Composed::Text("Delivered-To: list@example.org".to_string())],
            // The original, Bcc and all: a resubmission passes it on unchanged.
            "Subject: t\nBcc: kept@example.org\n\nb\r\n",
            "Received: by mx.example.org (mailroom)\n\
             \tid {ID}; {DATE}\n\
             Delivered-To: list@example.org\n\
             Subject: t\n\
             Bcc: kept@example.org\n\
             \n\
             b\r\n",
        ),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let queue = Queue::new(tmp.path());
    for (origin, fields, body, expected) in cases {
        let name = format!("{origin:?}");
        let message = Message::composed(origin, draft("", "", 0, &["s@x"]), fields, |out| {
            out.write_all(body.as_bytes())
        });
        let (queued, _) = write(&queue, HOST, message, Commit::Unlocked).unwrap();
        assert_eq!(queued_text(&queue, queued.id), expected, "{name}");
    }
}

#[test]
fn a_message_over_the_size_limit_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = Queue::new(tmp.path());
    let mut settings = settings();
    // Room for the body as read, not for the Received: header cleanup adds.
    settings.message_size_limit = 60;
    let input = format!("Subject: s\n\n{}\n", "x".repeat(40));
    let result = write_input(
        &queue,
        &settings,
        Origin::Local { uid: 1 },
        draft("a@example.org", "", 1, &["b@example.org"]),
        input.as_bytes(),
        true,
    );
    assert!(
        matches!(result, Err(Failure::TooBig { limit: 60 })),
        "{result:?}"
    );
    let leftovers = std::fs::read_dir(queue.dir(QueueName::Maildrop))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "no file, temporary or not");
}

#[test]
fn a_locked_commit_hands_back_the_locked_file() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = Queue::new(tmp.path());
    let message = Message::composed(
        Origin::Resubmit,
        draft("s@x", "", 0, &["r@x"]),
        Vec::new(),
        |out| out.write_all(b"\n"),
    );
    let (queued, file) = write(&queue, HOST, message, Commit::Locked).unwrap();
    assert!(file.is_some());
    let other = queue.try_lock(QueueName::Maildrop, queued.id).unwrap();
    assert!(other.is_none(), "still locked while the descriptor is open");
    drop(file);
    assert!(
        queue
            .try_lock(QueueName::Maildrop, queued.id)
            .unwrap()
            .is_some()
    );
}

#[test]
fn queue_errors_are_worded_for_the_caller() {
    let queue = Queue::new("/nonexistent/queue");
    let err = |f| match QueueError::new(f, "smtpd", &queue) {
        QueueError::Queue(e) => e.message,
        other => panic!("{other:?}"),
    };
    let denied = || io::Error::from(io::ErrorKind::PermissionDenied);
    assert!(
        err(Failure::Maildrop(denied())).starts_with("smtpd: queue directory /nonexistent/queue")
    );
    assert!(
        err(Failure::Create("/q/maildrop".into(), denied()))
            .starts_with("smtpd: create file in /q/maildrop")
    );
    assert!(err(Failure::Write(denied())).starts_with("smtpd: error writing queue file"));
    let too_big = QueueError::new(Failure::TooBig { limit: 5 }, "root(0)", &queue);
    assert_eq!(
        too_big.into_error("root(0)").message,
        "root(0): message too large: it exceeds message_size_limit (5 bytes)"
    );
}
