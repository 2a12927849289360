//! Lazy `$name` expansion, as Postfix's `mac_parse()`/`mac_expand()` do it for `main.cf`:
//! `$name`, `${name}`, `$(name)`, `$$` for a literal `$`, and the conditionals
//! `${name?text}` (text when `$name` is non-empty), `${name:text}` (text when it is empty or
//! undefined) and `${name?{text1}:{text2}}`. An undefined name expands to nothing and is
//! noted in the [`Context`], so the caller can warn about it.
//!
//! Values refer to each other, so a cycle (`a = $b`, `b = $a`) is possible: the context keeps
//! the chain of names being expanded and stops with an error when a name comes back, and
//! bounds both that chain and the nesting of `${...}` so no input can exhaust the stack.

/// Postfix stops at the same depth ("unreasonable macro call nesting").
const MAX_DEPTH: usize = 100;

/// Supplies the expanded value of a parameter (recursing through [`expand`] with the same
/// context), or `None` when the name is undefined.
pub trait Resolve {
    fn resolve(&self, name: &str, ctx: &mut Context) -> Result<Option<String>, String>;
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
}

impl Context {
    pub fn new() -> Context {
        Context::default()
    }

    /// Marks `name` as being expanded; fails when it already is (a cycle).
    pub fn enter(&mut self, name: &str) -> Result<(), String> {
        if self.stack.iter().any(|n| n == name) {
            let chain: Vec<String> = self
                .stack
                .iter()
                .skip_while(|n| *n != name)
                .chain(std::iter::once(&name.to_string()))
                .map(|n| format!("${n}"))
                .collect();
            return Err(format!("recursive reference: {}", chain.join(" -> ")));
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err("unreasonable macro call nesting".to_string());
        }
        self.stack.push(name.to_string());
        Ok(())
    }

    pub fn leave(&mut self) {
        self.stack.pop();
    }

    fn current(&self) -> String {
        self.stack.last().cloned().unwrap_or_default()
    }
}

/// Expands every reference in `text`.
pub fn expand(text: &str, resolver: &dyn Resolve, ctx: &mut Context) -> Result<String, String> {
    if ctx.nesting >= MAX_DEPTH {
        return Err("unreasonable macro call nesting".to_string());
    }
    ctx.nesting += 1;
    let result = expand_inner(text, resolver, ctx);
    ctx.nesting -= 1;
    result
}

fn expand_inner(text: &str, resolver: &dyn Resolve, ctx: &mut Context) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let (reference, tail) = split_reference(after, text)?;
        out.push_str(&expand_reference(reference, resolver, ctx)?);
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

/// Takes the reference after a `$`: the inside of `{...}`/`(...)` (brackets of the same kind
/// nest), or a bare name of letters, digits and `_`. Returns it and the text after it.
fn split_reference<'a>(after: &'a str, whole: &str) -> Result<(Reference<'a>, &'a str), String> {
    let close = match after.chars().next() {
        Some('{') => '}',
        Some('(') => ')',
        _ => {
            let end = after
                .find(|c: char| !is_name_char(c))
                .unwrap_or(after.len());
            if end == 0 {
                return Err(format!("empty macro name: \"{whole}\""));
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
    Err(format!("truncated macro reference: \"{whole}\""))
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
) -> Result<String, String> {
    let inside = match reference {
        Reference::Bare(name) => return lookup(name, resolver, ctx),
        Reference::Braced(inside) => inside,
    };
    let name_end = inside
        .find(|c: char| !is_name_char(c))
        .unwrap_or(inside.len());
    let (name, op) = inside.split_at(name_end);
    if name.is_empty() {
        return Err(format!(
            "empty or unsupported macro name: \"${{{inside}}}\""
        ));
    }
    let mut ops = op.chars();
    match ops.next() {
        None => lookup(name, resolver, ctx),
        Some('?') => conditional(name, ops.as_str(), true, resolver, ctx),
        Some(':') => conditional(name, ops.as_str(), false, resolver, ctx),
        Some(_) => Err(format!("attribute name syntax error: \"${{{inside}}}\"")),
    }
}

/// `${name?text}` / `${name:text}` / `${name?{text1}:{text2}}`.
fn conditional(
    name: &str,
    text: &str,
    question: bool,
    resolver: &dyn Resolve,
    ctx: &mut Context,
) -> Result<String, String> {
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
fn lookup(name: &str, resolver: &dyn Resolve, ctx: &mut Context) -> Result<String, String> {
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
        fn resolve(&self, name: &str, ctx: &mut Context) -> Result<Option<String>, String> {
            let Some(raw) = self.0.get(name) else {
                return Ok(None);
            };
            ctx.enter(name)?;
            let value = expand(raw, self, ctx);
            ctx.leave();
            value.map(Some)
        }
    }

    fn run(pairs: &[(&'static str, &'static str)], text: &str) -> Result<String, String> {
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
        assert!(run(VARS, "$").unwrap_err().contains("empty macro name"));
        assert!(run(VARS, "a $ b").unwrap_err().contains("empty macro name"));
        assert!(run(VARS, "${a").unwrap_err().contains("truncated"));
        assert!(run(VARS, "${}").is_err());
        assert!(run(VARS, "${a b}").unwrap_err().contains("syntax error"));
    }

    #[test]
    fn cycles_are_errors() {
        let err = run(&[("a", "$b"), ("b", "$a")], "$a").unwrap_err();
        assert_eq!(err, "recursive reference: $a -> $b -> $a");
        let err = run(&[("s", "x $s")], "$s").unwrap_err();
        assert_eq!(err, "recursive reference: $s -> $s");
        let err = run(&[("c", "${c?x}")], "$c").unwrap_err();
        assert!(err.contains("recursive"));
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let deep = "${a?".repeat(10_000) + &"}".repeat(10_000);
        assert!(run(VARS, &deep).unwrap_err().contains("nesting"));
    }
}
