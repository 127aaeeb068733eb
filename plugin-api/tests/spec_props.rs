//! Property tests of route spec parsing and validation (issue 7; both address families since
//! issue 14).
//!
//! Generated JSON texts, JSON values and raw [`RouteSpec`]s, biased towards near-valid
//! CIDRs and addresses, are checked against an independent reference predicate written
//! here from the documented rules: the spec functions never panic, accept exactly the
//! valid specs (in canonical form), and every error names an offending key or value.
//!
//! Each property runs `PROPTEST_CASES` inputs (default 2,000); `make fuzz` runs 1,000,000
//! each in release mode. Every property prints how many inputs it ran and how long it took.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value};
use vpcrouter_plugin_api::net::{Cidr, Ipv4};
use vpcrouter_plugin_api::spec::{self, SpecError};
use vpcrouter_plugin_api::{RouteEntry, RouteSpec};

// ---- reference predicate (independent of the implementation) ----

/// A decimal octet: 1 to 3 digits, no leading zero, at most 255.
fn ref_octet(s: &str) -> Option<u32> {
    let ok =
        !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    let n = if ok { s.parse::<u32>().ok()? } else { return None };
    (n <= 255).then_some(n)
}

/// A strict dotted quad.
fn ref_ip(s: &str) -> Option<u32> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    parts.iter().try_fold(0u32, |acc, p| Some(acc << 8 | ref_octet(p)?))
}

/// A network of either family: (0 for IPv4 or 1 for IPv6, address, prefix length), ordered
/// as canonical specs are (IPv4 first).
type Net = (u8, u128, u8);

/// A decimal prefix length of at most `max` (leading zeros allowed).
fn ref_len(l: &str, max: u8) -> Option<u8> {
    if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = l.trim_start_matches('0');
    let len: u8 = if digits.is_empty() {
        0
    } else if digits.len() > 3 {
        return None;
    } else {
        digits.parse().ok()?
    };
    (len <= max).then_some(len)
}

/// `ip/len`: a strict dotted quad with a prefix length 0..=32, or an IPv6 address (any form
/// the standard library reads) with 0..=128; no host bits set.
fn ref_cidr(s: &str) -> Option<Net> {
    let (a, l) = s.split_once('/')?;
    let (family, ip, bits) = if a.contains(':') {
        (1, u128::from(a.parse::<Ipv6Addr>().ok()?), 128u32)
    } else {
        (0, u128::from(ref_ip(a)?), 32)
    };
    let len = ref_len(l, bits as u8)?;
    let host_mask = if u32::from(len) == bits { 0 } else { (u128::MAX >> (128 - bits)) >> len };
    (ip & host_mask == 0).then_some((family, ip, len))
}

/// The canonical text of a network.
fn net_text((family, ip, len): Net) -> String {
    if family == 0 {
        format!("{}/{len}", Ipv4Addr::from(ip as u32))
    } else {
        format!("{}/{len}", Ipv6Addr::from(ip))
    }
}

/// Canonical routes: (network text, unique hosts in the written order, the first occurrence
/// of a repeated host kept), ordered by (address, length).
type Canon = Vec<(String, Vec<String>)>;

/// The reference verdict for `(key, hosts)` pairs, hosts `None` where not a string.
fn ref_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, Vec<Option<&'a str>>)>) -> Option<Canon> {
    let mut out: BTreeMap<Net, Vec<u32>> = BTreeMap::new();
    for (key, hosts) in pairs {
        let net = ref_cidr(key)?;
        let all = hosts.into_iter().map(|h| ref_ip(h?)).collect::<Option<Vec<u32>>>()?;
        let mut list: Vec<u32> = Vec::new();
        for h in all {
            if !list.contains(&h) {
                list.push(h);
            }
        }
        if out.insert(net, list).is_some() {
            return None;
        }
    }
    Some(
        out.into_iter()
            .map(|(net, hosts)| (net_text(net), hosts.into_iter().map(|h| Ipv4Addr::from(h).to_string()).collect()))
            .collect(),
    )
}

