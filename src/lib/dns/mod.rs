//! DNS as mailroom asks it: which name servers (`dns_nameservers`, [`servers`]) and the
//! lookups of the DNS checker and of mail authentication ([`lookup`]), through hickory.
//!
//! Two hickory versions live in the build: the SMTP client's MX and address lookups use
//! hickory-resolver 0.25 (`deliver::smtp::dns`), while SPF, DKIM and DMARC go through
//! mail-auth, which brings its own 0.26. Both are configured from the one list parsed
//! here, so every lookup asks the same servers.

pub mod lookup;
pub mod servers;

pub use lookup::{Answer, Lookup};
