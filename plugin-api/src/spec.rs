//! Route spec validation, shared by every watcher and by the host.
//!
//! A valid spec is a JSON object whose keys are IPv4 or IPv6 CIDRs in canonical form (the
//! text [`Cidr`] writes: no host bits set, no leading zeros, IPv6 as RFC 5952 writes it, no
//! IPv4-mapped IPv6) and whose values are lists of IPv4 addresses. Each key appears once:
//! the text is read entry by entry ([`parse_json`]), so a repeated key, which a
//! `serde_json::Value` would silently reduce to its last occurrence, refuses the spec.
//! Entries are sorted by CIDR; each CIDR's hosts keep the order the spec gives them,
//! de-duplicated (the first occurrence wins): the order matters to `--failback preferred`,
//! whose preferred router is the first. Errors name the offending key or value and say
//! what is expected.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

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
    /// A key appears more than once: the spec is ambiguous.
    #[error("'{key}' appears more than once in the route spec, which makes it ambiguous; list each CIDR once")]
    RepeatedKey {
        /// The repeated key.
        key: String,
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

/// Parses a route destination written in canonical form: an IPv4 or IPv6 CIDR with host
/// bits zero, written exactly as [`Cidr`] writes it (a prefix length without leading zeros,
/// IPv6 in RFC 5952 form), and not an IPv4-mapped IPv6 network. The error says what to
/// write instead.
pub fn parse_route_cidr(s: &str) -> Result<Cidr, String> {
    let cidr = Cidr::parse(s)?;
    if let Some(v4) = mapped_ipv4(&cidr) {
        return Err(format!("an IPv4-mapped IPv6 network is an IPv4 network; write it as {v4}"));
    }
    let canonical = cidr.to_string();
    if canonical == s {
        return Ok(cidr);
    }
    let len = s.rsplit_once('/').map_or("", |(_, len)| len);
    let why = if len.len() > 1 && len.starts_with('0') {
        "the prefix length has a leading zero"
    } else if cidr.family() == Family::V6 {
        "IPv6 is written as RFC 5952 does (lowercase, no leading zeros in a group, the longest run of zero groups as ::)"
    } else {
        "it is not in canonical form"
    };
    Err(format!("{why}; write it as {canonical}"))
}

/// The IPv4 network an IPv4-mapped IPv6 network (within `::ffff:0:0/96`) stands for.
fn mapped_ipv4(cidr: &Cidr) -> Option<Cidr> {
    let IpAddr::V6(v6) = cidr.ip() else { return None };
    let v4 = v6.to_ipv4_mapped().filter(|_| cidr.prefix() >= 96)?;
    Cidr::new(IpAddr::V4(v4), cidr.prefix() - 96).ok()
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
                return Err(SpecError::RepeatedKey { key: cidr.to_string() });
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
/// CIDR's hosts keep their order, see [`RouteSpec::new`]); a key given twice is refused.
pub fn from_pairs<K, H, I>(pairs: I) -> Result<RouteSpec, SpecError>
where
    K: AsRef<str>,
    H: AsRef<str>,
    I: IntoIterator<Item = (K, Vec<H>)>,
{
    let mut out: BTreeMap<Cidr, Vec<Ipv4>> = BTreeMap::new();
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
        // Keys are canonical, so two keys for one network are the same text.
        if out.insert(cidr, list).is_some() {
            return Err(SpecError::RepeatedKey { key: key.into() });
        }
    }
    RouteSpec::new(out)
}

/// Parses and validates a JSON route spec. The text is read entry by entry, so a repeated
/// key is seen (and refused) rather than reduced to its last occurrence.
pub fn parse_json(text: &str) -> Result<RouteSpec, SpecError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let document = Document::deserialize(&mut de)
        .and_then(|document| de.end().map(|()| document))
        .map_err(|e| SpecError::Json(e.to_string()))?;
    match document {
        Document::Object(entries) => from_entries(entries),
        Document::Other(kind) => Err(SpecError::NotObject(kind)),
    }
}

/// Validates the entries of a spec object, in the order written.
fn from_entries(entries: Vec<(String, serde_json::Value)>) -> Result<RouteSpec, SpecError> {
    let mut pairs = Vec::with_capacity(entries.len());
    for (key, hosts) in entries {
        let list = match hosts {
            serde_json::Value::Array(list) => list,
            other => return Err(SpecError::NotList { key, got: json_kind(&other) }),
        };
        let mut names = Vec::with_capacity(list.len());
        for h in list {
            match h {
                serde_json::Value::String(s) => names.push(s),
                other => {
                    return Err(SpecError::Host {
                        key,
                        value: other.to_string(),
                        reason: format!("; expected a string, got {}", json_kind(&other)),
                    })
                }
            }
        }
        pairs.push((key, names));
    }
    from_pairs(pairs)
}

