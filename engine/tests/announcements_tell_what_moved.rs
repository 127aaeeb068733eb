//! The engine announces each route it moved, each failover, router and role change, and each failed reconcile.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use support::*;
use vpcrouter_engine::{Announcement, EngineConfig, Event, Report, VpcError};

/// A route change as announced: (cidr, route table, router, old router, reason).
type Change = (String, String, Option<Ipv4Addr>, Option<Ipv4Addr>, String);

/// The route changes among `announced`, in order.
fn changes(announced: &[Announcement]) -> Vec<Change> {
    announced
        .iter()
        .filter_map(|a| match a {
            Announcement::RouteChanged { cidr, route_table, router, old_router, reason } => {
                Some((cidr.clone(), route_table.clone(), *router, *old_router, reason.clone()))
            }
            _ => None,
        })
        .collect()
}

/// The announcements since the first `from`.
fn since(h: &Harness, from: usize) -> Vec<Announcement> {
    h.announced().split_off(from)
}

/// Every (cidr, table) pair of `cidrs` over `tables` tables.
fn pairs(cidrs: &[String], tables: usize) -> BTreeSet<(String, String)> {
    cidrs.iter().flat_map(|c| table_ids(tables).into_iter().map(move |t| (c.clone(), t))).collect()
}

fn is_role(a: &Announcement) -> bool {
    matches!(a, Announcement::Leader | Announcement::Follower)
}

#[tokio::test(start_paused = true)]
async fn a_failover_announces_each_route_moved_then_the_failover_and_the_router_down_first() {
    let (h, c) = Harness::settled_on_a(3, 2, &[A, B], FakeVpc::new, config(2)).await;
    assert_eq!(h.announced(), Vec::new(), "nothing moved or changed health at start");
    h.failed(&[A]);
    let ended = h.until(Duration::from_secs(60), |h| h.status().last_failover.is_some()).await;
    assert!(ended, "the failover never ended: {}", h.status().last_result);
    let announced = h.announced();
    assert_eq!(announced.first(), Some(&Announcement::RouterDown(ip(A))), "{announced:?}");
    let moved = changes(&announced);
    assert_eq!(moved.len(), 6, "one per route: {moved:?}");
    for (cidr, rtb, router, old, reason) in &moved {
        assert_eq!((*router, *old, reason.as_str()), (Some(ip(B)), Some(ip(A)), "router failed"), "{cidr} in {rtb}");
    }
    let moved_pairs: BTreeSet<(String, String)> = moved.iter().map(|m| (m.0.clone(), m.1.clone())).collect();
    assert_eq!(moved_pairs, pairs(&c, 2));
    let summary = h.status().last_failover.expect("a failover summary");
    let failovers: Vec<&Announcement> =
        announced.iter().filter(|a| matches!(a, Announcement::Failover { .. })).collect();
    let expected = Announcement::Failover { routers: vec![ip(A)], routes_moved: 6, seconds: summary.seconds };
    assert_eq!(failovers, vec![&expected]);
    assert!(summary.seconds > 0.0, "the figure is the failover's duration: {}", summary.seconds);
    let ended = summary.ended.expect("when the failover ended");
    assert!(ended <= std::time::SystemTime::now(), "the failover ended in the past");
    assert_eq!(h.status().recent_failovers, vec![summary.clone()], "the timeline holds the failover");
    assert_eq!(announced.last(), Some(&expected), "the failover is announced once its routes moved");
    assert_eq!(announced.len(), 8, "nothing else: {announced:?}");
}

#[tokio::test(start_paused = true)]
async fn a_router_recovering_is_announced_up() {
    let (h, _) = Harness::settled_on_a(2, 2, &[A, B], FakeVpc::new, config(2)).await;
    h.failed(&[A]);
    assert!(h.until(Duration::from_secs(60), |h| h.status().last_failover.is_some()).await);
    let before = h.announced().len();
    h.failed(&[]);
    let up = h.until(Duration::from_secs(10), |h| !since(h, before).is_empty()).await;
    assert!(up, "nothing announced after the recovery");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(since(&h, before), vec![Announcement::RouterUp(ip(A))]);
}

