//! Thread stacks: the stack of every OS thread of the process, like `jstack` or Go's
//! `/debug/pprof/goroutine?debug=2`.
//!
//! [`dump`] lists `/proc/self/task`, and for each thread reports its id, name, scheduler state,
//! CPU time and a symbolized backtrace. It works while threads are blocked (on a mutex, in
//! `read`, `futex`, `sleep`), so it is the tool for "the service is stuck: where is everyone?".
//!
//!
//! # How it works
//!
//! A thread's stack can only be walked safely by that thread itself, so the dumping thread
//! asks each other thread to walk its own stack, by signal:
//!
//! 1. Once, on first use, a handler is installed with `sigaction(SA_SIGINFO | SA_RESTART)` for
//!    the first real-time signal from `SIGRTMIN+6` upwards whose disposition is still the
//!    default (so a handler someone else installed is never replaced). The handler stays
//!    installed for the life of the process; [`ThreadDump::signal`] says which signal it is.
//! 2. For each thread, the dumping thread arms a single, statically allocated slot (target tid,
//!    generation number, frame capacity) and sends the signal with `tgkill(pid, tid, sig)`.
//! 3. The handler, running on the target thread, claims the slot with a compare-and-swap from
//!    *armed (generation g, tid)* to *writing (g)*, unwinds its own interrupted stack from the
//!    signal's `ucontext` with the dump's prepared framehop unwinder
//!    (`crate::stack::signal_unwinder`, the same as the CPU profiler's) into the slot's fixed
//!    array, then marks it *done (g)*. Nothing else: no allocation, no locks, no symbolization.
//! 4. The dumping thread waits for *done (g)* at most [`DumpOptions::per_thread_timeout`]. On
//!    timeout it moves the slot from *armed (g)* back to idle by compare-and-swap, so a handler
//!    that fires later (the signal was blocked, the thread was stopped or stuck in an
//!    uninterruptible sleep) fails its own compare-and-swap and writes nothing. If the handler
//!    had already claimed the slot but not finished, the slot is abandoned to it (leaked, never
//!    reused) and a fresh one is allocated: a late writer can never touch a reused slot.
//! 5. Symbolization (`crate::stack::symbolize`, no cache kept) runs afterwards on the dumping
//!    thread, outside any signal context. The calling thread unwinds its own stack from
//!    `getcontext` with the same unwinder.
//!
//! Threads whose `/proc/self/task/<tid>/status` shows the signal blocked, and stopped or dead
//! threads, are not signalled: they are reported with an `error` and no frames at once instead
//! of costing a timeout, and no signals pile up in their queues. A thread that still has a
//! signal queued from an earlier timed-out request is not sent another: the queued one answers.
//!
//! # Why the handler is safe
//!
//! The handler may interrupt a thread anywhere: inside `malloc` holding the allocator's lock,
//! inside `dlopen` holding the loader's lock, inside another stack walk. It must not need any
//! lock that the interrupted code might hold.
//!
//! * It does not allocate and takes no lock of its own: the slot is pre-allocated, all its
//!   fields are atomics, and the frame callback only stores into them. `errno` is saved and
//!   restored.
//! * The unwinder needs no lock, no allocation and no call into the loader or libgcc: the
//!   module list, unwind sections and stack map are prepared by the dump before the first
//!   signal, framehop's caches are preallocated, and every stack read is bounded to the
//!   interrupted thread's stack. A handler that arrives after the dump finds no unwinder and
//!   records nothing; the dump frees the unwinder only once no handler is running.
//! * The handler never waits for anything, so each thread answers independently; no thread is
//!   ever held stopped by the dump, and threads are asked one at a time.
//!
//! # Caveats
//!
//! * Stacks are taken one thread after the other, not as one atomic snapshot.
//! * A signal interrupts the target's blocking system call. With `SA_RESTART` most (`read`,
//!   `write`, `futex` waits, `accept`...) restart transparently. A few return `EINTR`
//!   regardless (`nanosleep`, `poll`, `epoll_wait`, `select`, `sigtimedwait`...): Rust's
//!   `std::thread::sleep`, `std` I/O and Tokio/mio retry on `EINTR`, but C code or raw
//!   `libc` calls that treat `EINTR` as an error will see one — the same holds for any
//!   signal-based profiler.
//! * A thread that blocks the signal, is stopped (`SIGSTOP`, a debugger), or sits in an
//!   uninterruptible sleep (`D`) longer than the timeout gets an `error` and no frames.
//! * Code without `.eh_frame` (JIT code registered with `__register_frame`) ends the walk:
//!   the thread's stack is then `truncated` at that frame.
//! * If another library later installs its own handler for the same signal, stacks of other
//!   threads stop answering and time out; the signal number is in [`ThreadDump::signal`].
//!
//! # Concurrency
//!
//! Only one dump runs at a time: a second concurrent call waits (blocking) until the first one
//! has finished. The call is synchronous and can take up to
//! `per_thread_timeout × number of threads` in the worst case, so call it from a blocking
//! context (e.g. `tokio::task::spawn_blocking`).

