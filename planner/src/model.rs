//! A snapshot of what vpcrouter needs to know about a VPC, and the changes it can make.
//!
//! The EC2 adapter fills [`VpcState`]; the planner turns state + spec + health into
//! [`RouteAction`]s; the adapter executes them. Nothing here does I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::time::Instant;

pub use vpcrouter_plugin_api::net::{Cidr, Family};

/// vpc-router's containment rule for `--ignore_routes`.
pub trait Within {
    /// True when `self` lies inside `other` (equal networks count; the families must match).
    ///
    /// As in vpc-router, a default route (`0.0.0.0/0`, `::/0`) only contains itself:
    /// ignoring the default route protects the default route, not every route.
    fn is_within(&self, other: Cidr) -> bool;
}

impl Within for Cidr {
    fn is_within(&self, other: Cidr) -> bool {
        if other.prefix() == 0 {
            return *self == other;
        }
        other.covers(self)
    }
}

/// A route's destination: a network, or a prefix list (`pl-...`) standing for its entries.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dest {
    /// `DestinationCidrBlock` or `DestinationIpv6CidrBlock`.
    Cidr(Cidr),
    /// `DestinationPrefixListId`.
    List(String),
}

impl Dest {
    /// The network, for a CIDR destination.
    pub fn cidr(&self) -> Option<Cidr> {
        match self {
            Dest::Cidr(c) => Some(*c),
            Dest::List(_) => None,
        }
    }
}

impl From<Cidr> for Dest {
    fn from(c: Cidr) -> Dest {
        Dest::Cidr(c)
    }
}

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dest::Cidr(c) => fmt::Display::fmt(c, f),
            Dest::List(id) => f.write_str(id),
        }
    }
}

/// A network interface of an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eni {
    /// `eni-...`
    pub id: String,
    /// Subnet the interface lives in.
    pub subnet_id: String,
    /// Private IPv4 addresses, primary first, then secondaries.
    pub private_ips: Vec<Ipv4Addr>,
    /// Device index (0 = the instance's primary interface).
    pub device_index: i32,
    /// EC2's source/destination check of the interface: on, a router drops the traffic
    /// routed through it (`None`: not reported).
    pub source_dest_check: Option<bool>,
}

/// An EC2 instance of the VPC (any state) with its interfaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// `i-...`
    pub id: String,
    /// Interfaces, in the order EC2 reports them.
    pub enis: Vec<Eni>,
}

/// One route of a route table, as EC2 reports it.
///
/// moto reports an instance route with `instance_id` only and an ENI route with `eni_id`
/// only; real AWS reports both for instance routes. Both shapes are handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Destination as reported (`None` when EC2 reported none vpcrouter can read).
    pub dest: Option<Dest>,
    /// Target instance, if any.
    pub instance_id: Option<String>,
    /// Target network interface, if any.
    pub eni_id: Option<String>,
    /// Any other target (`local`, `igw-...`, `nat-...`, `pcx-...`, ...), for messages.
    pub other_target: Option<String>,
    /// EC2 reports the route's state as `blackhole`: its target is gone or cannot forward
    /// (instance stopped or terminated, interface detached or deleted); traffic is dropped.
    pub blackhole: bool,
}

impl Route {
    /// True when the route targets an instance or a network interface.
    pub fn targets_instance(&self) -> bool {
        self.instance_id.is_some() || self.eni_id.is_some()
    }
}

/// A route table with its explicit subnet associations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteTable {
    /// `rtb-...`
    pub id: String,
    /// True for the VPC's main route table.
    pub main: bool,
    /// Subnets explicitly associated with this table.
    pub subnets: Vec<String>,
    /// Routes, in the order EC2 reports them.
    pub routes: Vec<Route>,
    /// Internet or virtual private gateways associated with this table: it is then a
    /// gateway route table (AWS's ingress routing), which may only route the VPC's CIDRs
    /// and its subnets' CIDRs, to network interfaces.
    pub gateways: Vec<String>,
    /// The table's tags (`--route-table-tag` selects by them).
    pub tags: BTreeMap<String, String>,
}

