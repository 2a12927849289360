//! Size limits on mail from outside (`sendmail`'s input, SMTP DATA). The mail system's
//! own messages are not limited: a bounce or a resubmitted copy of a message that was
//! accepted must be written even if the headers added to it push it over.
//!
//! `message_size_limit` counts the message as written to the queue file, added headers
//! included, as Postfix's cleanup does; [`InputReader`](crate::message::input::InputReader)
//! stops reading a sender who goes far past it. A header field longer than
//! `header_size_limit` is cut ([`super::headers::read_headers`]).

use super::Failure;
use crate::queue::NewQueueFile;

/// `message_size_limit`; 0 means none.
#[derive(Debug, Clone, Copy)]
pub(super) struct SizeLimit(pub(super) u64);

impl SizeLimit {
    /// Fails when what `file` holds so far is over the limit.
    pub(super) fn check(self, file: &NewQueueFile) -> Result<(), Failure> {
        match self.0 {
            0 => Ok(()),
            limit if file.message_bytes() > limit => Err(Failure::TooBig { limit }),
            _ => Ok(()),
        }
    }
}
