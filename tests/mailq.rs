//! `mailq` against queues built through the library: Postfix's layout byte for byte.

mod common;
mod queue_world;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::require_tool;
use mailroom::queue::QueueName;
use queue_world::{Msg, World, put, stderr, stdout};

const MAILQ: &str = env!("CARGO_BIN_EXE_mailq");
const HEAD: &str = "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n";
const INDENT: &str = "                                         ";

fn mailq(world: &World, args: &[&str]) -> (String, String, i32) {
    let out = world.run(MAILQ, args, "");
    (stdout(&out), stderr(&out), out.status.code().unwrap_or(-1))
}

#[test]
fn empty_queue() {
    let world = World::new();
    assert_eq!(
        mailq(&world, &[]),
        ("Mail queue is empty\n".into(), String::new(), 0)
    );
    // Even with no queue directories at all.
    std::fs::remove_dir_all(world.queue.root()).unwrap();
    assert_eq!(mailq(&world, &[]).0, "Mail queue is empty\n");
    assert_eq!(mailq(&world, &["-j"]).0, "");
}

#[test]
fn one_message() {
    let world = World::new();
    let (id, size) = put(&world, &Msg::default());
    let expected = format!(
        "{HEAD}{id}  {size:>7} Tue Nov 24 22:56:57  root@vm.example.com\n\
         {INDENT}alice@example.com\n\n-- 0 Kbytes in 1 Request.\n"
    );
    assert_eq!(mailq(&world, &[]), (expected, String::new(), 0));
}

#[test]
fn several_recipients_held_and_null_sender() {
    let world = World::new();
    let (a, sa) = put(
        &world,
        &Msg {
            rcpts: &[
                ("alice@example.com", ""),
                ("bob@example.com", ""),
                ("carol@x", ""),
            ],
            queue: QueueName::Deferred,
            ..Msg::default()
        },
    );
    let (b, sb) = put(
        &world,
        &Msg {
            sender: "",
            queue: QueueName::Hold,
            ..Msg::default()
        },
    );
    let (c, sc) = put(
        &world,
        &Msg {
            queue: QueueName::Active,
            ..Msg::default()
        },
    );
    let expected = format!(
        "{HEAD}\
         {a}  {sa:>7} Tue Nov 24 22:56:57  root@vm.example.com\n\
         {INDENT}alice@example.com\n{INDENT}bob@example.com\n{INDENT}carol@x\n\n\
         {b}! {sb:>7} Tue Nov 24 22:56:57  MAILER-DAEMON\n\
         {INDENT}alice@example.com\n\n\
         {c}* {sc:>7} Tue Nov 24 22:56:57  root@vm.example.com\n\
         {INDENT}alice@example.com\n\n\
         -- 0 Kbytes in 3 Requests.\n"
    );
    assert_eq!(mailq(&world, &[]).0, expected);
}

#[test]
fn deferral_reasons_short_and_long() {
    let world = World::new();
    let short = "connect to 127.0.0.1[127.0.0.1]:2: Connection refused";
    let long = "host mx.example.net[192.0.2.1] said: 451 4.7.1 Greylisted, please try again in 300 seconds (in reply to RCPT TO command)";
    assert!(long.len() > 76);
    let (id, size) = put(
        &world,
        &Msg {
            queue: QueueName::Deferred,
            rcpts: &[
                ("someone@example.com", short),
                ("other@example.net", short),
                ("third@example.org", long),
            ],
            ..Msg::default()
        },
    );
    let pad = " ".repeat(76 - short.len());
    let expected = format!(
        "{HEAD}{id}  {size:>7} Tue Nov 24 22:56:57  root@vm.example.com\n\
         {pad}({short})\n{INDENT}someone@example.com\n{INDENT}other@example.net\n\
         ({long})\n{INDENT}third@example.org\n\n-- 0 Kbytes in 1 Request.\n"
    );
    assert_eq!(mailq(&world, &[]).0, expected);
}

#[test]
fn long_sender_and_kbytes_summary() {
    let world = World::new();
    let sender = format!("{}@{}.example.com", "a".repeat(60), "b".repeat(40));
    let body = format!("Subject: big\n\n{}\n", "x".repeat(3000));
    let (a, sa) = put(
        &world,
        &Msg {
            sender: &sender,
            body: &body,
            ..Msg::default()
        },
    );
    let (b, sb) = put(
        &world,
        &Msg {
            body: &body,
            ..Msg::default()
        },
    );
    let expected = format!(
        "{HEAD}{a}  {sa:>7} Tue Nov 24 22:56:57  {sender}\n{INDENT}alice@example.com\n\n\
         {b}  {sb:>7} Tue Nov 24 22:56:57  root@vm.example.com\n{INDENT}alice@example.com\n\n\
         -- {} Kbytes in 2 Requests.\n",
        (sa + sb) / 1024
    );
    assert_eq!((sa + sb) / 1024, 5);
    assert_eq!(mailq(&world, &[]).0, expected);
}

