//! Shared parts of the bundled probing health plugins (`icmpecho`, `tcp`).
//!
//! * [`parse_interval`]: the `--*_check_interval` rules (default 2 s, 0.1 ..= 3600 s);
//! * [`Tracker`]: probe rounds, their deadlines, per-host verdicts and the hold-down
//!   ("a failed host stays failed for 10 × interval after its last failure");
//! * [`Publisher`]: sends the FULL [`HealthReport`] when it changes, and logs it;
//! * [`Stats`]: counters for the status server (`"stats": {"checks", "failures", ...}`).

#![deny(unsafe_code)]

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vpcrouter_plugin_api::{HealthReport, HostList, Logger, PluginArgs, RSender, RString};

/// Default `--*_check_interval`, seconds.
pub const DEFAULT_INTERVAL: f64 = 2.0;
/// Smallest accepted interval (the original allowed 1 s; fractions are an extension).
pub const MIN_INTERVAL: f64 = 0.1;
/// Largest accepted interval.
pub const MAX_INTERVAL: f64 = 3600.0;
/// A failed host stays failed this many intervals after its last failed check.
pub const HOLD_DOWN_INTERVALS: f64 = 10.0;
/// A probe is answered in time when the answer comes within this share of the interval.
pub const TIMEOUT_SHARE: f64 = 0.75;

/// Probes per host per interval when nothing limits them: rounds overlap, so a host that
/// stops answering is noticed 0.75 to 1.0 interval after its last answer.
pub const PROBES_PER_INTERVAL: u32 = 4;

/// Probes per host per interval for `hosts` hosts checked every `interval` seconds,
/// lowered from [`PROBES_PER_INTERVAL`] so that at most `max_per_sec` probes go out per
/// second, but never below one.
pub fn probes_per_interval(hosts: usize, interval: f64, max_per_sec: f64) -> u32 {
    let affordable = (max_per_sec * interval / hosts.max(1) as f64).floor();
    (affordable as u32).clamp(1, PROBES_PER_INTERVAL)
}

/// Parses the interval option `name` (default 2); the error names the option and range.
pub fn parse_interval(args: &PluginArgs, name: &str) -> Result<f64, String> {
    let secs = args.parse::<f64>(name)?.unwrap_or(DEFAULT_INTERVAL);
    if !secs.is_finite() || !(MIN_INTERVAL..=MAX_INTERVAL).contains(&secs) {
        return Err(format!(
            "--{name} must be between {MIN_INTERVAL} and {MAX_INTERVAL} seconds (got {})",
            args.get(name).unwrap_or_default()
        ));
    }
    Ok(secs)
}

/// The IPv4 addresses of a host list; entries that are not IPv4 are returned separately.
pub fn parse_hosts(list: &HostList) -> (Vec<Ipv4Addr>, Vec<String>) {
    let mut good = Vec::with_capacity(list.hosts.len());
    let mut bad = Vec::new();
    for h in list.hosts.iter() {
        match vpcrouter_plugin_api::spec::parse_ipv4(h) {
            Some(ip) => good.push(ip),
            None => bad.push(h.to_string()),
        }
    }
    good.sort_unstable();
    good.dedup();
    (good, bad)
}

/// Comma-joined addresses, for log lines.
pub fn joined(ips: &[Ipv4Addr]) -> String {
    ips.iter().map(|ip| ip.to_string()).collect::<Vec<_>>().join(",")
}

/// A verdict change of one host, for log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The host missed a check after answering (or at its first check).
    Failed(Ipv4Addr),
    /// The host answered a check after failing.
    Answering(Ipv4Addr),
}

#[derive(Debug, Default)]
struct Host {
    /// Bit `r % 64` is set while round `r` has a probe out to this host.
    outstanding: u64,
    /// The newest round answered in time.
    answered: Option<u64>,
    /// When the last check failed.
    last_failure: Option<Instant>,
    /// The last check failed.
    down: bool,
}

