//! `cmd`, an example third-party vpcrouter health monitor.
//!
//! `vpcrouter -H cmd --cmd_check 'nc -z -w1 "$VPCROUTER_HOST" 22'` runs the command with
//! `sh -c` once per host every `--cmd_interval` seconds (default 2), with the host's IP in
//! the environment variable `VPCROUTER_HOST`. A host whose command exits non-zero, cannot
//! be started, or runs longer than the interval (it is then killed, with its whole process
//! group) is failed.
//!
//! The plugin is a per-host [`CheckHost`]; the SDK's [`Each`] runs it for every host of a
//! round on at most 8 threads, and the SDK's runner does the rest: one round per interval,
//! the verdicts, the report (sent when it changes), the log lines and the counters. A check
//! that has not started by its round's deadline (more than 8 slow hosts) fails that round.
//!
//! Hold-down: none. A failed host is healthy again at its next successful check, as in
//! earlier versions of this example (the SDK's default would keep it failed for 10
//! intervals). Add `.hold_down(...)` to the schedule to damp a flapping check.

#![deny(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vpcrouter_plugin_api::prelude::*;

/// Commands running at the same time, at most.
const MAX_PARALLEL: usize = 8;
/// How often a running command is looked at.
const POLL: Duration = Duration::from_millis(10);

/// `--cmd_interval`: the check interval, also each command's timeout.
fn interval(args: &PluginArgs) -> Result<Duration, String> {
    args.seconds("cmd_interval", 2.0, 0.1..=3600.0)
}

/// Kills a check command and everything it started (its own process group), then reaps it.
fn kill(child: &mut Child) {
    // `kill` from procps/util-linux signals the group; std alone would kill the shell only.
    let group = format!("-{}", child.id());
    let _ = Command::new("kill").args(["-KILL", "--", &group]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs the check command for one host.
struct Cmd {
    cmd: String,
    /// Set when the monitor stops: commands still running are killed at once.
    stopped: Arc<AtomicBool>,
}

impl CheckHost for Cmd {
    fn check(&self, host: Ipv4, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&self.cmd)
            .env("VPCROUTER_HOST", host.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run the check command: {e}"))?;
        loop {
            let why = match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("the check command failed ({status})")),
                Ok(None) if self.stopped.load(Ordering::Relaxed) => "the monitor stopped".to_string(),
                Ok(None) if Instant::now() >= deadline => format!("the check command timed out after {:.1} s", timeout.as_secs_f64()),
                Ok(None) => {
                    std::thread::sleep(POLL);
                    continue;
                }
                Err(e) => format!("the check command cannot be waited for: {e}"),
            };
            kill(&mut child);
            return Err(why);
        }
    }
}

/// The prober: [`Each`] running [`Cmd`]; dropped by the SDK when the monitor stops.
pub struct Checks {
    each: Each<Cmd>,
    stopped: Arc<AtomicBool>,
    log: Logger,
}

impl Prober for Checks {
    fn probe(&mut self, round: Round, hosts: &[Ipv4], answers: &mut Answers) {
        self.each.probe(round, hosts, answers)
    }
    fn wait(&mut self, until: Instant, answers: &mut Answers) {
        self.each.wait(until, answers)
    }
}

impl Drop for Checks {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
    }
}

/// The health plugin.
pub struct CmdHealth;

impl PluginDescription for CmdHealth {
    const NAME: &'static str = "cmd";
    const DESCRIPTION: &'static str = "Runs a shell command per host; non-zero exit means failed (example)";
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
        interval(args)?;
        if args.require("cmd_check")?.trim().is_empty() {
            return Err("--cmd_check must not be empty".into());
        }
        Ok(())
    }
}

impl HealthPlugin for CmdHealth {
    type Prober = Checks;

    fn start(args: &PluginArgs, run: &HealthRun) -> Result<(Schedule, Checks), String> {
        Self::validate_config(args)?;
        let (cmd, interval) = (args.require("cmd_check")?.to_string(), interval(args)?);
        run.log().info(format!("Cmd health monitor plugin: Starting to run '{cmd}' every {} s", interval.as_secs_f64()));
        let stopped = Arc::new(AtomicBool::new(false));
        let each = Each::new(Cmd { cmd, stopped: stopped.clone() }, MAX_PARALLEL)?;
        let schedule = Schedule::every(interval).probes_per_interval(1).timeout(interval).hold_down(Duration::ZERO);
        Ok((schedule, Checks { each, stopped, log: run.log().clone() }))
    }
}

