use super::*;
use crate::document::tests::{cluster_status, ip, snapshot};
use vpcrouter_planner::model::Family as AddrFamily;

/// The value of the sample `series` (name and labels exactly as written), if there is one.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn render(snap: Snapshot, metrics: &Metrics) -> String {
    encode(snap, metrics, None, Exposition::Text)
}

/// What the text format 0.0.4 requires (and `promtool check metrics` checks): each family
/// has one HELP and one TYPE line before its samples, the samples carry the family's name
/// (plus `_bucket`/`_sum`/`_count` for histograms), counters end in `_total`, every value
/// is a number, and nothing of OpenMetrics (`# EOF`, `# UNIT`) is left.
fn assert_valid_text(text: &str) {
    let mut seen = BTreeSet::new();
    let mut family: Option<(String, String)> = None;
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(seen.insert(name.to_string()), "second TYPE for {name}:\n{text}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{l}");
            assert!(kind != "counter" || name.ends_with("_total"), "{l}");
            family = Some((name.to_string(), kind.to_string()));
        } else if let Some(rest) = l.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(!seen.contains(name), "HELP after TYPE for {name}");
        } else {
            assert!(!l.starts_with('#'), "{l}");
            let (name, kind) = family.as_ref().unwrap_or_else(|| panic!("sample before any TYPE: {l}"));
            let series_name = l.split(['{', ' ']).next().unwrap();
            let ok = match kind.as_str() {
                "histogram" => ["_bucket", "_sum", "_count"].iter().any(|s| series_name == format!("{name}{s}")),
                _ => series_name == name,
            };
            assert!(ok, "{l} is not of family {name}");
            assert!(l.rsplit(' ').next().unwrap().parse::<f64>().is_ok(), "{l}");
        }
    }
}

#[test]
fn every_state_family_keeps_its_name_labels_and_type() {
    let mut snap = snapshot();
    snap.status.weights.insert("rtb-1".into(), 31);
    snap.status.list_changes = 3;
    snap.status.lists.push(vpcrouter_engine::status::ListView {
        group: "ipv4-10.0.0.2".into(),
        family: AddrFamily::V4,
        hosts: vec![ip("10.0.0.2")],
        members: vec!["10.55.0.0/16".into(), "10.56.0.0/16".into()],
        list_id: Some("pl-1".into()),
        name: "vpcrouter-x-ipv4-10.0.0.2".into(),
        max_entries: 10,
        version: 3,
    });
    let text = render(snap, &Metrics::default());
    assert_valid_text(&text);
    for (series, value) in [
        ("vpcrouter_build_info{version=\"".to_string() + crate::VERSION + "\"}", 1.0),
        ("vpcrouter_plugin_info{plugin=\"file\",kind=\"health\",version=\"0.1.0\"}".into(), 1.0),
        ("vpcrouter_reconciles_total".into(), 3.0),
        ("vpcrouter_reconcile_errors_total".into(), 0.0),
        ("vpcrouter_route_changes_total{kind=\"create\"}".into(), 2.0),
        ("vpcrouter_route_changes_total{kind=\"replace\"}".into(), 1.0),
        ("vpcrouter_route_changes_total{kind=\"delete\"}".into(), 0.0),
        ("vpcrouter_ec2_calls_total{operation=\"DescribeVpcs\"}".into(), 4.0),
        ("vpcrouter_ec2_errors_total{operation=\"DescribeVpcs\"}".into(), 1.0),
        ("vpcrouter_ec2_throttled_total{operation=\"DescribeVpcs\"}".into(), 1.0),
        ("vpcrouter_ec2_throttled_total{operation=\"ReplaceRoute\"}".into(), 0.0),
        ("vpcrouter_ec2_call_rate_limit{kind=\"read\"}".into(), 10.0),
        ("vpcrouter_ec2_call_rate_limit{kind=\"write\"}".into(), 5.0),
        ("vpcrouter_ec2_calls_in_flight".into(), 0.0),
        ("vpcrouter_health_checks_total{plugin=\"file\"}".into(), 7.0),
        ("vpcrouter_health_check_failures_total{plugin=\"file\"}".into(), 2.0),
        ("vpcrouter_failovers_total".into(), 0.0),
        ("vpcrouter_failed_hosts".into(), 1.0),
        ("vpcrouter_questionable_hosts".into(), 1.0),
        ("vpcrouter_last_reconcile_duration_seconds".into(), 0.25),
        ("vpcrouter_last_reconcile_timestamp_seconds".into(), 1_795_000_060.0),
        ("vpcrouter_prefix_list_changes_total".into(), 3.0),
        ("vpcrouter_route_table_weight{route_table=\"rtb-1\"}".into(), 31.0),
        ("vpcrouter_managed_routes{route_table=\"rtb-1\"}".into(), 1.0),
        ("vpcrouter_prefix_list_entries{list=\"pl-1\",group=\"ipv4-10.0.0.2\"}".into(), 2.0),
        // 10.0.0.1 failed; 10.0.0.3 is questionable but in no route.
        ("vpcrouter_router_up{router=\"10.0.0.1\"}".into(), 0.0),
        ("vpcrouter_router_up{router=\"10.0.0.2\"}".into(), 1.0),
        ("vpcrouter_cidr_healthy_candidates{cidr=\"10.55.0.0/16\"}".into(), 1.0),
    ] {
        assert_eq!(sample(&text, &series), Some(value), "{series}:\n{text}");
    }
    for (family, kind) in [
        ("vpcrouter_build_info", "gauge"),
        ("vpcrouter_reconciles_total", "counter"),
        ("vpcrouter_route_changes_total", "counter"),
        ("vpcrouter_ec2_calls_total", "counter"),
        ("vpcrouter_failed_hosts", "gauge"),
        ("vpcrouter_router_up", "gauge"),
        ("vpcrouter_reconcile_duration_seconds", "histogram"),
        ("vpcrouter_failover_seconds", "histogram"),
        ("vpcrouter_ec2_call_duration_seconds", "histogram"),
    ] {
        assert!(text.lines().any(|l| l == format!("# TYPE {family} {kind}")), "{family} {kind}:\n{text}");
    }
    assert!(!text.contains("plugin=\"http\"}"), "only health plugins have check counters:\n{text}");
    assert!(!text.contains("router=\"10.0.0.3\""), "{text}");
    assert!(!text.contains("vpcrouter_cluster") && !text.contains("process_"), "{text}");
}

