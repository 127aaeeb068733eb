//! End to end: routes follow the spec and the routers' health; signals, plugins and errors behave as documented.
//!
//! Real binary, real plugin libraries, moto as EC2.

use std::time::Duration;

use vpcrouter_tests::daemon::run_once;
use vpcrouter_tests::file_driven;
use vpcrouter_tests::{wait_for, Env};

const T: Duration = Duration::from_secs(20);

fn tables(env: &Env) -> Vec<&str> {
    env.world.tables.iter().map(String::as_str).collect()
}

#[test]
fn configfile_creates_routes_with_one_router_across_tables_and_follows_edits() -> anyhow::Result<()> {
    let env = Env::new()?;
    let (rt1, rt2, rt3) = (env.world.tables[0].clone(), env.world.tables[1].clone(), env.world.tables[2].clone());
    let spec =
        env.write("spec.json", r#"{"10.55.0.0/16": ["127.0.1.10", "127.0.2.10"], "10.66.0.0/24": ["127.0.1.11"]}"#);
    let d = env.daemon().args(["-m", "configfile", "-f", spec.to_str().unwrap(), "-H", "always"]).start()?;
    let r = env.wait_routed(&[&rt1, &rt2], "10.55.0.0/16", T)?;
    assert!(r == "127.0.1.10" || r == "127.0.2.10", "{r}");
    assert_eq!(env.wait_routed(&[&rt1, &rt2], "10.66.0.0/24", T)?, "127.0.1.11");
    // Untouched: local and IGW routes, and the table of a subnet without routers.
    let routes = env.world.routes(&rt1)?;
    assert_eq!(routes.get("0.0.0.0/0"), Some(&env.world.igw));
    assert_eq!(routes.get("127.0.0.0/16").map(String::as_str), Some("local"));
    assert!(!env.world.routes(&rt3)?.contains_key("10.55.0.0/16"));
    assert!(!env.world.routes(&env.world.main_table)?.contains_key("10.55.0.0/16"));

    // Edit: change hosts of one CIDR, remove another, add a third (atomic rename).
    env.write("spec.json", r#"{"10.55.0.0/16": ["127.0.1.11"], "10.77.0.0/16": ["127.0.2.10"]}"#);
    let moved = vec![Some("127.0.1.11".to_string()); 2];
    wait_for(T, "10.55 to move to 127.0.1.11", || {
        (env.world.targets(&[&rt1, &rt2], "10.55.0.0/16").ok()? == moved).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", env.world.dump()))?;
    assert_eq!(env.wait_routed(&[&rt1, &rt2], "10.77.0.0/16", T)?, "127.0.2.10");
    wait_for(T, "10.66 deleted", || {
        (env.world.targets(&[&rt1, &rt2], "10.66.0.0/24").ok()? == vec![None, None]).then_some(())
    })?;
    assert!(d.log().contains("route changed: replaced"), "{}", d.log());
    Ok(())
}

#[test]
fn stale_instance_routes_are_deleted_unless_ignored() -> anyhow::Result<()> {
    let env = Env::new()?;
    let (rt1, rt3) = (env.world.tables[0].clone(), env.world.tables[2].clone());
    env.world.add_instance_route(&rt1, "10.99.0.0/16", "127.0.1.11")?;
    env.world.add_instance_route(&rt1, "10.98.0.0/16", "127.0.1.11")?;
    env.world.add_instance_route(&rt3, "10.97.0.0/16", "127.0.3.10")?;
    let spec = env.write("spec.json", r#"{"10.55.0.0/16": ["127.0.1.10"]}"#);
    let _d = env
        .daemon()
        .args([
            "-m",
            "configfile",
            "-f",
            spec.to_str().unwrap(),
            "-H",
            "always",
            "--ignore_routes",
            "10.98.0.0/16,0.0.0.0/0",
        ])
        .start()?;
    env.wait_routed(&[&rt1], "10.55.0.0/16", T)?;
    wait_for(T, "10.99 deleted", || (!env.world.routes(&rt1).ok()?.contains_key("10.99.0.0/16")).then_some(()))?;
    let routes = env.world.routes(&rt1)?;
    assert_eq!(routes.get("10.98.0.0/16").map(String::as_str), Some("127.0.1.11"), "protected route kept");
    assert_eq!(routes.get("0.0.0.0/0"), Some(&env.world.igw));
    assert_eq!(
        env.world.routes(&rt3)?.get("10.97.0.0/16").map(String::as_str),
        Some("127.0.3.10"),
        "unmanaged table untouched"
    );
    Ok(())
}

#[test]
fn invalid_file_keeps_the_last_good_spec() -> anyhow::Result<()> {
    let env = Env::new()?;
    let rt1 = env.world.tables[0].clone();
    let spec = env.write("spec.json", r#"{"10.55.0.0/16": ["127.0.1.10"]}"#);
    let d = env.daemon().args(["-m", "configfile", "-f", spec.to_str().unwrap(), "-H", "always"]).start()?;
    env.wait_routed(&[&rt1], "10.55.0.0/16", T)?;
    env.write("spec.json", r#"{"10.55.0.0/16": ["127.0.1.10"], "10.1.0.1/16": ["127.0.1.10"]}"#);
    d.wait_log("10.1.0.1/16", T)?;
    env.write("spec.json", "{ this is not json");
    d.wait_log("not valid JSON", T)?;
    std::fs::remove_file(&spec)?;
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(env.world.routes(&rt1)?.get("10.55.0.0/16").map(String::as_str), Some("127.0.1.10"));
    // An empty spec never wipes the routes either.
    env.write("spec.json", "{}");
    d.wait_log("empty route spec", T)?;
    assert!(env.world.routes(&rt1)?.contains_key("10.55.0.0/16"));
    Ok(())
}

#[test]
fn dry_run_changes_nothing() -> anyhow::Result<()> {
    let env = Env::new()?;
    let before = env.world.route_count()?;
    let spec = env.write("spec.json", r#"{"10.55.0.0/16": ["127.0.1.10"]}"#);
    let d =
        env.daemon().args(["-m", "configfile", "-f", spec.to_str().unwrap(), "-H", "always", "--dry-run"]).start()?;
    d.wait_log("dry run: would change route: added", T)?;
    assert_eq!(env.world.route_count()?, before);
    Ok(())
}

#[test]
fn failed_router_moves_the_route_everywhere_and_recovery_does_not_fail_back() -> anyhow::Result<()> {
    let env = Env::new()?;
    let (rt1, rt2) = (env.world.tables[0].clone(), env.world.tables[1].clone());
    let health = env.write("health.json", r#"{"failed": []}"#);
    let spec = env.write("spec.json", r#"{"10.55.0.0/16": ["127.0.1.10", "127.0.2.10"]}"#);
    let d = env.daemon().args(file_driven(&spec, &health)).start()?;
    let first = env.wait_routed(&[&rt1, &rt2], "10.55.0.0/16", T)?;
    let other = if first == "127.0.1.10" { "127.0.2.10" } else { "127.0.1.10" };
    env.write("health.json", &format!(r#"{{"failed": ["{first}"]}}"#));
    wait_for(T, "failover", || {
        (env.world.targets(&[&rt1, &rt2], "10.55.0.0/16").ok()? == vec![Some(other.to_string()); 2]).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}\n{}", env.world.dump(), d.log()))?;
    // Recovery: nothing moves back. Both failed: the route stays and a warning is logged.
    env.write("health.json", r#"{"failed": []}"#);
    d.wait_log("health changed failed= ", T).or_else(|_| d.wait_log("health changed", T))?;
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(env.world.targets(&[&rt1, &rt2], "10.55.0.0/16")?, vec![Some(other.to_string()); 2]);
    env.write("health.json", r#"{"failed": ["127.0.1.10", "127.0.2.10"]}"#);
    d.wait_log("no healthy router for 10.55.0.0/16", T)?;
    assert_eq!(env.world.targets(&[&rt1, &rt2], "10.55.0.0/16")?, vec![Some(other.to_string()); 2]);
    Ok(())
}

#[test]
fn main_table_serves_subnets_without_explicit_association() -> anyhow::Result<()> {
    let env = Env::new()?;
    let main = env.world.main_table.clone();
    let d = env
        .daemon()
        .args(["-m", "fixedconf", "--fixed_cidr", "10.60.0.0/16", "--fixed_hosts", "127.0.4.10", "-H", "always"])
        .start()?;
    let routed = env.wait_routed(&[&main], "10.60.0.0/16", T).map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))?;
    assert_eq!(routed, "127.0.4.10");
    for t in tables(&env) {
        assert!(!env.world.routes(t)?.contains_key("10.60.0.0/16"), "{}", env.world.dump());
    }
    Ok(())
}

#[test]
fn sigterm_stops_plugins_and_exits_zero() -> anyhow::Result<()> {
    let env = Env::new()?;
    let rt1 = env.world.tables[0].clone();
    let spec = env.write("spec.json", r#"{"10.55.0.0/16": ["127.0.1.10"]}"#);
    let mut d = env.daemon().args(["-m", "configfile", "-f", spec.to_str().unwrap(), "-H", "always"]).start()?;
    env.wait_routed(&[&rt1], "10.55.0.0/16", T)?;
    let status = d.stop(Duration::from_secs(5))?;
    assert_eq!(status.code(), Some(0), "{}", d.log());
    assert!(d.log().contains("*** Stopping vpcrouter ***"));
    Ok(())
}

#[test]
fn steady_state_makes_no_writes() -> anyhow::Result<()> {
    let env = Env::new()?;
    let rt1 = env.world.tables[0].clone();
    let spec = env.write("spec.json", r#"{"10.55.0.0/16": ["127.0.1.10"]}"#);
    let d = env
        .daemon()
        .args(["-m", "configfile", "-f", spec.to_str().unwrap(), "-H", "always", "--route_recheck_interval", "5"])
        .start()?;
    env.wait_routed(&[&rt1], "10.55.0.0/16", T)?;
    std::thread::sleep(Duration::from_millis(300));
    let changes = d.log().matches("route changed").count();
    // Touch the file with identical content and wait for one periodic recheck.
    env.write("spec.json", r#"{"10.55.0.0/16": ["127.0.1.10"]}"#);
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(d.log().matches("route changed").count(), changes, "{}", d.log());
    assert!(!d.log().contains("failed"), "{}", d.log());
    Ok(())
}

#[test]
fn command_line_errors_are_one_clear_line() {
    let (code, _, err) = run_once(&["-m", "../etc", "-H", "always"]);
    assert_ne!(code, 0);
    assert!(err.contains("not a valid plugin name"), "{err}");
    let (code, _, err) = run_once(&["-m", "nosuch", "-H", "always"]);
    assert_ne!(code, 0);
    assert!(err.contains("no watcher plugin 'nosuch'") && err.contains("configfile"), "{err}");
    let (code, _, err) = run_once(&["-m", "configfile", "-H", "always"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--file"), "{err}");
    let (code, _, err) = run_once(&["-m", "configfile", "-f", "/does/not/exist", "-H", "always"]);
    assert_ne!(code, 0);
    assert!(err.contains("Cannot open config file"), "{err}");
    let (code, _, err) =
        run_once(&["-m", "fixedconf", "--fixed_cidr", "10.0.0.0/8", "--fixed_hosts", "1.1.1.", "-H", "always"]);
    assert_ne!(code, 0);
    assert!(err.contains("1.1.1."), "{err}");
    let (code, _, err) = run_once(&[
        "-m", "fixedconf", "--fixed_cidr", "10.0.0.0/8", "--fixed_hosts", "10.0.0.1", "-H", "always",
        "--route_recheck_interval", "3",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("either 0 or at least 5"), "{err}");
    // Off EC2 without -r/-v: a clear error, no hang.
    let (code, _, err) =
        run_once(&["-m", "fixedconf", "--fixed_cidr", "10.0.0.0/8", "--fixed_hosts", "10.0.0.1", "-H", "always"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--region") || err.contains("-r"), "{err}");
}

#[test]
fn help_shows_plugin_options_and_list_plugins_shows_versions() {
    let (code, out, _) = run_once(&["-m", "configfile", "-H", "file", "--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("--file") && out.contains("--health_file") && out.contains("--route_recheck_interval"),
        "{out}"
    );
    let (code, out, _) = run_once(&["--list-plugins"]);
    assert_eq!(code, 0);
    for name in ["configfile", "fixedconf", "always", "file"] {
        assert!(out.contains(name), "{out}");
    }
    assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
}

#[test]
fn insecure_or_bogus_plugin_files_are_refused() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let src = vpcrouter_tests::build_dir().join("libvpcrouter_fixedconf.so");
    let dst = dir.path().join("libvpcrouter_copied.so");
    std::fs::copy(&src, &dst)?;
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o666))?;
    let pd = dir.path().to_str().unwrap();
    let (code, _, err) = run_once(&["--plugin-dir", pd, "-m", "copied", "-H", "always"]);
    assert_ne!(code, 0);
    assert!(err.contains("writable by group or others"), "{err}");
    // Right permissions, wrong name inside: the file says it is 'fixedconf'.
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o644))?;
    let (_, _, err) = run_once(&["--plugin-dir", pd, "-m", "copied", "-H", "always"]);
    assert!(err.contains("contains watcher plugin 'fixedconf'"), "{err}");
    // A truncated library and a library of another program.
    std::fs::write(dir.path().join("libvpcrouter_trunc.so"), &std::fs::read(&src)?[..4096])?;
    let (code, _, err) = run_once(&["--plugin-dir", pd, "-m", "trunc", "-H", "always"]);
    assert_ne!(code, 0);
    assert!(err.contains("is not a usable vpcrouter plugin"), "{err}");
    if let Some(libc) = ["/lib/x86_64-linux-gnu/libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1"]
        .iter()
        .find(|p| std::path::Path::new(p).exists())
    {
        std::fs::copy(libc, dir.path().join("libvpcrouter_other.so"))?;
        std::fs::set_permissions(dir.path().join("libvpcrouter_other.so"), std::fs::Permissions::from_mode(0o644))?;
        let (code, _, err) = run_once(&["--plugin-dir", pd, "-m", "other", "-H", "always"]);
        assert_ne!(code, 0);
        assert!(err.contains("exports no vpcrouter plugin module"), "{err}");
    }
    Ok(())
}

#[test]
fn demo_shows_routes_before_and_after() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vpcrouter-demo"))
        .args(["--once", "--port", &vpcrouter_tests::free_port().to_string()])
        .output()
        .expect("run demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let after = text.split("route tables AFTER").nth(1).unwrap_or("");
    assert!(after.contains("10.55.0.0/16"), "{text}");
    assert!(after.lines().any(|l| l.contains("10.66.17.0/24") && l.contains("-> 127.0.1.11")), "{text}");
    let failover = text.lines().find(|l| l.starts_with("== failover: 10.55.0.0/16 moved")).unwrap_or_default();
    assert!(failover.ends_with(" ms"), "{text}");
    let status = text.split("== vpcrouter status -p").nth(1).unwrap_or("");
    assert!(status.contains("LAST FAILOVER") && status.contains("routes moved in"), "{text}");
}

fn file_hash(path: &std::path::Path) -> anyhow::Result<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(path)?.hash(&mut h);
    Ok(h.finish())
}

#[test]
fn third_party_example_plugins_work_with_the_unchanged_host() -> anyhow::Result<()> {
    use vpcrouter_tests::thirdparty::{build_example, plugin_dir};
    let host = vpcrouter_tests::daemon::binary();
    let before = file_hash(&host)?;
    // Each example is copied out of the workspace and built there with one cargo command.
    let scratch = tempfile::tempdir()?;
    let watcher = build_example(scratch.path(), "watcher-dir", "libvpcrouter_dirspec.so")?;
    let health = build_example(scratch.path(), "health-cmd", "libvpcrouter_health_cmd.so")?;
    let plugin_dir = plugin_dir(&[&watcher, &health])?;
    let (code, out, err) =
        run_once(&["--list-plugins", "--plugin-dir", plugin_dir.path().to_str().unwrap_or_default()]);
    assert_eq!(code, 0, "{err}");
    let api = format!("[plugin-api {},", vpcrouter_plugin_api::PLUGIN_API_VERSION);
    for name in ["dirspec", "cmd"] {
        let line = out.lines().find(|l| l.trim_start().starts_with(&format!("{name} "))).unwrap_or_default();
        assert!(line.contains(api.as_str()) && !line.contains("UNUSABLE"), "{name}:\n{out}");
    }

    let env = Env::new()?;
    let (rt1, rt2) = (env.world.tables[0].clone(), env.world.tables[1].clone());
    let specs = env.path("routes.d");
    std::fs::create_dir(&specs)?;
    std::fs::write(specs.join("a.json"), r#"{"10.55.0.0/16": ["127.0.1.10"]}"#)?;
    std::fs::write(specs.join("b.json"), r#"{"10.55.0.0/16": ["127.0.2.10"], "10.66.0.0/16": ["127.0.1.11"]}"#)?;
    let d = env
        .daemon()
        .args([
            "--plugin-dir",
            plugin_dir.path().to_str().unwrap_or_default(),
            "-m",
            "dirspec",
            "--spec_dir",
            specs.to_str().unwrap_or_default(),
            "--spec_dir_interval",
            "0.2",
            "-H",
            "cmd",
            "--cmd_check",
            r#"test "$VPCROUTER_HOST" != 127.0.1.10"#,
            "--cmd_interval",
            "0.5",
        ])
        .start()?;
    // 127.0.1.10 fails the example health check, so both tables must use 127.0.2.10.
    let want = vec![Some("127.0.2.10".to_string()); 2];
    wait_for(T, "10.55 on 127.0.2.10", || {
        (env.world.targets(&[&rt1, &rt2], "10.55.0.0/16").ok()? == want).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}\n{}", env.world.dump(), d.log()))?;
    assert_eq!(env.wait_routed(&[&rt1, &rt2], "10.66.0.0/16", T)?, "127.0.1.11");
    assert!(d.log().contains(r#"plugin="dirspec""#), "plugin log lines carry the plugin name:\n{}", d.log());
    assert_eq!(file_hash(&host)?, before, "the host binary was rebuilt");
    Ok(())
}

#[test]
fn first_reconcile_waits_for_health_so_start_up_never_routes_to_a_dead_router() -> anyhow::Result<()> {
    let env = Env::new()?;
    let (rt1, rt2) = (env.world.tables[0].clone(), env.world.tables[1].clone());
    let health = env.write("health.json", r#"{"failed": ["127.0.1.10"]}"#);
    let spec = env.write(
        "spec.json",
        r#"{"10.55.0.0/16": ["127.0.1.10", "127.0.2.10"], "10.56.0.0/16": ["127.0.2.10", "127.0.1.10"]}"#,
    );
    let d = env.daemon().args(file_driven(&spec, &health)).start()?;
    assert_eq!(env.wait_routed(&[&rt1, &rt2], "10.55.0.0/16", T)?, "127.0.2.10");
    assert_eq!(env.wait_routed(&[&rt1, &rt2], "10.56.0.0/16", T)?, "127.0.2.10");
    let log = d.log();
    assert_eq!(log.matches("route changed: added").count(), 4, "{log}");
    assert!(!log.contains("route changed: replaced"), "{log}");
    Ok(())
}

#[test]
fn sighup_reopens_the_log_file_and_reloads_the_watcher_and_json_logs_parse() -> anyhow::Result<()> {
    let env = Env::new()?;
    let rt1 = env.world.tables[0].clone();
    let spec = env.write("spec.json", r#"{"10.55.0.0/16": ["127.0.1.10"]}"#);
    let log = env.path("vpcrouter.log");
    let d = env
        .daemon()
        .args([
            "-m",
            "configfile",
            "-f",
            spec.to_str().unwrap(),
            "-H",
            "always",
            "-l",
            log.to_str().unwrap(),
            "--log-format",
            "json",
        ])
        .start()?;
    env.wait_routed(&[&rt1], "10.55.0.0/16", T)?;
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    wait_for(T, "the route change line", || read(&log).contains("route changed").then_some(()))?;
    // logrotate: move the file away, then SIGHUP.
    let rotated = env.path("vpcrouter.log.1");
    std::fs::rename(&log, &rotated)?;
    d.signal(libc::SIGHUP);
    wait_for(T, "lines in the reopened log", || read(&log).contains("Re-reading route spec file").then_some(()))
        .map_err(|e| anyhow::anyhow!("{e}\nrotated:\n{}\nnew:\n{}", read(&rotated), read(&log)))?;
    assert!(read(&log).contains("reload requested"));
    assert!(!read(&rotated).contains("reload requested"), "nothing more goes to the rotated file");
    for line in read(&rotated).lines().chain(read(&log).lines()) {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| anyhow::anyhow!("not JSON: {line}: {e}"))?;
        assert!(v.get("level").is_some() && v.get("fields").is_some(), "{line}");
    }
    // The start-up summary: version, plugins with versions, region, VPC, route tables found.
    let start =
        read(&rotated).lines().find(|l| l.contains("*** Starting vpcrouter ***")).map(String::from).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&start)?;
    let f = &v["fields"];
    assert_eq!(
        (f["mode"].as_str(), f["health"].as_str()),
        (Some("configfile (0.1.0)"), Some("always (0.1.0)")),
        "{start}"
    );
    assert_eq!(
        (f["region"].as_str(), f["vpc"].as_str(), f["route_tables"].as_str()),
        (Some("us-east-1"), Some(env.world.vpc_id.as_str()), Some("4")),
        "{start}"
    );
    assert!(f["version"].is_string(), "{start}");
    let change = read(&rotated).lines().find(|l| l.contains("route changed")).map(String::from).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&change)?;
    assert_eq!(v["fields"]["cidr"], "10.55.0.0/16", "{change}");
    assert_eq!(v["fields"]["router"], "127.0.1.10", "{change}");
    Ok(())
}

#[test]
fn sigterm_abandons_a_stuck_ec2_call_and_exits_zero_within_5_s() -> anyhow::Result<()> {
    use vpcrouter_tests::faultproxy::{Fault, FaultProxy, Rule};
    let env = Env::new()?;
    let rt1 = env.world.tables[0].clone();
    let proxy = FaultProxy::start(&env.moto.endpoint)?;
    let spec = env.write("spec.json", r#"{"10.55.0.0/16": ["127.0.1.10"]}"#);
    let mut d = env
        .daemon()
        .endpoint(&proxy.endpoint)
        .args(["-m", "configfile", "-f", spec.to_str().unwrap(), "-H", "always"])
        .start()?;
    env.wait_routed(&[&rt1], "10.55.0.0/16", T).map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))?;
    // Every EC2 call now hangs for a minute; a spec change starts a reconcile that waits.
    proxy.set_policy(vec![Rule::all(Fault::Slow(Duration::from_secs(60)))]);
    let before = proxy.count("DescribeVpcs") + proxy.count("DescribeRouteTables");
    env.write("spec.json", r#"{"10.66.0.0/16": ["127.0.1.10"]}"#);
    wait_for(T, "a reconcile stuck on EC2", || {
        (proxy.count("DescribeVpcs") + proxy.count("DescribeRouteTables") > before).then_some(())
    })?;
    let t = std::time::Instant::now();
    let status = d.stop(Duration::from_secs(5)).map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))?;
    assert_eq!(status.code(), Some(0), "{}", d.log());
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(d.log().contains("abandoning the EC2 call in flight"), "{}", d.log());
    proxy.clear();
    Ok(())
}
