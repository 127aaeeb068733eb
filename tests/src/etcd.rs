//! etcd servers on free loopback ports, in a scratch data dir, killed on drop: a single
//! node ([`Etcd::start`]) or a static cluster ([`Etcd::start_cluster`]). Nodes can be
//! stopped and started again with their data (same ports), to test etcd outages.
//!
//! The executable is `$VPCROUTER_ETCD` or `etcd` on the PATH (Debian's `etcd-server`,
//! which `make deps` installs); keys are read and written with `etcdctl` (v3 API).
//!
//! [`Etcd::start_tls`] serves clients on https:// with certificates from
//! [`crate::certs`] (optionally demanding client certificates), and [`Etcd::enable_auth`]
//! turns on etcd's authentication with users and roles made through `etcdctl`.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::certs::Pem;
use crate::wait_for;

/// One etcd member.
struct Node {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// A running etcd (one or more members).
pub struct Etcd {
    nodes: Vec<Node>,
    initial_cluster: String,
    dir: tempfile::TempDir,
    tls: Option<Tls>,
    /// `etcdctl --user` once authentication is on (`root:password`).
    ctl_user: Option<String>,
}

/// TLS on etcd's client URLs.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The CA etcd trusts for client certificates (`--trusted-ca-file`), and that signed
    /// its server certificate.
    pub ca: PathBuf,
    /// etcd's server certificate and key (`--cert-file`, `--key-file`).
    pub server: Pem,
    /// Demand client certificates (`--client-cert-auth`).
    pub client_cert_auth: bool,
    /// The client certificate etcdctl uses (needed with `client_cert_auth`).
    pub ctl_client: Option<Pem>,
}

/// One permission of a role: `read`, `write` or `readwrite` on a key or, with `prefix`,
/// on every key under it.
#[derive(Debug, Clone)]
pub struct Permission<'a> {
    /// `read`, `write` or `readwrite`.
    pub kind: &'a str,
    /// The key or prefix.
    pub key: &'a str,
    /// `--prefix=true`.
    pub prefix: bool,
}

/// `n` distinct free loopback ports. The listeners are held until all are chosen: ports
/// taken one at a time with [`crate::free_port`] can repeat (the kernel may hand out a port
/// again as soon as it is released), and a member whose client and peer ports are the same
/// cannot start.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("cannot bind a loopback port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("local address").port()).collect()
}

/// The etcd executable.
pub fn etcd_binary() -> PathBuf {
    std::env::var_os("VPCROUTER_ETCD").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("etcd"))
}

impl Etcd {
    /// Starts a single-node etcd and waits until it serves.
    pub fn start() -> anyhow::Result<Etcd> {
        Etcd::start_cluster(1)
    }

    /// Starts an `n`-member cluster (static bootstrap) and waits until every member serves.
    pub fn start_cluster(n: usize) -> anyhow::Result<Etcd> {
        Etcd::start_with(n, None)
    }

    /// Starts a single-node etcd serving clients on `https://127.0.0.1:PORT` with `tls`.
    pub fn start_tls(tls: Tls) -> anyhow::Result<Etcd> {
        Etcd::start_with(1, Some(tls))
    }

    fn start_with(n: usize, tls: Option<Tls>) -> anyhow::Result<Etcd> {
        let ports = free_ports(2 * n);
        let nodes: Vec<Node> = (0..n)
            .map(|i| Node {
                name: format!("n{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                child: None,
            })
            .collect();
        let initial_cluster =
            nodes.iter().map(|n| format!("{}=http://127.0.0.1:{}", n.name, n.peer_port)).collect::<Vec<_>>().join(",");
        let mut etcd = Etcd { nodes, initial_cluster, dir: tempfile::tempdir()?, tls, ctl_user: None };
        for i in 0..n {
            etcd.spawn(i)?;
        }
        for i in 0..n {
            etcd.wait_healthy(i)?;
        }
        Ok(etcd)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        let data = self.dir.path().join(&node.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", node.name)))?;
        let client = self.endpoint(i);
        let peer = format!("http://127.0.0.1:{}", node.peer_port);
        let mut cmd = Command::new(etcd_binary());
        if let Some(tls) = &self.tls {
            cmd.arg("--cert-file").arg(&tls.server.cert).arg("--key-file").arg(&tls.server.key);
            cmd.arg("--trusted-ca-file").arg(&tls.ca);
            if tls.client_cert_auth {
                cmd.arg("--client-cert-auth");
            }
        }
        let child = cmd
            .args(["--name", &node.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "vpcrouter-test", "--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot start {}: {e} (install etcd-server, or run 'make deps')",
                    etcd_binary().display()
                )
            })?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    fn wait_healthy(&self, i: usize) -> anyhow::Result<()> {
        let port = self.nodes[i].client_port;
        wait_for(Duration::from_secs(30), &format!("etcd member {i} to serve"), || {
            TcpStream::connect(("127.0.0.1", port)).ok()?;
            let out = self.etcdctl(&self.endpoint(i), &["endpoint", "health"]).ok()?;
            out.status.success().then_some(())
        })
        .map_err(|e| anyhow::anyhow!("{e}\n--- etcd log ---\n{}", self.log(i)))
    }

    /// All client URLs, comma-separated (for `--cluster-etcd` and `--etcd_endpoints`).
    pub fn endpoints(&self) -> String {
        (0..self.nodes.len()).map(|i| self.endpoint(i)).collect::<Vec<_>>().join(",")
    }

    /// The client URL of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// The client port of member `i`.
    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].client_port
    }

