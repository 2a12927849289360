//! The DATA section (RFC 5321 section 4.1.1.4): the message text up to the line holding
//! only `.`, with dot-stuffing undone (section 4.5.2), read as a stream so that a message
//! never has to fit in memory and `message_size_limit` is enforced while reading.
//!
//! With [`Ending::standard`] only `<CRLF>.<CRLF>` ends the data: a `.` line with a bare LF
//! on either side is text, kept as the sender wrote it. Accepting bare-LF endings is what
//! made SMTP smuggling possible (CVE-2023-51764: a message that another server passes on
//! as one message would be read as two here). Which clients get which rule is the
//! session's choice (`smtpd_forbid_bare_newline`).

use std::io::{self, BufRead, Read};

use super::connection::Connection;

/// The most we take from one line at a time; longer lines pass in pieces.
const PIECE: usize = 8 * 1024;

/// What ends the data, and what a bare LF does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    /// Only `<CRLF>.<CRLF>` ends the data; otherwise any `.` line does.
    pub standard: bool,
    /// A line that ends in a bare LF makes the reader fail, once, with
    /// [`BARE_LF_KIND`]; it can then be drained to its end.
    pub reject_bare_lf: bool,
}

/// The error kind of a line ending in a bare LF under [`Ending::reject_bare_lf`].
pub const BARE_LF_KIND: io::ErrorKind = io::ErrorKind::InvalidData;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Reading,
    /// The terminating `.` was read.
    Ended,
}

/// The message text of one DATA command, as a `BufRead`. Ends cleanly at the final dot;
/// a client that goes away before it is an `UnexpectedEof` error, so nothing partial is
/// ever taken for a whole message.
pub struct DataReader<'c, 'a> {
    conn: &'c mut Connection<'a>,
    ending: Ending,
    /// A line ended in a bare LF.
    saw_bare_lf: bool,
    /// Bytes taken from the connection so far, for the log of a session cut off here.
    received: u64,
    piece: Vec<u8>,
    pos: usize,
    at_line_start: bool,
    /// The line before ended in CRLF (true before the first line, which follows the
    /// CRLF of the DATA command).
    prev_crlf: bool,
    /// The last byte of the previous piece was CR (a CRLF split between two pieces).
    last_cr: bool,
    state: State,
}

impl<'c, 'a> DataReader<'c, 'a> {
    pub fn new(conn: &'c mut Connection<'a>, ending: Ending) -> DataReader<'c, 'a> {
        DataReader {
            conn,
            ending,
            saw_bare_lf: false,
            received: 0,
            piece: Vec::with_capacity(PIECE),
            pos: 0,
            at_line_start: true,
            prev_crlf: true,
            last_cr: false,
            state: State::Reading,
        }
    }

    /// Whether a line so far ended in a bare LF.
    pub fn saw_bare_lf(&self) -> bool {
        self.saw_bare_lf
    }

    /// Bytes received from the client so far (the final dot included once read).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Reads and discards the rest of the data, so the session can answer after the
    /// final dot (a message that is too big is refused only then).
    pub fn drain(&mut self) -> io::Result<()> {
        loop {
            let n = self.fill_buf()?.len();
            if n == 0 {
                return Ok(());
            }
            self.consume(n);
        }
    }

    /// Reads the next piece: up to a line end or `PIECE` bytes.
    fn next_piece(&mut self) -> io::Result<()> {
        self.piece.clear();
        self.pos = 0;
        loop {
            let chunk = self.conn.fill_buf()?;
            if chunk.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before the end of data",
                ));
            }
            let room = PIECE - self.piece.len();
            let window = &chunk[..chunk.len().min(room)];
            let (take, complete) = match window.iter().position(|&c| c == b'\n') {
                Some(pos) => (pos + 1, true),
                None => (window.len(), false),
            };
            self.piece.extend_from_slice(&window[..take]);
            self.conn.consume(take);
            self.received += take as u64;
            if complete || self.piece.len() >= PIECE {
                break;
            }
        }
        let starts_line = self.at_line_start;
        let ends_line = self.piece.ends_with(b"\n");
        let crlf = self.piece.ends_with(b"\r\n") || (self.piece == b"\n" && self.last_cr);
        let bare_lf = ends_line && !crlf;
        let first_bare_lf = bare_lf && !self.saw_bare_lf;
        self.saw_bare_lf |= bare_lf;
        if starts_line && self.piece.first() == Some(&b'.') {
            let lone_dot = self.piece == b".\r\n" || self.piece == b".\n";
            if lone_dot && (!self.ending.standard || (crlf && self.prev_crlf)) {
                self.state = State::Ended;
                self.piece.clear();
                return Ok(());
            }
            // Dot-stuffing: a leading dot was doubled by the client. A lone dot that does
            // not end the data was not doubled (it is a bare-LF dot line): it stays.
            if !lone_dot {
                self.pos = 1;
            }
        }
        self.at_line_start = ends_line;
        if ends_line {
            self.prev_crlf = crlf;
        }
        self.last_cr = self.piece.last() == Some(&b'\r');
        if first_bare_lf && self.ending.reject_bare_lf {
            return Err(io::Error::new(BARE_LF_KIND, "bare <LF> received"));
        }
        Ok(())
    }
}