/// Probe rounds, verdicts and hold-down for one set of hosts.
///
/// A probing plugin starts a round ([`Tracker::start_round`]), sends one probe per host
/// ([`Tracker::probed`]) and feeds in answers ([`Tracker::answer`]) and definite
/// refusals ([`Tracker::refused`]). When a round's deadline passes ([`Tracker::expire`]),
/// every host probed in it that has not answered this or a later round has failed a
/// check. [`Tracker::failed`] lists hosts whose last failed check is less than the
/// hold-down old; they are still probed meanwhile.
#[derive(Debug)]
pub struct Tracker {
    timeout: Duration,
    hold: Duration,
    hosts: BTreeMap<Ipv4Addr, Host>,
    /// Rounds still waiting for their deadline: (round, deadline), oldest first.
    rounds: VecDeque<(u64, Instant)>,
    next_round: u64,
    /// Probes sent.
    pub checks: u64,
    /// Checks failed.
    pub failures: u64,
}

impl Tracker {
    /// A tracker whose probes time out after `timeout` and whose failures last `hold`.
    pub fn new(timeout: Duration, hold: Duration) -> Tracker {
        Tracker {
            timeout,
            hold,
            hosts: BTreeMap::new(),
            rounds: VecDeque::new(),
            next_round: 0,
            checks: 0,
            failures: 0,
        }
    }

    /// Replaces the host list; hosts that stay keep their state.
    pub fn set_hosts(&mut self, hosts: &[Ipv4Addr]) {
        let mut old = std::mem::take(&mut self.hosts);
        self.hosts = hosts.iter().map(|ip| (*ip, old.remove(ip).unwrap_or_default())).collect();
    }

    /// The hosts being checked, sorted.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.hosts.keys().copied()
    }

    /// Number of hosts being checked.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// True when no host is checked.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Starts a round at `now`; returns its number.
    pub fn start_round(&mut self, now: Instant) -> u64 {
        let r = self.next_round;
        self.next_round += 1;
        self.rounds.push_back((r, now + self.timeout));
        r
    }

    /// The deadline of an outstanding round.
    pub fn deadline(&self, round: u64) -> Option<Instant> {
        self.rounds.iter().find(|(r, _)| *r == round).map(|(_, d)| *d)
    }

    /// The earliest deadline of an outstanding round.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.rounds.front().map(|(_, d)| *d)
    }

    /// Number of rounds still waiting for their deadline.
    pub fn outstanding_rounds(&self) -> usize {
        self.rounds.len()
    }

    /// Records that `ip` was probed in `round`.
    pub fn probed(&mut self, ip: Ipv4Addr, round: u64) {
        if let Some(h) = self.hosts.get_mut(&ip) {
            h.outstanding |= 1 << (round % 64);
            self.checks += 1;
        }
    }

    /// Records an answer of `ip` to `round` at `now`; false when it is late or unknown.
    pub fn answer(&mut self, ip: Ipv4Addr, round: u64, now: Instant) -> bool {
        let Some(deadline) = self.deadline(round) else { return false };
        let Some(h) = self.hosts.get_mut(&ip) else { return false };
        if now > deadline || h.outstanding & (1 << (round % 64)) == 0 {
            return false;
        }
        h.answered = Some(h.answered.map_or(round, |a| a.max(round)));
        true
    }

    /// Records a definite failure of `ip`'s probe in `round` (refused, unreachable) at
    /// `now`, unless a later round was already answered.
    pub fn refused(&mut self, ip: Ipv4Addr, round: u64, now: Instant) -> Option<Change> {
        let h = self.hosts.get_mut(&ip)?;
        let bit = 1 << (round % 64);
        if h.outstanding & bit == 0 || h.answered.is_some_and(|a| a >= round) {
            return None;
        }
        h.outstanding &= !bit;
        Self::fail(h, ip, now, &mut self.failures)
    }

    fn fail(h: &mut Host, ip: Ipv4Addr, now: Instant, failures: &mut u64) -> Option<Change> {
        *failures += 1;
        h.last_failure = Some(now);
        (!std::mem::replace(&mut h.down, true)).then_some(Change::Failed(ip))
    }

    /// Judges every round whose deadline is at or before `now`; returns verdict changes.
    pub fn expire(&mut self, now: Instant) -> Vec<Change> {
        let mut changes = Vec::new();
        while let Some(&(round, deadline)) = self.rounds.front() {
            if deadline > now {
                break;
            }
            self.rounds.pop_front();
            let bit = 1 << (round % 64);
            for (ip, h) in self.hosts.iter_mut() {
                if h.outstanding & bit == 0 {
                    continue;
                }
                h.outstanding &= !bit;
                if h.answered.is_some_and(|a| a >= round) {
                    if std::mem::replace(&mut h.down, false) {
                        changes.push(Change::Answering(*ip));
                    }
                } else if let Some(c) = Self::fail(h, *ip, now, &mut self.failures) {
                    changes.push(c);
                }
            }
        }
        changes
    }

    /// Hosts whose last failed check is less than the hold-down before `now`, sorted.
    pub fn failed(&self, now: Instant) -> Vec<Ipv4Addr> {
        self.hosts
            .iter()
            .filter(|(_, h)| h.last_failure.is_some_and(|t| now < t + self.hold))
            .map(|(ip, _)| *ip)
            .collect()
    }
}

