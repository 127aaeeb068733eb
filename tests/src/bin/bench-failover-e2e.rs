//! Failover end to end with a real health plugin, through the model of EC2: from the moment
//! packets to a router are dropped until moto shows the last of its routes on the other
//! router.
//!
//! `bench-failover-e2e [--trials N] [--case CxT] [--interval S]` (run by `make bench`; needs
//! root, `ip`, `nft`). Defaults: 20 trials, 4×10 (N = 40 routes), 0.2 s.
//!
//! The whole run happens in a network namespace of its own (`vpcrouter_tests::netns`):
//! moto, the fault proxy with [`Model::documented`] (writes 100 ms, 50 burst / 5 per s;
//! reads 150 ms, 100 burst / 20 per s), the real `vpcrouter` with the real `tcp` plugin
//! (`-H tcp --tcp_check_port P --tcp_check_interval S --route_recheck_interval 30`, and
//! `--ec2-write-burst/--ec2-write-rate/--ec2-read-burst/--ec2-read-rate` equal to the
//! model's buckets), and TCP listeners that accept on every router and member address.
//!
//! World (`vpcrouter_tests::bench::build_vpc`, as in `bench-failover-ec2`): T subnets
//! `127.0.i.0/24`, each with its own route table rt_i and a member `127.0.i.20`; router A
//! `127.0.1.10`, router B `127.0.2.10`. The spec sends `10.1.0.0/16` .. `10.C.0.0/16` to
//! `[A, B]`, and an anchor `10.200.0.0/16` to every member (it makes every table managed
//! and is never written). Every route is created in moto directly before vpcrouter starts
//! (the measured ones on A, the anchor on member 1), so start-up writes nothing.
//!
//! A trial: wait a random time within one interval (out of phase with the probe rounds),
//! add the router carrying the routes to the namespace's nftables drop set (t0 = when
//! `nft` has returned: the rule is in, so every packet to the router from then on is
//! dropped), poll moto directly (one DescribeRouteTables of the VPC, the next after the last
//! poll's duration clamped to 10 ..= 50 ms: polls take at most about half of moto's time,
//! and a poll slowed by moto's writes is not followed by a long pause) until all C × T
//! routes point at the other router (t1, the answer of that poll). Then the router is let
//! through again, and the next trial waits until vpcrouter sees no failed host (the
//! hold-down is 10 × interval) and the model's buckets are full again, then drops the
//! other router (routes alternate A → B → A, no fail-back in between).
//!
//! Where the time goes (t1 − t0):
//!
//! * detection: the `tcp` plugin starts a round of connects every interval / 4 (50 ms at
//!   0.2 s); a connect whose SYN is dropped fails at its timeout, min(0.75 × interval,
//!   3 s) = 150 ms at 0.2 s. The first round after t0 starts within interval / 4, so the
//!   engine hears of the failure 150 to 200 ms after t0 (column "detected", from the
//!   daemon's `health changed` log line);
//! * EC2: the engine's calls through the model, at least one write latency (100 ms) when
//!   all N ≤ 50 writes go at once, plus any read it makes first (150 ms each);
//! * moto: moto applies calls one at a time, so N writes take N × its own time per write
//!   on top (real EC2 does not serialise). It is measured in the same run, before
//!   vpcrouter starts: 100 sequential ReplaceRoute calls straight to moto (no proxy),
//!   divided by 100. Column "engine" is vpcrouter's own figure (`/status`
//!   `last_failover.seconds`: health report to last write acknowledged), EC2 and moto
//!   together;
//! * polling: up to one poll after the last write (column "after last ack": t1 − t0 −
//!   detected − engine).
//!
//! Physical bound: connect timeout + one write latency + N × moto. Target (the issue's):
//! p99 ≤ 0.5 s + N × moto.

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use aws_sdk_ec2::Client;
use vpcrouter_plugin_api::health::TIMEOUT_SHARE;
use vpcrouter_tests::bench::{ms, quantile, refill_time, reported_failed, spread, status, value, Bed, Vpc};
use vpcrouter_tests::daemon::Daemon;
use vpcrouter_tests::ec2model::Model;
use vpcrouter_tests::faultproxy::{FaultProxy, Tally};
use vpcrouter_tests::listener::Listener;
use vpcrouter_tests::{netns, wait_for, world};

