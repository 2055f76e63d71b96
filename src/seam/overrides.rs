//! Run-time changes still in force: the list behind `GET /debug/overrides`.
//!
//! An operator who turns on debug logging or heap sampling during an incident may forget to
//! turn it off; the next person on call should see at a glance what differs from the
//! service's configured state, who changed it and when it ends.
//!

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::Serialize;

use crate::encode::time::{rfc3339, rfc3339_opt};

/// One run-time change still in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct OverrideEntry {
    /// What was changed: `"log_level"`, `"heap_sampling"`, … At most one entry per kind.
    pub(crate) kind: String,
    /// The value in force, e.g. the tracing filter directive.
    pub(crate) value: String,
    /// The name of the token that made the change (never its secret).
    pub(crate) set_by: String,
    /// When the change was made; RFC 3339 in JSON.
    #[serde(serialize_with = "rfc3339")]
    pub(crate) set_at: SystemTime,
    /// When the change reverts by itself; `None` (JSON `null`) if it stays until undone.
    #[serde(serialize_with = "rfc3339_opt")]
    pub(crate) expires_at: Option<SystemTime>,
}

/// A shared registry of run-time changes, keyed by kind. Cheap to clone; clones share the list.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overrides {
    entries: Arc<Mutex<BTreeMap<String, OverrideEntry>>>,
}

impl Overrides {
    #[cfg_attr(not(test), allow(dead_code))]
    /// An empty registry.
    pub(crate) fn new() -> Overrides {
        Overrides::default()
    }

    /// Records that `kind` is now `value`, set by the token named `set_by`, until `expires_at`
    /// (`None`: until cleared). Replaces an earlier entry of the same kind.
    pub(crate) fn record(
        &self,
        kind: &str,
        value: String,
        set_by: &str,
        expires_at: Option<SystemTime>,
    ) {
        let entry = OverrideEntry {
            kind: kind.to_string(),
            value,
            set_by: set_by.to_string(),
            set_at: SystemTime::now(),
            expires_at,
        };
        self.lock().insert(kind.to_string(), entry);
    }

    /// Forgets the entry of `kind`, if any: the change was undone.
    pub(crate) fn clear(&self, kind: &str) {
        self.lock().remove(kind);
    }

    /// Every change still in force, sorted by kind. Entries past their `expires_at` are dropped.
    pub(crate) fn list(&self) -> Vec<OverrideEntry> {
        let now = SystemTime::now();
        let mut entries = self.lock();
        entries.retain(|_, e| !matches!(e.expires_at, Some(t) if t <= now));
        entries.values().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, OverrideEntry>> {
        // The map stays consistent even if a holder panicked: every update is one insert/remove.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn record_replace_clear_and_expire() {
        let o = Overrides::new();
        o.record("log_level", "debug".into(), "ops", None);
        o.record("log_level", "trace".into(), "alice", None);
        o.record(
            "heap_sampling",
            "on".into(),
            "ops",
            Some(SystemTime::now() - Duration::from_secs(1)),
        );
        let list = o.list();
        assert_eq!(list.len(), 1, "expired entry dropped: {list:?}");
        assert_eq!(
            (list[0].value.as_str(), list[0].set_by.as_str()),
            ("trace", "alice")
        );
        o.clear("log_level");
        assert!(o.list().is_empty());
    }

    #[test]
    fn serializes_times_as_rfc3339() {
        let o = Overrides::new();
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        o.record(
            "log_level",
            "debug".into(),
            "ops",
            Some(at + Duration::from_secs(1 << 40)),
        );
        let json = serde_json::to_value(o.list()).expect("serializable");
        assert_eq!(
            json[0]["expires_at"], "9999-12-31T23:59:59.000Z",
            "clamped, no panic"
        );
        o.record("log_level", "debug".into(), "ops", Some(at));
        let json = serde_json::to_value(&o.entries.lock().expect("lock")["log_level"]);
        assert_eq!(
            json.expect("serializable")["expires_at"],
            "2023-11-14T22:13:20.123Z"
        );
        o.record("log_level", "debug".into(), "ops", None);
        let json = serde_json::to_value(o.list()).expect("serializable");
        assert!(json[0]["expires_at"].is_null());
        assert!(json[0]["set_at"].as_str().is_some());
    }
}
