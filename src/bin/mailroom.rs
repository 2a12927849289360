//! `mailroom`: the operator's command — run, start, stop, reload and look at the daemon
//! (`daemon`, `start`, `stop`, `status`, `reload`, `flush`, as `postfix` does), deliver
//! the queue or some messages now (`deliver`), inspect and edit
//! `main.cf` (`config`, as `postconf`), check the configuration (`check`), show the
//! queue's shape (`queue`, as `qshape`), make DKIM keys (`dkim`) and check the DNS
//! records a mail domain needs (`dns`). Parses argv and
//! maps outcomes to exit codes; the work is in `mailroom::operator`.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, CommandFactory, Parser, Subcommand};
use mailroom::config::Config;
use mailroom::daemon::modes;
use mailroom::operator::{self, control, shape};
use mailroom::privilege;
use mailroom::sysexits::Error;

#[derive(Parser)]
#[command(
    name = "mailroom",
    version,
    about = "Operate the mailroom mail system: daemon, configuration, checks, queue shape"
)]
struct Cli {
    /// The configuration directory (default: $MAIL_CONFIG, else /etc/mailroom).
    #[arg(short = 'c', long = "config-dir", value_name = "DIR", global = true)]
    config_dir: Option<PathBuf>,
    /// Internal: run for `sendmail`, which execs mailroom for -bd, -bD, -q and -odi, and
    /// speak as it did (`sendmail: fatal: ...`; `start` exits 75 when a daemon runs).
    #[arg(long, hide = true, global = true)]
    for_sendmail: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground until SIGTERM, logging to stderr unless
    /// maillog_file is set (as sendmail -bD; what a systemd unit runs).
    Daemon {
        #[command(flatten)]
        interval: Interval,
    },
    /// Start the daemon in the background; returns once it runs (as sendmail -bd).
    Start {
        #[command(flatten)]
        interval: Interval,
    },
    /// Deliver the whole queue once in the foreground (as sendmail -q), or only the
    /// messages named (queue IDs, or parts of them as sendmail -qI takes them).
    Deliver {
        /// Internal (sendmail -odi): standard input is the queue file of the one ID,
        /// still locked; deliver it and exit as sendmail -odi does.
        #[arg(long, hide = true)]
        queued_on_stdin: bool,
        /// Queue IDs, or parts of them (none: the whole queue).
        #[arg(value_name = "ID")]
        ids: Vec<String>,
    },
    /// Stop the daemon (SIGTERM) and wait until it has exited.
    Stop {
        /// Seconds to wait for the daemon to exit.
        #[arg(long, value_name = "SECONDS", default_value_t = 30)]
        timeout: u64,
    },
    /// Say whether the daemon runs, where it listens and what the queues hold; exit 3 if
    /// it is not running.
    Status,
    /// Make the daemon read main.cf again (SIGHUP).
    Reload,
    /// Try deferred mail now (postqueue -f).
    Flush,
    /// Show parameters as postconf does, or change main.cf (set, unset).
    #[command(disable_help_flag = true, args_conflicts_with_subcommands = true)]
    Config(ConfigArgs),
    /// Check the configuration and the files it names; exit 1 if anything is wrong.
    Check {
        /// Print a JSON array of problems.
        #[arg(long)]
        json: bool,
    },
    /// Show the queue's shape as qshape does: domains against message age.
    Queue(QueueArgs),
    /// Make DKIM signing keys and print the DNS records that publish them.
    #[command(subcommand)]
    Dkim(DkimCommand),
    /// Check the DNS records of a mail domain and this host (A, MX, PTR, SPF, DKIM,
    /// DMARC); exit 1 if any is missing or wrong, 75 if DNS cannot be reached.
    Dns {
        /// The domain (default: $mydomain).
        #[arg(value_name = "DOMAIN")]
        domain: Option<String>,
        /// Print a JSON array of checks.
        #[arg(long)]
        json: bool,
        /// Ask this name server instead of dns_nameservers or /etc/resolv.conf.
        #[arg(long, value_name = "ADDRESS[:PORT]")]
        server: Option<String>,
    },
    /// The SMTP sessions process the daemon starts (as root) on the listening sockets it
    /// passes as descriptors 3, 4, ...; it becomes mail_owner before it serves them.
    #[command(hide = true, name = "smtpd-sessions")]
    SmtpdSessions {
        /// How many sockets the daemon passed.
        #[arg(long = "fds", value_name = "N")]
        fds: usize,
        /// How many of them, the last ones, are the submission port's.
        #[arg(long = "submission-fds", value_name = "N", default_value_t = 0)]
        submission_fds: usize,
        /// Log to standard error when maillog_file is not set (a daemon in the foreground).
        #[arg(long)]
        stderr: bool,
    },
    /// Run the SMTP client for the daemon, as mail_owner (started by the daemon, with a
    /// socket as standard input).
    #[command(hide = true)]
    SmtpAgent,
    /// Print shell completions (bash, zsh, fish, elvish, powershell) for mailroom, or
    /// for mailq or newaliases with --program.
    #[command(hide = true)]
    Completions {
        shell: clap_complete::Shell,
        #[arg(long, value_enum, default_value = "mailroom")]
        program: Program,
    },
}

