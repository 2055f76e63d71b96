//! Crash reports: on SIGSEGV, SIGBUS, SIGILL, SIGFPE and SIGABRT an async-signal-safe handler
//! writes the faulting thread's registers and raw stack (up to [`MAX_STACK`] bytes from its
//! stack pointer), the build id and the loaded modules to a file opened in the incident
//! directory when it was installed; then it puts the previous disposition back and re-raises,
//! so core dumps and the host's own handlers work as before. At the next start [`install`]
//! finds that file, unwinds the saved stack with framehop against the same binaries (mapped
//! where this run loaded them), symbolizes it and lists it as an incident of kind `crash`
//! (`crash.txt`, `crash.json`, and the raw report).
//!
//! The handler runs on the thread's alternate signal stack (`SA_ONSTACK`): Rust's `std` gives
//! every thread it starts one (a few KiB, which is why the unwinding waits for the next start),
//! and [`install`] gives the installing thread one if it has none. It allocates nothing, takes
//! no lock and calls only `write`, `open`, `read`, `close`, `prctl`, `clock_gettime`, `fsync`,
//! `sigaction` and `raise`; the stack is copied by `write` itself, which fails with `EFAULT`
//! instead of faulting past the stack's end. Its buffers are static, the module list is
//! formatted beforehand (again whenever modules are loaded), and only the first crashing
//! thread writes.
//!
//! A pending report file `crash-<pid>-<random>.raw` exists while the process runs, locked
//! (`flock`) so another process sharing the directory leaves it alone; an empty one left by a
//! clean exit is removed at the next start.

use std::cell::UnsafeCell;
use std::collections::BTreeMap;
use std::fs;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{Incidents, Kind};
use crate::stack::dwarf::{symbolize_file, SymbolizeOptions};
use crate::stack::modules::{loader_generation, LoaderGeneration, ModuleKind, ModuleSet};
use crate::stack::unwind::InterruptedRegs;

/// The signals handled.
pub(crate) const SIGNALS: [libc::c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
];
/// Stack bytes saved from the faulting thread's stack pointer up.
pub(crate) const MAX_STACK: usize = 256 * 1024;
/// Frames unwound from a saved stack.
const MAX_FRAMES: usize = 256;
/// Size of the alternate stack given to the installing thread when it has none, bytes.
const ALT_STACK: usize = 64 * 1024;
/// The first line of a report.
const MAGIC: &[u8] = b"PRODBG-CRASH 1\n";
/// The largest report read back, bytes.
const MAX_REPORT: u64 = 4 << 20;

static INSTALL: Once = Once::new();
/// The pending report's descriptor (-1: none).
static FD: AtomicI32 = AtomicI32::new(-1);
/// Set by the first crashing thread: only it writes.
static WRITING: AtomicBool = AtomicBool::new(false);
/// The module lines, formatted outside the handler (leaked; replaced when modules change).
static MODULES: AtomicPtr<Vec<u8>> = AtomicPtr::new(std::ptr::null_mut());

/// Static scratch space of the handler, used by the one thread that won [`WRITING`].
struct Scratch {
    line: UnsafeCell<[u8; 512]>,
    chunk: UnsafeCell<[u8; 4096]>,
    old: UnsafeCell<[libc::sigaction; 5]>,
}

// SAFETY: `line` and `chunk` are touched only by the thread that won `WRITING`;
// `old` is written once under `INSTALL` before any handler is installed, then only read.
unsafe impl Sync for Scratch {}

static SCRATCH: Scratch = Scratch {
    line: UnsafeCell::new([0; 512]),
    chunk: UnsafeCell::new([0; 4096]),
    // SAFETY: all-zero is a valid `sigaction` (SIG_DFL, empty mask).
    old: UnsafeCell::new(unsafe { std::mem::zeroed() }),
};

/// Lists the crash reports the previous runs left in `incidents`' directory as `crash`
/// incidents, then (once per process) opens this run's report file and installs the
/// handlers. Problems are logged, never fatal: the host runs without crash reports.
pub(crate) fn install(incidents: &Arc<Incidents>) {
    collect_previous(incidents);
    INSTALL.call_once(|| {
        if let Err(e) = arm(incidents.store().dir()) {
            tracing::warn!(target: "prodbg::incidents", error = %e, "crash reports are off");
        }
    });
}

