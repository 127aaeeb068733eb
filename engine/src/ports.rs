//! The engine's seams to the outside world. The host implements them with the EC2 adapter
//! and the etcd session; the engine's tests with fakes.
//!
//! The clock is not a trait: the engine reads and sleeps on tokio's clock
//! (`tokio::time`), which a test pauses (`#[tokio::test(start_paused = true)]`) so that
//! time advances exactly, and only when every task waits.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use vpcrouter_planner::model::{Applied, RouteAction, VpcState};

use crate::quorum::{Quorum, Report};

/// A boxed future, as the ports return them (they are used as trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The VPC: its route tables read at once, and writes one at a time.
///
/// A write is started in two steps so that the engine can change its mind until the last
/// moment: [`Vpc::admit`] waits until the budget allows a write (a token of the write
/// bucket, a slot of the in-flight cap) and may be dropped at any time; [`Vpc::write`]
/// then sends the action the engine chose at that moment.
pub trait Vpc: Send + Sync {
    /// Reads the state of the VPC (route tables, instances, interfaces, prefix lists),
    /// retrying throttled and transient answers.
    fn read(&self) -> BoxFuture<'_, Result<VpcState, VpcError>>;

    /// Waits until a write may start. Dropping the future gives nothing up; a permit that
    /// is not used may be kept for a later write.
    fn admit(&self) -> BoxFuture<'_, Permit>;

    /// Sends one action, retrying throttled and transient answers, and not sending a retry
    /// that could not be answered before `deadline` (cluster mode: the leader's lease).
    fn write(&self, permit: Permit, action: RouteAction, deadline: Option<Instant>) -> BoxFuture<'static, Written>;

    /// How long a write is expected to take (about twice the smoothed latency): no write
    /// is started closer than this to a deadline.
    fn expected_write(&self) -> Duration;
}

/// The right to start one write, from [`Vpc::admit`]: whatever the implementation holds
/// for it (an in-flight slot), released when dropped.
pub struct Permit(#[allow(dead_code)] Box<dyn Send>);

impl Permit {
    /// A permit holding `hold` until the write it starts ends.
    pub fn new(hold: impl Send + 'static) -> Permit {
        Permit(Box::new(hold))
    }
}

/// What one write did.
#[derive(Debug)]
pub struct Written {
    /// How it ended.
    pub outcome: WriteOutcome,
    /// Calls sent, retries included.
    pub calls: u64,
    /// Answers that were throttling.
    pub throttled: u64,
}

/// How one write ended.
#[derive(Debug)]
pub enum WriteOutcome {
    /// Acknowledged, with what the state needs of the answer.
    Done(Applied),
    /// Refused, or the retries ran out.
    Failed(VpcError),
    /// A retry was not sent because it could not be answered before the deadline.
    NotStarted,
    /// Still unanswered at the deadline: abandoned (the VPC may or may not have applied it).
    Abandoned,
}

/// A read or write the VPC refused, or that failed after the retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct VpcError {
    /// What went wrong and what to do, for the log and `/status`.
    pub message: String,
    /// The refusal shows that the state planned from was stale (a route or table gone, a
    /// route already there): the engine reads again.
    pub stale: bool,
    /// The VPC was unavailable (after the retries): a read now would fail the same way.
    pub transient: bool,
}

/// The cluster's leadership, in cluster mode: the engine writes only while it leads.
pub trait Leadership: Send + Sync {
    /// `--health-quorum`: how many instances' views must agree.
    fn quorum(&self) -> Quorum;

    /// Publishes this instance's own health view to the other instances.
    fn publish(&self, report: Report);

    /// Confirms that this instance still leads; returns until when that is known to hold
    /// (no write may be started that would not be answered before it).
    fn confirm(&self) -> BoxFuture<'_, Result<Instant, String>>;
}

/// Observations of durations, for the metrics' histograms (counters are in the status).
pub trait Observer: Send + Sync {
    /// A failover: health report to the last write acknowledged.
    fn failover_seconds(&self, seconds: f64);
    /// A reconcile, from its start to its end.
    fn reconcile_seconds(&self, seconds: f64);
    /// One EC2 call (`operation`, e.g. `ReplaceRoute`), sent to answered, as the EC2 adapter
    /// reports it.
    fn call_seconds(&self, operation: &'static str, seconds: f64);
}

/// An observer that keeps nothing.
impl Observer for () {
    fn failover_seconds(&self, _: f64) {}
    fn reconcile_seconds(&self, _: f64) {}
    fn call_seconds(&self, _: &'static str, _: f64) {}
}
