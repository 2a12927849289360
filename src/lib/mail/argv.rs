//! `mail`'s command line, parsed by hand because the mailx family is not getopt-shaped
//! enough for clap: options may follow the recipients (`mail root -s hi`), values may be
//! glued (`-shi`), and `-f` takes an optional file that is really the first operand.
//!
//! Where the mailx flavours disagree we follow s-nail and GNU mailutils, which most current
//! documentation and scripts assume: `-a FILE` attaches a file (as does mailutils' `-A`).
//! bsd-mailx's `-a 'Header: value'` still works when the value contains a colon and no
//! file of that name exists: it is then added as a header.

use std::path::PathBuf;

use crate::getopt::{self, Arg, Problem, Value};
use crate::sysexits::{Error, Result};

/// What one option letter does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Subject,
    Cc,
    Bcc,
    From,
    Attach,
    SkipEmpty,
    Verbose,
    Folder,
    HeadersOnly,
    Check,
    NoSummary,
    User,
    /// Accepted for compatibility, changes nothing (`-n`: no start-up file is read anyway;
    /// `-i`: interrupts are not special; `-d`: debugging).
    Ignore,
}

/// The option table: letter, takes a value, action, help text. The usage message and the
/// man page's synopsis come from the same letters.
const OPTIONS: &[(char, bool, Action, &str)] = &[
    ('s', true, Action::Subject, "subject of the message"),
    (
        'c',
        true,
        Action::Cc,
        "carbon copy recipients (comma-separated)",
    ),
    (
        'b',
        true,
        Action::Bcc,
        "blind carbon copy recipients (envelope only)",
    ),
    (
        'r',
        true,
        Action::From,
        "From address, also the envelope sender",
    ),
    (
        'a',
        true,
        Action::Attach,
        "attach a file ('Name: value' adds a header)",
    ),
    (
        'A',
        true,
        Action::Attach,
        "attach a file (GNU mailutils spelling)",
    ),
    (
        'E',
        false,
        Action::SkipEmpty,
        "do not send a message with an empty body",
    ),
    ('v', false, Action::Verbose, "verbose: pass -v to sendmail"),
    (
        'f',
        false,
        Action::Folder,
        "read FILE (default ~/mbox) instead of the mailbox",
    ),
    (
        'H',
        false,
        Action::HeadersOnly,
        "print the header summary and exit",
    ),
    (
        'e',
        false,
        Action::Check,
        "exit 0 if there is mail, 1 if not",
    ),
    (
        'N',
        false,
        Action::NoSummary,
        "do not print the header summary at start",
    ),
    ('u', true, Action::User, "read USER's mailbox"),
    ('n', false, Action::Ignore, "accepted, no effect"),
    ('i', false, Action::Ignore, "accepted, no effect"),
    ('d', false, Action::Ignore, "accepted, no effect"),
];

pub const USAGE: &str = "usage: mail [-EiNnv] [-s subject] [-c cc-addr] [-b bcc-addr] [-r from-addr] [-a file]... to-addr ...\n       mail [-EHiNnv] [-f [file] | -u user]\n       mail -e [-f file]";

/// Everything the command line asked for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub subject: Option<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub from: Option<String>,
    pub attachments: Vec<PathBuf>,
    /// `Name: value` fields from bsd-mailx style `-a`.
    pub extra_headers: Vec<String>,
    pub skip_empty: bool,
    pub verbose: bool,
    /// `-f` was given (its file, if any, is the first operand).
    pub folder: bool,
    pub headers_only: bool,
    pub check: bool,
    pub no_summary: bool,
    pub user: Option<String>,
    pub operands: Vec<String>,
    pub help: bool,
}

impl Invocation {
    /// True when this is sending (recipients given and no reading option).
    pub fn is_send(&self) -> bool {
        !self.operands.is_empty() && !self.folder && !self.check && !self.headers_only
    }
}

/// Parses the arguments after the program name. `exists` tells whether a file exists (to
/// tell a bsd-mailx header from an attachment; a parameter so tests need no files).
pub fn parse(args: &[String], exists: impl Fn(&str) -> bool) -> Result<Invocation> {
    let mut inv = Invocation::default();
    let kind = |letter| {
        OPTIONS
            .iter()
            .find(|o| o.0 == letter)
            .map(|&(_, takes_value, _, _)| {
                if takes_value {
                    Value::Required
                } else {
                    Value::None
                }
            })
    };
    // BSD mailx's wording, not GNU's.
    let parsed = getopt::parse(args, kind).map_err(|problem| match problem {
        Problem::Unknown(letter) => Error::usage(format!("illegal option -- {letter}")),
        Problem::MissingValue(letter) => {
            Error::usage(format!("option requires an argument -- {letter}"))
        }
    })?;
    for arg in parsed {
        match arg {
            Arg::Operand(operand) => inv.operands.push(operand),
            Arg::Long(name) if name == "help" => inv.help = true,
            Arg::Long(_) => return Err(Error::usage("illegal option -- -")),
            Arg::Opt(letter, value) => {
                if let Some(&(_, _, action, _)) = OPTIONS.iter().find(|o| o.0 == letter) {
                    apply(&mut inv, action, value.unwrap_or_default(), &exists)?;
                }
            }
        }
    }
    if inv.folder && inv.operands.len() > 1 {
        return Err(Error::usage("-f takes at most one file"));
    }
    Ok(inv)
}

