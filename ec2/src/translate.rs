//! Translation between the SDK's types and the planner's model: what EC2 reports becomes
//! [`Subnet`]s, [`RouteTable`]s, [`Instance`]s and [`PrefixList`]s; a route change's
//! destination, target and entries become request fields.

use std::net::Ipv4Addr;

use aws_sdk_ec2::types as ec2;
use tracing::debug;
use vpcrouter_planner::model::{
    Cidr, Dest, Eni, Family, Instance, PrefixList, Route, RouteTable, RouterTarget, Subnet, CLUSTER_TAG, GROUP_TAG,
};

/// EC2's name of an address family.
pub(crate) fn family_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

/// Prefix-list entries to add.
pub(crate) fn entries(cidrs: &[Cidr]) -> Vec<ec2::AddPrefixListEntry> {
    cidrs
        .iter()
        .map(|c| ec2::AddPrefixListEntry::builder().cidr(c.to_string()).description("vpcrouter").build())
        .collect()
}

/// Prefix-list entries to remove.
pub(crate) fn removals(cidrs: &[Cidr]) -> Vec<ec2::RemovePrefixListEntry> {
    cidrs.iter().map(|c| ec2::RemovePrefixListEntry::builder().cidr(c.to_string()).build()).collect()
}

/// The list, without entries, when `owner` owns it (its cluster tag); `None` otherwise
/// (AWS-managed lists, other clusters' and other tools' lists).
pub(crate) fn owned_list(l: &ec2::ManagedPrefixList, owner: &str) -> Option<PrefixList> {
    let tag = |key: &str| l.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value());
    if tag(CLUSTER_TAG) != Some(owner) {
        return None;
    }
    if matches!(
        l.state(),
        Some(
            ec2::PrefixListState::DeleteComplete
                | ec2::PrefixListState::DeleteInProgress
                | ec2::PrefixListState::DeleteFailed
        )
    ) {
        return None;
    }
    let family = match l.address_family() {
        Some(f) if f.eq_ignore_ascii_case("IPv6") => Family::V6,
        _ => Family::V4,
    };
    Some(PrefixList {
        id: l.prefix_list_id()?.to_owned(),
        name: l.prefix_list_name().unwrap_or_default().to_owned(),
        group: tag(GROUP_TAG).unwrap_or_default().to_owned(),
        family,
        max_entries: l.max_entries().and_then(|m| u32::try_from(m).ok()).unwrap_or(0),
        version: l.version().unwrap_or(0),
        entries: Vec::new(),
    })
}

/// `(DestinationCidrBlock, DestinationIpv6CidrBlock, DestinationPrefixListId)` to send for
/// a route's destination: exactly one is set.
pub(crate) fn dest_fields(dest: &Dest) -> (Option<String>, Option<String>, Option<String>) {
    match dest {
        Dest::Cidr(c) if c.family() == Family::V4 => (Some(c.to_string()), None, None),
        Dest::Cidr(c) => (None, Some(c.to_string()), None),
        Dest::List(id) => (None, None, Some(id.clone())),
    }
}

/// `(NetworkInterfaceId, InstanceId)` to send for a target: the ENI, else the instance.
pub(crate) fn target_ids(target: &RouterTarget) -> (Option<String>, Option<String>) {
    if target.eni_id.is_empty() {
        (None, Some(target.instance_id.clone()))
    } else {
        (Some(target.eni_id.clone()), None)
    }
}

/// True for an association or CIDR block EC2 reports as `associated` (or without a state).
fn associated(state: Option<&str>) -> bool {
    state.is_none_or(|s| s == "associated")
}

/// The associated IPv4 and IPv6 CIDR blocks of a VPC.
pub(crate) fn vpc_blocks(vpc: &ec2::Vpc) -> Vec<Cidr> {
    let v4 = vpc
        .cidr_block_association_set()
        .iter()
        .filter(|b| associated(b.cidr_block_state().and_then(|s| s.state()).map(|s| s.as_str())))
        .filter_map(|b| b.cidr_block());
    let v6 = vpc
        .ipv6_cidr_block_association_set()
        .iter()
        .filter(|b| associated(b.ipv6_cidr_block_state().and_then(|s| s.state()).map(|s| s.as_str())))
        .filter_map(|b| b.ipv6_cidr_block());
    vpc.cidr_block().into_iter().chain(v4).chain(v6).filter_map(|c| Cidr::parse(c).ok()).collect()
}

