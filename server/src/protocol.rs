//! JSON answers for the errors hyper answers itself, and the request size limits
//! ([`URL_LIMIT`], [`HEAD_LIMIT`], [`BODY_LIMIT`]).
//!
//! hyper answers a request head it cannot parse (400), one larger than its buffer (431) or
//! one whose target exceeds 65,534 bytes (414) on its own, with an empty body, then closes
//! the connection; it has no hook to shape that answer. [`JsonErrors`] wraps a connection's
//! stream below hyper and recognises such an answer as hyper writes it: a status of 400 or
//! more with `content-length: 0` and no `content-type` (the status server's own errors always
//! carry a JSON body). It writes `{"error": "..."}` with the same status instead, except
//! that a head over [`HEAD_LIMIT`] whose unfinished line is a request line becomes 414 (the
//! request target is too long, see [`URL_LIMIT`]). Then, having closed its side, it reads and
//! discards what the client still sends (at most `LINGER_BYTES` for `LINGER_TIME`), so
//! that closing does not reset the connection before the client read the answer.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest request target (path and query) served; longer ones get 414.
pub const URL_LIMIT: usize = 8 * 1024;
/// Largest request head (request line and headers); larger ones get 431 (414 when the
/// request line is what is too long). hyper's read buffer is capped at this size.
pub const HEAD_LIMIT: usize = 64 * 1024;
/// Largest request body accepted (1 MiB); larger ones get 413.
pub const BODY_LIMIT: usize = 1 << 20;
/// Most bytes read and discarded after a protocol error answer.
const LINGER_BYTES: usize = 4 << 20;
/// Longest wait for the client to stop sending after a protocol error answer.
const LINGER_TIME: Duration = Duration::from_secs(1);
/// Bytes of the current line kept to tell a request line from a header line.
const LINE_START: usize = 16;

/// A connection's stream, with hyper's own error answers given JSON bodies.
pub struct JsonErrors<I> {
    /// The connection (TCP or TLS).
    inner: I,
    /// The client, for the log line of a refused request.
    peer: SocketAddr,
    /// Bytes received since the last line feed: the length of the line the client is sending.
    line_len: usize,
    /// The first bytes of that line: a request line starts with a method and a space.
    line_start: Vec<u8>,
    /// The JSON answer that replaces hyper's, and how much of it is written.
    answer: Option<(Vec<u8>, usize)>,
    /// Once the answer is written and the write side closed: when to stop discarding input.
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Bytes discarded so far while lingering.
    discarded: usize,
}

impl<I> JsonErrors<I> {
    /// Wraps the stream of a connection from `peer`.
    pub fn new(inner: I, peer: SocketAddr) -> JsonErrors<I> {
        JsonErrors {
            inner,
            peer,
            line_len: 0,
            line_start: Vec::with_capacity(LINE_START),
            answer: None,
            linger: None,
            discarded: 0,
        }
    }

    /// Follows the lines of what the client sent.
    fn observe(&mut self, bytes: &[u8]) {
        let rest = match bytes.iter().rposition(|&b| b == b'\n') {
            Some(i) => {
                self.line_len = 0;
                self.line_start.clear();
                &bytes[i + 1..]
            }
            None => bytes,
        };
        self.line_len += rest.len();
        let room = LINE_START - self.line_start.len();
        self.line_start.extend_from_slice(&rest[..rest.len().min(room)]);
    }

    /// True when the line being received is an over-long request line (`METHOD target`).
    fn long_request_line(&self) -> bool {
        let method_len = self.line_start.iter().position(|&b| b == b' ');
        self.line_len > URL_LIMIT
            && method_len.is_some_and(|n| n > 0 && self.line_start[..n].iter().all(u8::is_ascii_alphabetic))
    }

