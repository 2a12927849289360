//! The header block of a message: where it ends, and its fields as they came (byte for
//! byte, folded lines included), so that headers we do not touch are passed on unchanged.

/// One header field: `Name: value` plus any continuation lines, each ending in `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub raw: Vec<u8>,
    /// Length of the name as written (before the colon and any white space).
    name_len: usize,
    /// Offset of the value (just past the colon).
    value_at: usize,
}

impl Field {
    pub fn name(&self) -> &[u8] {
        &self.raw[..self.name_len]
    }

    pub fn is(&self, name: &str) -> bool {
        self.name().eq_ignore_ascii_case(name.as_bytes())
    }

    /// Everything after the colon, folding included, without the final newline.
    pub fn value(&self) -> &[u8] {
        let end = self.raw.len() - usize::from(self.raw.ends_with(b"\n"));
        &self.raw[self.value_at..end]
    }

    /// Cuts the field to `limit` bytes (its name included, its final newline not), as
    /// Postfix's cleanup cuts a header at `header_size_limit`; it still ends in a
    /// newline, and never in white space or an empty continuation line. The name and
    /// colon always stay. Returns whether anything was cut.
    pub fn truncate(&mut self, limit: usize) -> bool {
        let len = self.raw.len() - usize::from(self.raw.ends_with(b"\n"));
        if len <= limit {
            return false;
        }
        self.raw.truncate(limit.max(self.value_at));
        while self.raw.len() > self.value_at
            && matches!(self.raw.last(), Some(b' ' | b'\t' | b'\r' | b'\n'))
        {
            self.raw.pop();
        }
        self.raw.push(b'\n');
        true
    }

    /// Replaces the value, keeping the name and colon as written.
    pub fn set_value(&mut self, value: &[u8]) {
        self.raw.truncate(self.value_at);
        self.raw.extend_from_slice(value);
        self.raw.push(b'\n');
    }
}

/// If `line` starts a header field (`Name:` with printable ASCII name characters, white
/// space before the colon tolerated as in obsolete syntax), returns the field.
pub fn start_field(line: &[u8]) -> Option<Field> {
    let name_len = line
        .iter()
        .position(|&c| !(33..=126).contains(&c) || c == b':')?;
    if name_len == 0 {
        return None;
    }
    let mut i = name_len;
    while i < line.len() && (line[i] == b' ' || line[i] == b'\t') {
        i += 1;
    }
    if line.get(i) != Some(&b':') {
        return None;
    }
    Some(Field {
        raw: line.to_vec(),
        name_len,
        value_at: i + 1,
    })
}

/// A continuation line of a folded header starts with white space.
pub fn is_continuation(line: &[u8]) -> bool {
    matches!(line.first(), Some(b' ' | b'\t'))
}

/// Headers whose values are address lists: Postfix's cleanup qualifies bare names in
/// these for local submissions.
pub const ADDRESS_HEADERS: &[&str] = &[
    "From",
    "Sender",
    "Reply-To",
    "Errors-To",
    "Return-Receipt-To",
    "Disposition-Notification-To",
    "To",
    "Cc",
    "Bcc",
    "Resent-From",
    "Resent-Sender",
    "Resent-Reply-To",
    "Resent-To",
    "Resent-Cc",
    "Resent-Bcc",
];

pub fn is_address_header(field: &Field) -> bool {
    ADDRESS_HEADERS.iter().any(|h| field.is(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_fields() {
        let f = start_field(b"Subject: hello\n").unwrap();
        assert!(f.is("subject"));
        assert_eq!(f.value(), b" hello");
        let f = start_field(b"Subject : obsolete\n").unwrap();
        assert_eq!(f.name(), b"Subject");
        assert!(start_field(b"hello world\n").is_none());
        assert!(start_field(b": no name\n").is_none());
        assert!(start_field(b"From root@x Tue Nov 24\n").is_none());
        assert!(start_field(b"\n").is_none());
        assert!(is_continuation(b"\tmore\n"));
        assert!(!is_continuation(b"more\n"));
    }

    #[test]
    fn truncation_keeps_a_well_formed_field() {
        let mut f = start_field(b"Subject: abcdef\n").unwrap();
        assert!(!f.truncate(15));
        assert_eq!(f.raw, b"Subject: abcdef\n");
        assert!(f.truncate(12));
        assert_eq!(f.raw, b"Subject: abc\n");
        // Cut just after a fold, or in the white space that starts the next line.
        let mut f = start_field(b"X: one\n   two\n").unwrap();
        assert!(f.truncate(9));
        assert_eq!(f.raw, b"X: one\n");
        // Never below the name and colon.
        let mut f = start_field(b"Subject: abc\n").unwrap();
        assert!(f.truncate(3));
        assert_eq!(f.raw, b"Subject:\n");
    }

    #[test]
    fn set_value_keeps_name() {
        let mut f = start_field(b"TO:  alice\n").unwrap();
        f.set_value(b"  alice@x");
        assert_eq!(f.raw, b"TO:  alice@x\n");
    }
}
