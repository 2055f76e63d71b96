//! Load: many concurrent clients on `/metrics` and `/debug/memory` while a CPU profile and heap
//! profiles run, against a server capped at 8 concurrent requests.
//!
//! Every answer must be 200, 409 (a profile of that kind already running) or 429 (over the cap);
//! at least one 429 must happen; the audit log must hold exactly one record per request sent,
//! still chained; a host thread must keep working throughout; and the server must answer
//! `/health/live` afterwards.
//!
//! Note on where 429s come from: the admin server runs on a current-thread runtime, so handlers
//! that never wait (`/metrics`, `/debug/memory`) run one at a time to completion and hold their
//! permit only while they run: they queue on the thread rather than pile up against the cap. The
//! cap is reached by requests that wait — a CPU profile sleeping through its window, heap
//! profiles waiting on the blocking pool — which is why heap-profile scrapers (what Pyroscope
//! and Grafana Alloy do, on `/debug/pprof/allocs`) are part of the load.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use prodbg::Limits;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Heap profiling on from the start, sampling every 512 KiB.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static _rjem_malloc_conf: &[u8] = b"prof:true,prof_active:true,lg_prof_sample:19\0";

/// Clients on `/metrics` and `/debug/memory`.
const LIGHT_CLIENTS: usize = 14;
/// Clients scraping heap profiles (`/debug/pprof/heap` and `/debug/pprof/allocs`, folded).
const HEAP_CLIENTS: usize = 10;
/// How long the load runs at most; it stops earlier once everything asserted has happened.
const LOAD_WINDOW: Duration = Duration::from_secs(10);

/// An answer's content type and body.
struct Body {
    ct: String,
    bytes: Vec<u8>,
}

#[derive(Default)]
struct Tally {
    /// Requests that got an answer.
    sent: AtomicU64,
    /// (path, status) -> count.
    statuses: Mutex<BTreeMap<(String, u16), u64>>,
    /// Requests that got no answer at all (transport errors).
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn record(&self, path: &str, status: u16) {
        self.sent.fetch_add(1, Ordering::SeqCst);
        *self
            .statuses
            .lock()
            .unwrap()
            .entry((path.to_string(), status))
            .or_default() += 1;
    }

    fn count(&self, pred: impl Fn(&str, u16) -> bool) -> u64 {
        self.statuses
            .lock()
            .unwrap()
            .iter()
            .filter(|((p, s), _)| pred(p, *s))
            .map(|(_, n)| n)
            .sum()
    }
}

