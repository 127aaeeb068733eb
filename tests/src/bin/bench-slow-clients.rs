//! Slow clients against the status server (issue 15): N connections held open by clients
//! that each send one byte of a request head per second (reconnecting when the server
//! closes them), and meanwhile `--tries` `GET /status` from a fresh client each: median,
//! p99, max, and how many took longer than 100 ms. Prints a markdown table.
//!
//! By default starts the real daemon (`-m http -H always`, moto as EC2; needs
//! `VPCROUTER_BUILD_DIR`, a release build, and `VPCROUTER_MOTO_SERVER`) for each N of
//! `--clients` (default `100,500`). `--address 127.0.0.1:PORT` measures a server that is
//! already running instead (e.g. an older build); loopback addresses only.
//!
//! Bounded: each round holds its clients for `--warmup-secs` (default 3) before the tries,
//! and stops at the latest after `--round-secs` (default 60).

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context;
use vpcrouter_tests::http_client;
use vpcrouter_tests::slowclients::SlowClients;
use vpcrouter_tests::Env;

struct Args {
    clients: Vec<usize>,
    tries: usize,
    address: Option<SocketAddr>,
    warmup: Duration,
    round: Duration,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        clients: vec![100, 500],
        tries: 20,
        address: None,
        warmup: Duration::from_secs(3),
        round: Duration::from_secs(60),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--clients" => {
                args.clients = value()?.split(',').map(|n| n.trim().parse()).collect::<Result<_, _>>()?;
            }
            "--tries" => args.tries = value()?.parse()?,
            "--address" => {
                let addr: SocketAddr = value()?.parse()?;
                anyhow::ensure!(addr.ip().is_loopback(), "--address: loopback addresses only");
                args.address = Some(addr);
            }
            "--warmup-secs" => args.warmup = Duration::from_secs(value()?.parse()?),
            "--round-secs" => args.round = Duration::from_secs(value()?.parse()?),
            other => anyhow::bail!(
                "unknown option {other}; options: --clients N[,N...] --tries N --address 127.0.0.1:PORT --warmup-secs S --round-secs S"
            ),
        }
    }
    anyhow::ensure!(args.tries > 0 && !args.clients.is_empty(), "--tries and --clients must not be empty");
    Ok(args)
}

/// One `GET /status` on a fresh connection: the time to the complete answer.
fn try_status(addr: SocketAddr) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(15))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.set_write_timeout(Some(Duration::from_secs(15)))?;
    std::io::Write::write_all(&mut s, b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let r = http_client::read_response(&mut s)?;
    anyhow::ensure!(r.status == 200, "/status answered {}", r.status);
    Ok(t.elapsed())
}

struct Row {
    clients: usize,
    times: Vec<Duration>,
    failed: usize,
    connects: u64,
    closed: u64,
}

fn round(addr: SocketAddr, n: usize, a: &Args) -> anyhow::Result<Row> {
    let start = Instant::now();
    let deadline = start + a.round;
    let slow = SlowClients::start(addr, n, deadline)?;
    std::thread::sleep(a.warmup);
    let (mut times, mut failed) = (Vec::new(), 0);
    for _ in 0..a.tries {
        if Instant::now() >= deadline {
            break;
        }
        match try_status(addr) {
            Ok(t) => times.push(t),
            Err(e) => {
                eprintln!("a try failed: {e:#}");
                failed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let (connects, closed) = (slow.connects(), slow.closed_by_server());
    slow.stop();
    Ok(Row { clients: n, times, failed, connects, closed })
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 1000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

fn main() -> anyhow::Result<()> {
    let a = parse_args()?;
    let mut rows = Vec::new();
    for &n in &a.clients {
        let row = match a.address {
            Some(addr) => round(addr, n, &a)?,
            None => {
                let env = Env::new()?;
                let d = env.daemon().args(["-m", "http", "-H", "always"]).start()?;
                vpcrouter_tests::wait_for(Duration::from_secs(30), "the status server", || {
                    http_client::get(d.port, "/status", None).ok().filter(|r| r.status == 200)
                })
                .map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))?;
                round(SocketAddr::from(([127, 0, 0, 1], d.port)), n, &a)?
            }
        };
        eprintln!("{n} slow clients: {} tries answered, {} failed", row.times.len(), row.failed);
        rows.push(row);
    }
    println!(
        "| slow clients | tries | median | p99 | max | > 100 ms | failed | slow connects (closed by the server) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for mut r in rows {
        r.times.sort();
        let pick = |q: f64| {
            let rank = ((q * r.times.len() as f64).ceil() as usize).clamp(1, r.times.len().max(1));
            r.times.get(rank - 1).copied().map(ms).unwrap_or_else(|| "-".into())
        };
        let slow = r.times.iter().filter(|t| **t > Duration::from_millis(100)).count();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} ({}) |",
            r.clients,
            r.times.len() + r.failed,
            pick(0.5),
            pick(0.99),
            pick(1.0),
            slow,
            r.failed,
            r.connects,
            r.closed
        );
    }
    Ok(())
}
