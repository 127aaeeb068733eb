//! The `http` watcher routes posted specs and the status server serves the state, even while EC2 is slow.
//!
//! Real binary, real plugin libraries, moto as EC2, requests over loopback TCP.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vpcrouter_tests::daemon::{run_once, Daemon};
use vpcrouter_tests::http_client::{self, get, post_json, request};
use vpcrouter_tests::relay::Relay;
use vpcrouter_tests::{wait_for, Env};

const T: Duration = Duration::from_secs(20);

/// Waits until the status server answers.
fn wait_ready(d: &Daemon) -> anyhow::Result<()> {
    wait_for(T, "the status server", || get(d.port, "/status", None).ok().filter(|r| r.status == 200).map(drop))
        .map_err(|e| anyhow::anyhow!("{e}\n--- log ---\n{}", d.log()))
}

/// A daemon in http mode with the `always` health plugin, ready to serve.
fn http_daemon(env: &Env) -> anyhow::Result<Daemon> {
    let d = env.daemon().args(["-m", "http", "-H", "always"]).start()?;
    wait_ready(&d)?;
    Ok(d)
}

fn route_spec(d: &Daemon) -> anyhow::Result<Value> {
    get(d.port, "/route_spec", None)?.json()
}

fn status(d: &Daemon) -> anyhow::Result<Value> {
    let r = get(d.port, "/status", None)?;
    anyhow::ensure!(r.status == 200, "/status answered {}: {}", r.status, r.body);
    r.json()
}

#[test]
fn posted_spec_is_routed_and_served_back() -> anyhow::Result<()> {
    let env = Env::new()?;
    let (rt1, rt2) = (env.world.tables[0].clone(), env.world.tables[1].clone());
    let d = http_daemon(&env)?;
    let none = get(d.port, "/route_spec", None)?;
    assert_eq!(none.status, 404, "{}", none.body);
    assert!(none.json()?["error"].is_string());

    let r = post_json(
        d.port,
        "/route_spec",
        r#"{"10.55.0.0/16": ["127.0.2.10", "127.0.1.10", "127.0.1.10"], "10.66.17.0/24": ["127.0.1.11"]}"#,
    )?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()?["status"], "ok");
    let routed = env.wait_routed(&[&rt1, &rt2], "10.55.0.0/16", T)?;
    assert!(routed == "127.0.1.10" || routed == "127.0.2.10", "{routed}");
    assert_eq!(env.wait_routed(&[&rt1, &rt2], "10.66.17.0/24", T)?, "127.0.1.11");
    // Canonical form: hosts de-duplicated, in the order posted.
    assert_eq!(route_spec(&d)?, json!({"10.55.0.0/16": ["127.0.2.10", "127.0.1.10"], "10.66.17.0/24": ["127.0.1.11"]}));
    d.wait_log("New route spec posted", T)?;
    d.wait_log("HTTP request", T)?;
    Ok(())
}

