//! The SMTP client in its own process: `mailroom smtp-agent -c DIR`, started by the
//! daemon (and by one-shot deliveries, `sendmail -q`/`-odi`) so that the code that parses
//! bytes from the network (DNS answers, a server's replies, TLS) never runs as root.
//!
//! A process starts as its parent's user (root for the daemon), reads `main.cf`, builds
//! its [`SmtpContext`] (reading the client TLS files, the password maps and the DKIM keys
//! while it still may), becomes `mail_owner` for good
//! ([`crate::privilege::MailOwner::become_owner`]; a process that is not root runs on as
//! itself), says it is ready, then serves one job at a time until its socket closes. The
//! parent keeps a few of them (one per delivery worker at most) and reuses them: a
//! process start per message would cost more than the delivery. A new configuration
//! (`mailroom reload`) brings new agents, which read the keys again.
//!
//! # Protocol
//!
//! The process's standard input is one end of a Unix stream socketpair; everything goes
//! over it as lines of JSON, each one object on one line ended by `\n`:
//!
//! 1. At start the agent sends `{"ready":true}`, or `{"error":"TEXT"}` when it cannot
//!    serve (bad configuration, unknown `mail_owner`), and exits.
//! 2. The parent sends a job: `{"job":N,"sender":S,"ret":R,"envid":E,"offset":O,"size":Z,
//!    "recipients":[{"address":A,"original":A0,"notify":F},...]}`, with the queue file
//!    open read-only passed in the same `sendmsg` as an `SCM_RIGHTS` descriptor: the
//!    message is `Z` bytes from offset `O` of it. The agent needs no permission on the
//!    queue, and could not write to the file if it tried.
//! 3. The agent answers `{"job":N,"outcomes":[{"status":"sent"|"deferred"|"bounced",
//!    "dsn":"X.Y.Z","text":T,"relay":H,"remote":null|{"mta":M,"reply":P}[,"conn_use":U]},...],
//!    "warnings":[W,...],"notes":[I,...]}`: one outcome per recipient of the job, in its
//!    order (`U`, only when a cached connection carried the message: which transaction on
//!    it this was, Postfix's `conn_use`), and the warnings and information lines (TLS established) the client would
//!    have logged (the agent cannot write the root-owned `maillog_file`; the parent logs
//!    them as `$syslog_name/smtp`).
//!
//! The parent trusts nothing it reads: a line longer than [`reply_limit`], anything but
//! the expected object, another job number, a count that is not the job's, an unknown
//! status, a malformed DSN, a text over [`MAX_TEXT`] bytes, or no answer before the
//! deadline fails the job: its recipients are deferred (`4.3.0`, "delivery agent ...
//! failed") and the process is killed. An agent that took over cannot crash the daemon
//! nor say anything about the recipients of another message.

use crate::queue::envelope::clip;
use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::{SmtpContext, Warnings, deliver};
use crate::config::{Config, DEFAULT_DIR, DirSource};
use crate::deliver::{Dsn, MessageSource, Outcome, RemoteReply, Status};
use crate::queue::{Envelope, QueueId, Recipient};
use crate::sysexits::{Error, Result};

/// The hidden subcommand of `mailroom` that runs an agent.
pub const SUBCOMMAND: &str = "smtp-agent";

/// The longest outcome text, server reply or warning the parent accepts, in bytes. The
/// agent shortens longer ones (a remote server's reply can be any length).
pub const MAX_TEXT: usize = 4096;
/// The longest `relay` or remote MTA name.
pub const MAX_NAME: usize = 1024;

/// The largest `conn_use` the parent accepts (far above any reuse count limit).
const MAX_CONN_USE: u64 = u32::MAX as u64;
/// At most this many warnings per job.
pub const MAX_WARNINGS: usize = 64;
/// The longest job line the agent reads.
const MAX_JOB: usize = 64 << 20;
/// How long an agent may take to start (read main.cf, the TLS files) and say so.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// The longest reply line for a job of `count` recipients: every string at its limit,
/// every byte escaped (`\u0001` is six bytes for one).
pub fn reply_limit(count: usize) -> usize {
    let string = |n: usize| 6 * n + 2;
    // 160: the keys, status, DSN and `conn_use`.
    let outcome = string(MAX_TEXT) * 2 + string(MAX_NAME) * 2 + 160;
    256 + count.saturating_mul(outcome) + MAX_WARNINGS * (string(MAX_TEXT) + 1)
}

