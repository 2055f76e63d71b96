//! Ask one thread of this process for its own stack, by signal: the mechanism the thread dump
//! (`/debug/threads`) and the wall-clock profiler (`/debug/pprof/wall`) share.
//!
//! A thread's stack can only be walked safely by that thread itself, so the asking thread
//! signals it:
//!
//! 1. Once, on first use, a handler is installed with `sigaction(SA_SIGINFO | SA_RESTART)` for
//!    the first real-time signal from `SIGRTMIN+6` upwards whose disposition is still the
//!    default (so a handler someone else installed is never replaced). The handler stays
//!    installed for the life of the process.
//! 2. For each thread, the asking thread arms a single, statically allocated slot (target tid,
//!    generation number, frame capacity) and sends the signal with `tgkill(pid, tid, sig)`.
//! 3. The handler, running on the target thread, claims the slot with a compare-and-swap from
//!    *armed (generation g, tid)* to *writing (g)*, unwinds its own interrupted stack from the
//!    signal's `ucontext` with the session's prepared framehop unwinder
//!    ([`SignalUnwinder`], the same as the CPU profiler's) into the slot's fixed array, then
//!    marks it *done (g)*. Nothing else: no allocation, no locks, no symbolization.
//! 4. The asking thread waits for *done (g)* at most the given timeout. On timeout it moves the
//!    slot from *armed (g)* back to idle by compare-and-swap, so a handler that fires later
//!    (the signal was blocked, the thread was stopped or stuck in an uninterruptible sleep)
//!    fails its own compare-and-swap and writes nothing. If the handler had already claimed
//!    the slot but not finished, the slot is abandoned to it (leaked, never reused) and a
//!    fresh one is allocated: a late writer can never touch a reused slot.
//!
//! There is one slot and one published unwinder, so captures are serialized by a [`Session`]:
//! it holds the process-wide capture lock, publishes the caller's unwinder for the handlers,
//! and unpublishes it when it ends (waiting for handlers still running). A thread dump holds a
//! session for its whole capture phase; the wall profiler holds one per tick, so a dump taken
//! during a wall profile slips in between two ticks (and delays at most the ticks it overlaps).
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
//!   module list, unwind sections and stack map are prepared before the first signal,
//!   framehop's caches are preallocated, and every stack read is bounded to the interrupted
//!   thread's stack. A handler that arrives between sessions finds no unwinder and records
//!   nothing; a session hands its unwinder back only once no handler is running.
//! * The handler never waits for anything, so each thread answers independently; no thread is
//!   ever held stopped, and threads are asked one at a time.

