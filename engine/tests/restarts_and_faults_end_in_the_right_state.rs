//! After a restart, a refused write, an unavailable VPC, a stop or a plugin going away, the
//! engine ends in the right state: only the remaining writes, a fresh read, a retry with
//! backoff, an exit at once, an error naming the plugin.

mod support;

use std::time::Duration;

use support::*;
use vpcrouter_engine::{EngineError, Event, VpcError};
use vpcrouter_planner::model::RouteAction;

#[tokio::test(start_paused = true)]
async fn a_restart_from_a_half_applied_failover_makes_only_the_remaining_writes() {
    // Killed after 70 of 200 routes had moved: 7 CIDRs on C, 13 still on the failed A.
    let c = cidrs(20);
    let mut state = world(10);
    route_all(&mut state, &c[..7], C);
    route_all(&mut state, &c[7..], A);
    let h = Harness::start(config(10), &FakeVpc::new(state), None);
    h.spec(spec(&c, &[A, C]));
    h.failed(&[A]);
    assert!(h.until(Duration::from_secs(60), |h| h.vpc.routes_on(A) == 0).await);
    h.settled().await;
    assert_eq!(h.vpc.writes().len(), 130);
    assert_eq!(h.vpc.routes_on(C), 200);
}

#[tokio::test(start_paused = true)]
async fn a_write_refused_as_stale_reads_again_and_finishes() {
    let c = cidrs(2);
    let mut state = world(4);
    route_all(&mut state, &c, A);
    let vpc = FakeVpc::new(state);
    vpc.fail_write(|_| true, VpcError { message: "InvalidRoute.NotFound".into(), stale: true, transient: false });
    let h = Harness::start(config(4), &vpc, None);
    h.spec(spec(&c, &[A, B]));
    h.failed(&[]);
    h.settled().await;
    let reads = h.vpc.reads();
    h.failed(&[A]);
    assert!(h.until(Duration::from_secs(30), |h| h.vpc.routes_on(A) == 0).await);
    assert!(h.until(Duration::from_secs(30), |h| h.status().last_failover.is_some()).await);
    assert!(h.vpc.reads() > reads, "the VPC was read again after the refusal");
    assert_eq!(h.status().last_result, "ok");
}

#[tokio::test(start_paused = true)]
async fn an_unavailable_vpc_is_retried_with_backoff() {
    let c = cidrs(2);
    let mut state = world(2);
    route_all(&mut state, &c, A);
    let vpc = FakeVpc::new(state);
    vpc.fail_read(VpcError { message: "503 Service Unavailable".into(), stale: false, transient: true });
    let h = Harness::start(config(2), &vpc, None);
    h.spec(spec(&c, &[A, B]));
    h.failed(&[A]);
    let failed = h.until(Duration::from_secs(5), |h| h.status().errors == 1).await;
    assert!(failed && h.status().last_result.contains("503"), "{}", h.status().last_result);
    assert!(h.until(Duration::from_secs(60), |h| h.vpc.routes_on(A) == 0).await, "never retried");
    h.settled().await;
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_a_failover_ends_the_engine_at_once() {
    let (h, _) = Harness::settled_on_a(20, 10, &[A, B], FakeVpc::new, config(10)).await;
    h.failed(&[A]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let vpc = h.vpc.clone();
    let stopped = now();
    let result = tokio::time::timeout(Duration::from_millis(10), h.stop()).await;
    assert!(matches!(result, Ok(Ok(()))), "the engine did not stop at once");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(vpc.writes().iter().all(|w| w.started <= stopped), "writes after the stop");
}

#[tokio::test(start_paused = true)]
async fn a_plugin_that_goes_away_ends_the_engine_with_an_error() {
    let h = Harness::start(config(1), &FakeVpc::new(world(1)), None);
    h.tx.send(Event::QueueClosed("health plugin 'tcp' closed its health report queue".into())).expect("engine");
    let result = h.task.await.expect("engine task");
    match result {
        Err(EngineError::PluginGone(who)) => assert!(who.contains("tcp"), "{who}"),
        other => panic!("expected PluginGone, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_reconcile_waits_for_the_first_health_report() {
    let c = cidrs(2);
    let h = Harness::start(config(2), &FakeVpc::new(world(2)), None);
    h.spec(spec(&c, &[A, B]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.vpc.reads(), 0, "reconciled before the health plugin's first report");
    h.failed(&[A]);
    h.settled().await;
    let writes = h.vpc.writes();
    assert_eq!(writes.len(), 4);
    assert!(writes.iter().all(|w| w.router() == Some(ip(B))), "a route was created on the failed router");
    assert!(writes.iter().all(|w| matches!(w.action, RouteAction::Create { .. })));
}