// ---------------------------------------------------------------------------------------
// Jobs.

/// Encodes job `number` (without the descriptor, which travels beside it).
pub fn encode_job(
    number: u64,
    envelope: &Envelope,
    message: &MessageSource,
    recipients: &[&Recipient],
) -> Vec<u8> {
    let recipients: Vec<Value> = recipients
        .iter()
        .map(|r| json!({"address": r.address, "original": r.original, "notify": r.notify}))
        .collect();
    let job = json!({
        "job": number,
        "sender": envelope.sender,
        "ret": envelope.ret,
        "envid": envelope.envid,
        "offset": message.offset,
        "size": message.size,
        "recipients": recipients,
    });
    line(&job)
}

fn line(value: &Value) -> Vec<u8> {
    let mut bytes = value.to_string().into_bytes();
    bytes.push(b'\n');
    bytes
}

/// A job as the agent reads it.
#[derive(Debug, PartialEq, Eq)]
struct Job {
    number: u64,
    envelope: Envelope,
    offset: u64,
    recipients: Vec<Recipient>,
}

fn parse_job(line: &[u8]) -> std::result::Result<Job, String> {
    let object = parse_object(line)?;
    let number = unsigned(&object, "job")?;
    let text = |name: &str| string(&object, name, MAX_JOB);
    let mut envelope = Envelope::new(QueueId::generate(), 0, 0, &text("sender")?);
    envelope.ret = text("ret")?;
    envelope.envid = text("envid")?;
    envelope.size = unsigned(&object, "size")?;
    let offset = unsigned(&object, "offset")?;
    let list = array(&object, "recipients")?;
    let mut recipients = Vec::with_capacity(list.len());
    for item in list {
        let r = item.as_object().ok_or("a recipient is not an object")?;
        let mut rcpt = Recipient::new(
            &string(r, "original", MAX_JOB)?,
            &string(r, "address", MAX_JOB)?,
        );
        rcpt.notify = string(r, "notify", MAX_JOB)?;
        recipients.push(rcpt);
    }
    Ok(Job {
        number,
        envelope,
        offset,
        recipients,
    })
}

// ---------------------------------------------------------------------------------------
// Replies.

/// What an agent said about one job.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    /// One per recipient of the job, in its order.
    pub outcomes: Vec<Outcome>,
    /// What the client wanted logged, as warnings.
    pub warnings: Vec<String>,
    /// What the client wanted logged as plain information (TLS established).
    pub notes: Vec<String>,
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Sent => "sent",
        Status::Deferred => "deferred",
        Status::Bounced => "bounced",
    }
}

/// Encodes the reply to job `number`, every string cut to what the parent accepts.
pub fn encode_reply(
    number: u64,
    outcomes: &[Outcome],
    warnings: &[String],
    notes: &[String],
) -> Vec<u8> {
    let outcomes: Vec<Value> = outcomes
        .iter()
        .map(|o| {
            let remote = match &o.remote {
                Some(r) => {
                    json!({"mta": clip(&r.mta, MAX_NAME), "reply": clip(&r.reply, MAX_TEXT)})
                }
                None => Value::Null,
            };
            let mut outcome = json!({
                "status": status_name(o.status),
                "dsn": o.dsn.to_string(),
                "text": clip(&o.text, MAX_TEXT),
                "relay": clip(&o.relay, MAX_NAME),
                "remote": remote,
            });
            if o.conn_use > 0 {
                outcome["conn_use"] = json!(o.conn_use);
            }
            outcome
        })
        .collect();
    let clipped = |list: &[String]| -> Vec<String> {
        list.iter()
            .take(MAX_WARNINGS)
            .map(|w| clip(w, MAX_TEXT).to_string())
            .collect()
    };
    line(&json!({
        "job": number,
        "outcomes": outcomes,
        "warnings": clipped(warnings),
        "notes": clipped(notes),
    }))
}

