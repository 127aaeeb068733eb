//! Client-side limits on EC2 calls, modelled on EC2's own per-account token buckets.
//!
//! EC2 throttles each account and region with two buckets: non-mutating calls (Describe*,
//! 100 burst / 20 per second refill) and mutating calls (CreateRoute, ReplaceRoute,
//! DeleteRoute: 50 burst / 5 per second). An empty bucket answers `RequestLimitExceeded`.
//! vpcrouter keeps a bucket of its own for each kind, so that it never draws the
//! account's bucket empty by itself, and a cap on calls in flight. A throttled answer
//! means other clients share the account's bucket: the refill rate is then halved
//! (multiplicative decrease, at most once a second) and the bucket emptied; each success
//! gives back a fiftieth of the configured rate (additive increase).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ratelimit::{Ratelimiter, TryWaitError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use vpcrouter_plugin_api::sync::lock;

/// Rates are kept in tokens per this period, so that fractional rates are exact enough.
const RATE_PERIOD: Duration = Duration::from_secs(1000);
/// A halving is applied at most once per this time (a burst of throttled answers to
/// calls sent together is one signal).
const DECREASE_EVERY: Duration = Duration::from_secs(1);
/// The rate never drops below this share of the configured one.
const FLOOR_SHARE: f64 = 1.0 / 16.0;
/// Each success adds this share of the configured rate back.
const INCREASE_SHARE: f64 = 1.0 / 50.0;

pub use vpcrouter_engine::budget::{BucketConfig, LimitsConfig};

/// Additive increase, multiplicative decrease of a refill rate. Pure: time is passed in.
#[derive(Debug, Clone, PartialEq)]
pub struct Aimd {
    /// The rate the operator set (`--ec2-*-rate`): the ceiling recovery climbs back to, and
    /// the base of the floor and of each step.
    configured: f64,
    /// The rate in force, calls per second.
    rate: f64,
    /// When the rate was last halved: a burst of throttled answers halves it only once a
    /// second (`None`: never).
    last_decrease: Option<Instant>,
}

impl Aimd {
    /// Starts at the configured rate.
    pub fn new(configured: f64) -> Aimd {
        Aimd { configured, rate: configured, last_decrease: None }
    }

    /// The rate in force.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// A throttled answer at `now`: halves the rate (not below the floor), unless it was
    /// halved less than a second ago. True when the rate changed.
    pub fn decrease(&mut self, now: Instant) -> bool {
        if self.last_decrease.is_some_and(|t| now.duration_since(t) < DECREASE_EVERY) {
            return false;
        }
        self.last_decrease = Some(now);
        let next = (self.rate / 2.0).max(self.configured * FLOOR_SHARE);
        let changed = next < self.rate;
        self.rate = next;
        changed
    }

    /// A successful call: adds a fiftieth of the configured rate, up to it. True when the
    /// rate changed.
    pub fn increase(&mut self) -> bool {
        let next = (self.rate + self.configured * INCREASE_SHARE).min(self.configured);
        let changed = next > self.rate;
        self.rate = next;
        changed
    }
}

/// A token bucket for one kind of call, with an adaptive refill rate.
#[derive(Debug)]
pub struct Bucket {
    /// The token bucket proper: hands out tokens at the rate in force.
    limiter: Ratelimiter,
    /// The tokens vpcrouter may hold: the burst less one kept in reserve.
    capacity: u64,
    /// The rate in force, lowered by throttled answers and raised by successes.
    aimd: Mutex<Aimd>,
    /// Throttled answers seen, for `/status`.
    throttled: AtomicU64,
}

fn per_period(rate: f64) -> u64 {
    ((rate * RATE_PERIOD.as_secs_f64()).round() as u64).max(1)
}

impl Bucket {
    /// A full bucket. One token of `burst` is kept in reserve: vpcrouter's clock and EC2's
    /// never agree to the millisecond, and a call that reaches EC2 a little earlier than
    /// the one sent before it must still find a token there.
    fn new(cfg: BucketConfig) -> Bucket {
        let capacity = u64::from(cfg.burst.saturating_sub(1).max(1));
        let rate = if cfg.rate.is_finite() && cfg.rate > 0.0 { cfg.rate } else { 1.0 };
        let limiter = Ratelimiter::builder(per_period(rate))
            .period(RATE_PERIOD)
            .max_tokens(capacity)
            .initial_available(capacity)
            .build()
            .unwrap_or_else(|_| Ratelimiter::new(rate.ceil() as u64));
        Bucket { limiter, capacity, aimd: Mutex::new(Aimd::new(rate)), throttled: AtomicU64::new(0) }
    }

