//! mailroom: a sendmail-compatible mail toolset.
//!
//! Data flows one way: argv/stdin → `message` → `queue` (maildrop) → daemon → delivery,
//! with `config` (and later `aliases`) consulted on the way. Each module has one job;
//! the binaries in `src/bin/` only parse argv, call into here and map errors to exit
//! codes.

pub mod address;
pub mod aliases;
pub mod cleanup;
pub mod config;
pub mod daemon;
pub mod deliver;
pub mod dkim;
pub mod dns;
pub mod getopt;
pub mod log;
pub mod mail;
pub mod mailbox;
pub mod mailq;
pub mod message;
pub mod operator;
pub mod postsuper;
pub mod privilege;
pub mod programs;
pub mod queue;
pub mod sasl;
pub mod sendmail;
pub mod smtpd;
pub mod sysexits;
