//! The sampler behind [`super`]: a CPU-time timer per thread, a `SIGPROF` handler that unwinds
//! the interrupted thread into a preallocated lock-free table, and the code that arms, disarms
//! and reads it. The safety argument is in the [parent module's docs](super).

use crate::stack::labels as span_labels;
use crate::stack::signal_unwinder::SignalUnwinder;
use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most frames kept per sample (outermost frames beyond this are cut).
pub(super) const MAX_DEPTH: usize = 64;
/// Distinct (thread, stack) pairs the table holds: 16384 × 560 B ≈ 9.2 MB of address space,
/// of which only the touched pages become resident.
pub(super) const SLOTS: usize = 16384;
/// Slots tried (open addressing, linear probing) before a sample counts as overflow.
const MAX_PROBES: usize = 64;
/// How often the scanner arms timers for new threads and deletes those of exited ones, at
/// least; with many threads the pause grows so that scanning takes ≤ 1 % of a core.
pub(super) const RESCAN: Duration = Duration::from_millis(20);
/// How often the flight recorder's sampler looks for new threads: a new thread's first
/// quarter second goes unsampled at 19 Hz, and the scan costs a twelfth of an on-demand one.
pub(super) const RECORDER_RESCAN: Duration = Duration::from_millis(250);
/// Slot key: unused.
const EMPTY: u64 = 0;
/// Slot key: a handler is writing the slot.
const CLAIMED: u64 = 1;
/// Set in every written slot's key (the stack's hash), so it is never `EMPTY` or `CLAIMED`.
const WRITTEN: u64 = 1 << 63;
/// In `Slot::depth`: the unwind stopped before the thread's outermost frame (the stack holds
/// the frames it found, at least the interrupted instruction).
const TRUNCATED: u32 = 1 << 16;

/// One distinct (thread, stack) and its count. All atomics, so the handler can fill it.
struct Slot {
    key: AtomicU64,
    count: AtomicU64,
    tid: AtomicI32,
    /// Number of addresses in `ips`, plus [`TRUNCATED`].
    depth: AtomicU32,
    /// The thread's span labels when sampled (`spans::labels` word; 0 = in no span).
    labels: AtomicU64,
    /// The thread's name when the slot was written (`PR_GET_NAME`, NUL-padded 16 bytes).
    name: [AtomicU64; 2],
    /// Addresses, leaf first: the interrupted instruction, then return addresses.
    ips: [AtomicUsize; MAX_DEPTH],
}

impl Slot {
    fn matches(&self, tid: i32, depth: u32, labels: u64, ips: &[u64]) -> bool {
        self.tid.load(Ordering::Relaxed) == tid
            && self.depth.load(Ordering::Relaxed) == depth
            && self.labels.load(Ordering::Relaxed) == labels
            && self
                .ips
                .iter()
                .zip(ips)
                .all(|(a, &b)| a.load(Ordering::Relaxed) as u64 == b)
    }
}

/// Everything the handler touches. Allocated zeroed at start (all-zero is a valid, empty
/// table, and untouched pages cost no RSS), freed at stop.
struct Table {
    slots: [Slot; SLOTS],
    /// The unwinder the handler uses: set before the table is published, owned by the
    /// [`Sampler`] (an `Arc`), which keeps it alive until the table is freed.
    unwinder: AtomicPtr<SignalUnwinder>,
    /// Samples whose unwind stopped before the outermost frame (recorded all the same).
    truncated: AtomicU64,
    /// Samples that found no free slot.
    overflow: AtomicU64,
    /// Signals handled (one per timer expiry delivered; a signal may stand for several
    /// expirations, see `weight`).
    signals: AtomicU64,
}

