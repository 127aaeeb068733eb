//! The route of each destination in each managed table, found without a search.
//!
//! A plan asks "does table T route D, and where to?" for every spec CIDR in every managed
//! table (a million times at 50,000 CIDRs × 20 tables). A hash map of a million (table,
//! destination) keys costs more to build than the plan itself; this index has one small
//! map from spec CIDR to position, and per table a row of slots by position.

use crate::fast::{map_with_capacity, FastMap};
use crate::model::{Cidr, Dest, Route, RouteTable};

/// The routes of the managed tables, by table position and destination.
#[derive(Default)]
pub(crate) struct RouteIndex<'a> {
    /// The position of each spec CIDR in the rows of `slots`.
    position: FastMap<Cidr, usize>,
    /// Per table (in the order given), the route to each spec CIDR.
    slots: Vec<Vec<Option<&'a Route>>>,
    /// The routes to other destinations (prefix lists, CIDRs not in the spec), by table
    /// position and destination: few.
    other: FastMap<(usize, &'a Dest), &'a Route>,
}

impl<'a> RouteIndex<'a> {
    /// Indexes the routes of `tables` (of two routes to one destination in a table, the
    /// later is found); `spec` are the CIDRs asked about most.
    pub(crate) fn new(tables: &[&'a RouteTable], spec: impl ExactSizeIterator<Item = Cidr>) -> RouteIndex<'a> {
        let mut position = map_with_capacity(spec.len());
        for (i, cidr) in spec.enumerate() {
            position.entry(cidr).or_insert(i);
        }
        let mut other = FastMap::default();
        let slots = tables
            .iter()
            .enumerate()
            .map(|(t, table)| {
                let mut row = vec![None; position.len()];
                for route in &table.routes {
                    let Some(dest) = &route.dest else { continue };
                    match dest.cidr().and_then(|c| position.get(&c)) {
                        Some(&i) => row[i] = Some(route),
                        None => {
                            other.insert((t, dest), route);
                        }
                    }
                }
                row
            })
            .collect();
        RouteIndex { position, slots, other }
    }

    /// The route of table `table` (a position in the tables indexed) to `dest`.
    pub(crate) fn get(&self, table: usize, dest: &Dest) -> Option<&'a Route> {
        match dest.cidr().and_then(|c| self.position.get(&c)) {
            Some(&i) => self.slots.get(table)?[i],
            None => self.other.get(&(table, dest)).copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dest: &str) -> Route {
        let dest = match Cidr::parse(dest) {
            Ok(c) => Dest::Cidr(c),
            Err(_) => Dest::List(dest.to_owned()),
        };
        Route { dest: Some(dest), ..route_to_nothing() }
    }

    fn route_to_nothing() -> Route {
        Route { dest: None, instance_id: None, eni_id: None, other_target: None, blackhole: false }
    }

    #[test]
    fn finds_spec_cidrs_lists_and_other_cidrs_per_table() {
        let net = |s: &str| Cidr::parse(s).unwrap();
        let a =
            RouteTable { id: "rtb-a".into(), routes: vec![route("10.1.0.0/16"), route("pl-1")], ..Default::default() };
        let b = RouteTable {
            id: "rtb-b".into(),
            routes: vec![route("10.9.0.0/16"), route_to_nothing()],
            ..Default::default()
        };
        let spec = [net("10.1.0.0/16"), net("10.2.0.0/16")];
        let index = RouteIndex::new(&[&a, &b], spec.into_iter());
        assert_eq!(index.get(0, &Dest::Cidr(spec[0])), Some(&a.routes[0]));
        assert_eq!(index.get(0, &Dest::List("pl-1".into())), Some(&a.routes[1]));
        assert_eq!(index.get(0, &Dest::Cidr(spec[1])), None);
        assert_eq!(index.get(1, &Dest::Cidr(spec[0])), None);
        assert_eq!(index.get(1, &Dest::Cidr(net("10.9.0.0/16"))), Some(&b.routes[0]));
        assert_eq!(index.get(2, &Dest::Cidr(spec[0])), None);
    }
}
