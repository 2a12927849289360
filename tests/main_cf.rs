//! A `main.cf` that no program could finish reading or expanding — a FIFO, a symbolic
//! link to `/dev/zero`, a huge file, values that multiply or nest without end — makes
//! every program stop at once with `program: fatal: ...` and exit 78 (EX_CONFIG), instead
//! of hanging or eating the machine's memory.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Makes a kind of `main.cf` in a directory.
type Make = fn(&Path);

fn fifo(dir: &Path) {
    let mode = nix::sys::stat::Mode::from_bits_truncate(0o644);
    nix::unistd::mkfifo(&dir.join("main.cf"), mode).expect("mkfifo");
}

fn dev_zero(dir: &Path) {
    std::os::unix::fs::symlink("/dev/zero", dir.join("main.cf")).expect("symlink");
}

fn huge(dir: &Path) {
    // Sparse: 8 GiB that take no disk space.
    let file = std::fs::File::create(dir.join("main.cf")).expect("create");
    file.set_len(8 << 30).expect("set_len");
}

/// `queue_directory = $n0`, `n0 = $n1$n1`, ... 2^80 bytes if nothing stopped it.
fn doubling(dir: &Path) {
    let mut text = String::from("queue_directory = /x$n0\n");
    for i in 0..80 {
        text.push_str(&format!("n{i} = $n{0}$n{0}\n", i + 1));
    }
    text.push_str("n80 = x\n");
    std::fs::write(dir.join("main.cf"), text).expect("write");
}

/// The same with every value empty: nothing to show, 2^80 lookups.
fn doubling_to_nothing(dir: &Path) {
    let mut text = String::from("queue_directory = /x$n0\n");
    for i in 0..80 {
        text.push_str(&format!("n{i} = $n{0}$n{0}\n", i + 1));
    }
    text.push_str("n80 =\n");
    std::fs::write(dir.join("main.cf"), text).expect("write");
}

/// `queue_directory = $n0`, `n0 = $n1`, ... 500 levels deep.
fn deep(dir: &Path) {
    let mut text = String::from("queue_directory = /x$n0\n");
    for i in 0..500 {
        text.push_str(&format!("n{i} = ${{n{}}}\n", i + 1));
    }
    text.push_str("n500 = x\n");
    std::fs::write(dir.join("main.cf"), text).expect("write");
}

/// `queue_directory = $queue_directory/x`.
fn self_reference(dir: &Path) {
    std::fs::write(
        dir.join("main.cf"),
        "queue_directory = $queue_directory/x\n",
    )
    .expect("write");
}

/// What, how to make it, and how the fatal line starts (`DIR` is the directory).
const CASES: &[(&str, Make, &str)] = &[
    ("FIFO", fifo, "open DIR/main.cf: not a regular file"),
    (
        "symlink to /dev/zero",
        dev_zero,
        "open DIR/main.cf: not a regular file",
    ),
    (
        "8 GiB file",
        huge,
        "open DIR/main.cf: file too large (more than 1048576 bytes)",
    ),
    (
        "doubling values",
        doubling,
        "DIR/main.cf, line 1: parameter queue_directory: unreasonable macro expansion size",
    ),
    (
        "doubling empty values",
        doubling_to_nothing,
        "DIR/main.cf, line 1: parameter queue_directory: unreasonable macro expansion size",
    ),
    (
        "500 levels deep",
        deep,
        "DIR/main.cf, line 1: parameter queue_directory: unreasonable macro call nesting",
    ),
    (
        "self-reference",
        self_reference,
        "DIR/main.cf, line 1: parameter queue_directory: recursive reference: $queue_directory -> $queue_directory",
    ),
];

#[test]
fn every_program_stops_promptly_on_a_main_cf_it_cannot_use() {
    let mut programs = vec![
        (
            "sendmail",
            env!("CARGO_BIN_EXE_sendmail"),
            vec!["-odq", "root"],
        ),
        ("mailq", env!("CARGO_BIN_EXE_mailq"), vec![]),
    ];
    // postsuper is root's only (77 for anyone else, before main.cf is looked at).
    if nix::unistd::geteuid().is_root() {
        programs.push((
            "postsuper",
            env!("CARGO_BIN_EXE_postsuper"),
            vec!["-d", "ALL"],
        ));
    }
    for (what, make, fatal) in CASES {
        for (name, program, args) in &programs {
            let dir = tempfile::tempdir().expect("tempdir");
            make(dir.path());
            let stderr_path = dir.path().join("stderr");
            let mut child = Command::new(program)
                .args(args)
                .env("MAIL_CONFIG", dir.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                // A file, not a pipe: a pipe nobody drains while we wait would fill up
                // with warnings and block the program.
                .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
                .spawn()
                .expect("spawn");
            let _ = child
                .stdin
                .take()
                .expect("stdin")
                .write_all(b"Subject: hi\n\nbody\n");
            let started = Instant::now();
            let status = loop {
                if let Some(status) = child.try_wait().expect("wait") {
                    break status;
                }
                if started.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{name} with a main.cf that is a {what}: still running after 10 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let err = std::fs::read_to_string(&stderr_path).expect("stderr");
            assert_eq!(status.code(), Some(78), "{name}, {what}: {err}");
            let dir_name = dir.path().display().to_string();
            let line = format!("{name}: fatal: {}", fatal.replace("DIR", &dir_name));
            assert!(
                err.lines().any(|l| l.starts_with(&line)),
                "{name}, {what}: want {line:?} in:\n{err}"
            );
        }
    }
}
