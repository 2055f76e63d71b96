//! `GET /debug/pprof/profile` over real HTTP: formats, headers, parameters, one-at-a-time,
//! and a client that hangs up.
#![cfg(feature = "cpu")]

mod common;

use std::io::Read as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pprof::protos::Message as _;

/// The profiler is process-global: these tests take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[inline(never)]
fn prodbg_http_hot_loop_k9(n: u64) -> u64 {
    (0..n).fold(7u64, |a, x| {
        std::hint::black_box(a.wrapping_mul(31).wrapping_add(x))
    })
}

/// Two named host threads burning CPU in the hot function until dropped.
struct Hot(Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>);
impl Hot {
    fn start() -> Hot {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..2)
            .map(|_| {
                let stop = stop.clone();
                std::thread::Builder::new()
                    .name("hot-host-k9".into())
                    .spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            std::hint::black_box(prodbg_http_hot_loop_k9(100_000));
                        }
                    })
                    .unwrap()
            })
            .collect();
        Hot(stop, threads)
    }
}
impl Drop for Hot {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        self.1.drain(..).for_each(|t| t.join().unwrap());
    }
}

async fn fetch(url: &str) -> reqwest::Response {
    let r = client()
        .get(url)
        .bearer_auth(PROFILE_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{url}");
    r
}

#[tokio::test]
async fn hot_function_and_thread_appear_in_every_format() {
    let _turn = SERIAL.lock().await;
    let server = spawn_with(|b| b.service_name("cpu-http-test"));
    let _hot = Hot::start();

    // pprof (the default): gzipped profile.proto.
    let r = fetch(&server.url("/debug/pprof/profile?seconds=2")).await;
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    // Named for the ticket: <service>-cpu-<time>.pb.gz, no ':' (curl -OJ, Windows).
    let disposition = r.headers()["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"cpu-http-test-cpu-20")
            && disposition.ends_with("Z.pb.gz\"")
            && disposition[30..].chars().all(|c| c != ':'),
        "{disposition}"
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["x-prodbg-requested-hz"], "99");
    // Per CPU-second, not per wall second: near the requested 99 Hz whatever share of its
    // cores the process used (a loose band: timer slack and the clock's own reads).
    let rate: f64 = r.headers()["x-prodbg-samples-per-cpu-second"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (30.0..200.0).contains(&rate),
        "{rate} samples per CPU-second at 99 Hz"
    );
    let gz = r.bytes().await.unwrap();
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .unwrap();
    let p = pprof::protos::Profile::decode(&raw[..]).unwrap();
    let s = |i: i64| p.string_table[i as usize].as_str();
    let types: Vec<(&str, &str)> = p.sample_type.iter().map(|t| (s(t.ty), s(t.unit))).collect();
    assert_eq!(types, vec![("samples", "count"), ("cpu", "nanoseconds")]);
    assert!(p.duration_nanos >= 2_000_000_000);
    assert_eq!(p.period, 1_000_000_000 / 99);
    let hot_fn = p
        .function
        .iter()
        .find(|f| s(f.name).contains("prodbg_http_hot_loop_k9"));
    let hot_fn = hot_fn.unwrap_or_else(|| panic!("hot function not in the pprof function table"));
    assert!(s(hot_fn.filename).ends_with("cpu_http.rs"));
    assert!(
        p.string_table.iter().any(|x| x == "hot-host-k9"),
        "thread name missing"
    );

    let r = fetch(&server.url("/debug/pprof/profile?seconds=2&format=folded")).await;
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    let folded = r.text().await.unwrap();
    assert!(
        folded
            .lines()
            .any(|l| l.starts_with("hot-host-k9;") && l.contains("prodbg_http_hot_loop_k9")),
        "{folded}"
    );

    let r = fetch(&server.url("/debug/pprof/profile?seconds=2&format=svg&frequency=49")).await;
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    let svg = r.text().await.unwrap();
    assert!(svg.contains("prodbg_http_hot_loop_k9") && svg.contains("hot-host-k9"));
    assert!(svg.contains("cpu-http-test: CPU 2 s at 49 Hz"), "title");
}

#[tokio::test]
async fn parameters_are_bounded() {
    let server = spawn();
    let cases = [
        ("seconds=0", "from 1 to 60"),
        ("seconds=61", "from 1 to 60"),
        ("seconds=-1", "from 1 to 60"),
        ("seconds=ten", "from 1 to 60"),
        ("frequency=0", "from 1 to 1000"),
        ("frequency=1001", "from 1 to 1000"),
        ("format=png", "pprof, svg, folded"),
        ("seconds=1&seconds=2", "more than once"),
        (
            "debug=1",
            "allowed: seconds, frequency, since, until, format",
        ),
    ];
    for (q, expect) in cases {
        let (s, body) = get(
            &server.url(&format!("/debug/pprof/profile?{q}")),
            Some(PROFILE_SECRET),
        )
        .await;
        assert_eq!(s, 400, "{q}: {body}");
        assert!(
            error_message(&body, "bad_parameter").contains(expect),
            "{q}: {body}"
        );
    }
    assert_eq!(
        get(
            &server.url("/debug/pprof/profile?seconds=1"),
            Some(READ_SECRET)
        )
        .await
        .0,
        403
    );
    assert_eq!(
        get(&server.url("/debug/pprof/profile?seconds=1"), None)
            .await
            .0,
        401
    );
}

#[tokio::test]
async fn one_profile_at_a_time_and_a_hang_up_stops_sampling() {
    let _turn = SERIAL.lock().await;
    let server = spawn();
    let url = server.url("/debug/pprof/profile?seconds=20");
    // A client that gives up after 1 s.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let first = tokio::spawn({
        let url = url.clone();
        async move { impatient.get(&url).bearer_auth(PROFILE_SECRET).send().await }
    });
    let start = Instant::now();
    while !cpu_profile_running(&server).await {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the profile never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (s, body) = get(
        &server.url("/debug/pprof/profile?seconds=1"),
        Some(PROFILE_SECRET),
    )
    .await;
    assert_eq!(s, 409, "{body}");
    assert!(
        error_message(&body, "conflict").contains("ends in"),
        "{body}"
    );
    assert!(
        first.await.unwrap().is_err(),
        "the impatient client should have timed out"
    );
    // The server notices the hang-up and drops the profile well before its 20 s.
    let start = Instant::now();
    while cpu_profile_running(&server).await {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "sampling outlived its request"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        get(
            &server.url("/debug/pprof/profile?seconds=1&format=folded"),
            Some(PROFILE_SECRET)
        )
        .await
        .0,
        200
    );
    let audited: Vec<u64> = server
        .audit_lines()
        .iter()
        .map(|l| l["status"].as_u64().unwrap())
        .collect();
    assert!(
        audited.contains(&409) && audited.contains(&200),
        "{audited:?}"
    );
}
