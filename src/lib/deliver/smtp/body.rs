//! The message as it goes over the wire after DATA: the queue keeps LF line endings, SMTP
//! wants CRLF, and a line starting with `.` gets a second one (RFC 5321 section 4.5.2).
//! Written in large chunks: one small write per line would stall on delayed ACKs.

use std::io::{self, Read, Write};

use crate::deliver::MessageSource;

/// Bytes gathered before each write.
const CHUNK: usize = 64 * 1024;

/// Whether the message has any byte with the high bit set (then `BODY=8BITMIME`).
pub fn has_8bit(message: &MessageSource) -> io::Result<bool> {
    let mut reader = message.reader();
    let mut buf = vec![0; CHUNK];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(false);
        }
        if buf[..n].iter().any(|&b| b >= 0x80) {
            return Ok(true);
        }
    }
}

/// Why sending the body stopped.
#[derive(Debug)]
pub enum BodyError {
    /// The queue file could not be read: the final `.` must not be sent.
    Read(io::Error),
    /// The connection failed.
    Write(io::Error),
}

/// Writes the message, dot-stuffed with CRLF line endings, then the terminating
/// `.` line. A message that does not end in a line break gets one first.
pub fn send(message: &MessageSource, out: &mut impl Write) -> Result<(), BodyError> {
    let mut reader = message.reader();
    let mut input = vec![0; CHUNK];
    let mut output = Vec::with_capacity(CHUNK * 2 + 8);
    let mut state = LineState {
        at_line_start: true,
        after_cr: false,
    };
    loop {
        let n = reader.read(&mut input).map_err(BodyError::Read)?;
        if n == 0 {
            break;
        }
        encode(&input[..n], &mut state, &mut output);
        if output.len() >= CHUNK {
            out.write_all(&output).map_err(BodyError::Write)?;
            output.clear();
        }
    }
    if !state.at_line_start {
        output.extend_from_slice(b"\r\n");
    }
    output.extend_from_slice(b".\r\n");
    out.write_all(&output).map_err(BodyError::Write)?;
    out.flush().map_err(BodyError::Write)
}

/// Where the encoder stands between chunks.
struct LineState {
    at_line_start: bool,
    after_cr: bool,
}

fn encode(input: &[u8], state: &mut LineState, output: &mut Vec<u8>) {
    for &b in input {
        if state.at_line_start && b == b'.' {
            output.push(b'.');
        }
        // A CR already in front of the LF (a stored CRLF) is not doubled.
        if b == b'\n' && !state.after_cr {
            output.push(b'\r');
        }
        output.push(b);
        state.after_cr = b == b'\r';
        state.at_line_start = b == b'\n';
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(message: &[u8]) -> Vec<u8> {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(message).unwrap();
        let source = MessageSource {
            file: &file,
            offset: 0,
            size: message.len() as u64,
        };
        let mut out = Vec::new();
        send(&source, &mut out).unwrap();
        out
    }

    #[test]
    fn crlf_and_dot_stuffing() {
        assert_eq!(
            wire(b"Subject: x\n\n.hidden\n..two\nend.\n.\n"),
            b"Subject: x\r\n\r\n..hidden\r\n...two\r\nend.\r\n..\r\n.\r\n"
        );
        assert_eq!(wire(b"no newline"), b"no newline\r\n.\r\n");
        assert_eq!(wire(b""), b".\r\n");
        assert_eq!(wire(b"crlf\r\nkept\n"), b"crlf\r\nkept\r\n.\r\n");
    }

    #[test]
    fn large_messages_cross_chunks_intact() {
        let mut message = Vec::new();
        while message.len() < 3 * CHUNK {
            message.extend_from_slice(b".line of text\n");
        }
        let out = wire(&message);
        let expected: Vec<u8> = String::from_utf8(message)
            .unwrap()
            .replace(".line of text\n", "..line of text\r\n")
            .into_bytes();
        assert_eq!(&out[..out.len() - 3], &expected[..]);
    }

    #[test]
    fn eight_bit_detection() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all("plain\nand caf\u{e9}\n".as_bytes()).unwrap();
        let ascii = MessageSource {
            file: &file,
            offset: 0,
            size: 6,
        };
        assert!(!has_8bit(&ascii).unwrap());
        let all = MessageSource { size: 15, ..ascii };
        assert!(has_8bit(&all).unwrap());
    }
}
