//! The `webhook` notifier: POSTs each event as JSON to a URL, signed when a secret is given.
//!
//! `vpcrouter --notify webhook --notify-webhook-url https://hooks.example.com/vpcrouter
//! --notify-webhook-secret-file /etc/vpcrouter/webhook.secret`
//!
//! Options:
//! * `--notify-webhook-url URL` (required): `http://` or `https://`, with a host. HTTPS is
//!   verified against the system's trust store (the CA certificates of `/etc/ssl/certs` and
//!   the like, or `SSL_CERT_FILE` / `SSL_CERT_DIR`), read at start; a start with none
//!   found is refused. A `user:password@` in the URL is sent as basic auth. The proxy of
//!   `ALL_PROXY` / `HTTPS_PROXY` / `HTTP_PROXY` is used, `NO_PROXY` honoured.
//! * `--notify-webhook-secret-file FILE`: the shared secret, read at start and trimmed
//!   (surrounding whitespace and the final newline are not part of it). An unreadable or
//!   empty file refuses the start with one line naming the file.
//! * `--notify-webhook-retry-seconds SECS` (default 60, 0 = no retry, at most 3600).
//! * `--notify-webhook-timeout SECS` (default 10, 0.1 to 300): one request's timeout.
//!
//! Each event is one `POST` of exactly the event's JSON object (the bytes the host sent)
//! with `Content-Type: application/json`, `X-Vpcrouter-Event: <event name>`,
//! `User-Agent: vpcrouter-notify-webhook/<version>` and, with a secret,
//! `X-Vpcrouter-Signature-256: sha256=<lowercase hex HMAC-SHA256 of the body keyed with
//! the secret>` (GitHub's scheme: the receiver computes the same and compares in constant
//! time). Redirects are not followed.
//!
//! The answer:
//! * 2xx: delivered.
//! * 4xx (and 3xx): the receiver refused it; the event fails at once, not retried
//!   (`... answered 400 Bad Request: <start of the body> (not retried)`).
//! * 5xx, connection errors and timeouts: retried after a pause that doubles from 0.5 s up
//!   to 10 s, with jitter (half of it fixed, half random), as long as retry-seconds have not
//!   passed since the first attempt (the last retry starts at that mark at the latest);
//!   then the event fails naming the last answer or error and the number of attempts. The
//!   first failure of an event is logged as a warning, the retries at debug level.
//! * At shutdown the backoff and a request in flight are given up at once
//!   (`vpcrouter is stopping: ...`); the request's thread ends within its timeout.
//!
//! The host delivers one event at a time per notifier, in order, with a bounded queue in
//! front: while an event is retried, the next ones wait (and the oldest are dropped when
//! the queue is full).
//!
//! Status details: `{"url": URL without userinfo and query, "signed": bool,
//! "retry_seconds": N}`.

#![deny(unsafe_code)]

mod basic_auth;
pub mod config;
pub mod post;

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vpcrouter_plugin_api::prelude::*;
use vpcrouter_plugin_api::time::backoff;

use crate::config::{Config, RETRY_ARG};
use crate::post::{Answer, Client, Signer};

/// The pause after an event's first failed attempt; it doubles per further failure.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest pause between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The `webhook` notifier plugin.
pub struct Webhook {
    /// Sends the requests.
    client: Client,
    /// What the status server shows of the URL (no userinfo, no query).
    shown: String,
    /// Signs the bodies; `None` without a secret file.
    signer: Option<Signer>,
    /// How long after an event's first attempt a retry may start.
    retry: Duration,
    /// Gives up a backoff or a request in flight at shutdown.
    stop: StopToken,
    /// The first failure of an event is a warning, retries are debug lines.
    log: Logger,
    /// The jitter of the backoff.
    rng: StdRng,
}

impl PluginDescription for Webhook {
    const NAME: &'static str = "webhook";
    const DESCRIPTION: &'static str = "POSTs each event as JSON to a URL, signed when a secret is given";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn arguments() -> Vec<ArgSpec> {
        config::arguments()
    }

    fn validate_config(args: &PluginArgs) -> Result<(), String> {
        Config::parse(args).map(drop)
    }
}