/// The reference verdict for a JSON value.
fn ref_value(v: &Value) -> Option<Canon> {
    let obj = v.as_object()?;
    let mut pairs = Vec::new();
    for (k, h) in obj {
        pairs.push((k.as_str(), h.as_array()?.iter().map(Value::as_str).collect()));
    }
    ref_pairs(pairs)
}

fn canon(spec: &RouteSpec) -> Canon {
    spec.routes.iter().map(|r| (r.cidr.to_string(), r.hosts.iter().map(|h| h.to_string()).collect())).collect()
}

/// True when `err` names a key or value of `pairs` that really is at fault.
fn justified(err: &SpecError, pairs: &[(&str, Vec<Option<&str>>)], raw_host: impl Fn(&str, &str) -> bool) -> bool {
    let text = err.to_string();
    match err {
        SpecError::Cidr { key, .. } => {
            pairs.iter().any(|(k, _)| k == key) && ref_cidr(key).is_none() && text.contains(&format!("'{key}'"))
        }
        SpecError::DuplicateCidr { key, other } => {
            let same = ref_cidr(key).is_some() && ref_cidr(key) == ref_cidr(other) && key != other
                || pairs.iter().filter(|(k, _)| k == key).count() > 1;
            same && text.contains(&format!("'{key}'")) && text.contains(&format!("'{other}'"))
        }
        SpecError::Host { key, value, .. } => {
            let bad = pairs.iter().any(|(k, hs)| k == key && hs.iter().any(|h| h.is_none_or(|h| ref_ip(h).is_none())));
            bad && raw_host(key, value) && text.contains(&format!("'{value}'")) && text.contains(&format!("'{key}'"))
        }
        SpecError::NotList { key, .. } => text.contains(&format!("'{key}'")),
        SpecError::NotObject(_) | SpecError::Json(_) | SpecError::NotCanonical(_) => false,
    }
}

// ---- generators ----

fn dotted(ip: u32) -> String {
    Ipv4Addr::from(ip).to_string()
}

/// Strings that are often, but not always, valid dotted quads.
fn ip_ish() -> impl Strategy<Value = String> {
    prop_oneof![
        24 => any::<u32>().prop_map(dotted),
        4 => (0u32..4).prop_map(|n| format!("127.0.{n}.10")),
        1 => (any::<[u8; 4]>(), 0usize..4).prop_map(|(o, i)| {
            let mut parts: Vec<String> = o.iter().map(u8::to_string).collect();
            parts[i] = format!("0{}", parts[i]);
            parts.join(".")
        }),
        1 => "[0-9.]{0,17}",
        1 => "[0-9]{1,4}(\\.[0-9]{1,4}){0,4}[ /x:]?[0-9]{0,2}",
        1 => any::<String>(),
    ]
}

/// Strings that are often, but not always, valid CIDRs.
fn cidr_ish() -> impl Strategy<Value = String> {
    prop_oneof![
        24 => (any::<u32>(), 0u8..=32).prop_map(|(ip, len)| {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            format!("{}/{len}", dotted(ip & mask))
        }),
        2 => (any::<u32>(), 0u8..=40).prop_map(|(ip, len)| format!("{}/{len}", dotted(ip))),
        1 => (0u8..4).prop_map(|n| format!("10.{n}.0.0/0{}", 16)),
        1 => (ip_ish(), "[0-9+ -]{0,4}").prop_map(|(ip, len)| format!("{ip}/{len}")),
        6 => (any::<u128>(), 0u8..=128).prop_map(|(ip, len)| {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            format!("{}/{len}", Ipv6Addr::from(ip & mask))
        }),
        1 => (any::<u128>(), 0u8..=140).prop_map(|(ip, len)| format!("{}/{len}", Ipv6Addr::from(ip))),
        1 => (0u16..4, 0u8..=64).prop_map(|(n, len)| format!("2001:DB8:{n}::/{len:03}")),
        1 => "[0-9./:a-f]{0,22}",
        1 => any::<String>(),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ip_ish().prop_map(Value::String),
        cidr_ish().prop_map(Value::String),
    ]
}

