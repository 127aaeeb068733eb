//! `/metrics`, the shipped alert rules and the Grafana dashboard pass Prometheus' own tools.
//!
//! Debian's `promtool` and `prometheus` (`make deps` installs them) against the real binary,
//! moto as EC2 and, for the cluster families, a real etcd. The rules and the dashboard are
//! those of `packaging/prometheus/`.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use vpcrouter_tests::daemon::Daemon;
use vpcrouter_tests::etcd::Etcd;
use vpcrouter_tests::http_client::get;
use vpcrouter_tests::{file_driven, free_port, repo_root, wait_for, Env};

const T: Duration = Duration::from_secs(30);
const CIDR: &str = "10.55.0.0/16";

fn packaged(name: &str) -> PathBuf {
    repo_root().join("packaging/prometheus").join(name)
}

/// A daemon that routed [`CIDR`] and failed it over, so that the histograms and the
/// labelled families have samples; `etcd` puts it in cluster mode. Returns the daemon
/// and the router that failed.
fn failed_over(env: &Env, etcd: Option<&Etcd>) -> anyhow::Result<(Daemon, String)> {
    let (rt1, rt2) = (env.world.tables[0].clone(), env.world.tables[1].clone());
    let spec = env.write("spec.json", &format!(r#"{{"{CIDR}": ["127.0.1.10", "127.0.2.10"]}}"#));
    let health = env.write("health.json", r#"{"failed": []}"#);
    let endpoints = etcd.map(Etcd::endpoints);
    let mut args: Vec<&str> = file_driven(&spec, &health).to_vec();
    if let Some(e) = &endpoints {
        args.extend(["--cluster-etcd", e.as_str(), "--instance-id", "a", "--cluster-lease-ttl", "3"]);
    }
    let d = env.daemon().args(&args).start()?;
    let first = env.wait_routed(&[&rt1, &rt2], CIDR, T).map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))?;
    env.write("health.json", &format!(r#"{{"failed": ["{first}"]}}"#));
    wait_for(T, "the failover to show in /metrics", || {
        let m = get(d.port, "/metrics", None).ok()?.body;
        m.lines().any(|l| l == "vpcrouter_failovers_total 1").then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}\n{}", env.world.dump(), d.log()))?;
    Ok((d, first))
}

/// Runs `promtool args`, with `stdin` as its input; returns (success, stdout + stderr).
fn promtool(args: &[&str], stdin: &str) -> anyhow::Result<(bool, String)> {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run promtool ({e}): `make deps` installs Debian's prometheus"))?;
    child.stdin.take().map(|mut i| i.write_all(stdin.as_bytes())).transpose()?;
    let out = child.wait_with_output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

/// The series names of a text exposition (`name` of `name{labels} value`).
fn series_names(text: &str) -> BTreeSet<String> {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).map(String::from).collect()
}

#[test]
fn promtool_check_metrics_accepts_live_metrics_without_lint_problems() -> anyhow::Result<()> {
    let env = Env::new()?;
    let etcd = Etcd::start()?;
    let (d, _) = failed_over(&env, Some(&etcd))?;
    wait_for(T, "cluster families", || {
        get(d.port, "/metrics", None).ok()?.body.contains("vpcrouter_cluster_role{role=\"leader\"} 1").then_some(())
    })?;
    let m = get(d.port, "/metrics", None)?;
    assert_eq!(m.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let names = series_names(&m.body);
    for family in [
        "vpcrouter_build_info",
        "vpcrouter_reconcile_duration_seconds_bucket",
        "vpcrouter_failover_seconds_count",
        "vpcrouter_ec2_call_duration_seconds_bucket",
        "vpcrouter_router_up",
        "vpcrouter_cidr_healthy_candidates",
        "vpcrouter_cluster_leader_info",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "process_virtual_memory_bytes",
    ] {
        assert!(names.contains(family), "{family} missing:\n{}", m.body);
    }
    let (ok, out) = promtool(&["check", "metrics"], &m.body)?;
    assert!(ok && out.trim().is_empty(), "promtool check metrics:\n{out}\n--- metrics ---\n{}", m.body);
    // The checker does find problems: a counter without `_total` and a duplicate family.
    let broken = m.body.replace("vpcrouter_reconciles_total", "vpcrouter_reconciles")
        + "# HELP vpcrouter_failed_hosts x\n# TYPE vpcrouter_failed_hosts gauge\nvpcrouter_failed_hosts 1\n";
    let (ok, out) = promtool(&["check", "metrics"], &broken)?;
    assert!(!ok && !out.trim().is_empty(), "{out}");

    // OpenMetrics for who asks for it; the same series.
    let om = get(d.port, "/metrics", Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"))?;
    assert!(om.header("content-type").is_some_and(|c| c.starts_with("application/openmetrics-text")), "{om:?}");
    assert!(om.body.ends_with("# EOF\n") && om.body.contains("# TYPE vpcrouter_build info\n"), "{}", om.body);
    assert!(series_names(&om.body).is_superset(&names.iter().filter(|n| !n.starts_with("process_")).cloned().collect()));
    Ok(())
}

#[test]
fn shipped_rules_pass_promtool_check_and_their_unit_tests() -> anyhow::Result<()> {
    let rules = packaged("vpcrouter-alerts.yml");
    let (ok, out) = promtool(&["check", "rules", rules.to_str().unwrap_or_default()], "")?;
    assert!(ok && out.contains("SUCCESS: 8 rules found"), "{out}");
    let tests = packaged("vpcrouter-alerts.test.yml");
    let (ok, out) = promtool(&["test", "rules", tests.to_str().unwrap_or_default()], "")?;
    assert!(ok && out.contains("SUCCESS"), "{out}");
    // Every alert has a severity, a summary, a description and a `for:`, and is tested.
    let text = std::fs::read_to_string(&rules)?;
    let test_text = std::fs::read_to_string(&tests)?;
    let alerts: Vec<&str> = text.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).collect();
    assert_eq!(alerts.len(), 8, "{alerts:?}");
    for key in ["for: ", "severity: ", "summary: ", "description: "] {
        assert_eq!(text.matches(key).count(), alerts.len(), "{key}");
    }
    for alert in &alerts {
        let cases = test_text.matches(&format!("alertname: {alert}\n")).count();
        assert!(cases >= 2, "{alert}: {cases} test case(s), want firing and not firing");
    }
    Ok(())
}

/// Every PromQL expression of the dashboard (its panels' targets).
fn dashboard_exprs(dash: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dash];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(e)) = map.get("expr") {
                    out.push(e.clone());
                }
                stack.extend(map.values());
            }
            Value::Array(list) => stack.extend(list),
            _ => {}
        }
    }
    out
}

