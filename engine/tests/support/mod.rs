//! Fakes of the engine's ports and a harness that runs the engine against them, on
//! tokio's paused clock: time advances only when every task waits, so a failover of
//! minutes takes milliseconds and every instant is exact.
//!
//! * [`FakeVpc`]: a VPC held in memory, with a latency per read and per write, EC2's
//!   write bucket (burst, refill), an in-flight cap, reads that lag writes, injected
//!   faults, and EC2's refusals of writes planned from a stale state. Every write is
//!   logged with when it started and when it was answered.
//! * [`FakeLeadership`]: a lease that can be lost.
//! * [`RecordingAnnouncer`]: keeps every announcement the engine makes.
//! * [`Harness`]: the engine running on a task, fed through its event channel.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use vpcrouter_engine::ports::BoxFuture;
use vpcrouter_engine::{
    Announcement, Announcer, Engine, EngineConfig, EngineError, Event, Leadership, Permit, Ports, Quorum, Report,
    Status, StopSignal, Vpc, VpcError, WriteOutcome, Written,
};
use vpcrouter_planner::model::{
    Applied, Cidr, Dest, Eni, Instance, Route, RouteAction, RouteTable, RouterTarget, TableSelection, VpcState,
};
use vpcrouter_planner::plan::FailbackPolicy;
use vpcrouter_plugin_api::{HealthReport, HostList, Ipv4, RouteSpec};

/// The routers of the fixtures: A, B, C.
pub const A: &str = "10.1.0.1";
/// See [`A`].
pub const B: &str = "10.1.0.2";
/// See [`A`].
pub const C: &str = "10.1.0.3";

/// Now on the paused clock.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("fixture IP")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `n` CIDRs `10.100.k.0/24`.
pub fn cidrs(n: usize) -> Vec<String> {
    (0..n).map(|k| format!("10.100.{k}.0/24")).collect()
}

/// The route tables `rtb-0` .. of a world of `n` tables.
pub fn table_ids(n: usize) -> Vec<String> {
    (0..n).map(|t| format!("rtb-{t}")).collect()
}

/// A VPC with `tables` route tables (one subnet each) and the routers A, B and C (one
/// instance and interface each, in a subnet of their own).
pub fn world(tables: usize) -> VpcState {
    let router = |name: &str, addr: &str| Instance {
        id: format!("i-{name}"),
        enis: vec![Eni {
            id: format!("eni-{name}"),
            subnet_id: "sn-routers".into(),
            private_ips: vec![ip(addr)],
            device_index: 0,
            source_dest_check: Some(false),
        }],
    };
    let local = Route {
        dest: Some(Dest::Cidr(Cidr::parse("10.0.0.0/8").expect("cidr"))),
        instance_id: None,
        eni_id: None,
        other_target: Some("local".into()),
        blackhole: false,
    };
    let table = |t: usize| RouteTable {
        id: format!("rtb-{t}"),
        subnets: vec![format!("sn-{t}")],
        routes: vec![local.clone()],
        ..RouteTable::default()
    };
    VpcState {
        vpc_id: "vpc-1".into(),
        subnets: (0..tables).map(|t| format!("sn-{t}").as_str().into()).chain(["sn-routers".into()]).collect(),
        route_tables: (0..tables).map(table).collect(),
        instances: vec![router("a", A), router("b", B), router("c", C)],
        ..VpcState::default()
    }
}

/// The target of a router of [`world`].
pub fn target(router: &str) -> RouterTarget {
    let name = match router {
        A => "a",
        B => "b",
        C => "c",
        other => panic!("no fixture router {other}"),
    };
    RouterTarget { ip: ip(router), instance_id: format!("i-{name}"), eni_id: format!("eni-{name}") }
}

/// Puts the route of `cidr` in every table of `state` on `router`.
pub fn route_all(state: &mut VpcState, cidrs: &[String], router: &str) {
    let tables: Vec<String> = state.route_tables.iter().map(|t| t.id.clone()).collect();
    for rtb in tables {
        for c in cidrs {
            let dest = Dest::Cidr(Cidr::parse(c).expect("cidr"));
            state.apply(&RouteAction::Create { rtb: rtb.clone(), dest, target: target(router) }, &Applied::default());
        }
    }
}

