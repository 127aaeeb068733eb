//! vpcrouter manages exactly the selected route tables, each with the right router (its zone's NAT, an appliance).
//!
//! End to end against moto:
//!
//! * HA NAT per availability zone, run as the README's NAT recipe says (tagged private tables,
//!   `--route-table-tag vpcrouter:managed=true --zone-affinity --failback preferred`): each
//!   zone's private table sends `0.0.0.0/0` to its own zone's NAT, the public tables keep their
//!   internet gateway route, a dead NAT's zone moves to another zone's NAT (first thing, before
//!   any read) without the other zone's table being written, and the zone returns to its own
//!   NAT once it has been healthy for the hold-down. The NATs are real TCP listeners on
//!   loopback, checked by the `tcp` health plugin.
//! * `--route-table-tag`: untagged tables are left entirely alone, a table tagged while
//!   running is picked up and one untagged is released.
//! * `--route-tables` with a gateway route table: a subnet's CIDR routed to an appliance and
//!   failed over; a CIDR it cannot hold gets no call there; the gateway association stays.
//! * Bad selections: one line, or a warning where tables may be tagged later.

use std::time::{Duration, Instant};

use aws_sdk_ec2::types::Tag;
use serde_json::Value;
use vpcrouter_tests::daemon::{run_once, Daemon};
use vpcrouter_tests::faultproxy::FaultProxy;
use vpcrouter_tests::http_client::get;
use vpcrouter_tests::listener::Listener;
use vpcrouter_tests::moto::Moto;
use vpcrouter_tests::natworld::{self, NatWorld};
use vpcrouter_tests::{file_driven, wait_for, world, Env};

const T: Duration = Duration::from_secs(20);
const TAG: &str = "vpcrouter:managed=true";

fn tag(env: &Env, rtb: &str) -> anyhow::Result<()> {
    let t = Tag::builder().key("vpcrouter:managed").value("true").build();
    env.world.block_on(env.world.ec2.create_tags().resources(rtb).tags(t).send())?;
    Ok(())
}

fn untag(env: &Env, rtb: &str) -> anyhow::Result<()> {
    let t = Tag::builder().key("vpcrouter:managed").build();
    env.world.block_on(env.world.ec2.delete_tags().resources(rtb).tags(t).send())?;
    Ok(())
}

fn status(d: &Daemon) -> anyhow::Result<Value> {
    get(d.port, "/status", None)?.json()
}

/// The ids `/status` lists as managed.
fn managed(d: &Daemon) -> Vec<String> {
    let st = status(d).unwrap_or_default();
    let tables = st["route_table_selection"]["tables"].as_array().cloned().unwrap_or_default();
    tables.iter().filter_map(|t| t["id"].as_str().map(String::from)).collect()
}

