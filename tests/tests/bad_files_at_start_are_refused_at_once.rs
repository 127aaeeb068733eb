//! Bad files and unknown plugin names given at start are refused at once, in one line that says what to do.
//!
//! The files: a FIFO, `/dev/zero`, a directory, a file too large, bad JSON, a plugin under a
//! directory others may write. Each is refused with one line saying what to do, at once (a
//! FIFO never hangs the start, `/dev/zero` never fills the memory), with the documented exit
//! status. No moto: every case fails before the daemon reaches EC2 (which is set to a closed
//! loopback port, so that a regression cannot reach the network either).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vpcrouter_tests::daemon::command;

/// A start must fail within this time; the child is killed (and the test fails) after `HANG`.
const QUICK: Duration = Duration::from_secs(2);
const HANG: Duration = Duration::from_secs(10);

/// The watcher and health plugins of every case: the status server's files are read first.
const BASE: &[&str] = &["-m", "http", "-H", "always", "-a", "127.0.0.1", "-r", "us-east-1", "-v", "vpc-1"];

/// How a run ended.
struct Outcome {
    code: i32,
    stderr: String,
    elapsed: Duration,
    /// Peak resident memory of the process, in KiB (from `wait4`).
    max_rss_kib: i64,
}

/// Runs vpcrouter with `args` to its end (killed after [`HANG`]): status, stderr, time, peak RSS.
#[expect(clippy::zombie_processes, reason = "the child is reaped by wait4, which also gives its peak RSS")]
fn run(args: &[&str]) -> Outcome {
    let dir = tempfile::tempdir().expect("scratch dir");
    let err_path = dir.path().join("stderr");
    let mut cmd = command(None, args);
    cmd.stdout(std::fs::File::create(dir.path().join("stdout")).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing");
    let started = Instant::now();
    let mut child = cmd.spawn().expect("cannot run vpcrouter");
    let pid = child.id() as libc::pid_t;
    // SAFETY: `rusage` is plain integers and `timeval`s: all zeros is a valid value.
    let (mut status, mut usage): (libc::c_int, libc::rusage) = (0, unsafe { std::mem::zeroed() });
    loop {
        // SAFETY: `pid` is our own child, not yet reaped; `status` and `usage` are valid
        // for writes. WNOHANG: returns 0 while it runs.
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if reaped == pid {
            break;
        }
        assert_eq!(reaped, 0, "wait4: {}", std::io::Error::last_os_error());
        if started.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vpcrouter {args:?} still runs after {HANG:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
    Outcome {
        code,
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        elapsed: started.elapsed(),
        max_rss_kib: usage.ru_maxrss,
    }
}

/// `BASE` plus `extra`, run; asserts a quick exit with `code` and one `error:` line holding
/// `needle`, and returns that line.
fn refused(extra: &[&str], code: i32, needle: &str) -> String {
    let mut args = BASE.to_vec();
    args.extend_from_slice(extra);
    refused_exactly(&args, code, needle)
}

/// [`refused`] for a whole command line.
fn refused_exactly(args: &[&str], code: i32, needle: &str) -> String {
    let o = run(args);
    assert_eq!(o.code, code, "{args:?}: {}", o.stderr);
    assert!(o.elapsed < QUICK, "{args:?}: took {:?}", o.elapsed);
    let errors: Vec<&str> = o.stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{args:?}: one error line: {}", o.stderr);
    assert!(errors[0].contains(needle), "{args:?}: expected '{needle}' in: {}", errors[0]);
    errors[0].to_string()
}

fn mkfifo(path: &Path) {
    assert!(std::process::Command::new("mkfifo").arg(path).status().expect("mkfifo").success());
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

#[test]
fn fifos_and_endless_files_as_token_tls_or_state_file_fail_the_start_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    refused(&["--http-token-file", s(&fifo)], 1, &format!("--http-token-file: '{}' is a FIFO", s(&fifo)));
    refused(&["--tls-cert", s(&fifo), "--tls-key", s(&fifo)], 1, &format!("--tls-cert: '{}' is a FIFO", s(&fifo)));
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    mkfifo(&state.join("drains.json"));
    let line =
        refused(&["--state-dir", s(&state)], 1, "the drain state file is a FIFO (named pipe), not a regular file");
    assert!(line.ends_with("remove it (vpcrouter writes the file itself) to start with no router drained"), "{line}");

    // /dev/zero as the token: refused before a byte is read, the memory stays small.
    let mut args = BASE.to_vec();
    args.extend_from_slice(&["--http-token-file", "/dev/zero"]);
    let o = run(&args);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("'/dev/zero' is a character device, not a regular file"), "{}", o.stderr);
    assert!(o.max_rss_kib < 200 << 10, "peak RSS {} KiB", o.max_rss_kib);
    eprintln!("/dev/zero as --http-token-file: exit {} in {:?}, peak RSS {} KiB", o.code, o.elapsed, o.max_rss_kib);
}

#[test]
fn a_bad_state_file_says_what_to_do_for_its_cause() {
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join("drains.json");
    let dir = s(state.path());
    std::fs::write(&file, vec![b' '; (1 << 20) + 1]).unwrap();
    let line =
        refused(&["--state-dir", dir], 1, "the drain state file is larger than 1 MiB, more than vpcrouter writes");
    assert!(line.ends_with("move it away to start with no router drained"), "{line}");
    std::fs::write(&file, r#"{"version": 1, "drains": ["#).unwrap();
    let line = refused(&["--state-dir", dir], 1, "not a drain state file (");
    assert!(line.ends_with("fix it, or remove it to start with no router drained"), "{line}");
    assert!(!line.contains("permissions"), "{line}");
}

#[test]
fn plugin_files_that_are_not_regular_files_are_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    mkfifo(&dir.path().join("libvpcrouter_fifo.so"));
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("libvpcrouter_zero.so")).unwrap();
    std::fs::create_dir(dir.path().join("libvpcrouter_dir.so")).unwrap();
    for (name, kind) in [("fifo", "a FIFO (named pipe)"), ("zero", "a character device"), ("dir", "a directory")] {
        let line = refused_exactly(
            &["--plugin-dir", s(dir.path()), "-m", name, "-H", "always"],
            1,
            &format!("exists but is {kind}, not a regular file"),
        );
        assert!(!line.contains("available"), "{line}");
    }
}

#[test]
fn unknown_or_invalid_plugin_names_are_usage_errors() {
    refused_exactly(&["-m", "nosuch", "-H", "always"], 2, "no watcher plugin 'nosuch'");
    refused_exactly(&["-m", "../etc", "-H", "always"], 2, "not a valid plugin name");
    refused_exactly(&["-m", "configfile", "-H", "nosuch"], 2, "no health plugin 'nosuch'");
}

#[test]
fn a_plugin_below_a_world_writable_directory_without_the_sticky_bit_is_refused() {
    let top = tempfile::tempdir().unwrap();
    let ww: PathBuf = top.path().join("ww");
    let plugins = ww.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let copy = plugins.join("libvpcrouter_wwcopy.so");
    std::fs::copy(vpcrouter_tests::build_dir().join("libvpcrouter_fixedconf.so"), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&ww, std::fs::Permissions::from_mode(0o777)).unwrap();
    let args = ["--plugin-dir", s(&plugins), "-m", "wwcopy", "-H", "always"];
    let line = refused_exactly(
        &args,
        1,
        &format!("the directory {} above it is writable by group or others without the sticky bit (mode 777)", s(&ww)),
    );
    assert!(line.contains(&format!("fix with 'chmod go-w {}'", s(&ww))), "{line}");
    // Without that directory's write bits the same file loads (and says it is 'fixedconf').
    std::fs::set_permissions(&ww, std::fs::Permissions::from_mode(0o755)).unwrap();
    refused_exactly(&args, 1, "contains watcher plugin 'fixedconf', expected watcher plugin 'wwcopy'");
}