impl Table {
    /// Maps a fresh, zeroed table straight from the kernel: untouched pages cost no RSS, and
    /// [`Table::free`] gives all of it back. (Through the allocator, glibc would serve the
    /// second profile's table from its heap after raising its mmap threshold, zero all of it
    /// by hand, and keep it after the free.)
    fn alloc() -> Result<*mut Table, String> {
        // SAFETY: an anonymous private mapping with no address hint; checked below.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                std::mem::size_of::<Table>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!(
                "mapping the {} MB sample table: {}",
                std::mem::size_of::<Table>() >> 20,
                std::io::Error::last_os_error()
            ));
        }
        // The mapping is zero-filled and page-aligned; every field of `Table` is an atomic
        // integer or an array of them (a null `AtomicPtr` is all-zero), valid as all-zero bytes.
        Ok(p.cast::<Table>())
    }

    /// Unmaps a table from [`Table::alloc`].
    ///
    /// # Safety
    /// No reference to the table may be used afterwards (no handler may be running on it).
    unsafe fn free(table: *mut Table) {
        // SAFETY: the caller's contract; `table` is a mapping of exactly this size.
        unsafe { libc::munmap(table.cast(), std::mem::size_of::<Table>()) };
    }
}

/// The table the handler writes into; null when no profile runs.
static TABLE: AtomicPtr<Table> = AtomicPtr::new(ptr::null_mut());
/// Handlers currently running (between their increment and decrement).
static IN_HANDLER: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_sigprof(_sig: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: `__errno_location` returns this thread's errno; async-signal-safe.
    let errno = unsafe { *libc::__errno_location() };
    // SeqCst pairs with `Sampler::stop`'s swap-then-wait: either this load sees null, or stop
    // sees this handler counted and waits for it.
    IN_HANDLER.fetch_add(1, Ordering::SeqCst);
    let table = TABLE.load(Ordering::SeqCst);
    if !table.is_null() {
        // SAFETY: a non-null TABLE stays allocated until IN_HANDLER drops to zero after it
        // was nulled (see `Sampler::stop`).
        record(unsafe { &*table }, weight(info), context);
    }
    IN_HANDLER.fetch_sub(1, Ordering::SeqCst);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Expirations this signal stands for: 1 + the timer's overrun. The kernel checks CPU-time
/// timers on its scheduler tick, so at 999 Hz on a 250 Hz kernel one signal arrives per tick
/// carrying ~3 overruns; weighting by them keeps counts proportional to CPU time.
fn weight(info: *mut libc::siginfo_t) -> u64 {
    if info.is_null() {
        return 1;
    }
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo. For `SI_TIMER` its union
    // holds `{ int tid; int overrun; ... }`, which starts after three ints and padding to
    // the union's pointer alignment (offset 16 on 64-bit, 12 on 32-bit Linux).
    unsafe {
        if (*info).si_code != libc::SI_TIMER {
            return 1;
        }
        let union_at = if cfg!(target_pointer_width = "64") {
            16
        } else {
            12
        };
        let overrun = *info.cast::<u8>().add(union_at + 4).cast::<c_int>();
        1 + u64::try_from(overrun).unwrap_or(0)
    }
}

/// Runs inside the signal handler: atomics and the prepared unwinder only (see the module docs).
fn record(table: &Table, weight: u64, context: *mut c_void) {
    table.signals.fetch_add(1, Ordering::Relaxed);
    let unwinder = table.unwinder.load(Ordering::Acquire);
    if unwinder.is_null() {
        return;
    }
    // SAFETY: set before the table was published; the sampler keeps it alive until no
    // handler can reach the table (`Sampler::shutdown`).
    let unwinder = unsafe { &*unwinder };
    let mut buf = [0u64; MAX_DEPTH];
    // SAFETY: `context` is the `ucontext_t` of the SIGPROF being handled on this thread.
    let result = unsafe { unwinder.unwind_signal(context.cast(), &mut buf) };
    let stack = &buf[..result.depth];
    let truncated = if result.truncated {
        table.truncated.fetch_add(weight, Ordering::Relaxed);
        TRUNCATED
    } else {
        0
    };
    let tid = current_tid();
    // The span the thread is in: one atomic load from a static table (async-signal-safe).
    let labels = span_labels::current_labels_for(tid).to_bits();
    let depth = stack.len() as u32 | truncated;
    let key = hash(tid, depth, labels, stack) | WRITTEN;
    let mut i = (key as usize) % SLOTS;
    for _ in 0..MAX_PROBES {
        let slot = &table.slots[i];
        let k = slot.key.load(Ordering::Acquire);
        if k == key && slot.matches(tid, depth, labels, stack) {
            slot.count.fetch_add(weight, Ordering::Relaxed);
            return;
        }
        if k == EMPTY
            && slot
                .key
                .compare_exchange(EMPTY, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            slot.tid.store(tid, Ordering::Relaxed);
            let mut name = [0u8; 16];
            // SAFETY: PR_GET_NAME writes at most 16 bytes into `name`; a plain system call.
            unsafe { libc::syscall(libc::SYS_prctl, libc::PR_GET_NAME, name.as_mut_ptr()) };
            for (cell, chunk) in slot.name.iter().zip(name.chunks_exact(8)) {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                cell.store(u64::from_ne_bytes(word), Ordering::Relaxed);
            }
            slot.depth.store(depth, Ordering::Relaxed);
            slot.labels.store(labels, Ordering::Relaxed);
            for (cell, &ip) in slot.ips.iter().zip(stack) {
                cell.store(ip as usize, Ordering::Relaxed);
            }
            slot.count.store(weight, Ordering::Relaxed);
            slot.key.store(key, Ordering::Release);
            return;
        }
        // Another stack, or one being written by another thread (possibly this same stack:
        // the two slots are merged when the table is read). Never wait: try the next slot.
        i = (i + 1) % SLOTS;
    }
    table.overflow.fetch_add(weight, Ordering::Relaxed);
}

/// FNV-1a over the thread id, depth, span labels and addresses.
fn hash(tid: i32, depth: u32, labels: u64, ips: &[u64]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |v: u64| {
        h ^= v;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    mix(tid as u32 as u64);
    mix(u64::from(depth));
    mix(labels);
    for &ip in ips {
        mix(ip);
    }
    h ^ (h >> 29)
}

use crate::stack::gettid as current_tid;

/// Timers and names of the threads seen while sampling; shared with the scanner thread.
struct Threads {
    /// The unwinder the handler uses (also referenced by the table).
    unwinder: Arc<SignalUnwinder>,
    /// tid → timer id (`timer_t` as an address, so the struct is `Send`).
    timers: HashMap<i32, usize>,
    /// Threads whose timer could not be created (other than because they had just exited).
    arm_failures: u64,
    period: Duration,
}

impl Threads {
    /// Re-prepares the unwinder if modules were loaded or unloaded, arms timers for threads
    /// not seen before (after re-reading the stack mappings, so their stacks are known) and
    /// deletes those of exited threads.
    fn scan(&mut self) {
        if let Err(e) = self.unwinder.refresh_modules() {
            tracing::debug!(error = %e, "could not refresh the module list");
        }
        let live = list_threads();
        if live.iter().any(|tid| !self.timers.contains_key(tid)) {
            if let Err(e) = self.unwinder.refresh_stacks() {
                tracing::debug!(error = %e, "could not refresh the stack map");
            }
        }
        for &tid in &live {
            if self.timers.contains_key(&tid) {
                continue;
            }
            match arm_timer(tid, self.period) {
                Ok(timer) => {
                    self.timers.insert(tid, timer);
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {} // exited meanwhile
                Err(e) => {
                    self.arm_failures += 1;
                    tracing::debug!(tid, error = %e, "could not arm a CPU timer");
                }
            }
        }
        self.timers.retain(|tid, timer| {
            let alive = live.contains(tid);
            if !alive {
                delete_timer(*timer);
            }
            alive
        });
        self.unwinder.reclaim();
    }
}

fn list_threads() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return vec![current_tid()];
    };
    let mut tids: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    tids
}

/// A timer on thread `tid`'s CPU clock that sends it `SIGPROF` every `period` of its CPU time.
fn arm_timer(tid: i32, period: Duration) -> std::io::Result<usize> {
    // glibc's MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED): the clock of one thread's CPU time.
    let clock: libc::clockid_t = (!tid << 3) | 4 | 2;
    // SAFETY: all-zero is a valid sigevent; the fields the kernel reads are set below.
    let mut sev: libc::sigevent = unsafe { std::mem::zeroed() };
    sev.sigev_notify = libc::SIGEV_THREAD_ID;
    sev.sigev_signo = libc::SIGPROF;
    sev.sigev_notify_thread_id = tid;
    let mut timer: libc::timer_t = ptr::null_mut();
    // SAFETY: valid pointers to a sigevent and a timer_t out-parameter.
    if unsafe { libc::timer_create(clock, &mut sev, &mut timer) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if !set_timer(timer as usize, period) {
        let err = std::io::Error::last_os_error();
        delete_timer(timer as usize);
        return Err(err);
    }
    Ok(timer as usize)
}

/// (Re)arms `timer` to fire every `period`; `false` if the kernel refused.
fn set_timer(timer: usize, period: Duration) -> bool {
    let ts = libc::timespec {
        tv_sec: period.as_secs() as libc::time_t,
        tv_nsec: period.subsec_nanos() as libc::c_long,
    };
    let spec = libc::itimerspec {
        it_interval: ts,
        it_value: ts,
    };
    // SAFETY: `timer` came from a successful timer_create; `spec` is a valid itimerspec.
    unsafe { libc::timer_settime(timer as libc::timer_t, 0, &spec, ptr::null_mut()) == 0 }
}

fn delete_timer(timer: usize) {
    // SAFETY: `timer` came from a successful timer_create and is deleted once.
    unsafe { libc::timer_delete(timer as libc::timer_t) };
}

/// One distinct (thread, stack) read from the table.
pub(super) struct RawStack {
    pub tid: i32,
    /// The thread's name when it was first sampled with this stack (empty if unnamed).
    pub thread: String,
    /// Addresses, leaf first: the interrupted instruction, then return addresses.
    pub ips: Vec<u64>,
    /// Whether the unwind stopped before the thread's outermost frame.
    pub truncated: bool,
    /// The thread's span labels when sampled.
    pub labels: span_labels::Labels,
    pub count: u64,
}

/// What a finished sampling run collected.
pub(super) struct Collected {
    pub stacks: Vec<RawStack>,
    /// Samples whose unwind stopped before the outermost frame (they are in `stacks`).
    pub truncated: u64,
    /// Samples lost because the table was full.
    pub overflow: u64,
    /// Signals handled (each stands for 1 + overrun expirations).
    pub signals: u64,
    pub arm_failures: u64,
    /// Whether a signal handler did not finish within the stop timeout (table leaked).
    pub stuck: bool,
    /// Whether our handler stayed installed because a thread that blocks SIGPROF still has
    /// one queued (the previous disposition could not be restored safely).
    pub handler_kept: bool,
}

/// Why a sampler could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StartError {
    /// The host uses `SIGPROF` itself (a handler, or `ITIMER_PROF` running): profiling would
    /// replace its handler or steal its signals, so it is refused.
    HostSigprof(String),
    /// Anything else (no memory for the table, no module list, a failed system call).
    Other(String),
}

impl From<String> for StartError {
    fn from(m: String) -> Self {
        StartError::Other(m)
    }
}

/// Refuses when the host has its own `SIGPROF` handler installed or `ITIMER_PROF` running.
/// Our own handler (left installed by an earlier profile whose signals were still pending) is
/// not the host's.
fn check_host_sigprof() -> Result<libc::sigaction, StartError> {
    // SAFETY: a zeroed sigaction is a valid out-parameter; a null `act` only queries.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: valid signal number and pointers.
    if unsafe { libc::sigaction(libc::SIGPROF, ptr::null(), &mut old) } != 0 {
        return Err(StartError::Other(format!(
            "sigaction(SIGPROF): {}",
            std::io::Error::last_os_error()
        )));
    }
    let ours =
        on_sigprof as extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) as libc::sighandler_t;
    let h = old.sa_sigaction;
    if h != libc::SIG_DFL && h != libc::SIG_IGN && h != ours {
        return Err(StartError::HostSigprof(format!(
            "the host process has its own SIGPROF handler installed (at {h:#x}); a CPU profile \
             would replace it, so prodbg does not take one (another profiler, e.g. pprof-rs or \
             gperftools, is probably active)"
        )));
    }
    // SAFETY: `t` is a valid out-parameter.
    let mut t: libc::itimerval = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getitimer(libc::ITIMER_PROF, &mut t) } == 0 {
        let armed = |v: &libc::timeval| v.tv_sec != 0 || v.tv_usec != 0;
        if armed(&t.it_value) || armed(&t.it_interval) {
            return Err(StartError::HostSigprof(format!(
                "the host process has an ITIMER_PROF timer running (interval {}.{:06} s): its \
                 SIGPROF signals would be taken for samples, so prodbg does not take a CPU profile",
                t.it_interval.tv_sec, t.it_interval.tv_usec
            )));
        }
    }
    Ok(old)
}

