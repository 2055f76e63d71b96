//! Who holds a pool's connections: one slot per connection checked out through a
//! [`Holders`](super::Holders) wrapper, written at checkout and cleared at return, read by
//! `/debug/pools`, `/debug/pprof/pool_held` and the leak scan.
//!
//! A slot keeps what is cheap to take at the acquire call: the call site (`#[track_caller]`),
//! a code address inside the calling function (named later, off the hot path), the tracing
//! layer's label word (span name and route), the Tokio task id and the clock reading. No lock
//! and no allocation: a claim is one compare-and-swap on a free slot, a return one store.
//! Readers check a slot's generation before and after reading it (a seqlock), so a holder
//! returned meanwhile is skipped, never torn.

use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::layer::clock;

/// Most holders one pool tracks (a pool bigger than this counts the rest as untracked).
pub(crate) const MAX_TRACKED: usize = 4096;

const PHASE: u64 = 0b11;
const FREE: u64 = 0;
const WRITING: u64 = 1;
const HELD: u64 = 2;

/// One checked-out connection's slot, alone on its cache line.
#[repr(align(64))]
struct Slot {
    /// `generation << 2 | phase`.
    state: AtomicU64,
    /// `&'static Location` of the acquire call, as an address.
    site: AtomicUsize,
    /// A return address inside the calling function (0 when unknown).
    pc: AtomicU64,
    /// The tracing layer's label word of the innermost entered span.
    labels: AtomicU64,
    /// The Tokio task id (0 outside a task).
    task: AtomicU64,
    /// [`clock::now`] when the connection was handed out.
    since: AtomicU64,
    /// Set once the leak warning for this hold was emitted.
    flagged: AtomicBool,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            state: AtomicU64::new(FREE),
            site: AtomicUsize::new(0),
            pc: AtomicU64::new(0),
            labels: AtomicU64::new(0),
            task: AtomicU64::new(0),
            since: AtomicU64::new(0),
            flagged: AtomicBool::new(false),
        }
    }
}

/// What the acquire call knew about its caller, taken before the acquire awaits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller {
    pub(crate) site: &'static Location<'static>,
    pub(crate) pc: u64,
    pub(crate) labels: u64,
    pub(crate) task: u64,
}

impl Caller {
    /// The caller of a `#[track_caller]` acquire wrapper: its call site, `pc` (an address
    /// inside it), and the current span labels and Tokio task.
    #[track_caller]
    #[inline(always)]
    pub(crate) fn here(pc: u64) -> Caller {
        Caller {
            site: Location::caller(),
            pc,
            labels: crate::layer::thread::current_word(),
            task: task_id(),
        }
    }
}

/// The current Tokio task's id as a number (0 outside a task). tokio's `Id` shows its number
/// only through `Display` and `Hash`; its `Hash` writes exactly that `u64`.
fn task_id() -> u64 {
    struct Take(u64);
    impl std::hash::Hasher for Take {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 = self.0.rotate_left(8) ^ u64::from(*b);
            }
        }
        fn write_u64(&mut self, v: u64) {
            self.0 = v;
        }
    }
    match tokio::task::try_id() {
        Some(id) => {
            let mut h = Take(0);
            std::hash::Hash::hash(&id, &mut h);
            h.0
        }
        None => 0,
    }
}

/// A claimed slot: [`HolderTable::release`] clears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claim {
    index: u32,
    /// The state written at claim; a release only clears that hold.
    state: u64,
}

/// One connection out, as read from its slot.
#[derive(Debug, Clone)]
pub(crate) struct Hold {
    pub(crate) site: &'static Location<'static>,
    pub(crate) pc: u64,
    pub(crate) labels: u64,
    pub(crate) task: u64,
    /// Clock ticks when it was handed out.
    pub(crate) since: u64,
    pub(crate) flagged: bool,
    slot: u32,
    state: u64,
}

/// The slots of one pool; sized once to the pool's maximum.
pub(crate) struct HolderTable {
    slots: Box<[Slot]>,
    /// Holds that found every slot taken (a pool grown past the size it had at first use).
    untracked: AtomicU64,
    /// Holds that crossed the leak threshold, since the table was made.
    leaks_total: AtomicU64,
}

