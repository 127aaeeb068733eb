//! The running cluster membership: started, confirmed before each write, stopped.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use vpcrouter_drains::{Drain, SharedStore, StoreFuture};
use vpcrouter_engine::quorum::{Quorum, Report};
use vpcrouter_plugin_api::sync::lock;

use crate::session;
use crate::shared::Shared;
use crate::view::{ClusterConfig, ClusterEvent, ClusterStatus};

/// How long before its lease runs out a leader stops writing: an EC2 write started later
/// could land after another instance took over.
const WRITE_MARGIN: Duration = Duration::from_millis(500);
/// The longest a confirmation round trip to etcd may take.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(1);

/// The running cluster membership: cheap to clone.
#[derive(Clone)]
pub struct ClusterHandle {
    /// The options, the lease the write gate checks and the status, shared with the session.
    shared: Arc<Shared>,
    /// This instance's latest health report, for the session to write to etcd: only the
    /// latest matters, so a watch channel.
    reports: tokio::sync::watch::Sender<Option<Report>>,
    /// Leases a failed confirmation suspects: the session holding one ends at once.
    suspect: tokio::sync::mpsc::UnboundedSender<i64>,
    /// Set to true to stop: the session revokes its lease and ends.
    stop: tokio::sync::watch::Sender<bool>,
    /// The session thread, taken (once, by any clone) to wait for it when stopping.
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
    pub async fn put_drain(&self, drain: &Drain) -> Result<(), String> {
        let key = format!("{}{}", self.shared.cfg.drain_prefix(), drain.ip);
        let value = serde_json::to_string(drain).map_err(|e| e.to_string())?;
        let client = self.client()?;
        let k = key.clone();
        self.drain_call("write", &key, async move { client.kv_client().put(k.as_str(), value, None).await.map(drop) })
            .await
    }

    /// Removes a drain from etcd.
    pub async fn delete_drain(&self, ip: Ipv4Addr) -> Result<(), String> {
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

/// The drains' shared store in cluster mode: etcd, through this session.
impl SharedStore for ClusterHandle {
    fn put<'a>(&'a self, drain: &'a Drain) -> StoreFuture<'a> {
        Box::pin(self.put_drain(drain))
    }

    fn delete(&self, ip: Ipv4Addr) -> StoreFuture<'_> {
        Box::pin(self.delete_drain(ip))
    }

    fn location(&self) -> String {
        format!("etcd {}", self.drain_prefix())
    }
}
