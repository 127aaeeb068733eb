//! IPv6 routes and `--prefix-lists` groups are created, failed over, edited and migrated, without a gap under faults.
//!
//! End to end on moto: the real binary and plugins, the SDK. `--prefix-lists` routes groups of
//! CIDRs through one prefix list per group.
//!
//! Routers: A = 127.0.1.10 (s1), B = 127.0.2.10 (s2), C = 127.0.1.11 (s1); managed tables
//! rt1 and rt2 (s1, s2).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use vpcrouter_tests::faultproxy::{Fault, FaultProxy, Rule};
use vpcrouter_tests::world::PrefixListInfo;
use vpcrouter_tests::{file_driven, free_port, http_client, wait_for, Env};

const T: Duration = Duration::from_secs(30);
const A: &str = "127.0.1.10";
const B: &str = "127.0.2.10";
const C: &str = "127.0.1.11";

fn spec_json(entries: &[(&str, &[&str])]) -> String {
    let items: Vec<String> = entries
        .iter()
        .map(|(cidr, hosts)| {
            let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
            format!("\"{cidr}\": [{}]", hosts.join(", "))
        })
        .collect();
    format!("{{{}}}", items.join(", "))
}

fn status(port: u16) -> anyhow::Result<serde_json::Value> {
    http_client::get(port, "/status", None)?.json()
}