/// Reads an agent's reply to job `number` of `count` recipients; any deviation from the
/// protocol is an error that names it.
pub fn parse_reply(line: &[u8], number: u64, count: usize) -> std::result::Result<Reply, String> {
    if line.len() > reply_limit(count) {
        return Err(format!("reply of {} bytes is too long", line.len()));
    }
    let object = parse_object(line)?;
    let got = unsigned(&object, "job")?;
    if got != number {
        return Err(format!("reply to job {got}, expected {number}"));
    }
    let list = array(&object, "outcomes")?;
    if list.len() != count {
        return Err(format!(
            "{} outcomes for {count} recipients",
            list.len().min(1 << 20)
        ));
    }
    let outcomes = list
        .iter()
        .map(parse_outcome)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let warnings = texts(&object, "warning")?;
    // Notes came later than warnings: a reply without them has none.
    let notes = match object.get("notes") {
        None => Vec::new(),
        Some(_) => texts(&object, "note")?,
    };
    Ok(Reply {
        outcomes,
        warnings,
        notes,
    })
}

fn parse_outcome(value: &Value) -> std::result::Result<Outcome, String> {
    let o = value.as_object().ok_or("an outcome is not an object")?;
    let status = match string(o, "status", 16)?.as_str() {
        "sent" => Status::Sent,
        "deferred" => Status::Deferred,
        "bounced" => Status::Bounced,
        other => return Err(format!("unknown status {other:?}")),
    };
    let dsn: Dsn = string(o, "dsn", 16)?
        .parse()
        .map_err(|e: crate::deliver::dsn::ParseDsnError| e.to_string())?;
    let remote = match o.get("remote") {
        None | Some(Value::Null) => None,
        Some(Value::Object(r)) => Some(RemoteReply {
            mta: string(r, "mta", MAX_NAME)?,
            reply: string(r, "reply", MAX_TEXT)?,
        }),
        Some(_) => return Err("remote is not an object".into()),
    };
    let conn_use = match o.get("conn_use") {
        None => 0,
        Some(n) => n
            .as_u64()
            .filter(|&n| n <= MAX_CONN_USE)
            .ok_or("conn_use is not a count")?,
    };
    Ok(Outcome {
        status,
        dsn,
        text: string(o, "text", MAX_TEXT)?,
        relay: string(o, "relay", MAX_NAME)?,
        remote,
        conn_use,
    })
}

// Field readers shared by both sides.

fn parse_object(line: &[u8]) -> std::result::Result<Map<String, Value>, String> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("not a JSON object".into()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

fn unsigned(o: &Map<String, Value>, name: &str) -> std::result::Result<u64, String> {
    o.get(name)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("{name} is missing or not a number"))
}

/// The strings of list `{name}s` (warnings, notes): at most [`MAX_WARNINGS`], each at
/// most [`MAX_TEXT`] bytes.
fn texts(o: &Map<String, Value>, name: &str) -> std::result::Result<Vec<String>, String> {
    let list = array(o, &format!("{name}s"))?;
    if list.len() > MAX_WARNINGS {
        return Err(format!("more than {MAX_WARNINGS} {name}s"));
    }
    list.iter().map(|t| bounded(t, name, MAX_TEXT)).collect()
}

fn array<'a>(o: &'a Map<String, Value>, name: &str) -> std::result::Result<&'a [Value], String> {
    o.get(name)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .ok_or_else(|| format!("{name} is missing or not a list"))
}

fn string(o: &Map<String, Value>, name: &str, max: usize) -> std::result::Result<String, String> {
    bounded(o.get(name).unwrap_or(&Value::Null), name, max)
}

fn bounded(value: &Value, name: &str, max: usize) -> std::result::Result<String, String> {
    match value.as_str() {
        Some(text) if text.len() <= max => Ok(text.to_string()),
        Some(text) => Err(format!("{name} of {} bytes is too long", text.len())),
        None => Err(format!("{name} is missing or not a string")),
    }
}