/// The top level of a spec text: the object's entries in the order written, repeated keys
/// included, or the JSON type found instead of an object.
enum Document {
    /// `(key, value)` of every entry.
    Object(Vec<(String, serde_json::Value)>),
    /// Not an object: what it is ("a list", "null", ...).
    Other(&'static str),
}

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Document, D::Error> {
        deserializer.deserialize_any(DocumentVisitor)
    }
}

/// Reads the top level of a spec into a [`Document`].
struct DocumentVisitor;

impl<'de> Visitor<'de> for DocumentVisitor {
    type Value = Document;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
            entries.push(entry);
        }
        Ok(Document::Object(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Document, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Document::Other("a list"))
    }

    fn visit_unit<E>(self) -> Result<Document, E> {
        Ok(Document::Other("null"))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Document, E> {
        Ok(Document::Other("a boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Document, E> {
        Ok(Document::Other("a number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Document, E> {
        Ok(Document::Other("a number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Document, E> {
        Ok(Document::Other("a number"))
    }

    fn visit_str<E>(self, _: &str) -> Result<Document, E> {
        Ok(Document::Other("a string"))
    }
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
    fn a_repeated_key_refuses_the_whole_spec() {
        let refused = |text: &str| parse_json(text).unwrap_err();
        let err = refused(r#"{"10.83.0.0/16": ["10.0.0.1", "10.0.0.2"], "10.9.0.0/16": [], "10.83.0.0/16": []}"#);
        assert_eq!(err, SpecError::RepeatedKey { key: "10.83.0.0/16".into() });
        assert_eq!(
            err.to_string(),
            "'10.83.0.0/16' appears more than once in the route spec, which makes it ambiguous; list each CIDR once"
        );
        // The same key however it is escaped, and with the same value.
        assert!(matches!(refused(r#"{"10.0.0.0/8": [], "10.0.0.0\/8": []}"#), SpecError::RepeatedKey { .. }));
        assert!(matches!(
            refused(r#"{"10.0.0.0/8": ["10.0.0.1"], "10.0.0.0/8": ["10.0.0.1"]}"#),
            SpecError::RepeatedKey { .. }
        ));
        let err = from_pairs([("10.0.0.0/8", vec!["10.0.0.1"]), ("10.0.0.0/8", vec![])]).unwrap_err();
        assert_eq!(err, SpecError::RepeatedKey { key: "10.0.0.0/8".into() });
        // Non-object tops and trailing text are still told apart.
        assert_eq!(refused("[1, {\"a\": 1, \"a\": 2}]"), SpecError::NotObject("a list"));
        assert_eq!(refused("null"), SpecError::NotObject("null"));
        assert_eq!(refused("12"), SpecError::NotObject("a number"));
        assert!(matches!(refused(r#"{"10.0.0.0/8": []} {}"#), SpecError::Json(_)));
    }

    #[test]
    fn non_canonical_keys_say_what_to_write() {
        for (key, want) in [
            ("10.55.0.0/016", "the prefix length has a leading zero; write it as 10.55.0.0/16"),
            ("0.0.0.0/00", "the prefix length has a leading zero; write it as 0.0.0.0/0"),
            ("2001:DB8::/32", "write it as 2001:db8::/32"),
            ("2001:0db8::/32", "write it as 2001:db8::/32"),
            ("2001:db8:0:0:0:0:0:0/32", "write it as 2001:db8::/32"),
            ("2001:db8::0:1/128", "write it as 2001:db8::1/128"),
            ("::ffff:10.0.0.0/104", "an IPv4-mapped IPv6 network is an IPv4 network; write it as 10.0.0.0/8"),
            ("::ffff:0:0/96", "write it as 0.0.0.0/0"),
        ] {
            let text = serde_json::json!({ key: ["10.0.0.1"] }).to_string();
            let err = parse_json(&text).unwrap_err();
            assert!(matches!(&err, SpecError::Cidr { key: k, .. } if k == key), "{key}: {err}");
            assert!(err.to_string().starts_with(&format!("'{key}' is not a valid route CIDR: ")), "{err}");
            assert!(err.to_string().ends_with(want), "{key}: {err}");
        }
        for ok in
            ["0.0.0.0/0", "10.55.0.0/16", "2001:db8::/32", "::/0", "64:ff9b::a00:0/120", "2600:1f18:7a0:5500::/56"]
        {
            assert_eq!(parse_route_cidr(ok).map(|c| c.to_string()), Ok(ok.to_string()));
        }
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