/// Any JSON value, nested a few levels, objects keyed by CIDR-ish strings.
fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(cidr_ish(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Objects shaped like a spec, valid about half the time.
fn spec_shaped() -> impl Strategy<Value = Value> {
    let host = prop_oneof![12 => ip_ish().prop_map(Value::String), 1 => leaf()];
    let hosts = prop_oneof![12 => prop::collection::vec(host, 0..5).prop_map(Value::Array), 1 => leaf()];
    prop::collection::btree_map(cidr_ish(), hosts, 0..6).prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// JSON texts: valid ones, damaged ones, and arbitrary strings.
fn json_text() -> impl Strategy<Value = String> {
    let value = prop_oneof![spec_shaped(), json_value()];
    prop_oneof![
        3 => value.clone().prop_map(|v| v.to_string()),
        2 => (value, any::<prop::sample::Index>(), any::<char>(), any::<bool>()).prop_map(|(v, at, c, insert)| {
            let mut chars: Vec<char> = v.to_string().chars().collect();
            let i = at.index(chars.len() + 1);
            if insert || i == chars.len() {
                chars.insert(i, c);
            } else {
                chars.remove(i);
            }
            chars.into_iter().collect()
        }),
        1 => any::<String>(),
    ]
}

/// Raw text pairs as a watcher could read them: any strings, duplicate keys possible.
fn raw_spec() -> impl Strategy<Value = Vec<(String, Vec<String>)>> {
    prop::collection::vec((cidr_ish(), prop::collection::vec(ip_ish(), 0..5)), 0..6)
}

// ---- the properties ----

thread_local! {
    /// Inputs accepted as valid in the current property (each test runs on its own thread).
    static ACCEPTED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn accepted() {
    ACCEPTED.with(|a| a.set(a.get() + 1));
}

/// Inputs per property: `PROPTEST_CASES`, default 2,000.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2_000)
}

/// Runs `check` on `cases()` inputs from `strategy` and prints the count and the time.
fn run<S: Strategy>(name: &str, strategy: S, check: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let n = cases();
    let mut runner = TestRunner::new(Config { cases: n, failure_persistence: None, ..Config::default() });
    let t = Instant::now();
    let result = runner.run(&strategy, check);
    let secs = t.elapsed().as_secs_f64();
    let valid = ACCEPTED.with(|a| a.get());
    println!(
        "property {name}: {n} inputs ({valid} valid) in {secs:.2} s ({:.1} µs each)",
        secs * 1e6 / f64::from(n.max(1))
    );
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

/// Checks `parse`'s verdict on `v` against the reference.
fn check_value(v: &Value, parsed: Result<RouteSpec, SpecError>) -> Result<(), TestCaseError> {
    match (ref_value(v), parsed) {
        (Some(want), Ok(got)) => {
            accepted();
            prop_assert_eq!(canon(&got), want);
        }
        (None, Ok(got)) => {
            return Err(TestCaseError::fail(format!("accepted an invalid spec {v} as {}", got.to_json())))
        }
        (Some(_), Err(e)) => return Err(TestCaseError::fail(format!("rejected a valid spec {v}: {e}"))),
        (None, Err(e)) => match (v.as_object(), &e) {
            (None, SpecError::NotObject(_)) => {}
            (None, _) => return Err(TestCaseError::fail(format!("non-object {v} gave {e}"))),
            (Some(obj), _) => {
                let pairs: Vec<(&str, Vec<Option<&str>>)> = obj
                    .iter()
                    .map(|(k, h)| {
                        (k.as_str(), h.as_array().map_or_else(Vec::new, |a| a.iter().map(Value::as_str).collect()))
                    })
                    .collect();
                let raw_host = |key: &str, value: &str| {
                    obj.get(key).and_then(Value::as_array).is_some_and(|a| {
                        a.iter().any(|h| h.as_str().map_or_else(|| h.to_string(), str::to_string) == value)
                    })
                };
                let ok = match &e {
                    SpecError::NotList { key, .. } => {
                        obj.get(key).is_some_and(|h| !h.is_array()) && e.to_string().contains(&format!("'{key}'"))
                    }
                    _ => justified(&e, &pairs, raw_host),
                };
                prop_assert!(ok, "error does not name what is wrong in {}: {}", v, e);
            }
        },
    }
    Ok(())
}

#[test]
fn arbitrary_text_never_panics_and_matches_the_value_path() {
    run("parse_json(text)", json_text(), |text| {
        let parsed = spec::parse_json(&text);
        match serde_json::from_str::<Value>(&text) {
            Ok(v) => check_value(&v, parsed),
            Err(_) => {
                prop_assert!(matches!(parsed, Err(SpecError::Json(_))), "{text:?} gave {parsed:?}");
                Ok(())
            }
        }
    });
}

#[test]
fn json_values_are_accepted_exactly_when_valid() {
    run("from_value(value)", prop_oneof![spec_shaped(), json_value()], |v| check_value(&v, spec::from_value(&v)));
}

#[test]
fn raw_pairs_are_accepted_exactly_when_valid_and_canonical() {
    run("from_pairs(raw pairs)", raw_spec(), |raw| {
        let pairs: Vec<(&str, Vec<Option<&str>>)> =
            raw.iter().map(|(c, hs)| (c.as_str(), hs.iter().map(|h| Some(h.as_str())).collect())).collect();
        match (ref_pairs(pairs.clone()), spec::from_pairs(raw.iter().map(|(c, hs)| (c.as_str(), hs.clone())))) {
            (Some(want), Ok(got)) => {
                accepted();
                prop_assert_eq!(canon(&got), want);
                prop_assert_eq!(got.check(), Ok(()));
                prop_assert_eq!(spec::parse_json(&got.to_json()), Ok(got));
            }
            (None, Ok(got)) => return Err(TestCaseError::fail(format!("accepted {raw:?} as {}", got.to_json()))),
            (Some(_), Err(e)) => return Err(TestCaseError::fail(format!("rejected valid {raw:?}: {e}"))),
            (None, Err(e)) => {
                let raw_host =
                    |key: &str, value: &str| pairs.iter().any(|(k, hs)| *k == key && hs.contains(&Some(value)));
                prop_assert!(justified(&e, &pairs, raw_host), "error does not name what is wrong in {:?}: {}", raw, e);
            }
        }
        Ok(())
    });
}

#[test]
fn check_accepts_unique_hosts_in_any_order_and_refuses_repeats() {
    // Specs as a plugin could build them without the SDK's constructors: sorted, unique
    // CIDRs; each CIDR's hosts in any order (sorted ones included), repeats possible.
    let lists = prop::collection::vec(prop::collection::vec(0u32..6, 0..5), 0..5);
    run("RouteSpec::check(hosts in any order)", lists, |lists| {
        let routes: Vec<RouteEntry> = lists
            .iter()
            .enumerate()
            .map(|(i, hosts)| RouteEntry {
                cidr: Cidr::parse(&format!("10.{i}.0.0/16")).expect("a valid CIDR"),
                hosts: hosts.iter().map(|&h| Ipv4::from(Ipv4Addr::from(0x0a00_0000 + h))).collect::<Vec<_>>().into(),
            })
            .collect();
        let spec = RouteSpec { routes: routes.into() };
        let repeats = lists.iter().any(|hosts| hosts.iter().enumerate().any(|(i, h)| hosts[..i].contains(h)));
        match spec.check() {
            Ok(()) => {
                accepted();
                prop_assert!(!repeats, "accepted repeated hosts: {}", spec.to_json());
                // The order survives the JSON form.
                prop_assert_eq!(spec::parse_json(&spec.to_json()), Ok(spec.clone()));
            }
            Err(e) => {
                prop_assert!(repeats, "refused unique hosts {}: {}", spec.to_json(), e);
                prop_assert!(matches!(e, SpecError::NotCanonical(_)), "{}", e);
            }
        }
        Ok(())
    });
}
