//! Turning expanded values into typed ones, with Postfix's rules. Errors are messages that
//! name the value; the caller adds the parameter's name.

use std::path::PathBuf;
use std::time::Duration;

/// A `type:path` lookup table, such as `hash:/etc/aliases`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The table type: `hash`, `cdb`, `lmdb`, `static`...
    pub kind: String,
    /// What follows the first `:`; a file for file-based types, a value for `static:`.
    pub path: PathBuf,
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.path.display())
    }
}

/// A value that is not of its parameter's type (the variant names the type); each carries
/// the value as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueError {
    Time(String),
    Number(String),
    Boolean(String),
    /// A table item without a `type:name` form.
    Table(String),
}

impl std::fmt::Display for ValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValueError::Time(value) => write!(f, "bad time value: \"{value}\""),
            ValueError::Number(value) => write!(f, "bad numerical value: \"{value}\""),
            ValueError::Boolean(value) => {
                write!(f, "bad boolean value: \"{value}\" (use yes or no)")
            }
            ValueError::Table(item) => write!(
                f,
                "table \"{item}\" needs a type:name form, such as hash:/etc/aliases"
            ),
        }
    }
}

impl std::error::Error for ValueError {}

/// Splits a list the way Postfix's `mystrtok(" ,\t\r\n")` does: commas and white space
/// both separate, empty items vanish.
pub fn split_list(value: &str) -> Vec<String> {
    value
        .split([' ', ',', '\t', '\r', '\n'])
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

/// A time value: digits and an optional unit (`s m h d w`); a bare number is in
/// `default_unit`, as Postfix's `conv_time()`.
pub fn parse_time(value: &str, default_unit: char) -> Result<Duration, ValueError> {
    let bad = || ValueError::Time(value.to_string());
    let digits_end = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(digits_end);
    let unit = match unit.chars().collect::<Vec<_>>().as_slice() {
        [] => default_unit,
        [unit] => unit.to_ascii_lowercase(),
        _ => return Err(bad()),
    };
    let count: u64 = digits.parse().map_err(|_| bad())?;
    let seconds_per_unit = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        'w' => 7 * 86400,
        _ => return Err(bad()),
    };
    let seconds = count.checked_mul(seconds_per_unit).ok_or_else(bad)?;
    Ok(Duration::from_secs(seconds))
}

/// A non-negative integer.
pub fn parse_number(value: &str) -> Result<u64, ValueError> {
    let bad = || ValueError::Number(value.to_string());
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    value.parse().map_err(|_| bad())
}

/// `yes` or `no`, in any case.
pub fn parse_bool(value: &str) -> Result<bool, ValueError> {
    if value.eq_ignore_ascii_case("yes") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("no") {
        Ok(false)
    } else {
        Err(ValueError::Boolean(value.to_string()))
    }
}

/// A list of `type:path` tables; an item without a type is an error (Postfix would fail
/// later, when opening the table).
pub fn parse_tables(value: &str) -> Result<Vec<Table>, ValueError> {
    split_list(value)
        .iter()
        .map(|item| parse_table(item))
        .collect()
}

fn parse_table(item: &str) -> Result<Table, ValueError> {
    let missing = || ValueError::Table(item.to_string());
    let (kind, path) = item.split_once(':').ok_or_else(missing)?;
    let kind_ok = !kind.is_empty()
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !kind_ok || path.is_empty() {
        return Err(missing());
    }
    Ok(Table {
        kind: kind.to_string(),
        path: PathBuf::from(path),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_on_commas_and_white_space() {
        assert_eq!(split_list("a, b,,c\td\r\ne ,"), ["a", "b", "c", "d", "e"]);
        assert!(split_list(" , ").is_empty());
    }

    #[test]
    fn time_units() {
        let secs = |v, u| parse_time(v, u).unwrap().as_secs();
        assert_eq!(secs("300s", 'd'), 300);
        assert_eq!(secs("5m", 's'), 300);
        assert_eq!(secs("2h", 's'), 7200);
        assert_eq!(secs("5d", 's'), 5 * 86400);
        assert_eq!(secs("1w", 's'), 7 * 86400);
        assert_eq!(secs("3", 'd'), 3 * 86400);
        assert_eq!(secs("3", 's'), 3);
        assert_eq!(secs("0", 's'), 0);
        assert_eq!(secs("5D", 's'), 5 * 86400);
    }

    #[test]
    fn bad_times() {
        for bad in [
            "",
            "s",
            "5x",
            "5ss",
            "-5s",
            "1.5h",
            " 5s",
            "99999999999999999999s",
        ] {
            assert!(parse_time(bad, 's').is_err(), "{bad:?}");
        }
        assert!(parse_time(&format!("{}w", u64::MAX / 2), 's').is_err());
        assert!(
            parse_time("5x", 's')
                .unwrap_err()
                .to_string()
                .contains("\"5x\"")
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("10240000").unwrap(), 10_240_000);
        assert_eq!(parse_number("0").unwrap(), 0);
        for bad in ["", "-1", "+1", "10k", "1 0", "99999999999999999999999"] {
            assert!(parse_number(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn booleans() {
        assert!(parse_bool("yes").unwrap());
        assert!(parse_bool("YES").unwrap());
        assert!(!parse_bool("No").unwrap());
        assert!(parse_bool("true").is_err());
        assert!(parse_bool("").is_err());
    }

    #[test]
    fn tables() {
        let t = parse_tables("hash:/etc/aliases, cdb:/x/y static:anyone").unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].kind, "hash");
        assert_eq!(t[0].path, PathBuf::from("/etc/aliases"));
        assert_eq!(t[1].to_string(), "cdb:/x/y");
        assert_eq!(t[2].kind, "static");
        assert!(parse_tables("").unwrap().is_empty());
        assert!(parse_tables("/etc/aliases").is_err());
        assert!(parse_tables("hash:").is_err());
        assert!(parse_tables(":/x").is_err());
        assert!(parse_tables("hash:/a, /etc/aliases").is_err());
    }

    #[test]
    fn errors_carry_the_value() {
        // (got, want, message)
        let table = [
            (
                parse_time("5x", 's').unwrap_err(),
                ValueError::Time("5x".into()),
                "bad time value: \"5x\"",
            ),
            (
                parse_number("10k").unwrap_err(),
                ValueError::Number("10k".into()),
                "bad numerical value: \"10k\"",
            ),
            (
                parse_bool("true").unwrap_err(),
                ValueError::Boolean("true".into()),
                "bad boolean value: \"true\" (use yes or no)",
            ),
            (
                parse_tables("hash:/a, /etc/aliases").unwrap_err(),
                ValueError::Table("/etc/aliases".into()),
                "table \"/etc/aliases\" needs a type:name form, such as hash:/etc/aliases",
            ),
        ];
        for (got, want, message) in table {
            assert_eq!(got, want);
            assert_eq!(got.to_string(), message);
        }
    }
}
