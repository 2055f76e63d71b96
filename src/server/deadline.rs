//! The request body's end-to-end deadline: the whole body must arrive within
//! `Limits::body_read_timeout` of the request's arrival, however it is trickled; past it the
//! handler's read fails and the request is answered 408 and its connection closed.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Frame, SizeHint};
use tokio::time::{sleep_until, Sleep};

use super::io::after;
use crate::seam::ApiError;

/// Per-route middleware: wraps the request body in the deadline and turns whatever the
/// handler answered after the deadline cut its body into a 408.
pub(crate) async fn body_deadline(
    State(limit): State<Duration>,
    req: Request,
    next: Next,
) -> Response {
    let hit = Arc::new(AtomicBool::new(false));
    let flag = hit.clone();
    let req = req.map(|inner| {
        Body::new(Deadlined {
            inner,
            sleep: Box::pin(sleep_until(after(limit))),
            hit: flag,
        })
    });
    let response = next.run(req).await;
    if !hit.load(Ordering::Acquire) {
        return response;
    }
    let mut out = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "timeout",
        format!(
            "the request body was not received within {} (the body read timeout, counted from the request's arrival)",
            human(limit)
        ),
    )
    .into_response();
    // The rest of the body is still on its way: this connection cannot take another request.
    out.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    out
}

/// `d` in whole seconds when it is, else in milliseconds.
fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// The error a body read gets past its deadline.
#[derive(Debug)]
struct BodyTimedOut;

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body read timed out")
    }
}

impl std::error::Error for BodyTimedOut {}

/// A request body that fails once its deadline passes, even while bytes keep arriving.
struct Deadlined {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
    hit: Arc<AtomicBool>,
}

impl hyper::body::Body for Deadlined {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.sleep.as_mut().poll(cx).is_ready() {
            this.hit.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
