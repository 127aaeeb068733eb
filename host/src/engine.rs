//! The event loop: reconcile the VPC whenever the spec or health changes, and periodically.
//!
//! Plugin queues are bridged into one [`Event`] channel. Each wake-up drains every pending
//! event (all messages are full snapshots, so only the latest of each kind matters), then
//! reconciles at most once. A reconcile always uses the latest spec AND the latest health
//! report (vpc-router 1.8 forgot failed hosts on timer- and spec-triggered reconciles).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vpcrouter_plugin_api::{time, HealthReport, HostList, Ipv4, RSender, RouteSpec};

use crate::cluster::{quorum, ClusterEvent, ClusterHandle, Report};
use crate::metrics::Metrics;
use crate::state::{list_views, table_routes, FailbackEntry, FailoverSummary, Status};
use crate::sync::lock;
use crate::vpc::executor::{Executor, Outcome};
use crate::vpc::model::{
    Applied, Cidr, DeleteReason, Dest, FailbackState, FailbackView, ManagedTable, Notice, Plan, ReplaceReason,
    RouteAction, TableSelection, VpcState,
};
use crate::vpc::plan::{plan, Failback, FailbackPolicy, ListMode, PlanInput};

/// Read → plan → write passes of one reconcile when EC2 shows the state was stale.
const MAX_PASSES: u32 = 3;
/// Plans of one reconcile made from the state as written, when a plan's changes unlock
/// further ones (a route to a list just created; a route deleted once another carries its
/// CIDRs).
const MAX_STAGES: u32 = 8;
/// Logged when EC2 refuses a route change because the state it was planned from is stale.
const STALE: &str = "EC2 showed the route tables changed behind vpcrouter's back: reading them again";
/// The least time between two reconciles woken by failback timers (a failback that is due
/// but not planned, e.g. in a dry run, does not spin the loop).
const FAILBACK_WAKE_MIN: Duration = Duration::from_secs(1);
/// Waves in a row that may start nothing (the lease too close to running out) before a
/// reconcile gives up; each waits a little for the lease to be renewed.
const MAX_EMPTY_WAVES: u32 = 10;

/// Dry run: actions logged between two looks at the stop signal (a large spec plans
/// hundreds of thousands; SIGTERM must not wait for all their log lines).
const LOGGED_PER_STOP_CHECK: usize = 1000;

/// SIGTERM/SIGINT as the engine sees it: a flag it looks at between the steps of a
/// reconcile (planning, logging, the status update), and a notification that abandons
/// an EC2 call in flight.
#[derive(Debug, Default)]
pub struct StopSignal {
    /// Set once a stop is requested; never cleared.
    requested: AtomicBool,
    /// Wakes the EC2 call in flight (it keeps a permit when none is in flight).
    notify: tokio::sync::Notify,
}

impl StopSignal {
    /// Requests the stop: the engine returns at its next look, abandoning an EC2 call.
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// True once a stop was requested.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}

/// Something the engine reacts to.
#[derive(Debug)]
pub enum Event {
    /// A full route spec from the watcher plugin.
    Spec(RouteSpec),
    /// A full health report from the health plugin.
    Health(HealthReport),
    /// News from the cluster (leader election, other instances' health reports, drains).
    Cluster(ClusterEvent),
    /// The drained routers now (see [`crate::drain`]).
    Drains(BTreeSet<Ipv4Addr>),
    /// A plugin dropped its queue: it can no longer do its job.
    QueueClosed(String),
    /// SIGTERM/SIGINT: stop.
    Stop,
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
    /// The VPC to manage.
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
}

/// Whether reconciles wait for the health plugin's first report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HealthGate {
    /// No host list sent yet.
    Closed,
    /// Host list sent; waiting for the first report until this instant.
    Waiting(Instant),
    /// A report arrived (or the wait ran out): reconcile freely.
    Open,
}

/// A failover in progress: from the health change until a reconcile completes.
#[derive(Debug)]
struct FailoverRun {
    at: Instant,
    /// The fast path ran for it (it runs once; retries read first).
    fast_tried: bool,
    summary: FailoverSummary,
    last_ack: Option<Instant>,
}

/// How executing a plan ended.
enum Executed {
    /// Every action was tried; these failed (rtb, CIDR, error).
    Finished {
        /// (rtb, destination, error) of each action that failed.
        failures: Vec<(String, Dest, String)>,
        /// Some failure showed that the state planned from was stale.
        stale: bool,
        /// Every failure was transient (EC2 unavailable after the retries).
        transient: bool,
    },
    /// Stop requested, leadership lost, or a write outlasted the lease: nothing more to
    /// do in this reconcile (the status says why).
    Interrupted,
}

