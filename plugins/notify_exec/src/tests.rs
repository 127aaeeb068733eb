//! The plugin as the host runs it (through the SDK's testkit), with real `/bin/sh` commands.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use vpcrouter_plugin_api::testkit::{sample_event, start_notifier, NotifierHarness};

use super::*;

fn start(command: &str, timeout: &str) -> NotifierHarness {
    start_notifier::<Exec>(&[(COMMAND_ARG, command), (TIMEOUT_ARG, timeout)]).unwrap()
}

/// `path` quoted for the shell (temporary paths hold no quote).
fn quoted(path: &Path) -> String {
    format!("'{}'", path.display())
}

/// The `VPCROUTER_*` variables a command saw, as it wrote them with `env`.
fn variables(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn expected(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The pid a command wrote to `path`, waited for up to 5 s.
fn pid_in(path: &Path) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(pid) = std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse().ok()) {
            return pid;
        }
        assert!(Instant::now() < deadline, "no pid in {}", path.display());
        thread::sleep(Duration::from_millis(10));
    }
}

/// True once process `pid` is gone (or a zombie: dead, waiting for init to reap it), waited
/// for up to 2 s.
fn gone_soon(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
        let state = stat.as_deref().ok().and_then(|s| s.rsplit_once(") ")).and_then(|(_, rest)| rest.chars().next());
        if matches!(state, None | Some('Z')) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A command that starts a 30 s sleep in the background, writes its pid to `pidfile` and
/// waits for it.
fn sleeper(pidfile: &Path) -> String {
    format!("sleep 30 & echo $! > {}; wait", quoted(pidfile))
}

#[test]
fn the_event_reaches_the_command_on_stdin_and_in_its_environment() {
    let dir = tempfile::tempdir().unwrap();
    let (stdin, env) = (dir.path().join("stdin"), dir.path().join("env"));
    // Only the variables the plugin sets: the test itself may run with other VPCROUTER_* ones.
    let ours = "^VPCROUTER_(EVENT|ROUTER|OLD_ROUTER|CIDR|ROUTE_TABLE|VPC|TIME)=";
    let command = format!("cat > {}; env | grep -E '{ours}' > {}", quoted(&stdin), quoted(&env));
    let h = start(&command, "10");

    let event = sample_event("route_changed");
    h.notify(&event).unwrap();
    assert_eq!(std::fs::read_to_string(&stdin).unwrap(), format!("{}\n", event.json()));
    let common = [("VPCROUTER_VPC", "vpc-0a1b2c3d"), ("VPCROUTER_TIME", "2026-12-07T10:15:30.120Z")];
    let mut want = expected(&[
        ("VPCROUTER_EVENT", "route_changed"),
        ("VPCROUTER_ROUTER", "10.0.2.10"),
        ("VPCROUTER_OLD_ROUTER", "10.0.1.10"),
        ("VPCROUTER_CIDR", "10.55.0.0/16"),
        ("VPCROUTER_ROUTE_TABLE", "rtb-0a1b2c3d"),
    ]);
    want.extend(expected(&common));
    assert_eq!(variables(&env), want);

    h.notify(&sample_event("leader")).unwrap();
    let mut want = expected(&[
        ("VPCROUTER_EVENT", "leader"),
        ("VPCROUTER_ROUTER", ""),
        ("VPCROUTER_OLD_ROUTER", ""),
        ("VPCROUTER_CIDR", ""),
        ("VPCROUTER_ROUTE_TABLE", ""),
    ]);
    want.extend(expected(&common));
    assert_eq!(variables(&env), want, "absent fields are empty variables");

    let deleted = Event::from_json(r#"{"event":"route_changed","router":null,"old_router":"10.0.1.10"}"#).unwrap();
    h.notify(&deleted).unwrap();
    let seen = variables(&env);
    assert_eq!((seen["VPCROUTER_ROUTER"].as_str(), seen["VPCROUTER_OLD_ROUTER"].as_str()), ("", "10.0.1.10"));
    assert_eq!(h.stats().delivered, 3);
}

#[test]
fn a_command_that_does_not_read_its_stdin_succeeds() {
    // More than a pipe holds: the writer must not block the delivery, nor fail it.
    let big = format!(r#"{{"event":"failover","message":"{}"}}"#, "x".repeat(200_000));
    let h = start("true", "5");
    let started = Instant::now();
    h.notify(&Event::from_json(&big).unwrap()).unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[test]
fn a_failing_command_is_an_error_with_its_status_or_signal() {
    let h = start("echo first >&2; echo 'disk full' >&2; exit 3", "10");
    assert_eq!(h.notify(&sample_event("router_up")), Err("command exited with status 3: disk full".into()));
    let stats = h.stats();
    assert_eq!((stats.delivered, stats.failed), (0, 1));
    assert!(stats.last_error.contains("status 3"), "{stats:?}");

    let h = start("exit 7", "10");
    assert_eq!(h.notify(&sample_event("router_up")), Err("command exited with status 7".into()));
    let h = start("kill -TERM $$", "10");
    assert_eq!(h.notify(&sample_event("router_up")), Err("command was killed by signal 15 (SIGTERM)".into()));
}

#[test]
fn a_command_that_cannot_start_is_an_error_with_the_reason() {
    // A NUL byte cannot be passed in an environment variable.
    let event = Event::from_json(r#"{"event":"router_down","router":"a\u0000b"}"#).unwrap();
    let e = start("true", "10").notify(&event).unwrap_err();
    assert!(e.starts_with("cannot run the command with /bin/sh -c: "), "{e}");
}

#[test]
fn a_command_past_its_timeout_has_its_whole_process_group_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let h = start(&sleeper(&pidfile), "0.3");
    let started = Instant::now();
    let result = h.notify(&sample_event("failover"));
    let took = started.elapsed();
    assert_eq!(result, Err("command did not finish within 0.3 s: its process group was killed".into()));
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(1), "{took:?}");
    let pid = pid_in(&pidfile);
    assert!(gone_soon(pid), "the background sleep {pid} survived");
}

#[test]
fn stopping_kills_the_running_commands_group_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile: PathBuf = dir.path().join("pid");
    let h = Arc::new(start(&sleeper(&pidfile), "60"));
    let delivering = h.clone();
    let delivery = thread::spawn(move || delivering.notify(&sample_event("router_down")));
    let pid = pid_in(&pidfile);

    let started = Instant::now();
    h.stop().unwrap();
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(delivery.join().unwrap(), Err("vpcrouter is stopping: the command's process group was killed".into()));
    assert!(gone_soon(pid), "the background sleep {pid} survived");
}

#[test]
fn output_lines_are_logged_by_stream_and_cut_when_too_many() {
    let h = start("echo hello; echo oops >&2", "10");
    h.notify(&sample_event("leader")).unwrap();
    assert!(h.logs.contains(LogLevel::Info, "exec: hello"), "{:?}", h.logs);
    assert!(h.logs.contains(LogLevel::Warn, "exec: oops"), "{:?}", h.logs);
    assert!(!h.logs.contains(LogLevel::Info, "truncated"), "{:?}", h.logs);

    // 200 000 lines: far more than a pipe holds, so they must be drained, not only logged.
    let h = start("i=0; while [ $i -lt 100 ]; do echo line $i; i=$((i+1)); done; yes | head -n 200000", "20");
    h.notify(&sample_event("leader")).unwrap();
    assert_eq!(h.logs.count(LogLevel::Info, "exec: line "), MAX_LINES, "{:?}", h.logs);
    assert_eq!(h.logs.count(LogLevel::Info, "exec: ... output truncated"), 1, "{:?}", h.logs);
    assert!(!h.logs.contains(LogLevel::Info, "exec: y"), "nothing after the truncation");

    let h = start("head -c 100000 /dev/zero | tr '\\0' x; echo; echo after", "10");
    h.notify(&sample_event("leader")).unwrap();
    let logged: usize = h.logs.lines().iter().filter(|(_, m)| m.starts_with("exec: ")).map(|(_, m)| m.len()).sum();
    assert!(logged <= MAX_BYTES + 100, "{logged} bytes logged");
    assert!(h.logs.contains(LogLevel::Info, "exec: xxxx"), "the long line's start is logged");
    assert!(h.logs.contains(LogLevel::Info, "exec: after"), "the next line too: {:?}", h.logs);
}

#[test]
fn the_options_are_checked_with_errors_that_say_what_to_give() {
    let check = |pairs: &[(&str, &str)]| Exec::validate_config(&PluginArgs::from_pairs(pairs.iter().copied()));
    let no_command = "the exec notifier needs a command: give --notify-exec-command 'CMD' (run with /bin/sh -c \
                      for each event)";
    assert_eq!(check(&[]), Err(no_command.into()));
    assert_eq!(check(&[(COMMAND_ARG, "  ")]), Err(no_command.into()));
    assert_eq!(check(&[(COMMAND_ARG, "true")]), Ok(()));
    for bad in ["0", "-1", "3601", "NaN"] {
        let e = check(&[(COMMAND_ARG, "true"), (TIMEOUT_ARG, bad)]).unwrap_err();
        assert_eq!(e, format!("--notify-exec-timeout must be between 0.001 and 3600 seconds (got {bad})"));
    }
    let e = check(&[(COMMAND_ARG, "true"), (TIMEOUT_ARG, "ten")]).unwrap_err();
    assert_eq!(e, "--notify-exec-timeout: 'ten' is not a valid number");

    let parsed = Config::parse(&PluginArgs::from_pairs([(COMMAND_ARG, " logger hi ")])).unwrap();
    assert_eq!(parsed, Config { command: "logger hi".into(), timeout: Duration::from_secs(10) });
    let h = start("logger hi", "2.5");
    let details = serde_json::from_str::<serde_json::Value>(&h.notifier.status().details).unwrap();
    assert_eq!(details, serde_json::json!({"command": "logger hi", "timeout_seconds": 2.5}));
}
