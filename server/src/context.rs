//! What the server reads ([`ServerContext`]): the engine's state, the plugins, the EC2
//! adapter's counters, the cluster, the drains, the notifiers; and the [`Snapshot`] of them
//! a document is rendered from.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::json;
use vpcrouter_engine::status::Status;
use vpcrouter_plugin_api::sync::lock;
use vpcrouter_plugin_api::PluginStats;
use vpcrouter_plugin_host::Endpoints;
use vpcrouter_status::document::{self as status, PluginView, ServerInfo, Snapshot};
use vpcrouter_status::metrics::Metrics;

use crate::security::Security;

/// Time a plugin has to answer `status()` or a request.
pub(crate) const PLUGIN_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks a running plugin for its status.
pub type InfoFn = Arc<dyn Fn() -> vpcrouter_plugin_api::PluginStatus + Send + Sync>;

/// A loaded plugin as the server needs it.
pub struct PluginSource {
    /// Name, e.g. `http`.
    pub name: String,
    /// `watcher` or `health`.
    pub kind: &'static str,
    /// The plugin's version.
    pub version: String,
    /// Its options, by long name.
    pub arguments: BTreeMap<String, String>,
    /// Its status.
    pub info: InfoFn,
}

/// Everything the server reads.
pub struct ServerContext {
    /// Fixed facts about this run.
    pub info: ServerInfo,
    /// The engine's state.
    pub status: Arc<Mutex<Status>>,
    /// Plugin endpoints.
    pub endpoints: Endpoints,
    /// Watcher first, then the health plugin.
    pub plugins: Vec<PluginSource>,
    /// The EC2 adapter's counters and limits.
    pub ec2: Arc<dyn Fn() -> vpcrouter_engine::Ec2View + Send + Sync>,
    /// The instruments of `/metrics` (histograms).
    pub metrics: Arc<Metrics>,
    /// Cluster mode's membership, if on.
    pub cluster: Option<vpcrouter_cluster::ClusterHandle>,
    /// Token and TLS.
    pub security: Security,
    /// The drains in force, and the way to change them.
    pub drains: vpcrouter_drains::Drains,
    /// `Some(why)`: drain requests are refused (an unauthenticated server off loopback).
    pub drain_refusal: Option<String>,
    /// The notifiers (`--notify`), whose counters `/status` and `/metrics` show (none:
    /// `Notifiers::new(vpc_id)` with nothing added).
    pub notifiers: vpcrouter_notify::Notifiers,
}

impl ServerContext {
    /// The state at this moment; asks the plugins for their `status()` when `with_plugins`.
    pub(crate) async fn snapshot(&self, with_plugins: bool) -> Snapshot {
        let mut plugins = Vec::new();
        for p in self.plugins.iter().filter(|_| with_plugins) {
            plugins.push(p.view().await);
        }
        Snapshot {
            status: lock_status(self),
            plugins,
            ec2: (self.ec2)(),
            cluster: self.cluster.as_ref().map(|c| c.status()),
            drains: self.drains.list(),
            notifiers: self.notifiers.status(),
            now: SystemTime::now(),
        }
    }
}

impl PluginSource {
    /// The plugin as the documents show it, with its `status()` (asked on the blocking pool,
    /// within [`PLUGIN_CALL_TIMEOUT`]; an error in its place when it fails or is late).
    async fn view(&self) -> PluginView {
        let f = self.info.clone();
        let (info, health) = match tokio::time::timeout(PLUGIN_CALL_TIMEOUT, tokio::task::spawn_blocking(move || f()))
            .await
        {
            Ok(Ok(st)) => {
                let health = match &st.stats {
                    PluginStats::Health(h) => Some(h.clone()),
                    PluginStats::Watcher(_) | PluginStats::Notifier(_) => None,
                };
                (status::plugin_info(&st), health)
            }
            Ok(Err(e)) => (json!({"error": format!("status() failed: {e}")}), None),
            Err(_) => {
                (json!({"error": format!("status() did not answer within {} s", PLUGIN_CALL_TIMEOUT.as_secs())}), None)
            }
        };
        PluginView {
            name: self.name.clone(),
            kind: self.kind,
            version: self.version.clone(),
            arguments: self.arguments.clone(),
            info,
            health,
        }
    }
}

/// A copy of the engine's state (the lock is held only to copy it).
fn lock_status(ctx: &ServerContext) -> Status {
    lock(&ctx.status).clone()
}
