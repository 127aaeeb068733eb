//! Prefix-list routes (`--prefix-lists`, issue 14) against one route per CIDR, through the
//! model of real EC2 (`vpcrouter_tests::ec2model`: ~100 ms per write, token-bucket
//! throttling): failover of the router carrying one group, and start-up on an empty VPC.
//!
//! `bench-prefix-lists [--cidrs N] [--tables T] [--trials K] [--per-cidr-cidrs M] [--full]
//! [--logs DIR]` (run by `make bench` after bench-failover-ec2).
//!
//! World, per case (a fresh moto each), built with the SDK as in `bench-failover-ec2`:
//!
//! | subnet i (1..=T) | route table | instances                                          |
//! |------------------|-------------|----------------------------------------------------|
//! | 127.0.i.0/24     | rt_i (own)  | member 127.0.i.20; router A 127.0.1.10, B 127.0.2.10, C 127.0.3.10 in subnets 1, 2, 3 |
//!
//! Every table is made managed by the anchor `10.200.0.0/16` → [member_1 .. member_T], never
//! failed (in prefix-list mode a group of one CIDR: routed per CIDR, `ListMode::MIN_MEMBERS`).
//! The spec CIDRs are `/24`s in `10.1.0.0`–`10.8.255.0`, in two candidate sets that both contain A and B:
//! G1 = [A, B] (the first half) and G2 = [A, B, C] (the second half). G1 starts on A, G2 on
//! C, the anchor on member_1. A failover trial fails the router that carries G1 (A, then B,
//! then A: no fail-back), so G1 moves and G2 stays on C.
//!
//! Cases (defaults: N = 1,000 CIDRs, T = 20 tables, M = 25):
//! 1. Failover, prefix-list mode, N CIDRs × T: the lists (tagged and named as vpcrouter
//!    names them, so that it adopts them) and their routes are created in moto directly
//!    before vpcrouter starts: start-up writes nothing (a warning says otherwise). Measured:
//!    from writing the health file (t0) to the poll of moto that shows G1's list route on the
//!    other router in every table. Expected: T writes (one ReplaceRoute per table).
//! 2. Failover, per-CIDR mode, M CIDRs per set (2M + the anchor) × T, routes created in moto
//!    directly; expected M × T writes. N/2 × T at full scale would take hours at 5 writes per
//!    second: its bound is computed and printed, and `--full` runs it (M = N/2).
//! 3. Start-up, prefix-list mode, N × T, an empty VPC (no spec routes, no lists): from
//!    starting vpcrouter to the poll that shows the two lists (G1, G2) with all their
//!    entries, every table routing each list to one of its group's routers, and the anchor
//!    routed. Expected writes: one CreateManagedPrefixList plus one ModifyManagedPrefixList
//!    per further 100 entries per list, then 2 × T CreateRoute for the lists and T for the
//!    anchor.
//! 4. Start-up, per-CIDR mode, (2M + 1) × T CreateRoute (`--full`: N + 1).
//!
//! vpcrouter runs `-m configfile -H file --route_recheck_interval 30` with client limits
//! equal to the model's buckets, through the fault proxy with `Model::documented()`; writes
//! and throttled answers are counted at the proxy from t0 to the converged poll + 1 s. moto
//! is polled directly (one DescribeRouteTables of the VPC, plus the lists in case 3; the next
//! poll after max(10 ms, the last poll's duration)). The bound is `Model::write_bound` of
//! the expected writes; moto's own time per write is measured in each world before
//! vpcrouter starts (100 sequential ReplaceRoute calls, or 50 CreateRoute + DeleteRoute
//! pairs of a route outside the spec in an empty VPC, no proxy).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_sdk_ec2::types::{AddPrefixListEntry, Filter, PrefixListState, ResourceType, Tag, TagSpecification};
use aws_sdk_ec2::Client;
use vpcrouter_planner::model::{list_size, Family, Group, CLUSTER_TAG, GROUP_TAG};
use vpcrouter_planner::plan::ListMode;
use vpcrouter_tests::bench::{
    build_vpc, daemon_args, ms, quantile, refill_time, spread, status, value, write_failed, Vpc,
};
use vpcrouter_tests::daemon::{self, Daemon};
use vpcrouter_tests::ec2model::Model;
use vpcrouter_tests::faultproxy::{FaultProxy, Tally};
use vpcrouter_tests::moto::Moto;
use vpcrouter_tests::{wait_for, world};

