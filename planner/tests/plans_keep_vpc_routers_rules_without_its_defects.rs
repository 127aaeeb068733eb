//! Plans keep vpc-router's `handle_spec` rules, without its defects, in both address families
//! and in prefix-list mode, and hold their invariants over generated states.
//!
//! The planner's tests, through its public API: vpc-router's `handle_spec` cases, the
//! original's defects fixed, both address families, prefix-list mode, and invariants over
//! generated states.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use rand::rngs::StdRng;
use rand::SeedableRng;
use vpcrouter_planner::model::{
    Applied, Cidr, DeleteReason, Dest, Eni, Family, Instance, Notice, Plan, PlannedRoutes, ReplaceReason, Route,
    RouteAction, RouteTable, RouterTarget, TableSelection, VpcState, Within,
};
use vpcrouter_planner::plan::{choose_different_host, managed_tables, plan, ListMode, PlanInput};

// Fixture hosts (see `vpc()`).
const H1: &str = "10.0.1.1"; // i-1 / eni-1, subnet sn-a
const H2: &str = "10.0.2.2"; // i-2 / eni-2, subnet sn-b
const H3: &str = "10.0.2.3"; // i-3 / eni-3 primary, subnet sn-b
const H3_SECONDARY: &str = "10.0.2.33"; // i-3 / eni-3 secondary
const OUTSIDE: &str = "10.0.3.4"; // i-4 / eni-4, subnet sn-c (main table, implicitly)
const NOT_IN_VPC: &str = "192.168.7.7";
const NET: &str = "10.9.0.0/16";
const NET8: &str = "10.8.0.0/16";
const NET7: &str = "10.7.0.0/16";
const NET6: &str = "2001:db8:9::/48";
const SEEDS: std::ops::Range<u64> = 0..32;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test IP")
}

fn ips(hosts: &[&str]) -> BTreeSet<Ipv4Addr> {
    hosts.iter().map(|h| ip(h)).collect()
}

fn cidr(s: &str) -> Cidr {
    Cidr::parse(s).expect("test CIDR")
}

/// A destination: `pl-...` is a prefix list, anything else a network.
fn dest(s: &str) -> Dest {
    if s.starts_with("pl-") {
        Dest::List(s.into())
    } else {
        Dest::Cidr(cidr(s))
    }
}

fn eni(id: &str, subnet: &str, device_index: i32, private_ips: &[&str]) -> Eni {
    Eni {
        id: id.into(),
        subnet_id: subnet.into(),
        private_ips: private_ips.iter().map(|h| ip(h)).collect(),
        device_index,
        source_dest_check: Some(false),
    }
}

fn instance(id: &str, enis: Vec<Eni>) -> Instance {
    Instance { id: id.into(), enis }
}

fn route(to: Option<&str>, instance: Option<&str>, eni: Option<&str>) -> Route {
    Route {
        dest: to.map(dest),
        instance_id: instance.map(String::from),
        eni_id: eni.map(String::from),
        other_target: None,
        blackhole: false,
    }
}

/// moto's shape of an instance route.
fn instance_route(dest: &str, instance: &str) -> Route {
    route(Some(dest), Some(instance), None)
}

/// moto's shape of an ENI route.
fn eni_route(dest: &str, eni: &str) -> Route {
    route(Some(dest), None, Some(eni))
}

/// Real AWS's shape of an instance route.
fn aws_route(dest: &str, instance: &str, eni: &str) -> Route {
    route(Some(dest), Some(instance), Some(eni))
}

fn gateway_route(dest: &str, target: &str) -> Route {
    Route { other_target: Some(target.into()), ..route(Some(dest), None, None) }
}

fn local() -> Route {
    gateway_route("10.0.0.0/16", "local")
}

fn table(id: &str, main: bool, subnets: &[&str], routes: Vec<Route>) -> RouteTable {
    RouteTable {
        id: id.into(),
        main,
        subnets: subnets.iter().map(|s| s.to_string()).collect(),
        routes,
        ..Default::default()
    }
}

/// Three subnets; rtb-a serves sn-a, rtb-b serves sn-b, the main table serves sn-c
/// implicitly. Tables are deliberately not in id order.
fn vpc() -> VpcState {
    VpcState {
        vpc_id: "vpc-1".into(),
        subnets: vec!["sn-a".into(), "sn-b".into(), "sn-c".into()],
        route_tables: vec![
            table("rtb-main", true, &[], vec![local()]),
            table("rtb-b", false, &["sn-b"], vec![local(), gateway_route("0.0.0.0/0", "igw-1")]),
            table("rtb-a", false, &["sn-a"], vec![local()]),
        ],
        instances: vec![
            instance("i-1", vec![eni("eni-1", "sn-a", 0, &[H1])]),
            instance("i-2", vec![eni("eni-2", "sn-b", 0, &[H2])]),
            instance("i-3", vec![eni("eni-3", "sn-b", 0, &[H3, H3_SECONDARY])]),
            instance("i-4", vec![eni("eni-4", "sn-c", 0, &[OUTSIDE])]),
        ],
        ..Default::default()
    }
}

fn with_routes(mut state: VpcState, rtb: &str, routes: Vec<Route>) -> VpcState {
    let table = state.route_tables.iter_mut().find(|t| t.id == rtb).expect("test table");
    table.routes.extend(routes);
    state
}

fn target_in(state: &VpcState, host: &str) -> RouterTarget {
    support::target_in(state, ip(host))
}

fn target(host: &str) -> RouterTarget {
    target_in(&vpc(), host)
}

fn create(rtb: &str, to: &str, target: RouterTarget) -> RouteAction {
    RouteAction::Create { rtb: rtb.into(), dest: dest(to), target }
}

fn replace(rtb: &str, to: &str, target: RouterTarget, old: Option<&str>, reason: ReplaceReason) -> RouteAction {
    let old_router = old.map(ip);
    RouteAction::Replace { rtb: rtb.into(), dest: dest(to), target, old_router, reason }
}

fn delete(rtb: &str, to: &str, old: Option<&str>) -> RouteAction {
    delete_as(rtb, to, old, DeleteReason::NotInSpec)
}

fn delete_as(rtb: &str, to: &str, old: Option<&str>, reason: DeleteReason) -> RouteAction {
    RouteAction::Delete { rtb: rtb.into(), dest: dest(to), old_router: old.map(ip), reason }
}

fn notices(items: impl IntoIterator<Item = Notice>) -> BTreeSet<Notice> {
    items.into_iter().collect()
}

fn no_router(to: &str) -> Notice {
    Notice::NoAvailableRouter { dest: dest(to) }
}

fn routes(entries: &[(&str, &str, Option<&str>)]) -> PlannedRoutes {
    let mut out = PlannedRoutes::new();
    for (rtb, to, host) in entries {
        out.entry(rtb.to_string()).or_default().insert(dest(to), host.map(ip));
    }
    out
}

/// Executes actions the way the EC2 adapter does, through [`VpcState::apply`] (routes come
/// back in AWS's shape; the `n`th list created is `pl-n`, at version 1, and each
/// modification bumps its version), and refuses what EC2 refuses: a duplicate route, a
/// missing one, a route to an unknown list, a stale list version, more entries than the
/// list's max entries at any moment (the adapter adds before it removes), deleting a list
/// a route still uses.
fn apply(state: &VpcState, actions: &[RouteAction], lists_made: &mut u32) -> VpcState {
    let mut state = state.clone();
    for action in actions {
        let mut applied = Applied::default();
        match action {
            RouteAction::Create { rtb, dest, .. }
            | RouteAction::Replace { rtb, dest, .. }
            | RouteAction::Delete { rtb, dest, .. } => {
                let table = state.route_tables.iter().find(|t| t.id == *rtb).expect("table");
                let present = table.routes.iter().filter(|r| r.dest.as_ref() == Some(dest)).count();
                let want = usize::from(!matches!(action, RouteAction::Create { .. }));
                assert_eq!(present, want, "{action:?} on {:?}", table.routes);
                if let (RouteAction::Create { .. }, Dest::List(id)) = (action, dest) {
                    assert!(state.prefix_list(id).is_some(), "route to a list vpcrouter does not own: {action:?}");
                }
            }
            RouteAction::CreateList { group, max_entries, .. } => {
                assert!(group.members.len() <= *max_entries as usize, "{action:?}");
                assert!(group.members.iter().all(|c| c.family() == group.family), "{action:?}");
                *lists_made += 1;
                applied.list = Some((format!("pl-{lists_made}"), 1));
            }
            RouteAction::ModifyList { id, version, add, remove, .. } => {
                let list = state.prefix_list(id).expect("modified list");
                assert_eq!(*version, list.version, "stale version: {action:?}");
                assert!(!add.is_empty() || !remove.is_empty(), "empty modification: {action:?}");
                assert!(add.iter().all(|c| !list.entries.contains(c) && c.family() == list.family), "{action:?}");
                assert!(remove.iter().all(|c| list.entries.contains(c) && !add.contains(c)), "{action:?}");
                let most = list.entries.len() + add.len();
                assert!(most <= list.max_entries as usize, "over max entries {}: {action:?}", list.max_entries);
                applied.list = Some((id.clone(), list.version + 1));
            }
            RouteAction::DeleteList { id, .. } => {
                assert!(state.prefix_list(id).is_some(), "{action:?}");
                let to = Dest::List(id.clone());
                let used = state.route_tables.iter().any(|t| t.routes.iter().any(|r| r.dest.as_ref() == Some(&to)));
                assert!(!used, "list in use: {action:?}");
            }
        }
        state.apply(action, &applied);
    }
    state
}

/// Prefix-list mode with the cluster name `test`.
fn list_mode(max_entries: u32) -> ListMode {
    ListMode { cluster: "test".into(), max_entries, min_members: 1 }
}

/// A reconcile's inputs, built fluently.
#[derive(Clone)]
struct Case {
    state: VpcState,
    spec: Vec<(Cidr, Vec<Ipv4Addr>)>,
    failed: BTreeSet<Ipv4Addr>,
    questionable: BTreeSet<Ipv4Addr>,
    drained: BTreeSet<Ipv4Addr>,
    ignore: Vec<Cidr>,
    /// The router last written per (table, destination).
    preferred: BTreeMap<(String, Dest), Ipv4Addr>,
    lists: Option<ListMode>,
    quota: u32,
    /// Lists created so far by `step` and `converge` (the next is `pl-{n + 1}`).
    lists_made: u32,
}

impl Case {
    fn new(state: VpcState) -> Self {
        Case {
            state,
            spec: Vec::new(),
            failed: BTreeSet::new(),
            questionable: BTreeSet::new(),
            drained: BTreeSet::new(),
            ignore: Vec::new(),
            preferred: BTreeMap::new(),
            lists: None,
            quota: 500,
            lists_made: 0,
        }
    }

    /// `host` was the router last written for `to`, in every table.
    fn preferred(mut self, to: &str, host: &str) -> Self {
        for t in &self.state.route_tables {
            self.preferred.insert((t.id.clone(), dest(to)), ip(host));
        }
        self
    }

    /// Sets the candidates of `net` (replacing earlier ones); the spec stays canonical.
    fn spec(mut self, net: &str, hosts: &[&str]) -> Self {
        self.spec.retain(|(c, _)| *c != cidr(net));
        self.spec.push((cidr(net), ips(hosts).into_iter().collect()));
        self.spec.sort();
        self
    }

    /// Takes `net` out of the spec.
    fn unspec(mut self, net: &str) -> Self {
        self.spec.retain(|(c, _)| *c != cidr(net));
        self
    }

    fn failed(mut self, hosts: &[&str]) -> Self {
        self.failed = ips(hosts);
        self
    }

    fn questionable(mut self, hosts: &[&str]) -> Self {
        self.questionable = ips(hosts);
        self
    }

    fn drained(mut self, hosts: &[&str]) -> Self {
        self.drained = ips(hosts);
        self
    }

    fn ignore(mut self, nets: &[&str]) -> Self {
        self.ignore = nets.iter().map(|n| cidr(n)).collect();
        self
    }

    /// Prefix-list mode on, lists of at most `max_entries`.
    fn lists(mut self, max_entries: u32) -> Self {
        self.lists = Some(list_mode(max_entries));
        self
    }

    /// Prefix-list mode off.
    fn no_lists(mut self) -> Self {
        self.lists = None;
        self
    }

    fn quota(mut self, quota: u32) -> Self {
        self.quota = quota;
        self
    }

    fn plan_seeded(&self, seed: u64) -> Plan {
        let input = PlanInput {
            state: &self.state,
            spec: &self.spec,
            failed: &self.failed,
            questionable: &self.questionable,
            drained: &self.drained,
            ignore: &self.ignore,
            last_written: &self.preferred,
            lists: self.lists.as_ref(),
            quota: self.quota,
            failback: None,
            tables: &TableSelection::Serving,
            zone_affinity: false,
        };
        plan(&input, &mut StdRng::seed_from_u64(seed))
    }

    fn plan(&self) -> Plan {
        self.plan_seeded(0)
    }

    /// The ids of the route tables the plans of this case manage.
    fn managed(&self) -> Vec<String> {
        managed_tables(&self.state, &self.spec, &TableSelection::Serving).iter().map(|t| t.id.clone()).collect()
    }

    /// Plans, then executes the plan on the state.
    fn step(&mut self, seed: u64) -> Plan {
        let plan = self.plan_seeded(seed);
        self.state = apply(&self.state, &plan.actions, &mut self.lists_made);
        plan
    }
}

// ---- _choose_different_host truth table (test_vpc.py::TestVpcUtil::test_host_choices)

const A: &str = "10.0.0.1";
const B: &str = "10.0.0.2";
const C: &str = "10.0.0.3";

fn choose(old: Option<&str>, list: &[&str], failed: &[&str], quest: &[&str], seed: u64) -> Option<Ipv4Addr> {
    let candidates: Vec<Ipv4Addr> = list.iter().map(|h| ip(h)).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    choose_different_host(old.map(ip), &candidates, &ips(failed), &ips(quest), &mut rng)
}

/// (old, candidates, failed, questionable, expected pick).
type ChooseRow = (
    Option<&'static str>,
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
    Option<&'static str>,
);

/// Rows with a single possible answer (or none), for every seed.
#[test]
fn choose_exact_rows() {
    let rows: [ChooseRow; 12] = [
        (None, &[], &[], &[], None),
        (None, &[A], &[], &[], Some(A)),
        (Some(A), &[A, B], &[A], &[], Some(B)),
        (None, &[A, B], &[A, B], &[], None),
        (None, &[A, B], &[B], &[], Some(A)),
        (None, &[A, B], &[A], &[], Some(B)),
        (None, &[A, B], &[A], &[B], Some(B)),
        (None, &[A, B], &[A, B], &[B], None),
        (None, &[A, B, C], &[A], &[B], Some(C)),
        (Some(C), &[B, C], &[], &[A, B, C], None),
        (Some(C), &[], &[], &[A, B, C], None),
        (None, &[], &[A], &[A, B], None),
    ];
    for (old, list, failed, quest, want) in rows {
        for seed in SEEDS {
            let got = choose(old, list, failed, quest, seed);
            assert_eq!(got, want.map(ip), "old {old:?} list {list:?} failed {failed:?} quest {quest:?}");
        }
    }
}

