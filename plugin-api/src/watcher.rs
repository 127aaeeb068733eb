//! Writing a watcher: a source of route specs.
//!
//! Implement [`WatcherPlugin`]: `start` parses the options and sets the source going on
//! [`WatcherRun`] (a thread from [`WatcherRun::spawn`], a poll from [`WatcherRun::poll`], or
//! an HTTP endpoint), which offers every spec it reads to the [`SpecSink`]. The sink sends
//! the FULL spec only when it changed, keeps the last good one when a read fails or is
//! invalid, and counts both for the status server. The SDK owns the threads and stops them
//! within one deadline.
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
use crate::export::{declared_params, guard, guard_or, PluginDescription, Start};
use crate::plugin::{PluginContext, PluginInstance, PluginIo, PluginKind, Watcher, WatcherBox};
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
    /// its [`StopToken`] fires.
    pub fn spawn(&self, name: &str, body: impl FnOnce(StopToken) + Send + 'static) -> Result<(), String> {
        self.workers.spawn(name, body)
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

/// Sends FULL specs to the host when they change, and keeps the last good one.
#[derive(Clone)]
pub struct SpecSink {
    inner: Arc<SinkInner>,
}

struct SinkInner {
    tx: RSender<RouteSpec>,
    closed: std::sync::atomic::AtomicBool,
    log: Logger,
    state: Mutex<SinkState>,
}

#[derive(Default)]
struct SinkState {
    last: Option<RouteSpec>,
    stats: WatcherStats,
}

impl SpecSink {
    /// A sink sending on `tx` (the SDK makes one per watcher; tests may too).
    pub fn new(tx: RSender<RouteSpec>, log: Logger) -> SpecSink {
        SpecSink { inner: Arc::new(SinkInner { tx, closed: Default::default(), log, state: Mutex::default() }) }
    }

    fn state(&self) -> MutexGuard<'_, SinkState> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `spec` unless it equals the last one sent; false when the host closed the
    /// queue (the source should then end).
    pub fn offer(&self, spec: RouteSpec) -> bool {
        {
            let mut state = self.state();
            state.stats.last_error = RString::new();
            if state.last.as_ref() == Some(&spec) {
                return !self.is_closed();
            }
            state.last = Some(spec.clone());
            state.stats.specs_sent += 1;
        }
        self.inner.log.debug(format!("Sending a route spec with {} CIDR(s)", spec.routes.len()));
        let sent = self.inner.tx.send(spec).is_ok();
        if !sent {
            self.inner.closed.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        sent
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

    /// True when a send found that the host no longer reads the queue.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(std::sync::atomic::Ordering::Relaxed)
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
        guard(&format!("plugin '{}' stop", T::NAME), || self.workers.stop(Duration::from_millis(within_ms)))
    }
}

/// Starts watcher `T` (the SDK's half of [`crate::export_plugin!`]; tests use it too).
pub fn start<T: WatcherPlugin>(args: &PluginArgs, ctx: PluginContext, specs: RSender<RouteSpec>) -> Result<WatcherBox, String> {
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

/// Marks `T` as a watcher for [`crate::export_plugin!`].
pub struct AsWatcher<T>(std::marker::PhantomData<T>);

impl<T: WatcherPlugin> PluginDescription for AsWatcher<T> {
    const NAME: &'static str = T::NAME;
    const DESCRIPTION: &'static str = T::DESCRIPTION;
    const VERSION: &'static str = T::VERSION;
    fn arguments() -> Vec<crate::ArgSpec> {
        T::arguments()
    }
    fn validate_dependencies() -> Result<(), String> {
        T::validate_dependencies()
    }
    fn validate_config(args: &PluginArgs) -> Result<(), String> {
        T::validate_config(args)
    }
}

impl<T: WatcherPlugin> Start for AsWatcher<T> {
    const KIND: PluginKind = PluginKind::Watcher;
    fn start_instance(args: &PluginArgs, ctx: PluginContext, io: PluginIo) -> Result<PluginInstance, String> {
        match io {
            PluginIo::Watcher { specs } => start::<T>(args, ctx, specs).map(PluginInstance::Watcher),
            PluginIo::Health { .. } => Err(format!("'{}' is a watcher plugin, started as a health monitor", T::NAME)),
        }
    }
}
