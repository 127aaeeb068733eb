//! The cluster's vocabulary: its options, what the engine hears from it, and its state as
//! the status server shows it.

use std::collections::{BTreeMap, BTreeSet};

use vpcrouter_drains::DrainSet;
use vpcrouter_engine::quorum::{Quorum, Report};

/// `--cluster-*` options.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// etcd: the endpoints, TLS and the user.
    pub conn: vpcrouter_etcd_conn::EtcdConn,
    /// Instances with the same name form one cluster (default: the VPC id).
    pub name: String,
    /// This instance's id, unique in the cluster (default: the hostname).
    pub instance_id: String,
    /// Lease time-to-live in seconds: how long a dead leader blocks a takeover.
    pub lease_ttl: u64,
    /// How many live health reports must call a host failed.
    pub quorum: Quorum,
}

impl ClusterConfig {
    /// The key prefix of this cluster, ending in `/`.
    pub fn prefix(&self) -> String {
        format!("/vpcrouter/{}/", self.name)
    }

    /// The leader key.
    pub fn leader_key(&self) -> String {
        format!("{}leader", self.prefix())
    }

    /// The prefix of the drain keys, ending in `/`.
    pub fn drain_prefix(&self) -> String {
        format!("{}drains/", self.prefix())
    }
}

/// Checks a cluster name or instance id: it becomes part of etcd keys.
pub fn check_name(what: &str, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(format!("{what} '{value}' is not usable: use 1–128 characters from A-Z a-z 0-9 - _ . :"))
    }
}

/// What the engine hears from the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// This instance became leader (`leader: true`) or is not (or no longer) the leader;
    /// `leader_id` is the current leader, if any is known.
    Role {
        /// Whether this instance may write to EC2.
        leader: bool,
        /// The leader's instance id.
        leader_id: Option<String>,
    },
    /// The live health reports of the other instances, by instance id.
    Reports(BTreeMap<String, Report>),
    /// The drains etcd holds (sent before the role, so a new leader knows them).
    Drains(DrainSet),
}

/// This instance's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Holds the leader key: reconciles and writes.
    Leader,
    /// Connected; another instance (or none yet) leads.
    Follower,
    /// No etcd session: neither leads nor counts as a member.
    #[default]
    Disconnected,
}

impl Role {
    /// `leader`, `follower` or `disconnected`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Disconnected => "disconnected",
        }
    }
}

/// A peer's report as the status server shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerView {
    /// The report.
    pub report: Report,
    /// When the instance published it (its own RFC 3339 time).
    pub at: String,
}

/// What `/status` and `/metrics` show of the cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterStatus {
    /// `--cluster-name`.
    pub name: String,
    /// `--instance-id`.
    pub instance_id: String,
    /// `--health-quorum`.
    pub quorum: &'static str,
    /// The lease TTL etcd granted (or the requested one before the first grant).
    pub lease_ttl_secs: u64,
    /// This instance's role.
    pub role: Role,
    /// The leader's instance id.
    pub leader: Option<String>,
    /// Live members' instance ids.
    pub members: BTreeSet<String>,
    /// Leader elections seen since start (each new holder of the leader key).
    pub leader_changes: u64,
    /// Live health reports, by instance id (this instance's included once published).
    pub reports: BTreeMap<String, PeerView>,
    /// Requests sent to etcd (unary calls and keep-alive messages).
    pub etcd_requests: u64,
    /// The last session error, while disconnected.
    pub last_error: Option<String>,
}
