//! `/metrics` passes `promtool check metrics` in both exposition formats' 0.0.4 form.
//! `.ci/run` installs promtool (Debian package `prometheus`); under CI its absence fails the test.

mod common;

use common::*;

// On jemalloc, so the allocator's series are checked too.
#[global_allocator]
static A: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn promtool() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("promtool"))
            .find(|p| p.exists())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool must be installed in CI (.ci/run)"
        );
        eprintln!(
            "promtool not installed: skipping the promtool check (install Debian's `prometheus`)"
        );
    }
    found
}

#[tokio::test]
async fn metrics_pass_promtool_and_have_the_documented_names() {
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(2)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    // The pool, with a recorder that has timed one acquire: its histogram is exposed too.
    let pools = prodbg::pools::PoolRegistry::new();
    pools.register_static("db", prodbg::pools::sqlx(&pool));
    let recorder = pools.acquires("db");
    let conn = recorder
        .time(pool.acquire(), |e| matches!(e, sqlx::Error::PoolTimedOut))
        .await
        .unwrap();
    drop(conn);
    let server = spawn_with(|b| {
        let b = b
            .pool_registry(pools.clone())
            .tokio_runtime("main", tokio::runtime::Handle::current());
        #[cfg(feature = "deadlock")]
        let b = b.deadlock_detection(std::time::Duration::from_secs(60));
        b
    });
    get(&server.url("/debug/"), None).await; // no credentials: a challenge, not a failure
    get(&server.url("/debug/"), Some("wrong-secret-0123456789")).await; // one auth failure
    let (s, text) = get(&server.url("/metrics"), Some(READ_SECRET)).await;
    assert_eq!(s, 200);
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_threads",
        "process_start_time_seconds",
        "prodbg_http_requests_total{",
        "prodbg_http_request_duration_seconds_bucket{",
        "prodbg_auth_failures_total 1",
        "prodbg_audit_write_errors_total 0",
        "prodbg_pool_max_connections{pool=\"db\"} 2",
        "prodbg_pool_acquire_wait_seconds_bucket{le=\"+Inf\",pool=\"db\"} 1",
        "prodbg_pool_acquire_wait_seconds_count{pool=\"db\"} 1",
        "prodbg_tokio_workers{runtime=\"main\"} 1",
        "prodbg_tokio_worker_busy_seconds_total{runtime=\"main\",worker=\"0\"}",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    if cfg!(feature = "heap") {
        assert!(text.contains("prodbg_jemalloc_allocated_bytes "), "{text}");
    }
    if cfg!(feature = "deadlock") {
        assert!(text.contains("prodbg_deadlocks_detected_total 0"), "{text}");
    }
    let r = client()
        .get(server.url("/metrics"))
        .bearer_auth(READ_SECRET)
        .header("accept", "application/openmetrics-text")
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(r.text().await.unwrap().ends_with("# EOF\n"));

    let Some(promtool) = promtool() else { return };
    use std::io::Write;
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool: {report}\n{text}"
    );
}
