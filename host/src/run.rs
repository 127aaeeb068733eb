//! Start-up and shut-down: from parsed options to a running engine and back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use abi_stable::external_types::crossbeam_channel as rchannel;
use abi_stable::std_types::{RArc, RResult, RStr, RString};
use anyhow::{bail, Context};
use vpcrouter_plugin_api::{
    HealthBox, HealthReport, HostList, PluginContext, PluginInstance, PluginIo, PluginLoader, PluginLoaderBox,
    RReceiver, RSender, WatcherBox,
};

use crate::cli::{self, Invocation, LoadedPlugin, Options};
use crate::cluster::{ClusterConfig, ClusterEvent, ClusterHandle};
use crate::drain::Drains;
use crate::http::auth::TokenFile;
use crate::http::server::{self, PluginSource, Security, ServerContext};
use crate::http::tls::TlsStore;
use crate::http::Endpoints;
use crate::logging::PluginLog;
use crate::metrics::Metrics;
use crate::plugins::Loader;
use crate::vpc::ec2::{detect_region_and_vpc, Ec2, Ec2Error};
use crate::vpc::executor::{Ec2Vpc, Executor};
use crate::vpc::model::{TableSelection, VpcState};
use crate::vpc::plan::ListMode;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use vpcrouter_engine::{Engine, EngineConfig, Event, Leadership, Ports, StopSignal};

/// How long a plugin's `stop` may take before vpcrouter exits without it.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// Beyond the plugin's own stop deadline, for it to report how the stop went.
const STOP_GRACE: Duration = Duration::from_millis(500);
/// How long a watcher's `reload` may take before the SIGHUP is given up as failed.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the program; returns the exit status.
pub fn main(argv: Vec<String>) -> i32 {
    let loader = Loader::default();
    match cli::parse(&argv, &loader) {
        Ok(Invocation::Print(text)) => {
            print!("{text}");
            0
        }
        Ok(Invocation::Client(cmd)) => crate::client::run(cmd),
        Err(e) => {
            if e.status == 0 {
                print!("{}", e.message);
            } else {
                eprintln!("{}", e.message.trim_end());
            }
            e.status
        }
        Ok(Invocation::Run(options)) => {
            // A log on stdout would show the error a second time next to stderr's line.
            let logs_to_stdout = options.logfile == "-";
            match run(*options) {
                Ok(()) => 0,
                Err(e) => {
                    if !logs_to_stdout {
                        tracing::error!("{e:#}");
                    }
                    eprintln!("error: {e:#}");
                    1
                }
            }
        }
    }
}

/// Starts the health plugins that combining plugins ask for, with the options the host
/// parsed for them.
#[derive(Clone)]
struct HostPluginLoader {
    subs: Arc<BTreeMap<String, LoadedPlugin>>,
    endpoints: Endpoints,
}

impl HostPluginLoader {
    fn boxed(&self) -> PluginLoaderBox {
        PluginLoaderBox::from_ptr(RArc::new(self.clone()), abi_stable::sabi_trait::TD_Opaque)
    }
}

impl PluginLoader for HostPluginLoader {
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
        match start(p, context(p, &self.endpoints, self), PluginIo::Health { hosts, reports }) {
            Ok(PluginInstance::Health(h)) => RResult::ROk(h),
            Ok(PluginInstance::Watcher(w)) => {
                let _ = w.stop(STOP_TIMEOUT.as_millis() as u64);
                RResult::RErr(format!("'{name}' is a watcher plugin, not a health plugin").into())
            }
            Err(e) => RResult::RErr(format!("{e:#}").into()),
        }
    }
}

/// Starts a plugin: it returns running, or says why not.
fn start(p: &LoadedPlugin, ctx: PluginContext, io: PluginIo) -> anyhow::Result<PluginInstance> {
    (p.lib.module.start())(&p.args, ctx, io)
        .into_result()
        .map_err(|e| anyhow::anyhow!("{} plugin '{}' failed to start: {e}", p.lib.meta.kind.as_str(), p.lib.meta.name))
}

fn context(p: &LoadedPlugin, endpoints: &Endpoints, loader: &HostPluginLoader) -> PluginContext {
    PluginContext {
        plugin_name: p.lib.meta.name.clone(),
        log: PluginLog::logger(&p.lib.meta.name),
        http: endpoints.registry_for(&p.lib.meta.name),
        loader: loader.boxed(),
    }
}

