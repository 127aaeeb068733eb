//! With `--zone-affinity` a route table of one zone uses a healthy router of its own zone when
//! there is one; the other tables share the CIDR's common router.
//!
//! `--zone-affinity`: a route table of one availability zone uses a healthy candidate of its
//! own zone when the CIDR has one, so that each zone's private tables go through the zone's
//! own NAT (or firewall); the other tables share the CIDR's common router. Failover,
//! failback, drains and prefix lists honour it. Invariants are checked over generated states.

#[path = "support/clocked.rs"]
mod clocked;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use clocked::Case;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vpcrouter_planner::model::{
    Cidr, Dest, Eni, FailbackState, FailbackView, Instance, ManagedTable, Notice, Plan, ReplaceReason, Route,
    RouteAction, RouteTable, Subnet, TableSelection, VpcState,
};
use vpcrouter_planner::plan::{FailbackPolicy, ListMode};

const DEFAULT: &str = "0.0.0.0/0";
const NET: &str = "10.50.0.0/16";
/// The NAT of zone a (first in the spec), a second one of zone a, the NATs of zones b and c.
const NAT_A: &str = "10.0.0.10";
const NAT_A2: &str = "10.0.0.11";
const NAT_B: &str = "10.0.1.10";
const NAT_C: &str = "10.0.2.10";
/// Private tables: two in zone a, one in b, one in c; `rtb-mixed` serves subnets of zones a
/// and b (no zone of its own); `rtb-pub-*` are the public tables (not tagged).
const PRIVATE_A: [&str; 2] = ["rtb-a1", "rtb-a2"];
const PRIVATE_B: &str = "rtb-b1";
const PRIVATE_C: &str = "rtb-c1";
const MIXED: &str = "rtb-mixed";
const AFTER: Duration = Duration::from_secs(300);

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test IP")
}

fn cidr(s: &str) -> Cidr {
    Cidr::parse(s).expect("test CIDR")
}

fn tagged() -> TableSelection {
    TableSelection::Tagged(vec![("vpcrouter:managed".into(), "true".into())])
}

fn local() -> Route {
    gateway_route("10.0.0.0/16", "local")
}

fn gateway_route(net: &str, target: &str) -> Route {
    Route {
        dest: Some(Dest::Cidr(cidr(net))),
        instance_id: None,
        eni_id: None,
        other_target: Some(target.into()),
        blackhole: false,
    }
}

fn route_to(net: &str, eni: &str) -> Route {
    Route {
        dest: Some(Dest::Cidr(cidr(net))),
        instance_id: None,
        eni_id: Some(eni.into()),
        other_target: None,
        blackhole: false,
    }
}

/// A NAT world: a public subnet and table per zone (default route to the internet gateway),
/// the NATs in the public subnets, private subnets with tagged tables.
fn world() -> VpcState {
    let subnet =
        |id: &str, zone: &str, net: &str| Subnet { id: id.into(), zone: Some(zone.into()), cidrs: vec![cidr(net)] };
    let subnets = vec![
        subnet("sn-pub-a", "az-a", "10.0.0.0/24"),
        subnet("sn-pub-b", "az-b", "10.0.1.0/24"),
        subnet("sn-pub-c", "az-c", "10.0.2.0/24"),
        subnet("sn-a1", "az-a", "10.0.10.0/24"),
        subnet("sn-a2", "az-a", "10.0.11.0/24"),
        subnet("sn-b1", "az-b", "10.0.20.0/24"),
        subnet("sn-c1", "az-c", "10.0.30.0/24"),
        subnet("sn-mixed-a", "az-a", "10.0.40.0/24"),
        subnet("sn-mixed-b", "az-b", "10.0.41.0/24"),
    ];
    let tags: BTreeMap<String, String> = [("vpcrouter:managed".to_string(), "true".to_string())].into();
    let table = |id: &str, served: &[&str], private: bool| {
        let mut routes = vec![local()];
        if !private {
            routes.push(gateway_route(DEFAULT, "igw-1"));
        }
        RouteTable {
            id: id.into(),
            subnets: served.iter().map(|s| s.to_string()).collect(),
            routes,
            tags: if private { tags.clone() } else { BTreeMap::new() },
            ..Default::default()
        }
    };
    let nat = |n: usize, subnet: &str, at: &str| Instance {
        id: format!("i-{n}"),
        enis: vec![Eni {
            id: format!("eni-{n}"),
            subnet_id: subnet.into(),
            private_ips: vec![ip(at)],
            device_index: 0,
            source_dest_check: Some(false),
        }],
    };
    VpcState {
        vpc_id: "vpc-1".into(),
        subnets,
        cidrs: vec![cidr("10.0.0.0/16")],
        route_tables: vec![
            RouteTable { main: true, ..table("rtb-main", &[], false) },
            table("rtb-pub-a", &["sn-pub-a"], false),
            table("rtb-pub-b", &["sn-pub-b"], false),
            table("rtb-pub-c", &["sn-pub-c"], false),
            table(PRIVATE_A[0], &["sn-a1"], true),
            table(PRIVATE_A[1], &["sn-a2"], true),
            table(PRIVATE_B, &["sn-b1"], true),
            table(PRIVATE_C, &["sn-c1"], true),
            table(MIXED, &["sn-mixed-a", "sn-mixed-b"], true),
        ],
        instances: vec![
            nat(1, "sn-pub-a", NAT_A),
            nat(2, "sn-pub-a", NAT_A2),
            nat(3, "sn-pub-b", NAT_B),
            nat(4, "sn-pub-c", NAT_C),
        ],
        ..Default::default()
    }
}

