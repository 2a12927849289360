//! SMTP servers on 127.0.0.1 for the tests that send mail: a scripted one of our own, to
//! make a server fail in every way a client must handle and record what the client said,
//! and a real one (Python's aiosmtpd, `tests/support/aiosmtpd_saver.py`), an independent
//! party that saves what arrives.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::require_python_module;

/// A free TCP port on 127.0.0.1 (bound and released: a server binds it right after, or
/// nothing does and a connection to it is refused).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------------------
// A scripted server: each accepted connection follows the next script; what the client
// sends is recorded.

#[derive(Clone, Debug)]
pub enum Step {
    /// Send this reply (CRLF added).
    Say(&'static str),
    /// Read one command line; it must start with this.
    Expect(&'static str),
    /// Read a command line for each prefix before saying anything: what a client that
    /// pipelines (RFC 2920) sends in one go. A client that waits for a reply instead
    /// leaves the server waiting, which is logged as `NOT PIPELINED` after 2 s.
    Together(&'static [&'static str]),
    /// Read the message up to the final dot.
    Data,
    /// Read a little of the message, then close with the rest unread.
    DropDuringData,
    /// Say nothing for longer than the client waits.
    Silence,
    /// Run the TLS handshake as a server.
    Tls,
}
use Step::*;

pub struct Scripted {
    pub port: u16,
    transcript: Arc<Mutex<Vec<String>>>,
    /// The client's address of each session, in order.
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    thread: JoinHandle<()>,
}

impl Scripted {
    pub fn start(sessions: Vec<Vec<Step>>) -> Scripted {
        Scripted::start_tls(sessions, None)
    }

    pub fn start_tls(sessions: Vec<Vec<Step>>, tls: Option<Arc<rustls::ServerConfig>>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let transcript = Arc::new(Mutex::new(Vec::new()));
        let log = transcript.clone();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let seen = peers.clone();
        let thread = std::thread::spawn(move || {
            for (n, steps) in sessions.into_iter().enumerate() {
                let Ok((sock, peer)) = listener.accept() else {
                    return;
                };
                seen.lock().unwrap().push(peer);
                let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
                log.lock().unwrap().push(format!("session {n}"));
                run_session(Io::Plain(sock), &steps, &log, tls.clone());
            }
        });
        Scripted {
            port,
            transcript,
            peers,
            thread,
        }
    }

    /// The client's address in session `n` (from 0), once it has connected; waits up to
    /// 20 s.
    pub fn peer(&self, n: usize) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(peer) = self.peers.lock().unwrap().get(n) {
                return *peer;
            }
            assert!(Instant::now() < deadline, "no session {n} within 20 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for every scripted session to end and returns what the client sent.
    pub fn finish(self) -> Vec<String> {
        let _ = self.thread.join();
        self.transcript.lock().unwrap().clone()
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Io {
    fn set_read_timeout(&self, limit: Duration) {
        let sock = match self {
            Io::Plain(s) => s,
            Io::Tls(s) => &s.sock,
        };
        let _ = sock.set_read_timeout(Some(limit));
    }
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Io::Plain(s) => s.read(buf),
            Io::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Io::Plain(s) => s.write(buf),
            Io::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Io::Plain(s) => s.flush(),
            Io::Tls(s) => s.flush(),
        }
    }
}

fn read_line(io: &mut Io) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8];
    loop {
        match io.read(&mut byte) {
            Ok(1) => {
                line.push(byte[0]);
                if byte[0] == b'\n' {
                    return Some(String::from_utf8_lossy(&line).trim_end().to_string());
                }
            }
            _ => return None,
        }
    }
}

