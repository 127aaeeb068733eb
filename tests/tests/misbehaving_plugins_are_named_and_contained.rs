//! A misbehaving plugin is named in one line; vpcrouter exits 1 when it cannot go on, and never aborts.
//!
//! The test-only watcher `tests/faulty-plugins` panics in `start` or in its own thread, hangs
//! in `stop`, closes its queue or sends a spec that is not canonical. (A plugin built against
//! an older plugin-api: `plugin_abi_evolves_by_its_rules.rs`. Truncated and foreign `.so`
//! files: `insecure_or_bogus_plugin_files_are_refused`.)

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Mutex;
use std::time::Duration;

use vpcrouter_tests::daemon::Daemon;
use vpcrouter_tests::{repo_root, Env};

const T: Duration = Duration::from_secs(20);
const SPEC: &str = r#"{"10.55.0.0/16": ["127.0.1.10"]}"#;

/// Serialises the builds of the plugin crate (cargo would wait on its lock anyway).
static BUILD: Mutex<()> = Mutex::new(());

/// Target directory for the plugin builds, next to the shared one.
fn target_dir(suffix: &str) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(format!("{}-{suffix}", t.to_string_lossy())),
        None => repo_root().join("target").join(suffix),
    }
}

/// Builds the crate at `manifest` on its own and returns its `libvpcrouter_faulty.so`.
fn build(manifest: &Path, suffix: &str) -> anyhow::Result<PathBuf> {
    let _lock = vpcrouter_plugin_api::sync::lock(&BUILD);
    let target = target_dir(suffix);
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "-q", "--manifest-path"])
        .arg(manifest)
        .env("CARGO_TARGET_DIR", &target)
        .status()?;
    anyhow::ensure!(status.success(), "building {} failed", manifest.display());
    Ok(target.join("debug/libvpcrouter_faulty.so"))
}

/// A private plugin directory holding `so` as `libvpcrouter_faulty.so` and the bundled
/// `always` health plugin.
fn plugin_dir(so: &Path) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    for (src, name) in [
        (so.to_path_buf(), "libvpcrouter_faulty.so"),
        (vpcrouter_tests::build_dir().join("libvpcrouter_health_always.so"), "libvpcrouter_health_always.so"),
    ] {
        let dst = dir.path().join(name);
        std::fs::copy(&src, &dst)?;
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(dir)
}

fn faulty_so() -> anyhow::Result<PathBuf> {
    build(&repo_root().join("tests/faulty-plugins/Cargo.toml"), "faulty")
}

/// Starts vpcrouter with the faulty watcher in `mode`.
fn start(env: &Env, dir: &Path, mode: &str) -> anyhow::Result<Daemon> {
    env.daemon()
        .args([
            "--plugin-dir",
            dir.to_str().unwrap_or_default(),
            "-m",
            "faulty",
            "--faulty_mode",
            mode,
            "--faulty_spec",
            SPEC,
            "-H",
            "always",
        ])
        .start()
}

