//! The body of mail from outside, streamed line by line from the sender to the queue
//! file: never held in memory, checked against `message_size_limit` as it goes.

use std::io::{BufRead, Write};

use super::limits::SizeLimit;
use super::{Failure, Settings};
use crate::message::input::InputReader;
use crate::queue::NewQueueFile;

/// Writes the line that ended the header block (`ended_by`), then the rest of `reader`.
pub(super) fn copy_input<R: BufRead>(
    file: &mut NewQueueFile,
    ended_by: Option<Vec<u8>>,
    reader: &mut InputReader<R>,
    settings: &Settings,
) -> Result<(), Failure> {
    if let Some(first) = ended_by {
        if first != b"\n" {
            // Headers ran straight into text: keep them apart, as cleanup does.
            file.write_all(b"\n").map_err(Failure::Write)?;
        }
        file.write_all(&first).map_err(Failure::Write)?;
    }
    let limit = SizeLimit(settings.message_size_limit);
    let mut line = Vec::with_capacity(1024);
    while reader.next_line(&mut line)? {
        if settings.replace_stray_cr {
            replace_stray_cr(&mut line);
        }
        file.write_all(&line).map_err(Failure::Write)?;
        limit.check(file)?;
    }
    limit.check(file)
}

/// `cleanup_replace_stray_cr_lf`: every CR left in a line as read (CRLF endings are LF by
/// now, so each is stray) becomes a space, as Postfix's cleanup does. A server this
/// message is relayed to might read `\r.\r\n` as a line holding only a dot, the end of
/// the data, and the rest as commands: outbound SMTP smuggling.
pub(super) fn replace_stray_cr(line: &mut [u8]) {
    for byte in line.iter_mut().filter(|b| **b == b'\r') {
        *byte = b' ';
    }
}
