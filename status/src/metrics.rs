//! `/metrics`, encoded with the Prometheus client library (`prometheus-client`) in the
//! Prometheus text format 0.0.4 or, when the scraper asks for it, in OpenMetrics text.
//!
//! Two kinds of families:
//! * instruments that code updates as things happen, in [`Metrics`]: the histograms of
//!   reconcile duration (engine), failover time (engine) and EC2 call duration by
//!   operation (EC2 adapter);
//! * families derived at scrape time from a status [`Snapshot`] (counters, gauges, info),
//!   plus the standard process metrics ([`process`]), by [`Scrape`], a
//!   `prometheus_client::collector::Collector`.
//!
//! Adding a family derived from the state: put what it needs in the [`Snapshot`] (or the
//! engine's [`vpcrouter_engine::status::Status`]), then add one call in the `Scrape` method
//! of its group (`routes`, `ec2`, `failovers`, `health`, `routers`, `cluster`,
//! `notifications`, ...; the order of the calls in `Scrape::families` is the order on
//! `/metrics`):
//! `f.counter(name, help, value)` / `f.gauge(...)` for one sample, `f.counters(name, help,
//! samples)` / `f.gauges(...)` with `([("label", value), ...], number)` pairs, or `f.info`.
//! Counter names are written with their `_total` suffix (the library adds it on output,
//! so it is taken off before registering); a labelled family without samples is left out.
//! Then list it in the README's Monitoring section and, if the dashboard or an alert uses
//! it, in `packaging/prometheus/`.

pub mod process;

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, EncodeMetric, MetricEncoder,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use vpcrouter_cluster::Role;

use crate::document::Snapshot;
use process::ProcessStats;

/// The `operation` label of EC2 call metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct Operation {
    /// e.g. `ReplaceRoute`.
    pub operation: &'static str,
}

/// EC2 call durations: 5 ms to about 20 s.
fn call_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

/// The instruments updated as things happen, shared by the engine, the EC2 adapter and
/// the status server (clones share the same values).
#[derive(Clone)]
pub struct Metrics {
    /// From a health report that failed a router to the last route write acknowledged.
    pub failover_seconds: Histogram,
    /// Each reconcile, from its start to its end (read, plan, writes), failed ones too.
    pub reconcile_seconds: Histogram,
    /// Each EC2 call attempt, by operation.
    pub ec2_call_seconds: Family<Operation, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            // 50 ms to about 410 s: one write up to thousands of routes at the refill rate.
            failover_seconds: Histogram::new(exponential_buckets(0.05, 2.0, 14)),
            // 10 ms to about 164 s: a read and plan up to a failover's writes.
            reconcile_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 15)),
            ec2_call_seconds: Family::new_with_constructor(call_histogram),
        }
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Records one EC2 call attempt.
    pub fn observe_call(&self, operation: &'static str, seconds: f64) {
        self.ec2_call_seconds.get_or_create(&Operation { operation }).observe(seconds);
    }
}

/// The exposition formats `/metrics` serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposition {
    /// The Prometheus text format 0.0.4 (what curl and `promtool check metrics` get).
    Text,
    /// OpenMetrics text 1.0.0 (what Prometheus asks for first).
    OpenMetrics,
}

impl Exposition {
    /// OpenMetrics when `Accept` names it (Prometheus' scrapes do), else text 0.0.4.
    pub fn negotiate(accept: Option<&str>) -> Exposition {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Exposition::OpenMetrics,
            _ => Exposition::Text,
        }
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// `/metrics` for one scrape: every family, in `format`. `process` is `None` where
/// `/proc` could not be read (those families are then left out).
pub fn encode(snap: Snapshot, metrics: &Metrics, process: Option<ProcessStats>, format: Exposition) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape { snap, metrics: metrics.clone(), process }));
    let mut out = String::new();
    let encoded = match format {
        Exposition::Text => prometheus_client::encoding::prometheus_text::encode(&mut out, &registry),
        Exposition::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
    };
    if let Err(e) = encoded {
        // Writing to a String does not fail; a family that cannot encode is a bug.
        tracing::error!(error = %e, "cannot encode /metrics");
    }
    out
}

