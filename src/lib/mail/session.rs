//! The interactive reader: the `& ` prompt and the mailx commands people use. Input and
//! output are parameters, so the whole dialogue can be driven from a test.
//!
//! `r` replies to the sender, `R` to the sender and every recipient (this is the mutt-like
//! meaning most users expect; POSIX mailx has them the other way round, and s-nail's
//! `flipr` variable exists for exactly that disagreement).

use std::io::{self, BufRead, Write};
use std::path::PathBuf;

use mail_parser::MessageParser;

use super::compose::Draft;
use super::display;
use super::folder::Folder;
use super::msglist::{self, ListError, Want};
use super::{ExitError, login_name};
use crate::mailbox::mbox;

/// Messages per page of `headers`.
const PAGE: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Print,
    Next,
    Previous,
    Headers,
    From,
    Delete,
    DeletePrint,
    Undelete,
    Save,
    Reply,
    ReplyAll,
    Mail,
    Quit,
    Exit,
    Help,
    Current,
}

/// Command names: full name, shortest accepted abbreviation, command, help text. Names are
/// case-sensitive (`r` and `R` differ).
const COMMANDS: &[(&str, &str, Command, &str)] = &[
    ("print", "p", Command::Print, "print messages"),
    ("type", "t", Command::Print, "print messages"),
    ("Print", "P", Command::Print, "print messages"),
    ("Type", "T", Command::Print, "print messages"),
    (
        "next",
        "n",
        Command::Next,
        "go to and print the next message",
    ),
    (
        "headers",
        "h",
        Command::Headers,
        "print the page of headers with the message",
    ),
    (
        "from",
        "f",
        Command::From,
        "print the header lines of messages",
    ),
    ("delete", "d", Command::Delete, "delete messages"),
    (
        "dp",
        "dp",
        Command::DeletePrint,
        "delete the message, print the next",
    ),
    (
        "dt",
        "dt",
        Command::DeletePrint,
        "delete the message, print the next",
    ),
    ("undelete", "u", Command::Undelete, "undelete messages"),
    (
        "save",
        "s",
        Command::Save,
        "append messages to a file (mbox format)",
    ),
    ("reply", "r", Command::Reply, "reply to the sender"),
    (
        "Reply",
        "R",
        Command::ReplyAll,
        "reply to the sender and all recipients",
    ),
    (
        "mail",
        "m",
        Command::Mail,
        "write a new message to addresses",
    ),
    (
        "quit",
        "q",
        Command::Quit,
        "quit, saving changes to the mailbox",
    ),
    (
        "xit",
        "x",
        Command::Exit,
        "quit, leaving the mailbox unchanged",
    ),
    (
        "exit",
        "ex",
        Command::Exit,
        "quit, leaving the mailbox unchanged",
    ),
    ("help", "help", Command::Help, "print this help"),
    ("?", "?", Command::Help, "print this help"),
    (
        "-",
        "-",
        Command::Previous,
        "go to and print the previous message",
    ),
    ("+", "+", Command::Next, "go to and print the next message"),
    (
        "=",
        "=",
        Command::Current,
        "print the current message number",
    ),
];

/// Why a command did nothing (or not all it was asked): printed, and the session goes on.
#[derive(Debug)]
enum CommandError {
    /// The message list names nothing to act on.
    List(ListError),
    UnknownCommand(String),
    /// `next` past the last message.
    AtEof,
    /// `-` before the first message.
    NoPrevious,
    /// `save` could not append to the file.
    Save(PathBuf, io::Error),
    /// The message replied to does not parse.
    Unparsable,
    /// The message replied to has neither `Reply-To` nor `From`.
    NoSender,
    /// `mail` without addresses.
    NoRecipients,
    /// Sending (by sendmail) or writing the mailbox back failed.
    Failed(ExitError),
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::List(e) => e.fmt(f),
            CommandError::UnknownCommand(word) => write!(f, "Unknown command: \"{word}\""),
            CommandError::AtEof => f.write_str("At EOF"),
            CommandError::NoPrevious => f.write_str("No previous message"),
            CommandError::Save(path, e) => {
                write!(f, "{}: {}", path.display(), crate::sysexits::describe_io(e))
            }
            CommandError::Unparsable => f.write_str("cannot parse the message to reply to"),
            CommandError::NoSender => f.write_str("no sender to reply to"),
            CommandError::NoRecipients => f.write_str("No recipients specified"),
            CommandError::Failed(e) => write!(f, "mail: {e}"),
        }
    }
}

