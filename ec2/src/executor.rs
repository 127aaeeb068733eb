//! Runs EC2 calls within the client-side limits: reads and writes with retries. [`Ec2Vpc`]
//! is the engine's VPC port: the engine starts each write when [`Executor::admit`] gives a
//! permit, and runs them concurrently.
//!
//! Every call takes a token of its bucket and a slot of the in-flight cap
//! ([`super::limits`]). A throttled answer (`RequestLimitExceeded`) lowers the bucket's
//! rate and the call is sent again as soon as the bucket allows it; other transient
//! errors (5xx, timeouts, resets) are retried with a short backoff. Neither counts as a
//! failed reconcile unless the retries run out.
//!
//! A write may have a deadline (cluster mode: until when this instance's leadership is
//! known to hold). No retry is started that is not expected to be answered before it, and
//! a call still running at the deadline is abandoned.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vpcrouter_engine::ports::BoxFuture;
use vpcrouter_engine::{Permit, Vpc, VpcError, WriteOutcome, Written};
use vpcrouter_plugin_api::time::backoff;

use crate::client::Ec2;
use crate::error::Ec2Error;
use crate::limits::{Limits, LimitsConfig};
use vpcrouter_engine::Ec2View;
use vpcrouter_planner::model::{Applied, RouteAction, VpcState};
use vpcrouter_plugin_api::sync::lock;

/// Attempts per call for transient errors other than throttling.
const ATTEMPTS: u32 = 4;
/// Throttled answers a call is sent again after, at most.
const THROTTLE_RETRIES: u32 = 10;
/// First retry delay after a transient error (doubled each time, with jitter).
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Longest retry delay.
const MAX_RETRY: Duration = Duration::from_secs(5);
/// A write is expected to take this long until one has been measured.
const INITIAL_WRITE_ESTIMATE: Duration = Duration::from_millis(250);

/// The EC2 adapter behind the limits. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Executor {
    /// The client that makes single attempts; the executor adds the limits and retries.
    ec2: Ec2,
    /// The buckets and in-flight cap every call of this executor (and its clones) shares.
    limits: Arc<Limits>,
    /// Smoothed write latency (for deadlines).
    write_latency: Arc<Mutex<Duration>>,
    /// Jitter for retry delays, and the client tokens that make list creations idempotent.
    rng: Arc<Mutex<StdRng>>,
}

