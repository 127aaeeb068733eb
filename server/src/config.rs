//! The status server's options (`-a`, `-p`, `--http-*`, `--tls-*`) and what they build.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use vpcrouter_plugin_host::Endpoints;

use crate::auth::TokenFile;
use crate::listener::{self, Listener, ServerError};
use crate::security::{self, Security};
use crate::tls::{TlsFiles, TlsStore};

/// The status server's options.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `-a/--address`: an IP literal or `localhost`.
    pub address: String,
    /// `-p/--port`.
    pub port: u16,
    /// `--http-token-file`: the bearer token is this file's content.
    pub token_file: Option<PathBuf>,
    /// `--http-auth-all`: every request needs the token, read-only ones included.
    pub auth_all: bool,
    /// `--http-allow-unauthenticated`: serve state-changing endpoints off loopback without
    /// authentication.
    pub allow_unauthenticated: bool,
    /// `--tls-cert`, `--tls-key`, `--tls-client-ca`: HTTPS.
    pub tls: Option<TlsFiles>,
}

impl ServerConfig {
    /// Reads the token and TLS files: a bad one is one line naming the option and the file.
    pub fn security(&self) -> Result<Security, String> {
        Ok(Security {
            token: self.token_file.as_deref().map(TokenFile::load).transpose()?.map(Arc::new),
            auth_all: self.auth_all,
            tls: self.tls.clone().map(TlsStore::load).transpose()?.map(Arc::new),
        })
    }

    /// Binds the listening socket (before anything else starts, so a taken port fails fast).
    pub fn bind(&self) -> Result<Listener, ServerError> {
        tracing::info!(address = %self.address, port = self.port, "HTTP server: Starting to listen for requests");
        listener::bind(&self.address, self.port)
    }

    /// Refuses to serve the plugins' state-changing endpoints unauthenticated off loopback
    /// (one line saying what to do); logs the warning when `--http-allow-unauthenticated`
    /// allows it.
    pub fn check_exposure(&self, local: SocketAddr, endpoints: &Endpoints, security: &Security) -> Result<(), String> {
        if let Some(warning) = security::check_exposure(local, endpoints, security, self.allow_unauthenticated)? {
            tracing::warn!("{warning}");
        }
        Ok(())
    }

    /// `Some(why)` when drain requests must be refused: an unauthenticated server off
    /// loopback, without `--http-allow-unauthenticated`.
    pub fn drain_refusal(&self, local: SocketAddr, security: &Security) -> Option<String> {
        let refused = !local.ip().to_canonical().is_loopback()
            && !security.authenticates_clients()
            && !self.allow_unauthenticated;
        let why = refused.then(|| {
            format!(
                "drain requests on {local} need authentication: start vpcrouter with --http-token-file FILE, or listen on a loopback address, or pass --http-allow-unauthenticated"
            )
        })?;
        tracing::warn!("{why}; POST/DELETE /drain are refused until then");
        Some(why)
    }
}
