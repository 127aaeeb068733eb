//! Writing a health monitor: a probe, and the SDK runs everything around it.
//!
//! Implement [`HealthPlugin`]: `start` parses the options and returns a [`Schedule`] and a
//! [`Prober`]. The SDK then, on its own thread: takes each new host list, starts a round of
//! probes every `interval / probes_per_interval` (fewer for very many hosts), judges each
//! round at its deadline, keeps a failed host failed for the hold-down after its last
//! failure, sends the FULL [`HealthReport`] once after the first host list and then when it
//! changes, logs verdict changes, and counts checks for the status server.
//!
//! Two ways to probe:
//! * a batch [`Prober`]: "probe these hosts now" ([`Prober::probe`]) and "collect answers
//!   until then" ([`Prober::wait`]), like `icmpecho`'s one socket for every host;
//! * a per-host [`CheckHost`]: "check this host within this time", run for every host on a
//!   bounded pool of threads by [`Each`], like a command or an HTTP request per host.
//!
//! A source of verdicts rather than probes (a file, other plugins) reports with
//! [`Answers::healthy`], [`Answers::failed`] and [`Answers::questionable`], which take
//! effect at once; [`Prober::answer_new_hosts`] lets it judge a new host list before the
//! report that follows it. A prober that cannot go on (its source of verdicts is gone)
//! calls [`Answers::fatal`]: the SDK logs the reason and stops reporting, so the host
//! notices.
//!
//! ```no_run
//! use std::time::Duration;
//! use vpcrouter_plugin_api::prelude::*;
//!
//! /// Every host is healthy.
//! struct Always;
//! impl PluginDescription for Always {
//!     const NAME: &'static str = "always";
//!     const DESCRIPTION: &'static str = "Reports every host as healthy";
//!     const VERSION: &'static str = "1.0.0";
//! }
//! impl HealthPlugin for Always {
//!     type Prober = Always;
//!     fn start(_args: &PluginArgs, _run: &HealthRun) -> Result<(Schedule, Always), String> {
//!         Ok((Schedule::every(Duration::from_secs(1)), Always))
//!     }
//! }
//! impl Prober for Always {
//!     fn probe(&mut self, _round: Round, hosts: &[Ipv4], answers: &mut Answers) {
//!         hosts.iter().for_each(|h| answers.healthy(*h));
//!     }
//! }
//! export_plugin!(health: Always);
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RString, RVec, Tuple2};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::args::PluginArgs;
use crate::context::Logger;
use crate::export::{declared_params, guard, guard_or, Exported, PluginDescription, Start};
use crate::net::Ipv4;
use crate::plugin::{HealthBox, HealthMonitor, PluginContext, PluginInstance, PluginIo, PluginKind};
use crate::sync::lock;
use crate::types::{HealthReport, HealthStats, HostList, PluginStats, PluginStatus};
use crate::worker::{StopToken, Workers};
use crate::{RReceiver, RSender};

/// Probes per host per interval when nothing limits them: rounds overlap, so a host that
/// stops answering is noticed 0.75 to 1.0 interval after its last answer.
pub const PROBES_PER_INTERVAL: u32 = 4;
/// By default a probe must be answered within this share of the interval.
pub const TIMEOUT_SHARE: f64 = 0.75;
/// By default a failed host stays failed this many intervals after its last failure.
pub const HOLD_DOWN_INTERVALS: f64 = 10.0;
/// The longest the SDK waits before it looks at new host lists and the stop signal.
pub const TICK: Duration = Duration::from_millis(50);

/// A health plugin: its schedule and its prober.
pub trait HealthPlugin: PluginDescription + Sized + 'static {
    /// What checks the hosts.
    type Prober: Prober;

    /// Parses the options and builds the prober; fails with the message the user sees.
    fn start(args: &PluginArgs, run: &HealthRun) -> Result<(Schedule, Self::Prober), String>;
}

/// When hosts are checked and how long a failure lasts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Time between two checks of the same host.
    pub interval: Duration,
    /// A probe must be answered within this (default 0.75 × interval).
    pub timeout: Duration,
    /// Rounds started per interval, overlapping (default 4).
    pub probes_per_interval: u32,
    /// Fewer rounds per interval are started when hosts × rounds would exceed this many
    /// probes per second (never fewer than one round).
    pub max_probes_per_sec: f64,
    /// A failed host stays failed this long after its last failure (default 10 × interval).
    pub hold_down: Duration,
}