/// A spec of `cidrs`, each with `routers` in this order.
pub fn spec(cidrs: &[String], routers: &[&str]) -> RouteSpec {
    vpcrouter_plugin_api::spec::from_pairs(cidrs.iter().map(|c| (c.as_str(), routers.to_vec()))).expect("fixture spec")
}

/// An engine configuration managing the tables of a world of `tables`, no periodic recheck.
pub fn config(tables: usize) -> EngineConfig {
    EngineConfig {
        vpc_id: "vpc-1".into(),
        ignore: Vec::new(),
        recheck: None,
        dry_run: false,
        watcher_name: "test".into(),
        first_health_wait: Duration::from_secs(1),
        lists: None,
        quota: 500,
        failback: FailbackPolicy::Never,
        tables: TableSelection::Ids(table_ids(tables).into_iter().collect()),
        zone_affinity: false,
        consistency_window: Duration::from_secs(5),
    }
}

/// One write the fake VPC received.
#[derive(Clone, Debug)]
pub struct WriteRecord {
    /// When the engine started it (the fake received it).
    pub started: Instant,
    /// When it was answered.
    pub answered: Instant,
    /// What it asked.
    pub action: RouteAction,
    /// Whether the fake applied it.
    pub applied: bool,
}

/// The number of `writes` and the first three, for assertion messages.
pub fn brief(writes: &[&WriteRecord]) -> String {
    let first: Vec<String> =
        writes.iter().take(3).map(|w| format!("{} {} -> {:?}", w.action.rtb(), w.action.dest(), w.router())).collect();
    format!("{} write(s), first: {}", writes.len(), first.join("; "))
}

impl WriteRecord {
    /// The router the write pointed a route at.
    pub fn router(&self) -> Option<Ipv4Addr> {
        self.action.new_router()
    }
}

/// A fault to answer a write with: the first write `matches` accepts gets `error`.
struct Fault {
    matches: Box<dyn Fn(&RouteAction) -> bool + Send>,
    error: VpcError,
}

