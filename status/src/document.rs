//! What the status server shows, and how: pure functions from a [`Snapshot`] of the
//! daemon's state to the JSON documents of vpc-router 1.8 (`/`, `/ips`, `/plugins`,
//! `/route_info`, `/vpc`, with their HTML view) and the `/status` document (`/metrics` is
//! encoded from the same snapshot by [`crate::metrics`]). The server (`http::server`)
//! only gathers and serves.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::SystemTime;

use serde_json::{json, Map, Value};
use vpcrouter_plugin_api::{HealthStats, PluginStats, PluginStatus};

use vpcrouter_cluster::ClusterStatus;
use vpcrouter_drains::Drain;
pub use vpcrouter_engine::budget::Ec2View;
use vpcrouter_engine::status::{FailbackEntry, FailoverSummary, Status, TableRoute};
use vpcrouter_notify::NotifierStatus;
use vpcrouter_planner::model::{Family, Notice, TableSelection};

/// Fixed facts about this run, set at start.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    /// e.g. `vpcrouter (0.1.0): mode: http (0.1.0), health-check: file (0.1.0)`.
    pub version_line: String,
    /// When the daemon started.
    pub start_time: SystemTime,
    /// Main options by vpc-router's names (`region_name`, `vpc_id`, `addr`, ...).
    pub params: Map<String, Value>,
    /// `--ignore_routes`, parsed.
    pub ignore_routes: Vec<String>,
}

/// One loaded plugin as the server shows it.
#[derive(Clone, Debug)]
pub struct PluginView {
    /// Name, e.g. `http`.
    pub name: String,
    /// `watcher` or `health`.
    pub kind: &'static str,
    /// The plugin's version.
    pub version: String,
    /// Its options, by long name.
    pub arguments: BTreeMap<String, String>,
    /// Its status as JSON (see [`plugin_info`]; an error object when it did not answer).
    pub info: Value,
    /// A health plugin's typed counters.
    pub health: Option<HealthStats>,
}

/// Everything one response is rendered from, taken at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The engine's state.
    pub status: Status,
    /// Watcher first, then the health plugin.
    pub plugins: Vec<PluginView>,
    /// The EC2 adapter's counters and limits.
    pub ec2: Ec2View,
    /// Cluster mode's state, if on.
    pub cluster: Option<ClusterStatus>,
    /// The drains in force.
    pub drains: Vec<Drain>,
    /// Each notifier's counters (`--notify`), for `/status` and `/metrics`.
    pub notifiers: Vec<NotifierStatus>,
    /// When the snapshot was taken.
    pub now: SystemTime,
}

/// How a vpc-router state document is rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The HTML view for browsers.
    Html,
    /// Compact JSON.
    Json,
    /// Indented JSON as `text/plain` (what curl gets by default).
    Text,
}

/// vpc-router's negotiation on `Accept` (substring tests, in this order); `None` = 406.
pub fn negotiate(accept: Option<&str>) -> Option<Format> {
    let accept = accept.unwrap_or("text/plain");
    if accept.contains("text/html") {
        Some(Format::Html)
    } else if accept.contains("application/json") {
        Some(Format::Json)
    } else if accept.contains("text/") || accept.contains("*/*") {
        Some(Format::Text)
    } else {
        None
    }
}

/// The paths of vpc-router's state documents.
pub const STATE_PATHS: [&str; 5] = ["/", "/ips", "/plugins", "/route_info", "/vpc"];

/// The vpc-router document served at `path` (one of [`STATE_PATHS`]).
pub fn state_document(path: &str, info: &ServerInfo, snap: &Snapshot) -> Option<Value> {
    let st = &snap.status;
    Some(match path {
        "/" => json!({
            "SERVER": {
                "version": info.version_line,
                "start_time": iso_time(info.start_time),
                "current_time": iso_time(snap.now),
            },
            "params": info.params,
            "plugins": {"_href": "/plugins"},
            "ips": {"_href": "/ips"},
            "route_info": {"_href": "/route_info"},
            "vpc": {"_href": "/vpc"},
        }),
        "/ips" => json!({
            "failed_ips": ips(&st.failed),
            "questionable_ips": ips(&st.questionable),
            "working_set": st.working_set,
            "drained_ips": snap.drains.iter().map(|d| d.ip.to_string()).collect::<Vec<_>>(),
        }),
        "/plugins" => Value::Object(snap.plugins.iter().map(|p| (p.name.clone(), p.info.clone())).collect()),
        "/route_info" => {
            let mut routes = Map::new();
            for route in st.tables.values().flat_map(|t| t.iter()) {
                if let (cidr, TableRoute { router: Some(ip), instance_id, eni_id, .. }) = route {
                    let (instance_id, eni_id) = (instance_id.as_deref(), eni_id.as_deref());
                    routes.entry(cidr.to_string()).or_insert_with(|| json!([ip.to_string(), instance_id, eni_id]));
                }
            }
            let tables: Vec<&str> = st.managed.iter().map(|t| t.id.as_str()).collect();
            let selection = json!({"rule": st.table_selection.rule(), "given": given(st), "tables": tables});
            json!({"route_spec": spec_json(st), "routes": routes, "ignore_routes": info.ignore_routes, "route_tables": selection})
        }
        "/vpc" => match st.last_reconcile {
            None => json!({}),
            Some((time, _)) => {
                let tables: Map<String, Value> = st
                    .tables
                    .iter()
                    .map(|(rtb, routes)| {
                        let routes =
                            routes.iter().map(|(cidr, r)| (cidr.to_string(), Value::from(vpc_line(r)))).collect();
                        (rtb.clone(), Value::Object(routes))
                    })
                    .collect();
                json!({"time": iso_time(time), "route_tables": tables})
            }
        },
        _ => return None,
    })
}

