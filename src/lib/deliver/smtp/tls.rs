//! STARTTLS policy (`smtp_tls_security_level`) and the rustls client configurations it
//! needs.
//!
//! | level | STARTTLS | certificate |
//! |---|---|---|
//! | empty, `none` | never | — |
//! | `may` | when offered; a failed handshake is retried in plain text | not checked |
//! | `encrypt` | required, else the mail waits | not checked |
//! | `verify`, `secure`, `dane-only` | required | checked against the trusted roots and the server's name |
//! | `dane` | as `may` | not checked |
//!
//! `dane` is what Postfix does for a destination without DNSSEC-signed TLSA records
//! (opportunistic TLS); mailroom cannot validate DNSSEC, so it always takes that path.
//! Treating it as `verify` would make mail to any server with a self-signed certificate
//! bounce after `maximal_queue_lifetime`, which Postfix does not do.

use std::io;
use std::net::{IpAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// What `smtp_tls_security_level` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    None,
    May,
    Encrypt,
    Verify,
}

impl Level {
    pub fn parse(value: &str) -> Result<Level, String> {
        match value.to_ascii_lowercase().as_str() {
            "" | "none" => Ok(Level::None),
            "may" | "dane" => Ok(Level::May),
            "encrypt" => Ok(Level::Encrypt),
            "verify" | "secure" | "dane-only" => Ok(Level::Verify),
            other => Err(format!("invalid TLS security level \"{other}\"")),
        }
    }

    /// Whether mail must not go out unencrypted.
    pub fn required(self) -> bool {
        matches!(self, Level::Encrypt | Level::Verify)
    }
}

/// The policy and the rustls configuration it uses.
#[derive(Clone)]
pub struct TlsPolicy {
    pub level: Level,
    config: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for TlsPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPolicy")
            .field("level", &self.level)
            .finish()
    }
}

impl TlsPolicy {
    /// `ca_file`: `smtp_tls_CAfile`, the PEM certificates trusted by `verify`; empty means
    /// the built-in Mozilla root store. As Postfix's default `tls_append_default_CA = no`,
    /// a CA file replaces the built-in roots rather than adding to them.
    pub fn new(level: Level, ca_file: &str) -> Result<TlsPolicy, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?;
        let config = match level {
            Level::None => None,
            Level::May | Level::Encrypt => Some(
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                    .with_no_client_auth(),
            ),
            Level::Verify => {
                let roots = root_store(ca_file)?;
                Some(builder.with_root_certificates(roots).with_no_client_auth())
            }
        };
        Ok(TlsPolicy {
            level,
            config: config.map(Arc::new),
        })
    }

    /// Runs the TLS handshake over `tcp` for server `host`, connected at `ip`.
    pub fn handshake(
        &self,
        tcp: TcpStream,
        host: &str,
        ip: IpAddr,
    ) -> Result<rustls::StreamOwned<ClientConnection, TcpStream>, HandshakeError> {
        let config = self
            .config
            .clone()
            .ok_or(HandshakeError::Other("TLS is disabled".into()))?;
        // Verify against the name we looked up; an address literal has no name.
        let name = match host.parse::<IpAddr>() {
            Ok(_) => ServerName::IpAddress(ip.into()),
            Err(_) => {
                ServerName::try_from(host.to_string()).unwrap_or(ServerName::IpAddress(ip.into()))
            }
        };
        let conn = ClientConnection::new(config, name)
            .map_err(|e| HandshakeError::Other(e.to_string()))?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            if let Err(err) = stream.conn.complete_io(&mut stream.sock) {
                return Err(HandshakeError::from_io(err));
            }
        }
        Ok(stream)
    }
}

/// Why a handshake failed.
#[derive(Debug)]
pub enum HandshakeError {
    /// The server's certificate was not accepted (`verify`).
    Certificate(String),
    /// The connection broke or timed out during the handshake.
    Io(io::Error),
    /// Any other TLS failure (no common cipher, protocol error).
    Other(String),
}

impl HandshakeError {
    fn from_io(err: io::Error) -> HandshakeError {
        let tls = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match tls {
            Some(rustls::Error::InvalidCertificate(reason)) => {
                HandshakeError::Certificate(format!("{reason:?}"))
            }
            Some(other) => HandshakeError::Other(other.to_string()),
            None => HandshakeError::Io(err),
        }
    }
}

fn root_store(ca_file: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    if ca_file.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(roots);
    }
    let certs = CertificateDer::pem_file_iter(Path::new(ca_file))
        .map_err(|e| format!("smtp_tls_CAfile {ca_file}: {e}"))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("smtp_tls_CAfile {ca_file}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("smtp_tls_CAfile {ca_file}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("smtp_tls_CAfile {ca_file}: no certificates"));
    }
    Ok(roots)
}

/// Accepts any certificate: opportunistic and `encrypt` TLS protect against passive
/// listeners only, exactly as in Postfix, where only `verify`/`secure` check the server.
/// Handshake signatures are still checked, so the session keys are the server's.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn policies_build() {
        assert!(TlsPolicy::new(Level::Verify, "").unwrap().config.is_some());
        assert!(TlsPolicy::new(Level::May, "").unwrap().config.is_some());
        assert!(TlsPolicy::new(Level::None, "").unwrap().config.is_none());
        assert!(TlsPolicy::new(Level::Verify, "/nonexistent/ca.pem").is_err());
    }
}
