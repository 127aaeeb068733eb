//! The `multi` health monitor: several health plugins at once.
//!
//! `vpcrouter -H multi --multi_plugins icmpecho:tcp --tcp_check_port 22`
//!
//! * `--multi_plugins` (required) names health plugins separated by `:`. Each is started
//!   by name through the host ([`vpcrouter_plugin_api::PluginContext::start_health`]), with
//!   the options the host parsed for it, so third-party health plugins can be combined too.
//!   The host reads `--multi_plugins` and asks [`PluginDescription::required_plugins`]
//!   which plugins it names, then loads them and accepts their options on its command line.
//!   `multi` itself, empty names and duplicates are refused.
//! * Every host list goes to every sub-plugin. A host is failed when ANY sub-plugin
//!   currently reports it failed, else questionable when any reports it questionable.
//!   A failed host stays failed for 20 × the largest sub-plugin interval after the last
//!   sub-plugin stopped reporting it (on top of the sub-plugin's own hold-down).
//! * The SDK sends the FULL combined report once after the first host list and whenever
//!   it changes. If a sub-plugin closes its report queue, `multi` stops reporting too, so
//!   the host notices. Its status shows each sub-plugin's status under `sub_plugins`.

#![deny(unsafe_code)]

use std::time::{Duration, Instant};

use vpcrouter_plugin_api::crossbeam_channel::{self, Receiver, Select};
use vpcrouter_plugin_api::prelude::*;
use vpcrouter_plugin_api::{channel, HealthBox, PluginStats, PluginStatus, RSender};

const NAME_ARG: &str = "multi_plugins";
/// The combined hold-down, in multiples of the largest sub-plugin interval.
pub const HOLD_DOWN_INTERVALS: f64 = 20.0;
/// How long stopping all sub-plugins may take.
const STOP_WITHIN: Duration = Duration::from_millis(1500);

/// Splits a `--multi_plugins` value; the error says what is wrong with it.
pub fn parse_names(raw: &str) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = Vec::new();
    for name in raw.split(':').map(str::trim) {
        if name.is_empty() {
            return Err(format!(
                "--{NAME_ARG} '{raw}' contains an empty plugin name; separate names with ':', e.g. icmpecho:tcp"
            ));
        }
        if name == Multi::NAME {
            return Err(format!("--{NAME_ARG} cannot include 'multi' itself"));
        }
        if names.iter().any(|n| n == name) {
            return Err(format!("--{NAME_ARG} names '{name}' twice"));
        }
        names.push(name.to_string());
    }
    Ok(names)
}

fn joined(ips: &[Ipv4]) -> String {
    ips.iter().map(|ip| ip.to_string()).collect::<Vec<_>>().join(",")
}

/// A sub-plugin's status as the status server shows a plugin: its details, with its
/// version, options and counters.
fn status_json(status: &PluginStatus) -> serde_json::Value {
    let mut obj = match serde_json::from_str(status.details.as_str()) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let params: serde_json::Map<String, serde_json::Value> =
        status.params.iter().map(|t| (t.0.to_string(), t.1.as_str().into())).collect();
    let stats = match &status.stats {
        PluginStats::Health(s) => serde_json::json!({
            "checks": s.checks, "failures": s.failures, "reports_sent": s.reports_sent, "hosts": s.hosts,
            "failed": s.failed.iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
        }),
        _ => serde_json::json!({}),
    };
    obj.insert("version".into(), status.version.as_str().into());
    obj.insert("params".into(), params.into());
    obj.insert("stats".into(), stats);
    obj.into()
}

/// A running sub-plugin, its queues and its last report.
struct Sub {
    name: String,
    monitor: HealthBox,
    hosts: RSender<HostList>,
    reports: Receiver<HealthReport>,
    last: HealthReport,
}

/// Forwards host lists to the sub-plugins and combines their reports.
pub struct MultiProber {
    subs: Vec<Sub>,
    hosts: Vec<Ipv4>,
    log: Logger,
}

