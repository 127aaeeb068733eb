//! Pieces the benchmarks through the EC2 model share: a VPC of T subnets and route tables
//! with routers and members, option parsing, the table figures, and when the daemon's log
//! says it heard of a failure.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use aws_sdk_ec2::Client;

use crate::daemon::Daemon;
use crate::ec2model::{Bucket, Model};
use crate::faultproxy::{FaultProxy, Tally};
use crate::moto::Moto;
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

/// The CIDR that makes every table of a bench VPC managed: sent to every member, it stays
/// on member 1 and is never written. (A table is managed when it serves a subnet holding a
/// spec host, and the routers alone are in the first few subnets.)
pub const ANCHOR: &str = "10.200.0.0/16";

/// The measured CIDRs of a bench: `10.1.0.0/16` .. `10.C.0.0/16`.
pub fn cidrs(c: usize) -> Vec<String> {
    (1..=c).map(|k| format!("10.{k}.0.0/16")).collect()
}

/// Every route of `c` measured CIDRs in every table of `vpc`, created in moto directly: the
/// anchor on member 1, the measured CIDRs on router `on`.
pub async fn precreate(ec2: &Client, vpc: &Vpc, c: usize, on: usize) -> anyhow::Result<()> {
    let router = &vpc.routers.get(on).context("no such router")?.instance;
    for rtb in &vpc.tables {
        let anchor = ec2.create_route().route_table_id(rtb).destination_cidr_block(ANCHOR);
        anchor.instance_id(&vpc.members[0].instance).send().await?;
        for cidr in cidrs(c) {
            ec2.create_route().route_table_id(rtb).destination_cidr_block(cidr).instance_id(router).send().await?;
        }
    }
    Ok(())
}

/// Points every measured route of `vpc` back at router `on`, in moto directly (between
/// trials).
pub async fn put_back(ec2: &Client, vpc: &Vpc, c: usize, on: usize) -> anyhow::Result<()> {
    let router = &vpc.routers.get(on).context("no such router")?.instance;
    for rtb in &vpc.tables {
        for cidr in cidrs(c) {
            ec2.replace_route().route_table_id(rtb).destination_cidr_block(cidr).instance_id(router).send().await?;
        }
    }
    Ok(())
}

/// The spec of a bench VPC: each measured CIDR to every router (in their order), the anchor
/// to every member.
pub fn spec_json(vpc: &Vpc, c: usize) -> String {
    let routers: Vec<String> = vpc.routers.iter().map(|r| r.ip.to_string()).collect();
    let mut spec = serde_json::Map::new();
    for cidr in cidrs(c) {
        spec.insert(cidr, serde_json::json!(routers));
    }
    spec.insert(ANCHOR.into(), serde_json::json!(vpc.members.iter().map(|m| m.ip.to_string()).collect::<Vec<_>>()));
    serde_json::Value::Object(spec).to_string()
}

/// Routes of the measured CIDRs per router IP (any other target under `None`), read from
/// moto directly in one DescribeRouteTables call.
pub async fn placement(ec2: &Client, vpc: &Vpc, c: usize) -> anyhow::Result<HashMap<Option<Ipv4Addr>, usize>> {
    let vpc_filter = aws_sdk_ec2::types::Filter::builder().name("vpc-id").values(&vpc.id).build();
    let out = ec2.describe_route_tables().filters(vpc_filter).send().await?;
    let wanted = cidrs(c);
    let mut by_router = HashMap::new();
    let tables =
        out.route_tables().iter().filter(|t| t.route_table_id().is_some_and(|id| vpc.tables.iter().any(|x| x == id)));
    for table in tables {
        let routes =
            table.routes().iter().filter(|r| r.destination_cidr_block().is_some_and(|d| wanted.iter().any(|w| w == d)));
        for r in routes {
            let target = r.network_interface_id().or(r.instance_id()).and_then(|id| vpc.owners.get(id).copied());
            *by_router.entry(target).or_insert(0) += 1;
        }
    }
    Ok(by_router)
}

/// A bench VPC in a moto of its own, with a spec file and a `file` health monitor's file:
/// what the benches and the tests through the EC2 model run vpcrouter on.
pub struct Bed {
    /// The measured CIDRs (C).
    pub c: usize,
    /// The runtime of `ec2`.
    pub rt: tokio::runtime::Runtime,
    /// An SDK client talking to moto directly (no proxy).
    pub ec2: Client,
    /// The VPC.
    pub vpc: Vpc,
    /// The spec file ([`spec_json`]).
    pub spec: PathBuf,
    /// The health file ([`write_failed`]).
    pub health: PathBuf,
    _dir: tempfile::TempDir,
    /// The emulator (declared last: dropped after the client).
    pub moto: Moto,
}