use std::ffi::{c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::stack::signal_unwinder::SignalUnwinder;

/// The most frames one capture records.
pub(crate) const MAX_FRAMES: usize = 256;
/// Room for the capture's own frames on the calling thread's stack, trimmed by the caller.
const SELF_FRAMES: usize = 32;
/// Addresses a signalled thread can record (its unwind starts at the interrupted
/// instruction, so no handler frame takes room).
const SLOT_CAPACITY: usize = MAX_FRAMES;
/// First real-time signal tried, as an offset from `SIGRTMIN`.
const FIRST_SIGNAL_OFFSET: c_int = 6;

/// A raw stack: the interrupted (or current) instruction, then return addresses.
#[derive(Debug, Clone)]
pub(crate) struct RawStack {
    /// The interrupted (or current) instruction, then return addresses.
    pub(crate) ips: Vec<u64>,
    /// Whether the unwind stopped before the outermost frame.
    pub(crate) truncated: bool,
    /// True for the calling thread's own stack, which starts with the capture's own frames.
    pub(crate) is_self: bool,
}

/// The right to use the capture slot, with the caller's unwinder published to the handlers.
/// See the [module docs](self).
pub(crate) struct Session {
    _lock: MutexGuard<'static, ()>,
    published: *mut SignalUnwinder,
    signal: Result<c_int, String>,
    pid: u32,
}

impl Session {
    /// Waits for the capture lock (another session's captures), installs the handler if need
    /// be and publishes `unwinder` (`None`: handlers record nothing) for this session's captures.
    pub(crate) fn begin(unwinder: Option<Box<SignalUnwinder>>) -> Session {
        static LOCK: Mutex<()> = Mutex::new(());
        let lock = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let published = unwinder.map_or(ptr::null_mut(), Box::into_raw);
        UNWINDER.store(published, Ordering::SeqCst);
        Session {
            _lock: lock,
            published,
            signal: install_handler(),
            pid: std::process::id(),
        }
    }

    /// The real-time signal threads are asked with, or why no handler could be installed.
    pub(crate) fn signal(&self) -> Result<c_int, String> {
        self.signal.clone()
    }

    /// Whether an unwinder is published (else captures record nothing).
    pub(crate) fn has_unwinder(&self) -> bool {
        !self.published.is_null()
    }

    /// Unpublishes the unwinder and hands it back once no handler can be using it; `None` (and
    /// the unwinder leaked for good) if there was none or a handler did not finish within a second.
    pub(crate) fn end(mut self) -> Option<Box<SignalUnwinder>> {
        self.unpublish()
    }

    fn unpublish(&mut self) -> Option<Box<SignalUnwinder>> {
        let p = std::mem::replace(&mut self.published, ptr::null_mut());
        UNWINDER.store(ptr::null_mut(), Ordering::SeqCst);
        if p.is_null() {
            return None;
        }
        // SeqCst pairs with the handler's increment-then-load: either it sees null, or it is
        // counted here.
        let deadline = Instant::now() + Duration::from_secs(1);
        while IN_HANDLER.load(Ordering::SeqCst) != 0 {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::yield_now();
        }
        // SAFETY: from `Box::into_raw` in `begin`, unpublished, and no handler holds it.
        Some(unsafe { Box::from_raw(p) })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        drop(self.unpublish());
    }
}

impl Session {
    /// Asks thread `tid` for its stack by signal and waits for the answer at most `timeout`.
    ///
    /// With `check_pending`, a thread that still has the signal queued (from an earlier request
    /// that timed out) is not sent another: the queued one answers this request just as well.
    /// Checking costs a read of `/proc/self/task/<tid>/status`.
    pub(crate) fn capture(
        &self,
        tid: u32,
        max_frames: usize,
        timeout: Duration,
        check_pending: bool,
    ) -> Result<RawStack, String> {
        let sig = match &self.signal {
            Ok(sig) => *sig,
            Err(e) => return Err(e.clone()),
        };
        let pid = self.pid;
        // SAFETY: `SLOT` always points to a live, never-freed `Slot`.
        let slot = unsafe { &*SLOT.load(Ordering::Acquire) };
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed) << 2;
        slot.tid.store(tid as i32, Ordering::Relaxed);
        slot.capacity
            .store(max_frames.min(SLOT_CAPACITY), Ordering::Relaxed);
        slot.len.store(0, Ordering::Relaxed);
        slot.truncated.store(false, Ordering::Relaxed);
        slot.state.store(generation | ARMED, Ordering::Release);

        // A signal still queued from an earlier, timed-out request answers this one just as well
        // (the handler only checks the slot, read after arming): sending another would only grow
        // the thread's signal queue.
        let rc = if check_pending && signal_mask_has(tid, "SigPnd:", sig) {
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
                "thread exited before answering".to_string()
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
    pub(crate) fn capture_self(&self, max_frames: usize) -> RawStack {
        let unwinder = UNWINDER.load(Ordering::SeqCst);
        let mut buf = vec![0u64; max_frames + SELF_FRAMES];
        // SAFETY: all-zero is a valid `ucontext_t` to fill.
        let mut uc: libc::ucontext_t = unsafe { std::mem::zeroed() };
        // SAFETY: `uc` is a valid out-parameter; no `setcontext` ever returns to it.
        let ok = unsafe { libc::getcontext(&mut uc) } == 0;
        let (len, truncated) = if ok && !unwinder.is_null() {
            // SAFETY: this thread's own context; the unwinder is alive while this session lives
            // (only the session unpublishes it).
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

/// The unwinder of the running session (null between sessions); see [`Session`].
static UNWINDER: AtomicPtr<SignalUnwinder> = AtomicPtr::new(ptr::null_mut());
/// Handlers between their increment and decrement (they may be using `UNWINDER`).
static IN_HANDLER: AtomicUsize = AtomicUsize::new(0);

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
        return; // the asking thread gave up on this request meanwhile
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

pub(crate) use crate::stack::gettid as current_tid;

/// Installs the handler once; returns the signal number, or why no handler could be installed.
pub(crate) fn install_handler() -> Result<c_int, String> {
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

/// The thread ids of this process, ascending (the main thread first).
pub(crate) fn list_threads() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return vec![current_tid() as u32];
    };
    let mut tids: Vec<u32> = dir
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    tids
}

/// Whether `sig` is in the mask on line `key` (`SigBlk:`, `SigPnd:`) of the thread's status.
pub(crate) fn signal_mask_has(tid: u32, key: &str, sig: c_int) -> bool {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status"));
    status
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1u64 << (sig - 1)) != 0)
}