impl Read for DataReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let chunk = self.fill_buf()?;
        let n = chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for DataReader<'_, '_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos >= self.piece.len() && self.state == State::Reading {
            self.next_piece()?;
        }
        Ok(&self.piece[self.pos.min(self.piece.len())..])
    }

    fn consume(&mut self, amount: usize) {
        self.pos += amount;
    }
}

#[cfg(test)]
mod tests {
    use super::super::connection::Transport;
    use super::*;

    fn read(input: &'static [u8], strict: bool) -> (io::Result<Vec<u8>>, Vec<u8>) {
        let ending = Ending {
            standard: strict,
            reject_bare_lf: false,
        };
        read_with(input, ending)
    }

    fn read_with(input: &'static [u8], ending: Ending) -> (io::Result<Vec<u8>>, Vec<u8>) {
        let mut conn = Connection::new(Transport::Pipe {
            input: Box::new(input),
            output: Box::new(io::sink()),
        });
        let mut out = Vec::new();
        let result = DataReader::new(&mut conn, ending)
            .read_to_end(&mut out)
            .map(|_| out);
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).unwrap();
        (result, rest)
    }

    #[test]
    fn ends_at_the_dot_and_unstuffs() {
        let (data, rest) = read(b"Subject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n", true);
        assert_eq!(data.unwrap(), b"Subject: x\r\n\r\n.dot\r\n");
        assert_eq!(rest, b"QUIT\r\n");
        let (data, _) = read(b".\r\n", true);
        assert_eq!(data.unwrap(), b"");
        let mut conn = Connection::new(Transport::Pipe {
            input: Box::new(&b"a\r\n..b\r\n.\r\nQUIT\r\n"[..]),
            output: Box::new(io::sink()),
        });
        let ending = Ending {
            standard: true,
            reject_bare_lf: false,
        };
        let mut reader = DataReader::new(&mut conn, ending);
        reader.drain().unwrap();
        assert_eq!(reader.received(), 11, "as sent, up to the final dot");
    }

    #[test]
    fn bare_lf_dots_end_only_when_lenient() {
        let (data, rest) = read(b"a\n.\nb\r\n.\r\n", false);
        assert_eq!(data.unwrap(), b"a\n");
        assert_eq!(rest, b"b\r\n.\r\n");
        // Standard: "\n.\n", "\r\n.\n" and "\n.\r\n" are text, the dot kept; only
        // "\r\n.\r\n" ends. A stuffed dot is unstuffed whatever its line ending.
        let (data, rest) = read(b"a\n.\nb\n.\r\nc\r\n.\nd\n..\ne\r\n.\r\nX", true);
        assert_eq!(data.unwrap(), b"a\n.\nb\n.\r\nc\r\n.\nd\n.\ne\r\n");
        assert_eq!(rest, b"X");
        // A CRLF split between two reads is still a CRLF.
        let mut long = vec![b'y'; PIECE - 1];
        long.extend_from_slice(b"\r\n.\r\nX");
        let long: &'static [u8] = Box::leak(long.into_boxed_slice());
        let (data, rest) = read(long, true);
        assert_eq!(data.unwrap().len(), PIECE + 1);
        assert_eq!(rest, b"X");
    }

    #[test]
    fn a_bare_lf_fails_the_read_once_when_rejected() {
        let ending = Ending {
            standard: true,
            reject_bare_lf: true,
        };
        let mut conn = Connection::new(Transport::Pipe {
            input: Box::new(&b"ok\r\nbad\n.\nstill data\r\n.\r\nQUIT\r\n"[..]),
            output: Box::new(io::sink()),
        });
        let mut reader = DataReader::new(&mut conn, ending);
        let mut out = Vec::new();
        let err = reader.read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), BARE_LF_KIND);
        assert!(reader.saw_bare_lf());
        reader.drain().unwrap();
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"QUIT\r\n", "read to the standard end of data");
    }

    #[test]
    fn a_client_that_goes_away_is_an_error() {
        let (data, _) = read(b"Subject: x\r\n\r\nhalf a mess", true);
        assert_eq!(data.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn long_lines_pass_in_pieces_without_dot_confusion() {
        let mut input = vec![b'y'; 20_000];
        input.extend_from_slice(b"\r\n.x\r\n.\r\n");
        let input: &'static [u8] = Box::leak(input.into_boxed_slice());
        let (data, _) = read(input, true);
        let data = data.unwrap();
        assert_eq!(data.len(), 20_000 + 2 + 3);
        assert!(data.ends_with(b"\r\nx\r\n"));
    }
}
