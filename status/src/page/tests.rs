use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;
use vpcrouter_drains::Drain;
use vpcrouter_engine::status::{FailoverSummary, Status, TableRoute};
use vpcrouter_planner::model::{Cidr, Dest, ManagedTable};

use super::*;
use crate::document::tests::{ip, snapshot};

fn info() -> ServerInfo {
    let mut params = serde_json::Map::new();
    params.insert("region_name".into(), json!("us-east-1"));
    params.insert("vpc_id".into(), json!("vpc-1"));
    ServerInfo { version_line: "v".into(), start_time: UNIX_EPOCH, params, ignore_routes: vec![] }
}

fn dest(cidr: &str) -> Dest {
    Dest::Cidr(Cidr::parse(cidr).expect("a CIDR"))
}

fn route(router: &str) -> TableRoute {
    TableRoute { router: Some(ip(router)), message: "Present".into(), ..TableRoute::default() }
}

fn table(id: &str, zone: Option<&str>, gateway: Option<&str>) -> ManagedTable {
    ManagedTable { id: id.into(), main: false, zone: zone.map(Into::into), gateway: gateway.map(Into::into) }
}

/// Two CIDRs on 10.0.0.1/10.0.0.2 (failed: .1), three tables (one a gateway table).
fn two_tables() -> Snapshot {
    let mut snap = snapshot();
    let st = &mut snap.status;
    st.spec = vpcrouter_plugin_api::spec::parse_json(
        r#"{"10.55.0.0/16": ["10.0.0.1", "10.0.0.2"], "10.66.0.0/16": ["10.0.0.2"]}"#,
    )
    .unwrap();
    st.managed = vec![
        table("rtb-a", Some("az-a"), None),
        table("rtb-b", Some("az-b"), None),
        table("rtb-gw", None, Some("igw-1")),
    ];
    st.tables.clear();
    st.tables.entry("rtb-a".into()).or_default().insert(dest("10.55.0.0/16"), route("10.0.0.1"));
    st.tables.entry("rtb-b".into()).or_default().insert(dest("10.55.0.0/16"), route("10.0.0.2"));
    st.tables.entry("rtb-gw".into()).or_default().insert(dest("10.55.0.0/16"), route("10.0.0.2"));
    for rtb in ["rtb-a", "rtb-b"] {
        st.tables.entry(rtb.into()).or_default().insert(dest("10.66.0.0/16"), route("10.0.0.2"));
    }
    snap
}

/// The `<tr>` of the matrix row of `cidr`, up to its end.
fn matrix_row<'a>(page: &'a str, cidr: &str) -> &'a str {
    let start = page.find(&format!("<tr data-dest=\"{cidr}\">")).unwrap_or_else(|| panic!("no row {cidr}:\n{page}"));
    let row = &page[start..];
    &row[..row.find("</tr>").expect("the row ends")]
}

fn cells(row: &str) -> Vec<&str> {
    row.split("<td").skip(1).collect()
}

#[test]
fn the_matrix_has_a_row_per_cidr_and_a_column_per_managed_table() {
    let page = page(&info(), &two_tables());
    let head = &page[page.find("<thead>").unwrap()..page.find("</thead>").unwrap()];
    assert_eq!(head.matches("data-rtb=").count(), 3, "{head}");
    for (id, zone) in [("rtb-a", "az-a"), ("rtb-b", "az-b"), ("rtb-gw", "no zone")] {
        assert!(head.contains(&format!("<span class=\"rtb\">{id}</span><span class=\"zone\">{zone}</span>")), "{head}");
    }
    assert!(head.contains("class=\"gateway\" data-rtb=\"rtb-gw\"") && head.contains(">gateway igw-1<"), "{head}");
    assert_eq!(page.matches("<tr data-dest=").count(), 2);
    let row = matrix_row(&page, "10.66.0.0/16");
    assert_eq!(cells(row).len(), 3);
    assert!(cells(row)[0].contains(">10.0.0.2") && cells(row)[2].starts_with(" class=\"none\">no route"), "{row}");
    assert!(row.contains("<span class=\"candidates\">10.0.0.2</span>"), "{row}");
}

