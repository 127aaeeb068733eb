//! The contract between the `vpcrouter` host and its plugins.
//!
//! A plugin is a `cdylib` crate that depends on this crate alone. It is found by file name
//! (`libvpcrouter_<name>.so` for watchers, `libvpcrouter_health_<name>.so` for health
//! monitors), loaded at run time, and checked by [`abi_stable`]: a plugin built against an
//! incompatible version of this crate is refused at load time with both versions named.
//!
//! What crosses the boundary:
//! * [`PluginMod`], the root module every plugin exports ([`export_plugin!`] writes it);
//! * the plugin object, a [`WatcherBox`] or a [`HealthBox`];
//! * full snapshots on crossbeam channels: a watcher sends the whole [`RouteSpec`] every
//!   time; a health monitor receives the whole [`HostList`] and sends a whole
//!   [`HealthReport`];
//! * a [`PluginContext`]: the host's logger, HTTP endpoint registry and plugin loader.
//!
//! Plugin authors implement the plain Rust traits [`WatcherPlugin`] or [`HealthPlugin`];
//! [`export_plugin!`] wraps them so that a panic in plugin code becomes an error value
//! instead of unwinding across the FFI boundary.

#![allow(non_local_definitions)] // emitted by abi_stable's #[sabi_trait] expansion

pub mod args;
pub mod context;
pub mod export;
pub mod plugin;
pub mod spec;
pub mod time;
pub mod types;
pub mod worker;

pub use abi_stable;
pub use serde_json;
pub use abi_stable::sabi_trait::TD_Opaque;
pub use abi_stable::external_types::crossbeam_channel::{self as channel, RReceiver, RSender};
/// Errors returned by [`RReceiver`] and [`RSender`] methods.
pub use crossbeam_channel::{RecvError, RecvTimeoutError, SendError, TryRecvError};
/// The channel crate behind [`RReceiver`]/[`RSender`] and [`worker::StopToken::receiver`], for `select!`.
pub use crossbeam_channel;
pub use abi_stable::std_types::{RResult, RStr, RString, RVec};

pub use args::{ArgSpec, PluginArgs};
pub use context::{
    HostLogger, HostLoggerBox, HttpHandler, HttpHandlerBox, HttpRegistry, HttpRegistryBox,
    HttpRequest, HttpResponse, LogLevel, Logger, PluginContext, PluginLoader, PluginLoaderBox,
    HostLogger_TO, HttpHandler_TO, HttpRegistry_TO, PluginLoader_TO,
};
pub use export::{HealthPlugin, WatcherPlugin};
pub use plugin::{
    HealthBox, HealthMonitor, PluginInstance, PluginKind, PluginMetadata, PluginMod, PluginModRef,
    Watcher, WatcherBox, HealthMonitor_TO, Watcher_TO,
};
pub use spec::SpecError;
pub use types::{HealthReport, HostList, RouteEntry, RouteSpec};

/// The version of this crate, recorded in every plugin's metadata.
///
/// Compatibility follows semver as `abi_stable` applies it: for `0.x.y` the minor
/// version must match between host and plugin.
pub const PLUGIN_API_VERSION: &str = env!("CARGO_PKG_VERSION");
