//! Choosing the route tables vpcrouter manages, end to end against moto: `--route-table-tag`
//! (untagged tables are left entirely alone, a table tagged while running is picked up and
//! one untagged is released), `--route-tables` with a gateway route table (a subnet's CIDR
//! routed to an appliance and failed over; a CIDR it cannot hold gets no call there; the
//! gateway association stays), and bad selections (one line, or a warning where tables may
//! be tagged later).

use std::time::Duration;

use aws_sdk_ec2::types::Tag;
use serde_json::Value;
use vpcrouter_tests::daemon::{run_once, Daemon};
use vpcrouter_tests::http_client::get;
use vpcrouter_tests::{file_driven, wait_for, Env};

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
    let d = env.daemon(&args)?;
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
    let d = env.daemon(&args)?;
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
    let mut d = env.daemon(&args)?;
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
    let d = env.daemon(&args)?;
    d.wait_log("no route table of VPC", T)?;
    d.wait_log("is selected by --route-table-tag vpcrouter:managed=later; nothing is managed", T)?;
    assert!(status(&d)?["route_table_selection"]["tables"].as_array().is_some_and(Vec::is_empty));
    let routes = env.world.routes(&env.world.tables[0])?;
    assert!(!routes.contains_key("10.55.0.0/16"), "nothing managed");
    Ok(())
}
