//! The `configfile` watcher follows its file through swaps and refuses non-specs, keeping the last good spec.
//!
//! Swaps: a ConfigMap's `..data` swap, `mv -T` of a parent symlink, a directory deleted or
//! renamed away and re-created. Refused without growing, hanging or losing the last good spec:
//! `/dev/zero`, a 100 MB file, a FIFO, non-UTF-8 text; a FIFO at start stops vpcrouter at once.
//!
//! One daemon follows `-f ROOT/dir/current/spec.json`, where `current` first leads to a
//! ConfigMap-style volume (`cm/spec.json -> ..data/spec.json`, `..data -> ..2026_1`). Each swap
//! brings a spec with a new CIDR: the CIDR must be routed in moto and the spec in force
//! (`/status` `route_spec`) must be the new one.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use vpcrouter_tests::daemon::{command, Daemon};
use vpcrouter_tests::{http_client, wait_for, Env};

const T: Duration = Duration::from_secs(10);
/// The daemon's memory must stay under this whatever file it is given.
const MAX_RSS_KB: u64 = 100 << 10;

/// A spec routing `cidr` over router 127.0.1.10 (table rt1).
fn spec(cidr: &str) -> String {
    format!(r#"{{"{cidr}": ["127.0.1.10"]}}"#)
}

/// `target`'s parent gets `make(tmp)`, which is then renamed over `target` (`mv -T`).
fn swap_in(target: &Path, make: impl FnOnce(&Path)) {
    let tmp = target.with_file_name(".swap.tmp");
    make(&tmp);
    fs::rename(&tmp, target).expect("rename into place");
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(status.success());
}

/// (VmRSS, VmHWM) of process `pid`, in KiB.
fn memory_kb(pid: u32) -> (u64, u64) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(u64::MAX)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Waits until `cidr` is routed in rt1 and is the whole spec in force.
fn wait_in_force(env: &Env, d: &Daemon, cidr: &str) -> anyhow::Result<()> {
    env.wait_routed(&[env.world.tables[0].as_str()], cidr, T)?;
    let want = serde_json::json!({ cidr: ["127.0.1.10"] });
    wait_for(T, &format!("the spec in force to be {want}"), || {
        let status: serde_json::Value = http_client::get(d.port, "/status", None).ok()?.json().ok()?;
        (status["route_spec"] == want).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n--- log ---\n{}", d.log()))
}

#[test]
fn the_spec_file_is_followed_through_swaps_and_bad_files_are_refused() -> anyhow::Result<()> {
    let env = Env::new()?;
    let (root, dir) = (env.dir.path(), env.dir.path().join("dir"));
    let cm = dir.join("cm");
    fs::create_dir_all(cm.join("..2026_1"))?;
    fs::write(cm.join("..2026_1/spec.json"), spec("10.51.0.0/16"))?;
    symlink("..2026_1", cm.join("..data"))?;
    symlink("..data/spec.json", cm.join("spec.json"))?;
    symlink("cm", dir.join("current"))?;
    let file = dir.join("current/spec.json");
    let mut d = env.daemon().args(["-m", "configfile", "-f", file.to_str().unwrap(), "-H", "always"]).start()?;
    wait_in_force(&env, &d, "10.51.0.0/16")?;

    // 1. The kubelet's update of a ConfigMap volume.
    fs::create_dir(cm.join("..2026_2"))?;
    fs::write(cm.join("..2026_2/spec.json"), spec("10.52.0.0/16"))?;
    symlink("..2026_2", cm.join("..data_tmp"))?;
    fs::rename(cm.join("..data_tmp"), cm.join("..data"))?;
    fs::remove_dir_all(cm.join("..2026_1"))?;
    wait_in_force(&env, &d, "10.52.0.0/16")?;

    // 2. ln -sfn r2 current.tmp && mv -T current.tmp current
    fs::create_dir(dir.join("r2"))?;
    fs::write(dir.join("r2/spec.json"), spec("10.53.0.0/16"))?;
    swap_in(&dir.join("current"), |tmp| symlink("r2", tmp).unwrap());
    wait_in_force(&env, &d, "10.53.0.0/16")?;

    // 3. rm -rf dir; mkdir -p dir/current; echo ... > dir/current/spec.json
    fs::remove_dir_all(&dir)?;
    fs::create_dir_all(dir.join("current"))?;
    fs::write(&file, spec("10.54.0.0/16"))?;
    wait_in_force(&env, &d, "10.54.0.0/16")?;

    // 4. mv dir dir.old; mkdir -p dir/current; then a spec written into the new directory
    fs::rename(&dir, root.join("dir.old"))?;
    fs::create_dir_all(dir.join("current"))?;
    swap_in(&file, |tmp| fs::write(tmp, spec("10.55.0.0/16")).unwrap());
    wait_in_force(&env, &d, "10.55.0.0/16")?;
    // The old directory is not followed any more.
    fs::write(root.join("dir.old/current/spec.json"), spec("10.56.0.0/16"))?;

    // Files that cannot be specs: one line each, the memory stays small, the spec stays.
    let pid = d.pid().expect("running");
    let before = memory_kb(pid);
    swap_in(&file, |tmp| symlink("/dev/zero", tmp).unwrap());
    d.wait_log("is a character device, not a regular file", T)?;
    let big = root.join("big.json");
    let mut text = spec("10.57.0.0/16");
    text.insert_str(1, &" ".repeat(100 << 20));
    fs::write(&big, text)?;
    swap_in(&file, |tmp| fs::rename(&big, tmp).unwrap());
    d.wait_log("is larger than the limit of 64 MiB", T)?;
    swap_in(&file, |tmp| fs::write(tmp, b"{\"10.58.0.0/16\": [\"127.0.1.10\"], \"caf\xe9\": []}").unwrap());
    d.wait_log("is not UTF-8 text (invalid byte at offset 37)", T)?;
    swap_in(&file, mkfifo);
    d.wait_log("is a FIFO (named pipe), not a regular file", T)?;
    let after = memory_kb(pid);
    eprintln!("daemon memory: VmRSS {} kB before, {} kB after; VmHWM {} kB", before.0, after.0, after.1);
    assert!(after.1 < MAX_RSS_KB, "VmHWM {} kB (before: {before:?})", after.1);
    assert!(!d.log().contains("Cannot open file"), "refusals name what is wrong:\n{}", d.log());
    wait_in_force(&env, &d, "10.55.0.0/16")?;

    // After the FIFO, a valid file is followed; SIGHUP answers; SIGTERM ends it cleanly.
    swap_in(&file, |tmp| fs::write(tmp, spec("10.59.0.0/16")).unwrap());
    wait_in_force(&env, &d, "10.59.0.0/16")?;
    d.signal(libc::SIGHUP);
    d.wait_log("watcher plugin 'configfile': reload done", T)?;
    let status = d.stop(Duration::from_secs(5))?;
    assert!(status.success(), "{status:?}\n{}", d.log());
    assert!(!d.log().contains("did not stop"), "{}", d.log());
    Ok(())
}

#[test]
fn a_fifo_as_the_spec_file_at_start_stops_vpcrouter_at_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let fifo = dir.path().join("fifo.json");
    mkfifo(&fifo);
    let started = Instant::now();
    let mut child = command(None, &["-m", "configfile", "-f", fifo.to_str().unwrap(), "-H", "always"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let exited = wait_for(Duration::from_secs(3), "vpcrouter to exit", || child.try_wait().ok().flatten());
    if exited.is_err() {
        child.kill()?;
    }
    let out = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(exited.is_ok(), "still running after {:?}; stderr: {stderr}", started.elapsed());
    assert_eq!(out.status.code(), Some(2), "a bad option value: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("is a FIFO (named pipe), not a regular file"), "{stderr}");
    Ok(())
}
