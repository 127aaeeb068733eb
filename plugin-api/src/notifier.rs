//! Writing a notifier: deliver one event, and the SDK runs everything around it.
//!
//! Implement [`NotifierPlugin`]: `start` parses the options, `notify` delivers one
//! [`Event`] (run a command, POST it, publish it) and returns success or the error. The host
//! calls `notify` for one event at a time, in the order they happened, from a thread of the
//! notifier's own, with a bounded queue in front (the oldest event is dropped when it is
//! full), so a slow or hanging delivery delays neither failovers nor the other notifiers.
//! At shutdown the [`StopToken`] of [`NotifyRun::stop_token`] fires: a delivery that waits
//! (a retry's backoff, a command) should give up then.
//!
//! ```no_run
//! use vpcrouter_plugin_api::prelude::*;
//!
//! /// Logs every event.
//! struct Echo {
//!     log: Logger,
//! }
//! impl PluginDescription for Echo {
//!     const NAME: &'static str = "echo";
//!     const DESCRIPTION: &'static str = "Logs every event";
//!     const VERSION: &'static str = "1.0.0";
//! }
//! impl NotifierPlugin for Echo {
//!     fn start(_args: &PluginArgs, run: &NotifyRun) -> Result<Echo, String> {
//!         Ok(Echo { log: run.log().clone() })
//!     }
//!     fn notify(&mut self, event: &Event) -> Result<(), String> {
//!         self.log.info(format!("{}: {}", event.name(), event.json()));
//!         Ok(())
//!     }
//! }
//! export_plugin!(notifier: Echo);
//! ```

use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RString, RVec, Tuple2};
use serde_json::{Map, Value};

use crate::args::PluginArgs;
use crate::context::Logger;
use crate::export::{declared_params, guard, guard_or, Exported, PluginDescription, Start};
use crate::plugin::{Notifier, NotifierBox, PluginContext, PluginInstance, PluginIo, PluginKind};
use crate::sync::lock;
use crate::types::{NotifierStats, NotifyEvent, PluginStats, PluginStatus};
use crate::worker::StopToken;

/// A notifier plugin: delivers events somewhere.
pub trait NotifierPlugin: PluginDescription + Send + Sized + 'static {
    /// Parses the options and gets ready; the returned value lives until the plugin stops.
    /// Fails with the message the user sees.
    fn start(args: &PluginArgs, run: &NotifyRun) -> Result<Self, String>;

    /// Delivers one event; the error (a refused request, a command's exit status) is counted,
    /// shown on the status server and logged by the host.
    fn notify(&mut self, event: &Event) -> Result<(), String>;

    /// Plugin-specific state for the status server, a JSON object.
    fn details(&self) -> serde_json::Value {
        serde_json::json!({})
    }
}

/// What a starting notifier gets: the host's services and the stop signal.
pub struct NotifyRun {
    /// The host's services (log, endpoints, the plugin's name).
    ctx: PluginContext,
    /// Fires when the host stops the plugin.
    stop: StopToken,
}

impl NotifyRun {
    /// The host's services.
    pub fn context(&self) -> &PluginContext {
        &self.ctx
    }

    /// The host's log.
    pub fn log(&self) -> &Logger {
        &self.ctx.log
    }

    /// Fires when the plugin is stopped: keep a clone and give up a delivery that waits
    /// (`stop.wait(backoff)` sleeps and returns true on stop).
    pub fn stop_token(&self) -> StopToken {
        self.stop.clone()
    }
}

/// One event: its name, its JSON object as the host rendered it, and typed access to its
/// fields (PLUGINS.md, "Events", lists them).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// `"event"`: `route_changed`, `failover`, ...
    name: String,
    /// The object as text, exactly as received: what to send on as is.
    json: String,
    /// The object's fields.
    fields: Map<String, Value>,
}

