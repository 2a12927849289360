//! Mailboxes on disk, shared by delivery and by the `mail` reader: the mbox format
//! ([`mbox`]), the lock protocol both sides take before changing an mbox ([`lock`]), and
//! Maildir ([`maildir`]).

pub mod lock;
pub mod maildir;
pub mod mbox;
