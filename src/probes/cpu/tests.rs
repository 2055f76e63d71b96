//! Real CPU profiles taken in this test process. The profiler is process-global, so every
//! test that runs it takes [`serial`] first.

use std::hint::black_box;
use std::io::Read as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pprof::protos::Message as _;

use super::profile::{self as cpu, CpuError, CpuProfileOptions, RunningProfile};
use super::MAX_FREQUENCY_HZ;
use crate::stack::profile::Profile;
use crate::test_support::serial;

// With feature `heap`, jemalloc is the test binary's allocator (`crate::test_support`), so
// samples that land in the allocator are unwound (glibc's would be dropped by the blocklist):
// the stress test exercises the harder case.

/// This file, as its frames name it.
const THIS_FILE: &str = "src/probes/cpu/tests.rs";

const HOT_FN: &str = "prodbg_cpu_test_hot_spin_q7";
const HOT_THREAD: &str = "prodbg-hot-q7"; // ≤ 15 bytes: the kernel's limit
const CHURN_FN: &str = "prodbg_cpu_test_alloc_churn_q7";
const CHURN_THREAD: &str = "prodbg-churn-q7";

#[inline(never)]
fn prodbg_cpu_test_hot_spin_q7(iters: u64) -> u64 {
    let mut x = 1u64;
    for i in 0..iters {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}

#[inline(never)]
fn prodbg_cpu_test_alloc_churn_q7(round: u64) -> u64 {
    let mut keep: Vec<Box<[u8]>> = Vec::new();
    let mut sum = 0u64;
    for i in 0..64u64 {
        let size = 16 + ((round * 31 + i * 97) % 8192) as usize;
        let mut v = vec![0u8; size];
        v[size / 2] = i as u8;
        sum += black_box(v.iter().map(|&b| u64::from(b)).sum::<u64>());
        keep.push(v.into_boxed_slice());
        if keep.len() > 16 {
            keep.swap_remove((i % 16) as usize);
        }
        let b = Box::new([i; 8]);
        sum += black_box(b[3]);
    }
    sum
}

/// Threads named `name` running `work(round)` until dropped; counts rounds per thread.
struct Workers {
    stop: Arc<AtomicBool>,
    progress: Vec<Arc<AtomicU64>>,
    handles: Vec<JoinHandle<()>>,
}

impl Workers {
    fn spawn(n: usize, name: &str, work: fn(u64) -> u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut progress = Vec::new();
        let mut handles = Vec::new();
        for _ in 0..n {
            let (stop, count) = (stop.clone(), Arc::new(AtomicU64::new(0)));
            progress.push(count.clone());
            let handle = std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let round = count.fetch_add(1, Ordering::Relaxed);
                        black_box(work(round));
                    }
                })
                .unwrap();
            handles.push(handle);
        }
        Workers {
            stop,
            progress,
            handles,
        }
    }

    fn counts(&self) -> Vec<u64> {
        self.progress
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// Waits (up to a generous bound) until every thread has moved past `since`.
    fn assert_progress(&self, since: &[u64], when: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self
            .counts()
            .iter()
            .zip(since)
            .any(|(now, before)| now <= before)
        {
            assert!(
                Instant::now() < deadline,
                "host threads made no progress {when}: {since:?} -> {:?}",
                self.counts()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn profile_for(duration: Duration, frequency_hz: u32) -> Profile {
    let running = cpu::start(CpuProfileOptions {
        duration,
        frequency_hz,
    })
    .unwrap();
    std::thread::sleep(duration);
    running.stop().unwrap()
}

fn decode(gz: &[u8]) -> pprof::protos::Profile {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut raw)
        .unwrap();
    pprof::protos::Profile::decode(raw.as_slice()).unwrap()
}

fn itimer_prof_armed() -> bool {
    let mut t: libc::itimerval = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getitimer(libc::ITIMER_PROF, &mut t) }, 0);
    t.it_interval.tv_sec != 0 || t.it_interval.tv_usec != 0 || t.it_value.tv_usec != 0
}

/// POSIX timers of this process that send SIGPROF (the sampler's per-thread CPU timers), from
/// `/proc/self/timers`; `None` when the kernel does not provide that file.
fn sigprof_timers() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/timers").ok()?;
    let prefix = format!("signal: {}/", libc::SIGPROF);
    Some(text.lines().filter(|l| l.starts_with(&prefix)).count())
}

#[test]
fn types_can_cross_threads() {
    fn send<T: Send>() {}
    send::<RunningProfile>();
    send::<Profile>();
    send::<CpuError>();
}

