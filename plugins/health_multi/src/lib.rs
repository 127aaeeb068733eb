//! The `multi` health monitor: several health plugins at once.
//!
//! `vpcrouter -H multi --multi_plugins icmpecho:tcp --tcp_check_port 22`
//!
//! * `--multi_plugins` (required) names health plugins separated by `:`. Each is loaded by
//!   name through the host ([`PluginContext::loader`]), so third-party health plugins can
//!   be combined too, and their own options are accepted on the command line
//!   ([`HealthPlugin::required_plugins`] tells the host which to load). `multi` itself,
//!   empty names and duplicates are refused.
//! * Every host list goes to every sub-plugin. A host is failed when ANY sub-plugin
//!   currently reports it failed, and stays failed for 20 × the largest sub-plugin
//!   interval after the last sub-plugin stopped reporting it (on top of the sub-plugin's
//!   own hold-down). Questionable hosts are combined the same way; a failed host is never
//!   also questionable.
//! * The FULL combined report is sent once after the first host list and whenever it
//!   changes. If a sub-plugin closes its report queue, `multi` stops reporting too, so the
//!   host notices.

#![deny(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};
use vpcrouter_plugin_api::export::PluginDescription;
use vpcrouter_plugin_api::spec::sort_ips;
use vpcrouter_plugin_api::worker::{StopToken, Worker};
use vpcrouter_plugin_api::{
    channel, ArgSpec, HealthBox, HealthPlugin, HealthReport, HostList, Logger, PluginArgs,
    PluginContext, RReceiver, RSender, RString,
};

const NAME_ARG: &str = "multi_plugins";
/// The combined hold-down, in multiples of the largest sub-plugin interval.
pub const HOLD_DOWN_INTERVALS: f64 = 20.0;
/// How often forwarding threads look at the stop signal.
const TICK: Duration = Duration::from_millis(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

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

/// The value of `--multi_plugins` in a raw command line (`--multi_plugins a:b` or `=a:b`).
fn names_in_argv(argv: &[String]) -> Option<&str> {
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        if arg == "--" {
            return None;
        }
        if arg == "--multi_plugins" {
            return it.next().map(String::as_str);
        }
        if let Some(v) = arg.strip_prefix("--multi_plugins=") {
            return Some(v);
        }
    }
    None
}

/// What the combining thread reacts to.
enum Ev {
    Hosts(HostList),
    Report(usize, HealthReport),
    Gone(usize),
}

/// Combined verdicts with the hold-down.
#[derive(Debug)]
struct Combiner {
    hold: Duration,
    subs: Vec<HealthReport>,
    hosts: Option<BTreeSet<String>>,
    /// ip → (last time some sub-plugin reported it, reported by one now).
    failed: BTreeMap<String, (Instant, bool)>,
    questionable: BTreeMap<String, (Instant, bool)>,
}

fn refresh(seen: &mut BTreeMap<String, (Instant, bool)>, now_in: BTreeSet<&str>, now: Instant, hold: Duration) {
    for (ip, (at, active)) in seen.iter_mut() {
        if *active || now_in.contains(ip.as_str()) {
            *at = now;
        }
        *active = now_in.contains(ip.as_str());
    }
    for ip in now_in {
        seen.entry(ip.to_string()).or_insert((now, true));
    }
    seen.retain(|_, (at, active)| *active || now < *at + hold);
}

impl Combiner {
    fn new(subs: usize, hold: Duration) -> Combiner {
        Combiner {
            hold,
            subs: vec![HealthReport::default(); subs],
            hosts: None,
            failed: BTreeMap::new(),
            questionable: BTreeMap::new(),
        }
    }

    /// The combined report at `now`.
    fn report(&mut self, now: Instant) -> HealthReport {
        let union = |pick: fn(&HealthReport) -> &[RString], subs: &[HealthReport]| -> BTreeSet<String> {
            subs.iter().flat_map(|r| pick(r).iter().map(|s| s.to_string())).collect()
        };
        let failed_now = union(|r| &r.failed, &self.subs);
        let questionable_now = union(|r| &r.questionable, &self.subs);
        refresh(&mut self.failed, failed_now.iter().map(String::as_str).collect(), now, self.hold);
        refresh(&mut self.questionable, questionable_now.iter().map(String::as_str).collect(), now, self.hold);
        let listed = |ip: &String| self.hosts.as_ref().is_none_or(|h| h.contains(ip));
        let mut failed: Vec<RString> =
            self.failed.keys().filter(|ip| listed(ip)).map(|ip| ip.as_str().into()).collect();
        let mut questionable: Vec<RString> = self
            .questionable
            .keys()
            .filter(|ip| listed(ip) && !self.failed.contains_key(*ip))
            .map(|ip| ip.as_str().into())
            .collect();
        sort_ips(&mut failed);
        sort_ips(&mut questionable);
        HealthReport { failed: failed.into(), questionable: questionable.into() }
    }

