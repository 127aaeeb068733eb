use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use serde_json::json;
use vpcrouter_plugin_api::sync::lock;

use crate::auth::TokenFile;
use crate::listener::MAX_CONNECTIONS;
use crate::protocol::BODY_LIMIT;
use crate::security::Security;
use crate::testkit::{call, ip4, start, start_full, start_notifying};

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
    let big =
        format!("POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", BODY_LIMIT + 1);
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
        (200, r#"{"echo":{"params":{},"stats":{"errors":0,"last_error":null,"specs_sent":0},"version":"1","x":1}}"#)
    );
    assert_eq!(call(&server, b"GET /ips HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAccept: image/png\r\n\r\n").0, 406);
    let (status, head, body) = call(&server, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
    assert!(
        head.contains("text/plain; version=0.0.4") && body.contains("vpcrouter_reconciles_total 0"),
        "{head}{body}"
    );
    server.stop();
}

#[test]
fn drain_endpoints_need_the_token_check_the_ip_and_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let seen: Arc<Mutex<Vec<std::collections::BTreeSet<Ipv4Addr>>>> = Arc::default();
    let s = seen.clone();
    let drains = vpcrouter_drains::Drains::open(dir.path(), move |set| lock(&s).push(set)).unwrap();
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
    let drains = vpcrouter_drains::Drains::open(dir.path(), |_| {}).unwrap();
    let (server, _) = start_full(Security::default(), MAX_CONNECTIONS, drains, Some("needs a token".into()));
    let (status, _, body) =
        call(&server, b"POST /drain/10.0.0.1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    assert_eq!((status, body.contains("needs a token")), (403, true), "{body}");
    server.stop();
}

/// A notifier that refuses every event.
struct Refuses;
impl vpcrouter_notify::Sink for Refuses {
    fn deliver(&self, _: &vpcrouter_notify::Rendered) -> Result<(), String> {
        Err("HTTP 503".into())
    }
}

#[test]
fn status_and_metrics_show_each_notifiers_counters() {
    let get = |server: &crate::Server, path: &str| {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let (status, _, body) = call(server, raw.as_bytes());
        assert_eq!(status, 200, "{path}: {body}");
        body
    };
    let (plain, _) = start();
    let doc: serde_json::Value = serde_json::from_str(&get(&plain, "/status")).unwrap();
    assert_eq!(doc["notifiers"], json!([]));
    assert!(!get(&plain, "/metrics").contains("vpcrouter_notifications_total"));
    plain.stop();

    let notifiers = vpcrouter_notify::Notifiers::new("vpc-test");
    notifiers.add("hook", std::sync::Arc::new(Refuses), vpcrouter_notify::DEFAULT_QUEUE).unwrap();
    notifiers.send(vpcrouter_engine::Announcement::Leader.into());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while notifiers.status()[0].failed == 0 {
        assert!(std::time::Instant::now() < deadline, "the event was not handled");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let server = start_notifying(notifiers.clone());
    let doc: serde_json::Value = serde_json::from_str(&get(&server, "/status")).unwrap();
    let hook = &doc["notifiers"][0];
    assert_eq!(
        (&hook["name"], &hook["delivered"], &hook["failed"], &hook["dropped"], &hook["queued"], &hook["last_error"]),
        (&json!("hook"), &json!(0), &json!(1), &json!(0), &json!(0), &json!("HTTP 503")),
        "{doc}"
    );
    assert!(hook["last_error_time"].as_str().is_some_and(|t| t.ends_with('Z')), "{doc}");
    let text = get(&server, "/metrics");
    for line in [
        "vpcrouter_notifications_total{notifier=\"hook\",outcome=\"delivered\"} 0",
        "vpcrouter_notifications_total{notifier=\"hook\",outcome=\"failed\"} 1",
        "vpcrouter_notifications_total{notifier=\"hook\",outcome=\"dropped\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
    }
    server.stop();
    notifiers.stop(std::time::Duration::from_secs(1));
}
