//! vpcrouter's status server: vpc-router's state documents, `/status`, `/metrics`, the drain
//! requests and the endpoints plugins register.
//!
//! Layout:
//! * [`config`]: the server's options, and the security and listener they build;
//! * [`listener`]: binding, the server thread and its runtime, the accept loop, and what a
//!   connection goes through (TLS handshake, deadlines, the token check);
//! * [`routes`]: the router and the handlers: the state documents, `/status`, `/metrics`,
//!   `/drain` and the plugins' endpoints;
//! * [`context`]: what the server reads ([`ServerContext`]) and the snapshot taken of it;
//! * [`security`]: who may use the server ([`Security`]) and the exposure check at start;
//! * [`auth`]: the bearer token (`--http-token-file`) and which requests need it;
//! * [`tls`]: HTTPS (`--tls-cert`, `--tls-key`, `--tls-client-ca`), reloaded when the files
//!   change;
//! * [`conns`]: the connection table that keeps hostile clients from crowding others out;
//! * [`protocol`]: request limits and the JSON error answers hyper writes itself.
//!
//! What the server shows is rendered by `vpcrouter-status`; plugin endpoints are dispatched
//! through `vpcrouter-plugin-host`'s registry.
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod conns;
pub mod context;
pub mod listener;
pub mod protocol;
pub mod routes;
pub mod security;
pub mod tls;

#[cfg(test)]
mod testkit;

use std::path::Path;

use vpcrouter_plugin_api::file::FileError;

pub use config::ServerConfig;
pub use context::{InfoFn, PluginSource, ServerContext};
pub use listener::{Listener, Server, ServerError};
pub use security::Security;

/// Why the file given to option `flag` (the token file, a TLS file) cannot be used, in one
/// line that names the flag and the path, never the content.
pub(crate) fn option_file_error(flag: &str, path: &Path, e: FileError) -> String {
    match e {
        FileError::Io { source, .. } => format!("{flag} {}: cannot read it: {source}", path.display()),
        other => format!("{flag}: {other}"),
    }
}
