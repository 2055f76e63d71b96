//! The console in a real browser: headless Debian Chromium driven through chromedriver
//! (tests/common/browser.rs, a small WebDriver client). Logs in with Basic credentials in the
//! URL, clicks "CPU flamegraph", and finds a known hot function in the flamegraph the page
//! frames; draws the timeline's charts and shows the recorded CPU flamegraph of a window dragged
//! across one; screenshots are kept under `target/test-artifacts/`. A missing chromium or
//! chromedriver fails the test with the install command; it never skips.
#![cfg(feature = "cpu")]

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use browser::Browser;
use common::*;
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::EnvFilter;

/// How long to wait for the page (profiles take their seconds on top).
const PATIENCE: Duration = Duration::from_secs(60);

#[inline(never)]
fn prodbg_console_hot_xyz(stop: &AtomicBool) -> u64 {
    let mut x = 3u64;
    while !stop.load(Ordering::Relaxed) {
        for i in 0..10_000u64 {
            x = std::hint::black_box(x.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ i);
        }
    }
    x
}

/// A thread spinning in [`prodbg_console_hot_xyz`] until dropped.
struct Hot(Arc<AtomicBool>, Option<std::thread::JoinHandle<u64>>);

impl Hot {
    fn start() -> Hot {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let t = std::thread::Builder::new()
            .name("console-hot".into())
            .spawn(move || prodbg_console_hot_xyz(&s))
            .unwrap();
        Hot(stop, Some(t))
    }
}

impl Drop for Hot {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        if let Some(t) = self.1.take() {
            let _ = t.join();
        }
    }
}

/// `target/test-artifacts/<name>`, next to the test binary's own target directory.
fn artifact(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<binary>
    let target = exe
        .ancestors()
        .nth(3)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("test-artifacts").join(name)
}

async fn text_of(b: &Browser, css: &str) -> String {
    match b.find(css).await {
        Ok(e) => b.text(&e).await.unwrap_or_default(),
        Err(e) => format!("<{css}: {e}>"),
    }
}

