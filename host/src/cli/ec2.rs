//! The EC2 side's options: `-r/--region`, `-v/--vpc`, `--prefix-lists`, `--ec2-*` (the
//! client-side token buckets) and `--role-*` (calls made as an assumed role).

use clap::{Arg, ArgAction, ArgMatches, Command};
use vpcrouter_ec2::limits::{BucketConfig, LimitsConfig};
use vpcrouter_ec2::role::{self, RoleArn, RoleConfig};
use vpcrouter_ec2::Ec2Config;

use super::{hostname, CliError};

/// Help heading of the `--ec2-*` options.
pub(super) const EC2_HEADING: &str = "EC2 call limits (client side, modelled on EC2's per-account token buckets)";

/// Help heading of the `--role-*` options.
const ROLE_HEADING: &str = "Shared VPCs and other accounts (EC2 calls made as an assumed IAM role)";

/// Adds the EC2 side's options.
pub(super) fn args(cmd: Command) -> Command {
    cmd
        .arg(Arg::new("region").short('r').long("region").value_name("REGION")
            .help("the AWS region of the VPC (default: from the instance metadata)"))
        .arg(Arg::new("vpc").short('v').long("vpc").value_name("VPC_ID")
            .help("the ID of the VPC in which to operate (default: from the instance metadata)"))
        .arg(Arg::new("prefix_lists").long("prefix-lists").action(ArgAction::SetTrue)
            .help("route the CIDRs that share their routers through one prefix list per group: a failover is one route write per table per group"))
        .arg(Arg::new("ec2_write_burst").long("ec2-write-burst").value_name("CALLS").default_value("50")
            .value_parser(clap::value_parser!(u32).range(1..=100_000))
            .help_heading(EC2_HEADING)
            .help("size of vpcrouter's bucket for route writes (EC2's mutating-call bucket: 50); one is kept in reserve"))
        .arg(Arg::new("ec2_write_rate").long("ec2-write-rate").value_name("PER_SECOND").default_value("5")
            .value_parser(parse_rate)
            .help_heading(EC2_HEADING)
            .help("refill of the write bucket, calls per second (EC2: 5); lower it to leave room for other tools in the account"))
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
}

/// The EC2 side's options, checked.
pub(super) fn config(m: &ArgMatches) -> Result<Ec2Config, CliError> {
    Ok(Ec2Config {
        region: m.get_one::<String>("region").cloned(),
        vpc: m.get_one::<String>("vpc").cloned(),
        role: role_options(m)?,
        limits: ec2_limits(m),
        prefix_lists: m.get_flag("prefix_lists"),
    })
}

pub(super) fn parse_rate(raw: &str) -> Result<f64, String> {
    let rate: f64 = raw.trim().parse().map_err(|_| format!("'{raw}' is not a number of calls per second"))?;
    if rate.is_finite() && rate > 0.0 && rate <= 100_000.0 {
        Ok(rate)
    } else {
        Err(format!("{raw} calls per second is out of range: give a rate above 0 and at most 100000"))
    }
}

/// `--ec2-*` as parsed by clap (defaults included).
pub(super) fn ec2_limits(m: &ArgMatches) -> LimitsConfig {
    let d = LimitsConfig::default();
    let u = |name: &str, default: u32| m.get_one::<u32>(name).copied().unwrap_or(default);
    let f = |name: &str, default: f64| m.get_one::<f64>(name).copied().unwrap_or(default);
    LimitsConfig {
        read: BucketConfig { burst: u("ec2_read_burst", d.read.burst), rate: f("ec2_read_rate", d.read.rate) },
        write: BucketConfig { burst: u("ec2_write_burst", d.write.burst), rate: f("ec2_write_rate", d.write.rate) },
        max_in_flight: u("ec2_max_in_flight", d.max_in_flight as u32) as usize,
    }
}

/// `--role-*`, checked (one-line usage errors). The default session name is
/// `vpcrouter-<--instance-id or hostname>`.
pub(super) fn role_options(m: &ArgMatches) -> Result<Option<RoleConfig>, CliError> {
    let Some(raw) = m.get_one::<String>("role_arn") else { return Ok(None) };
    let usage = |flag: &str, e: String| CliError::usage(format!("error: --{flag}: {e}"));
    let arn = RoleArn::parse(raw).map_err(|e| usage("role-arn", e))?;
    let session_name = match m.get_one::<String>("role_session_name") {
        Some(name) => role::check_session_name(name).map_err(|e| usage("role-session-name", e))?,
        // `plan` has no --instance-id.
        None => {
            let instance_id = m.try_get_one::<String>("instance_id").ok().flatten().cloned();
            role::default_session_name(instance_id.or_else(hostname).as_deref())
        }
    };
    let external_id = m
        .get_one::<String>("role_external_id")
        .map(|id| role::check_external_id(id).map_err(|e| usage("role-external-id", e)))
        .transpose()?;
    Ok(Some(RoleConfig { arn, session_name, external_id, session_length: None }))
}
