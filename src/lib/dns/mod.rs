//! DNS as mailroom asks it: which name servers (`dns_nameservers`, [`servers`]) and the
//! lookups of the DNS checker and of mail authentication ([`lookup`]), through hickory.
//!
//! One hickory lives in the build: hickory-resolver 0.26 as mail-auth carries it
//! (`mail_auth::hickory_resolver`). SPF, DKIM and DMARC go through mail-auth, the DNS
//! checker through [`lookup::Lookup`], and the SMTP client's MX and address lookups
//! (`deliver::smtp::dns`) through a resolver of its own; all are configured by
//! [`lookup::resolver_config`] from the one list parsed here, so every lookup asks the
//! same servers with the same options; only the wait for each query differs (3 seconds
//! for the checker and Authentication-Results, 5 for the SMTP client, which can wait).

pub mod lookup;
pub mod servers;

pub use lookup::{Answer, Lookup};