    /// When a held host next expires.
    fn next_expiry(&self) -> Option<Instant> {
        self.failed
            .values()
            .chain(self.questionable.values())
            .filter(|(_, active)| !active)
            .map(|(at, _)| *at + self.hold)
            .min()
    }
}

#[derive(Debug, Default)]
struct Shared {
    reports_sent: u64,
    last: HealthReport,
}

fn lock(s: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn joined(ips: &[RString]) -> String {
    ips.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

/// What the combining thread talks to.
struct Io {
    names: Vec<String>,
    sub_hosts: Vec<RSender<HostList>>,
    events: Receiver<Ev>,
    reports: RSender<HealthReport>,
    log: Logger,
    shared: Arc<Mutex<Shared>>,
}

/// The combining thread.
fn combine(mut c: Combiner, io: Io, stop: StopToken) {
    let Io { names, sub_hosts, events, reports, log, shared } = io;
    let mut last: Option<HealthReport> = None;
    loop {
        let wait = c.next_expiry().map_or(Duration::from_secs(1), |t| {
            t.saturating_duration_since(Instant::now()) + Duration::from_millis(1)
        });
        let ev = select! {
            recv(events) -> ev => match ev { Ok(ev) => Some(ev), Err(_) => return },
            recv(stop.receiver()) -> _ => return,
            default(wait) => None,
        };
        match ev {
            Some(Ev::Hosts(list)) => {
                log.debug(format!("Sending list of {} IPs to {} plugins.", list.hosts.len(), sub_hosts.len()));
                for tx in &sub_hosts {
                    // A sub-plugin that stopped reading is noticed when its report queue closes.
                    let _ = tx.send(list.clone());
                }
                c.hosts = Some(list.hosts.iter().map(|s| s.to_string()).collect());
            }
            Some(Ev::Report(i, r)) => {
                log.debug(format!(
                    "Sub-plugin '{}' reports failed: [{}] questionable: [{}]",
                    names[i],
                    joined(&r.failed),
                    joined(&r.questionable)
                ));
                c.subs[i] = r;
            }
            Some(Ev::Gone(i)) => {
                log.error(format!("Multi-plugin health monitor: sub-plugin '{}' stopped reporting", names[i]));
                return;
            }
            None => {}
        }
        if c.hosts.is_none() {
            continue;
        }
        let report = c.report(Instant::now());
        if last.as_ref() == Some(&report) {
            continue;
        }
        if !report.failed.is_empty() {
            log.info(format!("Multi-plugin health monitor: Reporting combined list of failed IPs: {}", joined(&report.failed)));
        }
        if !report.questionable.is_empty() {
            log.info(format!(
                "Multi-plugin health monitor: Reporting combined list of questionable IPs: {}",
                joined(&report.questionable)
            ));
        }
        if report.failed.is_empty() && report.questionable.is_empty() {
            log.info("Multi-plugin health monitor: All monitored hosts are healthy");
        }
        {
            let mut s = lock(&shared);
            s.reports_sent += 1;
            s.last = report.clone();
        }
        if reports.send(report.clone()).is_err() {
            return;
        }
        last = Some(report);
    }
}

/// Forwards one plugin queue into the combining thread's channel.
fn forward<T: Send + 'static>(
    name: &str,
    rx: RReceiver<T>,
    tx: Sender<Ev>,
    wrap: impl Fn(T) -> Ev + Send + 'static,
    gone: Option<usize>,
) -> Result<Worker, String> {
    Worker::spawn(name, move |stop| loop {
        match rx.recv_timeout(TICK) {
            Ok(msg) => {
                if tx.send(wrap(msg)).is_err() {
                    return;
                }
            }
            Err(e) if e.is_disconnected() => {
                if let Some(i) = gone {
                    let _ = tx.send(Ev::Gone(i));
                }
                return;
            }
            Err(_) => {
                if stop.is_stopped() {
                    return;
                }
            }
        }
    })
}

/// A started sub-plugin.
struct Sub {
    name: String,
    plugin: HealthBox,
}

/// The `multi` health plugin.
pub struct Multi {
    raw: String,
    names: Vec<String>,
    subs: Vec<Sub>,
    workers: Vec<Worker>,
    shared: Arc<Mutex<Shared>>,
    max_interval: f64,
    log: Option<Logger>,
}

impl Multi {
    fn stop_subs(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for mut sub in self.subs.drain(..) {
            if let Err(e) = sub.plugin.stop().into_result() {
                errors.push(format!("sub-plugin '{}': {e}", sub.name));
            }
        }
        errors
    }
}

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
        let raw = args.get(NAME_ARG).ok_or_else(|| {
            format!("A specification of health monitor plugins is required (--{NAME_ARG}).")
        })?;
        parse_names(raw).map(drop)
    }
}