// ---------------------------------------------------------------------------------------
// The agent: `mailroom smtp-agent -c DIR`.

/// Warnings and notes kept for the reply to the job in progress.
#[derive(Default)]
struct Collected {
    warnings: Mutex<Vec<String>>,
    notes: Mutex<Vec<String>>,
}

fn keep(list: &Mutex<Vec<String>>, text: &str) {
    let mut list = list.lock().unwrap_or_else(|p| p.into_inner());
    if list.len() < MAX_WARNINGS {
        list.push(clip(text, MAX_TEXT).to_string());
    }
}

fn take(list: &Mutex<Vec<String>>) -> Vec<String> {
    std::mem::take(&mut *list.lock().unwrap_or_else(|p| p.into_inner()))
}

impl Warnings for Collected {
    fn warning(&self, text: &str) {
        keep(&self.warnings, text);
    }
    fn info(&self, text: &str) {
        keep(&self.notes, text);
    }
}

/// Runs an agent on the socket that is its standard input, until the socket closes.
pub fn serve(config_dir: &Path) -> Result<()> {
    let socket = parent_socket()?;
    let mut writer = socket
        .try_clone()
        .map_err(|e| Error::io("smtp-agent: socket", &e))?;
    let warnings = Arc::new(Collected::default());
    let ctx = match start(config_dir, Arc::clone(&warnings) as Arc<dyn Warnings>) {
        Ok(ctx) => ctx,
        Err(e) => {
            let text = clip(&e.to_string(), MAX_TEXT).to_string();
            let _ = writer.write_all(&line(&json!({ "error": text })));
            return Err(e);
        }
    };
    let io_error = |e: io::Error| Error::io("smtp-agent: socket", &e);
    writer
        .write_all(&line(&json!({"ready": true})))
        .map_err(io_error)?;
    loop {
        // Cached connections are closed in time even when no job comes.
        wait_for_job(&socket, &ctx).map_err(io_error)?;
        let Some((bytes, file)) = receive_job(&socket).map_err(io_error)? else {
            break;
        };
        let job = parse_job(&bytes).map_err(|e| Error::software(format!("bad job: {e}")))?;
        let message = MessageSource {
            file: &file,
            offset: job.offset,
            size: job.envelope.size,
        };
        let refs: Vec<&Recipient> = job.recipients.iter().collect();
        let outcomes = deliver(&ctx, &job.envelope, message, &refs);
        drop(file);
        let (said, notes) = (take(&warnings.warnings), take(&warnings.notes));
        let reply = encode_reply(job.number, &outcomes, &said, &notes);
        writer.write_all(&reply).map_err(io_error)?;
    }
    // The parent closed the socket (shutdown, reload): say goodbye to the servers.
    ctx.close_connections();
    Ok(())
}

