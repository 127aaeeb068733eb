//! Test helpers for plugin authors (feature `testkit`, for `[dev-dependencies]`).
//!
//! [`context`] builds the [`PluginContext`] a host would lend a plugin: its log lines are
//! captured in a [`LogCapture`], its HTTP registry refuses every endpoint and its loader
//! starts nothing. [`start_health`] and [`start_watcher`] start a plugin through the same
//! SDK path the host uses and hand back its queues, so a test sees what the host would.
//! [`recv_within`] and [`nothing_within`] read queues with a deadline so a broken plugin
//! fails a test instead of hanging it.
//!
//! ```toml
//! [dev-dependencies]
//! vpcrouter-plugin-api = { version = "0.2", features = ["testkit"] }
//! ```

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RArc, RResult, RStr, RString};

use crate::channel::unbounded;
use crate::context::{HostLogger, HttpHandlerBox, HttpRegistry, HttpRegistry_TO, LogLevel, Logger};
use crate::health::HealthPlugin;
use crate::net::Ipv4;
use crate::plugin::{HealthBox, PluginContext, PluginLoader, PluginLoader_TO, WatcherBox};
use crate::types::{HealthReport, HealthStats, HostList, PluginStats, RouteSpec};
use crate::watcher::WatcherPlugin;
use crate::{PluginArgs, RReceiver, RSender};

/// The log lines a plugin wrote through its context, shared with the test.
#[derive(Clone, Default)]
pub struct LogCapture {
    lines: Arc<Mutex<Vec<(LogLevel, String)>>>,
}

impl LogCapture {
    fn locked(&self) -> MutexGuard<'_, Vec<(LogLevel, String)>> {
        // A panicking test thread must not hide the lines from the others.
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Every line so far, oldest first.
    pub fn lines(&self) -> Vec<(LogLevel, String)> {
        self.locked().clone()
    }
    /// How many lines at `level` contain `needle`.
    pub fn count(&self, level: LogLevel, needle: &str) -> usize {
        self.locked().iter().filter(|(l, m)| *l == level && m.contains(needle)).count()
    }
    /// True when a line at `level` contains `needle`.
    pub fn contains(&self, level: LogLevel, needle: &str) -> bool {
        self.count(level, needle) > 0
    }
    /// Waits up to `timeout` for a line at `level` containing `needle`.
    pub fn wait_for(&self, level: LogLevel, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.contains(level, needle) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

impl std::fmt::Debug for LogCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.locked().iter()).finish()
    }
}

#[derive(Clone)]
struct CaptureLogger(LogCapture);

impl HostLogger for CaptureLogger {
    fn log(&self, level: LogLevel, message: RStr<'_>) {
        self.0.locked().push((level, message.to_string()));
    }
    fn enabled(&self, _level: LogLevel) -> bool {
        true
    }
}

#[derive(Clone)]
struct NoHttp;

impl HttpRegistry for NoHttp {
    fn register(&self, _method: RStr<'_>, path: RStr<'_>, _handler: HttpHandlerBox) -> RResult<(), RString> {
        RResult::RErr(format!("no HTTP server in tests (path {path})").into())
    }
}

#[derive(Clone)]
struct NoLoader;

impl PluginLoader for NoLoader {
    fn start_health(
        &self,
        name: RStr<'_>,
        _h: RReceiver<HostList>,
        _r: RSender<HealthReport>,
    ) -> RResult<HealthBox, RString> {
        RResult::RErr(format!("no plugin loader in tests (plugin {name})").into())
    }
}

/// A context for plugin `name` and the capture of everything it logs.
pub fn context(name: &str) -> (PluginContext, LogCapture) {
    let capture = LogCapture::default();
    let ctx = PluginContext {
        plugin_name: name.into(),
        log: Logger::new(CaptureLogger(capture.clone())),
        http: HttpRegistry_TO::from_ptr(RArc::new(NoHttp), TD_Opaque),
        loader: PluginLoader_TO::from_ptr(RArc::new(NoLoader), TD_Opaque),
    };
    (ctx, capture)
}

/// The next message on `rx` within `timeout`, or `None`.
pub fn recv_within<T>(rx: &RReceiver<T>, timeout: Duration) -> Option<T> {
    rx.recv_timeout(timeout).ok()
}

