//! Option types: the timeouts and caps that bound the admin server.

use std::time::Duration;

pub(crate) mod env;

/// Timeouts and caps that keep the admin server from hurting its host.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// Longest a request may take from arrival to response, profiles included. Default 90 s.
    pub request_timeout: Duration,
    /// Longest a client may take to send the request line and headers (slowloris). Default 5 s.
    pub header_read_timeout: Duration,
    /// Longest a TLS handshake may take, from the connection's first byte (feature `tls`); the
    /// connection holds its slot meanwhile and counts as unfinished for eviction. Default 5 s.
    pub tls_handshake_timeout: Duration,
    /// Longest a client may take to send the whole request body, from the request's arrival
    /// (not per chunk); past it the request is answered 408. Default 10 s.
    pub body_read_timeout: Duration,
    /// Largest request body accepted, in bytes. Default 64 KiB.
    pub max_body_bytes: usize,
    /// Largest request head (line + headers) accepted, in bytes. Default 16 KiB.
    pub max_header_bytes: usize,
    /// Requests answered at once; more get 429. Default 16.
    pub max_concurrent_requests: usize,
    /// Requests of `admin`-scope tokens answered beyond `max_concurrent_requests`, so tokens of
    /// lower scope filling every slot never make the operator wait. Default 4.
    pub reserved_for_admin: usize,
    /// Open connections at once; more get a `503` and are closed (never a silent drop).
    /// Default 128: each holds one of the *host's* file descriptors.
    pub max_connections: usize,
    /// Open connections per client IP (IPv6: per /64). A client at its cap that opens another
    /// has its oldest connection that is idle or still sending its request head closed to make
    /// room; only when all are answering requests is the new one refused with a `503`.
    /// Default 16. Keep it at most `max_connections - reserved_for_new_clients`.
    pub max_connections_per_client: usize,
    /// The last this many connection slots go only to clients holding fewer than 2, so a new
    /// operator gets in while one client fills the rest. Default 16.
    pub reserved_for_new_clients: usize,
    /// Longest a connection may sit idle between requests. Default 30 s.
    pub idle_timeout: Duration,
    /// Longest a response write may make no progress (a client that stopped reading) before
    /// the connection is reset. Default 10 s.
    pub write_timeout: Duration,
    /// Age after which a connection takes no new request and closes after the current one.
    /// Default 10 min.
    pub max_connection_lifetime: Duration,
    /// Requests one token may have in flight; more get 429, so one token cannot starve the
    /// others. Default 8.
    pub max_requests_per_token: usize,
    /// Invalid credentials per client IP per minute before that client is locked for the rest
    /// of the minute: its credentials are then checked only against the tokens already used
    /// validly from its address, and anything else (a correct guess included) gets 429. Health
    /// probes never touch it. `0` disables. Default 20.
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
            tls_handshake_timeout: Duration::from_secs(5),
            body_read_timeout: Duration::from_secs(10),
            max_body_bytes: 64 * 1024,
            max_header_bytes: 16 * 1024,
            max_concurrent_requests: 16,
            reserved_for_admin: 4,
            max_connections: 128,
            max_connections_per_client: 16,
            reserved_for_new_clients: 16,
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            max_connection_lifetime: Duration::from_secs(600),
            max_requests_per_token: 8,
            auth_failures_per_minute: 20,
            max_profile_seconds: 60,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}
