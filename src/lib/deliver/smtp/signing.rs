//! The DKIM signature on mail as it leaves: the client signs the message it is about to
//! send (see `crate::dkim` for why here and not in cleanup), once per delivery attempt
//! of each destination, and puts the `DKIM-Signature:` field at the top.
//!
//! Signing never stands in the way of delivery: a message that cannot be signed leaves
//! unsigned, with a warning.

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::Warnings;
use super::body::Body;
use crate::dkim::Signer;

/// Adds the signature to `body` when `signer` signs it; returns how many bytes were
/// added (for the SIZE the client announces).
pub fn sign(signer: &Signer, body: &mut Body, log: &dyn Warnings) -> usize {
    // The wire form leaves out the last line break (lettre adds it with the final dot);
    // the body hash must cover the message as the server will store it.
    let length = body.wire.len();
    body.wire.extend_from_slice(b"\r\n");
    // The canonicalisation and the PEM/DER readers are mail-auth's and ring's; a panic
    // in them on a message nobody foresaw must cost the signature, not the delivery
    // (which would otherwise be deferred again at every retry).
    let result = catch_unwind(AssertUnwindSafe(|| signer.sign(&body.wire)));
    body.wire.truncate(length);
    match result {
        Ok(Ok(Some(field))) => {
            let added = field.len();
            body.wire.splice(0..0, field);
            added
        }
        Ok(Ok(None)) => 0,
        Ok(Err(why)) => {
            log.warning(&format!("{why}; the message leaves unsigned"));
            0
        }
        Err(_) => {
            log.warning("DKIM signing failed (internal error); the message leaves unsigned");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dkim::PrivateKey;
    use crate::dkim::key::{Algorithm, generate};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Kept(Mutex<Vec<String>>);

    impl Warnings for Kept {
        fn warning(&self, text: &str) {
            self.0.lock().unwrap().push(text.to_string());
        }
    }

    #[test]
    fn the_field_goes_on_top_and_the_rest_is_untouched() {
        let pem = generate(Algorithm::Ed25519, 0).unwrap();
        let key = PrivateKey::from_pem(pem.as_bytes()).unwrap();
        let signer = Signer::with_keys("s", vec![("example.com".into(), key)]);
        let original = b"From: a@example.com\r\nSubject: x\r\n\r\nbody".to_vec();
        let mut body = Body {
            wire: original.clone(),
            eight_bit: false,
        };
        let log = Kept::default();
        let added = sign(&signer, &mut body, &log);
        assert!(added > 100);
        assert_eq!(body.wire.len(), original.len() + added);
        assert!(
            body.wire
                .starts_with(b"DKIM-Signature: v=1; a=ed25519-sha256; s=s; d=example.com;")
        );
        assert!(body.wire.ends_with(&original));
        let mut other = Body {
            wire: b"From: a@other.example\r\n\r\nbody".to_vec(),
            eight_bit: false,
        };
        assert_eq!(sign(&signer, &mut other, &log), 0);
        assert_eq!(other.wire, b"From: a@other.example\r\n\r\nbody");
        assert!(log.0.lock().unwrap().is_empty());
    }
}
