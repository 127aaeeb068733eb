//! The command line: vpc-router 1.8's options plus the options of the loaded plugins.
//!
//! Plugins declare their own options, so the command is built in two steps: a pre-scan
//! finds `-m`, `-H` and `--plugin-dir`, the plugins are loaded (by [`crate::plugins`]), and
//! then the full clap command (main options + plugin options) parses the arguments; the
//! loaded plugins then check their option values (also through [`crate::plugins`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};
use vpcrouter_etcd_conn::{EtcdConn, EtcdSecurity};
use vpcrouter_plugin_api::{ArgSpec, PluginArgs, PluginKind};

use crate::plugins::{self, LoadError, Loader, PluginError, PluginLibrary, SearchPath};
use crate::vpc::limits::{BucketConfig, LimitsConfig};
use crate::vpc::model::{Cidr, TableSelection};
use crate::vpc::role::{self, RoleArn, RoleConfig};

/// The default health plugin, as in vpc-router.
pub const DEFAULT_HEALTH: &str = "icmpecho";

/// Everything `vpcrouter` was told to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--verbose`: debug logging.
    pub verbose: bool,
    /// `-l/--logfile`: a path, or `-` for stdout.
    pub logfile: String,
    /// `--log-format`: text or json.
    pub log_format: crate::logging::LogFormat,
    /// `-r/--region`; detected from instance metadata when absent.
    pub region: Option<String>,
    /// `-v/--vpc`; detected from instance metadata when absent.
    pub vpc: Option<String>,
    /// `--ignore_routes` as given.
    pub ignore_routes_raw: Option<String>,
    /// `--ignore_routes` parsed: routes inside these are never deleted or changed.
    pub ignore_routes: Vec<Cidr>,
    /// `--route_recheck_interval` seconds; 0 = no periodic recheck.
    pub route_recheck_interval: u64,
    /// `-a/--address` of the status server.
    pub address: String,
    /// `-p/--port` of the status server.
    pub port: u16,
    /// `--dry-run`: plan and log, change nothing.
    pub dry_run: bool,
    /// The watcher plugin and its options.
    pub watcher: LoadedPlugin,
    /// The health plugin and its options.
    pub health: LoadedPlugin,
    /// Further health plugins the health plugin loads (e.g. for `multi`), by name.
    pub sub_plugins: BTreeMap<String, LoadedPlugin>,
    /// The search path plugins were found in.
    pub search: SearchPath,
    /// Cluster mode (`--cluster-etcd`), if on.
    pub cluster: Option<ClusterOptions>,
    /// `--ec2-*`: client-side token buckets and the cap on calls in flight.
    pub ec2_limits: LimitsConfig,
    /// `--consistency-window`: how long an acknowledged write is trusted over a read that
    /// does not show it yet (EC2's reads lag its writes).
    pub consistency_window: Duration,
    /// `--prefix-lists`: route groups of CIDRs through prefix lists vpcrouter owns.
    pub prefix_lists: bool,
    /// `--route-table-quota`: routes one route table may hold.
    pub route_table_quota: u32,
    /// `--failback` with `--failback-after`: whether routes move back to their preferred router.
    pub failback: crate::vpc::plan::FailbackPolicy,
    /// `--cluster-name`, with or without a cluster: the name vpcrouter's prefix lists are
    /// tagged with (`None`: the VPC id).
    pub cluster_name: Option<String>,
    /// `--http-token-file`: the status server's bearer token is this file's content.
    pub http_token_file: Option<PathBuf>,
    /// `--http-auth-all`: every request needs the token, read-only ones included.
    pub http_auth_all: bool,
    /// `--http-allow-unauthenticated`: serve state-changing endpoints off loopback without
    /// authentication.
    pub http_allow_unauthenticated: bool,
    /// `--tls-cert`, `--tls-key`, `--tls-client-ca`: HTTPS.
    pub tls: Option<crate::http::tls::TlsFiles>,
    /// `--role-arn`, `--role-session-name`, `--role-external-id`: EC2 calls made as a role
    /// (of another account).
    pub role: Option<RoleConfig>,
    /// `--state-dir`: where the drains are kept (not used in cluster mode: etcd keeps them).
    pub state_dir: PathBuf,
    /// `--route-tables` / `--route-table-tag`: the route tables managed (by default those
    /// serving the subnets of the spec's routers, as in vpc-router).
    pub route_tables: TableSelection,
    /// `--zone-affinity`: each zone's tables use a router of their own zone when one is
    /// healthy.
    pub zone_affinity: bool,
}

/// `--cluster-*` and `--health-quorum`.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `--cluster-etcd` with the `--etcd-*` options (TLS, user and password).
    pub conn: EtcdConn,
    /// Warnings about the `--etcd-*` options (a password file others may read), to log.
    pub warnings: Vec<String>,
    /// `--cluster-name`; `None`: the VPC id.
    pub name: Option<String>,
    /// `--instance-id` (default: the hostname).
    pub instance_id: String,
    /// `--cluster-lease-ttl` seconds.
    pub lease_ttl: u64,
    /// `--health-quorum`.
    pub quorum: crate::cluster::Quorum,
}

/// A plugin library with the values of its options.
#[derive(Debug, Clone)]
pub struct LoadedPlugin {
    /// The library.
    pub lib: PluginLibrary,
    /// Its parsed options.
    pub args: PluginArgs,
}

/// What the command line asks for.
pub enum Invocation {
    /// Run the daemon.
    Run(Box<Options>),
    /// Print this text to stdout and exit 0 (help, version, plugin list).
    Print(String),
    /// A client subcommand (`drain`, `undrain`, `drains`): one request to a running daemon.
    Client(crate::client::ClientCommand),
}

/// A command-line error: the message and the exit status.
#[derive(Debug)]
pub struct CliError {
    /// Full text to print on stderr.
    pub message: String,
    /// Exit status (2 for usage errors, as argparse/clap do).
    pub status: i32,
}

impl CliError {
    fn usage(message: impl Into<String>) -> CliError {
        CliError { message: message.into(), status: 2 }
    }
}

impl From<LoadError> for CliError {
    fn from(e: LoadError) -> CliError {
        CliError { message: format!("error: {e}"), status: if e.is_usage() { 2 } else { 1 } }
    }
}

impl From<PluginError> for CliError {
    fn from(e: PluginError) -> CliError {
        CliError { message: format!("error: {e}"), status: if e.is_usage() { 2 } else { 1 } }
    }
}

/// The result of the pre-scan.
#[derive(Debug, Default, PartialEq)]
struct PreScan {
    mode: Option<String>,
    health: Option<String>,
    plugin_dirs: Vec<PathBuf>,
    allow_insecure: bool,
    list: bool,
    help: bool,
}

/// Finds the options needed before plugins are loaded. Understands `-m X`, `-mX`,
/// `--mode X` and `--mode=X` (and likewise for `-H`/`--health`, `--plugin-dir`).
fn prescan(argv: &[String]) -> PreScan {
    let mut scan = PreScan::default();
    let mut i = 1;
    while i < argv.len() {
        let arg = argv[i].as_str();
        if arg == "--" {
            break;
        }
        let mut take = |short: &str, long: &str| -> Option<String> {
            if arg == short || arg == long {
                i += 1;
                return argv.get(i).cloned();
            }
            if let Some(v) = arg.strip_prefix(long).and_then(|r| r.strip_prefix('=')) {
                return Some(v.to_string());
            }
            (!short.is_empty() && arg.len() > 2 && arg.starts_with(short)).then(|| arg[2..].to_string())
        };
        if let Some(v) = take("-m", "--mode") {
            scan.mode = Some(v);
        } else if let Some(v) = take("-H", "--health") {
            scan.health = Some(v);
        } else if let Some(v) = take("", "--plugin-dir") {
            scan.plugin_dirs.push(PathBuf::from(v));
        } else {
            match arg {
                "--allow-insecure-plugins" => scan.allow_insecure = true,
                "--list-plugins" => scan.list = true,
                "-h" | "--help" => scan.help = true,
                _ => {}
            }
        }
        i += 1;
    }
    scan
}