impl MultiProber {
    /// The combined verdict for every host.
    fn answer(&self, answers: &mut Answers) {
        for &h in &self.hosts {
            let by = |pick: fn(&HealthReport) -> &[Ipv4]| -> Vec<&str> {
                self.subs.iter().filter(|s| pick(&s.last).contains(&h)).map(|s| s.name.as_str()).collect()
            };
            let failed = by(|r| &r.failed);
            if !failed.is_empty() {
                answers.failed(h, format!("reported failed by {}", failed.join(", ")));
            } else if !by(|r| &r.questionable).is_empty() {
                answers.questionable(h);
            } else {
                answers.healthy(h);
            }
        }
    }

    fn take(&mut self, i: usize, report: HealthReport) {
        self.log.debug(format!(
            "Sub-plugin '{}' reports failed: [{}] questionable: [{}]",
            self.subs[i].name,
            joined(&report.failed),
            joined(&report.questionable)
        ));
        self.subs[i].last = report;
    }
}

impl Prober for MultiProber {
    fn probe(&mut self, _round: Round, _hosts: &[Ipv4], answers: &mut Answers) {
        self.answer(answers);
    }

    fn answer_new_hosts(&mut self, hosts: &[Ipv4], answers: &mut Answers) {
        self.log.debug(format!("Sending list of {} IPs to {} plugins.", hosts.len(), self.subs.len()));
        for sub in &self.subs {
            // A sub-plugin that stopped reading is noticed when its report queue closes.
            let _ = sub.hosts.send(HostList::new(hosts.iter().copied()));
        }
        self.hosts = hosts.to_vec();
        self.answer(answers);
    }

    fn wait(&mut self, until: Instant, answers: &mut Answers) {
        let mut select = Select::new();
        for sub in &self.subs {
            select.recv(&sub.reports);
        }
        let Ok(op) = select.select_deadline(until) else { return };
        let i = op.index();
        let mut got = Vec::new();
        match op.recv(&self.subs[i].reports) {
            Ok(report) => got.push((i, report)),
            Err(_) => {
                let name = &self.subs[i].name;
                return answers.fatal(format!("Multi-plugin health monitor: sub-plugin '{name}' stopped reporting"));
            }
        }
        for (j, sub) in self.subs.iter().enumerate() {
            got.extend(sub.reports.try_iter().map(|r| (j, r)));
        }
        for (j, report) in got {
            self.take(j, report);
        }
        self.answer(answers);
    }

    fn details(&self) -> serde_json::Value {
        let subs: serde_json::Map<String, serde_json::Value> =
            self.subs.iter().map(|s| (s.name.clone(), status_json(&s.monitor.status()))).collect();
        serde_json::json!({ "sub_plugins": subs })
    }
}

impl Drop for MultiProber {
    fn drop(&mut self) {
        self.log.info("Multi-plugin health monitor: Stopping plugins");
        let deadline = Instant::now() + STOP_WITHIN;
        for sub in &self.subs {
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
            if let Err(e) = sub.monitor.stop_within(left) {
                self.log.warn(format!("Multi-plugin health monitor: sub-plugin '{}': {e}", sub.name));
            }
        }
    }
}

/// The `multi` health plugin.
pub struct Multi;

impl PluginDescription for Multi {
    const NAME: &'static str = "multi";
    const DESCRIPTION: &'static str =
        "Combines health plugins (--multi_plugins a:b): a host fails if any of them says so";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn arguments() -> Vec<ArgSpec> {
        vec![ArgSpec::value(
            NAME_ARG,
            "A:B",
            "Colon separated list of health monitor plugins, e.g. icmpecho:tcp (only for \
             'multi' health monitor plugin)",
        )
        .required()]
    }

    fn validate_config(args: &PluginArgs) -> Result<(), String> {
        let raw = args
            .get(NAME_ARG)
            .ok_or_else(|| format!("A specification of health monitor plugins is required (--{NAME_ARG})."))?;
        parse_names(raw).map(drop)
    }

    fn required_plugins(args: &PluginArgs) -> Result<Vec<String>, String> {
        args.get(NAME_ARG).map_or(Ok(Vec::new()), parse_names)
    }
}

impl HealthPlugin for Multi {
    type Prober = MultiProber;

