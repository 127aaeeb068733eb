//! The EC2 adapter reads and writes a moto VPC (routes, prefix lists), classifies errors and counts its calls.
//!
//! (One test in this binary: it points the SDK's environment chain at its own moto.)

use std::net::Ipv4Addr;

use vpcrouter_ec2::limits::Limits;
use vpcrouter_ec2::{Ec2, Ec2Error};
use vpcrouter_planner::model::{
    Cidr, DeleteReason, Dest, Family, Group, ReplaceReason, Route, RouteAction, RouterTarget, VpcState,
};
use vpcrouter_tests::Env;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

fn cidr(s: &str) -> Dest {
    Dest::Cidr(Cidr::parse(s).expect("cidr"))
}

fn cidr_of(s: &str) -> Cidr {
    Cidr::parse(s).expect("cidr")
}

fn calls(ec2: &Ec2, op: &str) -> (u64, u64) {
    ec2.call_counts().into_iter().find(|c| c.operation == op).map(|c| (c.calls, c.errors)).expect("operation")
}

fn route<'a>(state: &'a VpcState, rtb: &str, dest: &str) -> Option<&'a Route> {
    let table = state.route_tables.iter().find(|t| t.id == rtb)?;
    table.routes.iter().find(|r| r.dest == Some(cidr(dest)))
}

