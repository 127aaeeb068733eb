//! A router whose instance is not running counts as failed whatever its health says: it never carries a route.
//!
//! Pending, stopping, stopped, shutting down, terminated; end to end against moto. New routes
//! never go to it, and routes on it move when it stops.

use std::time::Duration;

use vpcrouter_tests::{wait_for, Env};

const T: Duration = Duration::from_secs(20);
const CIDRS: [&str; 4] = ["10.55.0.0/16", "10.56.0.0/16", "10.57.0.0/16", "10.58.0.0/16"];

fn instance_of(env: &Env, ip: &str) -> anyhow::Result<String> {
    let (id, _) = env.world.routers.get(&ip.parse()?).ok_or_else(|| anyhow::anyhow!("no router {ip}"))?;
    Ok(id.clone())
}

/// Where each of `CIDRS` points in every table of `tables`, once all are routed.
fn routed(env: &Env, tables: &[&str]) -> anyhow::Result<Vec<String>> {
    CIDRS.iter().map(|cidr| env.wait_routed(tables, cidr, T)).collect()
}

/// Where each of `CIDRS` points now, when each points at one router in all of `tables`.
fn routers_now(env: &Env, tables: &[&str]) -> Option<Vec<String>> {
    let one = |cidr: &&str| {
        let targets = env.world.targets(tables, cidr).ok()?;
        let first = targets.first()?.clone()?;
        targets.iter().all(|t| t.as_deref() == Some(first.as_str())).then_some(first)
    };
    CIDRS.iter().map(one).collect()
}

#[test]
fn routers_whose_instance_is_not_running_never_carry_routes() -> anyhow::Result<()> {
    let env = Env::new()?;
    let (rt1, rt2) = (env.world.tables[0].clone(), env.world.tables[1].clone());
    let (dead, a, b) = ("127.0.1.10", "127.0.1.11", "127.0.2.10");
    let terminated = instance_of(&env, dead)?;
    env.world.block_on(env.world.ec2.terminate_instances().instance_ids(&terminated).send())?;

    let spec: String =
        CIDRS.iter().map(|c| format!("\"{c}\": [\"{dead}\", \"{a}\", \"{b}\"]")).collect::<Vec<_>>().join(",");
    let spec = env.write("spec.json", &format!("{{{spec}}}"));
    let spec = spec.to_str().unwrap_or_default();
    let args = ["-m", "configfile", "-f", spec, "-H", "always", "--route_recheck_interval", "5"];
    let d = env.daemon().args(args).start()?;
    // Four CIDRs placed at random among the candidates: none on the terminated one.
    let placed = routed(&env, &[&rt1, &rt2]).map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))?;
    assert!(placed.iter().all(|r| r != dead), "{placed:?}\n{}", env.world.dump());
    d.wait_log(&format!("instance {terminated}, which is terminated, not running"), T)?;

    // The router of the first CIDR stops: every route on it moves at the next read, though
    // the health monitor (`always`) still calls it healthy.
    let stopping = placed[0].clone();
    let stopped = instance_of(&env, &stopping)?;
    env.world.block_on(env.world.ec2.stop_instances().instance_ids(&stopped).send())?;
    let moved = wait_for(T, "routes off the stopped router", || {
        let now = routers_now(&env, &[&rt1, &rt2])?;
        now.iter().all(|r| r != &stopping && r != dead).then_some(now)
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}\n{}", env.world.dump(), d.log()))?;
    assert!(moved.iter().all(|r| r == a || r == b), "{moved:?}");
    d.wait_log(&format!("instance {stopped}, which is stopped, not running"), T)?;
    assert!(d.log().contains("reason=router failed"), "{}", d.log());
    Ok(())
}
