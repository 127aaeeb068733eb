//! The EC2 side's options (`-r`, `-v`, `--role-*`, `--ec2-*`, `--prefix-lists`) and the
//! connected executor they build (or, for `vpcrouter plan`, the read-only [`VpcReader`]).

use std::sync::Arc;

use vpcrouter_engine::Observer;

use crate::client::Ec2;
use crate::error::Ec2Error;
use crate::executor::Executor;
use crate::imds::detect_region_and_vpc;
use crate::limits::LimitsConfig;
use crate::reader::VpcReader;
use crate::role::RoleConfig;

/// The EC2 side's options.
#[derive(Debug, Clone, Default)]
pub struct Ec2Config {
    /// `-r/--region`; detected from the instance metadata when absent.
    pub region: Option<String>,
    /// `-v/--vpc`; detected from the instance metadata when absent.
    pub vpc: Option<String>,
    /// `--role-arn` and its companions: EC2 calls made as this role.
    pub role: Option<RoleConfig>,
    /// `--ec2-*`: client-side token buckets and the cap on calls in flight.
    pub limits: LimitsConfig,
    /// `--prefix-lists`: route groups of CIDRs through prefix lists vpcrouter owns.
    pub prefix_lists: bool,
}

/// The EC2 side, connected: where, and the executor that makes every call.
#[derive(Clone)]
pub struct Connected {
    /// The region of the VPC.
    pub region: String,
    /// The VPC managed.
    pub vpc_id: String,
    /// Runs EC2 calls within the limits.
    pub executor: Executor,
}

impl Ec2Config {
    /// Resolves the region and VPC (what is not given comes from the instance metadata) and
    /// builds the client. `list_owner` names the owner vpcrouter's prefix lists are tagged
    /// with (`None`: the VPC id). Each call's duration goes to `observer`. Nothing is called
    /// on EC2 yet.
    pub async fn connect(&self, list_owner: Option<&str>, observer: Arc<dyn Observer>) -> Result<Connected, Ec2Error> {
        let (region, vpc_id, ec2) = self.client(list_owner, observer).await?;
        Ok(Connected { region, vpc_id, executor: Executor::new(ec2, self.limits) })
    }

    /// [`Ec2Config::connect`] for reading only (`vpcrouter plan`): the same client and
    /// reads, within the same limits, but no [`Executor`] is built, and the [`VpcReader`]
    /// returned can do nothing but read (see [`crate::reader`]).
    pub async fn connect_reader(
        &self,
        list_owner: Option<&str>,
        observer: Arc<dyn Observer>,
    ) -> Result<VpcReader, Ec2Error> {
        let (region, vpc_id, ec2) = self.client(list_owner, observer).await?;
        Ok(VpcReader::new(ec2, region, vpc_id, self.limits))
    }

    /// The region, the VPC and the client for them (see [`Ec2Config::connect`]).
    async fn client(
        &self,
        list_owner: Option<&str>,
        observer: Arc<dyn Observer>,
    ) -> Result<(String, String, Ec2), Ec2Error> {
        let (region, vpc_id) = self.region_and_vpc().await?;
        if let Some(role) = &self.role {
            tracing::info!(
                role = %role.arn, account = role.arn.account(), session = %role.session_name,
                external_id = role.external_id.is_some(), "EC2 calls are made as an assumed role"
            );
        }
        let ec2 = Ec2::connect_as(&region, self.role.as_ref(), observer)
            .await
            .owning_lists_of(list_owner.unwrap_or(&vpc_id))
            .routing_through_lists(self.prefix_lists);
        Ok((region, vpc_id, ec2))
    }

    /// Region and VPC from the options; what is missing comes from the instance metadata.
    async fn region_and_vpc(&self) -> Result<(String, String), Ec2Error> {
        if let (Some(r), Some(v)) = (&self.region, &self.vpc) {
            return Ok((r.clone(), v.clone()));
        }
        let (region, vpc) = detect_region_and_vpc().await?;
        Ok((self.region.clone().unwrap_or(region), self.vpc.clone().unwrap_or(vpc)))
    }
}
