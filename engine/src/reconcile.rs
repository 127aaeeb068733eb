//! One reconcile: after a health change, first the fast path (the routes of failed routers
//! moved as planned from the known state, no read); then read → plan → execute passes until
//! the VPC matches the plan.

use std::time::{Duration, Instant, SystemTime};

use rand::Rng;
use vpcrouter_planner::model::{Dest, FailbackState, FailbackView, ManagedTable, Plan, RouteAction, VpcState};
use vpcrouter_planner::plan::{plan, spec_entries, Failback, PlanInput, MAX_STAGES};
use vpcrouter_plugin_api::time;

use crate::announce::Announcement;
use crate::engine::{now, Engine, FAILBACK_WAKE_MIN};
use crate::execute::{failover_actions, Executed, Scope};
use crate::report::{self, log_action};
use crate::status::{list_views, table_routes, FailbackEntry};

/// Read → plan → write passes of one reconcile when the VPC shows the state was stale.
const MAX_PASSES: u32 = 3;
/// Logged when the VPC refuses a route change because the state it was planned from is stale.
const STALE: &str = "EC2 showed the route tables changed behind vpcrouter's back: reading them again";
/// Dry run: actions logged between two looks at the stop signal (a large spec plans
/// hundreds of thousands; SIGTERM must not wait for all their log lines).
const LOGGED_PER_STOP_CHECK: usize = 1000;

impl Engine {
    /// Reconciles: the fast path after a health change, then read, plan and execute (or
    /// log, with `--dry-run`). When the VPC shows that the state was stale (a route or table
    /// gone, a route already there), it reads and plans again at once.
    pub(crate) async fn reconcile(&mut self, reason: &str) {
        self.next_recheck = self.cfg.recheck.map(|d| now() + d);
        self.next_failback = None;
        self.verify_at = None;
        if self.spec.is_none() {
            return;
        }
        if !self.leading {
            tracing::debug!(reason, "not the cluster leader: no reconcile");
            // The leader handles the failover; ours would start from a stale instant.
            self.failover = None;
            return;
        }
        let started = now();
        tracing::debug!(reason, "reconcile");
        self.lock_status().reconciles += 1;
        self.applied.clear();
        self.drain_moves.clear();
        if self.failover.is_some() && !self.cfg.dry_run && !self.fast_failover(started).await {
            return;
        }
        if self.passes(started).await {
            self.finish(started);
        }
    }

    /// The read → plan → execute passes; false when the reconcile ended early (stopped,
    /// interrupted, or failed: the status says which).
    async fn passes(&mut self, started: Instant) -> bool {
        let (mut pass, mut stage) = (1, 0);
        loop {
            // A later stage plans from the state as written, without reading it again.
            let known = if stage > 0 { self.known.clone() } else { None };
            let state = match known {
                Some(state) => state,
                None => match self.read(started).await {
                    Some(s) => s,
                    None => return false,
                },
            };
            let plan = self.plan_from(&state);
            if self.stopping() {
                return false;
            }
            let (plan, failures) = if self.cfg.dry_run {
                if plan.actions != self.last_dry_run {
                    if !self.log_dry_run(&plan.actions, &state) {
                        return false;
                    }
                    self.last_dry_run = plan.actions.clone();
                }
                (plan, Vec::new())
            } else {
                match self.execute(plan, Scope::Full, started).await {
                    Executed::Interrupted => return false,
                    Executed::Finished { stale: true, failures, .. } if pass < MAX_PASSES => {
                        tracing::info!(failed = failures.len(), "{STALE}");
                        self.known = None;
                        (pass, stage) = (pass + 1, 0);
                        continue;
                    }
                    Executed::Finished { plan, failures, .. } => (*plan, failures),
                }
            };
            if !self.show(plan.clone(), &state, &failures) {
                return false;
            }
            if let Some((_, _, first)) = failures.first() {
                self.failed_reconcile(started, format!("{} change(s) failed, first: {first}", failures.len()));
                return false;
            }
            if plan.staged && !plan.actions.is_empty() && !self.cfg.dry_run && stage + 1 < MAX_STAGES {
                stage += 1;
                tracing::debug!(stage, "planning again from the state as written: these changes unlock more");
                continue;
            }
            return true;
        }
    }

