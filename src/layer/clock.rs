//! A cheap monotonic clock for span timing.
//!
//! Two clock reads per span are most of what timing costs, and `Instant::now` is a vDSO call
//! (~30 ns on a VM). Where the kernel itself times with the CPU's time-stamp counter
//! (`/sys/devices/system/clocksource/clocksource0/current_clocksource` is `tsc`, which it only
//! picks when the counter is constant-rate and synchronised across cores) we read `rdtsc`
//! (~10 ns); everywhere else, nanoseconds since a process-wide `Instant`.
//!
//! Ticks are converted to nanoseconds with a fixed-point factor calibrated against `Instant`
//! once (a 1 ms spin in [`init`]) and refined on every report ([`recalibrate`]).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

const UNINIT: u8 = 0;
const TSC: u8 = 1;
const INSTANT: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(UNINIT);
/// Nanoseconds per tick, 32.32 fixed point.
static NS_PER_TICK: AtomicU64 = AtomicU64::new(1 << 32);
static BASE: OnceLock<(u64, Instant)> = OnceLock::new();

/// Picks the clock source and calibrates it; idempotent and thread-safe.
pub(crate) fn init() {
    if MODE.load(Ordering::Acquire) != UNINIT {
        return;
    }
    // The epoch of INSTANT mode must exist before any tick is taken.
    let _ = epoch();
    let mode = if tsc_trusted() { TSC } else { INSTANT };
    if mode == TSC {
        let t0 = raw_tsc();
        let i0 = Instant::now();
        while i0.elapsed() < Duration::from_millis(1) {
            std::hint::spin_loop();
        }
        let (t1, i1) = (raw_tsc(), Instant::now());
        store_factor(t1.wrapping_sub(t0), (i1 - i0).as_nanos() as u64);
        let _ = BASE.set((t0, i0));
    }
    MODE.store(mode, Ordering::Release);
}

/// Refines the tick rate from the whole time since [`init`] (at least 1 s), so later
/// conversions are accurate to a few parts per million.
pub(crate) fn recalibrate() {
    if let Some(&(t0, i0)) = BASE.get() {
        let (t1, i1) = (raw_tsc(), Instant::now());
        let ns = (i1 - i0).as_nanos() as u64;
        if ns >= 1_000_000_000 {
            store_factor(t1.wrapping_sub(t0), ns);
        }
    }
}

fn store_factor(ticks: u64, ns: u64) {
    if ticks > 0 {
        let f = ((ns as u128) << 32) / ticks as u128;
        NS_PER_TICK.store(f.clamp(1, u64::MAX as u128) as u64, Ordering::Relaxed);
    }
}

/// Now, in ticks of this process's clock (only differences mean anything).
#[inline]
pub(crate) fn now() -> u64 {
    if MODE.load(Ordering::Relaxed) == TSC {
        raw_tsc()
    } else {
        epoch().elapsed().as_nanos() as u64
    }
}

/// A tick difference in nanoseconds.
#[inline]
pub(crate) fn to_nanos(ticks: u64) -> u64 {
    ((ticks as u128 * NS_PER_TICK.load(Ordering::Relaxed) as u128) >> 32) as u64
}

/// The wall-clock time of a tick reading, given a `(ticks, SystemTime)` pair taken together.
pub(crate) fn to_system(at: u64, now_ticks: u64, now_wall: SystemTime) -> SystemTime {
    let back = Duration::from_nanos(to_nanos(now_ticks.saturating_sub(at)));
    now_wall.checked_sub(back).unwrap_or(SystemTime::UNIX_EPOCH)
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn raw_tsc() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86_64.
    #[allow(unused_unsafe)]
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn raw_tsc() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

fn tsc_trusted() -> bool {
    cfg!(target_arch = "x86_64")
        && std::fs::read_to_string(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        )
        .is_ok_and(|s| s.trim() == "tsc")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tick interval converted to nanoseconds lies within the `Instant` readings that
    /// bracket it (give or take the calibration's error): a check of the conversion, not of
    /// how long anything took, so a preempted thread only widens the bracket.
    #[test]
    fn ticks_convert_to_about_the_real_time() {
        init();
        let a0 = Instant::now();
        let t0 = now();
        let a1 = Instant::now();
        std::thread::sleep(Duration::from_millis(50));
        let b0 = Instant::now();
        let t1 = now();
        let b1 = Instant::now();
        let ns = to_nanos(t1 - t0) as f64;
        let (inner, outer) = ((b0 - a1).as_nanos() as f64, (b1 - a0).as_nanos() as f64);
        assert!(
            ns >= inner * 0.9 && ns <= outer * 1.1,
            "{ns} ns not within [{inner}, {outer}]"
        );
    }
}
