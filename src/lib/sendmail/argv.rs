//! sendmail's command line. Real callers pass the legacy argv that clap cannot parse:
//! glued values (`-fuser`, `-FCronDaemon`, `-odi`, `-oem`, `-q30m`), clusters (`-ti`),
//! `--`, and options after operands (GNU getopt permutes, and so does Postfix on Linux).
//! The flags are a table ([`FLAGS`]) so that the man page can be checked against it.

use std::path::PathBuf;

use super::submit::Request;
use crate::getopt::{self, Arg, Value};

/// One sendmail option letter.
#[derive(Debug)]
pub struct Flag {
    pub letter: char,
    /// Whether it takes a value: glued (`-fuser`) or as the next argument (`-f user`);
    /// `-q`'s only glued (`-q30m`), since `-q` alone means "run the queue".
    pub value: Value,
    /// What it does here; "ignored" flags are accepted for compatibility and change
    /// nothing.
    pub summary: &'static str,
}

/// Every option letter sendmail accepts: Postfix's set, plus `-bD`.
pub const FLAGS: &[Flag] = &[
    Flag {
        letter: 'A',
        value: Value::Required,
        summary: "ignored (sendmail submission-type flag)",
    },
    Flag {
        letter: 'B',
        value: Value::Required,
        summary: "body type: 8BITMIME or 7BIT",
    },
    Flag {
        letter: 'C',
        value: Value::Required,
        summary: "configuration directory (or its main.cf)",
    },
    Flag {
        letter: 'F',
        value: Value::Required,
        summary: "full name of the sender",
    },
    Flag {
        letter: 'G',
        value: Value::None,
        summary: "ignored (gateway submission)",
    },
    Flag {
        letter: 'I',
        value: Value::None,
        summary: "same as -bi",
    },
    Flag {
        letter: 'L',
        value: Value::Required,
        summary: "ignored (syslog label)",
    },
    Flag {
        letter: 'N',
        value: Value::Required,
        summary: "DSN notify: never, or success,failure,delay",
    },
    Flag {
        letter: 'O',
        value: Value::Required,
        summary: "ignored (option=value)",
    },
    Flag {
        letter: 'R',
        value: Value::Required,
        summary: "DSN return: full or hdrs",
    },
    Flag {
        letter: 'U',
        value: Value::None,
        summary: "ignored (initial user submission)",
    },
    Flag {
        letter: 'V',
        value: Value::Required,
        summary: "DSN envelope ID",
    },
    Flag {
        letter: 'X',
        value: Value::Required,
        summary: "ignored (traffic log file)",
    },
    Flag {
        letter: 'b',
        value: Value::Required,
        summary: "mode: m, p, i, v, s, d, D, h, H",
    },
    Flag {
        letter: 'c',
        value: Value::None,
        summary: "ignored",
    },
    Flag {
        letter: 'e',
        value: Value::Required,
        summary: "ignored (error mode)",
    },
    Flag {
        letter: 'f',
        value: Value::Required,
        summary: "envelope sender",
    },
    Flag {
        letter: 'h',
        value: Value::Required,
        summary: "ignored (hop count)",
    },
    Flag {
        letter: 'i',
        value: Value::None,
        summary: "a lone . does not end the message",
    },
    Flag {
        letter: 'm',
        value: Value::None,
        summary: "ignored (me too)",
    },
    Flag {
        letter: 'n',
        value: Value::None,
        summary: "rejected: aliasing cannot be turned off",
    },
    Flag {
        letter: 'o',
        value: Value::Required,
        summary: "legacy option: i, dMODE, eMODE, m, ... (see below)",
    },
    Flag {
        letter: 'p',
        value: Value::Required,
        summary: "ignored (protocol)",
    },
    Flag {
        letter: 'q',
        value: Value::Optional,
        summary: "run the queue; -qINTERVAL with -bd/-bD; -qIID runs only that message",
    },
    Flag {
        letter: 'r',
        value: Value::Required,
        summary: "same as -f",
    },
    Flag {
        letter: 't',
        value: Value::None,
        summary: "recipients also from To, Cc, Bcc headers",
    },
    Flag {
        letter: 'v',
        value: Value::None,
        summary: "ignored (verbose)",
    },
    Flag {
        letter: 'x',
        value: Value::None,
        summary: "ignored",
    },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read a message and queue it (`-bm`, the default).
    Submit,
    /// `-bp`, or invoked as `mailq`.
    ListQueue,
    /// `-bi`/`-I`, or invoked as `newaliases`.
    Newaliases,
    /// `-bv`: show where each recipient would go.
    Verify,
    /// `-bs`: SMTP on stdin/stdout.
    Smtp,
    /// `-bd`: start the daemon in the background.
    Daemon,
    /// `-bD`: run the daemon in the foreground.
    DaemonForeground,
    /// `-q`: run the queue once.
    RunQueue,
    /// `-bh`, `-bH`: host status, which we do not keep; nothing to do.
    Nothing,
}

