//! Reads that lag writes (EC2's eventual consistency): an acknowledged write is trusted over
//! a read that does not show it yet, for the consistency window; after the window the read
//! is believed, so a route changed behind vpcrouter's back is still repaired.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::*;
use vpcrouter_engine::EngineConfig;
use vpcrouter_planner::model::{Cidr, DeleteReason, Dest, RouteAction};

/// Reads show each write this long after it.
const LAG: Duration = Duration::from_millis(2500);

/// 4 CIDRs × 10 tables on A, candidates [A, B, C], reads lagging by [`LAG`]; settled.
async fn forty_routes(cfg: EngineConfig) -> (Harness, Vec<String>) {
    let lagging = |s| {
        let vpc = FakeVpc::new(s);
        vpc.set_read_lag(LAG);
        vpc
    };
    Harness::settled_on_a(4, 10, &[A, B, C], lagging, cfg).await
}

/// Writes per (table, destination).
fn per_route(writes: &[WriteRecord]) -> BTreeMap<(String, String), Vec<WriteRecord>> {
    let mut out: BTreeMap<(String, String), Vec<WriteRecord>> = BTreeMap::new();
    for w in writes {
        out.entry((w.action.rtb().to_string(), w.action.dest().to_string())).or_default().push(w.clone());
    }
    out
}

/// A recheck every second: several reads fall within the lag.
fn rechecking() -> EngineConfig {
    EngineConfig { recheck: Some(Duration::from_secs(1)), ..config(10) }
}

#[tokio::test(start_paused = true)]
async fn a_read_that_does_not_show_a_write_yet_causes_no_second_write() {
    let (h, _) = forty_routes(config(10)).await;
    h.failed(&[A]);
    assert!(h.until(Duration::from_secs(30), |h| h.vpc.routes_on(A) == 0).await);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let writes = h.vpc.writes();
    assert_eq!(writes.len(), 40, "40 routes to move: {}", brief(&writes.iter().collect::<Vec<_>>()));
    assert!(h.status().lagging_reads > 0, "the verifying read lagged: {}", h.status().lagging_reads);
}

#[tokio::test(start_paused = true)]
async fn no_route_moves_twice_with_three_candidates_while_reads_lag() {
    let (h, _) = forty_routes(rechecking()).await;
    h.failed(&[A]);
    tokio::time::sleep(Duration::from_secs(12)).await;
    for ((rtb, dest), w) in per_route(&h.vpc.writes()) {
        assert_eq!(w.len(), 1, "{rtb} {dest} written {} times: {}", w.len(), brief(&w.iter().collect::<Vec<_>>()));
    }
    assert_eq!(h.vpc.routes_on(B) + h.vpc.routes_on(C), 40);
}

#[tokio::test(start_paused = true)]
async fn with_a_zero_window_a_lagging_read_is_believed() {
    let cfg = EngineConfig { consistency_window: Duration::ZERO, ..rechecking() };
    let (h, _) = forty_routes(cfg).await;
    h.failed(&[A]);
    tokio::time::sleep(Duration::from_secs(12)).await;
    // The old behaviour, kept for those who turn the window off: reads undo writes.
    assert!(h.vpc.writes().len() > 40, "{} writes", h.vpc.writes().len());
}

#[tokio::test(start_paused = true)]
async fn a_route_changed_behind_the_engines_back_is_repaired_once_the_window_ends() {
    let (h, c) = forty_routes(rechecking()).await;
    h.failed(&[A]);
    assert!(h.until(Duration::from_secs(30), |h| h.vpc.routes_on(A) == 0).await);
    let moved = now();
    // Someone points one route back at the failed router, visible to reads at once.
    let dest = Dest::Cidr(Cidr::parse(&c[0]).expect("cidr"));
    h.vpc.change(&RouteAction::Create { rtb: "rtb-0".into(), dest: dest.clone(), target: target(A) });
    // A Create over an existing route: the fake applies it as a replacement.
    assert_eq!(h.vpc.routes_on(A), 1);
    let repaired = h.until(Duration::from_secs(20), |h| h.vpc.routes_on(A) == 0).await;
    assert!(repaired, "the route on the failed router was never repaired");
    let took = now() - moved;
    assert!(took >= Duration::from_secs(4), "repaired within the window ({took:?}): the read was believed too early");
    assert!(took <= Duration::from_secs(7), "repaired {took:?} after the write: long after the 5 s window");
    let w = per_route(&h.vpc.writes());
    assert_eq!(w[&("rtb-0".to_string(), c[0].clone())].len(), 2, "written, then repaired once");
}

#[tokio::test(start_paused = true)]
async fn the_engine_reads_again_when_the_window_ends() {
    // No periodic recheck: only the window's end brings the confirming read.
    let (h, _) = forty_routes(config(10)).await;
    h.failed(&[A]);
    assert!(h.until(Duration::from_secs(30), |h| h.vpc.routes_on(A) == 0).await);
    let reads = h.vpc.reads();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(h.vpc.reads() > reads, "no read confirmed the writes after the window");
    tokio::time::sleep(Duration::from_secs(30)).await;
    let after = h.vpc.reads();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(h.vpc.reads(), after, "once a read agreed, nothing more is due");
    assert_eq!(h.vpc.writes().len(), 40);
}

#[tokio::test(start_paused = true)]
async fn a_read_that_agrees_ends_the_trust_at_once() {
    // Reads do not lag here: the verifying read agrees with every write.
    let (h, c) = Harness::settled_on_a(4, 10, &[A, B, C], FakeVpc::new, rechecking()).await;
    h.failed(&[A]);
    assert!(h.until(Duration::from_secs(30), |h| h.vpc.routes_on(A) == 0).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let changed = now();
    let dest = Dest::Cidr(Cidr::parse(&c[1]).expect("cidr"));
    h.vpc.change(&RouteAction::Create { rtb: "rtb-3".into(), dest, target: target(A) });
    assert!(h.until(Duration::from_secs(10), |h| h.vpc.routes_on(A) == 0).await);
    let took = now() - changed;
    assert!(took < Duration::from_secs(2), "repaired only after {took:?}: the agreeing read did not end the trust");
    assert_eq!(h.status().lagging_reads, 0);
}

#[tokio::test(start_paused = true)]
async fn a_write_refused_as_stale_ends_the_trust_in_that_route_at_once() {
    let (h, c) = Harness::settled_on_a(2, 2, &[A, B, C], FakeVpc::new, config(2)).await;
    h.failed(&[A]);
    assert!(h.until(Duration::from_secs(10), |h| h.vpc.routes_on(A) == 0).await);
    let on = if h.vpc.routes_on(B) > 0 { B } else { C };
    let other = if on == B { C } else { B };
    // Deleted behind the engine's back right after its write (reads show it at once).
    let dest = Dest::Cidr(Cidr::parse(&c[0]).expect("cidr"));
    h.vpc.change(&RouteAction::Delete { rtb: "rtb-0".into(), dest, old_router: None, reason: DeleteReason::NotInSpec });
    h.failed(&[A, on]);
    let failed = now();
    assert!(
        h.until(Duration::from_secs(10), |h| h.vpc.routes_on(other) == 4).await,
        "the deleted route was not recreated"
    );
    assert!(now() - failed < Duration::from_secs(2), "recreated only after {:?}", now() - failed);
    assert_eq!(h.status().errors, 0, "a failed reconcile: {}", h.status().last_result);
}
