//! The SMTP sessions process (`mailroom smtpd-sessions`): the one process that reads
//! bytes from SMTP clients on the network. The daemon (root) binds the listening sockets
//! and starts it with them as descriptors 3, 4, ...; it reads `main.cf`, the TLS
//! certificate and key and opens its log while it is still root, then becomes
//! `mail_owner` for good (no supplementary groups) before it accepts a connection.
//! Accepted mail goes into `maildrop/` as a submission does (the directory is
//! `mail_owner`'s), and the daemon's pickup takes it from there.
//!
//! SIGTERM (or SIGINT) stops it: no new connections, the sessions in progress get a
//! grace period. The daemon starts a new one when it dies.

use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::config::Config;
use crate::daemon::signals::{self, Sig};
use crate::log::{Fallback, Log};
use crate::queue::Queue;
use crate::sysexits::{Error, ExitCode, Result};

/// The first inherited listening socket; the others follow it.
pub const FIRST_FD: RawFd = 3;
/// At most this many inherited sockets (`inet_interfaces` names a handful).
pub const MAX_SOCKETS: usize = 64;
/// The hidden subcommand of `mailroom` that runs this process.
pub const SUBCOMMAND: &str = "smtpd-sessions";

/// Runs the sessions process on the `count` listening sockets inherited as descriptors
/// 3.., the last `submission` of them the submission port's, and returns once it is
/// told to stop. `log_to_stderr`: the daemon runs in the foreground and logs to its
/// standard error (when `maillog_file` is not set).
pub fn run(
    config_dir: Option<&Path>,
    count: usize,
    submission: usize,
    log_to_stderr: bool,
) -> Result<()> {
    // Before any thread exists, so that every thread inherits the mask.
    signals::block().map_err(|e| Error::new(ExitCode::OsErr, format!("sigprocmask: {e}")))?;
    let config = Config::load(config_dir)?;
    let me = nix::unistd::getuid();
    if !me.is_root() {
        // Anyone may run this program; as someone other than root it only serves sockets
        // its caller already holds, as the caller, into a queue the caller owns.
        let queue = config.queue_directory()?;
        let owner = std::fs::metadata(&queue)
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .map_err(|e| Error::io(format!("queue directory {}", queue.display()), &e))?;
        if owner != me.as_raw() {
            return Err(Error::perm(format!(
                "{SUBCOMMAND}: only root or the owner of {} may run the SMTP sessions",
                queue.display()
            )));
        }
    }
    // Reading main.cf opened and closed files; nothing else is open beside the
    // inherited descriptors.
    let mut sockets = inherited_sockets(count)?;
    if submission > count {
        return Err(Error::usage(format!(
            "--submission-fds {submission}: more than the {count} sockets passed"
        )));
    }
    let submission_sockets = sockets.split_off(count - submission);
    let fallback = if log_to_stderr {
        Fallback::Stderr
    } else {
        Fallback::Syslog
    };
    let log = Arc::new(Log::from_config_or(&config, "smtpd", fallback));
    // maillog_file may be root's: the descriptor outlives the privilege.
    log.open_now();
    let submission_log = Arc::new(log.for_service("submission"));
    submission_log.open_now();
    let smtps_log = Arc::new(log.for_service(super::smtps::SERVICE));
    smtps_log.open_now();
    let sockets = Sockets {
        smtp: sockets,
        submission: submission_sockets,
    };
    let listeners = match prepare(&config, sockets, &log, &submission_log, smtps_log) {
        Ok(listeners) => listeners,
        Err(e) => {
            log.fatal(&e.to_string());
            return Err(e);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let threads = listeners.spawn(Arc::clone(&stop));
    let (tx, rx) = std::sync::mpsc::channel();
    signals::forward(tx, |sig| sig).map_err(|e| Error::io("cannot start the signal thread", &e))?;
    // SIGHUP and SIGUSR1 are the daemon's business: it restarts this process on reload.
    while let Ok(sig) = rx.recv() {
        if let Sig::Stop(_) = sig {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}

/// The inherited sockets, by service.
struct Sockets {
    smtp: Vec<TcpListener>,
    submission: Vec<TcpListener>,
}

/// Everything that needs root, then the drop to `mail_owner` (as root; any other user
/// runs on as itself).
fn prepare(
    config: &Config,
    sockets: Sockets,
    log: &Arc<Log>,
    submission_log: &Arc<Log>,
    smtps_log: Arc<Log>,
) -> Result<super::Listeners> {
    let parent = nix::unistd::getppid();
    let root = nix::unistd::geteuid().is_root();
    let jail = match root && config.boolean("smtpd_chroot")? {
        true => Some(config.queue_directory()?),
        false => None,
    };
    let mut queue = Queue::from_config(config)?;
    if jail.is_some() {
        // The queue as seen from inside it.
        queue = Queue::new("/")
            .with_group(queue.group())
            .with_owner(queue.owner_uid());
    }
    // Reads the TLS certificate and key.
    let mut server =
        super::server_from_config(config, queue.clone(), Arc::clone(log), super::Service::Smtp)?;
    let mut submission = match sockets.submission.is_empty() {
        true => None,
        false => Some(super::server_from_config(
            config,
            queue.clone(),
            Arc::clone(submission_log),
            super::Service::Submission,
        )?),
    };
    let mut smtps = super::smtps::server(config, queue, smtps_log)?;
    if let Some(dir) = &jail {
        let servers = std::iter::once(&mut server)
            .chain(submission.as_mut())
            .chain(smtps.as_mut());
        for server in servers {
            // Neither /etc/passwd nor the alias databases are visible inside the jail.
            server
                .local_recipients
                .freeze(&mut |w| server.log.warning(&w));
            // Dovecot's socket is seen from inside too.
            if let Some(sasl) = server.features.sasl.as_mut() {
                sasl.enter_jail(dir, &mut |w| server.log.warning(&w));
            }
        }
    }
    if root {
        let owner = config.mail_owner()?;
        if let Some(dir) = jail {
            enter_jail(&dir)?;
        }
        owner.become_owner()?;
    }
    // A daemon killed outright must not leave this process holding its ports. Set after
    // the change of users, which clears it.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
    if nix::unistd::getppid() != parent {
        return Err(Error::temp("the daemon that started this process is gone"));
    }
    let mut listeners = super::Listeners::serve(config, sockets.smtp, server)?;
    if let Some(submission) = submission {
        listeners.add(sockets.submission, submission, super::Service::Submission);
    }
    listeners.with_smtps(config, smtps)
}

/// `smtpd_chroot`: confines the process to `dir`. Called with root, before the drop
/// and before any thread starts.
fn enter_jail(dir: &Path) -> Result<()> {
    keep_local_time();
    let fail = |what: &str, e: nix::Error| {
        Error::new(
            ExitCode::OsErr,
            format!("smtpd_chroot: {what} {}: {e}", dir.display()),
        )
    };
    nix::unistd::chroot(dir).map_err(|e| fail("chroot", e))?;
    nix::unistd::chdir("/").map_err(|e| fail("chdir / in", e))?;
    Ok(())
}

/// The time zone survives the chroot (dates in `Received:` headers and log lines are
/// local time): with no `TZ` set, `/etc/localtime`'s rule becomes `TZ`, as the POSIX
/// string that ends a TZif file (version 2 and later: `CET-1CEST,M3.5.0,M10.5.0/3`),
/// which needs no file to read.
fn keep_local_time() {
    if std::env::var_os("TZ").is_some() {
        return;
    }
    let Ok(zone) = std::fs::read("/etc/localtime") else {
        return;
    };
    if let Some(rule) = tzif_footer(&zone) {
        // SAFETY: called before the process starts any thread (see `run`), so nothing
        // reads the environment meanwhile.
        unsafe { std::env::set_var("TZ", rule) };
    }
}

/// The POSIX TZ rule at the end of a TZif file of version 2 or later (`\n<rule>\n`), if
/// it has one that is plain text.
fn tzif_footer(zone: &[u8]) -> Option<&str> {
    if zone.len() < 5 || &zone[..4] != b"TZif" || zone[4] < b'2' {
        return None;
    }
    let body = zone.strip_suffix(b"\n")?;
    let start = body.iter().rposition(|&b| b == b'\n')? + 1;
    let rule = std::str::from_utf8(&body[start..]).ok()?;
    // Never a file name (`:path`, `/path`): inside the chroot it would name another.
    let plain = !rule.is_empty()
        && rule.len() <= 64
        && !rule.starts_with([':', '/'])
        && rule.bytes().all(|b| b.is_ascii_graphic());
    plain.then_some(rule)
}

/// Takes the inherited descriptors 3..3+count, each of which must be a listening TCP
/// socket, and marks them close-on-exec.
fn inherited_sockets(count: usize) -> Result<Vec<TcpListener>> {
    if count == 0 || count > MAX_SOCKETS {
        return Err(Error::usage(format!(
            "--fds: expected 1 to {MAX_SOCKETS} sockets, got {count}"
        )));
    }
    let mut sockets = Vec::with_capacity(count);
    for n in 0..count {
        // count <= MAX_SOCKETS: no overflow.
        let fd = FIRST_FD + n as RawFd;
        check_listening(fd)?;
        // SAFETY: `fd` is open (checked above), and nothing else in this process owns
        // it: the daemon put it there for us, and only main.cf has been read (and closed).
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        nix::fcntl::fcntl(
            &owned,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| Error::new(ExitCode::OsErr, format!("fcntl {fd}: {e}")))?;
        sockets.push(TcpListener::from(owned));
    }
    Ok(sockets)
}

/// Whether descriptor `fd` is a listening stream socket of the Internet families.
fn check_listening(fd: RawFd) -> Result<()> {
    use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname, sockopt};
    use nix::sys::stat::{SFlag, fstat};
    use std::os::fd::BorrowedFd;
    let not = |why: String| Error::usage(format!("descriptor {fd}: {why}"));
    // SAFETY: F_GETFD only reads the descriptor's flags; it fails when it is not open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(not(
            "not open (the daemon passes the listening sockets)".into()
        ));
    }
    // SAFETY: open (checked above) for the length of this function.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let stat = fstat(borrowed).map_err(|e| not(e.to_string()))?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err(not("not a socket".into()));
    }
    let listening = nix::sys::socket::getsockopt(&borrowed, sockopt::AcceptConn)
        .map_err(|e| not(e.to_string()))?;
    let stream = nix::sys::socket::getsockopt(&borrowed, sockopt::SockType)
        .map_err(|e| not(e.to_string()))?
        == nix::sys::socket::SockType::Stream;
    let family = getsockname::<SockaddrStorage>(fd)
        .map_err(|e| not(e.to_string()))?
        .family();
    let inet = matches!(family, Some(AddressFamily::Inet | AddressFamily::Inet6));
    if !(listening && stream && inet) {
        return Err(not("not a listening TCP socket".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_at_the_end_of_a_zone_file() {
        let v2 = |footer: &[u8]| {
            let mut zone = b"TZif2\0\0\0binary\n\0data".to_vec();
            zone.extend_from_slice(footer);
            zone
        };
        // (file, rule)
        let table: [(Vec<u8>, Option<&str>); 7] = [
            (
                v2(b"\nCET-1CEST,M3.5.0,M10.5.0/3\n"),
                Some("CET-1CEST,M3.5.0,M10.5.0/3"),
            ),
            (v2(b"\nUTC0\n"), Some("UTC0")),
            (v2(b"\n<+0330>-3:30\n"), Some("<+0330>-3:30")),
            (v2(b"\n\n"), None),
            (v2(b"\n:/tmp/zone\n"), None),
            (b"TZif\0\0\0\nUTC0\n".to_vec(), None),
            (b"not a zone\nUTC0\n".to_vec(), None),
        ];
        for (zone, rule) in table {
            assert_eq!(
                tzif_footer(&zone),
                rule,
                "{:?}",
                String::from_utf8_lossy(&zone)
            );
        }
        if let Ok(zone) = std::fs::read("/usr/share/zoneinfo/Europe/Paris") {
            assert_eq!(tzif_footer(&zone), Some("CET-1CEST,M3.5.0,M10.5.0/3"));
        }
    }
}
