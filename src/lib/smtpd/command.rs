//! SMTP commands (RFC 5321 section 4.1) and the ESMTP parameters we support: `SIZE`
//! (RFC 1870) and `BODY` (RFC 6152). Parsing is as lenient as Postfix's where real
//! clients differ (a space after `FROM:`, a missing pair of angle brackets) and strict
//! where the result ends up in the queue (addresses must be well formed).

use super::reply::{self, Reply};
use crate::address;

/// A command line that parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    Mail {
        /// The reverse-path without brackets; empty for `<>`.
        sender: String,
        /// `SIZE=`: the client's estimate, checked against the limit before any data.
        size: Option<u64>,
        body: Body,
        /// `AUTH=` (RFC 4954 section 5): the identity a relaying client says the
        /// message was submitted by; every one given (the session refuses two).
        auth: Vec<String>,
    },
    Rcpt {
        recipient: String,
    },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy(String),
    Help,
    StartTls,
    /// `AUTH mechanism [initial-response]`: the words after AUTH, checked by the
    /// session in Postfix's order (whether AUTH is on comes before the syntax).
    Auth(Vec<String>),
}

/// `BODY=`: we store 8-bit text unchanged either way; the value is only checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    SevenBit,
    EightBitMime,
}

/// The command's name as Postfix's statistics on the `disconnect` log line spell it
/// (`ehlo=1 mail=1 ...`), `unknown` for anything else.
pub fn stat_name(line: &[u8]) -> &'static str {
    let verb = verb_of(line);
    const NAMES: [&str; 12] = [
        "helo", "ehlo", "mail", "rcpt", "data", "rset", "noop", "quit", "vrfy", "help", "starttls",
        "auth",
    ];
    NAMES
        .into_iter()
        .find(|n| verb.eq_ignore_ascii_case(n.as_bytes()))
        .unwrap_or("unknown")
}

fn verb_of(line: &[u8]) -> &[u8] {
    let end = line.iter().position(|&c| c == b' ').unwrap_or(line.len());
    &line[..end]
}

