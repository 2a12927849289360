//! Shared by the queue tools' integration tests (mailq, postsuper): a temporary `MAIL_CONFIG` whose
//! `main.cf` points `queue_directory` (and `maillog_file`) into a temporary directory,
//! and messages built through the library's `NewQueueFile`.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use mailroom::queue::{Envelope, NewQueueFile, Queue, QueueId, QueueName, Recipient};

/// Tue Nov 24 22:56:57 2026 UTC, the arrival of the reference's examples.
pub const ARRIVAL: u64 = 1_795_561_017_000_000;

pub struct World {
    pub tmp: tempfile::TempDir,
    pub queue: Queue,
}

impl World {
    pub fn new() -> World {
        World::with_config("")
    }

    /// `extra` is appended to `main.cf`.
    pub fn with_config(extra: &str) -> World {
        let tmp = tempfile::tempdir().unwrap();
        // Readable by `nobody`, for the refusal tests. No set-gid group (a later `extra`
        // line may name one): the results must not depend on whether this machine has a
        // `mailroom` group.
        std::fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let config = tmp.path().join("config");
        std::fs::create_dir(&config).unwrap();
        let root = tmp.path().join("queue");
        std::fs::write(
            config.join("main.cf"),
            format!(
                "queue_directory = {}\nmaillog_file = {}\nmyhostname = vm.example.com\nsetgid_group =\n{extra}\n",
                root.display(),
                tmp.path().join("maillog").display()
            ),
        )
        .unwrap();
        let queue = Queue::new(root);
        queue.ensure_dirs().unwrap();
        World { tmp, queue }
    }

    pub fn config_dir(&self) -> PathBuf {
        self.tmp.path().join("config")
    }

    pub fn maillog(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("maillog")).unwrap_or_default()
    }

    /// A command for one of our binaries in this world, in UTC.
    pub fn command(&self, exe: &str) -> Command {
        let mut cmd = Command::new(exe);
        cmd.env("MAIL_CONFIG", self.config_dir()).env("TZ", "UTC");
        cmd
    }

    pub fn run(&self, exe: &str, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .command(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    pub fn path(&self, queue: QueueName, id: QueueId) -> PathBuf {
        self.queue.path(queue, id)
    }

    pub fn exists(&self, queue: QueueName, id: QueueId) -> bool {
        self.path(queue, id).exists()
    }
}

/// What a test message looks like.
pub struct Msg<'a> {
    pub queue: QueueName,
    pub sender: &'a str,
    /// (address, deferral reason)
    pub rcpts: &'a [(&'a str, &'a str)],
    /// Message bytes after the `Received:` line.
    pub body: &'a str,
}

impl Default for Msg<'_> {
    fn default() -> Self {
        Msg {
            queue: QueueName::Maildrop,
            sender: "root@vm.example.com",
            rcpts: &[("alice@example.com", "")],
            body: "Subject: test\n\nhello\n",
        }
    }
}

/// Queues a message; returns its ID and its size as `mailq` shows it.
pub fn put(world: &World, msg: &Msg) -> (QueueId, u64) {
    let mut env = Envelope::new(QueueId::generate(), ARRIVAL, 0, msg.sender);
    for (addr, reason) in msg.rcpts {
        let mut r = Recipient::new(addr, addr);
        r.reason = reason.to_string();
        env.recipients.push(r);
    }
    let mut file = NewQueueFile::create(&world.queue.dir(msg.queue), env).unwrap();
    file.write_all(b"Received: id ").unwrap();
    file.write_id().unwrap();
    file.write_all(b"\n").unwrap();
    file.write_all(msg.body.as_bytes()).unwrap();
    let size = file.message_bytes();
    (file.commit().unwrap(), size)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// What can sit in a queue directory without being a queue file.
pub const ODD_KINDS: [&str; 3] = ["fifo", "symlink", "directory"];

/// Puts a FIFO, a symbolic link (to a well-formed queue file outside the queue) and a
/// directory, each named like a queue ID, in each of `queues`. Returns (queue, kind, ID).
pub fn plant_odd_entries(
    world: &World,
    queues: &[QueueName],
) -> Vec<(QueueName, &'static str, QueueId)> {
    // The link's target: a message that must never be listed or acted on.
    let (id, _) = put(
        world,
        &Msg {
            rcpts: &[("target-of-a-link@example.com", "")],
            ..Msg::default()
        },
    );
    let target = world.tmp.path().join("outside-the-queue");
    std::fs::rename(world.path(QueueName::Maildrop, id), &target).unwrap();
    let mut planted = Vec::new();
    for &queue in queues {
        for kind in ODD_KINDS {
            let id = QueueId::generate();
            let path = world.path(queue, id);
            match kind {
                "fifo" => {
                    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                        .unwrap()
                }
                "symlink" => std::os::unix::fs::symlink(&target, &path).unwrap(),
                _ => std::fs::create_dir(&path).unwrap(),
            }
            planted.push((queue, kind, id));
        }
    }
    planted
}

/// Runs a binary like [`World::run`], but gives up after `limit`: `None` when it was
/// still running then (it is killed).
pub fn run_at_most(
    world: &World,
    exe: &str,
    args: &[&str],
    limit: std::time::Duration,
) -> Option<Output> {
    let mut child = world
        .command(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
