//! The `always` health monitor: every host is healthy.
//!
//! For tests, and for setups where health is handled elsewhere (`-H always`). It sends one
//! empty [`HealthReport`] once it has received the first host list, so the engine knows
//! the verdict, and nothing after that. The SDK counts a check per host of each round (one
//! round per second); none ever fails.

#![deny(unsafe_code)]

use std::time::Duration;

use vpcrouter_plugin_api::prelude::*;

/// The health monitor that never reports a failure.
pub struct Always;

impl PluginDescription for Always {
    const NAME: &'static str = "always";
    const DESCRIPTION: &'static str = "Reports every host as healthy (for tests)";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
}

impl HealthPlugin for Always {
    type Prober = Always;
    fn start(_args: &PluginArgs, run: &HealthRun) -> Result<(Schedule, Always), String> {
        run.log().info("Always health monitor plugin: Pretending to start watching instances.");
        Ok((Schedule::every(Duration::from_secs(1)).probes_per_interval(1), Always))
    }
}

impl Prober for Always {
    fn probe(&mut self, _round: Round, hosts: &[Ipv4], answers: &mut Answers) {
        hosts.iter().for_each(|h| answers.healthy(*h));
    }
}

export_plugin!(health: Always);

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use vpcrouter_plugin_api::testkit::{nothing_within, start_health};
    use vpcrouter_plugin_api::PluginStats;

    use super::*;

    fn checks(h: &vpcrouter_plugin_api::testkit::HealthHarness) -> u64 {
        match h.monitor.status().stats {
            PluginStats::Health(s) => s.checks,
            _ => panic!("a health plugin reports health stats"),
        }
    }

    #[test]
    fn reports_once_after_the_first_host_list() {
        let h = start_health::<Always>(&[]).unwrap();
        assert!(nothing_within(&h.reports, Duration::from_millis(150)), "no report before a host list");
        h.send_hosts(&["10.0.0.1", "10.0.0.2"]);
        assert_eq!(h.next_report(Duration::from_secs(2)), Some(HealthReport::default()));
        h.send_hosts(&["10.0.0.3"]);
        assert!(nothing_within(&h.reports, Duration::from_millis(250)), "nothing changes, nothing is sent");

        // One round per second, a check per host of the list at that round.
        let t = Instant::now();
        while checks(&h) < 2 && t.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = h.monitor.status();
        let PluginStats::Health(stats) = &status.stats else { panic!("health stats") };
        assert!(stats.checks >= 2 && stats.failures == 0 && stats.reports_sent == 1, "{stats:?}");
        assert!(stats.failed.is_empty());
        assert_eq!(stats.hosts, 1);
        assert_eq!((status.version.as_str(), h.monitor.interval_secs()), (Always::VERSION, 1.0));

        let started = Instant::now();
        h.stop().unwrap();
        assert!(started.elapsed() < Duration::from_millis(500), "stop is prompt: {:?}", started.elapsed());
        assert!(h
            .logs
            .contains(LogLevel::Info, "Always health monitor plugin: Pretending to start watching instances."));
        assert!(h.logs.contains(LogLevel::Info, "always health monitor plugin: Stopped"));
    }
}
