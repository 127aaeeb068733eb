//! Runs EC2 calls within the client-side limits: reads with retries, and a plan's route
//! writes concurrently, in plan order, as one wave.
//!
//! Every call takes a token of its bucket and a slot of the in-flight cap
//! ([`super::limits`]). A throttled answer (`RequestLimitExceeded`) lowers the bucket's
//! rate and the call is sent again as soon as the bucket allows it; other transient
//! errors (5xx, timeouts, resets) are retried with a short backoff. Neither counts as a
//! failed reconcile unless the retries run out.
//!
//! A wave may have a deadline (cluster mode: until when this instance's leadership is
//! known to hold). No call is started that is not expected to be answered before it, and
//! a call still running at the deadline is abandoned.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use vpcrouter_plugin_api::time::backoff;

use super::ec2::{Ec2, Ec2Error};
use super::limits::{Limits, LimitsConfig};
use super::model::{Applied, RouteAction, VpcState};
use crate::sync::lock;

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

/// How one action of a wave ended.
#[derive(Debug)]
pub enum Outcome {
    /// EC2 acknowledged it, with what the state needs of the answer.
    Done(Applied),
    /// EC2 refused it, or the retries ran out.
    Failed(Ec2Error),
    /// Not sent (or a retry not sent) because it would not be answered before the
    /// deadline; it belongs to the next wave.
    NotStarted,
    /// Still running at the deadline: abandoned (EC2 may or may not have applied it).
    Abandoned,
}

/// What a wave did.
#[derive(Debug, Default)]
pub struct WaveReport {
    /// One outcome per action, in the order given.
    pub outcomes: Vec<Outcome>,
    /// Write calls sent, retries included.
    pub calls: u64,
    /// Throttled answers.
    pub throttled: u64,
    /// When the last acknowledgement arrived.
    pub last_ack: Option<Instant>,
}

/// One action's result inside a wave.
struct Attempted {
    index: usize,
    outcome: Outcome,
    calls: u64,
    throttled: u64,
    acked: Option<Instant>,
}

/// The EC2 adapter behind the limits. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Executor {
    ec2: Ec2,
    limits: Arc<Limits>,
    /// Smoothed write latency (for deadlines).
    write_latency: Arc<Mutex<Duration>>,
    /// A write token taken by a wave that then stopped at its deadline: the next wave's
    /// first call uses it instead of waiting for a new one.
    prepaid: Arc<AtomicBool>,
    rng: Arc<Mutex<StdRng>>,
}

impl Executor {
    /// An executor for `ec2` with full buckets.
    pub fn new(ec2: Ec2, cfg: LimitsConfig) -> Executor {
        Executor {
            ec2,
            limits: Arc::new(Limits::new(cfg)),
            write_latency: Arc::new(Mutex::new(INITIAL_WRITE_ESTIMATE)),
            prepaid: Arc::default(),
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

    /// How long a write is expected to take: twice the smoothed latency, at least 50 ms.
    pub fn expected_write(&self) -> Duration {
        (*lock(&self.write_latency) * 2).max(Duration::from_millis(50))
    }

    fn jitter(&self) -> f64 {
        lock(&self.rng).random()
    }

    /// Reads the VPC, retrying throttled answers and transient errors.
    pub async fn read_state(&self, vpc_id: &str) -> Result<VpcState, Ec2Error> {
        let (mut failures, mut throttles) = (0, 0);
        loop {
            match self.ec2.read_state(vpc_id, &self.limits).await {
                Ok(state) => {
                    self.limits.read.succeeded();
                    return Ok(state);
                }
                Err(e) if e.is_throttle() && throttles < THROTTLE_RETRIES => {
                    throttles += 1;
                    self.limits.read.throttled();
                }
                Err(e) if e.is_transient() && failures + 1 < ATTEMPTS => {
                    failures += 1;
                    let delay = backoff(FIRST_RETRY, MAX_RETRY, failures, self.jitter());
                    tracing::debug!(retry_in_ms = delay.as_millis() as u64, "reading the VPC again: {e}");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs `actions` concurrently as one wave: sent in the order given, each when a write
    /// token and an in-flight slot are free. With a `deadline`, the actions that cannot be
    /// answered before it are left [`Outcome::NotStarted`].
    pub async fn wave(&self, actions: &[RouteAction], deadline: Option<Instant>) -> WaveReport {
        let mut report =
            WaveReport { outcomes: actions.iter().map(|_| Outcome::NotStarted).collect(), ..Default::default() };
        let mut running = JoinSet::new();
        for (index, action) in actions.iter().enumerate() {
            let slot = self.limits.slot().await;
            if !self.prepaid.swap(false, Ordering::Relaxed) {
                self.limits.write.take().await;
            }
            if deadline.is_some_and(|d| Instant::now() + self.expected_write() > d) {
                self.prepaid.store(true, Ordering::Relaxed);
                break;
            }
            let (exec, action) = (self.clone(), action.clone());
            running.spawn(async move {
                let attempted = exec.attempt(index, &action, deadline).await;
                drop(slot);
                attempted
            });
        }
        while let Some(joined) = running.join_next().await {
            let Ok(a) = joined else { continue };
            report.calls += a.calls;
            report.throttled += a.throttled;
            report.last_ack = report.last_ack.max(a.acked);
            if let Some(slot) = report.outcomes.get_mut(a.index) {
                *slot = a.outcome;
            }
        }
        report
    }

    /// Sends one action (its first token is already taken), with retries.
    async fn attempt(&self, index: usize, action: &RouteAction, deadline: Option<Instant>) -> Attempted {
        let mut done = Attempted { index, outcome: Outcome::NotStarted, calls: 0, throttled: 0, acked: None };
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
                        done.outcome = Outcome::Abandoned;
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
                    done.acked = Some(Instant::now());
                    done.outcome = Outcome::Done(applied);
                    return done;
                }
                Err(e)
                    if matches!(action, RouteAction::Delete { .. } | RouteAction::DeleteList { .. })
                        && e.is_route_not_found() =>
                {
                    tracing::info!(cidr = %action.dest(), rtb = action.rtb(), "route or list to delete was already gone");
                    done.acked = Some(Instant::now());
                    done.outcome = Outcome::Done(Applied::default());
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
                    done.outcome = Outcome::Failed(e);
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
