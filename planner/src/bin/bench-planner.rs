//! Planner benchmark (issue 7): 1,000 spec CIDRs × 20 route tables × 2,000 instances.
//!
//! Times `vpcrouter_planner::plan::plan` on a synthetic VPC (subnets in three zones) for three
//! situations (empty tables, steady state, 5 routers failed), the first and last again with
//! `--zone-affinity`, and counts heap allocations with a counting global allocator.
//! Prints a table: median, min and max time over `--runs` runs (default 31) and the
//! allocations of one run. Options: `--runs N`, `--cidrs N`, `--tables N`, `--instances N`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use vpcrouter_planner::model::{Cidr, Dest, Eni, Instance, Route, RouteTable, Subnet, TableSelection, VpcState};
use vpcrouter_planner::plan::{plan, PlanInput};

/// The system allocator, counting allocations and bytes.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call unchanged to `System`; only adds relaxed counters.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Sizes of the synthetic VPC.
#[derive(Clone, Copy)]
struct Scale {
    cidrs: usize,
    tables: usize,
    instances: usize,
}

fn router_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 0)) + 1 + i as u32)
}

fn spec_cidr(c: usize) -> Cidr {
    let network = Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 0)) + ((c as u32) << 8));
    Cidr::new(network.into(), 24).expect("a /24 network")
}

/// The spec: CIDR `c` has routers `2c` and `2c + 1` (mod instances).
fn spec(s: Scale) -> Vec<(Cidr, Vec<Ipv4Addr>)> {
    (0..s.cidrs)
        .map(|c| (spec_cidr(c), vec![router_ip(2 * c % s.instances), router_ip((2 * c + 1) % s.instances)]))
        .collect()
}

/// Instances spread over `tables` subnets in three zones, one table per subnet; with
/// `routed`, every table already routes each CIDR to its first router.
fn state(s: Scale, routed: bool) -> VpcState {
    let subnets: Vec<Subnet> = (0..s.tables)
        .map(|t| Subnet { id: format!("subnet-{t:04}"), zone: Some(format!("zone-{}", t % 3)), cidrs: Vec::new() })
        .collect();
    let instances = (0..s.instances)
        .map(|i| Instance {
            id: format!("i-{i:08}"),
            enis: vec![Eni {
                id: format!("eni-{i:08}"),
                subnet_id: subnets[i % s.tables].id.clone(),
                private_ips: vec![router_ip(i)],
                device_index: 0,
                source_dest_check: Some(false),
            }],
        })
        .collect();
    let route_tables = (0..s.tables)
        .map(|t| {
            let mut routes = vec![Route {
                dest: Some(Dest::Cidr(Cidr::parse("10.0.0.0/8").expect("local network"))),
                instance_id: None,
                eni_id: None,
                other_target: Some("local".into()),
            }];
            if routed {
                routes.extend((0..s.cidrs).map(|c| {
                    let i = 2 * c % s.instances;
                    Route {
                        dest: Some(Dest::Cidr(spec_cidr(c))),
                        instance_id: Some(format!("i-{i:08}")),
                        eni_id: Some(format!("eni-{i:08}")),
                        other_target: None,
                    }
                }));
            }
            let subnets = vec![subnets[t].id.clone()];
            RouteTable { id: format!("rtb-{t:04}"), main: t == 0, subnets, routes, ..Default::default() }
        })
        .collect();
    VpcState { vpc_id: "vpc-bench".into(), subnets, route_tables, instances, ..Default::default() }
}

/// One measured situation.
struct Row {
    name: &'static str,
    times: Vec<Duration>,
    actions: usize,
    allocs: u64,
    bytes: u64,
}

fn measure(name: &'static str, runs: usize, input: &PlanInput<'_>) -> Row {
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..3 {
        std::hint::black_box(plan(input, &mut rng));
    }
    let mut times = Vec::with_capacity(runs);
    let (mut actions, mut allocs, mut bytes) = (0, 0, 0);
    for _ in 0..runs {
        let (a0, b0) = (ALLOCS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed));
        let t = Instant::now();
        let p = std::hint::black_box(plan(input, &mut rng));
        times.push(t.elapsed());
        allocs = ALLOCS.load(Ordering::Relaxed) - a0;
        bytes = BYTES.load(Ordering::Relaxed) - b0;
        actions = p.actions.len();
        drop(p);
    }
    times.sort();
    Row { name, times, actions, allocs, bytes }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let mut runs = 31;
    let mut s = Scale { cidrs: 1000, tables: 20, instances: 2000 };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse::<usize>().ok()).filter(|v| *v > 0);
        let Some(v) = value else {
            eprintln!("usage: bench-planner [--runs N] [--cidrs N] [--tables N] [--instances N]");
            std::process::exit(2);
        };
        match pair[0].as_str() {
            "--runs" => runs = v,
            "--cidrs" => s.cidrs = v,
            "--tables" => s.tables = v,
            "--instances" => s.instances = v,
            other => {
                eprintln!("unknown option {other}");
                std::process::exit(2);
            }
        }
    }
    let spec = spec(s);
    let (empty, routed) = (state(s, false), state(s, true));
    let none = BTreeSet::new();
    let failed: BTreeSet<Ipv4Addr> = (0..5).map(|k| router_ip(2 * k * (s.cidrs / 5).max(1) % s.instances)).collect();
    let preferred = Default::default();
    let input = |state, failed, zone_affinity| PlanInput {
        state,
        spec: &spec,
        failed,
        questionable: &none,
        drained: &none,
        ignore: &[],
        last_written: &preferred,
        lists: None,
        quota: 500,
        failback: None,
        tables: &TableSelection::Serving,
        zone_affinity,
    };
    let rows = [
        measure("initial (empty tables)", runs, &input(&empty, &none, false)),
        measure("steady state", runs, &input(&routed, &none, false)),
        measure("5 routers failed", runs, &input(&routed, &failed, false)),
        measure("initial, zone affinity", runs, &input(&empty, &none, true)),
        measure("5 failed, zone affinity", runs, &input(&routed, &failed, true)),
    ];
    println!(
        "\nplanner: {} spec CIDRs × {} route tables × {} instances, {runs} runs each (release)",
        s.cidrs, s.tables, s.instances
    );
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>8} {:>10} {:>10}",
        "situation", "median ms", "min ms", "max ms", "actions", "allocs", "alloc MiB"
    );
    for r in &rows {
        println!(
            "{:<24} {:>9.2} {:>9.2} {:>9.2} {:>8} {:>10} {:>10.1}",
            r.name,
            ms(r.times[r.times.len() / 2]),
            ms(r.times[0]),
            ms(r.times[r.times.len() - 1]),
            r.actions,
            r.allocs,
            r.bytes as f64 / (1 << 20) as f64
        );
    }
    let worst = rows.iter().map(|r| r.times[r.times.len() / 2]).max().unwrap_or_default();
    let verdict = if worst <= Duration::from_millis(10) { "met" } else { "MISSED" };
    println!("target: median ≤ 10 ms in every situation: {verdict} (worst median {:.2} ms)", ms(worst));
}
