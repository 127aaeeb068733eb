//! Cluster mode: writes start only within a confirmed lease, and stop at once when the
//! leadership is lost, whether a confirmation fails or the cluster says so.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use support::*;
use vpcrouter_engine::Event;

/// 20 CIDRs × 10 tables on A, candidates [A, B, C], leading with leases of `lease`.
async fn leading(lease: Duration) -> (Harness, Arc<FakeLeadership>) {
    let c = cidrs(20);
    let mut state = world(10);
    route_all(&mut state, &c, A);
    let lead = Arc::new(FakeLeadership::new(lease));
    let h = Harness::start(config(10), &FakeVpc::new(state), Some(lead.clone()));
    h.tx.send(Event::Role { leader: true, leader_id: Some("me".into()) }).expect("engine");
    h.spec(spec(&c, &[A, B, C]));
    h.failed(&[]);
    h.settled().await;
    (h, lead)
}

#[tokio::test(start_paused = true)]
async fn a_lease_lost_during_a_failover_stops_the_writes() {
    let lease = Duration::from_secs(2);
    let (h, lead) = leading(lease).await;
    h.failed(&[A]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    lead.lose();
    let lost = now();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let writes = h.vpc.writes();
    let late: Vec<_> = writes.iter().filter(|w| w.started > lost + lease).collect();
    assert!(late.is_empty(), "writes after the lease ran out: {}", brief(&late));
    assert!(writes.len() < 200, "the failover went on: {} writes", writes.len());
    assert!(h.status().last_result.contains("leadership not confirmed"), "{}", h.status().last_result);
}

#[tokio::test(start_paused = true)]
async fn a_demotion_during_a_failover_stops_new_writes_at_once() {
    let (h, _) = leading(Duration::from_secs(10)).await;
    h.failed(&[A]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    h.tx.send(Event::Role { leader: false, leader_id: Some("other".into()) }).expect("engine");
    let demoted = now();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let late: Vec<_> = h.vpc.writes().into_iter().filter(|w| w.started > demoted).collect();
    assert!(late.is_empty(), "writes after the demotion: {}", brief(&late.iter().collect::<Vec<_>>()));
    assert!(h.status().last_result.starts_with("follower: other leads"), "{}", h.status().last_result);
}

#[tokio::test(start_paused = true)]
async fn no_write_starts_that_the_lease_does_not_cover() {
    // The fake expects 200 ms per write: a lease of 150 ms never covers one.
    let (h, lead) = leading(Duration::from_millis(150)).await;
    h.failed(&[A]);
    let ok = h.until(Duration::from_secs(30), |h| h.status().last_result.contains("never covered a write")).await;
    assert!(ok, "{}", h.status().last_result);
    assert!(h.vpc.writes().is_empty());
    assert!(lead.confirms.load(Ordering::SeqCst) >= 10);
}

#[tokio::test(start_paused = true)]
async fn a_follower_makes_no_call() {
    let c = cidrs(2);
    let mut state = world(2);
    route_all(&mut state, &c, A);
    let lead = Arc::new(FakeLeadership::new(Duration::from_secs(10)));
    let h = Harness::start(config(2), &FakeVpc::new(state), Some(lead.clone()));
    h.spec(spec(&c, &[A, B]));
    h.failed(&[A]);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!((h.vpc.reads(), h.vpc.writes().len()), (0, 0));
    assert!(!lead.published.lock().expect("lock").is_empty(), "the local view is published to the cluster");
}

#[tokio::test(start_paused = true)]
async fn a_new_leader_reads_before_it_writes_and_trusts_no_earlier_write() {
    let (h, _) = leading(Duration::from_secs(10)).await;
    h.failed(&[A]);
    assert!(h.until(Duration::from_secs(60), |h| h.vpc.routes_on(A) == 0).await);
    h.tx.send(Event::Role { leader: false, leader_id: Some("other".into()) }).expect("engine");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reads = h.vpc.reads();
    h.tx.send(Event::Role { leader: true, leader_id: Some("me".into()) }).expect("engine");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(h.vpc.reads() > reads, "a new leader reads the VPC first");
    assert_eq!(h.vpc.writes().len(), 200, "nothing to change");
}
