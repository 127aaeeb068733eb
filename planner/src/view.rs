//! What `/status` and `/vpc` show of a plan: the state of every managed route once the
//! plan is executed, and each prefix-list group. Pure functions of the VPC state and the
//! plan, in time linear in their size (each lookup is indexed once per call).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use std::borrow::Cow;

use crate::fast::{last_wins, map_with_capacity, FastMap};
use crate::model::{Cidr, Dest, Family, Plan, RouteAction, VpcState};

/// A group of CIDRs and the prefix list that carries it (`/status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListView {
    /// Group key, e.g. `ipv4-10.1.0.5-10.1.1.7`.
    pub group: String,
    /// Address family.
    pub family: Family,
    /// The candidate routers.
    pub hosts: Vec<Ipv4Addr>,
    /// The group's CIDRs.
    pub members: Vec<String>,
    /// The list (`None` until it exists).
    pub list_id: Option<String>,
    /// Its name.
    pub name: String,
    /// Its max entries: what its route weighs in each table.
    pub max_entries: u32,
    /// Its version.
    pub version: i64,
}

/// The groups of a plan with their lists as the state (with the plan applied) has them.
pub fn list_views(state: &VpcState, plan: &Plan) -> Vec<ListView> {
    let mut lists = map_with_capacity(state.prefix_lists.len());
    for list in &state.prefix_lists {
        lists.entry(list.id.as_str()).or_insert(list);
    }
    plan.groups
        .iter()
        .map(|(group, id)| {
            let list = id.as_deref().and_then(|id| lists.get(id));
            ListView {
                group: group.key.clone(),
                family: group.family,
                hosts: group.hosts.clone(),
                members: group.members.iter().map(ToString::to_string).collect(),
                list_id: id.clone(),
                name: list.map(|l| l.name.clone()).unwrap_or_default(),
                max_entries: list.map_or(0, |l| l.max_entries),
                version: list.map_or(0, |l| l.version),
            }
        })
        .collect()
}

/// State of one managed route after the last reconcile (`/vpc`, `/status`).
///
/// The texts are shared: a million routes have a few thousand owners and a handful of
/// messages, and each route of its own copy made the status update cost as much as the plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableRoute {
    /// The router the route points at (`None`: unknown, or left on a bad target).
    pub router: Option<Ipv4Addr>,
    /// The instance owning `router`.
    pub instance_id: Option<Arc<str>>,
    /// The interface owning `router`.
    pub eni_id: Option<Arc<str>>,
    /// The router before a replacement.
    pub old_router: Option<Ipv4Addr>,
    /// What the last reconcile did, in vpc-router's words.
    pub message: Arc<str>,
}

/// Route states per route table id, then per destination (a CIDR, or a prefix list id), in
/// the destinations' order (networks by family and address, then lists): kept as values, so
/// that a million routes are neither formatted nor sorted as text on every reconcile.
pub type TableRoutes = BTreeMap<String, BTreeMap<Dest, TableRoute>>;

/// The table and destination a route action changes (`None` for a list action).
fn route_key(action: &RouteAction) -> Option<(&str, &Dest)> {
    match action {
        RouteAction::Create { rtb, dest, .. }
        | RouteAction::Replace { rtb, dest, .. }
        | RouteAction::Delete { rtb, dest, .. } => Some((rtb, dest)),
        _ => None,
    }
}

/// What [`table_routes`] looks up per route, indexed once: the first action and the first
/// failure of each (table, destination), the owner of each IP, the members of each list.
struct Lookups<'p> {
    actions: FastMap<(&'p str, &'p Dest), &'p RouteAction>,
    failures: FastMap<(&'p str, &'p Dest), &'p str>,
    owners: FastMap<Ipv4Addr, (Arc<str>, Arc<str>)>,
    members: FastMap<&'p str, &'p [Cidr]>,
    /// Each message made so far, shared by the routes that have it.
    messages: FastMap<String, Arc<str>>,
    /// The last message asked for: most routes have the message of the route before.
    last: Option<Arc<str>>,
}

