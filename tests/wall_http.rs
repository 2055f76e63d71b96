//! `GET /debug/pprof/wall` over real HTTP: a planted `std::sync::Mutex` deadlock and a blocked
//! Tokio worker found under their functions with their states, read back with pprof-rs's
//! decoder; svg and folded rooted at the states; bad input; one profile at a time; a thread
//! dump during a profile; nothing left behind. No timed assertions: every wait is bounded and
//! only guards against a hang.
#![cfg(feature = "wall")]

mod common;

use std::collections::HashMap;
use std::sync::{mpsc, Arc, Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::decode_pprof as decode;
use common::*;

/// The wall profiler is process-global: these tests take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PATIENCE: Duration = Duration::from_secs(30);

#[inline(never)]
fn prodbg_wall_lock_first_then_second(
    first: &Mutex<u32>,
    second: &Mutex<u32>,
    both: &Barrier,
) -> u32 {
    let a = first.lock().unwrap();
    both.wait();
    let b = second.lock().unwrap();
    std::hint::black_box(*a + *b)
}

#[inline(never)]
fn prodbg_wall_lock_second_then_first(
    first: &Mutex<u32>,
    second: &Mutex<u32>,
    both: &Barrier,
) -> u32 {
    let b = second.lock().unwrap();
    both.wait();
    let a = first.lock().unwrap();
    std::hint::black_box(*a + *b)
}

#[inline(never)]
fn prodbg_wall_block_the_worker(rx: &mpsc::Receiver<()>) {
    // A blocking call inside an async task: the worker thread is stuck here.
    let _ = rx.recv();
}

/// The thread ids whose `comm` is `name`.
fn tids_named(name: &str) -> Vec<u32> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|tid| {
            std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                .is_ok_and(|n| n.trim_end() == name)
        })
        .collect()
}

