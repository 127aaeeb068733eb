//! A failover's route writes go out in parallel as one wave, and converge through faults and outside changes.
//!
//! The wave is planned from the known state; the invariants of a reconcile hold, faults inside
//! a wave converge, and a state changed behind vpcrouter's back still ends correct.
//!
//! Six CIDRs on two routers (A = 127.0.1.10 in s1, B = 127.0.2.10 in s2) give 12 routes in
//! rt1 and rt2. At start B is marked failed, so that every route is created on A; each test
//! then fails A (B recovers) and watches all 12 routes move to B.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use vpcrouter_tests::daemon::Daemon;
use vpcrouter_tests::faultproxy::{Fault, FaultProxy, Rule};
use vpcrouter_tests::file_driven;
use vpcrouter_tests::{http_client, wait_for, Env};

const T: Duration = Duration::from_secs(30);
const A: &str = "127.0.1.10";
const B: &str = "127.0.2.10";
/// A router instance of s1 that is not a candidate of the spec.
const OUTSIDER: &str = "127.0.1.11";
const CIDRS: [&str; 6] =
    ["10.61.0.0/16", "10.62.0.0/16", "10.63.0.0/16", "10.64.0.0/16", "10.65.0.0/16", "10.66.0.0/16"];
/// An instance route in rt3, a table no spec host's subnet uses: never touched.
const UNMANAGED: &str = "10.99.0.0/16";

struct Setup {
    env: Env,
    proxy: FaultProxy,
    d: Daemon,
    tables: [String; 2],
}

impl Setup {
    /// vpcrouter behind a proxy with `extra` options; returns once all 12 routes are on A.
    fn new(extra: &[&str]) -> anyhow::Result<Setup> {
        let env = Env::new()?;
        let proxy = FaultProxy::start(&env.moto.endpoint)?;
        let spec: Vec<String> = CIDRS.iter().map(|c| format!("\"{c}\": [\"{A}\", \"{B}\"]")).collect();
        let spec = env.write("spec.json", &format!("{{{}}}", spec.join(", ")));
        let health = env.write("health.json", &format!(r#"{{"failed": ["{B}"]}}"#));
        env.world.add_instance_route(&env.world.tables[2], UNMANAGED, "127.0.3.10")?;
        let d = env
            .daemon()
            .endpoint(&proxy.endpoint)
            .args(file_driven(&spec, &health))
            .args(["--route_recheck_interval", "30"])
            .args(extra)
            .start()?;
        let tables = [env.world.tables[0].clone(), env.world.tables[1].clone()];
        let s = Setup { env, proxy, d, tables };
        s.wait_all_on(A, T)?;
        Ok(s)
    }

    /// Where each CIDR points in rt1 and rt2.
    fn targets(&self) -> Option<BTreeMap<String, Vec<Option<String>>>> {
        let tables = [self.tables[0].as_str(), self.tables[1].as_str()];
        CIDRS.iter().map(|c| Some((c.to_string(), self.env.world.targets(&tables, c).ok()?))).collect()
    }

    /// Waits until every route points at `router`; returns how long that took.
    fn wait_all_on(&self, router: &str, timeout: Duration) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        let want = vec![Some(router.to_string()); 2];
        wait_for(timeout, &format!("all routes on {router}"), || {
            self.targets()?.values().all(|t| *t == want).then_some(())
        })
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}\n{}\ncalls: {:?}\n--- log ---\n{}",
                self.env.world.dump(),
                self.proxy.counts(),
                self.d.log()
            )
        })?;
        Ok(t0.elapsed())
    }

    /// Marks `failed` failed (and every other router healthy).
    fn fail(&self, failed: &[&str]) -> Instant {
        let list: Vec<String> = failed.iter().map(|h| format!("\"{h}\"")).collect();
        self.env.write("health.json", &format!(r#"{{"failed": [{}]}}"#, list.join(",")));
        Instant::now()
    }

    fn metrics(&self) -> String {
        http_client::get(self.d.port, "/metrics", None).map(|r| r.body).unwrap_or_default()
    }

    /// A sample of `/metrics` by its full name with labels (0 when absent).
    fn metric(&self, sample: &str) -> f64 {
        self.metrics().lines().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
    }

    /// Calls of `action` the proxy saw since `t`.
    fn calls_since(&self, action: &str, t: Instant) -> usize {
        self.proxy.calls().iter().filter(|c| c.at >= t && c.action == action).count()
    }
}

#[test]
fn a_failover_writes_every_route_once_in_parallel_and_touches_nothing_else() -> anyhow::Result<()> {
    let s = Setup::new(&[])?;
    let rt3_before = s.env.world.routes(&s.env.world.tables[2])?;
    let rt1_before = s.env.world.routes(&s.tables[0])?;
    // Each ReplaceRoute takes 300 ms: one after the other, 12 would take 3.6 s.
    s.proxy.set_policy(vec![Rule::all(Fault::Slow(Duration::from_millis(300))).on(&["ReplaceRoute"])]);
    let t0 = s.fail(&[A]);
    let took = s.wait_all_on(B, T)?;
    assert!(took < Duration::from_millis(1800), "12 slow writes took {took:?}: not in parallel?\n{}", s.d.log());
    std::thread::sleep(Duration::from_secs(1));
    // One write per (table, CIDR): every one of the 12 routes had to change once.
    assert_eq!(s.calls_since("ReplaceRoute", t0), 12, "{:?}\n{}", s.proxy.counts(), s.d.log());
    assert_eq!(s.calls_since("CreateRoute", t0) + s.calls_since("DeleteRoute", t0), 0, "{:?}", s.proxy.counts());
    // The fast path wrote before reading: the first call after the health change is a write.
    let first = s.proxy.calls().into_iter().find(|c| c.at >= t0).map(|c| c.action);
    assert_eq!(
        first.as_deref(),
        Some("ReplaceRoute"),
        "{:?}",
        s.proxy.calls().iter().filter(|c| c.at >= t0).map(|c| &c.action).collect::<Vec<_>>()
    );
    // Nothing outside the managed routes changed.
    assert_eq!(s.env.world.routes(&s.env.world.tables[2])?, rt3_before, "an unmanaged table changed");
    let rt1_after = s.env.world.routes(&s.tables[0])?;
    for keep in ["0.0.0.0/0", "127.0.0.0/16"] {
        assert_eq!(rt1_after.get(keep), rt1_before.get(keep), "{keep} changed in rt1");
    }
    // One failover line with its figures, and the histogram.
    let log = s.d.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("failover:")).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("routes_moved=12") && lines[0].contains("throttled=0") && lines[0].contains("writes=12"),
        "{}",
        lines[0]
    );
    assert_eq!(s.metric("vpcrouter_failover_seconds_count"), 1.0, "{}", s.metrics());
    assert!(
        s.metric("vpcrouter_ec2_call_duration_seconds_count{operation=\"ReplaceRoute\"}") >= 12.0,
        "{}",
        s.metrics()
    );
    // No fail-back: A recovers, nothing moves.
    s.proxy.clear();
    let t1 = s.fail(&[]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.calls_since("ReplaceRoute", t1), 0, "{}", s.d.log());
    s.wait_all_on(B, Duration::from_secs(1))?;
    Ok(())
}