impl RouteTable {
    /// The gateway a gateway route table is associated with (`None`: a subnet table).
    pub fn gateway(&self) -> Option<&str> {
        self.gateways.first().map(String::as_str)
    }
}

/// A subnet of the VPC.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subnet {
    /// `subnet-...`
    pub id: String,
    /// Its availability zone, e.g. `us-east-1a` (`None` when EC2 reported none): the zone of
    /// the routers in it and of the route tables serving it (`--zone-affinity`).
    pub zone: Option<String>,
    /// Its IPv4 and IPv6 CIDR blocks: besides the VPC's own, the only destinations a
    /// gateway route table may hold.
    pub cidrs: Vec<Cidr>,
}

impl From<&str> for Subnet {
    /// A subnet known by its id alone (no zone, no CIDRs).
    fn from(id: &str) -> Subnet {
        Subnet { id: id.to_owned(), ..Subnet::default() }
    }
}

/// `--route-tables` / `--route-table-tag`: which route tables of the VPC vpcrouter manages.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TableSelection {
    /// vpc-router's rule (the default): every table serving a subnet that holds a router
    /// of the spec (the main table serves the subnets without an explicit association).
    #[default]
    Serving,
    /// `--route-tables`: exactly these tables.
    Ids(BTreeSet<String>),
    /// `--route-table-tag` (repeatable): every table carrying all these tags (key, value),
    /// re-evaluated at every read.
    Tagged(Vec<(String, String)>),
}

impl TableSelection {
    /// The rule's short name, for `/status` and `/route_info`: `serving`, `ids`, `tags`.
    pub fn rule(&self) -> &'static str {
        match self {
            TableSelection::Serving => "serving",
            TableSelection::Ids(_) => "ids",
            TableSelection::Tagged(_) => "tags",
        }
    }

    /// True when `table` is selected by an explicit rule (`Serving` depends on the spec:
    /// see `plan::managed_tables`).
    pub fn names(&self, table: &RouteTable) -> bool {
        match self {
            TableSelection::Serving => false,
            TableSelection::Ids(ids) => ids.contains(&table.id),
            TableSelection::Tagged(tags) => tags.iter().all(|(k, v)| table.tags.get(k) == Some(v)),
        }
    }
}

impl fmt::Display for TableSelection {
    /// The rule as the operator gave it, e.g. `--route-table-tag vpcrouter:managed=true`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableSelection::Serving => f.write_str("the tables serving the subnets of the spec's routers"),
            TableSelection::Ids(ids) => {
                write!(f, "--route-tables {}", ids.iter().map(String::as_str).collect::<Vec<_>>().join(","))
            }
            TableSelection::Tagged(tags) => {
                let tags: Vec<String> = tags.iter().map(|(k, v)| format!("--route-table-tag {k}={v}")).collect();
                f.write_str(&tags.join(" "))
            }
        }
    }
}

/// A customer-managed prefix list vpcrouter owns (tagged with its cluster name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixList {
    /// `pl-...`
    pub id: String,
    /// The list's name (see [`Group::list_name`]).
    pub name: String,
    /// The group key it was made for (tag `vpcrouter:group`).
    pub group: String,
    /// Address family of its entries.
    pub family: Family,
    /// Maximum entries: what it weighs against each route table's route quota.
    pub max_entries: u32,
    /// Version, checked by every modification.
    pub version: i64,
    /// Entries, sorted.
    pub entries: Vec<Cidr>,
}

/// Everything the planner needs about one VPC.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VpcState {
    /// `vpc-...`
    pub vpc_id: String,
    /// Every subnet of the VPC (subnets without explicit association use the main table).
    pub subnets: Vec<Subnet>,
    /// The VPC's own CIDR blocks, IPv4 and IPv6 (the destinations of its `local` routes).
    pub cidrs: Vec<Cidr>,
    /// Route tables of the VPC.
    pub route_tables: Vec<RouteTable>,
    /// Instances of the VPC.
    pub instances: Vec<Instance>,
    /// The instances that are not `running`, by id, with EC2's name of their state
    /// (`pending`, `stopping`, `stopped`, `shutting-down`, `terminated`): they cannot
    /// forward, so their IPs count as failed whatever the health monitor says.
    pub not_running: BTreeMap<String, String>,
    /// The prefix lists this vpcrouter cluster owns (with their entries).
    pub prefix_lists: Vec<PrefixList>,
    /// Max entries of the other prefix lists EC2 reports (by id): what a route to one of
    /// them weighs against the table's route quota. Their entries are not read.
    pub other_lists: BTreeMap<String, u32>,
}