/// EC2's write bucket.
struct Bucket {
    burst: f64,
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes a token, or says how long until one is there.
    fn take(&mut self, t: Instant) -> Result<(), Duration> {
        self.tokens = (self.tokens + t.saturating_duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = t;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// What the fake VPC holds.
struct Inner {
    /// The VPC as written.
    truth: VpcState,
    /// The VPC as reads show it (writes become visible `lag` after they are applied).
    visible: VpcState,
    /// Writes applied but not visible yet: (visible at, action, answer).
    hidden: VecDeque<(Instant, RouteAction, Applied)>,
    log: Vec<WriteRecord>,
    faults: Vec<Fault>,
    read_faults: VecDeque<VpcError>,
    lists: u64,
}

/// A VPC in memory (see the module doc). Cheap to clone: clones share the VPC.
#[derive(Clone)]
pub struct FakeVpc(Arc<Core>);

impl std::ops::Deref for FakeVpc {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.0
    }
}

/// What every clone of a [`FakeVpc`] shares.
pub struct Core {
    inner: Mutex<Inner>,
    read_latency: Duration,
    write_latency: Duration,
    lag: Mutex<Duration>,
    bucket: Mutex<Bucket>,
    slots: Arc<Semaphore>,
    reads: AtomicU64,
}

impl FakeVpc {
    /// A VPC holding `state`, answering reads in 150 ms and writes in 100 ms, with EC2's
    /// write bucket (50 burst, 5 per second) and 100 writes in flight at most.
    pub fn new(state: VpcState) -> FakeVpc {
        FakeVpc::with(state, Duration::from_millis(150), Duration::from_millis(100), 50, 5.0)
    }

    /// A VPC with these latencies and write bucket.
    pub fn with(state: VpcState, read: Duration, write: Duration, burst: u32, rate: f64) -> FakeVpc {
        let inner = Inner {
            visible: state.clone(),
            truth: state,
            hidden: VecDeque::new(),
            log: Vec::new(),
            faults: Vec::new(),
            read_faults: VecDeque::new(),
            lists: 0,
        };
        let bucket = Bucket { burst: f64::from(burst), rate, tokens: f64::from(burst), at: now() };
        FakeVpc(Arc::new(Core {
            inner: Mutex::new(inner),
            read_latency: read,
            write_latency: write,
            lag: Mutex::new(Duration::ZERO),
            bucket: Mutex::new(bucket),
            slots: Arc::new(Semaphore::new(100)),
            reads: AtomicU64::new(0),
        }))
    }

    /// Reads show each write `lag` after it was applied (EC2's eventual consistency).
    pub fn set_read_lag(&self, lag: Duration) {
        *lock(&self.lag) = lag;
    }

    /// The next write `matches` accepts is refused with `error`.
    pub fn fail_write(&self, matches: impl Fn(&RouteAction) -> bool + Send + 'static, error: VpcError) {
        lock(&self.inner).faults.push(Fault { matches: Box::new(matches), error });
    }

    /// The next read fails with `error`.
    pub fn fail_read(&self, error: VpcError) {
        lock(&self.inner).read_faults.push_back(error);
    }

    /// Changes the VPC behind the engine's back (visible to reads at once).
    pub fn change(&self, action: &RouteAction) {
        let mut inner = lock(&self.inner);
        inner.truth.apply(action, &Applied::default());
        inner.visible.apply(action, &Applied::default());
        // A later change supersedes the earlier writes not visible yet.
        inner.hidden.retain(|(_, a, _)| (a.rtb(), a.dest()) != (action.rtb(), action.dest()));
    }

    /// Every write received so far.
    pub fn writes(&self) -> Vec<WriteRecord> {
        lock(&self.inner).log.clone()
    }

    /// Reads made so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    /// The VPC as written.
    pub fn truth(&self) -> VpcState {
        lock(&self.inner).truth.clone()
    }

    /// How many instance routes of the VPC point at `router`.
    pub fn routes_on(&self, router: &str) -> usize {
        let t = target(router);
        let inner = lock(&self.inner);
        let routes = inner.truth.route_tables.iter().flat_map(|rt| rt.routes.iter());
        routes.filter(|r| r.instance_id.as_deref() == Some(t.instance_id.as_str())).count()
    }

    /// Applies `action` to `state` as EC2 would, or refuses it as EC2 refuses a write
    /// planned from a stale state.
    fn check(state: &VpcState, action: &RouteAction) -> Result<(), VpcError> {
        let stale = |what: &str| VpcError { message: format!("stale: {what}"), stale: true, transient: false };
        let Some(table) = state.route_tables.iter().find(|t| t.id == action.rtb()) else {
            return if action.is_route() { Err(stale("no such route table")) } else { Ok(()) };
        };
        let exists = table.routes.iter().any(|r| r.dest.as_ref() == Some(&action.dest()));
        match action {
            RouteAction::Create { .. } if exists => Err(stale("RouteAlreadyExists")),
            RouteAction::Replace { .. } | RouteAction::Delete { .. } if !exists => Err(stale("InvalidRoute.NotFound")),
            _ => Ok(()),
        }
    }

    fn answer(&self, action: &RouteAction, started: Instant) -> WriteOutcome {
        let mut inner = lock(&self.inner);
        let t = now();
        let fault = inner.faults.iter().position(|f| (f.matches)(action)).map(|i| inner.faults.remove(i).error);
        let result = match fault {
            Some(e) => Err(e),
            None => FakeVpc::check(&inner.truth, action),
        };
        inner.log.push(WriteRecord { started, answered: t, action: action.clone(), applied: result.is_ok() });
        if let Err(e) = result {
            return WriteOutcome::Failed(e);
        }
        let applied = match action {
            RouteAction::CreateList { .. } => {
                inner.lists += 1;
                Applied { list: Some((format!("pl-{}", inner.lists), 1)) }
            }
            _ => Applied::default(),
        };
        inner.truth.apply(action, &applied);
        let lag = *lock(&self.lag);
        if lag.is_zero() {
            inner.visible.apply(action, &applied);
        } else {
            inner.hidden.push_back((t + lag, action.clone(), applied.clone()));
        }
        WriteOutcome::Done(applied)
    }
}

impl Vpc for FakeVpc {
    fn read(&self) -> BoxFuture<'_, Result<VpcState, VpcError>> {
        Box::pin(async move {
            tokio::time::sleep(self.read_latency).await;
            self.reads.fetch_add(1, Ordering::SeqCst);
            let mut inner = lock(&self.inner);
            if let Some(e) = inner.read_faults.pop_front() {
                return Err(e);
            }
            let t = now();
            while inner.hidden.front().is_some_and(|(at, _, _)| *at <= t) {
                if let Some((_, action, applied)) = inner.hidden.pop_front() {
                    inner.visible.apply(&action, &applied);
                }
            }
            Ok(inner.visible.clone())
        })
    }

    fn admit(&self) -> BoxFuture<'_, Permit> {
        Box::pin(async move {
            let slot = self.slots.clone().acquire_owned().await.expect("the semaphore is never closed");
            loop {
                let wait = lock(&self.bucket).take(now());
                match wait {
                    Ok(()) => return Permit::new(slot),
                    Err(d) => tokio::time::sleep(d).await,
                }
            }
        })
    }