/// ReplaceRoute calls timed against moto.
const MOTO_PROBES: u32 = 100;
/// The issue's budget on top of moto's serial time.
const BUDGET: Duration = Duration::from_millis(500);
/// The `tcp` plugin's longest connect timeout, whatever the interval (its
/// `MAX_CONNECT_TIMEOUT`).
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest a trial may take before it fails.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Command-line options.
struct Opts {
    trials: usize,
    /// Measured CIDRs.
    c: usize,
    /// Route tables.
    t: usize,
    /// `--tcp_check_interval`, seconds.
    interval: f64,
}

const USAGE: &str = "usage: bench-failover-e2e [--trials N] [--case CxT] [--interval S]";

fn parse_opts(args: &[String]) -> anyhow::Result<Opts> {
    for pair in args.chunks(2) {
        anyhow::ensure!(pair.len() == 2 && ["--trials", "--case", "--interval"].contains(&pair[0].as_str()), "{USAGE}");
    }
    let trials = value::<usize>(args, "--trials")?.unwrap_or(20);
    let interval = value::<f64>(args, "--interval")?.unwrap_or(0.2);
    let case = value::<String>(args, "--case")?.unwrap_or_else(|| "4x10".into());
    let (c, t) = case.split_once('x').context("--case: expected CxT, e.g. 4x10")?;
    let (c, t): (usize, usize) = (c.parse()?, t.parse()?);
    anyhow::ensure!(trials >= 1, "--trials must be at least 1");
    anyhow::ensure!((0.1..=10.0).contains(&interval), "--interval must be 0.1 to 10 s");
    anyhow::ensure!((1..=199).contains(&c) && (2..=250).contains(&t), "--case: C must be 1..=199 and T 2..=250");
    Ok(Opts { trials, c, t, interval })
}

/// moto's time per ReplaceRoute: `MOTO_PROBES` sequential calls that leave a route on A.
async fn moto_write_time(ec2: &Client, vpc: &Vpc) -> anyhow::Result<Duration> {
    let t = Instant::now();
    for _ in 0..MOTO_PROBES {
        let call = ec2.replace_route().route_table_id(&vpc.tables[0]).destination_cidr_block("10.1.0.0/16");
        call.instance_id(&vpc.routers[0].instance).send().await?;
    }
    Ok(t.elapsed() / MOTO_PROBES)
}

/// The world: a bench VPC in moto, moto's time per write, listeners on every router and
/// member.
struct World {
    bed: Bed,
    /// The port every listener accepts on (`--tcp_check_port`).
    port: u16,
    /// moto's own time per ReplaceRoute (see [`moto_write_time`]).
    moto_write: Duration,
    _listeners: Vec<Listener>,
}

impl World {
    fn build(c: usize, t: usize) -> anyhow::Result<World> {
        let bed = Bed::build(c, t, 2)?;
        let moto_write = bed.rt.block_on(moto_write_time(&bed.ec2, &bed.vpc))?;
        let vpc = &bed.vpc;
        let hosts: Vec<String> = vpc.routers.iter().chain(&vpc.members).map(|h| h.ip.to_string()).collect();
        let (first, port) = Listener::bind(&hosts[0], 0)?;
        let mut listeners = vec![first];
        for ip in &hosts[1..] {
            listeners.push(Listener::bind(ip, port)?.0);
        }
        Ok(World { bed, port, moto_write, _listeners: listeners })
    }

    /// The router carrying every measured route, if one does.
    fn carrier(&self) -> anyhow::Result<Option<usize>> {
        let by = self.bed.placement()?;
        Ok((0..2).find(|&i| by.get(&Some(self.bed.router(i))).copied() == Some(self.bed.n())))
    }

