//! A throw-away single-member etcd for this crate's tests: free loopback ports, a scratch
//! data directory, killed on drop; it can be killed and started again with its data. Keys
//! are written with the crate's own etcd client. (The end-to-end tests use the fuller
//! harness in `tests/src/etcd.rs`; this one keeps the plugin's tests free of the host.)
//!
//! The executable is `$VPCROUTER_ETCD` or `etcd` on the PATH.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::Client;

/// A running (or stopped) etcd member.
pub struct Server {
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind a loopback port");
    listener.local_addr().expect("local address").port()
}

impl Server {
    /// Starts a member and waits until it serves.
    pub fn start() -> Server {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        // Both listeners held at once, so that the two ports differ.
        let (client, peer) = (TcpListener::bind("127.0.0.1:0").unwrap(), TcpListener::bind("127.0.0.1:0").unwrap());
        let (client_port, peer_port) = (client.local_addr().unwrap().port(), peer.local_addr().unwrap().port());
        drop((client, peer));
        let mut server = Server { child: None, client_port, peer_port, dir, runtime };
        server.restart();
        server
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Kills the member (SIGKILL: no goodbye to clients).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the member again with its data and ports, and waits until it serves.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "etcd is running");
        let binary = std::env::var_os("VPCROUTER_ETCD").map_or_else(|| PathBuf::from("etcd"), PathBuf::from);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("etcd.log")).unwrap();
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(&binary)
            .args(["--name", "n0", "--logger", "zap", "--log-outputs", "stderr"])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("n0={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e} (install etcd-server)", binary.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.call(|mut c| async move { c.get("/", None).await.map(drop) }).is_err() {
            let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "etcd does not serve at {client}:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `f` with a fresh client, with a deadline.
    fn call<F>(&self, f: impl FnOnce(Client) -> F) -> Result<(), String>
    where
        F: std::future::Future<Output = Result<(), etcd_client::Error>>,
    {
        self.runtime.block_on(async {
            let work = async {
                let client = Client::connect([self.endpoint()], None).await?;
                f(client).await
            };
            match tokio::time::timeout(Duration::from_secs(5), work).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err("timed out".to_string()),
            }
        })
    }

    /// Writes `key` = `value`.
    pub fn put(&self, key: &str, value: &str) {
        let (k, v) = (key.to_string(), value.to_string());
        self.call(|mut c| async move { c.put(k, v, None).await.map(drop) }).expect("etcd put");
    }

    /// Deletes `key`.
    pub fn delete(&self, key: &str) {
        let k = key.to_string();
        self.call(|mut c| async move { c.delete(k, None).await.map(drop) }).expect("etcd delete");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
