//! Several vpcrouters on one etcd act as one: only the leader writes, and leadership passes on safely.
//!
//! Real etcd, real binaries, moto as EC2. Instances use the `configfile` watcher and the
//! `file` health plugin, so a test decides what each instance sees. Lease TTL 2 s (etcd's
//! minimum) keeps takeovers short.

use std::time::{Duration, Instant};

use vpcrouter_tests::cluster::{wait_new_leader, wait_one_leader, Instance};
use vpcrouter_tests::etcd::Etcd;
use vpcrouter_tests::file_driven;
use vpcrouter_tests::relay::Relay;
use vpcrouter_tests::{wait_for, Env};

const T: Duration = Duration::from_secs(20);
const TTL: u64 = 2;
/// How often the tests ask the instances' /status while timing a takeover.
const POLL: Duration = Duration::from_millis(50);
const CIDR: &str = "10.55.0.0/16";

/// Starts instance `id` with its own health file `health-<id>.json` (all healthy).
fn instance(env: &Env, etcd: &str, id: &str) -> anyhow::Result<Instance> {
    instance_with(env, etcd, id, &[])
}

/// [`instance`] with further options.
fn instance_with(env: &Env, etcd: &str, id: &str, extra: &[&str]) -> anyhow::Result<Instance> {
    let spec = env.path("spec.json");
    if !spec.exists() {
        env.write("spec.json", r#"{"10.55.0.0/16": ["127.0.1.10", "127.0.2.10"]}"#);
    }
    let health = env.path(&format!("health-{id}.json"));
    if !health.exists() {
        env.write(&format!("health-{id}.json"), r#"{"failed": []}"#);
    }
    let mut args = file_driven(&spec, &health).to_vec();
    args.extend_from_slice(extra);
    Instance::start(env.daemon().args(&args), etcd, id, TTL)
}

fn fail(env: &Env, id: &str, hosts: &[&str]) {
    let list: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    env.write(&format!("health-{id}.json"), &format!(r#"{{"failed": [{}]}}"#, list.join(",")));
}

fn other_router(r: &str) -> &'static str {
    if r == "127.0.1.10" {
        "127.0.2.10"
    } else {
        "127.0.1.10"
    }
}

fn routed_to(env: &Env, tables: &[&str], router: &str) -> anyhow::Result<()> {
    wait_for(T, &format!("{CIDR} to point at {router}"), || {
        (env.world.targets(tables, CIDR).ok()? == vec![Some(router.to_string()); tables.len()]).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", env.world.dump()))
}

fn logs(instances: &[&Instance]) -> String {
    instances.iter().map(|i| format!("--- {} ---\n{}", i.id, i.daemon.log())).collect()
}

#[test]
fn one_leader_writes_a_killed_leader_is_replaced_within_the_ttl_and_a_rejoin_is_quiet() -> anyhow::Result<()> {
    let etcd = Etcd::start()?;
    let env = Env::new()?;
    let (rt1, rt2) = (env.world.tables[0].clone(), env.world.tables[1].clone());
    let tables = [rt1.as_str(), rt2.as_str()];
    let mut all: Vec<Option<Instance>> = ["a", "b", "c"]
        .iter()
        .map(|id| instance(&env, &etcd.endpoints(), id).map(Some))
        .collect::<anyhow::Result<_>>()?;

    let first = env.wait_routed(&tables, CIDR, T)?;
    let view: Vec<&Instance> = all.iter().flatten().collect();
    let leader = wait_one_leader(&view, T).map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&view)))?;
    // Exactly one instance wrote: the two creates.
    std::thread::sleep(Duration::from_secs(1));
    let writes: Vec<u64> = view.iter().map(|i| i.writes().unwrap_or(u64::MAX)).collect();
    assert_eq!(writes.iter().filter(|&&w| w > 0).count(), 1, "writes per instance {writes:?}\n{}", logs(&view));
    assert_eq!(writes[leader], 2, "writes per instance {writes:?}");
    let leader_id = view[leader].id.clone();
    assert_eq!(view[leader].status().unwrap()["cluster"]["members"].as_array().map(Vec::len), Some(3));
    drop(view);

    // SIGKILL the leader: another takes over within TTL + 1 s.
    let killed = all[leader].take().expect("leader");
    let killed_at = Instant::now();
    drop(killed); // Daemon's drop is SIGKILL
    let rest: Vec<&Instance> = all.iter().flatten().collect();
    let (new, took) =
        wait_new_leader(&rest, killed_at, T, POLL).map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&rest)))?;
    assert!(took <= Duration::from_secs(TTL + 1), "takeover took {took:?}\n{}", logs(&rest));
    assert_ne!(rest[new].id, leader_id);

    // A router failure after the takeover is handled (both survivors see it: 2 of 2).
    for i in &rest {
        fail(&env, &i.id, &[&first]);
    }
    routed_to(&env, &tables, other_router(&first)).map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&rest)))?;
    let before: Vec<u64> = rest.iter().map(|i| i.writes().unwrap_or(0)).collect();
    assert_eq!(before.iter().filter(|&&w| w > 0).count(), 1, "only the new leader wrote: {before:?}");
    drop(rest);

    // The old leader comes back with the same id: it joins as a follower; nobody writes.
    let back = instance(&env, &etcd.endpoints(), &leader_id)?;
    wait_for(T, "the old leader to rejoin as follower", || (back.role()? == "follower").then_some(()))
        .map_err(|e| anyhow::anyhow!("{e}\n{}", back.daemon.log()))?;
    std::thread::sleep(Duration::from_secs(2));
    let rest: Vec<&Instance> = all.iter().flatten().collect();
    let after: Vec<u64> = rest.iter().map(|i| i.writes().unwrap_or(0)).collect();
    assert_eq!(after, before, "no writes after the rejoin\n{}", logs(&rest));
    assert_eq!(back.writes(), Some(0), "{}", back.daemon.log());
    assert_eq!(back.leader().as_deref(), Some(rest[new].id.as_str()));
    routed_to(&env, &tables, other_router(&first))?;
    Ok(())
}