/// The running plugins, stopped (each within [`STOP_TIMEOUT`]) when dropped: at shutdown
/// and when start-up fails after they started.
struct RunningPlugins {
    watcher: Option<(Arc<WatcherBox>, String)>,
    health: Option<(Arc<HealthBox>, String)>,
}

impl Drop for RunningPlugins {
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

/// Runs the daemon until SIGTERM/SIGINT or a fatal error.
pub fn run(o: Options) -> anyhow::Result<()> {
    let log_handle = crate::logging::init(o.verbose, &o.logfile, o.log_format)?;
    for p in [&o.watcher, &o.health].into_iter().chain(o.sub_plugins.values()) {
        if let Err(e) = (p.lib.module.validate_dependencies())().into_result() {
            bail!("{} plugin '{}' cannot run here: {e}", p.lib.meta.kind.as_str(), p.lib.meta.name);
        }
    }
    // The token and TLS files first: a bad one fails the start before anything runs.
    let security = Security {
        token: o.http_token_file.as_deref().map(TokenFile::load).transpose().map_err(anyhow::Error::msg)?.map(Arc::new),
        auth_all: o.http_auth_all,
        tls: o.tls.clone().map(TlsStore::load).transpose().map_err(anyhow::Error::msg)?.map(Arc::new),
    };
    let (events_tx, events_rx) = unbounded_channel::<Event>();
    // The drains next: a corrupt state file fails the start too.
    let drains = {
        let tx = events_tx.clone();
        let notify = move |set| {
            let _ = tx.send(Event::Drains(set));
        };
        match &o.cluster {
            None => Drains::open(&o.state_dir, notify)?,
            Some(_) => Drains::in_cluster(notify),
        }
    };
    let drained = drains.ips();
    if !drained.is_empty() {
        let list = drained.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        tracing::info!(drained = %list, state = %drains.location(), "drained routers (from the state file): they are not used");
        let _ = events_tx.send(Event::Drains(drained));
    }
    // Bound before anything else starts, so a taken port fails fast.
    tracing::info!(address = %o.address, port = o.port, "HTTP server: Starting to listen for requests");
    let listener = server::bind(&o.address, o.port)?;
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    let (region, vpc_id) = resolve_region_and_vpc(&rt, o.region.clone(), o.vpc.clone())?;
    let metrics = Arc::new(Metrics::default());
    // The name vpcrouter's prefix lists are tagged with: read in every mode, so that lists
    // left by `--prefix-lists` are retired when it is turned off.
    let list_owner = o.cluster_name.clone().unwrap_or_else(|| vpc_id.clone());
    if let Some(role) = &o.role {
        tracing::info!(
            role = %role.arn, account = role.arn.account(), session = %role.session_name,
            external_id = role.external_id.is_some(), "EC2 calls are made as an assumed role"
        );
    }
    let ec2 = rt
        .block_on(Ec2::connect_as(&region, o.role.as_ref(), metrics.clone()))
        .owning_lists_of(&list_owner)
        .routing_through_lists(o.prefix_lists);
    let exec = Executor::new(ec2, o.ec2_limits);
    let ec2_view = exec.clone();
    let (tables, selected) = match rt.block_on(exec.read_state(&vpc_id)) {
        Ok(state) => (state.route_tables.len().to_string(), check_selection(&o.route_tables, &state)?),
        Err(e) if e.is_transient() => {
            tracing::warn!("EC2 not reachable yet, will retry: {e}");
            ("unknown".into(), "unknown".into())
        }
        // Says which role and what to check: one line, without the VPC's preamble.
        Err(e @ Ec2Error::AssumeRole { .. }) => bail!("{e}"),
        Err(e) => bail!("cannot read VPC {vpc_id} in region {region}: {e}"),
    };

    let endpoints = Endpoints::default();
    let loader = HostPluginLoader { subs: Arc::new(o.sub_plugins.clone()), endpoints: endpoints.clone() };
    let (spec_tx, spec_rx) = rchannel::unbounded();
    let (hosts_tx, hosts_rx) = rchannel::unbounded();
    let (report_tx, report_rx) = rchannel::unbounded();
    bridge(
        spec_rx,
        events_tx.clone(),
        Event::Spec,
        format!("watcher plugin '{}' closed its route spec queue", o.watcher.lib.meta.name),
    );
    bridge(
        report_rx,
        events_tx.clone(),
        Event::Health,
        format!("health plugin '{}' closed its health report queue", o.health.lib.meta.name),
    );
    let cluster = match &o.cluster {
        None => None,
        Some(c) => {
            let handle = start_cluster(c, &vpc_id, events_tx.clone(), drains.clone())?;
            drains.attach(handle.clone());
            Some(handle)
        }
    };
    let leave_cluster = LeaveCluster(cluster.clone());

    let mut running = RunningPlugins { watcher: None, health: None };
    let health = match start(
        &o.health,
        context(&o.health, &endpoints, &loader),
        PluginIo::Health { hosts: hosts_rx, reports: report_tx },
    )? {
        PluginInstance::Health(h) => Arc::new(h),
        PluginInstance::Watcher(w) => {
            let _ = w.stop(STOP_TIMEOUT.as_millis() as u64);
            bail!("'{}' ({}) is not a health plugin", o.health.lib.meta.name, o.health.lib.path.display());
        }
    };
    running.health = Some((health.clone(), o.health.lib.meta.name.to_string()));
    let watcher =
        match start(&o.watcher, context(&o.watcher, &endpoints, &loader), PluginIo::Watcher { specs: spec_tx })? {
            PluginInstance::Watcher(w) => Arc::new(w),
            PluginInstance::Health(h) => {
                let _ = h.stop(STOP_TIMEOUT.as_millis() as u64);
                bail!("'{}' ({}) is not a watcher plugin", o.watcher.lib.meta.name, o.watcher.lib.path.display());
            }
        };
    running.watcher = Some((watcher.clone(), o.watcher.lib.meta.name.to_string()));
    // The plugins registered their endpoints: refuse unauthenticated writes off loopback.
    match server::check_exposure(listener.local_addr(), &endpoints, &security, o.http_allow_unauthenticated) {
        Ok(Some(warning)) => tracing::warn!("{warning}"),
        Ok(None) => {}
        Err(line) => return Err(anyhow::Error::msg(line)),
    }
    let local = listener.local_addr();
    let drain_refusal = (!local.ip().to_canonical().is_loopback()
        && !security.authenticates_clients()
        && !o.http_allow_unauthenticated)
        .then(|| {
            format!(
                "drain requests on {local} need authentication: start vpcrouter with --http-token-file FILE, or listen on a loopback address, or pass --http-allow-unauthenticated"
            )
        });
    if let Some(why) = &drain_refusal {
        tracing::warn!("{why}; POST/DELETE /drain are refused until then");
    }

    let ports = Ports {
        vpc: Arc::new(Ec2Vpc::new(exec, vpc_id.clone())),
        leadership: cluster.clone().map(|c| Arc::new(c) as Arc<dyn Leadership>),
        observer: metrics.clone(),
        watch: Box::new(move |hosts| hosts_tx.send(hosts).is_ok()),
    };
    let engine = Engine::new(
        EngineConfig {
            vpc_id: vpc_id.clone(),
            ignore: o.ignore_routes.clone(),
            recheck: (o.route_recheck_interval > 0).then(|| Duration::from_secs(o.route_recheck_interval)),
            dry_run: o.dry_run,
            watcher_name: o.watcher.lib.meta.name.to_string(),
            first_health_wait: first_health_wait(health.interval_secs()),
            lists: o.prefix_lists.then(|| ListMode::new(&list_owner)),
            quota: o.route_table_quota,
            failback: o.failback,
            tables: o.route_tables.clone(),
            zone_affinity: o.zone_affinity,
            consistency_window: o.consistency_window,
        },
        ports,
        events_rx,
    );

    // The status server asks the plugins for their status; no lock is held around plugin calls.
    spawn_signal_thread(
        events_tx.clone(),
        engine.stop_handle(),
        log_handle,
        watcher.clone(),
        o.watcher.lib.meta.name.to_string(),
        security.clone(),
    )?;
    let info = status_info(&o, &region, &vpc_id);
    let plugins = vec![
        plugin_source(&o.watcher, "watcher", {
            let w = watcher.clone();
            Arc::new(move || w.status())
        }),
        plugin_source(&o.health, "health", {
            let h = health.clone();
            Arc::new(move || h.status())
        }),
    ];
    let server = listener.serve(ServerContext {
        info,
        status: engine.status(),
        endpoints: endpoints.clone(),
        plugins,
        ec2: Arc::new(move || crate::status::Ec2View::of(&ec2_view)),
        metrics,
        cluster: cluster.clone(),
        security,
        drains,
        drain_refusal,
    })?;
    tracing::info!(
        version = crate::VERSION,
        mode = %format!("{} ({})", o.watcher.lib.meta.name, o.watcher.lib.meta.version),
        health = %format!("{} ({})", o.health.lib.meta.name, o.health.lib.meta.version),
        region = %region, vpc = %vpc_id, route_tables = %tables, route_table_rule = %o.route_tables,
        selected = %selected, zone_affinity = o.zone_affinity, dry_run = o.dry_run,
        ec2_write_burst = o.ec2_limits.write.burst, ec2_write_rate = o.ec2_limits.write.rate,
        ec2_max_in_flight = o.ec2_limits.max_in_flight,
        role = o.role.as_ref().map_or("(none)", |r| r.arn.as_str()),
        "*** Starting vpcrouter ***"
    );
    let result = rt.block_on(engine.run());
    // First, so that another instance takes over while this one shuts down.
    drop(leave_cluster);
    drop(running);
    server.stop();
    tracing::info!("*** Stopping vpcrouter ***");
    result.map_err(Into::into)
}

/// Checks the table selection against the VPC as read at start, and returns the tables it
/// selects now, for the start line. A `--route-tables` id the VPC does not have stops the
/// start; tags that no table carries yet are only a warning (tables may be tagged later).
fn check_selection(selection: &TableSelection, state: &VpcState) -> anyhow::Result<String> {
    let named: Vec<&str> = state.route_tables.iter().filter(|t| selection.names(t)).map(|t| t.id.as_str()).collect();
    match selection {
        TableSelection::Serving => return Ok("per spec".into()),
        TableSelection::Ids(ids) => {
            if let Some(id) = ids.iter().find(|id| !named.contains(&id.as_str())) {
                let mut known: Vec<&str> = state.route_tables.iter().map(|t| t.id.as_str()).collect();
                known.sort_unstable();
                bail!(
                    "--route-tables: {id} is not a route table of VPC {} (its tables: {}); check the id and the VPC",
                    state.vpc_id,
                    known.join(", ")
                );
            }
        }
        TableSelection::Tagged(_) if named.is_empty() => tracing::warn!(
            "{selection}: no route table of VPC {} carries these tags yet; nothing is managed until one does (the tags are looked at again at every read)",
            state.vpc_id
        ),
        TableSelection::Tagged(_) => {}
    }
    Ok(if named.is_empty() { "none".into() } else { named.join(",") })
}

/// Leaves the cluster (revoking the lease) when dropped: at shutdown, and also when start-up
/// fails after joining, so that an instance that never ran does not keep the leadership
/// until its lease expires.
struct LeaveCluster(Option<ClusterHandle>);

impl Drop for LeaveCluster {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.stop(STOP_TIMEOUT);
        }
    }
}

