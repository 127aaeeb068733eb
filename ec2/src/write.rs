//! Writing to a VPC: each [`RouteAction`] as the CreateRoute, ReplaceRoute or DeleteRoute
//! call it stands for, or as the prefix-list calls its entries need.

use std::time::{Duration, Instant};

use aws_sdk_ec2::types as ec2;
use tracing::debug;
use vpcrouter_planner::model::{Applied, Cidr, Group, RouteAction, CLUSTER_TAG, GROUP_TAG};

use crate::client::Ec2;
use crate::error::Ec2Error;
use crate::limits::Limits;
use crate::operations::Op;
use crate::translate::{dest_fields, entries, family_name, removals, target_ids};

/// Entries one CreateManagedPrefixList or ModifyManagedPrefixList call may carry.
const ENTRIES_PER_CALL: usize = 100;
/// Calls a list change waits through while EC2 finishes the previous one (`IncorrectState`).
const LIST_BUSY_RETRIES: u32 = 12;

impl Ec2 {
    /// Executes `action`: a route change with exactly one CreateRoute, ReplaceRoute or
    /// DeleteRoute call; a prefix-list change with as many calls as its entries need (the
    /// caller holds a write token for the first; further ones are taken from `limits`).
    /// `token` makes a CreateManagedPrefixList idempotent across the caller's retries.
    ///
    /// New targets are given as NetworkInterfaceId only (pinning the interface that owns
    /// the router's IP); only when the ENI id is unknown (`""`, emulators) as InstanceId.
    pub async fn execute(&self, action: &RouteAction, limits: &Limits, token: &str) -> Result<Applied, Ec2Error> {
        match action {
            RouteAction::Create { rtb, dest, target } => {
                debug!(rtb = %rtb, cidr = %dest, router = %target.ip, eni = %target.eni_id, "CreateRoute");
                let (eni, inst) = target_ids(target);
                let (v4, v6, list) = dest_fields(dest);
                let sent = Instant::now();
                let result = self
                    .client
                    .create_route()
                    .route_table_id(rtb)
                    .set_destination_cidr_block(v4)
                    .set_destination_ipv6_cidr_block(v6)
                    .set_destination_prefix_list_id(list)
                    .set_network_interface_id(eni)
                    .set_instance_id(inst)
                    .send()
                    .await;
                self.record(Op::CreateRoute, sent, result).map(|_| Applied::default())
            }
            RouteAction::Replace { rtb, dest, target, .. } => {
                debug!(rtb = %rtb, cidr = %dest, router = %target.ip, eni = %target.eni_id, "ReplaceRoute");
                let (eni, inst) = target_ids(target);
                let (v4, v6, list) = dest_fields(dest);
                let sent = Instant::now();
                let result = self
                    .client
                    .replace_route()
                    .route_table_id(rtb)
                    .set_destination_cidr_block(v4)
                    .set_destination_ipv6_cidr_block(v6)
                    .set_destination_prefix_list_id(list)
                    .set_network_interface_id(eni)
                    .set_instance_id(inst)
                    .send()
                    .await;
                self.record(Op::ReplaceRoute, sent, result).map(|_| Applied::default())
            }
            RouteAction::Delete { rtb, dest, .. } => {
                debug!(rtb = %rtb, cidr = %dest, "DeleteRoute");
                let (v4, v6, list) = dest_fields(dest);
                let sent = Instant::now();
                let result = self
                    .client
                    .delete_route()
                    .route_table_id(rtb)
                    .set_destination_cidr_block(v4)
                    .set_destination_ipv6_cidr_block(v6)
                    .set_destination_prefix_list_id(list)
                    .send()
                    .await;
                self.record(Op::DeleteRoute, sent, result).map(|_| Applied::default())
            }
            RouteAction::CreateList { name, group, max_entries } => {
                self.create_list(name, group, *max_entries, limits, token).await
            }
            RouteAction::ModifyList { id, name, version, add, remove } => {
                let version = self.modify_list(id, name, *version, add, remove, limits, false).await?;
                Ok(Applied { list: Some((id.clone(), version)) })
            }
            RouteAction::DeleteList { id, name } => {
                debug!(list = %id, name = %name, "DeleteManagedPrefixList");
                let sent = Instant::now();
                let result = self.client.delete_managed_prefix_list().prefix_list_id(id).send().await;
                self.record(Op::DeleteManagedPrefixList, sent, result).map(|_| Applied::default())
            }
        }
    }