impl NotifierPlugin for Webhook {
    fn start(args: &PluginArgs, run: &NotifyRun) -> Result<Webhook, String> {
        let config = Config::parse(args)?;
        let roots = if config.target.https { post::system_roots(run.log())? } else { Vec::new() };
        let signer = config.secret.as_deref().map(Signer::new).transpose()?;
        let rng = StdRng::try_from_os_rng().map_err(|e| format!("webhook notifier: no random numbers: {e}"))?;
        let shown = config.target.shown.clone();
        run.log().info(format!(
            "webhook notifier plugin: POSTing events to {shown}{}",
            if signer.is_some() { ", signed" } else { "" }
        ));
        Ok(Webhook {
            client: Client::new(config.target, config.timeout, roots),
            shown,
            signer,
            retry: config.retry,
            stop: run.stop_token(),
            log: run.log().clone(),
            rng,
        })
    }

    fn notify(&mut self, event: &Event) -> Result<(), String> {
        let signature = self.signer.as_ref().map(|s| s.sign(event.json().as_bytes()));
        let first = Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let answer = self.client.post(event.name(), event.json(), signature.as_deref(), self.stop.receiver());
            let failure = match answer {
                None => return Err(self.stopping(event, attempts, "the last one was still waiting for an answer")),
                Some(Answer::Delivered) => {
                    self.delivered(event, attempts);
                    return Ok(());
                }
                Some(Answer::Refused(e)) => return Err(format!("{} {e}", self.shown)),
                Some(Answer::Failed(e)) => e,
            };
            let left = self.retry.saturating_sub(first.elapsed());
            if left.is_zero() {
                return Err(self.given_up(attempts, first.elapsed(), &failure));
            }
            let pause = backoff(FIRST_BACKOFF, MAX_BACKOFF, attempts, self.rng.random()).min(left);
            self.log_retry(event, attempts, &failure, pause);
            if self.stop.wait(pause) {
                return Err(self.stopping(event, attempts, &format!("the last: {failure}")));
            }
        }
    }

    fn details(&self) -> serde_json::Value {
        serde_json::json!({
            "url": self.shown,
            "signed": self.signer.is_some(),
            "retry_seconds": seconds(self.retry),
        })
    }
}

impl Webhook {
    /// Logs a failed attempt and the next one: a warning for an event's first failure, a
    /// debug line for the others.
    fn log_retry(&self, event: &Event, attempts: u32, failure: &str, pause: Duration) {
        let line = format!(
            "webhook {} event to {}: {failure}; attempt {} in {:.1} s",
            event.name(),
            self.shown,
            attempts + 1,
            pause.as_secs_f64()
        );
        if attempts == 1 {
            self.log.warn(line);
        } else {
            self.log.debug(line);
        }
    }

    /// Tells that an event that failed before got through.
    fn delivered(&self, event: &Event, attempts: u32) {
        if attempts > 1 {
            self.log.info(format!("webhook {} event delivered to {} at attempt {attempts}", event.name(), self.shown));
        }
    }

    /// The error of an event whose retry window has passed.
    fn given_up(&self, attempts: u32, took: Duration, failure: &str) -> String {
        let tries = if attempts == 1 { "1 attempt".to_string() } else { format!("{attempts} attempts") };
        format!(
            "{} failed {tries} in {:.1} s (--{RETRY_ARG} {}), the last: {failure}",
            self.shown,
            took.as_secs_f64(),
            seconds(self.retry)
        )
    }

    /// The error of an event given up at shutdown.
    fn stopping(&self, event: &Event, attempts: u32, last: &str) -> String {
        format!(
            "vpcrouter is stopping: {} event not delivered to {} after {attempts} attempt(s); {last}",
            event.name(),
            self.shown
        )
    }
}

/// `d` in seconds: a whole number when it is one.
fn seconds(d: Duration) -> serde_json::Value {
    if d.subsec_nanos() == 0 {
        d.as_secs().into()
    } else {
        d.as_secs_f64().into()
    }
}

vpcrouter_plugin_api::export_plugin!(notifier: Webhook);

#[cfg(test)]
mod tests;
