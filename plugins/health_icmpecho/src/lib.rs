//! The `icmpecho` health monitor (the default): ICMP echo over ONE raw socket.
//!
//! `vpcrouter -H icmpecho --icmp_check_interval 2` (default 2 s; 0.1 ..= 3600 s).
//!
//! * One thread and one raw ICMP socket serve every host. A round of echo requests goes
//!   out to all hosts in a burst every interval / k; replies are matched by identifier
//!   (one per plugin instance, also filtered in the kernel with a socket filter) and
//!   sequence number (the round) and by their source address. k is
//!   [`PROBES_PER_INTERVAL`] (4), lowered for very many hosts so that at most
//!   [`MAX_PROBES_PER_SEC`] requests go out per second, but never below 1.
//! * A probe must be answered within 0.75 × interval. A host that leaves a probe
//!   unanswered (or cannot be sent to at all) has failed a check; since rounds overlap, a
//!   host that stops answering is reported 0.75 to 1.0 interval later (with k = 4; up to
//!   0.75 + 1/k intervals in general).
//! * A failed host stays failed for 10 × interval after its last failed check, and is
//!   probed meanwhile; then it is eligible again. Routes never fail back by themselves:
//!   the engine only moves a route when its router fails.
//! * The FULL report (failed hosts, never questionable ones) is sent once after the first
//!   host list and then whenever it changes.
//! * A round that starts late (overload) is logged and the schedule restarts from now.
//!
//! Needs `CAP_NET_RAW` (root, `setcap cap_net_raw+ep`, or systemd
//! `AmbientCapabilities=CAP_NET_RAW`); [`validate_dependencies`] says so at start.
//!
//! [`validate_dependencies`]: vpcrouter_plugin_api::export::PluginDescription::validate_dependencies

#![deny(unsafe_code)]

use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pnet_packet::icmp::echo_reply::EchoReplyPacket;
use pnet_packet::icmp::echo_request::MutableEchoRequestPacket;
use pnet_packet::icmp::{self, IcmpPacket, IcmpTypes};
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::Packet;
use socket2::{Domain, Protocol, SockAddr, SockFilter, Socket, Type};
use vpcrouter_health_common::{
    joined, parse_hosts, parse_interval, Change, Publisher, Stats, Tracker, HOLD_DOWN_INTERVALS,
    TIMEOUT_SHARE,
};
use vpcrouter_plugin_api::export::PluginDescription;
use vpcrouter_plugin_api::worker::{StopToken, Worker};
use vpcrouter_plugin_api::{
    ArgSpec, HealthPlugin, HealthReport, HostList, Logger, PluginArgs, PluginContext, RReceiver,
    RSender,
};

pub use vpcrouter_health_common::PROBES_PER_INTERVAL;
/// Echo requests per second above which fewer probes per interval are sent.
pub const MAX_PROBES_PER_SEC: f64 = 10_000.0;

/// Echo requests per host per interval for `hosts` hosts checked every `interval` seconds.
pub fn probes_per_interval(hosts: usize, interval: f64) -> u32 {
    vpcrouter_health_common::probes_per_interval(hosts, interval, MAX_PROBES_PER_SEC)
}
/// The interval option.
const INTERVAL_ARG: &str = "icmp_check_interval";
/// Longest wait before the thread looks at its queues and the stop signal again.
const TICK: Duration = Duration::from_millis(50);
/// Requests sent between two looks at the receive queue during a burst.
const BURST_CHUNK: usize = 64;
/// Receive buffer asked for (the kernel caps it at `net.core.rmem_max`).
const RECV_BUFFER: usize = 4 << 20;
/// How long `stop` waits for the thread.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// Marks our echo payloads: `MAGIC`, then the round number (8 bytes, big-endian).
const MAGIC: &[u8; 8] = b"vpcroute";
/// Size of an echo request: 8 bytes of header, 16 of payload.
const PACKET_LEN: usize = 8 + 16;

/// Identifiers of plugin instances in this process differ (tests run several at once).
static NEXT_IDENT: AtomicU16 = AtomicU16::new(0);

