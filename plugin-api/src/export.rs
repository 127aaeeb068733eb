//! Publishing a plugin: its description, and [`crate::export_plugin!`] to write the root module.
//!
//! Every call from the host into plugin code goes through a guard, so a panic in a
//! plugin becomes an `Err("... panicked: ...")` instead of unwinding across `extern "C"`
//! (which would abort the host).

use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::library::{CheckTypeLayout, LibHeader, RootModuleResult};
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::std_types::{RResult, RSlice, RString, RVec, Tuple2};

use crate::args::{ArgSpec, PluginArgs};
use crate::plugin::{PluginContext, PluginInstance, PluginIo, PluginKind, PluginMetadata, PluginMod, PluginModRef};
use crate::PLUGIN_API_VERSION;

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
    /// Other health plugins this one starts through [`PluginContext::start_health`], for
    /// these values of its own options (the host loads them and adds their options to its
    /// command line before the full parse).
    fn required_plugins(_args: &PluginArgs) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
}

/// Runs `f`, turning a panic into an error that names `what`.
pub(crate) fn guard<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> RResult<T, RString> {
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
pub(crate) fn guard_or<T>(what: &str, fallback: T, f: impl FnOnce() -> T) -> T {
    guard(what, || Ok(f())).into_result().unwrap_or(fallback)
}

/// The values of the options plugin `T` declares, in declaration order (for its status).
pub(crate) fn declared_params<T: PluginDescription>(args: &PluginArgs) -> RVec<Tuple2<RString, RString>> {
    T::arguments().iter().filter_map(|a| args.get(&a.long).map(|v| Tuple2(a.long.clone(), v.into()))).collect()
}

/// The starting half of a plugin kind: turns options, context and queues into a running
/// object. Implemented by the SDK for every watcher, health and notifier plugin.
#[doc(hidden)]
pub trait Start: PluginDescription {
    /// Watcher, health or notifier.
    const KIND: PluginKind;
    /// Starts the plugin.
    fn start_instance(args: &PluginArgs, ctx: PluginContext, io: PluginIo) -> Result<PluginInstance, String>;
}

/// Plugin `T` exported as kind `K` (a marker type of the watcher or health SDK), with
/// `T`'s description.
#[doc(hidden)]
pub struct Exported<T, K>(std::marker::PhantomData<(T, K)>);

impl<T: PluginDescription, K> PluginDescription for Exported<T, K> {
    const NAME: &'static str = T::NAME;
    const DESCRIPTION: &'static str = T::DESCRIPTION;
    const VERSION: &'static str = T::VERSION;
    fn arguments() -> Vec<ArgSpec> {
        T::arguments()
    }
    fn validate_dependencies() -> Result<(), String> {
        T::validate_dependencies()
    }
    fn validate_config(args: &PluginArgs) -> Result<(), String> {
        T::validate_config(args)
    }
    fn required_plugins(args: &PluginArgs) -> Result<Vec<String>, String> {
        T::required_plugins(args)
    }
}

/// The root module functions of plugin `T` (used by [`export_plugin!`]).
#[doc(hidden)]
pub struct Module<T>(std::marker::PhantomData<T>);

impl<T: Start> Module<T> {
    extern "C" fn metadata() -> PluginMetadata {
        PluginMetadata {
            name: T::NAME.into(),
            kind: T::KIND,
            description: T::DESCRIPTION.into(),
            version: T::VERSION.into(),
            api_version: PLUGIN_API_VERSION.into(),
        }
    }
    extern "C" fn arguments() -> RVec<ArgSpec> {
        guard_or("arguments", Vec::new(), T::arguments).into()
    }
    /// For hosts that pass the raw command line: the plugin's own options are read from it
    /// by [`PluginArgs::from_argv`].
    extern "C" fn required_plugins(argv: RSlice<'_, RString>) -> RResult<RVec<RString>, RString> {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        guard(&format!("plugin '{}' required_plugins", T::NAME), || {
            let args = PluginArgs::from_argv(&T::arguments(), &argv);
            T::required_plugins(&args).map(|v| v.into_iter().map(RString::from).collect())
        })
    }
    extern "C" fn required_plugins_for(args: &PluginArgs) -> RResult<RVec<RString>, RString> {
        guard(&format!("plugin '{}' required_plugins", T::NAME), || {
            T::required_plugins(args).map(|v| v.into_iter().map(RString::from).collect())
        })
    }
    extern "C" fn validate_dependencies() -> RResult<(), RString> {
        guard(&format!("plugin '{}' dependency check", T::NAME), T::validate_dependencies)
    }
    extern "C" fn validate_config(args: &PluginArgs) -> RResult<(), RString> {
        guard(&format!("plugin '{}' option check", T::NAME), || T::validate_config(args))
    }
    extern "C" fn start(args: &PluginArgs, ctx: PluginContext, io: PluginIo) -> RResult<PluginInstance, RString> {
        guard(&format!("plugin '{}' start", T::NAME), || T::start_instance(args, ctx, io))
    }

    /// The root module value.
    pub fn module() -> PluginModRef {
        PluginMod {
            metadata: Self::metadata,
            arguments: Self::arguments,
            required_plugins: Self::required_plugins,
            validate_dependencies: Self::validate_dependencies,
            validate_config: Self::validate_config,
            start: Self::start,
            required_plugins_for: Self::required_plugins_for,
        }
        .leak_into_prefix()
    }
}

