//! Notifiers tell the world when routes move (exec hooks, webhooks, SNS, third-party plugins), and none holds up a failover or a shutdown.
//!
//! One CIDR on two routers (A = 127.0.1.10 in s1, B = 127.0.2.10 in s2) gives one route in
//! rt1 and one in rt2. At start B is marked failed, so the routes are created on A; then A
//! fails and both routes move to B: the failover each test watches the notifiers tell.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use serde_json::Value;
use vpcrouter_tests::daemon::{run_once, Daemon};
use vpcrouter_tests::{file_driven, http_client, wait_for, Env};

const T: Duration = Duration::from_secs(30);
const A: &str = "127.0.1.10";
const B: &str = "127.0.2.10";
const CIDR: &str = "10.55.0.0/16";

/// vpcrouter with `extra` options; returns once the route is on A in rt1 and rt2.
fn start(env: &Env, extra: &[&str]) -> anyhow::Result<Daemon> {
    let spec = env.write("spec.json", &format!(r#"{{"{CIDR}": ["{A}", "{B}"]}}"#));
    let health = env.write("health.json", &format!(r#"{{"failed": ["{B}"]}}"#));
    let d =
        env.daemon().args(file_driven(&spec, &health)).args(["--route_recheck_interval", "30"]).args(extra).start()?;
    let tables = tables(env);
    let on = env.wait_routed(&[&tables[0], &tables[1]], CIDR, T).map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))?;
    anyhow::ensure!(on == A, "routed on {on}, not A");
    Ok(d)
}

fn tables(env: &Env) -> [String; 2] {
    [env.world.tables[0].clone(), env.world.tables[1].clone()]
}

/// Fails A (B recovers) and waits until both routes are on B.
fn fail_a(env: &Env, d: &Daemon) -> anyhow::Result<()> {
    env.write("health.json", &format!(r#"{{"failed": ["{A}"]}}"#));
    let tables = tables(env);
    wait_for(T, "both routes on B", || {
        let t = env.world.targets(&[&tables[0], &tables[1]], CIDR).ok()?;
        t.iter().all(|r| r.as_deref() == Some(B)).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))
}

/// This notifier's entry of `/status`.
fn notifier_status(d: &Daemon, name: &str) -> anyhow::Result<Value> {
    let status = http_client::get(d.port, "/status", None)?.json()?;
    let list = status["notifiers"].as_array().cloned().unwrap_or_default();
    list.into_iter().find(|n| n["name"] == name).ok_or_else(|| anyhow::anyhow!("no notifier {name}: {status}"))
}

/// The failover's events: everything after the last `route_changed` of the start (the
/// routes created on A), as the notifier received them.
fn after_start(events: &[Value]) -> Vec<Value> {
    let created = events.iter().rposition(|e| e["event"] == "route_changed" && e["reason"] == "route missing");
    events[created.map_or(0, |i| i + 1)..].to_vec()
}

fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// The failover as the events tell it: one `route_changed` per table (A → B, router
/// failed), one `failover` of A with 2 routes moved, one `router_down` of A.
fn check_failover_events(env: &Env, events: &[Value]) {
    let failover = after_start(events);
    let moved = named(&failover, "route_changed");
    let tables: BTreeSet<&str> = moved.iter().filter_map(|e| e["route_table"].as_str()).collect();
    assert_eq!(moved.len(), 2, "{failover:#?}");
    assert_eq!(tables, env.world.tables[..2].iter().map(String::as_str).collect(), "{failover:#?}");
    for e in &moved {
        assert_eq!(
            (&e["cidr"], &e["router"], &e["old_router"]),
            (&Value::from(CIDR), &Value::from(B), &Value::from(A))
        );
        assert_eq!(e["reason"], "router failed", "{e}");
    }
    let ends = named(&failover, "failover");
    assert_eq!(ends.len(), 1, "{failover:#?}");
    assert_eq!((&ends[0]["routers"], &ends[0]["routes_moved"]), (&serde_json::json!([A]), &Value::from(2)));
    let seconds = ends[0]["seconds"].as_f64().unwrap_or(-1.0);
    assert!(seconds > 0.0 && seconds < T.as_secs_f64(), "{}", ends[0]);
    let down = named(&failover, "router_down");
    assert_eq!(down.iter().map(|e| &e["router"]).collect::<Vec<_>>(), [&Value::from(A)], "{failover:#?}");
    for e in events {
        assert_eq!(e["vpc"], env.world.vpc_id.as_str(), "{e}");
        let time = e["time"].as_str().unwrap_or_default();
        assert!(
            time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).is_ok(),
            "not RFC 3339: {e}"
        );
    }
}

/// An exec hook that keeps each event's stdin as `NNNN.json` and its `VPCROUTER_*`
/// variables as `NNNN.env` in `dir` (commands run one at a time, so the count is the order).
fn recording_hook(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "n=$(ls {d} | grep -c 'json$'); f={d}/$(printf %04d $((n + 1))); cat > $f.tmp; env | grep '^VPCROUTER_' | sort > $f.env; mv $f.tmp $f.json"
    )
}

/// The events the recording hook kept, in order, each with its variables.
fn recorded(dir: &Path) -> Vec<(Value, Vec<(String, String)>)> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect())
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .filter_map(|p| {
            let json = serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
            let env = std::fs::read_to_string(p.with_extension("env")).ok()?;
            let vars = env.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect();
            Some((json, vars))
        })
        .collect()
}

