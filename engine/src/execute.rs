//! Executing a plan while listening.
//!
//! Writes start one at a time, each when the VPC's budget admits one (a token of the write
//! bucket, an in-flight slot), in the plan's order (outages first), and run concurrently.
//! Meanwhile the engine keeps taking events. An event that changes the facts (a router
//! failed or recovered, a new spec, a drain) revises the plan: it is made again from the
//! known state (the last read with every acknowledged write applied), the writes not yet
//! started that the new plan does not make are withdrawn, and execution goes on with the
//! new plan's writes. Writes in flight finish and are booked; a destination with a write in
//! flight gets no second one until it is answered, and once every write in flight at a
//! revision is answered the plan is made again (its answer may have put a route onto a
//! router that has failed since). So a router reported failed gets no write started after
//! the report was taken, and a second outage is not queued behind the first one's routes.
//!
//! In cluster mode each write starts only within a confirmed leadership lease; losing the
//! leadership stops new writes at once.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use tokio::task::{Id, JoinSet};
use vpcrouter_planner::model::{Applied, Dest, Plan, ReplaceReason, RouteAction, VpcState};

use crate::announce::route_changed;
use crate::engine::{now, Engine, Taken};
use crate::ports::{Permit, WriteOutcome, Written};
use crate::report::log_action;

/// Lease confirmations in a row that may leave no room for a write (the lease too close to
/// running out) before a reconcile gives up; each waits a little for the lease to be renewed.
const MAX_SHORT_LEASES: u32 = 10;
/// The wait after a lease that left no room for a write.
const SHORT_LEASE_WAIT: Duration = Duration::from_millis(100);

/// Which of a plan's writes an execution makes (also after a revision).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The fast path: only the destinations moving off failed or questionable routers.
    Failover,
    /// Every action of the plan.
    Full,
}

/// How executing a plan ended.
pub(crate) enum Executed {
    /// Every write was tried.
    Finished {
        /// The plan as last revised.
        plan: Box<Plan>,
        /// (table, destination, error) of each write that failed.
        failures: Vec<(String, Dest, String)>,
        /// Some failure showed that the state planned from was stale.
        stale: bool,
        /// Every failure was transient (the VPC unavailable after the retries).
        transient: bool,
    },
    /// Stop requested, leadership lost, or a write outlasted the lease: nothing more to do
    /// in this reconcile (the status says why).
    Interrupted,
}

type Key = (String, Dest);

fn key(a: &RouteAction) -> Key {
    (a.rtb().to_string(), a.dest())
}

/// A write answered, as the task that ran it returns it.
struct Answer {
    /// The write that was made (or tried).
    action: RouteAction,
    /// How the write ended, and the calls (and throttled answers) it took.
    written: Written,
    /// When the answer came: a failover's duration ends at its last acknowledged write.
    at: Instant,
}

/// An execution under way.
struct Run {
    /// The plan as last revised.
    plan: Plan,
    /// Which of its writes to make.
    scope: Scope,
    /// Writes not started yet, in order.
    pending: VecDeque<RouteAction>,
    /// Writes in flight.
    running: JoinSet<Answer>,
    /// The destination of each write in flight, by task.
    busy: HashMap<Id, Key>,
    /// Destinations in flight when the plan was last revised: the revision did not know
    /// their answers, so the plan is made again once they are all answered.
    unseen: HashSet<Key>,
    /// A permit to start a write, not used yet.
    permit: Option<Permit>,
    /// Cluster mode: until when the leadership is confirmed.
    lease: Option<Instant>,
    /// Lease confirmations in a row that left no room for a write.
    short_leases: u32,
    /// When the next look at the lease is due after one that left no room.
    lease_wait: Option<Instant>,
    /// (table, destination, error) of each write that failed so far: shown in the status,
    /// and a reason to retry the reconcile.
    failures: Vec<(String, Dest, String)>,
    /// Some failure showed that the state planned from was stale: read and plan again.
    stale: bool,
    /// Every failure so far was transient (the VPC unavailable after the retries): a failed
    /// fast path then ends the reconcile at once, as a read would fail the same way.
    transient: bool,
}

impl Run {
    fn new(plan: Plan, scope: Scope) -> Run {
        let pending = scoped(&plan, scope).into();
        Run {
            plan,
            scope,
            pending,
            running: JoinSet::new(),
            busy: HashMap::new(),
            unseen: HashSet::new(),
            permit: None,
            lease: None,
            short_leases: 0,
            lease_wait: None,
            failures: Vec::new(),
            stale: false,
            transient: true,
        }
    }