impl HealthPlugin for Multi {
    fn required_plugins(argv: &[String]) -> Result<Vec<String>, String> {
        names_in_argv(argv).map_or(Ok(Vec::new()), parse_names)
    }

    fn create(args: &PluginArgs) -> Result<Self, String> {
        Self::validate_config(args)?;
        let raw = args.require(NAME_ARG)?.to_string();
        Ok(Multi {
            names: parse_names(&raw)?,
            raw,
            subs: Vec::new(),
            workers: Vec::new(),
            shared: Arc::default(),
            max_interval: 0.0,
            log: None,
        })
    }

    fn start(
        &mut self,
        ctx: PluginContext,
        hosts: RReceiver<HostList>,
        reports: RSender<HealthReport>,
    ) -> Result<(), String> {
        let log = ctx.log.clone();
        log.info(format!("Multi-plugin health monitor: Loading plugins {}", self.raw));
        let (ev_tx, ev_rx) = crossbeam_channel::unbounded();
        let mut sub_hosts = Vec::new();
        let mut report_rxs = Vec::new();
        for name in self.names.clone() {
            let started = ctx.loader.load_health(name.as_str().into()).into_result().and_then(|mut plugin| {
                let (htx, hrx) = channel::unbounded();
                let (rtx, rrx) = channel::unbounded();
                let sub_ctx = PluginContext { plugin_name: name.as_str().into(), ..ctx.clone() };
                plugin.start(sub_ctx, hrx, rtx).into_result().map(|()| (plugin, htx, rrx))
            });
            match started {
                Ok((plugin, htx, rrx)) => {
                    self.max_interval = self.max_interval.max(plugin.interval_secs());
                    self.subs.push(Sub { name, plugin });
                    sub_hosts.push(htx);
                    report_rxs.push(rrx);
                }
                Err(e) => {
                    self.stop_subs();
                    return Err(format!("multi: health plugin '{name}' cannot be used: {e}"));
                }
            }
        }
        let spawned = (|| -> Result<(), String> {
            for (i, rrx) in report_rxs.into_iter().enumerate() {
                let w = forward(&format!("MultiHealth:{}", self.names[i]), rrx, ev_tx.clone(), move |r| Ev::Report(i, r), Some(i))?;
                self.workers.push(w);
            }
            self.workers.push(forward("MultiHealth:hosts", hosts, ev_tx, Ev::Hosts, None)?);
            let hold = Duration::from_secs_f64(self.max_interval * HOLD_DOWN_INTERVALS);
            let c = Combiner::new(self.subs.len(), hold);
            let io = Io {
                names: self.names.clone(),
                sub_hosts,
                events: ev_rx,
                reports,
                log: log.clone(),
                shared: self.shared.clone(),
            };
            self.workers.push(Worker::spawn("MultiHealth", move |stop| combine(c, io, stop))?);
            Ok(())
        })();
        if let Err(e) = spawned {
            self.workers.clear();
            self.stop_subs();
            return Err(e);
        }
        log.info("Multi-plugin health monitor: Started");
        self.log = Some(log);
        Ok(())
    }

