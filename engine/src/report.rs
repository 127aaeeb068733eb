//! The engine's log lines: one per change, one per failover, one per drain, notices. Plain
//! functions of the values they report: the engine calls them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use vpcrouter_planner::model::{Cidr, DeleteReason, Dest, Notice, RouteAction, VpcState, ROUTE_MISSING};

use crate::status::FailoverSummary;

/// A health change whose routers carried no route: nothing to report but a debug line.
pub(crate) fn log_nothing_moved(routers: &BTreeSet<Ipv4Addr>) {
    tracing::debug!(routers = %join_ips(routers), "health change: no route was on these routers");
}

/// A failover's one line, once it is over; `took`: from the health report to the last
/// write acknowledged.
pub(crate) fn log_failover(summary: &FailoverSummary, took: Duration) {
    tracing::info!(
        routers = %join_ips(&summary.routers), routes_moved = summary.routes_moved, writes = summary.writes,
        throttled = summary.throttled, revisions = summary.revisions, withdrawn = summary.withdrawn,
        ms = took.as_millis() as u64,
        "failover: {} route(s) moved off {} in {} ms (health report to last write acknowledged)",
        summary.routes_moved, join_ips(&summary.routers), took.as_millis()
    );
}

/// The routes a reconcile moved off drained routers (`moves`: how many, by router), one line.
pub(crate) fn log_drain_moves(moves: &BTreeMap<Ipv4Addr, u64>) {
    let moved: u64 = moves.values().sum();
    let routers: BTreeSet<Ipv4Addr> = moves.keys().copied().collect();
    tracing::info!(
        routers = %join_ips(&routers), routes_moved = moved,
        "drain: {moved} route(s) moved off drained router(s) {}", join_ips(&routers)
    );
}

/// The notices that appeared since the last plan (warnings) and those that cleared.
pub(crate) fn log_notices(last: &BTreeSet<Notice>, now: &BTreeSet<Notice>) {
    for n in now.difference(last) {
        tracing::warn!("{n}");
    }
    for n in last.difference(now) {
        tracing::info!("resolved: {n}");
    }
}

/// Routers for a log line: `10.0.0.1,10.0.0.2`.
pub(crate) fn join_ips(set: &BTreeSet<Ipv4Addr>) -> String {
    set.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",")
}

fn ip_text(ip: &Option<Ipv4Addr>) -> String {
    ip.map_or_else(|| "(unknown)".to_string(), |i| i.to_string())
}

/// What a prefix list's route carries, for its log line: ` (prefix list of 3 CIDRs: …)`
/// with the first few; empty for a CIDR's own route.
fn carried(dest: &Dest, state: &VpcState) -> String {
    const SHOWN: usize = 8;
    let Dest::List(id) = dest else { return String::new() };
    let Some(list) = state.prefix_list(id) else { return String::new() };
    let more = if list.entries.len() > SHOWN { ",…" } else { "" };
    let first = cidrs(&list.entries[..list.entries.len().min(SHOWN)]);
    format!(" (prefix list {} of {} CIDR(s): {first}{more})", list.name, list.entries.len())
}

/// One info line per change, with the fields operators grep for (`cidr` is the route's
/// destination: a CIDR, or a prefix list id, whose name and CIDRs end the message).
/// `state` is the VPC the change was planned from.
pub(crate) fn log_action(what: &str, action: &RouteAction, state: &VpcState) {
    match action {
        RouteAction::Create { rtb, dest: cidr, target } => tracing::info!(
            %cidr, rtb, router = %target.ip, old_router = "(none)", reason = ROUTE_MISSING,
            instance = %target.instance_id, eni = %target.eni_id, "{what}: added{}", carried(cidr, state)
        ),
        RouteAction::Replace { rtb, dest: cidr, target, old_router, reason } => tracing::info!(
            %cidr, rtb, router = %target.ip, old_router = %ip_text(old_router), %reason,
            instance = %target.instance_id, eni = %target.eni_id, "{what}: replaced{}", carried(cidr, state)
        ),
        RouteAction::Delete { rtb, dest: cidr, old_router, reason } => tracing::info!(
            %cidr, rtb, old_router = %ip_text(old_router), %reason, "{what}: deleted{}", carried(cidr, state)
        ),
        RouteAction::CreateList { name, group, max_entries } => tracing::info!(
            list = %name, group = %group.key, routers = %join_ips(&group.hosts.iter().copied().collect()),
            members = %cidrs(&group.members), max_entries, "{what}: created for {} CIDR(s)", group.members.len()
        ),
        RouteAction::ModifyList { id, name, add, remove, .. } => tracing::info!(
            list = %id, name = %name, added = %cidrs(add), removed = %cidrs(remove),
            "{what}: {} entries added, {} removed", add.len(), remove.len()
        ),
        RouteAction::DeleteList { id, name } => tracing::info!(
            list = %id, name = %name, reason = %DeleteReason::ListRetired, "{what}: deleted"
        ),
    }
}

fn cidrs(list: &[Cidr]) -> String {
    list.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}
