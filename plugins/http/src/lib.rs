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

use vpcrouter_plugin_api::prelude::*;
use vpcrouter_plugin_api::{HttpHandler, HttpRequest, HttpResponse};

/// The path both endpoints serve.
pub const PATH: &str = "/route_spec";

/// The watcher; its state is the sink's (the last accepted spec, the counters).
pub struct Http;

impl PluginDescription for Http {
    const NAME: &'static str = "http";
    const DESCRIPTION: &'static str = "Route specs posted as JSON to /route_spec on the status server (-a/-p)";
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
struct Get(SpecSink);

impl HttpHandler for Get {
    fn handle(&self, _request: HttpRequest) -> HttpResponse {
        match self.0.last() {
            Some(spec) => HttpResponse::json(200, spec.to_json()),
            None => error(404, "no route spec has been posted yet; POST one to /route_spec"),
        }
    }
}

/// `POST /route_spec`.
struct Post {
    sink: SpecSink,
    log: Logger,
}

impl Post {
    fn parse(request: &HttpRequest) -> Result<RouteSpec, (u16, String)> {
        if !is_json(request.header("content-type")) {
            let got = request.header("content-type").unwrap_or("none");
            return Err((400, format!("Content-Type must be application/json (got {got}); send the spec with -H 'Content-Type: application/json'")));
        }
        let text = request.text().map_err(|e| (400, format!("the route spec is not UTF-8 text: {e}")))?;
        let spec = spec::parse_json(text).map_err(|e| (400, e.to_string()))?;
        if spec.is_empty() {
            return Err((400, "the route spec has no CIDR; vpcrouter never removes all routes by an empty spec, so it was not accepted".into()));
        }
        Ok(spec)
    }
}

impl HttpHandler for Post {
    fn handle(&self, request: HttpRequest) -> HttpResponse {
        let spec = match Self::parse(&request) {
            Ok(spec) => spec,
            Err((status, message)) => {
                self.sink.reject(format!("Config ignored: {message}"));
                return error(status, message);
            }
        };
        if self.sink.is_closed() {
            return error(503, "the http watcher is not running");
        }
        let cidrs = spec.routes.len();
        // The sink sends under its lock: concurrent posts reach the engine in the order
        // they were taken, and the last one is also what GET serves.
        if !self.sink.offer(spec) {
            return error(503, "vpcrouter is shutting down; the route spec was not accepted");
        }
        self.log.info(format!("New route spec posted: {cidrs} CIDR(s)"));
        HttpResponse::json(200, serde_json::json!({ "status": "ok", "cidrs": cidrs }).to_string())
    }
}

impl WatcherPlugin for Http {
    fn start(_args: &PluginArgs, run: &WatcherRun) -> Result<Self, String> {
        let ctx = run.context();
        let refused = |method: &str, e: String| format!("cannot serve {method} {PATH}: {e}");
        ctx.register_endpoint("GET", PATH, Get(run.sink())).map_err(|e| refused("GET", e))?;
        let post = Post { sink: run.sink(), log: run.log().clone() };
        ctx.register_endpoint("POST", PATH, post).map_err(|e| refused("POST", e))?;
        run.log().info(format!("Http watcher plugin: Starting to watch for route spec on {PATH}"));
        Ok(Http)
    }

    fn details(&self) -> serde_json::Value {
        serde_json::json!({ "path": PATH })
    }
}

export_plugin!(watcher: Http);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vpcrouter_plugin_api::testkit::{nothing_within, recv_within, TestHost, WatcherHarness};
    use vpcrouter_plugin_api::{PluginStats, WatcherStats};

    use super::*;

    /// The watcher, started as the host does, and the host's endpoints.
    struct Running {
        /// The running watcher and its spec queue.
        h: WatcherHarness,
        /// Where the watcher registered its endpoints.
        host: TestHost,
    }

    impl Running {
        fn stats(&self) -> WatcherStats {
            match self.h.watcher.status().stats {
                PluginStats::Watcher(s) => s,
                other => panic!("{other:?}"),
            }
        }

        /// Calls `method PATH` as the status server does; the status and the JSON answer.
        fn call(&self, method: &str, content_type: Option<&str>, body: &str) -> (u16, serde_json::Value) {
            let request = HttpRequest::new(method, PATH).with_body(body);
            let request = match content_type {
                Some(ct) => request.with_header("Content-Type", ct),
                None => request,
            };
            let response = self.host.endpoints.call(request).expect("registered");
            assert_eq!(response.content_type, "application/json");
            (response.status, serde_json::from_slice(&response.body).expect("JSON body"))
        }
    }

    fn start() -> Running {
        let host = TestHost::default();
        Running { h: host.start_watcher::<Http>(&[]).unwrap(), host }
    }

    const JSON: Option<&str> = Some("application/json");

