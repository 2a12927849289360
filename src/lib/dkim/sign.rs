//! Which messages get a `DKIM-Signature:`, and the signature itself (mail-auth does the
//! canonicalisation, hashing and encoding).
//!
//! A message is signed when its one `From:` field names addresses of one domain, that
//! domain has a key, and no `DKIM-Signature:` of that domain is on it yet (mail passed
//! through twice, or signed by the program that wrote it, keeps the signature it has).
//! The signature is relaxed/relaxed (it survives the re-folding and white-space changes
//! of relays), carries `d=` the From domain and `s=` the selector, and covers those of
//! [`SIGNED_HEADERS`] the message has; none is listed that is absent, so that a list
//! server adding `Reply-To:` or `Cc:` on the way does not break it.

use std::collections::BTreeMap;

use mail_auth::AuthenticatedMessage;
use mail_auth::common::crypto;
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::DkimSigner;

use super::Settings;
use super::key::PrivateKey;
use crate::address;

/// The header fields signed when present, in the order `h=` names them.
pub const SIGNED_HEADERS: [&str; 11] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Reply-To",
    "In-Reply-To",
    "References",
];

/// The keys of the signing domains, read once (as root, before the agent gives up its
/// privileges) and kept in memory.
#[derive(Debug)]
pub struct Signer {
    selector: String,
    /// Lower-cased domain to its key.
    keys: BTreeMap<String, PrivateKey>,
}

impl Signer {
    /// Reads the key of each of `dkim_domains`; `None` when signing is off or no key could
    /// be used. A key that cannot be read or used is one call of `warn`, and mail of its
    /// domain leaves unsigned.
    pub fn load(settings: &Settings, warn: &dyn Fn(&str)) -> Option<Signer> {
        if !settings.enabled() {
            return None;
        }
        let mut keys = BTreeMap::new();
        for domain in &settings.domains {
            let unsigned = format!("mail from {domain} leaves unsigned");
            let path = match settings.key_path(domain, &settings.selector) {
                Ok(path) => path,
                Err(why) => {
                    warn(&format!("dkim_domains: {why}; {unsigned}"));
                    continue;
                }
            };
            match super::key::read_file(&path) {
                Ok((key, mode)) => {
                    if mode & 0o077 != 0 {
                        // Used all the same: refusing it would only unsign the mail,
                        // and the key is out already.
                        warn(&format!(
                            "DKIM key {} is readable by others than its owner (mode {:04o}): chmod 600 it",
                            path.display(),
                            mode & 0o7777
                        ));
                    }
                    keys.insert(domain.clone(), key);
                }
                Err(why) => warn(&format!("DKIM key {}: {why}; {unsigned}", path.display())),
            }
        }
        // Without a key nothing is signed: spare each message the parse that would find
        // that out again on every delivery attempt.
        if keys.is_empty() {
            return None;
        }
        Some(Signer {
            selector: settings.selector.clone(),
            keys,
        })
    }

    /// A signer with the keys given (tests, the benchmark).
    pub fn with_keys(selector: &str, keys: Vec<(String, PrivateKey)>) -> Signer {
        Signer {
            selector: selector.to_string(),
            keys: keys
                .into_iter()
                .map(|(d, k)| (d.to_ascii_lowercase(), k))
                .collect(),
        }
    }

