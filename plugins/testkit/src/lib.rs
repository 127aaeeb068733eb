//! Test helpers for vpcrouter plugins (a dev-dependency only, never shipped).
//!
//! [`context`] builds the [`PluginContext`] a host would lend a plugin at start: its log
//! lines are captured in a [`LogCapture`], its HTTP registry refuses every endpoint and
//! its plugin loader loads nothing. [`recv_within`] and [`nothing_within`] read plugin
//! queues with a deadline so a broken plugin fails a test instead of hanging it.

#![deny(unsafe_code)]

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vpcrouter_plugin_api::abi_stable::sabi_trait::TD_Opaque;
use vpcrouter_plugin_api::abi_stable::std_types::{RArc, RResult};
use vpcrouter_plugin_api::context::{HttpRegistry_TO, PluginLoader_TO};
use vpcrouter_plugin_api::{
    HealthBox, HostLogger, HttpHandlerBox, HttpRegistry, LogLevel, Logger, PluginContext,
    PluginLoader, RReceiver, RStr, RString,
};

/// The log lines a plugin wrote through its context, shared with the test.
#[derive(Clone, Default)]
pub struct LogCapture {
    lines: Arc<Mutex<Vec<(LogLevel, String)>>>,
}

impl LogCapture {
    fn locked(&self) -> MutexGuard<'_, Vec<(LogLevel, String)>> {
        // A panicking test thread must not hide the lines from the others.
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every line so far, oldest first.
    pub fn lines(&self) -> Vec<(LogLevel, String)> {
        self.locked().clone()
    }

    /// How many lines at `level` contain `needle`.
    pub fn count(&self, level: LogLevel, needle: &str) -> usize {
        self.locked().iter().filter(|(l, m)| *l == level && m.contains(needle)).count()
    }

    /// True when a line at `level` contains `needle`.
    pub fn contains(&self, level: LogLevel, needle: &str) -> bool {
        self.count(level, needle) > 0
    }

    /// Waits up to `timeout` for a line at `level` containing `needle`.
    pub fn wait_for(&self, level: LogLevel, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.contains(level, needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl std::fmt::Debug for LogCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.locked().iter()).finish()
    }
}

#[derive(Clone)]
struct CaptureLogger(LogCapture);

impl HostLogger for CaptureLogger {
    fn log(&self, level: LogLevel, message: RStr<'_>) {
        self.0.locked().push((level, message.to_string()));
    }
    fn enabled(&self, _level: LogLevel) -> bool {
        true
    }
}

#[derive(Clone)]
struct NoHttp;

impl HttpRegistry for NoHttp {
    fn register(
        &self,
        _method: RStr<'_>,
        path: RStr<'_>,
        _handler: HttpHandlerBox,
    ) -> RResult<(), RString> {
        RResult::RErr(format!("no HTTP server in tests (path {path})").into())
    }
}

#[derive(Clone)]
struct NoLoader;

impl PluginLoader for NoLoader {
    fn load_health(&self, name: RStr<'_>) -> RResult<HealthBox, RString> {
        RResult::RErr(format!("no plugin loader in tests (plugin {name})").into())
    }
}

/// A context for plugin `name` and the capture of everything it logs.
pub fn context(name: &str) -> (PluginContext, LogCapture) {
    let capture = LogCapture::default();
    let ctx = PluginContext {
        plugin_name: name.into(),
        log: Logger::new(CaptureLogger(capture.clone())),
        http: HttpRegistry_TO::from_ptr(RArc::new(NoHttp), TD_Opaque),
        loader: PluginLoader_TO::from_ptr(RArc::new(NoLoader), TD_Opaque),
    };
    (ctx, capture)
}

/// The next message on `rx` within `timeout`, or `None`.
pub fn recv_within<T>(rx: &RReceiver<T>, timeout: Duration) -> Option<T> {
    rx.recv_timeout(timeout).ok()
}

/// True when no message arrives on `rx` for `quiet` (the message is dropped otherwise).
pub fn nothing_within<T>(rx: &RReceiver<T>, quiet: Duration) -> bool {
    rx.recv_timeout(quiet).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_captures_logs_and_refuses_services() {
        let (ctx, logs) = context("demo");
        ctx.log.info("hello");
        ctx.log.error("bad thing");
        assert!(logs.contains(LogLevel::Info, "hello"));
        assert_eq!(logs.count(LogLevel::Error, "bad"), 1);
        assert!(!logs.contains(LogLevel::Error, "hello"));
        assert!(ctx.loader.load_health("tcp".into()).into_result().is_err());
        assert_eq!(ctx.plugin_name, "demo");
    }
}
