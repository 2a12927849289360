//! `mail` end to end: sending through a fake sendmail (a script that records its argv and
//! stdin) and through the real mailroom `sendmail -odq`, with the results read back by
//! Python's `email` package; reading a mailbox through a pseudo-terminal as a person
//! would, with the mailbox afterwards checked by Python's `mailbox` module.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{MailSystem, python};
use mailroom::queue::QueueName;

const MAIL: &str = env!("CARGO_BIN_EXE_mail");

/// A temporary home with a fake sendmail that saves its argv (one per line) and stdin,
/// one numbered pair of files per call, and exits with `$FAKE_EXIT` (default 0).
struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    fn new() -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake-sendmail");
        std::fs::write(
            &script,
            "#!/bin/sh\nd=$(dirname \"$0\")\nn=$(ls \"$d\" | grep -c '^argv')\n\
             printf '%s\\n' \"$@\" > \"$d/argv$n\"\ncat > \"$d/stdin$n\"\n\
             [ -n \"$FAKE_STDERR\" ] && echo \"$FAKE_STDERR\" >&2\nexit ${FAKE_EXIT:-0}\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Fake { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(MAIL);
        cmd.env("sendmail", self.path("fake-sendmail"))
            .env("HOME", self.dir.path())
            .env("USER", "tester")
            .env("TZ", "UTC")
            .env_remove("MAIL")
            .env_remove("MBOX")
            .env_remove("DEAD");
        cmd
    }

    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        run(&mut self.command(), args, stdin)
    }

    fn calls(&self) -> usize {
        (0..)
            .take_while(|n| self.path(&format!("argv{n}")).exists())
            .count()
    }

    fn argv(&self, n: usize) -> Vec<String> {
        let text = std::fs::read_to_string(self.path(&format!("argv{n}"))).unwrap();
        text.lines().map(str::to_string).collect()
    }

    fn stdin(&self, n: usize) -> Vec<u8> {
        std::fs::read(self.path(&format!("stdin{n}"))).unwrap()
    }
}

fn run(cmd: &mut Command, args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mail");
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Python's view of a message: headers we care about, then one line per MIME leaf with
/// its content type, file name and the SHA-256 of its decoded bytes.
const DESCRIBE: &str = r#"
import sys, email, email.policy, hashlib
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.default)
for h in ["From", "To", "Cc", "Bcc", "Subject", "MIME-Version", "In-Reply-To", "References"]:
    if m[h] is not None:
        print(f"{h}: {m[h]}")
for part in m.walk():
    if part.is_multipart():
        continue
    data = part.get_payload(decode=True)
    print(f"part {part.get_content_type()} {part.get_filename()} {hashlib.sha256(data).hexdigest()}")
    if part.get_content_maintype() == "text" and part.get_filename() is None:
        print("text " + part.get_content().replace("\n", "|"))
"#;

fn sha256(data: &[u8]) -> String {
    python(
        "import sys, hashlib; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())",
        data,
    )
    .trim()
    .to_string()
}

