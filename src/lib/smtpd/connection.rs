//! The client connection: buffered input read in bounded chunks, replies collected and
//! written in one go, the STARTTLS upgrade (RFC 3207), and the time a client is given.
//!
//! Replies are written only when the server is about to wait for input it does not have
//! yet. That is what makes PIPELINING (RFC 2920) cheap: a client that sends ten commands
//! in one packet gets ten replies in one packet, in order, and a client that sends one
//! at a time still gets each reply at once.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// Input buffer size: also the most we read from the client in one go.
const BUFFER: usize = 16 * 1024;

/// What the session talks over.
pub enum Transport<'a> {
    Tcp(TimedSocket),
    Tls(Box<dyn TlsStream>),
    /// `sendmail -bs`: stdin and stdout.
    Pipe {
        input: Box<dyn Read + 'a>,
        output: Box<dyn Write + 'a>,
    },
    /// Between giving up one transport and getting the next (STARTTLS).
    Closed,
}

impl Read for Transport<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
            Transport::Pipe { input, .. } => input.read(buf),
            Transport::Closed => Ok(0),
        }
    }
}

impl Write for Transport<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
            Transport::Pipe { output, .. } => output.write(buf),
            Transport::Closed => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
            Transport::Pipe { output, .. } => output.flush(),
            Transport::Closed => Ok(()),
        }
    }
}

impl Transport<'_> {
    /// The network socket under the transport (none for `sendmail -bs`).
    fn socket(&mut self) -> Option<&mut TimedSocket> {
        match self {
            Transport::Tcp(s) => Some(s),
            Transport::Tls(s) => Some(s.socket()),
            Transport::Pipe { .. } | Transport::Closed => None,
        }
    }
}

/// A TLS session over a client's socket. The connection holds it as a trait object, so
/// that only what starts TLS ([`Connection::start_tls`], which the listener's sessions
/// call) links rustls: `sendmail -bs`, whose connection is a pipe and which is set-gid,
/// carries no TLS code at all.
pub trait TlsStream: Read + Write {
    /// The socket under the TLS layer.
    fn socket(&mut self) -> &mut TimedSocket;
    /// Sends `close_notify`; errors no longer matter.
    fn close_notify(&mut self);
}

impl TlsStream for StreamOwned<ServerConnection, TimedSocket> {
    fn socket(&mut self) -> &mut TimedSocket {
        &mut self.sock
    }

    fn close_notify(&mut self) {
        self.conn.send_close_notify();
        let _ = self.conn.complete_io(&mut self.sock);
    }
}

/// How long a client may take: `smtpd_timeout` for each read or write, or, with
/// `smtpd_per_request_deadline`, for all the reads and writes of one request together
/// (a command line and its reply, or the message text), so that a client that sends
/// one byte at a time cannot keep a session for ever. Only the time spent waiting for
/// the client counts, not the server's own work between reads (Postfix's vstream
/// deadline). While the message text comes, each byte received adds `1/min_data_rate`
/// seconds, up to `smtpd_timeout` again (`smtpd_min_data_rate`): a large message sent
/// at an honest pace is never cut off.
#[derive(Debug, Clone)]
pub struct Deadline {
    timeout: Duration,
    per_request: bool,
    /// What is left of the budget of the request in progress.
    left: Duration,
    /// Bytes per second that earn one more second; 0 earns nothing.
    min_data_rate: u64,
}

impl Deadline {
    pub fn new(timeout: Duration, per_request: bool) -> Deadline {
        Deadline {
            timeout,
            per_request,
            left: timeout,
            min_data_rate: 0,
        }
    }

    /// A new request begins: the whole budget again, and `min_data_rate` (0 for a
    /// command, `smtpd_min_data_rate` for the message text).
    pub fn recharge(&mut self, min_data_rate: u64) {
        self.left = self.timeout;
        self.min_data_rate = min_data_rate;
    }

    /// The time the next read or write may wait; an error once the budget is spent.
    fn before_io(&self) -> io::Result<Duration> {
        if !self.per_request {
            return Ok(self.timeout);
        }
        // A socket timeout of zero would mean "wait for ever".
        if self.left < Duration::from_millis(1) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request deadline exceeded",
            ));
        }
        Ok(self.left)
    }

    /// Charges one read or write that took `elapsed` and moved `bytes`.
    fn after_io(&mut self, elapsed: Duration, bytes: usize) {
        if !self.per_request {
            return;
        }
        self.left = self.left.saturating_sub(elapsed);
        if self.min_data_rate > 0 {
            let bonus = Duration::from_secs_f64(bytes as f64 / self.min_data_rate as f64);
            self.left = self.left.saturating_add(bonus).min(self.timeout);
        }
    }

    /// The budget is gone (a read or write ran into its timeout).
    fn spend(&mut self) {
        if self.per_request {
            self.left = Duration::ZERO;
        }
    }
}

