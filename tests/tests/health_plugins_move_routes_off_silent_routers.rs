//! The icmpecho, tcp and multi health plugins move a route off a router that stops answering real packets.
//!
//! The real binary and plugin libraries, moto as EC2, routers on 127.x addresses. ICMP cannot
//! be stopped on the machine's own loopback, so those tests re-run themselves inside a network
//! namespace of their own ([`netns::run_inside`]) where moto, vpcrouter and the routers live
//! and where nftables drops packets to a "failed" router.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use vpcrouter_tests::daemon::{binary, run_once};
use vpcrouter_tests::listener::Listener;
use vpcrouter_tests::{build_dir, netns, wait_for, Env};

const T: Duration = Duration::from_secs(20);
const CIDR: &str = "10.55.0.0/16";
const SPEC: &str = r#"{"10.55.0.0/16": ["127.0.1.10", "127.0.2.10"]}"#;

/// Listeners on the same port of both routers; a router "stops answering" when its
/// listener is closed.
struct Listeners {
    port: u16,
    open: BTreeMap<String, Listener>,
}

impl Listeners {
    fn on(ips: &[&str]) -> anyhow::Result<Listeners> {
        let (first, port) = Listener::bind(ips[0], 0)?;
        let mut open = BTreeMap::from([(ips[0].to_string(), first)]);
        for ip in &ips[1..] {
            open.insert(ip.to_string(), Listener::bind(ip, port)?.0);
        }
        Ok(Listeners { port, open })
    }

    fn set(&mut self, ip: &str, answering: bool) -> anyhow::Result<()> {
        if answering {
            self.open.insert(ip.to_string(), Listener::bind(ip, self.port)?.0);
        } else {
            self.open.remove(ip);
        }
        Ok(())
    }
}

/// Blocks or unblocks a router with nftables (inside a test namespace only).
fn firewall(ip: &str, answering: bool) -> anyhow::Result<()> {
    if answering {
        netns::unblock(ip)
    } else {
        netns::block(ip)
    }
}

/// Route on A, A stops answering → every table points at B; A answers again → nothing
/// moves; both down → the route stays and a warning is logged. Returns the failover time.
fn failover_scenario(
    health: &[&str],
    mut set: impl FnMut(&str, bool) -> anyhow::Result<()>,
) -> anyhow::Result<Duration> {
    let env = Env::new()?;
    let (rt1, rt2) = (env.world.tables[0].clone(), env.world.tables[1].clone());
    let spec = env.write("spec.json", SPEC);
    let mut args = vec!["-m", "configfile", "-f", spec.to_str().unwrap_or_default()];
    args.extend_from_slice(health);
    let d = env.daemon().args(&args).start()?;
    let first = env.wait_routed(&[&rt1, &rt2], CIDR, T)?;
    let other = if first == "127.0.1.10" { "127.0.2.10" } else { "127.0.1.10" };
    // Healthy routers stay where they are.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(env.world.targets(&[&rt1, &rt2], CIDR)?, vec![Some(first.clone()); 2], "{}", d.log());

    set(&first, false)?;
    let stopped = Instant::now();
    wait_for(T, "failover to the other router", || {
        (env.world.targets(&[&rt1, &rt2], CIDR).ok()? == vec![Some(other.to_string()); 2]).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}\n{}", env.world.dump(), d.log()))?;
    let failover = stopped.elapsed();
    assert!(d.log().contains("route changed: replaced"), "{}", d.log());

    // A answers again: once its hold-down ends the engine hears so, and nothing moves.
    let changes = d.log().matches("health changed").count();
    set(&first, true)?;
    wait_for(T, "the recovery to be reported", || (d.log().matches("health changed").count() > changes).then_some(()))
        .map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))?;
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(env.world.targets(&[&rt1, &rt2], CIDR)?, vec![Some(other.to_string()); 2], "{}", d.log());

    // Every candidate down: the route stays, and the engine says why.
    set(&first, false)?;
    set(other, false)?;
    d.wait_log(&format!("no healthy router for {CIDR}"), T)?;
    assert_eq!(env.world.targets(&[&rt1, &rt2], CIDR)?, vec![Some(other.to_string()); 2], "{}", d.log());
    let line = d.log().lines().find(|l| l.contains("no healthy router for")).unwrap_or_default().to_string();
    assert!(line.contains("WARN"), "{line}");
    Ok(failover)
}

