//! Writing a watcher: a source of route specs.
//!
//! Implement [`WatcherPlugin`]: `start` parses the options and sets the source going on
//! [`WatcherRun`] (a thread from [`WatcherRun::spawn`], a poll from [`WatcherRun::poll`], or
//! an HTTP endpoint), which offers every spec it reads to the [`SpecSink`]. The sink sends
//! the FULL spec only when it changed, keeps the last good one when a read fails or is
//! invalid, and counts both for the status server. The SDK owns the threads and stops them
//! within one deadline.
//!
//! The spec queue ends (the host then sees the watcher as gone) when:
//! * the plugin calls [`SpecSink::close`] (its source is finished for good);
//! * a thread started by [`WatcherRun::spawn`] (or [`WatcherRun::poll`]) panics: the SDK
//!   closes the sink as the thread unwinds, so a dead source is noticed at once instead of
//!   leaving the host waiting on a queue nobody feeds (the panic is reported again by
//!   `stop`); a thread that returns normally leaves the queue open;
//! * the watcher is stopped: `stop` closes it after the threads were asked to end, whether
//!   or not they did within the deadline.
//!
//! ```no_run
//! use std::time::Duration;
//! use vpcrouter_plugin_api::prelude::*;
//!
//! struct Fixed;
//! impl PluginDescription for Fixed {
//!     const NAME: &'static str = "fixed";
//!     const DESCRIPTION: &'static str = "One fixed route";
//!     const VERSION: &'static str = "1.0.0";
//! }
//! impl WatcherPlugin for Fixed {
//!     fn start(_args: &PluginArgs, run: &WatcherRun) -> Result<Self, String> {
//!         run.poll("fixed", Duration::from_secs(60), || spec::parse_json(r#"{"10.0.0.0/8": ["10.1.0.5"]}"#).map_err(|e| e.to_string()))?;
//!         Ok(Fixed)
//!     }
//! }
//! export_plugin!(watcher: Fixed);
//! ```

use std::fmt::Display;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RString, RVec, Tuple2};

use crate::args::PluginArgs;
use crate::context::Logger;
use crate::export::{declared_params, guard, guard_or, Exported, PluginDescription, Start};
use crate::plugin::{PluginContext, PluginInstance, PluginIo, PluginKind, Watcher, WatcherBox};
use crate::sync::lock;
use crate::types::{PluginStats, PluginStatus, RouteSpec, WatcherStats};
use crate::worker::{StopToken, Workers};
use crate::RSender;

/// A watcher plugin: a spec source with an optional reload hook.
pub trait WatcherPlugin: PluginDescription + Send + Sync + Sized + 'static {
    /// Parses the options and starts the source on `run`; the returned value lives until
    /// the plugin stops. Fails with the message the user sees.
    fn start(args: &PluginArgs, run: &WatcherRun) -> Result<Self, String>;

    /// Re-reads the configuration on SIGHUP (offer the new spec to the sink); by default
    /// there is nothing to re-read.
    fn reload(&self) -> Result<(), String> {
        Ok(())
    }

    /// Plugin-specific state for the status server, a JSON object.
    fn details(&self) -> serde_json::Value {
        serde_json::json!({})
    }
}

/// What a starting watcher gets: the host's services, the spec sink, and threads.
pub struct WatcherRun {
    ctx: PluginContext,
    sink: SpecSink,
    workers: Arc<Workers>,
}

impl WatcherRun {
    /// The host's services (HTTP endpoints, the plugin's name).
    pub fn context(&self) -> &PluginContext {
        &self.ctx
    }

    /// The host's log.
    pub fn log(&self) -> &Logger {
        &self.ctx.log
    }

    /// Where specs go; clone it into threads and handlers.
    pub fn sink(&self) -> SpecSink {
        self.sink.clone()
    }

    /// Runs `body` on a thread of its own until the plugin stops: `body` returns soon after
    /// its [`StopToken`] fires. If `body` panics, the sink is closed (see the module docs).
    pub fn spawn(&self, name: &str, body: impl FnOnce(StopToken) + Send + 'static) -> Result<(), String> {
        let closes = ClosesOnPanic { sink: self.sink(), thread: name.to_string() };
        self.workers.spawn(name, move |stop| {
            let _closes = closes;
            body(stop)
        })
    }

    /// Calls `read` now and then every `interval`, offering each spec it returns (an error
    /// keeps the last good spec and is logged once).
    pub fn poll(
        &self,
        name: &str,
        interval: Duration,
        mut read: impl FnMut() -> Result<RouteSpec, String> + Send + 'static,
    ) -> Result<(), String> {
        let sink = self.sink();
        self.spawn(name, move |stop| loop {
            if !sink.offer_result(read()) || stop.wait(interval) {
                return;
            }
        })
    }
}

/// Closes the sink when the thread that holds it unwinds from a panic.
struct ClosesOnPanic {
    sink: SpecSink,
    thread: String,
}

impl Drop for ClosesOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.sink.inner.log.error(format!("thread {} panicked; closing the route spec queue", self.thread));
            self.sink.close();
        }
    }
}

