//! The `file` health monitor: host health read from a file, for tests and drills.
//!
//! `vpcrouter -H file --health_file /run/vpcrouter/health.json` takes its verdicts from a
//! file an operator (or a test) edits. Two formats are accepted:
//!
//! * JSON: `{"failed": ["10.1.0.5"], "questionable": ["10.1.1.7"]}`, either key optional;
//! * plain text: one IPv4 address per line, all of them failed; blank lines and text
//!   after `#` are ignored.
//!
//! A missing file means every host is healthy. Content that cannot be parsed is reported
//! as an error and the previous verdict stays in effect. The file is followed with
//! [`FileWatch`] (rename-safe, like the `configfile` watcher) and also re-read every
//! `--health_file_interval` seconds (default 1), in case events are missed.
//!
//! The monitor sends a full [`HealthReport`], limited to the hosts of the current host
//! list and sorted, once after the first host list and then whenever it changes. A host
//! listed as both failed and questionable is failed. Its status counts a check per host of
//! the host list at each read of the file, and a failure per failed one.

#![deny(unsafe_code)]

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vpcrouter_filewatch::{FileWatch, Wake};
use vpcrouter_plugin_api::export::PluginDescription;
use vpcrouter_plugin_api::spec::{parse_ipv4, sort_ips};
use vpcrouter_plugin_api::worker::{StopToken, Worker};
use vpcrouter_plugin_api::{
    ArgSpec, HealthPlugin, HealthReport, HostList, Logger, PluginArgs, PluginContext, RReceiver,
    RSender, RString,
};

/// How often the thread looks for a new host list.
const TICK: Duration = Duration::from_millis(100);
/// How long `stop` waits for the thread.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// Allowed range of `--health_file_interval`, in seconds.
const INTERVAL_RANGE: (f64, f64) = (0.1, 3600.0);

/// Failed and questionable hosts as the file lists them (canonical IPv4 text).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Verdict {
    failed: BTreeSet<String>,
    questionable: BTreeSet<String>,
}

/// Parses one address for the list `list`; the error names it.
fn parse_ip(value: &str, list: &str) -> Result<String, String> {
    parse_ipv4(value)
        .map(|ip| ip.to_string())
        .ok_or_else(|| format!("'{value}' in {list} is not a valid IPv4 address"))
}

/// Parses the health file: a JSON object, or plain text with one failed IP per line.
fn parse_health(text: &str) -> Result<Verdict, String> {
    if text.trim_start().starts_with('{') {
        return parse_json_health(text);
    }
    let mut verdict = Verdict::default();
    for (n, line) in text.lines().enumerate() {
        let ip = line.split('#').next().unwrap_or_default().trim();
        if !ip.is_empty() {
            verdict.failed.insert(parse_ip(ip, &format!("line {}", n + 1))?);
        }
    }
    Ok(verdict)
}

fn parse_json_health(text: &str) -> Result<Verdict, String> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("the health file is not valid JSON: {e}"))?;
    let obj = value.as_object().ok_or("the health file must be a JSON object")?;
    let mut verdict = Verdict::default();
    for (key, list) in obj {
        let target = match key.as_str() {
            "failed" => &mut verdict.failed,
            "questionable" => &mut verdict.questionable,
            _ => {
                return Err(format!("unknown key '{key}'; expected \"failed\" or \"questionable\""))
            }
        };
        let items = list
            .as_array()
            .ok_or_else(|| format!("the value of '{key}' must be a list of IPv4 addresses"))?;
        for item in items {
            let ip = item.as_str().ok_or_else(|| format!("{item} in '{key}' is not a string"))?;
            target.insert(parse_ip(ip, &format!("'{key}'"))?);
        }
    }
    Ok(verdict)
}

