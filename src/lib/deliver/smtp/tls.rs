//! STARTTLS policy (`smtp_tls_security_level`), turned into lettre's [`TlsParameters`]
//! for each server.
//!
//! | level | STARTTLS | certificate |
//! |---|---|---|
//! | `none` | never | — |
//! | `may`, and unset (mailroom's default; Postfix's is `none`) | when offered; a failed handshake is retried in plain text | not checked |
//! | `encrypt` | required, else the mail waits | not checked |
//! | `verify`, `secure`, `dane-only` | required | checked against the trusted roots and the server's name |
//! | `dane` | as `may` | not checked |
//!
//! With `smtp_tls_wrappermode = yes` TLS is always used (there is no plain text to fall
//! back to); the level only says whether the certificate is checked.
//!
//! `dane` is what Postfix does for a destination without DNSSEC-signed TLSA records
//! (opportunistic TLS); mailroom cannot validate DNSSEC, so it always takes that path.
//! Treating it as `verify` would make mail to any server with a self-signed certificate
//! bounce after `maximal_queue_lifetime`, which Postfix does not do.

use std::net::IpAddr;
use std::sync::Arc;

use lettre::transport::smtp::client::{
    Certificate, CertificateStore, TlsParameters, TlsParametersBuilder,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, RootCertStore};

/// Why the client's TLS policy or a connection's TLS parameters could not be set up.
#[derive(Debug)]
pub enum TlsError {
    /// `smtp_tls_security_level` names no level.
    UnknownLevel(String),
    /// `smtp_tls_CAfile` cannot be read.
    CaFileUnreadable(String, std::io::Error),
    /// `smtp_tls_CAfile` holds something that is not a PEM certificate.
    CaFileBad(String, String),
    /// `smtp_tls_CAfile` holds no certificate.
    CaFileEmpty(String),
    /// lettre refused the parameters.
    Setup(lettre::transport::smtp::Error),
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsError::UnknownLevel(level) => write!(f, "invalid TLS security level \"{level}\""),
            TlsError::CaFileUnreadable(path, e) => write!(
                f,
                "smtp_tls_CAfile {path}: {}",
                crate::sysexits::describe_io(e)
            ),
            TlsError::CaFileBad(path, why) => write!(f, "smtp_tls_CAfile {path}: {why}"),
            TlsError::CaFileEmpty(path) => write!(f, "smtp_tls_CAfile {path}: no certificates"),
            TlsError::Setup(e) => write!(f, "TLS setup: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// What `smtp_tls_security_level` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    None,
    May,
    Encrypt,
    Verify,
}

impl Level {
    pub fn parse(value: &str) -> Result<Level, TlsError> {
        match value.to_ascii_lowercase().as_str() {
            "" | "none" => Ok(Level::None),
            "may" | "dane" => Ok(Level::May),
            "encrypt" => Ok(Level::Encrypt),
            "verify" | "secure" | "dane-only" => Ok(Level::Verify),
            other => Err(TlsError::UnknownLevel(other.to_string())),
        }
    }

    /// Whether mail must not go out unencrypted.
    pub fn required(self) -> bool {
        matches!(self, Level::Encrypt | Level::Verify)
    }
}

/// The policy, with the CA certificates `verify` trusts.
#[derive(Clone)]
pub struct TlsPolicy {
    pub level: Level,
    /// `smtp_tls_CAfile`, read once; `None` means lettre's built-in Mozilla roots
    /// (webpki-roots, with the `rustls-tls` feature).
    ca: Option<Certificate>,
    /// For the levels that check nothing: `smtp_tls_CAfile`'s certificates, only to
    /// tell a Trusted connection from an Untrusted one in the log, as Postfix does.
    judge: Option<Arc<WebPkiServerVerifier>>,
}

impl std::fmt::Debug for TlsPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPolicy")
            .field("level", &self.level)
            .field("ca_file", &self.ca.is_some())
            .finish()
    }
}

impl TlsPolicy {
    /// `ca_file`: `smtp_tls_CAfile`, the PEM certificates trusted by `verify`; empty means
    /// the built-in Mozilla root store. As Postfix's default `tls_append_default_CA = no`,
    /// a CA file replaces the built-in roots rather than adding to them. Only `verify`
    /// reads it (the other levels check no certificate); for it, a file that cannot be
    /// read or holds no certificate is an error.
    pub fn new(level: Level, ca_file: &str) -> Result<TlsPolicy, TlsError> {
        let ca = match (level, ca_file) {
            (Level::Verify, path) if !path.is_empty() => Some(read_ca_file(path)?),
            _ => None,
        };
        // A file that cannot be used only makes every connection Untrusted: for these
        // levels it decides nothing else.
        let judge = match (level, ca_file) {
            (Level::May | Level::Encrypt, path) if !path.is_empty() => judge(path),
            _ => None,
        };
        Ok(TlsPolicy { level, ca, judge })
    }

