//! The one timestamp format of every report: RFC 3339 in UTC with milliseconds,
//! e.g. `2026-12-01T03:04:05.678Z`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serializer;

/// `t` as RFC 3339 UTC with milliseconds, clamped to 1970..=9999 (the range `humantime`
/// formats).
pub(crate) fn format(t: SystemTime) -> String {
    let last = UNIX_EPOCH + Duration::from_secs(253_402_300_799); // 9999-12-31T23:59:59Z
    humantime::format_rfc3339_millis(t.clamp(UNIX_EPOCH, last)).to_string()
}

/// `t` for a file name: [`format`] to the second with `:` as `-` (Windows and some archive
/// tools refuse `:`), e.g. `2026-12-01T03-04-05Z`.
pub(crate) fn file_stamp(t: SystemTime) -> String {
    let full = format(t);
    let seconds = full.split('.').next().unwrap_or(&full);
    format!("{}Z", seconds.trim_end_matches('Z').replace(':', "-"))
}

/// Serde `serialize_with` for a time: [`format`].
pub(crate) fn rfc3339<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*t))
}

/// [`rfc3339`] for an optional time; `None` becomes `null`.
pub(crate) fn rfc3339_opt<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_with_millis_and_clamps() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_500);
        assert_eq!(super::format(t), "1970-01-01T00:00:01.500Z");
        let before = std::time::UNIX_EPOCH - std::time::Duration::from_secs(5);
        assert_eq!(super::format(before), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn file_stamps_have_no_colons() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_764_558_245_678);
        assert_eq!(super::file_stamp(t), "2025-12-01T03-04-05Z");
    }
}
