//! The `http` watcher: route specs are posted to the host's status server.
//!
//! `vpcrouter -m http` adds two endpoints to the status server (`-a`/`-p`):
//! * `POST /route_spec` with a JSON route spec (`Content-Type: application/json`). It is
//!   checked by the shared validation: a valid spec answers 200 `{"status": "ok", ...}`
//!   and is sent to the engine; anything else answers 400 `{"error": "..."}` naming the
//!   bad key or value, and the last accepted spec stays in force.
//! * `GET /route_spec` answers the last accepted spec, or 404 `{"error": ...}` before any.
//!
//! The body size limit (413) and timeouts are enforced by the host before a request
//! reaches this plugin.

#![deny(unsafe_code)]

use std::sync::{Arc, Mutex, MutexGuard};

use vpcrouter_plugin_api::export::PluginDescription;
use vpcrouter_plugin_api::{
    spec, HttpHandler, HttpHandlerBox, HttpRequest, HttpResponse, Logger, PluginArgs,
    PluginContext, RSender, RouteSpec, WatcherPlugin, TD_Opaque,
};

/// The path both endpoints serve.
pub const PATH: &str = "/route_spec";

/// What the handlers share with the plugin object.
#[derive(Default)]
struct Shared {
    /// The last accepted spec (the one in force).
    spec: Option<RouteSpec>,
    /// The engine's queue; `None` before `start` and after `stop`.
    specs: Option<RSender<RouteSpec>>,
    log: Option<Logger>,
    accepted: u64,
    rejected: u64,
}

type SharedRef = Arc<Mutex<Shared>>;

fn lock(shared: &SharedRef) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// The watcher.
#[derive(Default)]
pub struct Http {
    shared: SharedRef,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Http")
    }
}

impl PluginDescription for Http {
    const NAME: &'static str = "http";
    const DESCRIPTION: &'static str =
        "Route specs posted as JSON to /route_spec on the status server (-a/-p)";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
}

fn error(status: u16, message: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::json(status, serde_json::json!({ "error": message.to_string() }).to_string())
}

/// True for `application/json`, with or without parameters such as `charset`.
fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// `GET /route_spec`.
struct Get(SharedRef);

impl HttpHandler for Get {
    fn handle(&self, _request: HttpRequest) -> HttpResponse {
        match &lock(&self.0).spec {
            Some(spec) => HttpResponse::json(200, spec.to_json()),
            None => error(404, "no route spec has been posted yet; POST one to /route_spec"),
        }
    }
}

/// `POST /route_spec`.
struct Post(SharedRef);

impl Post {
    fn parse(request: &HttpRequest) -> Result<RouteSpec, (u16, String)> {
        if !is_json(request.header("content-type")) {
            let got = request.header("content-type").unwrap_or("none");
            return Err((400, format!("Content-Type must be application/json (got {got}); send the spec with -H 'Content-Type: application/json'")));
        }
        let text = std::str::from_utf8(&request.body)
            .map_err(|e| (400, format!("the route spec is not UTF-8 text: {e}")))?;
        let spec = spec::parse_json(text).map_err(|e| (400, e.to_string()))?;
        if spec.is_empty() {
            return Err((400, "the route spec has no CIDR; vpcrouter never removes all routes by an empty spec, so it was not accepted".into()));
        }
        Ok(spec)
    }
}

impl HttpHandler for Post {
    fn handle(&self, request: HttpRequest) -> HttpResponse {
        let parsed = Self::parse(&request);
        // Holding the lock while sending orders concurrent posts: the last one to take the
        // lock is both the spec in force here and the last spec the engine receives.
        let mut shared = lock(&self.0);
        let log = shared.log.clone();
        let spec = match parsed {
            Ok(spec) => spec,
            Err((status, message)) => {
                shared.rejected += 1;
                if let Some(log) = &log {
                    log.error(format!("Config ignored: {message}"));
                }
                return error(status, message);
            }
        };
        let Some(specs) = &shared.specs else {
            return error(503, "the http watcher is not running");
        };
        if specs.send(spec.clone()).is_err() {
            return error(503, "vpcrouter is shutting down; the route spec was not accepted");
        }
        if let Some(log) = &log {
            log.info(format!("New route spec posted: {} CIDR(s)", spec.routes.len()));
        }
        let cidrs = spec.routes.len();
        shared.spec = Some(spec);
        shared.accepted += 1;
        HttpResponse::json(200, serde_json::json!({ "status": "ok", "cidrs": cidrs }).to_string())
    }
}