    fn write(&self, permit: Permit, action: RouteAction, deadline: Option<Instant>) -> BoxFuture<'static, Written> {
        let me = self.clone();
        Box::pin(async move {
            let started = now();
            let latency = me.write_latency;
            let outcome = match deadline {
                Some(d) if started + latency > d => {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await;
                    WriteOutcome::Abandoned
                }
                _ => {
                    tokio::time::sleep(latency).await;
                    me.answer(&action, started)
                }
            };
            drop(permit);
            Written { outcome, calls: 1, throttled: 0 }
        })
    }

    fn expected_write(&self) -> Duration {
        self.write_latency * 2
    }
}

/// A cluster leadership whose lease can be lost.
pub struct FakeLeadership {
    /// How long a confirmation holds.
    pub lease: Duration,
    lost: AtomicBool,
    /// Confirmations asked for.
    pub confirms: AtomicU64,
    /// The local views published.
    pub published: Mutex<Vec<Report>>,
}

impl FakeLeadership {
    /// A leadership whose confirmations hold for `lease`.
    pub fn new(lease: Duration) -> FakeLeadership {
        FakeLeadership {
            lease,
            lost: AtomicBool::new(false),
            confirms: AtomicU64::new(0),
            published: Mutex::new(Vec::new()),
        }
    }

    /// From now on, confirmations fail.
    pub fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
    }
}

impl Leadership for FakeLeadership {
    fn quorum(&self) -> Quorum {
        Quorum::Majority
    }

    fn publish(&self, report: Report) {
        lock(&self.published).push(report);
    }

    fn confirm(&self) -> BoxFuture<'_, Result<Instant, String>> {
        Box::pin(async move {
            self.confirms.fetch_add(1, Ordering::SeqCst);
            if self.lost.load(Ordering::SeqCst) {
                Err("the leader key is held by 'other'".to_string())
            } else {
                Ok(now() + self.lease)
            }
        })
    }
}

/// An announcer that keeps every announcement, in order.
pub struct RecordingAnnouncer(pub Arc<Mutex<Vec<Announcement>>>);

impl Announcer for RecordingAnnouncer {
    fn announce(&self, a: Announcement) {
        lock(&self.0).push(a);
    }
}

/// The engine running against fakes.
pub struct Harness {
    /// The VPC.
    pub vpc: FakeVpc,
    /// The engine's events.
    pub tx: UnboundedSender<Event>,
    /// What the status server would show.
    pub status: Arc<Mutex<Status>>,
    /// The stop signal.
    pub stop: Arc<StopSignal>,
    /// Host lists given to the health plugin.
    pub hosts: Arc<Mutex<Vec<HostList>>>,
    /// What the engine announced, in order.
    pub announced: Arc<Mutex<Vec<Announcement>>>,
    /// The engine's task.
    pub task: JoinHandle<Result<(), EngineError>>,
}

