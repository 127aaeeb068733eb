//! A notifier as the hub sees it: something that delivers one rendered event at a time.

use std::time::Duration;

use crate::event::Rendered;

/// A notifier (a `--notify` plugin, or the built-in SNS one).
///
/// [`deliver`](Sink::deliver) is called on the notifier's own delivery thread, one event at
/// a time and in event order; it may block (retries, a slow command, a slow endpoint).
/// [`stop`](Sink::stop) is called from another thread at shutdown, possibly while a
/// delivery is in progress, and should make that delivery give up.
pub trait Sink: Send + Sync + 'static {
    /// Delivers one event; `Err` says why it was not delivered (counted as failed).
    fn deliver(&self, event: &Rendered) -> Result<(), String>;

    /// Stops: give up a delivery in progress and release what the sink holds, within
    /// `within`.
    fn stop(&self, within: Duration) -> Result<(), String> {
        let _ = within;
        Ok(())
    }
}
