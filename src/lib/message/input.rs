//! Reading a submission from stdin the way sendmail does: line by line, CRLF turned into
//! LF, a missing final newline supplied, a lone `.` ending the input unless `-i`, and
//! `message_size_limit` enforced while reading so an oversized message never fills the
//! disk or memory.

use std::io::{self, BufRead};

#[derive(Debug)]
pub enum InputError {
    /// More than `limit` bytes.
    TooBig {
        limit: u64,
    },
    Io(io::Error),
}

impl From<io::Error> for InputError {
    fn from(e: io::Error) -> Self {
        InputError::Io(e)
    }
}

pub struct InputReader<R> {
    inner: R,
    /// A line holding only `.` ends the message (sendmail without `-i`).
    dot_ends: bool,
    /// 0 = no limit.
    limit: u64,
    total: u64,
    done: bool,
}

impl<R: BufRead> InputReader<R> {
    pub fn new(inner: R, dot_ends: bool, limit: u64) -> InputReader<R> {
        InputReader {
            inner,
            dot_ends,
            limit,
            total: 0,
            done: false,
        }
    }

    /// Bytes of message text returned so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Reads the next line into `line` (cleared first), always ending in `\n`. Returns
    /// `false` at the end of the message.
    pub fn next_line(&mut self, line: &mut Vec<u8>) -> Result<bool, InputError> {
        line.clear();
        if self.done {
            return Ok(false);
        }
        loop {
            let chunk = match self.inner.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if chunk.is_empty() {
                self.done = true;
                if line.is_empty() {
                    return Ok(false);
                }
                break;
            }
            let (take, complete) = match memchr(b'\n', chunk) {
                Some(pos) => (pos + 1, true),
                None => (chunk.len(), false),
            };
            if self.limit > 0 && self.total + (line.len() + take) as u64 > self.limit + 2 {
                // +2: the CRLF of the last line may still shrink to LF.
                return Err(InputError::TooBig { limit: self.limit });
            }
            line.extend_from_slice(&chunk[..take]);
            self.inner.consume(take);
            if complete {
                line.pop();
                break;
            }
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if self.dot_ends && line.as_slice() == b"." {
            self.done = true;
            line.clear();
            return Ok(false);
        }
        line.push(b'\n');
        self.total += line.len() as u64;
        if self.limit > 0 && self.total > self.limit {
            return Err(InputError::TooBig { limit: self.limit });
        }
        Ok(true)
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8], dot_ends: bool, limit: u64) -> Result<Vec<u8>, InputError> {
        let mut reader = InputReader::new(input, dot_ends, limit);
        let mut out = Vec::new();
        let mut line = Vec::new();
        while reader.next_line(&mut line)? {
            out.extend_from_slice(&line);
        }
        Ok(out)
    }

    #[test]
    fn normalises_line_endings() {
        assert_eq!(read_all(b"a\r\nb\r\n", true, 0).unwrap(), b"a\nb\n");
        assert_eq!(read_all(b"a\rb\n", true, 0).unwrap(), b"a\rb\n");
        assert_eq!(read_all(b"no newline", true, 0).unwrap(), b"no newline\n");
        assert_eq!(read_all(b"", true, 0).unwrap(), b"");
        assert_eq!(
            read_all(b"\xff\xfe 8bit\n", true, 0).unwrap(),
            b"\xff\xfe 8bit\n"
        );
    }

    #[test]
    fn lone_dot_ends_unless_ignored() {
        assert_eq!(read_all(b"a\n.\nb\n", true, 0).unwrap(), b"a\n");
        assert_eq!(read_all(b"a\r\n.\r\nb\n", true, 0).unwrap(), b"a\n");
        assert_eq!(read_all(b"a\n.\nb\n", false, 0).unwrap(), b"a\n.\nb\n");
        assert_eq!(read_all(b"a\n..\n", true, 0).unwrap(), b"a\n..\n");
        assert_eq!(read_all(b"a\n.", true, 0).unwrap(), b"a\n");
    }

    #[test]
    fn size_limit() {
        assert!(read_all(b"12345\n", true, 6).is_ok());
        assert!(read_all(b"12345\r\n", true, 6).is_ok());
        assert!(matches!(
            read_all(b"123456\n", true, 6),
            Err(InputError::TooBig { .. })
        ));
        let huge = vec![b'x'; 1 << 20];
        assert!(matches!(
            read_all(&huge, true, 1000),
            Err(InputError::TooBig { .. })
        ));
    }
}
