//! What the server's tests share: a server on a free loopback port with an `echo` plugin
//! endpoint (`POST /echo`), and one raw HTTP/1.1 request on its own connection.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;
use vpcrouter_plugin_api::{HttpHandler, HttpHandlerBox, HttpRequest, HttpResponse, TD_Opaque};
use vpcrouter_plugin_host::Endpoints;
use vpcrouter_status::document::ServerInfo;

use crate::context::{PluginSource, ServerContext};
use crate::listener::{bind, Server, MAX_CONNECTIONS};
use crate::security::Security;

/// A plugin handler that answers 201 with what it got: body length, content type, query,
/// and whether it saw an `Authorization` header.
pub(crate) struct Echo;
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

pub(crate) fn start() -> (Server, Endpoints) {
    start_with(Security::default())
}

pub(crate) fn start_with(security: Security) -> (Server, Endpoints) {
    start_with_slots(security, MAX_CONNECTIONS)
}

pub(crate) fn start_with_slots(security: Security, slots: usize) -> (Server, Endpoints) {
    let dir = std::env::temp_dir().join(format!("vpcrouter-http-test-{}", std::process::id()));
    let drains = vpcrouter_drains::Drains::open(&dir, |_| {}).unwrap();
    start_full(security, slots, drains, None)
}

pub(crate) fn start_full(
    security: Security,
    slots: usize,
    drains: vpcrouter_drains::Drains,
    drain_refusal: Option<String>,
) -> (Server, Endpoints) {
    let endpoints = echo_endpoints();
    let ctx = context(security, endpoints.clone(), drains, drain_refusal);
    (bind("127.0.0.1", 0).unwrap().serve_with_slots(ctx, slots).unwrap(), endpoints)
}

/// A server whose context has `notifiers`.
pub(crate) fn start_notifying(notifiers: vpcrouter_notify::Notifiers) -> Server {
    let dir = std::env::temp_dir().join(format!("vpcrouter-http-test-{}", std::process::id()));
    let drains = vpcrouter_drains::Drains::open(&dir, |_| {}).unwrap();
    let ctx = ServerContext { notifiers, ..context(Security::default(), echo_endpoints(), drains, None) };
    bind("127.0.0.1", 0).unwrap().serve_with_slots(ctx, MAX_CONNECTIONS).unwrap()
}

/// The context of a test server: the `echo` plugin, no notifier.
fn context(
    security: Security,
    endpoints: Endpoints,
    drains: vpcrouter_drains::Drains,
    drain_refusal: Option<String>,
) -> ServerContext {
    ServerContext {
        info: ServerInfo {
            version_line: "v".into(),
            start_time: SystemTime::now(),
            params: Default::default(),
            ignore_routes: vec![],
        },
        status: Arc::default(),
        endpoints,
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
        ec2: Arc::new(vpcrouter_engine::Ec2View::default),
        metrics: Arc::default(),
        cluster: None,
        security,
        drains,
        drain_refusal,
        notifiers: vpcrouter_notify::Notifiers::new("vpc-test"),
    }
}

/// One request on its own connection; returns (status, head, body).
pub(crate) fn call(server: &Server, raw: &[u8]) -> (u16, String, String) {
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

/// Endpoints with the `echo` plugin's `POST /echo`.
pub(crate) fn echo_endpoints() -> Endpoints {
    let endpoints = Endpoints::default();
    let reg = endpoints.registry_for("echo");
    assert!(reg.register("POST".into(), "/echo".into(), HttpHandlerBox::from_value(Echo, TD_Opaque)).is_ok());
    endpoints
}

pub(crate) fn ip4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
