use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::TokenFile;
use crate::protocol::{HEAD_LIMIT, URL_LIMIT};
use crate::security::Security;
use crate::testkit::{call, start, start_with, start_with_slots};

use super::*;

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
    let (server, _endpoints) = start_with(security);
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
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["auth"], false, "not passed to the plugin");
    assert_eq!(call(&server, b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").0, 200);
    server.stop();
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