/// The report for `hosts`: only listed hosts, sorted; failed takes precedence.
fn report_for(verdict: &Verdict, hosts: &HostList) -> HealthReport {
    let pick = |set: &BTreeSet<String>, skip: &BTreeSet<String>| {
        let mut ips: Vec<RString> = hosts
            .hosts
            .iter()
            .filter(|h| set.contains(h.as_str()) && !skip.contains(h.as_str()))
            .cloned()
            .collect();
        sort_ips(&mut ips);
        ips.dedup();
        ips.into()
    };
    HealthReport {
        failed: pick(&verdict.failed, &BTreeSet::new()),
        questionable: pick(&verdict.questionable, &verdict.failed),
    }
}

fn joined(ips: &[RString]) -> String {
    ips.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

/// Counters and the last report, for the status server.
#[derive(Debug, Default)]
struct Stats {
    reads: u64,
    /// Host verdicts taken from the file: the hosts of the list at each read.
    checks: u64,
    /// Those verdicts that were "failed".
    failures: u64,
    errors: u64,
    reports_sent: u64,
    last_report: HealthReport,
}

fn lock(stats: &Mutex<Stats>) -> MutexGuard<'_, Stats> {
    stats.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the last read of the file found, so each problem is logged once.
#[derive(Debug, PartialEq, Eq)]
enum FileState {
    Unread,
    Good,
    Missing,
    Bad(String),
}

/// The monitor's state, owned by its thread.
struct Monitor {
    path: PathBuf,
    log: Logger,
    reports: RSender<HealthReport>,
    verdict: Verdict,
    file_state: FileState,
    hosts: Option<HostList>,
    last_sent: Option<HealthReport>,
    stats: Arc<Mutex<Stats>>,
}

impl Monitor {
    /// Reads the file; keeps the previous verdict when its content is bad.
    fn reread(&mut self) {
        lock(&self.stats).reads += 1;
        let read = std::fs::read_to_string(&self.path);
        let (state, verdict) = match read {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                (FileState::Missing, Ok(Verdict::default()))
            }
            Err(e) => {
                let why = format!("Cannot read health file '{}': {e}", self.path.display());
                (FileState::Bad(why.clone()), Err(why))
            }
            Ok(text) => match parse_health(&text) {
                Ok(v) => (FileState::Good, Ok(v)),
                Err(why) => {
                    let why = format!("Health file '{}' ignored: {why}", self.path.display());
                    (FileState::Bad(why.clone()), Err(why))
                }
            },
        };
        if state != self.file_state {
            match &state {
                FileState::Missing => self.log.info(format!(
                    "Health file '{}' does not exist: all hosts are healthy",
                    self.path.display()
                )),
                FileState::Bad(why) => {
                    self.log.error(why);
                    lock(&self.stats).errors += 1;
                }
                FileState::Good | FileState::Unread => {}
            }
            self.file_state = state;
        }
        if let Ok(verdict) = verdict {
            if verdict != self.verdict {
                self.log.debug(format!("Health file verdict: {verdict:?}"));
                self.verdict = verdict;
            }
        }
        if let Some(hosts) = &self.hosts {
            let failed = report_for(&self.verdict, hosts).failed.len();
            let mut stats = lock(&self.stats);
            stats.checks += hosts.hosts.len() as u64;
            stats.failures += failed as u64;
        }
    }

    /// Sends the report when there is a host list and the report changed; false when the
    /// host closed the report queue.
    fn publish(&mut self) -> bool {
        let Some(hosts) = &self.hosts else { return true };
        let report = report_for(&self.verdict, hosts);
        if self.last_sent.as_ref() == Some(&report) {
            return true;
        }
        if !report.failed.is_empty() {
            self.log.info(format!("Currently failed IPs: {}", joined(&report.failed)));
        }
        if !report.questionable.is_empty() {
            self.log.info(format!("Currently questionable IPs: {}", joined(&report.questionable)));
        }
        if report.failed.is_empty() && report.questionable.is_empty() {
            self.log.info("All monitored hosts are healthy");
        }
        {
            let mut stats = lock(&self.stats);
            stats.reports_sent += 1;
            stats.last_report = report.clone();
        }
        if self.reports.send(report.clone()).is_err() {
            self.log.debug("The health report queue is closed");
            return false;
        }
        self.last_sent = Some(report);
        true
    }
}