/// Joins the cluster: its events go to the engine.
fn start_cluster(
    c: &cli::ClusterOptions,
    vpc_id: &str,
    events: UnboundedSender<Event>,
    drains: Drains,
) -> anyhow::Result<ClusterHandle> {
    let name = c.name.clone().unwrap_or_else(|| vpc_id.to_string());
    crate::cluster::check_name("the cluster name (the VPC id)", &name).map_err(anyhow::Error::msg)?;
    for w in &c.warnings {
        tracing::warn!("cluster: {w}");
    }
    let cfg = ClusterConfig {
        conn: c.conn.clone(),
        name,
        instance_id: c.instance_id.clone(),
        lease_ttl: c.lease_ttl,
        quorum: c.quorum,
    };
    tracing::info!(
        cluster = %cfg.name, instance = %cfg.instance_id, etcd = %cfg.conn.urls().join(","),
        etcd_user = cfg.conn.security.user.as_deref().unwrap_or("(none)"),
        lease_ttl_s = cfg.lease_ttl, health_quorum = cfg.quorum.as_str(),
        "cluster mode: only the elected leader writes to EC2"
    );
    ClusterHandle::start(cfg, move |ev| match ev {
        // The drains etcd holds: in force at once (the engine hears of them through `drains`).
        ClusterEvent::Drains(set) => drains.set_from_cluster(set),
        ClusterEvent::Reports(peers) => {
            let _ = events.send(Event::Peers(peers));
        }
        ClusterEvent::Role { leader, leader_id } => {
            let _ = events.send(Event::Role { leader, leader_id });
        }
    })
}