    fn in_flight(&self, k: &Key) -> bool {
        self.busy.values().any(|b| b == k)
    }

    /// The next write that may start: the first pending one whose destination has no
    /// write in flight.
    fn next(&self) -> Option<usize> {
        self.pending.iter().position(|a| !self.in_flight(&key(a)))
    }
}

/// True for a route move off a failed or questionable router: the work of a failover.
fn moves_off_bad_router(a: &RouteAction) -> bool {
    matches!(a, RouteAction::Replace { reason: ReplaceReason::RouterFailed | ReplaceReason::RouterQuestionable, .. })
}

/// The fast path's share of a plan: every write of a destination that moves off a failed
/// or questionable router (its creates and replaces in every table).
pub(crate) fn failover_actions(actions: &[RouteAction]) -> Vec<RouteAction> {
    let moving: BTreeSet<Dest> = actions.iter().filter(|a| moves_off_bad_router(a)).map(RouteAction::dest).collect();
    actions
        .iter()
        .filter(|a| moving.contains(&a.dest()) && matches!(a, RouteAction::Create { .. } | RouteAction::Replace { .. }))
        .cloned()
        .collect()
}

/// The writes of `plan` an execution of `scope` makes, in order.
fn scoped(plan: &Plan, scope: Scope) -> Vec<RouteAction> {
    let actions = match scope {
        Scope::Full => plan.actions.clone(),
        Scope::Failover => failover_actions(&plan.actions),
    };
    outages_side_by_side(actions)
}

/// Orders the moves off failed routers (first in a plan) router by router in turn, so that a
/// second outage's routes are not queued behind the remaining routes of the first: every
/// outage makes progress at once. The other actions keep their order, after them.
fn outages_side_by_side(actions: Vec<RouteAction>) -> Vec<RouteAction> {
    let failed_from = |a: &RouteAction| match a {
        RouteAction::Replace { reason: ReplaceReason::RouterFailed, old_router, .. } => Some(*old_router),
        _ => None,
    };
    let mut queues: Vec<(Option<std::net::Ipv4Addr>, VecDeque<RouteAction>)> = Vec::new();
    let mut rest = Vec::new();
    for a in actions {
        match failed_from(&a) {
            Some(from) => match queues.iter_mut().find(|(r, _)| *r == from) {
                Some((_, q)) => q.push_back(a),
                None => queues.push((from, VecDeque::from([a]))),
            },
            None => rest.push(a),
        }
    }
    let mut out = Vec::new();
    while queues.iter().any(|(_, q)| !q.is_empty()) {
        out.extend(queues.iter_mut().filter_map(|(_, q)| q.pop_front()));
    }
    out.extend(rest);
    out
}

/// What woke the execution.
enum Wake {
    Stop,
    Event(Option<crate::event::Event>),
    Answered(Result<(Id, Answer), tokio::task::JoinError>),
    Admitted(Permit),
    LeaseWait,
}

impl Engine {
    /// Executes `plan` (the share `scope` names), taking events meanwhile.
    pub(crate) async fn execute(&mut self, plan: Plan, scope: Scope, started: Instant) -> Executed {
        let mut run = Run::new(plan, scope);
        loop {
            if self.exit.is_some() || self.stop.requested() {
                return Executed::Interrupted;
            }
            if !self.leading {
                // Demoted: nothing more starts; the writes in flight are answered and booked.
                run.pending.clear();
                if run.running.is_empty() {
                    return Executed::Interrupted;
                }
            }
            if let Err(()) = self.start_write(&mut run, started).await {
                return Executed::Interrupted;
            }
            if run.pending.is_empty() && run.running.is_empty() {
                break;
            }
            let wants_permit = run.permit.is_none() && run.lease_wait.is_none() && self.leading && run.next().is_some();
            let wake = tokio::select! {
                biased;
                () = self.stop.wait() => Wake::Stop,
                e = self.events.recv() => Wake::Event(e),
                Some(j) = run.running.join_next_with_id(), if !run.running.is_empty() => Wake::Answered(j),
                p = self.vpc.admit(), if wants_permit => Wake::Admitted(p),
                () = sleep_until(run.lease_wait), if run.lease_wait.is_some() => Wake::LeaseWait,
            };
            match wake {
                Wake::Stop => return Executed::Interrupted,
                Wake::Event(None) => {
                    self.exit = Some(Ok(()));
                    return Executed::Interrupted;
                }
                Wake::Event(Some(e)) => self.on_event_while_writing(&mut run, e),
                Wake::Answered(j) => {
                    if let Err(()) = self.on_answer(&mut run, j, started) {
                        return Executed::Interrupted;
                    }
                }
                Wake::Admitted(p) => run.permit = Some(p),
                Wake::LeaseWait => run.lease_wait = None,
            }
        }
        Executed::Finished {
            plan: Box::new(run.plan),
            failures: run.failures,
            stale: run.stale,
            transient: run.transient,
        }
    }