#[test]
fn choose_old_questionable_among_only_questionable_gives_none() {
    for old in [A, B, C] {
        for seed in SEEDS {
            assert_eq!(choose(Some(old), &[A, B, C], &[], &[A, B, C], seed), None);
        }
    }
}

/// Asserts the picks over all seeds are exactly `expected` (each one reachable).
fn assert_picks(old: Option<&str>, list: &[&str], failed: &[&str], quest: &[&str], expected: &[&str]) {
    let picks: BTreeSet<Option<Ipv4Addr>> = SEEDS.map(|seed| choose(old, list, failed, quest, seed)).collect();
    let want: BTreeSet<Option<Ipv4Addr>> = expected.iter().map(|h| Some(ip(h))).collect();
    assert_eq!(picks, want, "old {old:?} list {list:?} failed {failed:?} quest {quest:?}");
}

#[test]
fn choose_random_rows_pick_uniformly_among_valid_candidates() {
    assert_picks(Some(A), &[A, B], &[C], &[], &[A, B]);
    assert_picks(None, &[A, B, C], &[], &[A, B, C], &[A, B, C]);
    assert_picks(Some(C), &[A, B], &[], &[A, B, C], &[A, B]);
    assert_picks(None, &[A, B, C], &[], &[], &[A, B, C]);
}

#[test]
fn choose_is_deterministic_for_a_seed_and_ignores_list_order() {
    for seed in SEEDS {
        let sorted = choose(None, &[A, B, C], &[], &[], seed);
        assert_eq!(sorted, choose(None, &[C, A, B], &[], &[], seed));
        assert_eq!(sorted, choose(None, &[A, B, C], &[], &[], seed));
    }
}

// ---- Route-table selection

#[test]
fn initial_routes_are_created_in_every_managed_table_with_one_router() {
    let case = Case::new(vpc()).spec(NET, &[H1, H3]);
    let mut seen = BTreeSet::new();
    for seed in SEEDS {
        let plan = case.plan_seeded(seed);
        assert_eq!(case.managed(), ["rtb-a", "rtb-b"]);
        let router = match plan.actions.first() {
            Some(RouteAction::Create { target, .. }) => target.clone(),
            other => panic!("expected a create, got {other:?}"),
        };
        assert!(router.ip == ip(H1) || router.ip == ip(H3));
        assert_eq!(plan.actions, [create("rtb-a", NET, router.clone()), create("rtb-b", NET, router.clone())]);
        let r = router.ip.to_string();
        assert_eq!(plan.routes, routes(&[("rtb-a", NET, Some(&r)), ("rtb-b", NET, Some(&r))]));
        assert!(plan.notices.is_empty());
        seen.insert(router.ip);
    }
    assert_eq!(seen, ips(&[H1, H3]));
}

#[test]
fn steady_state_has_no_actions() {
    for seed in SEEDS {
        let mut case = Case::new(vpc()).spec(NET, &[H1, H2, H3]).spec(NET8, &[H3]);
        let first = case.step(seed);
        assert_eq!(first.actions.len(), 4);
        let again = case.plan_seeded(seed + 100);
        assert_eq!(again.actions, []);
        assert_eq!(again.routes, first.routes);
        assert!(again.notices.is_empty());
    }
}

#[test]
fn steady_state_from_existing_routes() {
    let state = with_routes(vpc(), "rtb-a", vec![aws_route(NET, "i-1", "eni-1")]);
    let state = with_routes(state, "rtb-b", vec![aws_route(NET, "i-1", "eni-1")]);
    let plan = Case::new(state).spec(NET, &[H1, H3]).plan();
    assert_eq!(plan.actions, []);
    assert_eq!(plan.routes, routes(&[("rtb-a", NET, Some(H1)), ("rtb-b", NET, Some(H1))]));
}

#[test]
fn unmanaged_tables_are_left_alone() {
    let state = with_routes(vpc(), "rtb-main", vec![instance_route("10.5.0.0/16", "i-4")]);
    let case = Case::new(state).spec(NET, &[H1]);
    let plan = case.plan();
    assert_eq!(case.managed(), ["rtb-a"]);
    assert_eq!(plan.actions, [create("rtb-a", NET, target(H1))]);
    assert_eq!(plan.routes, routes(&[("rtb-a", NET, Some(H1))]));
}

#[test]
fn main_table_serves_implicitly_associated_subnets() {
    let state = with_routes(vpc(), "rtb-main", vec![instance_route("10.5.0.0/16", "i-4")]);
    let case = Case::new(state).spec(NET, &[OUTSIDE]);
    let plan = case.plan();
    assert_eq!(case.managed(), ["rtb-main"]);
    assert_eq!(
        plan.actions,
        [create("rtb-main", NET, target(OUTSIDE)), delete("rtb-main", "10.5.0.0/16", Some(OUTSIDE))]
    );
}

#[test]
fn main_table_with_explicit_association_is_managed() {
    let mut state = vpc();
    state.route_tables[0].subnets = vec!["sn-a".into()];
    let case = Case::new(state).spec(NET, &[H1]);
    assert_eq!(case.managed(), ["rtb-a", "rtb-main"]);
    let plan = case.plan();
    let tables: BTreeSet<&str> = plan.routes.keys().map(String::as_str).collect();
    assert_eq!(tables, ["rtb-a", "rtb-main"].into(), "the plan routes in both");
}

#[test]
fn main_table_is_not_managed_when_every_subnet_is_associated_elsewhere() {
    let mut state = vpc();
    state.route_tables.push(table("rtb-c", false, &["sn-c"], vec![local()]));
    let case = Case::new(state).spec(NET, &[OUTSIDE, H1]);
    assert_eq!(case.managed(), ["rtb-a", "rtb-c"]);
    let plan = case.plan();
    let tables: BTreeSet<&str> = plan.routes.keys().map(String::as_str).collect();
    assert_eq!(tables, ["rtb-a", "rtb-c"].into(), "the plan routes in both");
}

#[test]
fn hosts_without_a_serving_table_manage_nothing() {
    let mut state = vpc();
    state.route_tables.retain(|t| !t.main);
    let case = Case::new(state).spec(NET, &[OUTSIDE]);
    let plan = case.plan();
    assert_eq!(case.managed(), Vec::<String>::new());
    assert_eq!(plan.actions, []);
    assert_eq!(plan.notices, notices([Notice::NoManagedTables { selection: TableSelection::Serving }]));
}

#[test]
fn no_spec_host_in_the_vpc_manages_nothing() {
    let state = with_routes(vpc(), "rtb-a", vec![instance_route("10.5.0.0/16", "i-1")]);
    let case = Case::new(state).spec(NET, &[NOT_IN_VPC]).spec(NET8, &[]);
    let plan = case.plan();
    assert_eq!(plan.actions, []);
    assert!(case.managed().is_empty() && plan.routes.is_empty());
    assert_eq!(
        plan.notices,
        notices([
            Notice::NoManagedTables { selection: TableSelection::Serving },
            Notice::HostNotInVpc { host: ip(NOT_IN_VPC) }
        ])
    );
}

#[test]
fn empty_spec_manages_nothing() {
    let state = with_routes(vpc(), "rtb-a", vec![instance_route("10.5.0.0/16", "i-1")]);
    let plan = Case::new(state).plan();
    assert_eq!(plan.actions, []);
    assert_eq!(plan.notices, notices([Notice::NoManagedTables { selection: TableSelection::Serving }]));
}

// ---- Health-driven updates

fn both_tables_on(host_instance: &str, host_eni: &str) -> VpcState {
    let state = with_routes(vpc(), "rtb-a", vec![aws_route(NET, host_instance, host_eni)]);
    with_routes(state, "rtb-b", vec![eni_route(NET, host_eni)])
}

#[test]
fn failed_router_is_replaced_in_every_table_with_the_same_router() {
    let case = Case::new(both_tables_on("i-1", "eni-1")).spec(NET, &[H1, H2, H3]).failed(&[H1]);
    let mut seen = BTreeSet::new();
    for seed in SEEDS {
        let plan = case.plan_seeded(seed);
        let new = match plan.actions.first() {
            Some(RouteAction::Replace { target, .. }) => target.clone(),
            other => panic!("expected a replace, got {other:?}"),
        };
        assert!(new.ip == ip(H2) || new.ip == ip(H3));
        assert_eq!(
            plan.actions,
            [
                replace("rtb-a", NET, new.clone(), Some(H1), ReplaceReason::RouterFailed),
                replace("rtb-b", NET, new.clone(), Some(H1), ReplaceReason::RouterFailed),
            ]
        );
        let n = new.ip.to_string();
        assert_eq!(plan.routes, routes(&[("rtb-a", NET, Some(&n)), ("rtb-b", NET, Some(&n))]));
        seen.insert(new.ip);
    }
    assert_eq!(seen, ips(&[H2, H3]));
}

