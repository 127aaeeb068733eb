//! The `tcp` health monitor: a TCP connect to every router's port, every interval.
//!
//! `vpcrouter -H tcp --tcp_check_port 22 --tcp_check_interval 2`
//! (port required, 1..=65535; interval default 2 s, 0.1 ..= 3600 s).
//!
//! * One thread starts a round of non-blocking connects to every host every interval / k,
//!   at most [`MAX_IN_FLIGHT`] at a time, and waits for them with `poll` (no thread per
//!   host). k is 4, lowered for very many hosts so that at most [`MAX_CONNECTS_PER_SEC`]
//!   connects start per second, but never below 1.
//! * A connect must succeed within min(0.75 × interval, [`MAX_CONNECT_TIMEOUT`]). A
//!   refused or unreachable connect fails the check at once (so a closed port is noticed
//!   within interval / k); one that does not complete in time fails it at the timeout
//!   (so a silent host is noticed 0.75 to 1.0 interval after its last answer, with k = 4). Established connections are closed at once with a
//!   reset (no data is exchanged, no TIME_WAIT is left behind).
//! * A failed host stays failed for 10 × interval after its last failed check, and is
//!   checked meanwhile; then it is eligible again. Routes never fail back by themselves.
//! * The FULL report (failed hosts) is sent once after the first host list and then
//!   whenever it changes.
//! * A round that cannot finish in time (overload) is logged; its unstarted connects are
//!   skipped rather than counted as failures.

#![deny(unsafe_code)]

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use vpcrouter_health_common::{
    joined, parse_hosts, parse_interval, probes_per_interval, Change, Publisher, Stats, Tracker,
    HOLD_DOWN_INTERVALS, PROBES_PER_INTERVAL, TIMEOUT_SHARE,
};
use vpcrouter_plugin_api::export::PluginDescription;
use vpcrouter_plugin_api::worker::{StopToken, Worker};
use vpcrouter_plugin_api::{
    ArgSpec, HealthPlugin, HealthReport, HostList, Logger, PluginArgs, PluginContext, RReceiver,
    RSender,
};

/// Connects in progress at most (each holds a file descriptor).
pub const MAX_IN_FLIGHT: usize = 256;
/// Connects per second above which fewer rounds per interval are started.
pub const MAX_CONNECTS_PER_SEC: f64 = 2_000.0;
/// Upper bound of the connect timeout, whatever the interval.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const INTERVAL_ARG: &str = "tcp_check_interval";
const PORT_ARG: &str = "tcp_check_port";
/// Longest wait before the thread looks at its queues and the stop signal again.
const TICK: Duration = Duration::from_millis(50);
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

fn parse_port(args: &PluginArgs) -> Result<u16, String> {
    let raw = args.get(PORT_ARG).ok_or_else(|| {
        format!("A port for the TCP health-test needs to be specified (--{PORT_ARG}).")
    })?;
    match raw.trim().parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(p as u16),
        _ => Err(format!("--{PORT_ARG} must be a port number between 1 and 65535 (got '{raw}')")),
    }
}

/// The connect timeout for `interval` seconds.
pub fn connect_timeout(interval: f64) -> Duration {
    Duration::from_secs_f64(interval * TIMEOUT_SHARE).min(MAX_CONNECT_TIMEOUT)
}

/// A connect in progress.
struct Conn {
    stream: TcpStream,
    ip: Ipv4Addr,
    round: u64,
    deadline: Instant,
}

#[derive(Debug, Default)]
struct TcpStats {
    rounds: AtomicU64,
    late_rounds: AtomicU64,
    skipped: AtomicU64,
    probes_per_interval: AtomicU64,
}

/// The prober, owned by its thread.
struct Prober {
    poll: Poll,
    port: u16,
    log: Logger,
    interval: f64,
    tracker: Tracker,
    targets: Vec<Ipv4Addr>,
    queue: VecDeque<(Ipv4Addr, u64, Instant)>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    in_flight: usize,
    publisher: Publisher,
    stats: Arc<Stats>,
    extra: Arc<TcpStats>,
    have_list: bool,
    /// Time between two rounds: interval / probes per interval.
    period: Duration,
}

impl Prober {
    fn set_hosts(&mut self, list: &HostList) {
        let (ips, bad) = parse_hosts(list);
        if !bad.is_empty() {
            self.log.warn(format!("Ignoring host entries that are not IPv4 addresses: {}", bad.join(",")));
        }
        self.log.debug(format!("Checking {} hosts on port {}: {}", ips.len(), self.port, joined(&ips)));
        self.tracker.set_hosts(&ips);
        let k = probes_per_interval(ips.len(), self.interval, MAX_CONNECTS_PER_SEC);
        if k < PROBES_PER_INTERVAL {
            self.log.info(format!(
                "{} hosts: {k} connect(s) per host per interval, to stay under {MAX_CONNECTS_PER_SEC} per second",
                ips.len()
            ));
        }
        self.extra.probes_per_interval.store(u64::from(k), Ordering::Relaxed);
        self.period = Duration::from_secs_f64(self.interval / f64::from(k));
        self.targets = ips;
        self.have_list = true;
    }

