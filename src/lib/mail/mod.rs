//! The `mail` command: send a message from a script or a terminal ([`send`], built by
//! [`compose`]), or read a mailbox interactively ([`session`] over a [`folder`]).
//! [`run`] picks the mode from the parsed command line ([`argv`]).

pub mod argv;
pub mod compose;
pub mod display;
pub mod folder;
pub mod msglist;
pub mod send;
pub mod session;

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;

use crate::config::Config;
use crate::sysexits::{self, Error};
use argv::Invocation;
use compose::Draft;

/// What ends a `mail` run with a non-zero status: the exit code (sendmail's own, when it
/// failed) and what to say, if anything (sendmail has already spoken on stderr).
#[derive(Debug)]
pub struct ExitError {
    pub code: i32,
    pub message: Option<String>,
}

impl ExitError {
    pub fn new(code: i32, message: impl Into<String>) -> ExitError {
        ExitError {
            code,
            message: Some(message.into()),
        }
    }
}

/// The message, or the bare status when sendmail has already spoken.
impl std::fmt::Display for ExitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.message {
            Some(m) => f.write_str(m),
            None => write!(f, "failed with status {}", self.code),
        }
    }
}

impl std::error::Error for ExitError {}

impl From<Error> for ExitError {
    fn from(e: Error) -> ExitError {
        ExitError::new(e.code(), e.message)
    }
}

/// Runs `mail` as `inv` asks; returns the exit status (1 for `-e` with no mail).
pub fn run(inv: &Invocation) -> Result<i32, ExitError> {
    if inv.help {
        println!("{}\n\n{}", argv::USAGE, argv::option_help());
        return Ok(0);
    }
    if inv.is_send() {
        return send_from_stdin(inv);
    }
    if !inv.attachments.is_empty() || inv.subject.is_some() || !inv.cc.is_empty() {
        return Err(Error::usage("send options given without recipients").into());
    }
    let path = mailbox_path(inv)?;
    let mut folder = folder::Folder::open(&path)?;
    if inv.check {
        return Ok(if folder.letters.is_empty() { 1 } else { 0 });
    }
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if folder.letters.is_empty() {
        if inv.folder {
            let _ = writeln!(out, "\"{}\": 0 messages", path.display());
        } else {
            let _ = writeln!(
                out,
                "No mail for {}",
                inv.user.clone().unwrap_or_else(login_name)
            );
        }
        return Ok(0);
    }
    if inv.headers_only {
        display::write_summary_all(&mut out, &folder).map_err(output_error)?;
        return Ok(0);
    }
    let stdin = io::stdin();
    let interactive = stdin.is_terminal();
    let mut session = session::Session::new(&mut folder, stdin.lock(), out, interactive);
    session.run(!inv.no_summary)
}

fn output_error(e: io::Error) -> ExitError {
    ExitError::new(sysexits::ExitCode::IoErr.as_i32(), format!("output: {e}"))
}

/// Sends one message: recipients and options from `inv`, body from stdin.
fn send_from_stdin(inv: &Invocation) -> Result<i32, ExitError> {
    let stdin = io::stdin();
    let interactive = stdin.is_terminal();
    let mut input = stdin.lock();
    let mut subject = inv.subject.clone();
    if subject.is_none() && interactive {
        subject = Some(prompt_line(&mut input, "Subject: ")?.unwrap_or_default());
    }
    let body = read_body(&mut input, interactive)?;
    let draft = Draft {
        to: inv.operands.clone(),
        cc: inv.cc.clone(),
        bcc: inv.bcc.clone(),
        from: inv.from.clone(),
        subject,
        extra_headers: inv.extra_headers.clone(),
        in_reply_to: None,
        references: None,
        body,
        attachments: inv.attachments.clone(),
    };
    if draft.is_empty() {
        if inv.skip_empty {
            return Ok(0);
        }
        if interactive {
            eprintln!("Null message body; hope that's ok");
        }
    }
    send_draft(&draft, inv.verbose)?;
    if interactive {
        println!("EOT");
    }
    Ok(0)
}

