//! Data that travels on the plugin queues. Every message is a full snapshot.

use abi_stable::std_types::{RString, RVec};
use abi_stable::StableAbi;

/// One destination CIDR and the router hosts that may carry it.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteEntry {
    /// Destination network in canonical form, e.g. `10.55.0.0/16`.
    pub cidr: RString,
    /// Candidate router IPv4 addresses (private IPs of EC2 instances), sorted, unique.
    pub hosts: RVec<RString>,
}

/// A complete route spec: the JSON `{"10.55.0.0/16": ["10.1.0.5", "10.1.1.7"]}`.
///
/// Watchers always send the whole spec, never a delta. Build one with
/// [`crate::spec::parse_json`] or [`crate::spec::from_pairs`] so it is validated and
/// canonical (entries sorted by CIDR, hosts sorted and de-duplicated).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RouteSpec {
    /// The entries, sorted by CIDR, one per CIDR.
    pub routes: RVec<RouteEntry>,
}

impl RouteSpec {
    /// Every host named anywhere in the spec, sorted and unique.
    pub fn all_hosts(&self) -> HostList {
        let mut hosts: Vec<RString> =
            self.routes.iter().flat_map(|r| r.hosts.iter().cloned()).collect();
        crate::spec::sort_ips(&mut hosts);
        hosts.dedup();
        HostList { hosts: hosts.into() }
    }

    /// True when the spec has no CIDR at all.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The spec as the JSON object operators write: `{"cidr": ["ip", ...], ...}`.
    pub fn to_json(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> = self
            .routes
            .iter()
            .map(|r| {
                let hosts = r.hosts.iter().map(|h| serde_json::Value::from(h.as_str())).collect();
                (r.cidr.to_string(), serde_json::Value::Array(hosts))
            })
            .collect();
        serde_json::Value::Object(map).to_string()
    }
}

/// The full list of hosts a health monitor must watch.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct HostList {
    /// IPv4 addresses, sorted and unique.
    pub hosts: RVec<RString>,
}

/// A health monitor's full verdict. Hosts in neither list are healthy.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct HealthReport {
    /// Hosts that must not carry routes; routes on them are moved.
    pub failed: RVec<RString>,
    /// Hosts that are used only when no healthy candidate exists; routes on them are moved
    /// to a healthy host when one exists.
    pub questionable: RVec<RString>,
}