/// The ENI of a NAT of [`world`].
fn eni_of(nat: &str) -> &'static str {
    match nat {
        NAT_A => "eni-1",
        NAT_A2 => "eni-2",
        NAT_B => "eni-3",
        NAT_C => "eni-4",
        _ => panic!("no such NAT {nat}"),
    }
}

impl Case {
    /// The NAT world with `DEFAULT: [NAT_A, NAT_B, NAT_C]`, zone affinity on, tag selection.
    fn nat() -> Case {
        let mut case = Case::new(world(), &[NAT_A, NAT_A2, NAT_B, NAT_C]);
        case.tables = tagged();
        case.zone_affinity = true;
        case.spec(DEFAULT, &[NAT_A, NAT_B, NAT_C]);
        case
    }

    /// Every private table routes `net` to `nat`.
    fn routed(&mut self, net: &str, tables: &[&str], nat: &str) -> &mut Case {
        for t in self.state.route_tables.iter_mut().filter(|t| tables.contains(&t.id.as_str())) {
            t.routes.retain(|r| r.dest != Some(Dest::Cidr(cidr(net))));
            t.routes.push(route_to(net, eni_of(nat)));
        }
        self
    }

    fn fail(&mut self, hosts: &[&str]) -> &mut Case {
        self.failed = hosts.iter().map(|h| ip(h)).collect();
        for h in hosts {
            self.healthy_since.remove(&ip(h));
        }
        self
    }

    /// `host` is healthy again at `seconds`.
    fn heal(&mut self, host: &str, seconds: u64) -> &mut Case {
        self.failed.remove(&ip(host));
        self.healthy_since.insert(ip(host), self.at(seconds));
        self
    }

    /// The router `net` points at in `rtb` (its interface's IP).
    fn router(&self, rtb: &str, net: &str) -> Option<Ipv4Addr> {
        let table = self.state.route_tables.iter().find(|t| t.id == rtb)?;
        let route = table.routes.iter().find(|r| r.dest == Some(Dest::Cidr(cidr(net))))?;
        let eni = route.eni_id.as_deref()?;
        let inst = self.state.instances.iter().find(|i| i.enis.iter().any(|e| e.id == eni))?;
        inst.enis[0].private_ips.first().copied()
    }
}

/// The tables an action list writes.
fn written(plan: &Plan) -> BTreeSet<String> {
    plan.actions.iter().map(|a| a.rtb().to_string()).collect()
}

#[test]
fn each_zone_takes_its_own_router_and_tables_across_zones_share_one() {
    let mut case = Case::nat();
    let plan = case.step(0);
    for rtb in PRIVATE_A {
        assert_eq!(case.router(rtb, DEFAULT), Some(ip(NAT_A)), "{rtb}: {:?}", plan.actions);
    }
    assert_eq!(case.router(PRIVATE_B, DEFAULT), Some(ip(NAT_B)));
    assert_eq!(case.router(PRIVATE_C, DEFAULT), Some(ip(NAT_C)));
    assert!(case.router(MIXED, DEFAULT).is_some(), "a table spanning zones gets the common router");
    // Public tables are not selected: their gateway route stays, with no notice about it.
    assert!(!written(&plan).iter().any(|t| t.starts_with("rtb-pub") || t == "rtb-main"), "{:?}", plan.actions);
    assert!(!plan.notices.iter().any(|n| matches!(n, Notice::HeldByOtherTarget { .. })), "{:?}", plan.notices);
    let zones: BTreeMap<&str, Option<&str>> =
        plan.managed.iter().map(|t: &ManagedTable| (t.id.as_str(), t.zone.as_deref())).collect();
    assert_eq!(
        zones,
        BTreeMap::from([
            ("rtb-a1", Some("az-a")),
            ("rtb-a2", Some("az-a")),
            ("rtb-b1", Some("az-b")),
            ("rtb-c1", Some("az-c")),
            (MIXED, None)
        ])
    );
    assert!(case.plan().actions.is_empty(), "converged");
}

