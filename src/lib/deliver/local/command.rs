//! `|command` deliveries: `/bin/sh -c COMMAND` with the message on standard input, run as
//! the user the target belongs to, in its own process group, with local(8)'s environment
//! and a time limit.
//!
//! The child is made by `std::process::Command` (fork + exec, never fork alone: the daemon
//! is multi-threaded). Between the two, the child sets its supplementary groups, gid and
//! uid with raw system calls (std's own `uid()`/`gid()` cannot set the user's groups, and
//! its hooks run after the uid change, when setting groups is no longer allowed).
//!
//! Input and output are driven by one `poll()` loop in the calling thread: the message
//! is fed to the command while its output (stdout and stderr on one pipe) is read, so
//! neither side can fill a pipe and stall the other. The time limit covers everything;
//! when it passes, the whole process group is killed.

use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::privileges::{Identity, is_root};
use crate::deliver::{Dsn, Outcome};
use crate::sysexits::describe_io;

/// How much of a failing command's output goes into the bounce reason.
const OUTPUT_KEPT: usize = 1000;

/// One command delivery.
pub struct Spec<'a> {
    pub command: &'a str,
    pub identity: &'a Identity,
    pub env: Vec<(String, String)>,
    pub time_limit: Duration,
}

/// Runs the command with `input` on its standard input and says what happened, in
/// Postfix's words.
pub fn run(spec: &Spec, input: impl Read) -> Outcome {
    match execute(spec, input) {
        Ok(end) => judge(spec.command, end),
        Err(e) => Outcome::deferred(
            "local",
            Dsn::TEMP_LOCAL,
            format!(
                "cannot execute command \"{}\": {}",
                spec.command,
                describe_io(&e)
            ),
        ),
    }
}

/// How the command ended, and what it printed.
struct End {
    status: Option<ExitStatus>,
    timed_out: bool,
    output: Vec<u8>,
}

