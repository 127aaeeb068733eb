//! The engine's state as the status server shows it: counters, the health and spec in
//! force, and the state of every managed route after the last reconcile. The engine
//! ([`crate::engine`]) writes it; the status documents ([`crate::status`]) are rendered
//! from a snapshot of it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use vpcrouter_plugin_api::RouteSpec;

use crate::cluster::Report;
use crate::vpc::model::{Cidr, Plan, RouteAction, VpcState};

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
    /// Failed reads or writes.
    pub errors: u64,
    /// Failovers: route moves off failed or questionable routers, after a health change.
    pub failovers: u64,
    /// The last failover, as logged.
    pub last_failover: Option<FailoverSummary>,
    /// When the last reconcile ended, and how long it took.
    pub last_reconcile: Option<(SystemTime, Duration)>,
    /// `ok` or the last error.
    pub last_result: String,
    /// State of each managed route after the last reconcile that read the VPC.
    pub tables: TableRoutes,
    /// The hosts the health plugin was last asked to watch.
    pub working_set: Vec<String>,
    /// This instance's own health view (in cluster mode `failed`/`questionable` are the
    /// quorum of all instances' views).
    pub local_health: Report,
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
    /// From the health report to the last write acknowledged.
    pub seconds: f64,
}

/// State of one managed route after the last reconcile (`/vpc`, `/status`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableRoute {
    /// The router the route points at (`None`: unknown, or left on a bad target).
    pub router: Option<Ipv4Addr>,
    /// The instance owning `router`.
    pub instance_id: Option<String>,
    /// The interface owning `router`.
    pub eni_id: Option<String>,
    /// The router before a replacement.
    pub old_router: Option<Ipv4Addr>,
    /// What the last reconcile did, in vpc-router's words.
    pub message: String,
}

/// Route states per route table id, then per CIDR.
pub type TableRoutes = BTreeMap<String, BTreeMap<String, TableRoute>>;

/// The state of every route the plan manages, once executed. `failures` are the actions
/// that failed, with their error; `dry_run` marks plans that were only logged. Routes
/// that were deleted, or are no longer managed, are not listed.
pub fn table_routes(state: &VpcState, plan: &Plan, failures: &[(String, Cidr, String)], dry_run: bool) -> TableRoutes {
    let owner = |ip: Ipv4Addr| {
        state
            .instances
            .iter()
            .find_map(|i| i.enis.iter().find(|e| e.private_ips.contains(&ip)).map(|e| (i.id.clone(), e.id.clone())))
    };
    let mut out = TableRoutes::new();
    for ((rtb, cidr), router) in &plan.routes {
        let action = plan.actions.iter().find(|a| a.rtb() == rtb && a.cidr() == *cidr);
        let (mut message, old_router) = match action {
            Some(RouteAction::Create { .. }) => ("Added route".to_string(), None),
            Some(RouteAction::Replace { old_router, reason, .. }) => (format!("Updated: {reason}"), *old_router),
            Some(RouteAction::Delete { .. }) => continue,
            None if router.is_some() => ("Current: Route exist and up to date".to_string(), None),
            None => ("None healthy: route left as it is".to_string(), None),
        };
        if dry_run && action.is_some() {
            message = format!("Dry run, not done: {message}");
        }
        if let Some((_, _, e)) = failures.iter().find(|(r, c, _)| r == rtb && c == cidr) {
            message = format!("{message} [ERROR: {e}]");
        }
        let (instance_id, eni_id) = router.and_then(owner).map_or((None, None), |(i, e)| (Some(i), Some(e)));
        let route = TableRoute { router: *router, instance_id, eni_id, old_router, message };
        out.entry(rtb.clone()).or_default().insert(cidr.to_string(), route);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vpc::model::{Eni, Instance, ReplaceReason, RouterTarget};

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn table_routes_follow_the_plan_and_drop_deleted_routes() {
        let net = Cidr::parse("10.55.0.0/16").unwrap();
        let gone = Cidr::parse("10.66.0.0/16").unwrap();
        let state = VpcState {
            instances: vec![Instance {
                id: "i-2".into(),
                enis: vec![Eni {
                    id: "eni-2".into(),
                    subnet_id: "s".into(),
                    private_ips: vec![ip("10.0.0.2")],
                    device_index: 0,
                }],
            }],
            ..Default::default()
        };
        let target = RouterTarget { ip: ip("10.0.0.2"), instance_id: "i-2".into(), eni_id: "eni-2".into() };
        let mut plan = Plan::default();
        plan.actions.push(RouteAction::Create { rtb: "rtb-1".into(), cidr: net, target: target.clone() });
        plan.actions.push(RouteAction::Replace {
            rtb: "rtb-2".into(),
            cidr: net,
            target,
            old_router: Some(ip("10.0.0.1")),
            reason: ReplaceReason::RouterFailed,
        });
        plan.actions.push(RouteAction::Delete { rtb: "rtb-2".into(), cidr: gone, old_router: None });
        plan.routes.insert(("rtb-1".into(), net), Some(ip("10.0.0.2")));
        plan.routes.insert(("rtb-2".into(), net), Some(ip("10.0.0.2")));
        plan.routes.insert(("rtb-3".into(), net), Some(ip("10.0.0.2")));
        plan.routes.insert(("rtb-4".into(), net), None);
        let failures = vec![("rtb-2".to_string(), net, "throttled".to_string())];
        let t = table_routes(&state, &plan, &failures, false);
        assert_eq!(t["rtb-1"]["10.55.0.0/16"].message, "Added route");
        assert_eq!(t["rtb-1"]["10.55.0.0/16"].eni_id.as_deref(), Some("eni-2"));
        assert_eq!(t["rtb-2"]["10.55.0.0/16"].message, "Updated: router failed [ERROR: throttled]");
        assert_eq!(t["rtb-2"]["10.55.0.0/16"].old_router, Some(ip("10.0.0.1")));
        assert!(!t["rtb-2"].contains_key("10.66.0.0/16"));
        assert_eq!(t["rtb-3"]["10.55.0.0/16"].message, "Current: Route exist and up to date");
        assert_eq!(t["rtb-4"]["10.55.0.0/16"].instance_id, None);
        let dry = table_routes(&state, &plan, &[], true);
        assert_eq!(dry["rtb-1"]["10.55.0.0/16"].message, "Dry run, not done: Added route");
    }
}
