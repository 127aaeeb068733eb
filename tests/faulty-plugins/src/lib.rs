//! `faulty`, a watcher that misbehaves on purpose, for vpcrouter's plugin-fault tests.
//!
//! `--faulty_mode` picks the fault; every mode except `start_panic` first sends the spec
//! given by `--faulty_spec` (a JSON route spec):
//! * `start_panic`: panics inside `start`;
//! * `thread_panic`: its worker thread panics; the SDK then closes the spec queue;
//! * `stop_hang`: its worker ignores the stop signal (sleeps an hour), so `stop` times out
//!   at its deadline;
//! * `close_queue`: closes the spec queue without panicking;
//! * `bad_spec`: then sends a spec that is not canonical (the entry `10.1.0.0/16` twice,
//!   out of order), which the host's `RouteSpec::check` refuses, and keeps its queue;
//! * `good`: behaves.

#![deny(unsafe_code)]

use std::time::Duration;

use vpcrouter_plugin_api::prelude::*;
use vpcrouter_plugin_api::RouteEntry;

/// The fault modes.
const MODES: [&str; 6] = ["start_panic", "thread_panic", "stop_hang", "close_queue", "bad_spec", "good"];

/// The misbehaving watcher.
pub struct Faulty;

impl PluginDescription for Faulty {
    const NAME: &'static str = "faulty";
    const DESCRIPTION: &'static str = "Misbehaves on purpose (vpcrouter tests only)";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn arguments() -> Vec<ArgSpec> {
        vec![
            ArgSpec::value("faulty_mode", "MODE", "the fault to show").required(),
            ArgSpec::value("faulty_spec", "JSON", "the route spec to send first").default("{}"),
        ]
    }

    fn validate_config(args: &PluginArgs) -> Result<(), String> {
        let mode = args.require("faulty_mode")?;
        if !MODES.contains(&mode) {
            return Err(format!("--faulty_mode must be one of {}", MODES.join(", ")));
        }
        spec::parse_json(args.get("faulty_spec").unwrap_or("{}")).map(drop).map_err(|e| e.to_string())
    }
}

impl WatcherPlugin for Faulty {
    fn start(args: &PluginArgs, run: &WatcherRun) -> Result<Self, String> {
        let spec = spec::parse_json(args.get("faulty_spec").unwrap_or("{}")).map_err(|e| e.to_string())?;
        let mode = args.require("faulty_mode")?;
        run.log().info(format!("Faulty watcher plugin: mode {mode}"));
        if mode == "start_panic" {
            panic!("faulty: panic in start as asked");
        }
        let sink = run.sink();
        if !sink.offer(spec.clone()) {
            return Err("the route spec queue is closed".into());
        }
        match mode {
            "thread_panic" => run.spawn("Faulty", |stop| {
                if !stop.wait(Duration::from_millis(500)) {
                    panic!("faulty: panic in the plugin's own thread as asked");
                }
            })?,
            "stop_hang" => run.spawn("Faulty", |_stop| std::thread::sleep(Duration::from_secs(3600)))?,
            "close_queue" => {
                std::thread::sleep(Duration::from_millis(100));
                sink.close();
            }
            "bad_spec" => {
                // Typed values cannot carry host bits; a hand-built spec can still break the
                // canonical form: entries unsorted and repeated.
                let mut bad = spec;
                let entry = RouteEntry { cidr: Cidr::parse("10.1.0.0/16")?, hosts: vec![Ipv4::parse("10.0.0.1").ok_or("bad address")?].into() };
                bad.routes.push(entry.clone());
                bad.routes.push(entry);
                if !sink.offer(bad) {
                    return Err("the route spec queue is closed".into());
                }
            }
            _ => {}
        }
        Ok(Faulty)
    }
}

export_plugin!(watcher: Faulty);