/// The anchor CIDR that makes every table managed (see the header).
const ANCHOR: &str = "10.200.0.0/16";
/// Calls timed against moto per world.
const MOTO_PROBES: usize = 100;
/// A CIDR outside the spec, for moto's time per write in an empty VPC.
const PROBE: &str = "10.250.0.0/16";
/// Entries one CreateManagedPrefixList or ModifyManagedPrefixList call may carry (EC2's
/// limit, `ENTRIES_PER_CALL` in ec2/src/write.rs).
const ENTRIES_PER_CALL: usize = 100;
/// The host's limit on a prefix list's entries (EC2's).
const MAX_LIST_ENTRIES: usize = ListMode::EC2_MAX_ENTRIES as usize;

/// Command-line options.
struct Opts {
    cidrs: usize,
    tables: usize,
    trials: Option<usize>,
    per_cidr: usize,
    full: bool,
    logs: Option<PathBuf>,
    model: Model,
}

fn parse_opts() -> anyhow::Result<Opts> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let known = ["--cidrs", "--tables", "--trials", "--per-cidr-cidrs", "--logs"];
    for (i, a) in args.iter().enumerate() {
        let is_value = i > 0 && known.contains(&args[i - 1].as_str());
        anyhow::ensure!(is_value || known.contains(&a.as_str()) || a == "--full", "unknown argument '{a}'");
    }
    let cidrs = value(&args, "--cidrs")?.unwrap_or(1000);
    let tables = value(&args, "--tables")?.unwrap_or(20);
    let full = args.iter().any(|a| a == "--full");
    let per_cidr = if full { cidrs / 2 } else { value(&args, "--per-cidr-cidrs")?.unwrap_or(25) };
    anyhow::ensure!((2..=2 * MAX_LIST_ENTRIES).contains(&cidrs), "--cidrs must be 2..={}", 2 * MAX_LIST_ENTRIES);
    anyhow::ensure!((3..=250).contains(&tables), "--tables must be 3..=250");
    anyhow::ensure!((1..=cidrs / 2).contains(&per_cidr), "--per-cidr-cidrs must be 1..={}", cidrs / 2);
    let trials: Option<usize> = value(&args, "--trials")?;
    anyhow::ensure!(trials.is_none_or(|k| (1..=100).contains(&k)), "--trials must be 1..=100");
    Ok(Opts { cidrs, tables, trials, per_cidr, full, logs: value(&args, "--logs")?, model: Model::documented() })
}

/// Route each spec CIDR on its own, or each group through a prefix list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    PerCidr,
    Lists,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::PerCidr => "per-CIDR",
            Mode::Lists => "prefix lists",
        }
    }
}

/// The `k`-th spec CIDR (k < 2,048): `10.(1 + k / 256).(k % 256).0/24`.
fn cidr(k: usize) -> String {
    format!("10.{}.{}.0/24", 1 + k / 256, k % 256)
}

/// One candidate set of the spec: its CIDRs and routers.
#[derive(Clone, Debug)]
struct Set {
    cidrs: Vec<String>,
    /// Sorted (the spec is canonical: candidates sorted, unique).
    hosts: Vec<Ipv4Addr>,
    /// Index into `Vpc::routers` it starts on (failover worlds), `None` for the anchor.
    start: Option<usize>,
}

/// The spec: G1 (`n1` CIDRs on [A, B]), G2 (`n2` CIDRs on [A, B, C]), the anchor.
fn sets(vpc: &Vpc, n1: usize, n2: usize) -> Vec<Set> {
    let ip = |i: usize| vpc.routers[i].ip;
    vec![
        Set { cidrs: (0..n1).map(cidr).collect(), hosts: vec![ip(0), ip(1)], start: Some(0) },
        Set { cidrs: (n1..n1 + n2).map(cidr).collect(), hosts: vec![ip(0), ip(1), ip(2)], start: Some(2) },
        Set { cidrs: vec![ANCHOR.to_string()], hosts: vpc.members.iter().map(|m| m.ip).collect(), start: None },
    ]
}

fn spec_json(sets: &[Set]) -> String {
    let mut spec = serde_json::Map::new();
    for s in sets {
        let hosts: Vec<String> = s.hosts.iter().map(Ipv4Addr::to_string).collect();
        for c in &s.cidrs {
            spec.insert(c.clone(), serde_json::json!(hosts));
        }
    }
    serde_json::Value::Object(spec).to_string()
}

/// The group key vpcrouter gives a set.
fn group_key(hosts: &[Ipv4Addr]) -> String {
    Group::key_for(Family::V4, hosts)
}

impl Set {
    /// True when vpcrouter routes the set through a list in `mode` (a set of one CIDR, the
    /// anchor, is routed per CIDR: `ListMode::MIN_MEMBERS`).
    fn listed(&self, mode: Mode) -> bool {
        mode == Mode::Lists && self.cidrs.len() >= ListMode::MIN_MEMBERS
    }
}