impl Bed {
    /// moto, a VPC of `t` tables and `routers` routers ([`build_vpc`]), every measured route
    /// of `c` CIDRs on the first router ([`precreate`]), the spec sending each of them to
    /// every router, and no host failed.
    pub fn build(c: usize, t: usize, routers: usize) -> anyhow::Result<Bed> {
        let moto = Moto::start()?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let ec2 = rt.block_on(world::client(&moto.endpoint));
        let vpc = rt.block_on(build_vpc(&ec2, t, routers))?;
        rt.block_on(precreate(&ec2, &vpc, c, 0))?;
        let dir = tempfile::tempdir()?;
        let (spec, health) = (dir.path().join("spec.json"), dir.path().join("health.json"));
        std::fs::write(&spec, spec_json(&vpc, c))?;
        write_failed(&health, &[])?;
        Ok(Bed { c, rt, ec2, vpc, spec, health, _dir: dir, moto })
    }

    /// The measured routes: C × T.
    pub fn n(&self) -> usize {
        self.c * self.vpc.tables.len()
    }

    /// The IP of router `i`.
    pub fn router(&self, i: usize) -> Ipv4Addr {
        self.vpc.routers[i].ip
    }

    /// The instance and interface ids of router `i`: the targets a write onto it names.
    pub fn ids(&self, i: usize) -> Vec<&str> {
        let ip = self.router(i);
        self.vpc.owners.iter().filter(|(_, o)| **o == ip).map(|(id, _)| id.as_str()).collect()
    }

    /// [`placement`] now.
    pub fn placement(&self) -> anyhow::Result<HashMap<Option<Ipv4Addr>, usize>> {
        self.rt.block_on(placement(&self.ec2, &self.vpc, self.c))
    }

    /// Marks `failed` failed (and every other host healthy).
    pub fn fail(&self, failed: &[Ipv4Addr]) -> anyhow::Result<()> {
        write_failed(&self.health, failed)
    }

    /// vpcrouter with `args` on this bed through `proxy`: returns once it has reconciled and
    /// `settle` more has passed, with the proxy's `model` buckets full again.
    pub fn start_daemon(
        &self,
        proxy: &FaultProxy,
        args: &[String],
        model: Model,
        settle: Duration,
    ) -> anyhow::Result<Daemon> {
        let mut d = Daemon::builder(&self.moto).endpoint(&proxy.endpoint).args(args).start()?;
        wait_first_reconcile(&mut d, Duration::from_secs(120))?;
        std::thread::sleep(settle);
        proxy.set_model(Some(model))?;
        Ok(d)
    }
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

/// Waits until `d` has reconciled once (its `/status` has `last_reconcile`); fails at once,
/// with its log, if it exits (e.g. on an option it does not know).
pub fn wait_first_reconcile(d: &mut Daemon, timeout: Duration) -> anyhow::Result<()> {
    let ready = crate::wait_for(timeout, "the first reconcile", || match d.exited() {
        Some(s) => Some(Err(anyhow::anyhow!("vpcrouter exited ({s})"))),
        None => status(d.port)?["last_reconcile"].is_object().then_some(Ok(())),
    });
    ready.and_then(|r| r).map_err(|e| anyhow::anyhow!("{e}\n--- log ---\n{}", d.log()))
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
    daemon_args_recheck(vpc_id, spec, health, limits, 30)
}

/// [`daemon_args`] with a recheck every `recheck` seconds.
pub fn daemon_args_recheck(
    vpc_id: &str,
    spec: &Path,
    health: &Path,
    limits: Option<&Model>,
    recheck: u32,
) -> Vec<String> {
    let recheck = recheck.to_string();
    let mut args: Vec<String> = [
        &["-r", world::REGION, "-v", vpc_id][..],
        &crate::file_driven(spec, health),
        &["--route_recheck_interval", recheck.as_str()],
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

/// The time stamp that starts a log line (`2026-11-23T14:26:09.675378Z ...`, RFC 3339).
pub fn log_time(line: &str) -> Option<SystemTime> {
    let stamp = line.split_whitespace().next()?;
    let t = time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.into())
}

/// When the engine first heard that `ip` failed, after `since` (from the daemon's log).
pub fn reported_failed(log: &str, ip: &str, since: SystemTime) -> Option<SystemTime> {
    log.lines()
        .filter(|l| l.contains("health changed"))
        .filter(|l| {
            l.split_whitespace()
                .find_map(|f| f.strip_prefix("failed="))
                .is_some_and(|list| list.split(',').any(|x| x == ip))
        })
        .filter_map(log_time)
        .find(|t| *t >= since)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn log_lines_are_dated_by_their_rfc3339_stamp() {
        let t = super::log_time("2026-11-23T14:26:09.675378Z  INFO health changed failed=10.0.0.1");
        assert_eq!(t, Some(UNIX_EPOCH + Duration::from_micros(1_795_443_969_675_378)));
        assert_eq!(super::log_time("2000-02-29T00:00:00Z x"), Some(UNIX_EPOCH + Duration::from_secs(951_782_400)));
        assert_eq!(super::log_time("not a stamp"), None);
    }
}