use std::collections::BTreeSet;
use std::ffi::{c_int, c_void};
use std::fmt::Write as _;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::stack::signal_unwinder::SignalUnwinder;
use crate::stack::symbolize::{self as symbols, Symbols};
use crate::stack::Frame;

/// The most frames [`dump`] records per thread; larger [`DumpOptions::max_frames`] are capped.
pub(super) const MAX_FRAMES: usize = 256;

/// Room for the capture's own frames on the dumping thread's stack, trimmed later.
const SELF_FRAMES: usize = 32;
/// Addresses a signalled thread can record (its unwind starts at the interrupted
/// instruction, so no handler frame takes room).
const SLOT_CAPACITY: usize = MAX_FRAMES;
/// First real-time signal tried, as an offset from `SIGRTMIN`.
const FIRST_SIGNAL_OFFSET: c_int = 6;

/// What [`dump`] does.
#[derive(Debug, Clone)]
pub(crate) struct DumpOptions {
    /// How long to wait for each thread to answer the signal and record its stack. A thread
    /// that does not answer in time gets an [`ThreadStack::error`] and no frames.
    pub per_thread_timeout: Duration,
    /// The most frames kept per thread (outermost frames are dropped), at most [`MAX_FRAMES`].
    /// Inlined frames do not count: one machine frame may expand to several [`Frame`]s.
    pub max_frames: usize,
}

impl Default for DumpOptions {
    /// 200 ms per thread, 128 frames.
    fn default() -> Self {
        Self {
            per_thread_timeout: Duration::from_millis(200),
            max_frames: 128,
        }
    }
}

/// The stacks of all threads of the process at one moment (taken thread by thread).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ThreadDump {
    /// Process id.
    pub pid: u32,
    /// When the dump started; RFC 3339 UTC with milliseconds in JSON.
    #[serde(serialize_with = "crate::encode::time::rfc3339")]
    pub taken_at: SystemTime,
    /// The real-time signal used to ask threads for their stacks, or `None` if no handler could
    /// be installed (then only the calling thread has frames).
    pub signal: Option<i32>,
    /// Every thread of the process, ordered by thread id (the main thread first).
    pub threads: Vec<ThreadStack>,
}

/// One OS thread and its stack.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ThreadStack {
    /// Kernel thread id (what `gettid()` returns and `top -H` shows).
    pub tid: u32,
    /// Thread name from `/proc/self/task/<tid>/comm` (at most 15 bytes, as the kernel keeps it).
    pub name: String,
    /// Scheduler state from `/proc/self/task/<tid>/stat`, read just before the stack is taken,
    /// spelled out: `running`, `sleeping`, `disk sleep`, `stopped`, `tracing stop`, `zombie`,
    /// `dead`, `idle`, `parked`, `waking`, or `unknown (<letter>)`.
    pub state: String,
    /// CPU time this thread has used so far, user + system, in seconds.
    pub cpu_seconds: f64,
    /// The stack, innermost (currently executing) frame first. Empty if `error` is set.
    pub frames: Vec<Frame>,
    /// Whether the unwind stopped before the thread's entry point (`frames` then holds what
    /// was found, at least the current instruction).
    pub truncated: bool,
    /// Why there is no stack, e.g. "did not answer the signal within 200 ms".
    pub error: Option<String>,
}