    fn log_change(&self, change: Change) {
        match change {
            Change::Failed(ip) => self.log.info(format!(
                "Host {ip} failed the TCP check on port {} (timeout {} s)",
                self.port,
                connect_timeout(self.interval).as_secs_f64()
            )),
            Change::Answering(ip) => self.log.info(format!(
                "Host {ip} accepts TCP connections on port {} again (eligible {} s after its last failure)",
                self.port,
                self.interval * HOLD_DOWN_INTERVALS
            )),
        }
    }

    fn start_round(&mut self, now: Instant) {
        if !self.queue.is_empty() {
            self.extra.skipped.fetch_add(self.queue.len() as u64, Ordering::Relaxed);
            self.log.warn(format!(
                "TCP checks of {} hosts could not start within their round; skipped",
                self.queue.len()
            ));
            self.queue.clear();
        }
        let round = self.tracker.start_round(now);
        self.extra.rounds.fetch_add(1, Ordering::Relaxed);
        let deadline = self.tracker.deadline(round).unwrap_or(now);
        self.queue.extend(self.targets.iter().map(|ip| (*ip, round, deadline)));
    }

    /// Starts queued connects while there is room.
    fn start_connects(&mut self) {
        while self.in_flight < MAX_IN_FLIGHT {
            let Some((ip, round, deadline)) = self.queue.pop_front() else { return };
            let now = Instant::now();
            if now >= deadline {
                self.extra.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.tracker.probed(ip, round);
            let addr = SocketAddr::V4(SocketAddrV4::new(ip, self.port));
            let mut stream = match TcpStream::connect(addr) {
                Ok(s) => s,
                Err(e) => {
                    self.log.debug(format!("TCP connect to {addr} failed: {e}"));
                    self.refused(ip, round);
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
            self.conns[slot] = Some(Conn { stream, ip, round, deadline });
            self.in_flight += 1;
        }
    }

    fn refused(&mut self, ip: Ipv4Addr, round: u64) {
        if let Some(c) = self.tracker.refused(ip, round, Instant::now()) {
            self.log_change(c);
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
    fn on_ready(&mut self, slot: usize) {
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
                    self.tracker.answer(conn.ip, conn.round, Instant::now());
                }
            }
            Err(e) => {
                if let Some(conn) = self.close(slot) {
                    self.log.debug(format!("TCP check of {}:{} failed: {e}", conn.ip, self.port));
                    self.refused(conn.ip, conn.round);
                }
            }
        }
    }

    /// Gives up connects whose deadline passed (the tracker counts them as failed).
    fn cancel_expired(&mut self, now: Instant) {
        let expired: Vec<usize> = self
            .conns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.as_ref().is_some_and(|c| c.deadline <= now))
            .map(|(i, _)| i)
            .collect();
        for slot in expired {
            self.close(slot);
        }
    }

    fn run(mut self, hosts: RReceiver<HostList>, stop: StopToken) {
        let mut next_round = Instant::now();
        let mut events = Events::with_capacity(1024);
        loop {
            if stop.is_stopped() {
                return;
            }
            let mut latest = None;
            while let Ok(list) = hosts.try_recv() {
                latest = Some(list);
            }
            if let Some(list) = latest {
                self.set_hosts(&list);
            }
            let now = Instant::now();
            self.cancel_expired(now);
            for change in self.tracker.expire(now) {
                self.log_change(change);
            }
            if self.have_list {
                self.stats.update(&self.tracker);
                if !self.publisher.publish(self.tracker.failed(now), &self.stats) {
                    self.log.debug("The health report queue is closed");
                    return;
                }
            }
            if now >= next_round {
                if !self.tracker.is_empty() {
                    self.start_round(now);
                }
                next_round += self.period;
                if next_round <= now {
                    self.extra.late_rounds.fetch_add(1, Ordering::Relaxed);
                    self.log.warn("TCP round started late; restarting the schedule");
                    next_round = now + self.period;
                }
            }
            self.start_connects();
            let mut wake = next_round.min(Instant::now() + TICK);
            if let Some(d) = self.tracker.next_deadline() {
                wake = wake.min(d);
            }
            let timeout = wake.saturating_duration_since(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    self.log.warn(format!("poll failed: {e}"));
                    std::thread::sleep(timeout);
                }
                continue;
            }
            let ready: Vec<usize> = events.iter().map(|e| e.token().0).collect();
            for slot in ready {
                self.on_ready(slot);
            }
        }
    }
}