/// True when no message arrives on `rx` for `quiet` (the message is dropped otherwise).
pub fn nothing_within<T>(rx: &RReceiver<T>, quiet: Duration) -> bool {
    rx.recv_timeout(quiet).is_err()
}

/// Addresses from text, for tests: panics on a bad one.
pub fn ips(list: &[&str]) -> Vec<Ipv4> {
    list.iter().map(|s| Ipv4::parse(s).unwrap_or_else(|| panic!("'{s}' is not an IPv4 address"))).collect()
}

/// A host list from text, for tests.
pub fn host_list(list: &[&str]) -> HostList {
    HostList::new(ips(list))
}

/// A health monitor started as the host would, with its queues.
pub struct HealthHarness {
    /// The running monitor (status, interval, stop).
    pub monitor: HealthBox,
    /// Send host lists here.
    pub hosts: RSender<HostList>,
    /// Reports arrive here.
    pub reports: RReceiver<HealthReport>,
    /// Its log lines.
    pub logs: LogCapture,
}

impl HealthHarness {
    /// Sends the host list `list`.
    pub fn send_hosts(&self, list: &[&str]) {
        self.hosts.send(host_list(list)).expect("the monitor reads host lists");
    }
    /// The next report within `timeout`.
    pub fn next_report(&self, timeout: Duration) -> Option<HealthReport> {
        recv_within(&self.reports, timeout)
    }
    /// Stops the monitor within 2 s.
    pub fn stop(&self) -> Result<(), String> {
        self.monitor.stop(2000).into_result().map_err(|e| e.to_string())
    }
    /// The monitor's status, split for assertions: typed counters, details as JSON, and the
    /// declared options as `(name, value)` pairs.
    pub fn status(&self) -> (HealthStats, serde_json::Value, Vec<(String, String)>) {
        let status = self.monitor.status();
        let PluginStats::Health(stats) = status.stats else { panic!("not health stats: {:?}", status.stats) };
        let params = status.params.iter().map(|t| (t.0.to_string(), t.1.to_string())).collect();
        (stats, serde_json::from_str(&status.details).unwrap_or_default(), params)
    }
}

/// Addresses as text, for assertions: `texts(&report.failed)`.
pub fn texts(ips: &[Ipv4]) -> Vec<String> {
    ips.iter().map(|ip| ip.to_string()).collect()
}

/// Starts health plugin `T` with options `args` (checked by its `validate_config` first).
pub fn start_health<T: HealthPlugin>(args: &[(&str, &str)]) -> Result<HealthHarness, String> {
    let args = PluginArgs::from_pairs(args.iter().copied());
    T::validate_config(&args)?;
    let (ctx, logs) = context(T::NAME);
    let (hosts, host_rx) = unbounded();
    let (report_tx, reports) = unbounded();
    let monitor = crate::health::start::<T>(&args, ctx, host_rx, report_tx)?;
    Ok(HealthHarness { monitor, hosts, reports, logs })
}

/// A watcher started as the host would, with its queue.
pub struct WatcherHarness {
    /// The running watcher (status, reload, stop).
    pub watcher: WatcherBox,
    /// Specs arrive here.
    pub specs: RReceiver<RouteSpec>,
    /// Its log lines.
    pub logs: LogCapture,
}

impl WatcherHarness {
    /// The next spec within `timeout`.
    pub fn next_spec(&self, timeout: Duration) -> Option<RouteSpec> {
        recv_within(&self.specs, timeout)
    }
    /// Stops the watcher within 2 s.
    pub fn stop(&self) -> Result<(), String> {
        self.watcher.stop(2000).into_result().map_err(|e| e.to_string())
    }
}

/// Starts watcher `T` with options `args` (checked by its `validate_config` first).
pub fn start_watcher<T: WatcherPlugin>(args: &[(&str, &str)]) -> Result<WatcherHarness, String> {
    let args = PluginArgs::from_pairs(args.iter().copied());
    T::validate_config(&args)?;
    let (ctx, logs) = context(T::NAME);
    let (tx, specs) = unbounded();
    let watcher = crate::watcher::start::<T>(&args, ctx, tx)?;
    Ok(WatcherHarness { watcher, specs, logs })
}
