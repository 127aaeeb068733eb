//! Test harness: a moto server standing in for EC2, a VPC world built in it through the
//! real aws-sdk-ec2, and the real `vpcrouter` binary run with real plugin libraries.
//!
//! Locations come from the environment the Makefile sets, with repo-relative defaults:
//! `VPCROUTER_MOTO_SERVER` (default `.venv/bin/moto_server`), `VPCROUTER_BUILD_DIR`
//! (the directory with the `vpcrouter` binary and the plugin `.so` files, default
//! `target/plugins`).
#![forbid(unsafe_code)]

pub mod bench;
pub mod certs;
pub mod cluster;
pub mod daemon;
pub mod ec2model;
pub mod etcd;
pub mod faultproxy;
pub mod http_client;
pub mod listener;
pub mod moto;
pub mod natworld;
pub mod netns;
pub mod relay;
pub mod slowclients;
pub mod sns;
pub mod thirdparty;
pub mod tls_client;
pub mod world;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The directory holding the built binary and plugins (`make build` fills it).
pub fn build_dir() -> PathBuf {
    std::env::var_os("VPCROUTER_BUILD_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target/plugins"))
}

/// Polls `f` every 50 ms until it returns `Some`, or fails after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    wait_for_every(Duration::from_millis(50), timeout, what, f)
}

/// [`wait_for`], polling every `poll` (benchmarks poll faster).
pub fn wait_for_every<T>(
    poll: Duration,
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > end {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(poll);
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind a loopback port")
}

/// One test's world: moto, the VPC in it, and a scratch directory.
pub struct Env {
    /// The VPC world (declared first: dropped before moto).
    pub world: world::World,
    /// The emulator.
    pub moto: moto::Moto,
    /// Scratch directory for spec and health files.
    pub dir: tempfile::TempDir,
}

impl Env {
    /// Starts moto and builds the standard world.
    pub fn new() -> anyhow::Result<Env> {
        let moto = moto::Moto::start()?;
        let world = world::World::build(&moto)?;
        Ok(Env { world, moto, dir: tempfile::tempdir()? })
    }

    /// Starts moto and builds the standard world in the account of `role_arn`.
    pub fn new_in_account_of(role_arn: &str) -> anyhow::Result<Env> {
        let moto = moto::Moto::start()?;
        let world = world::World::build_as(&moto, role_arn)?;
        Ok(Env { world, moto, dir: tempfile::tempdir()? })
    }

    /// A path in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `content` to `name` in the scratch directory the way editors do: to a
    /// temporary file, then renamed over the target.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.path(name);
        let tmp = self.path(&format!(".{name}.tmp"));
        std::fs::write(&tmp, content).expect("write temp file");
        std::fs::rename(&tmp, &path).expect("rename over target");
        path
    }

    /// A [`daemon::DaemonBuilder`] for vpcrouter on this world: `-r` and `-v` are set, the
    /// rest is the caller's (`env.daemon().args([...]).start()`).
    pub fn daemon(&self) -> daemon::DaemonBuilder<'_> {
        daemon::Daemon::builder(&self.moto).args(["-r", world::REGION, "-v", self.world.vpc_id.as_str()])
    }

    /// Waits until `cidr` points at one router in every table of `tables` and returns it.
    pub fn wait_routed(&self, tables: &[&str], cidr: &str, timeout: Duration) -> anyhow::Result<String> {
        wait_for(timeout, &format!("{cidr} to be routed in {tables:?}"), || {
            let targets = self.world.targets(tables, cidr).ok()?;
            let first = targets.first()?.clone()?;
            targets.iter().all(|t| t.as_deref() == Some(first.as_str())).then_some(first)
        })
        .map_err(|e| anyhow::anyhow!("{e}\n{}", self.world.dump()))
    }
}

/// The options of a daemon driven by two files, as most tests run it: the `configfile`
/// watcher on `spec` and the `file` health monitor on `health`.
pub fn file_driven<'a>(spec: &'a Path, health: &'a Path) -> [&'a str; 8] {
    let text = |p: &'a Path| p.to_str().unwrap_or_default();
    ["-m", "configfile", "-f", text(spec), "-H", "file", "--health_file", text(health)]
}
