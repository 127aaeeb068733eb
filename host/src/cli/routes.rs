//! What to route and how: `--ignore_routes`, `--route_recheck_interval`, `--dry-run`, the
//! route tables managed (`--route-tables`, `--route-table-tag`, `--zone-affinity`,
//! `--route-table-quota`), `--failback` and `--consistency-window`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};
use vpcrouter_planner::model::{Cidr, TableSelection};
use vpcrouter_planner::plan::FailbackPolicy;

use super::ec2::EC2_HEADING;
use super::CliError;

/// Help heading of the route-table options.
const TABLES_HEADING: &str = "Route tables (which tables vpcrouter manages, and which router each uses)";

/// How the engine routes: the options that become its configuration.
#[derive(Debug, Clone)]
pub struct RoutingConfig {
    /// `--ignore_routes` as given (shown by `/`).
    pub ignore_routes_raw: Option<String>,
    /// `--ignore_routes` parsed: routes inside these are never deleted or changed.
    pub ignore_routes: Vec<Cidr>,
    /// `--route_recheck_interval` seconds; 0 = no periodic recheck.
    pub recheck_interval: u64,
    /// `--dry-run`: plan and log, change nothing.
    pub dry_run: bool,
    /// `--route-tables` / `--route-table-tag`: the route tables managed (by default those
    /// serving the subnets of the spec's routers, as in vpc-router).
    pub tables: TableSelection,
    /// `--zone-affinity`: each zone's tables use a router of their own zone when one is
    /// healthy.
    pub zone_affinity: bool,
    /// `--route-table-quota`: routes one route table may hold.
    pub quota: u32,
    /// `--failback` with `--failback-after`: whether routes move back to their preferred router.
    pub failback: FailbackPolicy,
    /// `--consistency-window`: how long an acknowledged write is trusted over a read that
    /// does not show it yet (EC2's reads lag its writes).
    pub consistency_window: Duration,
}

/// Adds the routing options.
pub(super) fn args(cmd: Command) -> Command {
    let cmd = cmd
        .arg(ignore_routes_arg())
        .arg(Arg::new("route_recheck_interval").long("route_recheck_interval").value_name("SECONDS")
            .default_value("30").value_parser(clap::value_parser!(u64))
            .help("time between regular checks of VPC route tables; 0 disables them (vpc-router 1.8 checked every second)"))
        .arg(Arg::new("dry_run").long("dry-run").action(ArgAction::SetTrue)
            .help("log the route changes that would be made, change nothing"));
    table_args(cmd)
        .arg(Arg::new("failback").long("failback").value_name("POLICY").default_value("never")
            .value_parser(["never", "preferred"])
            .help("never: a route stays where a failover put it, as in vpc-router; preferred: it moves back to its CIDR's first router (in the spec's order) once that one has been healthy for --failback-after seconds"))
        .arg(Arg::new("failback_after").long("failback-after").value_name("SECONDS").default_value("300")
            .value_parser(clap::value_parser!(u64).range(1..=MAX_FAILBACK_AFTER))
            .help("with --failback preferred: how long the preferred router must be healthy without a single failure before routes move back to it, and the least time between two failbacks of a CIDR"))
        .arg(Arg::new("consistency_window").long("consistency-window").value_name("SECONDS").default_value("5")
            .value_parser(parse_window)
            .help_heading(EC2_HEADING)
            .help("how long a route change EC2 acknowledged is trusted over a read that does not show it yet (EC2's reads are eventually consistent): no second write for it because of such a read; after the window the read is believed (0: always)"))
}

/// `--ignore_routes` (the daemon's and `plan`'s).
pub(super) fn ignore_routes_arg() -> Arg {
    Arg::new("ignore_routes")
        .long("ignore_routes")
        .value_name("CIDRS")
        .help("Comma separated list of CIDRs or IPs for routes which vpcrouter should ignore")
}

/// The route tables managed, and what each may hold: `--route-tables`, `--route-table-tag`,
/// `--zone-affinity`, `--route-table-quota` (the daemon's and `plan`'s).
pub(super) fn table_args(cmd: Command) -> Command {
    cmd
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
}

/// The routing options, checked.
pub(super) fn config(m: &ArgMatches) -> Result<RoutingConfig, CliError> {
    Ok(RoutingConfig {
        ignore_routes_raw: m.get_one::<String>("ignore_routes").cloned(),
        ignore_routes: ignore_routes(m)?,
        recheck_interval: check_recheck(m.get_one::<u64>("route_recheck_interval").copied().unwrap_or(30))?,
        dry_run: m.get_flag("dry_run"),
        tables: table_selection(m),
        zone_affinity: m.get_flag("zone_affinity"),
        quota: quota(m),
        failback: failback_policy(m)?,
        consistency_window: m.get_one::<Duration>("consistency_window").copied().unwrap_or(DEFAULT_CONSISTENCY_WINDOW),
    })
}

/// `--ignore_routes`, checked.
pub(super) fn ignore_routes(m: &ArgMatches) -> Result<Vec<Cidr>, CliError> {
    parse_ignore_routes(m.get_one::<String>("ignore_routes").map(String::as_str))
        .map_err(|e| CliError::usage(format!("error: --ignore_routes: {e}")))
}

/// `--route-table-quota`.
pub(super) fn quota(m: &ArgMatches) -> u32 {
    m.get_one::<u32>("route_table_quota").copied().unwrap_or(500)
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
pub(super) fn table_selection(m: &ArgMatches) -> TableSelection {
    if let Some(ids) = m.get_one::<BTreeSet<String>>("route_tables") {
        return TableSelection::Ids(ids.clone());
    }
    match m.get_many::<(String, String)>("route_table_tag") {
        Some(tags) => TableSelection::Tagged(tags.cloned().collect()),
        None => TableSelection::Serving,
    }
}

/// `--consistency-window`'s default: a few seconds, as EC2's reads usually catch up within
/// one or two (AWS: "Eventual consistency in the Amazon EC2 API").
const DEFAULT_CONSISTENCY_WINDOW: Duration = Duration::from_secs(5);
/// The longest `--consistency-window`.
const MAX_CONSISTENCY_WINDOW: f64 = 300.0;

/// `--consistency-window`: seconds, 0 (reads always believed) to 300.
fn parse_window(raw: &str) -> Result<Duration, String> {
    vpcrouter_plugin_api::args::parse_seconds("consistency-window", raw, 0.0..=MAX_CONSISTENCY_WINDOW)
}

/// The longest `--failback-after`: a week.
pub(super) const MAX_FAILBACK_AFTER: u64 = 7 * 24 * 3600;

/// `--failback` and `--failback-after`. The hold-down given without `--failback preferred`
/// is refused: it would do nothing, and the operator most likely meant to turn failback on.
pub(super) fn failback_policy(m: &ArgMatches) -> Result<FailbackPolicy, CliError> {
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

/// `--route_recheck_interval`: 0 (off) or at least 5 seconds, as vpc-router said.
pub(super) fn check_recheck(v: u64) -> Result<u64, CliError> {
    if v != 0 && v < 5 {
        return Err(CliError::usage("error: route_recheck_interval argument must be either 0 or at least 5"));
    }
    Ok(v)
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
