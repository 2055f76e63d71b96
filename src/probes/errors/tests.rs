//! Error groups: folding, counts, eviction, redaction, counters.

use super::error_report::report;
use crate::layer::shared::event_counts;
use crate::layer::test_support::{dispatch, with};
use crate::layer::Options;

fn fail(id: u64) {
    tracing::error!(user_id = id, token = "s3cr3t-value", "payment {id} failed");
}

#[test]
fn events_with_varying_ids_fold_into_one_group() {
    let (d, h) = dispatch(Options::default());
    with(&d, || {
        let _s = tracing::info_span!("request", route = "/pay").entered();
        for id in 0..37 {
            fail(id);
        }
        tracing::warn!("slow downstream");
        tracing::info!("not grouped");
    });
    let r = report(h.shared());
    assert_eq!(r.groups_total, 2);
    let g = r
        .groups
        .iter()
        .find(|g| g.level == "ERROR")
        .expect("error group");
    assert_eq!(g.count, 37);
    assert_eq!(g.message.as_deref(), Some("payment 36 failed"));
    assert_eq!(g.recent.len(), 5);
    assert_eq!(g.recent[4].fields.get("user_id"), Some("36"));
    assert_eq!(g.recent[4].fields.get("token"), Some("[redacted]"));
    assert_eq!(g.recent[4].span.as_ref().map(|s| s.name), Some("request"));
    assert_eq!(g.last_minute, 37);
    assert!(g
        .callsite
        .as_deref()
        .is_some_and(|c| c.starts_with("src/probes/errors/tests.rs:")));
    assert_eq!(g.fingerprint.len(), 16);
    assert!(g.first_seen <= g.last_seen);
    assert_eq!(r.groups[0].level, "WARN", "most recently seen first");
    let c = event_counts(h.shared());
    assert_eq!(c.error, Some(37));
    assert_eq!(c.warn, Some(1));
    assert_eq!(c.info, None, "INFO is filtered out: unknown, not 0");
    assert_eq!(r.groups_total, 2);
    let json = serde_json::to_value(&r).expect("json");
    assert!(json["groups"][1]["last_seen"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert!(!json.to_string().contains("s3cr3t"));
}

#[test]
fn least_recently_seen_group_is_evicted_and_counted() {
    let (d, h) = dispatch(Options::default().max_error_groups(2));
    with(&d, || {
        tracing::error!("a");
        tracing::error!("b");
        tracing::error!("a again"); // a different callsite: a third group
        tracing::warn!("d");
    });
    let r = report(h.shared());
    assert_eq!(r.groups_total, 2);
    assert_eq!(r.evicted_total, 2);
    let msgs: Vec<_> = r
        .groups
        .iter()
        .filter_map(|g| g.message.as_deref())
        .collect();
    assert_eq!(msgs, ["d", "a again"]);
}