/// Sends FULL specs to the host when they change, and keeps the last good one.
#[derive(Clone)]
pub struct SpecSink {
    inner: Arc<SinkInner>,
}

struct SinkInner {
    log: Logger,
    state: Mutex<SinkState>,
}

struct SinkState {
    /// `None` once closed (by [`SpecSink::close`], or a send found the host gone).
    tx: Option<RSender<RouteSpec>>,
    last: Option<RouteSpec>,
    stats: WatcherStats,
}

impl SpecSink {
    /// A sink sending on `tx` (the SDK makes one per watcher; tests may too).
    pub fn new(tx: RSender<RouteSpec>, log: Logger) -> SpecSink {
        let state = SinkState { tx: Some(tx), last: None, stats: WatcherStats::default() };
        SpecSink { inner: Arc::new(SinkInner { log, state: Mutex::new(state) }) }
    }

    fn state(&self) -> MutexGuard<'_, SinkState> {
        lock(&self.inner.state)
    }

    /// Sends `spec` unless it equals the last one sent; false when the queue is closed
    /// (the source should then end). Offers from several threads reach the host in the
    /// order they were made, so the last spec sent is the last one the host got.
    pub fn offer(&self, spec: RouteSpec) -> bool {
        let mut guard = self.state();
        let state = &mut *guard;
        let Some(tx) = &state.tx else { return false };
        state.stats.last_error = RString::new();
        if state.last.as_ref() == Some(&spec) {
            return true;
        }
        self.inner.log.debug(format!("Sending a route spec with {} CIDR(s)", spec.routes.len()));
        // The queue is unbounded: sending under the lock never blocks for long.
        if tx.send(spec.clone()).is_err() {
            state.tx = None;
            return false;
        }
        state.last = Some(spec);
        state.stats.specs_sent += 1;
        true
    }

    /// Ends the spec queue: the host sees the watcher as gone, and every later offer
    /// returns false. For a source that is finished for good; calling it twice is harmless.
    pub fn close(&self) {
        self.state().tx = None;
    }

    /// Records a read that failed or a spec that was invalid: the last good spec stays.
    /// Logged as an error the first time, at debug level while it repeats.
    pub fn reject(&self, problem: impl Display) {
        let problem = problem.to_string();
        let repeated = {
            let mut state = self.state();
            state.stats.errors += 1;
            let repeated = state.stats.last_error.as_str() == problem;
            state.stats.last_error = problem.as_str().into();
            repeated
        };
        let kept = if self.last().is_some() { "; keeping the last good route spec" } else { "" };
        if repeated {
            self.inner.log.debug(format!("{problem}{kept}"));
        } else {
            self.inner.log.error(format!("{problem}{kept}"));
        }
    }

    /// [`SpecSink::offer`] for `Ok`, [`SpecSink::reject`] for `Err`; false when the queue
    /// is closed.
    pub fn offer_result<E: Display>(&self, result: Result<RouteSpec, E>) -> bool {
        match result {
            Ok(spec) => self.offer(spec),
            Err(e) => {
                self.reject(e);
                !self.is_closed()
            }
        }
    }

    /// The last spec sent.
    pub fn last(&self) -> Option<RouteSpec> {
        self.state().last.clone()
    }

    /// The counters.
    pub fn stats(&self) -> WatcherStats {
        self.state().stats.clone()
    }

    /// True when the queue is closed: by [`SpecSink::close`], or a send found that the host
    /// no longer reads it.
    pub fn is_closed(&self) -> bool {
        self.state().tx.is_none()
    }
}

/// A started watcher, as the host sees it.
struct Running<T> {
    plugin: T,
    sink: SpecSink,
    workers: Arc<Workers>,
    params: RVec<Tuple2<RString, RString>>,
}

impl<T: WatcherPlugin> Watcher for Running<T> {
    fn status(&self) -> PluginStatus {
        let details = guard_or("details", serde_json::json!({}), || self.plugin.details());
        PluginStatus {
            version: T::VERSION.into(),
            params: self.params.clone(),
            stats: PluginStats::Watcher(self.sink.stats()),
            details: details.to_string().into(),
        }
    }
    fn reload(&self) -> RResult<(), RString> {
        guard(&format!("plugin '{}' reload", T::NAME), || self.plugin.reload())
    }
    fn stop(&self, within_ms: u64) -> RResult<(), RString> {
        let stopped =
            guard(&format!("plugin '{}' stop", T::NAME), || self.workers.stop(Duration::from_millis(within_ms)));
        self.sink.close();
        self.sink.inner.log.info(format!("{} watcher plugin: Stopped", T::NAME));
        stopped
    }
}