#[test]
fn bad_requests_are_refused_and_the_last_good_spec_stays() -> anyhow::Result<()> {
    let env = Env::new()?;
    let rt1 = env.world.tables[0].clone();
    let d = http_daemon(&env)?;
    let good = r#"{"10.55.0.0/16": ["127.0.1.10"]}"#;
    assert_eq!(post_json(d.port, "/route_spec", good)?.status, 200);
    env.wait_routed(&[&rt1], "10.55.0.0/16", T)?;
    let before = env.world.routes(&rt1)?;

    // Invalid specs: 400 with a JSON error naming the bad key or value.
    for (body, needle) in [
        (r#"{"10.55.0.0/16": ["127.0.1.10"], "10.1.0.1/16": ["127.0.1.11"]}"#, "'10.1.0.1/16'"),
        // Ambiguous: read as "last wins" it would delete 10.55.0.0/16's routes.
        (r#"{"10.55.0.0/16": ["127.0.1.10"], "10.55.0.0/16": []}"#, "'10.55.0.0/16' appears more than once"),
        (r#"{"2001:0db8::/32": ["127.0.1.10"]}"#, "'2001:0db8::/32' is not a valid route CIDR: IPv6 is written"),
        (r#"{"10.55.0.0/16": ["1.1.1."]}"#, "'1.1.1.'"),
        (r#"{"10.55.0.0/16": "127.0.1.10"}"#, "'10.55.0.0/16'"),
        (r#"["10.55.0.0/16"]"#, "JSON object"),
        ("{ this is not json", "not valid JSON"),
        ("{}", "no CIDR"),
    ] {
        let r = post_json(d.port, "/route_spec", body)?;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        let message = r.json()?["error"].as_str().unwrap_or_default().to_string();
        assert!(message.contains(needle), "{body}: {message}");
    }
    // Wrong content type, oversize body, unknown path, wrong method.
    let r = request(d.port, "POST", "/route_spec", &[("Content-Type", "text/plain")], good.as_bytes())?;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()?["error"].as_str().unwrap_or_default().contains("application/json"), "{}", r.body);
    let mut huge = String::from(r#"{"10.55.0.0/16": ["127.0.1.10"], "pad": ""#);
    huge.push_str(&" ".repeat(1 << 20));
    huge.push_str("\"}");
    let r = post_json(d.port, "/route_spec", &huge)?;
    assert_eq!(r.status, 413, "{}", r.body);
    let r = request(
        d.port,
        "POST",
        "/route_spec",
        &[("Content-Type", "application/json")],
        b"{\"10.55.0.0/16\": [\"\xff\"]}",
    )?;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()?["error"].as_str().unwrap_or_default().contains("UTF-8"), "{}", r.body);
    assert_eq!(get(d.port, "/no/such/path", None)?.status, 404);
    // Every error is JSON: 405 (with Allow), and the 400, 414 hyper answers itself.
    for (method, path, allow) in [("PUT", "/route_spec", "GET, POST"), ("POST", "/status", "GET,HEAD")] {
        let r = request(d.port, method, path, &[], b"")?;
        assert_eq!((r.status, r.header("allow")), (405, Some(allow)), "{method} {path}: {}", r.body);
        assert!(r.json()?["error"].as_str().is_some_and(|e| e.starts_with(path)), "{method} {path}: {}", r.body);
    }
    let raw = |bytes: &[u8]| -> anyhow::Result<http_client::Response> {
        let mut stream = http_client::connect(d.port)?;
        stream.write_all(bytes)?;
        http_client::read_response(&mut stream)
    };
    let r = raw(b"GARBAGE\r\n\r\n")?;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()?["error"].as_str().unwrap_or_default().contains("not valid HTTP/1.1"), "{}", r.body);
    let r = raw(format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(1 << 20)).as_bytes())?;
    assert_eq!(r.status, 414, "{}", r.body);
    assert_eq!(r.json()?["error"], "the request target (URL) is longer than 8192 bytes");
    d.wait_log("HTTP request refused: the request is not valid HTTP/1.1", T)?;

    assert_eq!(route_spec(&d)?, json!({"10.55.0.0/16": ["127.0.1.10"]}));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(env.world.routes(&rt1)?, before, "routes unchanged");
    assert_eq!(status(&d)?["route_spec"], json!({"10.55.0.0/16": ["127.0.1.10"]}));
    let info = &status(&d)?["plugins"][0];
    assert_eq!((info["name"].as_str(), info["kind"].as_str()), (Some("http"), Some("watcher")));
    assert_eq!(info["info"]["stats"]["errors"], 10);
    d.wait_log("Config ignored: '10.1.0.1/16'", T)?;
    Ok(())
}

#[test]
fn the_later_of_concurrent_posts_wins() -> anyhow::Result<()> {
    let env = Env::new()?;
    let rt1 = env.world.tables[0].clone();
    let d = http_daemon(&env)?;
    let specs = [r#"{"10.71.0.0/16": ["127.0.1.10"]}"#, r#"{"10.72.0.0/16": ["127.0.1.10"]}"#];
    for round in 0..3 {
        let barrier = Arc::new(Barrier::new(2));
        let port = d.port;
        let posts: Vec<_> = specs
            .iter()
            .map(|s| {
                let (barrier, body) = (barrier.clone(), s.to_string());
                std::thread::spawn(move || {
                    barrier.wait();
                    post_json(port, "/route_spec", &body).map(|r| r.status)
                })
            })
            .collect();
        for p in posts {
            assert_eq!(p.join().map_err(|_| anyhow::anyhow!("poster panicked"))??, 200, "round {round}");
        }
        // The spec in force is one of the two, and the engine and EC2 follow that one.
        let served = route_spec(&d)?;
        let (winner, loser) = if served.get("10.71.0.0/16").is_some() {
            ("10.71.0.0/16", "10.72.0.0/16")
        } else {
            ("10.72.0.0/16", "10.71.0.0/16")
        };
        assert!(
            served == serde_json::from_str::<Value>(specs[0])? || served == serde_json::from_str::<Value>(specs[1])?,
            "{served}"
        );
        wait_for(T, "the engine to take the later spec", || (status(&d).ok()?["route_spec"] == served).then_some(()))
            .map_err(|e| anyhow::anyhow!("round {round}: {e}\n{}", d.log()))?;
        wait_for(T, "EC2 to follow the later spec", || {
            let routes = env.world.routes(&rt1).ok()?;
            (routes.get(winner).map(String::as_str) == Some("127.0.1.10") && !routes.contains_key(loser)).then_some(())
        })
        .map_err(|e| anyhow::anyhow!("round {round}: {e}\n{}\n{}", env.world.dump(), d.log()))?;
        assert_eq!(route_spec(&d)?, served, "round {round}: nothing posted later");
    }
    Ok(())
}

#[test]
fn status_and_metrics_reflect_a_failover() -> anyhow::Result<()> {
    let env = Env::new()?;
    let (rt1, rt2) = (env.world.tables[0].clone(), env.world.tables[1].clone());
    let health = env.write("health.json", r#"{"failed": []}"#);
    let d = env.daemon().args(["-m", "http", "-H", "file", "--health_file", health.to_str().unwrap()]).start()?;
    wait_ready(&d)?;
    assert_eq!(post_json(d.port, "/route_spec", r#"{"10.55.0.0/16": ["127.0.1.10", "127.0.2.10"]}"#)?.status, 200);
    let first = env.wait_routed(&[&rt1, &rt2], "10.55.0.0/16", T)?;
    let other = if first == "127.0.1.10" { "127.0.2.10" } else { "127.0.1.10" };
    env.write("health.json", &format!(r#"{{"failed": ["{first}"], "questionable": ["{other}"]}}"#));
    wait_for(T, "failover", || {
        (env.world.targets(&[&rt1, &rt2], "10.55.0.0/16").ok()? == vec![Some(other.to_string()); 2]).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}\n{}", env.world.dump(), d.log()))?;

    // The engine records its state after the route changes: wait for the document to settle.
    let st = wait_for(T, "/status to show the failover", || {
        let st = status(&d).ok()?;
        // The counters move with each write; the tables once the verifying read is planned.
        let tables_moved = [&rt1, &rt2].iter().all(|t| st["route_tables"][t.as_str()][0]["router"] == other);
        (st["counters"]["routes_replaced"].as_u64()? >= 2 && st["last_reconcile"]["result"] == "ok" && tables_moved)
            .then_some(st)
    })?;
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(st["failed_hosts"], json!([first]));
    assert_eq!(st["questionable_hosts"], json!([other]));
    assert_eq!(st["route_spec"], json!({"10.55.0.0/16": ["127.0.1.10", "127.0.2.10"]}));
    assert_eq!(st["vpc_id"], env.world.vpc_id.as_str());
    for rtb in [&rt1, &rt2] {
        let route = &st["route_tables"][rtb.as_str()][0];
        assert_eq!(route["cidr"], "10.55.0.0/16", "{st}");
        assert_eq!(route["router"], other, "{st}");
        assert_eq!(route["previous_router"], first.as_str(), "{st}");
        assert!(route["instance_id"].as_str().is_some_and(|i| i.starts_with("i-")), "{st}");
        assert!(route["state"].as_str().is_some_and(|s| s.starts_with("Updated: ")), "{st}");
    }
    assert_eq!(st["counters"]["routes_created"], 2, "{st}");
    assert!(st["counters"]["reconciles"].as_u64().unwrap_or(0) >= 2, "{st}");
    assert!(st["last_reconcile"]["duration_seconds"].as_f64().is_some(), "{st}");
    let names: Vec<_> = st["plugins"].as_array().into_iter().flatten().map(|p| p["name"].clone()).collect();
    assert_eq!(names, [json!("http"), json!("file")]);
    assert_eq!(st["plugins"][1]["arguments"]["health_file"], health.to_str().unwrap());

    let m = get(d.port, "/metrics", None)?;
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").is_some_and(|c| c.starts_with("text/plain; version=0.0.4")), "{:?}", m.headers);
    let sample = |name: &str| -> Option<f64> {
        m.body.lines().find(|l| l.split(' ').next() == Some(name)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    assert_eq!(sample("vpcrouter_route_changes_total{kind=\"replace\"}"), Some(2.0), "{}", m.body);
    assert_eq!(sample("vpcrouter_route_changes_total{kind=\"create\"}"), Some(2.0), "{}", m.body);
    assert_eq!(sample("vpcrouter_failed_hosts"), Some(1.0), "{}", m.body);
    assert!(sample("vpcrouter_ec2_calls_total{operation=\"ReplaceRoute\"}").is_some_and(|n| n >= 2.0), "{}", m.body);
    assert!(sample("vpcrouter_reconciles_total").is_some_and(|n| n >= 2.0), "{}", m.body);
    assert!(sample("vpcrouter_health_checks_total{plugin=\"file\"}").is_some(), "{}", m.body);
    assert!(sample("vpcrouter_last_reconcile_duration_seconds").is_some_and(|s| s > 0.0), "{}", m.body);

    // /ips shows questionable hosts, and clears failed ones on recovery (vpc-router did not).
    let ips = get(d.port, "/ips", Some("application/json"))?.json()?;
    assert_eq!(
        ips,
        json!({"failed_ips": [first], "questionable_ips": [other], "working_set": ["127.0.1.10", "127.0.2.10"], "drained_ips": []})
    );
    let vpc = get(d.port, "/vpc", Some("application/json"))?.json()?;
    let line = vpc["route_tables"][rt1.as_str()]["10.55.0.0/16"].as_str().unwrap_or_default().to_string();
    assert!(line.contains(&format!("r_ip: {other:<15}, o_r_ip: {first:<15}, msg: Updated: ")), "{vpc}");
    let time_before = vpc["time"].clone();
    env.write("health.json", r#"{"failed": []}"#);
    wait_for(T, "/ips to clear", || {
        let ips = get(d.port, "/ips", Some("application/json")).ok()?.json().ok()?;
        (ips["failed_ips"] == json!([]) && ips["questionable_ips"] == json!([])).then_some(())
    })?;
    // Times are current: the health change made a new reconcile.
    wait_for(T, "/vpc time to move", || {
        let vpc = get(d.port, "/vpc", Some("application/json")).ok()?.json().ok()?;
        (vpc["time"] != time_before).then_some(())
    })?;
    let m = get(d.port, "/metrics", None)?;
    assert!(m.body.lines().any(|l| l == "vpcrouter_failed_hosts 0"), "{}", m.body);
    Ok(())
}

#[test]
fn state_documents_follow_accept_negotiation() -> anyhow::Result<()> {
    let env = Env::new()?;
    let d = http_daemon(&env)?;
    assert_eq!(post_json(d.port, "/route_spec", r#"{"10.55.0.0/16": ["127.0.1.10"]}"#)?.status, 200);
    env.wait_routed(&[&env.world.tables[0]], "10.55.0.0/16", T)?;

    // No Accept, text/*, */*: indented JSON as text/plain (what curl gets).
    for accept in [None, Some("*/*"), Some("text/plain")] {
        let r = get(d.port, "/", accept)?;
        assert_eq!(r.status, 200);
        assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/plain")), "{accept:?}: {:?}", r.headers);
        assert!(r.body.contains("\n    \"SERVER\""), "{}", r.body);
        let root = r.json()?;
        assert_eq!(root["ips"], json!({"_href": "/ips"}));
        assert_eq!(root["params"]["mode"], "http");
        assert_eq!(root["params"]["port"], d.port);
        assert!(root["SERVER"]["version"].as_str().is_some_and(|v| v.contains("mode: http")), "{root}");
    }
    let r = get(d.port, "/route_info", Some("application/json"))?;
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(!r.body.contains('\n'), "compact: {}", r.body);
    let info = r.json()?;
    assert_eq!(info["route_spec"], json!({"10.55.0.0/16": ["127.0.1.10"]}));
    assert_eq!(info["routes"]["10.55.0.0/16"][0], "127.0.1.10");
    assert!(info["routes"]["10.55.0.0/16"][2].as_str().is_some_and(|e| e.starts_with("eni-")), "{info}");
    let plugins = get(d.port, "/plugins", Some("application/json"))?.json()?;
    assert!(plugins["http"].is_object() && plugins["always"].is_object(), "{plugins}");

    // A browser gets vpc-router's HTML view of the documents, and the live status page at `/`.
    let r = get(d.port, "/ips", Some("text/html,application/xhtml+xml"))?;
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/html")));
    assert!(r.body.contains("<title>VPC-router state</title>") && r.body.contains("working_set"), "{}", r.body);
    let r = get(d.port, "/", Some("text/html,application/xhtml+xml"))?;
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/html")));
    assert!(r.body.starts_with("<!DOCTYPE html>") && r.body.contains("10.55.0.0/16"), "{}", r.body);
    let r = get(d.port, "/vpc", Some("image/png"))?;
    assert_eq!(r.status, 406, "{}", r.body);
    assert!(r.body.contains("Cannot render data in acceptable content type"));
    assert_eq!(get(d.port, "/ips/", None)?.status, 404);
    Ok(())
}

#[test]
fn a_port_in_use_fails_at_start_with_a_clear_error() -> anyhow::Result<()> {
    let taken = TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port().to_string();
    let started = Instant::now();
    let (code, out, err) = run_once(&[
        "-r", "us-east-1", "-v", "vpc-12345678", "-m", "http", "-H", "always", "-a", "127.0.0.1", "-p", &port,
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&format!("cannot listen on 127.0.0.1:{port}")) && err.contains("-p/--port"), "{err}");
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert_eq!(line.matches("os error").count(), 1, "one clear line: {line}");
    assert!(!format!("{out}{err}").contains("watcher plugin: Starting"), "plugins must not start: {out}{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "fail fast");
    Ok(())
}

#[test]
fn idle_and_slow_clients_time_out() -> anyhow::Result<()> {
    let env = Env::new()?;
    let d = http_daemon(&env)?;
    let started = Instant::now();
    // Connected, sends nothing: closed after the header timeout.
    let mut idle = http_client::connect(d.port)?;
    // Sends a head promising a body it never completes: 408 after the request timeout.
    let mut slow = http_client::connect(d.port)?;
    slow.write_all(
        b"POST /route_spec HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"10.",
    )?;
    // Meanwhile the server answers others.
    assert_eq!(get(d.port, "/status", None)?.status, 200);
    let mut buf = Vec::new();
    let n = idle.read_to_end(&mut buf)?;
    let idle_after = started.elapsed();
    assert!(n == 0 || String::from_utf8_lossy(&buf).contains("408"), "{}", String::from_utf8_lossy(&buf));
    // The head timeout of a new connection is 1 s (issue 15).
    assert!(idle_after >= Duration::from_millis(900) && idle_after < Duration::from_secs(4), "{idle_after:?}");
    let r = http_client::read_response(&mut slow)?;
    assert_eq!(r.status, 408, "{}", r.body);
    assert!(started.elapsed() < Duration::from_secs(14), "{:?}", started.elapsed());
    assert_eq!(get(d.port, "/status", None)?.status, 200);

    // Between keep-alive requests a connection may stay idle longer than the head timeout.
    let mut kept = http_client::connect(d.port)?;
    kept.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")?;
    std::thread::sleep(Duration::from_millis(2500));
    kept.write_all(b"GET /ips HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nConnection: close\r\n\r\n")?;
    let mut both = Vec::new();
    kept.read_to_end(&mut both)?;
    let both = String::from_utf8_lossy(&both);
    assert_eq!(both.matches("HTTP/1.1 200 OK").count(), 2, "{both}");
    assert!(both.contains("working_set"), "{both}");
    Ok(())
}

#[test]
fn server_answers_while_a_reconcile_waits_for_ec2() -> anyhow::Result<()> {
    let env = Env::new()?;
    let rt1 = env.world.tables[0].clone();
    let relay = Relay::start(&env.moto.endpoint)?;
    let relay_endpoint = format!("http://127.0.0.1:{}", relay.port);
    let d = env.daemon().endpoint(&relay_endpoint).args(["-m", "http", "-H", "always"]).start()?;
    let port = d.port;
    let read_log = || d.log();
    wait_for(T, "the status server", || get(port, "/status", None).ok().filter(|r| r.status == 200).map(drop))
        .map_err(|e| anyhow::anyhow!("{e}\n{}", read_log()))?;
    assert_eq!(post_json(port, "/route_spec", r#"{"10.55.0.0/16": ["127.0.1.10"]}"#)?.status, 200);
    env.wait_routed(&[&rt1], "10.55.0.0/16", T).map_err(|e| anyhow::anyhow!("{e}\n{}", read_log()))?;
    let reconciles = |st: &Value| st["counters"]["reconciles"].as_u64().unwrap_or(0);
    let done = wait_for(T, "the first reconcile to finish", || {
        let st = get(port, "/status", None).ok()?.json().ok()?;
        (st["last_reconcile"]["result"] == "ok").then_some(st)
    })?;

    relay.paused.store(true, Ordering::Relaxed);
    assert_eq!(post_json(port, "/route_spec", r#"{"10.66.0.0/16": ["127.0.1.10"]}"#)?.status, 200);
    // The engine starts a reconcile that now waits for EC2; the server keeps answering.
    let during = wait_for(T, "a reconcile to start", || {
        let st = get(port, "/status", None).ok()?.json().ok()?;
        (reconciles(&st) > reconciles(&done)).then_some(st)
    })?;
    assert_eq!(during["last_reconcile"], done["last_reconcile"], "the reconcile is still running");
    for _ in 0..3 {
        let t = Instant::now();
        assert_eq!(get(port, "/route_spec", None)?.json()?, json!({"10.66.0.0/16": ["127.0.1.10"]}));
        assert_eq!(get(port, "/metrics", None)?.status, 200);
        assert!(t.elapsed() < Duration::from_secs(1), "answered in {:?}", t.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    }
    relay.paused.store(false, Ordering::Relaxed);
    env.wait_routed(&[&rt1], "10.66.0.0/16", Duration::from_secs(60))
        .map_err(|e| anyhow::anyhow!("{e}\n{}", read_log()))?;
    Ok(())
}
