//! The etcd session: lease, membership, election, health publishing, and a watch on the
//! cluster's keys. A session ends on any etcd error; the loop in [`Session::run`] demotes
//! the instance at once, and starts a new session (new lease) after a backoff.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, KeyValue, LeaseKeepAliveResponse, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchResponse, WatchStream,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vpcrouter_etcd_conn::{Access, Call};

use vpcrouter_engine::quorum::Report;

use crate::shared::{LeaseState, Shared};
use crate::view::{ClusterEvent, PeerView, Role};
use vpcrouter_plugin_api::sync::lock;

/// Limit for one unary etcd call.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// First and longest pause between sessions.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    /// An etcd error, described ([`vpcrouter_etcd_conn::EtcdConn::describe`]).
    #[error("etcd: {0}")]
    Etcd(String),
    /// The `--etcd-*` files cannot be used (read at each connect).
    #[error("{0}")]
    Config(String),
    /// A call (named) got no answer within [`CALL_TIMEOUT`].
    #[error("etcd did not answer within {limit} s ({0})", limit = CALL_TIMEOUT.as_secs())]
    Timeout(&'static str),
    /// The lease, the watch or the leadership is gone (why).
    #[error("{0}")]
    Lost(String),
}

type Result<T> = std::result::Result<T, SessionError>;

/// What a call on the cluster's keys needs: read and write on the cluster's `prefix`.
pub(crate) fn access<'a>(prefix: &'a str, action: &'a str, key: &'a str) -> Access<'a> {
    Access { action, key, permission: "readwrite", grant_on: prefix }
}

/// A call of a session being opened (a fresh connection), on `key` if any.
fn opening<'a>(prefix: &'a str, action: &'a str, key: Option<&'a str>) -> Call<'a> {
    Call { fresh: true, access: key.map(|k| access(prefix, action, k)) }
}

/// A call of a session that is up.
fn up<'a>(prefix: &'a str, action: &'a str, key: &'a str) -> Call<'a> {
    Call { fresh: false, access: Some(access(prefix, action, key)) }
}

/// An etcd error of this session, described.
fn etcd_error(shared: &Shared, e: &etcd_client::Error, call: Call) -> SessionError {
    SessionError::Etcd(shared.cfg.conn.describe(e, call))
}

/// Runs one etcd call with [`CALL_TIMEOUT`], counting it; an error is described with `ctx`.
async fn call<T>(
    shared: &Shared,
    what: &'static str,
    ctx: Call<'_>,
    f: impl std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
) -> Result<T> {
    shared.count(1);
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| etcd_error(shared, &e, ctx)),
        Err(_) => Err(SessionError::Timeout(what)),
    }
}

/// Why a session ends when the engine could not confirm its leadership.
const SUSPECTED: &str = "leadership could not be confirmed before an EC2 write";

/// An etcd call inside the session loop, given up (the session is lost) as soon as the
/// engine suspects this session's lease: a call that hangs on a partitioned connection
/// (for up to [`CALL_TIMEOUT`]) must not keep the instance reporting itself as the leader.
async fn unless_suspected<T>(
    suspect: &mut tokio::sync::mpsc::UnboundedReceiver<i64>,
    lease: i64,
    f: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::pin!(f);
    let mut open = true;
    loop {
        tokio::select! {
            r = &mut f => return r,
            s = suspect.recv(), if open => match s {
                Some(s) if s == lease => return Err(SessionError::Lost(SUSPECTED.into())),
                Some(_) => {}
                None => open = false,
            },
        }
    }
}

/// The session loop's inputs.
pub(crate) struct Session {
    /// The options, the lease the write gate checks and the status, shared with the handle.
    pub shared: std::sync::Arc<Shared>,
    /// This instance's latest health report, from the engine: each new one is written to
    /// `health/<instance-id>` (and the latest again when a new session opens).
    pub reports: tokio::sync::watch::Receiver<Option<Report>>,
    /// Leases the engine could not confirm before an EC2 write: the session holding one of
    /// them ends at once, so a new session runs a new election.
    pub suspect: tokio::sync::mpsc::UnboundedReceiver<i64>,
    /// Set to true once, when vpcrouter stops: the session revokes its lease and ends.
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// Where role, peer report and drain changes go: the engine's events.
    pub on_event: Box<dyn Fn(ClusterEvent) + Send>,
    /// The role last told to the engine.
    pub last_role: Option<(bool, Option<String>)>,
    /// The peer reports last told to the engine.
    pub last_peers: Option<BTreeMap<String, Report>>,
    /// The endpoint the next session connects to: one at a time, moving on to the next
    /// after a failure (a dead or partitioned member is left behind).
    pub endpoint: usize,
    /// Whether a session was ever up (for the wording of the first failure).
    pub joined: bool,
    /// The drains last sent to the engine.
    pub last_drains: Option<vpcrouter_drains::DrainSet>,
}

