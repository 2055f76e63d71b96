//! The wall-clock sampler behind [`super`]: one thread (`prodbg-wall`) that ticks at the
//! requested rate and, at every tick, records one sample of every other thread of the process,
//! whatever it is doing. See the [parent module's docs](super) for the method and its bounds.

use crate::stack::labels as span_labels;
use std::collections::HashMap;
use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::FileExt as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::stack::remote::{current_tid, list_threads, signal_mask_has, Session};
use crate::stack::signal_unwinder::SignalUnwinder;

use crate::stack::thread_state::{self as state, ThreadState};

/// Most threads sampled per tick; threads beyond it (by ascending tid) are counted, not sampled.
pub(crate) const MAX_THREADS: usize = 1024;
/// Most frames kept per stack (outermost frames beyond this are cut).
pub(crate) const MAX_FRAMES: usize = 128;
/// Distinct (state, labels, stack) entries kept; samples that would need more are counted
/// under one `[sample table full]` entry per state.
pub(crate) const MAX_ENTRIES: usize = 16384;
/// How long the sampler waits for one thread to answer the signal.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_millis(20);

/// A sample's labels beyond `state`: `(key, value)` pairs, `thread` first. A label added later
/// (a request's `span`) is one more pair pushed where the sample is recorded.
pub(crate) type Labels = Vec<(&'static str, String)>;

/// What a sample's stack is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Stack {
    /// Raw addresses, leaf first (the interrupted instruction, then return addresses).
    Frames { ips: Vec<u64>, truncated: bool },
    /// No stack could be taken; the reason is shown as the only frame, e.g.
    /// `[no stack: blocks the signal]`.
    Missing(String),
}

/// What samples are aggregated by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SampleKey {
    pub(crate) state: ThreadState,
    pub(crate) labels: Labels,
    pub(crate) stack: Stack,
}

/// What a finished sampler hands over.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    /// Distinct samples and their counts.
    pub(crate) entries: Vec<(SampleKey, u64)>,
    /// Ticks that ran.
    pub(crate) ticks: u64,
    /// Ticks that could not run on time (the sampler fell behind, or waited for a thread dump).
    pub(crate) missed_ticks: u64,
    /// Thread samples recorded (one per thread per tick).
    pub(crate) samples: u64,
    /// Of those, stacks taken by signal (the others reused the thread's previous stack: the
    /// thread had not been scheduled since, or could not be asked).
    pub(crate) signalled: u64,
    /// Threads that did not answer within [`ANSWER_TIMEOUT`].
    pub(crate) timeouts: u64,
    /// Thread samples not taken: over [`MAX_THREADS`], or the tick ran out of time.
    pub(crate) skipped: u64,
    /// Samples counted under `[sample table full]`.
    pub(crate) table_full: u64,
    /// Most threads seen in one tick (the sampler itself excluded).
    pub(crate) max_threads: usize,
    /// CPU time the sampler thread used (its own clock).
    pub(crate) sampler_cpu: Duration,
    /// Whether the kernel keeps scheduler statistics (else every thread is signalled at every
    /// tick: no stack can be reused).
    pub(crate) schedstat: bool,
    /// Why stacks could not be taken at all, if so.
    pub(crate) no_unwinder: Option<String>,
}

/// The running sampler thread; dropping it stops the thread.
pub(crate) struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Collected>>,
}