#[test]
fn histograms_are_observed_and_shared_by_clones() {
    let m = Metrics::default();
    let shared = m.clone();
    shared.failover_seconds.observe(0.3);
    shared.reconcile_seconds.observe(0.015);
    m.observe_call("ReplaceRoute", 0.1);
    m.observe_call("ReplaceRoute", 0.12);
    let text = render(snapshot(), &m);
    assert_valid_text(&text);
    for (series, value) in [
        ("vpcrouter_failover_seconds_count", 1.0),
        ("vpcrouter_failover_seconds_bucket{le=\"0.4\"}", 1.0),
        ("vpcrouter_failover_seconds_bucket{le=\"0.2\"}", 0.0),
        ("vpcrouter_reconcile_duration_seconds_bucket{le=\"0.01\"}", 0.0),
        ("vpcrouter_reconcile_duration_seconds_bucket{le=\"0.02\"}", 1.0),
        ("vpcrouter_reconcile_duration_seconds_bucket{le=\"+Inf\"}", 1.0),
        ("vpcrouter_reconcile_duration_seconds_sum", 0.015),
        ("vpcrouter_ec2_call_duration_seconds_count{operation=\"ReplaceRoute\"}", 2.0),
        ("vpcrouter_ec2_call_duration_seconds_bucket{operation=\"ReplaceRoute\",le=\"0.16\"}", 2.0),
        ("vpcrouter_ec2_call_duration_seconds_bucket{operation=\"ReplaceRoute\",le=\"0.08\"}", 0.0),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series}:\n{text}");
    }
}

#[test]
fn cluster_families_only_in_cluster_mode() {
    let mut snap = snapshot();
    snap.cluster = Some(cluster_status());
    let text = render(snap, &Metrics::default());
    assert_valid_text(&text);
    for (series, value) in [
        ("vpcrouter_cluster_role{role=\"leader\"}", 0.0),
        ("vpcrouter_cluster_role{role=\"follower\"}", 1.0),
        ("vpcrouter_cluster_role{role=\"disconnected\"}", 0.0),
        ("vpcrouter_cluster_leader_info{leader=\"a\"}", 1.0),
        ("vpcrouter_cluster_members", 3.0),
        ("vpcrouter_cluster_health_reports", 1.0),
        ("vpcrouter_cluster_leader_changes_total", 2.0),
        ("vpcrouter_etcd_requests_total", 40.0),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series}:\n{text}");
    }
    assert!(text.contains("# TYPE vpcrouter_cluster_leader_changes_total counter\n"), "{text}");
    // Without a leader the info family is left out, the rest stays.
    let mut snap = snapshot();
    snap.cluster = Some(vpcrouter_cluster::ClusterStatus { leader: None, ..cluster_status() });
    let text = render(snap, &Metrics::default());
    assert_valid_text(&text);
    assert!(!text.contains("vpcrouter_cluster_leader_info") && text.contains("vpcrouter_cluster_members 3"), "{text}");
}