/// Calls that create a list of `n` entries: one create, one modify per further 100.
fn list_calls(n: usize) -> usize {
    n.div_ceil(ENTRIES_PER_CALL).max(1)
}

/// The target the route of a set starts on.
fn start_target<'v>(vpc: &'v Vpc, set: &Set) -> &'v str {
    match set.start {
        Some(i) => &vpc.routers[i].instance,
        None => &vpc.members[0].instance,
    }
}

/// Creates a set's prefix list in moto as vpcrouter would (name, tags, max entries), with
/// its entries; returns its id.
async fn create_list(ec2: &Client, vpc: &Vpc, set: &Set) -> anyhow::Result<String> {
    let key = group_key(&set.hosts);
    let name = format!("vpcrouter-{}-{key}", vpc.id);
    let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
    let tags = TagSpecification::builder()
        .resource_type(ResourceType::PrefixList)
        .tags(tag("Name", &name))
        .tags(tag(CLUSTER_TAG, &vpc.id))
        .tags(tag(GROUP_TAG, &key))
        .build();
    let entry = |c: &String| AddPrefixListEntry::builder().cidr(c).description("vpcrouter").build();
    let mut chunks = set.cidrs.chunks(ENTRIES_PER_CALL);
    let first = chunks.next().unwrap_or_default();
    let out = ec2
        .create_managed_prefix_list()
        .prefix_list_name(&name)
        .address_family("IPv4")
        .max_entries(i32::try_from(list_size(set.cidrs.len(), ListMode::EC2_MAX_ENTRIES))?)
        .set_entries(Some(first.iter().map(entry).collect()))
        .tag_specifications(tags)
        .send()
        .await?;
    let list = out.prefix_list().context("no list")?;
    let id = list.prefix_list_id().context("no list id")?.to_string();
    let mut version = list.version().context("no list version")?;
    for chunk in chunks {
        let out = ec2
            .modify_managed_prefix_list()
            .prefix_list_id(&id)
            .current_version(version)
            .set_add_entries(Some(chunk.iter().map(entry).collect()))
            .send()
            .await?;
        version = out.prefix_list().and_then(|l| l.version()).unwrap_or(version + 1);
    }
    Ok(id)
}

/// The start state, created in moto directly: per-CIDR routes, or each set's list and one
/// route to it per table. Returns each set's destination strings (CIDRs or list id).
async fn precreate(ec2: &Client, vpc: &Vpc, sets: &[Set], mode: Mode) -> anyhow::Result<Vec<Vec<String>>> {
    let mut dests = Vec::new();
    for set in sets {
        let target = start_target(vpc, set);
        let wanted = if set.listed(mode) { vec![create_list(ec2, vpc, set).await?] } else { set.cidrs.clone() };
        for rtb in &vpc.tables {
            for dest in &wanted {
                let req = ec2.create_route().route_table_id(rtb).instance_id(target);
                let req = if dest.starts_with("pl-") {
                    req.destination_prefix_list_id(dest)
                } else {
                    req.destination_cidr_block(dest)
                };
                req.send().await?;
            }
        }
        dests.push(wanted);
    }
    Ok(dests)
}

/// moto's time per write: `MOTO_PROBES` sequential ReplaceRoute calls of G1's first route
/// in table 1 that leave it where it is.
async fn moto_replace_time(ec2: &Client, vpc: &Vpc, dest: &str, mode: Mode) -> anyhow::Result<Duration> {
    let t = Instant::now();
    for _ in 0..MOTO_PROBES {
        let req = ec2.replace_route().route_table_id(&vpc.tables[0]).instance_id(&vpc.routers[0].instance);
        let req = match mode {
            Mode::PerCidr => req.destination_cidr_block(dest),
            Mode::Lists => req.destination_prefix_list_id(dest),
        };
        req.send().await?;
    }
    Ok(t.elapsed() / MOTO_PROBES as u32)
}

/// moto's time per write in an empty VPC: CreateRoute + DeleteRoute pairs of `PROBE`.
async fn moto_create_delete_time(ec2: &Client, vpc: &Vpc) -> anyhow::Result<Duration> {
    let t = Instant::now();
    for _ in 0..MOTO_PROBES / 2 {
        let rtb = &vpc.tables[0];
        ec2.create_route()
            .route_table_id(rtb)
            .destination_cidr_block(PROBE)
            .instance_id(&vpc.members[0].instance)
            .send()
            .await?;
        ec2.delete_route().route_table_id(rtb).destination_cidr_block(PROBE).send().await?;
    }
    Ok(t.elapsed() / (2 * (MOTO_PROBES / 2)) as u32)
}

