//! The DATA section (RFC 5321 section 4.1.1.4): the message text up to the line holding
//! only `.`, with dot-stuffing undone (section 4.5.2), read as a stream so that a message
//! never has to fit in memory and `message_size_limit` is enforced while reading.
//!
//! Over the network only `<CRLF>.<CRLF>` ends the data: a `.` line with a bare LF on
//! either side is text. Accepting bare-LF endings is what made SMTP smuggling possible
//! (CVE-2023-51764: a message that another server passes on as one message would be read
//! as two here). `sendmail -bs` clients write with LF, so there a bare LF ends it too.

use std::io::{self, BufRead, Read};

use super::connection::Connection;

/// The most we take from one line at a time; longer lines pass in pieces.
const PIECE: usize = 8 * 1024;

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
    /// Only CRLF line endings around the final dot count.
    strict: bool,
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
    pub fn new(conn: &'c mut Connection<'a>, strict: bool) -> DataReader<'c, 'a> {
        DataReader {
            conn,
            strict,
            piece: Vec::with_capacity(PIECE),
            pos: 0,
            at_line_start: true,
            prev_crlf: true,
            last_cr: false,
            state: State::Reading,
        }
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
            if complete || self.piece.len() >= PIECE {
                break;
            }
        }
        let starts_line = self.at_line_start;
        let ends_line = self.piece.ends_with(b"\n");
        if starts_line && self.piece.first() == Some(&b'.') {
            let crlf_end = self.piece == b".\r\n";
            let lf_end = self.piece == b".\n";
            if (crlf_end && (self.prev_crlf || !self.strict)) || (lf_end && !self.strict) {
                self.state = State::Ended;
                self.piece.clear();
                return Ok(());
            }
            // Dot-stuffing: a leading dot was doubled by the client.
            self.pos = 1;
        }
        self.at_line_start = ends_line;
        if ends_line {
            self.prev_crlf = self.piece.ends_with(b"\r\n") || (self.piece == b"\n" && self.last_cr);
        }
        self.last_cr = self.piece.last() == Some(&b'\r');
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
        let mut conn = Connection::new(Transport::Pipe {
            input: Box::new(input),
            output: Box::new(io::sink()),
        });
        let mut out = Vec::new();
        let result = DataReader::new(&mut conn, strict)
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
    }

    #[test]
    fn bare_lf_dots_end_only_when_lenient() {
        let (data, rest) = read(b"a\n.\nb\r\n.\r\n", false);
        assert_eq!(data.unwrap(), b"a\n");
        assert_eq!(rest, b"b\r\n.\r\n");
        // Strict: "\n.\n" and "\n.\r\n" are text; only "\r\n.\r\n" ends.
        let (data, rest) = read(b"a\n.\nb\n.\r\nc\r\n.\r\nX", true);
        assert_eq!(data.unwrap(), b"a\n\nb\n\r\nc\r\n");
        assert_eq!(rest, b"X");
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