#[test]
fn exec_hooks_get_each_event_on_stdin_and_in_their_environment() -> anyhow::Result<()> {
    let env = Env::new()?;
    let dir = env.path("hook");
    std::fs::create_dir(&dir)?;
    let hook = recording_hook(&dir);
    let d = start(&env, &["--notify", "exec", "--notify-exec-command", &hook])?;
    fail_a(&env, &d)?;
    let got = wait_for(T, "the failover event", || {
        let got = recorded(&dir);
        got.iter().any(|(e, _)| e["event"] == "failover").then_some(got)
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))?;
    let events: Vec<Value> = got.iter().map(|(e, _)| e.clone()).collect();
    check_failover_events(&env, &events);
    // The start: B down at the first report, the routes created on A (no old router).
    let created = named(&events, "route_changed").into_iter().filter(|e| e["reason"] == "route missing").count();
    assert_eq!(created, 2, "{events:#?}");
    for (e, vars) in &got {
        let var = |name: &str| vars.iter().find(|(k, _)| k == name).map_or("(unset)", |(_, v)| v.as_str());
        let field = |name: &str| e[name].as_str().unwrap_or_default().to_string();
        assert_eq!(var("VPCROUTER_EVENT"), field("event"), "{e}");
        assert_eq!(var("VPCROUTER_ROUTER"), field("router"), "{e}");
        assert_eq!(var("VPCROUTER_OLD_ROUTER"), field("old_router"), "{e}");
        assert_eq!(var("VPCROUTER_CIDR"), field("cidr"), "{e}");
        assert_eq!(var("VPCROUTER_ROUTE_TABLE"), field("route_table"), "{e}");
    }
    let st = wait_for(T, "the status to count every event", || {
        let st = notifier_status(&d, "exec").ok()?;
        (st["delivered"] == got.len()).then_some(st)
    })?;
    assert_eq!((&st["failed"], &st["dropped"]), (&Value::from(0), &Value::from(0)), "{st}");
    let metrics = http_client::get(d.port, "/metrics", None)?.body;
    let line = format!("vpcrouter_notifications_total{{notifier=\"exec\",outcome=\"delivered\"}} {}", got.len());
    assert!(metrics.contains(&line), "no '{line}' in:\n{metrics}");
    Ok(())
}

/// Whether a process whose command line contains `marker` runs on this machine.
fn process_running(marker: &str) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else { return false };
    procs.flatten().any(|p| {
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        String::from_utf8_lossy(&cmdline).replace('\0', " ").contains(marker)
    })
}

/// The failover's figure in `/status`, in seconds.
fn failover_seconds(d: &Daemon) -> anyhow::Result<f64> {
    wait_for(T, "the failover in /status", || {
        let status = http_client::get(d.port, "/status", None).ok()?.json().ok()?;
        status["last_failover"]["seconds"].as_f64()
    })
}

#[test]
fn a_hanging_hook_delays_no_failover_and_no_shutdown() -> anyhow::Result<()> {
    let plain = {
        let env = Env::new()?;
        let d = start(&env, &[])?;
        fail_a(&env, &d)?;
        failover_seconds(&d)?
    };
    let env = Env::new()?;
    // A duration no other process has on its command line: the test looks for it afterwards.
    let marker = format!("sleep 30.{}", std::process::id());
    let mut d = start(&env, &["--notify", "exec", "--notify-exec-command", &marker])?;
    wait_for(T, "the hook to hang", || process_running(&marker).then_some(()))?;
    fail_a(&env, &d)?;
    let hooked = failover_seconds(&d)?;
    eprintln!("failover: {:.0} ms without a hook, {:.0} ms with a hanging hook", plain * 1e3, hooked * 1e3);
    assert!(hooked < plain + 1.0, "the hanging hook delayed the failover: {hooked} s against {plain} s");
    let stopping = Instant::now();
    let status = d.stop(Duration::from_secs(10))?;
    let took = stopping.elapsed();
    assert!(status.success(), "{status:?}\n{}", d.log());
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}\n{}", d.log());
    let log = d.log();
    assert!(log.contains("undelivered events dropped"), "{log}");
    wait_for(Duration::from_secs(3), "the hook's process group to be gone", || {
        (!process_running(&marker)).then_some(())
    })?;
    Ok(())
}

