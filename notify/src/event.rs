//! The events notifiers get, and their JSON: one object per event with `event` (its name),
//! `time` (RFC 3339 UTC, milliseconds), `vpc` (the VPC id) and the event's own fields.

use std::net::Ipv4Addr;
use std::time::SystemTime;

use serde_json::Value;
use vpcrouter_engine::Announcement;

/// Something notifiers are told: what the engine announces, or a change of the drains.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Routes moved, a failover ended, a router's health or this instance's role changed, a
    /// reconcile failed.
    Engine(Announcement),
    /// A router was drained (maintenance mode).
    Drained {
        /// The router.
        router: Ipv4Addr,
        /// The drain's reason.
        reason: String,
    },
    /// A router's drain was lifted.
    Undrained {
        /// The router.
        router: Ipv4Addr,
        /// The reason the drain had (`""` when unknown).
        reason: String,
    },
}

impl From<Announcement> for Event {
    fn from(a: Announcement) -> Event {
        Event::Engine(a)
    }
}

impl Event {
    /// The event's name, its JSON's `event` field (e.g. `route_changed`).
    pub fn name(&self) -> &'static str {
        match self {
            Event::Engine(a) => match a {
                Announcement::RouteChanged { .. } => "route_changed",
                Announcement::Failover { .. } => "failover",
                Announcement::RouterDown(_) => "router_down",
                Announcement::RouterUp(_) => "router_up",
                Announcement::Leader => "leader",
                Announcement::Follower => "follower",
                Announcement::ReconcileError(_) => "reconcile_error",
            },
            Event::Drained { .. } => "drained",
            Event::Undrained { .. } => "undrained",
        }
    }

    /// The event's own fields, in the order the JSON shows them.
    fn fields(&self) -> Vec<(&'static str, Value)> {
        let ip = |ip: &Ipv4Addr| Value::from(ip.to_string());
        match self {
            Event::Engine(a) => announced_fields(a),
            Event::Drained { router, reason } | Event::Undrained { router, reason } => {
                vec![("router", ip(router)), ("reason", reason.as_str().into())]
            }
        }
    }
}

/// The fields of an engine's announcement, in the order the JSON shows them.
fn announced_fields(a: &Announcement) -> Vec<(&'static str, Value)> {
    let ip = |ip: &Ipv4Addr| Value::from(ip.to_string());
    let maybe = |router: &Option<Ipv4Addr>| router.as_ref().map_or(Value::Null, ip);
    match a {
        Announcement::RouteChanged { cidr, route_table, router, old_router, reason } => vec![
            ("cidr", cidr.as_str().into()),
            ("route_table", route_table.as_str().into()),
            ("router", maybe(router)),
            ("old_router", maybe(old_router)),
            ("reason", reason.as_str().into()),
        ],
        Announcement::Failover { routers, routes_moved, seconds } => vec![
            ("routers", Value::Array(routers.iter().map(ip).collect())),
            ("routes_moved", (*routes_moved).into()),
            ("seconds", (*seconds).into()),
        ],
        Announcement::RouterDown(router) | Announcement::RouterUp(router) => vec![("router", ip(router))],
        Announcement::Leader | Announcement::Follower => Vec::new(),
        Announcement::ReconcileError(message) => vec![("message", message.as_str().into())],
    }
}

/// One event as it is sent: rendered once, shared by every notifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The event's name (e.g. `route_changed`), for logs and for notifiers that route by it.
    pub event: &'static str,
    /// The JSON object: `event`, `time`, `vpc`, then the event's fields.
    pub json: String,
}

impl Rendered {
    /// `event` in VPC `vpc` at `time`.
    pub fn new(event: &Event, vpc: &str, time: SystemTime) -> Rendered {
        let mut fields = vec![
            ("event", Value::from(event.name())),
            ("time", Value::from(vpcrouter_plugin_api::time::rfc3339(time))),
            ("vpc", Value::from(vpc)),
        ];
        fields.extend(event.fields());
        // Written by hand to keep this order (serde_json's map sorts its keys).
        let members: Vec<String> = fields.iter().map(|(k, v)| format!("{}:{v}", Value::from(*k))).collect();
        Rendered { event: event.name(), json: format!("{{{}}}", members.join(",")) }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::{json, Map};
    use Announcement::*;

    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("an IPv4 address")
    }