fn run_session(
    mut io: Io,
    steps: &[Step],
    log: &Mutex<Vec<String>>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    for step in steps {
        match step {
            Say(text) => {
                if io.write_all(format!("{text}\r\n").as_bytes()).is_err() {
                    return;
                }
                let _ = io.flush();
            }
            Expect(prefix) => {
                let Some(line) = read_line(&mut io) else {
                    log.lock().unwrap().push("EOF".into());
                    return;
                };
                let ok = line.starts_with(prefix);
                log.lock().unwrap().push(line.clone());
                if !ok {
                    log.lock()
                        .unwrap()
                        .push(format!("UNEXPECTED (wanted {prefix})"));
                    return;
                }
            }
            Together(prefixes) => {
                io.set_read_timeout(Duration::from_secs(2));
                for prefix in prefixes.iter() {
                    let Some(line) = read_line(&mut io) else {
                        log.lock().unwrap().push("NOT PIPELINED".into());
                        return;
                    };
                    let ok = line.starts_with(prefix);
                    log.lock().unwrap().push(line);
                    if !ok {
                        log.lock()
                            .unwrap()
                            .push(format!("UNEXPECTED (wanted {prefix})"));
                        return;
                    }
                }
                io.set_read_timeout(Duration::from_secs(10));
            }
            Data => {
                let mut body = Vec::new();
                while let Some(line) = read_line(&mut io) {
                    if line == "." {
                        break;
                    }
                    body.push(line);
                }
                log.lock()
                    .unwrap()
                    .push(format!("DATA {} lines", body.len()));
            }
            DropDuringData => {
                let mut buf = [0u8; 1024];
                let _ = io.read(&mut buf);
                log.lock().unwrap().push("DROPPED".into());
                return;
            }
            Silence => std::thread::sleep(Duration::from_secs(4)),
            Tls => {
                let Io::Plain(sock) = io else { return };
                let config = tls.clone().expect("a TLS config for this script");
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut stream = rustls::StreamOwned::new(conn, sock);
                while stream.conn.is_handshaking() {
                    if stream.conn.complete_io(&mut stream.sock).is_err() {
                        log.lock().unwrap().push("TLS FAILED".into());
                        return;
                    }
                }
                log.lock().unwrap().push("<TLS>".into());
                io = Io::Tls(Box::new(stream));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// A slow sink: takes every connection at once and every message, answering the end of
// each message only after `hold`, and counts the transactions in flight (from MAIL FROM
// to that answer), to see how many deliveries a client runs side by side.

pub struct SlowSink {
    pub port: u16,
    state: Arc<Mutex<SinkCounts>>,
}

#[derive(Default, Debug)]
struct SinkCounts {
    in_flight: usize,
    most: usize,
    messages: usize,
}

impl SlowSink {
    pub fn start(hold: Duration) -> SlowSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(SinkCounts::default()));
        let shared = Arc::clone(&state);
        // Detached: the thread ends with the test process.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let state = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let _ = sink_session(stream, &state, hold);
                });
            }
        });
        SlowSink { port, state }
    }

    /// Messages taken so far.
    pub fn messages(&self) -> usize {
        self.state.lock().unwrap().messages
    }

    /// Transactions in flight now.
    pub fn in_flight(&self) -> usize {
        self.state.lock().unwrap().in_flight
    }

    /// The most transactions that were in flight at once.
    pub fn most_at_once(&self) -> usize {
        self.state.lock().unwrap().most
    }
}