#[test]
fn cells_on_failed_questionable_or_drained_routers_say_so_in_words() {
    let mut snap = two_tables();
    snap.status.questionable = Default::default();
    let page = page(&info(), &snap);
    let row = matrix_row(&page, "10.55.0.0/16");
    let first = cells(row)[0];
    assert!(first.starts_with(" class=\"failed differs\" data-router=\"10.0.0.1\""), "{row}");
    assert!(first.contains("<span class=\"badge failed\">failed</span>"), "a word, not colour alone: {row}");
    assert!(cells(row)[1].starts_with(" class=\"ok\" data-router=\"10.0.0.2\""), "{row}");
    assert!(row.contains("1 table(s) differ"), "{row}");

    snap.status.failed = Default::default();
    snap.status.questionable = [ip("10.0.0.1")].into();
    snap.drains = vec![Drain { ip: ip("10.0.0.2"), since: "2026-12-01T20:00:00.000Z".into(), reason: "kernel".into() }];
    let page = super::page(&info(), &snap);
    let row = matrix_row(&page, "10.55.0.0/16");
    assert!(cells(row)[0].contains(">questionable</span>"), "{row}");
    assert!(cells(row)[1].starts_with(" class=\"drained\"") && cells(row)[1].contains(">drained</span>"), "{row}");
    let routers = &page[page.find("class=\"routers\"").unwrap()..];
    assert!(
        routers.contains("<tr class=\"healthy drained\" data-router=\"10.0.0.2\">")
            && routers.contains(" since <time>2026-12-01T20:00:00.000Z</time>: kernel</td><td class=\"num\">4</td>"),
        "{routers}"
    );
    assert!(routers.contains("<tr class=\"questionable\" data-router=\"10.0.0.1\">"), "{routers}");
}

#[test]
fn every_value_is_escaped() {
    let mut snap = two_tables();
    let evil = "<script>alert(\"x\")</script>&'";
    snap.status.managed[0].zone = Some(evil.into());
    snap.status.last_result = evil.into();
    snap.drains = vec![Drain { ip: ip("10.0.0.2"), since: evil.into(), reason: evil.into() }];
    let mut info = info();
    info.params.insert("vpc_id".into(), json!(evil));
    let page = page(&info, &snap);
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(page.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"), "{page}");
    assert_eq!(page.matches("<script").count(), 1, "only the page's own script: {page}");
}

#[test]
fn the_page_is_one_self_contained_document_with_relative_links() {
    let page = page(&info(), &two_tables());
    assert!(page.starts_with("<!DOCTYPE html>") && page.trim_end().ends_with("</html>"));
    assert!(page.contains("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"));
    assert!(page.contains("<link rel=\"stylesheet\" href=\"_ui/page.css\">"));
    assert!(page.contains("<script src=\"_ui/page.js\" defer></script>"));
    assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("style="), "{page}");
    for link in LINKS {
        assert!(page.contains(&format!("<a href=\"{link}\">/{link}</a>")), "{link}");
    }
    assert_eq!(page.matches("<main id=\"main\">").count(), 1);
    assert!(page.contains("<dd id=\"vpc\">vpc-1</dd>") && page.contains("<dd>us-east-1</dd>"), "{page}");
    assert!(page.contains("<dt>mode</dt><dd>single instance</dd>"), "{page}");
    assert!(page.contains("in 0.25 s: <span class=\"badge ok\">ok</span>"), "{page}");
    assert!(!STYLE.is_empty() && SCRIPT.contains("DOMParser") && SCRIPT.contains("'main'"));
    assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
}

#[test]
fn empty_states_are_said() {
    let mut snap = snapshot();
    snap.status = Status::default();
    let page = page(&info(), &snap);
    assert!(page.contains("<p class=\"empty\" id=\"no-routes\">no route in the spec</p>"), "{page}");
    assert!(page.contains("no router in the spec"), "{page}");
    assert!(page.contains("<p class=\"empty\" id=\"no-failover\">no failover yet</p>"), "{page}");
    assert!(page.contains("<dd id=\"reconcile\">none yet</dd>"), "{page}");
    snap.status.spec = vpcrouter_plugin_api::spec::parse_json(r#"{"10.55.0.0/16": ["10.0.0.1"]}"#).unwrap();
    let page = super::page(&info(), &snap);
    assert!(page.contains("no managed route table yet"), "{page}");
    assert!(page.contains("<tr class=\"healthy\" data-router=\"10.0.0.1\">"), "{page}");
}

#[test]
fn failovers_are_listed_newest_first_and_the_cluster_role_is_shown() {
    let mut snap = two_tables();
    for (i, router) in ["10.0.0.1", "10.0.0.2"].iter().enumerate() {
        snap.status.remember_failover(FailoverSummary {
            routers: [ip(router)].into(),
            routes_moved: 2 + i as u64,
            seconds: 0.5,
            ended: Some(UNIX_EPOCH + Duration::from_secs(1_795_000_000 + 60 * i as u64)),
            ..Default::default()
        });
    }
    snap.cluster = Some(crate::document::tests::cluster_status());
    let page = page(&info(), &snap);
    let newest = page.find("<li><time>2026-11-18T11:07:40.000Z</time> <span class=\"routers\">10.0.0.2</span>: 3 route(s) moved in 0.50 s</li>");
    let older =
        page.find("<li><time>2026-11-18T11:06:40.000Z</time> <span class=\"routers\">10.0.0.1</span>: 2 route(s)");
    assert!(newest.is_some() && older.is_some() && newest < older, "{page}");
    assert!(!page.contains("no failover yet"));
    assert!(page.contains("<dd id=\"role\">follower <span class=\"dim\">as b</span></dd>"), "{page}");
    assert!(page.contains("<dd id=\"leader\">a</dd>"), "{page}");
}
