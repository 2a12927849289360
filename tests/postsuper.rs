//! `postsuper` against queues built through the library: Postfix's messages and counts,
//! queue restriction, stdin IDs, locking, repair and purge.

mod common;
mod queue_world;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use common::require_tool;
use mailroom::queue::{QueueId, QueueName};
use queue_world::{Msg, World, file_names, put, stderr, stdout};

const POSTSUPER: &str = env!("CARGO_BIN_EXE_postsuper");
const MAILQ: &str = env!("CARGO_BIN_EXE_mailq");

fn postsuper(world: &World, args: &[&str]) -> (String, i32) {
    postsuper_in(world, args, "")
}

fn postsuper_in(world: &World, args: &[&str], stdin: &str) -> (String, i32) {
    let out = world.run(POSTSUPER, args, stdin);
    assert_eq!(stdout(&out), "", "postsuper writes only to stderr");
    (stderr(&out), out.status.code().unwrap_or(-1))
}

fn msg_in(world: &World, queue: QueueName) -> QueueId {
    put(
        world,
        &Msg {
            queue,
            ..Msg::default()
        },
    )
    .0
}

#[test]
fn delete_by_id_counts_and_logs() {
    let world = World::new();
    let a = msg_in(&world, QueueName::Deferred);
    let b = msg_in(&world, QueueName::Maildrop);
    let keep = msg_in(&world, QueueName::Hold);
    let (err, code) = postsuper(&world, &["-d", a.as_str(), "-d", b.as_str()]);
    assert_eq!(code, 0);
    assert_eq!(
        err,
        format!(
            "postsuper: {a}: removed\npostsuper: {b}: removed\npostsuper: Deleted: 2 messages\n"
        )
    );
    assert!(!world.exists(QueueName::Deferred, a));
    assert!(!world.exists(QueueName::Maildrop, b));
    assert!(
        world.exists(QueueName::Hold, keep),
        "a message not named is untouched"
    );
    let log = world.maillog();
    assert!(log.contains(" vm mailroom/postsuper["), "{log}");
    assert!(log.contains(&format!("]: {a}: removed\n")), "{log}");
    assert!(log.contains("]: Deleted: 2 messages\n"), "{log}");

    let (err, _) = postsuper(&world, &["-d", keep.as_str()]);
    assert_eq!(
        err,
        format!("postsuper: {keep}: removed\npostsuper: Deleted: 1 message\n")
    );
}

#[test]
fn unknown_and_malformed_ids() {
    let world = World::new();
    let keep = msg_in(&world, QueueName::Deferred);
    assert_eq!(
        postsuper(&world, &["-d", "AAAAAAAAAA"]),
        ("postsuper: Deleted: 0 messages\n".into(), 0)
    );
    for bad in ["bad/id", "../../etc", ".tmp.x", "AAAAAAAAA\u{1}"] {
        let (err, code) = postsuper(&world, &["-d", bad]);
        assert_eq!(code, 0);
        let shown = bad.replace('\u{1}', "?");
        assert_eq!(
            err,
            format!(
                "postsuper: warning: invalid mail queue id: {shown}\npostsuper: Deleted: 0 messages\n"
            )
        );
    }
    assert!(world.exists(QueueName::Deferred, keep));
}

#[test]
fn delete_all_and_by_queue() {
    let world = World::new();
    let d1 = msg_in(&world, QueueName::Deferred);
    msg_in(&world, QueueName::Deferred);
    let h = msg_in(&world, QueueName::Hold);
    let m = msg_in(&world, QueueName::Maildrop);
    assert_eq!(
        postsuper(&world, &["-d", "ALL", "deferred"]),
        ("postsuper: Deleted: 2 messages\n".into(), 0)
    );
    assert!(!world.exists(QueueName::Deferred, d1));
    assert!(world.exists(QueueName::Hold, h) && world.exists(QueueName::Maildrop, m));
    // No queue named: every queue, maildrop included.
    assert_eq!(
        postsuper(&world, &["-d", "ALL"]).0,
        "postsuper: Deleted: 2 messages\n"
    );
    assert_eq!(
        postsuper(&world, &["-d", "ALL"]).0,
        "postsuper: Deleted: 0 messages\n"
    );
    assert_eq!(
        queue_world::stdout(&world.run(MAILQ, &[], "")),
        "Mail queue is empty\n"
    );
}

