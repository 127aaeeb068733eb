//! The status page at `/` shows the routes, the routers and the tables, and follows a failover
//! and a drain live in a real browser, loading nothing from outside the daemon.
//!
//! The real binary and plugins, moto as EC2, and Debian's Chromium driven through Playwright
//! (`tests/browser/status_page.mjs`; `make deps` installs Chromium, Node.js and
//! `playwright-core`). The Rust side runs the world and the daemon and talks to the script in
//! lines on its stdin and stdout; the browser's view is judged here. The full-page screenshot
//! it saves is the one in the README.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use vpcrouter_tests::world::other_router;
use vpcrouter_tests::{file_driven, http_client, repo_root, Env};

const T: Duration = Duration::from_secs(20);
const CIDR: &str = "10.55.0.0/16";
const OTHER_CIDR: &str = "10.66.17.0/24";
const SPEC: &str = r#"{"10.55.0.0/16": ["127.0.1.10", "127.0.2.10"], "10.66.17.0/24": ["127.0.1.10", "127.0.2.10"]}"#;
const CHROMIUM: &str = "/usr/bin/chromium";

/// Where the screenshot goes: `$CARGO_TARGET_DIR/vpcrouter-page/`, else the temp directory.
fn screenshot_path() -> anyhow::Result<PathBuf> {
    let base = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = base.join("vpcrouter-page");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir.join("status-page.png"))
}

/// The browser script, running: its stdin, and its stdout's JSON lines.
struct Browser {
    /// The `node` process; killed when the test ends, whatever happened.
    child: Child,
    /// Where the test's instructions go.
    stdin: ChildStdin,
    /// The script's JSON lines, read by a thread.
    lines: Receiver<Value>,
}

impl Browser {
    fn start(url: &str, screenshot: &std::path::Path) -> anyhow::Result<Browser> {
        let dir = repo_root().join("tests/browser");
        anyhow::ensure!(std::path::Path::new(CHROMIUM).exists(), "{CHROMIUM} is missing: `make deps` installs it");
        anyhow::ensure!(
            dir.join("node_modules/playwright-core").is_dir(),
            "tests/browser/node_modules/playwright-core is missing: `make deps` installs it (npm ci)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("status_page.mjs"))
            .args([url, screenshot.to_str().unwrap_or_default()])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot run node: `make deps` installs Node.js")?;
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let (Some(stdin), Some(stdout)) = (stdin, stdout) else { anyhow::bail!("node's pipes are missing") };
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).unwrap_or_else(|_| json!({"event": "noise", "line": line}));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Ok(Browser { child, stdin, lines })
    }