/// Waits until the socket has something to read (a job, or its end), closing cached
/// connections as their idle time runs out.
fn wait_for_job(socket: &UnixStream, ctx: &SmtpContext) -> io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    while let Some(due) = ctx.next_connection_expiry() {
        let wait = due.saturating_duration_since(Instant::now());
        // Rounded up: waking a little late is fine, waking early would spin.
        let millis = wait.as_millis().saturating_add(1).min(i32::MAX as u128) as i32;
        let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
        match poll(
            &mut fds,
            PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => ctx.close_idle_connections(),
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Everything done as the parent's user, then the drop to `mail_owner`.
fn start(config_dir: &Path, warnings: Arc<dyn Warnings>) -> Result<SmtpContext> {
    let source = match config_dir == Path::new(DEFAULT_DIR) {
        true => DirSource::Default,
        false => DirSource::Explicit,
    };
    let config = Config::load_dir(config_dir.to_path_buf(), source)?;
    let ctx = SmtpContext::from_config(&config)?
        .with_warnings(warnings)
        .with_password_maps_read()
        .with_dkim_keys_read(&config)
        .with_connection_cache();
    // Only root can become another user; anyone else runs the client as themselves.
    if nix::unistd::geteuid().is_root() {
        config.mail_owner()?.become_owner()?;
    }
    Ok(ctx)
}

/// Standard input, which must be the socket the parent made.
fn parent_socket() -> Result<UnixStream> {
    let is_socket = nix::sys::stat::fstat(std::io::stdin())
        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFSOCK);
    if !is_socket {
        return Err(Error::usage(format!(
            "{SUBCOMMAND} is started by the mailroom daemon, with a socket as its standard input"
        )));
    }
    // SAFETY: descriptor 0 is open (fstat succeeded) and nothing else in this process
    // uses standard input; the stream takes it over.
    Ok(unsafe { UnixStream::from_raw_fd(0) })
}

/// Reads one job line and the descriptor that came with it; `None` at end of input.
fn receive_job(socket: &UnixStream) -> io::Result<Option<(Vec<u8>, File)>> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut data = Vec::new();
    let mut files: Vec<OwnedFd> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    while !data.ends_with(b"\n") {
        let mut iov = [IoSliceMut::new(&mut chunk)];
        let msg = recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let n = msg.bytes;
        for cmsg in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                // SAFETY: the kernel just installed these descriptors for us.
                files.extend(
                    fds.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        if n == 0 {
            return match data.is_empty() && files.is_empty() {
                true => Ok(None),
                false => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "job cut short",
                )),
            };
        }
        data.extend_from_slice(&chunk[..n]);
        if data.len() > MAX_JOB {
            return Err(io::Error::other("job too long"));
        }
    }
    let mut files = files.into_iter();
    match (
        files.next(),
        files.next(),
        data.iter().filter(|&&b| b == b'\n').count(),
    ) {
        (Some(fd), None, 1) => Ok(Some((data, File::from(fd)))),
        _ => Err(io::Error::other("a job is one line with one descriptor")),
    }
}

// ---------------------------------------------------------------------------------------
// The parent's side of one agent process.

/// One running agent, as its parent holds it. Dropping it kills the process.
pub struct AgentProcess {
    child: Child,
    socket: UnixStream,
    jobs: u64,
    /// Whether it answered its last job (or its start) as the protocol says: only such
    /// an agent is given time to close its connections when dropped.
    healthy: bool,
}

