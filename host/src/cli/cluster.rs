//! Cluster mode and state: `--cluster-etcd`, the `--etcd-*` connection options (shared with
//! the etcd watcher), `--cluster-name`, `--instance-id`, `--cluster-lease-ttl`,
//! `--health-quorum`, and `--state-dir`.

use std::path::PathBuf;

use clap::{Arg, ArgMatches, Command};
use vpcrouter_etcd_conn::{EtcdConn, EtcdSecurity};

use super::{hostname, CliError};

/// The default `--state-dir` (systemd's `StateDirectory=vpcrouter`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/vpcrouter";

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
    pub quorum: vpcrouter_cluster::Quorum,
}

/// Adds the cluster and state options (the `--etcd-*` ones come last, from their table).
pub(super) fn args(cmd: Command) -> Command {
    cmd
        .arg(Arg::new("state_dir").long("state-dir").value_name("DIR").default_value(DEFAULT_STATE_DIR)
            .env("VPCROUTER_STATE_DIR").value_parser(clap::value_parser!(PathBuf))
            .help("directory for state kept over restarts: the drained routers (drains.json); not used in cluster mode, where etcd keeps them"))
        .arg(Arg::new("cluster_etcd").long("cluster-etcd").value_name("URL[,URL...]").env("VPCROUTER_CLUSTER_ETCD")
            .help_heading("Cluster mode (several instances, one leader)")
            .help("etcd client URLs: run as one of several vpcrouters; only the elected leader writes to EC2"))
        .arg(cluster_name_arg().help_heading("Cluster mode (several instances, one leader)"))
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

/// `--cluster-name` (the daemon's and `plan`'s).
pub(super) fn cluster_name_arg() -> Arg {
    Arg::new("cluster_name").long("cluster-name").value_name("NAME").help(
        "instances with the same name form one cluster; vpcrouter's prefix lists are tagged with it [default: the VPC id]",
    )
}

/// `--state-dir`.
pub(super) fn state_dir(m: &ArgMatches) -> PathBuf {
    m.get_one::<PathBuf>("state_dir").cloned().unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

/// The `--etcd-*` options, from the table the etcd watcher declares its options from.
pub(super) fn add_etcd_args(mut cmd: Command) -> Command {
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

/// `--cluster-name`, checked: it names the cluster, and the owner of vpcrouter's prefix
/// lists (keep it when turning `--prefix-lists` off, so that the lists are retired).
pub(super) fn cluster_name(m: &ArgMatches) -> Result<Option<String>, CliError> {
    let Some(name) = m.get_one::<String>("cluster_name").cloned() else { return Ok(None) };
    vpcrouter_cluster::check_name("--cluster-name", &name).map_err(|e| CliError::usage(format!("error: {e}")))?;
    Ok(Some(name))
}

/// `--etcd-*`, checked by their rules (the files are read when connecting).
fn etcd_security(m: &ArgMatches) -> Result<EtcdSecurity, CliError> {
    EtcdSecurity::from_values(|name| m.get_one::<String>(name).cloned())
        .map_err(|e| CliError::usage(format!("error: {e}")))
}

/// `--cluster-etcd` and its companions, checked (`None`: no cluster).
pub(super) fn cluster_options(m: &ArgMatches) -> Result<Option<ClusterOptions>, CliError> {
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
    vpcrouter_cluster::check_name("--instance-id", &instance_id).map_err(|e| CliError::usage(format!("error: {e}")))?;
    Ok(Some(ClusterOptions {
        conn,
        warnings,
        name,
        instance_id,
        lease_ttl: m.get_one::<u64>("cluster_lease_ttl").copied().unwrap_or(5),
        quorum: m
            .get_one::<String>("health_quorum")
            .and_then(|q| vpcrouter_cluster::Quorum::parse(q))
            .unwrap_or(vpcrouter_cluster::Quorum::Majority),
    }))
}
