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
/// 3.. and returns once it is told to stop. `log_to_stderr`: the daemon runs in the
/// foreground and logs to its standard error (when `maillog_file` is not set).
pub fn run(config_dir: Option<&Path>, count: usize, log_to_stderr: bool) -> Result<()> {
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
    let sockets = inherited_sockets(count)?;
    let fallback = if log_to_stderr {
        Fallback::Stderr
    } else {
        Fallback::Syslog
    };
    let log = Arc::new(Log::from_config_or(&config, "smtpd", fallback));
    // maillog_file may be root's: the descriptor outlives the privilege.
    log.open_now();
    let listeners = match prepare(&config, sockets, &log) {
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

/// Everything that needs root, then the drop to `mail_owner` (as root; any other user
/// runs on as itself).
fn prepare(config: &Config, sockets: Vec<TcpListener>, log: &Arc<Log>) -> Result<super::Listeners> {
    let parent = nix::unistd::getppid();
    let queue = Queue::from_config(config)?;
    // Reads the TLS certificate and key.
    let server = super::server_from_config(config, queue, Arc::clone(log), true)?;
    if nix::unistd::geteuid().is_root() {
        let owner = config.mail_owner()?;
        owner.become_owner()?;
        // Changing users cleared the parent-death signal: set it again, so that a daemon
        // killed outright does not leave this process holding its ports.
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
        if nix::unistd::getppid() != parent {
            return Err(Error::temp("the daemon that started this process is gone"));
        }
    }
    super::Listeners::serve(config, sockets, server)
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
