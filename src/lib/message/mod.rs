//! A message as submitted: reading it from stdin ([`input`]) and its header block
//! ([`headers`]). Completing and queueing it is [`crate::submit`]'s job.

pub mod headers;
pub mod input;