fn plugin_source(p: &LoadedPlugin, kind: &'static str, info: server::InfoFn) -> PluginSource {
    PluginSource {
        name: p.lib.meta.name.to_string(),
        kind,
        version: p.lib.meta.version.to_string(),
        arguments: p.args.values.iter().map(|t| (t.0.to_string(), t.1.to_string())).collect(),
        info,
    }
}

/// What `/` shows about this run, with vpc-router's parameter names.
fn status_info(o: &Options, region: &str, vpc_id: &str) -> crate::status::ServerInfo {
    let (w, h) = (&o.watcher.lib.meta, &o.health.lib.meta);
    let params = serde_json::json!({
        "logfile": o.logfile, "region_name": region, "vpc_id": vpc_id,
        "route_recheck_interval": o.route_recheck_interval, "verbose": o.verbose,
        "addr": o.address, "port": o.port, "mode": w.name.as_str(), "health": h.name.as_str(),
        "ignore_routes": o.ignore_routes_raw, "dry_run": o.dry_run,
        // The role in use; of the external id only whether one is given.
        "role_arn": o.role.as_ref().map(|r| r.arn.as_str()),
        "role_session_name": o.role.as_ref().map(|r| r.session_name.as_str()),
        "role_external_id_set": o.role.as_ref().map(|r| r.external_id.is_some()),
    });
    crate::status::ServerInfo {
        version_line: format!(
            "vpcrouter ({}): mode: {} ({}), health-check: {} ({})",
            crate::VERSION,
            w.name,
            w.version,
            h.name,
            h.version
        ),
        start_time: std::time::SystemTime::now(),
        params: params.as_object().cloned().unwrap_or_default(),
        ignore_routes: o.ignore_routes.iter().map(|c| c.to_string()).collect(),
    }
}