#[test]
fn questionable_router_is_replaced_by_a_healthy_one() {
    let case = Case::new(both_tables_on("i-1", "eni-1")).spec(NET, &[H1, H2, H3]);
    let plan = case.clone().questionable(&[H1, H2]).plan();
    assert_eq!(
        plan.actions,
        [
            replace("rtb-a", NET, target(H3), Some(H1), ReplaceReason::RouterQuestionable),
            replace("rtb-b", NET, target(H3), Some(H1), ReplaceReason::RouterQuestionable),
        ]
    );
    for seed in SEEDS {
        let plan = case.clone().questionable(&[H1]).plan_seeded(seed);
        match &plan.actions[..] {
            [RouteAction::Replace { target, reason: ReplaceReason::RouterQuestionable, .. }, _] => {
                assert_ne!(target.ip, ip(H1));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn failed_beats_questionable_as_the_reason() {
    let plan = Case::new(both_tables_on("i-1", "eni-1")).spec(NET, &[H1, H2]).failed(&[H1]).questionable(&[H1]).plan();
    assert_eq!(plan.actions[0], replace("rtb-a", NET, target(H2), Some(H1), ReplaceReason::RouterFailed));
}

#[test]
fn questionable_router_stays_when_only_questionable_or_failed_alternatives_exist() {
    let base = Case::new(both_tables_on("i-1", "eni-1")).spec(NET, &[H1, H2]);
    for case in [base.clone().questionable(&[H1, H2]), base.questionable(&[H1]).failed(&[H2])] {
        let plan = case.plan();
        assert_eq!(plan.actions, []);
        assert_eq!(plan.notices, notices([no_router(NET)]));
        assert_eq!(plan.routes, routes(&[("rtb-a", NET, Some(H1)), ("rtb-b", NET, Some(H1))]));
    }
}

#[test]
fn failed_router_falls_back_to_a_questionable_one() {
    let plan = Case::new(both_tables_on("i-1", "eni-1")).spec(NET, &[H1, H2]).failed(&[H1]).questionable(&[H2]).plan();
    assert_eq!(plan.actions[0], replace("rtb-a", NET, target(H2), Some(H1), ReplaceReason::RouterFailed));
    assert_eq!(plan.actions.len(), 2);
}

#[test]
fn questionable_router_chosen_by_another_table_is_kept() {
    let state = with_routes(vpc(), "rtb-a", vec![instance_route(NET, "i-1")]);
    let state = with_routes(state, "rtb-b", vec![instance_route(NET, "i-3")]);
    let mut case = Case::new(state).spec(NET, &[H1, H3]).failed(&[H1]).questionable(&[H3]);
    let plan = case.step(0);
    assert_eq!(plan.actions, [replace("rtb-a", NET, target(H3), Some(H1), ReplaceReason::RouterFailed)]);
    assert_eq!(plan.routes, routes(&[("rtb-a", NET, Some(H3)), ("rtb-b", NET, Some(H3))]));
    let next = case.plan();
    assert_eq!(next.actions, []);
    assert_eq!(next.notices, notices([no_router(NET)]));
}

#[test]
fn all_routers_failed_leaves_routes_and_reports() {
    let plan = Case::new(both_tables_on("i-1", "eni-1")).spec(NET, &[H1, H2]).failed(&[H1, H2]).plan();
    assert_eq!(plan.actions, []);
    assert_eq!(plan.notices, notices([no_router(NET)]));
    assert_eq!(plan.routes, routes(&[("rtb-a", NET, Some(H1)), ("rtb-b", NET, Some(H1))]));
}

#[test]
fn no_fail_back_when_the_old_router_recovers() {
    let mut case = Case::new(both_tables_on("i-1", "eni-1")).spec(NET, &[H1, H2]).failed(&[H1]);
    assert_eq!(case.step(0).actions.len(), 2);
    case = case.failed(&[]);
    for seed in SEEDS {
        let plan = case.plan_seeded(seed);
        assert_eq!(plan.actions, []);
        assert_eq!(plan.routes, routes(&[("rtb-a", NET, Some(H2)), ("rtb-b", NET, Some(H2))]));
    }
}

#[test]
fn tables_agree_on_the_first_tables_router() {
    let state = with_routes(vpc(), "rtb-b", vec![aws_route(NET, "i-3", "eni-3")]);
    let state = with_routes(state, "rtb-a", vec![aws_route(NET, "i-1", "eni-1")]);
    let mut case = Case::new(state).spec(NET, &[H1, H3]);
    let plan = case.step(0);
    assert_eq!(
        plan.actions,
        [replace("rtb-b", NET, target(H1), Some(H3), ReplaceReason::OtherTableUsesDifferentRouter)]
    );
    assert_eq!(case.plan().actions, []);
}

#[test]
fn no_router_marker_is_never_a_target() {
    let state = with_routes(vpc(), "rtb-a", vec![aws_route(NET, "i-1", "eni-1")]);
    let case = Case::new(state.clone()).spec(NET, &[H1]).spec(NET8, &[H3]).failed(&[H1]);
    let plan = case.plan();
    assert_eq!(case.managed(), ["rtb-a", "rtb-b"]);
    assert_eq!(plan.actions, [create("rtb-a", NET8, target(H3)), create("rtb-b", NET8, target(H3))]);
    assert_eq!(plan.notices, notices([no_router(NET)]));

    let state = with_routes(state, "rtb-b", vec![eni_route(NET, "eni-gone")]);
    let plan = Case::new(state).spec(NET, &[H1]).spec(NET8, &[H3]).failed(&[H1]).plan();
    assert_eq!(plan.actions, [create("rtb-a", NET8, target(H3)), create("rtb-b", NET8, target(H3))]);
    assert_eq!(plan.routes["rtb-a"][&dest(NET)], Some(ip(H1)));
    assert_eq!(plan.routes["rtb-b"][&dest(NET)], None);
}

#[test]
fn missing_route_without_a_router_is_reported_once_and_not_created() {
    let plan = Case::new(vpc()).spec(NET, &[H1, H3]).failed(&[H1, H3]).plan();
    assert_eq!(plan.actions, []);
    assert_eq!(plan.notices, notices([no_router(NET)]));
    assert!(plan.routes.is_empty());
}

// ---- Route targets

#[test]
fn route_shapes_from_moto_and_aws_are_understood() {
    for shape in [instance_route(NET, "i-1"), eni_route(NET, "eni-1"), aws_route(NET, "i-1", "eni-1")] {
        let state = with_routes(vpc(), "rtb-a", vec![shape.clone()]);
        let case = Case::new(state).spec(NET, &[H1, H2]);
        let plan = case.plan();
        assert_eq!(plan.actions, [create("rtb-b", NET, target(H1))], "{shape:?}");
        assert_eq!(plan.routes, routes(&[("rtb-a", NET, Some(H1)), ("rtb-b", NET, Some(H1))]));
        let plan = case.failed(&[H1]).plan();
        let want = replace("rtb-a", NET, target(H2), Some(H1), ReplaceReason::RouterFailed);
        assert_eq!(plan.actions, [want, create("rtb-b", NET, target(H2))], "{shape:?}");
    }
}

#[test]
fn instance_route_resolves_to_the_primary_interface() {
    let mut state = vpc();
    state.instances.push(instance(
        "i-5",
        vec![eni("eni-5b", "sn-a", 1, &["10.0.1.51"]), eni("eni-5a", "sn-a", 0, &["10.0.1.50"])],
    ));
    state.instances.push(instance("i-6", vec![eni("eni-6b", "sn-a", 1, &["10.0.1.61"])]));
    let state = with_routes(state, "rtb-a", vec![instance_route(NET, "i-5"), instance_route(NET8, "i-6")]);
    let plan = Case::new(state.clone()).spec(NET, &["10.0.1.50"]).spec(NET8, &["10.0.1.61"]).plan();
    assert_eq!(plan.actions, []);
    let plan = Case::new(state.clone()).spec(NET, &["10.0.1.51"]).spec(NET8, &["10.0.1.61"]).plan();
    let want = replace("rtb-a", NET, target_in(&state, "10.0.1.51"), Some("10.0.1.50"), ReplaceReason::NotEligible);
    assert_eq!(plan.actions, [want]);
}

#[test]
fn unknown_or_obsolete_targets_are_replaced() {
    let cases = [
        (instance_route(NET, "i-gone"), None),
        (eni_route(NET, "eni-gone"), None),
        (aws_route(NET, "i-2", "eni-gone"), None),
        (aws_route(NET, "i-gone", "eni-1"), None),
        (aws_route(NET, "i-2", "eni-1"), None),
        (route(Some(NET), Some("i-1"), Some("eni-2")), None),
        (instance_route(NET, "i-2"), Some(H2)),
        (aws_route(NET, "i-3", "eni-3"), Some(H3)),
    ];
    for (r, old) in cases {
        let state = with_routes(vpc(), "rtb-a", vec![r.clone()]);
        let plan = Case::new(state).spec(NET, &[H1]).plan();
        let want = replace("rtb-a", NET, target(H1), old, ReplaceReason::NotEligible);
        assert_eq!(plan.actions, [want], "{r:?}");
        assert_eq!(plan.routes, routes(&[("rtb-a", NET, Some(H1))]));
    }
}

#[test]
fn instance_without_interfaces_is_an_unknown_target() {
    let mut state = vpc();
    state.instances.push(instance("i-bare", vec![]));
    let state = with_routes(state, "rtb-a", vec![instance_route(NET, "i-bare")]);
    let plan = Case::new(state).spec(NET, &[H1]).plan();
    assert_eq!(plan.actions, [replace("rtb-a", NET, target(H1), None, ReplaceReason::NotEligible)]);
}

#[test]
fn router_named_by_a_secondary_ip_is_kept() {
    let state = with_routes(vpc(), "rtb-b", vec![aws_route(NET, "i-3", "eni-3")]);
    for hosts in [&[H3_SECONDARY][..], &[H3, H3_SECONDARY], &[H3_SECONDARY, H2]] {
        let plan = Case::new(state.clone()).spec(NET, hosts).plan();
        assert!(plan.actions.iter().all(|a| a.rtb() != "rtb-b"), "{hosts:?}: {:?}", plan.actions);
    }
    let plan = Case::new(state).spec(NET, &[H3_SECONDARY]).plan();
    assert_eq!(plan.routes, routes(&[("rtb-b", NET, Some(H3_SECONDARY))]));
}

#[test]
fn a_route_written_through_a_secondary_ip_is_told_by_that_ip() {
    let state = with_routes(vpc(), "rtb-b", vec![eni_route(NET, "eni-3")]);
    // Both IPs are candidates: the one vpcrouter wrote is the route's router, so a report
    // of its failure moves the route, and the move names it.
    let case = Case::new(state.clone()).spec(NET, &[H3, H3_SECONDARY, H2]).preferred(NET, H3_SECONDARY);
    assert_eq!(case.plan().routes, routes(&[("rtb-b", NET, Some(H3_SECONDARY))]));
    let plan = case.failed(&[H3_SECONDARY]).plan();
    let moved = plan.actions.iter().map(|a| match a {
        RouteAction::Replace { old_router, reason, .. } => (*old_router, *reason),
        other => panic!("expected a replace, got {other:?}"),
    });
    assert_eq!(moved.collect::<Vec<_>>(), [(Some(ip(H3_SECONDARY)), ReplaceReason::RouterFailed)]);
    // Out of the spec, its delete names the IP it was written through, not the primary.
    let plan = Case::new(state.clone()).preferred(NET, H3_SECONDARY).spec(NET8, &[H2]).plan();
    assert!(plan.actions.contains(&delete("rtb-b", NET, Some(H3_SECONDARY))), "{:?}", plan.actions);
    // Not written by this vpcrouter: the interface's primary IP.
    let plan = Case::new(state).spec(NET8, &[H2]).plan();
    assert!(plan.actions.contains(&delete("rtb-b", NET, Some(H3))), "{:?}", plan.actions);
}

#[test]
fn multi_address_router_is_created_on_its_interface() {
    let plan = Case::new(vpc()).spec(NET, &[H3_SECONDARY]).plan();
    let want = RouterTarget { ip: ip(H3_SECONDARY), instance_id: "i-3".into(), eni_id: "eni-3".into() };
    assert_eq!(plan.actions, [create("rtb-b", NET, want)]);
}

#[test]
fn hosts_outside_the_vpc_are_reported_and_never_chosen() {
    for seed in SEEDS {
        let plan = Case::new(vpc()).spec(NET, &[H1, NOT_IN_VPC]).plan_seeded(seed);
        assert_eq!(plan.actions, [create("rtb-a", NET, target(H1))]);
        assert_eq!(plan.notices, notices([Notice::HostNotInVpc { host: ip(NOT_IN_VPC) }]));
    }
}

#[test]
fn only_hosts_outside_the_vpc_means_no_router() {
    let state = with_routes(vpc(), "rtb-a", vec![instance_route(NET, "i-2")]);
    let plan = Case::new(state).spec(NET, &[NOT_IN_VPC]).spec(NET8, &[H1]).plan();
    assert_eq!(plan.actions, [create("rtb-a", NET8, target(H1))]);
    let no_router_in_vpc = Notice::NoRouterInVpc { dest: dest(NET) };
    assert_eq!(plan.notices, notices([Notice::HostNotInVpc { host: ip(NOT_IN_VPC) }, no_router_in_vpc.clone()]));
    assert!(no_router_in_vpc.to_string().contains("no router of 10.9.0.0/16 is an instance of the VPC"));
    assert_eq!(plan.routes, routes(&[("rtb-a", NET, None), ("rtb-a", NET8, Some(H1))]));
}

// ---- Routers that cannot forward: instances not running, blackhole routes

fn not_running(mut state: VpcState, instance: &str, run_state: &str) -> VpcState {
    state.not_running.insert(instance.into(), run_state.into());
    state
}

#[test]
fn a_router_whose_instance_is_not_running_counts_as_failed() {
    for run_state in ["stopped", "stopping", "shutting-down", "terminated", "pending"] {
        let state = not_running(both_tables_on("i-1", "eni-1"), "i-1", run_state);
        let plan = Case::new(state).spec(NET, &[H1, H2]).plan();
        assert_eq!(
            plan.actions,
            [
                replace("rtb-a", NET, target(H2), Some(H1), ReplaceReason::RouterFailed),
                replace("rtb-b", NET, target(H2), Some(H1), ReplaceReason::RouterFailed),
            ],
            "{run_state}"
        );
        let notice = Notice::NotRunning { host: ip(H1), instance: "i-1".into(), state: run_state.into() };
        assert!(notice.to_string().contains(&format!("instance i-1, which is {run_state}, not running")));
        assert_eq!(plan.notices, notices([notice]));
    }
}

#[test]
fn a_new_route_never_goes_to_a_router_that_is_not_running() {
    let state = not_running(vpc(), "i-1", "terminated");
    let plan = Case::new(state.clone()).spec(NET, &[H1, H2]).plan();
    assert_eq!(plan.actions, [create("rtb-a", NET, target(H2)), create("rtb-b", NET, target(H2))]);
    // Its only candidate: no route, and the notice says why.
    let plan = Case::new(state).spec(NET, &[H1]).plan();
    assert_eq!(plan.actions, []);
    assert!(plan.notices.contains(&no_router(NET)));
}

#[test]
fn an_ip_taken_over_by_a_running_instance_is_a_router_again() {
    // i-9 was terminated; its IP H1 is now i-1's (running), listed after it.
    let mut state = vpc();
    state.instances.insert(0, instance("i-9", vec![eni("eni-9", "sn-a", 0, &[H1])]));
    let state = not_running(state, "i-9", "terminated");
    let plan = Case::new(state).spec(NET, &[H1]).plan();
    assert_eq!(plan.actions, [create("rtb-a", NET, target(H1))]);
    assert_eq!(plan.notices, notices([]));
}

#[test]
fn a_blackhole_route_is_rewritten_and_one_on_a_failed_router_is_a_failover() {
    let mut state = both_tables_on("i-1", "eni-1");
    for table in &mut state.route_tables {
        table.routes.iter_mut().filter(|r| r.dest == Some(dest(NET))).for_each(|r| r.blackhole = true);
    }
    // H1 is healthy and running (an interface detached and attached again, ...): the
    // route is written again, on the router it names.
    let plan = Case::new(state.clone()).spec(NET, &[H1, H2]).plan();
    assert_eq!(
        plan.actions,
        [
            replace("rtb-a", NET, target(H1), Some(H1), ReplaceReason::Blackhole),
            replace("rtb-b", NET, target(H1), Some(H1), ReplaceReason::Blackhole),
        ]
    );
    assert_eq!(ReplaceReason::Blackhole.to_string(), "route is a blackhole");
    let plan = Case::new(not_running(state, "i-1", "stopped")).spec(NET, &[H1, H2]).plan();
    assert_eq!(
        plan.actions,
        [
            replace("rtb-a", NET, target(H2), Some(H1), ReplaceReason::RouterFailed),
            replace("rtb-b", NET, target(H2), Some(H1), ReplaceReason::RouterFailed),
        ]
    );
}

// ---- Deletes, protection, foreign routes

#[test]
fn instance_routes_not_in_the_spec_are_deleted() {
    let state = with_routes(
        vpc(),
        "rtb-a",
        vec![
            aws_route("10.5.0.0/16", "i-2", "eni-2"),
            instance_route("10.6.0.0/16", "i-gone"),
            eni_route("10.7.0.0/16", "eni-1"),
        ],
    );
    let plan = Case::new(state).spec(NET, &[H1]).spec("10.7.0.0/16", &[]).plan();
    assert_eq!(
        plan.actions,
        [
            create("rtb-a", NET, target(H1)),
            delete("rtb-a", "10.5.0.0/16", Some(H2)),
            delete("rtb-a", "10.6.0.0/16", None),
            delete("rtb-a", "10.7.0.0/16", Some(H1)),
        ]
    );
    assert_eq!(plan.routes, routes(&[("rtb-a", NET, Some(H1))]));
}

#[test]
fn ignoring_the_default_route_protects_only_the_default_route() {
    let nat = vec![instance_route("0.0.0.0/0", "i-2"), instance_route("10.5.0.0/16", "i-2")];
    let state = with_routes(vpc(), "rtb-a", nat);
    let plan = Case::new(state).spec(NET, &[H1]).ignore(&["0.0.0.0/0"]).plan();
    assert_eq!(plan.actions, [create("rtb-a", NET, target(H1)), delete("rtb-a", "10.5.0.0/16", Some(H2))]);
}

#[test]
fn ignoring_a_network_protects_the_routes_inside_it() {
    let nat =
        vec![instance_route("0.0.0.0/0", "i-2"), instance_route("10.5.0.0/16", "i-2"), route(None, Some("i-2"), None)];
    let state = with_routes(vpc(), "rtb-a", nat);
    let plan = Case::new(state).spec("172.16.0.0/12", &[H1]).ignore(&["10.0.0.0/8"]).plan();
    assert_eq!(plan.actions, [create("rtb-a", "172.16.0.0/12", target(H1)), delete("rtb-a", "0.0.0.0/0", Some(H2))]);
}

#[test]
fn protected_spec_route_is_neither_changed_nor_duplicated() {
    let state = with_routes(vpc(), "rtb-a", vec![aws_route(NET, "i-1", "eni-1")]);
    let case = Case::new(state).spec(NET, &[H1, H2]).failed(&[H1]).ignore(&[NET]);
    let plan = case.plan();
    assert_eq!(case.managed(), ["rtb-a", "rtb-b"]);
    assert_eq!(plan.actions, [create("rtb-b", NET, target(H2))]);
    assert!(plan.notices.is_empty());
    assert_eq!(plan.routes, routes(&[("rtb-b", NET, Some(H2))]));
}

#[test]
fn gateway_routes_are_never_touched_nor_duplicated() {
    let state = with_routes(vpc(), "rtb-b", vec![route(Some("10.7.0.0/16"), None, None)]);
    let plan = Case::new(state)
        .spec("0.0.0.0/0", &[H3])
        .spec("10.0.0.0/16", &[H3])
        .spec("10.7.0.0/16", &[H3])
        .spec(NET, &[H3])
        .plan();
    assert_eq!(plan.actions, [create("rtb-b", NET, target(H3))]);
    let held =
        |net: &str, t: &str| Notice::HeldByOtherTarget { rtb: "rtb-b".into(), cidr: cidr(net), target: t.into() };
    assert_eq!(
        plan.notices,
        notices([held("0.0.0.0/0", "igw-1"), held("10.0.0.0/16", "local"), held("10.7.0.0/16", "unknown target")])
    );
    assert_eq!(plan.routes, routes(&[("rtb-b", NET, Some(H3))]));
}

#[test]
fn gateway_routes_not_in_the_spec_are_silent() {
    let plan = Case::new(vpc()).spec(NET, &[H3]).plan();
    assert_eq!(plan.actions, [create("rtb-b", NET, target(H3))]);
    assert!(plan.notices.is_empty());
}

/// EC2 reported a destination vpcrouter cannot read (IPv6 routes were such before issue 14).
#[test]
fn unreadable_destinations_are_ignored() {
    let odd = vec![route(None, Some("i-1"), None), route(None, None, Some("eni-2"))];
    let state = with_routes(vpc(), "rtb-a", odd);
    let plan = Case::new(state).spec(NET, &[H1]).ignore(&["10.0.0.0/8"]).plan();
    assert_eq!(plan.actions, [create("rtb-a", NET, target(H1))]);
    assert_eq!(plan.routes, routes(&[("rtb-a", NET, Some(H1))]));
}

#[test]
fn cidrs_compare_by_value() {
    let state = with_routes(vpc(), "rtb-a", vec![aws_route("10.1.0.0/16", "i-1", "eni-1")]);
    let mut case = Case::new(state);
    case.spec = vec![(Cidr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 0)), 16).expect("network"), vec![ip(H1)])];
    let plan = case.plan();
    assert_eq!(plan.actions, []);
    assert_eq!(plan.routes, routes(&[("rtb-a", "10.1.0.0/16", Some(H1))]));
}

/// Generated states: every route of every table on a random target (a candidate, a
/// non-candidate, an unknown instance, or absent), of both address families, random
/// health, preferences and ignored networks. The invariants that make a plan safe to
/// execute as one parallel wave must hold.
#[test]
fn generated_plans_are_safe_to_run_as_one_parallel_wave() {
    use rand::Rng;
    // The first four may be in the spec; IPv4 and IPv6 interleaved.
    let nets = [NET, NET6, NET7, "2001:db8:7::/48", "10.6.0.0/16", "2001:db8:6::/48", "0.0.0.0/0", "::/0"];
    let ignorable = ["::/0", "0.0.0.0/0", "2001:db8:6::/48", "10.6.0.0/16", "2001:db8::/32", "10.0.0.0/8"];
    let hosts = [H1, H2, H3, OUTSIDE];
    let instances = ["i-1", "i-2", "i-3", "i-4", "i-gone"];
    let mut rng = StdRng::seed_from_u64(7);
    let mut seen = (0, 0, 0);
    for case_no in 0..3000u64 {
        let mut state = vpc();
        for t in 0..state.route_tables.len() {
            for net in nets {
                let taken = state.route_tables[t].routes.iter().any(|r| r.dest == Some(dest(net)));
                match rng.random_range(0..6) {
                    0 => {}
                    _ if taken => {}
                    k => state.route_tables[t].routes.push(instance_route(net, instances[(k - 1) as usize])),
                }
            }
        }
        let pick = |rng: &mut StdRng| hosts.iter().copied().filter(|_| rng.random_bool(0.3)).collect::<Vec<_>>();
        let mut case = Case::new(state);
        for net in &nets[..4] {
            let list = pick(&mut rng);
            case = case.spec(net, &list);
        }
        let (failed, questionable) = (pick(&mut rng), pick(&mut rng));
        case = case.failed(&failed).questionable(&questionable);
        if rng.random_bool(0.5) {
            case = case.preferred(nets[rng.random_range(0..2)], hosts[rng.random_range(0..hosts.len())]);
        }
        let ignore: Vec<&str> = ignorable.iter().copied().filter(|_| rng.random_bool(0.15)).collect();
        case = case.ignore(&ignore);
        let plan = case.plan_seeded(case_no);
        // One action per (table, destination): the wave's calls never race on one route.
        let keys: BTreeSet<(String, Dest)> = plan.actions.iter().map(|a| (a.rtb().to_string(), a.dest())).collect();
        assert_eq!(keys.len(), plan.actions.len(), "case {case_no}: {:?}", plan.actions);
        // Outages first, deletes last.
        assert!(
            plan.actions.windows(2).all(|w| w[0].priority() <= w[1].priority()),
            "case {case_no}: {:?}",
            plan.actions
        );
        let in_spec = |c: Cidr| case.spec.iter().find(|(s, _)| *s == c).map(|(_, h)| h).filter(|h| !h.is_empty());
        for a in &plan.actions {
            let net = a.dest().cidr().expect("per-CIDR mode: network destinations only");
            // Never a move onto a failed router, nor onto one outside the CIDR's candidates
            // (of the CIDR itself: an IPv4 and an IPv6 network are never confused).
            if let Some(r) = a.new_router() {
                assert!(!case.failed.contains(&r), "case {case_no}: {a:?}");
                assert!(in_spec(net).expect("spec CIDR").contains(&r), "case {case_no}: {a:?}");
            }
            if let RouteAction::Delete { .. } = a {
                assert!(in_spec(net).is_none(), "case {case_no}: {a:?}");
                seen.0 += usize::from(net.family() == Family::V6);
            }
            // Routes inside an ignored network are never changed or deleted.
            if !matches!(a, RouteAction::Create { .. }) {
                assert!(!case.ignore.iter().any(|&i| net.is_within(i)), "case {case_no}: {a:?} ignoring {ignore:?}");
            }
        }
        // Default routes not ignored and not in the spec go, whatever the other family's
        // default route does.
        for default in ["0.0.0.0/0", "::/0"] {
            let protected = case.ignore.contains(&cidr(default));
            let deleted = plan.actions.iter().any(|a| a.dest() == dest(default));
            let routed = managed_tables(&case.state, &case.spec, &TableSelection::Serving)
                .iter()
                .any(|t| t.routes.iter().any(|r| r.dest == Some(dest(default)) && r.targets_instance()));
            assert_eq!(deleted, routed && !protected, "case {case_no}: {default} ignoring {ignore:?}");
            seen.1 += usize::from(protected && routed);
        }
        // One router per CIDR across the tables once the wave is done, and a second plan
        // on the result has nothing left to do (with a preference, the same router).
        let mut after = case.clone();
        after.state = apply(&case.state, &plan.actions, &mut 0);
        for (cidr, _) in &case.spec {
            let routers: BTreeSet<Option<Ipv4Addr>> =
                plan.routes.values().filter_map(|t| t.get(&Dest::Cidr(*cidr))).copied().collect();
            assert!(
                routers.len() <= 1
                    || plan.notices.contains(&Notice::NoAvailableRouter { dest: Dest::Cidr(*cidr) })
                    || plan.notices.contains(&Notice::NoRouterInVpc { dest: Dest::Cidr(*cidr) }),
                "case {case_no}: {cidr} on {routers:?}"
            );
            seen.2 += usize::from(cidr.family() == Family::V6 && routers.iter().any(Option::is_some));
        }
        let again = after.plan_seeded(case_no + 1);
        let moves: Vec<&RouteAction> = again
            .actions
            .iter()
            .filter(|a| !matches!(a, RouteAction::Replace { reason: ReplaceReason::NotEligible, .. }))
            .collect();
        assert!(moves.is_empty(), "case {case_no}: not converged after one wave: {moves:?}\nfirst: {:?}", plan.actions);
    }
    assert!(seen.0 > 500 && seen.1 > 100 && seen.2 > 500, "IPv6 deletes, protected defaults, routed IPv6: {seen:?}");
}

#[test]
fn a_move_takes_the_router_chosen_before_when_it_is_healthy() {
    // H1 failed; H2 and H3 are healthy: without a preference the pick is random.
    let state = with_routes(vpc(), "rtb-a", vec![instance_route(NET, "i-1")]);
    let case = Case::new(state).spec(NET, &[H1, H2, H3]).failed(&[H1]);
    let picks: BTreeSet<Option<Ipv4Addr>> = SEEDS.map(|s| case.plan_seeded(s).actions[0].new_router()).collect();
    assert!(picks.len() > 1, "random without a preference: {picks:?}");
    for seed in SEEDS {
        let plan = case.clone().preferred(NET, H3).plan_seeded(seed);
        assert_eq!(plan.actions[0].new_router(), Some(ip(H3)), "seed {seed}");
        // Missing routes in other tables follow the same router.
        assert!(plan.actions.iter().all(|a| a.new_router() == Some(ip(H3))), "{:?}", plan.actions);
    }
    // A failed, questionable, unknown or current preference is not taken.
    for bad in [H1, NOT_IN_VPC] {
        let plan = case.clone().preferred(NET, bad).plan();
        assert_ne!(plan.actions[0].new_router(), Some(ip(bad)));
    }
    let plan = case.clone().preferred(NET, H3).questionable(&[H3]).plan();
    assert_eq!(plan.actions[0].new_router(), Some(ip(H2)));
    // A healthy route never moves to the preferred router (no fail-back).
    let healthy = Case::new(with_routes(vpc(), "rtb-a", vec![instance_route(NET, "i-2")]))
        .spec(NET, &[H1, H2, H3])
        .preferred(NET, H3);
    assert!(healthy.plan().actions.iter().all(|a| a.rtb() != "rtb-a"), "{:?}", healthy.plan().actions);
}

#[test]
fn actions_run_outages_first_then_creates_then_replacements_then_deletes() {
    let state = with_routes(vpc(), "rtb-b", vec![instance_route("10.5.0.0/16", "i-3")]);
    let state =
        with_routes(state, "rtb-a", vec![instance_route("10.6.0.0/16", "i-1"), aws_route(NET8, "i-2", "eni-2")]);
    let plan = Case::new(state).spec(NET, &[H1]).spec(NET8, &[H3]).plan();
    assert_eq!(
        plan.actions,
        [
            create("rtb-b", NET8, target(H3)),
            create("rtb-a", NET, target(H1)),
            create("rtb-b", NET, target(H1)),
            replace("rtb-a", NET8, target(H3), Some(H2), ReplaceReason::NotEligible),
            delete("rtb-a", "10.6.0.0/16", Some(H1)),
            delete("rtb-b", "10.5.0.0/16", Some(H3)),
        ]
    );
}

// ---- Ports of test_vpc.py::TestVpcBotoInteractions

const I1: &str = "10.1.0.5";
const I2: &str = "10.2.0.5";

/// The original's moto setup: two subnets, one instance in each, the single (main)
/// route table explicitly associated with both.
fn moto_vpc() -> VpcState {
    VpcState {
        vpc_id: "vpc-moto".into(),
        subnets: vec!["subnet-1".into(), "subnet-2".into()],
        route_tables: vec![table("rtb-1", true, &["subnet-1", "subnet-2"], vec![local()])],
        instances: vec![
            instance("i-1", vec![eni("eni-1", "subnet-1", 0, &[I1, "10.9.9.9"])]),
            instance("i-2", vec![eni("eni-2", "subnet-2", 0, &[I2])]),
        ],
        ..Default::default()
    }
}

#[test]
fn process_route_spec_config_sequence() {
    let t = |h: &str| target_in(&moto_vpc(), h);
    let mut case = Case::new(moto_vpc()).spec("10.1.0.0/16", &[I1, I2]);
    let first = match &case.step(0).actions[..] {
        [RouteAction::Create { rtb, target, .. }] if rtb == "rtb-1" => target.clone(),
        other => panic!("unexpected {other:?}"),
    };
    let (x, y) = if first.ip == ip(I1) { (I1, I2) } else { (I2, I1) };
    let net = "10.1.0.0/16";

    case = case.questionable(&[x]);
    let want = replace("rtb-1", net, t(y), Some(x), ReplaceReason::RouterQuestionable);
    assert_eq!(case.step(1).actions, [want]);

    case = case.questionable(&[y]);
    let want = replace("rtb-1", net, t(x), Some(y), ReplaceReason::RouterQuestionable);
    assert_eq!(case.step(2).actions, [want]);

    case = case.questionable(&[]).failed(&[x]);
    let want = replace("rtb-1", net, t(y), Some(x), ReplaceReason::RouterFailed);
    assert_eq!(case.step(3).actions, [want]);

    case = case.failed(&[I1, I2]);
    let plan = case.step(4);
    assert_eq!(plan.actions, []);
    assert_eq!(plan.notices, notices([no_router(net)]));

    case = case.failed(&[]);
    case.spec.clear();
    case = case.spec("10.2.0.0/16", &[I1]);
    let plan = case.step(5);
    assert_eq!(plan.actions, [create("rtb-1", "10.2.0.0/16", t(I1)), delete("rtb-1", net, Some(y))]);

    case.spec.clear();
    case = case.spec("10.3.0.0/16", &[I1]).ignore(&["10.2.0.0/16"]);
    assert_eq!(case.step(6).actions, [create("rtb-1", "10.3.0.0/16", t(I1))]);
    assert_eq!(case.plan().actions, []);
}

#[test]
fn update_existing_routes_cases() {
    let t = |h: &str| target_in(&moto_vpc(), h);
    let net = "10.9.0.0/16";
    let on_i1 = with_routes(moto_vpc(), "rtb-1", vec![aws_route(net, "i-1", "eni-1")]);

    let protected = Case::new(on_i1.clone()).spec(NET8, &[I1]).ignore(&["10.0.0.0/8"]).plan();
    assert_eq!(protected.actions, [create("rtb-1", NET8, t(I1))]);

    let not_instance = with_routes(moto_vpc(), "rtb-1", vec![gateway_route(net, "vgw-1")]);
    assert_eq!(Case::new(not_instance).spec(NET8, &[I1]).plan().actions, [create("rtb-1", NET8, t(I1))]);

    let emptied = Case::new(on_i1.clone()).spec(net, &[]).spec(NET8, &[I2]).plan();
    assert_eq!(emptied.actions.last(), Some(&delete("rtb-1", net, Some(I1))));

    let only_failed = Case::new(on_i1.clone()).spec(net, &[I2]).failed(&[I2]).plan();
    assert_eq!(only_failed.actions, []);
    assert_eq!(only_failed.notices, notices([no_router(net)]));

    let mut healthy = Case::new(on_i1).spec(net, &[I2]);
    let want = replace("rtb-1", net, t(I2), Some(I1), ReplaceReason::NotEligible);
    assert_eq!(healthy.step(0).actions, [want]);
    assert_eq!(healthy.plan().actions, []);
}

#[test]
fn add_missing_routes_cases() {
    let t = |h: &str| target_in(&moto_vpc(), h);
    let net = "10.55.0.0/16";
    let mut case = Case::new(moto_vpc()).spec(net, &[I1]);
    assert_eq!(case.step(0).actions, [create("rtb-1", net, t(I1))]);
    assert_eq!(case.plan().actions, []);

    let plan = Case::new(moto_vpc()).spec(net, &[I1]).failed(&[I1]).plan();
    assert_eq!(plan.actions, []);
    assert_eq!(plan.notices, notices([no_router(net)]));
}

#[test]
fn multi_address_secondary_ip_is_found() {
    let plan = Case::new(moto_vpc()).spec(NET, &["10.9.9.9"]).plan();
    let want = RouterTarget { ip: ip("10.9.9.9"), instance_id: "i-1".into(), eni_id: "eni-1".into() };
    assert_eq!(plan.actions, [create("rtb-1", NET, want)]);
    assert!(plan.notices.is_empty());
}

// ---- IPv6 destinations (issue 14)

#[test]
fn ipv6_routes_are_created_replaced_and_deleted_like_ipv4_ones() {
    let stale = vec![
        aws_route(NET6, "i-1", "eni-1"),
        instance_route("2001:db8:dead::/48", "i-2"),
        eni_route("2001:db8:beef::/64", "eni-3"),
        gateway_route("::/0", "igw-1"),
    ];
    let state = with_routes(vpc(), "rtb-a", stale);
    let mut case = Case::new(state).spec(NET6, &[H1, H2]).spec(NET, &[H1, H2]).preferred(NET, H1);
    assert_eq!(case.managed(), ["rtb-a", "rtb-b"]);
    let plan = case.step(0);
    assert_eq!(
        plan.actions,
        [
            create("rtb-a", NET, target(H1)),
            create("rtb-b", NET, target(H1)),
            create("rtb-b", NET6, target(H1)),
            delete("rtb-a", "2001:db8:dead::/48", Some(H2)),
            delete("rtb-a", "2001:db8:beef::/64", Some(H3)),
        ]
    );
    assert!(plan.notices.is_empty(), "a gateway default route not in the spec is silent: {:?}", plan.notices);
    let on = |h| Some(h);
    assert_eq!(
        plan.routes,
        routes(&[("rtb-a", NET, on(H1)), ("rtb-b", NET, on(H1)), ("rtb-a", NET6, on(H1)), ("rtb-b", NET6, on(H1))])
    );
    assert_eq!(case.plan().actions, [], "steady");

    case = case.failed(&[H1]);
    let plan = case.step(1);
    assert_eq!(
        plan.actions,
        [
            replace("rtb-a", NET6, target(H2), Some(H1), ReplaceReason::RouterFailed),
            replace("rtb-a", NET, target(H2), Some(H1), ReplaceReason::RouterFailed),
            replace("rtb-b", NET, target(H2), Some(H1), ReplaceReason::RouterFailed),
            replace("rtb-b", NET6, target(H2), Some(H1), ReplaceReason::RouterFailed),
        ]
    );
    assert_eq!(case.plan().actions, []);
    // The IPv6 CIDR leaves the spec: its routes go, the IPv4 ones stay.
    case = case.unspec(NET6);
    assert_eq!(case.plan().actions, [delete("rtb-a", NET6, Some(H2)), delete("rtb-b", NET6, Some(H2))]);
}

#[test]
fn an_ipv6_spec_route_held_by_a_gateway_is_reported_and_left_alone() {
    let state = with_routes(vpc(), "rtb-a", vec![gateway_route("::/0", "eigw-1")]);
    let plan = Case::new(state).spec("::/0", &[H1]).plan();
    assert_eq!(plan.actions, []);
    let held = Notice::HeldByOtherTarget { rtb: "rtb-a".into(), cidr: cidr("::/0"), target: "eigw-1".into() };
    assert_eq!(plan.notices, notices([held]));
}

/// 10.0.0.0/8 and a00::/8 have the same leading bits and length; ::a00:0/104 and
/// ::ffff:10.0.0.0/104 embed 10.0.0.0 in IPv6. None of them is another.
#[test]
fn an_ipv4_and_an_ipv6_network_are_never_confused() {
    let v4 = vec![aws_route("10.0.0.0/8", "i-1", "eni-1"), aws_route("10.0.0.0/24", "i-1", "eni-1")];
    let plan = Case::new(with_routes(vpc(), "rtb-a", v4)).spec("a00::/8", &[H1]).spec("::a00:0/104", &[H1]).plan();
    assert_eq!(
        plan.actions,
        [
            create("rtb-a", "::a00:0/104", target(H1)),
            create("rtb-a", "a00::/8", target(H1)),
            delete("rtb-a", "10.0.0.0/8", Some(H1)),
            delete("rtb-a", "10.0.0.0/24", Some(H1)),
        ]
    );
    let v6 = vec![aws_route("a00::/8", "i-1", "eni-1"), aws_route("::ffff:10.0.0.0/104", "i-1", "eni-1")];
    let plan = Case::new(with_routes(vpc(), "rtb-a", v6.clone())).spec("10.0.0.0/8", &[H1]).plan();
    assert_eq!(
        plan.actions,
        [
            create("rtb-a", "10.0.0.0/8", target(H1)),
            delete("rtb-a", "a00::/8", Some(H1)),
            delete("rtb-a", "::ffff:10.0.0.0/104", Some(H1)),
        ]
    );
    // Both in the spec, both routed: two destinations, nothing to do; a failover moves
    // each, and ignoring the IPv4 one does not protect the IPv6 one.
    let both = with_routes(vpc(), "rtb-a", vec![aws_route("10.0.0.0/8", "i-1", "eni-1"), v6[0].clone()]);
    let case = Case::new(both).spec("10.0.0.0/8", &[H1, OUTSIDE]).spec("a00::/8", &[H1, OUTSIDE]);
    assert_eq!(case.managed(), ["rtb-a", "rtb-main"]);
    let plan = case.plan();
    assert_eq!(plan.actions, [create("rtb-main", "10.0.0.0/8", target(H1)), create("rtb-main", "a00::/8", target(H1))]);
    assert_eq!(plan.routes.values().map(BTreeMap::len).sum::<usize>(), 4);
    let plan = case.clone().failed(&[H1]).ignore(&["10.0.0.0/8"]).plan();
    assert_eq!(
        plan.actions,
        [
            replace("rtb-a", "a00::/8", target(OUTSIDE), Some(H1), ReplaceReason::RouterFailed),
            create("rtb-main", "10.0.0.0/8", target(OUTSIDE)),
            create("rtb-main", "a00::/8", target(OUTSIDE)),
        ]
    );
}

fn defaults_and_more() -> VpcState {
    let routes = vec![
        instance_route("0.0.0.0/0", "i-2"),
        instance_route("::/0", "i-2"),
        instance_route("2001:db8:5::/48", "i-2"),
        instance_route("10.5.0.0/16", "i-2"),
    ];
    with_routes(vpc(), "rtb-a", routes)
}

/// `--ignore_routes` by family: each default route protects only itself, an IPv6 network
/// only the IPv6 routes inside it.
#[test]
fn ignored_networks_protect_only_routes_of_their_own_family() {
    let stale = ["0.0.0.0/0", "::/0", "2001:db8:5::/48", "10.5.0.0/16"];
    for (ignore, kept) in [
        (&["::/0"][..], &["::/0"][..]),
        (&["0.0.0.0/0"], &["0.0.0.0/0"]),
        (&["0.0.0.0/0", "::/0"], &["0.0.0.0/0", "::/0"]),
        (&["2001:db8::/32"], &["2001:db8:5::/48"]),
    ] {
        let plan = Case::new(defaults_and_more()).spec(NET, &[H1]).ignore(ignore).plan();
        let mut want = vec![create("rtb-a", NET, target(H1))];
        want.extend(stale.iter().filter(|d| !kept.contains(d)).map(|d| delete("rtb-a", d, Some(H2))));
        assert_eq!(plan.actions, want, "ignoring {ignore:?}");
    }
    // A protected IPv6 spec route is neither changed nor duplicated, like an IPv4 one.
    let state = with_routes(vpc(), "rtb-a", vec![aws_route(NET6, "i-1", "eni-1")]);
    let plan = Case::new(state).spec(NET6, &[H1, H2]).failed(&[H1]).ignore(&["2001:db8::/32"]).plan();
    assert_eq!(plan.actions, [create("rtb-b", NET6, target(H2))]);
}

// ---- Prefix-list mode (issue 14)

const GA: &str = "ipv4-10.0.1.1-10.0.2.2"; // NET, NET8 on [H1, H2]
const GB: &str = "ipv4-10.0.1.1-10.0.2.3"; // NET7 on [H1, H3]

/// True when `table` carries `net`: by a route of its own (to a router, or to a gateway
/// that vpcrouter leaves alone: a static route wins over a list route), or by a route to a
/// router through an owned list that holds it.
fn carried(state: &VpcState, table: &RouteTable, net: Cidr) -> bool {
    table.routes.iter().any(|r| match &r.dest {
        Some(Dest::Cidr(c)) => *c == net,
        Some(Dest::List(id)) => r.targets_instance() && state.prefix_list(id).is_some_and(|l| l.entries.contains(&net)),
        None => false,
    })
}

/// Every (managed table, spec CIDR with candidates) that `state` carries.
fn carried_pairs(case: &Case, state: &VpcState) -> BTreeSet<(String, Cidr)> {
    let tables = managed_tables(state, &case.spec, &TableSelection::Serving);
    let mut pairs = BTreeSet::new();
    for table in tables {
        for (net, _) in case.spec.iter().filter(|(_, hosts)| !hosts.is_empty()) {
            if carried(state, table, *net) {
                pairs.insert((table.id.clone(), *net));
            }
        }
    }
    pairs
}

/// Every (managed table, spec CIDR with candidates) there is.
fn all_pairs(case: &Case) -> BTreeSet<(String, Cidr)> {
    let nets = case.spec.iter().filter(|(_, hosts)| !hosts.is_empty()).map(|(net, _)| *net);
    nets.flat_map(|net| case.managed().into_iter().map(move |rtb| (rtb, net))).collect()
}

/// Short, exact descriptions of actions (routers included).
fn summary(actions: &[RouteAction]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            RouteAction::Create { rtb, dest, target } => format!("create {rtb} {dest} -> {}", target.ip),
            RouteAction::Replace { rtb, dest, target, reason, .. } => {
                format!("replace {rtb} {dest} -> {} {reason:?}", target.ip)
            }
            RouteAction::Delete { rtb, dest, reason, .. } => format!("delete {rtb} {dest} {reason:?}"),
            RouteAction::CreateList { name, group, max_entries } => {
                assert_eq!(*name, format!("vpcrouter-test-{}", group.key));
                format!("create list {} {:?} max {max_entries}", group.key, group.members)
            }
            RouteAction::ModifyList { id, version, add, remove, .. } => {
                format!("modify {id} v{version} add {add:?} remove {remove:?}")
            }
            RouteAction::DeleteList { id, .. } => format!("delete list {id}"),
        })
        .collect()
}