impl Schedule {
    /// The defaults for `interval`.
    pub fn every(interval: Duration) -> Schedule {
        Schedule {
            interval,
            timeout: interval.mul_f64(TIMEOUT_SHARE),
            probes_per_interval: PROBES_PER_INTERVAL,
            max_probes_per_sec: f64::INFINITY,
            hold_down: interval.mul_f64(HOLD_DOWN_INTERVALS),
        }
    }
    /// Sets the probe timeout.
    pub fn timeout(self, timeout: Duration) -> Schedule {
        Schedule { timeout, ..self }
    }
    /// Sets the rounds per interval (at least one).
    pub fn probes_per_interval(self, rounds: u32) -> Schedule {
        Schedule { probes_per_interval: rounds.max(1), ..self }
    }
    /// Sets the probe budget per second.
    pub fn max_probes_per_sec(self, max: f64) -> Schedule {
        Schedule { max_probes_per_sec: max, ..self }
    }
    /// Sets the hold-down.
    pub fn hold_down(self, hold_down: Duration) -> Schedule {
        Schedule { hold_down, ..self }
    }

    /// Rounds per interval for `hosts` hosts: [`Schedule::probes_per_interval`], lowered to
    /// stay within [`Schedule::max_probes_per_sec`], but never below one.
    pub fn rounds_for(&self, hosts: usize) -> u32 {
        let affordable = (self.max_probes_per_sec * self.interval.as_secs_f64() / hosts.max(1) as f64).floor();
        if affordable.is_nan() {
            return self.probes_per_interval;
        }
        (affordable.min(f64::from(u32::MAX)) as u32).clamp(1, self.probes_per_interval)
    }
}

/// One round of probes: its number (to match answers) and its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Round {
    /// Increases by one per round.
    pub number: u64,
    /// Answers after this do not count.
    pub deadline: Instant,
}

enum Answer {
    Up(Ipv4, u64, Instant),
    Down(Ipv4, u64, String),
    Skipped(Ipv4, u64),
    Healthy(Ipv4),
    Failed(Ipv4, String),
    Questionable(Ipv4),
}

/// What a prober found; the SDK applies it after each call.
#[derive(Default)]
pub struct Answers {
    items: Vec<Answer>,
    fatal: Option<String>,
}

impl Answers {
    /// `host` answered the probe of round `round` (now; late answers do not count).
    pub fn up(&mut self, host: Ipv4, round: u64) {
        self.items.push(Answer::Up(host, round, Instant::now()));
    }
    /// `host`'s probe of round `round` failed for sure (refused, unreachable): the check
    /// fails now rather than at the deadline.
    pub fn down(&mut self, host: Ipv4, round: u64, why: impl Into<String>) {
        self.items.push(Answer::Down(host, round, why.into()));
    }
    /// `host` was not probed in round `round` after all (e.g. no capacity to start the
    /// probe before its deadline): that round counts for it neither as a check nor as a
    /// failure, and its verdict stays as it was.
    pub fn skipped(&mut self, host: Ipv4, round: u64) {
        self.items.push(Answer::Skipped(host, round));
    }
    /// `host` is healthy now (a verdict that needs no probe round).
    pub fn healthy(&mut self, host: Ipv4) {
        self.items.push(Answer::Healthy(host));
    }
    /// `host` failed now (a verdict that needs no probe round).
    pub fn failed(&mut self, host: Ipv4, why: impl Into<String>) {
        self.items.push(Answer::Failed(host, why.into()));
    }
    /// `host` is questionable now: used only when no healthy candidate exists.
    pub fn questionable(&mut self, host: Ipv4) {
        self.items.push(Answer::Questionable(host));
    }
    /// The prober cannot go on: the SDK logs `reason` as an error and ends the monitor's
    /// thread, which closes its report queue (the host then notices the monitor is gone).
    /// Answers given with it are dropped; the first reason counts.
    pub fn fatal(&mut self, reason: impl Into<String>) {
        self.fatal.get_or_insert_with(|| reason.into());
    }
}

/// Checks many hosts at once. Runs on the SDK's thread; calls must return promptly.
pub trait Prober: Send + 'static {
    /// Sends one probe to each of `hosts` for `round`, or checks them at once and answers.
    fn probe(&mut self, round: Round, hosts: &[Ipv4], answers: &mut Answers);

    /// Collects answers to earlier probes until `until` at most (never much later). By
    /// default it sleeps: every answer was given by `probe`.
    fn wait(&mut self, until: Instant, _answers: &mut Answers) {
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
    }

    /// The host list changed (called before the next round).
    fn hosts_changed(&mut self, _hosts: &[Ipv4]) {}

    /// The host list changed, with the chance to answer at once: verdicts given here count
    /// before the report that follows the change, so a verdict source does not report a
    /// new host healthy first. By default it calls [`Prober::hosts_changed`].
    fn answer_new_hosts(&mut self, hosts: &[Ipv4], _answers: &mut Answers) {
        self.hosts_changed(hosts);
    }

    /// Plugin-specific state for the status server, a JSON object (read after each round
    /// and with each report sent).
    fn details(&self) -> serde_json::Value {
        serde_json::json!({})
    }
}

/// Checks one host. Called on the threads of [`Each`], concurrently for different hosts.
pub trait CheckHost: Send + Sync + 'static {
    /// Checks `host` within `timeout`: `Ok` if healthy, else why not.
    fn check(&self, host: Ipv4, timeout: Duration) -> Result<(), String>;
}

