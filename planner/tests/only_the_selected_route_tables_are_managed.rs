//! A plan manages exactly the selected route tables, gateway route tables within AWS's rules,
//! and names routers that cannot forward.
//!
//! Which route tables a plan manages (`--route-tables`, `--route-table-tag`, or vpc-router's
//! rule), gateway route tables within AWS's rules for them, and the notices about routers
//! that cannot forward.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use rand::rngs::StdRng;
use rand::SeedableRng;
use vpcrouter_planner::model::{
    Applied, Cidr, Dest, Eni, Instance, Notice, Plan, ReplaceReason, Route, RouteAction, RouteTable, Subnet,
    TableSelection, VpcState,
};
use vpcrouter_planner::plan::{managed_tables, plan, ListMode, PlanInput};

const R1: &str = "10.0.1.10"; // i-1 / eni-1, subnet sn-1 (table rtb-1)
const R2: &str = "10.0.2.10"; // i-2 / eni-2, subnet sn-2 (table rtb-2)
/// A subnet's CIDR (sn-3, served by rtb-3): a gateway route table may route it.
const SUBNET3: &str = "10.0.3.0/24";
const VPC_CIDR: &str = "10.0.0.0/16";
/// Outside the VPC: a gateway route table may not route it.
const OUTSIDE: &str = "10.99.0.0/16";
const GATEWAY_TABLE: &str = "rtb-gw";

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test IP")
}

fn cidr(s: &str) -> Cidr {
    Cidr::parse(s).expect("test CIDR")
}

fn to_eni(net: &str, eni: &str) -> Route {
    Route {
        dest: Some(Dest::Cidr(cidr(net))),
        instance_id: None,
        eni_id: Some(eni.into()),
        other_target: None,
        blackhole: false,
    }
}

fn local() -> Route {
    Route {
        dest: Some(Dest::Cidr(cidr(VPC_CIDR))),
        instance_id: None,
        eni_id: None,
        other_target: Some("local".into()),
        blackhole: false,
    }
}

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Three subnets, each with its own table; rtb-1 and rtb-3 are tagged `managed=true`, rtb-3
/// also `team=net`; a gateway route table associated with the internet gateway.
fn vpc() -> VpcState {
    let subnet = |n: u8| Subnet {
        id: format!("sn-{n}"),
        zone: Some("az-a".into()),
        cidrs: vec![cidr(&format!("10.0.{n}.0/24"))],
    };
    let table = |n: u8, tags: BTreeMap<String, String>| RouteTable {
        id: format!("rtb-{n}"),
        subnets: vec![format!("sn-{n}")],
        routes: vec![local()],
        tags,
        ..Default::default()
    };
    let router = |n: u8, at: &str| Instance {
        id: format!("i-{n}"),
        enis: vec![Eni {
            id: format!("eni-{n}"),
            subnet_id: format!("sn-{n}"),
            private_ips: vec![ip(at)],
            device_index: 0,
            source_dest_check: Some(false),
        }],
    };
    VpcState {
        vpc_id: "vpc-1".into(),
        subnets: vec![subnet(1), subnet(2), subnet(3)],
        cidrs: vec![cidr(VPC_CIDR)],
        route_tables: vec![
            RouteTable { id: "rtb-main".into(), main: true, routes: vec![local()], ..Default::default() },
            table(1, tags(&[("managed", "true")])),
            table(2, tags(&[("managed", "false")])),
            table(3, tags(&[("managed", "true"), ("team", "net")])),
            RouteTable {
                id: GATEWAY_TABLE.into(),
                routes: vec![local()],
                gateways: vec!["igw-1".into()],
                ..Default::default()
            },
        ],
        instances: vec![router(1, R1), router(2, R2)],
        ..Default::default()
    }
}

