//! Failover time through a model of real EC2 (`vpcrouter_tests::ec2model`: ~100 ms per call,
//! token-bucket throttling), as a user on EC2 would see it: from marking the router failed
//! until moto shows every route on the other router.
//!
//! `bench-failover-ec2 [--trials N] [--only 4x10,20x10,nat,nat-small,nat-second,second,lagging] [--write-rate R] [--write-burst W]
//! [--read-latency-ms MS] [--write-latency-ms MS] [--no-cluster] [--no-client-limits] [--hook]`
//! (run by `make bench` after bench-cluster).
//!
//! `--hook` adds a mode to each `CxT` case: the single instance with an exec notifier whose
//! command hangs (`sleep 30`, killed after 60 s), so every event of the failover queues
//! behind it; the failover must take as long as without it (notifiers never hold up the
//! engine).
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
//! Two cases test what happens when the facts change under a failover (module `midway`,
//! their own table after the others; each trial restarts vpcrouter on routes put back on A
//! in moto directly, and refills the model's buckets):
//!
//! * `second`: 20 CIDRs × 10 tables (N = 200 routes) on router A, each CIDR to `[A, B, C]`;
//!   C is marked failed at first, so that A's routes all go to B (vpcrouter picks uniformly
//!   among healthy candidates). A fails (t0); 2 s later B fails and C is back (B's report,
//!   tB). Reported: writes onto B that reached the proxy later than tB + one write latency
//!   (target 0); the time from t0 until no route is on A or B (moto polled directly); its
//!   ratio to the bound, (routes on A or B at tB) / write rate + one write latency (target
//!   ≤ 1.3); the route writes per trial. Default 3 trials.
//! * `lagging`: reads lag writes by 2.5 s (the proxy's lagging-reads mode: until 2.5 s after
//!   the last write, route table reads answer the view from before the first), 4 CIDRs × 10
//!   tables (N = 40) on A, each to `[A, B, C]`, all healthy; vpcrouter runs with
//!   `--consistency-window 5` (when the binary has it). A fails: the time until no route is
//!   on A, and the route writes from t0 until 2.5 s + 5 s + 1 s after that, beyond the N
//!   needed (target 0). Default 5 trials.
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

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_sdk_ec2::Client;
use vpcrouter_tests::bench::{daemon_args, ms, quantile, refill_time, spread, status, value, Bed, Vpc};
use vpcrouter_tests::cluster::{wait_one_leader, Instance};
use vpcrouter_tests::daemon::{self, Daemon};
use vpcrouter_tests::ec2model::{Bucket, Model};
use vpcrouter_tests::etcd::Etcd;
use vpcrouter_tests::faultproxy::{FaultProxy, Tally};
use vpcrouter_tests::wait_for;

/// The default cases, C × T.
const CASES: [(usize, usize); 4] = [(1, 2), (4, 10), (20, 10), (100, 20)];
/// ReplaceRoute calls timed against moto per case.
const MOTO_PROBES: usize = 100;

/// Command-line options.
struct Opts {
    trials: Option<usize>,
    cases: Vec<(usize, usize)>,
    /// The NAT cases to run (`nat`, `nat-small`).
    nat: Vec<nat::Shape>,
    /// The `second` and `lagging` cases to run.
    midway: Vec<midway::Case>,
    model: Model,
    cluster: bool,
    client_limits: bool,
    /// `--hook`: also run each `CxT` case with a hanging exec hook.
    hook: bool,
}

