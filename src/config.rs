//! Option types: the timeouts and caps that bound the admin server.

use std::time::Duration;

/// Timeouts and caps that keep the admin server from hurting its host.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// Longest a request may take from arrival to response, profiles included. Default 90 s.
    pub request_timeout: Duration,
    /// Longest a client may take to send the request line and headers (slowloris). Default 5 s.
    pub header_read_timeout: Duration,
    /// Longest a client may take to send the request body. Default 10 s.
    pub body_read_timeout: Duration,
    /// Largest request body accepted, in bytes. Default 64 KiB.
    pub max_body_bytes: usize,
    /// Largest request head (line + headers) accepted, in bytes. Default 16 KiB.
    pub max_header_bytes: usize,
    /// Requests answered at once; more get 429. Default 16.
    pub max_concurrent_requests: usize,
    /// Open connections at once; more are closed on accept. Default 64.
    pub max_connections: usize,
    /// Failed authentications per client IP per minute before it gets 429. `0` disables. Default 20.
    pub auth_failures_per_minute: u32,
    /// Longest `seconds=` a CPU or heap-growth profile may ask for. Default 60, and always less
    /// than `request_timeout`.
    pub max_profile_seconds: u64,
    /// How long shutdown waits for in-flight requests. Default 5 s.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            request_timeout: Duration::from_secs(90),
            header_read_timeout: Duration::from_secs(5),
            body_read_timeout: Duration::from_secs(10),
            max_body_bytes: 64 * 1024,
            max_header_bytes: 16 * 1024,
            max_concurrent_requests: 16,
            max_connections: 64,
            auth_failures_per_minute: 20,
            max_profile_seconds: 60,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}