/// The `tcp` health plugin.
pub struct Tcp {
    interval: f64,
    port: u16,
    stats: Arc<Stats>,
    extra: Arc<TcpStats>,
    log: Option<Logger>,
    worker: Option<Worker>,
}

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
        parse_interval(args, INTERVAL_ARG)?;
        parse_port(args).map(drop)
    }
}

impl HealthPlugin for Tcp {
    fn create(args: &PluginArgs) -> Result<Self, String> {
        Ok(Tcp {
            interval: parse_interval(args, INTERVAL_ARG)?,
            port: parse_port(args)?,
            stats: Arc::default(),
            extra: Arc::default(),
            log: None,
            worker: None,
        })
    }

    fn start(
        &mut self,
        ctx: PluginContext,
        hosts: RReceiver<HostList>,
        reports: RSender<HealthReport>,
    ) -> Result<(), String> {
        let log = ctx.log;
        log.info("TCP health monitor plugin: Starting to watch instances.");
        let poll = Poll::new().map_err(|e| format!("tcp health plugin cannot create a poller: {e}"))?;
        let prober = Prober {
            poll,
            port: self.port,
            log: log.clone(),
            interval: self.interval,
            tracker: Tracker::new(
                connect_timeout(self.interval),
                Duration::from_secs_f64(self.interval * HOLD_DOWN_INTERVALS),
            ),
            targets: Vec::new(),
            queue: VecDeque::new(),
            conns: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            publisher: Publisher::new(log.clone(), reports),
            stats: self.stats.clone(),
            extra: self.extra.clone(),
            have_list: false,
            period: Duration::from_secs_f64(self.interval / f64::from(PROBES_PER_INTERVAL)),
        };
        self.worker = Some(Worker::spawn("TcpHealth", move |stop| prober.run(hosts, stop))?);
        self.log = Some(log);
        Ok(())
    }

    fn stop(&mut self) -> Result<(), String> {
        if let Some(worker) = self.worker.take() {
            worker.stop(STOP_TIMEOUT)?;
        }
        if let Some(log) = &self.log {
            log.info("TCP health monitor plugin: Stopped");
        }
        Ok(())
    }

    fn info(&self) -> serde_json::Value {
        let mut stats = self.stats.json();
        stats["rounds"] = self.extra.rounds.load(Ordering::Relaxed).into();
        stats["late_rounds"] = self.extra.late_rounds.load(Ordering::Relaxed).into();
        stats["skipped"] = self.extra.skipped.load(Ordering::Relaxed).into();
        serde_json::json!({
            "version": Self::VERSION,
            "params": {INTERVAL_ARG: self.interval, PORT_ARG: self.port},
            "timeout_secs": connect_timeout(self.interval).as_secs_f64(),
            "hold_down_secs": self.interval * HOLD_DOWN_INTERVALS,
            "probes_per_interval": self.extra.probes_per_interval.load(Ordering::Relaxed),
            "stats": stats,
        })
    }

    fn interval_secs(&self) -> f64 {
        self.interval
    }
}

