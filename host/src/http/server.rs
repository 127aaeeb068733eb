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
//! Limits: request bodies above [`BODY_LIMIT`] get 413; a client must send its request
//! head within [`HEADER_TIMEOUT`] (this also closes idle keep-alive connections) and the
//! whole request within [`REQUEST_TIMEOUT`] (408); at most [`MAX_CONNECTIONS`] connections
//! are served at once, further ones wait in the listen backlog.

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
use axum::routing::get;
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::sync::{oneshot, Semaphore};
use tower::ServiceExt;
use vpcrouter_plugin_api::HttpRequest;

use super::Endpoints;
use crate::state::Status;
use crate::status::{self, PluginView, ServerInfo, Snapshot};
use crate::sync::lock;

/// Largest request body accepted (1 MiB); larger ones get 413.
pub const BODY_LIMIT: usize = 1 << 20;
/// Time a client has to send a request head once connected or between requests.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to send a whole request, body included (then 408).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest life of one connection.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
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

/// Binds `address` (`localhost` or an IP literal) and `port` (0 = any free port).
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
    let listener = std::net::TcpListener::bind(SocketAddr::new(ip, port)).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    Ok(Listener { listener, addr })
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
    /// The histograms of `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Cluster mode's membership, if on.
    pub cluster: Option<crate::cluster::ClusterHandle>,
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

    /// Starts serving on the server's own thread and runtime.
    pub fn serve(self, ctx: ServerContext) -> Result<Server, ServerError> {
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
        let app = router(Arc::new(ctx));
        let addr = self.addr;
        let thread = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                tracing::info!(%addr, "HTTP server: Started to listen for requests");
                rt.block_on(accept_loop(listener, app, rx));
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

async fn accept_loop(listener: tokio::net::TcpListener, app: Router, mut shutdown: oneshot::Receiver<()>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
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
        let app = app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| handle(app.clone(), peer, req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, "HTTP connection closed: {e}"),
                Err(_) => tracing::debug!(%peer, "HTTP connection closed after {} s", CONNECTION_TIMEOUT.as_secs()),
            }
        });
    }
}

/// Serves one request with the request deadline, and logs it.
async fn handle(
    app: Router,
    peer: SocketAddr,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<Response, Infallible> {
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, app.oneshot(req)).await {
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

fn router(ctx: Arc<ServerContext>) -> Router {
    let mut app = Router::new();
    for path in status::STATE_PATHS {
        app = app.route(path, get(state_document));
    }
    app.route("/status", get(status_document)).route("/metrics", get(metrics)).fallback(plugin_endpoint).with_state(ctx)
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
        histograms: ctx.metrics.encode(),
        cluster: ctx.cluster.as_ref().map(|c| c.status()),
        now: SystemTime::now(),
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

/// `/metrics`: Prometheus text format.
async fn metrics(State(ctx): State<Arc<ServerContext>>) -> Response {
    let text = status::metrics(&snapshot(&ctx, true).await);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
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
    let headers: RVec<Tuple2<RString, RString>> = parts
        .headers
        .iter()
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
            HttpResponse::json(
                201,
                json!({"len": request.body.len(), "ct": ct, "q": request.query.as_str()}).to_string(),
            )
        }
    }

    fn start() -> (Server, Endpoints) {
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
        };
        (bind("127.0.0.1", 0).unwrap().serve(ctx).unwrap(), endpoints)
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
            json!({"len": 2, "ct": "application/json", "q": "a=1"})
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
