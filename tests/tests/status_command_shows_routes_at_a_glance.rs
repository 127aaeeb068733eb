//! `vpcrouter status` shows a running daemon's routes at a glance: the CIDR, its router and
//! both managed tables, a failed router as failed, the daemon's JSON with `--json`, redraws
//! with `--watch`, and one line with exit status 1 when no daemon answers.
//!
//! The real binary and plugins, moto as EC2; the daemon uses the `configfile` watcher and the
//! `file` health plugin, so the test decides what is failed. The spec is 10.55.0.0/16 on
//! 127.0.1.10 (rt1's subnet) or 127.0.2.10 (rt2's): both tables are managed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vpcrouter_tests::daemon::{binary, run_client};
use vpcrouter_tests::world::other_router;
use vpcrouter_tests::{file_driven, free_port, wait_for, Env};

const T: Duration = Duration::from_secs(20);
const CIDR: &str = "10.55.0.0/16";
const SPEC: &str = r#"{"10.55.0.0/16": ["127.0.1.10", "127.0.2.10"]}"#;

/// The line of `text` that starts with `start`.
fn line<'a>(text: &'a str, start: &str) -> &'a str {
    text.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("no line starting {start:?}:\n{text}"))
}

#[test]
fn status_shows_the_cidr_its_router_the_tables_and_a_failed_router() -> anyhow::Result<()> {
    let env = Env::new()?;
    let (rt1, rt2) = (env.world.tables[0].clone(), env.world.tables[1].clone());
    let tables = [rt1.as_str(), rt2.as_str()];
    let spec = env.write("spec.json", SPEC);
    let health = env.write("health.json", r#"{"failed": []}"#);
    let d = env.daemon().args(file_driven(&spec, &health)).start()?;
    let first = env.wait_routed(&tables, CIDR, T)?;
    let port = d.port.to_string();

    let (code, out, err) = run_client(&["status", "-p", &port])?;
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains('\x1b'), "no colour without a terminal: {out:?}");
    assert!(out.lines().all(|l| l.chars().count() <= 100), "fits 100 columns:\n{out}");
    assert!(line(&out, "vpcrouter ").contains(env.world.vpc_id.as_str()), "{out}");
    assert!(out.contains("role: single instance"), "{out}");
    for rtb in tables {
        assert!(line(&out, rtb).split_whitespace().any(|w| w == "1"), "{rtb} holds the spec's route:\n{out}");
    }
    let route = line(&out, CIDR);
    assert!(route.contains(&first) && route.contains("2 of 2"), "{route}\n{out}");
    let router = line(&out, &format!("{first} "));
    assert!(router.contains("healthy") && router.split_whitespace().any(|w| w == "2"), "{router}");
    assert!(out.contains("none since the daemon started"), "no failover yet:\n{out}");

    // The router in use fails: the routes move, and status says so.
    env.write("health.json", &format!(r#"{{"failed": ["{first}"]}}"#));
    let second = other_router(&first);
    wait_for(T, "the failover in status", || {
        let (_, out, _) = run_client(&["status", "-p", &port]).ok()?;
        out.lines().any(|l| l.starts_with(CIDR) && l.contains(second) && l.contains("2 of 2")).then_some(())
    })?;
    let (_, out, _) = run_client(&["status", "-p", &port])?;
    println!("vpcrouter status after the failover:\n{out}");
    let failed = line(&out, &format!("{first} "));
    assert!(failed.contains("failed") && failed.split_whitespace().any(|w| w == "0"), "{failed}\n{out}");
    let failover = line(&out, "20");
    assert!(failover.contains(&format!("router {first}: 2 routes moved in")), "{failover}\n{out}");

    // --json: the daemon's document.
    let (code, out, err) = run_client(&["status", "--json", "-p", &port])?;
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(doc["failed_hosts"], serde_json::json!([first]));
    assert_eq!(doc["route_tables"][&rt1][0]["router"], second);
    assert_eq!(doc["recent_failovers"][0]["routers"], serde_json::json!([first]));
    assert!(doc["last_failover"]["time"].is_string(), "{}", doc["last_failover"]);
    Ok(())
}

#[test]
fn watch_redraws_until_stopped() -> anyhow::Result<()> {
    let env = Env::new()?;
    let spec = env.write("spec.json", SPEC);
    let health = env.write("health.json", r#"{"failed": []}"#);
    let d = env.daemon().args(file_driven(&spec, &health)).start()?;
    let tables = [env.world.tables[0].as_str(), env.world.tables[1].as_str()];
    env.wait_routed(&tables, CIDR, T)?;
    let mut child = Command::new(binary())
        .args(["status", "--watch", "0.3", "-p", &d.port.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let (mut titles, mut routes, end) = (0, 0, Instant::now() + T);
    while titles < 3 && Instant::now() < end {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) if l.starts_with("every 0.3 s: vpcrouter status") => titles += 1,
            Ok(l) if l.starts_with(CIDR) => routes += 1,
            _ => {}
        }
    }
    let still_running = child.try_wait()?.is_none();
    child.kill()?;
    child.wait()?;
    assert!(still_running, "--watch runs until stopped");
    assert!(titles >= 3 && routes >= 2, "three redraws, each with the route: {titles} titles, {routes} routes");
    Ok(())
}

#[test]
fn no_daemon_is_one_line_and_exit_1() -> anyhow::Result<()> {
    let port = free_port().to_string();
    let (code, out, err) = run_client(&["status", "-p", &port])?;
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: cannot reach vpcrouter at http://127.0.0.1:") && err.contains("is it running?"),
        "{err}"
    );
    let (code, _, err) = run_client(&["status", "--watch", "0", "-p", &port])?;
    assert!(code == 2 && err.contains("from 0.2 to 3600"), "a usage error: {err}");
    Ok(())
}
