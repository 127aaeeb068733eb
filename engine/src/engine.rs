//! The event loop and the engine's state: reconcile the VPC whenever the spec, health,
//! drains or leadership change, and periodically.
//!
//! Each wake-up takes every pending event (all messages are full snapshots, so only the
//! latest of each kind matters), then reconciles at most once. A reconcile always uses the
//! latest spec AND the latest health report (vpc-router 1.8 forgot failed hosts on timer-
//! and spec-triggered reconciles). While a reconcile writes, events are still taken (see
//! `execute`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::mpsc::UnboundedReceiver;
use vpcrouter_planner::model::Dest;
use vpcrouter_planner::model::{Cidr, Notice, RouteAction, TableSelection, VpcState};
use vpcrouter_planner::plan::{FailbackPolicy, ListMode};
use vpcrouter_plugin_api::{HealthReport, HostList, Ipv4, RouteSpec};

use crate::announce::{Announcement, Announcer};
use crate::event::{Event, StopSignal};
use crate::ledger::Ledger;
use crate::ports::{Leadership, Observer, Vpc};
use crate::quorum::{self, Report};
use crate::report::join_ips;
use crate::status::{FailoverSummary, Status};

/// The least time between two reconciles woken by failback timers (a failback that is due
/// but not planned, e.g. in a dry run, does not spin the loop).
pub(crate) const FAILBACK_WAKE_MIN: Duration = Duration::from_secs(1);

/// Now, on the engine's clock (tokio's: paused and advanced by tests).
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Why the engine ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A plugin closed its queue (crashed or misbehaved).
    #[error("{0}; vpcrouter cannot go on without it and stops (restart it, and check the plugin's log lines above)")]
    PluginGone(String),
}

/// Fixed settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The VPC to manage (for messages).
    pub vpc_id: String,
    /// `--ignore_routes`.
    pub ignore: Vec<Cidr>,
    /// `--route_recheck_interval`; `None` = no periodic recheck.
    pub recheck: Option<Duration>,
    /// `--dry-run`.
    pub dry_run: bool,
    /// Name of the watcher plugin, for messages.
    pub watcher_name: String,
    /// How long the first reconcile waits for the health plugin's first report, so that
    /// start-up never routes to a router that is already down.
    pub first_health_wait: Duration,
    /// `--prefix-lists`: route groups of CIDRs through prefix lists.
    pub lists: Option<ListMode>,
    /// `--route-table-quota`.
    pub quota: u32,
    /// `--failback`, `--failback-after`.
    pub failback: FailbackPolicy,
    /// `--route-tables` / `--route-table-tag`: the tables managed (by default, those serving
    /// the subnets of the spec's routers).
    pub tables: TableSelection,
    /// `--zone-affinity`: each zone's tables use a router of their own zone when one is
    /// healthy.
    pub zone_affinity: bool,
    /// `--consistency-window`: how long an acknowledged write is trusted over a read that
    /// does not show it yet (zero: reads are always believed).
    pub consistency_window: Duration,
}

/// The engine's ports (see [`crate::ports`]).
pub struct Ports {
    /// The VPC: reads and writes.
    pub vpc: Arc<dyn Vpc>,
    /// Cluster mode: the leadership; `None` for a single instance (it always leads).
    pub leadership: Option<Arc<dyn Leadership>>,
    /// Durations for the metrics' histograms.
    pub observer: Arc<dyn Observer>,
    /// Routes moved, failovers, health and leadership changes, for the notifiers.
    pub announcer: Arc<dyn Announcer>,
    /// Gives the health plugin the hosts to watch; false when it no longer reads them.
    pub watch: Box<dyn Fn(HostList) -> bool + Send + Sync>,
}

/// Whether reconciles wait for the health plugin's first report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HealthGate {
    /// No host list sent yet.
    Closed,
    /// Host list sent; waiting for the first report until this instant.
    Waiting(Instant),
    /// A report arrived (or the wait ran out): reconcile freely.
    Open,
}

/// A failover in progress: from the health change until a reconcile completes.
#[derive(Debug)]
pub(crate) struct FailoverRun {
    /// When the health change that started it was taken.
    pub at: Instant,
    /// The fast path ran for it (it runs once per newly failed router; retries read first).
    pub fast_tried: bool,
    /// What the log line and `/status` say of it.
    pub summary: FailoverSummary,
    /// When its last write was acknowledged.
    pub last_ack: Option<Instant>,
}

