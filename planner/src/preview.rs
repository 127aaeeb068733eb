//! What a plan would change, as an operator reads it before a spec goes live (`vpcrouter
//! plan`): the route changes grouped by destination then table, with the router before and
//! after and the reason, the prefix-list changes, the plan's notices, and the text of all
//! that in at most [`WIDTH`] columns. Pure: the host reads the VPC and prints.
//!
//! [`preview`] plans as the engine does, stage after stage (a route to a prefix list this
//! plan creates is planned once the list exists), on a copy of the state with each stage's
//! changes applied. Where the engine picks a router at random among several healthy
//! candidates, the preview is deterministic: it plans twice, with a random source that
//! always draws the lowest index and with one that always draws the highest, shows the
//! first (the candidate with the lowest address) and marks the changes whose router differs
//! between the two ([`Change::may_differ`]): there a daemon may pick another candidate.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::model::{Applied, Cidr, Dest, ManagedTable, Notice, RouteAction, VpcState};
use crate::plan::{plan, PlanInput, MAX_STAGES};

/// Columns the text fits in.
pub const WIDTH: usize = 100;

/// The kind of a route change: the EC2 call it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    /// `CreateRoute`: the route is missing.
    Create,
    /// `ReplaceRoute`: the route moves to another router.
    Replace,
    /// `DeleteRoute`: the route goes.
    Delete,
}

impl ChangeKind {
    /// `create`, `replace` or `delete`.
    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::Create => "create",
            ChangeKind::Replace => "replace",
            ChangeKind::Delete => "delete",
        }
    }
}

/// One route change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The route's destination: a CIDR, or a prefix list (a list this plan creates is named
    /// `new:NAME` until EC2 gives it an id).
    pub dest: Dest,
    /// The route table.
    pub table: String,
    /// Create, replace or delete.
    pub kind: ChangeKind,
    /// Where the route points now: the router's IP, or the target EC2 reports when it is no
    /// router of the spec (`None` for a create).
    pub before: Option<String>,
    /// The router it points at afterwards (`None` for a delete).
    pub after: Option<Ipv4Addr>,
    /// Why, in the words of the daemon's log (`reason` field).
    pub reason: String,
    /// The router was picked among several equal candidates: a daemon picks one at random
    /// and may pick another than `after`.
    pub may_differ: bool,
}

/// One change of a prefix list vpcrouter owns (`--prefix-lists`, or lists retired without it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListChange {
    /// `create`, `modify` or `delete`.
    pub kind: &'static str,
    /// The list's id (its name for a list this plan creates).
    pub list: String,
    /// The list's name.
    pub name: String,
    /// Entries added (a created list's entries).
    pub add: Vec<Cidr>,
    /// Entries removed.
    pub remove: Vec<Cidr>,
}

/// What a daemon would change now, and what it would report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preview {
    /// The VPC.
    pub vpc_id: String,
    /// The table-selection rule, as the operator gave it.
    pub rule: String,
    /// The route tables managed, sorted by id.
    pub managed: Vec<ManagedTable>,
    /// The routers planned as failed (`--failed`), besides those not running.
    pub failed: Vec<Ipv4Addr>,
    /// The route changes, by destination then table.
    pub changes: Vec<Change>,
    /// The prefix-list changes, in the order planned.
    pub list_changes: Vec<ListChange>,
    /// The plan's notices, as the daemon logs them.
    pub notices: Vec<String>,
    /// The entries of each prefix list a change routes to, by id (to say what it carries).
    pub lists: BTreeMap<String, Vec<Cidr>>,
}

/// A random source that always gives the same word: with 0, every uniform pick takes the
/// first element; with all ones, the last (rand's integer sampling multiplies the word by
/// the range and keeps the high half).
struct Constant(u64);

impl rand::RngCore for Constant {
    fn next_u32(&mut self) -> u32 {
        self.0 as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.0
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        dst.fill(self.0 as u8);
    }
}

