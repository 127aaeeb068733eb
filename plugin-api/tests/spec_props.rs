//! Property tests of route spec parsing and validation (issue 7; both address families since
//! issue 14; repeated and non-canonical keys since issue 23).
//!
//! Generated JSON texts (repeated keys included), JSON values and raw [`RouteSpec`]s, biased
//! towards near-valid CIDRs and addresses, are checked against an independent reference
//! predicate written here from the documented rules: the spec functions never panic, accept
//! exactly the valid specs (in canonical form), refuse every spec with a repeated key, and
//! every error names an offending key or value.
//!
//! Each property runs `PROPTEST_CASES` inputs (default 2,000); `make fuzz` runs 1,000,000
//! each in release mode. Every property prints how many inputs it ran and how long it took.

use std::collections::BTreeMap;
use std::fmt;
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

/// A decimal prefix length of at most `max`, without leading zeros.
fn ref_len(l: &str, max: u8) -> Option<u8> {
    let ok =
        !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()) && (l == "0" || !l.starts_with('0'));
    let len: u8 = if ok { l.parse().ok()? } else { return None };
    (len <= max).then_some(len)
}

/// RFC 5952's text of an IPv6 address (section 4): lowercase hex groups without leading
/// zeros, the first longest run of two or more zero groups written `::`.
fn rfc5952(ip: u128) -> String {
    let groups: Vec<u16> = (0..8).map(|i| (ip >> (112 - 16 * i)) as u16).collect();
    let (mut best, mut run) = ((0usize, 0usize), (0usize, 0usize));
    for (i, g) in groups.iter().enumerate() {
        run = if *g == 0 { (if run.1 == 0 { i } else { run.0 }, run.1 + 1) } else { (0, 0) };
        if run.1 > best.1 {
            best = run;
        }
    }
    let hex = |gs: &[u16]| gs.iter().map(|g| format!("{g:x}")).collect::<Vec<_>>().join(":");
    if best.1 < 2 {
        return hex(&groups);
    }
    format!("{}::{}", hex(&groups[..best.0]), hex(&groups[best.0 + best.1..]))
}

