//! One notifier: its bounded queue (full: the oldest event is dropped), its counters and the
//! thread that delivers its events in order.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use vpcrouter_plugin_api::sync::lock;

use crate::event::Rendered;
use crate::sink::Sink;

/// At most one "queue full" warning per notifier in this time (the count goes on).
pub const DROP_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// What a notifier did since start, as `/status` and `/metrics` show it.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct NotifierStatus {
    /// The notifier's name (`--notify NAME`).
    pub name: String,
    /// Events it delivered.
    pub delivered: u64,
    /// Events it failed to deliver (its own retries included: one count per event).
    pub failed: u64,
    /// Events dropped undelivered: the oldest of a full queue, or still queued at stop.
    pub dropped: u64,
    /// Events waiting in its queue now (the one being delivered not included).
    pub queued: u64,
    /// Why the last failed delivery failed.
    pub last_error: Option<String>,
    /// When the last delivery failed.
    pub last_error_time: Option<SystemTime>,
}

/// One notifier, shared by the hub and its delivery thread.
pub(crate) struct Notifier {
    /// Its sink.
    sink: Arc<dyn Sink>,
    /// Events its queue holds before the oldest is dropped (at least 1).
    capacity: usize,
    /// The queue, the counters and where the delivery thread is.
    state: Mutex<State>,
    /// Signalled when an event is queued, at close, and when the delivery thread ends.
    changed: Condvar,
}

/// What the hub and the delivery thread share, under one lock.
struct State {
    /// The counters (`queued` is taken from `queue` when asked).
    counts: NotifierStatus,
    /// Events waiting, oldest first.
    queue: VecDeque<Arc<Rendered>>,
    /// The delivery thread is inside `deliver` (for the count of dropped events at stop).
    in_flight: bool,
    /// Stopping: the delivery thread takes no further event.
    closing: bool,
    /// The delivery thread has ended.
    finished: bool,
    /// The stop gave up waiting: what is undelivered was counted as dropped, and a late
    /// result of the delivery in flight is not counted again.
    abandoned: bool,
    /// When the last "queue full" warning was logged (they are rate limited).
    last_drop_warning: Option<Instant>,
}

/// Whether a "queue full" warning is due: the first one, then one per
/// [`DROP_WARNING_INTERVAL`].
pub(crate) fn drop_warning_due(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|at| now.saturating_duration_since(at) >= DROP_WARNING_INTERVAL)
}

impl Notifier {
    /// A notifier named `name` delivering to `sink` through a queue of `capacity` events.
    pub(crate) fn new(name: &str, sink: Arc<dyn Sink>, capacity: usize) -> Arc<Notifier> {
        let counts = NotifierStatus { name: name.to_string(), ..NotifierStatus::default() };
        let state = State {
            counts,
            queue: VecDeque::new(),
            in_flight: false,
            closing: false,
            finished: false,
            abandoned: false,
            last_drop_warning: None,
        };
        Arc::new(Notifier { sink, capacity: capacity.max(1), state: Mutex::new(state), changed: Condvar::new() })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The notifier's name.
    pub(crate) fn name(&self) -> String {
        self.state().counts.name.clone()
    }

    /// Starts the delivery thread, `notify-NAME`.
    pub(crate) fn start(self: &Arc<Self>) -> std::io::Result<JoinHandle<()>> {
        let me = self.clone();
        std::thread::Builder::new().name(format!("notify-{}", self.name())).spawn(move || me.run())
    }

    /// Queues `event`; when the queue is full, drops the oldest (counted, warned about).
    pub(crate) fn push(&self, event: Arc<Rendered>) {
        let mut st = self.state();
        if st.closing {
            return;
        }
        let mut warn = None;
        if st.queue.len() >= self.capacity {
            st.queue.pop_front();
            st.counts.dropped += 1;
            let now = Instant::now();
            if drop_warning_due(st.last_drop_warning, now) {
                st.last_drop_warning = Some(now);
                warn = Some((st.counts.name.clone(), st.counts.dropped));
            }
        }
        st.queue.push_back(event);
        drop(st);
        self.changed.notify_all();
        if let Some((notifier, dropped)) = warn {
            tracing::warn!(
                notifier,
                dropped,
                capacity = self.capacity,
                "notifier queue full: dropping its oldest events (the notifier is slow or stuck)"
            );
        }
    }

    /// Its counters now.
    pub(crate) fn status(&self) -> NotifierStatus {
        let st = self.state();
        NotifierStatus { queued: st.queue.len() as u64, ..st.counts.clone() }
    }

    /// The sink, for the hub to stop it.
    pub(crate) fn sink(&self) -> Arc<dyn Sink> {
        self.sink.clone()
    }

    /// Stopping: no more events are queued or taken from the queue.
    pub(crate) fn close(&self) {
        self.state().closing = true;
        self.changed.notify_all();
    }

    /// Waits until every queued event was delivered (or failed), at most until `deadline`;
    /// whether it was.
    pub(crate) fn wait_drained(&self, deadline: Instant) -> bool {
        let mut st = self.state();
        while !st.queue.is_empty() || st.in_flight {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || st.finished {
                return false;
            }
            st = self.changed.wait_timeout(st, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }

    /// Waits until the delivery thread ended, at most until `deadline`; whether it did.
    pub(crate) fn wait_finished(&self, deadline: Instant) -> bool {
        let mut st = self.state();
        while !st.finished {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self.changed.wait_timeout(st, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }

    /// Counts what is still undelivered (the queue, and the event in flight if the thread
    /// did not end) as dropped; returns that number.
    pub(crate) fn abandon(&self) -> u64 {
        let mut st = self.state();
        let lost = st.queue.len() as u64 + u64::from(st.in_flight && !st.finished);
        st.queue.clear();
        st.counts.dropped += lost;
        st.abandoned = true;
        lost
    }

    /// The delivery thread: each event in order until closed.
    fn run(&self) {
        while let Some(event) = self.next() {
            let result = catch_unwind(AssertUnwindSafe(|| self.sink.deliver(&event)))
                .unwrap_or_else(|_| Err("the notifier panicked while delivering".to_string()));
            self.record(&event, result);
        }
        self.state().finished = true;
        self.changed.notify_all();
    }

    /// The next event to deliver; `None` once closed.
    fn next(&self) -> Option<Arc<Rendered>> {
        let mut st = self.state();
        st.in_flight = false;
        // A stop waiting for the queue to drain looks again.
        self.changed.notify_all();
        loop {
            if st.closing {
                return None;
            }
            if let Some(event) = st.queue.pop_front() {
                st.in_flight = true;
                return Some(event);
            }
            st = self.changed.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Counts one delivery's outcome and logs it.
    fn record(&self, event: &Rendered, result: Result<(), String>) {
        let mut st = self.state();
        if st.abandoned {
            return;
        }
        let notifier = st.counts.name.clone();
        match result {
            Ok(()) => {
                st.counts.delivered += 1;
                drop(st);
                tracing::debug!(notifier, event = event.event, "notification delivered");
            }
            Err(error) => {
                st.counts.failed += 1;
                st.counts.last_error = Some(error.clone());
                st.counts.last_error_time = Some(SystemTime::now());
                drop(st);
                tracing::warn!(notifier, event = event.event, error, "notification not delivered");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_full_warnings_are_the_first_then_one_per_interval() {
        let t0 = Instant::now();
        assert!(drop_warning_due(None, t0));
        assert!(!drop_warning_due(Some(t0), t0 + Duration::from_secs(9)));
        assert!(drop_warning_due(Some(t0), t0 + DROP_WARNING_INTERVAL));
    }
}