/// What taking one event did.
pub(crate) enum Taken {
    /// Nothing that needs a reconcile (or a revision of the plan being written).
    Nothing,
    /// The facts changed: reconcile (or revise), for this reason.
    Changed(&'static str),
    /// This instance no longer leads: no write may start.
    Demoted,
    /// The engine must end (stop, or a plugin gone): see `Engine::exit`.
    Exit,
}

/// The reconcile loop and its state.
pub struct Engine {
    /// The fixed settings: the VPC, the tables, the planner's options, the timings.
    pub(crate) cfg: EngineConfig,
    /// Where route tables are read and written: EC2 in production, a fake in tests.
    pub(crate) vpc: Arc<dyn Vpc>,
    /// Cluster mode: confirms the leadership before writes; publishes the local view.
    pub(crate) leadership: Option<Arc<dyn Leadership>>,
    /// Told how long reconciles and failovers take, for the metrics' histograms.
    pub(crate) observer: Arc<dyn Observer>,
    /// Tells the notifiers what happened (never blocks).
    pub(crate) announcer: Arc<dyn Announcer>,
    /// Sends the health plugin the hosts of the spec.
    watch: Box<dyn Fn(HostList) -> bool + Send + Sync>,
    /// The events, also taken while a plan is written.
    pub(crate) events: UnboundedReceiver<Event>,
    /// Set when the engine must end: a stop, the event channel closed, a plugin gone.
    pub(crate) exit: Option<Result<(), EngineError>>,
    /// Random choices of the planner (routers among equals) and retry jitter.
    pub(crate) rng: StdRng,
    /// The spec in force (the last valid one).
    pub(crate) spec: Option<RouteSpec>,
    /// The hosts the health plugin was last given.
    hosts_sent: Option<HostList>,
    /// The health in force: failed and questionable routers.
    pub(crate) failed: BTreeSet<Ipv4Addr>,
    /// See `failed`.
    pub(crate) questionable: BTreeSet<Ipv4Addr>,
    /// Drained routers: never chosen; their routes move to healthy candidates.
    pub(crate) drained: BTreeSet<Ipv4Addr>,
    /// Routes moved off drained routers in the reconcile under way, by router.
    pub(crate) drain_moves: BTreeMap<Ipv4Addr, u64>,
    /// Whether this instance may write (always true without a cluster).
    pub(crate) leading: bool,
    /// Cluster mode: the role last announced (`Some(true)`: leader), so that the notifiers
    /// hear each change of role once; `None` until the first.
    announced_role: Option<bool>,
    /// Cluster mode: this instance's own health view, once its health plugin reported.
    local: Option<Report>,
    /// Cluster mode: the other instances' views, by instance id.
    peers: BTreeMap<String, Report>,
    /// Notices of the last plan (logged when they appear and when they clear).
    pub(crate) notices: BTreeSet<Notice>,
    /// Dry run: the actions last logged (the same plan is not logged again).
    pub(crate) last_dry_run: Vec<RouteAction>,
    /// The VPC as of the last read, with this instance's acknowledged writes applied
    /// since; `None` when it may be wrong (a write showed it stale, or another leader).
    pub(crate) known: Option<VpcState>,
    /// The router last written for each destination in each table (see
    /// `PlanInput::last_written`).
    pub(crate) last_written: BTreeMap<(String, Dest), Ipv4Addr>,
    /// Acknowledged writes trusted over lagging reads, for the consistency window.
    pub(crate) ledger: Ledger,
    /// When a write a read did not show yet is to be confirmed by another read.
    pub(crate) verify_at: Option<Instant>,
    /// The failover in progress, from the health change to the reconcile that completes it.
    pub(crate) failover: Option<FailoverRun>,
    /// Since when each router of the spec has been healthy without a break: the end of its
    /// last failed or questionable verdict in force, or when it joined the spec. A router
    /// that is failed or questionable now has no entry.
    pub(crate) healthy_since: BTreeMap<Ipv4Addr, Instant>,
    /// When each destination's routes last moved back to a preferred router, per router
    /// (with `--zone-affinity` each zone has its own).
    pub(crate) last_failback: BTreeMap<(Dest, Ipv4Addr), Instant>,
    /// `--failback preferred`: the next time a failback becomes possible (a reconcile is
    /// due then, whatever `--route_recheck_interval` says).
    pub(crate) next_failback: Option<Instant>,
    /// Actions acknowledged in the reconcile under way (shown as moved in the status).
    pub(crate) applied: Vec<RouteAction>,
    /// When the periodic recheck is due.
    pub(crate) next_recheck: Option<Instant>,
    /// A failed reconcile's retry: when, and how many retries came before.
    pub(crate) retry: Option<(Instant, u32)>,
    /// Whether reconciles wait for the health plugin's first report.
    health_gate: HealthGate,
    /// SIGTERM/SIGINT: looked at between the steps of a reconcile and during VPC calls.
    pub(crate) stop: Arc<StopSignal>,
    /// What the status server shows.
    pub(crate) status: Arc<Mutex<Status>>,
}

impl Engine {
    /// A new engine taking its events from `events`. With a leadership port, the engine
    /// reconciles only while this instance leads, and acts on the quorum of the
    /// instances' health views.
    pub fn new(cfg: EngineConfig, ports: Ports, events: UnboundedReceiver<Event>) -> Engine {
        Engine {
            vpc: ports.vpc,
            observer: ports.observer,
            announcer: ports.announcer,
            watch: ports.watch,
            events,
            exit: None,
            rng: StdRng::from_os_rng(),
            spec: None,
            hosts_sent: None,
            failed: BTreeSet::new(),
            questionable: BTreeSet::new(),
            drained: BTreeSet::new(),
            drain_moves: BTreeMap::new(),
            leading: ports.leadership.is_none(),
            announced_role: None,
            leadership: ports.leadership,
            local: None,
            peers: BTreeMap::new(),
            notices: BTreeSet::new(),
            last_dry_run: Vec::new(),
            known: None,
            last_written: BTreeMap::new(),
            ledger: Ledger::new(cfg.consistency_window),
            verify_at: None,
            failover: None,
            healthy_since: BTreeMap::new(),
            last_failback: BTreeMap::new(),
            next_failback: None,
            applied: Vec::new(),
            next_recheck: None,
            retry: None,
            health_gate: HealthGate::Closed,
            stop: Arc::default(),
            status: Arc::new(Mutex::new(Status {
                failback_policy: cfg.failback,
                table_selection: cfg.tables.clone(),
                zone_affinity: cfg.zone_affinity,
                ..Status::default()
            })),
            cfg,
        }
    }

