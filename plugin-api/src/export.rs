//! The plugin author's side: plain Rust traits, and [`export_plugin!`] to publish one.
//!
//! Every call from the host into plugin code goes through [`guard`], so a panic in a
//! plugin becomes an `Err("... panicked: ...")` instead of unwinding across `extern "C"`
//! (which would abort the host).

use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::library::{CheckTypeLayout, LibHeader, RootModuleResult};
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RSlice, RString, RVec};

use crate::args::{ArgSpec, PluginArgs};
use crate::context::PluginContext;
use crate::plugin::{
    HealthBox, HealthMonitor, PluginInstance, PluginKind, PluginMetadata, PluginMod, PluginModRef,
    Watcher, WatcherBox,
};
use crate::types::{HealthReport, HostList, RouteSpec};
use crate::{RReceiver, RSender, PLUGIN_API_VERSION};

/// Name, description and version of a plugin, and its command-line options.
pub trait PluginDescription {
    /// Name as used on the command line, `[a-z0-9_]+`.
    const NAME: &'static str;
    /// One line for `--list-plugins` and `--help`.
    const DESCRIPTION: &'static str;
    /// The plugin's version (use `env!("CARGO_PKG_VERSION")`).
    const VERSION: &'static str;

    /// Options this plugin adds to the host's command line.
    fn arguments() -> Vec<ArgSpec> {
        Vec::new()
    }
    /// Checks the environment before start; the error tells the user what to fix.
    fn validate_dependencies() -> Result<(), String> {
        Ok(())
    }
    /// Checks the parsed options; the error tells the user what was wrong.
    fn validate_config(_args: &PluginArgs) -> Result<(), String> {
        Ok(())
    }
}

/// Implement this for a watcher plugin, then `export_plugin!(watcher: MyType)`.
pub trait WatcherPlugin: PluginDescription + Send + Sized + 'static {
    /// Creates the plugin from validated options. Do not start threads yet.
    fn create(args: &PluginArgs) -> Result<Self, String>;
    /// Starts watching; send the FULL spec on `specs` each time it is known or changes.
    /// Keep `specs` until [`WatcherPlugin::stop`] (dropping it means "watcher gone").
    fn start(&mut self, ctx: PluginContext, specs: RSender<RouteSpec>) -> Result<(), String>;
    /// Stops and joins all threads, within 2 s.
    fn stop(&mut self) -> Result<(), String>;
    /// Re-reads configuration on SIGHUP; by default there is none to re-read.
    fn reload(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// State for the status server, a JSON object.
    fn info(&self) -> serde_json::Value {
        serde_json::json!({})
    }
}

/// Implement this for a health plugin, then `export_plugin!(health: MyType)`.
pub trait HealthPlugin: PluginDescription + Send + Sized + 'static {
    /// Other health plugins this one loads through [`PluginContext::loader`], judged from
    /// the raw command line; the host adds their options too.
    fn required_plugins(_argv: &[String]) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
    /// Creates the plugin from validated options. Do not start threads yet.
    fn create(args: &PluginArgs) -> Result<Self, String>;
    /// Starts monitoring: read FULL host lists from `hosts`, send FULL verdicts on `reports`.
    /// Keep `reports` until [`HealthPlugin::stop`] (dropping it means "monitor gone").
    fn start(
        &mut self,
        ctx: PluginContext,
        hosts: RReceiver<HostList>,
        reports: RSender<HealthReport>,
    ) -> Result<(), String>;
    /// Stops and joins all threads, within 2 s.
    fn stop(&mut self) -> Result<(), String>;
    /// State for the status server, a JSON object.
    fn info(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    /// Seconds between two checks of the same host.
    fn interval_secs(&self) -> f64;
}

/// Runs `f`, turning a panic into an error that names `what`.
pub fn guard<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> RResult<T, RString> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => RResult::ROk(v),
        Ok(Err(e)) => RResult::RErr(e.into()),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".to_string());
            RResult::RErr(format!("{what} panicked: {msg}").into())
        }
    }
}

/// Like [`guard`] for calls that cannot report an error: a panic yields `fallback`.
fn guard_or<T>(what: &str, fallback: T, f: impl FnOnce() -> T) -> T {
    guard(what, || Ok(f())).into_result().unwrap_or(fallback)
}

/// Adapts a [`WatcherPlugin`] to the FFI [`Watcher`] trait.
pub struct WatcherAdapter<T>(T);

