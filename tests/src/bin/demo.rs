//! `make demo`: vpcrouter on a local EC2 emulator, no AWS account needed.
//!
//! Starts moto, builds a small VPC (router hosts on loopback addresses), writes a route
//! spec file, runs vpcrouter in configfile mode on it and prints the route tables before
//! and after. Then it keeps running: edit the spec file and watch the tables change, until
//! Ctrl-C. `--once` stops after the first "after"; `--port N` moves the status server
//! from its default 33289 (query it with curl while the demo runs).

use std::time::Duration;

use vpcrouter_tests::{daemon::Daemon, wait_for, Env};

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
    let spec = env.write("route_spec.json", SPEC);
    println!("== VPC {} — route tables BEFORE vpcrouter:\n{}", env.world.vpc_id, env.world.dump());
    println!("== route spec {}:\n{SPEC}", spec.display());
    let spec_arg = spec.to_string_lossy().into_owned();
    let d = env.daemon(&["-m", "configfile", "-f", &spec_arg, "-H", "always", "--route_recheck_interval", "10", "-p", port])?;
    println!("== running: vpcrouter -r {} -v {} -m configfile -f {} -H always", vpcrouter_tests::world::REGION, env.world.vpc_id, spec.display());
    let tables: Vec<&str> = env.world.tables[..2].iter().map(String::as_str).collect();
    env.wait_routed(&tables, "10.55.0.0/16", Duration::from_secs(30))?;
    env.wait_routed(&tables, "10.66.17.0/24", Duration::from_secs(30))?;
    println!("== route tables AFTER:\n{}", env.world.dump());
    print_changes(&d);
    if once {
        return Ok(());
    }
    println!("== vpcrouter keeps running. Edit {} and watch the tables follow; Ctrl-C ends the demo.", spec.display());
    println!("   vpcrouter's log: {}", d.log_file().display());
    println!("   its status server: curl localhost:{port}/status   curl localhost:{port}/metrics   curl localhost:{port}/route_info");
    let mut last = env.world.dump();
    loop {
        let now = wait_for(Duration::from_secs(3600), "a change", || {
            std::thread::sleep(Duration::from_millis(500));
            let now = env.world.dump();
            (now != last).then_some(now)
        })?;
        println!("== route tables changed:\n{now}");
        print_changes(&d);
        last = now;
    }
}

fn print_changes(d: &Daemon) {
    for line in d.log().lines().filter(|l| l.contains("route changed") || l.contains("WARN") || l.contains("ERROR")) {
        println!("   log: {line}");
    }
}