impl WatcherPlugin for Http {
    fn create(_args: &PluginArgs) -> Result<Self, String> {
        Ok(Http::default())
    }

    fn start(&mut self, ctx: PluginContext, specs: RSender<RouteSpec>) -> Result<(), String> {
        {
            let mut shared = lock(&self.shared);
            shared.specs = Some(specs);
            shared.log = Some(ctx.log.clone());
        }
        let handlers: [(&str, HttpHandlerBox); 2] = [
            ("GET", HttpHandlerBox::from_value(Get(self.shared.clone()), TD_Opaque)),
            ("POST", HttpHandlerBox::from_value(Post(self.shared.clone()), TD_Opaque)),
        ];
        for (method, handler) in handlers {
            ctx.http
                .register(method.into(), PATH.into(), handler)
                .into_result()
                .map_err(|e| format!("cannot serve {method} {PATH}: {e}"))?;
        }
        ctx.log.info(format!("Http watcher plugin: Starting to watch for route spec on {PATH}"));
        Ok(())
    }

    fn stop(&mut self) -> Result<(), String> {
        let mut shared = lock(&self.shared);
        shared.specs = None;
        if let Some(log) = &shared.log {
            log.info("Http watcher plugin: Stopped");
        }
        Ok(())
    }

    fn info(&self) -> serde_json::Value {
        let shared = lock(&self.shared);
        serde_json::json!({
            "version": Self::VERSION,
            "params": {},
            "stats": {"specs_accepted": shared.accepted, "specs_rejected": shared.rejected},
        })
    }
}