impl Event {
    /// Parses an event: a JSON object whose `"event"` is a string.
    pub fn from_json(json: &str) -> Result<Event, String> {
        let fields = match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => return Err("an event must be a JSON object".into()),
            Err(e) => return Err(format!("an event must be a JSON object: {e}")),
        };
        let Some(Value::String(name)) = fields.get("event") else {
            return Err("an event needs an \"event\" field naming it".into());
        };
        Ok(Event { name: name.clone(), json: json.to_string(), fields })
    }

    /// `route_changed`, `failover`, `router_down`, ...
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The event as one JSON object, exactly as the host sent it.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// Field `name`, `None` when absent.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.get(name)
    }

    /// Field `name` as text: a string as is, a number or a boolean written out, `None` when
    /// absent or null (arrays and objects as JSON).
    pub fn text(&self, name: &str) -> Option<String> {
        match self.fields.get(name)? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    /// `"router"` as an address (`None` when absent, null, or not an address).
    pub fn router(&self) -> Option<Ipv4Addr> {
        self.text("router")?.parse().ok()
    }

    /// `"old_router"` as an address.
    pub fn old_router(&self) -> Option<Ipv4Addr> {
        self.text("old_router")?.parse().ok()
    }
}

/// A started notifier, as the host sees it.
struct Running<T> {
    /// The plugin; `None` once stopped. Locked for one delivery at a time.
    plugin: Mutex<Option<T>>,
    /// Dropped to fire the plugin's [`StopToken`].
    stop: Mutex<Option<crossbeam_channel::Sender<()>>>,
    /// The counters of the status server.
    stats: Mutex<NotifierStats>,
    /// The declared options and their values, for the status.
    params: RVec<Tuple2<RString, RString>>,
    /// Where the plugin's log lines go (the stop line).
    log: Logger,
}

impl<T: NotifierPlugin> Running<T> {
    /// Delivers `event` through the plugin, unless it stopped.
    fn deliver(&self, event: &NotifyEvent) -> Result<(), String> {
        let event = Event::from_json(&event.json)?;
        let mut plugin = lock(&self.plugin);
        let Some(plugin) = plugin.as_mut() else { return Err(format!("notifier '{}' is stopped", T::NAME)) };
        guard(&format!("plugin '{}' notify", T::NAME), || plugin.notify(&event)).into_result().map_err(String::from)
    }
}

impl<T: NotifierPlugin> Notifier for Running<T> {
    fn status(&self) -> PluginStatus {
        let details = guard_or("details", serde_json::json!({}), || {
            lock(&self.plugin).as_ref().map_or_else(|| serde_json::json!({}), |p| p.details())
        });
        PluginStatus {
            version: T::VERSION.into(),
            params: self.params.clone(),
            stats: PluginStats::Notifier(lock(&self.stats).clone()),
            details: details.to_string().into(),
        }
    }

    fn notify(&self, event: &NotifyEvent) -> RResult<(), RString> {
        let result = self.deliver(event);
        let mut stats = lock(&self.stats);
        match &result {
            Ok(()) => stats.delivered += 1,
            Err(e) => {
                stats.failed += 1;
                stats.last_error = e.as_str().into();
            }
        }
        result.map_err(RString::from).into()
    }

