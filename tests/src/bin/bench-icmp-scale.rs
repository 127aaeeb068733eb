//! ICMP scale: 1,000, 2,500 and 10,000 loopback hosts (127.10.x.y) per 1 s interval
//! (2,500 hosts × 4 probes is the plugin's full budget of 10,000 echo requests/s), checked by
//! one `icmpecho` plugin instance in this process; CPU time per interval (getrusage of
//! the whole process: on loopback this includes the kernel's work to answer the echoes)
//! and missed replies (checks that failed).
//!
//! `bench-icmp-scale [--seconds N] [--hosts N[,N...]]` (run by `make bench`; needs root).

#![deny(unsafe_code)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use vpcrouter_health_icmpecho::Icmpecho;
use vpcrouter_plugin_api::testkit::{start_health, HealthHarness};
use vpcrouter_plugin_api::{HostList, Ipv4, PluginStats};

/// (user, system) CPU time of this process so far.
#[allow(unsafe_code)]
fn cpu_time() -> (Duration, Duration) {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` is a valid, writable rusage; getrusage only writes into it.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if rc != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    // SAFETY: getrusage returned 0, so it filled the whole struct (it was zeroed anyway).
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

fn host(i: usize) -> Ipv4 {
    Ipv4::new(127, 10, (i / 250) as u8, (1 + i % 250) as u8)
}

struct Row {
    hosts: usize,
    probes: u64,
    intervals: u64,
    cpu_per_interval: Duration,
    user_share: f64,
    checks: u64,
    missed: u64,
    failure_reports: usize,
    late_rounds: u64,
}

/// (checks, failures) from the typed stats, and the details object (`late_rounds`, ...).
fn status(p: &HealthHarness) -> ((u64, u64), serde_json::Value) {
    let s = p.monitor.status();
    let checks = match s.stats {
        PluginStats::Health(h) => (h.checks, h.failures),
        _ => (0, 0),
    };
    (checks, serde_json::from_str(&s.details).unwrap_or_default())
}

fn counters(p: &HealthHarness) -> (u64, u64, u64) {
    let ((checks, failures), details) = status(p);
    (checks, failures, details["late_rounds"].as_u64().unwrap_or(0))
}

fn run(hosts: usize, secs: u64) -> Result<Row, String> {
    // Started through the same SDK path the host uses (validate_config, then start).
    let plugin = start_health::<Icmpecho>(&[("icmp_check_interval", "1")])?;
    let reports = &plugin.reports;
    plugin.hosts.send(HostList::new((0..hosts).map(host))).map_err(|e| e.to_string())?;
    reports.recv_timeout(Duration::from_secs(5)).map_err(|_| "no first report".to_string())?;
    // Warm up: let a few rounds go by.
    std::thread::sleep(Duration::from_secs(3));
    let (c0, f0, l0) = counters(&plugin);
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let cpu1 = cpu_time();
    let (user, cpu) = (cpu1.0 - cpu0.0, (cpu1.0 + cpu1.1) - (cpu0.0 + cpu0.1));
    let wall = t0.elapsed();
    let (c1, f1, l1) = counters(&plugin);
    let probes = status(&plugin).1["probes_per_interval"].as_u64().unwrap_or(0);
    let failure_reports = std::iter::from_fn(|| reports.try_recv().ok()).filter(|r| !r.failed.is_empty()).count();
    plugin.stop()?;
    let intervals = wall.as_secs_f64().round().max(1.0) as u64;
    Ok(Row {
        hosts,
        probes,
        intervals,
        cpu_per_interval: cpu / intervals as u32,
        user_share: user.as_secs_f64() / cpu.as_secs_f64().max(1e-9),
        checks: c1 - c0,
        missed: f1 - f0,
        failure_reports,
        late_rounds: l1 - l0,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let mut secs = 10u64;
    let mut sizes = vec![1_000usize, 2_500, 10_000];
    let mut i = 1;
    while i < args.len() {
        match (args[i].as_str(), args.get(i + 1)) {
            ("--seconds", Some(v)) if v.parse::<u64>().is_ok_and(|n| (1..=600).contains(&n)) => {
                secs = v.parse().unwrap_or(10)
            }
            ("--hosts", Some(v)) => match v.split(',').map(str::parse::<usize>).collect::<Result<Vec<_>, _>>() {
                Ok(s) if s.iter().all(|n| (1..=60_000).contains(n)) => sizes = s,
                _ => {
                    eprintln!("--hosts needs numbers between 1 and 60000, e.g. 1000,10000");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("usage: bench-icmp-scale [--seconds N] [--hosts N[,N...]]");
                return ExitCode::from(2);
            }
        }
        i += 2;
    }
    println!("| hosts | interval | probes per host per interval | intervals measured | CPU per interval ms | of which user | % of one core | echo requests | missed replies | failure reports | late rounds |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut ok = true;
    for n in sizes {
        match run(n, secs) {
            Ok(r) => {
                let pct = r.cpu_per_interval.as_secs_f64() * 100.0;
                ok &= r.missed == 0 && r.failure_reports == 0;
                println!(
                    "| {} | 1 s | {} | {} | {:.1} | {:.0} % | {:.2} % | {} | {} | {} | {} |",
                    r.hosts,
                    r.probes,
                    r.intervals,
                    r.cpu_per_interval.as_secs_f64() * 1000.0,
                    r.user_share * 100.0,
                    pct,
                    r.checks,
                    r.missed,
                    r.failure_reports,
                    r.late_rounds
                );
            }
            Err(e) => {
                eprintln!("bench-icmp-scale: {n} hosts: {e} (root or CAP_NET_RAW is needed)");
                return ExitCode::FAILURE;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("missed replies on loopback: see the table");
        ExitCode::FAILURE
    }
}
