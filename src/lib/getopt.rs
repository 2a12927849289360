//! The command-line syntax of the traditional mail programs (`sendmail`, `postsuper`,
//! `mail`), which clap cannot express: GNU getopt's. Options cluster (`-ti`), values are
//! glued (`-fuser`) or the next argument (`-f user`), a lone `-` is an operand, `--` ends
//! the options, and options may follow operands (GNU permutes, and so does Postfix on
//! Linux). Each program keeps its own option table and wording; this module only splits.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

/// The arguments after the program name, as text. An argument that is not UTF-8 is
/// refused, never converted with replacement characters: a lossy conversion would
/// silently turn `caf\xe9@example.com` into another address (or another file name, or
/// another header). The error says which argument (counted from 1 after the program
/// name) and shows its bytes escaped; every program prints it as `program: fatal: ...`
/// and exits 64 (EX_USAGE).
pub fn text_args(
    args: impl IntoIterator<Item = OsString>,
) -> Result<Vec<String>, MalformedArgument> {
    args.into_iter()
        .enumerate()
        .map(|(i, arg)| {
            arg.into_string().map_err(|arg| MalformedArgument {
                position: i + 1,
                bytes: arg.as_bytes().to_vec(),
            })
        })
        .collect()
}

/// An argument that is not UTF-8: its position (from 1 after the program name) and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedArgument {
    pub position: usize,
    pub bytes: Vec<u8>,
}

impl std::fmt::Display for MalformedArgument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "malformed UTF-8 in argument {}: \"{}\"",
            self.position,
            self.bytes.escape_ascii()
        )
    }
}

impl std::error::Error for MalformedArgument {}

/// Whether an option letter takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// A switch.
    None,
    /// Glued or the next argument.
    Required,
    /// Glued only (getopt's `q::`): `-q` alone has none, `-q30m` has `30m`.
    Optional,
}

/// One piece of the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    Opt(char, Option<String>),
    Operand(String),
    /// `--name` (before any `--`): programs with no long options refuse it.
    Long(String),
}

/// What getopt would complain about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A letter the program does not know.
    Unknown(char),
    /// A letter that needs a value, at the end of the command line.
    MissingValue(char),
}

impl std::fmt::Display for Problem {
    /// GNU getopt's wording, which Postfix's programs print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Unknown(letter) => write!(f, "invalid option -- '{letter}'"),
            Problem::MissingValue(letter) => write!(f, "option requires an argument -- '{letter}'"),
        }
    }
}

/// Splits `args` (without the program name). `kind` says how each letter takes a value,
/// or `None` for a letter the program does not know. Stops at the first problem.
pub fn parse(args: &[String], kind: impl Fn(char) -> Option<Value>) -> Result<Vec<Arg>, Problem> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            out.extend(args[i..].iter().cloned().map(Arg::Operand));
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            out.push(Arg::Long(long.to_string()));
            continue;
        }
        let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) else {
            out.push(Arg::Operand(arg.clone()));
            continue;
        };
        for (at, letter) in cluster.char_indices() {
            let glued = &cluster[at + letter.len_utf8()..];
            match kind(letter).ok_or(Problem::Unknown(letter))? {
                Value::None => {
                    out.push(Arg::Opt(letter, None));
                    continue;
                }
                Value::Optional => {
                    out.push(Arg::Opt(
                        letter,
                        (!glued.is_empty()).then(|| glued.to_string()),
                    ));
                }
                Value::Required if !glued.is_empty() => {
                    out.push(Arg::Opt(letter, Some(glued.to_string())));
                }
                Value::Required => {
                    let value = args.get(i).ok_or(Problem::MissingValue(letter))?;
                    i += 1;
                    out.push(Arg::Opt(letter, Some(value.clone())));
                }
            }
            // A value (or the chance of one) took the rest of the cluster.
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(c: char) -> Option<Value> {
        match c {
            't' | 'i' => Some(Value::None),
            'f' => Some(Value::Required),
            'q' => Some(Value::Optional),
            _ => None,
        }
    }

    fn p(args: &[&str]) -> Result<Vec<Arg>, Problem> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse(&args, kind)
    }

    fn opt(c: char, v: Option<&str>) -> Arg {
        Arg::Opt(c, v.map(String::from))
    }

    #[test]
    fn clusters_glued_and_separate_values() {
        assert_eq!(
            p(&["-ti", "-fme", "-f", "you", "-tfx"]).unwrap(),
            [
                opt('t', None),
                opt('i', None),
                opt('f', Some("me")),
                opt('f', Some("you")),
                opt('t', None),
                opt('f', Some("x")),
            ]
        );
    }

    #[test]
    fn optional_values_are_glued_only() {
        assert_eq!(
            p(&["-q", "-q30m", "x"]).unwrap(),
            [
                opt('q', None),
                opt('q', Some("30m")),
                Arg::Operand("x".into())
            ]
        );
    }

    #[test]
    fn operands_permutation_and_double_dash() {
        assert_eq!(
            p(&["a", "-t", "-", "--", "-i", "--x"]).unwrap(),
            [
                Arg::Operand("a".into()),
                opt('t', None),
                Arg::Operand("-".into()),
                Arg::Operand("-i".into()),
                Arg::Operand("--x".into()),
            ]
        );
        assert_eq!(p(&["--help"]).unwrap(), [Arg::Long("help".into())]);
    }

    #[test]
    fn arguments_that_are_not_utf8_are_refused_not_altered() {
        use std::os::unix::ffi::OsStringExt;
        let os = |b: &[u8]| OsString::from_vec(b.to_vec());
        type Case<'a> = (&'a [&'a [u8]], Result<Vec<&'a str>, &'a str>);
        let cases: &[Case] = &[
            (
                &[b"-f", b"me", b"you@example.com"],
                Ok(vec!["-f", "me", "you@example.com"]),
            ),
            (&[b"j\xc3\xb6rg@example.com"], Ok(vec!["jörg@example.com"])),
            (&[], Ok(vec![])),
            (
                &[b"-odq", b"caf\xe9@example.com"],
                Err("malformed UTF-8 in argument 2: \"caf\\xe9@example.com\""),
            ),
            (
                &[b"\xff", b"\xfe"],
                Err("malformed UTF-8 in argument 1: \"\\xff\""),
            ),
            // A truncated sequence and a quote: escaped, so the message stays one line.
            (
                &[b"ok", b"x\xc3\"\n"],
                Err("malformed UTF-8 in argument 2: \"x\\xc3\\\"\\n\""),
            ),
        ];
        for (args, want) in cases {
            let got = text_args(args.iter().map(|a| os(a))).map_err(|e| e.to_string());
            let want = want
                .clone()
                .map(|v| v.into_iter().map(String::from).collect::<Vec<_>>())
                .map_err(String::from);
            assert_eq!(got, want, "{args:?}");
        }
    }

    #[test]
    fn problems() {
        assert_eq!(p(&["-Z"]), Err(Problem::Unknown('Z')));
        assert_eq!(p(&["-tZ"]), Err(Problem::Unknown('Z')));
        assert_eq!(p(&["-f"]), Err(Problem::MissingValue('f')));
    }
}
