//! Failover time through a model of real EC2 (`vpcrouter_tests::ec2model`: ~100 ms per call,
//! token-bucket throttling), as a user on EC2 would see it: from marking the router failed
//! until moto shows every route on the other router.
//!
//! `bench-failover-ec2 [--trials N] [--only 4x10,20x10,nat,nat-small,nat-second] [--write-rate R] [--write-burst W]
//! [--read-latency-ms MS] [--write-latency-ms MS] [--no-cluster] [--no-client-limits]`
//! (run by `make bench` after bench-cluster).
//!
//! The `nat` case is an HA NAT deployment (`vpcrouter_tests::natworld`, the README's recipe):
//! 3 zones, one NAT each in the public subnet, 20 private tables per zone tagged
//! `vpcrouter:managed=true`, spec `0.0.0.0/0` and 10 other CIDRs (`10.k.0.0/16`) to the three
//! NATs, `--route-table-tag vpcrouter:managed=true --zone-affinity`. Every private table's
//! routes are created in moto on its own zone's NAT before vpcrouter starts. A trial fails
//! one zone's NAT (zone a, b, c in turn) and polls moto until no route of that zone's 20
//! tables is left on it: N = 20 × 11 = 220 routes, and only those may be written (the
//! other zones' routes are checked to be on their own NATs). Before each trial the routes
//! are put back on their own NATs in moto directly and vpcrouter is started again (so each
//! failover starts from a state vpcrouter read, and full buckets). `nat-small` is the same
//! with 2 private tables per zone and `0.0.0.0/0` alone, a common NAT deployment: N = 2.
//! `nat-second` is `nat` where the next zone's NAT fails too, 2 s into the first zone's
//! failover; a trial ends when no route of either zone is on a failed NAT (N = 440 routes
//! must move; the third zone's NAT is the only one left).
//!
//! World, per case C × T (C spec CIDRs, T route tables), built in moto with the SDK:
//!
//! | subnet i (1..=T) | route table | instances                                          |
//! |------------------|-------------|----------------------------------------------------|
//! | 127.0.i.0/24     | rt_i (own)  | member 127.0.i.20; router A 127.0.1.10 in subnet 1, router B 127.0.2.10 in subnet 2 |
//!
//! A table is managed when it serves a subnet holding a spec host (`managed_tables` in
//! planner/src/plan.rs), and a subnet has exactly one table, so the two routers alone
//! would make only rt_1 and rt_2 managed. Every table is made managed by an anchor CIDR,
//! `10.200.0.0/16` → [member_1 .. member_T], never failed: it keeps its route on member_1
//! and is never written. The measured CIDRs are `10.1.0.0/16` .. `10.C.0.0/16`, each
//! `[A, B]`. Every route (C × T, plus the anchor in each table) is created in moto directly
//! (no proxy) before vpcrouter starts, pointing at A (the anchor at member_1), so start-up
//! writes nothing.
//!
//! vpcrouter (`-m configfile -H file --route_recheck_interval 30`, plus
//! `--ec2-write-burst/--ec2-write-rate/--ec2-read-burst/--ec2-read-rate` equal to the
//! model's buckets unless `--no-client-limits`) talks to EC2 through the fault proxy with
//! the model. A trial: wait 1 s (longer if the model's buckets need it to be full again),
//! write the health file marking the router that carries the routes failed (t0), poll
//! moto directly (one DescribeRouteTables of the VPC; the next poll after max(10 ms, the
//! last poll's duration), so polling takes at most half of moto's time) until all C × T
//! routes point at the other router (t1, the answer of that poll). Writes and throttled
//! answers are counted at the proxy from t0 to t1 + 1 s. Then nothing is marked failed,
//! and the next trial fails the other router (no fail-back). Modes: one instance, and a
//! cluster of three on a test etcd (all behind the same proxy, spec and health file).
//!
//! The bound is the model's: write latency when N = C × T ≤ burst, else write latency +
//! (N − burst) / rate. moto is measured per case before vpcrouter starts (100 sequential
//! ReplaceRoute calls, no proxy): moto serialises calls, so N writes cost at least
//! N × that on top of the model; the last column compares with bound + N × moto.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_sdk_ec2::types::Filter;
use aws_sdk_ec2::Client;
use vpcrouter_tests::bench::{
    build_vpc, daemon_args, ms, quantile, refill_time, spread, status, value, write_failed, Vpc,
};
use vpcrouter_tests::cluster::{wait_one_leader, Instance};
use vpcrouter_tests::daemon::{self, Daemon};
use vpcrouter_tests::ec2model::{Bucket, Model};
use vpcrouter_tests::etcd::Etcd;
use vpcrouter_tests::faultproxy::{FaultProxy, Tally};
use vpcrouter_tests::moto::Moto;
use vpcrouter_tests::{wait_for, world};