    /// The log of member `i`.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", self.nodes[i].name))).unwrap_or_default()
    }

    /// Kills member `i` (SIGKILL: no goodbye to clients).
    pub fn stop_node(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again with its data and ports, and waits until it serves.
    pub fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        anyhow::ensure!(self.nodes[i].child.is_none(), "etcd member {i} is running");
        self.spawn(i)?;
        self.wait_healthy(i)
    }

    /// Kills every member.
    pub fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop_node(i);
        }
    }

    /// Starts every stopped member and waits until all serve.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_none() {
                self.spawn(i)?;
            }
        }
        for i in 0..self.nodes.len() {
            self.wait_healthy(i)?;
        }
        Ok(())
    }

    /// Runs `etcdctl ARGS` against the running members; its stdout, or an error with stderr.
    pub fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let running: Vec<String> =
            (0..self.nodes.len()).filter(|&i| self.nodes[i].child.is_some()).map(|i| self.endpoint(i)).collect();
        let out = self.etcdctl(&running.join(","), args)?;
        anyhow::ensure!(
            out.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Writes `key` = `value`.
    pub fn put(&self, key: &str, value: &str) -> anyhow::Result<()> {
        // `--` so that values starting with '-' are not taken for flags.
        self.ctl(&["put", "--", key, value]).map(drop)
    }

    /// The value of `key`, if it exists.
    pub fn get(&self, key: &str) -> anyhow::Result<Option<String>> {
        let out = self.ctl(&["get", "--print-value-only", "--", key])?;
        Ok((!out.is_empty()).then(|| out.strip_suffix('\n').unwrap_or(&out).to_string()))
    }

    /// Every key under `prefix` with its value.
    pub fn get_prefix(&self, prefix: &str) -> anyhow::Result<Vec<(String, String)>> {
        let out = self.ctl(&["get", "--prefix", "--", prefix])?;
        let lines: Vec<&str> = out.lines().collect();
        Ok(lines.chunks(2).filter(|c| c.len() == 2).map(|c| (c[0].to_string(), c[1].to_string())).collect())
    }

    /// Deletes `key`.
    pub fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.ctl(&["del", "--", key]).map(drop)
    }

    /// Adds role `role` with `permissions`.
    pub fn add_role(&self, role: &str, permissions: &[Permission]) -> anyhow::Result<()> {
        self.ctl(&["role", "add", role])?;
        for p in permissions {
            let mut args = vec!["role", "grant-permission"];
            if p.prefix {
                args.push("--prefix=true");
            }
            args.extend([role, p.kind, p.key]);
            self.ctl(&args)?;
        }
        Ok(())
    }

    /// Adds user `name` with `password` and `roles`.
    pub fn add_user(&self, name: &str, password: &str, roles: &[&str]) -> anyhow::Result<()> {
        let spec = format!("{name}:{password}");
        self.ctl(&["user", "add", "--interactive=false", &spec])?;
        for role in roles {
            self.ctl(&["user", "grant-role", name, role])?;
        }
        Ok(())
    }

    /// Turns authentication on: adds `root` with `root_password` (etcdctl logs in as it
    /// from then on) and runs `etcdctl auth enable`.
    pub fn enable_auth(&mut self, root_password: &str) -> anyhow::Result<()> {
        self.add_user("root", root_password, &["root"])?;
        self.ctl(&["auth", "enable"])?;
        self.ctl_user = Some(format!("root:{root_password}"));
        Ok(())
    }

    /// `etcdctl` (v3 API) against `endpoints` (comma-separated), with short timeouts, the TLS
    /// files and the user set for it.
    fn etcdctl(&self, endpoints: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let mut extra: Vec<std::ffi::OsString> = Vec::new();
        if let Some(tls) = &self.tls {
            extra.extend(["--cacert".into(), tls.ca.clone().into()]);
            if let Some(c) = &tls.ctl_client {
                extra.extend(["--cert".into(), c.cert.clone().into(), "--key".into(), c.key.clone().into()]);
            }
        }
        if let Some(user) = &self.ctl_user {
            extra.extend(["--user".into(), user.into()]);
        }
        etcdctl(endpoints, &extra, args)
    }

    /// The Prometheus text of member `i`'s `/metrics`.
    pub fn metrics(&self, i: usize) -> anyhow::Result<String> {
        let resp = crate::http_client::get(self.nodes[i].client_port, "/metrics", None)?;
        Ok(resp.body)
    }
}

/// `etcdctl` (v3 API) against `endpoints` (comma-separated), with short timeouts.
fn etcdctl(endpoints: &str, extra: &[std::ffi::OsString], args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoints, "--command-timeout", "5s", "--dial-timeout", "2s"])
        .args(extra)
        .args(args)
        .stdin(Stdio::null())
        .output()?)
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop_all();
    }
}