/// The invariants of any plan: one action per (table or list, destination), in priority
/// order; new routes on a router that is no failed, a candidate of what it carries, and
/// the same for a destination in every table.
fn check_plan(case: &Case, plan: &Plan) {
    let keys: BTreeSet<(String, Dest)> = plan.actions.iter().map(|a| (a.rtb().to_string(), a.dest())).collect();
    assert_eq!(keys.len(), plan.actions.len(), "{:?}", summary(&plan.actions));
    assert!(plan.actions.windows(2).all(|w| w[0].priority() <= w[1].priority()), "{:?}", summary(&plan.actions));
    let candidates = |to: &Dest| -> Vec<Ipv4Addr> {
        match to {
            Dest::Cidr(c) => case.spec.iter().find(|(s, _)| s == c).expect("spec CIDR").1.clone(),
            Dest::List(id) => match plan.groups.iter().find(|(_, l)| l.as_ref() == Some(id)) {
                Some((group, _)) => group.hosts.clone(),
                // A retired list's route moved off a failed router: a candidate of one
                // of its CIDRs.
                None => {
                    let list = case.state.prefix_list(id).expect("an owned list");
                    let of = |c: &Cidr| case.spec.iter().find(|(s, _)| s == c).map(|(_, h)| h.clone());
                    list.entries.iter().filter_map(of).flatten().collect()
                }
            },
        }
    };
    for a in &plan.actions {
        if let Some(r) = a.new_router() {
            assert!(!case.failed.contains(&r) && candidates(&a.dest()).contains(&r), "{a:?}");
        }
    }
    let mut routers: BTreeMap<&Dest, BTreeSet<Option<Ipv4Addr>>> = BTreeMap::new();
    for (to, r) in plan.routes.values().flatten() {
        routers.entry(to).or_default().insert(*r);
    }
    for (to, on) in routers {
        let none = Notice::NoAvailableRouter { dest: to.clone() };
        assert!(on.len() == 1 || plan.notices.contains(&none), "{to} on {on:?}");
    }
    // Groups: one family, sorted members, the spec's candidates.
    for (group, _) in &plan.groups {
        assert!(group.members.windows(2).all(|w| w[0] < w[1]) && !group.members.is_empty(), "{group:?}");
        for net in &group.members {
            assert_eq!(net.family(), group.family, "{group:?}");
            assert_eq!(candidates(&Dest::Cidr(*net)), group.hosts, "{group:?}");
        }
    }
}