/// The notifier of the `--hook` mode: an exec hook that hangs for the whole run.
const HANGING_HOOK: [&str; 6] =
    ["--notify", "exec", "--notify-exec-command", "sleep 30", "--notify-exec-timeout", "60"];

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
    let (cases, nat, midway) = match value::<String>(&args, "--only")? {
        Some(list) => {
            let nat = list.split(',').filter_map(nat::Shape::named).collect();
            let midway = list.split(',').filter_map(midway::Case::named).collect();
            let named = |c: &&str| nat::Shape::named(c).is_some() || midway::Case::named(c).is_some();
            let cases = list.split(',').filter(|c| !named(c)).map(parse_case);
            (cases.collect::<anyhow::Result<_>>()?, nat, midway)
        }
        None => (
            CASES.to_vec(),
            vec![nat::Shape::SMALL, nat::Shape::LARGE, nat::Shape::SECOND],
            vec![midway::Case::Second, midway::Case::Lagging],
        ),
    };
    Ok(Opts {
        trials: value(&args, "--trials")?,
        cases,
        nat,
        midway,
        model,
        cluster: !flag("--no-cluster"),
        client_limits: !flag("--no-client-limits"),
        hook: flag("--hook"),
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

/// One case's world: a [`Bed`] with two routers, and moto's own time per write.
struct World {
    bed: Bed,
    n: usize,
    moto_write: Duration,
}

impl World {
    fn build(c: usize, t: usize) -> anyhow::Result<World> {
        let bed = Bed::build(c, t, 2)?;
        let moto_write = bed.rt.block_on(moto_write_time(&bed.ec2, &bed.vpc))?;
        Ok(World { n: bed.n(), bed, moto_write })
    }

    /// The router carrying every measured route, if one does; (the answer, how long it took).
    fn carrier(&self) -> anyhow::Result<(Option<usize>, Duration)> {
        let t = Instant::now();
        let by = self.bed.placement()?;
        let took = t.elapsed();
        let all_on = |i: usize| by.get(&Some(self.bed.router(i))).copied() == Some(self.n);
        Ok(((0..2).find(|&i| all_on(i)), took))
    }

    fn fail(&self, failed: &[Ipv4Addr]) -> anyhow::Result<()> {
        self.bed.fail(failed)
    }

    fn daemon_args(&self, opts: &Opts) -> Vec<String> {
        let b = &self.bed;
        daemon_args(&b.vpc.id, &b.spec, &b.health, opts.client_limits.then_some(&opts.model))
    }
}

/// How the vpcrouter processes of a case run.
#[derive(Clone, Copy)]
enum Mode {
    /// One instance.
    Single,
    /// One instance whose exec notifier hangs (`--hook`).
    HangingHook,
    /// Three instances on etcd.
    Cluster,
}

/// The vpcrouter processes of one mode.
enum Fleet {
    Single(Daemon),
    // Instances before etcd: dropped first.
    Cluster { insts: Vec<Instance>, _etcd: Etcd },
}

impl Fleet {
    fn start(w: &World, proxy: &FaultProxy, opts: &Opts, mode: Mode) -> anyhow::Result<Fleet> {
        let daemon = || Daemon::builder(&w.bed.moto).endpoint(&proxy.endpoint).args(w.daemon_args(opts));
        match mode {
            Mode::Single => return Ok(Fleet::Single(daemon().start()?)),
            Mode::HangingHook => return Ok(Fleet::Single(daemon().args(HANGING_HOOK).start()?)),
            Mode::Cluster => {}
        }
        let etcd = Etcd::start()?;
        let insts = ["a", "b", "c"]
            .iter()
            .map(|id| Instance::start(daemon(), &etcd.endpoints(), id, 5))
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
    let (failed, want) = (w.bed.router(from), w.bed.router(to));
    // Before the write: the `file` plugin reads a file renamed into place at once, so the
    // first write can reach the proxy before `fail` returns.
    let t0 = Instant::now();
    w.fail(&[failed])?;
    let (mut polls, mut poll_time) = (0u32, Duration::ZERO);
    let took = loop {
        let p = Instant::now();
        let by = w.bed.placement()?;
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
fn run_mode(w: &World, proxy: &FaultProxy, opts: &Opts, mode: Mode, trials: usize) -> anyhow::Result<Vec<Trial>> {
    proxy.set_model(Some(opts.model))?; // full buckets
    proxy.reset_counts();
    let since = Instant::now();
    let mut fleet = Fleet::start(w, proxy, opts, mode)?;
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
    if let Fleet::Single(d) = &mut fleet {
        let t = Instant::now();
        let status = d.stop(Duration::from_secs(30))?;
        eprintln!("  SIGTERM: exited ({status}) in {} ms", t.elapsed().as_millis());
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
    let proxy = FaultProxy::start(&w.bed.moto.endpoint)?;
    let trials = opts.trials.unwrap_or_else(|| default_trials(w.n));
    let mut modes = vec![("single instance", Mode::Single)];
    if opts.hook {
        modes.push(("single, hanging exec hook", Mode::HangingHook));
    }
    if opts.cluster {
        modes.push(("cluster of 3", Mode::Cluster));
    }
    let (mut polls, mut poll_time) = (0, Duration::ZERO);
    for (label, mode) in modes {
        eprintln!("{c}×{t}, {label}: {trials} trials (world built in {:.1} s)", build.as_secs_f64());
        let results = run_mode(&w, &proxy, opts, mode, trials).with_context(|| format!("{c}×{t}, {label}"))?;
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
    midway::run_all(&opts)?;
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
        /// The case: 3 zones × 20 private tables, 11 CIDRs.
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
            let d = Daemon::builder(&self.moto).endpoint(&proxy.endpoint).args(args).start()?;
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

/// The facts changing under a failover (see the header): a second router failing
/// (`second`) and reads lagging writes (`lagging`).
mod midway {
    use std::collections::HashMap;
    use std::net::Ipv4Addr;
    use std::time::{Duration, Instant};

    use anyhow::Context;
    use vpcrouter_tests::bench::{daemon_args, ms, put_back, quantile, spread, Bed};
    use vpcrouter_tests::daemon::{self, Daemon};
    use vpcrouter_tests::faultproxy::{Call, FaultProxy};

    use super::Opts;

    /// A case of this module.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Case {
        /// B, the failover's target, fails [`SECOND_AFTER`] into it.
        Second,
        /// Reads lag writes by [`LAG`].
        Lagging,
    }

    impl Case {
        /// The case `--only` names `name`, if any.
        pub fn named(name: &str) -> Option<Case> {
            [Case::Second, Case::Lagging].into_iter().find(|c| c.name() == name)
        }

        fn name(self) -> &'static str {
            match self {
                Case::Second => "second",
                Case::Lagging => "lagging",
            }
        }

        /// C × T.
        fn shape(self) -> (usize, usize) {
            match self {
                Case::Second => (20, 10),
                Case::Lagging => (4, 10),
            }
        }

        fn default_trials(self) -> usize {
            match self {
                Case::Second => 3,
                Case::Lagging => 5,
            }
        }
    }

    /// When B fails, after A (`second`).
    const SECOND_AFTER: Duration = Duration::from_secs(2);
    /// How long reads lag writes (`lagging`).
    const LAG: Duration = Duration::from_millis(2500);
    /// vpcrouter's `--consistency-window` (`lagging`).
    const WINDOW: Duration = Duration::from_secs(5);

    /// One trial's figures.
    struct Trial {
        /// From t0 until no measured route is on a failed router.
        took: Duration,
        /// The trial's bound (see the header).
        bound: Duration,
        /// Route writes forwarded from t0 to the trial's end.
        writes: usize,
        /// Writes that should not be: onto B after its report + one write latency
        /// (`second`), beyond N (`lagging`).
        wrong: usize,
        /// Calls throttled (reads and writes).
        throttled: u64,
        /// Reads answered from the lagged view.
        lagged: u64,
    }

    /// Routes on router `ip` in a placement.
    fn on(by: &HashMap<Option<Ipv4Addr>, usize>, ip: Ipv4Addr) -> usize {
        by.get(&Some(ip)).copied().unwrap_or(0)
    }

    /// Route writes forwarded since `t0`.
    fn route_writes(calls: &[Call], t0: Instant) -> usize {
        calls.iter().filter(|c| c.at >= t0 && c.is_route_write() && c.forwarded()).count()
    }

    /// vpcrouter on `bed` through `proxy`, plus `extra` options; returns after its first
    /// reconcile and a second, with the model's buckets full.
    fn start(bed: &Bed, proxy: &FaultProxy, opts: &Opts, extra: &[&str]) -> anyhow::Result<Daemon> {
        let mut args = daemon_args(&bed.vpc.id, &bed.spec, &bed.health, opts.client_limits.then_some(&opts.model));
        args.extend(extra.iter().map(|a| a.to_string()));
        bed.start_daemon(proxy, &args, opts.model, Duration::from_secs(1))
    }

    /// `second`: A fails, B [`SECOND_AFTER`] later (C back); until every route is on C.
    fn second(bed: &Bed, proxy: &FaultProxy, d: &Daemon, opts: &Opts, timeout: Duration) -> anyhow::Result<Trial> {
        let (a, b, c) = (bed.router(0), bed.router(1), bed.router(2));
        let t0 = Instant::now();
        bed.fail(&[a, c])?;
        let mut report: Option<(Instant, usize)> = None;
        let took = loop {
            if report.is_none() && t0.elapsed() >= SECOND_AFTER {
                bed.fail(&[a, b])?;
                let tb = Instant::now();
                let by = bed.placement()?;
                report = Some((tb, on(&by, a) + on(&by, b)));
            }
            let p = Instant::now();
            let by = bed.placement()?;
            let pd = p.elapsed();
            if report.is_some() && on(&by, c) == bed.n() {
                break t0.elapsed();
            }
            anyhow::ensure!(t0.elapsed() < timeout, "after {timeout:?}: {by:?}\n{}", d.log());
            let next = pd.clamp(Duration::from_millis(10), Duration::from_secs(1));
            let to_b = (t0 + SECOND_AFTER).saturating_duration_since(Instant::now());
            std::thread::sleep(if report.is_none() { next.min(to_b) } else { next });
        };
        std::thread::sleep(Duration::from_secs(1)); // late writes are counted too
        let (tb, at_report) = report.context("B was never failed")?;
        let b_ids = bed.ids(1);
        let calls = proxy.calls();
        let late = calls.iter().filter(|c| {
            c.at > tb + opts.model.write_latency && c.is_route_write() && c.target().is_some_and(|t| b_ids.contains(&t))
        });
        let tally = proxy.tally_since(t0);
        let per_write = Duration::from_secs_f64(at_report as f64 / opts.model.write_bucket.rate);
        Ok(Trial {
            took,
            bound: per_write + opts.model.write_latency,
            writes: route_writes(&calls, t0),
            wrong: late.count(),
            throttled: tally.throttled_reads + tally.throttled_writes,
            lagged: tally.lagged_reads,
        })
    }

    /// `lagging`: A fails; until no route is on A, and the writes until [`LAG`] +
    /// [`WINDOW`] + 1 s after.
    fn lagging(bed: &Bed, proxy: &FaultProxy, d: &Daemon, opts: &Opts, timeout: Duration) -> anyhow::Result<Trial> {
        let a = bed.router(0);
        let t0 = Instant::now();
        bed.fail(&[a])?;
        let took = loop {
            let p = Instant::now();
            let by = bed.placement()?;
            let pd = p.elapsed();
            if on(&by, a) == 0 && by.iter().filter(|(k, _)| k.is_some()).map(|(_, v)| v).sum::<usize>() == bed.n() {
                break t0.elapsed();
            }
            anyhow::ensure!(t0.elapsed() < timeout, "after {timeout:?}: {by:?}\n{}", d.log());
            std::thread::sleep(pd.clamp(Duration::from_millis(10), Duration::from_secs(1)));
        };
        std::thread::sleep(LAG + WINDOW + Duration::from_secs(1));
        let writes = route_writes(&proxy.calls(), t0);
        let tally = proxy.tally_since(t0);
        Ok(Trial {
            took,
            bound: opts.model.write_bound(bed.n() as u64),
            writes,
            wrong: writes.saturating_sub(bed.n()),
            throttled: tally.throttled_reads + tally.throttled_writes,
            lagged: tally.lagged_reads,
        })
    }

    /// Runs `case`'s trials and prints its row.
    fn run(case: Case, opts: &Opts) -> anyhow::Result<()> {
        let started = Instant::now();
        let (c, t) = case.shape();
        let bed = Bed::build(c, t, 3)?;
        let proxy = FaultProxy::start(&bed.moto.endpoint)?;
        let mut extra = Vec::new();
        if case == Case::Lagging {
            proxy.set_read_lag(Some(LAG));
            if daemon::run_once(&["--help"]).1.contains("--consistency-window") {
                extra.extend(["--consistency-window", "5"]);
            } else {
                eprintln!("  note: {} has no --consistency-window: run without", daemon::binary().display());
            }
        }
        let trials = opts.trials.unwrap_or(case.default_trials());
        let timeout = 3 * opts.model.write_bound(2 * bed.n() as u64) + Duration::from_secs(30);
        eprintln!(
            "{} ({c}×{t}): {trials} trials (world built in {:.1} s)",
            case.name(),
            started.elapsed().as_secs_f64()
        );
        let mut results = Vec::new();
        for k in 0..trials {
            bed.rt.block_on(put_back(&bed.ec2, &bed.vpc, c, 0))?;
            // `second`: C is down at first, so that A's routes all go to B.
            let down = if case == Case::Second { vec![bed.router(2)] } else { Vec::new() };
            bed.fail(&down)?;
            let d = start(&bed, &proxy, opts, &extra)?;
            let r = match case {
                Case::Second => second(&bed, &proxy, &d, opts, timeout),
                Case::Lagging => lagging(&bed, &proxy, &d, opts, timeout),
            }
            .with_context(|| format!("{} trial {}", case.name(), k + 1))?;
            eprintln!(
                "  trial {}: {} ms (bound {} ms), {} route writes, {} that should not be, {} throttled, {} lagged reads",
                k + 1,
                r.took.as_millis(),
                r.bound.as_millis(),
                r.writes,
                r.wrong,
                r.throttled,
                r.lagged
            );
            results.push(r);
        }
        row(case, bed.n(), &results);
        Ok(())
    }

    /// Prints one row of this module's table.
    fn row(case: Case, n: usize, trials: &[Trial]) {
        let mut took: Vec<Duration> = trials.iter().map(|t| t.took).collect();
        took.sort();
        let mut bounds: Vec<Duration> = trials.iter().map(|t| t.bound).collect();
        bounds.sort();
        let mut ratios: Vec<f64> = trials.iter().map(|t| t.took.as_secs_f64() / t.bound.as_secs_f64()).collect();
        ratios.sort_by(f64::total_cmp);
        let q = |v: &[f64], p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        let list = |f: fn(&Trial) -> u64| spread(&trials.iter().map(f).collect::<Vec<_>>());
        let what = match case {
            Case::Second => "second: 20 CIDRs × 10 tables on A, A fails, B (the target) 2 s later, C left",
            Case::Lagging => "lagging: 4 CIDRs × 10 tables on A, reads lag writes by 2.5 s, A fails",
        };
        println!(
            "| {what} | {n} | {} | {} | {} | {} | {:.2} | {:.2} | {} | {} | {} | {} |",
            trials.len(),
            ms(quantile(&took, 0.5)),
            ms(quantile(&took, 0.99)),
            ms(quantile(&bounds, 0.5)),
            q(&ratios, 0.5),
            q(&ratios, 0.99),
            list(|t| t.writes as u64),
            list(|t| t.wrong as u64),
            list(|t| t.throttled),
            list(|t| t.lagged),
        );
    }

    /// Runs the cases of `opts.midway` under their own table.
    pub fn run_all(opts: &Opts) -> anyhow::Result<()> {
        if opts.midway.is_empty() {
            return Ok(());
        }
        println!("\nFacts changing under a failover (bound: second, routes on A or B at B's report / write rate + one write latency; lagging, the model's bound for N; wrong writes: second, onto B later than its report + one write latency; lagging, beyond N; both target 0):\n");
        println!("| case | N routes | trials | median ms | p99 ms | bound ms (median) | median / bound | p99 / bound | route writes per trial | wrong writes per trial | throttled per trial | lagged reads per trial |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
        for &case in &opts.midway {
            run(case, opts)?;
        }
        Ok(())
    }
}
