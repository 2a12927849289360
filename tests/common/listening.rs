//! A started daemon (`sendmail -bD`) with its SMTP listener on 127.0.0.1, and an SMTP
//! client that can connect from any loopback address (Linux answers for all of 127/8),
//! so that a test can be two clients at once.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mailroom::config::{Config, DirSource};
use mailroom::log::{Log, Sink};
use mailroom::smtpd::Listeners;

use super::MailSystem;
use super::smtp_server::free_port;

const SENDMAIL: &str = env!("CARGO_BIN_EXE_sendmail");

/// The address the readiness probe connects from: no test uses it, so the probe is
/// never counted against a test's client.
const PROBE_FROM: &str = "127.0.0.254";

/// A daemon started by the test (`sendmail -bD`, which hands over to `mailroom daemon`),
/// its output discarded; stopped (SIGTERM, then SIGKILL) however the test ends.
pub struct Daemon(pub Child);

impl Daemon {
    pub fn start(sys: &MailSystem) -> Daemon {
        Daemon(
            sys.command(SENDMAIL)
                .arg("-bD")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// [`Daemon::start`], then waits up to `limit` for its master's pid file (its
    /// listeners may not answer yet).
    pub fn start_and_wait(sys: &MailSystem, limit: Duration) -> Daemon {
        let daemon = Daemon::start(sys);
        super::wait_for(sys, "the daemon to start", limit, || {
            sys.root().join("queue/pid/master.pid").exists()
        });
        daemon
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Already reaped: its pid may be someone else's by now.
        if let Ok(Some(_)) = self.0.try_wait() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A [`Daemon`] whose listener serves `port` on 127.0.0.1.
pub struct ListeningDaemon {
    // First: fields drop in order, and the daemon must stop before its directory goes.
    _daemon: Daemon,
    pub sys: MailSystem,
    pub port: u16,
}

impl ListeningDaemon {
    /// A mail system with `extra` main.cf lines, its daemon started and its listener
    /// answering.
    pub fn start(extra: &str) -> ListeningDaemon {
        let port = free_port();
        let sys = MailSystem::new(&format!(
            "smtpd_port = {port}\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n{extra}"
        ));
        let daemon = ListeningDaemon {
            _daemon: Daemon::start(&sys),
            sys,
            port,
        };
        daemon.wait_for("the SMTP listener", || {
            Smtp::connect_from(PROBE_FROM, daemon.port)
                .map(|mut probe| probe.cmd("QUIT"))
                .is_ok()
        });
        daemon
    }

    pub fn maillog(&self) -> String {
        self.sys.maillog()
    }

    /// Waits up to 20 s for `cond`; fails with the log.
    pub fn wait_for(&self, what: &str, cond: impl FnMut() -> bool) {
        super::wait_for(&self.sys, what, Duration::from_secs(20), cond)
    }

    /// Waits for a log line that contains `text`, and returns the log.
    pub fn log_with(&self, text: &str) -> String {
        self.wait_for(&format!("\"{text}\" in the log"), || {
            self.maillog().contains(text)
        });
        self.maillog()
    }

    /// A client from `from` (a loopback address), its greeting not read yet.
    pub fn client(&self, from: &str) -> Smtp {
        Smtp::connect_from(from, self.port).unwrap()
    }
}

/// The listeners of a mail system's main.cf served by threads of the test itself (no
/// daemon; `smtpd_port = 0` lets the system pick the port), logging to its maillog;
/// stopped when dropped.
pub struct InProcess {
    pub smtp_addrs: Vec<SocketAddr>,
    pub submission_addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl InProcess {
    pub fn start(sys: &MailSystem) -> InProcess {
        let config = Config::load_dir(sys.config_dir(), DirSource::Explicit).unwrap();
        let log = Arc::new(Log::new(
            "mailroom",
            "smtpd",
            "vm",
            Sink::File(sys.root().join("maillog")),
        ));
        let listeners = Listeners::bind(&config, sys.queue(), log).unwrap();
        let smtp_addrs = listeners.local_addrs();
        let submission_addrs = listeners.submission_addrs();
        let stop = Arc::new(AtomicBool::new(false));
        let handles = listeners.spawn(stop.clone());
        InProcess {
            smtp_addrs,
            submission_addrs,
            stop,
            handles,
        }
    }

    /// The (first) SMTP listener's address.
    pub fn smtp(&self) -> SocketAddr {
        self.smtp_addrs[0]
    }

    /// The (first) submission listener's address, if there is one.
    pub fn submission(&self) -> Option<SocketAddr> {
        self.submission_addrs.first().copied()
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// One SMTP client connection.
pub struct Smtp {
    reader: BufReader<TcpStream>,
    pub writer: TcpStream,
}

impl Smtp {
    /// Connects to 127.0.0.1:`port` from the loopback address `from`.
    pub fn connect_from(from: &str, port: u16) -> std::io::Result<Smtp> {
        use nix::sys::socket::{
            AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket,
        };
        use std::os::fd::AsRawFd;
        let local: IpAddr = from.parse().map_err(std::io::Error::other)?;
        let IpAddr::V4(local) = local else {
            return Err(std::io::Error::other("IPv4 only"));
        };
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        bind(
            fd.as_raw_fd(),
            &SockaddrIn::from(SocketAddrV4::new(local, 0)),
        )?;
        let server = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        connect(fd.as_raw_fd(), &SockaddrIn::from(server))?;
        let stream = TcpStream::from(fd);
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        Ok(Smtp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// The last line of the next reply, without its CRLF; empty at the end of input.
    pub fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap_or(0) == 0 {
                return line;
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return line.trim_end().to_string();
            }
        }
    }

    /// Sends `line` and returns the reply.
    pub fn cmd(&mut self, line: &str) -> String {
        // A server that has closed the connection shows as an empty reply.
        let _ = self.writer.write_all(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Whether the server has closed the connection, with nothing more to read (a reset:
    /// it closed with input of ours unread). Waits up to 20 s.
    pub fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => rest.is_empty(),
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }

    /// Sends `text` one byte per `pause`, until the server says something; its reply,
    /// and how many bytes went out.
    pub fn dribble(&mut self, text: &[u8], pause: Duration) -> (String, usize) {
        self.reader.get_ref().set_read_timeout(Some(pause)).unwrap();
        let mut sent = 0;
        let mut line = String::new();
        for byte in text {
            if self.writer.write_all(&[*byte]).is_err() {
                break;
            }
            sent += 1;
            match self.reader.read_line(&mut line) {
                Ok(_) if line.ends_with('\n') => break,
                // A partial line stays in `line`; a timeout is the pause.
                _ => continue,
            }
        }
        self.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        if !line.ends_with('\n') {
            let _ = self.reader.read_line(&mut line);
        }
        (line.trim_end().to_string(), sent)
    }
}
