use super::*;
use crate::deliver::testutil::{message_of, python, queue_message};
use crate::deliver::{Dsn, Outcome};
use crate::queue::NewQueueFile;

fn settings() -> BounceSettings {
    BounceSettings {
        myhostname: "vm.example.com".into(),
        myorigin: "example.com".into(),
        bounce_size_limit: 50_000,
    }
}

const ORIGINAL: &[u8] = b"Received: by vm (mailroom)\n\tid X; date\nSubject: hello\nFrom: alice@example.com\n\nbody line\nFrom the start\n";

/// Parses a message with Python's email package and prints what the tests check.
const PARSE: &str = r#"
import email, sys
from email import policy
msg = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=policy.default)
print('type', msg.get_content_type())
print('report-type', msg.get_param('report-type'))
print('from', msg['From'])
print('to', msg['To'])
print('subject', msg['Subject'])
print('auto', msg['Auto-Submitted'])
parts = list(msg.iter_parts())
print('parts', [p.get_content_type() for p in parts])
print('notice', parts[0].get_content().replace('\n', '|'))
status = parts[1]
blocks = status.get_payload()
print('per-message', dict(blocks[0].items()))
for b in blocks[1:]:
    print('per-recipient', dict(b.items()))
orig = parts[2]
if orig.get_content_type() == 'message/rfc822':
    inner = orig.get_payload()[0]
    print('original-subject', inner['Subject'])
    print('original-body', inner.get_payload().replace('\n', '|'))
else:
    print('headers', orig.get_payload().replace('\n', '|'))
"#;

fn parse(queue: &Queue, id: QueueId, dir: &std::path::Path) -> String {
    let path = dir.join("bounce.eml");
    std::fs::write(&path, message_of(queue, id)).unwrap();
    python(PARSE, &[&path])
}

#[test]
fn a_dsn_that_python_reads() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::new(dir.path().join("q"));
    let q = queue_message(
        &queue,
        "alice@example.com",
        &[
            ("nosuchuser", "nosuchuser@example.com"),
            ("bad@example.net", "bad@example.net"),
        ],
        ORIGINAL,
    );
    let failed = vec![
        (
            q.envelope.recipients[0].clone(),
            Outcome::bounced("local", Dsn::UNKNOWN_USER, "unknown user: \"nosuchuser\""),
        ),
        (
            q.envelope.recipients[1].clone(),
            Outcome::bounced("127.0.0.1[127.0.0.1]:25", Dsn::UNKNOWN_USER, "host said")
                .with_remote("127.0.0.1", "550 5.1.1 <bad@example.net>: no such user"),
        ),
    ];
    let id = create_bounce(&queue, &settings(), &q.envelope, q.source(), &failed)
        .unwrap()
        .expect("a bounce is queued");
    let env = queue
        .read_envelope(crate::queue::QueueName::Maildrop, id)
        .unwrap();
    assert_eq!(env.sender, "");
    assert_eq!(env.recipients[0].address, "alice@example.com");

    let out = parse(&queue, id, dir.path());
    let has = |needle: &str| assert!(out.contains(needle), "{needle:?} missing in:\n{out}");
    has("type multipart/report\n");
    has("report-type delivery-status\n");
    has("from Mail Delivery System <MAILER-DAEMON@example.com>\n");
    has("to alice@example.com\n");
    has("subject Undelivered Mail Returned to Sender\n");
    has("auto auto-replied\n");
    has("parts ['text/plain', 'message/delivery-status', 'message/rfc822']");
    has("<nosuchuser@example.com> (expanded from <nosuchuser>): unknown user:");
    has("'Reporting-MTA': 'dns; vm.example.com'");
    has(&format!("'X-Mailroom-Queue-ID': '{}'", q.envelope.id));
    has("'X-Mailroom-Sender': 'rfc822; alice@example.com'");
    has("'Arrival-Date': ");
    has("'Final-Recipient': 'rfc822; nosuchuser@example.com'");
    has("'Original-Recipient': 'rfc822;nosuchuser@example.com'");
    has("'Action': 'failed'");
    has("'Status': '5.1.1'");
    has("'Diagnostic-Code': 'X-Mailroom; unknown user: \"nosuchuser\"'");
    has("'Remote-MTA': 'dns; 127.0.0.1'");
    has("'Diagnostic-Code': 'smtp; 550 5.1.1 <bad@example.net>: no such user'");
    has("original-subject hello\n");
    has("original-body body line|From the start|");
}