#[test]
fn adapter_reads_and_writes_a_moto_vpc() -> anyhow::Result<()> {
    let env = Env::new()?;
    let w = &env.world;
    for (k, v) in env.moto.env() {
        std::env::set_var(k, v);
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // A secondary IP on the first router's interface.
    let (r1_inst, r1_eni) = w.routers[&ip("127.0.1.10")].clone();
    w.block_on(
        w.ec2.assign_private_ip_addresses().network_interface_id(&r1_eni).private_ip_addresses("127.0.1.20").send(),
    )?;

    let ec2 = rt.block_on(Ec2::connect(vpcrouter_tests::world::REGION, std::sync::Arc::new(())));
    let limits = Limits::new(Default::default());
    let state = rt.block_on(ec2.read_state(&w.vpc_id, &limits))?;
    for op in ["DescribeVpcs", "DescribeSubnets", "DescribeRouteTables", "DescribeInstances"] {
        assert_eq!(calls(&ec2, op), (1, 0), "one call per Describe: {op}");
    }
    // Once the VPC is confirmed, a reconcile reads with 3 calls.
    let again = rt.block_on(ec2.read_state(&w.vpc_id, &limits))?;
    assert_eq!(again, state);
    assert_eq!(calls(&ec2, "DescribeVpcs"), (1, 0));
    assert_eq!(calls(&ec2, "DescribeRouteTables"), (2, 0));
    assert_eq!(state.subnets.len(), 4);
    assert_eq!(state.route_tables.len(), 4);
    let main = state.route_tables.iter().find(|t| t.id == w.main_table).expect("main table");
    assert!(main.main && main.subnets.is_empty());
    for t in &w.tables {
        let table = state.route_tables.iter().find(|x| &x.id == t).expect("table");
        assert!(!table.main && table.subnets.len() == 1);
    }
    let local = route(&state, &w.tables[0], "127.0.0.0/16").expect("local route");
    assert_eq!((local.other_target.as_deref(), local.targets_instance()), (Some("local"), false));
    let igw = route(&state, &w.tables[0], "0.0.0.0/0").expect("igw route");
    assert_eq!(igw.other_target.as_deref(), Some(w.igw.as_str()));
    let r1 = state.instances.iter().find(|i| i.id == r1_inst).expect("router 1");
    assert_eq!(r1.enis[0].id, r1_eni);
    assert_eq!(r1.enis[0].private_ips, vec![ip("127.0.1.10"), ip("127.0.1.20")], "primary first, then secondary");

    // One call each for create, replace, delete; moto reports ENI-only / instance-only shapes.
    let target = |addr: &str| {
        let (instance_id, eni_id) = w.routers[&ip(addr)].clone();
        RouterTarget { ip: ip(addr), instance_id, eni_id }
    };
    let rtb = w.tables[0].clone();
    rt.block_on(ec2.execute(
        &RouteAction::Create { rtb: rtb.clone(), dest: cidr("10.55.0.0/16"), target: target("127.0.1.10") },
        &limits,
        "t",
    ))?;
    let state = rt.block_on(ec2.read_state(&w.vpc_id, &limits))?;
    assert_eq!(route(&state, &rtb, "10.55.0.0/16").and_then(|r| r.eni_id.clone()), Some(r1_eni.clone()));
    let replace = RouteAction::Replace {
        rtb: rtb.clone(),
        dest: cidr("10.55.0.0/16"),
        target: target("127.0.1.11"),
        old_router: Some(ip("127.0.1.10")),
        reason: ReplaceReason::RouterFailed,
    };
    rt.block_on(ec2.execute(&replace, &limits, "t"))?;
    assert_eq!(w.routes(&rtb)?.get("10.55.0.0/16").map(String::as_str), Some("127.0.1.11"));
    rt.block_on(ec2.execute(
        &RouteAction::Delete {
            rtb: rtb.clone(),
            dest: cidr("10.55.0.0/16"),
            old_router: None,
            reason: DeleteReason::NotInSpec,
        },
        &limits,
        "t",
    ))?;
    assert!(!w.routes(&rtb)?.contains_key("10.55.0.0/16"));
    assert_eq!(w.routes(&rtb)?.get("0.0.0.0/0"), Some(&w.igw));
    for op in ["CreateRoute", "ReplaceRoute", "DeleteRoute"] {
        assert_eq!(calls(&ec2, op), (1, 0), "{op}");
    }

    // EC2 refusals are permanent and counted; a missing VPC says what to check.
    let err = rt
        .block_on(ec2.execute(
            &RouteAction::Delete { rtb, dest: cidr("10.99.0.0/16"), old_router: None, reason: DeleteReason::NotInSpec },
            &limits,
            "t",
        ))
        .expect_err("deleting a missing route");
    assert!(matches!(err, Ec2Error::Rejected { operation: "DeleteRoute", .. }) && !err.is_transient(), "{err:?}");
    assert!(err.is_route_not_found() && err.shows_stale_state(), "{err:?}");
    assert_eq!(calls(&ec2, "DeleteRoute"), (2, 1));
    // A replace of a missing route and a create of an existing one show a stale state.
    let err = rt.block_on(ec2.execute(&replace, &limits, "t")).expect_err("replacing a missing route");
    assert!(err.shows_stale_state() && !err.is_transient() && !err.is_throttle(), "{err:?}");
    // (moto accepts a second CreateRoute to an interface; EC2's RouteAlreadyExists is
    // covered by the adapter's unit test.)
    // Prefix lists: created with 150 entries (one Create of 100, one Modify of 50), read
    // back with entries by the owner only, edited from its version; an edit from an older
    // version shows a stale state (EC2's PrefixListVersionMismatch).
    let owner =
        rt.block_on(Ec2::connect(vpcrouter_tests::world::REGION, std::sync::Arc::new(()))).owning_lists_of("t1");
    let members: Vec<Cidr> =
        (0..150).map(|i| Cidr::parse(&format!("10.{}.{}.0/24", 100 + i / 100, i % 100)).expect("cidr")).collect();
    let group = Group {
        key: "ipv4-127.0.1.10".into(),
        family: Family::V4,
        hosts: vec![ip("127.0.1.10")],
        members: members.clone(),
    };
    let create = RouteAction::CreateList { name: "vpcrouter-t1-ipv4-127.0.1.10".into(), group, max_entries: 200 };
    let applied = rt.block_on(owner.execute(&create, &limits, "token-1"))?;
    let (id, version) = applied.list.clone().expect("list id and version");
    assert_eq!(version, 2, "created, then one more call for the last 50 entries");
    assert_eq!(calls(&owner, "CreateManagedPrefixList"), (1, 0));
    assert_eq!(calls(&owner, "ModifyManagedPrefixList"), (1, 0));
    let read = rt.block_on(owner.read_state(&w.vpc_id, &limits))?;
    let [list] = read.prefix_lists.as_slice() else { panic!("one owned list: {:?}", read.prefix_lists) };
    assert_eq!((list.id.as_str(), list.version, list.max_entries, list.entries.len()), (id.as_str(), 2, 200, 150));
    assert_eq!(list.group, "ipv4-127.0.1.10");
    assert!(rt.block_on(ec2.read_state(&w.vpc_id, &limits))?.prefix_lists.is_empty(), "no owner, no lists read");
    let entries_reads = calls(&owner, "GetManagedPrefixListEntries").0;
    rt.block_on(owner.read_state(&w.vpc_id, &limits))?;
    assert_eq!(
        calls(&owner, "GetManagedPrefixListEntries").0,
        entries_reads,
        "unchanged version: entries not read again"
    );
    let modify = |version| RouteAction::ModifyList {
        id: id.clone(),
        name: "vpcrouter-t1-ipv4-127.0.1.10".into(),
        version,
        add: vec![cidr_of("10.99.0.0/16")],
        remove: members[..2].to_vec(),
    };
    let applied = rt.block_on(owner.execute(&modify(2), &limits, "t"))?;
    assert_eq!(applied.list, Some((id.clone(), 4)), "additions, then removals");
    let err = rt.block_on(owner.execute(&modify(2), &limits, "t")).expect_err("an edit from an old version");
    assert!(err.shows_stale_state() && !err.is_transient(), "{err:?}");
    let read = rt.block_on(owner.read_state(&w.vpc_id, &limits))?;
    assert_eq!(read.prefix_lists[0].entries.len(), 149);
    assert!(read.prefix_lists[0].entries.contains(&cidr_of("10.99.0.0/16")));
    let delete = RouteAction::DeleteList { id: id.clone(), name: String::new() };
    rt.block_on(owner.execute(&delete, &limits, "t"))?;
    assert!(rt.block_on(owner.read_state(&w.vpc_id, &limits))?.prefix_lists.is_empty());

    // Without --prefix-lists, the lists are read on the first read, then only while the
    // cluster owns some or a table routes to a prefix list: 3 reads per steady reconcile.
    let connect = || rt.block_on(Ec2::connect(vpcrouter_tests::world::REGION, std::sync::Arc::new(())));
    let plain = connect().owning_lists_of("t1");
    for _ in 0..3 {
        rt.block_on(plain.read_state(&w.vpc_id, &limits))?;
    }
    assert_eq!(calls(&plain, "DescribeManagedPrefixLists"), (1, 0), "lists read once: none owned, none routed to");
    assert_eq!(calls(&plain, "DescribeRouteTables"), (3, 0));
    let foreign = w.create_foreign_list("someone-elses", &["10.1.0.0/16"])?;
    w.add_eni_route(&w.tables[0], &foreign, "127.0.1.10")?;
    let read = rt.block_on(plain.read_state(&w.vpc_id, &limits))?;
    assert_eq!(calls(&plain, "DescribeManagedPrefixLists"), (2, 0), "a route to a list: its weight is read");
    assert_eq!(read.other_lists.get(&foreign), Some(&10), "{:?}", read.other_lists);
    let listed = connect().owning_lists_of("t1").routing_through_lists(true);
    w.block_on(w.ec2.delete_route().route_table_id(&w.tables[0]).destination_prefix_list_id(&foreign).send())?;
    for _ in 0..2 {
        rt.block_on(listed.read_state(&w.vpc_id, &limits))?;
    }
    assert_eq!(calls(&listed, "DescribeManagedPrefixLists"), (2, 0), "--prefix-lists: read with every state");

    let err = rt.block_on(ec2.read_state("vpc-0123456789abcdef0", &limits)).expect_err("missing VPC");
    assert!(matches!(err, Ec2Error::VpcNotFound { .. }) && !err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("check -v/--vpc and -r/--region"), "{err}");
    Ok(())
}
