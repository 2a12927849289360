//! Dates in headers (`Date:`, `Received:`, bounces), written as Postfix writes them.

use chrono::{DateTime, Local};

/// `Tue, 24 Nov 2026 22:55:38 +0000 (UTC)`, as Postfix writes dates.
pub fn rfc2822_date(when: &DateTime<Local>) -> String {
    let zone = zone_abbreviation(when.timestamp());
    let base = when.format("%a, %e %b %Y %H:%M:%S %z").to_string();
    // RFC 5322 wants the day without padding.
    let base = base.replacen(",  ", ", ", 1);
    match zone {
        Some(z) => format!("{base} ({z})"),
        None => base,
    }
}

/// The local time zone's abbreviation (`UTC`, `CET`...) from the C library, which knows
/// the system's zone database.
fn zone_abbreviation(secs: i64) -> Option<String> {
    let t: libc::time_t = secs as libc::time_t;
    // SAFETY: localtime_r fills the zeroed struct we own; tm_zone then points into static
    // storage of the C library, which we copy out at once.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() || tm.tm_zone.is_null() {
            return None;
        }
        let zone = std::ffi::CStr::from_ptr(tm.tm_zone)
            .to_string_lossy()
            .into_owned();
        (!zone.is_empty()).then_some(zone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_look_like_postfix() {
        let when = DateTime::parse_from_rfc3339("2026-11-04T09:05:01Z")
            .unwrap()
            .with_timezone(&Local);
        let text = rfc2822_date(&when);
        // Day not padded, numeric zone, abbreviation in parentheses.
        assert!(
            text.contains(", 4 Nov 2026 ")
                || text.contains(", 3 Nov 2026 ")
                || text.contains(", 5 Nov 2026 "),
            "{text}"
        );
        assert!(text.contains(" +") || text.contains(" -"), "{text}");
    }
}
