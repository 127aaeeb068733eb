//! With `--failback preferred` a route returns to its preferred router once stable for the hold-down; by default never.
//!
//! The real binary and plugins, moto as EC2, the `file` health plugin to fail and heal
//! routers. The preferred router is the first of the CIDR's list as written (here not the
//! lowest address, so the written order is what counts); `--failback-after 2` keeps the
//! tests short.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vpcrouter_tests::daemon::{run_once, Daemon};
use vpcrouter_tests::http_client::get;
use vpcrouter_tests::{file_driven, wait_for, Env};

const T: Duration = Duration::from_secs(20);
const CIDR: &str = "10.55.0.0/16";
/// Written first: the preferred router.
const PREFERRED: &str = "127.0.2.10";
const OTHER: &str = "127.0.1.10";
/// A router of another CIDR, whose health changes wake a reconcile.
const BYSTANDER: &str = "127.0.1.11";
const SPEC: &str = r#"{"10.55.0.0/16": ["127.0.2.10", "127.0.1.10"], "10.66.0.0/24": ["127.0.1.11"]}"#;
const HOLD_DOWN: Duration = Duration::from_secs(2);
const FAILBACK_LINE: &str = "reason=failback to preferred router";

struct Setup {
    env: Env,
    d: Daemon,
    tables: [String; 2],
}

