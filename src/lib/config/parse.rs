//! Reading `main.cf` text into `name = value` settings, the way Postfix's `readllines()` and
//! `split_nameval()` do.
//!
//! Postfix's rules, kept on purpose: a logical line starts with non-white-space text and is
//! continued by lines that start with white space; the continuation is appended as it is
//! (its leading white space becomes the separator, no newline is kept). Comment lines (`#`
//! as the first non-white-space character) and blank lines are skipped *even inside* a
//! continued value, so neither ends it. A `#` later in a line is part of the value.

use std::collections::HashMap;
use std::path::Path;

/// One parameter as set in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The value as written, continuations joined, outer white space trimmed.
    pub value: String,
    /// The line number of the logical line's first physical line.
    pub line: usize,
}

/// The result of parsing: settings by name (a later setting replaces an earlier one) and
/// warnings about lines that were skipped, each with its line number.
#[derive(Debug, Default)]
pub struct Parsed {
    pub settings: HashMap<String, Setting>,
    pub warnings: Vec<(usize, String)>,
}

/// A logical line and the number of its first physical line.
struct Logical {
    text: String,
    line: usize,
}

/// Parses `text` as read from `file` (the name is only used in warnings). Never fails: a bad
/// line is skipped with a warning and the rest still loads.
pub fn parse(text: &str, file: &Path) -> Parsed {
    let mut parsed = Parsed::default();
    for logical in logical_lines(text, file, &mut parsed.warnings) {
        match split_nameval(&logical.text) {
            Ok((name, value)) => {
                let setting = Setting {
                    value: value.to_string(),
                    line: logical.line,
                };
                parsed.settings.insert(name.to_string(), setting);
            }
            Err(why) => parsed.warnings.push((
                logical.line,
                format!(
                    "{}, line {}: {}: \"{}\"",
                    file.display(),
                    logical.line,
                    why,
                    logical.text
                ),
            )),
        }
    }
    parsed
}

/// Where the previous text line went: nowhere yet, into a logical line, or into a stray
/// continuation that has nothing to continue.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Nothing,
    Text,
    Stray,
}

/// Joins physical lines into logical lines.
fn logical_lines(text: &str, file: &Path, warnings: &mut Vec<(usize, String)>) -> Vec<Logical> {
    let mut out: Vec<Logical> = Vec::new();
    let mut open = Open::Nothing;
    for (index, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let number = index + 1;
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let continues = content.len() != line.len();
        match (continues, open, out.last_mut()) {
            (true, Open::Text, Some(last)) => last.text.push_str(line),
            (true, Open::Stray, _) => {}
            (true, _, _) => {
                // Postfix warns once per stray logical line and ignores it.
                warnings.push((
                    number,
                    format!(
                        "{}, line {}: logical line must not start with whitespace: \"{}\"",
                        file.display(),
                        number,
                        shorten(line)
                    ),
                ));
                open = Open::Stray;
            }
            (false, _, _) => {
                out.push(Logical {
                    text: line.to_string(),
                    line: number,
                });
                open = Open::Text;
            }
        }
    }
    out
}

/// Postfix quotes at most 30 characters of a bad line.
fn shorten(line: &str) -> String {
    match line.char_indices().nth(30) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_string(),
    }
}

/// Splits `name = value` like Postfix's `split_nameval()`: the name ends at white space or
/// `=`, white space around `=` is optional, the value is trimmed at both ends.
fn split_nameval(text: &str) -> std::result::Result<(&str, &str), &'static str> {
    let text = text.trim_start();
    let name_end = text
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(text.len());
    let name = &text[..name_end];
    let rest = text[name_end..].trim_start();
    let Some(value) = rest.strip_prefix('=') else {
        return Err("missing '=' after attribute name");
    };
    if name.is_empty() {
        return Err("missing attribute name");
    }
    Ok((name, value.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Parsed {
        parse(text, Path::new("/etc/mailroom/main.cf"))
    }

    fn warnings(parsed: &Parsed) -> Vec<&str> {
        parsed.warnings.iter().map(|(_, w)| w.as_str()).collect()
    }

    fn value(parsed: &Parsed, name: &str) -> String {
        parsed.settings[name].value.clone()
    }

    #[test]
    fn white_space_around_equals_is_optional() {
        let p = parse_str("a=1\nb = 2\nc\t=\t3  \nd =\n");
        assert_eq!(value(&p, "a"), "1");
        assert_eq!(value(&p, "b"), "2");
        assert_eq!(value(&p, "c"), "3");
        assert_eq!(value(&p, "d"), "");
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn continuation_lines_are_appended_as_postfix_does() {
        let p = parse_str("list = a,\n  b,\n\tc\nnext = x\n");
        assert_eq!(value(&p, "list"), "a,  b,\tc");
        assert_eq!(value(&p, "next"), "x");
        assert_eq!(p.settings["next"].line, 4);
    }

    #[test]
    fn comments_and_blank_lines_inside_a_value_are_skipped() {
        let p = parse_str("a = one\n# comment\n  two\n   # indented comment\n\n  three\nb = 2\n");
        assert_eq!(value(&p, "a"), "one  two  three");
        assert_eq!(p.settings["a"].line, 1);
        assert_eq!(p.settings["b"].line, 7);
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn hash_mid_line_is_part_of_the_value() {
        let p = parse_str("  # leading comment\nbanner = hi # there\n");
        assert_eq!(value(&p, "banner"), "hi # there");
        assert_eq!(p.settings["banner"].line, 2);
    }

    #[test]
    fn later_setting_wins_and_keeps_its_line() {
        let p = parse_str("a = 1\nb = 2\na = 3\n");
        assert_eq!(value(&p, "a"), "3");
        assert_eq!(p.settings["a"].line, 3);
    }

    #[test]
    fn bad_lines_warn_and_the_rest_loads() {
        let p = parse_str(" = x\n  y\na = 1\n\nfoo\nb = 2\n");
        assert_eq!(value(&p, "a"), "1");
        assert_eq!(value(&p, "b"), "2");
        assert_eq!(
            warnings(&p),
            vec![
                "/etc/mailroom/main.cf, line 1: logical line must not start with whitespace: \" = x\"",
                "/etc/mailroom/main.cf, line 5: missing '=' after attribute name: \"foo\"",
            ]
        );
    }

    #[test]
    fn a_blank_line_does_not_end_a_value() {
        // Postfix's readllines() skips blank lines, so an indented line after one still
        // continues the setting above it.
        let p = parse_str("foo\n\n = x\n");
        assert_eq!(value(&p, "foo"), "x");
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn a_name_with_a_space_is_not_a_setting() {
        let p = parse_str("two words = x\n=y\n");
        assert!(p.settings.is_empty());
        assert_eq!(p.warnings.len(), 2);
        assert!(p.warnings[1].1.contains("line 2: missing attribute name"));
    }

    #[test]
    fn crlf_and_missing_final_newline() {
        let p = parse_str("a = 1\r\nb = 2");
        assert_eq!(value(&p, "a"), "1");
        assert_eq!(value(&p, "b"), "2");
    }

    #[test]
    fn continuation_after_a_bad_line_is_not_attached_elsewhere() {
        let p = parse_str("a = 1\nbad\n  more\n");
        assert_eq!(value(&p, "a"), "1");
        assert_eq!(p.warnings.len(), 1);
        assert!(p.warnings[0].1.contains("\"bad  more\""));
    }
}