type Job = (Ipv4, Round);
type Outcome = (Ipv4, u64, Result<(), String>);

/// Runs a [`CheckHost`] for every host of each round, at most `concurrency` at a time.
///
/// A check that has not started by its round's deadline is skipped (the host then fails
/// that round). The threads end when the prober is dropped, each after its current check.
pub struct Each<C> {
    jobs: Sender<Job>,
    results: Receiver<Outcome>,
    check: std::marker::PhantomData<C>,
}

impl<C: CheckHost> Each<C> {
    /// A prober running `check` on `concurrency` threads (at least one).
    pub fn new(check: C, concurrency: usize) -> Result<Each<C>, String> {
        let (jobs, job_rx) = crossbeam_channel::unbounded::<Job>();
        let (result_tx, results) = crossbeam_channel::unbounded::<Outcome>();
        let check = Arc::new(check);
        for n in 0..concurrency.max(1) {
            let (job_rx, result_tx, check) = (job_rx.clone(), result_tx.clone(), check.clone());
            std::thread::Builder::new()
                .name(format!("check-{n}"))
                .spawn(move || {
                    for (host, round) in job_rx.iter() {
                        let left = round.deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            continue;
                        }
                        let outcome = guard("check", || Ok(check.check(host, left)))
                            .into_result()
                            .unwrap_or_else(|e| Err(e.into()));
                        if result_tx.send((host, round.number, outcome)).is_err() {
                            return;
                        }
                    }
                })
                .map_err(|e| format!("cannot start a check thread: {e}"))?;
        }
        Ok(Each { jobs, results, check: std::marker::PhantomData })
    }

    fn record(answers: &mut Answers, (host, round, outcome): Outcome) {
        match outcome {
            Ok(()) => answers.up(host, round),
            Err(why) => answers.down(host, round, why),
        }
    }
}

impl<C: CheckHost> Prober for Each<C> {
    fn probe(&mut self, round: Round, hosts: &[Ipv4], _answers: &mut Answers) {
        for host in hosts {
            let _ = self.jobs.send((*host, round));
        }
    }
    fn wait(&mut self, until: Instant, answers: &mut Answers) {
        match self.results.recv_deadline(until) {
            Ok(outcome) => Self::record(answers, outcome),
            Err(RecvTimeoutError::Timeout) => return,
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(until.saturating_duration_since(Instant::now())),
        }
        while let Ok(outcome) = self.results.try_recv() {
            Self::record(answers, outcome);
        }
    }
}

/// What a starting health monitor gets: the host's services.
pub struct HealthRun {
    ctx: PluginContext,
}

impl HealthRun {
    /// The host's services: log, HTTP endpoints, and the loader that starts other plugins.
    pub fn context(&self) -> &PluginContext {
        &self.ctx
    }
    /// The host's log.
    pub fn log(&self) -> &Logger {
        &self.ctx.log
    }
}

/// A verdict change of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The host failed a check after being healthy (or at its first check).
    Failed(Ipv4, String),
    /// The host answered a check after failing.
    Answering(Ipv4),
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
    /// The last verdict was "questionable".
    questionable: bool,
}

/// Probe rounds, verdicts and the hold-down for one set of hosts (the SDK's bookkeeping).
///
/// A round's probes that are not answered by its deadline fail; a definite refusal fails
/// at once. [`Tracker::report`] lists hosts that are down or whose last failure is less
/// than the hold-down old; they are still probed meanwhile. Public so that a prober's tests
/// can drive it round by round, as the SDK's runner does.
#[derive(Debug)]
pub struct Tracker {
    timeout: Duration,
    hold: Duration,
    hosts: BTreeMap<Ipv4, Host>,
    /// Rounds still waiting for their deadline: (round, deadline), oldest first.
    rounds: VecDeque<(u64, Instant)>,
    next_round: u64,
    /// Checks done.
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
    pub fn set_hosts(&mut self, hosts: &[Ipv4]) {
        let mut old = std::mem::take(&mut self.hosts);
        self.hosts = hosts.iter().map(|ip| (*ip, old.remove(ip).unwrap_or_default())).collect();
    }

    /// Number of hosts being checked.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// True when no host is checked.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Starts a round at `now` and marks every host probed in it.
    pub fn start_round(&mut self, now: Instant) -> Round {
        let number = self.next_round;
        self.next_round += 1;
        let deadline = now + self.timeout;
        self.rounds.push_back((number, deadline));
        let bit = 1 << (number % 64);
        for h in self.hosts.values_mut() {
            h.outstanding |= bit;
        }
        self.checks += self.hosts.len() as u64;
        Round { number, deadline }
    }

