//! A VPC world in moto, built and inspected through the real aws-sdk-ec2.
//!
//! Layout (loopback addresses, so health checks can really reach the "routers"):
//!
//! | subnet | CIDR         | route table            | instances                  |
//! |--------|--------------|------------------------|----------------------------|
//! | s1     | 127.0.1.0/24 | rt1 (explicit)         | 127.0.1.10, 127.0.1.11     |
//! | s2     | 127.0.2.0/24 | rt2 (explicit)         | 127.0.2.10                 |
//! | s3     | 127.0.3.0/24 | rt3 (explicit)         | 127.0.3.10 (a "NAT" box)   |
//! | s4     | 127.0.4.0/24 | main (implicit)        | 127.0.4.10                 |
//!
//! rt1 and rt2 have a default route to an internet gateway; every table has `local`. The
//! VPC has an IPv6 block too (moto's `AmazonProvidedIpv6CidrBlock`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use anyhow::Context;
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::types::{AttributeBooleanValue, Filter, InstanceType};
use aws_sdk_ec2::Client;

use crate::moto::Moto;

/// The region the tests use.
pub const REGION: &str = "us-east-1";

/// Of the routers of s1 and s2 (`127.0.1.10`, `127.0.2.10`: a spec on both makes rt1 and rt2
/// managed), the one that is not `router`.
pub fn other_router(router: &str) -> &'static str {
    if router == "127.0.1.10" {
        "127.0.2.10"
    } else {
        "127.0.1.10"
    }
}

/// A customer-managed prefix list as [`World::prefix_lists`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixListInfo {
    /// `pl-...`
    pub id: String,
    /// Its name.
    pub name: String,
    /// Max entries.
    pub max_entries: i32,
    /// Version.
    pub version: i64,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Entries, sorted.
    pub entries: Vec<String>,
}

/// Router instances of the world: IP → (instance id, ENI id).
pub type Routers = BTreeMap<Ipv4Addr, (String, String)>;

/// A VPC world inside moto.
pub struct World {
    rt: tokio::runtime::Runtime,
    /// SDK client pointed at moto.
    pub ec2: Client,
    /// `vpc-...`
    pub vpc_id: String,
    /// rt1, rt2, rt3 (explicitly associated with s1, s2, s3).
    pub tables: Vec<String>,
    /// The main route table (serves s4 implicitly).
    pub main_table: String,
    /// The internet gateway.
    pub igw: String,
    /// Instances by private IP.
    pub routers: Routers,
}

/// An SDK client for `endpoint` with dummy credentials.
pub async fn client(endpoint: &str) -> Client {
    let conf = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "vpcrouter-tests"))
        .load()
        .await;
    Client::new(&conf)
}

/// An SDK client for `endpoint` with the credentials of `role_arn`, assumed through moto's
/// STS with dummy credentials: moto puts what it creates into the role's account.
pub async fn client_as(endpoint: &str, role_arn: &str) -> Client {
    let base = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "vpcrouter-tests"))
        .load()
        .await;
    let role = aws_config::sts::AssumeRoleProvider::builder(role_arn)
        .configure(&base)
        .session_name("vpcrouter-tests-world")
        .build()
        .await;
    let conf =
        base.into_builder().credentials_provider(aws_sdk_ec2::config::SharedCredentialsProvider::new(role)).build();
    Client::new(&conf)
}

