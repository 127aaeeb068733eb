//! The `--etcd-*` option set: one table for the host's clap arguments and the plugin's
//! `ArgSpec`s, the checked values ([`EtcdSecurity`]), and the etcd client's connect options.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use vpcrouter_plugin_api::ArgSpec;

use crate::endpoint::{parse_endpoints, Endpoint, EndpointError, Scheme};

/// The environment variable that may hold the etcd user's password.
pub const PASSWORD_ENV: &str = "VPCROUTER_ETCD_PASSWORD";
/// The help heading of the shared options.
pub const HEADING: &str = "etcd connection (cluster mode and the etcd watcher)";

/// `--etcd-cacert`.
pub const CACERT: &str = "etcd-cacert";
/// `--etcd-cert`.
pub const CERT: &str = "etcd-cert";
/// `--etcd-key`.
pub const KEY: &str = "etcd-key";
/// `--etcd-user`.
pub const USER: &str = "etcd-user";
/// `--etcd-password-file`.
pub const PASSWORD_FILE: &str = "etcd-password-file";

/// One option of the shared set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedOption {
    /// Long name without dashes (also the clap id in the host).
    pub long: &'static str,
    /// Placeholder shown in help.
    pub value_name: &'static str,
    /// One-line help.
    pub help: &'static str,
}

/// The shared option set: the host's clap arguments and the plugin's `ArgSpec`s are both
/// built from this table.
pub const OPTIONS: [SharedOption; 5] = [
    SharedOption {
        long: CACERT,
        value_name: "FILE",
        help: "CA certificate(s) (PEM) that etcd's server certificate must chain to; without it https:// \
               endpoints are checked against the system's trust store",
    },
    SharedOption {
        long: CERT,
        value_name: "FILE",
        help: "client certificate (PEM) for an etcd that runs with --client-cert-auth; needs --etcd-key",
    },
    SharedOption {
        long: KEY,
        value_name: "FILE",
        help: "private key (PEM) of --etcd-cert (not to be confused with --etcd_key, the etcd watcher's \
               key that holds the route spec)",
    },
    SharedOption {
        long: USER,
        value_name: "NAME",
        help: "etcd user (etcd authentication); its password comes from --etcd-password-file or the \
               environment variable VPCROUTER_ETCD_PASSWORD, never from the command line",
    },
    SharedOption {
        long: PASSWORD_FILE,
        value_name: "FILE",
        help: "file holding the password of --etcd-user (keep it readable by vpcrouter only); used \
               instead of VPCROUTER_ETCD_PASSWORD when both are set",
    },
];

/// Whether `long` is one of the shared options.
pub fn is_shared(long: &str) -> bool {
    OPTIONS.iter().any(|o| o.long == long)
}

/// The shared options as `ArgSpec`s, for a plugin to declare.
pub fn arg_specs() -> Vec<ArgSpec> {
    OPTIONS.iter().map(|o| ArgSpec::value(o.long, o.value_name, o.help)).collect()
}

/// A value that is never printed: `Debug` and `Display` show `(redacted)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the etcd client only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(redacted)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(redacted)")
    }
}

/// Where the password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Password {
    /// `--etcd-password-file`, read when connecting.
    File(PathBuf),
    /// `VPCROUTER_ETCD_PASSWORD`, read at start.
    Env(Secret),
}