/// Counters and the last report, shared between a plugin's thread and `info()`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Host checks (probes) done.
    pub checks: AtomicU64,
    /// Host checks that failed.
    pub failures: AtomicU64,
    /// Reports sent.
    pub reports: AtomicU64,
    /// Hosts checked now.
    pub hosts: AtomicU64,
    failed: Mutex<Vec<Ipv4Addr>>,
}

impl Stats {
    fn failed_list(&self) -> MutexGuard<'_, Vec<Ipv4Addr>> {
        self.failed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies the tracker's counters.
    pub fn update(&self, t: &Tracker) {
        self.checks.store(t.checks, Ordering::Relaxed);
        self.failures.store(t.failures, Ordering::Relaxed);
        self.hosts.store(t.len() as u64, Ordering::Relaxed);
    }

    /// The `"stats"` object: `checks`, `failures`, `reports_sent`, `hosts`, `failed`.
    pub fn json(&self) -> serde_json::Value {
        let failed: Vec<String> = self.failed_list().iter().map(|ip| ip.to_string()).collect();
        serde_json::json!({
            "checks": self.checks.load(Ordering::Relaxed),
            "failures": self.failures.load(Ordering::Relaxed),
            "reports_sent": self.reports.load(Ordering::Relaxed),
            "hosts": self.hosts.load(Ordering::Relaxed),
            "failed": failed,
        })
    }
}

/// Sends full reports when they change, and logs them like vpc-router did.
pub struct Publisher {
    log: Logger,
    reports: RSender<HealthReport>,
    last: Option<Vec<Ipv4Addr>>,
}

impl Publisher {
    /// A publisher sending on `reports`.
    pub fn new(log: Logger, reports: RSender<HealthReport>) -> Publisher {
        Publisher { log, reports, last: None }
    }

