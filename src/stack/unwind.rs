//! Unwinding an interrupted thread from inside a signal handler, with framehop's DWARF CFI
//! (`.eh_frame`) unwinder. libgcc's `_Unwind_Backtrace` is not used anywhere.
//!
//! # Signal-safety argument
//! [`unwind_from_regs`] runs in a `SIGPROF` (or thread-dump) handler that may have
//! interrupted any code: `malloc`, `memcpy`, a `futex` in the vDSO or libc, the dynamic
//! loader holding its locks, libgcc, another unwind. It is safe there because:
//! - **No allocation.** The unwinder is built beforehand ([`PreparedUnwinder`]) and the cache
//!   is a preallocated `CacheNative<MustNotAllocateDuringUnwind>`: framehop's rule cache is a
//!   fixed array and gimli's CFI evaluation uses fixed on-stack storage (a CFI program that
//!   needs more fails the frame, it never allocates). Frames go into the caller's `out` slice.
//! - **No lock, no loader call.** Module lookup is a binary search over the module list taken
//!   by `dl_iterate_phdr` *before* timers are armed; the handler never calls
//!   `dl_iterate_phdr`, `_dl_find_object`, `dladdr` or anything in libgcc. framehop takes no
//!   lock.
//! - **Bounded reads.** The only memory it reads are (a) unwind sections kept mapped by the
//!   [`ModuleSet`] (borrowed mappings are pinned, see
//!   [`crate::stack::modules`]) and (b) stack words, through a closure that accepts only 8-byte
//!   aligned addresses in `[interrupted SP, stack top)` ([`StackBounds`]), which is mapped
//!   for as long as the thread runs (see [`crate::stack::stack_bounds`]). framehop's frame-pointer
//!   fallback and DWARF expressions read through the same closure; expression evaluation that
//!   would dereference other memory is refused by framehop.
//! - **Every sample is kept.** Whatever stops the walk (no bounds, a read outside them, no
//!   CFI, a signal frame, a full buffer), the frames found so far, at least the interrupted
//!   pc, are returned with `truncated = true`.
//! - Modules loaded while profiling: swap a new [`PreparedUnwinder`] in through
//!   [`Published`](crate::stack::published::Published); the old one stays alive until no handler can
//!   use it.
//!
//! Remaining trust: framehop and gimli must not panic on malformed CFI (a panic in a handler
//! would try to allocate); both return errors for malformed input by design.

use framehop::{MustNotAllocateDuringUnwind, Unwinder as _};

use crate::stack::modules::{ModuleSet, SectionBytes};
pub(crate) use crate::stack::stack_bounds::StackBounds;

/// The unwinder for this CPU, with borrowed or copied section bytes and no allocation.
pub(crate) type NativeUnwinder =
    framehop::UnwinderNative<SectionBytes, MustNotAllocateDuringUnwind>;
/// framehop's per-unwind cache for this CPU (≈ 16 KB, preallocated).
pub(crate) type NativeCache = framehop::CacheNative<MustNotAllocateDuringUnwind>;

/// A framehop unwinder built from a [`ModuleSet`], which it keeps (and so keeps pinned).
pub(crate) struct PreparedUnwinder {
    // Dropped before `modules`, whose pins keep the borrowed bytes mapped.
    unwinder: NativeUnwinder,
    modules: ModuleSet,
}

impl PreparedUnwinder {
    /// Snapshots the loaded modules and builds the unwinder. Outside signal handlers only.
    pub(crate) fn prepare() -> std::io::Result<Self> {
        Ok(Self::new(ModuleSet::snapshot()?))
    }

    /// Builds the unwinder from `modules` (framehop only indexes; no section is parsed yet).
    pub(crate) fn new(modules: ModuleSet) -> Self {
        let mut unwinder = NativeUnwinder::new();
        for m in modules.modules() {
            let mut info = framehop::ExplicitModuleSectionInfo::<SectionBytes> {
                base_svma: 0,
                text_svma: m.exec_segments.first().map(|s| s.svma.clone()),
                ..Default::default()
            };
            if let Some(u) = &m.unwind {
                info.eh_frame_hdr_svma = Some(u.eh_frame_hdr_svma.clone());
                info.eh_frame_hdr = Some(u.eh_frame_hdr.clone());
                info.eh_frame_svma = Some(u.eh_frame_svma.clone());
                info.eh_frame = Some(u.eh_frame.clone());
            }
            unwinder.add_module(framehop::Module::new(
                m.name.clone(),
                m.avma_range.clone(),
                m.bias,
                info,
            ));
        }
        Self { unwinder, modules }
    }

    /// The framehop unwinder.
    pub(crate) fn unwinder(&self) -> &NativeUnwinder {
        &self.unwinder
    }

    /// The modules it was built from.
    pub(crate) fn modules(&self) -> &ModuleSet {
        &self.modules
    }
}

/// Why a walk stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// The outermost frame was reached (its CFI marks the return address undefined, or the
    /// frame pointer chain ended with 0).
    EndOfStack,
    /// `out` was full.
    BufferFull,
    /// No stack bounds were known for the interrupted SP: only the pc was recorded.
    NoStackBounds,
    /// No unwinder cache was free (more handlers running at once than the pool holds).
    NoCache,
    /// A stack read fell outside the bounds (a wrong CFA, a garbage frame pointer, or a
    /// signal frame whose saved context lies elsewhere).
    StackReadOutOfBounds(u64),
    /// framehop gave up for another reason.
    Unwind(framehop::Error),
}

