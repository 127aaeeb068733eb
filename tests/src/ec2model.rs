//! A model of real EC2's answer times and request throttling, applied by the
//! [`FaultProxy`](crate::faultproxy::FaultProxy) in front of moto.
//!
//! EC2 throttles each account with token buckets, one for non-mutating calls (`Describe*`:
//! 100 burst, 20 per second refill) and one for mutating calls (every other action, e.g.
//! `CreateRoute`, `ReplaceRoute`, `DeleteRoute`: 50 burst, 5 per second refill), and answers
//! in about 100 ms. [`Model::documented`] has those figures; [`Limiter`] applies them:
//!
//! * a call takes one token from its class's bucket when it arrives at the proxy;
//! * with no token left it is answered at once (no latency, not forwarded) with HTTP 503 and
//!   the EC2 error `RequestLimitExceeded`, like [`Fault::Throttle`](crate::faultproxy::Fault);
//! * otherwise the proxy waits the class's latency, *then* forwards the call to moto and
//!   answers: a write becomes visible in moto only after the modelled latency.
//!
//! Buckets start full and refill continuously (the `ratelimit` crate's lock-free token
//! bucket, rates expressed as tokens per 1000 s so that fractional rates are exact to
//! 0.001 token per second).

use std::time::Duration;

use anyhow::Context;
use ratelimit::Ratelimiter;

/// The period the `ratelimit` buckets count their rate over: rates are tokens per 1000 s.
const RATE_PERIOD: Duration = Duration::from_secs(1000);

/// A token bucket: `burst` tokens at most (and at start), refilled at `rate` per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// Capacity, and the tokens available at start.
    pub burst: u64,
    /// Refill rate, tokens per second (at least 0.001).
    pub rate: f64,
}

/// How the proxy models EC2: latency per class and a token bucket per class.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Model {
    /// Time from arrival to forwarding of a non-mutating (`Describe*`) call.
    pub read_latency: Duration,
    /// Time from arrival to forwarding of a mutating call.
    pub write_latency: Duration,
    /// Bucket of non-mutating calls.
    pub read_bucket: Bucket,
    /// Bucket of mutating calls.
    pub write_bucket: Bucket,
}

impl Model {
    /// EC2's documented throttling (reads 100 burst / 20 per s, writes 50 burst / 5 per s)
    /// with 150 ms per read and 100 ms per write.
    pub fn documented() -> Model {
        Model {
            read_latency: Duration::from_millis(150),
            write_latency: Duration::from_millis(100),
            read_bucket: Bucket { burst: 100, rate: 20.0 },
            write_bucket: Bucket { burst: 50, rate: 5.0 },
        }
    }

    /// The shortest time `n` writes can take from a full bucket when sent all at once and
    /// again as soon as tokens allow: the write latency while `n` ≤ burst, otherwise the
    /// latency plus the time to refill the `n − burst` missing tokens.
    pub fn write_bound(&self, n: u64) -> Duration {
        let missing = n.saturating_sub(self.write_bucket.burst) as f64;
        self.write_latency + Duration::from_secs_f64(missing / self.write_bucket.rate)
    }
}

impl Default for Model {
    fn default() -> Model {
        Model::documented()
    }
}

/// Read (non-mutating) or write (mutating) call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// `Describe*`.
    Read,
    /// Every other action.
    Write,
}

/// The class of an EC2 action: EC2's non-mutating actions (`Describe*`, `Get*`, `List*`,
/// `Search*`) read, everything else writes (including an unparsable `?`).
pub fn classify(action: &str) -> Class {
    if ["Describe", "Get", "List", "Search"].iter().any(|p| action.starts_with(p)) {
        Class::Read
    } else {
        Class::Write
    }
}

/// The model's verdict on one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// A token was taken: wait this long, then forward.
    Forward(Duration),
    /// The bucket is empty: answer `RequestLimitExceeded` at once, do not forward.
    Throttle,
}

