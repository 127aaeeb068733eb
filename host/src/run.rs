//! Start-up and shut-down: the parts built from their configurations, in order, then the
//! engine run until a stop.
//!
//! The order matters: what can fail on bad input (the token and TLS files, the drain state
//! file, the listening port, the VPC) is checked before any plugin starts, and on the way
//! out the cluster is left first, so that another instance takes over while this one stops.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use abi_stable::external_types::crossbeam_channel as rchannel;
use anyhow::{bail, Context};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use vpcrouter_cluster::{ClusterConfig, ClusterEvent, ClusterHandle};
use vpcrouter_drains::Drains;
use vpcrouter_ec2::{Connected, Ec2Error, Ec2Vpc};
use vpcrouter_engine::{Engine, EngineConfig, Event, Leadership, Ports, StopSignal};
use vpcrouter_planner::model::{TableSelection, VpcState};
use vpcrouter_planner::plan::ListMode;
use vpcrouter_plugin_api::{HostList, NotifierBox};
use vpcrouter_plugin_host::manager::Reloader;
use vpcrouter_plugin_host::{Endpoints, LoadedPlugin, Loader, Queues, Running, STOP_TIMEOUT};
use vpcrouter_server::{InfoFn, PluginSource, Security, Server, ServerContext};
use vpcrouter_status::{Metrics, ServerInfo};

use crate::cli::{self, ClusterOptions, Invocation, Options};
use crate::logging::LogHandle;
use crate::notifiers;

