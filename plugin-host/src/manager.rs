//! Starting and stopping the plugins of one run, each call within a deadline: a plugin that
//! hangs cannot hold up vpcrouter.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use abi_stable::std_types::{RArc, RResult, RStr, RString};
use anyhow::bail;
use vpcrouter_plugin_api::{
    HealthBox, HealthReport, HostList, NotifierBox, PluginArgs, PluginContext, PluginInstance, PluginIo, PluginLoader,
    PluginLoaderBox, RReceiver, RSender, RouteSpec, WatcherBox,
};

use crate::endpoints::Endpoints;
use crate::load::PluginLibrary;
use crate::log::PluginLog;

/// How long a plugin's `stop` may take before vpcrouter exits without it.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// Beyond the plugin's own stop deadline, for it to report how the stop went.
const STOP_GRACE: Duration = Duration::from_millis(500);
/// How long a watcher's `reload` may take before the SIGHUP is given up as failed.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A plugin library with the options the host parsed for it.
#[derive(Clone, Debug)]
pub struct LoadedPlugin {
    /// The library.
    pub lib: PluginLibrary,
    /// Its parsed options.
    pub args: PluginArgs,
}

impl LoadedPlugin {
    /// `watcher plugin 'http'`, for messages.
    pub fn describe(&self) -> String {
        format!("{} plugin '{}'", self.lib.meta.kind.as_str(), self.lib.meta.name)
    }
}

/// The plugins a command line names: the one owner of their lifecycle.
#[derive(Clone, Debug)]
pub struct PluginSet {
    /// The watcher (`-m`) and its options.
    pub watcher: LoadedPlugin,
    /// The health plugin (`-H`) and its options.
    pub health: LoadedPlugin,
    /// Further health plugins the health plugin starts (e.g. for `multi`), by name.
    pub subs: BTreeMap<String, LoadedPlugin>,
    /// The notifier plugins (`--notify`), in the order given.
    pub notifiers: Vec<LoadedPlugin>,
}

/// The queues between the running plugins and the engine.
pub struct Queues {
    /// Where the watcher sends full route specs.
    pub specs: RSender<RouteSpec>,
    /// The hosts the health plugin watches, whenever they change.
    pub hosts: RReceiver<HostList>,
    /// Where the health plugin sends its verdicts.
    pub reports: RSender<HealthReport>,
}

impl PluginSet {
    /// Every plugin of the set: the watcher, the health plugin, the ones it starts, then the
    /// notifiers.
    pub fn all(&self) -> impl Iterator<Item = &LoadedPlugin> {
        [&self.watcher, &self.health].into_iter().chain(self.subs.values()).chain(&self.notifiers)
    }

    /// Starts the notifier plugins, with their endpoints in `endpoints`: each with its name,
    /// in the order given. A plugin of the wrong kind, or one that fails to start, stops the
    /// start (the ones started are stopped again).
    pub fn start_notifiers(&self, endpoints: &Endpoints) -> anyhow::Result<Vec<(String, NotifierBox)>> {
        let host = SubPlugins { subs: Arc::new(self.subs.clone()), endpoints: endpoints.clone() };
        let mut started: Vec<(String, NotifierBox)> = Vec::new();
        for p in &self.notifiers {
            let instance = host.start(p, PluginIo::Notifier).and_then(|i| match i {
                PluginInstance::Notifier(n) => Ok(n),
                other => {
                    stop_instance(other);
                    bail!("'{}' ({}) is not a notifier plugin", p.lib.meta.name, p.lib.path.display())
                }
            });
            match instance {
                Ok(n) => started.push((p.lib.meta.name.to_string(), n)),
                Err(e) => {
                    for (_, n) in started {
                        let _ = n.stop_within(STOP_TIMEOUT);
                    }
                    return Err(e);
                }
            }
        }
        Ok(started)
    }

    /// Asks every plugin whether it can run here (tools, privileges): one line naming the
    /// first that cannot.
    pub fn check_dependencies(&self) -> anyhow::Result<()> {
        for p in self.all() {
            if let Err(e) = (p.lib.module.validate_dependencies())().into_result() {
                bail!("{} cannot run here: {e}", p.describe());
            }
        }
        Ok(())
    }

    /// Starts the health plugin, then the watcher, with their endpoints in `endpoints`. A
    /// plugin of the wrong kind, or one that fails to start, stops the start (the ones
    /// started are stopped again).
    pub fn start(&self, endpoints: &Endpoints, queues: Queues) -> anyhow::Result<Running> {
        let host = SubPlugins { subs: Arc::new(self.subs.clone()), endpoints: endpoints.clone() };
        let mut running = Running { watcher: None, health: None };
        let io = PluginIo::Health { hosts: queues.hosts, reports: queues.reports };
        let health = match host.start(&self.health, io)? {
            PluginInstance::Health(h) => Arc::new(h),
            other => {
                stop_instance(other);
                bail!("'{}' ({}) is not a health plugin", self.health.lib.meta.name, self.health.lib.path.display());
            }
        };
        running.health = Some((health, self.health.lib.meta.name.to_string()));
        let watcher = match host.start(&self.watcher, PluginIo::Watcher { specs: queues.specs })? {
            PluginInstance::Watcher(w) => Arc::new(w),
            other => {
                stop_instance(other);
                bail!("'{}' ({}) is not a watcher plugin", self.watcher.lib.meta.name, self.watcher.lib.path.display());
            }
        };
        running.watcher = Some((watcher, self.watcher.lib.meta.name.to_string()));
        Ok(running)
    }
}