#[test]
fn a_host_moves_only_when_a_majority_of_instances_see_it_failed() -> anyhow::Result<()> {
    let etcd = Etcd::start()?;
    let env = Env::new()?;
    let (rt1, rt2) = (env.world.tables[0].clone(), env.world.tables[1].clone());
    let tables = [rt1.as_str(), rt2.as_str()];
    let insts: Vec<Instance> =
        ["a", "b", "c"].iter().map(|id| instance(&env, &etcd.endpoints(), id)).collect::<anyhow::Result<_>>()?;
    let view: Vec<&Instance> = insts.iter().collect();
    let first = env.wait_routed(&tables, CIDR, T)?;
    let leader = wait_one_leader(&view, T)?;

    // One of three sees the router failed: the leader has that report, and nothing moves.
    fail(&env, "a", &[&first]);
    wait_for(T, "a's report to reach the leader", || {
        let st = view[leader].status()?;
        let failed = st["cluster"]["health_reports"]["a"]["failed"].as_array()?.clone();
        (failed.len() == 1 && failed[0] == first.as_str()).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&view)))?;
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(env.world.targets(&tables, CIDR)?, vec![Some(first.clone()); 2], "{}", logs(&view));
    assert_eq!(view[leader].status().unwrap()["failed_hosts"], serde_json::json!([]));
    assert_eq!(insts.iter().map(|i| i.writes().unwrap_or(0)).sum::<u64>(), 2);

    // Two of three: the route moves.
    fail(&env, "b", &[&first]);
    routed_to(&env, &tables, other_router(&first)).map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&view)))?;
    assert_eq!(view[leader].status().unwrap()["failed_hosts"], serde_json::json!([first]));
    Ok(())
}