/// Waits (bounded) until a thread named `name` sleeps in a `futex` wait.
fn wait_until_in_futex(name: &str) {
    let start = Instant::now();
    loop {
        let in_futex = tids_named(name).into_iter().any(|tid| {
            let stat =
                std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
            let sleeping = stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('S'));
            let syscall = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall"))
                .unwrap_or_default();
            sleeping && syscall.split_whitespace().next() == Some(&libc::SYS_futex.to_string())
        });
        if in_futex {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "{name} never blocked in futex");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The planted faults, once per process: two threads deadlocked on two `std::sync::Mutex`es
/// (never joined: they stay deadlocked until the process exits) and a one-worker Tokio runtime
/// whose worker is blocked inside [`prodbg_wall_block_the_worker`].
fn plant_faults() {
    static PLANTED: OnceLock<()> = OnceLock::new();
    PLANTED.get_or_init(|| {
        let m1 = Arc::new(Mutex::new(1));
        let m2 = Arc::new(Mutex::new(2));
        let both = Arc::new(Barrier::new(2));
        {
            let (m1, m2, both) = (m1.clone(), m2.clone(), both.clone());
            std::thread::Builder::new()
                .name("wall-dl-a".into())
                .spawn(move || prodbg_wall_lock_first_then_second(&m1, &m2, &both))
                .unwrap();
        }
        std::thread::Builder::new()
            .name("wall-dl-b".into())
            .spawn(move || prodbg_wall_lock_second_then_first(&m1, &m2, &both))
            .unwrap();

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("wall-tokio-w")
            .build()
            .unwrap();
        let (started_tx, started_rx) = mpsc::channel();
        let (_release_tx, release_rx) = mpsc::channel::<()>();
        rt.spawn(async move {
            started_tx.send(()).unwrap();
            prodbg_wall_block_the_worker(&release_rx);
        });
        started_rx
            .recv_timeout(PATIENCE)
            .expect("the task never ran");
        // Leaked with the runtime and the release sender: the worker stays blocked.
        std::mem::forget(_release_tx);
        std::mem::forget(rt);

        wait_until_in_futex("wall-dl-a");
        wait_until_in_futex("wall-dl-b");
        wait_until_in_futex("wall-tokio-w");
    });
}

async fn fetch(url: &str) -> reqwest::Response {
    let r = client()
        .get(url)
        .bearer_auth(PROFILE_SECRET)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    if status != 200 {
        panic!("{url}: {status} {}", r.text().await.unwrap());
    }
    r
}

/// Per thread name: (samples, samples whose stack has `function`, samples in state `state`).
fn per_thread(
    p: &pprof::protos::Profile,
    function: &HashMap<&str, &str>,
    state: &str,
) -> HashMap<String, (i64, i64, i64)> {
    let s = |i: i64| p.string_table[i as usize].as_str();
    let functions: HashMap<u64, &str> = p.function.iter().map(|f| (f.id, s(f.name))).collect();
    let locations: HashMap<u64, Vec<&str>> = p
        .location
        .iter()
        .map(|l| {
            (
                l.id,
                l.line
                    .iter()
                    .map(|line| functions[&line.function_id])
                    .collect(),
            )
        })
        .collect();
    let mut out: HashMap<String, (i64, i64, i64)> = HashMap::new();
    for sample in &p.sample {
        let label = |key: &str| {
            sample
                .label
                .iter()
                .find(|l| s(l.key) == key)
                .map(|l| s(l.str).to_string())
        };
        let thread = label("thread").expect("every sample has a thread label");
        let st = label("state").expect("every sample has a state label");
        let Some(&want) = function.get(thread.as_str()) else {
            continue;
        };
        let count = sample.value[0];
        let has = sample
            .location_id
            .iter()
            .flat_map(|id| &locations[id])
            .any(|name| name.contains(want));
        let e = out.entry(thread).or_default();
        e.0 += count;
        e.1 += if has { count } else { 0 };
        e.2 += if st == state { count } else { 0 };
    }
    out
}

#[tokio::test]
async fn deadlocked_threads_and_a_blocked_worker_are_found_under_their_functions() {
    let _turn = SERIAL.lock().await;
    plant_faults();
    let server = spawn_with(|b| b.service_name("wall-http-test"));

    let r = fetch(&server.url("/debug/pprof/wall?seconds=2")).await;
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    let disposition = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        disposition.starts_with("attachment; filename=\"wall-http-test-wall-20")
            && disposition.ends_with("Z.pb.gz\""),
        "{disposition}"
    );
    assert_eq!(r.headers()["x-prodbg-requested-hz"], "19");
    let samples: u64 = r.headers()["x-prodbg-samples"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(samples > 0);
    let p = decode(&r.bytes().await.unwrap());
    let s = |i: i64| p.string_table[i as usize].as_str();
    let types: Vec<(&str, &str)> = p.sample_type.iter().map(|t| (s(t.ty), s(t.unit))).collect();
    assert_eq!(types, vec![("samples", "count"), ("wall", "nanoseconds")]);
    assert_eq!(s(p.default_sample_type), "wall");
    assert_eq!(p.period, 1_000_000_000 / 19);
    assert!(p.duration_nanos >= 2_000_000_000);
    // Each sample's wall value is its count times the period.
    assert!(p.sample.iter().all(|x| x.value[1] == x.value[0] * p.period));

    let wanted = HashMap::from([
        ("wall-dl-a", "prodbg_wall_lock_first_then_second"),
        ("wall-dl-b", "prodbg_wall_lock_second_then_first"),
        ("wall-tokio-w", "prodbg_wall_block_the_worker"),
    ]);
    let seen = per_thread(&p, &wanted, "futex");
    for (thread, function) in &wanted {
        let &(total, under, futex) = seen
            .get(*thread)
            .unwrap_or_else(|| panic!("no samples of {thread}: {seen:?}"));
        assert!(total > 0, "{thread}");
        assert!(
            under * 10 >= total * 8,
            "{thread}: {under} of {total} samples under {function}"
        );
        // Blocked on a std mutex (or a std channel): asleep in futex, not running.
        assert!(
            futex * 10 >= total * 8,
            "{thread}: {futex} of {total} samples in state futex"
        );
    }
}

#[tokio::test]
async fn svg_and_folded_are_rooted_at_the_states() {
    let _turn = SERIAL.lock().await;
    plant_faults();
    let server = spawn();

    let r = fetch(&server.url("/debug/pprof/wall?seconds=1&format=folded&frequency=50")).await;
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    let folded = r.text().await.unwrap();
    let roots = [
        "[running]",
        "[runnable]",
        "[futex]",
        "[io]",
        "[sleeping]",
        "[stopped]",
        "[other]",
    ];
    for line in folded.lines() {
        let root = line.split(';').next().unwrap();
        assert!(roots.contains(&root), "line not rooted at a state: {line}");
    }
    assert!(
        folded
            .lines()
            .any(|l| l.starts_with("[futex];") && l.contains("prodbg_wall_lock_first_then_second")),
        "{folded}"
    );

    let r = fetch(&server.url("/debug/pprof/wall?seconds=1&format=svg")).await;
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    assert!(r.headers().contains_key("content-security-policy"));
    let svg = r.text().await.unwrap();
    assert!(
        svg.starts_with("<?xml") || svg.contains("<svg"),
        "not an SVG"
    );
    assert!(svg.contains("[futex]"), "no [futex] root frame in the SVG");
    assert!(svg.contains("prodbg_wall_block_the_worker"));

    // Unsymbolized pprof: addresses and real mappings, no function names.
    let r = fetch(&server.url("/debug/pprof/wall?seconds=1&symbolize=false")).await;
    let p = decode(&r.bytes().await.unwrap());
    assert!(!p.sample.is_empty() && !p.mapping.is_empty());
    assert!(!p
        .string_table
        .iter()
        .any(|x| x.contains("prodbg_wall_lock_first_then_second")));
}

#[tokio::test]
async fn bad_parameters_are_400s_that_say_what_is_allowed() {
    let _turn = SERIAL.lock().await;
    let server = spawn();
    for (query, mentions) in [
        ("frequency=0", "frequency"),
        ("frequency=101", "frequency"),
        ("frequency=100000", "frequency"),
        ("seconds=0", "seconds"),
        ("seconds=61", "seconds"),
        ("format=xml", "format"),
        ("symbolize=false&format=svg", "symbolize=false"),
        ("bogus=1", "unknown parameter"),
        (&format!("span={}", "s".repeat(129)), "span"),
        ("seconds=1&seconds=2", "more than once"),
    ] {
        let (status, body) = get(
            &server.url(&format!("/debug/pprof/wall?{query}")),
            Some(PROFILE_SECRET),
        )
        .await;
        assert_eq!(status, 400, "{query}: {body}");
        let message = error_message(&body, "bad_parameter");
        assert!(message.contains(mentions), "{query}: {message}");
    }
    let (status, _) = get(
        &server.url("/debug/pprof/wall?seconds=1"),
        Some(READ_SECRET),
    )
    .await;
    assert_eq!(status, 403, "a read token may not profile");
}

/// Whether the index says a wall profile runs.
async fn wall_running(server: &Server) -> bool {
    let v = common::index(server).await;
    common::figure(&v, "wall", "wall")["value"] == "running"
}

/// Whether any thread of this process has signal `sig` pending.
fn signal_pending_anywhere(sig: i64) -> bool {
    let bit = 1u64 << (sig - 1);
    let mask = |text: &str, key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .unwrap_or(0)
    };
    let process = std::fs::read_to_string("/proc/self/status").unwrap();
    mask(&process, "ShdPnd:") & bit != 0
        || std::fs::read_dir("/proc/self/task").unwrap().any(|e| {
            let tid = e.unwrap().file_name();
            let status = std::fs::read_to_string(format!(
                "/proc/self/task/{}/status",
                tid.to_string_lossy()
            ))
            .unwrap_or_default();
            mask(&status, "SigPnd:") & bit != 0
        })
}

