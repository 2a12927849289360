//! Message lists as mailx reads them: numbers (`3`), ranges (`1-3`), `.` (current), `^`
//! (first), `$` (last), `*` (all), separated by spaces or commas. An empty list means the
//! current message.

/// Why a message list names nothing to act on. Messages read like mailx's; message
/// numbers are 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListError {
    /// Nothing eligible (the current message for an empty list, or nothing at all).
    NoApplicable,
    /// `undelete` with an empty list when the current message is not deleted.
    NoDeleted,
    /// A range whose start is after its end: the token.
    InvalidRange(String),
    /// A single message that is deleted (for a command on live messages).
    Inappropriate(usize),
    /// A single message that is not deleted (for `undelete`).
    NotDeleted(usize),
    /// A token that is neither a number nor `.`, `^`, `$`, `*`.
    UnknownSpec(String),
    /// A number outside the folder.
    InvalidNumber(usize),
}

impl std::fmt::Display for ListError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListError::NoApplicable => f.write_str("No applicable messages"),
            ListError::NoDeleted => f.write_str("No deleted messages"),
            ListError::InvalidRange(token) => write!(f, "{token}: Invalid range"),
            ListError::Inappropriate(n) => write!(f, "{n}: Inappropriate message"),
            ListError::NotDeleted(n) => write!(f, "{n}: Not deleted"),
            ListError::UnknownSpec(token) => write!(f, "{token}: Unknown message specification"),
            ListError::InvalidNumber(n) => write!(f, "{n}: Invalid message number"),
        }
    }
}

impl std::error::Error for ListError {}

/// Which messages a list may name: `live` for most commands, deleted ones for `undelete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Live,
    Deleted,
}

/// Resolves `spec` to 0-based message indexes, in order, without repeats. `deleted[i]`
/// says whether message `i` is deleted; `current` is 0-based. Errors read like mailx's.
pub fn parse(
    spec: &str,
    deleted: &[bool],
    current: usize,
    want: Want,
) -> Result<Vec<usize>, ListError> {
    let count = deleted.len();
    let eligible = |i: usize| match want {
        Want::Live => !deleted[i],
        Want::Deleted => deleted[i],
    };
    let spec = spec.trim();
    if spec.is_empty() {
        if current < count && eligible(current) {
            return Ok(vec![current]);
        }
        return Err(match want {
            Want::Live => ListError::NoApplicable,
            Want::Deleted => ListError::NoDeleted,
        });
    }
    let mut picked = Vec::new();
    for token in spec.split([' ', '\t', ',']).filter(|t| !t.is_empty()) {
        let range = match token {
            "*" => (0..count).filter(|&i| eligible(i)).collect(),
            _ => {
                let (a, b) = match token.split_once('-') {
                    Some((a, b)) if !a.is_empty() => (a, b),
                    _ => (token, token),
                };
                let first = number(a, count, current)?;
                let last = number(b, count, current)?;
                if first > last {
                    return Err(ListError::InvalidRange(token.to_string()));
                }
                let all: Vec<usize> = (first..=last).collect();
                if first == last && !eligible(first) {
                    return Err(match want {
                        Want::Live => ListError::Inappropriate(first + 1),
                        Want::Deleted => ListError::NotDeleted(first + 1),
                    });
                }
                all.into_iter().filter(|&i| eligible(i)).collect::<Vec<_>>()
            }
        };
        for i in range {
            if !picked.contains(&i) {
                picked.push(i);
            }
        }
    }
    if picked.is_empty() {
        return Err(ListError::NoApplicable);
    }
    Ok(picked)
}

fn number(token: &str, count: usize, current: usize) -> Result<usize, ListError> {
    let n = match token {
        "." => return Ok(current.min(count.saturating_sub(1))),
        "^" => 1,
        "$" => count,
        _ => token
            .parse::<usize>()
            .map_err(|_| ListError::UnknownSpec(token.to_string()))?,
    };
    if n == 0 || n > count {
        return Err(ListError::InvalidNumber(n));
    }
    Ok(n - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_ranges() {
        let d = [false, false, true, false, false];
        assert_eq!(parse("", &d, 1, Want::Live), Ok(vec![1]));
        assert_eq!(parse("1-4", &d, 0, Want::Live), Ok(vec![0, 1, 3]));
        assert_eq!(parse("2 4,5", &d, 0, Want::Live), Ok(vec![1, 3, 4]));
        assert_eq!(parse("*", &d, 0, Want::Live), Ok(vec![0, 1, 3, 4]));
        assert_eq!(parse("$ ^ .", &d, 3, Want::Live), Ok(vec![4, 0, 3]));
        assert_eq!(parse("*", &d, 0, Want::Deleted), Ok(vec![2]));
        assert_eq!(parse("3", &d, 0, Want::Deleted), Ok(vec![2]));
    }

    #[test]
    fn errors() {
        let d = [false, true];
        // (list, current, want, error, message)
        let table = [
            (
                "9",
                0,
                Want::Live,
                ListError::InvalidNumber(9),
                "9: Invalid message number",
            ),
            (
                "2",
                0,
                Want::Live,
                ListError::Inappropriate(2),
                "2: Inappropriate message",
            ),
            (
                "1",
                0,
                Want::Deleted,
                ListError::NotDeleted(1),
                "1: Not deleted",
            ),
            (
                "x",
                0,
                Want::Live,
                ListError::UnknownSpec("x".into()),
                "x: Unknown message specification",
            ),
            (
                "2-1",
                0,
                Want::Live,
                ListError::InvalidRange("2-1".into()),
                "2-1: Invalid range",
            ),
            (
                "",
                1,
                Want::Live,
                ListError::NoApplicable,
                "No applicable messages",
            ),
            (
                "",
                0,
                Want::Deleted,
                ListError::NoDeleted,
                "No deleted messages",
            ),
            (
                "-",
                0,
                Want::Live,
                ListError::UnknownSpec("-".into()),
                "-: Unknown message specification",
            ),
            (
                "1-",
                0,
                Want::Live,
                ListError::UnknownSpec("".into()),
                ": Unknown message specification",
            ),
        ];
        for (list, current, want, error, message) in table {
            let got = parse(list, &d, current, want).unwrap_err();
            assert_eq!(got, error, "{list:?}");
            assert_eq!(got.to_string(), message, "{list:?}");
        }
        assert_eq!(parse("", &[], 0, Want::Live), Err(ListError::NoApplicable));
    }
}
