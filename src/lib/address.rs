//! Addresses: split address lists the way sendmail and Postfix read them, check that each
//! address is well formed, qualify bare local names, and tell local from remote.
//!
//! Works on bytes, because header values may carry 8-bit text that must pass through
//! untouched.

/// One address found in a list, with where its address part ends in the input (so that a
/// header can be rewritten by inserting `@domain` there and nowhere else).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The address as it would appear in an envelope: no comments, no display name, no
    /// angle brackets, white space around `.` and `@` removed.
    pub address: String,
    /// Byte offset just past the last byte of the address in the input.
    pub end: usize,
}

/// Why an address list or an address was refused. Callers print it after the address
/// (`malformed recipient address "...": unbalanced '<'`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressError {
    /// An opening or closing `(`, `)`, `<`, `>`, `[`, `]` or `"` without its partner.
    Unbalanced(char),
    StrayBackslash,
    ControlCharacter,
    TextAfterAngle,
    NestedAngle,
    UnexpectedColon,
    Empty,
    EmptyLocalPart,
    BadQuotedLocalPart,
    BadLocalCharacter,
    /// Longer than [`MAX_ADDRESS_LEN`].
    TooLong,
    EmptyDomain,
    BadDomainLiteral,
    EmptyDomainLabel,
    BadDomainCharacter,
}

impl std::fmt::Display for AddressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddressError::Unbalanced(c) => write!(f, "unbalanced '{c}'"),
            AddressError::StrayBackslash => f.write_str("stray '\\'"),
            AddressError::ControlCharacter => f.write_str("control character in address"),
            AddressError::TextAfterAngle => f.write_str("text after '>'"),
            AddressError::NestedAngle => f.write_str("nested '<'"),
            AddressError::UnexpectedColon => f.write_str("unexpected ':'"),
            AddressError::Empty => f.write_str("empty address"),
            AddressError::EmptyLocalPart => f.write_str("empty local part"),
            AddressError::BadQuotedLocalPart => f.write_str("bad quoted local part"),
            AddressError::BadLocalCharacter => f.write_str("bad character in local part"),
            AddressError::TooLong => write!(f, "address longer than {MAX_ADDRESS_LEN} bytes"),
            AddressError::EmptyDomain => f.write_str("empty domain"),
            AddressError::BadDomainLiteral => f.write_str("bad domain literal"),
            AddressError::EmptyDomainLabel => f.write_str("empty label in domain"),
            AddressError::BadDomainCharacter => f.write_str("bad character in domain"),
        }
    }
}

impl std::error::Error for AddressError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    /// An atom, quoted string or domain literal: part of an address or display name.
    Word,
    Dot,
    At,
    Comma,
    Colon,
    Semicolon,
    Open,
    Close,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Tok,
    start: usize,
    end: usize,
    /// White space or a comment came before this token.
    spaced: bool,
}

const SPECIALS: &[u8] = b"()<>@,;:\\\".[]";

fn tokenize(input: &[u8]) -> Result<Vec<Token>, AddressError> {
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut spaced = false;
    while i < input.len() {
        let c = input[i];
        let start = i;
        let kind = match c {
            b' ' | b'\t' | b'\r' | b'\n' => {
                spaced = true;
                i += 1;
                continue;
            }
            b'(' => {
                i = skip_comment(input, i)?;
                spaced = true;
                continue;
            }
            b'"' => {
                i = skip_delimited(input, i, b'"', AddressError::Unbalanced('"'))?;
                Tok::Word
            }
            b'[' => {
                i = skip_delimited(input, i, b']', AddressError::Unbalanced('['))?;
                Tok::Word
            }
            b'.' => {
                i += 1;
                Tok::Dot
            }
            b'@' => {
                i += 1;
                Tok::At
            }
            b',' => {
                i += 1;
                Tok::Comma
            }
            b':' => {
                i += 1;
                Tok::Colon
            }
            b';' => {
                i += 1;
                Tok::Semicolon
            }
            b'<' => {
                i += 1;
                Tok::Open
            }
            b'>' => {
                i += 1;
                Tok::Close
            }
            b')' => return Err(AddressError::Unbalanced(')')),
            b']' => return Err(AddressError::Unbalanced(']')),
            b'\\' => return Err(AddressError::StrayBackslash),
            c if c < 0x20 || c == 0x7f => return Err(AddressError::ControlCharacter),
            _ => {
                while i < input.len() {
                    let c = input[i];
                    if c <= b' ' || c == 0x7f || SPECIALS.contains(&c) {
                        break;
                    }
                    i += 1;
                }
                Tok::Word
            }
        };
        tokens.push(Token {
            kind,
            start,
            end: i,
            spaced,
        });
        spaced = false;
    }
    Ok(tokens)
}