#[test]
fn label_values_are_escaped() {
    let mut snap = snapshot();
    snap.cluster = Some(vpcrouter_cluster::ClusterStatus { leader: Some("a\"b\\c\nd".into()), ..cluster_status() });
    let text = render(snap, &Metrics::default());
    assert_eq!(sample(&text, r#"vpcrouter_cluster_leader_info{leader="a\"b\\c\nd"}"#), Some(1.0), "{text}");
}

#[test]
fn process_families_have_the_standard_names() {
    let p = ProcessStats {
        cpu_seconds: 1.5,
        resident_bytes: 8_192_000,
        virtual_bytes: 50_000_000,
        start_time_seconds: 1_795_000_000.5,
        open_fds: 12,
        max_fds: Some(1024),
    };
    let text = encode(snapshot(), &Metrics::default(), Some(p.clone()), Exposition::Text);
    assert_valid_text(&text);
    for (series, value) in [
        ("process_cpu_seconds_total", 1.5),
        ("process_resident_memory_bytes", 8_192_000.0),
        ("process_virtual_memory_bytes", 50_000_000.0),
        ("process_start_time_seconds", 1_795_000_000.5),
        ("process_open_fds", 12.0),
        ("process_max_fds", 1024.0),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series}:\n{text}");
    }
    assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"), "{text}");
    let unlimited =
        encode(snapshot(), &Metrics::default(), Some(ProcessStats { max_fds: None, ..p }), Exposition::Text);
    assert!(!unlimited.contains("process_max_fds") && unlimited.contains("process_open_fds 12"), "{unlimited}");
}

#[test]
fn openmetrics_on_request_with_families_named_without_suffixes() {
    // What Prometheus 2.x sends.
    let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
                      text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    assert_eq!(Exposition::negotiate(Some(prometheus)), Exposition::OpenMetrics);
    for accept in [None, Some("*/*"), Some("text/plain"), Some("text/plain;version=0.0.4")] {
        assert_eq!(Exposition::negotiate(accept), Exposition::Text, "{accept:?}");
    }
    assert_eq!(Exposition::Text.content_type(), "text/plain; version=0.0.4; charset=utf-8");
    assert!(Exposition::OpenMetrics.content_type().starts_with("application/openmetrics-text; version=1.0.0"));
    let mut snap = snapshot();
    snap.cluster = Some(cluster_status());
    let om = encode(snap, &Metrics::default(), None, Exposition::OpenMetrics);
    assert!(om.ends_with("# EOF\n"), "{om}");
    for line in [
        "# TYPE vpcrouter_reconciles counter",
        "vpcrouter_reconciles_total 3",
        "# TYPE vpcrouter_build info",
        "# TYPE vpcrouter_cluster_leader info",
        "vpcrouter_cluster_leader_info{leader=\"a\"} 1",
        "# TYPE vpcrouter_failed_hosts gauge",
    ] {
        assert!(om.lines().any(|l| l == line), "missing {line}:\n{om}");
    }
    // The same series in both formats.
    let series = |t: &str| -> BTreeSet<String> {
        t.lines().filter(|l| !l.starts_with('#')).map(|l| l.rsplit_once(' ').unwrap().0.to_string()).collect()
    };
    let mut snap = snapshot();
    snap.cluster = Some(cluster_status());
    assert_eq!(series(&om), series(&render(snap, &Metrics::default())));
}

#[test]
fn each_notifier_has_its_three_outcomes_even_at_zero() {
    let mut snap = snapshot();
    let text = render(snap.clone(), &Metrics::default());
    assert!(!text.contains("vpcrouter_notifications_total"), "left out without notifiers:\n{text}");
    snap.notifiers = vec![
        vpcrouter_notify::NotifierStatus {
            name: "webhook".into(),
            delivered: 5,
            failed: 2,
            dropped: 1,
            ..Default::default()
        },
        vpcrouter_notify::NotifierStatus { name: "sns".into(), ..Default::default() },
    ];
    let text = render(snap, &Metrics::default());
    assert_valid_text(&text);
    assert!(text.contains("# TYPE vpcrouter_notifications_total counter\n"), "{text}");
    assert!(text.contains("# HELP vpcrouter_notifications_total Notification events"), "{text}");
    for (notifier, outcome, value) in [
        ("webhook", "delivered", 5.0),
        ("webhook", "failed", 2.0),
        ("webhook", "dropped", 1.0),
        ("sns", "delivered", 0.0),
        ("sns", "failed", 0.0),
        ("sns", "dropped", 0.0),
    ] {
        let series = format!("vpcrouter_notifications_total{{notifier=\"{notifier}\",outcome=\"{outcome}\"}}");
        assert_eq!(sample(&text, &series), Some(value), "{series}:\n{text}");
    }
}