    /// Seeds the planner's random choices (tests that need one exact plan).
    pub fn with_seed(mut self, seed: u64) -> Engine {
        self.rng = StdRng::seed_from_u64(seed);
        self
    }

    /// Request the stop on this together with sending [`Event::Stop`], so that a
    /// reconcile under way ends at its next step and VPC calls in flight are abandoned
    /// instead of delaying the stop.
    pub fn stop_handle(&self) -> Arc<StopSignal> {
        self.stop.clone()
    }

    /// Shared view of the engine's state.
    pub fn status(&self) -> Arc<Mutex<Status>> {
        self.status.clone()
    }

    /// Runs until [`Event::Stop`] (or the event channel closes); returns an error when a
    /// plugin goes away.
    pub async fn run(mut self) -> Result<(), EngineError> {
        loop {
            if self.stop.requested() {
                return Ok(());
            }
            if let Some(exit) = self.exit.take() {
                return exit;
            }
            let first = self.next_event().await;
            let mut changed = false;
            let mut reason = self.timer_reason();
            let batch: Vec<Event> =
                first.into_iter().chain(std::iter::from_fn(|| self.events.try_recv().ok())).collect();
            for event in batch {
                if let Taken::Changed(why) = self.take(event) {
                    (changed, reason) = (true, why);
                }
            }
            if self.exit.is_some() {
                continue;
            }
            if let HealthGate::Waiting(until) = self.health_gate {
                if now() < until {
                    continue;
                }
                tracing::warn!(
                    waited_ms = self.cfg.first_health_wait.as_millis() as u64,
                    "the health plugin has not reported yet; reconciling without health information"
                );
                self.health_gate = HealthGate::Open;
                changed = true;
            }
            let due = self.deadline().is_some_and(|d| d <= now());
            if changed || due {
                self.reconcile(reason).await;
            }
        }
    }

    /// Waits for the next event until the next timer; `None` when a timer came first.
    async fn next_event(&mut self) -> Option<Event> {
        let (deadline, stop) = (self.deadline(), self.stop.clone());
        let events = &mut self.events;
        let wait = async {
            match deadline {
                Some(at) => tokio::time::timeout_at(tokio::time::Instant::from_std(at), events.recv()).await.ok(),
                None => Some(events.recv().await),
            }
        };
        let received = tokio::select! {
            biased;
            () = stop.wait() => return None,
            r = wait => r,
        };
        match received {
            Some(Some(event)) => Some(event),
            Some(None) => {
                // Every sender is gone: nothing can reach the engine any more.
                self.exit = Some(Ok(()));
                None
            }
            None => None,
        }
    }

