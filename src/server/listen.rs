//! The accept loop: connection caps with a clean refusal, per-connection timeouts and lifetime,
//! graceful shutdown. Request-level policy (auth, request timeout, audit) is the router's.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
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
use super::slots::{Admitted, Refused, Slots};
use crate::config::Limits;

/// Pause after an accept error that is not about one connection (EMFILE, ENFILE, ENOBUFS…).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Least time between two warnings of the same kind; the ones between are counted.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` is true (or its sender is dropped), then drains
/// connections for up to `limits.shutdown_grace` and drops the rest. Every request carries
/// `ConnectInfo<SocketAddr>`. With `tls`, every connection is HTTPS.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<super::TlsHandle>,
    shutdown: watch::Receiver<bool>,
) {
    let slots = Slots::new(
        limits.max_connections,
        limits.max_connections_per_client,
        limits.reserved_for_new_clients,
        tls.is_some(),
    );
    let per_ip_answer = refuse::response(&format!(
        "this client already holds {} connections to the admin server, its limit, each answering a request; retry when one ends",
        limits.max_connections_per_client
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
        max_lifetime: limits.max_connection_lifetime,
        lifetime_grace: limits.request_timeout,
        #[cfg(feature = "tls")]
        tls: tls.clone(),
        #[cfg(feature = "tls")]
        handshake_timeout: limits.tls_handshake_timeout,
    });
    #[cfg(not(feature = "tls"))]
    let _ = tls;
    let mut tasks = JoinSet::new();
    let mut refusals = Tally::default();
    let mut evictions = Tally::default();
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
        match slots.try_admit(peer.ip(), stream.as_raw_fd()) {
            Ok(Admitted { slot, evicted }) => {
                if evicted {
                    if let Some(n) = evictions.note() {
                        tracing::warn!(target: "prodbg", client = %peer.ip(), evicted = n, "a client at its connection cap opened another: its oldest idle or unfinished connection was closed to admit it");
                    }
                }
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
                // Let the new connection start before the next accept.
                tokio::task::yield_now().await;
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
                #[cfg(feature = "tls")]
                if let Some(tls) = &cfg.tls {
                    refuse::refuse_tls(
                        stream,
                        answer,
                        tls.clone(),
                        limits.tls_handshake_timeout,
                        &lingering,
                        &mut tasks,
                    );
                    continue;
                }
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