/// `-odb` (deliver in the background, the default), `-odi` (deliver before exiting),
/// `-odq` (only queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliveryMode {
    #[default]
    Background,
    Interactive,
    QueueOnly,
}

#[derive(Debug, Clone)]
pub struct Invocation {
    pub mode: Mode,
    pub delivery: DeliveryMode,
    pub config_dir: Option<PathBuf>,
    /// `-q30m`: the interval for periodic queue runs of a daemon.
    pub queue_interval: Option<String>,
    /// `-qI<substr>`: run only the messages whose queue ID contains it (the classic
    /// sendmail spelling; a background `-odb` delivery runs its one message this way).
    pub queue_id: Option<String>,
    /// Sender, recipients and flags for a submission. `request.recipients` also holds the
    /// operands of other modes (`-bv ADDR...`).
    pub request: Request,
    /// Warnings for the caller to print (bad -N value and the like).
    pub warnings: Vec<String>,
}

/// A command-line error: an optional getopt-style complaint line, then the fatal message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError {
    pub complaint: Option<String>,
    pub fatal: String,
}

impl ArgError {
    fn fatal(text: impl Into<String>) -> ArgError {
        ArgError {
            complaint: None,
            fatal: text.into(),
        }
    }

    fn usage(complaint: String) -> ArgError {
        ArgError {
            complaint: Some(complaint),
            fatal: "usage: sendmail [options]".into(),
        }
    }
}

/// Parses sendmail's arguments (without argv[0]). `program` is argv[0]'s file name:
/// installed as `mailq` or `newaliases`, sendmail starts in that mode, as Postfix's does.
pub fn parse(program: &str, args: &[String]) -> Result<Invocation, ArgError> {
    let mut inv = Invocation {
        mode: match program {
            "mailq" => Mode::ListQueue,
            "newaliases" => Mode::Newaliases,
            _ => Mode::Submit,
        },
        delivery: DeliveryMode::default(),
        config_dir: None,
        queue_interval: None,
        queue_id: None,
        request: Request {
            dot_ends: true,
            ..Request::default()
        },
        warnings: Vec::new(),
    };
    let kind = |letter| FLAGS.iter().find(|f| f.letter == letter).map(|f| f.value);
    let parsed =
        getopt::parse(args, kind).map_err(|problem| ArgError::usage(problem.to_string()))?;
    for arg in parsed {
        match arg {
            Arg::Operand(operand) => inv.request.recipients.push(operand),
            // No long options: getopt sees `--foo` as the unknown letter '-'.
            Arg::Long(_) => return Err(ArgError::usage("invalid option -- '-'".into())),
            Arg::Opt('q', None) => inv.mode = Mode::RunQueue,
            Arg::Opt(letter, Some(value)) => apply_value(&mut inv, letter, &value)?,
            Arg::Opt(letter, None) => apply_switch(&mut inv, letter)?,
        }
    }
    check_conflicts(&inv)?;
    Ok(inv)
}

