//! `aliases(5)`: parse the source file, compile it into a CDB database, look names up and
//! expand a local recipient into its final destinations.

pub mod cdb;
pub mod database;
pub mod expand;
pub mod parse;
pub mod rebuild;
pub mod verify;
