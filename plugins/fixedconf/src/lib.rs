//! The `fixedconf` watcher: one route spec given on the command line.
//!
//! `vpcrouter -m fixedconf --fixed_cidr 10.55.0.0/16 --fixed_hosts 10.1.0.5:10.1.1.7`
//! sends the spec `{"10.55.0.0/16": ["10.1.0.5", "10.1.1.7"]}` once at start; it stays in
//! effect until the daemon stops. The options are checked with the shared route spec
//! validation before anything starts.

#![deny(unsafe_code)]

use vpcrouter_plugin_api::prelude::*;

/// The watcher; nothing to do after start (the SDK keeps the queue open until stop).
#[derive(Debug)]
pub struct Fixedconf;

/// Builds the spec from the raw option values; the error is the shared validation's.
fn build_spec(cidr: &str, hosts: &str) -> Result<RouteSpec, String> {
    spec::from_pairs([(cidr, hosts.split(':').collect::<Vec<_>>())]).map_err(|e| e.to_string())
}

fn spec_from_args(args: &PluginArgs) -> Result<RouteSpec, String> {
    build_spec(args.require("fixed_cidr")?, args.require("fixed_hosts")?)
}

impl PluginDescription for Fixedconf {
    const NAME: &'static str = "fixedconf";
    const DESCRIPTION: &'static str = "A fixed route spec for one CIDR, given on the command line";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn arguments() -> Vec<ArgSpec> {
        vec![
            ArgSpec::value("fixed_cidr", "CIDR", "specify the route CIDR (only in fixedconf mode)").required(),
            ArgSpec::value("fixed_hosts", "IP[:IP...]", "list of host IPs, separated by ':' (only in fixedconf mode)")
                .required(),
        ]
    }

    fn validate_config(args: &PluginArgs) -> Result<(), String> {
        spec_from_args(args).map(|_| ())
    }
}

impl WatcherPlugin for Fixedconf {
    fn start(args: &PluginArgs, run: &WatcherRun) -> Result<Self, String> {
        let spec = spec_from_args(args)?;
        run.log().info("Fixedconf watcher plugin: Started");
        if !run.sink().offer(spec) {
            run.log().warn("Fixedconf watcher plugin: the route spec queue is closed");
        }
        Ok(Fixedconf)
    }
}

export_plugin!(watcher: Fixedconf);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vpcrouter_plugin_api::testkit::{nothing_within, start_watcher};
    use vpcrouter_plugin_api::{PluginStats, RecvTimeoutError, WatcherStats};

    use super::*;

    fn args(cidr: &str, hosts: &str) -> PluginArgs {
        PluginArgs::from_pairs([("fixed_cidr", cidr), ("fixed_hosts", hosts)])
    }

    #[test]
    fn accepts_valid_options_and_canonicalises_hosts() {
        assert_eq!(Fixedconf::validate_config(&args("192.168.0.0/16", "10.0.0.2:10.0.0.1")), Ok(()));
        let spec = build_spec("192.168.0.0/16", "10.0.0.2:10.0.0.1:10.0.0.2").unwrap();
        assert_eq!(spec.to_json(), r#"{"192.168.0.0/16":["10.0.0.2","10.0.0.1"]}"#);
        assert!(Fixedconf::validate_config(&args("192.168.0.0/32", "10.0.0.1")).is_ok());
        assert!(Fixedconf::validate_config(&args("0.0.0.0/0", "10.0.0.1")).is_ok());
    }

    #[test]
    fn rejects_bad_cidrs_naming_them() {
        // The invalid CIDRs of the original's test_utils.py.
        for bad in ["1.1.1.0", "1.1.1.0/", "1.1.1.0/-1", "1.1.1.0/33", "10.1.0.1/16"] {
            let err = Fixedconf::validate_config(&args(bad, "10.0.0.1")).unwrap_err();
            assert!(err.starts_with(&format!("'{bad}' is not a valid route CIDR")), "{err}");
        }
    }

    #[test]
    fn rejects_bad_hosts_naming_them() {
        // The invalid IPs of the original's test_utils.py, and an empty list entry.
        for bad in ["192.168.1.1111", "192.168.1.", "292.168.1.1", ""] {
            let err = Fixedconf::validate_config(&args("10.0.0.0/8", &format!("10.0.0.1:{bad}"))).unwrap_err();
            assert!(err.contains(&format!("'{bad}' (a router of '10.0.0.0/8')")), "{err}");
        }
    }

    #[test]
    fn missing_options_are_named() {
        let only_cidr = PluginArgs::from_pairs([("fixed_cidr", "10.0.0.0/8")]);
        assert_eq!(Fixedconf::validate_config(&only_cidr), Err("--fixed_hosts is required".into()));
    }

    #[test]
    fn sends_the_spec_once_and_keeps_the_queue_until_stop() {
        let pairs = [("fixed_cidr", "10.55.0.0/16"), ("fixed_hosts", "10.1.1.7:10.1.0.5")];
        let r = start_watcher::<Fixedconf>(&pairs).unwrap();
        let spec = r.next_spec(Duration::from_secs(1)).expect("a spec");
        // The order given stays (the first is the preferred router of --failback preferred).
        assert_eq!(spec.to_json(), r#"{"10.55.0.0/16":["10.1.1.7","10.1.0.5"]}"#);
        assert!(nothing_within(&r.specs, Duration::from_millis(50)), "once, and the queue stays open");
        assert!(r.logs.contains(LogLevel::Info, "Fixedconf watcher plugin: Started"));
        let status = r.watcher.status();
        assert_eq!(status.stats, PluginStats::Watcher(WatcherStats { specs_sent: 1, ..Default::default() }));
        let params: Vec<_> = status.params.iter().map(|t| (t.0.as_str(), t.1.as_str())).collect();
        assert_eq!(params, pairs);
        assert_eq!((status.version.as_str(), status.details.as_str()), (Fixedconf::VERSION, "{}"));
        r.stop().unwrap();
        assert_eq!(r.specs.recv_timeout(Duration::from_secs(1)).map(drop), Err(RecvTimeoutError::Disconnected));
    }

    #[test]
    fn start_refuses_bad_options_too() {
        assert!(start_watcher::<Fixedconf>(&[("fixed_cidr", "10.0.0.0/8")]).is_err());
        let pairs = [("fixed_cidr", "10.1.0.1/16"), ("fixed_hosts", "10.0.0.1")];
        let started = vpcrouter_plugin_api::testkit::start_watcher_unchecked::<Fixedconf>(&pairs);
        assert!(started.err().unwrap().contains("'10.1.0.1/16' is not a valid route CIDR"));
        let err = Fixedconf::validate_config(&args("10.1.0.0/016", "10.0.0.1")).unwrap_err();
        assert!(err.ends_with("the prefix length has a leading zero; write it as 10.1.0.0/16"), "{err}");
    }
}
