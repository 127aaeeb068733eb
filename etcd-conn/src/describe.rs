//! The one describer of etcd client errors: one clear line for the TLS and authentication
//! failures (what went wrong and which option to check), and for anything else the gRPC
//! message and its innermost cause, not the whole chain of wrappers.

use std::error::Error as StdError;
use std::time::SystemTime;

use rustls::{AlertDescription, CertificateError};

use crate::options::{first_certificate, EtcdSecurity, Password, CACERT, CERT, KEY, PASSWORD_ENV, PASSWORD_FILE};

/// What a call was doing, for a permission error: which key, and the permission a role of
/// the user needs (granted on `grant_on`, a key or a prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access<'a> {
    /// `read`, `write` or `watch`.
    pub action: &'a str,
    /// The key (or prefix) the call touched.
    pub key: &'a str,
    /// The etcd permission needed: `read`, `write` or `readwrite`.
    pub permission: &'a str,
    /// What to grant it on: a prefix (ending in `/`) or a single key.
    pub grant_on: &'a str,
}

/// [`EtcdSecurity::describe`] without options (no TLS, no user) and without a key.
pub fn describe(e: &etcd_client::Error) -> String {
    EtcdSecurity::default().describe(e, None)
}

/// Every error in the chain below `e`, the errors inside `io::Error`s included (their
/// `source()` skips the error they wrap).
fn chain<'a>(e: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut all = Vec::new();
    let mut next = Some(e);
    while let Some(c) = next {
        all.push(c);
        next = match c.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => c.source(),
        };
    }
    all
}

/// The TLS error behind a failed connection, if any.
fn tls_error<'a>(errors: &[&'a (dyn StdError + 'static)]) -> Option<&'a rustls::Error> {
    errors.iter().find_map(|c| c.downcast_ref::<rustls::Error>())
}

fn date(t: SystemTime) -> String {
    vpcrouter_plugin_api::time::rfc3339(t)
}

fn unix(t: rustls_pki_types::UnixTime) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t.as_secs())
}