/// Takes the stack of every thread of the process. See the [module docs](self) for how, and
/// for what a blocked, stopped or signal-blocking thread gets.
///
/// Blocking; only one dump runs at a time, a concurrent call waits for the running one.
pub(crate) fn dump(opts: DumpOptions) -> ThreadDump {
    static DUMP_LOCK: Mutex<()> = Mutex::new(());
    let _guard = DUMP_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());

    let taken_at = SystemTime::now();
    let max_frames = opts.max_frames.min(MAX_FRAMES);
    let signal = install_handler();
    // The unwinder the handlers use during this dump: modules and stack mappings as of now.
    let unwinder = match SignalUnwinder::prepare() {
        Ok(u) => Some(Published::publish(u)),
        Err(e) => {
            tracing::debug!(error = %e, "no unwinder for the thread dump");
            None
        }
    };
    let pid = std::process::id();
    let me = current_tid();
    // Take every raw stack first and symbolize afterwards, so the stacks are close in time.
    let raw: Vec<(u32, TaskInfo, Result<RawStack, String>)> = list_threads()
        .into_iter()
        .map(|tid| {
            let info = read_task(tid, signal.as_ref().ok().copied());
            let stack = match (&signal, info.refusal()) {
                _ if unwinder.is_none() => Err("the unwinder could not be prepared".to_string()),
                _ if tid as i32 == me => Ok(capture_self(max_frames)),
                (Err(e), _) => Err(e.clone()),
                (Ok(_), Some(refusal)) => Err(refusal),
                (Ok(sig), None) => {
                    capture_remote(*sig, pid, tid, max_frames, opts.per_thread_timeout)
                }
            };
            (tid, info, stack)
        })
        .collect();
    // No handler may use the unwinder past here; its module list still names the addresses.
    let modules = unwinder.and_then(Published::unpublish);
    let symbols = match &modules {
        Some(u) => Symbols::resolve(
            u.current().modules(),
            raw.iter()
                .filter_map(|(_, _, s)| s.as_ref().ok())
                .flat_map(|r| addresses(r, max_frames)),
        ),
        None => Symbols::resolve_here(std::iter::empty()),
    };
    drop(modules);
    let threads = raw
        .into_iter()
        .map(|(tid, info, stack)| {
            let (frames, truncated, error) = match stack {
                Ok(raw) if raw.is_self => {
                    (symbolize_self(&symbols, &raw, max_frames), raw.truncated, None)
                }
                Ok(raw) => (symbolize(&symbols, &raw, max_frames), raw.truncated, None),
                Err(e) => (Vec::new(), false, Some(e)),
            };
            ThreadStack {
                tid,
                name: info.name,
                state: state_name(info.state),
                cpu_seconds: info.cpu_seconds,
                frames,
                truncated,
                error,
            }
        })
        .collect();
    ThreadDump {
        pid,
        taken_at,
        signal: signal.ok(),
        threads,
    }
}