/// One applied plan and the state after it.
struct Stage {
    plan: Plan,
    state: VpcState,
}

impl Stage {
    fn actions(&self) -> Vec<String> {
        summary(&self.plan.actions)
    }
}

/// Plans and applies until a plan has nothing to do, and returns the stages (the last
/// plan, empty and not staged, is not one). Checks every plan (`check_plan`); that a plan
/// not `staged` is the last one; and that no spec CIDR a managed table carried before a
/// stage is without a carrier after it, nor after only the stage's removals (deletes, list
/// entries removed: a wave whose other calls failed). Panics after 8 stages.
fn converge(case: &mut Case) -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    for n in 0..=8u64 {
        let plan = case.plan_seeded(100 + n);
        check_plan(case, &plan);
        let so_far: Vec<Vec<String>> = stages.iter().map(Stage::actions).collect();
        if plan.actions.is_empty() {
            assert!(!plan.staged, "nothing to do, yet staged; stages {so_far:#?}");
            return stages;
        }
        if let Some(last) = stages.last() {
            assert!(last.plan.staged, "more after a plan not staged: {:?}; stages {so_far:#?}", summary(&plan.actions));
        }
        let before = carried_pairs(case, &case.state);
        let removals: Vec<RouteAction> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                RouteAction::Delete { .. } | RouteAction::DeleteList { .. } => Some(a.clone()),
                RouteAction::ModifyList { id, name, version, remove, .. } if !remove.is_empty() => {
                    let (id, name, version, remove) = (id.clone(), name.clone(), *version, remove.clone());
                    Some(RouteAction::ModifyList { id, name, version, add: vec![], remove })
                }
                _ => None,
            })
            .collect();
        let partial = apply(&case.state, &removals, &mut case.lists_made.clone());
        let lost: Vec<_> = before.difference(&carried_pairs(case, &partial)).cloned().collect();
        assert!(
            lost.is_empty(),
            "stage {n} removals alone leave {lost:?} without a route: {:?}",
            summary(&plan.actions)
        );
        case.state = apply(&case.state, &plan.actions, &mut case.lists_made);
        let lost: Vec<_> = before.difference(&carried_pairs(case, &case.state)).cloned().collect();
        assert!(lost.is_empty(), "stage {n} leaves {lost:?} without a route: {:?}", summary(&plan.actions));
        stages.push(Stage { plan, state: case.state.clone() });
    }
    let so_far: Vec<Vec<String>> = stages.iter().map(Stage::actions).collect();
    panic!("no convergence in 8 stages: {so_far:#?}");
}

/// Asserts the stages' actions, exactly.
fn assert_stages(stages: &[Stage], want: &[&[&str]]) {
    let got: Vec<Vec<String>> = stages.iter().map(Stage::actions).collect();
    let want: Vec<Vec<String>> = want.iter().map(|s| s.iter().map(|a| a.to_string()).collect()).collect();
    assert_eq!(got, want);
}

