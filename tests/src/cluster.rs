//! vpcrouter instances in cluster mode (`--cluster-etcd`), for tests and benchmarks: each
//! a [`Daemon`] with its own instance id, read through its `/status` and `/metrics`.

use std::time::{Duration, Instant};

use crate::daemon::{Daemon, DaemonBuilder};
use crate::{http_client, wait_for, wait_for_every};

/// One instance of a cluster.
pub struct Instance {
    /// `--instance-id`.
    pub id: String,
    /// The process.
    pub daemon: Daemon,
}

impl Instance {
    /// Starts `daemon` as instance `id` of the cluster on `etcd` (comma-separated URLs),
    /// with a lease of `ttl_secs`: the cluster options follow the builder's own.
    pub fn start(daemon: DaemonBuilder<'_>, etcd: &str, id: &str, ttl_secs: u64) -> anyhow::Result<Instance> {
        let ttl = ttl_secs.to_string();
        let daemon = daemon.args(["--cluster-etcd", etcd, "--instance-id", id, "--cluster-lease-ttl", ttl.as_str()]);
        Ok(Instance { id: id.to_string(), daemon: daemon.start()? })
    }

    /// The `/status` document, if the instance answers.
    pub fn status(&self) -> Option<serde_json::Value> {
        http_client::get(self.daemon.port, "/status", None).ok()?.json().ok()
    }

    /// `leader`, `follower` or `disconnected` (`None` if it does not answer).
    pub fn role(&self) -> Option<String> {
        Some(self.status()?["cluster"]["role"].as_str()?.to_string())
    }

    /// The leader this instance sees.
    pub fn leader(&self) -> Option<String> {
        Some(self.status()?["cluster"]["leader"].as_str()?.to_string())
    }

    /// EC2 write calls made so far (CreateRoute, ReplaceRoute, DeleteRoute; failed ones too).
    pub fn writes(&self) -> Option<u64> {
        let text = http_client::get(self.daemon.port, "/metrics", None).ok()?.body;
        let ops = ["CreateRoute", "ReplaceRoute", "DeleteRoute"];
        Some(
            text.lines()
                .filter(|l| {
                    ops.iter().any(|op| l.starts_with(&format!("vpcrouter_ec2_calls_total{{operation=\"{op}\"}}")))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64,
        )
    }

    /// A counter of `/metrics` without labels (0 if absent).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = http_client::get(self.daemon.port, "/metrics", None).ok()?.body;
        Some(text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0))
    }
}

/// Waits until exactly one of `instances` leads and every one names it; returns its index.
pub fn wait_one_leader(instances: &[&Instance], timeout: Duration) -> anyhow::Result<usize> {
    wait_for(timeout, "exactly one leader, seen by every instance", || {
        let roles: Vec<Option<String>> = instances.iter().map(|i| i.role()).collect();
        let leaders: Vec<usize> = (0..instances.len()).filter(|&i| roles[i].as_deref() == Some("leader")).collect();
        let [leader] = leaders.as_slice() else { return None };
        let id = &instances[*leader].id;
        instances.iter().all(|i| i.leader().as_deref() == Some(id)).then_some(*leader)
    })
}

/// Waits until one of `instances` reports itself leader, asking every `poll`; returns its
/// index and the time it took from `since`.
pub fn wait_new_leader(
    instances: &[&Instance],
    since: Instant,
    timeout: Duration,
    poll: Duration,
) -> anyhow::Result<(usize, Duration)> {
    wait_for_every(poll, timeout, "a new leader", || {
        (0..instances.len()).find(|&i| instances[i].role().as_deref() == Some("leader")).map(|i| (i, since.elapsed()))
    })
}
