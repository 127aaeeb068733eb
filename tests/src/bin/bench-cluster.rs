//! Cluster mode (`--cluster-etcd`) against single mode: real etcd, real binaries, moto.
//!
//! `bench-cluster [--trials N]` (run by `make bench`) prints three tables:
//! 1. leader takeover after SIGKILL of the leader (three instances, lease TTL 2 s and the
//!    default 5 s): time from the kill until a survivor's `/status` says `leader`;
//! 2. failover with the `tcp` health plugin at 0.5 s, single instance vs three instances
//!    (majority quorum): time from closing the router's listener until moto shows the
//!    route on the other router;
//! 3. etcd requests per second per idle instance, counted by vpcrouter
//!    (`vpcrouter_etcd_requests_total`) and by etcd (`grpc_server_msg_received_total`).
//!
//! All traffic stays on loopback: routers are listeners on 127.0.1.10 and 127.0.2.10.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use vpcrouter_tests::cluster::{wait_new_leader, wait_one_leader, Instance};
use vpcrouter_tests::etcd::Etcd;
use vpcrouter_tests::listener::Listener;
use vpcrouter_tests::{wait_for, Env};

const CIDR: &str = "10.55.0.0/16";
const ROUTERS: [&str; 2] = ["127.0.1.10", "127.0.2.10"];
const INTERVAL: &str = "0.5";

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn row(label: &str, mut l: Vec<Duration>) -> Duration {
    l.sort();
    let median = quantile(&l, 0.5);
    println!(
        "| {label} | {} | {} | {} | {} | {} |",
        l.len(),
        ms(median),
        ms(quantile(&l, 0.99)),
        ms(l[0]),
        ms(l[l.len() - 1])
    );
    median
}

/// The options of every run: `spec.json` with the tcp plugin on `port` (its text).
fn tcp_args<'a>(spec: &'a std::path::Path, port: &'a str) -> [&'a str; 10] {
    let spec = spec.to_str().unwrap_or_default();
    ["-m", "configfile", "-f", spec, "-H", "tcp", "--tcp_check_port", port, "--tcp_check_interval", INTERVAL]
}

/// Instances on `etcd` with the given ids, watching `spec` with the tcp plugin on `port`.
fn start(env: &Env, etcd: &str, id: &str, ttl: u64, port: u16) -> anyhow::Result<Instance> {
    let spec = env.path("spec.json");
    let p = port.to_string();
    Instance::start(env.daemon().args(tcp_args(&spec, &p)), etcd, id, ttl)
}

fn takeover(trials: usize, ttl: u64) -> anyhow::Result<Vec<Duration>> {
    let etcd = Etcd::start()?;
    let env = Env::new()?;
    env.write("spec.json", &serde_json::json!({ CIDR: ROUTERS }).to_string());
    let (l1, port) = Listener::bind(ROUTERS[0], 0)?;
    let _l2 = Listener::bind(ROUTERS[1], port)?.0;
    let _l1 = l1;
    let ids = ["a", "b", "c"];
    let mut insts: Vec<Instance> =
        ids.iter().map(|id| start(&env, &etcd.endpoints(), id, ttl, port)).collect::<anyhow::Result<_>>()?;
    let mut out = Vec::new();
    for n in 0..trials {
        let view: Vec<&Instance> = insts.iter().collect();
        let leader = wait_one_leader(&view, Duration::from_secs(30))?;
        // Out of phase with the keep-alive rounds.
        std::thread::sleep(Duration::from_millis(300 + (n as u64 * 137) % 700));
        let dead = insts.remove(leader);
        let killed = Instant::now();
        drop(dead); // SIGKILL
        let rest: Vec<&Instance> = insts.iter().collect();
        let (_, took) = wait_new_leader(&rest, killed, Duration::from_secs(30), Duration::from_millis(5))?;
        out.push(took);
        // Back to three members.
        let id = ids.iter().find(|id| insts.iter().all(|i| i.id != **id)).copied().unwrap_or("a");
        insts.push(start(&env, &etcd.endpoints(), id, ttl, port)?);
        let back = insts.last().expect("just pushed");
        wait_for(Duration::from_secs(30), "the restarted instance to follow", || {
            (back.role()? == "follower").then_some(())
        })?;
    }
    Ok(out)
}

