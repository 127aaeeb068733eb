//! The VPC side: a model of its route tables and the pure planner (both from the
//! `vpcrouter-planner` crate, re-exported here), the EC2 adapter, and the executor that
//! runs a plan's calls concurrently within the client-side limits.

pub mod ec2;
pub mod executor;
pub mod limits;
pub mod role;
pub use vpcrouter_planner::{model, plan};
