//! The `icmpecho` health monitor (the default): ICMP echo over ONE raw socket.
//!
//! `vpcrouter -H icmpecho --icmp_check_interval 2` (default 2 s; 0.1 ..= 3600 s).
//!
//! * One raw ICMP socket serves every host. Each round of the SDK's schedule sends one echo
//!   request to every host in a burst; replies are matched by identifier (one per plugin
//!   instance, also filtered in the kernel with a socket filter), sequence number and
//!   payload (the round) and by their source address.
//! * The SDK's runner does the rest: a round every interval / 4 (fewer for very many hosts,
//!   so that at most [`MAX_PROBES_PER_SEC`] requests go out per second, never below one),
//!   a reply must come within 0.75 × interval, a host that cannot be sent to fails at once,
//!   a failed host stays failed for 10 × interval after its last failure, and the FULL
//!   report is sent after the first host list and whenever it changes.
//!
//! Needs `CAP_NET_RAW` (root, `setcap cap_net_raw+ep`, or systemd
//! `AmbientCapabilities=CAP_NET_RAW`); [`validate_dependencies`] says so at start.
//!
//! [`validate_dependencies`]: vpcrouter_plugin_api::export::PluginDescription::validate_dependencies

#![deny(unsafe_code)]

use std::io::{ErrorKind, Read};
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use pnet_packet::icmp::echo_reply::EchoReplyPacket;
use pnet_packet::icmp::echo_request::MutableEchoRequestPacket;
use pnet_packet::icmp::{self, IcmpPacket, IcmpTypes};
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::Packet;
use socket2::{Domain, Protocol, SockAddr, SockFilter, Socket, Type};
use vpcrouter_plugin_api::health::TICK;
use vpcrouter_plugin_api::prelude::*;

/// Echo requests per second above which fewer probes per interval are sent.
pub const MAX_PROBES_PER_SEC: f64 = 10_000.0;
/// The interval option.
const INTERVAL_ARG: &str = "icmp_check_interval";
/// Requests sent between two looks at the receive queue during a burst.
const BURST_CHUNK: usize = 64;
/// Receive buffer asked for (the kernel caps it at `net.core.rmem_max`).
const RECV_BUFFER: usize = 4 << 20;
/// Marks our echo payloads: `MAGIC`, then the round number (8 bytes, big-endian).
const MAGIC: &[u8; 8] = b"vpcroute";
/// Size of an echo request: 8 bytes of header, 16 of payload.
const PACKET_LEN: usize = 8 + 16;

/// Identifiers of plugin instances in this process differ (tests run several at once).
static NEXT_IDENT: AtomicU16 = AtomicU16::new(0);

/// The `--icmp_check_interval` rules: default 2 s, 0.1 to 3600 s.
fn interval(args: &PluginArgs) -> Result<Duration, String> {
    args.seconds(INTERVAL_ARG, 2.0, 0.1..=3600.0)
}

/// The schedule for `interval`: the SDK's defaults within the echo budget.
pub fn schedule(interval: Duration) -> Schedule {
    Schedule::every(interval).max_probes_per_sec(MAX_PROBES_PER_SEC)
}

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
fn parse_reply(datagram: &[u8], ident: u16) -> Option<(Ipv4, u64)> {
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
    (round as u16 == reply.get_sequence_number()).then_some((Ipv4::from(ip.get_source()), round))
}

/// The prober: one raw socket for every host.
pub struct Pinger {
    sock: Socket,
    ident: u16,
    log: Logger,
    read_timeout: Option<Duration>,
    buf: Vec<u8>,
    send_errors: u64,
}

