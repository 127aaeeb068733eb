//! The command line: vpc-router 1.8's options plus the options of the loaded plugins,
//! grouped by category into typed configurations.
//!
//! One module per category adds its flags to the clap command and turns the matches into
//! the configuration of the part it concerns:
//! * [`plugins`]: `-m`, `-H`, `--plugin-dir`: the plugins and the options they declare
//!   (a [`PluginSet`]);
//! * [`ec2`]: region, VPC, `--ec2-*`, `--role-*` ([`Ec2Config`]);
//! * [`routes`]: what to route and how ([`RoutingConfig`]);
//! * [`server`]: the status server ([`ServerConfig`]);
//! * [`cluster`]: cluster mode and `--state-dir` ([`ClusterOptions`]);
//! * [`logging`]: the log ([`LogConfig`]);
//! * [`notify`]: `--notify` and the built-in `sns` notifier ([`NotifyConfig`]);
//! * [`plan`]: the `plan` subcommand (a spec previewed against the VPC);
//! * [`client`]: the `drain`, `undrain`, `drains` and `status` subcommands.

pub mod client;
pub mod cluster;
pub mod ec2;
pub mod logging;
pub mod notify;
pub mod plan;
pub mod plugins;
pub mod routes;
pub mod server;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Arg, Command};
use vpcrouter_ec2::Ec2Config;
use vpcrouter_plugin_host::load::{LoadError, Loader, PluginError, SearchPath};
use vpcrouter_plugin_host::PluginSet;
use vpcrouter_server::ServerConfig;

pub use self::cluster::{ClusterOptions, DEFAULT_STATE_DIR};
pub use self::notify::NotifyConfig;
pub use self::plugins::DEFAULT_HEALTH;
pub use self::routes::RoutingConfig;
use crate::logging::LogConfig;

/// Everything `vpcrouter` was told to do, by category.
#[derive(Debug, Clone)]
pub struct Options {
    /// The log.
    pub log: LogConfig,
    /// The watcher, the health plugin and the health plugins it starts, and the notifier
    /// plugins, with their options.
    pub plugins: PluginSet,
    /// The built-in notifiers (`--notify sns`).
    pub notify: NotifyConfig,
    /// The EC2 side: region, VPC, role, limits.
    pub ec2: Ec2Config,
    /// What to route and how.
    pub routing: RoutingConfig,
    /// The status server.
    pub server: ServerConfig,
    /// `--state-dir`: where the drains are kept (not used in cluster mode: etcd keeps them).
    pub state_dir: PathBuf,
    /// Cluster mode (`--cluster-etcd`), if on.
    pub cluster: Option<ClusterOptions>,
    /// `--cluster-name`, with or without a cluster: the name vpcrouter's prefix lists are
    /// tagged with (`None`: the VPC id).
    pub cluster_name: Option<String>,
}

/// What the command line asks for.
pub enum Invocation {
    /// Run the daemon.
    Run(Box<Options>),
    /// Print this text to stdout and exit 0 (help, version, plugin list).
    Print(String),
    /// A client subcommand (`drain`, `undrain`, `drains`, `status`): requests to a running daemon.
    Client(crate::client::ClientCommand),
    /// `plan`: what a daemon would change in the VPC with a spec, written nowhere.
    Plan(Box<crate::plan::PlanOptions>),
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
    /// A usage error (exit status 2).
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

/// Parses the command line. Plugins named by it are loaded through `loader`.
pub fn parse(argv: &[String], loader: &Loader) -> Result<Invocation, CliError> {
    if argv.get(1).is_some_and(|a| client::CLIENT_SUBCOMMANDS.contains(&a.as_str())) {
        return client::parse_client(argv);
    }
    if argv.get(1).is_some_and(|a| a == plan::PLAN_SUBCOMMAND) {
        return plan::parse_plan(argv);
    }
    if let Some(i) = argv.iter().position(|a| a == "--generate") {
        let what = argv.get(i + 1).map(String::as_str).unwrap_or("");
        return generate(what).map(Invocation::Print);
    }
    let scan = plugins::prescan(argv);
    let search = SearchPath::new(&scan.plugin_dirs, scan.allow_insecure);
    if scan.list && !scan.help {
        return Ok(Invocation::Print(vpcrouter_plugin_host::load::list_text(loader, &search, &notify::BUILTIN)));
    }
    let libs = plugins::load(loader, &search, argv, &scan)?;
    let mut cmd = base_command();
    for lib in libs.all() {
        cmd = plugins::add_plugin_args(cmd, lib)?;
    }
    if scan.help {
        let mut help = cmd.render_help().to_string();
        for note in &libs.notes {
            help.push_str(&format!("\nnote: {note}\n"));
        }
        return Ok(Invocation::Print(help));
    }
    let m = cmd.try_get_matches_from(argv).map_err(clap_error)?;
    let options = Options {
        log: logging::config(&m),
        plugins: libs.configure(&m, argv)?,
        notify: notify::config(&m)?,
        ec2: ec2::config(&m)?,
        routing: routes::config(&m)?,
        server: server::config(&m)?,
        state_dir: cluster::state_dir(&m),
        cluster: cluster::cluster_options(&m)?,
        cluster_name: cluster::cluster_name(&m)?,
    };
    Ok(Invocation::Run(Box::new(options)))
}

/// clap's answer: help and version are printed with status 0, errors are usage errors.
fn clap_error(e: clap::Error) -> CliError {
    match e.kind() {
        clap::error::ErrorKind::DisplayVersion | clap::error::ErrorKind::DisplayHelp => {
            CliError { message: e.to_string(), status: 0 }
        }
        _ => CliError::usage(e.render().to_string()),
    }
}

/// The man page (roff) or a shell completion script for the main options, for packaging:
/// `vpcrouter --generate man|bash|zsh|fish`.
pub fn generate(what: &str) -> Result<String, CliError> {
    use clap_complete::{generate as complete, Shell};
    let mut cmd = base_command()
        .arg(generate_arg())
        .subcommands(client::client_commands())
        .subcommand(plan::command())
        .args_conflicts_with_subcommands(true);
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

/// The main options, without plugin options, by category.
fn base_command() -> Command {
    let cmd = Command::new("vpcrouter")
        .version(crate::VERSION)
        .about("VPC router: Manage routes in VPC route table")
        .after_help("Plugin options are listed when the plugin is named: vpcrouter -m configfile --help, vpcrouter -H tcp --help, vpcrouter --notify exec --help.\nvpcrouter --list-plugins shows the plugins found.\nAt a glance: vpcrouter status [--watch] (a running daemon's routes, routers and last failover).\nBefore a spec goes live: vpcrouter plan -f SPEC (what a daemon would change; writes nothing).\nMaintenance mode: vpcrouter drain IP, vpcrouter undrain IP, vpcrouter drains (see vpcrouter drain --help).");
    let cmd = plugins::args(cmd);
    let cmd = logging::args(cmd);
    let cmd = ec2::args(cmd);
    let cmd = routes::args(cmd);
    let cmd = server::args(cmd);
    let cmd = cluster::args(cmd);
    let cmd = notify::args(cmd);
    cluster::add_etcd_args(cmd)
}

/// `-a/--address` (the daemon's and the client's): an IP literal or `localhost`.
fn check_address(a: &str) -> Result<String, CliError> {
    if a == "localhost" || a.parse::<IpAddr>().is_ok() {
        Ok(a.to_string())
    } else {
        Err(CliError::usage(format!(
            "error: -a/--address: not a valid IP address ({a}); use an IP literal or 'localhost'"
        )))
    }
}

/// The host name, from the kernel.
fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}
