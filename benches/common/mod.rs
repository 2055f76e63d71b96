//! What the profiler benches share: the token, the round count and an admin server.
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
