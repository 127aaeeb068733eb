//! The watcher's connection loop: read the key, watch it from the revision read, and on
//! any failure pause (capped, jittered exponential backoff) and start over.
//!
//! Every etcd call has a deadline ([`CALL_TIMEOUT`]) and the HTTP/2 connection is probed
//! with keep-alives, so an endpoint that accepts but never answers cannot hang the loop. The
//! loop itself never ends by itself except when the spec queue is closed; `stop` cancels it
//! at whatever it awaits.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use etcd_client::{Client, EventType, WatchOptions};
use rand::{Rng, SeedableRng};
use vpcrouter_etcd_conn::{Access, Call, EtcdConn};
use vpcrouter_plugin_api::prelude::{Logger, SpecSink};
use vpcrouter_plugin_api::sync::lock;

use crate::track::{backoff, Tracker, Verdict, BACKOFF_MAX};

/// TCP connect deadline for one endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline of one etcd request once a connection is up (the client's own timeout).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Deadline of one etcd call as a whole (connect, read, watch creation), including the
/// wait for a usable endpoint, which the client's own timeout does not cover.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(4);
/// HTTP/2 keep-alive: ping interval, and how long a ping may go unanswered. etcd closes
/// connections that ping more often than every 5 s (`--grpc-keepalive-min-time`) or while
/// no stream is open, so pings are only sent while a call or the watch is open.
const KEEP_ALIVE: (Duration, Duration) = (Duration::from_secs(6), Duration::from_secs(4));
const _: () = assert!(KEEP_ALIVE.0.as_secs() > 5, "etcd refuses pings more often than every 5 s");

/// The watcher's state for the status server (the counters of specs sent and values
/// refused are the sink's).
#[derive(Debug, Default)]
pub struct Status {
    /// True while the key is read or watched.
    pub connected: bool,
    /// Whether the key existed at the last look (`None` before the first read).
    pub key_present: Option<bool>,
    /// The latest etcd revision seen.
    pub last_revision: i64,
    /// When the last spec was sent.
    pub last_update: Option<SystemTime>,
    /// Connection losses (one per outage).
    pub outages: u64,
    /// The last problem: an invalid value or a connection error.
    pub last_error: Option<String>,
}

/// Why one connection ended.
#[derive(Debug)]
enum End {
    /// Etcd could not be reached, or the connection or the watch broke.
    Lost(String),
    /// The spec queue is closed: nothing left to do.
    QueueClosed,
}

/// Runs `call` with [`CALL_TIMEOUT`]; `what` names it in the error, which is described
/// with `ctx` (the shared describer: TLS, login and permission errors as one clear line).
async fn within<T>(
    conn: &EtcdConn,
    what: &str,
    ctx: Call<'_>,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, End> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(|e| End::Lost(format!("{what}: {}", conn.describe(&e, ctx)))),
        Err(_) => Err(End::Lost(format!("{what}: no answer within {} s", CALL_TIMEOUT.as_secs()))),
    }
}

/// What reading `key` needs: read permission on it.
fn read_access<'a>(action: &'a str, key: &'a str) -> Access<'a> {
    Access { action, key, permission: "read", grant_on: key }
}

/// The etcd side of the watcher plugin.
pub struct Session {
    conn: EtcdConn,
    endpoints: Vec<String>,
    key: String,
    log: Logger,
    sink: SpecSink,
    status: Arc<Mutex<Status>>,
    tracker: Tracker,
    /// Failed attempts since the last healthy connection.
    failures: u32,
    /// When the current outage began (`None` while connected).
    outage: Option<Instant>,
    /// True once the key has been read at least once.
    ever_read: bool,
    /// The endpoint the next connection uses: one at a time, moving on to the next after a
    /// failure, so a dead or cut-off member is left behind.
    next_endpoint: usize,
}

impl Session {
    /// A session for `key` on `endpoints`; nothing happens until [`Session::run`].
    pub fn new(conn: EtcdConn, key: String, log: Logger, sink: SpecSink, status: Arc<Mutex<Status>>) -> Session {
        Session {
            endpoints: conn.urls(),
            conn,
            key,
            log,
            sink,
            status,
            tracker: Tracker::default(),
            failures: 0,
            outage: None,
            ever_read: false,
            next_endpoint: 0,
        }
    }