    fn stop(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut errors = Vec::new();
        for w in self.workers.drain(..) {
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
            if let Err(e) = w.stop(left) {
                errors.push(e);
            }
        }
        if let Some(log) = &self.log {
            log.info("Multi-plugin health monitor: Stopping plugins");
        }
        errors.extend(self.stop_subs());
        if let Some(log) = &self.log {
            log.info("Multi-plugin health monitor: Stopped");
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    fn info(&self) -> serde_json::Value {
        let mut subs = serde_json::Map::new();
        let (mut checks, mut failures) = (0u64, 0u64);
        for sub in &self.subs {
            let info: serde_json::Value =
                serde_json::from_str(sub.plugin.info().as_str()).unwrap_or_default();
            checks += info["stats"]["checks"].as_u64().unwrap_or(0);
            failures += info["stats"]["failures"].as_u64().unwrap_or(0);
            subs.insert(sub.name.clone(), info);
        }
        let s = lock(&self.shared);
        let list = |ips: &[RString]| ips.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        serde_json::json!({
            "version": Self::VERSION,
            "params": {NAME_ARG: self.raw},
            "hold_down_secs": self.max_interval * HOLD_DOWN_INTERVALS,
            "sub_plugins": subs,
            "stats": {
                "checks": checks,
                "failures": failures,
                "reports_sent": s.reports_sent,
                "failed": list(&s.last.failed),
                "questionable": list(&s.last.questionable),
            },
        })
    }

    fn interval_secs(&self) -> f64 {
        self.max_interval
    }
}

vpcrouter_plugin_api::export_plugin!(health: Multi);

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use vpcrouter_plugin_api::abi_stable::sabi_trait::TD_Opaque;
    use vpcrouter_plugin_api::abi_stable::std_types::{RArc, RResult, RStr};
    use vpcrouter_plugin_api::context::PluginLoader_TO;
    use vpcrouter_plugin_api::export::health_box;
    use vpcrouter_plugin_api::{LogLevel, PluginLoader};
    use vpcrouter_testkit::{context, nothing_within, recv_within};

    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn plugin_lists_are_checked() {
        assert_eq!(Multi::required_plugins(&argv("vpcrouter -H multi --multi_plugins icmpecho:tcp")), Ok(vec!["icmpecho".into(), "tcp".into()]));
        assert_eq!(Multi::required_plugins(&argv("vpcrouter --multi_plugins=file -H multi")), Ok(vec!["file".into()]));
        assert_eq!(Multi::required_plugins(&argv("vpcrouter -H multi")), Ok(vec![]));
        assert_eq!(Multi::required_plugins(&argv("vpcrouter -H multi -- --multi_plugins a")), Ok(vec![]));
        let err = |s: &str| Multi::required_plugins(&argv(s)).unwrap_err();
        assert!(err("x --multi_plugins icmpecho:multi").contains("cannot include 'multi' itself"));
        assert!(err("x --multi_plugins tcp::icmpecho").contains("empty plugin name"));
        assert!(err("x --multi_plugins=").contains("empty plugin name"));
        assert!(err("x --multi_plugins tcp:tcp").contains("names 'tcp' twice"));
        let check = |v: &str| Multi::validate_config(&PluginArgs::from_pairs([(NAME_ARG, v)]));
        assert!(check("icmpecho:tcp").is_ok());
        assert!(check("multi").is_err());
        assert!(Multi::validate_config(&PluginArgs::default()).unwrap_err().contains("--multi_plugins"));
    }

    /// A sub-plugin whose reports the test writes; it passes host lists back to the test.
    struct Scripted {
        interval: f64,
        feed: Option<crossbeam_channel::Receiver<HealthReport>>,
        seen: crossbeam_channel::Sender<HostList>,
        stopped: crossbeam_channel::Sender<()>,
        worker: Option<Worker>,
    }

    impl PluginDescription for Scripted {
        const NAME: &'static str = "scripted";
        const DESCRIPTION: &'static str = "test";
        const VERSION: &'static str = "0";
    }

    impl HealthPlugin for Scripted {
        fn create(_: &PluginArgs) -> Result<Self, String> {
            Err("created by the test".into())
        }
        fn start(&mut self, _: PluginContext, hosts: RReceiver<HostList>, reports: RSender<HealthReport>) -> Result<(), String> {
            let (feed, seen) = (self.feed.take().ok_or("started twice")?, self.seen.clone());
            self.worker = Some(Worker::spawn("scripted", move |stop| {
                while !stop.wait(Duration::from_millis(5)) {
                    while let Ok(h) = hosts.try_recv() {
                        let _ = seen.send(h);
                    }
                    while let Ok(r) = feed.try_recv() {
                        if reports.send(r).is_err() {
                            return;
                        }
                    }
                }
            })?);
            Ok(())
        }
        fn stop(&mut self) -> Result<(), String> {
            let _ = self.stopped.send(());
            self.worker.take().map_or(Ok(()), |w| w.stop(Duration::from_secs(1)))
        }
        fn info(&self) -> serde_json::Value {
            serde_json::json!({"stats": {"checks": 10, "failures": 1}})
        }
        fn interval_secs(&self) -> f64 {
            self.interval
        }
    }

    #[derive(Clone)]
    struct TestLoader(Arc<Mutex<HashMap<String, HealthBox>>>);

    impl PluginLoader for TestLoader {
        fn load_health(&self, name: RStr<'_>) -> RResult<HealthBox, RString> {
            let mut subs = self.0.lock().unwrap();
            match subs.remove(name.as_str()) {
                Some(b) => RResult::ROk(b),
                None => RResult::RErr(format!("no health plugin '{name}'").into()),
            }
        }
    }

    struct Sub {
        feed: crossbeam_channel::Sender<HealthReport>,
        seen: crossbeam_channel::Receiver<HostList>,
    }

    fn report(failed: &[&str], questionable: &[&str]) -> HealthReport {
        let v = |ips: &[&str]| ips.iter().map(|&s| RString::from(s)).collect();
        HealthReport { failed: v(failed), questionable: v(questionable) }
    }

    #[test]
    fn union_of_sub_plugins_with_a_hold_down_of_twenty_intervals() {
        let (stopped_tx, stopped_rx) = crossbeam_channel::unbounded();
        let mut boxes = HashMap::new();
        let mut subs = Vec::new();
        for (name, interval) in [("a", 0.05), ("b", 0.1)] {
            let (feed, feed_rx) = crossbeam_channel::unbounded();
            let (seen_tx, seen) = crossbeam_channel::unbounded();
            let s = Scripted { interval, feed: Some(feed_rx), seen: seen_tx, stopped: stopped_tx.clone(), worker: None };
            boxes.insert(name.to_string(), health_box(s));
            subs.push(Sub { feed, seen });
        }
        let (ctx, logs) = context("multi");
        let ctx = PluginContext {
            loader: PluginLoader_TO::from_ptr(RArc::new(TestLoader(Arc::new(Mutex::new(boxes)))), TD_Opaque),
            ..ctx
        };
        let mut multi = Multi::create(&PluginArgs::from_pairs([(NAME_ARG, "a:b")])).unwrap();
        let (hosts, host_rx) = channel::unbounded();
        let (report_tx, reports) = channel::unbounded();
        multi.start(ctx, host_rx, report_tx).unwrap();
        assert_eq!(multi.interval_secs(), 0.1);
        let wait = Duration::from_secs(2);

        let list = HostList { hosts: ["10.0.0.1", "10.0.0.2", "10.0.0.3"].iter().map(|&s| s.into()).collect() };
        hosts.send(list.clone()).unwrap();
        for s in &subs {
            assert_eq!(s.seen.recv_timeout(wait).ok(), Some(list.clone()), "every sub-plugin gets the host list");
        }
        assert_eq!(recv_within(&reports, wait), Some(HealthReport::default()));

        subs[0].feed.send(report(&["10.0.0.1"], &[])).unwrap();
        assert_eq!(recv_within(&reports, wait), Some(report(&["10.0.0.1"], &[])));
        subs[1].feed.send(report(&["10.0.0.2"], &["10.0.0.3", "10.0.0.1"])).unwrap();
        assert_eq!(recv_within(&reports, wait), Some(report(&["10.0.0.1", "10.0.0.2"], &["10.0.0.3"])));

        // Sub-plugin a recovers: 10.0.0.1 stays failed for 20 x 0.1 s, then is only questionable.
        subs[0].feed.send(report(&[], &[])).unwrap();
        let cleared = Instant::now();
        assert!(nothing_within(&reports, Duration::from_millis(1500)));
        let r = recv_within(&reports, wait).expect("the hold-down ends");
        assert_eq!(r, report(&["10.0.0.2"], &["10.0.0.1", "10.0.0.3"]));
        let held = cleared.elapsed();
        assert!(held >= Duration::from_millis(1950) && held <= Duration::from_millis(2300), "{held:?}");
        assert!(logs.contains(LogLevel::Info, "Reporting combined list of failed IPs: 10.0.0.1,10.0.0.2"));

        let info = multi.info();
        assert_eq!(info["stats"]["checks"], 20);
        assert_eq!(info["stats"]["failures"], 2);
        assert_eq!(info["params"][NAME_ARG], "a:b");
        assert_eq!(info["hold_down_secs"], 2.0);

        let t = Instant::now();
        multi.stop().unwrap();
        assert!(t.elapsed() < Duration::from_secs(2));
        assert_eq!(stopped_rx.try_iter().count(), 2, "both sub-plugins stopped");
        assert!(logs.contains(LogLevel::Info, "Multi-plugin health monitor: Stopped"));
    }

    #[test]
    fn an_unknown_sub_plugin_is_named() {
        let mut multi = Multi::create(&PluginArgs::from_pairs([(NAME_ARG, "nosuch")])).unwrap();
        let (ctx, _) = context("multi");
        let (_hosts, host_rx) = channel::unbounded();
        let (report_tx, _reports) = channel::unbounded();
        let err = multi.start(ctx, host_rx, report_tx).unwrap_err();
        assert!(err.contains("'nosuch'"), "{err}");
    }
}