/// A [`Model`] in force: its two buckets, shared by every connection (lock-free).
pub struct Limiter {
    model: Model,
    read: Ratelimiter,
    write: Ratelimiter,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("model", &self.model).finish_non_exhaustive()
    }
}

/// A full token bucket for `b`.
fn bucket(b: Bucket, what: &str) -> anyhow::Result<Ratelimiter> {
    anyhow::ensure!(
        b.rate.is_finite() && b.rate >= 0.001,
        "{what} bucket: rate {} must be at least 0.001 per second",
        b.rate
    );
    anyhow::ensure!(b.burst >= 1, "{what} bucket: burst must be at least 1");
    let per_period = (b.rate * RATE_PERIOD.as_secs_f64()).round() as u64;
    Ratelimiter::builder(per_period)
        .period(RATE_PERIOD)
        .max_tokens(b.burst)
        .initial_available(b.burst)
        .build()
        .with_context(|| format!("{what} bucket {b:?}"))
}

impl Limiter {
    /// Both buckets of `model`, full.
    pub fn new(model: Model) -> anyhow::Result<Limiter> {
        Ok(Limiter { model, read: bucket(model.read_bucket, "read")?, write: bucket(model.write_bucket, "write")? })
    }

    /// The model applied.
    pub fn model(&self) -> Model {
        self.model
    }

    /// Takes a token for one call of `action`, arriving now.
    pub fn admit(&self, action: &str) -> Admission {
        let (bucket, latency) = match classify(action) {
            Class::Read => (&self.read, self.model.read_latency),
            Class::Write => (&self.write, self.model.write_latency),
        };
        match bucket.try_wait() {
            Ok(()) => Admission::Forward(latency),
            Err(_) => Admission::Throttle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(burst: u64, rate: f64) -> Model {
        Model {
            read_bucket: Bucket { burst: 1000, rate: 1000.0 },
            write_bucket: Bucket { burst, rate },
            ..Model::documented()
        }
    }

    #[test]
    fn classes() {
        assert_eq!(classify("DescribeRouteTables"), Class::Read);
        assert_eq!(classify("GetManagedPrefixListEntries"), Class::Read);
        for a in ["CreateRoute", "ReplaceRoute", "DeleteRoute", "ModifyManagedPrefixList", "RunInstances", "?"] {
            assert_eq!(classify(a), Class::Write, "{a}");
        }
    }

    #[test]
    fn documented_figures_and_bound() {
        let m = Model::documented();
        assert_eq!(
            (m.read_bucket.burst, m.read_bucket.rate, m.write_bucket.burst, m.write_bucket.rate),
            (100, 20.0, 50, 5.0)
        );
        assert_eq!(m.write_bound(40), Duration::from_millis(100));
        assert_eq!(m.write_bound(2000), Duration::from_millis(100) + Duration::from_secs(390));
    }

    #[test]
    fn burst_then_throttle_then_refill() {
        let l = Limiter::new(small(5, 20.0)).expect("model");
        let admitted = (0..8).filter(|_| l.admit("ReplaceRoute") != Admission::Throttle).count();
        assert_eq!(admitted, 5, "a full bucket gives exactly its burst");
        assert_eq!(
            l.admit("DescribeVpcs"),
            Admission::Forward(Duration::from_millis(150)),
            "reads have their own bucket"
        );
        std::thread::sleep(Duration::from_millis(120)); // 2.4 tokens
        let admitted =
            (0..4).filter(|_| l.admit("CreateRoute") == Admission::Forward(Duration::from_millis(100))).count();
        assert_eq!(admitted, 2);
    }

    #[test]
    fn fractional_rates_and_bad_buckets() {
        assert!(Limiter::new(small(1, 0.25)).is_ok());
        assert!(Limiter::new(small(1, 0.0)).is_err());
        assert!(Limiter::new(small(0, 5.0)).is_err());
        assert!(Limiter::new(small(1, f64::NAN)).is_err());
    }
}
