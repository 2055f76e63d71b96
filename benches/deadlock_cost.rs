//! What the `deadlock` feature costs every parking_lot lock in the host binary: it turns on
//! parking_lot's `deadlock_detection`, under which each lock and unlock also records the lock in
//! the thread's list of held locks, whether or not the detector thread runs.
//!
//! A cargo feature is unified across one build, so the two variants are two binaries of the
//! helper crate `benches/deadlock_cost/` (the parking_lot version prodbg's lock has), built with
//! `cargo build --release` with and without `--features detect` into
//! `<target dir>/deadlock_cost/{plain,detect}`. Rows: one thread locking and unlocking an
//! uncontended `parking_lot::Mutex`, and two threads on the same mutex. Each round runs both
//! binaries (each round starts with the other one); the ratio is detect ÷ plain per round, min /
//! median / max over the rounds.
//!
//! ```text
//! ROUNDS=5 cargo bench --bench deadlock_cost      # default 7 rounds
//! ```

pub mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::env::env_u64;
use common::stats::min_median_max;

const VARIANTS: [(&str, &[&str]); 2] = [("plain", &[]), ("detect", &["--features", "detect"])];

/// (label, threads, lock + unlock pairs per thread).
const ROWS: [(&str, u64, u64); 2] = [
    ("1 thread, uncontended", 1, 50_000_000),
    ("2 threads, one mutex", 2, 10_000_000),
];

/// Builds the helper crate as `variant` and returns its binary.
fn build(target: &Path, (variant, features): (&str, &[&str])) -> PathBuf {
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/deadlock_cost/Cargo.toml"
    );
    let dir = target.join(variant);
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "build",
            "--release",
            "--locked",
            "--manifest-path",
            manifest,
        ])
        .args(features)
        .env("CARGO_TARGET_DIR", &dir)
        .status()
        .expect("run cargo");
    assert!(
        status.success(),
        "cargo build of the {variant} helper failed"
    );
    dir.join("release").join("deadlock_cost")
}

/// Nanoseconds per lock + unlock of one run of `bin`.
fn run(bin: &Path, threads: u64, iterations: u64) -> f64 {
    let out = Command::new(bin)
        .args([threads.to_string(), iterations.to_string()])
        .output()
        .expect("run the helper");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}: {text}", bin.display());
    text.strip_prefix("ns/op ")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `ns/op` in the helper's output: {text}"))
}

fn main() {
    let rounds = env_u64("ROUNDS", 7).max(1) as usize;
    // This binary is <target dir>/release/deps/deadlock_cost-<hash>.
    let exe = std::env::current_exe().expect("bench binary path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the target dir above release/deps")
        .join("deadlock_cost");
    let bins = VARIANTS.map(|v| build(&target, v));

    // ns/op per row, variant and round.
    let mut ns = vec![[Vec::new(), Vec::new()]; ROWS.len()];
    for r in 0..rounds {
        for (row, &(_, threads, iterations)) in ns.iter_mut().zip(&ROWS) {
            for k in 0..bins.len() {
                let v = (k + r) % bins.len();
                row[v].push(run(&bins[v], threads, iterations));
            }
        }
    }

    println!(
        "deadlock_cost: parking_lot::Mutex lock + unlock, plain vs deadlock_detection, \
         {rounds} interleaved rounds (min / median / max)"
    );
    println!(
        "{:<24} {:>24} {:>24} {:>24}",
        "", "plain ns/op", "deadlock_detection ns/op", "ratio detect ÷ plain"
    );
    for (&(label, _, _), [plain, detect]) in ROWS.iter().zip(&ns) {
        let ratios = plain.iter().zip(detect).map(|(p, d)| d / p).collect();
        let (p, d, q) = (
            min_median_max(plain.clone()),
            min_median_max(detect.clone()),
            min_median_max(ratios),
        );
        println!(
            "{label:<24} {:>6.2} / {:>6.2} / {:>6.2} {:>6.2} / {:>6.2} / {:>6.2} {:>6.3} / {:>6.3} / {:>6.3}{}",
            p.0,
            p.1,
            p.2,
            d.0,
            d.1,
            d.2,
            q.0,
            q.1,
            q.2,
            if q.0 < 1.0 && q.2 > 1.0 {
                "  (noise: the rounds disagree on which is faster)"
            } else {
                ""
            }
        );
    }
    println!(
        "two threads on one mutex on a shared 2-core machine time the scheduler and the cache \
         line's travel as much as the lock: read that row's spread, not its median"
    );
}