impl<T: WatcherPlugin> Watcher for WatcherAdapter<T> {
    fn start(&mut self, ctx: PluginContext, specs: RSender<RouteSpec>) -> RResult<(), RString> {
        guard(&format!("plugin '{}' start", T::NAME), || self.0.start(ctx, specs))
    }
    fn stop(&mut self) -> RResult<(), RString> {
        guard(&format!("plugin '{}' stop", T::NAME), || self.0.stop())
    }
    fn reload(&mut self) -> RResult<(), RString> {
        guard(&format!("plugin '{}' reload", T::NAME), || self.0.reload())
    }
    fn info(&self) -> RString {
        guard_or("info", "{}".to_string(), || self.0.info().to_string()).into()
    }
}

/// Adapts a [`HealthPlugin`] to the FFI [`HealthMonitor`] trait.
pub struct HealthAdapter<T>(T);

impl<T: HealthPlugin> HealthMonitor for HealthAdapter<T> {
    fn start(
        &mut self,
        ctx: PluginContext,
        hosts: RReceiver<HostList>,
        reports: RSender<HealthReport>,
    ) -> RResult<(), RString> {
        guard(&format!("plugin '{}' start", T::NAME), || self.0.start(ctx, hosts, reports))
    }
    fn stop(&mut self) -> RResult<(), RString> {
        guard(&format!("plugin '{}' stop", T::NAME), || self.0.stop())
    }
    fn info(&self) -> RString {
        guard_or("info", "{}".to_string(), || self.0.info().to_string()).into()
    }
    fn interval_secs(&self) -> f64 {
        guard_or("interval_secs", 1.0, || self.0.interval_secs())
    }
}

/// Wraps a health plugin value as an FFI object (used by combining plugins' tests too).
pub fn health_box<T: HealthPlugin>(plugin: T) -> HealthBox {
    HealthBox::from_value(HealthAdapter(plugin), TD_Opaque)
}

/// Wraps a watcher plugin value as an FFI object.
pub fn watcher_box<T: WatcherPlugin>(plugin: T) -> WatcherBox {
    WatcherBox::from_value(WatcherAdapter(plugin), TD_Opaque)
}

fn metadata<T: PluginDescription>(kind: PluginKind) -> PluginMetadata {
    PluginMetadata {
        name: T::NAME.into(),
        kind,
        description: T::DESCRIPTION.into(),
        version: T::VERSION.into(),
        api_version: PLUGIN_API_VERSION.into(),
    }
}

fn argv_of(argv: RSlice<'_, RString>) -> Vec<String> {
    argv.iter().map(|s| s.to_string()).collect()
}

/// The module functions of a watcher plugin `T`.
pub struct WatcherModule<T>(std::marker::PhantomData<T>);

impl<T: WatcherPlugin> WatcherModule<T> {
    extern "C" fn metadata() -> PluginMetadata {
        metadata::<T>(PluginKind::Watcher)
    }
    extern "C" fn arguments() -> RVec<ArgSpec> {
        guard_or("arguments", Vec::new(), T::arguments).into()
    }
    extern "C" fn required_plugins(_argv: RSlice<'_, RString>) -> RResult<RVec<RString>, RString> {
        RResult::ROk(RVec::new())
    }
    extern "C" fn validate_dependencies() -> RResult<(), RString> {
        guard(&format!("plugin '{}' dependency check", T::NAME), T::validate_dependencies)
    }
    extern "C" fn validate_config(args: &PluginArgs) -> RResult<(), RString> {
        guard(&format!("plugin '{}' option check", T::NAME), || T::validate_config(args))
    }
    extern "C" fn create(args: &PluginArgs) -> RResult<PluginInstance, RString> {
        guard(&format!("plugin '{}' create", T::NAME), || {
            T::create(args).map(|p| PluginInstance::Watcher(watcher_box(p)))
        })
    }
    /// The root module value.
    pub fn module() -> PluginModRef {
        PluginMod {
            metadata: Self::metadata,
            arguments: Self::arguments,
            required_plugins: Self::required_plugins,
            validate_dependencies: Self::validate_dependencies,
            validate_config: Self::validate_config,
            create: Self::create,
        }
        .leak_into_prefix()
    }
}

/// The module functions of a health plugin `T`.
pub struct HealthModule<T>(std::marker::PhantomData<T>);

