//! The status server: vpc-router's state documents, `/status`, `/metrics`, and the
//! endpoints plugins registered in [`Endpoints`].
//!
//! Runtime arrangement: the server runs on its own thread (`http`) with its own
//! current-thread tokio runtime, built on axum (routing) and hyper (HTTP/1.1). The engine
//! keeps blocking its runtime on the main thread while it reconciles (EC2 calls can take
//! seconds), so the two never wait for each other: the server answers during a reconcile,
//! and a slow client cannot delay one. Calls into plugin code (`status()`, plugin endpoint
//! handlers) are synchronous FFI calls; they run on the server runtime's blocking pool
//! with a deadline, so a slow plugin cannot stall the server either.
//!
//! Security ([`Security`]): with `--http-token-file`, requests that may change state (the
//! rule is [`super::auth::needs_token`]) need `Authorization: Bearer <token>`, else 401;
//! with `--tls-cert`/`--tls-key` the server speaks HTTPS only (rustls), and with
//! `--tls-client-ca` it requires client certificates. [`check_exposure`] refuses to start
//! a server that would take unauthenticated writes off loopback.
//!
//! Connections and hostile clients: the accept loop only accepts and hands each connection
//! a slot of the connection table ([`super::conns`]); it never waits for a client. There
//! are [`max_connections`] slots (up to [`MAX_CONNECTIONS`], kept below the open-files
//! limit) and a listen backlog of [`LISTEN_BACKLOG`]. A new connection must complete its
//! TLS handshake and first request head within [`HEAD_TIMEOUT`] (1 s), so a client that
//! connects and sends nothing, or dribbles its head, loses its slot quickly; between
//! keep-alive requests a connection may stay idle for [`IDLE_TIMEOUT`]. When every slot is
//! taken, the connection idle the longest (no request in progress) is closed to admit the
//! new client, so new clients are answered at once even when hundreds of slow ones hold
//! connections; a connection serving a request is never closed for another (when all
//! slots serve requests, the new client gets 503). Request bodies above [`BODY_LIMIT`] get
//! 413, request targets above [`URL_LIMIT`] 414 and heads above [`HEAD_LIMIT`] 431, a
//! request must arrive whole within [`REQUEST_TIMEOUT`] (408), and a connection lives at
//! most [`CONNECTION_TIMEOUT`].
//!
//! Every error answer has a JSON body `{"error": "..."}`: the server's own, axum's 405
//! (with `Allow`), and those hyper writes itself for heads it cannot parse
//! ([`super::protocol::JsonErrors`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use abi_stable::std_types::{RString, RVec, Tuple2};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tower::ServiceExt;
use vpcrouter_plugin_api::HttpRequest;

use super::auth::{self, Denied, TokenFile};
use super::conns::{Slot, Slots};
use super::protocol::JsonErrors;
pub use super::protocol::{HEAD_LIMIT, URL_LIMIT};
use super::tls::TlsStore;
use super::Endpoints;
use crate::status::{self, PluginView, ServerInfo, Snapshot};
use crate::sync::lock;
use vpcrouter_engine::status::Status;

/// Largest request body accepted (1 MiB); larger ones get 413.
pub const BODY_LIMIT: usize = 1 << 20;
/// Time a new connection has for its TLS handshake and its first request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(1);
/// Time a connection may wait for (and read) its next request head after a response.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Time a client has to send a whole request, body included (then 408).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest life of one connection.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);
/// Connections served at once, at most (see [`max_connections`]).
pub const MAX_CONNECTIONS: usize = 1024;
/// File descriptors left to the rest of vpcrouter when the open-files limit caps the slots.
const FD_RESERVE: usize = 256;
/// Connections the kernel queues before vpcrouter accepts them.
pub const LISTEN_BACKLOG: i32 = 1024;
/// Time a plugin has to answer `status()` or a request.
const PLUGIN_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address cannot be bound (port in use, no permission, address not local).
    #[error("HTTP server: cannot listen on {addr}: {error}; {hint}")]
    Bind {
        /// `address:port` as given.
        addr: String,
        /// The OS error (part of the message, so not a `source`).
        error: std::io::Error,
        /// What the user can do.
        hint: &'static str,
    },
    /// No thread or runtime for the server.
    #[error("HTTP server: cannot start: {0}")]
    Start(std::io::Error),
}

/// A bound, not yet serving, listener: binding early makes a taken port fail the start
/// before any plugin runs.
#[derive(Debug)]
pub struct Listener {
    listener: std::net::TcpListener,
    addr: SocketAddr,
}

