//! What the session thread, the engine and the status server share.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::view::{ClusterConfig, ClusterStatus};

/// The current lease, as the write gate needs it.
#[derive(Default)]
pub(crate) struct LeaseState {
    /// The session's client while connected: drain calls and confirmations use it.
    pub(crate) client: Option<etcd_client::Client>,
    /// The session's lease id; the leader key must carry it for this instance to lead.
    pub(crate) lease: i64,
    /// etcd keeps the lease at least until then: the last acknowledged keep-alive was sent
    /// at `valid_until - ttl`.
    pub(crate) valid_until: Option<Instant>,
    /// Whether this instance holds the leader key.
    pub(crate) leader: bool,
}

/// State shared by the session thread, the engine and the status server.
pub(crate) struct Shared {
    /// The `--cluster-*` options.
    pub(crate) cfg: ClusterConfig,
    /// The lease the write gate checks before each EC2 write.
    pub(crate) lease: Mutex<LeaseState>,
    /// What `/status` shows of the cluster.
    pub(crate) status: Mutex<ClusterStatus>,
    /// etcd requests sent (unary calls and keep-alives), for `/status` and `/metrics`.
    pub(crate) requests: AtomicU64,
}

impl Shared {
    pub(crate) fn count(&self, n: u64) {
        self.requests.fetch_add(n, Ordering::Relaxed);
    }
}