    fn start(args: &PluginArgs, run: &HealthRun) -> Result<(Schedule, MultiProber), String> {
        Self::validate_config(args)?;
        let log = run.log().clone();
        log.info(format!("Multi-plugin health monitor: Loading plugins {}", args.require(NAME_ARG)?));
        // Dropped on an error, which stops the sub-plugins started so far.
        let mut prober = MultiProber { subs: Vec::new(), hosts: Vec::new(), log: log.clone() };
        for name in parse_names(args.require(NAME_ARG)?)? {
            let (hosts, host_rx) = channel::unbounded();
            let (report_tx, reports) = crossbeam_channel::unbounded();
            let monitor = run
                .context()
                .start_health(&name, host_rx, report_tx.into())
                .map_err(|e| format!("multi: health plugin '{name}' cannot be used: {e}"))?;
            prober.subs.push(Sub { name, monitor, hosts, reports, last: HealthReport::default() });
        }
        let secs = prober.subs.iter().map(|s| s.monitor.interval_secs()).fold(0.0, f64::max);
        let interval = Duration::from_secs_f64(secs.clamp(0.001, 86_400.0));
        log.info("Multi-plugin health monitor: Started");
        Ok((Schedule::every(interval).hold_down(interval.mul_f64(HOLD_DOWN_INTERVALS)), prober))
    }
}