#[test]
fn hold_and_release() {
    let world = World::new();
    let m = msg_in(&world, QueueName::Maildrop);
    let d = msg_in(&world, QueueName::Deferred);
    assert_eq!(
        postsuper(&world, &["-h", m.as_str()]).0,
        format!("postsuper: {m}: placed on hold\npostsuper: Placed on hold: 1 message\n")
    );
    assert!(world.exists(QueueName::Hold, m));
    // Already held: nothing to do.
    assert_eq!(
        postsuper(&world, &["-h", m.as_str()]).0,
        "postsuper: Placed on hold: 0 messages\n"
    );
    // A queue name limits where it looks.
    assert_eq!(
        postsuper(&world, &["-h", d.as_str(), "maildrop"]).0,
        "postsuper: Placed on hold: 0 messages\n"
    );
    assert_eq!(
        postsuper(&world, &["-h", "ALL"]).0,
        "postsuper: Placed on hold: 1 message\n"
    );
    assert!(world.exists(QueueName::Hold, d));
    assert_eq!(
        postsuper(&world, &["-H", d.as_str()]).0,
        format!("postsuper: {d}: released from hold\npostsuper: Released from hold: 1 message\n")
    );
    assert!(
        world.exists(QueueName::Deferred, d),
        "released mail goes to deferred"
    );
    assert_eq!(
        postsuper(&world, &["-H", "ALL"]).0,
        "postsuper: Released from hold: 1 message\n"
    );
    assert!(world.exists(QueueName::Deferred, m));
    // The benchmark's form: hold everything in maildrop.
    let n = msg_in(&world, QueueName::Maildrop);
    assert_eq!(
        postsuper(&world, &["-h", "ALL", "maildrop"]).0,
        "postsuper: Placed on hold: 1 message\n"
    );
    assert!(world.exists(QueueName::Hold, n));
    assert!(
        world.exists(QueueName::Deferred, m),
        "other queues untouched"
    );
    let log = world.maillog();
    assert!(
        log.contains(&format!("]: {d}: released from hold\n")),
        "{log}"
    );
}

#[test]
fn requeue_gives_a_new_id_in_maildrop() {
    let world = World::new();
    let d = msg_in(&world, QueueName::Deferred);
    let (err, code) = postsuper(&world, &["-r", d.as_str()]);
    assert_eq!(code, 0);
    assert_eq!(
        err,
        format!("postsuper: {d}: requeued\npostsuper: Requeued: 1 message\n")
    );
    assert!(!world.exists(QueueName::Deferred, d));
    let names = file_names(&world.queue.dir(QueueName::Maildrop));
    assert_eq!(names.len(), 1);
    let new = QueueId::parse(&names[0]).unwrap();
    assert!(new > d);
    let env = world.queue.read_envelope(QueueName::Maildrop, new).unwrap();
    assert_eq!(env.id, new, "the id record names the new file");
    assert_eq!(env.recipients[0].address, "alice@example.com");
    // ALL, from hold.
    msg_in(&world, QueueName::Hold);
    assert_eq!(
        postsuper(&world, &["-r", "ALL"]).0,
        "postsuper: Requeued: 1 message\n"
    );
    assert_eq!(file_names(&world.queue.dir(QueueName::Maildrop)).len(), 2);
    assert!(file_names(&world.queue.dir(QueueName::Hold)).is_empty());
}

