//! One POST of one event, and what its answer means: delivered, refused (not retried) or
//! failed (retried).
//!
//! Each request runs on a short-lived thread of its own so that a stop does not wait for a
//! hanging endpoint: the caller returns at once, and the thread ends within the request's
//! timeout.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use ureq::http::{Request, Response, StatusCode};
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
use ureq::{Agent, Body};
use vpcrouter_plugin_api::prelude::*;

use crate::config::{Target, TIMEOUT_ARG, URL_ARG};

/// The `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("vpcrouter-notify-webhook/", env!("CARGO_PKG_VERSION"));
/// Header naming the event.
pub const EVENT_HEADER: &str = "x-vpcrouter-event";
/// Header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "x-vpcrouter-signature-256";
/// How much of a refusing answer's body is quoted in the error.
const QUOTED_BODY_BYTES: u64 = 300;

/// What one attempt came to.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// A 2xx answer.
    Delivered,
    /// An answer that retrying will not change (4xx, 3xx): the error, not retried.
    Refused(String),
    /// A 5xx answer, a connection error or a timeout: what happened, retried.
    Failed(String),
}

/// The HMAC-SHA256 key of the signatures.
#[derive(Clone)]
pub struct Signer(Hmac<Sha256>);

impl Signer {
    /// A signer keyed with `secret` (HMAC takes a key of any length).
    pub fn new(secret: &[u8]) -> Result<Signer, String> {
        Hmac::<Sha256>::new_from_slice(secret).map(Signer).map_err(|e| format!("cannot use the secret as a key: {e}"))
    }

    /// `sha256=<lowercase hex HMAC-SHA256 of body>`, GitHub's scheme.
    pub fn sign(&self, body: &[u8]) -> String {
        let mut mac = self.0.clone();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

/// The certificates of the system's trust store (`/etc/ssl/certs` and the like, or
/// `SSL_CERT_FILE` / `SSL_CERT_DIR`), for HTTPS; an error when it holds none.
pub fn system_roots(log: &Logger) -> Result<Vec<Certificate<'static>>, String> {
    let found = rustls_native_certs::load_native_certs();
    let roots: Vec<Certificate<'static>> =
        found.certs.iter().map(|der| Certificate::from_der(der.as_ref()).to_owned()).collect();
    let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
    if roots.is_empty() {
        return Err(format!(
            "no CA certificate found in the system trust store to verify HTTPS webhooks{}; install the \
             ca-certificates package or point SSL_CERT_FILE at a PEM bundle",
            if errors.is_empty() { String::new() } else { format!(" ({})", errors.join("; ")) }
        ));
    }
    if !errors.is_empty() {
        log.warn(format!("webhook notifier: some system CA certificates could not be read: {}", errors.join("; ")));
    }
    Ok(roots)
}

/// Sends events to one target.
pub struct Client {
    /// The HTTP client: timeout, no redirects, the trust roots.
    agent: Agent,
    /// Where to.
    target: Target,
    /// One request's timeout, for the error that says it passed.
    timeout: Duration,
}

impl Client {
    /// A client for `target` with requests limited to `timeout`, HTTPS verified against `roots`.
    pub fn new(target: Target, timeout: Duration, roots: Vec<Certificate<'static>>) -> Client {
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(RootCerts::Specific(Arc::new(roots)))
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .build();
        let config = Agent::config_builder()
            .timeout_global(Some(timeout))
            .max_redirects(0)
            .http_status_as_error(false)
            .user_agent(USER_AGENT)
            .tls_config(tls)
            .build();
        Client { agent: Agent::new_with_config(config), target, timeout }
    }

    /// POSTs `body` as event `event`, with `signature` if any; `None` when `stop` (a
    /// [`StopToken::receiver`]) fired first (the request's thread then ends on its own within
    /// the timeout).
    pub fn post(&self, event: &str, body: &str, signature: Option<&str>, stop: &Receiver<()>) -> Option<Answer> {
        let request = match self.request(event, body, signature) {
            Ok(request) => request,
            Err(e) => return Some(Answer::Refused(e)),
        };
        let (tx, rx) = crossbeam_channel::bounded(1);
        let (agent, timeout) = (self.agent.clone(), self.timeout);
        let spawned = std::thread::Builder::new().name("webhook post".into()).spawn(move || {
            // The receiver is gone when the caller stopped waiting: nothing to tell.
            let _ = tx.send(answer(agent.run(request), timeout));
        });
        if let Err(e) = spawned {
            return Some(Answer::Failed(format!("cannot start a thread for the request: {e}")));
        }
        crossbeam_channel::select! {
            recv(rx) -> answer => Some(answer.unwrap_or_else(|_| Answer::Failed("the request's thread died".into()))),
            recv(stop) -> _ => None,
        }
    }

    /// The request: the body as is, its type, the event's name, the signature, the credentials.
    fn request(&self, event: &str, body: &str, signature: Option<&str>) -> Result<Request<Vec<u8>>, String> {
        let mut request = Request::post(self.target.uri.clone())
            .header("content-type", "application/json")
            .header(EVENT_HEADER, event);
        if let Some(signature) = signature {
            request = request.header(SIGNATURE_HEADER, signature);
        }
        if let Some(authorization) = &self.target.authorization {
            request = request.header("authorization", authorization);
        }
        request.body(body.as_bytes().to_vec()).map_err(|e| format!("cannot build a request for event '{event}': {e}"))
    }
}

/// What a request's outcome means (`timeout`: the request's, for the error).
fn answer(result: Result<Response<Body>, ureq::Error>, timeout: Duration) -> Answer {
    let mut response = match result {
        Ok(response) => response,
        Err(ureq::Error::Timeout(_)) => {
            return Answer::Failed(format!("no answer within {} s (--{TIMEOUT_ARG})", timeout.as_secs_f64()))
        }
        Err(e) => return Answer::Failed(e.to_string()),
    };
    let status = response.status();
    if status.is_success() {
        return Answer::Delivered;
    }
    let answered = format!("answered {}", status_text(status));
    if status.is_redirection() {
        let location = response.headers().get("location").and_then(|l| l.to_str().ok()).unwrap_or("?");
        return Answer::Refused(format!(
            "{answered} (to {location}): redirects are not followed; set --{URL_ARG} to the final address"
        ));
    }
    let quoted = quote(response.body_mut());
    if status.is_client_error() {
        Answer::Refused(format!("{answered}{quoted} (not retried)"))
    } else {
        Answer::Failed(format!("{answered}{quoted}"))
    }
}

/// `503 Service Unavailable`.
fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// `: <the start of the body on one line>`, or nothing for an empty or unreadable body.
fn quote(body: &mut Body) -> String {
    let mut start = Vec::new();
    if body.as_reader().take(QUOTED_BODY_BYTES).read_to_end(&mut start).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&start);
    let line: Vec<&str> = text.split(|c: char| c.is_whitespace() || c.is_control()).filter(|w| !w.is_empty()).collect();
    if line.is_empty() {
        String::new()
    } else {
        format!(": {}", line.join(" "))
    }
}
