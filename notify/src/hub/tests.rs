use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use vpcrouter_engine::{Announcement, Announcer};
use vpcrouter_plugin_api::sync::lock;

use super::*;
use crate::DEFAULT_QUEUE;

/// How long a test waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(10);

/// Polls `done` until it holds; panics after [`PATIENCE`].
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Event `i`: a reconcile error whose message is `i`.
fn event(i: usize) -> Event {
    Event::from(Announcement::ReconcileError(i.to_string()))
}

/// A sink that records the messages it got; while its gate is closed, deliveries wait (until
/// it is opened or the sink stopped, at most [`PATIENCE`]). `fail`: each delivery then fails.
#[derive(Default)]
struct Held {
    state: Mutex<HeldState>,
    changed: Condvar,
    fail: Option<String>,
}

#[derive(Default)]
struct HeldState {
    open: bool,
    stopped: bool,
    entered: usize,
    got: Vec<String>,
}

impl Held {
    fn open() -> Arc<Held> {
        let held = Held::default();
        lock(&held.state).open = true;
        Arc::new(held)
    }

    fn closed() -> Arc<Held> {
        Arc::new(Held::default())
    }

    fn failing(error: &str) -> Arc<Held> {
        let held = Held { fail: Some(error.into()), ..Held::default() };
        lock(&held.state).open = true;
        Arc::new(held)
    }

    fn release(&self) {
        lock(&self.state).open = true;
        self.changed.notify_all();
    }

    fn entered(&self) -> usize {
        lock(&self.state).entered
    }

    fn got(&self) -> Vec<String> {
        lock(&self.state).got.clone()
    }
}

impl Sink for Held {
    fn deliver(&self, event: &Rendered) -> Result<(), String> {
        let mut st = lock(&self.state);
        st.entered += 1;
        let waiting = |s: &mut HeldState| !s.open && !s.stopped;
        st = self.changed.wait_timeout_while(st, PATIENCE, waiting).unwrap_or_else(|p| p.into_inner()).0;
        if st.stopped {
            return Err("stopped".into());
        }
        let json: Value = serde_json::from_str(&event.json).map_err(|e| e.to_string())?;
        st.got.push(json["message"].as_str().unwrap_or(event.event).to_string());
        self.fail.clone().map_or(Ok(()), Err)
    }

    fn stop(&self, _within: Duration) -> Result<(), String> {
        lock(&self.state).stopped = true;
        self.changed.notify_all();
        Ok(())
    }
}

/// A sink whose deliveries never return, nor (with `stop_hangs`) its stop.
struct Hung {
    stop_hangs: bool,
}

impl Sink for Hung {
    fn deliver(&self, _: &Rendered) -> Result<(), String> {
        // Simulates a notifier stuck for good (the test ends long before).
        std::thread::sleep(Duration::from_secs(3600));
        Err("hung".into())
    }

    fn stop(&self, _within: Duration) -> Result<(), String> {
        if self.stop_hangs {
            std::thread::sleep(Duration::from_secs(3600));
        }
        Ok(())
    }
}

fn only(notifiers: &Notifiers) -> NotifierStatus {
    let all = notifiers.status();
    assert_eq!(all.len(), 1, "{all:?}");
    all[0].clone()
}

#[test]
fn a_full_queue_drops_its_oldest_events_and_delivers_the_newest_in_order() {
    let (capacity, extra) = (5, 3);
    let notifiers = Notifiers::new("vpc-1");
    let held = Held::closed();
    notifiers.add("held", held.clone(), capacity).unwrap();
    notifiers.send(event(0));
    wait_until("event 0 is in flight", || held.entered() == 1);
    for i in 1..=capacity + extra {
        notifiers.send(event(i));
    }
    let st = only(&notifiers);
    assert_eq!((st.queued, st.dropped, st.delivered), (capacity as u64, extra as u64, 0), "{st:?}");
    held.release();
    wait_until("all queued events are delivered", || only(&notifiers).delivered == 1 + capacity as u64);
    let newest: Vec<String> = (1 + extra..=capacity + extra).map(|i| i.to_string()).collect();
    assert_eq!(held.got(), [vec!["0".to_string()], newest].concat());
    let st = only(&notifiers);
    assert_eq!((st.queued, st.dropped, st.failed), (0, extra as u64, 0), "{st:?}");
    notifiers.stop(Duration::from_secs(1));
}

