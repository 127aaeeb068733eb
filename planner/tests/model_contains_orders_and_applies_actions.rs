//! The VPC model contains CIDRs in both families, orders actions, groups CIDRs and applies
//! acknowledged actions.
//!
//! The model's tests: CIDR containment (both families), action order, groups, and applying
//! acknowledged actions.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vpcrouter_planner::model::{
    Applied, Cidr, DeleteReason, Dest, Family, Group, PrefixList, ReplaceReason, Route, RouteAction, RouteTable,
    RouterTarget, VpcState, Within,
};

fn c(s: &str) -> Cidr {
    Cidr::parse(s).expect("cidr")
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

fn target(ip: &str, eni: &str) -> RouterTarget {
    RouterTarget { ip: ip.parse().expect("ip"), instance_id: format!("i-{ip}"), eni_id: eni.into() }
}

fn none() -> Applied {
    Applied::default()
}

#[test]
fn applied_actions_are_what_ec2_then_reports() {
    let local = Route {
        dest: Some(c("10.0.0.0/16").into()),
        instance_id: None,
        eni_id: None,
        other_target: Some("local".into()),
        blackhole: false,
    };
    let table = RouteTable { id: "rtb-1".into(), routes: vec![local.clone()], ..Default::default() };
    let mut state = VpcState { route_tables: vec![table], ..VpcState::default() };
    let net = Dest::Cidr(c("10.55.0.0/16"));
    let create = RouteAction::Create { rtb: "rtb-1".into(), dest: net.clone(), target: target("10.0.0.5", "eni-5") };
    state.apply(&create, &none());
    let route = |s: &VpcState| s.route_tables[0].routes.iter().find(|r| r.dest.as_ref() == Some(&net)).cloned();
    assert_eq!(route(&state).and_then(|r| r.eni_id), Some("eni-5".into()));
    let old_router = None;
    let replace = RouteAction::Replace {
        rtb: "rtb-1".into(),
        dest: net.clone(),
        target: target("10.0.0.6", ""),
        old_router,
        reason: ReplaceReason::RouterFailed,
    };
    state.apply(&replace, &none());
    let r = route(&state).expect("route");
    assert_eq!(
        (r.instance_id.as_deref(), r.eni_id),
        (Some("i-10.0.0.6"), None),
        "no interface id known: the instance alone"
    );
    let delete = |rtb: &str| RouteAction::Delete {
        rtb: rtb.into(),
        dest: net.clone(),
        old_router: None,
        reason: DeleteReason::NotInSpec,
    };
    state.apply(&delete("rtb-1"), &none());
    assert_eq!(state.route_tables[0].routes, vec![local], "only the local route is left");
    let before = state.clone();
    state.apply(&delete("rtb-2"), &none());
    assert_eq!(state, before, "unknown tables are ignored");
}

#[test]
fn applied_list_actions_are_what_ec2_then_reports() {
    let table = RouteTable { id: "rtb-1".into(), ..Default::default() };
    let mut state = VpcState { route_tables: vec![table], ..VpcState::default() };
    let group = Group {
        key: Group::key_for(Family::V6, &[ip("10.0.0.5")]),
        family: Family::V6,
        hosts: vec![ip("10.0.0.5")],
        members: vec![c("2001:db8:1::/48"), c("2001:db8:2::/48")],
    };
    let create = RouteAction::CreateList { name: group.list_name("blue"), group: group.clone(), max_entries: 10 };
    assert_eq!(create.rtb(), "vpcrouter-blue-ipv6-10.0.0.5");
    assert_eq!(create.dest(), Dest::List("vpcrouter-blue-ipv6-10.0.0.5".into()));
    assert!(!create.is_route());
    state.apply(&create, &none());
    assert_eq!(state.prefix_lists, [], "no id from EC2: nothing to record");
    state.apply(&create, &Applied { list: Some(("pl-1".into(), 1)) });
    let want = PrefixList {
        id: "pl-1".into(),
        name: "vpcrouter-blue-ipv6-10.0.0.5".into(),
        group: "ipv6-10.0.0.5".into(),
        family: Family::V6,
        max_entries: 10,
        version: 1,
        entries: group.members.clone(),
    };
    assert_eq!(state.prefix_lists, std::slice::from_ref(&want));
    assert_eq!(state.prefix_list("pl-1"), Some(&want));
    assert_eq!(state.prefix_list("pl-2"), None);

    let modify = RouteAction::ModifyList {
        id: "pl-1".into(),
        name: want.name.clone(),
        version: 1,
        add: vec![c("2001:db8::/48"), c("2001:db8:2::/48")],
        remove: vec![c("2001:db8:1::/48")],
    };
    assert_eq!(modify.dest(), Dest::List("pl-1".into()));
    state.apply(&modify, &Applied { list: Some(("pl-1".into(), 2)) });
    let list = state.prefix_list("pl-1").expect("list");
    assert_eq!(list.entries, [c("2001:db8::/48"), c("2001:db8:2::/48")], "sorted, no duplicates");
    assert_eq!(list.version, 2);

    let to_list = Dest::List("pl-1".into());
    state.apply(
        &RouteAction::Create { rtb: "rtb-1".into(), dest: to_list.clone(), target: target("10.0.0.5", "eni-5") },
        &none(),
    );
    assert_eq!(state.route_tables[0].routes[0].dest, Some(to_list.clone()));
    assert_eq!(state.route_tables[0].routes[0].eni_id.as_deref(), Some("eni-5"));
    let delete = RouteAction::DeleteList { id: "pl-1".into(), name: want.name.clone() };
    assert_eq!((delete.rtb(), delete.dest(), delete.is_route()), (want.name.as_str(), to_list, false));
    state.apply(&delete, &none());
    assert_eq!(state.prefix_lists, []);
}

#[test]
fn outages_go_first_and_deletes_last() {
    let t = || target("10.0.0.5", "eni-5");
    let replace = |reason| RouteAction::Replace {
        rtb: "r".into(),
        dest: c("10.1.0.0/16").into(),
        target: t(),
        old_router: None,
        reason,
    };
    let create = RouteAction::Create { rtb: "r".into(), dest: c("10.2.0.0/16").into(), target: t() };
    let delete = RouteAction::Delete {
        rtb: "r".into(),
        dest: c("10.3.0.0/16").into(),
        old_router: None,
        reason: DeleteReason::NotInSpec,
    };
    let group = Group { key: "ipv4-10.0.0.5".into(), family: Family::V4, hosts: vec![ip("10.0.0.5")], members: vec![] };
    let create_list = RouteAction::CreateList { name: "l".into(), group, max_entries: 8 };
    let modify_list =
        RouteAction::ModifyList { id: "pl-1".into(), name: "l".into(), version: 1, add: vec![], remove: vec![] };
    let delete_list = RouteAction::DeleteList { id: "pl-1".into(), name: "l".into() };
    let order: Vec<u8> = [
        replace(ReplaceReason::RouterFailed),
        create,
        create_list,
        modify_list,
        replace(ReplaceReason::RouterQuestionable),
        replace(ReplaceReason::NotEligible),
        delete,
        delete_list,
    ]
    .iter()
    .map(RouteAction::priority)
    .collect();
    assert_eq!(order, vec![0, 1, 1, 1, 2, 2, 3, 3]);
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

#[test]
fn is_within_for_ipv6_and_across_families() {
    assert!(c("2001:db8:1::/48").is_within(c("2001:db8::/32")));
    assert!(c("2001:db8::/32").is_within(c("2001:db8::/32")));
    assert!(!c("2001:db8::/32").is_within(c("2001:db8:1::/48")));
    assert!(!c("2001:db9::/32").is_within(c("2001:db8::/32")));
    assert!(c("::/0").is_within(c("::/0")));
    assert!(!c("2001:db8::/32").is_within(c("::/0")), "the IPv6 default route protects only itself");
    assert!(!c("::/0").is_within(c("2001:db8::/32")));
    // The families never mix, whatever the bits.
    for (a, b) in [
        ("0.0.0.0/0", "::/0"),
        ("::/0", "0.0.0.0/0"),
        ("10.0.0.0/8", "::/0"),
        ("10.0.0.0/8", "a00::/8"),
        ("a00::/8", "10.0.0.0/8"),
        ("10.0.0.0/8", "::a00:0/104"),
        ("::a00:0/104", "10.0.0.0/8"),
        ("10.0.0.0/8", "::ffff:10.0.0.0/104"),
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
        ("10.1.0.0/16", "::/8"),
    ] {
        assert!(!c(a).is_within(c(b)), "{a} within {b}");
        assert_ne!(c(a), c(b));
    }
    assert!(c("::a00:0/104").is_within(c("::/8")), "an IPv4-compatible IPv6 network is an IPv6 network");
}

/// An independent statement of the rule: same family, and either both default routes or
/// a longer-or-equal prefix whose first `other.prefix` bits match.
fn within_by_bits(a: Cidr, b: Cidr) -> bool {
    let bits = |x: Cidr| match x.ip() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
        IpAddr::V6(v6) => u128::from(v6),
    };
    if a.family() != b.family() {
        return false;
    }
    if b.prefix() == 0 {
        return a.prefix() == 0;
    }
    let mask = u128::MAX << (128 - u32::from(b.prefix()));
    a.prefix() >= b.prefix() && bits(a) & mask == bits(b)
}

fn random_cidr(rng: &mut StdRng) -> Cidr {
    // Few distinct networks, so that containment happens often.
    let top = [0x0a00_0000u32, 0x0a01_0000, 0x0b00_0000, 0][rng.random_range(0..4)];
    if rng.random_bool(0.5) {
        let prefix = [0, 7, 8, 15, 16, 24, 32][rng.random_range(0..7)];
        let addr = (top | rng.random_range(0..4u32) << 8) & if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        Cidr::new(IpAddr::V4(Ipv4Addr::from(addr)), prefix).expect("canonical")
    } else {
        // The same bits as an IPv6 network, or IPv4-compatible, or 2001:db8::.
        let high = match rng.random_range(0..3) {
            0 => u128::from(top) << 96,
            1 => u128::from(top),
            _ => 0x2001_0db8u128 << 96 | u128::from(top) << 64,
        };
        let prefix = [0, 7, 8, 32, 48, 96, 104, 128][rng.random_range(0..8)];
        let addr = high & if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix)) };
        Cidr::new(IpAddr::V6(Ipv6Addr::from(addr)), prefix).expect("canonical")
    }
}