impl VpcState {
    /// The owned prefix list with this id.
    pub fn prefix_list(&self, id: &str) -> Option<&PrefixList> {
        self.prefix_lists.iter().find(|l| l.id == id)
    }
}

/// Where a route should point: a router host and the instance/ENI that own its IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterTarget {
    /// The router's IP as named in the spec.
    pub ip: Ipv4Addr,
    /// Owning instance.
    pub instance_id: String,
    /// Owning interface.
    pub eni_id: String,
}

/// Why a route is being replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplaceReason {
    /// The current router is failed.
    RouterFailed,
    /// The current router is questionable and a healthy one exists.
    RouterQuestionable,
    /// The current target is not (or no longer) a candidate of the spec, or is unknown.
    NotEligible,
    /// Another route table already uses a different router for this CIDR.
    OtherTableUsesDifferentRouter,
    /// EC2 reports the route as a blackhole (its target cannot forward).
    Blackhole,
    /// `--failback preferred`: the CIDR's preferred router (its first candidate) has been
    /// healthy for the whole `--failback-after`, and so has the hold-down since the last
    /// failback of the destination: the route moves back to it.
    Failback,
    /// The current router is drained (maintenance mode) and another candidate is healthy.
    Drained,
}

impl fmt::Display for ReplaceReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplaceReason::RouterFailed => "router failed",
            ReplaceReason::RouterQuestionable => "router questionable",
            ReplaceReason::NotEligible => "old target not eligible anymore",
            ReplaceReason::OtherTableUsesDifferentRouter => "other route table used different router",
            ReplaceReason::Blackhole => "route is a blackhole",
            ReplaceReason::Failback => "failback to preferred router",
            ReplaceReason::Drained => "drained",
        })
    }
}

/// Why a route is being deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    /// Its destination is not in the route spec (or has no candidates).
    NotInSpec,
    /// Prefix-list mode: the CIDR is carried by its group's prefix-list route in this table.
    CarriedByList,
    /// The prefix list no longer serves a group, and every entry still in the spec is
    /// carried by another route in this table.
    ListRetired,
}

impl fmt::Display for DeleteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeleteReason::NotInSpec => "not in route spec",
            DeleteReason::CarriedByList => "carried by its group's prefix list",
            DeleteReason::ListRetired => "prefix list retired; its CIDRs are carried by other routes",
        })
    }
}

/// A group of spec CIDRs of one address family with equal candidate lists: in prefix-list
/// mode they share one prefix list, one route per table, and one router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The key: family and candidates, e.g. `ipv4-10.1.0.5-10.1.1.7` (hashed when long).
    pub key: String,
    /// Address family.
    pub family: Family,
    /// The candidate routers, sorted; with `--failback preferred`, the preferred router
    /// (the members' first candidate) first, then the others sorted, so that CIDRs with
    /// different preferred routers are in different groups.
    pub hosts: Vec<Ipv4Addr>,
    /// The CIDRs, sorted.
    pub members: Vec<Cidr>,
}

/// Longest group key spelled out in full; longer ones are hashed (tag values hold 256).
const MAX_KEY: usize = 120;

impl Group {
    /// The key of a group with these candidates.
    pub fn key_for(family: Family, hosts: &[Ipv4Addr]) -> String {
        let family = match family {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        };
        let spelled: Vec<String> = hosts.iter().map(Ipv4Addr::to_string).collect();
        let key = format!("{family}-{}", spelled.join("-"));
        if key.len() <= MAX_KEY {
            return key;
        }
        // FNV-1a: stable across builds and releases (the key is stored in EC2 tags).
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        format!("{family}-{}routers-{hash:016x}", hosts.len())
    }