/// Every route of the VPC's tables whose destination is a CIDR or a prefix list: destination
/// → the router IP of each table's route (`None`: another target), read from moto directly
/// in one DescribeRouteTables call of the VPC.
async fn route_map(ec2: &Client, vpc: &Vpc) -> anyhow::Result<HashMap<String, Vec<Option<Ipv4Addr>>>> {
    let out =
        ec2.describe_route_tables().filters(Filter::builder().name("vpc-id").values(&vpc.id).build()).send().await?;
    let mut map: HashMap<String, Vec<Option<Ipv4Addr>>> = HashMap::new();
    for table in
        out.route_tables().iter().filter(|t| t.route_table_id().is_some_and(|id| vpc.tables.iter().any(|x| x == id)))
    {
        for r in table.routes() {
            let Some(dest) = r.destination_cidr_block().or(r.destination_prefix_list_id()) else { continue };
            let target = r.network_interface_id().or(r.instance_id()).and_then(|id| vpc.owners.get(id).copied());
            map.entry(dest.to_string()).or_default().push(target);
        }
    }
    Ok(map)
}

/// Routes per (set index, router IP or `None` for other targets); `dests[s]` are set s's
/// destinations.
fn placement(
    map: &HashMap<String, Vec<Option<Ipv4Addr>>>,
    dests: &[Vec<String>],
) -> HashMap<(usize, Option<Ipv4Addr>), usize> {
    let mut by = HashMap::new();
    for (s, ds) in dests.iter().enumerate() {
        for target in ds.iter().filter_map(|d| map.get(d)).flatten() {
            *by.entry((s, *target)).or_insert(0) += 1;
        }
    }
    by
}

/// vpcrouter's lists in moto (cluster tag = the VPC id): group key → (id, sorted entries).
async fn owned_lists(ec2: &Client, vpc: &Vpc) -> anyhow::Result<BTreeMap<String, (String, Vec<String>)>> {
    let out = ec2.describe_managed_prefix_lists().send().await?;
    let mut lists = BTreeMap::new();
    for l in out.prefix_lists() {
        let tag = |key: &str| l.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value());
        let deleted = matches!(l.state(), Some(PrefixListState::DeleteComplete | PrefixListState::DeleteInProgress));
        if tag(CLUSTER_TAG) != Some(vpc.id.as_str()) || deleted {
            continue;
        }
        let (Some(id), Some(group)) = (l.prefix_list_id(), tag(GROUP_TAG)) else { continue };
        let got = ec2.get_managed_prefix_list_entries().prefix_list_id(id).send().await?;
        let mut entries: Vec<String> = got.entries().iter().filter_map(|e| e.cidr().map(str::to_string)).collect();
        entries.sort();
        lists.insert(group.to_string(), (id.to_string(), entries));
    }
    Ok(lists)
}

/// One case's world: moto, the VPC, the spec and health files.
struct World {
    mode: Mode,
    rt: tokio::runtime::Runtime,
    ec2: Client,
    vpc: Vpc,
    sets: Vec<Set>,
    /// Each set's destinations in moto (failover worlds; empty lists for start-up worlds
    /// until the lists exist).
    dests: Vec<Vec<String>>,
    spec: PathBuf,
    health: PathBuf,
    moto_write: Duration,
    build: Duration,
    _dir: tempfile::TempDir,
    moto: Moto,
}