/// Help heading of the `--ec2-*` options.
const EC2_HEADING: &str = "EC2 call limits (client side, modelled on EC2's per-account token buckets)";

/// Help heading of the `--role-*` options.
const ROLE_HEADING: &str = "Shared VPCs and other accounts (EC2 calls made as an assumed IAM role)";

/// Help heading of the status server's security options.
const SECURITY_HEADING: &str = "Status server security";

/// Help heading of the route-table options.
const TABLES_HEADING: &str = "Route tables (which tables vpcrouter manages, and which router each uses)";

/// The client subcommands: `vpcrouter drain|undrain|drains ...` (only as the first word,
/// so that the daemon's command line is parsed exactly as before).
pub const CLIENT_SUBCOMMANDS: [&str; 3] = ["drain", "undrain", "drains"];

/// The default `--state-dir` (systemd's `StateDirectory=vpcrouter`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/vpcrouter";

/// The options every client subcommand takes: how to reach the daemon.
fn client_target_args(cmd: Command) -> Command {
    cmd.arg(
        Arg::new("url")
            .long("url")
            .value_name("URL")
            .conflicts_with_all(["address", "port"])
            .help("the daemon's status server, http://HOST:PORT or https://HOST:PORT"),
    )
    .arg(
        Arg::new("address")
            .short('a')
            .long("address")
            .value_name("ADDR")
            .default_value("localhost")
            .help("address of the daemon's status server (its -a/--address)"),
    )
    .arg(
        Arg::new("port")
            .short('p')
            .long("port")
            .value_name("PORT")
            .default_value("33289")
            .value_parser(clap::value_parser!(u16).range(1..))
            .help("port of the daemon's status server (its -p/--port)"),
    )
    .arg(
        Arg::new("http_token_file")
            .long("http-token-file")
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .help("send the token in this file as 'Authorization: Bearer <token>' (the daemon's --http-token-file)"),
    )
    .arg(
        Arg::new("tls_ca")
            .long("tls-ca")
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .help("with an https:// URL: trust this PEM CA instead of the system's roots"),
    )
    .arg(
        Arg::new("tls_cert")
            .long("tls-cert")
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .requires("tls_key")
            .help("with an https:// URL: present this PEM client certificate (for a daemon with --tls-client-ca)"),
    )
    .arg(
        Arg::new("tls_key")
            .long("tls-key")
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .requires("tls_cert")
            .help("the PEM private key of --tls-cert"),
    )
}

/// `drain`, `undrain` and `drains`, as clap commands (for parsing, help, the man page and
/// the completions).
fn client_commands() -> [Command; 3] {
    let ip = || Arg::new("ip").value_name("IP").required(true).help("the router, by its IP in the route spec");
    [
        client_target_args(Command::new("drain")
            .about("Drain a router (maintenance mode): its routes move to other healthy candidates now, and nothing is routed to it until it is undrained; kept over restarts (--state-dir, or etcd in cluster mode)")
            .arg(ip())
            .arg(Arg::new("reason").long("reason").value_name("TEXT").help("why (shown by 'vpcrouter drains' and /status)"))),
        client_target_args(Command::new("undrain")
            .about("Undrain a router: it is a candidate again (routes are not moved back to it)")
            .arg(ip())),
        client_target_args(Command::new("drains")
            .about("List the drained routers: IP, since, scope (this vpcrouter or the cluster), CIDRs, reason")
            .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("print the daemon's JSON (GET /drain)"))),
    ]
}

/// Parses a client subcommand (`argv[1]` is one of [`CLIENT_SUBCOMMANDS`]).
fn parse_client(argv: &[String]) -> Result<Invocation, CliError> {
    let cmd =
        Command::new("vpcrouter").version(crate::VERSION).subcommand_required(true).subcommands(client_commands());
    let m = cmd.try_get_matches_from(argv).map_err(|e| match e.kind() {
        clap::error::ErrorKind::DisplayVersion | clap::error::ErrorKind::DisplayHelp => {
            CliError { message: e.to_string(), status: 0 }
        }
        _ => CliError::usage(e.render().to_string()),
    })?;
    let Some((name, sub)) = m.subcommand() else { return Err(CliError::usage("error: no subcommand")) };
    let mut target = match sub.get_one::<String>("url") {
        Some(url) => crate::client::Target::from_url(url).map_err(|e| CliError::usage(format!("error: {e}")))?,
        None => crate::client::Target::from_address(
            &check_address(sub.get_one::<String>("address").map(String::as_str).unwrap_or("localhost"))?,
            sub.get_one::<u16>("port").copied().unwrap_or(33289),
        ),
    };
    target.token_file = sub.get_one::<PathBuf>("http_token_file").cloned();
    target.tls_ca = sub.get_one::<PathBuf>("tls_ca").cloned();
    target.client_cert = sub.get_one::<PathBuf>("tls_cert").cloned().zip(sub.get_one::<PathBuf>("tls_key").cloned());
    let ip = || {
        let raw = sub.get_one::<String>("ip").map(String::as_str).unwrap_or_default();
        vpcrouter_plugin_api::spec::parse_ipv4(raw).ok_or_else(|| {
            CliError::usage(format!(
                "error: '{raw}' is not an IPv4 address (name the router by its IP in the route spec)"
            ))
        })
    };
    let action = match name {
        "drain" => {
            let reason = match sub.get_one::<String>("reason") {
                Some(r) => {
                    Some(crate::drain::check_reason(r).map_err(|e| CliError::usage(format!("error: --reason: {e}")))?)
                }
                None => None,
            };
            crate::client::Action::Drain { ip: ip()?, reason }
        }
        "undrain" => crate::client::Action::Undrain { ip: ip()? },
        _ => crate::client::Action::List { json: sub.get_flag("json") },
    };
    Ok(Invocation::Client(crate::client::ClientCommand { target, action }))
}

/// `--route-tables`: comma-separated route table ids (`rtb-` and hex digits).
fn parse_table_ids(raw: &str) -> Result<BTreeSet<String>, String> {
    let ids: BTreeSet<String> = raw.split(',').map(|id| id.trim().to_owned()).collect();
    for id in &ids {
        let hex = id.strip_prefix("rtb-").unwrap_or_default();
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("'{id}' is not a route table id: give ids such as rtb-0abc1234, separated by commas"));
        }
    }
    Ok(ids)
}