impl Sampler {
    /// Prepares the unwinder (reads the module list and stack mappings: call from a blocking
    /// context) and starts the sampler thread, named `name` (at most 15 bytes), at
    /// `frequency_hz`.
    pub(crate) fn start(name: &str, frequency_hz: u32) -> Result<Sampler, String> {
        let unwinder =
            SignalUnwinder::prepare().map_err(|e| format!("preparing the unwinder: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let period = Duration::from_nanos(1_000_000_000 / u64::from(frequency_hz.max(1)));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || Ticker::new(unwinder, period).run(&flag))
            .map_err(|e| format!("spawning the sampler thread: {e}"))?;
        Ok(Sampler {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the sampler thread (within one tick) and returns what it recorded.
    pub(crate) fn stop(mut self) -> Collected {
        self.halt().unwrap_or_default()
    }

    fn halt(&mut self) -> Option<Collected> {
        let thread = self.thread.take()?;
        self.stop.store(true, Ordering::SeqCst);
        thread.thread().unpark();
        thread.join().ok()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        drop(self.halt());
    }
}

/// What the sampler remembers of one thread between ticks.
struct Tracked {
    name: String,
    /// The tick it was first seen in.
    born: u64,
    /// The tick it was last seen in (threads not seen are forgotten).
    seen: u64,
    /// Its `stat` letter at its last sample.
    letter: u8,
    /// `(cpu_ns, run_delay_ns, timeslices)` after its last sample.
    sched: Option<(u64, u64, u64)>,
    /// Its `syscall` line (number, arguments, stack pointer, instruction pointer) when its
    /// stack was last taken asleep: where it sleeps.
    place: Option<Vec<u8>>,
    /// The entry its last sample went to.
    entry: Option<usize>,
    /// It did not answer a signal: check for a still-queued signal before sending another, and
    /// whether it blocks the signal.
    suspect: bool,
    /// Why it is never signalled (it blocks the signal).
    refused: Option<String>,
    /// Its `/proc` files, held open (re-read with `pread`) for the first [`Ticker::held_max`]
    /// threads.
    files: ProcFiles,
}

/// A thread's `stat`, `schedstat` and `syscall` files, each held open or opened per read.
struct ProcFiles {
    dir: String,
    held: Option<[File; 3]>,
}

const STAT: usize = 0;
const SCHEDSTAT: usize = 1;
const SYSCALL: usize = 2;
const NAMES: [&str; 3] = ["stat", "schedstat", "syscall"];

impl ProcFiles {
    fn new(tid: u32, hold: bool) -> ProcFiles {
        let dir = format!("/proc/self/task/{tid}");
        let held = hold
            .then(|| {
                let open = |name: &str| File::open(format!("{dir}/{name}")).ok();
                Some([open(NAMES[0])?, open(NAMES[1])?, open(NAMES[2])?])
            })
            .flatten();
        ProcFiles { dir, held }
    }

    /// Reads file `which` whole into `buf`; `false` if it cannot be read (the thread exited).
    fn read(&self, which: usize, buf: &mut Vec<u8>) -> bool {
        buf.clear();
        match &self.held {
            Some(files) => {
                // procfs regenerates the text on a read at offset 0.
                buf.resize(READ_SIZE, 0);
                match files[which].read_at(buf, 0) {
                    Ok(n) if n > 0 => {
                        buf.truncate(n);
                        true
                    }
                    _ => false,
                }
            }
            None => read(&format!("{}/{}", self.dir, NAMES[which]), buf),
        }
    }
}

/// Enough for one `stat`, `schedstat` or `syscall` text.
const READ_SIZE: usize = 1024;

struct Ticker {
    unwinder: Option<Box<SignalUnwinder>>,
    period: Duration,
    me: u32,
    tick: u64,
    threads: HashMap<u32, Tracked>,
    index: HashMap<SampleKey, usize>,
    out: Collected,
    /// Where the next tick starts in the thread list (after a tick that ran out of time).
    resume_at: usize,
    /// Threads whose `/proc` files are held open: at most 256, and 3 fds per thread within an
    /// eighth of the soft `RLIMIT_NOFILE`; the others open and close them at each read.
    held_max: usize,
    held: usize,
    buf: Vec<u8>,
}

impl Ticker {
    fn new(unwinder: SignalUnwinder, period: Duration) -> Ticker {
        Ticker {
            unwinder: Some(Box::new(unwinder)),
            period,
            me: current_tid() as u32,
            tick: 0,
            threads: HashMap::new(),
            index: HashMap::new(),
            out: Collected {
                schedstat: true,
                ..Collected::default()
            },
            resume_at: 0,
            held_max: held_max(),
            held: 0,
            buf: Vec::with_capacity(READ_SIZE),
        }
    }

    fn run(mut self, stop: &AtomicBool) -> Collected {
        let cpu0 = thread_cpu_time();
        let mut next = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            self.tick();
            next += self.period;
            let now = Instant::now();
            if next < now {
                // Behind (a long tick, a thread dump holding the capture slot): skip the ticks
                // that are due rather than bursting them.
                let behind = (now - next).as_nanos() / self.period.as_nanos().max(1) + 1;
                self.out.missed_ticks += behind as u64;
                next += self.period * behind as u32;
            }
            while !stop.load(Ordering::SeqCst) {
                let now = Instant::now();
                if now >= next {
                    break;
                }
                std::thread::park_timeout(next - now);
            }
        }
        self.out.sampler_cpu = thread_cpu_time().saturating_sub(cpu0);
        let mut out = self.out;
        out.entries.sort_by_key(|e| std::cmp::Reverse(e.1));
        out
    }

    fn tick(&mut self) {
        self.tick += 1;
        self.out.ticks += 1;
        let tick = self.tick;
        let mut tids = list_threads();
        tids.retain(|&t| t != self.me);
        if tids.len() > MAX_THREADS {
            self.out.skipped += (tids.len() - MAX_THREADS) as u64;
            tids.truncate(MAX_THREADS);
        }
        self.out.max_threads = self.out.max_threads.max(tids.len());
        // New threads' stacks are new mappings: the unwinder's stack map must know them.
        let new = tids.iter().any(|t| !self.threads.contains_key(t));
        if self.unwinder.is_none() {
            // The last session's unwinder was leaked to a handler that never finished.
            self.unwinder = SignalUnwinder::prepare().ok().map(Box::new);
        } else if let Some(u) = &self.unwinder {
            if new {
                let _ = u.refresh_stacks();
            }
            if tick % 16 == 1 {
                let _ = u.refresh_modules();
            }
            u.reclaim();
        }
        if self.unwinder.is_none() && self.out.no_unwinder.is_none() {
            self.out.no_unwinder = Some("the unwinder could not be prepared".into());
        }

        // Waits for a thread dump's captures, if one is running.
        let session = Session::begin(self.unwinder.take());
        let budget = self
            .period
            .clamp(Duration::from_millis(20), Duration::from_millis(250));
        let started = Instant::now();
        let n = tids.len();
        let first = if self.resume_at < n {
            self.resume_at
        } else {
            0
        };
        self.resume_at = 0;
        for i in 0..n {
            let tid = tids[(first + i) % n];
            if started.elapsed() > budget {
                self.out.skipped += (n - i) as u64;
                self.resume_at = (first + i) % n;
                break;
            }
            self.sample(&session, tid, tick);
        }
        self.unwinder = session.end();
        let before = self.threads.len();
        self.threads.retain(|_, t| t.seen == tick);
        if self.threads.len() != before {
            self.held = self
                .threads
                .values()
                .filter(|t| t.files.held.is_some())
                .count();
        }
    }

    /// Records one sample of thread `tid`.
    fn sample(&mut self, session: &Session, tid: u32, tick: u64) {
        if !self.threads.contains_key(&tid) {
            let hold = self.held < self.held_max;
            let files = ProcFiles::new(tid, hold);
            self.held += usize::from(files.held.is_some());
            let name = thread_name(&files.dir, &mut self.buf, tid);
            self.threads.insert(
                tid,
                Tracked {
                    name,
                    born: tick,
                    seen: tick,
                    letter: 0,
                    sched: None,
                    place: None,
                    entry: None,
                    suspect: false,
                    refused: None,
                    files,
                },
            );
        }
        let buf = &mut self.buf;
        let t = self.threads.get_mut(&tid).expect("tracked above");
        t.seen = tick;
        let Some(letter) = t
            .files
            .read(STAT, buf)
            .then(|| state::parse_stat_letter(buf))
            .flatten()
        else {
            // Exited (or its tid was reused: the held files answer for the old thread only).
            self.threads.remove(&tid);
            return;
        };
        let sched = t
            .files
            .read(SCHEDSTAT, buf)
            .then(|| state::parse_schedstat(buf))
            .flatten();
        if sched.is_none() {
            self.out.schedstat = false;
        }
        let mut place = None;
        if letter != b'R' && letter == t.letter {
            if let (Some(entry), Some(now), Some(then)) = (t.entry, sched, t.sched) {
                // Not scheduled in since its last sample, in the same state: its stack cannot
                // have changed. Reuse it without waking the thread.
                let mut same = now.2 == then.2;
                if !same && letter == b'S' && t.place.is_some() {
                    // It ran, but sleeps again in the same system call with the same
                    // arguments, stack pointer and return address: taken to be in the same
                    // place (see the parent module's docs).
                    if t.files.read(SYSCALL, buf) {
                        same = t.place.as_deref() == Some(buf.as_slice());
                        place = Some(buf.clone());
                    }
                }
                if same {
                    t.sched = sched;
                    self.out.entries[entry].1 += 1;
                    self.out.samples += 1;
                    return;
                }
            }
        }
        let starved = match (letter, sched, t.sched) {
            (b'R', Some(now), Some(then)) => {
                now.1.saturating_sub(then.1) > now.0.saturating_sub(then.0)
            }
            _ => false,
        };
        if letter == b'S' && place.is_none() && t.files.read(SYSCALL, buf) {
            place = Some(buf.clone());
        }
        let syscall = place.as_deref().and_then(state::parse_syscall);
        let state = state::classify(letter, syscall, starved);
        let mut after = sched;
        let stack = if let Some(why) = &t.refused {
            Stack::Missing(why.clone())
        } else if matches!(letter, b'T' | b't' | b'Z' | b'X' | b'x') {
            Stack::Missing("[no stack: stopped or exiting]".into())
        } else if !session.has_unwinder() {
            Stack::Missing("[no stack: no unwinder]".into())
        } else {
            self.out.signalled += 1;
            match session.capture(tid, MAX_FRAMES, ANSWER_TIMEOUT, t.suspect) {
                Ok(raw) => {
                    t.suspect = false;
                    if tick < t.born + 3 {
                        // A thread names itself as it starts: its first reading may be early.
                        t.name = thread_name(&t.files.dir, buf, tid);
                    }
                    // Its handler just ran: count that scheduling in, so that the next tick
                    // sees the thread as not scheduled since if it went back to sleep.
                    after = t
                        .files
                        .read(SCHEDSTAT, buf)
                        .then(|| state::parse_schedstat(buf))
                        .flatten();
                    Stack::Frames {
                        ips: raw.ips,
                        truncated: raw.truncated,
                    }
                }
                Err(e) if e.contains("exited") => return,
                Err(e) => {
                    self.out.timeouts += u64::from(e.contains("within"));
                    t.suspect = true;
                    match session.signal() {
                        Ok(sig) if signal_mask_has(tid, "SigBlk:", sig) => {
                            let why = "[no stack: blocks the signal]".to_string();
                            t.refused = Some(why.clone());
                            Stack::Missing(why)
                        }
                        _ if e.contains("within") => {
                            Stack::Missing("[no stack: did not answer in time]".into())
                        }
                        _ => Stack::Missing(format!("[no stack: {e}]")),
                    }
                }
            }
        };
        // Only a stack really taken marks where the thread sleeps (a timed-out one is retried).
        t.place = place.filter(|_| matches!(stack, Stack::Frames { .. }));
        t.letter = letter;
        t.sched = after;
        let mut labels: Labels = vec![("thread", t.name.clone())];
        // The span the thread is in now, from prodbg's spans layer (a plain read of its slot).
        let span = span_labels::current_labels_for(tid as i32);
        if !span.is_empty() {
            labels.extend(
                span.resolve()
                    .pairs()
                    .into_iter()
                    .map(|(k, v)| (k, v.to_owned())),
            );
        }
        let key = SampleKey {
            state,
            labels,
            stack,
        };
        let entry = self.entry(key);
        self.threads.get_mut(&tid).expect("tracked above").entry = Some(entry);
        self.out.entries[entry].1 += 1;
        self.out.samples += 1;
    }

    /// The index of `key`'s entry, added if new (or the state's `[sample table full]` entry).
    fn entry(&mut self, key: SampleKey) -> usize {
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let key = if self.out.entries.len() >= MAX_ENTRIES {
            self.out.table_full += 1;
            let full = SampleKey {
                state: key.state,
                labels: Vec::new(),
                stack: Stack::Missing("[sample table full]".into()),
            };
            if let Some(&i) = self.index.get(&full) {
                return i;
            }
            full
        } else {
            key
        };
        let i = self.out.entries.len();
        self.index.insert(key.clone(), i);
        self.out.entries.push((key, 0));
        i
    }
}

/// Reads the whole of a small `/proc` file into `buf`; `false` if it cannot be read.
fn read(path: &str, buf: &mut Vec<u8>) -> bool {
    buf.clear();
    File::open(path)
        .and_then(|mut f| f.read_to_end(buf))
        .is_ok()
}

/// How many threads' `/proc` files may be held open (see [`Ticker::held_max`]).
fn held_max() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    usize::try_from(lim.rlim_cur / 24)
        .unwrap_or(usize::MAX)
        .min(256)
}

/// The thread's name (`comm`), or `thread-<tid>` when it has none.
fn thread_name(dir: &str, buf: &mut Vec<u8>, tid: u32) -> String {
    if read(&format!("{dir}/comm"), buf) {
        let name = String::from_utf8_lossy(buf)
            .trim_end_matches('\n')
            .to_string();
        if !name.is_empty() {
            return name;
        }
    }
    format!("thread-{tid}")
}

/// CPU time of the calling thread.
pub(crate) fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}