impl ThreadDump {
    /// Renders the dump for a terminal, one block per thread, like `jstack`:
    ///
    /// ```text
    /// "parked-xyz" tid=4250 sleeping cpu=0.002s
    ///     at my_service::worker::wait_for_job (src/worker.rs:42)
    ///     at std::sync::mpmc::list::Channel<T>::recv (/rustc/.../list.rs:444) [inlined]
    /// ```
    pub(crate) fn to_text(&self) -> String {
        let mut out = format!(
            "Thread dump of pid {}: {} threads, taken at {}\n",
            self.pid,
            self.threads.len(),
            crate::encode::time::format(self.taken_at)
        );
        for t in &self.threads {
            let _ = writeln!(
                out,
                "\n\"{}\" tid={} {} cpu={:.3}s",
                t.name, t.tid, t.state, t.cpu_seconds
            );
            if let Some(e) = &t.error {
                let _ = writeln!(out, "    <no stack: {e}>");
            }
            for f in &t.frames {
                let function = f.function.as_deref().unwrap_or("??");
                let _ = match (&f.file, f.line) {
                    (Some(file), Some(line)) => write!(out, "    at {function} ({file}:{line})"),
                    (Some(file), None) => write!(out, "    at {function} ({file})"),
                    _ => write!(out, "    at {function} ({:#x})", f.address),
                };
                out.push_str(if f.inlined { " [inlined]\n" } else { "\n" });
            }
        }
        out
    }
}

// ---- the slot shared with the signal handler -------------------------------------------------

const PHASE_MASK: u64 = 0b11;
const IDLE: u64 = 0;
const ARMED: u64 = 1;
const WRITING: u64 = 2;
const DONE: u64 = 3;

/// Where a signalled thread writes its raw stack. `state` is `generation << 2 | phase`.
struct Slot {
    state: AtomicU64,
    tid: AtomicI32,
    capacity: AtomicUsize,
    /// Whether the unwind stopped before the outermost frame.
    truncated: AtomicBool,
    len: AtomicUsize,
    ips: [AtomicUsize; SLOT_CAPACITY],
}

impl Slot {
    const fn new() -> Self {
        Self {
            state: AtomicU64::new(IDLE),
            tid: AtomicI32::new(0),
            capacity: AtomicUsize::new(0),
            truncated: AtomicBool::new(false),
            len: AtomicUsize::new(0),
            ips: [const { AtomicUsize::new(0) }; SLOT_CAPACITY],
        }
    }
}

static FIRST_SLOT: Slot = Slot::new();
/// The slot in use. Always points to a `Slot` that is never freed: `FIRST_SLOT` or a leaked box.
static SLOT: AtomicPtr<Slot> = AtomicPtr::new(&FIRST_SLOT as *const Slot as *mut Slot);
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// The unwinder of the running dump (null between dumps); see [`Published`].
static UNWINDER: AtomicPtr<SignalUnwinder> = AtomicPtr::new(ptr::null_mut());
/// Handlers between their increment and decrement (they may be using `UNWINDER`).
static IN_HANDLER: AtomicUsize = AtomicUsize::new(0);

/// Owns the unwinder published in [`UNWINDER`] for one dump.
struct Published(*mut SignalUnwinder);

impl Published {
    fn publish(u: SignalUnwinder) -> Published {
        let p = Box::into_raw(Box::new(u));
        UNWINDER.store(p, Ordering::SeqCst);
        Published(p)
    }

    /// Unpublishes the unwinder and returns it once no handler can be using it; `None` (and
    /// the unwinder leaked for good) if a handler did not finish within a second.
    fn unpublish(self) -> Option<Box<SignalUnwinder>> {
        UNWINDER.store(ptr::null_mut(), Ordering::SeqCst);
        // SeqCst pairs with the handler's increment-then-load: either it sees null, or it is
        // counted here.
        let deadline = Instant::now() + Duration::from_secs(1);
        while IN_HANDLER.load(Ordering::SeqCst) != 0 {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::yield_now();
        }
        // SAFETY: from `Box::into_raw` in `publish`, unpublished, and no handler holds it.
        Some(unsafe { Box::from_raw(self.0) })
    }
}