/// One scrape's families: the snapshot, the instruments and the process metrics.
#[derive(Debug)]
pub struct Scrape {
    /// The daemon's state at the scrape: the counters, gauges and infos derived from it.
    snap: Snapshot,
    /// The live histograms, encoded as they stand.
    metrics: Metrics,
    /// The process metrics; `None` where `/proc` could not be read (the families are left out).
    process: Option<ProcessStats>,
}

impl Collector for Scrape {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        self.families(&mut Families(encoder))
    }
}

/// A label set: `[("label", value), ...]`.
type Labels<'a, const N: usize> = [(&'static str, &'a str); N];

impl Scrape {
    /// Every family, in the order `/metrics` shows them.
    fn families(&self, f: &mut Families<'_>) -> fmt::Result {
        self.build_and_plugins(f)?;
        self.routes(f)?;
        self.ec2(f)?;
        self.failovers(f)?;
        self.health(f)?;
        self.routers(f)?;
        self.reconcile_timing(f)?;
        self.cluster(f)?;
        self.notifications(f)?;
        self.process(f)
    }

    /// The build and the loaded plugins, as info families.
    fn build_and_plugins(&self, f: &mut Families<'_>) -> fmt::Result {
        f.info("vpcrouter_build_info", "vpcrouter's version (always 1).", &[("version", crate::VERSION)])?;
        let plugins =
            self.snap.plugins.iter().map(|p| [("plugin", p.name.as_str()), ("kind", p.kind), ("version", &p.version)]);
        f.infos("vpcrouter_plugin_info", "The loaded plugins with their kind and version (always 1).", plugins)
    }

    /// The engine's reconciles and what they changed: routes, prefix lists, table weights.
    fn routes(&self, f: &mut Families<'_>) -> fmt::Result {
        let st = &self.snap.status;
        f.counter("vpcrouter_reconciles_total", "Reconciles started.", st.reconciles)?;
        f.counter(
            "vpcrouter_reconcile_errors_total",
            "Reconciles that failed (EC2 read or route change errors).",
            st.errors,
        )?;
        let changes = [("create", st.created), ("replace", st.replaced), ("delete", st.deleted)];
        f.counters(
            "vpcrouter_route_changes_total",
            "Route changes made in EC2, by kind.",
            changes.map(|(k, n)| ([("kind", k)], n)),
        )?;
        f.counter(
            "vpcrouter_prefix_list_changes_total",
            "Prefix lists created, modified or deleted in EC2 (--prefix-lists).",
            st.list_changes,
        )?;
        f.gauges(
            "vpcrouter_route_table_weight",
            "Routes a managed route table holds against its quota (a prefix-list route counts its list's max entries).",
            st.weights.iter().map(|(rtb, w)| ([("route_table", rtb.as_str())], u64::from(*w))),
        )?;
        f.gauges(
            "vpcrouter_managed_routes",
            "Managed routes (CIDRs and prefix lists) in each route table after the last reconcile.",
            st.tables.iter().map(|(rtb, routes)| ([("route_table", rtb.as_str())], routes.len() as u64)),
        )?;
        let entries = st.lists.iter().filter_map(|l| {
            Some(([("list", l.list_id.as_deref()?), ("group", l.group.as_str())], l.members.len() as u64))
        });
        f.gauges("vpcrouter_prefix_list_entries", "CIDRs of each group's prefix list (--prefix-lists).", entries)
    }

    /// The EC2 adapter: calls, errors and throttling by operation, rate limits, durations.
    fn ec2(&self, f: &mut Families<'_>) -> fmt::Result {
        let ec2 = &self.snap.ec2;
        let by_op = |get: fn(&vpcrouter_engine::CallCount) -> u64| {
            ec2.calls.iter().map(move |c| ([("operation", c.operation)], get(c)))
        };
        f.counters("vpcrouter_ec2_calls_total", "EC2 API calls, by operation.", by_op(|c| c.calls))?;
        f.counters("vpcrouter_ec2_errors_total", "EC2 API calls that failed, by operation.", by_op(|c| c.errors))?;
        f.counters(
            "vpcrouter_ec2_throttled_total",
            "EC2 API calls answered RequestLimitExceeded (throttled), by operation.",
            by_op(|c| c.throttled),
        )?;
        f.gauges(
            "vpcrouter_ec2_call_rate_limit",
            "Refill rate in force of vpcrouter's EC2 token buckets, calls per second (lowered after throttled answers).",
            [([("kind", "read")], ec2.read_rate), ([("kind", "write")], ec2.write_rate)],
        )?;
        f.gauge("vpcrouter_ec2_calls_in_flight", "EC2 calls in flight now.", ec2.in_flight as u64)?;
        f.histogram(
            "vpcrouter_ec2_call_duration_seconds",
            "EC2 call attempts by operation, from sending to the answer.",
            &self.metrics.ec2_call_seconds,
        )
    }

