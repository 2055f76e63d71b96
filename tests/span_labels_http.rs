//! CPU and wall-clock samples labelled by request: with prodbg's spans layer installed, a
//! thread working inside a `tracing` span gets `span` and `route` pprof labels on its samples
//! (read with a real decoder and with `go tool pprof -tags`), a thread outside spans gets none,
//! and `?span=` keeps one span's samples.

mod common;

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{
    client, decode_pprof as decode, go_tool_pprof, spans_handle as handle, spawn_with,
    PROFILE_SECRET,
};

#[inline(never)]
fn labelled_checkout_spin(stop: &AtomicBool) -> u64 {
    let mut x = 1u64;
    while !stop.load(Ordering::Relaxed) {
        for i in 0..10_000u64 {
            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
    }
    x
}

#[inline(never)]
fn unlabelled_background_spin(stop: &AtomicBool) -> u64 {
    let mut x = 3u64;
    while !stop.load(Ordering::Relaxed) {
        for i in 0..10_000u64 {
            x = black_box(x.wrapping_mul(2862933555777941757).wrapping_add(i));
        }
    }
    x
}

#[inline(never)]
fn labelled_stuck_sleep(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Starts the three threads; each has entered its span (or none) when this returns.
fn start_threads(stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    let ready = Arc::new(Barrier::new(4));
    let spawn = |name: &str, f: fn(&AtomicBool)| {
        let (stop, ready) = (stop.clone(), ready.clone());
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                ready.wait();
                f(&stop)
            })
            .unwrap()
    };
    let threads = vec![
        spawn("lbl-checkout", |stop| {
            let _span = tracing::info_span!("checkout", route = "/checkout").entered();
            black_box(labelled_checkout_spin(stop));
        }),
        spawn("lbl-background", |stop| {
            black_box(unlabelled_background_spin(stop));
        }),
        spawn("lbl-stuck", |stop| {
            let _span = tracing::info_span!("stuck", route = "/stuck").entered();
            labelled_stuck_sleep(stop);
        }),
    ];
    ready.wait();
    // Each thread enters its span right after the barrier.
    std::thread::sleep(Duration::from_millis(50));
    threads
}

async fn fetch(url: &str) -> (u16, Vec<u8>) {
    let r = client()
        .get(url)
        .bearer_auth(PROFILE_SECRET)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.bytes().await.unwrap().to_vec())
}

async fn ok(url: &str) -> Vec<u8> {
    let (status, body) = fetch(url).await;
    assert_eq!(status, 200, "{url}: {}", String::from_utf8_lossy(&body));
    body
}

/// Per function of interest: (samples whose stack has it, of those: samples labelled
/// `span=want_span, route=want_route`, samples with any `span` label).
fn by_function(
    p: &pprof::protos::Profile,
    wanted: &[(&str, Option<(&str, &str)>)],
) -> HashMap<String, (i64, i64, i64)> {
    let s = |i: i64| p.string_table[i as usize].as_str();
    let functions: HashMap<u64, &str> = p.function.iter().map(|f| (f.id, s(f.name))).collect();
    let locations: HashMap<u64, Vec<&str>> = p
        .location
        .iter()
        .map(|l| {
            (
                l.id,
                l.line.iter().map(|x| functions[&x.function_id]).collect(),
            )
        })
        .collect();
    let mut out = HashMap::new();
    for sample in &p.sample {
        let label = |key: &str| {
            sample
                .label
                .iter()
                .find(|l| s(l.key) == key)
                .map(|l| s(l.str))
        };
        let names: Vec<&str> = sample
            .location_id
            .iter()
            .flat_map(|id| locations[id].iter().copied())
            .collect();
        for (function, want) in wanted {
            if !names.iter().any(|n| n.contains(function)) {
                continue;
            }
            let e: &mut (i64, i64, i64) = out.entry(function.to_string()).or_default();
            let count = sample.value[0];
            e.0 += count;
            if want.is_some_and(|(span, route)| {
                label("span") == Some(span) && label("route") == Some(route)
            }) {
                e.1 += count;
            }
            if label("span").is_some() {
                e.2 += count;
            }
        }
    }
    out
}