    /// Why a reconcile woken by a timer runs.
    fn timer_reason(&self) -> &'static str {
        let t = now();
        match (self.next_failback, self.verify_at) {
            (_, Some(at)) if at <= t => "confirming writes the last read did not show yet",
            (Some(at), _) if at <= t => "a failback became possible",
            _ => "periodic recheck",
        }
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        let gate = match self.health_gate {
            HealthGate::Waiting(until) => Some(until),
            _ => None,
        };
        [self.next_recheck, self.retry.map(|(at, _)| at), gate, self.next_failback, self.verify_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Takes one event into the engine's state.
    pub(crate) fn take(&mut self, event: Event) -> Taken {
        let changed = |c: bool, why| if c { Taken::Changed(why) } else { Taken::Nothing };
        match event {
            Event::Stop => {
                self.exit = Some(Ok(()));
                Taken::Exit
            }
            Event::QueueClosed(who) => {
                self.exit = Some(Err(EngineError::PluginGone(who)));
                Taken::Exit
            }
            Event::Spec(s) => changed(self.on_spec(s), "new route spec"),
            Event::Health(r) => changed(self.on_health(r), "health change"),
            Event::Peers(peers) => {
                self.peers = peers;
                changed(self.apply_health(), "health change")
            }
            Event::Drains(set) => changed(self.on_drains(set), "drain changed"),
            Event::Role { leader, leader_id } => self.on_role(leader, leader_id),
        }
    }

    /// Cluster mode: this instance became leader, or is not (any more).
    fn on_role(&mut self, leader: bool, leader_id: Option<String>) -> Taken {
        let was = std::mem::replace(&mut self.leading, leader);
        self.announce_role(leader);
        if leader != was {
            // Another leader may have written meanwhile: neither the known state nor the
            // writes this instance remembers are facts any more.
            self.known = None;
            self.ledger.clear();
        }
        if leader && !was {
            return Taken::Changed("became the cluster leader");
        }
        if !leader {
            let leads = leader_id.as_deref().unwrap_or("no instance");
            self.lock_status().last_result = format!("follower: {leads} leads; this instance makes no EC2 calls");
            if was {
                return Taken::Demoted;
            }
        }
        Taken::Nothing
    }

    /// Cluster mode: announces `Leader` or `Follower` unless that role was the last announced.
    pub(crate) fn announce_role(&mut self, leader: bool) {
        if self.announced_role.replace(leader) != Some(leader) {
            self.announcer.announce(if leader { Announcement::Leader } else { Announcement::Follower });
        }
    }

    /// Applies a new spec; true when it differs from the one in force.
    fn on_spec(&mut self, spec: RouteSpec) -> bool {
        if let Err(e) = spec.check() {
            tracing::error!(plugin = %self.cfg.watcher_name, "watcher sent an invalid route spec, keeping the last good one: {e}");
            return false;
        }
        if spec.is_empty() {
            tracing::warn!("ignoring an empty route spec: routes are never wiped by an empty spec (as in vpc-router)");
            return false;
        }
        if self.spec.as_ref() == Some(&spec) {
            tracing::debug!("route spec unchanged");
            return false;
        }
        tracing::info!(cidrs = spec.routes.len(), "new route spec");
        let hosts = spec.all_hosts();
        if self.hosts_sent.as_ref() != Some(&hosts) {
            tracing::debug!(hosts = %join(&hosts.hosts), "updating health monitor");
            if !(self.watch)(hosts.clone()) {
                tracing::warn!("the health plugin no longer reads its host list");
            }
            self.lock_status().working_set = hosts.hosts.iter().map(|h| h.to_string()).collect();
            self.hosts_sent = Some(hosts);
            self.track_healthy();
            if self.health_gate == HealthGate::Closed {
                self.health_gate = HealthGate::Waiting(now() + self.cfg.first_health_wait);
            }
        }
        self.lock_status().spec = spec.clone();
        self.spec = Some(spec);
        true
    }

    /// Applies the health plugin's report; true when a reconcile is due: the failed or
    /// questionable set in force changed, or this is the first report (it releases the
    /// reconcile held back for it).
    fn on_health(&mut self, report: HealthReport) -> bool {
        let local = Report { failed: addrs(&report.failed), questionable: addrs(&report.questionable) };
        let first = self.health_gate != HealthGate::Open;
        self.health_gate = HealthGate::Open;
        if let Some(c) = &self.leadership {
            if first || self.local.as_ref() != Some(&local) {
                c.publish(local.clone());
            }
        }
        self.lock_status().local_health = local.clone();
        self.local = Some(local);
        let changed = self.apply_health();
        changed || (first && self.spec.is_some())
    }

    /// Recomputes the health view in force: this instance's own, or in cluster mode the
    /// quorum of every live instance's. True when it changed (and a spec is in force).
    fn apply_health(&mut self) -> bool {
        let view = match &self.leadership {
            None => self.local.clone().unwrap_or_default(),
            Some(c) => quorum::combine(self.local.iter().chain(self.peers.values()), c.quorum()),
        };
        if view.failed == self.failed && view.questionable == self.questionable {
            return false;
        }
        let views = self.local.iter().count() + self.peers.len();
        tracing::info!(failed = %join_ips(&view.failed), questionable = %join_ips(&view.questionable), views, "health changed");
        let newly: BTreeSet<Ipv4Addr> = view
            .failed
            .difference(&self.failed)
            .chain(view.questionable.difference(&self.questionable).filter(|h| !view.failed.contains(h)))
            .copied()
            .collect();
        if !newly.is_empty() {
            let run = self.failover.get_or_insert_with(|| FailoverRun {
                at: now(),
                fast_tried: false,
                summary: FailoverSummary::default(),
                last_ack: None,
            });
            run.summary.routers.extend(newly);
            // Newly failed routers get the fast path, even during a failover in progress.
            run.fast_tried = false;
        }
        {
            let mut st = self.lock_status();
            st.failed = view.failed.clone();
            st.questionable = view.questionable.clone();
        }
        let was: BTreeSet<Ipv4Addr> = self.failed.union(&self.questionable).copied().collect();
        self.failed = view.failed;
        self.questionable = view.questionable;
        self.announce_health(&was);
        self.track_healthy();
        self.spec.is_some()
    }

    /// Announces the routers that entered the failed ∪ questionable set in force since it was
    /// `was` (down), then those that left it and are still watched (up: a router that left
    /// the spec's host list did not recover), each in address order.
    fn announce_health(&self, was: &BTreeSet<Ipv4Addr>) {
        let now_bad: BTreeSet<Ipv4Addr> = self.failed.union(&self.questionable).copied().collect();
        let watched = |h: &Ipv4Addr| self.hosts_sent.iter().any(|l| l.hosts.iter().any(|w| w.addr() == *h));
        for h in now_bad.difference(was) {
            self.announcer.announce(Announcement::RouterDown(*h));
        }
        for h in was.difference(&now_bad).filter(|h| watched(h)) {
            self.announcer.announce(Announcement::RouterUp(*h));
        }
    }

    /// Keeps `healthy_since` in step with the hosts watched and the health in force: a
    /// failed or questionable host loses its entry, a host healthy without one (it just
    /// recovered, or joined the spec) gets one from now.
    fn track_healthy(&mut self) {
        let t = now();
        let watched: BTreeSet<Ipv4Addr> =
            self.hosts_sent.iter().flat_map(|l| l.hosts.iter().map(|h| h.addr())).collect();
        self.healthy_since.retain(|h, _| watched.contains(h));
        for h in watched {
            if self.failed.contains(&h) || self.questionable.contains(&h) {
                self.healthy_since.remove(&h);
            } else {
                self.healthy_since.entry(h).or_insert(t);
            }
        }
    }

    /// Applies the drained routers in force; true when they changed (a reconcile is due at
    /// once, as for a health change). An undrain moves nothing back by itself.
    fn on_drains(&mut self, drained: BTreeSet<Ipv4Addr>) -> bool {
        if drained == self.drained {
            return false;
        }
        tracing::info!(drained = %join_ips(&drained), "drained routers changed");
        // `--failback preferred`: an undrained router's hold-down starts now; the time it
        // spent drained does not count as time it was fit to take routes back.
        let t = now();
        for ip in self.drained.difference(&drained) {
            if let Some(since) = self.healthy_since.get_mut(ip) {
                *since = t;
            }
        }
        self.drained = drained;
        self.spec.is_some()
    }

    pub(crate) fn lock_status(&self) -> MutexGuard<'_, Status> {
        // A panic while the lock was held leaves counters that are still usable.
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn addrs(list: &[Ipv4]) -> BTreeSet<Ipv4Addr> {
    list.iter().map(|h| h.addr()).collect()
}

fn join(list: &[Ipv4]) -> String {
    list.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",")
}