#[test]
fn any_quorum_acts_on_a_single_view() -> anyhow::Result<()> {
    let etcd = Etcd::start()?;
    let env = Env::new()?;
    let rt1 = env.world.tables[0].clone();
    let start = |id: &str| instance_with(&env, &etcd.endpoints(), id, &["--health-quorum", "any"]);
    let (a, b) = (start("a")?, start("b")?);
    let first = env.wait_routed(&[&rt1], CIDR, T)?;
    wait_one_leader(&[&a, &b], T)?;
    fail(&env, "b", &[&first]);
    routed_to(&env, &[&rt1], other_router(&first)).map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&[&a, &b])))?;
    Ok(())
}

#[test]
fn etcd_outage_stops_the_leader_writing_within_the_ttl_and_one_leader_resumes() -> anyhow::Result<()> {
    let mut etcd = Etcd::start()?;
    let env = Env::new()?;
    let rt1 = env.world.tables[0].clone();
    let (mut a, mut b) = (instance(&env, &etcd.endpoints(), "a")?, instance(&env, &etcd.endpoints(), "b")?);
    let first = env.wait_routed(&[&rt1], CIDR, T)?;
    let leader = wait_one_leader(&[&a, &b], T)?;
    let writes_before: u64 = [&a, &b].iter().map(|i| i.writes().unwrap_or(0)).sum();

    etcd.stop_all();
    let down = Instant::now();
    let lead = if leader == 0 { &a } else { &b };
    wait_for(T, "the leader to step down", || (lead.role()? != "leader").then_some(()))?;
    let stepped = down.elapsed();
    assert!(
        stepped <= Duration::from_secs(TTL) + Duration::from_millis(500),
        "stepped down after {stepped:?}\n{}",
        lead.daemon.log()
    );

    // A router fails meanwhile: nobody may write.
    fail(&env, "a", &[&first]);
    fail(&env, "b", &[&first]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(env.world.targets(&[&rt1], CIDR)?, vec![Some(first.clone())]);
    let writes_during: u64 = [&a, &b].iter().map(|i| i.writes().unwrap_or(0)).sum();
    assert_eq!(writes_during, writes_before, "{}", logs(&[&a, &b]));
    assert!(a.daemon.exited().is_none() && b.daemon.exited().is_none(), "{}", logs(&[&a, &b]));

    // etcd returns: one leader, and it handles the failure.
    etcd.start_all()?;
    wait_one_leader(&[&a, &b], T).map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&[&a, &b])))?;
    routed_to(&env, &[&rt1], other_router(&first)).map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&[&a, &b])))?;
    assert!(a.daemon.log().contains("cluster: etcd session lost"), "{}", a.daemon.log());
    for i in [&mut a, &mut b] {
        assert!(i.daemon.stop(Duration::from_secs(10))?.success());
    }
    Ok(())
}

