//! Route spec validation, shared by every watcher and by the host.
//!
//! A valid spec is a JSON object whose keys are IPv4 CIDRs in canonical form (no host bits
//! set) and whose values are lists of IPv4 addresses. Entries are sorted by CIDR; each
//! CIDR's hosts keep the order the spec gives them, de-duplicated (the first occurrence
//! wins): the order matters to `--failback preferred`, whose preferred router is the first.
//! Errors name the offending key or value and say what is expected.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::net::{Cidr, Family, Ipv4};
use crate::types::{RouteEntry, RouteSpec};

/// Why a route spec was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The text is not JSON.
    #[error("the route spec is not valid JSON: {0}")]
    Json(String),
    /// The top level is not an object.
    #[error("the route spec must be a JSON object like {{\"10.55.0.0/16\": [\"10.1.0.5\"]}}, got {0}")]
    NotObject(&'static str),
    /// A key is not a canonical IPv4 CIDR.
    #[error("'{key}' is not a valid route CIDR: {reason}")]
    Cidr {
        /// The key as written.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two keys name the same network.
    #[error("'{key}' names the same network as '{other}'; list each CIDR once")]
    DuplicateCidr {
        /// The key as written.
        key: String,
        /// The earlier key for the same network.
        other: String,
    },
    /// A value is not a list.
    #[error("the value of '{key}' must be a list of router IP addresses, got {got}")]
    NotList {
        /// The CIDR key.
        key: String,
        /// The JSON type found instead.
        got: &'static str,
    },
    /// A spec built outside this crate's constructors is not in canonical form.
    #[error("the route spec is not canonical: {0}; build it with RouteSpec::new or spec::parse_json")]
    NotCanonical(String),
    /// A host is not an IPv4 address.
    #[error("'{value}' (a router of '{key}') is not a valid IPv4 address{reason}")]
    Host {
        /// The CIDR key.
        key: String,
        /// The host as written (JSON text for non-strings).
        value: String,
        /// Extra detail, starting with "; " when present.
        reason: String,
    },
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Parses a strict dotted-quad IPv4 address (no octal, no short forms, no spaces).
pub fn parse_ipv4(s: &str) -> Option<Ipv4Addr> {
    Ipv4::parse(s).map(Ipv4Addr::from)
}

/// Parses a route destination: a canonical IPv4 or IPv6 CIDR (host bits zero).
pub fn parse_route_cidr(s: &str) -> Result<Cidr, String> {
    Cidr::parse(s)
}

/// Parses `a.b.c.d/len` strictly; host bits must be zero. Returns the network and length.
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let cidr = parse_route_cidr(s)?;
    match cidr.family() {
        Family::V4 => Ok((cidr.ipv4().unwrap_or(Ipv4Addr::UNSPECIFIED), cidr.prefix())),
        Family::V6 => Err("an IPv4 network is needed here".into()),
    }
}

impl RouteSpec {
    /// A canonical spec from typed entries: sorted by CIDR, each CIDR's hosts in the given
    /// order without repeats (the first occurrence of a host wins); two entries for one
    /// network are refused.
    pub fn new(entries: impl IntoIterator<Item = (Cidr, Vec<Ipv4>)>) -> Result<RouteSpec, SpecError> {
        let mut out: BTreeMap<Cidr, Vec<Ipv4>> = BTreeMap::new();
        for (cidr, hosts) in entries {
            if out.insert(cidr, first_occurrences(hosts)).is_some() {
                return Err(SpecError::DuplicateCidr { key: cidr.to_string(), other: cidr.to_string() });
            }
        }
        Ok(RouteSpec {
            routes: out.into_iter().map(|(cidr, hosts)| RouteEntry { cidr, hosts: hosts.into() }).collect(),
        })
    }

    /// Parses and validates a JSON route spec.
    pub fn from_json(text: &str) -> Result<RouteSpec, SpecError> {
        parse_json(text)
    }

    /// The spec as the JSON object operators write: `{"cidr": ["ip", ...], ...}`.
    pub fn to_json(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> = self
            .routes
            .iter()
            .map(|r| {
                let hosts = r.hosts.iter().map(|h| serde_json::Value::from(h.to_string())).collect();
                (r.cidr.to_string(), serde_json::Value::Array(hosts))
            })
            .collect();
        serde_json::Value::Object(map).to_string()
    }

    /// Checks that a spec received across the ABI is canonical: entries sorted and unique,
    /// each CIDR's hosts unique, in any order (sorted lists, which plugins built before
    /// the order was kept send, are canonical too). The SDK's constructors always are.
    pub fn check(&self) -> Result<(), SpecError> {
        for (i, r) in self.routes.iter().enumerate() {
            let key = r.cidr.to_string();
            if i > 0 && self.routes[i - 1].cidr >= r.cidr {
                return Err(SpecError::NotCanonical(format!("entries are not sorted and unique at '{key}'")));
            }
            let mut seen = std::collections::BTreeSet::new();
            if let Some(h) = r.hosts.iter().find(|h| !seen.insert(**h)) {
                return Err(SpecError::NotCanonical(format!("router {h} is listed twice for '{key}'")));
            }
        }
        Ok(())
    }
}

/// `hosts` without repeats, in their order: the first occurrence of each stays.
fn first_occurrences(hosts: Vec<Ipv4>) -> Vec<Ipv4> {
    let mut seen = std::collections::BTreeSet::new();
    hosts.into_iter().filter(|h| seen.insert(*h)).collect()
}

/// Builds a canonical spec from `(cidr, hosts)` text pairs, validating everything (each
/// CIDR's hosts keep their order, see [`RouteSpec::new`]).
pub fn from_pairs<K, H, I>(pairs: I) -> Result<RouteSpec, SpecError>
where
    K: AsRef<str>,
    H: AsRef<str>,
    I: IntoIterator<Item = (K, Vec<H>)>,
{
    let mut out: BTreeMap<Cidr, (String, Vec<Ipv4>)> = BTreeMap::new();
    for (key, hosts) in pairs {
        let key = key.as_ref();
        let cidr = parse_route_cidr(key).map_err(|reason| SpecError::Cidr { key: key.into(), reason })?;
        let mut list = Vec::with_capacity(hosts.len());
        for h in &hosts {
            let h = h.as_ref();
            let addr = Ipv4::parse(h).ok_or_else(|| SpecError::Host {
                key: key.into(),
                value: h.into(),
                reason: if h.contains('/') {
                    "; write the address without a prefix length".into()
                } else {
                    String::new()
                },
            })?;
            list.push(addr);
        }
        if let Some((other, _)) = out.get(&cidr) {
            return Err(SpecError::DuplicateCidr { key: key.into(), other: other.clone() });
        }
        out.insert(cidr, (key.to_string(), list));
    }
    RouteSpec::new(out.into_iter().map(|(cidr, (_, hosts))| (cidr, hosts)))
}

/// Parses and validates a JSON route spec.
pub fn parse_json(text: &str) -> Result<RouteSpec, SpecError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| SpecError::Json(e.to_string()))?;
    from_value(&value)
}

