//! Placeholder: being written (planner helper).
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::model::{Cidr, Plan, VpcState};

/// Inputs of one reconcile decision.
pub struct PlanInput<'a> {
    /// The VPC as read from EC2.
    pub state: &'a VpcState,
    /// The route spec, canonical: CIDR -> candidate routers (sorted, unique).
    pub spec: &'a [(Cidr, Vec<Ipv4Addr>)],
    /// Hosts reported failed.
    pub failed: &'a BTreeSet<Ipv4Addr>,
    /// Hosts reported questionable.
    pub questionable: &'a BTreeSet<Ipv4Addr>,
    /// `--ignore_routes`: routes inside these networks are never deleted or changed.
    pub ignore: &'a [Cidr],
}

/// Decides the route actions. Pure: no I/O, randomness only from `rng`.
pub fn plan<R: rand::Rng + ?Sized>(_input: &PlanInput<'_>, _rng: &mut R) -> Plan {
    Plan::default()
}