impl AgentProcess {
    /// Starts `program smtp-agent -c config_dir` and waits until it is ready; an error
    /// says why it is not (its own words when it could say them).
    pub fn start(program: &Path, config_dir: &Path) -> std::result::Result<AgentProcess, String> {
        let (mine, theirs) =
            UnixStream::pair().map_err(|e| format!("cannot make a socket pair: {e}"))?;
        let child = Command::new(program)
            .arg(SUBCOMMAND)
            .arg("-c")
            .arg(config_dir)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let mut agent = AgentProcess {
            child,
            socket: mine,
            jobs: 0,
            healthy: false,
        };
        let limit = 64 + 6 * MAX_TEXT + 32;
        let line = read_line(&mut agent.socket, limit, Instant::now() + START_DEADLINE)
            .map_err(|e| agent.describe(&e))?;
        let object = parse_object(&line).map_err(|e| agent.describe(&e))?;
        if object.get("ready") == Some(&Value::Bool(true)) {
            agent.healthy = true;
            return Ok(agent);
        }
        match string(&object, "error", MAX_TEXT) {
            Ok(text) => Err(format!("{} could not start: {text}", agent.name())),
            Err(e) => Err(agent.describe(&e)),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited (it is then of no use).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    fn name(&self) -> String {
        format!("delivery agent {SUBCOMMAND}[{}]", self.pid())
    }

    fn describe(&self, what: &str) -> String {
        format!("{} failed: {what}", self.name())
    }

    /// Has the agent deliver `message` to `recipients`; an error (the process is then
    /// useless, drop it) when it does not answer as the protocol says by `deadline`.
    pub fn deliver(
        &mut self,
        envelope: &Envelope,
        message: MessageSource,
        recipients: &[&Recipient],
        deadline: Duration,
    ) -> std::result::Result<Reply, String> {
        let now = Instant::now();
        // A deadline past what the clock can count is no deadline at all.
        let until = now
            .checked_add(deadline)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
        self.jobs += 1;
        let number = self.jobs;
        self.healthy = false;
        // A descriptor of its own, read-only: the agent must not be able to write to the
        // queue file (the daemon's is open for writing).
        let readonly = File::open(format!("/proc/self/fd/{}", message.file.as_raw_fd()))
            .map_err(|e| format!("cannot reopen the queue file read-only: {e}"))?;
        let job = encode_job(number, envelope, &message, recipients);
        send_job(&self.socket, &job, &readonly, until).map_err(|e| self.lost(&e))?;
        drop(readonly);
        let line = read_line(&mut self.socket, reply_limit(recipients.len()), until)
            .map_err(|e| self.lost(&e))?;
        let reply = parse_reply(&line, number, recipients.len()).map_err(|e| self.describe(&e))?;
        self.healthy = true;
        Ok(reply)
    }

    /// Closes the socket: a healthy agent then closes its cached connections with QUIT
    /// and exits. Dropping it after this waits less.
    pub fn hang_up(&self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }

    fn lost(&mut self, what: &str) -> String {
        // Give a process that is dying a moment to be seen dead: "died" says more.
        let deadline = Instant::now() + Duration::from_millis(100);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return format!("{} died ({status})", self.name());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.describe(what)
    }
}

/// How long a healthy agent gets, once its socket is closed, to say QUIT to the servers
/// it keeps connections to; a server that does not answer that fast is not waited for.
const GOODBYE: Duration = Duration::from_millis(500);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if self.healthy {
            self.hang_up();
            let deadline = Instant::now() + GOODBYE;
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a job line with `file` attached, all of it by `until`.
fn send_job(
    socket: &UnixStream,
    job: &[u8],
    file: &File,
    until: Instant,
) -> std::result::Result<(), String> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let left = until.saturating_duration_since(Instant::now());
    socket
        .set_write_timeout(Some(left.max(Duration::from_millis(1))))
        .map_err(|e| e.to_string())?;
    let fds = [file.as_raw_fd()];
    let sent = sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(job)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(|e| format!("cannot send the job: {e}"))?;
    // A long job may go in several writes; the descriptor went with the first.
    let mut rest = &job[sent..];
    let mut writer = socket;
    while !rest.is_empty() {
        if Instant::now() >= until {
            return Err("timed out sending the job".into());
        }
        match writer.write(rest) {
            Ok(0) => return Err("connection closed while sending the job".into()),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot send the job: {e}")),
        }
    }
    Ok(())
}

/// Reads one line of at most `limit` bytes by `until`; nothing may follow it.
fn read_line(
    socket: &mut UnixStream,
    limit: usize,
    until: Instant,
) -> std::result::Result<Vec<u8>, String> {
    let mut data = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    while !data.ends_with(b"\n") {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("no answer in time".into());
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match socket.read(&mut chunk) {
            Ok(0) => return Err("connection closed".into()),
            Ok(n) => data.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err("no answer in time".into());
            }
            Err(e) => return Err(e.to_string()),
        }
        if data.len() > limit {
            return Err(format!("answer longer than {limit} bytes"));
        }
    }
    if data.iter().filter(|&&b| b == b'\n').count() != 1 {
        return Err("more than one line at once".into());
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: &str, dsn: &str) -> Value {
        json!({"status": status, "dsn": dsn, "text": "t", "relay": "r", "remote": null})
    }

    fn reply(job: u64, outcomes: Vec<Value>) -> Vec<u8> {
        line(&json!({"job": job, "outcomes": outcomes, "warnings": []}))
    }

    #[test]
    fn replies_that_break_the_protocol_are_refused() {
        let long = "x".repeat(MAX_TEXT + 1);
        let good = || outcome("sent", "2.0.0");
        // (what, line, expected count, error contains)
        let table: Vec<(&str, Vec<u8>, usize, &str)> = vec![
            ("garbage", b"\x00\xff not json\n".to_vec(), 1, "not JSON"),
            ("empty", b"\n".to_vec(), 1, "not JSON"),
            ("a list", b"[1,2]\n".to_vec(), 1, "not a JSON object"),
            ("too long", vec![b' '; reply_limit(1) + 1], 1, "too long"),
            (
                "no job number",
                line(&json!({"outcomes": [good()], "warnings": []})),
                1,
                "job is missing",
            ),
            (
                "another job",
                reply(8, vec![good()]),
                1,
                "reply to job 8, expected 7",
            ),
            (
                "too few",
                reply(7, vec![good()]),
                2,
                "1 outcomes for 2 recipients",
            ),
            (
                "too many",
                reply(7, vec![good(), good()]),
                1,
                "2 outcomes for 1 recipients",
            ),
            (
                "unknown status",
                reply(7, vec![outcome("delivered", "2.0.0")]),
                1,
                "unknown status",
            ),
            (
                "status not a string",
                reply(7, vec![json!({"status": 1})]),
                1,
                "status is missing",
            ),
            (
                "bad dsn",
                reply(7, vec![outcome("sent", "2.0")]),
                1,
                "not an RFC 3463",
            ),
            (
                "outcome not an object",
                reply(7, vec![json!("sent")]),
                1,
                "not an object",
            ),
            (
                "text too long",
                reply(
                    7,
                    vec![json!({"status": "sent", "dsn": "2.0.0", "text": long, "relay": "r"})],
                ),
                1,
                "text of 4097 bytes",
            ),
            (
                "no relay",
                reply(
                    7,
                    vec![json!({"status": "sent", "dsn": "2.0.0", "text": "t"})],
                ),
                1,
                "relay is missing",
            ),
            (
                "remote not an object",
                reply(
                    7,
                    vec![
                        json!({"status": "bounced", "dsn": "5.1.1", "text": "t", "relay": "r", "remote": 5}),
                    ],
                ),
                1,
                "remote is not",
            ),
            (
                "conn_use not a count",
                reply(
                    7,
                    vec![
                        json!({"status": "sent", "dsn": "2.0.0", "text": "t", "relay": "r", "conn_use": -1}),
                    ],
                ),
                1,
                "conn_use is not a count",
            ),
            (
                "conn_use too large",
                reply(
                    7,
                    vec![
                        json!({"status": "sent", "dsn": "2.0.0", "text": "t", "relay": "r", "conn_use": u64::MAX}),
                    ],
                ),
                1,
                "conn_use is not a count",
            ),
            (
                "too many warnings",
                line(
                    &json!({"job": 7, "outcomes": [good()], "warnings": vec!["w"; MAX_WARNINGS + 1]}),
                ),
                1,
                "more than 64 warnings",
            ),
            (
                "warning not a string",
                line(&json!({"job": 7, "outcomes": [good()], "warnings": [1]})),
                1,
                "warning is missing",
            ),
            (
                "deep nesting",
                format!("{}\n", "[".repeat(100_000)).into_bytes(),
                1,
                "not JSON",
            ),
        ];
        for (what, line, count, want) in table {
            let err = parse_reply(&line, 7, count).expect_err(what);
            assert!(err.contains(want), "{what}: {err}");
        }
    }

    #[test]
    fn what_an_agent_encodes_the_parent_reads_back() {
        let mut reused = Outcome::sent("mx.example[192.0.2.1]:25", "250 2.0.0 Ok");
        reused.conn_use = 7;
        let outcomes = vec![
            reused,
            Outcome::bounced(
                "mx.example[192.0.2.1]:25",
                Dsn::UNKNOWN_USER,
                "no such user",
            )
            .with_remote("mx.example", "550 5.1.1 no"),
            // A server's reply of any length is cut to what the parent accepts.
            Outcome::deferred("none", Dsn::TEMP_LOCAL, "é".repeat(MAX_TEXT)),
        ];
        let warnings = vec!["w\u{1}".to_string(); MAX_WARNINGS + 3];
        let notes = vec!["Untrusted TLS connection established".to_string()];
        let encoded = encode_reply(3, &outcomes, &warnings, &notes);
        let got = parse_reply(&encoded, 3, 3).unwrap();
        assert_eq!(got.outcomes[..2], outcomes[..2]);
        assert_eq!(got.outcomes[2].text, "é".repeat(MAX_TEXT / 2));
        assert_eq!(got.warnings.len(), MAX_WARNINGS);
        assert_eq!(got.notes, notes);
        // A reply without notes (an agent of the release before) has none.
        let old = line(&json!({"job": 3, "outcomes": [], "warnings": []}));
        assert_eq!(parse_reply(&old, 3, 0).unwrap().notes, Vec::<String>::new());
    }

    #[test]
    fn jobs_carry_the_envelope_and_the_descriptor() {
        use std::io::Write;
        let mut envelope = Envelope::new(QueueId::generate(), 0, 0, "s@example.org");
        envelope.ret = "hdrs".into();
        envelope.envid = "E1".into();
        envelope.size = 5;
        let mut rcpt = Recipient::new("Orig@example.net", "to@example.net");
        rcpt.notify = "never".into();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"envelope\nhello").unwrap();
        let message = MessageSource {
            file: &file,
            offset: 9,
            size: 5,
        };
        // Longer than one socket buffer: the descriptor goes with the first part.
        let mut many = vec![&rcpt; 1];
        let filler = Recipient::new("f", &"f".repeat(200_000));
        many.push(&filler);
        let job = encode_job(42, &envelope, &message, &many);
        let (parent, agent) = UnixStream::pair().unwrap();
        let sender = std::thread::spawn(move || {
            send_job(
                &parent,
                &job,
                &file,
                Instant::now() + Duration::from_secs(10),
            )
        });
        let (bytes, got_file) = receive_job(&agent).unwrap().unwrap();
        sender.join().unwrap().unwrap();
        let got = parse_job(&bytes).unwrap();
        assert_eq!(got.number, 42);
        assert_eq!(got.offset, 9);
        assert_eq!(
            (got.envelope.sender.as_str(), got.envelope.ret.as_str()),
            ("s@example.org", "hdrs")
        );
        assert_eq!((got.envelope.envid.as_str(), got.envelope.size), ("E1", 5));
        assert_eq!(got.recipients[0], rcpt);
        assert_eq!(got.recipients[1].address.len(), 200_000);
        let mut text = String::new();
        MessageSource {
            file: &got_file,
            offset: got.offset,
            size: got.envelope.size,
        }
        .reader()
        .read_to_string(&mut text)
        .unwrap();
        assert_eq!(text, "hello");
        // The parent closed its end: no more jobs.
        assert!(receive_job(&agent).unwrap().is_none());
    }