/// The reconcile loop and its state.
pub struct Engine {
    cfg: EngineConfig,
    exec: Executor,
    metrics: Arc<Metrics>,
    rt: tokio::runtime::Runtime,
    rng: StdRng,
    hosts_tx: RSender<HostList>,
    spec: Option<RouteSpec>,
    hosts_sent: Option<HostList>,
    failed: BTreeSet<Ipv4Addr>,
    questionable: BTreeSet<Ipv4Addr>,
    /// Drained routers: never chosen; their routes move to healthy candidates.
    drained: BTreeSet<Ipv4Addr>,
    /// Routes moved off drained routers in the reconcile under way, by router.
    drain_moves: BTreeMap<Ipv4Addr, u64>,
    /// Cluster mode: the membership, whether this instance leads, its own health view
    /// (once its health plugin reported) and the other instances' views.
    cluster: Option<ClusterHandle>,
    leading: bool,
    local: Option<Report>,
    peers: std::collections::BTreeMap<String, Report>,
    notices: BTreeSet<Notice>,
    last_dry_run: Vec<RouteAction>,
    /// The VPC as of the last read, with this instance's acknowledged writes applied
    /// since; `None` when it may be wrong (a write showed it stale, or another leader).
    known: Option<VpcState>,
    /// The router last written for each destination in each table (see
    /// [`PlanInput::last_written`]).
    last_written: BTreeMap<(String, Dest), Ipv4Addr>,
    failover: Option<FailoverRun>,
    /// Since when each router of the spec has been healthy without a break: the end of its
    /// last failed or questionable verdict in force, or when it joined the spec. A router
    /// that is failed or questionable now has no entry.
    healthy_since: BTreeMap<Ipv4Addr, Instant>,
    /// When each destination's routes last moved back to a preferred router, per router
    /// (with `--zone-affinity` each zone has its own).
    last_failback: BTreeMap<(Dest, Ipv4Addr), Instant>,
    /// `--failback preferred`: the next time a failback becomes possible (a reconcile is
    /// due then, whatever `--route_recheck_interval` says).
    next_failback: Option<Instant>,
    /// Actions EC2 acknowledged in the reconcile under way.
    applied: Vec<RouteAction>,
    next_recheck: Option<Instant>,
    retry: Option<(Instant, u32)>,
    health_gate: HealthGate,
    /// SIGTERM/SIGINT: looked at between the steps of a reconcile and during EC2 calls.
    stop: Arc<StopSignal>,
    status: Arc<Mutex<Status>>,
}