extern "C" fn on_signal(_sig: c_int, _info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: `__errno_location` returns this thread's errno; reading and writing it is
    // async-signal-safe.
    let errno = unsafe { *libc::__errno_location() };
    IN_HANDLER.fetch_add(1, Ordering::SeqCst);
    record_own_stack(context);
    IN_HANDLER.fetch_sub(1, Ordering::SeqCst);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Runs inside the signal handler: atomics and the unwinder only (see the module docs).
fn record_own_stack(context: *mut c_void) {
    // SAFETY: `SLOT` always points to a live, never-freed `Slot` (see its doc).
    let slot = unsafe { &*SLOT.load(Ordering::Acquire) };
    let armed = slot.state.load(Ordering::Acquire);
    if armed & PHASE_MASK != ARMED || slot.tid.load(Ordering::Relaxed) != current_tid() {
        return; // a late or foreign signal: nothing asked this thread for its stack
    }
    let generation = armed & !PHASE_MASK;
    if slot
        .state
        .compare_exchange(
            armed,
            generation | WRITING,
            Ordering::Acquire,
            Ordering::Relaxed,
        )
        .is_err()
    {
        return; // the dumping thread gave up on this request meanwhile
    }
    let capacity = slot.capacity.load(Ordering::Relaxed).min(SLOT_CAPACITY);
    let unwinder = UNWINDER.load(Ordering::SeqCst);
    let mut buf = [0u64; SLOT_CAPACITY];
    let (len, truncated) = if unwinder.is_null() {
        (0, true)
    } else {
        // SAFETY: a published unwinder stays alive while this handler is counted in
        // IN_HANDLER (`Published::unpublish`); `context` is this signal's `ucontext_t`.
        let r = unsafe { (*unwinder).unwind_signal(context.cast(), &mut buf[..capacity]) };
        (r.depth, r.truncated)
    };
    for (cell, &ip) in slot.ips.iter().zip(&buf[..len]) {
        cell.store(ip as usize, Ordering::Relaxed);
    }
    slot.truncated.store(truncated, Ordering::Relaxed);
    slot.len.store(len, Ordering::Relaxed);
    slot.state.store(generation | DONE, Ordering::Release);
}

fn current_tid() -> i32 {
    // SAFETY: gettid takes no arguments, cannot fail and is async-signal-safe.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// Installs the handler once; returns the signal number, or why no handler could be installed.
fn install_handler() -> Result<c_int, String> {
    static SIGNAL: OnceLock<Result<c_int, String>> = OnceLock::new();
    SIGNAL
        .get_or_init(|| {
            for sig in libc::SIGRTMIN() + FIRST_SIGNAL_OFFSET..=libc::SIGRTMAX() {
                // SAFETY: a zeroed sigaction is a valid out-parameter; a null `act` only
                // queries the current disposition.
                let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
                // SAFETY: valid signal number and pointers.
                if unsafe { libc::sigaction(sig, ptr::null(), &mut old) } != 0
                    || old.sa_sigaction != libc::SIG_DFL
                {
                    continue; // taken by someone else: never clobber it
                }
                // SAFETY: zeroed is a valid sigaction; the fields we rely on are set below.
                let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
                let handler: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) = on_signal;
                act.sa_sigaction = handler as libc::sighandler_t;
                act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
                // SAFETY: `sa_mask` is a valid sigset_t to initialise.
                unsafe { libc::sigemptyset(&mut act.sa_mask) };
                // SAFETY: valid signal number; `on_signal` has the SA_SIGINFO signature and is
                // async-signal-safe (module docs).
                if unsafe { libc::sigaction(sig, &act, ptr::null_mut()) } == 0 {
                    return Ok(sig);
                }
            }
            Err("no free real-time signal to install the stack-capture handler".to_string())
        })
        .clone()
}

#[derive(Debug)]
struct RawStack {
    /// The interrupted (or current) instruction, then return addresses.
    ips: Vec<u64>,
    /// Whether the unwind stopped before the outermost frame.
    truncated: bool,
    /// True for the calling thread's own stack, which starts with the capture's own frames.
    is_self: bool,
}

/// Asks thread `tid` for its stack by signal and waits for the answer.
fn capture_remote(
    sig: c_int,
    pid: u32,
    tid: u32,
    max_frames: usize,
    timeout: Duration,
) -> Result<RawStack, String> {
    // SAFETY: `SLOT` always points to a live, never-freed `Slot`.
    let slot = unsafe { &*SLOT.load(Ordering::Acquire) };
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed) << 2;
    slot.tid.store(tid as i32, Ordering::Relaxed);
    slot.capacity.store(max_frames, Ordering::Relaxed);
    slot.len.store(0, Ordering::Relaxed);
    slot.truncated.store(false, Ordering::Relaxed);
    slot.state.store(generation | ARMED, Ordering::Release);

    // A signal still queued from an earlier, timed-out request answers this one just as well
    // (the handler only checks the slot, read after arming): sending another would only grow
    // the thread's signal queue.
    let rc = if signal_mask_has(tid, "SigPnd:", sig) {
        0
    } else {
        // SAFETY: tgkill with plain integer arguments; the handler for `sig` is installed.
        unsafe {
            libc::syscall(
                libc::SYS_tgkill,
                pid as libc::pid_t,
                tid as libc::pid_t,
                sig,
            )
        }
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        slot.state.store(generation | IDLE, Ordering::Release);
        return Err(if err.raw_os_error() == Some(libc::ESRCH) {
            "thread exited during the dump".to_string()
        } else {
            format!("could not send signal {sig}: {err}")
        });
    }

    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(10);
    loop {
        if slot.state.load(Ordering::Acquire) == generation | DONE {
            break;
        }
        if Instant::now() >= deadline {
            match slot.state.compare_exchange(
                generation | ARMED,
                generation | IDLE,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Err(format!(
                        "did not answer the signal within {} ms",
                        timeout.as_millis()
                    ))
                }
                Err(now) if now == generation | DONE => break,
                Err(_) => {
                    // The handler is still writing: leave this slot to it for good.
                    SLOT.store(Box::into_raw(Box::new(Slot::new())), Ordering::Release);
                    return Err(format!(
                        "started recording its stack but did not finish within {} ms",
                        timeout.as_millis()
                    ));
                }
            }
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(1));
    }

    let len = slot.len.load(Ordering::Relaxed).min(SLOT_CAPACITY);
    let ips: Vec<u64> = slot.ips[..len]
        .iter()
        .map(|ip| ip.load(Ordering::Relaxed) as u64)
        .collect();
    let truncated = slot.truncated.load(Ordering::Relaxed);
    slot.state.store(generation | IDLE, Ordering::Release);
    Ok(RawStack {
        ips,
        truncated,
        is_self: false,
    })
}

