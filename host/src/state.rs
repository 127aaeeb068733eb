//! The engine's state as the status server shows it: counters, the health and spec in
//! force, and the state of every managed route after the last reconcile. The engine
//! ([`crate::engine`]) writes it; the status documents ([`crate::status`]) are rendered
//! from a snapshot of it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use vpcrouter_plugin_api::RouteSpec;

use crate::cluster::Report;
use crate::vpc::model::{Dest, Family, ManagedTable, Notice, Plan, RouteAction, TableSelection, VpcState};
use crate::vpc::plan::FailbackPolicy;

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
    /// Failovers: route moves off failed or questionable routers, after a health change.
    pub failovers: u64,
    /// The last failover, as logged.
    pub last_failover: Option<FailoverSummary>,
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
    /// From the health report to the last write acknowledged.
    pub seconds: f64,
}

/// A group of CIDRs and the prefix list that carries it (`/status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListView {
    /// Group key, e.g. `ipv4-10.1.0.5-10.1.1.7`.
    pub group: String,
    /// Address family.
    pub family: Family,
    /// The candidate routers.
    pub hosts: Vec<Ipv4Addr>,
    /// The group's CIDRs.
    pub members: Vec<String>,
    /// The list (`None` until it exists).
    pub list_id: Option<String>,
    /// Its name.
    pub name: String,
    /// Its max entries: what its route weighs in each table.
    pub max_entries: u32,
    /// Its version.
    pub version: i64,
}