/// Keeps the module list current (a library `dlopen`ed since) and the panic hook's unwinder's
/// view of modules and threads. Never from a handler.
pub(crate) fn refresh() {
    static SEEN: std::sync::Mutex<Option<LoaderGeneration>> = std::sync::Mutex::new(None);
    let now = loader_generation();
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if FD.load(Ordering::SeqCst) >= 0 && *seen != Some(now) {
        publish_modules();
        *seen = Some(now);
    }
    drop(seen);
    if let Some(u) = super::own_stack::prepared() {
        let _ = u.refresh_modules();
        let _ = u.refresh_stacks();
        u.reclaim();
    }
}

fn arm(dir: &Path) -> Result<(), String> {
    publish_modules();
    let mut r = [0u8; 4];
    let _ = getrandom::fill(&mut r);
    let path = dir.join(format!(
        "crash-{}-{}.raw",
        std::process::id(),
        hex::encode(r)
    ));
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let fd = file.into_raw_fd();
    // SAFETY: `fd` is open; an exclusive lock says "this process is alive" to others.
    unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) };
    FD.store(fd, Ordering::SeqCst);
    ensure_alt_stack();
    // SAFETY: `old` is written here only, before any handler exists.
    let old = unsafe { &mut *SCRATCH.old.get() };
    for (i, sig) in SIGNALS.into_iter().enumerate() {
        // SAFETY: a zeroed sigaction is valid; we fill handler, flags and mask.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = handler as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: valid pointers to a sigaction and its mask.
        unsafe {
            // Every other signal waits while the report is written: a profiler's sample
            // (SIGPROF, a thread-dump signal) nesting on the same small alternate stack could
            // overflow it.
            libc::sigfillset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, &mut old[i]) != 0 {
                return Err(format!(
                    "sigaction({sig}) failed: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    Ok(())
}

/// Gives the calling thread an alternate signal stack if it has none (leaked: it must live as
/// long as the thread).
fn ensure_alt_stack() {
    // SAFETY: a zeroed stack_t is a valid out-parameter.
    let mut cur: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: querying only.
    if unsafe { libc::sigaltstack(std::ptr::null(), &mut cur) } != 0
        || cur.ss_flags & libc::SS_DISABLE == 0
    {
        return;
    }
    let mem: &'static mut [u8] = Box::leak(vec![0u8; ALT_STACK].into_boxed_slice());
    let st = libc::stack_t {
        ss_sp: mem.as_mut_ptr().cast(),
        ss_flags: 0,
        ss_size: ALT_STACK,
    };
    // SAFETY: `st` describes leaked memory that lives for the rest of the process.
    unsafe { libc::sigaltstack(&st, std::ptr::null_mut()) };
}

/// Formats the loaded modules as report lines and publishes them for the handler.
fn publish_modules() {
    let Ok(modules) = ModuleSet::snapshot() else {
        return;
    };
    let mut text = String::new();
    let build = modules
        .modules()
        .iter()
        .find(|m| m.kind == ModuleKind::Executable)
        .and_then(|m| m.build_id_hex());
    text.push_str(&format!("build_id {}\n", build.as_deref().unwrap_or("-")));
    for m in modules.modules() {
        let Some(path) = &m.path else { continue };
        text.push_str(&format!(
            "module {:x} {:x} {:x} {} {}\n",
            m.bias,
            m.avma_range.start,
            m.avma_range.end,
            m.build_id_hex().as_deref().unwrap_or("-"),
            path.display()
        ));
    }
    let leaked = Box::into_raw(Box::new(text.into_bytes()));
    // The previous list is leaked on purpose: a handler may be reading it.
    MODULES.store(leaked, Ordering::SeqCst);
}

/// The signal handler. Async-signal-safe throughout.
extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo and ucontext to an SA_SIGINFO handler.
    let code = unsafe { (*info).si_code };
    if !WRITING.swap(true, Ordering::SeqCst) {
        // SAFETY: only this thread writes the scratch buffers (it won WRITING).
        unsafe { write_report(sig, info, uc.cast()) };
    }
    let idx = SIGNALS.iter().position(|s| *s == sig).unwrap_or(0);
    // SAFETY: `old` was filled before the handler was installed and is only read now.
    unsafe {
        let old = &*SCRATCH.old.get();
        libc::sigaction(sig, &old[idx], std::ptr::null_mut());
        // A signal sent by a process or `raise`/`abort` (si_code <= 0) is sent again; a fault
        // repeats by itself when the instruction runs again under the old disposition.
        if code <= 0 {
            libc::raise(sig);
        }
    }
}

/// A tiny append-only formatter over the static line buffer.
struct Line {
    buf: *mut [u8; 512],
    len: usize,
}

impl Line {
    fn bytes(&mut self, b: &[u8]) -> &mut Line {
        // SAFETY: `buf` is the static line buffer owned by the writing thread.
        let buf = unsafe { &mut *self.buf };
        let n = b.len().min(buf.len() - self.len);
        buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
        self
    }

    fn hex(&mut self, v: u64) -> &mut Line {
        let mut tmp = [0u8; 18];
        tmp[0] = b'0';
        tmp[1] = b'x';
        let mut n = 2;
        let mut started = false;
        for i in (0..16).rev() {
            let d = ((v >> (i * 4)) & 0xf) as u8;
            if d != 0 || started || i == 0 {
                started = true;
                tmp[n] = if d < 10 { b'0' + d } else { b'a' + d - 10 };
                n += 1;
            }
        }
        self.bytes(&tmp[..n])
    }

    fn dec(&mut self, v: i64) -> &mut Line {
        let mut tmp = [0u8; 21];
        let mut n = tmp.len();
        let neg = v < 0;
        let mut u = v.unsigned_abs();
        loop {
            n -= 1;
            tmp[n] = b'0' + (u % 10) as u8;
            u /= 10;
            if u == 0 {
                break;
            }
        }
        if neg {
            n -= 1;
            tmp[n] = b'-';
        }
        self.bytes(&tmp[n..])
    }

    fn flush(&mut self, fd: libc::c_int) {
        // SAFETY: the first `len` bytes of the static buffer are initialised.
        write_all(fd, unsafe { &(&*self.buf)[..self.len] });
        self.len = 0;
    }
}

fn write_all(fd: libc::c_int, mut b: &[u8]) {
    while !b.is_empty() {
        // SAFETY: `b` is a valid slice; write is async-signal-safe.
        let n = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
        if n <= 0 {
            return;
        }
        b = &b[n as usize..];
    }
}

/// Writes the report. Async-signal-safe.
///
/// # Safety
/// From the handler only, on the thread that won [`WRITING`]; `uc` is the handler's context.
unsafe fn write_report(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *const libc::ucontext_t) {
    let fd = FD.load(Ordering::SeqCst);
    if fd < 0 {
        return;
    }
    let mut l = Line {
        buf: SCRATCH.line.get(),
        len: 0,
    };
    // SAFETY: the handler's siginfo.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as u64) };
    // SAFETY: zeroed timespec is a valid out-parameter.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: clock_gettime is async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    let mut name = [0u8; 17];
    // SAFETY: PR_GET_NAME writes at most 16 bytes and a NUL.
    unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
    let name_len = name.iter().position(|b| *b == 0).unwrap_or(16);
    l.bytes(MAGIC);
    l.bytes(b"signal ")
        .dec(sig as i64)
        .bytes(b"\ncode ")
        .dec(code as i64);
    l.bytes(b"\naddr ")
        .hex(addr)
        .bytes(b"\npid ")
        .dec(std::process::id() as i64);
    l.bytes(b"\ntid ").dec(crate::stack::gettid() as i64);
    l.bytes(b"\ntime_ms ")
        .dec(ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000);
    l.bytes(b"\nthread ").bytes(&name[..name_len]).bytes(b"\n");
    l.flush(fd);
    // SAFETY: the handler's context.
    let regs = unsafe { InterruptedRegs::from_ucontext(uc) };
    l.bytes(b"regs ")
        .hex(regs.pc)
        .bytes(b" ")
        .hex(regs.sp)
        .bytes(b" ");
    l.hex(regs.fp).bytes(b" ").hex(regs.lr).bytes(b"\n");
    l.flush(fd);
    let modules = MODULES.load(Ordering::SeqCst);
    if !modules.is_null() {
        // SAFETY: published lists are leaked, never freed.
        write_all(fd, unsafe { &*modules });
    }
    // The raw mappings, for a human reading the file.
    write_all(fd, b"maps\n");
    // SAFETY: a NUL-terminated path; open/read/close are async-signal-safe.
    let maps = unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if maps >= 0 {
        let chunk = SCRATCH.chunk.get();
        loop {
            // SAFETY: reading into our static chunk.
            let n = unsafe { libc::read(maps, (*chunk).as_mut_ptr().cast(), 4096) };
            if n <= 0 {
                break;
            }
            // SAFETY: `n` bytes were read.
            write_all(fd, unsafe { &(&*chunk)[..n as usize] });
        }
        // SAFETY: closing what we opened.
        unsafe { libc::close(maps) };
    }
    // Last, the raw stack from SP up, one page at a time until unmapped memory (EFAULT).
    l.bytes(b"stack ").hex(regs.sp).bytes(b"\n");
    l.flush(fd);
    let mut at = regs.sp as usize;
    let end = at.saturating_add(MAX_STACK);
    while at < end {
        let page_end = ((at | 4095) + 1).min(end);
        // SAFETY: write reads user memory itself and fails with EFAULT where it is unmapped.
        let n = unsafe { libc::write(fd, at as *const libc::c_void, page_end - at) };
        if n <= 0 {
            break;
        }
        at += n as usize;
    }
    // SAFETY: fsync is async-signal-safe.
    unsafe { libc::fsync(fd) };
}

/// A report read back.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    /// The signal number.
    pub(crate) signal: i32,
    /// Its name, e.g. `SIGSEGV`.
    pub(crate) signal_name: &'static str,
    /// `si_code` (≤ 0: sent by a process or `raise`/`abort`; > 0: a fault).
    pub(crate) code: i64,
    /// The faulting address (`si_addr`), for faults.
    pub(crate) addr: String,
    /// The crashed process.
    pub(crate) pid: i64,
    /// The crashed thread's kernel id.
    pub(crate) tid: i64,
    /// The crashed thread's name.
    pub(crate) thread: String,
    /// When, RFC 3339 UTC.
    pub(crate) time: String,
    /// The executable's GNU build id.
    pub(crate) build_id: String,
    /// The stack, innermost first: `address function (file:line)`.
    pub(crate) stack: Vec<String>,
    /// Modules whose build id differs now (symbols for them may be wrong).
    pub(crate) changed_modules: Vec<String>,
    /// Bytes of the crashed thread's stack saved, from its stack pointer up.
    pub(crate) stack_bytes: usize,
    #[serde(skip)]
    pub(crate) time_ms: i64,
}

struct ModuleLine {
    bias: u64,
    start: u64,
    end: u64,
    build_id: String,
    path: PathBuf,
}

/// Parses, unwinds and symbolizes a report; `None` if it is not one.
pub(crate) fn parse(raw: &[u8]) -> Option<Report> {
    // The text part, then `stack 0x<sp>\n` and the raw stack bytes to the end.
    let (text, stack) = match find(raw, b"\nstack 0x") {
        Some(i) => {
            let rest = &raw[i + 1..];
            let nl = rest.iter().position(|b| *b == b'\n')?;
            (&raw[..i + 1], Some((&rest[..nl], &rest[nl + 1..])))
        }
        None => (raw, None),
    };
    let text = std::str::from_utf8(text).ok()?;
    let mut lines = text.lines();
    if lines.next()?.as_bytes() != MAGIC.trim_ascii_end() {
        return None;
    }
    let mut r = Report::default();
    let mut regs = None;
    let mut modules = Vec::new();
    for line in lines {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        let num = || value.parse::<i64>().unwrap_or(0);
        let hex = |v: &str| u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap_or(0);
        match key {
            "signal" => r.signal = num() as i32,
            "code" => r.code = num(),
            "addr" => r.addr = value.to_string(),
            "pid" => r.pid = num(),
            "tid" => r.tid = num(),
            "time_ms" => r.time_ms = num(),
            "thread" => r.thread = value.to_string(),
            "build_id" => r.build_id = value.to_string(),
            "regs" => {
                let v: Vec<u64> = value.split(' ').map(hex).collect();
                if v.len() == 4 {
                    regs = Some([v[0], v[1], v[2], v[3]]);
                }
            }
            "module" => {
                let f: Vec<&str> = value.splitn(5, ' ').collect();
                if f.len() == 5 {
                    modules.push(ModuleLine {
                        bias: hex(f[0]),
                        start: hex(f[1]),
                        end: hex(f[2]),
                        build_id: f[3].to_string(),
                        path: PathBuf::from(f[4]),
                    });
                }
            }
            "maps" | "end" => break,
            _ => {}
        }
    }
    r.signal_name = signal_name(r.signal);
    r.time =
        crate::encode::time::format(UNIX_EPOCH + Duration::from_millis(r.time_ms.max(0) as u64));
    let frames = match (regs, stack) {
        (Some(regs), Some((sp_line, bytes))) => {
            let sp = std::str::from_utf8(sp_line)
                .ok()
                .and_then(|l| u64::from_str_radix(l.trim_start_matches("stack 0x"), 16).ok())
                .unwrap_or(regs[1]);
            r.stack_bytes = bytes.len();
            unwind_saved(regs, sp, bytes, &modules)
        }
        (Some(regs), None) => vec![regs[0]],
        _ => Vec::new(),
    };
    let (stack, changed) = symbolize(&frames, &modules);
    r.stack = stack;
    r.changed_modules = changed;
    Some(r)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Unwinds a saved stack with this run's unwinder: the crashed run's code addresses are moved
/// to where this run loaded the same module file (by path) for each step, and stack reads come
/// from the saved bytes. Returns the crashed run's addresses, pc first.
fn unwind_saved(regs: [u64; 4], sp: u64, bytes: &[u8], modules: &[ModuleLine]) -> Vec<u64> {
    use framehop::Unwinder as _;
    let Ok(prepared) = crate::stack::unwind::PreparedUnwinder::prepare() else {
        return vec![regs[0]];
    };
    // (old start, old end, old bias, new bias) per module loaded from the same file now.
    let moves: Vec<(u64, u64, u64, u64)> = modules
        .iter()
        .filter_map(|m| {
            let now = prepared
                .modules()
                .modules()
                .iter()
                .find(|n| n.path.as_deref() == Some(m.path.as_path()))?;
            Some((m.start, m.end, m.bias, now.bias))
        })
        .collect();
    let to_new = |a: u64| {
        moves
            .iter()
            .find(|(s, e, _, _)| (*s..*e).contains(&a))
            .map_or(a, |(_, _, old, new)| {
                a.wrapping_sub(*old).wrapping_add(*new)
            })
    };
    let to_old = |a: u64| {
        moves
            .iter()
            .find(|(s, e, old, new)| {
                let o = a.wrapping_sub(*new).wrapping_add(*old);
                (*s..*e).contains(&o)
            })
            .map_or(a, |(_, _, old, new)| {
                a.wrapping_sub(*new).wrapping_add(*old)
            })
    };
    let mut read = |addr: u64| -> Result<u64, ()> {
        let off = addr.checked_sub(sp).ok_or(())? as usize;
        let word = bytes.get(off..off + 8).ok_or(())?;
        Ok(to_new(u64::from_le_bytes(word.try_into().map_err(|_| ())?)))
    };
    let mut cache = crate::stack::unwind::NativeCache::new_in();
    #[cfg(target_arch = "x86_64")]
    let start = framehop::x86_64::UnwindRegsX86_64::new(to_new(regs[0]), regs[1], regs[2]);
    #[cfg(target_arch = "aarch64")]
    let start = framehop::aarch64::UnwindRegsAarch64::new_with_ptr_auth_mask(
        framehop::aarch64::PtrAuthMask::from_max_known_address(
            prepared.unwinder().max_known_code_address(),
        ),
        to_new(regs[3]),
        regs[1],
        regs[2],
    );
    let mut frames = prepared
        .unwinder()
        .iter_frames(to_new(regs[0]), start, &mut cache, &mut read);
    let mut out = Vec::new();
    while out.len() < MAX_FRAMES {
        match frames.next() {
            Ok(Some(f)) => out.push(to_old(f.address())),
            _ => break,
        }
    }
    if out.is_empty() {
        out.push(regs[0]);
    }
    out
}

/// Names each frame with the module files the report lists (the crashed run's addresses,
/// module by module); modules whose build id changed since are named.
fn symbolize(frames: &[u64], modules: &[ModuleLine]) -> (Vec<String>, Vec<String>) {
    let mut by_module: BTreeMap<usize, Vec<(usize, u64)>> = BTreeMap::new();
    for (i, a) in frames.iter().enumerate() {
        // Return addresses are looked up inside the call; the first frame is the pc.
        let look = if i == 0 { *a } else { a.saturating_sub(1) };
        if let Some(m) = modules
            .iter()
            .position(|m| (m.start..m.end).contains(&look))
        {
            by_module.entry(m).or_default().push((i, look));
        }
    }
    let mut names: Vec<String> = frames.iter().map(|a| format!("{a:#x} [unknown]")).collect();
    let mut changed = Vec::new();
    for (m, addrs) in by_module {
        let module = &modules[m];
        if module.build_id != "-" {
            if let Some(now) = build_id_of(&module.path) {
                if now != module.build_id {
                    changed.push(module.path.display().to_string());
                }
            }
        }
        let svmas: Vec<u64> = addrs
            .iter()
            .map(|(_, a)| a.wrapping_sub(module.bias))
            .collect();
        let Ok(found) = symbolize_file(&module.path, &svmas, SymbolizeOptions::default()) else {
            continue;
        };
        for ((i, _), syms) in addrs.iter().zip(found.frames) {
            if syms.is_empty() {
                continue;
            }
            let text: Vec<String> = syms
                .iter()
                .map(|s| {
                    let place = match (&s.file, s.line) {
                        (Some(f), Some(l)) => format!(" ({f}:{l})"),
                        _ => String::new(),
                    };
                    format!(
                        "{:#x} {}{place}{}",
                        frames[*i],
                        s.function.as_deref().unwrap_or("[unknown]"),
                        if s.inlined { " [inlined]" } else { "" }
                    )
                })
                .collect();
            names[*i] = text.join("\n");
        }
    }
    crate::stack::dwarf::release_freed_heap();
    let stack = names
        .iter()
        .flat_map(|n| n.lines().map(str::to_string))
        .collect();
    (stack, changed)
}

/// The GNU build id of the ELF file at `path`, as hex.
fn build_id_of(path: &Path) -> Option<String> {
    use object::Object;
    let f = fs::File::open(path).ok()?;
    // SAFETY: a read-only private map of a file we only read; a concurrent truncation could
    // fault, the same trade the symbolizer makes when it maps modules.
    let map = unsafe { memmap2::Mmap::map(&f) }.ok()?;
    let file = object::File::parse(&*map).ok()?;
    file.build_id().ok().flatten().map(hex::encode)
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGABRT => "SIGABRT",
        _ => "signal",
    }
}

/// Turns every report file a dead process left in the directory into a `crash` incident and
/// removes it; empty ones (clean exits) are just removed; locked ones belong to a live process.
fn collect_previous(incidents: &Incidents) {
    let dir = incidents.store().dir().to_path_buf();
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("crash-") && name.ends_with(".raw")) {
            continue;
        }
        let path = entry.path();
        let Ok(file) = fs::File::open(&path) else {
            continue;
        };
        use std::os::fd::AsRawFd;
        // SAFETY: `file` is open; a shared non-blocking lock fails while its writer lives.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } != 0 {
            continue;
        }
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len > 0 {
            use std::io::Read;
            let mut raw = Vec::new();
            let _ = (&file).take(MAX_REPORT).read_to_end(&mut raw);
            match parse(&raw) {
                Some(r) => {
                    let top = r
                        .stack
                        .iter()
                        .find(|l| !is_machinery(l))
                        .or(r.stack.first())
                        .map(|l| l.split_once(' ').map_or(l.as_str(), |(_, n)| n).to_string())
                        .unwrap_or_else(|| "an unknown function".into());
                    let reason = format!(
                        "{} in thread {} (pid {}) at {top}",
                        r.signal_name, r.thread, r.pid
                    );
                    let time = UNIX_EPOCH + Duration::from_millis(r.time_ms.max(0) as u64);
                    let text_report = format!(
                        "{reason}\nsignal {} ({}), code {}, address {}\nbuild id {}\n{}\nstack (innermost first):\n  {}\n",
                        r.signal,
                        r.signal_name,
                        r.code,
                        r.addr,
                        r.build_id,
                        if r.changed_modules.is_empty() {
                            String::new()
                        } else {
                            format!("changed since the crash (symbols may be wrong): {}", r.changed_modules.join(", "))
                        },
                        r.stack.join("\n  ")
                    );
                    let files = vec![
                        ("crash.txt".to_string(), text_report.into_bytes()),
                        (
                            "crash.json".to_string(),
                            serde_json::to_vec_pretty(&r).unwrap_or_default(),
                        ),
                        ("crash.raw".to_string(), raw),
                    ];
                    let _ = incidents.record(Kind::Crash, reason, time_or_now(time), files);
                }
                None => {
                    tracing::warn!(target: "prodbg::incidents", file = %name, "not a crash report: removed");
                }
            }
        }
        let _ = fs::remove_file(&path);
    }
}