impl std::error::Error for CommandError {}

impl From<ListError> for CommandError {
    fn from(e: ListError) -> CommandError {
        CommandError::List(e)
    }
}

pub struct Session<'f, R, W> {
    folder: &'f mut Folder,
    input: R,
    out: W,
    interactive: bool,
    current: usize,
    /// A message has been printed or chosen: Enter now means "next".
    moved: bool,
}

enum Flow {
    Continue,
    Done(i32),
}

impl<'f, R: BufRead, W: Write> Session<'f, R, W> {
    pub fn new(folder: &'f mut Folder, input: R, out: W, interactive: bool) -> Self {
        // Start at the first new or unread message, as mailx does.
        let current = folder
            .letters
            .iter()
            .position(|l| !l.is_read())
            .unwrap_or(0);
        Session {
            folder,
            input,
            out,
            interactive,
            current,
            moved: false,
        }
    }

    /// Runs commands until `quit`, `exit` or end of input (which quits).
    pub fn run(&mut self, summary: bool) -> Result<i32, ExitError> {
        if summary {
            let _ = writeln!(self.out, "{}", display::folder_line(self.folder));
            self.headers("");
        }
        loop {
            if self.interactive {
                let _ = write!(self.out, "& ");
            }
            let _ = self.out.flush();
            let Some(line) = self.read_line() else {
                return self.quit();
            };
            match self.dispatch(line.trim()) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Done(code)) => return Ok(code),
                Err(message) => {
                    let _ = writeln!(self.out, "{message}");
                }
            }
        }
    }

    fn read_line(&mut self) -> Option<String> {
        let mut line = Vec::new();
        match self.input.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(
                String::from_utf8_lossy(&line)
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
        }
    }

    fn dispatch(&mut self, line: &str) -> Result<Flow, CommandError> {
        if line.is_empty() {
            return self.next().map(|()| Flow::Continue);
        }
        if line.starts_with(|c: char| c.is_ascii_digit()) {
            return self.print(line).map(|()| Flow::Continue);
        }
        let split = match line.find(|c: char| !c.is_ascii_alphabetic()) {
            Some(0) => 1.min(line.len()),
            Some(i) => i,
            None => line.len(),
        };
        let (word, args) = line.split_at(split);
        let args = args.trim();
        let Some(&(_, _, command, _)) = COMMANDS
            .iter()
            .find(|(full, min, _, _)| full.starts_with(word) && word.starts_with(min))
        else {
            return Err(CommandError::UnknownCommand(word.to_string()));
        };
        match command {
            Command::Print => self.print(args)?,
            Command::Next => self.next()?,
            Command::Previous => self.previous()?,
            Command::Headers => self.headers(args),
            Command::From => self.from(args)?,
            Command::Delete => self.delete(args)?,
            Command::DeletePrint => {
                self.delete(args)?;
                self.print_one(self.current)?;
            }
            Command::Undelete => self.undelete(args)?,
            Command::Save => self.save(args)?,
            Command::Reply => self.reply(args, false)?,
            Command::ReplyAll => self.reply(args, true)?,
            Command::Mail => self.mail(args)?,
            Command::Quit => return self.quit().map(Flow::Done).map_err(CommandError::Failed),
            Command::Exit => return Ok(Flow::Done(0)),
            Command::Help => self.help(),
            Command::Current => {
                let _ = writeln!(self.out, "{}", self.current + 1);
            }
        }
        Ok(Flow::Continue)
    }

    fn deleted(&self) -> Vec<bool> {
        self.folder.letters.iter().map(|l| l.deleted).collect()
    }

    fn list(&self, spec: &str, want: Want) -> Result<Vec<usize>, ListError> {
        msglist::parse(spec, &self.deleted(), self.current, want)
    }

    fn print(&mut self, spec: &str) -> Result<(), CommandError> {
        for i in self.list(spec, Want::Live)? {
            self.print_one(i)?;
        }
        Ok(())
    }

    fn print_one(&mut self, i: usize) -> Result<(), CommandError> {
        let letter = self
            .folder
            .letters
            .get_mut(i)
            .filter(|l| !l.deleted)
            .ok_or(ListError::NoApplicable)?;
        letter.read = true;
        let text = display::render(letter);
        let _ = writeln!(self.out, "Message {}:", i + 1);
        let _ = write!(self.out, "{text}");
        self.current = i;
        self.moved = true;
        Ok(())
    }

    fn next(&mut self) -> Result<(), CommandError> {
        let letters = &self.folder.letters;
        let start = if !self.moved
            && letters
                .get(self.current)
                .is_some_and(|l| !l.deleted && !l.read)
        {
            self.current
        } else {
            match (self.current + 1..letters.len()).find(|&i| !letters[i].deleted) {
                Some(i) => i,
                None => return Err(CommandError::AtEof),
            }
        };
        self.print_one(start)
    }

    fn previous(&mut self) -> Result<(), CommandError> {
        let letters = &self.folder.letters;
        match (0..self.current).rev().find(|&i| !letters[i].deleted) {
            Some(i) => self.print_one(i),
            None => Err(CommandError::NoPrevious),
        }
    }

    fn headers(&mut self, args: &str) {
        let around = match args.parse::<usize>() {
            Ok(n) if n >= 1 => n - 1,
            _ => self.current,
        };
        let live: Vec<usize> = (0..self.folder.letters.len())
            .filter(|&i| !self.folder.letters[i].deleted)
            .collect();
        let at = live.iter().position(|&i| i >= around).unwrap_or(0);
        let first = (at / PAGE) * PAGE;
        for &i in live.iter().skip(first).take(PAGE) {
            let line = display::summary_line(&self.folder.letters[i], i + 1, i == self.current);
            let _ = writeln!(self.out, "{line}");
        }
    }

    fn from(&mut self, spec: &str) -> Result<(), CommandError> {
        for i in self.list(spec, Want::Live)? {
            let line = display::summary_line(&self.folder.letters[i], i + 1, i == self.current);
            let _ = writeln!(self.out, "{line}");
        }
        Ok(())
    }

    fn delete(&mut self, spec: &str) -> Result<(), CommandError> {
        let picked = self.list(spec, Want::Live)?;
        for &i in &picked {
            self.folder.letters[i].deleted = true;
        }
        // The current message becomes the first live one after the last deleted.
        let last = picked.iter().copied().max().unwrap_or(0);
        let letters = &self.folder.letters;
        if let Some(i) = (last + 1..letters.len())
            .find(|&i| !letters[i].deleted)
            .or_else(|| (0..last).rev().find(|&i| !letters[i].deleted))
        {
            self.current = i;
        }
        self.moved = true;
        Ok(())
    }

    fn undelete(&mut self, spec: &str) -> Result<(), CommandError> {
        for i in self.list(spec, Want::Deleted)? {
            self.folder.letters[i].deleted = false;
            self.current = i;
        }
        Ok(())
    }

    fn save(&mut self, args: &str) -> Result<(), CommandError> {
        let (spec, file) = match args.rsplit_once(char::is_whitespace) {
            Some((spec, file)) => (spec.trim(), file),
            None if args.is_empty() => ("", "~/mbox"),
            None => ("", args),
        };
        let picked = self.list(spec, Want::Live)?;
        let path = super::expand_tilde(file);
        let existed = path.exists();
        let mut framed = Vec::new();
        let mut lines = 0;
        for &i in &picked {
            let letter = &self.folder.letters[i];
            let bytes = match &letter.from_line {
                Some(line) => mbox::frame(line, &letter.raw),
                None => {
                    let sender = mbox::header_value(&letter.raw, "Return-Path")
                        .map(|s| s.trim_matches(['<', '>']).to_string())
                        .unwrap_or_else(|| "MAILER-DAEMON".into());
                    let line = mbox::from_line(&sender, chrono::Local::now());
                    mbox::frame(line.as_bytes(), &mbox::quote_from(&letter.raw))
                }
            };
            lines += bytes.iter().filter(|&&c| c == b'\n').count();
            framed.extend_from_slice(&bytes);
        }
        mbox::append(&path, &framed, &super::folder::reader_policy())
            .map_err(|e| CommandError::Save(path.clone(), e))?;
        for &i in &picked {
            self.folder.letters[i].saved = true;
        }
        let what = if existed { "Appended" } else { "New file" };
        let _ = writeln!(
            self.out,
            "\"{}\" [{what}] {lines}/{}",
            path.display(),
            framed.len()
        );
        Ok(())
    }

    fn reply(&mut self, spec: &str, all: bool) -> Result<(), CommandError> {
        let picked = self.list(spec, Want::Live)?;
        let i = picked[0];
        let text = self.folder.letters[i].text();
        let message = MessageParser::default()
            .parse(&text)
            .ok_or(CommandError::Unparsable)?;
        let first_address = |a: Option<&mail_parser::Address>| {
            a.and_then(|a| a.first())
                .and_then(|a| a.address())
                .map(str::to_string)
        };
        let sender = first_address(message.reply_to())
            .or_else(|| first_address(message.from()))
            .ok_or(CommandError::NoSender)?;
        let mut to = vec![sender.clone()];
        let mut cc = Vec::new();
        if all {
            let me = login_name();
            for addr in message
                .to()
                .into_iter()
                .chain(message.cc())
                .flat_map(|a| a.iter())
                .filter_map(|a| a.address())
            {
                let own = addr == me || addr.split('@').next() == Some(&me);
                if !own && addr != sender && !cc.iter().any(|c| c == addr) {
                    cc.push(addr.to_string());
                }
            }
        }
        let subject = message.subject().unwrap_or("").trim().to_string();
        let subject = if subject
            .get(..3)
            .is_some_and(|p| p.eq_ignore_ascii_case("re:"))
        {
            subject
        } else {
            format!("Re: {subject}")
        };
        let id = message.message_id().map(|id| format!("<{id}>"));
        let references = match (message.header_raw("References"), &id) {
            (Some(old), Some(id)) => Some(format!(
                "{} {id}",
                old.split_whitespace().collect::<Vec<_>>().join(" ")
            )),
            (None, Some(id)) => Some(id.clone()),
            (old, None) => old.map(|o| o.trim().to_string()),
        };
        to.dedup();
        let _ = writeln!(self.out, "To: {}", display::printable(&to.join(", ")));
        if !cc.is_empty() {
            let _ = writeln!(self.out, "Cc: {}", display::printable(&cc.join(", ")));
        }
        let _ = writeln!(self.out, "Subject: {}", display::printable(&subject));
        let draft = Draft {
            to,
            cc,
            subject: Some(subject),
            in_reply_to: id,
            references,
            ..Draft::default()
        };
        self.compose_and_send(draft)
    }

    fn mail(&mut self, args: &str) -> Result<(), CommandError> {
        let to: Vec<String> = args.split_whitespace().map(str::to_string).collect();
        if to.is_empty() {
            return Err(CommandError::NoRecipients);
        }
        let _ = write!(self.out, "Subject: ");
        let _ = self.out.flush();
        let subject = self.read_line().unwrap_or_default();
        let draft = Draft {
            to,
            subject: Some(subject),
            ..Draft::default()
        };
        self.compose_and_send(draft)
    }

    /// Reads the body (until a lone `.` or end of input) and sends.
    fn compose_and_send(&mut self, mut draft: Draft) -> Result<(), CommandError> {
        let _ = self.out.flush();
        let mut body = Vec::new();
        while let Some(line) = self.read_line() {
            if line == "." {
                break;
            }
            body.extend_from_slice(line.as_bytes());
            body.push(b'\n');
        }
        draft.body = body;
        super::send_draft(&draft, false).map_err(CommandError::Failed)?;
        let _ = writeln!(self.out, "EOT");
        Ok(())
    }

    fn quit(&mut self) -> Result<i32, ExitError> {
        let held = self.folder.commit()?;
        if held > 0 && !self.folder.read_only {
            let _ = writeln!(
                self.out,
                "Held {held} message{} in {}",
                if held == 1 { "" } else { "s" },
                self.folder.path.display()
            );
        }
        let _ = self.out.flush();
        Ok(0)
    }

    fn help(&mut self) {
        let _ = writeln!(
            self.out,
            "Commands (a message list is like 1 2, 1-3, *, $; empty = current):"
        );
        let mut seen = Vec::new();
        for (full, min, command, help) in COMMANDS {
            if seen.contains(command) {
                continue;
            }
            seen.push(*command);
            let name = if full == min {
                full.to_string()
            } else {
                format!("{min}[{}]", &full[min.len()..])
            };
            let _ = writeln!(self.out, "  {name:<12} {help}");
        }
        let _ = writeln!(self.out, "  {:<12} print the message with that number", "N");
        let _ = writeln!(
            self.out,
            "  {:<12} go to and print the next message",
            "<Enter>"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const BOX: &str = "From a@x Tue Nov 24 10:00:00 2020\nFrom: a@x\nSubject: one\n\nbody one\n\n\
From b@y Tue Nov 24 11:00:00 2020\nFrom: b@y\nSubject: two\n\nbody two\n\n\
From c@z Tue Nov 24 12:00:00 2020\nFrom: c@z\nSubject: three\n\nbody three\n\n";

    fn session(commands: &str) -> (String, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box");
        std::fs::write(&path, BOX).unwrap();
        let mut folder = Folder::open(&path).unwrap();
        let mut out = Vec::new();
        let code = Session::new(
            &mut folder,
            Cursor::new(commands.to_string()),
            &mut out,
            false,
        )
        .run(true)
        .unwrap();
        assert_eq!(code, 0);
        (
            String::from_utf8(out).unwrap(),
            std::fs::read_to_string(&path).unwrap(),
        )
    }

    #[test]
    fn print_delete_quit() {
        let (out, after) = session("\np 3\nd 1-2\nh\nq\n");
        assert!(out.contains("3 messages 3 new"), "{out}");
        assert!(out.contains("Message 1:\nFrom a@x"), "{out}");
        assert!(out.contains("body three"), "{out}");
        assert!(out.contains("Held 1 message in"), "{out}");
        assert!(!after.contains("Subject: one"));
        assert!(after.contains("Subject: three\nStatus: RO\n"), "{after}");
    }

    #[test]
    fn exit_changes_nothing_and_errors_continue() {
        let (out, after) = session("d *\nbogus\np 9\nx\n");
        assert!(out.contains("Unknown command: \"bogus\""), "{out}");
        assert!(out.contains("9: Invalid message number"), "{out}");
        assert_eq!(after, BOX);
    }

    #[test]
    fn undelete_and_eof_quits() {
        let (out, after) = session("d 2\nu 2\n1\nn\nn\nn\n");
        assert!(out.contains("At EOF"), "{out}");
        assert!(after.contains("Subject: two"));
        assert!(after.contains("Subject: one\nStatus: RO\n"), "{after}");
    }

    #[test]
    fn command_errors_are_printed_and_the_session_goes_on() {
        // (commands, the error line printed)
        let table = [
            ("1\n-\nx\n", "No previous message\n"),
            ("m\nx\n", "No recipients specified\n"),
            ("u\nx\n", "No deleted messages\n"),
            ("d 1\nu 2\nx\n", "2: Not deleted\n"),
            ("p 3-1\nx\n", "3-1: Invalid range\n"),
            ("p y\nx\n", "y: Unknown message specification\n"),
            (
                "s 1 /nonexistent/dir/box\nx\n",
                "/nonexistent/dir/box: No such file or directory\n",
            ),
        ];
        for (commands, line) in table {
            let (out, after) = session(commands);
            assert!(out.contains(line), "{commands:?}: {out}");
            assert_eq!(after, BOX, "{commands:?}");
        }
    }
}
