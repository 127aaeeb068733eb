//! Who may use the server ([`Security`]: the bearer token, `--http-auth-all`, TLS), and the
//! start-time check that refuses unauthenticated state-changing endpoints off loopback
//! ([`check_exposure`]).

use std::net::SocketAddr;
use std::sync::Arc;

use vpcrouter_plugin_host::Endpoints;

use crate::auth::{self, TokenFile};
use crate::tls::TlsStore;

/// Who may use the server: the bearer token, `--http-auth-all`, TLS.
#[derive(Clone, Default)]
pub struct Security {
    /// `--http-token-file`.
    pub token: Option<Arc<TokenFile>>,
    /// `--http-auth-all`: read-only requests need the token too.
    pub auth_all: bool,
    /// `--tls-*`.
    pub tls: Option<Arc<TlsStore>>,
}

impl Security {
    /// True when a client must prove who it is before it can change state: a token, or
    /// client certificates.
    pub fn authenticates_clients(&self) -> bool {
        self.token.is_some() || self.tls.as_ref().is_some_and(|t| t.requires_client_certificates())
    }

    /// Re-reads the token and TLS files (SIGHUP); what fails to load stays as it was.
    pub fn reload(&self) {
        if let Some(t) = &self.token {
            match t.reload() {
                Ok(()) => tracing::info!("HTTP server: token re-read from {}", t.path().display()),
                Err(e) => tracing::error!("HTTP server: {e}; the previous token stays in force"),
            }
        }
        if let Some(t) = &self.tls {
            match t.reload() {
                Ok(()) => tracing::info!("HTTP server: TLS certificate and key re-read"),
                Err(e) => tracing::error!("HTTP server: {e}; the previous certificate and key stay in force"),
            }
        }
    }
}

/// Refuses a server that would take unauthenticated state-changing requests off loopback:
/// `Err` is the one line to print. With `allow_unauthenticated` (`--http-allow-unauthenticated`)
/// it is allowed, and `Ok(Some)` is the warning to log.
pub fn check_exposure(
    addr: SocketAddr,
    endpoints: &Endpoints,
    security: &Security,
    allow_unauthenticated: bool,
) -> Result<Option<String>, String> {
    if addr.ip().to_canonical().is_loopback() || security.authenticates_clients() {
        return Ok(None);
    }
    let writes: Vec<String> = endpoints
        .list()
        .into_iter()
        .filter(|(method, _, _)| auth::is_state_changing(method))
        .map(|(method, path, _)| format!("{method} {path}"))
        .collect();
    if writes.is_empty() {
        return Ok(None);
    }
    let what = writes.join(", ");
    if allow_unauthenticated {
        return Ok(Some(format!(
            "--http-allow-unauthenticated: serving {what} on {addr} without authentication; anyone who can reach it can change the routes"
        )));
    }
    Err(format!(
        "refusing to serve {what} on {addr} without authentication: add --http-token-file FILE, or listen on a loopback address (-a 127.0.0.1), or pass --http-allow-unauthenticated to accept this risk"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::echo_endpoints;

    #[test]
    fn state_changing_endpoints_off_loopback_need_authentication_or_the_opt_out() {
        let endpoints = echo_endpoints();
        let security = Security { token: Some(Arc::new(TokenFile::from_token("t0k"))), ..Security::default() };
        // Off loopback, a write endpoint needs authentication, or the explicit opt-out.
        let any: SocketAddr = "0.0.0.0:33289".parse().unwrap();
        let open = Security::default();
        let err = check_exposure(any, &endpoints, &open, false).unwrap_err();
        assert_eq!(err, "refusing to serve POST /echo on 0.0.0.0:33289 without authentication: add --http-token-file FILE, or listen on a loopback address (-a 127.0.0.1), or pass --http-allow-unauthenticated to accept this risk");
        assert!(check_exposure(any, &endpoints, &open, true).unwrap().unwrap().contains("POST /echo on 0.0.0.0:33289"));
        assert_eq!(check_exposure(any, &endpoints, &security, false), Ok(None));
        for local in ["127.0.0.1:1", "127.1.2.3:1", "[::1]:1", "[::ffff:127.0.0.1]:1"] {
            assert_eq!(check_exposure(local.parse().unwrap(), &endpoints, &open, false), Ok(None), "{local}");
        }
        assert_eq!(check_exposure(any, &Endpoints::default(), &open, false), Ok(None), "nothing to change");
    }
}
