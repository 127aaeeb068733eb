//! The root module and the running plugin objects that cross the FFI boundary.
//!
//! Plugin authors do not implement these: [`crate::watcher::WatcherPlugin`],
//! [`crate::health::HealthPlugin`] or [`crate::notifier::NotifierPlugin`] and
//! [`crate::export_plugin!`] write them.

use std::time::Duration;

use abi_stable::library::RootModule;
use abi_stable::sabi_trait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RArc, RBox, RResult, RSlice, RStr, RString, RVec};
use abi_stable::{declare_root_module_statics, package_version_strings, StableAbi};

use crate::args::{ArgSpec, PluginArgs};
use crate::context::{HttpHandler, HttpHandlerBox, HttpRegistryBox, Logger};
use crate::types::{HealthReport, HostList, NotifyEvent, PluginStatus, RouteSpec};
use crate::{RReceiver, RSender};

/// Which queue a plugin serves.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PluginKind {
    /// Produces route specs (`-m NAME`, file `libvpcrouter_NAME.so`).
    Watcher,
    /// Judges router health (`-H NAME`, file `libvpcrouter_health_NAME.so`).
    Health,
    /// Tells the world what happened (`--notify NAME`, file `libvpcrouter_notify_NAME.so`).
    Notifier,
}

impl PluginKind {
    /// `watcher`, `health` or `notifier`.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Watcher => "watcher",
            PluginKind::Health => "health",
            PluginKind::Notifier => "notifier",
        }
    }

    /// What the file name of a plugin of this kind starts with after `libvpcrouter_`:
    /// nothing for watchers, `health_` and `notify_` for the others.
    pub fn file_prefix(self) -> &'static str {
        match self {
            PluginKind::Watcher => "",
            PluginKind::Health => "health_",
            PluginKind::Notifier => "notify_",
        }
    }
}

/// Who a plugin is. Returned by [`PluginMod::metadata`] without starting anything.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct PluginMetadata {
    /// Name as used on the command line: `[a-z0-9_]+`.
    pub name: RString,
    /// Watcher, health monitor or notifier.
    pub kind: PluginKind,
    /// One line for `--list-plugins`.
    pub description: RString,
    /// The plugin's own version.
    pub version: RString,
    /// The `plugin-api` version it was built against ([`crate::PLUGIN_API_VERSION`]).
    pub api_version: RString,
}

/// A running watcher, returned by [`PluginMod::start`]. It keeps its spec queue until
/// [`Watcher::stop`]; a queue dropped earlier tells the host the watcher is gone.
///
/// Every method takes `&self` and may be called from any thread, concurrently: the host
/// holds no lock around these calls.
#[sabi_trait]
pub trait Watcher: Send + Sync {
    /// Version, options, counters and plugin-specific details for the status server.
    fn status(&self) -> PluginStatus;

    /// Re-reads the plugin's configuration (the host calls it on SIGHUP) and sends the
    /// full spec if it changed.
    fn reload(&self) -> RResult<(), RString>;

    /// Stops all work and joins the plugin's threads within `within_ms` milliseconds.
    #[sabi(last_prefix_field)]
    fn stop(&self, within_ms: u64) -> RResult<(), RString>;
}

/// An owned running watcher.
pub type WatcherBox = Watcher_TO<'static, RBox<()>>;

impl WatcherBox {
    /// [`Watcher::stop`] with a `Duration` (whole milliseconds) and a plain `Result`.
    pub fn stop_within(&self, within: Duration) -> Result<(), String> {
        self.stop(millis(within)).into_result().map_err(String::from)
    }
}

/// A running health monitor, returned by [`PluginMod::start`] or
/// [`PluginLoader::start_health`]. It reads FULL host lists and sends FULL verdicts, and
/// keeps its report queue until [`HealthMonitor::stop`].
///
/// Every method takes `&self` and may be called from any thread, concurrently.
#[sabi_trait]
pub trait HealthMonitor: Send + Sync {
    /// Version, options, counters and plugin-specific details for the status server.
    fn status(&self) -> PluginStatus;