    /// vpcrouter's options: the spec, the `tcp` plugin at `interval`, the model's buckets.
    fn daemon_args(&self, model: &Model, interval: f64) -> Vec<String> {
        let (r, w) = (model.read_bucket, model.write_bucket);
        let spec = self.bed.spec.to_string_lossy().into_owned();
        let (port, interval) = (self.port.to_string(), interval.to_string());
        #[rustfmt::skip]
        let args = [
            "-r", world::REGION, "-v", &self.bed.vpc.id, "-m", "configfile", "-f", &spec,
            "-H", "tcp", "--tcp_check_port", &port, "--tcp_check_interval", &interval,
            "--route_recheck_interval", "30",
            "--ec2-write-burst", &w.burst.to_string(), "--ec2-write-rate", &w.rate.to_string(),
            "--ec2-read-burst", &r.burst.to_string(), "--ec2-read-rate", &r.rate.to_string(),
        ];
        args.iter().map(|s| s.to_string()).collect()
    }
}

/// A router whose packets are dropped until this is dropped.
struct Blocked(String);

impl Blocked {
    fn new(ip: Ipv4Addr) -> anyhow::Result<Blocked> {
        let ip = ip.to_string();
        netns::block(&ip)?;
        Ok(Blocked(ip))
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        if let Err(e) = netns::unblock(&self.0) {
            eprintln!("warning: cannot let {} through again: {e:#}", self.0);
        }
    }
}

/// One failover.
struct Trial {
    /// t0 (rule in) to t1 (moto shows every route moved).
    took: Duration,
    /// t0 to the engine's `health changed` log line naming the router.
    detected: Option<Duration>,
    /// vpcrouter's `last_failover.seconds`: health report to last write acknowledged.
    engine: Option<Duration>,
    /// How long the `nft` call took (the rule is in somewhere within it).
    nft: Duration,
    /// Calls at the proxy from t0 to t1 + 1 s.
    tally: Tally,
    polls: u32,
    poll_time: Duration,
}

impl Trial {
    /// The time after the last write was acknowledged: t1 − t0 − detected − engine (mostly
    /// the last poll).
    fn after_ack(&self) -> Option<Duration> {
        self.took.checked_sub(self.detected? + self.engine?)
    }
}

/// The daemon's failover count and last failover time, from `/status`.
fn failovers(d: &Daemon) -> (u64, Option<Duration>) {
    let s = status(d.port).unwrap_or_default();
    let count = s["counters"]["failovers"].as_u64().unwrap_or(0);
    (count, s["last_failover"]["seconds"].as_f64().map(Duration::from_secs_f64))
}

/// Polls moto until every measured route is on router `to`; the time since `t0`.
fn wait_moved(w: &World, to: usize, t0: Instant, d: &Daemon) -> anyhow::Result<(Duration, u32, Duration)> {
    let (want, n) = (w.bed.router(to), w.bed.n());
    let (mut polls, mut poll_time) = (0u32, Duration::ZERO);
    loop {
        let p = Instant::now();
        let by = w.bed.placement()?;
        let pd = p.elapsed();
        (polls, poll_time) = (polls + 1, poll_time + pd);
        if by.get(&Some(want)).copied() == Some(n) {
            return Ok((t0.elapsed(), polls, poll_time));
        }
        if t0.elapsed() > TRIAL_TIMEOUT {
            anyhow::bail!("after {TRIAL_TIMEOUT:?} the routes are {by:?} (want all {n} on {want})\n{}", d.log());
        }
        std::thread::sleep(pd.clamp(Duration::from_millis(10), Duration::from_millis(50)));
    }
}