#[test]
fn ids_from_stdin() {
    let world = World::new();
    let a = msg_in(&world, QueueName::Deferred);
    let b = msg_in(&world, QueueName::Deferred);
    let c = msg_in(&world, QueueName::Deferred);
    let input = format!("{a}\n\n  {b}  \nnot/valid\n");
    let (err, code) = postsuper_in(&world, &["-d", "-"], &input);
    assert_eq!(code, 0);
    assert_eq!(
        err,
        format!(
            "postsuper: {a}: removed\npostsuper: {b}: removed\n\
             postsuper: warning: invalid mail queue id: not/valid\npostsuper: Deleted: 2 messages\n"
        )
    );
    assert!(world.exists(QueueName::Deferred, c));
    let (err, _) = postsuper_in(&world, &["-h", "-"], &format!("{c}\n"));
    assert_eq!(
        err,
        format!("postsuper: {c}: placed on hold\npostsuper: Placed on hold: 1 message\n")
    );
}

#[test]
fn locked_files_are_left_alone() {
    let world = World::new();
    let busy = msg_in(&world, QueueName::Active);
    let other = msg_in(&world, QueueName::Active);
    let file = std::fs::File::open(world.path(QueueName::Active, busy)).unwrap();
    file.lock().unwrap();
    let (err, _) = postsuper(&world, &["-d", busy.as_str()]);
    assert_eq!(
        err,
        format!(
            "postsuper: warning: {busy}: being delivered; left alone\npostsuper: Deleted: 0 messages\n"
        )
    );
    let (err, _) = postsuper(&world, &["-h", "ALL"]);
    assert_eq!(
        err,
        "postsuper: warning: 1 message being delivered left alone\npostsuper: Placed on hold: 1 message\n"
    );
    assert!(world.exists(QueueName::Active, busy));
    assert!(world.exists(QueueName::Hold, other));
    // Unlock explicitly: a child forked by a concurrent test may briefly share this open
    // file description (until its exec closes it), and dropping our descriptor alone
    // would leave the lock held through that copy.
    file.unlock().unwrap();
    drop(file);
    assert_eq!(
        postsuper(&world, &["-d", "ALL"]).0,
        "postsuper: Deleted: 2 messages\n"
    );
}

#[test]
fn several_options_in_one_call() {
    let world = World::new();
    let a = msg_in(&world, QueueName::Deferred);
    let b = msg_in(&world, QueueName::Hold);
    let c = msg_in(&world, QueueName::Deferred);
    let (err, code) = postsuper(
        &world,
        &["-d", a.as_str(), "-H", b.as_str(), "-h", c.as_str()],
    );
    assert_eq!(code, 0);
    assert_eq!(
        err,
        format!(
            "postsuper: {a}: removed\npostsuper: {c}: placed on hold\npostsuper: {b}: released from hold\n\
             postsuper: Deleted: 1 message\npostsuper: Placed on hold: 1 message\n\
             postsuper: Released from hold: 1 message\n"
        )
    );
}

#[test]
fn usage_and_refusal() {
    let world = World::new();
    let (err, code) = postsuper(&world, &["-x"]);
    assert_eq!(code, 64);
    assert_eq!(
        err,
        format!(
            "postsuper: invalid option -- 'x'\npostsuper: fatal: {}\n",
            mailroom::postsuper::args::USAGE
        )
    );
    assert!(err.contains("fatal: usage: postsuper [-c config_dir] [-d queue_id (delete)]"));
    let (err, code) = postsuper(&world, &["-d", "ALL", "nosuchqueue"]);
    assert_eq!(
        (err.as_str(), code),
        (
            "postsuper: fatal: invalid directory name: nosuchqueue\n",
            64
        )
    );
    let (err, code) = postsuper(&world, &["-c", "/nonexistent", "-d", "ALL"]);
    assert_eq!(code, 78, "{err}");

    if !require_tool("setpriv") {
        return;
    }
    let keep = msg_in(&world, QueueName::Deferred);
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            POSTSUPER,
            "-d",
            "ALL",
        ])
        .env("MAIL_CONFIG", world.config_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(77));
    assert_eq!(
        stderr(&out),
        "postsuper: fatal: use of this command is reserved for the superuser\n"
    );
    assert!(world.exists(QueueName::Deferred, keep));
}

