use serde_json::json;

use super::*;

/// A daemon's `/status`: two tables, A failed and drained, one CIDR split across tables.
fn doc() -> Value {
    json!({
        "version": "0.1.0",
        "vpc_id": "vpc-0abc",
        "region": "us-east-1",
        "current_time": "2026-12-07T03:10:00.000Z",
        "cluster": null,
        "last_reconcile": {"time": "2026-12-07T03:09:59.500Z", "duration_seconds": 0.125, "result": "ok"},
        "route_spec": {"10.55.0.0/16": ["10.1.0.5", "10.1.1.7"], "10.66.0.0/16": ["10.1.0.5", "10.1.1.7"], "10.77.0.0/16": ["10.1.2.9"]},
        "failed_hosts": ["10.1.0.5"],
        "questionable_hosts": [],
        "drains": [{"ip": "10.1.0.5", "since": "2026-12-07T02:00:00Z", "reason": "kernel\npatch"}],
        "route_table_selection": {"rule": "serving", "given": null, "tables": [{"id": "rtb-a", "zone": "us-east-1a", "main": true}, {"id": "rtb-b", "zone": "us-east-1b", "gateway": "igw-1"}]},
        "route_tables": {
            "rtb-a": [{"cidr": "10.55.0.0/16", "router": "10.1.1.7"}, {"cidr": "10.66.0.0/16", "router": "10.1.1.7"}],
            "rtb-b": [{"cidr": "10.55.0.0/16", "router": "10.1.1.7"}, {"cidr": "10.66.0.0/16", "router": "10.1.0.5"}]
        },
        "last_failover": {"time": "2026-12-07T03:01:05.120Z", "routers": ["10.1.0.5"], "routes_moved": 3, "seconds": 0.31, "writes": 3},
        "notices": ["router 10.1.2.9 is not in the VPC"]
    })
}

fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
}

#[test]
fn the_managed_tables_are_listed_with_zone_routes_and_kind() {
    let text = status_text(&doc(), Paint::Plain);
    assert!(text.contains("ROUTES (3 CIDRs, 2 route tables)"), "{text}");
    assert!(text.contains("ROUTE TABLES (2, managed: the tables of the routers' subnets)"), "{text}");
    let a = line_with(&text, "rtb-a  ");
    assert!(a.contains("us-east-1a") && a.contains("main table") && a.split_whitespace().any(|w| w == "2"), "{a}");
    let b = line_with(&text, "rtb-b  ");
    assert!(b.contains("gateway route table of igw-1"), "{b}");
}

#[test]
fn each_cidr_shows_its_router_and_how_many_tables_point_there() {
    let text = status_text(&doc(), Paint::Plain);
    let l = line_with(&text, "10.55.0.0/16");
    assert!(l.contains("10.1.1.7") && l.contains("2 of 2"), "{l}");
    assert!(!l.contains("rtb-"), "tables are named only where they differ: {l}");
}

#[test]
fn tables_that_differ_are_named_under_their_cidr() {
    let text = status_text(&doc(), Paint::Plain);
    let lines: Vec<&str> = text.lines().collect();
    let i = lines.iter().position(|l| l.starts_with("10.66.0.0/16")).expect("the CIDR's line");
    assert!(lines[i].contains("1 of 2"), "{}", lines[i]);
    let next = lines[i + 1];
    assert!(next.starts_with(' '), "the second group belongs to the same CIDR: {next}");
    assert!(next.contains("10.1.0.5 (failed, drained)") && next.contains("1 of 2"), "{next}");
    assert!(next.contains("rtb-") && (next.contains("rtb-a") != next.contains("rtb-b")), "one table named: {next}");
}

#[test]
fn a_cidr_without_a_route_says_so() {
    let text = status_text(&doc(), Paint::Plain);
    let l = line_with(&text, "10.77.0.0/16");
    assert!(l.contains("(no route)") && l.contains("2 of 2"), "{l}");
}