/// What this instance knows of the cluster's keys.
#[derive(Debug, Default)]
struct View {
    /// The leader key's value and lease.
    leader: Option<(String, i64)>,
    /// The instance ids under `members/`: who is in the cluster, for `/status`.
    members: BTreeSet<String>,
    /// Every instance's latest readable report under `health/`, this one's included: the
    /// others' go to the engine's quorum, all of them to `/status`.
    reports: BTreeMap<String, PeerView>,
    /// The drains under `drains/`: every leader honours them.
    drains: vpcrouter_drains::DrainSet,
}

/// The cluster's keys a session reads and writes, from the `--cluster-*` options.
struct Keys {
    /// `/vpcrouter/<cluster-name>/`: every key of the cluster is under it, and the watch
    /// covers it all.
    prefix: String,
    /// Whoever holds it leads; created only if absent, tied to the winner's lease.
    leader: String,
    /// This instance's membership record, tied to its lease.
    member: String,
    /// This instance's latest health report, tied to its lease: the leader's quorum reads it.
    health: String,
}

impl Keys {
    fn of(cfg: &crate::view::ClusterConfig) -> Keys {
        let prefix = cfg.prefix();
        Keys {
            leader: cfg.leader_key(),
            member: format!("{prefix}members/{}", cfg.instance_id),
            health: format!("{prefix}health/{}", cfg.instance_id),
            prefix,
        }
    }
}

/// A session's lease and its keep-alives.
struct Lease {
    /// The lease's id: every key this instance writes is tied to it.
    id: i64,
    /// The TTL etcd granted: keep-alives go every third of it, and an instance whose lease
    /// was not renewed within it is no longer a member.
    ttl: Duration,
    /// Sends the keep-alives.
    keeper: LeaseKeeper,
    /// etcd's answers to the keep-alives.
    acks: LeaseKeepAliveStream,
    /// When each unanswered keep-alive was sent, oldest first: an answer extends the lease
    /// from the moment its request left, not from its arrival.
    pending: VecDeque<Instant>,
}

impl Lease {
    /// Sends a keep-alive, counted and remembered until answered.
    async fn keep_alive(&mut self, shared: &Shared) -> Result<()> {
        shared.count(1);
        self.pending.push_back(Instant::now());
        self.keeper.keep_alive().await.map_err(|e| etcd_error(shared, &e, Call::default()))
    }

    /// A keep-alive's answer: the lease is live for a TTL from when the request was sent,
    /// or it is lost.
    fn acknowledged(
        &mut self,
        shared: &Shared,
        ack: std::result::Result<Option<LeaseKeepAliveResponse>, etcd_client::Error>,
    ) -> Result<()> {
        match ack.map_err(|e| etcd_error(shared, &e, Call::default()))? {
            Some(r) if r.ttl() > 0 => {
                if let Some(sent) = self.pending.pop_front() {
                    lock(&shared.lease).valid_until = Some(sent + self.ttl);
                }
                Ok(())
            }
            Some(_) => Err(SessionError::Lost("etcd says the lease expired".into())),
            None => Err(SessionError::Lost("the lease keep-alive stream closed".into())),
        }
    }
}

/// A session that is up.
struct Live {
    /// The connection to etcd, to one endpoint.
    client: Client,
    /// The lease every key of this instance is tied to.
    lease: Lease,
    /// Changes to the cluster's keys, from the revision after the view's snapshot.
    watch: WatchStream,
    /// The cluster's keys as last seen.
    view: View,
}

/// Ties a key to `lease`: it vanishes when the lease expires or is revoked.
fn with_lease(lease: i64) -> Option<PutOptions> {
    Some(PutOptions::new().with_lease(lease))
}