/// vpc-router's one-line route state: `inst: i-1, eni: eni-1, r_ip: <ip padded to 15>, ...`.
fn vpc_line(r: &TableRoute) -> String {
    let none = || "(none)".to_string();
    let ip = |ip: Option<Ipv4Addr>| ip.map_or_else(none, |i| i.to_string());
    format!(
        "inst: {}, eni: {}, r_ip: {:<15}, o_r_ip: {:<15}, msg: {}",
        r.instance_id.as_deref().map_or_else(none, str::to_owned),
        r.eni_id.as_deref().map_or_else(none, str::to_owned),
        ip(r.router),
        ip(r.old_router),
        r.message
    )
}

fn ips(set: &std::collections::BTreeSet<Ipv4Addr>) -> Vec<String> {
    set.iter().map(Ipv4Addr::to_string).collect()
}

/// One drain as `GET /drain` and the subcommands show it: the router, since when, why,
/// where it is kept (`local` or `cluster`), and the CIDRs of `spec` it is a candidate of.
pub fn drain_json(d: &Drain, scope: &str, spec: &vpcrouter_plugin_api::RouteSpec) -> Value {
    let cidrs: Vec<String> =
        spec.routes.iter().filter(|r| r.hosts.iter().any(|h| h.addr() == d.ip)).map(|r| r.cidr.to_string()).collect();
    json!({"ip": d.ip.to_string(), "since": d.since, "reason": d.reason, "scope": scope, "cidrs": cidrs})
}

fn spec_json(st: &Status) -> Value {
    serde_json::from_str(&st.spec.to_json()).unwrap_or_else(|_| json!({}))
}

/// JSON indented by four spaces, as vpc-router's `json.dumps(indent=4)`.
pub fn indented(value: &Value) -> String {
    let mut out = Vec::new();
    let mut ser =
        serde_json::Serializer::with_formatter(&mut out, serde_json::ser::PrettyFormatter::with_indent(b"    "));
    if serde::Serialize::serialize(value, &mut ser).is_err() {
        return value.to_string();
    }
    String::from_utf8(out).unwrap_or_else(|_| value.to_string())
}

/// `(content type, body)` of a state document in `format`.
pub fn render(value: &Value, format: Format) -> (&'static str, String) {
    match format {
        Format::Json => ("application/json", value.to_string()),
        Format::Text => ("text/plain; charset=utf-8", indented(value)),
        Format::Html => ("text/html; charset=utf-8", html(value)),
    }
}

/// `s` safe in HTML text and in attribute values, quoted or not (the HTML view's links and
/// the live page, [`crate::page`]).
pub(crate) fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// vpc-router's HTML view: the indented JSON with `_href` values as links.
pub fn html(value: &Value) -> String {
    let mut body = String::new();
    for line in indented(value).lines() {
        let trimmed = line.trim_start();
        let indent = "&nbsp;".repeat(line.len() - trimmed.len());
        let text = match trimmed.strip_prefix("\"_href\": \"").and_then(|rest| rest.strip_suffix('"')) {
            Some(href) => {
                let href = escape_html(href);
                format!("\"_href\": <a href={href}>{href}</a>")
            }
            None => escape_html(trimmed),
        };
        let _ = writeln!(body, "{indent}{text}<br>");
    }
    format!(
        "<html><head><title>VPC-router state</title></head><body>\n<h3>VPC-router state</h3><hr><font face=\"courier\">\n{body}</font><hr></body></html>\n"
    )
}

