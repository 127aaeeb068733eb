//! vpcrouter's plugin manager: the one owner of the plugins' lifecycle.
//!
//! Layout:
//! * `find`: the search path and the plugins' file names; the plugins installed;
//! * `check`: what a plugin file must be before it is opened (a regular file, ownership and
//!   permissions, a complete ELF library for this machine);
//! * `error`: why a plugin cannot be used ([`LoadError`], [`PluginError`]);
//! * [`load`]: loading plugin libraries (versions checked), the health plugins a health
//!   plugin requires, the plugins' checks of their option values, `--list-plugins`; the
//!   public face of `find`, `check` and `error`;
//! * [`manager`]: starting the plugins of a run with their contexts, the health plugins a
//!   combining plugin starts, and stopping them, each call within a deadline;
//! * [`endpoints`]: the registry of the HTTP endpoints plugins add to the status server;
//! * [`log`]: the bridge that carries plugin log lines into the host's log.
//!
//! The `unsafe` of loading libraries is in `vpcrouter-plugin-api`'s loader, not here.
#![forbid(unsafe_code)]

mod check;
pub mod endpoints;
mod error;
mod find;
pub mod load;
pub mod log;
pub mod manager;

pub use endpoints::Endpoints;
pub use load::{LoadError, Loader, PluginError, PluginLibrary, SearchPath};
pub use manager::{LoadedPlugin, PluginSet, Queues, Running, STOP_TIMEOUT};