fn time_or_now(t: SystemTime) -> SystemTime {
    if t == UNIX_EPOCH {
        SystemTime::now()
    } else {
        t
    }
}

/// Frames skipped when naming where a crash happened: the signal machinery above the code
/// that crashed (libc's `raise`, `abort` …) and the standard library's helpers inlined into it.
fn is_machinery(line: &str) -> bool {
    let name = line.split_once(' ').map_or(line, |(_, n)| n);
    [
        "[unknown]",
        "core::",
        "std::",
        "alloc::",
        "__",
        "gsignal",
        "raise",
        "abort",
        "pthread_kill",
        "killpg",
    ]
    .iter()
    .any(|m| name.starts_with(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handlers_formatter_writes_hex_and_decimal_without_allocating() {
        let mut buf = [0u8; 512];
        let mut l = Line {
            buf: &mut buf,
            len: 0,
        };
        l.hex(0)
            .bytes(b" ")
            .hex(0xdead_beef)
            .bytes(b" ")
            .dec(-6)
            .bytes(b" ");
        l.dec(0).bytes(b" ").dec(i64::MAX);
        let n = l.len;
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            "0x0 0xdeadbeef -6 0 9223372036854775807"
        );
    }

    #[test]
    fn a_report_without_a_stack_still_parses_and_names_its_signal() {
        let text = "PRODBG-CRASH 1\nsignal 11\ncode 1\naddr 0x8\npid 41\ntid 42\ntime_ms 1796612832000\nthread worker-3\nregs 0x1000 0x2000 0x0 0x0\nbuild_id abcd\nmaps\n";
        let r = parse(text.as_bytes()).unwrap();
        assert_eq!(r.signal_name, "SIGSEGV");
        assert_eq!((r.pid, r.tid, r.thread.as_str()), (41, 42, "worker-3"));
        assert_eq!(r.stack, vec!["0x1000 [unknown]".to_string()]);
        assert!(r.time.starts_with("2026-12-"), "{}", r.time);
        assert!(parse(b"not a report").is_none());
    }
}
