//! The live page at `/` for browsers: one HTML document rendered from a [`Snapshot`] by
//! [`page`]: the overview (version, VPC, region, cluster role and leader, last reconcile),
//! the route matrix (CIDRs × managed route tables, the router in each cell, cells on a
//! failed, questionable or drained router marked in words, not only in colour), the
//! routers with their health, drains and routes carried, and the last failovers.
//!
//! The first answer is the whole content (readable without JavaScript). The script
//! ([`SCRIPT`], served at [`SCRIPT_PATH`]) then fetches the same URL every 1.5 s and swaps
//! the content of `<main id="main">` for the new one: the same renderer makes the first page
//! and every update. The style sheet ([`STYLE`], at [`STYLE_PATH`]) and the script are files
//! of this crate compiled into the binary; the page loads nothing else and works under
//! [`CONTENT_SECURITY_POLICY`] (no inline script or style). Every value is HTML-escaped.
//! Links are relative, so the page also works behind a proxy that serves the daemon under a
//! path prefix.

mod matrix;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use vpcrouter_drains::Drain;
use vpcrouter_engine::status::Status;

use crate::document::{escape_html as esc, iso_time, ServerInfo, Snapshot};

/// The page's style sheet.
pub const STYLE: &str = include_str!("page/page.css");
/// The page's script: the live update.
pub const SCRIPT: &str = include_str!("page/page.js");
/// Where the server serves [`STYLE`] (the page links it relative to itself).
pub const STYLE_PATH: &str = "/_ui/page.css";
/// Where the server serves [`SCRIPT`].
pub const SCRIPT_PATH: &str = "/_ui/page.js";
/// The page's `Content-Security-Policy`: its own style sheet, script and fetches, nothing
/// inline, nothing from elsewhere, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The state documents the footer links to.
const LINKS: [&str; 6] = ["status", "metrics", "route_info", "ips", "vpc", "plugins"];

/// How a router stands, as the page marks it.
pub(crate) struct Health<'a> {
    /// Routers the health plugin (or the cluster's quorum) reports failed.
    failed: &'a BTreeSet<Ipv4Addr>,
    /// Routers reported questionable.
    questionable: &'a BTreeSet<Ipv4Addr>,
    /// The drains in force, by router.
    drains: BTreeMap<Ipv4Addr, &'a Drain>,
}

impl<'a> Health<'a> {
    fn new(snap: &'a Snapshot) -> Health<'a> {
        Health {
            failed: &snap.status.failed,
            questionable: &snap.status.questionable,
            drains: snap.drains.iter().map(|d| (d.ip, d)).collect(),
        }
    }

    /// `failed`, `questionable` or `healthy`.
    fn word(&self, ip: Ipv4Addr) -> &'static str {
        if self.failed.contains(&ip) {
            "failed"
        } else if self.questionable.contains(&ip) {
            "questionable"
        } else {
            "healthy"
        }
    }

    /// The marks of a router that should not carry traffic: its health word unless
    /// healthy, and `drained`. Each is both a CSS class and the text shown.
    fn marks(&self, ip: Ipv4Addr) -> Vec<&'static str> {
        let mut marks = Vec::new();
        match self.word(ip) {
            "healthy" => {}
            word => marks.push(word),
        }
        if self.drains.contains_key(&ip) {
            marks.push("drained");
        }
        marks
    }
}

/// A text badge: the marker that carries the meaning in words (colour only adds to it).
/// Its class is the words joined by `-` (`not in spec`: `not-in-spec`).
fn badge(out: &mut String, words: &str) {
    let class = esc(&words.replace(' ', "-"));
    let _ = write!(out, " <span class=\"badge {class}\">{}</span>", esc(words));
}

/// The live page: one complete HTML document.
pub fn page(info: &ServerInfo, snap: &Snapshot) -> String {
    let health = Health::new(snap);
    let mut main = String::new();
    overview(&mut main, info, snap);
    matrix::matrix(&mut main, &snap.status, &health);
    routers(&mut main, &snap.status, &health);
    failovers(&mut main, &snap.status);
    notices(&mut main, &snap.status);
    let vpc = param(info, "vpc_id");
    let links: String = LINKS.iter().map(|l| format!("<a href=\"{l}\">/{l}</a>")).collect::<Vec<_>>().join(" ");
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>vpcrouter · {vpc}</title>\n<link rel=\"icon\" href=\"data:,\">\n\
         <link rel=\"stylesheet\" href=\"{style}\">\n<script src=\"{script}\" defer></script>\n</head>\n<body>\n\
         <header><h1>vpcrouter <span class=\"vpc\">{vpc}</span></h1>\
         <p id=\"live\" class=\"live\" role=\"status\">as of {now}; reload for news</p></header>\n\
         <main id=\"main\">\n{main}</main>\n<footer><nav>{links}</nav></footer>\n</body>\n</html>\n",
        style = &STYLE_PATH[1..],
        script = &SCRIPT_PATH[1..],
        now = esc(&iso_time(snap.now)),
    )
}

/// A start option by vpc-router's name (`vpc_id`, `region_name`), escaped; `-` if unset.
fn param(info: &ServerInfo, name: &str) -> String {
    match info.params.get(name) {
        Some(serde_json::Value::String(s)) => esc(s),
        Some(serde_json::Value::Null) | None => "-".into(),
        Some(other) => esc(&other.to_string()),
    }
}