/// A client's TCP socket whose reads and writes wait no longer than its [`Deadline`]
/// allows. The deadline lives here, under TLS, so that it bounds every read the TLS
/// layer makes too (a TLS record dribbled in byte by byte).
pub struct TimedSocket {
    stream: TcpStream,
    deadline: Deadline,
    /// The socket timeouts last set, to spare a system call when they do not change.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl TimedSocket {
    pub fn new(stream: TcpStream, deadline: Deadline) -> TimedSocket {
        TimedSocket {
            stream,
            deadline,
            read_timeout: None,
            write_timeout: None,
        }
    }

    /// Runs one read or write under the deadline.
    fn timed(
        &mut self,
        write: bool,
        io: impl FnOnce(&mut TcpStream) -> io::Result<usize>,
    ) -> io::Result<usize> {
        // Whole seconds, rounded up: the budget shrinks with every read, and a socket
        // timeout set to it exactly would cost a system call per read on the busiest
        // path. Rounded, it changes about once a second; a read may then outlast the
        // budget by less than a second before the deadline ends the request.
        let limit = whole_seconds_up(self.deadline.before_io()?);
        let current = if write {
            &mut self.write_timeout
        } else {
            &mut self.read_timeout
        };
        if *current != Some(limit) {
            if write {
                self.stream.set_write_timeout(Some(limit))?;
            } else {
                self.stream.set_read_timeout(Some(limit))?;
            }
            *current = Some(limit);
        }
        let started = Instant::now();
        let result = io(&mut self.stream);
        match &result {
            Ok(n) => self.deadline.after_io(started.elapsed(), *n),
            Err(e) if is_timeout(e) => self.deadline.spend(),
            Err(_) => self.deadline.after_io(started.elapsed(), 0),
        }
        result
    }
}

/// `d` rounded up to whole seconds.
fn whole_seconds_up(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0)))
}

impl Read for TimedSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.timed(false, |s| s.read(buf))
    }
}

impl Write for TimedSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.timed(true, |s| s.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// One line read by [`Connection::read_line`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line, its CRLF or LF removed, in the caller's buffer.
    Complete,
    /// A line longer than the limit: read to its end and thrown away.
    TooLong,
    /// The client closed the connection (a partial last line is dropped).
    Eof,
}

pub struct Connection<'a> {
    input: BufReader<Transport<'a>>,
    out: Vec<u8>,
    /// The last line [`Connection::read_line`] returned ended in a bare LF.
    bare_lf: bool,
}

impl<'a> Connection<'a> {
    pub fn new(transport: Transport<'a>) -> Connection<'a> {
        Connection {
            input: BufReader::with_capacity(BUFFER, transport),
            out: Vec::with_capacity(1024),
            bare_lf: false,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.input.get_ref(), Transport::Tls(_))
    }

    /// Queues a reply; it is written before the next wait for input, or by `flush`.
    pub fn send(&mut self, reply: &super::reply::Reply) {
        self.out.extend_from_slice(&reply.to_wire());
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            let out = std::mem::take(&mut self.out);
            let result = self.input.get_mut().write_all(&out);
            self.out = out;
            self.out.clear();
            result?;
        }
        self.input.get_mut().flush()
    }

    /// A new request begins (a command line, or with `min_data_rate` above 0 the message
    /// text): the client has the whole of its time again. Nothing for `sendmail -bs`.
    pub fn start_request(&mut self, min_data_rate: u64) {
        if let Some(socket) = self.input.get_mut().socket() {
            socket.deadline.recharge(min_data_rate);
        }
    }

    /// Reads one line of at most `max` bytes (not counting its line ending) into `line`.
    /// Never holds more than `max` plus one buffer of input, however long the line.
    pub fn read_line(&mut self, line: &mut Vec<u8>, max: usize) -> io::Result<Line> {
        line.clear();
        let mut too_long = false;
        loop {
            let chunk = self.fill_buf()?;
            if chunk.is_empty() {
                return Ok(Line::Eof);
            }
            let (take, complete) = match chunk.iter().position(|&c| c == b'\n') {
                Some(pos) => (pos + 1, true),
                None => (chunk.len(), false),
            };
            if !too_long {
                // +2: room for the CRLF that is removed below.
                if line.len() + take > max + 2 {
                    too_long = true;
                    line.clear();
                } else {
                    line.extend_from_slice(&chunk[..take]);
                }
            }
            self.consume(take);
            if complete {
                if too_long {
                    return Ok(Line::TooLong);
                }
                line.pop();
                self.bare_lf = line.last() != Some(&b'\r');
                if !self.bare_lf {
                    line.pop();
                }
                return Ok(Line::Complete);
            }
        }
    }

    /// Whether the last line read ended in a bare LF rather than CRLF.
    pub fn last_line_bare_lf(&self) -> bool {
        self.bare_lf
    }

    /// Bytes the client has sent that are not read yet.
    pub fn pending_input(&self) -> usize {
        self.input.buffer().len()
    }