/// The `/status` document for tools.
pub fn status_document(info: &ServerInfo, snap: &Snapshot) -> Value {
    let st = &snap.status;
    let plugins: Vec<Value> = snap
        .plugins
        .iter()
        .map(
            |p| json!({"name": p.name, "kind": p.kind, "version": p.version, "arguments": p.arguments, "info": p.info}),
        )
        .collect();
    let tables: Map<String, Value> = st
        .tables
        .iter()
        .map(|(rtb, routes)| {
            let list = routes
                .iter()
                .map(|(cidr, r)| {
                    json!({
                        "cidr": cidr.to_string(),
                        "router": r.router.map(|i| i.to_string()),
                        "instance_id": r.instance_id.as_deref(),
                        "eni_id": r.eni_id.as_deref(),
                        "previous_router": r.old_router.map(|i| i.to_string()),
                        "state": &*r.message,
                    })
                })
                .collect();
            (rtb.clone(), Value::Array(list))
        })
        .collect();
    let last = st.last_reconcile.map(|(time, took)| {
        json!({"time": iso_time(time), "duration_seconds": took.as_secs_f64(), "result": st.last_result})
    });
    json!({
        "version": crate::VERSION,
        "start_time": iso_time(info.start_time),
        "current_time": iso_time(snap.now),
        "region": info.params.get("region_name"),
        "vpc_id": info.params.get("vpc_id"),
        // `--role-arn`: the role the EC2 calls are made as (null: the usual credentials).
        "role_arn": info.params.get("role_arn"),
        "role_session_name": info.params.get("role_session_name"),
        "plugins": plugins,
        "route_spec": spec_json(st),
        "failed_hosts": ips(&st.failed),
        "questionable_hosts": ips(&st.questionable),
        "drains": snap.drains.iter().map(|d| json!({"ip": d.ip.to_string(), "since": d.since, "reason": d.reason})).collect::<Vec<_>>(),
        "route_tables": tables,
        "route_table_selection": selection_json(st),
        "notices": st.notices.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "route_table_weights": st.weights,
        "prefix_lists": st.lists.iter().map(|l| json!({
            "group": l.group,
            "family": match l.family { Family::V4 => "ipv4", Family::V6 => "ipv6" },
            "routers": l.hosts.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "cidrs": l.members,
            "id": l.list_id,
            "name": l.name,
            "max_entries": l.max_entries,
            "version": l.version,
        })).collect::<Vec<_>>(),
        "last_reconcile": last,
        "counters": {
            "reconciles": st.reconciles,
            "reconcile_errors": st.errors,
            "routes_created": st.created,
            "routes_replaced": st.replaced,
            "routes_deleted": st.deleted,
            "prefix_list_changes": st.list_changes,
            "failovers": st.failovers,
            "routes_failed_back": st.failed_back,
            "plan_revisions": st.revisions,
            "writes_withdrawn": st.withdrawn,
            "lagging_reads": st.lagging_reads,
            "ec2_throttled": snap.ec2.throttled(),
        },
        "failback": failback_json(st),
        "last_failover": st.last_failover.as_ref().map(failover_json),
        "recent_failovers": st.recent_failovers.iter().rev().map(failover_json).collect::<Vec<_>>(),
        "ec2": ec2_json(&snap.ec2),
        "cluster": snap.cluster.as_ref().map(|c| cluster_json(c, st)),
        "notifiers": snap.notifiers.iter().map(notifier_json).collect::<Vec<_>>(),
    })
}

/// One failover in `/status` (`last_failover`, `recent_failovers`): when it ended, the
/// routers, and what it took.
fn failover_json(f: &FailoverSummary) -> Value {
    json!({
        "time": f.ended.map(iso_time),
        "routers": ips(&f.routers),
        "routes_moved": f.routes_moved,
        "writes": f.writes,
        "throttled": f.throttled,
        "revisions": f.revisions,
        "withdrawn": f.withdrawn,
        "seconds": f.seconds,
    })
}

/// One notifier in `/status`: its counters and its last error.
fn notifier_json(n: &NotifierStatus) -> Value {
    json!({
        "name": n.name,
        "delivered": n.delivered,
        "failed": n.failed,
        "dropped": n.dropped,
        "queued": n.queued,
        "last_error": n.last_error,
        "last_error_time": n.last_error_time.map(iso_time),
    })
}

/// The `failback` part of `/status`: the policy and, with `preferred`, each CIDR's preferred
/// router and when its routes may move back; with `--zone-affinity`, the same per CIDR and
/// zone for the tables of a zone that use a router of their own zone (`zones`).
fn failback_json(st: &Status) -> Value {
    let entry = |e: &FailbackEntry| {
        json!({
            "preferred_router": e.preferred.to_string(),
            "state": e.state,
            "possible_at": e.possible_at.map(iso_time),
        })
    };
    let cidrs: Map<String, Value> = st.failback.iter().map(|(cidr, e)| (cidr.clone(), entry(e))).collect();
    let mut zones = Map::new();
    for ((cidr, zone), e) in &st.zone_failback {
        if let Value::Object(by_zone) = zones.entry(cidr.clone()).or_insert_with(|| json!({})) {
            by_zone.insert(zone.clone(), entry(e));
        }
    }
    json!({
        "policy": st.failback_policy.name(),
        "after_seconds": st.failback_policy.after().map(|d| d.as_secs()),
        "cidrs": cidrs,
        "zones": zones,
    })
}

/// The table selection as given on the command line (`null` for vpc-router's rule).
fn given(st: &Status) -> Value {
    match st.table_selection {
        TableSelection::Serving => Value::Null,
        ref named => Value::from(named.to_string()),
    }
}