/// One deterministic plan, all its stages: the actions, the last stage's notices and
/// managed tables, and the state with every action applied.
struct Staged {
    /// Every stage's actions, in order.
    actions: Vec<RouteAction>,
    /// The last stage's notices.
    notices: BTreeSet<Notice>,
    /// The last stage's managed tables.
    managed: Vec<ManagedTable>,
    /// The state as the actions leave it (new lists included).
    after: VpcState,
}

/// What the actions of an [`RouteAction`] would be answered with, for planning the next
/// stage: a new list gets the id `new:NAME`, a modified list its next version.
fn applied_as_if(action: &RouteAction) -> Applied {
    match action {
        RouteAction::CreateList { name, .. } => Applied { list: Some((format!("new:{name}"), 1)) },
        RouteAction::ModifyList { id, version, .. } => Applied { list: Some((id.clone(), version + 1)) },
        _ => Applied::default(),
    }
}

/// Plans with `rng` until no stage waits for another (at most [`MAX_STAGES`]).
fn staged(input: &PlanInput<'_>, rng: &mut Constant) -> Staged {
    let mut state = input.state.clone();
    let (mut actions, mut stage) = (Vec::new(), 1);
    loop {
        let p = plan(&PlanInput { state: &state, ..*input }, rng);
        for a in &p.actions {
            state.apply(a, &applied_as_if(a));
        }
        actions.extend(p.actions.iter().cloned());
        if !p.staged || p.actions.is_empty() || stage == MAX_STAGES {
            return Staged { actions, notices: p.notices, managed: p.managed, after: state };
        }
        stage += 1;
    }
}

/// Previews what a daemon would change now with `input` (see the module doc).
pub fn preview(input: &PlanInput<'_>) -> Preview {
    let low = staged(input, &mut Constant(0));
    let high = staged(input, &mut Constant(u64::MAX));
    let other: BTreeMap<(&str, Dest), Option<Ipv4Addr>> =
        high.actions.iter().map(|a| ((a.rtb(), a.dest()), a.new_router())).collect();
    let mut changes: Vec<Change> = low
        .actions
        .iter()
        .filter_map(|a| {
            let mut change = route_change(a, input.state)?;
            change.may_differ = change.after.is_some() && other.get(&(a.rtb(), a.dest())) != Some(&change.after);
            Some(change)
        })
        .collect();
    changes.sort_by(|a, b| (&a.dest, &a.table).cmp(&(&b.dest, &b.table)));
    let mut lists: BTreeMap<String, Vec<Cidr>> = BTreeMap::new();
    for l in input.state.prefix_lists.iter().chain(&low.after.prefix_lists) {
        lists.insert(l.id.clone(), l.entries.clone());
    }
    lists.retain(|id, _| changes.iter().any(|c| c.dest == Dest::List(id.clone())));
    Preview {
        vpc_id: input.state.vpc_id.clone(),
        rule: input.tables.to_string(),
        managed: low.managed,
        failed: input.failed.iter().copied().collect(),
        changes,
        list_changes: low.actions.iter().filter_map(list_change).collect(),
        notices: low.notices.iter().map(ToString::to_string).collect(),
        lists,
    }
}

/// The route change of `action` (`None` for a prefix-list action).
fn route_change(action: &RouteAction, state: &VpcState) -> Option<Change> {
    let (old, reason) = action.old_router_and_reason()?;
    let kind = match action {
        RouteAction::Create { .. } => ChangeKind::Create,
        RouteAction::Replace { .. } => ChangeKind::Replace,
        _ => ChangeKind::Delete,
    };
    let (table, dest) = (action.rtb().to_owned(), action.dest());
    let before = match (kind, old) {
        (ChangeKind::Create, _) => None,
        (_, Some(ip)) => Some(ip.to_string()),
        (_, None) => Some(target_now(state, &table, &dest)),
    };
    Some(Change { dest, table, kind, before, after: action.new_router(), reason, may_differ: false })
}

