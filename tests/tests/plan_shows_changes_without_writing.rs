//! `vpcrouter plan` shows what a daemon would change in the VPC with a spec, and writes nothing.
//!
//! The binary runs as a subprocess against moto through the counting proxy with EC2's
//! model of latency and throttling in front (`FaultProxy::start_model`): every call it makes
//! is seen there, and not one may be a write (CreateRoute, ReplaceRoute, DeleteRoute, a
//! prefix-list change: every mutating action counts). The routes the tests set up themselves
//! go to moto directly.
//!
//! The world (see `world.rs`): the spec's routers A (127.0.1.10, subnet s1, table rt1) and
//! B (127.0.2.10, s2, rt2), so a daemon manages rt1 and rt2.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use vpcrouter_tests::ec2model::{classify, Class, Model};
use vpcrouter_tests::faultproxy::FaultProxy;
use vpcrouter_tests::{daemon, wait_for, world, Env};

const A: &str = "127.0.1.10";
const B: &str = "127.0.2.10";
const CIDR: &str = "10.55.0.0/16";
/// A plan reads the VPC once: it ends well within this.
const RUN: Duration = Duration::from_secs(60);

/// How one `vpcrouter plan` ended.
struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

struct Setup {
    env: Env,
    proxy: FaultProxy,
}

impl Setup {
    fn new() -> anyhow::Result<Setup> {
        let env = Env::new()?;
        let proxy = FaultProxy::start_model(&env.moto.endpoint, Model::documented())?;
        Ok(Setup { env, proxy })
    }

    /// Writes `text` as a spec file; returns its path.
    fn spec(&self, name: &str, text: &str) -> String {
        self.env.write(name, text).to_string_lossy().into_owned()
    }

    /// Runs `vpcrouter plan -r REGION -v VPC ARGS` through the proxy, to its end.
    fn plan(&self, args: &[&str]) -> Outcome {
        self.plan_in(&self.env.world.vpc_id, args)
    }

    /// [`Setup::plan`] for the VPC `vpc`.
    fn plan_in(&self, vpc: &str, args: &[&str]) -> Outcome {
        let dir = tempfile::tempdir().expect("scratch dir");
        let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let mut child = Command::new(daemon::binary())
            .args(["plan", "-r", world::REGION, "-v", vpc])
            .args(args)
            .envs(self.env.moto.env())
            .env("AWS_ENDPOINT_URL", &self.proxy.endpoint)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&err).expect("stderr file"))
            .spawn()
            .expect("cannot run vpcrouter");
        let status = wait_for(RUN, "vpcrouter plan to end", || child.try_wait().ok().flatten()).unwrap_or_else(|e| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vpcrouter plan {args:?}: {e}")
        });
        let read = |p| std::fs::read_to_string(p).unwrap_or_default();
        Outcome { code: status.code().unwrap_or(-1), stdout: read(&out), stderr: read(&err) }
    }

    /// Every mutating call the proxy saw.
    fn writes(&self) -> Vec<String> {
        self.proxy.calls().into_iter().filter(|c| classify(&c.action) == Class::Write).map(|c| c.action).collect()
    }

    /// Asserts the proxy saw reads (the plan went through it) and not one write.
    fn assert_read_only(&self) {
        assert!(
            self.proxy.count("DescribeRouteTables") > 0,
            "no read went through the proxy: {:?}",
            self.proxy.counts()
        );
        assert_eq!(self.writes(), Vec::<String>::new(), "plan wrote to EC2: {:?}", self.proxy.counts());
    }

    fn tables(&self) -> [&str; 2] {
        [self.env.world.tables[0].as_str(), self.env.world.tables[1].as_str()]
    }

    /// Routes `CIDR` to A in rt1 and rt2, as a daemon would have (straight to moto).
    fn route_on_a(&self) -> anyhow::Result<()> {
        for t in self.tables() {
            self.env.world.add_instance_route(t, CIDR, A)?;
        }
        Ok(())
    }
}

/// The change rows of `out` about `table`: `  rtb-...  action  before -> after  reason`.
fn row<'a>(out: &'a str, table: &str) -> Vec<&'a str> {
    let is_change = |l: &str| {
        let words: Vec<&str> = l.split_whitespace().collect();
        words.len() > 1 && words[0] == table && ["create", "replace", "delete"].contains(&words[1])
    };
    out.lines().filter(|l| is_change(l)).collect()
}