export_plugin!(health: CmdHealth);

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use vpcrouter_plugin_api::testkit::{ips, start_health, HealthHarness};
    use vpcrouter_plugin_api::{LogLevel, PluginStats};

    use super::*;

    /// Starts the monitor with `cmd` every `interval` seconds on `hosts`.
    fn monitor(cmd: &str, interval: &str, hosts: &[&str]) -> HealthHarness {
        let h = start_health::<CmdHealth>(&[("cmd_check", cmd), ("cmd_interval", interval)]).unwrap();
        h.send_hosts(hosts);
        h
    }

    /// Waits for a report failing exactly `want`.
    fn wait_failed(h: &HealthHarness, want: &[&str], timeout: Duration) {
        let end = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < end {
            match h.next_report(end.saturating_duration_since(Instant::now())) {
                Some(r) if r.failed.as_slice() == ips(want).as_slice() => return,
                other => last = other.or(last),
            }
        }
        panic!("no report failing {want:?} within {timeout:?}; last {last:?}; log {:?}", h.logs);
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cmd-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// True while a live (not zombie) process of group `pgid` exists.
    fn group_alive(pgid: &str) -> bool {
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // After "(comm)": state, ppid, pgrp, ...
            let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
            fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid
        })
    }

    fn read_pid(path: &std::path::Path, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        loop {
            match std::fs::read_to_string(path) {
                Ok(pid) if pid.ends_with('\n') => return pid.trim().to_string(),
                _ if Instant::now() > end => panic!("{} was not written", path.display()),
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    #[test]
    fn exit_status_decides_and_the_report_follows_the_host_list() {
        let h = monitor(r#"test "$VPCROUTER_HOST" != 10.0.0.2"#, "0.2", &["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        wait_failed(&h, &["10.0.0.2"], Duration::from_secs(3));
        assert!(h.logs.contains(LogLevel::Info, "Currently failed IPs: 10.0.0.2"), "{:?}", h.logs);
        assert!(h.logs.contains(LogLevel::Info, "Host 10.0.0.2 failed a check: the check command failed (exit status: 1)"), "{:?}", h.logs);
        h.send_hosts(&["10.0.0.1"]);
        wait_failed(&h, &[], Duration::from_secs(3));
        let status = h.monitor.status();
        let PluginStats::Health(stats) = status.stats else { panic!("not health stats") };
        assert!(stats.checks >= 3 && stats.failures >= 1 && stats.failures < stats.checks, "{stats:?}");
        let params: Vec<(String, String)> = status.params.iter().map(|t| (t.0.to_string(), t.1.to_string())).collect();
        assert_eq!(params[1], ("cmd_interval".to_string(), "0.2".to_string()));
        h.stop().unwrap();
        assert!(h.logs.contains(LogLevel::Info, "cmd health monitor plugin: Stopped"), "{:?}", h.logs);
    }

    #[test]
    fn no_hold_down_a_host_passes_at_its_next_good_check() {
        let dir = scratch("flap");
        let flag = dir.join("fail");
        std::fs::write(&flag, "").unwrap();
        let h = monitor(&format!("test ! -e {}", flag.display()), "0.2", &["10.0.0.1"]);
        wait_failed(&h, &["10.0.0.1"], Duration::from_secs(3));
        std::fs::remove_file(&flag).unwrap();
        wait_failed(&h, &[], Duration::from_secs(1));
        h.stop().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn slow_checks_are_killed_with_their_process_group_at_the_timeout() {
        let dir = scratch("slow");
        let started = Instant::now();
        let h = monitor(&format!(r#"echo $$ > {}/"$VPCROUTER_HOST"; sleep 30 & wait"#, dir.display()), "0.3", &["10.0.0.1", "10.0.0.2"]);
        wait_failed(&h, &["10.0.0.1", "10.0.0.2"], Duration::from_secs(3));
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        // Killed at the timeout, while the monitor still runs (every round starts new ones).
        let pgid = read_pid(&dir.join("10.0.0.1"), Duration::from_secs(1));
        let end = Instant::now() + Duration::from_secs(1);
        while group_alive(&pgid) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!group_alive(&pgid), "the background sleep of group {pgid} survived its timeout");
        h.stop().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stop_kills_running_commands_at_once() {
        let dir = scratch("stop");
        let h = monitor(&format!("echo $$ > {}/pid; sleep 30", dir.display()), "60", &["10.0.0.1"]);
        let pgid = read_pid(&dir.join("pid"), Duration::from_secs(3));
        assert!(group_alive(&pgid));
        let started = Instant::now();
        h.stop().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(!group_alive(&pgid), "the check command outlived the monitor");
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn at_most_eight_run_at_a_time() {
        let dir = scratch("parallel");
        let log = dir.join("log");
        let hosts: Vec<String> = (1..=16).map(|i| format!("10.0.0.{i}")).collect();
        let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let cmd = format!("echo + >> {0}; sleep 0.3; echo - >> {0}", log.display());
        let h = monitor(&cmd, "3", &hosts);
        let end = Instant::now() + Duration::from_secs(3);
        while std::fs::read_to_string(&log).unwrap_or_default().matches('-').count() < 16 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        h.stop().unwrap();
        let (mut running, mut most) = (0i32, 0);
        for line in std::fs::read_to_string(&log).unwrap().lines() {
            running += if line == "+" { 1 } else { -1 };
            most = most.max(running);
        }
        assert_eq!(most, 8, "commands at once");
        assert!(h.logs.count(LogLevel::Info, "failed a check") == 0, "{:?}", h.logs);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn options_are_checked() {
        let args = |cmd: &str, i: &str| PluginArgs::from_pairs([("cmd_check", cmd), ("cmd_interval", i)]);
        assert_eq!(CmdHealth::validate_config(&args("true", "2")), Ok(()));
        assert_eq!(CmdHealth::validate_config(&args(" ", "2")), Err("--cmd_check must not be empty".into()));
        assert!(CmdHealth::validate_config(&PluginArgs::default()).unwrap_err().contains("--cmd_check is required"));
        for bad in ["0", "0.05", "3601", "x"] {
            assert!(CmdHealth::validate_config(&args("true", bad)).unwrap_err().contains("--cmd_interval"), "{bad}");
        }
        let h = start_health::<CmdHealth>(&[("cmd_check", "true"), ("cmd_interval", "1.5")]).unwrap();
        assert_eq!(h.monitor.interval_secs(), 1.5);
        h.stop().unwrap();
    }
}