impl World {
    /// `n1` + `n2` spec CIDRs × `t` tables; with the start state in moto when `precreated`.
    fn build(mode: Mode, n1: usize, n2: usize, t: usize, precreated: bool) -> anyhow::Result<World> {
        let started = Instant::now();
        let moto = Moto::start()?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let ec2 = rt.block_on(world::client(&moto.endpoint));
        let vpc = rt.block_on(build_vpc(&ec2, t, 3))?;
        let sets = sets(&vpc, n1, n2);
        let (dests, moto_write) = if precreated {
            let dests = rt.block_on(precreate(&ec2, &vpc, &sets, mode))?;
            let probe = rt.block_on(moto_replace_time(&ec2, &vpc, &dests[0][0], mode))?;
            (dests, probe)
        } else {
            let dests = sets.iter().map(|s| if s.listed(mode) { Vec::new() } else { s.cidrs.clone() }).collect();
            (dests, rt.block_on(moto_create_delete_time(&ec2, &vpc))?)
        };
        let dir = tempfile::tempdir()?;
        let (spec, health) = (dir.path().join("spec.json"), dir.path().join("health.json"));
        std::fs::write(&spec, spec_json(&sets))?;
        std::fs::write(&health, r#"{"failed": []}"#)?;
        let build = started.elapsed();
        Ok(World { mode, rt, ec2, vpc, sets, dests, spec, health, moto_write, build, _dir: dir, moto })
    }

    fn tables(&self) -> usize {
        self.vpc.tables.len()
    }

    /// Routes of G1 expected in moto: its CIDRs × tables, or one per table.
    fn g1_routes(&self) -> usize {
        self.dests[0].len() * self.tables()
    }

    fn routes(&self) -> anyhow::Result<HashMap<String, Vec<Option<Ipv4Addr>>>> {
        self.rt.block_on(route_map(&self.ec2, &self.vpc))
    }

    fn placement(&self) -> anyhow::Result<HashMap<(usize, Option<Ipv4Addr>), usize>> {
        Ok(placement(&self.routes()?, &self.dests))
    }

    /// The router (index) carrying every G1 route, if one does.
    fn carrier(&self) -> anyhow::Result<Option<usize>> {
        let by = self.placement()?;
        Ok((0..2).find(|&i| by.get(&(0, Some(self.vpc.routers[i].ip))).copied() == Some(self.g1_routes())))
    }

    fn fail(&self, failed: &[Ipv4Addr]) -> anyhow::Result<()> {
        write_failed(&self.health, failed)
    }

    fn daemon_args(&self, model: &Model) -> Vec<String> {
        let mut args = daemon_args(&self.vpc.id, &self.spec, &self.health, Some(model));
        if self.mode == Mode::Lists {
            args.push("--prefix-lists".into());
        }
        args
    }

    fn start(&self, proxy: &FaultProxy, model: &Model) -> anyhow::Result<Daemon> {
        Daemon::builder(&self.moto).endpoint(&proxy.endpoint).args(self.daemon_args(model)).start()
    }
}

/// The last lines of the log, for error messages.
fn tail(d: &Daemon) -> String {
    let log = d.log();
    let lines: Vec<&str> = log.lines().collect();
    format!("--- {} ---\n{}", d.log_file().display(), lines[lines.len().saturating_sub(40)..].join("\n"))
}

fn check_alive(d: &mut Daemon) -> anyhow::Result<()> {
    match d.exited() {
        Some(s) => anyhow::bail!("vpcrouter exited ({s})\n{}", tail(d)),
        None => Ok(()),
    }
}

/// Keeps a copy of the daemon's log in `--logs DIR`.
fn keep_log(opts: &Opts, d: &Daemon, name: &str) -> anyhow::Result<()> {
    let Some(dir) = &opts.logs else { return Ok(()) };
    std::fs::create_dir_all(dir)?;
    std::fs::copy(d.log_file(), dir.join(format!("{name}.log")))?;
    Ok(())
}

/// One measurement: a failover or a start-up.
struct Trial {
    took: Duration,
    /// vpcrouter's own failover figure (`/status` `last_failover.seconds`).
    engine: Option<Duration>,
    tally: Tally,
}

/// Sleeps before the next poll: as long as the last poll took, 10 ms to 1 s.
fn poll_pause(took: Duration) {
    std::thread::sleep(took.clamp(Duration::from_millis(10), Duration::from_secs(1)));
}

/// Fails router `from` (carrying G1) and waits until every G1 route is on `to`; warns when
/// G2 left C.
fn failover(w: &World, proxy: &FaultProxy, d: &mut Daemon, from: usize, timeout: Duration) -> anyhow::Result<Trial> {
    let (failed, want) = (w.vpc.routers[from].ip, w.vpc.routers[1 - from].ip);
    w.fail(&[failed])?;
    let t0 = Instant::now();
    let took = loop {
        let p = Instant::now();
        let by = w.placement()?;
        if by.get(&(0, Some(want))).copied() == Some(w.g1_routes()) {
            break t0.elapsed();
        }
        if t0.elapsed() > timeout {
            check_alive(d)?;
            anyhow::bail!(
                "{failed} failed: after {timeout:?} G1's routes are {by:?} (want {} on {want})\n{}",
                w.g1_routes(),
                tail(d)
            );
        }
        poll_pause(p.elapsed());
    };
    std::thread::sleep(Duration::from_secs(1)); // late writes are counted too
    let by = w.placement()?;
    let g2 = w.dests[1].len() * w.tables();
    if by.get(&(1, Some(w.vpc.routers[2].ip))).copied() != Some(g2) {
        eprintln!("  warning: G2 is no longer all on C after the failover: {by:?}");
    }
    let engine = status(d.port).and_then(|s| s["last_failover"]["seconds"].as_f64()).map(Duration::from_secs_f64);
    Ok(Trial { took, engine, tally: proxy.tally_since(t0) })
}

/// Case 1 or 2: `trials` failovers of G1's router.
fn run_failover(w: &World, opts: &Opts, trials: usize, expected: usize, log: &str) -> anyhow::Result<Vec<Trial>> {
    let proxy = FaultProxy::start(&w.moto.endpoint)?;
    proxy.set_model(Some(opts.model))?;
    let since = Instant::now();
    let mut d = w.start(&proxy, &opts.model)?;
    let ready = wait_for(Duration::from_secs(120), "the first reconcile", || {
        status(d.port)?["last_reconcile"].is_object().then_some(())
    });
    check_alive(&mut d)?;
    ready.map_err(|e| anyhow::anyhow!("{e}\n{}", tail(&d)))?;
    std::thread::sleep(Duration::from_secs(1));
    let start_writes = proxy.tally_since(since).writes;
    if start_writes > 0 {
        eprintln!("  warning: {start_writes} writes at start-up (expected none: the start state was not adopted)");
    }
    let timeout = 3 * opts.model.write_bound(expected as u64) + Duration::from_secs(30);
    let mut out: Vec<Trial> = Vec::new();
    for k in 0..trials {
        let pause =
            out.last().map_or(Duration::ZERO, |t| refill_time(&opts.model, &t.tally)).max(Duration::from_secs(1));
        std::thread::sleep(pause);
        let from = w.carrier()?.context("G1's routes are not all on A or on B")?;
        let t = failover(w, &proxy, &mut d, from, timeout).with_context(|| format!("trial {}", k + 1))?;
        eprintln!(
            "  trial {}: {} ms, {} writes, {} throttled",
            k + 1,
            t.took.as_millis(),
            t.tally.writes,
            t.tally.throttled_writes + t.tally.throttled_reads
        );
        out.push(t);
        w.fail(&[])?;
        wait_for(Duration::from_secs(30), "vpcrouter to see no failed host", || {
            status(d.port)?["failed_hosts"].as_array().is_some_and(Vec::is_empty).then_some(())
        })
        .map_err(|e| anyhow::anyhow!("{e}\n{}", tail(&d)))?;
    }
    keep_log(opts, &d, log)?;
    Ok(out)
}

/// True when moto shows the start-up done: each destination of each set routed in every
/// table to one router of the set (the same in every table), and in prefix-list mode each
/// set's list holding exactly its CIDRs. Fills in the lists' ids in `w.dests`.
fn started_up(w: &mut World) -> anyhow::Result<bool> {
    let routes = w.routes()?;
    if w.mode == Mode::Lists {
        // The lists' entries are read only once every set has a routed list.
        let listed = w.sets.iter().filter(|s| s.listed(w.mode)).count();
        if routes.keys().filter(|d| d.starts_with("pl-")).count() < listed {
            return Ok(false);
        }
        let owned = w.rt.block_on(owned_lists(&w.ec2, &w.vpc))?;
        for (s, set) in w.sets.iter().enumerate().filter(|(_, s)| s.listed(w.mode)) {
            let Some((id, entries)) = owned.get(&group_key(&set.hosts)) else { return Ok(false) };
            let mut want = set.cidrs.clone();
            want.sort();
            if *entries != want {
                return Ok(false);
            }
            w.dests[s] = vec![id.clone()];
        }
    }
    let tables = w.tables();
    Ok(w.sets.iter().zip(&w.dests).all(|(set, dests)| {
        dests.iter().all(|d| {
            routes.get(d).is_some_and(|targets| {
                let first = targets[0];
                targets.len() == tables
                    && targets.iter().all(|t| *t == first)
                    && first.is_some_and(|ip| set.hosts.contains(&ip))
            })
        })
    }))
}

/// Case 3 or 4: vpcrouter on an empty VPC, until moto shows every route.
fn run_startup(w: &mut World, opts: &Opts, expected: usize, log: &str) -> anyhow::Result<Trial> {
    let proxy = FaultProxy::start(&w.moto.endpoint)?;
    proxy.set_model(Some(opts.model))?;
    let timeout = 3 * opts.model.write_bound(expected as u64) + Duration::from_secs(60);
    let t0 = Instant::now();
    let mut d = w.start(&proxy, &opts.model)?;
    let took = loop {
        let p = Instant::now();
        if started_up(w)? {
            break t0.elapsed();
        }
        if t0.elapsed() > timeout {
            check_alive(&mut d)?;
            anyhow::bail!("not started up after {timeout:?}: {:?}\n{}", w.placement()?, tail(&d));
        }
        poll_pause(p.elapsed());
    };
    std::thread::sleep(Duration::from_secs(1)); // late writes are counted too
    let tally = proxy.tally_since(t0);
    eprintln!(
        "  start-up: {} ms, {} writes, {} throttled",
        took.as_millis(),
        tally.writes,
        tally.throttled_writes + tally.throttled_reads
    );
    keep_log(opts, &d, log)?;
    Ok(Trial { took, engine: None, tally })
}

/// One row of the table, and its median.
struct Row {
    case: &'static str,
    mode: Mode,
    scale: String,
    expected: usize,
    moto_write: Duration,
    trials: Vec<Trial>,
}

impl Row {
    fn median(&self) -> Duration {
        let mut took: Vec<Duration> = self.trials.iter().map(|t| t.took).collect();
        took.sort();
        quantile(&took, 0.5)
    }

