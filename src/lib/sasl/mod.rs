//! SMTP AUTH for the SMTP server: the password check is Dovecot's, through its auth
//! socket (`smtpd_sasl_type = dovecot`, the only type mailroom speaks, as most Postfix
//! installations that offer AUTH use it). mailroom never sees a password in clear: the
//! client's base64 responses go to Dovecot as they came, and only Dovecot's verdict
//! and the user name come back.
//!
//! | module | its job |
//! |---|---|
//! | [`dovecot`] | the client side of Dovecot's auth protocol (version 1) |
//! | [`settings`] | `smtpd_sasl_*` from `main.cf`: the socket, the mechanisms offered |

pub mod dovecot;
pub mod settings;

pub use settings::SaslSettings;

/// The mechanisms mailroom offers when Dovecot offers them: the two every mail client
/// speaks. Others (CRAM-MD5, SCRAM, GSSAPI) would pass through Dovecot too, but each
/// is one more exchange to get right and test, for clients that all speak PLAIN.
pub const SUPPORTED_MECHANISMS: [&str; 2] = ["PLAIN", "LOGIN"];

/// Whether `text` is base64 as a SASL exchange carries it (`=` alone: an empty
/// response, RFC 4954). Checked before anything goes to Dovecot, so that a client's
/// response can never carry a tab or a line break into the auth protocol.
pub fn is_base64(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
}

/// Postfix's `printable(text, '?')`, with a bound: what goes into a log line or a
/// header comes from Dovecot or the client, and must stay one line of plain text.
pub fn printable(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| {
            if c.is_control() || c == '\u{7f}' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_printable() {
        assert!(is_base64("AGFsaWNlAHNlY3JldA=="));
        assert!(is_base64("="));
        assert!(is_base64(""));
        assert!(!is_base64("a\tb"));
        assert!(!is_base64("abc\n"));
        assert!(!is_base64("ab c"));
        assert_eq!(printable("al\tice\u{1b}", 100), "al?ice?");
        assert_eq!(printable("abcdef", 3), "abc");
    }
}