/// Reads the VPC through `ec2` within `limits`, retrying throttled answers (the read
/// bucket slows down) and other transient errors (with a backoff jittered by `jitter`):
/// the executor's reads and the read-only [`VpcReader`](crate::reader::VpcReader)'s.
pub(crate) async fn read_with_retries(
    ec2: &Ec2,
    limits: &Limits,
    vpc_id: &str,
    mut jitter: impl FnMut() -> f64,
) -> Result<VpcState, Ec2Error> {
    let (mut failures, mut throttles) = (0, 0);
    loop {
        match ec2.read_state(vpc_id, limits).await {
            Ok(state) => {
                limits.read.succeeded();
                return Ok(state);
            }
            Err(e) if e.is_throttle() && throttles < THROTTLE_RETRIES => {
                throttles += 1;
                limits.read.throttled();
            }
            Err(e) if e.is_transient() && failures + 1 < ATTEMPTS => {
                failures += 1;
                let delay = backoff(FIRST_RETRY, MAX_RETRY, failures, jitter());
                tracing::debug!(retry_in_ms = delay.as_millis() as u64, "reading the VPC again: {e}");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

impl Executor {
    /// An executor for `ec2` with full buckets.
    pub fn new(ec2: Ec2, cfg: LimitsConfig) -> Executor {
        Executor {
            ec2,
            limits: Arc::new(Limits::new(cfg)),
            write_latency: Arc::new(Mutex::new(INITIAL_WRITE_ESTIMATE)),
            rng: Arc::new(Mutex::new(StdRng::from_os_rng())),
        }
    }

    /// The adapter (for its counters).
    pub fn ec2(&self) -> &Ec2 {
        &self.ec2
    }

    /// The buckets and the in-flight cap.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The counters and limits now, as `/status` and `/metrics` show them.
    pub fn view(&self) -> Ec2View {
        let l = self.limits();
        Ec2View {
            calls: self.ec2().call_counts(),
            limits: l.config(),
            read_rate: l.read.rate(),
            write_rate: l.write.rate(),
            in_flight: l.in_flight(),
        }
    }

    /// How long a write is expected to take: twice the smoothed latency, at least 50 ms.
    pub fn expected_write(&self) -> Duration {
        (*lock(&self.write_latency) * 2).max(Duration::from_millis(50))
    }

    fn jitter(&self) -> f64 {
        lock(&self.rng).random()
    }

    /// Reads the VPC, retrying throttled answers and transient errors.
    pub async fn read_state(&self, vpc_id: &str) -> Result<VpcState, Ec2Error> {
        read_with_retries(&self.ec2, &self.limits, vpc_id, || self.jitter()).await
    }

    /// Waits for an in-flight slot and a write token: the right to start one write.
    pub async fn admit(&self) -> Permit {
        let slot = self.limits.slot().await;
        self.limits.write.take().await;
        Permit::new(slot)
    }

    /// Sends one action (its first token is already taken), with retries; a retry that
    /// would not be answered before `deadline` is not sent.
    pub async fn write(&self, action: &RouteAction, deadline: Option<Instant>) -> Written {
        let mut done = Written { outcome: WriteOutcome::NotStarted, calls: 0, throttled: 0 };
        let mut failures = 0;
        // One idempotency token for every attempt of this action.
        let token = format!("vpcrouter-{:016x}", lock(&self.rng).random::<u64>());
        loop {
            done.calls += 1;
            let sent = Instant::now();
            let call = self.ec2.execute(action, &self.limits, &token);
            let result = match deadline {
                None => call.await,
                Some(d) => match tokio::time::timeout_at(d.into(), call).await {
                    Ok(r) => r,
                    Err(_) => {
                        done.outcome = WriteOutcome::Abandoned;
                        return done;
                    }
                },
            };
            match result {
                Ok(applied) => {
                    self.limits.write.succeeded();
                    if action.is_route() {
                        self.learn_latency(sent.elapsed());
                    }
                    done.outcome = WriteOutcome::Done(applied);
                    return done;
                }
                Err(e)
                    if matches!(action, RouteAction::Delete { .. } | RouteAction::DeleteList { .. })
                        && e.is_route_not_found() =>
                {
                    tracing::info!(cidr = %action.dest(), rtb = action.rtb(), "route or list to delete was already gone");
                    done.outcome = WriteOutcome::Done(Applied::default());
                    return done;
                }
                Err(e) if e.is_throttle() && done.throttled < u64::from(THROTTLE_RETRIES) => {
                    done.throttled += 1;
                    self.limits.write.throttled();
                }
                Err(e) if e.is_transient() && !e.is_throttle() && failures + 1 < ATTEMPTS => {
                    failures += 1;
                    let delay = backoff(FIRST_RETRY, MAX_RETRY, failures, self.jitter());
                    tracing::debug!(cidr = %action.dest(), rtb = action.rtb(), retry_in_ms = delay.as_millis() as u64, "route change failed, sending it again: {e}");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    done.outcome = WriteOutcome::Failed(vpc_error(&e));
                    return done;
                }
            }
            self.limits.write.take().await;
            if deadline.is_some_and(|d| Instant::now() + self.expected_write() > d) {
                return done;
            }
        }
    }

    fn learn_latency(&self, took: Duration) {
        let mut l = lock(&self.write_latency);
        *l = (*l * 7 + took) / 8;
    }
}

/// An EC2 error as the engine weighs it.
fn vpc_error(e: &Ec2Error) -> VpcError {
    VpcError { message: e.to_string(), stale: e.shows_stale_state(), transient: e.is_transient() }
}

/// The engine's VPC port on EC2: one VPC's reads and writes through the [`Executor`].
pub struct Ec2Vpc {
    /// Calls within the client-side limits.
    exec: Executor,
    /// The VPC managed.
    vpc_id: String,
}

impl Ec2Vpc {
    /// The port for `vpc_id`.
    pub fn new(exec: Executor, vpc_id: String) -> Ec2Vpc {
        Ec2Vpc { exec, vpc_id }
    }
}

impl Vpc for Ec2Vpc {
    fn read(&self) -> BoxFuture<'_, Result<VpcState, VpcError>> {
        Box::pin(async move { self.exec.read_state(&self.vpc_id).await.map_err(|e| vpc_error(&e)) })
    }

    fn admit(&self) -> BoxFuture<'_, Permit> {
        Box::pin(self.exec.admit())
    }

    fn write(&self, permit: Permit, action: RouteAction, deadline: Option<Instant>) -> BoxFuture<'static, Written> {
        let exec = self.exec.clone();
        Box::pin(async move {
            let written = exec.write(&action, deadline).await;
            drop(permit);
            written
        })
    }

    fn expected_write(&self) -> Duration {
        self.exec.expected_write()
    }
}
