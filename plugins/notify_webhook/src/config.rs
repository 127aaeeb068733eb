//! The options, parsed once (by `validate_config` and again at start): where to POST, the
//! signing key, the retry window and the request timeout.

use std::path::Path;
use std::time::Duration;

use ureq::http::Uri;
use vpcrouter_plugin_api::prelude::*;

use crate::basic_auth;

/// `--notify-webhook-url URL`: where events are POSTed.
pub const URL_ARG: &str = "notify-webhook-url";
/// `--notify-webhook-secret-file FILE`: the HMAC key, read at start.
pub const SECRET_FILE_ARG: &str = "notify-webhook-secret-file";
/// `--notify-webhook-retry-seconds SECS`: how long an event is retried.
pub const RETRY_ARG: &str = "notify-webhook-retry-seconds";
/// `--notify-webhook-timeout SECS`: one request's timeout.
pub const TIMEOUT_ARG: &str = "notify-webhook-timeout";

/// Default of [`RETRY_ARG`], seconds.
pub const DEFAULT_RETRY_SECS: f64 = 60.0;
/// Largest [`RETRY_ARG`], seconds.
pub const MAX_RETRY_SECS: f64 = 3600.0;
/// Default of [`TIMEOUT_ARG`], seconds.
pub const DEFAULT_TIMEOUT_SECS: f64 = 10.0;
/// Smallest and largest [`TIMEOUT_ARG`], seconds.
pub const TIMEOUT_RANGE: std::ops::RangeInclusive<f64> = 0.1..=300.0;

/// The webhook's options, checked.
#[derive(Debug)]
pub struct Config {
    /// Where events go.
    pub target: Target,
    /// The trimmed content of the secret file: the HMAC key; `None` sends unsigned events.
    pub secret: Option<Vec<u8>>,
    /// How long after an event's first attempt a retry may still start (zero: no retry).
    pub retry: Duration,
    /// The most one request (connect, send, answer) may take.
    pub timeout: Duration,
}

impl Config {
    /// Parses and checks the options; reads the secret file. The error is one line naming
    /// the option.
    pub fn parse(args: &PluginArgs) -> Result<Config, String> {
        let target = Target::parse(args.require(URL_ARG)?)?;
        let secret = args.get(SECRET_FILE_ARG).map(|path| read_secret(Path::new(path))).transpose()?;
        let retry = args.seconds(RETRY_ARG, DEFAULT_RETRY_SECS, 0.0..=MAX_RETRY_SECS)?;
        let timeout = args.seconds(TIMEOUT_ARG, DEFAULT_TIMEOUT_SECS, TIMEOUT_RANGE)?;
        Ok(Config { target, secret, retry, timeout })
    }
}

/// The URL events are POSTed to, split into what is requested, what is shown and the
/// credentials.
#[derive(Clone, Debug)]
pub struct Target {
    /// The URL without its userinfo: what is requested.
    pub uri: Uri,
    /// `scheme://host[:port]/path`: the URL without userinfo and query (which may hold
    /// credentials), for logs, errors and the status server.
    pub shown: String,
    /// `Authorization` header value from the URL's `user:password@`, like curl sends it.
    pub authorization: Option<String>,
    /// True for `https://`: the system's trust roots are loaded.
    pub https: bool,
}

impl Target {
    /// Parses `--notify-webhook-url`: `http://` or `https://`, with a host.
    pub fn parse(raw: &str) -> Result<Target, String> {
        let wrong = |why: &str| format!("--{URL_ARG}: '{raw}' {why}; give http://HOST[:PORT]/PATH or https://...");
        let uri: Uri = raw.trim().parse().map_err(|e| wrong(&format!("is not a valid URL ({e})")))?;
        let https = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(wrong("does not start with http:// or https://")),
        };
        let authority = uri.authority().filter(|a| !a.host().is_empty()).ok_or_else(|| wrong("has no host"))?;
        let scheme = if https { "https" } else { "http" };
        let host_port = match authority.port_u16() {
            Some(port) => format!("{}:{port}", authority.host()),
            None => authority.host().to_string(),
        };
        let path = uri.path();
        let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        let bare: Uri = format!("{scheme}://{host_port}{path}{query}").parse().map_err(|e| wrong(&format!("({e})")))?;
        let userinfo = authority.as_str().rsplit_once('@').map(|(userinfo, _)| userinfo);
        Ok(Target {
            uri: bare,
            shown: format!("{scheme}://{host_port}{path}"),
            authorization: userinfo.map(basic_auth::header),
            https,
        })
    }
}

/// The trimmed content of the secret file; an unreadable or empty file is an error naming it.
fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let content =
        std::fs::read(path).map_err(|e| format!("--{SECRET_FILE_ARG}: cannot read {}: {e}", path.display()))?;
    let secret = content.trim_ascii();
    if secret.is_empty() {
        return Err(format!("--{SECRET_FILE_ARG}: {} is empty; write the shared secret into it", path.display()));
    }
    Ok(secret.to_vec())
}

/// The options' declarations, with the help texts `--help` shows.
pub fn arguments() -> Vec<ArgSpec> {
    vec![
        ArgSpec::value(
            URL_ARG,
            "URL",
            "Where the webhook notifier POSTs each event as JSON: http://HOST[:PORT]/PATH or https://... \
             (HTTPS verified against the system's trust store; user:password@ is sent as basic auth), \
             required (only for the 'webhook' notifier plugin)",
        )
        .required(),
        ArgSpec::value(
            SECRET_FILE_ARG,
            "FILE",
            "File holding the webhook's shared secret (read at start, trimmed); each event is then signed \
             with X-Vpcrouter-Signature-256: sha256=<hex HMAC-SHA256 of the body> (only for the 'webhook' \
             notifier plugin)",
        ),
        ArgSpec::value(
            RETRY_ARG,
            "SECS",
            "How long the webhook notifier retries an event after 5xx answers, connection errors and \
             timeouts, default 60, 0 (no retry) to 3600; 4xx answers are not retried (only for the \
             'webhook' notifier plugin)",
        )
        .default("60"),
        ArgSpec::value(
            TIMEOUT_ARG,
            "SECS",
            "Timeout of one webhook request in seconds, default 10, 0.1 to 300 (only for the 'webhook' \
             notifier plugin)",
        )
        .default("10"),
    ]
}
