//! What one check found, and its two printed forms: one line per check for people, a
//! JSON array for programs.

use serde_json::{Value, json};

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// No record (the record to publish is in `expected`).
    Missing,
    /// A record that is not what it must be, or no answer for it.
    Wrong,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Missing => "missing",
            Status::Wrong => "wrong",
        }
    }
}

/// One check: `a`, `mx`, `ptr`, `spf`, `dkim` or `dmarc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub check: &'static str,
    pub status: Status,
    /// The DNS name looked at (no final dot).
    pub name: String,
    /// What DNS answered, one item per record (empty: nothing).
    pub found: Vec<String>,
    /// What the record must be: when missing, the record to publish in zone-file form.
    pub expected: String,
}

/// One line per check: `CHECK STATUS NAME: ...`.
pub fn text(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let found = if c.found.is_empty() {
            "nothing".to_string()
        } else {
            c.found.join(", ")
        };
        let detail = match c.status {
            Status::Ok => found,
            Status::Missing => format!("not found; publish: {}", c.expected),
            Status::Wrong => format!("found {found}; expected {}", c.expected),
        };
        out.push_str(&format!(
            "{:<6}{:<8}{}: {}\n",
            c.check,
            c.status.word(),
            c.name,
            one_line(&detail)
        ));
    }
    out
}

/// The JSON array of `--json`.
pub fn json(checks: &[Check]) -> String {
    let array: Vec<Value> = checks
        .iter()
        .map(|c| {
            json!({
                "check": c.check,
                "status": c.status.word(),
                "name": c.name,
                "found": c.found,
                "expected": c.expected,
            })
        })
        .collect();
    format!("{}\n", Value::Array(array))
}

/// DNS text may hold control characters (a TXT record is any bytes): they must not
/// break the one-line-per-check form or move a terminal's cursor.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(status: Status) -> Check {
        Check {
            check: "mx",
            status,
            name: "example.com".into(),
            found: vec!["10 mx.example.com (no address)".into()],
            expected: "example.com. IN MX 10 mail.example.com.".into(),
        }
    }

    #[test]
    fn each_status_has_its_line() {
        let text = text(&[
            check(Status::Ok),
            check(Status::Missing),
            check(Status::Wrong),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "mx    ok      example.com: 10 mx.example.com (no address)"
        );
        assert_eq!(
            lines[1],
            "mx    missing example.com: not found; publish: example.com. IN MX 10 mail.example.com."
        );
        assert!(lines[2].starts_with("mx    wrong   example.com: found 10 mx"));
        assert!(lines[2].ends_with("; expected example.com. IN MX 10 mail.example.com."));
    }

    #[test]
    fn control_characters_stay_on_the_line() {
        let mut c = check(Status::Ok);
        c.found = vec!["v=spf1\n-all\x1b[2J".into()];
        assert_eq!(text(&[c]).lines().count(), 1);
    }

    #[test]
    fn json_has_the_documented_keys() {
        let parsed: Value = serde_json::from_str(&json(&[check(Status::Wrong)])).unwrap();
        assert_eq!(parsed[0]["check"], "mx");
        assert_eq!(parsed[0]["status"], "wrong");
        assert_eq!(parsed[0]["name"], "example.com");
        assert_eq!(parsed[0]["found"][0], "10 mx.example.com (no address)");
        assert!(parsed[0]["expected"].is_string());
    }
}