vpcrouter_plugin_api::export_plugin!(watcher: Http);

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use vpcrouter_plugin_api::abi_stable::std_types::{RArc, RResult, RStr, RString, Tuple2};
    use vpcrouter_plugin_api::channel::unbounded;
    use vpcrouter_plugin_api::{HttpRegistry, HttpRegistryBox, LogLevel, RReceiver};
    use vpcrouter_testkit::{context, nothing_within, recv_within};

    use super::*;

    type Handlers = BTreeMap<(String, String), Arc<HttpHandlerBox>>;

    /// A registry that keeps the handlers so tests can call them.
    #[derive(Clone, Default)]
    struct Registry(Arc<Mutex<Handlers>>);

    impl HttpRegistry for Registry {
        fn register(&self, method: RStr<'_>, path: RStr<'_>, handler: HttpHandlerBox) -> RResult<(), RString> {
            let key = (method.to_string(), path.to_string());
            let mut map = self.0.lock().unwrap();
            if map.contains_key(&key) {
                return RResult::RErr("taken".into());
            }
            map.insert(key, Arc::new(handler));
            RResult::ROk(())
        }
    }

    impl Registry {
        fn call(&self, method: &str, content_type: Option<&str>, body: &str) -> (u16, serde_json::Value) {
            let handler = self.0.lock().unwrap().get(&(method.to_string(), PATH.to_string())).cloned().expect("registered");
            let headers = content_type.map(|ct| Tuple2(RString::from("content-type"), RString::from(ct))).into_iter().collect();
            let request = HttpRequest { method: method.into(), path: PATH.into(), headers, body: body.as_bytes().to_vec().into(), ..Default::default() };
            let response = handler.handle(request);
            assert_eq!(response.content_type, "application/json");
            (response.status, serde_json::from_slice(&response.body).expect("JSON body"))
        }
    }

    struct Running {
        plugin: Http,
        registry: Registry,
        rx: RReceiver<RouteSpec>,
        logs: vpcrouter_testkit::LogCapture,
    }

    fn start() -> Running {
        let mut plugin = Http::create(&PluginArgs::default()).unwrap();
        let (mut ctx, logs) = context("http");
        let registry = Registry::default();
        ctx.http = HttpRegistryBox::from_ptr(RArc::new(registry.clone()), TD_Opaque);
        let (tx, rx) = unbounded();
        plugin.start(ctx, tx).unwrap();
        Running { plugin, registry, rx, logs }
    }

    const JSON: Option<&str> = Some("application/json");

    #[test]
    fn valid_post_is_sent_and_served_back() {
        let r = start();
        let (status, _) = r.registry.call("GET", None, "");
        assert_eq!(status, 404);
        let (status, body) = r.registry.call("POST", Some("application/json; charset=utf-8"), r#"{"10.55.0.0/16": ["10.0.0.2", "10.0.0.1", "10.0.0.2"]}"#);
        assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
        let sent = recv_within(&r.rx, Duration::from_secs(1)).expect("a spec");
        assert_eq!(sent.to_json(), r#"{"10.55.0.0/16":["10.0.0.1","10.0.0.2"]}"#);
        let (status, body) = r.registry.call("GET", None, "");
        assert_eq!(status, 200);
        assert_eq!(body, serde_json::json!({"10.55.0.0/16": ["10.0.0.1", "10.0.0.2"]}));
        assert!(r.logs.contains(LogLevel::Info, "New route spec posted"));
        assert_eq!(r.plugin.info()["stats"]["specs_accepted"], 1);
    }

    #[test]
    fn invalid_posts_are_400_naming_the_problem_and_keep_the_last_spec() {
        let r = start();
        assert_eq!(r.registry.call("POST", JSON, r#"{"10.1.0.0/16": ["10.0.0.1"]}"#).0, 200);
        assert!(recv_within(&r.rx, Duration::from_secs(1)).is_some());
        let cases: [(Option<&str>, &str, &str); 6] = [
            (JSON, r#"{"10.1.0.1/16": ["10.0.0.1"]}"#, "'10.1.0.1/16'"),
            (JSON, r#"{"10.1.0.0/16": ["1.1.1."]}"#, "'1.1.1.'"),
            (JSON, r#"{"10.1.0.0/16": "10.0.0.1"}"#, "must be a list"),
            (JSON, "{not json", "not valid JSON"),
            (JSON, "{}", "no CIDR"),
            (Some("text/plain"), r#"{"10.1.0.0/16": ["10.0.0.1"]}"#, "Content-Type must be application/json"),
        ];
        for (ct, body, needle) in cases {
            let (status, answer) = r.registry.call("POST", ct, body);
            assert_eq!(status, 400, "{body}");
            let message = answer["error"].as_str().unwrap_or_default();
            assert!(message.contains(needle), "{body}: {message}");
        }
        assert_eq!(r.registry.call("POST", None, "{}").0, 400);
        assert!(nothing_within(&r.rx, Duration::from_millis(50)));
        assert_eq!(r.registry.call("GET", None, "").1, serde_json::json!({"10.1.0.0/16": ["10.0.0.1"]}));
        assert!(r.logs.contains(LogLevel::Error, "Config ignored: '10.1.0.1/16'"));
        assert_eq!(r.plugin.info()["stats"]["specs_rejected"], 7);
    }

    #[test]
    fn stop_releases_the_queue_and_later_posts_are_refused() {
        let mut r = start();
        r.plugin.stop().unwrap();
        assert!(r.rx.recv_timeout(Duration::from_secs(1)).is_err(), "sender dropped on stop");
        assert_eq!(r.registry.call("POST", JSON, r#"{"10.1.0.0/16": []}"#).0, 503);
        assert!(r.logs.contains(LogLevel::Info, "Http watcher plugin: Stopped"));
    }

    #[test]
    fn content_type_check_tolerates_parameters_and_case() {
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("Application/JSON ; charset=UTF-8")));
        assert!(!is_json(Some("application/x-www-form-urlencoded")));
        assert!(!is_json(Some("text/json")));
        assert!(!is_json(None));
    }
}
