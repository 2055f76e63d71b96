//! What an incident is: its id, kind, reason and files ([`Meta`], the archive's `meta.json`),
//! and the strict id format that keeps a request's id from naming any other file.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// What caused an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// A rule crossed its threshold (`trigger.json` says which and by how much).
    Trigger,
    /// A panic that was about to end the process.
    Panic,
    /// A fatal signal (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT) in the previous run, found
    /// and symbolized at this start.
    Crash,
    /// Taken on request (`POST /debug/incidents`).
    Manual,
}

impl Kind {
    /// Every kind, in the order the docs list them.
    pub(crate) const ALL: [Kind; 4] = [Kind::Trigger, Kind::Panic, Kind::Crash, Kind::Manual];

    /// The kind's name in ids and JSON.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Trigger => "trigger",
            Kind::Panic => "panic",
            Kind::Crash => "crash",
            Kind::Manual => "manual",
        }
    }

    fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// One incident as listed by `GET /debug/incidents` and stored as `meta.json`, the first file
/// of its archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Meta {
    /// `<UTC time to the millisecond>-<kind>-<6 hex digits>`, e.g. `20261206T031507123Z-trigger-3fa9c1`; sorts by
    /// time.
    pub(crate) id: String,
    /// What caused it.
    pub(crate) kind: Kind,
    /// One line on why, e.g. `process CPU above 90 % of 2 cores for 30 s` or the panic message.
    pub(crate) reason: String,
    /// When it was taken (for a crash: when the previous run crashed); RFC 3339 UTC with
    /// milliseconds.
    pub(crate) time: String,
    /// The archive's size on disk, bytes (0 inside the archive's own `meta.json`).
    #[serde(default)]
    pub(crate) size: u64,
    /// The files in the archive besides `meta.json`, in archive order.
    pub(crate) files: Vec<String>,
    /// The process that took it.
    pub(crate) pid: u32,
    /// The service's name.
    pub(crate) service: String,
}

/// A fresh id for an incident of `kind` taken at `at`.
pub(crate) fn new_id(kind: Kind, at: SystemTime) -> String {
    let stamp = crate::encode::time::format(at); // 2026-12-06T03:15:07.123Z
    let compact: String = stamp
        .chars()
        .filter(|c| !matches!(c, '-' | ':' | '.'))
        .collect();
    let mut r = [0u8; 3];
    let _ = getrandom::fill(&mut r);
    format!("{compact}-{}-{}", kind.as_str(), hex::encode(r))
}

/// Whether `id` has exactly the shape [`new_id`] makes: `YYYYMMDDTHHMMSSmmmZ-<kind>-<6 hex>`,
/// so it can only ever name a file of the incident directory.
pub(crate) fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    if b.len() < 19 + 1 + 5 + 1 + 6 || b.len() > 40 {
        return false;
    }
    let stamp_ok = b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..18].iter().all(u8::is_ascii_digit)
        && b[18] == b'Z'
        && b[19] == b'-';
    if !stamp_ok {
        return false;
    }
    let rest = &id[20..];
    let Some((kind, tail)) = rest.split_once('-') else {
        return false;
    };
    Kind::parse(kind).is_some()
        && tail.len() == 6
        && tail
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// A short explanation of the id format, for a 400.
pub(crate) const ID_FORMAT: &str =
    "an incident id is YYYYMMDDTHHMMSSmmmZ-<trigger|panic|crash|manual>-<6 hex digits>, as listed by GET /debug/incidents";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_valid_and_strange_ones_are_not() {
        for k in Kind::ALL {
            let id = new_id(k, SystemTime::now());
            assert!(valid_id(&id), "{id}");
        }
        for bad in [
            "",
            "..",
            "../etc/passwd",
            "20261206T031507123Z-manual-3fa9c",
            "20261206T031507123Z-manual-3fa9c1/",
            "20261206T031507123Z-other-3fa9c1",
            "20261206T031507123Z-manual-3FA9C1",
            "20261206T031507123Z-manual-3fa9c1.tar.gz",
            "2026120xT031507123Z-manual-3fa9c1",
            "20261206T031507123Z-manual-..a9c1",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
        assert!(valid_id("20261206T031507123Z-crash-00ff00"));
    }
}