fn sink_session(
    stream: TcpStream,
    state: &Mutex<SinkCounts>,
    hold: Duration,
) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut lines = BufReader::new(stream);
    out.write_all(b"220 slow.sink ESMTP\r\n")?;
    let mut line = String::new();
    let mut in_transaction = false;
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            break;
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" | "HELO" => b"250 slow.sink\r\n",
            "MAIL" => {
                let mut s = state.lock().unwrap();
                s.in_flight += 1;
                s.most = s.most.max(s.in_flight);
                in_transaction = true;
                b"250 2.1.0 Ok\r\n"
            }
            "RCPT" | "RSET" | "NOOP" => b"250 2.0.0 Ok\r\n",
            "DATA" => {
                out.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")?;
                loop {
                    line.clear();
                    if lines.read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                }
                std::thread::sleep(hold);
                let mut s = state.lock().unwrap();
                s.in_flight -= 1;
                s.messages += 1;
                in_transaction = false;
                b"250 2.0.0 Ok: queued\r\n"
            }
            "QUIT" => {
                out.write_all(b"221 2.0.0 Bye\r\n")?;
                break;
            }
            _ => b"502 5.5.2 Error: command not recognized\r\n",
        };
        out.write_all(reply)?;
    }
    if in_transaction {
        state.lock().unwrap().in_flight -= 1;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// A real server: aiosmtpd.

const AIOSMTPD: &str = include_str!("../support/aiosmtpd_saver.py");

/// TLS on the aiosmtpd server, with a PEM certificate chain and key.
pub enum ServerTls<'a> {
    None,
    /// TLS from the first byte (SMTPS, port 465).
    Implicit {
        cert: &'a std::path::Path,
        key: &'a std::path::Path,
    },
    /// STARTTLS offered.
    Starttls {
        cert: &'a std::path::Path,
        key: &'a std::path::Path,
    },
}

pub struct Aiosmtpd {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Aiosmtpd {
    /// None (the test returns) when aiosmtpd is not installed.
    pub fn start() -> Option<Aiosmtpd> {
        Aiosmtpd::start_with(ServerTls::None)
    }

    /// The same server offering PIPELINING; each transaction's `pipelined` says whether
    /// the client sent on without waiting for the reply to MAIL FROM.
    pub fn start_pipelining() -> Option<Aiosmtpd> {
        Aiosmtpd::launch(ServerTls::None, true)
    }

    /// The same server with TLS: from the first byte, or offered with STARTTLS.
    pub fn start_with(tls: ServerTls) -> Option<Aiosmtpd> {
        Aiosmtpd::launch(tls, false)
    }

    fn launch(tls: ServerTls, pipelining: bool) -> Option<Aiosmtpd> {
        if !require_python_module("aiosmtpd") {
            return None;
        }
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new("python3");
        command
            .arg("-c")
            .arg(AIOSMTPD)
            .arg(port.to_string())
            .arg(dir.path())
            .env("SAVER_PIPELINING", if pipelining { "1" } else { "0" });
        match tls {
            ServerTls::None => {}
            ServerTls::Implicit { cert, key } => {
                command.arg("implicit").arg(cert).arg(key);
            }
            ServerTls::Starttls { cert, key } => {
                command.arg("starttls").arg(cert).arg(key);
            }
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut ready = String::new();
        let stdout = child.stdout.take().unwrap();
        BufReader::new(stdout).read_line(&mut ready).unwrap();
        assert_eq!(ready.trim(), "ready", "aiosmtpd did not start");
        Some(Aiosmtpd { child, port, dir })
    }

    /// The `n`th transaction (from 0): its envelope (`mail_from`, `rcpt_tos`,
    /// `mail_options`) and its data as received; waits up to 10 s for it to arrive.
    pub fn received(&self, n: usize) -> (serde_json::Value, Vec<u8>) {
        let json = self.dir.path().join(format!("{n}.json"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !json.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let meta = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let body = std::fs::read(self.dir.path().join(format!("{n}.eml"))).unwrap();
        (meta, body)
    }

    /// How many transactions have arrived.
    pub fn count(&self) -> usize {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "json")
            })
            .count()
    }
}

impl Drop for Aiosmtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed RSA-2048 certificate for localhost and its key (`cert.pem`, `key.pem`
/// in `dir`); the caller has checked that openssl is installed.
pub fn rsa_certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", super::stderr(&out));
    (cert, key)
}

/// A self-signed certificate for localhost and its key (`cert.pem`, `key.pem` in
/// `dir`); None (the test returns) when openssl is not installed.
pub fn self_signed_certificate(
    dir: &std::path::Path,
) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    if !super::require_tool("openssl") {
        return None;
    }
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost"])
        // A leaf that names 127.0.0.1, so a client given it as its one trusted
        // certificate (smtp_tls_CAfile) verifies it.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl: {out:?}");
    Some((cert, key))
}
