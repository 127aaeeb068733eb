//! The engine's state as the status server shows it: counters, the health and spec in
//! force, and the state of every managed route after the last reconcile. The engine
//! ([`crate::engine`]) writes it; the host's status documents and metrics are rendered
//! from a snapshot of it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use vpcrouter_plugin_api::RouteSpec;

use crate::quorum::Report;
use vpcrouter_planner::model::{ManagedTable, Notice, TableSelection};
use vpcrouter_planner::plan::FailbackPolicy;
pub use vpcrouter_planner::view::{list_views, table_routes, ListView, TableRoute, TableRoutes};

/// Counters and state the status server shows.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Spec in force.
    pub spec: RouteSpec,
    /// Current failed hosts.
    pub failed: BTreeSet<Ipv4Addr>,
    /// Current questionable hosts.
    pub questionable: BTreeSet<Ipv4Addr>,
    /// Reconciles started.
    pub reconciles: u64,
    /// Routes created / replaced / deleted.
    pub created: u64,
    /// See `created`.
    pub replaced: u64,
    /// See `created`.
    pub deleted: u64,
    /// Prefix lists created, modified or deleted.
    pub list_changes: u64,
    /// Failed reads or writes.
    pub errors: u64,
    /// Plans revised while they were being written, because an event changed the facts.
    pub revisions: u64,
    /// Writes not yet started that a revision withdrew.
    pub withdrawn: u64,
    /// Routes a read showed otherwise than an acknowledged write within the consistency
    /// window: kept as written (EC2's reads lag its writes).
    pub lagging_reads: u64,
    /// Failovers: route moves off failed or questionable routers, after a health change.
    pub failovers: u64,
    /// The last failover, as logged.
    pub last_failover: Option<FailoverSummary>,
    /// The last [`RECENT_FAILOVERS`] failovers, oldest first (the last is `last_failover`):
    /// the timeline of the status page and of `vpcrouter status`.
    pub recent_failovers: Vec<FailoverSummary>,
    /// `--failback`, `--failback-after`.
    pub failback_policy: FailbackPolicy,
    /// `--failback preferred`: per CIDR, its preferred router and where failback stands
    /// after the last reconcile.
    pub failback: BTreeMap<String, FailbackEntry>,
    /// `--failback preferred --zone-affinity`: the same per (CIDR, zone), for the tables of
    /// a zone that use a router of their own zone.
    pub zone_failback: BTreeMap<(String, String), FailbackEntry>,
    /// `--route-tables` / `--route-table-tag`: the rule that selects the managed tables.
    pub table_selection: TableSelection,
    /// `--zone-affinity`.
    pub zone_affinity: bool,
    /// The tables the last reconcile managed (id, zone, gateway).
    pub managed: Vec<ManagedTable>,
    /// What the last plan reported that is not a change (a CIDR a gateway table cannot
    /// hold, a router with source/destination checking on, ...).
    pub notices: Vec<Notice>,
    /// Routes moved back to their preferred router (one per route table).
    pub failed_back: u64,
    /// When the last reconcile ended, and how long it took.
    pub last_reconcile: Option<(SystemTime, Duration)>,
    /// `ok` or the last error.
    pub last_result: String,
    /// State of each managed route after the last reconcile that read the VPC.
    pub tables: TableRoutes,
    /// Prefix-list mode: each group and its list, after the last reconcile.
    pub lists: Vec<ListView>,
    /// Each managed table's weight against the route quota after the last reconcile.
    pub weights: BTreeMap<String, u32>,
    /// The hosts the health plugin was last asked to watch.
    pub working_set: Vec<String>,
    /// This instance's own health view (in cluster mode `failed`/`questionable` are the
    /// quorum of all instances' views).
    pub local_health: Report,
}

/// One CIDR's preferred router and where failback stands (`/status`).
#[derive(Debug, Clone, PartialEq)]
pub struct FailbackEntry {
    /// The CIDR's first candidate.
    pub preferred: Ipv4Addr,
    /// `on_preferred`, `failing_back`, `waiting` or `preferred_unavailable`.
    pub state: &'static str,
    /// `waiting`: when the routes may move back (if the preferred router stays healthy).
    pub possible_at: Option<SystemTime>,
}

/// One failover as the log line and `/status` report it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FailoverSummary {
    /// The routers that failed (or became questionable).
    pub routers: BTreeSet<Ipv4Addr>,
    /// Routes moved to another router.
    pub routes_moved: u64,
    /// Write calls made, retries included.
    pub writes: u64,
    /// Throttled answers.
    pub throttled: u64,
    /// Times the plan was revised while it was being written (another router failed,
    /// the spec or a drain changed).
    pub revisions: u64,
    /// Writes not yet started that those revisions withdrew.
    pub withdrawn: u64,
    /// From the health report to the last write acknowledged.
    pub seconds: f64,
    /// When the last write was acknowledged (wall clock): when the failover ended.
    pub ended: Option<SystemTime>,
}

/// Failovers kept in [`Status::recent_failovers`].
pub const RECENT_FAILOVERS: usize = 10;

impl Status {
    /// Records a finished failover as the last one and in the recent ones (at most
    /// [`RECENT_FAILOVERS`], the oldest dropped first).
    pub fn remember_failover(&mut self, summary: FailoverSummary) {
        if self.recent_failovers.len() >= RECENT_FAILOVERS {
            self.recent_failovers.remove(0);
        }
        self.recent_failovers.push(summary.clone());
        self.last_failover = Some(summary);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_failovers_keep_the_last_ten_oldest_first() {
        let mut st = Status::default();
        for moved in 1..=RECENT_FAILOVERS as u64 + 3 {
            st.remember_failover(FailoverSummary { routes_moved: moved, ..Default::default() });
        }
        let moved: Vec<u64> = st.recent_failovers.iter().map(|f| f.routes_moved).collect();
        assert_eq!(moved, (4..=13).collect::<Vec<u64>>());
        assert_eq!(st.last_failover.map(|f| f.routes_moved), Some(13));
    }
}