#[test]
fn is_within_holds_its_rule_over_generated_pairs_of_both_families() {
    let mut rng = StdRng::seed_from_u64(14);
    let (mut within, mut across) = (0, 0);
    for _ in 0..20_000 {
        let (a, b) = (random_cidr(&mut rng), random_cidr(&mut rng));
        let got = a.is_within(b);
        assert_eq!(got, within_by_bits(a, b), "{a} within {b}");
        if got {
            within += 1;
            assert_eq!(a.family(), b.family(), "{a} within {b}");
            assert!(b.prefix() > 0 || a == b, "{a} within the default route {b}");
            if a != b {
                assert!(!b.is_within(a), "{a} and {b} within each other");
            }
        }
        across += usize::from(a.family() != b.family() && a.prefix() == b.prefix());
    }
    assert!(within > 1000 && across > 500, "the generator exercises both: {within} within, {across} across");
}

#[test]
fn destinations_show_and_compare_by_value() {
    let v4 = Dest::from(c("10.0.0.0/8"));
    let v6 = Dest::from(c("a00::/8"));
    assert_ne!(v4, v6);
    assert_eq!((v4.to_string(), v6.to_string()), ("10.0.0.0/8".into(), "a00::/8".into()));
    assert_eq!(v4.cidr(), Some(c("10.0.0.0/8")));
    let list = Dest::List("pl-0123".into());
    assert_eq!((list.to_string(), list.cidr()), ("pl-0123".into(), None));
    assert!(v4 < v6 && v6 < list, "networks (IPv4 first) before lists");
}

