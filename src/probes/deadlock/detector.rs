//! Deadlock probe: a background thread that asks parking_lot for lock cycles.
//!
//! **Only parking_lot locks are seen** (`parking_lot::Mutex`, `RwLock`, `ReentrantMutex`,
//! `Condvar` waits, and anything built on `parking_lot_core`); `std::sync`, `tokio::sync` and
//! futex-based locks of other crates are invisible to it. The `deadlock` feature turns on
//! parking_lot's `deadlock_detection` for every parking_lot user in the build, which adds a small
//! bookkeeping cost to each lock operation of the whole process while the feature is compiled in.
//!
//! parking_lot reports each cycle once: [`DeadlockDetector`] keeps what it found, counts it,
//! and logs it as a `tracing` error with target `prodbg::deadlock`.

use serde::Serialize;

use crate::stack::symbolize::{self, Symbols};
use crate::stack::Frame;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// One detection: every lock cycle found by one check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct DeadlockReport {
    /// When the check found the cycles. Serialized as RFC 3339 in UTC with milliseconds,
    /// e.g. `"2025-01-31T03:04:05.678Z"`.
    #[serde(serialize_with = "crate::encode::time::rfc3339")]
    pub detected_at: SystemTime,
    /// The cycles; each lists the threads that wait on each other, in parking_lot's order.
    pub cycles: Vec<Vec<DeadlockedThread>>,
}

/// A thread stuck in a lock cycle.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct DeadlockedThread {
    /// Rust's `std::thread::ThreadId` as a number (what parking_lot reports). It is not the OS
    /// thread id (`gettid`), and std offers no way to map one to the other.
    pub thread_id: u64,
    /// The OS thread id (`gettid`), found by matching this backtrace against a stack dump of
    /// every thread (feature `threads`); `None` when no thread's stack matched.
    pub tid: Option<u32>,
    /// The thread's name: from [`name_current_thread`] if the thread called it, else from the
    /// matched OS thread (feature `threads`); `None` when neither is known.
    pub name: Option<String>,
    /// The thread's stack, innermost frame first, starting at the parking_lot lock call (the
    /// detection machinery above it — `backtrace::` and `parking_lot_core::` frames — is cut).
    pub frames: Vec<Frame>,
}

