//! The `always` health monitor: every host is healthy.
//!
//! For tests, and for setups where health is handled elsewhere (`-H always`). It sends one
//! empty [`HealthReport`] once it has received the first host list, so the engine knows
//! the verdict, and then only keeps draining the host queue. Its status counts a check per
//! host of each host list (none ever fails).

#![deny(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vpcrouter_plugin_api::export::PluginDescription;
use vpcrouter_plugin_api::worker::{StopToken, Worker};
use vpcrouter_plugin_api::{
    HealthPlugin, HealthReport, HostList, Logger, PluginArgs, PluginContext, RReceiver, RSender,
};

/// How often the queue reader looks at the stop signal.
const TICK: Duration = Duration::from_millis(100);
/// How long `stop` waits for the thread.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// The health monitor that never reports a failure.
#[derive(Default)]
pub struct Always {
    log: Option<Logger>,
    /// Hosts judged, summed over the host lists.
    checks: Arc<AtomicU64>,
    worker: Option<Worker>,
}

impl PluginDescription for Always {
    const NAME: &'static str = "always";
    const DESCRIPTION: &'static str = "Reports every host as healthy (for tests)";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
}

/// Reads host lists until stopped; answers the first one with an empty report.
fn drain(
    log: Logger,
    hosts: RReceiver<HostList>,
    reports: RSender<HealthReport>,
    checks: &AtomicU64,
    stop: &StopToken,
) {
    let mut reported = false;
    while !stop.is_stopped() {
        match hosts.recv_timeout(TICK) {
            Ok(list) => {
                log.debug(format!("Always health monitor plugin: got {} hosts", list.hosts.len()));
                checks.fetch_add(list.hosts.len() as u64, Ordering::Relaxed);
                if !reported {
                    reported = true;
                    if reports.send(HealthReport::default()).is_err() {
                        return;
                    }
                }
            }
            Err(e) if e.is_disconnected() => return,
            Err(_) => {}
        }
    }
}

impl HealthPlugin for Always {
    fn create(_args: &PluginArgs) -> Result<Self, String> {
        Ok(Always::default())
    }

    fn start(
        &mut self,
        ctx: PluginContext,
        hosts: RReceiver<HostList>,
        reports: RSender<HealthReport>,
    ) -> Result<(), String> {
        ctx.log.info("Always health monitor plugin: Pretending to start watching instances.");
        let (log, checks) = (ctx.log.clone(), self.checks.clone());
        self.worker = Some(Worker::spawn("AlwaysHealth", move |stop| {
            drain(log, hosts, reports, &checks, &stop)
        })?);
        self.log = Some(ctx.log);
        Ok(())
    }

    fn stop(&mut self) -> Result<(), String> {
        self.worker.take().map_or(Ok(()), |w| w.stop(STOP_TIMEOUT))?;
        if let Some(log) = &self.log {
            log.info("Always health monitor plugin: Stopped");
        }
        Ok(())
    }

    fn info(&self) -> serde_json::Value {
        let checks = self.checks.load(Ordering::Relaxed);
        serde_json::json!({
            "version": Self::VERSION,
            "params": {},
            "stats": {"checks": checks, "failures": 0},
        })
    }

    fn interval_secs(&self) -> f64 {
        1.0
    }
}

vpcrouter_plugin_api::export_plugin!(health: Always);

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use vpcrouter_plugin_api::channel::unbounded;
    use vpcrouter_plugin_api::LogLevel;
    use vpcrouter_testkit::{context, nothing_within, recv_within};

    use super::*;

    fn hosts(ips: &[&str]) -> HostList {
        HostList { hosts: ips.iter().map(|&ip| ip.into()).collect() }
    }

    #[test]
    fn reports_once_after_the_first_host_list() {
        let mut plugin = Always::create(&PluginArgs::default()).unwrap();
        let (ctx, logs) = context("always");
        let (host_tx, host_rx) = unbounded();
        let (report_tx, report_rx) = unbounded();
        plugin.start(ctx, host_rx, report_tx).unwrap();
        assert!(nothing_within(&report_rx, Duration::from_millis(150)));
        host_tx.send(hosts(&["10.0.0.1", "10.0.0.2"])).unwrap();
        let report = recv_within(&report_rx, Duration::from_secs(2)).expect("a report");
        assert_eq!(report, HealthReport::default());
        host_tx.send(hosts(&["10.0.0.3"])).unwrap();
        assert!(nothing_within(&report_rx, Duration::from_millis(250)));

        let started = Instant::now();
        plugin.stop().unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(logs.contains(
            LogLevel::Info,
            "Always health monitor plugin: Pretending to start watching instances."
        ));
        assert!(logs.contains(LogLevel::Info, "Always health monitor plugin: Stopped"));
        assert_eq!(plugin.interval_secs(), 1.0);
        assert_eq!(
            plugin.info(),
            serde_json::json!({
                "version": Always::VERSION,
                "params": {},
                "stats": {"checks": 3, "failures": 0},
            })
        );
    }

    #[test]
    fn stop_without_start_is_fine() {
        let mut plugin = Always::create(&PluginArgs::default()).unwrap();
        assert_eq!(plugin.stop(), Ok(()));
    }
}
