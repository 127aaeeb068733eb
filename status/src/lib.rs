//! vpcrouter's status: the daemon's state as the status server shows it.
//!
//! Layout:
//! * [`document`]: a [`Snapshot`] of the daemon's state (the engine's [`Status`], the EC2
//!   adapter's counters, the cluster, the drains, the plugins) and the documents rendered
//!   from it: `/status`, vpc-router's `/route_info`, `/ips`, `/plugins`, in JSON, text or
//!   HTML;
//! * [`metrics`]: `/metrics`, encoded from the same snapshot with the Prometheus client
//!   library, plus the histograms the engine and the EC2 adapter report to (the
//!   engine's [`Observer`](vpcrouter_engine::Observer)) and the process metrics.
//!
//! [`Status`]: vpcrouter_engine::Status
#![forbid(unsafe_code)]

pub mod document;
pub mod metrics;

pub use document::{Ec2View, PluginView, ServerInfo, Snapshot};
pub use metrics::Metrics;

/// This program's version (the workspace's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
