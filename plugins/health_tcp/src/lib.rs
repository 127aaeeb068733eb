//! The `tcp` health monitor: a TCP connect to every router's port, every interval.
//!
//! `vpcrouter -H tcp --tcp_check_port 22 --tcp_check_interval 2`
//! (port required, 1..=65535; interval default 2 s, 0.1 ..= 3600 s).
//!
//! * Each round of the SDK's schedule queues a non-blocking connect to every host; at most
//!   [`MAX_IN_FLIGHT`] are in progress at a time, waited for with `poll` (no thread per
//!   host), and queued ones start as slots free. Rounds come every interval / 4, fewer for
//!   very many hosts so that at most [`MAX_CONNECTS_PER_SEC`] connects start per second.
//! * A connect must succeed within min(0.75 × interval, [`MAX_CONNECT_TIMEOUT`]). A refused
//!   or unreachable connect fails the check at once; one that does not complete in time
//!   fails it at the timeout. Established connections are closed at once with a reset (no
//!   data is exchanged, no TIME_WAIT is left behind).
//! * Connects that cannot start before their round's deadline (more silent hosts than
//!   slots) are skipped and logged, never counted as checks or failures.
//! * The SDK's runner does the rest: the hold-down (10 × interval after the last failure)
//!   and the FULL report after the first host list and whenever it changes.

#![deny(unsafe_code)]

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use vpcrouter_plugin_api::health::TIMEOUT_SHARE;
use vpcrouter_plugin_api::prelude::*;

/// Connects in progress at most (each holds a file descriptor).
pub const MAX_IN_FLIGHT: usize = 256;
/// Connects per second above which fewer rounds per interval are started.
pub const MAX_CONNECTS_PER_SEC: f64 = 2_000.0;
/// Upper bound of the connect timeout, whatever the interval.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A queued connect that cannot start this long before its deadline is skipped.
const MIN_CONNECT_TIME: Duration = Duration::from_millis(5);
const INTERVAL_ARG: &str = "tcp_check_interval";
const PORT_ARG: &str = "tcp_check_port";

fn parse_port(args: &PluginArgs) -> Result<u16, String> {
    args.port(PORT_ARG)?.ok_or_else(|| format!("A port for the TCP health-test needs to be specified (--{PORT_ARG})."))
}

/// The `--tcp_check_interval` rules: default 2 s, 0.1 to 3600 s.
fn interval(args: &PluginArgs) -> Result<Duration, String> {
    args.seconds(INTERVAL_ARG, 2.0, 0.1..=3600.0)
}

/// The connect timeout for `interval`.
pub fn connect_timeout(interval: Duration) -> Duration {
    interval.mul_f64(TIMEOUT_SHARE).min(MAX_CONNECT_TIMEOUT)
}

/// The schedule for `interval`: the connect timeout, within the connect budget.
pub fn schedule(interval: Duration) -> Schedule {
    Schedule::every(interval).timeout(connect_timeout(interval)).max_probes_per_sec(MAX_CONNECTS_PER_SEC)
}

/// A connect in progress.
struct Conn {
    stream: TcpStream,
    ip: Ipv4,
    round: Round,
}

/// The prober: connects in flight and queued.
pub struct Connector {
    poll: Poll,
    events: Events,
    port: u16,
    log: Logger,
    max_in_flight: usize,
    queue: VecDeque<(Ipv4, Round)>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    in_flight: usize,
    skipped: u64,
}

impl Connector {
    fn new(port: u16, log: Logger, max_in_flight: usize) -> Result<Connector, String> {
        let poll = Poll::new().map_err(|e| format!("tcp health plugin cannot create a poller: {e}"))?;
        Ok(Connector {
            poll,
            events: Events::with_capacity(1024),
            port,
            log,
            max_in_flight,
            queue: VecDeque::new(),
            conns: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            skipped: 0,
        })
    }