#[tokio::test(start_paused = true)]
async fn a_router_leaving_the_spec_is_not_announced_up() {
    let (h, c) = Harness::settled_on_a(2, 2, &[A, B, C], FakeVpc::new, config(2)).await;
    h.failed(&[A]);
    assert!(h.until(Duration::from_secs(60), |h| h.status().last_failover.is_some()).await);
    let before = h.announced().len();
    h.spec(spec(&c, &[B, C]));
    // The health plugin, given the new host list, no longer reports A.
    h.failed(&[]);
    let applied = h.until(Duration::from_secs(10), |h| h.status().failed.is_empty()).await;
    assert!(applied, "the health report was not taken");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = since(&h, before);
    assert!(!after.contains(&Announcement::RouterUp(ip(A))), "A left the spec, it did not recover: {after:?}");
}

#[tokio::test(start_paused = true)]
async fn a_cidr_added_to_the_spec_is_announced_as_a_missing_route_created() {
    let (h, c) = Harness::settled_on_a(2, 2, &[A, B], FakeVpc::new, config(2)).await;
    let added = "10.250.0.0/24".to_string();
    let mut more = c.clone();
    more.push(added.clone());
    h.spec(spec(&more, &[A, B]));
    assert!(h.until(Duration::from_secs(30), |h| changes(&h.announced()).len() >= 2).await, "{:?}", h.announced());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let written: BTreeMap<(String, String), Option<Ipv4Addr>> = h
        .vpc
        .writes()
        .iter()
        .map(|w| ((w.action.dest().to_string(), w.action.rtb().to_string()), w.router()))
        .collect();
    let moved = changes(&h.announced());
    assert_eq!(moved.len(), 2, "{moved:?}");
    for (cidr, rtb, router, old, reason) in &moved {
        assert_eq!(cidr, &added);
        assert!(router.is_some(), "a created route has a router");
        assert_eq!(written.get(&(cidr.clone(), rtb.clone())), Some(router), "the router written in {rtb}");
        assert_eq!((*old, reason.as_str()), (None, "route missing"));
    }
    assert_eq!(moved.iter().map(|m| (m.0.clone(), m.1.clone())).collect::<BTreeSet<_>>(), pairs(&[added], 2));
}

#[tokio::test(start_paused = true)]
async fn a_cidr_leaving_the_spec_is_announced_as_deleted() {
    let (h, c) = Harness::settled_on_a(2, 2, &[A, B], FakeVpc::new, config(2)).await;
    h.spec(spec(&c[1..], &[A, B]));
    assert!(h.until(Duration::from_secs(30), |h| changes(&h.announced()).len() >= 2).await, "{:?}", h.announced());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let moved = changes(&h.announced());
    let expected: Vec<Change> = table_ids(2)
        .into_iter()
        .map(|rtb| (c[0].clone(), rtb, None, Some(ip(A)), "not in route spec".to_string()))
        .collect();
    let mut sorted = moved.clone();
    sorted.sort_by(|x, y| x.1.cmp(&y.1));
    assert_eq!(sorted, expected);
}

#[tokio::test(start_paused = true)]
async fn a_failed_read_is_announced_as_a_reconcile_error() {
    let c = cidrs(2);
    let mut state = world(2);
    route_all(&mut state, &c, A);
    let vpc = FakeVpc::new(state);
    vpc.fail_read(VpcError { message: "503 Service Unavailable".into(), stale: false, transient: true });
    let h = Harness::start(config(2), &vpc, None);
    h.spec(spec(&c, &[A, B]));
    h.failed(&[]);
    assert!(h.until(Duration::from_secs(5), |h| h.status().errors == 1).await, "{}", h.status().last_result);
    let errors: Vec<Announcement> =
        h.announced().into_iter().filter(|a| matches!(a, Announcement::ReconcileError(_))).collect();
    let message = h.status().last_result;
    assert!(message.contains("cannot read VPC vpc-1") && message.contains("503"), "{message}");
    assert_eq!(errors, vec![Announcement::ReconcileError(message)]);
    h.settled().await;
    let errors = h.announced().into_iter().filter(|a| matches!(a, Announcement::ReconcileError(_))).count();
    assert_eq!(errors, 1, "the retry that went through is no error");
}