/// Why the `--etcd-*` options cannot be used: one line naming the option (and the file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdConfigError {
    /// An option given with an empty value.
    #[error("--{0} is empty; pass a value or leave the option out")]
    Empty(&'static str),
    /// Only one of `--etcd-cert` and `--etcd-key`.
    #[error("--{given} is given without --{missing}; pass both: the client certificate and its private key")]
    Pair {
        /// The one given.
        given: &'static str,
        /// The one missing.
        missing: &'static str,
    },
    /// `--etcd-user` without a password.
    #[error(
        "--etcd-user '{0}' is given without a password; put the password in a file named by \
         --etcd-password-file, or in the environment variable VPCROUTER_ETCD_PASSWORD"
    )]
    NoPassword(String),
    /// A password without `--etcd-user`.
    #[error("a password is given ({0}) but no --etcd-user; pass --etcd-user NAME too, or drop the password")]
    NoUser(String),
    /// An empty password.
    #[error("the etcd password is empty ({0}); put the password of --etcd-user there")]
    EmptyPassword(String),
    /// A file that cannot be read.
    #[error("--{flag} {path}: cannot read it: {reason}")]
    Unreadable {
        /// The option.
        flag: &'static str,
        /// Its file.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// A file that is no regular file (a FIFO, a device, a directory) or is too large.
    #[error("--{flag}: {reason}")]
    NotUsable {
        /// The option.
        flag: &'static str,
        /// What is wrong with the file, naming it.
        reason: String,
    },
    /// A file without the PEM object expected.
    #[error("--{flag} {path}: {what}")]
    Pem {
        /// The option.
        flag: &'static str,
        /// Its file.
        path: String,
        /// What is wrong with it.
        what: String,
    },
    /// TLS files with http:// endpoints.
    #[error(
        "--{flag} is given but etcd endpoint '{endpoint}' is http://; use https:// endpoints (or bare \
         host:port ones) with TLS, or drop the TLS options"
    )]
    TlsOverHttp {
        /// The first TLS option given.
        flag: &'static str,
        /// The first http endpoint.
        endpoint: String,
    },
    /// The endpoint list.
    #[error(transparent)]
    Endpoints(#[from] EndpointError),
}

/// The checked `--etcd-*` options. Files are only named here: they are read when connecting
/// ([`EtcdSecurity::connect_options`]), so a rotated certificate is used at the next reconnect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdSecurity {
    /// `--etcd-cacert`.
    pub cacert: Option<PathBuf>,
    /// `--etcd-cert` and `--etcd-key`.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// `--etcd-user`.
    pub user: Option<String>,
    /// The user's password.
    pub password: Option<Password>,
}

impl EtcdSecurity {
    /// Reads the options through `get` (by long name: the host's matches or the plugin's
    /// arguments) and the password from [`PASSWORD_ENV`], and checks the rules: cert and key
    /// together, a user with a password and a password with a user.
    pub fn from_values(get: impl Fn(&str) -> Option<String>) -> Result<EtcdSecurity, EtcdConfigError> {
        Self::from_values_and_env(get, std::env::var(PASSWORD_ENV).ok())
    }

