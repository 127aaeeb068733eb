//! Running one command for one event: spawn it in a process group of its own, feed it the
//! event, wait for it within the timeout or until the stop, kill its group if need be.

use std::io::{ErrorKind, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, Pid, Signal};
use vpcrouter_plugin_api::prelude::*;

use crate::output::Output;
use crate::Config;

/// The shell that runs the command.
const SHELL: &str = "/bin/sh";
/// How often a running command is checked for its end (and the stop for its signal).
const POLL: Duration = Duration::from_millis(10);
/// How long to wait for a killed command to be reaped.
const REAP_WITHIN: Duration = Duration::from_secs(2);
/// How long to wait for the rest of the output once the command ended (a background
/// process it left behind may hold its stdout open: its later lines are logged as they come).
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

/// The variables set for the command, from the event's fields.
const FIELD_VARIABLES: [(&str, &str); 6] = [
    ("VPCROUTER_ROUTER", "router"),
    ("VPCROUTER_OLD_ROUTER", "old_router"),
    ("VPCROUTER_CIDR", "cidr"),
    ("VPCROUTER_ROUTE_TABLE", "route_table"),
    ("VPCROUTER_VPC", "vpc"),
    ("VPCROUTER_TIME", "time"),
];

/// How a command ended.
enum Ended {
    /// By itself.
    Exited(ExitStatus),
    /// Killed at the timeout.
    TimedOut,
    /// Killed because vpcrouter is stopping.
    Stopped,
    /// Waiting for it failed (it was killed).
    WaitFailed(std::io::Error),
}

/// The variables the command gets besides vpcrouter's own environment: the event's name and
/// fields, the empty string for an absent or null field.
pub fn environment(event: &Event) -> Vec<(&'static str, String)> {
    let fields = FIELD_VARIABLES.iter().map(|(var, field)| (*var, event.text(field).unwrap_or_default()));
    std::iter::once(("VPCROUTER_EVENT", event.name().to_string())).chain(fields).collect()
}

/// Runs `config`'s command for `event`; `Ok` when it exits with status 0.
pub fn run(config: &Config, event: &Event, log: &Logger, stop: &StopToken) -> Result<(), String> {
    if stop.is_stopped() {
        return Err("vpcrouter is stopping: the command was not run".into());
    }
    let mut child = Command::new(SHELL)
        .arg("-c")
        .arg(&config.command)
        .envs(environment(event))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run the command with {SHELL} -c: {e}"))?;
    let output = Output::start(child.stdout.take(), child.stderr.take(), log);
    if let Some(stdin) = child.stdin.take() {
        feed(stdin, event.json(), log);
    }
    let ended = wait(&mut child, config.timeout, stop, log);
    let last_stderr = output.finish(OUTPUT_GRACE);
    outcome(ended, config.timeout, last_stderr)
}

/// Writes `json` and a newline to the command's stdin on a thread of its own (a command that
/// does not read its stdin must not block vpcrouter), then closes it. A command that exits
/// without reading it (a broken pipe) is fine.
fn feed(mut stdin: ChildStdin, json: &str, log: &Logger) {
    let text = format!("{json}\n");
    let writer_log = log.clone();
    let write = move || match stdin.write_all(text.as_bytes()) {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => {
            writer_log.debug(format!("exec: cannot write the event to stdin: {e}"))
        }
        _ => {}
    };
    if let Err(e) = std::thread::Builder::new().name("exec-stdin".into()).spawn(write) {
        // The command then reads end of file at once (the closure and its pipe were dropped).
        log.warn(format!("exec: cannot start a thread to write the event to the command's stdin: {e}"));
    }
}

/// Waits for the command to end, at most `timeout`; kills its group at the timeout or when
/// `stop` fires.
fn wait(child: &mut Child, timeout: Duration, stop: &StopToken, log: &Logger) -> Ended {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ended::Exited(status),
            Ok(None) => {}
            Err(e) => {
                kill_group(child, log);
                return Ended::WaitFailed(e);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            kill_group(child, log);
            return Ended::TimedOut;
        }
        if stop.wait(POLL.min(left)) {
            kill_group(child, log);
            return Ended::Stopped;
        }
    }
}

/// Kills the command's process group with SIGKILL and reaps the command (the group's
/// leader, not reaped before, so its id still names the group).
fn kill_group(child: &mut Child, log: &Logger) {
    if let Err(e) = kill_process_group(Pid::from_child(child), Signal::KILL) {
        log.warn(format!("exec: cannot kill the command's process group {}: {e}", child.id()));
        // At least the shell itself.
        let _ = child.kill();
    }
    let deadline = Instant::now() + REAP_WITHIN;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(None) => std::thread::sleep(POLL),
            Ok(Some(_)) | Err(_) => return,
        }
    }
    log.warn(format!("exec: the killed command (pid {}) did not end within {REAP_WITHIN:?}", child.id()));
}

/// The delivery's result for how the command ended.
fn outcome(ended: Ended, timeout: Duration, last_stderr: Option<String>) -> Result<(), String> {
    match ended {
        Ended::Exited(status) if status.success() => Ok(()),
        Ended::Exited(status) => {
            let what = match (status.code(), status.signal()) {
                (Some(code), _) => format!("command exited with status {code}"),
                (None, Some(signal)) => match signal_name(signal) {
                    Some(name) => format!("command was killed by signal {signal} ({name})"),
                    None => format!("command was killed by signal {signal}"),
                },
                (None, None) => format!("command ended with {status}"),
            };
            Err(match last_stderr {
                Some(line) => format!("{what}: {line}"),
                None => what,
            })
        }
        Ended::TimedOut => {
            Err(format!("command did not finish within {} s: its process group was killed", timeout.as_secs_f64()))
        }
        Ended::Stopped => Err("vpcrouter is stopping: the command's process group was killed".into()),
        Ended::WaitFailed(e) => Err(format!("cannot wait for the command: {e}; its process group was killed")),
    }
}

/// The usual name of signal `n` on Linux.
fn signal_name(n: i32) -> Option<&'static str> {
    Some(match n {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        _ => return None,
    })
}