/// Polls `#status` until it contains `want`; fails with what it says.
async fn wait_status(b: &Browser, want: &str) -> String {
    let start = Instant::now();
    loop {
        let s = text_of(b, "#status").await;
        if s.contains(want) {
            return s;
        }
        assert!(
            start.elapsed() < PATIENCE && !s.contains("failed"),
            "waiting for {want:?}; the console says: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn launch() -> Browser {
    Browser::launch_with(&[], json!({ "goog:loggingPrefs": { "browser": "ALL" } }))
        .await
        .unwrap_or_else(|e| panic!("cannot start headless Chromium: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_logs_in_with_basic_auth_and_shows_a_cpu_flamegraph() {
    let _hot = Hot::start();
    let server = spawn_with(|b| {
        b.service_name("browser-test")
            .tokio_runtime("main", tokio::runtime::Handle::current())
    });
    let addr = server.handle.local_addr();
    let b = launch().await;

    // Basic credentials in the URL, as an operator pastes it.
    b.goto(&format!("http://ops:{ADMIN_SECRET}@{addr}/debug/"))
        .await
        .unwrap();
    b.wait_for("html[data-ready='1'] #cpu-flame", PATIENCE)
        .await
        .unwrap();
    // The console reloaded itself without the credentials in its URL.
    let url = b.current_url().await.unwrap();
    assert_eq!(url, format!("http://{addr}/debug/"));
    assert_eq!(text_of(&b, "#caller").await, "ops");
    assert!(text_of(&b, "#fig-rss").await.contains("MiB"));
    assert!(text_of(&b, "#fig-tokio").await.contains("main"));

    // "CPU flamegraph" for 2 s.
    b.execute("document.getElementById('cpu-seconds').value = '2'", vec![])
        .await
        .unwrap();
    let button = b.find("#cpu-flame").await.unwrap();
    assert_eq!(b.text(&button).await.unwrap(), "CPU flamegraph");
    b.click(&button).await.unwrap();
    let status = wait_status(&b, "Ctrl-F").await;
    assert!(status.contains("browser-test-cpu-"), "{status}");

    // The SVG in the frame: the hot function is in it, and inferno's script runs there
    // (search and zoom), under the SVG's own CSP.
    let frame = b.find("#flame").await.unwrap();
    assert_eq!(
        b.attribute(&frame, "src").await.unwrap().as_deref(),
        Some(format!("http://{addr}/debug/console/last/cpu.svg").as_str())
    );
    b.enter_frame(&frame).await.unwrap();
    let frames = b.wait_for("#frames", PATIENCE).await.unwrap();
    let shown = b.text(&frames).await.unwrap();
    assert!(
        shown.contains("prodbg_console_hot_xyz"),
        "the hot function is not in the rendered flamegraph:\n{}",
        &shown[..shown.len().min(2000)]
    );
    let interactive = b
        .execute(
            "return [typeof search, document.documentElement.getAttribute('width')]",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        interactive,
        json!(["function", null]),
        "inferno's script did not run"
    );
    b.execute("search(arguments[0])", vec![json!("prodbg_console_hot")])
        .await
        .unwrap();
    let matched = text_of(&b, "#matched").await;
    assert!(matched.starts_with("Matched: "), "{matched}");
    b.leave_frames().await.unwrap();

    // The pprof file of the same profile is offered.
    let links = text_of(&b, "#links").await;
    assert!(
        links.contains("download browser-test-cpu-") && links.contains(".pb.gz (pprof)"),
        "{links}"
    );

    let png = b
        .screenshot_png(artifact("console-cpu-flamegraph.png"))
        .await
        .unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));

    // The strict CSP broke nothing the page does.
    let log = b.browser_log().await.unwrap();
    let refused: Vec<_> = log
        .iter()
        .filter(|l| l.contains("Content Security Policy") || l.contains("Refused to"))
        .collect();
    assert!(refused.is_empty(), "CSP violations: {refused:#?}");
    b.quit().await.unwrap();

    // Every request was guarded and audited; the browser's credential-less first tries were
    // challenges, not failed logins.
    let audit = server.audit_lines();
    let profile = audit
        .iter()
        .find(|l| l["path"] == "/debug/pprof/profile")
        .expect("the console's profile request is audited");
    assert_eq!(profile["token_id"], "ops");
    assert_eq!(profile["query"], "format=svg&seconds=2");
    assert!(audit
        .iter()
        .any(|l| l["path"] == "/debug/console/last/cpu.svg" && l["status"] == 200));
    let anonymous = audit.iter().filter(|l| l["status"] == 401).count();
    assert!(anonymous <= 4, "{anonymous} challenges: {audit:#?}");
    let (_, metrics) = get(&server.url("/metrics"), Some(READ_SECRET)).await;
    assert!(
        metrics.contains("prodbg_auth_failures_total 0"),
        "{metrics}"
    );
}

/// A page of another origin, served from a second port, that tries to change the log level
/// with the browser's cached credentials.
fn evil_page(target: std::net::SocketAddr) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // A form-like POST (no-cors: no preflight, the response is opaque) and a PUT (which needs a
    // CORS preflight first).
    let page = format!(
        "<!doctype html><title>evil</title><p id=done>…</p><script>\
         const t = 'http://{target}';\
         Promise.allSettled([\
           fetch(t + '/debug/test/mutate', {{method: 'POST', mode: 'no-cors', credentials: 'include'}}),\
           fetch(t + '/debug/log-level?ttl=0', {{method: 'PUT', credentials: 'include', body: 'trace'}}),\
         ]).then(r => document.getElementById('done').textContent = 'sent: ' + r.map(x => x.status).join());\
         </script>"
    );
    let t = std::thread::spawn(move || {
        // One page, then the favicon request (or nothing).
        listener.set_nonblocking(false).unwrap();
        for stream in listener.incoming().take(2) {
            let Ok(mut s) = stream else { return };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    (addr, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_changes_the_log_level_and_other_origins_cannot() {
    let (filter, control) = prodbg::log_level::reloadable(EnvFilter::new("info"));
    // Not the global subscriber: the reload handle only needs the layer alive.
    let _subscriber = tracing_subscriber::registry().with(filter);
    let server = spawn_with(|b| {
        b.service_name("browser-test")
            .log_control(control)
            .endpoint(
                axum::http::Method::POST,
                "/debug/test/mutate",
                prodbg::Scope::Admin,
                "a change another origin must not make",
                || async { "changed" },
            )
    });
    let addr = server.handle.local_addr();
    let b = launch().await;
    b.goto(&format!("http://ops:{ADMIN_SECRET}@{addr}/debug/"))
        .await
        .unwrap();
    b.wait_for("html[data-ready='1'] #log-set", PATIENCE)
        .await
        .unwrap();
    b.execute(
        "document.getElementById('log-filter').value = 'info,browser_console=debug'; document.getElementById('log-ttl').value = '10m'",
        vec![],
    )
    .await
    .unwrap();
    b.click(&b.find("#log-set").await.unwrap()).await.unwrap();
    let status = wait_status(&b, "Log filter is now").await;
    assert!(status.contains("browser_console=debug"), "{status}");
    // The figures show the override (the page refreshes them after the change).
    let start = Instant::now();
    while !text_of(&b, "#fig-overrides").await.contains("log_level") {
        assert!(
            start.elapsed() < PATIENCE,
            "{}",
            text_of(&b, "#fig-overrides").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let put = server
        .audit_lines()
        .into_iter()
        .find(|l| l["method"] == "PUT")
        .unwrap();
    assert_eq!(
        (put["status"].as_u64(), put["token_id"].as_str()),
        (Some(200), Some("ops"))
    );

    // Another origin's page, in the same browser (which holds the credentials), tries too.
    let (evil, evil_thread) = evil_page(addr);
    b.goto(&format!("http://{evil}/")).await.unwrap();
    let start = Instant::now();
    while !text_of(&b, "#done").await.starts_with("sent") {
        assert!(
            start.elapsed() < PATIENCE,
            "the evil page's fetch never ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("evil page: {}", text_of(&b, "#done").await);
    b.quit().await.unwrap();
    let _ = evil_thread.join();
    let tried: Vec<_> = server
        .audit_lines()
        .into_iter()
        .map(|mut l| {
            // Refused before routing (cross-origin): recorded under `unmatched`, the path
            // asked for in details.
            if l["path"] == "unmatched" {
                l["path"] = l["details"]["requested_path"].clone();
            }
            l
        })
        .filter(|l| {
            l["path"] == "/debug/test/mutate"
                || (l["path"] == "/debug/log-level" && l["method"] != "GET")
        })
        .map(|l| {
            format!(
                "{} {} {} {}",
                l["method"], l["path"], l["status"], l["token_id"]
            )
        })
        .collect();
    println!("{tried:#?}");
    // The console's own PUT went through; the other origin's POST and the preflight of its PUT
    // were refused as cross-origin (Chromium sent the cached Basic credentials with them: the
    // token is named), and its PUT never came.
    assert_eq!(
        tried,
        [
            "\"PUT\" \"/debug/log-level\" 200 \"ops\"",
            "\"POST\" \"/debug/test/mutate\" 403 \"ops\"",
            "\"OPTIONS\" \"/debug/log-level\" 403 null",
        ],
    );
    let (_, state) = get(&server.url("/debug/log-level"), Some(READ_SECRET)).await;
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    let filter = state["filter"].as_str().unwrap();
    assert!(
        filter.contains("browser_console=debug") && !filter.contains("trace"),
        "{state}"
    );
}

#[inline(never)]
fn prodbg_timeline_window_hot_qzv(for_how_long: Duration) -> u64 {
    let start = Instant::now();
    let mut x = 5u64;
    while start.elapsed() < for_how_long {
        for i in 0..10_000u64 {
            x = std::hint::black_box(x.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i);
        }
    }
    x
}

/// The series the console charts, as the page's script chooses them.
fn charted(name: &str) -> bool {
    [
        "cpu",
        "rss_bytes",
        "jemalloc_allocated_bytes",
        "spans_in_flight",
        "errors",
        "admin_requests",
    ]
    .contains(&name)
        || (name.starts_with("tokio.") && name.ends_with(".busy_ratio"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_charts_the_timeline_and_a_dragged_window_shows_its_cpu_flamegraph() {
    let server = spawn_with(|b| {
        b.service_name("browser-test")
            .tokio_runtime("main", tokio::runtime::Handle::current())
            .flight_recorder(prodbg::FlightRecorder::default().frequency_hz(99))
    });
    let addr = server.handle.local_addr();
    // A spike that is over before anyone looks: 3 s in one function, recorded.
    std::thread::Builder::new()
        .name("timeline-hot".into())
        .spawn(|| prodbg_timeline_window_hot_qzv(Duration::from_secs(3)))
        .unwrap()
        .join()
        .unwrap();

    let b = launch().await;
    b.goto(&format!("http://ops:{ADMIN_SECRET}@{addr}/debug/"))
        .await
        .unwrap();
    b.wait_for("html[data-ready='1'] #charts", PATIENCE)
        .await
        .unwrap();
    // The cpu chart, once it has a few points (the page redraws on its 10 s cadence).
    let start = Instant::now();
    loop {
        let points = b
            .execute(
                "const f = document.querySelector('#charts figure[data-series=\"cpu\"]'); \
                 return f && f.querySelector('svg path.line') ? Number(f.dataset.points) : 0",
                vec![],
            )
            .await
            .unwrap();
        if points.as_u64().unwrap_or(0) >= 3 {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "no cpu chart with 3 points; the charts: {}",
            text_of(&b, "#charts").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // One chart per charted series, each with its name, unit and last value; the other
    // series (warnings, Tokio queues, jemalloc resident) are not drawn.
    let charts = b
        .execute(
            "return [...document.querySelectorAll('#charts figure.chart')].map(f => \
             [f.dataset.series, f.querySelector('figcaption').textContent])",
            vec![],
        )
        .await
        .unwrap();
    let charts: Vec<(String, String)> = serde_json::from_value(charts).unwrap();
    let names: Vec<&str> = charts.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "cpu",
        "rss_bytes",
        "admin_requests",
        "tokio.main.busy_ratio",
    ] {
        assert_eq!(
            names.iter().filter(|n| **n == want).count(),
            1,
            "{want}: {charts:?}"
        );
    }
    assert!(names.iter().all(|n| charted(n)), "{charts:?}");
    let (_, timeline) = get(&server.url("/debug/timeline?since=10m"), Some(READ_SECRET)).await;
    let timeline: serde_json::Value = serde_json::from_str(&timeline).unwrap();
    let served: Vec<&str> = timeline["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(served.iter().any(|n| !charted(n)), "{served:?}");
    assert!(
        names.iter().all(|n| served.contains(n)),
        "{names:?} {served:?}"
    );
    let (_, rss) = charts.iter().find(|(n, _)| n == "rss_bytes").unwrap();
    assert!(rss.contains("bytes") && rss.contains("MiB"), "{rss}");
    let (_, cpu) = charts.iter().find(|(n, _)| n == "cpu").unwrap();
    assert!(cpu.contains("cores"), "{cpu}");

    // Drag across the whole cpu chart, edge to edge.
    b.execute(
        "const svg = document.querySelector('#charts figure[data-series=\"cpu\"] svg'); \
         const r = svg.getBoundingClientRect(); \
         const y = r.top + r.height / 2; \
         const at = (type, x) => svg.dispatchEvent(new MouseEvent(type, \
           { bubbles: true, cancelable: true, button: 0, clientX: x, clientY: y })); \
         at('mousedown', r.left); at('mousemove', r.right); at('mouseup', r.right);",
        vec![],
    )
    .await
    .unwrap();
    let status = wait_status(&b, "Ctrl-F").await;
    assert!(
        status.starts_with("CPU flamegraph of ")
            && status.contains(" s ago to now, browser-test-cpu-"),
        "{status}"
    );

    // The framed flamegraph is the recorded window's: the spike's function is in it.
    let frame = b.find("#flame").await.unwrap();
    assert_eq!(
        b.attribute(&frame, "src").await.unwrap().as_deref(),
        Some(format!("http://{addr}/debug/console/last/cpu.svg").as_str())
    );
    let svg = b
        .execute(
            "return fetch('console/last/cpu.svg', { credentials: 'same-origin', cache: 'no-store' }).then(r => r.text())",
            vec![],
        )
        .await
        .unwrap();
    let svg = svg.as_str().unwrap_or_default();
    assert!(
        svg.contains("prodbg_timeline_window_hot_qzv"),
        "the spike's function is not in the window's flamegraph:\n{}",
        &svg[..svg.len().min(2000)]
    );
    // The charts, the window shown on each, in the screenshot.
    b.execute(
        "document.getElementById('timeline').scrollIntoView()",
        vec![],
    )
    .await
    .unwrap();
    let png = b
        .screenshot_png(artifact("console-timeline-window.png"))
        .await
        .unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    let log = b.browser_log().await.unwrap();
    let refused: Vec<_> = log
        .iter()
        .filter(|l| l.contains("Content Security Policy") || l.contains("Refused to"))
        .collect();
    assert!(refused.is_empty(), "CSP violations: {refused:#?}");
    b.quit().await.unwrap();

    // The console asked the recorder for that window (since=, no until: it ends now), as curl would.
    let audit = server.audit_lines();
    let profile = audit
        .iter()
        .find(|l| l["path"] == "/debug/pprof/profile")
        .expect("the console's profile request is audited");
    let query = profile["query"].as_str().unwrap();
    assert!(
        query.starts_with("since=") && query.ends_with("s&format=svg") && !query.contains("until"),
        "{query}"
    );
    assert_eq!(profile["status"], 200);
}