/// Failover: `cluster_size` 0 = single mode.
fn failover(trials: usize, cluster_size: usize) -> anyhow::Result<Vec<Duration>> {
    let etcd = Etcd::start()?;
    let env = Env::new()?;
    env.write("spec.json", &serde_json::json!({ CIDR: ROUTERS }).to_string());
    let (l1, port) = Listener::bind(ROUTERS[0], 0)?;
    let mut listeners = [Some(l1), Some(Listener::bind(ROUTERS[1], port)?.0)];
    let spec = env.path("spec.json");
    let p = port.to_string();
    let mut insts = Vec::new();
    let mut single = None;
    if cluster_size == 0 {
        single = Some(env.daemon().args(tcp_args(&spec, &p)).start()?);
    } else {
        for id in ["a", "b", "c"].iter().take(cluster_size) {
            insts.push(start(&env, &etcd.endpoints(), id, 5, port)?);
        }
        wait_one_leader(&insts.iter().collect::<Vec<_>>(), Duration::from_secs(30))?;
    }
    let rt1 = env.world.tables[0].clone();
    let routed = || -> Option<String> { env.world.targets(&[&rt1], CIDR).ok()?.into_iter().next()? };
    wait_for(Duration::from_secs(30), "the route", routed)?;
    std::thread::sleep(Duration::from_secs(2));
    let mut out = Vec::new();
    for n in 0..trials {
        let current = wait_for(Duration::from_secs(10), "the route", routed)?;
        let idx = ROUTERS.iter().position(|r| *r == current).ok_or_else(|| anyhow::anyhow!("routed to {current}"))?;
        std::thread::sleep(Duration::from_millis(100 + (n as u64 * 89) % 500));
        let started = Instant::now();
        listeners[idx] = None; // closes the port: connections are refused
        let mut took = None;
        while started.elapsed() < Duration::from_secs(15) {
            if routed().is_some_and(|t| t != current) {
                took = Some(started.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        listeners[idx] = Some(Listener::bind(ROUTERS[idx], port)?.0);
        out.push(took.ok_or_else(|| anyhow::anyhow!("trial {n}: the route did not move within 15 s"))?);
        // The health plugin keeps a failed router failed for its hold-down (10 intervals):
        // wait it out, so the next trial has somewhere to fail over to.
        std::thread::sleep(Duration::from_millis(5500));
    }
    drop(single);
    Ok(out)
}

/// etcd requests per second per idle instance: (counted by vpcrouter, counted by etcd).
fn idle_requests(ttl: u64, seconds: u64) -> anyhow::Result<(f64, f64)> {
    let etcd = Etcd::start()?;
    let env = Env::new()?;
    env.write("spec.json", &serde_json::json!({ CIDR: ROUTERS }).to_string());
    let (l1, port) = Listener::bind(ROUTERS[0], 0)?;
    let _l = (l1, Listener::bind(ROUTERS[1], port)?.0);
    let insts: Vec<Instance> = ["a", "b", "c"]
        .iter()
        .map(|id| start(&env, &etcd.endpoints(), id, ttl, port))
        .collect::<anyhow::Result<_>>()?;
    wait_one_leader(&insts.iter().collect::<Vec<_>>(), Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_secs(3));
    let ours = || insts.iter().map(|i| i.metric("vpcrouter_etcd_requests_total").unwrap_or(0.0)).sum::<f64>();
    let theirs = || -> f64 {
        etcd.metrics(0)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("grpc_server_msg_received_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (o0, t0) = (ours(), theirs());
    std::thread::sleep(Duration::from_secs(seconds));
    let (o1, t1) = (ours(), theirs());
    let per = |d: f64| d / seconds as f64 / insts.len() as f64;
    // (The /metrics scrapes above are plain HTTP: etcd's gRPC counters do not see them.)
    Ok((per(o1 - o0), per(t1 - t0)))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let trials =
        args.iter().position(|a| a == "--trials").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(10usize);
    let run = || -> anyhow::Result<()> {
        println!("\nLeader takeover after SIGKILL of the leader (3 instances, 1 etcd):\n");
        println!("| lease TTL | trials | median ms | p99 ms | min ms | max ms |");
        println!("|---|---|---|---|---|---|");
        for ttl in [2, 5] {
            let started = Instant::now();
            row(&format!("{ttl} s"), takeover(trials, ttl)?);
            eprintln!("  (TTL {ttl} s took {:.0} s)", started.elapsed().as_secs_f64());
        }
        println!("\nFailover, tcp health plugin at {INTERVAL} s, router's listener closed:\n");
        println!("| mode | trials | median ms | p99 ms | min ms | max ms |");
        println!("|---|---|---|---|---|---|");
        let single = row("single instance", failover(trials, 0)?);
        let cluster = row("cluster of 3, majority quorum", failover(trials, 3)?);
        println!("\ncluster / single median: {:.2}", cluster.as_secs_f64() / single.as_secs_f64());
        let (ours, theirs) = idle_requests(5, 30)?;
        println!("\nIdle etcd load per instance (3 instances, lease TTL 5 s, 30 s): {ours:.2} requests/s counted by vpcrouter, {theirs:.2} gRPC messages/s received by etcd");
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-cluster: {e:#}");
            ExitCode::FAILURE
        }
    }
}
