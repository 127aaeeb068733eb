//! vpcrouter's status: the daemon's state as the status server shows it.
//!
//! Layout:
//! * [`document`]: a [`Snapshot`] of the daemon's state (the engine's [`Status`], the EC2
//!   adapter's counters, the cluster, the drains, the plugins) and the documents rendered
//!   from it: `/status`, vpc-router's `/route_info`, `/ips`, `/plugins`, in JSON, text or
//!   HTML;
//! * [`metrics`]: `/metrics`, encoded from the same snapshot with the Prometheus client
//!   library, plus the histograms the engine and the EC2 adapter report to (the
//!   engine's [`Observer`](vpcrouter_engine::Observer)) and the process metrics;
//! * [`console`]: `vpcrouter status`, the `/status` document as text for a terminal;
//! * [`page`]: the live page at `/` for browsers (the route matrix, the routers, the last
//!   failovers), with its style sheet and script.
//!
//! [`Status`]: vpcrouter_engine::Status
#![forbid(unsafe_code)]

pub mod console;
pub mod document;
pub mod metrics;
pub mod page;

pub use document::{Ec2View, PluginView, ServerInfo, Snapshot};
pub use metrics::Metrics;

/// This program's version (the workspace's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