    /// Takes an event (and every other one already waiting) while a plan is written; revises
    /// the plan when they change the facts.
    fn on_event_while_writing(&mut self, run: &mut Run, first: crate::event::Event) {
        let mut why = None;
        let mut event = Some(first);
        while let Some(e) = event.take() {
            match self.take(e) {
                Taken::Changed(reason) => why = Some(reason),
                Taken::Demoted => {
                    // The loop drops them before it starts anything else.
                    let n = run.pending.len();
                    tracing::warn!(withdrawn = n, "no longer the cluster leader: {n} write(s) not started are dropped");
                }
                Taken::Nothing | Taken::Exit => {}
            }
            event = self.events.try_recv().ok();
        }
        if let (Some(reason), true) = (why, self.leading) {
            self.revise(run, reason, true);
        }
    }

    /// Makes the plan again from the known state and the facts in force: withdraws the
    /// pending writes it no longer makes, queues its writes for destinations not in flight.
    fn revise(&mut self, run: &mut Run, reason: &str, counted: bool) {
        let Some(known) = self.known.take() else {
            // Nothing to plan from: the next pass reads the VPC.
            let n = run.pending.len();
            run.pending.clear();
            self.count_withdrawn(n as u64);
            return;
        };
        let plan = self.plan_from(&known);
        self.known = Some(known);
        let in_flight: HashSet<&Key> = run.busy.values().collect();
        let next: VecDeque<RouteAction> =
            scoped(&plan, run.scope).into_iter().filter(|a| !in_flight.contains(&key(a))).collect();
        let kept: HashMap<Key, &RouteAction> = next.iter().map(|a| (key(a), a)).collect();
        let withdrawn = run.pending.iter().filter(|a| kept.get(&key(a)) != Some(a)).count();
        tracing::info!(
            reason,
            withdrawn,
            pending = next.len(),
            in_flight = run.busy.len(),
            "plan revised while writing: {withdrawn} write(s) not started withdrawn, {} to go",
            next.len()
        );
        run.unseen = run.busy.values().cloned().collect();
        (run.plan, run.pending) = (plan, next);
        self.count_withdrawn(withdrawn as u64);
        if counted {
            self.lock_status().revisions += 1;
            if let Some(f) = &mut self.failover {
                f.summary.revisions += 1;
            }
        }
    }

    fn count_withdrawn(&mut self, n: u64) {
        self.lock_status().withdrawn += n;
        if let Some(f) = &mut self.failover {
            f.summary.withdrawn += n;
        }
    }

    /// Starts the next write when a permit is at hand and the leadership allows it.
    /// `Err` when the reconcile must end (leadership lost or never long enough).
    async fn start_write(&mut self, run: &mut Run, started: Instant) -> Result<(), ()> {
        if run.permit.is_none() || !self.leading {
            return Ok(());
        }
        let Some(i) = run.next() else { return Ok(()) };
        let deadline = match self.lease_for_write(run, started).await? {
            Some(d) => d,
            None => return Ok(()),
        };
        let (Some(permit), Some(action)) = (run.permit.take(), run.pending.remove(i)) else { return Ok(()) };
        let k = key(&action);
        let write = self.vpc.write(permit, action.clone(), deadline);
        let task = run.running.spawn(async move {
            let written = write.await;
            Answer { action, written, at: now() }
        });
        run.busy.insert(task.id(), k);
        Ok(())
    }

