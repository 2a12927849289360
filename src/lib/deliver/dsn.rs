//! Enhanced mail system status codes (RFC 3463): `class.subject.detail`, as a delivery
//! outcome carries them to the log (`dsn=5.1.1`), to `sendmail -odi` and into a bounce's
//! `Status:` field. A typed value rather than a string, so that a code is always well
//! formed and its class is asked for, not guessed from its first character.

use std::fmt;
use std::str::FromStr;

use Class::{Permanent, Success, Transient};

/// Whether a status reports success, a temporary or a permanent failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// `2.x.x`
    Success,
    /// `4.x.x`: try again later.
    Transient,
    /// `5.x.x`: will never succeed as it is.
    Permanent,
}

impl Class {
    fn digit(self) -> u8 {
        match self {
            Class::Success => 2,
            Class::Transient => 4,
            Class::Permanent => 5,
        }
    }

    /// The class of an SMTP reply code, as Postfix derives a status from a reply that
    /// has no enhanced code: 2xx succeeds, 5xx fails for good, anything else is temporary.
    pub fn of_reply(code: u16) -> Class {
        match code / 100 {
            2 => Class::Success,
            5 => Class::Permanent,
            _ => Class::Transient,
        }
    }
}

/// One enhanced status code. Subject and detail are 0 to 999 (one to three digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dsn {
    class: Class,
    subject: u16,
    detail: u16,
}

/// Why a text is not a status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseDsnError(String);

impl fmt::Display for ParseDsnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not an RFC 3463 status code: {:?}", self.0)
    }
}

impl std::error::Error for ParseDsnError {}

/// The largest subject or detail: three digits.
const MAX_PART: u16 = 999;

const fn code(class: Class, subject: u16, detail: u16) -> Dsn {
    assert!(subject <= MAX_PART && detail <= MAX_PART);
    Dsn {
        class,
        subject,
        detail,
    }
}

impl Dsn {
    /// 2.0.0: delivered.
    pub const SENT: Dsn = code(Success, 0, 0);

    /// 5.1.1: no such mailbox.
    pub const UNKNOWN_USER: Dsn = code(Permanent, 1, 1);
    /// 5.1.2: no such host.
    pub const UNKNOWN_HOST: Dsn = code(Permanent, 1, 2);
    /// 5.1.3: the recipient address is malformed.
    pub const BAD_ADDRESS: Dsn = code(Permanent, 1, 3);
    /// 5.1.7: the sender address is malformed.
    pub const BAD_SENDER: Dsn = code(Permanent, 1, 7);
    /// 5.1.10: the domain publishes a null MX (RFC 7505).
    pub const NULL_MX: Dsn = code(Permanent, 1, 10);

    /// 4.2.0: the mailbox cannot take mail now (locked, busy).
    pub const MAILBOX_BUSY: Dsn = code(Transient, 2, 0);
    /// 4.2.2: the mailbox is over its quota.
    pub const OVER_QUOTA: Dsn = code(Transient, 2, 2);
    /// 5.2.0: the mailbox is unusable (not a regular file, wrong owner, ...).
    pub const MAILBOX_UNUSABLE: Dsn = code(Permanent, 2, 0);
    /// 5.2.2: the mailbox is full for good (larger than a file may be).
    pub const MAILBOX_FULL: Dsn = code(Permanent, 2, 2);

    /// 4.3.0: a temporary failure of the mail system here.
    pub const TEMP_LOCAL: Dsn = code(Transient, 3, 0);
    /// 5.3.0: a permanent failure of the mail system here.
    pub const SYSTEM_ERROR: Dsn = code(Permanent, 3, 0);
    /// 5.3.4: the message is larger than the receiver accepts.
    pub const TOO_BIG: Dsn = code(Permanent, 3, 4);
    /// 4.3.5: the mail system is not configured to deliver this (for now).
    pub const TEMP_CONFIG: Dsn = code(Transient, 3, 5);
    /// 5.3.5: the mail system is wrongly configured.
    pub const CONFIG_ERROR: Dsn = code(Permanent, 3, 5);