fn apply_switch(inv: &mut Invocation, letter: char) -> Result<(), ArgError> {
    match letter {
        'I' => inv.mode = Mode::Newaliases,
        'i' => inv.request.dot_ends = false,
        't' => inv.request.extract = true,
        'n' => return Err(ArgError::fatal("-n option not supported")),
        _ => {} // G, U, c, m, v, x: accepted, no effect.
    }
    Ok(())
}

fn apply_value(inv: &mut Invocation, letter: char, value: &str) -> Result<(), ArgError> {
    match letter {
        'B' if value != "8BITMIME" && value != "7BIT" => {
            return Err(ArgError::fatal("-B option needs 8BITMIME or 7BIT"));
        }
        'C' => {
            let path = PathBuf::from(value);
            // Postfix accepts the main.cf file itself as well as its directory.
            let dir = if path.file_name().is_some_and(|n| n == "main.cf") {
                path.parent().map(PathBuf::from).unwrap_or(path)
            } else {
                path
            };
            inv.config_dir = Some(dir);
        }
        'F' => inv.request.full_name = Some(value.to_string()),
        'f' | 'r' => inv.request.sender = Some(value.to_string()),
        'N' => match dsn_notify(value) {
            Some(v) => inv.request.notify = v,
            None => inv.warnings.push("bad -N option value -- ignored".into()),
        },
        'R' => {
            let v = value.to_ascii_lowercase();
            if v == "full" || v == "hdrs" {
                inv.request.ret = v;
            } else {
                inv.warnings.push("bad -R option value -- ignored".into());
            }
        }
        'V' => {
            if value.len() > 100 {
                inv.warnings
                    .push("too long -V option value -- ignored".into());
            } else if !value.bytes().all(|c| (33..=126).contains(&c)) {
                inv.warnings
                    .push("bad syntax in -V option value -- ignored".into());
            } else {
                inv.request.envid = value.to_string();
            }
        }
        'b' => {
            inv.mode = match value.chars().next() {
                Some('m') => Mode::Submit,
                Some('p') => Mode::ListQueue,
                Some('i') => Mode::Newaliases,
                Some('v') => Mode::Verify,
                Some('s') => Mode::Smtp,
                Some('d') => Mode::Daemon,
                Some('D') => Mode::DaemonForeground,
                Some('h') | Some('H') => Mode::Nothing,
                _ => {
                    let shown: String = value.chars().take(1).collect();
                    return Err(ArgError::fatal(format!("unsupported: -b{shown}")));
                }
            }
        }
        'o' => apply_legacy_option(inv, value),
        'q' => {
            if value.starts_with(|c: char| c.is_ascii_digit()) {
                inv.queue_interval = Some(value.to_string());
            } else if let Some(id) = value.strip_prefix('I').filter(|id| !id.is_empty()) {
                inv.mode = Mode::RunQueue;
                inv.queue_id = Some(id.to_string());
            } else {
                let shown: String = value.chars().take(1).collect();
                return Err(ArgError::fatal(format!("-q{shown} is not implemented")));
            }
        }
        _ => {} // A, L, O, X, e, h, p: accepted, no effect.
    }
    Ok(())
}

/// `-oi`, `-od{b,i,q}`; other `-o` options (`-oem`, `-om`, `-oQ/dir`...) change nothing.
fn apply_legacy_option(inv: &mut Invocation, value: &str) {
    match value.as_bytes() {
        [b'i', ..] => inv.request.dot_ends = false,
        [b'd', mode, ..] => match mode {
            b'i' => inv.delivery = DeliveryMode::Interactive,
            b'q' | b'd' => inv.delivery = DeliveryMode::QueueOnly,
            b'b' => inv.delivery = DeliveryMode::Background,
            _ => {}
        },
        _ => {}
    }
}

/// Checks a DSN NOTIFY list: `never` alone, or any of success, failure, delay.
fn dsn_notify(value: &str) -> Option<String> {
    let items: Vec<String> = value
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    if items.len() == 1 && items[0] == "never" {
        return Some("never".into());
    }
    let ok = !items.is_empty()
        && items
            .iter()
            .all(|i| i == "success" || i == "failure" || i == "delay");
    ok.then(|| items.join(","))
}