    /// The name of the prefix list for this group, owned by `cluster`.
    pub fn list_name(&self, cluster: &str) -> String {
        format!("vpcrouter-{cluster}-{}", self.key)
    }

    /// Max entries for a new list of this group: room to grow by a quarter (at least 8),
    /// within `limit`. A list weighs its max entries against every table's route quota, so
    /// the headroom is kept small; a group that outgrows it moves to a larger list.
    pub fn sized(&self, limit: u32) -> u32 {
        list_size(self.members.len(), limit)
    }
}

/// Tag naming the vpcrouter cluster that owns a prefix list.
pub const CLUSTER_TAG: &str = "vpcrouter:cluster";
/// Tag naming the group a prefix list carries ([`Group::key`]).
pub const GROUP_TAG: &str = "vpcrouter:group";

/// Max entries of a new list for `members` CIDRs (see [`Group::sized`]).
pub fn list_size(members: usize, limit: u32) -> u32 {
    let n = u32::try_from(members).unwrap_or(u32::MAX);
    n.saturating_add((n / 4).max(8)).min(limit)
}

/// One change to make in EC2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteAction {
    /// `CreateRoute`.
    Create {
        /// Route table id.
        rtb: String,
        /// Destination.
        dest: Dest,
        /// New target.
        target: RouterTarget,
    },
    /// `ReplaceRoute`.
    Replace {
        /// Route table id.
        rtb: String,
        /// Destination.
        dest: Dest,
        /// New target.
        target: RouterTarget,
        /// The previous router's IP, when known.
        old_router: Option<Ipv4Addr>,
        /// Why.
        reason: ReplaceReason,
    },
    /// `DeleteRoute`.
    Delete {
        /// Route table id.
        rtb: String,
        /// Destination as EC2 reported it.
        dest: Dest,
        /// The router it pointed at, when known.
        old_router: Option<Ipv4Addr>,
        /// Why.
        reason: DeleteReason,
    },
    /// `CreateManagedPrefixList` for a group (and `ModifyManagedPrefixList` for entries
    /// beyond what one call takes).
    CreateList {
        /// Name of the new list.
        name: String,
        /// The group it serves.
        group: Group,
        /// Max entries.
        max_entries: u32,
    },
    /// `ModifyManagedPrefixList` (as many calls as the entries need; additions first).
    ModifyList {
        /// `pl-...`
        id: String,
        /// Name, for messages.
        name: String,
        /// The version the change was planned from.
        version: i64,
        /// Entries to add.
        add: Vec<Cidr>,
        /// Entries to remove.
        remove: Vec<Cidr>,
    },
    /// `DeleteManagedPrefixList`.
    DeleteList {
        /// `pl-...`
        id: String,
        /// Name, for messages.
        name: String,
    },
}

/// The reason of a route create, as logs, events and `vpcrouter plan` give it.
pub const ROUTE_MISSING: &str = "route missing";

impl RouteAction {
    /// The route table the action changes; a list action changes the list (its name).
    pub fn rtb(&self) -> &str {
        match self {
            RouteAction::Create { rtb, .. } | RouteAction::Replace { rtb, .. } | RouteAction::Delete { rtb, .. } => rtb,
            RouteAction::CreateList { name, .. }
            | RouteAction::ModifyList { name, .. }
            | RouteAction::DeleteList { name, .. } => name,
        }
    }

    /// The destination the action changes; a list action changes the list (its id, or its
    /// name before it exists).
    pub fn dest(&self) -> Dest {
        match self {
            RouteAction::Create { dest, .. } | RouteAction::Replace { dest, .. } | RouteAction::Delete { dest, .. } => {
                dest.clone()
            }
            RouteAction::CreateList { name, .. } => Dest::List(name.clone()),
            RouteAction::ModifyList { id, .. } | RouteAction::DeleteList { id, .. } => Dest::List(id.clone()),
        }
    }

    /// True for a change of a route (not of a prefix list).
    pub fn is_route(&self) -> bool {
        matches!(self, RouteAction::Create { .. } | RouteAction::Replace { .. } | RouteAction::Delete { .. })
    }