fn spec(entries: &[(&str, &[&str])]) -> Vec<(Cidr, Vec<Ipv4Addr>)> {
    let mut spec: Vec<(Cidr, Vec<Ipv4Addr>)> =
        entries.iter().map(|(net, hosts)| (cidr(net), hosts.iter().map(|h| ip(h)).collect())).collect();
    spec.sort();
    spec
}

fn plan_with(
    state: &VpcState,
    spec: &[(Cidr, Vec<Ipv4Addr>)],
    tables: &TableSelection,
    failed: &[&str],
    lists: Option<&ListMode>,
) -> Plan {
    let failed: BTreeSet<Ipv4Addr> = failed.iter().map(|h| ip(h)).collect();
    let none = BTreeSet::new();
    let input = PlanInput {
        state,
        spec,
        failed: &failed,
        questionable: &none,
        drained: &none,
        ignore: &[],
        last_written: &BTreeMap::new(),
        lists,
        quota: 500,
        failback: None,
        tables,
        zone_affinity: false,
    };
    plan(&input, &mut StdRng::seed_from_u64(1))
}

fn written(plan: &Plan) -> BTreeSet<String> {
    plan.actions.iter().map(|a| a.rtb().to_string()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn ids(selection: &[&str]) -> TableSelection {
    TableSelection::Ids(set(selection))
}

fn tagged(pairs: &[(&str, &str)]) -> TableSelection {
    TableSelection::Tagged(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

fn with_route(mut state: VpcState, rtb: &str, route: Route) -> VpcState {
    state.route_tables.iter_mut().find(|t| t.id == rtb).expect("table").routes.push(route);
    state
}

#[test]
fn by_default_the_tables_serving_the_routers_subnets_are_managed() {
    let s = spec(&[("10.55.0.0/16", &[R1, R2])]);
    let managed: Vec<String> =
        managed_tables(&vpc(), &s, &TableSelection::Serving).iter().map(|t| t.id.clone()).collect();
    assert_eq!(managed, ["rtb-1", "rtb-2"]);
}

#[test]
fn named_tables_are_managed_and_no_other() {
    // A foreign instance route in a table that serves a router's subnet, not named: left.
    let state = with_route(vpc(), "rtb-2", to_eni("10.77.0.0/16", "eni-2"));
    let s = spec(&[("10.55.0.0/16", &[R1, R2])]);
    let plan = plan_with(&state, &s, &ids(&["rtb-3", "rtb-main"]), &[], None);
    assert_eq!(written(&plan), set(&["rtb-3", "rtb-main"]), "{:?}", plan.actions);
    assert!(plan.actions.iter().all(|a| matches!(a, RouteAction::Create { .. })), "{:?}", plan.actions);
    let managed: Vec<&str> = plan.managed.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(managed, ["rtb-3", "rtb-main"]);
    // The same route in a named table is deleted as in any managed table.
    let state = with_route(state, "rtb-3", to_eni("10.77.0.0/16", "eni-2"));
    let plan = plan_with(&state, &s, &ids(&["rtb-3"]), &[], None);
    assert!(plan.actions.iter().any(|a| matches!(a, RouteAction::Delete { rtb, .. } if rtb == "rtb-3")));
}

#[test]
fn a_named_table_the_vpc_does_not_have_is_reported_and_skipped() {
    let s = spec(&[("10.55.0.0/16", &[R1])]);
    let plan = plan_with(&vpc(), &s, &ids(&["rtb-1", "rtb-gone"]), &[], None);
    assert!(plan.notices.contains(&Notice::SelectedTableMissing { rtb: "rtb-gone".into() }), "{:?}", plan.notices);
    assert_eq!(written(&plan), set(&["rtb-1"]));
    let plan = plan_with(&vpc(), &s, &ids(&["rtb-gone"]), &[], None);
    assert!(plan.notices.contains(&Notice::NoManagedTables { selection: ids(&["rtb-gone"]) }));
    assert!(plan.actions.is_empty());
}

#[test]
fn tagged_tables_must_carry_every_tag() {
    let s = spec(&[("10.55.0.0/16", &[R1, R2])]);
    let plan = plan_with(&vpc(), &s, &tagged(&[("managed", "true")]), &[], None);
    assert_eq!(written(&plan), set(&["rtb-1", "rtb-3"]));
    let plan = plan_with(&vpc(), &s, &tagged(&[("managed", "true"), ("team", "net")]), &[], None);
    assert_eq!(written(&plan), set(&["rtb-3"]));
    let none = tagged(&[("managed", "yes")]);
    let plan = plan_with(&vpc(), &s, &none, &[], None);
    assert!(plan.actions.is_empty());
    let notice = Notice::NoManagedTables { selection: none.clone() };
    assert!(plan.notices.contains(&notice), "{:?}", plan.notices);
    assert!(notice.to_string().contains("--route-table-tag managed=yes"), "{notice}");
    // Tagged later: selected at the next plan.
    let mut state = vpc();
    state.route_tables[2].tags.insert("managed".into(), "yes".into());
    assert_eq!(written(&plan_with(&state, &s, &none, &[], None)), set(&["rtb-2"]));
}

#[test]
fn a_gateway_route_table_routes_subnet_cidrs_to_an_interface_and_nothing_else() {
    let s = spec(&[(SUBNET3, &[R1, R2]), (OUTSIDE, &[R1, R2]), (VPC_CIDR, &[R1, R2])]);
    let selection = ids(&[GATEWAY_TABLE, "rtb-1"]);
    let mut state = vpc();
    let plan = plan_with(&state, &s, &selection, &[], None);
    let in_gateway: Vec<&RouteAction> = plan.actions.iter().filter(|a| a.rtb() == GATEWAY_TABLE).collect();
    assert_eq!(in_gateway.len(), 1, "{:?}", plan.actions);
    assert!(
        matches!(in_gateway[0], RouteAction::Create { dest, target, .. } if *dest == Dest::Cidr(cidr(SUBNET3)) && !target.eni_id.is_empty())
    );
    let not_holdable = Notice::NotHoldable { rtb: GATEWAY_TABLE.into(), gateway: "igw-1".into(), cidr: cidr(OUTSIDE) };
    assert!(plan.notices.contains(&not_holdable), "{:?}", plan.notices);
    assert!(not_holdable.to_string().contains("igw-1"), "{not_holdable}");
    // The VPC's CIDR is its local route: held by `local`, reported, never touched.
    assert!(plan.notices.iter().any(
        |n| matches!(n, Notice::HeldByOtherTarget { rtb, cidr: c, .. } if rtb == GATEWAY_TABLE && *c == cidr(VPC_CIDR))
    ));
    // The subnet table takes the outside CIDR as usual.
    assert!(plan.actions.iter().any(|a| a.rtb() == "rtb-1" && a.dest() == Dest::Cidr(cidr(OUTSIDE))));
    for a in &plan.actions {
        state.apply(a, &Applied::default());
    }
    let gateway = plan.managed.iter().find(|t| t.id == GATEWAY_TABLE).expect("managed");
    assert_eq!(gateway.gateway.as_deref(), Some("igw-1"));
    // The router fails: the gateway table's route moves with the others.
    let router = plan.actions.iter().find_map(RouteAction::new_router).expect("a router");
    let plan = plan_with(&state, &s, &selection, &[&router.to_string()], None);
    assert!(
        plan.actions.iter().any(|a| a.rtb() == GATEWAY_TABLE
            && matches!(a, RouteAction::Replace { reason: ReplaceReason::RouterFailed, .. })),
        "{:?}",
        plan.actions
    );
    assert!(plan.actions.iter().all(|a| a.dest() != Dest::Cidr(cidr(OUTSIDE)) || a.rtb() != GATEWAY_TABLE));
}

#[test]
fn a_local_route_pointed_at_an_interface_is_never_deleted() {
    // Someone replaced the gateway table's local route target with an appliance's interface.
    let mut state = vpc();
    let gw = state.route_tables.iter_mut().find(|t| t.id == GATEWAY_TABLE).expect("gateway table");
    gw.routes = vec![to_eni(VPC_CIDR, "eni-1")];
    let s = spec(&[(SUBNET3, &[R1, R2])]);
    let plan = plan_with(&state, &s, &ids(&[GATEWAY_TABLE]), &[], None);
    assert!(!plan.actions.iter().any(|a| matches!(a, RouteAction::Delete { .. })), "{:?}", plan.actions);
    // In the spec, it fails over like any route (EC2 allows replacing its target).
    let s = spec(&[(VPC_CIDR, &[R1, R2])]);
    let plan = plan_with(&state, &s, &ids(&[GATEWAY_TABLE]), &[R1], None);
    assert!(
        matches!(&plan.actions[..], [RouteAction::Replace { reason: ReplaceReason::RouterFailed, .. }]),
        "{:?}",
        plan.actions
    );
}

#[test]
fn in_prefix_list_mode_a_gateway_table_routes_each_cidr_of_a_group() {
    let nets = ["10.0.3.0/24", "10.0.2.0/24", OUTSIDE, "10.98.0.0/16"];
    let s = spec(&nets.iter().map(|n| (*n, &[R1, R2][..])).collect::<Vec<_>>());
    let mode = ListMode { cluster: "test".into(), max_entries: 100, min_members: 2 };
    let selection = ids(&[GATEWAY_TABLE, "rtb-1"]);
    let mut state = vpc();
    let mut created = 0;
    for _ in 0..4 {
        let plan = plan_with(&state, &s, &selection, &[], Some(&mode));
        for a in &plan.actions {
            let list = matches!(a, RouteAction::CreateList { .. }).then(|| {
                created += 1;
                (format!("pl-{created}"), 1)
            });
            state.apply(a, &Applied { list });
        }
    }
    let routes = |rtb: &str| -> BTreeSet<String> {
        let t = state.route_tables.iter().find(|t| t.id == rtb).expect("table");
        t.routes.iter().filter(|r| r.targets_instance()).filter_map(|r| r.dest.as_ref().map(Dest::to_string)).collect()
    };
    assert_eq!(routes("rtb-1"), set(&["pl-1"]), "one list route in the subnet table");
    assert_eq!(routes(GATEWAY_TABLE), set(&["10.0.2.0/24", "10.0.3.0/24"]), "the subnets' CIDRs, each on its own");
    let eni = |rtb: &str, dest: &str| {
        let t = state.route_tables.iter().find(|t| t.id == rtb).expect("table");
        t.routes
            .iter()
            .find(|r| r.dest.as_ref().map(Dest::to_string).as_deref() == Some(dest))
            .and_then(|r| r.eni_id.clone())
    };
    assert_eq!(eni(GATEWAY_TABLE, "10.0.3.0/24"), eni("rtb-1", "pl-1"), "the group's router");
    assert_eq!(eni(GATEWAY_TABLE, "10.0.2.0/24"), eni("rtb-1", "pl-1"), "the group's router");
    assert!(plan_with(&state, &s, &selection, &[], Some(&mode)).actions.is_empty(), "converged");
}

#[test]
fn a_router_that_checks_source_and_destination_is_reported() {
    let mut state = vpc();
    state.instances[1].enis[0].source_dest_check = Some(true);
    let s = spec(&[("10.55.0.0/16", &[R1, R2])]);
    let plan = plan_with(&state, &s, &TableSelection::Serving, &[], None);
    let notice = Notice::SourceDestCheckOn { host: ip(R2), eni: "eni-2".into() };
    assert!(plan.notices.contains(&notice), "{:?}", plan.notices);
    assert!(notice.to_string().contains("--network-interface-id eni-2 --no-source-dest-check"), "{notice}");
    assert!(!plan.notices.iter().any(|n| matches!(n, Notice::SourceDestCheckOn { host, .. } if *host == ip(R1))));
}
