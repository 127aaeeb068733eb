//! The one describer of etcd client errors: one clear line for the TLS and authentication
//! failures (what went wrong and which option to check), and for anything else the gRPC
//! message and its innermost cause, not the whole chain of wrappers.
//!
//! What etcd 3.4 and tonic's rustls report (seen by running them):
//! * wrong CA: `invalid peer certificate: UnknownIssuer` (a `rustls::Error` in the chain);
//! * name mismatch: `NotValidForNameContext { expected, presented }`;
//! * an expired server certificate: `ExpiredContext { not_after, .. }`;
//! * a client certificate etcd refuses (none, expired, another CA's): with TLS 1.3 the
//!   client's handshake completes before etcd checks it, so the first request fails with,
//!   by timing, `received fatal alert: BadCertificate` (a string inside an `io::Error`),
//!   `operation was canceled: connection closed` or `stream closed because of a broken pipe`;
//!   only on a fresh connection ([`Call::fresh`]) are the last two taken for a refusal;
//! * wrong user or password (also an unknown user): `InvalidArgument`, `etcdserver:
//!   authentication failed, invalid user ID or password`;
//! * a user while auth is off: `FailedPrecondition`, `etcdserver: authentication is not enabled`;
//! * no permission: `PermissionDenied`, `etcdserver: permission denied` (no key named: the
//!   caller says which, [`Access`]).

use std::error::Error as StdError;
use std::time::SystemTime;

use rustls::pki_types::ServerName;
use rustls::CertificateError;

use crate::options::{
    first_certificate, not_after, EtcdConn, EtcdSecurity, Password, CACERT, CERT, KEY, PASSWORD_ENV, PASSWORD_FILE,
    USER,
};

/// What a call was doing, for a permission error: the operation, the key, and the
/// permission a role of the user needs, on a key or a prefix.
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

/// The circumstances of a failed call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Call<'a> {
    /// One of the first calls on a new connection: a connection closed now was closed by
    /// the TLS handshake's end (etcd refusing the client certificate), not by an outage.
    pub fresh: bool,
    /// The key and permission, for a permission error.
    pub access: Option<Access<'a>>,
}

/// [`EtcdConn::describe`] for plain http without a user, on a fresh connection, no key.
pub fn describe(e: &etcd_client::Error) -> String {
    EtcdSecurity::default().describe_with(false, e, Call { fresh: true, access: None })
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
        if all.len() > 32 {
            break;
        }
    }
    all
}

fn date(t: SystemTime) -> String {
    // Certificates count whole seconds.
    vpcrouter_plugin_api::time::rfc3339(t).replacen(".000Z", "Z", 1)
}

fn unix(t: rustls::pki_types::UnixTime) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t.as_secs())
}

