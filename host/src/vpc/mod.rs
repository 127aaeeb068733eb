//! The VPC side: a model of its route tables, the pure planner, the EC2 adapter, and the
//! executor that runs a plan's calls concurrently within the client-side limits.

pub mod ec2;
pub mod executor;
pub mod limits;
pub mod model;
pub mod plan;
