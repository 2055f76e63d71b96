//! `/debug/tokio`, `/debug/tokio/tasks` and the Tokio part of `/metrics` over real HTTP, on a
//! real host runtime. Run in both builds: plain, and `--cfg tokio_unstable --cfg tokio_taskdump`.

mod common;

use std::time::Duration;

use common::*;

#[inline(never)]
async fn prodbg_http_parked_task_w4(rx: tokio::sync::oneshot::Receiver<()>) {
    let _ = rx.await;
}

fn host_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn runtime_metrics_tasks_and_prometheus() {
    let host = host_runtime();
    let (tx, rx) = tokio::sync::oneshot::channel();
    host.spawn(prodbg_http_parked_task_w4(rx));
    for _ in 0..8 {
        host.spawn(async { tokio::time::sleep(Duration::from_secs(600)).await });
    }
    let server = spawn_with(|b| b.tokio_runtime("host", host.handle().clone()));
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    client_rt.block_on(async {
        let (s, body) = get(&server.url("/debug/tokio?window_ms=200"), Some(READ_SECRET)).await;
        assert_eq!(s, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let rt = &v["runtimes"][0];
        assert_eq!(rt["name"], "host");
        assert_eq!(rt["workers"], 2);
        assert!(rt["alive_tasks"].as_u64().unwrap() >= 9, "{rt}");
        assert_eq!(rt["per_worker"].as_array().unwrap().len(), 2);
        assert!(rt["per_worker"][0]["busy_seconds_total"].as_f64().is_some());
        let unavailable = rt["unavailable"].to_string();
        if cfg!(tokio_unstable) {
            assert!(rt["per_worker"][0]["poll_count"].as_u64().is_some(), "{rt}");
        } else {
            assert!(
                rt["per_worker"][0]["poll_count"].is_null(),
                "absent, not 0: {rt}"
            );
            assert!(unavailable.contains("tokio_unstable"), "{unavailable}");
        }

        let (s, metrics) = get(&server.url("/metrics"), Some(READ_SECRET)).await;
        assert_eq!(s, 200);
        assert!(
            metrics.contains("prodbg_tokio_workers{runtime=\"host\"} 2"),
            "{metrics}"
        );
        assert!(
            metrics
                .contains("prodbg_tokio_worker_busy_seconds_total{runtime=\"host\",worker=\"0\"}"),
            "{metrics}"
        );

        for (q, expect) in [
            ("window_ms=20000", "from 0 to 10000"),
            ("window_ms=-5", "from 0 to 10000"),
        ] {
            let (s, body) = get(&server.url(&format!("/debug/tokio?{q}")), Some(READ_SECRET)).await;
            assert_eq!(s, 400);
            assert!(
                error_message(&body, "bad_parameter").contains(expect),
                "{body}"
            );
        }
        let (s, body) = get(
            &server.url("/debug/tokio/tasks?runtime=nope"),
            Some(PROFILE_SECRET),
        )
        .await;
        assert_eq!(s, 400);
        assert!(
            error_message(&body, "bad_parameter").contains("registered: host"),
            "{body}"
        );
        assert_eq!(
            get(&server.url("/debug/tokio/tasks"), Some(READ_SECRET))
                .await
                .0,
            403
        );

        let (s, body) = get(&server.url("/debug/tokio/tasks"), Some(PROFILE_SECRET)).await;
        if cfg!(tokio_unstable) {
            assert_eq!(s, 200, "{body}");
            assert!(body.contains("prodbg_http_parked_task_w4"), "{body}");
            assert!(body.starts_with("runtime \"host\""), "{body}");
        } else {
            assert_eq!(s, 501, "{body}");
            assert!(
                error_message(&body, "not_compiled_in").contains("--cfg tokio_unstable"),
                "{body}"
            );
        }
    });
    let _ = tx.send(());
    drop(server);
    host.shutdown_background();
}

#[tokio::test]
async fn without_a_runtime_the_endpoints_say_how_to_register_one() {
    let server = spawn();
    let (s, body) = get(&server.url("/debug/tokio"), Some(READ_SECRET)).await;
    assert_eq!(s, 503);
    assert!(
        error_message(&body, "unavailable").contains(".tokio_runtime("),
        "{body}"
    );
}

#[inline(never)]
async fn prodbg_http_sleeping_task_g7() {
    tokio::time::sleep(Duration::from_secs(600)).await;
}

/// Go's `/debug/pprof/goroutine?debug=1|2`: the same task dump in Go's text shapes; 501 naming
/// the cfg in a plain build.
#[test]
fn goroutine_dump_in_go_text_shapes() {
    let host = host_runtime();
    let (tx, rx) = tokio::sync::oneshot::channel();
    host.spawn(prodbg_http_parked_task_w4(rx));
    for _ in 0..6 {
        host.spawn(prodbg_http_sleeping_task_g7());
    }
    let server = spawn_with(|b| b.tokio_runtime("host", host.handle().clone()));
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    client_rt.block_on(async {
        let url = |q: &str| server.url(&format!("/debug/pprof/goroutine{q}"));
        for (q, expect) in [
            ("?debug=0", "protobuf"),
            ("?debug=3", "debug"),
            ("?runtime=nope", "registered: host"),
            ("?timeout_ms=5", "from 100 to 30000"),
        ] {
            let (s, body) = get(&url(q), Some(PROFILE_SECRET)).await;
            if cfg!(tokio_unstable) || !q.starts_with("?runtime") {
                assert_eq!(s, 400, "{q}: {body}");
                assert!(
                    error_message(&body, "bad_parameter").contains(expect),
                    "{q}: {body}"
                );
            }
        }
        assert_eq!(get(&url("?debug=1"), Some(READ_SECRET)).await.0, 403);

        let r = client()
            .get(url("?debug=1"))
            .bearer_auth(PROFILE_SECRET)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
        let body = r.text().await.unwrap();
        if !cfg!(tokio_unstable) {
            assert_eq!(status, 501, "{body}");
            assert!(
                error_message(&body, "not_compiled_in")
                    .contains("--cfg tokio_unstable --cfg tokio_taskdump"),
                "{body}"
            );
            return;
        }
        assert_eq!(status, 200, "{body}");
        assert_eq!(content_type, "text/plain; charset=utf-8");
        println!("-- debug=1:\n{body}");
        // debug=1: the header, then groups; the six sleepers share one stack.
        let total: u64 = body
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("goroutine profile: total "))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no Go header: {body}"));
        assert!(total >= 7, "{body}");
        let group = body
            .split("\n\n")
            .find(|g| g.contains("prodbg_http_sleeping_task_g7"))
            .unwrap_or_else(|| panic!("no sleeper group: {body}"));
        assert!(
            group.starts_with("6 @ 0x") || group.contains("\n6 @ 0x"),
            "{group}"
        );
        assert!(
            group
                .lines()
                .any(|l| l.starts_with("#\t0x") && l.contains("tokio::time")),
            "{group}"
        );

        // debug=2: one goroutine block per task, with a state read off its leaf.
        let (s, body) = get(&url("?debug=2"), Some(PROFILE_SECRET)).await;
        assert_eq!(s, 200, "{body}");
        println!("-- debug=2:\n{body}");
        let blocks: Vec<&str> = body.split("\n\n").filter(|b| !b.is_empty()).collect();
        assert!(blocks.len() as u64 >= total, "{body}");
        let sleeper = blocks
            .iter()
            .find(|b| b.contains("prodbg_http_sleeping_task_g7"))
            .unwrap();
        assert!(
            sleeper.starts_with("goroutine ")
                && sleeper.lines().next().unwrap().ends_with(" [sleep]:"),
            "{sleeper}"
        );
        assert!(
            sleeper
                .lines()
                .any(|l| l.starts_with('\t') && l.contains(".rs:")),
            "{sleeper}"
        );
        let parked = blocks
            .iter()
            .find(|b| b.contains("prodbg_http_parked_task_w4"))
            .unwrap();
        assert!(
            parked.lines().next().unwrap().ends_with(" [chan receive]:"),
            "{parked}"
        );
    });
    let _ = tx.send(());
    drop(server);
    host.shutdown_background();
}