#[test]
fn throttled_and_failing_writes_inside_a_wave_are_retried_and_converge() -> anyhow::Result<()> {
    let s = Setup::new(&[])?;
    // The first 3 writes are throttled, the next 2 answer 500: retried by the executor,
    // not by a failed reconcile and its backoff.
    s.proxy.set_policy(vec![
        Rule::all(Fault::Throttle).on(&["ReplaceRoute"]).limit(3),
        Rule::all(Fault::Status(500)).on(&["ReplaceRoute"]).limit(2),
    ]);
    let t0 = s.fail(&[A]);
    let took = s.wait_all_on(B, T)?;
    std::thread::sleep(Duration::from_secs(1));
    let log = s.d.log();
    assert_eq!(s.calls_since("ReplaceRoute", t0), 12 + 5, "{:?}\n{log}", s.proxy.counts());
    assert_eq!(s.calls_since("DeleteRoute", t0), 0);
    assert_eq!(s.metric("vpcrouter_ec2_throttled_total{operation=\"ReplaceRoute\"}"), 3.0, "{}", s.metrics());
    assert_eq!(log.matches("reconcile failed, will retry").count(), 0, "{log}");
    let status = http_client::get(s.d.port, "/status", None)?.json()?;
    assert_eq!(status["last_failover"]["throttled"], 3, "{status}");
    assert!(
        status["ec2"]["write_bucket"]["rate"].as_f64().unwrap_or(5.0) < 5.0,
        "throttling lowered the rate: {status}"
    );
    eprintln!("faults in a wave: converged in {took:?}");
    Ok(())
}

#[test]
fn a_state_changed_behind_vpcrouters_back_still_ends_correct() -> anyhow::Result<()> {
    let s = Setup::new(&[])?;
    let w = &s.env.world;
    // Behind vpcrouter's back, just before the failover: one route deleted in rt1, one
    // pointed at a router that is not a candidate in rt2.
    w.block_on(w.ec2.delete_route().route_table_id(&s.tables[0]).destination_cidr_block(CIDRS[0]).send())?;
    let ip: std::net::Ipv4Addr = OUTSIDER.parse()?;
    let (outsider, _) = w.routers.get(&ip).cloned().ok_or_else(|| anyhow::anyhow!("no outsider"))?;
    w.block_on(
        w.ec2
            .replace_route()
            .route_table_id(&s.tables[1])
            .destination_cidr_block(CIDRS[1])
            .instance_id(outsider)
            .send(),
    )?;
    let t0 = s.fail(&[A]);
    s.wait_all_on(B, T)?;
    std::thread::sleep(Duration::from_secs(1));
    let log = s.d.log();
    assert!(log.contains("changed behind vpcrouter's back"), "the stale state was not noticed:\n{log}");
    assert_eq!(s.calls_since("DeleteRoute", t0), 0, "{log}");
    assert_eq!(log.matches("reconcile failed, will retry").count(), 0, "{log}");
    Ok(())
}
