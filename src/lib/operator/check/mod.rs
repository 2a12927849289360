//! `mailroom check`: every problem in the configuration and the files it names, one line
//! each with the file (and line) it concerns, so that a mistake is found before the mail
//! that would have shown it. Postfix's `postfix check` looks at file ownership only; this
//! also reads `main.cf` the way the programs will.
//!
//! - [`params`]: what `main.cf` says — unknown or misspelled names, values of the wrong
//!   type, references to nothing, overlapping domain lists, a `relayhost` that does not
//!   parse, and Postfix parameters that mailroom accepts without effect (notes).
//! - [`files`]: what the files say — queue directories (the dry run of `postsuper -s`)
//!   and their owners, the aliases database, TLS files, the SASL password table, the
//!   mail spool.
//!
//! Errors are what makes a program fail or misbehave; warnings are what is probably not
//! meant; both make the exit status 1. Notes (parameters without effect) are printed but
//! leave the status 0.

pub mod files;
pub mod params;

use std::path::Path;

use crate::config::Config;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
    Note,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        }
    }
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (or directory) concerned.
    pub file: String,
    /// Its line, for problems in `main.cf`.
    pub line: Option<usize>,
    /// The parameter concerned, if any.
    pub parameter: Option<String>,
    /// What is wrong, in words.
    pub problem: String,
    pub severity: Severity,
}

impl Problem {
    pub fn new(file: impl Into<String>, severity: Severity, problem: impl Into<String>) -> Problem {
        Problem {
            file: file.into(),
            line: None,
            parameter: None,
            problem: problem.into(),
            severity,
        }
    }

    /// A problem with parameter `name` of `config`, placed on the line that sets it.
    pub fn param(
        config: &Config,
        name: &str,
        severity: Severity,
        problem: impl Into<String>,
    ) -> Problem {
        Problem {
            file: config.file().display().to_string(),
            line: config.set_line(name),
            parameter: Some(name.to_string()),
            problem: problem.into(),
            severity,
        }
    }

    /// `FILE, line N: problem`, or `FILE: problem`; notes say so.
    pub fn text(&self) -> String {
        let place = match self.line {
            Some(line) => format!("{}, line {line}", self.file),
            None => self.file.clone(),
        };
        match self.severity {
            Severity::Note => format!("{place}: note: {}", self.problem),
            _ => format!("{place}: {}", self.problem),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "file": self.file,
            "line": self.line,
            "parameter": self.parameter,
            "problem": self.problem,
            "severity": self.severity.as_str(),
        })
    }
}

/// Every problem found in `config` and the files it names: `main.cf`'s first, in line
/// order, then the files'.
pub fn run(config: &Config) -> Vec<Problem> {
    let mut found = params::check(config);
    found.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    found.extend(files::check(config));
    found
}

/// Whether the problems make the check fail (anything but notes).
pub fn fails(problems: &[Problem]) -> bool {
    problems.iter().any(|p| p.severity != Severity::Note)
}

/// The problems as text, one line each.
pub fn render_text(problems: &[Problem]) -> String {
    problems.iter().map(|p| p.text() + "\n").collect()
}

/// The problems as a JSON array.
pub fn render_json(problems: &[Problem]) -> String {
    let all: Vec<serde_json::Value> = problems.iter().map(Problem::json).collect();
    serde_json::Value::Array(all).to_string() + "\n"
}

/// Strips the `FILE, line N: ` and `parameter NAME: ` that the configuration module puts
/// before its messages; returns the line, the parameter and the rest.
pub(crate) fn split_located<'a>(
    message: &'a str,
    file: &Path,
) -> (Option<usize>, Option<&'a str>, &'a str) {
    let mut rest = message;
    let mut line = None;
    let prefix = format!("{}, line ", file.display());
    if let Some(after) = rest.strip_prefix(prefix.as_str())
        && let Some((number, tail)) = after.split_once(": ")
        && let Ok(number) = number.parse()
    {
        line = Some(number);
        rest = tail;
    }
    let mut parameter = None;
    if let Some(after) = rest.strip_prefix("parameter ")
        && let Some((name, tail)) = after.split_once(": ")
        && !name.contains(' ')
    {
        parameter = Some(name);
        rest = tail;
    }
    (line, parameter, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_forms() {
        let p = Problem {
            file: "/etc/mailroom/main.cf".into(),
            line: Some(12),
            parameter: Some("mydestinaton".into()),
            problem: "unknown parameter \"mydestinaton\"".into(),
            severity: Severity::Warning,
        };
        assert_eq!(
            p.text(),
            "/etc/mailroom/main.cf, line 12: unknown parameter \"mydestinaton\""
        );
        let note = Problem::new("/x", Severity::Note, "biff has no effect");
        assert_eq!(note.text(), "/x: note: biff has no effect");
        assert!(!fails(std::slice::from_ref(&note)));
        assert!(fails(&[note, p.clone()]));
        let v: serde_json::Value = serde_json::from_str(&render_json(&[p])).unwrap();
        assert_eq!(v[0]["line"], 12);
        assert_eq!(v[0]["severity"], "warning");
    }

    #[test]
    fn locations_are_split_off() {
        let f = Path::new("/etc/mailroom/main.cf");
        assert_eq!(
            split_located("/etc/mailroom/main.cf, line 3: parameter a: bad x", f),
            (Some(3), Some("a"), "bad x")
        );
        assert_eq!(
            split_located("parameter a: bad", f),
            (None, Some("a"), "bad")
        );
        assert_eq!(split_located("plain", f), (None, None, "plain"));
    }
}