/// `--route-table-tag`: `KEY=VALUE`, as EC2 takes tags (key 1–128 characters, value at
/// most 256; the value may be empty).
fn parse_table_tag(raw: &str) -> Result<(String, String), String> {
    let Some((key, value)) = raw.split_once('=') else {
        return Err(format!("'{raw}' has no '=': give KEY=VALUE, e.g. vpcrouter:managed=true"));
    };
    if key.is_empty() || key.chars().count() > 128 {
        return Err(format!("'{raw}': the tag key must have 1 to 128 characters"));
    }
    if value.chars().count() > 256 {
        return Err(format!("'{raw}': the tag value must have at most 256 characters"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// `--route-tables` or `--route-table-tag` (clap refuses both), or vpc-router's rule.
fn table_selection(m: &ArgMatches) -> TableSelection {
    if let Some(ids) = m.get_one::<BTreeSet<String>>("route_tables") {
        return TableSelection::Ids(ids.clone());
    }
    match m.get_many::<(String, String)>("route_table_tag") {
        Some(tags) => TableSelection::Tagged(tags.cloned().collect()),
        None => TableSelection::Serving,
    }
}

/// A refill rate: calls per second, above 0 and at most 100,000.
/// `--consistency-window`'s default: a few seconds, as EC2's reads usually catch up within
/// one or two (AWS: "Eventual consistency in the Amazon EC2 API").
const DEFAULT_CONSISTENCY_WINDOW: Duration = Duration::from_secs(5);
/// The longest `--consistency-window`.
const MAX_CONSISTENCY_WINDOW: f64 = 300.0;

/// `--consistency-window`: seconds, 0 (reads always believed) to 300.
fn parse_window(raw: &str) -> Result<Duration, String> {
    let secs: f64 = raw.trim().parse().map_err(|_| format!("'{raw}' is not a number of seconds"))?;
    if secs.is_finite() && (0.0..=MAX_CONSISTENCY_WINDOW).contains(&secs) {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!("{raw} seconds is out of range: give 0 (always believe EC2's reads) to {MAX_CONSISTENCY_WINDOW}"))
    }
}

fn parse_rate(raw: &str) -> Result<f64, String> {
    let rate: f64 = raw.trim().parse().map_err(|_| format!("'{raw}' is not a number of calls per second"))?;
    if rate.is_finite() && rate > 0.0 && rate <= 100_000.0 {
        Ok(rate)
    } else {
        Err(format!("{raw} calls per second is out of range: give a rate above 0 and at most 100000"))
    }
}

/// `--ec2-*` as parsed by clap (defaults included).
fn ec2_limits(m: &ArgMatches) -> LimitsConfig {
    let d = LimitsConfig::default();
    let u = |name: &str, default: u32| m.get_one::<u32>(name).copied().unwrap_or(default);
    let f = |name: &str, default: f64| m.get_one::<f64>(name).copied().unwrap_or(default);
    LimitsConfig {
        read: BucketConfig { burst: u("ec2_read_burst", d.read.burst), rate: f("ec2_read_rate", d.read.rate) },
        write: BucketConfig { burst: u("ec2_write_burst", d.write.burst), rate: f("ec2_write_rate", d.write.rate) },
        max_in_flight: u("ec2_max_in_flight", d.max_in_flight as u32) as usize,
    }
}

/// Main options a plugin may declare too (by the same long name): the host adds them once,
/// and the plugin gets the host's value. The `--etcd-*` options are shared by cluster mode
/// and the etcd watcher, so that one set of TLS and login options serves both.
fn shared_host_option(long: &str) -> bool {
    vpcrouter_etcd_conn::is_shared(long)
}

/// The `--etcd-*` options, from the table the etcd watcher declares its options from.
fn add_etcd_args(mut cmd: Command) -> Command {
    for o in vpcrouter_etcd_conn::OPTIONS {
        cmd = cmd.arg(
            Arg::new(o.long)
                .long(o.long)
                .value_name(o.value_name)
                .help(o.help)
                .help_heading(vpcrouter_etcd_conn::HEADING),
        );
    }
    cmd
}

/// The main options, without plugin options.
fn base_command() -> Command {
    add_etcd_args(base_command_without_etcd())
}

/// The main options but the `--etcd-*` ones.
fn base_command_without_etcd() -> Command {
    Command::new("vpcrouter")
        .version(crate::VERSION)
        .about("VPC router: Manage routes in VPC route table")
        .after_help("Plugin options are listed when the plugin is named: vpcrouter -m configfile --help, vpcrouter -H tcp --help.\nvpcrouter --list-plugins shows the plugins found.\nMaintenance mode: vpcrouter drain IP, vpcrouter undrain IP, vpcrouter drains (see vpcrouter drain --help).")
        .arg(Arg::new("verbose").long("verbose").action(ArgAction::SetTrue).help("produces more output"))
        .arg(Arg::new("logfile").short('l').long("logfile").value_name("FILE").default_value("-")
            .help("full path name for the logfile, or '-' for logging to stdout"))
        .arg(Arg::new("log_format").long("log-format").value_name("FORMAT").default_value("text")
            .value_parser(["text", "json"]).help("log line format: text, or json (one object per line) for log shippers"))
        .arg(Arg::new("region").short('r').long("region").value_name("REGION")
            .help("the AWS region of the VPC (default: from the instance metadata)"))
        .arg(Arg::new("vpc").short('v').long("vpc").value_name("VPC_ID")
            .help("the ID of the VPC in which to operate (default: from the instance metadata)"))
        .arg(Arg::new("ignore_routes").long("ignore_routes").value_name("CIDRS")
            .help("Comma separated list of CIDRs or IPs for routes which vpcrouter should ignore"))
        .arg(Arg::new("route_recheck_interval").long("route_recheck_interval").value_name("SECONDS")
            .default_value("30").value_parser(clap::value_parser!(u64))
            .help("time between regular checks of VPC route tables; 0 disables them (vpc-router 1.8 checked every second)"))
        .arg(Arg::new("address").short('a').long("address").value_name("ADDR").default_value("localhost")
            .help("address to listen on for HTTP requests"))
        .arg(Arg::new("port").short('p').long("port").value_name("PORT").default_value("33289")
            .value_parser(clap::value_parser!(u16).range(1..))
            .help("port to listen on for HTTP requests"))
        .arg(Arg::new("http_token_file").long("http-token-file").value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf)).help_heading(SECURITY_HEADING)
            .help("require 'Authorization: Bearer <token>' for requests that change state (all but GET and HEAD); the token is this file's content, re-read on SIGHUP"))
        .arg(Arg::new("http_auth_all").long("http-auth-all").action(ArgAction::SetTrue).requires("http_token_file")
            .help_heading(SECURITY_HEADING)
            .help("require the token for every request, read-only ones (/status, /metrics) included"))
        .arg(Arg::new("http_allow_unauthenticated").long("http-allow-unauthenticated").action(ArgAction::SetTrue)
            .conflicts_with("http_token_file").help_heading(SECURITY_HEADING)
            .help("serve state-changing endpoints (POST /route_spec) on a non-loopback address without authentication, as vpc-router did"))
        .arg(Arg::new("tls_cert").long("tls-cert").value_name("FILE").requires("tls_key")
            .value_parser(clap::value_parser!(PathBuf)).help_heading(SECURITY_HEADING)
            .help("serve HTTPS with this PEM certificate chain (with --tls-key); re-read on SIGHUP"))
        .arg(Arg::new("tls_key").long("tls-key").value_name("FILE").requires("tls_cert")
            .value_parser(clap::value_parser!(PathBuf)).help_heading(SECURITY_HEADING)
            .help("the PEM private key of --tls-cert"))
        .arg(Arg::new("tls_client_ca").long("tls-client-ca").value_name("FILE").requires("tls_cert")
            .value_parser(clap::value_parser!(PathBuf)).help_heading(SECURITY_HEADING)
            .help("require client certificates signed by this PEM CA (needs --tls-cert)"))
        .arg(Arg::new("mode").short('m').long("mode").value_name("NAME").required(true)
            .help("name of the watcher plugin (configfile, http, fixedconf, ...)"))
        .arg(Arg::new("health").short('H').long("health").value_name("NAME").default_value(DEFAULT_HEALTH)
            .help("name of the health-check plugin"))
        .arg(Arg::new("plugin_dir").long("plugin-dir").value_name("DIR").action(ArgAction::Append)
            .value_parser(clap::value_parser!(PathBuf))
            .help("directory to search for plugins first (repeatable)"))
        .arg(Arg::new("allow_insecure_plugins").long("allow-insecure-plugins").action(ArgAction::SetTrue)
            .help("load plugin files even if group or others may write them or another user than root or vpcrouter's owns them"))
        .arg(Arg::new("list_plugins").long("list-plugins").action(ArgAction::SetTrue)
            .help("list the plugins found, with versions and descriptions, and exit"))
        .arg(Arg::new("state_dir").long("state-dir").value_name("DIR").default_value(DEFAULT_STATE_DIR)
            .env("VPCROUTER_STATE_DIR").value_parser(clap::value_parser!(PathBuf))
            .help("directory for state kept over restarts: the drained routers (drains.json); not used in cluster mode, where etcd keeps them"))
        .arg(Arg::new("dry_run").long("dry-run").action(ArgAction::SetTrue)
            .help("log the route changes that would be made, change nothing"))
        .arg(Arg::new("prefix_lists").long("prefix-lists").action(ArgAction::SetTrue)
            .help("route the CIDRs that share their routers through one prefix list per group: a failover is one route write per table per group"))
        .arg(Arg::new("route_tables").long("route-tables").value_name("RTB[,RTB...]")
            .value_parser(parse_table_ids).conflicts_with("route_table_tag").help_heading(TABLES_HEADING)
            .help("manage exactly these route tables (e.g. the private subnets' tables of a NAT deployment, or a gateway route table) instead of those serving the routers' subnets"))
        .arg(Arg::new("route_table_tag").long("route-table-tag").value_name("KEY=VALUE").action(ArgAction::Append)
            .value_parser(parse_table_tag).help_heading(TABLES_HEADING)
            .help("manage every route table of the VPC carrying this tag (repeatable: all must match), re-evaluated at every read; e.g. vpcrouter:managed=true"))
        .arg(Arg::new("zone_affinity").long("zone-affinity").action(ArgAction::SetTrue).help_heading(TABLES_HEADING)
            .help("a table whose subnets are in one availability zone uses a healthy router of its own zone (the first in the spec's order), so traffic stays in its zone; other tables share one router per CIDR"))
        .arg(Arg::new("route_table_quota").long("route-table-quota").value_name("ROUTES").default_value("500")
            .value_parser(clap::value_parser!(u32).range(1..=100_000))
            .help("routes a route table may hold (a prefix-list route counts its list's max entries); vpcrouter warns before a table would exceed it"))
        .arg(Arg::new("failback").long("failback").value_name("POLICY").default_value("never")
            .value_parser(["never", "preferred"])
            .help("never: a route stays where a failover put it, as in vpc-router; preferred: it moves back to its CIDR's first router (in the spec's order) once that one has been healthy for --failback-after seconds"))
        .arg(Arg::new("failback_after").long("failback-after").value_name("SECONDS").default_value("300")
            .value_parser(clap::value_parser!(u64).range(1..=MAX_FAILBACK_AFTER))
            .help("with --failback preferred: how long the preferred router must be healthy without a single failure before routes move back to it, and the least time between two failbacks of a CIDR"))
        .arg(Arg::new("ec2_write_burst").long("ec2-write-burst").value_name("CALLS").default_value("50")
            .value_parser(clap::value_parser!(u32).range(1..=100_000))
            .help_heading(EC2_HEADING)
            .help("size of vpcrouter's bucket for route writes (EC2's mutating-call bucket: 50); one is kept in reserve"))
        .arg(Arg::new("ec2_write_rate").long("ec2-write-rate").value_name("PER_SECOND").default_value("5")
            .value_parser(parse_rate)
            .help_heading(EC2_HEADING)
            .help("refill of the write bucket, calls per second (EC2: 5); lower it to leave room for other tools in the account"))
        .arg(Arg::new("consistency_window").long("consistency-window").value_name("SECONDS").default_value("5")
            .value_parser(parse_window)
            .help_heading(EC2_HEADING)
            .help("how long a route change EC2 acknowledged is trusted over a read that does not show it yet (EC2's reads are eventually consistent): no second write for it because of such a read; after the window the read is believed (0: always)"))
        .arg(Arg::new("ec2_read_burst").long("ec2-read-burst").value_name("CALLS").default_value("100")
            .value_parser(clap::value_parser!(u32).range(1..=100_000))
            .help_heading(EC2_HEADING)
            .help("size of vpcrouter's bucket for Describe calls (EC2's non-mutating bucket: 100)"))
        .arg(Arg::new("ec2_read_rate").long("ec2-read-rate").value_name("PER_SECOND").default_value("20")
            .value_parser(parse_rate)
            .help_heading(EC2_HEADING)
            .help("refill of the read bucket, calls per second (EC2: 20)"))
        .arg(Arg::new("ec2_max_in_flight").long("ec2-max-in-flight").value_name("CALLS").default_value("50")
            .value_parser(clap::value_parser!(u32).range(1..=1000))
            .help_heading(EC2_HEADING)
            .help("EC2 calls in flight at once, at most (a full write burst goes out together)"))
        .arg(Arg::new("role_arn").long("role-arn").value_name("ARN").help_heading(ROLE_HEADING)
            .help("make the EC2 calls with the credentials of this IAM role (e.g. the VPC owner's, arn:aws:iam::<account>:role/<name>), assumed through STS with the usual credentials (env, profile, instance role); renewed before they expire"))
        .arg(Arg::new("role_session_name").long("role-session-name").value_name("NAME").requires("role_arn")
            .help_heading(ROLE_HEADING)
            .help("the role session name, shown in the role account's CloudTrail [default: vpcrouter-<instance id or hostname>]"))
        .arg(Arg::new("role_external_id").long("role-external-id").value_name("ID").requires("role_arn")
            .help_heading(ROLE_HEADING)
            .help("the external id the role's trust policy requires (sts:ExternalId), if any"))
        .arg(Arg::new("cluster_etcd").long("cluster-etcd").value_name("URL[,URL...]").env("VPCROUTER_CLUSTER_ETCD")
            .help_heading("Cluster mode (several instances, one leader)")
            .help("etcd client URLs: run as one of several vpcrouters; only the elected leader writes to EC2"))
        .arg(Arg::new("cluster_name").long("cluster-name").value_name("NAME")
            .help_heading("Cluster mode (several instances, one leader)")
            .help("instances with the same name form one cluster; vpcrouter's prefix lists are tagged with it [default: the VPC id]"))
        .arg(Arg::new("instance_id").long("instance-id").value_name("ID").requires("cluster_etcd")
            .help_heading("Cluster mode (several instances, one leader)")
            .help("this instance's id, unique in the cluster [default: the hostname]"))
        .arg(Arg::new("cluster_lease_ttl").long("cluster-lease-ttl").value_name("SECONDS").requires("cluster_etcd")
            .default_value("5").value_parser(clap::value_parser!(u64).range(1..=300))
            .help_heading("Cluster mode (several instances, one leader)")
            .help("lease time-to-live: a dead leader is replaced within this time"))
        .arg(Arg::new("health_quorum").long("health-quorum").value_name("RULE").requires("cluster_etcd")
            .default_value("majority").value_parser(["majority", "any", "all"])
            .help_heading("Cluster mode (several instances, one leader)")
            .help("how many instances' health reports must call a host failed: majority, any (a single view, as without a cluster) or all"))
}

/// Adds a plugin's options under a heading of its own.
fn add_plugin_args(mut cmd: Command, lib: &PluginLibrary) -> Result<Command, CliError> {
    let heading = format!("Options of {} plugin '{}'", lib.meta.kind.as_str(), lib.meta.name);
    for spec in &lib.args {
        let long = spec.long.to_string();
        if shared_host_option(&long) && !spec.flag {
            // The host's option: added once, its value handed to the plugin.
            continue;
        }
        if cmd.get_arguments().any(|a| a.get_long() == Some(long.as_str()) || a.get_id() == long.as_str()) {
            return Err(CliError {
                message: format!(
                    "error: plugin '{}' ({}) declares option --{long}, which is already taken",
                    lib.meta.name,
                    lib.path.display()
                ),
                status: 1,
            });
        }
        cmd = cmd.arg(plugin_arg(spec, &long).help_heading(heading.clone()));
    }
    Ok(cmd)
}

fn plugin_arg(spec: &ArgSpec, long: &str) -> Arg {
    let mut arg = Arg::new(long.to_string()).long(long.to_string()).help(spec.help.to_string());
    if let Some(c) = spec.short.as_ref().into_option().and_then(|s| s.chars().next()) {
        arg = arg.short(c);
    }
    if spec.flag {
        return arg.action(ArgAction::SetTrue);
    }
    arg = arg.value_name(spec.value_name.to_string()).required(spec.required && spec.default.is_rnone());
    if let Some(d) = spec.default.as_ref().into_option() {
        arg = arg.default_value(d.to_string());
    }
    arg
}

fn plugin_values(lib: &PluginLibrary, m: &ArgMatches) -> PluginArgs {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for spec in &lib.args {
        let id = spec.long.as_str();
        if spec.flag {
            if m.get_flag(id) {
                pairs.push((id.to_string(), "true".to_string()));
            }
        } else if let Some(v) = m.get_one::<String>(id) {
            pairs.push((id.to_string(), v.clone()));
        }
    }
    PluginArgs::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// The man page (roff) or a shell completion script for the main options, for packaging:
/// `vpcrouter --generate man|bash|zsh|fish`.
pub fn generate(what: &str) -> Result<String, CliError> {
    use clap_complete::{generate as complete, Shell};
    let mut cmd =
        base_command().arg(generate_arg()).subcommands(client_commands()).args_conflicts_with_subcommands(true);
    let mut out: Vec<u8> = Vec::new();
    let shell = match what {
        "man" => {
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .map_err(|e| CliError { message: format!("error: cannot render the man page: {e}"), status: 1 })?;
            return Ok(String::from_utf8_lossy(&out).into_owned());
        }
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        "fish" => Shell::Fish,
        other => {
            return Err(CliError::usage(format!("error: --generate: '{other}' is not one of man, bash, zsh, fish")))
        }
    };
    complete(shell, &mut cmd, "vpcrouter", &mut out);
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn generate_arg() -> Arg {
    Arg::new("generate")
        .long("generate")
        .value_name("WHAT")
        .hide(true)
        .help("print the man page or a completion script (man, bash, zsh, fish) and exit")
}

/// Parses the command line. Plugins named by it are loaded through `loader`.
pub fn parse(argv: &[String], loader: &Loader) -> Result<Invocation, CliError> {
    if argv.get(1).is_some_and(|a| CLIENT_SUBCOMMANDS.contains(&a.as_str())) {
        return parse_client(argv);
    }
    if let Some(i) = argv.iter().position(|a| a == "--generate") {
        let what = argv.get(i + 1).map(String::as_str).unwrap_or("");
        return generate(what).map(Invocation::Print);
    }
    let scan = prescan(argv);
    let search = SearchPath::new(&scan.plugin_dirs, scan.allow_insecure);
    if scan.list && !scan.help {
        return Ok(Invocation::Print(crate::plugins::list_text(loader, &search)));
    }
    let health_name = scan.health.clone().unwrap_or_else(|| DEFAULT_HEALTH.to_string());
    let mut cmd = base_command();
    let mut load_notes = Vec::new();

    let watcher_lib = match &scan.mode {
        Some(mode) => match loader.load(&search, PluginKind::Watcher, mode) {
            Ok(lib) => Some(lib),
            Err(e) if scan.help => {
                load_notes.push(e.to_string());
                None
            }
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let mut subs = BTreeMap::new();
    let health_lib = match plugins::load_health_tree(loader, &search, argv, &health_name, &mut subs) {
        Ok(lib) => Some(lib),
        Err(e) if scan.help || scan.mode.is_none() => {
            load_notes.push(CliError::from(e).message);
            None
        }
        Err(e) => return Err(e.into()),
    };
    for lib in watcher_lib.iter().chain(health_lib.iter()).chain(subs.values()) {
        cmd = add_plugin_args(cmd, lib)?;
    }
    if scan.help {
        let mut help = cmd.render_help().to_string();
        for note in load_notes {
            help.push_str(&format!("\nnote: {note}\n"));
        }
        return Ok(Invocation::Print(help));
    }
    let m = cmd.try_get_matches_from(argv).map_err(|e| match e.kind() {
        clap::error::ErrorKind::DisplayVersion | clap::error::ErrorKind::DisplayHelp => {
            CliError { message: e.to_string(), status: 0 }
        }
        _ => CliError::usage(e.render().to_string()),
    })?;
    // Both are loaded when we get here: -m is required, and a health load error without
    // --help returned above.
    let (Some(watcher_lib), Some(health_lib)) = (watcher_lib, health_lib) else {
        return Err(CliError::usage(load_notes.join("\n")));
    };
    let watcher = LoadedPlugin { args: plugin_values(&watcher_lib, &m), lib: watcher_lib };
    let health = LoadedPlugin { args: plugin_values(&health_lib, &m), lib: health_lib };
    let sub_plugins: BTreeMap<String, LoadedPlugin> =
        subs.into_iter().map(|(n, lib)| (n, LoadedPlugin { args: plugin_values(&lib, &m), lib })).collect();
    for p in [&watcher, &health].into_iter().chain(sub_plugins.values()) {
        plugins::validate_config(&p.lib, &p.args)?;
    }
    check_etcd_options_used(&m, [&watcher, &health].into_iter().chain(sub_plugins.values()))?;
    let options = Options {
        verbose: m.get_flag("verbose"),
        logfile: m.get_one::<String>("logfile").cloned().unwrap_or_else(|| "-".into()),
        log_format: match m.get_one::<String>("log_format").map(String::as_str) {
            Some("json") => crate::logging::LogFormat::Json,
            _ => crate::logging::LogFormat::Text,
        },
        region: m.get_one::<String>("region").cloned(),
        vpc: m.get_one::<String>("vpc").cloned(),
        ignore_routes_raw: m.get_one::<String>("ignore_routes").cloned(),
        ignore_routes: parse_ignore_routes(m.get_one::<String>("ignore_routes").map(String::as_str))
            .map_err(|e| CliError::usage(format!("error: --ignore_routes: {e}")))?,
        route_recheck_interval: check_recheck(m.get_one::<u64>("route_recheck_interval").copied().unwrap_or(30))?,
        address: check_address(m.get_one::<String>("address").map(String::as_str).unwrap_or("localhost"))?,
        port: m.get_one::<u16>("port").copied().unwrap_or(33289),
        dry_run: m.get_flag("dry_run"),
        watcher,
        health,
        sub_plugins,
        search,
        cluster: cluster_options(&m)?,
        ec2_limits: ec2_limits(&m),
        consistency_window: m.get_one::<Duration>("consistency_window").copied().unwrap_or(DEFAULT_CONSISTENCY_WINDOW),
        prefix_lists: m.get_flag("prefix_lists"),
        route_table_quota: m.get_one::<u32>("route_table_quota").copied().unwrap_or(500),
        failback: failback_policy(&m)?,
        cluster_name: cluster_name(&m)?,
        http_token_file: m.get_one::<PathBuf>("http_token_file").cloned(),
        http_auth_all: m.get_flag("http_auth_all"),
        http_allow_unauthenticated: m.get_flag("http_allow_unauthenticated"),
        tls: m.get_one::<PathBuf>("tls_cert").zip(m.get_one::<PathBuf>("tls_key")).map(|(cert, key)| {
            crate::http::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: m.get_one::<PathBuf>("tls_client_ca").cloned(),
            }
        }),
        role: role_options(&m)?,
        state_dir: m.get_one::<PathBuf>("state_dir").cloned().unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        route_tables: table_selection(&m),
        zone_affinity: m.get_flag("zone_affinity"),
    };
    Ok(Invocation::Run(Box::new(options)))
}

/// `--role-*`, checked (one-line usage errors). The default session name is
/// `vpcrouter-<--instance-id or hostname>`.
fn role_options(m: &ArgMatches) -> Result<Option<RoleConfig>, CliError> {
    let Some(raw) = m.get_one::<String>("role_arn") else { return Ok(None) };
    let usage = |flag: &str, e: String| CliError::usage(format!("error: --{flag}: {e}"));
    let arn = RoleArn::parse(raw).map_err(|e| usage("role-arn", e))?;
    let session_name = match m.get_one::<String>("role_session_name") {
        Some(name) => role::check_session_name(name).map_err(|e| usage("role-session-name", e))?,
        None => role::default_session_name(m.get_one::<String>("instance_id").cloned().or_else(hostname).as_deref()),
    };
    let external_id = m
        .get_one::<String>("role_external_id")
        .map(|id| role::check_external_id(id).map_err(|e| usage("role-external-id", e)))
        .transpose()?;
    Ok(Some(RoleConfig { arn, session_name, external_id, session_length: None }))
}

/// `--cluster-name`, checked: it names the cluster, and the owner of vpcrouter's prefix
/// lists (keep it when turning `--prefix-lists` off, so that the lists are retired).
fn cluster_name(m: &ArgMatches) -> Result<Option<String>, CliError> {
    let Some(name) = m.get_one::<String>("cluster_name").cloned() else { return Ok(None) };
    crate::cluster::check_name("--cluster-name", &name).map_err(|e| CliError::usage(format!("error: {e}")))?;
    Ok(Some(name))
}

/// Refuses `--etcd-*` options that nothing would use: no `--cluster-etcd`, and no loaded
/// plugin declares them (a typo such as `-m etcdd` would otherwise drop TLS silently).
fn check_etcd_options_used<'a>(
    m: &ArgMatches,
    mut plugins: impl Iterator<Item = &'a LoadedPlugin>,
) -> Result<(), CliError> {
    let Some(given) = vpcrouter_etcd_conn::OPTIONS.iter().find(|o| m.get_one::<String>(o.long).is_some()) else {
        return Ok(());
    };
    let used = m.get_one::<String>("cluster_etcd").is_some()
        || plugins.any(|p| p.lib.args.iter().any(|a| vpcrouter_etcd_conn::is_shared(a.long.as_str())));
    if used {
        return Ok(());
    }
    Err(CliError::usage(format!(
        "error: --{} is given, but neither --cluster-etcd nor the plugins loaded (e.g. -m etcd) connect to etcd",
        given.long
    )))
}

/// `--etcd-*`, checked by their rules (the files are read when connecting).
fn etcd_security(m: &ArgMatches) -> Result<EtcdSecurity, CliError> {
    EtcdSecurity::from_values(|name| m.get_one::<String>(name).cloned())
        .map_err(|e| CliError::usage(format!("error: {e}")))
}

fn cluster_options(m: &ArgMatches) -> Result<Option<ClusterOptions>, CliError> {
    let Some(raw) = m.get_one::<String>("cluster_etcd") else { return Ok(None) };
    let conn =
        EtcdConn::new(raw, etcd_security(m)?).map_err(|e| CliError::usage(format!("error: --cluster-etcd: {e}")))?;
    // The files are read once now, so that a missing or invalid one stops the start.
    let warnings = conn.check().map_err(|e| CliError { message: format!("error: {e}"), status: 1 })?;
    let name = cluster_name(m)?;
    let instance_id = match m.get_one::<String>("instance_id") {
        Some(id) => id.clone(),
        None => hostname()
            .ok_or_else(|| CliError::usage("error: --instance-id: the hostname cannot be read; give an id"))?,
    };
    crate::cluster::check_name("--instance-id", &instance_id).map_err(|e| CliError::usage(format!("error: {e}")))?;
    Ok(Some(ClusterOptions {
        conn,
        warnings,
        name,
        instance_id,
        lease_ttl: m.get_one::<u64>("cluster_lease_ttl").copied().unwrap_or(5),
        quorum: m
            .get_one::<String>("health_quorum")
            .and_then(|q| crate::cluster::Quorum::parse(q))
            .unwrap_or(crate::cluster::Quorum::Majority),
    }))
}

/// The host name, from the kernel.
fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// The longest `--failback-after`: a week.
const MAX_FAILBACK_AFTER: u64 = 7 * 24 * 3600;

/// `--failback` and `--failback-after`. The hold-down given without `--failback preferred`
/// is refused: it would do nothing, and the operator most likely meant to turn failback on.
fn failback_policy(m: &ArgMatches) -> Result<crate::vpc::plan::FailbackPolicy, CliError> {
    use crate::vpc::plan::FailbackPolicy;
    let after = m.get_one::<u64>("failback_after").copied().unwrap_or(300);
    match m.get_one::<String>("failback").map(String::as_str) {
        Some("preferred") => Ok(FailbackPolicy::Preferred { after: std::time::Duration::from_secs(after) }),
        _ if m.value_source("failback_after") == Some(clap::parser::ValueSource::CommandLine) => {
            Err(CliError::usage(
                "error: --failback-after only applies with --failback preferred (by default routes never move back): add --failback preferred, or drop --failback-after",
            ))
        }
        _ => Ok(FailbackPolicy::Never),
    }
}

fn check_recheck(v: u64) -> Result<u64, CliError> {
    if v != 0 && v < 5 {
        return Err(CliError::usage("error: route_recheck_interval argument must be either 0 or at least 5"));
    }
    Ok(v)
}

fn check_address(a: &str) -> Result<String, CliError> {
    if a == "localhost" || a.parse::<IpAddr>().is_ok() {
        Ok(a.to_string())
    } else {
        Err(CliError::usage(format!(
            "error: -a/--address: not a valid IP address ({a}); use an IP literal or 'localhost'"
        )))
    }
}

/// Parses `--ignore_routes`: comma-separated IPv4 or IPv6 CIDRs or IPs (an IP means `/32`
/// or `/128`; `0.0.0.0` means the default route `0.0.0.0/0`, as in vpc-router, and `::`
/// the IPv6 default route `::/0`).
pub fn parse_ignore_routes(raw: Option<&str>) -> Result<Vec<Cidr>, String> {
    let Some(raw) = raw else { return Ok(Vec::new()) };
    raw.split(',')
        .map(str::trim)
        .map(|item| {
            if item.contains('/') {
                return Cidr::parse(item).map_err(|e| format!("'{item}': {e}"));
            }
            let addr: IpAddr = match vpcrouter_plugin_api::spec::parse_ipv4(item) {
                Some(v4) => IpAddr::V4(v4),
                None if item.contains(':') => {
                    item.parse().map_err(|_| format!("'{item}' is not a valid IP address or CIDR"))?
                }
                None => return Err(format!("'{item}' is not a valid IP address or CIDR")),
            };
            let len = match addr {
                _ if addr.is_unspecified() => 0,
                IpAddr::V4(_) => 32,
                IpAddr::V6(_) => 128,
            };
            Cidr::new(addr, len).map_err(|e| format!("'{item}': {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        std::iter::once("vpcrouter").chain(s.split_whitespace()).map(String::from).collect()
    }

    #[test]
    fn prescan_understands_all_spellings() {
        let s = prescan(&argv("-mconfigfile --health=tcp --plugin-dir /a --plugin-dir=/b -f x"));
        assert_eq!(s.mode.as_deref(), Some("configfile"));
        assert_eq!(s.health.as_deref(), Some("tcp"));
        assert_eq!(s.plugin_dirs, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        let s = prescan(&argv("--mode http -H always --list-plugins -- -m x"));
        assert_eq!((s.mode.as_deref(), s.health.as_deref(), s.list), (Some("http"), Some("always"), true));
    }

    #[test]
    fn ignore_routes_as_in_the_original() {
        let v6 = parse_ignore_routes(Some("::,2001:db8::/32,2001:db8::1")).unwrap();
        let v6: Vec<String> = v6.iter().map(ToString::to_string).collect();
        assert_eq!(v6, ["::/0", "2001:db8::/32", "2001:db8::1/128"]);
        assert!(parse_ignore_routes(Some("2001:db8::1/64")).unwrap_err().contains("host bits are set"));
        let got = parse_ignore_routes(Some("10.1.1.1,10.1.2.0/24,0.0.0.0/0, 0.0.0.0")).unwrap();
        let text: Vec<String> = got.iter().map(|c| c.to_string()).collect();
        assert_eq!(text, ["10.1.1.1/32", "10.1.2.0/24", "0.0.0.0/0", "0.0.0.0/0"]);
        for bad in ["10.1.1", "10.1.1.1/16", "101.2.3/64", "10.0.0.0/8,", ":::1", "2001:db8::/129"] {
            assert!(parse_ignore_routes(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn route_tables_by_id_or_by_tags_but_not_both() {
        let matches = |args: &str| base_command().try_get_matches_from(argv(args));
        let selection = |args: &str| table_selection(&matches(args).unwrap());
        assert_eq!(selection("-m x"), TableSelection::Serving);
        assert_eq!(
            selection("-m x --route-tables rtb-0a1,rtb-2b --zone-affinity"),
            TableSelection::Ids(["rtb-0a1".to_string(), "rtb-2b".to_string()].into())
        );
        assert_eq!(
            selection(
                "-m x --route-table-tag vpcrouter:managed=true --route-table-tag team=net=a --route-table-tag k="
            ),
            TableSelection::Tagged(vec![
                ("vpcrouter:managed".into(), "true".into()),
                ("team".into(), "net=a".into()),
                ("k".into(), String::new()),
            ])
        );
        assert!(matches("-m x --zone-affinity").unwrap().get_flag("zone_affinity"));
        let refused = |args: &str| matches(args).unwrap_err().render().to_string();
        let e = refused("-m x --route-table-tag vpcrouter:managed");
        assert!(e.contains("'vpcrouter:managed' has no '=': give KEY=VALUE"), "{e}");
        assert!(refused("-m x --route-table-tag =true").contains("the tag key must have 1 to 128 characters"));
        let e = refused("-m x --route-tables rtb-1,subnet-2");
        assert!(e.contains("'subnet-2' is not a route table id"), "{e}");
        assert!(refused("-m x --route-tables rtb-").contains("'rtb-' is not a route table id"));
        let e = refused("-m x --route-tables rtb-1 --route-table-tag a=b");
        assert!(e.contains("cannot be used with"), "{e}");
    }

    #[test]
    fn man_page_and_completions_cover_the_main_options() {
        let man = generate("man").unwrap();
        assert!(man.contains(".TH vpcrouter") && man.contains("route_recheck_interval"), "{man}");
        for shell in ["bash", "zsh", "fish"] {
            assert!(generate(shell).unwrap().contains("ignore_routes"), "{shell}");
        }
        assert_eq!(generate("tcsh").unwrap_err().status, 2);
    }

    #[test]
    fn drain_subcommands_parse_only_as_the_first_word() {
        use crate::client::{Action, Target};
        let loader = Loader::default();
        let parsed = |s: &str| match parse(&argv(s), &loader) {
            Ok(Invocation::Client(c)) => Ok(c),
            Ok(_) => panic!("{s}: not a client subcommand"),
            Err(e) => Err(e),
        };
        let c = parsed("drain 10.0.0.1 --reason patching -p 1234 --http-token-file /t").unwrap();
        assert_eq!(c.action, Action::Drain { ip: "10.0.0.1".parse().unwrap(), reason: Some("patching".into()) });
        assert_eq!(
            (c.target.base(), c.target.token_file),
            ("http://127.0.0.1:1234".to_string(), Some(PathBuf::from("/t")))
        );
        let c = parsed("undrain 10.0.0.2 --url https://r:8443 --tls-ca /ca.pem").unwrap();
        assert_eq!(c.action, Action::Undrain { ip: "10.0.0.2".parse().unwrap() });
        assert_eq!(c.target, Target { tls_ca: Some("/ca.pem".into()), ..Target::from_url("https://r:8443").unwrap() });
        assert_eq!(parsed("drains --json -a 0.0.0.0").unwrap().action, Action::List { json: true });
        let c = parsed("drains --url https://r:8443 --tls-cert /c.pem --tls-key /k.pem").unwrap();
        assert_eq!(c.target.client_cert, Some(("/c.pem".into(), "/k.pem".into())));
        assert_eq!(parsed("drains --tls-cert /c.pem").unwrap_err().status, 2, "--tls-cert needs --tls-key");
        let e = parsed("drain 10.0.0.300").unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (2, "error: '10.0.0.300' is not an IPv4 address (name the router by its IP in the route spec)")
        );
        assert_eq!(parsed("drains --url 127.0.0.1:1").unwrap_err().status, 2);
        assert_eq!(parsed("drains --url http://a:1 -p 2").unwrap_err().status, 2, "--url or -a/-p");
        assert_eq!(parsed("drain").unwrap_err().status, 2);
        assert_eq!(parsed("drain --help").unwrap_err().status, 0);
        // The daemon's command line is unchanged: `drain` elsewhere is not a subcommand.
        assert!(base_command().try_get_matches_from(argv("-m x drain")).is_err());
        let m = base_command().try_get_matches_from(argv("-m x --state-dir /s")).unwrap();
        assert_eq!(m.get_one::<PathBuf>("state_dir"), Some(&PathBuf::from("/s")));
    }

    #[test]
    fn the_man_page_covers_the_drain_subcommands_and_the_state_dir() {
        let man = generate("man").unwrap();
        for word in ["drain", "undrain", "drains", "state\\-dir"] {
            assert!(man.contains(word), "{word}: {man}");
        }
        assert!(generate("bash").unwrap().contains("undrain"));
    }

    #[test]
    fn etcd_endpoints_and_options_are_checked() {
        let opts = |args: &str| cluster_options(&base_command().try_get_matches_from(argv(args)).unwrap());
        let c = opts("-m x --cluster-etcd http://127.0.0.1:2379,10.0.0.2:2379 --instance-id a").unwrap().unwrap();
        assert_eq!(c.conn.urls(), ["http://127.0.0.1:2379", "http://10.0.0.2:2379"]);
        let err = |args: &str| opts(args).unwrap_err().message;
        assert_eq!(
            err("-m x --cluster-etcd , --instance-id a"),
            "error: --cluster-etcd: no etcd endpoint given; pass the etcd client URLs, comma-separated, e.g. \
             https://10.0.0.1:2379,https://10.0.0.2:2379"
        );
        assert!(err("-m x --cluster-etcd http://a:x --instance-id a").contains("'x' is not a port"));
        assert_eq!(
            err("-m x --cluster-etcd a:1 --etcd-cert /c --instance-id a"),
            "error: --etcd-cert is given without --etcd-key; pass both: the client certificate and its private key"
        );
        assert_eq!(
            err("-m x --cluster-etcd a:1 --etcd-cacert /nonexistent/ca.pem --instance-id a"),
            "error: --etcd-cacert /nonexistent/ca.pem: cannot read it: No such file or directory (os error 2)"
        );
        assert!(crate::cluster::check_name("--instance-id", "i-0abc.eu_1:2").is_ok());
        for bad in ["", "a/b", "a b", &"x".repeat(129)] {
            assert!(crate::cluster::check_name("--instance-id", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_plugin_may_declare_the_shared_etcd_options_and_gets_the_hosts_values() {
        let cmd = base_command();
        let etcd: Vec<&str> =
            cmd.get_arguments().filter_map(|a| a.get_long()).filter(|l| l.starts_with("etcd-")).collect();
        assert_eq!(etcd, ["etcd-cacert", "etcd-cert", "etcd-key", "etcd-user", "etcd-password-file"]);
        let help = base_command().render_help().to_string();
        assert!(help.contains("etcd connection (cluster mode and the etcd watcher):"), "{help}");
        assert!(shared_host_option("etcd-cacert") && !shared_host_option("etcd_key") && !shared_host_option("port"));
    }

    #[test]
    fn cluster_options_default_to_off_and_need_cluster_etcd() {
        let m = base_command().try_get_matches_from(argv("-m x")).unwrap();
        assert!(cluster_options(&m).unwrap().is_none());
        assert!(base_command().try_get_matches_from(argv("-m x --health-quorum any")).is_err());
        let m = base_command()
            .try_get_matches_from(argv("-m x --cluster-etcd 127.0.0.1:2379 --instance-id a --health-quorum all"))
            .unwrap();
        let c = cluster_options(&m).unwrap().unwrap();
        assert_eq!(
            (c.instance_id.as_str(), c.lease_ttl, c.quorum, c.name),
            ("a", 5, crate::cluster::Quorum::All, None)
        );
        assert_eq!(c.conn.urls(), ["http://127.0.0.1:2379"]);
    }

    #[test]
    fn main_option_checks() {
        assert!(check_recheck(0).is_ok() && check_recheck(5).is_ok());
        assert_eq!(check_recheck(4).unwrap_err().status, 2);
        assert!(check_address("localhost").is_ok() && check_address("0.0.0.0").is_ok() && check_address("::1").is_ok());
        assert!(check_address("999.9").is_err() && check_address("example.com").is_err());
    }

    #[test]
    fn ec2_limits_default_to_the_documented_buckets_and_are_checked() {
        let m = base_command().try_get_matches_from(argv("-m http")).unwrap();
        assert_eq!(ec2_limits(&m), LimitsConfig::default());
        let m = base_command()
            .try_get_matches_from(argv("-m http --ec2-write-burst 20 --ec2-write-rate 2.5 --ec2-read-burst 40 --ec2-read-rate 8 --ec2-max-in-flight 4"))
            .unwrap();
        let got = ec2_limits(&m);
        assert_eq!(
            (got.write.burst, got.write.rate, got.read.burst, got.read.rate, got.max_in_flight),
            (20, 2.5, 40, 8.0, 4)
        );
        for bad in [
            "--ec2-write-rate 0", "--ec2-write-rate=-1", "--ec2-read-rate nan", "--ec2-write-rate x",
            "--ec2-write-burst 0", "--ec2-max-in-flight 0",
        ] {
            let err = base_command().try_get_matches_from(argv(&format!("-m http {bad}"))).expect_err(bad);
            assert!(err.render().to_string().contains("ec2-"), "{bad}: {}", err.render());
        }
        assert!(parse_rate("1e9").unwrap_err().contains("out of range"));
    }

    #[test]
    fn role_options_are_checked_at_the_edge() {
        let opts = |args: &str| role_options(&base_command().try_get_matches_from(argv(args)).unwrap());
        assert!(opts("-m x").unwrap().is_none());
        let r =
            opts("-m x --role-arn arn:aws:iam::222222222222:role/rt --role-session-name s-1 --role-external-id ab-12")
                .unwrap()
                .unwrap();
        assert_eq!(
            (r.arn.as_str(), r.session_name.as_str(), r.external_id.as_deref(), r.session_length),
            ("arn:aws:iam::222222222222:role/rt", "s-1", Some("ab-12"), None)
        );
        let r = opts("-m x --role-arn arn:aws:iam::222222222222:role/rt --cluster-etcd e:1 --instance-id node/1")
            .unwrap()
            .unwrap();
        assert_eq!(r.session_name, "vpcrouter-node-1");
        let err = |args: &str| opts(args).unwrap_err();
        let e = err("-m x --role-arn arn:aws:iam::2222:role/rt");
        assert_eq!(e.status, 2);
        assert!(e.message.starts_with("error: --role-arn: 'arn:aws:iam::2222:role/rt' is not an IAM role ARN"));
        assert!(!e.message.trim_end().contains('\n'), "{}", e.message);
        assert!(err("-m x --role-arn arn:aws:iam::222222222222:role/rt --role-session-name a/b")
            .message
            .starts_with("error: --role-session-name: 'a/b' is not a role session name"));
        assert!(err("-m x --role-arn arn:aws:iam::222222222222:role/rt --role-external-id x")
            .message
            .starts_with("error: --role-external-id: the external id is not usable"));
        for needs_arn in ["--role-session-name s-1", "--role-external-id ab-12"] {
            assert!(base_command().try_get_matches_from(argv(&format!("-m x {needs_arn}"))).is_err(), "{needs_arn}");
        }
    }

    #[test]
    fn security_options_come_in_the_right_combinations() {
        let ok = |s: &str| base_command().try_get_matches_from(argv(&format!("-m http {s}"))).is_ok();
        assert!(ok("--http-token-file t --http-auth-all") && ok("--tls-cert c --tls-key k --tls-client-ca ca"));
        assert!(ok("--http-allow-unauthenticated") && ok("--tls-cert c --tls-key k"));
        for bad in [
            "--http-auth-all",
            "--tls-cert c",
            "--tls-key k",
            "--tls-client-ca ca",
            "--tls-key k --tls-client-ca ca",
            "--http-token-file t --http-allow-unauthenticated",
        ] {
            assert!(!ok(bad), "{bad}");
        }
    }

    #[test]
    fn failback_is_never_by_default_and_its_hold_down_needs_preferred() {
        use crate::vpc::plan::FailbackPolicy;
        use std::time::Duration;
        let policy = |s: &str| {
            let m = base_command().try_get_matches_from(argv(&format!("-m http {s}"))).map_err(|e| e.to_string())?;
            failback_policy(&m).map_err(|e| e.message)
        };
        assert_eq!(policy(""), Ok(FailbackPolicy::Never));
        assert_eq!(policy("--failback never"), Ok(FailbackPolicy::Never));
        assert_eq!(policy("--failback preferred"), Ok(FailbackPolicy::Preferred { after: Duration::from_secs(300) }));
        assert_eq!(
            policy("--failback preferred --failback-after 2"),
            Ok(FailbackPolicy::Preferred { after: Duration::from_secs(2) })
        );
        let err = policy("--failback-after 60").unwrap_err();
        assert!(err.contains("--failback-after only applies with --failback preferred"), "{err}");
        assert!(policy("--failback never --failback-after 60").is_err());
        for bad in ["--failback sometimes", "--failback preferred --failback-after 0", "--failback-after x"] {
            assert!(policy(bad).is_err(), "{bad}");
        }
        assert!(policy(&format!("--failback preferred --failback-after {}", MAX_FAILBACK_AFTER + 1)).is_err());
    }

    #[test]
    fn base_command_parses_the_original_defaults() {
        let m = base_command().try_get_matches_from(argv("-l foo -v 123 -r foo -m http")).unwrap();
        assert_eq!(m.get_one::<String>("health").unwrap(), "icmpecho");
        assert_eq!(*m.get_one::<u16>("port").unwrap(), 33289);
        assert_eq!(*m.get_one::<u64>("route_recheck_interval").unwrap(), 30);
        assert_eq!(m.get_one::<String>("address").unwrap(), "localhost");
        for bad in
            ["-l", "-l foo", "-l foo -v 123", "-m http -p 99999", "-m http -p 0", "-m http --route_recheck_interval x"]
        {
            assert!(base_command().try_get_matches_from(argv(bad)).is_err(), "{bad}");
        }
        assert!(base_command().try_get_matches_from(argv("-m http -p 65535")).is_ok());
    }
}