/// Validates an already-parsed JSON value as a route spec.
pub fn from_value(value: &serde_json::Value) -> Result<RouteSpec, SpecError> {
    let obj = value.as_object().ok_or(SpecError::NotObject(json_kind(value)))?;
    let mut pairs = Vec::with_capacity(obj.len());
    for (key, hosts) in obj {
        let list = hosts.as_array().ok_or_else(|| SpecError::NotList { key: key.clone(), got: json_kind(hosts) })?;
        let mut names = Vec::with_capacity(list.len());
        for h in list {
            match h.as_str() {
                Some(s) => names.push(s.to_string()),
                None => {
                    return Err(SpecError::Host {
                        key: key.clone(),
                        value: h.to_string(),
                        reason: format!("; expected a string, got {}", json_kind(h)),
                    })
                }
            }
        }
        pairs.push((key.clone(), names));
    }
    from_pairs(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(spec: &RouteSpec, cidr: &str) -> Vec<String> {
        let e = spec.routes.iter().find(|r| r.cidr.to_string() == cidr).expect("cidr present");
        e.hosts.iter().map(|h| h.to_string()).collect()
    }

    #[test]
    fn accepts_the_original_example() {
        let spec = parse_json(
            r#"{"10.55.16.0/24": ["10.33.20.142"], "10.66.17.0/24": ["10.33.30.22", "10.33.20.93", "10.33.20.93"]}"#,
        )
        .unwrap();
        assert_eq!(spec.routes.len(), 2);
        // The written order stays; a repeat goes (the first occurrence wins).
        assert_eq!(hosts(&spec, "10.66.17.0/24"), ["10.33.30.22", "10.33.20.93"]);
        assert_eq!(
            spec.to_json(),
            r#"{"10.55.16.0/24":["10.33.20.142"],"10.66.17.0/24":["10.33.30.22","10.33.20.93"]}"#
        );
        assert_eq!(parse_json(&spec.to_json()), Ok(spec));
    }

    #[test]
    fn accepts_empty_spec_and_empty_host_list() {
        assert!(parse_json("{}").unwrap().is_empty());
        assert!(hosts(&parse_json(r#"{"10.0.0.0/8": []}"#).unwrap(), "10.0.0.0/8").is_empty());
    }

    #[test]
    fn cidr_checks_from_the_original_tests() {
        for ok in ["192.168.0.0/16", "128.0.0.0/1", "192.168.0.0/32", "0.0.0.0/0"] {
            assert!(parse_cidr(ok).is_ok(), "{ok}");
        }
        for bad in [
            "1.1.1.0", "1.1.1.0/", "1.1.1.0/-1", "1.1.1.0/33", "192.168.1.1111/32", "::/0", "10/8",
            "10.0.0.0/255.0.0.0", "10.0.0.0/+8", " 10.0.0.0/8",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_bits_are_rejected_with_the_network_named() {
        let err = parse_json(r#"{"10.1.0.1/16": ["10.0.0.1"]}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "'10.1.0.1/16' is not a valid route CIDR: host bits are set; the network is 10.1.0.0/16"
        );
    }

    #[test]
    fn hosts_are_strict_ipv4() {
        for bad in
            ["192.168.1.1111", "192.168.1.", "292.168.1.1", "10.1", "010.001.1.1", "10.0.0.1 ", "::1", "0x0a000001", ""]
        {
            let text = serde_json::json!({"10.0.0.0/8": [bad]}).to_string();
            let err = parse_json(&text).unwrap_err();
            assert!(matches!(err, SpecError::Host { .. }), "{bad}: {err}");
            assert!(err.to_string().contains(&format!("'{bad}'")), "{err}");
        }
        let err = parse_json(r#"{"10.0.0.0/8": ["10.0.0.1/32"]}"#).unwrap_err();
        assert!(err.to_string().contains("without a prefix length"), "{err}");
    }

    #[test]
    fn wrong_shapes_name_the_key() {
        assert_eq!(parse_json(r#""MALFORMED""#).unwrap_err(), SpecError::NotObject("a string"));
        assert_eq!(
            parse_json(r#"{"10.0.0.0/8": "Foo"}"#).unwrap_err().to_string(),
            "the value of '10.0.0.0/8' must be a list of router IP addresses, got a string"
        );
        let err = parse_json(r#"{"10.0.0.0/8": [["10.0.0.1"]]}"#).unwrap_err();
        assert!(err.to_string().contains("expected a string, got a list"), "{err}");
        assert!(matches!(parse_json("{not json").unwrap_err(), SpecError::Json(_)));
    }

    #[test]
    fn duplicate_networks_are_rejected() {
        let err = from_pairs([("10.0.0.0/8", vec!["10.0.0.1"]), ("10.0.0.0/08", vec![])]).unwrap_err();
        assert!(matches!(err, SpecError::DuplicateCidr { .. }), "{err}");
    }

    #[test]
    fn specs_are_canonical_and_all_hosts_is_sorted() {
        let spec =
            from_pairs([("10.2.0.0/16", vec!["10.0.0.10", "10.0.0.9"]), ("10.1.0.0/16", vec!["10.0.0.9"])]).unwrap();
        assert_eq!(spec.check(), Ok(()));
        let all: Vec<_> = spec.all_hosts().hosts.iter().map(|s| s.to_string()).collect();
        assert_eq!(all, ["10.0.0.9", "10.0.0.10"]);
        assert_eq!(spec.routes[0].cidr.to_string(), "10.1.0.0/16");
        let mut unsorted = spec.clone();
        unsorted.routes.swap(0, 1);
        assert!(matches!(unsorted.check(), Err(SpecError::NotCanonical(_))));
        assert_eq!(hosts(&spec, "10.2.0.0/16"), ["10.0.0.10", "10.0.0.9"], "written order");
        let mut dup_hosts = spec.clone();
        let first = dup_hosts.routes[1].hosts[0];
        dup_hosts.routes[1].hosts.push(first);
        let err = dup_hosts.check().unwrap_err();
        assert!(matches!(err, SpecError::NotCanonical(_)), "{err}");
        assert!(err.to_string().contains("router 10.0.0.10 is listed twice for '10.2.0.0/16'"), "{err}");
        // A plugin that sorts its lists (as every plugin did before the order was kept).
        let mut sorted = spec.clone();
        sorted.routes[1].hosts.sort();
        assert_eq!(sorted.check(), Ok(()));
        let v6 = RouteSpec::new([(Cidr::parse("2001:db8::/32").unwrap(), vec![])]).unwrap();
        assert_eq!(v6.check(), Ok(()), "IPv6 destinations are routed too");
        assert!(RouteSpec::new([(spec.routes[0].cidr, vec![]), (spec.routes[0].cidr, vec![])]).is_err());
    }
}
