//! `mailroom`, the operator's command: what Postfix spreads over `postfix`, `postconf`
//! and `qshape`. One module per job; `src/bin/mailroom.rs` only parses argv.
//!
//! - [`control`]: `start`, `stop`, `status`, `reload`, `flush`, over the daemon library's
//!   lock and pid file;
//! - [`show`] and [`edit`]: `mailroom config` (print) and `config set`/`unset` (edit
//!   `main.cf` in place), with [`suggest`] for misspelled names;
//! - [`check`]: `mailroom check`, the configuration checker;
//! - [`shape`]: `mailroom queue`, the queue's shape as `qshape` prints it;
//! - [`dkim`]: `mailroom dkim keygen` and `record`, DKIM keys and their DNS records;
//! - [`dns`]: `mailroom dns`, the DNS records a mail domain needs, checked.

pub mod check;
pub mod control;
pub mod dkim;
pub mod dns;
pub mod edit;
pub mod shape;
pub mod show;
pub mod suggest;

use std::io::{self, Write};
use std::path::Path;

use crate::config::{Config, DirSource, FILE_NAME, choose_dir, known_parameters};
use crate::privilege;
use crate::queue::{Queue, QueueName};
use crate::sysexits::{Error, Result};

pub use edit::Edit;

/// How `mailroom` refuses `mailroom {what}` to a caller who is not root
/// ([`privilege::require_root`]).
pub fn root_only(what: &str) -> String {
    format!("mailroom {what}: only root may do this (run it with sudo)")
}

/// The exit status of `mailroom status` (and of `stop`/`reload` with nothing running)
/// when the daemon is not running: 3, as `systemctl is-active` and LSB init scripts use.
pub const NOT_RUNNING: u8 = 3;

/// Writes `bytes` and flushes; a reader that went away (`mailroom config | head`) is not
/// an error.
pub fn write_out(out: &mut dyn Write, bytes: &[u8]) -> Result<()> {
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::io("write standard output", &e)),
    }
}

/// `mailroom config set NAME=VALUE...` (`postconf -e`): each name must be known; the new
/// file must still give every set parameter a value of its type, or nothing is written.
/// `-c DIR`/`MAIL_CONFIG` choose the directory; a missing `main.cf` is created.
pub fn config_set(dir: Option<&Path>, assignments: &[String]) -> Result<bool> {
    privilege::require_root(&root_only("config set"))?;
    let mut edits = Vec::with_capacity(assignments.len());
    for text in assignments {
        let (name, value) = edit::parse_assignment(text)?;
        if !known_parameters().iter().any(|p| p.name == name) {
            return Err(Error::usage(suggest::unknown_parameter(&name)));
        }
        edits.push(Edit::Set(name, value));
    }
    let file = main_cf(dir)?;
    let names: Vec<String> = edits
        .iter()
        .map(|e| match e {
            Edit::Set(n, _) | Edit::Unset(n) => n.clone(),
        })
        .collect();
    let validate = |text: &str| -> Result<()> {
        let config = Config::from_text(text, &file);
        let problems = check::params::check(&config);
        match problems.iter().find(|p| {
            p.severity == check::Severity::Error
                && p.parameter.as_ref().is_some_and(|n| names.contains(n))
        }) {
            Some(p) => Err(Error::data(format!(
                "{}; {} not changed",
                p.problem,
                file.display()
            ))),
            None => Ok(()),
        }
    };
    edit::edit_file(&file, &edits, &validate)
}

/// `mailroom config unset NAME...` (`postconf -X`). A name that mailroom does not know
/// may be removed when the file sets it (that is how a misspelling is cleaned up);
/// otherwise it is an error with a suggestion.
pub fn config_unset(dir: Option<&Path>, names: &[String]) -> Result<bool> {
    privilege::require_root(&root_only("config unset"))?;
    let file = main_cf(dir)?;
    let current = Config::from_text(&read_lossy(&file), &file);
    let mut edits = Vec::with_capacity(names.len());
    for name in names {
        edit::check_name(name)?;
        let known = known_parameters().iter().any(|p| p.name == name);
        if !known && !current.is_set(name) {
            return Err(Error::usage(suggest::unknown_parameter(name)));
        }
        edits.push(Edit::Unset(name.clone()));
    }
    edit::edit_file(&file, &edits, &|_| Ok(()))
}

/// The `main.cf` that `config set`/`unset` edit. Unlike the readers, an editor does not
/// need the file to exist, only its directory.
fn main_cf(dir: Option<&Path>) -> Result<std::path::PathBuf> {
    let env = std::env::var_os("MAIL_CONFIG");
    let (dir, _source): (std::path::PathBuf, DirSource) =
        choose_dir(dir, env.as_deref(), privilege::distrusts_caller());
    if !dir.is_dir() {
        return Err(Error::config(format!(
            "configuration directory {}: No such directory",
            dir.display()
        )));
    }
    Ok(dir.join(FILE_NAME))
}

/// The file's text for `config unset`; a file that cannot be read (or is no regular
/// file) reads as empty here, and [`edit::edit_file`] then says what is wrong with it.
fn read_lossy(path: &Path) -> String {
    crate::config::read_main_cf(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// `mailroom check`: prints the problems (text or JSON) and returns whether the check
/// failed. A clean configuration prints nothing (text) or `[]` (JSON).
pub fn run_check(config: &Config, json: bool, out: &mut dyn Write) -> Result<bool> {
    let problems = check::run(config);
    let text = if json {
        check::render_json(&problems)
    } else {
        check::render_text(&problems)
    };
    write_out(out, text.as_bytes())?;
    Ok(check::fails(&problems))
}

/// `mailroom queue`: the shape of the queue.
pub fn run_queue(
    config: &Config,
    options: &shape::Options,
    limit: Option<usize>,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let queue = Queue::from_config(config)?;
    let mut warn = |w: &str| eprintln!("mailroom: warning: {w}");
    let measured = shape::measure(&queue, options, shape::now(), &mut warn)?;
    let text = if json {
        shape::render_json(&measured, options, limit)
    } else {
        shape::render_text(&measured, limit)
    };
    write_out(out, text.as_bytes())
}

/// Parses a queue name for `mailroom queue`; `corrupt` is not mail and is refused.
pub fn parse_queue_name(name: &str) -> Result<QueueName> {
    match QueueName::parse(name) {
        Some(q) if q != QueueName::Corrupt => Ok(q),
        _ => Err(Error::usage(format!(
            "unknown queue \"{name}\" (maildrop, incoming, active, deferred, hold)"
        ))),
    }
}
