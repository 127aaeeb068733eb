//! An HA NAT deployment in moto, as alterNAT, fck-nat or AWS's nat_monitor run it: per
//! availability zone a public subnet (its table sends `0.0.0.0/0` to the internet gateway)
//! with a NAT instance, and private subnets with tables of their own, tagged
//! `vpcrouter:managed=true` (the README's NAT recipe).
//!
//! | zone z (0-based) | subnet            | route table                    | instances          |
//! |------------------|-------------------|--------------------------------|--------------------|
//! | us-east-1{a,b,c} | 127.0.(10+z).0/24 | public: 0.0.0.0/0 → igw        | NAT 127.0.(10+z).10 |
//! |                  | 127.0.(100+z·P+k).0/24, k < P | private k, tagged  |                    |
//!
//! The NATs' source/destination check is off, as the recipe asks, unless the builder is
//! told otherwise.

use std::net::Ipv4Addr;

use anyhow::Context;
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use aws_sdk_ec2::Client;

use crate::world::{self, REGION};

/// The tag the recipe's tables carry.
pub const MANAGED_TAG: (&str, &str) = ("vpcrouter:managed", "true");

/// A NAT instance.
#[derive(Clone, Debug)]
pub struct Nat {
    /// Its private IP.
    pub ip: Ipv4Addr,
    /// `i-...`
    pub instance: String,
    /// `eni-...`
    pub eni: String,
}

/// One availability zone of the deployment.
#[derive(Clone, Debug)]
pub struct Zone {
    /// e.g. `us-east-1a`.
    pub name: String,
    /// The public subnet's table (default route to the internet gateway).
    pub public_table: String,
    /// The zone's NAT, in the public subnet.
    pub nat: Nat,
    /// The private subnets' tables, tagged [`MANAGED_TAG`].
    pub private_tables: Vec<String>,
}

/// The deployment.
#[derive(Clone, Debug)]
pub struct NatWorld {
    /// `vpc-...`
    pub vpc_id: String,
    /// The internet gateway.
    pub igw: String,
    /// The zones, a, b, c, ...
    pub zones: Vec<Zone>,
}

impl NatWorld {
    /// The spec of the recipe: each CIDR of `cidrs` to every NAT, zone a's first.
    pub fn spec(&self, cidrs: &[&str]) -> String {
        let nats: Vec<String> = self.zones.iter().map(|z| z.nat.ip.to_string()).collect();
        let spec: serde_json::Map<String, serde_json::Value> =
            cidrs.iter().map(|c| (c.to_string(), serde_json::json!(nats))).collect();
        serde_json::Value::Object(spec).to_string()
    }

    /// The NAT owning an ENI or instance id, if any.
    pub fn nat_of(&self, id: &str) -> Option<Ipv4Addr> {
        self.zones.iter().map(|z| &z.nat).find(|n| n.eni == id || n.instance == id).map(|n| n.ip)
    }
}

/// Builds the deployment: `zones` zones (at most 6) with `private` private tables each.
/// `checking` lists the zones (by index) whose NAT keeps its source/destination check on.
pub async fn build(ec2: &Client, zones: usize, private: usize, checking: &[usize]) -> anyhow::Result<NatWorld> {
    anyhow::ensure!((1..=6).contains(&zones) && zones * private <= 150, "too many zones or tables");
    let vpc = ec2.create_vpc().cidr_block("127.0.0.0/16").send().await?;
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).context("no vpc id")?.to_string();
    let igw = world::internet_gateway(ec2, &vpc_id).await?;
    let ami = world::first_ami(ec2).await?;
    let mut out = Vec::new();
    for z in 0..zones {
        let name = format!("{REGION}{}", char::from(b'a' + z as u8));
        let public = subnet(ec2, &vpc_id, &name, &format!("127.0.{}.0/24", 10 + z)).await?;
        let public_table = table(ec2, &vpc_id, &public, false).await?;
        ec2.create_route()
            .route_table_id(&public_table)
            .destination_cidr_block("0.0.0.0/0")
            .gateway_id(&igw)
            .send()
            .await?;
        let ip = Ipv4Addr::new(127, 0, 10 + z as u8, 10);
        let (instance, eni) = world::run_router(ec2, &ami, &public, ip, !checking.contains(&z)).await?;
        let nat = Nat { ip, instance, eni };
        let mut private_tables = Vec::new();
        for k in 0..private {
            let sn = subnet(ec2, &vpc_id, &name, &format!("127.0.{}.0/24", 100 + z * private + k)).await?;
            private_tables.push(table(ec2, &vpc_id, &sn, true).await?);
        }
        out.push(Zone { name, public_table, nat, private_tables });
    }
    Ok(NatWorld { vpc_id, igw, zones: out })
}

async fn subnet(ec2: &Client, vpc: &str, zone: &str, cidr: &str) -> anyhow::Result<String> {
    let out = ec2.create_subnet().vpc_id(vpc).cidr_block(cidr).availability_zone(zone).send().await?;
    Ok(out.subnet().and_then(|s| s.subnet_id()).context("no subnet id")?.to_string())
}

/// A route table associated with `subnet`, tagged [`MANAGED_TAG`] when `tagged`.
async fn table(ec2: &Client, vpc: &str, subnet: &str, tagged: bool) -> anyhow::Result<String> {
    let mut req = ec2.create_route_table().vpc_id(vpc);
    if tagged {
        let tag = Tag::builder().key(MANAGED_TAG.0).value(MANAGED_TAG.1).build();
        req = req
            .tag_specifications(TagSpecification::builder().resource_type(ResourceType::RouteTable).tags(tag).build());
    }
    let rt = req.send().await?;
    let rtb = rt.route_table().and_then(|t| t.route_table_id()).context("no rtb id")?.to_string();
    ec2.associate_route_table().route_table_id(&rtb).subnet_id(subnet).send().await?;
    Ok(rtb)
}

/// Where `cidr` points in each of `tables`: the NAT's IP, another target's id, or `None`
/// when absent. One DescribeRouteTables call.
pub async fn targets(
    ec2: &Client,
    world: &NatWorld,
    tables: &[String],
    cidr: &str,
) -> anyhow::Result<Vec<Option<String>>> {
    let filter = Filter::builder().name("vpc-id").values(&world.vpc_id).build();
    let out = ec2.describe_route_tables().filters(filter).send().await?;
    let mut found = Vec::new();
    for rtb in tables {
        let table = out.route_tables().iter().find(|t| t.route_table_id() == Some(rtb.as_str()));
        let route = table.and_then(|t| t.routes().iter().find(|r| r.destination_cidr_block() == Some(cidr)));
        found.push(route.map(|r| {
            let id = r.network_interface_id().or(r.instance_id());
            match id.and_then(|id| world.nat_of(id)) {
                Some(ip) => ip.to_string(),
                None => id.or(r.gateway_id()).unwrap_or("other").to_string(),
            }
        }));
    }
    Ok(found)
}
