//! `vpcrouter status`: the `/status` document as a terminal reads it. Pure: JSON in, text
//! out, so that the client only fetches and prints.
//!
//! The text fits 100 columns and reads the same pasted into an incident note: a header
//! (VPC, role, last reconcile), the routes (per CIDR, the router of each group of managed
//! tables; tables that differ from the CIDR's main router are named), the routers (health,
//! drain, routes carried), the last failover and the notices. Colour only marks what the
//! words already say, and only when asked for ([`Paint`]).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use vpcrouter_planner::preview::wrap;

/// The widest line [`status_text`] prints: as wide as `vpcrouter plan`'s text.
pub const WIDTH: usize = vpcrouter_planner::preview::WIDTH;

/// Whether to colour the text (a terminal without `NO_COLOR`) or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paint {
    /// Plain text: pipes, files, `NO_COLOR`.
    Plain,
    /// ANSI colours for a terminal.
    Ansi,
}

/// What a router is, by the daemon's view; worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Health {
    Failed,
    Questionable,
    Healthy,
}

impl Health {
    fn word(self) -> &'static str {
        match self {
            Health::Failed => "failed",
            Health::Questionable => "questionable",
            Health::Healthy => "healthy",
        }
    }
}

/// The routers' health and drains, from `/status`.
struct Routers<'a> {
    /// `failed_hosts` (the quorum's in cluster mode).
    failed: BTreeSet<&'a str>,
    /// `questionable_hosts`.
    questionable: BTreeSet<&'a str>,
    /// `drains` by router: (since, reason).
    drains: BTreeMap<&'a str, (&'a str, &'a str)>,
}

impl<'a> Routers<'a> {
    fn of(doc: &'a Value) -> Routers<'a> {
        let drains = items(&doc["drains"])
            .filter_map(|d| Some((d["ip"].as_str()?, (str_of(&d["since"]), str_of(&d["reason"])))))
            .collect();
        Routers { failed: strings(&doc["failed_hosts"]), questionable: strings(&doc["questionable_hosts"]), drains }
    }

    fn health(&self, ip: &str) -> Health {
        if self.failed.contains(ip) {
            Health::Failed
        } else if self.questionable.contains(ip) {
            Health::Questionable
        } else {
            Health::Healthy
        }
    }

    /// The words that follow a router in the routes: `failed`, `drained`, both, or none.
    fn marks(&self, ip: &str) -> Vec<&'static str> {
        let health = self.health(ip);
        let mut marks = Vec::new();
        if health != Health::Healthy {
            marks.push(health.word());
        }
        if self.drains.contains_key(ip) {
            marks.push("drained");
        }
        marks
    }
}

/// The `/status` document `doc` as text (see the module's doc).
pub fn status_text(doc: &Value, paint: Paint) -> String {
    let routers = Routers::of(doc);
    let mut out = String::new();
    header(doc, &mut out);
    tables(doc, paint, &mut out);
    routes(doc, &routers, paint, &mut out);
    routers_table(doc, &routers, paint, &mut out);
    failover(doc, paint, &mut out);
    notices(doc, paint, &mut out);
    out
}

fn header(doc: &Value, out: &mut String) {
    let line = format!(
        "vpcrouter {}  {} in {}  at {}",
        str_of(&doc["version"]),
        or_dash(&doc["vpc_id"]),
        or_dash(&doc["region"]),
        str_of(&doc["current_time"])
    );
    push_line(out, &line);
    push_line(out, &format!("role: {}", role(&doc["cluster"])));
    let last = &doc["last_reconcile"];
    let reconcile = match last["time"].as_str() {
        None => "not yet".to_string(),
        Some(t) => {
            let secs = last["duration_seconds"].as_f64().unwrap_or(0.0);
            format!("{t}, {:.2} s: {}", secs, one_line(str_of(&last["result"])))
        }
    };
    push_line(out, &format!("last reconcile: {reconcile}"));
}

