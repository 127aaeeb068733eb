//! What the engine tells the world when routes move: announcements for notifiers (`--notify`).
//!
//! The engine hands each one to the [`Announcer`] port and goes on: an announcer must never
//! block (the host's queues each notifier's copy and drops the oldest when full).

use std::net::Ipv4Addr;

use vpcrouter_planner::model::RouteAction;

/// Something worth telling: a route moved, a failover ended, a router's health changed, the
/// leadership changed, a reconcile failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Announcement {
    /// A route write was acknowledged.
    RouteChanged {
        /// The route's destination: a CIDR, or a prefix list id.
        cidr: String,
        /// The route table written.
        route_table: String,
        /// The router the route now points at; `None` when it was deleted.
        router: Option<Ipv4Addr>,
        /// The router it pointed at before; `None` for a new route (or an unknown target).
        old_router: Option<Ipv4Addr>,
        /// Why, as the change's log line says it (`router failed`, `route missing`, ...).
        reason: String,
    },
    /// A failover ended: its routes moved off the failed routers.
    Failover {
        /// The routers that failed.
        routers: Vec<Ipv4Addr>,
        /// Routes moved off them.
        routes_moved: u64,
        /// Health report to last write acknowledged, in seconds (the failover log line's figure).
        seconds: f64,
    },
    /// A router of the spec became failed or questionable (in cluster mode: by the quorum).
    RouterDown(Ipv4Addr),
    /// A router is neither failed nor questionable any more.
    RouterUp(Ipv4Addr),
    /// Cluster mode: this instance became the leader.
    Leader,
    /// Cluster mode: this instance is a follower (at start, or it lost the leadership).
    Follower,
    /// A reconcile failed (it is retried with backoff).
    ReconcileError(String),
}

/// Where announcements go. Called on the engine's task: it must return at once.
pub trait Announcer: Send + Sync {
    /// Takes one announcement.
    fn announce(&self, a: Announcement);
}

/// An announcer that tells no one.
impl Announcer for () {
    fn announce(&self, _: Announcement) {}
}

/// The announcement of an acknowledged route write, with the reason its log line gives;
/// `None` for a prefix list's change (not a route).
pub(crate) fn route_changed(a: &RouteAction) -> Option<Announcement> {
    let (old_router, reason) = a.old_router_and_reason()?;
    let (cidr, route_table) = (a.dest().to_string(), a.rtb().to_string());
    Some(Announcement::RouteChanged { cidr, route_table, router: a.new_router(), old_router, reason })
}
