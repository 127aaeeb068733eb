//! Services the host lends a plugin: logging and HTTP endpoints on the status server.

use abi_stable::sabi_trait;
use abi_stable::std_types::{RArc, RBox, RResult, RStr, RString, RVec, Tuple2};
use abi_stable::StableAbi;

/// Severity of a log line sent through the host.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Details for `--verbose`.
    Debug,
    /// Normal operation.
    Info,
    /// Something is off but the plugin goes on.
    Warn,
    /// Something failed.
    Error,
}

/// The host's log sink. Lines appear in the host's log tagged with the plugin's name.
#[sabi_trait]
pub trait HostLogger: Send + Sync + Clone {
    /// Writes one log line.
    fn log(&self, level: LogLevel, message: RStr<'_>);

    /// True when lines of this level are kept (skip formatting when not).
    #[sabi(last_prefix_field)]
    fn enabled(&self, level: LogLevel) -> bool;
}

/// A host logger behind a shared pointer; cheap to clone into plugin threads.
pub type HostLoggerBox = HostLogger_TO<'static, RArc<()>>;

/// Convenience wrapper around [`HostLoggerBox`] with one method per level.
#[repr(transparent)]
#[derive(StableAbi, Clone)]
pub struct Logger(pub HostLoggerBox);

impl Logger {
    /// Wraps any [`HostLogger`] implementation (the host does this; tests may too).
    pub fn new<T: HostLogger + Send + Sync + Clone + 'static>(sink: T) -> Self {
        Logger(HostLoggerBox::from_ptr(RArc::new(sink), abi_stable::sabi_trait::TD_Opaque))
    }
    /// Logs at `level`.
    pub fn log(&self, level: LogLevel, message: impl AsRef<str>) {
        self.0.log(level, message.as_ref().into());
    }
    /// True when `level` is kept.
    pub fn enabled(&self, level: LogLevel) -> bool {
        self.0.enabled(level)
    }
    /// Logs at debug level.
    pub fn debug(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Debug, message)
    }
    /// Logs at info level.
    pub fn info(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Info, message)
    }
    /// Logs at warn level.
    pub fn warn(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Warn, message)
    }
    /// Logs at error level.
    pub fn error(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Error, message)
    }
}

impl std::fmt::Debug for Logger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Logger")
    }
}

/// An HTTP request routed to a plugin endpoint by the host's status server.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default)]
pub struct HttpRequest {
    /// Upper-case method, e.g. `POST`.
    pub method: RString,
    /// Path without query string, e.g. `/route_spec`.
    pub path: RString,
    /// Raw query string without `?` (empty when none).
    pub query: RString,
    /// Header `(name, value)` pairs; names lower-case.
    pub headers: RVec<Tuple2<RString, RString>>,
    /// The body, already limited in size by the host.
    pub body: RVec<u8>,
}

impl HttpRequest {
    /// A request without query, headers or body (for tests; the host builds the real ones).
    pub fn new(method: &str, path: &str) -> Self {
        HttpRequest { method: method.into(), path: path.into(), ..HttpRequest::default() }
    }
    /// Adds a header (its name lower-cased, as the host passes them).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push(Tuple2(name.to_ascii_lowercase().into(), value.into()));
        self
    }
    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into().into();
        self
    }
    /// The body as UTF-8 text; the error says where the first bad byte is.
    pub fn text(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.body)
    }
    /// The first header with this name (names are compared without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|t| t.0.eq_ignore_ascii_case(name)).map(|t| t.1.as_str())
    }
}

/// A plugin endpoint's answer.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct HttpResponse {
    /// HTTP status code.
    pub status: u16,
    /// Value of the `Content-Type` header.
    pub content_type: RString,
    /// The body.
    pub body: RVec<u8>,
}

impl HttpResponse {
    /// A JSON answer.
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        HttpResponse { status, content_type: "application/json".into(), body: body.into().into_bytes().into() }
    }
    /// A plain-text answer.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        HttpResponse { status, content_type: "text/plain; charset=utf-8".into(), body: body.into().into_bytes().into() }
    }
}

/// Handles requests for one endpoint a plugin registered. Called from the host's server
/// threads, possibly concurrently; must not block for long.
#[sabi_trait]
pub trait HttpHandler: Send + Sync {
    /// Answers one request.
    #[sabi(last_prefix_field)]
    fn handle(&self, request: HttpRequest) -> HttpResponse;
}

/// An owned HTTP handler object.
pub type HttpHandlerBox = HttpHandler_TO<'static, RBox<()>>;

/// A closure is a handler: `ctx.register_endpoint("GET", "/x", |_req| HttpResponse::text(200, "ok"))`.
impl<F> HttpHandler for F
where
    F: Fn(HttpRequest) -> HttpResponse + Send + Sync,
{
    fn handle(&self, request: HttpRequest) -> HttpResponse {
        self(request)
    }
}

/// The host's status server, where plugins may add endpoints.
#[sabi_trait]
pub trait HttpRegistry: Send + Sync + Clone {
    /// Routes `method` requests for exact `path` (e.g. `GET`, `/route_spec`) to `handler`.
    /// Fails when the path is taken by the host or another plugin.
    #[sabi(last_prefix_field)]
    fn register(&self, method: RStr<'_>, path: RStr<'_>, handler: HttpHandlerBox) -> RResult<(), RString>;
}

/// A shared handle to the host's HTTP registry.
pub type HttpRegistryBox = HttpRegistry_TO<'static, RArc<()>>;