    /// The earliest deadline of an outstanding round.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.rounds.front().map(|(_, d)| *d)
    }

    fn deadline(&self, round: u64) -> Option<Instant> {
        self.rounds.iter().find(|(r, _)| *r == round).map(|(_, d)| *d)
    }

    fn fail(h: &mut Host, ip: Ipv4, now: Instant, why: String, failures: &mut u64) -> Option<Change> {
        *failures += 1;
        h.last_failure = Some(now);
        h.questionable = false;
        (!std::mem::replace(&mut h.down, true)).then_some(Change::Failed(ip, why))
    }

    fn recover(h: &mut Host, ip: Ipv4) -> Option<Change> {
        std::mem::replace(&mut h.down, false).then_some(Change::Answering(ip))
    }

    /// Applies what a prober found at `now`; returns verdict changes.
    pub fn apply(&mut self, answers: &mut Answers, now: Instant) -> Vec<Change> {
        let mut changes = Vec::new();
        for answer in answers.items.drain(..) {
            match answer {
                Answer::Up(ip, round, at) => {
                    let Some(deadline) = self.deadline(round) else { continue };
                    let Some(h) = self.hosts.get_mut(&ip) else { continue };
                    if at <= deadline && h.outstanding & (1 << (round % 64)) != 0 {
                        h.answered = Some(h.answered.map_or(round, |a| a.max(round)));
                        h.questionable = false;
                    }
                }
                Answer::Down(ip, round, why) => {
                    let Some(h) = self.hosts.get_mut(&ip) else { continue };
                    let bit = 1 << (round % 64);
                    if h.outstanding & bit == 0 || h.answered.is_some_and(|a| a >= round) {
                        continue;
                    }
                    h.outstanding &= !bit;
                    changes.extend(Self::fail(h, ip, now, why, &mut self.failures));
                }
                Answer::Skipped(ip, round) => {
                    let Some(h) = self.hosts.get_mut(&ip) else { continue };
                    let bit = 1 << (round % 64);
                    if h.outstanding & bit != 0 {
                        h.outstanding &= !bit;
                        self.checks = self.checks.saturating_sub(1);
                    }
                }
                Answer::Healthy(ip) | Answer::Questionable(ip) => {
                    let questionable = matches!(answer, Answer::Questionable(_));
                    let Some(h) = self.hosts.get_mut(&ip) else { continue };
                    h.outstanding = 0;
                    h.answered = self.next_round.checked_sub(1);
                    h.questionable = questionable;
                    changes.extend(Self::recover(h, ip));
                }
                Answer::Failed(ip, why) => {
                    let Some(h) = self.hosts.get_mut(&ip) else { continue };
                    h.outstanding = 0;
                    changes.extend(Self::fail(h, ip, now, why, &mut self.failures));
                }
            }
        }
        changes
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
                    changes.extend(Self::recover(h, *ip));
                } else {
                    let why = format!("no answer within {:.2} s", self.timeout.as_secs_f64());
                    changes.extend(Self::fail(h, *ip, now, why, &mut self.failures));
                }
            }
        }
        changes
    }

    /// The report at `now`: hosts down or failed less than the hold-down ago, and
    /// questionable hosts that are not failed.
    pub fn report(&self, now: Instant) -> HealthReport {
        let failed = |h: &Host| h.down || h.last_failure.is_some_and(|t| now < t + self.hold);
        HealthReport::new(
            self.hosts.iter().filter(|(_, h)| failed(h)).map(|(ip, _)| *ip),
            self.hosts.iter().filter(|(_, h)| h.questionable && !failed(h)).map(|(ip, _)| *ip),
        )
    }
}

fn joined(ips: &[Ipv4]) -> String {
    ips.iter().map(|ip| ip.to_string()).collect::<Vec<_>>().join(",")
}

/// What the status server shows, updated by the SDK's thread.
#[derive(Default)]
struct Shared {
    stats: HealthStats,
    rounds: u64,
    late_rounds: u64,
    probes_per_interval: u32,
    details: serde_json::Value,
}

/// The SDK's thread: host lists in, rounds, verdicts, reports out.
struct Runner<P> {
    prober: P,
    schedule: Schedule,
    log: Logger,
    tracker: Tracker,
    hosts: Vec<Ipv4>,
    have_list: bool,
    period: Duration,
    last_sent: Option<HealthReport>,
    shared: Arc<Mutex<Shared>>,
}

impl<P: Prober> Runner<P> {
    fn set_hosts(&mut self, list: HostList, answers: &mut Answers) -> bool {
        self.hosts = list.hosts.into_vec();
        self.hosts.sort_unstable();
        self.hosts.dedup();
        self.log.debug(format!("Checking {} hosts: {}", self.hosts.len(), joined(&self.hosts)));
        self.tracker.set_hosts(&self.hosts);
        let hosts = std::mem::take(&mut self.hosts);
        self.prober.answer_new_hosts(&hosts, answers);
        self.hosts = hosts;
        let k = self.schedule.rounds_for(self.hosts.len());
        if k < self.schedule.probes_per_interval {
            self.log.info(format!(
                "{} hosts: {k} probe(s) per host per interval, to stay under {} per second",
                self.hosts.len(),
                self.schedule.max_probes_per_sec
            ));
        }
        lock(&self.shared).probes_per_interval = k;
        self.period = self.schedule.interval / k;
        self.have_list = true;
        self.settle(answers)
    }