#[tokio::test]
async fn one_at_a_time_a_thread_dump_meanwhile_and_nothing_left_behind() {
    let _turn = SERIAL.lock().await;
    plant_faults();
    let server = spawn();
    assert!(!wall_running(&server).await);

    let url = server.url("/debug/pprof/wall?seconds=3&format=folded");
    let running = tokio::spawn(async move {
        let r = client()
            .get(&url)
            .bearer_auth(PROFILE_SECRET)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    let start = Instant::now();
    while !wall_running(&server).await {
        assert!(start.elapsed() < PATIENCE, "the wall profile never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A second one is refused with when to retry.
    let (status, body) = get(
        &server.url("/debug/pprof/wall?seconds=1"),
        Some(PROFILE_SECRET),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(error_message(&body, "conflict").contains("already running"));

    // A thread dump while it samples: every planted thread answers with its stack.
    let (status, body) = get(&server.url("/debug/threads"), Some(PROFILE_SECRET)).await;
    assert_eq!(status, 200, "{body}");
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    let sig = dump["signal"].as_i64().expect("the dump's signal");
    let threads = dump["threads"].as_array().unwrap();
    for name in ["wall-dl-a", "wall-dl-b", "wall-tokio-w", "prodbg-wall"] {
        let t = threads
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in the dump"));
        assert!(t["error"].is_null(), "{name}: {t}");
        assert!(!t["frames"].as_array().unwrap().is_empty(), "{name}: {t}");
    }
    assert!(body.contains("prodbg_wall_lock_second_then_first"));

    let (status, folded) = running.await.unwrap();
    assert_eq!(status, 200, "{folded}");
    assert!(folded.contains("prodbg_wall_block_the_worker"), "{folded}");

    // Nothing left: no sampler thread, no signal still queued anywhere, the flag cleared.
    assert!(
        tids_named("prodbg-wall").is_empty(),
        "the sampler thread is still there"
    );
    assert!(!signal_pending_anywhere(sig), "signal {sig} still pending");
    assert!(!wall_running(&server).await);
    // And the next profile starts again.
    let r = fetch(&server.url("/debug/pprof/wall?seconds=1&format=folded")).await;
    assert!(r.text().await.unwrap().contains("[futex]"));
}
