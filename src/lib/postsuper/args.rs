//! `postsuper`'s command line, parsed the way Postfix's `getopt` does it (clap cannot):
//! clustered flags (`-sp`), values glued or separate (`-dALL`, `-d ALL`), repeated
//! options, queue names anywhere among the options (GNU argument permutation), `--`.
//! The option table is data, and the usage line is Postfix's.

use std::path::PathBuf;

use crate::getopt::{self, Arg, Value};
use crate::queue::QueueName;

/// Postfix's usage line, verbatim (scripts and people recognise it).
pub const USAGE: &str = "usage: postsuper [-c config_dir] [-d queue_id (delete)] \
[-e queue_id (expire)] [-f queue_id (expire and/or un-hold)] [-h queue_id (hold)] \
[-H queue_id (un-hold)] [-p (purge temporary files)] [-r queue_id (requeue)] \
[-s (structure fix)] [-S (redundant structure fix)][-v (verbose)] [queue...]";

/// What an option does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    ConfigDir,
    Act(Action),
    Expire,
    Purge,
    Structure,
    Verbose,
}

/// One row of the option table.
struct Spec {
    letter: char,
    takes_value: bool,
    opt: Opt,
}

const OPTIONS: &[Spec] = &[
    Spec {
        letter: 'c',
        takes_value: true,
        opt: Opt::ConfigDir,
    },
    Spec {
        letter: 'd',
        takes_value: true,
        opt: Opt::Act(Action::Delete),
    },
    Spec {
        letter: 'e',
        takes_value: true,
        opt: Opt::Expire,
    },
    Spec {
        letter: 'f',
        takes_value: true,
        opt: Opt::Expire,
    },
    Spec {
        letter: 'h',
        takes_value: true,
        opt: Opt::Act(Action::Hold),
    },
    Spec {
        letter: 'H',
        takes_value: true,
        opt: Opt::Act(Action::Release),
    },
    Spec {
        letter: 'p',
        takes_value: false,
        opt: Opt::Purge,
    },
    Spec {
        letter: 'r',
        takes_value: true,
        opt: Opt::Act(Action::Requeue),
    },
    Spec {
        letter: 's',
        takes_value: false,
        opt: Opt::Structure,
    },
    // Postfix's "redundant" check compares inode numbers, which our IDs do not use.
    Spec {
        letter: 'S',
        takes_value: false,
        opt: Opt::Structure,
    },
    Spec {
        letter: 'v',
        takes_value: false,
        opt: Opt::Verbose,
    },
];

/// The four things postsuper does to messages, in the order Postfix does them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Delete,
    Requeue,
    Hold,
    Release,
}

impl Action {
    pub const ORDER: [Action; 4] = [
        Action::Delete,
        Action::Requeue,
        Action::Hold,
        Action::Release,
    ];

    pub fn letter(self) -> char {
        match self {
            Action::Delete => 'd',
            Action::Requeue => 'r',
            Action::Hold => 'h',
            Action::Release => 'H',
        }
    }
}

/// Which messages an action names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `ALL` (upper case only, as Postfix's safety measure).
    All,
    /// `-`: IDs from standard input, one a line.
    Stdin,
    /// One ID as typed; validated when used.
    Id(String),
}

/// A parsed command line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Request {
    pub config_dir: Option<PathBuf>,
    /// Targets per action, in command-line order.
    pub delete: Vec<Target>,
    pub requeue: Vec<Target>,
    pub hold: Vec<Target>,
    pub release: Vec<Target>,
    pub structure: bool,
    pub purge: bool,
    pub verbose: u32,
    /// Queue names given as arguments; empty means each action's default.
    pub queues: Vec<QueueName>,
}

impl Request {
    pub fn targets(&self, action: Action) -> &[Target] {
        match action {
            Action::Delete => &self.delete,
            Action::Requeue => &self.requeue,
            Action::Hold => &self.hold,
            Action::Release => &self.release,
        }
    }

    fn targets_mut(&mut self, action: Action) -> &mut Vec<Target> {
        match action {
            Action::Delete => &mut self.delete,
            Action::Requeue => &mut self.requeue,
            Action::Hold => &mut self.hold,
            Action::Release => &mut self.release,
        }
    }

