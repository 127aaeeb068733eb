//! Cluster mode (`--cluster-etcd`): several vpcrouters as one, coordinated through etcd.
//!
//! Every instance runs its watcher and health plugin. Through etcd they:
//! * elect one leader: a lease (`--cluster-lease-ttl`) kept alive by each instance, and a
//!   leader key created only if absent, tied to the winner's lease. Only the leader
//!   reconciles, and before each EC2 write it confirms (see [`ClusterHandle::confirm`]) that
//!   its lease is still live and the leader key still its own;
//! * share health: each instance publishes its latest report under its lease, so a dead
//!   instance's view vanishes with it; the leader combines the live reports with
//!   `--health-quorum` ([`quorum`]).
//!
//! Keys, under `/vpcrouter/<cluster-name>/`: `leader` (value: the leader's instance id),
//! `members/<instance-id>` and `health/<instance-id>` (JSON), all tied to the writer's lease;
//! `drains/<ip>` (JSON, see [`crate::drain`]) with no lease: a drain outlives every instance.
//! Every instance watches them all, so each leader honours the drains in force.
//!
//! The etcd session runs on its own thread and runtime ([`session`]); the engine hears of
//! it through [`ClusterEvent`]s, and the status server reads [`ClusterStatus`].

pub use vpcrouter_engine::quorum;
mod session;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::sync::lock;

pub use quorum::{Quorum, Report};

/// How long before its lease runs out a leader stops writing: an EC2 write started later
/// could land after another instance took over.
const WRITE_MARGIN: Duration = Duration::from_millis(500);
/// The longest a confirmation round trip to etcd may take.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(1);

/// `--cluster-*` options.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// etcd: the endpoints, TLS and the user.
    pub conn: vpcrouter_etcd_conn::EtcdConn,
    /// Instances with the same name form one cluster (default: the VPC id).
    pub name: String,
    /// This instance's id, unique in the cluster (default: the hostname).
    pub instance_id: String,
    /// Lease time-to-live in seconds: how long a dead leader blocks a takeover.
    pub lease_ttl: u64,
    /// How many live health reports must call a host failed.
    pub quorum: Quorum,
}

impl ClusterConfig {
    /// The key prefix of this cluster, ending in `/`.
    pub fn prefix(&self) -> String {
        format!("/vpcrouter/{}/", self.name)
    }

    /// The leader key.
    pub fn leader_key(&self) -> String {
        format!("{}leader", self.prefix())
    }

    /// The prefix of the drain keys, ending in `/`.
    pub fn drain_prefix(&self) -> String {
        format!("{}drains/", self.prefix())
    }
}

/// Checks a cluster name or instance id: it becomes part of etcd keys.
pub fn check_name(what: &str, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(format!("{what} '{value}' is not usable: use 1–128 characters from A-Z a-z 0-9 - _ . :"))
    }
}

/// What the engine hears from the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// This instance became leader (`leader: true`) or is not (or no longer) the leader;
    /// `leader_id` is the current leader, if any is known.
    Role {
        /// Whether this instance may write to EC2.
        leader: bool,
        /// The leader's instance id.
        leader_id: Option<String>,
    },
    /// The live health reports of the other instances, by instance id.
    Reports(BTreeMap<String, Report>),
    /// The drains etcd holds (sent before the role, so a new leader knows them).
    Drains(crate::drain::DrainSet),
}

/// This instance's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Holds the leader key: reconciles and writes.
    Leader,
    /// Connected; another instance (or none yet) leads.
    Follower,
    /// No etcd session: neither leads nor counts as a member.
    #[default]
    Disconnected,
}

impl Role {
    /// `leader`, `follower` or `disconnected`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Disconnected => "disconnected",
        }
    }
}

/// A peer's report as the status server shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerView {
    /// The report.
    pub report: Report,
    /// When the instance published it (its own RFC 3339 time).
    pub at: String,
}

/// What `/status` and `/metrics` show of the cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterStatus {
    /// `--cluster-name`.
    pub name: String,
    /// `--instance-id`.
    pub instance_id: String,
    /// `--health-quorum`.
    pub quorum: &'static str,
    /// The lease TTL etcd granted (or the requested one before the first grant).
    pub lease_ttl_secs: u64,
    /// This instance's role.
    pub role: Role,
    /// The leader's instance id.
    pub leader: Option<String>,
    /// Live members' instance ids.
    pub members: BTreeSet<String>,
    /// Leader elections seen since start (each new holder of the leader key).
    pub leader_changes: u64,
    /// Live health reports, by instance id (this instance's included once published).
    pub reports: BTreeMap<String, PeerView>,
    /// Requests sent to etcd (unary calls and keep-alive messages).
    pub etcd_requests: u64,
    /// The last session error, while disconnected.
    pub last_error: Option<String>,
}