    /// [`EtcdSecurity::from_values`] with the environment's password given.
    pub fn from_values_and_env(
        get: impl Fn(&str) -> Option<String>,
        env_password: Option<String>,
    ) -> Result<EtcdSecurity, EtcdConfigError> {
        let value = |name: &'static str| match get(name) {
            Some(v) if v.is_empty() => Err(EtcdConfigError::Empty(name)),
            v => Ok(v),
        };
        let path = |name| Ok::<_, EtcdConfigError>(value(name)?.map(PathBuf::from));
        let cacert = path(CACERT)?;
        let identity = match (path(CERT)?, path(KEY)?) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => return Err(EtcdConfigError::Pair { given: CERT, missing: KEY }),
            (None, Some(_)) => return Err(EtcdConfigError::Pair { given: KEY, missing: CERT }),
        };
        let user = value(USER)?;
        let password = match (path(PASSWORD_FILE)?, env_password) {
            (Some(file), _) => Some(Password::File(file)),
            (None, Some(p)) if p.is_empty() => {
                return Err(EtcdConfigError::EmptyPassword(format!("environment variable {PASSWORD_ENV}")))
            }
            (None, Some(p)) => Some(Password::Env(Secret::new(p))),
            (None, None) => None,
        };
        match (&user, &password) {
            (Some(u), None) => return Err(EtcdConfigError::NoPassword(u.clone())),
            (None, Some(p)) => return Err(EtcdConfigError::NoUser(p.source())),
            _ => {}
        }
        Ok(EtcdSecurity { cacert, identity, user, password })
    }

    /// The first TLS option given, if any.
    fn tls_flag(&self) -> Option<&'static str> {
        if self.cacert.is_some() {
            Some(CACERT)
        } else if self.identity.is_some() {
            Some(CERT)
        } else {
            None
        }
    }

    /// The scheme a bare `host:port` gets: https when TLS files are given.
    pub fn bare_scheme(&self) -> Scheme {
        if self.tls_flag().is_some() {
            Scheme::Https
        } else {
            Scheme::Http
        }
    }

    /// Parses an endpoint list with [`parse_endpoints`] (bare `host:port` gets
    /// [`EtcdSecurity::bare_scheme`]) and refuses TLS files with http:// endpoints.
    pub fn endpoints(&self, raw: &str) -> Result<Vec<Endpoint>, EtcdConfigError> {
        let list = parse_endpoints(raw, self.bare_scheme())?;
        if let (Some(flag), Some(http)) = (self.tls_flag(), list.iter().find(|e| e.scheme == Scheme::Http)) {
            return Err(EtcdConfigError::TlsOverHttp { flag, endpoint: http.url() });
        }
        Ok(list)
    }

    /// Reads and checks every file once, as at start-up: the same errors as
    /// [`EtcdSecurity::connect_options`], and warnings to log (a password file that group or
    /// others may read).
    pub fn check(&self) -> Result<Vec<String>, EtcdConfigError> {
        self.tls_options()?;
        self.password()?;
        let mut warnings = Vec::new();
        if let Some(Password::File(path)) = &self.password {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path) {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    warnings.push(format!(
                        "--{PASSWORD_FILE} {}: group or others may read it (mode {mode:04o}); chmod 600 it",
                        path.display()
                    ));
                }
            }
        }
        Ok(warnings)
    }

    /// The password, read now.
    pub(crate) fn password(&self) -> Result<Option<Secret>, EtcdConfigError> {
        match &self.password {
            None => Ok(None),
            Some(Password::Env(s)) => Ok(Some(s.clone())),
            Some(Password::File(path)) => {
                let text = read(PASSWORD_FILE, path, MAX_PASSWORD_FILE)?;
                let text = String::from_utf8(text).map_err(|_| EtcdConfigError::Pem {
                    flag: PASSWORD_FILE,
                    path: path.display().to_string(),
                    what: "not UTF-8 text".into(),
                })?;
                let password = text.trim_end_matches(['\n', '\r']);
                if password.is_empty() {
                    return Err(EtcdConfigError::EmptyPassword(format!("--{PASSWORD_FILE} {}", path.display())));
                }
                Ok(Some(Secret::new(password)))
            }
        }
    }

    /// The TLS options, the files read and checked now (the system roots without a CA file).
    fn tls_options(&self) -> Result<TlsOptions, EtcdConfigError> {
        let mut tls = TlsOptions::new();
        match &self.cacert {
            Some(path) => {
                let pem = read(CACERT, path, MAX_PEM_FILE)?;
                certificates(CACERT, path, &pem)?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            None => tls = tls.with_native_roots(),
        }
        if let Some((cert, key)) = &self.identity {
            let cert_pem = read(CERT, cert, MAX_PEM_FILE)?;
            certificates(CERT, cert, &cert_pem)?;
            let key_pem = read(KEY, key, MAX_PEM_FILE)?;
            if PrivateKeyDer::from_pem_slice(&key_pem).is_err() {
                return Err(EtcdConfigError::Pem {
                    flag: KEY,
                    path: key.display().to_string(),
                    what: "no PEM private key in it (expected -----BEGIN PRIVATE KEY-----, or an RSA or EC one)".into(),
                });
            }
            tls = tls.identity(Identity::from_pem(cert_pem, key_pem));
        }
        Ok(tls)
    }

    /// The etcd client's options for `endpoints`: TLS for https:// endpoints (the server
    /// certificate checked against `--etcd-cacert` or the system roots, and the endpoint's host
    /// name or IP), the client certificate, the user and password. The files are read now.
    /// The callers add their timeouts and keep-alives.
    pub fn connect_options(&self, endpoints: &[Endpoint]) -> Result<ConnectOptions, EtcdConfigError> {
        let mut options = ConnectOptions::new();
        if endpoints.iter().any(|e| e.scheme == Scheme::Https) {
            options = options.with_tls(self.tls_options()?);
        } else if let Some(flag) = self.tls_flag() {
            let endpoint = endpoints.first().map(Endpoint::url).unwrap_or_default();
            return Err(EtcdConfigError::TlsOverHttp { flag, endpoint });
        }
        if let (Some(user), Some(password)) = (&self.user, self.password()?) {
            options = options.with_user(user.clone(), password.expose().to_string()).with_auto_token_refresh(true);
        }
        Ok(options)
    }
}

/// Where etcd is and how to reach it: the endpoints and the `--etcd-*` options, checked
/// together (TLS files need https:// endpoints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConn {
    /// The endpoints, all of one scheme.
    pub endpoints: Vec<Endpoint>,
    /// TLS and authentication.
    pub security: EtcdSecurity,
}