#[test]
fn a_hung_notifier_neither_blocks_sending_nor_delays_the_stop() {
    let notifiers = Notifiers::new("vpc-1");
    notifiers.add("hung", Arc::new(Hung { stop_hangs: true }), DEFAULT_QUEUE).unwrap();
    let start = Instant::now();
    for i in 0..10_000 {
        notifiers.send(event(i));
    }
    assert!(start.elapsed() < Duration::from_secs(1), "sending took {:?}", start.elapsed());
    let st = only(&notifiers);
    assert_eq!(st.queued, DEFAULT_QUEUE as u64, "{st:?}");
    let start = Instant::now();
    notifiers.stop(Duration::from_millis(200));
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(1), "stop took {took:?}");
    let st = only(&notifiers);
    assert_eq!((st.dropped, st.queued, st.delivered, st.failed), (10_000, 0, 0, 0), "{st:?}");
}

#[test]
fn stop_makes_the_delivery_in_flight_give_up_and_drops_what_is_queued() {
    let notifiers = Notifiers::new("vpc-1");
    let held = Held::closed();
    notifiers.add("held", held.clone(), DEFAULT_QUEUE).unwrap();
    for i in 0..4 {
        notifiers.send(event(i));
    }
    wait_until("event 0 is in flight", || held.entered() == 1);
    let start = Instant::now();
    notifiers.stop(Duration::from_secs(2));
    // Half the time for the queue to drain (it cannot: the delivery hangs), then the stop.
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(1800), "stop took {took:?}");
    let st = only(&notifiers);
    assert_eq!((st.failed, st.dropped, st.queued), (1, 3, 0), "{st:?}");
    assert_eq!(st.last_error.as_deref(), Some("stopped"));
    notifiers.send(event(9));
    assert_eq!(only(&notifiers), st, "events after the stop are not taken");
    assert!(notifiers.add("late", Held::open(), 1).unwrap_err().contains("stopped"));
    notifiers.stop(Duration::from_secs(5));
}

/// Takes 50 ms per event.
struct Slow(Mutex<Vec<String>>);
impl Sink for Slow {
    fn deliver(&self, event: &Rendered) -> Result<(), String> {
        std::thread::sleep(Duration::from_millis(50));
        lock(&self.0).push(event.event.to_string());
        Ok(())
    }
}

#[test]
fn a_stop_gives_a_healthy_notifier_time_to_deliver_what_is_queued() {
    let notifiers = Notifiers::new("vpc-1");
    let slow = Arc::new(Slow(Mutex::default()));
    notifiers.add("slow", slow.clone(), DEFAULT_QUEUE).unwrap();
    for i in 0..5 {
        notifiers.send(event(i));
    }
    let start = Instant::now();
    notifiers.stop(Duration::from_secs(2));
    assert!(
        start.elapsed() < Duration::from_millis(800),
        "stop waited more than the deliveries: {:?}",
        start.elapsed()
    );
    let st = only(&notifiers);
    assert_eq!((st.delivered, st.dropped, st.queued), (5, 0, 0), "{st:?}");
    assert_eq!(lock(&slow.0).len(), 5);
}

#[test]
fn failed_deliveries_are_counted_with_the_last_error() {
    let notifiers = Notifiers::new("vpc-1");
    notifiers.add("failing", Held::failing("connection refused"), DEFAULT_QUEUE).unwrap();
    let before = SystemTime::now();
    for i in 0..3 {
        notifiers.send(event(i));
    }
    wait_until("3 deliveries failed", || only(&notifiers).failed == 3);
    let st = only(&notifiers);
    assert_eq!((st.delivered, st.dropped, st.queued), (0, 0, 0), "{st:?}");
    assert_eq!(st.last_error.as_deref(), Some("connection refused"));
    assert!(st.last_error_time.is_some_and(|t| t >= before), "{st:?}");
    notifiers.stop(Duration::from_secs(1));
}

#[test]
fn each_notifier_gets_every_event_whatever_the_others_do() {
    let notifiers = Notifiers::new("vpc-1");
    let (ok, failing, stuck) = (Held::open(), Held::failing("HTTP 500"), Held::closed());
    notifiers.add("ok", ok.clone(), DEFAULT_QUEUE).unwrap();
    notifiers.add("failing", failing.clone(), DEFAULT_QUEUE).unwrap();
    notifiers.add("stuck", stuck.clone(), DEFAULT_QUEUE).unwrap();
    for i in 0..10 {
        notifiers.send(event(i));
    }
    wait_until("ok and failing got every event", || {
        let st = notifiers.status();
        st[0].delivered == 10 && st[1].failed == 10
    });
    let all: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    assert_eq!((ok.got(), failing.got()), (all.clone(), all));
    let st = notifiers.status();
    let names: Vec<&str> = st.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["ok", "failing", "stuck"]);
    assert_eq!((st[0].failed, st[0].last_error.as_deref(), st[1].delivered), (0, None, 0), "{st:?}");
    assert_eq!((st[2].delivered, st[2].queued), (0, 9), "{st:?}");
    notifiers.stop(Duration::from_secs(1));
    assert_eq!(notifiers.status()[2].dropped, 9, "the stuck notifier's queue was dropped at stop");
}

