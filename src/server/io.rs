//! A TCP stream that enforces the connection's read and write deadlines.
//!
//! Phases, from the reader's point of view:
//! - **head**: a request head has started (or the connection is new); it must be complete
//!   within `header_read_timeout` of its first byte;
//! - **busy**: a request is being answered (from the service call until hyper drops the response
//!   body): no read deadline; request-level timeouts belong to the middleware;
//! - **idle**: between requests; the next head must start within `idle_timeout`.
//!
//! A write that makes no progress for `write_timeout` fails. Head and write timeouts reset the
//! connection (zero linger), so the kernel drops its buffers at once instead of holding them for
//! a client that is not reading.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant, Sleep};

use super::slots::Ticket;

/// Requests in flight on one connection, shared by its service and its [`GuardedIo`]; it
/// tells the slot table (through the connection's [`Ticket`]) when the connection is busy.
#[derive(Debug, Default)]
pub(super) struct Activity {
    in_flight: AtomicUsize,
    reader: Mutex<Option<Waker>>,
    ticket: Arc<Ticket>,
}

/// Held from the service call until the response body is dropped.
#[derive(Debug)]
pub(super) struct InFlight(Arc<Activity>);

impl Activity {
    /// The activity of the connection holding `ticket`.
    pub(super) fn new(ticket: Arc<Ticket>) -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            reader: Mutex::new(None),
            ticket,
        }
    }

    /// Marks a request as in flight until the guard drops.
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            self.ticket.busy();
        }
        InFlight(self.clone())
    }

    /// Whether a request is being answered.
    pub(super) fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    fn park_reader(&self, waker: &Waker) {
        let mut slot = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.ticket.idle();
            // The reader may be parked without a deadline: wake it to start the idle timer.
            let waker = self
                .0
                .reader
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

/// Deadlines for [`GuardedIo`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadlines {
    pub header_read: Duration,
    pub idle: Duration,
    pub write: Duration,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Head(Instant),
    Busy,
    Idle(Instant),
}

/// The wrapped stream; see the module docs.
#[derive(Debug)]
pub(super) struct GuardedIo {
    stream: TcpStream,
    activity: Arc<Activity>,
    limits: Deadlines,
    phase: Phase,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
    write_stalled: bool,
}

/// `now + d`, saturating at a far future instead of overflowing.
pub(super) fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400))
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
}

/// Polls a lazily allocated timer set to `deadline`.
fn poll_timer(
    timer: &mut Option<Pin<Box<Sleep>>>,
    deadline: Instant,
    cx: &mut Context<'_>,
) -> bool {
    let t = match timer {
        Some(t) => {
            if t.deadline() != deadline {
                t.as_mut().reset(deadline);
            }
            t
        }
        None => timer.insert(Box::pin(sleep_until(deadline))),
    };
    t.as_mut().poll(cx).is_ready()
}

impl GuardedIo {
    /// Starts in the head phase: the first request's head is due within `header_read`.
    pub(super) fn new(stream: TcpStream, activity: Arc<Activity>, limits: Deadlines) -> GuardedIo {
        GuardedIo {
            stream,
            activity,
            limits,
            phase: Phase::Head(after(limits.header_read)),
            read_timer: None,
            write_timer: None,
            write_stalled: false,
        }
    }

    /// The phase now, moving busy → idle once no request is in flight.
    fn update_phase(&mut self) -> Phase {
        self.phase = match (self.phase, self.activity.busy()) {
            (_, true) => Phase::Busy,
            (Phase::Busy, false) => Phase::Idle(after(self.limits.idle)),
            (p, false) => p,
        };
        self.phase
    }

    /// Resets the connection on drop instead of closing it gracefully.
    fn abort(&self) {
        let _ = self.stream.set_zero_linger();
    }

