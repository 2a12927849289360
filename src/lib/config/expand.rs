//! Lazy `$name` expansion, as Postfix's `mac_parse()`/`mac_expand()` do it for `main.cf`:
//! `$name`, `${name}`, `$(name)`, `$$` for a literal `$`, and the conditionals
//! `${name?text}` (text when `$name` is non-empty), `${name:text}` (text when it is empty or
//! undefined) and `${name?{text1}:{text2}}`. An undefined name expands to nothing and is
//! noted in the [`Context`], so the caller can warn about it.
//!
//! Values refer to each other, so a cycle (`a = $b`, `b = $a`) is possible: the context keeps
//! the chain of names being expanded and stops with an error when a name comes back, and
//! bounds both that chain and the nesting of `${...}` so no input can exhaust the stack.
//!
//! Without a cycle, values can still multiply: `a = $b$b`, `b = $c$c`, ... doubles at each
//! of up to 100 levels, 2^100 bytes (or, with empty values, 2^100 lookups for nothing),
//! which Postfix would also try to compute. The context therefore also bounds what one
//! expansion produces and the work it does to get there (see [`Budget`]), so every
//! expansion ends in well under a second, with an error for a file that asks for more.

use super::host::FirstLineError;

/// Why a value cannot be expanded.
#[derive(Debug)]
pub enum ExpandError {
    /// A name met again while being expanded: the chain, from its first use to its
    /// return.
    Recursive(Vec<String>),
    /// Names or `${...}` texts nested deeper than [`MAX_DEPTH`].
    Nesting,
    /// More than [`MAX_REFERENCES`] references followed.
    TooManyReferences,
    /// More than [`MAX_COPIED`] bytes copied.
    TooMuchCopied,
    /// A value longer than [`MAX_VALUE`].
    ValueTooLong,
    /// A `$` followed by neither a name nor a bracket: the whole text.
    EmptyName(String),
    /// A `${` or `$(` without its closing bracket: the whole text.
    Truncated(String),
    /// `${...}` that does not start with a name: what is inside the braces.
    BadName(String),
    /// `${name...}` followed by neither `?` nor `:`: what is inside the braces.
    BadOperator(String),
    /// A value naming a file whose first line it stands for (`myorigin = /etc/mailname`)
    /// that could not be read.
    File(FirstLineError),
}

impl std::fmt::Display for ExpandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpandError::Recursive(chain) => {
                f.write_str("recursive reference: ")?;
                for (i, name) in chain.iter().enumerate() {
                    let arrow = if i == 0 { "" } else { " -> " };
                    write!(f, "{arrow}${name}")?;
                }
                Ok(())
            }
            ExpandError::Nesting => f.write_str("unreasonable macro call nesting"),
            ExpandError::TooManyReferences => write!(
                f,
                "unreasonable macro expansion size: more than {MAX_REFERENCES} references"
            ),
            ExpandError::TooMuchCopied => write!(
                f,
                "unreasonable macro expansion size: more than {MAX_COPIED} bytes expanded"
            ),
            ExpandError::ValueTooLong => write!(
                f,
                "unreasonable macro expansion size: a value longer than {MAX_VALUE} bytes"
            ),
            ExpandError::EmptyName(whole) => write!(f, "empty macro name: \"{whole}\""),
            ExpandError::Truncated(whole) => write!(f, "truncated macro reference: \"{whole}\""),
            ExpandError::BadName(inside) => {
                write!(f, "empty or unsupported macro name: \"${{{inside}}}\"")
            }
            ExpandError::BadOperator(inside) => {
                write!(f, "attribute name syntax error: \"${{{inside}}}\"")
            }
            ExpandError::File(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ExpandError {}

impl From<FirstLineError> for ExpandError {
    fn from(e: FirstLineError) -> ExpandError {
        ExpandError::File(e)
    }
}

/// Postfix stops at the same depth ("unreasonable macro call nesting").
const MAX_DEPTH: usize = 100;

/// The longest value an expansion may produce. The longest values in real files are
/// inline lists (`mynetworks`, restrictions), a few kilobytes; a value can only grow
/// past the size of the file (itself at most 1 MiB, see `MAX_MAIN_CF`) by using
/// a reference more than once, so this is never reached but by multiplication.
const MAX_VALUE: usize = 1 << 20;

/// The references one expansion may follow, counting every use (a real `main.cf` follows
/// tens, the defaults' `$myhostname`-style chains included).
const MAX_REFERENCES: usize = 100_000;

/// The bytes one expansion may copy, at every level together: 16 values of the largest
/// size. Bounds the time even when many references each fetch a long value.
const MAX_COPIED: usize = 16 * MAX_VALUE;

/// What expansions have spent; shared by everything expanded with one [`Context`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Budget {
    references: usize,
    copied: usize,
}

