//! The root module and the plugin objects that cross the FFI boundary.

use abi_stable::library::RootModule;
use abi_stable::sabi_trait;
use abi_stable::std_types::{RBox, RResult, RSlice, RString, RVec};
use abi_stable::{declare_root_module_statics, package_version_strings, StableAbi};

use crate::args::{ArgSpec, PluginArgs};
use crate::context::PluginContext;
use crate::types::{HealthReport, HostList, RouteSpec};
use crate::{RReceiver, RSender};

/// Which queue a plugin serves.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PluginKind {
    /// Produces route specs (`-m NAME`, file `libvpcrouter_NAME.so`).
    Watcher,
    /// Judges router health (`-H NAME`, file `libvpcrouter_health_NAME.so`).
    Health,
}

impl PluginKind {
    /// `watcher` or `health`.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Watcher => "watcher",
            PluginKind::Health => "health",
        }
    }
}

/// Who a plugin is. Returned by [`PluginMod::metadata`] without starting anything.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct PluginMetadata {
    /// Name as used on the command line: `[a-z0-9_]+`.
    pub name: RString,
    /// Watcher or health monitor.
    pub kind: PluginKind,
    /// One line for `--list-plugins`.
    pub description: RString,
    /// The plugin's own version.
    pub version: RString,
    /// The `plugin-api` version it was built against ([`crate::PLUGIN_API_VERSION`]).
    pub api_version: RString,
}

/// A running (or startable) watcher plugin.
#[sabi_trait]
pub trait Watcher: Send {
    /// Starts watching. Must return promptly (spawn a thread for ongoing work) and send the
    /// FULL spec on `specs` whenever it is known or changes. Keep `specs` until `stop`:
    /// dropping it tells the host the watcher is gone, and the host then exits with an error.
    fn start(&mut self, ctx: PluginContext, specs: RSender<RouteSpec>) -> RResult<(), RString>;

    /// Stops all work and joins the plugin's threads; returns within 2 s.
    fn stop(&mut self) -> RResult<(), RString>;

    /// Re-reads the plugin's configuration (the host calls it on SIGHUP) and sends the
    /// full spec if it changed. Plugins without configuration to re-read return `Ok`.
    fn reload(&mut self) -> RResult<(), RString>;

    /// A JSON object describing the plugin's state for the status server.
    #[sabi(last_prefix_field)]
    fn info(&self) -> RString;
}

/// An owned watcher plugin object.
pub type WatcherBox = Watcher_TO<'static, RBox<()>>;

/// A running (or startable) health monitor plugin.
#[sabi_trait]
pub trait HealthMonitor: Send {
    /// Starts monitoring. `hosts` delivers the FULL host list whenever it changes; the
    /// plugin sends its FULL verdict on `reports` whenever it changes. Keep `reports` until
    /// `stop`: dropping it tells the host the monitor is gone, and the host then exits.
    fn start(
        &mut self,
        ctx: PluginContext,
        hosts: RReceiver<HostList>,
        reports: RSender<HealthReport>,
    ) -> RResult<(), RString>;

    /// Stops all work and joins the plugin's threads; returns within 2 s.
    fn stop(&mut self) -> RResult<(), RString>;

    /// A JSON object describing the plugin's state for the status server.
    fn info(&self) -> RString;

    /// Seconds between two checks of the same host (combining plugins use it).
    #[sabi(last_prefix_field)]
    fn interval_secs(&self) -> f64;
}

/// An owned health plugin object.
pub type HealthBox = HealthMonitor_TO<'static, RBox<()>>;

/// The object a plugin module creates.
#[repr(C, u8)]
#[derive(StableAbi)]
pub enum PluginInstance {
    /// A watcher.
    Watcher(WatcherBox),
    /// A health monitor.
    Health(HealthBox),
}

/// The root module every plugin library exports (use [`crate::export_plugin!`]).
///
/// The host calls, in order: `metadata`, `arguments` (to build its command line),
/// `required_plugins`, `validate_dependencies`, `validate_config`, `create`, then the
/// object's `start`, and at shutdown its `stop`.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    /// Name, kind, description and versions.
    pub metadata: extern "C" fn() -> PluginMetadata,
    /// Options the plugin adds to the host's command line.
    pub arguments: extern "C" fn() -> RVec<ArgSpec>,
    /// Other health plugins this one loads, judged from the raw command line (so the host
    /// can add their options too); empty for most plugins.
    pub required_plugins: extern "C" fn(argv: RSlice<'_, RString>) -> RResult<RVec<RString>, RString>,
    /// Checks the environment (capabilities, files, ...) before anything starts.
    pub validate_dependencies: extern "C" fn() -> RResult<(), RString>,
    /// Checks the parsed options; the error is shown to the user as is.
    pub validate_config: extern "C" fn(args: &PluginArgs) -> RResult<(), RString>,
    /// Creates the plugin object from validated options.
    #[sabi(last_prefix_field)]
    pub create: extern "C" fn(args: &PluginArgs) -> RResult<PluginInstance, RString>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "vpcrouter_plugin";
    const NAME: &'static str = "vpcrouter_plugin";
    const VERSION_STRINGS: abi_stable::sabi_types::VersionStrings = package_version_strings!();
}