#[derive(Subcommand)]
enum DkimCommand {
    /// Write a new key to dkim_key_directory/DOMAIN.SELECTOR.key (mode 0600) and print
    /// the TXT record to publish, as one zone-file line.
    Keygen {
        #[command(flatten)]
        names: DkimNames,
        /// The key type.
        #[arg(long, value_enum, default_value = "rsa")]
        algorithm: DkimAlgorithm,
        /// The RSA key size, 2048 to 4096 (default 2048).
        #[arg(long, value_name = "N")]
        bits: Option<usize>,
        /// Replace an existing key (its record must then be published again).
        #[arg(long)]
        force: bool,
    },
    /// Print the TXT record of an existing key again.
    Record {
        #[command(flatten)]
        names: DkimNames,
    },
}

#[derive(clap::Args)]
struct DkimNames {
    /// The signing domain (default: $mydomain).
    #[arg(short = 'd', long = "domain", value_name = "DOMAIN")]
    domain: Option<String>,
    /// The selector (default: dkim_selector, else mail).
    #[arg(short = 's', long = "selector", value_name = "SELECTOR")]
    selector: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DkimAlgorithm {
    Rsa,
    Ed25519,
}

/// The clap-based programs `mailroom completions` knows (`sendmail` and `postsuper`
/// parse their legacy command lines themselves).
#[derive(Clone, Copy, clap::ValueEnum)]
enum Program {
    Mailroom,
    Mailq,
    Newaliases,
}

/// The daemon's periodic queue runs (`sendmail -q30m`).
#[derive(clap::Args)]
struct Interval {
    /// Also try every deferred message this often (a number is minutes: 30, 30m, 1h).
    #[arg(short = 'q', long = "interval", value_name = "INTERVAL")]
    interval: Option<String>,
}

#[derive(clap::Args)]
struct ConfigArgs {
    #[command(subcommand)]
    action: Option<ConfigAction>,
    /// Only the parameters set in main.cf.
    #[arg(short = 'n')]
    only_set: bool,
    /// The default values.
    #[arg(short = 'd')]
    defaults: bool,
    /// Expand $name references.
    #[arg(short = 'x')]
    expand: bool,
    /// Print values only, without "name = ".
    #[arg(short = 'h')]
    values_only: bool,
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
    /// Parameters to show (default: all).
    names: Vec<String>,
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Set parameters in main.cf in place (postconf -e).
    Set {
        #[arg(required = true, value_name = "NAME=VALUE")]
        assignments: Vec<String>,
    },
    /// Remove parameters from main.cf (postconf -X).
    Unset {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
}

#[derive(clap::Args)]
struct QueueArgs {
    /// Count sender domains instead of recipient domains.
    #[arg(short = 's')]
    senders: bool,
    /// Show at most N domains.
    #[arg(short = 'n', value_name = "N")]
    limit: Option<usize>,
    /// Width of the first age bucket, in minutes.
    #[arg(short = 't', value_name = "MINUTES", default_value_t = shape::DEFAULT_BUCKET_MINUTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    bucket_minutes: u64,
    /// Number of age buckets, the last one open-ended.
    #[arg(short = 'b', value_name = "COUNT", default_value_t = shape::DEFAULT_BUCKETS,
          value_parser = parse_buckets)]
    buckets: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// A queue to look at (repeatable); default: maildrop incoming active.
    #[arg(long = "queue", short = 'q', value_name = "QUEUE")]
    queue_opts: Vec<String>,
    /// Queues to look at, as qshape takes them.
    queues: Vec<String>,
}