/// The default cases, C × T.
const CASES: [(usize, usize); 4] = [(1, 2), (4, 10), (20, 10), (100, 20)];
/// The anchor CIDR that makes every table managed (see the header).
const ANCHOR: &str = "10.200.0.0/16";
/// ReplaceRoute calls timed against moto per case.
const MOTO_PROBES: usize = 100;

/// Command-line options.
struct Opts {
    trials: Option<usize>,
    cases: Vec<(usize, usize)>,
    /// The NAT cases to run (`nat`, `nat-small`).
    nat: Vec<nat::Shape>,
    model: Model,
    cluster: bool,
    client_limits: bool,
}

/// `CxT` (e.g. `4x10`).
fn parse_case(text: &str) -> anyhow::Result<(usize, usize)> {
    let (c, t) = text.split_once('x').with_context(|| format!("case '{text}': expected CxT, e.g. 4x10"))?;
    let (c, t): (usize, usize) = (c.parse()?, t.parse()?);
    anyhow::ensure!((1..=199).contains(&c) && (2..=250).contains(&t), "case '{text}': C must be 1..=199 and T 2..=250");
    Ok((c, t))
}

fn parse_opts() -> anyhow::Result<Opts> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let mut model = Model::documented();
    if let Some(ms) = value::<u64>(&args, "--read-latency-ms")? {
        model.read_latency = Duration::from_millis(ms);
    }
    if let Some(ms) = value::<u64>(&args, "--write-latency-ms")? {
        model.write_latency = Duration::from_millis(ms);
    }
    let rate = value::<f64>(&args, "--write-rate")?.unwrap_or(model.write_bucket.rate);
    let burst = value::<u64>(&args, "--write-burst")?.unwrap_or(model.write_bucket.burst);
    model.write_bucket = Bucket { burst, rate };
    let (cases, nat) = match value::<String>(&args, "--only")? {
        Some(list) => {
            let nat = list.split(',').filter_map(nat::Shape::named).collect();
            let cases = list.split(',').filter(|c| nat::Shape::named(c).is_none()).map(parse_case);
            (cases.collect::<anyhow::Result<_>>()?, nat)
        }
        None => (CASES.to_vec(), vec![nat::Shape::SMALL, nat::Shape::LARGE, nat::Shape::SECOND]),
    };
    Ok(Opts {
        trials: value(&args, "--trials")?,
        cases,
        nat,
        model,
        cluster: !flag("--no-cluster"),
        client_limits: !flag("--no-client-limits"),
    })
}

/// Default trials for N routes: 10 for small cases, 5 up to 500 routes, then 1.
fn default_trials(n: usize) -> usize {
    match n {
        0..=50 => 10,
        51..=500 => 5,
        _ => 1,
    }
}

/// The measured CIDRs `10.1.0.0/16` .. `10.C.0.0/16`.
fn cidrs(c: usize) -> Vec<String> {
    (1..=c).map(|k| format!("10.{k}.0.0/16")).collect()
}

/// Every route of the case, created in moto directly: the anchor on member_1, the rest on A.
async fn precreate(ec2: &Client, vpc: &Vpc, c: usize) -> anyhow::Result<()> {
    for rtb in &vpc.tables {
        ec2.create_route()
            .route_table_id(rtb)
            .destination_cidr_block(ANCHOR)
            .instance_id(&vpc.members[0].instance)
            .send()
            .await?;
        for cidr in cidrs(c) {
            ec2.create_route()
                .route_table_id(rtb)
                .destination_cidr_block(cidr)
                .instance_id(&vpc.routers[0].instance)
                .send()
                .await?;
        }
    }
    Ok(())
}

fn spec_json(vpc: &Vpc, c: usize) -> String {
    let pair: Vec<String> = vpc.routers.iter().map(|r| r.ip.to_string()).collect();
    let mut spec = serde_json::Map::new();
    for cidr in cidrs(c) {
        spec.insert(cidr, serde_json::json!(pair));
    }
    spec.insert(ANCHOR.into(), serde_json::json!(vpc.members.iter().map(|m| m.ip.to_string()).collect::<Vec<_>>()));
    serde_json::Value::Object(spec).to_string()
}

/// moto's time per ReplaceRoute: `MOTO_PROBES` sequential calls that leave the route on A.
async fn moto_write_time(ec2: &Client, vpc: &Vpc) -> anyhow::Result<Duration> {
    let t = Instant::now();
    for _ in 0..MOTO_PROBES {
        ec2.replace_route()
            .route_table_id(&vpc.tables[0])
            .destination_cidr_block("10.1.0.0/16")
            .instance_id(&vpc.routers[0].instance)
            .send()
            .await?;
    }
    Ok(t.elapsed() / MOTO_PROBES as u32)
}