    /// Connects, reads, watches and reconnects until the spec queue is closed.
    pub async fn run(&mut self) {
        let mut rng = rand::rngs::StdRng::from_os_rng();
        loop {
            let mut watching_since = None;
            let end = self.connect_and_watch(&mut watching_since).await;
            let why = match end {
                End::QueueClosed => {
                    self.log.debug("The route spec queue is closed");
                    return;
                }
                End::Lost(why) => why,
            };
            // A watch that lived a while was a healthy connection: start the backoff over.
            if watching_since.is_some_and(|t: Instant| t.elapsed() >= BACKOFF_MAX) {
                self.failures = 0;
            }
            self.failures = self.failures.saturating_add(1);
            self.next_endpoint = (self.next_endpoint + 1) % self.endpoints.len().max(1);
            self.lost(&why);
            tokio::time::sleep(backoff(self.failures, rng.random::<f64>())).await;
        }
    }

    /// Logs a lost connection, once per outage.
    fn lost(&mut self, why: &str) {
        {
            let mut status = lock(&self.status);
            status.connected = false;
            status.last_error = Some(why.to_string());
            if self.outage.is_none() {
                status.outages += 1;
            }
        }
        if self.outage.is_some() {
            self.log.debug(format!("etcd still unreachable (attempt {}): {why}", self.failures));
            return;
        }
        self.outage = Some(Instant::now());
        let endpoints = self.endpoints.join(",");
        if self.ever_read {
            self.log.error(format!(
                "Lost the connection to etcd ({endpoints}): {why}; retrying with backoff (up to \
                 {} s apart); the last route spec stays in force",
                BACKOFF_MAX.as_secs()
            ));
        } else {
            self.log.error(format!(
                "Cannot read key '{}' from etcd ({endpoints}): {why}; retrying with backoff (up \
                 to {} s apart); no route spec is sent until it can be read",
                self.key,
                BACKOFF_MAX.as_secs()
            ));
        }
    }

    /// One connection: read the key, then follow its changes until something breaks.
    async fn connect_and_watch(&mut self, watching_since: &mut Option<Instant>) -> End {
        match self.connect_and_watch_inner(watching_since).await {
            Ok(never) => match never {},
            Err(end) => end,
        }
    }

    async fn connect_and_watch_inner(
        &mut self,
        watching_since: &mut Option<Instant>,
    ) -> Result<std::convert::Infallible, End> {
        // The --etcd-* files are read now: a rotated certificate is used from this connection on.
        let options = self
            .conn
            .connect_options()
            .map_err(|e| End::Lost(e.to_string()))?
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(KEEP_ALIVE.0, KEEP_ALIVE.1)
            .with_keep_alive_while_idle(false)
            // A member cut off from the quorum ends the watch instead of serving a stale one.
            .with_require_leader(true);
        let endpoint = self.endpoints[self.next_endpoint % self.endpoints.len()].clone();
        let fresh = Call { fresh: true, access: None };
        let mut client = within(&self.conn, "connect", fresh, Client::connect([endpoint], Some(options))).await?;

        // The value is used at once; the watch then starts right after the revision read, so
        // no change in between is missed.
        let ctx = Call { fresh: true, access: Some(read_access("read", &self.key)) };
        let read = within(&self.conn, "read", ctx, client.get(self.key.as_str(), None)).await?;
        let store_revision = read.header().map_or(0, |h| h.revision());
        let first_read = !std::mem::replace(&mut self.ever_read, true);
        match read.kvs().first() {
            Some(kv) => self.apply(Some(kv.value()), kv.mod_revision(), "read")?,
            None => self.apply(None, store_revision, "read")?,
        }

        let from = store_revision + 1;
        let watch = WatchOptions::new().with_start_revision(from);
        let key = self.key.clone();
        let ctx = Call { fresh: true, access: Some(read_access("watch", &key)) };
        let mut stream = within(&self.conn, "watch", ctx, client.watch(self.key.as_str(), Some(watch))).await?;
        // Connected once the watch is confirmed: a member that answers reads but cannot
        // watch is still part of the outage.
        let mut next = Some(within(&self.conn, "watch", ctx, stream.message()).await?);
        self.connected(store_revision, first_read);
        *watching_since = Some(Instant::now());
        loop {
            let message = match next.take() {
                Some(first) => first,
                None => stream.message().await.map_err(|e| {
                    End::Lost(self.conn.describe(&e, Call { fresh: false, access: Some(read_access("watch", &key)) }))
                })?,
            };
            let Some(resp) = message else {
                return Err(End::Lost("the watch stream ended".into()));
            };
            if resp.canceled() {
                let reason = match resp.compact_revision() {
                    0 => self.conn.describe_watch_cancel(resp.cancel_reason(), ctx),
                    rev => format!("revision {from} is compacted (oldest kept: {rev})"),
                };
                return Err(End::Lost(format!("etcd canceled the watch: {reason}")));
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                match event.event_type() {
                    EventType::Put => self.apply(Some(kv.value()), kv.mod_revision(), "put")?,
                    EventType::Delete => self.apply(None, kv.mod_revision(), "delete")?,
                }
            }
            if let Some(h) = resp.header() {
                let mut status = lock(&self.status);
                status.last_revision = status.last_revision.max(h.revision());
            }
        }
    }