/// Translates a subnet: its zone and its associated CIDR blocks; `None` without an id.
pub(crate) fn subnet(s: &ec2::Subnet) -> Option<Subnet> {
    let v6 = s
        .ipv6_cidr_block_association_set()
        .iter()
        .filter(|b| associated(b.ipv6_cidr_block_state().and_then(|s| s.state()).map(|s| s.as_str())))
        .filter_map(|b| b.ipv6_cidr_block());
    Some(Subnet {
        id: s.subnet_id()?.to_owned(),
        zone: s.availability_zone().map(str::to_owned),
        cidrs: s.cidr_block().into_iter().chain(v6).filter_map(|c| Cidr::parse(c).ok()).collect(),
    })
}

/// Translates a route table; `None` without an id.
pub(crate) fn route_table(rt: &ec2::RouteTable) -> Option<RouteTable> {
    let id = rt.route_table_id()?.to_owned();
    let live = |a: &&ec2::RouteTableAssociation| {
        !matches!(
            a.association_state().and_then(|s| s.state()),
            Some(
                ec2::RouteTableAssociationStateCode::Disassociated
                    | ec2::RouteTableAssociationStateCode::Disassociating
                    | ec2::RouteTableAssociationStateCode::Failed
            )
        )
    };
    let associations: Vec<_> = rt.associations().iter().filter(live).collect();
    let table = RouteTable {
        main: associations.iter().any(|a| a.main() == Some(true)),
        subnets: associations.iter().filter_map(|a| a.subnet_id().map(str::to_owned)).collect(),
        routes: rt.routes().iter().map(route).collect(),
        gateways: associations.iter().filter_map(|a| a.gateway_id().map(str::to_owned)).collect(),
        tags: rt
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned())))
            .collect(),
        id,
    };
    for r in &table.routes {
        debug!(
            rtb = %table.id,
            cidr = %r.dest.as_ref().map_or_else(|| "-".to_string(), Dest::to_string),
            router = r.instance_id.as_deref().or(r.eni_id.as_deref()).or(r.other_target.as_deref()).unwrap_or("-"),
            "route"
        );
    }
    Some(table)
}

/// Translates a route.
fn route(r: &ec2::Route) -> Route {
    let other_target = [
        r.gateway_id(),
        r.nat_gateway_id(),
        r.vpc_peering_connection_id(),
        r.transit_gateway_id(),
        r.egress_only_internet_gateway_id(),
        r.local_gateway_id(),
        r.carrier_gateway_id(),
        r.core_network_arn(),
        r.odb_network_arn(),
    ]
    .into_iter()
    .flatten()
    .next()
    .map(str::to_owned);
    let dest = if let Some(v4) = r.destination_cidr_block() {
        Cidr::parse(v4).ok().map(Dest::Cidr)
    } else if let Some(v6) = r.destination_ipv6_cidr_block() {
        Cidr::parse(v6).ok().map(Dest::Cidr)
    } else {
        r.destination_prefix_list_id().map(|id| Dest::List(id.to_owned()))
    };
    Route {
        dest,
        instance_id: r.instance_id().map(str::to_owned),
        eni_id: r.network_interface_id().map(str::to_owned),
        other_target,
        blackhole: r.state() == Some(&ec2::RouteState::Blackhole),
    }
}

/// Parses an IPv4 address reported by EC2, skipping anything else.
fn ipv4(s: Option<&str>) -> Option<Ipv4Addr> {
    s.and_then(|s| s.parse().ok())
}