/// Binds `address` (`localhost` or an IP literal) and `port` (0 = any free port), with a
/// listen backlog of [`LISTEN_BACKLOG`].
pub fn bind(address: &str, port: u16) -> Result<Listener, ServerError> {
    let err = |source: std::io::Error| {
        let hint = match source.kind() {
            std::io::ErrorKind::AddrInUse => {
                "another program (another vpcrouter?) uses this port: stop it or choose another port with -p/--port"
            }
            std::io::ErrorKind::PermissionDenied => {
                "ports below 1024 need privileges: choose another port with -p/--port"
            }
            _ => "check -a/--address (an address of this machine) and -p/--port",
        };
        ServerError::Bind { addr: format!("{address}:{port}"), error: source, hint }
    };
    let ip = match address {
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        other => other
            .parse()
            .map_err(|_| err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an IP address")))?,
    };
    let sa = SocketAddr::new(ip, port);
    let socket = socket2::Socket::new(socket2::Domain::for_address(sa), socket2::Type::STREAM, None).map_err(err)?;
    // As std's bind: a restarted vpcrouter can bind while old connections linger in TIME_WAIT.
    socket.set_reuse_address(true).map_err(err)?;
    socket.bind(&sa.into()).map_err(err)?;
    socket.listen(LISTEN_BACKLOG).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    let listener: std::net::TcpListener = socket.into();
    let addr = listener.local_addr().map_err(err)?;
    Ok(Listener { listener, addr })
}

/// Connection slots: [`MAX_CONNECTIONS`], or fewer when the open-files limit
/// (`RLIMIT_NOFILE`) would not leave [`FD_RESERVE`] descriptors beside them (at least 16).
pub fn max_connections() -> usize {
    match open_files_limit() {
        Some(limit) => {
            MAX_CONNECTIONS.min(usize::try_from(limit).unwrap_or(usize::MAX).saturating_sub(FD_RESERVE)).max(16)
        }
        None => MAX_CONNECTIONS,
    }
}

/// The soft open-files limit (`None`: unlimited).
fn open_files_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Who may use the server: the bearer token, `--http-auth-all`, TLS.
#[derive(Clone, Default)]
pub struct Security {
    /// `--http-token-file`.
    pub token: Option<Arc<TokenFile>>,
    /// `--http-auth-all`: read-only requests need the token too.
    pub auth_all: bool,
    /// `--tls-*`.
    pub tls: Option<Arc<TlsStore>>,
}

impl Security {
    /// True when a client must prove who it is before it can change state: a token, or
    /// client certificates.
    pub fn authenticates_clients(&self) -> bool {
        self.token.is_some() || self.tls.as_ref().is_some_and(|t| t.requires_client_certificates())
    }

    /// Re-reads the token and TLS files (SIGHUP); what fails to load stays as it was.
    pub fn reload(&self) {
        if let Some(t) = &self.token {
            match t.reload() {
                Ok(()) => tracing::info!("HTTP server: token re-read from {}", t.path().display()),
                Err(e) => tracing::error!("HTTP server: {e}; the previous token stays in force"),
            }
        }
        if let Some(t) = &self.tls {
            match t.reload() {
                Ok(()) => tracing::info!("HTTP server: TLS certificate and key re-read"),
                Err(e) => tracing::error!("HTTP server: {e}; the previous certificate and key stay in force"),
            }
        }
    }
}

/// Refuses a server that would take unauthenticated state-changing requests off loopback:
/// `Err` is the one line to print. With `allow_unauthenticated` (`--http-allow-unauthenticated`)
/// it is allowed, and `Ok(Some)` is the warning to log.
pub fn check_exposure(
    addr: SocketAddr,
    endpoints: &Endpoints,
    security: &Security,
    allow_unauthenticated: bool,
) -> Result<Option<String>, String> {
    if addr.ip().to_canonical().is_loopback() || security.authenticates_clients() {
        return Ok(None);
    }
    let writes: Vec<String> = endpoints
        .list()
        .into_iter()
        .filter(|(method, _, _)| auth::is_state_changing(method))
        .map(|(method, path, _)| format!("{method} {path}"))
        .collect();
    if writes.is_empty() {
        return Ok(None);
    }
    let what = writes.join(", ");
    if allow_unauthenticated {
        return Ok(Some(format!(
            "--http-allow-unauthenticated: serving {what} on {addr} without authentication; anyone who can reach it can change the routes"
        )));
    }
    Err(format!(
        "refusing to serve {what} on {addr} without authentication: add --http-token-file FILE, or listen on a loopback address (-a 127.0.0.1), or pass --http-allow-unauthenticated to accept this risk"
    ))
}

/// Asks a running plugin for its status.
pub type InfoFn = Arc<dyn Fn() -> vpcrouter_plugin_api::PluginStatus + Send + Sync>;

/// A loaded plugin as the server needs it.
pub struct PluginSource {
    /// Name, e.g. `http`.
    pub name: String,
    /// `watcher` or `health`.
    pub kind: &'static str,
    /// The plugin's version.
    pub version: String,
    /// Its options, by long name.
    pub arguments: BTreeMap<String, String>,
    /// Its status.
    pub info: InfoFn,
}

/// Everything the server reads.
pub struct ServerContext {
    /// Fixed facts about this run.
    pub info: ServerInfo,
    /// The engine's state.
    pub status: Arc<Mutex<Status>>,
    /// Plugin endpoints.
    pub endpoints: Endpoints,
    /// Watcher first, then the health plugin.
    pub plugins: Vec<PluginSource>,
    /// The EC2 adapter's counters and limits.
    pub ec2: Arc<dyn Fn() -> crate::status::Ec2View + Send + Sync>,
    /// The instruments of `/metrics` (histograms).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Cluster mode's membership, if on.
    pub cluster: Option<crate::cluster::ClusterHandle>,
    /// Token and TLS.
    pub security: Security,
    /// The drains in force, and the way to change them.
    pub drains: crate::drain::Drains,
    /// `Some(why)`: drain requests are refused (an unauthenticated server off loopback).
    pub drain_refusal: Option<String>,
}

/// The running server; [`Server::stop`] (or drop) ends it.
pub struct Server {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts serving on the server's own thread and runtime, with [`max_connections`] slots.
    pub fn serve(self, ctx: ServerContext) -> Result<Server, ServerError> {
        self.serve_with_slots(ctx, max_connections())
    }

    fn serve_with_slots(self, ctx: ServerContext, capacity: usize) -> Result<Server, ServerError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(8)
            .thread_name("http-blocking")
            .build()
            .map_err(ServerError::Start)?;
        let listener = {
            let _guard = rt.enter();
            tokio::net::TcpListener::from_std(self.listener).map_err(ServerError::Start)?
        };
        let (tx, rx) = oneshot::channel();
        let security = ctx.security.clone();
        let shared = Arc::new(Shared { app: router(Arc::new(ctx)), slots: Slots::new(capacity), security });
        let addr = self.addr;
        let thread = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                tracing::info!(
                    %addr, https = shared.security.tls.is_some(), token = shared.security.token.is_some(),
                    max_connections = capacity, "HTTP server: Started to listen for requests"
                );
                rt.block_on(accept_loop(listener, shared, rx));
                rt.shutdown_timeout(Duration::from_secs(1));
                tracing::info!("HTTP server: Stopped");
            })
            .map_err(ServerError::Start)?;
        Ok(Server { addr, shutdown: Some(tx), thread: Some(thread) })
    }
}

