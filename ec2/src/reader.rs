//! [`VpcReader`]: read-only access to one VPC, the only EC2 access `vpcrouter plan` has.
//!
//! `vpcrouter plan` promises that it changes nothing in EC2. That is kept by the types, not
//! by care: the plan's code path holds a `VpcReader`, built by
//! [`Ec2Config::connect_reader`](crate::Ec2Config::connect_reader), which never builds an
//! [`Executor`](crate::Executor) (the type that writes). Its only capability is
//! [`VpcReader::read_state`]: the [`Ec2`] client it wraps (whose `execute` writes) is a
//! private field, and nothing public on it hands out that client or the SDK's. Code that
//! holds a `VpcReader` and nothing else cannot call CreateRoute, ReplaceRoute, DeleteRoute
//! or a prefix-list write.
//!
//! The reads are the daemon's own: [`Ec2::read_state`] within the same client-side limits,
//! with the executor's retries of throttled and transient answers.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vpcrouter_planner::model::VpcState;

use crate::client::Ec2;
use crate::error::Ec2Error;
use crate::executor::read_with_retries;
use crate::limits::{Limits, LimitsConfig};

/// One VPC, for reading only (see the module doc for why it is a type of its own).
#[derive(Debug)]
pub struct VpcReader {
    /// The client: private, so that its writes stay out of reach.
    ec2: Ec2,
    /// The read bucket and in-flight cap the reads keep within (`--ec2-*`).
    limits: Limits,
    /// The region of the VPC, for messages.
    region: String,
    /// The VPC read.
    vpc_id: String,
}

impl VpcReader {
    /// A reader of `vpc_id` through `ec2` (crate-private: built by `connect_reader`).
    pub(crate) fn new(ec2: Ec2, region: String, vpc_id: String, limits: LimitsConfig) -> VpcReader {
        VpcReader { ec2, limits: Limits::new(limits), region, vpc_id }
    }

    /// Reads the VPC as the daemon does (subnets, route tables, instances, the prefix lists
    /// it owns), retrying throttled answers and transient errors.
    pub async fn read_state(&self) -> Result<VpcState, Ec2Error> {
        let mut rng = StdRng::from_os_rng();
        read_with_retries(&self.ec2, &self.limits, &self.vpc_id, || rng.random()).await
    }

    /// The region of the VPC.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The VPC read.
    pub fn vpc_id(&self) -> &str {
        &self.vpc_id
    }
}
