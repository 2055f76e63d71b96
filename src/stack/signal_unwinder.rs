//! [`SignalUnwinder`]: everything a signal handler needs to unwind, prepared outside it, and
//! the refresh steps a profiler's control thread runs while sampling.
//!
//! Handler side ([`SignalUnwinder::unwind_signal`]): two [`Published`] reads, one cache claim
//! from the [`CachePool`], a binary search for the stack bounds and the framehop walk — each
//! step async-signal-safe (see [`crate::stack::unwind`], [`crate::stack::published`], [`crate::stack::cache_pool`],
//! [`crate::stack::stack_bounds`]).
//!
//! Control side (never in a handler): [`refresh_modules`](SignalUnwinder::refresh_modules)
//! rebuilds the unwinder when `dlpi_adds`/`dlpi_subs` moved (a library was `dlopen`ed or
//! closed during the profile) and swaps it in atomically; the old one, and the pins of its
//! modules, stay alive until [`reclaim`](SignalUnwinder::reclaim) sees no handler in flight or
//! the `SignalUnwinder` is dropped. [`refresh_stacks`](SignalUnwinder::refresh_stacks) re-reads
//! the stack mappings; call it before arming a new thread's timer.
//!
//! Drop a `SignalUnwinder` only once no handler can reach it (timers deleted, the pointer
//! handlers use unpublished, in-flight handlers finished).

use std::io;

use crate::stack::cache_pool::CachePool;
use crate::stack::modules::loader_generation;
use crate::stack::published::{Published, ReadGuard};
use crate::stack::stack_bounds::{thread_pointer, StackBounds, StackMap};
use crate::stack::unwind::{
    unwind_from_regs, InterruptedRegs, PreparedUnwinder, StopReason, UnwindResult,
};

/// A prepared unwinder, stack map and cache pool for use from signal handlers.
pub(crate) struct SignalUnwinder {
    unwinder: Published<PreparedUnwinder>,
    stacks: Published<StackMap>,
    caches: CachePool,
}

impl SignalUnwinder {
    /// Snapshots modules and stack mappings and preallocates caches. Not from a handler.
    pub(crate) fn prepare() -> io::Result<Self> {
        Ok(Self {
            unwinder: Published::new(PreparedUnwinder::prepare()?),
            stacks: Published::new(StackMap::snapshot()?),
            caches: CachePool::for_this_machine(),
        })
    }

    /// Rebuilds and swaps in the unwinder if modules were loaded or unloaded since it was
    /// built; returns whether it did. Not from a handler.
    pub(crate) fn refresh_modules(&self) -> io::Result<bool> {
        if self.unwinder.read().modules().generation() == loader_generation() {
            return Ok(false);
        }
        self.unwinder.replace(PreparedUnwinder::prepare()?);
        Ok(true)
    }

    /// Re-reads the stack mappings and swaps them in. Not from a handler.
    pub(crate) fn refresh_stacks(&self) -> io::Result<()> {
        self.stacks.replace(StackMap::snapshot()?);
        Ok(())
    }

    /// Frees replaced unwinders and stack maps if no handler is using them now; returns how
    /// many were freed. Not from a handler.
    pub(crate) fn reclaim(&self) -> usize {
        self.unwinder.try_reclaim() + self.stacks.try_reclaim()
    }

    /// The current unwinder and its modules (e.g. for the profile's mappings).
    pub(crate) fn current(&self) -> ReadGuard<'_, PreparedUnwinder> {
        self.unwinder.read()
    }

    /// Unwinds the thread this signal interrupted into `out` (pc first, then return
    /// addresses). Async-signal-safe; never blocks; always returns at least the pc when `out`
    /// is not empty.
    ///
    /// # Safety
    /// `uc` must be the `ucontext_t` passed to the running `SA_SIGINFO` handler on this thread.
    pub(crate) unsafe fn unwind_signal(
        &self,
        uc: *const libc::ucontext_t,
        out: &mut [u64],
    ) -> UnwindResult {
        // SAFETY: caller's contract.
        let regs = unsafe { InterruptedRegs::from_ucontext(uc) };
        let tp = thread_pointer();
        let bounds = self.stacks.read().bounds(regs.sp, tp);
        let Some(mut cache) = self.caches.claim((tp >> 12) as usize) else {
            return UnwindResult::leaf_only(regs.pc, out, StopReason::NoCache);
        };
        let prepared = self.unwinder.read();
        // SAFETY: `bounds` comes from the stack map for the interrupted SP of this thread,
        // which stays mapped while the thread runs this handler (crate::stack::stack_bounds).
        unsafe { unwind_from_regs(regs, prepared.unwinder(), &mut cache, bounds, out) }
    }

    /// [`unwind_signal`](Self::unwind_signal) for a thread the stack map may not know yet (one
    /// started since the last [`refresh_stacks`](Self::refresh_stacks)): its stack top is then
    /// the thread pointer, when it lies above SP by at most [`MAX_GUESSED_STACK`] (glibc keeps
    /// a thread's descriptor at the top of that thread's own stack mapping). For crash reports
    /// and a panicking thread's own stack, where a guessed bound beats a leaf alone.
    /// Async-signal-safe.
    ///
    /// # Safety
    /// As [`unwind_signal`](Self::unwind_signal): `uc` is this thread's own context (from the
    /// running handler, or `getcontext` on this thread).
    pub(crate) unsafe fn unwind_own(
        &self,
        uc: *const libc::ucontext_t,
        out: &mut [u64],
    ) -> UnwindResult {
        // SAFETY: caller's contract.
        let regs = unsafe { InterruptedRegs::from_ucontext(uc) };
        let tp = thread_pointer();
        let bounds = self.stacks.read().bounds(regs.sp, tp).or_else(|| {
            (tp > regs.sp && tp - regs.sp <= MAX_GUESSED_STACK).then_some(StackBounds {
                lo: regs.sp,
                hi: tp,
            })
        });
        let Some(mut cache) = self.caches.claim((tp >> 12) as usize) else {
            return UnwindResult::leaf_only(regs.pc, out, StopReason::NoCache);
        };
        let prepared = self.unwinder.read();
        // SAFETY: `bounds` is this thread's own stack from SP up (the map's mapping, or up to
        // its descriptor inside the same mapping), mapped while the thread runs.
        unsafe { unwind_from_regs(regs, prepared.unwinder(), &mut cache, bounds, out) }
    }
}

/// The deepest stack [`SignalUnwinder::unwind_own`] reads up to a thread pointer, bytes.
pub(crate) const MAX_GUESSED_STACK: u64 = 64 << 20;