/// The monitor thread: follows file changes, polls the file, reads host lists.
fn run(
    mut m: Monitor,
    mut watch: FileWatch,
    interval: Duration,
    hosts: RReceiver<HostList>,
    stop: &StopToken,
) {
    let mut file_due = false;
    let mut next_poll = Instant::now() + interval;
    loop {
        let now = Instant::now();
        if file_due || now >= next_poll {
            if file_due {
                m.log.debug(format!("Detected file change event for {}", m.path.display()));
            }
            watch.clear();
            next_poll = now + interval;
            m.reread();
        }
        let mut latest = None;
        while let Ok(list) = hosts.try_recv() {
            latest = Some(list);
        }
        if let Some(list) = latest {
            m.log.debug(format!("New host list: {}", joined(&list.hosts)));
            m.hosts = Some(list);
        }
        if !m.publish() {
            return;
        }

        file_due = false;
        match watch.wait(stop.receiver(), Some((now + TICK).min(next_poll))) {
            Wake::Stopped => return,
            Wake::Changed => file_due = true,
            Wake::Error(e) => {
                m.log.warn(format!("File watch error, re-reading the health file: {e}"));
            }
            Wake::Event(_) | Wake::Timeout => {}
        }
    }
}

/// The health plugin.
pub struct HealthFile {
    /// The path as given on the command line.
    file: String,
    /// The same path made absolute (symlinks kept).
    path: PathBuf,
    interval: f64,
    stats: Arc<Mutex<Stats>>,
    log: Option<Logger>,
    worker: Option<Worker>,
}

fn interval_from(args: &PluginArgs) -> Result<f64, String> {
    let secs = args.parse::<f64>("health_file_interval")?.unwrap_or(1.0);
    let (min, max) = INTERVAL_RANGE;
    if !(min..=max).contains(&secs) {
        return Err(format!("--health_file_interval must be between {min} and {max} seconds"));
    }
    Ok(secs)
}

impl PluginDescription for HealthFile {
    const NAME: &'static str = "file";
    const DESCRIPTION: &'static str =
        "Reads failed and questionable hosts from a file (tests, drills)";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn arguments() -> Vec<ArgSpec> {
        vec![
            ArgSpec::value(
                "health_file",
                "PATH",
                "file listing failed hosts: JSON {\"failed\": [...], \"questionable\": [...]} \
                 or one IP per line (only for 'file' health monitor plugin)",
            )
            .required(),
            ArgSpec::value(
                "health_file_interval",
                "SECS",
                "re-read the health file at least this often, default 1 (only for 'file' \
                 health monitor plugin)",
            )
            .default("1"),
        ]
    }

    fn validate_config(args: &PluginArgs) -> Result<(), String> {
        interval_from(args)?;
        let file = args.require("health_file")?;
        if file.is_empty() || Path::new(file).file_name().is_none() {
            return Err(format!("--health_file: '{file}' is not a file name"));
        }
        Ok(())
    }
}

impl HealthPlugin for HealthFile {
    fn create(args: &PluginArgs) -> Result<Self, String> {
        Self::validate_config(args)?;
        let file = args.require("health_file")?;
        let path = std::path::absolute(file).map_err(|e| format!("--health_file '{file}': {e}"))?;
        Ok(HealthFile {
            file: file.to_string(),
            path,
            interval: interval_from(args)?,
            stats: Arc::default(),
            log: None,
            worker: None,
        })
    }