#[test]
fn without_zone_affinity_every_table_shares_one_router() {
    let mut case = Case::nat();
    case.zone_affinity = false;
    case.step(3);
    let routers: BTreeSet<Option<Ipv4Addr>> =
        [PRIVATE_A[0], PRIVATE_A[1], PRIVATE_B, PRIVATE_C, MIXED].iter().map(|t| case.router(t, DEFAULT)).collect();
    assert_eq!(routers.len(), 1, "{routers:?}");
}

#[test]
fn a_failed_zone_router_moves_only_its_zones_tables() {
    let mut case = Case::nat();
    case.routed(DEFAULT, &PRIVATE_A, NAT_A).routed(DEFAULT, &[PRIVATE_B, MIXED], NAT_B).routed(
        DEFAULT,
        &[PRIVATE_C],
        NAT_C,
    );
    case.fail(&[NAT_A]);
    for seed in 0..16 {
        let plan = case.plan_seeded(seed);
        assert_eq!(written(&plan), PRIVATE_A.iter().map(|t| t.to_string()).collect(), "{:?}", plan.actions);
        let to: BTreeSet<Option<Ipv4Addr>> = plan.actions.iter().map(RouteAction::new_router).collect();
        assert_eq!(to.len(), 1, "zone a's tables agree: {:?}", plan.actions);
        assert!(to.iter().all(|r| [Some(ip(NAT_B)), Some(ip(NAT_C))].contains(r)), "{to:?}");
        assert!(plan
            .actions
            .iter()
            .all(|a| matches!(a, RouteAction::Replace { reason: ReplaceReason::RouterFailed, .. })));
    }
    // The second zone fails during the first's failover: zone b moves, zone a follows its
    // common router off b as well, zone c stays.
    case.step(1);
    case.fail(&[NAT_A, NAT_B]);
    let plan = case.step(2);
    for rtb in [PRIVATE_A[0], PRIVATE_A[1], PRIVATE_B, MIXED] {
        assert_eq!(case.router(rtb, DEFAULT), Some(ip(NAT_C)), "{rtb}: {:?}", plan.actions);
    }
    assert!(!written(&plan).contains(PRIVATE_C), "{:?}", plan.actions);
}

#[test]
fn a_recovered_zone_router_gets_its_zone_back_by_the_next_failover_not_before() {
    let mut case = Case::nat();
    case.routed(DEFAULT, &PRIVATE_A, NAT_B).routed(DEFAULT, &[PRIVATE_B, MIXED], NAT_B).routed(
        DEFAULT,
        &[PRIVATE_C],
        NAT_C,
    );
    assert!(case.plan().actions.is_empty(), "no failback by default: {:?}", case.plan().actions);
    case.fail(&[NAT_B]);
    let plan = case.step(0);
    for rtb in PRIVATE_A {
        assert_eq!(case.router(rtb, DEFAULT), Some(ip(NAT_A)), "{rtb} returns to its own zone: {:?}", plan.actions);
    }
    assert_ne!(case.router(PRIVATE_B, DEFAULT), Some(ip(NAT_B)));
}

#[test]
fn a_zone_takes_the_first_of_its_candidates_in_the_spec_order() {
    let mut case = Case::nat();
    case.spec(DEFAULT, &[NAT_B, NAT_A2, NAT_A, NAT_C]);
    case.step(0);
    assert_eq!(case.router(PRIVATE_A[0], DEFAULT), Some(ip(NAT_A2)));
    // Its first candidate fails: the zone's next one takes over, in every table of the zone.
    case.fail(&[NAT_A2]);
    let plan = case.step(0);
    for rtb in PRIVATE_A {
        assert_eq!(case.router(rtb, DEFAULT), Some(ip(NAT_A)), "{rtb}: {:?}", plan.actions);
    }
    assert_eq!(written(&plan), PRIVATE_A.iter().map(|t| t.to_string()).collect());
}