/// The target a route points at now as EC2 reports it (instance or interface), when it is
/// no router of the spec.
fn target_now(state: &VpcState, table: &str, dest: &Dest) -> String {
    let route = state.route_tables.iter().find(|t| t.id == table).and_then(|t| {
        t.routes.iter().find(|r| r.dest.as_ref() == Some(dest)).and_then(|r| r.eni_id.clone().or(r.instance_id.clone()))
    });
    route.unwrap_or_else(|| "(unknown)".into())
}

/// The prefix-list change of `action` (`None` for a route action).
fn list_change(action: &RouteAction) -> Option<ListChange> {
    let change = |kind, list: &str, name: &str, add: &[Cidr], remove: &[Cidr]| ListChange {
        kind,
        list: list.to_owned(),
        name: name.to_owned(),
        add: add.to_vec(),
        remove: remove.to_vec(),
    };
    Some(match action {
        RouteAction::CreateList { name, group, .. } => change("create", name, name, &group.members, &[]),
        RouteAction::ModifyList { id, name, add, remove, .. } => change("modify", id, name, add, remove),
        RouteAction::DeleteList { id, name } => change("delete", id, name, &[], &[]),
        _ => return None,
    })
}

/// How many changes of each kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Routes created.
    pub create: usize,
    /// Routes replaced.
    pub replace: usize,
    /// Routes deleted.
    pub delete: usize,
    /// Prefix-list changes.
    pub lists: usize,
}

impl Counts {
    /// All changes.
    pub fn total(&self) -> usize {
        self.create + self.replace + self.delete + self.lists
    }
}

impl Preview {
    /// How many changes of each kind.
    pub fn counts(&self) -> Counts {
        let of = |k| self.changes.iter().filter(|c| c.kind == k).count();
        Counts {
            create: of(ChangeKind::Create),
            replace: of(ChangeKind::Replace),
            delete: of(ChangeKind::Delete),
            lists: self.list_changes.len(),
        }
    }

    /// True when a change's router was picked among several equal candidates.
    pub fn may_differ(&self) -> bool {
        self.changes.iter().any(|c| c.may_differ)
    }

    /// The last line: `3 changes: 2 create, 1 replace, 0 delete; nothing was written.`
    pub fn summary(&self) -> String {
        let n = self.counts();
        if n.total() == 0 {
            return "No changes: the VPC matches the spec; nothing was written.".into();
        }
        let lists = match n.lists {
            0 => String::new(),
            1 => ", 1 prefix-list change".into(),
            k => format!(", {k} prefix-list changes"),
        };
        let s = if n.total() == 1 { "" } else { "s" };
        format!(
            "{} change{s}: {} create, {} replace, {} delete{lists}; nothing was written.",
            n.total(),
            n.create,
            n.replace,
            n.delete
        )
    }

