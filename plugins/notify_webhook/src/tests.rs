//! The webhook against local HTTP(S) servers that answer scripted statuses and record what
//! they were sent.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::Sha256;
use ureq::tls::{Certificate, PrivateKey};
use vpcrouter_plugin_api::testkit::{sample_event, start_notifier, NotifierHarness};

use super::*;
use crate::config::{Target, SECRET_FILE_ARG, TIMEOUT_ARG, URL_ARG};
use crate::post::{EVENT_HEADER, SIGNATURE_HEADER};

const CA_PEM: &[u8] = include_bytes!("../testdata/ca.pem");
const LEAF_PEM: &[u8] = include_bytes!("../testdata/leaf.pem");
const LEAF_KEY: &[u8] = include_bytes!("../testdata/leaf.key");
/// A script status that never answers (the request hangs until the server is dropped).
const HANG: u16 = 0;

/// One request as the server read it.
#[derive(Clone, Debug)]
struct Seen {
    /// `POST /hook?x=y HTTP/1.1`.
    line: String,
    /// Headers, names in lowercase.
    headers: BTreeMap<String, String>,
    /// The body, exactly.
    body: Vec<u8>,
}

/// A local server answering each request with the next status of its script (the last one
/// repeated), one connection per request.
struct Server {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn http(script: &[u16]) -> Server {
        Server::start(script, None)
    }

    fn https(script: &[u16]) -> Server {
        Server::start(script, Some(tls_config()))
    }

