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
//! asks each other thread to walk its own stack, by a real-time signal, one thread at a time,
//! through [`crate::stack::remote`] (the mechanism, its slot protocol and why the handler is
//! safe are documented there; the wall-clock profiler uses the same one). The dump holds one
//! [`Session`] for its whole capture phase, with an unwinder prepared for it, and waits at most
//! [`DumpOptions::per_thread_timeout`] for each thread. Symbolization
//! (`crate::stack::symbolize`, no cache kept) runs afterwards on the dumping thread, outside
//! any signal context. The calling thread unwinds its own stack from `getcontext` with the
//! same unwinder.
//!
//! Threads whose `/proc/self/task/<tid>/status` shows the signal blocked, and stopped or dead
//! threads, are not signalled: they are reported with an `error` and no frames at once instead
//! of costing a timeout, and no signals pile up in their queues. A thread that still has a
//! signal queued from an earlier timed-out request is not sent another: the queued one answers.
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
//! has finished; a dump during a wall-clock profile waits for the profiler's current tick. The call is synchronous and can take up to
//! `per_thread_timeout × number of threads` in the worst case, so call it from a blocking
//! context (e.g. `tokio::task::spawn_blocking`).

use std::ffi::c_int;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::stack::remote::{
    current_tid, list_threads, signal_mask_has, RawStack, Session, MAX_FRAMES,
};
use crate::stack::signal_unwinder::SignalUnwinder;
use crate::stack::symbolize::{self as symbols, Symbols};
use crate::stack::thread_state;
use crate::stack::Frame;

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
    /// Set when the executable has no debug info: what is missing and the line that adds it.
    pub debug_info_missing: Option<&'static str>,
}

/// One OS thread and its stack.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ThreadStack {
    /// Kernel thread id (what `gettid()` returns and `top -H` shows).
    pub tid: u32,
    /// Thread name from `/proc/self/task/<tid>/comm` (at most 15 bytes, as the kernel keeps it).
    pub name: String,
    /// What the thread was doing just before its stack was taken, named as in the wall-clock
    /// profile: `running`, `futex` (a lock, condition variable, channel, park or join), `io`
    /// (a read, write, poll, epoll, accept …, or disk sleep), `sleeping` (`nanosleep` and other
    /// waits), `stopped` or `other`. From `/proc/self/task/<tid>/stat` and `…/syscall`.
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
    let taken_at = SystemTime::now();
    let max_frames = opts.max_frames.min(MAX_FRAMES);
    // The unwinder the handlers use during this dump: modules and stack mappings as of now.
    let unwinder = match SignalUnwinder::prepare() {
        Ok(u) => Some(Box::new(u)),
        Err(e) => {
            tracing::debug!(error = %e, "no unwinder for the thread dump");
            None
        }
    };
    // Waits for another dump, or for the wall profiler's current tick.
    let session = Session::begin(unwinder);
    let signal = session.signal();
    let pid = std::process::id();
    let me = current_tid();
    // Take every raw stack first and symbolize afterwards, so the stacks are close in time.
    let raw: Vec<(u32, TaskInfo, Result<RawStack, String>)> = list_threads()
        .into_iter()
        .map(|tid| {
            let info = read_task(tid, signal.as_ref().ok().copied());
            let stack = match (&signal, info.refusal()) {
                _ if !session.has_unwinder() => {
                    Err("the unwinder could not be prepared".to_string())
                }
                _ if tid as i32 == me => Ok(session.capture_self(max_frames)),
                (Err(e), _) => Err(e.clone()),
                (Ok(_), Some(refusal)) => Err(refusal),
                (Ok(_), None) => session.capture(tid, max_frames, opts.per_thread_timeout, true),
            };
            (tid, info, stack)
        })
        .collect();
    // No handler may use the unwinder past here; its module list still names the addresses.
    let modules = session.end();
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
                Ok(raw) if raw.is_self => (
                    symbolize_self(&symbols, &raw, max_frames),
                    raw.truncated,
                    None,
                ),
                Ok(raw) => (symbolize(&symbols, &raw, max_frames), raw.truncated, None),
                Err(e) => (Vec::new(), false, Some(e)),
            };
            ThreadStack {
                tid,
                state: state_name(&info),
                name: info.name,
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
        debug_info_missing: crate::stack::debug_info::missing_note(),
    }
}

impl ThreadDump {
    /// Renders the dump for a terminal, one block per thread, like `jstack`:
    ///
    /// ```text
    /// "parked-xyz" tid=4250 futex cpu=0.002s
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
        if let Some(note) = self.debug_info_missing {
            let _ = writeln!(out, "note: {note}");
        }
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

/// The addresses of a raw stack to symbolize: the first as is, the others inside their call.
fn addresses(
    raw: &RawStack,
    max_frames: usize,
) -> impl Iterator<Item = crate::stack::dwarf::ProcessAddress> + '_ {
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
    let ours = [concat!(module_path!(), "::"), "prodbg::stack::remote::"];
    let last_ours = frames.iter().rposition(|f| {
        f.function
            .as_deref()
            .is_some_and(|name| ours.iter().any(|o| name.starts_with(o)))
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

struct TaskInfo {
    name: String,
    state: char,
    /// The system call it sleeps in, when it sleeps in one.
    syscall: Option<i64>,
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
    let syscall = std::fs::read(format!("{dir}/syscall"))
        .ok()
        .and_then(|t| thread_state::parse_syscall(&t));
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
        syscall,
        cpu_seconds: ticks as f64 / hz,
        sig_blocked: sig.is_some_and(|sig| signal_mask_has(tid, "SigBlk:", sig)),
    }
}

/// The state as the wall-clock profile names it (`running`, `futex`, `io`, `sleeping`, …):
/// the scheduler letter and, for a sleeping thread, the system call it sleeps in.
fn state_name(info: &TaskInfo) -> String {
    thread_state::classify(info.state as u8, info.syscall, false)
        .name()
        .to_string()
}
