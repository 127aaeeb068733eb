//! HA NAT per availability zone, run as the README's NAT recipe says (tagged private tables,
//! `--route-table-tag vpcrouter:managed=true --zone-affinity --failback preferred`): each
//! zone's private table sends `0.0.0.0/0` to its own zone's NAT, the public tables keep their
//! internet gateway route, a dead NAT's zone moves to another zone's NAT without the other
//! zone's table being written, and the zone returns to its own NAT once it has been healthy
//! for the hold-down. The NATs are real TCP listeners on loopback, checked by the `tcp`
//! health plugin.

use std::time::{Duration, Instant};

use serde_json::Value;
use vpcrouter_tests::daemon::Daemon;
use vpcrouter_tests::faultproxy::FaultProxy;
use vpcrouter_tests::http_client::get;
use vpcrouter_tests::listener::Listener;
use vpcrouter_tests::moto::Moto;
use vpcrouter_tests::natworld::{self, NatWorld};
use vpcrouter_tests::{wait_for, world};

const T: Duration = Duration::from_secs(20);
const DEFAULT: &str = "0.0.0.0/0";
const HOLD_DOWN: Duration = Duration::from_secs(2);
/// The recipe's options (README and the packaged defaults), as the test passes them.
const RECIPE: [&str; 5] = ["--route-table-tag", "vpcrouter:managed=true", "--zone-affinity", "--failback", "preferred"];

struct Setup {
    rt: tokio::runtime::Runtime,
    ec2: aws_sdk_ec2::Client,
    nat: NatWorld,
    _dir: tempfile::TempDir,
    moto: Moto,
}

impl Setup {
    /// Two zones with one private table each; zone b's NAT keeps its source/destination
    /// check on (a misconfiguration vpcrouter warns about).
    fn build() -> anyhow::Result<Setup> {
        let moto = Moto::start()?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let ec2 = rt.block_on(world::client(&moto.endpoint));
        let nat = rt.block_on(natworld::build(&ec2, 2, 1, &[1]))?;
        Ok(Setup { rt, ec2, nat, _dir: tempfile::tempdir()?, moto })
    }

    /// Where `DEFAULT` points in each zone's private table, zone a first.
    fn private(&self) -> Vec<Option<String>> {
        let tables: Vec<String> = self.nat.zones.iter().map(|z| z.private_tables[0].clone()).collect();
        self.rt.block_on(natworld::targets(&self.ec2, &self.nat, &tables, DEFAULT)).unwrap_or_default()
    }

    fn public(&self) -> Vec<Option<String>> {
        let tables: Vec<String> = self.nat.zones.iter().map(|z| z.public_table.clone()).collect();
        self.rt.block_on(natworld::targets(&self.ec2, &self.nat, &tables, DEFAULT)).unwrap_or_default()
    }

    fn nat_ip(&self, zone: usize) -> String {
        self.nat.zones[zone].nat.ip.to_string()
    }

    fn wait_private(&self, want: [usize; 2], what: &str, d: &Daemon) -> anyhow::Result<()> {
        let want: Vec<Option<String>> = want.iter().map(|&z| Some(self.nat_ip(z))).collect();
        wait_for(T, what, || (self.private() == want).then_some(()))
            .map_err(|e| anyhow::anyhow!("{e}: {:?}\n{}", self.private(), d.log()))
    }
}

/// The route-change lines of the log that write `rtb`.
fn writes_to(d: &Daemon, rtb: &str) -> usize {
    d.log().lines().filter(|l| l.contains("route changed") && l.contains(rtb)).count()
}

fn status(d: &Daemon) -> anyhow::Result<Value> {
    get(d.port, "/status", None)?.json()
}

