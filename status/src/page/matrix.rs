//! The page's route matrix: one row per destination (the spec's CIDRs, then anything else
//! the managed tables route), one column per managed route table, the router in each cell.
//! A cell on a failed, questionable or drained router says so; a cell whose router differs
//! from the one most of its row's tables use is marked `differs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use vpcrouter_engine::status::{Status, TableRoute};
use vpcrouter_planner::model::ManagedTable;

use super::{badge, esc, Health};

/// One column: a managed table (or one the state has routes of, before the first plan).
struct Column<'a> {
    /// `rtb-...`.
    id: &'a str,
    /// Its zone, gateway and main flag, when the last reconcile selected it.
    table: Option<&'a ManagedTable>,
}

/// One row: a destination, its spec candidates, and its route per column.
struct Row<'a> {
    /// The CIDR (or prefix-list id) as text.
    dest: String,
    /// The candidate routers of the spec (empty: not in the spec).
    candidates: Vec<Ipv4Addr>,
    /// The route in each column, in the columns' order.
    cells: Vec<Option<&'a TableRoute>>,
}

/// The managed tables, then any other table the state has routes of.
fn columns(st: &Status) -> Vec<Column<'_>> {
    let mut cols: Vec<Column> = st.managed.iter().map(|t| Column { id: &t.id, table: Some(t) }).collect();
    for id in st.tables.keys() {
        if !cols.iter().any(|c| c.id == id) {
            cols.push(Column { id, table: None });
        }
    }
    cols
}

/// The spec's CIDRs in its order, then the other destinations of the tables.
fn rows<'a>(st: &'a Status, cols: &[Column]) -> Vec<Row<'a>> {
    let by_dest: Vec<HashMap<String, &TableRoute>> = cols
        .iter()
        .map(|c| st.tables.get(c.id).map(|t| t.iter().map(|(d, r)| (d.to_string(), r)).collect()).unwrap_or_default())
        .collect();
    let mut seen = HashSet::new();
    let spec = st.spec.routes.iter().map(|r| (r.cidr.to_string(), r.hosts.iter().map(|h| h.addr()).collect()));
    let others =
        cols.iter().filter_map(|c| st.tables.get(c.id)).flat_map(|t| t.keys()).map(|d| (d.to_string(), vec![]));
    let mut rows: Vec<Row> = spec
        .chain(others)
        .filter(|(dest, _)| seen.insert(dest.clone()))
        .map(|(dest, candidates)| Row { dest, candidates, cells: vec![] })
        .collect();
    for row in &mut rows {
        row.cells = by_dest.iter().map(|t| t.get(&row.dest).copied()).collect();
    }
    rows
}

/// The router most of the row's cells point at (the first of the most common).
fn usual_router(cells: &[Option<&TableRoute>]) -> Option<Ipv4Addr> {
    let mut counts: BTreeMap<Ipv4Addr, (usize, usize)> = BTreeMap::new();
    for (i, ip) in cells.iter().filter_map(|c| c.and_then(|r| r.router)).enumerate() {
        counts.entry(ip).or_insert((0, i)).0 += 1;
    }
    counts.into_iter().max_by_key(|(_, (n, first))| (*n, std::cmp::Reverse(*first))).map(|(ip, _)| ip)
}

/// The route matrix section.
pub(super) fn matrix(out: &mut String, st: &Status, health: &Health) {
    out.push_str("<section aria-labelledby=\"routes-h\"><h2 id=\"routes-h\">Routes</h2>\n");
    let cols = columns(st);
    let rows = rows(st, &cols);
    if cols.is_empty() || rows.is_empty() {
        let what = if rows.is_empty() { "no route in the spec" } else { "no managed route table yet" };
        let _ = writeln!(out, "<p class=\"empty\" id=\"no-routes\">{what}</p></section>");
        return;
    }
    out.push_str(
        "<div class=\"scroll\" id=\"matrix-box\" tabindex=\"0\" role=\"region\" aria-label=\"route matrix\">\
         <table class=\"matrix\"><thead><tr><th scope=\"col\">destination</th>",
    );
    for col in &cols {
        header(out, col);
    }
    out.push_str("</tr></thead><tbody>\n");
    for row in &rows {
        table_row(out, row, health);
    }
    out.push_str("</tbody></table></div></section>\n");
}

/// A column header: the table id, its zone, and whether it is the main or a gateway table.
fn header(out: &mut String, col: &Column) {
    let gateway = col.table.and_then(|t| t.gateway.as_deref());
    let class = if gateway.is_some() { " class=\"gateway\"" } else { "" };
    let _ = write!(out, "<th scope=\"col\"{class} data-rtb=\"{0}\"><span class=\"rtb\">{0}</span>", esc(col.id));
    let zone = col.table.and_then(|t| t.zone.as_deref());
    let _ = write!(out, "<span class=\"zone\">{}</span>", zone.map_or_else(|| "no zone".to_string(), esc));
    if col.table.is_some_and(|t| t.main) {
        badge(out, "main");
    }
    if let Some(gw) = gateway {
        let _ = write!(out, " <span class=\"badge gateway\">gateway {}</span>", esc(gw));
    }
    out.push_str("</th>");
}

/// A row: the destination with its candidates, then one cell per table.
fn table_row(out: &mut String, row: &Row, health: &Health) {
    let usual = usual_router(&row.cells);
    let differs = row.cells.iter().flatten().filter(|r| r.router.is_some_and(|ip| Some(ip) != usual)).count();
    let _ = write!(out, "<tr data-dest=\"{0}\"><th scope=\"row\"><span class=\"dest\">{0}</span>", esc(&row.dest));
    if row.candidates.is_empty() {
        badge(out, "not in spec");
    } else {
        let list: Vec<String> = row.candidates.iter().map(ToString::to_string).collect();
        let _ = write!(out, "<span class=\"candidates\">{}</span>", esc(&list.join(", ")));
    }
    if differs > 0 {
        let _ = write!(out, " <span class=\"badge differs\">{differs} table(s) differ</span>");
    }
    out.push_str("</th>");
    for cell in &row.cells {
        self::cell(out, *cell, usual, health);
    }
    out.push_str("</tr>\n");
}

/// A cell: the router, with its marks, or why there is none.
fn cell(out: &mut String, route: Option<&TableRoute>, usual: Option<Ipv4Addr>, health: &Health) {
    let Some(route) = route else {
        out.push_str("<td class=\"none\">no route</td>");
        return;
    };
    let Some(ip) = route.router else {
        let _ = write!(out, "<td class=\"unknown\" title=\"{0}\">unknown target", esc(&route.message));
        out.push_str("</td>");
        return;
    };
    let mut marks = health.marks(ip);
    if Some(ip) != usual {
        marks.push("differs");
    }
    let class = if marks.is_empty() { "ok".to_string() } else { marks.join(" ") };
    let _ = write!(out, "<td class=\"{class}\" data-router=\"{ip}\" title=\"{}\">{ip}", esc(&route.message));
    for mark in marks {
        badge(out, mark);
    }
    out.push_str("</td>");
}