impl View {
    /// Applies one key's new value (`None`: deleted).
    fn apply(&mut self, prefix: &str, key: &[u8], value: Option<&KeyValue>) {
        let Some(rest) = std::str::from_utf8(key).ok().and_then(|k| k.strip_prefix(prefix)) else { return };
        if rest == "leader" {
            self.leader = value.map(|kv| (String::from_utf8_lossy(kv.value()).into_owned(), kv.lease()));
        } else if let Some(id) = rest.strip_prefix("members/") {
            match value {
                Some(_) => self.members.insert(id.to_string()),
                None => self.members.remove(id),
            };
        } else if let Some(ip) = rest.strip_prefix("drains/") {
            let Some(addr) = vpcrouter_plugin_api::spec::parse_ipv4(ip) else {
                tracing::warn!(key = %String::from_utf8_lossy(key), "ignoring a drain key in etcd that names no IPv4 address");
                return;
            };
            match value {
                None => {
                    self.drains.remove(&addr);
                }
                Some(kv) => {
                    // The key is the drain; a value vpcrouter cannot read still drains the router.
                    let drain = match serde_json::from_slice::<vpcrouter_drains::Drain>(kv.value()) {
                        Ok(d) if d.ip == addr => d,
                        _ => {
                            tracing::warn!(router = %addr, "a drain record in etcd is unreadable; the router stays drained");
                            vpcrouter_drains::Drain {
                                ip: addr,
                                since: String::new(),
                                reason: "(unreadable record in etcd)".into(),
                            }
                        }
                    };
                    self.drains.insert(addr, drain);
                }
            }
        } else if let Some(id) = rest.strip_prefix("health/") {
            match value.map(|kv| parse_report(kv.value())) {
                Some(Ok(view)) => {
                    self.reports.insert(id.to_string(), view);
                }
                Some(Err(e)) => {
                    tracing::warn!(instance = id, "ignoring an unreadable health report in etcd: {e}");
                    self.reports.remove(id);
                }
                None => {
                    self.reports.remove(id);
                }
            }
        }
    }
}

/// A published report: `{"failed": [...], "questionable": [...], "at": "..."}`.
fn parse_report(value: &[u8]) -> std::result::Result<PeerView, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Doc {
        #[serde(flatten)]
        report: Report,
        #[serde(default)]
        at: String,
    }
    let doc: Doc = serde_json::from_slice(value)?;
    Ok(PeerView { report: doc.report, at: doc.at })
}

fn report_json(report: &Report) -> String {
    let mut doc = serde_json::to_value(report).unwrap_or_default();
    doc["at"] = vpcrouter_plugin_api::time::rfc3339(std::time::SystemTime::now()).into();
    doc.to_string()
}

