//! The contract between the `vpcrouter` host and its plugins, and the SDK to write them.
//!
//! A plugin is a `cdylib` crate that depends on this crate alone. It is found by file name
//! (`libvpcrouter_<name>.so` for watchers, `libvpcrouter_health_<name>.so` for health
//! monitors, `libvpcrouter_notify_<name>.so` for notifiers), loaded at run time, and checked by [`abi_stable`]: a plugin built against an
//! incompatible version of this crate is refused at load time with both versions named.
//!
//! Writing one is writing its job:
//! * a watcher is a spec source ([`watcher::WatcherPlugin`]): read a spec, offer it to the
//!   [`watcher::SpecSink`]; the SDK sends it when it changed and keeps the last good one;
//! * a health monitor is a probe ([`health::HealthPlugin`] with a [`health::Prober`], or a
//!   per-host [`health::CheckHost`]); the SDK runs the rounds, timeouts, hold-down, reports
//!   and statistics;
//! * a notifier delivers one event ([`notifier::NotifierPlugin`]): run a command, POST it,
//!   publish it; the host queues the events and calls it for one at a time.
//!
//! Then `export_plugin!(watcher: MyType)`, `export_plugin!(health: MyType)` or
//! `export_plugin!(notifier: MyType)`.
//! `use vpcrouter_plugin_api::prelude::*;` brings in what a plugin needs.
//!
//! What crosses the boundary: the root module [`PluginMod`], whose `start` returns the
//! running plugin ([`WatcherBox`], [`HealthBox`] or [`NotifierBox`]); typed values ([`Ipv4`], [`Cidr`],
//! [`RouteSpec`], [`HostList`], [`HealthReport`], [`PluginStatus`]), events as JSON
//! objects ([`NotifyEvent`]); full snapshots on
//! crossbeam channels; and a [`PluginContext`] (the host's logger, HTTP endpoint registry
//! and plugin loader). PLUGINS.md has the rules for evolving it.

#![allow(non_local_definitions)] // emitted by abi_stable's #[sabi_trait] expansion
#![warn(missing_docs)]

pub mod args;
pub mod context;
pub mod export;
pub mod file;
pub mod health;
pub mod load;
pub mod net;
pub mod notifier;
pub mod plugin;
pub mod spec;
pub mod sync;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod time;
pub mod types;
pub mod watcher;
pub mod worker;

pub use abi_stable;
pub use abi_stable::external_types::crossbeam_channel::{self as channel, RReceiver, RSender};
pub use abi_stable::sabi_trait::TD_Opaque;
pub use abi_stable::std_types::{RResult, RStr, RString, RVec};
/// The channel crate behind [`RReceiver`]/[`RSender`] and [`worker::StopToken::receiver`], for `select!`.
pub use crossbeam_channel;
/// Errors returned by [`RReceiver`] and [`RSender`] methods.
pub use crossbeam_channel::{RecvError, RecvTimeoutError, SendError, TryRecvError};
pub use serde_json;

pub use args::{ArgSpec, PluginArgs};
pub use context::{
    HostLogger, HostLoggerBox, HostLogger_TO, HttpHandler, HttpHandlerBox, HttpHandler_TO, HttpRegistry,
    HttpRegistryBox, HttpRegistry_TO, HttpRequest, HttpResponse, LogLevel, Logger,
};
pub use net::{Cidr, Family, Ipv4};
pub use plugin::{
    HealthBox, HealthMonitor, HealthMonitor_TO, Notifier, NotifierBox, Notifier_TO, PluginContext, PluginInstance,
    PluginIo, PluginKind, PluginLoader, PluginLoaderBox, PluginLoader_TO, PluginMetadata, PluginMod, PluginModRef,
    Watcher, WatcherBox, Watcher_TO,
};
pub use spec::SpecError;
pub use types::{
    HealthReport, HealthStats, HostList, NotifierStats, NotifyEvent, PluginStats, PluginStatus, RouteEntry, RouteSpec,
    WatcherStats,
};

/// What a plugin's source needs: `use vpcrouter_plugin_api::prelude::*;`.
pub mod prelude {
    pub use crate::export::PluginDescription;
    pub use crate::health::{Answers, CheckHost, Each, HealthPlugin, HealthRun, Prober, Round, Schedule};
    pub use crate::notifier::{Event, NotifierPlugin, NotifyRun};
    pub use crate::watcher::{SpecSink, WatcherPlugin, WatcherRun};
    pub use crate::worker::StopToken;
    pub use crate::{export_plugin, serde_json, spec};
    pub use crate::{ArgSpec, Cidr, HealthReport, HostList, Ipv4, LogLevel, Logger, PluginArgs, RouteSpec};
}

/// The version of this crate, recorded in every plugin's metadata.
///
/// Compatibility follows semver as `abi_stable` applies it: for `0.x.y` the minor
/// version must match between host and plugin.
pub const PLUGIN_API_VERSION: &str = env!("CARGO_PKG_VERSION");
