//! What prodbg reads and switches in jemalloc (feature `heap`): whether it is the global
//! allocator, heap profiling's state and its switch (`prof.active`), and its stats. The heap
//! and memory probes read it; it knows no HTTP.
//!
//! # Host set-up
//!
//! jemalloc must be the global allocator, built with profiling, and started with profiling
//! *enabled but inactive* — jemalloc reads this only at start-up, so it cannot be switched on
//! later. In `Cargo.toml`:
//!
//! ```toml
//! prodbg = { version = "0.1", features = ["heap"] }
//! tikv-jemallocator = { version = "0.7", features = ["profiling"] }
//! ```
//!
//! In `main.rs`:
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
//!
//! // Heap profiling enabled at start, sampling off until someone asks; read by jemalloc at start-up.
//! #[allow(non_upper_case_globals)]
//! #[export_name = "_rjem_malloc_conf"]
//! pub static _rjem_malloc_conf: &[u8] = b"prof:true,prof_active:false,lg_prof_sample:19\0";
//! # fn main() {}
//! ```
//!
//! Instead of the static, the process may be started with
//! `_RJEM_MALLOC_CONF=prof:true,prof_active:false,lg_prof_sample:19`. If the host builds
//! tikv-jemallocator with `unprefixed_malloc_on_supported_platforms` (jemalloc then also serves
//! C's `malloc`), the names are `malloc_conf` and `MALLOC_CONF` instead. Exporting both symbols
//! is harmless; [`HeapError::ProfilingNotEnabled`] names the one this build reads.
//!
//! (`&[u8]` is what jemalloc's C `const char *malloc_conf` reads: its first word is the
//! pointer; tikv-jemallocator's and jemalloc_pprof's docs use the same line.)
//!

mod stats;
#[cfg(test)]
mod tests;

pub(crate) use stats::{jemalloc_stats, JemallocStats};

use std::sync::OnceLock;

use serde::Serialize;
use tikv_jemalloc_ctl::raw;

/// The `malloc_conf` value prodbg recommends: profiling enabled, sampling off until
/// [`set_active`], one sample per 512 KiB allocated on average.
pub(crate) const RECOMMENDED_MALLOC_CONF: &str = "prof:true,prof_active:false,lg_prof_sample:19";

/// Why a heap probe could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeapError {
    /// The global allocator is not the jemalloc that prodbg links (a known-size allocation
    /// through the global allocator did not move jemalloc's `thread.allocated`).
    #[error("the process is not running on jemalloc: add tikv-jemallocator (feature \"profiling\") and `#[global_allocator] static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;` to the binary")]
    NotJemalloc,
    /// jemalloc was started without `prof:true`; the message gives the line that enables it.
    #[error(
        "jemalloc heap profiling was not enabled at start-up (jemalloc reads it only then): {}",
        enable_hint()
    )]
    ProfilingNotEnabled,
    /// A `mallctl` call failed.
    #[error("jemalloc mallctl failed: {0}")]
    Ctl(String),
    /// Dumping the profile to its temporary file failed.
    #[error("heap profile dump failed: {0}")]
    Dump(String),
    /// The dump was not in the expected `heap_v2` format.
    #[error("heap profile could not be parsed: {0}")]
    Parse(String),
}

/// Heap-profiling state of jemalloc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct HeapProfilingState {
    /// Profiling compiled in and enabled at start-up (`opt.prof`). Without it sampling cannot be
    /// turned on at run time.
    pub opt_prof: bool,
    /// Sampling is on now (`prof.active`); turned on and off by [`set_active`].
    pub active: bool,
    /// log2 of the mean number of bytes allocated between samples (`prof.lg_sample`);
    /// 19 means one sample per 512 KiB.
    pub lg_prof_sample: u32,
}

