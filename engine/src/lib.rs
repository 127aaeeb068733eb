//! vpcrouter's engine: it hears the spec, health, drain and leadership events, plans with the
//! pure planner (`vpcrouter-planner`) and writes the plan to the VPC, listening while it
//! writes.
//!
//! Layout:
//! * [`ports`]: the seams to the outside, small traits the host implements: the VPC (one
//!   read of its route tables, one write at a time within a write budget), the cluster's
//!   leadership, the metrics observer. The clock is tokio's (`tokio::time`), which tests
//!   pause and advance;
//! * [`announce`]: what the engine tells notifiers (routes moved, failovers, health and
//!   leadership changes, failed reconciles), through a port that never blocks;
//! * [`budget`]: the VPC port's call budget (`--ec2-*` buckets) and call counters, as the
//!   status shows them;
//! * [`event`]: what the engine reacts to, and the stop signal;
//! * [`engine`]: the event loop and the engine's state (spec, health, drains, failovers);
//! * `reconcile`: read → plan → execute passes, and the fast path of a failover;
//! * `execute`: runs a plan's writes (all, or a failover's share) one at a time as the
//!   budget allows, takes events meanwhile, and revises the plan (withdrawing writes not yet
//!   started) when they change the facts;
//! * `ledger`: acknowledged writes kept over reads that do not show them yet (EC2's
//!   eventual consistency), for the consistency window;
//! * `report`: the log lines of changes, failovers, drains and notices, as plain functions;
//! * [`status`]: the engine's state as the status server shows it;
//! * [`quorum`]: combining the health views of a cluster's instances.
//!
//! The engine depends on no AWS SDK, HTTP server or etcd client: its tests (`tests/`) run it
//! against fakes with paused time.
#![forbid(unsafe_code)]

pub mod announce;
pub mod budget;
pub mod engine;
pub mod event;
mod execute;
mod ledger;
pub mod ports;
pub mod quorum;
mod reconcile;
mod report;
pub mod status;

pub use announce::{Announcement, Announcer};
pub use budget::{BucketConfig, CallCount, Ec2View, LimitsConfig};
pub use engine::{Engine, EngineConfig, EngineError, Ports};
pub use event::{Event, StopSignal};
pub use ports::{Leadership, Observer, Permit, Vpc, VpcError, WriteOutcome, Written};
pub use quorum::{Quorum, Report};
pub use status::{FailbackEntry, FailoverSummary, Status};
