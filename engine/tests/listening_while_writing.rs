//! The engine takes health, spec and drain events while it writes a plan: writes the new
//! facts make wrong are withdrawn before they start, and no write onto a router starts
//! after its failure was reported (the writes already in flight finish and are booked).

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::*;
use vpcrouter_planner::model::RouteAction;

/// The fake's write latency.
const WRITE: Duration = Duration::from_millis(100);

/// 20 CIDRs × 10 tables on A, candidates [A, B, C]: the engine running and settled.
async fn two_hundred_routes_on_a() -> (Harness, Vec<String>) {
    Harness::settled_on_a(20, 10, &[A, B, C], FakeVpc::new, config(10)).await
}

fn onto(w: &WriteRecord, router: &str) -> bool {
    w.router() == Some(ip(router))
}

#[tokio::test(start_paused = true)]
async fn a_router_failing_during_a_failover_gets_no_write_after_its_report() {
    let (h, _) = two_hundred_routes_on_a().await;
    h.failed(&[A]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reported = now();
    h.failed(&[A, B]);
    let done = h.until(Duration::from_secs(120), |h| h.vpc.routes_on(A) + h.vpc.routes_on(B) == 0).await;
    assert!(done, "routes left on A: {}, on B: {}", h.vpc.routes_on(A), h.vpc.routes_on(B));
    let writes = h.vpc.writes();
    let before = writes.iter().filter(|w| onto(w, B) && w.started < reported).count();
    assert!(before > 0, "the test needs writes onto B before its failure");
    let late: Vec<_> = writes.iter().filter(|w| onto(w, B) && w.started > reported + WRITE).collect();
    assert!(late.is_empty(), "writes onto B started after its failure was reported: {}", brief(&late));
    assert_eq!(h.vpc.routes_on(C), 200);
    assert!(writes.len() <= 200 + before, "{} writes for 200 routes and {before} moved onto B first", writes.len());
    assert!(h.until(Duration::from_secs(30), |h| h.status().last_failover.is_some()).await);
    let summary = h.status().last_failover.expect("a failover summary");
    assert!(summary.revisions >= 1 && summary.withdrawn > 0, "{summary:?}");
    assert_eq!(summary.routers, BTreeSet::from([ip(A), ip(B)]));
}

#[tokio::test(start_paused = true)]
async fn the_target_of_a_running_failover_failing_moves_its_new_routes_again_at_once() {
    let (h, _) = two_hundred_routes_on_a().await;
    h.failed(&[A]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.failed(&[A, B]);
    let reported = now();
    // The routes already moved onto B are on a dead router too: they are moved at the
    // refill rate like A's, not after A's remaining routes.
    let cleared = h.until(Duration::from_secs(120), |h| h.vpc.routes_on(B) == 0).await;
    assert!(cleared);
    let b_cleared = now() - reported;
    let all = h.until(Duration::from_secs(120), |h| h.vpc.routes_on(A) == 0).await;
    assert!(all);
    let a_cleared = now() - reported;
    assert!(b_cleared < a_cleared, "B's routes ({b_cleared:?}) waited behind A's remaining ones ({a_cleared:?})");
}

#[tokio::test(start_paused = true)]
async fn a_second_outage_is_not_queued_behind_the_first() {
    // A carries 20 CIDRs, C carries 5 others; D... the fixture has three routers, so A and
    // C fail and B takes everything.
    let a_cidrs = cidrs(20);
    let c_cidrs: Vec<String> = (0..5).map(|k| format!("10.200.{k}.0/24")).collect();
    let mut state = world(10);
    route_all(&mut state, &a_cidrs, A);
    route_all(&mut state, &c_cidrs, C);
    let h = Harness::start(config(10), &FakeVpc::new(state), None);
    let mut both = vpcrouter_plugin_api::spec::from_pairs(
        a_cidrs.iter().map(|c| (c.as_str(), vec![A, B])).chain(c_cidrs.iter().map(|c| (c.as_str(), vec![C, B]))),
    )
    .expect("spec");
    both.routes.sort_by_key(|r| r.cidr);
    h.spec(both);
    h.failed(&[]);
    h.settled().await;
    h.failed(&[A]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.failed(&[A, C]);
    let reported = now();
    let c_done = h.until(Duration::from_secs(120), |h| h.vpc.routes_on(C) == 0).await;
    assert!(c_done);
    let took = now() - reported;
    // 50 routes of C at 5 per second, shared with A's: about 20 s side by side; behind A's
    // 150 remaining routes it would be 40 s.
    assert!(took < Duration::from_secs(25), "C's 50 routes took {took:?}: queued behind A's");
    assert!(h.until(Duration::from_secs(120), |h| h.vpc.routes_on(A) == 0).await);
}

#[tokio::test(start_paused = true)]
async fn a_spec_change_during_a_failover_withdraws_the_writes_of_removed_cidrs() {
    let (h, c) = two_hundred_routes_on_a().await;
    h.failed(&[A]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = &c[..10];
    h.spec(spec(kept, &[A, B, C]));
    let changed = now();
    let done = h.until(Duration::from_secs(120), |h| h.vpc.routes_on(A) == 0).await;
    assert!(done);
    let removed: BTreeSet<String> = c[10..].iter().cloned().collect();
    let late_replaces: Vec<_> = h
        .vpc
        .writes()
        .into_iter()
        .filter(|w| w.started > changed + WRITE)
        .filter(|w| matches!(w.action, RouteAction::Replace { .. }) && removed.contains(&w.action.dest().to_string()))
        .collect();
    assert!(
        late_replaces.is_empty(),
        "removed CIDRs were still moved: {}",
        brief(&late_replaces.iter().collect::<Vec<_>>())
    );
    assert_eq!(h.vpc.routes_on(B) + h.vpc.routes_on(C), 100, "the 10 kept CIDRs in 10 tables");
    assert!(h.status().withdrawn > 0);
}

#[tokio::test(start_paused = true)]
async fn a_drain_during_a_failover_sends_nothing_more_to_the_drained_router() {
    let (h, _) = two_hundred_routes_on_a().await;
    h.failed(&[A]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.drained(&[B]);
    let drained = now();
    let done = h.until(Duration::from_secs(120), |h| h.vpc.routes_on(A) + h.vpc.routes_on(B) == 0).await;
    assert!(done, "left on A: {}, on B: {}", h.vpc.routes_on(A), h.vpc.routes_on(B));
    let late: Vec<_> = h.vpc.writes().into_iter().filter(|w| onto(w, B) && w.started > drained + WRITE).collect();
    assert!(late.is_empty(), "writes onto the drained router: {}", brief(&late.iter().collect::<Vec<_>>()));
    assert_eq!(h.vpc.routes_on(C), 200);
}

#[tokio::test(start_paused = true)]
async fn writes_in_flight_at_a_revision_finish_are_booked_and_are_moved_again() {
    // Slow writes: the whole burst is in flight when B fails.
    let slow = |s| FakeVpc::with(s, Duration::from_millis(150), Duration::from_secs(1), 50, 5.0);
    let (h, _) = Harness::settled_on_a(5, 10, &[A, B, C], slow, config(10)).await;
    h.failed(&[A]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let in_flight_onto_b = h.vpc.writes().iter().filter(|w| onto(w, B)).count();
    assert_eq!(in_flight_onto_b, 0, "nothing answered yet");
    h.failed(&[A, B]);
    let reported = now();
    assert!(h.until(Duration::from_secs(60), |h| h.vpc.routes_on(A) + h.vpc.routes_on(B) == 0).await);
    let writes = h.vpc.writes();
    let onto_b: Vec<_> = writes.iter().filter(|w| onto(w, B)).collect();
    assert!(!onto_b.is_empty(), "the test needs writes onto B in flight at its failure");
    assert!(onto_b.iter().all(|w| w.started < reported), "{}", brief(&onto_b));
    assert_eq!(h.vpc.routes_on(C), 50);
    assert_eq!(writes.len(), 50 + onto_b.len(), "each route on B moved once more, nothing else");
}

#[tokio::test(start_paused = true)]
async fn a_router_recovering_during_its_failover_keeps_its_remaining_routes() {
    let (h, _) = two_hundred_routes_on_a().await;
    h.failed(&[A]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    h.failed(&[]);
    let recovered = now();
    // CIDRs with a route moved already are completed (one router per CIDR); the others stay.
    let started: BTreeSet<String> = h.vpc.writes().iter().map(|w| w.action.dest().to_string()).collect();
    h.settled().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let writes = h.vpc.writes();
    let late: Vec<_> = writes
        .iter()
        .filter(|w| w.started > recovered + WRITE && !started.contains(&w.action.dest().to_string()))
        .collect();
    assert!(late.is_empty(), "CIDRs kept moving off a router that is healthy again: {}", brief(&late));
    assert!(h.vpc.routes_on(A) >= 100 && writes.len() <= 100, "{} writes", writes.len());
    let st = h.status();
    assert!(st.revisions >= 1, "the recovery revised the plan");
    assert!(st.withdrawn >= 100, "the remaining moves were withdrawn: {}", st.withdrawn);
}

#[tokio::test(start_paused = true)]
async fn an_unrelated_event_during_a_failover_revises_nothing() {
    let (h, c) = two_hundred_routes_on_a().await;
    h.failed(&[A]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The same spec again, and drains unchanged: no new facts.
    h.spec(spec(&c, &[A, B, C]));
    h.drained(&[]);
    assert!(h.until(Duration::from_secs(120), |h| h.vpc.routes_on(A) == 0).await);
    assert_eq!(h.vpc.writes().len(), 200);
    assert_eq!(h.status().revisions, 0);
}