impl EtcdConn {
    /// Parses `raw` (comma-separated endpoints) for `security` ([`EtcdSecurity::endpoints`]).
    pub fn new(raw: &str, security: EtcdSecurity) -> Result<EtcdConn, EtcdConfigError> {
        Ok(EtcdConn { endpoints: security.endpoints(raw)?, security })
    }

    /// The endpoint URLs, as the etcd client takes them.
    pub fn urls(&self) -> Vec<String> {
        self.endpoints.iter().map(Endpoint::url).collect()
    }

    /// Whether the endpoints are https://.
    pub fn https(&self) -> bool {
        self.endpoints.iter().any(|e| e.scheme == Scheme::Https)
    }

    /// [`EtcdSecurity::check`]: every file read once, as at start-up; warnings to log.
    pub fn check(&self) -> Result<Vec<String>, EtcdConfigError> {
        self.security.check()
    }

    /// [`EtcdSecurity::connect_options`] for these endpoints; the files are read now.
    pub fn connect_options(&self) -> Result<ConnectOptions, EtcdConfigError> {
        self.security.connect_options(&self.endpoints)
    }
}

impl Password {
    /// Where it comes from, for messages.
    pub(crate) fn source(&self) -> String {
        match self {
            Password::File(p) => format!("--{PASSWORD_FILE} {}", p.display()),
            Password::Env(_) => format!("environment variable {PASSWORD_ENV}"),
        }
    }
}

/// The largest PEM file read: a certificate chain or a key is a few KiB, a CA bundle a few
/// hundred.
pub const MAX_PEM_FILE: u64 = 1 << 20;
/// The largest password file read.
pub const MAX_PASSWORD_FILE: u64 = 4 << 10;

/// The content of the file of option `flag`: a regular file (a FIFO or a device is refused
/// at once, never waited on) of at most `limit` bytes.
fn read(flag: &'static str, path: &Path, limit: u64) -> Result<Vec<u8>, EtcdConfigError> {
    use vpcrouter_plugin_api::file::FileError;
    vpcrouter_plugin_api::file::read_file(path, limit).map_err(|e| match e {
        FileError::Io { source, .. } => {
            EtcdConfigError::Unreadable { flag, path: path.display().to_string(), reason: source.to_string() }
        }
        other => EtcdConfigError::NotUsable { flag, reason: other.to_string() },
    })
}

/// The certificates of a PEM file; at least one.
fn certificates(flag: &'static str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, EtcdConfigError> {
    let bad = |what: &str| EtcdConfigError::Pem { flag, path: path.display().to_string(), what: what.to_string() };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&format!("not a valid PEM file ({e})")))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)"));
    }
    Ok(certs)
}

/// The first certificate of `path` (PEM), if it can be read.
pub(crate) fn first_certificate(path: &Path) -> Option<CertificateDer<'static>> {
    let pem = vpcrouter_plugin_api::file::read_file(path, MAX_PEM_FILE).ok()?;
    CertificateDer::pem_slice_iter(&pem).next()?.ok()
}