    /// Applies the prober's answers and logs the changes; false when it gave up.
    fn settle(&mut self, answers: &mut Answers) -> bool {
        if let Some(reason) = answers.fatal.take() {
            self.log.error(reason);
            return false;
        }
        let changes = self.tracker.apply(answers, Instant::now());
        self.log_changes(changes);
        true
    }

    fn log_changes(&self, changes: Vec<Change>) {
        for change in changes {
            match change {
                Change::Failed(ip, why) => self.log.info(format!("Host {ip} failed a check: {why}")),
                Change::Answering(ip) => self.log.info(format!(
                    "Host {ip} passes checks again (eligible {} s after its last failure)",
                    self.schedule.hold_down.as_secs_f64()
                )),
            }
        }
    }

    /// Sends the report when it changed; false when the host closed the queue.
    fn publish(&mut self, reports: &RSender<HealthReport>, now: Instant) -> bool {
        let report = self.tracker.report(now);
        {
            let mut shared = lock(&self.shared);
            shared.stats.checks = self.tracker.checks;
            shared.stats.failures = self.tracker.failures;
            shared.stats.hosts = self.tracker.len() as u64;
        }
        if self.last_sent.as_ref() == Some(&report) {
            return true;
        }
        if report.failed.is_empty() {
            self.log.info("All monitored hosts are healthy");
        } else {
            self.log.info(format!("Currently failed IPs: {}", joined(&report.failed)));
        }
        if !report.questionable.is_empty() {
            self.log.info(format!("Currently questionable IPs: {}", joined(&report.questionable)));
        }
        let details = guard_or("details", serde_json::json!({}), || self.prober.details());
        {
            let mut shared = lock(&self.shared);
            shared.stats.reports_sent += 1;
            shared.stats.failed = report.failed.clone();
            shared.details = details;
        }
        self.last_sent = Some(report.clone());
        reports.send(report).is_ok()
    }

    fn run(mut self, hosts: RReceiver<HostList>, reports: RSender<HealthReport>, stop: StopToken) {
        let mut answers = Answers::default();
        let mut next_round = Instant::now();
        loop {
            if stop.is_stopped() {
                return;
            }
            let mut latest = None;
            loop {
                match hosts.try_recv() {
                    Ok(list) => latest = Some(list),
                    Err(e) if e.is_disconnected() && latest.is_none() && !self.have_list => return,
                    Err(_) => break,
                }
            }
            if let Some(list) = latest {
                let first = !self.have_list;
                if !self.set_hosts(list, &mut answers) {
                    return;
                }
                if first {
                    // The first hosts are checked at once, not up to a period later.
                    next_round = Instant::now();
                }
            }
            let now = Instant::now();
            let changes = self.tracker.expire(now);
            self.log_changes(changes);
            if self.have_list && !self.publish(&reports, now) {
                self.log.debug("The health report queue is closed");
                return;
            }
            if now >= next_round {
                if !self.tracker.is_empty() {
                    let round = self.tracker.start_round(now);
                    let hosts = std::mem::take(&mut self.hosts);
                    self.prober.probe(round, &hosts, &mut answers);
                    self.hosts = hosts;
                    if !self.settle(&mut answers) {
                        return;
                    }
                    let details = guard_or("details", serde_json::json!({}), || self.prober.details());
                    let mut shared = lock(&self.shared);
                    shared.rounds += 1;
                    shared.details = details;
                }
                next_round += self.period;
                if next_round <= now {
                    lock(&self.shared).late_rounds += 1;
                    self.log.warn(format!(
                        "A round for {} hosts started late; restarting the schedule",
                        self.tracker.len()
                    ));
                    next_round = now + self.period;
                }
            }
            let mut wake = next_round.min(Instant::now() + TICK);
            if let Some(d) = self.tracker.next_deadline() {
                wake = wake.min(d);
            }
            self.prober.wait(wake, &mut answers);
            if !self.settle(&mut answers) {
                return;
            }
        }
    }
}

/// A started health monitor, as the host sees it.
struct Running<T> {
    schedule: Schedule,
    shared: Arc<Mutex<Shared>>,
    workers: Workers,
    params: RVec<Tuple2<RString, RString>>,
    plugin: std::marker::PhantomData<fn() -> T>,
}