    /// The preview as text for a terminal or an incident note, in at most [`WIDTH`] columns
    /// (a word longer than that, such as a long list name, excepted).
    pub fn text(&self, region: &str) -> String {
        let mut out = String::new();
        self.header(&mut out, region);
        self.list_section(&mut out);
        self.route_section(&mut out);
        if self.may_differ() {
            out.push('\n');
            out.push_str(&wrap(
                "* several candidates are healthy: a daemon picks one at random (shown here: the lowest address), so it may pick another",
                "",
                "  ",
            ));
        }
        if !self.notices.is_empty() {
            out.push_str("\nNotes (as a daemon would log them):\n");
            for n in &self.notices {
                out.push_str(&wrap(n, "  - ", "    "));
            }
        }
        out.push('\n');
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    fn header(&self, out: &mut String, region: &str) {
        out.push_str(&format!("Plan for VPC {} in {region}: what a vpcrouter daemon would change now\n", self.vpc_id));
        let mut tables: Vec<String> = self.managed.iter().map(ManagedTable::describe).collect();
        if tables.is_empty() {
            tables.push("none".into());
        }
        out.push_str(&wrap_items(&tables, &format!("Route tables managed ({}): ", self.rule), "  "));
        out.push_str("Health: no check is run; every router counts as healthy unless its instance is not running\n");
        if !self.failed.is_empty() {
            let failed: Vec<String> = self.failed.iter().map(ToString::to_string).collect();
            out.push_str(&wrap_items(&failed, "Planned as failed (--failed): ", "  "));
        }
    }

    fn list_section(&self, out: &mut String) {
        if self.list_changes.is_empty() {
            return;
        }
        out.push_str("\nPrefix lists\n");
        for l in &self.list_changes {
            let name = if l.list == l.name { l.name.clone() } else { format!("{} ({})", l.list, l.name) };
            let what = match l.kind {
                "create" => format!("with {}", cidrs(&l.add)),
                "modify" => format!("add {}; remove {}", or_none(&l.add), or_none(&l.remove)),
                _ => "prefix list retired; its CIDRs are carried by other routes".into(),
            };
            out.push_str(&wrap(&format!("{:<7} {name}: {what}", l.kind), "  ", "    "));
        }
    }

    fn route_section(&self, out: &mut String) {
        let tw = self.changes.iter().map(|c| c.table.len()).max().unwrap_or(0);
        let routers: Vec<String> = self.changes.iter().map(routers_text).collect();
        let rw = routers.iter().map(String::len).max().unwrap_or(0);
        let mut last: Option<&Dest> = None;
        for (c, r) in self.changes.iter().zip(&routers) {
            if last != Some(&c.dest) {
                out.push('\n');
                out.push_str(&wrap(&self.dest_label(&c.dest), "", "    "));
                last = Some(&c.dest);
            }
            let row = format!("  {:<tw$}  {:<7}  {r:<rw$}  ", c.table, c.kind.name());
            let indent = if row.len() <= WIDTH / 2 { " ".repeat(row.len()) } else { "      ".into() };
            out.push_str(&wrap(&c.reason, &row, &indent));
        }
    }

    /// A destination as its header line says it: the CIDR, or a prefix list with what it
    /// carries.
    pub fn dest_label(&self, dest: &Dest) -> String {
        match dest {
            Dest::Cidr(c) => c.to_string(),
            Dest::List(id) => match self.lists.get(id) {
                Some(entries) => format!("{id} (prefix list of {} CIDR(s): {})", entries.len(), cidrs(entries)),
                None => format!("{id} (prefix list)"),
            },
        }
    }
}

/// `A -> B`, with `(none)` for a missing side and `*` after a router that may differ.
fn routers_text(c: &Change) -> String {
    let after = c.after.map_or_else(|| "(none)".to_string(), |ip| ip.to_string());
    let mark = if c.may_differ { " *" } else { "" };
    format!("{} -> {after}{mark}", c.before.as_deref().unwrap_or("(none)"))
}

fn cidrs(list: &[Cidr]) -> String {
    list.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

fn or_none(list: &[Cidr]) -> String {
    if list.is_empty() {
        "none".into()
    } else {
        cidrs(list)
    }
}

/// `text` after `first` on the first line and `indent` on the next ones, broken at spaces
/// and commas so that lines fit [`WIDTH`] (a longer word stays whole); ends with a newline.
/// Also the notices of `vpcrouter status`.
pub fn wrap(text: &str, first: &str, indent: &str) -> String {
    wrap_pieces(words(text), first, indent)
}

/// `items` separated by `, ` after `first`, broken between items only (an item such as
/// `rtb-1 (zone us-east-1a)` stays on one line).
fn wrap_items(items: &[String], first: &str, indent: &str) -> String {
    let last = items.len().saturating_sub(1);
    let pieces: Vec<String> =
        items.iter().enumerate().map(|(i, item)| format!(" {item}{}", if i < last { "," } else { "" })).collect();
    wrap_pieces(pieces.iter().map(String::as_str).collect(), first, indent)
}

/// `pieces` after `first`, then on lines starting with `indent`, a new line before a piece
/// that would pass [`WIDTH`] (even the first, after a long `first`; a piece's leading space
/// is dropped at the start of a line).
fn wrap_pieces(pieces: Vec<&str>, first: &str, indent: &str) -> String {
    let mut out = String::new();
    let mut line = first.to_string();
    // `empty`: no piece placed yet; `fresh`: nothing on this line but its indent.
    let (mut empty, mut fresh) = (true, first.trim().is_empty());
    for word in pieces {
        let piece = if empty { word.trim_start() } else { word };
        if !fresh && line.chars().count() + piece.trim_end().chars().count() > WIDTH {
            out.push_str(line.trim_end());
            out.push('\n');
            line = indent.to_string();
            line.push_str(word.trim_start());
        } else {
            line.push_str(piece);
        }
        (empty, fresh) = (false, false);
    }
    out.push_str(line.trim_end());
    out.push('\n');
    out
}

/// The pieces `text` may be broken between: each word with the space before it; a comma
/// ends a piece too (long CIDR lists).
fn words(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, ch) in text.char_indices() {
        if ch == ' ' && i > start {
            out.push(&text[start..i]);
            start = i;
        } else if ch == ',' {
            out.push(&text[start..=i]);
            start = i + 1;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Eni, Instance, Route, RouteTable, Subnet, TableSelection};
    use crate::plan::ListMode;
    use rand::seq::IndexedRandom;

    const A: &str = "10.0.1.10";
    const B: &str = "10.0.2.10";
    const C: &str = "10.0.1.11";

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("test IP")
    }

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).expect("test CIDR")
    }

    /// Two subnets with a table each (rtb-1, rtb-2); A and C in the first, B in the second.
    fn world() -> VpcState {
        let instance = |n: usize, subnet: &str, at: &str| Instance {
            id: format!("i-{n}"),
            enis: vec![Eni {
                id: format!("eni-{n}"),
                subnet_id: subnet.into(),
                private_ips: vec![ip(at)],
                device_index: 0,
                source_dest_check: Some(false),
            }],
        };
        let table =
            |id: &str, subnet: &str| RouteTable { id: id.into(), subnets: vec![subnet.into()], ..Default::default() };
        VpcState {
            vpc_id: "vpc-1".into(),
            subnets: vec![Subnet::from("sn-1"), Subnet::from("sn-2")],
            cidrs: vec![cidr("10.0.0.0/16")],
            route_tables: vec![table("rtb-1", "sn-1"), table("rtb-2", "sn-2")],
            instances: vec![instance(1, "sn-1", A), instance(2, "sn-2", B), instance(3, "sn-1", C)],
            ..Default::default()
        }
    }

    /// `state` with `net` routed to the ENI of router `n` in both tables.
    fn routed(mut state: VpcState, net: &str, n: usize) -> VpcState {
        for t in &mut state.route_tables {
            t.routes.push(Route {
                dest: Some(Dest::Cidr(cidr(net))),
                instance_id: Some(format!("i-{n}")),
                eni_id: Some(format!("eni-{n}")),
                other_target: None,
                blackhole: false,
            });
        }
        state
    }

    fn spec(entries: &[(&str, &[&str])]) -> Vec<(Cidr, Vec<Ipv4Addr>)> {
        entries.iter().map(|(c, hosts)| (cidr(c), hosts.iter().map(|h| ip(h)).collect())).collect()
    }

    fn run(state: &VpcState, spec: &[(Cidr, Vec<Ipv4Addr>)], failed: &[&str], lists: Option<&ListMode>) -> Preview {
        let failed: BTreeSet<Ipv4Addr> = failed.iter().map(|h| ip(h)).collect();
        let none = BTreeSet::new();
        let input = PlanInput {
            state,
            spec,
            failed: &failed,
            questionable: &none,
            drained: &none,
            ignore: &[],
            last_written: &BTreeMap::new(),
            lists,
            quota: 500,
            failback: None,
            tables: &TableSelection::Serving,
            zone_affinity: false,
        };
        preview(&input)
    }

    /// A change as (table, kind, before, after, reason, may differ).
    type Row<'a> = (&'a str, ChangeKind, Option<&'a str>, Option<Ipv4Addr>, &'a str, bool);

    fn rows(p: &Preview) -> Vec<Row<'_>> {
        p.changes
            .iter()
            .map(|c| (c.table.as_str(), c.kind, c.before.as_deref(), c.after, c.reason.as_str(), c.may_differ))
            .collect()
    }

    fn assert_fits(text: &str) {
        for line in text.lines() {
            assert!(line.chars().count() <= WIDTH, "{} columns: {line}", line.chars().count());
        }
    }

    #[test]
    fn constant_sources_pick_the_first_and_the_last_candidate() {
        let candidates = [1, 2, 3, 4, 5];
        assert_eq!(candidates.choose(&mut Constant(0)), Some(&1));
        assert_eq!(candidates.choose(&mut Constant(u64::MAX)), Some(&5));
        assert_eq!([7].choose(&mut Constant(u64::MAX)), Some(&7));
    }

    #[test]
    fn a_new_cidr_is_created_in_every_table_on_the_lowest_candidate_marked_as_a_random_pick() {
        let p = run(&world(), &spec(&[("10.55.0.0/16", &[B, A])]), &[], None);
        let row = |t| (t, ChangeKind::Create, None, Some(ip(A)), "route missing", true);
        assert_eq!(rows(&p), [row("rtb-1"), row("rtb-2")]);
        assert!(p.changes.iter().all(|c| c.dest == Dest::Cidr(cidr("10.55.0.0/16"))));
        let text = p.text("us-east-1");
        assert_fits(&text);
        assert!(text.starts_with("Plan for VPC vpc-1 in us-east-1"), "{text}");
        assert!(
            text.contains("Route tables managed (the tables serving the subnets of the spec's routers): rtb-1, rtb-2")
        );
        assert!(text.contains("\n10.55.0.0/16\n  rtb-1  create   (none) -> 10.0.1.10 *  route missing\n"), "{text}");
        assert!(text.contains("\n  rtb-2  create   (none) -> 10.0.1.10 *  route missing\n"), "{text}");
        assert!(text.contains("* several candidates are healthy: a daemon picks one at random"), "{text}");
        assert!(text.ends_with("\n2 changes: 2 create, 0 replace, 0 delete; nothing was written.\n"), "{text}");
    }

    #[test]
    fn failed_routers_move_their_routes_and_a_single_candidate_is_no_random_pick() {
        let state = routed(world(), "10.55.0.0/16", 1);
        let p = run(&state, &spec(&[("10.55.0.0/16", &[A, B])]), &[A], None);
        let row = |t| (t, ChangeKind::Replace, Some(A), Some(ip(B)), "router failed", false);
        assert_eq!(rows(&p), [row("rtb-1"), row("rtb-2")]);
        let text = p.text("r");
        assert!(text.contains("  rtb-1  replace  10.0.1.10 -> 10.0.2.10  router failed\n"), "{text}");
        assert!(text.contains("\nPlanned as failed (--failed): 10.0.1.10\n"), "{text}");
        assert!(!text.contains('*'), "{text}");
        assert_eq!(p.counts(), Counts { create: 0, replace: 2, delete: 0, lists: 0 });
    }

    #[test]
    fn routes_out_of_the_spec_are_deleted_and_a_matching_vpc_has_no_changes() {
        let state = routed(routed(world(), "10.55.0.0/16", 1), "10.66.0.0/16", 2);
        let p = run(&state, &spec(&[("10.55.0.0/16", &[A, B])]), &[], None);
        assert_eq!(p.counts(), Counts { create: 0, replace: 0, delete: 2, lists: 0 });
        let c = &p.changes[0];
        assert_eq!((c.before.as_deref(), c.after, c.reason.as_str()), (Some(B), None, "not in route spec"));
        assert!(p.text("r").contains("  rtb-1  delete   10.0.2.10 -> (none)  not in route spec\n"), "{}", p.text("r"));
        let p = run(&state, &spec(&[("10.55.0.0/16", &[A, B]), ("10.66.0.0/16", &[B])]), &[], None);
        assert!(p.changes.is_empty() && p.list_changes.is_empty(), "{p:?}");
        assert!(p.text("r").ends_with("\nNo changes: the VPC matches the spec; nothing was written.\n"));
    }

    #[test]
    fn notices_are_listed_as_notes_within_the_width() {
        let p = run(&world(), &spec(&[("10.55.0.0/16", &[A, "10.0.9.9"])]), &[], None);
        let text = p.text("us-east-1");
        assert_fits(&text);
        assert!(text.contains(
            "\nNotes (as a daemon would log them):\n  - router 10.0.9.9 of the route spec is not a private IP"
        ));
        assert!(!text.contains('*'), "one candidate in the VPC: no random pick\n{text}");
    }

    #[test]
    fn prefix_lists_are_created_then_routed_to_as_later_stages() {
        let nets = ["10.61.0.0/16", "10.62.0.0/16", "10.63.0.0/16"];
        let entries: Vec<(&str, &[&str])> = nets.iter().map(|n| (*n, &[A, B][..])).collect();
        let p = run(&world(), &spec(&entries), &[], Some(&ListMode::new("vpc-1")));
        assert_eq!(p.list_changes.len(), 1, "{p:?}");
        let list = &p.list_changes[0];
        assert_eq!((list.kind, list.add.len()), ("create", 3));
        let id = format!("new:{}", list.name);
        assert_eq!(p.changes.len(), 2, "one route per table to the new list: {p:?}");
        assert!(p.changes.iter().all(|c| c.dest == Dest::List(id.clone()) && c.kind == ChangeKind::Create));
        let text = p.text("us-east-1");
        assert!(text.contains("\nPrefix lists\n  create "), "{text}");
        let header = format!("\n{id} (prefix list of 3 CIDR(s): 10.61.0.0/16,10.62.0.0/16,\n    10.63.0.0/16)\n");
        assert!(text.contains(&header), "{text}");
        assert_fits(&text);
        assert!(
            text.ends_with("3 changes: 2 create, 0 replace, 0 delete, 1 prefix-list change; nothing was written.\n")
        );
    }

    #[test]
    fn long_text_wraps_at_spaces_and_commas() {
        let long = (0..40).map(|i| format!("10.{i}.0.0/16")).collect::<Vec<_>>().join(",");
        let text = wrap(&format!("with {long}"), "  create  x: ", "    ");
        assert_fits(&text);
        assert!(text.lines().count() > 1 && text.lines().skip(1).all(|l| l.starts_with("    ")), "{text}");
        assert_eq!(text.replace("\n    ", ""), format!("  create  x: with {long}\n"));
        let tables: Vec<String> = (0..9).map(|i| format!("rtb-0123456789abcdef{i} (zone us-east-1a)")).collect();
        let text = wrap_items(&tables, "Route tables managed (rule): ", "  ");
        assert_fits(&text);
        let long_first = wrap_items(&tables[..1], &format!("Route tables managed ({}): ", "x".repeat(60)), "  ");
        assert_fits(&long_first);
        assert_eq!(long_first.lines().nth(1), Some("  rtb-0123456789abcdef0 (zone us-east-1a)"), "{long_first}");
        assert!(text.lines().all(|l| l.trim_end().ends_with("(zone us-east-1a),") || l.ends_with("1a)")), "{text}");
        assert!(
            text.starts_with("Route tables managed (rule): rtb-0123456789abcdef0 (zone us-east-1a),\n  rtb-"),
            "{text}"
        );
    }
}
