//! Where an interrupted thread's stack ends, known before the signal arrives.
//!
//! The unwinder may only read `[interrupted SP, stack top)`. The top is found from a
//! [`StackMap`]: the readable, writable, private mappings that can hold a stack (anonymous,
//! `[stack]`, `[heap]`, named `[anon:…]`), taken from `/proc/self/maps` **outside** the
//! handler. In the handler, [`StackMap::bounds`] binary-searches the interrupted SP (no
//! allocation, no system call) and tightens the top with the thread pointer.
//!
//! # Why this is safe, and why not the alternatives
//! - The interrupted thread is running on its stack, so the mapping containing SP cannot be
//!   unmapped under it; everything between SP and that thread's true stack top is mapped.
//! - The snapshot's mapping may extend *above* the true top if the kernel merged the stack's
//!   VMA with an adjacent anonymous one that was unmapped since. Two defences: glibc puts the
//!   thread descriptor (TCB, the thread pointer) at the top of each thread's own stack mapping
//!   (x86_64 `%fs:0`, aarch64 `tpidr_el0`; also for `pthread_attr_setstack` stacks), so when
//!   the thread pointer lies above SP inside the same mapping it becomes the top: exact and
//!   inside memory the thread owns. And a correct unwind never reads past the outermost frame
//!   (`clone3`/`_start` mark the return address undefined); only a wrong CFI or a garbage frame
//!   pointer could reach that tail.
//! - The main thread's `[stack]` mapping grows down after the snapshot, so its lookup range
//!   extends `RLIMIT_STACK` below the start seen; its top never moves.
//! - A thread whose stack was mapped after the snapshot is not found: its samples keep the leaf
//!   only (truncated), never a guessed bound. Refresh the map before arming a new thread's
//!   timer (the thread exists, so its stack is mapped) to avoid that.
//! - `pthread_getattr_np` is not usable from the handler (it locks the thread descriptor,
//!   allocates a CPU set, and for the main thread parses `/proc/self/maps` with stdio), and
//!   from outside it needs a `pthread_t`, which a profiler that discovers threads in
//!   `/proc/self/task` does not have. `/proc/self/task/<tid>/stat`'s `startstack` is the main
//!   thread's for every thread, and `kstkesp` is zero on current kernels.

use std::io;

/// The readable range of one interrupted stack: `[lo, hi)`, `lo` = the interrupted SP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StackBounds {
    /// Lowest readable address (the interrupted stack pointer).
    pub(crate) lo: u64,
    /// One past the highest readable address (the stack top).
    pub(crate) hi: u64,
}

impl StackBounds {
    /// Whether the 8-byte, 8-aligned word at `addr` lies inside the bounds.
    #[inline]
    pub(crate) fn allows(&self, addr: u64) -> bool {
        addr & 7 == 0 && addr >= self.lo && addr.checked_add(8).is_some_and(|end| end <= self.hi)
    }
}

/// Mappings that may hold a thread's stack, sorted and disjoint. Built outside signal
/// handlers; [`bounds`](Self::bounds) is async-signal-safe.
#[derive(Debug, Clone, Default)]
pub(crate) struct StackMap {
    /// `(lookup_start, end)`; `lookup_start` is below the mapping for `[stack]`.
    ranges: Box<[(u64, u64)]>,
}

impl StackMap {
    /// Reads `/proc/self/maps` (about 50 µs for a few hundred mappings).
    pub(crate) fn snapshot() -> io::Result<StackMap> {
        let text = std::fs::read_to_string("/proc/self/maps")?;
        Ok(Self::parse(&text, stack_rlimit()))
    }

