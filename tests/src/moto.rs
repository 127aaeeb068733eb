//! A moto server on a free loopback port, killed on drop.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, repo_root, wait_for};

/// A running moto server.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

/// The moto_server executable.
pub fn moto_server() -> PathBuf {
    std::env::var_os("VPCROUTER_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/moto_server"))
}

impl Moto {
    /// Starts moto and waits until it accepts connections.
    pub fn start() -> anyhow::Result<Moto> {
        let exe = moto_server();
        anyhow::ensure!(exe.exists(), "{} not found: run 'make venv' (or set VPCROUTER_MOTO_SERVER)", exe.display());
        let port = free_port();
        let child = Command::new(&exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let moto = Moto { child, endpoint: format!("http://127.0.0.1:{port}") };
        wait_for(Duration::from_secs(30), "moto to listen", || TcpStream::connect(("127.0.0.1", port)).ok())?;
        Ok(moto)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.endpoint.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_default()
    }

    /// moto's model instances (`/moto-api/data.json`): service → model → instances.
    pub fn model_data(&self) -> anyhow::Result<serde_json::Value> {
        crate::http_client::get(self.port(), "/moto-api/data.json", None)?.json()
    }

    /// The roles assumed through moto's STS so far (`AssumedRole` models: `role_arn`,
    /// `session_name`, `external_id`, `account_id`, `access_key_id`, ...).
    pub fn assumed_roles(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let data = self.model_data()?;
        Ok(data["sts"]["AssumedRole"].as_array().cloned().unwrap_or_default())
    }

    /// Turns on moto's IAM authentication after `after` more requests: from then on only
    /// keys moto issued (IAM users', assumed roles') are accepted, and only for what their
    /// policies allow.
    pub fn enforce_auth(&self, after: u32) -> anyhow::Result<()> {
        let r = crate::http_client::request(
            self.port(),
            "POST",
            "/moto-api/reset-auth",
            &[],
            after.to_string().as_bytes(),
        )?;
        anyhow::ensure!(r.status == 200, "moto refused reset-auth: {} {}", r.status, r.body);
        Ok(())
    }

    /// Environment for an SDK client (ours or vpcrouter's) to talk to this moto.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", crate::world::REGION),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
