//! What a TLS connection negotiated (protocol version and cipher), for the log line
//! Postfix writes once TLS is up: `Untrusted TLS connection established to
//! mx.example[192.0.2.1]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`.
//!
//! lettre keeps its rustls connection to itself, so the negotiated cipher suite cannot be
//! asked for. But lettre builds its TLS configuration from the process's default rustls
//! crypto provider when one is installed. [`install`] installs ring's provider with each
//! cipher suite's AEAD wrapped: rustls asks the chosen suite for its record encrypter
//! once the suite is settled, and the wrapper notes that suite for the calling thread.
//! The handshake runs in the thread that talks SMTP (lettre is synchronous), so
//! [`take`] right after it reads what that connection chose. The cryptography itself is
//! ring's, untouched.

use std::cell::Cell;
use std::sync::Once;

use rustls::crypto::CryptoProvider;
use rustls::crypto::cipher::{
    AeadKey, Iv, KeyBlockShape, MessageDecrypter, MessageEncrypter, Tls12AeadAlgorithm,
    Tls13AeadAlgorithm, UnsupportedOperationError,
};
use rustls::{
    CipherSuite, CipherSuiteCommon, ConnectionTrafficSecrets, SupportedCipherSuite,
    Tls12CipherSuite, Tls13CipherSuite,
};

thread_local! {
    static CHOSEN: Cell<Option<(CipherSuite, bool)>> = const { Cell::new(None) };
}

/// The protocol and cipher of a connection, as Postfix words them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// `TLSv1.3` or `TLSv1.2`.
    pub protocol: &'static str,
    /// The IANA name (for TLS 1.3 also OpenSSL's, which Postfix logs).
    pub cipher: String,
    /// The symmetric key's strength in bits.
    pub bits: u16,
}

impl std::fmt::Display for Negotiated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} with cipher {} ({}/{} bits)",
            self.protocol, self.cipher, self.bits, self.bits
        )
    }
}

/// Installs the noting provider as the process default, once. If another default is
/// installed already, lettre uses that one and [`take`] finds nothing.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = CryptoProvider::install_default(noting_provider());
    });
}

/// Forgets what the thread's last connection chose (before a new handshake).
pub fn clear() {
    CHOSEN.with(|c| c.set(None));
}

/// What the thread's last handshake chose, if it got that far.
pub fn take() -> Option<Negotiated> {
    let (suite, tls13) = CHOSEN.with(|c| c.take())?;
    let name = suite
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{suite:?}"));
    // rustls calls the TLS 1.3 suites TLS13_*; their IANA (and OpenSSL) names, which
    // Postfix logs, are TLS_*.
    let cipher = match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    };
    // AES-128 is the only 128-bit cipher rustls offers; AES-256 and ChaCha20 are 256.
    let bits = if cipher.contains("AES_128") { 128 } else { 256 };
    Some(Negotiated {
        protocol: if tls13 { "TLSv1.3" } else { "TLSv1.2" },
        cipher,
        bits,
    })
}

fn note(suite: CipherSuite, tls13: bool) {
    CHOSEN.with(|c| c.set(Some((suite, tls13))));
}

/// ring's provider with every cipher suite's AEAD wrapped to note its use. The suites
/// must live for the whole process (rustls takes `&'static`), and are made once.
fn noting_provider() -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = provider
        .cipher_suites
        .iter()
        .map(|suite| match suite {
            SupportedCipherSuite::Tls13(s) => SupportedCipherSuite::Tls13(leak(Tls13CipherSuite {
                common: common(&s.common),
                hkdf_provider: s.hkdf_provider,
                aead_alg: leak(Noting::new(s.common.suite, s.aead_alg)),
                quic: s.quic,
            })),
            SupportedCipherSuite::Tls12(s) => SupportedCipherSuite::Tls12(leak(Tls12CipherSuite {
                common: common(&s.common),
                prf_provider: s.prf_provider,
                kx: s.kx,
                sign: s.sign,
                aead_alg: leak(Noting::new(s.common.suite, s.aead_alg)),
            })),
        })
        .collect();
    provider
}

/// Made once per suite at [`install`], kept for the life of the process.
fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}

fn common(c: &CipherSuiteCommon) -> CipherSuiteCommon {
    CipherSuiteCommon {
        suite: c.suite,
        hash_provider: c.hash_provider,
        confidentiality_limit: c.confidentiality_limit,
    }
}

/// A suite's AEAD (`A` is rustls's TLS 1.2 or 1.3 AEAD trait) that notes the suite when
/// a connection asks it for its record encrypter.
struct Noting<A: ?Sized + 'static> {
    suite: CipherSuite,
    inner: &'static A,
}

impl<A: ?Sized> Noting<A> {
    fn new(suite: CipherSuite, inner: &'static A) -> Noting<A> {
        Noting { suite, inner }
    }
}

impl Tls13AeadAlgorithm for Noting<dyn Tls13AeadAlgorithm> {
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        note(self.suite, true);
        self.inner.encrypter(key, iv)
    }
    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        self.inner.decrypter(key, iv)
    }
    fn key_len(&self) -> usize {
        self.inner.key_len()
    }
    fn extract_keys(
        &self,
        key: AeadKey,
        iv: Iv,
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        self.inner.extract_keys(key, iv)
    }
    fn fips(&self) -> bool {
        self.inner.fips()
    }
}

impl Tls12AeadAlgorithm for Noting<dyn Tls12AeadAlgorithm> {
    fn encrypter(&self, key: AeadKey, iv: &[u8], extra: &[u8]) -> Box<dyn MessageEncrypter> {
        note(self.suite, false);
        self.inner.encrypter(key, iv, extra)
    }
    fn decrypter(&self, key: AeadKey, iv: &[u8]) -> Box<dyn MessageDecrypter> {
        self.inner.decrypter(key, iv)
    }
    fn key_block_shape(&self) -> KeyBlockShape {
        self.inner.key_block_shape()
    }
    fn extract_keys(
        &self,
        key: AeadKey,
        iv: &[u8],
        explicit: &[u8],
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        self.inner.extract_keys(key, iv, explicit)
    }
    fn fips(&self) -> bool {
        self.inner.fips()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worded_as_postfix_words_it() {
        note(CipherSuite::TLS13_AES_256_GCM_SHA384, true);
        let got = take().unwrap();
        assert_eq!(
            got.to_string(),
            "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
        );
        assert_eq!(take(), None, "taken once");
        note(CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, false);
        assert_eq!(take().unwrap().bits, 128);
    }

    #[test]
    fn the_provider_keeps_every_suite() {
        let ring = rustls::crypto::ring::default_provider();
        let noting = noting_provider();
        let names = |p: &CryptoProvider| -> Vec<CipherSuite> {
            p.cipher_suites.iter().map(|s| s.suite()).collect()
        };
        assert_eq!(names(&ring), names(&noting));
    }
}