/// The calling thread's own stack: `getcontext`, then the same unwinder as the handlers.
fn capture_self(max_frames: usize) -> RawStack {
    let unwinder = UNWINDER.load(Ordering::SeqCst);
    let mut buf = vec![0u64; max_frames + SELF_FRAMES];
    // SAFETY: all-zero is a valid `ucontext_t` to fill.
    let mut uc: libc::ucontext_t = unsafe { std::mem::zeroed() };
    // SAFETY: `uc` is a valid out-parameter; no `setcontext` ever returns to it.
    let ok = unsafe { libc::getcontext(&mut uc) } == 0;
    let (len, truncated) = if ok && !unwinder.is_null() {
        // SAFETY: this thread's own context; the unwinder is alive while the dump runs (only
        // `dump` unpublishes it, after the captures).
        let r = unsafe { (*unwinder).unwind_signal(&uc, &mut buf) };
        (r.depth, r.truncated)
    } else {
        (0, true)
    };
    buf.truncate(len);
    RawStack {
        ips: buf,
        truncated,
        is_self: true,
    }
}

/// The addresses of a raw stack to symbolize: the first as is, the others inside their call.
fn addresses(raw: &RawStack, max_frames: usize) -> impl Iterator<Item = crate::stack::dwarf::ProcessAddress> + '_ {
    let take = if raw.is_self { usize::MAX } else { max_frames };
    raw.ips.iter().take(take).enumerate().map(|(i, &ip)| {
        if i == 0 {
            symbols::pc(ip)
        } else {
            symbols::return_address(ip)
        }
    })
}