/// The role line: single instance, or leader/follower and who leads.
fn role(cluster: &Value) -> String {
    if cluster.is_null() {
        return "single instance (no cluster)".into();
    }
    let me = str_of(&cluster["instance_id"]);
    let members = items(&cluster["members"]).count();
    let leader = cluster["leader"].as_str().unwrap_or("none");
    let name = str_of(&cluster["name"]);
    match str_of(&cluster["role"]) {
        "leader" => format!("leader of cluster {name} (this instance {me}; {members} members)"),
        role => format!("{role} in cluster {name} (this instance {me}); leader: {leader}; {members} members"),
    }
}

/// One CIDR's managed tables by the router they point at (`None`: no route), largest first.
type Groups = Vec<(Option<String>, Vec<String>)>;

/// The managed route tables: id, zone, the spec's routes each holds, main or gateway table.
fn tables(doc: &Value, paint: Paint, out: &mut String) {
    let selection = &doc["route_table_selection"];
    let rule = match (selection["rule"].as_str(), selection["given"].as_str()) {
        (Some("ids"), Some(given)) => format!("--route-tables {given}"),
        (Some("tags"), Some(given)) => format!("--route-table-tag {given}"),
        _ => "the tables of the routers' subnets".to_string(),
    };
    let list: Vec<&Value> = items(&selection["tables"]).collect();
    heading(out, paint, &cut(&format!("ROUTE TABLES ({}, managed: {rule})", list.len()), WIDTH));
    if list.is_empty() {
        push_line(out, "none managed yet");
        return;
    }
    push_line(out, &format!("{:<24}  {:<20}  {:>6}  NOTE", "TABLE", "ZONE", "ROUTES"));
    for t in list {
        let id = str_of(&t["id"]);
        let routes = items(&doc["route_tables"][id]).filter(|r| !r["router"].is_null()).count();
        let mut note = Vec::new();
        if t["main"] == true {
            note.push("main table".to_string());
        }
        if let Some(gw) = t["gateway"].as_str() {
            note.push(format!("gateway route table of {gw}"));
        }
        let line = format!("{id:<24}  {:<20}  {routes:>6}  {}", or_dash(&t["zone"]), note.join(", "));
        push_line(out, &cut(&line, WIDTH));
    }
}

/// Per CIDR, the tables grouped by the router they point at: the largest group first (of
/// equal ones, the healthiest router's), tables without the route last.
fn cidr_groups(doc: &Value, routers: &Routers) -> BTreeMap<String, Groups> {
    let tables: Vec<String> =
        items(&doc["route_table_selection"]["tables"]).filter_map(|t| t["id"].as_str().map(str::to_owned)).collect();
    let mut at: BTreeMap<String, BTreeMap<String, Option<String>>> = BTreeMap::new();
    if let Some(spec) = doc["route_spec"].as_object() {
        for cidr in spec.keys() {
            at.entry(cidr.clone()).or_default();
        }
    }
    for (rtb, routes) in doc["route_tables"].as_object().into_iter().flatten() {
        for r in items(routes) {
            let router = r["router"].as_str().map(str::to_owned);
            at.entry(str_of(&r["cidr"]).to_owned()).or_default().insert(rtb.clone(), router);
        }
    }
    at.into_iter()
        .map(|(cidr, by_table)| {
            let mut groups: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
            for rtb in tables.iter().chain(by_table.keys().filter(|t| !tables.contains(t))) {
                groups.entry(by_table.get(rtb).cloned().flatten()).or_default().push(rtb.clone());
            }
            let mut groups: Vec<_> = groups.into_iter().collect();
            groups.sort_by_key(|(router, tables)| {
                let health = router
                    .as_deref()
                    .map(|ip| (std::cmp::Reverse(routers.health(ip)), routers.drains.contains_key(ip)));
                (std::cmp::Reverse(tables.len()), router.is_none(), health)
            });
            (cidr, groups)
        })
        .collect()
}