    /// The next line of event `event` within `timeout` (other output is skipped).
    fn expect(&self, event: &str, timeout: Duration) -> anyhow::Result<Value> {
        let end = std::time::Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .map_err(|_| anyhow::anyhow!("the browser script said no '{event}' within {timeout:?} (or ended)"))?;
            match line["event"].as_str() {
                Some(e) if e == event => return Ok(line),
                Some("error") => anyhow::bail!("the browser script failed: {}", line["message"]),
                _ => eprintln!("browser: {line}"),
            }
        }
    }

    fn tell(&mut self, instruction: &Value) -> anyhow::Result<()> {
        writeln!(self.stdin, "{instruction}").context("cannot write to the browser script")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn texts(list: &Value) -> Vec<&str> {
    list.as_array().map(|l| l.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

#[test]
fn the_page_shows_the_routes_and_follows_a_failover_without_a_reload() -> anyhow::Result<()> {
    let env = Env::new()?;
    let (rt1, rt2) = (env.world.tables[0].clone(), env.world.tables[1].clone());
    let spec = env.write("spec.json", SPEC);
    let health = env.write("health.json", r#"{"failed": []}"#);
    let d = env.daemon().args(file_driven(&spec, &health)).start()?;
    let first = env.wait_routed(&[&rt1, &rt2], CIDR, T)?;
    let second = other_router(&first);

    // Without JavaScript: the first answer is the whole page, under a strict CSP.
    let plain = http_client::get(d.port, "/", Some("text/html"))?;
    assert_eq!(plain.status, 200);
    for needle in [CIDR, first.as_str(), second, rt1.as_str(), rt2.as_str()] {
        assert!(plain.body.contains(needle), "no {needle} in the first render:\n{}", plain.body);
    }
    let csp = plain.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("default-src 'none'") && !csp.contains("unsafe"), "{csp}");
    assert_eq!(plain.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(plain.header("cache-control"), Some("no-store"));
    assert!(http_client::get(d.port, "/", Some("application/json"))?.json()?["SERVER"].is_object());

    let screenshot = screenshot_path()?;
    let _ = std::fs::remove_file(&screenshot);
    let url = format!("http://127.0.0.1:{}/", d.port);
    let mut browser = Browser::start(&url, &screenshot)?;
    let loaded = browser.expect("loaded", Duration::from_secs(60))?;
    assert_eq!(loaded["status"], 200, "{loaded}");
    assert_eq!(loaded["csp"].as_str(), Some(csp), "{loaded}");
    let text = loaded["text"].as_str().unwrap_or_default();
    for needle in [CIDR, first.as_str(), second] {
        assert!(text.contains(needle), "the page does not show {needle}: {loaded}");
    }
    let mut tables = texts(&loaded["tables"]);
    tables.sort_unstable();
    let mut want = vec![rt1.as_str(), rt2.as_str()];
    want.sort_unstable();
    assert_eq!(tables, want, "{loaded}");
    assert_eq!(loaded["cells"][0]["routers"], json!([first, first]), "{loaded}");

    // The router in use fails: the page follows by itself.
    env.write("health.json", &format!(r#"{{"failed": ["{first}"]}}"#));
    browser.tell(&json!({"cidr": CIDR, "router": second, "failed": first}))?;
    let seen = browser
        .expect("result", Duration::from_secs(60))
        .map_err(|e| anyhow::anyhow!("{e}\n{}\n--- log ---\n{}", env.world.dump(), d.log()))?;
    assert_eq!(env.world.targets(&[&rt1, &rt2], CIDR)?, vec![Some(second.to_string()); 2]);
    let after_ms = seen["updatedAfterMs"].as_u64().unwrap_or(u64::MAX);
    println!("the page showed the failover {after_ms} ms after the health file changed");
    assert!(after_ms < 10_000, "the page took {after_ms} ms to show the failover: {seen}");
    assert_eq!(seen["noReload"], true, "the page was reloaded: {seen}");
    assert_eq!((&seen["loads"], &seen["navigations"]), (&json!(1), &json!(1)), "{seen}");
    let failed = seen["routers"].as_array().and_then(|l| l.iter().find(|r| r["ip"] == first.as_str()));
    assert!(failed.is_some_and(|r| r["class"].as_str().unwrap_or_default().contains("failed")), "{seen}");
    assert!(seen["live"].as_str().is_some_and(|l| l.starts_with("live · updated")), "{seen}");
    assert!(seen["text"].as_str().is_some_and(|t| !t.contains("no failover yet")), "the failover is listed: {seen}");
    let origin = seen["origin"].as_str().unwrap_or("-");
    let requests = texts(&seen["requests"]);
    assert!(requests.len() >= 4, "the page, its CSS and script, and polls: {requests:?}");
    let outside: Vec<&&str> = requests.iter().filter(|r| !r.starts_with(&format!("{origin}/"))).collect();
    assert!(outside.is_empty(), "requests outside the daemon: {outside:?}");
    assert_eq!(seen["problems"], json!([]), "console errors (a CSP violation?): {seen}");

    // The remaining router is drained: with no other healthy candidate its routes stay, and
    // the page marks every cell on it.
    let drained =
        http_client::request(d.port, "POST", &format!("/drain/{second}"), &[], br#"{"reason": "kernel update"}"#)?;
    assert_eq!(drained.status, 200, "{}", drained.body);
    browser.tell(&json!({"cidr": OTHER_CIDR, "drained": second}))?;
    let marked = browser.expect("marked", Duration::from_secs(60))?;
    let row = marked["cells"].as_array().and_then(|rows| rows.iter().find(|r| r["dest"] == OTHER_CIDR));
    let marks = row.map(|r| texts(&r["marks"])).unwrap_or_default();
    assert!(marks.len() == 2 && marks.iter().all(|m| m.contains("drained")), "{marked}");
    let text = marked["text"].as_str().unwrap_or_default();
    assert!(text.contains("kernel update"), "the drain's reason is shown: {marked}");
    assert_eq!((&marked["noReload"], &marked["loads"]), (&json!(true), &json!(1)), "{marked}");
    assert_eq!(marked["problems"], json!([]), "{marked}");
    let (scroll, inner) = (marked["phone"]["scrollWidth"].as_u64(), marked["phone"]["innerWidth"].as_u64());
    assert!(scroll.is_some() && scroll <= inner, "the page overflows a phone's width: {marked}");
    let size = std::fs::metadata(&screenshot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "no screenshot at {}", screenshot.display());
    println!("screenshot: {}", screenshot.display());
    Ok(())
}
