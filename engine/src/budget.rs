//! The VPC port's call budget as the rest of the daemon speaks of it: the `--ec2-*` token
//! buckets, and what the EC2 adapter reports of its calls. Plain data, so that the status
//! (which shows it) need not depend on the adapter and its AWS SDK.

/// One bucket's settings: how many calls may go out at once, and the refill per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketConfig {
    /// Bucket size (EC2's burst).
    pub burst: u32,
    /// Refill, calls per second (> 0).
    pub rate: f64,
}

/// `--ec2-*` settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitsConfig {
    /// Describe calls.
    pub read: BucketConfig,
    /// CreateRoute, ReplaceRoute, DeleteRoute.
    pub write: BucketConfig,
    /// Calls in flight at once, reads and writes together.
    pub max_in_flight: usize,
}

impl Default for LimitsConfig {
    /// EC2's documented buckets; a full burst of writes may be in flight at once.
    fn default() -> Self {
        LimitsConfig {
            read: BucketConfig { burst: 100, rate: 20.0 },
            write: BucketConfig { burst: 50, rate: 5.0 },
            max_in_flight: 50,
        }
    }
}

/// One operation's counters, as the EC2 adapter reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallCount {
    /// e.g. `ReplaceRoute`.
    pub operation: &'static str,
    /// Calls made (attempts).
    pub calls: u64,
    /// Calls that failed, throttled ones included.
    pub errors: u64,
    /// Calls EC2 throttled (`RequestLimitExceeded` and the like).
    pub throttled: u64,
}

/// The EC2 adapter's counters and limits now, as `/status` and `/metrics` show them.
#[derive(Debug, Clone, Default)]
pub struct Ec2View {
    /// Counters per operation.
    pub calls: Vec<CallCount>,
    /// `--ec2-*` settings.
    pub limits: LimitsConfig,
    /// The read bucket's refill rate in force (lowered after throttled answers).
    pub read_rate: f64,
    /// The write bucket's refill rate in force.
    pub write_rate: f64,
    /// Calls in flight now.
    pub in_flight: usize,
}

impl Ec2View {
    /// Throttled answers, all operations.
    pub fn throttled(&self) -> u64 {
        self.calls.iter().map(|c| c.throttled).sum()
    }
}