    #[test]
    fn valid_post_is_sent_and_served_back() {
        let r = start();
        let (status, _) = r.call("GET", None, "");
        assert_eq!(status, 404);
        let (status, body) = r.call(
            "POST",
            Some("application/json; charset=utf-8"),
            r#"{"10.55.0.0/16": ["10.0.0.2", "10.0.0.1", "10.0.0.2"]}"#,
        );
        assert_eq!((status, body["status"].as_str(), body["cidrs"].as_u64()), (200, Some("ok"), Some(1)));
        let sent = recv_within(&r.h.specs, Duration::from_secs(1)).expect("a spec");
        // Repeats go, the written order stays (the first router is the preferred one).
        assert_eq!(sent.to_json(), r#"{"10.55.0.0/16":["10.0.0.2","10.0.0.1"]}"#);
        let (status, body) = r.call("GET", None, "");
        assert_eq!(status, 200);
        assert_eq!(body, serde_json::json!({"10.55.0.0/16": ["10.0.0.2", "10.0.0.1"]}));
        assert!(r.h.logs.contains(LogLevel::Info, "New route spec posted: 1 CIDR(s)"));
        // The same spec again is accepted, but not sent twice.
        assert_eq!(r.call("POST", JSON, r#"{"10.55.0.0/16": ["10.0.0.2", "10.0.0.1"]}"#).0, 200);
        assert!(nothing_within(&r.h.specs, Duration::from_millis(50)));
        assert_eq!(r.stats().specs_sent, 1);
        // The same routers in another order are another spec (another preferred router).
        assert_eq!(r.call("POST", JSON, r#"{"10.55.0.0/16": ["10.0.0.1", "10.0.0.2"]}"#).0, 200);
        let sent = recv_within(&r.h.specs, Duration::from_secs(1)).expect("the reordered spec");
        assert_eq!(sent.to_json(), r#"{"10.55.0.0/16":["10.0.0.1","10.0.0.2"]}"#);
        assert_eq!(r.h.watcher.status().details, r#"{"path":"/route_spec"}"#);
    }

    #[test]
    fn invalid_posts_are_400_naming_the_problem_and_keep_the_last_spec() {
        let r = start();
        assert_eq!(r.call("POST", JSON, r#"{"10.1.0.0/16": ["10.0.0.1"]}"#).0, 200);
        assert!(recv_within(&r.h.specs, Duration::from_secs(1)).is_some());
        let cases: [(Option<&str>, &str, &str); 8] = [
            (JSON, r#"{"10.1.0.1/16": ["10.0.0.1"]}"#, "'10.1.0.1/16'"),
            (JSON, r#"{"10.1.0.0/16": ["10.0.0.1"], "10.1.0.0/16": []}"#, "'10.1.0.0/16' appears more than once"),
            (JSON, r#"{"10.1.0.0/016": ["10.0.0.1"]}"#, "write it as 10.1.0.0/16"),
            (JSON, r#"{"10.1.0.0/16": ["1.1.1."]}"#, "'1.1.1.'"),
            (JSON, r#"{"10.1.0.0/16": "10.0.0.1"}"#, "must be a list"),
            (JSON, "{not json", "not valid JSON"),
            (JSON, "{}", "no CIDR"),
            (Some("text/plain"), r#"{"10.1.0.0/16": ["10.0.0.1"]}"#, "Content-Type must be application/json"),
        ];
        for (ct, body, needle) in cases {
            let (status, answer) = r.call("POST", ct, body);
            assert_eq!(status, 400, "{body}");
            let message = answer["error"].as_str().unwrap_or_default();
            assert!(message.contains(needle), "{body}: {message}");
        }
        assert_eq!(r.call("POST", None, "{}").0, 400);
        assert!(nothing_within(&r.h.specs, Duration::from_millis(50)));
        assert_eq!(r.call("GET", None, "").1, serde_json::json!({"10.1.0.0/16": ["10.0.0.1"]}));
        assert!(r.h.logs.contains(LogLevel::Error, "Config ignored: '10.1.0.1/16'"));
        let stats = r.stats();
        assert_eq!((stats.specs_sent, stats.errors), (1, 9));
        assert!(stats.last_error.contains("Content-Type must be application/json (got none)"), "{stats:?}");
    }

    #[test]
    fn stop_releases_the_queue_and_later_posts_are_refused() {
        let r = start();
        r.h.watcher.stop(2000).unwrap();
        assert!(r.h.specs.recv_timeout(Duration::from_secs(1)).is_err(), "queue closed on stop");
        let (status, body) = r.call("POST", JSON, r#"{"10.1.0.0/16": []}"#);
        assert_eq!((status, body["error"].as_str()), (503, Some("the http watcher is not running")));
    }

    #[test]
    fn a_path_already_taken_fails_the_start() {
        let first = start();
        let registered = [("GET".to_string(), PATH.to_string()), ("POST".to_string(), PATH.to_string())];
        assert_eq!(first.host.endpoints.registered(), registered);
        let err = first.host.start_watcher::<Http>(&[]).err().unwrap();
        assert_eq!(err, "cannot serve GET /route_spec: GET /route_spec is already served");
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
