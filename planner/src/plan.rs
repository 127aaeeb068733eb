//! The reconcile planner: VPC state + route spec + health → route actions.
//!
//! A port of vpc-router's `handle_spec` decision logic (update existing routes, then add
//! missing ones; one router per CIDR across all managed tables; no fail-back), with the
//! original's defects fixed: the main table's implicit associations count, routers named
//! by secondary IPs are recognised, CIDRs compare by value, IPv6 routes and gateway routes
//! are left alone without retrying a create, and "no router available" is never used as
//! a target.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use rand::seq::IndexedRandom;

use crate::model::{
    Cidr, Eni, Instance, Notice, Plan, ReplaceReason, Route, RouteAction, RouteTable, RouterTarget, VpcState,
};

/// Inputs of one reconcile decision.
pub struct PlanInput<'a> {
    /// The VPC as read from EC2.
    pub state: &'a VpcState,
    /// The route spec, canonical: CIDR -> candidate routers (sorted, unique).
    pub spec: &'a [(Cidr, Vec<Ipv4Addr>)],
    /// Hosts reported failed.
    pub failed: &'a BTreeSet<Ipv4Addr>,
    /// Hosts reported questionable.
    pub questionable: &'a BTreeSet<Ipv4Addr>,
    /// `--ignore_routes`: routes inside these networks are never deleted or changed.
    pub ignore: &'a [Cidr],
    /// The router vpcrouter last chose for each CIDR. When a route must move, this one is
    /// taken if it is a healthy candidate, so that a plan made from a state that lags
    /// behind vpcrouter's own writes (EC2 reads are eventually consistent) repeats the
    /// earlier choice instead of moving the route again.
    pub preferred: &'a BTreeMap<Cidr, Ipv4Addr>,
}

/// Decides the route actions, in execution order (see [`RouteAction::priority`]). Pure: no
/// I/O, randomness only from `rng`.
pub fn plan<R: rand::Rng + ?Sized>(input: &PlanInput<'_>, rng: &mut R) -> Plan {
    let mut planner = Planner::new(input);
    planner.run(rng);
    let mut plan = planner.plan;
    plan.actions.sort_by_key(RouteAction::priority);
    plan
}

/// Picks a router for a CIDR whose current router `old` should not (or cannot) be used.
///
/// `candidates` are the spec hosts present in the VPC. Healthy hosts (neither failed nor
/// questionable) win; failing that, a questionable one unless `old` is itself
/// questionable (no churn between questionable hosts). Picks are uniform over the
/// sorted set, so a seeded `rng` gives reproducible plans.
pub fn choose_different_host<R: rand::Rng + ?Sized>(
    old: Option<Ipv4Addr>,
    candidates: &[Ipv4Addr],
    failed: &BTreeSet<Ipv4Addr>,
    questionable: &BTreeSet<Ipv4Addr>,
    rng: &mut R,
) -> Option<Ipv4Addr> {
    let questionable_set: BTreeSet<Ipv4Addr> =
        candidates.iter().copied().filter(|h| questionable.contains(h) && !failed.contains(h)).collect();
    let healthy: Vec<Ipv4Addr> = candidates
        .iter()
        .copied()
        .filter(|h| !failed.contains(h) && !questionable_set.contains(h))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !healthy.is_empty() {
        return healthy.choose(rng).copied();
    }
    if old.is_some_and(|o| questionable_set.contains(&o)) {
        return None;
    }
    let questionable_list: Vec<Ipv4Addr> = questionable_set.into_iter().collect();
    questionable_list.choose(rng).copied()
}

/// The router settled for a CIDR during one plan, shared by all managed tables.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Choice {
    /// Every table should point at this router.
    Router(RouterTarget),
    /// No candidate is usable: routes for the CIDR are left as they are.
    NoneAvailable,
}

/// What to do with one existing managed route whose CIDR is in the spec.
enum Decision {
    /// The route stays on its current target.
    Keep,
    /// Point the route at a new router.
    Replace(RouterTarget, ReplaceReason),
}

/// One planning pass: the immutable inputs plus what has been decided so far.
struct Planner<'a> {
    input: &'a PlanInput<'a>,
    /// Spec by CIDR (lists may be empty).
    spec: BTreeMap<Cidr, &'a [Ipv4Addr]>,
    /// Owner (first instance/ENI) of every private IP in the VPC.
    owners: BTreeMap<Ipv4Addr, RouterTarget>,
    /// Every ENI by id and every instance by id (first in snapshot order wins).
    enis: HashMap<&'a str, (&'a Instance, &'a Eni)>,
    instances: HashMap<&'a str, &'a Instance>,
    /// Router settled per CIDR so far (shared by all tables).
    chosen: BTreeMap<Cidr, Choice>,
    plan: Plan,
}

