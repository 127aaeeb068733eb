//! Reading a VPC into a [`VpcState`]: the Describe calls, page by page, each within the
//! client-side limits, and the caches that spare calls at steady state (the confirmed VPC,
//! the prefix lists' entries by version).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::Instant;

use aws_sdk_ec2::types as ec2;
use tracing::debug;
use vpcrouter_planner::model::{Cidr, Dest, Instance, PrefixList, RouteTable, Subnet, VpcState};
use vpcrouter_plugin_api::sync::lock;

use crate::client::{ConfirmedVpc, Ec2};
use crate::error::Ec2Error;
use crate::limits::Limits;
use crate::operations::Op;
use crate::translate::{instance, owned_list, route_table, subnet, vpc_blocks};

impl Ec2 {
    /// Reads the VPC: its existence, subnets, route tables, instances and the prefix lists
    /// this cluster owns (up to five Describe calls, run concurrently, plus one per further
    /// page, plus one GetManagedPrefixListEntries per list whose version changed), each call
    /// within `limits`. At steady state without `--prefix-lists`: DescribeSubnets,
    /// -RouteTables and -Instances only (see [`Ec2::routing_through_lists`]).
    pub async fn read_state(&self, vpc_id: &str, limits: &Limits) -> Result<VpcState, Ec2Error> {
        debug!(vpc = vpc_id, region = %self.region, "reading VPC");
        let confirmed = self.lock_confirmed().clone().filter(|(id, _)| id == vpc_id);
        let eager = self.list_mode || self.lists_seen.load(Ordering::Relaxed);
        let (vpcs, subnets, tables, instances, lists) = tokio::join!(
            async {
                match confirmed {
                    Some((_, cidrs)) => Ok(Some(cidrs)),
                    None => self.vpc_cidrs(vpc_id, limits).await,
                }
            },
            self.subnets(vpc_id, limits),
            self.route_tables(vpc_id, limits),
            self.instances(vpc_id, limits),
            async {
                if eager {
                    Some(self.prefix_lists(limits).await)
                } else {
                    None
                }
            },
        );
        let Some(mut cidrs) = vpcs? else {
            return Err(Ec2Error::VpcNotFound { vpc_id: vpc_id.to_owned(), region: self.region.clone() });
        };
        *self.lock_confirmed() = Some((vpc_id.to_owned(), cidrs.clone()));
        let tables = tables?;
        let (instances, not_running) = instances?;
        let local = tables.iter().flat_map(|t| &t.routes).filter(|r| r.other_target.as_deref() == Some("local"));
        cidrs.extend(local.filter_map(|r| r.dest.as_ref().and_then(Dest::cidr)));
        cidrs.sort();
        cidrs.dedup();
        let routes_to_lists = || tables.iter().flat_map(|t| &t.routes).any(|r| matches!(r.dest, Some(Dest::List(_))));
        let (lists, other_lists) = match lists {
            Some(read) => read?,
            None if routes_to_lists() => self.prefix_lists(limits).await?,
            None => Default::default(),
        };
        self.lists_seen.store(!lists.is_empty(), Ordering::Relaxed);
        let state = VpcState {
            vpc_id: vpc_id.to_owned(),
            subnets: subnets?,
            cidrs,
            route_tables: tables,
            instances,
            not_running,
            prefix_lists: lists,
            other_lists,
        };
        debug!(
            vpc = vpc_id,
            subnets = state.subnets.len(),
            route_tables = state.route_tables.len(),
            instances = state.instances.len(),
            "read VPC"
        );
        Ok(state)
    }

