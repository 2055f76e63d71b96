//! The answer to an over-cap connection: a minimal 503 with a JSON body, then close; and on a
//! TLS listener, the answer to a plaintext request.
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
    answer(
        "503 Service Unavailable\r\nretry-after: 1",
        "too_many_connections",
        message,
    )
}

/// A complete `HTTP/1.1 <status>` response with `{"error":<code>,"message":<message>}` that
/// closes the connection.
fn answer(status: &str, code: &str, message: &str) -> Arc<[u8]> {
    let body = format!(
        "{{\"error\":{},\"message\":{}}}",
        json_string(code),
        json_string(message)
    );
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\ncache-control: no-store\r\n\r\n",
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

/// Answers a plaintext request on a TLS listener with a 400 saying to use `https://`, then
/// closes after reading (and discarding) what the client sent, within [`LINGER`].
#[cfg(feature = "tls")]
pub(super) async fn plaintext_to_tls<IO>(mut io: IO)
where
    IO: tokio::io::AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let text = answer(
        "400 Bad Request",
        "tls_required",
        crate::tls::accept::PLAINTEXT_REFUSAL,
    );
    let _ = tokio::time::timeout(LINGER, async {
        io.write_all(&text).await?;
        io.shutdown().await?;
        let mut buf = [0u8; 2048];
        let mut discarded = 0;
        while discarded < MAX_DISCARD {
            match io.read(&mut buf).await? {
                0 => break,
                n => discarded += n,
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// [`refuse`] on a TLS listener: the 503 goes over TLS, so the client reads it rather than
/// a handshake failure. The handshake costs CPU, so only as many refusals as may linger do it
/// (each within the handshake timeout); past that bound the connection is closed at once.
#[cfg(feature = "tls")]
pub(super) fn refuse_tls(
    stream: TcpStream,
    answer: Arc<[u8]>,
    tls: Arc<crate::tls::Tls>,
    handshake_timeout: Duration,
    lingering: &Arc<Semaphore>,
    tasks: &mut JoinSet<()>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(permit) = lingering.clone().try_acquire_owned() else {
        return; // dropped: closed now
    };
    tasks.spawn(async move {
        let _permit = permit;
        let Ok(Ok((mut io, _))) = tokio::time::timeout(handshake_timeout, tls.accept(stream)).await
        else {
            return;
        };
        let _ = tokio::time::timeout(LINGER, async {
            let mut buf = [0u8; 2048];
            // The request head first, when it comes at once: a client that is still sending
            // while the answer and close arrive may see a reset instead.
            let _ = tokio::time::timeout(LINGER / 4, io.read(&mut buf)).await;
            io.write_all(&answer).await?;
            io.shutdown().await
        })
        .await;
    });
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
        assert!(head.contains("\r\nretry-after: 1\r\n"));
        assert!(head.contains("\r\nconnection: close"));
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "too_many_connections");
        assert_eq!(v["message"], "too many \"x\"\n");
    }
}