    /// Failovers and the plan revisions, withdrawn writes and lagging reads around them.
    fn failovers(&self, f: &mut Families<'_>) -> fmt::Result {
        let st = &self.snap.status;
        f.counter(
            "vpcrouter_failovers_total",
            "Failovers: route moves off failed or questionable routers after a health change.",
            st.failovers,
        )?;
        f.counter(
            "vpcrouter_plan_revisions_total",
            "Plans revised while being written, because an event (a router failing, a new spec, a drain) changed the facts.",
            st.revisions,
        )?;
        f.counter(
            "vpcrouter_writes_withdrawn_total",
            "Route writes not yet started that a revision of the plan withdrew (the new facts made them wrong).",
            st.withdrawn,
        )?;
        f.counter(
            "vpcrouter_lagging_reads_total",
            "Route changes a read did not show yet within the consistency window: kept as written, not written again.",
            st.lagging_reads,
        )?;
        f.histogram(
            "vpcrouter_failover_seconds",
            "From the health report that failed (or made questionable) a router to the last route write acknowledged.",
            &self.metrics.failover_seconds,
        )
    }

    /// The health plugins' checks and the hosts reported failed or questionable.
    fn health(&self, f: &mut Families<'_>) -> fmt::Result {
        let st = &self.snap.status;
        let health: Vec<_> = self.snap.plugins.iter().filter(|p| p.kind == "health").collect();
        let stat = |p: &crate::document::PluginView| p.health.as_ref().map_or((0, 0), |h| (h.checks, h.failures));
        f.counters(
            "vpcrouter_health_checks_total",
            "Health checks made, by health plugin.",
            health.iter().map(|p| ([("plugin", p.name.as_str())], stat(p).0)),
        )?;
        f.counters(
            "vpcrouter_health_check_failures_total",
            "Health checks that failed, by health plugin.",
            health.iter().map(|p| ([("plugin", p.name.as_str())], stat(p).1)),
        )?;
        f.gauge("vpcrouter_failed_hosts", "Hosts currently reported failed.", st.failed.len() as u64)?;
        f.gauge("vpcrouter_questionable_hosts", "Hosts currently reported questionable.", st.questionable.len() as u64)
    }

    /// Each router and CIDR of the route spec: up, drained, healthy candidates.
    fn routers(&self, f: &mut Families<'_>) -> fmt::Result {
        let st = &self.snap.status;
        let healthy = |ip: &Ipv4Addr| !st.failed.contains(ip) && !st.questionable.contains(ip);
        let routers: BTreeSet<Ipv4Addr> =
            st.spec.routes.iter().flat_map(|r| r.hosts.iter().map(|h| h.addr())).collect();
        let names: Vec<(String, u64)> = routers.iter().map(|ip| (ip.to_string(), u64::from(healthy(ip)))).collect();
        f.gauges(
            "vpcrouter_router_up",
            "Each router of the route spec: 1 when healthy, 0 when reported failed or questionable.",
            names.iter().map(|(ip, up)| ([("router", ip.as_str())], *up)),
        )?;
        let drained: BTreeSet<Ipv4Addr> = self.snap.drains.iter().map(|d| d.ip).collect();
        let usable = |ip: &Ipv4Addr| healthy(ip) && !drained.contains(ip);
        let cidrs: Vec<(String, u64)> = st
            .spec
            .routes
            .iter()
            .map(|r| (r.cidr.to_string(), r.hosts.iter().filter(|h| usable(&h.addr())).count() as u64))
            .collect();
        f.gauges(
            "vpcrouter_cidr_healthy_candidates",
            "Each CIDR of the route spec: its candidate routers neither failed, questionable nor drained.",
            cidrs.iter().map(|(cidr, n)| ([("cidr", cidr.as_str())], *n)),
        )?;
        let drained: Vec<String> = drained.iter().map(Ipv4Addr::to_string).collect();
        f.gauges(
            "vpcrouter_router_drained",
            "1 for each drained router (maintenance mode: not a candidate until undrained).",
            drained.iter().map(|ip| ([("router", ip.as_str())], 1u64)),
        )?;
        f.gauge("vpcrouter_drained_routers", "Routers drained now.", drained.len() as u64)
    }