impl World {
    /// Builds the world in `moto`.
    pub fn build(moto: &Moto) -> anyhow::Result<World> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let ec2 = rt.block_on(client(&moto.endpoint));
        World::build_with(rt, ec2)
    }

    /// Builds the world in `moto`, in the account of `role_arn` (see [`client_as`]); moto's
    /// default account (123456789012, that of the dummy keys) does not see it.
    pub fn build_as(moto: &Moto, role_arn: &str) -> anyhow::Result<World> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let ec2 = rt.block_on(client_as(&moto.endpoint, role_arn));
        World::build_with(rt, ec2)
    }

    fn build_with(rt: tokio::runtime::Runtime, ec2: Client) -> anyhow::Result<World> {
        let (vpc_id, tables, main_table, igw, routers) = rt.block_on(build(&ec2))?;
        Ok(World { rt, ec2, vpc_id, tables, main_table, igw, routers })
    }

    /// Runs an SDK future on the world's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Routes of a table: destination (IPv4 or IPv6 CIDR, or prefix list id) → target,
    /// where an instance/ENI target is shown as the router's IP and any other target by its
    /// id (`local`, `igw-...`). The VPC's IPv6 `local` route is left out.
    pub fn routes(&self, rtb: &str) -> anyhow::Result<BTreeMap<String, String>> {
        let out = self.block_on(self.ec2.describe_route_tables().route_table_ids(rtb).send())?;
        let table = out.route_tables().first().context("route table not found")?;
        let mut routes = BTreeMap::new();
        for r in table.routes() {
            if r.destination_ipv6_cidr_block().is_some() && r.gateway_id() == Some("local") {
                continue;
            }
            let dest =
                r.destination_cidr_block().or(r.destination_ipv6_cidr_block()).or(r.destination_prefix_list_id());
            let Some(dest) = dest else { continue };
            let target = if let Some(eni) = r.network_interface_id() {
                self.ip_of(|(_, e)| e == eni).unwrap_or_else(|| eni.to_string())
            } else if let Some(inst) = r.instance_id() {
                self.ip_of(|(i, _)| i == inst).unwrap_or_else(|| inst.to_string())
            } else {
                r.gateway_id().unwrap_or("other").to_string()
            };
            routes.insert(dest.to_string(), target);
        }
        Ok(routes)
    }

    fn ip_of(&self, pred: impl Fn(&(String, String)) -> bool) -> Option<String> {
        self.routers.iter().find(|(_, ids)| pred(ids)).map(|(ip, _)| ip.to_string())
    }

    /// Where `cidr` points in each of `tables` (`None` when absent).
    pub fn targets(&self, tables: &[&str], cidr: &str) -> anyhow::Result<Vec<Option<String>>> {
        tables.iter().map(|t| Ok(self.routes(t)?.get(cidr).cloned())).collect()
    }

    /// Adds a route to the instance owning `ip`, by instance id (the shape moto reports).
    pub fn add_instance_route(&self, rtb: &str, cidr: &str, ip: &str) -> anyhow::Result<()> {
        let ip: Ipv4Addr = ip.parse()?;
        let (inst, _) = self.routers.get(&ip).context("no such router")?;
        self.block_on(
            self.ec2.create_route().route_table_id(rtb).destination_cidr_block(cidr).instance_id(inst).send(),
        )?;
        Ok(())
    }

    /// Adds a route to `dest` (IPv4 or IPv6 CIDR, or a prefix list id) to the interface
    /// owning `ip`.
    pub fn add_eni_route(&self, rtb: &str, dest: &str, ip: &str) -> anyhow::Result<()> {
        let ip: Ipv4Addr = ip.parse()?;
        let (_, eni) = self.routers.get(&ip).context("no such router")?;
        let req = self.ec2.create_route().route_table_id(rtb).network_interface_id(eni);
        let req = if dest.starts_with("pl-") {
            req.destination_prefix_list_id(dest)
        } else if dest.contains(':') {
            req.destination_ipv6_cidr_block(dest)
        } else {
            req.destination_cidr_block(dest)
        };
        self.block_on(req.send())?;
        Ok(())
    }

    /// The customer-managed prefix lists (AWS-managed ones left out), with their entries.
    pub fn prefix_lists(&self) -> anyhow::Result<Vec<PrefixListInfo>> {
        let out = self.block_on(self.ec2.describe_managed_prefix_lists().send())?;
        let mut lists = Vec::new();
        for l in out.prefix_lists().iter().filter(|l| l.owner_id() != Some("AWS")) {
            let id = l.prefix_list_id().context("list without id")?.to_string();
            if matches!(l.state(), Some(aws_sdk_ec2::types::PrefixListState::DeleteComplete)) {
                continue;
            }
            let entries = self.block_on(self.ec2.get_managed_prefix_list_entries().prefix_list_id(&id).send())?;
            let mut entries: Vec<String> =
                entries.entries().iter().filter_map(|e| e.cidr().map(str::to_string)).collect();
            entries.sort();
            lists.push(PrefixListInfo {
                id,
                name: l.prefix_list_name().unwrap_or_default().to_string(),
                max_entries: l.max_entries().unwrap_or_default(),
                version: l.version().unwrap_or_default(),
                tags: l.tags().iter().filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string()))).collect(),
                entries,
            });
        }
        Ok(lists)
    }

    /// Creates a prefix list of someone else's (no vpcrouter tags) with `entries`.
    pub fn create_foreign_list(&self, name: &str, entries: &[&str]) -> anyhow::Result<String> {
        let mut req =
            self.ec2.create_managed_prefix_list().prefix_list_name(name).address_family("IPv4").max_entries(10);
        for e in entries {
            req = req.entries(aws_sdk_ec2::types::AddPrefixListEntry::builder().cidr(*e).build());
        }
        let out = self.block_on(req.send())?;
        Ok(out.prefix_list().and_then(|l| l.prefix_list_id()).context("no list id")?.to_string())
    }

    /// Adds a route to the internet gateway.
    pub fn add_gateway_route(&self, rtb: &str, cidr: &str) -> anyhow::Result<()> {
        self.block_on(
            self.ec2.create_route().route_table_id(rtb).destination_cidr_block(cidr).gateway_id(&self.igw).send(),
        )?;
        Ok(())
    }

    /// Number of routes in all route tables of the VPC.
    pub fn route_count(&self) -> anyhow::Result<usize> {
        let mut n = 0;
        for t in self.tables.iter().chain(std::iter::once(&self.main_table)) {
            n += self.routes(t)?.len();
        }
        Ok(n)
    }

    /// All tables as text, for demo output and failure messages.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        let names = ["rt1 (s1)", "rt2 (s2)", "rt3 (s3)", "main (s4)"];
        for (name, t) in names.iter().zip(self.tables.iter().chain(std::iter::once(&self.main_table))) {
            out.push_str(&format!("  {name:<10} {t}\n"));
            match self.routes(t) {
                Ok(routes) => routes.iter().for_each(|(d, tgt)| out.push_str(&format!("      {d:<16} -> {tgt}\n"))),
                Err(e) => out.push_str(&format!("      (cannot read: {e})\n")),
            }
        }
        out
    }
}