/// Reads whether heap profiling is enabled and active, and its sample rate.
pub(crate) fn profiling_state() -> Result<HeapProfilingState, HeapError> {
    ensure_jemalloc()?;
    let opt_prof = opt_prof()?;
    // SAFETY: `prof.active` is a documented bool; it is readable only when `opt.prof` is on.
    let active =
        opt_prof && unsafe { raw::read::<bool>(b"prof.active\0") }.map_err(ctl("prof.active"))?;
    // SAFETY: `prof.lg_sample` / `opt.lg_prof_sample` are documented `size_t`s.
    let lg = unsafe { raw::read::<usize>(b"prof.lg_sample\0") }
        .or_else(|_| unsafe { raw::read::<usize>(b"opt.lg_prof_sample\0") })
        .map_err(ctl("prof.lg_sample"))?;
    Ok(HeapProfilingState {
        opt_prof,
        active,
        lg_prof_sample: lg as u32,
    })
}

/// Turns heap sampling on or off for the whole process (`prof.active`).
///
/// Turning it off keeps what was sampled: those allocations stay in snapshots until freed.
/// Errors with [`HeapError::ProfilingNotEnabled`] when turning it on in a process started
/// without `prof:true`.
pub(crate) fn set_active(active: bool) -> Result<(), HeapError> {
    ensure_jemalloc()?;
    if !opt_prof()? {
        return if active {
            Err(HeapError::ProfilingNotEnabled)
        } else {
            Ok(())
        };
    }
    // SAFETY: `prof.active` is documented as a writable bool.
    unsafe { raw::write(b"prof.active\0", active) }.map_err(ctl("prof.active"))
}

pub(crate) fn ctl(name: &'static str) -> impl Fn(tikv_jemalloc_ctl::Error) -> HeapError {
    move |e| HeapError::Ctl(format!("{name}: {e}"))
}

pub(crate) fn opt_prof() -> Result<bool, HeapError> {
    // SAFETY: `opt.prof` is documented as a read-only bool.
    unsafe { raw::read::<bool>(b"opt.prof\0") }.map_err(ctl("opt.prof"))
}

/// Errors with [`HeapError::NotJemalloc`] unless the global allocator is prodbg's jemalloc.
pub(crate) fn ensure_jemalloc() -> Result<(), HeapError> {
    static ON_JEMALLOC: OnceLock<bool> = OnceLock::new();
    let on = *ON_JEMALLOC.get_or_init(|| {
        allocates_through_jemalloc(|n| {
            let v = std::hint::black_box(Vec::<u8>::with_capacity(n));
            drop(v);
        })
    });
    on.then_some(()).ok_or(HeapError::NotJemalloc)
}

/// Whether `alloc(n)` moves jemalloc's per-thread allocation counter by at least `n`.
fn allocates_through_jemalloc(alloc: impl Fn(usize)) -> bool {
    const PROBE: usize = 256 * 1024;
    // SAFETY: `thread.allocated` is documented as a `uint64_t`.
    let allocated = || unsafe { raw::read::<u64>(b"thread.allocated\0") };
    let Ok(before) = allocated() else {
        return false;
    };
    alloc(PROBE);
    allocated().is_ok_and(|after| after.wrapping_sub(before) >= PROBE as u64)
}

/// The exact set-up line for this build: the `_rjem_` names unless jemalloc also serves C's
/// `malloc` (tikv-jemallocator's `unprefixed_malloc_on_supported_platforms`).
fn enable_hint() -> String {
    static UNPREFIXED: OnceLock<bool> = OnceLock::new();
    let unprefixed = *UNPREFIXED.get_or_init(|| {
        allocates_through_jemalloc(|n| {
            // SAFETY: plain malloc/free of a buffer that is never read.
            unsafe { libc::free(std::hint::black_box(libc::malloc(n))) }
        })
    });
    let (symbol, env) = if unprefixed {
        ("malloc_conf", "MALLOC_CONF")
    } else {
        ("_rjem_malloc_conf", "_RJEM_MALLOC_CONF")
    };
    format!(
        "start the process with {env}={RECOMMENDED_MALLOC_CONF} or add to main.rs \
         `#[export_name = \"{symbol}\"] pub static MALLOC_CONF: &[u8] = b\"{RECOMMENDED_MALLOC_CONF}\\0\";` \
         (tikv-jemallocator needs its \"profiling\" feature)"
    )
}