/// Two health intervals plus a second, within 1–30 s: enough for one full round of checks.
fn first_health_wait(interval_secs: f64) -> Duration {
    let secs = if interval_secs.is_finite() { interval_secs * 2.0 + 1.0 } else { 1.0 };
    Duration::from_secs_f64(secs.clamp(1.0, 30.0))
}

/// Region and VPC from the command line; what is missing comes from the instance metadata.
fn resolve_region_and_vpc(
    rt: &tokio::runtime::Runtime,
    region: Option<String>,
    vpc: Option<String>,
) -> anyhow::Result<(String, String)> {
    if let (Some(r), Some(v)) = (&region, &vpc) {
        return Ok((r.clone(), v.clone()));
    }
    let (md_region, md_vpc) = rt
        .block_on(detect_region_and_vpc())
        .map_err(|e| anyhow::anyhow!("VPC and region were not given and cannot be detected: {e}"))?;
    Ok((region.unwrap_or(md_region), vpc.unwrap_or(md_vpc)))
}

/// Forwards a plugin queue into the engine's event channel; reports when it closes.
fn bridge<T: Send + 'static>(
    rx: rchannel::RReceiver<T>,
    tx: UnboundedSender<Event>,
    wrap: fn(T) -> Event,
    closed: String,
) {
    thread::Builder::new()
        .name("queue-bridge".into())
        .spawn(move || {
            while let Ok(msg) = rx.recv() {
                if tx.send(wrap(msg)).is_err() {
                    return;
                }
            }
            let _ = tx.send(Event::QueueClosed(closed));
        })
        .map(drop)
        .unwrap_or_else(|e| tracing::error!("cannot start a queue thread: {e}"));
}

/// SIGTERM/SIGINT stop the engine (abandoning an EC2 call in flight); SIGHUP reopens the log file, re-reads the status
/// server's token and TLS files, and asks the watcher to re-read its configuration.
fn spawn_signal_thread(
    tx: UnboundedSender<Event>,
    stop: Arc<StopSignal>,
    log: crate::logging::LogHandle,
    watcher: Arc<WatcherBox>,
    watcher_name: String,
    security: Security,
) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]).context("cannot install signal handlers")?;
    thread::Builder::new().name("signals".into()).spawn(move || {
        for sig in signals.forever() {
            if sig == SIGHUP {
                if let Err(e) = log.reopen() {
                    tracing::error!("SIGHUP: cannot reopen the log file, still writing to the old one: {e}");
                }
                tracing::info!(signal = sig, "reload requested: log file reopened, watcher re-reads its configuration");
                security.reload();
                // On its own thread: a hung reload must not keep SIGTERM waiting.
                let (w, what) = (watcher.clone(), format!("watcher plugin '{watcher_name}'"));
                let _ = thread::Builder::new()
                    .name("plugin-reload".into())
                    .spawn(move || call_with_timeout(what, "reload", RELOAD_TIMEOUT, move || w.reload().into_result()));
                continue;
            }
            tracing::info!(signal = sig, "stop requested");
            let _ = tx.send(Event::Stop);
            stop.request();
            return;
        }
    })?;
    Ok(())
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