impl<'p> Lookups<'p> {
    fn new(state: &'p VpcState, plan: &'p Plan, failures: &'p [(String, Dest, String)]) -> Lookups<'p> {
        let mut actions = map_with_capacity(plan.actions.len());
        for action in &plan.actions {
            if let Some(key) = route_key(action) {
                actions.entry(key).or_insert(action);
            }
        }
        let mut failed = map_with_capacity(failures.len());
        for (rtb, dest, error) in failures {
            failed.entry((rtb.as_str(), dest)).or_insert(error.as_str());
        }
        let mut owners = FastMap::default();
        for instance in &state.instances {
            let instance_id: Arc<str> = instance.id.as_str().into();
            for eni in &instance.enis {
                let eni_id: Arc<str> = eni.id.as_str().into();
                for &ip in &eni.private_ips {
                    owners.entry(ip).or_insert_with(|| (instance_id.clone(), eni_id.clone()));
                }
            }
        }
        let mut members = FastMap::default();
        for (group, list) in &plan.groups {
            if let Some(list) = list {
                members.entry(list.as_str()).or_insert(group.members.as_slice());
            }
        }
        Lookups { actions, failures: failed, owners, members, messages: FastMap::default(), last: None }
    }

    /// `text`, shared with the routes that have the same message.
    fn message(&mut self, text: &str) -> Arc<str> {
        if let Some(last) = self.last.as_ref().filter(|last| ***last == *text) {
            return last.clone();
        }
        let shared = match self.messages.get(text) {
            Some(shared) => shared.clone(),
            None => {
                let shared: Arc<str> = text.into();
                self.messages.insert(text.to_owned(), shared.clone());
                shared
            }
        };
        self.last = Some(shared.clone());
        shared
    }
}

/// The state of every route the plan manages, once executed. `failures` are the actions
/// that failed, with their error; `dry_run` marks plans that were only logged. Routes
/// that were deleted, or are no longer managed, are not listed. A route to a group's
/// prefix list is listed under the list's id and under each CIDR it carries (unless the
/// table still has a route of the CIDR's own, which wins by priority).
pub fn table_routes(state: &VpcState, plan: &Plan, failures: &[(String, Dest, String)], dry_run: bool) -> TableRoutes {
    let mut found = Lookups::new(state, plan, failures);
    let mut out = TableRoutes::new();
    for (rtb, routes) in &plan.routes {
        // The table's rows in plan order; its map is built at once.
        let mut table = Vec::with_capacity(routes.len());
        for (dest, router) in routes {
            let action = found.actions.get(&(rtb.as_str(), dest)).copied();
            let (message, old_router) = match action {
                Some(RouteAction::Create { .. }) => (Cow::Borrowed("Added route"), None),
                Some(RouteAction::Replace { old_router, reason, .. }) => {
                    (Cow::Owned(format!("Updated: {reason}")), *old_router)
                }
                Some(RouteAction::Delete { .. }) => continue,
                Some(_) => (Cow::Borrowed(""), None),
                None if router.is_some() => (Cow::Borrowed("Current: Route exist and up to date"), None),
                None => (Cow::Borrowed("None healthy: route left as it is"), None),
            };
            let message = match (dry_run && action.is_some(), found.failures.get(&(rtb.as_str(), dest))) {
                (false, None) => message,
                (dry, error) => {
                    let dry = if dry { "Dry run, not done: " } else { "" };
                    let error = error.map(|e| format!(" [ERROR: {e}]")).unwrap_or_default();
                    Cow::Owned(format!("{dry}{message}{error}"))
                }
            };
            let message = found.message(&message);
            let owner = router.and_then(|ip| found.owners.get(&ip)).cloned();
            let (instance_id, eni_id) = owner.map_or((None, None), |(i, e)| (Some(i), Some(e)));
            let route = TableRoute { router: *router, instance_id, eni_id, old_router, message };
            if let Dest::List(id) = dest {
                let members = found.members.get(id.as_str()).copied().unwrap_or_default();
                for cidr in members.iter().filter(|c| !routes.contains_key(&Dest::Cidr(**c))) {
                    let message = found.message(&format!("Via prefix list {id}: {}", route.message));
                    table.push((Dest::Cidr(*cidr), TableRoute { message, ..route.clone() }));
                }
            }
            table.push((dest.clone(), route));
        }
        if table.is_empty() {
            continue;
        }
        // Without list routes each destination has one row: no order to keep among equals.
        if routes.keys().any(|d| matches!(d, Dest::List(_))) {
            out.insert(rtb.clone(), last_wins(table));
        } else {
            // In the plan's order, that of the destinations, already.
            out.insert(rtb.clone(), table.into_iter().collect());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Cidr, DeleteReason, Eni, Group, Instance, ReplaceReason, RouterTarget};

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// A destination as `/vpc` names it: a CIDR, or a list id.
    fn d(s: &str) -> Dest {
        Cidr::parse(s).map_or_else(|_| Dest::List(s.into()), Dest::Cidr)
    }

    fn planned(plan: &mut Plan, rtb: &str, dest: Dest, router: Option<Ipv4Addr>) {
        plan.routes.entry(rtb.to_owned()).or_default().insert(dest, router);
    }

    #[test]
    fn table_routes_follow_the_plan_and_drop_deleted_routes() {
        let net = Dest::Cidr(Cidr::parse("10.55.0.0/16").unwrap());
        let gone = Dest::Cidr(Cidr::parse("10.66.0.0/16").unwrap());
        let state = VpcState {
            instances: vec![Instance {
                id: "i-2".into(),
                enis: vec![Eni {
                    id: "eni-2".into(),
                    subnet_id: "s".into(),
                    private_ips: vec![ip("10.0.0.2")],
                    device_index: 0,
                    source_dest_check: Some(false),
                }],
            }],
            ..Default::default()
        };
        let target = RouterTarget { ip: ip("10.0.0.2"), instance_id: "i-2".into(), eni_id: "eni-2".into() };
        let mut plan = Plan::default();
        plan.actions.push(RouteAction::Create { rtb: "rtb-1".into(), dest: net.clone(), target: target.clone() });
        plan.actions.push(RouteAction::Replace {
            rtb: "rtb-2".into(),
            dest: net.clone(),
            target,
            old_router: Some(ip("10.0.0.1")),
            reason: ReplaceReason::RouterFailed,
        });
        plan.actions.push(RouteAction::Delete {
            rtb: "rtb-2".into(),
            dest: gone,
            old_router: None,
            reason: DeleteReason::NotInSpec,
        });
        planned(&mut plan, "rtb-1", net.clone(), Some(ip("10.0.0.2")));
        planned(&mut plan, "rtb-2", net.clone(), Some(ip("10.0.0.2")));
        planned(&mut plan, "rtb-3", net.clone(), Some(ip("10.0.0.2")));
        planned(&mut plan, "rtb-4", net.clone(), None);
        let failures = vec![("rtb-2".to_string(), net.clone(), "throttled".to_string())];
        let t = table_routes(&state, &plan, &failures, false);
        assert_eq!(t["rtb-1"][&d("10.55.0.0/16")].message.as_ref(), "Added route");
        assert_eq!(t["rtb-1"][&d("10.55.0.0/16")].eni_id.as_deref(), Some("eni-2"));
        assert_eq!(t["rtb-2"][&d("10.55.0.0/16")].message.as_ref(), "Updated: router failed [ERROR: throttled]");
        assert_eq!(t["rtb-2"][&d("10.55.0.0/16")].old_router, Some(ip("10.0.0.1")));
        assert!(!t["rtb-2"].contains_key(&d("10.66.0.0/16")));
        assert_eq!(t["rtb-3"][&d("10.55.0.0/16")].message.as_ref(), "Current: Route exist and up to date");
        assert_eq!(t["rtb-4"][&d("10.55.0.0/16")].instance_id, None);
        let dry = table_routes(&state, &plan, &[], true);
        assert_eq!(dry["rtb-1"][&d("10.55.0.0/16")].message.as_ref(), "Dry run, not done: Added route");
    }

    #[test]
    fn the_first_action_of_a_route_tells_its_state() {
        // The engine appends the actions of a failover's fast path after the plan's own.
        let net = Dest::Cidr(Cidr::parse("10.55.0.0/16").unwrap());
        let target = RouterTarget { ip: ip("10.0.0.2"), instance_id: "i-2".into(), eni_id: "eni-2".into() };
        let mut plan = Plan::default();
        let replace = |reason| RouteAction::Replace {
            rtb: "rtb-1".into(),
            dest: net.clone(),
            target: target.clone(),
            old_router: None,
            reason,
        };
        plan.actions.push(replace(ReplaceReason::RouterFailed));
        plan.actions.push(replace(ReplaceReason::Drained));
        planned(&mut plan, "rtb-1", net.clone(), Some(ip("10.0.0.2")));
        let t = table_routes(&VpcState::default(), &plan, &[], false);
        assert_eq!(t["rtb-1"][&d("10.55.0.0/16")].message.as_ref(), "Updated: router failed");
    }

    #[test]
    fn a_list_route_is_shown_under_each_cidr_it_carries() {
        let (a, b) = (Cidr::parse("10.1.0.0/16").unwrap(), Cidr::parse("2001:db8::/32").unwrap());
        let group = Group { key: "k".into(), family: Family::V4, hosts: vec![ip("10.0.0.2")], members: vec![a, b] };
        let mut plan = Plan { groups: vec![(group, Some("pl-1".into()))], ..Default::default() };
        planned(&mut plan, "rtb-1", Dest::List("pl-1".into()), Some(ip("10.0.0.2")));
        // rtb-2 still has a route of b's own (it wins by priority): b is shown by it.
        planned(&mut plan, "rtb-2", Dest::List("pl-1".into()), Some(ip("10.0.0.2")));
        planned(&mut plan, "rtb-2", Dest::Cidr(b), Some(ip("10.0.0.3")));
        let t = table_routes(&VpcState::default(), &plan, &[], false);
        assert_eq!(t["rtb-1"][&d("pl-1")].message.as_ref(), "Current: Route exist and up to date");
        assert_eq!(
            t["rtb-1"][&d("10.1.0.0/16")].message.as_ref(),
            "Via prefix list pl-1: Current: Route exist and up to date"
        );
        assert_eq!(t["rtb-1"][&d("2001:db8::/32")].router, Some(ip("10.0.0.2")));
        assert_eq!(t["rtb-2"][&d("2001:db8::/32")].router, Some(ip("10.0.0.3")));
        assert_eq!(t["rtb-2"][&d("10.1.0.0/16")].router, Some(ip("10.0.0.2")));
    }
}