    /// Execution order within a plan: routes on failed routers first (they are outages),
    /// then list changes and missing routes, then other replacements; deletes last.
    pub fn priority(&self) -> u8 {
        match self {
            RouteAction::Replace { reason: ReplaceReason::RouterFailed, .. } => 0,
            RouteAction::CreateList { .. } | RouteAction::ModifyList { .. } | RouteAction::Create { .. } => 1,
            RouteAction::Replace { .. } => 2,
            RouteAction::Delete { .. } | RouteAction::DeleteList { .. } => 3,
        }
    }

    /// The router the route points at once the action is done (`None` for a delete).
    pub fn new_router(&self) -> Option<Ipv4Addr> {
        match self {
            RouteAction::Create { target, .. } | RouteAction::Replace { target, .. } => Some(target.ip),
            _ => None,
        }
    }

    /// A route change's previous router (`None` for a create, or when unknown) and its
    /// reason in the words of the log's `reason` field ([`ROUTE_MISSING`] for a create);
    /// `None` for a prefix-list action.
    pub fn old_router_and_reason(&self) -> Option<(Option<Ipv4Addr>, String)> {
        match self {
            RouteAction::Create { .. } => Some((None, ROUTE_MISSING.to_string())),
            RouteAction::Replace { old_router, reason, .. } => Some((*old_router, reason.to_string())),
            RouteAction::Delete { old_router, reason, .. } => Some((*old_router, reason.to_string())),
            RouteAction::CreateList { .. } | RouteAction::ModifyList { .. } | RouteAction::DeleteList { .. } => None,
        }
    }
}

/// What EC2 answered to an action, as far as the state needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// A created or modified prefix list: its id and new version.
    pub list: Option<(String, i64)>,
}

impl VpcState {
    /// Records a change that EC2 acknowledged, so that the state stays what EC2 holds
    /// without reading it again. A route is recorded as real EC2 reports it: the interface
    /// and its instance (or the instance alone when no interface id is known).
    pub fn apply(&mut self, action: &RouteAction, applied: &Applied) {
        match action {
            RouteAction::CreateList { name, group, max_entries } => {
                let Some((id, version)) = applied.list.clone() else { return };
                self.prefix_lists.push(PrefixList {
                    id,
                    name: name.clone(),
                    group: group.key.clone(),
                    family: group.family,
                    max_entries: *max_entries,
                    version,
                    entries: group.members.clone(),
                });
                return;
            }
            RouteAction::ModifyList { id, add, remove, .. } => {
                let Some(list) = self.prefix_lists.iter_mut().find(|l| l.id == *id) else { return };
                list.entries.retain(|e| !remove.contains(e));
                list.entries.extend(add.iter().copied().filter(|a| !list.entries.contains(a)).collect::<Vec<_>>());
                list.entries.sort();
                if let Some((_, version)) = &applied.list {
                    list.version = *version;
                }
                return;
            }
            RouteAction::DeleteList { id, .. } => {
                self.prefix_lists.retain(|l| l.id != *id);
                return;
            }
            _ => {}
        }
        let Some(table) = self.route_tables.iter_mut().find(|t| t.id == action.rtb()) else { return };
        let dest = action.dest();
        let position = table.routes.iter().position(|r| r.dest.as_ref() == Some(&dest));
        let routed = |target: &RouterTarget| Route {
            dest: Some(dest.clone()),
            instance_id: Some(target.instance_id.clone()),
            eni_id: (!target.eni_id.is_empty()).then(|| target.eni_id.clone()),
            other_target: None,
            blackhole: false,
        };
        match (action, position) {
            (RouteAction::Create { target, .. } | RouteAction::Replace { target, .. }, Some(i)) => {
                table.routes[i] = routed(target);
            }
            (RouteAction::Create { target, .. } | RouteAction::Replace { target, .. }, None) => {
                table.routes.push(routed(target));
            }
            (RouteAction::Delete { .. }, Some(i)) => {
                table.routes.remove(i);
            }
            _ => {}
        }
    }

