//! What a server's EHLO reply offers, less the keywords `smtp_discard_ehlo_keywords`
//! tells the client to act as if it had not seen (Postfix's workaround for a server
//! that announces an extension it gets wrong, a broken PIPELINING most often).
//!
//! Everything the client decides from EHLO after TLS is settled comes from here:
//! SIZE, DSN, AUTH, PIPELINING, 8BITMIME and SMTPUTF8, read from the reply to the EHLO
//! the client sends itself (lettre keeps no EHLO reply). STARTTLS is decided before
//! that, from lettre's first EHLO, with [`Discarded::keeps`].

use lettre::transport::smtp::response::Response;

/// `smtp_discard_ehlo_keywords`: keywords in capitals, and whether to log their
/// discarding (not with the `silent-discard` pseudo keyword).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discarded {
    keywords: Vec<String>,
    silent: bool,
}

impl Discarded {
    /// The parameter's list, any case. Keywords the client never uses (VRFY, ETRN...)
    /// are taken and change nothing, as in Postfix.
    pub fn parse(list: &[String]) -> Discarded {
        let mut discarded = Discarded::default();
        for word in list {
            let word = word.to_ascii_uppercase();
            if word == "SILENT-DISCARD" {
                discarded.silent = true;
            } else if !discarded.keywords.contains(&word) {
                discarded.keywords.push(word);
            }
        }
        discarded
    }

    /// Whether the client acts on `keyword` (in capitals) when the server offers it.
    pub fn keeps(&self, keyword: &str) -> bool {
        !self.keywords.iter().any(|k| k == keyword)
    }

    /// Whether a discarding is logged.
    pub fn logged(&self) -> bool {
        !self.silent
    }
}

/// What the server's EHLO reply offers, for the keywords the client acts on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// SIZE with its limit; `Some(0)` is "no limit announced".
    pub size: Option<u64>,
    pub dsn: bool,
    /// Whether AUTH is offered at all, whatever the mechanisms.
    pub auth: bool,
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
}

impl Features {
    /// The features of `reply`, without those `discarded` names; also the keywords of
    /// the reply that were discarded, in its order, for the log.
    pub fn from_ehlo(reply: &Response, discarded: &Discarded) -> (Features, Vec<String>) {
        let mut f = Features::default();
        let mut dropped = Vec::new();
        // The first line greets; each other line is a keyword and its parameters.
        for line in reply.message().skip(1) {
            let (keyword, params) = line.split_once([' ', '=']).unwrap_or((line, ""));
            let keyword = keyword.to_ascii_uppercase();
            if !discarded.keeps(&keyword) {
                if !dropped.contains(&keyword) {
                    dropped.push(keyword);
                }
                continue;
            }
            match keyword.as_str() {
                "SIZE" => f.size = Some(params.trim().parse().unwrap_or(0)),
                "DSN" => f.dsn = true,
                "AUTH" => f.auth = true,
                "PIPELINING" => f.pipelining = true,
                "8BITMIME" => f.eight_bit_mime = true,
                "SMTPUTF8" => f.smtputf8 = true,
                _ => {}
            }
        }
        (f, dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(text: &str) -> Response {
        text.parse().unwrap()
    }

    fn discard(words: &[&str]) -> Discarded {
        Discarded::parse(&words.iter().map(|w| w.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn features_from_ehlo() {
        let full = "250-mx.example\r\n250-SIZE 10240000\r\n250-STARTTLS\r\n250-auth=PLAIN\r\n\
                    250-dsn\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n";
        let (f, dropped) = Features::from_ehlo(&reply(full), &Discarded::default());
        assert_eq!(
            f,
            Features {
                size: Some(10240000),
                dsn: true,
                auth: true,
                pipelining: true,
                eight_bit_mime: true,
                smtputf8: true,
            }
        );
        assert!(dropped.is_empty());
        let (f, _) = Features::from_ehlo(&reply("250-mx.example\r\n250 SIZE\r\n"), &discard(&[]));
        assert_eq!(f.size, Some(0));
    }

    /// (discarded keywords, what is left of the full reply, what the log names)
    #[test]
    fn discarded_keywords_are_not_acted_on() {
        let full = "250-mx.example\r\n250-SIZE 1000\r\n250-STARTTLS\r\n250-AUTH PLAIN\r\n\
                    250-DSN\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n";
        let all = || Features::from_ehlo(&reply(full), &Discarded::default()).0;
        let cases: Vec<(&[&str], Features, &[&str])> = vec![
            (
                &["pipelining"],
                Features {
                    pipelining: false,
                    ..all()
                },
                &["PIPELINING"],
            ),
            (
                &["Size", "dsn", "silent-discard"],
                Features {
                    size: None,
                    dsn: false,
                    ..all()
                },
                &["SIZE", "DSN"],
            ),
            (
                &["auth", "8bitmime", "smtputf8", "starttls"],
                Features {
                    auth: false,
                    eight_bit_mime: false,
                    smtputf8: false,
                    ..all()
                },
                &["STARTTLS", "AUTH", "8BITMIME", "SMTPUTF8"],
            ),
            // Keywords the server did not offer, or the client never uses.
            (&["etrn", "vrfy"], all(), &[]),
        ];
        for (words, want, logged) in cases {
            let (got, dropped) = Features::from_ehlo(&reply(full), &discard(words));
            assert_eq!(got, want, "{words:?}");
            assert_eq!(dropped, *logged, "{words:?}");
        }
    }

    #[test]
    fn the_parameter_is_read_in_any_case_and_silent_discard_is_no_keyword() {
        let d = discard(&["Pipelining", "PIPELINING", "silent-discard"]);
        assert!(!d.keeps("PIPELINING"));
        assert!(d.keeps("STARTTLS"));
        assert!(!d.logged());
        assert!(d.keeps("SILENT-DISCARD"));
        assert!(discard(&["starttls"]).logged());
    }
}
