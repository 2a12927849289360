//! `mailroom start`, `stop`, `status`, `reload` and `flush`: the daemon seen from
//! outside. Whoever started it — `mailroom start` (or `sendmail -bd`, which execs it), or
//! a systemd unit running `mailroom daemon` (or `sendmail -bD`) — it holds the same lock
//! (`pid/master.lock`) and writes the same pid file, so these commands find it through
//! [`daemon::lock::running`] and act on it with signals (SIGTERM stops it, SIGHUP makes
//! it read `main.cf` again). `start` runs `mailroom daemon` detached
//! ([`daemon::detach`]).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::config::Config;
use crate::daemon::{self, lock};
use crate::queue::{Queue, QueueName};
use crate::smtpd::listener::bind_addresses;
use crate::sysexits::{Error, ExitCode, Result, describe_io};

use super::{NOT_RUNNING, write_out};

/// How long `stop` waits by default for the daemon to finish its deliveries in flight.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The running daemon, if any: its pid (0 when the lock is held but the pid file cannot be
/// read) and when it started (the pid file's time: written once, at start).
pub fn running(queue: &Queue) -> Option<(u32, Option<SystemTime>)> {
    let pid = lock::running(queue)?;
    let since = std::fs::metadata(queue.pid_dir().join(lock::PID_FILE))
        .and_then(|m| m.modified())
        .ok();
    Some((pid, since))
}

fn queue_of(config: &Config) -> Result<Queue> {
    Queue::from_config(config)
}

/// `mailroom start [-q INTERVAL]`: `mailroom daemon`, detached; returns once it holds
/// the lock. Returns the exit status: 0 started, 1 when one is running already (as
/// `postfix start`).
pub fn start(config: &Config, interval: Option<&str>, out: &mut dyn Write) -> Result<u8> {
    let queue = queue_of(config)?;
    if let Some((pid, _)) = running(&queue) {
        eprintln!("mailroom: the mail system is already running (pid {pid})");
        return Ok(1);
    }
    if let Some(interval) = interval {
        daemon::modes::parse_interval(interval)?;
    }
    let dir = std::path::absolute(config.dir()).unwrap_or_else(|_| config.dir().to_path_buf());
    let pid = daemon::detach::start_daemon(&dir, interval, false)
        .map_err(|e| Error::new(e.code, format!("the daemon did not start: {}", e.message)))?;
    write_out(out, format!("mailroom started (pid {pid})\n").as_bytes())?;
    Ok(0)
}

