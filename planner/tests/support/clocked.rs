//! A reconcile's inputs with a clock, shared by the tests of failback and of zone affinity:
//! time is counted in seconds from `t0`, and [`Case::step`] books what the engine books after
//! each acknowledged write (the router written per table and destination, and when each
//! failback happened).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use vpcrouter_planner::model::{Applied, Cidr, Dest, Plan, ReplaceReason, RouteAction, TableSelection, VpcState};
use vpcrouter_planner::plan::{plan, Failback, FailbackPolicy, ListMode, PlanInput};

/// One reconcile's inputs, and what earlier plans left behind.
#[derive(Clone)]
pub struct Case {
    pub state: VpcState,
    pub spec: Vec<(Cidr, Vec<Ipv4Addr>)>,
    pub failed: BTreeSet<Ipv4Addr>,
    pub questionable: BTreeSet<Ipv4Addr>,
    pub drained: BTreeSet<Ipv4Addr>,
    pub lists: Option<ListMode>,
    pub policy: FailbackPolicy,
    pub tables: TableSelection,
    pub zone_affinity: bool,
    pub t0: Instant,
    /// The clock: `t0 + now`.
    pub now: Duration,
    pub healthy_since: BTreeMap<Ipv4Addr, Instant>,
    pub last_failback: BTreeMap<(Dest, Ipv4Addr), Instant>,
    pub last_written: BTreeMap<(String, Dest), Ipv4Addr>,
}

impl Case {
    /// `state` with every one of `routers` healthy since t0, the clock at t0 + 1000 s, no
    /// spec, no failback, vpc-router's table selection.
    pub fn new(state: VpcState, routers: &[&str]) -> Case {
        let t0 = Instant::now();
        Case {
            state,
            spec: Vec::new(),
            failed: BTreeSet::new(),
            questionable: BTreeSet::new(),
            drained: BTreeSet::new(),
            lists: None,
            policy: FailbackPolicy::Never,
            tables: TableSelection::Serving,
            zone_affinity: false,
            t0,
            now: Duration::from_secs(1000),
            healthy_since: routers.iter().map(|h| (ip(h), t0)).collect(),
            last_failback: BTreeMap::new(),
            last_written: BTreeMap::new(),
        }
    }

    pub fn at(&self, seconds: u64) -> Instant {
        self.t0 + Duration::from_secs(seconds)
    }

    /// Sets `net`'s candidates, in this order.
    pub fn spec(&mut self, net: &str, hosts: &[&str]) -> &mut Case {
        let net = Cidr::parse(net).expect("test CIDR");
        self.spec.retain(|(c, _)| *c != net);
        self.spec.push((net, hosts.iter().map(|h| ip(h)).collect()));
        self.spec.sort_by_key(|(c, _)| *c);
        self
    }

    pub fn plan_seeded(&self, seed: u64) -> Plan {
        let failback = self.policy.after().map(|after| Failback {
            after,
            now: self.t0 + self.now,
            healthy_since: &self.healthy_since,
            last_failback: &self.last_failback,
        });
        let input = PlanInput {
            state: &self.state,
            spec: &self.spec,
            failed: &self.failed,
            questionable: &self.questionable,
            drained: &self.drained,
            ignore: &[],
            last_written: &self.last_written,
            lists: self.lists.as_ref(),
            quota: 500,
            failback: failback.as_ref(),
            tables: &self.tables,
            zone_affinity: self.zone_affinity,
        };
        plan(&input, &mut StdRng::seed_from_u64(seed))
    }

    pub fn plan(&self) -> Plan {
        self.plan_seeded(0)
    }

    /// Plans and executes (the `n`th list created in a plan is `pl-n`), booking what the
    /// engine books.
    pub fn step(&mut self, seed: u64) -> Plan {
        let plan = self.plan_seeded(seed);
        let now = self.t0 + self.now;
        for (i, a) in plan.actions.iter().enumerate() {
            let applied = Applied { list: matches!(a, RouteAction::CreateList { .. }).then(|| (format!("pl-{i}"), 1)) };
            self.state.apply(a, &applied);
            if let Some(router) = a.new_router() {
                self.last_written.insert((a.rtb().to_string(), a.dest()), router);
            }
            if let RouteAction::Replace { reason: ReplaceReason::Failback, target, .. } = a {
                self.last_failback.insert((a.dest(), target.ip), now);
            }
        }
        plan
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test IP")
}