    /// The VPC DescribeVpcs last confirmed (the lock is held only to copy or replace it).
    fn lock_confirmed(&self) -> std::sync::MutexGuard<'_, ConfirmedVpc> {
        lock(&self.confirmed_vpc)
    }

    /// The VPC's CIDR blocks (IPv4 and IPv6, associated ones); `None` when the VPC does not
    /// exist.
    async fn vpc_cidrs(&self, vpc_id: &str, limits: &Limits) -> Result<Option<Vec<Cidr>>, Ec2Error> {
        let mut token = None;
        loop {
            let _slot = limits.read_slot().await;
            let sent = Instant::now();
            let call = self.client.describe_vpcs().filters(vpc_filter(vpc_id)).set_next_token(token).send().await;
            let page = self.record(Op::DescribeVpcs, sent, call)?;
            if let Some(vpc) = page.vpcs().iter().find(|v| v.vpc_id() == Some(vpc_id)) {
                return Ok(Some(vpc_blocks(vpc)));
            }
            token = next_token(page.next_token());
            if token.is_none() {
                return Ok(None);
            }
        }
    }

    async fn subnets(&self, vpc_id: &str, limits: &Limits) -> Result<Vec<Subnet>, Ec2Error> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let _slot = limits.read_slot().await;
            let sent = Instant::now();
            let call = self.client.describe_subnets().filters(vpc_filter(vpc_id)).set_next_token(token).send().await;
            let page = self.record(Op::DescribeSubnets, sent, call)?;
            out.extend(page.subnets().iter().filter_map(subnet));
            token = next_token(page.next_token());
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn route_tables(&self, vpc_id: &str, limits: &Limits) -> Result<Vec<RouteTable>, Ec2Error> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let _slot = limits.read_slot().await;
            let sent = Instant::now();
            let call =
                self.client.describe_route_tables().filters(vpc_filter(vpc_id)).set_next_token(token).send().await;
            let page = self.record(Op::DescribeRouteTables, sent, call)?;
            out.extend(page.route_tables().iter().filter_map(route_table));
            token = next_token(page.next_token());
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// The VPC's instances, and the state of those that are not running (by id).
    async fn instances(
        &self,
        vpc_id: &str,
        limits: &Limits,
    ) -> Result<(Vec<Instance>, BTreeMap<String, String>), Ec2Error> {
        let (mut out, mut not_running) = (Vec::new(), BTreeMap::new());
        let mut token = None;
        loop {
            let _slot = limits.read_slot().await;
            let sent = Instant::now();
            let call = self.client.describe_instances().filters(vpc_filter(vpc_id)).set_next_token(token).send().await;
            let page = self.record(Op::DescribeInstances, sent, call)?;
            for i in page.reservations().iter().flat_map(|r| r.instances()) {
                let Some(translated) = instance(i) else { continue };
                let run_state = i.state().and_then(|s| s.name());
                if let Some(name) = run_state.filter(|n| **n != ec2::InstanceStateName::Running) {
                    not_running.insert(translated.id.clone(), name.as_str().to_owned());
                }
                out.push(translated);
            }
            token = next_token(page.next_token());
            if token.is_none() {
                return Ok((out, not_running));
            }
        }
    }

    /// The prefix lists tagged with this cluster's name, with their entries (read again
    /// only when a list's version changed), and the max entries of every other list (their
    /// routes' weight). Nothing is read without an owner name.
    async fn prefix_lists(&self, limits: &Limits) -> Result<(Vec<PrefixList>, BTreeMap<String, u32>), Ec2Error> {
        let mut others = BTreeMap::new();
        let Some(owner) = &self.owner else { return Ok((Vec::new(), others)) };
        let mut found = Vec::new();
        let mut token = None;
        loop {
            let _slot = limits.read_slot().await;
            let sent = Instant::now();
            let call = self.client.describe_managed_prefix_lists().set_next_token(token).send().await;
            let page = self.record(Op::DescribeManagedPrefixLists, sent, call)?;
            for l in page.prefix_lists() {
                match owned_list(l, owner) {
                    Some(list) => found.push(list),
                    None => {
                        let max = l.max_entries().and_then(|m| u32::try_from(m).ok());
                        if let (Some(id), Some(max)) = (l.prefix_list_id(), max) {
                            others.insert(id.to_owned(), max);
                        }
                    }
                }
            }
            token = next_token(page.next_token());
            if token.is_none() {
                break;
            }
        }
        let mut out = Vec::with_capacity(found.len());
        for mut list in found {
            let key = (list.id.clone(), list.version);
            let cached = lock(&self.entries).get(&key).cloned();
            list.entries = match cached {
                Some(entries) => entries,
                None => {
                    let entries = self.list_entries(&list, limits).await?;
                    lock(&self.entries).insert(key, entries.clone());
                    entries
                }
            };
            out.push(list);
        }
        let live: BTreeSet<(String, i64)> = out.iter().map(|l| (l.id.clone(), l.version)).collect();
        lock(&self.entries).retain(|k, _| live.contains(k));
        Ok((out, others))
    }

    async fn list_entries(&self, list: &PrefixList, limits: &Limits) -> Result<Vec<Cidr>, Ec2Error> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let _slot = limits.read_slot().await;
            let sent = Instant::now();
            let call = self
                .client
                .get_managed_prefix_list_entries()
                .prefix_list_id(&list.id)
                .target_version(list.version)
                .set_next_token(token)
                .send()
                .await;
            let page = self.record(Op::GetManagedPrefixListEntries, sent, call)?;
            out.extend(page.entries().iter().filter_map(|e| e.cidr().and_then(|c| Cidr::parse(c).ok())));
            token = next_token(page.next_token());
            if token.is_none() {
                out.sort();
                out.dedup();
                return Ok(out);
            }
        }
    }
}

/// A `vpc-id` filter.
fn vpc_filter(vpc_id: &str) -> ec2::Filter {
    ec2::Filter::builder().name("vpc-id").values(vpc_id).build()
}

/// The next page's token; EC2 ends a listing with none (some emulators with `""`).
fn next_token(token: Option<&str>) -> Option<String> {
    token.filter(|t| !t.is_empty()).map(str::to_owned)
}