#[test]
fn a_leader_cut_off_from_etcd_never_writes_while_another_takes_over() -> anyhow::Result<()> {
    let etcd = Etcd::start()?;
    let env = Env::new()?;
    let rt1 = env.world.tables[0].clone();
    // `a` reaches etcd through a relay that can hold its traffic: a partition, not a reset.
    let relay = Relay::start(&etcd.endpoint(0))?;
    // `any`: a's own view is enough for it to try to act on the failure below.
    let start = |id: &str, etcd_url: &str| instance_with(&env, etcd_url, id, &["--health-quorum", "any"]);
    let a = start("a", &format!("http://127.0.0.1:{}", relay.port))?;
    wait_for(T, "a to lead", || (a.role()? == "leader").then_some(()))?;
    let b = start("b", &etcd.endpoint(0))?;
    assert_eq!(wait_one_leader(&[&a, &b], T)?, 0);
    let first = env.wait_routed(&[&rt1], CIDR, T)?;
    let a_writes = a.writes().unwrap_or(u64::MAX);

    relay.paused.store(true, std::sync::atomic::Ordering::Relaxed);
    let cut = Instant::now();
    fail(&env, "a", &[&first]);
    fail(&env, "b", &[&first]);
    // b takes over once a's lease expires in etcd, and moves the route; a never writes again.
    let (_, took) = wait_new_leader(&[&b], cut, T, POLL).map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&[&a, &b])))?;
    assert!(took <= Duration::from_secs(TTL + 1), "takeover took {took:?}\n{}", logs(&[&a, &b]));
    routed_to(&env, &[&rt1], other_router(&first)).map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&[&a, &b])))?;
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a.writes(), Some(a_writes), "the cut-off leader wrote\n{}", logs(&[&a, &b]));
    assert_ne!(a.role().as_deref(), Some("leader"), "{}", a.daemon.log());
    let log = a.daemon.log();
    assert!(log.contains("leadership not confirmed") || log.contains("etcd session lost"), "{log}");
    for line in log.lines().filter(|l| l.contains("cluster:") || l.contains("route changed")) {
        eprintln!("a: {line}");
    }
    Ok(())
}

#[test]
fn three_node_etcd_survives_losing_a_member() -> anyhow::Result<()> {
    let mut etcd = Etcd::start_cluster(3)?;
    let env = Env::new()?;
    let rt1 = env.world.tables[0].clone();
    let (a, b) = (instance(&env, &etcd.endpoints(), "a")?, instance(&env, &etcd.endpoints(), "b")?);
    let first = env.wait_routed(&[&rt1], CIDR, T)?;
    wait_one_leader(&[&a, &b], T)?;
    etcd.stop_node(0);
    // Still (or again) exactly one leader, and a failure is handled.
    std::thread::sleep(Duration::from_secs(TTL));
    wait_one_leader(&[&a, &b], T).map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&[&a, &b])))?;
    fail(&env, "a", &[&first]);
    fail(&env, "b", &[&first]);
    routed_to(&env, &[&rt1], other_router(&first)).map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&[&a, &b])))?;
    Ok(())
}

#[test]
fn sigterm_hands_leadership_over_at_once() -> anyhow::Result<()> {
    let etcd = Etcd::start()?;
    let env = Env::new()?;
    let mut insts = vec![instance(&env, &etcd.endpoints(), "a")?, instance(&env, &etcd.endpoints(), "b")?];
    env.wait_routed(&[&env.world.tables[0]], CIDR, T)?;
    let leader = wait_one_leader(&insts.iter().collect::<Vec<_>>(), T)?;
    let mut old = insts.remove(leader);
    let t0 = Instant::now();
    assert!(old.daemon.stop(Duration::from_secs(10))?.success());
    let (_, took) = wait_new_leader(&[&insts[0]], t0, T, POLL)?;
    eprintln!("handover after SIGTERM: {took:?}");
    // The lease is revoked on the way out: no waiting for the TTL.
    assert!(took < Duration::from_secs(TTL), "took {took:?}\n{}", old.daemon.log());
    assert!(old.daemon.log().contains("cluster: left (lease revoked)"), "{}", old.daemon.log());
    Ok(())
}