/// A webhook receiver on loopback: answers each request with the next status of `answers`
/// (the last one from then on) and keeps every request.
struct Receiver {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
}

/// One request as received.
#[derive(Clone, Debug)]
struct Request {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    answered: u16,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

impl Receiver {
    fn start(answers: &[u16]) -> anyhow::Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let (kept, answers) = (requests.clone(), answers.to_vec());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let n = kept.lock().map(|r| r.len()).unwrap_or(0);
                let status = answers.get(n).or(answers.last()).copied().unwrap_or(204);
                if let Ok(mut request) = read_request(&stream) {
                    request.answered = status;
                    let _ = answer(&stream, status);
                    if let Ok(mut k) = kept.lock() {
                        k.push(request);
                    }
                }
            }
        });
        Ok(Receiver { port, requests })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/vpcrouter", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn read_request(stream: &TcpStream) -> anyhow::Result<Request> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream);
    let mut headers = Vec::new();
    let mut line = String::new();
    reader.read_line(&mut line)?;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        match line.trim_end().split_once(':') {
            Some((k, v)) => headers.push((k.trim().to_string(), v.trim().to_string())),
            None => break,
        }
    }
    let len: usize =
        headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length")).map_or(Ok(0), |(_, v)| v.parse())?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(Request { headers, body, answered: 0 })
}