/// GETs `path`, records the answer; returns status and body, or `None` on a transport error.
async fn hit(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    secret: &str,
    tally: &Tally,
) -> Option<(u16, Body)> {
    match client
        .get(format!("{base}{path}"))
        .bearer_auth(secret)
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status().as_u16();
            let ct = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            // The answer is complete (and audited) once its head is here; read the body too.
            let body = r.bytes().await;
            tally.record(path, status);
            match body {
                Ok(b) => Some((
                    status,
                    Body {
                        ct,
                        bytes: b.to_vec(),
                    },
                )),
                Err(e) => {
                    tally
                        .failures
                        .lock()
                        .unwrap()
                        .push(format!("{path}: body: {e}"));
                    None
                }
            }
        }
        Err(e) => {
            tally.failures.lock().unwrap().push(format!("{path}: {e}"));
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_during_profiles_get_200_409_or_429_and_all_are_audited() {
    let server = spawn_with(|b| {
        b.limits({
            let mut l = Limits::default();
            l.max_concurrent_requests = 8;
            // 24 clients on one address: this test is about request caps, not connection caps.
            l.max_connections_per_client = 96;
            l
        })
    });
    let base = server.handle.url().trim_end_matches('/').to_string();
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));

    // The host's own work: a plain thread doing small units of work.
    let work = Arc::new(AtomicU64::new(0));
    let host_stop = Arc::new(AtomicBool::new(false));
    let host = {
        let (work, host_stop) = (work.clone(), host_stop.clone());
        std::thread::Builder::new()
            .name("host-worker".into())
            .spawn(move || {
                let mut acc = 0u64;
                while !host_stop.load(Ordering::Relaxed) {
                    for i in 0..10_000u64 {
                        acc = std::hint::black_box(acc.wrapping_mul(31).wrapping_add(i));
                    }
                    work.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_micros(200));
                }
                acc
            })
            .unwrap()
    };
    // Started: it has done some work before the load begins.
    let guard = Instant::now() + Duration::from_secs(30);
    while work.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < guard, "the host thread never ran");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let work_before = work.load(Ordering::SeqCst);

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60)) // hang guard
        .build()
        .unwrap();
    let started = Instant::now();

    // One CPU profile, retried while refused (409/429), until it gets through.
    let cpu_done = Arc::new(AtomicBool::new(false));
    let cpu = {
        let (client, base, tally, stop, cpu_done) = (
            client.clone(),
            base.clone(),
            tally.clone(),
            stop.clone(),
            cpu_done.clone(),
        );
        tokio::spawn(async move {
            let path = "/debug/pprof/profile?seconds=3&format=folded";
            let mut answer = None;
            while !stop.load(Ordering::SeqCst) {
                match hit(&client, &base, path, PROFILE_SECRET, &tally).await {
                    Some((200, body)) => {
                        answer = Some(body);
                        break;
                    }
                    Some((409 | 429, _)) => tokio::time::sleep(Duration::from_millis(20)).await,
                    _ => break, // recorded; asserted below
                }
            }
            cpu_done.store(true, Ordering::SeqCst);
            answer
        })
    };

    // Heap-profile scrapers.
    let heap_ok = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..HEAP_CLIENTS {
        let (client, base, tally, stop, heap_ok) = (
            client.clone(),
            base.clone(),
            tally.clone(),
            stop.clone(),
            heap_ok.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let path = if i.is_multiple_of(2) {
                "/debug/pprof/heap?format=folded"
            } else {
                "/debug/pprof/allocs?format=folded"
            };
            while !stop.load(Ordering::SeqCst) {
                if let Some((200, body)) = hit(&client, &base, path, PROFILE_SECRET, &tally).await {
                    assert!(body.ct.starts_with("text/plain"), "{}", body.ct);
                    heap_ok.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }

    // The many light clients.
    for i in 0..LIGHT_CLIENTS {
        let (client, base, tally, stop) =
            (client.clone(), base.clone(), tally.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = i;
            while !stop.load(Ordering::SeqCst) {
                let path = if n.is_multiple_of(2) {
                    "/metrics"
                } else {
                    "/debug/memory"
                };
                n += 1;
                if let Some((200, body)) = hit(&client, &base, path, READ_SECRET, &tally).await {
                    if path == "/metrics" {
                        let text = String::from_utf8_lossy(&body.bytes);
                        assert!(text.contains("prodbg_"), "{text}");
                    } else {
                        let v: serde_json::Value = serde_json::from_slice(&body.bytes).unwrap();
                        assert!(v["jemalloc"].is_object(), "{v}");
                    }
                }
            }
        }));
    }

    // Run until the CPU profile is through, a heap profile is through and the cap has been hit,
    // or the window closes (then the assertions below say what did not happen).
    loop {
        let all_seen = cpu_done.load(Ordering::SeqCst)
            && heap_ok.load(Ordering::SeqCst) > 0
            && tally.count(|_, s| s == 429) > 0;
        if all_seen || started.elapsed() >= LOAD_WINDOW {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let cpu_answer = cpu.await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let work_after = work.load(Ordering::SeqCst);
    host_stop.store(true, Ordering::SeqCst);
    host.join().unwrap();

    let statuses = tally.statuses.lock().unwrap().clone();
    let summary = format!("{statuses:?}");
    eprintln!("load: {summary}");
    let failures = tally.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "requests without an answer: {failures:?}"
    );

    // Only the documented answers under load.
    for ((path, status), n) in &statuses {
        assert!(
            matches!(status, 200 | 409 | 429),
            "{n}× {status} from {path}: {summary}"
        );
    }
    assert!(
        tally.count(|_, s| s == 429) > 0,
        "the concurrency cap was never hit: {summary}"
    );
    let cpu_answer = cpu_answer.unwrap_or_else(|| panic!("no CPU profile got through: {summary}"));
    assert!(cpu_answer.ct.starts_with("text/plain"), "{}", cpu_answer.ct);
    assert!(
        heap_ok.load(Ordering::SeqCst) > 0,
        "no heap profile got through: {summary}"
    );
    assert!(
        tally.count(|p, s| p == "/metrics" && s == 200) > 0
            && tally.count(|p, s| p == "/debug/memory" && s == 200) > 0,
        "light endpoints never answered: {summary}"
    );

    // Every request accounted for in the audit log, none lost: completed ones one record each,
    // repeated identical denials (429s) folded into summaries after the first. The summaries
    // are written at shutdown (and every fold interval), so the count is checked after it.
    let sent = tally.sent.load(Ordering::SeqCst) as usize;
    let records = server.audit_lines();
    for ((path, status), n) in &statuses {
        let path_only = path.split('?').next().unwrap();
        let audited = records
            .iter()
            .filter(|r| {
                // Refused before routing: recorded under `unmatched`, the path in details.
                (r["path"] == path_only || r["details"]["requested_path"] == path_only)
                    && r["status"] == *status
            })
            .count() as u64;
        if *status == 429 {
            assert!(audited <= *n, "{path} {status}: {audited} of {n}");
        } else {
            assert_eq!(audited, *n, "{path} {status}");
        }
    }
    // The host kept working while all of that ran.
    assert!(
        work_after > work_before,
        "host work did not advance during the load: {work_before} -> {work_after}"
    );

    // And the server still answers (an open health probe: folded into a summary).
    let (status, body) = get(&server.url("/health/live"), None).await;
    assert_eq!(status, 200, "{body}");

    let Server {
        handle, audit, dir, ..
    } = server;
    tokio::task::spawn_blocking(move || handle.shutdown())
        .await
        .unwrap();
    let entries: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let requests = entries.iter().filter(|e| e["kind"] == "request").count();
    let folded: u64 = entries
        .iter()
        .filter(|e| e["kind"] == "summary")
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    assert_eq!(
        requests + folded as usize,
        sent + 1,
        "audit accounts for every request"
    );
    let report = prodbg::verify_audit_log(&audit, None, None)
        .unwrap_or_else(|e| panic!("audit chain broken: {e}"));
    assert_eq!(report.kinds.request as usize, requests, "{report:?}");
    drop(dir);
}