fn go_pprof_stdout(dir: &Path, args: &[&str]) -> String {
    let out = go_tool_pprof(dir, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_and_wall_samples_carry_the_span_they_were_taken_in() {
    let server = spawn_with(|b| b.spans(handle()));
    let stop = Arc::new(AtomicBool::new(false));
    let threads = start_threads(&stop);
    let wanted = [
        ("labelled_checkout_spin", Some(("checkout", "/checkout"))),
        ("unlabelled_background_spin", None),
        ("labelled_stuck_sleep", Some(("stuck", "/stuck"))),
    ];

    // CPU: the spinning thread inside `checkout` is labelled, the one outside is not.
    let cpu_gz = ok(&server.url("/debug/pprof/profile?seconds=2")).await;
    let cpu = by_function(&decode(&cpu_gz), &wanted);
    let (n, labelled, _) = cpu["labelled_checkout_spin"];
    assert!(n >= 20, "too few CPU samples in the span: {cpu:?}");
    assert!(
        labelled * 10 >= n * 9,
        "CPU samples in span `checkout` without its labels: {cpu:?}"
    );
    let (n, _, with_span) = cpu["unlabelled_background_spin"];
    assert!(n >= 20, "too few CPU samples outside spans: {cpu:?}");
    assert_eq!(
        with_span, 0,
        "a thread in no span got a span label: {cpu:?}"
    );

    // ?span= keeps one span's samples.
    let folded = String::from_utf8(
        ok(&server.url("/debug/pprof/profile?seconds=1&format=folded&span=checkout")).await,
    )
    .unwrap();
    assert!(folded.contains("labelled_checkout_spin"), "{folded}");
    assert!(!folded.contains("unlabelled_background_spin"), "{folded}");

    // Wall: the sleeping thread inside `stuck` is labelled, off-CPU.
    let wall_gz = ok(&server.url("/debug/pprof/wall?seconds=2")).await;
    let wall = by_function(&decode(&wall_gz), &wanted);
    let (n, labelled, _) = wall["labelled_stuck_sleep"];
    assert!(
        n >= 20,
        "too few wall samples of the stuck thread: {wall:?}"
    );
    assert!(
        labelled * 10 >= n * 8,
        "wall samples in span `stuck` without its labels: {wall:?}"
    );
    assert_eq!(wall["unlabelled_background_spin"].2, 0, "{wall:?}");
    let folded = String::from_utf8(
        ok(&server.url("/debug/pprof/wall?seconds=1&format=folded&span=stuck")).await,
    )
    .unwrap();
    assert!(folded.contains("labelled_stuck_sleep"), "{folded}");
    assert!(!folded.contains("labelled_checkout_spin"), "{folded}");
    assert!(!folded.contains("unlabelled_background_spin"), "{folded}");

    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }

    // `go tool pprof` splits the CPU profile by the labels.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cpu.pb.gz"), &cpu_gz).unwrap();
    let tags = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || go_pprof_stdout(&dir, &["-tags", "cpu.pb.gz"])
    })
    .await
    .unwrap();
    assert!(tags.contains("span") && tags.contains("checkout"), "{tags}");
    assert!(
        tags.contains("route") && tags.contains("/checkout"),
        "{tags}"
    );
    let focused = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || go_pprof_stdout(&dir, &["-top", "-tagfocus", "span=checkout", "cpu.pb.gz"])
    })
    .await
    .unwrap();
    assert!(focused.contains("labelled_checkout_spin"), "{focused}");
    assert!(!focused.contains("unlabelled_background_spin"), "{focused}");
}

#[tokio::test]
async fn a_bad_span_parameter_is_a_clear_400() {
    let server = spawn_with(|b| b.spans(handle()));
    let long = "x".repeat(200);
    for path in ["/debug/pprof/profile", "/debug/pprof/wall"] {
        for q in ["span=".to_string(), format!("span={long}")] {
            let url = server.url(&format!("{path}?seconds=1&{q}"));
            let (status, body) = fetch(&url).await;
            let body = String::from_utf8_lossy(&body);
            assert_eq!(status, 400, "{url}: {body}");
            assert!(body.contains("span"), "{url}: {body}");
        }
    }
}