/// Starts watcher `T` (the SDK's half of [`crate::export_plugin!`]; the testkit's too).
pub(crate) fn start<T: WatcherPlugin>(
    args: &PluginArgs,
    ctx: PluginContext,
    specs: RSender<RouteSpec>,
) -> Result<WatcherBox, String> {
    let sink = SpecSink::new(specs, ctx.log.clone());
    let workers = Arc::new(Workers::default());
    let run = WatcherRun { ctx, sink: sink.clone(), workers: workers.clone() };
    let plugin = match T::start(args, &run) {
        Ok(p) => p,
        Err(e) => {
            let _ = workers.stop(Duration::from_secs(2));
            return Err(e);
        }
    };
    let running = Running { plugin, sink, workers, params: declared_params::<T>(args) };
    Ok(WatcherBox::from_value(running, TD_Opaque))
}

/// The kind marker of watcher plugins for [`crate::export_plugin!`].
#[doc(hidden)]
pub struct WatcherKind;

/// `T` exported as a watcher plugin (used by [`crate::export_plugin!`]).
#[doc(hidden)]
pub type AsWatcher<T> = Exported<T, WatcherKind>;

impl<T: WatcherPlugin> Start for Exported<T, WatcherKind> {
    const KIND: PluginKind = PluginKind::Watcher;
    fn start_instance(args: &PluginArgs, ctx: PluginContext, io: PluginIo) -> Result<PluginInstance, String> {
        match io {
            PluginIo::Watcher { specs } => start::<T>(args, ctx, specs).map(PluginInstance::Watcher),
            _ => Err(format!("'{}' is a watcher plugin, started as another kind", T::NAME)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::testkit::{recv_within, start_watcher};
    use crate::LogLevel;

    /// `mode` picks what its thread does.
    struct Demo;
    impl PluginDescription for Demo {
        const NAME: &'static str = "demo";
        const DESCRIPTION: &'static str = "SDK test";
        const VERSION: &'static str = "0.0.0";
    }
    impl WatcherPlugin for Demo {
        fn start(args: &PluginArgs, run: &WatcherRun) -> Result<Self, String> {
            let sink = run.sink();
            let spec = crate::spec::parse_json(r#"{"10.0.0.0/8": ["10.1.0.5"]}"#).unwrap();
            match args.get("mode").unwrap_or_default() {
                "panic" => run.spawn("demo-panic", move |_| {
                    sink.offer(spec);
                    panic!("boom");
                })?,
                "return" => run.spawn("demo-return", move |_| {
                    sink.offer(spec);
                })?,
                "close" => {
                    sink.offer(spec);
                    sink.close();
                }
                _ => run.spawn("demo-wait", move |stop| {
                    sink.offer(spec);
                    while !stop.wait(Duration::from_secs(10)) {}
                })?,
            }
            Ok(Demo)
        }
    }

    /// True when the queue ends (every sender dropped) within 2 s.
    fn ends(h: &crate::testkit::WatcherHarness) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match h.specs.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(_) => continue,
                Err(crate::RecvTimeoutError::Disconnected) => return true,
                Err(crate::RecvTimeoutError::Timeout) => return false,
            }
        }
    }

    #[test]
    fn a_panicking_worker_closes_the_queue_and_stop_reports_it() {
        let h = start_watcher::<Demo>(&[("mode", "panic")]).unwrap();
        assert!(recv_within(&h.specs, Duration::from_secs(2)).is_some());
        assert!(ends(&h), "the queue ends when the worker panics");
        assert!(h.logs.contains(LogLevel::Error, "thread demo-panic panicked; closing the route spec queue"));
        assert!(h.stop().unwrap_err().contains("thread demo-panic panicked"));
    }

    #[test]
    fn a_returning_worker_leaves_the_queue_open_until_stop() {
        let h = start_watcher::<Demo>(&[("mode", "return")]).unwrap();
        assert!(recv_within(&h.specs, Duration::from_secs(2)).is_some());
        let closed = h.specs.recv_timeout(Duration::from_millis(200));
        assert_eq!(closed.map(drop), Err(crate::RecvTimeoutError::Timeout), "still open");
        h.stop().unwrap();
        assert!(ends(&h), "stop closes the queue");
    }

    #[test]
    fn close_ends_the_queue_and_later_offers_fail() {
        let h = start_watcher::<Demo>(&[("mode", "close")]).unwrap();
        assert!(ends(&h));
        let (tx, rx) = crate::channel::unbounded();
        let sink = SpecSink::new(tx, crate::testkit::context("x").0.log);
        assert!(sink.offer(RouteSpec::default()));
        sink.close();
        sink.close();
        assert!(sink.is_closed() && !sink.offer(RouteSpec::new([]).unwrap()));
        assert!(rx.recv().is_ok() && rx.recv().is_err());
        assert_eq!(sink.stats().specs_sent, 1);
    }

    #[test]
    fn stop_closes_the_queue_even_past_the_deadline() {
        let h = start_watcher::<Demo>(&[("mode", "wait")]).unwrap();
        assert!(recv_within(&h.specs, Duration::from_secs(2)).is_some());
        h.stop().unwrap();
        assert!(ends(&h));
        assert_eq!(
            h.watcher.status().stats,
            PluginStats::Watcher(WatcherStats { specs_sent: 1, ..Default::default() })
        );
    }
}
