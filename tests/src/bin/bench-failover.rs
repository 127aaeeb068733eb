//! Failover latency of the health plugins: a router stops answering → the route points
//! elsewhere in every managed table in moto (ReplaceRoute visible through the EC2 API).
//!
//! `bench-failover [--trials N] [--only NAME]` (run by `make bench`; needs root, `ip`,
//! `nft`). The whole run happens in a network namespace of its own: moto, the real
//! `vpcrouter` with the real plugin libraries, and 31 routers on 127.0.x.y addresses. A
//! router "stops answering" when nftables starts dropping packets to it (`drop`), or, for
//! `tcp`, when its listener closes (`refuse`). Each trial waits a random time (to be out
//! of phase with the probe rounds), silences the router carrying the route, and polls
//! moto every 5 ms until every managed table points at another router.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use aws_sdk_ec2::types::{Filter, InstanceType};
use vpcrouter_tests::bench::reported_failed;
use vpcrouter_tests::listener::Listener;
use vpcrouter_tests::{netns, wait_for, Env};

const CIDR: &str = "10.55.0.0/16";
/// Extra router instances per subnet (s1 and s2), besides the world's three.
const EXTRA_PER_SUBNET: u8 = 14;

/// How a router stops answering.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Silence {
    /// nftables drops every packet to it.
    Drop,
    /// Its TCP listener closes (connections are refused).
    Refuse,
}

struct Config {
    name: &'static str,
    silence: Silence,
    interval: f64,
}

impl Config {
    fn args(&self, port: u16) -> Vec<String> {
        let i = self.interval.to_string();
        let p = port.to_string();
        let v: Vec<&str> = match self.name {
            "icmpecho" => vec!["-H", "icmpecho", "--icmp_check_interval", &i],
            "tcp" => vec!["-H", "tcp", "--tcp_check_port", &p, "--tcp_check_interval", &i],
            _ => vec![
                "-H", "multi", "--multi_plugins", "icmpecho:tcp", "--icmp_check_interval", &i, "--tcp_check_port", &p,
                "--tcp_check_interval", &i,
            ],
        };
        v.into_iter().map(String::from).collect()
    }

    fn label(&self) -> String {
        let name = if self.name == "multi" { "multi (icmpecho:tcp)" } else { self.name };
        let how = match self.silence {
            Silence::Drop => "packets dropped",
            Silence::Refuse => "listener closed",
        };
        format!("{name}, {how}")
    }
}

/// A tiny xorshift generator for the random phase (no dependency needed).
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The world plus extra router instances; maps EC2 target ids to router IPs.
struct Bench {
    env: Env,
    tables: Vec<String>,
    routers: Vec<String>,
    by_target: BTreeMap<String, String>,
}

impl Bench {
    fn new() -> anyhow::Result<Bench> {
        let env = Env::new()?;
        let tables = env.world.tables[..2].to_vec();
        let mut by_target = BTreeMap::new();
        let mut routers = Vec::new();
        for (ip, (inst, eni)) in &env.world.routers {
            if ip.octets()[2] <= 2 {
                routers.push(ip.to_string());
                by_target.insert(inst.clone(), ip.to_string());
                by_target.insert(eni.clone(), ip.to_string());
            }
        }
        let ec2 = env.world.ec2.clone();
        let vpc = env.world.vpc_id.clone();
        let created: Vec<(String, String, String)> = env.world.block_on(async move {
            let ami = ec2.describe_images().send().await?;
            let ami = ami.images().first().and_then(|i| i.image_id()).context("no AMI")?.to_string();
            let mut out = Vec::new();
            for net in [1u8, 2] {
                let subnets = ec2
                    .describe_subnets()
                    .filters(Filter::builder().name("vpc-id").values(&vpc).build())
                    .filters(Filter::builder().name("cidr-block").values(format!("127.0.{net}.0/24")).build())
                    .send()
                    .await?;
                let subnet = subnets.subnets().first().and_then(|s| s.subnet_id()).context("no subnet")?.to_string();
                for host in 0..EXTRA_PER_SUBNET {
                    let ip = format!("127.0.{net}.{}", 100 + host);
                    let r = ec2
                        .run_instances()
                        .image_id(&ami)
                        .instance_type(InstanceType::T3Micro)
                        .min_count(1)
                        .max_count(1)
                        .subnet_id(&subnet)
                        .private_ip_address(&ip)
                        .send()
                        .await?;
                    let inst = r.instances().first().context("no instance")?;
                    let id = inst.instance_id().context("no id")?.to_string();
                    let eni = inst
                        .network_interfaces()
                        .first()
                        .and_then(|e| e.network_interface_id())
                        .context("no ENI")?
                        .to_string();
                    out.push((ip, id, eni));
                }
            }
            anyhow::Ok(out)
        })?;
        for (ip, id, eni) in created {
            by_target.insert(id, ip.clone());
            by_target.insert(eni, ip.clone());
            routers.push(ip);
        }
        Ok(Bench { env, tables, routers, by_target })
    }

