//! What the stack-taking probes share: the one [`Frame`] type, the unwinder, the symbolizer and
//! what a signal handler can read of the code it
//! interrupted ([`unwind::InterruptedRegs`]).
//!
//! - [`frame`]: the one [`Frame`] type (innermost first).
//! - [`modules`]: the loaded modules (`dl_iterate_phdr`): unwind sections, segments, build ids.
//! - [`unwind`], [`stack_bounds`], [`cache_pool`], [`published`], [`signal_unwinder`]:
//!   framehop unwinding from a signal handler (CPU samples, thread dumps), lock-free and
//!   allocation-free, every stack read bounded to the interrupted thread's stack.
//! - [`remote`] (feature `threads`): ask another thread for its stack by a real-time signal,
//!   one at a time (thread dumps, wall-clock profiles).
//! - [`dwarf`]: address → functions, file:line and inlined calls, one compilation unit at a
//!   time, no cache kept; [`symbolize`] is the probes' face of it (it returns [`Frame`]s and
//!   gives the freed memory back).
//! - [`thread_state`] (feature `threads`): what a thread is doing, from the kernel (running,
//!   runnable, futex, io, sleeping …), for thread dumps and wall-clock samples alike.
//! - [`thread_dump`] (feature `threads`): the stack of every OS thread, like `jstack`.
//! - [`debug_info`]: whether the executable has debug info, and the line that adds it.
//! - [`offline`]: pprof mappings (path, offsets, build id) and Go's `/debug/pprof/symbol`.
//! - [`profile`] (features `cpu`, `heap`): the one stack [`Profile`](profile::Profile) type
//!   every profiler produces, and its pprof, folded and SVG encodings.
//!
//! Each probe uses part of it; builds with only some of the features leave the rest unused
//! (see the `dead_code` allowance in `lib.rs` for builds without `all_probes`).
//!
//! All of it needs Linux on x86_64 or aarch64 (ELF, `dl_iterate_phdr`, the `ucontext` layout).

#[cfg(all(
    stacks,
    not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))
))]
compile_error!(
    "prodbg's cpu, heap, threads and deadlock features need Linux on x86_64 or aarch64 \
     (build with --no-default-features elsewhere)"
);

#[cfg(any(feature = "cpu", feature = "threads"))]
pub(crate) mod cache_pool;
#[cfg(stacks)]
pub(crate) mod debug_info;
#[cfg(stacks)]
pub(crate) mod dwarf;
pub(crate) mod frame;
#[cfg(feature = "cpu")]
pub(crate) mod interned;
pub(crate) mod labels;
#[cfg(stacks)]
pub(crate) mod modules;
#[cfg(stacks)]
pub(crate) mod offline;
#[cfg(any(feature = "cpu", feature = "heap"))]
pub(crate) mod profile;
#[cfg(any(feature = "cpu", feature = "threads"))]
pub(crate) mod published;
#[cfg(feature = "threads")]
pub(crate) mod remote;
#[cfg(any(feature = "cpu", feature = "threads"))]
pub(crate) mod signal_unwinder;
#[cfg(any(feature = "cpu", feature = "threads"))]
pub(crate) mod stack_bounds;
#[cfg(stacks)]
pub(crate) mod symbolize;
#[cfg(feature = "threads")]
pub(crate) mod thread_dump;
#[cfg(feature = "threads")]
pub(crate) mod thread_state;
#[cfg(any(feature = "cpu", feature = "threads"))]
pub(crate) mod unwind;

pub(crate) use frame::Frame;

/// The calling thread's kernel id (Linux `gettid`, as in `/proc/self/task/<tid>`);
/// async-signal-safe.
pub(crate) fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments, cannot fail and is async-signal-safe.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}