    /// The `DKIM-Signature:` field for `message` (its header and body, lines ended by
    /// CRLF as they go on the wire), itself ended by CRLF; `Ok(None)` when the message is
    /// not to be signed; an error (for a warning) when signing failed.
    pub fn sign(&self, message: &[u8]) -> Result<Option<Vec<u8>>, String> {
        // mail-auth's reader of the header: the same one its signer then uses.
        let Some(parsed) = AuthenticatedMessage::parse(message) else {
            return Ok(None);
        };
        let Some(domain) = signing_domain(&parsed) else {
            return Ok(None);
        };
        let Some(key) = self.keys.get(&domain) else {
            return Ok(None);
        };
        if signed_by(&parsed, &domain) {
            return Ok(None);
        }
        let present: Vec<&str> = SIGNED_HEADERS
            .iter()
            .copied()
            .filter(|name| parsed.headers.iter().any(|(n, _)| is(n, name)))
            .collect();
        let selector = &self.selector;
        let signature = match key {
            PrivateKey::Rsa(k) => sign_with(Borrowed(k), &domain, selector, &present, message),
            PrivateKey::Ed25519(k) => sign_with(Borrowed(k), &domain, selector, &present, message),
        };
        signature.map(Some)
    }
}

/// Whether a field's name (as read, white space around it possible) is `name`.
fn is(field: &[u8], name: &str) -> bool {
    field.trim_ascii().eq_ignore_ascii_case(name.as_bytes())
}

fn sign_with<K: crypto::SigningKey>(
    key: K,
    domain: &str,
    selector: &str,
    headers: &[&str],
    message: &[u8],
) -> Result<Vec<u8>, String> {
    let signature = DkimSigner::from_key(key)
        .domain(domain)
        .selector(selector)
        .headers(headers.iter().copied())
        .sign(message)
        .map_err(|e| format!("DKIM signing failed for {domain}: {e}"))?;
    let mut field = Vec::with_capacity(512);
    signature.write_header(&mut field);
    Ok(field)
}

/// A key lent to mail-auth's signer, which wants to own one; ring's keys cannot be
/// copied, and are kept for the life of the process.
struct Borrowed<'a, K>(&'a K);

impl<K: crypto::SigningKey> crypto::SigningKey for Borrowed<'_, K> {
    type Hasher = K::Hasher;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn algorithm(&self) -> crypto::Algorithm {
        self.0.algorithm()
    }
}

/// The domain of the message's `From:` addresses, lower-cased: `None` unless there is
/// exactly one `From:` field and all its addresses are of one domain (RFC 5322 allows
/// several authors; a signature can speak for one domain only).
fn signing_domain(parsed: &AuthenticatedMessage<'_>) -> Option<String> {
    if parsed.headers.iter().filter(|(n, _)| is(n, "From")).count() != 1 {
        return None;
    }
    let mut domains = parsed.from.iter().map(|a| address::domain_of(a));
    let first = domains.next()??;
    domains
        .all(|d| d.as_deref() == Some(first.as_str()))
        .then_some(first)
}

