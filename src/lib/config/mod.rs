//! `main.cf`: Postfix's configuration syntax and `$name` expansion, mailroom's defaults, and
//! typed getters.
//!
//! A [`Config`] keeps each parameter as written and expands it only when asked (Postfix's
//! lazy evaluation), so a value may refer to parameters set later in the file. Problems that
//! do not stop the file from loading (bad lines, unknown names, undefined references) are
//! collected in [`Config::warnings`]; the caller decides whether to show them, since
//! `sendmail` must stay quiet for cron. Problems with a value that is needed are errors of
//! code 78 (`EX_CONFIG`) from the getter that needs it.

mod dirs;
mod expand;
mod host;
mod params;
mod parse;
#[cfg(test)]
mod tests;
mod values;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::sysexits::{Error, Result, describe_io};
use expand::{Budget, Context, ExpandError, Resolve, expand};
use host::{first_line_of, host_name, read_file};
use parse::Setting;

pub use dirs::{DEFAULT_DIR, DirSource, choose_dir};
pub use host::{MAX_MAIN_CF, read_main_cf};
pub use params::{COMPUTED, ParamInfo, ParamKind, known_parameters, man_section};
pub use values::{Table, parse_time};

/// The name of the file inside the configuration directory.
pub const FILE_NAME: &str = "main.cf";

/// The configuration in use: what `main.cf` set, over the built-in defaults.
#[derive(Debug)]
pub struct Config {
    dir: PathBuf,
    file: PathBuf,
    settings: HashMap<String, Setting>,
    /// Warnings found while reading the file, with the line they concern.
    load_warnings: Vec<(usize, String)>,
    /// All warnings, completed on first use by a dry run of every expansion.
    warnings: OnceLock<Vec<String>>,
    /// gethostname(2), read once: the base of the `myhostname` default.
    host: String,
}

impl Config {
    /// Reads the configuration: `explicit_dir` (`-C`/`-c`), else `MAIL_CONFIG`, else
    /// `/etc/mailroom` (a set-gid/set-uid process ignores the first two for a non-root
    /// caller). A missing default file means all defaults; a missing or unreadable file in a
    /// named directory is an error of code 78.
    pub fn load(explicit_dir: Option<&Path>) -> Result<Config> {
        let env = std::env::var_os("MAIL_CONFIG");
        // `privilege` remembers a set-id start even after the group is given up: the
        // caller must not regain the choice by then.
        let distrusted = crate::privilege::distrusts_caller();
        let (dir, source) = choose_dir(explicit_dir, env.as_deref(), distrusted);
        Config::load_dir(dir, source)
    }

    /// Reads `main.cf` in `dir`; `source` says whether it may be missing.
    pub fn load_dir(dir: PathBuf, source: DirSource) -> Result<Config> {
        let file = dir.join(FILE_NAME);
        let text = match read_file(&file) {
            Ok(text) => text,
            Err(err)
                if err.kind() == std::io::ErrorKind::NotFound && source == DirSource::Default =>
            {
                String::new()
            }
            Err(err) => {
                let message = format!("open {}: {}", file.display(), describe_io(&err));
                return Err(Error::config(message));
            }
        };
        Ok(Config::build(&text, dir, file, host_name()))
    }

    /// Parses `text` as if read from `file` (for tests and tools).
    pub fn from_text(text: &str, file: &Path) -> Config {
        let dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
        Config::build(text, dir, file.to_path_buf(), host_name())
    }

    fn build(text: &str, dir: PathBuf, file: PathBuf, host: String) -> Config {
        let parsed = parse::parse(text, &file);
        let mut load_warnings = parsed.warnings;
        for (name, setting) in &parsed.settings {
            if params::find(name).is_none() {
                let where_ = format!("{}, line {}", file.display(), setting.line);
                load_warnings.push((
                    setting.line,
                    format!("{where_}: unknown parameter \"{name}\""),
                ));
            }
        }
        load_warnings.sort_by_key(|(line, _)| *line);
        Config {
            dir,
            file,
            settings: parsed.settings,
            load_warnings,
            warnings: OnceLock::new(),
            host,
        }
    }

    /// The configuration directory in use.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its `main.cf`.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Everything worth telling the administrator, in line order: lines that were skipped,
    /// unknown parameters, references to undefined parameters, values that cannot be
    /// expanded. Never printed by this module.
    pub fn warnings(&self) -> &[String] {
        self.warnings.get_or_init(|| self.collect_warnings())
    }

    /// True when `name` is set in `main.cf`.
    pub fn is_set(&self, name: &str) -> bool {
        self.settings.contains_key(name)
    }

