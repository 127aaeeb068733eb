//! `vpcrouter plan -f SPEC ...`: the options of the read-only preview of a route spec
//! (executed by [`crate::plan`]). The EC2, table-selection and routing options are the
//! daemon's own flags, from the same builders.
//!
//! Exit status 2 means "changes to make" (as `terraform plan -detailed-exitcode` does), so a
//! usage error of `plan` exits 1, not clap's 2.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::{clap_error, cluster, ec2, routes, CliError, Invocation};
use crate::plan::PlanOptions;

/// The subcommand's name (only as the first word, like the client subcommands).
pub const PLAN_SUBCOMMAND: &str = "plan";

/// `plan` as a clap command (for parsing, `--help`, the man page and the completions).
pub(super) fn command() -> Command {
    let cmd = Command::new(PLAN_SUBCOMMAND)
        .about("Show what a daemon would change in the VPC with a route spec (reads the VPC, writes nothing); exit status 0: no change, 2: changes, 1: error")
        .after_help("Exit status: 0 the VPC matches the spec, 2 changes would be made, 1 an error (bad spec, no access to the VPC, bad usage).\nRouters count as healthy (no health check is run) unless their instance is not running or --failed names them; nothing is drained.")
        .arg(Arg::new("file").short('f').long("file").value_name("SPEC").required(true)
            .value_parser(clap::value_parser!(PathBuf))
            .help("the route spec (JSON), as a daemon reads it with -m configfile -f; validated as the daemon does"))
        .arg(Arg::new("failed").long("failed").value_name("IP[,IP...]").action(ArgAction::Append).value_delimiter(',')
            .help("plan as if these routers had failed"))
        .arg(Arg::new("json").long("json").action(ArgAction::SetTrue)
            .help("print the plan as JSON: vpc_id, region, route_tables, changes (cidr, route_table, action, router_before, router_after, reason, may_differ), prefix_list_changes, notices, changes_count"));
    // The write bucket's options are accepted, so that a daemon's options can be reused as
    // they are, but hidden: a plan makes no write.
    let cmd = ec2::args(cmd)
        .mut_arg("ec2_write_burst", |a| a.hide(true))
        .mut_arg("ec2_write_rate", |a| a.hide(true))
        .arg(routes::ignore_routes_arg());
    routes::table_args(cmd).arg(cluster::cluster_name_arg())
}

/// Parses `vpcrouter plan ...` (`argv[1]` is [`PLAN_SUBCOMMAND`]); usage errors exit 1.
pub(super) fn parse_plan(argv: &[String]) -> Result<Invocation, CliError> {
    let parsed = command()
        .bin_name(format!("vpcrouter {PLAN_SUBCOMMAND}"))
        .version(crate::VERSION)
        .try_get_matches_from(&argv[1..])
        .map_err(clap_error)
        .and_then(|m| options(&m));
    parsed.map(|o| Invocation::Plan(Box::new(o))).map_err(|mut e| {
        if e.status == 2 {
            e.status = 1;
        }
        e
    })
}

/// The options, checked.
fn options(m: &ArgMatches) -> Result<PlanOptions, CliError> {
    Ok(PlanOptions {
        spec_file: m.get_one::<PathBuf>("file").cloned().unwrap_or_default(),
        ec2: ec2::config(m)?,
        tables: routes::table_selection(m),
        zone_affinity: m.get_flag("zone_affinity"),
        quota: routes::quota(m),
        ignore_routes: routes::ignore_routes(m)?,
        cluster_name: cluster::cluster_name(m)?,
        failed: failed(m)?,
        json: m.get_flag("json"),
    })
}