/// Outcome of a walk: how many addresses were written and whether the stack is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnwindResult {
    /// Addresses written to `out` (`out[0]` is the interrupted pc, the rest return addresses).
    pub(crate) depth: usize,
    /// Whether the walk stopped before the outermost frame.
    pub(crate) truncated: bool,
    /// Why the walk stopped.
    pub(crate) reason: StopReason,
}

impl UnwindResult {
    /// A result holding just `pc` (or nothing when `out` is empty), truncated for `reason`.
    pub(crate) fn leaf_only(pc: u64, out: &mut [u64], reason: StopReason) -> Self {
        let depth = match out.first_mut() {
            Some(slot) => {
                *slot = pc;
                1
            }
            None => 0,
        };
        Self {
            depth,
            truncated: true,
            reason,
        }
    }
}

/// The registers an unwind starts from, read from a signal's `ucontext_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InterruptedRegs {
    /// The interrupted instruction.
    pub(crate) pc: u64,
    /// Stack pointer.
    pub(crate) sp: u64,
    /// Frame pointer (`rbp` / `x29`).
    pub(crate) fp: u64,
    /// Link register (`x30`; 0 on x86_64).
    pub(crate) lr: u64,
}

impl InterruptedRegs {
    /// Reads the registers from the `ucontext_t` an `SA_SIGINFO` handler receives.
    ///
    /// # Safety
    /// `uc` must point to a valid `ucontext_t`.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    pub(crate) unsafe fn from_ucontext(uc: *const libc::ucontext_t) -> Self {
        // SAFETY: caller's contract.
        let g = unsafe { &(*uc).uc_mcontext.gregs };
        Self {
            pc: g[libc::REG_RIP as usize] as u64,
            sp: g[libc::REG_RSP as usize] as u64,
            fp: g[libc::REG_RBP as usize] as u64,
            lr: 0,
        }
    }

    /// Reads the registers from the `ucontext_t` an `SA_SIGINFO` handler receives.
    ///
    /// # Safety
    /// `uc` must point to a valid `ucontext_t`.
    #[cfg(all(target_arch = "aarch64", target_os = "linux"))]
    pub(crate) unsafe fn from_ucontext(uc: *const libc::ucontext_t) -> Self {
        // SAFETY: caller's contract.
        let m = unsafe { &(*uc).uc_mcontext };
        Self {
            pc: m.pc,
            sp: m.sp,
            fp: m.regs[29],
            lr: m.regs[30],
        }
    }
}

/// Unwinds the stack a signal interrupted (its registers read from the signal's `ucontext_t`
/// with [`InterruptedRegs::from_ucontext`]), writing the interrupted pc and then return
/// addresses (innermost first) to `out`. Async-signal-safe (module docs).
///
/// With `stack == None` only the pc is written. The result is `truncated` unless the walk
/// reached the outermost frame.
///
/// # Safety
/// `stack` must only contain memory that stays mapped and readable for the duration of the
/// call (as [`StackMap::bounds`](crate::stack::stack_bounds::StackMap::bounds) gives for the
/// interrupted SP).
pub(crate) unsafe fn unwind_from_regs(
    regs: InterruptedRegs,
    unwinder: &NativeUnwinder,
    cache: &mut NativeCache,
    stack: Option<StackBounds>,
    out: &mut [u64],
) -> UnwindResult {
    let Some(bounds) = stack.filter(|b| b.lo == regs.sp && b.hi > b.lo) else {
        return UnwindResult::leaf_only(regs.pc, out, StopReason::NoStackBounds);
    };
    let mut read = |addr: u64| -> Result<u64, ()> {
        if bounds.allows(addr) {
            // SAFETY: `addr` is an aligned word inside `bounds`, mapped per the contract.
            Ok(unsafe { std::ptr::read_volatile(addr as *const u64) })
        } else {
            Err(())
        }
    };
    #[cfg(target_arch = "x86_64")]
    let start = framehop::x86_64::UnwindRegsX86_64::new(regs.pc, regs.sp, regs.fp);
    #[cfg(target_arch = "aarch64")]
    let start = framehop::aarch64::UnwindRegsAarch64::new_with_ptr_auth_mask(
        framehop::aarch64::PtrAuthMask::from_max_known_address(unwinder.max_known_code_address()),
        regs.lr,
        regs.sp,
        regs.fp,
    );
    let mut frames = unwinder.iter_frames(regs.pc, start, cache, &mut read);
    let mut depth = 0;
    loop {
        let Some(slot) = out.get_mut(depth) else {
            return UnwindResult {
                depth,
                truncated: true,
                reason: StopReason::BufferFull,
            };
        };
        match frames.next() {
            Ok(Some(frame)) => {
                *slot = frame.address();
                depth += 1;
            }
            Ok(None) => {
                return UnwindResult {
                    depth,
                    truncated: false,
                    reason: StopReason::EndOfStack,
                }
            }
            Err(e) => {
                let reason = match e {
                    framehop::Error::CouldNotReadStack(a) => StopReason::StackReadOutOfBounds(a),
                    e => StopReason::Unwind(e),
                };
                return UnwindResult {
                    depth,
                    truncated: true,
                    reason,
                };
            }
        }
    }
}
