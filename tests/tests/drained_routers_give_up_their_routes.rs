//! A drained router gives up its routes and gets none back; drains survive a restart and live in etcd in cluster mode.
//!
//! The real binary and plugins, moto as EC2, the `drain`/`undrain`/`drains` subcommands
//! against the running daemon, the state file over a restart, and cluster mode on a real etcd.
//!
//! The daemon uses the `configfile` watcher and the `file` health plugin: the test decides
//! what is failed. The route spec is 10.55.0.0/16 on 127.0.1.10 (rt1's subnet) or
//! 127.0.2.10 (rt2's), so both tables are managed.

use std::time::Duration;

use vpcrouter_tests::cluster::{wait_new_leader, wait_one_leader, Instance};
use vpcrouter_tests::daemon::{run_client, Daemon};
use vpcrouter_tests::etcd::Etcd;
use vpcrouter_tests::world::other_router;
use vpcrouter_tests::{file_driven, free_port, http_client, wait_for, Env};

const T: Duration = Duration::from_secs(20);
const CIDR: &str = "10.55.0.0/16";
const SPEC: &str = r#"{"10.55.0.0/16": ["127.0.1.10", "127.0.2.10"]}"#;
const TOKEN: &str = "s3cret-drain-token";

fn set_failed(env: &Env, file: &str, hosts: &[&str]) {
    let list: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    env.write(file, &format!(r#"{{"failed": [{}]}}"#, list.join(",")));
}

fn routed_to(env: &Env, tables: &[&str], router: &str, log: impl Fn() -> String) -> anyhow::Result<()> {
    wait_for(T, &format!("{CIDR} to point at {router} in {tables:?}"), || {
        (env.world.targets(tables, CIDR).ok()? == vec![Some(router.to_string()); tables.len()]).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}\n--- log ---\n{}", env.world.dump(), log()))
}

/// `METHOD /drain...` with the token (if any); (status, JSON body).
fn drain_request(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, serde_json::Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    match http_client::request(port, method, path, &headers, body.as_bytes()) {
        Ok(r) => (r.status, r.json().unwrap_or_default()),
        Err(_) => (0, serde_json::Value::Null),
    }
}

/// ReplaceRoute calls the daemon made so far.
fn replaces(d: &Daemon) -> u64 {
    let text = http_client::get(d.port, "/metrics", None).map(|r| r.body).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("vpcrouter_ec2_calls_total{operation=\"ReplaceRoute\"} ")?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

#[test]
fn a_drain_moves_every_route_nothing_goes_back_and_an_undrain_moves_nothing() -> anyhow::Result<()> {
    let env = Env::new()?;
    let (rt1, rt2) = (env.world.tables[0].clone(), env.world.tables[1].clone());
    let tables = [rt1.as_str(), rt2.as_str()];
    let spec = env.write("spec.json", SPEC);
    let health = env.write("health.json", r#"{"failed": []}"#);
    let token = env.write("token", &format!("{TOKEN}\n"));
    let token_arg = token.to_str().unwrap_or_default();
    let mut args = file_driven(&spec, &health).to_vec();
    args.extend(["--http-token-file", token_arg]);
    let d = env.daemon().args(&args).start()?;
    let first = env.wait_routed(&tables, CIDR, T)?;
    let second = other_router(&first);
    let port = d.port.to_string();
    let client = |sub: &[&str]| -> anyhow::Result<(i32, String, String)> {
        let mut all = sub.to_vec();
        all.extend(["-p", port.as_str(), "--http-token-file", token_arg]);
        run_client(&all)
    };

    // Protected like POST /route_spec: 401 without the token, from the endpoint and the subcommand.
    assert_eq!(drain_request(d.port, "POST", &format!("/drain/{first}"), None, "").0, 401);
    let (code, out, err) = run_client(&["drain", &first, "-p", &port])?;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.starts_with("error: POST /drain/") && err.contains("HTTP 401") && err.trim().lines().count() == 1,
        "{err}"
    );
    // A bad IP: 400 from the endpoint, a usage error from the subcommand.
    assert_eq!(drain_request(d.port, "POST", "/drain/127.0.1.999", Some(TOKEN), "").0, 400);
    let (code, _, err) = client(&["drain", "127.0.1.999"])?;
    assert_eq!((code, err.trim().lines().count()), (2, 1), "{err}");

    // Drain the router in use: every table moves to the other, reason "drained".
    let (code, out, err) = client(&["drain", &first, "--reason", "kernel update"])?;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("{first}: drained since")) && out.contains("(kernel update)"), "{out}");
    routed_to(&env, &tables, second, || d.log())?;
    d.wait_log("reason=drained", T)?;
    d.wait_log(&format!("drain: 2 route(s) moved off drained router(s) {first}"), T)?;
    let moved =
        d.log().lines().filter(|l| l.contains("route changed: replaced") && l.contains("reason=drained")).count();
    assert_eq!(moved, 2, "one move per table\n{}", d.log());
    // Idempotent.
    let (code, out, _) = client(&["drain", &first])?;
    assert_eq!(code, 0);
    assert!(out.contains("already drained"), "{out}");

    // Visible in `drains`, /drain, /status, /ips and /metrics.
    let (code, out, _) = client(&["drains"])?;
    assert_eq!(code, 0);
    let row = out.lines().find(|l| l.starts_with(first.as_str())).unwrap_or_default().to_string();
    assert!(row.contains("local") && row.contains(CIDR) && row.ends_with("kernel update"), "{out}");
    let (code, out, _) = client(&["drains", "--json"])?;
    assert_eq!(code, 0);
    let list: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(list[0]["ip"], first.as_str());
    assert_eq!(list[0]["cidrs"], serde_json::json!([CIDR]));
    let status = http_client::get(d.port, "/status", None)?.json()?;
    assert_eq!(status["drains"][0]["ip"], first.as_str(), "{status}");
    assert_eq!(status["drains"][0]["reason"], "kernel update");
    let ips = http_client::get(d.port, "/ips", Some("application/json"))?.json()?;
    assert_eq!(ips["drained_ips"], serde_json::json!([first]), "{ips}");
    let metrics = http_client::get(d.port, "/metrics", None)?.body;
    assert!(metrics.contains(&format!("vpcrouter_router_drained{{router=\"{first}\"}} 1")), "{metrics}");
    assert!(metrics.lines().any(|l| l == "vpcrouter_drained_routers 1"), "{metrics}");

    // The other router fails: nothing goes to the drained one; the route stays, with a warning.
    set_failed(&env, "health.json", &[second]);
    d.wait_log(&format!("no healthy router for {CIDR}"), T)?;
    assert_eq!(env.world.targets(&tables, CIDR)?, vec![Some(second.to_string()); 2], "{}", d.log());
    set_failed(&env, "health.json", &[]);
    d.wait_log(&format!("resolved: no healthy router for {CIDR}"), T)?;

    // Undrain: a candidate again, but nothing moves back by itself.
    let before = replaces(&d);
    let (code, out, err) = client(&["undrain", &first])?;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("undrained"), "{out}");
    d.wait_log("router undrained", T)?;
    wait_for(T, "the reconcile after the undrain", || {
        let st = http_client::get(d.port, "/status", None).ok()?.json().ok()?;
        (st["drains"] == serde_json::json!([])).then_some(())
    })?;
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(replaces(&d), before, "an undrain moves nothing\n{}", d.log());
    assert_eq!(env.world.targets(&tables, CIDR)?, vec![Some(second.to_string()); 2]);
    let (_, out, _) = client(&["undrain", &first])?;
    assert!(out.contains("was not drained"), "{out}");
    // ... and it can take the routes again: the other router fails over to it.
    set_failed(&env, "health.json", &[second]);
    routed_to(&env, &tables, &first, || d.log())?;

    // A daemon that is not there: one line, exit 1.
    let (code, _, err) = run_client(&["drains", "-p", &free_port().to_string()])?;
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: cannot reach vpcrouter at http://127.0.0.1:") && err.trim().lines().count() == 1,
        "{err}"
    );
    Ok(())
}

