//! The planner's tests, through its public API: vpc-router's `handle_spec` cases, the
//! original's defects fixed, and invariants over generated states.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use rand::rngs::StdRng;
use rand::SeedableRng;
use vpcrouter_planner::model::{
    Cidr, Eni, Instance, Notice, Plan, ReplaceReason, Route, RouteAction, RouteTable, RouterTarget, VpcState,
};
use vpcrouter_planner::plan::{choose_different_host, managed_tables, plan, PlanInput};

// Fixture hosts (see `vpc()`).
const H1: &str = "10.0.1.1"; // i-1 / eni-1, subnet sn-a
const H2: &str = "10.0.2.2"; // i-2 / eni-2, subnet sn-b
const H3: &str = "10.0.2.3"; // i-3 / eni-3 primary, subnet sn-b
const H3_SECONDARY: &str = "10.0.2.33"; // i-3 / eni-3 secondary
const OUTSIDE: &str = "10.0.3.4"; // i-4 / eni-4, subnet sn-c (main table, implicitly)
const NOT_IN_VPC: &str = "192.168.7.7";
const NET: &str = "10.9.0.0/16";
const NET8: &str = "10.8.0.0/16";
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

fn eni(id: &str, subnet: &str, device_index: i32, private_ips: &[&str]) -> Eni {
    Eni {
        id: id.into(),
        subnet_id: subnet.into(),
        private_ips: private_ips.iter().map(|h| ip(h)).collect(),
        device_index,
    }
}

fn instance(id: &str, enis: Vec<Eni>) -> Instance {
    Instance { id: id.into(), enis }
}

fn route(dest: Option<&str>, instance: Option<&str>, eni: Option<&str>) -> Route {
    Route {
        destination: dest.map(String::from),
        instance_id: instance.map(String::from),
        eni_id: eni.map(String::from),
        other_target: None,
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
    RouteTable { id: id.into(), main, subnets: subnets.iter().map(|s| s.to_string()).collect(), routes }
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
    }
}

fn with_routes(mut state: VpcState, rtb: &str, routes: Vec<Route>) -> VpcState {
    let table = state.route_tables.iter_mut().find(|t| t.id == rtb).expect("test table");
    table.routes.extend(routes);
    state
}

fn target_in(state: &VpcState, host: &str) -> RouterTarget {
    let ip = ip(host);
    let (instance, eni) = state
        .instances
        .iter()
        .flat_map(|i| i.enis.iter().map(move |e| (i, e)))
        .find(|(_, e)| e.private_ips.contains(&ip))
        .expect("fixture host");
    RouterTarget { ip, instance_id: instance.id.clone(), eni_id: eni.id.clone() }
}

fn target(host: &str) -> RouterTarget {
    target_in(&vpc(), host)
}

fn create(rtb: &str, net: &str, target: RouterTarget) -> RouteAction {
    RouteAction::Create { rtb: rtb.into(), cidr: cidr(net), target }
}

fn replace(rtb: &str, net: &str, target: RouterTarget, old: Option<&str>, reason: ReplaceReason) -> RouteAction {
    let old_router = old.map(ip);
    RouteAction::Replace { rtb: rtb.into(), cidr: cidr(net), target, old_router, reason }
}

fn delete(rtb: &str, net: &str, old: Option<&str>) -> RouteAction {
    RouteAction::Delete { rtb: rtb.into(), cidr: cidr(net), old_router: old.map(ip) }
}

fn notices(items: impl IntoIterator<Item = Notice>) -> BTreeSet<Notice> {
    items.into_iter().collect()
}

fn no_router(net: &str) -> Notice {
    Notice::NoAvailableRouter { cidr: cidr(net) }
}

fn routes(entries: &[(&str, &str, Option<&str>)]) -> BTreeMap<(String, Cidr), Option<Ipv4Addr>> {
    entries.iter().map(|(rtb, net, host)| ((rtb.to_string(), cidr(net)), host.map(ip))).collect()
}

/// Executes a plan the way the EC2 adapter does (routes come back in AWS's shape).
fn apply(state: &VpcState, plan: &Plan) -> VpcState {
    let mut state = state.clone();
    for action in &plan.actions {
        let table = state.route_tables.iter_mut().find(|t| t.id == action.rtb()).expect("table");
        let dest = action.cidr().to_string();
        let same_dest = |r: &Route| r.destination.as_deref() == Some(dest.as_str());
        match action {
            RouteAction::Create { target, .. } => {
                assert!(!table.routes.iter().any(same_dest), "duplicate route {dest}");
                table.routes.push(aws_route(&dest, &target.instance_id, &target.eni_id));
            }
            RouteAction::Replace { target, .. } => {
                let r = table.routes.iter_mut().find(|r| same_dest(r)).expect("replaced route");
                *r = aws_route(&dest, &target.instance_id, &target.eni_id);
            }
            RouteAction::Delete { .. } => {
                let before = table.routes.len();
                table.routes.retain(|r| !same_dest(r));
                assert_eq!(table.routes.len() + 1, before, "deleted route {dest}");
            }
        }
    }
    state
}