/// Drops router `from`'s packets and waits until every route is on `to`.
fn trial(w: &World, proxy: &FaultProxy, d: &Daemon, from: usize, to: usize) -> anyhow::Result<Trial> {
    let ip = w.bed.router(from);
    let (before, _) = failovers(d);
    let asked = Instant::now();
    let blocked = Blocked::new(ip)?;
    let (t0, wall0) = (Instant::now(), SystemTime::now());
    let (took, polls, poll_time) = wait_moved(w, to, t0, d)?;
    std::thread::sleep(Duration::from_secs(1)); // the failover's log line; late writes are counted too
    drop(blocked);
    let (after, last) = failovers(d);
    let detected = reported_failed(&d.log(), &ip.to_string(), wall0).and_then(|t| t.duration_since(wall0).ok());
    Ok(Trial {
        took,
        detected,
        engine: if after > before { last } else { None },
        nft: t0 - asked,
        tally: proxy.tally_since(t0),
        polls,
        poll_time,
    })
}

/// Waits until vpcrouter sees no failed host.
fn wait_healthy(d: &Daemon) -> anyhow::Result<()> {
    wait_for(Duration::from_secs(30), "vpcrouter to see no failed host", || {
        status(d.port)?["failed_hosts"].as_array().is_some_and(Vec::is_empty).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))
}

/// A fraction in [0, 1) from the clock, for the random phase.
fn phase() -> f64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    f64::from(nanos % 1_000_000) / 1e6
}

/// Starts vpcrouter and runs the trials.
fn run_trials(w: &World, opts: &Opts, model: &Model) -> anyhow::Result<Vec<Trial>> {
    let proxy = FaultProxy::start_model(&w.bed.moto.endpoint, *model)?;
    let args = w.daemon_args(model, opts.interval);
    let since = Instant::now();
    let d = Daemon::builder(&w.bed.moto).endpoint(&proxy.endpoint).args(args).start()?;
    wait_for(Duration::from_secs(120), "the first reconcile", || {
        status(d.port)?["last_reconcile"].is_object().then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))?;
    wait_healthy(&d)?;
    let start_writes = proxy.tally_since(since).writes;
    if start_writes > 0 {
        eprintln!("  warning: {start_writes} writes at start-up (expected none)");
    }
    let mut out: Vec<Trial> = Vec::new();
    let mut ready_at = Instant::now() + Duration::from_secs(1);
    for k in 0..opts.trials {
        wait_healthy(&d)?;
        std::thread::sleep(ready_at.saturating_duration_since(Instant::now()));
        std::thread::sleep(Duration::from_secs_f64(phase() * opts.interval));
        let from = w.carrier()?.context("the routes are not all on one router")?;
        let started = Instant::now();
        let t = trial(w, &proxy, &d, from, 1 - from).with_context(|| format!("trial {}", k + 1))?;
        ready_at = started + refill_time(model, &t.tally).max(Duration::from_secs(1));
        eprintln!(
            "  trial {}: {} ms (detected {} ms, engine {} ms, after last ack {} ms), {} writes, {} reads, {} throttled",
            k + 1,
            t.took.as_millis(),
            t.detected.map_or("-".into(), ms),
            t.engine.map_or("-".into(), ms),
            t.after_ack().map_or("-".into(), ms),
            t.tally.writes,
            t.tally.reads,
            t.tally.throttled_writes + t.tally.throttled_reads
        );
        out.push(t);
    }
    Ok(out)
}

/// Median and p99 of some durations, `-` when there are none.
fn median_p99(mut v: Vec<Duration>) -> (String, String) {
    if v.is_empty() {
        return ("-".into(), "-".into());
    }
    v.sort();
    (ms(quantile(&v, 0.5)), ms(quantile(&v, 0.99)))
}

/// The `tcp` plugin's connect timeout at `interval` seconds.
fn connect_timeout(interval: f64) -> Duration {
    Duration::from_secs_f64(interval * TIMEOUT_SHARE).min(MAX_CONNECT_TIMEOUT)
}