fn skip_comment(input: &[u8], mut i: usize) -> Result<usize, AddressError> {
    let mut depth = 0;
    while i < input.len() {
        match input[i] {
            b'\\' => i += 1,
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err(AddressError::Unbalanced('('))
}

fn skip_delimited(
    input: &[u8],
    mut i: usize,
    close: u8,
    err: AddressError,
) -> Result<usize, AddressError> {
    i += 1;
    while i < input.len() {
        match input[i] {
            b'\\' => i += 1,
            c if c == close => return Ok(i + 1),
            _ => {}
        }
        i += 1;
    }
    Err(err)
}

/// Splits an address list: `a, Bob <b@x>, group: c, d;`. As sendmail and Postfix do,
/// words separated only by white space outside angle brackets are separate addresses
/// (`sendmail 'a b c'` has three recipients). Fails on unbalanced quotes, brackets or
/// comments; does not validate the addresses themselves (see [`validate`]).
pub fn parse_list(input: &[u8]) -> Result<Vec<Found>, AddressError> {
    let tokens = tokenize(input)?;
    let mut found = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        // One list element ends at a top-level comma or semicolon.
        let mut j = i;
        let mut depth = 0;
        while j < tokens.len() {
            match tokens[j].kind {
                Tok::Open => depth += 1,
                Tok::Close => {
                    if depth == 0 {
                        return Err(AddressError::Unbalanced('>'));
                    }
                    depth -= 1;
                }
                Tok::Comma | Tok::Semicolon if depth == 0 => break,
                _ => {}
            }
            j += 1;
        }
        if depth != 0 {
            return Err(AddressError::Unbalanced('<'));
        }
        element(input, &tokens[i..j], &mut found)?;
        i = j + 1;
    }
    Ok(found)
}

fn element(input: &[u8], tokens: &[Token], found: &mut Vec<Found>) -> Result<(), AddressError> {
    if tokens.is_empty() {
        return Ok(());
    }
    if let Some(open) = tokens.iter().position(|t| t.kind == Tok::Open) {
        let close = open
            + tokens[open..]
                .iter()
                .position(|t| t.kind == Tok::Close)
                .ok_or(AddressError::Unbalanced('<'))?;
        if tokens[close + 1..].iter().any(|t| t.kind != Tok::Close) {
            return Err(AddressError::TextAfterAngle);
        }
        let mut inner = &tokens[open + 1..close];
        // Source routes (<@a,@b:user@c>) are obsolete: keep the final address.
        if let Some(colon) = inner.iter().rposition(|t| t.kind == Tok::Colon) {
            inner = &inner[colon + 1..];
        }
        if inner.iter().any(|t| t.kind == Tok::Open) {
            return Err(AddressError::NestedAngle);
        }
        // `<>` is the null address: nothing to deliver to, nothing to qualify.
        let end = inner.last().map_or(tokens[open].end, |t| t.end);
        found.push(Found {
            address: join(input, inner),
            end,
        });
        return Ok(());
    }
    // A group: "name: a, b;" — the display name is dropped, members follow.
    let mut tokens = tokens;
    if let Some(colon) = tokens.iter().position(|t| t.kind == Tok::Colon) {
        tokens = &tokens[colon + 1..];
    }
    // Bare addresses; white space between two words starts a new address unless a dot or
    // at-sign joins them.
    let mut start = 0;
    for k in 1..=tokens.len() {
        let split = k == tokens.len()
            || (tokens[k].spaced
                && matches!(tokens[k].kind, Tok::Word)
                && matches!(tokens[k - 1].kind, Tok::Word));
        if split {
            let part = &tokens[start..k];
            if part.iter().any(|t| t.kind == Tok::Colon) {
                return Err(AddressError::UnexpectedColon);
            }
            if !part.is_empty() {
                found.push(Found {
                    address: join(input, part),
                    end: part[part.len() - 1].end,
                });
            }
            start = k;
        }
    }
    Ok(())
}

fn join(input: &[u8], tokens: &[Token]) -> String {
    let mut bytes = Vec::new();
    for t in tokens {
        bytes.extend_from_slice(&input[t.start..t.end]);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The longest address taken from outside, in bytes: RFC 5321's 64-byte local part, `@`
/// and 255-byte domain (section 4.5.3.1). Queue files hold none longer.
pub const MAX_ADDRESS_LEN: usize = 320;
/// The longest local part, in bytes (RFC 5321 section 4.5.3.1.1). Nothing longer is ever
/// looked up as a user name: the C library's lookups are not made for megabytes (glibc's
/// NSS modules copy the name onto the stack). Addresses with longer local parts are still
/// taken, as Postfix takes them: VERP and SRS senders exceed 64 bytes in real mail.
pub const MAX_LOCAL_PART_LEN: usize = 64;

/// Checks one address (as produced by [`parse_list`]): a local part (dot-atom or quoted
/// string, obsolete consecutive dots tolerated as Postfix does), and optionally `@` and a
/// domain of letters, digits, hyphens and dots, or a `[literal]`; [`MAX_ADDRESS_LEN`]
/// bytes in all. Returns why not.
pub fn validate(address: &str) -> Result<(), AddressError> {
    if address.is_empty() {
        return Err(AddressError::Empty);
    }
    check_length(address)?;
    let (local, domain) = split(address);
    if local.is_empty() {
        return Err(AddressError::EmptyLocalPart);
    }
    if local.starts_with('"') {
        if local.len() < 2 || !local.ends_with('"') {
            return Err(AddressError::BadQuotedLocalPart);
        }
    } else if local
        .bytes()
        .any(|c| c <= b' ' || c == 0x7f || b"()<>@,;:\\\"[]".contains(&c))
    {
        return Err(AddressError::BadLocalCharacter);
    }
    if let Some(domain) = domain {
        validate_domain(domain)?;
    }
    Ok(())
}

/// Only the length check of [`validate`], for an address built here (a bare name
/// qualified with `$myorigin`).
pub fn check_length(address: &str) -> Result<(), AddressError> {
    if address.len() > MAX_ADDRESS_LEN {
        return Err(AddressError::TooLong);
    }
    Ok(())
}

/// `text` for an error message: whole when short, else its start and how long it was, so
/// that a megabyte of input never becomes a megabyte of log line.
pub fn shorten(text: &str) -> String {
    const SHOWN: usize = 64;
    if text.len() <= SHOWN {
        return text.to_string();
    }
    let mut end = SHOWN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len())
}

fn validate_domain(domain: &str) -> Result<(), AddressError> {
    if domain.is_empty() {
        return Err(AddressError::EmptyDomain);
    }
    if domain.starts_with('[') {
        return if domain.ends_with(']') && domain.len() > 2 {
            Ok(())
        } else {
            Err(AddressError::BadDomainLiteral)
        };
    }
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    for label in domain.split('.') {
        if label.is_empty() {
            return Err(AddressError::EmptyDomainLabel);
        }
        // Non-ASCII labels are internationalised names; underscores occur in real host
        // names. Everything else must be a letter, digit or hyphen.
        if !label
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c >= 0x80)
        {
            return Err(AddressError::BadDomainCharacter);
        }
    }
    Ok(())
}

/// Splits at the last `@` outside a quoted local part.
pub fn split(address: &str) -> (&str, Option<&str>) {
    let search_from = match address.strip_prefix('"') {
        Some(rest) => rest.find('"').map_or(address.len(), |q| q + 2),
        None => 0,
    };
    match address[search_from.min(address.len())..].rfind('@') {
        Some(at) => {
            let at = search_from + at;
            (&address[..at], Some(&address[at + 1..]))
        }
        None => (address, None),
    }
}

/// `alice` becomes `alice@origin`; an address with a domain, and the null address, are
/// left alone.
pub fn qualify(address: &str, origin: &str) -> String {
    if address.is_empty() || split(address).1.is_some() {
        address.to_string()
    } else {
        format!("{address}@{origin}")
    }
}

/// The domain in lower case, if there is one.
pub fn domain_of(address: &str) -> Option<String> {
    split(address)
        .1
        .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
}

/// Whether mail for this address stays on this machine: no domain, or a domain listed in
/// `mydestination` (lower-cased by the caller).
pub fn is_local(address: &str, mydestination: &[String]) -> bool {
    match domain_of(address) {
        None => true,
        Some(domain) => mydestination
            .iter()
            .any(|d| d.eq_ignore_ascii_case(&domain)),
    }
}

/// Qualifies every bare local name in an address header's value by inserting `@origin`
/// after it, leaving every other byte as it was (`To: alice, Bob <bob@localhost>` becomes
/// `To: alice@example.com, Bob <bob@localhost>`). A value that does not parse is returned
/// unchanged, as Postfix leaves headers it cannot parse.
pub fn qualify_header_value(value: &[u8], origin: &str) -> Vec<u8> {
    let Ok(found) = parse_list(value) else {
        return value.to_vec();
    };
    let mut out = Vec::with_capacity(value.len() + 32);
    let mut copied = 0;
    for f in found {
        if f.address.is_empty() || split(&f.address).1.is_some() {
            continue;
        }
        out.extend_from_slice(&value[copied..f.end]);
        out.push(b'@');
        out.extend_from_slice(origin.as_bytes());
        copied = f.end;
    }
    out.extend_from_slice(&value[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(s: &str) -> Vec<String> {
        parse_list(s.as_bytes())
            .unwrap()
            .into_iter()
            .map(|f| f.address)
            .collect()
    }

    #[test]
    fn lists_split_like_sendmail() {
        assert_eq!(addrs("alice"), ["alice"]);
        assert_eq!(addrs("a b c"), ["a", "b", "c"]);
        assert_eq!(addrs("alice, bob@x.org"), ["alice", "bob@x.org"]);
        assert_eq!(addrs("Bob Smith <bob@x.org>"), ["bob@x.org"]);
        assert_eq!(
            addrs("\"Smith, Bob\" <bob@x.org>, carol"),
            ["bob@x.org", "carol"]
        );
        assert_eq!(addrs("root (Cron Daemon)"), ["root"]);
        assert_eq!(addrs("undisclosed-recipients:;"), Vec::<String>::new());
        assert_eq!(addrs("team: a@x, b@y;, c"), ["a@x", "b@y", "c"]);
        assert_eq!(addrs("<@relay.org:user@x.org>"), ["user@x.org"]);
        assert_eq!(
            addrs("john . doe @ example . com"),
            ["john.doe@example.com"]
        );
        assert_eq!(
            addrs("\"john doe\"@example.com"),
            ["\"john doe\"@example.com"]
        );
        assert_eq!(addrs("<>"), [""]);
        assert_eq!(addrs(""), Vec::<String>::new());
    }

    #[test]
    fn errors_keep_their_words() {
        let words = |text: &str| parse_list(text.as_bytes()).unwrap_err().to_string();
        assert_eq!(words("<alice"), "unbalanced '<'");
        assert_eq!(words("\"open"), "unbalanced '\"'");
        assert_eq!(words("[open"), "unbalanced '['");
        assert_eq!(words("a\\"), "stray '\\'");
        assert_eq!(words("<a> b"), "text after '>'");
        assert_eq!(
            validate("a@b..c").unwrap_err().to_string(),
            "empty label in domain"
        );
        let long = format!("{}@x.org", "a".repeat(MAX_ADDRESS_LEN));
        assert_eq!(
            check_length(&long).unwrap_err().to_string(),
            "address longer than 320 bytes"
        );
    }

    #[test]
    fn unbalanced_input_is_an_error() {
        for bad in [
            "<alice",
            "alice>",
            "\"open",
            "(comment",
            "bad address<<@",
            "a]",
        ] {
            assert!(parse_list(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn validation() {
        for good in [
            "alice",
            "alice@example.com",
            "a.b+c@sub.example.co.uk",
            "\"john doe\"@example.com",
            "user@[127.0.0.1]",
            "üser@exämple.de",
            "john..doe@example.com",
            "x@host_name.example",
        ] {
            assert_eq!(validate(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "alice@",
            "@",
            "@example.com",
            "a@b..c",
            "a@-x y",
            "a@b@",
            "a\u{1}b",
        ] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lengths_are_rfc_5321s() {
        let local = |n: usize| "a".repeat(n);
        let domain = |n: usize| format!("{}.org", "d".repeat(n - 4));
        // (address, accepted)
        let table = [
            (local(64), true),
            // A longer local part is taken (VERP, SRS); only lookups are bounded.
            (local(65), true),
            (format!("{}@x.org", local(200)), true),
            (format!("{}@x.org", local(314)), true),
            (format!("{}@x.org", local(315)), false),
            (format!("\"{}\"@x.org", local(312)), true),
            (format!("\"{}\"@x.org", local(313)), false),
            (format!("{}@{}", local(64), domain(255)), true),
            (format!("{}@{}", local(64), domain(256)), false),
            (format!("{}@x.org", local(4 << 20)), false),
        ];
        for (address, accepted) in table {
            let got = validate(&address);
            assert_eq!(got.is_ok(), accepted, "{} bytes: {got:?}", address.len());
        }
        assert_eq!(shorten("short"), "short");
        let long = shorten(&"é".repeat(1000));
        assert!(
            long.ends_with("... (2000 bytes)") && long.len() < 100,
            "{long}"
        );
    }

    #[test]
    fn qualification() {
        assert_eq!(qualify("alice", "example.com"), "alice@example.com");
        assert_eq!(qualify("alice@x", "example.com"), "alice@x");
        assert_eq!(qualify("", "example.com"), "");
        assert_eq!(qualify("\"a@b\"", "example.com"), "\"a@b\"@example.com");
        assert!(is_local("alice", &[]));
        assert!(is_local("alice@LocalHost.", &["localhost".into()]));
        assert!(!is_local("alice@example.org", &["localhost".into()]));
    }

    #[test]
    fn header_values_are_qualified_in_place() {
        let q = |v: &str| {
            String::from_utf8(qualify_header_value(v.as_bytes(), "mail.server.com")).unwrap()
        };
        assert_eq!(
            q(" alice, Bob <bob@localhost>"),
            " alice@mail.server.com, Bob <bob@localhost>"
        );
        assert_eq!(
            q(" root (Cron Daemon)"),
            " root@mail.server.com (Cron Daemon)"
        );
        assert_eq!(q(" Bob <bob>"), " Bob <bob@mail.server.com>");
        assert_eq!(q(" <>"), " <>");
        assert_eq!(q(" \"unbalanced"), " \"unbalanced");
        assert_eq!(q(" a@x,\n\tb"), " a@x,\n\tb@mail.server.com");
    }
}