/// Builds and sends `draft`; on failure the message is kept in `dead.letter`.
pub fn send_draft(draft: &Draft, verbose: bool) -> Result<(), ExitError> {
    let recipients = draft.envelope_recipients()?;
    let sender = draft.envelope_sender()?;
    let date = crate::message::date::rfc2822_date(&chrono::Local::now());
    let message = compose::build(draft, &date)?;
    let args = send::arguments(sender.as_deref(), &recipients, verbose);
    send::run(&send::program(), &args, &message).inspect_err(|_| {
        if let Some(dead) = send::save_dead_letter(&message) {
            eprintln!("mail: message saved in {}", dead.display());
        }
    })
}

/// Reads a message body. From a terminal a line holding only `.` ends it, as in every
/// mailx; from a pipe everything up to end of file is the body (a `.` line included:
/// scripts send text verbatim).
pub fn read_body(input: &mut impl BufRead, interactive: bool) -> Result<Vec<u8>, ExitError> {
    let mut body = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = input.read_until(b'\n', &mut line).map_err(|e| {
            ExitError::new(sysexits::ExitCode::IoErr.as_i32(), format!("stdin: {e}"))
        })?;
        if n == 0 {
            break;
        }
        if interactive && (line == b".\n" || line == b".") {
            break;
        }
        body.extend_from_slice(&line);
    }
    Ok(body)
}

/// Prints `prompt` and reads one line (without its newline); `None` at end of input.
pub fn prompt_line(input: &mut impl BufRead, prompt: &str) -> Result<Option<String>, ExitError> {
    print!("{prompt}");
    let _ = io::stdout().flush();
    let mut line = Vec::new();
    let n = input
        .read_until(b'\n', &mut line)
        .map_err(|e| ExitError::new(sysexits::ExitCode::IoErr.as_i32(), format!("stdin: {e}")))?;
    if n == 0 {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&line);
    Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()))
}

/// The invoking user's login name: `$USER`, `$LOGNAME`, else the password entry.
pub fn login_name() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Some(name) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return name.to_string_lossy().into_owned();
        }
    }
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| nix::unistd::getuid().to_string())
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.dir)
        })
}

/// Which mailbox to read: `-f FILE` (default `$MBOX`, else `~/mbox`), `-u USER`'s spool
/// file, else `$MAIL`, else what delivery uses: `home_mailbox` under the home directory
/// when set, else `mail_spool_directory/USER`.
fn mailbox_path(inv: &Invocation) -> Result<PathBuf, ExitError> {
    if inv.folder {
        if let Some(file) = inv.operands.first() {
            return Ok(expand_tilde(file));
        }
        if let Some(mbox) = std::env::var_os("MBOX").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(mbox));
        }
        let home = home_dir().ok_or_else(|| Error::config("no home directory for ~/mbox"))?;
        return Ok(home.join("mbox"));
    }
    if inv.user.is_none()
        && let Some(mail) = std::env::var_os("MAIL").filter(|v| !v.is_empty())
    {
        return Ok(PathBuf::from(mail));
    }
    let config = Config::load(None)?;
    let user = inv.user.clone().unwrap_or_else(login_name);
    if user.contains('/') || user == ".." || user.is_empty() {
        return Err(Error::usage(format!("bad user name: {user}")).into());
    }
    let home_mailbox = config.get("home_mailbox")?;
    if inv.user.is_none() && !home_mailbox.is_empty() {
        let home = home_dir().ok_or_else(|| Error::config("no home directory"))?;
        return Ok(home.join(home_mailbox));
    }
    Ok(PathBuf::from(config.get("mail_spool_directory")?).join(user))
}

/// `~/x` is `$HOME/x`, as mailx expands it in file names.
pub fn expand_tilde(name: &str) -> PathBuf {
    match (name.strip_prefix("~/"), home_dir()) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(name),
    }
}
