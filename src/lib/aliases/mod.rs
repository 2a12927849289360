//! `aliases(5)`: parse the source file, compile it into a CDB database, look names up and
//! expand a local recipient into its final destinations.
//!
//! - [`parse`]: the source syntax, exactly as Postfix's `postalias` reads it.
//! - [`cdb`]: the database file format (D. J. Bernstein's CDB).
//! - [`database`]: compile `SOURCE` into `SOURCE.cdb` atomically; open and re-open it.
//! - [`expand`]: a local recipient → mailboxes, forwards, commands and files.
//! - [`rebuild`] and [`verify`]: `newaliases`/`sendmail -bi` and `sendmail -bv`.

pub mod cdb;
pub mod database;
pub mod expand;
pub mod parse;
pub mod rebuild;
pub mod verify;

pub use database::{AliasDb, Compiled, Privileges, compile, database_path};
pub use expand::{
    AliasMaps, AliasSource, AliasValue, Delivery, Destination, ExpandOptions, Expansion,
    ExpansionError, MemoryAliases, expand, split_extension,
};
pub use rebuild::rebuild_all;
pub use verify::{Verdict, verify};

// `newaliases`' command line, here rather than in the binary so that
// `mailroom completions` can generate its shell completions.
/// Rebuild the alias databases (same as `sendmail -bi`).
#[derive(clap::Parser, Debug)]
#[command(name = "newaliases", version)]
pub struct NewaliasesArgs {
    /// Read main.cf from DIR instead of $MAIL_CONFIG or /etc/mailroom.
    #[arg(short = 'c', value_name = "DIR")]
    pub config_dir: Option<std::path::PathBuf>,
    /// Say what was compiled (once per table, on stderr).
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub verbose: u8,
}