#[test]
fn purge_removes_only_stale_temporary_files() {
    let world = World::new();
    let keep = msg_in(&world, QueueName::Maildrop);
    let dir = world.queue.dir(QueueName::Maildrop);
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86400);
    // A dead writer: a child that has exited.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let live = std::process::id();
    let touch = |name: &str, when: SystemTime| {
        let f = std::fs::File::create(dir.join(name)).unwrap();
        f.set_modified(when).unwrap();
    };
    touch(&format!(".tmp.AAAAAAAAAA.{dead}"), hour_ago); // orphan: removed
    touch(&format!(".tmp.BBBBBBBBBB.{live}"), hour_ago); // writer alive: kept
    touch(&format!(".tmp.CCCCCCCCCC.{live}"), two_days_ago); // too old: removed
    touch(&format!(".tmp.DDDDDDDDDD.{dead}"), SystemTime::now()); // just written: kept
    touch("notes.txt", two_days_ago); // not a temporary file: not -p's business
    assert_eq!(postsuper(&world, &["-p"]), (String::new(), 0));
    let mut expected = vec![
        format!(".tmp.BBBBBBBBBB.{live}"),
        format!(".tmp.DDDDDDDDDD.{dead}"),
        keep.to_string(),
        "notes.txt".to_string(),
    ];
    expected.sort();
    assert_eq!(file_names(&dir), expected);
    assert!(world.maillog().contains(&format!(
        "removed temporary file maildrop/.tmp.AAAAAAAAAA.{dead}"
    )));
}