/// Routes of the measured CIDRs per router IP (others under `None`), read from moto directly
/// in one DescribeRouteTables call.
async fn placement(ec2: &Client, vpc: &Vpc, c: usize) -> anyhow::Result<HashMap<Option<Ipv4Addr>, usize>> {
    let out =
        ec2.describe_route_tables().filters(Filter::builder().name("vpc-id").values(&vpc.id).build()).send().await?;
    let wanted = cidrs(c);
    let mut by_router = HashMap::new();
    for table in
        out.route_tables().iter().filter(|t| t.route_table_id().is_some_and(|id| vpc.tables.iter().any(|x| x == id)))
    {
        for r in
            table.routes().iter().filter(|r| r.destination_cidr_block().is_some_and(|d| wanted.iter().any(|w| w == d)))
        {
            let target = r.network_interface_id().or(r.instance_id()).and_then(|id| vpc.owners.get(id).copied());
            *by_router.entry(target).or_insert(0) += 1;
        }
    }
    Ok(by_router)
}

/// One case's world: moto, the VPC, the spec and health files.
struct World {
    c: usize,
    n: usize,
    rt: tokio::runtime::Runtime,
    ec2: Client,
    vpc: Vpc,
    spec: PathBuf,
    health: PathBuf,
    moto_write: Duration,
    _dir: tempfile::TempDir,
    moto: Moto,
}

impl World {
    fn build(c: usize, t: usize) -> anyhow::Result<World> {
        let moto = Moto::start()?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let ec2 = rt.block_on(world::client(&moto.endpoint));
        let vpc = rt.block_on(build_vpc(&ec2, t, 2))?;
        rt.block_on(precreate(&ec2, &vpc, c))?;
        let moto_write = rt.block_on(moto_write_time(&ec2, &vpc))?;
        let dir = tempfile::tempdir()?;
        let (spec, health) = (dir.path().join("spec.json"), dir.path().join("health.json"));
        std::fs::write(&spec, spec_json(&vpc, c))?;
        std::fs::write(&health, r#"{"failed": []}"#)?;
        Ok(World { c, n: c * t, rt, ec2, vpc, spec, health, moto_write, _dir: dir, moto })
    }

    /// The router carrying every measured route, if one does; (the answer, how long it took).
    fn carrier(&self) -> anyhow::Result<(Option<usize>, Duration)> {
        let t = Instant::now();
        let by = self.rt.block_on(placement(&self.ec2, &self.vpc, self.c))?;
        let took = t.elapsed();
        let all_on = |i: usize| by.get(&Some(self.vpc.routers[i].ip)).copied() == Some(self.n);
        Ok(((0..2).find(|&i| all_on(i)), took))
    }

    fn fail(&self, failed: &[Ipv4Addr]) -> anyhow::Result<()> {
        write_failed(&self.health, failed)
    }

    fn daemon_args(&self, opts: &Opts) -> Vec<String> {
        daemon_args(&self.vpc.id, &self.spec, &self.health, opts.client_limits.then_some(&opts.model))
    }
}

/// The vpcrouter processes of one mode.
enum Fleet {
    Single(Daemon),
    // Instances before etcd: dropped first.
    Cluster { insts: Vec<Instance>, _etcd: Etcd },
}

impl Fleet {
    fn start(w: &World, proxy: &FaultProxy, opts: &Opts, cluster: bool) -> anyhow::Result<Fleet> {
        let owned = w.daemon_args(opts);
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        if !cluster {
            return Ok(Fleet::Single(Daemon::start_via(&w.moto, &proxy.endpoint, &args)?));
        }
        let etcd = Etcd::start()?;
        let insts = ["a", "b", "c"]
            .iter()
            .map(|id| Instance::start_via(&w.moto, &proxy.endpoint, &etcd.endpoints(), id, 5, &args))
            .collect::<anyhow::Result<_>>()?;
        Ok(Fleet::Cluster { insts, _etcd: etcd })
    }

    fn daemons(&self) -> Vec<&Daemon> {
        match self {
            Fleet::Single(d) => vec![d],
            Fleet::Cluster { insts, .. } => insts.iter().map(|i| &i.daemon).collect(),
        }
    }

