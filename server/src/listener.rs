//! The listening socket, the server's thread and runtime, and the accept loop; what a
//! connection goes through (TLS, the head deadline, the token, the request deadline) is
//! in `connection`, what a request gets in [`crate::routes`].
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
//! rule is [`crate::auth::needs_token`]) need `Authorization: Bearer <token>`, else 401;
//! with `--tls-cert`/`--tls-key` the server speaks HTTPS only (rustls), and with
//! `--tls-client-ca` it requires client certificates.
//! [`check_exposure`](crate::security::check_exposure) refuses to start a server that would
//! take unauthenticated writes off loopback.
//!
//! Connections and hostile clients: the accept loop only accepts and hands each connection
//! a slot of the connection table ([`crate::conns`]); it never waits for a client. There
//! are [`max_connections`] slots (up to [`MAX_CONNECTIONS`], kept below the open-files
//! limit) and a listen backlog of [`LISTEN_BACKLOG`]. A new connection must complete its
//! TLS handshake and first request head within [`HEAD_TIMEOUT`] (1 s), so a client that
//! connects and sends nothing, or dribbles its head, loses its slot quickly; between
//! keep-alive requests a connection may stay idle for [`IDLE_TIMEOUT`]. When every slot is
//! taken, the connection idle the longest (no request in progress) is closed to admit the
//! new client, so new clients are answered at once even when hundreds of slow ones hold
//! connections; a connection serving a request is never closed for another (when all
//! slots serve requests, the new client gets 503). Request bodies above
//! [`BODY_LIMIT`](crate::protocol::BODY_LIMIT) get 413, request targets above
//! [`URL_LIMIT`](crate::protocol::URL_LIMIT) 414 and heads above
//! [`HEAD_LIMIT`](crate::protocol::HEAD_LIMIT) 431, a request must arrive whole within
//! [`REQUEST_TIMEOUT`] (408), and a connection lives at most [`CONNECTION_TIMEOUT`].
//!
//! Every error answer has a JSON body `{"error": "..."}`: the server's own, axum's 405
//! (with `Allow`), and those hyper writes itself for heads it cannot parse
//! ([`crate::protocol::JsonErrors`]).
//!
//! Layout: this module binds ([`bind`]), sizes the connection table ([`max_connections`]),
//! starts the thread ([`Listener::serve`]) and runs the accept loop; `connection` serves one
//! connection, from its slot to its close.

mod connection;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::Router;
use tokio::sync::oneshot;

use crate::conns::Slots;
use crate::context::ServerContext;
use crate::routes;
use crate::security::Security;

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
    /// The bound socket, non-blocking, handed to the server's runtime by [`Listener::serve`].
    listener: std::net::TcpListener,
    /// The address actually bound (the port chosen when `-p 0`), for the log and the tests.
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
/// (`RLIMIT_NOFILE`) would not leave `FD_RESERVE` descriptors beside them (at least 16).
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

/// The running server; [`Server::stop`] (or drop) ends it.
pub struct Server {
    /// The address the server listens on.
    addr: SocketAddr,
    /// Tells the accept loop to return; taken (sent) once, by the first stop.
    shutdown: Option<oneshot::Sender<()>>,
    /// The `http` thread, joined by stop (taken, so drop after stop does nothing).
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

    pub(crate) fn serve_with_slots(self, ctx: ServerContext, capacity: usize) -> Result<Server, ServerError> {
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
        let shared = Arc::new(Shared { app: routes::router(Arc::new(ctx)), slots: Slots::new(capacity), security });
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
    /// The routes, cloned for each request.
    app: Router,
    /// The connection table: a new connection needs a slot, and may evict an idle one.
    slots: Arc<Slots>,
    /// The token checked before routing, and the TLS configuration of the handshake.
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
        tokio::spawn(connection::serve_connection(shared.clone(), stream, peer, Arc::new(slot), accepted));
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