    fn aimd(&self) -> std::sync::MutexGuard<'_, Aimd> {
        lock(&self.aimd)
    }

    /// Waits for one token.
    pub async fn take(&self) {
        loop {
            match self.limiter.try_wait() {
                Ok(()) => return,
                Err(TryWaitError::Insufficient(wait)) => tokio::time::sleep(wait).await,
                // Only while `throttled` empties the bucket; it is refilled at once.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// EC2 answered `RequestLimitExceeded`: the account's bucket is empty, so this one is
    /// emptied too, and its refill rate lowered.
    pub fn throttled(&self) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
        self.limiter.set_max_tokens(0);
        self.limiter.set_max_tokens(self.capacity);
        let mut aimd = self.aimd();
        if aimd.decrease(Instant::now()) {
            self.limiter.set_rate_per(per_period(aimd.rate()), RATE_PERIOD);
            tracing::warn!(
                rate_per_s = aimd.rate(),
                "EC2 throttled a call (RequestLimitExceeded): lowering vpcrouter's call rate"
            );
        }
    }

    /// A call succeeded: the refill rate recovers towards the configured one.
    pub fn succeeded(&self) {
        let mut aimd = self.aimd();
        if aimd.increase() {
            self.limiter.set_rate_per(per_period(aimd.rate()), RATE_PERIOD);
        }
    }

    /// The refill rate in force, calls per second.
    pub fn rate(&self) -> f64 {
        self.aimd().rate()
    }

    /// Throttled answers seen so far.
    pub fn throttled_count(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }
}

/// The read and write buckets and the cap on calls in flight; shared by every EC2 call.
#[derive(Debug)]
pub struct Limits {
    /// Describe calls.
    pub read: Bucket,
    /// Route writes.
    pub write: Bucket,
    /// The cap on calls in flight (`--ec2-max-in-flight`): one permit per call.
    slots: Arc<Semaphore>,
    /// The settings, as `/status` shows them.
    cfg: LimitsConfig,
}

impl Limits {
    /// Full buckets.
    pub fn new(cfg: LimitsConfig) -> Limits {
        let slots = Arc::new(Semaphore::new(cfg.max_in_flight.max(1)));
        Limits { read: Bucket::new(cfg.read), write: Bucket::new(cfg.write), slots, cfg }
    }

    /// Waits for a free in-flight slot; the call holds it until the permit is dropped.
    pub async fn slot(&self) -> OwnedSemaphorePermit {
        loop {
            if let Ok(p) = self.slots.clone().acquire_owned().await {
                return p;
            }
            // The semaphore is never closed; stay correct if it were.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A slot and a read token, for one Describe call (one page).
    pub async fn read_slot(&self) -> OwnedSemaphorePermit {
        let slot = self.slot().await;
        self.read.take().await;
        slot
    }

    /// The settings.
    pub fn config(&self) -> LimitsConfig {
        self.cfg
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.cfg.max_in_flight.max(1) - self.slots.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aimd_halves_once_per_second_down_to_a_floor_and_recovers_additively() {
        let t0 = Instant::now();
        let mut a = Aimd::new(5.0);
        assert!(a.decrease(t0));
        assert_eq!(a.rate(), 2.5);
        assert!(!a.decrease(t0 + Duration::from_millis(300)), "a burst of throttles is one signal");
        assert_eq!(a.rate(), 2.5);
        for i in 2..10u64 {
            a.decrease(t0 + Duration::from_secs(i));
        }
        assert_eq!(a.rate(), 5.0 / 16.0, "never below the floor");
        let mut successes = 0;
        while a.increase() {
            successes += 1;
        }
        assert_eq!(a.rate(), 5.0);
        assert_eq!(successes, 47, "0.3125 back to 5 in steps of 0.1");
        assert!(!a.increase(), "never above the configured rate");
    }

    #[tokio::test]
    async fn a_bucket_gives_its_burst_less_the_reserve_then_refills() {
        let b = Bucket::new(BucketConfig { burst: 5, rate: 50.0 });
        let t0 = Instant::now();
        for _ in 0..4 {
            b.take().await;
        }
        assert!(t0.elapsed() < Duration::from_millis(15), "the burst is at once: {:?}", t0.elapsed());
        for _ in 0..5 {
            b.take().await;
        }
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(90) && took < Duration::from_millis(200), "5 refills at 50/s: {took:?}");
    }

    #[tokio::test]
    async fn a_throttled_answer_empties_the_bucket_and_halves_the_rate() {
        let b = Bucket::new(BucketConfig { burst: 50, rate: 100.0 });
        b.throttled();
        assert_eq!((b.rate(), b.throttled_count()), (50.0, 1));
        let t0 = Instant::now();
        for _ in 0..5 {
            b.take().await;
        }
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(90), "the bucket was emptied: 5 tokens at 50/s took {took:?}");
        b.succeeded();
        assert_eq!(b.rate(), 52.0);
    }

    #[tokio::test]
    async fn slots_cap_the_calls_in_flight() {
        let l = Limits::new(LimitsConfig { max_in_flight: 2, ..LimitsConfig::default() });
        let a = l.slot().await;
        let _b = l.slot().await;
        assert_eq!(l.in_flight(), 2);
        let third = tokio::time::timeout(Duration::from_millis(50), l.slot()).await;
        assert!(third.is_err(), "a third call waits");
        drop(a);
        assert!(tokio::time::timeout(Duration::from_millis(50), l.slot()).await.is_ok());
    }
}