    /// Reads the VPC and lays over it the writes it does not show yet (within the
    /// consistency window); `None` when the read failed or a stop came meanwhile.
    async fn read(&mut self, started: Instant) -> Option<VpcState> {
        let vpc = self.vpc.clone();
        let read = self.abandonable(vpc.read()).await?;
        let mut state = match read {
            Ok(s) => s,
            Err(e) => {
                self.failed_reconcile(started, format!("cannot read VPC {}: {e}", self.cfg.vpc_id));
                return None;
            }
        };
        let kept = self.ledger.overlay(&mut state, now());
        if kept.routes > 0 {
            tracing::info!(
                changes = kept.routes, window_ms = self.cfg.consistency_window.as_millis() as u64,
                "the VPC read does not show {} change(s) acknowledged within the consistency window yet: kept as written (EC2's reads lag its writes); read again when the window ends",
                kept.routes
            );
            self.lock_status().lagging_reads += kept.routes as u64;
            self.verify_at = kept.until;
        }
        self.known = Some(state.clone());
        Some(state)
    }

    /// Shows the plan's tables, notices and failback state; false when a stop came.
    fn show(&mut self, plan: Plan, state: &VpcState, failures: &[(String, Dest, String)]) -> bool {
        self.report_notices(&plan);
        self.report_tables(&plan);
        self.note_failback(&plan);
        let written = self.known.as_ref().unwrap_or(state);
        let lists = list_views(written, &plan);
        // Routes the fast path moved show as moved, not as found up to date.
        let mut shown = plan;
        shown.actions.extend(self.applied.iter().cloned());
        let tables = table_routes(written, &shown, failures, self.cfg.dry_run);
        if self.stopping() {
            return false;
        }
        let mut st = self.lock_status();
        (st.tables, st.lists, st.weights) = (tables, lists, shown.weights);
        true
    }

    /// A reconcile that went through: the failover and drain lines, the status.
    fn finish(&mut self, started: Instant) {
        self.finish_failover();
        self.finish_drain_moves();
        self.retry = None;
        let took = now().saturating_duration_since(started);
        self.observer.reconcile_seconds(took.as_secs_f64());
        let mut st = self.lock_status();
        st.last_reconcile = Some((SystemTime::now(), took));
        st.last_result = "ok".into();
    }

    /// Ends the failover in progress, if any, with its one log line.
    fn finish_failover(&mut self) {
        let Some(run) = self.failover.take() else { return };
        let mut summary = run.summary;
        if summary.routes_moved == 0 {
            report::log_nothing_moved(&summary.routers);
            return;
        }
        let last_ack = run.last_ack.unwrap_or_else(now);
        let took = last_ack.saturating_duration_since(run.at);
        summary.seconds = took.as_secs_f64();
        summary.ended = SystemTime::now().checked_sub(now().saturating_duration_since(last_ack));
        self.observer.failover_seconds(summary.seconds);
        self.announcer.announce(Announcement::Failover {
            routers: summary.routers.iter().copied().collect(),
            routes_moved: summary.routes_moved,
            seconds: summary.seconds,
        });
        report::log_failover(&summary, took);
        let mut st = self.lock_status();
        st.failovers += 1;
        st.remember_failover(summary);
    }

    /// Logs the routes this reconcile moved off drained routers, one line.
    fn finish_drain_moves(&mut self) {
        if self.drain_moves.is_empty() {
            return;
        }
        report::log_drain_moves(&self.drain_moves);
        self.drain_moves.clear();
    }

    /// Logs notices when they appear and when they clear, not on every reconcile.
    fn report_notices(&mut self, plan: &Plan) {
        report::log_notices(&self.notices, &plan.notices);
        self.notices = plan.notices.clone();
        self.lock_status().notices = plan.notices.iter().cloned().collect();
    }

