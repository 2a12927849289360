//! Message lists as mailx reads them: numbers (`3`), ranges (`1-3`), `.` (current), `^`
//! (first), `$` (last), `*` (all), separated by spaces or commas. An empty list means the
//! current message.

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
) -> Result<Vec<usize>, String> {
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
            Want::Live => "No applicable messages".into(),
            Want::Deleted => "No deleted messages".into(),
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
                    return Err(format!("{token}: Invalid range"));
                }
                let all: Vec<usize> = (first..=last).collect();
                if first == last && !eligible(first) {
                    return Err(match want {
                        Want::Live => format!("{}: Inappropriate message", first + 1),
                        Want::Deleted => format!("{}: Not deleted", first + 1),
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
        return Err("No applicable messages".into());
    }
    Ok(picked)
}

fn number(token: &str, count: usize, current: usize) -> Result<usize, String> {
    let n = match token {
        "." => return Ok(current.min(count.saturating_sub(1))),
        "^" => 1,
        "$" => count,
        _ => token
            .parse::<usize>()
            .map_err(|_| format!("{token}: Unknown message specification"))?,
    };
    if n == 0 || n > count {
        return Err(format!("{n}: Invalid message number"));
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
        assert_eq!(
            parse("9", &d, 0, Want::Live),
            Err("9: Invalid message number".into())
        );
        assert_eq!(
            parse("2", &d, 0, Want::Live),
            Err("2: Inappropriate message".into())
        );
        assert!(parse("x", &d, 0, Want::Live).is_err());
        assert!(parse("2-1", &d, 0, Want::Live).is_err());
        assert!(parse("", &d, 1, Want::Live).is_err());
        assert!(parse("", &[], 0, Want::Live).is_err());
        assert!(parse("-", &d, 0, Want::Live).is_err());
        assert!(parse("1-", &d, 0, Want::Live).is_err());
    }
}
