//! vpcrouter: keeps AWS VPC route tables pointing at healthy EC2 router instances.
//!
//! The binary is thin (`main.rs`); the work is split by concern:
//! * [`cli`]: parses the command line, including options declared by the loaded plugins;
//! * [`plugins`]: finding, checking and loading plugin libraries, the health plugins a
//!   health plugin requires, and the plugins' checks of their option values;
//! * the engine (the event loop that reconciles on spec, health, drain and leadership
//!   events, and writes while it listens) is the `vpcrouter-engine` crate (`engine/`); this
//!   crate gives it its ports: the EC2 adapter ([`vpc::executor::Ec2Vpc`]), the cluster's
//!   leadership ([`cluster::ClusterHandle`]) and the metrics;
//! * [`vpc`]: the EC2 adapter and the executor that runs EC2 calls concurrently within
//!   client-side token buckets; the VPC model and the pure planner are the
//!   `vpcrouter-planner` crate (`planner/`), re-exported as `vpc::model` and `vpc::plan`;
//! * [`cluster`]: cluster mode: leader election and quorum health through etcd;
//! * [`drain`]: drained routers (maintenance mode), kept in `--state-dir` or etcd;
//! * [`client`]: the `drain`, `undrain` and `drains` subcommands (a request to the daemon);
//! * [`http`]: the status server and the endpoint registry plugins use;
//! * [`status`]: what the status server shows, rendered from a snapshot of that state;
//! * [`logging`]: log setup and the bridge for plugin log lines;
//! * [`metrics`]: `/metrics`, encoded with the Prometheus client library: the histograms,
//!   the families derived from the status snapshot, and the process metrics;
//! * [`sync`]: the poison-tolerant lock helpers every module uses.
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod cluster;
pub mod drain;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod plugins;
pub mod run;
pub mod status;
pub mod sync;
pub mod vpc;

/// This program's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