fn answer(mut stream: &TcpStream, status: u16) -> std::io::Result<()> {
    write!(stream, "HTTP/1.1 {status} Status\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
}

fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[test]
fn webhooks_are_signed_and_retried_through_server_errors() -> anyhow::Result<()> {
    let env = Env::new()?;
    let receiver = Receiver::start(&[503, 503, 204])?;
    let secret = "s3cret-shared-with-the-receiver";
    let secret_file = env.write("webhook.secret", &format!("  {secret}\n"));
    let url = receiver.url();
    let d = start(
        &env,
        &[
            "--notify",
            "webhook",
            "--notify-webhook-url",
            &url,
            "--notify-webhook-secret-file",
            secret_file.to_str().unwrap_or_default(),
        ],
    )?;
    fail_a(&env, &d)?;
    let requests = wait_for(T, "the failover event delivered", || {
        let r = receiver.requests();
        r.iter().any(|q| q.json()["event"] == "failover" && q.answered == 204).then_some(r)
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))?;
    for q in &requests {
        assert_eq!(q.header("X-Vpcrouter-Signature-256"), Some(signature(secret, &q.body).as_str()), "{q:?}");
        assert_eq!(q.header("X-Vpcrouter-Event"), q.json()["event"].as_str(), "{q:?}");
        assert_eq!(q.header("Content-Type"), Some("application/json"), "{q:?}");
    }
    // The first event was refused twice with 503, then delivered: three times the same body.
    assert_eq!(requests[..3].iter().map(|q| q.answered).collect::<Vec<_>>(), [503, 503, 204]);
    assert!(requests[..3].iter().all(|q| q.body == requests[0].body), "{requests:?}");
    let delivered: Vec<Value> = requests.iter().filter(|q| q.answered == 204).map(Request::json).collect();
    check_failover_events(&env, &delivered);
    let st = notifier_status(&d, "webhook")?;
    assert_eq!(st["failed"], 0, "{st}");
    Ok(())
}

#[test]
fn webhook_client_errors_are_not_retried() -> anyhow::Result<()> {
    let env = Env::new()?;
    let receiver = Receiver::start(&[400])?;
    let url = receiver.url();
    let d = start(&env, &["--notify", "webhook", "--notify-webhook-url", &url])?;
    fail_a(&env, &d)?;
    let st = wait_for(T, "the failover event refused", || {
        let st = notifier_status(&d, "webhook").ok()?;
        receiver.requests().iter().any(|q| q.json()["event"] == "failover").then_some(st)
    })?;
    let requests = receiver.requests();
    let bodies: BTreeSet<&[u8]> = requests.iter().map(|q| q.body.as_slice()).collect();
    assert_eq!(bodies.len(), requests.len(), "a refused event was sent again: {requests:?}");
    assert!(requests.iter().all(|q| q.header("X-Vpcrouter-Signature-256").is_none()), "no secret, no signature");
    assert!(st["last_error"].as_str().unwrap_or_default().contains("400"), "{st}");
    assert_eq!(st["delivered"], 0, "{st}");
    Ok(())
}

/// Routes enough to overflow a notifier's queue (1,000 events): 600 CIDRs in 2 tables
/// (the tables of A's and B's subnets).
#[test]
fn a_dead_webhook_keeps_its_queue_bounded_and_counts_what_it_drops() -> anyhow::Result<()> {
    let env = Env::new()?;
    let dead = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let cidrs: Vec<String> =
        (0..600).map(|i| format!("\"10.{}.{}.0/24\": [\"{A}\", \"{B}\"]", 100 + i / 250, i % 250)).collect();
    let spec = env.write("spec.json", &format!("{{{}}}", cidrs.join(", ")));
    let health = env.write("health.json", &format!(r#"{{"failed": ["{B}"]}}"#));
    let url = format!("http://127.0.0.1:{dead}/hook");
    let d = env
        .daemon()
        .args(file_driven(&spec, &health))
        .args(["--ec2-write-burst", "2000", "--ec2-write-rate", "2000", "--route-table-quota", "1000"])
        .args(["--notify", "webhook"])
        .args(["--notify-webhook-url", &url, "--notify-webhook-retry-seconds", "60"])
        .start()?;
    let st = wait_for(Duration::from_secs(120), "the queue to overflow", || {
        let st = notifier_status(&d, "webhook").ok()?;
        (st["dropped"].as_u64()? > 0).then_some(st)
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))?;
    assert!(st["queued"].as_u64().unwrap_or(u64::MAX) <= 1000, "{st}");
    assert_eq!(st["delivered"], 0, "{st}");
    let metrics = http_client::get(d.port, "/metrics", None)?.body;
    let dropped = metrics
        .lines()
        .find(|l| l.starts_with("vpcrouter_notifications_total{notifier=\"webhook\",outcome=\"dropped\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(dropped > 0.0, "{metrics}");
    assert!(d.log().contains("notifier queue full"), "{}", d.log());
    Ok(())
}

#[test]
fn sns_gets_the_failover_through_a_subscribed_queue() -> anyhow::Result<()> {
    let env = Env::new()?;
    let topic = vpcrouter_tests::sns::SnsQueue::create(&env.moto, "vpcrouter-events")?;
    let d = start(&env, &["--notify", "sns", "--notify-sns-topic-arn", &topic.topic_arn])?;
    fail_a(&env, &d)?;
    let mut envelopes = Vec::new();
    let deadline = Instant::now() + T;
    while Instant::now() < deadline && !envelopes.iter().any(|e: &Value| e["Subject"] == "vpcrouter failover") {
        envelopes.extend(topic.receive_within(Duration::from_secs(2))?);
    }
    let messages: Vec<Value> =
        envelopes.iter().filter_map(|e| serde_json::from_str(e["Message"].as_str()?).ok()).collect();
    check_failover_events(&env, &messages);
    for e in &envelopes {
        let event = serde_json::from_str::<Value>(e["Message"].as_str().unwrap_or_default())?["event"].clone();
        assert_eq!(e["Subject"], format!("vpcrouter {}", event.as_str().unwrap_or_default()), "{e}");
        assert_eq!(e["MessageAttributes"]["event"]["Value"], event, "{e}");
    }
    Ok(())
}

#[test]
fn an_unknown_notifier_is_refused_in_one_line_naming_it() {
    let fixed =
        ["-m", "fixedconf", "--fixed_cidr", CIDR, "--fixed_hosts", A, "-H", "always", "-r", "us-east-1", "-v", "vpc-1"];
    let (code, _, err) = run_once(&[&fixed[..], &["--notify", "pager"]].concat());
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("notifier plugin 'pager'") && err.contains("libvpcrouter_notify_pager.so"), "{err}");
    assert!(err.contains("exec") && err.contains("webhook") && err.contains("sns"), "{err}");
    let (code, _, err) = run_once(&[&fixed[..], &["--notify", "sns"]].concat());
    assert_eq!((code, err.trim().lines().count()), (2, 1), "{err}");
    assert!(err.contains("--notify-sns-topic-arn"), "{err}");
}

#[test]
fn a_third_party_notifier_built_out_of_tree_gets_the_events() -> anyhow::Result<()> {
    use vpcrouter_tests::thirdparty::{build_example, plugin_dir};
    let scratch = tempfile::tempdir()?;
    let lib = build_example(scratch.path(), "notify-jsonl", "libvpcrouter_notify_jsonl.so")?;
    let plugins = plugin_dir(&[&lib])?;
    let env = Env::new()?;
    let file = env.path("events.jsonl");
    let file_arg = file.to_str().unwrap_or_default();
    let dir_arg = plugins.path().to_str().unwrap_or_default();
    let d = start(&env, &["--plugin-dir", dir_arg, "--notify", "jsonl", "--notify-jsonl-file", file_arg])?;
    fail_a(&env, &d)?;
    let events = wait_for(T, "the failover line", || {
        let text = std::fs::read_to_string(&file).ok()?;
        let events: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        events.iter().any(|e| e["event"] == "failover").then_some(events)
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))?;
    check_failover_events(&env, &events);
    Ok(())
}