    fn start(script: &[u16], tls: Option<Arc<rustls::ServerConfig>>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
        let port = listener.local_addr().unwrap().port();
        let (seen, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let (seen2, stop2, script) = (seen.clone(), stop.clone(), script.to_vec());
        let thread = std::thread::spawn(move || {
            let mut next = 0;
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let status = script[next.min(script.len() - 1)];
                next += 1;
                let (seen, stop, tls) = (seen2.clone(), stop2.clone(), tls.clone());
                std::thread::spawn(move || serve(stream, status, tls, &seen, &stop));
            }
        });
        Server { port, seen, stop, thread: Some(thread) }
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}/hook", self.port)
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits up to 5 s until `n` requests arrived.
    fn wait_for_requests(&self, n: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.requests().len() < n {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes the accept
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request from `stream` (over TLS with `tls`), records it and answers `status`.
fn serve(
    stream: TcpStream,
    status: u16,
    tls: Option<Arc<rustls::ServerConfig>>,
    seen: &Mutex<Vec<Seen>>,
    stop: &AtomicBool,
) {
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    match tls {
        None => exchange(stream, status, seen, stop),
        Some(config) => {
            let conn = rustls::ServerConnection::new(config).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, stream);
            exchange(&mut tls, status, seen, stop);
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    }
}

fn exchange(mut stream: impl Read + Write, status: u16, seen: &Mutex<Vec<Seen>>, stop: &AtomicBool) {
    let Some(request) = read_request(&mut stream) else { return };
    seen.lock().unwrap().push(request);
    if status == HANG {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        return;
    }
    let body = if status == 400 { "bad\nsignature" } else { "" };
    let location = if status / 100 == 3 { "Location: http://127.0.0.1:1/elsewhere\r\n" } else { "" };
    let answer =
        format!("HTTP/1.1 {status} X\r\n{location}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let _ = stream.write_all(answer.as_bytes());
    let _ = stream.flush();
}

fn read_request(stream: &mut impl Read) -> Option<Seen> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut buf).ok().filter(|n| *n > 0)?;
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8(data[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let line = lines.next()?.to_string();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let length: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).ok().filter(|n| *n > 0)?;
        body.extend_from_slice(&buf[..n]);
    }
    Some(Seen { line, headers, body })
}

fn tls_config() -> Arc<rustls::ServerConfig> {
    let leaf = CertificateDer::from(Certificate::from_pem(LEAF_PEM).unwrap().der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(PrivateKey::from_pem(LEAF_KEY).unwrap().der().to_vec()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf], key)
        .unwrap();
    Arc::new(config)
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn secret_file(content: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(content.as_bytes()).unwrap();
    f
}

/// HMAC-SHA256 of `body` keyed with `key`, as a receiver computes it.
fn expected_signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn details(h: &NotifierHarness) -> serde_json::Value {
    serde_json::from_str(h.notifier.status().details.as_str()).unwrap()
}

/// The number in `... failed N attempt(s) ...`.
fn attempts_in(error: &str) -> u32 {
    let after = error.split("failed ").nth(1).unwrap_or_else(|| panic!("no attempt count in {error}"));
    after.split(' ').next().unwrap().parse().unwrap_or_else(|_| panic!("no attempt count in {error}"))
}

#[test]
fn answers_503_503_204_deliver_after_three_signed_requests() {
    let server = Server::http(&[503, 503, 204]);
    let secret = secret_file("  s3cret\n");
    let url = server.url("http");
    let h = start_notifier::<Webhook>(&[
        (URL_ARG, &url),
        (SECRET_FILE_ARG, secret.path().to_str().unwrap()),
        (RETRY_ARG, "30"),
    ])
    .unwrap();
    let event = sample_event("route_changed");
    let started = Instant::now();
    assert_eq!(h.notify(&event), Ok(()));
    assert!(started.elapsed() < Duration::from_secs(5), "two short backoffs: {:?}", started.elapsed());
    let requests = server.requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    for r in &requests {
        assert_eq!(r.line, "POST /hook HTTP/1.1");
        assert_eq!(r.body, event.json().as_bytes(), "the body is the event's JSON, byte for byte");
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.headers[EVENT_HEADER], "route_changed");
        assert_eq!(r.headers["user-agent"], format!("vpcrouter-notify-webhook/{}", env!("CARGO_PKG_VERSION")));
        assert_eq!(
            r.headers[SIGNATURE_HEADER],
            expected_signature(b"s3cret", &r.body),
            "keyed with the trimmed secret"
        );
    }
    assert_eq!((h.stats().delivered, h.stats().failed), (1, 0));
    assert_eq!(h.logs.count(LogLevel::Warn, "answered 503 Service Unavailable; attempt 2"), 1, "{:?}", h.logs.lines());
    assert!(
        h.logs.contains(LogLevel::Info, "route_changed event delivered to http://127.0.0.1"),
        "{:?}",
        h.logs.lines()
    );
    assert_eq!(details(&h), serde_json::json!({"url": url, "signed": true, "retry_seconds": 30}));
}

#[test]
fn a_4xx_answer_fails_at_once_and_is_not_retried() {
    let server = Server::http(&[400, 204]);
    let h = start_notifier::<Webhook>(&[(URL_ARG, &server.url("http"))]).unwrap();
    let started = Instant::now();
    let e = h.notify(&sample_event("failover")).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(e, format!("{} answered 400 Bad Request: bad signature (not retried)", server.url("http")));
    assert_eq!(server.requests().len(), 1);
    assert_eq!(h.stats().last_error.as_str(), e);
}

#[test]
fn a_redirect_is_not_followed_nor_retried() {
    let server = Server::http(&[302, 204]);
    let h = start_notifier::<Webhook>(&[(URL_ARG, &server.url("http"))]).unwrap();
    let e = h.notify(&sample_event("leader")).unwrap_err();
    assert!(e.contains("answered 302 Found (to http://127.0.0.1:1/elsewhere): redirects are not followed"), "{e}");
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_dead_endpoint_fails_once_the_retry_window_has_passed() {
    let url = format!("http://127.0.0.1:{}/hook", dead_port());
    let h = start_notifier::<Webhook>(&[(URL_ARG, &url), (RETRY_ARG, "1")]).unwrap();
    let started = Instant::now();
    let e = h.notify(&sample_event("router_down")).unwrap_err();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(950) && took < Duration::from_secs(3), "{took:?}");
    assert!(e.starts_with(&format!("{url} failed ")) && e.contains("(--notify-webhook-retry-seconds 1)"), "{e}");
    assert!(attempts_in(&e) >= 3, "retried with backoffs of 0.25 s and more within 1 s: {e}");
    assert!(e.to_lowercase().contains("connection refused"), "names the last error: {e}");
}

#[test]
fn retry_seconds_0_makes_one_attempt() {
    let server = Server::http(&[503, 204]);
    let h = start_notifier::<Webhook>(&[(URL_ARG, &server.url("http")), (RETRY_ARG, "0")]).unwrap();
    let e = h.notify(&sample_event("router_up")).unwrap_err();
    assert!(e.contains("failed 1 attempt in") && e.ends_with("the last: answered 503 Service Unavailable"), "{e}");
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_stop_during_the_backoff_gives_up_at_once() {
    let url = format!("http://127.0.0.1:{}/hook", dead_port());
    let h = Arc::new(start_notifier::<Webhook>(&[(URL_ARG, &url), (RETRY_ARG, "600")]).unwrap());
    let delivering = h.clone();
    let t = std::thread::spawn(move || delivering.notify(&sample_event("failover")));
    assert!(h.logs.wait_for(LogLevel::Warn, "attempt 2 in", Duration::from_secs(5)), "{:?}", h.logs.lines());
    // The first backoff lasts 0.25 s at least: the stop comes during one of them.
    let started = Instant::now();
    h.stop().unwrap();
    let e = t.join().unwrap().unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert!(e.starts_with(&format!("vpcrouter is stopping: failover event not delivered to {url}")), "{e}");
}

#[test]
fn a_stop_during_a_hanging_request_gives_up_at_once() {
    let server = Server::http(&[HANG]);
    let h = Arc::new(start_notifier::<Webhook>(&[(URL_ARG, &server.url("http")), (TIMEOUT_ARG, "30")]).unwrap());
    let delivering = h.clone();
    let t = std::thread::spawn(move || delivering.notify(&sample_event("failover")));
    assert!(server.wait_for_requests(1));
    let started = Instant::now();
    h.stop().unwrap();
    let e = t.join().unwrap().unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert!(e.starts_with("vpcrouter is stopping") && e.contains("still waiting for an answer"), "{e}");
}

#[test]
fn a_request_that_takes_longer_than_the_timeout_is_retried() {
    let server = Server::http(&[HANG, 204]);
    let h = start_notifier::<Webhook>(&[(URL_ARG, &server.url("http")), (TIMEOUT_ARG, "0.3")]).unwrap();
    let started = Instant::now();
    assert_eq!(h.notify(&sample_event("router_up")), Ok(()));
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(server.requests().len(), 2);
    let warned = "no answer within 0.3 s (--notify-webhook-timeout); attempt 2";
    assert!(h.logs.contains(LogLevel::Warn, warned), "{:?}", h.logs.lines());
}

#[test]
fn without_a_secret_nothing_is_signed_and_credentials_and_query_stay_out_of_sight() {
    let server = Server::http(&[204]);
    let url = format!("http://hook%20user:pa%3Ass@127.0.0.1:{}/hook/path?token=t0ps3cret", server.port);
    let h = start_notifier::<Webhook>(&[(URL_ARG, &url)]).unwrap();
    assert_eq!(h.notify(&sample_event("drained")), Ok(()));
    let r = &server.requests()[0];
    assert!(!r.headers.contains_key(SIGNATURE_HEADER), "{r:?}");
    assert_eq!(r.line, "POST /hook/path?token=t0ps3cret HTTP/1.1");
    assert_eq!(r.headers["authorization"], basic_auth::header("hook user:pa:ss"));
    assert_eq!(r.headers["host"], format!("127.0.0.1:{}", server.port));
    let shown = format!("http://127.0.0.1:{}/hook/path", server.port);
    assert_eq!(details(&h), serde_json::json!({"url": shown, "signed": false, "retry_seconds": 60}));
    assert!(!format!("{:?}", h.logs.lines()).contains("t0ps3cret"));
}

#[test]
fn https_is_verified_against_the_trust_roots() {
    let server = Server::https(&[204]);
    let target = Target::parse(&server.url("https")).unwrap();
    let ca = Certificate::from_pem(CA_PEM).unwrap();
    let (_never_stopped, stop) = crossbeam_channel::bounded::<()>(0);
    let trusting = Client::new(target, Duration::from_secs(5), vec![ca]);
    assert_eq!(trusting.post("leader", "{}", None, &stop), Some(Answer::Delivered));
    assert_eq!(server.requests()[0].body, b"{}");
    // The plugin trusts the system's store, where the test CA is not.
    let h = start_notifier::<Webhook>(&[(URL_ARG, &server.url("https")), (RETRY_ARG, "0")]).unwrap();
    let e = h.notify(&sample_event("leader")).unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");
    assert_eq!(server.requests().len(), 1, "the refused handshake sent nothing");
}

#[test]
fn signatures_follow_hmac_sha256() {
    // RFC 4231 test case 2.
    let signer = Signer::new(b"Jefe").unwrap();
    assert_eq!(
        signer.sign(b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn options_are_checked_with_one_line_naming_them() {
    let check = |pairs: &[(&str, &str)]| Webhook::validate_config(&PluginArgs::from_pairs(pairs.iter().copied()));
    assert_eq!(check(&[(URL_ARG, "https://hooks.example.com/vpcrouter")]), Ok(()));
    assert_eq!(check(&[(URL_ARG, "http://[::1]:8080")]), Ok(()));
    assert_eq!(check(&[]).unwrap_err(), "--notify-webhook-url is required");
    for bad in ["hooks.example.com/x", "ftp://hooks.example.com/", "http://", "not a url", "/path", ""] {
        let e = check(&[(URL_ARG, bad)]).unwrap_err();
        assert!(e.starts_with(&format!("--notify-webhook-url: '{bad}' ")) && !e.contains('\n'), "{bad}: {e}");
    }
    let url = (URL_ARG, "http://127.0.0.1:9/hook");
    let e = check(&[url, (SECRET_FILE_ARG, "/nonexistent/webhook.secret")]).unwrap_err();
    assert!(e.starts_with("--notify-webhook-secret-file: cannot read /nonexistent/webhook.secret: "), "{e}");
    let empty = secret_file(" \n\t\n");
    let e = check(&[url, (SECRET_FILE_ARG, empty.path().to_str().unwrap())]).unwrap_err();
    assert_eq!(
        e,
        format!("--notify-webhook-secret-file: {} is empty; write the shared secret into it", empty.path().display())
    );
    for (option, bad) in [(RETRY_ARG, "3601"), (RETRY_ARG, "-1"), (TIMEOUT_ARG, "0"), (TIMEOUT_ARG, "ten")] {
        let e = check(&[url, (option, bad)]).unwrap_err();
        assert!(e.starts_with(&format!("--{option}")), "{option} {bad}: {e}");
    }
    assert!(start_notifier::<Webhook>(&[(URL_ARG, "gopher://x")]).is_err(), "start checks too");
}
