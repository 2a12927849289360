//! Log lines in Postfix's format, so that tools written for Postfix logs (pflogsumm,
//! fail2ban filters, grep habits) read ours:
//!
//! ```text
//! Nov 24 22:58:24 vm mailroom/pickup[6364]: 0cQ3x7Lk2a: uid=0 from=<root>
//! ```
//!
//! Lines go to `maillog_file` when it is set (one `write` per line on an `O_APPEND`
//! descriptor, so concurrent writers never interleave within a line), else to syslog, or
//! to stderr for a daemon in the foreground.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

/// Where log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    File(PathBuf),
    Syslog,
    Stderr,
    /// Nowhere (tests, and tools that only print).
    Discard,
}

pub struct Log {
    /// `syslog_name/program`, e.g. `mailroom/pickup`.
    tag: String,
    host: String,
    sink: Sink,
    file: Mutex<Option<File>>,
}

impl Log {
    /// `host` is `myhostname`; like syslog, only its first label is written.
    pub fn new(syslog_name: &str, program: &str, host: &str, sink: Sink) -> Log {
        let short = host.split('.').next().unwrap_or(host);
        Log {
            tag: format!("{syslog_name}/{program}"),
            host: short.to_string(),
            sink,
            file: Mutex::new(None),
        }
    }

    pub fn discard() -> Log {
        Log::new("mailroom", "none", "localhost", Sink::Discard)
    }

    pub fn sink(&self) -> &Sink {
        &self.sink
    }

    pub fn info(&self, text: &str) {
        self.emit(libc::LOG_INFO, text);
    }

    pub fn warning(&self, text: &str) {
        self.emit(libc::LOG_WARNING, &format!("warning: {text}"));
    }

    pub fn error(&self, text: &str) {
        self.emit(libc::LOG_ERR, &format!("error: {text}"));
    }

    pub fn fatal(&self, text: &str) {
        self.emit(libc::LOG_CRIT, &format!("fatal: {text}"));
    }

    fn emit(&self, priority: libc::c_int, text: &str) {
        // One line per event, whatever the caller passed.
        let text = text.replace(['\n', '\r'], " ");
        match &self.sink {
            Sink::Discard => {}
            Sink::Stderr => {
                let _ = writeln!(std::io::stderr(), "{}", self.format_line(&text));
            }
            Sink::Syslog => syslog(&self.tag, priority, &text),
            Sink::File(path) => {
                let mut guard = match self.file.lock() {
                    Ok(g) => g,
                    Err(poisoned) => poisoned.into_inner(),
                };
                if guard.is_none() {
                    *guard = OpenOptions::new().create(true).append(true).open(path).ok();
                }
                if let Some(file) = guard.as_mut() {
                    let mut line = self.format_line(&text);
                    line.push('\n');
                    let _ = file.write_all(line.as_bytes());
                }
            }
        }
    }

    fn format_line(&self, text: &str) -> String {
        let stamp = chrono::Local::now().format("%b %e %H:%M:%S");
        format!(
            "{stamp} {} {}[{}]: {text}",
            self.host,
            self.tag,
            std::process::id()
        )
    }
}

fn syslog(tag: &str, priority: libc::c_int, text: &str) {
    use std::ffi::CString;
    use std::sync::OnceLock;
    // openlog keeps the pointer, so the ident must live for the whole process.
    static IDENT: OnceLock<CString> = OnceLock::new();
    let ident = IDENT.get_or_init(|| CString::new(tag.replace('\0', "")).unwrap_or_default());
    let Ok(message) = CString::new(text.replace('\0', "")) else {
        return;
    };
    // SAFETY: both strings are NUL-terminated and outlive the calls; "%s" keeps the
    // message from being read as a format.
    unsafe {
        libc::openlog(
            ident.as_ptr(),
            libc::LOG_PID | libc::LOG_NDELAY,
            libc::LOG_MAIL,
        );
        libc::syslog(priority, c"%s".as_ptr(), message.as_ptr());
    }
}

impl Log {
    /// The log a program should use under this configuration: `maillog_file` when set,
    /// else syslog, tagged `$syslog_name/program`.
    pub fn from_config(config: &crate::config::Config, program: &str) -> Log {
        Log::from_config_or(config, program, Sink::Syslog)
    }

    /// Like [`Log::from_config`], with `fallback` where `maillog_file` is not set (stderr
    /// for a daemon in the foreground).
    pub fn from_config_or(config: &crate::config::Config, program: &str, fallback: Sink) -> Log {
        let (name, host, sink) = settings(config, fallback);
        Log::new(&name, program, &host, sink)
    }
}

/// `syslog_name`, `myhostname` and the sink `maillog_file` (else `fallback`) asks for.
pub fn settings(config: &crate::config::Config, fallback: Sink) -> (String, String, Sink) {
    let name = config
        .get("syslog_name")
        .unwrap_or_else(|_| "mailroom".into());
    let host = config.myhostname().unwrap_or_else(|_| "localhost".into());
    let sink = match config.get("maillog_file") {
        Ok(path) if !path.is_empty() => Sink::File(path.into()),
        _ => fallback,
    };
    (name, host, sink)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_lines_look_like_postfix() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("maillog");
        let log = Log::new(
            "mailroom",
            "pickup",
            "vm.example.com",
            Sink::File(path.clone()),
        );
        log.info("0cQ3x7Lk2a: uid=0 from=<root>");
        log.warning("two\nlines");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let pid = std::process::id();
        assert!(
            lines[0].ends_with(&format!(
                " vm mailroom/pickup[{pid}]: 0cQ3x7Lk2a: uid=0 from=<root>"
            )),
            "{}",
            lines[0]
        );
        assert!(lines[1].ends_with("]: warning: two lines"));
        // "Nov 24 22:58:24": month, space-padded day, time.
        assert_eq!(lines[0].as_bytes()[3], b' ');
        assert_eq!(&lines[0][9..10], ":");
    }
}