#[test]
fn a_panicking_notifier_counts_a_failure_and_goes_on() {
    struct Panics;
    impl Sink for Panics {
        fn deliver(&self, event: &Rendered) -> Result<(), String> {
            assert!(!event.json.contains("\"0\""), "a bug in the notifier");
            Ok(())
        }
    }
    let notifiers = Notifiers::new("vpc-1");
    notifiers.add("panics", Arc::new(Panics), DEFAULT_QUEUE).unwrap();
    notifiers.send(event(0));
    notifiers.send(event(1));
    wait_until("both events are done", || only(&notifiers).delivered == 1);
    let st = only(&notifiers);
    assert_eq!(st.failed, 1, "{st:?}");
    assert!(st.last_error.is_some_and(|e| e.contains("panicked")));
    notifiers.stop(Duration::from_secs(1));
}

#[test]
fn announcements_are_sent_rendered_with_the_vpc() {
    let notifiers = Notifiers::new("vpc-42");
    let ok = Held::open();
    notifiers.add("ok", ok.clone(), DEFAULT_QUEUE).unwrap();
    let announcer: &dyn Announcer = &notifiers;
    announcer.announce(Announcement::Leader);
    wait_until("the event is delivered", || only(&notifiers).delivered == 1);
    assert_eq!(ok.got(), ["leader"]);
    notifiers.stop(Duration::from_secs(1));
}

#[test]
fn notifiers_are_refused_twice_or_without_a_queue() {
    let notifiers = Notifiers::new("vpc-1");
    notifiers.add("a", Held::open(), 1).unwrap();
    assert!(notifiers.add("a", Held::open(), 1).unwrap_err().contains("given twice"));
    assert!(notifiers.add("b", Held::open(), 0).unwrap_err().contains("at least one event"));
    assert_eq!(notifiers.status().len(), 1);
    notifiers.stop(Duration::from_secs(1));
}

#[test]
fn clones_share_the_notifiers() {
    let notifiers = Notifiers::new("vpc-1");
    let clone = notifiers.clone();
    let ok = Held::open();
    clone.add("ok", ok.clone(), DEFAULT_QUEUE).unwrap();
    notifiers.send(event(7));
    wait_until("the clone's notifier got it", || ok.got() == ["7"]);
    assert_eq!(clone.status(), notifiers.status());
    clone.stop(Duration::from_secs(1));
}

#[test]
fn in_cluster_mode_only_the_leader_speaks() {
    let ip = |s: &str| s.parse().unwrap();
    let names = |events: Vec<Event>, leader_only| {
        let mut notifiers = Notifiers::new("vpc-1");
        notifiers.only_while_leading(leader_only);
        let ok = Held::open();
        notifiers.add("ok", ok.clone(), DEFAULT_QUEUE).unwrap();
        let n = events.len();
        for e in events {
            notifiers.send(e);
        }
        notifiers.send(Announcement::ReconcileError("end".into()).into());
        notifiers.send(Announcement::Leader.into());
        notifiers.send(Announcement::ReconcileError("end".into()).into());
        wait_until("the last event is delivered", || ok.got().last().map(String::as_str) == Some("end"));
        notifiers.stop(Duration::from_secs(1));
        let got = ok.got();
        assert!(got.len() <= n + 3, "{got:?}");
        got
    };
    let events = || -> Vec<Event> {
        vec![
            Announcement::Follower.into(),
            Announcement::RouterDown(ip("10.0.0.1")).into(),
            Announcement::Leader.into(),
            Announcement::RouterUp(ip("10.0.0.1")).into(),
            Announcement::Follower.into(),
            Event::Drained { router: ip("10.0.0.2"), reason: "kernel".into() },
            Announcement::Follower.into(),
        ]
    };
    assert_eq!(names(events(), true), ["leader", "router_up", "follower", "leader", "end"]);
    assert_eq!(
        names(events(), false),
        ["follower", "router_down", "leader", "router_up", "follower", "drained", "follower", "end", "leader", "end"]
    );
}