    /// True once a stop was requested: the reconcile under way ends at once (its status
    /// is not updated; vpcrouter exits).
    pub(crate) fn stopping(&self) -> bool {
        let stopping = self.stop.requested();
        if stopping {
            tracing::info!("stop requested: ending the reconcile under way");
        }
        stopping
    }

    /// Runs one VPC call; `None` when a stop was requested meanwhile (the call is dropped:
    /// its connection is closed, and a write the VPC already applied shows at the next start).
    pub(crate) async fn abandonable<T>(&self, call: impl std::future::Future<Output = T>) -> Option<T> {
        let result = if self.stop.requested() {
            None
        } else {
            tokio::select! {
                biased;
                () = self.stop.wait() => None,
                r = call => Some(r),
            }
        };
        if result.is_none() {
            tracing::info!("stop requested: abandoning the EC2 call in flight");
        }
        result
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

    /// Plans from `state` with the spec, health and drains in force.
    pub(crate) fn plan_from(&mut self, state: &VpcState) -> Plan {
        let entries = self.spec.as_ref().map(spec_entries).unwrap_or_default();
        let t = now();
        let failback = self.cfg.failback.after().map(|after| Failback {
            after,
            now: t,
            healthy_since: &self.healthy_since,
            last_failback: &self.last_failback,
        });
        let input = PlanInput {
            state,
            spec: &entries,
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
        let (t, wall) = (now(), SystemTime::now());
        let views = plan.failback.values().chain(plan.zone_failback.values());
        let waits = views.filter_map(|v| match v.state {
            FailbackState::Waiting { at } => Some(at),
            _ => None,
        });
        self.next_failback = waits.min().map(|at| at.max(t + FAILBACK_WAKE_MIN));
        let entry = |v: &FailbackView| {
            let possible_at = match v.state {
                FailbackState::Waiting { at } => Some(wall + at.saturating_duration_since(t)),
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
            let described: Vec<String> = plan.managed.iter().map(ManagedTable::describe).collect();
            tracing::info!(
                rule = %self.cfg.tables, zone_affinity = self.cfg.zone_affinity, tables = plan.managed.len(),
                "managed route tables: {}", if described.is_empty() { "none".to_string() } else { described.join(", ") }
            );
        }
    }

    /// The fast path of a failover: plans from the known state and moves, at once, every
    /// CIDR that has a route on a failed or questionable router. False when the
    /// reconcile must end here (stop, leadership lost).
    async fn fast_failover(&mut self, started: Instant) -> bool {
        // Once per failover: a retried reconcile reads first.
        match &mut self.failover {
            Some(run) if !run.fast_tried => run.fast_tried = true,
            _ => return true,
        }
        let Some(known) = self.known.clone() else { return true };
        let plan = self.plan_from(&known);
        if self.stopping() {
            return false;
        }
        if failover_actions(&plan.actions).is_empty() {
            return true;
        }
        match self.execute(plan, Scope::Failover, started).await {
            Executed::Interrupted => false,
            Executed::Finished { failures, transient: true, .. } if !failures.is_empty() => {
                // The VPC is not answering after the retries: a read now would fail the same way.
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

    /// Records a failed reconcile and schedules a retry with capped, jittered backoff.
    pub(crate) fn failed_reconcile(&mut self, started: Instant, message: String) {
        let attempt = self.retry.map_or(0, |(_, n)| n + 1);
        let delay = time::backoff(Duration::from_secs(1), Duration::from_secs(30), attempt + 1, self.rng.random());
        tracing::warn!(retry_in_ms = delay.as_millis() as u64, "reconcile failed, will retry: {message}");
        self.retry = Some((now() + delay, attempt));
        let took = now().saturating_duration_since(started);
        self.observer.reconcile_seconds(took.as_secs_f64());
        self.announcer.announce(Announcement::ReconcileError(message.clone()));
        let mut st = self.lock_status();
        st.errors += 1;
        st.last_reconcile = Some((SystemTime::now(), took));
        st.last_result = message;
    }
}