/// Parses one command line (its CRLF or LF already removed). The error is the reply to
/// send.
pub fn parse(line: &[u8]) -> Result<Command, Reply> {
    let verb = verb_of(line);
    let rest = &line[verb.len()..];
    let arg = trim(rest);
    let is = |name: &str| verb.eq_ignore_ascii_case(name.as_bytes());
    if is("EHLO") || is("HELO") {
        if arg.is_empty() {
            let usage = if is("EHLO") {
                "EHLO hostname"
            } else {
                "HELO hostname"
            };
            return Err(Reply::new(501, format!("Syntax: {usage}")));
        }
        let name = sanitize_helo(arg);
        return Ok(if is("EHLO") {
            Command::Ehlo(name)
        } else {
            Command::Helo(name)
        });
    }
    // An address that `address::validate` refuses, malformed or over RFC 5321's lengths
    // (320 bytes in all; a longer local part than RFC 5321's 64 is taken, as VERP and SRS
    // senders have them, and only never looked up as a user name), gets what Postfix's smtpd answers to any
    // address its `extract_addr` cannot take (smtpd.c, `mail_cmd` and `rcpt_cmd`):
    // `501 5.1.7 Bad sender address syntax` / `501 5.1.3 Bad recipient address syntax`.
    // Postfix itself bounds addresses only by its 2048-byte command line; the tighter
    // bound keeps megabyte names away from user lookups and out of the queue.
    if is("MAIL") {
        let Some(path) = strip_keyword(arg, b"FROM:") else {
            return Err(reply::syntax("MAIL FROM:<address>"));
        };
        let (sender, params) = split_path(path).ok_or_else(reply::bad_sender)?;
        if !sender.is_empty() {
            address::validate(&sender).map_err(|_| reply::bad_sender())?;
        }
        let (size, body, auth) = mail_params(params)?;
        return Ok(Command::Mail {
            sender,
            size,
            body,
            auth,
        });
    }
    if is("RCPT") {
        let Some(path) = strip_keyword(arg, b"TO:") else {
            return Err(reply::syntax("RCPT TO:<address>"));
        };
        let (recipient, params) = split_path(path).ok_or_else(reply::bad_recipient)?;
        if recipient.is_empty() || address::validate(&recipient).is_err() {
            return Err(reply::bad_recipient());
        }
        if let Some(param) = words(params).next() {
            return Err(reply::unsupported_option(&keyword_of(param)));
        }
        return Ok(Command::Rcpt { recipient });
    }
    let bare = |cmd: Command, usage: &str| {
        if arg.is_empty() {
            Ok(cmd)
        } else {
            Err(reply::syntax(usage))
        }
    };
    if is("DATA") {
        return bare(Command::Data, "DATA");
    }
    if is("RSET") {
        return bare(Command::Rset, "RSET");
    }
    if is("QUIT") {
        return bare(Command::Quit, "QUIT");
    }
    if is("STARTTLS") {
        return bare(Command::StartTls, "STARTTLS");
    }
    if is("AUTH") {
        let words = arg
            .split(|&c| c == b' ')
            .filter(|w| !w.is_empty())
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        return Ok(Command::Auth(words));
    }
    if is("NOOP") {
        // RFC 5321 allows (and ignores) an argument.
        return Ok(Command::Noop);
    }
    if is("HELP") {
        return Ok(Command::Help);
    }
    if is("VRFY") {
        if arg.is_empty() {
            return Err(reply::syntax("VRFY address"));
        }
        let what = match split_path(arg) {
            Some((a, rest)) if !a.is_empty() && trim(rest).is_empty() => a,
            _ => return Err(reply::bad_recipient()),
        };
        address::validate(&what).map_err(|_| reply::bad_recipient())?;
        return Ok(Command::Vrfy(what));
    }
    Err(reply::not_recognized())
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end.max(start)]
}

/// `FROM:` or `TO:`, case-insensitive, with the white space some clients put after it.
fn strip_keyword<'a>(arg: &'a [u8], keyword: &[u8]) -> Option<&'a [u8]> {
    if arg.len() < keyword.len() || !arg[..keyword.len()].eq_ignore_ascii_case(keyword) {
        return None;
    }
    Some(trim(&arg[keyword.len()..]))
}

/// Splits `<address> PARAMS` into the address (source route dropped) and the rest. A
/// path without brackets runs to the first space, as Postfix accepts it.
fn split_path(path: &[u8]) -> Option<(String, &[u8])> {
    let (inner, rest) = if path.first() == Some(&b'<') {
        let close = closing_bracket(path)?;
        (&path[1..close], &path[close + 1..])
    } else {
        let end = path.iter().position(|&c| c == b' ').unwrap_or(path.len());
        (&path[..end], &path[end..])
    };
    if !rest.is_empty() && rest[0] != b' ' {
        return None;
    }
    // An obsolete source route (<@a,@b:user@c>): only the mailbox counts (RFC 5321 C).
    let inner = match inner.first() {
        Some(b'@') => &inner[inner.iter().position(|&c| c == b':')? + 1..],
        _ => inner,
    };
    let text = std::str::from_utf8(inner).ok()?;
    if text.bytes().any(|c| c < b' ' || c == 0x7f) {
        return None;
    }
    Some((text.to_string(), rest))
}

