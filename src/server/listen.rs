//! The accept loop: connection caps with a clean refusal, per-connection timeouts and lifetime,
//! graceful shutdown. Request-level policy (auth, request timeout, audit) is the router's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::TokioTimer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::conn::{self, ConnConfig};
use super::io::Deadlines;
use super::refuse;
use super::slots::{Refused, Slots};
use crate::config::Limits;

/// Connection limits. The defaults suit an admin server inside a production process.
///
/// **Per-IP cap behind proxies.** `kubectl port-forward`, a service-mesh sidecar, an SSH tunnel
/// or a load balancer makes every operator and scraper behind it one client IP. The per-IP cap
/// is then a budget *shared* by all of them, so it is sized for several people at once (a
/// browser opens up to 6 connections per host; `curl`, `go tool pprof` and Prometheus 1–2 each):
/// 16 by default. If many clients share one proxy, raise it, keeping it at most
/// `max_connections - reserved_for_new_clients`. Anyone behind the same proxy can use up that
/// shared budget; the idle, head and write timeouts then bound how long they hold it. Any local
/// process can also pick its own source address in 127.0.0.0/8, so on loopback the global cap,
/// the reserve and the timeouts are what hold. IPv6 clients are counted per /64.
#[derive(Debug, Clone)]
pub(crate) struct ConnLimits {
    /// Open connections at once. Default 128: each holds a file descriptor of the *host*
    /// process (128, plus up to 64 refusals lingering for 1 s: under 19 % of a common 1024 soft
    /// limit), and an admin server needs a few dozen at most.
    pub max_connections: usize,
    /// Open connections per client IP (IPv6: per /64). Default 16; see above.
    pub max_connections_per_ip: usize,
    /// The last this many slots go only to client IPs holding fewer than 2 connections, so a
    /// new operator gets in even when a few clients fill the rest. Default 16.
    pub reserved_for_new_clients: usize,
    /// Slowloris: a new connection must send its first byte within this of being accepted, and
    /// every request head must be complete within this of its first byte. Default 5 s.
    pub header_read_timeout: Duration,
    /// Longest a connection may sit between requests. Default 30 s: long enough for a 15 s
    /// scrape interval to reuse its connection.
    pub idle_timeout: Duration,
    /// Longest a response write may make no progress (a client that stopped reading); the
    /// connection is then reset. Default 10 s.
    pub write_timeout: Duration,
    /// Age after which a connection takes no new request and closes after the current
    /// response. Default 10 min.
    pub max_lifetime: Duration,
    /// How long a response in flight at `max_lifetime` (or at shutdown) may still take before
    /// the connection is dropped; bounds a client that reads slowly but never stalls. Default
    /// 90 s, prodbg's request timeout, so an in-flight profile completes.
    pub lifetime_grace: Duration,
    /// Largest request head, in bytes (at least 8192). Default 16 KiB.
    pub max_header_bytes: usize,
    /// How long shutdown waits for in-flight requests before dropping them. Default 5 s.
    pub shutdown_grace: Duration,
}

impl Default for ConnLimits {
    fn default() -> ConnLimits {
        ConnLimits {
            max_connections: 128,
            max_connections_per_ip: 16,
            reserved_for_new_clients: 16,
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            max_lifetime: Duration::from_secs(600),
            lifetime_grace: Duration::from_secs(90),
            max_header_bytes: 16 * 1024,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl From<&Limits> for ConnLimits {
    fn from(l: &Limits) -> ConnLimits {
        ConnLimits {
            max_connections: l.max_connections,
            max_connections_per_ip: l.max_connections_per_client,
            reserved_for_new_clients: l.reserved_for_new_clients,
            header_read_timeout: l.header_read_timeout,
            idle_timeout: l.idle_timeout,
            write_timeout: l.write_timeout,
            max_lifetime: l.max_connection_lifetime,
            lifetime_grace: l.request_timeout,
            max_header_bytes: l.max_header_bytes,
            shutdown_grace: l.shutdown_grace,
        }
    }
}

/// Pause after an accept error that is not about one connection (EMFILE, ENFILE, ENOBUFS…).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Least time between two warnings of the same kind; the ones between are counted.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` is true (or its sender is dropped), then drains
/// connections for up to `limits.shutdown_grace` and drops the rest. Every request carries
/// `ConnectInfo<SocketAddr>`.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: watch::Receiver<bool>,
) {
    let slots = Slots::new(
        limits.max_connections,
        limits.max_connections_per_ip,
        limits.reserved_for_new_clients,
    );
    let per_ip_answer = refuse::response(&format!(
        "this client already holds {} connections to the admin server, its limit; close idle ones or retry shortly",
        limits.max_connections_per_ip
    ));
    let global_answer = refuse::response(&format!(
        "the admin server holds {} connections, its limit; retry shortly",
        limits.max_connections
    ));
    let lingering = Arc::new(Semaphore::new(refuse::MAX_LINGERING));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        // The guarded IO enforces head and idle deadlines; hyper's timer (which runs from the
        // end of one response to the end of the next head) is a backstop that never fires first.
        .header_read_timeout(
            limits
                .header_read_timeout
                .saturating_add(limits.idle_timeout),
        )
        .max_buf_size(limits.max_header_bytes.max(8192));
    let cfg = Arc::new(ConnConfig {
        http,
        deadlines: Deadlines {
            header_read: limits.header_read_timeout,
            idle: limits.idle_timeout,
            write: limits.write_timeout,
        },
        max_lifetime: limits.max_lifetime,
        lifetime_grace: limits.lifetime_grace,
    });
    let mut tasks = JoinSet::new();
    let mut refusals = Tally::default();
    let mut accept_errors = Tally::default();
    let mut stop_rx = shutdown.clone();
    let stop = async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stop);
    loop {
        let (stream, peer): (TcpStream, SocketAddr) = tokio::select! {
            biased;
            _ = &mut stop => break,
            Some(done) = tasks.join_next() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        tracing::error!(target: "prodbg", error = %e, "an admin connection task panicked");
                    }
                }
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    if let Some(n) = accept_errors.note() {
                        tracing::warn!(target: "prodbg", error = %e, failures = n, "accepting admin connections failed; backing off");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        match slots.try_admit(peer.ip()) {
            Ok(slot) => {
                let _ = stream.set_nodelay(true);
                let task = conn::serve(
                    stream,
                    peer,
                    slot,
                    app.clone(),
                    cfg.clone(),
                    shutdown.clone(),
                );
                tasks.spawn(task);
            }
            Err(why) => {
                if let Some(n) = refusals.note() {
                    let (open, clients) = slots.counts();
                    tracing::warn!(target: "prodbg", %peer, reason = ?why, refused = n, open, clients, "admin connections over their cap refused with 503");
                }
                let answer = match why {
                    Refused::PerClient => per_ip_answer.clone(),
                    Refused::Global => global_answer.clone(),
                };
                refuse::refuse(stream, answer, &lingering, &mut tasks);
            }
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(target: "prodbg", open = tasks.len(), "admin connections did not finish within the shutdown grace period; dropping them");
    }
    tasks.shutdown().await;
}

/// Accept errors about one connection (retry at once) rather than about the process.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    )
}

/// Counts events; says when to log (the first, then at most every [`LOG_EVERY`]) with the
/// number since the last log.
#[derive(Debug, Default)]
struct Tally {
    last_log: Option<Instant>,
    count: u64,
}

impl Tally {
    fn note(&mut self) -> Option<u64> {
        self.count += 1;
        if self.last_log.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            return None;
        }
        self.last_log = Some(Instant::now());
        Some(std::mem::take(&mut self.count))
    }
}