    #[test]
    fn a_job_without_its_descriptor_is_refused() {
        let (mut parent, agent) = UnixStream::pair().unwrap();
        parent.write_all(b"{\"job\":1}\n").unwrap();
        assert!(receive_job(&agent).is_err());
    }

    #[test]
    fn a_silent_agent_times_out_and_a_closed_one_is_seen() {
        let (mut parent, agent) = UnixStream::pair().unwrap();
        let started = Instant::now();
        let until = started + Duration::from_millis(200);
        let err = read_line(&mut parent, 100, until).unwrap_err();
        assert_eq!(err, "no answer in time");
        assert!(started.elapsed() < Duration::from_secs(5));
        (&agent).write_all(b"{\"partial\":").unwrap();
        drop(agent);
        let err = read_line(&mut parent, 100, Instant::now() + Duration::from_secs(5));
        assert_eq!(err.unwrap_err(), "connection closed");
    }

    #[test]
    fn an_answer_over_the_limit_is_refused_before_its_end() {
        let (mut parent, agent) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            // Never a newline: the parent must stop reading by itself.
            let junk = vec![b'x'; 64 * 1024];
            while (&agent).write_all(&junk).is_ok() {}
        });
        let err = read_line(
            &mut parent,
            100_000,
            Instant::now() + Duration::from_secs(10),
        );
        assert!(err.unwrap_err().contains("longer than 100000"));
        drop(parent);
        writer.join().unwrap();
    }
}