#[test]
fn with_failback_a_zone_returns_to_its_own_router_after_the_hold_down() {
    let mut case = Case::nat();
    case.policy = FailbackPolicy::Preferred { after: AFTER };
    case.step(0);
    case.fail(&[NAT_A]);
    case.step(0);
    let away = case.router(PRIVATE_A[0], DEFAULT).expect("routed");
    assert_ne!(away, ip(NAT_A));
    // Healthy again at 1000 s: zone a waits for the hold-down, then moves back alone.
    case.heal(NAT_A, 1000);
    let plan = case.plan();
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    let waiting = FailbackView { preferred: ip(NAT_A), state: FailbackState::Waiting { at: case.at(1300) } };
    assert_eq!(plan.zone_failback.get(&(cidr(DEFAULT), "az-a".into())), Some(&waiting), "{:?}", plan.zone_failback);
    let on_own = FailbackView { preferred: ip(NAT_B), state: FailbackState::OnPreferred };
    assert_eq!(plan.zone_failback.get(&(cidr(DEFAULT), "az-b".into())), Some(&on_own));
    case.now = Duration::from_secs(1300);
    let plan = case.step(0);
    // The table spanning zones fails back too: to the CIDR's first router, its preferred.
    let back: BTreeSet<String> = [PRIVATE_A[0], PRIVATE_A[1], MIXED].iter().map(|t| t.to_string()).collect();
    assert_eq!(written(&plan), back, "{:?}", plan.actions);
    assert!(plan.actions.iter().all(|a| matches!(a, RouteAction::Replace { reason: ReplaceReason::Failback, .. })));
    assert_eq!(case.router(PRIVATE_A[1], DEFAULT), Some(ip(NAT_A)));
    // Zone b's hold-down is its own: its router fails and recovers, and it fails back at
    // its own time, whatever zone a's last failback was.
    case.fail(&[NAT_B]);
    case.step(0);
    case.heal(NAT_B, 1400);
    case.now = Duration::from_secs(1700);
    let plan = case.step(0);
    assert_eq!(written(&plan), BTreeSet::from([PRIVATE_B.to_string()]), "{:?}", plan.actions);
}

#[test]
fn a_drained_zone_router_hands_its_zone_to_another_healthy_router() {
    let mut case = Case::nat();
    case.step(0);
    case.drained = [ip(NAT_A)].into();
    let plan = case.step(0);
    assert_eq!(written(&plan), PRIVATE_A.iter().map(|t| t.to_string()).collect(), "{:?}", plan.actions);
    assert!(plan.actions.iter().all(|a| matches!(a, RouteAction::Replace { reason: ReplaceReason::Drained, .. })));
    assert_ne!(case.router(PRIVATE_A[0], DEFAULT), Some(ip(NAT_A)));
}

#[test]
fn a_prefix_list_carries_a_group_with_one_router_per_zone() {
    let mut case = Case::nat();
    case.spec(NET, &[NAT_A, NAT_B, NAT_C]);
    case.lists = Some(ListMode { cluster: "test".into(), max_entries: 100, min_members: 2 });
    for seed in 0..4 {
        if case.step(seed).actions.is_empty() {
            break;
        }
    }
    let list = case.state.prefix_lists.first().expect("the group's list").id.clone();
    let on_list = |case: &Case, rtb: &str| {
        let t = case.state.route_tables.iter().find(|t| t.id == rtb).expect("table");
        let r = t.routes.iter().find(|r| r.dest == Some(Dest::List(list.clone()))).expect("list route");
        r.eni_id.clone()
    };
    assert_eq!(on_list(&case, PRIVATE_A[0]).as_deref(), Some(eni_of(NAT_A)));
    assert_eq!(on_list(&case, PRIVATE_B).as_deref(), Some(eni_of(NAT_B)));
    assert_eq!(on_list(&case, PRIVATE_C).as_deref(), Some(eni_of(NAT_C)));
    // One list route per table: a failover of zone b is one write per table of zone b.
    case.fail(&[NAT_B]);
    let plan = case.step(0);
    assert_eq!(plan.actions.len(), 1, "{:?}", plan.actions);
    assert_eq!(plan.actions[0].rtb(), PRIVATE_B);
    assert_eq!(plan.actions[0].dest(), Dest::List(list));
}