fn check_conflicts(inv: &Invocation) -> Result<(), ArgError> {
    let has_operands = !inv.request.recipients.is_empty();
    if inv.request.extract && inv.mode != Mode::Submit {
        return Err(ArgError::fatal("-t can be used only in delivery mode"));
    }
    let no_operands = match inv.mode {
        Mode::ListQueue => Some("display queue mode requires no recipient"),
        Mode::Newaliases => Some("alias initialization mode requires no recipient"),
        Mode::Smtp => Some("stand-alone mode requires no recipient"),
        Mode::Daemon | Mode::DaemonForeground => Some("daemon mode requires no recipient"),
        Mode::RunQueue => Some("flush queue mode requires no recipient"),
        _ => None,
    };
    match no_operands {
        Some(message) if has_operands => Err(ArgError::fatal(message)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Invocation, ArgError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse("sendmail", &args)
    }

    #[test]
    fn real_callers() {
        // cron
        let inv = p(&["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "alice"]).unwrap();
        assert_eq!(inv.request.full_name.as_deref(), Some("CronDaemon"));
        assert!(!inv.request.dot_ends);
        assert_eq!(inv.request.recipients, ["alice"]);
        // mutt
        let inv = p(&["-oem", "-oi", "--", "a@x", "-b@y"]).unwrap();
        assert!(!inv.request.dot_ends);
        assert_eq!(inv.request.recipients, ["a@x", "-b@y"]);
        // git send-email
        let inv = p(&["-i", "-f", "me@x", "a@x", "b@y"]).unwrap();
        assert_eq!(inv.request.sender.as_deref(), Some("me@x"));
        // PHP, bsd-mailx
        for args in [&["-t", "-i"][..], &["-i", "-t"], &["-ti"], &["-t"]] {
            let inv = p(args).unwrap();
            assert!(inv.request.extract);
            assert_eq!(inv.mode, Mode::Submit);
        }
        // s-nail
        assert_eq!(
            p(&["-i", "--", "alice"]).unwrap().request.recipients,
            ["alice"]
        );
    }

    #[test]
    fn glued_and_separate_values() {
        assert_eq!(
            p(&["-fuser", "a"]).unwrap().request.sender.as_deref(),
            Some("user")
        );
        assert_eq!(
            p(&["-f", "user", "a"]).unwrap().request.sender.as_deref(),
            Some("user")
        );
        assert_eq!(
            p(&["-r", "u", "a"]).unwrap().request.sender.as_deref(),
            Some("u")
        );
        assert_eq!(
            p(&["-tfuser"]).unwrap().request.sender.as_deref(),
            Some("user")
        );
        let inv = p(&["-N", "success,failure", "-R", "hdrs", "-V", "env1", "a"]).unwrap();
        assert_eq!(inv.request.notify, "success,failure");
        assert_eq!(inv.request.ret, "hdrs");
        assert_eq!(inv.request.envid, "env1");
        let inv = p(&["-N", "never", "-X", "/tmp/log", "-Rfull", "a"]).unwrap();
        assert_eq!(inv.request.notify, "never");
        assert_eq!(
            p(&["-C", "/x/main.cf", "a"]).unwrap().config_dir,
            Some("/x".into())
        );
        assert_eq!(
            p(&["-C/etc/m", "a"]).unwrap().config_dir,
            Some("/etc/m".into())
        );
    }

    #[test]
    fn ignored_flags() {
        let inv = p(&[
            "-oem",
            "-oee",
            "-odb",
            "-om",
            "-ob",
            "-oQ/dir",
            "-ODeliveryMode=b",
            "-O",
            "opt=val",
            "-B8BITMIME",
            "-bm",
            "-U",
            "-Am",
            "-Ac",
            "-G",
            "-L",
            "tag",
            "-h",
            "5",
            "-p",
            "smtp",
            "-v",
            "-x",
            "-c",
            "-e",
            "m",
            "alice",
        ])
        .unwrap();
        assert_eq!(inv.mode, Mode::Submit);
        assert_eq!(inv.request.recipients, ["alice"]);
    }

    #[test]
    fn modes() {
        assert_eq!(p(&["-bp"]).unwrap().mode, Mode::ListQueue);
        assert_eq!(p(&["-bi"]).unwrap().mode, Mode::Newaliases);
        assert_eq!(p(&["-I"]).unwrap().mode, Mode::Newaliases);
        assert_eq!(p(&["-bv", "a"]).unwrap().mode, Mode::Verify);
        assert_eq!(p(&["-bs"]).unwrap().mode, Mode::Smtp);
        assert_eq!(p(&["-bD"]).unwrap().mode, Mode::DaemonForeground);
        let inv = p(&["-bd", "-q30m"]).unwrap();
        assert_eq!(inv.mode, Mode::Daemon);
        assert_eq!(inv.queue_interval.as_deref(), Some("30m"));
        assert_eq!(p(&["-q"]).unwrap().mode, Mode::RunQueue);
        let inv = p(&["-qI0cQ3x7Lk2a"]).unwrap();
        assert_eq!(inv.mode, Mode::RunQueue);
        assert_eq!(inv.queue_id.as_deref(), Some("0cQ3x7Lk2a"));
        assert_eq!(parse("mailq", &[]).unwrap().mode, Mode::ListQueue);
        assert_eq!(parse("newaliases", &[]).unwrap().mode, Mode::Newaliases);
        assert_eq!(p(&["-odq", "a"]).unwrap().delivery, DeliveryMode::QueueOnly);
        assert_eq!(
            p(&["-odi", "a"]).unwrap().delivery,
            DeliveryMode::Interactive
        );
        assert_eq!(
            p(&["-o", "di", "a"]).unwrap().delivery,
            DeliveryMode::Interactive
        );
    }

    #[test]
    fn errors() {
        let e = p(&["-Z"]).unwrap_err();
        assert_eq!(e.complaint.as_deref(), Some("invalid option -- 'Z'"));
        assert_eq!(e.fatal, "usage: sendmail [options]");
        assert_eq!(
            p(&["--foo"]).unwrap_err().complaint.as_deref(),
            Some("invalid option -- '-'")
        );
        assert_eq!(p(&["-bz"]).unwrap_err().fatal, "unsupported: -bz");
        assert_eq!(
            p(&["-n", "a"]).unwrap_err().fatal,
            "-n option not supported"
        );
        assert_eq!(
            p(&["-BFOO", "a"]).unwrap_err().fatal,
            "-B option needs 8BITMIME or 7BIT"
        );
        assert!(
            p(&["-f"])
                .unwrap_err()
                .complaint
                .unwrap()
                .contains("requires an argument")
        );
        assert_eq!(
            p(&["-bp", "alice"]).unwrap_err().fatal,
            "display queue mode requires no recipient"
        );
        assert_eq!(
            p(&["-t", "-bp"]).unwrap_err().fatal,
            "-t can be used only in delivery mode"
        );
        assert!(p(&["-qRsite"]).is_err());
    }

    #[test]
    fn options_after_operands() {
        let inv = p(&["alice", "-f", "bob"]).unwrap();
        assert_eq!(inv.request.recipients, ["alice"]);
        assert_eq!(inv.request.sender.as_deref(), Some("bob"));
    }

    #[test]
    fn man_page_documents_every_flag() {
        let page = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/man/sendmail.8"));
        for flag in FLAGS {
            let plain = format!("\n.B \\-{}\n", flag.letter);
            let with_value = format!("\n.BI \\-{} ", flag.letter);
            let optional = format!("\n.BR \\-{}", flag.letter);
            assert!(
                page.contains(&plain) || page.contains(&with_value) || page.contains(&optional),
                "man/sendmail.8 does not document -{}",
                flag.letter
            );
        }
    }
}