/// The `route_table_selection` part of `/status`: the rule in force, the tables it selects
/// (with their zone and gateway), and the spec CIDRs a gateway route table cannot hold.
fn selection_json(st: &Status) -> Value {
    let tables: Vec<Value> =
        st.managed.iter().map(|t| json!({"id": t.id, "main": t.main, "zone": t.zone, "gateway": t.gateway})).collect();
    let not_holdable: Vec<Value> = st
        .notices
        .iter()
        .filter_map(|n| match n {
            Notice::NotHoldable { rtb, gateway, cidr } => {
                Some(json!({"route_table": rtb, "gateway": gateway, "cidr": cidr.to_string()}))
            }
            _ => None,
        })
        .collect();
    json!({
        "rule": st.table_selection.rule(),
        "given": given(st),
        "zone_affinity": st.zone_affinity,
        "tables": tables,
        "not_holdable": not_holdable,
    })
}

/// The `ec2` part of `/status`: the limits, the rates in force, and the counters.
fn ec2_json(e: &Ec2View) -> Value {
    let bucket = |b: vpcrouter_engine::budget::BucketConfig, rate: f64| json!({"burst": b.burst, "configured_rate": b.rate, "rate": rate});
    let calls: Map<String, Value> = e
        .calls
        .iter()
        .map(|c| (c.operation.to_string(), json!({"calls": c.calls, "errors": c.errors, "throttled": c.throttled})))
        .collect();
    json!({
        "read_bucket": bucket(e.limits.read, e.read_rate),
        "write_bucket": bucket(e.limits.write, e.write_rate),
        "max_in_flight": e.limits.max_in_flight,
        "in_flight": e.in_flight,
        "calls": calls,
    })
}

/// The `cluster` part of `/status` (null without `--cluster-etcd`).
fn cluster_json(c: &ClusterStatus, st: &Status) -> Value {
    let reports: Map<String, Value> = c
        .reports
        .iter()
        .map(|(id, v)| {
            let body = json!({"failed": ips(&v.report.failed), "questionable": ips(&v.report.questionable), "published": v.at});
            (id.clone(), body)
        })
        .collect();
    json!({
        "name": c.name,
        "instance_id": c.instance_id,
        "role": c.role.as_str(),
        "leader": c.leader,
        "members": c.members,
        "leader_changes": c.leader_changes,
        "lease_ttl_seconds": c.lease_ttl_secs,
        "health_quorum": c.quorum,
        "local_failed_hosts": ips(&st.local_health.failed),
        "local_questionable_hosts": ips(&st.local_health.questionable),
        "health_reports": reports,
        "etcd_requests": c.etcd_requests,
        "last_error": c.last_error,
    })
}

/// A plugin's status as `/status` and `/plugins` show it: `version`, `params` (numbers and
/// booleans as such, like vpc-router), `stats`, and the plugin's details at the top level.
pub fn plugin_info(status: &PluginStatus) -> Value {
    let mut doc = match serde_json::from_str::<Value>(&status.details) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let param = |v: &str| match serde_json::from_str::<Value>(v) {
        Ok(n @ (Value::Number(_) | Value::Bool(_))) => n,
        _ => Value::from(v),
    };
    let params: Map<String, Value> = status.params.iter().map(|t| (t.0.to_string(), param(&t.1))).collect();
    let ips = |l: &[vpcrouter_plugin_api::Ipv4]| l.iter().map(|ip| ip.to_string()).collect::<Vec<_>>();
    let stats = match &status.stats {
        PluginStats::Health(h) => json!({
            "checks": h.checks, "failures": h.failures, "reports_sent": h.reports_sent, "hosts": h.hosts, "failed": ips(&h.failed),
        }),
        PluginStats::Watcher(w) => json!({
            "specs_sent": w.specs_sent, "errors": w.errors,
            "last_error": if w.last_error.is_empty() { Value::Null } else { Value::from(w.last_error.as_str()) },
        }),
        PluginStats::Notifier(n) => json!({
            "delivered": n.delivered, "failed": n.failed,
            "last_error": if n.last_error.is_empty() { Value::Null } else { Value::from(n.last_error.as_str()) },
        }),
    };
    doc.insert("version".into(), Value::from(status.version.as_str()));
    doc.insert("params".into(), Value::Object(params));
    doc.insert("stats".into(), stats);
    Value::Object(doc)
}

