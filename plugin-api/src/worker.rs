//! Background threads with a stop signal, joined within a deadline.
//!
//! The SDK runs a plugin's threads for it: a watcher spawns through
//! [`crate::watcher::WatcherRun::spawn`], a health monitor's rounds run on the SDK's own
//! thread. Each thread gets a [`StopToken`]:
//!
//! ```no_run
//! # use std::time::Duration;
//! # use vpcrouter_plugin_api::prelude::*;
//! # fn demo(run: &WatcherRun) -> Result<(), String> {
//! run.spawn("MyPlugin", |stop| {
//!     // `wait` sleeps up to the interval and returns true when asked to stop.
//!     while !stop.wait(Duration::from_secs(2)) { /* one round of work */ }
//! })
//! # }
//! ```

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::sync::lock;

/// The worker's side of the stop signal.
#[derive(Clone, Debug)]
pub struct StopToken(Receiver<()>);

impl StopToken {
    /// A token that fires when the sender of `rx` is dropped.
    pub(crate) fn new(rx: Receiver<()>) -> StopToken {
        StopToken(rx)
    }

    /// Sleeps up to `timeout`; true as soon as a stop was requested.
    pub fn wait(&self, timeout: Duration) -> bool {
        !matches!(self.0.recv_timeout(timeout), Err(RecvTimeoutError::Timeout))
    }

    /// True when a stop was requested (does not block).
    pub fn is_stopped(&self) -> bool {
        self.wait(Duration::ZERO)
    }

    /// The underlying receiver, to use in a `crossbeam_channel::select!`; it becomes ready
    /// (disconnected) on stop.
    pub fn receiver(&self) -> &Receiver<()> {
        &self.0
    }
}

/// A running background thread of a plugin.
#[derive(Debug)]
pub(crate) struct Worker {
    /// The thread's name, for the errors of `stop`.
    name: String,
    /// Dropped to signal the stop (the token's receiver then disconnects).
    stop: Option<Sender<()>>,
    /// Joined by `stop`; `None` once joined.
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts `body` on a thread named `name`; the error says why no thread could start.
    pub(crate) fn spawn(name: &str, body: impl FnOnce(StopToken) + Send + 'static) -> Result<Worker, String> {
        let (tx, rx) = crossbeam_channel::bounded::<()>(0);
        let handle = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || body(StopToken(rx)))
            .map_err(|e| format!("cannot start thread {name}: {e}"))?;
        Ok(Worker { name: name.to_string(), stop: Some(tx), handle: Some(handle) })
    }

    /// Signals the thread and waits for it at most `within`. Calling it twice is harmless.
    #[cfg(test)]
    fn stop(mut self, within: Duration) -> Result<(), String> {
        self.stop_in_place(within)
    }

    fn stop_in_place(&mut self, within: Duration) -> Result<(), String> {
        self.stop_by(Instant::now() + within, within)
    }

    /// Waits for the thread until `deadline`; `within` is the deadline as the caller gave it.
    fn stop_by(&mut self, deadline: Instant, within: Duration) -> Result<(), String> {
        self.stop.take();
        let Some(handle) = self.handle.take() else { return Ok(()) };
        while !handle.is_finished() {
            if Instant::now() >= deadline {
                return Err(format!("thread {} did not stop within {} ms", self.name, within.as_millis()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        handle.join().map_err(|_| format!("thread {} panicked", self.name))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.stop_in_place(Duration::from_secs(2));
    }
}

/// A set of workers stopped together, within one deadline.
#[derive(Debug, Default)]
pub(crate) struct Workers {
    /// The threads started and not yet stopped.
    workers: std::sync::Mutex<Vec<Worker>>,
}

impl Workers {
    /// Starts `body` on a thread named `name` that belongs to this set.
    pub(crate) fn spawn(&self, name: &str, body: impl FnOnce(StopToken) + Send + 'static) -> Result<(), String> {
        let worker = Worker::spawn(name, body)?;
        lock(&self.workers).push(worker);
        Ok(())
    }

    /// Signals every worker, then waits for all of them until `within` has passed; the
    /// error names those that did not stop or panicked. Calling it twice is harmless.
    pub(crate) fn stop(&self, within: Duration) -> Result<(), String> {
        let mut workers = std::mem::take(&mut *lock(&self.workers));
        workers.iter_mut().for_each(|w| drop(w.stop.take()));
        let deadline = Instant::now() + within;
        let errors: Vec<String> = workers.iter_mut().filter_map(|w| w.stop_by(deadline, within).err()).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_promptly_and_reports_overruns_and_panics() {
        let w = Worker::spawn("t", |stop| while !stop.wait(Duration::from_secs(10)) {}).unwrap();
        let t = Instant::now();
        w.stop(Duration::from_secs(2)).unwrap();
        assert!(t.elapsed() < Duration::from_secs(1));
        let w = Worker::spawn("slow", |_| std::thread::sleep(Duration::from_millis(300))).unwrap();
        assert!(w.stop(Duration::from_millis(20)).unwrap_err().contains("did not stop"));
        let w = Worker::spawn("boom", |_| panic!("x")).unwrap();
        assert!(w.stop(Duration::from_secs(1)).unwrap_err().contains("panicked"));
    }

    #[test]
    fn a_set_stops_within_one_deadline() {
        let set = Workers::default();
        for n in 0..3 {
            set.spawn(&format!("w{n}"), |stop| while !stop.wait(Duration::from_secs(10)) {}).unwrap();
        }
        set.spawn("slow", |_| std::thread::sleep(Duration::from_millis(400))).unwrap();
        let t = Instant::now();
        let err = set.stop(Duration::from_millis(100)).unwrap_err();
        assert!(err.contains("slow did not stop within 100 ms") && !err.contains("w0"), "{err}");
        assert!(t.elapsed() < Duration::from_millis(300), "one deadline for all: {:?}", t.elapsed());
        assert_eq!(set.stop(Duration::from_millis(10)), Ok(()));
    }
}
