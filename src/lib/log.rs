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
//!
//! Syslog lines are RFC 3164 messages written to the local syslog socket (`syslog_socket`,
//! `/dev/log`), each with its own tag. The C library's `openlog` keeps one ident per
//! process, so a daemon speaking for several programs (`mailroom/pickup`, `mailroom/local`,
//! `mailroom/smtp`) would log every line under the first one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    File(PathBuf),
    Syslog(Syslog),
    Stderr,
    /// Nowhere (tests, and tools that only print).
    Discard,
}

/// The local syslog daemon: its socket and the facility of our lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syslog {
    pub socket: PathBuf,
    /// A `LOG_*` facility code (already shifted, as `<syslog.h>` defines them).
    pub facility: libc::c_int,
}

impl Default for Syslog {
    fn default() -> Syslog {
        Syslog {
            socket: PathBuf::from(DEFAULT_SYSLOG_SOCKET),
            facility: libc::LOG_MAIL,
        }
    }
}

/// The socket the C library's `syslog(3)` writes to.
pub const DEFAULT_SYSLOG_SOCKET: &str = "/dev/log";

/// The facility named `name` as `syslog_facility` spells it (`mail`, `local0`...).
pub fn facility(name: &str) -> Option<libc::c_int> {
    let code = match name.to_ascii_lowercase().as_str() {
        "auth" => libc::LOG_AUTH,
        "authpriv" => libc::LOG_AUTHPRIV,
        "cron" => libc::LOG_CRON,
        "daemon" => libc::LOG_DAEMON,
        "ftp" => libc::LOG_FTP,
        "kern" => libc::LOG_KERN,
        "lpr" => libc::LOG_LPR,
        "mail" => libc::LOG_MAIL,
        "news" => libc::LOG_NEWS,
        "syslog" => libc::LOG_SYSLOG,
        "user" => libc::LOG_USER,
        "uucp" => libc::LOG_UUCP,
        "local0" => libc::LOG_LOCAL0,
        "local1" => libc::LOG_LOCAL1,
        "local2" => libc::LOG_LOCAL2,
        "local3" => libc::LOG_LOCAL3,
        "local4" => libc::LOG_LOCAL4,
        "local5" => libc::LOG_LOCAL5,
        "local6" => libc::LOG_LOCAL6,
        "local7" => libc::LOG_LOCAL7,
        _ => return None,
    };
    Some(code)
}

/// Where lines go when `maillog_file` is not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    Syslog,
    /// A daemon in the foreground (`sendmail -bD`).
    Stderr,
}

/// What a sink keeps open between lines.
enum Open {
    File(File),
    Datagram(UnixDatagram),
    /// A syslog daemon listening on a stream socket (syslog-ng's `unix-stream`).
    Stream(UnixStream),
}

pub struct Log {
    /// `syslog_name/program`, e.g. `mailroom/pickup`.
    tag: String,
    host: String,
    sink: Sink,
    open: Mutex<Option<Open>>,
}

impl Log {
    /// `host` is `myhostname`; like syslog, only its first label is written.
    pub fn new(syslog_name: &str, program: &str, host: &str, sink: Sink) -> Log {
        let short = host.split('.').next().unwrap_or(host);
        Log {
            tag: format!("{syslog_name}/{program}"),
            host: short.to_string(),
            sink,
            open: Mutex::new(None),
        }
    }

    /// The same sink, for another service of the same program, as Postfix's master.cf
    /// `-o syslog_name=postfix/submission` gives `postfix/submission/smtpd`. The new
    /// log opens its sink itself (call [`Log::open_now`] before giving up root).
    pub fn for_service(&self, service: &str) -> Log {
        let tag = match self.tag.rsplit_once('/') {
            Some((name, program)) => format!("{name}/{service}/{program}"),
            None => format!("{service}/{}", self.tag),
        };
        Log {
            tag,
            host: self.host.clone(),
            sink: self.sink.clone(),
            open: Mutex::new(None),
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
            Sink::Syslog(syslog) => {
                // As glibc sends it to a local socket: no host name (the syslog daemon
                // adds its own), the tag with the pid.
                let message = format!(
                    "<{}>{} {}[{}]: {}",
                    syslog.facility | priority,
                    stamp(),
                    self.tag,
                    std::process::id(),
                    text.replace('\0', "")
                );
                self.send_syslog(&syslog.socket, message.as_bytes());
            }
            Sink::File(path) => {
                let mut guard = self.lock_open();
                if guard.is_none() {
                    *guard = open_file(path).map(Open::File);
                }
                if let Some(Open::File(file)) = guard.as_mut() {
                    let mut line = self.format_line(&text);
                    line.push('\n');
                    let _ = file.write_all(line.as_bytes());
                }
            }
        }
    }

    /// Opens the sink now (the `maillog_file`, the syslog socket) and keeps it open: for
    /// a process about to give up the privileges that let it open it (`maillog_file` may
    /// be writable by root only). Later lines go through the descriptor held.
    pub fn open_now(&self) {
        let mut guard = self.lock_open();
        if guard.is_none() {
            *guard = match &self.sink {
                Sink::File(path) => open_file(path).map(Open::File),
                Sink::Syslog(syslog) => connect_syslog(&syslog.socket),
                Sink::Stderr | Sink::Discard => None,
            };
        }
    }