impl Harness {
    /// Starts the engine (seeded) on `vpc`; with `leadership`, in cluster mode.
    pub fn start(cfg: EngineConfig, vpc: &FakeVpc, leadership: Option<Arc<FakeLeadership>>) -> Harness {
        let (tx, rx) = unbounded_channel();
        let hosts = Arc::new(Mutex::new(Vec::new()));
        let seen = hosts.clone();
        let announced = Arc::new(Mutex::new(Vec::new()));
        let ports = Ports {
            vpc: Arc::new(vpc.clone()),
            leadership: leadership.map(|l| l as Arc<dyn Leadership>),
            observer: Arc::new(()),
            announcer: Arc::new(RecordingAnnouncer(announced.clone())),
            watch: Box::new(move |h| {
                lock(&seen).push(h);
                true
            }),
        };
        let engine = Engine::new(cfg, ports, rx).with_seed(7);
        let (status, stop) = (engine.status(), engine.stop_handle());
        let task = tokio::spawn(engine.run());
        Harness { vpc: vpc.clone(), tx, status, stop, hosts, announced, task }
    }

    /// A world of `tables` tables whose `n` CIDRs are all routed on A, the engine started
    /// (with `cfg`, on `vpc` made from that world) with candidates `routers` and settled:
    /// nothing was written.
    pub async fn settled_on_a(
        n: usize,
        tables: usize,
        routers: &[&str],
        vpc: impl FnOnce(VpcState) -> FakeVpc,
        cfg: EngineConfig,
    ) -> (Harness, Vec<String>) {
        let c = cidrs(n);
        let mut state = world(tables);
        route_all(&mut state, &c, A);
        let h = Harness::start(cfg, &vpc(state), None);
        h.spec(spec(&c, routers));
        h.failed(&[]);
        h.settled().await;
        assert!(h.vpc.writes().is_empty(), "nothing to write at start: {}", h.vpc.writes().len());
        (h, c)
    }

    /// Sends the spec.
    pub fn spec(&self, spec: RouteSpec) {
        self.tx.send(Event::Spec(spec)).expect("engine running");
    }

    /// Sends a health report with these routers failed.
    pub fn failed(&self, routers: &[&str]) {
        let hosts = routers.iter().map(|r| Ipv4::from(ip(r)));
        self.tx.send(Event::Health(HealthReport::new(hosts, []))).expect("engine running");
    }

    /// Sends the drained routers.
    pub fn drained(&self, routers: &[&str]) {
        self.tx.send(Event::Drains(routers.iter().map(|r| ip(r)).collect())).expect("engine running");
    }

    /// A copy of what the engine announced so far.
    pub fn announced(&self) -> Vec<Announcement> {
        lock(&self.announced).clone()
    }

    /// A copy of the status.
    pub fn status(&self) -> Status {
        lock(&self.status).clone()
    }

    /// Waits (on the paused clock) until `done` holds, checking every 50 ms, at most `limit`.
    pub async fn until(&self, limit: Duration, mut done: impl FnMut(&Harness) -> bool) -> bool {
        let end = now() + limit;
        while now() < end {
            if done(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        done(self)
    }

    /// Waits until a reconcile has ended well and no write is left to make.
    pub async fn settled(&self) {
        let ok = self
            .until(Duration::from_secs(600), |h| {
                let st = h.status();
                st.last_result == "ok" && st.last_reconcile.is_some()
            })
            .await;
        assert!(ok, "the engine never finished a reconcile: {}", self.status().last_result);
    }

    /// Stops the engine and waits for it.
    pub async fn stop(self) -> Result<(), EngineError> {
        self.stop.request();
        let _ = self.tx.send(Event::Stop);
        self.task.await.expect("engine task")
    }
}