    /// True when this state already shows `action` done: the route points at the action's
    /// target (compared by interface when both name one, else by instance, since EC2 may
    /// report either), a deleted route or list is gone, a created list exists, a modified
    /// list has the version EC2 acknowledged. A change to a table the state does not hold
    /// counts as shown: there is nothing left to keep of it.
    pub fn shows(&self, action: &RouteAction, applied: &Applied) -> bool {
        let list = |id: &str| self.prefix_lists.iter().find(|l| l.id == id);
        match action {
            RouteAction::CreateList { .. } => applied.list.as_ref().is_none_or(|(id, _)| list(id).is_some()),
            RouteAction::ModifyList { id, .. } => match (list(id), &applied.list) {
                (Some(l), Some((_, version))) => l.version >= *version,
                (found, None) => found.is_some(),
                (None, Some(_)) => false,
            },
            RouteAction::DeleteList { id, .. } => list(id).is_none(),
            RouteAction::Create { rtb, dest, target } | RouteAction::Replace { rtb, dest, target, .. } => {
                let Some(table) = self.route_tables.iter().find(|t| t.id == *rtb) else { return true };
                table.routes.iter().any(|r| {
                    r.dest.as_ref() == Some(dest)
                        && match (&r.eni_id, target.eni_id.is_empty()) {
                            (Some(eni), false) => *eni == target.eni_id,
                            _ => r.instance_id.as_deref() == Some(target.instance_id.as_str()),
                        }
                })
            }
            RouteAction::Delete { rtb, dest, .. } => {
                let Some(table) = self.route_tables.iter().find(|t| t.id == *rtb) else { return true };
                !table.routes.iter().any(|r| r.dest.as_ref() == Some(dest))
            }
        }
    }
}

/// Something the operator should know about, that is not a change. The engine logs each
/// notice when it first appears, not on every reconcile.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Notice {
    /// No healthy (or questionable) candidate for a CIDR: its routes are left as they are.
    NoAvailableRouter {
        /// The CIDR (for a group: its list, or its first CIDR).
        dest: Dest,
    },
    /// No candidate of a CIDR is a private IP of an instance in the VPC: its routes are
    /// left as they are (each such host has a [`Notice::HostNotInVpc`]).
    NoRouterInVpc {
        /// The CIDR (for a group: its list, or its first CIDR).
        dest: Dest,
    },
    /// A spec host is not a private IP of any instance in the VPC; it is never chosen.
    HostNotInVpc {
        /// The host.
        host: Ipv4Addr,
    },
    /// A spec host belongs to an instance that is not running: it cannot forward and
    /// counts as failed whatever the health monitor says.
    NotRunning {
        /// The host.
        host: Ipv4Addr,
        /// Its instance.
        instance: String,
        /// EC2's name of the instance's state (`stopped`, `terminated`, ...).
        state: String,
    },
    /// A spec CIDR is held by a route with a non-instance target (gateway, local, ...);
    /// vpcrouter does not touch it.
    HeldByOtherTarget {
        /// Route table.
        rtb: String,
        /// The CIDR.
        cidr: Cidr,
        /// The target, e.g. `igw-...` or `local`.
        target: String,
    },
    /// The table selection in force selects no route table of the VPC: nothing is managed.
    NoManagedTables {
        /// The rule in force.
        selection: TableSelection,
    },
    /// A table named by `--route-tables` is not (or no longer) a route table of the VPC.
    SelectedTableMissing {
        /// Route table.
        rtb: String,
    },
    /// A gateway route table cannot hold a spec CIDR (only the VPC's CIDRs and its subnets'
    /// CIDRs may be routed there): no call is made for it in that table.
    NotHoldable {
        /// The gateway route table.
        rtb: String,
        /// The gateway it is associated with.
        gateway: String,
        /// The spec CIDR.
        cidr: Cidr,
    },
    /// A router has EC2's source/destination check on: it silently drops the traffic
    /// routed through it.
    SourceDestCheckOn {
        /// The router.
        host: Ipv4Addr,
        /// The interface holding its IP, where the check is turned off.
        eni: String,
    },
    /// A route is on a drained router and no other candidate is healthy (nor drained): it
    /// stays there, as a drain never blackholes a CIDR.
    StaysOnDrained {
        /// The CIDR (for a group: its list, or its first CIDR).
        dest: Dest,
        /// The drained router.
        router: Ipv4Addr,
    },
    /// Prefix-list mode: a group has more CIDRs than a prefix list may hold; its CIDRs are
    /// routed one route each.
    GroupTooLarge {
        /// The group key.
        group: String,
        /// Its CIDRs.
        cidrs: usize,
        /// The most a list holds.
        limit: u32,
    },
    /// A route table's routes weigh more than its route quota (a prefix-list route weighs
    /// its list's max entries): EC2 will refuse further routes.
    OverQuota {
        /// Route table.
        rtb: String,
        /// Its weight once the plan is done.
        weight: u32,
        /// `--route-table-quota`.
        quota: u32,
    },
}