    fn lock_open(&self) -> std::sync::MutexGuard<'_, Option<Open>> {
        match self.open.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// One message to the syslog socket. A failed send is retried once on a new
    /// connection (the syslog daemon restarted); a line that still cannot be sent is
    /// dropped, as `syslog(3)` drops it: logging never stops mail.
    fn send_syslog(&self, socket: &Path, message: &[u8]) {
        let mut guard = self.lock_open();
        for _ in 0..2 {
            if guard.is_none() {
                *guard = connect_syslog(socket);
            }
            let sent = match guard.as_mut() {
                None => return,
                Some(Open::Datagram(s)) => s.send(message).is_ok(),
                // A stream carries no message boundaries: each ends with a NUL, as
                // glibc ends them.
                Some(Open::Stream(s)) => {
                    let mut framed = message.to_vec();
                    framed.push(0);
                    s.write_all(&framed).is_ok()
                }
                Some(Open::File(_)) => false,
            };
            if sent {
                return;
            }
            *guard = None;
        }
    }

    fn format_line(&self, text: &str) -> String {
        format!(
            "{} {} {}[{}]: {text}",
            stamp(),
            self.host,
            self.tag,
            std::process::id()
        )
    }
}

/// "Nov 24 22:58:24": the time stamp of syslog lines, local time.
fn stamp() -> impl std::fmt::Display {
    chrono::Local::now().format("%b %e %H:%M:%S")
}

/// `maillog_file`, opened for appending (created if missing).
fn open_file(path: &Path) -> Option<File> {
    OpenOptions::new().create(true).append(true).open(path).ok()
}

/// A connection to the syslog socket: datagrams, or a stream when the daemon listens on
/// one (as glibc falls back).
fn connect_syslog(socket: &Path) -> Option<Open> {
    let datagram = UnixDatagram::unbound().ok()?;
    match datagram.connect(socket) {
        Ok(()) => Some(Open::Datagram(datagram)),
        Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => {
            UnixStream::connect(socket).ok().map(Open::Stream)
        }
        Err(_) => None,
    }
}

impl Log {
    /// The log a program should use under this configuration: `maillog_file` when set,
    /// else syslog, tagged `$syslog_name/program`.
    pub fn from_config(config: &crate::config::Config, program: &str) -> Log {
        Log::from_config_or(config, program, Fallback::Syslog)
    }

    /// Like [`Log::from_config`], with `fallback` where `maillog_file` is not set (stderr
    /// for a daemon in the foreground).
    pub fn from_config_or(
        config: &crate::config::Config,
        program: &str,
        fallback: Fallback,
    ) -> Log {
        let (name, host, sink) = settings(config, fallback);
        Log::new(&name, program, &host, sink)
    }
}

/// `syslog_name`, `myhostname` and the sink `maillog_file` (else `fallback`) asks for;
/// syslog per `syslog_socket` and `syslog_facility` (an unknown facility logs as `mail`:
/// a log line is never worth stopping mail for, and `mailroom check` names it).
pub fn settings(config: &crate::config::Config, fallback: Fallback) -> (String, String, Sink) {
    let name = config
        .get("syslog_name")
        .unwrap_or_else(|_| "mailroom".into());
    let host = config.myhostname().unwrap_or_else(|_| "localhost".into());
    let sink = match (config.get("maillog_file"), fallback) {
        (Ok(path), _) if !path.is_empty() => Sink::File(path.into()),
        (_, Fallback::Stderr) => Sink::Stderr,
        (_, Fallback::Syslog) => {
            let mut syslog = Syslog::default();
            if let Ok(socket) = config.get("syslog_socket")
                && !socket.is_empty()
            {
                syslog.socket = socket.into();
            }
            if let Some(code) = config
                .get("syslog_facility")
                .ok()
                .and_then(|f| facility(&f))
            {
                syslog.facility = code;
            }
            Sink::Syslog(syslog)
        }
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

    fn syslog_sink(socket: &Path) -> Sink {
        Sink::Syslog(Syslog {
            socket: socket.to_path_buf(),
            facility: libc::LOG_LOCAL3,
        })
    }

    #[test]
    fn syslog_messages_survive_a_restart_of_the_syslog_daemon() {
        use std::os::unix::net::UnixDatagram;
        let tmp = tempfile::tempdir().unwrap();
        let socket = tmp.path().join("log");
        let first = UnixDatagram::bind(&socket).unwrap();
        let log = Log::new("mailroom", "smtp", "vm.example.com", syslog_sink(&socket));
        log.warning("one");
        let mut buf = [0u8; 512];
        let n = first.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        // local3 (19 << 3) | warning (4) = 156.
        assert!(text.starts_with("<156>"), "{text}");
        let pid = std::process::id();
        assert!(
            text.ends_with(&format!(" mailroom/smtp[{pid}]: warning: one")),
            "{text}"
        );
        drop(first);
        std::fs::remove_file(&socket).unwrap();
        let second = UnixDatagram::bind(&socket).unwrap();
        log.info("two");
        let n = second.recv(&mut buf).unwrap();
        assert!(std::str::from_utf8(&buf[..n]).unwrap().ends_with("]: two"));
    }

    #[test]
    fn a_stream_syslog_socket_gets_nul_terminated_messages() {
        use std::io::Read;
        use std::os::unix::net::UnixListener;
        let tmp = tempfile::tempdir().unwrap();
        let socket = tmp.path().join("log");
        let listener = UnixListener::bind(&socket).unwrap();
        let log = Log::new("mailroom", "local", "vm", syslog_sink(&socket));
        log.info("a");
        log.info("b");
        drop(log);
        let (mut conn, _) = listener.accept().unwrap();
        let mut all = Vec::new();
        conn.read_to_end(&mut all).unwrap();
        let messages: Vec<&[u8]> = all.split(|&b| b == 0).collect();
        assert_eq!(messages.len(), 3, "two messages, each ended by a NUL");
        assert!(messages[0].starts_with(b"<158>"));
        assert!(messages[1].ends_with(b"]: b"));
        assert!(messages[2].is_empty());
    }
}
