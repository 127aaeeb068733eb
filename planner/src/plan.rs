//! The reconcile planner: VPC state + route spec + health → route actions.
//!
//! A port of vpc-router's `handle_spec` decision logic (update existing routes, then add
//! missing ones; one router per CIDR across all managed tables; no fail-back unless
//! `--failback preferred` asks for it, see [`Failback`]), with the
//! original's defects fixed: the main table's implicit associations count, routers named
//! by secondary IPs are recognised, CIDRs compare by value, IPv6 routes and gateway routes
//! are left alone without retrying a create, and "no router available" is never used as
//! a target.
use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use rand::seq::IndexedRandom;

use crate::fast::{last_wins, map_with_capacity, FastMap};
use crate::model::{
    Cidr, DeleteReason, Dest, Eni, FailbackState, FailbackView, Family, Group, Instance, ManagedTable, Notice, Plan,
    PlannedRoutes, PrefixList, ReplaceReason, Route, RouteAction, RouteTable, RouterTarget, TableSelection, VpcState,
    Within,
};
use crate::route_index::RouteIndex;

/// Prefix-list mode (`--prefix-lists`): the settings that name and size the lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListMode {
    /// The cluster name the lists are tagged and named with.
    pub cluster: String,
    /// The most entries one list may have (EC2: 1000); larger groups are routed per CIDR.
    pub max_entries: u32,
    /// The fewest CIDRs a group needs to get a list; smaller groups are routed per CIDR (a
    /// list of one CIDR saves no write and weighs more against the route quota).
    pub min_members: usize,
}

impl ListMode {
    /// The most entries EC2 allows in one customer-managed prefix list.
    pub const EC2_MAX_ENTRIES: u32 = 1000;
    /// Groups of fewer CIDRs are routed one route per CIDR.
    pub const MIN_MEMBERS: usize = 2;

    /// The mode vpcrouter runs with `--prefix-lists`: lists tagged with `cluster`, EC2's
    /// size limit, no lists of a single CIDR.
    pub fn new(cluster: &str) -> ListMode {
        ListMode { cluster: cluster.to_owned(), max_entries: Self::EC2_MAX_ENTRIES, min_members: Self::MIN_MEMBERS }
    }
}

/// `--failback`: whether routes move back to their CIDR's preferred router.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailbackPolicy {
    /// A route stays where a failover put it (vpc-router's behaviour, the default).
    #[default]
    Never,
    /// A route moves back to its CIDR's first candidate once that one has been healthy for
    /// `after` without a single failure, at most once per `after` (see [`Failback`]).
    Preferred {
        /// `--failback-after`.
        after: Duration,
    },
}

impl FailbackPolicy {
    /// The policy's name, as `--failback` takes it.
    pub fn name(&self) -> &'static str {
        match self {
            FailbackPolicy::Never => "never",
            FailbackPolicy::Preferred { .. } => "preferred",
        }
    }

    /// The hold-down, with `preferred`.
    pub fn after(&self) -> Option<Duration> {
        match self {
            FailbackPolicy::Never => None,
            FailbackPolicy::Preferred { after } => Some(*after),
        }
    }
}

/// What `--failback preferred` decides with. Time enters as values: the planner never
/// reads the clock.
///
/// A CIDR's preferred router is the first of its candidates in the spec's order. A route
/// on another (healthy) candidate moves back to it, in every managed table at once, when
/// the preferred router is healthy now (neither failed nor questionable, and in the VPC),
/// has been healthy for at least `after` without a break, and the destination's last
/// failback is at least `after` ago: a router that flaps never has the time to qualify,
/// and no destination moves back more than once per `after`.
///
/// The policy also picks the router of a route that must be placed or moved anyway: a
/// new route (or one on a target that is no longer a candidate) goes to the preferred
/// router whenever it is healthy, and a route leaving a failed or questionable router
/// goes to it when it qualifies for a failback; otherwise the choice is vpc-router's.
#[derive(Clone, Debug)]
pub struct Failback<'a> {
    /// `--failback-after`: how long the preferred router must have been healthy, and the
    /// hold-down between two failbacks of one destination.
    pub after: Duration,
    /// The time the plan is made for.
    pub now: Instant,
    /// Since when each router has been healthy without a break (the end of its last
    /// failed or questionable report, or when vpcrouter started watching it). A router
    /// that is not in the map is not healthy.
    pub healthy_since: &'a BTreeMap<Ipv4Addr, Instant>,
    /// When each destination's routes last moved back to a preferred router, by
    /// destination and router (with `--zone-affinity` each zone has a preferred router of
    /// its own, and its own hold-down).
    pub last_failback: &'a BTreeMap<(Dest, Ipv4Addr), Instant>,
}

impl Failback<'_> {
    /// When routes of `dest` may move back to `router`: once it has been healthy for
    /// `after`, and `after` after the last failback of `dest` to it. `None` while `router`
    /// is not healthy (or the time is beyond what the clock holds).
    pub fn possible_at(&self, router: Ipv4Addr, dest: &Dest) -> Option<Instant> {
        let healthy = self.healthy_since.get(&router)?.checked_add(self.after)?;
        match self.last_failback.get(&(dest.clone(), router)) {
            None => Some(healthy),
            Some(last) => Some(last.checked_add(self.after)?.max(healthy)),
        }
    }
}

/// Inputs of one reconcile decision.
pub struct PlanInput<'a> {
    /// The VPC as read from EC2.
    pub state: &'a VpcState,
    /// The route spec, canonical: CIDR -> candidate routers (unique, in the spec's order:
    /// the first is the preferred router of [`Failback`]; the order matters nowhere else).
    pub spec: &'a [(Cidr, Vec<Ipv4Addr>)],
    /// Hosts reported failed.
    pub failed: &'a BTreeSet<Ipv4Addr>,
    /// Hosts reported questionable.
    pub questionable: &'a BTreeSet<Ipv4Addr>,
    /// Drained hosts (maintenance mode): never chosen; a route on one moves to another
    /// healthy candidate, and stays (with a notice) when there is none.
    pub drained: &'a BTreeSet<Ipv4Addr>,
    /// `--ignore_routes`: routes inside these networks are never deleted or changed.
    pub ignore: &'a [Cidr],
    /// The router vpcrouter last wrote for each destination in each route table. When a
    /// route must move, the one written in a table sharing its router choice is taken if
    /// it is a healthy candidate, so that a plan made from a state that lags behind
    /// vpcrouter's own writes (EC2 reads are eventually consistent) repeats the earlier
    /// choice instead of moving the route again.
    pub last_written: &'a BTreeMap<(String, Dest), Ipv4Addr>,
    /// `Some`: route groups of CIDRs through prefix lists; `None`: one route per CIDR (and
    /// the lists this cluster owns are retired).
    pub lists: Option<&'a ListMode>,
    /// `--route-table-quota`: routes a table may hold (a prefix-list route weighs its
    /// list's max entries).
    pub quota: u32,
    /// `Some`: `--failback preferred`; `None`: routes never move back.
    pub failback: Option<&'a Failback<'a>>,
    /// `--route-tables` / `--route-table-tag`: the tables managed (by default those serving
    /// the subnets of the spec's routers).
    pub tables: &'a TableSelection,
    /// `--zone-affinity`: a table of one availability zone uses a healthy candidate of its
    /// own zone when the CIDR has one (the first in the spec's order); the others share the
    /// CIDR's common router.
    pub zone_affinity: bool,
}