async fn build(ec2: &Client) -> anyhow::Result<(String, Vec<String>, String, String, Routers)> {
    let vpc = ec2.create_vpc().cidr_block("127.0.0.0/16").amazon_provided_ipv6_cidr_block(true).send().await?;
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).context("no vpc id")?.to_string();
    let vpc_filter = Filter::builder().name("vpc-id").values(&vpc_id).build();
    let main_table = ec2
        .describe_route_tables()
        .filters(vpc_filter)
        .send()
        .await?
        .route_tables()
        .first()
        .and_then(|t| t.route_table_id())
        .context("no main route table")?
        .to_string();
    let igw = internet_gateway(ec2, &vpc_id).await?;
    let ami = first_ami(ec2).await?;

    let mut tables = Vec::new();
    let mut routers = Routers::new();
    for (n, hosts) in [
        (1, &["127.0.1.10", "127.0.1.11"][..]),
        (2, &["127.0.2.10"][..]),
        (3, &["127.0.3.10"][..]),
        (4, &["127.0.4.10"][..]),
    ] {
        let subnet = ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .cidr_block(format!("127.0.{n}.0/24"))
            .availability_zone(format!("{REGION}a"))
            .send()
            .await?;
        let subnet_id = subnet.subnet().and_then(|s| s.subnet_id()).context("no subnet id")?.to_string();
        if n <= 3 {
            let rt = ec2.create_route_table().vpc_id(&vpc_id).send().await?;
            let rtb = rt.route_table().and_then(|t| t.route_table_id()).context("no rtb id")?.to_string();
            ec2.associate_route_table().route_table_id(&rtb).subnet_id(&subnet_id).send().await?;
            if n <= 2 {
                ec2.create_route()
                    .route_table_id(&rtb)
                    .destination_cidr_block("0.0.0.0/0")
                    .gateway_id(&igw)
                    .send()
                    .await?;
            }
            tables.push(rtb);
        }
        for host in hosts {
            let ip: Ipv4Addr = host.parse()?;
            routers.insert(ip, run_router(ec2, &ami, &subnet_id, ip, true).await?);
        }
    }
    Ok((vpc_id, tables, main_table, igw, routers))
}

/// An internet gateway attached to `vpc_id`.
pub async fn internet_gateway(ec2: &Client, vpc_id: &str) -> anyhow::Result<String> {
    let igw = ec2.create_internet_gateway().send().await?;
    let igw = igw.internet_gateway().and_then(|g| g.internet_gateway_id()).context("no igw")?.to_string();
    ec2.attach_internet_gateway().internet_gateway_id(&igw).vpc_id(vpc_id).send().await?;
    Ok(igw)
}

/// An AMI moto knows, to run instances from.
pub async fn first_ami(ec2: &Client) -> anyhow::Result<String> {
    let image = ec2.describe_images().send().await?;
    Ok(image.images().first().and_then(|i| i.image_id()).context("moto has no AMI")?.to_string())
}

/// Runs a router instance at `ip` in `subnet`: (instance id, its interface's id). When
/// `forwarding`, its source/destination check is turned off, as on EC2 a router's must be.
pub async fn run_router(
    ec2: &Client,
    ami: &str,
    subnet: &str,
    ip: Ipv4Addr,
    forwarding: bool,
) -> anyhow::Result<(String, String)> {
    let out = ec2
        .run_instances()
        .image_id(ami)
        .instance_type(InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .subnet_id(subnet)
        .private_ip_address(ip.to_string())
        .send()
        .await?;
    let inst = out.instances().first().context("no instance")?;
    let id = inst.instance_id().context("no instance id")?.to_string();
    let eni =
        inst.network_interfaces().first().and_then(|e| e.network_interface_id()).context("instance without ENI")?;
    if forwarding {
        let off = AttributeBooleanValue::builder().value(false).build();
        ec2.modify_instance_attribute().instance_id(&id).source_dest_check(off).send().await?;
    }
    Ok((id, eni.to_string()))
}