/// Whether any thread of this process, or the process, has `SIGPROF` pending.
fn sigprof_pending() -> bool {
    let bit = 1u64 << (libc::SIGPROF - 1);
    let has = |path: &str| {
        std::fs::read_to_string(path).is_ok_and(|status| {
            status.lines().any(|l| {
                (l.starts_with("SigPnd:") || l.starts_with("ShdPnd:"))
                    && l.split_once(':').is_some_and(|(_, m)| {
                        u64::from_str_radix(m.trim(), 16).is_ok_and(|m| m & bit != 0)
                    })
            })
        })
    };
    list_threads()
        .iter()
        .any(|tid| has(&format!("/proc/self/task/{tid}/status")))
}

/// A running sampler. Dropping it stops sampling and frees the table.
pub(super) struct Sampler {
    threads: Arc<Mutex<Threads>>,
    scanner: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
    /// The handler's unwinder; the table points to it. Dropped only once no handler can
    /// reach it (after the table is unpublished and the in-handler count is zero).
    unwinder: Option<Arc<SignalUnwinder>>,
    old_action: libc::sigaction,
    stopped: bool,
    /// A rotation left a table to a stuck handler: the unwinder it uses is never freed.
    leaked: std::sync::atomic::AtomicBool,
}

// SAFETY: `libc::sigaction` holds a plain handler address and flags; nothing thread-bound.
unsafe impl Send for Sampler {}

