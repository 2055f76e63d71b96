//! One accepted connection: first-byte wait, the TLS handshake on a TLS listener, HTTP/1.1
//! with the guarded IO, lifetime cap and graceful close.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::sleep_until;
use tower::ServiceExt;

use super::io::{after, Activity, Deadlines, GuardedIo, InFlight};
use super::slots::Slot;

/// Longest an evicted connection that is not answering a request may take to close (flushing
/// the tail of its last response).
const EVICT_GRACE: Duration = Duration::from_millis(250);

/// What every connection task needs, shared.
#[derive(Debug)]
pub(super) struct ConnConfig {
    pub http: http1::Builder,
    pub deadlines: Deadlines,
    pub max_lifetime: Duration,
    pub lifetime_grace: Duration,
    /// The TLS state on a TLS listener.
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<crate::tls::Tls>>,
    #[cfg(feature = "tls")]
    pub handshake_timeout: Duration,
}

/// Serves one connection until it closes, times out, outlives its cap or the server stops.
/// On a TLS listener the handshake comes first, under the same slot, eviction and shutdown,
/// within `tls_handshake_timeout`; a plaintext request there is answered with a 400 saying
/// to use `https://`.
pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    app: Router,
    cfg: Arc<ConnConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    let ticket = slot.ticket();
    let _slot = slot;
    // Set when the slot table gives this connection's place to a newer one of its client.
    let evicted = ticket.evicted();
    tokio::pin!(evicted);
    let end_of_life = after(cfg.max_lifetime);
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stop);
    // Until its first byte a connection costs only this future: hyper's buffers come later.
    // (`peek`, not `readable`: readiness of a new socket can be a false positive.)
    let mut probe = [0u8; 1];
    let first_byte = tokio::time::timeout(cfg.deadlines.header_read, stream.peek(&mut probe));
    tokio::select! {
        r = first_byte => if !matches!(r, Ok(Ok(1..))) { return },
        _ = &mut stop => return,
        _ = &mut evicted => return,
    }

    let activity = Arc::new(Activity::new(ticket.clone()));
    let io = GuardedIo::new(stream, activity.clone(), cfg.deadlines);
    #[cfg(feature = "tls")]
    if let Some(tls) = &cfg.tls {
        if !crate::tls::accept::is_tls(probe[0]) {
            super::refuse::plaintext_to_tls(io).await;
            return;
        }
        let handshake = tokio::time::timeout(cfg.handshake_timeout, tls.accept(io));
        let (io, who) = tokio::select! {
            r = handshake => match r {
                Ok(Ok(done)) => done,
                Ok(Err(e)) => {
                    tracing::debug!(target: "prodbg", %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(target: "prodbg", %peer, "TLS handshake timed out");
                    return;
                }
            },
            _ = &mut stop => return,
            _ = &mut evicted => return,
        };
        let who = who.map(super::guard::CertIdentity);
        let ends = Ends {
            evicted,
            stop,
            end_of_life,
        };
        return http(TokioIo::new(io), who, peer, activity, app, &cfg, ends).await;
    }
    let ends = Ends {
        evicted,
        stop,
        end_of_life,
    };
    http(TokioIo::new(io), None, peer, activity, app, &cfg, ends).await;
}

/// What ends a connection besides its client: eviction, the server's stop, its lifetime.
struct Ends<'a, E, S> {
    evicted: Pin<&'a mut E>,
    stop: Pin<&'a mut S>,
    end_of_life: tokio::time::Instant,
}

/// HTTP/1.1 over `io` (the guarded TCP stream, or TLS over it) until the connection ends.
async fn http<I, E, S>(
    io: I,
    cert: Option<super::guard::CertIdentity>,
    peer: SocketAddr,
    activity: Arc<Activity>,
    app: Router,
    cfg: &ConnConfig,
    ends: Ends<'_, E, S>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    E: std::future::Future<Output = ()>,
    S: std::future::Future<Output = ()>,
{
    let Ends {
        mut evicted,
        mut stop,
        end_of_life,
    } = ends;
    let busy = activity.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let in_flight = activity.begin();
        req.extensions_mut().insert(ConnectInfo(peer));
        if let Some(c) = &cert {
            req.extensions_mut().insert(c.clone());
        }
        let answer = app.clone().oneshot(req);
        async move {
            let response = answer.await?;
            Ok::<_, Infallible>(response.map(|body| Tracked {
                body,
                _in_flight: in_flight,
            }))
        }
    });
    let conn = cfg.http.serve_connection(io, service);
    tokio::pin!(conn);
    let lifetime = sleep_until(end_of_life);
    tokio::pin!(lifetime);
    let mut drain: Option<Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        tokio::select! {
            biased;
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(target: "prodbg", %peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = &mut lifetime, if drain.is_none() => {
                tracing::debug!(target: "prodbg", %peer, "connection reached its maximum lifetime; closing after the current response");
                conn.as_mut().graceful_shutdown();
                drain = Some(Box::pin(sleep_until(after(cfg.lifetime_grace))));
            }
            _ = stop.as_mut(), if drain.is_none() => {
                conn.as_mut().graceful_shutdown();
                drain = Some(Box::pin(sleep_until(after(cfg.lifetime_grace))));
            }
            _ = evicted.as_mut(), if drain.is_none() => {
                tracing::debug!(target: "prodbg", %peer, "connection evicted for a newer one of its client");
                // Idle: closes at once, once the last response is flushed. Unfinished head: cut
                // after EVICT_GRACE. A request that began as it was chosen: answered, then closed.
                conn.as_mut().graceful_shutdown();
                let grace = if busy.busy() { cfg.lifetime_grace } else { EVICT_GRACE };
                drain = Some(Box::pin(sleep_until(after(grace))));
            }
            _ = async { if let Some(d) = drain.as_mut() { d.await } }, if drain.is_some() => return,
        }
    }
}

/// The response body, holding the connection's in-flight mark until hyper drops it.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