impl Session {
    /// Sessions, one after the other, until stopped.
    pub async fn run(mut self) {
        let mut failures = 0;
        let mut stale_lease = None;
        let mut healthy = true;
        let mut rng = StdRng::from_os_rng();
        loop {
            let result = self.session(&mut stale_lease, &mut healthy).await;
            self.demote();
            let e = match result {
                Ok(()) => return,
                Err(e) => e,
            };
            if healthy {
                if self.joined {
                    tracing::warn!("cluster: etcd session lost, not leading until a new session is up: {e}");
                } else {
                    tracing::warn!(
                        "cluster: cannot open an etcd session yet (will retry), not leading until one is up: {e}"
                    );
                }
                healthy = false;
                failures = 0;
            } else {
                tracing::debug!("cluster: etcd still unavailable: {e}");
            }
            lock(&self.shared.status).last_error = Some(e.to_string());
            failures += 1;
            let pause = vpcrouter_plugin_api::time::backoff(BACKOFF_MIN, BACKOFF_MAX, failures, rng.random());
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = self.stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Not leading, not connected: told to the engine at once.
    fn demote(&mut self) {
        {
            let mut l = lock(&self.shared.lease);
            l.leader = false;
            l.client = None;
            l.valid_until = None;
        }
        {
            let mut st = lock(&self.shared.status);
            st.role = Role::Disconnected;
            st.leader = None;
            st.members.clear();
            st.reports.clear();
        }
        self.last_peers = None;
        self.send_role(false, None);
    }

    /// Tells the engine this instance's role and the leader, when they changed.
    fn send_role(&mut self, leader: bool, leader_id: Option<String>) {
        let now = (leader, leader_id);
        if self.last_role.as_ref() != Some(&now) {
            (self.on_event)(ClusterEvent::Role { leader: now.0, leader_id: now.1.clone() });
            self.last_role = Some(now);
        }
    }

    /// One session: returns `Ok` only when stopped.
    async fn session(&mut self, stale_lease: &mut Option<i64>, healthy: &mut bool) -> Result<()> {
        let keys = Keys::of(&self.shared.cfg);
        let (mut client, endpoint) = self.connect(&keys).await?;
        let previous = stale_lease.take();
        let lease = self.open_lease(&mut client, &keys, previous, stale_lease).await?;
        self.register(&mut client, &keys, lease.id, previous).await?;
        let (view, watch) = self.watch_keys(&mut client, &keys).await?;
        self.joined(&endpoint, lease.ttl, healthy);
        let mut live = Live { client, lease, watch, view };
        self.campaign(&mut live, &keys, true).await?;
        self.publish(&live.view, live.lease.id);
        self.serve(&mut live, &keys, stale_lease).await
    }

    /// Connects to the next endpoint, with the `--etcd-*` files as they are now: a rotated
    /// certificate is used from this session on. Returns the client and the endpoint.
    async fn connect(&mut self, keys: &Keys) -> Result<(Client, String)> {
        let shared = self.shared.clone();
        let options = shared
            .cfg
            .conn
            .connect_options()
            .map_err(|e| SessionError::Config(e.to_string()))?
            .with_connect_timeout(CALL_TIMEOUT)
            // etcd closes connections that ping more often than every 5 s; a dead connection
            // is noticed sooner anyway, by the lease keep-alives (every TTL / 3).
            .with_keep_alive(Duration::from_secs(6), Duration::from_secs(3))
            .with_require_leader(true);
        let endpoints = shared.cfg.conn.urls();
        let endpoint = endpoints[self.endpoint % endpoints.len()].clone();
        // Until this session is up, a failure moves on to the next endpoint.
        self.endpoint = (self.endpoint + 1) % endpoints.len();
        let connect = Client::connect([endpoint.as_str()], Some(options));
        let client = call(&shared, "connect", opening(&keys.prefix, "", None), connect).await?;
        Ok((client, endpoint))
    }

    /// Frees the `previous` session's lease, if any, and grants this session's, kept alive
    /// from now on. `stale_lease` holds the new lease as soon as it exists.
    async fn open_lease(
        &self,
        client: &mut Client,
        keys: &Keys,
        previous: Option<i64>,
        stale_lease: &mut Option<i64>,
    ) -> Result<Lease> {
        let (shared, p) = (&*self.shared, keys.prefix.as_str());
        if let Some(old) = previous {
            // The previous session's lease may still hold the leader key: free it now
            // rather than after its TTL.
            let _ = call(shared, "lease revoke", opening(p, "", None), client.lease_revoke(old)).await;
        }
        let sent = Instant::now();
        let grant =
            call(shared, "lease grant", opening(p, "", None), client.lease_grant(shared.cfg.lease_ttl as i64, None))
                .await?;
        let (id, ttl) = (grant.id(), Duration::from_secs(grant.ttl().max(1) as u64));
        *stale_lease = Some(id);
        *lock(&shared.lease) =
            LeaseState { client: Some(client.clone()), lease: id, valid_until: Some(sent + ttl), leader: false };
        let (keeper, acks) =
            call(shared, "lease keep-alive", opening(p, "", None), client.lease_keep_alive(id)).await?;
        Ok(Lease { id, ttl, keeper, acks, pending: VecDeque::new() })
    }

    /// Registers this instance as a member under `lease`, and publishes its latest health
    /// report if there is one yet.
    async fn register(&mut self, client: &mut Client, keys: &Keys, lease: i64, previous: Option<i64>) -> Result<()> {
        let (shared, p) = (&*self.shared, keys.prefix.as_str());
        let cfg = &shared.cfg;
        let member = serde_json::json!({
            "instance_id": cfg.instance_id, "version": env!("CARGO_PKG_VERSION"),
            "since": vpcrouter_plugin_api::time::rfc3339(std::time::SystemTime::now()),
        });
        let key = keys.member.as_str();
        let existing = call(shared, "get", opening(p, "read", Some(key)), client.get(key, None)).await?;
        if existing.kvs().first().is_some_and(|kv| kv.lease() != 0 && Some(kv.lease()) != previous) {
            tracing::warn!(instance = %cfg.instance_id, "cluster: a member with this instance id is already registered \
                (a restart within the lease TTL, or another instance with the same --instance-id: ids must be unique)");
        }
        let put = client.put(key, member.to_string(), with_lease(lease));
        call(shared, "put member", opening(p, "write", Some(key)), put).await?;
        let current = self.reports.borrow_and_update().clone();
        if let Some(r) = current {
            let put = client.put(keys.health.as_str(), report_json(&r), with_lease(lease));
            call(shared, "put health", opening(p, "write", Some(&keys.health)), put).await?;
        }
        Ok(())
    }

    /// Reads every key of the cluster, then watches them from the next revision on.
    async fn watch_keys(&self, client: &mut Client, keys: &Keys) -> Result<(View, WatchStream)> {
        let (shared, p) = (&*self.shared, keys.prefix.as_str());
        let get = client.get(p, Some(GetOptions::new().with_prefix()));
        let snapshot = call(shared, "get", opening(p, "read", Some(p)), get).await?;
        let revision = snapshot.header().map_or(0, |h| h.revision());
        let mut view = View::default();
        for kv in snapshot.kvs() {
            view.apply(p, kv.key(), Some(kv));
        }
        let watch_opts = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
        let watch = call(shared, "watch", opening(p, "watch", Some(p)), client.watch(p, Some(watch_opts))).await?;
        Ok((view, watch))
    }

    /// The session is up: says so, and stays with this `endpoint` next time too.
    fn joined(&mut self, endpoint: &str, ttl: Duration, healthy: &mut bool) {
        if !*healthy {
            tracing::info!("cluster: etcd session restored");
            *healthy = true;
        }
        let cfg = &self.shared.cfg;
        let count = cfg.conn.urls().len();
        self.endpoint = (self.endpoint + count - 1) % count;
        tracing::info!(instance = %cfg.instance_id, cluster = %cfg.name, etcd = %endpoint, lease_ttl_s = ttl.as_secs(), "cluster: joined");
        self.joined = true;
        lock(&self.shared.status).lease_ttl_secs = ttl.as_secs();
        lock(&self.shared.status).last_error = None;
    }

    /// The session that is up, until stopped (`Ok`) or lost: keeps the lease alive, follows
    /// the watch, publishes this instance's reports.
    async fn serve(&mut self, live: &mut Live, keys: &Keys, stale_lease: &mut Option<i64>) -> Result<()> {
        let mut tick = tokio::time::interval(live.lease.ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let valid_until = lock(&self.shared.lease).valid_until.unwrap_or_else(Instant::now);
            let stopping = *self.stop.borrow_and_update();
            tokio::select! {
                // Only ever set to true: a change means stop.
                changed = self.stop.changed(), if !stopping => {
                    if changed.is_err() {
                        return Ok(()); // every handle is gone: the lease expires by itself
                    }
                    continue;
                }
                () = std::future::ready(()), if stopping => return self.leave(live, stale_lease).await,
                Some(suspected) = self.suspect.recv() => {
                    if suspected == live.lease.id {
                        return Err(SessionError::Lost(SUSPECTED.into()));
                    }
                }
                _ = tick.tick() => live.lease.keep_alive(&self.shared).await?,
                ack = live.lease.acks.message() => live.lease.acknowledged(&self.shared, ack)?,
                () = tokio::time::sleep_until(valid_until.into()) => {
                    let ttl = live.lease.ttl.as_secs();
                    return Err(SessionError::Lost(format!("the lease was not renewed within its TTL ({ttl} s)")));
                }
                msg = live.watch.message() => self.watched(live, keys, msg).await?,
                changed = self.reports.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    self.put_report(live, keys).await?;
                }
            }
        }
    }

    /// Leaves at once, revoking the lease: a follower takes over without waiting for the TTL.
    async fn leave(&self, live: &mut Live, stale_lease: &mut Option<i64>) -> Result<()> {
        let _ = call(&self.shared, "lease revoke", Call::default(), live.client.lease_revoke(live.lease.id)).await;
        *stale_lease = None;
        tracing::info!("cluster: left (lease revoked)");
        Ok(())
    }

    /// Applies one watch message to the view, then campaigns if no one leads and tells what
    /// the view now means.
    async fn watched(
        &mut self,
        live: &mut Live,
        keys: &Keys,
        msg: std::result::Result<Option<WatchResponse>, etcd_client::Error>,
    ) -> Result<()> {
        let p = keys.prefix.as_str();
        let msg = msg.map_err(|e| etcd_error(&self.shared, &e, up(p, "watch", p)))?;
        let Some(resp) = msg else { return Err(SessionError::Lost("the watch stream closed".into())) };
        if resp.canceled() {
            let line = self.shared.cfg.conn.describe_watch_cancel(resp.cancel_reason(), up(p, "watch", p));
            return Err(SessionError::Lost(format!("etcd cancelled the watch: {line}")));
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let value = (ev.event_type() == EventType::Put).then_some(kv);
            if kv.key() == keys.leader.as_bytes() && value.is_some() {
                lock(&self.shared.status).leader_changes += 1;
            }
            live.view.apply(p, kv.key(), value);
        }
        self.campaign(live, keys, false).await?;
        self.publish(&live.view, live.lease.id);
        Ok(())
    }

    /// Writes this instance's latest health report, if any; given up as soon as the engine
    /// suspects the lease.
    async fn put_report(&mut self, live: &mut Live, keys: &Keys) -> Result<()> {
        let report = self.reports.borrow_and_update().clone();
        if let Some(r) = report {
            let lease = live.lease.id;
            let put = live.client.put(keys.health.as_str(), report_json(&r), with_lease(lease));
            let put = call(&self.shared, "put health", up(&keys.prefix, "write", &keys.health), put);
            unless_suspected(&mut self.suspect, lease, put).await?;
        }
        Ok(())
    }

    /// Creates the leader key with this instance's lease if no one holds it.
    /// `fresh`: during the session's opening.
    async fn campaign(&self, live: &mut Live, keys: &Keys, fresh: bool) -> Result<()> {
        if live.view.leader.is_some() {
            return Ok(());
        }
        let (id, lease, leader_key) = (self.shared.cfg.instance_id.clone(), live.lease.id, keys.leader.as_str());
        let txn = Txn::new()
            .when([Compare::create_revision(leader_key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(leader_key, id.as_str(), with_lease(lease))])
            .or_else([TxnOp::get(leader_key, None)]);
        let ctx = Call { fresh, access: Some(access(&keys.prefix, "write", leader_key)) };
        let resp = call(&self.shared, "campaign", ctx, live.client.txn(txn)).await?;
        if resp.succeeded() {
            tracing::info!(instance = %id, "cluster: elected leader");
            live.view.leader = Some((id, lease));
        } else if let Some(TxnOpResponse::Get(g)) = resp.op_responses().into_iter().next() {
            live.view.leader = g.kvs().first().map(|kv| (String::from_utf8_lossy(kv.value()).into_owned(), kv.lease()));
        }
        Ok(())
    }

    /// Tells the engine and the status server what `view` means for this instance.
    fn publish(&mut self, view: &View, lease: i64) {
        let me = self.shared.cfg.instance_id.clone();
        let me = &me;
        let leader = view.leader.as_ref().is_some_and(|(_, l)| *l == lease);
        let leader_id = view.leader.as_ref().map(|(id, _)| id.clone());
        lock(&self.shared.lease).leader = leader;
        {
            let mut st = lock(&self.shared.status);
            if leader && st.role != Role::Leader {
                tracing::info!(instance = %me, "cluster: this instance leads: it reconciles and writes to EC2");
            } else if !leader && st.role == Role::Leader {
                tracing::warn!(instance = %me, leader = ?leader_id, "cluster: no longer the leader: EC2 writes stop");
            }
            st.role = if leader { Role::Leader } else { Role::Follower };
            st.leader = leader_id.clone();
            st.members = view.members.clone();
            st.reports = view.reports.clone();
        }
        let peers: BTreeMap<String, Report> =
            view.reports.iter().filter(|(id, _)| *id != me).map(|(id, v)| (id.clone(), v.report.clone())).collect();
        if self.last_peers.as_ref() != Some(&peers) {
            (self.on_event)(ClusterEvent::Reports(peers.clone()));
            self.last_peers = Some(peers);
        }
        // Before the role: a new leader plans with the drains in force.
        if self.last_drains.as_ref() != Some(&view.drains) {
            (self.on_event)(ClusterEvent::Drains(view.drains.clone()));
            self.last_drains = Some(view.drains.clone());
        }
        self.send_role(leader, leader_id);
    }
}