#[test]
fn json_lines() {
    let world = World::new();
    let (a, sa) = put(
        &world,
        &Msg {
            queue: QueueName::Deferred,
            rcpts: &[("x@y", "timed out"), ("z@y", "")],
            ..Msg::default()
        },
    );
    let (b, _) = put(
        &world,
        &Msg {
            sender: "",
            queue: QueueName::Hold,
            ..Msg::default()
        },
    );
    let (out, err, code) = mailq(&world, &["--json"]);
    assert_eq!((err.as_str(), code), ("", 0));
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0],
        serde_json::json!({
            "queue_name": "deferred", "queue_id": a.to_string(), "arrival_time": 1795561017u64,
            "message_size": sa, "forced_expire": false, "sender": "root@vm.example.com",
            "recipients": [{"address": "x@y", "delay_reason": "timed out"}, {"address": "z@y"}]
        })
    );
    assert_eq!(lines[1]["queue_name"], "hold");
    assert_eq!(lines[1]["queue_id"], b.to_string());
    assert_eq!(lines[1]["sender"], "MAILER-DAEMON");
    assert_eq!(mailq(&world, &["-j"]).0, out);
}

#[test]
fn closed_pipe_ends_quietly() {
    let world = World::new();
    // One message with enough recipients to overflow the pipe after `head -1` has gone.
    let rcpts: Vec<String> = (0..5000).map(|i| format!("user{i}@example.com")).collect();
    let pairs: Vec<(&str, &str)> = rcpts.iter().map(|r| (r.as_str(), "")).collect();
    put(
        &world,
        &Msg {
            rcpts: &pairs,
            ..Msg::default()
        },
    );
    let mut child = world
        .command(MAILQ)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is dropped here: the pipe is closed.
    assert_eq!(first, HEAD);
    let out = child.wait_with_output().unwrap();
    assert_eq!(stderr(&out), "");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn corrupt_file_is_reported_and_skipped() {
    let world = World::new();
    let (good, _) = put(&world, &Msg::default());
    let bad = mailroom::queue::QueueId::generate();
    std::fs::write(world.path(QueueName::Deferred, bad), b"garbage\n\n").unwrap();
    let (out, err, code) = mailq(&world, &[]);
    assert_eq!(code, 0);
    assert!(out.contains(&good.to_string()));
    assert!(out.ends_with("-- 0 Kbytes in 1 Request.\n"), "{out}");
    assert!(
        err.starts_with(&format!(
            "mailq: warning: deferred/{bad}: corrupt queue file"
        )),
        "{err}"
    );
}

/// A FIFO used to block mailq for good (the open waited for a writer); a symbolic link
/// must not be followed; a directory is no message. Each is skipped with a warning, in
/// every queue mailq reads, and the listing finishes.
#[test]
fn fifos_symlinks_and_directories_are_skipped_with_a_warning() {
    let world = World::new();
    let queues = [
        QueueName::Maildrop,
        QueueName::Incoming,
        QueueName::Deferred,
        QueueName::Hold,
    ];
    let planted = queue_world::plant_odd_entries(&world, &queues);
    let (good, _) = put(&world, &Msg::default());
    for args in [&[][..], &["-j"][..]] {
        let out = queue_world::run_at_most(&world, MAILQ, args, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("mailq {args:?} hung"));
        let (text, err) = (stdout(&out), stderr(&out));
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(text.contains(&good.to_string()), "{text}");
        assert!(
            !text.contains("target-of-a-link"),
            "followed a link: {text}"
        );
        if args.is_empty() {
            assert!(text.ends_with("-- 0 Kbytes in 1 Request.\n"), "{text}");
        } else {
            assert_eq!(text.lines().count(), 1, "{text}");
        }
        for (queue, kind, id) in &planted {
            let what = match *kind {
                "fifo" => "a FIFO",
                "symlink" => "a symbolic link",
                _ => "a directory",
            };
            let line = format!(
                "mailq: warning: {}/{id}: not a regular file ({what}), skipped\n",
                queue.as_str()
            );
            assert!(err.contains(&line), "missing {line:?} in\n{err}");
        }
        assert_eq!(err.lines().count(), planted.len(), "{err}");
    }
}

#[test]
fn authorized_mailq_users_refuses_others() {
    if !require_tool("setpriv") {
        return;
    }
    let world = World::with_config("authorized_mailq_users = root, alice");
    put(&world, &Msg::default());
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", MAILQ])
        .env("MAIL_CONFIG", world.config_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "mailq: fatal: User nobody(65534) is not allowed to view the mail queue\n"
    );
    assert_eq!(stdout(&out), "");
    // Root always may.
    assert_eq!(mailq(&world, &[]).2, 0);
}