/// Version, VPC, region, cluster role and leader, and the last reconcile.
fn overview(out: &mut String, info: &ServerInfo, snap: &Snapshot) {
    let st = &snap.status;
    let _ = write!(
        out,
        "<section class=\"overview\" aria-label=\"overview\"><dl>\
         <div><dt>version</dt><dd>{}</dd></div><div><dt>VPC</dt><dd id=\"vpc\">{}</dd></div>\
         <div><dt>region</dt><dd>{}</dd></div>",
        esc(crate::VERSION),
        param(info, "vpc_id"),
        param(info, "region_name"),
    );
    match &snap.cluster {
        None => out.push_str("<div><dt>mode</dt><dd>single instance</dd></div>"),
        Some(c) => {
            let leader = c.leader.as_deref().map_or_else(|| "none".to_string(), esc);
            let _ = write!(
                out,
                "<div><dt>cluster</dt><dd>{} ({} members)</dd></div>\
                 <div><dt>role</dt><dd id=\"role\">{} <span class=\"dim\">as {}</span></dd></div>\
                 <div><dt>leader</dt><dd id=\"leader\">{leader}</dd></div>",
                esc(&c.name),
                c.members.len(),
                esc(c.role.as_str()),
                esc(&c.instance_id),
            );
        }
    }
    out.push_str("<div><dt>last reconcile</dt><dd id=\"reconcile\">");
    match st.last_reconcile {
        None => out.push_str("none yet"),
        Some((time, took)) => {
            let _ = write!(out, "<time>{}</time> in {:.2} s:", esc(&iso_time(time)), took.as_secs_f64());
            match st.last_result.as_str() {
                "ok" => badge(out, "ok"),
                error => {
                    badge(out, "error");
                    let _ = write!(out, " {}", esc(error));
                }
            }
        }
    }
    out.push_str("</dd></div></dl></section>\n");
}

/// Each router named by the spec or carrying a route: health, drain, routes carried.
fn routers(out: &mut String, st: &Status, health: &Health) {
    let mut carried: BTreeMap<Ipv4Addr, usize> = st.spec.all_hosts().hosts.iter().map(|h| (h.addr(), 0)).collect();
    let in_spec: BTreeSet<Ipv4Addr> = carried.keys().copied().collect();
    for route in st.tables.values().flat_map(|t| t.values()) {
        if let Some(ip) = route.router {
            *carried.entry(ip).or_default() += 1;
        }
    }
    for ip in health.drains.keys() {
        carried.entry(*ip).or_default();
    }
    out.push_str("<section aria-labelledby=\"routers-h\"><h2 id=\"routers-h\">Routers</h2>\n");
    if carried.is_empty() {
        out.push_str("<p class=\"empty\">no router in the spec</p></section>\n");
        return;
    }
    out.push_str(
        "<div class=\"scroll\"><table class=\"routers\"><thead><tr><th scope=\"col\">router</th>\
         <th scope=\"col\">health</th><th scope=\"col\">drained</th><th scope=\"col\" class=\"num\">routes carried</th></tr></thead><tbody>\n",
    );
    for (ip, routes) in &carried {
        let word = health.word(*ip);
        let drained = health.drains.get(ip);
        let class = if drained.is_some() { format!("{word} drained") } else { word.to_string() };
        let _ = write!(out, "<tr class=\"{class}\" data-router=\"{ip}\"><th scope=\"row\">{ip}");
        if !in_spec.contains(ip) {
            badge(out, "not in spec");
        }
        out.push_str("</th><td>");
        badge(out, word);
        out.push_str("</td><td>");
        match drained {
            None => out.push_str("no"),
            Some(d) => {
                badge(out, "drained");
                let _ = write!(out, " since <time>{}</time>", esc(&d.since));
                if !d.reason.is_empty() {
                    let _ = write!(out, ": {}", esc(&d.reason));
                }
            }
        }
        let _ = writeln!(out, "</td><td class=\"num\">{routes}</td></tr>");
    }
    out.push_str("</tbody></table></div></section>\n");
}

/// The last failovers, newest first.
fn failovers(out: &mut String, st: &Status) {
    out.push_str("<section aria-labelledby=\"failovers-h\"><h2 id=\"failovers-h\">Last failovers</h2>\n");
    if st.recent_failovers.is_empty() {
        out.push_str("<p class=\"empty\" id=\"no-failover\">no failover yet</p></section>\n");
        return;
    }
    out.push_str("<ol class=\"timeline\">\n");
    for f in st.recent_failovers.iter().rev() {
        let when = f.ended.map_or_else(|| "time unknown".to_string(), |t| esc(&iso_time(t)));
        let routers: Vec<String> = f.routers.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "<li><time>{when}</time> <span class=\"routers\">{}</span>: {} route(s) moved in {:.2} s</li>",
            esc(&routers.join(", ")),
            f.routes_moved,
            f.seconds,
        );
    }
    out.push_str("</ol></section>\n");
}

/// What the last plan reported that is not a change (only when there is something).
fn notices(out: &mut String, st: &Status) {
    if st.notices.is_empty() {
        return;
    }
    out.push_str("<section aria-labelledby=\"notices-h\"><h2 id=\"notices-h\">Notices</h2><ul class=\"notices\">\n");
    for notice in &st.notices {
        let _ = writeln!(out, "<li>{}</li>", esc(&notice.to_string()));
    }
    out.push_str("</ul></section>\n");
}

#[cfg(test)]
mod tests;
