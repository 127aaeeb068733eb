//! Test helpers for plugin authors (feature `testkit`, for `[dev-dependencies]`).
//!
//! [`context`] builds the [`PluginContext`] a host would lend a plugin: its log lines are
//! captured in a [`LogCapture`], its HTTP registry refuses every endpoint and its loader
//! starts nothing. [`start_health`], [`start_watcher`] and [`start_notifier`] start a plugin
//! through the same SDK path the host uses and hand back its queues (a notifier: a harness
//! that delivers events as the host does), so a test sees what the host would;
//! [`sample_event`] gives the example event of each kind.
//! A [`TestHost`] does the same with endpoints a test can call ([`Endpoints`]) and health
//! plugins the context's loader starts by name ([`HealthPlugins`], for combining plugins).
//! [`recv_within`] and [`nothing_within`] read queues with a deadline so a broken plugin
//! fails a test instead of hanging it.
//!
//! ```toml
//! [dev-dependencies]
//! vpcrouter-plugin-api = { version = "0.3", features = ["testkit"] }
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RArc, RResult, RStr, RString};

use crate::channel::unbounded;
use crate::context::{
    HostLogger, HttpHandlerBox, HttpRegistry, HttpRegistryBox, HttpRegistry_TO, HttpRequest, HttpResponse, LogLevel,
    Logger,
};
use crate::health::HealthPlugin;
use crate::net::Ipv4;
use crate::notifier::{Event, NotifierPlugin};
use crate::plugin::{
    HealthBox, NotifierBox, PluginContext, PluginLoader, PluginLoaderBox, PluginLoader_TO, WatcherBox,
};
use crate::sync::lock;
use crate::types::{HealthReport, HealthStats, HostList, NotifierStats, NotifyEvent, PluginStats, RouteSpec};
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
        lock(&self.lines)
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
        self.monitor.stop_within(Duration::from_secs(2))
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
    started_health::<T>(args, context(T::NAME))
}

fn started_health<T: HealthPlugin>(
    args: &[(&str, &str)],
    (ctx, logs): (PluginContext, LogCapture),
) -> Result<HealthHarness, String> {
    let args = PluginArgs::from_pairs(args.iter().copied());
    T::validate_config(&args)?;
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
        self.watcher.stop_within(Duration::from_secs(2))
    }
}

/// Starts watcher `T` with options `args` (checked by its `validate_config` first).
pub fn start_watcher<T: WatcherPlugin>(args: &[(&str, &str)]) -> Result<WatcherHarness, String> {
    started_watcher::<T>(args, context(T::NAME), true)
}

/// Starts watcher `T` with options `args` without `validate_config`, to test that its
/// `start` refuses bad options too.
pub fn start_watcher_unchecked<T: WatcherPlugin>(args: &[(&str, &str)]) -> Result<WatcherHarness, String> {
    started_watcher::<T>(args, context(T::NAME), false)
}

fn started_watcher<T: WatcherPlugin>(
    args: &[(&str, &str)],
    (ctx, logs): (PluginContext, LogCapture),
    validate: bool,
) -> Result<WatcherHarness, String> {
    let args = PluginArgs::from_pairs(args.iter().copied());
    if validate {
        T::validate_config(&args)?;
    }
    let (tx, specs) = unbounded();
    let watcher = crate::watcher::start::<T>(&args, ctx, tx)?;
    Ok(WatcherHarness { watcher, specs, logs })
}

/// A notifier started as the host would.
pub struct NotifierHarness {
    /// The running notifier (status, notify, stop).
    pub notifier: NotifierBox,
    /// Its log lines.
    pub logs: LogCapture,
}

impl NotifierHarness {
    /// Delivers `event` as the host would; returns what the notifier returned.
    pub fn notify(&self, event: &Event) -> Result<(), String> {
        self.notifier.deliver(&NotifyEvent { event: event.name().into(), json: event.json().into() })
    }
    /// Stops the notifier within 2 s.
    pub fn stop(&self) -> Result<(), String> {
        self.notifier.stop_within(Duration::from_secs(2))
    }
    /// The notifier's counters.
    pub fn stats(&self) -> NotifierStats {
        match self.notifier.status().stats {
            PluginStats::Notifier(stats) => stats,
            other => panic!("not notifier stats: {other:?}"),
        }
    }
}

/// Starts notifier `T` with options `args` (checked by its `validate_config` first).
pub fn start_notifier<T: NotifierPlugin>(args: &[(&str, &str)]) -> Result<NotifierHarness, String> {
    let args = PluginArgs::from_pairs(args.iter().copied());
    T::validate_config(&args)?;
    let (ctx, logs) = context(T::NAME);
    let notifier = crate::notifier::start::<T>(&args, ctx)?;
    Ok(NotifierHarness { notifier, logs })
}

