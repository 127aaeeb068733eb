//! `cmd`, an example third-party vpcrouter health monitor.
//!
//! `vpcrouter -H cmd --cmd_check 'nc -z -w1 "$VPCROUTER_HOST" 22'` runs the command with
//! `sh -c` once per host every `--cmd_interval` seconds (default 2), with the host's IP in
//! the environment variable `VPCROUTER_HOST`. A host whose command exits non-zero, cannot
//! be started, or runs longer than the interval (it is then killed, with its whole process
//! group) is failed. At most 8 commands run at a time, so a round over many hosts may take
//! several intervals. The full report is sent after each round when it changed, and when
//! a new host list removes failed hosts. Its status counts the checks of completed rounds
//! and the failed ones among them.

#![deny(unsafe_code)]

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vpcrouter_plugin_api::export::PluginDescription;
use vpcrouter_plugin_api::serde_json;
use vpcrouter_plugin_api::spec::sort_ips;
use vpcrouter_plugin_api::worker::{StopToken, Worker};
use vpcrouter_plugin_api::{
    ArgSpec, HealthPlugin, HealthReport, HostList, Logger, PluginArgs, PluginContext, RReceiver,
    RSender, RString,
};

/// Commands running at the same time, at most.
const MAX_PARALLEL: usize = 8;
/// How often running commands, new host lists and the stop signal are looked at.
const TICK: Duration = Duration::from_millis(20);
/// Allowed range of `--cmd_interval`, in seconds.
const INTERVAL_RANGE: (f64, f64) = (0.1, 3600.0);

