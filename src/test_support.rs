//! What the unit tests share: one lock for the tests that touch process-global state, and
//! (feature `heap`) jemalloc as the test binary's allocator, with heap profiling configured.

use std::sync::{Mutex, MutexGuard};

/// Taken by every test that installs signal handlers, runs the CPU sampler, dumps threads,
/// touches jemalloc's global profiling state or the global tracing subscriber: those share one
/// process, so they take turns. A test that panicked while holding it does not poison it.
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// jemalloc is the allocator of the test binary: the heap tests need it, and the CPU tests
// then unwind samples that land in the allocator (glibc's would be dropped by the blocklist).
#[cfg(feature = "heap")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// Both names, so the tests work whether or not jemalloc is built unprefixed. One sample per
// 16 KiB allocated on average.
#[cfg(feature = "heap")]
#[allow(non_upper_case_globals, unreachable_pub)]
#[export_name = "_rjem_malloc_conf"]
pub static _rjem_malloc_conf: &[u8] = b"prof:true,prof_active:false,lg_prof_sample:14\0";
#[cfg(feature = "heap")]
#[allow(non_upper_case_globals, unreachable_pub)]
#[export_name = "malloc_conf"]
pub static malloc_conf: &[u8] = b"prof:true,prof_active:false,lg_prof_sample:14\0";