    /// The last lines of every log, for error messages.
    fn logs(&self) -> String {
        let tail = |d: &Daemon| {
            let log = d.log();
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        self.daemons()
            .iter()
            .map(|d| format!("--- {} ---\n{}", d.log_file().display(), tail(d)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Fails if a process has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        let exited = match self {
            Fleet::Single(d) => d.exited(),
            Fleet::Cluster { insts, .. } => insts.iter_mut().find_map(|i| i.daemon.exited()),
        };
        match exited {
            Some(s) => anyhow::bail!("vpcrouter exited ({s})\n{}", self.logs()),
            None => Ok(()),
        }
    }

    /// Waits until there is one leader (cluster) and the writer has reconciled once.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let port = match &*self {
            Fleet::Single(d) => d.port,
            Fleet::Cluster { insts, .. } => {
                let view: Vec<&Instance> = insts.iter().collect();
                let leader = wait_one_leader(&view, Duration::from_secs(60))
                    .map_err(|e| anyhow::anyhow!("{e}\n{}", self.logs()))?;
                insts[leader].daemon.port
            }
        };
        let ready = wait_for(Duration::from_secs(120), "the first reconcile", || {
            status(port)?["last_reconcile"].is_object().then_some(())
        });
        self.check_alive()?;
        ready.map_err(|e| anyhow::anyhow!("{e}\n{}", self.logs()))
    }

    /// The writer's last failover time: the instance that logged the most failovers.
    fn last_failover(&self) -> Option<Duration> {
        let docs: Vec<serde_json::Value> = self.daemons().iter().filter_map(|d| status(d.port)).collect();
        let writer = docs.iter().max_by_key(|s| s["counters"]["failovers"].as_u64().unwrap_or(0))?;
        writer["last_failover"]["seconds"].as_f64().map(Duration::from_secs_f64)
    }

    /// Waits until every process sees no failed host.
    fn wait_all_healthy(&self) -> anyhow::Result<()> {
        let ports: Vec<u16> = self.daemons().iter().map(|d| d.port).collect();
        wait_for(Duration::from_secs(30), "every instance to see no failed host", || {
            ports
                .iter()
                .all(|&p| status(p).is_some_and(|s| s["failed_hosts"].as_array().is_some_and(Vec::is_empty)))
                .then_some(())
        })
        .map_err(|e| anyhow::anyhow!("{e}\n{}", self.logs()))
    }
}

/// One failover.
struct Trial {
    took: Duration,
    /// vpcrouter's own figure (`/status` `last_failover.seconds` of the writer): from the
    /// health report reaching the engine to the last write acknowledged. Leaves out the
    /// `file` plugin's read of the health file and the polling.
    engine: Option<Duration>,
    tally: Tally,
    polls: u32,
    poll_time: Duration,
}

/// Fails router `from` and waits until every route is on `to`.
fn trial(
    w: &World,
    proxy: &FaultProxy,
    fleet: &mut Fleet,
    from: usize,
    to: usize,
    timeout: Duration,
) -> anyhow::Result<Trial> {
    let (failed, want) = (w.vpc.routers[from].ip, w.vpc.routers[to].ip);
    // Before the write: the `file` plugin reads a file renamed into place at once, so the
    // first write can reach the proxy before `fail` returns.
    let t0 = Instant::now();
    w.fail(&[failed])?;
    let (mut polls, mut poll_time) = (0u32, Duration::ZERO);
    let took = loop {
        let p = Instant::now();
        let by = w.rt.block_on(placement(&w.ec2, &w.vpc, w.c))?;
        let pd = p.elapsed();
        (polls, poll_time) = (polls + 1, poll_time + pd);
        if by.get(&Some(want)).copied() == Some(w.n) {
            break t0.elapsed();
        }
        if t0.elapsed() > timeout {
            fleet.check_alive()?;
            anyhow::bail!(
                "{failed} failed: after {timeout:?} the routes are {by:?} (want all {} on {want})\n{}",
                w.n,
                fleet.logs()
            );
        }
        std::thread::sleep(pd.clamp(Duration::from_millis(10), Duration::from_secs(1)));
    };
    std::thread::sleep(Duration::from_secs(1)); // late writes are counted too
    let engine = fleet.last_failover();
    Ok(Trial { took, engine, tally: proxy.tally_since(t0), polls, poll_time })
}

/// Runs `trials` failovers in one mode; the routes start on one router.
fn run_mode(w: &World, proxy: &FaultProxy, opts: &Opts, cluster: bool, trials: usize) -> anyhow::Result<Vec<Trial>> {
    proxy.set_model(Some(opts.model))?; // full buckets
    proxy.reset_counts();
    let since = Instant::now();
    let mut fleet = Fleet::start(w, proxy, opts, cluster)?;
    fleet.wait_ready()?;
    let start_writes = proxy.tally_since(since).writes;
    if start_writes > 0 {
        eprintln!("  warning: {start_writes} writes at start-up (expected none)");
    }
    let timeout = 3 * opts.model.write_bound(w.n as u64) + Duration::from_secs(30);
    let mut out: Vec<Trial> = Vec::new();
    for k in 0..trials {
        let pause =
            out.last().map_or(Duration::ZERO, |t| refill_time(&opts.model, &t.tally)).max(Duration::from_secs(1));
        std::thread::sleep(pause);
        let from = w.carrier()?.0.context("the routes are not all on one router")?;
        let t = trial(w, proxy, &mut fleet, from, 1 - from, timeout).with_context(|| format!("trial {}", k + 1))?;
        eprintln!(
            "  trial {}: {} ms, {} writes, {} throttled",
            k + 1,
            t.took.as_millis(),
            t.tally.writes,
            t.tally.throttled_writes + t.tally.throttled_reads
        );
        out.push(t);
        w.fail(&[])?;
        fleet.wait_all_healthy()?;
    }
    Ok(out)
}

/// Prints one table row.
/// Prints one table row: `case` with `n` routes in `mode`; moto took `moto_write` per write.
fn row(case: &str, n: usize, mode: &str, model: &Model, moto_write: Duration, trials: &[Trial]) {
    let mut took: Vec<Duration> = trials.iter().map(|t| t.took).collect();
    took.sort();
    let median = quantile(&took, 0.5);
    let bound = model.write_bound(n as u64);
    let moto_total = moto_write * n as u32;
    let writes: Vec<u64> = trials.iter().map(|t| t.tally.writes).collect();
    let throttled: Vec<u64> = trials.iter().map(|t| t.tally.throttled_writes + t.tally.throttled_reads).collect();
    let ratio = |d: Duration| median.as_secs_f64() / d.as_secs_f64();
    let mut engine: Vec<Duration> = trials.iter().filter_map(|t| t.engine).collect();
    engine.sort();
    let (engine_median, engine_p99, engine_ratio) = if engine.is_empty() {
        ("-".to_string(), "-".to_string(), "-".to_string())
    } else {
        let m = quantile(&engine, 0.5);
        (ms(m), ms(quantile(&engine, 0.99)), format!("{:.2}", m.as_secs_f64() / (bound + moto_total).as_secs_f64()))
    };
    println!(
        "| {case} | {n} | {mode} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {} | {:.2} | {engine_median} | {engine_p99} | {engine_ratio} |",
        took.len(), ms(median), ms(quantile(&took, 0.99)), ms(took[0]), ms(took[took.len() - 1]),
        spread(&writes), spread(&throttled), ms(bound), ratio(bound), moto_write.as_secs_f64() * 1e3, ms(moto_total), ratio(bound + moto_total),
    );
}

/// A note on one case, printed after the table.
struct Note {
    case: String,
    build: Duration,
    moto_write: Duration,
    polls: u32,
    poll_time: Duration,
}

fn run_case(c: usize, t: usize, opts: &Opts, notes: &mut Vec<Note>) -> anyhow::Result<()> {
    let started = Instant::now();
    let w = World::build(c, t)?;
    let build = started.elapsed();
    let proxy = FaultProxy::start(&w.moto.endpoint)?;
    let trials = opts.trials.unwrap_or_else(|| default_trials(w.n));
    let mut modes = vec![("single instance", false)];
    if opts.cluster {
        modes.push(("cluster of 3", true));
    }
    let (mut polls, mut poll_time) = (0, Duration::ZERO);
    for (label, cluster) in modes {
        eprintln!("{c}×{t}, {label}: {trials} trials (world built in {:.1} s)", build.as_secs_f64());
        let results = run_mode(&w, &proxy, opts, cluster, trials).with_context(|| format!("{c}×{t}, {label}"))?;
        row(&format!("{c}×{t}"), w.n, label, &opts.model, w.moto_write, &results);
        polls += results.iter().map(|r| r.polls).sum::<u32>();
        poll_time += results.iter().map(|r| r.poll_time).sum::<Duration>();
    }
    notes.push(Note { case: format!("{c}×{t}"), build, moto_write: w.moto_write, polls, poll_time });
    Ok(())
}

/// Fails early when the binary lacks the client-limit flags this run would pass.
fn check_binary(opts: &Opts) -> anyhow::Result<()> {
    let (_, help, _) = daemon::run_once(&["--help"]);
    anyhow::ensure!(
        !opts.client_limits || help.contains("--ec2-write-burst"),
        "{} has no --ec2-write-burst option: build a newer vpcrouter, or pass --no-client-limits",
        daemon::binary().display()
    );
    Ok(())
}

fn run() -> anyhow::Result<()> {
    let opts = parse_opts()?;
    check_binary(&opts)?;
    let (m, r, w) = (opts.model, opts.model.read_bucket, opts.model.write_bucket);
    println!("\nFailover through the EC2 model (reads {} ms, {} burst / {} per s; writes {} ms, {} burst / {} per s), client limits {}:\n",
        m.read_latency.as_millis(), r.burst, r.rate, m.write_latency.as_millis(), w.burst, w.rate, if opts.client_limits { "on (= the model's buckets)" } else { "off" });
    println!("| C×T | N routes | mode | trials | median ms | p99 ms | min ms | max ms | writes per trial | throttled per trial | bound ms | median / bound | moto ms per write | N × moto ms | median / (bound + N × moto) | vpcrouter median ms | vpcrouter p99 ms | vpcrouter median / (bound + N × moto) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut notes = Vec::new();
    for &(c, t) in &opts.cases {
        run_case(c, t, &opts, &mut notes)?;
    }
    for &shape in &opts.nat {
        nat::run(shape, &opts, &mut notes)?;
    }
    println!("\n| C×T | world built in s | moto ms per ReplaceRoute (100, sequential, no proxy) | polls | mean poll (DescribeRouteTables of the VPC) ms |");
    println!("|---|---|---|---|---|");
    for n in notes {
        let mean = n.poll_time.as_secs_f64() * 1e3 / f64::from(n.polls.max(1));
        println!(
            "| {} | {:.1} | {:.2} | {} | {:.1} |",
            n.case,
            n.build.as_secs_f64(),
            n.moto_write.as_secs_f64() * 1e3,
            n.polls,
            mean
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-failover-ec2: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The HA NAT case (see the header): one zone's NAT fails; only that zone's tables move.
mod nat {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use aws_sdk_ec2::types::Filter;
    use aws_sdk_ec2::Client;
    use vpcrouter_tests::bench::{daemon_args, status, write_failed};
    use vpcrouter_tests::daemon::Daemon;
    use vpcrouter_tests::faultproxy::FaultProxy;
    use vpcrouter_tests::moto::Moto;
    use vpcrouter_tests::natworld::{self, NatWorld};
    use vpcrouter_tests::{wait_for, world};

    use super::{Note, Opts, Trial, MOTO_PROBES};

    /// A NAT deployment's size.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Shape {
        /// `--only` names it so.
        name: &'static str,
        /// Zones, one NAT each.
        zones: usize,
        /// Private tables per zone.
        tables: usize,
        /// CIDRs besides `0.0.0.0/0`.
        others: usize,
        /// The next zone's NAT fails too, [`SECOND_AFTER`] into the first zone's failover.
        second: bool,
    }

    /// When the second NAT fails, after the first (`nat-second`).
    const SECOND_AFTER: Duration = Duration::from_secs(2);

    impl Shape {
        /// The issue's case: 3 zones × 20 private tables, 11 CIDRs.
        pub const LARGE: Shape = Shape { name: "nat", zones: 3, tables: 20, others: 10, second: false };
        /// A common deployment: 3 zones × 2 private tables, the default route alone.
        pub const SMALL: Shape = Shape { name: "nat-small", zones: 3, tables: 2, others: 0, second: false };
        /// [`Shape::LARGE`], and the next zone's NAT fails during the first zone's failover
        /// (a zone outage takes routers one after another).
        pub const SECOND: Shape = Shape { name: "nat-second", second: true, ..Shape::LARGE };

        /// The shape `--only` names `name`, if any.
        pub fn named(name: &str) -> Option<Shape> {
            [Shape::LARGE, Shape::SMALL, Shape::SECOND].into_iter().find(|s| s.name == name)
        }

        /// `0.0.0.0/0` and `10.1.0.0/16` .. `10.K.0.0/16`.
        fn cidrs(&self) -> Vec<String> {
            std::iter::once("0.0.0.0/0".to_string())
                .chain((1..=self.others).map(|k| format!("10.{k}.0.0/16")))
                .collect()
        }

        /// The routes of one zone: those a failover of its NAT moves.
        fn n(&self) -> usize {
            self.tables * (self.others + 1)
        }

        /// The routes that must move in a trial: one zone's, or two with `second`.
        fn moving(&self) -> usize {
            self.n() * if self.second { 2 } else { 1 }
        }
    }

    /// Puts every private route on its own zone's NAT, in moto directly (created, or
    /// replaced when a trial moved it).
    async fn own_nats(ec2: &Client, w: &NatWorld, shape: Shape) -> anyhow::Result<()> {
        let filter = Filter::builder().name("vpc-id").values(&w.vpc_id).build();
        let tables = ec2.describe_route_tables().filters(filter).send().await?;
        for zone in &w.zones {
            for rtb in &zone.private_tables {
                let table = tables.route_tables().iter().find(|t| t.route_table_id() == Some(rtb.as_str()));
                for cidr in shape.cidrs() {
                    let route =
                        table.and_then(|t| t.routes().iter().find(|r| r.destination_cidr_block() == Some(&cidr)));
                    let on =
                        route.and_then(|r| r.network_interface_id().or(r.instance_id())).and_then(|id| w.nat_of(id));
                    match (route, on) {
                        (Some(_), Some(ip)) if ip == zone.nat.ip => {}
                        (Some(_), _) => {
                            let call = ec2.replace_route().route_table_id(rtb).destination_cidr_block(&cidr);
                            call.network_interface_id(&zone.nat.eni).send().await?;
                        }
                        (None, _) => {
                            let call = ec2.create_route().route_table_id(rtb).destination_cidr_block(&cidr);
                            call.network_interface_id(&zone.nat.eni).send().await?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Per zone, the routes of its private tables per router (`None`: elsewhere), read
    /// from moto in one DescribeRouteTables call.
    async fn placement(
        ec2: &Client,
        w: &NatWorld,
        shape: Shape,
    ) -> anyhow::Result<Vec<BTreeMap<Option<Ipv4Addr>, usize>>> {
        let filter = Filter::builder().name("vpc-id").values(&w.vpc_id).build();
        let out = ec2.describe_route_tables().filters(filter).send().await?;
        let wanted = shape.cidrs();
        let mut zones = Vec::new();
        for zone in &w.zones {
            let mut by = BTreeMap::new();
            for t in out
                .route_tables()
                .iter()
                .filter(|t| zone.private_tables.iter().any(|p| Some(p.as_str()) == t.route_table_id()))
            {
                for r in t
                    .routes()
                    .iter()
                    .filter(|r| r.destination_cidr_block().is_some_and(|d| wanted.iter().any(|c| c == d)))
                {
                    let on = r.network_interface_id().or(r.instance_id()).and_then(|id| w.nat_of(id));
                    *by.entry(on).or_insert(0) += 1;
                }
            }
            zones.push(by);
        }
        Ok(zones)
    }

    struct Case {
        shape: Shape,
        rt: tokio::runtime::Runtime,
        ec2: Client,
        w: NatWorld,
        spec: PathBuf,
        health: PathBuf,
        moto_write: Duration,
        _dir: tempfile::TempDir,
        moto: Moto,
    }

    impl Case {
        fn build(shape: Shape) -> anyhow::Result<Case> {
            let moto = Moto::start()?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let ec2 = rt.block_on(world::client(&moto.endpoint));
            let w = rt.block_on(natworld::build(&ec2, shape.zones, shape.tables, &[]))?;
            rt.block_on(own_nats(&ec2, &w, shape))?;
            let moto_write = rt.block_on(async {
                let (rtb, nat) = (&w.zones[0].private_tables[0], &w.zones[0].nat.eni);
                let t = Instant::now();
                for _ in 0..MOTO_PROBES {
                    let call = ec2.replace_route().route_table_id(rtb).destination_cidr_block("0.0.0.0/0");
                    call.network_interface_id(nat).send().await?;
                }
                anyhow::Ok(t.elapsed() / MOTO_PROBES as u32)
            })?;
            let dir = tempfile::tempdir()?;
            let (spec, health) = (dir.path().join("spec.json"), dir.path().join("health.json"));
            let names = shape.cidrs();
            std::fs::write(&spec, w.spec(&names.iter().map(String::as_str).collect::<Vec<_>>()))?;
            write_failed(&health, &[])?;
            Ok(Case { shape, rt, ec2, w, spec, health, moto_write, _dir: dir, moto })
        }

        fn start(&self, proxy: &FaultProxy, opts: &Opts) -> anyhow::Result<Daemon> {
            let mut args =
                daemon_args(&self.w.vpc_id, &self.spec, &self.health, opts.client_limits.then_some(&opts.model));
            args.extend(["--route-table-tag", "vpcrouter:managed=true", "--zone-affinity"].map(String::from));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let d = Daemon::start_via(&self.moto, &proxy.endpoint, &args)?;
            wait_for(Duration::from_secs(120), "the first reconcile", || {
                status(d.port)?["last_reconcile"].is_object().then_some(())
            })
            .map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))?;
            Ok(d)
        }

        /// Fails zone `z`'s NAT (and with `second` the next zone's, [`SECOND_AFTER`] later)
        /// and waits until none of the failed zones' routes is on a failed NAT.
        fn trial(&self, proxy: &FaultProxy, d: &Daemon, z: usize, timeout: Duration) -> anyhow::Result<Trial> {
            let n = self.shape.n();
            let failing: Vec<usize> = if self.shape.second { vec![z, (z + 1) % self.shape.zones] } else { vec![z] };
            let nats: Vec<Ipv4Addr> = failing.iter().map(|&f| self.w.zones[f].nat.ip).collect();
            write_failed(&self.health, &nats[..1])?;
            let t0 = Instant::now();
            let mut second = self.shape.second;
            let (mut polls, mut poll_time) = (0u32, Duration::ZERO);
            let took = loop {
                if second && t0.elapsed() >= SECOND_AFTER {
                    write_failed(&self.health, &nats)?;
                    second = false;
                }
                let p = Instant::now();
                let zones = self.rt.block_on(placement(&self.ec2, &self.w, self.shape))?;
                let pd = p.elapsed();
                (polls, poll_time) = (polls + 1, poll_time + pd);
                let moved = |f: usize| {
                    zones[f]
                        .iter()
                        .filter(|(on, _)| on.is_some_and(|ip| !nats.contains(&ip)))
                        .map(|(_, k)| k)
                        .sum::<usize>()
                };
                if !second && failing.iter().all(|&f| moved(f) == n) {
                    // Every other zone still on its own NAT.
                    for (i, by) in zones.iter().enumerate().filter(|(i, _)| !failing.contains(i)) {
                        let own = by.get(&Some(self.w.zones[i].nat.ip)).copied().unwrap_or(0);
                        anyhow::ensure!(own == n, "zone {i}'s routes moved: {by:?}");
                    }
                    break t0.elapsed();
                }
                anyhow::ensure!(t0.elapsed() < timeout, "after {timeout:?}: {zones:?}\n{}", d.log());
                std::thread::sleep(pd.clamp(Duration::from_millis(10), Duration::from_secs(1)));
            };
            std::thread::sleep(Duration::from_secs(1)); // late writes are counted too
            let engine =
                status(d.port).and_then(|s| s["last_failover"]["seconds"].as_f64()).map(Duration::from_secs_f64);
            Ok(Trial { took, engine, tally: proxy.tally_since(t0), polls, poll_time })
        }
    }

    /// Runs the NAT case of `shape`: trials fail zone a, b, c, ... in turn.
    pub fn run(shape: Shape, opts: &Opts, notes: &mut Vec<Note>) -> anyhow::Result<()> {
        let started = Instant::now();
        let case = Case::build(shape)?;
        let build = started.elapsed();
        let proxy = FaultProxy::start(&case.moto.endpoint)?;
        let trials = opts.trials.unwrap_or(if shape.n() > 50 { 3 } else { 9 });
        let timeout = 3 * opts.model.write_bound(shape.moving() as u64) + Duration::from_secs(30);
        eprintln!(
            "{} ({} zones × {} tables × {} CIDRs): {trials} trials (world built in {:.1} s)",
            shape.name,
            shape.zones,
            shape.tables,
            shape.others + 1,
            build.as_secs_f64()
        );
        let mut results: Vec<Trial> = Vec::new();
        for k in 0..trials {
            case.rt.block_on(own_nats(&case.ec2, &case.w, shape))?;
            write_failed(&case.health, &[])?;
            let since = Instant::now();
            let d = case.start(&proxy, opts)?;
            let start_writes = proxy.tally_since(since).writes;
            if start_writes > 0 {
                eprintln!("  warning: {start_writes} writes at start-up (expected none)");
            }
            std::thread::sleep(Duration::from_secs(1));
            proxy.set_model(Some(opts.model))?; // full buckets, as after a quiet while
            let z = k % shape.zones;
            let t = case.trial(&proxy, &d, z, timeout)?;
            eprintln!(
                "  trial {} (zone {}): {} ms, {} writes, {} throttled",
                k + 1,
                case.w.zones[z].name,
                t.took.as_millis(),
                t.tally.writes,
                t.tally.throttled_writes + t.tally.throttled_reads
            );
            results.push(t);
        }
        let fails = if shape.second { "a zone's NAT fails, the next one's 2 s later" } else { "one zone's NAT fails" };
        let name = format!(
            "{}: {} zones × {} tables, {} CIDRs, {fails}",
            shape.name,
            shape.zones,
            shape.tables,
            shape.others + 1
        );
        super::row(&name, shape.moving(), "single instance", &opts.model, case.moto_write, &results);
        let polls = results.iter().map(|r| r.polls).sum();
        let poll_time = results.iter().map(|r| r.poll_time).sum();
        notes.push(Note { case: shape.name.into(), build, moto_write: case.moto_write, polls, poll_time });
        Ok(())
    }
}
