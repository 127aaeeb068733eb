//! The `etcd` watcher: routes follow the spec held in etcd through bad values, restarts and lost members.
//!
//! Real binary, real plugin libraries, moto as EC2, and a real etcd (`vpcrouter_tests::etcd`)
//! holding the route spec.

use std::time::Duration;

use serde_json::Value;
use vpcrouter_tests::daemon::{run_once, Daemon};
use vpcrouter_tests::etcd::Etcd;
use vpcrouter_tests::http_client::get;
use vpcrouter_tests::{wait_for, Env};

const T: Duration = Duration::from_secs(20);
const KEY: &str = "/vpcrouter/route_spec";
const SPEC_A: &str = r#"{"10.55.0.0/16": ["127.0.1.10", "127.0.2.10"], "10.66.0.0/24": ["127.0.1.11"]}"#;
const SPEC_B: &str = r#"{"10.55.0.0/16": ["127.0.1.11"], "10.77.0.0/16": ["127.0.2.10"]}"#;

/// vpcrouter with the etcd watcher on `endpoints` and every router healthy.
fn daemon(env: &Env, endpoints: &str) -> anyhow::Result<Daemon> {
    env.daemon().args(["-m", "etcd", "--etcd_endpoints", endpoints, "--etcd_key", KEY, "-H", "always"]).start()
}

fn first_two_tables(env: &Env) -> (String, String) {
    (env.world.tables[0].clone(), env.world.tables[1].clone())
}