/// A reconcile's inputs, built fluently.
#[derive(Clone)]
struct Case {
    state: VpcState,
    spec: Vec<(Cidr, Vec<Ipv4Addr>)>,
    failed: BTreeSet<Ipv4Addr>,
    questionable: BTreeSet<Ipv4Addr>,
    ignore: Vec<Cidr>,
    preferred: BTreeMap<Cidr, Ipv4Addr>,
}

impl Case {
    fn new(state: VpcState) -> Self {
        Case {
            state,
            spec: Vec::new(),
            failed: BTreeSet::new(),
            questionable: BTreeSet::new(),
            ignore: Vec::new(),
            preferred: BTreeMap::new(),
        }
    }

    fn preferred(mut self, net: &str, host: &str) -> Self {
        self.preferred.insert(cidr(net), ip(host));
        self
    }

    fn spec(mut self, net: &str, hosts: &[&str]) -> Self {
        self.spec.push((cidr(net), ips(hosts).into_iter().collect()));
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

    fn ignore(mut self, nets: &[&str]) -> Self {
        self.ignore = nets.iter().map(|n| cidr(n)).collect();
        self
    }

    fn plan_seeded(&self, seed: u64) -> Plan {
        let input = PlanInput {
            state: &self.state,
            spec: &self.spec,
            failed: &self.failed,
            questionable: &self.questionable,
            ignore: &self.ignore,
            preferred: &self.preferred,
        };
        plan(&input, &mut StdRng::seed_from_u64(seed))
    }

    fn plan(&self) -> Plan {
        self.plan_seeded(0)
    }

    /// The ids of the route tables the plans of this case manage.
    fn managed(&self) -> Vec<String> {
        managed_tables(&self.state, &self.spec).iter().map(|t| t.id.clone()).collect()
    }

    /// Plans, then executes the plan on the state.
    fn step(&mut self, seed: u64) -> Plan {
        let plan = self.plan_seeded(seed);
        self.state = apply(&self.state, &plan);
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
    let tables: BTreeSet<&str> = plan.routes.keys().map(|(rtb, _)| rtb.as_str()).collect();
    assert_eq!(tables, ["rtb-a", "rtb-main"].into(), "the plan routes in both");
}

#[test]
fn main_table_is_not_managed_when_every_subnet_is_associated_elsewhere() {
    let mut state = vpc();
    state.route_tables.push(table("rtb-c", false, &["sn-c"], vec![local()]));
    let case = Case::new(state).spec(NET, &[OUTSIDE, H1]);
    assert_eq!(case.managed(), ["rtb-a", "rtb-c"]);
    let plan = case.plan();
    let tables: BTreeSet<&str> = plan.routes.keys().map(|(rtb, _)| rtb.as_str()).collect();
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
    assert_eq!(plan.notices, notices([Notice::NoManagedTables]));
}

#[test]
fn no_spec_host_in_the_vpc_manages_nothing() {
    let state = with_routes(vpc(), "rtb-a", vec![instance_route("10.5.0.0/16", "i-1")]);
    let case = Case::new(state).spec(NET, &[NOT_IN_VPC]).spec(NET8, &[]);
    let plan = case.plan();
    assert_eq!(plan.actions, []);
    assert!(case.managed().is_empty() && plan.routes.is_empty());
    assert_eq!(plan.notices, notices([Notice::NoManagedTables, Notice::HostNotInVpc { host: ip(NOT_IN_VPC) }]));
}

#[test]
fn empty_spec_manages_nothing() {
    let state = with_routes(vpc(), "rtb-a", vec![instance_route("10.5.0.0/16", "i-1")]);
    let plan = Case::new(state).plan();
    assert_eq!(plan.actions, []);
    assert_eq!(plan.notices, notices([Notice::NoManagedTables]));
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
                replace("rtb-b", NET, new.clone(), Some(H1), ReplaceReason::OtherTableUsesDifferentRouter),
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
            replace("rtb-b", NET, target(H3), Some(H1), ReplaceReason::OtherTableUsesDifferentRouter),
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
    assert_eq!(plan.routes[&("rtb-a".to_string(), cidr(NET))], Some(ip(H1)));
    assert_eq!(plan.routes[&("rtb-b".to_string(), cidr(NET))], None);
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
    assert_eq!(plan.notices, notices([Notice::HostNotInVpc { host: ip(NOT_IN_VPC) }, no_router(NET)]));
    assert_eq!(plan.routes, routes(&[("rtb-a", NET, None), ("rtb-a", NET8, Some(H1))]));
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

#[test]
fn ipv6_and_malformed_destinations_are_ignored() {
    let odd = vec![route(None, Some("i-1"), None), instance_route("10.1.0.1/16", "i-1")];
    let state = with_routes(vpc(), "rtb-a", odd);
    let plan = Case::new(state).spec(NET, &[H1]).ignore(&["10.0.0.0/8"]).plan();
    assert_eq!(plan.actions, [create("rtb-a", NET, target(H1))]);
    assert_eq!(plan.routes, routes(&[("rtb-a", NET, Some(H1))]));
}

#[test]
fn cidrs_compare_by_value() {
    let state = with_routes(vpc(), "rtb-a", vec![aws_route("10.1.0.0/16", "i-1", "eni-1")]);
    let mut case = Case::new(state);
    case.spec = vec![(Cidr { addr: Ipv4Addr::new(10, 1, 0, 0), len: 16 }, vec![ip(H1)])];
    let plan = case.plan();
    assert_eq!(plan.actions, []);
    assert_eq!(plan.routes, routes(&[("rtb-a", "10.1.0.0/16", Some(H1))]));
}

/// Generated states: every route of every table on a random target (a candidate, a
/// non-candidate, an unknown instance, or absent), random health and preferences. The
/// invariants that make a plan safe to execute as one parallel wave must hold.
#[test]
fn generated_plans_are_safe_to_run_as_one_parallel_wave() {
    use rand::Rng;
    let nets = [NET, NET8, "10.7.0.0/16", "10.6.0.0/16"];
    let hosts = [H1, H2, H3, OUTSIDE];
    let instances = ["i-1", "i-2", "i-3", "i-4", "i-gone"];
    let mut rng = StdRng::seed_from_u64(7);
    for case_no in 0..3000u64 {
        let mut state = vpc();
        for t in 0..state.route_tables.len() {
            for net in nets {
                match rng.random_range(0..6) {
                    0 => {}
                    k => state.route_tables[t].routes.push(instance_route(net, instances[(k - 1) as usize])),
                }
            }
        }
        let pick = |rng: &mut StdRng| hosts.iter().copied().filter(|_| rng.random_bool(0.3)).collect::<Vec<_>>();
        let mut case = Case::new(state);
        for net in &nets[..3] {
            let list = pick(&mut rng);
            case = case.spec(net, &list);
        }
        let (failed, questionable) = (pick(&mut rng), pick(&mut rng));
        case = case.failed(&failed).questionable(&questionable);
        if rng.random_bool(0.5) {
            case = case.preferred(nets[0], hosts[rng.random_range(0..hosts.len())]);
        }
        let plan = case.plan_seeded(case_no);
        // One action per (table, CIDR): the wave's calls never race on one route.
        let keys: BTreeSet<(String, Cidr)> = plan.actions.iter().map(|a| (a.rtb().to_string(), a.cidr())).collect();
        assert_eq!(keys.len(), plan.actions.len(), "case {case_no}: {:?}", plan.actions);
        // Outages first, deletes last.
        assert!(
            plan.actions.windows(2).all(|w| w[0].priority() <= w[1].priority()),
            "case {case_no}: {:?}",
            plan.actions
        );
        // Never a move onto a failed router, nor onto one outside the CIDR's candidates.
        for a in &plan.actions {
            if let Some(r) = a.new_router() {
                assert!(!case.failed.contains(&r), "case {case_no}: {a:?}");
                let candidates = &case.spec.iter().find(|(c, _)| *c == a.cidr()).expect("spec CIDR").1;
                assert!(candidates.contains(&r), "case {case_no}: {a:?}");
            }
        }
        // One router per CIDR across the tables once the wave is done, and a second plan
        // on the result has nothing left to do (with a preference, the same router).
        let mut after = case.clone();
        after.state = apply(&case.state, &plan);
        for (cidr, _) in &case.spec {
            let routers: BTreeSet<Option<Ipv4Addr>> =
                plan.routes.iter().filter(|((_, c), _)| c == cidr).map(|(_, r)| *r).collect();
            assert!(
                routers.len() <= 1 || plan.notices.contains(&Notice::NoAvailableRouter { cidr: *cidr }),
                "case {case_no}: {cidr} on {routers:?}"
            );
        }
        let again = after.plan_seeded(case_no + 1);
        let moves: Vec<&RouteAction> = again
            .actions
            .iter()
            .filter(|a| !matches!(a, RouteAction::Replace { reason: ReplaceReason::NotEligible, .. }))
            .collect();
        assert!(moves.is_empty(), "case {case_no}: not converged after one wave: {moves:?}\nfirst: {:?}", plan.actions);
    }
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
