//! Shared test fixture: a temporary mail system (config dir, queue, spool) that the real
//! binaries are pointed at through `MAIL_CONFIG`.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use mailroom::queue::{Envelope, Queue, QueueId, QueueName};

pub mod smtp_server;
mod tools;
// Not every test binary that includes common uses them.
#[allow(unused_imports)]
pub use tools::{require_python_module, require_tool};

pub struct MailSystem {
    pub dir: tempfile::TempDir,
}

impl MailSystem {
    /// A mail system whose main.cf has `myhostname = vm`, `myorigin = mail.server.com`
    /// (the reference machine's names) and everything in a temporary directory, plus
    /// `extra` lines.
    pub fn new(extra: &str) -> MailSystem {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("config")).unwrap();
        std::fs::create_dir_all(root.join("spool")).unwrap();
        let main_cf = format!(
            "myhostname = vm\nmyorigin = mail.server.com\nmydestination = mail.server.com, $myhostname, localhost\n\
             queue_directory = {root}/queue\nmail_spool_directory = {root}/spool\n\
             maillog_file = {root}/maillog\nalias_maps = cdb:{root}/config/aliases\n\
             alias_database = cdb:{root}/config/aliases\nsmtpd_port =\n\
             setgid_group =\n{extra}\n",
            root = root.display()
        );
        std::fs::write(root.join("config/main.cf"), main_cf).unwrap();
        MailSystem { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_dir(&self) -> PathBuf {
        self.root().join("config")
    }

    pub fn queue(&self) -> Queue {
        Queue::new(self.root().join("queue"))
    }

    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("MAIL_CONFIG", self.config_dir()).env("TZ", "UTC");
        cmd
    }

    /// Runs a binary with `args`, feeding `stdin`.
    pub fn run(&self, program: &str, args: &[&str], stdin: &[u8]) -> Output {
        feed(self.command(program).args(args), stdin)
    }

    /// Every message in the given queue: its envelope and its message bytes.
    pub fn messages(&self, queue: QueueName) -> Vec<(Envelope, Vec<u8>)> {
        let q = self.queue();
        let mut out = Vec::new();
        for (id, name) in q.list(&[queue]).unwrap() {
            out.push(self.message(name, id));
        }
        out
    }

    pub fn message(&self, queue: QueueName, id: QueueId) -> (Envelope, Vec<u8>) {
        let q = self.queue();
        let env = q.read_envelope(queue, id).expect("envelope");
        let bytes = std::fs::read(q.path(queue, id)).unwrap();
        let message = bytes[env.message_offset as usize..].to_vec();
        assert_eq!(message.len() as u64, env.size, "size record matches");
        (env, message)
    }

    /// All files (temporary ones included) in a queue directory.
    pub fn files_in(&self, queue: QueueName) -> Vec<String> {
        match std::fs::read_dir(self.queue().dir(queue)) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Runs `cmd` with `stdin` as its input and returns what it wrote.
pub fn feed(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut input = child.stdin.take().expect("stdin");
    // The program may exit before reading everything (an error, a lone dot).
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().expect("wait")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Parses a message with Python's `email` package and returns what the script prints.
pub fn python(script: &str, input: &[u8]) -> String {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