    /// Seconds between two checks of the same host (the host waits about two for the
    /// first report; combining plugins use it too).
    fn interval_secs(&self) -> f64;

    /// Stops all work and joins the plugin's threads within `within_ms` milliseconds.
    #[sabi(last_prefix_field)]
    fn stop(&self, within_ms: u64) -> RResult<(), RString>;
}

/// An owned running health monitor.
pub type HealthBox = HealthMonitor_TO<'static, RBox<()>>;

impl HealthBox {
    /// [`HealthMonitor::stop`] with a `Duration` (whole milliseconds) and a plain `Result`.
    pub fn stop_within(&self, within: Duration) -> Result<(), String> {
        self.stop(millis(within)).into_result().map_err(String::from)
    }
}

/// A running notifier, returned by [`PluginMod::start`]. The host calls [`Notifier::notify`]
/// for one event at a time, in order, from a thread of its own, and never waits for it
/// elsewhere: a slow delivery only delays the notifier's own later events.
///
/// Every method takes `&self` and may be called from any thread, concurrently: `stop` comes
/// from another thread while a delivery may be under way, and makes it give up.
#[sabi_trait]
pub trait Notifier: Send + Sync {
    /// Version, options, counters and plugin-specific details for the status server.
    fn status(&self) -> PluginStatus;

    /// Delivers one event; returns once it is delivered or given up (the error says why).
    fn notify(&self, event: &NotifyEvent) -> RResult<(), RString>;

    /// Stops all work (a delivery under way gives up) within `within_ms` milliseconds.
    #[sabi(last_prefix_field)]
    fn stop(&self, within_ms: u64) -> RResult<(), RString>;
}

/// An owned running notifier.
pub type NotifierBox = Notifier_TO<'static, RBox<()>>;

impl NotifierBox {
    /// [`Notifier::stop`] with a `Duration` (whole milliseconds) and a plain `Result`.
    pub fn stop_within(&self, within: Duration) -> Result<(), String> {
        self.stop(millis(within)).into_result().map_err(String::from)
    }

    /// [`Notifier::notify`] with a plain `Result`.
    pub fn deliver(&self, event: &NotifyEvent) -> Result<(), String> {
        self.notify(event).into_result().map_err(String::from)
    }
}

/// `d` in whole milliseconds, at most `u64::MAX`.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The running object [`PluginMod::start`] returns.
#[repr(C, u8)]
#[derive(StableAbi)]
pub enum PluginInstance {
    /// A watcher.
    Watcher(WatcherBox),
    /// A health monitor.
    Health(HealthBox),
    /// A notifier.
    Notifier(NotifierBox),
}

/// The queues a plugin is started with.
#[repr(C, u8)]
#[derive(StableAbi)]
pub enum PluginIo {
    /// A watcher sends FULL specs on `specs`.
    Watcher {
        /// Where specs go.
        specs: RSender<RouteSpec>,
    },
    /// A health monitor reads FULL host lists on `hosts` and sends FULL verdicts on `reports`.
    Health {
        /// The hosts to watch, whenever they change.
        hosts: RReceiver<HostList>,
        /// Where verdicts go.
        reports: RSender<HealthReport>,
    },
    /// A notifier has no queue: the host calls [`Notifier::notify`] for each event.
    Notifier,
}

/// Starts further health plugins through the host (used by combining plugins such as `multi`).
#[sabi_trait]
pub trait PluginLoader: Send + Sync + Clone {
    /// Loads the health plugin `name` (as for `-H name`) from the host's plugin search path
    /// and starts it with the options the host parsed for it and these queues. The plugin
    /// must have been named by [`PluginMod::required_plugins`] so its options exist.
    #[sabi(last_prefix_field)]
    fn start_health(
        &self,
        name: RStr<'_>,
        hosts: RReceiver<HostList>,
        reports: RSender<HealthReport>,
    ) -> RResult<HealthBox, RString>;
}