    fn stop(&self, within_ms: u64) -> RResult<(), RString> {
        lock(&self.stop).take();
        let deadline = Instant::now() + Duration::from_millis(within_ms);
        // The delivery under way (if any) holds the plugin: wait for it to give up.
        loop {
            if let Ok(mut plugin) = self.plugin.try_lock() {
                plugin.take();
                break;
            }
            if Instant::now() >= deadline {
                return RResult::RErr(
                    format!("notifier '{}' was still delivering an event after {within_ms} ms", T::NAME).into(),
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.log.info(format!("{} notifier plugin: Stopped", T::NAME));
        RResult::ROk(())
    }
}

/// Starts notifier `T` (the SDK's half of [`crate::export_plugin!`]; the testkit's too).
pub(crate) fn start<T: NotifierPlugin>(args: &PluginArgs, ctx: PluginContext) -> Result<NotifierBox, String> {
    let (tx, rx) = crossbeam_channel::bounded::<()>(0);
    let log = ctx.log.clone();
    let run = NotifyRun { ctx, stop: StopToken::new(rx) };
    let plugin = T::start(args, &run)?;
    let running = Running {
        plugin: Mutex::new(Some(plugin)),
        stop: Mutex::new(Some(tx)),
        stats: Mutex::default(),
        params: declared_params::<T>(args),
        log,
    };
    Ok(NotifierBox::from_value(running, TD_Opaque))
}

/// The kind marker of notifier plugins for [`crate::export_plugin!`].
#[doc(hidden)]
pub struct NotifierKind;

/// `T` exported as a notifier plugin (used by [`crate::export_plugin!`]).
#[doc(hidden)]
pub type AsNotifier<T> = Exported<T, NotifierKind>;

impl<T: NotifierPlugin> Start for Exported<T, NotifierKind> {
    const KIND: PluginKind = PluginKind::Notifier;
    fn start_instance(args: &PluginArgs, ctx: PluginContext, io: PluginIo) -> Result<PluginInstance, String> {
        match io {
            PluginIo::Notifier => start::<T>(args, ctx).map(PluginInstance::Notifier),
            _ => Err(format!("'{}' is a notifier plugin, started as another kind", T::NAME)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::testkit::{sample_event, start_notifier};

    /// Fails events named `bad`, panics on `boom`, waits for the stop on `hang`.
    struct Demo {
        seen: Arc<Mutex<Vec<String>>>,
        stop: StopToken,
    }
    static SEEN: Mutex<Option<Arc<Mutex<Vec<String>>>>> = Mutex::new(None);
    impl PluginDescription for Demo {
        const NAME: &'static str = "demo";
        const DESCRIPTION: &'static str = "SDK test";
        const VERSION: &'static str = "0.0.0";
    }
    impl NotifierPlugin for Demo {
        fn start(args: &PluginArgs, run: &NotifyRun) -> Result<Self, String> {
            if args.get("refuse").is_some() {
                return Err("refused to start".into());
            }
            let seen = lock(&SEEN).get_or_insert_with(Arc::default).clone();
            Ok(Demo { seen, stop: run.stop_token() })
        }
        fn notify(&mut self, event: &Event) -> Result<(), String> {
            match event.name() {
                "bad" => Err("bad event".into()),
                "boom" => panic!("boom"),
                "hang" => {
                    self.stop.wait(Duration::from_secs(30));
                    Err("stopped while delivering".into())
                }
                name => {
                    lock(&self.seen).push(format!("{name} {}", event.text("router").unwrap_or_default()));
                    Ok(())
                }
            }
        }
    }

    fn event(name: &str) -> NotifyEvent {
        NotifyEvent { event: name.into(), json: format!(r#"{{"event":"{name}","router":null}}"#).into() }
    }

    #[test]
    fn events_are_delivered_counted_and_errors_and_panics_reported() {
        let h = start_notifier::<Demo>(&[]).unwrap();
        h.notify(&sample_event("router_down")).unwrap();
        assert_eq!(h.notifier.deliver(&event("bad")), Err("bad event".into()));
        let panicked = h.notifier.deliver(&event("boom")).unwrap_err();
        assert!(panicked.contains("plugin 'demo' notify panicked: boom"), "{panicked}");
        // A panic does not poison the plugin: the next event goes through.
        h.notifier.deliver(&event("ok")).unwrap();
        let stats = h.stats();
        assert_eq!((stats.delivered, stats.failed), (2, 2));
        assert!(stats.last_error.contains("panicked"), "{stats:?}");
        let seen = lock(lock(&SEEN).as_ref().unwrap()).clone();
        assert!(seen.contains(&"router_down 10.0.1.10".to_string()) && seen.contains(&"ok ".to_string()), "{seen:?}");
        h.stop().unwrap();
        assert!(h.notifier.deliver(&event("ok")).unwrap_err().contains("stopped"));
        assert!(h.logs.contains(crate::LogLevel::Info, "demo notifier plugin: Stopped"));
    }

    #[test]
    fn stop_makes_a_hanging_delivery_give_up() {
        let h = Arc::new(start_notifier::<Demo>(&[]).unwrap());
        let delivering = h.clone();
        let t = std::thread::spawn(move || delivering.notifier.deliver(&event("hang")));
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        h.stop().unwrap();
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        assert_eq!(t.join().unwrap(), Err("stopped while delivering".into()));
    }

    #[test]
    fn a_start_refusal_and_bad_events_are_errors() {
        assert_eq!(start_notifier::<Demo>(&[("refuse", "1")]).err(), Some("refused to start".into()));
        assert!(Event::from_json("[1]").unwrap_err().contains("JSON object"));
        assert!(Event::from_json(r#"{"time":"x"}"#).unwrap_err().contains("\"event\""));
        let e =
            Event::from_json(r#"{"event":"failover","routes_moved":3,"old_router":null,"router":"10.0.0.1"}"#).unwrap();
        assert_eq!(
            (e.text("routes_moved"), e.text("old_router"), e.router()),
            (Some("3".into()), None, Some([10, 0, 0, 1].into()))
        );
    }
}
