//! Writes within EC2's write bucket, outages first.

mod support;

use std::time::Duration;

use support::*;
use vpcrouter_planner::model::{ReplaceReason, RouteAction};

#[tokio::test(start_paused = true)]
async fn a_failover_past_the_burst_runs_at_the_refill_rate() {
    let (h, _) = Harness::settled_on_a(20, 10, &[A, B], FakeVpc::new, config(10)).await;
    let t0 = now();
    h.failed(&[A]);
    assert!(h.until(Duration::from_secs(60), |h| h.vpc.routes_on(A) == 0).await);
    let writes = h.vpc.writes();
    let last = writes.iter().map(|w| w.answered).max().expect("writes") - t0;
    // 50 at once, then 150 at 5 per second: 30 s, plus one write.
    let bound = Duration::from_secs(30) + Duration::from_millis(100);
    assert!(last >= Duration::from_secs(29), "faster than the bucket allows: {last:?}");
    assert!(last <= bound + Duration::from_millis(300), "{last:?} against a bound of {bound:?}");
    assert_eq!(writes.len(), 200);
}

#[tokio::test(start_paused = true)]
async fn a_failover_within_the_burst_takes_one_write_latency() {
    let (h, _) = Harness::settled_on_a(4, 10, &[A, B], FakeVpc::new, config(10)).await;
    let t0 = now();
    h.failed(&[A]);
    assert!(h.until(Duration::from_secs(10), |h| h.vpc.routes_on(A) == 0).await);
    let last = h.vpc.writes().iter().map(|w| w.answered).max().expect("writes") - t0;
    assert!(last <= Duration::from_millis(150), "40 writes within the burst took {last:?}");
    assert!(h.until(Duration::from_secs(10), |h| h.status().last_failover.is_some()).await);
    let f = h.status().last_failover.expect("summary");
    assert_eq!((f.routes_moved, f.writes, f.revisions, f.withdrawn), (40, 40, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn moves_off_a_failed_router_go_before_other_changes() {
    let (h, c) = Harness::settled_on_a(10, 10, &[A, B], FakeVpc::new, config(10)).await;
    // A new CIDR (10 routes to create) and A failing (100 routes to move) at once.
    let mut more = c.clone();
    more.push("10.250.0.0/24".into());
    h.spec(spec(&more, &[A, B]));
    h.failed(&[A]);
    assert!(
        h.until(Duration::from_secs(60), |h| h.vpc.truth().route_tables.iter().all(|t| t.routes.len() == 12)).await
    );
    let writes = h.vpc.writes();
    let first_create = writes.iter().position(|w| matches!(w.action, RouteAction::Create { .. })).expect("creates");
    let moves = writes
        .iter()
        .filter(|w| matches!(w.action, RouteAction::Replace { reason: ReplaceReason::RouterFailed, .. }))
        .count();
    assert_eq!(moves, 100);
    assert!(first_create >= 100, "a create went before the outage's moves (at {first_create})");
}

#[tokio::test(start_paused = true)]
async fn one_write_at_a_time_per_route() {
    let slow = |s| FakeVpc::with(s, Duration::from_millis(150), Duration::from_secs(2), 50, 5.0);
    let (h, _) = Harness::settled_on_a(1, 1, &[A, B, C], slow, config(1)).await;
    h.failed(&[A]);
    // B fails while the move onto B is in flight: C's write waits for B's answer.
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.failed(&[A, B]);
    assert!(h.until(Duration::from_secs(30), |h| h.vpc.routes_on(C) == 1).await);
    let writes = h.vpc.writes();
    for pair in writes.windows(2) {
        assert!(
            pair[1].started >= pair[0].answered,
            "two writes of one route overlapped: {}",
            brief(&pair.iter().collect::<Vec<_>>())
        );
    }
}