/// Plans of one reconcile at most, each made from the state the previous one's changes
/// leave, when a plan's changes unlock further ones ([`Plan::staged`]: a route to a list
/// just created; a route deleted once another carries its CIDRs). The engine and
/// [`crate::preview`] stop there.
pub const MAX_STAGES: usize = 8;

/// A route spec as [`PlanInput::spec`] takes it: each CIDR with its routers in the spec's
/// order (the first is the preferred one of `--failback preferred`).
pub fn spec_entries(spec: &vpcrouter_plugin_api::RouteSpec) -> Vec<(Cidr, Vec<Ipv4Addr>)> {
    spec.routes.iter().map(|r| (r.cidr, r.hosts.iter().map(|h| h.addr()).collect())).collect()
}

/// Decides the actions, in execution order (see [`RouteAction::priority`]). Pure: no I/O,
/// randomness only from `rng`.
pub fn plan<R: rand::Rng + ?Sized>(input: &PlanInput<'_>, rng: &mut R) -> Plan {
    let down = hosts_not_running(input);
    let failed: BTreeSet<Ipv4Addr>;
    let with_down;
    let input = if down.is_empty() {
        input
    } else {
        // A router whose instance is not running cannot forward: failed, whatever the
        // health monitor says.
        failed = input.failed.iter().copied().chain(down.iter().filter_map(Notice::host)).collect();
        with_down = PlanInput { failed: &failed, ..*input };
        &with_down
    };
    let mut planner = Planner::new(input);
    planner.run(rng);
    let mut plan = planner.plan;
    plan.notices.extend(down);
    plan.actions.sort_by_key(RouteAction::priority);
    plan
}

/// The spec hosts owned only by instances that are not running, as notices.
fn hosts_not_running(input: &PlanInput<'_>) -> Vec<Notice> {
    let state = input.state;
    if state.not_running.is_empty() {
        return Vec::new();
    }
    let hosts: BTreeSet<Ipv4Addr> = input.spec.iter().flat_map(|(_, hosts)| hosts.iter().copied()).collect();
    let mut down: BTreeMap<Ipv4Addr, Option<(&str, &str)>> = BTreeMap::new();
    for (instance, eni) in all_enis(state) {
        let run_state = state.not_running.get(&instance.id).map(|s| (instance.id.as_str(), s.as_str()));
        for ip in eni.private_ips.iter().filter(|ip| hosts.contains(ip)) {
            // One running owner is enough (an IP freed by a terminated instance may be
            // taken by a new one).
            let owner = down.entry(*ip).or_insert(run_state);
            *owner = owner.and(run_state);
        }
    }
    let down = down.into_iter().filter_map(|(host, o)| o.map(|(i, s)| (host, i.to_owned(), s.to_owned())));
    down.map(|(host, instance, state)| Notice::NotRunning { host, instance, state }).collect()
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

/// The router settled for a unit during one plan, shared by all managed tables.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Choice {
    /// Every table should point at this router.
    Router(RouterTarget),
    /// No candidate is usable: routes for the unit are left as they are.
    NoneAvailable,
}

/// What one router choice covers: a CIDR routed on its own, or a group (index into
/// `Planner::groups`) whose CIDRs all use one router.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Unit {
    Cidr(Cidr),
    Group(usize),
}

/// Which tables share one router choice of a unit: `None`, the unit's common router (every
/// table, as in vpc-router); with `--zone-affinity`, `Some(zone)` for the tables of that
/// availability zone while the unit has a healthy candidate there.
type Scope<'a> = Option<&'a str>;

/// The router an existing route points at, when it is a candidate of the route's unit:
/// a [`RouterTarget`] without its owned ids (made only when a choice records it).
#[derive(Clone, Copy)]
struct Current<'a> {
    ip: Ipv4Addr,
    instance: &'a Instance,
    eni: &'a Eni,
}

impl Current<'_> {
    fn target(&self) -> RouterTarget {
        target_of(self.ip, self.instance, self.eni)
    }
}

/// What to do with one existing managed route whose destination is in the spec.
enum Decision {
    /// The route stays on its current target.
    Keep,
    /// Point the route at a new router.
    Replace(RouterTarget, ReplaceReason),
}

/// Which managed tables carry a destination's route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Carriers {
    /// Every table (a CIDR routed on its own).
    All,
    /// Subnet tables only (a prefix list: gateway route tables hold none).
    Subnet,
    /// Gateway route tables only (a CIDR of a group, routed through its list elsewhere).
    Gateway,
}

impl Carriers {
    fn includes(self, table: &RouteTable) -> bool {
        match self {
            Carriers::All => true,
            Carriers::Subnet => table.gateway().is_none(),
            Carriers::Gateway => table.gateway().is_some(),
        }
    }
}

/// A group routed through a prefix list, and the owned list that carries it, if any.
struct Listed<'a> {
    group: Group,
    list: Option<&'a PrefixList>,
}