impl<T: HealthPlugin> HealthMonitor for Running<T> {
    fn status(&self) -> PluginStatus {
        let shared = lock(&self.shared);
        let mut details = match &shared.details {
            serde_json::Value::Object(map) => map.clone(),
            _ => serde_json::Map::new(),
        };
        details.insert("timeout_secs".into(), self.schedule.timeout.as_secs_f64().into());
        details.insert("hold_down_secs".into(), self.schedule.hold_down.as_secs_f64().into());
        details.insert("probes_per_interval".into(), shared.probes_per_interval.into());
        details.insert("rounds".into(), shared.rounds.into());
        details.insert("late_rounds".into(), shared.late_rounds.into());
        PluginStatus {
            version: T::VERSION.into(),
            params: self.params.clone(),
            stats: PluginStats::Health(shared.stats.clone()),
            details: serde_json::Value::Object(details).to_string().into(),
        }
    }
    fn interval_secs(&self) -> f64 {
        self.schedule.interval.as_secs_f64()
    }
    fn stop(&self, within_ms: u64) -> RResult<(), RString> {
        guard(&format!("plugin '{}' stop", T::NAME), || self.workers.stop(Duration::from_millis(within_ms)))
    }
}

/// Starts health monitor `T` on these queues (the SDK's half of [`crate::export_plugin!`];
/// the testkit's too).
pub(crate) fn start<T: HealthPlugin>(
    args: &PluginArgs,
    ctx: PluginContext,
    hosts: RReceiver<HostList>,
    reports: RSender<HealthReport>,
) -> Result<HealthBox, String> {
    let log = ctx.log.clone();
    let (schedule, prober) = T::start(args, &HealthRun { ctx })?;
    if schedule.interval.is_zero() {
        return Err(format!("plugin '{}' has a zero check interval", T::NAME));
    }
    let k = schedule.probes_per_interval.max(1);
    let shared =
        Arc::new(Mutex::new(Shared { probes_per_interval: k, details: serde_json::json!({}), ..Shared::default() }));
    let runner = Runner {
        prober,
        schedule,
        log,
        tracker: Tracker::new(schedule.timeout, schedule.hold_down),
        hosts: Vec::new(),
        have_list: false,
        period: schedule.interval / k,
        last_sent: None,
        shared: shared.clone(),
    };
    let workers = Workers::default();
    workers.spawn(&format!("health-{}", T::NAME), move |stop| {
        let log = runner.log.clone();
        runner.run(hosts, reports, stop);
        log.info(format!("{} health monitor plugin: Stopped", T::NAME));
    })?;
    let running = Running::<T> {
        schedule,
        shared,
        workers,
        params: declared_params::<T>(args),
        plugin: std::marker::PhantomData,
    };
    Ok(HealthBox::from_value(running, TD_Opaque))
}

/// The kind marker of health plugins for [`crate::export_plugin!`].
#[doc(hidden)]
pub struct HealthKind;

/// `T` exported as a health plugin (used by [`crate::export_plugin!`]).
#[doc(hidden)]
pub type AsHealth<T> = Exported<T, HealthKind>;

