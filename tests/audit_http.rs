//! The audit log over real HTTP: a keyed chain that `verify_audit_log` checks with the key and a
//! checkpoint from `GET /debug/audit`; a log-level change cannot silence the `prodbg::audit`
//! events and is recorded with what it changed; health probes and repeated denials are folded
//! into summaries that account for every request.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

const AUDIT_KEY: &str = "audit-key-for-tests-0123456789abcdef";

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn entries(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn keyed_chain_checkpoint_unsilenceable_events_and_folding() {
    // The host's subscriber: the reloadable filter in front of a fmt layer writing to `buf`.
    let buf = Buf::default();
    let (filter, control) = prodbg::log_level::reloadable(EnvFilter::new("info"));
    let writer = buf.clone();
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(move || writer.clone()))
        .init();
    let logged = || String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();

    let server = spawn_with(|b| b.log_control(control).audit_key(AUDIT_KEY));
    let c = client();

    // An admin silences everything, the audit target included.
    let r = c
        .put(server.url("/debug/log-level?ttl=10m"))
        .bearer_auth(ADMIN_SECRET)
        .body("off,prodbg::audit=off")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let put = server
        .audit_lines()
        .into_iter()
        .rev()
        .find(|r| r["method"] == "PUT")
        .expect("the PUT is audited");
    assert_eq!(
        put["details"]["directive"], "off,prodbg::audit=off",
        "{put}"
    );
    assert_eq!(put["details"]["ttl_s"], 600, "{put}");
    assert_eq!(
        put["details"]["previous"], "prodbg::audit=info,info",
        "{put}"
    );
    assert_eq!(put["token_id"], "ops");

    // A request after the change still leaves its `prodbg::audit` event in the host's log.
    let before = logged();
    let (s, _) = get(&server.url("/debug/memory?unsilenced=1"), Some(READ_SECRET)).await;
    assert_eq!(s, 400);
    let after = logged();
    assert!(
        after.len() > before.len() && after[before.len()..].contains("prodbg::audit"),
        "no audit event after `prodbg::audit=off`: {}",
        &after[before.len()..]
    );
    tracing::info!(target: "other", "silenced-7q");
    assert!(!logged().contains("silenced-7q"), "the rest is silenced");

    // 2000 open health probes and 15 identical denials (below the failed-login limit): folded,
    // not one record each.
    for _ in 0..2000 {
        let r = c.get(server.url("/health/live")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    for _ in 0..15 {
        let r = c
            .get(server.url("/debug/memory"))
            .bearer_auth("wrong-secret-0123456789abcdef")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }

    // The checkpoint an off-host poller keeps: records and head hash, keyed, never the key.
    let (s, body) = get(&server.url("/debug/audit"), Some(READ_SECRET)).await;
    assert_eq!(s, 200, "{body}");
    assert!(!body.contains(AUDIT_KEY), "{body}");
    let head: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(head["keyed"], true, "{body}");
    let records = head["records"].as_u64().unwrap();
    let head_hash = head["head_hash"].as_str().unwrap().to_string();
    assert!(records > 0 && head_hash.len() == 64, "{body}");

    let Server { handle, audit, dir } = server;
    tokio::task::spawn_blocking(move || handle.shutdown())
        .await
        .unwrap();
    let all = entries(&audit);
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(!text.contains(AUDIT_KEY), "the key is never written");
    let folded = |path: &str, status: u64| -> u64 {
        all.iter()
            .filter(|e| e["kind"] == "summary" && e["path"] == path && e["status"] == status)
            .map(|e| e["count"].as_u64().unwrap())
            .sum()
    };
    let recorded = |path: &str, status: u64| {
        all.iter()
            .filter(|e| e["kind"] == "request" && e["path"] == path && e["status"] == status)
            .count() as u64
    };
    assert_eq!(
        folded("/health/live", 200) + recorded("/health/live", 200),
        2000
    );
    assert_eq!(
        recorded("/health/live", 200),
        0,
        "open probes are only summarized"
    );
    // Refused before routing: the first denial in full, its repeats folded, all 15 counted.
    assert_eq!(folded("unmatched", 401) + recorded("unmatched", 401), 15);
    assert!(recorded("unmatched", 401) >= 1);
    assert!(
        text.len() < 64 * 1024,
        "2000 probes and 15 denials took {} bytes of audit",
        text.len()
    );

    // Verify: with the key and the checkpoint it passes; without the key, or with another
    // key, it fails; a re-hash of an edited file without the key is rejected.
    let key = Some(AUDIT_KEY.as_bytes());
    let anchor = prodbg::audit::Checkpoint::anchor(records, &head_hash);
    let report = prodbg::verify_audit_log(&audit, key, Some(&anchor))
        .unwrap_or_else(|e| panic!("verify with the key and checkpoint: {e}"));
    assert!(report.keyed, "{report:?}");
    assert!(prodbg::verify_audit_log(&audit, None, None).is_err());
    assert!(prodbg::verify_audit_log(&audit, Some(b"another-key-0123456789"), None).is_err());
    let forged = text.replacen("\"token_id\":\"ops\"", "\"token_id\":\"viewer\"", 1);
    assert_ne!(forged, text);
    std::fs::write(&audit, forged).unwrap();
    let err = prodbg::verify_audit_log(&audit, key, None).unwrap_err();
    assert!(err.to_string().contains(":"), "names the line: {err}");
    drop(dir);
}