    /// The router of [`CIDR`] in each managed table (one EC2 call).
    fn targets(&self) -> anyhow::Result<Vec<Option<String>>> {
        let ec2 = self.env.world.ec2.clone();
        let ids = self.tables.clone();
        let out = self
            .env
            .world
            .block_on(async move { ec2.describe_route_tables().set_route_table_ids(Some(ids)).send().await })?;
        let mut by_table = BTreeMap::new();
        for t in out.route_tables() {
            let target = t
                .routes()
                .iter()
                .find(|r| r.destination_cidr_block() == Some(CIDR))
                .and_then(|r| r.network_interface_id().or(r.instance_id()))
                .map(|id| self.by_target.get(id).cloned().unwrap_or_else(|| id.to_string()));
            by_table.insert(t.route_table_id().unwrap_or_default().to_string(), target);
        }
        Ok(self.tables.iter().map(|t| by_table.get(t).cloned().flatten()).collect())
    }

    /// The router every managed table points at, if they agree.
    fn routed(&self) -> Option<String> {
        let t = self.targets().ok()?;
        let first = t.first()?.clone()?;
        t.iter().all(|x| x.as_deref() == Some(first.as_str())).then_some(first)
    }
}

fn set_answering(
    c: &Config,
    ip: &str,
    on: bool,
    listeners: &mut BTreeMap<String, Listener>,
    port: u16,
) -> anyhow::Result<()> {
    match c.silence {
        Silence::Drop if on => netns::unblock(ip),
        Silence::Drop => netns::block(ip),
        Silence::Refuse if on => {
            listeners.insert(ip.to_string(), Listener::bind(ip, port)?.0);
            Ok(())
        }
        Silence::Refuse => {
            listeners.remove(ip);
            Ok(())
        }
    }
}

/// Latencies of one trial: until the engine hears of the failure, and until moto shows it.
struct Trial {
    detected: Option<Duration>,
    moved: Duration,
}