#[test]
fn a_new_cidr_is_planned_in_every_table_on_one_router_and_nothing_is_written() -> anyhow::Result<()> {
    let s = Setup::new()?;
    let spec = s.spec("spec.json", &format!(r#"{{"{CIDR}": ["{A}", "{B}"]}}"#));
    let before = s.env.world.dump();
    let o = s.plan(&["-f", &spec]);
    eprintln!("{}", o.stdout);
    assert_eq!(o.code, 2, "changes exit 2\n{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains(&format!("\n{CIDR}\n")), "{}", o.stdout);
    for t in s.tables() {
        let rows = row(&o.stdout, t);
        assert_eq!(rows.len(), 1, "{t}: {}", o.stdout);
        let words: Vec<&str> = rows[0].split_whitespace().collect();
        assert_eq!(words[..5], [t, "create", "(none)", "->", A], "{}", o.stdout);
        assert!(rows[0].ends_with("route missing"), "{}", o.stdout);
    }
    assert!(o.stdout.contains("a daemon picks one at random"), "A and B are both healthy\n{}", o.stdout);
    assert!(o.stdout.ends_with("2 changes: 2 create, 0 replace, 0 delete; nothing was written.\n"), "{}", o.stdout);
    assert!(o.stdout.lines().all(|l| l.chars().count() <= 100), "wider than 100 columns:\n{}", o.stdout);
    assert!(o.stderr.is_empty(), "{}", o.stderr);

    let o = s.plan(&["-f", &spec, "--json"]);
    assert_eq!(o.code, 2, "{}{}", o.stdout, o.stderr);
    let doc: serde_json::Value = serde_json::from_str(&o.stdout)?;
    assert_eq!(doc["vpc_id"], s.env.world.vpc_id.as_str());
    assert_eq!(doc["region"], world::REGION);
    assert_eq!(doc["changes_count"], 2);
    let ids: BTreeSet<&str> =
        doc["route_tables"].as_array().into_iter().flatten().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, s.tables().into_iter().collect());
    let changes = doc["changes"].as_array().cloned().unwrap_or_default();
    let changed: BTreeSet<&str> = changes.iter().filter_map(|c| c["route_table"].as_str()).collect();
    assert_eq!(changed, ids, "{doc:#}");
    for c in &changes {
        assert_eq!((c["cidr"].as_str(), c["action"].as_str()), (Some(CIDR), Some("create")), "{doc:#}");
        assert_eq!((c["router_before"].is_null(), c["router_after"].as_str()), (true, Some(A)), "{doc:#}");
        assert_eq!((c["reason"].as_str(), c["may_differ"].as_bool()), (Some("route missing"), Some(true)), "{doc:#}");
    }

    s.assert_read_only();
    assert_eq!(s.env.world.dump(), before, "the route tables changed");
    Ok(())
}

#[test]
fn a_matching_vpc_plans_nothing_and_failed_routers_move_their_routes() -> anyhow::Result<()> {
    let s = Setup::new()?;
    let spec = s.spec("spec.json", &format!(r#"{{"{CIDR}": ["{A}", "{B}"]}}"#));
    s.route_on_a()?;
    let o = s.plan(&["-f", &spec]);
    assert_eq!(o.code, 0, "the VPC matches: exit 0\n{}{}", o.stdout, o.stderr);
    assert!(o.stdout.to_lowercase().contains("no changes"), "{}", o.stdout);

    let o = s.plan(&["-f", &spec, "--failed", A]);
    eprintln!("{}", o.stdout);
    assert_eq!(o.code, 2, "{}{}", o.stdout, o.stderr);
    for t in s.tables() {
        let rows = row(&o.stdout, t);
        assert_eq!(rows.len(), 1, "{t}: {}", o.stdout);
        let words: Vec<&str> = rows[0].split_whitespace().collect();
        assert_eq!(words, [t, "replace", A, "->", B, "router", "failed"], "{}", o.stdout);
    }
    assert!(o.stdout.contains(&format!("\nPlanned as failed (--failed): {A}\n")), "{}", o.stdout);
    assert!(!o.stdout.contains("at random"), "B is the only candidate left\n{}", o.stdout);
    assert!(o.stdout.ends_with("2 changes: 0 create, 2 replace, 0 delete; nothing was written.\n"), "{}", o.stdout);

    let o = s.plan(&["-f", &spec, "--failed", A, "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&o.stdout)?;
    let moves: Vec<(&str, &str, &str)> = doc["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c["action"].as_str()?, c["router_before"].as_str()?, c["router_after"].as_str()?)))
        .collect();
    assert_eq!(moves, [("replace", A, B), ("replace", A, B)], "{doc:#}");

    s.assert_read_only();
    assert_eq!(s.env.world.targets(&s.tables(), CIDR)?, [Some(A.to_string()), Some(A.to_string())]);
    Ok(())
}

#[test]
fn bad_specs_and_missing_vpcs_are_refused_in_one_line_with_status_1() -> anyhow::Result<()> {
    let s = Setup::new()?;
    for (name, text, said) in [
        ("host-bits.json", format!(r#"{{"10.55.0.1/16": ["{A}"]}}"#), "'10.55.0.1/16' is not a valid route CIDR"),
        ("not-a-cidr.json", format!(r#"{{"router": ["{A}"]}}"#), "'router' is not a valid route CIDR"),
        ("bad-router.json", format!(r#"{{"{CIDR}": ["127.0.1"]}}"#), "'127.0.1' (a router of '10.55.0.0/16')"),
        ("empty.json", "{}".to_string(), "the route spec is empty"),
    ] {
        let spec = s.spec(name, &text);
        let o = s.plan(&["-f", &spec]);
        assert_eq!(o.code, 1, "{name}: {}{}", o.stdout, o.stderr);
        assert_eq!(o.stderr.lines().count(), 1, "{name}: one line\n{}", o.stderr);
        assert!(o.stderr.contains(&spec) && o.stderr.contains(said), "{name}: {}", o.stderr);
        assert!(o.stdout.is_empty(), "{name}: {}", o.stdout);
    }
    assert!(s.proxy.calls().is_empty(), "a bad spec is refused before EC2 is called: {:?}", s.proxy.counts());

    let spec = s.spec("spec.json", &format!(r#"{{"{CIDR}": ["{A}", "{B}"]}}"#));
    let o = s.plan_in("vpc-0123456789abcdef0", &["-f", &spec]);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
    assert!(o.stderr.contains("VPC 'vpc-0123456789abcdef0' not found in region 'us-east-1'"), "{}", o.stderr);
    assert!(o.stderr.contains("check -v/--vpc and -r/--region"), "{}", o.stderr);

    let o = s.plan(&["-f", &spec, "--failed", "127.0.1"]);
    assert_eq!(o.code, 1, "a usage error is 1 (2 means changes): {}", o.stderr);

    s.assert_read_only();
    Ok(())
}
