//! The fan-out: each event rendered once and queued for every notifier ([`Notifiers`]), the
//! engine's [`Announcer`](vpcrouter_engine::Announcer), and the stop bounded by a deadline.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use vpcrouter_engine::Announcement;
use vpcrouter_plugin_api::sync::lock;

use crate::event::{Event, Rendered};
use crate::queue::{Notifier, NotifierStatus};
use crate::sink::Sink;

/// Every notifier of the daemon. Clones are cheap and share the notifiers: the engine's
/// announcer, the drains' callback and the status server each hold one.
#[derive(Clone)]
pub struct Notifiers {
    /// The state the clones share.
    hub: Arc<Hub>,
}

/// What [`Notifiers`] clones share.
struct Hub {
    /// The VPC id every event names (`vpc`).
    vpc: String,
    /// The notifiers, in the order they were added.
    running: Mutex<Vec<Running>>,
    /// Stopped: events are no longer accepted, notifiers no longer added.
    stopped: AtomicBool,
    /// Cluster mode: only the leader speaks for the cluster (see
    /// [`Notifiers::only_while_leading`]).
    leader_only: AtomicBool,
    /// This instance leads (last told by a `leader` or `follower` event).
    leading: AtomicBool,
}

/// A notifier and its delivery thread.
struct Running {
    /// The notifier.
    notifier: Arc<Notifier>,
    /// Its delivery thread, until the stop joins it (or leaves it behind).
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Notifiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = lock(&self.hub.running).iter().map(|r| r.notifier.name()).collect();
        f.debug_struct("Notifiers").field("vpc", &self.hub.vpc).field("notifiers", &names).finish()
    }
}

impl Notifiers {
    /// No notifiers yet, for VPC `vpc_id`.
    pub fn new(vpc_id: &str) -> Notifiers {
        let hub = Hub {
            vpc: vpc_id.to_string(),
            running: Mutex::default(),
            stopped: AtomicBool::new(false),
            leader_only: AtomicBool::new(false),
            leading: AtomicBool::new(false),
        };
        Notifiers { hub: Arc::new(hub) }
    }

    /// Cluster mode (`on`): only the leader speaks for the cluster, so that N instances do not
    /// tell the same change N times. Events are then sent only while this instance leads:
    /// `leader` is sent (and from then on every event), `follower` only when it ends a
    /// leadership (a follower from the start stays silent), anything else only while leading.
    pub fn only_while_leading(&mut self, on: bool) {
        self.hub.leader_only.store(on, Ordering::SeqCst);
    }

    /// Whether this instance tells `event` (see [`Notifiers::only_while_leading`]); follows
    /// the leadership on `leader` and `follower`.
    fn speaks(&self, event: &Event) -> bool {
        if !self.hub.leader_only.load(Ordering::SeqCst) {
            return true;
        }
        match event {
            Event::Engine(Announcement::Leader) => {
                self.hub.leading.store(true, Ordering::SeqCst);
                true
            }
            Event::Engine(Announcement::Follower) => self.hub.leading.swap(false, Ordering::SeqCst),
            _ => self.hub.leading.load(Ordering::SeqCst),
        }
    }

    /// Adds notifier `name` delivering to `sink` through a queue of `capacity` events (see
    /// [`DEFAULT_QUEUE`](crate::DEFAULT_QUEUE)), and starts its delivery thread `notify-NAME`.
    pub fn add(&self, name: &str, sink: Arc<dyn Sink>, capacity: usize) -> Result<(), String> {
        if capacity == 0 {
            return Err(format!("notifier {name}: the queue must hold at least one event"));
        }
        let mut running = lock(&self.hub.running);
        if self.hub.stopped.load(Ordering::SeqCst) {
            return Err(format!("notifier {name}: the notifiers are stopped"));
        }
        if running.iter().any(|r| r.notifier.name() == name) {
            return Err(format!("notifier {name} is given twice: give each --notify once"));
        }
        let notifier = Notifier::new(name, sink, capacity);
        let thread = notifier.start().map_err(|e| format!("notifier {name}: cannot start its thread: {e}"))?;
        running.push(Running { notifier, thread: Some(thread) });
        tracing::debug!(notifier = name, capacity, "notifier started");
        Ok(())
    }