fn routes(doc: &Value, routers: &Routers, paint: Paint, out: &mut String) {
    let groups = cidr_groups(doc, routers);
    let total = items(&doc["route_table_selection"]["tables"]).count();
    heading(out, paint, &format!("ROUTES ({}, {})", count(groups.len(), "CIDR"), count(total, "route table")));
    if groups.is_empty() {
        push_line(out, "no CIDR in the route spec");
        return;
    }
    // One row per (CIDR, router): the CIDR on its first row only.
    let mut rows = Vec::new();
    for (cidr, list) in &groups {
        let all: usize = list.iter().map(|(_, t)| t.len()).sum();
        for (i, (router, tables)) in list.iter().enumerate() {
            let (plain, painted) = match router {
                Some(ip) => router_cell(ip, routers, paint),
                None => ("(no route)".to_string(), "(no route)".to_string()),
            };
            let first = if i == 0 { cidr.as_str() } else { "" };
            rows.push((first, plain, painted, format!("{} of {all}", tables.len()), (i > 0).then_some(tables)));
        }
    }
    let cidr_w = groups.keys().map(|c| c.len()).max().unwrap_or(4).clamp(4, 43);
    let router_w = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(6).max(6);
    push_line(out, &format!("{:<cidr_w$}  {:<router_w$}  TABLES", "CIDR", "ROUTER"));
    for (first, plain, painted, of, differing) in rows {
        let used = cidr_w + 2 + router_w + 2 + of.len() + 2;
        // Which tables differ from the CIDR's main router (its first row).
        let named = differing.map(|t| fit_list(t, WIDTH.saturating_sub(used))).unwrap_or_default();
        push_line(out, &format!("{first:<cidr_w$}  {painted}{}  {of}  {named}", pad(&plain, router_w)));
    }
}

/// `n` things, in the singular for one: `1 CIDR`, `2 CIDRs`.
fn count(n: usize, thing: &str) -> String {
    format!("{n} {thing}{}", if n == 1 { "" } else { "s" })
}

/// A router in the routes, with its marks (`failed`, `drained`): as printed, and painted.
fn router_cell(ip: &str, routers: &Routers, paint: Paint) -> (String, String) {
    let marks = routers.marks(ip);
    if marks.is_empty() {
        return (ip.to_owned(), ip.to_owned());
    }
    let words = marks.join(", ");
    let colour = if routers.health(ip) == Health::Failed { RED } else { YELLOW };
    (format!("{ip} ({words})"), format!("{ip} ({})", colour_if(paint, colour, &words)))
}

fn routers_table(doc: &Value, routers: &Routers, paint: Paint, out: &mut String) {
    let mut carried: BTreeMap<String, usize> = BTreeMap::new();
    for routes in doc["route_tables"].as_object().into_iter().flat_map(|m| m.values()) {
        for ip in items(routes).filter_map(|r| r["router"].as_str()) {
            *carried.entry(ip.to_owned()).or_default() += 1;
        }
    }
    let mut all: BTreeSet<String> = carried.keys().cloned().collect();
    for hosts in doc["route_spec"].as_object().into_iter().flat_map(|m| m.values()) {
        all.extend(items(hosts).filter_map(|h| h.as_str().map(str::to_owned)));
    }
    all.extend(routers.drains.keys().map(|ip| ip.to_string()));
    heading(out, paint, &format!("ROUTERS ({})", all.len()));
    if all.is_empty() {
        push_line(out, "no router in the route spec");
        return;
    }
    push_line(out, &format!("{:<15}  {:<12}  {:>6}  DRAINED", "ROUTER", "HEALTH", "ROUTES"));
    let mut sorted: Vec<&String> = all.iter().collect();
    sorted.sort_by_key(|ip| (routers.health(ip), ip.parse::<std::net::IpAddr>().ok(), ip.to_string()));
    for ip in sorted {
        let health = routers.health(ip);
        let colour = match health {
            Health::Failed => RED,
            Health::Questionable => YELLOW,
            Health::Healthy => GREEN,
        };
        let word = colour_if(paint, colour, health.word());
        let drained = match routers.drains.get(ip.as_str()) {
            None => "-".to_string(),
            Some((since, "")) => format!("since {since}"),
            Some((since, reason)) => format!("since {since}: {}", one_line(reason)),
        };
        let count = carried.get(ip).copied().unwrap_or(0);
        let prefix = format!("{ip:<15}  {}{}  {count:>6}  ", word, pad(health.word(), 12));
        let room = WIDTH.saturating_sub(15 + 2 + 12 + 2 + 6 + 2);
        push_line(out, &format!("{prefix}{}", cut(&drained, room)));
    }
}