    fn start(
        &mut self,
        ctx: PluginContext,
        hosts: RReceiver<HostList>,
        reports: RSender<HealthReport>,
    ) -> Result<(), String> {
        let log = ctx.log;
        log.info(format!("File health monitor plugin: Starting to watch '{}'.", self.file));
        let watch = FileWatch::new(&self.path).unwrap_or_else(|e| {
            log.warn(format!(
                "Cannot watch directory '{}' ({}); re-reading the health file every {} s only",
                e.dir.display(),
                e.source,
                self.interval
            ));
            FileWatch::idle()
        });

        let mut monitor = Monitor {
            path: self.path.clone(),
            log: log.clone(),
            reports,
            verdict: Verdict::default(),
            file_state: FileState::Unread,
            hosts: None,
            last_sent: None,
            stats: self.stats.clone(),
        };
        monitor.reread();
        let interval = Duration::from_secs_f64(self.interval);
        self.worker = Some(Worker::spawn("FileHealth", move |stop| {
            run(monitor, watch, interval, hosts, &stop)
        })?);
        self.log = Some(log);
        Ok(())
    }

    fn stop(&mut self) -> Result<(), String> {
        self.worker.take().map_or(Ok(()), |w| w.stop(STOP_TIMEOUT))?;
        if let Some(log) = &self.log {
            log.info("File health monitor plugin: Stopped");
        }
        Ok(())
    }

    fn info(&self) -> serde_json::Value {
        let stats = lock(&self.stats);
        let list = |ips: &[RString]| ips.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        serde_json::json!({
            "version": Self::VERSION,
            "params": {"health_file": self.file, "health_file_interval": self.interval},
            "stats": {
                "checks": stats.checks,
                "failures": stats.failures,
                "reads": stats.reads,
                "errors": stats.errors,
                "reports_sent": stats.reports_sent,
                "failed": list(&stats.last_report.failed),
                "questionable": list(&stats.last_report.questionable),
            },
        })
    }

    fn interval_secs(&self) -> f64 {
        self.interval
    }
}

vpcrouter_plugin_api::export_plugin!(health: HealthFile);

#[cfg(test)]
mod tests {
    use std::fs;

    use vpcrouter_plugin_api::channel::unbounded;
    use vpcrouter_plugin_api::{LogLevel, RSender};
    use vpcrouter_testkit::{context, nothing_within, recv_within, LogCapture};

    use super::*;

    const WAIT: Duration = Duration::from_secs(3);
    const QUIET: Duration = Duration::from_millis(400);

    fn set(ips: &[&str]) -> BTreeSet<String> {
        ips.iter().map(|s| s.to_string()).collect()
    }

    fn host_list(ips: &[&str]) -> HostList {
        HostList { hosts: ips.iter().map(|&ip| ip.into()).collect() }
    }

    fn strings(ips: &[RString]) -> Vec<&str> {
        ips.iter().map(|s| s.as_str()).collect()
    }