#[test]
fn hot_function_and_thread_appear_in_all_formats() {
    let _serial = serial();
    let workers = Workers::spawn(2, HOT_THREAD, |_| prodbg_cpu_test_hot_spin_q7(200_000));
    let profile = profile_for(Duration::from_secs(2), 99);
    drop(workers);

    assert!(profile.total(0) > 0, "no samples: {profile:?}");
    assert!(
        profile.describe.contains("at 99 Hz"),
        "{}",
        profile.describe
    );
    assert!(profile.duration >= Duration::from_secs(2));
    assert!(
        !profile.warnings.iter().any(|w| w.contains("no symbolized")),
        "{:?}",
        profile.warnings
    );
    let hot = profile
        .samples
        .iter()
        .find(|s| {
            s.label("thread") == Some(HOT_THREAD)
                && s.frames.iter().any(|f| f.name().ends_with(HOT_FN))
        })
        .unwrap_or_else(|| {
            panic!(
                "hot stack missing: {:#?}",
                &profile.samples[..3.min(profile.samples.len())]
            )
        });
    let frame = hot
        .frames
        .iter()
        .find(|f| f.name().ends_with(HOT_FN))
        .unwrap();
    assert!(
        frame.file.as_deref().unwrap_or("").ends_with(THIS_FILE),
        "{frame:?}"
    );
    assert!(frame.line.unwrap_or(0) > 0, "{frame:?}");

    // pprof
    let p = decode(&profile.pprof_gz());
    let s = |i: i64| p.string_table[i as usize].as_str();
    let types: Vec<(&str, &str)> = p.sample_type.iter().map(|t| (s(t.ty), s(t.unit))).collect();
    assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
    let period_type = p.period_type.as_ref().unwrap();
    assert_eq!(
        (s(period_type.ty), s(period_type.unit)),
        ("cpu", "nanoseconds")
    );
    assert_eq!(p.period, 1_000_000_000 / 99);
    assert!(p.duration_nanos >= 2_000_000_000, "{}", p.duration_nanos);
    assert!(p.time_nanos > 0);
    let total: i64 = p.sample.iter().map(|s| s.value[0]).sum();
    assert_eq!(total, profile.total(0));
    let hot_sample = p.sample.iter().find(|sample| {
        let thread = sample
            .label
            .iter()
            .any(|l| s(l.key) == "thread" && s(l.str) == HOT_THREAD);
        let hot_fn = sample.location_id.iter().any(|id| {
            let loc = &p.location[*id as usize - 1];
            assert_eq!(loc.id, *id);
            loc.line.iter().any(|line| {
                let f = &p.function[line.function_id as usize - 1];
                assert_eq!(f.id, line.function_id);
                s(f.name).ends_with(HOT_FN) && s(f.filename).ends_with(THIS_FILE) && line.line > 0
            })
        });
        thread && hot_fn
    });
    let hot_sample =
        hot_sample.expect("no pprof sample on the hot thread reaches the hot function");
    assert!(hot_sample.value[0] > 0 && hot_sample.value[1] > 0);

    // folded
    let folded = profile.folded();
    assert!(
        folded
            .lines()
            .any(|l| l.starts_with(&format!("{HOT_THREAD};")) && l.contains(HOT_FN)),
        "{folded}"
    );

    // svg
    let svg = String::from_utf8(profile.svg("cpu test").unwrap()).unwrap();
    assert!(svg.starts_with("<?xml") && svg.contains("</svg>"));
    assert!(svg.contains(HOT_FN) && svg.contains(HOT_THREAD) && svg.contains("cpu test"));
}

#[test]
fn second_start_while_running_is_busy() {
    let _serial = serial();
    let first = cpu::start(CpuProfileOptions {
        duration: Duration::from_secs(5),
        frequency_hz: 99,
    })
    .unwrap();
    let err = cpu::start(CpuProfileOptions::default()).unwrap_err();
    match &err {
        CpuError::Busy { remaining } => {
            assert!(*remaining > Duration::ZERO && *remaining <= Duration::from_secs(5))
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    assert!(err.to_string().contains("already running"), "{err}");
    first.stop().unwrap();
    assert!(!cpu::running());
}

#[test]
fn dropping_a_running_profile_stops_it_and_frees_the_slot() {
    let _serial = serial();
    let running = cpu::start(CpuProfileOptions {
        duration: Duration::from_secs(60),
        frequency_hz: 99,
    })
    .unwrap();
    assert!(cpu::running());
    if let Some(n) = sigprof_timers() {
        assert!(n > 0, "no per-thread SIGPROF timer while running");
    }
    drop(running); // e.g. the HTTP client disconnected and the handler's future was dropped
    assert!(!cpu::running());
    assert_eq!(
        sigprof_timers().unwrap_or(0),
        0,
        "SIGPROF timer outlived the profile"
    );
    assert!(!itimer_prof_armed(), "process-wide ITIMER_PROF armed");

    let again = profile_for(Duration::from_millis(200), 99);
    assert_eq!(again.period.1, 1_000_000_000 / 99);
    assert!(!cpu::running());
}

#[test]
fn bad_frequency_is_rejected() {
    let _serial = serial();
    for frequency_hz in [0, MAX_FREQUENCY_HZ + 1] {
        let err = cpu::start(CpuProfileOptions {
            duration: Duration::from_secs(1),
            frequency_hz,
        })
        .unwrap_err();
        assert!(matches!(err, CpuError::Start(_)), "{err:?}");
        assert!(err.to_string().contains("frequency_hz"), "{err}");
    }
    assert!(!cpu::running());
}

#[test]
fn stress_999hz_while_threads_churn_the_allocator() {
    let _serial = serial();
    let workers = Workers::spawn(3, CHURN_THREAD, prodbg_cpu_test_alloc_churn_q7);
    workers.assert_progress(&[0, 0, 0], "before profiling");
    let running = cpu::start(CpuProfileOptions {
        duration: Duration::from_secs(3),
        frequency_hz: 999,
    })
    .unwrap();
    let at_start = workers.counts();
    std::thread::sleep(Duration::from_secs(3));
    workers.assert_progress(&at_start, "while profiling");
    let profile = running.stop().unwrap();
    let at_stop = workers.counts();
    workers.assert_progress(&at_stop, "after profiling");
    drop(workers);

    assert!(profile.total(0) > 0);
    assert!(
        profile
            .samples
            .iter()
            .any(|s| s.label("thread") == Some(CHURN_THREAD)
                && s.frames.iter().any(|f| f.name().ends_with(CHURN_FN))),
        "churn function not sampled"
    );
    eprintln!(
        "stress: {} samples in {:?}, warnings: {:?}",
        profile.total(0),
        profile.duration,
        profile.warnings
    );
}