/// Whether a `DKIM-Signature:` of `domain` is on the message already.
fn signed_by(parsed: &AuthenticatedMessage<'_>, domain: &str) -> bool {
    parsed.dkim_headers.iter().any(|h| {
        h.header
            .as_ref()
            .is_ok_and(|s| s.d.trim_end_matches('.').eq_ignore_ascii_case(domain))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dkim::key::{Algorithm, generate};

    fn signer() -> Signer {
        let pem = generate(Algorithm::Ed25519, 0).unwrap();
        let key = PrivateKey::from_pem(pem.as_bytes()).unwrap();
        Signer::with_keys("sel", vec![("Example.com".into(), key)])
    }

    fn field(message: &str) -> Option<String> {
        let message = message.replace('\n', "\r\n");
        signer()
            .sign(message.as_bytes())
            .unwrap()
            .map(|f| String::from_utf8(f).unwrap())
    }

    #[test]
    fn signs_the_present_headers_of_a_from_domain_with_a_key() {
        let f = field(
            "From: \"A. Person\" <a@EXAMPLE.com>\nTo: b@elsewhere.example\n\
             Subject: hi\nX-Other: 1\n\nbody\n",
        )
        .unwrap();
        assert!(
            f.starts_with(
                "DKIM-Signature: v=1; a=ed25519-sha256; s=sel; d=example.com; c=relaxed/relaxed;"
            ),
            "{f}"
        );
        assert!(f.ends_with("\r\n"));
        let h = f.split("h=").nth(1).unwrap().split(';').next().unwrap();
        let names: Vec<String> = h
            .split(':')
            .map(|n| n.trim().to_ascii_lowercase())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, ["from", "subject", "to"], "{f}");
    }

    #[test]
    fn leaves_alone_what_is_not_ours_or_already_signed() {
        for message in [
            "From: a@other.example\n\nbody\n",
            "To: b@example.com\n\nno from\n",
            "From: a@example.com, c@other.example\n\ntwo domains\n",
            "From: a@example.com\nFrom: b@example.com\n\ntwo fields\n",
            "From: undisclosed\n\nno address\n",
            "\n\nno header at all\n",
            "",
        ] {
            assert_eq!(field(message), None, "{message:?}");
        }
        let once = field("From: a@example.com\n\nbody\n").unwrap();
        let again = format!("{once}From: a@example.com\r\n\r\nbody\r\n");
        assert_eq!(signer().sign(again.as_bytes()).unwrap(), None);
        // Another domain's signature is no reason not to add ours.
        let theirs = once.replace("d=example.com", "d=list.example");
        let relayed = format!("{theirs}From: a@example.com\r\n\r\nbody\r\n");
        assert!(signer().sign(relayed.as_bytes()).unwrap().is_some());
    }

    #[test]
    fn garbage_never_panics() {
        let s = signer();
        for junk in [
            &b"From: a@example.com\r\n\xff\xfe: \x00\r\n\r\n"[..],
            b"From:\r\n",
            b"From: a@example.com",
            b":::\r\nFrom: <@example.com>\r\n\r\n",
            b"From: a@example.com\r\n DKIM-Signature: d=\r\n\r\n",
        ] {
            let _ = s.sign(junk);
        }
    }

    #[test]
    fn missing_and_bad_keys_are_warnings() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.example.s.key"), "not a key").unwrap();
        std::fs::create_dir(dir.path().join("dir.example.s.key")).unwrap();
        let open = dir.path().join("open.example.s.key");
        std::fs::write(&open, generate(Algorithm::Ed25519, 0).unwrap()).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let settings = Settings {
            selector: "s".into(),
            domains: vec![
                "missing.example".into(),
                "bad.example".into(),
                "dir.example".into(),
                "open.example".into(),
            ],
            key_directory: dir.path().to_path_buf(),
        };
        let warnings = std::cell::RefCell::new(Vec::new());
        let signer = Signer::load(&settings, &|w: &str| {
            warnings.borrow_mut().push(w.to_string())
        })
        .unwrap();
        // A key others can read is still used, with a warning.
        assert_eq!(signer.keys.keys().collect::<Vec<_>>(), ["open.example"]);
        let warnings = warnings.into_inner();
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert!(
            warnings[2].contains("not a regular file"),
            "{}",
            warnings[2]
        );
        assert!(
            warnings[3].ends_with("(mode 0644): chmod 600 it"),
            "{}",
            warnings[3]
        );
        assert!(
            warnings[0].contains("missing.example.s.key: No such file"),
            "{}",
            warnings[0]
        );
        assert!(warnings[0].ends_with("mail from missing.example leaves unsigned"));
        assert!(
            warnings[1].contains("no PEM private key"),
            "{}",
            warnings[1]
        );
        let off = Settings {
            selector: String::new(),
            ..settings
        };
        assert!(Signer::load(&off, &|_: &str| panic!("no warning when off")).is_none());
        let keyless = Settings {
            selector: "s".into(),
            domains: vec!["missing.example".into()],
            ..off
        };
        let warned = std::cell::Cell::new(0);
        assert!(Signer::load(&keyless, &|_: &str| warned.set(warned.get() + 1)).is_none());
        assert_eq!(warned.get(), 1, "the missing key is still a warning");
    }
}
