//! Data that travels between host and plugins. Every queue message is a full snapshot.

use abi_stable::std_types::{RString, RVec, Tuple2};
use abi_stable::StableAbi;

use crate::net::{Cidr, Ipv4};

/// One destination network and the routers that may carry it.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteEntry {
    /// Destination network.
    pub cidr: Cidr,
    /// Candidate routers (private IPv4 addresses of EC2 instances), unique, in the order
    /// the spec gives them: with `--failback preferred` the first one is the CIDR's
    /// preferred router. Sorted lists are valid too (plugins built before the order was
    /// kept sort them); the host treats the list as a set otherwise.
    pub hosts: RVec<Ipv4>,
}

/// A complete route spec: the JSON `{"10.55.0.0/16": ["10.1.0.5", "10.1.1.7"]}`.
///
/// Watchers always send the whole spec, never a delta. Build one with
/// [`RouteSpec::new`] or [`RouteSpec::from_json`](crate::spec): entries sorted by CIDR,
/// one per CIDR, each CIDR's hosts unique and in the written order (see
/// [`RouteEntry::hosts`]).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RouteSpec {
    /// The entries, sorted by CIDR, one per CIDR.
    pub routes: RVec<RouteEntry>,
}

impl RouteSpec {
    /// Every router named anywhere in the spec, sorted and unique.
    pub fn all_hosts(&self) -> HostList {
        let mut hosts: Vec<Ipv4> = self.routes.iter().flat_map(|r| r.hosts.iter().copied()).collect();
        hosts.sort_unstable();
        hosts.dedup();
        HostList { hosts: hosts.into() }
    }

    /// True when the spec has no CIDR at all.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// The full list of hosts a health monitor must watch.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct HostList {
    /// Sorted and unique.
    pub hosts: RVec<Ipv4>,
}

impl HostList {
    /// A sorted, de-duplicated list.
    pub fn new(hosts: impl IntoIterator<Item = Ipv4>) -> HostList {
        HostList { hosts: sorted(hosts) }
    }
}

/// A health monitor's full verdict. Hosts in neither list are healthy.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct HealthReport {
    /// Hosts that must not carry routes; routes on them are moved. Sorted, unique.
    pub failed: RVec<Ipv4>,
    /// Hosts used only when no healthy candidate exists; routes on them are moved to a
    /// healthy host when one exists. Sorted, unique.
    pub questionable: RVec<Ipv4>,
}

impl HealthReport {
    /// A report with both lists sorted and de-duplicated.
    pub fn new(failed: impl IntoIterator<Item = Ipv4>, questionable: impl IntoIterator<Item = Ipv4>) -> HealthReport {
        HealthReport { failed: sorted(failed), questionable: sorted(questionable) }
    }
}

fn sorted(hosts: impl IntoIterator<Item = Ipv4>) -> RVec<Ipv4> {
    let mut v: Vec<Ipv4> = hosts.into_iter().collect();
    v.sort_unstable();
    v.dedup();
    v.into()
}

/// A health monitor's counters, shown by `/status` and `/metrics` and combined by `multi`.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthStats {
    /// Host checks done.
    pub checks: u64,
    /// Host checks that failed.
    pub failures: u64,
    /// Reports sent to the host.
    pub reports_sent: u64,
    /// Hosts checked now.
    pub hosts: u64,
    /// Hosts failed in the last report.
    pub failed: RVec<Ipv4>,
}

/// A watcher's counters, shown by `/status`.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq, Eq)]
pub struct WatcherStats {
    /// Specs sent to the host (only changed ones are sent).
    pub specs_sent: u64,
    /// Specs that were read but refused (invalid), or reads that failed.
    pub errors: u64,
    /// The last error, empty when none.
    pub last_error: RString,
}

/// A notifier's counters, as the plugin sees them (the host counts events it dropped).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq, Eq)]
pub struct NotifierStats {
    /// Events delivered.
    pub delivered: u64,
    /// Events given up (the error was returned to the host).
    pub failed: u64,
    /// The last error, empty when none.
    pub last_error: RString,
}

/// A plugin's counters, by kind.
#[repr(C, u8)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub enum PluginStats {
    /// A watcher's counters.
    Watcher(WatcherStats),
    /// A health monitor's counters.
    Health(HealthStats),
    /// A notifier's counters.
    Notifier(NotifierStats),
}

/// One event for a notifier, as it crosses the boundary: its name and its JSON object
/// (PLUGINS.md, "Events", has the schema). The JSON is the contract, so new events and
/// fields are additions to the schema, not to the ABI. The SDK hands the plugin an
/// [`crate::notifier::Event`] parsed from it.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct NotifyEvent {
    /// `route_changed`, `failover`, ...: the JSON's `"event"`.
    pub event: RString,
    /// The event as one JSON object, exactly as webhooks and queues receive it.
    pub json: RString,
}

/// What a running plugin shows on the status server, assembled by the SDK.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct PluginStatus {
    /// The plugin's version.
    pub version: RString,
    /// The plugin's declared options and their values, in declaration order.
    pub params: RVec<Tuple2<RString, RString>>,
    /// Typed counters.
    pub stats: PluginStats,
    /// Plugin-specific state: a JSON object as text (`{}` when there is none).
    pub details: RString,
}