/// Exit code 1, not a signal, and exactly one `error:` line on stderr naming the plugin.
fn assert_clean_failure(status: ExitStatus, log: &str, needle: &str) {
    assert_eq!(status.signal(), None, "killed by a signal:\n{log}");
    assert_eq!(status.code(), Some(1), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(errors[0].contains("'faulty'") && errors[0].contains(needle), "{}", errors[0]);
    assert!(!log.contains("Aborted") && !log.contains("SIGABRT"), "{log}");
}

#[test]
fn panic_in_start_is_one_error_line_and_exit_1() -> anyhow::Result<()> {
    let so = faulty_so()?;
    let dir = plugin_dir(&so)?;
    let env = Env::new()?;
    let mut d = start(&env, dir.path(), "start_panic")?;
    let status = d.wait(T)?;
    assert_clean_failure(status, &d.log(), "panic in start as asked");
    assert!(d.log().contains("watcher plugin 'faulty' failed to start"), "{}", d.log());
    Ok(())
}

#[test]
fn a_cluster_instance_that_fails_to_start_leaves_nothing_in_etcd() -> anyhow::Result<()> {
    let so = faulty_so()?;
    let dir = plugin_dir(&so)?;
    let env = Env::new()?;
    let etcd = vpcrouter_tests::etcd::Etcd::start()?;
    let mut d = env
        .daemon()
        .args([
            "--plugin-dir",
            dir.path().to_str().unwrap_or_default(),
            "-m",
            "faulty",
            "--faulty_mode",
            "start_panic",
            "--faulty_spec",
            SPEC,
            "-H",
            "always",
            "--cluster-etcd",
            &etcd.endpoints(),
            "--instance-id",
            "x",
        ])
        .start()?;
    let status = d.wait(T)?;
    assert_clean_failure(status, &d.log(), "panic in start as asked");
    // Its lease was revoked on the way out: no leader key or member key waits for the TTL.
    assert_eq!(etcd.get_prefix("/vpcrouter/")?, vec![], "{}", d.log());
    Ok(())
}

#[test]
fn panic_in_the_plugin_thread_closes_its_queue_and_stops_the_daemon() -> anyhow::Result<()> {
    let so = faulty_so()?;
    let dir = plugin_dir(&so)?;
    let env = Env::new()?;
    let mut d = start(&env, dir.path(), "thread_panic")?;
    // The spec it sent before panicking was applied.
    env.wait_routed(&[&env.world.tables[0]], "10.55.0.0/16", T)?;
    let status = d.wait(T)?;
    assert_clean_failure(status, &d.log(), "closed its route spec queue");
    Ok(())
}

#[test]
fn a_closed_queue_stops_the_daemon_with_the_plugin_named() -> anyhow::Result<()> {
    let so = faulty_so()?;
    let dir = plugin_dir(&so)?;
    let env = Env::new()?;
    let mut d = start(&env, dir.path(), "close_queue")?;
    let status = d.wait(T)?;
    assert_clean_failure(status, &d.log(), "closed its route spec queue");
    Ok(())
}

#[test]
fn a_malformed_spec_is_refused_and_the_last_good_one_kept() -> anyhow::Result<()> {
    let so = faulty_so()?;
    let dir = plugin_dir(&so)?;
    let env = Env::new()?;
    let rt1 = env.world.tables[0].clone();
    let mut d = start(&env, dir.path(), "bad_spec")?;
    d.wait_log("watcher sent an invalid route spec", T)?;
    let log = d.log();
    let line = log.lines().find(|l| l.contains("invalid route spec")).unwrap_or_default();
    // The fixture repeats '10.1.0.0/16' out of order: typed values cannot carry host bits.
    assert!(line.contains("faulty") && line.contains("not canonical") && line.contains("'10.1.0.0/16'"), "{line}");
    assert_eq!(env.wait_routed(&[&rt1], "10.55.0.0/16", T)?, "127.0.1.10");
    assert!(!env.world.routes(&rt1)?.keys().any(|k| k.starts_with("10.1.")), "{}", env.world.dump());
    let status = d.stop(Duration::from_secs(10))?;
    assert_eq!(status.code(), Some(0), "{}", d.log());
    Ok(())
}

#[test]
fn a_stop_that_never_returns_does_not_hold_up_the_exit() -> anyhow::Result<()> {
    let so = faulty_so()?;
    let dir = plugin_dir(&so)?;
    let env = Env::new()?;
    let mut d = start(&env, dir.path(), "stop_hang")?;
    env.wait_routed(&[&env.world.tables[0]], "10.55.0.0/16", T)?;
    let t = std::time::Instant::now();
    let status = d.stop(Duration::from_secs(10))?;
    assert!(t.elapsed() < Duration::from_secs(5), "exit took {:?}", t.elapsed());
    assert_eq!(status.signal(), None, "{}", d.log());
    assert_eq!(status.code(), Some(0), "{}", d.log());
    assert!(
        d.log().contains("watcher plugin 'faulty' failed to stop") && d.log().contains("did not stop within 2000 ms"),
        "{}",
        d.log()
    );
    Ok(())
}
