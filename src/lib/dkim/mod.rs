//! DKIM signing of mail that leaves over SMTP (RFC 6376; Ed25519 from RFC 8463), and the
//! key files and DNS records behind it.
//!
//! Jobs: `key` (read, make and describe private keys), `sign` (which messages get a
//! `DKIM-Signature:` and the signing itself), `record` (the TXT record to publish).
//! `mailroom dkim keygen|record` is in `operator::dkim`.
//!
//! # Where signing happens, and why there
//!
//! DESIGN.md puts DKIM signing in cleanup, the one way into the queue. It is done in the
//! SMTP client instead (`deliver::smtp`, in the `mailroom smtp-agent` processes), for
//! three reasons. The keys are root's, mode 0600, and no cleanup path runs as root: the
//! set-gid `sendmail` and the SMTP sessions (`mail_owner`) could not read them, while an
//! agent reads them at its start, before it becomes `mail_owner`, and keeps them in
//! memory. Only mail that leaves needs a signature: local deliveries stay as they were.
//! And a key replaced (a rotated selector, a `mailroom reload`) applies to mail already
//! queued, not only to mail that arrives afterwards. The cost is one signature per
//! delivery attempt of each destination (about 0.5 ms with RSA-2048, 0.05 ms with
//! Ed25519), which a retry of a deferred message pays again.
//!
//! # Parameters (mailroom's own)
//!
//! `dkim_selector` (empty: no signing), `dkim_domains` (default `$mydomain`: a message is
//! signed when the domain of its `From:` address is one of these) and
//! `dkim_key_directory` (default `$config_directory/dkim`), which holds the key of
//! DOMAIN for SELECTOR as `DOMAIN.SELECTOR.key`.

pub mod key;
pub mod record;
pub mod sign;

use std::path::PathBuf;

use crate::config::Config;
use crate::sysexits::{Error, Result};

pub use key::{Algorithm, PrivateKey};
pub use sign::Signer;

/// The selector `mailroom dkim keygen` uses when `dkim_selector` is empty.
pub const DEFAULT_SELECTOR: &str = "mail";

/// The DKIM parameters of `main.cf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Empty: signing is off.
    pub selector: String,
    /// Lower-cased, without a final dot.
    pub domains: Vec<String>,
    pub key_directory: PathBuf,
}

impl Settings {
    pub fn from_config(config: &Config) -> Result<Settings> {
        let selector = config.get("dkim_selector")?.trim().to_string();
        if !selector.is_empty() {
            check_name("dkim_selector", &selector).map_err(Error::config)?;
        }
        let domains = config
            .list("dkim_domains")?
            .iter()
            .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .collect();
        Ok(Settings {
            selector,
            domains,
            key_directory: PathBuf::from(config.get("dkim_key_directory")?),
        })
    }

    /// Whether any mail is signed at all.
    pub fn enabled(&self) -> bool {
        !self.selector.is_empty()
    }

    /// The key file of `domain` for `selector`: `DOMAIN.SELECTOR.key` in the key directory.
    /// Both names become part of a path, so each must be a plain DNS name: an error says
    /// why not.
    pub fn key_path(&self, domain: &str, selector: &str) -> std::result::Result<PathBuf, String> {
        check_name("domain", domain)?;
        check_name("selector", selector)?;
        Ok(self
            .key_directory
            .join(format!("{}.{selector}.key", domain.trim_end_matches('.'))))
    }
}

/// A domain or selector must be DNS labels (letters, digits, `-`, `_`) joined by dots:
/// nothing else can be in a DNS name a verifier looks up, and nothing else may go into a
/// file name (no `/`, no `..`, no leading dot).
pub fn check_name(what: &str, name: &str) -> std::result::Result<(), String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "{what} {name:?} is not a DNS name (letters, digits, - and _ in dot-separated labels)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn settings(text: &str) -> Result<Settings> {
        let config = Config::from_text(
            &format!("myhostname = mx.example.com\n{text}\n"),
            Path::new("/etc/mailroom/main.cf"),
        );
        Settings::from_config(&config)
    }

    #[test]
    fn defaults_sign_nothing_and_name_mydomain() {
        let s = settings("").unwrap();
        assert!(!s.enabled());
        assert_eq!(s.domains, ["example.com"]);
        assert_eq!(s.key_directory, Path::new("/etc/mailroom/dkim"));
        let s = settings("dkim_selector = s1\ndkim_domains = Example.ORG., b.example").unwrap();
        assert!(s.enabled());
        assert_eq!(s.domains, ["example.org", "b.example"]);
        assert_eq!(
            s.key_path("example.org", "s1").unwrap(),
            Path::new("/etc/mailroom/dkim/example.org.s1.key")
        );
    }

    #[test]
    fn names_that_could_leave_the_directory_are_refused() {
        let s = settings("dkim_selector = s1").unwrap();
        for bad in [
            "../etc",
            "a/b",
            ".hidden",
            "a..b",
            "",
            "sp ace",
            "é.example",
        ] {
            assert!(s.key_path(bad, "s1").is_err(), "{bad}");
            assert!(s.key_path("example.org", bad).is_err(), "{bad}");
        }
        assert!(s.key_path("example.org.", "2024-01._x").is_ok());
        assert_eq!(settings("dkim_selector = a/b").unwrap_err().code(), 78);
    }
}
