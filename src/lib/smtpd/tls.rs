//! The server side of STARTTLS: the certificate and key from `smtpd_tls_cert_file` and
//! `smtpd_tls_key_file`, with rustls and its ring provider (no OpenSSL needed).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why the server's certificate could not be loaded; it names the file.
#[derive(Debug)]
pub enum TlsLoadError {
    /// The certificate file could not be read or is not PEM.
    Certificate(PathBuf, rustls_pki_types::pem::Error),
    /// The certificate file holds no certificate.
    NoCertificate(PathBuf),
    /// The key file could not be read, is not PEM or holds no private key.
    Key(PathBuf, rustls_pki_types::pem::Error),
    /// rustls refused the protocol versions (a build without them).
    Protocols(rustls::Error),
    /// rustls refused the pair (the key does not match, an unsupported algorithm).
    Pair(PathBuf, rustls::Error),
    /// `smtpd_tls_cert_file` is empty: there is nothing to load.
    NoCertFile,
}

impl std::fmt::Display for TlsLoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsLoadError::Certificate(path, e) => write!(f, "{}: {e}", path.display()),
            TlsLoadError::NoCertificate(path) => {
                write!(f, "{}: no certificate found", path.display())
            }
            TlsLoadError::Key(path, e) => write!(f, "{}: {e}", path.display()),
            TlsLoadError::Protocols(e) => write!(f, "{e}"),
            TlsLoadError::Pair(path, e) => write!(f, "{}: {e}", path.display()),
            TlsLoadError::NoCertFile => write!(f, "smtpd_tls_cert_file is empty"),
        }
    }
}

impl std::error::Error for TlsLoadError {}

/// Loads the certificate and key that main.cf names (`smtpd_tls_cert_file`, and
/// `smtpd_tls_key_file` or the certificate's file when it is empty): the one reading of
/// them for STARTTLS, the submission port and SMTPS, each of which words the failure.
pub fn from_config(
    config: &crate::config::Config,
) -> crate::sysexits::Result<Result<Arc<ServerConfig>, TlsLoadError>> {
    let cert = config.get("smtpd_tls_cert_file")?;
    if cert.trim().is_empty() {
        return Ok(Err(TlsLoadError::NoCertFile));
    }
    let key = config.get("smtpd_tls_key_file")?;
    let key = if key.trim().is_empty() { &cert } else { &key };
    Ok(load(Path::new(&cert), Path::new(key)))
}

/// Loads a PEM certificate chain and its private key. The error says which file and why.
pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, TlsLoadError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsLoadError::Certificate(cert_file.to_path_buf(), e))?;
    if certs.is_empty() {
        return Err(TlsLoadError::NoCertificate(cert_file.to_path_buf()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| TlsLoadError::Key(key_file.to_path_buf(), e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsLoadError::Protocols)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsLoadError::Pair(cert_file.to_path_buf(), e))?;
    Ok(Arc::new(config))
}