    /// Switches to TLS after the `220 Ready to start TLS` reply has been flushed, and
    /// completes the handshake. Anything the client sent after `STARTTLS` in plain text
    /// is thrown away, never read as if it had come over TLS (the CVE-2011-0411 command
    /// injection).
    pub fn start_tls(&mut self, config: Arc<ServerConfig>) -> io::Result<()> {
        let old = std::mem::replace(
            &mut self.input,
            BufReader::with_capacity(BUFFER, Transport::Closed),
        );
        let Transport::Tcp(tcp) = old.into_inner() else {
            return Err(io::Error::other("STARTTLS needs a plain TCP connection"));
        };
        let server = ServerConnection::new(config).map_err(io::Error::other)?;
        let mut tls = StreamOwned::new(server, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        self.input = BufReader::with_capacity(BUFFER, Transport::Tls(Box::new(tls)));
        Ok(())
    }

    /// Writes what is pending and ends TLS politely; errors no longer matter here.
    pub fn close(&mut self) {
        let _ = self.flush();
        if let Transport::Tls(tls) = self.input.get_mut() {
            tls.close_notify();
        }
    }
}

impl Read for Connection<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let chunk = self.fill_buf()?;
        let n = chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Connection<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.input.buffer().is_empty() {
            // About to wait for the client: it must have our replies first.
            self.flush()?;
        }
        self.input.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.input.consume(amount);
    }
}

/// A read that ran into the socket's timeout.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe(input: &'static [u8]) -> Connection<'static> {
        Connection::new(Transport::Pipe {
            input: Box::new(input),
            output: Box::new(io::sink()),
        })
    }

    #[test]
    fn socket_timeouts_are_whole_seconds_rounded_up() {
        let cases = [
            (Duration::from_millis(1), 1),
            (Duration::from_secs(2), 2),
            (Duration::from_millis(299_999), 300),
            (Duration::from_nanos(300_000_000_001), 301),
        ];
        for (budget, secs) in cases {
            assert_eq!(
                whole_seconds_up(budget),
                Duration::from_secs(secs),
                "{budget:?}"
            );
        }
        assert_eq!(whole_seconds_up(Duration::MAX).as_secs(), u64::MAX);
    }

    #[test]
    fn the_budget_is_per_request_and_data_earns_time() {
        let secs = Duration::from_secs;
        let left = |d: &Deadline| d.before_io().ok();
        let mut d = Deadline::new(secs(10), true);
        assert_eq!(left(&d), Some(secs(10)));
        // A command line dribbled in: every wait counts, the bytes earn nothing.
        d.after_io(secs(4), 1);
        d.after_io(secs(5), 1);
        assert_eq!(left(&d), Some(secs(1)));
        d.after_io(secs(1), 1);
        assert_eq!(left(&d), None, "spent");
        assert_eq!(
            d.before_io().unwrap_err().kind(),
            io::ErrorKind::TimedOut,
            "reads as a timeout"
        );
        // The message text at 500 bytes/s: 1000 bytes earn 2 s, never above the
        // timeout.
        d.recharge(500);
        d.after_io(secs(3), 1000);
        assert_eq!(left(&d), Some(secs(9)));
        d.after_io(secs(1), 1_000_000);
        assert_eq!(left(&d), Some(secs(10)));
        d.after_io(secs(8), 499);
        assert!(left(&d).is_some_and(|l| l > secs(2) && l < secs(3)));
        d.spend();
        assert_eq!(left(&d), None);
        // The next command has it all again, and earns nothing.
        d.recharge(0);
        d.after_io(secs(2), 1_000_000);
        assert_eq!(left(&d), Some(secs(8)));

        // Without smtpd_per_request_deadline each read has the whole timeout.
        let mut d = Deadline::new(secs(10), false);
        d.after_io(secs(9), 1);
        d.after_io(secs(9), 1);
        d.spend();
        assert_eq!(left(&d), Some(secs(10)));
    }

    #[test]
    fn lines_are_bounded() {
        let mut conn = pipe(b"NOOP\r\nshort\n");
        let mut line = Vec::new();
        assert_eq!(conn.read_line(&mut line, 10).unwrap(), Line::Complete);
        assert_eq!(line, b"NOOP");
        assert!(!conn.last_line_bare_lf());
        assert_eq!(conn.read_line(&mut line, 10).unwrap(), Line::Complete);
        assert_eq!(line, b"short");
        assert!(conn.last_line_bare_lf());
        assert_eq!(conn.read_line(&mut line, 10).unwrap(), Line::Eof);

        let long: &'static [u8] = Box::leak(
            [vec![b'x'; 100_000], b"\r\nQUIT\r\n".to_vec()]
                .concat()
                .into_boxed_slice(),
        );
        let mut conn = pipe(long);
        assert_eq!(conn.read_line(&mut line, 2048).unwrap(), Line::TooLong);
        assert!(line.capacity() < 8192, "the long line was not kept");
        assert_eq!(conn.read_line(&mut line, 2048).unwrap(), Line::Complete);
        assert_eq!(line, b"QUIT");
    }
}