    /// 4.4.1: no answer from the host.
    pub const NO_ANSWER: Dsn = code(Transient, 4, 1);
    /// 4.4.2: the connection broke or timed out.
    pub const BAD_CONNECTION: Dsn = code(Transient, 4, 2);
    /// 4.4.3: a name service failure.
    pub const DNS_TEMP: Dsn = code(Transient, 4, 3);
    /// 4.4.4: no route (for now).
    pub const NO_ROUTE_TEMP: Dsn = code(Transient, 4, 4);
    /// 5.4.4: no route: the host does not exist.
    pub const NO_ROUTE: Dsn = code(Permanent, 4, 4);
    /// 5.4.6: a routing loop.
    pub const LOOP: Dsn = code(Permanent, 4, 6);

    /// 4.5.0: the server's answer broke the protocol.
    pub const PROTOCOL_TEMP: Dsn = code(Transient, 5, 0);
    /// 5.5.0: a protocol error.
    pub const PROTOCOL_ERROR: Dsn = code(Permanent, 5, 0);
    /// 5.5.3: too many recipients.
    pub const TOO_MANY_RECIPIENTS: Dsn = code(Permanent, 5, 3);

    /// 5.6.0: the content cannot be handled.
    pub const MEDIA_ERROR: Dsn = code(Permanent, 6, 0);
    /// 5.6.7: non-ASCII addresses, and the receiver lacks SMTPUTF8.
    pub const NO_SMTPUTF8: Dsn = code(Permanent, 6, 7);

    /// 4.7.0: a security failure (authentication), for now.
    pub const SECURITY_TEMP: Dsn = code(Transient, 7, 0);
    /// 5.7.0: permission denied.
    pub const PERMISSION_DENIED: Dsn = code(Permanent, 7, 0);
    /// 5.7.1: delivery to this destination is not allowed.
    pub const NOT_AUTHORIZED: Dsn = code(Permanent, 7, 1);
    /// 4.7.4: a required security feature (TLS) is missing.
    pub const NO_TLS: Dsn = code(Transient, 7, 4);
    /// 4.7.5: a cryptographic failure (the TLS handshake).
    pub const CRYPTO_FAILURE: Dsn = code(Transient, 7, 5);

    /// A code from its parts; `None` when subject or detail has more than three digits.
    pub fn new(class: Class, subject: u16, detail: u16) -> Option<Dsn> {
        (subject <= MAX_PART && detail <= MAX_PART).then_some(Dsn {
            class,
            subject,
            detail,
        })
    }

    /// `X.0.0`: the code of a class and nothing more, as for an SMTP reply without an
    /// enhanced code.
    pub fn of_class(class: Class) -> Dsn {
        Dsn {
            class,
            subject: 0,
            detail: 0,
        }
    }

    pub fn class(self) -> Class {
        self.class
    }

    pub fn subject(self) -> u16 {
        self.subject
    }

    pub fn detail(self) -> u16 {
        self.detail
    }

    pub fn is_permanent(self) -> bool {
        self.class == Class::Permanent
    }

    pub fn is_transient(self) -> bool {
        self.class == Class::Transient
    }

    /// The same code as a temporary failure: `5.7.8` becomes `4.7.8`. A deferral never
    /// carries a 5.x.x code.
    pub fn softened(self) -> Dsn {
        match self.class {
            Class::Permanent => Dsn {
                class: Class::Transient,
                ..self
            },
            _ => self,
        }
    }
}

impl fmt::Display for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class.digit(), self.subject, self.detail)
    }
}

impl FromStr for Dsn {
    type Err = ParseDsnError;

