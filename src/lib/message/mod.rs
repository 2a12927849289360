//! A message as submitted: reading it from stdin ([`input`]) and its header block
//! ([`headers`]), and the dates written into headers ([`date`]). Completing and queueing
//! it is [`crate::submit`]'s job.

pub mod date;
pub mod headers;
pub mod input;