impl Engine {
    /// A new engine; `hosts_tx` feeds the health plugin. With `cluster`, the engine
    /// reconciles only while this instance leads, and acts on the quorum of the
    /// instances' health views.
    pub fn new(
        cfg: EngineConfig,
        exec: Executor,
        metrics: Arc<Metrics>,
        rt: tokio::runtime::Runtime,
        hosts_tx: RSender<HostList>,
        cluster: Option<ClusterHandle>,
    ) -> Engine {
        Engine {
            exec,
            metrics,
            rt,
            rng: StdRng::from_os_rng(),
            hosts_tx,
            spec: None,
            hosts_sent: None,
            failed: BTreeSet::new(),
            questionable: BTreeSet::new(),
            drained: BTreeSet::new(),
            drain_moves: BTreeMap::new(),
            leading: cluster.is_none(),
            cluster,
            local: None,
            peers: Default::default(),
            notices: BTreeSet::new(),
            last_dry_run: Vec::new(),
            known: None,
            last_written: BTreeMap::new(),
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

    /// Request the stop on this together with sending [`Event::Stop`], so that a
    /// reconcile under way ends at its next step and an EC2 call in flight is abandoned
    /// instead of delaying the stop.
    pub fn stop_handle(&self) -> Arc<StopSignal> {
        self.stop.clone()
    }

    /// Shared view of the engine's state.
    pub fn status(&self) -> Arc<Mutex<Status>> {
        self.status.clone()
    }

    /// Runs until [`Event::Stop`]; returns an error when a plugin goes away.
    pub fn run(mut self, events: Receiver<Event>) -> Result<(), EngineError> {
        loop {
            if self.stop.requested() {
                return Ok(());
            }
            let event = match self.deadline() {
                Some(at) => match events.recv_deadline(at) {
                    Ok(e) => Some(e),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return Ok(()),
                },
                None => match events.recv() {
                    Ok(e) => Some(e),
                    Err(_) => return Ok(()),
                },
            };
            let mut changed = false;
            let mut reason = match self.next_failback {
                Some(at) if at <= Instant::now() => "a failback became possible",
                _ => "periodic recheck",
            };
            for event in event.into_iter().chain(std::iter::from_fn(|| events.try_recv().ok())) {
                match event {
                    Event::Stop => return Ok(()),
                    Event::QueueClosed(who) => return Err(EngineError::PluginGone(who)),
                    Event::Spec(s) => {
                        if self.on_spec(s) {
                            changed = true;
                            reason = "new route spec";
                        }
                    }
                    Event::Health(r) => {
                        if self.on_health(r) {
                            changed = true;
                            reason = "health change";
                        }
                    }
                    Event::Cluster(ClusterEvent::Reports(peers)) => {
                        self.peers = peers;
                        if self.apply_health() {
                            changed = true;
                            reason = "health change";
                        }
                    }
                    Event::Drains(set) => {
                        if self.on_drains(set) {
                            changed = true;
                            reason = "drain changed";
                        }
                    }
                    Event::Cluster(ClusterEvent::Drains(set)) => {
                        if self.on_drains(set.into_keys().collect()) {
                            changed = true;
                            reason = "drain changed";
                        }
                    }
                    Event::Cluster(ClusterEvent::Role { leader, leader_id }) => {
                        let was = std::mem::replace(&mut self.leading, leader);
                        if leader != was {
                            // Another leader may have written meanwhile.
                            self.known = None;
                        }
                        if leader && !was {
                            changed = true;
                            reason = "became the cluster leader";
                        } else if !leader {
                            let leads = leader_id.as_deref().unwrap_or("no instance");
                            self.lock_status().last_result =
                                format!("follower: {leads} leads; this instance makes no EC2 calls");
                        }
                    }
                }
            }
            if let HealthGate::Waiting(until) = self.health_gate {
                if Instant::now() < until {
                    continue;
                }
                tracing::warn!(
                    waited_ms = self.cfg.first_health_wait.as_millis() as u64,
                    "the health plugin has not reported yet; reconciling without health information"
                );
                self.health_gate = HealthGate::Open;
                changed = true;
            }
            let due = self.deadline().is_some_and(|d| d <= Instant::now());
            if changed || due {
                self.reconcile(reason);
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let gate = match self.health_gate {
            HealthGate::Waiting(until) => Some(until),
            _ => None,
        };
        [self.next_recheck, self.retry.map(|(at, _)| at), gate, self.next_failback].into_iter().flatten().min()
    }

    /// Applies a new spec; true when it differs from the one in force.
    fn on_spec(&mut self, spec: RouteSpec) -> bool {
        match spec.check() {
            Ok(()) => {}
            Err(e) => {
                tracing::error!(plugin = %self.cfg.watcher_name, "watcher sent an invalid route spec, keeping the last good one: {e}");
                return false;
            }
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
            if self.hosts_tx.send(hosts.clone()).is_err() {
                tracing::warn!("the health plugin no longer reads its host list");
            }
            self.lock_status().working_set = hosts.hosts.iter().map(|h| h.to_string()).collect();
            self.hosts_sent = Some(hosts);
            self.track_healthy();
            if self.health_gate == HealthGate::Closed {
                self.health_gate = HealthGate::Waiting(Instant::now() + self.cfg.first_health_wait);
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
        if let Some(c) = &self.cluster {
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
        let view = match &self.cluster {
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
                at: Instant::now(),
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
        self.failed = view.failed;
        self.questionable = view.questionable;
        self.track_healthy();
        self.spec.is_some()
    }

    /// Keeps `healthy_since` in step with the hosts watched and the health in force: a
    /// failed or questionable host loses its entry, a host healthy without one (it just
    /// recovered, or joined the spec) gets one from now.
    fn track_healthy(&mut self) {
        let now = Instant::now();
        let watched: BTreeSet<Ipv4Addr> =
            self.hosts_sent.iter().flat_map(|l| l.hosts.iter().map(|h| h.addr())).collect();
        self.healthy_since.retain(|h, _| watched.contains(h));
        for h in watched {
            if self.failed.contains(&h) || self.questionable.contains(&h) {
                self.healthy_since.remove(&h);
            } else {
                self.healthy_since.entry(h).or_insert(now);
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
        let now = Instant::now();
        for ip in self.drained.difference(&drained) {
            if let Some(since) = self.healthy_since.get_mut(ip) {
                *since = now;
            }
        }
        self.drained = drained;
        self.spec.is_some()
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, Status> {
        lock(&self.status)
    }

    /// Reconciles: after a health change, first moves the routes of failed routers as
    /// planned from the known state (no read); then reads the VPC, plans, and executes
    /// (or logs, with `--dry-run`) the actions. When EC2 shows that the state was stale
    /// (a route or table gone, a route already there), it reads and plans again at once.
    fn reconcile(&mut self, reason: &str) {
        self.next_recheck = self.cfg.recheck.map(|d| Instant::now() + d);
        self.next_failback = None;
        let Some(spec) = self.spec.clone() else { return };
        if !self.leading {
            tracing::debug!(reason, "not the cluster leader: no reconcile");
            // The leader handles the failover; ours would start from a stale instant.
            self.failover = None;
            return;
        }
        let started = Instant::now();
        tracing::debug!(reason, "reconcile");
        self.lock_status().reconciles += 1;
        self.applied.clear();
        self.drain_moves.clear();
        let entries = spec_entries(&spec);
        if self.failover.is_some() && !self.cfg.dry_run && !self.fast_failover(&entries, started) {
            return;
        }
        let (mut pass, mut stage) = (1, 0);
        loop {
            // A later stage plans from the state as written, without reading it again.
            let known = if stage > 0 { self.known.clone() } else { None };
            let state = match known {
                Some(state) => state,
                None => {
                    let Some(read) = self.abandonable(self.exec.read_state(&self.cfg.vpc_id)) else { return };
                    match read {
                        Ok(s) => {
                            self.known = Some(s.clone());
                            s
                        }
                        Err(e) => {
                            let message = format!("cannot read VPC {}: {e}", self.cfg.vpc_id);
                            return self.failed_reconcile(started, message);
                        }
                    }
                }
            };
            let plan = self.plan(&state, &entries);
            if self.stopping() {
                return;
            }
            self.report_notices(&plan);
            self.report_tables(&plan);
            self.note_failback(&plan);
            let failures = if self.cfg.dry_run {
                if plan.actions != self.last_dry_run {
                    if !self.log_dry_run(&plan.actions, &state) {
                        return;
                    }
                    self.last_dry_run = plan.actions.clone();
                }
                Vec::new()
            } else {
                match self.execute(&plan.actions, started) {
                    Executed::Interrupted => return,
                    Executed::Finished { stale: true, failures, .. } if pass < MAX_PASSES => {
                        tracing::info!(failed = failures.len(), "{STALE}");
                        self.known = None;
                        (pass, stage) = (pass + 1, 0);
                        continue;
                    }
                    Executed::Finished { failures, .. } => failures,
                }
            };
            let more = plan.staged && !plan.actions.is_empty();
            let written = self.known.as_ref().unwrap_or(&state);
            let lists = list_views(written, &plan);
            // Routes the fast path moved show as moved, not as found up to date.
            let mut shown = plan;
            shown.actions.extend(self.applied.iter().cloned());
            let tables = table_routes(written, &shown, &failures, self.cfg.dry_run);
            if self.stopping() {
                return;
            }
            {
                let mut st = self.lock_status();
                (st.tables, st.lists, st.weights) = (tables, lists, shown.weights);
            }
            if let Some((_, _, first)) = failures.first() {
                return self.failed_reconcile(started, format!("{} change(s) failed, first: {first}", failures.len()));
            }
            if more && !self.cfg.dry_run && stage + 1 < MAX_STAGES {
                stage += 1;
                tracing::debug!(stage, "planning again from the state as written: these changes unlock more");
                continue;
            }
            break;
        }
        self.finish_failover();
        self.finish_drain_moves();
        self.retry = None;
        let took = started.elapsed();
        self.metrics.reconcile_seconds.observe(took.as_secs_f64());
        let mut st = self.lock_status();
        st.last_reconcile = Some((SystemTime::now(), took));
        st.last_result = "ok".into();
    }

    /// True once a stop was requested: the reconcile under way ends at once (its status
    /// is not updated; vpcrouter exits).
    fn stopping(&self) -> bool {
        let stopping = self.stop.requested();
        if stopping {
            tracing::info!("stop requested: ending the reconcile under way");
        }
        stopping
    }

    /// Dry run: logs each action the plan would make; false when a stop was requested
    /// meanwhile (a large spec has hundreds of thousands of them).
    fn log_dry_run(&self, actions: &[RouteAction], state: &VpcState) -> bool {
        for chunk in actions.chunks(LOGGED_PER_STOP_CHECK) {
            if self.stopping() {
                return false;
            }
            for a in chunk {
                let what =
                    if a.is_route() { "dry run: would change route" } else { "dry run: would change prefix list" };
                log_action(what, a, state);
            }
        }
        true
    }

    /// Plans from `state` with the health and spec in force.
    fn plan(&mut self, state: &VpcState, entries: &[(Cidr, Vec<Ipv4Addr>)]) -> Plan {
        let failback = self.cfg.failback.after().map(|after| Failback {
            after,
            now: Instant::now(),
            healthy_since: &self.healthy_since,
            last_failback: &self.last_failback,
        });
        let input = PlanInput {
            state,
            spec: entries,
            failed: &self.failed,
            questionable: &self.questionable,
            drained: &self.drained,
            ignore: &self.cfg.ignore,
            last_written: &self.last_written,
            lists: self.cfg.lists.as_ref(),
            quota: self.cfg.quota,
            failback: failback.as_ref(),
            tables: &self.cfg.tables,
            zone_affinity: self.cfg.zone_affinity,
        };
        plan(&input, &mut self.rng)
    }

    /// `--failback preferred`: shows where each CIDR stands with its preferred router, and
    /// sets the timer of the next failback that becomes possible.
    fn note_failback(&mut self, plan: &Plan) {
        if self.cfg.failback.after().is_none() {
            return;
        }
        let (now, wall) = (Instant::now(), SystemTime::now());
        let views = plan.failback.values().chain(plan.zone_failback.values());
        let waits = views.filter_map(|v| match v.state {
            FailbackState::Waiting { at } => Some(at),
            _ => None,
        });
        self.next_failback = waits.min().map(|at| at.max(now + FAILBACK_WAKE_MIN));
        let entry = |v: &FailbackView| {
            let possible_at = match v.state {
                FailbackState::Waiting { at } => Some(wall + at.saturating_duration_since(now)),
                _ => None,
            };
            FailbackEntry { preferred: v.preferred, state: v.state.name(), possible_at }
        };
        let entries = plan.failback.iter().map(|(cidr, v)| (cidr.to_string(), entry(v))).collect();
        let zones = plan.zone_failback.iter().map(|((cidr, zone), v)| ((cidr.to_string(), zone.clone()), entry(v)));
        let mut st = self.lock_status();
        st.failback = entries;
        st.zone_failback = zones.collect();
    }

    /// Shows the tables the plan manages, and logs when they change (a table tagged or
    /// untagged, a router's subnet joining the spec).
    fn report_tables(&self, plan: &Plan) {
        let shown = std::mem::replace(&mut self.lock_status().managed, plan.managed.clone());
        if shown.iter().map(|t| &t.id).ne(plan.managed.iter().map(|t| &t.id)) {
            let described: Vec<String> = plan.managed.iter().map(describe_table).collect();
            tracing::info!(
                rule = %self.cfg.tables, zone_affinity = self.cfg.zone_affinity, tables = plan.managed.len(),
                "managed route tables: {}", if described.is_empty() { "none".to_string() } else { described.join(", ") }
            );
        }
    }

    /// The fast path of a failover: plans from the known state and moves, at once, every
    /// CIDR that has a route on a failed or questionable router. False when the
    /// reconcile must end here (stop, leadership lost).
    fn fast_failover(&mut self, entries: &[(Cidr, Vec<Ipv4Addr>)], started: Instant) -> bool {
        // Once per failover: a retried reconcile reads first.
        match &mut self.failover {
            Some(run) if !run.fast_tried => run.fast_tried = true,
            _ => return true,
        }
        let Some(known) = self.known.clone() else { return true };
        let plan = self.plan(&known, entries);
        if self.stopping() {
            return false;
        }
        let moving: BTreeSet<Dest> =
            plan.actions.iter().filter(|a| moves_off_bad_router(a)).map(RouteAction::dest).collect();
        if moving.is_empty() {
            return true;
        }
        let actions: Vec<RouteAction> = plan
            .actions
            .into_iter()
            .filter(|a| {
                moving.contains(&a.dest()) && matches!(a, RouteAction::Create { .. } | RouteAction::Replace { .. })
            })
            .collect();
        tracing::debug!(
            routes = actions.len(),
            cidrs = moving.len(),
            "failover from the known state, before reading the VPC"
        );
        match self.execute(&actions, started) {
            Executed::Interrupted => false,
            Executed::Finished { failures, transient: true, .. } if !failures.is_empty() => {
                // EC2 is not answering after the retries: a read now would fail the same way.
                let first = &failures[0].2;
                self.failed_reconcile(
                    started,
                    format!("{} route change(s) of the failover failed, first: {first}", failures.len()),
                );
                false
            }
            Executed::Finished { stale, failures, .. } => {
                if stale {
                    tracing::info!(failed = failures.len(), "{STALE}");
                    self.known = None;
                }
                true
            }
        }
    }

    /// Executes `actions` in waves: in cluster mode each wave starts with a confirmation
    /// of the leadership and ends before the lease may run out.
    fn execute(&mut self, actions: &[RouteAction], started: Instant) -> Executed {
        let mut pending: Vec<usize> = (0..actions.len()).collect();
        let (mut failures, mut stale, mut transient, mut empty_waves) = (Vec::new(), false, true, 0);
        while !pending.is_empty() {
            let deadline = match self.confirm_leadership() {
                Ok(d) => d,
                Err(()) => return Executed::Interrupted,
            };
            let wave: Vec<RouteAction> = pending.iter().map(|&i| actions[i].clone()).collect();
            let Some(report) = self.abandonable(self.exec.wave(&wave, deadline)) else { return Executed::Interrupted };
            if let Some(run) = &mut self.failover {
                run.summary.writes += report.calls;
                run.summary.throttled += report.throttled;
                run.last_ack = run.last_ack.max(report.last_ack);
            }
            let mut next = Vec::new();
            for (&i, outcome) in pending.iter().zip(report.outcomes) {
                let a = &actions[i];
                match outcome {
                    Outcome::Done(applied) => self.done(a, &applied),
                    Outcome::Failed(e) => {
                        tracing::error!(cidr = %a.dest(), rtb = a.rtb(), "change failed: {e}");
                        stale |= e.shows_stale_state();
                        transient &= e.is_transient();
                        failures.push((a.rtb().to_string(), a.dest(), e.to_string()));
                    }
                    Outcome::NotStarted => next.push(i),
                    Outcome::Abandoned => {
                        let message = "an EC2 write outlasted the leader's lease: abandoned; leadership is confirmed again before the retry";
                        tracing::warn!(cidr = %a.dest(), rtb = a.rtb(), "{message}");
                        self.known = None;
                        self.failed_reconcile(started, message.to_string());
                        return Executed::Interrupted;
                    }
                }
            }
            if next.len() == pending.len() {
                empty_waves += 1;
                if empty_waves >= MAX_EMPTY_WAVES {
                    let message =
                        format!("{} route change(s) not sent: the leader's lease never covered a write", next.len());
                    self.failed_reconcile(started, message);
                    return Executed::Interrupted;
                }
                if self.abandonable(async { tokio::time::sleep(Duration::from_millis(100)).await }).is_none() {
                    return Executed::Interrupted;
                }
            } else {
                empty_waves = 0;
            }
            pending = next;
        }
        Executed::Finished { failures, stale, transient }
    }

    /// Cluster mode: confirms the leadership before a wave and returns until when it
    /// holds; `Ok(None)` without a cluster. `Err` when the reconcile must stop.
    fn confirm_leadership(&mut self) -> Result<Option<Instant>, ()> {
        let Some(c) = &self.cluster else { return Ok(None) };
        match self.abandonable(c.confirm()) {
            None => Err(()),
            Some(Ok(until)) => Ok(Some(until)),
            Some(Err(e)) => {
                tracing::warn!("cluster: leadership not confirmed, no further EC2 writes: {e}");
                self.leading = false;
                self.known = None;
                self.lock_status().last_result = format!("stopped writing: leadership not confirmed: {e}");
                Err(())
            }
        }
    }

    /// Books an action EC2 acknowledged.
    fn done(&mut self, a: &RouteAction, applied: &Applied) {
        let empty = VpcState::default();
        let known = self.known.as_ref().unwrap_or(&empty);
        log_action(if a.is_route() { "route changed" } else { "prefix list changed" }, a, known);
        self.applied.push(a.clone());
        if let Some(known) = &mut self.known {
            known.apply(a, applied);
        }
        let key = (a.rtb().to_string(), a.dest());
        match a.new_router() {
            Some(router) => self.last_written.insert(key, router),
            None => self.last_written.remove(&key),
        };
        if let RouteAction::Replace { old_router: Some(old), reason: ReplaceReason::Drained, .. } = a {
            *self.drain_moves.entry(*old).or_default() += 1;
        }
        let failback = matches!(a, RouteAction::Replace { reason: ReplaceReason::Failback, .. });
        if let (true, Some(router)) = (failback, a.new_router()) {
            self.last_failback.insert((a.dest(), router), Instant::now());
        }
        if let (Some(run), RouteAction::Replace { old_router: Some(old), .. }) = (&mut self.failover, a) {
            if run.summary.routers.contains(old) {
                run.summary.routes_moved += 1;
            }
        }
        let mut st = self.lock_status();
        match a {
            RouteAction::Create { .. } => st.created += 1,
            RouteAction::Replace { .. } => {
                st.replaced += 1;
                st.failed_back += u64::from(failback);
            }
            RouteAction::Delete { .. } => st.deleted += 1,
            RouteAction::CreateList { .. } | RouteAction::ModifyList { .. } | RouteAction::DeleteList { .. } => {
                st.list_changes += 1
            }
        }
    }

    /// Ends the failover in progress, if any, with its one log line.
    fn finish_failover(&mut self) {
        let Some(run) = self.failover.take() else { return };
        let mut summary = run.summary;
        if summary.routes_moved == 0 {
            tracing::debug!(routers = %join_ips(&summary.routers), "health change: no route was on these routers");
            return;
        }
        let took = run.last_ack.unwrap_or_else(Instant::now).saturating_duration_since(run.at);
        summary.seconds = took.as_secs_f64();
        self.metrics.failover_seconds.observe(summary.seconds);
        tracing::info!(
            routers = %join_ips(&summary.routers), routes_moved = summary.routes_moved, writes = summary.writes,
            throttled = summary.throttled, ms = took.as_millis() as u64,
            "failover: {} route(s) moved off {} in {} ms (health report to last write acknowledged)",
            summary.routes_moved, join_ips(&summary.routers), took.as_millis()
        );
        let mut st = self.lock_status();
        st.failovers += 1;
        st.last_failover = Some(summary);
    }

    /// Logs the routes this reconcile moved off drained routers, one line.
    fn finish_drain_moves(&mut self) {
        if self.drain_moves.is_empty() {
            return;
        }
        let moved: u64 = self.drain_moves.values().sum();
        let routers: BTreeSet<Ipv4Addr> = self.drain_moves.keys().copied().collect();
        tracing::info!(
            routers = %join_ips(&routers), routes_moved = moved,
            "drain: {moved} route(s) moved off drained router(s) {}", join_ips(&routers)
        );
        self.drain_moves.clear();
    }

    /// Runs one EC2 call; `None` when a stop was requested meanwhile (the call is dropped:
    /// its connection is closed, and a write EC2 already applied shows at the next start).
    fn abandonable<T>(&self, call: impl std::future::Future<Output = T>) -> Option<T> {
        let stop = self.stop.clone();
        let result = if stop.requested() {
            None
        } else {
            self.rt.block_on(async move {
                tokio::select! {
                    r = call => Some(r),
                    () = stop.notify.notified() => None,
                }
            })
        };
        if result.is_none() {
            tracing::info!("stop requested: abandoning the EC2 call in flight");
        }
        result
    }

    /// Records a failed reconcile and schedules a retry with capped, jittered backoff.
    fn failed_reconcile(&mut self, started: Instant, message: String) {
        let attempt = self.retry.map_or(0, |(_, n)| n + 1);
        let delay = time::backoff(Duration::from_secs(1), Duration::from_secs(30), attempt + 1, self.rng.random());
        tracing::warn!(retry_in_ms = delay.as_millis() as u64, "reconcile failed, will retry: {message}");
        self.retry = Some((Instant::now() + delay, attempt));
        let took = started.elapsed();
        self.metrics.reconcile_seconds.observe(took.as_secs_f64());
        let mut st = self.lock_status();
        st.errors += 1;
        st.last_reconcile = Some((SystemTime::now(), took));
        st.last_result = message;
    }

    /// Logs notices when they appear and when they clear, not on every reconcile.
    fn report_notices(&mut self, plan: &Plan) {
        for n in plan.notices.difference(&self.notices) {
            tracing::warn!("{n}");
        }
        for n in self.notices.difference(&plan.notices) {
            tracing::info!("resolved: {n}");
        }
        self.notices = plan.notices.clone();
        self.lock_status().notices = plan.notices.iter().cloned().collect();
    }
}

/// True for a route move off a failed or questionable router: the work of a failover.
fn moves_off_bad_router(a: &RouteAction) -> bool {
    matches!(a, RouteAction::Replace { reason: ReplaceReason::RouterFailed | ReplaceReason::RouterQuestionable, .. })
}

/// The spec as the planner wants it: typed values, checked by `on_spec`; each CIDR's
/// routers in the spec's order (the first is the preferred one of `--failback preferred`).
fn spec_entries(spec: &RouteSpec) -> Vec<(Cidr, Vec<Ipv4Addr>)> {
    spec.routes.iter().map(|r| (r.cidr, r.hosts.iter().map(|h| h.addr()).collect())).collect()
}

fn addrs(list: &[Ipv4]) -> BTreeSet<Ipv4Addr> {
    list.iter().map(|h| h.addr()).collect()
}

fn join(list: &[Ipv4]) -> String {
    list.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",")
}

fn join_ips(set: &BTreeSet<Ipv4Addr>) -> String {
    set.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",")
}

fn ip_text(ip: &Option<Ipv4Addr>) -> String {
    ip.map_or_else(|| "(unknown)".to_string(), |i| i.to_string())
}

/// What a prefix list's route carries, for its log line: ` (prefix list of 3 CIDRs: …)`
/// with the first few; empty for a CIDR's own route.
fn carried(dest: &Dest, state: &VpcState) -> String {
    const SHOWN: usize = 8;
    let Dest::List(id) = dest else { return String::new() };
    let Some(list) = state.prefix_list(id) else { return String::new() };
    let more = if list.entries.len() > SHOWN { ",…" } else { "" };
    let first = cidrs(&list.entries[..list.entries.len().min(SHOWN)]);
    format!(" (prefix list {} of {} CIDR(s): {first}{more})", list.name, list.entries.len())
}

/// One info line per change, with the fields operators grep for (`cidr` is the route's
/// destination: a CIDR, or a prefix list id, whose name and CIDRs end the message).
/// `state` is the VPC the change was planned from.
fn log_action(what: &str, action: &RouteAction, state: &VpcState) {
    match action {
        RouteAction::Create { rtb, dest: cidr, target } => tracing::info!(
            %cidr, rtb, router = %target.ip, old_router = "(none)", reason = "route missing",
            instance = %target.instance_id, eni = %target.eni_id, "{what}: added{}", carried(cidr, state)
        ),
        RouteAction::Replace { rtb, dest: cidr, target, old_router, reason } => tracing::info!(
            %cidr, rtb, router = %target.ip, old_router = %ip_text(old_router), %reason,
            instance = %target.instance_id, eni = %target.eni_id, "{what}: replaced{}", carried(cidr, state)
        ),
        RouteAction::Delete { rtb, dest: cidr, old_router, reason } => tracing::info!(
            %cidr, rtb, old_router = %ip_text(old_router), %reason, "{what}: deleted{}", carried(cidr, state)
        ),
        RouteAction::CreateList { name, group, max_entries } => tracing::info!(
            list = %name, group = %group.key, routers = %join_ips(&group.hosts.iter().copied().collect()),
            members = %cidrs(&group.members), max_entries, "{what}: created for {} CIDR(s)", group.members.len()
        ),
        RouteAction::ModifyList { id, name, add, remove, .. } => tracing::info!(
            list = %id, name = %name, added = %cidrs(add), removed = %cidrs(remove),
            "{what}: {} entries added, {} removed", add.len(), remove.len()
        ),
        RouteAction::DeleteList { id, name } => tracing::info!(
            list = %id, name = %name, reason = %DeleteReason::ListRetired, "{what}: deleted"
        ),
    }
}

/// A managed table for the log: `rtb-1 (zone us-east-1a)`, `rtb-2 (gateway igw-1)`.
fn describe_table(t: &ManagedTable) -> String {
    let mut notes: Vec<String> = Vec::new();
    if t.main {
        notes.push("main".into());
    }
    if let Some(zone) = &t.zone {
        notes.push(format!("zone {zone}"));
    }
    if let Some(gateway) = &t.gateway {
        notes.push(format!("gateway {gateway}"));
    }
    if notes.is_empty() {
        t.id.clone()
    } else {
        format!("{} ({})", t.id, notes.join(", "))
    }
}

fn cidrs(list: &[Cidr]) -> String {
    list.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}