/// The metric names an expression refers to: identifiers of vpcrouter's and the process
/// families, and Prometheus' `up`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    for c in expr.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        if word.starts_with("vpcrouter_") || word.starts_with("process_") || (word == "up" && c == '{') {
            names.insert(word.clone());
        }
        word.clear();
    }
    names
}

#[test]
fn dashboard_is_grafana_json_and_queries_only_exported_metrics() -> anyhow::Result<()> {
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(packaged("grafana-dashboard.json"))?)?;
    assert!(dash["title"].is_string() && dash["uid"] == "vpcrouter" && dash["schemaVersion"].as_u64() >= Some(30));
    let vars: Vec<&str> =
        dash["templating"]["list"].as_array().into_iter().flatten().filter_map(|v| v["name"].as_str()).collect();
    assert_eq!(vars, ["datasource", "job", "instance"]);
    let panels = dash["panels"].as_array().cloned().unwrap_or_default();
    let ids: BTreeSet<u64> = panels.iter().filter_map(|p| p["id"].as_u64()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty() && p["gridPos"]["w"].as_u64().is_some(), "{p}");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{p}");
        for t in &targets {
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()) && t["refId"].is_string(), "{t}");
        }
    }
    let titles = panels.iter().filter_map(|p| p["title"].as_str()).collect::<Vec<_>>().join("|");
    for want in
        ["routes per route table", "Failover time", "Reconcile duration", "EC2", "Cluster role", "Memory", "CPU"]
    {
        assert!(titles.contains(want), "no panel on {want}: {titles}");
    }
    let wanted: BTreeSet<String> = dashboard_exprs(&dash).iter().flat_map(|e| metric_names(e)).collect();
    assert!(wanted.len() >= 30, "{wanted:?}");

    let env = Env::new()?;
    let etcd = Etcd::start()?;
    let (d, _) = failed_over(&env, Some(&etcd))?;
    let live = wait_for(T, "every family", || {
        let names = series_names(&get(d.port, "/metrics", None).ok()?.body);
        names.contains("vpcrouter_cluster_leader_info").then_some(names)
    })?;
    // The families of prefix-list mode, from a daemon of its own.
    let lists_env = Env::new()?;
    let spec = lists_env.write("spec.json", r#"{"10.55.0.0/16": ["127.0.1.10"], "10.56.0.0/16": ["127.0.1.10"]}"#);
    let health = lists_env.write("health.json", r#"{"failed": []}"#);
    let lists = lists_env.daemon().args([&file_driven(&spec, &health)[..], &["--prefix-lists"]].concat()).start()?;
    let list_names = wait_for(T, "prefix-list families", || {
        let names = series_names(&get(lists.port, "/metrics", None).ok()?.body);
        names.contains("vpcrouter_prefix_list_entries").then_some(names)
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", lists.log()))?;
    let missing: Vec<_> =
        wanted.iter().filter(|n| *n != "up" && !live.contains(*n) && !list_names.contains(*n)).collect();
    assert!(missing.is_empty(), "the dashboard queries {missing:?}, which /metrics does not have:\n{live:?}");
    Ok(())
}

/// A Prometheus server on a free loopback port with its own config and storage, killed
/// on drop.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target_port: u16, rules: &Path) -> anyhow::Result<Prometheus> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: vpcrouter\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n",
                rules.display()
            ),
        )?;
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot run prometheus ({e}): `make deps` installs Debian's prometheus"))?;
        let p = Prometheus { child, port, _dir: dir };
        wait_for(T, "prometheus to be ready", || get(p.port, "/-/ready", None).ok().filter(|r| r.status == 200))
            .map_err(|e| anyhow::anyhow!("{e}\n{}", p.log()))?;
        Ok(p)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>`'s `data`, if the answer is a success.
    fn api(&self, path: &str) -> Option<Value> {
        let v = get(self.port, &format!("/api/v1/{path}"), None).ok()?.json().ok()?;
        (v["status"] == "success").then(|| v["data"].clone())
    }

    /// An instant query's result vector.
    fn query(&self, promql: &str) -> Option<Vec<Value>> {
        self.api(&format!("query?query={}", percent_encode(promql)))?["result"].as_array().cloned()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn prometheus_scrapes_the_daemon_and_evaluates_the_shipped_rules() -> anyhow::Result<()> {
    let env = Env::new()?;
    let (d, failed) = failed_over(&env, None)?;
    let prom = Prometheus::start(d.port, &packaged("vpcrouter-alerts.yml"))?;
    let with_log = |e: anyhow::Error| anyhow::anyhow!("{e}\n--- prometheus ---\n{}", prom.log());

    let build = wait_for(T, "vpcrouter_build_info in Prometheus", || {
        prom.query("vpcrouter_build_info").filter(|r| !r.is_empty())
    })
    .map_err(with_log)?;
    assert_eq!(build.len(), 1, "{build:?}");
    let metric = &build[0]["metric"];
    assert_eq!(metric["version"], env!("CARGO_PKG_VERSION"), "{build:?}");
    assert_eq!((metric["job"].as_str(), build[0]["value"][1].as_str()), (Some("vpcrouter"), Some("1")), "{build:?}");
    let up = prom.query("up{job=\"vpcrouter\"}").unwrap_or_default();
    assert_eq!(up.first().and_then(|s| s["value"][1].as_str()), Some("1"), "{up:?}");
    let targets = prom.api("targets").unwrap_or_default();
    let target = &targets["activeTargets"][0];
    assert_eq!((target["health"].as_str(), target["lastError"].as_str()), (Some("up"), Some("")), "{targets}");
    // The failover as Prometheus sees it.
    let down = prom.query(&format!("vpcrouter_router_up{{router=\"{failed}\"}}")).unwrap_or_default();
    assert_eq!(down.first().and_then(|s| s["value"][1].as_str()), Some("0"), "{down:?}");
    let failovers = prom.query("vpcrouter_failover_seconds_count").unwrap_or_default();
    assert_eq!(failovers.first().and_then(|s| s["value"][1].as_str()), Some("1"), "{failovers:?}");

    // The shipped rules are loaded and evaluate without errors; the router alert is
    // pending (its `for:` is longer than this test).
    let rules = wait_for(T, "every rule evaluated", || {
        let data = prom.api("rules")?;
        let rules: Vec<Value> =
            data["groups"].as_array()?.iter().flat_map(|g| g["rules"].as_array().cloned()).flatten().collect();
        rules.iter().all(|r| r["lastEvaluation"].as_str().is_some_and(|t| !t.starts_with("0001"))).then_some(rules)
    })
    .map_err(with_log)?;
    assert_eq!(rules.len(), 8, "{rules:?}");
    for r in &rules {
        assert_eq!((r["name"].as_str(), r["health"].as_str()), (r["name"].as_str(), Some("ok")), "{r}");
    }
    let alerts = wait_for(T, "VpcrouterRouterDown pending", || {
        let alerts = prom.api("alerts")?["alerts"].as_array()?.clone();
        alerts.iter().any(|a| a["labels"]["alertname"] == "VpcrouterRouterDown").then_some(alerts)
    })
    .map_err(with_log)?;
    let router_down: Vec<_> = alerts.iter().filter(|a| a["labels"]["alertname"] == "VpcrouterRouterDown").collect();
    assert_eq!(router_down.len(), 1, "{alerts:?}");
    assert_eq!(router_down[0]["labels"]["router"], failed.as_str(), "{alerts:?}");
    assert!(
        !alerts.iter().any(|a| a["labels"]["alertname"] == "VpcrouterCidrWithoutHealthyRouter"),
        "the other router is healthy: {alerts:?}"
    );

    // Every query of the dashboard is valid PromQL for this Prometheus.
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(packaged("grafana-dashboard.json"))?)?;
    for expr in dashboard_exprs(&dash) {
        let q = expr.replace("$__rate_interval", "1m").replace("$job", "vpcrouter").replace("$instance", ".*");
        if prom.query(&q).is_none() {
            let answer = get(prom.port, &format!("/api/v1/query?query={}", percent_encode(&q)), None)?;
            panic!("the dashboard's {expr:?} fails in Prometheus: {}", answer.body);
        }
    }
    drop(d);
    Ok(())
}