/// One planning pass: the immutable inputs plus what has been decided so far.
struct Planner<'a> {
    input: &'a PlanInput<'a>,
    /// Spec by CIDR (lists may be empty).
    spec: BTreeMap<Cidr, &'a [Ipv4Addr]>,
    /// Owner (first instance/ENI) of every private IP in the VPC.
    owners: BTreeMap<Ipv4Addr, RouterTarget>,
    /// Every ENI by id and every instance by id (first in snapshot order wins).
    enis: FastMap<&'a str, (&'a Instance, &'a Eni)>,
    instances: FastMap<&'a str, &'a Instance>,
    /// Prefix-list mode: the groups routed through lists, and each listed CIDR's group.
    groups: Vec<Listed<'a>>,
    group_of: FastMap<Cidr, usize>,
    /// Router settled per unit and scope so far (shared by the scope's tables).
    chosen: FastMap<(Unit, Scope<'a>), Choice>,
    /// The router of a route that is to be superseded (a retired list's route, a listed
    /// CIDR's own route), per unit that takes over: taken, when healthy, for the unit's new
    /// routes, so that a resize or a migration does not move traffic between healthy routers.
    hints: BTreeMap<Unit, Ipv4Addr>,
    /// Units (per scope) whose choice is a failback to their preferred router.
    failing_back: BTreeSet<(Unit, Scope<'a>)>,
    /// The availability zone of each subnet that has one.
    subnet_zone: FastMap<&'a str, &'a str>,
    /// The availability zone of each router IP (that of its interface's subnet).
    router_zone: FastMap<Ipv4Addr, &'a str>,
    /// `--zone-affinity`: the zone of each router IP that may take routes now (see
    /// [`Planner::usable_now`]), for [`Planner::scope_of`], asked once per route.
    usable_zone: FastMap<Ipv4Addr, &'a str>,
    /// The availability zone of each managed table that serves subnets of one zone only.
    table_zone: FastMap<&'a str, &'a str>,
    /// The destinations a gateway route table may hold: the VPC's CIDRs and its subnets'.
    routable: BTreeSet<Cidr>,
    /// The managed tables, sorted by id.
    tables: Vec<&'a RouteTable>,
    /// The route of each destination in each managed table (by position in `tables`).
    index: RouteIndex<'a>,
    /// [`PlanInput::last_written`] by borrowed keys, indexed when first asked (a lookup in
    /// the input's map needs an owned key: an allocation per table and destination).
    written: OnceCell<FastMap<(&'a str, &'a Dest), Ipv4Addr>>,
    /// The candidates of each spec CIDR, for lookups (`spec` keeps the order).
    hosts_of: FastMap<Cidr, &'a [Ipv4Addr]>,
    /// Per (route table, destination): the router once the plan is done, in the order
    /// decided (a later entry wins); made into [`Plan::routes`] at the end, at once rather
    /// than by a million tree insertions with a key allocated each.
    routes: Vec<(&'a str, Dest, Option<Ipv4Addr>)>,
    plan: Plan,
}

impl<'a> Planner<'a> {
    fn new(input: &'a PlanInput<'a>) -> Self {
        let mut owners = BTreeMap::new();
        let mut enis = FastMap::default();
        let mut instances = FastMap::default();
        for instance in &input.state.instances {
            instances.entry(instance.id.as_str()).or_insert(instance);
        }
        let subnet_zone: FastMap<&str, &str> =
            input.state.subnets.iter().filter_map(|s| Some((s.id.as_str(), s.zone.as_deref()?))).collect();
        let mut router_zone = FastMap::default();
        // Running instances first: an IP a terminated instance held may be a new one's now.
        let (running, down): (Vec<_>, Vec<_>) =
            all_enis(input.state).partition(|(i, _)| !input.state.not_running.contains_key(&i.id));
        for (instance, eni) in running.into_iter().chain(down) {
            enis.entry(eni.id.as_str()).or_insert((instance, eni));
            let zone = subnet_zone.get(eni.subnet_id.as_str()).copied();
            for &ip in &eni.private_ips {
                owners.entry(ip).or_insert_with(|| target_of(ip, instance, eni));
                if let Some(zone) = zone {
                    router_zone.entry(ip).or_insert(zone);
                }
            }
        }
        let state = input.state;
        let routable = state.cidrs.iter().chain(state.subnets.iter().flat_map(|s| &s.cidrs)).copied().collect();
        Planner {
            input,
            spec: input.spec.iter().map(|(cidr, hosts)| (*cidr, hosts.as_slice())).collect(),
            owners,
            enis,
            instances,
            groups: Vec::new(),
            group_of: FastMap::default(),
            chosen: FastMap::default(),
            hints: BTreeMap::new(),
            failing_back: BTreeSet::new(),
            subnet_zone,
            router_zone,
            usable_zone: FastMap::default(),
            table_zone: FastMap::default(),
            routable,
            tables: Vec::new(),
            index: RouteIndex::default(),
            written: OnceCell::new(),
            hosts_of: input.spec.iter().map(|(cidr, hosts)| (*cidr, hosts.as_slice())).collect(),
            routes: Vec::new(),
            plan: Plan::default(),
        }
    }

    fn run<R: rand::Rng + ?Sized>(&mut self, rng: &mut R) {
        self.report_hosts_not_in_vpc();
        self.report_missing_tables();
        let tables = managed_tables(self.input.state, self.input.spec, self.input.tables);
        self.describe_tables(&tables);
        self.tables.clone_from(&tables);
        if tables.is_empty() {
            self.plan.notices.insert(Notice::NoManagedTables { selection: self.input.tables.clone() });
            return;
        }
        if let Some(mode) = self.input.lists {
            self.form_groups(mode);
        }
        self.index = RouteIndex::new(&tables, self.spec.keys().copied());
        if self.input.zone_affinity {
            let usable = self.router_zone.iter().filter(|(&ip, _)| self.usable_now(ip));
            self.usable_zone = usable.map(|(&ip, &zone)| (ip, zone)).collect();
        }
        for &table in &tables {
            for route in &table.routes {
                self.update_route(table, route, rng);
            }
        }
        self.add_missing_routes(&tables, rng);
        self.manage_lists();
        self.weigh(&tables);
        // A route kept on a drained router says why in its own words, once.
        let staying: BTreeSet<Dest> = self
            .plan
            .notices
            .iter()
            .filter_map(|n| match n {
                Notice::StaysOnDrained { dest, .. } => Some(dest.clone()),
                _ => None,
            })
            .collect();
        self.plan.notices.retain(|n| !matches!(n, Notice::NoAvailableRouter { dest } if staying.contains(dest)));
        self.report_failback();
        self.plan.groups = self.groups.iter().map(|g| (g.group.clone(), g.list.map(|l| l.id.clone()))).collect();
        self.plan.routes = route_map(std::mem::take(&mut self.routes));
    }

    /// The router vpcrouter last wrote for `dest` in `rtb` (see [`PlanInput::last_written`]).
    fn written(&self, rtb: &str, dest: &Dest) -> Option<Ipv4Addr> {
        let last_written = self.input.last_written;
        if last_written.is_empty() {
            return None;
        }
        let index = self.written.get_or_init(|| {
            let mut index = map_with_capacity(last_written.len());
            index.extend(last_written.iter().map(|((rtb, dest), ip)| ((rtb.as_str(), dest), *ip)));
            index
        });
        index.get(&(rtb, dest)).copied()
    }

    /// Reports the spec's hosts that are no router of the VPC, and those that cannot
    /// forward (source/destination check on).
    fn report_hosts_not_in_vpc(&mut self) {
        for (_, hosts) in self.input.spec {
            for &host in hosts {
                let Some(target) = self.owners.get(&host) else {
                    self.plan.notices.insert(Notice::HostNotInVpc { host });
                    continue;
                };
                let checking = self.enis.get(target.eni_id.as_str()).and_then(|(_, e)| e.source_dest_check);
                if checking == Some(true) {
                    self.plan.notices.insert(Notice::SourceDestCheckOn { host, eni: target.eni_id.clone() });
                }
            }
        }
    }

    /// `--route-tables`: reports the tables named that the VPC does not have.
    fn report_missing_tables(&mut self) {
        let TableSelection::Ids(ids) = self.input.tables else { return };
        for id in ids {
            if !self.input.state.route_tables.iter().any(|t| t.id == *id) {
                self.plan.notices.insert(Notice::SelectedTableMissing { rtb: id.clone() });
            }
        }
    }

    /// Finds each managed table's zone, and lists the tables in the plan.
    fn describe_tables(&mut self, tables: &[&'a RouteTable]) {
        let implicit = implicit_subnets(self.input.state);
        for table in tables {
            let mut served: Vec<&str> = table.subnets.iter().map(String::as_str).collect();
            if table.main {
                served.extend(implicit.iter().copied());
            }
            let zones: Option<BTreeSet<&str>> = served.iter().map(|s| self.subnet_zone.get(s).copied()).collect();
            let zone = zones.filter(|z| z.len() == 1).and_then(|z| z.into_iter().next());
            if let Some(zone) = zone {
                self.table_zone.insert(table.id.as_str(), zone);
            }
            self.plan.managed.push(ManagedTable {
                id: table.id.clone(),
                main: table.main,
                zone: zone.map(str::to_owned),
                gateway: table.gateway().map(str::to_owned),
            });
        }
    }

    /// The scope of `table` for a unit with candidates `hosts`: with `--zone-affinity`, the
    /// table's zone when a candidate there may take routes now; otherwise the common one.
    fn scope_of(&self, table: &RouteTable, hosts: &[Ipv4Addr]) -> Scope<'a> {
        if !self.input.zone_affinity {
            return None;
        }
        let zone = *self.table_zone.get(table.id.as_str())?;
        hosts.iter().any(|h| self.usable_zone.get(h) == Some(&zone)).then_some(zone)
    }

    fn in_zone(&self, ip: Ipv4Addr, zone: &str) -> bool {
        self.router_zone.get(&ip) == Some(&zone)
    }

    /// True when `table` may hold a route to `dest`: any table may, but a gateway route
    /// table only the VPC's CIDRs and its subnets' CIDRs (and no prefix list).
    fn holds(&self, table: &RouteTable, dest: &Dest) -> bool {
        table.gateway().is_none() || matches!(dest, Dest::Cidr(c) if self.routable.contains(c))
    }

    /// Notes that the gateway route table `table` cannot hold the spec CIDR `cidr`.
    fn note_not_holdable(&mut self, table: &RouteTable, cidr: Cidr) {
        let (rtb, gateway) = (table.id.clone(), table.gateway().unwrap_or_default().to_owned());
        self.plan.notices.insert(Notice::NotHoldable { rtb, gateway, cidr });
    }

    /// Groups the spec's CIDRs by family and candidates, and finds each group's list: an
    /// owned list made for the group that is large enough (the one routed in most tables).
    fn form_groups(&mut self, mode: &ListMode) {
        let mut by_key: BTreeMap<(Family, Vec<Ipv4Addr>), Vec<Cidr>> = BTreeMap::new();
        for (cidr, hosts) in self.spec.iter().filter(|(_, h)| !h.is_empty()) {
            by_key.entry((cidr.family(), self.group_hosts(hosts))).or_default().push(*cidr);
        }
        let state = self.input.state;
        let routed_in = |list: &PrefixList| {
            let dest = Dest::List(list.id.clone());
            state.route_tables.iter().filter(|t| has_route(t, &dest)).count()
        };
        for ((family, hosts), members) in by_key {
            let group = Group { key: Group::key_for(family, &hosts), family, hosts, members };
            if group.members.len() < mode.min_members {
                continue;
            }
            if group.members.len() > mode.max_entries as usize {
                let (group, cidrs, limit) = (group.key, group.members.len(), mode.max_entries);
                self.plan.notices.insert(Notice::GroupTooLarge { group, cidrs, limit });
                continue;
            }
            let list = state
                .prefix_lists
                .iter()
                .filter(|l| l.group == group.key && l.family == family && l.max_entries as usize >= group.members.len())
                .max_by_key(|l| (routed_in(l), std::cmp::Reverse(l.id.clone())));
            for &cidr in &group.members {
                self.group_of.insert(cidr, self.groups.len());
            }
            self.groups.push(Listed { group, list });
        }
    }

    /// A group's candidates (see [`Group::hosts`]): the order of a CIDR's candidates
    /// matters only for its preferred router.
    fn group_hosts(&self, hosts: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
        let keep = usize::from(self.input.failback.is_some()).min(hosts.len());
        let mut out = hosts.to_vec();
        out[keep..].sort_unstable();
        out
    }

    fn is_protected(&self, cidr: Cidr) -> bool {
        self.input.ignore.iter().any(|&ignored| cidr.is_within(ignored))
    }

    fn unit_of(&self, cidr: Cidr) -> Unit {
        self.group_of.get(&cidr).map_or(Unit::Cidr(cidr), |&g| Unit::Group(g))
    }

    /// The destination a unit's routes are known by (preference, notices).
    fn unit_dest(&self, unit: Unit) -> Dest {
        match unit {
            Unit::Cidr(c) => Dest::Cidr(c),
            Unit::Group(g) => match self.groups[g].list {
                Some(l) => Dest::List(l.id.clone()),
                None => Dest::Cidr(self.groups[g].group.members[0]),
            },
        }
    }

    /// The group whose current list has this id.
    fn group_with_list(&self, id: &str) -> Option<usize> {
        self.groups.iter().position(|g| g.list.is_some_and(|l| l.id == id))
    }

    /// True when, in the state planned from, `table` already routes `cidr` the way the
    /// plan wants it: through its group's list, or by a route of its own (to a router, or
    /// to another target that vpcrouter leaves alone).
    fn carried_as_wanted(&self, table: &RouteTable, cidr: Cidr) -> bool {
        match self.group_of.get(&cidr).map(|&g| self.groups[g].list) {
            Some(Some(list)) => list.entries.contains(&cidr) && has_route(table, &Dest::List(list.id.clone())),
            Some(None) => false,
            None => table.routes.iter().any(|r| r.dest == Some(Dest::Cidr(cidr))),
        }
    }

    /// Records the router `route` points at as the hint of the units of `nets` it is a
    /// candidate of (see `hints`).
    fn hint(&mut self, route: &Route, nets: &[Cidr]) {
        let Some((_, eni)) = self.route_target(route) else { return };
        for &net in nets {
            let Some(&hosts) = self.hosts_of.get(&net) else { continue };
            if let Some(ip) = hosts.iter().copied().find(|h| eni.private_ips.contains(h)) {
                let unit = self.unit_of(net);
                self.hints.entry(unit).or_insert(ip);
            }
        }
    }

    /// True when `cidr` may stop being carried by a route or list entry it has now in
    /// `tables`: it left the spec, or every one of them carries it as wanted already.
    fn may_release<'t>(&self, cidr: Cidr, mut tables: impl Iterator<Item = &'t RouteTable>) -> bool {
        let in_spec = self.hosts_of.get(&cidr).is_some_and(|h| !h.is_empty());
        !in_spec || tables.all(|t| self.carried_as_wanted(t, cidr))
    }

    /// Visits one route of a managed table: delete, replace, or leave it.
    fn update_route<R: rand::Rng + ?Sized>(&mut self, table: &'a RouteTable, route: &'a Route, rng: &mut R) {
        let rtb = table.id.as_str();
        let decided = match &route.dest {
            Some(Dest::Cidr(cidr)) => self.visit_cidr_route(table, route, *cidr),
            Some(Dest::List(id)) => self.visit_list_route(table, route, id, rng),
            None => None,
        };
        let Some((dest, unit, hosts)) = decided else { return };
        let pointed = self.route_target(route);
        let current = pointed.and_then(|(instance, eni)| {
            let ip = self.route_ip(rtb, &dest, eni, hosts)?;
            Some(Current { ip, instance, eni })
        });
        let current_ip = current.as_ref().map(|t| t.ip);
        // A blackhole on a router that is not failed (an interface detached, ...) is
        // rewritten like a route to no candidate; on a failed router it is a failover.
        let blackhole = route.blackhole && current_ip.is_none_or(|ip| self.bad_router_reason(ip).is_none());
        let current = current.filter(|_| !blackhole);
        let scope = self.scope_of(table, hosts);
        let after = match self.decide(unit, scope, hosts, current, rng) {
            Some(Decision::Keep) | None => current_ip,
            Some(Decision::Replace(target, reason)) => {
                let reason = if blackhole { ReplaceReason::Blackhole } else { reason };
                let router = Some(target.ip);
                let primary_ip = || pointed.and_then(|(_, eni)| self.route_ip(rtb, &dest, eni, &eni.private_ips));
                let old_router = current_ip.or_else(primary_ip);
                let rtb = rtb.to_string();
                self.plan.actions.push(RouteAction::Replace { rtb, dest: dest.clone(), target, old_router, reason });
                router
            }
        };
        if let (Some(ip), Some(&g)) = (after, dest.cidr().and_then(|c| self.group_of.get(&c))) {
            self.hints.entry(Unit::Group(g)).or_insert(ip);
        }
        self.routes.push((rtb, dest, after));
    }

    /// A route to a network: deleted, left alone, or to be decided (its destination, the
    /// unit whose router it takes, and the unit's candidates).
    fn visit_cidr_route(
        &mut self,
        table: &RouteTable,
        route: &Route,
        cidr: Cidr,
    ) -> Option<(Dest, Unit, &'a [Ipv4Addr])> {
        let rtb = table.id.as_str();
        if self.is_protected(cidr) {
            return None;
        }
        let hosts = self.hosts_of.get(&cidr).copied();
        if !route.targets_instance() {
            if hosts.is_some() {
                let target = route.other_target.clone().unwrap_or_else(|| "unknown target".into());
                self.plan.notices.insert(Notice::HeldByOtherTarget { rtb: rtb.into(), cidr, target });
            }
            return None;
        }
        let Some(hosts) = hosts.filter(|h| !h.is_empty()) else {
            // A route to one of the VPC's own CIDRs is its local route, whose target was
            // replaced: EC2 restores it, never deletes it.
            if !self.input.state.cidrs.contains(&cidr) {
                let (dest, reason) = (Dest::Cidr(cidr), DeleteReason::NotInSpec);
                let old_router = self.old_ip(rtb, &dest, route);
                self.plan.actions.push(RouteAction::Delete { rtb: rtb.into(), dest, old_router, reason });
            }
            return None;
        };
        if !self.holds(table, &Dest::Cidr(cidr)) {
            self.note_not_holdable(table, cidr);
            return None;
        }
        let Unit::Group(g) = self.unit_of(cidr) else { return Some((Dest::Cidr(cidr), Unit::Cidr(cidr), hosts)) };
        if table.gateway().is_some() {
            // A gateway route table holds no prefix list: the group's CIDRs have routes of
            // their own there, on the group's router.
            return Some((Dest::Cidr(cidr), Unit::Group(g), hosts));
        }
        let carried = self.groups[g]
            .list
            .is_some_and(|l| l.entries.contains(&cidr) && has_route(table, &Dest::List(l.id.clone())));
        if carried {
            let (dest, reason) = (Dest::Cidr(cidr), DeleteReason::CarriedByList);
            let old_router = self.old_ip(rtb, &dest, route);
            self.plan.actions.push(RouteAction::Delete { rtb: rtb.into(), dest, old_router, reason });
            return None;
        }
        // Until its list carries it, a listed CIDR's own route is decided on its own: it is
        // not moved to the group's router only to be deleted later.
        Some((Dest::Cidr(cidr), Unit::Cidr(cidr), hosts))
    }

    /// A route to a prefix list: deleted or kept up when the list is retired, left alone
    /// when it is not vpcrouter's, or to be decided as its group's route.
    fn visit_list_route<R: rand::Rng + ?Sized>(
        &mut self,
        table: &'a RouteTable,
        route: &Route,
        id: &str,
        rng: &mut R,
    ) -> Option<(Dest, Unit, &'a [Ipv4Addr])> {
        let list = self.input.state.prefix_list(id)?;
        if !route.targets_instance() || table.gateway().is_some() {
            return None;
        }
        let dest = Dest::List(id.to_owned());
        let Some(g) = self.group_with_list(id) else {
            // A list that serves no group any more: its route goes once every entry still
            // in the spec is carried as wanted in this table.
            self.plan.staged = true;
            self.hint(route, &list.entries);
            if list.entries.iter().all(|&e| self.may_release(e, std::iter::once(table))) {
                let (old_router, reason) = (self.old_ip(&table.id, &dest, route), DeleteReason::ListRetired);
                self.plan.actions.push(RouteAction::Delete { rtb: table.id.clone(), dest, old_router, reason });
            } else {
                self.keep_retired_route_up(table, route, list, rng);
            }
            return None;
        };
        let hosts = self.hosts_of.get(&self.groups[g].group.members[0]).copied().unwrap_or_default();
        Some((dest, Unit::Group(g), hosts))
    }

    /// A retired list's route that must stay a while (its CIDRs are not carried otherwise
    /// yet) is moved off a failed or questionable router: to the router chosen for the
    /// unit of its first CIDR still in the spec.
    fn keep_retired_route_up<R: rand::Rng + ?Sized>(
        &mut self,
        table: &'a RouteTable,
        route: &Route,
        list: &PrefixList,
        rng: &mut R,
    ) {
        let Some((net, hosts)) =
            list.entries.iter().find_map(|e| self.hosts_of.get(e).filter(|h| !h.is_empty()).map(|h| (*e, *h)))
        else {
            return;
        };
        let pointed = self.route_target(route);
        let current = pointed.and_then(|(_, eni)| hosts.iter().copied().find(|h| eni.private_ips.contains(h)));
        let reason = match current {
            Some(ip) => match self.bad_router_reason(ip) {
                Some(reason) => reason,
                None => return,
            },
            None => ReplaceReason::NotEligible,
        };
        let unit = self.unit_of(net);
        let scope = self.scope_of(table, hosts);
        let Some(target) = self.router_for(unit, scope, hosts, rng) else {
            self.note_staying_on_drained(unit, current);
            return;
        };
        if Some(target.ip) == current {
            return;
        }
        let (rtb, dest) = (table.id.clone(), Dest::List(list.id.clone()));
        let old_router = current.or_else(|| self.old_ip(&rtb, &dest, route));
        self.routes.push((table.id.as_str(), dest.clone(), Some(target.ip)));
        self.plan.actions.push(RouteAction::Replace { rtb, dest, target, old_router, reason });
    }

    /// The IP a route of `rtb` to `dest` goes through, when its interface is known: see
    /// [`Planner::route_ip`], with the interface's own IPs (primary first) as candidates.
    fn old_ip(&self, rtb: &str, dest: &Dest, route: &Route) -> Option<Ipv4Addr> {
        let (_, eni) = self.route_target(route)?;
        self.route_ip(rtb, dest, eni, &eni.private_ips)
    }

    /// Of the `candidates` (in their order) that `eni` holds, the one a route of `rtb` to
    /// `dest` goes through: the one vpcrouter last wrote there when there are several (an
    /// interface may hold a router's primary and secondary IPs), else the first.
    fn route_ip(&self, rtb: &str, dest: &Dest, eni: &Eni, candidates: &[Ipv4Addr]) -> Option<Ipv4Addr> {
        let mut held = candidates.iter().copied().filter(|ip| eni.private_ips.contains(ip));
        let first = held.next()?;
        if held.next().is_none() {
            return Some(first);
        }
        let written = self.written(rtb, dest);
        Some(written.filter(|w| candidates.contains(w) && eni.private_ips.contains(w)).unwrap_or(first))
    }

    /// Keep or replace a route currently on `current` (`None`: not a candidate or
    /// unknown). `None` result: no router available, leave the route as it is.
    fn decide<R: rand::Rng + ?Sized>(
        &mut self,
        unit: Unit,
        scope: Scope<'a>,
        hosts: &[Ipv4Addr],
        current: Option<Current<'a>>,
        rng: &mut R,
    ) -> Option<Decision> {
        let current_ip = current.as_ref().map(|t| t.ip);
        match self.chosen.get(&(unit, scope)) {
            Some(Choice::NoneAvailable) => {
                self.note_staying_on_drained(unit, current_ip);
                return None;
            }
            Some(Choice::Router(chosen)) if Some(chosen.ip) == current_ip => {
                return Some(Decision::Keep);
            }
            Some(Choice::Router(chosen)) => {
                // A route on a failed (or questionable, or drained) router says so in every
                // table, not only in the first one (vpc-router logged "other route table
                // used different router" for the rest, and ran them after the outages).
                let reason = match current_ip.and_then(|ip| self.bad_router_reason(ip)) {
                    Some(reason) => reason,
                    None if self.failing_back.contains(&(unit, scope)) => ReplaceReason::Failback,
                    None => ReplaceReason::OtherTableUsesDifferentRouter,
                };
                return Some(Decision::Replace(chosen.clone(), reason));
            }
            None => {}
        }
        let reason = match current {
            None => ReplaceReason::NotEligible,
            Some(t) => match self.bad_router_reason(t.ip) {
                Some(reason) => reason,
                None => {
                    if let Some(back) = self.failback_ready(unit, scope, hosts).filter(|b| b.ip != t.ip) {
                        self.chosen.insert((unit, scope), Choice::Router(back.clone()));
                        self.failing_back.insert((unit, scope));
                        return Some(Decision::Replace(back, ReplaceReason::Failback));
                    }
                    self.chosen.insert((unit, scope), Choice::Router(t.target()));
                    return Some(Decision::Keep);
                }
            },
        };
        let Some(target) = self.settle(unit, scope, current_ip, hosts, rng) else {
            self.note_staying_on_drained(unit, current_ip);
            return None;
        };
        Some(Decision::Replace(target, reason))
    }

    /// Why a route on `ip` must move, if it must: the router failed, is drained, or is
    /// questionable (in that order: a failure is an outage, a drain the operator's word).
    fn bad_router_reason(&self, ip: Ipv4Addr) -> Option<ReplaceReason> {
        if self.input.failed.contains(&ip) {
            Some(ReplaceReason::RouterFailed)
        } else if self.input.drained.contains(&ip) {
            Some(ReplaceReason::Drained)
        } else if self.input.questionable.contains(&ip) {
            Some(ReplaceReason::RouterQuestionable)
        } else {
            None
        }
    }

    /// True for a router that is drained and not failed: its routes stay when no other
    /// candidate is healthy.
    fn drained_only(&self, ip: Ipv4Addr) -> bool {
        self.input.drained.contains(&ip) && !self.input.failed.contains(&ip)
    }

    /// Reports a route of `unit` left on the drained router `current` (no other healthy
    /// candidate).
    fn note_staying_on_drained(&mut self, unit: Unit, current: Option<Ipv4Addr>) {
        if let Some(router) = current.filter(|&ip| self.drained_only(ip)) {
            let dest = self.unit_dest(unit);
            self.plan.notices.insert(Notice::StaysOnDrained { dest, router });
        }
    }

    /// Chooses a router for `unit` in `scope` and records the choice (or that there is
    /// none).
    fn settle<R: rand::Rng + ?Sized>(
        &mut self,
        unit: Unit,
        scope: Scope<'a>,
        old: Option<Ipv4Addr>,
        hosts: &[Ipv4Addr],
        rng: &mut R,
    ) -> Option<RouterTarget> {
        let chosen = self.kept(unit, scope, old, hosts).or_else(|| match scope {
            // A zone's tables take the first of the zone's candidates that may take routes.
            Some(zone) => {
                hosts.iter().copied().find(|&h| Some(h) != old && self.in_zone(h, zone) && self.usable_now(h))
            }
            None => self.pick_common(unit, old, hosts, rng),
        });
        let target = chosen.and_then(|ip| self.owners.get(&ip).cloned());
        let choice = match &target {
            Some(t) => Choice::Router(t.clone()),
            None => {
                let dest = self.unit_dest(unit);
                let notice = if hosts.iter().any(|h| self.owners.contains_key(h)) {
                    Notice::NoAvailableRouter { dest }
                } else {
                    Notice::NoRouterInVpc { dest }
                };
                self.plan.notices.insert(notice);
                Choice::NoneAvailable
            }
        };
        self.chosen.insert((unit, scope), choice);
        target
    }

    /// The router the tables of `scope` keep for `unit`, if one may take its routes: the
    /// one vpcrouter last wrote in one of them, else one they route to now (in table
    /// order). A move takes it first, so that no table of the scope moves between healthy
    /// routers, and a read that lags behind vpcrouter's writes never moves a route twice.
    fn kept(&self, unit: Unit, scope: Scope<'a>, old: Option<Ipv4Addr>, hosts: &[Ipv4Addr]) -> Option<Ipv4Addr> {
        let dest = self.unit_dest(unit);
        let fits = |h: &Ipv4Addr| {
            Some(*h) != old && hosts.contains(h) && self.usable_now(*h) && scope.is_none_or(|z| self.in_zone(*h, z))
        };
        let tables: Vec<usize> =
            (0..self.tables.len()).filter(|&t| self.scope_of(self.tables[t], hosts) == scope).collect();
        let written = tables.iter().filter_map(|&t| self.written(&self.tables[t].id, &dest));
        if let Some(h) = written.into_iter().find(fits) {
            return Some(h);
        }
        let current = tables.iter().filter_map(|&t| {
            let route = self.index.get(t, &dest)?;
            let (_, eni) = self.route_target(route)?;
            hosts.iter().copied().find(|h| eni.private_ips.contains(h))
        });
        current.into_iter().find(fits)
    }

    /// The common router for `unit` whose route leaves `old` (`None`: a new route).
    fn pick_common<R: rand::Rng + ?Sized>(
        &self,
        unit: Unit,
        old: Option<Ipv4Addr>,
        hosts: &[Ipv4Addr],
        rng: &mut R,
    ) -> Option<Ipv4Addr> {
        // Drained hosts are never chosen.
        let (failed, questionable, drained) = (self.input.failed, self.input.questionable, self.input.drained);
        let candidates: Vec<Ipv4Addr> =
            hosts.iter().copied().filter(|h| self.owners.contains_key(h) && !drained.contains(h)).collect();
        let usable = |p: &Ipv4Addr| {
            Some(*p) != old && candidates.contains(p) && !failed.contains(p) && !questionable.contains(p)
        };
        let preferred = self.hints.get(&unit).copied().filter(usable);
        // `--failback preferred`: a route placed anew goes to the preferred router when it is
        // healthy; one leaving a bad router, when it qualifies for a failback.
        let preferred = preferred.or_else(|| match old {
            None => self.failback_preferred(None, hosts).filter(|&p| self.usable_now(p)),
            Some(_) => self.failback_ready(unit, None, hosts).map(|t| t.ip),
        });
        let preferred = preferred.filter(usable);
        // A drain moves a route to a healthy router only, never to a questionable one.
        let healthy_only = old.is_some_and(|o| self.drained_only(o));
        match preferred {
            Some(p) => Some(p),
            None if healthy_only => {
                let healthy: Vec<Ipv4Addr> =
                    candidates.iter().copied().filter(|h| !failed.contains(h) && !questionable.contains(h)).collect();
                healthy.choose(rng).copied()
            }
            None => choose_different_host(old, &candidates, failed, questionable, rng),
        }
    }

    /// `--failback preferred`: a unit's preferred router in `scope`: the first of its
    /// candidates, or for a zone's tables the first of its candidates in that zone.
    fn failback_preferred(&self, scope: Scope<'a>, hosts: &[Ipv4Addr]) -> Option<Ipv4Addr> {
        self.input.failback?;
        match scope {
            None => hosts.first().copied(),
            Some(zone) => hosts.iter().copied().find(|&h| self.in_zone(h, zone)),
        }
    }

    /// True when `ip` may take routes now: in the VPC, neither failed, questionable nor
    /// drained (failback and placement both ask).
    fn usable_now(&self, ip: Ipv4Addr) -> bool {
        let i = self.input;
        self.owners.contains_key(&ip)
            && !i.failed.contains(&ip)
            && !i.questionable.contains(&ip)
            && !i.drained.contains(&ip)
    }

    /// The unit's preferred router when its routes may move back to it now (see
    /// [`Failback`]).
    fn failback_ready(&self, unit: Unit, scope: Scope<'a>, hosts: &[Ipv4Addr]) -> Option<RouterTarget> {
        let failback = self.input.failback?;
        let preferred = self.failback_preferred(scope, hosts).filter(|&p| self.usable_now(p))?;
        let at = failback.possible_at(preferred, &self.unit_dest(unit))?;
        (at <= failback.now).then(|| self.owners.get(&preferred).cloned())?
    }

    /// `--failback preferred`: records, for each CIDR of a unit the plan settled, its
    /// preferred router and where failback stands.
    fn report_failback(&mut self) {
        let Some(failback) = self.input.failback else { return };
        let (mut views, mut zone_views) = (BTreeMap::new(), BTreeMap::new());
        // In the units' order: a CIDR's own unit first, then its group's (which wins).
        let mut chosen: Vec<_> = self.chosen.iter().collect();
        chosen.sort_unstable_by_key(|(key, _)| **key);
        for (&(unit, scope), choice) in chosen {
            let cidrs: &[Cidr] = match unit {
                Unit::Cidr(ref c) => std::slice::from_ref(c),
                Unit::Group(g) => &self.groups[g].group.members,
            };
            let hosts = cidrs.first().and_then(|c| self.hosts_of.get(c)).copied().unwrap_or_default();
            let Some(preferred) = self.failback_preferred(scope, hosts) else { continue };
            let on = match choice {
                Choice::Router(t) => t.ip == preferred,
                Choice::NoneAvailable => false,
            };
            let state = if on && self.failing_back.contains(&(unit, scope)) {
                FailbackState::FailingBack
            } else if on {
                FailbackState::OnPreferred
            } else if !self.usable_now(preferred) {
                FailbackState::Unavailable
            } else {
                match failback.possible_at(preferred, &self.unit_dest(unit)) {
                    Some(at) => FailbackState::Waiting { at },
                    None => FailbackState::Unavailable,
                }
            };
            for &cidr in cidrs {
                let view = FailbackView { preferred, state };
                match scope {
                    None => views.insert(cidr, view),
                    Some(zone) => zone_views.insert((cidr, zone.to_owned()), view),
                };
            }
        }
        self.plan.failback = views;
        self.plan.zone_failback = zone_views;
    }

    /// The router for a unit's missing route in `scope`: the one settled, or a new choice.
    fn router_for<R: rand::Rng + ?Sized>(
        &mut self,
        unit: Unit,
        scope: Scope<'a>,
        hosts: &[Ipv4Addr],
        rng: &mut R,
    ) -> Option<RouterTarget> {
        match self.chosen.get(&(unit, scope)) {
            Some(Choice::NoneAvailable) => None,
            Some(Choice::Router(t)) => Some(t.clone()),
            None => self.settle(unit, scope, None, hosts, rng),
        }
    }

    /// Creates routes missing from managed tables, one router per unit and scope: a route
    /// per CIDR routed on its own, a route per table to each group's list once it exists,
    /// and in gateway route tables (which hold no list) a route per CIDR of each group.
    fn add_missing_routes<R: rand::Rng + ?Sized>(&mut self, tables: &[&'a RouteTable], rng: &mut R) {
        let spec: Vec<(Cidr, &[Ipv4Addr])> = self.spec.iter().map(|(c, h)| (*c, *h)).collect();
        let retiring = self.input.state.prefix_lists.iter().any(|l| self.group_with_list(&l.id).is_none());
        let missing = |index: &RouteIndex, dest: &Dest, wanted: Carriers| {
            let tables = tables.iter().enumerate().filter(|(_, t)| wanted.includes(t));
            tables.filter(|&(i, _)| index.get(i, dest).is_none()).map(|(_, t)| *t).collect::<Vec<&RouteTable>>()
        };
        // Each unit with its destination, candidates, the tables that carry it, and whether
        // a new route of it unlocks more (a retired list's routes go once the CIDRs' own
        // routes exist; a group's per-CIDR routes once its list route exists).
        let mut units: Vec<(Unit, Dest, &[Ipv4Addr], Carriers, bool)> = Vec::new();
        for (cidr, hosts) in spec.into_iter().filter(|(_, hosts)| !hosts.is_empty()) {
            match self.group_of.get(&cidr) {
                None => units.push((Unit::Cidr(cidr), Dest::Cidr(cidr), hosts, Carriers::All, retiring)),
                Some(&g) => units.push((Unit::Group(g), Dest::Cidr(cidr), hosts, Carriers::Gateway, false)),
            }
        }
        for (g, listed) in self.groups.iter().enumerate() {
            let Some(list) = listed.list else { continue };
            let hosts = self.hosts_of.get(&listed.group.members[0]).copied().unwrap_or_default();
            units.push((Unit::Group(g), Dest::List(list.id.clone()), hosts, Carriers::Subnet, true));
        }
        for (unit, dest, hosts, carriers, unlocks) in units {
            for table in missing(&self.index, &dest, carriers) {
                if !self.holds(table, &dest) {
                    if let Some(cidr) = dest.cidr() {
                        self.note_not_holdable(table, cidr);
                    }
                    continue;
                }
                let scope = self.scope_of(table, hosts);
                let Some(target) = self.router_for(unit, scope, hosts, rng) else { continue };
                self.routes.push((table.id.as_str(), dest.clone(), Some(target.ip)));
                let rtb = table.id.clone();
                self.plan.actions.push(RouteAction::Create { rtb, dest: dest.clone(), target });
                self.plan.staged |= unlocks;
            }
        }
    }

    /// Creates each group's list, brings its entries to the group's CIDRs (an entry moving
    /// to another carrier is removed once that carrier is in place), and deletes lists
    /// that serve no group once no route uses them.
    fn manage_lists(&mut self) {
        let state = self.input.state;
        let mut actions = Vec::new();
        for listed in &self.groups {
            let group = &listed.group;
            let Some(list) = listed.list else {
                let mode = self.input.lists.expect("groups exist only in prefix-list mode");
                let name = group.list_name(&mode.cluster);
                let max_entries = group.sized(mode.max_entries);
                actions.push(RouteAction::CreateList { name, group: group.clone(), max_entries });
                continue;
            };
            let mut add: Vec<Cidr> = group.members.iter().copied().filter(|c| !list.entries.contains(c)).collect();
            // The adapter adds before it removes: the list must hold the additions first.
            let room = (list.max_entries as usize).saturating_sub(list.entries.len());
            self.plan.staged |= add.len() > room;
            add.truncate(room);
            let dest = Dest::List(list.id.clone());
            let routing: Vec<&RouteTable> = state.route_tables.iter().filter(|t| has_route(t, &dest)).collect();
            let leaving = list.entries.iter().copied().filter(|c| !group.members.contains(c));
            let (remove, held): (Vec<Cidr>, Vec<Cidr>) =
                leaving.partition(|&c| self.may_release(c, routing.iter().copied()));
            self.plan.staged |= !held.is_empty() || !add.is_empty();
            if !add.is_empty() || !remove.is_empty() {
                let (id, name, version) = (list.id.clone(), list.name.clone(), list.version);
                actions.push(RouteAction::ModifyList { id, name, version, add, remove });
            }
        }
        for list in &state.prefix_lists {
            if self.group_with_list(&list.id).is_some() {
                continue;
            }
            let dest = Dest::List(list.id.clone());
            if state.route_tables.iter().any(|t| t.routes.iter().any(|r| r.dest.as_ref() == Some(&dest))) {
                continue;
            }
            actions.push(RouteAction::DeleteList { id: list.id.clone(), name: list.name.clone() });
        }
        self.plan.staged |= actions.iter().any(|a| matches!(a, RouteAction::CreateList { .. }));
        self.plan.actions.extend(actions);
    }

    /// Each managed table's weight against the route quota once the plan is done; a
    /// notice for each table over it.
    fn weigh(&mut self, tables: &[&RouteTable]) {
        let state = self.input.state;
        let weight_of = |dest: &Dest| match dest {
            Dest::List(id) => {
                state.prefix_list(id).map(|l| l.max_entries).or_else(|| state.other_lists.get(id).copied()).unwrap_or(1)
            }
            Dest::Cidr(_) => 1,
        };
        // What the plan's creates and deletes add to each table, in one pass over them.
        let mut change: FastMap<&str, i64> = FastMap::default();
        for action in &self.plan.actions {
            let delta = match action {
                RouteAction::Create { dest, .. } => i64::from(weight_of(dest)),
                RouteAction::Delete { dest, .. } => -i64::from(weight_of(dest)),
                _ => continue,
            };
            *change.entry(action.rtb()).or_default() += delta;
        }
        for table in tables {
            let mut weight: i64 =
                table.routes.iter().map(|r| r.dest.as_ref().map_or(1, weight_of)).map(i64::from).sum();
            weight += change.get(table.id.as_str()).copied().unwrap_or_default();
            let weight = u32::try_from(weight.max(0)).unwrap_or(u32::MAX);
            if weight > self.input.quota {
                let (rtb, quota) = (table.id.clone(), self.input.quota);
                self.plan.notices.insert(Notice::OverQuota { rtb, weight, quota });
            }
            self.plan.weights.insert(table.id.clone(), weight);
        }
    }
}

/// [`Plan::routes`] from the routes in the order decided (a later entry for a table and
/// destination wins): sorted per table, then built in one go.
fn route_map(routes: Vec<(&str, Dest, Option<Ipv4Addr>)>) -> PlannedRoutes {
    let mut by_table: FastMap<&str, Vec<(Dest, Option<Ipv4Addr>)>> = FastMap::default();
    for (rtb, dest, router) in routes {
        by_table.entry(rtb).or_default().push((dest, router));
    }
    let mut tables: Vec<(&str, Vec<_>)> = by_table.into_iter().collect();
    tables.sort_unstable_by_key(|(rtb, _)| *rtb);
    let mut out = PlannedRoutes::new();
    for (rtb, routes) in tables {
        out.insert(rtb.to_owned(), last_wins(routes));
    }
    out
}

/// True when `table` has a route to `dest` that targets an instance or interface.
fn has_route(table: &RouteTable, dest: &Dest) -> bool {
    table.routes.iter().any(|r| r.dest.as_ref() == Some(dest) && r.targets_instance())
}

/// Every ENI of the VPC with its instance, in snapshot order.
fn all_enis(state: &VpcState) -> impl Iterator<Item = (&Instance, &Eni)> {
    state.instances.iter().flat_map(|i| i.enis.iter().map(move |e| (i, e)))
}

fn target_of(ip: Ipv4Addr, instance: &Instance, eni: &Eni) -> RouterTarget {
    RouterTarget { ip, instance_id: instance.id.clone(), eni_id: eni.id.clone() }
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

/// The route tables a plan manages, sorted by id: those `selection` names, or by default
/// those serving a subnet of an interface that owns a spec host (primary or secondary IP),
/// the main table serving every subnet without an explicit association.
pub fn managed_tables<'s>(
    state: &'s VpcState,
    spec: &[(Cidr, Vec<Ipv4Addr>)],
    selection: &TableSelection,
) -> Vec<&'s RouteTable> {
    let mut tables = match selection {
        TableSelection::Serving => serving_tables(state, spec),
        named => state.route_tables.iter().filter(|t| named.names(t)).collect(),
    };
    tables.sort_by(|a, b| a.id.cmp(&b.id));
    tables
}

/// vpc-router's rule: the tables serving a subnet of an interface that owns a spec host.
fn serving_tables<'s>(state: &'s VpcState, spec: &[(Cidr, Vec<Ipv4Addr>)]) -> Vec<&'s RouteTable> {
    let hosts: BTreeSet<Ipv4Addr> = spec.iter().flat_map(|(_, hosts)| hosts.iter().copied()).collect();
    let cluster: BTreeSet<&str> = all_enis(state)
        .filter(|(_, eni)| eni.private_ips.iter().any(|ip| hosts.contains(ip)))
        .map(|(_, eni)| eni.subnet_id.as_str())
        .collect();
    let implicit_in_cluster = implicit_subnets(state).iter().any(|s| cluster.contains(s));
    state
        .route_tables
        .iter()
        .filter(|t| t.subnets.iter().any(|s| cluster.contains(s.as_str())) || (t.main && implicit_in_cluster))
        .collect()
}

/// The subnets without an explicit table association: the main table serves them.
fn implicit_subnets(state: &VpcState) -> Vec<&str> {
    let explicit: BTreeSet<&str> =
        state.route_tables.iter().flat_map(|t| t.subnets.iter().map(String::as_str)).collect();
    state.subnets.iter().map(|s| s.id.as_str()).filter(|s| !explicit.contains(s)).collect()
}