impl Sampler {
    /// Checks that the host does not use `SIGPROF`, prepares the unwinder (module list, unwind
    /// sections, stack map, caches), allocates the table, installs the handler, arms a timer
    /// on every thread and starts the scanner thread, which looks for new threads every
    /// `rescan` (more rarely when a scan itself takes long).
    pub(super) fn start(frequency_hz: u32, rescan: Duration) -> Result<Sampler, StartError> {
        if !TABLE.load(Ordering::SeqCst).is_null() {
            return Err("a sampler is already running".to_string().into());
        }
        check_host_sigprof()?;
        let unwinder = Arc::new(
            SignalUnwinder::prepare()
                .map_err(|e| format!("preparing the unwinder (module list, stacks): {e}"))?,
        );
        let table = Table::alloc()?;
        // SAFETY: freshly mapped, not yet shared; the `Arc` outlives the table (`shutdown`).
        unsafe { &*table }
            .unwinder
            .store(Arc::as_ptr(&unwinder).cast_mut(), Ordering::Release);
        TABLE.store(table, Ordering::SeqCst);

        // SAFETY: zeroed is a valid sigaction; the fields we rely on are set below.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        let handler: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) = on_sigprof;
        act.sa_sigaction = handler as libc::sighandler_t;
        act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        // SAFETY: `sa_mask` is a valid sigset_t to initialise.
        unsafe { libc::sigemptyset(&mut act.sa_mask) };
        // SAFETY: as above.
        let mut old_action: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: valid signal number and pointers; `on_sigprof` has the SA_SIGINFO signature
        // and is async-signal-safe (module docs).
        if unsafe { libc::sigaction(libc::SIGPROF, &act, &mut old_action) } != 0 {
            let err = std::io::Error::last_os_error();
            free_table();
            return Err(format!("sigaction(SIGPROF): {err}").into());
        }

        let threads = Arc::new(Mutex::new(Threads {
            unwinder: unwinder.clone(),
            timers: HashMap::new(),
            arm_failures: 0,
            period: Duration::from_nanos(1_000_000_000 / u64::from(frequency_hz.max(1))),
        }));
        let mut sampler = Sampler {
            threads: threads.clone(),
            scanner: None,
            unwinder: Some(unwinder),
            old_action,
            stopped: false,
            leaked: std::sync::atomic::AtomicBool::new(false),
        };
        threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .scan();
        let (tx, rx) = mpsc::channel::<()>();
        let scanner = std::thread::Builder::new()
            .name("prodbg-cpu-scan".into())
            .spawn(move || {
                let mut pause = rescan;
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(pause) {
                    let t0 = Instant::now();
                    threads
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .scan();
                    pause = rescan.max(t0.elapsed() * 100);
                }
            })
            .map_err(|e| format!("spawning the thread scanner: {e}"))?;
        sampler.scanner = Some((tx, scanner));
        Ok(sampler)
    }