#[test]
fn drains_survive_a_restart_through_the_state_file() -> anyhow::Result<()> {
    let env = Env::new()?;
    let (rt1, rt2) = (env.world.tables[0].clone(), env.world.tables[1].clone());
    let tables = [rt1.as_str(), rt2.as_str()];
    let spec = env.write("spec.json", SPEC);
    let health = env.write("health.json", r#"{"failed": []}"#);
    let state = env.path("state");
    let mut args = file_driven(&spec, &health).to_vec();
    args.extend(["--state-dir", state.to_str().unwrap_or_default()]);
    let mut d = env.daemon().args(&args).start()?;
    let first = env.wait_routed(&tables, CIDR, T)?;
    let second = other_router(&first);
    let (status, doc) = drain_request(d.port, "POST", &format!("/drain/{first}"), None, r#"{"reason": "reboot"}"#);
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["warning"], serde_json::Value::Null, "a candidate: no warning: {doc}");
    // Draining a router that is not in the spec is allowed, and says so.
    let (status, doc) = drain_request(d.port, "POST", "/drain/127.0.3.10", None, "");
    assert_eq!(status, 200);
    assert!(doc["warning"].as_str().is_some_and(|w| w.contains("not a candidate router")), "{doc}");
    routed_to(&env, &tables, second, || d.log())?;
    assert!(d.stop(T)?.success());
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(state.join("drains.json"))?)?;
    assert_eq!(file["drains"][0]["ip"], first.as_str(), "sorted by IP: {file}");
    assert_eq!(file["drains"].as_array().map(Vec::len), Some(2), "{file}");

    // Restarted with the same state dir: still drained. The other router fails, and the
    // route stays on it rather than go to the drained one.
    let d = env.daemon().args(&args).start()?;
    d.wait_log("drained routers (from the state file)", T)?;
    let (_, list) = drain_request(d.port, "GET", "/drain", None, "");
    let listed: Vec<&str> =
        list.as_array().map(|l| l.iter().filter_map(|d| d["ip"].as_str()).collect()).unwrap_or_default();
    assert!(listed.contains(&first.as_str()) && listed.contains(&"127.0.3.10"), "{list}");
    let entry = list.as_array().and_then(|l| l.iter().find(|d| d["ip"] == first.as_str()).cloned()).unwrap_or_default();
    assert_eq!(entry["reason"], "reboot");
    set_failed(&env, "health.json", &[second]);
    d.wait_log(&format!("no healthy router for {CIDR}"), T)?;
    assert_eq!(env.world.targets(&tables, CIDR)?, vec![Some(second.to_string()); 2], "{}", d.log());
    drop(d);

    // A corrupt state file stops the start with one line naming it.
    std::fs::write(state.join("drains.json"), "{ not json")?;
    let mut bad = env.daemon().args(&args).start()?;
    let status = bad.wait(T)?;
    assert_eq!(status.code(), Some(1));
    let log = bad.log();
    let line = log.lines().find(|l| l.starts_with("error: ")).unwrap_or_default();
    assert!(line.contains(&format!("{}: not a drain state file", state.join("drains.json").display())), "{log}");
    assert_eq!(log.matches("not a drain state file").count(), 1, "printed once: {log}");
    Ok(())
}