/// `mailroom stop`: SIGTERM, then waits up to `timeout` for the daemon to let go of its
/// lock (it finishes the delivery in flight of each thread first). Nothing running is
/// not an error — the system is in the state asked for — and exits 0.
pub fn stop(config: &Config, timeout: Duration, out: &mut dyn Write) -> Result<u8> {
    let queue = queue_of(config)?;
    let Some((pid, _)) = running(&queue) else {
        write_out(out, b"mailroom is not running\n")?;
        return Ok(0);
    };
    signal(pid, Signal::SIGTERM)?;
    let deadline = Instant::now() + timeout;
    // The lock goes when the daemon has finished its work; the process itself ends
    // just after. Both, so that a `stop; start` never overlaps two daemons.
    while lock::running(&queue).is_some() || alive(pid) {
        if Instant::now() >= deadline {
            return Err(Error::temp(format!(
                "the daemon (pid {pid}) did not stop within {} s; it is still running",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    write_out(out, format!("mailroom stopped (pid {pid})\n").as_bytes())?;
    Ok(0)
}

/// `mailroom reload`: SIGHUP; the daemon reads `main.cf` again (keeping the old settings,
/// with a logged warning, when the new ones do not load). Exit 3 when nothing runs.
pub fn reload(config: &Config, out: &mut dyn Write) -> Result<u8> {
    let queue = queue_of(config)?;
    let Some((pid, _)) = running(&queue) else {
        eprintln!("mailroom: the mail system is not running");
        return Ok(NOT_RUNNING);
    };
    signal(pid, Signal::SIGHUP)?;
    write_out(
        out,
        format!("mailroom reloading its configuration (pid {pid})\n").as_bytes(),
    )?;
    Ok(0)
}

/// Whether process `pid` exists and is not a zombie (one that exited and waits for its
/// parent to reap it has exited as far as we are concerned: a daemon run by a
/// supervisor is reaped when the supervisor gets to it).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold any
        // character: look after the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn signal(pid: u32, sig: Signal) -> Result<()> {
    let Some(pid) = i32::try_from(pid).ok().filter(|&p| p > 0) else {
        return Err(Error::software(
            "the daemon holds its lock but its pid file cannot be read",
        ));
    };
    kill(Pid::from_raw(pid), sig)
        .map_err(|e| Error::new(ExitCode::OsErr, format!("kill {pid} {sig}: {e}")))
}

/// `mailroom status`: running or not, pid and uptime, the addresses the SMTP listener
/// holds (with no daemon: none, and what is configured, said as such), the submission
/// listener's when `submission_port` is set (or why it is not opened), the same for
/// the SMTPS listener when `smtps_port` is set, and how many messages each queue holds.
/// Exit 0 running, 3 not (as `systemctl is-active`).
pub fn status(config: &Config, out: &mut dyn Write) -> Result<u8> {
    let queue = queue_of(config)?;
    let state = running(&queue);
    let mut text = match state {
        Some((pid, since)) => {
            let up = since
                .and_then(|s| SystemTime::now().duration_since(s).ok())
                .map(|d| format!(", up {}", uptime(d)))
                .unwrap_or_default();
            let started = since
                .map(|s| {
                    let local: chrono::DateTime<chrono::Local> = s.into();
                    format!(" since {}", local.format("%Y-%m-%d %H:%M:%S"))
                })
                .unwrap_or_default();
            format!("mailroom is running (pid {pid}){up}{started}\n")
        }
        None => "mailroom is not running\n".to_string(),
    };
    let pid = state.map(|(pid, _)| pid);
    let listening = listening_text(pid, configured_listeners(config));
    text.push_str(&format!("listening: {listening}\n"));
    if let Some(submission) = configured_submission(config) {
        text.push_str(&format!(
            "submission: {}\n",
            listening_text(pid, submission)
        ));
    }
    if let Some(smtps) = configured_smtps(config) {
        text.push_str(&format!("smtps: {}\n", listening_text(pid, smtps)));
    }
    text.push_str(&format!("queue: {}\n", queue_counts(&queue)));
    write_out(out, text.as_bytes())?;
    Ok(if state.is_some() { 0 } else { NOT_RUNNING })
}

/// What a listener holds: with no daemon, what is configured, said as such; with one,
/// the configured addresses it holds and those it does not.
fn listening_text(
    pid: Option<u32>,
    configured: std::result::Result<Vec<SocketAddr>, impl std::fmt::Display>,
) -> String {
    match (pid, configured) {
        (None, Ok(addrs)) => format!("none (not running; configured: {})", join(&addrs)),
        (None, Err(why)) => format!("none (not running; {why})"),
        (Some(_), Err(why)) => format!("none ({why})"),
        (Some(pid), Ok(addrs)) => match listening_sockets(pid) {
            // /proc cannot tell (another system, or no access): what is configured.
            None => format!("{} (configured)", join(&addrs)),
            Some(held) => {
                let (up, down): (Vec<SocketAddr>, Vec<SocketAddr>) =
                    addrs.iter().partition(|a| held.contains(a));
                match (up.is_empty(), down.is_empty()) {
                    (_, true) => join(&up),
                    (true, false) => format!("none; not listening: {} (see the log)", join(&down)),
                    (false, false) => format!(
                        "{}; not listening: {} (see the log)",
                        join(&up),
                        join(&down)
                    ),
                }
            }
        },
    }
}

/// The submission listener's addresses, or why it cannot be opened; `None` when
/// `submission_port` is empty (no line in the status then).
fn configured_submission(config: &Config) -> Option<std::result::Result<Vec<SocketAddr>, String>> {
    let port = config.get("submission_port").ok()?;
    let port = port.trim();
    if port.is_empty() {
        return None;
    }
    let Ok(port) = port.parse::<u16>() else {
        return Some(Err(format!("submission_port = {port} is not a port")));
    };
    if let Err(why) = crate::smtpd::listener::submission_usable(config) {
        return Some(Err(why));
    }
    Some(addresses(config, port))
}

/// The SMTPS listener's addresses, or why it is not opened (the words of its warning in
/// the log); `None` when `smtps_port` is empty (no line in the status then).
fn configured_smtps(config: &Config) -> Option<std::result::Result<Vec<SocketAddr>, String>> {
    use crate::smtpd::smtps;
    let port = match smtps::port(config) {
        Ok(port) => port?,
        Err(e) => return Some(Err(e.to_string())),
    };
    match smtps::unusable(config) {
        Ok(None) => {}
        Ok(Some(why)) => return Some(Err(why)),
        Err(e) => return Some(Err(e.to_string())),
    }
    Some(addresses(config, port))
}

/// The addresses a listener on `port` binds, from `inet_interfaces` and `inet_protocols`.
fn addresses(config: &Config, port: u16) -> std::result::Result<Vec<SocketAddr>, String> {
    let (Ok(interfaces), Ok(protocols)) = (
        config.list("inet_interfaces"),
        config.list("inet_protocols"),
    ) else {
        return Err("inet_interfaces or inet_protocols cannot be read".into());
    };
    Ok(bind_addresses(&interfaces, &protocols, port).0)
}

fn join(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `1d 2h 3m`, `5m 7s`: the two largest units.
fn uptime(d: Duration) -> String {
    let s = d.as_secs();
    let parts = [
        (s / 86400, "d"),
        (s / 3600 % 24, "h"),
        (s / 60 % 60, "m"),
        (s % 60, "s"),
    ];
    let first = parts.iter().position(|(n, _)| *n > 0).unwrap_or(3);
    parts[first..]
        .iter()
        .take(2)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The addresses the SMTP listener is configured for, or why there are none.
fn configured_listeners(config: &Config) -> std::result::Result<Vec<SocketAddr>, NoListener> {
    let port = match config.get("smtpd_port") {
        Ok(p) if p.trim().is_empty() => return Err(NoListener::EmptyPort),
        Ok(p) => p,
        Err(e) => return Err(NoListener::UnreadablePort(e)),
    };
    let Ok(port) = port.trim().parse::<u16>() else {
        return Err(NoListener::NotAPort(port));
    };
    let (Ok(interfaces), Ok(protocols)) = (
        config.list("inet_interfaces"),
        config.list("inet_protocols"),
    ) else {
        return Err(NoListener::UnreadableInterfaces);
    };
    let addrs = bind_addresses(&interfaces, &protocols, port).0;
    if addrs.is_empty() {
        return Err(NoListener::NoAddress);
    }
    Ok(addrs)
}

/// Why `main.cf` asks for no listener, as `mailroom status` says it.
#[derive(Debug)]
enum NoListener {
    EmptyPort,
    UnreadablePort(Error),
    NotAPort(String),
    UnreadableInterfaces,
    NoAddress,
}

impl std::fmt::Display for NoListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoListener::EmptyPort => write!(f, "smtpd_port is empty"),
            NoListener::UnreadablePort(e) => write!(f, "smtpd_port: {e}"),
            NoListener::NotAPort(port) => write!(f, "smtpd_port = {port} is not a port"),
            NoListener::UnreadableInterfaces => {
                write!(f, "inet_interfaces or inet_protocols cannot be read")
            }
            NoListener::NoAddress => write!(f, "no usable address in inet_interfaces"),
        }
    }
}

/// The TCP addresses process `pid` listens on, from its `/proc/PID/net/tcp{,6}` (its own
/// network namespace). When its descriptors can be read (we are root, or its owner),
/// only its own sockets count; otherwise any socket listening there does. `None` when
/// `/proc` cannot tell.
fn listening_sockets(pid: u32) -> Option<Vec<SocketAddr>> {
    let inodes: Option<Vec<u64>> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|dir| {
            dir.filter_map(|entry| {
                let target = std::fs::read_link(entry.ok()?.path()).ok()?;
                let text = target.to_str()?;
                text.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()
            })
            .collect()
        });
    let mut found = Vec::new();
    let mut readable = false;
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        readable = true;
        for (addr, inode) in text.lines().skip(1).filter_map(parse_listen_line) {
            if inodes.as_ref().is_none_or(|own| own.contains(&inode)) {
                found.push(addr);
            }
        }
    }
    readable.then_some(found)
}

/// A line of `/proc/net/tcp` or `tcp6` in state LISTEN (`0A`): its local address and
/// socket inode. Addresses are written as the kernel holds them, each 32-bit word in
/// host byte order (`0100007F:0019` is 127.0.0.1:25 on a little-endian machine).
fn parse_listen_line(line: &str) -> Option<(SocketAddr, u64)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.get(3) != Some(&"0A") {
        return None;
    }
    let (host, port) = fields.get(1)?.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for i in (0..host.len()).step_by(8) {
        let word = u32::from_str_radix(host.get(i..i + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    let inode = fields.get(9)?.parse().ok()?;
    Some((SocketAddr::new(ip, port), inode))
}

/// `maildrop 0, incoming 0, ...`; a queue that cannot be read shows its error.
fn queue_counts(queue: &Queue) -> String {
    QueueName::ALL
        .iter()
        .map(|&q| match queue.ids(q) {
            Ok(ids) => format!("{} {}", q.as_str(), ids.len()),
            Err(e) => format!("{} ? ({})", q.as_str(), describe_io(&e)),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `mailroom flush` (`postqueue -f`): deferred mail is tried now. With the daemon
/// running, each deferred file is moved (locked, under its own ID) to `incoming/`, which
/// the daemon takes whatever a file's next-try time says, at its next scan (within ten
/// seconds); a file being delivered at that moment is left alone. With no daemon, the
/// queue is run once in the foreground, as `sendmail -q` does, rather than refused as
/// Postfix refuses: the mail goes out either way.
pub fn flush(config: &Config, out: &mut dyn Write) -> Result<u8> {
    let queue = queue_of(config)?;
    if running(&queue).is_none() {
        write_out(
            out,
            b"mailroom is not running; delivering the queue now (sendmail -q)\n",
        )?;
        daemon::modes::run_queue(config, None)?;
        return Ok(0);
    }
    // The daemon tries every deferred message at once on SIGUSR1, wherever its retry
    // time stands, as Postfix's qmgr does on `postqueue -f`.
    let waiting = queue
        .ids(QueueName::Deferred)
        .map_err(|e| Error::io(format!("scan {}/deferred", queue.root().display()), &e))?
        .len();
    if let Some((pid, _)) = running(&queue) {
        signal(pid, Signal::SIGUSR1)?;
    }
    let text = match waiting {
        1 => "1 deferred message will be tried now\n".to_string(),
        n => format!("{n} deferred messages will be tried now\n"),
    };
    write_out(out, text.as_bytes())?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines() {
        let v4 = if cfg!(target_endian = "little") {
            "   0: 0100007F:0019 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0"
        } else {
            "   0: 7F000001:0019 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0"
        };
        assert_eq!(
            parse_listen_line(v4),
            Some(("127.0.0.1:25".parse().unwrap(), 4242))
        );
        let loopback6 = if cfg!(target_endian = "little") {
            "00000000000000000000000001000000"
        } else {
            "00000000000000000000000000000001"
        };
        let v6 = format!(
            "   1: {loopback6}:0A0A 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0 100 0 0 10 0"
        );
        assert_eq!(
            parse_listen_line(&v6),
            Some(("[::1]:2570".parse().unwrap(), 77))
        );
        // Connected, not listening.
        assert_eq!(parse_listen_line(&v4.replace(" 0A ", " 01 ")), None);
        assert_eq!(
            parse_listen_line("  sl  local_address rem_address   st"),
            None
        );
        assert_eq!(parse_listen_line("0: 0100:0019 0 0A"), None);
    }

    #[test]
    fn uptimes() {
        assert_eq!(uptime(Duration::from_secs(0)), "0s");
        assert_eq!(uptime(Duration::from_secs(65)), "1m 5s");
        assert_eq!(uptime(Duration::from_secs(3 * 3600 + 7)), "3h 0m");
        assert_eq!(uptime(Duration::from_secs(2 * 86400 + 5 * 3600)), "2d 5h");
    }
}
