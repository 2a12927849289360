//! Reading `aliases(5)` source text exactly as Postfix's `postalias` does.
//!
//! The parser works on bytes: an aliases file may hold 8-bit text, CRLF line ends, NUL
//! bytes or lines of any length, and none of that may panic or stop the rest of the file
//! from compiling. It calls back once per entry with borrowed buffers that it reuses, so
//! compiling 100,000 aliases allocates almost nothing per line.

/// One `name: value` entry, as it goes into the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The name, unquoted and case-folded ([`fold_name`]): the database key.
    pub name: &'a [u8],
    /// The right-hand side re-written as an address list (`alice, bob, carol`).
    pub value: &'a [u8],
    /// The line the entry starts on (1-based).
    pub line: usize,
}

/// Why an entry was skipped. Postfix warns and goes on with the next entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// No colon, nothing before it, a comma before it, or nothing after it.
    NeedPair,
    /// The name has an `@` or `%` outside quotes: an alias name must be a local part.
    NotLocal,
}

/// A skipped entry: what was wrong and on which line the entry starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Warning {
    pub line: usize,
    pub problem: Problem,
}

impl Warning {
    /// Postfix's wording: `/etc/aliases, line 3: need name:value pair`.
    pub fn message(&self, file: &str) -> String {
        let what = match self.problem {
            Problem::NeedPair => "need name:value pair",
            Problem::NotLocal => "name must be local",
        };
        format!("{file}, line {}: {what}", self.line)
    }
}

/// An owned entry, for tests and small tables (the compiler uses [`parse`] directly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub name: String,
    pub value: String,
    pub line: usize,
}