    /// How Postfix's "... TLS connection established" line names the connection to
    /// `host` at `ip` whose server sent `chain` (leaf first): `Verified` when the level
    /// checked the certificate and its name; for the other levels, `Trusted` when it
    /// chains to a CA of `smtp_tls_CAfile` (its name not considered, as Postfix does
    /// not at these levels), else `Untrusted`.
    pub fn trust(&self, host: &str, ip: IpAddr, chain: &[Vec<u8>]) -> &'static str {
        if self.level == Level::Verify {
            return "Verified";
        }
        let (Some(judge), Some((leaf, rest))) = (&self.judge, chain.split_first()) else {
            return "Untrusted";
        };
        let name = match ServerName::try_from(host) {
            Ok(name) => name.to_owned(),
            Err(_) => ServerName::IpAddress(ip.into()),
        };
        let leaf = CertificateDer::from(leaf.as_slice());
        let rest: Vec<CertificateDer> = rest
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        match judge.verify_server_cert(&leaf, &rest, &name, &[], UnixTime::now()) {
            Ok(_) => "Trusted",
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => "Trusted",
            Err(_) => "Untrusted",
        }
    }

    /// Whether [`TlsPolicy::trust`] needs the server's certificate chain.
    pub fn judges(&self) -> bool {
        self.judge.is_some()
    }

    /// lettre's TLS parameters for server `host`, connected at `ip`: certificates
    /// unchecked for `may`/`encrypt` (name included: an MX host's certificate rarely
    /// names it), checked against the roots and the name for `verify`.
    pub fn parameters(&self, host: &str, ip: IpAddr) -> Result<TlsParameters, TlsError> {
        // Verify against the name we looked up; lettre takes an address literal (or a
        // name rustls cannot use) as an IP address.
        let name = match ServerName::try_from(host) {
            Ok(_) => host.to_string(),
            Err(_) => ip.to_string(),
        };
        // lettre builds on the default provider: make it the one that notes the cipher.
        super::negotiated::install();
        let mut builder = TlsParametersBuilder::new(name);
        builder = match self.level {
            Level::None | Level::May | Level::Encrypt => builder
                .dangerous_accept_invalid_certs(true)
                .dangerous_accept_invalid_hostnames(true),
            Level::Verify => match &self.ca {
                Some(ca) => builder
                    .certificate_store(CertificateStore::None)
                    .add_root_certificate(ca.clone()),
                None => builder.certificate_store(CertificateStore::Default),
            },
        };
        builder.build().map_err(TlsError::Setup)
    }
}

/// A verifier of chains to the CAs in `path`, if it holds any.
fn judge(path: &str) -> Option<Arc<WebPkiServerVerifier>> {
    let pem = std::fs::read(path).ok()?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let _ = roots.add(cert.ok()?);
    }
    if roots.is_empty() {
        return None;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .ok()
}

fn read_ca_file(path: &str) -> Result<Certificate, TlsError> {
    let bad = |e: &dyn std::fmt::Display| TlsError::CaFileBad(path.to_string(), e.to_string());
    let pem = std::fs::read(path).map_err(|e| TlsError::CaFileUnreadable(path.to_string(), e))?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| bad(&e))?;
        count += 1;
    }
    if count == 0 {
        return Err(TlsError::CaFileEmpty(path.to_string()));
    }
    Certificate::from_pem(&pem).map_err(|e| bad(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_which_setting_and_why() {
        let missing = TlsPolicy::new(Level::Verify, "/nonexistent/ca.pem").err();
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let empty = empty.to_str().unwrap().to_string();
        let cases = [
            (
                Level::parse("sometimes").err(),
                "invalid TLS security level \"sometimes\"".to_string(),
            ),
            (
                missing,
                "smtp_tls_CAfile /nonexistent/ca.pem: No such file or directory".to_string(),
            ),
            (
                TlsPolicy::new(Level::Verify, &empty).err(),
                format!("smtp_tls_CAfile {empty}: no certificates"),
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got.map(|e| e.to_string()).as_deref(), Some(want.as_str()));
        }
        // Only verify reads the file.
        assert!(TlsPolicy::new(Level::May, "/nonexistent/ca.pem").is_ok());
    }

    #[test]
    fn levels_as_postfix_names_them() {
        assert_eq!(Level::parse("").unwrap(), Level::None);
        assert_eq!(Level::parse("none").unwrap(), Level::None);
        assert_eq!(Level::parse("MAY").unwrap(), Level::May);
        assert_eq!(Level::parse("dane").unwrap(), Level::May);
        assert_eq!(Level::parse("encrypt").unwrap(), Level::Encrypt);
        assert_eq!(Level::parse("secure").unwrap(), Level::Verify);
        assert_eq!(Level::parse("verify").unwrap(), Level::Verify);
        assert!(Level::parse("sometimes").is_err());
        assert!(Level::Encrypt.required() && !Level::May.required());
    }

    #[test]
    fn trust_as_postfix_words_it() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let verify = TlsPolicy::new(Level::Verify, "").unwrap();
        assert_eq!(verify.trust("mx.example", ip, &[]), "Verified");
        // No CA file: nothing to trust (Postfix's default says Untrusted too).
        let may = TlsPolicy::new(Level::May, "").unwrap();
        assert!(!may.judges());
        assert_eq!(
            may.trust("mx.example", ip, &[b"junk".to_vec()]),
            "Untrusted"
        );
        // An unusable CA file only means Untrusted.
        let may = TlsPolicy::new(Level::May, "/nonexistent/ca.pem").unwrap();
        assert!(!may.judges());
    }

    #[test]
    fn policies_build() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for level in [Level::May, Level::Encrypt, Level::Verify] {
            let policy = TlsPolicy::new(level, "").unwrap();
            let params = policy.parameters("mx.example.net", ip).unwrap();
            assert_eq!(params.domain(), "mx.example.net");
            let params = policy.parameters("not a name", ip).unwrap();
            assert_eq!(params.domain(), "192.0.2.1");
        }
        assert!(TlsPolicy::new(Level::Verify, "/nonexistent/ca.pem").is_err());
        let empty = tempfile::NamedTempFile::new().unwrap();
        let path = empty.path().to_str().unwrap();
        assert!(TlsPolicy::new(Level::Verify, path).is_err());
    }
}