/// A `$sendmail` for `mail`: the real sendmail with `flag` (`-odi`, `-odq`) added.
fn sendmail_wrapper(sys: &MailSystem, flag: &str) -> std::path::PathBuf {
    let wrapper = sys.root().join(format!("sendmail{flag}"));
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec '{}' {flag} \"$@\"\n",
            env!("CARGO_BIN_EXE_sendmail")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

#[test]
fn seed_command_sends_through_sendmail() {
    let fake = Fake::new();
    let out = fake.run(&["-s", "test", "admin@example.com"], b"mail content\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fake.calls(), 1);
    assert_eq!(fake.argv(0), ["-i", "--", "admin@example.com"]);
    let described = python(DESCRIBE, &fake.stdin(0));
    assert!(described.contains("To: admin@example.com\n"), "{described}");
    assert!(described.contains("Subject: test\n"), "{described}");
    assert!(described.contains("MIME-Version: 1.0\n"), "{described}");
    assert!(described.contains("text mail content|\n"), "{described}");
    assert!(!described.contains("From:"), "{described}");
    assert!(out.stdout.is_empty());
}

#[test]
fn cc_bcc_from_and_options_after_recipients() {
    let fake = Fake::new();
    let out = fake.run(
        &[
            "alice@example.com",
            "-c",
            "carol@example.com, dave@example.com",
            "-b",
            "hidden@example.com",
            "-r",
            "Ops Team <ops@example.com>",
            "-s",
            "status",
        ],
        b"all good\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fake.argv(0),
        [
            "-i",
            "-f",
            "ops@example.com",
            "--",
            "alice@example.com",
            "carol@example.com",
            "dave@example.com",
            "hidden@example.com"
        ]
    );
    let message = fake.stdin(0);
    assert!(!String::from_utf8_lossy(&message).contains("hidden"));
    let described = python(DESCRIBE, &message);
    assert!(
        described.contains("Cc: carol@example.com, dave@example.com\n"),
        "{described}"
    );
    assert!(
        described.contains("From: Ops Team <ops@example.com>\n"),
        "{described}"
    );
    assert!(!described.contains("Bcc"), "{described}");
}

#[test]
fn utf8_subject_and_body_decode_back() {
    let fake = Fake::new();
    let subject = "Grüße aus Köln — 東京 ✓";
    let body = "Schöne Grüße\nzweite Zeile: 東京\n";
    let out = fake.run(&["-s", subject, "a@example.com"], body.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let message = fake.stdin(0);
    assert!(message.is_ascii(), "headers and body are MIME-encoded");
    let described = python(DESCRIBE, &message);
    assert!(
        described.contains(&format!("Subject: {subject}\n")),
        "{described}"
    );
    assert!(
        described.contains("text Schöne Grüße|zweite Zeile: 東京|\n"),
        "{described}"
    );
}

#[test]
fn attachments_arrive_byte_for_byte_with_their_types() {
    let fake = Fake::new();
    let binary: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let pdf = fake.path("report.pdf");
    std::fs::write(&pdf, &binary).unwrap();
    let text = "line one\nGrüße\nFrom the start of a line\n".as_bytes();
    let txt = fake.path("notes.txt");
    std::fs::write(&txt, text).unwrap();
    let png = fake.path("pixel.png");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\n\x00\x00").unwrap();
    let out = fake.run(
        &[
            "-s",
            "files",
            "-a",
            pdf.to_str().unwrap(),
            "-a",
            txt.to_str().unwrap(),
            "-A",
            png.to_str().unwrap(),
            "-a",
            "X-Ticket: 42",
            "b@example.com",
        ],
        b"see attached\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let message = fake.stdin(0);
    let described = python(DESCRIBE, &message);
    let parts: Vec<&str> = described
        .lines()
        .filter(|l| l.starts_with("part "))
        .collect();
    assert_eq!(parts.len(), 4, "{described}");
    assert!(parts[0].starts_with("part text/plain None "), "{described}");
    assert_eq!(
        parts[1],
        format!("part application/pdf report.pdf {}", sha256(&binary))
    );
    assert_eq!(
        parts[2],
        format!("part text/plain notes.txt {}", sha256(text))
    );
    assert_eq!(
        parts[3],
        format!(
            "part image/png pixel.png {}",
            sha256(b"\x89PNG\r\n\x1a\n\x00\x00")
        )
    );
    assert!(described.contains("text see attached|"), "{described}");
    let header = python(
        "import sys, email; print(email.message_from_bytes(sys.stdin.buffer.read())['X-Ticket'])",
        &message,
    );
    assert_eq!(header.trim(), "42");
}

/// A text attachment (and the typed text) with lines that start with "From " is sent
/// quoted-printable with the F encoded (`=46rom`), as s-nail and mutt send it: sent as it
/// is, an mbox delivery would quote the line to ">From " and the file would no longer
/// come back as it was. Delivered for real into a local mbox and read back by Python.
#[test]
fn from_lines_in_text_parts_survive_an_mbox() {
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name;
    let sys = MailSystem::new("");
    let wrapper = sendmail_wrapper(&sys, "-odi");
    // "From " at the start of a line, after a line break that quoted-printable inserts
    // to keep lines short (every position of it), and mid-line (left alone by mbox).
    let mut text = String::from("From the start\nplain\n>From already quoted\nnot From\n");
    for n in 60..80 {
        text.push_str(&format!("{}From here\n", "x".repeat(n)));
    }
    text.push_str("From the end");
    let notes = sys.root().join("notes.txt");
    std::fs::write(&notes, &text).unwrap();
    let typed = "Hello,\nFrom now on this is typed.\n";
    let mut cmd = Command::new(MAIL);
    cmd.env("MAIL_CONFIG", sys.config_dir())
        .env("sendmail", &wrapper)
        .env("HOME", sys.root())
        .env("TZ", "UTC");
    let out = run(
        &mut cmd,
        &["-s", "notes", "-a", notes.to_str().unwrap(), &user],
        typed.as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mbox = sys.root().join("spool").join(&user);
    let script = r#"
import sys, mailbox
box = mailbox.mbox(sys.argv[1], create=False)
[message] = list(box)
parts = [p for p in message.walk() if not p.is_multipart()]
sys.stdout.buffer.write(parts[1].get_payload(decode=True))
sys.stdout.buffer.write(b"\0")
sys.stdout.buffer.write(parts[0].get_payload(decode=True))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&mbox)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let decoded = String::from_utf8(out.stdout).unwrap();
    let (attachment, body) = decoded.split_once('\0').unwrap();
    assert_eq!(attachment, text);
    assert_eq!(body, typed);
    let raw = std::fs::read_to_string(&mbox).unwrap();
    assert!(raw.contains("\n=46rom the start\n"), "{raw}");
    assert_eq!(
        raw.lines().filter(|l| l.starts_with("From ")).count(),
        1,
        "only the envelope line: {raw}"
    );
}

#[test]
fn empty_body_with_e_sends_nothing() {
    let fake = Fake::new();
    let out = fake.run(&["-E", "-s", "nothing", "a@example.com"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fake.calls(), 0);
    // Without -E an empty message is still sent, as every mailx does.
    let out = fake.run(&["-s", "nothing", "a@example.com"], b"");
    assert!(out.status.success());
    assert_eq!(fake.calls(), 1);
}

#[test]
fn failing_sendmail_fails_mail_with_its_status_and_stderr() {
    let fake = Fake::new();
    let mut cmd = fake.command();
    cmd.env("FAKE_EXIT", "75")
        .env("FAKE_STDERR", "sendmail: fatal: queue file write error");
    let out = run(&mut cmd, &["-s", "x", "a@example.com"], b"body\n");
    assert_eq!(out.status.code(), Some(75));
    let err = stderr(&out);
    assert!(
        err.contains("sendmail: fatal: queue file write error"),
        "{err}"
    );
    assert!(err.contains("exited with status 75"), "{err}");
    // The message is kept, as mailx keeps it.
    let dead = std::fs::read_to_string(fake.path("dead.letter")).unwrap();
    assert!(dead.starts_with("From tester "), "{dead}");
    assert!(dead.contains("\nbody\n"), "{dead}");
}

#[test]
fn usage_errors() {
    let fake = Fake::new();
    let out = fake.run(&["-Q", "a@example.com"], b"");
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("mail: illegal option -- Q"));
    let out = fake.run(&["a@example.com", "-s"], b"");
    assert_eq!(out.status.code(), Some(64));
    let out = fake.run(&["-s", "x\nBcc: victim@example.com", "a@example.com"], b"x");
    assert_eq!(out.status.code(), Some(64));
    let out = fake.run(&["-a", "/nonexistent/file.pdf", "a@example.com"], b"x");
    assert_eq!(out.status.code(), Some(66));
    assert_eq!(fake.calls(), 0);
}

#[test]
fn through_the_real_sendmail_into_the_queue() {
    let sys = MailSystem::new("");
    let wrapper = sendmail_wrapper(&sys, "-odq");
    let attachment = sys.root().join("data.bin");
    std::fs::write(&attachment, b"\x00\x01\x02binary\xff").unwrap();
    let mut cmd = Command::new(MAIL);
    cmd.env("MAIL_CONFIG", sys.config_dir())
        .env("sendmail", &wrapper)
        .env("HOME", sys.root())
        .env("TZ", "UTC");
    let out = run(
        &mut cmd,
        &[
            "-s",
            "Grüße",
            "-b",
            "secret@example.com",
            "-c",
            "copy@example.com",
            "-a",
            attachment.to_str().unwrap(),
            "admin@example.com",
        ],
        b"mail content\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut messages = sys.messages(QueueName::Maildrop);
    assert_eq!(messages.len(), 1);
    let (envelope, message) = messages.remove(0);
    let recipients: Vec<&str> = envelope
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(
        recipients,
        [
            "admin@example.com",
            "copy@example.com",
            "secret@example.com"
        ]
    );
    assert!(!String::from_utf8_lossy(&message).contains("secret"));
    let described = python(DESCRIBE, &message);
    assert!(described.contains("Subject: Grüße\n"), "{described}");
    assert!(
        described.contains("From: "),
        "sendmail adds From: {described}"
    );
    assert!(
        described.contains(&format!(
            "part application/octet-stream data.bin {}",
            sha256(b"\x00\x01\x02binary\xff")
        )),
        "{described}"
    );
}

// ---- reading ---------------------------------------------------------------------------

const MBOX: &str = "From alice@example.com Tue Nov 24 10:00:00 2020\n\
From: Alice <alice@example.com>\nTo: tester@example.com\nCc: bob@example.com\n\
Subject: first\nMessage-ID: <one@example.com>\nDate: Tue, 24 Nov 2020 10:00:00 +0000\n\n\
Hello tester.\n>From the archives.\n\n\
From bob@example.com Tue Nov 24 11:00:00 2020\nFrom: bob@example.com\nSubject: second\n\n\
delete me\n\n\
From carol@example.com Tue Nov 24 12:00:00 2020\nFrom: carol@example.com\n\
Subject: =?utf-8?q?K=C3=B6ln?=\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\
Content-Transfer-Encoding: base64\n\nR3LDvMOfZSBhdXMgS8O2bG4K\n\n";

const LATE: &str = "From dave@example.com Tue Nov 24 13:00:00 2020\nFrom: dave@example.com\n\
Subject: arrived meanwhile\n\nlate mail\n\n";

/// Drives a program through a pseudo-terminal: `steps` is a JSON list of
/// `["send", text]`, `["expect", text]`, `["append", path, text]` (append to a file, as
/// a delivery would, under an fcntl lock), and `["eof"]`. Prints the transcript, then
/// `EXIT <status>`.
const PTY_DRIVER: &str = r#"
import fcntl, json, os, pty, select, sys, time
argv, env, steps = json.loads(sys.stdin.read())
pid, fd = pty.fork()
if pid == 0:
    os.execve(argv[0], argv, env)
buf = b""
transcript = b""
def read_more(deadline):
    global buf, transcript
    r, _, _ = select.select([fd], [], [], max(0, deadline - time.time()))
    if not r:
        return False
    try:
        data = os.read(fd, 65536)
    except OSError:
        return None
    if not data:
        return None
    buf += data
    transcript += data
    return True
for step in steps:
    if step[0] == "send":
        os.write(fd, step[1].encode())
    elif step[0] == "eof":
        os.write(fd, b"\x04")
    elif step[0] == "append":
        with open(step[1], "ab") as f:
            fcntl.lockf(f, fcntl.LOCK_EX)
            f.write(step[2].encode())
            f.flush()
            fcntl.lockf(f, fcntl.LOCK_UN)
    elif step[0] == "expect":
        want = step[1].encode()
        deadline = time.time() + 20
        while want not in buf:
            got = read_more(deadline)
            if not got:
                sys.stdout.write(transcript.decode("utf-8", "replace"))
                sys.stdout.write("\nTIMEOUT waiting for %r\n" % step[1])
                sys.exit(0)
        buf = buf[buf.index(want) + len(want):]
deadline = time.time() + 20
while read_more(deadline):
    pass
_, status = os.waitpid(pid, 0)
sys.stdout.write(transcript.decode("utf-8", "replace").replace("\r\n", "\n"))
sys.stdout.write("\nEXIT %d\n" % os.waitstatus_to_exitcode(status))
"#;

fn drive(fake: &Fake, mailbox: &Path, args: &[&str], steps: serde_json::Value) -> String {
    let mut argv = vec![MAIL.to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let env = serde_json::json!({
        "sendmail": fake.path("fake-sendmail"),
        "HOME": fake.dir.path(),
        "USER": "tester",
        "MAIL": mailbox,
        "TZ": "UTC",
        "PATH": std::env::var("PATH").unwrap_or_default(),
        "TERM": "dumb",
    });
    let input = serde_json::json!([argv, env, steps]).to_string();
    python(PTY_DRIVER, input.as_bytes())
}

/// Python's `mailbox` module's view of an mbox: one line per message.
fn mbox_summary(path: &Path) -> String {
    python(
        "import mailbox, sys\n\
         for m in mailbox.mbox(sys.argv[1] if len(sys.argv) > 1 else sys.stdin.readline().strip()):\n    \
         print(m['Subject'], '|', m.get('Status'), '|', m.get_payload().replace('\\n', '/'))",
        format!("{}\n", path.display()).as_bytes(),
    )
}

#[test]
fn reading_listing_printing_deleting_saving_replying_and_quitting() {
    let fake = Fake::new();
    let mailbox = fake.path("tester");
    std::fs::write(&mailbox, MBOX).unwrap();
    let saved = fake.path("saved.mbox");
    let steps = serde_json::json!([
        ["expect", "& "],
        ["send", "p 1\n"],
        ["expect", "& "],
        ["send", "3\n"],
        ["expect", "& "],
        ["append", mailbox, LATE],
        ["send", "d 2\n"],
        ["expect", "& "],
        ["send", format!("s 3 {}\n", saved.display())],
        ["expect", "[New file]"],
        ["expect", "& "],
        ["send", "r 1\n"],
        ["expect", "Subject: Re: first"],
        ["send", "Thanks, Alice.\n.\n"],
        ["expect", "EOT"],
        ["expect", "& "],
        ["send", "R 1\n"],
        ["expect", "Subject: Re: first"],
        ["send", "To all.\n"],
        ["eof"],
        ["expect", "EOT"],
        ["expect", "& "],
        ["send", "h\n"],
        ["expect", "& "],
        ["send", "q\n"],
        ["expect", "Held"]
    ]);
    let transcript = drive(&fake, &mailbox, &[], steps);
    assert!(!transcript.contains("TIMEOUT"), "{transcript}");
    assert!(transcript.ends_with("EXIT 0\n"), "{transcript}");
    // The summary, as bsd-mailx lays it out.
    assert!(transcript.contains("3 messages 3 new"), "{transcript}");
    assert!(
        transcript.contains(">N  1 alice@example.com     Tue Nov 24 10:00"),
        "{transcript}"
    );
    assert!(
        transcript.contains(" N  3 carol@example.com"),
        "{transcript}"
    );
    assert!(transcript.contains("Köln"), "{transcript}");
    // Printing decodes and unquotes.
    assert!(transcript.contains("Message 1:"), "{transcript}");
    assert!(
        transcript.contains("Hello tester.\nFrom the archives."),
        "{transcript}"
    );
    assert!(
        transcript.contains("Grüße aus Köln"),
        "base64 body decoded: {transcript}"
    );
    // After the deletion, the header list no longer shows message 2.
    let after_h = transcript.rsplit("h\n").next().unwrap();
    assert!(!after_h.contains("second"), "{after_h}");
    assert!(transcript.contains("Held 2 messages in"), "{transcript}");

    // The mailbox: 1 and 3 kept and marked read, 2 gone, the late mail kept untouched.
    let summary = mbox_summary(&mailbox);
    let lines: Vec<&str> = summary.lines().collect();
    assert_eq!(lines.len(), 3, "{summary}");
    assert!(
        lines[0].starts_with("first | RO | Hello tester./>From the archives./"),
        "{summary}"
    );
    assert!(
        lines[1].starts_with("=?utf-8?q?K=C3=B6ln?= | RO |"),
        "{summary}"
    );
    assert_eq!(lines[2], "arrived meanwhile | None | late mail/");

    // The saved copy is an mbox of message 3.
    let saved_summary = mbox_summary(&saved);
    assert_eq!(saved_summary.lines().count(), 1, "{saved_summary}");
    assert!(
        saved_summary.starts_with("=?utf-8?q?K=C3=B6ln?="),
        "{saved_summary}"
    );

    // Two replies went out through sendmail.
    assert_eq!(fake.calls(), 2);
    assert_eq!(fake.argv(0), ["-i", "--", "alice@example.com"]);
    let reply = python(DESCRIBE, &fake.stdin(0));
    assert!(reply.contains("To: alice@example.com\n"), "{reply}");
    assert!(reply.contains("Subject: Re: first\n"), "{reply}");
    assert!(
        reply.contains("In-Reply-To: <one@example.com>\n"),
        "{reply}"
    );
    assert!(reply.contains("References: <one@example.com>\n"), "{reply}");
    assert!(reply.contains("text Thanks, Alice.|"), "{reply}");
    assert_eq!(
        fake.argv(1),
        ["-i", "--", "alice@example.com", "bob@example.com"],
        "reply to all leaves out the user's own address"
    );
    assert!(python(DESCRIBE, &fake.stdin(1)).contains("text To all.|"));
}

#[test]
fn exit_leaves_the_mailbox_unchanged_and_quit_then_marks_old() {
    let fake = Fake::new();
    let mailbox = fake.path("tester");
    std::fs::write(&mailbox, MBOX).unwrap();
    let steps = serde_json::json!([
        ["expect", "& "],
        ["send", "d *\n"],
        ["expect", "& "],
        ["send", "x\n"]
    ]);
    let transcript = drive(&fake, &mailbox, &[], steps);
    assert!(transcript.ends_with("EXIT 0\n"), "{transcript}");
    assert_eq!(std::fs::read_to_string(&mailbox).unwrap(), MBOX);

    // Quitting without reading marks everything seen (U next time), nothing read.
    let steps = serde_json::json!([["expect", "& "], ["send", "q\n"]]);
    drive(&fake, &mailbox, &[], steps);
    let summary = mbox_summary(&mailbox);
    assert_eq!(summary.matches("| O |").count(), 3, "{summary}");
    let out = run(fake.command().env("MAIL", &mailbox), &["-H"], b"");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("3 messages 3 unread"), "{listing}");
    assert!(listing.contains(" U  2 bob@example.com"), "{listing}");
}

#[test]
fn check_and_header_modes_without_a_terminal() {
    let fake = Fake::new();
    let mailbox = fake.path("tester");
    let check = |fake: &Fake| {
        run(fake.command().env("MAIL", &mailbox), &["-e"], b"")
            .status
            .code()
    };
    assert_eq!(check(&fake), Some(1), "no mailbox: no mail");
    std::fs::write(&mailbox, "").unwrap();
    assert_eq!(check(&fake), Some(1));
    let out = run(fake.command().env("MAIL", &mailbox), &[], b"");
    assert!(String::from_utf8_lossy(&out.stdout).contains("No mail for tester"));
    std::fs::write(&mailbox, MBOX).unwrap();
    assert_eq!(check(&fake), Some(0));
    let out = run(fake.command().env("MAIL", &mailbox), &["-H"], b"");
    assert!(out.status.success());
    let listing = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listing.lines().count(), 4, "{listing}");
    // -f with a file, commands from a pipe.
    let out = run(
        &mut fake.command(),
        &["-f", mailbox.to_str().unwrap()],
        b"p 2\nd 2\nq\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("delete me"));
    assert_eq!(mbox_summary(&mailbox).lines().count(), 2);
}

#[test]
fn garbage_mailboxes_do_not_crash_the_reader() {
    let fake = Fake::new();
    let mailbox = fake.path("tester");
    let mut junk: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    junk.extend_from_slice(b"\n\nFrom \n\nFrom x\nSubject: \x1b[2J\n\n\xff\xfe\nFrom");
    std::fs::write(&mailbox, &junk).unwrap();
    let out = run(
        fake.command().env("MAIL", &mailbox),
        &[],
        b"h\np *\nf *\nr\nn\nn\nd 1\nx\n",
    );
    assert!(out.status.code().is_some(), "no crash by signal");
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert!(
        !out.stdout.contains(&0x1b),
        "no escape sequences reach the terminal"
    );
    assert_eq!(std::fs::read(&mailbox).unwrap(), junk);
}

#[test]
fn maildir_is_read_and_marked() {
    let fake = Fake::new();
    let maildir = fake.path("Maildir");
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    std::fs::write(
        maildir.join("new/1.a.host"),
        "From: a@x\nSubject: maildir one\n\nbody\n",
    )
    .unwrap();
    std::fs::write(
        maildir.join("new/2.b.host"),
        "From: b@x\nSubject: maildir two\n\nbody\n",
    )
    .unwrap();
    let out = run(
        &mut fake.command(),
        &["-f", maildir.to_str().unwrap()],
        b"p 1\nd 2\nq\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<String> = std::fs::read_dir(maildir.join("cur"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["1.a.host:2,S"]);
    assert_eq!(std::fs::read_dir(maildir.join("new")).unwrap().count(), 0);
}

#[test]
fn sending_from_a_terminal_asks_for_the_subject_and_ends_at_a_dot() {
    let fake = Fake::new();
    let steps = serde_json::json!([
        ["expect", "Subject: "],
        ["send", "typed subject\n"],
        ["send", "first line\n.\n"],
        ["expect", "EOT"]
    ]);
    let transcript = drive(&fake, &fake.path("unused"), &["someone@example.com"], steps);
    assert!(transcript.ends_with("EXIT 0\n"), "{transcript}");
    assert_eq!(fake.calls(), 1);
    let described = python(DESCRIBE, &fake.stdin(0));
    assert!(
        described.contains("Subject: typed subject\n"),
        "{described}"
    );
    assert!(described.contains("text first line|\n"), "{described}");
}