impl Budget {
    /// True when nothing more may be expanded with it.
    pub fn exhausted(&self) -> bool {
        self.references >= MAX_REFERENCES || self.copied >= MAX_COPIED
    }
}

/// Supplies the expanded value of a parameter (recursing through [`expand`] with the same
/// context), or `None` when the name is undefined.
pub trait Resolve {
    fn resolve(&self, name: &str, ctx: &mut Context) -> Result<Option<String>, ExpandError>;
}

/// The state of one expansion.
#[derive(Debug, Default)]
pub struct Context {
    /// The names being expanded, outermost first.
    stack: Vec<String>,
    /// How deep `${...}` texts are nested.
    nesting: usize,
    /// Undefined names met, each with the parameter whose value referred to it.
    pub undefined: Vec<(String, String)>,
    /// True when only looking for problems: resolvers must not touch the file system.
    pub probe: bool,
    /// What this context has spent so far (the probe of a whole file shares one).
    pub spent: Budget,
}

impl Context {
    pub fn new() -> Context {
        Context::default()
    }

    /// Marks `name` as being expanded; fails when it already is (a cycle).
    pub fn enter(&mut self, name: &str) -> Result<(), ExpandError> {
        if self.stack.iter().any(|n| n == name) {
            let chain: Vec<String> = self
                .stack
                .iter()
                .skip_while(|n| *n != name)
                .cloned()
                .chain(std::iter::once(name.to_string()))
                .collect();
            return Err(ExpandError::Recursive(chain));
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(ExpandError::Nesting);
        }
        self.stack.push(name.to_string());
        Ok(())
    }

    pub fn leave(&mut self) {
        self.stack.pop();
    }

    /// Counts one reference followed.
    fn follow(&mut self) -> Result<(), ExpandError> {
        self.spent.references += 1;
        if self.spent.references > MAX_REFERENCES {
            return Err(ExpandError::TooManyReferences);
        }
        Ok(())
    }

    /// Appends `text` to `out`, within the bounds of one value and of the copying.
    fn append(&mut self, out: &mut String, text: &str) -> Result<(), ExpandError> {
        self.spent.copied += text.len();
        if self.spent.copied > MAX_COPIED {
            return Err(ExpandError::TooMuchCopied);
        }
        if out.len() + text.len() > MAX_VALUE {
            return Err(ExpandError::ValueTooLong);
        }
        out.push_str(text);
        Ok(())
    }

    fn current(&self) -> String {
        self.stack.last().cloned().unwrap_or_default()
    }
}

/// Expands every reference in `text`.
pub fn expand(
    text: &str,
    resolver: &dyn Resolve,
    ctx: &mut Context,
) -> Result<String, ExpandError> {
    if ctx.nesting >= MAX_DEPTH {
        return Err(ExpandError::Nesting);
    }
    ctx.nesting += 1;
    let result = expand_inner(text, resolver, ctx);
    ctx.nesting -= 1;
    result
}