fn parse_buckets(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (2..=40).contains(&n) => Ok(n),
        _ => Err("expected a number from 2 to 40".into()),
    }
}

fn main() -> ExitCode {
    let cli = match mailroom::getopt::text_args(std::env::args_os().skip(1)) {
        Ok(argv) => Cli::parse_from(std::iter::once("mailroom".to_string()).chain(argv)),
        Err(message) => return fail("mailroom", &Error::usage(message.to_string())),
    };
    // Run by sendmail, mailroom speaks as sendmail did before it handed over.
    let program = if cli.for_sendmail {
        "sendmail"
    } else {
        "mailroom"
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => fail(program, &e),
    }
}

fn fail(program: &str, e: &Error) -> ExitCode {
    let _ = writeln!(io::stderr(), "{program}: fatal: {e}");
    ExitCode::from(e.code() as u8)
}

fn run(cli: Cli) -> Result<u8, Error> {
    let dir = cli.config_dir.as_deref();
    let for_sendmail = cli.for_sendmail;
    // The daemon and deliveries are root's. Run by sendmail, the check is sendmail's, made
    // before it handed over: a set-gid sendmail refuses every caller but root (77), one
    // that is not set-gid trusts whoever runs it (a private MAIL_CONFIG); mailroom itself
    // carries no privilege to give away.
    let root_only = |what: &str| {
        if for_sendmail {
            Ok(())
        } else {
            privilege::require_root(&operator::root_only(what))
        }
    };
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match cli.command {
        Command::Daemon { interval } => {
            root_only("daemon")?;
            let config = Config::load(dir)?;
            modes::foreground(&config, interval.interval.as_deref()).map(|()| 0)
        }
        Command::Start { interval } => {
            root_only("start")?;
            let config = Config::load(dir)?;
            let interval = interval.interval.as_deref();
            if for_sendmail {
                // sendmail -bd: silent, and 75 when a daemon runs, as it always was.
                return modes::background(&config, interval).map(|()| 0);
            }
            control::start(&config, interval, &mut out)
        }
        Command::Deliver {
            queued_on_stdin,
            ids,
        } => {
            root_only("deliver")?;
            let config = Config::load(dir)?;
            if !queued_on_stdin {
                return modes::deliver(&config, &ids, !for_sendmail).map(|()| 0);
            }
            let [id] = ids.as_slice() else {
                return Err(Error::usage("--queued-on-stdin takes exactly one queue ID"));
            };
            let file = io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| Error::io("standard input", &e))?;
            let program = if for_sendmail { "sendmail" } else { "mailroom" };
            modes::deliver_submitted(&config, id, file.into(), program).map(|()| 0)
        }
        Command::Stop { timeout } => {
            privilege::require_root(&operator::root_only("stop"))?;
            let timeout = std::time::Duration::from_secs(timeout);
            control::stop(&Config::load(dir)?, timeout, &mut out)
        }
        Command::Status => control::status(&Config::load(dir)?, &mut out),
        Command::Reload => {
            privilege::require_root(&operator::root_only("reload"))?;
            control::reload(&Config::load(dir)?, &mut out)
        }
        Command::Flush => {
            privilege::require_root(&operator::root_only("flush"))?;
            control::flush(&Config::load(dir)?, &mut out)
        }
        Command::Config(args) => match args.action {
            Some(ConfigAction::Set { assignments }) => {
                operator::config_set(dir, &assignments).map(|_| 0)
            }
            Some(ConfigAction::Unset { names }) => operator::config_unset(dir, &names).map(|_| 0),
            None => {
                let config = Config::load(dir)?;
                let show = operator::show::Show {
                    names: args.names,
                    only_set: args.only_set,
                    defaults: args.defaults,
                    expand: args.expand,
                    values_only: args.values_only,
                };
                operator::show::print(&config, &show, &mut out).map(|()| 0)
            }
        },
        Command::Check { json } => {
            let config = Config::load(dir)?;
            let failed = operator::run_check(&config, json, &mut out)?;
            Ok(u8::from(failed))
        }
        Command::Queue(args) => {
            let config = Config::load(dir)?;
            let names: Vec<&String> = args.queue_opts.iter().chain(&args.queues).collect();
            let queues = if names.is_empty() {
                shape::DEFAULT_QUEUES.to_vec()
            } else {
                names
                    .into_iter()
                    .map(|n| operator::parse_queue_name(n))
                    .collect::<Result<Vec<_>, _>>()?
            };
            let options = shape::Options {
                queues,
                senders: args.senders,
                bucket_minutes: args.bucket_minutes,
                buckets: args.buckets,
            };
            operator::run_queue(&config, &options, args.limit, args.json, &mut out).map(|()| 0)
        }
        Command::Dns {
            domain,
            json,
            server,
        } => {
            let options = operator::dns::Options {
                domain,
                server,
                json,
            };
            operator::dns::run(&Config::load(dir)?, &options, &mut out)
        }
        Command::Dkim(DkimCommand::Keygen {
            names,
            algorithm,
            bits,
            force,
        }) => {
            let args = operator::dkim::Keygen {
                domain: names.domain,
                selector: names.selector,
                algorithm: match algorithm {
                    DkimAlgorithm::Rsa => mailroom::dkim::Algorithm::Rsa,
                    DkimAlgorithm::Ed25519 => mailroom::dkim::Algorithm::Ed25519,
                },
                bits,
                force,
            };
            operator::dkim::keygen(&Config::load(dir)?, &args, &mut out).map(|()| 0)
        }
        Command::Dkim(DkimCommand::Record { names }) => {
            let (domain, selector) = (names.domain.as_deref(), names.selector.as_deref());
            operator::dkim::record(&Config::load(dir)?, domain, selector, &mut out).map(|()| 0)
        }
        Command::SmtpdSessions {
            fds,
            submission_fds,
            stderr,
        } => mailroom::smtpd::sessions::run(dir, fds, submission_fds, stderr).map(|()| 0),
        Command::SmtpAgent => {
            let dir = dir.ok_or_else(|| Error::usage("smtp-agent: -c DIR is required"))?;
            mailroom::deliver::smtp::agent::serve(dir).map(|()| 0)
        }
        Command::Completions { shell, program } => {
            let mut buf = Vec::new();
            let (mut command, name) = match program {
                Program::Mailroom => (Cli::command(), "mailroom"),
                Program::Mailq => (mailroom::mailq::Args::command(), "mailq"),
                Program::Newaliases => (mailroom::aliases::NewaliasesArgs::command(), "newaliases"),
            };
            clap_complete::generate(shell, &mut command, name, &mut buf);
            operator::write_out(&mut out, &buf).map(|()| 0)
        }
    }
}
