//! The VPC model and the reconcile planner of vpcrouter, with no I/O, no AWS SDK and no
//! async runtime, so that they can be read, tested and benchmarked on their own:
//! * [`model`]: a snapshot of what vpcrouter needs to know about a VPC, and the route
//!   changes it can make;
//! * [`plan`]: the pure planner, VPC state + route spec + health → route actions;
//! * [`view`]: what the status server shows of a plan (each managed route's state);
//! * [`preview`]: what a plan would change, as `vpcrouter plan` shows it before a spec
//!   goes live (the changes by destination and table, the notices, their text).
//!
//! The host (`vpcrouter`) reads the VPC into a [`model::VpcState`], plans with
//! [`plan::plan`] and executes the [`model::RouteAction`]s. Tests are in `tests/`, through
//! the public API only; `bench-planner` times the planner at scale.
#![forbid(unsafe_code)]

mod fast;
pub mod model;
pub mod plan;
pub mod preview;
mod route_index;
pub mod view;
