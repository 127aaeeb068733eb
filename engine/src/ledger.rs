//! Own writes over lagging reads.
//!
//! EC2's API is eventually consistent: AWS documents that a `Describe*` call made right
//! after a change may still show the state from before it, and recommends confirming a
//! change with reads spaced by backoff ("Eventual consistency in the Amazon EC2 API", EC2
//! API reference). Believing such a read would undo an acknowledged write: the route would
//! be written a second time, perhaps to another candidate, moving its traffic twice.
//!
//! So an acknowledged write is a fact for the consistency window (`--consistency-window`):
//! a read that does not show it gets it laid over, until a read agrees (the record is
//! dropped) or the window has passed (the read is believed, and a route really changed
//! behind vpcrouter's back is repaired as before). A write EC2 refuses because the route is
//! not as planned (it was deleted or replaced meanwhile) ends the record of that route at
//! once: the refusal is EC2's word on the route now.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use vpcrouter_planner::model::{Applied, Dest, RouteAction, VpcState};

/// An acknowledged write, kept until a read shows it or the window passes.
#[derive(Debug)]
struct Own {
    /// The write as planned: laid over a read that does not show it yet.
    action: RouteAction,
    /// What the write did to the route, as acknowledged: a read showing it drops the record.
    applied: Applied,
    /// When it was acknowledged: the record is trusted for the consistency window from then.
    acked: Instant,
}

/// What laying the ledger over a read did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Overlay {
    /// Changes the read did not show yet, kept as written.
    pub routes: usize,
    /// When the first of those leaves the window (a read is due then to confirm them).
    pub until: Option<Instant>,
}

/// The writes acknowledged within the consistency window, by (table, destination).
#[derive(Debug)]
pub(crate) struct Ledger {
    /// `--consistency-window`; zero keeps nothing.
    window: Duration,
    /// The last acknowledged write of each (table or list name, destination).
    writes: HashMap<(String, Dest), Own>,
}

impl Ledger {
    /// An empty ledger keeping writes for `window`.
    pub fn new(window: Duration) -> Ledger {
        Ledger { window, writes: HashMap::new() }
    }

    /// Records a write acknowledged at `acked` (it replaces the record of an earlier write
    /// of the same route).
    pub fn record(&mut self, action: &RouteAction, applied: &Applied, acked: Instant) {
        if self.window.is_zero() {
            return;
        }
        let key = (action.rtb().to_string(), action.dest());
        self.writes.insert(key, Own { action: action.clone(), applied: applied.clone(), acked });
    }

    /// Forgets the write of `action`'s route: EC2 refused a later write of it as planned from
    /// a stale state, so the record is not a fact any more (the route changed since).
    pub fn forget(&mut self, action: &RouteAction) {
        self.writes.remove(&(action.rtb().to_string(), action.dest()));
    }

    /// Forgets every write (another leader may have written since).
    pub fn clear(&mut self) {
        self.writes.clear();
    }

    /// Lays the writes a fresh read does not show yet over it, oldest first; forgets those
    /// it shows and those older than the window.
    pub fn overlay(&mut self, state: &mut VpcState, now: Instant) -> Overlay {
        let window = self.window;
        self.writes
            .retain(|_, w| now.saturating_duration_since(w.acked) < window && !state.shows(&w.action, &w.applied));
        let mut kept: Vec<&Own> = self.writes.values().collect();
        kept.sort_by_key(|w| w.acked);
        for w in &kept {
            state.apply(&w.action, &w.applied);
        }
        Overlay { routes: kept.len(), until: kept.first().map(|w| w.acked + window) }
    }

    /// Writes kept now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.writes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vpcrouter_planner::model::{ReplaceReason, Route, RouteTable, RouterTarget};

    fn state(instance: &str) -> VpcState {
        let route = Route {
            dest: Some(Dest::Cidr("10.55.0.0/16".parse().expect("cidr"))),
            instance_id: Some(instance.into()),
            eni_id: None,
            other_target: None,
            blackhole: false,
        };
        VpcState {
            route_tables: vec![RouteTable { id: "rtb-1".into(), routes: vec![route], ..RouteTable::default() }],
            ..VpcState::default()
        }
    }

    fn replace(instance: &str) -> RouteAction {
        RouteAction::Replace {
            rtb: "rtb-1".into(),
            dest: Dest::Cidr("10.55.0.0/16".parse().expect("cidr")),
            target: RouterTarget {
                ip: "10.1.0.9".parse().expect("ip"),
                instance_id: instance.into(),
                eni_id: String::new(),
            },
            old_router: None,
            reason: ReplaceReason::RouterFailed,
        }
    }

    #[test]
    fn a_read_that_lags_gets_the_write_laid_over_until_the_window_ends() {
        let t0 = Instant::now();
        let mut ledger = Ledger::new(Duration::from_secs(5));
        ledger.record(&replace("i-b"), &Applied::default(), t0);
        let mut read = state("i-a");
        let o = ledger.overlay(&mut read, t0 + Duration::from_secs(1));
        assert_eq!(o, Overlay { routes: 1, until: Some(t0 + Duration::from_secs(5)) });
        assert_eq!(read, state("i-b"), "the lagging read is corrected to the acknowledged write");
        let mut late = state("i-a");
        assert_eq!(ledger.overlay(&mut late, t0 + Duration::from_secs(5)).routes, 0);
        assert_eq!(late, state("i-a"), "after the window the read is believed");
        assert_eq!(ledger.len(), 0);
    }

    #[test]
    fn a_read_that_agrees_ends_the_record() {
        let t0 = Instant::now();
        let mut ledger = Ledger::new(Duration::from_secs(5));
        ledger.record(&replace("i-b"), &Applied::default(), t0);
        let mut read = state("i-b");
        assert_eq!(ledger.overlay(&mut read, t0).routes, 0);
        assert_eq!(ledger.len(), 0, "a read showing the write ends its record");
        let mut later = state("i-a");
        assert_eq!(ledger.overlay(&mut later, t0 + Duration::from_secs(1)).routes, 0);
        assert_eq!(later, state("i-a"), "a change after the read that agreed is believed");
    }

    #[test]
    fn a_zero_window_keeps_nothing() {
        let t0 = Instant::now();
        let mut ledger = Ledger::new(Duration::ZERO);
        ledger.record(&replace("i-b"), &Applied::default(), t0);
        let mut read = state("i-a");
        assert_eq!(ledger.overlay(&mut read, t0).routes, 0);
        assert_eq!(read, state("i-a"));
    }
}