impl Server {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, drops open connections, and waits for the thread (at most 3 s).
    pub fn stop(mut self) {
        self.stop_in_place();
    }

    fn stop_in_place(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let Some(thread) = self.thread.take() else { return };
        let deadline = Instant::now() + Duration::from_secs(3);
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            tracing::warn!("HTTP server: did not stop within 3 s; exiting without it");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_in_place();
    }
}

/// What the accept loop and the connections share.
struct Shared {
    app: Router,
    slots: Arc<Slots>,
    security: Security,
}

/// Accepts connections and gives each a slot and a task; waits for no client.
async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>, mut shutdown: oneshot::Receiver<()>) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // E.g. too many open files: back off instead of spinning.
                    tracing::warn!("HTTP server: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let accepted = Instant::now();
        let Some(slot) = shared.slots.admit(accepted) else {
            tracing::warn!(%peer, "HTTP server: every connection serves a request; answering 503");
            refuse_busy(stream);
            continue;
        };
        tokio::spawn(serve_connection(shared.clone(), stream, peer, Arc::new(slot), accepted));
    }
}

/// 503 to a client no slot is free for, without waiting for it: what the socket takes now.
fn refuse_busy(stream: tokio::net::TcpStream) {
    let body = r#"{"error": "the server is busy: every connection serves a request; retry"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(answer.as_bytes());
}

/// One connection, from its slot to its close: TLS if on, then HTTP/1.1; closed early when
/// its slot goes to a new client, or when it has no request head within [`HEAD_TIMEOUT`].
async fn serve_connection(
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

fn router(ctx: Arc<ServerContext>) -> Router {
    let mut app = Router::new();
    for path in status::STATE_PATHS {
        app = app.route(path, get(state_document));
    }
    app.route("/status", get(status_document))
        .route("/metrics", get(metrics))
        .route("/drain", get(list_drains))
        .route("/drain/{ip}", post(drain).delete(undrain))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(plugin_endpoint)
        .with_state(ctx)
}

/// 405 for a path the host serves with other methods (axum adds the `Allow` header).
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not accept {method}; the Allow header lists the methods it accepts", uri.path()),
    )
}