/// Kills a check command and everything it started (its own process group), then reaps it.
fn kill(child: &mut Child) {
    let group = format!("-{}", child.id());
    // `kill` from procps/util-linux signals the group; without it, the shell alone dies.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &group])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `cmd` for every host, at most [`MAX_PARALLEL`] at a time, each for at most
/// `timeout`. Returns the failed hosts, or `None` when `stopped()` turned true meanwhile.
fn run_checks(
    cmd: &str,
    hosts: &[RString],
    timeout: Duration,
    stopped: impl Fn() -> bool,
    log: &Logger,
) -> Option<BTreeSet<RString>> {
    let mut pending = hosts.iter();
    let mut running: Vec<(RString, Child, Instant)> = Vec::new();
    let mut failed = BTreeSet::new();
    loop {
        while running.len() < MAX_PARALLEL {
            let Some(host) = pending.next() else { break };
            let spawned = Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .env("VPCROUTER_HOST", host.as_str())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn();
            match spawned {
                Ok(child) => running.push((host.clone(), child, Instant::now() + timeout)),
                Err(e) => {
                    log.error(format!("Cannot run the check command for {host}: {e}"));
                    failed.insert(host.clone());
                }
            }
        }
        if running.is_empty() {
            return Some(failed);
        }
        if stopped() {
            running.iter_mut().for_each(|(_, child, _)| kill(child));
            return None;
        }
        std::thread::sleep(TICK);
        running.retain_mut(|(host, child, deadline)| {
            let verdict = match child.try_wait() {
                Ok(Some(status)) if status.success() => return false,
                Ok(Some(status)) => format!("failed ({status})"),
                Ok(None) if Instant::now() < *deadline => return true,
                Ok(None) => {
                    kill(child);
                    format!("timed out after {:.1} s", timeout.as_secs_f64())
                }
                Err(e) => {
                    kill(child);
                    format!("cannot be waited for: {e}")
                }
            };
            log.debug(format!("Check of {host} {verdict}"));
            failed.insert(host.clone());
            false
        });
    }
}

/// Check counters for the status server.
#[derive(Default)]
struct Stats {
    /// Host checks of completed rounds.
    checks: AtomicU64,
    /// Those that failed.
    failures: AtomicU64,
}

/// The monitor thread's state.
struct Monitor {
    cmd: String,
    interval: Duration,
    log: Logger,
    reports: RSender<HealthReport>,
    hosts: Option<HostList>,
    failed: BTreeSet<RString>,
    last_sent: Option<HealthReport>,
    stats: Arc<Stats>,
}

impl Monitor {
    /// Takes the newest host list, if any; true when there was one.
    fn take_hosts(&mut self, rx: &RReceiver<HostList>) -> bool {
        let mut latest = None;
        while let Ok(list) = rx.try_recv() {
            latest = Some(list);
        }
        let new = latest.is_some();
        if let Some(list) = latest {
            self.failed.retain(|h| list.hosts.contains(h));
            self.hosts = Some(list);
        }
        new
    }

    /// Sends the report when it changed; false when the host closed the queue.
    fn publish(&mut self) -> bool {
        let mut failed: Vec<RString> = self.failed.iter().cloned().collect();
        sort_ips(&mut failed);
        let report = HealthReport { failed: failed.into(), questionable: Default::default() };
        if self.last_sent.as_ref() == Some(&report) {
            return true;
        }
        let list: Vec<&str> = report.failed.iter().map(|s| s.as_str()).collect();
        self.log.info(format!(
            "Currently failed IPs: {}",
            if list.is_empty() { "(none)".into() } else { list.join(",") }
        ));
        if self.reports.send(report.clone()).is_err() {
            return false;
        }
        self.last_sent = Some(report);
        true
    }

    /// Checks every host each interval until stopped.
    fn run(mut self, hosts: RReceiver<HostList>, stop: &StopToken) {
        let mut next_round = Instant::now();
        let mut pause = Duration::ZERO;
        while !stop.wait(pause) {
            // A new list may drop failed hosts: report that now, except before the first round.
            let first_list = self.hosts.is_none();
            if self.take_hosts(&hosts) && !first_list && !self.publish() {
                return;
            }
            if self.hosts.is_some() && Instant::now() >= next_round {
                next_round = Instant::now() + self.interval;
                let list = self.hosts.as_ref().map(|l| l.hosts.to_vec()).unwrap_or_default();
                match run_checks(&self.cmd, &list, self.interval, || stop.is_stopped(), &self.log) {
                    Some(failed) => self.failed = failed,
                    None => return,
                }
                self.stats.checks.fetch_add(list.len() as u64, Ordering::Relaxed);
                self.stats.failures.fetch_add(self.failed.len() as u64, Ordering::Relaxed);
                if !self.publish() {
                    return;
                }
            }
            pause = TICK
                .min(next_round.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(1));
        }
    }
}

fn interval_from(args: &PluginArgs) -> Result<f64, String> {
    let secs = args.parse::<f64>("cmd_interval")?.unwrap_or(2.0);
    let (min, max) = INTERVAL_RANGE;
    if !(min..=max).contains(&secs) {
        return Err(format!("--cmd_interval must be between {min} and {max} seconds"));
    }
    Ok(secs)
}

/// The health plugin.
pub struct CmdHealth {
    cmd: String,
    interval: f64,
    log: Option<Logger>,
    stats: Arc<Stats>,
    worker: Option<Worker>,
}

impl PluginDescription for CmdHealth {
    const NAME: &'static str = "cmd";
    const DESCRIPTION: &'static str =
        "Runs a shell command per host; non-zero exit means failed (example)";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn arguments() -> Vec<ArgSpec> {
        vec![
            ArgSpec::value("cmd_check", "COMMAND", "sh command run per host with VPCROUTER_HOST=<ip>; non-zero exit = failed (only for 'cmd' health monitor plugin)")
                .required(),
            ArgSpec::value("cmd_interval", "SECS", "check interval and command timeout in seconds, default 2 (only for 'cmd' health monitor plugin)")
                .default("2"),
        ]
    }

    fn validate_config(args: &PluginArgs) -> Result<(), String> {
        interval_from(args)?;
        if args.require("cmd_check")?.trim().is_empty() {
            return Err("--cmd_check must not be empty".into());
        }
        Ok(())
    }
}

impl HealthPlugin for CmdHealth {
    fn create(args: &PluginArgs) -> Result<Self, String> {
        Self::validate_config(args)?;
        Ok(CmdHealth {
            cmd: args.require("cmd_check")?.to_string(),
            interval: interval_from(args)?,
            log: None,
            stats: Arc::default(),
            worker: None,
        })
    }

    fn start(
        &mut self,
        ctx: PluginContext,
        hosts: RReceiver<HostList>,
        reports: RSender<HealthReport>,
    ) -> Result<(), String> {
        ctx.log.info(format!(
            "Cmd health monitor plugin: Starting to run '{}' every {} s",
            self.cmd, self.interval
        ));
        let monitor = Monitor {
            cmd: self.cmd.clone(),
            interval: Duration::from_secs_f64(self.interval),
            log: ctx.log.clone(),
            reports,
            hosts: None,
            failed: BTreeSet::new(),
            last_sent: None,
            stats: self.stats.clone(),
        };
        self.worker = Some(Worker::spawn("CmdHealth", move |stop| monitor.run(hosts, &stop))?);
        self.log = Some(ctx.log);
        Ok(())
    }

    fn stop(&mut self) -> Result<(), String> {
        self.worker.take().map_or(Ok(()), |w| w.stop(Duration::from_secs(2)))?;
        if let Some(log) = &self.log {
            log.info("Cmd health monitor plugin: Stopped");
        }
        Ok(())
    }

    fn info(&self) -> serde_json::Value {
        serde_json::json!({
            "version": Self::VERSION,
            "params": {"cmd_check": self.cmd, "cmd_interval": self.interval},
            "stats": {
                "checks": self.stats.checks.load(Ordering::Relaxed),
                "failures": self.stats.failures.load(Ordering::Relaxed),
            },
        })
    }

    fn interval_secs(&self) -> f64 {
        self.interval
    }
}

vpcrouter_plugin_api::export_plugin!(health: CmdHealth);

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use vpcrouter_plugin_api::channel::unbounded;
    use vpcrouter_plugin_api::{HostLogger, LogLevel, RStr};

    use super::*;

    /// Collects log lines, as the host would print them.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<String>>>);

    impl HostLogger for Lines {
        fn log(&self, level: LogLevel, message: RStr<'_>) {
            self.0.lock().unwrap().push(format!("{level:?}: {message}"));
        }
        fn enabled(&self, _level: LogLevel) -> bool {
            true
        }
    }

    fn ips(list: &[&str]) -> Vec<RString> {
        list.iter().map(|&s| s.into()).collect()
    }

    fn check(cmd: &str, hosts: &[&str], timeout: Duration) -> Vec<String> {
        let log = Logger::new(Lines::default());
        let failed = run_checks(cmd, &ips(hosts), timeout, || false, &log).unwrap();
        let mut failed: Vec<RString> = failed.into_iter().collect();
        sort_ips(&mut failed);
        failed.into_iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exit_status_decides() {
        let failed = check(
            r#"test "$VPCROUTER_HOST" != 10.0.0.2"#,
            &["10.0.0.1", "10.0.0.2", "10.0.0.3"],
            Duration::from_secs(5),
        );
        assert_eq!(failed, ["10.0.0.2"]);
    }

    #[test]
    fn slow_checks_are_killed_at_the_timeout() {
        let started = Instant::now();
        let failed = check("sleep 5; true", &["10.0.0.1", "10.0.0.2"], Duration::from_millis(300));
        assert_eq!(failed, ["10.0.0.1", "10.0.0.2"]);
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }

    #[test]
    fn at_most_eight_run_at_a_time() {
        let hosts: Vec<String> = (1..=16).map(|i| format!("10.0.0.{i}")).collect();
        let hosts: Vec<&str> = hosts.iter().map(|s| s.as_str()).collect();
        let started = Instant::now();
        assert!(check("sleep 0.3", &hosts, Duration::from_secs(5)).is_empty());
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(600) && took < Duration::from_secs(3), "{took:?}");
    }

    #[test]
    fn monitor_reports_changes_and_stops() {
        let (host_tx, host_rx) = unbounded();
        let (report_tx, report_rx) = unbounded();
        let lines = Lines::default();
        let stats = Arc::new(Stats::default());
        let monitor = Monitor {
            cmd: r#"test "$VPCROUTER_HOST" != 10.0.0.2"#.into(),
            interval: Duration::from_millis(200),
            log: Logger::new(lines.clone()),
            reports: report_tx,
            hosts: None,
            failed: BTreeSet::new(),
            last_sent: None,
            stats: stats.clone(),
        };
        let worker = Worker::spawn("t", move |stop| monitor.run(host_rx, &stop)).unwrap();
        host_tx.send(HostList { hosts: ips(&["10.0.0.1", "10.0.0.2"]).into() }).unwrap();
        let report = report_rx.recv_timeout(Duration::from_secs(3)).unwrap();
        assert_eq!(report.failed.to_vec(), ips(&["10.0.0.2"]));
        host_tx.send(HostList { hosts: ips(&["10.0.0.1"]).into() }).unwrap();
        let report = report_rx.recv_timeout(Duration::from_secs(3)).unwrap();
        assert!(report.failed.is_empty());
        assert!(report_rx.recv_timeout(Duration::from_millis(500)).is_err(), "unchanged");
        let started = Instant::now();
        worker.stop(Duration::from_secs(2)).unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        let (checks, failures) =
            (stats.checks.load(Ordering::Relaxed), stats.failures.load(Ordering::Relaxed));
        assert!(checks >= 3 && failures >= 1 && failures < checks, "{checks} {failures}");
        assert!(lines
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|l| l == "Info: Currently failed IPs: 10.0.0.2"));
    }

    #[test]
    fn options_are_checked() {
        let args =
            |cmd: &str, i: &str| PluginArgs::from_pairs([("cmd_check", cmd), ("cmd_interval", i)]);
        assert_eq!(CmdHealth::validate_config(&args("true", "2")), Ok(()));
        assert!(CmdHealth::validate_config(&args(" ", "2")).unwrap_err().contains("empty"));
        assert!(CmdHealth::validate_config(&args("true", "0")).unwrap_err().contains("between"));
        let plugin = CmdHealth::create(&args("true", "1.5")).unwrap();
        assert_eq!(plugin.interval_secs(), 1.5);
        let info = plugin.info();
        assert_eq!(info["params"], serde_json::json!({"cmd_check": "true", "cmd_interval": 1.5}));
        assert_eq!(info["stats"], serde_json::json!({"checks": 0, "failures": 0}));
    }
}