impl<T: HealthPlugin> HealthModule<T> {
    extern "C" fn metadata() -> PluginMetadata {
        metadata::<T>(PluginKind::Health)
    }
    extern "C" fn arguments() -> RVec<ArgSpec> {
        guard_or("arguments", Vec::new(), T::arguments).into()
    }
    extern "C" fn required_plugins(argv: RSlice<'_, RString>) -> RResult<RVec<RString>, RString> {
        guard(&format!("plugin '{}' required_plugins", T::NAME), || {
            T::required_plugins(&argv_of(argv))
                .map(|v| v.into_iter().map(RString::from).collect())
        })
    }
    extern "C" fn validate_dependencies() -> RResult<(), RString> {
        guard(&format!("plugin '{}' dependency check", T::NAME), T::validate_dependencies)
    }
    extern "C" fn validate_config(args: &PluginArgs) -> RResult<(), RString> {
        guard(&format!("plugin '{}' option check", T::NAME), || T::validate_config(args))
    }
    extern "C" fn create(args: &PluginArgs) -> RResult<PluginInstance, RString> {
        guard(&format!("plugin '{}' create", T::NAME), || {
            T::create(args).map(|p| PluginInstance::Health(health_box(p)))
        })
    }
    /// The root module value.
    pub fn module() -> PluginModRef {
        PluginMod {
            metadata: Self::metadata,
            arguments: Self::arguments,
            required_plugins: Self::required_plugins,
            validate_dependencies: Self::validate_dependencies,
            validate_config: Self::validate_config,
            create: Self::create,
        }
        .leak_into_prefix()
    }
}

/// Something that yields the root module (implemented by [`export_plugin!`]).
pub trait ModuleSource {
    /// Builds the root module.
    fn module() -> PluginModRef;
}

extern "C" fn erased_module<S: ModuleSource>() -> RootModuleResult {
    abi_stable::library::__call_root_module_loader(S::module)
}

/// The library header a plugin exports under [`ROOT_MODULE_SYMBOL`].
pub const fn lib_header<S: ModuleSource>() -> LibHeader {
    // SAFETY: `erased_module::<S>` returns the prefix reference of a `PluginModRef`
    // (through `__call_root_module_loader`), which is exactly the module type the header
    // is declared for, as `from_constructor` requires.
    #[allow(unsafe_code)]
    unsafe {
        LibHeader::from_constructor::<PluginModRef>(erased_module::<S>, CheckTypeLayout::Yes)
    }
}

/// The symbol `abi_stable` looks up in a library (checked by a test against abi_stable).
pub const ROOT_MODULE_SYMBOL: &str = "_1as_0lib_1header_0root_bmodule_bloader";

/// Exports a plugin from a `cdylib` crate:
/// `export_plugin!(watcher: MyWatcher);` or `export_plugin!(health: MyMonitor);`.
#[macro_export]
macro_rules! export_plugin {
    (watcher: $ty:ty) => {
        $crate::export_plugin!(@emit $crate::export::WatcherModule<$ty>);
    };
    (health: $ty:ty) => {
        $crate::export_plugin!(@emit $crate::export::HealthModule<$ty>);
    };
    (@emit $module:ty) => {
        #[doc(hidden)]
        pub struct __VpcrouterPluginModule;
        impl $crate::export::ModuleSource for __VpcrouterPluginModule {
            fn module() -> $crate::PluginModRef {
                <$module>::module()
            }
        }
        /// The plugin's library header, looked up by the host when it loads the library.
        #[allow(unsafe_code)]
        #[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
        pub static __VPCROUTER_LIB_HEADER: $crate::abi_stable::library::LibHeader =
            $crate::export::lib_header::<__VpcrouterPluginModule>();
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_module_symbol_matches_abi_stable() {
        assert_eq!(ROOT_MODULE_SYMBOL, abi_stable::library::ROOT_MODULE_LOADER_NAME);
    }

    #[test]
    fn guard_turns_panics_into_errors() {
        let r: RResult<(), RString> = guard("demo", || panic!("boom"));
        assert_eq!(r.into_result().unwrap_err().as_str(), "demo panicked: boom");
        let r: RResult<u8, RString> = guard("demo", || Err("bad".into()));
        assert_eq!(r.into_result().unwrap_err().as_str(), "bad");
    }
}
