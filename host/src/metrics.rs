//! Histograms of `/metrics`, kept with the Prometheus client library: failover time and
//! EC2 call duration by operation. Counters and gauges are rendered from the state
//! snapshot in [`crate::status::metrics`]; these are appended to that text.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The `operation` label of EC2 call metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    /// e.g. `ReplaceRoute`.
    pub operation: &'static str,
}

/// EC2 call durations: 5 ms to about 20 s.
fn call_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

/// The histograms, shared by the engine, the EC2 adapter and the status server.
pub struct Metrics {
    /// From a health report that failed a router to the last route write acknowledged.
    pub failover_seconds: Histogram,
    /// Each EC2 call attempt, by operation.
    pub ec2_call_seconds: Family<Operation, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            // 50 ms to about 410 s: one write up to thousands of routes at the refill rate.
            failover_seconds: Histogram::new(exponential_buckets(0.05, 2.0, 14)),
            ec2_call_seconds: Family::new_with_constructor(call_histogram),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Records one EC2 call attempt.
    pub fn observe_call(&self, operation: &'static str, seconds: f64) {
        self.ec2_call_seconds.get_or_create(&Operation { operation }).observe(seconds);
    }

    /// The histograms in the Prometheus text format (without OpenMetrics' `# EOF`).
    pub fn encode(&self) -> String {
        let mut registry = Registry::default();
        registry.register(
            "vpcrouter_failover_seconds",
            "From the health report that failed (or made questionable) a router to the last route write acknowledged",
            self.failover_seconds.clone(),
        );
        registry.register(
            "vpcrouter_ec2_call_duration_seconds",
            "EC2 call attempts by operation, from sending to the answer",
            self.ec2_call_seconds.clone(),
        );
        let mut out = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut out, &registry).is_err() {
            return String::new();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_prometheus_text() {
        let m = Metrics::default();
        m.failover_seconds.observe(0.3);
        m.observe_call("ReplaceRoute", 0.1);
        m.observe_call("ReplaceRoute", 0.12);
        let text = m.encode();
        for line in [
            "# TYPE vpcrouter_failover_seconds histogram",
            "vpcrouter_failover_seconds_count 1",
            "vpcrouter_failover_seconds_bucket{le=\"0.4\"} 1",
            "vpcrouter_failover_seconds_bucket{le=\"0.2\"} 0",
            "vpcrouter_ec2_call_duration_seconds_count{operation=\"ReplaceRoute\"} 2",
            "vpcrouter_ec2_call_duration_seconds_bucket{le=\"0.16\",operation=\"ReplaceRoute\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        assert!(!text.contains("# EOF"), "{text}");
    }
}