impl Notice {
    /// The router a notice is about, when it is about one router.
    pub fn host(&self) -> Option<Ipv4Addr> {
        match self {
            Notice::HostNotInVpc { host }
            | Notice::NotRunning { host, .. }
            | Notice::SourceDestCheckOn { host, .. } => Some(*host),
            Notice::StaysOnDrained { router, .. } => Some(*router),
            _ => None,
        }
    }
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::NoAvailableRouter { dest } => {
                write!(f, "no healthy router for {dest}: its routes are left as they are until a candidate recovers")
            }
            Notice::NoRouterInVpc { dest } => write!(
                f,
                "no router of {dest} is an instance of the VPC (check the spec's IPs): its routes are left as they are"
            ),
            Notice::HostNotInVpc { host } => write!(
                f,
                "router {host} of the route spec is not a private IP of any instance in the VPC; it is never chosen"
            ),
            Notice::NotRunning { host, instance, state } => write!(
                f,
                "router {host} is on instance {instance}, which is {state}, not running: it cannot forward, so it counts as failed whatever the health monitor says"
            ),
            Notice::HeldByOtherTarget { rtb, cidr, target } => {
                write!(f, "{cidr} in {rtb} is a route to {target}, not to an instance; vpcrouter leaves it alone")
            }
            Notice::NoManagedTables { selection: TableSelection::Serving } => {
                f.write_str("no route table serves a subnet of any router in the spec; nothing is managed")
            }
            Notice::NoManagedTables { selection: selection @ TableSelection::Tagged(_) } => write!(
                f,
                "no route table of the VPC is selected by {selection}; nothing is managed until a table carries the tags"
            ),
            Notice::NoManagedTables { selection } => write!(
                f,
                "no route table of the VPC is selected by {selection}; nothing is managed: check the ids (vpcrouter --route-tables) against the VPC's tables"
            ),
            Notice::SelectedTableMissing { rtb } => write!(
                f,
                "route table {rtb} of --route-tables is not a route table of the VPC (any more); it is skipped"
            ),
            Notice::NotHoldable { rtb, gateway, cidr } => write!(
                f,
                "{cidr} is not routed in {rtb}: it is a gateway route table (associated with {gateway}), which may only route the VPC's CIDR or a subnet's CIDR; no call is made for it there"
            ),
            Notice::SourceDestCheckOn { host, eni } => write!(
                f,
                "router {host} has source/destination checking on, so it drops the traffic routed through it; turn it off: aws ec2 modify-network-interface-attribute --network-interface-id {eni} --no-source-dest-check"
            ),
            Notice::StaysOnDrained { dest, router } => write!(
                f,
                "CIDR {dest} stays on drained router {router}: no other healthy candidate (a drain never blackholes a CIDR; it moves once one is healthy)"
            ),
            Notice::GroupTooLarge { group, cidrs, limit } => write!(
                f,
                "group {group} has {cidrs} CIDRs, more than a prefix list holds ({limit}): they are routed one route each"
            ),
            Notice::OverQuota { rtb, weight, quota } => write!(
                f,
                "route table {rtb} would weigh {weight} routes (a prefix-list route weighs its list's max entries), over its quota of {quota} (--route-table-quota): EC2 refuses routes beyond the quota; ask AWS to raise it, or split the spec"
            ),
        }
    }
}