/// Prints the table of the run.
fn report(w: &World, opts: &Opts, model: &Model, trials: &[Trial]) {
    let mut took: Vec<Duration> = trials.iter().map(|t| t.took).collect();
    took.sort();
    let (median, p99) = (quantile(&took, 0.5), quantile(&took, 0.99));
    let (c, n) = (w.bed.c, w.bed.n());
    let moto_total = w.moto_write * n as u32;
    let bound = connect_timeout(opts.interval) + model.write_latency + moto_total;
    let target = BUDGET + moto_total;
    let pair = |f: fn(&Trial) -> Option<Duration>| {
        let (m, p) = median_p99(trials.iter().filter_map(f).collect());
        format!("{m} / {p}")
    };
    let count = |f: fn(&Tally) -> u64| spread(&trials.iter().map(|t| f(&t.tally)).collect::<Vec<_>>());
    println!(
        "\nFailover end to end: tcp at {} s, packets dropped, {c}×{} = {n} routes through the EC2 model (writes {} ms, reads {} ms):\n",
        opts.interval, n / c, model.write_latency.as_millis(), model.read_latency.as_millis()
    );
    println!("| N routes | trials | median ms | p99 ms | min ms | max ms | detected median / p99 ms | engine median / p99 ms | after last ack median / p99 ms | writes | reads | throttled | moto ms per write | N × moto ms | bound ms | median / bound | target ms (500 + N × moto) | p99 / target | target |");
    println!("|{}", "---|".repeat(19));
    println!(
        "| {n} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {} | {:.2} | {} | {:.2} | {} |",
        took.len(),
        ms(median),
        ms(p99),
        ms(took[0]),
        ms(took[took.len() - 1]),
        pair(|t| t.detected),
        pair(|t| t.engine),
        pair(Trial::after_ack),
        count(|t| t.writes),
        count(|t| t.reads),
        count(|t| t.throttled_writes + t.throttled_reads),
        w.moto_write.as_secs_f64() * 1e3,
        ms(moto_total),
        ms(bound),
        median.as_secs_f64() / bound.as_secs_f64(),
        ms(target),
        p99.as_secs_f64() / target.as_secs_f64(),
        if p99 <= target { "met" } else { "missed" },
    );
    notes(opts, model, trials);
}

/// The line under the table: what the bound is made of, the polls, the `nft` calls.
fn notes(opts: &Opts, model: &Model, trials: &[Trial]) {
    let polls: u32 = trials.iter().map(|t| t.polls).sum();
    let poll_time: Duration = trials.iter().map(|t| t.poll_time).sum();
    let nft = trials.iter().map(|t| t.nft).max().unwrap_or_default();
    println!(
        "\nbound = connect timeout {} ms + write latency {} ms + N × moto; moto timed with {MOTO_PROBES} sequential \
         ReplaceRoute calls, no proxy, before vpcrouter started; {polls} polls of {:.1} ms on average; longest nft \
         call {} ms.",
        ms(connect_timeout(opts.interval)),
        model.write_latency.as_millis(),
        poll_time.as_secs_f64() * 1e3 / f64::from(polls.max(1)),
        ms(nft),
    );
}

fn bench(opts: &Opts) -> anyhow::Result<()> {
    let model = Model::documented();
    let started = Instant::now();
    let w = World::build(opts.c, opts.t)?;
    eprintln!(
        "bench-failover-e2e: {}×{} world built in {:.1} s; moto {:.2} ms per write; {} trials",
        opts.c,
        opts.t,
        started.elapsed().as_secs_f64(),
        w.moto_write.as_secs_f64() * 1e3,
        opts.trials
    );
    let trials = run_trials(&w, opts, &model)?;
    report(&w, opts, &model, &trials);
    Ok(())
}

/// Runs this program again inside a new namespace with the same arguments.
fn rerun_inside(args: &[String]) -> ExitCode {
    let ns = match netns::Netns::create("e2e") {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("bench-failover-e2e needs root, ip and nft: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let exe = std::env::current_exe().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    match ns.command(&exe).args(args).status() {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cannot run the benchmark inside {}: {e}", ns.name);
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_opts(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(2);
        }
    };
    if netns::inside().is_none() {
        return rerun_inside(&args);
    }
    match bench(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-failover-e2e failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
