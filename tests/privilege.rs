//! The set-gid `sendmail` run by an ordinary user: a copy of the built binary, made
//! set-gid to a group of its own (mode 2755), run through `setpriv` as a throwaway uid.
//! Needs root (to chown and switch users) and `setpriv`; skipped otherwise. Nothing here
//! touches the real queue: every mode tried either stops before it or is refused.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::require_tool;

/// A uid and gid no account uses; setpriv needs no passwd entry for them.
const USER: u32 = 47_311;
const GROUP: u32 = 47_312;

struct SetgidCopy {
    _dir: tempfile::TempDir,
    program: PathBuf,
}

fn setgid_sendmail() -> Option<SetgidCopy> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    if !require_tool("setpriv") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let program = dir.path().join("sendmail");
    let _writing = PROGRAMS.write().unwrap_or_else(|e| e.into_inner());
    std::fs::copy(env!("CARGO_BIN_EXE_sendmail"), &program).unwrap();
    nix::unistd::chown(&program, Some(0.into()), Some(GROUP.into())).unwrap();
    // chown clears the set-id bits: set the mode afterwards.
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o2755)).unwrap();
    // sendmail hands the daemon and deliveries over to the mailroom beside it: here one
    // that says it was reached, with its group ids and arguments, and exits 42.
    if let Some(python) = real_python() {
        let mailroom = dir.path().join("mailroom");
        let script = format!(
            "#!{}\n\
             import os, sys\n\
             sys.stderr.write('mailroom reached: gids=%s args=%s\\n' % (list(os.getresgid()), sys.argv[1:]))\n\
             sys.exit(42)\n",
            python.display()
        );
        std::fs::write(&mailroom, script).unwrap();
        std::fs::set_permissions(&mailroom, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    Some(SetgidCopy { _dir: dir, program })
}

/// Copies and writes of programs (write lock) never overlap a fork (read lock): a child
/// forked while a program's file is open for writing holds it until it execs, and running
/// that program meanwhile fails with ETXTBSY ("Text file busy").
static PROGRAMS: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Runs `f`, which forks, while no program is being written.
fn forking<T>(f: impl FnOnce() -> T) -> T {
    let _guard = PROGRAMS.read().unwrap_or_else(|e| e.into_inner());
    f()
}

/// A python3 interpreter that is a program, not a script (pyenv's shims are bash, and a
/// shell gives up an effective gid that differs from the real one, which would hide
/// whether sendmail dropped its group before the exec).
fn real_python() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("python3"))
        .find(|p| std::fs::read(p).is_ok_and(|bytes| !bytes.starts_with(b"#!")))
}