#[test]
fn headers_only_when_asked_or_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::new(dir.path().join("q"));
    let mut q = queue_message(
        &queue,
        "alice@example.com",
        &[("bob", "bob@example.com")],
        ORIGINAL,
    );
    q.envelope.ret = "hdrs".into();
    let failed = vec![(
        q.envelope.recipients[0].clone(),
        Outcome::bounced("local", Dsn::UNKNOWN_USER, "unknown user: \"bob\""),
    )];
    let id = create_bounce(&queue, &settings(), &q.envelope, q.source(), &failed)
        .unwrap()
        .unwrap();
    let out = parse(&queue, id, dir.path());
    assert!(out.contains("'text/rfc822-headers'"), "{out}");
    assert!(out.contains("Subject: hello"), "{out}");
    assert!(!out.contains("body line"), "{out}");

    let mut small = settings();
    small.bounce_size_limit = 10;
    q.envelope.ret = String::new();
    let id = create_bounce(&queue, &small, &q.envelope, q.source(), &failed)
        .unwrap()
        .unwrap();
    assert!(parse(&queue, id, dir.path()).contains("'text/rfc822-headers'"));
}

#[test]
fn nobody_to_tell() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::new(dir.path().join("q"));
    let q = queue_message(&queue, "", &[("bob", "bob@example.com")], ORIGINAL);
    let failed = vec![(
        q.envelope.recipients[0].clone(),
        Outcome::bounced("local", Dsn::UNKNOWN_USER, "x"),
    )];
    assert_eq!(
        create_bounce(&queue, &settings(), &q.envelope, q.source(), &failed).unwrap(),
        None
    );
    let q = queue_message(
        &queue,
        "a@example.com",
        &[("bob", "bob@example.com")],
        ORIGINAL,
    );
    for notify in ["never", "success,delay"] {
        let mut rcpt = q.envelope.recipients[0].clone();
        rcpt.notify = notify.into();
        let failed = vec![(rcpt, Outcome::bounced("local", Dsn::UNKNOWN_USER, "x"))];
        assert_eq!(
            create_bounce(&queue, &settings(), &q.envelope, q.source(), &failed).unwrap(),
            None,
            "{notify}"
        );
    }
}

#[test]
fn the_original_cannot_fake_the_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::new(dir.path().join("q"));
    // Guess the boundary: the ID is known once queued, the epoch is now.
    let q = queue_message(
        &queue,
        "a@example.com",
        &[("bob", "bob@example.com")],
        b"x\n",
    );
    let epoch = Utc::now().timestamp();
    let mut evil = Vec::new();
    for e in epoch..epoch + 5 {
        evil.extend_from_slice(format!("--{}.{e}/vm.example.com--\n", q.envelope.id).as_bytes());
    }
    let mut env = q.envelope.clone();
    let mut file = NewQueueFile::create(&queue.maildrop().unwrap(), {
        env.recipients = q.envelope.recipients.clone();
        env.id = QueueId::generate();
        env.clone()
    })
    .unwrap();
    file.write_all(b"Subject: evil\n\n").unwrap();
    file.write_all(&evil).unwrap();
    let new_id = file.commit().unwrap();
    let q2 = crate::deliver::testutil::open_queued(&queue, new_id);
    let mut envelope = q2.envelope.clone();
    envelope.id = q.envelope.id; // the boundary is built from the original's ID
    let failed = vec![(
        envelope.recipients[0].clone(),
        Outcome::bounced("local", Dsn::UNKNOWN_USER, "x"),
    )];
    let id = create_bounce(&queue, &settings(), &envelope, q2.source(), &failed)
        .unwrap()
        .unwrap();
    let out = parse(&queue, id, dir.path());
    assert!(
        out.contains("parts ['text/plain', 'message/delivery-status', 'message/rfc822']"),
        "{out}"
    );
}

#[test]
fn long_reasons_fold_and_stay_ascii() {
    let text = format!(
        "Command output: {} \u{1b}[31m évil\nInjected: yes",
        "word ".repeat(40)
    );
    let folded = fold(&ascii(&format!("Diagnostic-Code: X-Mailroom; {text}")), 4);
    for line in folded.lines() {
        assert!(line.len() <= 78, "{line}");
        assert!(line.is_ascii());
    }
    assert!(!folded.contains("\nInjected"));
}