    /// Creates a group's list with its first entries, then adds the rest.
    async fn create_list(
        &self,
        name: &str,
        group: &Group,
        max_entries: u32,
        limits: &Limits,
        token: &str,
    ) -> Result<Applied, Ec2Error> {
        let owner = self.owner.as_deref().unwrap_or_default();
        debug!(name = %name, group = %group.key, entries = group.members.len(), max_entries, "CreateManagedPrefixList");
        let (first, rest) = group.members.split_at(group.members.len().min(ENTRIES_PER_CALL));
        let tag = |k: &str, v: &str| ec2::Tag::builder().key(k).value(v).build();
        let tags = ec2::TagSpecification::builder()
            .resource_type(ec2::ResourceType::PrefixList)
            .tags(tag("Name", name))
            .tags(tag(CLUSTER_TAG, owner))
            .tags(tag(GROUP_TAG, &group.key))
            .build();
        let sent = Instant::now();
        let result = self
            .client
            .create_managed_prefix_list()
            .prefix_list_name(name)
            .address_family(family_name(group.family))
            .max_entries(i32::try_from(max_entries).unwrap_or(i32::MAX))
            .set_entries(Some(entries(first)))
            .tag_specifications(tags)
            .client_token(token)
            .send()
            .await;
        let created = self.record(Op::CreateManagedPrefixList, sent, result)?;
        let list = created.prefix_list();
        let (Some(id), Some(version)) = (list.and_then(|l| l.prefix_list_id()), list.and_then(|l| l.version())) else {
            return Err(Ec2Error::Other {
                operation: Op::CreateManagedPrefixList.name(),
                message: "EC2 answered without the new list's id and version".into(),
            });
        };
        let version = self.modify_list(id, name, version, rest, &[], limits, true).await?;
        Ok(Applied { list: Some((id.to_owned(), version)) })
    }

    /// Adds, then removes, entries in calls of at most 100, each from the version the one
    /// before left; waits while EC2 is still applying the previous change. Returns the
    /// final version. `caller_token_spent`: the caller's write token already paid for an
    /// earlier call (the create), so every call here takes its own.
    #[allow(clippy::too_many_arguments)]
    async fn modify_list(
        &self,
        id: &str,
        name: &str,
        mut version: i64,
        add: &[Cidr],
        remove: &[Cidr],
        limits: &Limits,
        caller_token_spent: bool,
    ) -> Result<i64, Ec2Error> {
        let chunks =
            add.chunks(ENTRIES_PER_CALL).map(|c| (c, true)).chain(remove.chunks(ENTRIES_PER_CALL).map(|c| (c, false)));
        let mut need_token = caller_token_spent;
        for (chunk, adding) in chunks {
            let mut busy = 0;
            loop {
                if need_token {
                    limits.write.take().await;
                }
                need_token = true;
                debug!(list = %id, version, entries = chunk.len(), adding, "ModifyManagedPrefixList");
                let request = self
                    .client
                    .modify_managed_prefix_list()
                    .prefix_list_id(id)
                    .prefix_list_name(name)
                    .current_version(version);
                let request = if adding {
                    request.set_add_entries(Some(entries(chunk)))
                } else {
                    request.set_remove_entries(Some(removals(chunk)))
                };
                let sent = Instant::now();
                let result = request.send().await;
                match self.record(Op::ModifyManagedPrefixList, sent, result) {
                    Ok(out) => {
                        version = out.prefix_list().and_then(|l| l.version()).unwrap_or(version + 1);
                        break;
                    }
                    Err(e) if e.is_list_busy() && busy < LIST_BUSY_RETRIES => {
                        busy += 1;
                        tokio::time::sleep(Duration::from_millis(250 * u64::from(busy.min(4)))).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(version)
    }
}