/// Opens the raw ICMP socket; the error explains how to get the capability.
fn open_socket() -> Result<Socket, String> {
    Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).map_err(|e| {
        if e.kind() == ErrorKind::PermissionDenied {
            format!(
                "icmpecho needs a raw ICMP socket, which requires CAP_NET_RAW ({e}). Run \
                 vpcrouter as root, or grant the capability: `setcap cap_net_raw+ep \
                 /path/to/vpcrouter`, or in a systemd unit `AmbientCapabilities=CAP_NET_RAW`"
            )
        } else {
            format!("icmpecho cannot open a raw ICMP socket: {e}")
        }
    })
}

/// A kernel filter passing only echo replies with identifier `ident`, so the socket does
/// not queue every other ICMP packet of the machine (including our own requests on lo).
fn echo_reply_filter(ident: u16) -> [SockFilter; 7] {
    const LDX_MSH_B: u16 = 0x01 | 0x10 | 0xa0; // X = 4 * (ip[0] & 0xf): IP header length
    const LD_IND_B: u16 = 0x10 | 0x40; // A = byte at X + k
    const LD_IND_H: u16 = 0x08 | 0x40; // A = half-word at X + k
    const JEQ_K: u16 = 0x05 | 0x10; // A == k ? jt : jf
    const RET_K: u16 = 0x06; // accept k bytes
    [
        SockFilter::new(LDX_MSH_B, 0, 0, 0),
        SockFilter::new(LD_IND_B, 0, 0, 0),
        SockFilter::new(JEQ_K, 0, 3, u32::from(IcmpTypes::EchoReply.0)),
        SockFilter::new(LD_IND_H, 0, 0, 4),
        SockFilter::new(JEQ_K, 0, 1, u32::from(ident)),
        SockFilter::new(RET_K, 0, 0, 0xffff),
        SockFilter::new(RET_K, 0, 0, 0),
    ]
}

/// The echo request of `round` (the same bytes for every host of the round).
fn echo_request(ident: u16, round: u64) -> Vec<u8> {
    let mut buf = vec![0u8; PACKET_LEN];
    let mut payload = [0u8; 16];
    payload[..8].copy_from_slice(MAGIC);
    payload[8..].copy_from_slice(&round.to_be_bytes());
    if let Some(mut p) = MutableEchoRequestPacket::new(&mut buf) {
        p.set_icmp_type(IcmpTypes::EchoRequest);
        p.set_identifier(ident);
        p.set_sequence_number(round as u16);
        p.set_payload(&payload);
    }
    let sum = IcmpPacket::new(&buf).map(|p| icmp::checksum(&p)).unwrap_or_default();
    buf[2..4].copy_from_slice(&sum.to_be_bytes());
    buf
}

/// The source and round of one of our echo replies (a raw IPv4 datagram), if it is one.
fn parse_reply(datagram: &[u8], ident: u16) -> Option<(Ipv4Addr, u64)> {
    let ip = Ipv4Packet::new(datagram)?;
    let header = usize::from(ip.get_header_length()) * 4;
    if ip.get_version() != 4 || header < 20 || datagram.len() < header {
        return None;
    }
    let reply = EchoReplyPacket::new(&datagram[header..])?;
    if reply.get_icmp_type() != IcmpTypes::EchoReply || reply.get_identifier() != ident {
        return None;
    }
    let payload = reply.payload();
    if payload.len() < 16 || &payload[..8] != MAGIC {
        return None;
    }
    let round = u64::from_be_bytes(payload[8..16].try_into().ok()?);
    (round as u16 == reply.get_sequence_number()).then_some((ip.get_source(), round))
}

/// Counters only this plugin has.
#[derive(Debug, Default)]
struct IcmpStats {
    send_errors: AtomicU64,
    late_rounds: AtomicU64,
    rounds: AtomicU64,
    probes_per_interval: AtomicU32,
}

/// The prober, owned by its thread.
struct Pinger {
    sock: Socket,
    ident: u16,
    log: Logger,
    interval: f64,
    tracker: Tracker,
    targets: Vec<(Ipv4Addr, SockAddr)>,
    publisher: Publisher,
    stats: Arc<Stats>,
    extra: Arc<IcmpStats>,
    have_list: bool,
    read_timeout: Option<Duration>,
    buf: Vec<u8>,
    /// Time between two rounds: interval / probes per interval.
    period: Duration,
}

