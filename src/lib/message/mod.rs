//! A message as submitted: reading it from stdin ([`input`]) and its header block
//! ([`headers`]), and the dates written into headers ([`date`]). Completing and queueing
//! it is [`crate::cleanup`]'s job.

pub mod date;
pub mod headers;
pub mod input;