    fn skip(&mut self, ip: Ipv4, round: Round, answers: &mut Answers) {
        self.skipped += 1;
        answers.skipped(ip, round.number);
    }

    /// Skips queued connects whose deadline is at or before `horizon` (the queue is in
    /// round order, so deadlines only grow along it).
    fn skip_due(&mut self, horizon: Instant, answers: &mut Answers) {
        while let Some(&(ip, round)) = self.queue.front().filter(|(_, r)| r.deadline <= horizon) {
            self.queue.pop_front();
            self.skip(ip, round, answers);
        }
    }

    /// Starts queued connects while there is room.
    fn start_connects(&mut self, answers: &mut Answers) {
        while self.in_flight < self.max_in_flight {
            let Some((ip, round)) = self.queue.pop_front() else { return };
            if round.deadline <= Instant::now() + MIN_CONNECT_TIME {
                self.skip(ip, round, answers);
                continue;
            }
            let addr = SocketAddr::V4(SocketAddrV4::new(ip.addr(), self.port));
            let mut stream = match TcpStream::connect(addr) {
                Ok(s) => s,
                Err(e) => {
                    self.log.debug(format!("TCP connect to {addr} failed: {e}"));
                    answers.down(ip, round.number, format!("TCP connect to port {} failed: {e}", self.port));
                    continue;
                }
            };
            let slot = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            if let Err(e) = self.poll.registry().register(&mut stream, Token(slot), Interest::WRITABLE) {
                self.log.warn(format!("cannot wait for a TCP connect to {addr}: {e}"));
                self.free.push(slot);
                continue;
            }
            self.conns[slot] = Some(Conn { stream, ip, round });
            self.in_flight += 1;
        }
    }

    fn close(&mut self, slot: usize) -> Option<Conn> {
        let mut conn = self.conns.get_mut(slot)?.take()?;
        // Deregistering can only fail for a stream that is not registered; it is closed next.
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.free.push(slot);
        self.in_flight -= 1;
        Some(conn)
    }

    /// A connect became writable: connected, refused, or (rarely) not yet done.
    fn on_ready(&mut self, slot: usize, answers: &mut Answers) {
        let Some(Some(conn)) = self.conns.get(slot) else { return };
        let result = match conn.stream.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => conn.stream.peer_addr().map(drop),
        };
        match result {
            Err(e) if e.kind() == ErrorKind::NotConnected => {}
            Err(e) if e.raw_os_error() == Some(115) => {} // EINPROGRESS
            Ok(()) => {
                if let Some(conn) = self.close(slot) {
                    // Reset instead of FIN: no TIME_WAIT for thousands of checks.
                    let _ = socket2::SockRef::from(&conn.stream).set_linger(Some(Duration::ZERO));
                    answers.up(conn.ip, conn.round.number);
                }
            }
            Err(e) => {
                if let Some(conn) = self.close(slot) {
                    self.log.debug(format!("TCP check of {}:{} failed: {e}", conn.ip, self.port));
                    answers.down(conn.ip, conn.round.number, format!("TCP connect to port {} failed: {e}", self.port));
                }
            }
        }
    }

    /// Gives up connects whose deadline passed (the SDK fails them at the deadline).
    fn cancel_expired(&mut self, now: Instant) {
        for slot in 0..self.conns.len() {
            if self.conns[slot].as_ref().is_some_and(|c| c.round.deadline <= now) {
                self.close(slot);
            }
        }
    }
}

impl Prober for Connector {
    /// Queues a connect to every host; connects still queued from earlier rounds are skipped.
    fn probe(&mut self, round: Round, hosts: &[Ipv4], answers: &mut Answers) {
        if !self.queue.is_empty() {
            self.log
                .warn(format!("TCP checks of {} hosts could not start within their round; skipped", self.queue.len()));
            while let Some((ip, old)) = self.queue.pop_front() {
                self.skip(ip, old, answers);
            }
        }
        self.queue.extend(hosts.iter().map(|ip| (*ip, round)));
        self.start_connects(answers);
    }

