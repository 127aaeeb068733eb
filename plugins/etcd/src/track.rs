//! The decisions of the etcd watcher, without any I/O: what one observation of the key
//! means for the route spec, and how long to wait before reconnecting.

use std::time::Duration;

use vpcrouter_plugin_api::{spec, RouteSpec};

/// First pause after a lost connection (before jitter).
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(200);
/// Longest pause between two connection attempts (before jitter).
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What one observation of the key calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A valid spec that differs from the last one sent: send it.
    Send(RouteSpec),
    /// A valid spec equal to the last one sent: nothing to do.
    Unchanged,
    /// The value is not a valid route spec (why); the last good spec stays.
    Invalid(String),
    /// The key is absent at the first look: wait for it to be put.
    Waiting,
    /// The key was there and is gone; whatever spec is in force stays.
    Deleted {
        /// True when a spec from this key was sent before.
        spec_in_force: bool,
    },
    /// Still absent, already reported.
    StillAbsent,
    /// This exact revision was handled already (a re-read after reconnecting).
    Seen,
    /// Older than what was already applied (never sent backwards).
    Stale,
}

/// Follows the key across reads and watch events.
#[derive(Debug, Default)]
pub struct Tracker {
    /// The last spec sent to the host.
    last_sent: Option<RouteSpec>,
    /// Whether the key existed at the last observation; `None` before the first.
    present: Option<bool>,
    /// Revision of the last observation applied.
    revision: i64,
}

impl Tracker {
    /// Applies one observation: `value` is the key's value (`None` when absent or deleted)
    /// and `revision` the key's mod revision (deletion revision, or the store's revision
    /// for an absent key).
    pub fn observe(&mut self, value: Option<&[u8]>, revision: i64) -> Verdict {
        if revision < self.revision {
            return Verdict::Stale;
        }
        let was = self.present;
        let Some(value) = value else {
            self.revision = revision;
            self.present = Some(false);
            return match was {
                None => Verdict::Waiting,
                Some(true) => Verdict::Deleted { spec_in_force: self.last_sent.is_some() },
                Some(false) => Verdict::StillAbsent,
            };
        };
        if revision == self.revision && was == Some(true) {
            return Verdict::Seen;
        }
        self.revision = revision;
        self.present = Some(true);
        match parse_value(value) {
            Err(why) => Verdict::Invalid(why),
            Ok(spec) if self.last_sent.as_ref() == Some(&spec) => Verdict::Unchanged,
            Ok(spec) => {
                self.last_sent = Some(spec.clone());
                Verdict::Send(spec)
            }
        }
    }

    /// Whether the key existed at the last observation (`None` before the first).
    pub fn present(&self) -> Option<bool> {
        self.present
    }
}

/// Parses a value of the key as a route spec; the error says what is wrong with it.
pub fn parse_value(value: &[u8]) -> Result<RouteSpec, String> {
    let text = std::str::from_utf8(value)
        .map_err(|e| format!("the value is not UTF-8 text ({e}); it must be a JSON route spec"))?;
    spec::parse_json(text).map_err(|e| e.to_string())
}