export_plugin!(health: Multi);

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use crossbeam_channel::Sender;
    use vpcrouter_plugin_api::testkit::{ips, nothing_within, recv_within, HealthHarness, HealthPlugins, TestHost};
    use vpcrouter_plugin_api::RecvTimeoutError;

    use super::*;

    fn required(names: &str) -> Result<Vec<String>, String> {
        Multi::required_plugins(&PluginArgs::from_pairs([(NAME_ARG, names)]))
    }

    #[test]
    fn plugin_lists_are_checked() {
        assert_eq!(required("icmpecho:tcp"), Ok(vec!["icmpecho".into(), "tcp".into()]));
        assert_eq!(required(" file "), Ok(vec!["file".into()]));
        assert_eq!(Multi::required_plugins(&PluginArgs::default()), Ok(vec![]), "the host reports the missing option");
        assert!(required("icmpecho:multi").unwrap_err().contains("cannot include 'multi' itself"));
        assert!(required("tcp::icmpecho").unwrap_err().contains("empty plugin name"));
        assert!(required("").unwrap_err().contains("empty plugin name"));
        assert!(required("tcp:tcp").unwrap_err().contains("names 'tcp' twice"));
        let check = |v: &str| Multi::validate_config(&PluginArgs::from_pairs([(NAME_ARG, v)]));
        assert!(check("icmpecho:tcp").is_ok());
        assert!(check("multi").is_err());
        assert!(Multi::validate_config(&PluginArgs::default()).unwrap_err().contains("--multi_plugins"));
    }

    /// The test's side of a scripted sub-plugin.
    struct Script {
        /// Verdicts to report: (failed, questionable); dropping it makes the plugin give up.
        feed: Sender<(Vec<Ipv4>, Vec<Ipv4>)>,
        /// Host lists the plugin got.
        seen: Receiver<Vec<Ipv4>>,
    }

    /// The plugin's side, taken by `Scripted::start` by key (tests run in parallel).
    type Hooks = (Receiver<(Vec<Ipv4>, Vec<Ipv4>)>, Sender<Vec<Ipv4>>, Sender<()>);
    static HOOKS: Mutex<BTreeMap<String, Hooks>> = Mutex::new(BTreeMap::new());

    /// A health plugin whose verdicts the test writes.
    struct Scripted {
        feed: Receiver<(Vec<Ipv4>, Vec<Ipv4>)>,
        seen: Sender<Vec<Ipv4>>,
        stopped: Sender<()>,
        verdict: (Vec<Ipv4>, Vec<Ipv4>),
        hosts: Vec<Ipv4>,
    }

    impl PluginDescription for Scripted {
        const NAME: &'static str = "scripted";
        const DESCRIPTION: &'static str = "test";
        const VERSION: &'static str = "0.0.7";
        fn arguments() -> Vec<ArgSpec> {
            vec![ArgSpec::value("key", "K", "test"), ArgSpec::value("interval", "S", "test")]
        }
    }

    impl HealthPlugin for Scripted {
        type Prober = Scripted;
        fn start(args: &PluginArgs, _run: &HealthRun) -> Result<(Schedule, Scripted), String> {
            let (feed, seen, stopped) = HOOKS.lock().unwrap().remove(args.require("key")?).ok_or("no hooks")?;
            let interval = args.seconds("interval", 1.0, 0.01..=10.0)?;
            let prober = Scripted { feed, seen, stopped, verdict: Default::default(), hosts: Vec::new() };
            Ok((Schedule::every(interval).probes_per_interval(1).hold_down(Duration::ZERO), prober))
        }
    }

    impl Scripted {
        fn answer(&self, answers: &mut Answers) {
            for &h in &self.hosts {
                match (self.verdict.0.contains(&h), self.verdict.1.contains(&h)) {
                    (true, _) => answers.failed(h, "scripted"),
                    (false, true) => answers.questionable(h),
                    (false, false) => answers.healthy(h),
                }
            }
        }
    }

    impl Prober for Scripted {
        fn probe(&mut self, _round: Round, _hosts: &[Ipv4], answers: &mut Answers) {
            self.answer(answers);
        }
        fn answer_new_hosts(&mut self, hosts: &[Ipv4], answers: &mut Answers) {
            self.hosts = hosts.to_vec();
            let _ = self.seen.send(self.hosts.clone());
            self.answer(answers);
        }
        fn wait(&mut self, until: Instant, answers: &mut Answers) {
            match self.feed.recv_deadline(until) {
                Ok(v) => {
                    self.verdict = v;
                    self.answer(answers);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => answers.fatal("scripted: the feed is gone"),
            }
        }
    }

    impl Drop for Scripted {
        fn drop(&mut self) {
            let _ = self.stopped.send(());
        }
    }

    /// `multi` running with its scripted sub-plugins.
    struct Started {
        /// `multi`, as the host sees it.
        m: HealthHarness,
        /// One per sub-plugin, in the order given.
        scripts: Vec<Script>,
        /// A message each time a sub-plugin's prober is dropped.
        stopped: Receiver<()>,
    }

    impl std::ops::Deref for Started {
        type Target = HealthHarness;
        fn deref(&self) -> &HealthHarness {
            &self.m
        }
    }

    /// Starts `multi --multi_plugins <names>` with scripted sub-plugins `subs` (name, interval).
    fn start(test: &str, names: &str, subs: &[(&str, &str)]) -> Result<Started, (String, Receiver<()>)> {
        let (stopped_tx, stopped) = crossbeam_channel::unbounded();
        let mut plugins = HealthPlugins::default();
        let mut scripts = Vec::new();
        for (name, interval) in subs {
            let key = format!("{test}/{name}");
            let (feed, feed_rx) = crossbeam_channel::unbounded();
            let (seen_tx, seen) = crossbeam_channel::unbounded();
            HOOKS.lock().unwrap().insert(key.clone(), (feed_rx, seen_tx, stopped_tx.clone()));
            plugins = plugins.with::<Scripted>(name, &[("key", &key), ("interval", interval)]);
            scripts.push(Script { feed, seen });
        }
        match TestHost::with_plugins(plugins).start_health::<Multi>(&[(NAME_ARG, names)]) {
            Ok(m) => Ok(Started { m, scripts, stopped }),
            Err(e) => Err((e, stopped)),
        }
    }

    fn report(failed: &[&str], questionable: &[&str]) -> HealthReport {
        HealthReport::new(ips(failed), ips(questionable))
    }

    const WAIT: Duration = Duration::from_secs(2);

    #[test]
    fn union_of_sub_plugins_with_a_hold_down_of_twenty_intervals() {
        let m = start("union", "a:b", &[("a", "0.05"), ("b", "0.1")]).unwrap();
        assert_eq!(m.monitor.interval_secs(), 0.1);

        let list = ips(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        m.hosts.send(HostList::new(list.clone())).unwrap();
        for s in &m.scripts {
            assert_eq!(s.seen.recv_timeout(WAIT).ok(), Some(list.clone()), "every sub-plugin gets the host list");
        }
        assert_eq!(recv_within(&m.reports, WAIT), Some(HealthReport::default()));

        m.scripts[0].feed.send((ips(&["10.0.0.1"]), vec![])).unwrap();
        assert_eq!(recv_within(&m.reports, WAIT), Some(report(&["10.0.0.1"], &[])));
        m.scripts[1].feed.send((ips(&["10.0.0.2"]), ips(&["10.0.0.3", "10.0.0.1"]))).unwrap();
        assert_eq!(recv_within(&m.reports, WAIT), Some(report(&["10.0.0.1", "10.0.0.2"], &["10.0.0.3"])));

        // Sub-plugin a recovers: 10.0.0.1 stays failed for 20 x 0.1 s, then is only questionable.
        m.scripts[0].feed.send((vec![], vec![])).unwrap();
        let cleared = Instant::now();
        assert!(nothing_within(&m.reports, Duration::from_millis(1500)));
        let r = recv_within(&m.reports, WAIT).expect("the hold-down ends");
        assert_eq!(r, report(&["10.0.0.2"], &["10.0.0.1", "10.0.0.3"]));
        let held = cleared.elapsed();
        assert!(held >= Duration::from_millis(1900) && held <= Duration::from_millis(2300), "{held:?}");
        assert!(m.logs.contains(LogLevel::Info, "Currently failed IPs: 10.0.0.1,10.0.0.2"));
        assert!(m.logs.contains(LogLevel::Info, "Host 10.0.0.1 failed a check: reported failed by a"));

        let status = m.monitor.status();
        assert_eq!((status.params[0].0.as_str(), status.params[0].1.as_str()), (NAME_ARG, "a:b"));
        let details: serde_json::Value = serde_json::from_str(status.details.as_str()).unwrap();
        assert_eq!(details["hold_down_secs"], 2.0);
        for name in ["a", "b"] {
            let sub = &details["sub_plugins"][name];
            assert_eq!(sub["version"], "0.0.7", "{details}");
            assert_eq!(sub["params"]["key"], format!("union/{name}"));
            assert!(sub["stats"]["checks"].as_u64() > Some(0), "{details}");
            assert!(sub["hold_down_secs"].is_number(), "sub-plugin details are shown too: {details}");
        }
        assert_eq!(details["sub_plugins"]["b"]["stats"]["failed"], serde_json::json!(["10.0.0.2"]));

        let t = Instant::now();
        m.stop().unwrap();
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert_eq!(m.stopped.try_iter().count(), 2, "both sub-plugins stopped");
        assert!(m.logs.contains(LogLevel::Info, "multi health monitor plugin: Stopped"));
    }

    #[test]
    fn a_sub_plugin_that_closes_its_queue_ends_the_reports() {
        let mut m = start("gone", "a:b", &[("a", "0.1"), ("b", "0.1")]).unwrap();
        m.hosts.send(HostList::new(ips(&["10.0.0.1"]))).unwrap();
        assert_eq!(recv_within(&m.reports, WAIT), Some(HealthReport::default()));
        // Sub-plugin a gives up (its SDK closes its report queue); b goes on.
        drop(m.scripts.remove(0));
        assert!(
            matches!(m.reports.recv_timeout(WAIT), Err(RecvTimeoutError::Disconnected)),
            "multi closes its report queue without another report"
        );
        assert!(m.logs.contains(LogLevel::Error, "Multi-plugin health monitor: sub-plugin 'a' stopped reporting"));
        assert_eq!(m.stopped.recv_timeout(WAIT).map(drop), Ok(()));
        assert_eq!(m.stopped.recv_timeout(WAIT).map(drop), Ok(()), "the other sub-plugin is stopped too");
        m.stop().unwrap();
    }

    #[test]
    fn an_unknown_sub_plugin_is_named_and_the_others_are_stopped() {
        let Err((err, stopped)) = start("unknown", "a:nosuch", &[("a", "0.1")]) else { panic!("multi started") };
        assert!(err.contains("multi: health plugin 'nosuch' cannot be used: no health plugin 'nosuch'"), "{err}");
        assert_eq!(stopped.recv_timeout(WAIT).map(drop), Ok(()), "sub-plugin a is stopped");
    }
}