    /// Exactly `class.subject.detail`: class 2, 4 or 5, subject and detail of one to
    /// three digits each (RFC 3463), nothing before or after. Leading zeros are read as
    /// numbers (`5.01.1` is `5.1.1`), since the RFC's grammar allows them.
    fn from_str(text: &str) -> Result<Dsn, ParseDsnError> {
        let refuse = || ParseDsnError(text.to_string());
        let mut parts = text.split('.');
        let class = match parts.next() {
            Some("2") => Class::Success,
            Some("4") => Class::Transient,
            Some("5") => Class::Permanent,
            _ => return Err(refuse()),
        };
        let mut number = || -> Result<u16, ParseDsnError> {
            let part = parts.next().ok_or_else(refuse)?;
            if !(1..=3).contains(&part.len()) || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(refuse());
            }
            part.parse().map_err(|_| refuse())
        };
        let subject = number()?;
        let detail = number()?;
        if parts.next().is_some() {
            return Err(refuse());
        }
        Ok(Dsn {
            class,
            subject,
            detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_the_same_code() {
        let table = [
            ("2.0.0", Class::Success, 0, 0),
            ("4.3.0", Class::Transient, 3, 0),
            ("5.1.1", Class::Permanent, 1, 1),
            ("5.1.10", Class::Permanent, 1, 10),
            ("4.999.999", Class::Transient, 999, 999),
            ("5.0.0", Class::Permanent, 0, 0),
        ];
        for (text, class, subject, detail) in table {
            let dsn: Dsn = text.parse().unwrap();
            assert_eq!(
                (dsn.class(), dsn.subject(), dsn.detail()),
                (class, subject, detail),
                "{text}"
            );
            assert_eq!(dsn.to_string(), text);
            assert_eq!(Dsn::new(class, subject, detail), Some(dsn));
        }
    }

    #[test]
    fn leading_zeros_are_numbers() {
        let dsn: Dsn = "5.01.001".parse().unwrap();
        assert_eq!(dsn, Dsn::UNKNOWN_USER);
        assert_eq!(dsn.to_string(), "5.1.1");
    }

    #[test]
    fn refuses_what_is_not_a_status_code() {
        for text in [
            "", "x", "5", "5.1", "5.1.", ".1.1", "5..1", "5.1.1.1", "3.1.1", "1.0.0", "6.0.0",
            "05.1.1", "5.1.1234", "5.1234.1", "5.1.1 ", " 5.1.1", "5.1.-1", "5.1.+1", "5.a.1",
            "5.1.1a", "5,1,1", "５.1.1", "5.1.1\n",
        ] {
            assert!(text.parse::<Dsn>().is_err(), "{text:?}");
        }
        assert_eq!(
            "5.1".parse::<Dsn>().unwrap_err().to_string(),
            "not an RFC 3463 status code: \"5.1\""
        );
    }

    #[test]
    fn bounds() {
        assert!(Dsn::new(Class::Permanent, 1000, 0).is_none());
        assert!(Dsn::new(Class::Permanent, 0, 1000).is_none());
        assert!(Dsn::new(Class::Permanent, 999, 999).is_some());
    }

    #[test]
    fn classes() {
        assert!(Dsn::UNKNOWN_USER.is_permanent());
        assert!(Dsn::TEMP_LOCAL.is_transient());
        assert!(!Dsn::SENT.is_permanent() && !Dsn::SENT.is_transient());
        assert_eq!(Class::of_reply(250), Class::Success);
        assert_eq!(Class::of_reply(550), Class::Permanent);
        assert_eq!(Class::of_reply(451), Class::Transient);
        assert_eq!(Class::of_reply(354), Class::Transient);
        assert_eq!(Dsn::of_class(Class::Permanent).to_string(), "5.0.0");
    }

    #[test]
    fn softened_keeps_subject_and_detail() {
        let auth: Dsn = "5.7.8".parse().unwrap();
        assert_eq!(auth.softened().to_string(), "4.7.8");
        assert_eq!(Dsn::TEMP_LOCAL.softened(), Dsn::TEMP_LOCAL);
        assert_eq!(Dsn::SENT.softened(), Dsn::SENT);
    }

    #[test]
    fn named_codes_read_as_their_names_say() {
        for (dsn, text) in [
            (Dsn::SENT, "2.0.0"),
            (Dsn::UNKNOWN_USER, "5.1.1"),
            (Dsn::NULL_MX, "5.1.10"),
            (Dsn::TEMP_LOCAL, "4.3.0"),
            (Dsn::LOOP, "5.4.6"),
            (Dsn::NOT_AUTHORIZED, "5.7.1"),
        ] {
            assert_eq!(dsn.to_string(), text);
        }
    }
}
