//! The message as lettre's `SmtpConnection::message` wants it: the queue keeps LF line
//! endings, SMTP wants CRLF. lettre does the rest of RFC 5321 section 4.5.2 itself: it
//! doubles a `.` at the start of a line and appends `CRLF . CRLF`.
//!
//! The whole message is read into memory first (lettre takes a byte slice): a queue file
//! that cannot be read then defers the mail before any connection, and never leaves a
//! partial message inside DATA.

use std::io::{self, Read};

use crate::deliver::MessageSource;

/// The message with CRLF line endings, ready for `message()`, and whether it has any
/// byte with the high bit set (then `BODY=8BITMIME`).
pub struct Body {
    pub wire: Vec<u8>,
    pub eight_bit: bool,
}

/// Reads the message and converts it. Its final line break is left out, because the
/// `CRLF . CRLF` lettre appends supplies it; a message that does not end in a line break
/// thus gets one, as SMTP requires.
pub fn load(message: &MessageSource) -> io::Result<Body> {
    let mut raw = Vec::with_capacity(message.size as usize);
    message.reader().read_to_end(&mut raw)?;
    let eight_bit = raw.iter().any(|&b| b >= 0x80);
    let mut wire = Vec::with_capacity(raw.len() + raw.len() / 32 + 2);
    let mut after_cr = false;
    for &b in &raw {
        // A CR already in front of the LF (a stored CRLF) is not doubled.
        if b == b'\n' && !after_cr {
            wire.push(b'\r');
        }
        wire.push(b);
        after_cr = b == b'\r';
    }
    if wire.ends_with(b"\r\n") {
        wire.truncate(wire.len() - 2);
    }
    Ok(Body { wire, eight_bit })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load_bytes(message: &[u8]) -> Body {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(message).unwrap();
        let source = MessageSource {
            file: &file,
            offset: 0,
            size: message.len() as u64,
        };
        load(&source).unwrap()
    }

    #[test]
    fn crlf_without_the_final_line_break() {
        // Dots are left alone: lettre stuffs them.
        assert_eq!(
            load_bytes(b"Subject: x\n\n.hidden\nend.\n.\n").wire,
            b"Subject: x\r\n\r\n.hidden\r\nend.\r\n."
        );
        assert_eq!(load_bytes(b"no newline").wire, b"no newline");
        assert_eq!(load_bytes(b"").wire, b"");
        assert_eq!(load_bytes(b"crlf\r\nkept\n").wire, b"crlf\r\nkept");
        assert_eq!(load_bytes(b"two\n\n").wire, b"two\r\n");
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
        assert!(!load(&ascii).unwrap().eight_bit);
        let all = MessageSource { size: 15, ..ascii };
        assert!(load(&all).unwrap().eight_bit);
    }
}