impl std::fmt::Debug for HolderTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HolderTable")
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl HolderTable {
    /// A table for a pool of at most `capacity` connections (1..=[`MAX_TRACKED`]).
    pub(crate) fn new(capacity: usize) -> HolderTable {
        clock::init();
        let n = capacity.clamp(1, MAX_TRACKED);
        HolderTable {
            slots: (0..n).map(|_| Slot::new()).collect(),
            untracked: AtomicU64::new(0),
            leaks_total: AtomicU64::new(0),
        }
    }

    /// Records a connection handed to `caller` at clock reading `now`; `None` (counted as
    /// untracked) when every slot is taken.
    #[inline]
    pub(crate) fn claim(&self, caller: &Caller, now: u64) -> Option<Claim> {
        let n = self.slots.len();
        // Start anywhere (the clock's low bits), so concurrent claims rarely meet and no
        // shared counter is touched.
        let start = (now as usize ^ caller.task as usize) % n;
        for k in 0..n {
            let i = (start + k) % n;
            let slot = &self.slots[i];
            let s = slot.state.load(Ordering::Relaxed);
            if s & PHASE != FREE {
                continue;
            }
            let writing = ((s & !PHASE) + 4) | WRITING;
            if slot
                .state
                .compare_exchange(s, writing, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            slot.site
                .store(caller.site as *const _ as usize, Ordering::Relaxed);
            slot.pc.store(caller.pc, Ordering::Relaxed);
            slot.labels.store(caller.labels, Ordering::Relaxed);
            slot.task.store(caller.task, Ordering::Relaxed);
            slot.since.store(now, Ordering::Relaxed);
            slot.flagged.store(false, Ordering::Relaxed);
            let held = (writing & !PHASE) | HELD;
            slot.state.store(held, Ordering::Release);
            return Some(Claim {
                index: i as u32,
                state: held,
            });
        }
        self.untracked.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Clears a claim. For a hold that had been flagged as a leak, returns its site and since
    /// when it was held (clock ticks), for the "returned" event.
    #[inline]
    pub(crate) fn release(&self, claim: Claim) -> Option<(&'static Location<'static>, u64)> {
        let slot = &self.slots[claim.index as usize];
        let flagged = slot.flagged.load(Ordering::Relaxed).then(|| {
            let site = slot.site.load(Ordering::Relaxed) as *const Location<'static>;
            // SAFETY: stored from a `&'static Location` by this claim, which still owns the slot.
            (unsafe { &*site }, slot.since.load(Ordering::Relaxed))
        });
        // Only this claim's owner moves the slot out of HELD, so a plain store is enough.
        slot.state
            .store((claim.state & !PHASE) | FREE, Ordering::Release);
        flagged
    }

    /// Counts one untracked hold's return.
    pub(crate) fn release_untracked(&self) {
        let _ = self
            .untracked
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Holds out now that found no slot.
    pub(crate) fn untracked(&self) -> u64 {
        self.untracked.load(Ordering::Relaxed)
    }

    /// Holds flagged as leaks since the table was made.
    pub(crate) fn leaks_total(&self) -> u64 {
        self.leaks_total.load(Ordering::Relaxed)
    }

    /// Every connection out now (consistent per slot; holds returned meanwhile are skipped).
    pub(crate) fn holds(&self) -> Vec<Hold> {
        let mut out = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let s1 = slot.state.load(Ordering::Acquire);
            if s1 & PHASE != HELD {
                continue;
            }
            let site = slot.site.load(Ordering::Relaxed);
            let hold = Hold {
                // SAFETY: `site` was stored from a `&'static Location` while this generation was
                // being written; the generation check below discards a slot rewritten meanwhile.
                site: unsafe { &*(site as *const Location<'static>) },
                pc: slot.pc.load(Ordering::Relaxed),
                labels: slot.labels.load(Ordering::Relaxed),
                task: slot.task.load(Ordering::Relaxed),
                since: slot.since.load(Ordering::Relaxed),
                flagged: slot.flagged.load(Ordering::Relaxed),
                slot: i as u32,
                state: s1,
            };
            std::sync::atomic::fence(Ordering::Acquire);
            if slot.state.load(Ordering::Relaxed) == s1 && site != 0 {
                out.push(hold);
            }
        }
        out
    }

    /// Marks `hold` as a reported leak; `false` if it was returned meanwhile or already marked.
    pub(crate) fn flag(&self, hold: &Hold) -> bool {
        let slot = &self.slots[hold.slot as usize];
        if slot.state.load(Ordering::Acquire) != hold.state {
            return false;
        }
        let first = !slot.flagged.swap(true, Ordering::Relaxed);
        if first {
            self.leaks_total.fetch_add(1, Ordering::Relaxed);
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn caller() -> Caller {
        Caller::here(0x1234)
    }

    #[test]
    fn claims_fill_the_table_then_count_untracked_and_release_frees() {
        let t = HolderTable::new(2);
        let c = caller();
        let a = t.claim(&c, 10).unwrap();
        let b = t.claim(&c, 20).unwrap();
        assert_ne!(a.index, b.index);
        assert!(t.claim(&c, 30).is_none());
        assert_eq!(t.untracked(), 1);
        t.release_untracked();
        assert_eq!(t.untracked(), 0);
        let holds = t.holds();
        assert_eq!(holds.len(), 2);
        assert_eq!(holds[0].site.file(), file!());
        assert_eq!(holds[0].pc, 0x1234);
        assert_eq!(t.release(a), None);
        let holds = t.holds();
        assert_eq!(holds.len(), 1);
        assert_eq!(holds[0].since, 20);
        assert!(t.flag(&holds[0]));
        assert!(!t.flag(&holds[0]), "flagged once");
        assert_eq!(t.leaks_total(), 1);
        assert_eq!(
            t.release(b).map(|(_, since)| since),
            Some(20),
            "a flagged hold says so on return"
        );
        assert!(t.holds().is_empty());
    }

    #[test]
    fn a_stale_hold_cannot_be_flagged_after_its_slot_is_reused() {
        let t = HolderTable::new(1);
        let c = caller();
        let a = t.claim(&c, 1).unwrap();
        let stale = t.holds().pop().unwrap();
        t.release(a);
        let b = t.claim(&c, 2).unwrap();
        assert!(!t.flag(&stale), "the slot now holds another connection");
        assert_eq!(t.release(b), None);
    }

    #[test]
    fn concurrent_claims_and_releases_keep_the_count() {
        let t = std::sync::Arc::new(HolderTable::new(8));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    let c = caller();
                    for i in 0..10_000 {
                        let a = t.claim(&c, i).unwrap();
                        let b = t.claim(&c, i).unwrap();
                        t.release(a);
                        t.release(b);
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert!(t.holds().is_empty());
        assert_eq!(t.untracked(), 0);
    }
}