/// Something that yields the root module (implemented by [`export_plugin!`]).
#[doc(hidden)]
pub trait ModuleSource {
    /// Builds the root module.
    fn module() -> PluginModRef;
}

extern "C" fn erased_module<S: ModuleSource>() -> RootModuleResult {
    abi_stable::library::__call_root_module_loader(S::module)
}

/// The library header a plugin exports (used by [`export_plugin!`]).
#[doc(hidden)]
pub const fn lib_header<S: ModuleSource>() -> LibHeader {
    // SAFETY: `erased_module::<S>` returns the prefix reference of a `PluginModRef`
    // (through `__call_root_module_loader`), which is exactly the module type the header
    // is declared for, as `from_constructor` requires.
    #[allow(unsafe_code)]
    unsafe {
        LibHeader::from_constructor::<PluginModRef>(erased_module::<S>, CheckTypeLayout::Yes)
    }
}

/// Exports a plugin from a `cdylib` crate: `export_plugin!(watcher: MyWatcher);` for a
/// [`crate::watcher::WatcherPlugin`], `export_plugin!(health: MyMonitor);` for a
/// [`crate::health::HealthPlugin`], `export_plugin!(notifier: MyNotifier);` for a
/// [`crate::notifier::NotifierPlugin`].
#[macro_export]
macro_rules! export_plugin {
    (watcher: $ty:ty) => {
        $crate::export_plugin!(@emit $crate::watcher::AsWatcher<$ty>);
    };
    (health: $ty:ty) => {
        $crate::export_plugin!(@emit $crate::health::AsHealth<$ty>);
    };
    (notifier: $ty:ty) => {
        $crate::export_plugin!(@emit $crate::notifier::AsNotifier<$ty>);
    };
    (@emit $ty:ty) => {
        #[doc(hidden)]
        pub struct __VpcrouterPluginModule;
        impl $crate::export::ModuleSource for __VpcrouterPluginModule {
            fn module() -> $crate::PluginModRef {
                $crate::export::Module::<$ty>::module()
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

    /// The symbol [`export_plugin!`] exports its header under.
    const ROOT_MODULE_SYMBOL: &str = "_1as_0lib_1header_0root_bmodule_bloader";

    #[test]
    fn root_module_symbol_matches_abi_stable() {
        assert_eq!(ROOT_MODULE_SYMBOL, abi_stable::library::ROOT_MODULE_LOADER_NAME);
    }

    /// Starts the plugins `--subs a:b` names (it never starts itself).
    struct Combines;
    impl PluginDescription for Combines {
        const NAME: &'static str = "combines";
        const DESCRIPTION: &'static str = "test";
        const VERSION: &'static str = "0.0.1";
        fn arguments() -> Vec<ArgSpec> {
            vec![ArgSpec::value("subs", "A:B", "sub-plugins")]
        }
        fn required_plugins(args: &PluginArgs) -> Result<Vec<String>, String> {
            match args.list("subs", ':') {
                subs if subs.iter().any(|s| s == "combines") => Err("--subs names combines itself".into()),
                subs => Ok(subs),
            }
        }
    }
    impl crate::health::HealthPlugin for Combines {
        type Prober = Combines;
        fn start(
            _args: &PluginArgs,
            _run: &crate::health::HealthRun,
        ) -> Result<(crate::health::Schedule, Combines), String> {
            Err("not in this test".into())
        }
    }
    impl crate::health::Prober for Combines {
        fn probe(
            &mut self,
            _round: crate::health::Round,
            _hosts: &[crate::Ipv4],
            _answers: &mut crate::health::Answers,
        ) {
        }
    }

    #[test]
    fn required_plugins_come_from_the_parsed_options_or_from_an_old_hosts_command_line() {
        let module = Module::<crate::health::AsHealth<Combines>>::module();
        let names = |r: RResult<RVec<RString>, RString>| -> Result<Vec<String>, String> {
            r.into_result().map(|v| v.iter().map(|s| s.to_string()).collect()).map_err(String::from)
        };
        let for_args = module.required_plugins_for().expect("this release has it");
        assert_eq!(names(for_args(&PluginArgs::from_pairs([("subs", "a:b")]))), Ok(vec!["a".into(), "b".into()]));
        assert_eq!(names(for_args(&PluginArgs::default())), Ok(vec![]));
        let argv = |line: &str| -> Vec<RString> { line.split_whitespace().map(RString::from).collect() };
        let from_argv = |line: &str| names((module.required_plugins())(argv(line).as_slice().into()));
        assert_eq!(from_argv("vpcrouter -H combines --subs=c -r x"), Ok(vec!["c".into()]));
        assert_eq!(from_argv("vpcrouter -H combines"), Ok(vec![]));
        assert_eq!(from_argv("vpcrouter --subs a:combines"), Err("--subs names combines itself".into()));
    }

    #[test]
    fn guard_turns_panics_into_errors() {
        let r: RResult<(), RString> = guard("demo", || panic!("boom"));
        assert_eq!(r.into_result().unwrap_err().as_str(), "demo panicked: boom");
        let r: RResult<u8, RString> = guard("demo", || Err("bad".into()));
        assert_eq!(r.into_result().unwrap_err().as_str(), "bad");
    }
}
