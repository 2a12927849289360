//! Queue IDs: ten characters of `[0-9A-Za-z]`, sortable by arrival time, unique on the
//! machine.
//!
//! An ID is the base-62 spelling of `micros * 62 + tag`, where `micros` is the arrival
//! time in microseconds since the Unix epoch and `tag` is derived from the process ID.
//! The alphabet is in ASCII order, so comparing IDs as strings compares arrival times;
//! ten characters last until the year 2399 and fit Postfix's short `mailq` column
//! (`%-11s`: ten characters plus the status mark). Two processes could still draw the
//! same ID in the same microsecond, so the queue never trusts an ID to be free: files
//! are moved into place with a rename that refuses to replace (see `store`), and a
//! collision draws a new ID.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The digits of the base-62 alphabet, in ASCII order so that IDs sort like numbers.
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
pub const ID_LEN: usize = 10;

/// A validated queue ID. Copy-able and small, so a listing can hold every ID of a large
/// queue to sort them without holding any envelope.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId([u8; ID_LEN]);

impl QueueId {
    /// Accepts exactly what `generate` can produce: ten characters of the alphabet. This is
    /// the only way a user-supplied string becomes a path component, so nothing like `/`,
    /// `..` or a temporary file's leading dot can get through.
    pub fn parse(text: &str) -> Option<QueueId> {
        let bytes = text.as_bytes();
        if bytes.len() != ID_LEN || !bytes.iter().all(u8::is_ascii_alphanumeric) {
            return None;
        }
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(bytes);
        Some(QueueId(id))
    }

    /// A fresh ID for a message arriving now. Later calls in the same process never
    /// return an earlier or equal ID, even if the clock stands still or steps back.
    pub fn generate() -> QueueId {
        static LAST: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let tag = u64::from(std::process::id()) % 62;
        let mut value = now.saturating_mul(62).saturating_add(tag);
        // Strictly increasing within this process; the tag keeps processes apart.
        let mut last = LAST.load(Ordering::Relaxed);
        loop {
            if value <= last {
                value = last + 62;
            }
            match LAST.compare_exchange(last, value, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break,
                Err(seen) => last = seen,
            }
        }
        QueueId::from_value(value)
    }

    /// The ID for a number [`value`](Self::value) gave: every ten-digit base-62 number
    /// is below 2^60, so a listing can keep an ID in 60 bits of a `u64`.
    pub(crate) fn from_value(mut value: u64) -> QueueId {
        let mut id = [b'0'; ID_LEN];
        for slot in id.iter_mut().rev() {
            *slot = ALPHABET[(value % 62) as usize];
            value /= 62;
        }
        QueueId(id)
    }

    /// The ID as the number it spells; the numbers sort as the IDs do.
    pub(crate) fn value(&self) -> u64 {
        self.0.iter().fold(0u64, |acc, &c| {
            let digit = match c {
                b'0'..=b'9' => c - b'0',
                b'A'..=b'Z' => c - b'A' + 10,
                _ => c - b'a' + 36,
            };
            acc.wrapping_mul(62).wrapping_add(u64::from(digit))
        })
    }

    /// The arrival time encoded in the ID, in microseconds since the epoch.
    pub fn micros(&self) -> u64 {
        self.value() / 62
    }

    pub fn as_str(&self) -> &str {
        // The bytes are always ASCII alphanumerics (checked in `parse`, built in
        // `from_value`), so this cannot fail.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    pub fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueId({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_increase() {
        let mut last = QueueId::generate();
        for _ in 0..10_000 {
            let next = QueueId::generate();
            assert!(next > last, "{next} after {last}");
            assert_eq!(QueueId::parse(next.as_str()), Some(next));
            last = next;
        }
    }

    #[test]
    fn id_encodes_arrival_time() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        let id = QueueId::generate();
        assert!(id.micros() >= before);
        assert!(id.micros() < before + 10_000_000);
    }

    #[test]
    fn rejects_anything_but_ten_alphanumerics() {
        for bad in [
            "",
            "abc",
            "../../etc/x",
            "ABCDEFGHI/",
            ".ABCDEFGHI",
            "ABCDEFGHIJK",
            "ABCDEFGH-J",
            "ABCDEFGHÉ",
        ] {
            assert_eq!(QueueId::parse(bad), None, "{bad:?}");
        }
        assert!(QueueId::parse("0AbCdEfGh9").is_some());
    }

    #[test]
    fn string_order_is_numeric_order() {
        let a = QueueId::from_value(61);
        let b = QueueId::from_value(62);
        assert!(a < b);
        assert_eq!(a.as_str(), "000000000z");
        assert_eq!(b.as_str(), "0000000010");
    }
}