    /// Stops the timers, waits for running handlers, reads and frees the table.
    pub(super) fn stop(mut self) -> Collected {
        self.shutdown()
    }

    /// Reads what was sampled since the start or the last rotation, without stopping: a
    /// fresh table is published, the handlers still on the old one are waited for, and the
    /// old one is read and freed. A handler stuck for a second leaks the old table (counted
    /// in `stuck`) rather than free memory it may use.
    pub(super) fn rotate(&self) -> Result<Collected, String> {
        let fresh = Table::alloc()?;
        let unwinder = self
            .unwinder
            .as_ref()
            .ok_or_else(|| "the sampler is stopped".to_string())?;
        // SAFETY: freshly mapped, not yet shared; the `Arc` outlives it (`shutdown`).
        unsafe { &*fresh }
            .unwinder
            .store(Arc::as_ptr(unwinder).cast_mut(), Ordering::Release);
        let old = TABLE.swap(fresh, Ordering::SeqCst);
        let threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Collected {
            stacks: Vec::new(),
            truncated: 0,
            overflow: 0,
            signals: 0,
            arm_failures: threads.arm_failures,
            stuck: false,
            handler_kept: false,
        };
        drop(threads);
        if old.is_null() {
            return Ok(out);
        }
        if !wait_for_handlers() {
            self.leaked.store(true, Ordering::SeqCst);
            out.stuck = true;
            return Ok(out);
        }
        // SAFETY: `old` is unpublished and no handler runs on it.
        unsafe { drain(old, &mut out) };
        Ok(out)
    }

