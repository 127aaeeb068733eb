//! EC2-side benchmarks of the vpcrouter daemon (issue 7), against moto through the
//! counting `faultproxy` (no faults injected):
//!
//! 1. small world (the test world): time from start to the first route and to the first
//!    completed reconcile; EC2 calls and new connections per steady-state reconcile;
//!    writes for a failover (exactly one per changed route);
//! 2. idle: RSS and CPU of a daemon with default options over `--idle-secs` (default 60);
//! 3. scale: `--cidrs` (1,000) spec CIDRs × `--tables` (20) route tables × `--instances`
//!    (2,000) instances: the first reconcile (creates every route), a steady-state
//!    reconcile, and a failover of 5 routers (exactly 100 writes at the default scale).
//!
//! Needs `VPCROUTER_BUILD_DIR` (a release build) and `VPCROUTER_MOTO_SERVER`. `--skip-idle`
//! and `--skip-scale` leave parts out.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use vpcrouter_tests::daemon::Daemon;
use vpcrouter_tests::faultproxy::FaultProxy;
use vpcrouter_tests::file_driven;
use vpcrouter_tests::moto::Moto;
use vpcrouter_tests::{free_port, http_client, wait_for, world, Env};

/// Read and write actions, as counted at the proxy.
const READS: [&str; 4] = ["DescribeVpcs", "DescribeSubnets", "DescribeRouteTables", "DescribeInstances"];
const WRITES: [&str; 3] = ["CreateRoute", "ReplaceRoute", "DeleteRoute"];

/// A few figures of `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
struct Metrics {
    reconciles: f64,
    errors: f64,
    last_duration: f64,
    last_at: f64,
}