    /// Parses `/proc/<pid>/maps` text; `[stack]` gets `grow` bytes of lookup room below it.
    pub(crate) fn parse(maps: &str, grow: u64) -> StackMap {
        let mut ranges: Vec<(u64, u64)> = maps
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_ascii_whitespace();
                let range = fields.next()?;
                let perms = fields.next()?.as_bytes();
                let path = fields.nth(3).unwrap_or("");
                let (start, end) = range.split_once('-')?;
                let start = u64::from_str_radix(start, 16).ok()?;
                let end = u64::from_str_radix(end, 16).ok()?;
                let rw_private =
                    perms.len() >= 4 && perms[0] == b'r' && perms[1] == b'w' && perms[3] == b'p';
                let stacky = path.is_empty()
                    || path == "[stack]"
                    || path == "[heap]"
                    || path.starts_with("[anon");
                (rw_private && stacky && start < end).then(|| {
                    let lookup = if path == "[stack]" {
                        start.saturating_sub(grow)
                    } else {
                        start
                    };
                    (lookup, end)
                })
            })
            .collect();
        ranges.sort_unstable();
        // The [stack] lookup extension must not overlap the mapping below it.
        for i in 1..ranges.len() {
            let prev_end = ranges[i - 1].1;
            if ranges[i].0 < prev_end {
                ranges[i].0 = prev_end;
            }
        }
        StackMap {
            ranges: ranges.into_boxed_slice(),
        }
    }

    /// Number of candidate mappings.
    #[cfg(test)]
    #[allow(clippy::len_without_is_empty)]
    pub(crate) fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Bounds for a stack whose SP is `sp`, on a thread whose thread pointer is `tp` (pass
    /// [`thread_pointer`] from the handler; 0 if unknown). Async-signal-safe.
    pub(crate) fn bounds(&self, sp: u64, tp: u64) -> Option<StackBounds> {
        let i = self.ranges.partition_point(|&(start, _)| start <= sp);
        let &(_, end) = self.ranges.get(i.checked_sub(1)?)?;
        if sp >= end {
            return None;
        }
        let hi = if tp > sp && tp <= end { tp } else { end };
        Some(StackBounds { lo: sp, hi })
    }
}

/// The calling thread's thread pointer (glibc's TCB address); 0 where unknown.
/// Async-signal-safe: one register read (aarch64) or one `%fs`-relative load (x86_64).
#[inline]
pub(crate) fn thread_pointer() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        let tp: u64;
        // SAFETY: on x86_64 Linux `%fs:0` holds the TCB's self pointer (the TLS ABI).
        unsafe {
            std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags))
        };
        tp
    }
    #[cfg(target_arch = "aarch64")]
    {
        let tp: u64;
        // SAFETY: reading tpidr_el0 has no side effects.
        unsafe {
            std::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nostack, nomem, preserves_flags))
        };
        tp
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        0
    }
}

/// The soft `RLIMIT_STACK` (how far the main stack may grow), 8 MB when unlimited/unknown.
fn stack_rlimit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid out-parameter.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut r) } == 0;
    if ok && r.rlim_cur != libc::RLIM_INFINITY && r.rlim_cur > 0 {
        r.rlim_cur
    } else {
        8 << 20
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0-55e0 r-xp 00000000 fe:00 1 /bin/x
7f00-7f10 ---p 00000000 00:00 0
7f10-7f90 rw-p 00000000 00:00 0
7fa0-7fb0 rw-p 00000000 fe:00 2 /lib/libc.so.6
7ff0-8000 rw-p 00000000 00:00 0                          [stack]
";

    #[test]
    fn finds_anonymous_and_main_stack_and_tightens_with_tp() {
        let m = StackMap::parse(MAPS, 0x40);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m.bounds(0x7f20, 0),
            Some(StackBounds {
                lo: 0x7f20,
                hi: 0x7f90
            })
        );
        assert_eq!(
            m.bounds(0x7f20, 0x7f80),
            Some(StackBounds {
                lo: 0x7f20,
                hi: 0x7f80
            })
        );
        assert_eq!(
            m.bounds(0x7f20, 0x9000).map(|b| b.hi),
            Some(0x7f90),
            "tp elsewhere"
        );
        assert_eq!(m.bounds(0x7fa8, 0), None, "file-backed data is no stack");
        assert_eq!(
            m.bounds(0x7fc0, 0).map(|b| b.hi),
            Some(0x8000),
            "main stack grew down"
        );
        assert_eq!(m.bounds(0x7f08, 0), None, "guard page");
    }

    #[test]
    fn live_thread_stack_is_found() {
        let m = StackMap::snapshot().expect("maps");
        let local = 0u64;
        let sp = std::ptr::from_ref(&local) as u64;
        let b = m.bounds(sp, thread_pointer()).expect("own stack");
        assert!(b.hi > sp && b.hi - sp < 64 << 20);
        assert!(b.allows(sp & !7) && !b.allows(b.hi) && !b.allows((sp & !7) + 1));
    }
}