#[tokio::test(start_paused = true)]
async fn cluster_roles_are_announced_on_each_change_only() {
    let lead = Arc::new(FakeLeadership::new(Duration::from_secs(10)));
    let h = Harness::start(config(2), &FakeVpc::new(world(2)), Some(lead));
    let role = |leader: bool| {
        let leader_id = Some(if leader { "me" } else { "other" }.to_string());
        h.tx.send(Event::Role { leader, leader_id }).expect("engine running");
    };
    for leader in [false, false, true, true, false, false] {
        role(leader);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let roles: Vec<Announcement> = h.announced().into_iter().filter(is_role).collect();
    assert_eq!(roles, vec![Announcement::Follower, Announcement::Leader, Announcement::Follower]);
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_lease_is_lost_is_announced_follower_once() {
    let c = cidrs(20);
    let mut state = world(10);
    route_all(&mut state, &c, A);
    let lead = Arc::new(FakeLeadership::new(Duration::from_secs(2)));
    let h = Harness::start(config(10), &FakeVpc::new(state), Some(lead.clone()));
    h.tx.send(Event::Role { leader: true, leader_id: Some("me".into()) }).expect("engine running");
    h.spec(spec(&c, &[A, B, C]));
    h.failed(&[]);
    h.settled().await;
    h.failed(&[A]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    lead.lose();
    let lost = h.until(Duration::from_secs(30), |h| h.status().last_result.contains("leadership not confirmed")).await;
    assert!(lost, "{}", h.status().last_result);
    let roles = |h: &Harness| h.announced().into_iter().filter(is_role).collect::<Vec<_>>();
    assert_eq!(roles(&h), vec![Announcement::Leader, Announcement::Follower], "a lost lease is a lost leadership");
    // The cluster tells the engine afterwards: it is no new role.
    h.tx.send(Event::Role { leader: false, leader_id: Some("other".into()) }).expect("engine running");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(roles(&h), vec![Announcement::Leader, Announcement::Follower]);
}

#[tokio::test(start_paused = true)]
async fn cluster_mode_announces_a_router_down_only_when_the_quorum_says_so() {
    let lead = Arc::new(FakeLeadership::new(Duration::from_secs(10)));
    let h = Harness::start(config(2), &FakeVpc::new(world(2)), Some(lead));
    h.spec(spec(&cidrs(1), &[A, B]));
    let view = |failed: &[&str]| Report { failed: failed.iter().map(|r| ip(r)).collect(), ..Report::default() };
    let peers = |failed: &[&str]| BTreeMap::from([("peer".to_string(), view(failed))]);
    h.tx.send(Event::Peers(peers(&[]))).expect("engine running");
    h.failed(&[A]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.announced(), Vec::new(), "one view of two is no majority");
    h.tx.send(Event::Peers(peers(&[A]))).expect("engine running");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.announced(), vec![Announcement::RouterDown(ip(A))]);
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_announces_no_route_change() {
    let dry = EngineConfig { dry_run: true, ..config(2) };
    let (h, _) = Harness::settled_on_a(2, 2, &[A, B], FakeVpc::new, dry).await;
    let reconciles = h.status().reconciles;
    h.failed(&[A]);
    let planned = h.until(Duration::from_secs(30), |h| h.status().reconciles > reconciles).await;
    assert!(planned, "no reconcile after the health change");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(h.vpc.writes().is_empty(), "a dry run writes nothing");
    assert_eq!(h.announced(), vec![Announcement::RouterDown(ip(A))], "health changes, but no route moved");
}