/// `localhost` for `DnsName("localhost")`, `127.0.0.1` for an IP.
fn server_name(n: &ServerName) -> String {
    match n {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// rustls lists the names a certificate holds as `DnsName("x")` / `IpAddress(1.2.3.4)`.
fn presented_name(p: &str) -> String {
    let inner = p.strip_prefix("DnsName(").or_else(|| p.strip_prefix("IpAddress(")).and_then(|r| r.strip_suffix(')'));
    inner.unwrap_or(p).trim_matches('"').to_string()
}

impl EtcdConn {
    /// One line saying what went wrong, for the log and `/status`: the option to check
    /// (never the password), and for a permission error the key, the operation and the
    /// permission to grant.
    pub fn describe(&self, e: &etcd_client::Error, call: Call) -> String {
        self.security.describe_with(self.https(), e, call)
    }

    /// The reason etcd gave for cancelling a watch, a permission error described as such.
    pub fn describe_watch_cancel(&self, reason: &str, call: Call) -> String {
        if reason.contains("permission denied") {
            let e = etcd_client::Error::GRpcStatus(tonic::Status::permission_denied(reason));
            return self.describe(&e, call);
        }
        reason.to_string()
    }
}

impl EtcdSecurity {
    pub(crate) fn describe_with(&self, https: bool, e: &etcd_client::Error, call: Call) -> String {
        let (code, message, errors): (Option<tonic::Code>, String, Vec<&(dyn StdError + 'static)>) = match e {
            etcd_client::Error::GRpcStatus(s) => {
                let below = StdError::source(s).map(chain).unwrap_or_default();
                (Some(s.code()), s.message().to_string(), below)
            }
            etcd_client::Error::TransportError(t) => (None, t.to_string(), chain(t)),
            etcd_client::Error::IoError(io) => (None, io.to_string(), chain(io)),
            other => (None, other.to_string(), Vec::new()),
        };
        if let Some(tls) = errors.iter().find_map(|c| c.downcast_ref::<rustls::Error>()) {
            return self.describe_tls(tls);
        }
        let texts: Vec<String> = errors.iter().map(|c| c.to_string()).collect();
        if let Some(alert) = texts.iter().find_map(|t| t.strip_prefix("received fatal alert: ")) {
            return self.describe_refusal(Some(alert));
        }
        let closed = code == Some(tonic::Code::Cancelled) && texts.iter().any(|t| t.contains("connection closed"))
            || texts.iter().any(|t| t.contains("broken pipe") || t.contains("connection reset"));
        if https && call.fresh && closed {
            return self.describe_refusal(None);
        }
        if let Some(line) = self.describe_auth(code, &message, call.access) {
            return line;
        }
        if texts.iter().any(|t| t.contains("native certs")) {
            return format!(
                "no --{CACERT} given and the system's trust store holds no CA certificate: pass --{CACERT} FILE"
            );
        }
        let innermost = texts.last().cloned();
        match innermost {
            Some(c) if message.is_empty() => c,
            Some(c) if !message.contains(&c) => format!("{message}: {c}"),
            _ if message.is_empty() => e.to_string(),
            _ => message,
        }
    }

    fn ca_hint(&self) -> String {
        match &self.cacert {
            Some(p) => format!("check --{CACERT} {}: it must hold the CA that signed etcd's --cert-file", p.display()),
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
                    name or IP: connect to a name or IP the certificate holds, or reissue etcd's --cert-file"
                    .to_string(),
                CertificateError::NotValidForNameContext { expected, presented } => {
                    let names: Vec<String> = presented.iter().map(|p| presented_name(p)).collect();
                    let expected = server_name(expected);
                    format!(
                        "etcd's server certificate is not valid for '{expected}' (it holds {}): connect to a name or \
                         IP the certificate holds, or reissue etcd's --cert-file with '{expected}' in it",
                        if names.is_empty() { "no host name or IP".to_string() } else { names.join(", ") }
                    )
                }
                CertificateError::Expired => "etcd's server certificate has expired: renew etcd's --cert-file".into(),
                CertificateError::ExpiredContext { not_after, .. } => {
                    format!("etcd's server certificate expired at {}: renew etcd's --cert-file", date(unix(*not_after)))
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "etcd's server certificate is not valid yet: check the clocks, or etcd's --cert-file".into()
                }
                other => format!("etcd's server certificate was refused ({other:?}); {}", self.ca_hint()),
            },
            rustls::Error::AlertReceived(alert) => self.describe_refusal(Some(&format!("{alert:?}"))),
            rustls::Error::InconsistentKeys(_) => {
                let (c, k) = match &self.identity {
                    Some((c, k)) => (c.display().to_string(), k.display().to_string()),
                    None => ("(none)".into(), "(none)".into()),
                };
                format!("--{KEY} {k} is not the private key of --{CERT} {c}: pass the matching pair")
            }
            other => format!("the TLS handshake with etcd failed: {other}"),
        }
    }

    /// etcd ended the connection right after the TLS handshake (with `alert`, if seen): it
    /// refused our client certificate, or wanted one.
    fn describe_refusal(&self, alert: Option<&str>) -> String {
        let how = match alert {
            Some(a) => format!("etcd ended the TLS handshake ({a})"),
            None => "etcd closed the connection right after the TLS handshake".to_string(),
        };
        let Some((cert, _)) = &self.identity else {
            return format!("{how}: it demands a client certificate (--client-cert-auth): pass --{CERT} and --{KEY}");
        };
        let path = cert.display();
        let expired = first_certificate(cert).and_then(|c| not_after(&c)).filter(|t| *t < SystemTime::now());
        match expired {
            Some(at) => format!("{how}: the client certificate --{CERT} {path} expired at {}: renew it", date(at)),
            None if alert == Some("CertificateExpired") => {
                format!("{how}: etcd says the client certificate --{CERT} {path} has expired: renew it")
            }
            None => format!(
                "{how}: it refuses the client certificate --{CERT} {path}, which must be signed by a CA in etcd's \
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

    fn describe_auth(&self, code: Option<tonic::Code>, message: &str, access: Option<Access>) -> Option<String> {
        let m = message.strip_prefix("etcdserver: ").unwrap_or(message);
        let user = self.user.as_deref().unwrap_or("");
        if m.starts_with("authentication failed") {
            return Some(format!(
                "etcd refused user '{user}': wrong user name or password (check --{USER} and the password from {})",
                self.password_source()
            ));
        }
        if m.starts_with("user name is empty") {
            return Some(format!(
                "etcd has authentication enabled: pass --{USER} and its password (--{PASSWORD_FILE} or {PASSWORD_ENV})"
            ));
        }
        if m.starts_with("authentication is not enabled") {
            return Some(format!(
                "--{USER} '{user}' is given but etcd has authentication disabled: enable it (etcdctl auth enable) or \
                 drop --{USER}"
            ));
        }
        if m.starts_with("invalid auth token") {
            return Some("etcd refused the authentication token (it expired, or etcd restarted)".into());
        }
        if m.starts_with("permission denied") || code == Some(tonic::Code::PermissionDenied) {
            let who = match &self.user {
                Some(u) => format!("user '{u}'"),
                None => format!("this client (no --{USER}; etcd takes a client certificate's common name as the user)"),
            };
            return Some(match access {
                Some(a) => {
                    let (on, flag) = if a.grant_on.ends_with('/') { ("prefix", "--prefix=true ") } else { ("key", "") };
                    format!(
                        "{who} may not {} {}: grant the role {} on {on} {} to a role of the user (etcdctl role \
                         grant-permission ROLE {flag}{} {})",
                        a.action, a.key, a.permission, a.grant_on, a.permission, a.grant_on
                    )
                }
                None => format!("{who} lacks an etcd permission ({m})"),
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn status(code: tonic::Code, message: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(code, message))
    }

    /// A failed request whose cause is `inner`, inside an `io::Error` as hyper wraps it.
    fn wrapped(kind: io::ErrorKind, inner: impl Into<Box<dyn StdError + Send + Sync>>) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::from_error(Box::new(io::Error::new(kind, inner))))
    }

    fn sec(pairs: &[(&str, &str)]) -> EtcdSecurity {
        EtcdSecurity::from_values_and_env(
            |n| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string()),
            pairs.iter().any(|(k, _)| *k == USER).then(|| "pw-never-shown".to_string()),
        )
        .unwrap()
    }

    const FRESH: Call = Call { fresh: true, access: None };

    #[test]
    fn tls_failures_are_one_line_naming_the_option() {
        let ca = sec(&[("etcd-cacert", "/etc/ca.pem")]);
        let e = wrapped(io::ErrorKind::InvalidData, rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer));
        assert_eq!(
            ca.describe_with(true, &e, FRESH),
            "etcd's server certificate is not signed by a trusted CA; check --etcd-cacert /etc/ca.pem: it must hold \
             the CA that signed etcd's --cert-file"
        );
        assert!(EtcdSecurity::default().describe_with(true, &e, FRESH).contains("system's trust store was used"));
        let e = wrapped(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("localhost").unwrap(),
                presented: vec!["IpAddress(127.0.0.1)".into(), "DnsName(\"etcd-1\")".into()],
            }),
        );
        assert_eq!(
            ca.describe_with(true, &e, FRESH),
            "etcd's server certificate is not valid for 'localhost' (it holds 127.0.0.1, etcd-1): connect to a name \
             or IP the certificate holds, or reissue etcd's --cert-file with 'localhost' in it"
        );
        let e = wrapped(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
                time: rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(200_000)),
                not_after: rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(86_400)),
            }),
        );
        assert_eq!(
            ca.describe_with(true, &e, FRESH),
            "etcd's server certificate expired at 1970-01-02T00:00:00Z: renew etcd's --cert-file"
        );
    }

    #[test]
    fn a_refused_client_certificate_in_each_form_etcd_and_rustls_report_it() {
        let alert = wrapped(io::ErrorKind::InvalidData, "received fatal alert: BadCertificate");
        // hyper's "connection closed", as tonic reports it: Cancelled, the cause below.
        let mut cancelled = tonic::Status::new(tonic::Code::Cancelled, "operation was canceled");
        cancelled.set_source(std::sync::Arc::new(io::Error::other("connection closed")));
        let closed = etcd_client::Error::GRpcStatus(cancelled);
        let pipe = wrapped(io::ErrorKind::BrokenPipe, "stream closed because of a broken pipe");
        let none = sec(&[("etcd-cacert", "/ca")]);
        assert_eq!(
            none.describe_with(true, &alert, FRESH),
            "etcd ended the TLS handshake (BadCertificate): it demands a client certificate (--client-cert-auth): \
             pass --etcd-cert and --etcd-key"
        );
        assert_eq!(
            none.describe_with(true, &pipe, FRESH),
            "etcd closed the connection right after the TLS handshake: it demands a client certificate \
             (--client-cert-auth): pass --etcd-cert and --etcd-key"
        );
        // Not on an established connection, nor over http: an outage, as it says.
        assert_eq!(none.describe_with(true, &pipe, Call::default()), "stream closed because of a broken pipe");
        assert_eq!(none.describe_with(false, &pipe, FRESH), "stream closed because of a broken pipe");
        assert_eq!(none.describe_with(true, &closed, FRESH), none.describe_with(true, &pipe, FRESH));
        assert_eq!(none.describe_with(true, &closed, Call::default()), "operation was canceled: connection closed");
        let other = sec(&[("etcd-cacert", "/ca"), ("etcd-cert", "/nonexistent/c.pem"), ("etcd-key", "/k.pem")]);
        assert_eq!(
            other.describe_with(true, &alert, FRESH),
            "etcd ended the TLS handshake (BadCertificate): it refuses the client certificate --etcd-cert \
             /nonexistent/c.pem, which must be signed by a CA in etcd's --trusted-ca-file and allow client \
             authentication"
        );
    }

    #[test]
    fn authentication_and_permission_errors_name_the_user_and_the_grant_never_the_password() {
        let s = sec(&[("etcd-user", "vr")]);
        let failed =
            status(tonic::Code::InvalidArgument, "etcdserver: authentication failed, invalid user ID or password");
        let line = s.describe_with(false, &failed, FRESH);
        assert_eq!(
            line,
            "etcd refused user 'vr': wrong user name or password (check --etcd-user and the password from \
             VPCROUTER_ETCD_PASSWORD)"
        );
        let denied = status(tonic::Code::PermissionDenied, "etcdserver: permission denied");
        let access = Access {
            action: "write",
            key: "/vpcrouter/c1/leader",
            permission: "readwrite",
            grant_on: "/vpcrouter/c1/",
        };
        assert_eq!(
            s.describe_with(false, &denied, Call { fresh: false, access: Some(access) }),
            "user 'vr' may not write /vpcrouter/c1/leader: grant the role readwrite on prefix /vpcrouter/c1/ to a \
             role of the user (etcdctl role grant-permission ROLE --prefix=true readwrite /vpcrouter/c1/)"
        );
        let key = Access { action: "read", key: "/k", permission: "read", grant_on: "/k" };
        assert_eq!(
            s.describe_with(false, &denied, Call { fresh: false, access: Some(key) }),
            "user 'vr' may not read /k: grant the role read on key /k to a role of the user (etcdctl role \
             grant-permission ROLE read /k)"
        );
        let off = status(tonic::Code::FailedPrecondition, "etcdserver: authentication is not enabled");
        assert!(s
            .describe_with(false, &off, FRESH)
            .starts_with("--etcd-user 'vr' is given but etcd has authentication disabled"));
        for e in [failed, denied, off] {
            assert!(!s.describe_with(true, &e, FRESH).contains("pw-never-shown"));
        }
    }

    #[test]
    fn other_errors_keep_the_message_and_the_innermost_cause() {
        let refused = wrapped(io::ErrorKind::ConnectionRefused, "tcp connect error: Connection refused (os error 111)");
        assert_eq!(describe(&refused), "tcp connect error: Connection refused (os error 111)");
        assert_eq!(describe(&status(tonic::Code::Unavailable, "etcdserver: no leader")), "etcdserver: no leader");
        assert_eq!(describe(&etcd_client::Error::WatchError("x".into())), "watch error: x");
    }
}
