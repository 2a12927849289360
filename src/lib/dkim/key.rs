//! DKIM private keys: reading one from PEM (RSA in PKCS#1 or PKCS#8, Ed25519 in PKCS#8),
//! making a new one, and the public half as the DNS record publishes it.
//!
//! Every byte of cryptography and encoding comes from crates: rustls-pki-types reads the
//! PEM, ring (through mail-auth) checks and holds the key and signs, and the `rsa` crate
//! generates RSA keys (ring cannot) and writes the DER forms ring does not. `rsa`'s own
//! private-key operations, open to a timing attack (RUSTSEC-2023-0071), are never used:
//! it only makes keys and encodes them.

use std::fmt;
use std::io::Read;

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use rsa::pkcs1::{DecodeRsaPublicKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

/// The smallest and largest RSA keys `mailroom dkim keygen` makes. ring, which signs,
/// refuses keys under 2048 bits (RFC 8301 makes 1024 the floor; large mailbox providers
/// want 2048); over 4096 bits the record no longer fits the TXT sizes resolvers like.
pub const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;

/// The largest key file read: a 4096-bit RSA key in PEM is about 3.3 KB.
pub const MAX_KEY_FILE: u64 = 64 * 1024;

/// The algorithms a key signs with: `k=` of the record, `a=` of the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Rsa,
    Ed25519,
}

impl Algorithm {
    /// The record's `k=` tag value (RFC 6376 section 3.6.1, RFC 8463).
    pub fn record_name(self) -> &'static str {
        match self {
            Algorithm::Rsa => "rsa",
            Algorithm::Ed25519 => "ed25519",
        }
    }
}

/// A private key, ready to sign.
pub enum PrivateKey {
    Rsa(RsaKey<Sha256>),
    Ed25519(Ed25519Key),
}

impl fmt::Debug for PrivateKey {
    // Never the key material, even in a debug print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({})", self.algorithm().record_name())
    }
}

impl PrivateKey {
    /// Reads the first private key of a PEM text. The error says what is wrong with it,
    /// in words for a log line ("not a PEM private key", "RSA key too small"...).
    pub fn from_pem(pem: &[u8]) -> Result<PrivateKey, String> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no PEM private key in it (want BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY)"
                    .to_string()
            }
            other => format!("not a readable PEM private key: {other}"),
        })?;
        match der {
            PrivateKeyDer::Pkcs1(_) => RsaKey::<Sha256>::from_key_der(der)
                .map(PrivateKey::Rsa)
                .map_err(|e| rsa_refused(&e)),
            PrivateKeyDer::Pkcs8(ref pkcs8) => {
                // PKCS#8 holds either kind; the Ed25519 reader also takes the version 1
                // form without the public key, which is what `openssl genpkey` writes.
                match Ed25519Key::from_pkcs8_maybe_unchecked_der(pkcs8.secret_pkcs8_der()) {
                    Ok(key) => Ok(PrivateKey::Ed25519(key)),
                    Err(_) => RsaKey::<Sha256>::from_key_der(der)
                        .map(PrivateKey::Rsa)
                        .map_err(|e| rsa_refused(&e)),
                }
            }
            PrivateKeyDer::Sec1(_) => {
                Err("an EC (SEC1) key, which DKIM does not use: make an RSA or Ed25519 key".into())
            }
            _ => Err("a private key of an unknown kind".into()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            PrivateKey::Rsa(_) => Algorithm::Rsa,
            PrivateKey::Ed25519(_) => Algorithm::Ed25519,
        }
    }

    /// The public key as the record's `p=` carries it, before base64: an RSA key's
    /// SubjectPublicKeyInfo DER (what OpenDKIM and every verifier expect), the 32 bytes of
    /// an Ed25519 key (RFC 8463 section 4).
    pub fn public_key(&self) -> Result<Vec<u8>, String> {
        match self {
            // ring gives the PKCS#1 RSAPublicKey; the record wants it wrapped.
            PrivateKey::Rsa(key) => {
                let bad = |e: &dyn fmt::Display| format!("cannot encode the RSA public key: {e}");
                let public =
                    rsa::RsaPublicKey::from_pkcs1_der(&key.public_key()).map_err(|e| bad(&e))?;
                let der = public.to_public_key_der().map_err(|e| bad(&e))?;
                Ok(der.as_bytes().to_vec())
            }
            PrivateKey::Ed25519(key) => Ok(key.public_key()),
        }
    }
}

/// ring's refusal of an RSA key, in words: it says only "InvalidComponent" for a key
/// under 2048 bits.
fn rsa_refused(e: &mail_auth::Error) -> String {
    let text = e.to_string();
    if text.contains("InvalidComponent") || text.contains("TooSmall") {
        return format!(
            "RSA key refused ({text}): keys under {} bits are not used for signing",
            RSA_BITS.start()
        );
    }
    format!("not a usable RSA or Ed25519 private key: {text}")
}

