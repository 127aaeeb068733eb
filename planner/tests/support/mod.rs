//! Fixture helpers shared by the planner's test files.

use std::net::Ipv4Addr;

use vpcrouter_planner::model::{RouterTarget, VpcState};

/// The target of `ip` in `state`: the instance and interface that hold it.
pub fn target_in(state: &VpcState, ip: Ipv4Addr) -> RouterTarget {
    let (instance, eni) = state
        .instances
        .iter()
        .flat_map(|i| i.enis.iter().map(move |e| (i, e)))
        .find(|(_, e)| e.private_ips.contains(&ip))
        .expect("fixture host");
    RouterTarget { ip, instance_id: instance.id.clone(), eni_id: eni.id.clone() }
}