#[test]
fn routers_show_health_drain_and_routes_carried() {
    let text = status_text(&doc(), Paint::Plain);
    let a = line_with(&text, "10.1.0.5  ");
    assert!(a.contains("failed") && a.contains("since 2026-12-07T02:00:00Z: kernel patch"), "{a}");
    assert!(a.split_whitespace().any(|w| w == "1"), "carries one route: {a}");
    let b = text.lines().find(|l| l.starts_with("10.1.1.7")).expect("router B's line");
    assert!(b.contains("healthy") && b.split_whitespace().any(|w| w == "3") && b.ends_with('-'), "{b}");
    let c = text.lines().find(|l| l.starts_with("10.1.2.9")).expect("a spec router without routes");
    assert!(c.contains("healthy") && c.split_whitespace().any(|w| w == "0"), "{c}");
}

#[test]
fn the_last_failover_and_the_notices_are_shown() {
    let text = status_text(&doc(), Paint::Plain);
    let l = line_with(&text, "2026-12-07T03:01:05.120Z");
    assert!(l.contains("router 10.1.0.5") && l.contains("3 routes moved in 0.31 s"), "{l}");
    assert!(text.contains("- router 10.1.2.9 is not in the VPC"), "{text}");
    assert!(text.contains("role: single instance"), "{text}");
    assert!(text.contains("last reconcile: 2026-12-07T03:09:59.500Z, 0.12 s: ok"), "{text}");
}

#[test]
fn cluster_roles_name_the_leader() {
    let mut d = doc();
    d["cluster"] =
        json!({"name": "prod", "instance_id": "b", "role": "follower", "leader": "a", "members": ["a", "b"]});
    let text = status_text(&d, Paint::Plain);
    assert!(text.contains("role: follower in cluster prod (this instance b); leader: a; 2 members"), "{text}");
    d["cluster"]["role"] = json!("leader");
    d["cluster"]["instance_id"] = json!("a");
    assert!(status_text(&d, Paint::Plain).contains("role: leader of cluster prod (this instance a; 2 members)"));
}

#[test]
fn plain_text_has_no_escape_codes_and_fits_100_columns() {
    let mut d = doc();
    let id = |i: usize| format!("rtb-0123456789abcdef{i:02}");
    let many: Vec<Value> = (0..40).map(|i| json!({"id": id(i)})).collect();
    d["route_table_selection"]["tables"] = Value::Array(many);
    for i in 0..40 {
        let router = if i < 25 { "10.1.1.7" } else { "10.1.0.5" };
        d["route_tables"][id(i)] = json!([{"cidr": "10.55.0.0/16", "router": router}]);
    }
    d["drains"][0]["reason"] = json!("x".repeat(300));
    let long_notice = format!("CIDR 0.0.0.0/0 stays on drained router 10.1.2.9 {}end", "and more words ".repeat(12));
    d["notices"] = json!([long_notice]);
    let text = status_text(&d, Paint::Plain);
    assert!(!text.contains('\x1b'), "{text}");
    for l in text.lines() {
        assert!(l.chars().count() <= WIDTH, "{} columns: {l}", l.chars().count());
    }
    assert!(text.contains("more"), "a long table list is cut with +N more: {text}");
    let notice: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("- CIDR")).take(3).collect();
    assert!(notice.len() == 3 && notice[1].starts_with("  ") && notice[2].ends_with("end"), "{notice:?}");
}

#[test]
fn colour_marks_what_the_words_say_and_keeps_the_columns() {
    let (plain, ansi) = (status_text(&doc(), Paint::Plain), status_text(&doc(), Paint::Ansi));
    assert!(ansi.contains("\x1b[31mfailed\x1b[0m"), "{ansi}");
    let stripped = ansi.replace("\x1b[31m", "").replace("\x1b[32m", "").replace("\x1b[33m", "");
    let stripped = stripped.replace("\x1b[1m", "").replace("\x1b[0m", "");
    assert_eq!(stripped, plain);
}

#[test]
fn an_empty_daemon_is_described_not_blank() {
    let text = status_text(&json!({}), Paint::Plain);
    assert!(text.contains("no CIDR in the route spec"), "{text}");
    assert!(text.contains("last reconcile: not yet"), "{text}");
    assert!(text.contains("none since the daemon started"), "{text}");
}