/// A JSON error answer: `{"error": "..."}`.
fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    let body = json!({ "error": message.to_string() }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn lock_status(ctx: &ServerContext) -> Status {
    lock(&ctx.status).clone()
}

/// The state at this moment; asks the plugins for their `status()` when `with_plugins`.
async fn snapshot(ctx: &ServerContext, with_plugins: bool) -> Snapshot {
    let mut plugins = Vec::new();
    for p in ctx.plugins.iter().filter(|_| with_plugins) {
        let f = p.info.clone();
        let (info, health) = match tokio::time::timeout(PLUGIN_CALL_TIMEOUT, tokio::task::spawn_blocking(move || f()))
            .await
        {
            Ok(Ok(st)) => {
                let health = match &st.stats {
                    vpcrouter_plugin_api::PluginStats::Health(h) => Some(h.clone()),
                    vpcrouter_plugin_api::PluginStats::Watcher(_) => None,
                };
                (status::plugin_info(&st), health)
            }
            Ok(Err(e)) => (json!({"error": format!("status() failed: {e}")}), None),
            Err(_) => {
                (json!({"error": format!("status() did not answer within {} s", PLUGIN_CALL_TIMEOUT.as_secs())}), None)
            }
        };
        plugins.push(PluginView {
            name: p.name.clone(),
            kind: p.kind,
            version: p.version.clone(),
            arguments: p.arguments.clone(),
            info,
            health,
        });
    }
    Snapshot {
        status: lock_status(ctx),
        plugins,
        ec2: (ctx.ec2)(),
        cluster: ctx.cluster.as_ref().map(|c| c.status()),
        drains: ctx.drains.list(),
        now: SystemTime::now(),
    }
}

/// A JSON answer.
fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], status::indented(value)).into_response()
}

/// `GET /drain`: the drains in force, a JSON list.
async fn list_drains(State(ctx): State<Arc<ServerContext>>) -> Response {
    let spec = lock(&ctx.status).spec.clone();
    let list: Vec<serde_json::Value> =
        ctx.drains.list().iter().map(|d| status::drain_json(d, ctx.drains.scope(), &spec)).collect();
    json_response(StatusCode::OK, &serde_json::Value::Array(list))
}

/// The router of a drain path, or the 400 (or 403) answer.
fn drain_target(ctx: &ServerContext, raw: &str) -> Result<Ipv4Addr, Box<Response>> {
    if let Some(why) = &ctx.drain_refusal {
        return Err(Box::new(error(StatusCode::FORBIDDEN, why)));
    }
    vpcrouter_plugin_api::spec::parse_ipv4(raw).ok_or_else(|| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("'{raw}' is not an IPv4 address: name the router by its IP in the route spec"),
        ))
    })
}