#[test]
fn only_tagged_tables_are_managed_and_the_tags_are_read_again_at_every_reconcile() -> anyhow::Result<()> {
    let env = Env::new()?;
    let [rt1, rt2, rt3] = [0, 1, 2].map(|i| env.world.tables[i].clone());
    // rt1 serves the routers' subnet but is not tagged: its foreign route must survive.
    env.world.add_instance_route(&rt1, "10.77.0.0/16", "127.0.1.11")?;
    tag(&env, &rt2)?;
    let spec = env.write("spec.json", r#"{"10.55.0.0/16": ["127.0.1.10", "127.0.2.10"]}"#);
    let health = env.write("health.json", r#"{"failed": []}"#);
    let mut args = file_driven(&spec, &health).to_vec();
    args.extend(["--route-table-tag", TAG, "--route_recheck_interval", "5"]);
    let d = env.daemon().args(&args).start()?;
    let router = env.wait_routed(&[&rt2], "10.55.0.0/16", T)?;
    assert_eq!(managed(&d), std::slice::from_ref(&rt2));
    let rt1_routes = env.world.routes(&rt1)?;
    assert_eq!(rt1_routes.get("10.77.0.0/16").map(String::as_str), Some("127.0.1.11"), "untagged: left alone");
    assert!(!rt1_routes.contains_key("10.55.0.0/16"), "untagged: nothing created");

    // Tagged while running: picked up at the next read (the recheck), same router.
    tag(&env, &rt3)?;
    assert_eq!(env.wait_routed(&[&rt2, &rt3], "10.55.0.0/16", T)?, router);
    wait_for(T, "rt3 in /status", || (managed(&d).contains(&rt3)).then_some(()))?;
    assert!(d.log().lines().any(|l| l.contains("managed route tables") && l.contains(&rt3)), "{}", d.log());

    // Untagged: released (left as it is, no longer changed).
    untag(&env, &rt2)?;
    wait_for(T, "rt2 released", || (managed(&d) == [rt3.clone()]).then_some(()))
        .map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))?;
    let writes = d.log().matches("route changed").count();
    env.write("health.json", &format!(r#"{{"failed": ["{router}"]}}"#));
    let other = if router == "127.0.1.10" { "127.0.2.10" } else { "127.0.1.10" };
    wait_for(T, "the failover in rt3", || {
        (env.world.targets(&[&rt3], "10.55.0.0/16").ok()? == [Some(other.to_string())]).then_some(())
    })?;
    wait_for(T, "the failover's line", || d.log().contains("failover:").then_some(()))?;
    assert_eq!(d.log().matches("route changed").count(), writes + 1, "rt3 only:\n{}", d.log());
    assert_eq!(env.world.routes(&rt2)?.get("10.55.0.0/16"), Some(&router), "released: not written");
    assert_eq!(env.world.routes(&rt1)?.get("10.77.0.0/16").map(String::as_str), Some("127.0.1.11"));
    Ok(())
}

#[test]
fn a_gateway_route_table_routes_a_subnet_through_an_appliance_and_fails_over() -> anyhow::Result<()> {
    let env = Env::new()?;
    let ec2 = &env.world.ec2;
    let gw = env.world.block_on(ec2.create_route_table().vpc_id(&env.world.vpc_id).send())?;
    let gw = gw.route_table().and_then(|t| t.route_table_id()).unwrap_or_default().to_string();
    env.world.block_on(ec2.associate_route_table().route_table_id(&gw).gateway_id(&env.world.igw).send())?;
    let rt3 = env.world.tables[2].clone();
    // Inbound traffic to subnet s4 goes through the appliance pair; 10.99.0.0/16 is outside
    // the VPC: EC2 refuses it in a gateway route table.
    let spec = env.write(
        "spec.json",
        r#"{"127.0.4.0/24": ["127.0.1.10", "127.0.2.10"], "10.99.0.0/16": ["127.0.1.10", "127.0.2.10"]}"#,
    );
    let health = env.write("health.json", r#"{"failed": []}"#);
    let mut args = file_driven(&spec, &health).to_vec();
    let selected = format!("{gw},{rt3}");
    args.extend(["--route-tables", &selected]);
    let d = env.daemon().args(&args).start()?;
    let router = env.wait_routed(&[&gw, &rt3], "127.0.4.0/24", T)?;
    env.wait_routed(&[&rt3], "10.99.0.0/16", T)?;
    let line = "10.99.0.0/16 is not routed in";
    d.wait_log(line, T)?;
    assert!(!env.world.routes(&gw)?.contains_key("10.99.0.0/16"), "no call for it there");
    let st = status(&d)?;
    let sel = &st["route_table_selection"];
    assert_eq!(sel["rule"], "ids", "{st}");
    assert_eq!(
        sel["not_holdable"],
        serde_json::json!([{"route_table": gw, "gateway": env.world.igw, "cidr": "10.99.0.0/16"}]),
        "{st}"
    );
    let gateway_of = |id: &str| sel["tables"].as_array()?.iter().find(|t| t["id"] == id).map(|t| t["gateway"].clone());
    assert_eq!(gateway_of(&gw), Some(Value::from(env.world.igw.as_str())), "{st}");
    let route_info = get(d.port, "/route_info", None)?.json()?;
    assert_eq!(route_info["route_tables"]["rule"], "ids", "{route_info}");

    // The appliance fails: the gateway table's route moves with the others.
    env.write("health.json", &format!(r#"{{"failed": ["{router}"]}}"#));
    let other = if router == "127.0.1.10" { "127.0.2.10" } else { "127.0.1.10" };
    wait_for(T, "the failover in the gateway table", || {
        (env.world.targets(&[&gw, &rt3], "127.0.4.0/24").ok()? == vec![Some(other.to_string()); 2]).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))?;
    d.wait_log("failover:", T)?;
    assert_eq!(d.log().matches(line).count(), 1, "named once:\n{}", d.log());
    assert!(!env.world.routes(&gw)?.contains_key("10.99.0.0/16"));
    let table = env.world.block_on(ec2.describe_route_tables().route_table_ids(&gw).send())?;
    let assoc: Vec<Option<String>> =
        table.route_tables().iter().flat_map(|t| t.associations()).map(|a| a.gateway_id().map(String::from)).collect();
    assert_eq!(assoc, [Some(env.world.igw.clone())], "the gateway association is kept");
    Ok(())
}

#[test]
fn bad_selections_stop_with_one_line_and_tags_no_table_carries_only_warn() -> anyhow::Result<()> {
    let env = Env::new()?;
    let spec = env.write("spec.json", r#"{"10.55.0.0/16": ["127.0.1.10"]}"#);
    let health = env.write("health.json", r#"{"failed": []}"#);
    let base = file_driven(&spec, &health);

    let mut args = base.to_vec();
    args.extend(["--route-tables", "rtb-0000dead"]);
    let mut d = env.daemon().args(&args).start()?;
    let exit = d.wait(T)?;
    assert_eq!(exit.code(), Some(1), "{}", d.log());
    let errors: Vec<String> = d.log().lines().filter(|l| l.starts_with("error:")).map(String::from).collect();
    assert_eq!(errors.len(), 1, "{}", d.log());
    assert!(errors[0].contains("--route-tables: rtb-0000dead is not a route table of VPC"), "{}", errors[0]);
    assert!(errors[0].contains(&env.world.tables[0]), "the VPC's tables are listed: {}", errors[0]);

    for (extra, says) in [
        (&["--route-table-tag", "vpcrouter:managed"][..], "'vpcrouter:managed' has no '='"),
        (&["--route-tables", "rtb-1", "--route-table-tag", TAG][..], "cannot be used with"),
        (&["--route-tables", "subnet-1"][..], "'subnet-1' is not a route table id"),
    ] {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let (code, _, stderr) = run_once(&args);
        assert_eq!(code, 2, "{extra:?}: {stderr}");
        assert!(stderr.lines().next().unwrap_or_default().contains(says), "{extra:?}: {stderr}");
    }

    let mut args = base.to_vec();
    args.extend(["--route-table-tag", "vpcrouter:managed=later"]);
    let d = env.daemon().args(&args).start()?;
    d.wait_log("no route table of VPC", T)?;
    d.wait_log("is selected by --route-table-tag vpcrouter:managed=later; nothing is managed", T)?;
    assert!(status(&d)?["route_table_selection"]["tables"].as_array().is_some_and(Vec::is_empty));
    let routes = env.world.routes(&env.world.tables[0])?;
    assert!(!routes.contains_key("10.55.0.0/16"), "nothing managed");
    Ok(())
}

// ---- HA NAT per zone

const DEFAULT: &str = "0.0.0.0/0";
const HOLD_DOWN: Duration = Duration::from_secs(2);
/// The recipe's options (README and the packaged defaults), as the test passes them.
const RECIPE: [&str; 5] = ["--route-table-tag", "vpcrouter:managed=true", "--zone-affinity", "--failback", "preferred"];

struct NatSetup {
    rt: tokio::runtime::Runtime,
    ec2: aws_sdk_ec2::Client,
    nat: NatWorld,
    _dir: tempfile::TempDir,
    moto: Moto,
}

impl NatSetup {
    /// Two zones with one private table each; zone b's NAT keeps its source/destination
    /// check on (a misconfiguration vpcrouter warns about).
    fn build() -> anyhow::Result<NatSetup> {
        let moto = Moto::start()?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let ec2 = rt.block_on(world::client(&moto.endpoint));
        let nat = rt.block_on(natworld::build(&ec2, 2, 1, &[1]))?;
        Ok(NatSetup { rt, ec2, nat, _dir: tempfile::tempdir()?, moto })
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

#[test]
fn each_zone_uses_its_own_nat_and_a_dead_nat_moves_only_its_zone() -> anyhow::Result<()> {
    let s = NatSetup::build()?;
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
    let d = Daemon::builder(&s.moto).endpoint(&proxy.endpoint).args(args).start()?;
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