impl DeadlockReport {
    /// A multi-line report for a terminal: one block per cycle, one stack per thread.
    pub(super) fn to_text(&self) -> String {
        let mut out = format!(
            "deadlock detected at {}: {} cycle(s)\n",
            crate::encode::time::format(self.detected_at),
            self.cycles.len()
        );
        for (i, cycle) in self.cycles.iter().enumerate() {
            let _ = writeln!(out, "\ncycle {} ({} threads):", i + 1, cycle.len());
            for thread in cycle {
                let name = thread.name.as_deref().unwrap_or("<unnamed>");
                let tid = thread
                    .tid
                    .map_or_else(|| "?".to_string(), |t| t.to_string());
                let _ = writeln!(
                    out,
                    "  thread {:?} (tid {tid}, ThreadId {}):",
                    name, thread.thread_id
                );
                for (n, frame) in thread.frames.iter().enumerate() {
                    let function = frame.function.as_deref().unwrap_or("<unknown>");
                    let _ = write!(out, "    {n:>3}: {function}");
                    if let Some(file) = &frame.file {
                        let _ = write!(out, "\n           at {file}");
                        if let Some(line) = frame.line {
                            let _ = write!(out, ":{line}");
                        }
                    }
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// Records the current thread's name so deadlock reports can show it.
///
/// parking_lot identifies a deadlocked thread only by its `std::thread::ThreadId`, and std cannot
/// look up another thread's name from that id. Call this once at the start of each thread you
/// want named — e.g. `tokio::runtime::Builder::on_thread_start(name_current_thread)` — costing
/// one small map insert; the entry is removed when the thread exits. Threads without a name are
/// skipped.
pub fn name_current_thread() {
    let current = std::thread::current();
    let Some(name) = current.name() else { return };
    let id = thread_id_number(current.id());
    names().insert(id, name.to_owned());
    NAME_GUARD.with(|guard| guard.0.set(Some(id)));
}

static NAMES: Mutex<BTreeMap<u64, String>> = Mutex::new(BTreeMap::new());

fn names() -> MutexGuard<'static, BTreeMap<u64, String>> {
    NAMES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Removes the thread's entry from [`NAMES`] when the thread exits.
struct NameGuard(std::cell::Cell<Option<u64>>);

impl Drop for NameGuard {
    fn drop(&mut self) {
        if let Some(id) = self.0.get() {
            names().remove(&id);
        }
    }
}

thread_local! {
    static NAME_GUARD: NameGuard = const { NameGuard(std::cell::Cell::new(None)) };
}

/// `ThreadId` as a number, from its `Debug` form `ThreadId(N)` (`as_u64` is unstable); 0 if
/// std ever changes that form.
fn thread_id_number(id: std::thread::ThreadId) -> u64 {
    let text = format!("{id:?}");
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    digits.parse().unwrap_or(0)
}

/// Handle to the background deadlock detector thread. Stops the thread on drop or [`stop`].
///
/// [`stop`]: DeadlockDetector::stop
#[derive(Debug)]
pub(super) struct DeadlockDetector {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    keep_last: usize,
    stop: Mutex<bool>,
    wake: Condvar,
    checks: AtomicU64,
    detected: AtomicU64,
    reports: Mutex<VecDeque<DeadlockReport>>,
}

impl DeadlockDetector {
    /// Starts the detector thread (named `prodbg-deadlock`): every `interval` it runs
    /// `parking_lot::deadlock::check_deadlock()` and keeps the last `keep_last` reports.
    /// Nothing runs until this is called. Fails only if the OS cannot spawn a thread.
    pub(super) fn start(interval: Duration, keep_last: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            keep_last,
            stop: Mutex::new(false),
            wake: Condvar::new(),
            checks: AtomicU64::new(0),
            detected: AtomicU64::new(0),
            reports: Mutex::new(VecDeque::new()),
        });
        let thread = std::thread::Builder::new()
            .name("prodbg-deadlock".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || shared.run(interval)
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Runs one check now on the calling thread, recording it like a background check.
    /// Returns the report if it found cycles (cycles already reported are not found again).
    pub(super) fn check(&self) -> Option<DeadlockReport> {
        self.shared.check()
    }

    /// Lock cycles found since start (each cycle counts once). A counter: it only goes up.
    pub(super) fn detected_total(&self) -> u64 {
        self.shared.detected.load(Relaxed)
    }

    /// Checks run since start, background and [`check`](Self::check) together.
    pub(super) fn checks_total(&self) -> u64 {
        self.shared.checks.load(Relaxed)
    }

    /// The last `keep_last` reports, oldest first.
    pub(super) fn reports(&self) -> Vec<DeadlockReport> {
        lock(&self.shared.reports).iter().cloned().collect()
    }

    #[cfg_attr(not(test), allow(dead_code))]
    /// Whether the detector thread is still running.
    pub(super) fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the detector thread and waits for it (at most one check in progress).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        *lock(&self.shared.stop) = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for DeadlockDetector {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Shared {
    fn run(&self, interval: Duration) {
        let mut stop = lock(&self.stop);
        loop {
            stop = match self.wake.wait_timeout(stop, interval) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
            if *stop {
                return;
            }
            drop(stop);
            self.check();
            stop = lock(&self.stop);
        }
    }

    fn check(&self) -> Option<DeadlockReport> {
        let found = parking_lot::deadlock::check_deadlock();
        self.checks.fetch_add(1, Relaxed);
        if found.is_empty() {
            return None;
        }
        let names = names().clone();
        #[cfg(feature = "threads")]
        let stacks =
            crate::stack::thread_dump::dump(crate::stack::thread_dump::DumpOptions::default());
        let cycles: Vec<Vec<DeadlockedThread>> = found
            .iter()
            .map(|cycle| {
                cycle
                    .iter()
                    .map(|thread| {
                        let thread_id = thread_id_number(thread.thread_id());
                        #[allow(unused_mut)]
                        let mut t = DeadlockedThread {
                            thread_id,
                            tid: None,
                            name: names.get(&thread_id).cloned(),
                            frames: frames(thread.backtrace()),
                        };
                        #[cfg(feature = "threads")]
                        if let Some(os) = matching_thread(&stacks, &t.frames) {
                            t.tid = Some(os.tid);
                            t.name = t.name.or_else(|| Some(os.name.clone()));
                        }
                        t
                    })
                    .collect()
            })
            .collect();
        let report = DeadlockReport {
            detected_at: SystemTime::now(),
            cycles,
        };
        self.detected.fetch_add(report.cycles.len() as u64, Relaxed);
        tracing::error!(
            target: "prodbg::deadlock",
            cycles = report.cycles.len(),
            report = %report.to_text(),
            "deadlock detected"
        );
        let mut reports = lock(&self.reports);
        if self.keep_last > 0 {
            if reports.len() == self.keep_last {
                reports.pop_front();
            }
            reports.push_back(report.clone());
        }
        Some(report)
    }
}

/// The OS thread whose current stack holds this backtrace's frames from the lock call outward:
/// a deadlocked thread is still parked exactly where parking_lot took its backtrace, so the
/// return addresses from the lock call to the thread's entry are the same in both.
#[cfg(feature = "threads")]
fn matching_thread<'a>(
    dump: &'a crate::stack::thread_dump::ThreadDump,
    frames: &[Frame],
) -> Option<&'a crate::stack::thread_dump::ThreadStack> {
    let physical = |fs: &[Frame]| -> Vec<u64> {
        fs.iter()
            .filter(|f| !f.inlined)
            .map(|f| f.address)
            .collect()
    };
    let ips: Vec<u64> = physical(frames).into_iter().take(8).collect();
    if ips.len() < 3 {
        return None;
    }
    dump.threads.iter().find(|t| {
        physical(&t.frames)
            .windows(ips.len())
            .any(|w| w == ips.as_slice())
    })
}

/// The thread's frames from the lock call outward, without the detector's own machinery.
///
/// parking_lot captures the addresses (with the `backtrace` crate, when it finds the cycle);
/// they are named here by prodbg's own symbolizer, which keeps no cache.
fn frames(backtrace: &backtrace::Backtrace) -> Vec<Frame> {
    let addrs: Vec<u64> = backtrace.frames().iter().map(|f| f.ip() as u64).collect();
    let symbols = Symbols::resolve_here(addrs.iter().map(|&a| symbolize::return_address(a)));
    addrs
        .iter()
        .flat_map(|&a| symbols.frames_or_unknown(symbolize::return_address(a)))
        .skip_while(|frame| {
            frame.function.as_deref().is_some_and(|f| {
                f.starts_with("backtrace::") || f.starts_with("parking_lot_core::")
            })
        })
        .collect()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
