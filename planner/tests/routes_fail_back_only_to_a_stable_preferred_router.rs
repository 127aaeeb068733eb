//! With `--failback preferred` a route moves back to its CIDR's preferred router only once that
//! router has been healthy for the hold-down; flapping routers never drag traffic back and forth.
//!
//! `--failback preferred` in the planner, through its public API: when a route moves back to
//! its CIDR's preferred router (the first candidate, in the spec's order), the hysteresis
//! that keeps a flapping router from dragging traffic back and forth, the hold-down
//! between two failbacks, the reasons logged, the state `/status` shows, and how the
//! policy places new routes and routes leaving a bad router.

#[path = "support/clocked.rs"]
mod clocked;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use clocked::Case;
use vpcrouter_planner::model::{
    Applied, Cidr, Dest, Eni, FailbackState, FailbackView, Instance, Notice, Plan, ReplaceReason, Route, RouteAction,
    RouteTable, RouterTarget, VpcState,
};
use vpcrouter_planner::plan::{Failback, FailbackPolicy, ListMode};

// Routers: A in sn-a (rtb-a), B and C in sn-b (rtb-b); C also owns C2 (a secondary IP).
const A: &str = "10.0.1.1";
const B: &str = "10.0.2.2";
const C: &str = "10.0.2.3";
const C2: &str = "10.0.2.33";
const NOT_IN_VPC: &str = "192.168.7.7";
const NET: &str = "10.9.0.0/16";
const NET2: &str = "10.8.0.0/16";
const TABLES: [&str; 2] = ["rtb-a", "rtb-b"];
const SEEDS: std::ops::Range<u64> = 0..32;
/// `--failback-after` of these tests.
const AFTER: Duration = Duration::from_secs(300);

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test IP")
}