fn failover(doc: &Value, paint: Paint, out: &mut String) {
    heading(out, paint, "LAST FAILOVER");
    let f = &doc["last_failover"];
    if f.is_null() {
        push_line(out, "none since the daemon started");
        return;
    }
    let routers: Vec<&str> = items(&f["routers"]).filter_map(Value::as_str).collect();
    let line = format!(
        "{}  {} {}: {} routes moved in {:.2} s ({} writes)",
        f["time"].as_str().unwrap_or("(time unknown)"),
        if routers.len() == 1 { "router" } else { "routers" },
        routers.join(", "),
        f["routes_moved"].as_u64().unwrap_or(0),
        f["seconds"].as_f64().unwrap_or(0.0),
        f["writes"].as_u64().unwrap_or(0)
    );
    push_line(out, &cut(&line, WIDTH));
}

fn notices(doc: &Value, paint: Paint, out: &mut String) {
    let list: Vec<&str> = items(&doc["notices"]).filter_map(Value::as_str).collect();
    if list.is_empty() {
        return;
    }
    heading(out, paint, &format!("NOTICES ({})", list.len()));
    for n in list {
        // Wrapped as `vpcrouter plan` wraps its notes; a word longer than a line is cut.
        for line in wrap(&one_line(n), "- ", "  ").lines() {
            push_line(out, &cut(line, WIDTH));
        }
    }
}

const RED: &str = "31";
const YELLOW: &str = "33";
const GREEN: &str = "32";
const BOLD: &str = "1";

fn colour_if(paint: Paint, code: &str, text: &str) -> String {
    match paint {
        Paint::Plain => text.to_owned(),
        Paint::Ansi => format!("\x1b[{code}m{text}\x1b[0m"),
    }
}

fn heading(out: &mut String, paint: Paint, text: &str) {
    out.push('\n');
    push_line(out, &colour_if(paint, BOLD, text));
}

/// The spaces that pad `plain` (printed elsewhere, maybe painted) to `width` columns.
fn pad(plain: &str, width: usize) -> String {
    " ".repeat(width.saturating_sub(plain.chars().count()))
}

/// Table ids joined with `,`, as many as fit in `room` columns, then `+N more`.
fn fit_list(tables: &[String], room: usize) -> String {
    let mut out = String::new();
    for (i, t) in tables.iter().enumerate() {
        let more = format!(" +{} more", tables.len() - i);
        let sep = if out.is_empty() { "" } else { "," };
        let last = i + 1 == tables.len();
        let need = out.len() + sep.len() + t.len() + if last { 0 } else { more.len() };
        if need > room && !out.is_empty() {
            return format!("{out}{more}");
        }
        out.push_str(sep);
        out.push_str(t);
    }
    out
}

/// `s` cut to `width` characters, with `…` when cut.
fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
    t.push('…');
    t
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn push_line(out: &mut String, line: &str) {
    out.push_str(line.trim_end());
    out.push('\n');
}

fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

fn strings(v: &Value) -> BTreeSet<&str> {
    items(v).filter_map(Value::as_str).collect()
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn or_dash(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

#[cfg(test)]
mod tests;