/// The pause before connection attempt number `failures` (1 after the first failure):
/// `BACKOFF_INITIAL` doubled per failure up to `BACKOFF_MAX`, then "equal jitter": half
/// of it fixed, the other half scaled by `jitter` (in `[0, 1)`).
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    vpcrouter_plugin_api::time::backoff(BACKOFF_INITIAL, BACKOFF_MAX, failures, jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[u8] = br#"{"10.1.0.0/16": ["10.0.0.2", "10.0.0.1"]}"#;
    const A_REWRITTEN: &[u8] = br#"{"10.1.0.0/16": ["10.0.0.2", "10.0.0.1", "10.0.0.2"]}"#;
    const B: &[u8] = br#"{"10.2.0.0/16": ["10.0.0.3"]}"#;

    fn sent(v: Verdict) -> String {
        match v {
            Verdict::Send(spec) => spec.to_json(),
            other => panic!("expected a spec to send, got {other:?}"),
        }
    }

    #[test]
    fn valid_values_are_sent_once_each() {
        let mut t = Tracker::default();
        assert_eq!(sent(t.observe(Some(A), 5)), r#"{"10.1.0.0/16":["10.0.0.2","10.0.0.1"]}"#);
        assert_eq!(t.observe(Some(A_REWRITTEN), 6), Verdict::Unchanged);
        assert_eq!(sent(t.observe(Some(B), 7)), r#"{"10.2.0.0/16":["10.0.0.3"]}"#);
        assert_eq!(sent(t.observe(Some(A), 8)), r#"{"10.1.0.0/16":["10.0.0.2","10.0.0.1"]}"#);
        assert_eq!(t.present(), Some(true));
    }

    #[test]
    fn invalid_values_keep_the_last_spec_and_say_why() {
        let mut t = Tracker::default();
        sent(t.observe(Some(A), 5));
        let cases: [(&[u8], &str); 6] = [
            (b"{not json", "not valid JSON"),
            (br#"{"10.1.0.0/16": ["10.0.0.9"], "10.1.0.0/16": []}"#, "'10.1.0.0/16' appears more than once"),
            (br#"{"2001:DB8::/32": ["10.0.0.9"]}"#, "write it as 2001:db8::/32"),
            (br#"{"10.1.0.1/16": ["10.0.0.1"]}"#, "host bits are set; the network is 10.1.0.0/16"),
            (br#"{"10.1.0.0/16": ["10.0.0."]}"#, "'10.0.0.' (a router of '10.1.0.0/16')"),
            (b"\xff\xfe", "not UTF-8"),
        ];
        for (rev, (value, why)) in (6..).zip(cases) {
            match t.observe(Some(value), rev) {
                Verdict::Invalid(reason) => assert!(reason.contains(why), "{reason}"),
                other => panic!("{other:?}"),
            }
        }
        // Back to the spec in force: nothing new to send.
        assert_eq!(t.observe(Some(A), 12), Verdict::Unchanged);
    }

    #[test]
    fn absent_deleted_and_recreated_keys() {
        let mut t = Tracker::default();
        assert_eq!(t.observe(None, 3), Verdict::Waiting);
        assert_eq!(t.observe(None, 4), Verdict::StillAbsent);
        assert_eq!(t.present(), Some(false));
        sent(t.observe(Some(A), 5));
        assert_eq!(t.observe(None, 6), Verdict::Deleted { spec_in_force: true });
        assert_eq!(t.observe(None, 9), Verdict::StillAbsent);
        // Put back as it was: the spec in force is the same one.
        assert_eq!(t.observe(Some(A), 10), Verdict::Unchanged);

        let mut t = Tracker::default();
        assert!(matches!(t.observe(Some(b"[]"), 2), Verdict::Invalid(_)));
        assert_eq!(t.observe(None, 3), Verdict::Deleted { spec_in_force: false });
    }

    #[test]
    fn rereads_after_reconnecting_are_not_repeated_and_never_go_back() {
        let mut t = Tracker::default();
        sent(t.observe(Some(A), 5));
        assert!(matches!(t.observe(Some(b"nope"), 6), Verdict::Invalid(_)));
        // The same revision read again (reconnect): not reported twice.
        assert_eq!(t.observe(Some(b"nope"), 6), Verdict::Seen);
        assert_eq!(t.observe(Some(B), 4), Verdict::Stale);
        assert_eq!(t.observe(None, 5), Verdict::Stale);
        // Changed while disconnected: the re-read sends it.
        sent(t.observe(Some(B), 12));
    }

    #[test]
    fn backoff_doubles_from_200_ms_to_5_s_with_jitter() {
        let ms = |f, j| backoff(f, j).as_millis();
        assert_eq!([ms(1, 0.0), ms(1, 0.999_999)], [100, 199]);
        assert_eq!([ms(2, 0.0), ms(3, 0.0), ms(4, 0.0), ms(5, 0.0)], [200, 400, 800, 1600]);
        assert_eq!(ms(6, 0.0), 2500, "capped at 5 s before jitter");
        assert_eq!(ms(6, 1.0), 5000);
        assert_eq!(ms(u32::MAX, 0.5), 3750);
        assert_eq!(ms(0, 0.0), 100, "no failure yet counts as the first");
        assert_eq!(ms(1, 7.0), 200, "jitter is clamped");
    }
}