/// Two groups in prefix-list mode, with their routers fixed by preference: GA (NET, NET8 on
/// H1 or H2) on H1 as pl-1, GB (NET7 on H1 or H3) on H3 as pl-2.
fn listed() -> Case {
    Case::new(vpc())
        .spec(NET, &[H1, H2])
        .spec(NET8, &[H1, H2])
        .spec(NET7, &[H1, H3])
        .lists(1000)
        .preferred("pl-1", H1)
        .preferred("pl-2", H3)
}

/// `listed()` converged.
fn listed_converged() -> Case {
    let mut case = listed();
    converge(&mut case);
    case
}

fn list_route(list: &str, instance: &str, eni: &str) -> Route {
    aws_route(list, instance, eni)
}

#[test]
fn lists_group_cidrs_by_family_and_candidates() {
    let case = listed().spec("10.6.0.0/16", &[H3, H1]).spec(NET6, &[H1, H2]).spec("2001:db8:8::/48", &[H2, H1]);
    let plan = case.plan();
    assert_eq!(
        summary(&plan.actions),
        [
            format!("create list {GA} [10.8.0.0/16, 10.9.0.0/16] max 10"),
            format!("create list {GB} [10.6.0.0/16, 10.7.0.0/16] max 10"),
            "create list ipv6-10.0.1.1-10.0.2.2 [2001:db8:8::/48, 2001:db8:9::/48] max 10".to_string(),
        ],
        "two candidate sets make two groups; the same hosts for IPv6 make a third"
    );
    let groups: Vec<(&str, Family, Option<&String>)> =
        plan.groups.iter().map(|(g, l)| (g.key.as_str(), g.family, l.as_ref())).collect();
    assert_eq!(groups, [(GA, Family::V4, None), (GB, Family::V4, None), ("ipv6-10.0.1.1-10.0.2.2", Family::V6, None)]);
    assert!(plan.staged, "routes follow once the lists exist");
    assert!(plan.routes.is_empty() && plan.notices.is_empty());
    // CIDRs without candidates are in no group.
    let plan = Case::new(vpc()).spec(NET, &[H1]).spec(NET8, &[]).lists(1000).plan();
    assert_eq!(summary(&plan.actions), ["create list ipv4-10.0.1.1 [10.9.0.0/16] max 9"]);
}

#[test]
fn start_up_on_an_empty_vpc_creates_the_lists_then_one_route_per_table_per_group() {
    let mut case = listed();
    let stages = converge(&mut case);
    assert_stages(
        &stages,
        &[
            &[
                &format!("create list {GA} [10.8.0.0/16, 10.9.0.0/16] max 10"),
                &format!("create list {GB} [10.7.0.0/16] max 9"),
            ],
            &[
                "create rtb-a pl-1 -> 10.0.1.1", "create rtb-b pl-1 -> 10.0.1.1", "create rtb-a pl-2 -> 10.0.2.3",
                "create rtb-b pl-2 -> 10.0.2.3",
            ],
        ],
    );
    let last = &stages[1].plan;
    assert_eq!(
        last.routes,
        routes(&[
            ("rtb-a", "pl-1", Some(H1)),
            ("rtb-b", "pl-1", Some(H1)),
            ("rtb-a", "pl-2", Some(H3)),
            ("rtb-b", "pl-2", Some(H3)),
        ])
    );
    let groups: Vec<(&str, Option<&str>)> = last.groups.iter().map(|(g, l)| (g.key.as_str(), l.as_deref())).collect();
    assert_eq!(groups, [(GA, Some("pl-1")), (GB, Some("pl-2"))]);
    assert_eq!(carried_pairs(&case, &case.state), all_pairs(&case));
    assert_eq!(case.state.prefix_lists.len(), 2);
    // Without preferences: one router per group, shared by the tables, whatever the seed.
    for seed in SEEDS {
        let mut case = listed();
        case.preferred.clear();
        case.step(seed);
        let plan = case.plan_seeded(seed);
        check_plan(&case, &plan);
        assert_eq!(plan.actions.len(), 4);
    }
}

#[test]
fn a_groups_failover_is_one_replace_per_table() {
    let case = listed_converged();
    let plan = case.clone().failed(&[H3]).plan();
    assert_eq!(
        summary(&plan.actions),
        ["replace rtb-a pl-2 -> 10.0.1.1 RouterFailed", "replace rtb-b pl-2 -> 10.0.1.1 RouterFailed"]
    );
    assert_eq!(plan.actions[0], replace("rtb-a", "pl-2", target(H1), Some(H3), ReplaceReason::RouterFailed));
    // H1 carries GA only; failing it moves GA, not GB.
    let plan = case.clone().failed(&[H1]).plan();
    assert_eq!(
        summary(&plan.actions),
        ["replace rtb-a pl-1 -> 10.0.2.2 RouterFailed", "replace rtb-b pl-1 -> 10.0.2.2 RouterFailed"]
    );
    assert!(!plan.staged);
    // Per-CIDR mode moves each CIDR in each table.
    let mut per_cidr = listed().no_lists().preferred(NET, H1).preferred(NET8, H1);
    converge(&mut per_cidr);
    assert_eq!(per_cidr.failed(&[H1]).plan().actions.len(), 4);
    // A questionable router moves too; with no healthy candidate the group stays.
    let plan = case.clone().questionable(&[H1]).plan();
    assert_eq!(summary(&plan.actions)[0], "replace rtb-a pl-1 -> 10.0.2.2 RouterQuestionable");
    let plan = case.clone().failed(&[H1, H2]).plan();
    assert_eq!(plan.actions, []);
    assert_eq!(plan.notices, notices([no_router("pl-1")]));
    // Once applied, nothing more; the old router's recovery brings no fail-back.
    let mut moved = case.failed(&[H1]);
    converge(&mut moved);
    assert_eq!(moved.failed(&[]).plan().actions, []);
}

#[test]
fn spec_edits_change_list_entries_not_routes() {
    // A CIDR joins a group: one modification.
    let mut case = listed_converged().spec("10.6.0.0/16", &[H2, H1]);
    let stages = converge(&mut case);
    assert_stages(&stages, &[&["modify pl-1 v1 add [10.6.0.0/16] remove []"]]);
    assert_eq!(case.state.prefix_list("pl-1").expect("list").entries, [cidr("10.6.0.0/16"), cidr(NET8), cidr(NET)]);
    // One leaves the spec: removed at once.
    let mut case = case.unspec(NET8);
    let stages = converge(&mut case);
    assert_stages(&stages, &[&["modify pl-1 v2 add [] remove [10.8.0.0/16]"]]);
    // Its candidates go: the same.
    let mut case = case.spec(NET, &[]);
    assert_stages(&converge(&mut case), &[&["modify pl-1 v3 add [] remove [10.9.0.0/16]"]]);
    assert_eq!(carried_pairs(&case, &case.state), all_pairs(&case));
}

#[test]
fn a_cidr_moving_to_another_group_leaves_its_list_once_the_new_one_carries_it() {
    let mut case = listed_converged().spec(NET, &[H1, H3]);
    let stages = converge(&mut case);
    assert_stages(
        &stages,
        &[&["modify pl-2 v1 add [10.9.0.0/16] remove []"], &["modify pl-1 v1 add [] remove [10.9.0.0/16]"]],
    );
    assert!(stages[0].plan.staged);
    // The move is done: NET goes with GB's router.
    assert_eq!(case.state.prefix_list("pl-2").expect("list").entries, [cidr(NET7), cidr(NET)]);
    assert_eq!(case.state.prefix_list("pl-1").expect("list").entries, [cidr(NET8)]);
}

#[test]
fn a_cidr_moving_to_a_new_group_leaves_its_list_once_the_new_list_is_routed_everywhere() {
    let mut case = listed_converged().spec(NET, &[H2, H3]).preferred("pl-3", H2);
    let stages = converge(&mut case);
    assert_stages(
        &stages,
        &[
            &["create list ipv4-10.0.2.2-10.0.2.3 [10.9.0.0/16] max 9"],
            &["create rtb-a pl-3 -> 10.0.2.2", "create rtb-b pl-3 -> 10.0.2.2"],
            &["modify pl-1 v1 add [] remove [10.9.0.0/16]"],
        ],
    );
    // A whole group moving: the old list is retired, its routes go once the new list
    // carries its CIDRs in the table, then the list.
    let mut case = listed_converged().spec(NET7, &[H2, H3]).preferred("pl-3", H2);
    let stages = converge(&mut case);
    assert_stages(
        &stages,
        &[
            &["create list ipv4-10.0.2.2-10.0.2.3 [10.7.0.0/16] max 9"],
            &["create rtb-a pl-3 -> 10.0.2.2", "create rtb-b pl-3 -> 10.0.2.2"],
            &["delete rtb-a pl-2 ListRetired", "delete rtb-b pl-2 ListRetired"],
            &["delete list pl-2"],
        ],
    );
    assert_eq!(case.state.prefix_lists.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(), ["pl-1", "pl-3"]);
}

#[test]
fn a_full_list_takes_new_entries_as_room_is_made() {
    // Lists of at most 3 entries: pl-1 (GA: NET, NET8) and pl-2 (GB: NET7) have 3 each.
    let mut case = listed().lists(3);
    converge(&mut case);
    assert_eq!(case.state.prefix_lists.iter().map(|l| l.max_entries).collect::<Vec<_>>(), [3, 3]);
    // NET8 moves to GB, two CIDRs join GA: GA's list holds NET8 until pl-2 carries it, and
    // never more than 3 entries (the adapter adds before it removes).
    let mut case = case.spec(NET8, &[H1, H3]).spec("10.5.0.0/16", &[H1, H2]).spec("10.6.0.0/16", &[H1, H2]);
    let stages = converge(&mut case);
    assert_stages(
        &stages,
        &[
            &["modify pl-1 v1 add [10.5.0.0/16] remove []", "modify pl-2 v1 add [10.8.0.0/16] remove []"],
            &["modify pl-1 v2 add [] remove [10.8.0.0/16]"],
            &["modify pl-1 v3 add [10.6.0.0/16] remove []"],
        ],
    );
    assert_eq!(carried_pairs(&case, &case.state), all_pairs(&case));
}

#[test]
fn a_group_outgrowing_its_list_moves_to_a_larger_one_without_a_gap() {
    let mut case = listed_converged();
    let more: Vec<String> = (100..109).map(|i| format!("10.{i}.0.0/16")).collect();
    for net in &more {
        case = case.spec(net, &[H1, H2]);
    }
    let stages = converge(&mut case);
    let members: Vec<Cidr> = case.spec.iter().filter(|(_, h)| h == &[ip(H1), ip(H2)]).map(|(c, _)| *c).collect();
    assert_eq!(members.len(), 11, "more than the 10 entries of pl-1");
    assert_stages(
        &stages,
        &[
            &[&format!("create list {GA} {members:?} max 19")],
            &["create rtb-a pl-3 -> 10.0.1.1", "create rtb-b pl-3 -> 10.0.1.1"],
            &["delete rtb-a pl-1 ListRetired", "delete rtb-b pl-1 ListRetired"],
            &["delete list pl-1"],
        ],
    );
    assert_eq!(carried_pairs(&case, &case.state), all_pairs(&case));
}

#[test]
fn migration_from_per_cidr_routes_to_lists_never_leaves_a_cidr_without_a_route() {
    let mut case = listed().no_lists().preferred(NET, H1).preferred(NET8, H1).preferred(NET7, H3);
    converge(&mut case);
    assert_eq!(carried_pairs(&case, &case.state), all_pairs(&case));
    let mut case = case.lists(1000);
    let stages = converge(&mut case);
    assert_stages(
        &stages,
        &[
            &[
                &format!("create list {GA} [10.8.0.0/16, 10.9.0.0/16] max 10"),
                &format!("create list {GB} [10.7.0.0/16] max 9"),
            ],
            &[
                "create rtb-a pl-1 -> 10.0.1.1", "create rtb-b pl-1 -> 10.0.1.1", "create rtb-a pl-2 -> 10.0.2.3",
                "create rtb-b pl-2 -> 10.0.2.3",
            ],
            &[
                "delete rtb-a 10.7.0.0/16 CarriedByList", "delete rtb-a 10.8.0.0/16 CarriedByList",
                "delete rtb-a 10.9.0.0/16 CarriedByList", "delete rtb-b 10.7.0.0/16 CarriedByList",
                "delete rtb-b 10.8.0.0/16 CarriedByList", "delete rtb-b 10.9.0.0/16 CarriedByList",
            ],
        ],
    );
    for stage in &stages {
        assert_eq!(carried_pairs(&case, &stage.state), all_pairs(&case), "{:?}", stage.actions());
    }
}

#[test]
fn migration_from_lists_to_per_cidr_routes_never_leaves_a_cidr_without_a_route() {
    let mut case = listed_converged().no_lists().preferred(NET, H1).preferred(NET8, H1).preferred(NET7, H3);
    let stages = converge(&mut case);
    assert_stages(
        &stages,
        &[
            &[
                "create rtb-a 10.7.0.0/16 -> 10.0.2.3", "create rtb-b 10.7.0.0/16 -> 10.0.2.3",
                "create rtb-a 10.8.0.0/16 -> 10.0.1.1", "create rtb-b 10.8.0.0/16 -> 10.0.1.1",
                "create rtb-a 10.9.0.0/16 -> 10.0.1.1", "create rtb-b 10.9.0.0/16 -> 10.0.1.1",
            ],
            &[
                "delete rtb-a pl-1 ListRetired", "delete rtb-a pl-2 ListRetired", "delete rtb-b pl-1 ListRetired",
                "delete rtb-b pl-2 ListRetired",
            ],
            &["delete list pl-1", "delete list pl-2"],
        ],
    );
    for stage in &stages {
        assert_eq!(carried_pairs(&case, &stage.state), all_pairs(&case), "{:?}", stage.actions());
    }
    assert!(case.state.prefix_lists.is_empty());
}