#[test]
fn cluster_options_are_checked() {
    use vpcrouter_tests::daemon::run_once;
    let (code, _, err) = run_once(&[
        "-m", "fixedconf", "--fixed_cidr", "10.1.0.0/16", "--fixed_hosts", "10.0.0.1", "--instance-id", "x",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--cluster-etcd"), "{err}");
    let (code, _, err) = run_once(&[
        "-m", "fixedconf", "--fixed_cidr", "10.1.0.0/16", "--fixed_hosts", "10.0.0.1", "--cluster-etcd",
        "http://x:1,https://y:2",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--cluster-etcd: the endpoints mix http:// and https://"), "{err}");
    let (code, _, err) = run_once(&[
        "-m", "fixedconf", "--fixed_cidr", "10.1.0.0/16", "--fixed_hosts", "10.0.0.1", "--cluster-etcd", "http://x:1",
        "--etcd-cacert", "/ca.pem",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--etcd-cacert is given but etcd endpoint 'http://x:1' is http://"), "{err}");
    // Nothing would use them: refused rather than ignored.
    let (code, _, err) = run_once(&[
        "-m", "fixedconf", "--fixed_cidr", "10.1.0.0/16", "--fixed_hosts", "10.0.0.1", "--etcd-cacert", "/ca.pem",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--etcd-cacert is given, but neither --cluster-etcd nor the plugins loaded"), "{err}");
    let (code, _, err) = run_once(&[
        "-m", "fixedconf", "--fixed_cidr", "10.1.0.0/16", "--fixed_hosts", "10.0.0.1", "--cluster-etcd",
        "127.0.0.1:2379", "--instance-id", "a/b",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--instance-id 'a/b'"), "{err}");
    let (code, out, _) = run_once(&["-m", "fixedconf", "--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("--cluster-etcd") && out.contains("--health-quorum") && out.contains("VPCROUTER_CLUSTER_ETCD"),
        "{out}"
    );
}

#[test]
fn a_leader_that_loses_its_lease_in_the_middle_of_a_wave_stops_writing() -> anyhow::Result<()> {
    let etcd = Etcd::start()?;
    let env = Env::new()?;
    let tables = [env.world.tables[0].clone(), env.world.tables[1].clone()];
    let cidrs: Vec<String> = (0..6).map(|i| format!("10.7{i}.0.0/16")).collect();
    let spec: Vec<String> = cidrs.iter().map(|c| format!("\"{c}\": [\"127.0.1.10\", \"127.0.2.10\"]")).collect();
    env.write("spec.json", &format!("{{{}}}", spec.join(", ")));
    for id in ["a", "b"] {
        env.write(&format!("health-{id}.json"), r#"{"failed": ["127.0.2.10"]}"#);
    }
    // 12 routes at 2 writes a second (a bucket of one): a failover wave takes about 6 s,
    // three lease TTLs.
    let slow = ["--health-quorum", "any", "--ec2-write-burst", "2", "--ec2-write-rate", "2"];
    let relay = Relay::start(&etcd.endpoint(0))?;
    let a = instance_with(&env, &format!("http://127.0.0.1:{}", relay.port), "a", &slow)?;
    wait_for(T, "a to lead", || (a.role()? == "leader").then_some(()))?;
    let b = instance_with(&env, &etcd.endpoint(0), "b", &slow)?;
    let on = |router: &str| {
        let want = vec![Some(router.to_string()); 2];
        let t = [tables[0].as_str(), tables[1].as_str()];
        cidrs.iter().all(|c| env.world.targets(&t, c).ok() == Some(want.clone()))
    };
    wait_for(Duration::from_secs(30), "12 routes on 127.0.1.10", || on("127.0.1.10").then_some(()))
        .map_err(|e| anyhow::anyhow!("{e}\n{}\n{}", env.world.dump(), logs(&[&a, &b])))?;
    assert_eq!(wait_one_leader(&[&a, &b], T)?, 0);
    let before = a.writes().unwrap_or(0);
    for id in ["a", "b"] {
        fail(&env, id, &["127.0.1.10"]);
    }
    // Cut a off from etcd once its wave is under way.
    wait_for(T, "a's wave to start", || (a.writes()? >= before + 3).then_some(()))?;
    relay.paused.store(true, std::sync::atomic::Ordering::Relaxed);
    let cut = Instant::now();
    // Its lease is known live for at most TTL after the last keep-alive it saw: by then it
    // has stopped writing, with routes still to move.
    std::thread::sleep(Duration::from_secs(TTL) + Duration::from_millis(300));
    let a_writes = a.writes().unwrap_or(u64::MAX);
    assert!(a_writes < before + 12, "a's wave was not cut short ({} writes)\n{}", a_writes - before, a.daemon.log());
    // b takes over and finishes; a never writes again.
    wait_for(Duration::from_secs(30), "12 routes on 127.0.2.10", || on("127.0.2.10").then_some(()))
        .map_err(|e| anyhow::anyhow!("{e}\n{}\n{}", env.world.dump(), logs(&[&a, &b])))?;
    assert_eq!(a.writes(), Some(a_writes), "the cut-off leader wrote after its lease ran out\n{}", logs(&[&a, &b]));
    assert_eq!(b.role().as_deref(), Some("leader"));
    eprintln!(
        "a made {} of the 12 writes before its lease ran out, {:?} after the cut",
        a_writes - before,
        cut.elapsed()
    );
    Ok(())
}

#[test]
fn only_the_leader_changes_prefix_lists_and_a_new_leader_adopts_them() -> anyhow::Result<()> {
    let etcd = Etcd::start()?;
    let env = Env::new()?;
    env.write(
        "spec.json",
        r#"{"10.55.0.0/16": ["127.0.1.10", "127.0.2.10"], "10.57.0.0/16": ["127.0.1.10", "127.0.2.10"]}"#,
    );
    let (rt1, rt2) = (env.world.tables[0].clone(), env.world.tables[1].clone());
    let lists = || -> Vec<vpcrouter_tests::world::PrefixListInfo> {
        env.world
            .prefix_lists()
            .unwrap_or_default()
            .into_iter()
            .filter(|l| l.tags.contains_key("vpcrouter:group"))
            .collect()
    };
    let mut all: Vec<Option<Instance>> = ["a", "b"]
        .iter()
        .map(|id| instance_with(&env, &etcd.endpoints(), id, &["--prefix-lists"]).map(Some))
        .collect::<anyhow::Result<_>>()?;
    let view: Vec<&Instance> = all.iter().flatten().collect();
    let leader = wait_one_leader(&view, T).map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&view)))?;
    let list = wait_for(T, "the group's list routed in rt1 and rt2", || {
        let [list] = lists().try_into().ok()?;
        let routed = [&rt1, &rt2].iter().all(|t| env.world.routes(t).is_ok_and(|r| r.contains_key(&list.id)));
        routed.then_some(list)
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&view)))?;
    assert_eq!(list.entries, [CIDR, "10.57.0.0/16"]);
    let changes = |i: &Instance| i.metric("vpcrouter_prefix_list_changes_total").unwrap_or(-1.0);
    assert!(changes(view[leader]) >= 1.0, "{}", logs(&view));
    assert_eq!(changes(view[1 - leader]), 0.0, "the follower changes no list\n{}", logs(&view));
    assert!(!view[1 - leader].daemon.log().contains("prefix list changed"));

    // The leader goes; the other adopts the list (same cluster name) and edits it.
    let gone = all[leader].take().expect("leader");
    drop(gone);
    let view: Vec<&Instance> = all.iter().flatten().collect();
    wait_one_leader(&view, T)?;
    env.write(
        "spec.json",
        r#"{"10.55.0.0/16": ["127.0.1.10", "127.0.2.10"], "10.56.0.0/16": ["127.0.1.10", "127.0.2.10"], "10.57.0.0/16": ["127.0.1.10", "127.0.2.10"]}"#,
    );
    wait_for(T, "the new leader to add 10.56 to the same list", || {
        let [l] = lists().try_into().ok()?;
        (l.id == list.id && l.entries == [CIDR, "10.56.0.0/16", "10.57.0.0/16"]).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&view)))?;
    // The line is logged once EC2 acknowledged the change, which may be after moto shows it.
    view[0]
        .daemon
        .wait_log("prefix list changed: 1 entries added", T)
        .map_err(|e| anyhow::anyhow!("{e}\n{}", logs(&view)))?;
    Ok(())
}