    /// Waits for connects until `until`, starting queued ones as slots free.
    fn wait(&mut self, until: Instant, answers: &mut Answers) {
        let timeout = until.saturating_duration_since(Instant::now());
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {
                let ready: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
                for slot in ready {
                    self.on_ready(slot, answers);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                self.log.warn(format!("poll failed: {e}"));
                std::thread::sleep(timeout);
            }
        }
        let now = Instant::now();
        self.cancel_expired(now);
        self.start_connects(answers);
        // What is still queued at its deadline never started: skipped before the SDK
        // judges the round.
        self.skip_due(until.max(now) + MIN_CONNECT_TIME, answers);
    }

    fn details(&self) -> serde_json::Value {
        serde_json::json!({ "skipped": self.skipped })
    }
}

/// The `tcp` health plugin.
pub struct Tcp;

impl PluginDescription for Tcp {
    const NAME: &'static str = "tcp";
    const DESCRIPTION: &'static str = "TCP connect to a port of every router";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn arguments() -> Vec<ArgSpec> {
        vec![
            ArgSpec::value(
                PORT_ARG,
                "PORT",
                "Port for TCP health-test, 1 to 65535, required (only for 'tcp' health monitor plugin)",
            )
            .required(),
            ArgSpec::value(
                INTERVAL_ARG,
                "SECS",
                "TCP health-test interval in seconds, default 2, 0.1 to 3600; a connect must \
                 succeed within min(0.75 x interval, 3 s) (only for 'tcp' health monitor plugin)",
            )
            .default("2"),
        ]
    }

    fn validate_config(args: &PluginArgs) -> Result<(), String> {
        interval(args)?;
        parse_port(args).map(drop)
    }
}

impl HealthPlugin for Tcp {
    type Prober = Connector;

    fn start(args: &PluginArgs, run: &HealthRun) -> Result<(Schedule, Connector), String> {
        let interval = interval(args)?;
        let port = parse_port(args)?;
        run.log().info("TCP health monitor plugin: Starting to watch instances.");
        Ok((schedule(interval), Connector::new(port, run.log().clone(), MAX_IN_FLIGHT)?))
    }
}

