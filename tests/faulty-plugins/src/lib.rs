//! `faulty`, a watcher that misbehaves on purpose, for vpcrouter's plugin-fault tests.
//!
//! `--faulty_mode` picks the fault; every mode except `start_panic` first sends the spec
//! given by `--faulty_spec` (a JSON route spec):
//! * `start_panic`: panics inside `start`;
//! * `thread_panic`: its worker thread panics, dropping the spec queue;
//! * `stop_hang`: `stop` never returns (sleeps an hour);
//! * `close_queue`: drops the spec queue without panicking;
//! * `bad_spec`: then sends a spec whose CIDR has host bits set, and keeps its queue;
//! * `good`: behaves.

#![deny(unsafe_code)]

use std::time::Duration;

use vpcrouter_plugin_api::export::PluginDescription;
use vpcrouter_plugin_api::worker::Worker;
use vpcrouter_plugin_api::{
    spec, ArgSpec, PluginArgs, PluginContext, RSender, RouteEntry, RouteSpec, WatcherPlugin,
};

/// The fault modes.
const MODES: [&str; 6] = ["start_panic", "thread_panic", "stop_hang", "close_queue", "bad_spec", "good"];

/// The misbehaving watcher.
pub struct Faulty {
    mode: String,
    spec: RouteSpec,
    worker: Option<Worker>,
    /// Keeps the queue open in `bad_spec`, `stop_hang` and `good` modes.
    queue: Option<RSender<RouteSpec>>,
}

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
    fn create(args: &PluginArgs) -> Result<Self, String> {
        let spec = spec::parse_json(args.get("faulty_spec").unwrap_or("{}")).map_err(|e| e.to_string())?;
        Ok(Faulty { mode: args.require("faulty_mode")?.to_string(), spec, worker: None, queue: None })
    }

    fn start(&mut self, ctx: PluginContext, specs: RSender<RouteSpec>) -> Result<(), String> {
        ctx.log.info(format!("Faulty watcher plugin: mode {}", self.mode));
        if self.mode == "start_panic" {
            panic!("faulty: panic in start as asked");
        }
        specs.send(self.spec.clone()).map_err(|e| e.to_string())?;
        match self.mode.as_str() {
            "thread_panic" => {
                self.worker = Some(Worker::spawn("Faulty", move |stop| {
                    let _queue = specs;
                    if !stop.wait(Duration::from_millis(500)) {
                        panic!("faulty: panic in the plugin's own thread as asked");
                    }
                })?);
            }
            "close_queue" => {
                std::thread::sleep(Duration::from_millis(100));
                drop(specs);
            }
            "bad_spec" => {
                let mut bad = self.spec.clone();
                bad.routes.push(RouteEntry { cidr: "10.1.0.1/16".into(), hosts: vec!["10.0.0.1".into()].into() });
                specs.send(bad).map_err(|e| e.to_string())?;
                self.queue = Some(specs);
            }
            _ => self.queue = Some(specs),
        }
        Ok(())
    }

    fn stop(&mut self) -> Result<(), String> {
        if self.mode == "stop_hang" {
            std::thread::sleep(Duration::from_secs(3600));
        }
        self.queue = None;
        self.worker.take().map_or(Ok(()), |w| w.stop(Duration::from_secs(2)))
    }
}

vpcrouter_plugin_api::export_plugin!(watcher: Faulty);
