//! Network namespaces owned by a test, so real health-check packets never leave them.
//!
//! A test (or benchmark) that needs routers which stop answering runs its body inside a
//! fresh namespace: [`run_inside`] creates one with `lo` up and an nftables table whose
//! `blocked` set silently drops every packet addressed to its members, re-executes the
//! current test binary inside it (`ip netns exec`), and deletes the namespace afterwards.
//! Inside, moto, vpcrouter and the test all share the namespace's loopback, where every
//! 127.x.y.z address answers until [`block`]ed.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables; `make deps` installs it).

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context};

/// Set (to the namespace's name) in the environment of a process running inside.
pub const INSIDE_ENV: &str = "VPCROUTER_TEST_NETNS";

/// The nftables rules of a test namespace: drop input to addresses in `@blocked`.
const RULES: &str = "table inet vpcrouter_test {
  set blocked { type ipv4_addr; }
  chain input { type filter hook input priority 0; policy accept; ip daddr @blocked drop; }
}
";

static NEXT: AtomicU32 = AtomicU32::new(0);

fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd.output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

/// A network namespace, deleted on drop.
pub struct Netns {
    /// Its name (`ip netns exec NAME ...`).
    pub name: String,
}

impl Netns {
    /// Creates a namespace named after `tag`, the process id and a counter, with `lo` up
    /// and the blocking table installed.
    pub fn create(tag: &str) -> anyhow::Result<Netns> {
        let name = format!("vpcr-{tag}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        run(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]))?;
        let mut nft = ns.command("nft");
        nft.args(["-f", "-"]).stdin(std::process::Stdio::piped());
        let mut child =
            nft.stdout(std::process::Stdio::null()).spawn().context("cannot run nft (apt-get install nftables)")?;
        if let Some(mut stdin) = child.stdin.take() {
            std::io::Write::write_all(&mut stdin, RULES.as_bytes())?;
        }
        anyhow::ensure!(child.wait()?.success(), "nft could not install the test rules in {}", ns.name);
        Ok(ns)
    }

    /// `program` to be run inside the namespace, with [`INSIDE_ENV`] set.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]).env(INSIDE_ENV, &self.name);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// The namespace this process runs in, when it was started by [`run_inside`].
pub fn inside() -> Option<String> {
    std::env::var(INSIDE_ENV).ok().filter(|s| !s.is_empty())
}

fn nft_set(op: &str, ip: &str) -> anyhow::Result<()> {
    anyhow::ensure!(inside().is_some(), "block/unblock only work inside a test namespace");
    anyhow::ensure!(ip.starts_with("127."), "only loopback addresses are blocked here, not {ip}");
    run(Command::new("nft").args([op, "element", "inet", "vpcrouter_test", "blocked", &format!("{{ {ip} }}")]))?;
    Ok(())
}

/// Drops every packet to `ip` (a 127.x address) from now on: it stops answering.
pub fn block(ip: &str) -> anyhow::Result<()> {
    nft_set("add", ip)
}

/// Lets packets to `ip` through again.
pub fn unblock(ip: &str) -> anyhow::Result<()> {
    nft_set("delete", ip)
}

/// Runs the test `name` of the current test binary again, inside a new namespace, and
/// fails with its output when it fails.
pub fn run_inside(name: &str) -> anyhow::Result<()> {
    let ns = Netns::create("test")?;
    let exe = std::env::current_exe()?;
    let exe = exe.to_str().context("test binary path is not UTF-8")?;
    let out = ns
        .command(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .output()
        .context("cannot run the test inside its namespace")?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    anyhow::ensure!(out.status.success(), "test {name} failed inside namespace {}:\n{text}", ns.name);
    anyhow::ensure!(text.contains("1 passed"), "test {name} did not run inside namespace {}:\n{text}", ns.name);
    Ok(())
}
