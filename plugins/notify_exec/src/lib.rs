//! The `exec` notifier: runs a command for each event.
//!
//! `vpcrouter --notify exec --notify-exec-command '/usr/local/bin/on-route-change' --notify-exec-timeout 10`
//!
//! * `--notify-exec-command CMD` (required, not empty) is run as `/bin/sh -c CMD` for every
//!   event, in vpcrouter's working directory, with vpcrouter's environment plus
//!   `VPCROUTER_EVENT` (the event's name), `VPCROUTER_ROUTER`, `VPCROUTER_OLD_ROUTER`,
//!   `VPCROUTER_CIDR`, `VPCROUTER_ROUTE_TABLE` (the event's field of that name; the empty
//!   string when the event has no such field or it is null), `VPCROUTER_VPC` and
//!   `VPCROUTER_TIME`. Its stdin is the event's JSON object followed by a newline, then end
//!   of file; a command that does not read it is fine.
//! * Commands run one at a time, in event order: the host delivers one event at a time, and
//!   the next command starts when the previous one has ended. A handler therefore never sees
//!   events out of order and never races itself; a slow command delays the next events
//!   (the host's queue in front of the notifier drops the oldest when full), hence the
//!   timeout.
//! * `--notify-exec-timeout SECS` (default 10, more than 0 and at most 3600): a command still
//!   running then is killed with its whole process group (the command runs in a process
//!   group of its own, so `sleep 30 &` inside it is killed too), with SIGKILL, and reaped.
//!   The same happens at once when vpcrouter stops. Background processes a command leaves
//!   behind after exiting by itself are not touched.
//! * The command's output is logged through vpcrouter's log, each line prefixed `exec: `:
//!   stdout at info level, stderr at warn level; at most [`MAX_LINES`] lines and
//!   [`MAX_BYTES`] bytes per event, then one `... output truncated` line (the rest is read
//!   and dropped, so a chatty command never blocks on a full pipe).
//! * The delivery succeeds when the command exits with status 0. Otherwise it fails with
//!   `command exited with status N` (followed by the last line the command wrote to stderr,
//!   if any), `command was killed by signal N (SIGNAME)`, `command did not finish within T s:
//!   its process group was killed`, `vpcrouter is stopping: the command's process group was
//!   killed`, or the reason the command could not be started; the host counts and shows it.

#![deny(unsafe_code)]

mod command;
mod output;

use std::time::Duration;

use vpcrouter_plugin_api::args::parse_seconds;
use vpcrouter_plugin_api::prelude::*;

pub use output::{MAX_BYTES, MAX_LINES};

/// The option naming the command.
const COMMAND_ARG: &str = "notify-exec-command";
/// The option bounding a command's run time.
const TIMEOUT_ARG: &str = "notify-exec-timeout";
/// `--notify-exec-timeout` when not given, in seconds.
const DEFAULT_TIMEOUT: &str = "10";
/// The shortest timeout accepted, in seconds ("more than 0").
const MIN_TIMEOUT_SECS: f64 = 0.001;
/// The longest timeout accepted, in seconds.
const MAX_TIMEOUT_SECS: f64 = 3600.0;

/// The plugin's options, parsed once.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// What `/bin/sh -c` runs for each event.
    pub command: String,
    /// How long a command may run before its process group is killed.
    pub timeout: Duration,
}

impl Config {
    /// Parses the options; the errors name the option and say what to give.
    pub fn parse(args: &PluginArgs) -> Result<Config, String> {
        let command = args.get(COMMAND_ARG).map(str::trim).unwrap_or_default();
        if command.is_empty() {
            return Err(format!(
                "the exec notifier needs a command: give --{COMMAND_ARG} 'CMD' (run with /bin/sh -c for each event)"
            ));
        }
        let timeout = args.get(TIMEOUT_ARG).unwrap_or(DEFAULT_TIMEOUT);
        let timeout = parse_seconds(TIMEOUT_ARG, timeout, MIN_TIMEOUT_SECS..=MAX_TIMEOUT_SECS)?;
        Ok(Config { command: command.to_string(), timeout })
    }
}

/// The `exec` notifier plugin.
pub struct Exec {
    /// The command and its timeout.
    config: Config,
    /// Where the command's output goes.
    log: Logger,
    /// Fires when vpcrouter stops: the running command's group is killed then.
    stop: StopToken,
}

impl PluginDescription for Exec {
    const NAME: &'static str = "exec";
    const DESCRIPTION: &'static str =
        "Runs a command for each event, with the event as JSON on stdin and in VPCROUTER_* variables";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn arguments() -> Vec<ArgSpec> {
        vec![
            ArgSpec::value(
                COMMAND_ARG,
                "CMD",
                "Command run with /bin/sh -c for each event, one at a time in event order: the event's JSON on \
                 stdin; VPCROUTER_EVENT, VPCROUTER_ROUTER, VPCROUTER_OLD_ROUTER, VPCROUTER_CIDR, \
                 VPCROUTER_ROUTE_TABLE, VPCROUTER_VPC and VPCROUTER_TIME in its environment; its output is logged; \
                 required (only for the 'exec' notifier plugin)",
            )
            .required(),
            ArgSpec::value(
                TIMEOUT_ARG,
                "SECS",
                "Seconds a command may run, default 10, more than 0 and at most 3600; then its whole process \
                 group is killed and the event counts as failed (only for the 'exec' notifier plugin)",
            )
            .default(DEFAULT_TIMEOUT),
        ]
    }

    fn validate_config(args: &PluginArgs) -> Result<(), String> {
        Config::parse(args).map(drop)
    }
}

impl NotifierPlugin for Exec {
    fn start(args: &PluginArgs, run: &NotifyRun) -> Result<Exec, String> {
        let config = Config::parse(args)?;
        run.log().info(format!(
            "exec notifier plugin: running '{}' for each event (timeout {} s)",
            config.command,
            config.timeout.as_secs_f64()
        ));
        Ok(Exec { config, log: run.log().clone(), stop: run.stop_token() })
    }

    fn notify(&mut self, event: &Event) -> Result<(), String> {
        command::run(&self.config, event, &self.log, &self.stop)
    }

    fn details(&self) -> serde_json::Value {
        serde_json::json!({ "command": self.config.command, "timeout_seconds": self.config.timeout.as_secs_f64() })
    }
}

vpcrouter_plugin_api::export_plugin!(notifier: Exec);

#[cfg(test)]
mod tests;
