//! Cluster mode (`--cluster-etcd`): several vpcrouters as one, coordinated through etcd.
//!
//! Every instance runs its watcher and health plugin. Through etcd they:
//! * elect one leader: a lease (`--cluster-lease-ttl`) kept alive by each instance, and a
//!   leader key created only if absent, tied to the winner's lease. Only the leader
//!   reconciles, and before each EC2 write it confirms (see [`ClusterHandle::confirm`]) that
//!   its lease is still live and the leader key still its own;
//! * share health: each instance publishes its latest report under its lease, so a dead
//!   instance's view vanishes with it; the leader combines the live reports with
//!   `--health-quorum` ([`quorum`]).
//!
//! Keys, under `/vpcrouter/<cluster-name>/`: `leader` (value: the leader's instance id),
//! `members/<instance-id>` and `health/<instance-id>` (JSON), all tied to the writer's lease;
//! `drains/<ip>` (JSON, see `vpcrouter_drains`) with no lease: a drain outlives every instance.
//! Every instance watches them all, so each leader honours the drains in force.
//!
//! Layout: [`view`] (the options, the events the engine hears and the state the status
//! shows), `shared` (what the session thread and the handle share), `session` (the etcd
//! session on its own thread and runtime), [`handle`] (the running membership: the engine's
//! leadership port and the drains' shared store).

#![forbid(unsafe_code)]

pub mod handle;
mod session;
mod shared;
pub mod view;

pub use handle::ClusterHandle;
pub use view::{check_name, ClusterConfig, ClusterEvent, ClusterStatus, PeerView, Role};
pub use vpcrouter_engine::quorum::{self, Quorum, Report};