/// A new private key in PEM: RSA of `bits` bits in PKCS#1 (`BEGIN RSA PRIVATE KEY`, what
/// `openssl genrsa` and opendkim-genkey write), or Ed25519 in PKCS#8 (`BEGIN PRIVATE KEY`).
pub fn generate(algorithm: Algorithm, bits: usize) -> Result<String, String> {
    match algorithm {
        Algorithm::Rsa => {
            if !RSA_BITS.contains(&bits) {
                return Err(format!(
                    "RSA keys are {} to {} bits, not {bits}",
                    RSA_BITS.start(),
                    RSA_BITS.end()
                ));
            }
            let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, bits)
                .map_err(|e| format!("cannot generate an RSA key: {e}"))?;
            let pem = key
                .to_pkcs1_pem(LineEnding::LF)
                .map_err(|e| format!("cannot encode the RSA key: {e}"))?;
            Ok(pem.as_str().to_string())
        }
        Algorithm::Ed25519 => {
            let der = Ed25519Key::generate_pkcs8()
                .map_err(|e| format!("cannot generate an Ed25519 key: {e}"))?;
            let doc = rsa::pkcs8::SecretDocument::try_from(der.as_slice())
                .map_err(|e| format!("cannot encode the Ed25519 key: {e}"))?;
            let pem = doc
                .to_pem("PRIVATE KEY", LineEnding::LF)
                .map_err(|e| format!("cannot encode the Ed25519 key: {e}"))?;
            Ok(pem.as_str().to_string())
        }
    }
}

/// Reads a key file of at most [`MAX_KEY_FILE`] bytes: the key, and the file's mode (for
/// a warning when others may read it). The error is in words for a log line.
pub fn read_file(path: &std::path::Path) -> Result<(PrivateKey, u32), String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let words = |e: std::io::Error| crate::sysexits::describe_io(&e);
    // Non-blocking: the open of a FIFO put where a key should be would otherwise wait for
    // a writer, and the agent (all remote mail with it) with it. A regular file's reads
    // do not care; anything else is refused just below.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(words)?;
    let meta = file.metadata().map_err(words)?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut pem = Vec::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut pem)
        .map_err(words)?;
    if pem.len() as u64 > MAX_KEY_FILE {
        return Err(format!("larger than {MAX_KEY_FILE} bytes, not a key"));
    }
    Ok((PrivateKey::from_pem(&pem)?, meta.mode()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_read_back_with_their_algorithm() {
        let ed = generate(Algorithm::Ed25519, 0).unwrap();
        assert!(ed.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{ed}");
        let key = PrivateKey::from_pem(ed.as_bytes()).unwrap();
        assert_eq!(key.algorithm(), Algorithm::Ed25519);
        assert_eq!(key.public_key().unwrap().len(), 32);

        let rsa = generate(Algorithm::Rsa, 2048).unwrap();
        assert!(rsa.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
        let key = PrivateKey::from_pem(rsa.as_bytes()).unwrap();
        assert_eq!(key.algorithm(), Algorithm::Rsa);
        // SubjectPublicKeyInfo of a 2048-bit key: 294 bytes.
        assert_eq!(key.public_key().unwrap().len(), 294);
        assert_eq!(format!("{key:?}"), "PrivateKey(rsa)");
    }

    #[test]
    fn pkcs8_rsa_and_openssl_style_ed25519_are_read() {
        use rsa::pkcs8::EncodePrivateKey;
        let rsa = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
        let pem = rsa.to_pkcs8_pem(LineEnding::LF).unwrap();
        let key = PrivateKey::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(key.algorithm(), Algorithm::Rsa);
        // `openssl genpkey -algorithm ed25519`: PKCS#8 version 1, no public key inside.
        let openssl = "-----BEGIN PRIVATE KEY-----\n\
                       MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n\
                       -----END PRIVATE KEY-----\n";
        let key = PrivateKey::from_pem(openssl.as_bytes()).unwrap();
        assert_eq!(key.algorithm(), Algorithm::Ed25519);
    }

    #[test]
    fn a_fifo_or_a_huge_file_is_refused_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.key");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = read_file(&fifo).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        let huge = dir.path().join("huge.key");
        std::fs::write(&huge, vec![b'A'; MAX_KEY_FILE as usize + 1]).unwrap();
        let err = read_file(&huge).unwrap_err();
        assert!(err.contains("larger than"), "{err}");
    }

    #[test]
    fn bad_keys_are_refused_in_words() {
        let cases: [(&[u8], &str); 4] = [
            (b"", "no PEM private key"),
            (b"hello\n", "no PEM private key"),
            (
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "not a usable",
            ),
            (
                b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
                "EC (SEC1)",
            ),
        ];
        for (pem, want) in cases {
            let err = PrivateKey::from_pem(pem).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
        let small = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap();
        let pem = small.to_pkcs1_pem(LineEnding::LF).unwrap();
        let err = PrivateKey::from_pem(pem.as_bytes()).unwrap_err();
        assert!(err.contains("under 2048 bits"), "{err}");
        assert!(
            generate(Algorithm::Rsa, 1024)
                .unwrap_err()
                .contains("2048 to 4096")
        );
    }
}
