//! What the benches share: the token, the round count, an admin server, and the statistics of
//! interleaved rounds.
#![allow(dead_code)]

use prodbg::{Admin, AdminHandle, Scope};

/// The benches' admin token.
pub const SECRET: &str = "bench-secret-0123456789abcdef";

/// Interleaved rounds: `PRODBG_BENCH_ROUNDS` if set to a positive number, else `default`.
pub fn rounds(default: usize) -> usize {
    std::env::var("PRODBG_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

/// An admin server on a free loopback port named `service`, with one admin token ([`SECRET`]).
pub fn admin(service: &str) -> AdminHandle {
    Admin::builder()
        .bind("127.0.0.1:0")
        .service_name(service)
        .token("ops", Scope::Admin, SECRET)
        .spawn()
        .expect("admin server")
}

/// An unsigned number from the environment variable `name`, else `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (min, median, max) of `v`, which must not be empty.
pub fn min_median_max(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[0], v[v.len() / 2], v[v.len() - 1])
}