#[test]
fn lists_and_routes_vpcrouter_does_not_own_are_never_touched() {
    let foreign = vec![
        list_route("pl-foreign", "i-2", "eni-2"),
        gateway_route("pl-foreign-tgw", "tgw-1"),
        gateway_route(NET7, "pcx-1"),
        gateway_route("2001:db8:7::/48", "pcx-1"),
    ];
    let state = with_routes(vpc(), "rtb-b", foreign.clone());
    let mut case = listed().spec("2001:db8:7::/48", &[H1]).preferred("pl-3", H1);
    case.state = state;
    let touches = |stages: &[Stage]| {
        stages.iter().flat_map(|s| s.plan.actions.iter()).any(|a| {
            let d = a.dest();
            d == dest("pl-foreign") || d == dest("pl-foreign-tgw") || (a.rtb() == "rtb-b" && d == dest(NET7))
        })
    };
    let stages = converge(&mut case);
    assert!(!touches(&stages), "{:?}", stages.iter().map(Stage::actions).collect::<Vec<_>>());
    let rtb_b = |s: &VpcState| s.route_tables.iter().find(|t| t.id == "rtb-b").expect("rtb-b").routes.clone();
    assert!(foreign.iter().all(|r| rtb_b(&case.state).contains(r)));
    let last = &stages.last().expect("stages").plan;
    let dests = last.routes.values().flat_map(BTreeMap::keys);
    assert!(dests.into_iter().all(|d| !matches!(d, Dest::List(id) if id.contains("foreign"))));
    let held = |net: &str| Notice::HeldByOtherTarget { rtb: "rtb-b".into(), cidr: cidr(net), target: "pcx-1".into() };
    assert_eq!(last.notices, notices([held(NET7), held("2001:db8:7::/48")]));
    // Turning the lists off leaves them as they are too, and finishes.
    let mut case = case.no_lists();
    let stages = converge(&mut case);
    assert!(!touches(&stages), "{:?}", stages.iter().map(Stage::actions).collect::<Vec<_>>());
    assert!(foreign.iter().all(|r| rtb_b(&case.state).contains(r)));
    assert!(case.state.prefix_lists.is_empty(), "the owned lists are gone");
}

#[test]
fn a_group_larger_than_a_list_is_routed_per_cidr() {
    // GB's list is the first made here: pl-1.
    let mut case = listed().lists(1).preferred(NET, H1).preferred(NET8, H1).preferred("pl-1", H3);
    let stages = converge(&mut case);
    let too_large = Notice::GroupTooLarge { group: GA.into(), cidrs: 2, limit: 1 };
    assert_eq!(stages[0].plan.notices, notices([too_large.clone()]));
    assert_stages(
        &stages,
        &[
            &[
                "create rtb-a 10.8.0.0/16 -> 10.0.1.1",
                "create rtb-b 10.8.0.0/16 -> 10.0.1.1",
                "create rtb-a 10.9.0.0/16 -> 10.0.1.1",
                "create rtb-b 10.9.0.0/16 -> 10.0.1.1",
                &format!("create list {GB} [10.7.0.0/16] max 1"),
            ],
            &["create rtb-a pl-1 -> 10.0.2.3", "create rtb-b pl-1 -> 10.0.2.3"],
        ],
    );
    let groups: Vec<&str> = stages[1].plan.groups.iter().map(|(g, _)| g.key.as_str()).collect();
    assert_eq!(groups, [GB], "the large group is not listed");
    assert_eq!(case.plan().notices, notices([too_large]), "reported while it lasts");

    // A listed group growing past the limit: per-CIDR routes first, then its list goes.
    let mut case = listed_converged().lists(2).spec("10.6.0.0/16", &[H1, H2]).preferred("10.6.0.0/16", H2);
    let stages = converge(&mut case);
    assert_eq!(stages[0].plan.notices, notices([Notice::GroupTooLarge { group: GA.into(), cidrs: 3, limit: 2 }]));
    assert_stages(
        &stages,
        &[
            &[
                "create rtb-a 10.6.0.0/16 -> 10.0.2.2", "create rtb-b 10.6.0.0/16 -> 10.0.2.2",
                "create rtb-a 10.8.0.0/16 -> 10.0.1.1", "create rtb-b 10.8.0.0/16 -> 10.0.1.1",
                "create rtb-a 10.9.0.0/16 -> 10.0.1.1", "create rtb-b 10.9.0.0/16 -> 10.0.1.1",
            ],
            &["delete rtb-a pl-1 ListRetired", "delete rtb-b pl-1 ListRetired"],
            &["delete list pl-1"],
        ],
    );
}

#[test]
fn weights_count_a_list_route_as_its_max_entries() {
    let mut case = listed();
    let stages = converge(&mut case);
    fn weights(s: &Stage) -> Vec<(&str, u32)> {
        s.plan.weights.iter().map(|(t, w)| (t.as_str(), *w)).collect()
    }
    // rtb-a: local; rtb-b: local and the internet gateway. Then pl-1 (10) and pl-2 (9).
    assert_eq!(weights(&stages[0]), [("rtb-a", 1), ("rtb-b", 2)]);
    assert_eq!(weights(&stages[1]), [("rtb-a", 20), ("rtb-b", 21)]);
    // A resize weighs both lists until the old route goes.
    let mut grown = case.clone();
    for i in 100..109 {
        grown = grown.spec(&format!("10.{i}.0.0/16"), &[H1, H2]);
    }
    let stages = converge(&mut grown);
    let per_stage: Vec<Vec<(&str, u32)>> = stages.iter().map(weights).collect();
    assert_eq!(
        per_stage,
        [
            vec![("rtb-a", 20), ("rtb-b", 21)],
            vec![("rtb-a", 39), ("rtb-b", 40)],
            vec![("rtb-a", 29), ("rtb-b", 30)],
            vec![("rtb-a", 29), ("rtb-b", 30)],
        ]
    );
    // Per-CIDR routes weigh one each; unmanaged tables are not weighed.
    let plan = case.no_lists().preferred(NET, H1).preferred(NET8, H1).preferred(NET7, H1).plan();
    assert_eq!(plan.weights, [("rtb-a".to_string(), 23), ("rtb-b".to_string(), 24)].into());
    // A route to someone else's list weighs its max entries, as EC2 reports them; one of an
    // unknown list weighs one.
    let mut state = with_routes(vpc(), "rtb-a", vec![list_route("pl-other", "i-1", "eni-1")]);
    state = with_routes(state, "rtb-b", vec![list_route("pl-unknown", "i-2", "eni-2")]);
    state.other_lists.insert("pl-other".into(), 40);
    let weights = Case::new(state).spec(NET, &[H1, H2]).preferred(NET, H1).plan().weights;
    assert_eq!((weights["rtb-a"], weights["rtb-b"]), (1 + 40 + 1, 2 + 1 + 1), "{weights:?}");
}

#[test]
fn a_table_over_its_route_quota_is_reported() {
    let mut case = listed().quota(20);
    let stages = converge(&mut case);
    assert!(stages[0].plan.notices.is_empty());
    let over = Notice::OverQuota { rtb: "rtb-b".into(), weight: 21, quota: 20 };
    assert_eq!(stages[1].plan.notices, notices([over.clone()]), "before the routes are made");
    assert_eq!(case.plan().notices, notices([over]), "and while it lasts");
    assert_eq!(case.clone().quota(21).plan().notices, notices([]), "at the quota is not over it");
    // Per-CIDR routes count too.
    let plan = Case::new(vpc()).spec(NET, &[H1, H2]).spec(NET8, &[H1, H2]).quota(3).plan();
    assert_eq!(plan.notices, notices([Notice::OverQuota { rtb: "rtb-b".into(), weight: 4, quota: 3 }]));
}

#[test]
fn migration_to_lists_keeps_routers_and_does_not_move_routes_it_will_delete() {
    // Per-CIDR mode put NET and NET8 (one group once listed) on different routers.
    let mut case = Case::new(vpc())
        .spec(NET, &[H1, H2])
        .spec(NET8, &[H1, H2])
        .preferred(NET, H1)
        .preferred(NET8, H2)
        .spec(NET6, &[H1, H2])
        .preferred(NET6, H2);
    converge(&mut case);
    let mut case = case.lists(1000);
    let stages = converge(&mut case);
    assert_stages(
        &stages,
        &[
            &[
                &format!("create list {GA} [10.8.0.0/16, 10.9.0.0/16] max 10"),
                "create list ipv6-10.0.1.1-10.0.2.2 [2001:db8:9::/48] max 9",
            ],
            // The group takes the router of the first of its routes (rtb-a's NET8).
            &[
                "create rtb-a pl-1 -> 10.0.2.2", "create rtb-b pl-1 -> 10.0.2.2", "create rtb-a pl-2 -> 10.0.2.2",
                "create rtb-b pl-2 -> 10.0.2.2",
            ],
            &[
                "delete rtb-a 10.8.0.0/16 CarriedByList",
                "delete rtb-a 10.9.0.0/16 CarriedByList",
                "delete rtb-a 2001:db8:9::/48 CarriedByList",
                "delete rtb-b 10.8.0.0/16 CarriedByList",
                "delete rtb-b 10.9.0.0/16 CarriedByList",
                "delete rtb-b 2001:db8:9::/48 CarriedByList",
            ],
        ],
    );
    // A listed CIDR's own route on a failed router still moves while its list is not there.
    let mut case = Case::new(vpc()).spec(NET, &[H1, H2]).preferred(NET, H1);
    converge(&mut case);
    let plan = case.lists(1000).failed(&[H1]).plan();
    assert_eq!(
        summary(&plan.actions),
        [
            "replace rtb-a 10.9.0.0/16 -> 10.0.2.2 RouterFailed",
            "replace rtb-b 10.9.0.0/16 -> 10.0.2.2 RouterFailed",
            "create list ipv4-10.0.1.1-10.0.2.2 [10.9.0.0/16] max 9",
        ]
    );
}

/// Generated prefix-list cases: a spec over both families and three candidate sets,
/// converged in a random mode, then a random change (mode on or off, CIDRs added, removed
/// or moved between groups, a smaller list limit, a router failed) converged again. Every
/// stage passes `converge`'s checks (no CIDR loses its route, staged is truthful, at most 8
/// stages); at the end every spec CIDR is carried where a router is available.
#[test]
fn generated_list_mode_changes_converge_without_a_gap() {
    use rand::Rng;
    let pool = [NET, NET8, NET7, "10.6.0.0/16", "10.5.0.0/24", NET6, "2001:db8:8::/48", "2001:db8:7::/64", "::/0"];
    let sets: [&[&str]; 4] = [&[H1, H2], &[H1, H3], &[H2, H3_SECONDARY], &[]];
    let mut rng = StdRng::seed_from_u64(14);
    let mut kinds = BTreeMap::<&str, usize>::new();
    for case_no in 0..400u64 {
        let mut case = Case::new(vpc());
        for net in pool {
            if rng.random_bool(0.6) {
                case = case.spec(net, sets[rng.random_range(0..3)]);
            }
        }
        if rng.random_bool(0.3) {
            case.state = with_routes(case.state, "rtb-b", vec![gateway_route(NET7, "pcx-1")]);
        }
        if rng.random_bool(0.3) {
            case.state = with_routes(case.state, "rtb-a", vec![list_route("pl-foreign", "i-2", "eni-2")]);
        }
        if rng.random_bool(0.6) {
            case = case.lists([1000, 4, 2][rng.random_range(0..3)]);
        }
        converge(&mut case);
        let start = case.state.clone();
        let kind = match rng.random_range(0..6) {
            0 => {
                case.lists = if case.lists.is_some() { None } else { Some(list_mode(1000)) };
                "toggle"
            }
            1 => {
                for net in pool {
                    if rng.random_bool(0.4) {
                        case = case.spec(net, sets[rng.random_range(0..4)]);
                    }
                }
                "move"
            }
            2 => {
                for net in pool {
                    if rng.random_bool(0.3) {
                        case = case.unspec(net);
                    }
                }
                "remove"
            }
            3 => {
                case = case.lists([3, 2, 1][rng.random_range(0..3)]);
                "limit"
            }
            4 => {
                case = case.failed(&[[H1, H2, H3][rng.random_range(0..3)]]);
                "fail"
            }
            _ => {
                for i in 0..rng.random_range(1..12) {
                    case = case.spec(&format!("10.{}.0.0/16", 100 + i), sets[rng.random_range(0..2)]);
                }
                "grow"
            }
        };
        *kinds.entry(kind).or_default() += 1;
        let stages = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| converge(&mut case)));
        let Ok(stages) = stages else {
            panic!("case {case_no} ({kind}): from {start:#?}\nspec {:?}, lists {:?}", case.spec, case.lists);
        };
        let last = stages.last().map_or_else(|| case.plan(), |s| s.plan.clone());
        let stuck: BTreeSet<(String, Cidr)> =
            all_pairs(&case).difference(&carried_pairs(&case, &case.state)).cloned().collect();
        for (rtb, net) in &stuck {
            let hosts = &case.spec.iter().find(|(c, _)| c == net).expect("spec").1;
            assert!(
                hosts.iter().all(|h| case.failed.contains(h)),
                "case {case_no} ({kind}): {net} not carried in {rtb}"
            );
        }
        if case.managed().is_empty() {
            continue; // Nothing managed: nothing changed (`empty_spec_manages_nothing`).
        }
        // Owned lists left are exactly those serving a group.
        let serving: BTreeSet<&String> = last.groups.iter().filter_map(|(_, l)| l.as_ref()).collect();
        let owned: BTreeSet<&String> = case.state.prefix_lists.iter().map(|l| &l.id).collect();
        assert_eq!(owned, serving, "case {case_no} ({kind})");
        assert!(case.lists.is_some() || owned.is_empty(), "case {case_no} ({kind})");
    }
    assert!(kinds.values().all(|&n| n > 40), "{kinds:?}");
}

#[test]
fn a_retired_lists_route_that_must_stay_is_moved_off_a_failed_router() {
    // Lists turned off while pl-1's router H1 fails: the per-CIDR routes are created on
    // H2, and pl-1's routes, which must stay until they exist, move to H2 at once.
    let case = listed_converged().no_lists().failed(&[H1]);
    let plan = case.plan();
    let mut got = summary(&plan.actions);
    got.sort();
    assert_eq!(
        got,
        [
            "create rtb-a 10.7.0.0/16 -> 10.0.2.3",
            "create rtb-a 10.8.0.0/16 -> 10.0.2.2",
            "create rtb-a 10.9.0.0/16 -> 10.0.2.2",
            "create rtb-b 10.7.0.0/16 -> 10.0.2.3",
            "create rtb-b 10.8.0.0/16 -> 10.0.2.2",
            "create rtb-b 10.9.0.0/16 -> 10.0.2.2",
            "replace rtb-a pl-1 -> 10.0.2.2 RouterFailed",
            "replace rtb-b pl-1 -> 10.0.2.2 RouterFailed",
        ]
    );
    // Without the failure the retired routes are left as they are.
    let calm = listed_converged().no_lists().plan();
    assert!(!summary(&calm.actions).iter().any(|a| a.starts_with("replace")), "{:?}", summary(&calm.actions));
}

#[test]
fn groups_smaller_than_min_members_are_routed_per_cidr() {
    // NET and NET8 share [H1, H2]: a list; NET7 alone on [H1, H3]: its own routes.
    let mut case = listed().preferred(NET7, H1);
    case.lists = Some(ListMode { min_members: 2, ..list_mode(1000) });
    let stages = converge(&mut case);
    assert_stages(
        &stages,
        &[
            &[
                "create rtb-a 10.7.0.0/16 -> 10.0.1.1",
                "create rtb-b 10.7.0.0/16 -> 10.0.1.1",
                &format!("create list {GA} [10.8.0.0/16, 10.9.0.0/16] max 10"),
            ],
            &["create rtb-a pl-1 -> 10.0.1.1", "create rtb-b pl-1 -> 10.0.1.1"],
        ],
    );
    assert_eq!(case.plan().groups.len(), 1);
}