/// RFC 3339 UTC time with milliseconds, e.g. `2026-11-23T14:05:09.123Z`.
pub use vpcrouter_plugin_api::time::rfc3339 as iso_time;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};
    use vpcrouter_engine::budget::{CallCount, LimitsConfig};

    pub(crate) fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn info() -> ServerInfo {
        let mut params = Map::new();
        params.insert("region_name".into(), json!("us-east-1"));
        params.insert("vpc_id".into(), json!("vpc-1"));
        ServerInfo {
            version_line: "vpcrouter (0.1.0): mode: http (0.1.0), health-check: file (0.1.0)".into(),
            start_time: UNIX_EPOCH + Duration::from_secs(1_795_000_000),
            params,
            ignore_routes: vec!["10.9.0.0/16".into()],
        }
    }

    pub(crate) fn snapshot() -> Snapshot {
        let mut status = Status {
            spec: vpcrouter_plugin_api::spec::parse_json(r#"{"10.55.0.0/16": ["10.0.0.1", "10.0.0.2"]}"#).unwrap(),
            failed: [ip("10.0.0.1")].into(),
            questionable: [ip("10.0.0.3")].into(),
            working_set: vec!["10.0.0.1".into(), "10.0.0.2".into()],
            reconciles: 3,
            created: 2,
            replaced: 1,
            last_reconcile: Some((UNIX_EPOCH + Duration::from_secs(1_795_000_060), Duration::from_millis(250))),
            last_result: "ok".into(),
            ..Default::default()
        };
        let route = TableRoute {
            router: Some(ip("10.0.0.2")),
            instance_id: Some("i-2".into()),
            eni_id: Some("eni-2".into()),
            old_router: Some(ip("10.0.0.1")),
            message: "Updated: router failed".into(),
        };
        let net = vpcrouter_planner::model::Dest::Cidr(
            vpcrouter_planner::model::Cidr::parse("10.55.0.0/16").expect("a CIDR"),
        );
        status.tables.entry("rtb-1".into()).or_default().insert(net, route);
        let plugin = |name: &str, kind, info, health| PluginView {
            name: name.into(),
            kind,
            version: "0.1.0".into(),
            arguments: BTreeMap::new(),
            info,
            health,
        };
        Snapshot {
            status,
            plugins: vec![
                plugin("http", "watcher", json!({"version": "0.1.0", "params": {}}), None),
                plugin(
                    "file",
                    "health",
                    json!({"stats": {"checks": 7, "failures": 2}}),
                    Some(HealthStats { checks: 7, failures: 2, ..HealthStats::default() }),
                ),
            ],
            ec2: Ec2View {
                calls: vec![
                    CallCount { operation: "DescribeVpcs", calls: 4, errors: 1, throttled: 1 },
                    CallCount { operation: "ReplaceRoute", calls: 1, errors: 0, throttled: 0 },
                ],
                limits: LimitsConfig::default(),
                read_rate: 10.0,
                write_rate: 5.0,
                in_flight: 0,
            },
            cluster: None,
            drains: Vec::new(),
            notifiers: Vec::new(),
            now: UNIX_EPOCH + Duration::from_secs(1_795_000_100),
        }
    }

    #[test]
    fn negotiation_follows_vpc_router_with_406() {
        assert_eq!(negotiate(Some("text/html,application/xhtml+xml")), Some(Format::Html));
        assert_eq!(negotiate(Some("application/json")), Some(Format::Json));
        assert_eq!(negotiate(Some("*/*")), Some(Format::Text));
        assert_eq!(negotiate(Some("text/csv")), Some(Format::Text));
        assert_eq!(negotiate(None), Some(Format::Text));
        assert_eq!(negotiate(Some("image/png")), None);
    }

    #[test]
    fn state_documents_have_vpc_router_shapes_with_bugs_fixed() {
        let (info, snap) = (info(), snapshot());
        let root = state_document("/", &info, &snap).unwrap();
        assert_eq!(root["ips"], json!({"_href": "/ips"}));
        assert_eq!(root["params"]["vpc_id"], "vpc-1");
        assert_eq!(root["SERVER"]["current_time"], iso_time(snap.now));
        let ips = state_document("/ips", &info, &snap).unwrap();
        assert_eq!(
            ips,
            json!({"failed_ips": ["10.0.0.1"], "questionable_ips": ["10.0.0.3"], "working_set": ["10.0.0.1", "10.0.0.2"], "drained_ips": []})
        );
        let plugins = state_document("/plugins", &info, &snap).unwrap();
        assert_eq!(plugins["http"], json!({"version": "0.1.0", "params": {}}));
        let route_info = state_document("/route_info", &info, &snap).unwrap();
        assert_eq!(route_info["routes"], json!({"10.55.0.0/16": ["10.0.0.2", "i-2", "eni-2"]}));
        assert_eq!(route_info["route_spec"], json!({"10.55.0.0/16": ["10.0.0.1", "10.0.0.2"]}));
        assert_eq!(route_info["ignore_routes"], json!(["10.9.0.0/16"]));
        let vpc = state_document("/vpc", &info, &snap).unwrap();
        assert_eq!(vpc["time"], "2026-11-18T11:07:40.000Z");
        assert_eq!(
            vpc["route_tables"]["rtb-1"]["10.55.0.0/16"],
            "inst: i-2, eni: eni-2, r_ip: 10.0.0.2       , o_r_ip: 10.0.0.1       , msg: Updated: router failed"
        );
        assert!(state_document("/nope", &info, &snap).is_none());
        let mut before = snapshot();
        before.status.last_reconcile = None;
        assert_eq!(state_document("/vpc", &info, &before).unwrap(), json!({}));
    }

    #[test]
    fn renderings_are_compact_indented_and_html_with_links() {
        let value = json!({"ips": {"_href": "/ips"}, "x": "<b>"});
        assert_eq!(render(&value, Format::Json), ("application/json", value.to_string()));
        let (ct, text) = render(&value, Format::Text);
        assert!(ct.starts_with("text/plain"));
        assert!(text.contains("\n    \"ips\": {\n        \"_href\": \"/ips\""), "{text}");
        let (ct, page) = render(&value, Format::Html);
        assert!(ct.starts_with("text/html"));
        assert!(page.contains("<title>VPC-router state</title>"));
        assert!(
            page.contains("&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;\"_href\": <a href=/ips>/ips</a><br>"),
            "{page}"
        );
        assert!(page.contains("&lt;b&gt;") && !page.contains("<b>"), "{page}");
    }

    #[test]
    fn status_shows_the_failback_policy_and_each_cidrs_preferred_router() {
        let mut snap = snapshot();
        snap.status.failback_policy =
            vpcrouter_planner::plan::FailbackPolicy::Preferred { after: Duration::from_secs(300) };
        let at = UNIX_EPOCH + Duration::from_secs(1_795_000_300);
        snap.status.failback = [
            (
                "10.55.0.0/16".to_string(),
                vpcrouter_engine::status::FailbackEntry {
                    preferred: ip("10.0.0.1"),
                    state: "waiting",
                    possible_at: Some(at),
                },
            ),
            (
                "10.66.0.0/16".to_string(),
                vpcrouter_engine::status::FailbackEntry {
                    preferred: ip("10.0.0.2"),
                    state: "on_preferred",
                    possible_at: None,
                },
            ),
        ]
        .into();
        snap.status.failed_back = 2;
        snap.status.zone_failback = [(
            ("10.55.0.0/16".to_string(), "az-b".to_string()),
            vpcrouter_engine::status::FailbackEntry {
                preferred: ip("10.0.0.3"),
                state: "on_preferred",
                possible_at: None,
            },
        )]
        .into();
        let doc = status_document(&info(), &snap);
        assert_eq!(
            doc["failback"],
            json!({"policy": "preferred", "after_seconds": 300, "cidrs": {
                "10.55.0.0/16": {"preferred_router": "10.0.0.1", "state": "waiting", "possible_at": iso_time(at)},
                "10.66.0.0/16": {"preferred_router": "10.0.0.2", "state": "on_preferred", "possible_at": null},
            }, "zones": {
                "10.55.0.0/16": {"az-b": {"preferred_router": "10.0.0.3", "state": "on_preferred", "possible_at": null}},
            }})
        );
        assert_eq!(doc["counters"]["routes_failed_back"], 2);
    }

    #[test]
    fn status_document_has_every_part() {
        let doc = status_document(&info(), &snapshot());
        assert_eq!(doc["version"], crate::VERSION);
        assert_eq!(doc["plugins"][0]["name"], "http");
        assert_eq!(doc["plugins"][1]["kind"], "health");
        assert_eq!(doc["failed_hosts"], json!(["10.0.0.1"]));
        assert_eq!(doc["questionable_hosts"], json!(["10.0.0.3"]));
        assert_eq!(doc["route_tables"]["rtb-1"][0]["router"], "10.0.0.2");
        assert_eq!(doc["route_tables"]["rtb-1"][0]["previous_router"], "10.0.0.1");
        assert_eq!(doc["last_reconcile"]["result"], "ok");
        assert_eq!(doc["last_reconcile"]["duration_seconds"], 0.25);
        assert_eq!(
            doc["counters"],
            json!({"reconciles": 3, "reconcile_errors": 0, "routes_created": 2, "routes_replaced": 1, "routes_deleted": 0, "prefix_list_changes": 0, "failovers": 0, "routes_failed_back": 0, "plan_revisions": 0, "writes_withdrawn": 0, "lagging_reads": 0, "ec2_throttled": 1})
        );
        assert_eq!(doc["failback"], json!({"policy": "never", "after_seconds": null, "cidrs": {}, "zones": {}}));
        assert_eq!(
            doc["route_table_selection"],
            json!({"rule": "serving", "given": null, "zone_affinity": false, "tables": [], "not_holdable": []})
        );
        assert_eq!(doc["notices"], json!([]));
        assert_eq!(doc["ec2"]["write_bucket"], json!({"burst": 50, "configured_rate": 5.0, "rate": 5.0}));
        assert_eq!(doc["ec2"]["read_bucket"]["rate"], 10.0);
        assert_eq!(doc["ec2"]["calls"]["DescribeVpcs"], json!({"calls": 4, "errors": 1, "throttled": 1}));
        assert_eq!(doc["last_failover"], Value::Null);
        assert_eq!(doc["recent_failovers"], json!([]));
        assert_eq!(doc["prefix_lists"], json!([]));
        assert_eq!(doc["region"], "us-east-1");
        assert_eq!(doc["drains"], json!([]));
        assert_eq!(doc["notifiers"], json!([]));
    }

    #[test]
    fn failovers_show_when_they_ended_newest_first() {
        let mut snap = snapshot();
        for (i, router) in ["10.0.0.1", "10.0.0.2"].iter().enumerate() {
            snap.status.remember_failover(vpcrouter_engine::status::FailoverSummary {
                routers: [ip(router)].into(),
                routes_moved: 2 + i as u64,
                seconds: 0.5,
                ended: Some(UNIX_EPOCH + Duration::from_millis(1_795_000_000_000 + 60_000 * i as u64)),
                ..Default::default()
            });
        }
        let doc = status_document(&info(), &snap);
        assert_eq!(doc["last_failover"]["time"], "2026-11-18T11:07:40.000Z");
        assert_eq!(doc["last_failover"]["routers"], json!(["10.0.0.2"]));
        let recent = doc["recent_failovers"].as_array().expect("a list");
        assert_eq!(recent.len(), 2);
        assert_eq!(recent[0], doc["last_failover"]);
        assert_eq!(recent[1]["routers"], json!(["10.0.0.1"]));
        assert_eq!(recent[1]["time"], "2026-11-18T11:06:40.000Z");
    }

    #[test]
    fn status_shows_each_notifiers_counters_and_last_error() {
        let mut snap = snapshot();
        let failed_at = UNIX_EPOCH + Duration::from_millis(1_795_000_050_250);
        snap.notifiers = vec![
            vpcrouter_notify::NotifierStatus {
                name: "webhook".into(),
                delivered: 5,
                failed: 2,
                dropped: 1,
                queued: 3,
                last_error: Some("HTTP 503 from https://hooks.example".into()),
                last_error_time: Some(failed_at),
            },
            vpcrouter_notify::NotifierStatus { name: "sns".into(), delivered: 7, ..Default::default() },
        ];
        let doc = status_document(&info(), &snap);
        assert_eq!(
            doc["notifiers"],
            json!([
                {"name": "webhook", "delivered": 5, "failed": 2, "dropped": 1, "queued": 3,
                 "last_error": "HTTP 503 from https://hooks.example", "last_error_time": "2026-11-18T11:07:30.250Z"},
                {"name": "sns", "delivered": 7, "failed": 0, "dropped": 0, "queued": 0,
                 "last_error": null, "last_error_time": null},
            ])
        );
    }

    #[test]
    fn drains_are_in_status_ips_and_metrics() {
        let mut snap = snapshot();
        let drain = Drain { ip: ip("10.0.0.2"), since: "2026-12-01T20:00:00.000Z".into(), reason: "kernel".into() };
        snap.drains = vec![drain.clone()];
        let doc = status_document(&info(), &snap);
        assert_eq!(doc["drains"], json!([{"ip": "10.0.0.2", "since": "2026-12-01T20:00:00.000Z", "reason": "kernel"}]));
        let ips = state_document("/ips", &info(), &snap).unwrap();
        assert_eq!(ips["drained_ips"], json!(["10.0.0.2"]));
        assert_eq!(ips["failed_ips"], json!(["10.0.0.1"]), "vpc-router's fields stay");
        let text = crate::metrics::encode(snap.clone(), &Default::default(), None, crate::metrics::Exposition::Text);
        for line in [
            "vpcrouter_router_drained{router=\"10.0.0.2\"} 1",
            "vpcrouter_drained_routers 1",
            "vpcrouter_router_up{router=\"10.0.0.2\"} 1",
            "vpcrouter_cidr_healthy_candidates{cidr=\"10.55.0.0/16\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        assert_eq!(
            drain_json(&drain, "local", &snap.status.spec),
            json!({"ip": "10.0.0.2", "since": "2026-12-01T20:00:00.000Z", "reason": "kernel", "scope": "local", "cidrs": ["10.55.0.0/16"]})
        );
        let other = Drain { ip: ip("10.9.9.9"), ..drain };
        assert_eq!(drain_json(&other, "cluster", &snap.status.spec)["cidrs"], json!([]));
    }

    /// Cluster mode's state as a follower of `a`, with `a`'s report that 10.0.0.1 failed.
    pub(crate) fn cluster_status() -> vpcrouter_cluster::ClusterStatus {
        use vpcrouter_cluster::{ClusterStatus, PeerView, Report, Role};
        let report = Report { failed: [ip("10.0.0.1")].into(), questionable: Default::default() };
        ClusterStatus {
            name: "vpc-1".into(),
            instance_id: "b".into(),
            quorum: "majority",
            lease_ttl_secs: 5,
            role: Role::Follower,
            leader: Some("a".into()),
            members: ["a".to_string(), "b".to_string(), "c".to_string()].into(),
            leader_changes: 2,
            reports: [("a".to_string(), PeerView { report, at: "2026-11-23T14:00:00.000Z".into() })].into(),
            etcd_requests: 40,
            last_error: None,
        }
    }

    #[test]
    fn cluster_state_is_in_status() {
        let mut snap = snapshot();
        assert_eq!(status_document(&info(), &snap)["cluster"], Value::Null);
        snap.cluster = Some(cluster_status());
        snap.status.local_health = snap.cluster.as_ref().unwrap().reports["a"].report.clone();
        let doc = status_document(&info(), &snap);
        let c = &doc["cluster"];
        assert_eq!(
            (c["role"].as_str(), c["leader"].as_str(), c["leader_changes"].as_u64()),
            (Some("follower"), Some("a"), Some(2))
        );
        assert_eq!(c["members"], json!(["a", "b", "c"]));
        assert_eq!(c["health_reports"]["a"]["failed"], json!(["10.0.0.1"]));
        assert_eq!(c["local_failed_hosts"], json!(["10.0.0.1"]));
    }

    #[test]
    fn status_and_route_info_say_which_tables_are_managed_and_what_a_gateway_table_cannot_hold() {
        use vpcrouter_planner::model::{Cidr, ManagedTable};
        let mut snap = snapshot();
        snap.status.table_selection = TableSelection::Tagged(vec![("vpcrouter:managed".into(), "true".into())]);
        snap.status.zone_affinity = true;
        snap.status.managed = vec![
            ManagedTable { id: "rtb-1".into(), main: false, zone: Some("az-a".into()), gateway: None },
            ManagedTable { id: "rtb-gw".into(), main: false, zone: None, gateway: Some("igw-1".into()) },
        ];
        let cidr = Cidr::parse("10.99.0.0/16").unwrap();
        snap.status.notices = vec![Notice::NotHoldable { rtb: "rtb-gw".into(), gateway: "igw-1".into(), cidr }];
        let doc = status_document(&info(), &snap);
        assert_eq!(
            doc["route_table_selection"],
            json!({
                "rule": "tags", "given": "--route-table-tag vpcrouter:managed=true", "zone_affinity": true,
                "tables": [
                    {"id": "rtb-1", "main": false, "zone": "az-a", "gateway": null},
                    {"id": "rtb-gw", "main": false, "zone": null, "gateway": "igw-1"},
                ],
                "not_holdable": [{"route_table": "rtb-gw", "gateway": "igw-1", "cidr": "10.99.0.0/16"}],
            })
        );
        assert!(doc["notices"][0].as_str().unwrap().contains("10.99.0.0/16 is not routed in rtb-gw"), "{doc}");
        let route_info = state_document("/route_info", &info(), &snap).unwrap();
        assert_eq!(
            route_info["route_tables"],
            json!({"rule": "tags", "given": "--route-table-tag vpcrouter:managed=true", "tables": ["rtb-1", "rtb-gw"]})
        );
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(iso_time(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_time(UNIX_EPOCH + Duration::from_millis(951_782_400_007)), "2000-02-29T00:00:00.007Z");
        assert_eq!(iso_time(UNIX_EPOCH + Duration::from_secs(1_795_000_000)), "2026-11-18T11:06:40.000Z");
    }
    #[test]
    fn plugin_status_renders_typed_stats_params_and_details() {
        use vpcrouter_plugin_api::abi_stable::std_types::Tuple2;
        let status = PluginStatus {
            version: "1.2.0".into(),
            params: vec![Tuple2("tcp_check_port".into(), "22".into()), Tuple2("file".into(), "/x".into())].into(),
            stats: PluginStats::Health(HealthStats {
                checks: 9,
                failures: 1,
                reports_sent: 2,
                hosts: 3,
                failed: vec![vpcrouter_plugin_api::Ipv4::new(10, 0, 0, 1)].into(),
            }),
            details: r#"{"rounds": 4, "version": "ignored"}"#.into(),
        };
        assert_eq!(
            plugin_info(&status),
            json!({
                "version": "1.2.0", "params": {"tcp_check_port": 22, "file": "/x"}, "rounds": 4,
                "stats": {"checks": 9, "failures": 1, "reports_sent": 2, "hosts": 3, "failed": ["10.0.0.1"]},
            })
        );
        let watcher = PluginStatus {
            stats: PluginStats::Watcher(Default::default()),
            details: "not json".into(),
            params: Default::default(),
            ..status
        };
        assert_eq!(
            plugin_info(&watcher),
            json!({"version": "1.2.0", "params": {}, "stats": {"specs_sent": 0, "errors": 0, "last_error": null}})
        );
        let notifier = PluginStatus {
            stats: PluginStats::Notifier(vpcrouter_plugin_api::NotifierStats {
                delivered: 3,
                failed: 1,
                last_error: "HTTP 500".into(),
            }),
            ..watcher
        };
        assert_eq!(plugin_info(&notifier)["stats"], json!({"delivered": 3, "failed": 1, "last_error": "HTTP 500"}));
    }
}