/// Translates an instance; `None` without an id. Without reported interfaces, one ENI
/// with id `""` is synthesized from the instance's own private IP and subnet. The primary
/// interface's source/destination check is the instance's attribute (the one
/// `modify-instance-attribute` sets; EC2 keeps both equal).
pub(crate) fn instance(i: &ec2::Instance) -> Option<Instance> {
    let id = i.instance_id()?.to_owned();
    let mut enis: Vec<Eni> = i.network_interfaces().iter().filter_map(eni).collect();
    for e in enis.iter_mut().filter(|e| e.device_index == 0) {
        e.source_dest_check = i.source_dest_check().or(e.source_dest_check);
    }
    if i.network_interfaces().is_empty() {
        if let Some(ip) = ipv4(i.private_ip_address()) {
            enis.push(Eni {
                id: String::new(),
                subnet_id: i.subnet_id().unwrap_or_default().to_owned(),
                private_ips: vec![ip],
                device_index: 0,
                source_dest_check: i.source_dest_check(),
            });
        }
    }
    debug!(instance = %id, enis = enis.len(), "instance");
    Some(Instance { id, enis })
}

/// Translates an instance's interface; `None` without an id.
fn eni(n: &ec2::InstanceNetworkInterface) -> Option<Eni> {
    let id = n.network_interface_id()?.to_owned();
    let mut addrs: Vec<&ec2::InstancePrivateIpAddress> = n.private_ip_addresses().iter().collect();
    // Stable: primary first, secondaries in reported order.
    addrs.sort_by_key(|a| a.primary() != Some(true));
    let mut private_ips: Vec<Ipv4Addr> = addrs.iter().filter_map(|a| ipv4(a.private_ip_address())).collect();
    if private_ips.is_empty() {
        private_ips.extend(ipv4(n.private_ip_address()));
    }
    Some(Eni {
        id,
        subnet_id: n.subnet_id().unwrap_or_default().to_owned(),
        private_ips,
        device_index: n.attachment().and_then(|a| a.device_index()).unwrap_or(0),
        source_dest_check: n.source_dest_check(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_instances_and_routes() {
        let addr = |ip: &str, primary: bool| {
            ec2::InstancePrivateIpAddress::builder().private_ip_address(ip).primary(primary).build()
        };
        let nic = ec2::InstanceNetworkInterface::builder()
            .network_interface_id("eni-1")
            .subnet_id("subnet-1")
            .private_ip_addresses(addr("10.0.0.9", false))
            .private_ip_addresses(addr("10.0.0.5", true))
            .private_ip_addresses(addr("not-an-ip", false))
            .attachment(ec2::InstanceNetworkInterfaceAttachment::builder().device_index(1).build())
            .build();
        let with_nic = ec2::Instance::builder().instance_id("i-1").network_interfaces(nic).build();
        let got = instance(&with_nic).expect("instance");
        assert_eq!(got.enis[0].private_ips, vec![Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 9)]);
        assert_eq!(got.enis[0].device_index, 1);

        let bare =
            ec2::Instance::builder().instance_id("i-2").private_ip_address("10.0.0.7").subnet_id("subnet-2").build();
        let got = instance(&bare).expect("instance");
        assert_eq!(
            got.enis,
            vec![Eni {
                id: String::new(),
                subnet_id: "subnet-2".into(),
                private_ips: vec![Ipv4Addr::new(10, 0, 0, 7)],
                device_index: 0,
                source_dest_check: None,
            }]
        );
        assert!(instance(&ec2::Instance::builder().build()).is_none());

        let v6 =
            ec2::Route::builder().destination_ipv6_cidr_block("::/0").egress_only_internet_gateway_id("eigw-1").build();
        assert_eq!(
            route(&v6),
            Route {
                dest: Some(Dest::Cidr(Cidr::parse("::/0").expect("cidr"))),
                instance_id: None,
                eni_id: None,
                other_target: Some("eigw-1".into()),
                blackhole: false,
            }
        );
        let dropped = ec2::Route::builder()
            .destination_cidr_block("10.1.0.0/16")
            .instance_id("i-1")
            .state(ec2::RouteState::Blackhole)
            .build();
        assert!(route(&dropped).blackhole);
        let listed = ec2::Route::builder().destination_prefix_list_id("pl-1").network_interface_id("eni-1").build();
        assert!(!route(&listed).blackhole);
        assert_eq!(route(&listed).dest, Some(Dest::List("pl-1".into())));
        assert_eq!(route(&listed).eni_id.as_deref(), Some("eni-1"));
        let v6 = ec2::Route::builder().destination_ipv6_cidr_block("2001:db8::/32").instance_id("i-1").build();
        assert_eq!(route(&v6).dest, Some(Dest::Cidr(Cidr::parse("2001:db8::/32").expect("cidr"))));
        let nat = ec2::Route::builder().destination_cidr_block("0.0.0.0/0").nat_gateway_id("nat-1").build();
        assert_eq!(route(&nat).other_target.as_deref(), Some("nat-1"));
    }

    #[test]
    fn translates_zones_tags_gateways_and_the_vpcs_blocks() {
        let v6 = |cidr: &str, state: ec2::SubnetCidrBlockStateCode| {
            ec2::SubnetIpv6CidrBlockAssociation::builder()
                .ipv6_cidr_block(cidr)
                .ipv6_cidr_block_state(ec2::SubnetCidrBlockState::builder().state(state).build())
                .build()
        };
        let s = ec2::Subnet::builder()
            .subnet_id("subnet-1")
            .availability_zone("us-east-1b")
            .cidr_block("10.0.1.0/24")
            .ipv6_cidr_block_association_set(v6("2001:db8:1::/64", ec2::SubnetCidrBlockStateCode::Associated))
            .ipv6_cidr_block_association_set(v6("2001:db8:2::/64", ec2::SubnetCidrBlockStateCode::Disassociated))
            .build();
        let got = subnet(&s).expect("subnet");
        let cidrs: Vec<String> = got.cidrs.iter().map(ToString::to_string).collect();
        assert_eq!(
            (got.zone.as_deref(), cidrs),
            (Some("us-east-1b"), vec!["10.0.1.0/24".into(), "2001:db8:1::/64".into()])
        );

        let gateway = ec2::RouteTableAssociation::builder().gateway_id("igw-1").build();
        let subnet_assoc = ec2::RouteTableAssociation::builder().subnet_id("subnet-1").build();
        let rt = ec2::RouteTable::builder()
            .route_table_id("rtb-1")
            .associations(gateway)
            .associations(subnet_assoc)
            .tags(ec2::Tag::builder().key("vpcrouter:managed").value("true").build())
            .tags(ec2::Tag::builder().key("empty").build())
            .build();
        let got = route_table(&rt).expect("table");
        assert_eq!(got.gateway(), Some("igw-1"));
        assert_eq!(got.subnets, ["subnet-1"]);
        assert_eq!(got.tags.get("vpcrouter:managed").map(String::as_str), Some("true"));
        assert_eq!(got.tags.get("empty").map(String::as_str), Some(""));

        let block = |cidr: &str| {
            ec2::VpcCidrBlockAssociation::builder()
                .cidr_block(cidr)
                .cidr_block_state(
                    ec2::VpcCidrBlockState::builder().state(ec2::VpcCidrBlockStateCode::Associated).build(),
                )
                .build()
        };
        let vpc =
            ec2::Vpc::builder().cidr_block("10.0.0.0/16").cidr_block_association_set(block("10.1.0.0/16")).build();
        let blocks: Vec<String> = vpc_blocks(&vpc).iter().map(ToString::to_string).collect();
        assert_eq!(blocks, ["10.0.0.0/16", "10.1.0.0/16"]);

        let nic = ec2::InstanceNetworkInterface::builder()
            .network_interface_id("eni-1")
            .private_ip_address("10.0.1.5")
            .source_dest_check(true)
            .build();
        let nat = ec2::Instance::builder().instance_id("i-1").network_interfaces(nic).source_dest_check(false).build();
        let got = instance(&nat).expect("instance");
        assert_eq!(got.enis[0].source_dest_check, Some(false), "the primary interface's check is the instance's");
    }
}
