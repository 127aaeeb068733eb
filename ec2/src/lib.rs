//! vpcrouter's EC2 adapter: the one place that talks to EC2 through the AWS SDK.
//!
//! Layout:
//! * [`client`]: [`Ec2`], one region's SDK client: connecting (as an assumed role or not),
//!   the call counters, and the timing and classification of every call;
//! * `read`: the Describe calls, page by page, that make a
//!   [`VpcState`](vpcrouter_planner::model::VpcState);
//! * `write`: the route and prefix-list calls that execute a
//!   [`RouteAction`](vpcrouter_planner::model::RouteAction);
//! * `translate`: the SDK's types to the planner's model and back;
//! * [`error`]: [`Ec2Error`], and EC2's error codes sorted into throttled, transient,
//!   refused credentials and rejected;
//! * [`operations`]: the EC2 operations called (counters, metrics, IAM policies);
//! * [`imds`]: region and VPC detection through the instance metadata service;
//! * [`config`]: the EC2 side's options, and the connected executor they build;
//! * [`reader`]: [`VpcReader`], read-only access to a VPC (`vpcrouter plan`): no executor,
//!   no client handed out, so its holder cannot write;
//! * [`limits`]: client-side token buckets modelled on EC2's own (reads, writes) and the cap
//!   on calls in flight;
//! * [`executor`]: runs calls within those limits, with retries; [`executor::Ec2Vpc`] is the
//!   engine's VPC port;
//! * [`role`]: `--role-arn`: calls made as an assumed IAM role;
//! * [`sns`]: the built-in `sns` notifier's AWS side: [`TopicArn`] and [`SnsPublisher`],
//!   whose client is configured like the EC2 client (credentials, endpoint, role).
//!
//! Each call's duration goes to the engine's [`Observer`](vpcrouter_engine::Observer); the
//! adapter knows nothing of the metrics that record it.
#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod error;
pub mod executor;
pub mod imds;
pub mod limits;
pub mod operations;
mod read;
pub mod reader;
pub mod role;
pub mod sns;
mod translate;
mod write;

pub use client::Ec2;
pub use config::{Connected, Ec2Config};
pub use error::Ec2Error;
pub use executor::{Ec2Vpc, Executor};
pub use reader::VpcReader;
pub use sns::{SnsPublisher, TopicArn};
