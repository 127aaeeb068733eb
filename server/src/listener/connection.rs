//! One connection, from its slot to its close: the TLS handshake (or a plain-HTTP client's
//! 400), HTTP/1.1 with the head deadline, then for each request the target length, the
//! token and the request deadline.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tower::ServiceExt;

use super::{Shared, CONNECTION_TIMEOUT, HEAD_TIMEOUT, IDLE_TIMEOUT, REQUEST_TIMEOUT};
use crate::auth::{self, Denied};
use crate::conns::Slot;
use crate::protocol::{JsonErrors, HEAD_LIMIT, URL_LIMIT};
use crate::routes::error;
use crate::tls::TlsStore;

/// One connection, from its slot to its close: TLS if on, then HTTP/1.1; closed early when
/// its slot goes to a new client, or when it has no request head within [`HEAD_TIMEOUT`].
pub(super) async fn serve_connection(
    shared: Arc<Shared>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    slot: Arc<Slot>,
    accepted: Instant,
) {
    let head_deadline = tokio::time::Instant::from_std(accepted + HEAD_TIMEOUT);
    let serve = async {
        match shared.security.tls.clone() {
            None => serve_http(&shared, stream, peer, &slot, head_deadline).await,
            Some(tls) => {
                let Some(stream) = tls_handshake(&tls, stream, peer, head_deadline).await else { return };
                serve_http(&shared, stream, peer, &slot, head_deadline).await
            }
        }
    };
    tokio::select! {
        _ = slot.evicted() => tracing::debug!(%peer, "HTTP connection closed to admit a new client"),
        r = tokio::time::timeout(CONNECTION_TIMEOUT, serve) => if r.is_err() {
            tracing::debug!(%peer, "HTTP connection closed after {} s", CONNECTION_TIMEOUT.as_secs());
        },
    }
}

/// The TLS handshake, within the head deadline. A client speaking plain HTTP gets a plain
/// 400 saying so.
async fn tls_handshake(
    tls: &TlsStore,
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1..)) if first[0] != 0x16 => {
            // Not a TLS handshake record: most likely http:// to an https:// server.
            let _ = tokio::time::timeout_at(deadline, refuse_plain_http(&mut stream)).await;
            tracing::debug!(%peer, "HTTP connection closed: plain HTTP to the HTTPS server");
            return None;
        }
        Ok(Ok(1..)) => {}
        Ok(_) => return None,
        Err(_) => {
            tracing::debug!(%peer, "HTTP connection closed: no TLS handshake within {} s", HEAD_TIMEOUT.as_secs());
            return None;
        }
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::info!(remote = %peer, "HTTPS: TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "HTTP connection closed: TLS handshake not done within {} s", HEAD_TIMEOUT.as_secs());
            None
        }
    }
}

/// 400 to a client speaking plain HTTP to the HTTPS server, then close.
async fn refuse_plain_http(stream: &mut tokio::net::TcpStream) {
    // Read the request head first, so that closing does not reset the answer away.
    let mut buf = [0u8; 4096];
    let _ = stream.read(&mut buf).await;
    let body = r#"{"error": "this server speaks HTTPS only: use https://"}"#;
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// HTTP/1.1 on a connection; returns when it closes, or when no request head came within
/// the head deadline.
async fn serve_http<I>(shared: &Arc<Shared>, io: I, peer: SocketAddr, slot: &Arc<Slot>, head: tokio::time::Instant)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (shared_svc, slot_svc) = (shared.clone(), slot.clone());
    let service = hyper::service::service_fn(move |req| {
        let (shared, busy) = (shared_svc.clone(), slot_svc.request());
        async move {
            let response = handle(&shared, peer, req).await;
            drop(busy);
            response
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(IDLE_TIMEOUT)
        .max_buf_size(HEAD_LIMIT)
        .max_header_size(HEAD_LIMIT)
        .serve_connection(TokioIo::new(JsonErrors::new(io, peer)), service);
    tokio::pin!(conn);
    let head_timer = tokio::time::sleep_until(head);
    tokio::pin!(head_timer);
    let mut head_due = true;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, "HTTP connection closed: {e}");
                }
                return;
            }
            _ = &mut head_timer, if head_due => {
                if !slot.has_started() {
                    tracing::debug!(%peer, "HTTP connection closed: no request head within {} s", HEAD_TIMEOUT.as_secs());
                    return;
                }
                head_due = false;
            }
        }
    }
}

/// Checks the token where the rule asks for it, then serves one request with the request
/// deadline, and logs it.
async fn handle(
    shared: &Shared,
    peer: SocketAddr,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<Response, Infallible> {
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let target_len = uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > URL_LIMIT {
        let message = format!("the request target (URL) is longer than {URL_LIMIT} bytes");
        tracing::info!(remote = %peer, method = %method, status = 414, "HTTP request refused: {message}");
        return Ok(error(StatusCode::URI_TOO_LONG, message));
    }
    if let Some(token) = &shared.security.token {
        if auth::needs_token(method.as_str(), shared.security.auth_all) {
            if let Err(denied) = token.check(req.headers().get(header::AUTHORIZATION)) {
                let reason = match denied {
                    Denied::Missing => "no bearer token",
                    Denied::Invalid => "wrong bearer token",
                };
                tracing::warn!(remote = %peer, method = %method, path = uri.path(), status = 401, "HTTP request refused: {reason}");
                return Ok(unauthorized(denied));
            }
        }
    }
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, shared.app.clone().oneshot(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(never)) => match never {},
        Err(_) => error(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request was not received within {} s", REQUEST_TIMEOUT.as_secs()),
        ),
    };
    tracing::info!(remote = %peer, method = %method, uri = %uri, status = response.status().as_u16(), "HTTP request");
    Ok(response)
}

/// 401 with the bearer challenge (RFC 6750) and a JSON error.
fn unauthorized(denied: Denied) -> Response {
    let (challenge, message) = match denied {
        Denied::Missing => (
            r#"Bearer realm="vpcrouter""#,
            "authentication required: send the token of --http-token-file as Authorization: Bearer <token>",
        ),
        Denied::Invalid => (r#"Bearer realm="vpcrouter", error="invalid_token""#, "invalid bearer token"),
    };
    let mut response = error(StatusCode::UNAUTHORIZED, message);
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    response
}