    #[test]
    fn parses_json() {
        let v =
            parse_health(r#"{"failed": ["10.0.0.2", "10.0.0.1"], "questionable": ["10.0.0.3"]}"#)
                .unwrap();
        assert_eq!(v.failed, set(&["10.0.0.1", "10.0.0.2"]));
        assert_eq!(v.questionable, set(&["10.0.0.3"]));
        let v = parse_health(r#" {"questionable": []} "#).unwrap();
        assert_eq!(v, Verdict::default());
        assert_eq!(parse_health("{}").unwrap(), Verdict::default());
    }

    #[test]
    fn json_errors_name_the_problem() {
        let err = |text: &str| parse_health(text).unwrap_err();
        assert_eq!(
            err(r#"{"failled": []}"#),
            "unknown key 'failled'; expected \"failed\" or \"questionable\""
        );
        assert_eq!(
            err(r#"{"failed": ["1.1.1."]}"#),
            "'1.1.1.' in 'failed' is not a valid IPv4 address"
        );
        assert_eq!(
            err(r#"{"failed": "10.0.0.1"}"#),
            "the value of 'failed' must be a list of IPv4 addresses"
        );
        assert_eq!(err(r#"{"questionable": [7]}"#), "7 in 'questionable' is not a string");
        assert!(err(r#"{"failed": ["#).starts_with("the health file is not valid JSON"));
    }

    #[test]
    fn parses_plain_text() {
        let v =
            parse_health("# drill 3\n10.0.0.7\n\n  10.0.0.5  # the NAT box\n10.0.0.7\n").unwrap();
        assert_eq!(v.failed, set(&["10.0.0.5", "10.0.0.7"]));
        assert!(v.questionable.is_empty());
        assert_eq!(parse_health("").unwrap(), Verdict::default());
        assert_eq!(
            parse_health("10.0.0.1\nnot-an-ip\n").unwrap_err(),
            "'not-an-ip' in line 2 is not a valid IPv4 address"
        );
    }

    #[test]
    fn report_keeps_listed_hosts_sorted_and_failed_wins() {
        let verdict = Verdict {
            failed: set(&["10.0.0.10", "10.0.0.9", "10.9.9.9"]),
            questionable: set(&["10.0.0.9", "10.0.0.2"]),
        };
        let report =
            report_for(&verdict, &host_list(&["10.0.0.2", "10.0.0.9", "10.0.0.10", "10.0.0.11"]));
        assert_eq!(strings(&report.failed), ["10.0.0.9", "10.0.0.10"]);
        assert_eq!(strings(&report.questionable), ["10.0.0.2"]);
        assert_eq!(report_for(&verdict, &host_list(&[])), HealthReport::default());
    }

    #[test]
    fn options_are_checked() {
        let args = |i: &str| {
            PluginArgs::from_pairs([("health_file", "/tmp/h"), ("health_file_interval", i)])
        };
        assert_eq!(HealthFile::validate_config(&args("0.5")), Ok(()));
        assert!(HealthFile::validate_config(&args("0")).unwrap_err().contains("between"));
        assert!(HealthFile::validate_config(&args("NaN")).unwrap_err().contains("between"));
        assert!(HealthFile::validate_config(&args("x"))
            .unwrap_err()
            .starts_with("--health_file_interval: 'x'"));
        let no_file = PluginArgs::from_pairs([("health_file_interval", "1")]);
        assert_eq!(HealthFile::validate_config(&no_file), Err("--health_file is required".into()));
        let plugin =
            HealthFile::create(&PluginArgs::from_pairs([("health_file", "h.json")])).unwrap();
        assert_eq!(plugin.interval_secs(), 1.0);
        assert!(plugin.path.is_absolute());
    }

    struct Running {
        plugin: HealthFile,
        hosts: RSender<HostList>,
        reports: RReceiver<HealthReport>,
        logs: LogCapture,
    }

    impl Running {
        fn next(&self) -> (Vec<String>, Vec<String>) {
            let r = recv_within(&self.reports, WAIT).expect("a health report");
            let own = |ips: &[RString]| ips.iter().map(|s| s.to_string()).collect();
            (own(&r.failed), own(&r.questionable))
        }
    }

    fn start(file: &Path, interval: &str) -> Running {
        let args = PluginArgs::from_pairs([
            ("health_file", file.to_str().unwrap()),
            ("health_file_interval", interval),
        ]);
        let mut plugin = HealthFile::create(&args).unwrap();
        let (ctx, logs) = context("file");
        let (hosts, host_rx) = unbounded();
        let (report_tx, reports) = unbounded();
        plugin.start(ctx, host_rx, report_tx).unwrap();
        Running { plugin, hosts, reports, logs }
    }

    fn v(ips: &[&str]) -> Vec<String> {
        ips.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn follows_the_file_and_the_host_list() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("health.json");
        fs::write(&file, r#"{"failed": ["10.0.0.2", "10.0.0.99"]}"#).unwrap();
        let mut r = start(&file, "60");
        assert!(nothing_within(&r.reports, QUIET), "no report before the first host list");

        r.hosts.send(host_list(&["10.0.0.1", "10.0.0.2", "10.0.0.3"])).unwrap();
        assert_eq!(r.next(), (v(&["10.0.0.2"]), v(&[])));
        assert!(r.logs.contains(LogLevel::Info, "Currently failed IPs: 10.0.0.2"));

        // Written elsewhere and renamed over the file.
        let tmp = dir.path().join("health.json.tmp");
        fs::write(&tmp, r#"{"failed": ["10.0.0.3"], "questionable": ["10.0.0.1"]}"#).unwrap();
        fs::rename(&tmp, &file).unwrap();
        assert_eq!(r.next(), (v(&["10.0.0.3"]), v(&["10.0.0.1"])));

        // Bad content: logged, previous verdict kept.
        fs::write(&file, r#"{"failed": ["10.0.0.300"]}"#).unwrap();
        assert!(r.logs.wait_for(
            LogLevel::Error,
            "'10.0.0.300' in 'failed' is not a valid IPv4",
            WAIT
        ));
        assert!(nothing_within(&r.reports, QUIET));

        // A host list change that does not change the report sends nothing; one that does, does.
        r.hosts.send(host_list(&["10.0.0.1", "10.0.0.3", "10.0.0.4"])).unwrap();
        assert!(nothing_within(&r.reports, QUIET));
        r.hosts.send(host_list(&["10.0.0.1", "10.0.0.4"])).unwrap();
        assert_eq!(r.next(), (v(&[]), v(&["10.0.0.1"])));

        // Plain text; then the file disappears: everyone healthy, logged once.
        fs::write(&file, "10.0.0.4\n").unwrap();
        assert_eq!(r.next(), (v(&["10.0.0.4"]), v(&[])));
        fs::remove_file(&file).unwrap();
        assert_eq!(r.next(), (v(&[]), v(&[])));
        assert_eq!(r.logs.count(LogLevel::Info, "does not exist: all hosts are healthy"), 1);

        let info = r.plugin.info();
        assert_eq!(info["params"]["health_file_interval"], 60.0);
        assert_eq!(info["stats"]["reports_sent"], 5);
        assert_eq!(info["stats"]["errors"], 1);
        let (checks, failures) = (&info["stats"]["checks"], &info["stats"]["failures"]);
        assert!(checks.as_u64() > failures.as_u64() && failures.as_u64() > Some(0), "{info}");
        let started = Instant::now();
        r.plugin.stop().unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(r.logs.contains(LogLevel::Info, "File health monitor plugin: Stopped"));
    }

    #[cfg(unix)]
    #[test]
    fn the_fallback_poll_sees_changes_without_events() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("health.txt");
        fs::write(&file, "").unwrap();
        // A hard link elsewhere changes the file without an event in the watched directory.
        let other = tempfile::tempdir().unwrap();
        let link = other.path().join("link.txt");
        fs::hard_link(&file, &link).unwrap();

        let mut r = start(&file, "0.3");
        r.hosts.send(host_list(&["10.0.0.1"])).unwrap();
        assert_eq!(r.next(), (v(&[]), v(&[])));
        fs::write(&link, "10.0.0.1\n").unwrap();
        assert_eq!(r.next(), (v(&["10.0.0.1"]), v(&[])));
        assert_eq!(r.plugin.interval_secs(), 0.3);
        r.plugin.stop().unwrap();
    }

    #[test]
    fn missing_file_at_start_means_healthy() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = start(&dir.path().join("absent.json"), "1");
        assert!(r.logs.contains(LogLevel::Info, "does not exist: all hosts are healthy"));
        r.hosts.send(host_list(&["10.0.0.1"])).unwrap();
        assert_eq!(r.next(), (v(&[]), v(&[])));
        r.plugin.stop().unwrap();
    }
}
