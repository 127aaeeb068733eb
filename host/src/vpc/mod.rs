//! The VPC side: a model of its route tables, the pure planner, and the EC2 adapter.

pub mod ec2;
pub mod model;
pub mod plan;