#[test]
fn ipv6_and_ipv4_routes_are_created_failed_over_cleaned_up_and_ignored_by_family() -> anyhow::Result<()> {
    let env = Env::new()?;
    let w = &env.world;
    let (rt1, rt2) = (w.tables[0].as_str(), w.tables[1].as_str());
    // Stale instance routes of both families, and an IPv6 default route to an instance
    // that `--ignore_routes ::/0` protects (it protects nothing of IPv4).
    w.add_eni_route(rt1, "2001:db8:99::/48", C)?;
    w.add_eni_route(rt1, "::/0", C)?;
    w.add_eni_route(rt2, "10.99.0.0/16", C)?;
    w.add_eni_route(rt2, "0.0.0.0/1", C)?;
    let spec = env.write("spec.json", &spec_json(&[("10.55.0.0/16", &[A, B]), ("2001:db8:55::/48", &[A, B])]));
    let health = env.write("health.json", r#"{"failed": []}"#);
    let port = free_port();
    let port_text = port.to_string();
    let mut args = file_driven(&spec, &health).to_vec();
    args.extend(["--ignore_routes", "::/0", "-p", &port_text]);
    let _d = env.daemon().args(&args).start()?;
    let v6 = env.wait_routed(&[rt1, rt2], "2001:db8:55::/48", T)?;
    let v4 = env.wait_routed(&[rt1, rt2], "10.55.0.0/16", T)?;
    assert!([A, B].contains(&v6.as_str()) && [A, B].contains(&v4.as_str()), "{v4} {v6}");
    wait_for(T, "stale routes of both families deleted", || {
        let (r1, r2) = (w.routes(rt1).ok()?, w.routes(rt2).ok()?);
        (!r1.contains_key("2001:db8:99::/48") && !r2.contains_key("10.99.0.0/16") && !r2.contains_key("0.0.0.0/1"))
            .then_some(())
    })?;
    assert_eq!(w.routes(rt1)?.get("::/0").map(String::as_str), Some(C), "::/0 is ignored");
    assert_eq!(w.routes(rt1)?.get("0.0.0.0/0"), Some(&w.igw), "the gateway route is not vpcrouter's");

    // The router of the IPv6 route fails: it moves in both tables, alone in its family.
    let other = if v6 == A { B } else { A };
    env.write("health.json", &format!(r#"{{"failed": ["{v6}"]}}"#));
    wait_for(T, "the IPv6 route to move", || {
        (w.targets(&[rt1, rt2], "2001:db8:55::/48").ok()? == vec![Some(other.to_string()); 2]).then_some(())
    })?;
    wait_for(T, "the IPv4 route off the failed router", || {
        let t = w.targets(&[rt1, rt2], "10.55.0.0/16").ok()?;
        (t == vec![Some(other.to_string()); 2]).then_some(())
    })?;
    let routes = http_client::get(port, "/route_info", None)?.json()?;
    assert_eq!(routes["routes"]["2001:db8:55::/48"][0], other, "{routes}");
    assert_eq!(routes["route_spec"]["2001:db8:55::/48"], serde_json::json!([A, B]), "{routes}");
    let vpc = http_client::get(port, "/vpc", None)?.json()?;
    assert!(vpc["route_tables"][rt1]["2001:db8:55::/48"].as_str().is_some_and(|l| l.contains(other)), "{vpc}");
    Ok(())
}

/// Where each CIDR is carried in a table: by a route of its own (to a router), or by a
/// route to a prefix list holding it.
fn carriers(routes: &BTreeMap<String, String>, lists: &[PrefixListInfo]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (dest, target) in routes {
        if let Some(list) = lists.iter().find(|l| l.id == *dest) {
            for e in &list.entries {
                out.entry(e.clone()).or_insert_with(|| format!("{target} via {}", list.id));
            }
        } else if target.starts_with("127.") {
            out.insert(dest.clone(), target.clone());
        }
    }
    out
}

/// Checks, on every poll, that each of `cidrs` is carried in rt1 and rt2, until `done`.
fn no_gap_until(
    env: &Env,
    cidrs: &[&str],
    what: &str,
    mut done: impl FnMut(&[PrefixListInfo]) -> bool,
) -> anyhow::Result<usize> {
    let w = &env.world;
    let end = Instant::now() + T;
    let mut polls = 0;
    loop {
        // Lists are read before and after the route tables (a poll is not one snapshot of
        // EC2): a list created or deleted meanwhile, and an entry added or removed
        // meanwhile, count as they were when the tables were read.
        let before = w.prefix_lists()?;
        let tables: Vec<_> = w.tables[..2].iter().map(|t| Ok((t, w.routes(t)?))).collect::<anyhow::Result<_>>()?;
        let lists = w.prefix_lists()?;
        let mut known: Vec<PrefixListInfo> = lists.clone();
        for b in before {
            match known.iter_mut().find(|l| l.id == b.id) {
                Some(l) => {
                    let gone: Vec<String> = b.entries.into_iter().filter(|e| !l.entries.contains(e)).collect();
                    l.entries.extend(gone);
                }
                None => known.push(b),
            }
        }
        for (rtb, routes) in &tables {
            let carried = carriers(routes, &known);
            for cidr in cidrs {
                anyhow::ensure!(
                    carried.contains_key(*cidr),
                    "{what}: {cidr} has no route in {rtb} (poll {polls})\n{}\n{lists:#?}",
                    w.dump()
                );
            }
        }
        polls += 1;
        if done(&lists) {
            return Ok(polls);
        }
        anyhow::ensure!(Instant::now() < end, "{what}: timed out\n{}\n{lists:#?}", w.dump());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The owned lists by group key.
fn owned(lists: &[PrefixListInfo]) -> BTreeMap<String, PrefixListInfo> {
    lists
        .iter()
        .filter(|l| l.tags.get("vpcrouter:cluster").map(String::as_str) == Some("pl-test"))
        .map(|l| (l.tags.get("vpcrouter:group").cloned().unwrap_or_default(), l.clone()))
        .collect()
}

fn routed_lists(env: &Env) -> anyhow::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for rtb in &env.world.tables[..2] {
        out.extend(env.world.routes(rtb)?.into_keys().filter(|d| d.starts_with("pl-")));
    }
    Ok(out)
}

const G1: &str = "ipv4-127.0.1.10-127.0.2.10";
const G1V6: &str = "ipv6-127.0.1.10-127.0.2.10";
const G2: &str = "ipv4-127.0.1.11";

#[test]
fn prefix_lists_carry_groups_fail_over_per_table_follow_edits_resize_and_migrate_both_ways() -> anyhow::Result<()> {
    let env = Env::new()?;
    let w = &env.world;
    let (rt1, rt2) = (w.tables[0].clone(), w.tables[1].clone());
    // Two groups of two (one per family) get lists; 10.3 alone on C is routed on its own.
    let first = [
        ("10.1.0.0/16", &[A, B][..]),
        ("10.2.0.0/16", &[A, B]),
        ("2001:db8:1::/48", &[A, B]),
        ("2001:db8:2::/48", &[A, B]),
        ("10.3.0.0/16", &[C]),
    ];
    let cidrs: Vec<&str> = first.iter().map(|(c, _)| *c).collect();
    let spec = env.write("spec.json", &spec_json(&first));
    let health = env.write("health.json", r#"{"failed": []}"#);
    let port = free_port();
    let port_text = port.to_string();
    let base: Vec<&str> = [&file_driven(&spec, &health)[..], &["-p", &port_text, "--cluster-name", "pl-test"]].concat();

    // Per-CIDR routes first, and a list and route of someone else's.
    let mut d = env.daemon().args(&base).start()?;
    for c in &cidrs {
        env.wait_routed(&[&rt1, &rt2], c, T)?;
    }
    d.stop(T)?;
    let foreign = w.create_foreign_list("someone-elses", &["10.1.0.0/16", "10.8.0.0/16"])?;
    w.add_eni_route(&rt1, &foreign, C)?;

    // A dry run logs the first stage and changes nothing.
    let dry: Vec<&str> = [&base[..], &["--prefix-lists", "--dry-run"]].concat();
    let mut d = env.daemon().args(&dry).start()?;
    d.wait_log("dry run: would change prefix list: created for 2 CIDR(s)", T)?;
    d.stop(T)?;
    assert!(owned(&w.prefix_lists()?).is_empty(), "a dry run makes no list");

    // Turned on: lists, then their routes, then the per-CIDR routes go; never a gap.
    let on: Vec<&str> = [&base[..], &["--prefix-lists", "--route-table-quota", "30"]].concat();
    let d = env.daemon().args(&on).start()?;
    let converged = |lists: &[PrefixListInfo]| {
        let own = owned(lists);
        own.len() == 2
            && own.get(G1).is_some_and(|l| l.entries == ["10.1.0.0/16", "10.2.0.0/16"])
            && own.get(G1V6).is_some_and(|l| l.entries == ["2001:db8:1::/48", "2001:db8:2::/48"])
            && [&rt1, &rt2].iter().all(|t| {
                w.routes(t).is_ok_and(|r| {
                    own.values().all(|l| r.contains_key(&l.id))
                        && cidrs.iter().all(|c| (*c == "10.3.0.0/16") == r.contains_key(*c))
                })
            })
    };
    no_gap_until(&env, &cidrs, "migration to prefix lists", converged)?;
    let own = owned(&w.prefix_lists()?);
    let g1 = &own[G1];
    assert_eq!(g1.name, format!("vpcrouter-pl-test-{G1}"));
    assert_eq!(g1.max_entries, 10, "2 CIDRs, room for 8 more");
    assert_eq!(w.routes(&rt1)?.get(&foreign).map(String::as_str), Some(C), "a foreign list route is untouched");
    let foreign_list = w.prefix_lists()?.into_iter().find(|l| l.id == foreign).expect("foreign list");
    assert_eq!(foreign_list.entries, ["10.1.0.0/16", "10.8.0.0/16"]);
    let st = status(port)?;
    assert_eq!(st["prefix_lists"].as_array().map(Vec::len), Some(2), "{st}");
    // Both local routes, the gateway, the foreign list (max 10), the two lists (10 + 10),
    // 10.3's own route. (rt2, without the foreign list, weighs 24: under the quota.)
    assert_eq!(st["route_table_weights"][&rt1], 34, "{st}");
    d.wait_log(&format!("route table {rt1} would weigh 34 routes"), T)?;
    assert!(d.log().contains("over its quota of 30 (--route-table-quota)"), "{}", d.log());
    assert!(!d.log().contains(&format!("route table {rt2} would weigh")), "{}", d.log());
    // Route lines of list routes name the list and what it carries.
    let added =
        format!("route changed: added (prefix list vpcrouter-pl-test-{G1} of 2 CIDR(s): 10.1.0.0/16,10.2.0.0/16)");
    assert!(d.log().contains(&added), "{}", d.log());
    assert!(d.log().contains("reason=carried by its group's prefix list"), "{}", d.log());
    let route_info = http_client::get(port, "/route_info", None)?.json()?;
    assert!(route_info["routes"]["10.2.0.0/16"][0].is_string(), "members are shown: {route_info}");

    // Failover: one ReplaceRoute per table per group on the failed router.
    let on_a: Vec<String> = [G1, G1V6]
        .iter()
        .filter(|g| w.routes(&rt1).ok().and_then(|r| r.get(&own[**g].id).cloned()).as_deref() == Some(A))
        .map(|g| own[*g].id.clone())
        .collect();
    let replaced_before = st["counters"]["routes_replaced"].as_u64().unwrap_or_default();
    env.write("health.json", &format!(r#"{{"failed": ["{A}"]}}"#));
    wait_for(T, "every list route off A", || {
        [&rt1, &rt2].iter().all(|t| w.routes(t).is_ok_and(|r| r.values().all(|v| v != A))).then_some(())
    })?;
    wait_for(T, "the failover counted", || {
        let st = status(port).ok()?;
        (st["counters"]["routes_replaced"].as_u64()? >= replaced_before + 2 * on_a.len() as u64).then_some(st)
    })?;
    std::thread::sleep(Duration::from_millis(300));
    let replaced = status(port)?["counters"]["routes_replaced"].as_u64().unwrap_or_default() - replaced_before;
    assert_eq!(replaced, 2 * on_a.len() as u64, "one write per table per group moved ({on_a:?})");
    env.write("health.json", r#"{"failed": []}"#);

    // Spec edits: 10.2 moves to C's group, which now has two CIDRs and gets a list of its
    // own; 10.4 joins the first group.
    let second = [
        ("10.1.0.0/16", &[A, B][..]),
        ("10.4.0.0/16", &[A, B]),
        ("2001:db8:1::/48", &[A, B]),
        ("2001:db8:2::/48", &[A, B]),
        ("10.2.0.0/16", &[C]),
        ("10.3.0.0/16", &[C]),
    ];
    env.write("spec.json", &spec_json(&second));
    let kept = ["10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16", "2001:db8:1::/48", "2001:db8:2::/48"];
    no_gap_until(&env, &kept, "moving 10.2 between groups", |lists| {
        let own = owned(lists);
        own.get(G1).is_some_and(|l| l.entries == ["10.1.0.0/16", "10.4.0.0/16"])
            && own.get(G2).is_some_and(|l| l.entries == ["10.2.0.0/16", "10.3.0.0/16"])
            && routed_lists(&env).is_ok_and(|r| own.get(G2).is_some_and(|l| r.contains(&l.id)))
            && [&rt1, &rt2].iter().all(|t| w.routes(t).is_ok_and(|r| !r.contains_key("10.3.0.0/16")))
    })?;

    // The first group outgrows its list (10 entries): a new one, routes switched, old deleted.
    let many: Vec<String> = (10..22).map(|n| format!("10.{n}.0.0/16")).collect();
    let mut third: Vec<(&str, &[&str])> = second.to_vec();
    third.extend(many.iter().map(|c| (c.as_str(), &[A, B][..])));
    env.write("spec.json", &spec_json(&third));
    let old_id = own[G1].id.clone();
    no_gap_until(&env, &kept, "resizing the first group's list", |lists| {
        let own = owned(lists);
        own.get(G1).is_some_and(|l| l.id != old_id && l.entries.len() == 14 && l.max_entries == 22)
            && !lists.iter().any(|l| l.id == old_id)
            && routed_lists(&env).is_ok_and(|r| !r.contains(&old_id))
    })?;
    drop(d);

    // Turned off (same --cluster-name): per-CIDR routes first, then the list routes and
    // the lists go; the foreign list and its route stay.
    let all: Vec<&str> = third.iter().map(|(c, _)| *c).collect();
    let _d = env.daemon().args(&base).start()?;
    no_gap_until(&env, &all, "migration back to per-CIDR routes", |lists| {
        owned(lists).is_empty()
            && [&rt1, &rt2].iter().all(|t| w.routes(t).is_ok_and(|r| all.iter().all(|c| r.contains_key(*c))))
    })?;
    assert_eq!(routed_lists(&env)?, BTreeSet::from([foreign.clone()]));
    assert!(w.prefix_lists()?.iter().any(|l| l.id == foreign));
    Ok(())
}

#[test]
fn a_migration_under_failing_ec2_calls_converges_without_a_gap() -> anyhow::Result<()> {
    let env = Env::new()?;
    let w = &env.world;
    let (rt1, rt2) = (w.tables[0].clone(), w.tables[1].clone());
    let entries: Vec<String> = (1..=6).map(|n| format!("10.{n}.0.0/16")).collect();
    let spec: Vec<(&str, &[&str])> = entries.iter().map(|c| (c.as_str(), &[A, B][..])).collect();
    let cidrs: Vec<&str> = entries.iter().map(String::as_str).collect();
    let spec = env.write("spec.json", &spec_json(&spec));
    let health = env.write("health.json", r#"{"failed": []}"#);
    let proxy = FaultProxy::start(&env.moto.endpoint)?;
    let common =
        || env.daemon().endpoint(&proxy.endpoint).args(file_driven(&spec, &health)).args(["--cluster-name", "pl-test"]);
    let mut d = common().start()?;
    for c in &cidrs {
        env.wait_routed(&[&rt1, &rt2], c, T)?;
    }
    d.stop(T)?;
    // Half of the list changes and route writes answer 500, or lose their answer (EC2 did
    // the change). moto ignores CreateManagedPrefixList's client token, so a lost answer
    // there leaves a second list for the group: it serves no route and is deleted.
    let writes =
        ["CreateManagedPrefixList", "ModifyManagedPrefixList", "DeleteManagedPrefixList", "CreateRoute", "DeleteRoute"];
    proxy.set_policy(vec![
        Rule::all(Fault::Status(500)).on(&writes).ratio(0.3),
        Rule::all(Fault::LoseAnswer).on(&writes).ratio(0.2),
    ]);
    let d = common().args(["--prefix-lists", "--route_recheck_interval", "5"]).start()?;
    no_gap_until(&env, &cidrs, "migration under faults", |lists| {
        let own = owned(lists);
        own.len() == 1
            && own.get(G1).is_some_and(|l| l.entries.len() == 6)
            && [&rt1, &rt2].iter().all(|t| {
                w.routes(t).is_ok_and(|r| r.contains_key(&own[G1].id) && cidrs.iter().all(|c| !r.contains_key(*c)))
            })
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))?;
    proxy.clear();
    Ok(())
}