/// `--failed`: router IPs, as the spec names them.
fn failed(m: &ArgMatches) -> Result<BTreeSet<Ipv4Addr>, CliError> {
    let raw = m.get_many::<String>("failed").into_iter().flatten();
    raw.map(|ip| {
        vpcrouter_plugin_api::spec::parse_ipv4(ip.trim()).ok_or_else(|| {
            CliError::usage(format!(
                "error: --failed: '{ip}' is not an IPv4 address (name the router by its IP in the route spec)"
            ))
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{generate, parse};
    use super::*;
    use vpcrouter_plugin_host::Loader;

    fn argv(s: &str) -> Vec<String> {
        std::iter::once("vpcrouter").chain(s.split_whitespace()).map(String::from).collect()
    }

    fn plan_options(s: &str) -> Result<PlanOptions, CliError> {
        match parse(&argv(s), &Loader::default())? {
            Invocation::Plan(o) => Ok(*o),
            _ => panic!("not a plan: {s}"),
        }
    }

    #[test]
    fn plan_takes_the_daemons_ec2_and_table_options() {
        let o = plan_options(
            "plan -f s.json -r eu-west-1 -v vpc-1 --failed 10.0.0.2,10.0.0.1 --failed 10.0.0.3 --route-tables rtb-1 \
             --zone-affinity --route-table-quota 50 --ignore_routes 10.9.0.0/16 --prefix-lists --cluster-name c1 --json",
        )
        .unwrap_or_else(|e| panic!("{}", e.message));
        assert_eq!(o.spec_file, PathBuf::from("s.json"));
        assert_eq!((o.ec2.region.as_deref(), o.ec2.vpc.as_deref()), (Some("eu-west-1"), Some("vpc-1")));
        let failed: Vec<String> = o.failed.iter().map(ToString::to_string).collect();
        assert_eq!(failed, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert_eq!(o.tables, vpcrouter_planner::model::TableSelection::Ids(["rtb-1".to_string()].into()));
        assert!(o.zone_affinity && o.ec2.prefix_lists && o.json);
        assert_eq!((o.quota, o.cluster_name.as_deref(), o.ignore_routes.len()), (50, Some("c1"), 1));
        let o = plan_options("plan -f s.json").unwrap_or_else(|e| panic!("{}", e.message));
        assert_eq!((o.tables.rule(), o.quota, o.failed.len(), o.json), ("serving", 500, 0, false));
    }

    #[test]
    fn plan_usage_errors_exit_1_because_2_means_changes() {
        for (line, said) in [
            ("plan", "--file <SPEC>"),
            ("plan -f s.json --failed 10.0.0", "'10.0.0' is not an IPv4 address"),
            ("plan -f s.json --ignore_routes 10.0.0.1/8", "--ignore_routes"),
            ("plan -f s.json --route-tables rtb-1 --route-table-tag a=b", "cannot be used with"),
            ("plan -f s.json -m configfile", "unexpected argument '-m'"),
            ("plan -f s.json --role-arn nope", "--role-arn"),
        ] {
            let e = plan_options(line).err().unwrap_or_else(|| panic!("accepted: {line}"));
            assert_eq!(e.status, 1, "{line}: {}", e.message);
            assert!(e.message.contains(said), "{line}: {}", e.message);
        }
        let help = plan_options("plan --help").expect_err("help");
        assert_eq!(help.status, 0);
        assert!(help.message.contains("Usage: vpcrouter plan") && help.message.contains("2 changes would be made"));
        assert!(!help.message.contains("--ec2-write") && help.message.contains("--ec2-read-rate"), "{}", help.message);
        let o = plan_options("plan -f s.json --ec2-write-rate 2 --ec2-read-rate 7")
            .unwrap_or_else(|e| panic!("{}", e.message));
        assert_eq!(o.ec2.limits.read.rate, 7.0, "a daemon's options are taken as they are");
    }

    #[test]
    fn plan_is_in_the_help_the_man_page_and_the_completions() {
        assert!(generate("man").unwrap_or_default().contains("plan"));
        assert!(generate("bash").unwrap_or_default().contains("--failed"));
        let main_help = match parse(&argv("--help"), &Loader::default()) {
            Ok(Invocation::Print(text)) => text,
            _ => panic!("no help"),
        };
        assert!(main_help.contains("vpcrouter plan -f SPEC"), "{main_help}");
    }
}
