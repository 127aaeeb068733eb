//! The bridge that carries plugin log lines into the host's log.

use std::sync::Arc;

use vpcrouter_plugin_api::{HostLogger, LogLevel, Logger};

/// A plugin's view of the host log: every line carries the plugin's name.
#[derive(Clone)]
pub struct PluginLog {
    /// The plugin's name, put on every line it logs.
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
