//! The `fixedconf` watcher: one route spec given on the command line.
//!
//! `vpcrouter -m fixedconf --fixed_cidr 10.55.0.0/16 --fixed_hosts 10.1.0.5:10.1.1.7`
//! sends the spec `{"10.55.0.0/16": ["10.1.0.5", "10.1.1.7"]}` once at start; it stays in
//! effect until the daemon stops. The options are checked with the shared route spec
//! validation before anything starts.

#![deny(unsafe_code)]

use vpcrouter_plugin_api::export::PluginDescription;
use vpcrouter_plugin_api::{
    spec, ArgSpec, Logger, PluginArgs, PluginContext, RSender, RouteSpec, WatcherPlugin,
};

/// The watcher; holds the spec built from its options.
#[derive(Debug)]
pub struct Fixedconf {
    cidr: String,
    hosts: String,
    spec: RouteSpec,
    log: Option<Logger>,
    /// Held until `stop`: dropping it would tell the host this watcher is gone.
    specs: Option<RSender<RouteSpec>>,
}

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
            ArgSpec::value("fixed_cidr", "CIDR", "specify the route CIDR (only in fixedconf mode)")
                .required(),
            ArgSpec::value(
                "fixed_hosts",
                "IP[:IP...]",
                "list of host IPs, separated by ':' (only in fixedconf mode)",
            )
            .required(),
        ]
    }

    fn validate_config(args: &PluginArgs) -> Result<(), String> {
        spec_from_args(args).map(|_| ())
    }
}

impl WatcherPlugin for Fixedconf {
    fn create(args: &PluginArgs) -> Result<Self, String> {
        Ok(Fixedconf {
            cidr: args.require("fixed_cidr")?.to_string(),
            hosts: args.require("fixed_hosts")?.to_string(),
            spec: spec_from_args(args)?,
            log: None,
            specs: None,
        })
    }

    fn start(&mut self, ctx: PluginContext, specs: RSender<RouteSpec>) -> Result<(), String> {
        ctx.log.info("Fixedconf watcher plugin: Started");
        if specs.send(self.spec.clone()).is_err() {
            ctx.log.warn("Fixedconf watcher plugin: the route spec queue is closed");
        }
        self.specs = Some(specs);
        self.log = Some(ctx.log);
        Ok(())
    }

    fn stop(&mut self) -> Result<(), String> {
        self.specs = None;
        if let Some(log) = &self.log {
            log.info("Fixedconf watcher plugin: Stopped");
        }
        Ok(())
    }

    fn info(&self) -> serde_json::Value {
        serde_json::json!({
            "version": Self::VERSION,
            "params": {"fixed_cidr": self.cidr, "fixed_hosts": self.hosts},
        })
    }
}

vpcrouter_plugin_api::export_plugin!(watcher: Fixedconf);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vpcrouter_plugin_api::channel::unbounded;
    use vpcrouter_plugin_api::LogLevel;
    use vpcrouter_testkit::{context, nothing_within, recv_within};

    use super::*;

    fn args(cidr: &str, hosts: &str) -> PluginArgs {
        PluginArgs::from_pairs([("fixed_cidr", cidr), ("fixed_hosts", hosts)])
    }

    #[test]
    fn accepts_valid_options_and_canonicalises_hosts() {
        assert_eq!(
            Fixedconf::validate_config(&args("192.168.0.0/16", "10.0.0.2:10.0.0.1")),
            Ok(())
        );
        let spec = build_spec("192.168.0.0/16", "10.0.0.2:10.0.0.1:10.0.0.2").unwrap();
        assert_eq!(spec.to_json(), r#"{"192.168.0.0/16":["10.0.0.1","10.0.0.2"]}"#);
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
            let err = Fixedconf::validate_config(&args("10.0.0.0/8", &format!("10.0.0.1:{bad}")))
                .unwrap_err();
            assert!(err.contains(&format!("'{bad}' (a router of '10.0.0.0/8')")), "{err}");
        }
    }

    #[test]
    fn missing_options_are_named() {
        let only_cidr = PluginArgs::from_pairs([("fixed_cidr", "10.0.0.0/8")]);
        assert_eq!(Fixedconf::validate_config(&only_cidr), Err("--fixed_hosts is required".into()));
        assert!(Fixedconf::create(&PluginArgs::default()).is_err());
    }

    #[test]
    fn sends_the_spec_once_and_logs_start_and_stop() {
        let mut plugin = Fixedconf::create(&args("10.55.0.0/16", "10.1.1.7:10.1.0.5")).unwrap();
        let (ctx, logs) = context("fixedconf");
        let (tx, rx) = unbounded();
        plugin.start(ctx, tx).unwrap();
        let spec = recv_within(&rx, Duration::from_secs(1)).expect("a spec");
        assert_eq!(spec.to_json(), r#"{"10.55.0.0/16":["10.1.0.5","10.1.1.7"]}"#);
        assert!(nothing_within(&rx, Duration::from_millis(50)));
        plugin.stop().unwrap();
        assert!(logs.contains(LogLevel::Info, "Fixedconf watcher plugin: Started"));
        assert!(logs.contains(LogLevel::Info, "Fixedconf watcher plugin: Stopped"));
        assert_eq!(
            plugin.info(),
            serde_json::json!({"version": Fixedconf::VERSION,
                "params": {"fixed_cidr": "10.55.0.0/16", "fixed_hosts": "10.1.1.7:10.1.0.5"}})
        );
    }
}
