//! Log setup, and the bridge that carries plugin log lines into the host's log.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::sync::Arc;

use tracing_subscriber::EnvFilter;
use vpcrouter_plugin_api::{HostLogger, LogLevel, Logger};

/// Sets up logging to stdout (`-`) or to a file (appended). `--verbose` selects debug.
/// `VPCROUTER_LOG` (tracing's filter syntax) overrides the levels.
pub fn init(verbose: bool, logfile: &str) -> anyhow::Result<()> {
    let default = if verbose { "info,vpcrouter=debug" } else { "warn,vpcrouter=info" };
    let filter = EnvFilter::try_from_env("VPCROUTER_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    if logfile == "-" {
        builder.with_ansi(std::io::stdout().is_terminal()).with_writer(std::io::stdout).init();
    } else {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(logfile)
            .map_err(|e| anyhow::anyhow!("cannot open log file '{logfile}': {e}; check -l/--logfile"))?;
        builder.with_ansi(false).with_writer(std::sync::Mutex::new(file)).init();
    }
    Ok(())
}

/// A plugin's view of the host log: every line carries the plugin's name.
#[derive(Clone)]
pub struct PluginLog {
    plugin: Arc<str>,
}

impl PluginLog {
    /// A logger for the plugin `name`, to hand over in its context.
    pub fn logger(name: &str) -> Logger {
        Logger::new(PluginLog { plugin: name.into() })
    }
}

impl HostLogger for PluginLog {
    fn log(&self, level: LogLevel, message: abi_stable::std_types::RStr<'_>) {
        let plugin = &*self.plugin;
        let message = message.as_str();
        match level {
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn enabled(&self, level: LogLevel) -> bool {
        match level {
            LogLevel::Debug => tracing::enabled!(tracing::Level::DEBUG),
            LogLevel::Info => tracing::enabled!(tracing::Level::INFO),
            LogLevel::Warn => tracing::enabled!(tracing::Level::WARN),
            LogLevel::Error => tracing::enabled!(tracing::Level::ERROR),
        }
    }
}