    /// Sends `failed` (sorted) unless it equals the last report; false when the host
    /// closed the queue.
    pub fn publish(&mut self, failed: Vec<Ipv4Addr>, stats: &Stats) -> bool {
        if self.last.as_ref() == Some(&failed) {
            return true;
        }
        if failed.is_empty() {
            self.log.info("All monitored hosts are healthy");
        } else {
            self.log.info(format!("Currently failed IPs: {}", joined(&failed)));
        }
        let report = HealthReport {
            failed: failed.iter().map(|ip| RString::from(ip.to_string())).collect(),
            questionable: Default::default(),
        };
        stats.reports.fetch_add(1, Ordering::Relaxed);
        *stats.failed_list() = failed.clone();
        self.last = Some(failed);
        self.reports.send(report).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn intervals_default_and_range() {
        let args = |v: &str| PluginArgs::from_pairs([("x_interval", v)]);
        assert_eq!(parse_interval(&PluginArgs::default(), "x_interval"), Ok(2.0));
        assert_eq!(parse_interval(&args("0.1"), "x_interval"), Ok(0.1));
        assert_eq!(parse_interval(&args("3600"), "x_interval"), Ok(3600.0));
        for bad in ["0", "0.05", "3601", "-1", "NaN", "inf"] {
            let e = parse_interval(&args(bad), "x_interval").unwrap_err();
            assert!(e.contains("--x_interval must be between 0.1 and 3600 seconds"), "{bad}: {e}");
        }
        assert!(parse_interval(&args("two"), "x_interval").unwrap_err().contains("'two' is not a valid number"));
    }

    #[test]
    fn probes_per_interval_respect_the_budget() {
        assert_eq!(probes_per_interval(3, 0.1, 10_000.0), 4);
        assert_eq!(probes_per_interval(2_500, 1.0, 10_000.0), 4);
        assert_eq!(probes_per_interval(5_000, 1.0, 10_000.0), 2);
        assert_eq!(probes_per_interval(10_000, 1.0, 10_000.0), 1);
        assert_eq!(probes_per_interval(50_000, 2.0, 10_000.0), 1);
        assert_eq!(probes_per_interval(0, 2.0, 10.0), 4);
    }

    #[test]
    fn rounds_verdicts_and_hold_down() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let mut t = Tracker::new(ms(75), ms(1000));
        t.set_hosts(&[a, b]);
        let r0 = t.start_round(t0);
        t.probed(a, r0);
        t.probed(b, r0);
        assert!(t.answer(a, r0, t0 + ms(10)));
        assert!(!t.answer(b, r0, t0 + ms(80)), "late answers do not count");
        assert_eq!(t.expire(t0 + ms(74)), vec![]);
        assert_eq!(t.expire(t0 + ms(75)), vec![Change::Failed(b)]);
        assert_eq!(t.failed(t0 + ms(75)), vec![b]);
        assert_eq!((t.checks, t.failures), (2, 1));

        // b answers again: still held down until 1 s after its last failure.
        let r1 = t.start_round(t0 + ms(100));
        t.probed(a, r1);
        t.probed(b, r1);
        let r2 = t.start_round(t0 + ms(150));
        t.probed(a, r2);
        t.probed(b, r2);
        // An answer to a later round also clears the earlier one.
        assert!(t.answer(b, r2, t0 + ms(160)));
        assert!(t.answer(a, r2, t0 + ms(160)));
        assert_eq!(t.expire(t0 + ms(230)), vec![Change::Answering(b)]);
        assert_eq!(t.failed(t0 + ms(1074)), vec![b]);
        assert!(t.failed(t0 + ms(1075)).is_empty());

        // A refusal fails at once, unless a later round was answered already.
        let r3 = t.start_round(t0 + ms(300));
        t.probed(a, r3);
        assert_eq!(t.refused(a, r3, t0 + ms(301)), Some(Change::Failed(a)));
        assert_eq!(t.expire(t0 + ms(400)), vec![], "judged once");
        assert_eq!(t.refused(b, r2, t0 + ms(302)), None);

        // Hosts that leave the list are forgotten; new hosts are judged only once probed.
        let c = ip("10.0.0.3");
        t.set_hosts(&[c]);
        let r4 = t.start_round(t0 + ms(500));
        assert_eq!(t.expire(t0 + ms(600)), vec![]);
        assert!(!t.answer(c, r4, t0 + ms(501)), "not probed in that round");
        assert!(t.failed(t0 + ms(600)).is_empty());
    }
}