    /// Tells every notifier `event`: rendered once, queued for each (the oldest queued event
    /// dropped where a queue is full). Never waits for a notifier.
    pub fn send(&self, event: Event) {
        if self.hub.stopped.load(Ordering::SeqCst) {
            tracing::debug!(event = event.name(), "notifiers stopped: event not sent");
            return;
        }
        if !self.speaks(&event) {
            tracing::trace!(event = event.name(), "not the cluster's leader: event not sent");
            return;
        }
        let running = lock(&self.hub.running);
        if running.is_empty() {
            return;
        }
        let rendered = Arc::new(Rendered::new(&event, &self.hub.vpc, SystemTime::now()));
        for r in running.iter() {
            r.notifier.push(rendered.clone());
        }
    }

    /// Each notifier's counters, in the order they were added.
    pub fn status(&self) -> Vec<NotifierStatus> {
        lock(&self.hub.running).iter().map(|r| r.notifier.status()).collect()
    }

    /// Stops, within `within` overall: no more events are accepted; for the first half of
    /// `within` the notifiers deliver what is queued (the last events before a SIGTERM are
    /// not lost to a healthy notifier); then each sink is told to stop (on a thread of its
    /// own, so a delivery under way gives up); the delivery threads are waited for until the
    /// deadline (one stuck in a delivery is left behind); then what is undelivered (the
    /// queues, and an event still in flight) is counted as dropped and logged. Further calls
    /// do nothing.
    pub fn stop(&self, within: Duration) {
        let deadline = Instant::now() + within;
        if self.hub.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut stopping: Vec<(Arc<Notifier>, Option<JoinHandle<()>>)> =
            lock(&self.hub.running).iter_mut().map(|r| (r.notifier.clone(), r.thread.take())).collect();
        let drained_by = Instant::now() + within / 2;
        for (notifier, _) in &stopping {
            notifier.wait_drained(drained_by);
        }
        for (notifier, _) in &stopping {
            notifier.close();
        }
        let (done, sinks_stopped) = mpsc::channel();
        let mut sinks = Vec::new();
        for (notifier, _) in &stopping {
            if stop_sink(notifier, within, done.clone()) {
                sinks.push(notifier.name());
            }
        }
        drop(done);
        for (notifier, thread) in &mut stopping {
            join_until(notifier, thread.take(), deadline);
        }
        wait_sinks(&sinks_stopped, sinks, deadline);
        for (notifier, _) in &stopping {
            let dropped = notifier.abandon();
            if dropped > 0 {
                tracing::warn!(notifier = notifier.name(), dropped, "notifier stopped: undelivered events dropped");
            } else {
                tracing::debug!(notifier = notifier.name(), "notifier stopped");
            }
        }
    }
}

/// Calls the sink's `stop` on a thread of its own, which sends the notifier's name on `done`
/// when that returns; whether the thread started.
fn stop_sink(notifier: &Notifier, within: Duration, done: mpsc::Sender<String>) -> bool {
    let (name, sink) = (notifier.name(), notifier.sink());
    let thread_name = format!("notify-stop-{name}");
    let spawned = std::thread::Builder::new().name(thread_name).spawn(move || {
        if let Err(error) = sink.stop(within) {
            tracing::warn!(notifier = name, error, "notifier did not stop cleanly");
        }
        let _ = done.send(name);
    });
    if let Err(e) = &spawned {
        tracing::warn!(notifier = notifier.name(), error = %e, "cannot start the thread that stops the notifier");
    }
    spawned.is_ok()
}

/// Joins the delivery thread if it ends by `deadline`; else leaves it behind.
fn join_until(notifier: &Notifier, thread: Option<JoinHandle<()>>, deadline: Instant) {
    if !notifier.wait_finished(deadline) {
        tracing::warn!(notifier = notifier.name(), "notifier still delivering at the stop deadline: left behind");
    } else if let Some(thread) = thread {
        // Its loop has ended: the join only waits for the thread to return.
        if thread.join().is_err() {
            tracing::warn!(notifier = notifier.name(), "notifier's delivery thread panicked");
        }
    }
}

/// Waits until the sinks named in `pending` have stopped, at most until `deadline`.
fn wait_sinks(done: &mpsc::Receiver<String>, mut pending: Vec<String>, deadline: Instant) {
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match done.recv_timeout(left) {
            Ok(name) => pending.retain(|p| *p != name),
            Err(_) => break,
        }
    }
    for notifier in pending {
        tracing::warn!(notifier, "notifier's stop did not return by the deadline: left behind");
    }
}

/// The engine's announcements go to every notifier.
impl vpcrouter_engine::Announcer for Notifiers {
    fn announce(&self, a: vpcrouter_engine::Announcement) {
        self.send(a.into());
    }
}

#[cfg(test)]
mod tests;