impl Pinger {
    /// Reads what is queued without waiting (the socket is non-blocking here).
    fn drain(&mut self, answers: &mut Answers) {
        loop {
            match (&self.sock).read(&mut self.buf) {
                Ok(n) => self.on_datagram(n, answers),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn on_datagram(&mut self, n: usize, answers: &mut Answers) {
        if let Some((ip, round)) = parse_reply(&self.buf[..n], self.ident) {
            answers.up(ip, round);
        }
    }

    fn set_nonblocking(&self, on: bool) {
        if let Err(e) = self.sock.set_nonblocking(on) {
            self.log.warn(format!("cannot make the ICMP socket {}blocking: {e}", if on { "non-" } else { "" }));
        }
    }
}

impl Prober for Pinger {
    /// Sends the round's echo request to every host, draining replies between chunks.
    fn probe(&mut self, round: Round, hosts: &[Ipv4], answers: &mut Answers) {
        let packet = echo_request(self.ident, round.number);
        self.set_nonblocking(true);
        for (n, ip) in hosts.iter().enumerate() {
            if n % BURST_CHUNK == 0 && n > 0 {
                self.drain(answers);
            }
            let addr = SockAddr::from(SocketAddrV4::new(ip.addr(), 0));
            let mut result = self.sock.send_to(&packet, &addr);
            for _ in 0..5 {
                match &result {
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        self.drain(answers);
                        std::thread::sleep(Duration::from_micros(200));
                        result = self.sock.send_to(&packet, &addr);
                    }
                    _ => break,
                }
            }
            if let Err(e) = result {
                self.send_errors += 1;
                self.log.debug(format!("Cannot send an ICMP echo request to {ip}: {e}"));
                answers.down(*ip, round.number, format!("cannot send an ICMP echo request: {e}"));
            }
        }
        self.drain(answers);
        self.set_nonblocking(false);
    }

    /// Reads replies until `until` (or the next packet after it).
    fn wait(&mut self, until: Instant, answers: &mut Answers) {
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left < Duration::from_millis(1) {
                return;
            }
            if self.read_timeout.is_none_or(|t| t > left + Duration::from_millis(2)) {
                if let Err(e) = self.sock.set_read_timeout(Some(left)) {
                    self.log.warn(format!("cannot set the ICMP socket timeout: {e}"));
                    std::thread::sleep(left);
                    return;
                }
                self.read_timeout = Some(left);
            }
            match (&self.sock).read(&mut self.buf) {
                Ok(n) => self.on_datagram(n, answers),
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

    fn details(&self) -> serde_json::Value {
        serde_json::json!({ "send_errors": self.send_errors })
    }
}

/// The `icmpecho` health plugin.
pub struct Icmpecho;

impl PluginDescription for Icmpecho {
    const NAME: &'static str = "icmpecho";
    const DESCRIPTION: &'static str = "ICMP echo (ping) to every router over one raw socket (needs CAP_NET_RAW)";
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
        interval(args).map(drop)
    }
}

impl HealthPlugin for Icmpecho {
    type Prober = Pinger;

    fn start(args: &PluginArgs, run: &HealthRun) -> Result<(Schedule, Pinger), String> {
        let interval = interval(args)?;
        let log = run.log().clone();
        log.info("ICMPecho health monitor plugin: Starting to watch instances.");
        let sock = open_socket()?;
        let ident =
            (std::process::id() as u16).wrapping_mul(31).wrapping_add(NEXT_IDENT.fetch_add(1, Ordering::Relaxed));
        if let Err(e) = sock.attach_filter(&echo_reply_filter(ident)) {
            log.debug(format!("No kernel filter on the ICMP socket ({e}); filtering replies here"));
        }
        if let Err(e) = sock.set_recv_buffer_size(RECV_BUFFER) {
            log.debug(format!("Cannot enlarge the ICMP receive buffer: {e}"));
        }
        let pinger = Pinger { sock, ident, log, read_timeout: None, buf: vec![0u8; 2048], send_errors: 0 };
        Ok((schedule(interval), pinger))
    }
}

vpcrouter_plugin_api::export_plugin!(health: Icmpecho);

#[cfg(test)]
mod tests {
    use std::process::Command;

    use vpcrouter_plugin_api::testkit::{nothing_within, start_health, texts, HealthHarness};

    use super::*;

    fn start(interval: &str) -> HealthHarness {
        start_health::<Icmpecho>(&[(INTERVAL_ARG, interval)]).unwrap()
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
        assert_eq!(parse_reply(&datagram, 0x1234), Some((Ipv4::new(10, 1, 2, 3), 70_000)));
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
        assert!(check("0").unwrap_err().contains("--icmp_check_interval must be between 0.1 and 3600 seconds (got 0)"));
        let s = |secs: f64| schedule(Duration::from_secs_f64(secs));
        assert_eq!(s(0.1).rounds_for(3), 4);
        assert_eq!(s(1.0).rounds_for(2_500), 4);
        assert_eq!(s(1.0).rounds_for(5_000), 2);
        assert_eq!(s(1.0).rounds_for(10_000), 1);
        assert_eq!(s(2.0).rounds_for(50_000), 1);
        let r = start_health::<Icmpecho>(&[]).unwrap();
        assert_eq!(r.monitor.interval_secs(), 2.0);
        let (_, details, params) = r.status();
        assert_eq!(details["timeout_secs"], 1.5);
        assert_eq!(details["hold_down_secs"], 20.0);
        assert!(params.is_empty(), "no option given: {params:?}");
        r.stop().unwrap();
    }

    #[test]
    fn loopback_hosts_answer_and_stay_healthy() {
        let r = start("0.2");
        assert!(nothing_within(&r.reports, Duration::from_millis(300)), "no report before the first host list");
        r.send_hosts(&["127.0.0.1", "127.0.77.1", "127.0.77.2"]);
        let first = r.next_report(Duration::from_secs(2)).expect("a first report");
        assert_eq!(first, HealthReport::default());
        assert!(nothing_within(&r.reports, Duration::from_millis(1500)), "{:?}", r.logs);
        let (stats, details, params) = r.status();
        assert!(stats.checks >= 3 * 4 * 6, "{stats:?}");
        assert_eq!(stats.failures, 0, "{stats:?}");
        assert_eq!(stats.hosts, 3);
        assert_eq!(details["probes_per_interval"], 4, "{details}");
        assert_eq!(params, vec![(INTERVAL_ARG.to_string(), "0.2".to_string())]);
        let t = Instant::now();
        r.stop().unwrap();
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(r.logs.contains(LogLevel::Info, "ICMPecho health monitor plugin: Starting to watch instances."));
        assert!(r.logs.contains(LogLevel::Info, "icmpecho health monitor plugin: Stopped"));
    }

    #[test]
    fn silent_host_fails_within_an_interval_and_is_eligible_after_the_hold_down() {
        let veth = Veth::new();
        let peer = veth.peer_ip.clone();
        let r = start("0.2");
        r.send_hosts(&["127.0.0.1", &peer]);
        assert_eq!(r.next_report(Duration::from_secs(2)), Some(HealthReport::default()));
        assert!(nothing_within(&r.reports, Duration::from_millis(600)), "the peer answers: {:?}", r.logs);

        veth.peer_answers(false);
        let stopped = Instant::now();
        let report = r.next_report(Duration::from_secs(2)).expect("a failure report");
        let took = stopped.elapsed();
        assert_eq!(texts(&report.failed), vec![peer.clone()]);
        // One interval (0.2 s) at most, plus scheduling slack.
        assert!(took <= Duration::from_millis(200 + 100), "reported after {took:?}");
        assert!(r.logs.contains(LogLevel::Info, &format!("Currently failed IPs: {peer}")));
        assert!(r.logs.contains(LogLevel::Info, &format!("Host {peer} failed a check: no answer within 0.15 s")));

        veth.peer_answers(true);
        let back = Instant::now();
        let report = r.next_report(Duration::from_secs(5)).expect("the host is eligible again");
        let held = back.elapsed();
        assert_eq!(report, HealthReport::default());
        // Held down for 10 x 0.2 s after its last failed check (which is at most one
        // probe period plus the timeout before it answered again).
        assert!(
            held >= Duration::from_millis(2000 - 250 - 150) && held <= Duration::from_millis(2000 + 300),
            "{held:?}"
        );
        assert!(r.logs.contains(LogLevel::Info, &format!("Host {peer} passes checks again")));
        let (stats, _, _) = r.status();
        assert!(stats.failures >= 1, "{stats:?}");
        r.stop().unwrap();
    }

    #[test]
    fn a_host_list_change_keeps_known_hosts_and_drops_others() {
        let r = start("0.1");
        r.send_hosts(&["127.0.0.1", "127.0.0.3"]);
        assert_eq!(r.next_report(Duration::from_secs(2)), Some(HealthReport::default()));
        r.send_hosts(&["127.0.0.2"]);
        assert!(nothing_within(&r.reports, Duration::from_millis(500)));
        let (stats, _, _) = r.status();
        assert_eq!(stats.hosts, 1);
        r.stop().unwrap();
    }

    #[test]
    fn an_unreachable_host_fails_at_once_and_counts_a_send_error() {
        // A broadcast address: without SO_BROADCAST the kernel refuses to send (nothing goes out).
        let r = start("0.4");
        let t = Instant::now();
        r.send_hosts(&["127.0.0.1", "255.255.255.255"]);
        let mut report = r.next_report(Duration::from_secs(2)).expect("a report");
        if report.failed.is_empty() {
            report = r.next_report(Duration::from_secs(2)).expect("a failure report");
        }
        assert_eq!(texts(&report.failed), vec!["255.255.255.255".to_string()]);
        assert!(t.elapsed() < Duration::from_millis(250), "before the 0.3 s timeout: {:?}", t.elapsed());
        let (_, details, _) = r.status();
        assert!(details["send_errors"].as_u64().unwrap() >= 1, "{details}");
        r.stop().unwrap();
    }
}
