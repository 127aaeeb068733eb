//! A spec of 10,000 CIDRs × 2 tables is shown in `/status` and on the status page within seconds, and SIGTERM still stops vpcrouter in 5 s.
//!
//! Planning and the status tables take time linear in the spec, and the engine looks at the
//! stop signal between its steps. The 50,000-CIDR case is a bench: `bench-planner`'s second
//! table (plan + status update at 50,000 CIDRs × 20 tables, release mode).

use std::time::{Duration, Instant};

use vpcrouter_tests::bench::status;
use vpcrouter_tests::{wait_for, Env};

const CIDRS: usize = 10_000;

/// The spec: `CIDRS` /24 networks, each with the routers of subnets 1 and 2 (so that the
/// tables of both are managed).
fn large_spec() -> String {
    let entries: Vec<String> =
        (0..CIDRS).map(|i| format!(r#""10.{}.{}.0/24": ["127.0.1.10", "127.0.2.10"]"#, i / 256, i % 256)).collect();
    format!("{{{}}}", entries.join(","))
}

/// The resident set size of process `pid`, in MiB (`VmRSS` of `/proc/PID/status`).
fn rss_mib(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[test]
fn a_spec_of_ten_thousand_cidrs_is_shown_within_seconds_and_sigterm_still_stops_the_daemon() -> anyhow::Result<()> {
    let env = Env::new()?;
    let spec = env.write("spec.json", &large_spec());
    let started = Instant::now();
    let mut d = env
        .daemon()
        .args(["-m", "configfile", "-f", spec.to_str().unwrap_or_default(), "-H", "always", "--dry-run"])
        .start()?;
    let doc = wait_for(Duration::from_secs(10), "/status to show a reconcile", || {
        let doc = status(d.port)?;
        (!doc["last_reconcile"].is_null()).then_some(doc)
    })
    .map_err(|e| anyhow::anyhow!("{e}\n--- log ---\n{}", d.log()))?;
    let first = started.elapsed();
    assert_eq!(doc["last_reconcile"]["result"], "ok", "{}", doc["last_reconcile"]);
    let shown: usize =
        doc["route_tables"].as_object().map_or(0, |t| t.values().filter_map(|r| r.as_array()).map(Vec::len).sum());
    assert_eq!(shown, 2 * CIDRS, "every route of both managed tables is in /status");
    let pid = d.pid().ok_or_else(|| anyhow::anyhow!("the daemon is not running"))?;
    let rss = rss_mib(pid).unwrap_or_default();
    assert!(rss < 512.0, "the daemon holds {rss:.0} MiB for a 10,000-CIDR spec");
    // The status page renders the whole matrix (its size and time are printed for the record).
    let asked = Instant::now();
    let page = vpcrouter_tests::http_client::get(d.port, "/", Some("text/html"))?;
    let (page_took, page_kib) = (asked.elapsed(), page.body.len() / 1024);
    assert_eq!(page.status, 200, "{}", page.body);
    let last = format!("10.{}.{}.0/24", (CIDRS - 1) / 256, (CIDRS - 1) % 256);
    assert!(page.body.contains(&format!("data-dest=\"{last}\"")), "the last CIDR has its row");
    eprintln!("status page: {page_kib} KiB rendered and sent in {:.2} s", page_took.as_secs_f64());

    // A reconcile is under way while SIGTERM arrives: a changed spec plans everything anew.
    env.write("spec.json", &large_spec().replace("127.0.1.10", "127.0.1.11"));
    d.wait_log("new route spec", Duration::from_secs(10))?;
    let asked = Instant::now();
    let exit = d.stop(Duration::from_secs(10))?;
    let stopped = asked.elapsed();
    eprintln!(
        "{CIDRS} CIDRs × 2 tables, dry run: first reconcile shown after {:.2} s, RSS {rss:.0} MiB, SIGTERM to exit {:.2} s",
        first.as_secs_f64(),
        stopped.as_secs_f64()
    );
    assert!(exit.success(), "{exit}");
    assert!(stopped < Duration::from_secs(5), "SIGTERM took {stopped:?} to stop the daemon");
    Ok(())
}