/// The running plugins, stopped (each within [`STOP_TIMEOUT`]) when dropped: at shutdown
/// and when start-up fails after they started.
pub struct Running {
    /// The watcher and its name; `None` once stopped.
    watcher: Option<(Arc<WatcherBox>, String)>,
    /// The health plugin and its name; `None` once stopped.
    health: Option<(Arc<HealthBox>, String)>,
}

impl Running {
    /// The running watcher (for its status).
    pub fn watcher(&self) -> Option<Arc<WatcherBox>> {
        self.watcher.as_ref().map(|(w, _)| w.clone())
    }

    /// The running health plugin (for its status and interval).
    pub fn health(&self) -> Option<Arc<HealthBox>> {
        self.health.as_ref().map(|(h, _)| h.clone())
    }

    /// A handle that asks the watcher to re-read its configuration (SIGHUP).
    pub fn reloader(&self) -> Reloader {
        Reloader(self.watcher.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some((w, name)) = self.watcher.take() {
            call_with_timeout(format!("watcher plugin '{name}'"), "stop", STOP_TIMEOUT + STOP_GRACE, move || {
                w.stop(STOP_TIMEOUT.as_millis() as u64).into_result()
            });
        }
        if let Some((h, name)) = self.health.take() {
            call_with_timeout(format!("health plugin '{name}'"), "stop", STOP_TIMEOUT + STOP_GRACE, move || {
                h.stop(STOP_TIMEOUT.as_millis() as u64).into_result()
            });
        }
    }
}

/// Asks the watcher to re-read its configuration, on its own thread and within
/// [`RELOAD_TIMEOUT`]: a hung reload must not keep SIGTERM waiting.
#[derive(Clone)]
pub struct Reloader(Option<(Arc<WatcherBox>, String)>);

impl Reloader {
    /// Starts the reload and returns at once.
    pub fn reload(&self) {
        let Some((w, name)) = self.0.clone() else { return };
        let what = format!("watcher plugin '{name}'");
        let _ = thread::Builder::new()
            .name("plugin-reload".into())
            .spawn(move || call_with_timeout(what, "reload", RELOAD_TIMEOUT, move || w.reload().into_result()));
    }
}

/// Starts plugins with their contexts, and the health plugins that combining plugins ask
/// for, with the options the host parsed for them.
#[derive(Clone)]
struct SubPlugins {
    /// The health plugins combining plugins may start, by name, with their options.
    subs: Arc<BTreeMap<String, LoadedPlugin>>,
    /// Where every plugin registers its endpoints.
    endpoints: Endpoints,
}

impl SubPlugins {
    /// Starts a plugin: it returns running, or says why not.
    fn start(&self, p: &LoadedPlugin, io: PluginIo) -> anyhow::Result<PluginInstance> {
        (p.lib.module.start())(&p.args, self.context(p), io)
            .into_result()
            .map_err(|e| anyhow::anyhow!("{} failed to start: {e}", p.describe()))
    }

    fn context(&self, p: &LoadedPlugin) -> PluginContext {
        PluginContext {
            plugin_name: p.lib.meta.name.clone(),
            log: PluginLog::logger(&p.lib.meta.name),
            http: self.endpoints.registry_for(&p.lib.meta.name),
            loader: PluginLoaderBox::from_ptr(RArc::new(self.clone()), abi_stable::sabi_trait::TD_Opaque),
        }
    }
}

impl PluginLoader for SubPlugins {
    fn start_health(
        &self,
        name: RStr<'_>,
        hosts: RReceiver<HostList>,
        reports: RSender<HealthReport>,
    ) -> RResult<HealthBox, RString> {
        let Some(p) = self.subs.get(name.as_str()) else {
            return RResult::RErr(
                format!("health plugin '{name}' was not announced by required_plugins, so its options were not parsed")
                    .into(),
            );
        };
        match self.start(p, PluginIo::Health { hosts, reports }) {
            Ok(PluginInstance::Health(h)) => RResult::ROk(h),
            Ok(other) => {
                let kind = instance_kind(&other);
                stop_instance(other);
                RResult::RErr(format!("'{name}' is a {kind} plugin, not a health plugin").into())
            }
            Err(e) => RResult::RErr(format!("{e:#}").into()),
        }
    }
}

/// Stops a plugin started as the wrong kind, within [`STOP_TIMEOUT`].
fn stop_instance(instance: PluginInstance) {
    let within = STOP_TIMEOUT.as_millis() as u64;
    let _ = match instance {
        PluginInstance::Watcher(w) => w.stop(within),
        PluginInstance::Health(h) => h.stop(within),
        PluginInstance::Notifier(n) => n.stop(within),
    };
}

/// `watcher`, `health` or `notifier`.
fn instance_kind(instance: &PluginInstance) -> &'static str {
    match instance {
        PluginInstance::Watcher(_) => "watcher",
        PluginInstance::Health(_) => "health",
        PluginInstance::Notifier(_) => "notifier",
    }
}

/// Calls into a plugin on a helper thread and waits at most `within`, so a plugin that
/// hangs cannot hold up vpcrouter.
fn call_with_timeout(
    what: String,
    action: &str,
    within: Duration,
    call: impl FnOnce() -> Result<(), RString> + Send + 'static,
) {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let spawned = thread::Builder::new().name("plugin-call".into()).spawn(move || {
        let _ = tx.send(call());
    });
    if spawned.is_err() {
        tracing::error!("{what}: cannot start a thread to {action} it");
        return;
    }
    match rx.recv_timeout(within) {
        Ok(Ok(())) => tracing::debug!("{what}: {action} done"),
        Ok(Err(e)) => tracing::error!("{what} failed to {action}: {e}"),
        Err(_) => tracing::error!("{what} did not {action} within {} s; going on without it", within.as_secs()),
    }
}