    /// How long reconciles take, and when and how long the last one was.
    fn reconcile_timing(&self, f: &mut Families<'_>) -> fmt::Result {
        let (took, at) =
            self.snap.status.last_reconcile.map_or((0.0, 0.0), |(t, d)| (d.as_secs_f64(), unix_seconds(t)));
        f.histogram(
            "vpcrouter_reconcile_duration_seconds",
            "Reconciles, failed ones included, from start to end (VPC read, plan and route changes).",
            &self.metrics.reconcile_seconds,
        )?;
        f.gauge(
            "vpcrouter_last_reconcile_duration_seconds",
            "How long the last reconcile took (0 before the first).",
            took,
        )?;
        f.gauge(
            "vpcrouter_last_reconcile_timestamp_seconds",
            "When the last reconcile ended, Unix time (0 before the first).",
            at,
        )
    }

    /// The cluster (role, leader, members, etcd requests); left out without a cluster.
    fn cluster(&self, f: &mut Families<'_>) -> fmt::Result {
        let Some(c) = &self.snap.cluster else { return Ok(()) };
        let role = |r: Role| ([("role", r.as_str())], u64::from(c.role == r));
        f.gauges(
            "vpcrouter_cluster_role",
            "This instance's cluster role (1 for the current one).",
            [Role::Leader, Role::Follower, Role::Disconnected].map(role),
        )?;
        let leader = c.leader.as_deref().map(|l| [("leader", l)]);
        f.infos("vpcrouter_cluster_leader_info", "The current leader's instance id, as a label.", leader)?;
        f.gauge("vpcrouter_cluster_members", "Live members of the cluster.", c.members.len() as u64)?;
        f.gauge(
            "vpcrouter_cluster_health_reports",
            "Live health reports the quorum is taken over.",
            c.reports.len() as u64,
        )?;
        f.counter("vpcrouter_cluster_leader_changes_total", "New leaders seen since start.", c.leader_changes)?;
        f.counter(
            "vpcrouter_etcd_requests_total",
            "Requests sent to etcd (calls and lease keep-alives).",
            c.etcd_requests,
        )
    }

    /// The notifiers (`--notify`): each one's events by outcome, all three even at 0; left
    /// out without notifiers.
    fn notifications(&self, f: &mut Families<'_>) -> fmt::Result {
        let samples = self.snap.notifiers.iter().flat_map(|n| {
            [("delivered", n.delivered), ("failed", n.failed), ("dropped", n.dropped)]
                .map(|(outcome, count)| ([("notifier", n.name.as_str()), ("outcome", outcome)], count))
        });
        f.counters(
            "vpcrouter_notifications_total",
            "Notification events (--notify) by notifier and outcome: delivered, failed (the notifier gave up on it), dropped (its queue was full, or it was still queued at shutdown).",
            samples,
        )
    }

    /// The standard process metrics; left out where `/proc` could not be read.
    fn process(&self, f: &mut Families<'_>) -> fmt::Result {
        let Some(p) = &self.process else { return Ok(()) };
        f.counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", p.cpu_seconds)?;
        f.gauge("process_resident_memory_bytes", "Resident memory size in bytes.", p.resident_bytes)?;
        f.gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", p.virtual_bytes)?;
        f.gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
        )?;
        f.gauge("process_open_fds", "Number of open file descriptors.", p.open_fds)?;
        if let Some(max) = p.max_fds {
            f.gauge("process_max_fds", "Maximum number of open file descriptors.", max)?;
        }
        Ok(())
    }
}