    /// Changes every thread's sampling rate (and the rate of threads armed later).
    pub(super) fn set_frequency(&self, frequency_hz: u32) {
        let period = Duration::from_nanos(1_000_000_000 / u64::from(frequency_hz.max(1)));
        let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        threads.period = period;
        for &timer in threads.timers.values() {
            set_timer(timer, period);
        }
    }

    fn shutdown(&mut self) -> Collected {
        self.stopped = true;
        if let Some((tx, handle)) = self.scanner.take() {
            drop(tx);
            let _ = handle.join();
        }
        let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, timer) in threads.timers.drain() {
            delete_timer(timer);
        }
        let table = TABLE.swap(ptr::null_mut(), Ordering::SeqCst);
        // A handler that loaded the table before the swap is counted in IN_HANDLER.
        let stuck = !wait_for_handlers();
        // Restore the previous disposition exactly, but only once no SIGPROF of a deleted
        // timer is still queued: delivered under the default action it would terminate the
        // process. Queued signals reach our handler (which finds no table) as soon as their
        // thread runs; a thread that blocks SIGPROF keeps its signal queued, and then our
        // handler stays installed (harmless: it returns at once) instead.
        let restore_deadline = Instant::now() + Duration::from_secs(1);
        let mut pending = sigprof_pending();
        while pending && Instant::now() < restore_deadline {
            std::thread::sleep(Duration::from_millis(1));
            pending = sigprof_pending();
        }
        let handler_kept = pending;
        if !pending {
            // SAFETY: restoring a disposition read from the kernel by the earlier sigaction.
            unsafe { libc::sigaction(libc::SIGPROF, &self.old_action, ptr::null_mut()) };
        } else {
            tracing::warn!(
                "a SIGPROF is still queued for a thread that blocks it: prodbg's (inert) \
                 SIGPROF handler stays installed instead of the previous disposition"
            );
        }