fn as_user(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={USER}"))
        .arg(format!("--regid={USER}"))
        .arg("--clear-groups")
        .arg(program)
        .args(args)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    forking(|| cmd.output()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn modes_reserved_to_root_exit_77() {
    let Some(copy) = setgid_sendmail() else {
        return;
    };
    for (args, what) in [
        (&["-bi"][..], "-bi"),
        (&["-q"][..], "-q"),
        (&["-bd"][..], "-bd"),
        (&["-bD"][..], "-bD"),
    ] {
        let out = as_user(&copy.program, args, &[]);
        assert_eq!(out.status.code(), Some(77), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(what) && err.contains("super-user"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("mailroom reached"), "{args:?}: {err}");
    }
}

/// Root's `-bD`, `-bd` and `-q` reach the mailroom beside sendmail (the refusals above
/// are not a missing mailroom), with the set-gid group given up and the configuration
/// directory and interval passed on.
#[test]
fn root_is_handed_over_to_mailroom_without_the_group() {
    let Some(copy) = setgid_sendmail() else {
        return;
    };
    if !copy.program.with_file_name("mailroom").exists() {
        eprintln!("skipped: needs python3");
        return;
    }
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("main.cf"),
        format!(
            "queue_directory = {}\nsmtpd_port =\n",
            config.path().join("queue").display()
        ),
    )
    .unwrap();
    let dir = config.path().to_string_lossy().into_owned();
    for (args, expected) in [
        (&["-bD"][..], "'daemon'"),
        (&["-bd", "-q30m"], "'start', '--interval=30m'"),
        (&["-q"], "'deliver'"),
        (&["-qI0cQ3x7Lk2a"], "'deliver', '--', '0cQ3x7Lk2a'"),
    ] {
        let out = forking(|| {
            Command::new(&copy.program)
                .args(["-C", &dir])
                .args(args)
                .stdin(Stdio::null())
                .output()
        })
        .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(42), "{args:?}: {err}");
        let gid = nix::unistd::getgid().as_raw();
        assert!(
            err.contains(&format!("gids=[{gid}, {gid}, {gid}]")),
            "{args:?}: {err}"
        );
        assert!(
            err.contains(&format!("'--for-sendmail', '-c', '{dir}', {expected}]")),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn mail_config_is_ignored_for_an_ordinary_caller() {
    let Some(copy) = setgid_sendmail() else {
        return;
    };
    let env = [("MAIL_CONFIG", "/nonexistent/mailroom")];
    // Not set-gid, the named directory is used, and it has no main.cf: 78.
    let plain = as_user(
        Path::new(env!("CARGO_BIN_EXE_sendmail")),
        &["-bv", "x"],
        &env,
    );
    assert_eq!(plain.status.code(), Some(78), "{}", stderr(&plain));
    // Set-gid, it is ignored (and so is -C): whatever -bv says, it is not a
    // configuration error about the named directory.
    for args in [
        &["-bv", "root"][..],
        &["-C", "/nonexistent/mailroom", "-bv", "root"],
    ] {
        let out = as_user(&copy.program, args, &env);
        assert_ne!(out.status.code(), Some(78), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("/nonexistent"), "{}", stderr(&out));
    }
}

#[test]
fn root_may_still_use_every_mode_of_the_set_gid_copy() {
    let Some(copy) = setgid_sendmail() else {
        return;
    };
    // Root is trusted: MAIL_CONFIG is honoured (and so the missing main.cf is an error).
    let out = forking(|| {
        Command::new(&copy.program)
            .args(["-bi"])
            .env("MAIL_CONFIG", "/nonexistent/mailroom")
            .output()
    })
    .unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
}

/// The set-gid submitter's view of `maildrop/` (mode 1730 root:GROUP: write and search,
/// no read), reproduced without set-id (so that a temporary queue can be named): `nobody`
/// with GROUP as its group submits, and the file lands, the caller's, mode 0600.
#[test]
fn a_group_that_may_not_read_maildrop_still_submits() {
    if !nix::unistd::geteuid().is_root() || !require_tool("setpriv") {
        return;
    }
    let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let queue = dir.path().join("queue");
    std::fs::write(
        dir.path().join("main.cf"),
        format!("queue_directory = {}\nsetgid_group =\n", queue.display()),
    )
    .unwrap();
    mailroom::queue::Queue::new(&queue).ensure_dirs().unwrap();
    let maildrop = queue.join("maildrop");
    nix::unistd::chown(&maildrop, None, Some(GROUP.into())).unwrap();
    std::fs::set_permissions(&maildrop, std::fs::Permissions::from_mode(0o1730)).unwrap();
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={}", nobody.uid))
        .arg(format!("--regid={GROUP}"))
        .arg("--clear-groups")
        .arg(env!("CARGO_BIN_EXE_sendmail"))
        .args(["-odq", "root"])
        .env("MAIL_CONFIG", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = forking(|| cmd.spawn())
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"Subject: t\n\nhi\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let files: Vec<_> = std::fs::read_dir(&maildrop)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&files[0]).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (nobody.uid.as_raw(), GROUP, 0o600)
    );
}

/// A private mount namespace in which `/var/spool` (and `/etc/mailroom`, if there is one)
/// are empty tmpfs mounts: the set-gid copy run there finds no queue to write, whatever
/// this machine has, and gives up with nothing queued. `None` when namespaces or mounts
/// are not available here (the test then says it is skipped).
fn private_spool_command() -> Option<Command> {
    let command = || {
        let script = "mount -t tmpfs -o mode=755 none /var/spool || exit 99; \
                      if [ -d /etc/mailroom ]; then \
                      mount -t tmpfs -o mode=755 none /etc/mailroom || exit 99; fi; \
                      exec \"$@\"";
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ]);
        cmd
    };
    let probe = forking(|| command().arg("true").output()).ok()?;
    probe.status.success().then(command)
}

/// `TZ` naming a file (`/path` or `:/path`) would make the set-gid `sendmail` open a file
/// of its caller's choosing while it holds the group (chrono reads TZ files itself, without
/// the C library's set-id checks). The file here is a FIFO: whoever opens it for reading
/// shows up as a reader, seen by a non-blocking open for writing (which fails with ENXIO
/// while there is none), and is released by closing that end.
#[test]
fn a_time_zone_path_from_an_ordinary_caller_is_never_opened() {
    use std::os::unix::fs::OpenOptionsExt;
    let Some(copy) = setgid_sendmail() else {
        return;
    };
    if !require_tool("unshare") {
        return;
    }
    if private_spool_command().is_none() {
        // Root in a container may be refused namespaces; CI's root is not.
        assert!(
            std::env::var("MAILROOM_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "unshare --mount and tmpfs mounts are not available"
        );
        use std::io::Write;
        let _ = std::io::stderr().write_all(b"skipped: needs unshare and tmpfs mounts\n");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let fifo = dir.path().join("zone");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
    std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o666)).unwrap();
    for tz in [fifo.display().to_string(), format!(":{}", fifo.display())] {
        let mut cmd = private_spool_command().unwrap();
        cmd.arg("setpriv")
            .arg(format!("--reuid={USER}"))
            .arg(format!("--regid={USER}"))
            .arg("--clear-groups")
            .arg(&copy.program)
            // -f: the throwaway uid has no login name to be the sender.
            .args(["-odq", "-f", "tester@example.com", "root"])
            .env("TZ", &tz)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = forking(|| cmd.spawn()).unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            let _ = stdin.write_all(b"Subject: t\n\nhi\n");
        }
        let started = std::time::Instant::now();
        let mut opened = false;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            let writer = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo);
            // Closing our end at once gives the reader end-of-file, so it goes on.
            opened |= writer.is_ok();
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "TZ={tz}: sendmail did not finish"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let out = child.wait_with_output().unwrap();
        assert!(
            !opened,
            "TZ={tz}: the set-gid sendmail opened the caller's file"
        );
        // It went on to the queue, which in the private namespace it may not create:
        // refused, nothing written anywhere.
        assert_eq!(status.code(), Some(77), "TZ={tz}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("queue directory /var/spool/mailroom"),
            "TZ={tz}: {}",
            stderr(&out)
        );
    }
}
