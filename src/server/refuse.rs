//! The answer to an over-cap connection: a minimal 503 with a JSON body, then close.
//!
//! The accept loop writes it without waiting (`try_write`: a fresh socket's send buffer takes
//! it whole). A bounded number of refusals then linger in a task — half-close, read and discard
//! what the client sends for up to [`LINGER`] — so the client reads the 503 rather than a reset
//! caused by its own unread request bytes. When that bound is reached the socket is closed at
//! once: the 503 is still sent, but a client that had sent bytes may see a reset.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Longest a refused connection is kept, writing and lingering.
pub(super) const LINGER: Duration = Duration::from_secs(1);
/// Refused connections lingering at once; each holds one file descriptor.
pub(super) const MAX_LINGERING: usize = 64;
/// Bytes of client input discarded while lingering.
const MAX_DISCARD: usize = 64 * 1024;

/// A complete `HTTP/1.1 503` response with `{"error":"too_many_connections","message":…}`.
pub(super) fn response(message: &str) -> Arc<[u8]> {
    let body = format!(
        "{{\"error\":\"too_many_connections\",\"message\":{}}}",
        json_string(message)
    );
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\ncache-control: no-store\r\n\r\n",
        body.len()
    );
    Arc::from((head + &body).into_bytes())
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Sends `answer` on `stream` and closes it, never waiting in the caller.
pub(super) fn refuse(
    stream: TcpStream,
    answer: Arc<[u8]>,
    lingering: &Arc<Semaphore>,
    tasks: &mut JoinSet<()>,
) {
    let sent = stream.try_write(&answer).unwrap_or(0);
    let Ok(permit) = lingering.clone().try_acquire_owned() else {
        return; // dropped: closed now
    };
    tasks.spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(LINGER, finish(stream, answer, sent)).await;
    });
}

async fn finish(mut stream: TcpStream, answer: Arc<[u8]>, mut sent: usize) -> std::io::Result<()> {
    while sent < answer.len() {
        stream.writable().await?;
        match stream.try_write(&answer[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    poll_fn(|cx| Pin::new(&mut stream).poll_shutdown(cx)).await?;
    let mut buf = [0u8; 2048];
    let mut discarded = 0;
    while discarded < MAX_DISCARD {
        stream.readable().await?;
        match stream.try_read(&mut buf) {
            Ok(0) => break,
            Ok(n) => discarded += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_is_well_formed() {
        let r = response("too many \"x\"\n");
        let text = std::str::from_utf8(&r).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(head.contains("\r\nconnection: close"));
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "too_many_connections");
        assert_eq!(v["message"], "too many \"x\"\n");
    }
}