fn cidr(s: &str) -> Cidr {
    Cidr::parse(s).expect("test CIDR")
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn eni(id: &str, subnet: &str, ips: &[&str]) -> Eni {
    let private_ips = ips.iter().map(|h| ip(h)).collect();
    Eni { id: id.into(), subnet_id: subnet.into(), private_ips, device_index: 0, source_dest_check: Some(false) }
}

fn vpc() -> VpcState {
    let table = |id: &str, subnet: &str| RouteTable {
        id: id.into(),
        main: false,
        subnets: vec![subnet.into()],
        routes: vec![Route {
            dest: Some(Dest::Cidr(cidr("10.0.0.0/16"))),
            instance_id: None,
            eni_id: None,
            other_target: Some("local".into()),
            blackhole: false,
        }],
        ..Default::default()
    };
    VpcState {
        vpc_id: "vpc-1".into(),
        subnets: vec!["sn-a".into(), "sn-b".into()],
        route_tables: vec![table("rtb-a", "sn-a"), table("rtb-b", "sn-b")],
        instances: vec![
            Instance { id: "i-a".into(), enis: vec![eni("eni-a", "sn-a", &[A])] },
            Instance { id: "i-b".into(), enis: vec![eni("eni-b", "sn-b", &[B])] },
            Instance { id: "i-c".into(), enis: vec![eni("eni-c", "sn-b", &[C, C2])] },
        ],
        ..Default::default()
    }
}

fn target(host: &str) -> RouterTarget {
    support::target_in(&vpc(), ip(host))
}

/// The route of `dest` in `rtb`, on `host`'s interface (as EC2 reports it).
fn on(state: &mut VpcState, rtb: &str, dest: Dest, host: &str) {
    let action = RouteAction::Create { rtb: rtb.into(), dest, target: target(host) };
    state.apply(&action, &Applied::default());
}

fn failback_to(rtb: &str, net: &str, to: &str, from: &str) -> RouteAction {
    replace(rtb, net, to, from, ReplaceReason::Failback)
}

fn replace(rtb: &str, net: &str, to: &str, from: &str, reason: ReplaceReason) -> RouteAction {
    RouteAction::Replace {
        rtb: rtb.into(),
        dest: Dest::Cidr(cidr(net)),
        target: target(to),
        old_router: Some(ip(from)),
        reason,
    }
}

impl Case {
    /// The spec `NET: [A, B, C]`, every router healthy since t0, the clock at t0 + 1000 s,
    /// `--failback preferred` with [`AFTER`].
    fn new_preferred() -> Case {
        let mut case = Case::new(vpc(), &[A, B, C, C2]);
        case.policy = FailbackPolicy::Preferred { after: AFTER };
        case.spec(NET, &[A, B, C]);
        case
    }

    /// Points `net`'s route in `rtb` at `host`.
    fn route(&mut self, rtb: &str, net: &str, host: &str) -> &mut Case {
        on(&mut self.state, rtb, Dest::Cidr(cidr(net)), host);
        self
    }

    /// Points `net`'s route in both tables at `host`.
    fn routed(&mut self, net: &str, host: &str) -> &mut Case {
        for rtb in TABLES {
            self.route(rtb, net, host);
        }
        self
    }

    /// `host` has been healthy since `seconds` after t0.
    fn healthy_since(&mut self, host: &str, seconds: u64) -> &mut Case {
        let at = self.at(seconds);
        self.healthy_since.insert(ip(host), at);
        self
    }

    /// `host` is failed now (and so not healthy since any time).
    fn fail(&mut self, host: &str) -> &mut Case {
        self.failed.insert(ip(host));
        self.healthy_since.remove(&ip(host));
        self
    }

    /// `host` is healthy again from now.
    fn heal(&mut self, host: &str) -> &mut Case {
        self.failed.remove(&ip(host));
        self.questionable.remove(&ip(host));
        let now = self.at(self.now.as_secs());
        self.healthy_since.insert(ip(host), now);
        self
    }

    fn clock(&mut self, seconds: u64) -> &mut Case {
        self.now = secs(seconds);
        self
    }

    /// The router of `net` in each table.
    fn routers(&self, net: &str) -> Vec<Option<Ipv4Addr>> {
        let dest = Dest::Cidr(cidr(net));
        TABLES
            .iter()
            .map(|rtb| {
                let table = self.state.route_tables.iter().find(|t| t.id == *rtb)?;
                let route = table.routes.iter().find(|r| r.dest.as_ref() == Some(&dest))?;
                let eni = route.eni_id.as_deref()?;
                let owner = self.state.instances.iter().flat_map(|i| &i.enis).find(|e| e.id == eni)?;
                owner.private_ips.first().copied()
            })
            .collect()
    }
}

fn view(preferred: &str, state: FailbackState) -> FailbackView {
    FailbackView { preferred: ip(preferred), state }
}

fn failback_of(plan: &Plan, net: &str) -> Option<FailbackView> {
    plan.failback.get(&cidr(net)).copied()
}

// ---- the decision

#[test]
fn never_moves_back_by_default() {
    let mut case = Case::new_preferred();
    case.routed(NET, B).policy = FailbackPolicy::Never;
    let plan = case.plan();
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert!(plan.failback.is_empty(), "no failback state without the policy: {:?}", plan.failback);
}

#[test]
fn a_route_moves_back_in_every_table_once_the_preferred_router_qualifies() {
    let mut case = Case::new_preferred();
    case.routed(NET, B);
    let plan = case.plan();
    assert_eq!(plan.actions, vec![failback_to("rtb-a", NET, A, B), failback_to("rtb-b", NET, A, B)]);
    assert_eq!(failback_of(&plan, NET), Some(view(A, FailbackState::FailingBack)));
    assert_eq!(ReplaceReason::Failback.to_string(), "failback to preferred router");
    assert!(plan.notices.is_empty(), "{:?}", plan.notices);
}

#[test]
fn the_preferred_router_must_have_been_healthy_for_the_whole_hold_down() {
    // Healthy since 701 s, the clock at 1000 s: 299 s, one short.
    let mut case = Case::new_preferred();
    case.routed(NET, B).healthy_since(A, 701);
    let plan = case.plan();
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert_eq!(failback_of(&plan, NET), Some(view(A, FailbackState::Waiting { at: case.at(1001) })));
    // Exactly the hold-down: it qualifies.
    case.clock(1001);
    assert_eq!(case.plan().actions, vec![failback_to("rtb-a", NET, A, B), failback_to("rtb-b", NET, A, B)]);
}

#[test]
fn a_preferred_router_that_is_not_healthy_gets_nothing_back() {
    type Break = fn(&mut Case);
    let cases: [(&str, Break); 5] = [
        ("failed", |c| {
            c.fail(A);
        }),
        ("questionable", |c| {
            c.questionable.insert(ip(A));
        }),
        ("failed and healthy-since left behind", |c| {
            c.failed.insert(ip(A));
        }),
        ("never reported healthy", |c| {
            c.healthy_since.remove(&ip(A));
        }),
        ("drained", |c| {
            c.drained.insert(ip(A));
        }),
    ];
    for (what, make) in cases {
        let mut case = Case::new_preferred();
        case.routed(NET, B);
        make(&mut case);
        let plan = case.plan();
        assert!(plan.actions.is_empty(), "{what}: {:?}", plan.actions);
        assert_eq!(failback_of(&plan, NET), Some(view(A, FailbackState::Unavailable)), "{what}");
    }
}

#[test]
fn a_preferred_router_outside_the_vpc_gets_nothing() {
    let mut case = Case::new_preferred();
    case.spec(NET, &[NOT_IN_VPC, A, B]).routed(NET, B).healthy_since(NOT_IN_VPC, 0);
    let plan = case.plan();
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert!(plan.notices.contains(&Notice::HostNotInVpc { host: ip(NOT_IN_VPC) }), "{:?}", plan.notices);
    assert_eq!(failback_of(&plan, NET), Some(view(NOT_IN_VPC, FailbackState::Unavailable)));
}

#[test]
fn at_most_one_failback_per_hold_down() {
    // Failed back at 900 s; the route left A since without A failing (another tool moved
    // it): it stays until 1200 s.
    let mut case = Case::new_preferred();
    case.routed(NET, B);
    case.last_failback.insert((Dest::Cidr(cidr(NET)), ip(A)), case.at(900));
    let plan = case.plan();
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert_eq!(failback_of(&plan, NET), Some(view(A, FailbackState::Waiting { at: case.at(1200) })));
    case.clock(1199);
    assert!(case.plan().actions.is_empty());
    case.clock(1200);
    assert_eq!(case.plan().actions.len(), 2);
    // The hold-down is per destination: another CIDR is not held.
    case.clock(1000).spec(NET2, &[A, B]).routed(NET2, B);
    let plan = case.plan();
    assert_eq!(plan.actions, vec![failback_to("rtb-a", NET2, A, B), failback_to("rtb-b", NET2, A, B)]);
    assert_eq!(failback_of(&plan, NET), Some(view(A, FailbackState::Waiting { at: case.at(1200) })));
}

#[test]
fn a_route_on_the_preferred_router_stays() {
    let mut case = Case::new_preferred();
    case.routed(NET, A);
    let plan = case.plan();
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert_eq!(failback_of(&plan, NET), Some(view(A, FailbackState::OnPreferred)));
    // A secondary IP of the current router's interface, listed first, is the router too.
    let mut case = Case::new_preferred();
    case.spec(NET, &[C2, B, C]).routed(NET, C);
    let plan = case.plan();
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert_eq!(failback_of(&plan, NET), Some(view(C2, FailbackState::OnPreferred)));
}

#[test]
fn the_written_order_names_the_preferred_router() {
    let mut case = Case::new_preferred();
    case.spec(NET, &[B, A, C]).routed(NET, A);
    let plan = case.plan();
    assert_eq!(plan.actions, vec![failback_to("rtb-a", NET, B, A), failback_to("rtb-b", NET, B, A)]);
    assert_eq!(failback_of(&plan, NET), Some(view(B, FailbackState::FailingBack)));
}

#[test]
fn a_table_on_a_failed_router_moves_with_the_failback_and_says_so() {
    let mut case = Case::new_preferred();
    case.route("rtb-a", NET, B).route("rtb-b", NET, C).fail(C);
    let plan = case.plan();
    assert_eq!(
        plan.actions,
        vec![replace("rtb-b", NET, A, C, ReplaceReason::RouterFailed), failback_to("rtb-a", NET, A, B)],
        "the outage first, then the failback"
    );
    // Another healthy router in the second table: it follows the failback (one router
    // per CIDR), with the failback's reason.
    let mut case = Case::new_preferred();
    case.route("rtb-a", NET, B).route("rtb-b", NET, C);
    assert_eq!(case.plan().actions, vec![failback_to("rtb-a", NET, A, B), failback_to("rtb-b", NET, A, C)]);
}

#[test]
fn failback_policy_places_new_routes_on_a_healthy_preferred_router() {
    // No route yet: the preferred router takes it when healthy, even before it qualified
    // for a failback (nothing moves), for every seed.
    for seed in SEEDS {
        let mut case = Case::new_preferred();
        case.healthy_since(A, 999);
        let plan = case.plan_seeded(seed);
        let routers: BTreeSet<Option<Ipv4Addr>> = plan.actions.iter().map(RouteAction::new_router).collect();
        assert_eq!(routers, BTreeSet::from([Some(ip(A))]), "seed {seed}: {:?}", plan.actions);
        assert_eq!(failback_of(&plan, NET), Some(view(A, FailbackState::OnPreferred)));
    }
    // Preferred router failed: the others, at random as vpc-router does.
    let picks: BTreeSet<Option<Ipv4Addr>> = SEEDS
        .map(|seed| {
            let mut case = Case::new_preferred();
            case.fail(A);
            case.plan_seeded(seed).actions[0].new_router()
        })
        .collect();
    assert_eq!(picks, BTreeSet::from([Some(ip(B)), Some(ip(C))]));
    // Without the policy: any candidate.
    let picks: BTreeSet<Option<Ipv4Addr>> = SEEDS
        .map(|seed| {
            let mut case = Case::new_preferred();
            case.policy = FailbackPolicy::Never;
            case.plan_seeded(seed).actions[0].new_router()
        })
        .collect();
    assert_eq!(picks.len(), 3, "{picks:?}");
}

#[test]
fn a_failover_goes_to_the_preferred_router_only_when_it_qualifies() {
    // C fails; A qualifies: the route goes straight to A (no second move later).
    for seed in SEEDS {
        let mut case = Case::new_preferred();
        case.routed(NET, C).fail(C);
        let plan = case.plan_seeded(seed);
        assert_eq!(
            plan.actions,
            vec![
                replace("rtb-a", NET, A, C, ReplaceReason::RouterFailed),
                replace("rtb-b", NET, A, C, ReplaceReason::RouterFailed)
            ],
            "seed {seed}"
        );
        assert_eq!(failback_of(&plan, NET), Some(view(A, FailbackState::OnPreferred)));
    }
    // A healthy for a moment only: vpc-router's random choice among the healthy ones.
    let picks: BTreeSet<Option<Ipv4Addr>> = SEEDS
        .map(|seed| {
            let mut case = Case::new_preferred();
            case.routed(NET, C).fail(C).healthy_since(A, 990);
            case.plan_seeded(seed).actions[0].new_router()
        })
        .collect();
    assert_eq!(picks, BTreeSet::from([Some(ip(A)), Some(ip(B))]));
}

#[test]
fn no_candidate_left_reports_the_preferred_router_unavailable() {
    let mut case = Case::new_preferred();
    case.routed(NET, B).fail(A).fail(B).fail(C);
    let plan = case.plan();
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert!(plan.notices.contains(&Notice::NoAvailableRouter { dest: Dest::Cidr(cidr(NET)) }));
    assert_eq!(failback_of(&plan, NET), Some(view(A, FailbackState::Unavailable)));
}

#[test]
fn possible_at_is_the_later_of_the_healthy_period_and_the_hold_down() {
    let t0 = Instant::now();
    let healthy_since = BTreeMap::from([(ip(A), t0 + secs(100))]);
    let dest = Dest::Cidr(cidr(NET));
    let mut last_failback = BTreeMap::new();
    let fb = |last: &BTreeMap<(Dest, Ipv4Addr), Instant>, after| {
        Failback { after: secs(after), now: t0, healthy_since: &healthy_since, last_failback: last }
            .possible_at(ip(A), &dest)
    };
    assert_eq!(fb(&last_failback, 300), Some(t0 + secs(400)));
    assert_eq!(
        Failback { after: AFTER, now: t0, healthy_since: &healthy_since, last_failback: &last_failback }
            .possible_at(ip(B), &dest),
        None,
        "B is not healthy"
    );
    last_failback.insert((dest.clone(), ip(A)), t0 + secs(50));
    assert_eq!(fb(&last_failback, 300), Some(t0 + secs(400)), "the healthy period ends later");
    last_failback.insert((dest.clone(), ip(B)), t0 + secs(150));
    assert_eq!(fb(&last_failback, 300), Some(t0 + secs(400)), "a failback to another router does not hold A down");
    last_failback.insert((dest.clone(), ip(A)), t0 + secs(150));
    assert_eq!(fb(&last_failback, 300), Some(t0 + secs(450)), "the hold-down ends later");
    assert_eq!(FailbackPolicy::Never.after(), None);
    assert_eq!(FailbackPolicy::Preferred { after: AFTER }.after(), Some(AFTER));
    assert_eq!(
        (FailbackPolicy::Never.name(), FailbackPolicy::Preferred { after: AFTER }.name()),
        ("never", "preferred")
    );
}

// ---- hysteresis over time

#[test]
fn a_flapping_preferred_router_never_gets_the_route_back_until_it_is_stable() {
    // after = 300 s. A fails at 1000 s: the route moves to B or C. Then A flaps: healthy
    // for 200 s, failed for 20 s, ten times. Plans every 10 s never move the route back;
    // once A stays healthy, the route moves back exactly once, 300 s after its last
    // recovery, and stays.
    for seed in 0..8 {
        let mut case = Case::new_preferred();
        case.routed(NET, A);
        case.fail(A);
        let failover = case.step(seed);
        assert!(failover
            .actions
            .iter()
            .all(|a| matches!(a, RouteAction::Replace { reason: ReplaceReason::RouterFailed, .. })));
        let away = case.routers(NET)[0];
        assert!(away.is_some() && away != Some(ip(A)), "{away:?}");
        let mut t = 1000;
        let mut last_recovery = 0;
        for _flap in 0..10 {
            case.clock(t).heal(A);
            last_recovery = t;
            for _ in 0..20 {
                t += 10;
                let plan = case.clock(t).step(seed);
                assert!(plan.actions.is_empty(), "t = {t}: {:?}", plan.actions);
                assert_eq!(case.routers(NET), vec![away; 2], "t = {t}");
            }
            case.fail(A);
            t += 20;
            assert!(case.clock(t).step(seed).actions.is_empty());
        }
        case.clock(t).heal(A);
        last_recovery = last_recovery.max(t);
        let mut moves = Vec::new();
        for _ in 0..100 {
            t += 10;
            let plan = case.clock(t).step(seed);
            if !plan.actions.is_empty() {
                moves.push((t, plan.actions));
            }
        }
        assert_eq!(moves.len(), 1, "one failback: {moves:?}");
        let (when, actions) = &moves[0];
        assert_eq!(*when, last_recovery + 300, "300 s after the last recovery");
        assert!(actions.iter().all(|a| matches!(a, RouteAction::Replace { reason: ReplaceReason::Failback, .. })));
        assert_eq!(case.routers(NET), vec![Some(ip(A)); 2]);
    }
}

#[test]
fn a_route_moved_away_again_waits_for_the_hold_down() {
    // Failback at 1000 s; another tool moves the route to B at 1010 s (A stays healthy):
    // vpcrouter leaves it there until 1300 s, then moves it back once.
    let mut case = Case::new_preferred();
    case.routed(NET, B);
    assert_eq!(case.step(0).actions.len(), 2);
    case.routed(NET, B);
    let mut moves = Vec::new();
    for t in (1010..=1600).step_by(10) {
        if !case.clock(t).step(0).actions.is_empty() {
            moves.push(t);
        }
    }
    assert_eq!(moves, vec![1300]);
}

// ---- prefix-list mode

#[test]
fn groups_split_by_preferred_router_only_with_failback() {
    let mut case = Case::new_preferred();
    case.spec(NET, &[A, B]).spec(NET2, &[B, A]);
    case.lists = Some(ListMode { cluster: "test".into(), max_entries: 10, min_members: 1 });
    case.policy = FailbackPolicy::Never;
    let keys = |plan: &Plan| plan.groups.iter().map(|(g, _)| (g.key.clone(), g.hosts.clone())).collect::<Vec<_>>();
    // Never: one group, its key and hosts sorted as before the order was kept.
    let plan = case.plan();
    assert_eq!(keys(&plan), vec![(format!("ipv4-{A}-{B}"), vec![ip(A), ip(B)])]);
    // Preferred: one group per preferred router, preferred first.
    case.policy = FailbackPolicy::Preferred { after: AFTER };
    let plan = case.plan();
    assert_eq!(
        keys(&plan),
        vec![(format!("ipv4-{A}-{B}"), vec![ip(A), ip(B)]), (format!("ipv4-{B}-{A}"), vec![ip(B), ip(A)])]
    );
    // The rest of the list stays sorted in the key: [A, C, B] and [A, B, C] share a group.
    case.spec(NET, &[A, C, B]).spec(NET2, &[A, B, C]);
    let plan = case.plan();
    assert_eq!(keys(&plan), vec![(format!("ipv4-{A}-{B}-{C}"), vec![ip(A), ip(B), ip(C)])]);
}

#[test]
fn a_group_list_route_fails_back_as_one() {
    let mut case = Case::new_preferred();
    case.spec(NET, &[A, B]).spec(NET2, &[A, B]);
    case.lists = Some(ListMode { cluster: "test".into(), max_entries: 10, min_members: 1 });
    case.fail(A);
    // Converge on B with A failed: list made, list routes to B.
    for _ in 0..6 {
        case.step(0);
    }
    let list = case.state.prefix_lists.first().expect("the group's list").id.clone();
    let list_dest = Dest::List(list.clone());
    let on_list = |case: &Case| {
        case.state
            .route_tables
            .iter()
            .map(|t| t.routes.iter().find(|r| r.dest.as_ref() == Some(&list_dest)).and_then(|r| r.eni_id.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(on_list(&case), vec![Some("eni-b".to_string()); 2]);
    case.clock(1000).heal(A);
    case.clock(1299);
    let plan = case.step(0);
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert_eq!(failback_of(&plan, NET), Some(view(A, FailbackState::Waiting { at: case.at(1300) })));
    assert_eq!(failback_of(&plan, NET2), failback_of(&plan, NET));
    let plan = case.clock(1300).step(0);
    assert_eq!(plan.actions.len(), 2, "{:?}", plan.actions);
    for a in &plan.actions {
        assert!(
            matches!(a, RouteAction::Replace { dest: Dest::List(id), reason: ReplaceReason::Failback, .. } if *id == list),
            "{a:?}"
        );
    }
    assert_eq!(on_list(&case), vec![Some("eni-a".to_string()); 2]);
    assert_eq!(case.last_failback.get(&(Dest::List(list), ip(A))), Some(&case.at(1300)));
}