    /// The deadline of a write starting now: `Some(None)` without a cluster, `Some(lease)`
    /// within a confirmed lease, `None` when the lease leaves no room yet (a look again is
    /// due shortly). `Err` when the reconcile must end.
    async fn lease_for_write(&mut self, run: &mut Run, started: Instant) -> Result<Option<Option<Instant>>, ()> {
        let Some(leadership) = self.leadership.clone() else { return Ok(Some(None)) };
        let room = |until: Instant| now() + self.vpc.expected_write() <= until;
        if let Some(until) = run.lease.filter(|u| room(*u)) {
            return Ok(Some(Some(until)));
        }
        let until = match self.abandonable(leadership.confirm()).await {
            None => return Err(()),
            Some(Ok(until)) => until,
            Some(Err(e)) => {
                tracing::warn!("cluster: leadership not confirmed, no further EC2 writes: {e}");
                self.leading = false;
                self.announce_role(false);
                self.known = None;
                self.ledger.clear();
                self.lock_status().last_result = format!("stopped writing: leadership not confirmed: {e}");
                return Err(());
            }
        };
        run.lease = Some(until);
        if room(until) {
            run.short_leases = 0;
            return Ok(Some(Some(until)));
        }
        run.short_leases += 1;
        if run.short_leases >= MAX_SHORT_LEASES {
            let message =
                format!("{} route change(s) not sent: the leader's lease never covered a write", run.pending.len());
            self.failed_reconcile(started, message);
            return Err(());
        }
        run.lease_wait = Some(now() + SHORT_LEASE_WAIT);
        Ok(None)
    }

    /// Books a write's answer. `Err` when the reconcile must end (a write outlasted the lease).
    fn on_answer(
        &mut self,
        run: &mut Run,
        joined: Result<(Id, Answer), tokio::task::JoinError>,
        started: Instant,
    ) -> Result<(), ()> {
        let (id, answer) = match joined {
            Ok(x) => x,
            Err(e) => {
                // A write task that panicked: its destination is free again; the next read tells.
                if let Some(k) = run.busy.remove(&e.id()) {
                    run.unseen.remove(&k);
                }
                self.known = None;
                return Ok(());
            }
        };
        let k = run.busy.remove(&id);
        let was_unseen = k.as_ref().is_some_and(|k| run.unseen.remove(k));
        let Answer { action, written, at } = answer;
        if let Some(f) = &mut self.failover {
            f.summary.writes += written.calls;
            f.summary.throttled += written.throttled;
        }
        match written.outcome {
            WriteOutcome::Done(applied) => self.done(&action, &applied, at),
            WriteOutcome::Failed(e) => {
                tracing::error!(cidr = %action.dest(), rtb = action.rtb(), "change failed: {e}");
                if e.stale {
                    self.ledger.forget(&action);
                }
                run.stale |= e.stale;
                run.transient &= e.transient;
                run.failures.push((action.rtb().to_string(), action.dest(), e.to_string()));
            }
            WriteOutcome::NotStarted => run.pending.push_front(action),
            WriteOutcome::Abandoned => {
                let message = "an EC2 write outlasted the leader's lease: abandoned; leadership is confirmed again before the retry";
                tracing::warn!(cidr = %action.dest(), rtb = action.rtb(), "{message}");
                self.known = None;
                self.failed_reconcile(started, message.to_string());
                return Err(());
            }
        }
        if was_unseen && run.unseen.is_empty() && self.leading {
            self.revise(run, "the writes in flight at the last revision were answered", false);
        }
        Ok(())
    }

    /// Books an action the VPC acknowledged at `at`.
    fn done(&mut self, a: &RouteAction, applied: &Applied, at: Instant) {
        let empty = VpcState::default();
        let known = self.known.as_ref().unwrap_or(&empty);
        log_action(if a.is_route() { "route changed" } else { "prefix list changed" }, a, known);
        if let Some(announcement) = route_changed(a) {
            self.announcer.announce(announcement);
        }
        self.applied.push(a.clone());
        if let Some(known) = &mut self.known {
            known.apply(a, applied);
        }
        self.ledger.record(a, applied, at);
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
            self.last_failback.insert((a.dest(), router), at);
        }
        if let Some(run) = &mut self.failover {
            run.last_ack = run.last_ack.max(Some(at));
            if let RouteAction::Replace { old_router: Some(old), .. } = a {
                if run.summary.routers.contains(old) {
                    run.summary.routes_moved += 1;
                }
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
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    }
}