#[test]
fn each_zone_uses_its_own_nat_and_a_dead_nat_moves_only_its_zone() -> anyhow::Result<()> {
    let s = Setup::build()?;
    let (a, port) = Listener::bind(&s.nat_ip(0), 0)?;
    let (_b, _) = Listener::bind(&s.nat_ip(1), port)?;
    let spec = s._dir.path().join("spec.json");
    std::fs::write(&spec, s.nat.spec(&[DEFAULT]))?;
    let port = port.to_string();
    #[rustfmt::skip]
    let args = [
        "-r", world::REGION, "-v", &s.nat.vpc_id,
        "-m", "configfile", "-f", spec.to_str().unwrap_or_default(),
        "-H", "tcp", "--tcp_check_port", &port, "--tcp_check_interval", "0.2",
        RECIPE[0], RECIPE[1], RECIPE[2], RECIPE[3], RECIPE[4], "--failback-after", "2",
    ];
    let proxy = FaultProxy::start(&s.moto.endpoint)?;
    let d = Daemon::start_via(&s.moto, &proxy.endpoint, &args)?;
    s.wait_private([0, 1], "each private table on its own zone's NAT", &d)?;
    let igw = Some(s.nat.igw.clone());
    assert_eq!(s.public(), vec![igw.clone(), igw.clone()], "the public tables keep their gateway route");
    let (private_a, private_b) = (s.nat.zones[0].private_tables[0].clone(), s.nat.zones[1].private_tables[0].clone());
    d.wait_log("managed route tables", T)?;
    let log = d.log();
    let managed = log.lines().find(|l| l.contains("managed route tables")).unwrap_or_default();
    assert!(managed.contains(&format!("{private_a} (zone us-east-1a)")), "{managed}");
    assert!(managed.contains(&format!("{private_b} (zone us-east-1b)")), "{managed}");
    for z in &s.nat.zones {
        assert!(!managed.contains(&z.public_table), "public tables are not managed: {managed}");
        assert_eq!(writes_to(&d, &z.public_table), 0, "{log}");
    }
    assert!(
        log.contains(&format!("router {} has source/destination checking on", s.nat_ip(1))),
        "zone b's NAT drops forwarded traffic: {log}"
    );
    assert!(!log.contains(&format!("router {} has source/destination checking on", s.nat_ip(0))), "{log}");
    let st = status(&d)?;
    let sel = &st["route_table_selection"];
    assert_eq!((sel["rule"].as_str(), sel["zone_affinity"].as_bool()), (Some("tags"), Some(true)), "{st}");
    assert_eq!(sel["given"], "--route-table-tag vpcrouter:managed=true", "{st}");
    let tables = sel["tables"].as_array().cloned().unwrap_or_default();
    let zone_of = |rtb: &str| tables.iter().find(|t| t["id"] == rtb).map(|t| t["zone"].clone());
    assert_eq!(zone_of(&private_a), Some(Value::from("us-east-1a")), "{st}");
    assert_eq!(zone_of(&private_b), Some(Value::from("us-east-1b")), "{st}");
    assert_eq!(tables.len(), 2, "{st}");
    assert_eq!(writes_to(&d, &private_b), 1, "zone b's table written once, at start");

    // Zone a's NAT dies: its table moves to zone b's NAT, first thing, from what vpcrouter
    // knows (the fast path: a write before any read); zone b's table is not written.
    let died = Instant::now();
    drop(a);
    s.wait_private([1, 1], "zone a's table on zone b's NAT", &d)?;
    d.wait_log("failover:", T)?;
    let first = proxy.calls().into_iter().find(|c| c.at >= died).map(|c| c.action);
    assert_eq!(first.as_deref(), Some("ReplaceRoute"), "{:?}", proxy.counts());
    assert_eq!(writes_to(&d, &private_b), 1, "zone b's table is not written:\n{}", d.log());
    assert_eq!(s.public(), vec![igw.clone(), igw], "the public tables still keep their gateway route");
    let st = status(&d)?;
    assert_eq!(st["failback"]["cidrs"][DEFAULT]["state"], "preferred_unavailable", "zone a's tables: {st}");
    assert_eq!(st["failback"]["zones"][DEFAULT]["us-east-1b"]["state"], "on_preferred", "zone b's: {st}");

    // Back: zone a returns to its own NAT once it has been healthy for the hold-down.
    let (_a, _) = Listener::bind(&s.nat_ip(0), port.parse()?)?;
    let healed = Instant::now();
    s.wait_private([0, 1], "zone a back on its own NAT", &d)?;
    assert!(healed.elapsed() >= HOLD_DOWN, "moved back after {:?}", healed.elapsed());
    let back: Vec<String> =
        d.log().lines().filter(|l| l.contains("reason=failback to preferred router")).map(String::from).collect();
    assert_eq!(back.len(), 1, "one failback, zone a's table: {back:?}");
    assert!(back[0].contains(private_a.as_str()) && back[0].contains(&format!("router={}", s.nat_ip(0))));
    assert_eq!(writes_to(&d, &private_b), 1, "{}", d.log());
    Ok(())
}

#[test]
fn the_readme_and_the_packaged_defaults_give_the_recipe_these_options() -> anyhow::Result<()> {
    let recipe = RECIPE.join(" ");
    for file in ["README.md", "packaging/vpcrouter.default"] {
        let text = std::fs::read_to_string(vpcrouter_tests::repo_root().join(file))?;
        assert!(text.contains(&recipe), "{file} does not give the NAT recipe as '{recipe}'");
    }
    Ok(())
}
