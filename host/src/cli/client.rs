//! The client subcommands: `vpcrouter drain|undrain|drains|status ...`, requests to a
//! running daemon.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgAction, Command};

use super::{check_address, CliError, Invocation};
use crate::client::{Action, ClientCommand, Target};

/// The client subcommands: `vpcrouter drain|undrain|drains|status ...` (only as the first
/// word, so that the daemon's command line is parsed exactly as before).
pub const CLIENT_SUBCOMMANDS: [&str; 4] = ["drain", "undrain", "drains", "status"];

/// `status --watch` without a value: seconds between redraws.
const WATCH_DEFAULT: &str = "2";

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

/// `drain`, `undrain`, `drains` and `status`, as clap commands (for parsing, help, the man
/// page and the completions).
pub(super) fn client_commands() -> [Command; 4] {
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
        client_target_args(Command::new("status")
            .about("Show a running daemon's routes at a glance: per CIDR the router of its managed tables (naming those that differ), the routers' health, drains and routes carried, the role in cluster mode, the last failover (colour only on a terminal, never with NO_COLOR)")
            .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).conflicts_with("watch").help("print the daemon's JSON (GET /status)"))
            .arg(Arg::new("watch").long("watch").short('w').value_name("SECONDS").num_args(0..=1)
                .default_missing_value(WATCH_DEFAULT).value_parser(parse_watch)
                .help("redraw every SECONDS (default 2) until Ctrl-C"))),
    ]
}

/// `--watch SECONDS`: from 0.2 to 3600.
fn parse_watch(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if (0.2..=3600.0).contains(&secs) => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!("'{s}' is not a number of seconds from 0.2 to 3600 (e.g. --watch 2)")),
    }
}

/// Parses a client subcommand (`argv[1]` is one of [`CLIENT_SUBCOMMANDS`]).
pub(super) fn parse_client(argv: &[String]) -> Result<Invocation, CliError> {
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
        Some(url) => Target::from_url(url).map_err(|e| CliError::usage(format!("error: {e}")))?,
        None => Target::from_address(
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
                Some(r) => Some(
                    vpcrouter_drains::check_reason(r).map_err(|e| CliError::usage(format!("error: --reason: {e}")))?,
                ),
                None => None,
            };
            Action::Drain { ip: ip()?, reason }
        }
        "undrain" => Action::Undrain { ip: ip()? },
        "status" => Action::Status { json: sub.get_flag("json"), watch: sub.get_one::<Duration>("watch").copied() },
        _ => Action::List { json: sub.get_flag("json") },
    };
    Ok(Invocation::Client(ClientCommand { target, action }))
}