    /// The JSON answer for an error head hyper is writing, and its status.
    fn replace(&self, status: u16) -> (u16, Vec<u8>) {
        let status = if status == 431 && self.long_request_line() { 414 } else { status };
        let (reason, message) = match status {
            400 => (
                "Bad Request",
                "the request is not valid HTTP/1.1: send a request line 'METHOD /path HTTP/1.1', header lines 'Name: value' and an empty line".to_string(),
            ),
            414 => ("URI Too Long", format!("the request target (URL) is longer than {URL_LIMIT} bytes")),
            431 => (
                "Request Header Fields Too Large",
                format!("the request head (request line and headers) is larger than {HEAD_LIMIT} bytes"),
            ),
            _ => ("Error", format!("the request was refused with status {status}")),
        };
        let body = serde_json::json!({ "error": message }).to_string();
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        tracing::info!(remote = %self.peer, status, "HTTP request refused: {message}");
        (status, [head.into_bytes(), body.into_bytes()].concat())
    }
}

/// The status and head length of an error answer hyper writes itself: a head with a
/// status of 400 or more, `content-length: 0` and no `content-type`.
fn hyper_error_head(buf: &[u8]) -> Option<(u16, usize)> {
    let rest = buf.strip_prefix(b"HTTP/1.")?;
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let status: u16 = std::str::from_utf8(rest.get(2..5)?).ok()?.parse().ok()?;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    (status >= 400 && head.contains("\r\ncontent-length: 0\r\n") && !head.contains("\r\ncontent-type:"))
        .then_some((status, end))
}

impl<I: AsyncRead + AsyncWrite + Unpin> JsonErrors<I> {
    /// Writes what is left of the replacement answer.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((bytes, written)) = &mut self.answer else { return Poll::Ready(Ok(())) };
        while *written < bytes.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }

    /// After the answer: discards input until the client closes, or the limits are reached.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.linger.get_or_insert_with(|| Box::pin(tokio::time::sleep(LINGER_TIME)));
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        let mut scratch = [0u8; 8192];
        while self.discarded < LINGER_BYTES {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => self.discarded += buf.filled().len(),
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(())
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for JsonErrors<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.observe(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncWrite for JsonErrors<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_answer(cx))?;
        if this.answer.is_none() {
            if let Some((status, head_len)) = hyper_error_head(buf) {
                let (_, bytes) = this.replace(status);
                this.answer = Some((bytes, 0));
                ready!(this.poll_answer(cx))?;
                return Poll::Ready(Ok(head_len));
            }
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_answer(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_answer(cx))?;
        if this.answer.is_none() {
            return Pin::new(&mut this.inner).poll_shutdown(cx);
        }
        if this.linger.is_none() {
            ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
        }
        ready!(this.poll_linger(cx));
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyper_s_empty_error_heads_are_replaced() {
        let hyper_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Sun, 06 Dec 2026 17:00:00 GMT\r\n\r\n";
        assert_eq!(hyper_error_head(hyper_400), Some((400, hyper_400.len())));
        let ours = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(hyper_error_head(ours), None);
        assert_eq!(hyper_error_head(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n"), None);
        assert_eq!(hyper_error_head(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n"), None, "head incomplete");
        assert_eq!(hyper_error_head(b"{\"HTTP/1.1 400\"}"), None);
    }

    #[test]
    fn an_over_long_request_line_is_told_from_an_over_long_header() {
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut conn = JsonErrors::new((), peer);
        conn.observe(b"GET /");
        conn.observe(&[b'a'; URL_LIMIT]);
        let (status, answer) = conn.replace(431);
        assert_eq!(status, 414);
        let text = String::from_utf8(answer).unwrap();
        assert!(text.starts_with("HTTP/1.1 414 URI Too Long\r\ncontent-type: application/json\r\n"), "{text}");
        assert!(text.ends_with(&format!("{{\"error\":\"the request target (URL) is longer than {URL_LIMIT} bytes\"}}")));
        let mut conn = JsonErrors::new((), peer);
        conn.observe(b"GET / HTTP/1.1\r\nX-Big: ");
        conn.observe(&[b'a'; HEAD_LIMIT]);
        assert_eq!(conn.replace(431).0, 431);
        assert_eq!(conn.replace(400).0, 400);
    }
}