impl<T: HealthPlugin> Start for Exported<T, HealthKind> {
    const KIND: PluginKind = PluginKind::Health;
    fn start_instance(args: &PluginArgs, ctx: PluginContext, io: PluginIo) -> Result<PluginInstance, String> {
        match io {
            PluginIo::Health { hosts, reports } => start::<T>(args, ctx, hosts, reports).map(PluginInstance::Health),
            _ => Err(format!("'{}' is a health plugin, started as another kind", T::NAME)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4 {
        Ipv4::parse(s).unwrap()
    }

    fn failed(t: &Tracker, now: Instant) -> Vec<Ipv4> {
        t.report(now).failed.into_vec()
    }

    #[test]
    fn rounds_for_respects_the_budget() {
        let s = |i: f64, max: f64| Schedule::every(Duration::from_secs_f64(i)).max_probes_per_sec(max);
        assert_eq!(s(0.1, 10_000.0).rounds_for(3), 4);
        assert_eq!(s(1.0, 10_000.0).rounds_for(2_500), 4);
        assert_eq!(s(1.0, 10_000.0).rounds_for(5_000), 2);
        assert_eq!(s(1.0, 10_000.0).rounds_for(10_000), 1);
        assert_eq!(s(2.0, 10_000.0).rounds_for(50_000), 1);
        assert_eq!(s(2.0, 10.0).rounds_for(0), 4);
        assert_eq!(Schedule::every(Duration::from_secs(2)).rounds_for(1_000_000), 4, "no budget by default");
        assert_eq!(Schedule::every(Duration::from_secs(2)).timeout, Duration::from_millis(1500));
        assert_eq!(Schedule::every(Duration::from_secs(2)).hold_down, Duration::from_secs(20));
    }

    #[test]
    fn rounds_verdicts_and_hold_down() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let mut t = Tracker::new(ms(75), ms(1000));
        t.set_hosts(&[a, b]);
        let r0 = t.start_round(t0);
        let mut ans = Answers::default();
        ans.items.push(Answer::Up(a, r0.number, t0 + ms(10)));
        ans.items.push(Answer::Up(b, r0.number, t0 + ms(80)));
        assert_eq!(t.apply(&mut ans, t0 + ms(80)), vec![], "late answers do not count");
        assert_eq!(t.expire(t0 + ms(74)), vec![]);
        assert_eq!(t.expire(t0 + ms(75)), vec![Change::Failed(b, "no answer within 0.07 s".into())]);
        assert_eq!(failed(&t, t0 + ms(75)), vec![b]);
        assert_eq!((t.checks, t.failures), (2, 1));

        // b answers again: still held down until 1 s after its last failure.
        let _r1 = t.start_round(t0 + ms(100));
        let r2 = t.start_round(t0 + ms(150));
        ans.items.push(Answer::Up(b, r2.number, t0 + ms(160)));
        ans.items.push(Answer::Up(a, r2.number, t0 + ms(160)));
        t.apply(&mut ans, t0 + ms(160));
        assert_eq!(t.expire(t0 + ms(230)), vec![Change::Answering(b)], "a later answer clears the earlier round");
        assert_eq!(failed(&t, t0 + ms(1074)), vec![b]);
        assert!(failed(&t, t0 + ms(1075)).is_empty());

        // A refusal fails at once, unless a later round was answered already.
        let r3 = t.start_round(t0 + ms(300));
        ans.down(a, r3.number, "refused");
        assert_eq!(t.apply(&mut ans, t0 + ms(301)), vec![Change::Failed(a, "refused".into())]);
        ans.down(b, r2.number, "refused");
        assert_eq!(t.apply(&mut ans, t0 + ms(302)), vec![], "b answered r2 already");

        // Hosts that leave the list are forgotten.
        let c = ip("10.0.0.3");
        t.set_hosts(&[c]);
        assert!(failed(&t, t0 + ms(400)).is_empty());
    }

    #[test]
    fn a_skipped_probe_is_neither_a_check_nor_a_failure() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let mut t = Tracker::new(ms(50), ms(1000));
        t.set_hosts(&[a, b]);
        let r0 = t.start_round(t0);
        let mut ans = Answers::default();
        ans.skipped(b, r0.number);
        ans.skipped(b, r0.number);
        assert_eq!(t.apply(&mut ans, t0 + ms(10)), vec![]);
        assert_eq!(t.expire(t0 + ms(50)), vec![Change::Failed(a, "no answer within 0.05 s".into())]);
        assert_eq!(failed(&t, t0 + ms(50)), vec![a], "b keeps its verdict (healthy)");
        assert_eq!((t.checks, t.failures), (1, 1), "counted once, skipped twice");
        // A failed host stays failed when its probe is skipped.
        let r1 = t.start_round(t0 + ms(100));
        ans.skipped(a, r1.number);
        ans.up(b, r1.number);
        t.apply(&mut ans, t0 + ms(110));
        assert_eq!(t.expire(t0 + ms(150)), vec![]);
        assert_eq!(failed(&t, t0 + ms(150)), vec![a]);
    }

    #[test]
    fn verdicts_take_effect_at_once_and_questionable_is_never_failed() {
        let t0 = Instant::now();
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let mut t = Tracker::new(Duration::from_millis(50), Duration::ZERO);
        t.set_hosts(&[a, b]);
        let _ = t.start_round(t0);
        let mut ans = Answers::default();
        ans.failed(a, "listed");
        ans.questionable(b);
        assert_eq!(t.apply(&mut ans, t0), vec![Change::Failed(a, "listed".into())]);
        assert_eq!(t.expire(t0 + Duration::from_secs(1)), vec![], "verdicts settle the outstanding round");
        let r = t.report(t0 + Duration::from_secs(5));
        assert_eq!(
            (r.failed.into_vec(), r.questionable.into_vec()),
            (vec![a], vec![b]),
            "down stays failed without a hold-down"
        );
        ans.healthy(a);
        ans.failed(b, "listed");
        t.apply(&mut ans, t0 + Duration::from_secs(6));
        let r = t.report(t0 + Duration::from_secs(6));
        assert_eq!((r.failed.into_vec(), r.questionable.into_vec()), (vec![b], vec![]));
    }

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<String>>>);
    impl crate::context::HostLogger for Lines {
        fn log(&self, _level: crate::LogLevel, message: abi_stable::std_types::RStr<'_>) {
            self.0.lock().unwrap().push(message.to_string());
        }
        fn enabled(&self, _level: crate::LogLevel) -> bool {
            true
        }
    }

    /// Fails every host it is given at once; gives up when told to.
    struct Source(Receiver<()>);
    impl Prober for Source {
        fn probe(&mut self, _round: Round, _hosts: &[Ipv4], _answers: &mut Answers) {}
        fn answer_new_hosts(&mut self, hosts: &[Ipv4], answers: &mut Answers) {
            hosts.iter().for_each(|h| answers.failed(*h, "listed"));
        }
        fn wait(&mut self, until: Instant, answers: &mut Answers) {
            if self.0.recv_deadline(until).is_ok() {
                answers.healthy(ip("10.0.0.1"));
                answers.fatal("the source is gone");
            }
        }
    }