    fn print(&self, model: &Model) {
        let mut took: Vec<Duration> = self.trials.iter().map(|t| t.took).collect();
        took.sort();
        let (median, p99) = (quantile(&took, 0.5), quantile(&took, 0.99));
        let bound = model.write_bound(self.expected as u64);
        let moto_total = self.moto_write * self.expected as u32;
        let writes: Vec<u64> = self.trials.iter().map(|t| t.tally.writes).collect();
        let throttled: Vec<u64> =
            self.trials.iter().map(|t| t.tally.throttled_writes + t.tally.throttled_reads).collect();
        let mut engine: Vec<Duration> = self.trials.iter().filter_map(|t| t.engine).collect();
        engine.sort();
        let ratio = |d: Duration| median.as_secs_f64() / d.as_secs_f64();
        let (engine, engine_ratio) = match engine.is_empty() {
            true => ("-".to_string(), "-".to_string()),
            false => {
                let m = quantile(&engine, 0.5);
                (ms(m), format!("{:.2}", m.as_secs_f64() / (bound + moto_total).as_secs_f64()))
            }
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {} | {:.2} | {engine} | {engine_ratio} |",
            self.case,
            self.mode.label(),
            self.scale,
            took.len(),
            ms(median),
            ms(p99),
            spread(&writes),
            self.expected,
            spread(&throttled),
            ms(bound),
            ratio(bound),
            self.moto_write.as_secs_f64() * 1e3,
            ms(bound + moto_total),
            ratio(bound + moto_total),
        );
    }
}

/// Fails early when the binary lacks `--prefix-lists` or the client-limit flags.
fn check_binary() -> anyhow::Result<()> {
    let (_, help, _) = daemon::run_once(&["--help"]);
    for flag in ["--prefix-lists", "--ec2-write-burst"] {
        anyhow::ensure!(
            help.contains(flag),
            "{} has no {flag} option: build a newer vpcrouter",
            daemon::binary().display()
        );
    }
    Ok(())
}

fn run() -> anyhow::Result<()> {
    let opts = parse_opts()?;
    check_binary()?;
    let (n, t, m) = (opts.cidrs, opts.tables, opts.per_cidr);
    let (n1, n2) = (n.div_ceil(2), n / 2);
    let model = opts.model;
    let (r, wb) = (model.read_bucket, model.write_bucket);
    let started = Instant::now();
    let mut rows = Vec::new();

    let trials = opts.trials.unwrap_or(3);
    eprintln!("failover, prefix lists, {n}×{t}: {trials} trials");
    let w = World::build(Mode::Lists, n1, n2, t, true)?;
    eprintln!("  world built in {:.1} s", w.build.as_secs_f64());
    let results = run_failover(&w, &opts, trials, t, "failover-lists").context("failover, prefix lists")?;
    rows.push(Row {
        case: "failover",
        mode: Mode::Lists,
        scale: format!("{n}×{t}"),
        expected: t,
        moto_write: w.moto_write,
        trials: results,
    });
    drop(w);

    let trials = opts.trials.unwrap_or(1);
    eprintln!("failover, per-CIDR, {}×{t}: {trials} trials", 2 * m);
    let w = World::build(Mode::PerCidr, m, m, t, true)?;
    eprintln!("  world built in {:.1} s", w.build.as_secs_f64());
    let per_cidr_moto = w.moto_write;
    let results = run_failover(&w, &opts, trials, m * t, "failover-per-cidr").context("failover, per-CIDR")?;
    rows.push(Row {
        case: "failover",
        mode: Mode::PerCidr,
        scale: format!("{}×{t}", 2 * m),
        expected: m * t,
        moto_write: w.moto_write,
        trials: results,
    });
    drop(w);

    // Two lists and a route to each per table; the anchor's route per table.
    let lists_startup = list_calls(n1) + list_calls(n2) + 2 * t + t;
    let mut results = Vec::new();
    for k in 0..opts.trials.unwrap_or(1) {
        eprintln!("start-up, prefix lists, {n}×{t}: trial {}", k + 1);
        let mut w = World::build(Mode::Lists, n1, n2, t, false)?;
        results.push((
            run_startup(&mut w, &opts, lists_startup, "startup-lists").context("start-up, prefix lists")?,
            w.moto_write,
        ));
    }
    let moto_write = results.iter().map(|r| r.1).sum::<Duration>() / results.len() as u32;
    let trials = results.into_iter().map(|r| r.0).collect();
    rows.push(Row {
        case: "start-up",
        mode: Mode::Lists,
        scale: format!("{n}×{t}"),
        expected: lists_startup,
        moto_write,
        trials,
    });

    let per_cidr_startup = (2 * m + 1) * t;
    let mut results = Vec::new();
    for k in 0..opts.trials.unwrap_or(1) {
        eprintln!("start-up, per-CIDR, {}×{t}: trial {}", 2 * m, k + 1);
        let mut w = World::build(Mode::PerCidr, m, m, t, false)?;
        results.push((
            run_startup(&mut w, &opts, per_cidr_startup, "startup-per-cidr").context("start-up, per-CIDR")?,
            w.moto_write,
        ));
    }
    let moto_write = results.iter().map(|r| r.1).sum::<Duration>() / results.len() as u32;
    let trials = results.into_iter().map(|r| r.0).collect();
    rows.push(Row {
        case: "start-up",
        mode: Mode::PerCidr,
        scale: format!("{}×{t}", 2 * m),
        expected: per_cidr_startup,
        moto_write,
        trials,
    });

    println!("\nPrefix-list routes through the EC2 model (reads {} ms, {} burst / {} per s; writes {} ms, {} burst / {} per s), client limits = the model's buckets; G1 = {n1} CIDRs on [A, B], G2 = {n2} on [A, B, C] (per-CIDR rows: {m} each), plus the anchor:\n",
        model.read_latency.as_millis(), r.burst, r.rate, model.write_latency.as_millis(), wb.burst, wb.rate);
    println!("| case | mode | CIDRs × tables | trials | median ms | p99 ms | writes | expected writes | throttled | bound ms | median / bound | moto ms per write | bound + expected × moto ms | median / (bound + expected × moto) | vpcrouter median ms | vpcrouter median / (bound + expected × moto) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        row.print(&model);
    }
    let full = |writes: usize, moto: Duration| {
        let bound = model.write_bound(writes as u64);
        format!(
            "{writes} writes, bound {:.0} s (+ {:.0} s of moto)",
            bound.as_secs_f64(),
            (moto * writes as u32).as_secs_f64()
        )
    };
    let (lists_failover, lists_start) = (rows[0].median(), rows[2].median());
    let full_failover = model.write_bound((n1 * t) as u64);
    let full_startup = model.write_bound(((n + 1) * t) as u64);
    println!();
    if !opts.full {
        println!(
            "Per-CIDR at full scale ({n}×{t}), computed: failover {}; start-up {}.",
            full(n1 * t, per_cidr_moto),
            full((n + 1) * t, rows[3].moto_write)
        );
    }
    println!(
        "Full-scale per-CIDR bound / prefix-list median: failover {:.0} ×, start-up {:.0} ×.",
        full_failover.as_secs_f64() / lists_failover.as_secs_f64(),
        full_startup.as_secs_f64() / lists_start.as_secs_f64(),
    );
    let target = 2 * model.write_latency + rows[0].moto_write * t as u32;
    let writes_ok = rows[0].trials.iter().all(|x| x.tally.writes <= t as u64);
    let mut engine: Vec<Duration> = rows[0].trials.iter().filter_map(|x| x.engine).collect();
    engine.sort();
    let engine = (!engine.is_empty()).then(|| quantile(&engine, 0.5));
    let verdict = |ok: bool| if ok { "met" } else { "not met" };
    println!(
        "Target for the prefix-list failover: ≤ {t} writes ({}), ≤ 2 × {} ms + {t} × moto = {} ms: by vpcrouter's own figure {} ({} ms), end to end {} ({} ms, with the file plugin's 100 ms debounce and the polling).",
        verdict(writes_ok),
        model.write_latency.as_millis(),
        ms(target),
        verdict(engine.is_some_and(|e| e <= target)),
        engine.map_or("-".to_string(), ms),
        verdict(lists_failover <= target),
        ms(lists_failover),
    );
    println!("Whole run: {:.0} s.", started.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-prefix-lists: {e:#}");
            ExitCode::FAILURE
        }
    }
}