/// The end of a DER certificate's validity (`notAfter`), to tell whose certificate expired.
pub(crate) fn not_after(cert: &[u8]) -> Option<SystemTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    let secs = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(pairs: &[(&str, &str)], env: Option<&str>) -> Result<EtcdSecurity, EtcdConfigError> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        EtcdSecurity::from_values_and_env(
            |n| pairs.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()),
            env.map(String::from),
        )
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!((format!("{s}"), format!("{s:?}")), ("(redacted)".into(), "(redacted)".into()));
        let sec = from(&[("etcd-user", "u")], Some("hunter2")).unwrap();
        assert!(!format!("{sec:?}").contains("hunter2"), "{sec:?}");
        assert_eq!(sec.password, Some(Password::Env(Secret::new("hunter2"))));
    }

    #[test]
    fn the_table_makes_the_arg_specs() {
        let specs = arg_specs();
        let names: Vec<&str> = specs.iter().map(|s| s.long.as_str()).collect();
        assert_eq!(names, ["etcd-cacert", "etcd-cert", "etcd-key", "etcd-user", "etcd-password-file"]);
        assert!(specs.iter().all(|s| !s.required && !s.flag && s.default.is_rnone()));
        assert!(specs[2].help.contains("--etcd_key"));
        assert!(is_shared("etcd-user") && !is_shared("etcd_key") && !is_shared("etcd_endpoints"));
    }

    #[test]
    fn option_rules() {
        assert_eq!(from(&[], None).unwrap(), EtcdSecurity::default());
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, &'a str);
        let cases: &[Case] = &[
            (&[("etcd-cert", "/c")], None, "--etcd-cert is given without --etcd-key; pass both: the client certificate and its private key"),
            (&[("etcd-key", "/k")], None, "--etcd-key is given without --etcd-cert; pass both: the client certificate and its private key"),
            (&[("etcd-user", "vr")], None, "--etcd-user 'vr' is given without a password; put the password in a file named by --etcd-password-file, or in the environment variable VPCROUTER_ETCD_PASSWORD"),
            (&[("etcd-password-file", "/p")], None, "a password is given (--etcd-password-file /p) but no --etcd-user; pass --etcd-user NAME too, or drop the password"),
            (&[], Some("pw"), "a password is given (environment variable VPCROUTER_ETCD_PASSWORD) but no --etcd-user; pass --etcd-user NAME too, or drop the password"),
            (&[("etcd-user", "vr")], Some(""), "the etcd password is empty (environment variable VPCROUTER_ETCD_PASSWORD); put the password of --etcd-user there"),
            (&[("etcd-user", "")], Some("x"), "--etcd-user is empty; pass a value or leave the option out"),
            (&[("etcd-cacert", "")], None, "--etcd-cacert is empty; pass a value or leave the option out"),
        ];
        for (pairs, env, want) in cases {
            assert_eq!(from(pairs, *env).unwrap_err().to_string(), *want, "{pairs:?} {env:?}");
        }
        // The file wins over the environment.
        let s = from(&[("etcd-user", "vr"), ("etcd-password-file", "/p")], Some("env")).unwrap();
        assert_eq!(s.password, Some(Password::File("/p".into())));
    }

    #[test]
    fn endpoints_follow_the_tls_options() {
        let plain = EtcdSecurity::default();
        assert_eq!(plain.endpoints("h:1").unwrap()[0].url(), "http://h:1");
        assert_eq!(plain.endpoints("https://h:1").unwrap()[0].url(), "https://h:1");
        let tls = from(&[("etcd-cacert", "/ca.pem")], None).unwrap();
        assert_eq!(tls.endpoints("h:1, https://g:2").unwrap()[1].url(), "https://g:2");
        assert_eq!(tls.endpoints("h:1").unwrap()[0].url(), "https://h:1");
        assert_eq!(
            tls.endpoints("http://h:1").unwrap_err().to_string(),
            "--etcd-cacert is given but etcd endpoint 'http://h:1' is http://; use https:// endpoints (or bare \
             host:port ones) with TLS, or drop the TLS options"
        );
        let err = plain.endpoints("http://h:1,https://g:2").unwrap_err().to_string();
        assert!(err.starts_with("the endpoints mix http:// and https://"), "{err}");
    }

    #[test]
    fn files_are_read_when_connecting_and_errors_name_the_flag_and_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).display().to_string();
        let missing = p("missing.pem");
        let sec = from(&[("etcd-cacert", &missing)], None).unwrap();
        let https = sec.endpoints("127.0.0.1:2379").unwrap();
        let want = format!("--etcd-cacert {missing}: cannot read it: No such file or directory (os error 2)");
        assert_eq!(sec.check().unwrap_err().to_string(), want);
        assert_eq!(sec.connect_options(&https).unwrap_err().to_string(), want);

        std::fs::write(p("junk.pem"), "not a certificate\n").unwrap();
        let sec = from(&[("etcd-cacert", &p("junk.pem"))], None).unwrap();
        assert_eq!(
            sec.check().unwrap_err().to_string(),
            format!("--etcd-cacert {}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)", p("junk.pem"))
        );
        // A certificate given as the key.
        std::fs::write(p("cert.pem"), TEST_CERT).unwrap();
        let sec = from(&[("etcd-cert", &p("cert.pem")), ("etcd-key", &p("cert.pem"))], None).unwrap();
        assert_eq!(
            sec.check().unwrap_err().to_string(),
            format!(
                "--etcd-key {}: no PEM private key in it (expected -----BEGIN PRIVATE KEY-----, or an RSA or EC one)",
                p("cert.pem")
            )
        );
        // The file is read at each connect: fixing it fixes the next one.
        std::fs::write(p("junk.pem"), TEST_CERT).unwrap();
        let sec = from(&[("etcd-cacert", &p("junk.pem"))], None).unwrap();
        assert!(sec.connect_options(&https).is_ok());
        assert!(sec.check().unwrap().is_empty());
        // Its validity is read (to tell whose certificate expired): notAfter=Nov 28 17:48:24 2036 GMT.
        let cert = first_certificate(&dir.path().join("junk.pem")).unwrap();
        assert_eq!(not_after(&cert), Some(UNIX_EPOCH + Duration::from_secs(2_111_507_304)));
        assert_eq!(not_after(&cert[..cert.len() - 1]), None, "a truncated certificate");
        assert_eq!(not_after(&[0x30, 0x00]), None);
    }

    #[test]
    fn the_password_file_is_read_at_connect_and_a_loose_mode_is_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let sec = from(&[("etcd-user", "vr"), ("etcd-password-file", path.to_str().unwrap())], None).unwrap();
        let warnings = sec.check().unwrap();
        assert_eq!(
            warnings,
            [format!("--etcd-password-file {}: group or others may read it (mode 0644); chmod 600 it", path.display())]
        );
        assert_eq!(sec.password().unwrap(), Some(Secret::new("s3cret")));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(sec.check().unwrap().is_empty());
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(
            sec.check().unwrap_err().to_string(),
            format!(
                "the etcd password is empty (--etcd-password-file {}); put the password of --etcd-user there",
                path.display()
            )
        );
        // A user and password over plain http is allowed (etcd permits it).
        std::fs::write(&path, "s3cret").unwrap();
        assert!(sec.connect_options(&sec.endpoints("h:1").unwrap()).is_ok());
    }

    #[test]
    fn fifos_devices_and_huge_files_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("ca.pem");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let huge = dir.path().join("pw");
        std::fs::write(&huge, vec![b'x'; (MAX_PASSWORD_FILE + 1) as usize]).unwrap();
        let started = std::time::Instant::now();
        let sec = from(&[("etcd-cacert", fifo.to_str().unwrap())], None).unwrap();
        assert_eq!(
            sec.check().unwrap_err().to_string(),
            format!(
                "--etcd-cacert: '{}' is a FIFO (named pipe), not a regular file: give the path of a regular file",
                fifo.display()
            )
        );
        assert!(first_certificate(&fifo).is_none());
        let sec = from(&[("etcd-cert", "/dev/zero"), ("etcd-key", "/dev/zero")], None).unwrap();
        let e = sec.check().unwrap_err().to_string();
        assert!(e.starts_with("--etcd-cert: '/dev/zero' is a character device, not a regular file"), "{e}");
        let sec = from(&[("etcd-user", "vr"), ("etcd-password-file", huge.to_str().unwrap())], None).unwrap();
        let e = sec.check().unwrap_err().to_string();
        assert!(e.starts_with("--etcd-password-file: '") && e.contains("larger than the limit of 4 KiB"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    /// A self-signed certificate (openssl req -x509, P-256, valid until 2036).
    const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBczCCARmgAwIBAgIUIz8FtrbinoHtbM8VvOf09zDlclgwCgYIKoZIzj0EAwIw
DzENMAsGA1UEAwwEdGVzdDAeFw0yNjEyMDExNzQ4MjRaFw0zNjExMjgxNzQ4MjRa
MA8xDTALBgNVBAMMBHRlc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAATk+N6x
HTk9PzkpsV3crHS2MpOFhd2IkEHipJUA1nCQVBfAyobP+bo88xL2l6sdAaEoFGwb
G/gW9K8lwA2nf0Sko1MwUTAdBgNVHQ4EFgQUq/tRAxp9VEriaJviJAyEpWvqHHww
HwYDVR0jBBgwFoAUq/tRAxp9VEriaJviJAyEpWvqHHwwDwYDVR0TAQH/BAUwAwEB
/zAKBggqhkjOPQQDAgNIADBFAiAOx1NwT5veEpjwO+qq62SXu8PyCfxYPWLp4ldm
na/hsQIhAPg94PAySVOR7A90Ed8XIM5hg03fX6KqPXIk/MTQLZF0
-----END CERTIFICATE-----
";
}
