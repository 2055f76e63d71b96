//! The thread-stacks probe against real threads: blocked, deadlocked, allocating, and the
//! calling thread itself. No assertion depends on timing; every wait is bounded. A dump
//! signals every thread of the process: every test takes [`serial`].

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::stack::thread_dump::{dump, DumpOptions, ThreadDump, ThreadStack};
use crate::test_support::serial;

const PATIENCE: Duration = Duration::from_secs(20);

fn opts() -> DumpOptions {
    DumpOptions {
        per_thread_timeout: Duration::from_secs(2),
        ..DumpOptions::default()
    }
}

fn has_function(t: &ThreadStack, needle: &str) -> bool {
    t.frames.iter().any(|f| {
        f.function
            .as_deref()
            .is_some_and(|name| name.contains(needle))
    })
}

/// Dumps until `found` picks a thread out of a dump, or PATIENCE runs out.
fn dump_until(mut found: impl FnMut(&ThreadStack) -> bool) -> (ThreadDump, Option<ThreadStack>) {
    let start = Instant::now();
    loop {
        let d = dump(opts());
        let hit = d.threads.iter().find(|t| found(t)).cloned();
        if hit.is_some() || start.elapsed() > PATIENCE {
            return (d, hit);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[inline(never)]
fn prodbg_test_parked_in_recv(rx: mpsc::Receiver<u32>) -> u32 {
    let got = rx.recv().unwrap_or(0);
    black_box(got)
}

#[test]
fn blocked_thread_shows_its_function_name_and_futex_state() {
    let _serial = serial();
    let (tx, rx) = mpsc::channel();
    let worker = thread::Builder::new()
        .name("parked-xyz".into())
        .spawn(move || prodbg_test_parked_in_recv(rx))
        .unwrap();

    let (d, hit) = dump_until(|t| {
        t.name == "parked-xyz"
            && t.state == "futex"
            && has_function(t, "prodbg_test_parked_in_recv")
    });
    tx.send(7).unwrap();
    assert_eq!(worker.join().unwrap(), 7);

    let t = hit.unwrap_or_else(|| panic!("parked thread not found:\n{}", d.to_text()));
    assert!(t.error.is_none());
    assert!(t.cpu_seconds >= 0.0);
    // The innermost frames are the blocking call (libc / std), not the signal handler.
    let first = t
        .frames
        .first()
        .and_then(|f| f.function.clone())
        .unwrap_or_default();
    assert!(
        !first.contains("prodbg::stack::"),
        "handler frames leaked: {first}"
    );
    assert!(
        t.frames.iter().any(|f| f
            .file
            .as_deref()
            .is_some_and(|p| p.ends_with("src/probes/threads/tests.rs"))),
        "no source file for the test frame:\n{}",
        d.to_text()
    );
}

#[inline(never)]
fn prodbg_test_deadlock_side_a(first: &Mutex<u32>, second: &Mutex<u32>, both: &Barrier) {
    let _a = first.lock().unwrap();
    both.wait();
    let _b = second.lock().unwrap();
    black_box(());
}

#[inline(never)]
fn prodbg_test_deadlock_side_b(first: &Mutex<u32>, second: &Mutex<u32>, both: &Barrier) {
    let _b = second.lock().unwrap();
    both.wait();
    let _a = first.lock().unwrap();
    black_box(());
}

#[test]
fn deadlocked_threads_are_both_listed_with_their_functions() {
    let _serial = serial();
    let first: &'static Mutex<u32> = Box::leak(Box::new(Mutex::new(1)));
    let second: &'static Mutex<u32> = Box::leak(Box::new(Mutex::new(2)));
    let both: &'static Barrier = Box::leak(Box::new(Barrier::new(2)));
    // Never joined: these two stay deadlocked until the test process exits.
    thread::Builder::new()
        .name("deadlock-a".into())
        .spawn(move || prodbg_test_deadlock_side_a(first, second, both))
        .unwrap();
    thread::Builder::new()
        .name("deadlock-b".into())
        .spawn(move || prodbg_test_deadlock_side_b(first, second, both))
        .unwrap();

    let start = Instant::now();
    let (mut a, mut b) = (None, None);
    let mut last = None;
    while (a.is_none() || b.is_none()) && start.elapsed() < PATIENCE {
        let d = dump(opts());
        let find = |name: &str, func: &str| {
            d.threads
                .iter()
                .find(|t| t.name == name && has_function(t, func))
                .map(|t| t.tid)
        };
        a = find("deadlock-a", "prodbg_test_deadlock_side_a");
        b = find("deadlock-b", "prodbg_test_deadlock_side_b");
        last = Some(d);
        thread::sleep(Duration::from_millis(20));
    }
    let text = last.map(|d| d.to_text()).unwrap_or_default();
    assert!(a.is_some(), "deadlock-a not found:\n{text}");
    assert!(b.is_some(), "deadlock-b not found:\n{text}");
    assert_ne!(a, b);
}

#[inline(never)]
fn prodbg_test_churn_allocations(stop: &AtomicBool) -> usize {
    let mut total = 0;
    let mut n = 1usize;
    while !stop.load(Ordering::Relaxed) {
        n = (n * 31 + 7) % 4093 + 1;
        let v: Vec<u8> = vec![n as u8; n];
        let s = format!("{n}");
        total += black_box(v).len() + black_box(s).len();
    }
    total
}

#[test]
fn allocating_thread_survives_fifty_dumps_in_a_row() {
    let _serial = serial();
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let churn = {
        let stop = stop.clone();
        thread::Builder::new()
            .name("alloc-churn".into())
            .spawn(move || {
                ready_tx.send(()).unwrap(); // the name is set before the closure runs
                prodbg_test_churn_allocations(&stop)
            })
            .unwrap()
    };
    ready_rx.recv().unwrap();
    let mut captured = 0;
    let mut seen = 0;
    let mut misses = Vec::new();
    let mut last = None;
    for _ in 0..50 {
        let d = dump(opts());
        if let Some(t) = d.threads.iter().find(|t| t.name == "alloc-churn") {
            seen += 1;
            let ok = has_function(t, "prodbg_test_churn_allocations");
            if !ok {
                misses.push(format!("{:?} {:?}", t.error, t.frames.first()));
            }
            captured += usize::from(ok);
        }
        last = Some(d);
    }
    println!("alloc-churn stack captured {captured}/{seen} times");
    stop.store(true, Ordering::Relaxed);
    assert!(churn.join().unwrap() > 0);
    let text = last.map(|d| d.to_text()).unwrap_or_default();
    assert_eq!(seen, 50, "churn thread missing from some dumps:\n{text}");
    assert!(
        captured >= 40,
        "churn stack captured only {captured}/50 times: {misses:#?}\n{text}"
    );
}

#[test]
fn calling_thread_appears_with_its_own_stack() {
    let _serial = serial();
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
    let d = dump(opts());
    let t = d.threads.iter().find(|t| t.tid == me);
    let t = t.unwrap_or_else(|| panic!("calling thread {me} missing:\n{}", d.to_text()));
    assert!(t.error.is_none(), "{:?}", t.error);
    assert!(
        has_function(t, "calling_thread_appears_with_its_own_stack"),
        "{}",
        d.to_text()
    );
    // The stack starts at the caller of `dump`: no frames of the capture itself.
    let first = t
        .frames
        .first()
        .and_then(|f| f.function.clone())
        .unwrap_or_default();
    assert!(
        first.ends_with("calling_thread_appears_with_its_own_stack"),
        "{}",
        d.to_text()
    );
}

#[test]
fn max_frames_bounds_every_stack() {
    let _serial = serial();
    let d = dump(DumpOptions {
        max_frames: 3,
        ..opts()
    });
    for t in &d.threads {
        let machine_frames = t.frames.iter().filter(|f| !f.inlined).count();
        assert!(machine_frames <= 3, "{}", d.to_text());
    }
    assert!(d.threads.iter().any(|t| !t.frames.is_empty()));
}

/// A zero timeout makes most handlers fire after the dumper gave up on them: they must write
/// nothing, and later dumps must still attribute every stack to the right thread.
#[test]
fn late_answers_never_hang_or_mix_up_stacks() {
    let _serial = serial();
    let (tx, rx) = mpsc::channel();
    let worker = thread::Builder::new()
        .name("late-xyz".into())
        .spawn(move || prodbg_test_parked_in_recv(rx))
        .unwrap();
    for _ in 0..20 {
        let d = dump(DumpOptions {
            per_thread_timeout: Duration::ZERO,
            ..opts()
        });
        for t in &d.threads {
            assert!(t.frames.is_empty() == t.error.is_some(), "{}", d.to_text());
        }
        if let Some(t) = d
            .threads
            .iter()
            .find(|t| t.name == "late-xyz" && !t.frames.is_empty())
        {
            assert!(
                has_function(t, "prodbg_test_parked_in_recv"),
                "{}",
                d.to_text()
            );
        }
    }
    let (d, hit) = dump_until(|t| t.name == "late-xyz" && has_function(t, "parked_in_recv"));
    tx.send(3).unwrap();
    worker.join().unwrap();
    assert!(hit.is_some(), "{}", d.to_text());
    for t in d.threads.iter().filter(|t| t.name.starts_with("deadlock-")) {
        assert!(
            !has_function(t, "parked_in_recv"),
            "stack of another thread: {}",
            d.to_text()
        );
    }
}

#[test]
fn to_text_shows_tid_name_and_function_lines() {
    let _serial = serial();
    let (tx, rx) = mpsc::channel();
    let worker = thread::Builder::new()
        .name("text-xyz".into())
        .spawn(move || prodbg_test_parked_in_recv(rx))
        .unwrap();
    let (d, hit) = dump_until(|t| t.name == "text-xyz" && has_function(t, "parked_in_recv"));
    tx.send(1).unwrap();
    worker.join().unwrap();

    let t = hit.unwrap_or_else(|| panic!("thread not found:\n{}", d.to_text()));
    let text = d.to_text();
    assert!(
        text.contains(&format!("Thread dump of pid {}", std::process::id())),
        "{text}"
    );
    assert!(
        text.contains(&format!("\"text-xyz\" tid={} ", t.tid)),
        "{text}"
    );
    assert!(
        text.contains("    at prodbg::probes::threads::tests::prodbg_test_parked_in_recv ("),
        "{text}"
    );
    let json = serde_json::to_value(&d).unwrap();
    assert!(json["threads"].as_array().is_some_and(|a| !a.is_empty()));
    // RFC 3339, e.g. "2026-12-01T03:04:05.678Z".
    let taken_at = json["taken_at"].as_str().unwrap_or_default();
    assert!(
        taken_at.len() == 24
            && taken_at.ends_with('Z')
            && humantime::parse_rfc3339(taken_at).is_ok(),
        "taken_at not RFC 3339: {:?}",
        json["taken_at"]
    );
}

#[test]
fn threads_that_block_the_signal_get_an_error_not_a_hang() {
    let _serial = serial();
    let (tx, rx) = mpsc::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel();
    let worker = thread::Builder::new()
        .name("sig-blocked".into())
        .spawn(move || {
            // SAFETY: a full set is a valid mask; blocking signals on this thread only.
            unsafe {
                let mut all: libc::sigset_t = std::mem::zeroed();
                libc::sigfillset(&mut all);
                libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
            }
            ready_tx.send(()).unwrap();
            let _ = rx.recv();
        })
        .unwrap();
    ready_rx.recv().unwrap();
    let d = dump(opts());
    tx.send(()).unwrap();
    worker.join().unwrap();
    let t = d
        .threads
        .iter()
        .find(|t| t.name == "sig-blocked")
        .expect("thread listed");
    assert!(t.frames.is_empty());
    assert!(
        t.error.as_deref().is_some_and(|e| e.contains("blocks")),
        "{:?}",
        t.error
    );
}

#[inline(never)]
fn prodbg_test_idle_worker(ready: mpsc::Sender<()>, rx: mpsc::Receiver<()>) {
    ready.send(()).unwrap();
    let _ = rx.recv();
}

/// Every one of 19 idle threads is captured; prints how long one dump of them takes
/// (`--nocapture` to see it; the time is not asserted).
#[test]
fn measure_dump_time_of_twenty_threads() {
    let _serial = serial();
    let mut senders = Vec::new();
    let mut workers = Vec::new();
    let (ready_tx, ready_rx) = mpsc::channel();
    for i in 0..19 {
        let ready = ready_tx.clone();
        let (tx, rx) = mpsc::channel();
        senders.push(tx);
        workers.push(
            thread::Builder::new()
                .name(format!("idle-{i}"))
                .spawn(move || prodbg_test_idle_worker(ready, rx))
                .unwrap(),
        );
    }
    for _ in 0..19 {
        ready_rx.recv().unwrap();
    }
    dump(opts()); // warm-up: loads debug info for symbolization
    let mut times = Vec::new();
    let mut threads = 0;
    for _ in 0..5 {
        let start = Instant::now();
        let d = dump(opts());
        times.push(start.elapsed());
        threads = d.threads.len();
        let idle: Vec<_> = d
            .threads
            .iter()
            .filter(|t| t.name.starts_with("idle-"))
            .collect();
        assert_eq!(idle.len(), 19, "{}", d.to_text());
        for t in idle {
            assert!(
                has_function(t, "prodbg_test_idle_worker"),
                "{}",
                d.to_text()
            );
        }
    }
    drop(senders);
    for w in workers {
        w.join().unwrap();
    }
    times.sort();
    println!(
        "dump of {threads} threads: median {:?}, min {:?}, max {:?}",
        times[2], times[0], times[4]
    );
}