/// Symbolizes the calling thread's stack, starting at the caller of [`dump`].
fn symbolize_self(symbols: &Symbols, raw: &RawStack, max_frames: usize) -> Vec<Frame> {
    let mut frames = symbolize(symbols, raw, usize::MAX);
    // Code in this module never calls back into the caller's code, so everything up to the
    // last frame of this module is the capture itself; the caller of `dump` follows.
    let ours = concat!(module_path!(), "::");
    let last_ours = frames.iter().rposition(|f| {
        f.function
            .as_deref()
            .is_some_and(|name| name.starts_with(ours))
    });
    if let Some(last_ours) = last_ours {
        frames.drain(..=last_ours);
    }
    // Keep `max_frames` machine frames, each with the frames inlined into it.
    let mut outer_frames_before = 0;
    frames.retain(|f| {
        let keep = outer_frames_before < max_frames;
        outer_frames_before += usize::from(!f.inlined);
        keep
    });
    frames
}

fn symbolize(symbols: &Symbols, raw: &RawStack, max_frames: usize) -> Vec<Frame> {
    addresses(raw, max_frames)
        .flat_map(|a| symbols.frames_or_unknown(a))
        .collect()
}

// ---- /proc -----------------------------------------------------------------------------------

fn list_threads() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return vec![current_tid() as u32];
    };
    let tids: BTreeSet<u32> = dir
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.into_iter().collect()
}

struct TaskInfo {
    name: String,
    state: char,
    cpu_seconds: f64,
    /// Whether the thread blocks the stack-capture signal.
    sig_blocked: bool,
}

impl TaskInfo {
    /// Why this thread should not be signalled, if it should not.
    fn refusal(&self) -> Option<String> {
        match self.state {
            'Z' | 'X' => Some("thread has exited".to_string()),
            'T' | 't' => Some(
                "thread is stopped (SIGSTOP or a debugger); it cannot run the signal handler"
                    .to_string(),
            ),
            _ if self.sig_blocked => Some("thread blocks the stack-capture signal".to_string()),
            _ => None,
        }
    }
}

fn read_task(tid: u32, sig: Option<c_int>) -> TaskInfo {
    let dir = format!("/proc/self/task/{tid}");
    let name = std::fs::read_to_string(format!("{dir}/comm"))
        .map(|s| s.trim_end_matches('\n').to_string())
        .unwrap_or_default();
    let stat = std::fs::read_to_string(format!("{dir}/stat")).unwrap_or_default();
    // Fields after the `(comm)`, which may itself contain spaces and parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let state = fields.first().and_then(|s| s.chars().next()).unwrap_or('?');
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };

    TaskInfo {
        name,
        state,
        cpu_seconds: ticks as f64 / hz,
        sig_blocked: sig.is_some_and(|sig| signal_mask_has(tid, "SigBlk:", sig)),
    }
}

/// Whether `sig` is in the mask on line `key` (`SigBlk:`, `SigPnd:`) of the thread's status.
fn signal_mask_has(tid: u32, key: &str, sig: c_int) -> bool {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status"));
    status
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1u64 << (sig - 1)) != 0)
}

fn state_name(state: char) -> String {
    let name = match state {
        'R' => "running",
        'S' => "sleeping",
        'D' => "disk sleep",
        'T' => "stopped",
        't' => "tracing stop",
        'Z' => "zombie",
        'X' | 'x' => "dead",
        'I' => "idle",
        'P' => "parked",
        'W' => "waking",
        other => return format!("unknown ({other})"),
    };
    name.to_string()
}
