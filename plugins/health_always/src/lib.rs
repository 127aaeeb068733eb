//! The `always` health monitor: every host is healthy.
//!
//! For tests, and for setups where health is handled elsewhere (`-H always`). It sends one
//! empty [`HealthReport`] once it has received the first host list, so the engine knows
//! the verdict, and then only keeps draining the host queue.

#![deny(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vpcrouter_plugin_api::export::PluginDescription;
use vpcrouter_plugin_api::{
    HealthPlugin, HealthReport, HostList, Logger, PluginArgs, PluginContext, RReceiver, RSender,
};

/// How often the queue reader looks at the stop flag.
const TICK: Duration = Duration::from_millis(100);

/// The health monitor that never reports a failure.
#[derive(Default)]
pub struct Always {
    log: Option<Logger>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
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
    stop: &AtomicBool,
) {
    let mut reported = false;
    while !stop.load(Ordering::Relaxed) {
        match hosts.recv_timeout(TICK) {
            Ok(list) => {
                log.debug(format!("Always health monitor plugin: got {} hosts", list.hosts.len()));
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
        let (log, stop) = (ctx.log.clone(), self.stop.clone());
        let thread = std::thread::Builder::new()
            .name("AlwaysHealth".into())
            .spawn(move || drain(log, hosts, reports, &stop))
            .map_err(|e| format!("cannot start the always health thread: {e}"))?;
        self.thread = Some(thread);
        self.log = Some(ctx.log);
        Ok(())
    }

    fn stop(&mut self) -> Result<(), String> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !thread.is_finished() {
                return Err("the always health thread did not stop within 2 s".into());
            }
            // The thread has finished; a panic in it was already reported by the runtime.
            let _ = thread.join();
        }
        if let Some(log) = &self.log {
            log.info("Always health monitor plugin: Stopped");
        }
        Ok(())
    }

    fn info(&self) -> serde_json::Value {
        serde_json::json!({"version": Self::VERSION, "params": {}})
    }

    fn interval_secs(&self) -> f64 {
        1.0
    }
}

vpcrouter_plugin_api::export_plugin!(health: Always);

#[cfg(test)]
mod tests {
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
        assert_eq!(plugin.info(), serde_json::json!({"version": Always::VERSION, "params": {}}));
    }

    #[test]
    fn stop_without_start_is_fine() {
        let mut plugin = Always::create(&PluginArgs::default()).unwrap();
        assert_eq!(plugin.stop(), Ok(()));
    }
}