        let mut out = Collected {
            stacks: Vec::new(),
            truncated: 0,
            overflow: 0,
            signals: 0,
            arm_failures: threads.arm_failures,
            stuck,
            handler_kept,
        };
        drop(threads);
        if table.is_null() || stuck || self.leaked.load(Ordering::SeqCst) {
            // Never free memory a handler might still use (leaks ~8 MB in that case): the
            // forgotten reference keeps the unwinder alive for good.
            std::mem::forget(self.unwinder.take());
            return out;
        }
        // SAFETY: TABLE was nulled and no handler runs, so we own the table again.
        unsafe { drain(table, &mut out) };
        // `Threads` holds the other reference; no handler can reach the unwinder any more.
        drop(self.unwinder.take());
        out
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        if !self.stopped {
            self.shutdown();
        }
    }
}

/// Reads `table`'s stacks and counters into `out`, then frees it.
///
/// # Safety
/// `table` came from [`Table::alloc`], is no longer published and no handler runs on it.
unsafe fn drain(table: *mut Table, out: &mut Collected) {
    // SAFETY: the caller's contract: nothing else uses the table.
    let t = unsafe { &*table };
    out.truncated += t.truncated.load(Ordering::Relaxed);
    out.overflow += t.overflow.load(Ordering::Relaxed);
    out.signals += t.signals.load(Ordering::Relaxed);
    for slot in &t.slots {
        let key = slot.key.load(Ordering::Acquire);
        if key & WRITTEN == 0 {
            continue;
        }
        let depth = slot.depth.load(Ordering::Relaxed);
        let n = ((depth & !TRUNCATED) as usize).min(MAX_DEPTH);
        out.stacks.push(RawStack {
            tid: slot.tid.load(Ordering::Relaxed),
            thread: {
                let bytes: Vec<u8> = slot
                    .name
                    .iter()
                    .flat_map(|w| w.load(Ordering::Relaxed).to_ne_bytes())
                    .take_while(|&b| b != 0)
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            },
            ips: slot.ips[..n]
                .iter()
                .map(|ip| ip.load(Ordering::Relaxed) as u64)
                .collect(),
            truncated: depth & TRUNCATED != 0,
            labels: span_labels::Labels::from_bits(slot.labels.load(Ordering::Relaxed)),
            count: slot.count.load(Ordering::Relaxed),
        });
    }
    // SAFETY: `t` is not used after this; no handler can reach the table (the caller's contract).
    unsafe { Table::free(table) };
}

/// Waits until no handler runs (one that loaded a table before it was swapped out has
/// finished); `false` after a second without such a moment.
fn wait_for_handlers() -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    while IN_HANDLER.load(Ordering::SeqCst) != 0 {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::yield_now();
    }
    true
}

/// Frees a table published but never used (start failed before any timer was armed).
fn free_table() {
    let table = TABLE.swap(ptr::null_mut(), Ordering::SeqCst);
    if !table.is_null() {
        // SAFETY: no handler is installed for this table, and it came from `Table::alloc`.
        unsafe { Table::free(table) };
    }
}