impl Setup {
    fn start(extra: &[&str]) -> anyhow::Result<Setup> {
        let env = Env::new()?;
        let spec = env.write("spec.json", SPEC);
        let health = env.write("health.json", r#"{"failed": []}"#);
        let mut args: Vec<&str> = file_driven(&spec, &health).to_vec();
        args.extend(["--health_file_interval", "0.2"]);
        args.extend_from_slice(extra);
        let d = env.daemon().args(&args).start()?;
        let tables = [env.world.tables[0].clone(), env.world.tables[1].clone()];
        Ok(Setup { env, d, tables })
    }

    fn tables(&self) -> [&str; 2] {
        [&self.tables[0], &self.tables[1]]
    }

    /// The router of `CIDR` in both tables, when they agree.
    fn router(&self) -> Option<String> {
        let targets = self.env.world.targets(&self.tables(), CIDR).ok()?;
        let first = targets.first()?.clone()?;
        targets.iter().all(|t| t.as_deref() == Some(first.as_str())).then_some(first)
    }

    fn wait_router(&self, router: &str, what: &str) -> anyhow::Result<()> {
        wait_for(T, what, || (self.router().as_deref() == Some(router)).then_some(()))
            .map_err(|e| anyhow::anyhow!("{e}\n{}\n{}", self.env.world.dump(), self.d.log()))
    }

    /// Writes the health file and waits until the engine has heard the change.
    fn health(&self, failed: &[&str], questionable: &[&str]) -> anyhow::Result<()> {
        let seen = self.d.log().matches("health changed").count();
        self.env.write("health.json", &json!({"failed": failed, "questionable": questionable}).to_string());
        wait_for(T, "the health change to reach the engine", || {
            (self.d.log().matches("health changed").count() > seen).then_some(())
        })
        .map_err(|e| anyhow::anyhow!("{e}\n{}", self.d.log()))
    }

    fn status(&self) -> anyhow::Result<Value> {
        let r = get(self.d.port, "/status", None)?;
        anyhow::ensure!(r.status == 200, "/status answered {}: {}", r.status, r.body);
        r.json()
    }

    /// Waits until `/status` shows `CIDR` in failback state `state`.
    fn wait_state(&self, state: &str) -> anyhow::Result<Value> {
        wait_for(T, &format!("/status to show {CIDR} {state}"), || {
            let st = self.status().ok()?;
            (st["failback"]["cidrs"][CIDR]["state"] == state).then_some(st)
        })
        .map_err(|e| anyhow::anyhow!("{e}\n{}", self.d.log()))
    }

    fn failback_lines(&self) -> usize {
        self.d.log().matches(FAILBACK_LINE).count()
    }

    /// Another tool points `CIDR` at `router` in both tables.
    fn move_elsewhere(&self, router: &str) -> anyhow::Result<()> {
        let (instance, _) = self.env.world.routers.get(&router.parse()?).ok_or_else(|| anyhow::anyhow!("no router"))?;
        for rtb in self.tables() {
            let call = self
                .env
                .world
                .ec2
                .replace_route()
                .route_table_id(rtb)
                .destination_cidr_block(CIDR)
                .instance_id(instance);
            self.env.world.block_on(call.send())?;
        }
        Ok(())
    }
}

#[test]
fn the_route_returns_to_the_preferred_router_after_the_hold_down_at_most_once_per_hold_down() -> anyhow::Result<()> {
    // Below, another tool moves the route back right after vpcrouter's failback: within the
    // consistency window that read would be taken for one lagging behind the failback
    // (tests/tests/failover_holds_when_facts_change_under_it.rs); this test is about the
    // hold-down, so reads are believed.
    let s = Setup::start(&["--failback", "preferred", "--failback-after", "2", "--consistency-window", "0"])?;
    // Placed on the preferred router (the first written, not the lowest address).
    s.wait_router(PREFERRED, "the route on the preferred router")?;
    let st = s.wait_state("on_preferred")?;
    assert_eq!(st["failback"]["policy"], "preferred", "{st}");
    assert_eq!(st["failback"]["after_seconds"], 2, "{st}");
    assert_eq!(st["failback"]["cidrs"][CIDR]["preferred_router"], PREFERRED, "{st}");
    assert_eq!(st["route_spec"][CIDR], json!([PREFERRED, OTHER]), "the spec keeps the written order: {st}");

    s.health(&[PREFERRED], &[])?;
    s.wait_router(OTHER, "the failover")?;
    s.wait_state("preferred_unavailable")?;

    // Healed: the route waits out the hold-down, then moves back, with the reason logged.
    let healed = Instant::now();
    s.health(&[], &[])?;
    let st = s.wait_state("waiting")?;
    assert!(st["failback"]["cidrs"][CIDR]["possible_at"].as_str().is_some(), "{st}");
    assert_eq!(s.router().as_deref(), Some(OTHER), "not before the hold-down ends");
    s.wait_router(PREFERRED, "the failback")?;
    assert!(healed.elapsed() >= HOLD_DOWN, "moved back {:?} after the heal", healed.elapsed());
    assert_eq!(s.failback_lines(), 2, "one line per table:\n{}", s.d.log());
    let line = s.d.log().lines().find(|l| l.contains(FAILBACK_LINE)).unwrap_or_default().to_string();
    assert!(line.contains(&format!("router={PREFERRED}")) && line.contains(&format!("old_router={OTHER}")), "{line}");
    let st = wait_for(T, "/status to count the failback", || {
        let st = s.status().ok()?;
        (st["counters"]["routes_failed_back"] == 2).then_some(st)
    })?;
    assert_eq!(st["failback"]["cidrs"][CIDR]["state"], "failing_back", "{st}");

    // Another tool moves the route away at once, without the preferred router failing: the
    // next reconcile (woken by a health change elsewhere) leaves it there until the hold-down
    // since the last failback ends, then moves it back once more.
    let failed_back = Instant::now();
    s.move_elsewhere(OTHER)?;
    s.health(&[], &[BYSTANDER])?;
    s.wait_state("waiting")?;
    assert_eq!(s.router().as_deref(), Some(OTHER), "held down:\n{}", s.d.log());
    s.wait_router(PREFERRED, "the second failback")?;
    assert!(failed_back.elapsed() >= HOLD_DOWN / 2, "{:?}", failed_back.elapsed());
    assert_eq!(s.failback_lines(), 4, "{}", s.d.log());
    Ok(())
}

#[test]
fn a_flapping_preferred_router_gets_the_route_back_only_once_it_is_stable() -> anyhow::Result<()> {
    let s = Setup::start(&["--failback", "preferred", "--failback-after", "2"])?;
    s.wait_router(PREFERRED, "the route on the preferred router")?;
    s.health(&[PREFERRED], &[])?;
    s.wait_router(OTHER, "the failover")?;

    // Flapping: healthy for about 1 s, failed for about 0.3 s, five times. Each change
    // reaches the engine (the test waits for it); the route never moves back meanwhile.
    for flap in 0..5 {
        s.health(&[], &[])?;
        std::thread::sleep(Duration::from_millis(900));
        assert_eq!(s.router().as_deref(), Some(OTHER), "flap {flap}:\n{}", s.d.log());
        s.health(&[PREFERRED], &[])?;
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(s.router().as_deref(), Some(OTHER), "flap {flap}:\n{}", s.d.log());
    }
    assert_eq!(s.failback_lines(), 0, "{}", s.d.log());

    // Stable: back once the hold-down has passed, once.
    let healed = Instant::now();
    s.health(&[], &[])?;
    s.wait_router(PREFERRED, "the failback once stable")?;
    assert!(healed.elapsed() >= HOLD_DOWN, "moved back {:?} after the last heal", healed.elapsed());
    std::thread::sleep(HOLD_DOWN + Duration::from_millis(500));
    assert_eq!(s.router().as_deref(), Some(PREFERRED));
    assert_eq!(s.failback_lines(), 2, "one failback (a line per table):\n{}", s.d.log());
    Ok(())
}

#[test]
fn by_default_routes_never_move_back() -> anyhow::Result<()> {
    let s = Setup::start(&[])?;
    let first = wait_for(T, "the route", || s.router()).map_err(|e| anyhow::anyhow!("{e}\n{}", s.d.log()))?;
    let other = if first == PREFERRED { OTHER } else { PREFERRED };
    s.health(&[&first], &[])?;
    s.wait_router(other, "the failover")?;
    s.health(&[], &[])?;
    std::thread::sleep(HOLD_DOWN + Duration::from_secs(1));
    assert_eq!(s.router().as_deref(), Some(other), "{}", s.d.log());
    let st = s.status()?;
    assert_eq!(st["failback"], json!({"policy": "never", "after_seconds": null, "cidrs": {}, "zones": {}}), "{st}");
    assert_eq!(s.failback_lines(), 0);
    Ok(())
}

#[test]
fn failback_options_are_checked() {
    let base = ["-m", "fixedconf", "--fixed_cidr", "10.0.0.0/8", "--fixed_hosts", "10.0.0.1", "-H", "always"];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        run_once(&args)
    };
    let cases: &[(&[&str], &str)] = &[
        (&["--failback-after", "60"], "--failback-after only applies with --failback preferred"),
        (&["--failback", "never", "--failback-after", "60"], "--failback-after only applies with --failback preferred"),
        (&["--failback", "sometimes"], "sometimes"),
        (&["--failback", "preferred", "--failback-after", "0"], "--failback-after"),
    ];
    for (extra, needle) in cases {
        let (code, _, err) = run(extra);
        assert_eq!(code, 2, "{extra:?}: {err}");
        assert!(err.contains(needle), "{extra:?}: expected '{needle}' in: {err}");
    }
    let (code, out, _) = run_once(&["-m", "configfile", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--failback <POLICY>") && out.contains("--failback-after <SECONDS>"), "{out}");
}

#[test]
fn a_drained_preferred_router_gets_no_failback_and_its_wait_starts_at_the_undrain() -> anyhow::Result<()> {
    let s = Setup::start(&["--failback", "preferred", "--failback-after", "2"])?;
    s.wait_router(PREFERRED, "the route on the preferred router")?;
    let drain = |method: &str| -> anyhow::Result<()> {
        let r = vpcrouter_tests::http_client::request(s.d.port, method, &format!("/drain/{PREFERRED}"), &[], b"")?;
        anyhow::ensure!(r.status == 200, "{method} /drain answered {}: {}", r.status, r.body);
        Ok(())
    };
    drain("POST")?;
    s.wait_router(OTHER, "the drain move")?;
    // Healthy all along, and longer than the hold-down: drained, it gets nothing back.
    std::thread::sleep(HOLD_DOWN + Duration::from_millis(500));
    let st = s.wait_state("preferred_unavailable")?;
    assert_eq!(s.router().as_deref(), Some(OTHER), "{st}\n{}", s.d.log());
    assert_eq!(s.failback_lines(), 0, "{}", s.d.log());

    // Undrained: the hold-down starts now, not at the last health change.
    let undrained = Instant::now();
    drain("DELETE")?;
    s.wait_state("waiting")?;
    assert_eq!(s.router().as_deref(), Some(OTHER), "not at once after the undrain");
    s.wait_router(PREFERRED, "the failback after the undrain")?;
    assert!(undrained.elapsed() >= HOLD_DOWN, "moved back {:?} after the undrain", undrained.elapsed());
    Ok(())
}