vpcrouter_plugin_api::export_plugin!(health: Tcp);

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::process::Command;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::thread::JoinHandle;

    use vpcrouter_plugin_api::health::Tracker;
    use vpcrouter_plugin_api::testkit::{context, nothing_within, start_health, texts, HealthHarness};

    use super::*;

    fn start(interval: &str, port: u16) -> HealthHarness {
        let port = port.to_string();
        start_health::<Tcp>(&[(INTERVAL_ARG, interval), (PORT_ARG, port.as_str())]).unwrap()
    }

    /// A listener on `ip:port` that accepts and drops connections until dropped.
    struct Listener {
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl Listener {
        fn bind(ip: &str, port: u16) -> (Listener, u16) {
            let l = TcpListener::bind((ip, port)).expect("bind a loopback listener");
            let port = l.local_addr().unwrap().port();
            l.set_nonblocking(true).unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            let thread = std::thread::spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    if l.accept().is_err() {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            });
            (Listener { stop, thread: Some(thread) }, port)
        }
    }

    impl Drop for Listener {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// A veth into a namespace of our own, with no address on the far side: SYNs to
    /// `silent` (198.19.N.2) go unanswered. `tag` keeps tests running at once apart.
    struct SilentNet {
        ns: String,
        here: String,
        silent: String,
    }

    impl SilentNet {
        fn new(tag: u32) -> SilentNet {
            let pid = std::process::id();
            let ns = format!("vpcr-tcp{tag}-{pid}");
            let (here, there) = (format!("vt{tag}i{}", pid % 1_000_000), format!("vt{tag}n{}", pid % 1_000_000));
            let net = format!("198.19.{}", (pid * 2 + tag) % 250);
            let ip = |args: &[&str]| {
                let out = Command::new("ip").args(args).output().expect("run ip");
                assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            };
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
            ip(&["netns", "add", &ns]);
            let s = SilentNet { ns: ns.clone(), here: here.clone(), silent: format!("{net}.2") };
            ip(&["link", "add", &here, "type", "veth", "peer", "name", &there, "netns", &ns]);
            ip(&["addr", "add", &format!("{net}.1/30"), "dev", &here]);
            ip(&["link", "set", &here, "up"]);
            ip(&["-n", &ns, "link", "set", &there, "up"]);
            s
        }
    }

    impl Drop for SilentNet {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", &self.here]).output();
            let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        }
    }

    #[test]
    fn options_are_checked() {
        let check = |pairs: &[(&str, &str)]| Tcp::validate_config(&PluginArgs::from_pairs(pairs.iter().copied()));
        assert!(check(&[(PORT_ARG, "22")]).is_ok());
        assert!(check(&[(PORT_ARG, "65535"), (INTERVAL_ARG, "0.1")]).is_ok());
        assert_eq!(check(&[]).unwrap_err(), "A port for the TCP health-test needs to be specified (--tcp_check_port).");
        for bad in ["0", "65536", "-1", "ssh", ""] {
            let e = check(&[(PORT_ARG, bad)]).unwrap_err();
            assert!(e.contains("--tcp_check_port must be a port number between 1 and 65535"), "{bad}: {e}");
        }
        for bad in ["0", "0.01", "4000", "two"] {
            let e = check(&[(PORT_ARG, "22"), (INTERVAL_ARG, bad)]).unwrap_err();
            assert!(e.contains("--tcp_check_interval"), "{bad}: {e}");
        }
        assert_eq!(connect_timeout(Duration::from_secs(1)), Duration::from_millis(750));
        assert_eq!(connect_timeout(Duration::from_secs(60)), MAX_CONNECT_TIMEOUT);
        let s = schedule(Duration::from_secs(2));
        assert_eq!((s.timeout, s.hold_down), (Duration::from_millis(1500), Duration::from_secs(20)));
        assert_eq!(s.rounds_for(1_000), 4);
        assert_eq!(s.rounds_for(2_000), 2, "at most 2,000 connects per second");
        assert_eq!(schedule(Duration::from_secs(10)).timeout, MAX_CONNECT_TIMEOUT);
    }

    #[test]
    fn a_stopped_listener_fails_at_once_and_is_eligible_after_the_hold_down() {
        let net = 100 + std::process::id() % 100;
        let (a, b) = (format!("127.{net}.0.1"), format!("127.{net}.0.2"));
        let (la, port) = Listener::bind(&a, 0);
        let (_lb, _) = Listener::bind(&b, port);
        let r = start("0.2", port);
        r.send_hosts(&[&a, &b]);
        assert_eq!(r.next_report(Duration::from_secs(2)), Some(HealthReport::default()));
        assert!(nothing_within(&r.reports, Duration::from_millis(800)), "{:?}", r.logs);

        drop(la);
        let stopped = Instant::now();
        let report = r.next_report(Duration::from_secs(2)).expect("a failure report");
        let took = stopped.elapsed();
        assert_eq!(texts(&report.failed), vec![a.clone()]);
        assert!(took <= Duration::from_millis(200 + 100), "refusal noticed after {took:?}");
        assert!(
            r.logs.contains(LogLevel::Info, &format!("Host {a} failed a check: TCP connect to port {port} failed")),
            "{:?}",
            r.logs
        );

        let (_la, _) = Listener::bind(&a, port);
        let back = Instant::now();
        let report = r.next_report(Duration::from_secs(5)).expect("eligible again");
        let held = back.elapsed();
        assert_eq!(report, HealthReport::default());
        assert!(held >= Duration::from_millis(2000 - 250) && held <= Duration::from_millis(2000 + 300), "{held:?}");
        assert!(r.logs.contains(LogLevel::Info, &format!("Host {a} passes checks again")));
        let (stats, details, params) = r.status();
        assert!(stats.checks >= 60, "{stats:?}");
        assert!(stats.failures >= 1, "{stats:?}");
        assert_eq!(details["probes_per_interval"], 4, "{details}");
        assert_eq!(details["timeout_secs"], 0.15, "{details}");
        assert_eq!(details["skipped"], 0, "{details}");
        assert!(params.contains(&(PORT_ARG.to_string(), port.to_string())), "{params:?}");
        let t = Instant::now();
        r.stop().unwrap();
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(r.logs.contains(LogLevel::Info, "TCP health monitor plugin: Starting to watch instances."));
        assert!(r.logs.contains(LogLevel::Info, "tcp health monitor plugin: Stopped"));
    }

    #[test]
    fn a_host_that_never_answers_fails_at_the_timeout() {
        let net = SilentNet::new(0);
        let silent = net.silent.clone();
        let (_l, port) = Listener::bind("127.0.0.1", 0);
        let r = start("0.2", port);
        let t = Instant::now();
        r.send_hosts(&["127.0.0.1", &silent]);
        let mut report = r.next_report(Duration::from_secs(2)).expect("a report");
        if report.failed.is_empty() {
            report = r.next_report(Duration::from_secs(2)).expect("a failure report");
        }
        assert_eq!(texts(&report.failed), vec![silent.clone()]);
        // The first round starts at once; its connects time out after 0.15 s.
        assert!(
            t.elapsed() >= Duration::from_millis(140) && t.elapsed() <= Duration::from_millis(450),
            "{:?}",
            t.elapsed()
        );
        assert!(r.logs.contains(LogLevel::Info, &format!("Host {silent} failed a check: no answer within 0.15 s")));
        r.stop().unwrap();
    }

    #[test]
    fn connects_that_cannot_start_in_their_round_are_skipped_not_failed() {
        // One slot, held by a silent host until the deadline: the listening host's connect
        // never starts, so its round counts neither as a check nor as a failure.
        let net = SilentNet::new(1);
        let (_l, port) = Listener::bind("127.0.0.1", 0);
        let (silent, up) = (Ipv4::parse(&net.silent).unwrap(), Ipv4::new(127, 0, 0, 1));
        let (ctx, _logs) = context("tcp");
        let mut c = Connector::new(port, ctx.log, 1).unwrap();
        let timeout = Duration::from_millis(100);
        let mut t = Tracker::new(timeout, Duration::from_secs(1));
        t.set_hosts(&[silent, up]);
        let mut answers = Answers::default();
        let round = t.start_round(Instant::now());
        c.probe(round, &[silent, up], &mut answers);
        let mut changes = t.apply(&mut answers, Instant::now());
        while Instant::now() < round.deadline + Duration::from_millis(20) {
            c.wait(Instant::now() + Duration::from_millis(5), &mut answers);
            changes.extend(t.apply(&mut answers, Instant::now()));
            changes.extend(t.expire(Instant::now()));
        }
        assert_eq!(
            changes,
            vec![vpcrouter_plugin_api::health::Change::Failed(silent, "no answer within 0.10 s".into())]
        );
        assert_eq!((t.checks, t.failures), (1, 1), "the skipped connect is no check");
        assert_eq!(c.details()["skipped"], 1);

        // With room for both, the listening host answers in the next round.
        let round = t.start_round(Instant::now());
        c.max_in_flight = 2;
        c.probe(round, &[silent, up], &mut answers);
        while Instant::now() < round.deadline + Duration::from_millis(20) {
            c.wait(Instant::now() + Duration::from_millis(5), &mut answers);
            t.apply(&mut answers, Instant::now());
            t.expire(Instant::now());
        }
        assert_eq!(t.report(Instant::now()).failed.into_vec(), vec![silent]);
        assert_eq!((t.checks, c.details()["skipped"].as_u64()), (3, Some(1)));
    }
}