/// Per route table id, then per destination: the router a route points at (`None`: no
/// router known, the route left as it is). By table first: a million routes share twenty
/// table ids.
pub type PlannedRoutes = BTreeMap<String, BTreeMap<Dest, Option<Ipv4Addr>>>;

/// The planner's output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Changes, in the order to execute them.
    pub actions: Vec<RouteAction>,
    /// Conditions to report.
    pub notices: BTreeSet<Notice>,
    /// Per route table, then per destination: the router the route points at once the
    /// plan is executed.
    pub routes: PlannedRoutes,
    /// Prefix-list mode: the groups, each with the list that carries it (`None` until it
    /// exists).
    pub groups: Vec<(Group, Option<String>)>,
    /// Per route table: its weight against the route quota once the plan is executed.
    pub weights: BTreeMap<String, u32>,
    /// Some changes wait for these actions to be done (a route to a list being created, a
    /// route deleted once another carries its CIDRs): plan again once they are.
    pub staged: bool,
    /// `--failback preferred`: per spec CIDR with routes, its preferred router and where
    /// failback stands once the plan is executed (empty without failback). With
    /// `--zone-affinity`, for the tables that use the CIDR's common router.
    pub failback: BTreeMap<Cidr, FailbackView>,
    /// `--failback preferred --zone-affinity`: the same per (CIDR, zone), for the tables of
    /// a zone that use a router of their own zone; the zone's preferred router is the
    /// CIDR's first candidate in that zone.
    pub zone_failback: BTreeMap<(Cidr, String), FailbackView>,
    /// The route tables the plan manages, sorted by id.
    pub managed: Vec<ManagedTable>,
}

/// A route table a plan manages, as `/status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManagedTable {
    /// `rtb-...`
    pub id: String,
    /// True for the VPC's main table.
    pub main: bool,
    /// The availability zone of the subnets it serves (`None`: none, or several zones).
    pub zone: Option<String>,
    /// The gateway it is associated with, for a gateway route table.
    pub gateway: Option<String>,
}

impl ManagedTable {
    /// The table for people (logs, `vpcrouter plan`): `rtb-1 (zone us-east-1a)`,
    /// `rtb-2 (main, gateway igw-1)`.
    pub fn describe(&self) -> String {
        let mut notes: Vec<String> = Vec::new();
        if self.main {
            notes.push("main".into());
        }
        if let Some(zone) = &self.zone {
            notes.push(format!("zone {zone}"));
        }
        if let Some(gateway) = &self.gateway {
            notes.push(format!("gateway {gateway}"));
        }
        if notes.is_empty() {
            self.id.clone()
        } else {
            format!("{} ({})", self.id, notes.join(", "))
        }
    }
}

/// `--failback preferred`: one CIDR's preferred router and where failback stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailbackView {
    /// The CIDR's first candidate in the spec's order.
    pub preferred: Ipv4Addr,
    /// Where its routes stand.
    pub state: FailbackState,
}

/// Where a CIDR's routes stand with respect to its preferred router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailbackState {
    /// The routes are on the preferred router (or go there with this plan for another
    /// reason than a failback: a failover, a new route).
    OnPreferred,
    /// This plan moves the routes back to the preferred router.
    FailingBack,
    /// The routes are on another router and the preferred one is healthy: they move back
    /// at this time, if it stays healthy until then (it must have been healthy for
    /// `--failback-after`, and the last failback be that long ago).
    Waiting {
        /// When failback becomes possible.
        at: Instant,
    },
    /// The routes are on another router and the preferred one cannot take them (failed,
    /// questionable, or not in the VPC): no failback until it is healthy again.
    Unavailable,
}

impl FailbackState {
    /// The state's name in `/status`.
    pub fn name(&self) -> &'static str {
        match self {
            FailbackState::OnPreferred => "on_preferred",
            FailbackState::FailingBack => "failing_back",
            FailbackState::Waiting { .. } => "waiting",
            FailbackState::Unavailable => "preferred_unavailable",
        }
    }
}