// ---- Drains (maintenance mode): a drained router is not a candidate; its routes move to a
// healthy candidate, or stay (with a notice) when there is none. Nothing is ever deleted.

fn stays(to: &str, router: &str) -> Notice {
    Notice::StaysOnDrained { dest: dest(to), router: ip(router) }
}

#[test]
fn a_drained_routers_routes_move_to_a_healthy_candidate_in_every_table() {
    let case = Case::new(both_tables_on("i-1", "eni-1")).spec(NET, &[H1, H2, H3]).drained(&[H1]);
    let mut seen = BTreeSet::new();
    for seed in SEEDS {
        let plan = case.plan_seeded(seed);
        let Some(RouteAction::Replace { target: new, .. }) = plan.actions.first() else {
            panic!("expected a replace, got {:?}", plan.actions)
        };
        assert!(new.ip == ip(H2) || new.ip == ip(H3), "{new:?}");
        assert_eq!(
            plan.actions,
            [
                replace("rtb-a", NET, new.clone(), Some(H1), ReplaceReason::Drained),
                replace("rtb-b", NET, new.clone(), Some(H1), ReplaceReason::Drained),
            ]
        );
        assert_eq!(plan.notices, notices([]));
        seen.insert(new.ip);
    }
    assert_eq!(seen, ips(&[H2, H3]), "uniform over the healthy candidates");
    assert_eq!(ReplaceReason::Drained.to_string(), "drained");
}

#[test]
fn a_drained_router_is_never_chosen_not_even_when_preferred() {
    for seed in SEEDS {
        let plan = Case::new(vpc()).spec(NET, &[H1, H2]).drained(&[H1]).preferred(NET, H1).plan_seeded(seed);
        assert_eq!(plan.actions, [create("rtb-a", NET, target(H2)), create("rtb-b", NET, target(H2))]);
        // A failover off H2 does not pick the drained H1 either.
        let state = with_routes(vpc(), "rtb-a", vec![instance_route(NET, "i-2")]);
        let plan = Case::new(state).spec(NET, &[H1, H2, H3]).drained(&[H1]).failed(&[H2]).plan_seeded(seed);
        assert_eq!(
            plan.actions,
            [
                replace("rtb-a", NET, target(H3), Some(H2), ReplaceReason::RouterFailed),
                create("rtb-b", NET, target(H3)),
            ]
        );
    }
}

#[test]
fn a_drain_without_another_healthy_candidate_keeps_the_route_and_warns() {
    // The other candidate failed, is questionable, is drained too, or there is none.
    let cases = [
        Case::new(both_tables_on("i-1", "eni-1")).spec(NET, &[H1, H2]).drained(&[H1]).failed(&[H2]),
        Case::new(both_tables_on("i-1", "eni-1")).spec(NET, &[H1, H2]).drained(&[H1]).questionable(&[H2]),
        Case::new(both_tables_on("i-1", "eni-1")).spec(NET, &[H1, H2]).drained(&[H1, H2]),
        Case::new(both_tables_on("i-1", "eni-1")).spec(NET, &[H1]).drained(&[H1]),
        Case::new(both_tables_on("i-1", "eni-1")).spec(NET, &[H1, NOT_IN_VPC]).drained(&[H1]),
    ];
    for (n, case) in cases.into_iter().enumerate() {
        for seed in SEEDS {
            let plan = case.plan_seeded(seed);
            assert_eq!(plan.actions, [], "case {n}: never deleted, never moved");
            // With H1 the only candidate in the VPC, only rtb-a (its subnet's) is managed.
            let managed: &[(&str, &str, Option<&str>)] = if n >= 3 {
                &[("rtb-a", NET, Some(H1))]
            } else {
                &[("rtb-a", NET, Some(H1)), ("rtb-b", NET, Some(H1))]
            };
            assert_eq!(plan.routes, routes(managed), "case {n}");
            let mut want = notices([stays(NET, H1)]);
            if n == 4 {
                want.insert(Notice::HostNotInVpc { host: ip(NOT_IN_VPC) });
            }
            assert_eq!(plan.notices, want, "case {n}: one warning, not also 'no healthy router'");
        }
    }
    assert_eq!(
        stays(NET, H1).to_string(),
        "CIDR 10.9.0.0/16 stays on drained router 10.0.1.1: no other healthy candidate (a drain never blackholes a CIDR; it moves once one is healthy)"
    );
}

#[test]
fn a_route_staying_on_a_drained_router_moves_once_another_candidate_recovers() {
    let mut case = Case::new(both_tables_on("i-1", "eni-1")).spec(NET, &[H1, H2]).drained(&[H1]).failed(&[H2]);
    assert_eq!(case.step(0).actions, []);
    case = case.failed(&[]);
    let plan = case.step(0);
    assert_eq!(
        summary(&plan.actions),
        ["replace rtb-a 10.9.0.0/16 -> 10.0.2.2 Drained", "replace rtb-b 10.9.0.0/16 -> 10.0.2.2 Drained"]
    );
    assert_eq!(plan.notices, notices([]));
    // Undrained, H1 is a candidate again, but nothing moves back to it (no fail-back).
    case = case.drained(&[]);
    assert_eq!(case.plan().actions, []);
    // ... until H2 fails: then H1 may take the routes again.
    case = case.failed(&[H2]);
    assert_eq!(
        summary(&case.plan().actions),
        ["replace rtb-a 10.9.0.0/16 -> 10.0.1.1 RouterFailed", "replace rtb-b 10.9.0.0/16 -> 10.0.1.1 RouterFailed"]
    );
}

#[test]
fn nothing_goes_to_a_drained_router_even_when_the_route_is_on_a_failed_one() {
    // H1 drained, the route moved to H2, then H2 fails: the route stays on H2 (the outage is
    // reported); it does not go back to the drained router.
    let state = both_tables_on("i-2", "eni-2");
    let plan = Case::new(state).spec(NET, &[H1, H2]).drained(&[H1]).failed(&[H2]).plan();
    assert_eq!(plan.actions, []);
    assert_eq!(plan.notices, notices([no_router(NET)]));
    // A missing route is not created on a drained router either.
    let plan = Case::new(vpc()).spec(NET, &[H1, H2]).drained(&[H1, H2]).plan();
    assert_eq!(plan.actions, []);
    assert_eq!(plan.notices, notices([no_router(NET)]));
}

#[test]
fn a_failed_drained_router_fails_over_like_a_failed_one() {
    let state = both_tables_on("i-1", "eni-1");
    let plan = Case::new(state.clone()).spec(NET, &[H1, H2]).drained(&[H1]).failed(&[H1]).plan();
    assert_eq!(
        summary(&plan.actions),
        ["replace rtb-a 10.9.0.0/16 -> 10.0.2.2 RouterFailed", "replace rtb-b 10.9.0.0/16 -> 10.0.2.2 RouterFailed"]
    );
    // As for any failed router, a questionable candidate is better than none.
    let plan = Case::new(state.clone()).spec(NET, &[H1, H2]).drained(&[H1]).failed(&[H1]).questionable(&[H2]).plan();
    assert_eq!(summary(&plan.actions)[0], "replace rtb-a 10.9.0.0/16 -> 10.0.2.2 RouterFailed");
    // No candidate: the outage is reported as such.
    let plan = Case::new(state).spec(NET, &[H1, H2]).drained(&[H1, H2]).failed(&[H1]).plan();
    assert_eq!(plan.actions, []);
    assert_eq!(plan.notices, notices([no_router(NET)]));
}

#[test]
fn a_drained_questionable_router_moves_only_to_a_healthy_one() {
    let state = both_tables_on("i-1", "eni-1");
    let plan = Case::new(state.clone()).spec(NET, &[H1, H2]).drained(&[H1]).questionable(&[H1]).plan();
    assert_eq!(
        summary(&plan.actions),
        ["replace rtb-a 10.9.0.0/16 -> 10.0.2.2 Drained", "replace rtb-b 10.9.0.0/16 -> 10.0.2.2 Drained"]
    );
    let plan = Case::new(state).spec(NET, &[H1, H2]).drained(&[H1]).questionable(&[H1, H2]).plan();
    assert_eq!(plan.actions, []);
    assert_eq!(plan.notices, notices([stays(NET, H1)]));
}

#[test]
fn draining_a_host_outside_the_spec_changes_nothing() {
    let routed = both_tables_on("i-1", "eni-1");
    for (state, base) in [(vpc(), Case::new(vpc())), (routed.clone(), Case::new(routed))] {
        let base = base.spec(NET, &[H1, H2]);
        for other in [OUTSIDE, NOT_IN_VPC, H3, H3_SECONDARY] {
            for seed in SEEDS {
                let drained = Case { state: state.clone(), ..base.clone() }.drained(&[other]);
                assert_eq!(drained.plan_seeded(seed), base.plan_seeded(seed), "{other}");
            }
        }
    }
}

#[test]
fn a_route_on_a_drained_router_in_one_table_follows_the_router_of_another() {
    // rtb-a on the drained H1, rtb-b on H2: rtb-b's router is kept, rtb-a moves to it.
    let state = with_routes(vpc(), "rtb-a", vec![instance_route(NET, "i-1")]);
    let state = with_routes(state, "rtb-b", vec![instance_route(NET, "i-2")]);
    let mut case = Case::new(state).spec(NET, &[H1, H2]).drained(&[H1]);
    let plan = case.step(0);
    assert_eq!(summary(&plan.actions), ["replace rtb-a 10.9.0.0/16 -> 10.0.2.2 Drained"]);
    assert_eq!(case.plan().actions, []);
    // rtb-b on a failed H2 and no other candidate: both stay; the drain says so.
    let state = with_routes(vpc(), "rtb-a", vec![instance_route(NET, "i-1")]);
    let state = with_routes(state, "rtb-b", vec![instance_route(NET, "i-2")]);
    let plan = Case::new(state).spec(NET, &[H1, H2]).drained(&[H1]).failed(&[H2]).plan();
    assert_eq!(plan.actions, []);
    assert_eq!(plan.notices, notices([stays(NET, H1)]));
}

#[test]
fn drain_moves_run_after_failovers_and_missing_routes() {
    let state = with_routes(vpc(), "rtb-a", vec![instance_route(NET, "i-1"), instance_route(NET8, "i-2")]);
    let plan = Case::new(state).spec(NET, &[H1, H3]).spec(NET8, &[H2, H3]).drained(&[H1]).failed(&[H2]).plan();
    assert_eq!(
        summary(&plan.actions),
        [
            "replace rtb-a 10.8.0.0/16 -> 10.0.2.3 RouterFailed",
            "create rtb-b 10.8.0.0/16 -> 10.0.2.3",
            "create rtb-b 10.9.0.0/16 -> 10.0.2.3",
            "replace rtb-a 10.9.0.0/16 -> 10.0.2.3 Drained",
        ]
    );
}

#[test]
fn every_combination_of_drained_failed_and_questionable_routers() {
    // Both tables on H1; three candidates, each healthy, failed, questionable, drained, or
    // drained and failed.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum S {
        Healthy,
        Failed,
        Questionable,
        Drained,
        DrainedFailed,
    }
    let all = [S::Healthy, S::Failed, S::Questionable, S::Drained, S::DrainedFailed];
    let hosts = [H1, H2, H3];
    for s1 in all {
        for s2 in all {
            for s3 in all {
                let states = [s1, s2, s3];
                let with = |pick: &[S]| -> Vec<&str> {
                    hosts.iter().zip(states).filter(|(_, s)| pick.contains(s)).map(|(h, _)| *h).collect()
                };
                let case = Case::new(both_tables_on("i-1", "eni-1"))
                    .spec(NET, &hosts)
                    .failed(&with(&[S::Failed, S::DrainedFailed]))
                    .questionable(&with(&[S::Questionable]))
                    .drained(&with(&[S::Drained, S::DrainedFailed]));
                let healthy = with(&[S::Healthy]);
                let questionable = with(&[S::Questionable]);
                for seed in 0..4 {
                    let plan = case.plan_seeded(seed);
                    let what = format!("{states:?} seed {seed}: {:?} {:?}", summary(&plan.actions), plan.notices);
                    check_plan(&case, &plan);
                    assert!(plan.actions.iter().all(|a| a.is_route() && !matches!(a, RouteAction::Delete { .. })));
                    let targets: BTreeSet<String> =
                        plan.actions.iter().filter_map(|a| a.new_router()).map(|t| t.to_string()).collect();
                    assert!(targets.len() <= 1, "one router for both tables: {what}");
                    let target = targets.iter().next().map(String::as_str);
                    for t in &targets {
                        let drained = with(&[S::Drained, S::DrainedFailed]);
                        assert!(!drained.contains(&t.as_str()), "routed to a drained router: {what}");
                    }
                    let (moved, reason) = match plan.actions.first() {
                        Some(RouteAction::Replace { reason, .. }) => (true, Some(*reason)),
                        _ => (false, None),
                    };
                    match s1 {
                        S::Healthy => assert!(!moved, "{what}"),
                        S::Drained => {
                            if healthy.is_empty() {
                                assert!(!moved && plan.notices.contains(&stays(NET, H1)), "{what}");
                                assert!(!plan.notices.contains(&no_router(NET)), "{what}");
                            } else {
                                assert_eq!(reason, Some(ReplaceReason::Drained), "{what}");
                                assert!(healthy.contains(&target.unwrap_or_default()), "{what}");
                                assert_eq!(plan.actions.len(), 2, "{what}");
                            }
                        }
                        S::Failed | S::DrainedFailed => {
                            if healthy.is_empty() && questionable.is_empty() {
                                assert!(!moved && plan.notices.contains(&no_router(NET)), "{what}");
                            } else {
                                assert_eq!(reason, Some(ReplaceReason::RouterFailed), "{what}");
                                let pool = if healthy.is_empty() { &questionable } else { &healthy };
                                assert!(pool.contains(&target.unwrap_or_default()), "{what}");
                            }
                            assert!(!plan.notices.iter().any(|n| matches!(n, Notice::StaysOnDrained { .. })));
                        }
                        S::Questionable => {
                            assert_eq!(moved, !healthy.is_empty(), "{what}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn a_drained_router_of_a_prefix_list_group_moves_the_groups_route() {
    let mut case = listed_converged();
    // GA (pl-1) is on H1, GB (pl-2) on H3. Drain H1: only pl-1 moves, to H2.
    case = case.drained(&[H1]);
    let plan = case.step(0);
    check_plan(&case, &plan);
    assert_eq!(
        summary(&plan.actions),
        ["replace rtb-a pl-1 -> 10.0.2.2 Drained", "replace rtb-b pl-1 -> 10.0.2.2 Drained"]
    );
    assert_eq!(plan.notices, notices([]));
    assert_eq!(case.plan().actions, [], "settled");
    // Drain H3 too: GB's other candidate (H1) is drained: pl-2 stays on H3, with a notice.
    case = case.drained(&[H1, H3]);
    let plan = case.plan();
    assert_eq!(plan.actions, []);
    assert_eq!(plan.notices, notices([stays("pl-2", H3)]));
}