#[test]
fn a_drain_that_cannot_be_stored_is_refused() -> anyhow::Result<()> {
    let env = Env::new()?;
    let tables = [env.world.tables[0].as_str(), env.world.tables[1].as_str()];
    let spec = env.write("spec.json", SPEC);
    let health = env.write("health.json", r#"{"failed": []}"#);
    // A regular file where the state dir's parent should be: not writable, even for root.
    let blocker = env.write("not-a-dir", "");
    let state = blocker.join("state");
    let mut args = file_driven(&spec, &health).to_vec();
    args.extend(["--state-dir", state.to_str().unwrap_or_default()]);
    let d = env.daemon().args(&args).start()?;
    let first = env.wait_routed(&tables, CIDR, T)?;
    let (status, doc) = drain_request(d.port, "POST", &format!("/drain/{first}"), None, "");
    assert_eq!(status, 503, "{doc}");
    let e = doc["error"].as_str().unwrap_or_default();
    assert!(e.contains("cannot store the drain state") && e.contains("--state-dir"), "{doc}");
    let (_, list) = drain_request(d.port, "GET", "/drain", None, "");
    assert_eq!(list, serde_json::json!([]), "not in force");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(env.world.targets(&tables, CIDR)?, vec![Some(first.clone()); 2]);
    Ok(())
}

#[test]
fn in_cluster_mode_drains_live_in_etcd_and_every_leader_honours_them() -> anyhow::Result<()> {
    let etcd = Etcd::start()?;
    let env = Env::new()?;
    let tables = [env.world.tables[0].as_str(), env.world.tables[1].as_str()];
    let spec = env.write("spec.json", SPEC);
    let start = |id: &str| -> anyhow::Result<Instance> {
        let health = env.write(&format!("health-{id}.json"), r#"{"failed": []}"#);
        let args = file_driven(&spec, &health);
        Instance::start(env.daemon().args(args), &etcd.endpoints(), id, 2)
    };
    let mut all: Vec<Option<Instance>> = vec![Some(start("a")?), Some(start("b")?)];
    let first = env.wait_routed(&tables, CIDR, T)?;
    let second = other_router(&first);
    let view: Vec<&Instance> = all.iter().flatten().collect();
    let leader = wait_one_leader(&view, T)?;
    let follower = 1 - leader;
    let logs = |v: &[&Instance]| v.iter().map(|i| format!("--- {} ---\n{}", i.id, i.daemon.log())).collect::<String>();

    // Drained through the follower's status server: stored in etcd, the leader moves the route.
    let port = view[follower].daemon.port.to_string();
    let (code, out, err) =
        run_client(&["drain", &first, "--reason", "patch", "--url", &format!("http://127.0.0.1:{port}")])?;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("in the whole cluster (etcd)"), "{out}");
    let record = etcd.get(&format!("/vpcrouter/{}/drains/{first}", env.world.vpc_id))?;
    let record: serde_json::Value = serde_json::from_str(&record.unwrap_or_default())?;
    assert_eq!((record["ip"].as_str(), record["reason"].as_str()), (Some(first.as_str()), Some("patch")), "{record}");
    routed_to(&env, &tables, second, || logs(&view))?;
    view[leader].daemon.wait_log("reason=drained", T)?;
    wait_for(T, "every instance to list the drain", || {
        view.iter()
            .all(|i| {
                let (_, l) = drain_request(i.daemon.port, "GET", "/drain", None, "");
                l[0]["ip"] == first.as_str() && l[0]["scope"] == "cluster"
            })
            .then_some(())
    })?;
    let leader_id = view[leader].id.clone();
    drop(view);

    // The leader dies: the other leads, and still honours the drain (the other router fails,
    // the route stays rather than go to the drained one).
    let killed_at = std::time::Instant::now();
    drop(all[leader].take());
    let rest: Vec<&Instance> = all.iter().flatten().collect();
    wait_new_leader(&rest, killed_at, T, Duration::from_millis(100))
        .map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&rest)))?;
    assert_ne!(rest[0].id, leader_id);
    set_failed(&env, &format!("health-{}.json", rest[0].id), &[second]);
    rest[0].daemon.wait_log(&format!("no healthy router for {CIDR}"), T).map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(env.world.targets(&tables, CIDR)?, vec![Some(second.to_string()); 2], "{}", logs(&rest));

    // Undrained (in etcd): the new leader may use it again, and fails over to it.
    let (status, doc) = drain_request(rest[0].daemon.port, "DELETE", &format!("/drain/{first}"), None, "");
    assert_eq!((status, doc["changed"].as_bool()), (200, Some(true)), "{doc}");
    assert_eq!(etcd.get(&format!("/vpcrouter/{}/drains/{first}", env.world.vpc_id))?, None);
    routed_to(&env, &tables, &first, || logs(&rest))?;
    Ok(())
}
