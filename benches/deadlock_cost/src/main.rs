//! `deadlock_cost THREADS ITERATIONS`: THREADS threads each lock and unlock one shared
//! `parking_lot::Mutex` ITERATIONS times (uncontended with one thread); prints the wall time per
//! lock + unlock pair as `ns/op N`. Built with and without `--features detect` (parking_lot's
//! `deadlock_detection`) by `benches/deadlock_cost.rs`.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::Instant;

use parking_lot::Mutex;

fn hammer(m: &Mutex<u64>, n: u64) {
    for _ in 0..n {
        *black_box(m).lock() += 1;
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut arg = |what: &str| -> u64 {
        args.next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("usage: deadlock_cost THREADS ITERATIONS (no {what})"))
    };
    let (threads, n) = (arg("THREADS").max(1), arg("ITERATIONS"));
    let m = Mutex::new(0u64);
    hammer(&m, n / 10); // warm up
    let start = Barrier::new(threads as usize + 1);
    let took = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    hammer(&m, n);
                })
            })
            .collect();
        start.wait();
        let t0 = Instant::now();
        workers.into_iter().for_each(|w| w.join().expect("worker"));
        t0.elapsed()
    });
    assert_eq!(*m.lock(), n / 10 + threads * n);
    println!("ns/op {:.3}", took.as_nanos() as f64 / (threads * n) as f64);
}