/// Runs the program; returns the exit status.
pub fn main(argv: Vec<String>) -> i32 {
    let loader = Loader::default();
    match cli::parse(&argv, &loader) {
        Ok(Invocation::Print(text)) => {
            print!("{text}");
            0
        }
        Ok(Invocation::Client(cmd)) => crate::client::run(cmd),
        Ok(Invocation::Plan(options)) => crate::plan::run(*options),
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
            let logs_to_stdout = options.log.to_stdout();
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

/// Runs the daemon until SIGTERM/SIGINT or a fatal error.
pub fn run(o: Options) -> anyhow::Result<()> {
    let log = o.log.init()?;
    o.plugins.check_dependencies()?;
    // The token and TLS files first: a bad one fails the start before anything runs.
    let security = o.server.security().map_err(anyhow::Error::msg)?;
    let (events, events_rx) = unbounded_channel::<Event>();
    // The drains next: a corrupt state file fails the start too.
    let drains = open_drains(&o, &events)?;
    // Bound before anything else starts, so a taken port fails fast.
    let listener = o.server.bind()?;
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    let metrics = Arc::new(Metrics::default());
    let vpc = rt
        .block_on(o.ec2.connect(o.cluster_name.as_deref(), metrics.clone()))
        .map_err(|e| anyhow::anyhow!("VPC and region were not given and cannot be detected: {e}"))?;
    let tables = first_read(&rt, &vpc, &o.routing.tables)?;
    let endpoints = Endpoints::default();
    let (queues, hosts) = plugin_queues(&o, &events);
    let cluster = o.cluster.as_ref().map(|c| join_cluster(c, &vpc.vpc_id, &events, &drains)).transpose()?;
    let leave_cluster = LeaveCluster(cluster.clone());
    let started = notifiers::start(
        &o.plugins,
        &endpoints,
        o.notify.sns_topic.as_ref(),
        &vpc,
        o.ec2.role.as_ref(),
        o.cluster.is_some(),
    )?;
    let notifiers = StopNotifiers(started.hub);
    notifiers::tell_drains(&drains, &notifiers.0);
    let plugins = o.plugins.start(&endpoints, queues)?;
    // The plugins registered their endpoints: refuse unauthenticated writes off loopback.
    o.server.check_exposure(listener.local_addr(), &endpoints, &security).map_err(anyhow::Error::msg)?;
    let drain_refusal = o.server.drain_refusal(listener.local_addr(), &security);
    let health_interval = plugins.health().map_or(1.0, |h| h.interval_secs());
    let ports = Ports {
        vpc: Arc::new(Ec2Vpc::new(vpc.executor.clone(), vpc.vpc_id.clone())),
        leadership: cluster.clone().map(|c| Arc::new(c) as Arc<dyn Leadership>),
        observer: metrics.clone(),
        announcer: Arc::new(notifiers.0.clone()),
        watch: Box::new(move |list: HostList| hosts.send(list).is_ok()),
    };
    let engine = Engine::new(engine_config(&o, &vpc.vpc_id, health_interval), ports, events_rx);
    spawn_signal_thread(events.clone(), engine.stop_handle(), log, plugins.reloader(), security.clone())?;
    let executor = vpc.executor.clone();
    let server = listener.serve(ServerContext {
        info: server_info(&o, &vpc),
        status: engine.status(),
        endpoints,
        plugins: plugin_sources(&o, &plugins, &started.plugins),
        ec2: Arc::new(move || executor.view()),
        metrics,
        cluster,
        security,
        drains,
        drain_refusal,
        notifiers: notifiers.0.clone(),
    })?;
    log_start(&o, &vpc, &tables);
    let result = rt.block_on(engine.run());
    stop(leave_cluster, notifiers, plugins, server);
    result.map_err(Into::into)
}

/// The order of the way out: the cluster first (another instance takes over at once), then
/// the notifiers (what they could not deliver in time is logged as dropped), the plugins,
/// then the server.
fn stop(leave_cluster: LeaveCluster, notifiers: StopNotifiers, plugins: Running, server: Server) {
    drop(leave_cluster);
    drop(notifiers);
    drop(plugins);
    server.stop();
    tracing::info!("*** Stopping vpcrouter ***");
}

/// The drains, from the state file (or, in cluster mode, from etcd once joined); the engine
/// hears of each change, and of the routers drained at start.
fn open_drains(o: &Options, events: &UnboundedSender<Event>) -> anyhow::Result<Drains> {
    let tx = events.clone();
    let notify = move |set| {
        let _ = tx.send(Event::Drains(set));
    };
    let drains = match &o.cluster {
        None => Drains::open(&o.state_dir, notify)?,
        Some(_) => Drains::in_cluster(notify),
    };
    let drained = drains.ips();
    if !drained.is_empty() {
        let list = drained.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        tracing::info!(drained = %list, state = %drains.location(), "drained routers (from the state file): they are not used");
        let _ = events.send(Event::Drains(drained));
    }
    Ok(drains)
}

/// What the first read of the VPC says, for the start line: the number of route tables and
/// the tables selected. EC2 not reachable yet is only a warning (the engine retries).
struct Tables {
    /// How many route tables the VPC has (`unknown` before a read).
    count: String,
    /// The tables the selection names now.
    selected: String,
}

/// Reads the VPC once and checks the table selection against it.
fn first_read(rt: &tokio::runtime::Runtime, vpc: &Connected, selection: &TableSelection) -> anyhow::Result<Tables> {
    match rt.block_on(vpc.executor.read_state(&vpc.vpc_id)) {
        Ok(state) => {
            Ok(Tables { count: state.route_tables.len().to_string(), selected: check_selection(selection, &state)? })
        }
        Err(e) if e.is_transient() => {
            tracing::warn!("EC2 not reachable yet, will retry: {e}");
            Ok(Tables { count: "unknown".into(), selected: "unknown".into() })
        }
        // Says which role and what to check: one line, without the VPC's preamble.
        Err(e @ Ec2Error::AssumeRole { .. }) => bail!("{e}"),
        Err(e) => bail!("cannot read VPC {} in region {}: {e}", vpc.vpc_id, vpc.region),
    }
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

/// The queues between the plugins and the engine: specs and health reports are forwarded
/// into the engine's events; the returned sender gives the health plugin its hosts.
fn plugin_queues(o: &Options, events: &UnboundedSender<Event>) -> (Queues, rchannel::RSender<HostList>) {
    let (specs, spec_rx) = rchannel::unbounded();
    let (hosts_tx, hosts) = rchannel::unbounded();
    let (reports, report_rx) = rchannel::unbounded();
    let (watcher, health) = (&o.plugins.watcher.lib.meta.name, &o.plugins.health.lib.meta.name);
    bridge(spec_rx, events.clone(), Event::Spec, format!("watcher plugin '{watcher}' closed its route spec queue"));
    bridge(
        report_rx,
        events.clone(),
        Event::Health,
        format!("health plugin '{health}' closed its health report queue"),
    );
    (Queues { specs, hosts, reports }, hosts_tx)
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

/// The engine's configuration, from the routing options and what start-up learned.
fn engine_config(o: &Options, vpc_id: &str, health_interval_secs: f64) -> EngineConfig {
    let r = &o.routing;
    EngineConfig {
        vpc_id: vpc_id.to_string(),
        ignore: r.ignore_routes.clone(),
        recheck: (r.recheck_interval > 0).then(|| Duration::from_secs(r.recheck_interval)),
        dry_run: r.dry_run,
        watcher_name: o.plugins.watcher.lib.meta.name.to_string(),
        first_health_wait: first_health_wait(health_interval_secs),
        lists: o.ec2.prefix_lists.then(|| ListMode::new(o.cluster_name.as_deref().unwrap_or(vpc_id))),
        quota: r.quota,
        failback: r.failback,
        tables: r.tables.clone(),
        zone_affinity: r.zone_affinity,
        consistency_window: r.consistency_window,
    }
}

/// Two health intervals plus a second, within 1–30 s: enough for one full round of checks.
fn first_health_wait(interval_secs: f64) -> Duration {
    let secs = if interval_secs.is_finite() { interval_secs * 2.0 + 1.0 } else { 1.0 };
    Duration::from_secs_f64(secs.clamp(1.0, 30.0))
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

/// Stops the notifiers within [`STOP_TIMEOUT`] when dropped: at shutdown, and when start-up
/// fails after they started.
struct StopNotifiers(vpcrouter_notify::Notifiers);

impl Drop for StopNotifiers {
    fn drop(&mut self) {
        self.0.stop(STOP_TIMEOUT);
    }
}

/// Joins the cluster: its events go to the engine, its drains to `drains`, which then keep
/// their changes in etcd.
fn join_cluster(
    c: &ClusterOptions,
    vpc_id: &str,
    events: &UnboundedSender<Event>,
    drains: &Drains,
) -> anyhow::Result<ClusterHandle> {
    let name = c.name.clone().unwrap_or_else(|| vpc_id.to_string());
    vpcrouter_cluster::check_name("the cluster name (the VPC id)", &name).map_err(anyhow::Error::msg)?;
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
    let (events, from_etcd) = (events.clone(), drains.clone());
    let handle = ClusterHandle::start(cfg, move |ev| match ev {
        // The drains etcd holds: in force at once (the engine hears of them through `drains`).
        ClusterEvent::Drains(set) => from_etcd.set_from_cluster(set),
        ClusterEvent::Reports(peers) => {
            let _ = events.send(Event::Peers(peers));
        }
        ClusterEvent::Role { leader, leader_id } => {
            let _ = events.send(Event::Role { leader, leader_id });
        }
    })?;
    drains.attach(Arc::new(handle.clone()));
    Ok(handle)
}

/// The running plugins as the status server shows them: watcher first, then health, then
/// the notifier plugins.
fn plugin_sources(o: &Options, running: &Running, notifiers: &[Arc<NotifierBox>]) -> Vec<PluginSource> {
    let mut sources = Vec::new();
    if let Some(w) = running.watcher() {
        sources.push(plugin_source(&o.plugins.watcher, "watcher", Arc::new(move || w.status())));
    }
    if let Some(h) = running.health() {
        sources.push(plugin_source(&o.plugins.health, "health", Arc::new(move || h.status())));
    }
    for (p, n) in o.plugins.notifiers.iter().zip(notifiers) {
        let n = n.clone();
        sources.push(plugin_source(p, "notifier", Arc::new(move || n.status())));
    }
    sources
}

fn plugin_source(p: &LoadedPlugin, kind: &'static str, info: InfoFn) -> PluginSource {
    PluginSource {
        name: p.lib.meta.name.to_string(),
        kind,
        version: p.lib.meta.version.to_string(),
        arguments: p.args.values.iter().map(|t| (t.0.to_string(), t.1.to_string())).collect(),
        info,
    }
}

/// What `/` shows about this run, with vpc-router's parameter names.
fn server_info(o: &Options, vpc: &Connected) -> ServerInfo {
    let (w, h) = (&o.plugins.watcher.lib.meta, &o.plugins.health.lib.meta);
    let role = o.ec2.role.as_ref();
    let params = serde_json::json!({
        "logfile": o.log.logfile, "region_name": vpc.region, "vpc_id": vpc.vpc_id,
        "route_recheck_interval": o.routing.recheck_interval, "verbose": o.log.verbose,
        "addr": o.server.address, "port": o.server.port, "mode": w.name.as_str(), "health": h.name.as_str(),
        "ignore_routes": o.routing.ignore_routes_raw, "dry_run": o.routing.dry_run,
        // The role in use; of the external id only whether one is given.
        "role_arn": role.map(|r| r.arn.as_str()),
        "role_session_name": role.map(|r| r.session_name.as_str()),
        "role_external_id_set": role.map(|r| r.external_id.is_some()),
        "notify": notify_names(o),
    });
    ServerInfo {
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
        ignore_routes: o.routing.ignore_routes.iter().map(|c| c.to_string()).collect(),
    }
}

/// The start line: what runs, where, and with which limits.
fn log_start(o: &Options, vpc: &Connected, tables: &Tables) {
    let (w, h) = (&o.plugins.watcher.lib.meta, &o.plugins.health.lib.meta);
    let limits = &o.ec2.limits;
    tracing::info!(
        version = crate::VERSION,
        mode = %format!("{} ({})", w.name, w.version),
        health = %format!("{} ({})", h.name, h.version),
        region = %vpc.region, vpc = %vpc.vpc_id, route_tables = %tables.count, route_table_rule = %o.routing.tables,
        selected = %tables.selected, zone_affinity = o.routing.zone_affinity, dry_run = o.routing.dry_run,
        ec2_write_burst = limits.write.burst, ec2_write_rate = limits.write.rate,
        ec2_max_in_flight = limits.max_in_flight,
        role = o.ec2.role.as_ref().map_or("(none)", |r| r.arn.as_str()),
        notify = %notify_names(o),
        "*** Starting vpcrouter ***"
    );
}

/// The notifiers, for the start line: `exec,sns`, or `(none)`.
fn notify_names(o: &Options) -> String {
    let mut names: Vec<&str> = o.plugins.notifiers.iter().map(|p| p.lib.meta.name.as_str()).collect();
    if o.notify.sns_topic.is_some() {
        names.push("sns");
    }
    if names.is_empty() {
        "(none)".into()
    } else {
        names.join(",")
    }
}

/// SIGTERM/SIGINT stop the engine (abandoning an EC2 call in flight); SIGHUP reopens the log
/// file, re-reads the status server's token and TLS files, and asks the watcher to re-read
/// its configuration.
fn spawn_signal_thread(
    tx: UnboundedSender<Event>,
    stop: Arc<StopSignal>,
    log: LogHandle,
    watcher: Reloader,
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
                watcher.reload();
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
