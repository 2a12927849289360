//! The DNS record that publishes a DKIM public key, as one line of a zone file:
//!
//! ```text
//! mail._domainkey.example.com. IN TXT "v=DKIM1; k=rsa; p=MIIBIjANBgkq..." "...IDAQAB"
//! ```
//!
//! A TXT record is made of character strings of at most 255 bytes each (RFC 1035 section
//! 3.3); a 2048-bit RSA key alone is about 400 characters of base64, so the value is cut
//! into strings of 255 and the verifier joins them again (RFC 6376 section 3.6.2.2). One
//! line, so that it pastes into a zone file or a provider's web form as it is.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::key::Algorithm;

/// The longest character string of a TXT record.
pub const MAX_STRING: usize = 255;

/// The name the record lives at: `SELECTOR._domainkey.DOMAIN.`, fully qualified.
pub fn record_name(selector: &str, domain: &str) -> String {
    format!("{selector}._domainkey.{}.", domain.trim_end_matches('.'))
}

/// The record's text, before it is cut into strings: `v=DKIM1; k=ALG; p=BASE64`.
pub fn record_value(algorithm: Algorithm, public_key: &[u8]) -> String {
    format!(
        "v=DKIM1; k={}; p={}",
        algorithm.record_name(),
        STANDARD.encode(public_key)
    )
}

/// The whole zone-file line.
pub fn zone_line(selector: &str, domain: &str, algorithm: Algorithm, public_key: &[u8]) -> String {
    let value = record_value(algorithm, public_key);
    format!(
        "{} IN TXT {}",
        record_name(selector, domain),
        quoted_strings(&value)
    )
}

/// `value` as quoted character strings of at most [`MAX_STRING`] bytes each, separated
/// by one space. The value is ASCII without quotes or backslashes (tags and base64), so
/// nothing needs escaping and every cut falls between characters.
fn quoted_strings(value: &str) -> String {
    value
        .as_bytes()
        .chunks(MAX_STRING)
        .map(|chunk| format!("\"{}\"", String::from_utf8_lossy(chunk)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_value_is_one_string() {
        let line = zone_line("ed", "Example.org.", Algorithm::Ed25519, &[0u8; 32]);
        assert_eq!(
            line,
            "ed._domainkey.Example.org. IN TXT \
             \"v=DKIM1; k=ed25519; p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\""
        );
    }

    #[test]
    fn a_long_value_is_cut_into_strings_of_255_on_one_line() {
        let key = vec![0xA5u8; 294];
        let line = zone_line("mail", "example.com", Algorithm::Rsa, &key);
        assert!(!line.contains('\n'));
        let (name, rest) = line.split_once(" IN TXT ").unwrap();
        assert_eq!(name, "mail._domainkey.example.com.");
        let strings: Vec<&str> = rest.split(' ').collect();
        // The value's own spaces sit inside the first string: rejoin on quotes instead.
        let parts: Vec<&str> = rest
            .split('"')
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, s)| s)
            .collect();
        assert!(strings.len() > 2);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].len(), MAX_STRING);
        assert!(parts[1].len() <= MAX_STRING);
        assert_eq!(parts.concat(), record_value(Algorithm::Rsa, &key));
        assert!(parts.concat().starts_with("v=DKIM1; k=rsa; p=paWl"));
    }
}