#[test]
fn icmpecho_moves_the_route_when_a_router_stops_answering_ping() -> anyhow::Result<()> {
    if netns::inside().is_none() {
        return netns::run_inside("icmpecho_moves_the_route_when_a_router_stops_answering_ping");
    }
    let took = failover_scenario(&["-H", "icmpecho", "--icmp_check_interval", "0.2"], firewall)?;
    eprintln!("icmpecho failover at 0.2 s: {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    Ok(())
}

#[test]
fn tcp_moves_the_route_when_a_router_refuses_connections() -> anyhow::Result<()> {
    let mut listeners = Listeners::on(&["127.0.1.10", "127.0.2.10"])?;
    let port = listeners.port.to_string();
    let took =
        failover_scenario(&["-H", "tcp", "--tcp_check_port", &port, "--tcp_check_interval", "0.2"], |ip, on| {
            listeners.set(ip, on)
        })?;
    eprintln!("tcp failover at 0.2 s: {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    Ok(())
}

#[test]
fn multi_icmpecho_tcp_moves_the_route_when_a_router_goes_silent() -> anyhow::Result<()> {
    if netns::inside().is_none() {
        return netns::run_inside("multi_icmpecho_tcp_moves_the_route_when_a_router_goes_silent");
    }
    let listeners = Listeners::on(&["127.0.1.10", "127.0.2.10"])?;
    let port = listeners.port.to_string();
    let took = failover_scenario(
        &[
            "-H", "multi", "--multi_plugins", "icmpecho:tcp", "--icmp_check_interval", "0.2", "--tcp_check_port",
            &port, "--tcp_check_interval", "0.2",
        ],
        firewall,
    )?;
    eprintln!("multi failover at 0.2 s: {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    drop(listeners);
    Ok(())
}

#[test]
fn bad_health_options_are_one_clear_error() {
    let base = [
        "-m", "fixedconf", "--fixed_cidr", "10.0.0.0/8", "--fixed_hosts", "10.0.0.1", "-r", "us-east-1", "-v", "vpc-1",
    ];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        run_once(&args)
    };
    let cases: &[(&[&str], &str)] = &[
        (
            &["-H", "icmpecho", "--icmp_check_interval", "0"],
            "--icmp_check_interval must be between 0.1 and 3600 seconds",
        ),
        (
            &["-H", "icmpecho", "--icmp_check_interval", "3601"],
            "--icmp_check_interval must be between 0.1 and 3600 seconds",
        ),
        (&["-H", "icmpecho", "--icmp_check_interval", "fast"], "'fast' is not a valid number"),
        (&["-H", "tcp"], "--tcp_check_port"),
        (&["-H", "tcp", "--tcp_check_port", "0"], "between 1 and 65535"),
        (&["-H", "tcp", "--tcp_check_port", "70000"], "between 1 and 65535"),
        (
            &["-H", "tcp", "--tcp_check_port", "22", "--tcp_check_interval", "0.01"],
            "--tcp_check_interval must be between",
        ),
        (&["-H", "multi"], "--multi_plugins"),
        (&["-H", "multi", "--multi_plugins", "icmpecho:multi"], "cannot include 'multi' itself"),
        (&["-H", "multi", "--multi_plugins", "icmpecho:nosuch"], "no health plugin 'nosuch'"),
        (&["-H", "multi", "--multi_plugins", "tcp:tcp", "--tcp_check_port", "22"], "names 'tcp' twice"),
        (&["-H", "multi", "--multi_plugins", "icmpecho::tcp"], "empty plugin name"),
        (&["-H", "multi", "--multi_plugins", "icmpecho:tcp"], "--tcp_check_port"),
        (
            &[
                "-H", "multi", "--multi_plugins", "icmpecho:tcp", "--tcp_check_port", "22", "--icmp_check_interval",
                "0.05",
            ],
            "--icmp_check_interval must be between",
        ),
    ];
    for (extra, needle) in cases {
        let (code, _, err) = run(extra);
        assert_ne!(code, 0, "{extra:?}: {err}");
        assert!(err.contains(needle), "{extra:?}: expected '{needle}' in: {err}");
        assert!(err.lines().filter(|l| !l.trim().is_empty()).count() <= 6, "{extra:?}: {err}");
    }
}

#[test]
fn multi_accepts_the_options_of_its_sub_plugins_in_help() {
    let (code, out, _) = run_once(&["-m", "configfile", "-H", "multi", "--multi_plugins", "icmpecho:tcp", "--help"]);
    assert_eq!(code, 0);
    for opt in ["--multi_plugins", "--icmp_check_interval", "--tcp_check_port", "--tcp_check_interval"] {
        assert!(out.contains(opt), "{opt}: {out}");
    }
    let (code, out, _) = run_once(&["--list-plugins"]);
    assert_eq!(code, 0);
    for name in ["icmpecho", "tcp", "multi"] {
        assert!(out.contains(name), "{out}");
    }
}

#[test]
fn icmpecho_without_cap_net_raw_says_how_to_grant_it() {
    // The same binary with CAP_NET_RAW removed from its bounding set.
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-net_raw", "--inh-caps", "-net_raw"])
        .arg(binary())
        .arg("--plugin-dir")
        .arg(build_dir())
        .args([
            "-m", "fixedconf", "--fixed_cidr", "10.0.0.0/8", "--fixed_hosts", "10.0.0.1", "-r", "us-east-1", "-v",
            "vpc-1",
        ])
        .args(["-H", "icmpecho"])
        .env_remove("VPCROUTER_PLUGIN_DIR")
        .output()
        .expect("run setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("CAP_NET_RAW") && err.contains("setcap cap_net_raw+ep"), "{err}");
    assert!(err.contains("health plugin 'icmpecho' cannot run here"), "{err}");
}
