//! CPU-bound work for the host workloads.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `iters` steps of a linear congruential generator. The CPU profile bench counts the samples
/// in a function named `compute_step` as the compute part of its workload.
#[inline(never)]
pub fn compute_step(iters: u64) -> u64 {
    let mut x = 1u64;
    for i in 0..iters {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}

/// `n` steps of xorshift: register-only work whose speed does not depend on where the stack or
/// heap happen to be (a loop through memory varied by ±5 % from one process to the next).
#[inline(never)]
pub fn xorshift(n: u64) -> u64 {
    let mut x = black_box(n) | 1;
    for _ in 0..black_box(n) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

/// Units per second of `threads` threads named `{name}-{i}`, each running `unit` in a loop, over
/// `len`.
pub fn busy_threads<F>(threads: usize, name: &str, len: Duration, unit: F) -> f64
where
    F: Fn() -> u64 + Copy + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{t}"))
                .spawn(move || {
                    let mut units = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        black_box(unit());
                        units += 1;
                    }
                    units
                })
                .expect("spawn")
        })
        .collect();
    std::thread::sleep(len);
    stop.store(true, Ordering::Relaxed);
    let units: u64 = handles.into_iter().map(|h| h.join().expect("join")).sum();
    units as f64 / t0.elapsed().as_secs_f64()
}
