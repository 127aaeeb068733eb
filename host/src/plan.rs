//! `vpcrouter plan`: what a daemon would change in the VPC with a route spec, written
//! nowhere. The spec file is read and validated as the daemon's watchers and engine do, the
//! VPC is read through a [`VpcReader`] (which cannot write: see `vpcrouter_ec2::reader`),
//! the pure planner plans as the engine's reconcile does, and
//! [`vpcrouter_planner::preview`] says what that plan changes. This module only wires them
//! and prints: text, or JSON with `--json`.
//!
//! Exit status: 0 nothing to change, 2 changes, 1 an error (one line on stderr).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};
use vpcrouter_ec2::{Ec2Config, Ec2Error, VpcReader};
use vpcrouter_planner::model::{Cidr, Dest, TableSelection, VpcState};
use vpcrouter_planner::plan::{spec_entries, ListMode, PlanInput};
use vpcrouter_planner::preview::{preview, Preview};
use vpcrouter_plugin_api::{file, spec, RouteSpec};

/// The largest spec file read: the configfile watcher's default `--file_max_size`.
const MAX_SPEC_BYTES: u64 = 64 << 20;
/// Exit status when the VPC matches the spec.
const NO_CHANGES: i32 = 0;
/// Exit status when a daemon would change something.
const CHANGES: i32 = 2;
/// Exit status of an error.
const ERROR: i32 = 1;

/// `vpcrouter plan`'s options.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// `-f/--file`: the route spec.
    pub spec_file: PathBuf,
    /// Region, VPC, role, read limits, `--prefix-lists`.
    pub ec2: Ec2Config,
    /// `--route-tables` / `--route-table-tag`: the tables managed.
    pub tables: TableSelection,
    /// `--zone-affinity`.
    pub zone_affinity: bool,
    /// `--route-table-quota`.
    pub quota: u32,
    /// `--ignore_routes`: routes never touched.
    pub ignore_routes: Vec<Cidr>,
    /// `--cluster-name`: the owner of vpcrouter's prefix lists (`None`: the VPC id).
    pub cluster_name: Option<String>,
    /// `--failed`: routers planned as failed.
    pub failed: BTreeSet<Ipv4Addr>,
    /// `--json`: print the plan as JSON.
    pub json: bool,
}

/// Runs `vpcrouter plan`; returns the exit status.
pub fn run(o: PlanOptions) -> i32 {
    match plan(&o) {
        Ok((preview, region)) => {
            if o.json {
                println!("{}", document(&preview, &region));
            } else {
                print!("{}", preview.text(&region));
            }
            if preview.counts().total() == 0 {
                NO_CHANGES
            } else {
                CHANGES
            }
        }
        Err(message) => {
            eprintln!("error: {message}");
            ERROR
        }
    }
}

/// Reads the spec and the VPC and previews the plan: the preview and the region, or the
/// error's one line.
fn plan(o: &PlanOptions) -> Result<(Preview, String), String> {
    let spec = read_spec(&o.spec_file)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let reader =
        rt.block_on(o.ec2.connect_reader(o.cluster_name.as_deref(), Arc::new(()))).map_err(|e| e.to_string())?;
    let state = rt.block_on(reader.read_state()).map_err(|e| read_error(&reader, e))?;
    Ok((preview_of(o, &spec, &state, reader.vpc_id()), reader.region().to_owned()))
}

/// The spec file, validated as the daemon validates a spec: by `spec::parse_json` (as every
/// watcher does), then by the engine's checks (canonical, not empty).
fn read_spec(path: &std::path::Path) -> Result<RouteSpec, String> {
    let text = file::read_text(path, MAX_SPEC_BYTES).map_err(|e| e.to_string())?;
    let named = |e: spec::SpecError| format!("{}: {e}", path.display());
    let spec = spec::parse_json(&text).map_err(named)?;
    spec.check().map_err(named)?;
    if spec.is_empty() {
        return Err(format!(
            "{}: the route spec is empty; a daemon ignores an empty spec (it never wipes routes): give at least one CIDR",
            path.display()
        ));
    }
    Ok(spec)
}

/// A failed read in one line: which VPC, where, what went wrong and what to do.
fn read_error(reader: &VpcReader, e: Ec2Error) -> String {
    match e {
        // These name the VPC or the role, and what to check.
        Ec2Error::VpcNotFound { .. } | Ec2Error::AssumeRole { .. } => e.to_string(),
        e => format!("cannot read VPC {} in region {}: {e}", reader.vpc_id(), reader.region()),
    }
}

/// Plans as the engine's reconcile does (`plan_from`), with the health the options give:
/// `--failed` failed, none questionable or drained, no failback, nothing written before.
fn preview_of(o: &PlanOptions, spec: &RouteSpec, state: &VpcState, vpc_id: &str) -> Preview {
    let entries = spec_entries(spec);
    let lists = o.ec2.prefix_lists.then(|| ListMode::new(o.cluster_name.as_deref().unwrap_or(vpc_id)));
    let none = BTreeSet::new();
    let input = PlanInput {
        state,
        spec: &entries,
        failed: &o.failed,
        questionable: &none,
        drained: &none,
        ignore: &o.ignore_routes,
        last_written: &BTreeMap::new(),
        lists: lists.as_ref(),
        quota: o.quota,
        failback: None,
        tables: &o.tables,
        zone_affinity: o.zone_affinity,
    };
    preview(&input)
}

/// The `--json` document.
fn document(p: &Preview, region: &str) -> Value {
    let tables: Vec<Value> =
        p.managed.iter().map(|t| json!({"id": t.id, "main": t.main, "zone": t.zone, "gateway": t.gateway})).collect();
    let changes: Vec<Value> = p
        .changes
        .iter()
        .map(|c| {
            let mut v = json!({
                "cidr": c.dest.to_string(), "route_table": c.table, "action": c.kind.name(),
                "router_before": c.before, "router_after": c.after.map(|ip| ip.to_string()),
                "reason": c.reason, "may_differ": c.may_differ,
            });
            if let (Dest::List(id), Some(obj)) = (&c.dest, v.as_object_mut()) {
                let carried = p.lists.get(id).map(|l| l.iter().map(ToString::to_string).collect::<Vec<_>>());
                obj.insert("prefix_list_cidrs".into(), json!(carried));
            }
            v
        })
        .collect();
    let lists: Vec<Value> = p
        .list_changes
        .iter()
        .map(|l| {
            let text = |v: &[Cidr]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
            json!({"prefix_list": l.list, "name": l.name, "action": l.kind, "add": text(&l.add), "remove": text(&l.remove)})
        })
        .collect();
    json!({
        "vpc_id": p.vpc_id, "region": region,
        "route_table_selection": p.rule,
        "route_tables": tables,
        "failed": p.failed.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "changes": changes,
        "prefix_list_changes": lists,
        "notices": p.notices,
        "changes_count": p.counts().total(),
        "written": false,
    })
}