/// White space as C's `isspace` sees it: Postfix's tokenizer treats `\r`, `\v` and `\f` like
/// blanks, which is why a CRLF file compiles to the same values as an LF one.
pub fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Parses a whole source file, calling `each` with every valid entry (`Ok`) and every
/// skipped one (`Err`), in file order. Duplicates are not this layer's business: the
/// database decides which one wins.
pub fn parse(source: &[u8], mut each: impl FnMut(Result<Entry<'_>, Warning>)) {
    let mut scratch = Scratch::default();
    for_each_logical_line(source, |logical, line| match scratch.entry(logical) {
        Ok(()) => each(Ok(Entry {
            name: &scratch.name,
            value: &scratch.value,
            line,
        })),
        Err(problem) => each(Err(Warning { line, problem })),
    });
}

/// Parses into owned entries (lossy UTF-8), keeping every entry including duplicates.
pub fn parse_all(source: &[u8]) -> (Vec<Alias>, Vec<Warning>) {
    let mut aliases = Vec::new();
    let mut warnings = Vec::new();
    parse(source, |result| match result {
        Ok(entry) => aliases.push(Alias {
            name: String::from_utf8_lossy(entry.name).into_owned(),
            value: String::from_utf8_lossy(entry.value).into_owned(),
            line: entry.line,
        }),
        Err(warning) => warnings.push(warning),
    });
    (aliases, warnings)
}

/// Case-folds an alias name in place, the same way for compiling and for looking up.
/// ASCII (nearly every real name) is lowered byte by byte; valid UTF-8 gets Unicode
/// lowercasing; other 8-bit bytes are left alone so two different byte strings never
/// fold to the same key.
pub fn fold_name(name: &mut Vec<u8>) {
    if name.is_ascii() {
        name.make_ascii_lowercase();
    } else if let Ok(text) = std::str::from_utf8(name) {
        let lowered = text.to_lowercase();
        name.clear();
        name.extend_from_slice(lowered.as_bytes());
    } else {
        name.make_ascii_lowercase();
    }
}

/// [`fold_name`] for a `&str` (lookups).
pub fn fold(name: &str) -> String {
    let mut bytes = name.as_bytes().to_vec();
    fold_name(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Splits a stored right-hand side into its targets, as local(8) re-parses it at delivery:
/// comma-separated items; in an item, `Name <addr>` means `addr`; otherwise every word
/// separated by white space is a target of its own (so unquoted `error:5.1.1 user has
/// moved` is four addresses, as in Postfix). Comments are dropped; quotes are kept (see
/// [`unquote`]).
pub fn split_targets(value: &str) -> Vec<String> {
    let bytes = value.as_bytes();
    let mut targets = Vec::new();
    let mut start = 0;
    let mut items = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        match bytes[pos] {
            b'"' => pos = skip_quoted(bytes, pos),
            b'(' => pos = skip_comment(bytes, pos),
            // A source route `<@a,@b:u@h>` holds commas that do not separate targets.
            b'<' => pos = skip_angle(bytes, pos),
            b',' => {
                items.push(&value[start..pos]);
                pos += 1;
                start = pos;
            }
            _ => pos += 1,
        }
    }
    items.push(&value[start..]);
    for item in items {
        split_item(item, &mut targets);
    }
    targets
}

/// One comma-separated item of a right-hand side → its targets.
fn split_item(item: &str, targets: &mut Vec<String>) {
    let bytes = item.as_bytes();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut angle: Option<String> = None;
    let mut pos = 0;
    while pos < bytes.len() {
        let byte = bytes[pos];
        if byte == b'"' {
            let end = skip_quoted(bytes, pos);
            word.push_str(&item[pos..end]);
            pos = end;
        } else if byte == b'(' {
            pos = skip_comment(bytes, pos);
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
        } else if byte == b'<' {
            let end = skip_angle(bytes, pos);
            let inner = item[pos + 1..end]
                .strip_suffix('>')
                .unwrap_or(&item[pos + 1..end]);
            angle = Some(strip_route(inner.trim()).to_string());
            pos = end;
        } else if is_space(byte) {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            pos += 1;
        } else {
            // Copy a run of ordinary bytes at once; char boundaries are safe because the
            // run stops only at ASCII bytes.
            let end = bytes[pos..]
                .iter()
                .position(|&b| b == b'"' || b == b'(' || b == b'<' || is_space(b))
                .map_or(bytes.len(), |n| pos + n);
            word.push_str(&item[pos..end]);
            pos = end;
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    match angle {
        Some(address) if !address.is_empty() => targets.push(address),
        Some(_) => {}
        None => targets.extend(words),
    }
}

/// `<@relay1,@relay2:user@host>`: the source route is obsolete; the address is the end.
fn strip_route(address: &str) -> &str {
    if address.starts_with('@')
        && let Some(colon) = address.find(':')
    {
        return &address[colon + 1..];
    }
    address
}

/// Removes RFC 822 quoting from a target: `"|cmd arg"` → `|cmd arg`,
/// `"quoted name"@x` → `quoted name@x`. Backslash escapes inside quotes are resolved.
pub fn unquote(target: &str) -> String {
    if !target.contains('"') {
        return target.to_string();
    }
    let mut out = String::with_capacity(target.len());
    let mut in_quotes = false;
    let mut chars = target.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => in_quotes = !in_quotes,
            '\\' if in_quotes => {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Index just past the quoted string that starts at `start` (an unterminated one runs to
/// the end, as in Postfix's tokenizer).
fn skip_quoted(bytes: &[u8], start: usize) -> usize {
    let mut pos = start + 1;
    while pos < bytes.len() {
        match bytes[pos] {
            b'\\' => pos += 2,
            b'"' => return pos + 1,
            _ => pos += 1,
        }
    }
    bytes.len()
}

/// Index just past the `<...>` that starts at `start` (quotes inside respected).
fn skip_angle(bytes: &[u8], start: usize) -> usize {
    let mut pos = start + 1;
    while pos < bytes.len() {
        match bytes[pos] {
            b'"' => pos = skip_quoted(bytes, pos),
            b'>' => return pos + 1,
            _ => pos += 1,
        }
    }
    bytes.len()
}

/// Index just past the (possibly nested) comment that starts at `start`.
fn skip_comment(bytes: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut pos = start;
    while pos < bytes.len() {
        match bytes[pos] {
            b'\\' => pos += 1,
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return pos + 1;
                }
            }
            _ => {}
        }
        pos += 1;
    }
    bytes.len()
}

/// Postfix's `readllines`: a logical line is a line that starts with neither white space
/// nor `#`, plus every following line that does. Comment and blank lines in between are
/// dropped but do not end the entry (so a commented-out target in a long list is fine).
/// Calls `each` with the logical line's text and the number of its first line. A one-line
/// entry (the common case) is passed straight from the source; longer ones are joined in
/// one reused buffer.
fn for_each_logical_line(source: &[u8], mut each: impl FnMut(&[u8], usize)) {
    let mut lines = source.split(|&b| b == b'\n').enumerate().peekable();
    let mut joined = Vec::new();
    while let Some((index, line)) = lines.next() {
        if is_ignorable(line) {
            continue;
        }
        // A first line that starts with white space (nothing to continue) is taken as an
        // entry of its own, leading blanks ignored.
        let mut is_joined = false;
        while let Some(&(_, next)) = lines.peek() {
            let continues = next.first().is_none_or(|&b| is_space(b) || b == b'#');
            if !continues {
                break;
            }
            lines.next();
            if is_ignorable(next) {
                continue;
            }
            if !is_joined {
                joined.clear();
                joined.extend_from_slice(line);
                is_joined = true;
            }
            joined.push(b' ');
            joined.extend_from_slice(next);
        }
        each(if is_joined { &joined } else { line }, index + 1);
    }
}

/// Blank, all white space, or a comment (`#` first, or after white space).
fn is_ignorable(line: &[u8]) -> bool {
    match line.iter().find(|&&b| !is_space(b)) {
        None => true,
        Some(&b) => b == b'#',
    }
}

/// Buffers for one entry's key and value, reused from entry to entry.
#[derive(Default)]
struct Scratch {
    name: Vec<u8>,
    value: Vec<u8>,
}

impl Scratch {
    /// Splits a logical line at its first colon outside quotes and comments (Postfix's
    /// tokenizer: `"foo:bar": x` has the key `foo:bar`), checks both sides, and fills
    /// `name` and `value`.
    fn entry(&mut self, line: &[u8]) -> Result<(), Problem> {
        let colon = find_colon(line).ok_or(Problem::NeedPair)?;
        let (key, value) = (&line[..colon], &line[colon + 1..]);
        self.key(key)?;
        self.normalise_value(value);
        if self.value.is_empty() {
            return Err(Problem::NeedPair);
        }
        Ok(())
    }

    /// The key in internal (unquoted) form, words separated by one space, case-folded.
    /// A comma before the colon means a list, not a name; `@` or `%` outside quotes
    /// means a remote address. Postfix checks the comma first.
    fn key(&mut self, key: &[u8]) -> Result<(), Problem> {
        self.name.clear();
        let mut not_local = false;
        let mut pending_space = false;
        let mut pos = 0;
        while pos < key.len() {
            let byte = key[pos];
            if is_space(byte) {
                pending_space = !self.name.is_empty();
                pos += 1;
                continue;
            }
            if byte == b'(' {
                pos = skip_comment(key, pos);
                pending_space = !self.name.is_empty();
                continue;
            }
            if pending_space {
                self.name.push(b' ');
                pending_space = false;
            }
            match byte {
                b',' => return Err(Problem::NeedPair),
                b'@' | b'%' => {
                    not_local = true;
                    self.name.push(byte);
                    pos += 1;
                }
                b'"' => {
                    let end = skip_quoted(key, pos);
                    let inner = &key[pos + 1..end.max(pos + 1)];
                    let inner = inner.strip_suffix(b"\"").unwrap_or(inner);
                    let mut escaped = false;
                    for &b in inner {
                        if b == b'\\' && !escaped {
                            escaped = true;
                            continue;
                        }
                        escaped = false;
                        self.name.push(b);
                    }
                    pos = end;
                }
                _ => {
                    self.name.push(byte);
                    pos += 1;
                }
            }
        }
        if self.name.is_empty() {
            return Err(Problem::NeedPair);
        }
        if not_local {
            return Err(Problem::NotLocal);
        }
        fold_name(&mut self.name);
        Ok(())
    }

    /// Re-writes the right-hand side as Postfix does: items split at commas outside
    /// quotes and comments, each trimmed with inner white space collapsed to one space,
    /// joined by `", "`. Quoted strings and comments are copied verbatim. A trailing comma
    /// gives a trailing `", "`, exactly as `postalias` stores it.
    fn normalise_value(&mut self, value: &[u8]) {
        self.value.clear();
        let trimmed = trim(value);
        if trimmed.is_empty() {
            return;
        }
        let mut pending_space = false;
        let mut item_start = true;
        let mut pos = 0;
        while pos < trimmed.len() {
            let byte = trimmed[pos];
            if is_space(byte) {
                pending_space = !item_start;
                pos += 1;
                continue;
            }
            if byte == b',' {
                self.value.extend_from_slice(b", ");
                pending_space = false;
                item_start = true;
                pos += 1;
                continue;
            }
            if pending_space {
                self.value.push(b' ');
                pending_space = false;
            }
            item_start = false;
            let end = match byte {
                b'"' => skip_quoted(trimmed, pos),
                b'(' => skip_comment(trimmed, pos),
                _ => trimmed[pos..]
                    .iter()
                    .position(|&b| b == b'"' || b == b'(' || b == b',' || is_space(b))
                    .map_or(trimmed.len(), |n| pos + n),
            };
            self.value.extend_from_slice(&trimmed[pos..end]);
            pos = end;
        }
    }
}

/// The first colon outside quoted strings and comments.
fn find_colon(line: &[u8]) -> Option<usize> {
    let mut pos = 0;
    while pos < line.len() {
        match line[pos] {
            b'"' => pos = skip_quoted(line, pos),
            b'(' => pos = skip_comment(line, pos),
            b':' => return Some(pos),
            _ => pos += 1,
        }
    }
    None
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| !is_space(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| !is_space(b))
        .map_or(start, |n| n + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(source: &str) -> Vec<(String, String, usize)> {
        parse_all(source.as_bytes())
            .0
            .into_iter()
            .map(|a| (a.name, a.value, a.line))
            .collect()
    }

    fn one(source: &str) -> (String, String) {
        let all = entries(source);
        assert_eq!(all.len(), 1, "{all:?}");
        (all[0].0.clone(), all[0].1.clone())
    }

    fn warnings(source: &str) -> Vec<String> {
        parse_all(source.as_bytes())
            .1
            .iter()
            .map(|w| w.message("/etc/aliases"))
            .collect()
    }

    #[test]
    fn simple_entries_and_the_seed_example() {
        let source = "root: john\njsmith: john\nj.smith: john\nroot: root,james\n";
        assert_eq!(
            entries(source),
            vec![
                ("root".into(), "john".into(), 1),
                ("jsmith".into(), "john".into(), 2),
                ("j.smith".into(), "john".into(), 3),
                ("root".into(), "root, james".into(), 4),
            ]
        );
    }

    #[test]
    fn right_hand_side_is_rewritten_as_an_address_list() {
        assert_eq!(one("l: alice,bob , carol").1, "alice, bob, carol");
        assert_eq!(one("l: alice,").1, "alice, ");
        assert_eq!(one("l:alice").1, "alice");
        assert_eq!(one("l: a   b\t c").1, "a b c");
        assert_eq!(one("l: Alice  Smith <alice@x>").1, "Alice Smith <alice@x>");
    }

    #[test]
    fn names_are_case_insensitive_and_quoted_names_unquoted() {
        assert_eq!(one("Team: alice").0, "team");
        assert_eq!(one("\"quoted name\": alice").0, "quoted name");
        assert_eq!(one("\"Foo:Bar\": alice").0, "foo:bar");
        assert_eq!(one("\"a\\\"b\": alice").0, "a\"b");
        assert_eq!(one("bad syntax <here>: bob").0, "bad syntax <here>");
        assert_eq!(one("ÉQUIPE: bob").0, "équipe");
    }

    #[test]
    fn commands_files_and_includes_are_kept_verbatim() {
        assert_eq!(
            one("p: \"|/usr/bin/foo  arg, x\"").1,
            "\"|/usr/bin/foo  arg, x\""
        );
        assert_eq!(one("p: |/bin/cat").1, "|/bin/cat");
        assert_eq!(one("f: /var/log/file").1, "/var/log/file");
        assert_eq!(one("i: :include:/etc/list").1, ":include:/etc/list");
        assert_eq!(
            one("e: error:5.1.1 user has moved").1,
            "error:5.1.1 user has moved"
        );
    }

    #[test]
    fn continuation_lines_and_comments_between_them() {
        let source = "continued: alice\n# c\n  , bob\n\n\t,carol\nnext: dave\n";
        assert_eq!(
            entries(source),
            vec![
                ("continued".into(), "alice, bob, carol".into(), 1),
                ("next".into(), "dave".into(), 6)
            ]
        );
        let source = "  # indented comment\n#x: y\na: b # not a comment here\n";
        assert_eq!(one(source), ("a".into(), "b # not a comment here".into()));
    }

    #[test]
    fn missing_colon_and_empty_right_side_are_skipped_with_the_entry_line() {
        let source = "good: alice\nnocolon alice\nempty:\n  \nalso: bob\nmulti\n  line\n";
        assert_eq!(
            warnings(source),
            vec![
                "/etc/aliases, line 2: need name:value pair",
                "/etc/aliases, line 3: need name:value pair",
                "/etc/aliases, line 6: need name:value pair",
            ]
        );
        assert_eq!(entries(source).len(), 2);
        assert_eq!(
            warnings("a, b: c"),
            vec!["/etc/aliases, line 1: need name:value pair"]
        );
        assert_eq!(
            warnings(": c"),
            vec!["/etc/aliases, line 1: need name:value pair"]
        );
    }

    #[test]
    fn names_with_a_domain_are_not_local() {
        assert_eq!(
            warnings("x: y\n\"with space\"@x: bob\nu%h: bob\n"),
            vec![
                "/etc/aliases, line 2: name must be local",
                "/etc/aliases, line 3: name must be local"
            ]
        );
        assert_eq!(one("\"a@b\": bob").0, "a@b");
    }

    #[test]
    fn crlf_nul_and_eight_bit_input_never_panic() {
        assert_eq!(one("a: b\r\n").1, "b");
        assert_eq!(entries("a: b\r\n\r\nc: d\r\n").len(), 2);
        let mut nasty: Vec<u8> = b"\xff\xfe: \x00\x80\n\"unterminated: x\n(((: y\n\\".to_vec();
        nasty.extend(std::iter::repeat_n(b'x', 1 << 20));
        nasty.extend_from_slice(b": \"\n");
        let (_, _) = parse_all(&nasty);
        // A small deterministic fuzz over the bytes the tokenizer cares about.
        let alphabet = b":\"(),\\ \n\t#@<>a\xc3\xa9\r";
        let mut state = 0x2545_f491_u32;
        for _ in 0..20_000 {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let len = (state >> 16) as usize % 24;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    alphabet[(state >> 16) as usize % alphabet.len()]
                })
                .collect();
            let (aliases, _) = parse_all(&bytes);
            for alias in aliases {
                let _ = split_targets(&alias.value);
            }
        }
    }

    #[test]
    fn targets_are_split_like_local_8_does() {
        assert_eq!(
            split_targets("alice, bob, carol"),
            vec!["alice", "bob", "carol"]
        );
        assert_eq!(split_targets("alice, "), vec!["alice"]);
        assert_eq!(
            split_targets("error:5.1.1 user has moved"),
            vec!["error:5.1.1", "user", "has", "moved"]
        );
        assert_eq!(
            split_targets("\"|/usr/bin/foo a, b\", x"),
            vec!["\"|/usr/bin/foo a, b\"", "x"]
        );
        assert_eq!(
            split_targets("Alice Smith <alice@x> (boss), bob"),
            vec!["alice@x", "bob"]
        );
        assert_eq!(split_targets("<@r1,@r2:u@h>"), vec!["u@h"]);
        assert_eq!(split_targets("bob (Bob, the builder)"), vec!["bob"]);
        assert_eq!(unquote("\"|cmd arg\""), "|cmd arg");
        assert_eq!(unquote("\"quoted name\"@x"), "quoted name@x");
    }
}