/// Writes families through the library's encoder (see the module doc).
struct Families<'a>(DescriptorEncoder<'a>);

impl Families<'_> {
    fn descriptor(
        &mut self,
        name: &'static str,
        help: &str,
        kind: MetricType,
    ) -> Result<MetricEncoder<'_>, fmt::Error> {
        // The library appends `_total` to counters and `_info` to infos.
        let suffix = match kind {
            MetricType::Counter => "_total",
            MetricType::Info => "_info",
            _ => "",
        };
        debug_assert!(name.ends_with(suffix), "{name} must end in {suffix}");
        self.0.encode_descriptor(name.strip_suffix(suffix).unwrap_or(name), help, None, kind)
    }

    /// A counter without labels.
    fn counter(&mut self, name: &'static str, help: &str, value: impl EncodeCounterValue) -> fmt::Result {
        ConstCounter::new(value).encode(self.descriptor(name, help, MetricType::Counter)?)
    }

    /// A gauge without labels.
    fn gauge(&mut self, name: &'static str, help: &str, value: impl EncodeGaugeValue) -> fmt::Result {
        ConstGauge::new(value).encode(self.descriptor(name, help, MetricType::Gauge)?)
    }

    /// A labelled counter family; left out without samples.
    fn counters<L: EncodeLabelSet, V: EncodeCounterValue>(
        &mut self,
        name: &'static str,
        help: &str,
        samples: impl IntoIterator<Item = (L, V)>,
    ) -> fmt::Result {
        let samples = samples.into_iter().map(|(l, v)| (l, ConstCounter::new(v)));
        self.labelled(name, help, MetricType::Counter, samples)
    }

    /// A labelled gauge family; left out without samples.
    fn gauges<L: EncodeLabelSet, V: EncodeGaugeValue>(
        &mut self,
        name: &'static str,
        help: &str,
        samples: impl IntoIterator<Item = (L, V)>,
    ) -> fmt::Result {
        let samples = samples.into_iter().map(|(l, v)| (l, ConstGauge::new(v)));
        self.labelled(name, help, MetricType::Gauge, samples)
    }

    /// A labelled family of `kind`; left out without samples.
    fn labelled<L: EncodeLabelSet, M: EncodeMetric>(
        &mut self,
        name: &'static str,
        help: &str,
        kind: MetricType,
        samples: impl IntoIterator<Item = (L, M)>,
    ) -> fmt::Result {
        let samples: Vec<_> = samples.into_iter().collect();
        if samples.is_empty() {
            return Ok(());
        }
        let mut m = self.descriptor(name, help, kind)?;
        for (labels, metric) in samples {
            metric.encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// An info family of one sample (a gauge of 1 in the text format 0.0.4).
    fn info<const N: usize>(&mut self, name: &'static str, help: &str, labels: &Labels<'_, N>) -> fmt::Result {
        self.infos(name, help, [*labels])
    }

    /// An info family, one sample per label set; left out without samples.
    fn infos<L: EncodeLabelSet>(
        &mut self,
        name: &'static str,
        help: &str,
        samples: impl IntoIterator<Item = L>,
    ) -> fmt::Result {
        let samples: Vec<_> = samples.into_iter().collect();
        if samples.is_empty() {
            return Ok(());
        }
        let mut m = self.descriptor(name, help, MetricType::Info)?;
        for labels in samples {
            m.encode_info(&labels)?;
        }
        Ok(())
    }

    /// A live instrument (a histogram, or a family of them).
    fn histogram(&mut self, name: &'static str, help: &str, metric: &impl EncodeMetric) -> fmt::Result {
        metric.encode(self.descriptor(name, help, metric.metric_type())?)
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs_f64()
}

#[cfg(test)]
mod tests;

/// The engine's observer: its durations go to the histograms.
impl vpcrouter_engine::Observer for Metrics {
    fn failover_seconds(&self, seconds: f64) {
        self.failover_seconds.observe(seconds);
    }

    fn reconcile_seconds(&self, seconds: f64) {
        self.reconcile_seconds.observe(seconds);
    }

    fn call_seconds(&self, operation: &'static str, seconds: f64) {
        self.observe_call(operation, seconds);
    }
}
