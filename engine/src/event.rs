//! What the engine reacts to, and how it is told to stop.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};

use vpcrouter_plugin_api::{HealthReport, RouteSpec};

use crate::quorum::Report;

/// Something the engine reacts to. Every message is a full snapshot of its kind, so only
/// the latest of each kind matters.
#[derive(Debug)]
pub enum Event {
    /// A full route spec from the watcher plugin.
    Spec(RouteSpec),
    /// A full health report from the health plugin.
    Health(HealthReport),
    /// Cluster mode: the live health views of the other instances, by instance id.
    Peers(BTreeMap<String, Report>),
    /// Cluster mode: this instance leads (`leader: true`) or does not; `leader_id` is the
    /// current leader, if known.
    Role {
        /// Whether this instance may write.
        leader: bool,
        /// The leader's instance id.
        leader_id: Option<String>,
    },
    /// The drained routers now.
    Drains(BTreeSet<Ipv4Addr>),
    /// A plugin dropped its queue: it can no longer do its job.
    QueueClosed(String),
    /// SIGTERM/SIGINT: stop.
    Stop,
}

/// SIGTERM/SIGINT as the engine sees it: a flag it looks at between the steps of a
/// reconcile (planning, logging, the status update), and a notification that abandons
/// the VPC calls in flight.
#[derive(Debug, Default)]
pub struct StopSignal {
    /// Set once a stop is requested; never cleared.
    requested: AtomicBool,
    /// Wakes the engine while it waits for a VPC call (it keeps a permit when no one waits).
    notify: tokio::sync::Notify,
}

impl StopSignal {
    /// Requests the stop: the engine returns at its next look, abandoning VPC calls.
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// True once a stop was requested.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Resolves once a stop is requested.
    pub async fn wait(&self) {
        if !self.requested() {
            self.notify.notified().await;
        }
    }
}