    fn parsed(event: &Event) -> Map<String, Value> {
        let at = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        let r = Rendered::new(event, "vpc-1", at);
        assert_eq!(r.event, event.name());
        let Value::Object(map) = serde_json::from_str(&r.json).expect("valid JSON") else { panic!("{}", r.json) };
        assert_eq!(map["event"], event.name(), "{}", r.json);
        assert_eq!(map["time"], "2026-11-18T11:06:40.123Z");
        assert_eq!(map["vpc"], "vpc-1");
        map
    }

    /// The event's own fields: the parsed object without `event`, `time` and `vpc`.
    fn own(event: &Event) -> Value {
        let mut map = parsed(event);
        for common in ["event", "time", "vpc"] {
            map.remove(common);
        }
        Value::Object(map)
    }

    fn changed(router: Option<Ipv4Addr>, old_router: Option<Ipv4Addr>) -> Event {
        let (cidr, route_table, reason) = ("10.55.0.0/16".into(), "rtb-1".into(), "router failed".into());
        RouteChanged { cidr, route_table, router, old_router, reason }.into()
    }

    #[test]
    fn each_event_has_exactly_the_documented_fields_and_types() {
        let cases = [
            (
                changed(Some(ip("10.0.0.2")), Some(ip("10.0.0.1"))),
                json!({"cidr": "10.55.0.0/16", "route_table": "rtb-1", "router": "10.0.0.2", "old_router": "10.0.0.1", "reason": "router failed"}),
            ),
            (
                changed(None, None),
                json!({"cidr": "10.55.0.0/16", "route_table": "rtb-1", "router": null, "old_router": null, "reason": "router failed"}),
            ),
            (
                Failover { routers: vec![ip("10.0.0.1"), ip("10.0.0.3")], routes_moved: 4, seconds: 1.5 }.into(),
                json!({"routers": ["10.0.0.1", "10.0.0.3"], "routes_moved": 4, "seconds": 1.5}),
            ),
            (RouterDown(ip("10.0.0.1")).into(), json!({"router": "10.0.0.1"})),
            (RouterUp(ip("10.0.0.1")).into(), json!({"router": "10.0.0.1"})),
            (Leader.into(), json!({})),
            (Follower.into(), json!({})),
            (
                Event::Drained { router: ip("10.0.0.2"), reason: "kernel".into() },
                json!({"router": "10.0.0.2", "reason": "kernel"}),
            ),
            (
                Event::Undrained { router: ip("10.0.0.2"), reason: "".into() },
                json!({"router": "10.0.0.2", "reason": ""}),
            ),
            (ReconcileError("EC2 said no".into()).into(), json!({"message": "EC2 said no"})),
        ];
        for (event, fields) in cases {
            assert_eq!(own(&event), fields, "{event:?}");
        }
        let moved = parsed(&Failover { routers: vec![], routes_moved: 7, seconds: 2.0 }.into());
        assert!(moved["routes_moved"].is_u64() && moved["seconds"].is_f64(), "{moved:?}");
    }

    #[test]
    fn names_are_the_documented_ones() {
        let events: [Event; 9] = [
            changed(None, None),
            Failover { routers: vec![], routes_moved: 0, seconds: 0.0 }.into(),
            RouterDown(ip("10.0.0.1")).into(),
            RouterUp(ip("10.0.0.1")).into(),
            Leader.into(),
            Follower.into(),
            Event::Drained { router: ip("10.0.0.1"), reason: String::new() },
            Event::Undrained { router: ip("10.0.0.1"), reason: String::new() },
            ReconcileError(String::new()).into(),
        ];
        let names: Vec<&str> = events.iter().map(Event::name).collect();
        assert_eq!(
            names,
            [
                "route_changed", "failover", "router_down", "router_up", "leader", "follower", "drained", "undrained",
                "reconcile_error"
            ]
        );
    }

    #[test]
    fn the_json_starts_with_event_time_and_vpc_and_escapes_strings() {
        let r = Rendered::new(&ReconcileError("a \"quoted\"\nline".into()).into(), "vpc-1", UNIX_EPOCH);
        assert!(r.json.starts_with(r#"{"event":"reconcile_error","time":"1970-01-01T00:00:00.000Z","vpc":"vpc-1","#));
        assert_eq!(serde_json::from_str::<Value>(&r.json).unwrap()["message"], "a \"quoted\"\nline");
    }
}