#[test]
fn structure_check_repairs_modes_and_moves_corrupt_files_aside() {
    let world = World::new();
    let good = msg_in(&world, QueueName::Deferred);
    let bad = QueueId::generate();
    std::fs::write(
        world.path(QueueName::Deferred, bad),
        b"not a queue file\n\n",
    )
    .unwrap();
    std::fs::write(world.queue.dir(QueueName::Hold).join("stray"), b"x").unwrap();
    let deferred = world.queue.dir(QueueName::Deferred);
    std::fs::set_permissions(&deferred, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_dir(world.queue.dir(QueueName::Incoming)).unwrap();

    // mailq lists around the corrupt file.
    let out = world.run(MAILQ, &[], "");
    assert!(stdout(&out).contains(&good.to_string()));
    assert!(stderr(&out).contains(&bad.to_string()));

    let (err, code) = postsuper(&world, &["-s"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("deferred: fixed mode 0755 to 0700"), "{err}");
    assert!(err.contains("incoming: created missing directory"), "{err}");
    assert!(
        err.contains(&format!("deferred/{bad}: corrupt queue file")),
        "{err}"
    );
    assert!(
        err.contains("hold/stray: not a queue file name; moved to corrupt/stray"),
        "{err}"
    );
    let mode = std::fs::metadata(&deferred).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700);
    assert!(world.queue.dir(QueueName::Incoming).is_dir());
    assert!(world.exists(QueueName::Corrupt, bad));
    assert!(!world.exists(QueueName::Deferred, bad));
    assert!(world.exists(QueueName::Deferred, good));
    assert!(
        world
            .maillog()
            .contains(&format!("deferred/{bad}: corrupt queue file"))
    );

    // Now sound: mailq is quiet, and a second check finds nothing.
    let out = world.run(MAILQ, &[], "");
    assert_eq!(stderr(&out), "");
    assert_eq!(postsuper(&world, &["-s"]), (String::new(), 0));
    // No option at all means -s -p, as in Postfix.
    assert_eq!(postsuper(&world, &[]), (String::new(), 0));
}

/// A message held straight out of maildrop/ was never checked by pickup (its uid record
/// is the submitter's word): released, it goes back through maildrop/, not to deferred/.
/// Messages of root's (picked up, or submitted by root) go to deferred/ as in Postfix.
#[test]
fn a_message_held_before_pickup_is_released_to_maildrop() {
    if !nix::unistd::geteuid().is_root() {
        return; // chown needs root
    }
    let world = World::new();
    let users = msg_in(&world, QueueName::Maildrop);
    nix::unistd::chown(
        &world.path(QueueName::Maildrop, users),
        Some(65534.into()),
        None,
    )
    .unwrap();
    let roots = msg_in(&world, QueueName::Maildrop);
    assert_eq!(postsuper(&world, &["-h", "ALL"]).1, 0);
    assert!(world.exists(QueueName::Hold, users) && world.exists(QueueName::Hold, roots));
    assert_eq!(postsuper(&world, &["-H", "ALL"]).1, 0);
    assert!(world.exists(QueueName::Maildrop, users));
    assert!(world.exists(QueueName::Deferred, roots));
}

/// A FIFO, a symbolic link and a directory named like queue IDs, in every queue: each
/// action, on ALL and by ID, finishes, acts on the real messages, and leaves the odd
/// entries alone with a warning (a FIFO is never opened for reading, a link never
/// followed); `-s` then moves them to `corrupt/`.
#[test]
fn fifos_symlinks_and_directories_are_skipped_then_moved_aside() {
    let limit = Duration::from_secs(10);
    let queues = [
        QueueName::Maildrop,
        QueueName::Incoming,
        QueueName::Deferred,
        QueueName::Hold,
    ];
    // (arguments, the real message's queue before, after; None = deleted)
    let table: [(&[&str], QueueName, Option<QueueName>); 4] = [
        (&["-h", "ALL"], QueueName::Deferred, Some(QueueName::Hold)),
        (&["-H", "ALL"], QueueName::Hold, Some(QueueName::Deferred)),
        (
            &["-r", "ALL"],
            QueueName::Deferred,
            Some(QueueName::Maildrop),
        ),
        (&["-d", "ALL"], QueueName::Deferred, None),
    ];
    for (args, from, to) in table {
        let world = World::new();
        let planted = queue_world::plant_odd_entries(&world, &queues);
        let real = msg_in(&world, from);
        let out = queue_world::run_at_most(&world, POSTSUPER, args, limit)
            .unwrap_or_else(|| panic!("postsuper {args:?} hung"));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.ends_with(": 1 message\n"), "{args:?}: {err}");
        match to {
            None => assert!(!world.exists(from, real), "{args:?}"),
            Some(QueueName::Maildrop) => {
                assert_eq!(file_names(&world.queue.dir(QueueName::Maildrop)).len(), 4)
            }
            Some(to) => assert!(world.exists(to, real), "{args:?}"),
        }
        // The action's own queues are scanned: every odd entry there gets a warning and
        // stays where it was.
        for (queue, kind, id) in &planted {
            let path = world.path(*queue, *id);
            assert!(
                path.symlink_metadata().is_ok(),
                "{args:?}: {}/{id} ({kind}) was acted on",
                queue.as_str()
            );
            let warned = err.contains(&format!(
                "warning: {}/{id}: not a regular file",
                queue.as_str()
            ));
            let scanned = match args[0] {
                "-H" => *queue == QueueName::Hold,
                "-r" => *queue != QueueName::Maildrop,
                "-h" => *queue != QueueName::Hold,
                _ => true,
            };
            assert_eq!(
                warned,
                scanned,
                "{args:?}: {}/{id} ({kind}):\n{err}",
                queue.as_str()
            );
        }
        assert!(world.tmp.path().join("outside-the-queue").exists());

        // By ID: the same, one at a time.
        for (queue, kind, id) in &planted {
            let out = queue_world::run_at_most(&world, POSTSUPER, &["-d", id.as_str()], limit)
                .unwrap_or_else(|| panic!("postsuper -d {id} ({kind}) hung"));
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(0), "{err}");
            assert!(
                err.contains(&format!(
                    "postsuper: warning: {}/{id}: not a regular file (",
                    queue.as_str()
                )),
                "{kind}: {err}"
            );
            assert!(err.ends_with("Deleted: 0 messages\n"), "{kind}: {err}");
        }

        // -s moves them all aside.
        let out = queue_world::run_at_most(&world, POSTSUPER, &["-s"], limit)
            .unwrap_or_else(|| panic!("postsuper -s hung"));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let corrupt = file_names(&world.queue.dir(QueueName::Corrupt));
        for (queue, kind, id) in &planted {
            assert!(
                corrupt.contains(&id.to_string()),
                "{}/{id} ({kind}) not moved",
                queue.as_str()
            );
        }
    }
}
