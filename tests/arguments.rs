//! Command-line arguments that are not UTF-8, for every program: refused with exit 64
//! (EX_USAGE) and `program: fatal: ...` naming the argument, never altered (a lossy
//! conversion would turn `caf\xe9@example.com` into another address) and never queued.

mod common;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use common::MailSystem;
use mailroom::queue::QueueName;

fn os(bytes: &[u8]) -> OsString {
    OsString::from_vec(bytes.to_vec())
}

/// Runs `program` with `args` against `sys`, with `$sendmail` (for `mail`) set to `fake`.
fn run(sys: &MailSystem, program: &str, args: &[OsString], fake: &Path) -> Output {
    common::feed(
        sys.command(program)
            .env("sendmail", fake)
            .env("HOME", sys.root())
            .args(args),
        b"Subject: hi\n\nbody\n",
    )
}

#[test]
fn every_program_refuses_an_argument_that_is_not_utf8() {
    let sys = MailSystem::new("");
    // `mail` hands its message to `$sendmail`: a script that leaves a mark if called.
    let marker = sys.root().join("sendmail-was-called");
    let fake = sys.root().join("fake-sendmail");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\ntouch '{}'\ncat >/dev/null\n", marker.display()),
    )
    .expect("write");
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let root = nix::unistd::geteuid().is_root();
    let latin1 = os(b"caf\xe9@example.com");
    let mut cases: Vec<(&str, &str, Vec<OsString>, &str)> = vec![
        (
            "sendmail",
            env!("CARGO_BIN_EXE_sendmail"),
            vec!["-odq".into(), latin1.clone()],
            "argument 2",
        ),
        (
            "sendmail",
            env!("CARGO_BIN_EXE_sendmail"),
            vec![os(b"-fj\xf6rg@example.com"), "root".into()],
            "argument 1",
        ),
        (
            "sendmail",
            env!("CARGO_BIN_EXE_sendmail"),
            vec!["-t".into(), "-F".into(), os(b"J\xf6rg")],
            "argument 3",
        ),
        (
            "mail",
            env!("CARGO_BIN_EXE_mail"),
            vec!["-s".into(), "hello".into(), latin1.clone()],
            "argument 3",
        ),
        (
            "mail",
            env!("CARGO_BIN_EXE_mail"),
            vec!["-s".into(), os(b"Gr\xfc\xdfe"), "root".into()],
            "argument 2",
        ),
        (
            "mailq",
            env!("CARGO_BIN_EXE_mailq"),
            vec!["-C".into(), os(b"/tmp/\xe9")],
            "argument 2",
        ),
        (
            "newaliases",
            env!("CARGO_BIN_EXE_newaliases"),
            vec!["-c".into(), os(b"/tmp/\xe9")],
            "argument 2",
        ),
        (
            "mailroom",
            env!("CARGO_BIN_EXE_mailroom"),
            vec!["config".into(), os(b"my\xe9name")],
            "argument 2",
        ),
    ];
    // postsuper settles who may run it first: for anyone but root that is 77.
    if root {
        cases.push((
            "postsuper",
            env!("CARGO_BIN_EXE_postsuper"),
            vec!["-d".into(), os(b"\xe9ABC")],
            "argument 2",
        ));
    }
    for (name, program, args, which) in &cases {
        let out = run(&sys, program, args, &fake);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(64), "{name} {args:?}: {err}");
        let prefix = format!("{name}: fatal: ");
        assert!(
            err.starts_with(&prefix) && err.contains("UTF-8") && err.contains(which),
            "{name} {args:?}: {err}"
        );
        // The bytes are shown escaped, not replaced.
        assert!(err.contains("\\x"), "{name} {args:?}: {err}");
        assert!(!err.contains('\u{fffd}'), "{name} {args:?}: {err}");
    }
    assert!(!marker.exists(), "mail called sendmail");
    for queue in [QueueName::Maildrop, QueueName::Incoming, QueueName::Hold] {
        assert!(sys.files_in(queue).is_empty(), "{queue:?}");
    }
}

/// A UTF-8 address that is not ASCII still goes through as it is (the refusal is of
/// malformed bytes, not of international addresses).
#[test]
fn a_utf8_recipient_is_queued_unchanged() {
    let sys = MailSystem::new("");
    let args = ["-odq".into(), "jörg@example.com".into()];
    let out = run(
        &sys,
        env!("CARGO_BIN_EXE_sendmail"),
        &args,
        Path::new("/bin/false"),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let messages = sys.messages(QueueName::Maildrop);
    assert_eq!(messages.len(), 1);
    let recipients: Vec<&str> = messages[0]
        .0
        .recipients
        .iter()
        .map(|r| r.original.as_str())
        .collect();
    assert_eq!(recipients, ["jörg@example.com"]);
}
