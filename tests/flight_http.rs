//! The CPU flight recorder over real HTTP: a burst of CPU that is over before anyone asks is
//! found with `?since=` (decoded with a real pprof decoder and with `go tool pprof`), an
//! on-demand profile still works while it records, and bad windows get a 400.
#![cfg(feature = "cpu")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use prodbg::FlightRecorder;

#[inline(never)]
fn prodbg_flight_burst_q3(n: u64) -> u64 {
    (0..n).fold(11u64, |a, x| {
        std::hint::black_box(a.wrapping_mul(29).wrapping_add(x))
    })
}

/// Burns one thread's CPU in the named function for `d`, then stops (the spike is over).
fn burst(d: Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let t = std::thread::Builder::new()
        .name("burst-q3".into())
        .spawn(move || {
            while !s.load(Ordering::Relaxed) {
                std::hint::black_box(prodbg_flight_burst_q3(100_000));
            }
        })
        .unwrap();
    std::thread::sleep(d);
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
}

fn server() -> Server {
    spawn_with(|b| b.flight_recorder(FlightRecorder::default().frequency_hz(99)))
}

async fn get(server: &Server, path: &str) -> reqwest::Response {
    client()
        .get(server.url(path))
        .bearer_auth(PROFILE_SECRET)
        .send()
        .await
        .unwrap()
}

/// Samples (value 0) of the profile, and those whose stack reaches the burst function.
fn burst_share(p: &pprof::protos::Profile) -> (i64, i64) {
    let s = |i: i64| p.string_table[i as usize].as_str();
    let func = |id: u64| p.function.iter().find(|f| f.id == id).unwrap();
    let loc = |id: u64| p.location.iter().find(|l| l.id == id).unwrap();
    let (mut all, mut hot) = (0, 0);
    for sample in &p.sample {
        all += sample.value[0];
        let in_burst = sample.location_id.iter().any(|&l| {
            loc(l)
                .line
                .iter()
                .any(|line| s(func(line.function_id).name).ends_with("prodbg_flight_burst_q3"))
        });
        if in_burst {
            hot += sample.value[0];
        }
    }
    (all, hot)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_that_is_over_is_found_with_since() {
    let server = server();
    tokio::task::spawn_blocking(|| burst(Duration::from_secs(3)))
        .await
        .unwrap();
    // The burst is over; nobody was profiling.
    let asked = std::time::SystemTime::now();
    let r = get(&server, "/debug/pprof/profile?since=1m").await;
    assert_eq!(r.status().as_u16(), 200);
    let start = r.headers()["x-prodbg-window-start"]
        .to_str()
        .unwrap()
        .to_string();
    let end = r.headers()["x-prodbg-window-end"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(start < end, "{start} {end}");
    let body = r.bytes().await.unwrap();
    let p = decode_pprof(&body);
    let (all, hot) = burst_share(&p);
    assert!(
        all > 0 && hot * 2 >= all,
        "{hot} of {all} samples in the burst"
    );
    // The pprof's window is the recorded one, ending when it was asked for.
    let end_ns = p.time_nanos + p.duration_nanos;
    let asked_ns = asked
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    assert!(p.duration_nanos > 0 && (end_ns - asked_ns).abs() < 5_000_000_000);

    // The same window as SVG and folded, and read by go tool pprof.
    let folded = get(&server, "/debug/pprof/profile?since=1m&format=folded")
        .await
        .text()
        .await
        .unwrap();
    assert!(folded.contains("prodbg_flight_burst_q3"), "{folded}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("since.pb.gz"), &body).unwrap();
    let out = go_tool_pprof(dir.path(), &["-top", "since.pb.gz"]);
    let top = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{top}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(top.contains("prodbg_flight_burst_q3"), "{top}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_profile_works_while_it_records_and_lands_in_the_history() {
    let server = server();
    let hot = tokio::task::spawn_blocking(|| burst(Duration::from_secs(2)));
    let started = Instant::now();
    let r = get(&server, "/debug/pprof/profile?seconds=1&format=folded").await;
    assert_eq!(r.status().as_u16(), 200, "no 409 because of the recorder");
    assert!(started.elapsed() >= Duration::from_secs(1));
    hot.await.unwrap();
    let text = r.text().await.unwrap();
    assert!(text.contains("prodbg_flight_burst_q3"), "{text}");
    // The recorder is still on, and its figure says so.
    let index = common::index(&server).await;
    let flight = figure(&index, "cpu", "flight");
    assert!(
        flight["value"].as_str().unwrap().starts_with("on"),
        "{flight}"
    );
}

#[tokio::test]
async fn bad_windows_are_400_naming_what_is_allowed() {
    let server = server();
    for (query, says) in [
        ("since=2h", "retention"),
        ("since=abc", "like 90s, 5m or 1h"),
        ("since=1m&until=2m", "until must be"),
        ("since=1m&seconds=5", "give one or the other"),
    ] {
        let r = get(&server, &format!("/debug/pprof/profile?{query}")).await;
        assert_eq!(r.status().as_u16(), 400, "{query}");
        let body = r.text().await.unwrap();
        assert!(body.contains(says), "{query}: {body}");
    }
    let r = get(&server, "/debug/pprof/wall?since=2h").await;
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("retention"));
}

#[inline(never)]
fn prodbg_flight_waits_z8(m: &std::sync::Mutex<()>) {
    drop(m.lock().unwrap());
}

/// Where the threads were waiting a few seconds ago: a thread blocked on a held mutex is in
/// the wall-clock history, in its futex state, in the function that waited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_threads_waited_is_found_with_since_on_the_wall_profile() {
    let server = server();
    tokio::task::spawn_blocking(|| {
        let m = Arc::new(std::sync::Mutex::new(()));
        let held = m.lock().unwrap();
        let m2 = m.clone();
        let waiter = std::thread::Builder::new()
            .name("waiter-z8".into())
            .spawn(move || prodbg_flight_waits_z8(&m2))
            .unwrap();
        std::thread::sleep(Duration::from_secs(4));
        drop(held);
        waiter.join().unwrap();
    })
    .await
    .unwrap();
    // The wait is over; the history still has it.
    let r = get(&server, "/debug/pprof/wall?since=1m&format=folded").await;
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers().contains_key("x-prodbg-window-start"));
    let folded = r.text().await.unwrap();
    assert!(
        folded
            .lines()
            .any(|l| l.starts_with("[futex];") && l.contains("prodbg_flight_waits_z8")),
        "{folded}"
    );
}