fn apply(
    inv: &mut Invocation,
    action: Action,
    value: String,
    exists: &impl Fn(&str) -> bool,
) -> Result<()> {
    match action {
        Action::Subject => inv.subject = Some(value),
        Action::Cc => inv.cc.push(value),
        Action::Bcc => inv.bcc.push(value),
        Action::From => inv.from = Some(value),
        Action::Attach => {
            if looks_like_header(&value) && !exists(&value) {
                inv.extra_headers.push(value);
            } else {
                inv.attachments.push(PathBuf::from(value));
            }
        }
        Action::SkipEmpty => inv.skip_empty = true,
        Action::Verbose => inv.verbose = true,
        Action::Folder => inv.folder = true,
        Action::HeadersOnly => inv.headers_only = true,
        Action::Check => inv.check = true,
        Action::NoSummary => inv.no_summary = true,
        Action::User => inv.user = Some(value),
        Action::Ignore => {}
    }
    Ok(())
}

/// `Name: value` with a field name of printable ASCII and no slash (a path is never a
/// header).
fn looks_like_header(value: &str) -> bool {
    match value.split_once(':') {
        Some((name, _)) => {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|c| c.is_ascii_graphic() && c != b'/' && c != b':')
        }
        None => false,
    }
}

/// One line per option, for `--help`.
pub fn option_help() -> String {
    let mut out = String::new();
    for (letter, takes_value, _, help) in OPTIONS {
        let arg = if *takes_value { " ARG" } else { "" };
        out.push_str(&format!("  -{letter}{arg:<5} {help}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn p(list: &[&str]) -> Invocation {
        parse(&args(list), |f| f == "exists:file").unwrap()
    }

    #[test]
    fn options_anywhere_and_glued() {
        let inv = p(&["root", "-s", "hello world", "-cbob", "--", "-weird"]);
        assert_eq!(inv.subject.as_deref(), Some("hello world"));
        assert_eq!(inv.cc, ["bob"]);
        assert_eq!(inv.operands, ["root", "-weird"]);
        assert!(inv.is_send());
        let inv = p(&["-Ev", "-r", "me@x", "-b", "hidden@y", "a@x"]);
        assert!(inv.skip_empty && inv.verbose);
        assert_eq!(inv.from.as_deref(), Some("me@x"));
        assert_eq!(inv.bcc, ["hidden@y"]);
    }

    #[test]
    fn attach_or_header() {
        let inv = p(&[
            "-a",
            "report.pdf",
            "-a",
            "X-Tag: 1",
            "-A",
            "exists:file",
            "x",
        ]);
        assert_eq!(
            inv.attachments,
            [PathBuf::from("report.pdf"), PathBuf::from("exists:file")]
        );
        assert_eq!(inv.extra_headers, ["X-Tag: 1"]);
        // A path with a colon is still a file.
        let inv = p(&["-a", "/tmp/a:b", "x"]);
        assert_eq!(inv.attachments, [PathBuf::from("/tmp/a:b")]);
    }

    #[test]
    fn read_modes() {
        let inv = p(&["-f"]);
        assert!(inv.folder && !inv.is_send());
        let inv = p(&["-f", "/tmp/box"]);
        assert_eq!(inv.operands, ["/tmp/box"]);
        assert!(!inv.is_send());
        assert!(p(&["-e"]).check);
        assert!(p(&["-H"]).headers_only);
        assert!(!p(&[]).is_send());
    }

    #[test]
    fn errors() {
        let e = parse(&args(&["-Q", "x"]), |_| false).unwrap_err();
        assert_eq!(e.message, "illegal option -- Q");
        assert_eq!(e.code(), 64);
        let e = parse(&args(&["x", "-s"]), |_| false).unwrap_err();
        assert_eq!(e.message, "option requires an argument -- s");
        assert!(parse(&args(&["-f", "a", "b"]), |_| false).is_err());
    }
}