impl<'a> Planner<'a> {
    fn new(input: &'a PlanInput<'a>) -> Self {
        let mut owners = BTreeMap::new();
        let mut enis = HashMap::new();
        let mut instances = HashMap::new();
        for instance in &input.state.instances {
            instances.entry(instance.id.as_str()).or_insert(instance);
        }
        for (instance, eni) in all_enis(input.state) {
            enis.entry(eni.id.as_str()).or_insert((instance, eni));
            for &ip in &eni.private_ips {
                owners.entry(ip).or_insert_with(|| target_of(ip, instance, eni));
            }
        }
        Planner {
            input,
            spec: input.spec.iter().map(|(cidr, hosts)| (*cidr, hosts.as_slice())).collect(),
            owners,
            enis,
            instances,
            chosen: BTreeMap::new(),
            plan: Plan::default(),
        }
    }

    fn run<R: rand::Rng + ?Sized>(&mut self, rng: &mut R) {
        self.report_hosts_not_in_vpc();
        let tables = managed_tables(self.input.state, self.input.spec);
        if tables.is_empty() {
            self.plan.notices.insert(Notice::NoManagedTables);
            return;
        }
        for table in &tables {
            for route in &table.routes {
                self.update_route(&table.id, route, rng);
            }
        }
        self.add_missing_routes(&tables, rng);
    }

    fn report_hosts_not_in_vpc(&mut self) {
        for (_, hosts) in self.input.spec {
            for &host in hosts {
                if !self.owners.contains_key(&host) {
                    self.plan.notices.insert(Notice::HostNotInVpc { host });
                }
            }
        }
    }

    fn is_protected(&self, cidr: Cidr) -> bool {
        self.input.ignore.iter().any(|&ignored| cidr.is_within(ignored))
    }

    /// Visits one route of a managed table: delete, replace, or leave it.
    fn update_route<R: rand::Rng + ?Sized>(&mut self, rtb: &str, route: &Route, rng: &mut R) {
        let Some(cidr) = route_cidr(route) else {
            return;
        };
        if self.is_protected(cidr) {
            return;
        }
        let hosts = self.spec.get(&cidr).copied();
        if !route.targets_instance() {
            if hosts.is_some() {
                let target = route.other_target.clone().unwrap_or_else(|| "unknown target".into());
                self.plan.notices.insert(Notice::HeldByOtherTarget { rtb: rtb.into(), cidr, target });
            }
            return;
        }
        let pointed = self.route_target(route);
        let primary_ip = pointed.and_then(|(_, eni)| eni.private_ips.first().copied());
        let Some(hosts) = hosts.filter(|h| !h.is_empty()) else {
            self.plan.actions.push(RouteAction::Delete { rtb: rtb.into(), cidr, old_router: primary_ip });
            return;
        };
        let current = pointed.and_then(|(instance, eni)| {
            let ip = hosts.iter().copied().find(|h| eni.private_ips.contains(h))?;
            Some(target_of(ip, instance, eni))
        });
        let current_ip = current.as_ref().map(|t| t.ip);
        let after = match self.decide(cidr, hosts, current, rng) {
            Some(Decision::Keep) | None => current_ip,
            Some(Decision::Replace(target, reason)) => {
                let router = Some(target.ip);
                let old_router = current_ip.or(primary_ip);
                let rtb = rtb.to_string();
                self.plan.actions.push(RouteAction::Replace { rtb, cidr, target, old_router, reason });
                router
            }
        };
        self.plan.routes.insert((rtb.into(), cidr), after);
    }

    /// Keep or replace a route currently on `current` (`None`: not a candidate or
    /// unknown). `None` result: no router available, leave the route as it is.
    fn decide<R: rand::Rng + ?Sized>(
        &mut self,
        cidr: Cidr,
        hosts: &[Ipv4Addr],
        current: Option<RouterTarget>,
        rng: &mut R,
    ) -> Option<Decision> {
        let current_ip = current.as_ref().map(|t| t.ip);
        match self.chosen.get(&cidr) {
            Some(Choice::NoneAvailable) => return None,
            Some(Choice::Router(chosen)) if Some(chosen.ip) == current_ip => {
                return Some(Decision::Keep);
            }
            Some(Choice::Router(chosen)) => {
                let reason = ReplaceReason::OtherTableUsesDifferentRouter;
                return Some(Decision::Replace(chosen.clone(), reason));
            }
            None => {}
        }
        let reason = match current {
            None => ReplaceReason::NotEligible,
            Some(t) if self.input.failed.contains(&t.ip) => ReplaceReason::RouterFailed,
            Some(t) if self.input.questionable.contains(&t.ip) => ReplaceReason::RouterQuestionable,
            Some(t) => {
                self.chosen.insert(cidr, Choice::Router(t));
                return Some(Decision::Keep);
            }
        };
        let target = self.settle(cidr, current_ip, hosts, rng)?;
        Some(Decision::Replace(target, reason))
    }