/// A shared handle to the host's plugin loader.
pub type PluginLoaderBox = PluginLoader_TO<'static, RArc<()>>;

/// Everything the host lends a plugin at start.
#[repr(C)]
#[derive(StableAbi, Clone)]
pub struct PluginContext {
    /// The plugin's name as the host loaded it.
    pub plugin_name: RString,
    /// Log lines go here; they show up in the host's log with the plugin name.
    pub log: Logger,
    /// Extra endpoints on the host's status server.
    pub http: HttpRegistryBox,
    /// Starts other plugins by name.
    pub loader: PluginLoaderBox,
}

/// The root module every plugin library exports (use [`crate::export_plugin!`]).
///
/// The host calls, in order: `metadata`, `arguments` (to build its command line),
/// `required_plugins_for` (or `required_plugins` when the plugin lacks it),
/// `validate_dependencies`, `validate_config`, then `start`, and at shutdown the running
/// object's `stop`. Fields added in later patch releases come after
/// `start` and are read as `Option`s: `None` from a plugin built before them. Plugins and
/// hosts of different patch releases of one minor load each other when opened with
/// [`crate::load::open`] (PLUGINS.md, "Evolving the ABI").
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(option))]
pub struct PluginMod {
    /// Name, kind, description and versions.
    pub metadata: extern "C" fn() -> PluginMetadata,
    /// Options the plugin adds to the host's command line.
    pub arguments: extern "C" fn() -> RVec<ArgSpec>,
    /// Other health plugins this one starts, judged from the raw command line (so the host
    /// can add their options too); empty for most plugins. Superseded by
    /// `required_plugins_for`, kept for hosts built before it.
    pub required_plugins: extern "C" fn(argv: RSlice<'_, RString>) -> RResult<RVec<RString>, RString>,
    /// Checks the environment (capabilities, files, ...) before anything starts.
    pub validate_dependencies: extern "C" fn() -> RResult<(), RString>,
    /// Checks the parsed options; the error is shown to the user as is.
    pub validate_config: extern "C" fn(args: &PluginArgs) -> RResult<(), RString>,
    /// Starts the plugin with validated options and its queues; returns it running.
    #[sabi(last_prefix_field)]
    pub start: extern "C" fn(args: &PluginArgs, ctx: PluginContext, io: PluginIo) -> RResult<PluginInstance, RString>,
    /// Other health plugins this one starts, for the values of its own options as the host
    /// read them (the host then loads them and adds their options too); empty for most
    /// plugins. `None` from plugins built before it: ask `required_plugins`.
    pub required_plugins_for: extern "C" fn(args: &PluginArgs) -> RResult<RVec<RString>, RString>,
}

impl PluginContext {
    /// Adds an endpoint to the host's status server: `method` requests (e.g. `POST`) for
    /// exactly `path` go to `handler`, an [`HttpHandler`] or a closure
    /// `Fn(HttpRequest) -> HttpResponse`. The error says why not (the path is the host's or
    /// another plugin's).
    pub fn register_endpoint(
        &self,
        method: &str,
        path: &str,
        handler: impl HttpHandler + 'static,
    ) -> Result<(), String> {
        let handler = HttpHandlerBox::from_value(handler, TD_Opaque);
        self.http.register(method.into(), path.into(), handler).into_result().map_err(String::from)
    }

    /// Starts health plugin `name` through the host with the options the host parsed for it
    /// (it must be one [`crate::export::PluginDescription::required_plugins`] named): it reads
    /// host lists on `hosts` and sends reports on `reports`. The error says why not.
    pub fn start_health(
        &self,
        name: &str,
        hosts: RReceiver<HostList>,
        reports: RSender<HealthReport>,
    ) -> Result<HealthBox, String> {
        self.loader.start_health(name.into(), hosts, reports).into_result().map_err(String::from)
    }
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "vpcrouter_plugin";
    const NAME: &'static str = "vpcrouter_plugin";
    const VERSION_STRINGS: abi_stable::sabi_types::VersionStrings = package_version_strings!();
}