    fn check_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (deadline, what) = match self.update_phase() {
            Phase::Busy => {
                self.activity.park_reader(cx.waker());
                // Re-check: the last response may have ended between the two loads.
                if self.activity.busy() {
                    return Poll::Pending;
                }
                match self.update_phase() {
                    Phase::Idle(d) => (d, "idle keep-alive"),
                    _ => return Poll::Pending,
                }
            }
            Phase::Head(d) => (d, "request head read"),
            Phase::Idle(d) => (d, "idle keep-alive"),
        };
        if poll_timer(&mut self.read_timer, deadline, cx) {
            if matches!(self.phase, Phase::Head(_)) {
                self.abort();
            }
            return Poll::Ready(Err(timed_out(what)));
        }
        Poll::Pending
    }

    /// Tracks stalls: `wrote` is true for calls that move bytes (write, not flush/shutdown).
    fn on_write<T>(
        &mut self,
        r: Poll<io::Result<T>>,
        wrote: bool,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                if wrote {
                    self.write_stalled = false;
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let deadline = match (&self.write_timer, self.write_stalled) {
                    (Some(t), true) => t.deadline(),
                    _ => after(self.limits.write),
                };
                self.write_stalled = true;
                if poll_timer(&mut self.write_timer, deadline, cx) {
                    self.abort();
                    return Poll::Ready(Err(timed_out("response write")));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // A head past its deadline fails even if bytes keep trickling in.
        if let Phase::Head(d) = this.update_phase() {
            if Instant::now() >= d {
                this.abort();
                return Poll::Ready(Err(timed_out("request head read")));
            }
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    if let Phase::Idle(_) = this.phase {
                        this.phase = Phase::Head(after(this.limits.header_read));
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.check_read(cx),
        }
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.on_write(r, true, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.on_write(r, true, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_flush(cx);
        this.on_write(r, false, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.on_write(r, false, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const LIMITS: Deadlines = Deadlines {
        header_read: Duration::from_millis(200),
        idle: Duration::from_millis(400),
        write: Duration::from_millis(200),
    };

    /// A guarded server end and its client end.
    async fn pair() -> (GuardedIo, Arc<Activity>, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        let activity = Arc::new(Activity::default());
        (
            GuardedIo::new(server, activity.clone(), LIMITS),
            activity,
            client,
        )
    }

    async fn read_err(io: &mut GuardedIo) -> String {
        let mut buf = [0u8; 64];
        loop {
            match io.read(&mut buf).await {
                Ok(0) => panic!("EOF"),
                Ok(_) => continue,
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
                    return e.to_string();
                }
            }
        }
    }

    #[tokio::test]
    async fn head_deadline_holds_against_a_trickle() {
        let (mut io, _, mut client) = pair().await;
        let trickle = tokio::spawn(async move {
            for _ in 0..100 {
                if client.write_all(b"a").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        assert_eq!(read_err(&mut io).await, "request head read timed out");
        trickle.abort();
    }

    #[tokio::test]
    async fn busy_has_no_deadline_then_idle_applies() {
        let (mut io, activity, _client) = pair().await;
        let request = activity.begin();
        let mut buf = [0u8; 8];
        // Far past the head and idle deadlines: still waiting while a request is in flight.
        let r = tokio::time::timeout(Duration::from_millis(1000), io.read(&mut buf)).await;
        assert!(r.is_err(), "a read deadline fired while busy: {r:?}");
        drop(request);
        assert_eq!(read_err(&mut io).await, "idle keep-alive timed out");
    }

    #[tokio::test]
    async fn a_byte_after_idle_starts_the_head_deadline() {
        let (mut io, activity, mut client) = pair().await;
        let request = activity.begin();
        let mut buf = [0u8; 8];
        let r = tokio::time::timeout(Duration::from_millis(50), io.read(&mut buf)).await;
        assert!(r.is_err());
        drop(request);
        let write = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            client.write_all(b"G").await.unwrap();
            std::future::pending::<()>().await;
        };
        tokio::select! {
            e = read_err(&mut io) => assert_eq!(e, "request head read timed out"),
            _ = write => unreachable!(),
        }
    }

    #[tokio::test]
    async fn a_stalled_write_fails() {
        let (mut io, activity, _client) = pair().await;
        let _busy = activity.begin();
        let chunk = vec![0u8; 1 << 16];
        let err = loop {
            if let Err(e) = io.write_all(&chunk).await {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(err.to_string(), "response write timed out");
    }
}
