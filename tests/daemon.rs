//! The delivery daemon and sendmail's delivery modes, driven through the real `sendmail`
//! binary against a private configuration (queue, spool and log in a temporary directory).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::require_tool;
use common::smtp_server::{Aiosmtpd, SlowSink, free_port};

const SENDMAIL: &str = env!("CARGO_BIN_EXE_sendmail");
const MAILROOM: &str = env!("CARGO_BIN_EXE_mailroom");

struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        World::with("")
    }

    fn with(extra: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("config")).unwrap();
        std::fs::create_dir_all(root.join("spool")).unwrap();
        let cf = format!(
            "myhostname = test.localdomain\nmydestination = $myhostname, localhost\n\
             queue_directory = {q}\nmail_spool_directory = {s}\nmaillog_file = {l}\n\
             alias_maps =\nsmtpd_port =\n\
             relayhost = [127.0.0.1]:9\nsmtp_connect_timeout = 5s\n{owner}{extra}\n",
            owner = common::privilege_separation(root),
            q = root.join("queue").display(),
            s = root.join("spool").display(),
            l = root.join("maillog").display(),
        );
        std::fs::write(root.join("config/main.cf"), cf).unwrap();
        World { dir }
    }

    /// The alias `failing`, a command that exits 1, in an alias table the world uses.
    fn add_failing_alias(&self) {
        std::fs::write(
            self.path("config/aliases"),
            "failing: \"|echo no such thing >&2; exit 1\"\n",
        )
        .unwrap();
        let cf = std::fs::read_to_string(self.path("config/main.cf"))
            .unwrap()
            .replace(
                "alias_maps =\n",
                &format!(
                    "alias_maps = cdb:{}\n",
                    self.path("config/aliases").display()
                ),
            );
        std::fs::write(self.path("config/main.cf"), cf).unwrap();
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(SENDMAIL);
        cmd.args(args).env("MAIL_CONFIG", self.path("config"));
        cmd
    }

    fn send(&self, args: &[&str], body: &str) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn daemon(&self) -> Daemon {
        let child = self
            .cmd(&["-bD"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.wait_for(
            || self.path("queue/pid/master.pid").exists(),
            "daemon start",
        );
        Daemon(Some(child))
    }

    fn wait_for(&self, mut cond: impl FnMut() -> bool, what: &str) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "timed out waiting for {what}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until root's mailbox holds `messages` and the queue is empty, and checks that
    /// this came less than `limit` after `since`.
    fn delivered_within(&self, messages: usize, since: Instant, limit: Duration) {
        self.wait_for(
            || self.messages("root") == messages && self.queue_empty(),
            "delivery",
        );
        assert!(
            since.elapsed() < limit,
            "delivered after {:?}",
            since.elapsed()
        );
    }

    fn mbox(&self, user: &str) -> String {
        std::fs::read_to_string(self.path("spool").join(user)).unwrap_or_default()
    }

    fn messages(&self, user: &str) -> usize {
        self.mbox(user)
            .lines()
            .filter(|l| l.starts_with("From "))
            .count()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("maillog")).unwrap_or_default()
    }

    fn queued(&self, queue: &str) -> Vec<String> {
        match std::fs::read_dir(self.path("queue").join(queue)) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn queue_empty(&self) -> bool {
        ["maildrop", "incoming", "active", "deferred"]
            .iter()
            .all(|q| self.queued(q).is_empty())
    }
}

/// A daemon started by a test; killed if the test fails before stopping it, so that no
/// daemon outlives its test.
struct Daemon(Option<Child>);

impl Daemon {
    fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn stop(mut daemon: Daemon) -> std::process::ExitStatus {
    let Some(mut child) = daemon.0.take() else {
        panic!("daemon already stopped");
    };
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    child.wait().unwrap()
}

fn body(n: usize) -> String {
    format!("Subject: test {n}\n\nmessage number {n}\nFrom the middle\n")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn two_daemons_cannot_share_a_queue() {
    let w = World::new();
    let first = w.daemon();
    let second = w.cmd(&["-bD"]).output().unwrap();
    assert_eq!(second.status.code(), Some(75), "{}", stderr(&second));
    assert!(
        stderr(&second).contains(&format!(
            "fatal: the mail system is already running (pid {})",
            first.id()
        )),
        "{}",
        stderr(&second)
    );
    assert!(stop(first).success());
    assert!(w.log().contains("terminating on signal 15"));
    assert!(!w.path("queue/pid/master.pid").exists());
}

#[test]
fn bd_detaches_and_refuses_a_second() {
    let w = World::new();
    let out = w.cmd(&["-bd", "-q1m"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let pid: i32 = std::fs::read_to_string(w.path("queue/pid/master.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let again = w.cmd(&["-bd"]).output().unwrap();
    assert_eq!(again.status.code(), Some(75));
    assert!(
        stderr(&again).contains("already running"),
        "{}",
        stderr(&again)
    );
    // The detached daemon delivers.
    assert!(w.send(&["-i", "root"], &body(1)).status.success());
    w.wait_for(|| w.messages("root") == 1, "delivery by the -bd daemon");
    let pid = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    w.wait_for(|| !w.path("queue/pid/master.pid").exists(), "daemon exit");
}

/// The program behind process `pid` and its arguments, from /proc.
fn program_of(pid: u32) -> (PathBuf, Vec<String>) {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (exe, args)
}

/// The set-gid sendmail carries no daemon: `-bD` and `-bd` hand over to `mailroom`, so
/// the process that runs the daemon is the mailroom binary (and -q30m's interval went
/// along).
#[test]
fn the_daemon_sendmail_starts_is_mailroom() {
    let mailroom = std::fs::canonicalize(MAILROOM).unwrap();
    let w = World::new();
    let d = w.daemon();
    let (exe, args) = program_of(d.id());
    assert_eq!(exe, mailroom, "sendmail -bD: {args:?}");
    assert!(args.iter().any(|a| a == "daemon"), "{args:?}");
    assert!(stop(d).success());

    let out = w.cmd(&["-bd", "-q30m"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let pid: u32 = std::fs::read_to_string(w.path("queue/pid/master.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (exe, args) = program_of(pid);
    assert_eq!(exe, mailroom, "sendmail -bd: {args:?}");
    assert!(args.iter().any(|a| a == "--interval=30m"), "{args:?}");
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    w.wait_for(|| !w.path("queue/pid/master.pid").exists(), "daemon exit");
}

/// `mailroom deliver ID` delivers that message and leaves the others; an ID the queue
/// does not hold is a fatal error (66) that delivers nothing.
#[test]
fn mailroom_deliver_delivers_the_messages_named() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: mailroom deliver is root's");
        return;
    }
    let w = World::new();
    for n in 0..2 {
        assert!(w.send(&["-odq", "-i", "root"], &body(n)).status.success());
    }
    let mut ids = w.queued("maildrop");
    ids.sort();
    assert_eq!(ids.len(), 2);
    let mailroom = |args: &[&str]| {
        Command::new(MAILROOM)
            .args(args)
            .env("MAIL_CONFIG", w.path("config"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };

    let out = mailroom(&["deliver", &ids[0], "0000000000"]);
    assert_eq!(out.status.code(), Some(66), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "mailroom: fatal: 0000000000: no such message in the queue\n"
    );
    assert_eq!(w.messages("root"), 0, "nothing delivered");

    // sendmail -odi's handover delivers only the file it is handed, locked, on stdin.
    let out = mailroom(&["deliver", "--queued-on-stdin", &ids[0]]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "mailroom: fatal: standard input is not the queue file maildrop/{}\n",
            ids[0]
        )
    );
    assert_eq!(w.messages("root"), 0, "nothing delivered");

    let first = std::fs::read_to_string(w.path("queue/maildrop").join(&ids[0])).unwrap();
    let subject = ["Subject: test 0\n", "Subject: test 1\n"]
        .into_iter()
        .find(|s| first.contains(s))
        .unwrap();
    let out = mailroom(&["deliver", &ids[0]]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(w.messages("root"), 1);
    assert!(w.mbox("root").contains(subject));
    assert_eq!(w.queued("maildrop"), vec![ids[1].clone()]);

    let out = mailroom(&["deliver"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(w.messages("root"), 2);
    assert!(w.queue_empty());
}

#[test]
fn daemon_delivers_new_mail_at_once_and_logs_like_postfix() {
    let w = World::new();
    let d = w.daemon();
    let started = Instant::now();
    let out = w.send(&["-i", "root"], &body(1));
    assert!(out.status.success(), "{}", stderr(&out));
    w.wait_for(|| w.messages("root") == 1 && w.queue_empty(), "delivery");
    // inotify, not the 10-second scan.
    assert!(started.elapsed() < Duration::from_secs(3));
    let mbox = w.mbox("root");
    assert!(mbox.contains("\n>From the middle\n"), "{mbox}");
    assert!(mbox.contains("X-Original-To: root\n"));
    assert!(stop(d).success());
    let log = w.log();
    for needle in [
        "mailroom/pickup[",
        ": uid=",
        " from=<root@test.localdomain>",
        "mailroom/qmgr[",
        "nrcpt=1 (queue active)",
        "mailroom/local[",
        "to=<root@test.localdomain>, orig_to=<root>, relay=local, delay=",
        "dsn=2.0.0, status=sent (delivered to mailbox)",
        ": removed",
    ] {
        assert!(log.contains(needle), "missing {needle:?} in\n{log}");
    }
}

/// The daemon is woken by a writer's close only. `postsuper -r` moves a message into
/// `maildrop/` through the read-write descriptor it locked it with, so its close, after
/// the move, is what announces the message: it is delivered at once, not at the
/// 10-second scan.
#[test]
fn a_message_postsuper_requeues_is_delivered_at_once() {
    let w = World::new();
    assert!(w.send(&["-odq", "-i", "root"], &body(1)).status.success());
    let postsuper = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_postsuper"))
            .args(args)
            .env("MAIL_CONFIG", w.path("config"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    };
    postsuper(&["-h", "ALL"]);
    assert_eq!(w.queued("hold").len(), 1);
    let d = w.daemon();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(w.messages("root"), 0, "held mail stays held");
    let started = Instant::now();
    postsuper(&["-r", "ALL"]);
    // inotify, not the 10-second scan.
    w.delivered_within(1, started, Duration::from_secs(3));
    assert!(stop(d).success());
}

/// If the inotify watch ends (here: `maildrop/` is removed under the running daemon), the
/// daemon says so and falls back to scanning every second: mail submitted afterwards is
/// delivered within about a second, not at the 10-second scan. Once the directory is
/// back, the watch is set up again.
#[test]
fn a_lost_maildrop_watch_falls_back_to_scanning_every_second_until_it_is_back() {
    let w = World::new();
    assert!(w.send(&["-odq", "-i", "root"], &body(1)).status.success());
    let d = w.daemon();
    w.wait_for(
        || w.messages("root") == 1 && w.queue_empty(),
        "first delivery",
    );
    std::fs::remove_dir(w.path("queue/maildrop")).unwrap();
    w.wait_for(
        || w.log().contains("inotify watch on maildrop ended"),
        "the warning",
    );
    let started = Instant::now();
    let out = w.send(&["-i", "root"], &body(2));
    assert!(out.status.success(), "{}", stderr(&out));
    w.delivered_within(2, started, Duration::from_secs(4));
    // sendmail made maildrop/ again: a scan sets the watch up again.
    w.wait_for(
        || w.log().contains("watching maildrop with inotify again"),
        "the watch again",
    );
    assert!(stop(d).success());
}

#[test]
fn files_left_in_active_and_incoming_are_recovered() {
    let w = World::new();
    for n in 0..3 {
        assert!(w.send(&["-odq", "-i", "root"], &body(n)).status.success());
    }
    let ids = w.queued("maildrop");
    assert_eq!(ids.len(), 3);
    for (id, to) in ids.iter().zip(["active", "incoming", "maildrop"]) {
        std::fs::create_dir_all(w.path("queue").join(to)).unwrap();
        std::fs::rename(
            w.path("queue/maildrop").join(id),
            w.path("queue").join(to).join(id),
        )
        .unwrap();
    }
    let d = w.daemon();
    w.wait_for(|| w.messages("root") == 3 && w.queue_empty(), "recovery");
    assert!(stop(d).success());
}

#[test]
fn odq_only_queues_and_q_delivers() {
    let w = World::new();
    let out = w.send(&["-odq", "-i", "root"], &body(1));
    assert!(out.status.success());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(w.queued("maildrop").len(), 1);
    assert_eq!(w.messages("root"), 0);
    let out = w.cmd(&["-q"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(w.messages("root"), 1);
    assert!(w.queue_empty());
}

#[test]
fn odq_with_a_daemon_is_delivered_by_the_daemon() {
    // -odq means "do not deliver it yourself"; a running daemon still sees the file.
    let w = World::new();
    let d = w.daemon();
    assert!(w.send(&["-odq", "-i", "root"], &body(1)).status.success());
    w.wait_for(|| w.messages("root") == 1, "daemon delivery");
    stop(d);
}

#[test]
fn odb_without_a_daemon_delivers_in_the_background() {
    let w = World::new();
    let started = Instant::now();
    let out = w.send(&["-i", "root"], &body(1));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(2));
    w.wait_for(
        || w.messages("root") == 1 && w.queue_empty(),
        "background delivery",
    );
    assert!(!w.path("queue/pid/master.pid").exists());
}

/// `-odi` hands the locked message over to `mailroom deliver`, which reports as sendmail
/// itself did: the exit code (0, 67 unknown user, 69 other bounce, 75 deferred) and, for
/// each recipient not delivered, a `sendmail: ID: <address>: ...` line, then the fatal.
#[test]
fn odi_reports_the_outcome() {
    let w = World::new();
    w.add_failing_alias();
    let bounced = "sendmail: fatal: {id}: 1 recipient(s) bounced; the sender gets a delivery status notification";
    for (n, (rcpt, code, lines)) in [
        ("root", 0, vec![]),
        (
            "nosuchuser",
            67,
            vec![
                "sendmail: {id}: <nosuchuser@test.localdomain>: dsn=5.1.1, status=bounced (unknown user: \"nosuchuser\")",
                bounced,
            ],
        ),
        (
            "failing",
            69,
            vec![
                "sendmail: {id}: <failing@test.localdomain>: dsn=5.3.0, status=bounced (Command died with status 1: \"echo no such thing >&2; exit 1\". Command output: no such thing)",
                bounced,
            ],
        ),
        (
            "bob@example.org",
            75,
            vec![
                "sendmail: {id}: <bob@example.org>: dsn=4.4.1, status=deferred (connect to 127.0.0.1[127.0.0.1]:9: Connection refused)",
                "sendmail: fatal: {id}: delivery deferred; the message stays queued and will be retried",
            ],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let out = w.send(&["-odi", "-i", "-f", "root", rcpt], &body(n));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{rcpt}: {err}");
        let id = err.split(": ").nth(1).unwrap_or_default();
        let expected: String = lines
            .iter()
            .map(|l| format!("{}\n", l.replace("{id}", id)))
            .collect();
        assert_eq!(err, expected, "{rcpt}");
    }
    // The first delivered; the deferred one stays queued; the two bounces queued
    // notifications to the sender, which the next queue run delivers.
    assert_eq!(w.messages("root"), 1);
    assert_eq!(w.queued("deferred").len(), 1);
    assert!(w.cmd(&["-q"]).status().unwrap().success());
    assert_eq!(w.messages("root"), 3);
}

/// Issue defect 15: a dot-lock left by a process that is gone held up mbox delivery for
/// five minutes. One holding the pid of a dead process is removed at once; one without a
/// pid goes by `stale_lock_time`.
#[test]
fn a_dot_lock_left_by_a_dead_process_does_not_hold_up_delivery() {
    let w = World::with("stale_lock_time = 3s");
    let lock = w.path("spool/root.lock");
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    std::fs::write(&lock, format!("{dead}\n")).unwrap();
    let started = Instant::now();
    let out = w.send(&["-odi", "-i", "root"], &body(1));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(w.messages("root"), 1);
    assert!(!lock.exists());

    // Without a pid, a lock older than stale_lock_time is removed.
    std::fs::write(&lock, b"").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&lock)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(4))
        .unwrap();
    let started = Instant::now();
    let out = w.send(&["-odi", "-i", "root"], &body(2));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(w.messages("root"), 2);
    assert!(!lock.exists());
    assert!(!w.log().contains("unknown parameter"), "{}", w.log());
}

#[test]
fn odi_with_a_daemon_running_is_delivered_once() {
    let w = World::new();
    let d = w.daemon();
    for n in 0..5 {
        let out = w.send(&["-odi", "-i", "root"], &body(n));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(w.messages("root"), 5);
    stop(d);
}

#[test]
fn deferred_state_survives_a_restart_and_expiry_bounces() {
    let w = World::with("minimal_backoff_time = 1s\nmaximal_backoff_time = 2s");
    assert!(
        w.send(&["-odq", "-i", "bob@example.org"], &body(1))
            .status
            .success()
    );
    let d = w.daemon();
    w.wait_for(|| w.queued("deferred").len() == 1, "deferral");
    stop(d);
    let id = w.queued("deferred").pop().unwrap();
    let file = std::fs::read_to_string(w.path("queue/deferred").join(&id)).unwrap();
    assert!(file.contains("\nattempts 1\n"), "{file}");
    assert!(file.contains("Connection%20refused"), "{file}");
    // A restarted daemon keeps it deferred; -q tries it now.
    assert!(w.cmd(&["-q"]).status().unwrap().success());
    let file = std::fs::read_to_string(w.path("queue/deferred").join(&id)).unwrap();
    assert!(file.contains("\nattempts 2\n"), "{file}");

    // Past its lifetime, the next attempt bounces it to the sender.
    let mut cf = std::fs::read_to_string(w.path("config/main.cf")).unwrap();
    cf.push_str("maximal_queue_lifetime = 0\n");
    std::fs::write(w.path("config/main.cf"), cf).unwrap();
    assert!(w.cmd(&["-q"]).status().unwrap().success());
    assert!(w.queue_empty(), "{}", w.log());
    let mbox = w.mbox("root");
    assert!(
        mbox.contains("Subject: Undelivered Mail Returned to Sender"),
        "{mbox}"
    );
    assert!(mbox.contains("Final-Recipient: rfc822; bob@example.org"));
    let log = w.log();
    assert!(log.contains("status=expired, returned to sender"), "{log}");
    assert!(log.contains(&format!("{id}: sender non-delivery notification: ")));
}

#[test]
fn a_bad_maildrop_file_goes_to_corrupt() {
    let w = World::new();
    assert!(w.send(&["-odq", "-i", "root"], &body(1)).status.success());
    std::fs::write(w.path("queue/maildrop/0000000bad"), b"garbage\n\nxx").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", w.path("queue/maildrop/000000link")).unwrap();
    assert!(w.cmd(&["-q"]).status().unwrap().success());
    assert_eq!(w.messages("root"), 1);
    let mut corrupt = w.queued("corrupt");
    corrupt.sort();
    assert_eq!(corrupt, vec!["0000000bad", "000000link"]);
    assert!(
        w.log().contains("0000000bad: corrupt queue file"),
        "{}",
        w.log()
    );
}

#[test]
fn sighup_rereads_main_cf() {
    let w = World::new();
    let d = w.daemon();
    let mut cf = std::fs::read_to_string(w.path("config/main.cf")).unwrap();
    cf = cf.replace(
        "mydestination = $myhostname, localhost",
        "mydestination = $myhostname, localhost, example.org",
    );
    std::fs::write(w.path("config/main.cf"), cf).unwrap();
    let pid = nix::unistd::Pid::from_raw(d.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    w.wait_for(|| w.log().contains("reload"), "reload");
    // example.org is local now: root@example.org goes to root's mailbox.
    assert!(
        w.send(&["-i", "root@example.org"], &body(1))
            .status
            .success()
    );
    w.wait_for(|| w.messages("root") == 1, "delivery after reload");
    stop(d);
}

/// SIGKILL at random moments while 300 messages are delivered: after a restart every
/// message is in the mailbox at least once, the mbox parses, nothing stays queued.
#[test]
fn sigkill_loses_nothing() {
    let w = World::new();
    const N: usize = 500;
    for n in 0..N {
        assert!(w.send(&["-odq", "-i", "root"], &body(n)).status.success());
    }
    let mut seed = std::process::id() as u64;
    for _ in 0..6 {
        let mut child = w
            .cmd(&["-bD"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(20 + (seed >> 33) % 120));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    // A kill inside a mailbox write leaves its dot-lock; local delivery (like Postfix)
    // waits five minutes before calling it stale. An administrator would remove it.
    let _ = std::fs::remove_file(w.path("spool/root.lock"));
    let d = w.daemon();
    w.wait_for(|| w.queue_empty(), "the queue to drain");
    stop(d);
    let script = format!(
        "import mailbox,sys\nseen=set()\nfor m in mailbox.mbox(sys.argv[1]):\n    seen.add(m['Subject'])\n\
         missing=[n for n in range({N}) if f'test {{n}}' not in seen]\nprint(len(seen), missing)\n\
         sys.exit(1 if missing else 0)\n"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .arg(w.path("spool/root"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// pflogsumm (Debian's package; .ci installs it) counts our log like Postfix's.
#[test]
fn pflogsumm_reads_the_log() {
    if !require_tool("pflogsumm") {
        return;
    }
    let w = World::new();
    for n in 0..3 {
        assert!(w.send(&["-odq", "-i", "root"], &body(n)).status.success());
    }
    assert!(
        w.send(&["-odq", "-i", "nosuchuser"], &body(9))
            .status
            .success()
    );
    assert!(w.cmd(&["-q"]).status().unwrap().success());
    assert!(w.cmd(&["-q"]).status().unwrap().success());
    let out = Command::new("pflogsumm")
        .args(["--syslog-name=mailroom"])
        .arg(w.path("maillog"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let count = |label: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.trim_end().ends_with(label) && l.trim_start().starts_with(char::is_numeric))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    };
    // 4 submitted + 1 bounce notification received; 3 + the bounce delivered.
    assert_eq!(count("received"), Some(5), "{text}");
    assert_eq!(count("delivered"), Some(4), "{text}");
    assert_eq!(count("bounced"), Some(1), "{text}");
    assert!(Path::new(&w.path("maillog")).exists());
}

#[test]
fn the_daemon_listens_for_smtp_and_delivers_what_it_accepts() {
    let port = free_port();
    let w = World::with(&format!(
        "smtpd_port = {port}\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n"
    ));
    let daemon = w.daemon();
    let script = format!(
        "import smtplib\n\
         s = smtplib.SMTP('127.0.0.1', {port}, timeout=20)\n\
         s.sendmail('sender@example.org', ['root@localhost'], 'Subject: over smtp\\r\\n\\r\\nhello\\r\\n')\n\
         s.quit()\n"
    );
    // Give the accept thread a moment: the pid file is written before it binds.
    let mut out = None;
    for _ in 0..50 {
        let o = Command::new("python3")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        if o.status.success() {
            out = Some(o);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    out.expect("SMTP session with the daemon's listener");
    w.wait_for(|| w.messages("root") == 1, "delivery of the SMTP message");
    assert!(w.mbox("root").contains("Subject: over smtp"));
    assert!(w.log().contains("mailroom/smtpd["), "{}", w.log());
    assert!(stop(daemon).success());
}

/// `smtp_destination_concurrency_limit`: with a limit, no more deliveries to one
/// destination run at once, and the rest wait (in `active/`, not deferred) until each
/// place frees up; without one, all the daemon's threads go to it.
#[test]
fn deliveries_to_one_destination_keep_to_its_concurrency_limit() {
    const MESSAGES: usize = 8;
    // (main.cf line, most transactions that may be in flight at once, fewest expected)
    let cases = [
        ("smtp_destination_concurrency_limit = 2", 2, 2),
        ("default_destination_concurrency_limit = 1", 1, 1),
        // 0 is no limit: the daemon's threads (at least 4 here) are the bound.
        ("smtp_destination_concurrency_limit = 0", MESSAGES, 3),
    ];
    for (limit, most, fewest) in cases {
        let sink = SlowSink::start(Duration::from_millis(300));
        let w = World::with(&format!(
            "relayhost = [127.0.0.1]:{}\ndefault_process_limit = 8\n{limit}\n",
            sink.port
        ));
        // Queued first, so that the daemon finds them all at once. Each has a local
        // recipient too, delivered before its message waits, and never again.
        for n in 0..MESSAGES {
            let out = w.send(
                &["-odq", "-i", "-f", "s@example.org", "root", "r@example.net"],
                &body(n),
            );
            assert!(out.status.success(), "{limit}: {}", stderr(&out));
        }
        let d = w.daemon();
        w.wait_for(|| w.queue_empty() && sink.messages() == MESSAGES, limit);
        assert!(stop(d).success());
        let at_once = sink.most_at_once();
        assert!(
            (fewest..=most).contains(&at_once),
            "{limit}: {at_once} at once\n{}",
            w.log()
        );
        assert_eq!(w.messages("root"), MESSAGES, "{limit}");
        let log = w.log();
        assert_eq!(
            log.matches("status=sent").count(),
            2 * MESSAGES,
            "{limit}: {log}"
        );
        assert!(!log.contains("status=deferred"), "{limit}: {log}");
        // Each message is announced active once, however long it waited.
        assert_eq!(
            log.matches("(queue active)").count(),
            MESSAGES,
            "{limit}: {log}"
        );
    }
}

/// Remote deliveries wait on servers, not on the disk: more of them run at once than
/// there are turns at the disk (at most 8), up to the destination's limit or to
/// `default_process_limit`; and while every one of them hangs on a slow server, local
/// mail is delivered at once rather than behind them.
#[test]
fn slow_servers_take_threads_but_never_hold_up_local_mail() {
    // (main.cf lines, remote messages, most in flight at once)
    let cases = [
        ("smtp_destination_concurrency_limit = 20", 24, 20),
        ("default_process_limit = 3", 6, 3),
    ];
    for (settings, remote, most) in cases {
        let sink = SlowSink::start(Duration::from_secs(2));
        let w = World::with(&format!(
            "relayhost = [127.0.0.1]:{}\n{settings}\n",
            sink.port
        ));
        for n in 0..remote {
            let out = w.send(
                &["-odq", "-i", "-f", "s@example.org", "r@example.net"],
                &body(n),
            );
            assert!(out.status.success(), "{settings}: {}", stderr(&out));
        }
        let d = w.daemon();
        w.wait_for(|| sink.in_flight() == most, settings);
        let out = w.send(
            &["-i", "-f", "s@example.org", "root"],
            "Subject: local\n\nhi\n",
        );
        assert!(out.status.success(), "{settings}: {}", stderr(&out));
        w.wait_for(|| w.messages("root") == 1, settings);
        assert_eq!(
            sink.messages(),
            0,
            "{settings}: the local message waited for a remote delivery to end\n{}",
            w.log()
        );
        w.wait_for(|| w.queue_empty() && sink.messages() == remote, settings);
        assert!(stop(d).success());
        assert_eq!(sink.most_at_once(), most, "{settings}\n{}", w.log());
        let log = w.log();
        assert_eq!(
            log.matches("status=sent").count(),
            remote + 1,
            "{settings}: {log}"
        );
        assert!(!log.contains("status=deferred"), "{settings}: {log}");
    }
}

#[test]
fn remote_recipients_leave_in_one_transaction_through_the_relayhost() {
    let Some(server) = Aiosmtpd::start() else {
        return;
    };
    let port = server.port;
    let w = World::with(&format!("relayhost = [127.0.0.1]:{port}\n"));
    let daemon = w.daemon();
    let body = "Subject: leaving\n\nline one\n.dot line\nFrom the middle\n";
    let out = w.send(
        &[
            "-i",
            "-f",
            "sender@example.org",
            "a@example.net",
            "b@example.net",
            "c@other.example",
        ],
        body,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    w.wait_for(|| w.queue_empty(), "remote delivery");
    assert!(stop(daemon).success());

    let (envelope, data) = server.received(0);
    assert_eq!(server.count(), 1, "one transaction only");
    assert_eq!(envelope["mail_from"], "sender@example.org");
    assert_eq!(
        envelope["rcpt_tos"],
        serde_json::json!(["a@example.net", "b@example.net", "c@other.example"])
    );
    let data = String::from_utf8_lossy(&data).replace("\r\n", "\n");
    assert!(
        data.ends_with("\nline one\n.dot line\nFrom the middle\n"),
        "{data}"
    );
    let log = w.log();
    assert_eq!(
        log.matches(&format!("relay=127.0.0.1[127.0.0.1]:{port}"))
            .count(),
        3,
        "{log}"
    );
    assert_eq!(log.matches("status=sent").count(), 3, "{log}");
}

#[test]
fn unknown_users_and_failing_commands_bounce_to_the_sender() {
    let w = World::with("");
    w.add_failing_alias();
    let daemon = w.daemon();
    for rcpt in ["nosuchuser_mr", "failing"] {
        let out = w.send(&["-i", "-f", "root", rcpt], &body(1));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    w.wait_for(
        || w.messages("root") == 2,
        "two bounces in the sender's mailbox",
    );
    w.wait_for(|| w.queue_empty(), "an empty queue");
    assert!(stop(daemon).success());
    let script = r#"
import mailbox, sys
for m in mailbox.mbox(sys.argv[1]):
    assert m.get_content_type() == 'multipart/report', m.get_content_type()
    assert m['Subject'] == 'Undelivered Mail Returned to Sender'
    status = [p for p in m.walk() if p.get_content_type() == 'message/delivery-status'][0]
    fields = status.get_payload()[1]
    print(fields['Final-Recipient'], fields['Status'], fields['Diagnostic-Code'])
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(w.path("spool/root"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("rfc822; nosuchuser_mr@test.localdomain 5.1.1"),
        "{text}"
    );
    assert!(text.contains("unknown user"), "{text}");
    assert!(
        text.contains("rfc822; failing@test.localdomain 5."),
        "{text}"
    );
    assert!(text.contains("no such thing"), "{text}");
}

/// In syslog mode each line carries the name of the program it speaks for, as Postfix's
/// separate processes' lines do: a log tool that counts `mailroom/smtp` deferrals or
/// `mailroom/local` deliveries must find them under those names, not under the first
/// program that logged (`openlog` keeps one ident per process).
#[test]
fn syslog_lines_carry_each_programs_own_name() {
    use std::os::unix::net::UnixDatagram;
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("log");
    let syslog = UnixDatagram::bind(&socket).unwrap();
    let w = World::with(&format!(
        "maillog_file =\nsyslog_socket = {}",
        socket.display()
    ));
    assert!(w.send(&["-odq", "-i", "root"], &body(1)).status.success());
    assert!(
        w.send(&["-odq", "-i", "bob@example.org"], &body(2))
            .status
            .success()
    );
    let out = w.cmd(&["-q"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(w.messages("root"), 1);

    syslog.set_nonblocking(true).unwrap();
    let mut lines = Vec::new();
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = syslog.recv(&mut buf) {
        lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let all = lines.join("\n");
    let tagged = |program: &str, needle: &str| {
        lines.iter().any(|l| {
            // RFC 3164 as the C library sends it: <PRI>Mmm dd hh:mm:ss TAG[PID]: MSG.
            // mail.info = 2 * 8 + 6 = 22; mail.warning = 20.
            (l.starts_with("<22>") || l.starts_with("<20>"))
                && l.as_bytes().get(7) == Some(&b' ')
                && l[4..].split_once(' ').is_some()
                && l.contains(&format!(" mailroom/{program}["))
                && l.split_once("]: ")
                    .is_some_and(|(_, text)| text.contains(needle))
        })
    };
    for (program, needle) in [
        ("pickup", "uid="),
        ("qmgr", "(queue active)"),
        (
            "local",
            "to=<root@test.localdomain>, orig_to=<root>, relay=local",
        ),
        ("smtp", "to=<bob@example.org>, relay=127.0.0.1[127.0.0.1]:9"),
    ] {
        assert!(
            tagged(program, needle),
            "no mailroom/{program} line with {needle:?} in:\n{all}"
        );
    }
    for l in &lines {
        assert!(
            !(l.contains("mailroom/pickup[") && l.contains("relay=")),
            "a delivery logged under pickup's name: {l}"
        );
    }
    // Nothing of it went to a file.
    assert!(!w.path("maillog").exists());
}

/// Waits for `child` at most `limit`; kills it and returns `None` when it is still
/// running then.
fn wait_at_most(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, then the daemon must be gone within ten seconds.
fn stop_within(mut daemon: Daemon, w: &World) -> std::process::ExitStatus {
    let mut child = daemon.0.take().expect("running");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    wait_at_most(&mut child, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("the daemon ignored SIGTERM; log:\n{}", w.log()))
}

/// Writes a queue file whose only recipient has a 4 MB local part into `queue/`,
/// as a crash, a bug or a hand could leave it there. Returns its ID.
fn plant_huge_recipient(w: &World, queue: &str) -> String {
    use mailroom::queue::{Envelope, QueueId, Recipient};
    let huge = format!("{}@test.localdomain", "a".repeat(4 << 20));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let mut env = Envelope::new(QueueId::generate(), now, 0, "root@test.localdomain");
    env.recipients.push(Recipient::new(&huge, &huge));
    let message = b"Subject: huge\n\nbody\n";
    env.size = message.len() as u64;
    let mut bytes = env.serialize();
    bytes.extend_from_slice(message);
    let dir = w.path("queue").join(queue);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(env.id.as_str()), bytes).unwrap();
    env.id.to_string()
}

/// A 4 MB local part used to reach the C library's user lookup, which copies it onto a
/// delivery thread's stack: the daemon died, and died again on every restart, the file
/// still in `active/`. Now such a file is corrupt: it goes to `corrupt/` with a log line
/// of reasonable length, other mail flows, and a restart finds nothing to trip on.
#[test]
fn a_four_megabyte_local_part_goes_to_corrupt_and_mail_flows() {
    let w = World::new();
    assert!(w.send(&["-odq", "-i", "root"], &body(1)).status.success());
    let mut planted: Vec<String> = ["active", "deferred", "maildrop", "incoming"]
        .iter()
        .map(|q| plant_huge_recipient(&w, q))
        .collect();
    let d = w.daemon();
    w.wait_for(
        || w.messages("root") == 1 && w.queued("corrupt").len() == planted.len(),
        "delivery, and the planted files in corrupt/",
    );
    assert!(w.queue_empty(), "{}", w.log());
    assert!(stop_within(d, &w).success());

    // The restart of the original report: a file left in active/.
    planted.push(plant_huge_recipient(&w, "active"));
    let d = w.daemon();
    assert!(w.send(&["-i", "root"], &body(2)).status.success());
    w.wait_for(
        || w.messages("root") == 2 && w.queued("corrupt").len() == planted.len(),
        "delivery after a restart",
    );
    assert!(stop_within(d, &w).success());

    let mut corrupt = w.queued("corrupt");
    corrupt.sort();
    planted.sort();
    assert_eq!(corrupt, planted);
    let log = w.log();
    for id in &planted {
        assert!(
            log.contains(&format!("{id}: corrupt queue file: ")),
            "no line for {id}"
        );
    }
    assert!(
        log.contains("record longer than 8192 bytes"),
        "{}",
        &log[..log.len().min(4000)]
    );
    assert!(
        log.lines().all(|l| l.len() < 1000),
        "a log line carries the 4 MB address"
    );
}

/// What can sit in a queue directory without being a queue file.
const ODD_KINDS: [&str; 3] = ["fifo", "symlink", "directory"];

/// Puts a FIFO, a symbolic link (to a well-formed queue file outside the queue) and a
/// directory, each named like a queue ID, in each of `queues`. Returns (queue, kind, ID).
fn plant_odd_entries(w: &World, queues: &[&str]) -> Vec<(String, &'static str, String)> {
    // What the link points to: a queue file for root, which must never be delivered.
    assert!(w.send(&["-odq", "-i", "root"], &body(99)).status.success());
    let real = w.queued("maildrop").pop().unwrap();
    let target = w.path("outside-the-queue");
    std::fs::rename(w.path("queue/maildrop").join(&real), &target).unwrap();
    let mut planted = Vec::new();
    for queue in queues {
        let dir = w.path("queue").join(queue);
        std::fs::create_dir_all(&dir).unwrap();
        for kind in ODD_KINDS {
            let id = mailroom::queue::QueueId::generate().to_string();
            let path = dir.join(&id);
            match kind {
                "fifo" => {
                    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                        .unwrap()
                }
                "symlink" => std::os::unix::fs::symlink(&target, &path).unwrap(),
                _ => std::fs::create_dir(&path).unwrap(),
            }
            planted.push((queue.to_string(), kind, id));
        }
    }
    planted
}

/// A FIFO in a queue directory used to block the thread that opened it for good (the
/// main thread, for one in `deferred/`): nothing was delivered and SIGTERM was never
/// acted on. Entries that are not regular files now go to `corrupt/` (`hold/` is not the
/// daemon's to look at), mail flows around them, and the daemon stops when told.
#[test]
fn fifos_symlinks_and_directories_in_the_queue_do_not_stop_the_daemon() {
    let w = World::new();
    let planted = plant_odd_entries(&w, &["maildrop", "incoming", "active", "deferred", "hold"]);
    assert!(w.send(&["-odq", "-i", "root"], &body(1)).status.success());
    let runnable = planted.iter().filter(|(q, _, _)| q != "hold").count();

    // A one-shot queue run finishes.
    let mut run = w.cmd(&["-q"]).spawn().unwrap();
    let status = wait_at_most(&mut run, Duration::from_secs(20));
    assert!(status.is_some(), "sendmail -q hung; log:\n{}", w.log());
    assert_eq!(w.messages("root"), 1, "{}", w.log());

    // And so does the daemon, with the same entries planted again.
    let planted = plant_odd_entries(&w, &["maildrop", "incoming", "active", "deferred", "hold"]);
    let d = w.daemon();
    assert!(w.send(&["-i", "root"], &body(2)).status.success());
    w.wait_for(
        || w.messages("root") == 2 && w.queued("corrupt").len() == 2 * runnable,
        "delivery, and the odd entries in corrupt/",
    );
    assert!(stop_within(d, &w).success());

    let corrupt = w.queued("corrupt");
    let log = w.log();
    for (queue, kind, id) in &planted {
        if queue == "hold" {
            assert!(
                w.queued("hold").contains(id),
                "hold/{id} ({kind}) left alone"
            );
        } else {
            assert!(
                corrupt.contains(id),
                "{queue}/{id} ({kind}) not in corrupt/"
            );
            let line = log.lines().find(|l| l.contains(&format!("{queue}/{id}: ")));
            assert!(
                line.is_some_and(|l| l.ends_with("moved to corrupt")),
                "no log line for {queue}/{id} ({kind}):\n{log}"
            );
        }
    }
    // The symlink's target was never delivered (it is message 99).
    assert!(!w.mbox("root").contains("message number 99"));
}
