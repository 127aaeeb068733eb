//! A snapshot of what vpcrouter needs to know about a VPC, and the changes it can make.
//!
//! The EC2 adapter fills [`VpcState`]; the planner turns state + spec + health into
//! [`RouteAction`]s; the adapter executes them. Nothing here does I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

/// An IPv4 network with canonical text, e.g. `10.55.0.0/16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    /// Network address (host bits zero).
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub len: u8,
}

impl Cidr {
    /// Parses a canonical CIDR (`10.0.0.0/8`); errors say what is wrong.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        vpcrouter_plugin_api::spec::parse_cidr(s).map(|(addr, len)| Cidr { addr, len })
    }

    /// The network mask as a number.
    fn mask(self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - self.len)
        }
    }

    /// True when `self` lies inside `other` (equal networks count).
    ///
    /// As in vpc-router, `0.0.0.0/0` only contains itself: ignoring the default route
    /// protects the default route, not every route.
    pub fn is_within(self, other: Cidr) -> bool {
        if other.len == 0 {
            return self.len == 0;
        }
        self.len >= other.len && (u32::from(self.addr) & other.mask()) == u32::from(other.addr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
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
    /// IPv4 destination as reported (`None` for IPv6 or prefix-list routes).
    pub destination: Option<String>,
    /// Target instance, if any.
    pub instance_id: Option<String>,
    /// Target network interface, if any.
    pub eni_id: Option<String>,
    /// Any other target (`local`, `igw-...`, `nat-...`, `pcx-...`, ...), for messages.
    pub other_target: Option<String>,
}

impl Route {
    /// True when the route targets an instance or a network interface.
    pub fn targets_instance(&self) -> bool {
        self.instance_id.is_some() || self.eni_id.is_some()
    }
}

/// A route table with its explicit subnet associations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteTable {
    /// `rtb-...`
    pub id: String,
    /// True for the VPC's main route table.
    pub main: bool,
    /// Subnets explicitly associated with this table.
    pub subnets: Vec<String>,
    /// Routes, in the order EC2 reports them.
    pub routes: Vec<Route>,
}

/// Everything the planner needs about one VPC.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VpcState {
    /// `vpc-...`
    pub vpc_id: String,
    /// Every subnet id of the VPC (subnets without explicit association use the main table).
    pub subnets: Vec<String>,
    /// Route tables of the VPC.
    pub route_tables: Vec<RouteTable>,
    /// Instances of the VPC.
    pub instances: Vec<Instance>,
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
}

impl fmt::Display for ReplaceReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplaceReason::RouterFailed => "router failed",
            ReplaceReason::RouterQuestionable => "router questionable",
            ReplaceReason::NotEligible => "old target not eligible anymore",
            ReplaceReason::OtherTableUsesDifferentRouter => "other route table used different router",
        })
    }
}

/// One change to make in EC2. Exactly one API call each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteAction {
    /// `CreateRoute`.
    Create {
        /// Route table id.
        rtb: String,
        /// Destination.
        cidr: Cidr,
        /// New target.
        target: RouterTarget,
    },
    /// `ReplaceRoute`.
    Replace {
        /// Route table id.
        rtb: String,
        /// Destination.
        cidr: Cidr,
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
        cidr: Cidr,
        /// The router it pointed at, when known.
        old_router: Option<Ipv4Addr>,
    },
}

impl RouteAction {
    /// The route table the action changes.
    pub fn rtb(&self) -> &str {
        match self {
            RouteAction::Create { rtb, .. } | RouteAction::Replace { rtb, .. } | RouteAction::Delete { rtb, .. } => rtb,
        }
    }
    /// The destination the action changes.
    pub fn cidr(&self) -> Cidr {
        match self {
            RouteAction::Create { cidr, .. } | RouteAction::Replace { cidr, .. } | RouteAction::Delete { cidr, .. } => {
                *cidr
            }
        }
    }
}

impl RouteAction {
    /// Execution order within a plan: routes on failed routers first (they are outages),
    /// then missing routes, then other replacements; deletes of stale routes last.
    pub fn priority(&self) -> u8 {
        match self {
            RouteAction::Replace { reason: ReplaceReason::RouterFailed, .. } => 0,
            RouteAction::Create { .. } => 1,
            RouteAction::Replace { .. } => 2,
            RouteAction::Delete { .. } => 3,
        }
    }

    /// The router the route points at once the action is done (`None` for a delete).
    pub fn new_router(&self) -> Option<Ipv4Addr> {
        match self {
            RouteAction::Create { target, .. } | RouteAction::Replace { target, .. } => Some(target.ip),
            RouteAction::Delete { .. } => None,
        }
    }
}

impl VpcState {
    /// Records a route change that EC2 acknowledged, so that the state stays what EC2
    /// holds without reading it again. The route is recorded as real EC2 reports it: the
    /// interface and its instance (or the instance alone when no interface id is known).
    pub fn apply(&mut self, action: &RouteAction) {
        let Some(table) = self.route_tables.iter_mut().find(|t| t.id == action.rtb()) else { return };
        let dest = action.cidr().to_string();
        let position = table.routes.iter().position(|r| r.destination.as_deref() == Some(dest.as_str()));
        let routed = |target: &RouterTarget| Route {
            destination: Some(dest.clone()),
            instance_id: Some(target.instance_id.clone()),
            eni_id: (!target.eni_id.is_empty()).then(|| target.eni_id.clone()),
            other_target: None,
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
            (RouteAction::Delete { .. }, None) => {}
        }
    }
}

/// Something the operator should know about, that is not a change. The engine logs each
/// notice when it first appears, not on every reconcile.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Notice {
    /// No healthy (or questionable) candidate for a CIDR: its routes are left as they are.
    NoAvailableRouter {
        /// The CIDR.
        cidr: Cidr,
    },
    /// A spec host is not a private IP of any instance in the VPC; it is never chosen.
    HostNotInVpc {
        /// The host.
        host: Ipv4Addr,
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
    /// No route table of the VPC serves a subnet of any spec host: nothing is managed.
    NoManagedTables,
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::NoAvailableRouter { cidr } => {
                write!(f, "no healthy router for {cidr}: its routes are left as they are until a candidate recovers")
            }
            Notice::HostNotInVpc { host } => write!(
                f,
                "router {host} of the route spec is not a private IP of any instance in the VPC; it is never chosen"
            ),
            Notice::HeldByOtherTarget { rtb, cidr, target } => {
                write!(f, "{cidr} in {rtb} is a route to {target}, not to an instance; vpcrouter leaves it alone")
            }
            Notice::NoManagedTables => {
                f.write_str("no route table serves a subnet of any router in the spec; nothing is managed")
            }
        }
    }
}

/// The planner's output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Changes, in the order to execute them.
    pub actions: Vec<RouteAction>,
    /// Conditions to report.
    pub notices: BTreeSet<Notice>,
    /// Per (route table, CIDR): the router the route points at once the plan is executed.
    pub routes: BTreeMap<(String, Cidr), Option<Ipv4Addr>>,
}