/// Generated NAT worlds: random routes in every private table, random health, drains and
/// spec orders, zone affinity on. A plan never routes onto a failed or drained router;
/// once executed, the tables of one zone agree on one router per CIDR and so do the tables
/// without a zone; a route placed or moved in a zone's table goes to the zone's first
/// healthy candidate when there is one (or to the healthy router another table of the zone
/// keeps: no failback by default); and the plan converges in one wave.
#[test]
fn generated_plans_keep_one_router_per_zone_and_never_route_onto_a_bad_one() {
    let nats = [NAT_A, NAT_A2, NAT_B, NAT_C];
    let tables = [PRIVATE_A[0], PRIVATE_A[1], PRIVATE_B, PRIVATE_C, MIXED];
    let zone_of = |nat: Ipv4Addr| match nat.octets()[2] {
        0 => "az-a",
        1 => "az-b",
        _ => "az-c",
    };
    let mut rng = StdRng::seed_from_u64(22);
    let mut seen = (0usize, 0usize);
    for case_no in 0..2000u64 {
        let mut case = Case::nat();
        let mut order: Vec<&str> = nats.iter().copied().filter(|_| rng.random_bool(0.8)).collect();
        order.sort_by_key(|_| rng.random::<u8>());
        case.spec(DEFAULT, &order).spec(NET, &nats);
        for rtb in tables {
            for net in [DEFAULT, NET] {
                match rng.random_range(0..6) {
                    0 => {}
                    k => {
                        case.routed(net, &[rtb], nats[k % nats.len()]);
                    }
                }
            }
        }
        let pick = |rng: &mut StdRng| nats.iter().copied().filter(|_| rng.random_bool(0.25)).collect::<Vec<_>>();
        case.fail(&pick(&mut rng));
        case.questionable = pick(&mut rng).iter().map(|h| ip(h)).collect();
        case.drained = pick(&mut rng).iter().map(|h| ip(h)).collect();
        let plan = case.plan_seeded(case_no);
        let healthy =
            |h: Ipv4Addr| !case.failed.contains(&h) && !case.questionable.contains(&h) && !case.drained.contains(&h);
        for a in &plan.actions {
            if let Some(r) = a.new_router() {
                assert!(!case.failed.contains(&r) && !case.drained.contains(&r), "case {case_no}: {a:?}");
            }
            // Placed or moved in a zone's table: the zone's first healthy candidate, if any.
            let net = a.dest().cidr().expect("network");
            let candidates = &case.spec.iter().find(|(c, _)| *c == net).expect("spec").1;
            let zone = plan.managed.iter().find(|t| t.id == a.rtb()).and_then(|t| t.zone.clone());
            let first_own =
                zone.as_deref().and_then(|z| candidates.iter().copied().find(|&h| zone_of(h) == z && healthy(h)));
            if let (Some(own), Some(r)) = (first_own, a.new_router()) {
                let kept_in_zone =
                    plan.managed.iter().filter(|t| t.zone == zone).any(|t| {
                        case.router(&t.id, &net.to_string()) == Some(r) && candidates.contains(&r) && healthy(r)
                    });
                assert!(r == own || kept_in_zone, "case {case_no}: {a:?} (zone's first healthy: {own})");
                seen.0 += 1;
            }
        }
        let mut after = case.clone();
        after.step(case_no);
        for (net, candidates) in &case.spec {
            let dest = Dest::Cidr(*net);
            let net = net.to_string();
            let mut by_zone: BTreeMap<Option<String>, BTreeSet<Option<Ipv4Addr>>> = BTreeMap::new();
            for t in &plan.managed {
                by_zone.entry(t.zone.clone()).or_default().insert(after.router(&t.id, &net));
            }
            // With a healthy candidate, every table ends on a healthy candidate.
            if candidates.iter().any(|&h| healthy(h)) {
                for t in &plan.managed {
                    let r = after.router(&t.id, &net);
                    assert!(r.is_some_and(healthy), "case {case_no}: {net} in {} on {r:?}: {:?}", t.id, plan.actions);
                }
            }
            let none_available = plan.notices.iter().any(|n| match n {
                Notice::NoAvailableRouter { dest: d } | Notice::StaysOnDrained { dest: d, .. } => *d == dest,
                _ => false,
            });
            for (zone, routers) in &by_zone {
                assert!(routers.len() == 1 || none_available, "case {case_no}: {net} in {zone:?} on {routers:?}");
            }
            seen.1 += usize::from(by_zone.values().flatten().collect::<BTreeSet<_>>().len() > 1);
        }
        let again = after.plan_seeded(case_no + 1);
        let moves: Vec<&RouteAction> = again
            .actions
            .iter()
            .filter(|a| !matches!(a, RouteAction::Replace { reason: ReplaceReason::NotEligible, .. }))
            .collect();
        assert!(moves.is_empty(), "case {case_no}: not converged: {moves:?}\nfirst: {:?}", plan.actions);
    }
    assert!(seen.0 > 1000 && seen.1 > 500, "zone placements checked, CIDRs on several routers: {seen:?}");
}