    /// True when no action was asked for: then postsuper does `-s -p`, as Postfix.
    pub fn is_empty(&self) -> bool {
        Action::ORDER.iter().all(|&a| self.targets(a).is_empty()) && !self.structure && !self.purge
    }
}

/// Why a command line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgError {
    /// A getopt complaint (`invalid option -- 'x'`), to be followed by the usage line.
    Usage(String),
    /// A fatal error about an argument's value.
    Fatal(String),
}

/// Parses the arguments after the program name.
pub fn parse<I, S>(args: I) -> Result<Request, ArgError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    let mut request = Request::default();
    let mut positional = Vec::new();
    let kind = |letter| {
        OPTIONS.iter().find(|s| s.letter == letter).map(|s| {
            if s.takes_value {
                Value::Required
            } else {
                Value::None
            }
        })
    };
    let parsed =
        getopt::parse(&args, kind).map_err(|problem| ArgError::Usage(problem.to_string()))?;
    for arg in parsed {
        match arg {
            Arg::Operand(name) => positional.push(name),
            // No long options: getopt sees `--foo` as the unknown letter '-'.
            Arg::Long(_) => return Err(ArgError::Usage("invalid option -- '-'".into())),
            Arg::Opt(letter, value) => {
                if let Some(spec) = OPTIONS.iter().find(|s| s.letter == letter) {
                    apply(&mut request, spec.opt, value)?;
                }
            }
        }
    }
    for name in positional {
        let queue = QueueName::parse(&name)
            .ok_or_else(|| ArgError::Fatal(format!("invalid directory name: {name}")))?;
        if !request.queues.contains(&queue) {
            request.queues.push(queue);
        }
    }
    Ok(request)
}

fn apply(request: &mut Request, opt: Opt, value: Option<String>) -> Result<(), ArgError> {
    let value = value.unwrap_or_default();
    match opt {
        Opt::ConfigDir => {
            if !value.starts_with('/') {
                return Err(ArgError::Fatal("-c requires absolute pathname".into()));
            }
            request.config_dir = Some(PathBuf::from(value));
        }
        Opt::Act(action) => {
            let target = match value.as_str() {
                "ALL" => Target::All,
                "-" => Target::Stdin,
                _ => Target::Id(value),
            };
            request.targets_mut(action).push(target);
        }
        Opt::Expire => {
            return Err(ArgError::Fatal(
                "-e and -f (force expiry) are not supported by mailroom; \
                 use -H to release held mail"
                    .into(),
            ));
        }
        Opt::Purge => request.purge = true,
        Opt::Structure => request.structure = true,
        Opt::Verbose => request.verbose += 1,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getopt_forms() {
        let r = parse([
            "-d",
            "ALL",
            "deferred",
            "-dAAAAAAAAAA",
            "-sp",
            "-h",
            "-",
            "-vv",
        ])
        .unwrap();
        assert_eq!(r.delete, vec![Target::All, Target::Id("AAAAAAAAAA".into())]);
        assert_eq!(r.hold, vec![Target::Stdin]);
        assert!(r.structure && r.purge);
        assert_eq!(r.verbose, 2);
        assert_eq!(r.queues, vec![QueueName::Deferred]);
        let r = parse(["-c/etc/x", "-sH", "ALL", "--", "hold"]).unwrap();
        assert_eq!(r.config_dir, Some(PathBuf::from("/etc/x")));
        assert_eq!(r.release, vec![Target::All]);
        assert_eq!(r.queues, vec![QueueName::Hold]);
        assert!(parse(Vec::<String>::new()).unwrap().is_empty());
    }

    #[test]
    fn refusals() {
        assert_eq!(
            parse(["-x"]),
            Err(ArgError::Usage("invalid option -- 'x'".into()))
        );
        assert_eq!(
            parse(["-d"]),
            Err(ArgError::Usage("option requires an argument -- 'd'".into()))
        );
        assert!(matches!(
            parse(["-d", "ALL", "nosuchq"]),
            Err(ArgError::Fatal(_))
        ));
        assert!(matches!(parse(["-c", "relative"]), Err(ArgError::Fatal(_))));
        assert!(matches!(parse(["-e", "ALL"]), Err(ArgError::Fatal(_))));
        // "all" is not ALL: it is an ID (an invalid one), as in Postfix.
        assert_eq!(
            parse(["-d", "all"]).unwrap().delete,
            vec![Target::Id("all".into())]
        );
    }
}
