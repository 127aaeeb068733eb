//! The model's tests: CIDR containment, action order, and applying acknowledged actions.

use vpcrouter_planner::model::{Cidr, ReplaceReason, Route, RouteAction, RouteTable, RouterTarget, VpcState};

fn c(s: &str) -> Cidr {
    Cidr::parse(s).expect("cidr")
}

fn target(ip: &str, eni: &str) -> RouterTarget {
    RouterTarget { ip: ip.parse().expect("ip"), instance_id: format!("i-{ip}"), eni_id: eni.into() }
}

#[test]
fn applied_actions_are_what_ec2_then_reports() {
    let local = Route {
        destination: Some("10.0.0.0/16".into()),
        instance_id: None,
        eni_id: None,
        other_target: Some("local".into()),
    };
    let table = RouteTable { id: "rtb-1".into(), main: false, subnets: vec![], routes: vec![local.clone()] };
    let mut state = VpcState { route_tables: vec![table], ..VpcState::default() };
    let net = c("10.55.0.0/16");
    state.apply(&RouteAction::Create { rtb: "rtb-1".into(), cidr: net, target: target("10.0.0.5", "eni-5") });
    let route = |s: &VpcState| {
        s.route_tables[0].routes.iter().find(|r| r.destination.as_deref() == Some("10.55.0.0/16")).cloned()
    };
    assert_eq!(route(&state).and_then(|r| r.eni_id), Some("eni-5".into()));
    let old_router = None;
    let replace = RouteAction::Replace {
        rtb: "rtb-1".into(),
        cidr: net,
        target: target("10.0.0.6", ""),
        old_router,
        reason: ReplaceReason::RouterFailed,
    };
    state.apply(&replace);
    let r = route(&state).expect("route");
    assert_eq!(
        (r.instance_id.as_deref(), r.eni_id),
        (Some("i-10.0.0.6"), None),
        "no interface id known: the instance alone"
    );
    state.apply(&RouteAction::Delete { rtb: "rtb-1".into(), cidr: net, old_router: None });
    assert_eq!(state.route_tables[0].routes, vec![local], "only the local route is left");
    let before = state.clone();
    state.apply(&RouteAction::Delete { rtb: "rtb-2".into(), cidr: net, old_router: None });
    assert_eq!(state, before, "unknown tables are ignored");
}

#[test]
fn outages_go_first_and_deletes_last() {
    let t = || target("10.0.0.5", "eni-5");
    let replace = |reason| RouteAction::Replace {
        rtb: "r".into(),
        cidr: c("10.1.0.0/16"),
        target: t(),
        old_router: None,
        reason,
    };
    let create = RouteAction::Create { rtb: "r".into(), cidr: c("10.2.0.0/16"), target: t() };
    let delete = RouteAction::Delete { rtb: "r".into(), cidr: c("10.3.0.0/16"), old_router: None };
    let order: Vec<u8> = [
        replace(ReplaceReason::RouterFailed),
        create,
        replace(ReplaceReason::RouterQuestionable),
        replace(ReplaceReason::NotEligible),
        delete,
    ]
    .iter()
    .map(RouteAction::priority)
    .collect();
    assert_eq!(order, vec![0, 1, 2, 2, 3]);
}

/// vpc-router's `test_cidr_in_cidr`, case by case.
#[test]
fn is_within_matches_the_original() {
    assert!(c("10.1.1.0/24").is_within(c("10.1.0.0/16")));
    assert!(c("10.1.0.0/16").is_within(c("10.1.0.0/16")));
    assert!(!c("10.1.0.0/16").is_within(c("10.1.1.0/24")));
    assert!(!c("10.2.1.0/24").is_within(c("10.1.0.0/16")));
    assert!(!c("10.2.1.0/24").is_within(c("0.0.0.0/0")), "the default route protects only itself");
    assert!(!c("0.0.0.0/0").is_within(c("10.0.0.0/8")));
    assert!(c("0.0.0.0/0").is_within(c("0.0.0.0/0")));
    assert!(c("10.1.2.3/32").is_within(c("10.1.2.3/32")));
    assert!(c("10.1.2.3/32").is_within(c("10.0.0.0/8")));
    assert!(c("11.0.0.0/8").is_within(c("10.0.0.0/7")));
    assert_eq!(c("10.55.0.0/16").to_string(), "10.55.0.0/16");
    assert!(Cidr::parse("10.55.0.1/16").is_err());
}