fn expand_inner(
    text: &str,
    resolver: &dyn Resolve,
    ctx: &mut Context,
) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        ctx.append(&mut out, &rest[..dollar])?;
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            ctx.append(&mut out, "$")?;
            rest = tail;
            continue;
        }
        let (reference, tail) = split_reference(after, text)?;
        ctx.follow()?;
        let value = expand_reference(reference, resolver, ctx)?;
        ctx.append(&mut out, &value)?;
        rest = tail;
    }
    ctx.append(&mut out, rest)?;
    Ok(out)
}

/// Takes the reference after a `$`: the inside of `{...}`/`(...)` (brackets of the same kind
/// nest), or a bare name of letters, digits and `_`. Returns it and the text after it.
fn split_reference<'a>(
    after: &'a str,
    whole: &str,
) -> Result<(Reference<'a>, &'a str), ExpandError> {
    let close = match after.chars().next() {
        Some('{') => '}',
        Some('(') => ')',
        _ => {
            let end = after
                .find(|c: char| !is_name_char(c))
                .unwrap_or(after.len());
            if end == 0 {
                return Err(ExpandError::EmptyName(whole.to_string()));
            }
            return Ok((Reference::Bare(&after[..end]), &after[end..]));
        }
    };
    let open = if close == '}' { '{' } else { '(' };
    let mut level = 0usize;
    for (i, c) in after.char_indices() {
        if c == open {
            level += 1;
        } else if c == close {
            level -= 1;
            if level == 0 {
                return Ok((Reference::Braced(&after[1..i]), &after[i + 1..]));
            }
        }
    }
    Err(ExpandError::Truncated(whole.to_string()))
}