    /// The value as written in `main.cf` (continuations joined), unexpanded.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.settings.get(name).map(|s| s.value.as_str())
    }

    /// The line of `main.cf` where `name` is set (the last setting, which wins).
    pub fn set_line(&self, name: &str) -> Option<usize> {
        self.settings.get(name).map(|s| s.line)
    }

    /// The parameters set in `main.cf` as `(name, raw value, line)`, in file order.
    pub fn settings(&self) -> Vec<(&str, &str, usize)> {
        let mut all: Vec<_> = self
            .settings
            .iter()
            .map(|(name, s)| (name.as_str(), s.value.as_str(), s.line))
            .collect();
        all.sort_by_key(|&(_, _, line)| line);
        all
    }

    /// The default of `name` as `postconf -d` shows it: the table's text, or the computed
    /// value for `myhostname` and `mydomain`. `None` for an unknown name.
    pub fn default_text(&self, name: &str) -> Option<String> {
        let info = params::find(name)?;
        if !COMPUTED.contains(&name) {
            return Some(info.default.to_string());
        }
        let mut ctx = Context::new();
        let value = match name {
            "myhostname" => self.default_myhostname(&mut ctx),
            "config_directory" => Ok(self.dir.display().to_string()),
            _ => self.default_mydomain(&mut ctx),
        };
        Some(value.unwrap_or_default())
    }

    /// The effective value of `name`, expanded: the file's setting, else the default. An
    /// error for a name that is neither known nor set, or a value that cannot be expanded.
    pub fn get(&self, name: &str) -> Result<String> {
        let mut ctx = Context::new();
        match self.resolve(name, &mut ctx) {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(Error::config(format!("unknown parameter: {name}"))),
            Err(message) => Err(self.error(name, &message)),
        }
    }

    /// A list value: items separated by commas and/or white space, empty items dropped.
    pub fn list(&self, name: &str) -> Result<Vec<String>> {
        Ok(values::split_list(&self.get(name)?))
    }

    /// A time value; a bare number is in the parameter's default unit (seconds for a name
    /// that is not a known time parameter).
    pub fn time(&self, name: &str) -> Result<Duration> {
        let unit = match params::find(name).map(|info| info.kind) {
            Some(ParamKind::Time(unit)) => unit,
            _ => 's',
        };
        let value = self.get(name)?;
        values::parse_time(&value, unit).map_err(|m| self.error(name, &m))
    }

    /// A size or count.
    pub fn number(&self, name: &str) -> Result<u64> {
        let value = self.get(name)?;
        values::parse_number(&value).map_err(|m| self.error(name, &m))
    }

    /// A `yes`/`no` value.
    pub fn boolean(&self, name: &str) -> Result<bool> {
        let value = self.get(name)?;
        values::parse_bool(&value).map_err(|m| self.error(name, &m))
    }

    /// A list of `type:path` tables.
    pub fn tables(&self, name: &str) -> Result<Vec<Table>> {
        let value = self.get(name)?;
        values::parse_tables(&value).map_err(|m| self.error(name, &m))
    }

    /// This host's fully qualified name.
    pub fn myhostname(&self) -> Result<String> {
        self.non_empty("myhostname")
    }

    /// This host's domain.
    pub fn mydomain(&self) -> Result<String> {
        self.non_empty("mydomain")
    }

    /// The domain of unqualified addresses; `myorigin = /etc/mailname` gives the first line
    /// of that file (Debian's convention).
    pub fn myorigin(&self) -> Result<String> {
        self.non_empty("myorigin")
    }

    /// The domains delivered locally, lowercased.
    pub fn mydestination(&self) -> Result<Vec<String>> {
        let list = self.list("mydestination")?;
        Ok(list.into_iter().map(|d| d.to_ascii_lowercase()).collect())
    }

    /// The account network-facing processes run as (`mail_owner`), looked up.
    pub fn mail_owner(&self) -> Result<crate::privilege::MailOwner> {
        crate::privilege::MailOwner::lookup(&self.get("mail_owner")?)
    }

    /// The queue's top directory; must be absolute, since every queue path hangs off it.
    pub fn queue_directory(&self) -> Result<PathBuf> {
        let dir = PathBuf::from(self.get("queue_directory")?);
        if !dir.is_absolute() {
            let message = format!("not an absolute path: \"{}\"", dir.display());
            return Err(self.error("queue_directory", &message));
        }
        Ok(dir)
    }

    /// The largest message accepted, in bytes; 0 means unlimited.
    pub fn message_size_limit(&self) -> Result<u64> {
        self.number("message_size_limit")
    }

    fn non_empty(&self, name: &str) -> Result<String> {
        let value = self.get(name)?;
        if value.is_empty() {
            return Err(self.error(name, "empty value"));
        }
        Ok(value)
    }

    /// An error about parameter `name`, naming the line that set it.
    fn error(&self, name: &str, message: impl std::fmt::Display) -> Error {
        let text = match self.set_line(name) {
            Some(line) => format!(
                "{}, line {line}: parameter {name}: {message}",
                self.file.display()
            ),
            None => format!("parameter {name}: {message}"),
        };
        Error::config(text)
    }

    /// The default of `myhostname`, as Postfix's `check_myhostname()`: the host name, with
    /// `.$mydomain` (when set in main.cf) or `.localdomain` appended when it has no dot.
    fn default_myhostname(&self, ctx: &mut Context) -> std::result::Result<String, ExpandError> {
        if self.host.contains('.') {
            return Ok(self.host.clone());
        }
        let domain = match self.settings.contains_key("mydomain") {
            true => expand("$mydomain", self, ctx)?,
            false => String::new(),
        };
        let domain = if domain.is_empty() {
            "localdomain"
        } else {
            &domain
        };
        Ok(format!("{}.{domain}", self.host))
    }

    /// The default of `mydomain`, as Postfix's `check_mydomainname()`: `$myhostname` without
    /// its first label, unless that leaves a name without a dot (`foo.com` is taken to be a
    /// domain itself), then `localdomain`.
    fn default_mydomain(&self, ctx: &mut Context) -> std::result::Result<String, ExpandError> {
        let host = expand("$myhostname", self, ctx)?;
        Ok(match host.split_once('.') {
            Some((_, rest)) if rest.contains('.') => rest.to_string(),
            _ => "localdomain".to_string(),
        })
    }

    /// The value of a name already entered in `ctx`.
    fn resolve_entered(
        &self,
        name: &str,
        ctx: &mut Context,
    ) -> std::result::Result<String, ExpandError> {
        let value = match (self.settings.get(name), name) {
            (Some(setting), _) => expand(&setting.value, self, ctx)?,
            (None, "myhostname") => self.default_myhostname(ctx)?,
            (None, "mydomain") => self.default_mydomain(ctx)?,
            (None, "config_directory") => self.dir.display().to_string(),
            (None, _) => match params::find(name) {
                Some(info) => expand(info.default, self, ctx)?,
                None => String::new(),
            },
        };
        if name == "myorigin" && value.starts_with('/') && !ctx.probe {
            return Ok(first_line_of(Path::new(&value))?);
        }
        Ok(value)
    }

    /// Warnings found by expanding every value set in the file without using it.
    fn collect_warnings(&self) -> Vec<String> {
        let mut found = self.load_warnings.clone();
        let mut reported = HashSet::new();
        // One budget for the whole file: each value alone may be within the bounds of one
        // expansion, yet thousands of them together would not be.
        let mut spent = Budget::default();
        for (name, _, line) in self.settings() {
            // Values of parameters mailroom ignores are never expanded, so their references
            // (often to Postfix-only names) cannot matter.
            if params::find(name).is_some_and(|info| !info.effective) {
                continue;
            }
            let mut ctx = Context::new();
            ctx.probe = true;
            ctx.spent = spent;
            let result = self.resolve(name, &mut ctx);
            spent = ctx.spent;
            if let Err(message) = result {
                found.push((
                    line,
                    format!(
                        "{}, line {line}: parameter {name}: {message}",
                        self.file.display()
                    ),
                ));
                if spent.exhausted() {
                    // The rest cannot be checked; this warning says why.
                    break;
                }
            }
            for (referrer, missing) in ctx.undefined {
                let Some(referrer_line) = self.set_line(&referrer) else {
                    continue;
                };
                if reported.insert((referrer.clone(), missing.clone())) {
                    let message = format!(
                        "{}, line {referrer_line}: parameter {referrer}: undefined parameter ${missing} expands to nothing",
                        self.file.display()
                    );
                    found.push((referrer_line, message));
                }
            }
        }
        found.sort_by_key(|(line, _)| *line);
        found.dedup();
        found.into_iter().map(|(_, w)| w).collect()
    }
}

impl Resolve for Config {
    fn resolve(
        &self,
        name: &str,
        ctx: &mut Context,
    ) -> std::result::Result<Option<String>, ExpandError> {
        if !self.settings.contains_key(name) && params::find(name).is_none() {
            return Ok(None);
        }
        ctx.enter(name)?;
        let value = self.resolve_entered(name, ctx);
        ctx.leave();
        value.map(Some)
    }
}