/// The `>` that closes the path, skipping quoted strings (`<"a>b"@x>`).
fn closing_bracket(path: &[u8]) -> Option<usize> {
    let mut quoted = false;
    let mut i = 1;
    while i < path.len() {
        match path[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'>' if !quoted => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

fn words(params: &[u8]) -> impl Iterator<Item = &[u8]> {
    params.split(|&c| c == b' ').filter(|w| !w.is_empty())
}

fn keyword_of(param: &[u8]) -> String {
    let end = param.iter().position(|&c| c == b'=').unwrap_or(param.len());
    String::from_utf8_lossy(&param[..end]).into_owned()
}

fn mail_params(params: &[u8]) -> Result<(Option<u64>, Body, Vec<String>), Reply> {
    let mut size = None;
    let mut body = Body::SevenBit;
    let mut auth = Vec::new();
    for param in words(params) {
        let keyword = keyword_of(param);
        let value = param.get(keyword.len() + 1..).unwrap_or(b"");
        if keyword.eq_ignore_ascii_case("SIZE") {
            let text = std::str::from_utf8(value).map_err(|_| reply::bad_size())?;
            if text.is_empty() || !text.bytes().all(|c| c.is_ascii_digit()) {
                return Err(reply::bad_size());
            }
            // A number too large for u64 is certainly over any limit.
            size = Some(text.parse().unwrap_or(u64::MAX));
        } else if keyword.eq_ignore_ascii_case("BODY") {
            body = if value.eq_ignore_ascii_case(b"8BITMIME") {
                Body::EightBitMime
            } else if value.eq_ignore_ascii_case(b"7BIT") {
                Body::SevenBit
            } else {
                return Err(reply::bad_body());
            };
        } else if keyword.eq_ignore_ascii_case("AUTH") {
            // xtext (RFC 3461): printable ASCII; kept only for the log, made printable.
            auth.push(
                value
                    .iter()
                    .map(|&c| if c.is_ascii_graphic() { c as char } else { '?' })
                    .collect(),
            );
        } else {
            return Err(reply::unsupported_option(&keyword));
        }
    }
    Ok((size, body, auth))
}

/// The HELO name goes into a `Received:` header: printable ASCII only, bounded.
fn sanitize_helo(arg: &[u8]) -> String {
    arg.iter()
        .take(255)
        .map(|&c| match c {
            0x21..=0x7e if c != b'(' && c != b')' => c as char,
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Command, Reply> {
        parse(line.as_bytes())
    }

    #[test]
    fn mail_from_with_parameters() {
        assert_eq!(
            p("MAIL FROM:<a@b.org> SIZE=1000 BODY=8BITMIME"),
            Ok(Command::Mail {
                sender: "a@b.org".into(),
                size: Some(1000),
                body: Body::EightBitMime,
                auth: vec![],
            })
        );
        assert_eq!(
            p("mail from: <>"),
            Ok(Command::Mail {
                sender: "".into(),
                size: None,
                body: Body::SevenBit,
                auth: vec![],
            })
        );
        assert_eq!(
            p("MAIL FROM:bare@x.org"),
            Ok(Command::Mail {
                sender: "bare@x.org".into(),
                size: None,
                body: Body::SevenBit,
                auth: vec![],
            })
        );
        assert!(p("MAIL FROM:<a@b> BODY=7bit").is_ok());
        assert!(matches!(
            p("MAIL FROM:<a@b> AUTH=<> auth=x\u{7}y"),
            Ok(Command::Mail { auth, .. }) if auth == ["<>", "x?y"]
        ));
        assert_eq!(p("MAIL FROM:<a@b> SIZE=x"), Err(reply::bad_size()));
        assert_eq!(p("MAIL FROM:<a@b> BODY=BINARYMIME"), Err(reply::bad_body()));
        assert_eq!(
            p("MAIL FROM:<a@b> RET=FULL"),
            Err(reply::unsupported_option("RET"))
        );
        assert_eq!(
            p("MAIL TO:<a@b>"),
            Err(reply::syntax("MAIL FROM:<address>"))
        );
        assert_eq!(p("MAIL FROM:<a@b"), Err(reply::bad_sender()));
        assert_eq!(p("MAIL FROM:<alice@>"), Err(reply::bad_sender()));
        assert!(matches!(
            p("MAIL FROM:<a@b> SIZE=99999999999999999999999"),
            Ok(Command::Mail {
                size: Some(u64::MAX),
                ..
            })
        ));
    }

    #[test]
    fn rcpt_to() {
        assert_eq!(
            p("RCPT TO:<alice>"),
            Ok(Command::Rcpt {
                recipient: "alice".into()
            })
        );
        assert_eq!(
            p("RCPT TO:<@relay.org:bob@x.org>"),
            Ok(Command::Rcpt {
                recipient: "bob@x.org".into()
            })
        );
        assert_eq!(
            p("rcpt to:<\"a b\"@x.org>"),
            Ok(Command::Rcpt {
                recipient: "\"a b\"@x.org".into()
            })
        );
        for bad in [
            "RCPT TO:<a b@localhost>",
            "RCPT TO:<alice@>",
            "RCPT TO:<>",
            "RCPT TO:<a@b>x",
            "RCPT TO:<a\u{1}@b>",
        ] {
            assert_eq!(p(bad), Err(reply::bad_recipient()), "{bad}");
        }
        assert_eq!(
            p("RCPT TO:<a@b> NOTIFY=NEVER"),
            Err(reply::unsupported_option("NOTIFY"))
        );
        assert_eq!(p("RCPT <a@b>"), Err(reply::syntax("RCPT TO:<address>")));
        assert_eq!(parse(b"RCPT TO:<\xff@b>"), Err(reply::bad_recipient()));
    }

    #[test]
    fn addresses_over_rfc_5321_lengths_are_bad_syntax() {
        let long_domain = format!("b@{}.org", "d".repeat(314));
        // (address, within the bounds): 320 bytes in all, whatever the local part.
        let table = [
            (format!("{}@x.org", "a".repeat(64)), true),
            (format!("{}@x.org", "a".repeat(100)), true),
            (format!("{}@x.org", "a".repeat(315)), false),
            ("a".repeat(320), true),
            ("a".repeat(321), false),
            (long_domain.clone(), true),
            (format!("{long_domain}x"), false),
        ];
        assert_eq!(long_domain.len(), 320);
        for (address, ok) in table {
            let mail = p(&format!("MAIL FROM:<{address}>"));
            let rcpt = p(&format!("RCPT TO:<{address}>"));
            let vrfy = p(&format!("VRFY <{address}>"));
            if ok {
                assert!(mail.is_ok() && rcpt.is_ok() && vrfy.is_ok(), "{address}");
            } else {
                assert_eq!(mail, Err(reply::bad_sender()), "{address}");
                assert_eq!(rcpt, Err(reply::bad_recipient()), "{address}");
                assert_eq!(vrfy, Err(reply::bad_recipient()), "{address}");
            }
        }
    }

    #[test]
    fn other_commands() {
        assert_eq!(
            p("EHLO client.example"),
            Ok(Command::Ehlo("client.example".into()))
        );
        assert_eq!(p("helo x(y)\u{7}"), Ok(Command::Helo("x?y??".into())));
        assert!(p("EHLO").is_err());
        assert_eq!(p("DATA"), Ok(Command::Data));
        assert_eq!(p("DATA x"), Err(reply::syntax("DATA")));
        assert_eq!(p("noop anything"), Ok(Command::Noop));
        assert_eq!(p("VRFY alice"), Ok(Command::Vrfy("alice".into())));
        assert_eq!(p("VRFY <alice@x>"), Ok(Command::Vrfy("alice@x".into())));
        assert_eq!(p("BOGUS"), Err(reply::not_recognized()));
        assert_eq!(p(""), Err(reply::not_recognized()));
        assert_eq!(p("STARTTLS"), Ok(Command::StartTls));
        assert_eq!(stat_name(b"ehlo x"), "ehlo");
        assert_eq!(stat_name(b"XYZZY"), "unknown");
        assert_eq!(
            p("AUTH PLAIN  AGFsaWNl"),
            Ok(Command::Auth(vec!["PLAIN".into(), "AGFsaWNl".into()]))
        );
        assert_eq!(p("auth"), Ok(Command::Auth(vec![])));
        assert_eq!(stat_name(b"auth login"), "auth");
    }
}