/// The example event of kind `name` that PLUGINS.md shows ("Events"), as the host would send
/// it: `route_changed`, `failover`, `router_down`, `router_up`, `leader`, `follower`,
/// `drained`, `undrained`, `reconcile_error`. Panics on another name.
pub fn sample_event(name: &str) -> Event {
    let fields = match name {
        "route_changed" => {
            r#""cidr":"10.55.0.0/16","route_table":"rtb-0a1b2c3d","router":"10.0.2.10","old_router":"10.0.1.10","reason":"router failed""#
        }
        "failover" => r#""routers":["10.0.1.10"],"routes_moved":4,"seconds":0.41"#,
        "router_down" | "router_up" => r#""router":"10.0.1.10""#,
        "leader" | "follower" => "",
        "drained" | "undrained" => r#""router":"10.0.1.10","reason":"kernel upgrade""#,
        "reconcile_error" => r#""message":"cannot read VPC vpc-0a1b2c3d: RequestLimitExceeded""#,
        other => panic!("no sample event '{other}'"),
    };
    let sep = if fields.is_empty() { "" } else { "," };
    let json = format!(r#"{{"event":"{name}","time":"2026-12-07T10:15:30.120Z","vpc":"vpc-0a1b2c3d"{sep}{fields}}}"#);
    Event::from_json(&json).unwrap_or_else(|e| panic!("sample event {name}: {e}"))
}

/// A host for tests with the services a plugin may use: HTTP endpoints the test can call,
/// and health plugins its loader starts by name. Clones share both.
#[derive(Clone, Default)]
pub struct TestHost {
    /// What plugins register on the status server.
    pub endpoints: Endpoints,
    /// What `ctx.start_health(name, ..)` starts.
    pub plugins: HealthPlugins,
}

impl TestHost {
    /// A host whose loader starts `plugins`.
    pub fn with_plugins(plugins: HealthPlugins) -> TestHost {
        TestHost { plugins, ..TestHost::default() }
    }

    /// A context for plugin `name` with this host's services, and the capture of its log.
    pub fn context(&self, name: &str) -> (PluginContext, LogCapture) {
        let capture = LogCapture::default();
        let log = Logger::new(CaptureLogger(capture.clone()));
        let http: HttpRegistryBox = HttpRegistry_TO::from_ptr(RArc::new(self.endpoints.clone()), TD_Opaque);
        let loader = TestLoader { plugins: self.plugins.clone(), log: log.clone(), http: http.clone() };
        (PluginContext { plugin_name: name.into(), log, http, loader: loader.boxed() }, capture)
    }

    /// Starts watcher `T` here with options `args` (checked by its `validate_config` first).
    pub fn start_watcher<T: WatcherPlugin>(&self, args: &[(&str, &str)]) -> Result<WatcherHarness, String> {
        started_watcher::<T>(args, self.context(T::NAME), true)
    }

    /// Starts health plugin `T` here with options `args` (checked by its `validate_config`
    /// first).
    pub fn start_health<T: HealthPlugin>(&self, args: &[(&str, &str)]) -> Result<HealthHarness, String> {
        started_health::<T>(args, self.context(T::NAME))
    }
}

/// The HTTP endpoints plugins registered on a [`TestHost`], called as the host's status
/// server calls them. A method and path registered twice is refused.
#[derive(Clone, Default)]
pub struct Endpoints {
    /// Handlers by (method, path); shared with the contexts of the host.
    handlers: Arc<Mutex<Handlers>>,
}

/// Endpoint handlers by (method, path).
type Handlers = BTreeMap<(String, String), Arc<HttpHandlerBox>>;

impl Endpoints {
    /// The (method, path) pairs registered, sorted.
    pub fn registered(&self) -> Vec<(String, String)> {
        lock(&self.handlers).keys().cloned().collect()
    }

    /// The answer of the endpoint registered for `request`'s method and path, or `None`.
    pub fn call(&self, request: HttpRequest) -> Option<HttpResponse> {
        let key = (request.method.to_string(), request.path.to_string());
        let handler = lock(&self.handlers).get(&key).cloned()?;
        Some(handler.handle(request))
    }
}

impl HttpRegistry for Endpoints {
    fn register(&self, method: RStr<'_>, path: RStr<'_>, handler: HttpHandlerBox) -> RResult<(), RString> {
        let mut handlers = lock(&self.handlers);
        let key = (method.to_string(), path.to_string());
        if handlers.contains_key(&key) {
            return RResult::RErr(format!("{method} {path} is already served").into());
        }
        handlers.insert(key, Arc::new(handler));
        RResult::ROk(())
    }
}

/// Starts a health plugin on a context and queues.
type StartHealth =
    dyn Fn(PluginContext, RReceiver<HostList>, RSender<HealthReport>) -> Result<HealthBox, String> + Send + Sync;

/// The health plugins a [`TestHost`]'s loader starts by name, each with its options.
#[derive(Clone, Default)]
pub struct HealthPlugins {
    /// How to start each, by name.
    plugins: BTreeMap<String, Arc<StartHealth>>,
}

impl HealthPlugins {
    /// Adds health plugin `T` under `name`, started with options `args` (checked by its
    /// `validate_config` first, as the host does).
    pub fn with<T: HealthPlugin>(mut self, name: &str, args: &[(&str, &str)]) -> HealthPlugins {
        let args = PluginArgs::from_pairs(args.iter().copied());
        let start = move |ctx, hosts, reports| {
            T::validate_config(&args)?;
            crate::health::start::<T>(&args, ctx, hosts, reports)
        };
        self.plugins.insert(name.to_string(), Arc::new(start));
        self
    }
}

/// The loader of a [`TestHost`]'s contexts: sub-plugins share the log and endpoints.
#[derive(Clone)]
struct TestLoader {
    plugins: HealthPlugins,
    log: Logger,
    http: HttpRegistryBox,
}

impl TestLoader {
    fn boxed(&self) -> PluginLoaderBox {
        PluginLoader_TO::from_ptr(RArc::new(self.clone()), TD_Opaque)
    }
}

impl PluginLoader for TestLoader {
    fn start_health(
        &self,
        name: RStr<'_>,
        hosts: RReceiver<HostList>,
        reports: RSender<HealthReport>,
    ) -> RResult<HealthBox, RString> {
        let Some(start) = self.plugins.plugins.get(name.as_str()) else {
            return RResult::RErr(
                format!("no health plugin '{name}' in this test host (add it to HealthPlugins)").into(),
            );
        };
        let ctx = PluginContext {
            plugin_name: name.into(),
            log: self.log.clone(),
            http: self.http.clone(),
            loader: self.boxed(),
        };
        start(ctx, hosts, reports).map_err(RString::from).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;

    /// Serves `GET /hello` with a closure and starts `sub` through the host.
    struct Hello;
    impl PluginDescription for Hello {
        const NAME: &'static str = "hello";
        const DESCRIPTION: &'static str = "test";
        const VERSION: &'static str = "0.0.1";
    }
    impl WatcherPlugin for Hello {
        fn start(_args: &PluginArgs, run: &WatcherRun) -> Result<Self, String> {
            let name = run.context().plugin_name.to_string();
            let hello = move |request: HttpRequest| HttpResponse::text(200, format!("{name} {}", request.query));
            run.context().register_endpoint("GET", "/hello", hello)?;
            let (_hosts, host_rx) = unbounded();
            let (report_tx, _reports) = unbounded();
            let sub = run.context().start_health("sub", host_rx, report_tx)?;
            sub.stop_within(Duration::from_secs(1))?;
            Ok(Hello)
        }
    }

    /// Every host is healthy.
    struct Healthy;
    impl PluginDescription for Healthy {
        const NAME: &'static str = "healthy";
        const DESCRIPTION: &'static str = "test";
        const VERSION: &'static str = "0.0.1";
        fn validate_config(args: &PluginArgs) -> Result<(), String> {
            args.require("must").map(drop)
        }
    }
    impl HealthPlugin for Healthy {
        type Prober = Each<Up>;
        fn start(_args: &PluginArgs, _run: &HealthRun) -> Result<(Schedule, Each<Up>), String> {
            Ok((Schedule::every(Duration::from_secs(1)), Each::new(Up, 1)?))
        }
    }
    struct Up;
    impl CheckHost for Up {
        fn check(&self, _host: Ipv4, _timeout: Duration) -> Result<(), String> {
            Ok(())
        }
    }

    #[test]
    fn a_test_host_serves_endpoints_and_starts_sub_plugins() {
        let host = TestHost::with_plugins(HealthPlugins::default().with::<Healthy>("sub", &[("must", "x")]));
        let h = host.start_watcher::<Hello>(&[]).unwrap();
        let mut request = HttpRequest::new("GET", "/hello");
        request.query = "a=1".into();
        let answer = host.endpoints.call(request).expect("served");
        assert_eq!((answer.status, answer.body.as_slice()), (200, b"hello a=1".as_slice()));
        assert!(host.endpoints.call(HttpRequest::new("POST", "/hello")).is_none());
        let again = host.start_watcher::<Hello>(&[]).err().unwrap();
        assert_eq!(again, "GET /hello is already served");
        h.stop().unwrap();

        let no_sub = TestHost::default().start_watcher::<Hello>(&[]).err().unwrap();
        assert!(no_sub.starts_with("no health plugin 'sub' in this test host"), "{no_sub}");
        let bad_sub = TestHost::with_plugins(HealthPlugins::default().with::<Healthy>("sub", &[]));
        assert_eq!(bad_sub.start_watcher::<Hello>(&[]).err().unwrap(), "--must is required");
        assert_eq!(
            start_watcher::<Hello>(&[]).err().unwrap(),
            "no HTTP server in tests (path /hello)",
            "the plain context refuses endpoints"
        );
    }
}