fn execute(spec: &Spec, mut input: impl Read) -> io::Result<End> {
    let me = nix::unistd::geteuid().as_raw();
    let id = spec.identity;
    if !is_root() && id.uid != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("cannot run as uid {}: not running as root", id.uid),
        ));
    }
    let (out_read, out_write) = pipe()?;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(spec.command)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::from(out_write.try_clone()?))
        .stderr(Stdio::from(out_write))
        .process_group(0);
    let switch = is_root();
    let (uid, gid) = (id.uid, id.gid);
    let groups: Vec<libc::gid_t> = id.groups.clone();
    let home = CString::new(id.home.as_os_str().as_bytes()).unwrap_or_else(|_| c"/".into());
    // SAFETY: the hook runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: it makes raw system calls on data prepared
    // before the fork and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if switch
                && (libc::syscall(SYS_SETGROUPS, groups.len(), groups.as_ptr()) != 0
                    || libc::syscall(SYS_SETRESGID, gid, gid, gid) != 0
                    || libc::syscall(SYS_SETRESUID, uid, uid, uid) != 0)
            {
                return Err(io::Error::last_os_error());
            }
            libc::umask(0o077);
            if libc::chdir(home.as_ptr()) != 0 {
                libc::chdir(c"/".as_ptr());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    // Our copies of the pipe's write end live in `cmd`: close them, or the output would
    // never reach end-of-file.
    drop(cmd);
    let stdin = child.stdin.take().map(OwnedFd::from);
    let deadline = Instant::now() + spec.time_limit;
    let result = pump(&mut child, stdin, out_read, &mut input, deadline);
    match result {
        Ok((status, output)) => Ok(End {
            timed_out: status.is_none(),
            status,
            output,
        }),
        Err(e) => {
            kill_group(&child);
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Feeds the input and collects output until the command has exited (or the deadline
/// passed: then the group is killed and the status is `None`).
fn pump(
    child: &mut Child,
    stdin: Option<OwnedFd>,
    output: OwnedFd,
    input: &mut dyn Read,
    deadline: Instant,
) -> io::Result<(Option<ExitStatus>, Vec<u8>)> {
    let mut feed = Feed {
        fd: stdin,
        buf: vec![0u8; 64 * 1024],
        start: 0,
        end: 0,
        done: false,
    };
    let mut out = Some(output);
    if let Some(fd) = &feed.fd {
        set_nonblocking(fd.as_raw_fd())?;
    }
    if let Some(fd) = &out {
        set_nonblocking(fd.as_raw_fd())?;
    }
    let mut kept = Vec::new();
    let mut exited: Option<ExitStatus> = None;
    loop {
        let now = Instant::now();
        if now >= deadline {
            kill_group(child);
            let _ = child.wait();
            return Ok((None, kept));
        }
        if exited.is_none() {
            exited = child.try_wait()?;
        }
        if let Some(status) = exited {
            // Gone: what it did not read it will never read. Take the output already in
            // the pipe (a background child may hold the pipe open for ever) and stop.
            if let Some(fd) = &out {
                drain(fd.as_raw_fd(), &mut kept);
            }
            return Ok((Some(status), kept));
        }
        feed.refill(input)?;
        let wait = deadline
            .saturating_duration_since(now)
            .min(Duration::from_millis(50));
        let Some(fds) = poll_ready(feed.fd.as_ref(), out.as_ref(), wait)? else {
            continue;
        };
        for pfd in &fds {
            if pfd.revents == 0 {
                continue;
            }
            if feed.fd.as_ref().is_some_and(|fd| fd.as_raw_fd() == pfd.fd) {
                feed.write_some(pfd.fd);
            } else if out.as_ref().is_some_and(|fd| fd.as_raw_fd() == pfd.fd) {
                read_some(pfd.fd, &mut out, &mut kept);
            }
        }
        if feed.fd.is_none() && out.is_none() && exited.is_none() {
            // Nothing left to move: wait for the exit, still bounded by the deadline.
            if let Some(status) = wait_before(child, deadline)? {
                return Ok((Some(status), kept));
            }
        }
    }
}

/// The command's standard input, and what was read for it but not yet written.
struct Feed {
    /// `None` once the input has ended or the command stopped reading.
    fd: Option<OwnedFd>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The input has ended (or no longer matters).
    done: bool,
}

impl Feed {
    /// Reads more input when all that was read is written; closes the pipe at the end.
    fn refill(&mut self, input: &mut dyn Read) -> io::Result<()> {
        if self.fd.is_some() && self.start == self.end && !self.done {
            let n = input.read(&mut self.buf)?;
            self.start = 0;
            self.end = n;
            self.done = n == 0;
        }
        if self.fd.is_some() && self.start == self.end && self.done {
            self.fd = None; // end of input for the command
        }
        Ok(())
    }

    /// Writes what the pipe `fd` (ours) takes of the buffer.
    fn write_some(&mut self, fd: RawFd) {
        let (start, end) = (self.start, self.end);
        // SAFETY: writing from our buffer to an fd we own.
        let n = unsafe { libc::write(fd, self.buf[start..end].as_ptr().cast(), end - start) };
        if n >= 0 {
            self.start += n as usize;
        } else {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => {}
                // The command stopped reading: that is its business (many
                // filters only look at the headers).
                _ => {
                    self.fd = None;
                    self.done = true;
                }
            }
        }
    }
}

/// Waits up to `wait` for the input pipe to take more or the output to have some.
/// Returns the descriptors polled with what is ready, `None` when interrupted.
fn poll_ready(
    stdin: Option<&OwnedFd>,
    out: Option<&OwnedFd>,
    wait: Duration,
) -> io::Result<Option<Vec<libc::pollfd>>> {
    let mut fds = Vec::with_capacity(2);
    if let Some(fd) = stdin {
        fds.push(libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        });
    }
    if let Some(fd) = out {
        fds.push(libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
    }
    // SAFETY: fds is a live array of pollfd of the given length.
    let rc = unsafe {
        libc::poll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            wait.as_millis() as i32,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(fds))
}

/// Reads what the output pipe `fd` (ours) holds into `kept`; at its end, or on an
/// error, stops watching it (`out` becomes `None`).
fn read_some(fd: RawFd, out: &mut Option<OwnedFd>, kept: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    // SAFETY: reading into our stack buffer from an fd we own.
    let n = unsafe { libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len()) };
    if n > 0 {
        keep(kept, &chunk[..n as usize]);
    } else if n == 0 {
        *out = None;
    } else {
        let e = io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) {
            *out = None;
        }
    }
}

/// The command's exit status if it exits before `deadline`.
fn wait_before(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(None)
}

fn keep(kept: &mut Vec<u8>, bytes: &[u8]) {
    let room = OUTPUT_KEPT.saturating_sub(kept.len());
    kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

fn drain(fd: RawFd, kept: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    loop {
        // SAFETY: as in `read_some`; the descriptor is non-blocking.
        let n = unsafe { libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len()) };
        if n <= 0 {
            return;
        }
        keep(kept, &chunk[..n as usize]);
    }
}

fn kill_group(child: &Child) {
    // SAFETY: signals the process group we created for the child (its pgid is its pid).
    unsafe {
        libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain fcntl calls on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A pipe with close-on-exec set from the start, so that commands started at the same
/// time by other threads do not inherit our end (they would keep it open).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    unsafe { Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))) }
}

#[cfg(target_pointer_width = "64")]
const SYS_SETGROUPS: libc::c_long = libc::SYS_setgroups;
#[cfg(target_pointer_width = "64")]
const SYS_SETRESGID: libc::c_long = libc::SYS_setresgid;
#[cfg(target_pointer_width = "64")]
const SYS_SETRESUID: libc::c_long = libc::SYS_setresuid;
#[cfg(not(target_pointer_width = "64"))]
const SYS_SETGROUPS: libc::c_long = libc::SYS_setgroups32;
#[cfg(not(target_pointer_width = "64"))]
const SYS_SETRESGID: libc::c_long = libc::SYS_setresgid32;
#[cfg(not(target_pointer_width = "64"))]
const SYS_SETRESUID: libc::c_long = libc::SYS_setresuid32;

/// Postfix's `sys_exits` table: status code, DSN, text. Codes it marks as soft defer.
const SYS_EXITS: &[(i32, Dsn, &str)] = &[
    (64, Dsn::SYSTEM_ERROR, "command line usage error"),
    (65, Dsn::MEDIA_ERROR, "data format error"),
    (66, Dsn::SYSTEM_ERROR, "cannot open input"),
    (67, Dsn::UNKNOWN_USER, "user unknown"),
    (68, Dsn::UNKNOWN_HOST, "host name unknown"),
    (69, Dsn::SYSTEM_ERROR, "service unavailable"),
    (70, Dsn::SYSTEM_ERROR, "internal software error"),
    (71, Dsn::TEMP_LOCAL, "system resource problem"),
    (72, Dsn::SYSTEM_ERROR, "critical OS file missing"),
    (73, Dsn::MAILBOX_UNUSABLE, "can't create user output file"),
    (74, Dsn::SYSTEM_ERROR, "input/output error"),
    (75, Dsn::TEMP_LOCAL, "temporary failure"),
    (76, Dsn::PROTOCOL_ERROR, "remote error in protocol"),
    (77, Dsn::PERMISSION_DENIED, "permission denied"),
    (78, Dsn::CONFIG_ERROR, "local configuration error"),
];

fn judge(command: &str, end: End) -> Outcome {
    let output = printable(&end.output);
    let with_output = |text: String| {
        if output.is_empty() {
            text
        } else {
            format!("{text}. Command output: {output}")
        }
    };
    if end.timed_out {
        return Outcome::bounced(
            "local",
            Dsn::SYSTEM_ERROR,
            with_output(format!("Command time limit exceeded: \"{command}\"")),
        );
    }
    let Some(status) = end.status else {
        return Outcome::deferred("local", Dsn::TEMP_LOCAL, "command status unknown");
    };
    if let Some(signal) = status.signal() {
        return Outcome::bounced(
            "local",
            Dsn::SYSTEM_ERROR,
            with_output(format!("Command died with signal {signal}: \"{command}\"")),
        );
    }
    let code = status.code().unwrap_or(-1);
    if code == 0 {
        return Outcome::sent("local", format!("delivered to command: {command}"));
    }
    if let Some(&(_, dsn, text)) = SYS_EXITS.iter().find(|(c, _, _)| *c == code) {
        let text = with_output(text.to_string());
        return if dsn.is_transient() {
            Outcome::deferred("local", dsn, text)
        } else {
            Outcome::bounced("local", dsn, text)
        };
    }
    Outcome::bounced(
        "local",
        Dsn::SYSTEM_ERROR,
        with_output(format!("Command died with status {code}: \"{command}\"")),
    )
}

/// Output made fit for one log line and a DSN: line breaks and controls become spaces,
/// runs of white space shrink to one, non-ASCII bytes are kept as UTF-8 where valid.
fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            space = true;
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::Status;

    fn spec<'a>(command: &'a str, me: &'a Identity, limit: Duration) -> Spec<'a> {
        Spec {
            command,
            identity: me,
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            time_limit: limit,
        }
    }

    #[test]
    fn success_failure_and_tempfail() {
        let me = Identity::current();
        let long = Duration::from_secs(30);
        let ok = run(&spec("cat >/dev/null", &me, long), &b"hello\n"[..]);
        assert_eq!(ok.status, Status::Sent, "{ok:?}");
        assert_eq!(ok.text, "delivered to command: cat >/dev/null");

        let bad = run(
            &spec("echo oops; echo err >&2; exit 3", &me, long),
            &b""[..],
        );
        assert_eq!(bad.status, Status::Bounced);
        assert_eq!(bad.dsn, Dsn::SYSTEM_ERROR);
        assert_eq!(
            bad.text,
            "Command died with status 3: \"echo oops; echo err >&2; exit 3\". Command output: oops err"
        );

        let temp = run(&spec("exit 75", &me, long), &b""[..]);
        assert_eq!(temp.status, Status::Deferred);
        assert_eq!(temp.text, "temporary failure");
        assert_eq!(temp.dsn, Dsn::TEMP_LOCAL);

        let nouser = run(&spec("echo no such; exit 67", &me, long), &b""[..]);
        assert_eq!(nouser.status, Status::Bounced);
        assert_eq!(nouser.dsn, Dsn::UNKNOWN_USER);
        assert_eq!(nouser.text, "user unknown. Command output: no such");
    }

    #[test]
    fn large_input_to_a_command_that_does_not_read_is_fine() {
        let me = Identity::current();
        let big = vec![b'x'; 4 << 20];
        let out = run(&spec("exit 0", &me, Duration::from_secs(30)), &big[..]);
        assert_eq!(out.status, Status::Sent, "{out:?}");
        // And one that reads it all while writing much output.
        let out = run(
            &spec("cat; seq 1 100000", &me, Duration::from_secs(30)),
            &big[..],
        );
        assert_eq!(out.status, Status::Sent, "{out:?}");
    }

    #[test]
    fn the_time_limit_kills_the_whole_group() {
        let me = Identity::current();
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        let command = format!("(sleep 2; touch {}) & sleep 30", marker.display());
        let started = Instant::now();
        let out = run(&spec(&command, &me, Duration::from_millis(500)), &b""[..]);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(out.status, Status::Bounced, "{out:?}");
        assert!(
            out.text.starts_with("Command time limit exceeded"),
            "{}",
            out.text
        );
        std::thread::sleep(Duration::from_millis(2500));
        assert!(!marker.exists(), "a process of the group survived the kill");
    }

    #[test]
    fn a_background_child_holding_the_pipe_does_not_hang_us() {
        let me = Identity::current();
        let started = Instant::now();
        let out = run(
            &spec(
                "echo started; sleep 5 >/dev/null 2>&1 & echo done",
                &me,
                Duration::from_secs(30),
            ),
            &b""[..],
        );
        assert_eq!(out.status, Status::Sent, "{out:?}");
        assert!(started.elapsed() < Duration::from_secs(4));
        let out = run(
            &spec("sleep 3 & exit 1", &me, Duration::from_secs(30)),
            &b""[..],
        );
        assert_eq!(out.status, Status::Bounced);
    }

    #[test]
    fn environment_is_only_what_we_give() {
        let me = Identity::current();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("env");
        let mut s = spec("", &me, Duration::from_secs(30));
        let command = format!("env > {}", file.display());
        s.command = &command;
        s.env.push(("SENDER".into(), "a@b".into()));
        let out = run(&s, &b""[..]);
        assert_eq!(out.status, Status::Sent);
        let env = std::fs::read_to_string(&file).unwrap();
        assert!(env.contains("SENDER=a@b\n"));
        assert!(!env.contains("CARGO"), "{env}");
    }
}