    /// Records a confirmed watch; ends the outage, if any.
    fn connected(&mut self, revision: i64, first_read: bool) {
        {
            let mut status = lock(&self.status);
            status.connected = true;
            status.last_revision = status.last_revision.max(revision);
        }
        let key = &self.key;
        if let Some(since) = self.outage.take() {
            self.log.info(format!(
                "Reconnected to etcd after {:.1} s; key '{key}' re-read at revision {revision} and \
                 watched again",
                since.elapsed().as_secs_f64(),
            ));
        } else if first_read {
            self.log.info(format!("Connected to etcd; key '{key}' read at revision {revision} and watched"));
        }
    }

    /// Applies one observation of the key: logs it and sends the spec when it is new.
    fn apply(&mut self, value: Option<&[u8]>, revision: i64, how: &str) -> Result<(), End> {
        let verdict = self.tracker.observe(value, revision);
        let key = &self.key;
        {
            let mut status = lock(&self.status);
            status.key_present = self.tracker.present();
            status.last_revision = status.last_revision.max(revision);
        }
        match verdict {
            Verdict::Send(spec) => {
                self.log.info(format!("Route spec from etcd key '{key}' (revision {revision}, {how})"));
                self.log.debug(format!("Sending route spec {}", spec.to_json()));
                // Set before sending, so the status is current once the host has it.
                lock(&self.status).last_update = Some(SystemTime::now());
                if !self.sink.offer(spec) {
                    return Err(End::QueueClosed);
                }
            }
            Verdict::Unchanged => self.log.debug(format!(
                "etcd key '{key}' (revision {revision}, {how}): route spec unchanged, not sending it again"
            )),
            Verdict::Invalid(why) => {
                // The sink logs it, adding that the last good spec is kept, and counts it.
                let message = format!("etcd key '{key}' (revision {revision}) ignored: {why}");
                self.sink.reject(&message);
                lock(&self.status).last_error = Some(message);
            }
            Verdict::Waiting => self.log.warn(format!(
                "etcd key '{key}' does not exist; waiting for it to be put (no route spec is sent \
                 until then)"
            )),
            Verdict::Deleted { spec_in_force: true } => self.log.warn(format!(
                "etcd key '{key}' deleted; keeping the last route spec in force; put a new spec \
                 to change the routes"
            )),
            Verdict::Deleted { spec_in_force: false } => self.log.warn(format!(
                "etcd key '{key}' deleted before it held a valid route spec; waiting for it to \
                 be put"
            )),
            Verdict::StillAbsent | Verdict::Seen | Verdict::Stale => {
                self.log.debug(format!("etcd key '{key}' (revision {revision}, {how}): nothing new ({verdict:?})"))
            }
        }
        Ok(())
    }
}