vpcrouter_plugin_api::export_plugin!(health: Tcp);

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::process::Command;
    use std::sync::atomic::AtomicBool;
    use std::thread::JoinHandle;

    use vpcrouter_plugin_api::channel::unbounded;
    use vpcrouter_plugin_api::{LogLevel, RString};
    use vpcrouter_testkit::{context, nothing_within, recv_within, LogCapture};

    use super::*;

    struct Running {
        plugin: Tcp,
        hosts: RSender<HostList>,
        reports: RReceiver<HealthReport>,
        logs: LogCapture,
    }

    fn start(interval: &str, port: u16) -> Running {
        let port = port.to_string();
        let args = PluginArgs::from_pairs([(INTERVAL_ARG, interval), (PORT_ARG, port.as_str())]);
        let mut plugin = Tcp::create(&args).unwrap();
        let (ctx, logs) = context("tcp");
        let (hosts, host_rx) = unbounded();
        let (report_tx, reports) = unbounded();
        plugin.start(ctx, host_rx, report_tx).unwrap();
        Running { plugin, hosts, reports, logs }
    }

    fn list(ips: &[&str]) -> HostList {
        HostList { hosts: ips.iter().map(|&ip| ip.into()).collect() }
    }

    fn failed(r: &HealthReport) -> Vec<&str> {
        r.failed.iter().map(RString::as_str).collect()
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

    #[test]
    fn options_are_checked() {
        let check = |pairs: &[(&str, &str)]| Tcp::validate_config(&PluginArgs::from_pairs(pairs.iter().copied()));
        assert!(check(&[(PORT_ARG, "22")]).is_ok());
        assert!(check(&[(PORT_ARG, "65535"), (INTERVAL_ARG, "0.1")]).is_ok());
        assert!(check(&[]).unwrap_err().contains("--tcp_check_port"));
        for bad in ["0", "65536", "-1", "ssh", ""] {
            let e = check(&[(PORT_ARG, bad)]).unwrap_err();
            assert!(e.contains("between 1 and 65535"), "{bad}: {e}");
        }
        for bad in ["0", "0.01", "4000", "two"] {
            let e = check(&[(PORT_ARG, "22"), (INTERVAL_ARG, bad)]).unwrap_err();
            assert!(e.contains("--tcp_check_interval"), "{bad}: {e}");
        }
        assert_eq!(connect_timeout(1.0), Duration::from_millis(750));
        assert_eq!(connect_timeout(60.0), MAX_CONNECT_TIMEOUT);
    }

    #[test]
    fn a_stopped_listener_fails_at_once_and_is_eligible_after_the_hold_down() {
        let net = 100 + std::process::id() % 100;
        let (a, b) = (format!("127.{net}.0.1"), format!("127.{net}.0.2"));
        let (la, port) = Listener::bind(&a, 0);
        let (_lb, _) = Listener::bind(&b, port);
        let mut r = start("0.2", port);
        r.hosts.send(list(&[&a, &b])).unwrap();
        assert_eq!(recv_within(&r.reports, Duration::from_secs(2)), Some(HealthReport::default()));
        assert!(nothing_within(&r.reports, Duration::from_millis(800)), "{:?}", r.logs);

        drop(la);
        let stopped = Instant::now();
        let report = recv_within(&r.reports, Duration::from_secs(2)).expect("a failure report");
        let took = stopped.elapsed();
        assert_eq!(failed(&report), vec![a.as_str()]);
        assert!(took <= Duration::from_millis(200 + 100), "refusal noticed after {took:?}");

        let (_la, _) = Listener::bind(&a, port);
        let back = Instant::now();
        let report = recv_within(&r.reports, Duration::from_secs(5)).expect("eligible again");
        let held = back.elapsed();
        assert_eq!(report, HealthReport::default());
        assert!(held >= Duration::from_millis(2000 - 250) && held <= Duration::from_millis(2000 + 300), "{held:?}");
        assert!(r.logs.contains(LogLevel::Info, &format!("Host {a} accepts TCP connections on port {port} again")));
        let info = r.plugin.info();
        assert!(info["stats"]["checks"].as_u64().unwrap() >= 60, "{info}");
        assert_eq!(info["probes_per_interval"], 4);
        assert!(info["stats"]["failures"].as_u64().unwrap() >= 1, "{info}");
        assert_eq!(info["params"][PORT_ARG], port);
        let t = Instant::now();
        r.plugin.stop().unwrap();
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(r.logs.contains(LogLevel::Info, "TCP health monitor plugin: Stopped"));
    }

    #[test]
    fn a_host_that_never_answers_fails_at_the_timeout() {
        // A veth into a namespace of our own, with no address on the far side: SYNs to
        // 198.19.N.2 go unanswered.
        let pid = std::process::id();
        let (ns, here, there) = (format!("vpcr-tcp-{pid}"), format!("vti{}", pid % 1_000_000), format!("vtn{}", pid % 1_000_000));
        let net = format!("198.19.{}", pid % 250);
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("run ip");
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        struct Cleanup(String, String);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = Command::new("ip").args(["link", "del", &self.1]).output();
                let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
            }
        }
        ip(&["netns", "add", &ns]);
        let _cleanup = Cleanup(ns.clone(), here.clone());
        ip(&["link", "add", &here, "type", "veth", "peer", "name", &there, "netns", &ns]);
        ip(&["addr", "add", &format!("{net}.1/30"), "dev", &here]);
        ip(&["link", "set", &here, "up"]);
        ip(&["-n", &ns, "link", "set", &there, "up"]);

        let silent = format!("{net}.2");
        let (_l, port) = Listener::bind("127.0.0.1", 0);
        let mut r = start("0.2", port);
        let t = Instant::now();
        r.hosts.send(list(&["127.0.0.1", &silent])).unwrap();
        let mut report = recv_within(&r.reports, Duration::from_secs(2)).expect("a report");
        if report.failed.is_empty() {
            report = recv_within(&r.reports, Duration::from_secs(2)).expect("a failure report");
        }
        assert_eq!(failed(&report), vec![silent.as_str()]);
        // The first round starts at once; its connects time out after 0.15 s.
        assert!(t.elapsed() >= Duration::from_millis(140) && t.elapsed() <= Duration::from_millis(450), "{:?}", t.elapsed());
        r.plugin.stop().unwrap();
    }
}
