//! EC2 faults (throttling, 5xx, slow answers, resets, lost answers) stop neither the daemon nor a failover.
//!
//! The faults are injected between the real SDK client and moto by
//! `vpcrouter_tests::faultproxy`. Every scenario checks: the daemon keeps running, the call
//! rate stays bounded while EC2 misbehaves, routes converge once faults stop, no route is ever
//! deleted (the world has only spec routes), and a failed router is replaced as soon as EC2
//! lets it.

use std::time::{Duration, Instant};

use vpcrouter_tests::daemon::Daemon;
use vpcrouter_tests::faultproxy::{Fault, FaultProxy, Policy, Rule};
use vpcrouter_tests::file_driven;
use vpcrouter_tests::{wait_for, Env};

const T: Duration = Duration::from_secs(20);
const CIDR: &str = "10.55.0.0/16";

/// A converged daemon behind a proxy: 10.55.0.0/16 on one of two routers in rt1 and rt2.
struct Setup {
    env: Env,
    proxy: FaultProxy,
    d: Daemon,
    tables: [String; 2],
    /// The router 10.55.0.0/16 points at after start-up.
    first: String,
    /// The other router.
    other: String,
}

impl Setup {
    fn new(start_policy: Policy) -> anyhow::Result<Setup> {
        let env = Env::new()?;
        let proxy = FaultProxy::start(&env.moto.endpoint)?;
        proxy.set_policy(start_policy);
        let health = env.write("health.json", r#"{"failed": []}"#);
        let spec = env.write("spec.json", r#"{"10.55.0.0/16": ["127.0.1.10", "127.0.2.10"]}"#);
        let d = env
            .daemon()
            .endpoint(&proxy.endpoint)
            .args(file_driven(&spec, &health))
            .args(["--route_recheck_interval", "5"])
            .start()?;
        let tables = [env.world.tables[0].clone(), env.world.tables[1].clone()];
        let first = env
            .wait_routed(&[&tables[0], &tables[1]], CIDR, T)
            .map_err(|e| anyhow::anyhow!("{e}\n--- log ---\n{}", d.log()))?;
        let other = if first == "127.0.1.10" { "127.0.2.10" } else { "127.0.1.10" }.to_string();
        Ok(Setup { env, proxy, d, tables, first, other })
    }

    /// Marks the current router failed; returns when that was written.
    fn fail_first(&self) -> Instant {
        self.env.write("health.json", &format!(r#"{{"failed": ["{}"]}}"#, self.first));
        Instant::now()
    }

    fn targets(&self) -> Option<Vec<Option<String>>> {
        self.env.world.targets(&[&self.tables[0], &self.tables[1]], CIDR).ok()
    }

    /// Waits until both tables point at `ip`; returns how long that took.
    fn wait_target(&self, ip: &str, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let want = vec![Some(ip.to_string()); 2];
        wait_for(timeout, &format!("{CIDR} on {ip}"), || (self.targets()? == want).then_some(())).map_err(|e| {
            anyhow::anyhow!(
                "{e}\n{}\ncalls: {:?}\n--- log ---\n{}",
                self.env.world.dump(),
                self.proxy.counts(),
                self.d.log()
            )
        })?;
        Ok(start.elapsed())
    }

    /// Holds until `t0 + window`, checking every 100 ms that the spec route stays present.
    fn hold_until(&self, t0: Instant, window: Duration) -> anyhow::Result<()> {
        while t0.elapsed() < window {
            if let Some(t) = self.targets() {
                anyhow::ensure!(t.iter().all(Option::is_some), "spec route missing: {t:?}\n{}", self.env.world.dump());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// After the faults: the route moves on a spec change, and the invariants hold.
    fn converges_and_invariants_hold(&mut self) -> anyhow::Result<()> {
        self.proxy.clear();
        self.env
            .write("spec.json", r#"{"10.55.0.0/16": ["127.0.1.10", "127.0.2.10"], "10.77.0.0/16": ["127.0.1.11"]}"#);
        let want = vec![Some("127.0.1.11".to_string()); 2];
        wait_for(T, "10.77.0.0/16 routed after the faults", || {
            (self.env.world.targets(&[&self.tables[0], &self.tables[1]], "10.77.0.0/16").ok()? == want).then_some(())
        })
        .map_err(|e| anyhow::anyhow!("{e}\n{}\n--- log ---\n{}", self.env.world.dump(), self.d.log()))?;
        assert_eq!(self.targets(), Some(vec![Some(self.other.clone()); 2]), "{}", self.env.world.dump());
        assert_eq!(self.proxy.count("DeleteRoute"), 0, "a route was deleted:\n{}", self.d.log());
        assert!(self.d.exited().is_none(), "vpcrouter exited:\n{}", self.d.log());
        let log = self.d.log();
        assert!(!log.contains("panicked"), "{log}");
        let status = self.d.stop(Duration::from_secs(10))?;
        assert_eq!(status.code(), Some(0), "{}", self.d.log());
        Ok(())
    }
}

/// Reconcile failures the engine logged (each schedules one backed-off retry).
fn failed_reconciles(log: &str) -> usize {
    log.matches("reconcile failed, will retry").count()
}

#[test]
fn throttling_on_a_third_of_calls_still_fails_over_without_a_retry_storm() -> anyhow::Result<()> {
    let mut s = Setup::new(Vec::new())?;
    s.proxy.set_policy(vec![Rule::all(Fault::Throttle).ratio(0.35)]);
    let t0 = s.fail_first();
    let took = s.wait_target(&s.other.clone(), T)?;
    s.hold_until(t0, Duration::from_secs(12))?;
    let (calls, injected) = s.proxy.since(t0);
    // At least 20 % throttled; a bounded call rate: about 3 reads per 5 s recheck plus the
    // writes, with the SDK's retries (at most 4 attempts each).
    assert!(injected * 5 >= calls, "only {injected} of {calls} calls throttled");
    assert!(calls <= 80, "{calls} calls in 12 s: retry storm?\n{:?}", s.proxy.counts());
    eprintln!("throttling: failover in {took:?}; {calls} calls in 12 s, {injected} throttled");
    s.converges_and_invariants_hold()
}

#[test]
fn server_errors_back_off_and_converge_as_soon_as_they_stop() -> anyhow::Result<()> {
    let mut s = Setup::new(Vec::new())?;
    let reads = ["DescribeVpcs", "DescribeSubnets", "DescribeRouteTables", "DescribeInstances"];
    s.proxy.set_policy(vec![Rule::all(Fault::Status(500)).on(&reads[..2]), Rule::all(Fault::Status(503))]);
    let before = failed_reconciles(&s.d.log());
    let t0 = s.fail_first();
    s.hold_until(t0, Duration::from_secs(12))?;
    // EC2 answered nothing useful: the route stays, and vpcrouter backed off.
    assert_eq!(s.targets(), Some(vec![Some(s.first.clone()); 2]));
    let (calls, _) = s.proxy.since(t0);
    let failures = failed_reconciles(&s.d.log()) - before;
    assert!(failures >= 2, "no reconcile failed?\n{}", s.d.log());
    // Each reconcile tries 4 reads up to 4 times with SDK backoff (0.5 s doubling), then
    // the engine waits 1 s, 2 s, 4 s... (jittered, never past the 5 s recheck).
    assert!(failures <= 8, "{failures} failed reconciles in 12 s: no backoff?\n{}", s.d.log());
    assert!(calls <= 130, "{calls} calls in 12 s: retry storm?\n{:?}", s.proxy.counts());
    s.proxy.clear();
    let took = s.wait_target(&s.other.clone(), T)?;
    // The next retry or recheck is at most 5 s away, plus one reconcile.
    assert!(took <= Duration::from_secs(9), "failover took {took:?} after EC2 recovered");
    eprintln!("5xx: {calls} calls and {failures} failed reconciles in 12 s; failover {took:?} after recovery");
    s.converges_and_invariants_hold()
}

#[test]
fn slow_answers_beyond_the_attempt_timeout_are_retried() -> anyhow::Result<()> {
    let mut s = Setup::new(Vec::new())?;
    // One ReplaceRoute answer takes longer than the SDK's 10 s attempt timeout.
    s.proxy.set_policy(vec![Rule::all(Fault::Slow(Duration::from_secs(12))).on(&["ReplaceRoute"]).limit(1)]);
    let t0 = s.fail_first();
    let took = s.wait_target(&s.other.clone(), Duration::from_secs(30))?;
    let replaces = s.proxy.count("ReplaceRoute");
    assert!(took >= Duration::from_secs(9), "failover in {took:?}: was the slow answer waited for?");
    assert!((3..=6).contains(&replaces), "{replaces} ReplaceRoute calls\n{}", s.d.log());
    eprintln!("slow: failover in {:?} with one 12 s answer, {replaces} ReplaceRoute calls", t0.elapsed());
    s.converges_and_invariants_hold()
}

#[test]
fn connection_resets_on_two_fifths_of_calls_still_fail_over() -> anyhow::Result<()> {
    let mut s = Setup::new(Vec::new())?;
    s.proxy.set_policy(vec![Rule::all(Fault::Reset).ratio(0.4)]);
    let conns = s.proxy.connections();
    let t0 = s.fail_first();
    let took = s.wait_target(&s.other.clone(), T)?;
    s.hold_until(t0, Duration::from_secs(12))?;
    let (calls, injected) = s.proxy.since(t0);
    assert!(injected * 5 >= calls, "only {injected} of {calls} calls reset");
    assert!(calls <= 80, "{calls} calls in 12 s: retry storm?\n{:?}", s.proxy.counts());
    // A reset costs one reconnection, not a connection per call.
    let new_conns = s.proxy.connections() - conns;
    assert!(new_conns <= injected + 4, "{new_conns} new connections for {injected} resets");
    eprintln!("resets: failover in {took:?}; {calls} calls in 12 s, {injected} reset, {new_conns} connections");
    s.converges_and_invariants_hold()
}

#[test]
fn answers_lost_after_create_and_replace_succeeded_converge() -> anyhow::Result<()> {
    // From the start: the first CreateRoute and the first ReplaceRoute are applied by EC2,
    // but their answers never arrive.
    let mut s = Setup::new(vec![
        Rule::all(Fault::LoseAnswer).on(&["CreateRoute"]).limit(1),
        Rule::all(Fault::LoseAnswer).on(&["ReplaceRoute"]).limit(1),
    ])?;
    let t0 = s.fail_first();
    let took = s.wait_target(&s.other.clone(), T)?;
    let creates = s.proxy.count("CreateRoute");
    let replaces = s.proxy.count("ReplaceRoute");
    // Two tables, plus at most one retry for each lost answer; never a loop of retries.
    assert!((2..=3).contains(&creates), "{creates} CreateRoute calls\n{}", s.d.log());
    assert!((2..=3).contains(&replaces), "{replaces} ReplaceRoute calls\n{}", s.d.log());
    eprintln!(
        "lost answers: failover in {took:?} ({:?} since the health change); {creates} creates, {replaces} replaces",
        t0.elapsed()
    );
    s.converges_and_invariants_hold()
}