/// The current lease, as the write gate needs it.
#[derive(Default)]
struct LeaseState {
    client: Option<etcd_client::Client>,
    lease: i64,
    /// etcd keeps the lease at least until then: the last acknowledged keep-alive was sent
    /// at `valid_until - ttl`.
    valid_until: Option<Instant>,
    leader: bool,
}

/// State shared by the session thread, the engine and the status server.
struct Shared {
    cfg: ClusterConfig,
    lease: Mutex<LeaseState>,
    status: Mutex<ClusterStatus>,
    requests: AtomicU64,
}

impl Shared {
    fn count(&self, n: u64) {
        self.requests.fetch_add(n, Ordering::Relaxed);
    }
}

/// The running cluster membership: cheap to clone.
#[derive(Clone)]
pub struct ClusterHandle {
    shared: Arc<Shared>,
    reports: tokio::sync::watch::Sender<Option<Report>>,
    suspect: tokio::sync::mpsc::UnboundedSender<i64>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl ClusterHandle {
    /// Starts the etcd session thread; events go to `on_event`. Returns at once: etcd may
    /// be unreachable at start, and the session retries with backoff.
    pub fn start(
        cfg: ClusterConfig,
        on_event: impl Fn(ClusterEvent) + Send + 'static,
    ) -> anyhow::Result<ClusterHandle> {
        let status = ClusterStatus {
            name: cfg.name.clone(),
            instance_id: cfg.instance_id.clone(),
            quorum: cfg.quorum.as_str(),
            lease_ttl_secs: cfg.lease_ttl,
            ..ClusterStatus::default()
        };
        let shared =
            Arc::new(Shared { cfg, lease: Mutex::default(), status: Mutex::new(status), requests: AtomicU64::new(0) });
        let (reports, reports_rx) = tokio::sync::watch::channel(None);
        let (suspect, suspect_rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the cluster runtime")?;
        // Instances start on different endpoints, to spread the load over etcd's members.
        let first =
            shared.cfg.instance_id.bytes().map(usize::from).sum::<usize>() % shared.cfg.conn.endpoints.len().max(1);
        let session = session::Session {
            shared: shared.clone(),
            reports: reports_rx,
            suspect: suspect_rx,
            stop: stop_rx,
            on_event: Box::new(on_event),
            last_role: None,
            last_peers: None,
            last_drains: None,
            endpoint: first,
            joined: false,
        };
        let thread = std::thread::Builder::new()
            .name("cluster".into())
            .spawn(move || rt.block_on(session.run()))
            .context("cannot start the cluster thread")?;
        Ok(ClusterHandle { shared, reports, suspect, stop, thread: Arc::new(Mutex::new(Some(thread))) })
    }

    /// `--health-quorum`.
    pub fn quorum(&self) -> Quorum {
        self.shared.cfg.quorum
    }

    /// Publishes this instance's latest health report (the session writes it to etcd).
    pub fn publish(&self, report: Report) {
        self.reports.send_replace(Some(report));
    }

    /// Confirms, right before an EC2 write, that this instance still leads: its lease is
    /// known to be live for longer than a write margin, and a linearizable read of the
    /// leader key shows this instance's lease. Returns the instant until which the lease is
    /// known to be live (less the margin): the write must not be attempted after it. On
    /// failure the session is restarted (a fresh lease, a new election) and the caller must
    /// not write.
    pub async fn confirm(&self) -> Result<Instant, String> {
        let (client, lease, until) = {
            let l = lock(&self.shared.lease);
            match (&l.client, l.leader, l.valid_until) {
                (Some(c), true, Some(until)) => (c.clone(), l.lease, until),
                _ => return Err("this instance is not the leader".into()),
            }
        };
        let result = self.confirm_with(client, lease, until).await;
        if result.is_err() {
            lock(&self.shared.lease).leader = false;
            let _ = self.suspect.send(lease);
        }
        result
    }

    async fn confirm_with(&self, client: etcd_client::Client, lease: i64, until: Instant) -> Result<Instant, String> {
        let left = until.saturating_duration_since(Instant::now());
        if left <= WRITE_MARGIN {
            return Err(format!("the lease was not renewed in time (it expires in {} ms)", left.as_millis()));
        }
        let key = self.shared.cfg.leader_key();
        self.shared.count(1);
        let limit = (left - WRITE_MARGIN).min(CONFIRM_TIMEOUT);
        match tokio::time::timeout(limit, client.kv_client().get(key.as_str(), None)).await {
            Err(_) => Err(format!("etcd did not confirm the leader key within {} ms", limit.as_millis())),
            Ok(Err(e)) => {
                let prefix = self.shared.cfg.prefix();
                let access = session::access(&prefix, "read", &key);
                let call = vpcrouter_etcd_conn::Call { fresh: false, access: Some(access) };
                Err(format!("etcd did not confirm the leader key: {}", self.shared.cfg.conn.describe(&e, call)))
            }
            Ok(Ok(resp)) => match resp.kvs().first() {
                Some(kv) if kv.lease() == lease => Ok(until - WRITE_MARGIN),
                Some(kv) => Err(format!("the leader key is held by '{}'", String::from_utf8_lossy(kv.value()))),
                None => Err("the leader key is gone".into()),
            },
        }
    }

    /// The prefix of the drain keys in etcd.
    pub fn drain_prefix(&self) -> String {
        self.shared.cfg.drain_prefix()
    }

    /// Stores a drain in etcd (no lease); the watch brings it to every instance.
    pub async fn put_drain(&self, drain: &crate::drain::Drain) -> Result<(), String> {
        let key = format!("{}{}", self.shared.cfg.drain_prefix(), drain.ip);
        let value = serde_json::to_string(drain).map_err(|e| e.to_string())?;
        let client = self.client()?;
        let k = key.clone();
        self.drain_call("write", &key, async move { client.kv_client().put(k.as_str(), value, None).await.map(drop) })
            .await
    }

    /// Removes a drain from etcd.
    pub async fn delete_drain(&self, ip: std::net::Ipv4Addr) -> Result<(), String> {
        let key = format!("{}{ip}", self.shared.cfg.drain_prefix());
        let client = self.client()?;
        let k = key.clone();
        self.drain_call("write", &key, async move { client.kv_client().delete(k.as_str(), None).await.map(drop) }).await
    }

    /// The session's etcd client, while connected.
    fn client(&self) -> Result<etcd_client::Client, String> {
        lock(&self.shared.lease).client.clone().ok_or_else(|| {
            "this instance is not connected to etcd now (see /status cluster.last_error); retry once it is".to_string()
        })
    }

    /// One etcd call on a drain key, with the session's timeout, described on failure.
    async fn drain_call(
        &self,
        action: &str,
        key: &str,
        call: impl std::future::Future<Output = Result<(), etcd_client::Error>>,
    ) -> Result<(), String> {
        self.shared.count(1);
        match tokio::time::timeout(session::CALL_TIMEOUT, call).await {
            Err(_) => Err(format!("etcd did not answer within {} s", session::CALL_TIMEOUT.as_secs())),
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                let prefix = self.shared.cfg.prefix();
                let access = session::access(&prefix, action, key);
                let call = vpcrouter_etcd_conn::Call { fresh: false, access: Some(access) };
                Err(format!("etcd refused: {}", self.shared.cfg.conn.describe(&e, call)))
            }
        }
    }

    /// A copy of the cluster's state for the status server.
    pub fn status(&self) -> ClusterStatus {
        let mut st = lock(&self.shared.status).clone();
        st.etcd_requests = self.shared.requests.load(Ordering::Relaxed);
        st
    }

    /// Leaves the cluster: revokes the lease (so another instance takes over at once)
    /// and ends the session thread, waiting at most `timeout`.
    pub fn stop(&self, timeout: Duration) {
        self.stop.send_replace(true);
        let Some(thread) = lock(&self.thread).take() else { return };
        let end = Instant::now() + timeout;
        while !thread.is_finished() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            tracing::warn!(
                "the cluster session did not end within {} ms; its lease expires by itself",
                timeout.as_millis()
            );
        }
    }
}

/// The engine's leadership port: the etcd session's election and lease.
impl vpcrouter_engine::Leadership for ClusterHandle {
    fn quorum(&self) -> Quorum {
        ClusterHandle::quorum(self)
    }

    fn publish(&self, report: Report) {
        ClusterHandle::publish(self, report)
    }

    fn confirm(&self) -> vpcrouter_engine::ports::BoxFuture<'_, Result<Instant, String>> {
        Box::pin(ClusterHandle::confirm(self))
    }
}