/// The groups of a plan with their lists as the state (with the plan applied) has them.
pub fn list_views(state: &VpcState, plan: &Plan) -> Vec<ListView> {
    plan.groups
        .iter()
        .map(|(group, id)| {
            let list = id.as_deref().and_then(|id| state.prefix_list(id));
            ListView {
                group: group.key.clone(),
                family: group.family,
                hosts: group.hosts.clone(),
                members: group.members.iter().map(ToString::to_string).collect(),
                list_id: id.clone(),
                name: list.map(|l| l.name.clone()).unwrap_or_default(),
                max_entries: list.map_or(0, |l| l.max_entries),
                version: list.map_or(0, |l| l.version),
            }
        })
        .collect()
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

/// Route states per route table id, then per destination (a CIDR, or a prefix list id).
pub type TableRoutes = BTreeMap<String, BTreeMap<String, TableRoute>>;

/// The state of every route the plan manages, once executed. `failures` are the actions
/// that failed, with their error; `dry_run` marks plans that were only logged. Routes
/// that were deleted, or are no longer managed, are not listed. A route to a group's
/// prefix list is listed under the list's id and under each CIDR it carries (unless the
/// table still has a route of the CIDR's own, which wins by priority).
pub fn table_routes(state: &VpcState, plan: &Plan, failures: &[(String, Dest, String)], dry_run: bool) -> TableRoutes {
    let owner = |ip: Ipv4Addr| {
        state
            .instances
            .iter()
            .find_map(|i| i.enis.iter().find(|e| e.private_ips.contains(&ip)).map(|e| (i.id.clone(), e.id.clone())))
    };
    let mut out = TableRoutes::new();
    for ((rtb, dest), router) in &plan.routes {
        let action = plan.actions.iter().find(|a| a.is_route() && a.rtb() == rtb && a.dest() == *dest);
        let (mut message, old_router) = match action {
            Some(RouteAction::Create { .. }) => ("Added route".to_string(), None),
            Some(RouteAction::Replace { old_router, reason, .. }) => (format!("Updated: {reason}"), *old_router),
            Some(RouteAction::Delete { .. }) => continue,
            Some(_) => (String::new(), None),
            None if router.is_some() => ("Current: Route exist and up to date".to_string(), None),
            None => ("None healthy: route left as it is".to_string(), None),
        };
        if dry_run && action.is_some() {
            message = format!("Dry run, not done: {message}");
        }
        if let Some((_, _, e)) = failures.iter().find(|(r, d, _)| r == rtb && d == dest) {
            message = format!("{message} [ERROR: {e}]");
        }
        let (instance_id, eni_id) = router.and_then(owner).map_or((None, None), |(i, e)| (Some(i), Some(e)));
        let route = TableRoute { router: *router, instance_id, eni_id, old_router, message };
        let table = out.entry(rtb.clone()).or_default();
        if let Dest::List(id) = dest {
            let members = plan.groups.iter().find(|(_, l)| l.as_deref() == Some(id)).map(|(g, _)| &g.members);
            for cidr in members.into_iter().flatten() {
                if !plan.routes.contains_key(&(rtb.clone(), Dest::Cidr(*cidr))) {
                    let message = format!("Via prefix list {id}: {}", route.message);
                    table.insert(cidr.to_string(), TableRoute { message, ..route.clone() });
                }
            }
        }
        table.insert(dest.to_string(), route);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vpc::model::{Cidr, DeleteReason, Eni, Group, Instance, ReplaceReason, RouterTarget};

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn table_routes_follow_the_plan_and_drop_deleted_routes() {
        let net = Dest::Cidr(Cidr::parse("10.55.0.0/16").unwrap());
        let gone = Dest::Cidr(Cidr::parse("10.66.0.0/16").unwrap());
        let state = VpcState {
            instances: vec![Instance {
                id: "i-2".into(),
                enis: vec![Eni {
                    id: "eni-2".into(),
                    subnet_id: "s".into(),
                    private_ips: vec![ip("10.0.0.2")],
                    device_index: 0,
                    source_dest_check: Some(false),
                }],
            }],
            ..Default::default()
        };
        let target = RouterTarget { ip: ip("10.0.0.2"), instance_id: "i-2".into(), eni_id: "eni-2".into() };
        let mut plan = Plan::default();
        plan.actions.push(RouteAction::Create { rtb: "rtb-1".into(), dest: net.clone(), target: target.clone() });
        plan.actions.push(RouteAction::Replace {
            rtb: "rtb-2".into(),
            dest: net.clone(),
            target,
            old_router: Some(ip("10.0.0.1")),
            reason: ReplaceReason::RouterFailed,
        });
        plan.actions.push(RouteAction::Delete {
            rtb: "rtb-2".into(),
            dest: gone,
            old_router: None,
            reason: DeleteReason::NotInSpec,
        });
        plan.routes.insert(("rtb-1".into(), net.clone()), Some(ip("10.0.0.2")));
        plan.routes.insert(("rtb-2".into(), net.clone()), Some(ip("10.0.0.2")));
        plan.routes.insert(("rtb-3".into(), net.clone()), Some(ip("10.0.0.2")));
        plan.routes.insert(("rtb-4".into(), net.clone()), None);
        let failures = vec![("rtb-2".to_string(), net.clone(), "throttled".to_string())];
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

    #[test]
    fn a_list_route_is_shown_under_each_cidr_it_carries() {
        let (a, b) = (Cidr::parse("10.1.0.0/16").unwrap(), Cidr::parse("2001:db8::/32").unwrap());
        let group = Group { key: "k".into(), family: Family::V4, hosts: vec![ip("10.0.0.2")], members: vec![a, b] };
        let mut plan = Plan { groups: vec![(group, Some("pl-1".into()))], ..Default::default() };
        plan.routes.insert(("rtb-1".into(), Dest::List("pl-1".into())), Some(ip("10.0.0.2")));
        // rtb-2 still has a route of b's own (it wins by priority): b is shown by it.
        plan.routes.insert(("rtb-2".into(), Dest::List("pl-1".into())), Some(ip("10.0.0.2")));
        plan.routes.insert(("rtb-2".into(), Dest::Cidr(b)), Some(ip("10.0.0.3")));
        let t = table_routes(&VpcState::default(), &plan, &[], false);
        assert_eq!(t["rtb-1"]["pl-1"].message, "Current: Route exist and up to date");
        assert_eq!(t["rtb-1"]["10.1.0.0/16"].message, "Via prefix list pl-1: Current: Route exist and up to date");
        assert_eq!(t["rtb-1"]["2001:db8::/32"].router, Some(ip("10.0.0.2")));
        assert_eq!(t["rtb-2"]["2001:db8::/32"].router, Some(ip("10.0.0.3")));
        assert_eq!(t["rtb-2"]["10.1.0.0/16"].router, Some(ip("10.0.0.2")));
    }
}