#[test]
fn group_keys_name_the_family_and_routers_and_stay_short() {
    let hosts = [ip("10.0.1.1"), ip("10.0.2.2")];
    assert_eq!(Group::key_for(Family::V4, &hosts), "ipv4-10.0.1.1-10.0.2.2");
    assert_eq!(Group::key_for(Family::V6, &hosts), "ipv6-10.0.1.1-10.0.2.2");
    let many: Vec<Ipv4Addr> = (0..20u32).map(|i| Ipv4Addr::from(0x0a00_0100 + i)).collect();
    let long = Group::key_for(Family::V4, &many);
    assert!(long.starts_with("ipv4-20routers-") && long.len() == "ipv4-20routers-".len() + 16, "{long}");
    assert_eq!(long, Group::key_for(Family::V4, &many), "stable");
    assert_ne!(long, Group::key_for(Family::V4, &many[1..]));
    let mut other = many.clone();
    other[19] = ip("10.0.9.9");
    assert_ne!(long, Group::key_for(Family::V4, &other), "every router counts");
    assert_ne!(&long[4..], &Group::key_for(Family::V6, &many)[4..], "the family is hashed too");
    let group = Group { key: "ipv4-10.0.1.1".into(), family: Family::V4, hosts: vec![ip("10.0.1.1")], members: vec![] };
    assert_eq!(group.list_name("prod"), "vpcrouter-prod-ipv4-10.0.1.1");
}

#[test]
fn new_lists_have_room_to_grow() {
    let group = |n: u32| Group {
        key: "k".into(),
        family: Family::V4,
        hosts: vec![],
        members: (0..n)
            .map(|i| Cidr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i << 8))), 24).expect("net"))
            .collect(),
    };
    let sized: Vec<u32> = [0, 1, 10, 16, 17, 100, 900].iter().map(|&n| group(n).sized(1000)).collect();
    assert_eq!(sized, [8, 9, 18, 24, 25, 125, 1000]);
    assert_eq!(group(500).sized(1000), 625, "a quarter more");
    assert_eq!(group(10).sized(12), 12, "within the limit");
}
