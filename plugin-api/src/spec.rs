//! Route spec validation, shared by every watcher and by the host.
//!
//! A valid spec is a JSON object whose keys are IPv4 CIDRs in canonical form (no host bits
//! set) and whose values are lists of IPv4 addresses. Hosts are de-duplicated and sorted.
//! Errors name the offending key or value and say what is expected.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use abi_stable::std_types::{RString, RVec};

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
    if s.len() > 15 || !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    s.parse::<Ipv4Addr>().ok()
}

/// Parses `a.b.c.d/len` strictly; host bits must be zero. Returns the canonical pair.
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let Some((addr, len)) = s.split_once('/') else {
        return Err("a CIDR needs a prefix length, e.g. 10.55.0.0/16".into());
    };
    let ip = parse_ipv4(addr).ok_or_else(|| {
        if addr.contains(':') {
            "only IPv4 routes are supported".to_string()
        } else {
            format!("'{addr}' is not an IPv4 address")
        }
    })?;
    let len: u8 = match len.parse::<u8>() {
        Ok(l) if l <= 32 && !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()) => l,
        _ => return Err(format!("prefix length '{len}' must be a number from 0 to 32")),
    };
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let net = Ipv4Addr::from(u32::from(ip) & mask);
    if net != ip {
        return Err(format!("host bits are set; the network is {net}/{len}"));
    }
    Ok((ip, len))
}

/// Canonical text of a CIDR: `10.55.0.0/16`.
pub fn canonical_cidr(s: &str) -> Result<String, String> {
    parse_cidr(s).map(|(ip, len)| format!("{ip}/{len}"))
}

/// Sorts IP strings numerically (strings that are not IPs sort last, as text).
pub fn sort_ips(ips: &mut [RString]) {
    ips.sort_by_key(|s| (parse_ipv4(s).map(u32::from).unwrap_or(u32::MAX), s.to_string()));
}

/// Builds a canonical spec from `(cidr, hosts)` pairs, validating everything.
pub fn from_pairs<K, H, I>(pairs: I) -> Result<RouteSpec, SpecError>
where
    K: AsRef<str>,
    H: AsRef<str>,
    I: IntoIterator<Item = (K, Vec<H>)>,
{
    let mut out: BTreeMap<(u32, u8), (String, Vec<RString>)> = BTreeMap::new();
    for (key, hosts) in pairs {
        let key = key.as_ref();
        let (ip, len) =
            parse_cidr(key).map_err(|reason| SpecError::Cidr { key: key.into(), reason })?;
        let mut list = Vec::with_capacity(hosts.len());
        for h in &hosts {
            let h = h.as_ref();
            let addr = parse_ipv4(h).ok_or_else(|| SpecError::Host {
                key: key.into(),
                value: h.into(),
                reason: if h.contains('/') {
                    "; write the address without a prefix length".into()
                } else {
                    String::new()
                },
            })?;
            list.push(RString::from(addr.to_string()));
        }
        sort_ips(&mut list);
        list.dedup();
        if let Some((other, _)) = out.get(&(u32::from(ip), len)) {
            return Err(SpecError::DuplicateCidr { key: key.into(), other: other.clone() });
        }
        out.insert((u32::from(ip), len), (key.to_string(), list));
    }
    Ok(RouteSpec {
        routes: out
            .into_iter()
            .map(|((ip, len), (_, hosts))| RouteEntry {
                cidr: format!("{}/{len}", Ipv4Addr::from(ip)).into(),
                hosts: RVec::from(hosts),
            })
            .collect(),
    })
}

/// Parses and validates a JSON route spec.
pub fn parse_json(text: &str) -> Result<RouteSpec, SpecError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| SpecError::Json(e.to_string()))?;
    from_value(&value)
}

/// Validates an already-parsed JSON value as a route spec.
pub fn from_value(value: &serde_json::Value) -> Result<RouteSpec, SpecError> {
    let obj = value.as_object().ok_or(SpecError::NotObject(json_kind(value)))?;
    let mut pairs = Vec::with_capacity(obj.len());
    for (key, hosts) in obj {
        let list = hosts
            .as_array()
            .ok_or_else(|| SpecError::NotList { key: key.clone(), got: json_kind(hosts) })?;
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

/// Re-validates a spec received from a plugin; returns its canonical form.
pub fn validate(spec: &RouteSpec) -> Result<RouteSpec, SpecError> {
    from_pairs(spec.routes.iter().map(|r| {
        (r.cidr.as_str(), r.hosts.iter().map(|h| h.as_str()).collect::<Vec<_>>())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(spec: &RouteSpec, cidr: &str) -> Vec<String> {
        let e = spec.routes.iter().find(|r| r.cidr == cidr).expect("cidr present");
        e.hosts.iter().map(|h| h.to_string()).collect()
    }

    #[test]
    fn accepts_the_original_example() {
        let spec = parse_json(
            r#"{"10.55.16.0/24": ["10.33.20.142"], "10.66.17.0/24": ["10.33.30.22", "10.33.20.93", "10.33.20.93"]}"#,
        )
        .unwrap();
        assert_eq!(spec.routes.len(), 2);
        assert_eq!(hosts(&spec, "10.66.17.0/24"), ["10.33.20.93", "10.33.30.22"]);
        assert_eq!(spec.to_json(), r#"{"10.55.16.0/24":["10.33.20.142"],"10.66.17.0/24":["10.33.20.93","10.33.30.22"]}"#);
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
        for bad in ["1.1.1.0", "1.1.1.0/", "1.1.1.0/-1", "1.1.1.0/33", "192.168.1.1111/32", "::/0", "10/8", "10.0.0.0/255.0.0.0", "10.0.0.0/+8", " 10.0.0.0/8"] {
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
        for bad in ["192.168.1.1111", "192.168.1.", "292.168.1.1", "10.1", "010.001.1.1", "10.0.0.1 ", "::1", "0x0a000001", ""] {
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
    fn validate_canonicalises_and_all_hosts_is_sorted() {
        let spec = from_pairs([("10.2.0.0/16", vec!["10.0.0.10", "10.0.0.9"]), ("10.1.0.0/16", vec!["10.0.0.9"])]).unwrap();
        assert_eq!(validate(&spec).unwrap(), spec);
        let all: Vec<_> = spec.all_hosts().hosts.iter().map(|s| s.to_string()).collect();
        assert_eq!(all, ["10.0.0.9", "10.0.0.10"]);
        assert_eq!(spec.routes[0].cidr, "10.1.0.0/16");
    }
}