impl EtcdSecurity {
    /// One line saying what went wrong, for the log and `/status`: the option to check
    /// (never the password), and for a permission error the key, the operation and the
    /// permission to grant.
    pub fn describe(&self, e: &etcd_client::Error, access: Option<&Access>) -> String {
        let (code, message, errors): (Option<tonic::Code>, String, Vec<&(dyn StdError + 'static)>) = match e {
            etcd_client::Error::GRpcStatus(s) => {
                let below = StdError::source(s).map(chain).unwrap_or_default();
                (Some(s.code()), s.message().to_string(), below)
            }
            etcd_client::Error::TransportError(t) => (None, t.to_string(), chain(t)),
            etcd_client::Error::IoError(io) => (None, io.to_string(), chain(io)),
            other => (None, other.to_string(), Vec::new()),
        };
        if let Some(tls) = tls_error(&errors) {
            return self.describe_tls(tls);
        }
        if let Some(line) = self.describe_auth(code, &message, access) {
            return line;
        }
        if errors.iter().any(|c| c.to_string().contains("native")) && self.cacert.is_none() {
            return format!(
                "no CA certificate given (--{CACERT}) and the system's trust store has none: pass --{CACERT} FILE"
            );
        }
        let innermost = errors.last().map(|c| c.to_string());
        match innermost {
            Some(c) if message.is_empty() => c,
            Some(c) if !message.contains(&c) => format!("{message}: {c}"),
            _ if message.is_empty() => format!("{e}"),
            _ => message,
        }
    }

    fn ca_hint(&self) -> String {
        match &self.cacert {
            Some(p) => format!("check --{CACERT} ({}): it must hold the CA that signed etcd's --cert-file", p.display()),
            None => format!(
                "no --{CACERT} was given, so the system's trust store was used: pass --{CACERT} with the CA that \
                 signed etcd's --cert-file"
            ),
        }
    }

    fn describe_tls(&self, tls: &rustls::Error) -> String {
        match tls {
            rustls::Error::InvalidCertificate(cert) => match cert {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    format!("etcd's server certificate is not signed by a trusted CA; {}", self.ca_hint())
                }
                CertificateError::NotValidForName => "etcd's server certificate is not valid for the endpoint's host \
                     name or IP; use a name the certificate holds in --cluster-etcd/--etcd_endpoints, or reissue it"
                    .to_string(),
                CertificateError::NotValidForNameContext { expected, presented } => format!(
                    "etcd's server certificate is not valid for {expected:?} (it names {}); use one of those in \
                     --cluster-etcd/--etcd_endpoints, or reissue etcd's certificate with {expected:?} in it",
                    if presented.is_empty() { "no host names or IPs".to_string() } else { presented.join(", ") }
                ),
                CertificateError::Expired => {
                    "etcd's server certificate has expired; renew etcd's --cert-file".to_string()
                }
                CertificateError::ExpiredContext { not_after, .. } => format!(
                    "etcd's server certificate expired at {}; renew etcd's --cert-file",
                    date(unix(*not_after))
                ),
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "etcd's server certificate is not valid yet; check the clocks, or etcd's --cert-file".to_string()
                }
                other => format!("etcd's server certificate was refused ({other:?}); {}", self.ca_hint()),
            },
            rustls::Error::AlertReceived(alert) => self.describe_alert(*alert),
            rustls::Error::InconsistentKeys(_) => {
                let (c, k) = self.identity_paths();
                format!("--{KEY} {k} is not the private key of --{CERT} {c}; pass the matching pair")
            }
            other => format!("TLS handshake with etcd failed: {other}"),
        }
    }

    fn identity_paths(&self) -> (String, String) {
        match &self.identity {
            Some((c, k)) => (c.display().to_string(), k.display().to_string()),
            None => ("(none)".into(), "(none)".into()),
        }
    }

    /// etcd ended the handshake: about our client certificate.
    fn describe_alert(&self, alert: AlertDescription) -> String {
        let Some((cert, _)) = &self.identity else {
            return match alert {
                AlertDescription::CertificateRequired
                | AlertDescription::BadCertificate
                | AlertDescription::HandshakeFailure => format!(
                    "etcd demands a client certificate (it runs with --client-cert-auth): pass --{CERT} and --{KEY}"
                ),
                other => format!("etcd ended the TLS handshake ({other:?})"),
            };
        };
        let path = cert.display();
        let expired = first_certificate(cert).and_then(|c| crate::der::not_after(&c)).filter(|t| *t < SystemTime::now());
        match (alert, expired) {
            (_, Some(at)) => {
                format!("etcd refused the client certificate --{CERT} {path}: it expired at {}; renew it", date(at))
            }
            (AlertDescription::CertificateExpired, None) => {
                format!("etcd refused the client certificate --{CERT} {path}: etcd says it has expired; renew it")
            }
            (AlertDescription::CertificateRequired, None) => format!(
                "etcd demands a client certificate and got none it accepts: check --{CERT} {path} and --{KEY}"
            ),
            (other, None) => format!(
                "etcd refused the client certificate --{CERT} {path} ({other:?}): it must be signed by a CA in etcd's \
                 --trusted-ca-file and allow client authentication"
            ),
        }
    }

    fn password_source(&self) -> String {
        match &self.password {
            Some(Password::File(p)) => format!("--{PASSWORD_FILE} {}", p.display()),
            Some(Password::Env(_)) => PASSWORD_ENV.to_string(),
            None => "none given".to_string(),
        }
    }

    fn describe_auth(&self, code: Option<tonic::Code>, message: &str, access: Option<&Access>) -> Option<String> {
        let m = message.strip_prefix("etcdserver: ").unwrap_or(message);
        let user = self.user.as_deref().unwrap_or("");
        if m.starts_with("authentication failed") {
            return Some(format!(
                "etcd refused user '{user}': wrong user name or password (check --etcd-user and the password: {})",
                self.password_source()
            ));
        }
        if m.starts_with("user name is empty") || m.starts_with("user name not found") && self.user.is_none() {
            return Some(format!(
                "etcd has authentication enabled: pass --etcd-user and its password (--{PASSWORD_FILE} or {PASSWORD_ENV})"
            ));
        }
        if m.starts_with("authentication is not enabled") {
            return Some(format!(
                "--etcd-user '{user}' is given but etcd has authentication disabled; enable it (etcdctl auth enable) \
                 or drop --etcd-user"
            ));
        }
        if m.starts_with("invalid auth token") {
            return Some("etcd refused the authentication token (expired, or etcd restarted); will log in again".into());
        }
        if m.starts_with("permission denied") || code == Some(tonic::Code::PermissionDenied) {
            let who = if user.is_empty() { "this client (no --etcd-user)".to_string() } else { format!("user '{user}'") };
            return Some(match access {
                Some(a) => {
                    let scope = if a.grant_on.ends_with('/') { "--prefix=true " } else { "" };
                    let on = if a.grant_on.ends_with('/') { "prefix" } else { "key" };
                    format!(
                        "{who} may not {} {}: grant the user a role with {} on {on} {} (etcdctl role \
                         grant-permission ROLE {scope}{} {})",
                        a.action, a.key, a.permission, a.grant_on, a.permission, a.grant_on
                    )
                }
                None => format!("{who} lacks an etcd permission: {message}"),
            });
        }
        None
    }
}