/// `ip/len`: a strict dotted quad with a prefix length 0..=32, or an IPv6 address in RFC
/// 5952 form, not IPv4-mapped (`::ffff:0:0/96`), with 0..=128; no host bits set.
fn ref_cidr(s: &str) -> Option<Net> {
    let (a, l) = s.split_once('/')?;
    let (family, ip, bits) = if a.contains(':') {
        let ip = u128::from(a.parse::<Ipv6Addr>().ok()?);
        if rfc5952(ip) != a || ip >> 32 == 0xffff {
            return None;
        }
        (1, ip, 128u32)
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

/// The top-level entries of a JSON object text in the order written, repeated keys kept
/// (`None`: not an object). A `serde_json::Value` would keep only the last of repeated keys.
struct Entries(Option<Vec<(String, Value)>>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Entries, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Entries(Some(out)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Entries, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Entries(None))
            }
            fn visit_unit<E>(self) -> Result<Entries, E> {
                Ok(Entries(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Entries, E> {
                Ok(Entries(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Entries, E> {
                Ok(Entries(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Entries, E> {
                Ok(Entries(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Entries, E> {
                Ok(Entries(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Entries, E> {
                Ok(Entries(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// The reference verdict for an object's entries (repeated keys refuse it).
fn ref_entries(entries: &[(String, Value)]) -> Option<Canon> {
    let mut pairs = Vec::new();
    for (k, h) in entries {
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
        SpecError::RepeatedKey { key } => {
            pairs.iter().filter(|(k, _)| k == key).count() > 1 && text.contains(&format!("'{key}'"))
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
        1 => (0u16..4, 0u8..=64).prop_map(|(n, len)| format!("2001:0db8:{n}:0:0::/{len}")),
        1 => (any::<u32>(), 96u8..=128).prop_map(|(ip, len)| {
            let mask = if len == 96 { 0 } else { u32::MAX << (128 - u32::from(len)) };
            format!("::ffff:{}/{len}", Ipv4Addr::from(ip & mask))
        }),
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

/// The JSON text of an object with these entries in this order (repeats kept); with
/// `escape`, each `/` of a key is written `\/` (the same key to JSON).
fn object_text(entries: &[(String, Value)], escape: bool) -> String {
    let fields: Vec<String> = entries
        .iter()
        .map(|(k, v)| {
            let key = Value::String(k.clone()).to_string();
            let key = if escape { key.replace('/', "\\/") } else { key };
            format!("{key}: {v}")
        })
        .collect();
    format!("{{{}}}", fields.join(", "))
}

/// Spec-shaped object texts whose keys often repeat (sometimes escaped differently).
fn entries_text() -> impl Strategy<Value = String> {
    let host = prop_oneof![12 => ip_ish().prop_map(Value::String), 1 => leaf()];
    let hosts = prop_oneof![12 => prop::collection::vec(host, 0..4).prop_map(Value::Array), 1 => leaf()];
    let keys = prop::collection::vec(cidr_ish(), 1..4);
    let picks = prop::collection::vec((any::<prop::sample::Index>(), hosts, any::<bool>()), 0..7);
    (keys, picks).prop_map(|(keys, picks)| {
        let fields: Vec<String> = picks
            .into_iter()
            .map(|(i, hosts, escape)| object_text(&[(keys[i.index(keys.len())].clone(), hosts)], escape))
            .map(|one| one[1..one.len() - 1].to_string())
            .collect();
        format!("{{{}}}", fields.join(", "))
    })
}

/// Valid router lists.
fn valid_hosts() -> impl Strategy<Value = Value> {
    prop::collection::vec(any::<u32>().prop_map(|ip| Value::String(dotted(ip))), 0..4).prop_map(Value::Array)
}

/// The entries of a valid, non-empty spec: canonical keys of both families, each once.
fn valid_entries() -> impl Strategy<Value = Vec<(String, Value)>> {
    let key = prop_oneof![
        (any::<u32>(), 0u8..=32).prop_map(|(ip, len)| {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            net_text((0, u128::from(ip & mask), len))
        }),
        (any::<u128>(), 0u8..=128).prop_map(|(ip, len)| {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            net_text((1, ip & mask, len))
        }),
    ];
    prop::collection::btree_map(key, valid_hosts(), 1..6)
        .prop_map(|m| m.into_iter().filter(|(k, _)| ref_cidr(k).is_some()).collect::<Vec<_>>())
        .prop_filter("a non-empty spec", |e| !e.is_empty())
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

/// Checks `parse_json`'s verdict on `text` against the reference.
fn check_text(text: &str, parsed: Result<RouteSpec, SpecError>) -> Result<(), TestCaseError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let entries = match serde::Deserialize::deserialize(&mut de).and_then(|e: Entries| de.end().map(|()| e)) {
        Ok(Entries(entries)) => entries,
        Err(_) => {
            prop_assert!(matches!(parsed, Err(SpecError::Json(_))), "{text:?} gave {parsed:?}");
            return Ok(());
        }
    };
    match (entries.as_deref().and_then(ref_entries), parsed) {
        (Some(want), Ok(got)) => {
            accepted();
            prop_assert_eq!(canon(&got), want);
        }
        (None, Ok(got)) => {
            return Err(TestCaseError::fail(format!("accepted an invalid spec {text} as {}", got.to_json())))
        }
        (Some(_), Err(e)) => return Err(TestCaseError::fail(format!("rejected a valid spec {text}: {e}"))),
        (None, Err(e)) => match (entries, &e) {
            (None, SpecError::NotObject(_)) => {}
            (None, _) => return Err(TestCaseError::fail(format!("non-object {text} gave {e}"))),
            (Some(entries), _) => {
                prop_assert!(names_a_fault(&entries, &e), "error does not name what is wrong in {}: {}", text, e)
            }
        },
    }
    Ok(())
}

/// True when `e` names a key or value of the object `entries` that really is at fault.
fn names_a_fault(entries: &[(String, Value)], e: &SpecError) -> bool {
    let pairs: Vec<(&str, Vec<Option<&str>>)> = entries
        .iter()
        .map(|(k, h)| (k.as_str(), h.as_array().map_or_else(Vec::new, |a| a.iter().map(Value::as_str).collect())))
        .collect();
    let raw_host = |key: &str, value: &str| {
        entries
            .iter()
            .filter(|(k, _)| k == key)
            .filter_map(|(_, h)| h.as_array())
            .any(|a| a.iter().any(|h| h.as_str().map_or_else(|| h.to_string(), str::to_string) == value))
    };
    match e {
        SpecError::NotList { key, .. } => {
            entries.iter().any(|(k, h)| k == key && !h.is_array()) && e.to_string().contains(&format!("'{key}'"))
        }
        _ => justified(e, &pairs, raw_host),
    }
}

#[test]
fn arbitrary_text_never_panics_and_matches_the_reference() {
    run("parse_json(text)", json_text(), |text| check_text(&text, spec::parse_json(&text)));
}

#[test]
fn json_values_are_accepted_exactly_when_valid() {
    run("parse_json(value's text)", prop_oneof![spec_shaped(), json_value()], |v| {
        let text = v.to_string();
        check_text(&text, spec::parse_json(&text))
    });
}

#[test]
fn texts_with_repeated_keys_are_accepted_exactly_when_valid() {
    run("parse_json(entries, keys repeated)", entries_text(), |text| check_text(&text, spec::parse_json(&text)));
}

#[test]
fn a_repeated_key_always_refuses_a_valid_spec_naming_the_key() {
    let strategy =
        (valid_entries(), any::<prop::sample::Index>(), any::<prop::sample::Index>(), valid_hosts(), any::<bool>());
    run("parse_json(valid spec + a repeated key)", strategy, |(entries, which, at, hosts, escape)| {
        prop_assert!(spec::parse_json(&object_text(&entries, escape)).is_ok(), "the base spec is valid");
        let key = entries[which.index(entries.len())].0.clone();
        let mut with_repeat = entries.clone();
        with_repeat.insert(at.index(entries.len() + 1), (key.clone(), hosts));
        let text = object_text(&with_repeat, escape);
        prop_assert_eq!(spec::parse_json(&text), Err(SpecError::RepeatedKey { key }), "{}", text);
        Ok(())
    });
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