/// Waits until `cidr` points at `router` (or is absent, for `None`) in every table of `tables`.
fn wait_target(env: &Env, tables: &[&str], cidr: &str, router: Option<&str>) -> anyhow::Result<()> {
    let want = vec![router.map(String::from); tables.len()];
    wait_for(T, &format!("{cidr} -> {router:?} in {tables:?}"), || {
        (env.world.targets(tables, cidr).ok()? == want).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", env.world.dump()))
}

/// Waits until the spec of `SPEC_B` is in force: 10.55 moved, 10.77 added, 10.66 deleted.
fn wait_spec_b(env: &Env, tables: &[&str]) -> anyhow::Result<()> {
    wait_target(env, tables, "10.55.0.0/16", Some("127.0.1.11"))?;
    wait_target(env, tables, "10.77.0.0/16", Some("127.0.2.10"))?;
    wait_target(env, tables, "10.66.0.0/24", None)
}

/// The etcd watcher's `info()` from the status server.
fn plugin_info(d: &Daemon) -> anyhow::Result<Value> {
    let r = get(d.port, "/status", None)?;
    anyhow::ensure!(r.status == 200, "/status answered {}: {}", r.status, r.body);
    let doc = r.json()?;
    let plugins = doc["plugins"].as_array().cloned().unwrap_or_default();
    plugins
        .into_iter()
        .find(|p| p["name"] == "etcd")
        .map(|p| p["info"].clone())
        .ok_or_else(|| anyhow::anyhow!("no etcd plugin in {doc}"))
}

#[test]
fn put_creates_routes_and_a_new_spec_moves_and_deletes_them() -> anyhow::Result<()> {
    let env = Env::new()?;
    let etcd = Etcd::start()?;
    let (rt1, rt2) = first_two_tables(&env);
    let d = daemon(&env, &etcd.endpoints())?;
    // Absent at start: a warning, and nothing is routed until the key is put.
    d.wait_log(&format!("etcd key '{KEY}' does not exist; waiting for it to be put"), T)?;
    assert!(!env.world.routes(&rt1)?.contains_key("10.55.0.0/16"));

    etcd.put(KEY, SPEC_A)?;
    let r = env.wait_routed(&[&rt1, &rt2], "10.55.0.0/16", T)?;
    assert!(r == "127.0.1.10" || r == "127.0.2.10", "{r}");
    assert_eq!(env.wait_routed(&[&rt1, &rt2], "10.66.0.0/24", T)?, "127.0.1.11");
    // Unmanaged tables and non-instance routes are untouched.
    assert!(!env.world.routes(&env.world.tables[2])?.contains_key("10.55.0.0/16"));
    assert_eq!(env.world.routes(&rt1)?.get("0.0.0.0/0"), Some(&env.world.igw));

    // Replace the spec: one CIDR changes routers, one goes away, one is new.
    etcd.put(KEY, SPEC_B)?;
    wait_spec_b(&env, &[&rt1, &rt2])?;
    d.wait_log(&format!("Route spec from etcd key '{KEY}' (revision "), T)?;
    assert!(d.log().contains("route changed: replaced"), "{}", d.log());
    Ok(())
}

#[test]
fn invalid_values_and_a_deleted_key_keep_the_routes() -> anyhow::Result<()> {
    let env = Env::new()?;
    let etcd = Etcd::start()?;
    let (rt1, rt2) = first_two_tables(&env);
    etcd.put(KEY, SPEC_A)?;
    let mut d = daemon(&env, &etcd.endpoints())?;
    env.wait_routed(&[&rt1, &rt2], "10.66.0.0/24", T)?;
    let routed = env.wait_routed(&[&rt1, &rt2], "10.55.0.0/16", T)?;
    let before = (env.world.routes(&rt1)?, env.world.routes(&rt2)?);

    etcd.put(KEY, r#"{"10.55.0.0/16": ["127.0.1.10"], "10.1.0.1/16": ["127.0.1.10"]}"#)?;
    d.wait_log(&format!("etcd key '{KEY}' (revision "), T)?;
    d.wait_log("ignored: '10.1.0.1/16' is not a valid route CIDR: host bits are set; the network is 10.1.0.0/16", T)?;
    etcd.put(KEY, "{ this is not json")?;
    d.wait_log("ignored: the route spec is not valid JSON", T)?;
    etcd.put(KEY, r#"{"10.55.0.0/16": ["127.0.1.300"]}"#)?;
    d.wait_log("'127.0.1.300' (a router of '10.55.0.0/16') is not a valid IPv4 address", T)?;
    // Ambiguous: read as "last wins" it would delete 10.66.0.0/24's routes.
    etcd.put(
        KEY,
        r#"{"10.55.0.0/16": ["127.0.1.10", "127.0.2.10"], "10.66.0.0/24": ["127.0.1.11"], "10.66.0.0/24": []}"#,
    )?;
    d.wait_log("ignored: '10.66.0.0/24' appears more than once in the route spec, which makes it ambiguous", T)?;
    etcd.delete(KEY)?;
    d.wait_log(&format!("etcd key '{KEY}' deleted; keeping the last route spec in force"), T)?;
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!((env.world.routes(&rt1)?, env.world.routes(&rt2)?), before, "routes unchanged");
    assert!(d.exited().is_none(), "the daemon keeps running\n{}", d.log());
    let info = plugin_info(&d)?;
    assert_eq!((info["stats"]["errors"].as_u64(), info["key_present"].as_bool()), (Some(4), Some(false)), "{info}");

    // Put back: followed again; the route that was kept did not move.
    etcd.put(KEY, r#"{"10.55.0.0/16": ["127.0.1.10", "127.0.2.10"]}"#)?;
    wait_target(&env, &[&rt1, &rt2], "10.66.0.0/24", None)?;
    assert_eq!(env.world.targets(&[&rt1, &rt2], "10.55.0.0/16")?, vec![Some(routed.clone()); 2]);
    Ok(())
}

#[test]
fn an_etcd_restart_keeps_the_routes_and_the_next_spec_is_applied() -> anyhow::Result<()> {
    let env = Env::new()?;
    let mut etcd = Etcd::start()?;
    let (rt1, rt2) = first_two_tables(&env);
    etcd.put(KEY, SPEC_A)?;
    let mut d = daemon(&env, &etcd.endpoints())?;
    env.wait_routed(&[&rt1, &rt2], "10.55.0.0/16", T)?;
    env.wait_routed(&[&rt1, &rt2], "10.66.0.0/24", T)?;
    let before = (env.world.routes(&rt1)?, env.world.routes(&rt2)?);

    etcd.stop_all();
    d.wait_log("Lost the connection to etcd (", T)?;
    // Several reconnection attempts fail meanwhile; the outage is logged once.
    std::thread::sleep(Duration::from_secs(2));
    assert!(d.exited().is_none(), "the daemon keeps running\n{}", d.log());
    assert_eq!(d.log().matches("Lost the connection to etcd").count(), 1, "{}", d.log());
    let info = plugin_info(&d)?;
    assert_eq!((info["connected"].as_bool(), info["outages"].as_u64()), (Some(false), Some(1)), "{info}");
    assert_eq!((env.world.routes(&rt1)?, env.world.routes(&rt2)?), before, "routes unchanged");

    etcd.start_all()?;
    d.wait_log("Reconnected to etcd after", T)?;
    etcd.put(KEY, SPEC_B)?;
    wait_spec_b(&env, &[&rt1, &rt2])?;
    assert!(d.exited().is_none(), "{}", d.log());
    assert_eq!(plugin_info(&d)?["connected"], true);
    Ok(())
}

/// A 3-member etcd holding `SPEC_A`, and vpcrouter on member 0 only (`only_member_0`) or on
/// all three (it starts on the first); once `SPEC_A` is routed, member 0 is killed (the
/// plugin logs the loss) and `SPEC_B` is put through the other two.
fn member_0_lost_then_spec_b_put(env: &Env, only_member_0: bool) -> anyhow::Result<(Etcd, Daemon)> {
    let mut etcd = Etcd::start_cluster(3)?;
    let (rt1, rt2) = first_two_tables(env);
    etcd.put(KEY, SPEC_A)?;
    let d = daemon(env, &if only_member_0 { etcd.endpoint(0) } else { etcd.endpoints() })?;
    env.wait_routed(&[&rt1, &rt2], "10.66.0.0/24", T)?;
    etcd.stop_node(0);
    d.wait_log("Lost the connection to etcd (", T)?;
    // A put can time out while the other members elect a new leader: retry it (idempotent).
    wait_for(T, "a put with member 0 down", || etcd.put(KEY, SPEC_B).ok())?;
    Ok((etcd, d))
}

#[test]
fn a_spec_changed_while_the_members_of_the_plugin_were_down_is_applied_on_reconnect() -> anyhow::Result<()> {
    let env = Env::new()?;
    let (rt1, rt2) = first_two_tables(&env);
    // Only member 0: its loss is an outage for the plugin while the cluster keeps a quorum.
    let (mut etcd, d) = member_0_lost_then_spec_b_put(&env, true)?;
    etcd.start_node(0)?;
    // Re-read after reconnecting; then watched again from there.
    wait_spec_b(&env, &[&rt1, &rt2])?;
    d.wait_log("Reconnected to etcd after", T)?;
    etcd.put(KEY, r#"{"10.88.0.0/16": ["127.0.1.10", "127.0.2.10"]}"#)?;
    env.wait_routed(&[&rt1, &rt2], "10.88.0.0/16", T)?;
    wait_target(&env, &[&rt1, &rt2], "10.55.0.0/16", None)?;
    assert_eq!(d.log().matches("Lost the connection to etcd").count(), 1, "{}", d.log());
    Ok(())
}

#[test]
fn with_several_endpoints_a_lost_member_is_left_for_a_live_one() -> anyhow::Result<()> {
    let env = Env::new()?;
    let (rt1, rt2) = first_two_tables(&env);
    let (_etcd, d) = member_0_lost_then_spec_b_put(&env, false)?;
    // Applied while member 0 is still down: the plugin moved on to another member.
    wait_spec_b(&env, &[&rt1, &rt2]).map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))?;
    Ok(())
}

#[test]
fn bad_etcd_options_are_one_clear_line() {
    let (code, _, err) = run_once(&["-m", "etcd", "-H", "always"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--etcd_endpoints"), "{err}");
    // A bare host:port is fine now (http://, or https:// with TLS files); a path is not.
    let (code, _, err) = run_once(&["-m", "etcd", "--etcd_endpoints", "127.0.0.1:2379/v3", "-H", "always"]);
    assert_ne!(code, 0);
    assert!(
        err.contains(
            "--etcd_endpoints: '127.0.0.1:2379/v3' has a path, query or fragment; pass only \
             scheme://host:port"
        ),
        "{err}"
    );
    let (code, _, err) = run_once(&["-m", "etcd", "--etcd_endpoints", ",", "-H", "always"]);
    assert_ne!(code, 0);
    assert!(err.contains("--etcd_endpoints: no etcd endpoint given"), "{err}");
    let (code, _, err) = run_once(&["-m", "etcd", "--etcd_endpoints", "h:1", "--etcd-key", "/k.pem", "-H", "always"]);
    assert_ne!(code, 0);
    assert!(err.contains("--etcd-key is given without --etcd-cert"), "{err}");
    let (code, out, _) = run_once(&["-m", "etcd", "-H", "always", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--etcd_endpoints") && out.contains("--etcd_key") && out.contains(KEY), "{out}");
}