/// `POST /drain/IP`, with an optional JSON body `{"reason": "..."}`: drains the router.
async fn drain(
    State(ctx): State<Arc<ServerContext>>,
    axum::extract::Path(raw): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let ip = match drain_target(&ctx, &raw) {
        Ok(ip) => ip,
        Err(r) => return *r,
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[serde(default)]
        reason: String,
    }
    let reason = if body.trim_ascii().is_empty() {
        String::new()
    } else {
        match serde_json::from_slice::<Body>(&body) {
            Ok(b) => b.reason,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(r#"the body must be JSON {{"reason": "..."}} (or empty): {e}"#),
                )
            }
        }
    };
    let reason = match crate::drain::check_reason(&reason) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match ctx.drains.drain(ip, &reason).await {
        Ok(changed) => {
            let spec = lock(&ctx.status).spec.clone();
            let Some(d) = changed.drain else { return error(StatusCode::INTERNAL_SERVER_ERROR, "drain not recorded") };
            let mut doc = status::drain_json(&d, ctx.drains.scope(), &spec);
            doc["drained"] = true.into();
            doc["changed"] = changed.changed.into();
            if doc["cidrs"].as_array().is_some_and(Vec::is_empty) {
                doc["warning"] =
                    format!("{ip} is not a candidate router of any CIDR in the route spec in force: the drain changes no route now").into();
            }
            json_response(StatusCode::OK, &doc)
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// `DELETE /drain/IP`: undrains the router (routes are not moved back).
async fn undrain(
    State(ctx): State<Arc<ServerContext>>,
    axum::extract::Path(raw): axum::extract::Path<String>,
) -> Response {
    let ip = match drain_target(&ctx, &raw) {
        Ok(ip) => ip,
        Err(r) => return *r,
    };
    match ctx.drains.undrain(ip).await {
        Ok(changed) => json_response(
            StatusCode::OK,
            &json!({"ip": ip.to_string(), "drained": false, "changed": changed.changed, "scope": ctx.drains.scope()}),
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// `/`, `/ips`, `/plugins`, `/route_info`, `/vpc`, negotiated on `Accept`.
async fn state_document(State(ctx): State<Arc<ServerContext>>, uri: Uri, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let Some(format) = status::negotiate(accept) else {
        return (
            StatusCode::NOT_ACCEPTABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "Cannot render data in acceptable content type\n",
        )
            .into_response();
    };
    let snap = snapshot(&ctx, uri.path() == "/plugins").await;
    match status::state_document(uri.path(), &ctx.info, &snap) {
        Some(doc) => {
            let (content_type, body) = status::render(&doc, format);
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "Requested state component not found"),
    }
}

/// `/status`: one JSON document for tools.
async fn status_document(State(ctx): State<Arc<ServerContext>>) -> Response {
    let doc = status::status_document(&ctx.info, &snapshot(&ctx, true).await);
    ([(header::CONTENT_TYPE, "application/json")], status::indented(&doc)).into_response()
}

/// `/metrics`: the Prometheus text format 0.0.4, or OpenMetrics when `Accept` asks for it.
async fn metrics(State(ctx): State<Arc<ServerContext>>, headers: HeaderMap) -> Response {
    let format = crate::metrics::Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let snap = snapshot(&ctx, true).await;
    let process = crate::metrics::process::ProcessStats::read()
        .inspect_err(|e| tracing::debug!(error = %e, "no process metrics"))
        .ok();
    let text = crate::metrics::encode(snap, &ctx.metrics, process, format);
    ([(header::CONTENT_TYPE, format.content_type())], text).into_response()
}

/// Everything else: a plugin endpoint, or 404/405.
async fn plugin_endpoint(State(ctx): State<Arc<ServerContext>>, method: Method, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let registered = ctx.endpoints.list();
    if !registered.iter().any(|(_, p, _)| *p == path) {
        return error(StatusCode::NOT_FOUND, format!("no endpoint {path}; GET / lists the state documents"));
    }
    let allowed: Vec<&str> = registered.iter().filter(|(_, p, _)| *p == path).map(|(m, _, _)| m.as_str()).collect();
    if !allowed.contains(&method.as_str()) {
        let mut response = error(StatusCode::METHOD_NOT_ALLOWED, format!("{path} accepts {}", allowed.join(", ")));
        if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
            response.headers_mut().insert(header::ALLOW, v);
        }
        return response;
    }
    let declared =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let too_large =
        || error(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is larger than {BODY_LIMIT} bytes"));
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return too_large();
    }
    let body = match Limited::new(body, BODY_LIMIT).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}")),
    };
    // The token the host checked is not the plugin's business (nor its log's).
    let host_checks_token = ctx.security.token.is_some();
    let headers: RVec<Tuple2<RString, RString>> = parts
        .headers
        .iter()
        .filter(|(name, _)| !(host_checks_token && *name == header::AUTHORIZATION))
        .map(|(name, value)| {
            Tuple2(
                name.as_str().to_ascii_lowercase().into(),
                String::from_utf8_lossy(value.as_bytes()).into_owned().into(),
            )
        })
        .collect();
    let request = HttpRequest {
        method: method.as_str().to_ascii_uppercase().into(),
        path: path.into(),
        query: parts.uri.query().unwrap_or("").into(),
        headers,
        body: body.to_vec().into(),
    };
    let endpoints = ctx.endpoints.clone();
    let answer =
        tokio::time::timeout(PLUGIN_CALL_TIMEOUT, tokio::task::spawn_blocking(move || endpoints.dispatch(request)))
            .await;
    match answer {
        Ok(Ok(Some(r))) => {
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let content_type =
                HeaderValue::from_str(&r.content_type).unwrap_or(HeaderValue::from_static("application/octet-stream"));
            let mut response = Response::new(Body::from(r.body.into_vec()));
            *response.status_mut() = status;
            response.headers_mut().insert(header::CONTENT_TYPE, content_type);
            response
        }
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, format!("no endpoint {method} {}", parts.uri.path())),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("the plugin endpoint failed: {e}")),
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the plugin did not answer within {} s", PLUGIN_CALL_TIMEOUT.as_secs()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use vpcrouter_plugin_api::{HttpHandler, HttpHandlerBox, HttpResponse, TD_Opaque};

    use super::*;

    struct Echo;
    impl HttpHandler for Echo {
        fn handle(&self, request: HttpRequest) -> HttpResponse {
            let ct = request.header("content-type").unwrap_or("").to_string();
            let auth = request.header("authorization").is_some();
            HttpResponse::json(
                201,
                json!({"len": request.body.len(), "ct": ct, "q": request.query.as_str(), "auth": auth}).to_string(),
            )
        }
    }

    fn start() -> (Server, Endpoints) {
        start_with(Security::default())
    }

    fn start_with(security: Security) -> (Server, Endpoints) {
        start_with_slots(security, MAX_CONNECTIONS)
    }

    fn start_with_slots(security: Security, slots: usize) -> (Server, Endpoints) {
        let dir = std::env::temp_dir().join(format!("vpcrouter-http-test-{}", std::process::id()));
        let drains = crate::drain::Drains::open(&dir, |_| {}).unwrap();
        start_full(security, slots, drains, None)
    }

    fn start_full(
        security: Security,
        slots: usize,
        drains: crate::drain::Drains,
        drain_refusal: Option<String>,
    ) -> (Server, Endpoints) {
        let endpoints = Endpoints::default();
        let reg = endpoints.registry_for("echo");
        assert!(reg.register("POST".into(), "/echo".into(), HttpHandlerBox::from_value(Echo, TD_Opaque)).is_ok());
        let ctx = ServerContext {
            info: ServerInfo {
                version_line: "v".into(),
                start_time: SystemTime::now(),
                params: Default::default(),
                ignore_routes: vec![],
            },
            status: Arc::default(),
            endpoints: endpoints.clone(),
            plugins: vec![PluginSource {
                name: "echo".into(),
                kind: "watcher",
                version: "1".into(),
                arguments: BTreeMap::new(),
                info: Arc::new(|| vpcrouter_plugin_api::PluginStatus {
                    version: "1".into(),
                    params: Default::default(),
                    stats: vpcrouter_plugin_api::PluginStats::Watcher(Default::default()),
                    details: "{\"x\": 1}".into(),
                }),
            }],
            ec2: Arc::new(crate::status::Ec2View::default),
            metrics: Arc::default(),
            cluster: None,
            security,
            drains,
            drain_refusal,
        };
        (bind("127.0.0.1", 0).unwrap().serve_with_slots(ctx, slots).unwrap(), endpoints)
    }

    /// One request on its own connection; returns (status, head, body).
    fn call(server: &Server, raw: &[u8]) -> (u16, String, String) {
        let mut s = std::net::TcpStream::connect(server.local_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(raw).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (status, head.to_ascii_lowercase(), body.to_string())
    }

    #[test]
    fn routes_to_plugins_and_enforces_limits() {
        let (server, _endpoints) = start();
        let (status, head, body) = call(&server, b"POST /echo?a=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
        assert_eq!(status, 201, "{head}{body}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            json!({"len": 2, "ct": "application/json", "q": "a=1", "auth": false})
        );
        let (status, head, _) = call(&server, b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(status, 405);
        assert!(head.contains("allow: post"), "{head}");
        assert_eq!(call(&server, b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").0, 404);
        let big = format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            BODY_LIMIT + 1
        );
        assert_eq!(call(&server, big.as_bytes()).0, 413);
        // Chunked, without a declared length, over the limit.
        let mut chunked =
            b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let chunk = vec![b'a'; 256 * 1024];
        for _ in 0..5 {
            chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            chunked.extend_from_slice(&chunk);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(call(&server, &chunked).0, 413);
        let (status, _, body) =
            call(&server, b"GET /plugins HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAccept: application/json\r\n\r\n");
        assert_eq!(
            (status, body.as_str()),
            (
                200,
                r#"{"echo":{"params":{},"stats":{"errors":0,"last_error":null,"specs_sent":0},"version":"1","x":1}}"#
            )
        );
        assert_eq!(
            call(&server, b"GET /ips HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAccept: image/png\r\n\r\n").0,
            406
        );
        let (status, head, body) = call(&server, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(status, 200);
        assert!(
            head.contains("text/plain; version=0.0.4") && body.contains("vpcrouter_reconciles_total 0"),
            "{head}{body}"
        );
        server.stop();
    }

    #[test]
    fn every_error_answer_is_json() {
        let (server, _endpoints) = start();
        let json_error = |raw: &[u8]| {
            let (status, head, body) = call(&server, raw);
            let doc = serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default();
            assert!(head.contains("content-type: application/json"), "{status}: {head}");
            (status, head, doc["error"].as_str().unwrap_or_default().to_string())
        };
        // Wrong methods on the host's own paths: 405 with Allow and a JSON body.
        let (status, head, message) =
            json_error(b"POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        assert_eq!(status, 405);
        assert!(head.contains("allow: get,head"), "{head}");
        assert!(message.contains("/status does not accept POST"), "{message}");
        let (status, head, _) = json_error(b"GET /drain/10.0.0.1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(status, 405);
        assert!(head.contains("allow: post,delete"), "{head}");
        // Heads hyper refuses itself.
        let (status, _, message) = json_error(b"GARBAGE\r\n\r\n");
        assert_eq!(status, 400);
        assert!(message.contains("not valid HTTP/1.1"), "{message}");
        assert_eq!(json_error(b"GET /a b HTTP/1.1\r\n\r\n").0, 400);
        for len in [URL_LIMIT + 1, 1 << 20] {
            let raw = format!("GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "a".repeat(len));
            let (status, _, message) = json_error(raw.as_bytes());
            assert_eq!(status, 414, "{len}");
            assert_eq!(message, format!("the request target (URL) is longer than {URL_LIMIT} bytes"));
        }
        let raw = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(HEAD_LIMIT));
        let (status, _, message) = json_error(raw.as_bytes());
        assert_eq!(status, 431);
        assert!(message.contains(&format!("larger than {HEAD_LIMIT} bytes")), "{message}");
        // The longest target served.
        let raw = format!("GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "a".repeat(URL_LIMIT - 1));
        assert_eq!(json_error(raw.as_bytes()).0, 404);
        server.stop();
    }

    #[test]
    fn the_token_guards_writes_and_stays_with_the_host() {
        let security = Security { token: Some(Arc::new(TokenFile::from_token("t0k"))), ..Security::default() };
        let (server, endpoints) = start_with(security.clone());
        let post = |auth: &str| {
            call(
                &server,
                format!("POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Length: 2\r\n\r\n{{}}")
                    .as_bytes(),
            )
        };
        let (status, head, body) = post("");
        assert_eq!(status, 401, "{head}{body}");
        assert!(
            head.contains(r#"www-authenticate: bearer realm="vpcrouter""#) && !head.contains("invalid_token"),
            "{head}"
        );
        assert!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"].is_string(), "{body}");
        let (status, head, _) = post("Authorization: Bearer nope\r\n");
        assert_eq!(status, 401);
        assert!(head.contains(r#"www-authenticate: bearer realm="vpcrouter", error="invalid_token""#), "{head}");
        // Refused before routing: a path nobody serves gets 401 too, not 404.
        assert_eq!(call(&server, b"DELETE /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").0, 401);
        let (status, _, body) = post("Authorization: Bearer t0k\r\n");
        assert_eq!(status, 201, "{body}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap()["auth"],
            false,
            "not passed to the plugin"
        );
        assert_eq!(call(&server, b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").0, 200);
        server.stop();

        // Off loopback, a write endpoint needs authentication, or the explicit opt-out.
        let any: SocketAddr = "0.0.0.0:33289".parse().unwrap();
        let open = Security::default();
        let err = check_exposure(any, &endpoints, &open, false).unwrap_err();
        assert_eq!(err, "refusing to serve POST /echo on 0.0.0.0:33289 without authentication: add --http-token-file FILE, or listen on a loopback address (-a 127.0.0.1), or pass --http-allow-unauthenticated to accept this risk");
        assert!(check_exposure(any, &endpoints, &open, true).unwrap().unwrap().contains("POST /echo on 0.0.0.0:33289"));
        assert_eq!(check_exposure(any, &endpoints, &security, false), Ok(None));
        for local in ["127.0.0.1:1", "127.1.2.3:1", "[::1]:1", "[::ffff:127.0.0.1]:1"] {
            assert_eq!(check_exposure(local.parse().unwrap(), &endpoints, &open, false), Ok(None), "{local}");
        }
        assert_eq!(check_exposure(any, &Endpoints::default(), &open, false), Ok(None), "nothing to change");
    }

    #[test]
    fn drain_endpoints_need_the_token_check_the_ip_and_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let seen: Arc<Mutex<Vec<std::collections::BTreeSet<Ipv4Addr>>>> = Arc::default();
        let s = seen.clone();
        let drains = crate::drain::Drains::open(dir.path(), move |set| lock(&s).push(set)).unwrap();
        let security = Security { token: Some(Arc::new(TokenFile::from_token("t0k"))), ..Security::default() };
        let (server, _) = start_full(security, MAX_CONNECTIONS, drains, None);
        let req = |method: &str, path: &str, auth: bool, body: &str| {
            let auth = if auth { "Authorization: Bearer t0k\r\n" } else { "" };
            let raw = format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let (status, _, body) = call(&server, raw.as_bytes());
            (status, serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default())
        };
        assert_eq!(req("POST", "/drain/10.0.0.1", false, "").0, 401, "protected like POST /route_spec");
        assert_eq!(req("DELETE", "/drain/10.0.0.1", false, "").0, 401);
        let (status, doc) = req("POST", "/drain/10.0.0.300", true, "");
        assert_eq!(
            (status, doc["error"].as_str().is_some_and(|e| e.contains("not an IPv4 address"))),
            (400, true),
            "{doc}"
        );
        assert_eq!(req("POST", "/drain/10.0.0.1", true, "{\"reason\": 5}").0, 400);
        assert_eq!(req("POST", "/drain/10.0.0.1", true, "{\"reson\": \"x\"}").0, 400, "unknown field");
        let (status, doc) = req("POST", "/drain/10.0.0.1", true, "{\"reason\": \"patching\"}");
        assert_eq!(status, 200, "{doc}");
        assert_eq!(
            (doc["drained"].as_bool(), doc["changed"].as_bool(), doc["reason"].as_str()),
            (Some(true), Some(true), Some("patching"))
        );
        assert!(doc["warning"].as_str().is_some_and(|w| w.contains("not a candidate router")), "no spec: {doc}");
        let (status, again) = req("POST", "/drain/10.0.0.1", true, "");
        assert_eq!((status, again["changed"].as_bool(), &again["since"]), (200, Some(false), &doc["since"]));
        let (status, list) = req("GET", "/drain", false, "");
        assert_eq!(status, 200);
        assert_eq!(
            list.as_array().map(|l| l.iter().map(|d| d["ip"].clone()).collect::<Vec<_>>()),
            Some(vec![json!("10.0.0.1")])
        );
        assert_eq!(list[0]["scope"], "local");
        let (_, metrics) = (0, call(&server, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").2);
        assert!(metrics.contains("vpcrouter_router_drained{router=\"10.0.0.1\"} 1"), "{metrics}");
        assert_eq!(req("GET", "/drain/10.0.0.1", false, "").0, 405);
        let (status, doc) = req("DELETE", "/drain/10.0.0.1", true, "");
        assert_eq!((status, doc["changed"].as_bool()), (200, Some(true)));
        assert_eq!(req("DELETE", "/drain/10.0.0.1", true, "").1["changed"], false);
        assert_eq!(*lock(&seen), vec![[ip4("10.0.0.1")].into(), Default::default()]);
        server.stop();

        // Off loopback without authentication: refused, with the reason.
        let drains = crate::drain::Drains::open(dir.path(), |_| {}).unwrap();
        let (server, _) = start_full(Security::default(), MAX_CONNECTIONS, drains, Some("needs a token".into()));
        let (status, _, body) = call(
            &server,
            b"POST /drain/10.0.0.1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!((status, body.contains("needs a token")), (403, true), "{body}");
        server.stop();
    }

    fn ip4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn a_silent_connection_loses_its_slot_after_the_head_timeout() {
        let (server, _endpoints) = start();
        let started = Instant::now();
        let mut idle = std::net::TcpStream::connect(server.local_addr()).unwrap();
        idle.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = Vec::new();
        let _ = idle.read_to_end(&mut out);
        let after = started.elapsed();
        assert!(after >= HEAD_TIMEOUT && after < HEAD_TIMEOUT * 3, "{after:?}");
        server.stop();
    }

    #[test]
    fn a_new_client_takes_the_slot_of_the_oldest_idle_connection() {
        let (server, _endpoints) = start_with_slots(Security::default(), 3);
        let connect = || {
            let s = std::net::TcpStream::connect(server.local_addr()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            s
        };
        let mut silent: Vec<_> = (0..3).map(|_| connect()).collect();
        let _ = silent[1].write_all(b"GET /status HT");
        let started = Instant::now();
        let (status, _, _) = call(&server, b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(status, 200);
        assert!(started.elapsed() < Duration::from_millis(500), "answered after {:?}", started.elapsed());
        // The oldest silent one was closed for it (well before its head timeout).
        let mut buf = [0u8; 16];
        assert_eq!(silent[0].read(&mut buf).unwrap_or(0), 0);
        assert!(started.elapsed() < HEAD_TIMEOUT - Duration::from_millis(200), "{:?}", started.elapsed());
        server.stop();
    }

    #[test]
    fn a_taken_port_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = bind("127.0.0.1", port).unwrap_err().to_string();
        assert!(
            err.contains(&format!("cannot listen on 127.0.0.1:{port}"))
                && err.contains("choose another port with -p/--port"),
            "{err}"
        );
        assert!(bind("example.com", 1).unwrap_err().to_string().contains("-a/--address"));
    }
}
