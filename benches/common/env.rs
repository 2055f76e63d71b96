//! Settings from the environment.

/// Interleaved rounds: `PRODBG_BENCH_ROUNDS` if set to a positive number, else `default`.
pub fn rounds(default: usize) -> usize {
    std::env::var("PRODBG_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

/// An unsigned number from the environment variable `name`, else `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
