//! Quorum health: combining the health reports of the live instances into one view.
//!
//! Pure functions; the cluster module feeds them the reports it sees in etcd.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// How many of the live reports must call a host failed for the leader to act on it
/// (`--health-quorum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quorum {
    /// More than half of the reports (the default in cluster mode).
    Majority,
    /// One report is enough: vpc-router's single-view behaviour.
    Any,
    /// Every report.
    All,
}

impl Quorum {
    /// Parses `majority`, `any` or `all`.
    pub fn parse(s: &str) -> Option<Quorum> {
        match s {
            "majority" => Some(Quorum::Majority),
            "any" => Some(Quorum::Any),
            "all" => Some(Quorum::All),
            _ => None,
        }
    }

    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Quorum::Majority => "majority",
            Quorum::Any => "any",
            Quorum::All => "all",
        }
    }

    /// How many of `n` reports must agree (at least 1).
    pub fn threshold(self, n: usize) -> usize {
        match self {
            Quorum::Majority => n / 2 + 1,
            Quorum::Any => 1,
            Quorum::All => n.max(1),
        }
    }
}

/// One instance's view: the hosts its health plugin reports failed and questionable.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// Hosts reported failed.
    pub failed: BTreeSet<Ipv4Addr>,
    /// Hosts reported questionable.
    #[serde(default)]
    pub questionable: BTreeSet<Ipv4Addr>,
}

/// Combines reports: a host is failed when at least the quorum of reports list it failed;
/// questionable when the quorum lists it failed or questionable, but not failed.
pub fn combine<'a>(reports: impl IntoIterator<Item = &'a Report>, quorum: Quorum) -> Report {
    let mut failed: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    let mut doubtful: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    let mut n = 0;
    for r in reports {
        n += 1;
        for h in &r.failed {
            *failed.entry(*h).or_default() += 1;
        }
        for h in r.failed.union(&r.questionable) {
            *doubtful.entry(*h).or_default() += 1;
        }
    }
    let need = quorum.threshold(n);
    let failed: BTreeSet<Ipv4Addr> = failed.into_iter().filter(|&(_, c)| c >= need).map(|(h, _)| h).collect();
    let questionable =
        doubtful.into_iter().filter(|&(h, c)| c >= need && !failed.contains(&h)).map(|(h, _)| h).collect();
    Report { failed, questionable }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(failed: &[u8], questionable: &[u8]) -> Report {
        Report {
            failed: failed.iter().map(|i| Ipv4Addr::new(10, 0, 0, *i)).collect(),
            questionable: questionable.iter().map(|i| Ipv4Addr::new(10, 0, 0, *i)).collect(),
        }
    }

    #[test]
    fn thresholds() {
        assert_eq!([1, 2, 3, 4, 5].map(|n| Quorum::Majority.threshold(n)), [1, 2, 2, 3, 3]);
        assert_eq!([1, 3].map(|n| Quorum::Any.threshold(n)), [1, 1]);
        assert_eq!([0, 1, 3].map(|n| Quorum::All.threshold(n)), [1, 1, 3]);
        assert_eq!(Quorum::Majority.threshold(0), 1);
    }

    #[test]
    fn parse_round_trips() {
        for q in [Quorum::Majority, Quorum::Any, Quorum::All] {
            assert_eq!(Quorum::parse(q.as_str()), Some(q));
        }
        assert_eq!(Quorum::parse("most"), None);
    }

    #[test]
    fn one_of_three_is_not_a_majority_two_of_three_is() {
        let one = [r(&[1], &[]), r(&[], &[]), r(&[], &[])];
        assert_eq!(combine(&one, Quorum::Majority), r(&[], &[]));
        assert_eq!(combine(&one, Quorum::Any), r(&[1], &[]));
        let two = [r(&[1], &[]), r(&[1], &[]), r(&[], &[])];
        assert_eq!(combine(&two, Quorum::Majority), r(&[1], &[]));
        assert_eq!(combine(&two, Quorum::All), r(&[], &[]));
        let three = [r(&[1], &[]), r(&[1], &[]), r(&[1], &[])];
        assert_eq!(combine(&three, Quorum::All), r(&[1], &[]));
    }

    #[test]
    fn two_instances_need_both_for_a_majority() {
        assert_eq!(combine(&[r(&[1], &[]), r(&[], &[])], Quorum::Majority), r(&[], &[]));
        assert_eq!(combine(&[r(&[1], &[]), r(&[1], &[])], Quorum::Majority), r(&[1], &[]));
    }

    #[test]
    fn a_single_report_is_taken_as_it_is() {
        for q in [Quorum::Majority, Quorum::Any, Quorum::All] {
            assert_eq!(combine(&[r(&[1, 2], &[3])], q), r(&[1, 2], &[3]));
        }
    }

    #[test]
    fn no_reports_mean_no_failures() {
        assert_eq!(combine(&[], Quorum::Majority), Report::default());
    }

    #[test]
    fn failed_and_questionable_votes_add_up_to_questionable() {
        // 1: failed in one view, questionable in another → questionable by majority.
        // 2: questionable in two views → questionable. 3: one questionable view → nothing.
        let views = [r(&[1], &[2]), r(&[], &[1, 2, 3]), r(&[], &[])];
        assert_eq!(combine(&views, Quorum::Majority), r(&[], &[1, 2]));
        // Failed wins over questionable when the failed votes alone reach the quorum.
        let views = [r(&[1], &[]), r(&[1], &[]), r(&[], &[1])];
        assert_eq!(combine(&views, Quorum::Majority), r(&[1], &[]));
    }

    #[test]
    fn reports_serialize_as_ip_lists() {
        let json = serde_json::to_string(&r(&[1], &[2])).unwrap();
        assert_eq!(json, r#"{"failed":["10.0.0.1"],"questionable":["10.0.0.2"]}"#);
        let back: Report = serde_json::from_str(r#"{"failed":["10.0.0.1"]}"#).unwrap();
        assert_eq!(back, r(&[1], &[]));
    }
}