fn metrics(port: u16) -> Option<Metrics> {
    let body = http_client::get(port, "/metrics", None).ok()?.body;
    let value = |name: &str| {
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    Some(Metrics {
        reconciles: value("vpcrouter_reconciles_total")?,
        errors: value("vpcrouter_reconcile_errors_total")?,
        last_duration: value("vpcrouter_last_reconcile_duration_seconds")?,
        last_at: value("vpcrouter_last_reconcile_timestamp_seconds")?,
    })
}

/// Waits for a reconcile that ended after `after` (Unix seconds); returns its metrics.
fn next_reconcile(port: u16, after: f64, timeout: Duration) -> anyhow::Result<Metrics> {
    wait_for(timeout, "a completed reconcile", || metrics(port).filter(|m| m.last_at > after))
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// Reads and writes counted at the proxy.
fn split(counts: &BTreeMap<String, u64>) -> (u64, u64) {
    let sum = |names: &[&str]| names.iter().map(|n| counts.get(*n).copied().unwrap_or(0)).sum();
    (sum(&READS), sum(&WRITES))
}

/// `(VmRSS, VmHWM)` in KiB and `utime + stime` in clock ticks.
fn proc_stats(pid: u32) -> anyhow::Result<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> Option<u64> {
        status.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) start at field 3; utime and stime
    // are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("bad /proc stat")?;
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Ok((kib("VmRSS:").context("no VmRSS")?, kib("VmHWM:").context("no VmHWM")?, ticks))
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// One result line.
struct Table(Vec<(String, String, String)>);

impl Table {
    fn row(&mut self, what: impl Into<String>, value: impl Into<String>, note: impl Into<String>) {
        let (w, v, n) = (what.into(), value.into(), note.into());
        println!("  {w:<52} {v:>14}  {n}");
        self.0.push((w, v, n));
    }
}

fn small_world(t: &mut Table) -> anyhow::Result<()> {
    let env = Env::new()?;
    let proxy = FaultProxy::start(&env.moto.endpoint)?;
    let spec =
        env.write("spec.json", r#"{"10.55.0.0/16": ["127.0.1.10", "127.0.2.10"], "10.66.0.0/24": ["127.0.1.11"]}"#);
    let health = env.write("health.json", r#"{"failed": []}"#);
    let port = free_port();
    let port_text = port.to_string();
    let args = [&file_driven(&spec, &health)[..], &["--route_recheck_interval", "5", "-p", &port_text]].concat();
    let (rt1, rt2) = (env.world.tables[0].clone(), env.world.tables[1].clone());
    let started = unix_now();
    let t0 = Instant::now();
    let d = env.daemon().endpoint(&proxy.endpoint).args(args).start()?;
    let first = wait_for(Duration::from_secs(30), "the first route", || {
        let r = env.world.routes(&rt1).ok()?;
        r.contains_key("10.55.0.0/16").then(|| t0.elapsed())
    })?;
    let m = next_reconcile(port, 0.0, Duration::from_secs(30)).map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))?;
    t.row(
        "start → first route visible in EC2 (polled)",
        format!("{:.0} ms", first.as_secs_f64() * 1e3),
        "original 1.8: 2.2 s",
    );
    t.row("start → first reconcile completed", format!("{:.0} ms", (m.last_at - started) * 1e3), "");
    let router = env.wait_routed(&[&rt1, &rt2], "10.55.0.0/16", Duration::from_secs(20))?;

    // Steady state: three periodic rechecks, counted from the end of a reconcile.
    let base = next_reconcile(port, m.last_at, Duration::from_secs(15))?;
    proxy.reset_counts();
    let mut last = base;
    for _ in 0..3 {
        last = next_reconcile(port, last.last_at, Duration::from_secs(15))?;
    }
    let n = last.reconciles - base.reconciles;
    let (reads, writes) = split(&proxy.counts());
    let conns = proxy.connections();
    t.row("steady reconcile: EC2 read calls", format!("{:.1}", reads as f64 / n), "target ≤ 3 + pages; original 5");
    t.row("steady reconcile: EC2 write calls", format!("{:.1}", writes as f64 / n), "target 0");
    t.row("steady reconcile: new connections", format!("{:.1}", conns as f64 / n), "original 1");
    t.row("steady reconcile: duration (small world)", format!("{:.1} ms", last.last_duration * 1e3), "");

    // A failover of the router of 10.55.0.0/16 changes 2 routes: exactly 2 writes.
    proxy.reset_counts();
    let before = metrics(port).context("metrics")?;
    env.write("health.json", &format!(r#"{{"failed": ["{router}"]}}"#));
    let other = if router == "127.0.1.10" { "127.0.2.10" } else { "127.0.1.10" };
    wait_for(Duration::from_secs(20), "failover", || {
        (env.world.targets(&[&rt1, &rt2], "10.55.0.0/16").ok()? == vec![Some(other.to_string()); 2]).then_some(())
    })?;
    let after = next_reconcile(port, before.last_at, Duration::from_secs(10))?;
    let (reads, writes) = split(&proxy.counts());
    let ok = if writes == 2 { "exactly N: met" } else { "MISSED (want 2)" };
    t.row("failover, 2 routes changed: writes", writes.to_string(), ok);
    t.row("failover: reads (one reconcile)", reads.to_string(), "");
    t.row("failover reconcile duration", format!("{:.1} ms", after.last_duration * 1e3), "");
    Ok(())
}

fn idle(t: &mut Table, secs: u64) -> anyhow::Result<()> {
    let env = Env::new()?;
    let proxy = FaultProxy::start(&env.moto.endpoint)?;
    let spec =
        env.write("spec.json", r#"{"10.55.0.0/16": ["127.0.1.10", "127.0.2.10"], "10.66.0.0/24": ["127.0.1.11"]}"#);
    let port = free_port();
    let port_text = port.to_string();
    let spec = spec.to_str().unwrap_or_default();
    let args = ["-m", "configfile", "-f", spec, "-H", "always", "-p", &port_text];
    let d = env.daemon().endpoint(&proxy.endpoint).args(args).start()?;
    let pid = d.pid().context("no pid")?;
    env.wait_routed(&[&env.world.tables[0]], "10.55.0.0/16", Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_secs(2));
    let (_, _, ticks0) = proc_stats(pid)?;
    let calls0 = proxy.calls().len();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let (rss, hwm, ticks1) = proc_stats(pid)?;
    let cpu = (ticks1 - ticks0) as f64 / clock_ticks() / t0.elapsed().as_secs_f64() * 100.0;
    let verdict = if rss <= 15 * 1024 { "target ≤ 15 MB: met" } else { "target ≤ 15 MB: MISSED" };
    t.row("idle RSS (VmRSS)", format!("{:.1} MiB", rss as f64 / 1024.0), format!("{verdict}; original ~31 MiB"));
    t.row("peak RSS (VmHWM)", format!("{:.1} MiB", hwm as f64 / 1024.0), "");
    t.row(
        format!("idle CPU over {secs} s (default 30 s recheck)"),
        format!("{cpu:.3} %"),
        "target ~0; original 0.1–0.2 %",
    );
    t.row(
        format!("EC2 calls while idle ({secs} s)"),
        (proxy.calls().len() - calls0).to_string(),
        "the periodic recheck only",
    );
    Ok(())
}

/// A VPC of `tables` subnets (one explicit route table each) and `instances` instances
/// spread over them; returns (vpc, tables, instance IPs interleaved across subnets).
async fn build_scale(
    ec2: &aws_sdk_ec2::Client,
    tables: usize,
    instances: usize,
) -> anyhow::Result<(String, Vec<String>, Vec<String>)> {
    let vpc = ec2.create_vpc().cidr_block("10.0.0.0/16").send().await?;
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).context("no vpc id")?.to_string();
    let image = ec2.describe_images().send().await?;
    let ami = image.images().first().and_then(|i| i.image_id()).context("moto has no AMI")?.to_string();
    let mut rtbs = Vec::new();
    let mut per_subnet: Vec<Vec<String>> = Vec::new();
    for s in 0..tables {
        let subnet = ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .cidr_block(format!("10.0.{s}.0/24"))
            .availability_zone(format!("{}a", world::REGION))
            .send()
            .await?;
        let subnet_id = subnet.subnet().and_then(|x| x.subnet_id()).context("no subnet id")?.to_string();
        let rt = ec2.create_route_table().vpc_id(&vpc_id).send().await?;
        let rtb = rt.route_table().and_then(|x| x.route_table_id()).context("no rtb id")?.to_string();
        ec2.associate_route_table().route_table_id(&rtb).subnet_id(&subnet_id).send().await?;
        rtbs.push(rtb);
        let count = (instances / tables + usize::from(s < instances % tables)) as i32;
        let out = ec2
            .run_instances()
            .image_id(&ami)
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
            .min_count(count)
            .max_count(count)
            .subnet_id(&subnet_id)
            .send()
            .await?;
        per_subnet.push(out.instances().iter().filter_map(|i| i.private_ip_address().map(str::to_string)).collect());
    }
    let mut ips = Vec::new();
    for k in 0..per_subnet.iter().map(Vec::len).max().unwrap_or(0) {
        ips.extend(per_subnet.iter().filter_map(|s| s.get(k).cloned()));
    }
    Ok((vpc_id, rtbs, ips))
}

fn scale(t: &mut Table, cidrs: usize, tables: usize, instances: usize) -> anyhow::Result<()> {
    let moto = Moto::start()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let ec2 = rt.block_on(world::client(&moto.endpoint));
    let t0 = Instant::now();
    let (vpc_id, _rtbs, ips) = rt.block_on(build_scale(&ec2, tables, instances))?;
    anyhow::ensure!(ips.len() >= 2, "moto started {} instances", ips.len());
    eprintln!("scale world built in {:.1} s: {tables} tables, {} instances", t0.elapsed().as_secs_f64(), ips.len());
    // CIDR c: routers 2c and 2c+1 (interleaved across subnets).
    let mut spec = serde_json::Map::new();
    for c in 0..cidrs {
        let hosts = [&ips[2 * c % ips.len()], &ips[(2 * c + 1) % ips.len()]];
        spec.insert(format!("172.16.{}.{}/30", c / 64, (c % 64) * 4), serde_json::json!(hosts));
    }
    let dir = tempfile::tempdir()?;
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, serde_json::Value::Object(spec).to_string())?;
    let health = dir.path().join("health.json");
    std::fs::write(&health, r#"{"failed": []}"#)?;
    let proxy = FaultProxy::start(&moto.endpoint)?;
    let port = free_port();
    let port_text = port.to_string();
    let args = [
        &["-r", world::REGION, "-v", &vpc_id][..],
        &file_driven(&spec_path, &health),
        &[
            "--route_recheck_interval", "0", "-p", &port_text,
            // moto has no request limits: vpcrouter's own buckets are opened wide, so that this
            // measures moto and vpcrouter, not EC2's refill rate (see bench-failover-ec2).
            "--ec2-write-burst", "100000", "--ec2-write-rate", "100000", "--ec2-read-burst", "100000",
            "--ec2-read-rate", "100000",
        ],
    ]
    .concat();
    let d = Daemon::builder(&moto).endpoint(&proxy.endpoint).args(&args).start()?;
    let routes = (cidrs * tables) as u64;
    let first =
        next_reconcile(port, 0.0, Duration::from_secs(1800)).map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))?;
    let (reads, writes) = split(&proxy.counts());
    let label = format!("{cidrs} CIDRs × {tables} tables × {} instances", ips.len());
    println!("  -- scale: {label}");
    t.row(
        format!("first reconcile ({routes} routes created)"),
        format!("{:.1} s", first.last_duration),
        format!("{reads} reads (with the start-up read), {writes} writes, {} errors", first.errors),
    );
    t.row(
        "first reconcile: time per route created",
        format!("{:.2} ms", first.last_duration * 1e3 / routes.max(1) as f64),
        "moto + SDK, sequential",
    );

    // Steady state: a spec change that changes no route (one more CIDR whose only host is
    // not in the VPC) triggers a reconcile that reads and plans but writes nothing.
    proxy.reset_counts();
    let mut more: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&spec_path)?)?;
    if let Some(map) = more.as_object_mut() {
        map.insert("192.168.255.0/24".into(), serde_json::json!(["10.255.255.254"]));
    }
    std::fs::write(&spec_path, more.to_string())?;
    let steady = next_reconcile(port, first.last_at, Duration::from_secs(300))?;
    let (reads, writes) = split(&proxy.counts());
    t.row(
        "steady reconcile at scale: duration",
        format!("{:.0} ms", steady.last_duration * 1e3),
        "reads + plan, no writes",
    );
    t.row("steady reconcile at scale: read / write calls", format!("{reads} / {writes}"), "target ≤ 3 + pages / 0");

    // Five failed routers: the current routers of five CIDRs (as the status server shows
    // them), each the router of exactly one CIDR in every table.
    let info = http_client::get(port, "/route_info", None)?.json()?;
    let failed: Vec<String> = (0..5)
        .map(|k| {
            let cidr = format!("172.16.{}.{}/30", (k * 200) / 64, ((k * 200) % 64) * 4);
            info["routes"][&cidr][0].as_str().map(str::to_string).with_context(|| format!("{cidr} not in /route_info"))
        })
        .collect::<anyhow::Result<_>>()?;
    proxy.reset_counts();
    std::fs::write(&health, serde_json::json!({"failed": failed}).to_string())?;
    let fo = next_reconcile(port, steady.last_at, Duration::from_secs(300))?;
    let counts = proxy.counts();
    let (reads, writes) = split(&counts);
    let want = 5 * tables as u64;
    let replaced = counts.get("ReplaceRoute").copied().unwrap_or(0);
    let verdict = if writes == want && replaced == want { "exactly N: met" } else { "MISSED" };
    t.row(format!("failover of 5 routers: writes (N = {want} routes)"), writes.to_string(), verdict);
    t.row(
        "failover at scale: reconcile duration",
        format!("{:.0} ms", fo.last_duration * 1e3),
        format!("{reads} reads"),
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let num = |name: &str, default: usize| -> usize {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let mut t = Table(Vec::new());
    println!("\nvpcrouter against moto, EC2 calls counted at a proxy");
    println!("  {:<52} {:>14}  note", "measure", "value");
    small_world(&mut t)?;
    if !flag("--skip-idle") {
        idle(&mut t, num("--idle-secs", 60) as u64)?;
    }
    if !flag("--skip-scale") {
        scale(&mut t, num("--cidrs", 1000), num("--tables", 20), num("--instances", 2000))?;
    }
    Ok(())
}