impl Pinger {
    fn set_hosts(&mut self, list: &HostList) {
        let (ips, bad) = parse_hosts(list);
        if !bad.is_empty() {
            self.log.warn(format!("Ignoring host entries that are not IPv4 addresses: {}", bad.join(",")));
        }
        self.log.debug(format!("Checking {} hosts: {}", ips.len(), joined(&ips)));
        self.tracker.set_hosts(&ips);
        self.targets =
            ips.iter().map(|ip| (*ip, SockAddr::from(SocketAddrV4::new(*ip, 0)))).collect();
        self.have_list = true;
        let k = probes_per_interval(ips.len(), self.interval);
        if k < PROBES_PER_INTERVAL {
            self.log.info(format!(
                "{} hosts: {k} echo request(s) per host per interval, to stay under {MAX_PROBES_PER_SEC} per second",
                ips.len()
            ));
        }
        self.extra.probes_per_interval.store(k, Ordering::Relaxed);
        self.period = Duration::from_secs_f64(self.interval / f64::from(k));
    }

    /// Sends one round to every host, draining replies between chunks.
    fn send_round(&mut self, now: Instant) {
        let round = self.tracker.start_round(now);
        self.extra.rounds.fetch_add(1, Ordering::Relaxed);
        let packet = echo_request(self.ident, round);
        if let Err(e) = self.sock.set_nonblocking(true) {
            self.log.warn(format!("cannot make the ICMP socket non-blocking: {e}"));
        }
        let targets = std::mem::take(&mut self.targets);
        for (n, (ip, addr)) in targets.iter().enumerate() {
            if n % BURST_CHUNK == 0 && n > 0 {
                self.drain();
            }
            self.tracker.probed(*ip, round);
            let mut result = self.sock.send_to(&packet, addr);
            for _ in 0..5 {
                match &result {
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        self.drain();
                        std::thread::sleep(Duration::from_micros(200));
                        result = self.sock.send_to(&packet, addr);
                    }
                    _ => break,
                }
            }
            if let Err(e) = result {
                self.extra.send_errors.fetch_add(1, Ordering::Relaxed);
                self.log.debug(format!("Cannot send an ICMP echo request to {ip}: {e}"));
                if let Some(c) = self.tracker.refused(*ip, round, Instant::now()) {
                    self.log_change(c);
                }
            }
        }
        self.targets = targets;
        self.drain();
        if let Err(e) = self.sock.set_nonblocking(false) {
            self.log.warn(format!("cannot make the ICMP socket blocking: {e}"));
        }
    }

    /// Reads what is queued without waiting (the socket is non-blocking here).
    fn drain(&mut self) {
        loop {
            match (&self.sock).read(&mut self.buf) {
                Ok(n) => self.on_datagram(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn on_datagram(&mut self, n: usize) {
        if let Some((ip, round)) = parse_reply(&self.buf[..n], self.ident) {
            self.tracker.answer(ip, round, Instant::now());
        }
    }

    /// Reads replies until `until` (or the next packet after it).
    fn receive_until(&mut self, until: Instant) {
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left < Duration::from_millis(1) {
                return;
            }
            let stale = self.read_timeout.is_none_or(|t| t > left + Duration::from_millis(2));
            if stale {
                if let Err(e) = self.sock.set_read_timeout(Some(left)) {
                    self.log.warn(format!("cannot set the ICMP socket timeout: {e}"));
                    std::thread::sleep(left);
                    return;
                }
                self.read_timeout = Some(left);
            }
            match (&self.sock).read(&mut self.buf) {
                Ok(n) => self.on_datagram(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    self.read_timeout = None;
                    return;
                }
                Err(e) => {
                    self.log.warn(format!("Error reading ICMP replies: {e}"));
                    std::thread::sleep(left.min(TICK));
                    return;
                }
            }
        }
    }

    fn log_change(&self, change: Change) {
        let timeout = self.interval * TIMEOUT_SHARE;
        match change {
            Change::Failed(ip) => {
                self.log.info(format!("Host {ip} did not answer ICMP echo within {timeout} s"))
            }
            Change::Answering(ip) => self.log.info(format!(
                "Host {ip} answers ICMP echo again (eligible {} s after its last failure)",
                self.interval * HOLD_DOWN_INTERVALS
            )),
        }
    }

    fn run(mut self, hosts: RReceiver<HostList>, stop: StopToken) {
        let mut next_probe = Instant::now();
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
            if now >= next_probe {
                if !self.tracker.is_empty() {
                    self.send_round(now);
                }
                next_probe += self.period;
                if next_probe <= now {
                    self.extra.late_rounds.fetch_add(1, Ordering::Relaxed);
                    self.log.warn(format!(
                        "ICMP round for {} hosts started late; restarting the schedule",
                        self.tracker.len()
                    ));
                    next_probe = now + self.period;
                }
            }
            let mut wake = next_probe.min(Instant::now() + TICK);
            if let Some(d) = self.tracker.next_deadline() {
                wake = wake.min(d);
            }
            self.receive_until(wake);
        }
    }
}

/// The `icmpecho` health plugin.
pub struct Icmpecho {
    interval: f64,
    stats: Arc<Stats>,
    extra: Arc<IcmpStats>,
    log: Option<Logger>,
    worker: Option<Worker>,
}

impl PluginDescription for Icmpecho {
    const NAME: &'static str = "icmpecho";
    const DESCRIPTION: &'static str =
        "ICMP echo (ping) to every router over one raw socket (needs CAP_NET_RAW)";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn arguments() -> Vec<ArgSpec> {
        vec![ArgSpec::value(
            INTERVAL_ARG,
            "SECS",
            "ICMPecho interval in seconds, default 2, 0.1 to 3600; a reply must come within \
             0.75 x interval (only for 'icmpecho' health monitor plugin)",
        )
        .default("2")]
    }

    fn validate_dependencies() -> Result<(), String> {
        open_socket().map(drop)
    }

    fn validate_config(args: &PluginArgs) -> Result<(), String> {
        parse_interval(args, INTERVAL_ARG).map(drop)
    }
}

impl HealthPlugin for Icmpecho {
    fn create(args: &PluginArgs) -> Result<Self, String> {
        Ok(Icmpecho {
            interval: parse_interval(args, INTERVAL_ARG)?,
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
        log.info("ICMPecho health monitor plugin: Starting to watch instances.");
        let sock = open_socket()?;
        let ident = (std::process::id() as u16)
            .wrapping_mul(31)
            .wrapping_add(NEXT_IDENT.fetch_add(1, Ordering::Relaxed));
        if let Err(e) = sock.attach_filter(&echo_reply_filter(ident)) {
            log.debug(format!("No kernel filter on the ICMP socket ({e}); filtering replies here"));
        }
        if let Err(e) = sock.set_recv_buffer_size(RECV_BUFFER) {
            log.debug(format!("Cannot enlarge the ICMP receive buffer: {e}"));
        }
        let timeout = Duration::from_secs_f64(self.interval * TIMEOUT_SHARE);
        let hold = Duration::from_secs_f64(self.interval * HOLD_DOWN_INTERVALS);
        let pinger = Pinger {
            sock,
            ident,
            log: log.clone(),
            interval: self.interval,
            tracker: Tracker::new(timeout, hold),
            targets: Vec::new(),
            publisher: Publisher::new(log.clone(), reports),
            stats: self.stats.clone(),
            extra: self.extra.clone(),
            have_list: false,
            read_timeout: None,
            buf: vec![0u8; 2048],
            period: Duration::from_secs_f64(self.interval / f64::from(PROBES_PER_INTERVAL)),
        };
        self.worker = Some(Worker::spawn("IcmpechoHealth", move |stop| pinger.run(hosts, stop))?);
        self.log = Some(log);
        Ok(())
    }

    fn stop(&mut self) -> Result<(), String> {
        if let Some(worker) = self.worker.take() {
            worker.stop(STOP_TIMEOUT)?;
        }
        if let Some(log) = &self.log {
            log.info("ICMPecho health monitor plugin: Stopped");
        }
        Ok(())
    }

    fn info(&self) -> serde_json::Value {
        let mut stats = self.stats.json();
        stats["rounds"] = self.extra.rounds.load(Ordering::Relaxed).into();
        stats["late_rounds"] = self.extra.late_rounds.load(Ordering::Relaxed).into();
        stats["send_errors"] = self.extra.send_errors.load(Ordering::Relaxed).into();
        serde_json::json!({
            "version": Self::VERSION,
            "params": {INTERVAL_ARG: self.interval},
            "timeout_secs": self.interval * TIMEOUT_SHARE,
            "hold_down_secs": self.interval * HOLD_DOWN_INTERVALS,
            "probes_per_interval": self.extra.probes_per_interval.load(Ordering::Relaxed),
            "stats": stats,
        })
    }

    fn interval_secs(&self) -> f64 {
        self.interval
    }
}

vpcrouter_plugin_api::export_plugin!(health: Icmpecho);

#[cfg(test)]
mod tests {
    use std::process::Command;

    use vpcrouter_plugin_api::channel::unbounded;
    use vpcrouter_plugin_api::{LogLevel, RString};
    use vpcrouter_testkit::{context, nothing_within, recv_within, LogCapture};

    use super::*;

    struct Running {
        plugin: Icmpecho,
        hosts: RSender<HostList>,
        reports: RReceiver<HealthReport>,
        logs: LogCapture,
    }

    fn start(interval: &str) -> Running {
        let mut plugin = Icmpecho::create(&PluginArgs::from_pairs([(INTERVAL_ARG, interval)])).unwrap();
        let (ctx, logs) = context("icmpecho");
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

    /// Runs `ip ARGS`, panicking with its stderr on failure.
    fn ip(args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A network namespace reached through a veth pair: 198.18.N.1 here, 198.18.N.2 there.
    struct Veth {
        ns: String,
        here: String,
        peer_ip: String,
    }

    impl Veth {
        fn new() -> Veth {
            let pid = std::process::id();
            let ns = format!("vpcr-icmp-{pid}");
            let (here, there) = (format!("vpi{}", pid % 1_000_000), format!("vpn{}", pid % 1_000_000));
            let net = format!("198.18.{}", pid % 250);
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
            ip(&["netns", "add", &ns]);
            let v = Veth { ns: ns.clone(), here: here.clone(), peer_ip: format!("{net}.2") };
            ip(&["link", "add", &here, "type", "veth", "peer", "name", &there, "netns", &ns]);
            ip(&["addr", "add", &format!("{net}.1/30"), "dev", &here]);
            ip(&["link", "set", &here, "up"]);
            ip(&["-n", &ns, "addr", "add", &format!("{net}.2/30"), "dev", &there]);
            ip(&["-n", &ns, "link", "set", &there, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            v
        }

        /// Removes (`false`) or restores (`true`) the peer's address: it stops answering.
        fn peer_answers(&self, on: bool) {
            let there = self.here.replacen("vpi", "vpn", 1);
            let addr = format!("{}/30", self.peer_ip);
            ip(&["-n", &self.ns, "addr", if on { "add" } else { "del" }, &addr, "dev", &there]);
        }
    }

    impl Drop for Veth {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", &self.here]).output();
            let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        }
    }

    #[test]
    fn echo_packets_round_trip() {
        let req = echo_request(0x1234, 70_000);
        assert_eq!(req.len(), PACKET_LEN);
        assert_eq!(req[0], IcmpTypes::EchoRequest.0);
        assert_eq!(u16::from_be_bytes([req[6], req[7]]), 70_000u64 as u16);
        // The reply a host sends: type 0, same identifier, sequence and payload.
        let mut datagram = vec![0x45, 0, 0, 44, 0, 0, 0, 0, 64, 1, 0, 0, 10, 1, 2, 3, 10, 9, 9, 9];
        let mut reply = req.clone();
        reply[0] = IcmpTypes::EchoReply.0;
        datagram.extend_from_slice(&reply);
        assert_eq!(parse_reply(&datagram, 0x1234), Some((Ipv4Addr::new(10, 1, 2, 3), 70_000)));
        assert_eq!(parse_reply(&datagram, 0x1235), None, "another identifier");
        assert_eq!(parse_reply(&datagram[..30], 0x1234), None, "truncated");
        let mut other = datagram.clone();
        other[20 + 8] ^= 1;
        assert_eq!(parse_reply(&other, 0x1234), None, "not our payload");
        let mut request = datagram.clone();
        request[20] = IcmpTypes::EchoRequest.0;
        assert_eq!(parse_reply(&request, 0x1234), None, "our own request seen on lo");
    }

    #[test]
    fn intervals_are_checked() {
        let check = |v: &str| Icmpecho::validate_config(&PluginArgs::from_pairs([(INTERVAL_ARG, v)]));
        assert!(check("0.1").is_ok() && check("2").is_ok() && check("3600").is_ok());
        for bad in ["0", "0.09", "3600.5", "-2", "x"] {
            assert!(check(bad).unwrap_err().contains("--icmp_check_interval"), "{bad}");
        }
        assert_eq!(probes_per_interval(3, 0.1), 4);
        assert_eq!(probes_per_interval(2_500, 1.0), 4);
        assert_eq!(probes_per_interval(5_000, 1.0), 2);
        assert_eq!(probes_per_interval(10_000, 1.0), 1);
        assert_eq!(probes_per_interval(50_000, 2.0), 1);
        let p = Icmpecho::create(&PluginArgs::default()).unwrap();
        assert_eq!(p.interval_secs(), 2.0);
        assert_eq!(p.info()["timeout_secs"], 1.5);
    }

    #[test]
    fn loopback_hosts_answer_and_stay_healthy() {
        let mut r = start("0.2");
        assert!(nothing_within(&r.reports, Duration::from_millis(300)), "no report before the first host list");
        r.hosts.send(list(&["127.0.0.1", "127.0.77.1", "127.0.77.2"])).unwrap();
        let first = recv_within(&r.reports, Duration::from_secs(2)).expect("a first report");
        assert_eq!(first, HealthReport::default());
        assert!(nothing_within(&r.reports, Duration::from_millis(1500)), "{:?}", r.logs);
        let info = r.plugin.info();
        assert!(info["stats"]["checks"].as_u64().unwrap() >= 3 * 4 * 6, "{info}");
        assert_eq!(info["stats"]["failures"], 0, "{info}");
        assert_eq!(info["params"][INTERVAL_ARG], 0.2);
        let t = Instant::now();
        r.plugin.stop().unwrap();
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(r.logs.contains(LogLevel::Info, "ICMPecho health monitor plugin: Stopped"));
    }

    #[test]
    fn silent_host_fails_within_an_interval_and_is_eligible_after_the_hold_down() {
        let veth = Veth::new();
        let peer = veth.peer_ip.clone();
        let mut r = start("0.2");
        r.hosts.send(list(&["127.0.0.1", &peer])).unwrap();
        assert_eq!(recv_within(&r.reports, Duration::from_secs(2)), Some(HealthReport::default()));
        assert!(nothing_within(&r.reports, Duration::from_millis(600)), "the peer answers: {:?}", r.logs);

        veth.peer_answers(false);
        let stopped = Instant::now();
        let report = recv_within(&r.reports, Duration::from_secs(2)).expect("a failure report");
        let took = stopped.elapsed();
        assert_eq!(failed(&report), vec![peer.as_str()]);
        // One interval (0.2 s) at most, plus scheduling slack.
        assert!(took <= Duration::from_millis(200 + 100), "reported after {took:?}");
        assert!(r.logs.contains(LogLevel::Info, &format!("Currently failed IPs: {peer}")));

        veth.peer_answers(true);
        let back = Instant::now();
        let report = recv_within(&r.reports, Duration::from_secs(5)).expect("the host is eligible again");
        let held = back.elapsed();
        assert_eq!(report, HealthReport::default());
        // Held down for 10 x 0.2 s after its last failed check (which is at most one
        // probe period plus the timeout before it answered again).
        assert!(held >= Duration::from_millis(2000 - 250 - 150) && held <= Duration::from_millis(2000 + 300), "{held:?}");
        assert!(r.logs.contains(LogLevel::Info, &format!("Host {peer} answers ICMP echo again")));
        let info = r.plugin.info();
        assert!(info["stats"]["failures"].as_u64().unwrap() >= 1, "{info}");
        r.plugin.stop().unwrap();
    }

    #[test]
    fn a_host_list_change_keeps_known_hosts_and_drops_others() {
        let mut r = start("0.1");
        r.hosts.send(list(&["127.0.0.1", "not-an-ip"])).unwrap();
        assert_eq!(recv_within(&r.reports, Duration::from_secs(2)), Some(HealthReport::default()));
        assert!(r.logs.contains(LogLevel::Warn, "not-an-ip"));
        r.hosts.send(list(&["127.0.0.2"])).unwrap();
        assert!(nothing_within(&r.reports, Duration::from_millis(500)));
        assert_eq!(r.plugin.info()["stats"]["hosts"], 1);
        r.plugin.stop().unwrap();
    }
}