    #[test]
    fn new_hosts_are_judged_before_the_report_and_fatal_ends_the_reports() {
        let (quit, quit_rx) = crossbeam_channel::unbounded();
        let lines = Lines::default();
        // A long interval: no round runs during the test, only the prober's own answers count.
        let schedule = Schedule::every(Duration::from_secs(60)).hold_down(Duration::ZERO);
        let runner = Runner {
            prober: Source(quit_rx),
            schedule,
            log: Logger::new(lines.clone()),
            tracker: Tracker::new(schedule.timeout, schedule.hold_down),
            hosts: Vec::new(),
            have_list: false,
            period: schedule.interval,
            last_sent: None,
            shared: Arc::default(),
        };
        let (host_tx, host_rx) = crate::channel::unbounded();
        let (report_tx, report_rx) = crate::channel::unbounded();
        let (_stop, stop) = {
            let w = Workers::default();
            let (tx, rx) = std::sync::mpsc::channel();
            w.spawn("token", move |stop| tx.send(stop).unwrap()).unwrap();
            (w, rx.recv().unwrap())
        };
        let thread = std::thread::spawn(move || runner.run(host_rx, report_tx, stop));
        host_tx.send(HostList::new([ip("10.0.0.1"), ip("10.0.0.2")])).unwrap();
        let first = report_rx.recv_timeout(Duration::from_secs(2)).unwrap();
        assert_eq!(first.failed.into_vec(), vec![ip("10.0.0.1"), ip("10.0.0.2")], "the first report has the verdicts");
        quit.send(()).unwrap();
        assert!(
            matches!(report_rx.recv_timeout(Duration::from_secs(2)), Err(RecvTimeoutError::Disconnected)),
            "no report after fatal, and the queue closes"
        );
        thread.join().unwrap();
        assert!(lines.0.lock().unwrap().iter().any(|l| l == "the source is gone"));
    }

    /// Counts its rounds; every host answers.
    struct Counting(Arc<std::sync::atomic::AtomicU64>);
    impl Prober for Counting {
        fn probe(&mut self, round: Round, hosts: &[Ipv4], answers: &mut Answers) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            hosts.iter().for_each(|h| answers.up(*h, round.number));
        }
    }
    struct CountingPlugin;
    impl PluginDescription for CountingPlugin {
        const NAME: &'static str = "counting";
        const DESCRIPTION: &'static str = "counts rounds";
        const VERSION: &'static str = "0";
    }
    static ROUNDS: std::sync::OnceLock<Arc<std::sync::atomic::AtomicU64>> = std::sync::OnceLock::new();
    impl HealthPlugin for CountingPlugin {
        type Prober = Counting;
        fn start(_args: &PluginArgs, _run: &HealthRun) -> Result<(Schedule, Counting), String> {
            let rounds = ROUNDS.get_or_init(Arc::default).clone();
            Ok((Schedule::every(Duration::from_secs(30)).probes_per_interval(1), Counting(rounds)))
        }
    }

    #[test]
    fn the_first_hosts_are_probed_at_once_even_with_a_long_interval() {
        let h = crate::testkit::start_health::<CountingPlugin>(&[]).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let rounds = ROUNDS.get_or_init(Arc::default).clone();
        assert_eq!(rounds.load(std::sync::atomic::Ordering::Relaxed), 0, "no round without hosts");
        h.send_hosts(&["10.0.0.1"]);
        let t = Instant::now();
        while rounds.load(std::sync::atomic::Ordering::Relaxed) == 0 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(t.elapsed() < Duration::from_millis(300), "first round {:?} after the first host list", t.elapsed());
        assert_eq!(h.next_report(Duration::from_secs(2)).map(|r| r.failed.len()), Some(0));
        h.stop().unwrap();
    }

    struct Slow;
    impl CheckHost for Slow {
        fn check(&self, host: Ipv4, timeout: Duration) -> Result<(), String> {
            std::thread::sleep(Duration::from_millis(100).min(timeout));
            if host == ip("10.0.0.2") {
                Err("no".into())
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn each_runs_checks_concurrently_and_reports_both_outcomes() {
        let mut each = Each::new(Slow, 4).unwrap();
        let hosts: Vec<Ipv4> = (1..=8).map(|n| Ipv4::new(10, 0, 0, n)).collect();
        let t0 = Instant::now();
        let round = Round { number: 0, deadline: t0 + Duration::from_secs(2) };
        let mut answers = Answers::default();
        each.probe(round, &hosts, &mut answers);
        while answers.items.len() < 8 && t0.elapsed() < Duration::from_secs(2) {
            each.wait(Instant::now() + Duration::from_millis(20), &mut answers);
        }
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_millis(600),
            "8 checks of 100 ms on 4 threads: {took:?}"
        );
        let downs: Vec<Ipv4> =
            answers.items.iter().filter_map(|a| if let Answer::Down(h, ..) = a { Some(*h) } else { None }).collect();
        assert_eq!(downs, vec![ip("10.0.0.2")]);
    }
}
