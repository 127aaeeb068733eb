//! Pieces the benchmarks through the EC2 model share: a VPC of T subnets and route tables
//! with routers and members, option parsing, and the table figures.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use aws_sdk_ec2::Client;

use crate::ec2model::{Bucket, Model};
use crate::faultproxy::Tally;
use crate::{http_client, world};

/// An instance of a bench VPC.
#[derive(Clone, Debug)]
pub struct Host {
    /// Its private IP.
    pub ip: Ipv4Addr,
    /// `i-...`
    pub instance: String,
}

/// A bench VPC (see [`build_vpc`]).
pub struct Vpc {
    /// `vpc-...`
    pub id: String,
    /// rt_1 .. rt_T.
    pub tables: Vec<String>,
    /// The routers: `127.0.i.10` in subnet i, for i in 1..=R.
    pub routers: Vec<Host>,
    /// One member per subnet: `127.0.i.20`.
    pub members: Vec<Host>,
    /// Instance and ENI ids → private IP.
    pub owners: HashMap<String, Ipv4Addr>,
}

/// Runs one router instance at `ip` in `subnet`; records its ids in `owners`.
async fn run_instance(
    ec2: &Client,
    ami: &str,
    subnet: &str,
    ip: Ipv4Addr,
    owners: &mut HashMap<String, Ipv4Addr>,
) -> anyhow::Result<Host> {
    let (id, eni) = world::run_router(ec2, ami, subnet, ip, true).await?;
    owners.insert(eni, ip);
    owners.insert(id.clone(), ip);
    Ok(Host { ip, instance: id })
}

/// `tables` subnets `127.0.i.0/24`, each with its own route table and a member
/// `127.0.i.20`; a router `127.0.i.10` in each of the first `routers` subnets.
pub async fn build_vpc(ec2: &Client, tables: usize, routers: usize) -> anyhow::Result<Vpc> {
    anyhow::ensure!(tables >= routers, "need at least {routers} tables");
    let vpc = ec2.create_vpc().cidr_block("127.0.0.0/16").send().await?;
    let id = vpc.vpc().and_then(|v| v.vpc_id()).context("no vpc id")?.to_string();
    let ami = world::first_ami(ec2).await?;
    let (mut rtbs, mut members, mut hosts, mut owners) = (Vec::new(), Vec::new(), Vec::new(), HashMap::new());
    for i in 1..=tables {
        let octet = u8::try_from(i).context("too many tables")?;
        let subnet = ec2
            .create_subnet()
            .vpc_id(&id)
            .cidr_block(format!("127.0.{i}.0/24"))
            .availability_zone(format!("{}a", world::REGION))
            .send()
            .await?;
        let subnet = subnet.subnet().and_then(|s| s.subnet_id()).context("no subnet id")?.to_string();
        let rt = ec2.create_route_table().vpc_id(&id).send().await?;
        let rtb = rt.route_table().and_then(|t| t.route_table_id()).context("no rtb id")?.to_string();
        ec2.associate_route_table().route_table_id(&rtb).subnet_id(&subnet).send().await?;
        rtbs.push(rtb);
        if i <= routers {
            hosts.push(run_instance(ec2, &ami, &subnet, Ipv4Addr::new(127, 0, octet, 10), &mut owners).await?);
        }
        members.push(run_instance(ec2, &ami, &subnet, Ipv4Addr::new(127, 0, octet, 20), &mut owners).await?);
    }
    Ok(Vpc { id, tables: rtbs, routers: hosts, members, owners })
}

/// The value of option `name` in `args`, parsed (`None` when absent).
pub fn value<T: std::str::FromStr>(args: &[String], name: &str) -> anyhow::Result<Option<T>> {
    let Some(i) = args.iter().position(|a| a == name) else { return Ok(None) };
    let text = args.get(i + 1).with_context(|| format!("{name} needs a value"))?;
    text.parse().map(Some).map_err(|_| anyhow::anyhow!("{name}: bad value '{text}'"))
}

/// Writes `content` to `path` by a rename, as editors do.
pub fn write_atomic(path: &Path, content: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A daemon's `/status`, if it answers.
pub fn status(port: u16) -> Option<serde_json::Value> {
    http_client::get(port, "/status", None).ok()?.json().ok()
}

/// How long the model's buckets take to be full again after the calls of `tally`.
pub fn refill_time(model: &Model, tally: &Tally) -> Duration {
    let wait = |used: u64, b: Bucket| Duration::from_secs_f64(used.min(b.burst) as f64 / b.rate);
    wait(tally.writes, model.write_bucket).max(wait(tally.reads, model.read_bucket))
}

/// The `q` quantile (nearest rank) of sorted durations.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Milliseconds, rounded.
pub fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

/// `lo–hi`, or the one value.
pub fn spread(values: &[u64]) -> String {
    let (lo, hi) = (values.iter().min().copied().unwrap_or(0), values.iter().max().copied().unwrap_or(0));
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}–{hi}")
    }
}

/// The options of a bench's vpcrouter: region and VPC, the `configfile` watcher on `spec`
/// and the `file` health monitor on `health`, a 30 s recheck, and with `limits` client
/// buckets equal to the model's.
pub fn daemon_args(vpc_id: &str, spec: &Path, health: &Path, limits: Option<&Model>) -> Vec<String> {
    let mut args: Vec<String> = [
        &["-r", world::REGION, "-v", vpc_id][..],
        &crate::file_driven(spec, health),
        &["--route_recheck_interval", "30"],
    ]
    .concat()
    .into_iter()
    .map(String::from)
    .collect();
    if let Some(model) = limits {
        let (r, w) = (model.read_bucket, model.write_bucket);
        for (name, v) in [
            ("--ec2-write-burst", w.burst.to_string()),
            ("--ec2-write-rate", w.rate.to_string()),
            ("--ec2-read-burst", r.burst.to_string()),
            ("--ec2-read-rate", r.rate.to_string()),
        ] {
            args.extend([name.to_string(), v]);
        }
    }
    args
}

/// Marks `failed` failed (and every other host healthy) in the `file` health plugin's file.
pub fn write_failed(health: &Path, failed: &[Ipv4Addr]) -> anyhow::Result<()> {
    let ips: Vec<String> = failed.iter().map(Ipv4Addr::to_string).collect();
    write_atomic(health, &serde_json::json!({ "failed": ips }).to_string())
}
