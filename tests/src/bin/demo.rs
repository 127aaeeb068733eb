//! `make demo`: vpcrouter on a local EC2 emulator, no AWS account needed.
//!
//! Starts moto and builds a small VPC whose router instances have loopback addresses, so
//! they are real hosts here: the demo runs a TCP listener on each. It writes a route spec
//! file, runs vpcrouter in configfile mode with the `tcp` health plugin, and prints the route
//! tables before and after. Then a live failover: the listener of the router that carries
//! 10.55.0.0/16 is stopped, and the demo prints the tables again with the measured
//! failover time, what an exec hook (`--notify exec`) wrote for each event of the
//! failover, and `vpcrouter status`. Afterwards it keeps running: edit the spec file and watch the tables
//! follow, query the status server with curl, until Ctrl-C. `--once` ends after the
//! failover; `--port N` moves the status server from its default 33289.

use std::time::{Duration, Instant};

use vpcrouter_tests::daemon::{binary, Daemon};
use vpcrouter_tests::listener::Listener;
use vpcrouter_tests::{free_port, wait_for, Env};

/// The demo's exec hook: one line per event (the failover's is its JSON), appended to the
/// file named by its first argument.
const HOOK: &str = r#"#!/bin/sh
# vpcrouter runs this for each event: the event's JSON on stdin, its fields in VPCROUTER_*.
case "$VPCROUTER_EVENT" in
    failover) printf 'failover %s\n' "$(cat)" ;;
    route_changed) echo "route_changed $VPCROUTER_CIDR in $VPCROUTER_ROUTE_TABLE: ${VPCROUTER_OLD_ROUTER:-(none)} -> ${VPCROUTER_ROUTER:-(deleted)}" ;;
    *) echo "$VPCROUTER_EVENT $VPCROUTER_ROUTER" ;;
esac >> "$(dirname "$0")/hook.log"
"#;

const SPEC: &str = r#"{
    "10.55.0.0/16": ["127.0.1.10", "127.0.2.10"],
    "10.66.17.0/24": ["127.0.1.11"]
}
"#;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let once = args.iter().any(|a| a == "--once");
    let port = args.iter().position(|a| a == "--port").and_then(|i| args.get(i + 1)).map_or("33289", String::as_str);
    println!("== starting a local EC2 emulator (moto) and building a VPC ...");
    let env = Env::new()?;
    let check_port = free_port();
    let mut routers = std::collections::BTreeMap::new();
    for ip in ["127.0.1.10", "127.0.1.11", "127.0.2.10"] {
        routers.insert(ip.to_string(), Listener::bind(ip, check_port)?.0);
    }
    let spec = env.write("route_spec.json", SPEC);
    println!("== VPC {} — route tables BEFORE vpcrouter:\n{}", env.world.vpc_id, env.world.dump());
    println!("== route spec {}:\n{SPEC}", spec.display());
    let spec_arg = spec.to_string_lossy().into_owned();
    let hook = env.write("hook.sh", HOOK);
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let hook_arg = hook.to_string_lossy().into_owned();
    let check = check_port.to_string();
    let d = env
        .daemon()
        .args([
            "-m", "configfile", "-f", &spec_arg, "-H", "tcp", "--tcp_check_port", &check, "--tcp_check_interval",
            "0.5", "--route_recheck_interval", "10", "-p", port, "--notify", "exec", "--notify-exec-command",
            &hook_arg,
        ])
        .start()?;
    println!(
        "== running: vpcrouter -r {} -v {} -m configfile -f {} -H tcp --tcp_check_port {check} --tcp_check_interval 0.5 --notify exec --notify-exec-command {}",
        vpcrouter_tests::world::REGION,
        env.world.vpc_id,
        spec.display(),
        hook.display()
    );
    let mut seen = 0;
    let tables: Vec<&str> = env.world.tables[..2].iter().map(String::as_str).collect();
    let first = env.wait_routed(&tables, "10.55.0.0/16", Duration::from_secs(30))?;
    env.wait_routed(&tables, "10.66.17.0/24", Duration::from_secs(30))?;
    println!("== route tables AFTER:\n{}", env.world.dump());
    print_changes(&d, &mut seen);

    let other = if first == "127.0.1.10" { "127.0.2.10" } else { "127.0.1.10" };
    println!("== live failover: router {first} stops answering on port {check} ...");
    let hook_log = env.path("hook.log");
    let hooked_before = std::fs::read_to_string(&hook_log).unwrap_or_default().len();
    let started = Instant::now();
    drop(routers.remove(&first));
    let want = vec![Some(other.to_string()); tables.len()];
    wait_for(Duration::from_secs(30), "the failover", || {
        std::thread::sleep(Duration::from_millis(10));
        (env.world.targets(&tables, "10.55.0.0/16").ok()? == want).then_some(())
    })?;
    println!(
        "== failover: 10.55.0.0/16 moved from {first} to {other} in every table in {} ms",
        started.elapsed().as_millis()
    );
    println!("== route tables after the failover:\n{}", env.world.dump());
    print_changes(&d, &mut seen);
    print_hook_output(&hook_log, hooked_before, &hook);
    print_status(port);
    if once {
        return Ok(());
    }
    println!("== vpcrouter keeps running. Edit {} and watch the tables follow; Ctrl-C ends the demo.", spec.display());
    println!("   vpcrouter's log: {}", d.log_file().display());
    println!("   at a glance: {} status -p {port} --watch", binary().display());
    println!("   in a browser: http://localhost:{port}/ (the live status page)");
    println!("   its status server: curl localhost:{port}/status   curl localhost:{port}/metrics   curl localhost:{port}/route_info");
    let mut last = env.world.dump();
    loop {
        let now = wait_for(Duration::from_secs(3600), "a change", || {
            std::thread::sleep(Duration::from_millis(500));
            let now = env.world.dump();
            (now != last).then_some(now)
        })?;
        println!("== route tables changed:\n{now}");
        print_changes(&d, &mut seen);
        last = now;
    }
}

/// Prints `vpcrouter status` once it shows the failover (within 5 s).
fn print_status(port: &str) {
    let status = || {
        let out = std::process::Command::new(binary()).args(["status", "-p", port]).output().ok()?;
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    match wait_for(Duration::from_secs(5), "the failover in vpcrouter status", || {
        status().filter(|text| text.contains("routes moved in"))
    }) {
        Ok(text) => println!("== vpcrouter status -p {port}:\n{text}"),
        Err(e) => println!("== vpcrouter status did not show the failover: {e}"),
    }
}

/// Prints what the exec hook wrote from byte `from` on, once its failover line is there.
fn print_hook_output(log: &std::path::Path, from: usize, hook: &std::path::Path) {
    let text = wait_for(Duration::from_secs(10), "the hook's failover line", || {
        let text = std::fs::read_to_string(log).ok()?;
        text.get(from..).is_some_and(|t| t.contains("failover ")).then_some(text)
    });
    match text {
        Ok(text) => {
            println!("== the exec hook ({}) at the failover wrote:", hook.display());
            for line in text.get(from..).unwrap_or_default().lines() {
                println!("   hook: {line}");
            }
        }
        Err(e) => println!("== the exec hook wrote nothing for the failover: {e}"),
    }
}

/// Prints the route-change, warning and error lines logged since the last call.
fn print_changes(d: &Daemon, seen: &mut usize) {
    let log = d.log();
    let lines: Vec<&str> = log.lines().collect();
    for line in
        lines.iter().skip(*seen).filter(|l| l.contains("route changed") || l.contains("WARN") || l.contains("ERROR"))
    {
        println!("   log: {line}");
    }
    *seen = lines.len();
}