/// Runs `trials` failovers with one daemon.
fn run_config(b: &Bench, c: &Config, trials: usize, rng: &mut Rng) -> anyhow::Result<Vec<Trial>> {
    let mut listeners = BTreeMap::new();
    let (first, port) = Listener::bind(&b.routers[0], 0)?;
    listeners.insert(b.routers[0].clone(), first);
    for ip in &b.routers[1..] {
        listeners.insert(ip.clone(), Listener::bind(ip, port)?.0);
    }
    let spec = serde_json::json!({ CIDR: b.routers }).to_string();
    let spec_path = b.env.write("spec.json", &spec);
    let mut args: Vec<String> = vec!["-m".into(), "configfile".into(), "-f".into(), spec_path.to_string_lossy().into()];
    args.extend(c.args(port));
    let mut d = b.env.daemon().args(args).start()?;
    wait_for(Duration::from_secs(30), "the route to be created", || b.routed())
        .map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))?;
    std::thread::sleep(Duration::from_secs_f64(2.0 * c.interval + 0.5));

    let mut latencies = Vec::with_capacity(trials);
    for n in 0..trials {
        let current = wait_for(Duration::from_secs(10), "an agreed route", || b.routed())?;
        std::thread::sleep(Duration::from_secs_f64(0.1 + rng.next_f64() * c.interval));
        let wall = SystemTime::now();
        let started = Instant::now();
        set_answering(c, &current, false, &mut listeners, port)?;
        let mut moved = Err(anyhow::anyhow!("the route did not move within 15 s"));
        let mut took = Duration::ZERO;
        while started.elapsed() < Duration::from_secs(15) {
            if b.routed().is_some_and(|t| t != current) {
                took = started.elapsed();
                moved = Ok(());
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        set_answering(c, &current, true, &mut listeners, port)?;
        moved.map_err(|e| anyhow::anyhow!("trial {n} of {}: {e}\n{}", c.label(), d.log()))?;
        let detected = reported_failed(&d.log(), &current, wall).and_then(|t| t.duration_since(wall).ok());
        latencies.push(Trial { detected, moved: took });
    }
    d.stop(Duration::from_secs(5))?;
    Ok(latencies)
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    // Nearest rank.
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn bench(trials: usize, only: Option<&str>) -> anyhow::Result<bool> {
    let mut rng = Rng(SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64 | 1);
    let b = Bench::new()?;
    eprintln!("bench world: {} routers in 2 route tables; {trials} trials per row", b.routers.len());
    let mut configs = Vec::new();
    for interval in [1.0, 0.2] {
        configs.push(Config { name: "icmpecho", silence: Silence::Drop, interval });
        configs.push(Config { name: "tcp", silence: Silence::Refuse, interval });
        configs.push(Config { name: "tcp", silence: Silence::Drop, interval });
        configs.push(Config { name: "multi", silence: Silence::Drop, interval });
    }
    println!("| health plugin, how the router stops answering | interval | trials | median ms | p99 ms | min ms | max ms | target ms (interval + 50) | engine told, median / p99 ms |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut all_met = true;
    for c in configs.iter().filter(|c| only.is_none_or(|o| o == c.name)) {
        let started = Instant::now();
        let t = run_config(&b, c, trials, &mut rng)?;
        let mut l: Vec<Duration> = t.iter().map(|t| t.moved).collect();
        l.sort();
        let mut det: Vec<Duration> = t.iter().filter_map(|t| t.detected).collect();
        det.sort();
        let detection = if det.is_empty() {
            "n/a".to_string()
        } else {
            format!("{} / {}", ms(quantile(&det, 0.5)), ms(quantile(&det, 0.99)))
        };
        let target = Duration::from_secs_f64(c.interval + 0.05);
        let median = quantile(&l, 0.5);
        all_met &= median <= target;
        println!(
            "| {} | {} s | {} | {} | {} | {} | {} | {}{} | {} |",
            c.label(),
            c.interval,
            l.len(),
            ms(median),
            ms(quantile(&l, 0.99)),
            ms(l[0]),
            ms(l[l.len() - 1]),
            ms(target),
            if median <= target { "" } else { " (median missed)" },
            detection,
        );
        eprintln!("  ({} took {:.0} s)", c.label(), started.elapsed().as_secs_f64());
    }
    Ok(all_met)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let mut trials = 20usize;
    let mut only = None;
    let mut i = 1;
    while i < args.len() {
        match (args[i].as_str(), args.get(i + 1)) {
            ("--trials", Some(v)) => match v.parse() {
                Ok(n) if n > 0 => trials = n,
                _ => {
                    eprintln!("--trials needs a positive whole number, not '{v}'");
                    return ExitCode::from(2);
                }
            },
            ("--only", Some(v)) if ["icmpecho", "tcp", "multi"].contains(&v.as_str()) => only = Some(v.clone()),
            _ => {
                eprintln!("usage: bench-failover [--trials N] [--only icmpecho|tcp|multi]");
                return ExitCode::from(2);
            }
        }
        i += 2;
    }
    if netns::inside().is_none() {
        // Everything runs inside a namespace of our own: re-run there.
        let ns = match netns::Netns::create("bench") {
            Ok(ns) => ns,
            Err(e) => {
                eprintln!("bench-failover needs root, ip and nft: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        let exe = std::env::current_exe().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        let status = ns.command(&exe).args(&args[1..]).status();
        return match status {
            Ok(s) if s.success() => ExitCode::SUCCESS,
            Ok(_) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("cannot run the benchmark inside {}: {e}", ns.name);
                ExitCode::FAILURE
            }
        };
    }
    match bench(trials, only.as_deref()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("note: some medians are above interval + 50 ms");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench-failover failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