    /// Chooses a router for `cidr` and records the choice (or that there is none).
    fn settle<R: rand::Rng + ?Sized>(
        &mut self,
        cidr: Cidr,
        old: Option<Ipv4Addr>,
        hosts: &[Ipv4Addr],
        rng: &mut R,
    ) -> Option<RouterTarget> {
        let candidates: Vec<Ipv4Addr> = hosts.iter().copied().filter(|h| self.owners.contains_key(h)).collect();
        let (failed, questionable) = (self.input.failed, self.input.questionable);
        let preferred =
            self.input.preferred.get(&cidr).copied().filter(|p| {
                Some(*p) != old && candidates.contains(p) && !failed.contains(p) && !questionable.contains(p)
            });
        let target = preferred
            .or_else(|| choose_different_host(old, &candidates, failed, questionable, rng))
            .and_then(|ip| self.owners.get(&ip).cloned());
        let choice = match &target {
            Some(t) => Choice::Router(t.clone()),
            None => {
                self.plan.notices.insert(Notice::NoAvailableRouter { cidr });
                Choice::NoneAvailable
            }
        };
        self.chosen.insert(cidr, choice);
        target
    }

    /// Creates spec routes missing from managed tables, one router per CIDR.
    fn add_missing_routes<R: rand::Rng + ?Sized>(&mut self, tables: &[&RouteTable], rng: &mut R) {
        let spec: Vec<(Cidr, &[Ipv4Addr])> = self.spec.iter().map(|(c, h)| (*c, *h)).collect();
        let present: Vec<BTreeSet<Cidr>> =
            tables.iter().map(|t| t.routes.iter().filter_map(route_cidr).collect()).collect();
        for (cidr, hosts) in spec.into_iter().filter(|(_, hosts)| !hosts.is_empty()) {
            let missing = tables.iter().zip(&present).filter(|(_, p)| !p.contains(&cidr));
            for (table, _) in missing {
                let target = match self.chosen.get(&cidr) {
                    Some(Choice::NoneAvailable) => break,
                    Some(Choice::Router(t)) => t.clone(),
                    None => match self.settle(cidr, None, hosts, rng) {
                        Some(t) => t,
                        None => break,
                    },
                };
                self.plan.routes.insert((table.id.clone(), cidr), Some(target.ip));
                let rtb = table.id.clone();
                self.plan.actions.push(RouteAction::Create { rtb, cidr, target });
            }
        }
    }
}

/// Every ENI of the VPC with its instance, in snapshot order.
fn all_enis(state: &VpcState) -> impl Iterator<Item = (&Instance, &Eni)> {
    state.instances.iter().flat_map(|i| i.enis.iter().map(move |e| (i, e)))
}

fn target_of(ip: Ipv4Addr, instance: &Instance, eni: &Eni) -> RouterTarget {
    RouterTarget { ip, instance_id: instance.id.clone(), eni_id: eni.id.clone() }
}

/// The route's IPv4 destination, if it has a canonical one.
fn route_cidr(route: &Route) -> Option<Cidr> {
    route.destination.as_deref().and_then(|d| Cidr::parse(d).ok())
}

impl<'a> Planner<'a> {
    /// The instance and ENI a route points at; `None` when unknown or obsolete.
    ///
    /// An ENI id wins (and must belong to the route's instance, if one is named); an
    /// instance id alone means that instance's primary interface.
    fn route_target(&self, route: &Route) -> Option<(&'a Instance, &'a Eni)> {
        if let Some(eni_id) = &route.eni_id {
            let &(instance, eni) = self.enis.get(eni_id.as_str())?;
            let mismatch = route.instance_id.as_ref().is_some_and(|id| *id != instance.id);
            return (!mismatch).then_some((instance, eni));
        }
        let instance = *self.instances.get(route.instance_id.as_deref()?)?;
        let eni = instance.enis.iter().find(|e| e.device_index == 0).or(instance.enis.first())?;
        Some((instance, eni))
    }
}

/// The route tables a plan manages, sorted by id: those serving a subnet of an interface
/// that owns a spec host (primary or secondary IP). The main table also serves every
/// subnet without an explicit association.
pub fn managed_tables<'s>(state: &'s VpcState, spec: &[(Cidr, Vec<Ipv4Addr>)]) -> Vec<&'s RouteTable> {
    let hosts: BTreeSet<Ipv4Addr> = spec.iter().flat_map(|(_, hosts)| hosts.iter().copied()).collect();
    let cluster: BTreeSet<&str> = all_enis(state)
        .filter(|(_, eni)| eni.private_ips.iter().any(|ip| hosts.contains(ip)))
        .map(|(_, eni)| eni.subnet_id.as_str())
        .collect();
    let explicit: BTreeSet<&str> =
        state.route_tables.iter().flat_map(|t| t.subnets.iter().map(String::as_str)).collect();
    let implicit_in_cluster =
        state.subnets.iter().any(|s| !explicit.contains(s.as_str()) && cluster.contains(s.as_str()));
    let mut tables: Vec<&RouteTable> = state
        .route_tables
        .iter()
        .filter(|t| t.subnets.iter().any(|s| cluster.contains(s.as_str())) || (t.main && implicit_in_cluster))
        .collect();
    tables.sort_by(|a, b| a.id.cmp(&b.id));
    tables
}