enum Reference<'a> {
    Bare(&'a str),
    Braced(&'a str),
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn expand_reference(
    reference: Reference<'_>,
    resolver: &dyn Resolve,
    ctx: &mut Context,
) -> Result<String, ExpandError> {
    let inside = match reference {
        Reference::Bare(name) => return lookup(name, resolver, ctx),
        Reference::Braced(inside) => inside,
    };
    let name_end = inside
        .find(|c: char| !is_name_char(c))
        .unwrap_or(inside.len());
    let (name, op) = inside.split_at(name_end);
    if name.is_empty() {
        return Err(ExpandError::BadName(inside.to_string()));
    }
    let mut ops = op.chars();
    match ops.next() {
        None => lookup(name, resolver, ctx),
        Some('?') => conditional(name, ops.as_str(), true, resolver, ctx),
        Some(':') => conditional(name, ops.as_str(), false, resolver, ctx),
        Some(_) => Err(ExpandError::BadOperator(inside.to_string())),
    }
}

/// `${name?text}` / `${name:text}` / `${name?{text1}:{text2}}`.
fn conditional(
    name: &str,
    text: &str,
    question: bool,
    resolver: &dyn Resolve,
    ctx: &mut Context,
) -> Result<String, ExpandError> {
    let value = resolver.resolve(name, ctx)?;
    let non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
    let (when_set, when_empty) = match (question, braced_pair(text)) {
        (true, Some((a, b))) => (a, b),
        (true, None) => (text, ""),
        (false, _) => ("", text),
    };
    expand(if non_empty { when_set } else { when_empty }, resolver, ctx)
}

/// Splits Postfix 3's `{text1}:{text2}` (white space allowed around the parts).
fn braced_pair(text: &str) -> Option<(&str, &str)> {
    let text = text.trim();
    let first = take_braced(text)?;
    let rest = text[first.len() + 2..]
        .trim_start()
        .strip_prefix(':')?
        .trim();
    let second = take_braced(rest)?;
    (rest.len() == second.len() + 2).then_some((first, second))
}

/// The inside of a leading `{...}` whose braces balance.
fn take_braced(text: &str) -> Option<&str> {
    if !text.starts_with('{') {
        return None;
    }
    let mut level = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '{' => level += 1,
            '}' => {
                level -= 1;
                if level == 0 {
                    return Some(&text[1..i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// A plain reference: the value, or empty (noted) when undefined.
fn lookup(name: &str, resolver: &dyn Resolve, ctx: &mut Context) -> Result<String, ExpandError> {
    match resolver.resolve(name, ctx)? {
        Some(value) => Ok(value),
        None => {
            let referrer = ctx.current();
            ctx.undefined.push((referrer, name.to_string()));
            Ok(String::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Map(HashMap<&'static str, &'static str>);

    impl Resolve for Map {
        fn resolve(&self, name: &str, ctx: &mut Context) -> Result<Option<String>, ExpandError> {
            let Some(raw) = self.0.get(name) else {
                return Ok(None);
            };
            ctx.enter(name)?;
            let value = expand(raw, self, ctx);
            ctx.leave();
            value.map(Some)
        }
    }

    fn run(pairs: &[(&'static str, &'static str)], text: &str) -> Result<String, ExpandError> {
        let map = Map(pairs.iter().copied().collect());
        expand(text, &map, &mut Context::new())
    }

    const VARS: &[(&str, &str)] = &[("a", "A"), ("b", "$a-b"), ("empty", "")];

    #[test]
    fn plain_forms() {
        assert_eq!(run(VARS, "$a ${a} $(a) $b x").unwrap(), "A A A A-b x");
        assert_eq!(run(VARS, "$a.$a_x/$a,").unwrap(), "A./A,");
        assert_eq!(run(VARS, "cost $$5 $$a").unwrap(), "cost $5 $a");
    }

    #[test]
    fn conditionals() {
        assert_eq!(run(VARS, "${a?yes}|${a:no}").unwrap(), "yes|");
        assert_eq!(run(VARS, "${empty?yes}|${empty:no}").unwrap(), "|no");
        assert_eq!(run(VARS, "${unset?yes}|${unset:no}").unwrap(), "|no");
        assert_eq!(run(VARS, "${a?{set $a}:{unset}}").unwrap(), "set A");
        assert_eq!(run(VARS, "${empty?{set}:{unset $a}}").unwrap(), "unset A");
        assert_eq!(run(VARS, "${a?x${b}y}").unwrap(), "xA-by");
    }

    #[test]
    fn undefined_expands_to_nothing_and_is_noted() {
        let map = Map(VARS.iter().copied().collect());
        let mut ctx = Context::new();
        assert_eq!(expand("<$nope>", &map, &mut ctx).unwrap(), "<>");
        assert_eq!(ctx.undefined, vec![(String::new(), "nope".to_string())]);
    }

    #[test]
    fn syntax_errors() {
        // (text, message)
        let table = [
            ("$", "empty macro name: \"$\""),
            ("a $ b", "empty macro name: \"a $ b\""),
            ("${a", "truncated macro reference: \"${a\""),
            ("$(a}", "truncated macro reference: \"$(a}\""),
            ("${}", "empty or unsupported macro name: \"${}\""),
            ("${-x}", "empty or unsupported macro name: \"${-x}\""),
            ("${a b}", "attribute name syntax error: \"${a b}\""),
        ];
        for (text, message) in table {
            let err = run(VARS, text).unwrap_err();
            assert_eq!(err.to_string(), message, "{text:?}: {err:?}");
        }
        assert!(matches!(
            run(VARS, "${a b}"),
            Err(ExpandError::BadOperator(inside)) if inside == "a b"
        ));
    }

    #[test]
    fn cycles_are_errors() {
        let err = run(&[("a", "$b"), ("b", "$a")], "$a").unwrap_err();
        assert_eq!(err.to_string(), "recursive reference: $a -> $b -> $a");
        let err = run(&[("s", "x $s")], "$s").unwrap_err();
        assert_eq!(err.to_string(), "recursive reference: $s -> $s");
        let err = run(&[("c", "${c?x}")], "$c").unwrap_err();
        assert!(err.to_string().contains("recursive"));
    }

    /// Runs `text` against owned settings on a thread of its own and gives up after 10 s,
    /// so an expansion without bounds fails the test instead of hanging the suite.
    fn run_bounded(pairs: Vec<(String, String)>, text: &str) -> Result<String, ExpandError> {
        let shown = text.to_string();
        let text = text.to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let leaked: Vec<(&'static str, &'static str)> = pairs
                .into_iter()
                .map(|(k, v)| (&*k.leak(), &*v.leak()))
                .collect();
            let _ = tx.send(run(&leaked, &text));
        });
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("expanding {shown:?} did not finish within 10 s"))
    }

    /// `n0 = TEMPLATE(n1)`, `n1 = TEMPLATE(n2)`, ... `n{levels} = leaf`.
    fn chain(levels: usize, template: &str, leaf: &str) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = (0..levels)
            .map(|i| {
                (
                    format!("n{i}"),
                    template.replace("NEXT", &format!("n{}", i + 1)),
                )
            })
            .collect();
        pairs.push((format!("n{levels}"), leaf.to_string()));
        pairs
    }

    #[test]
    fn expansion_is_bounded_in_depth_size_and_work() {
        let nesting = "unreasonable macro call nesting";
        let size = "unreasonable macro expansion size";
        // (what, settings, text to expand, length of the value or part of the error)
        type Case = (
            &'static str,
            Vec<(String, String)>,
            &'static str,
            Result<usize, &'static str>,
        );
        let cases: Vec<Case> = vec![
            // A chain as deep as Postfix allows works; one level deeper does not.
            ("chain of 99", chain(98, "$NEXT", "x"), "$n0", Ok(1)),
            (
                "chain of 150",
                chain(150, "$NEXT", "x"),
                "$n0",
                Err(nesting),
            ),
            (
                "chain of 10000",
                chain(10_000, "${NEXT}", "x"),
                "$n0",
                Err(nesting),
            ),
            // Each level doubles: 2^60 bytes if nothing stopped it.
            (
                "a = $b$b ... doubling",
                chain(60, "$NEXT$NEXT", "x"),
                "$n0",
                Err(size),
            ),
            (
                "doubling, long leaf",
                chain(60, "$NEXT $NEXT", "xxxxxxxx"),
                "$n0",
                Err(size),
            ),
            // Nothing to show for it, but 2^60 lookups.
            (
                "doubling to nothing",
                chain(60, "$NEXT$NEXT", ""),
                "$n0",
                Err(size),
            ),
            (
                "conditional doubling",
                chain(60, "${NEXT?}${NEXT:}x", ""),
                "$n0",
                Err(size),
            ),
            // Legitimate repetition well within the bounds.
            (
                "doubling 10 times",
                chain(10, "$NEXT$NEXT", "x"),
                "$n0",
                Ok(1024),
            ),
            (
                "a long value used twice",
                vec![
                    ("big".into(), "y".repeat(400_000)),
                    ("two".into(), "$big,$big".into()),
                ],
                "$two",
                Ok(800_001),
            ),
            (
                "self-reference",
                vec![("s".into(), "x $s".into())],
                "$s",
                Err("recursive reference"),
            ),
            (
                "self-reference through a condition",
                vec![("s".into(), "${s?x}".into())],
                "$s",
                Err("recursive reference"),
            ),
        ];
        for (what, pairs, text, want) in cases {
            let got = run_bounded(pairs, text);
            match (got, want) {
                (Ok(value), Ok(len)) => assert_eq!(value.len(), len, "{what}"),
                (Err(err), Err(part)) => {
                    let message = err.to_string();
                    assert!(message.contains(part), "{what}: {message}")
                }
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let deep = "${a?".repeat(10_000) + &"}".repeat(10_000);
        assert!(matches!(run(VARS, &deep), Err(ExpandError::Nesting)));
    }
}
