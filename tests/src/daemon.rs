//! The real `vpcrouter` binary as a child process, its log captured in a file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::moto::Moto;
use crate::{build_dir, free_port, wait_for};

/// A running vpcrouter.
pub struct Daemon {
    child: Option<Child>,
    /// The log file (stdout and stderr of the process).
    pub log_path: PathBuf,
    /// The port of its status server (`-p`).
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// The vpcrouter binary under test.
pub fn binary() -> PathBuf {
    build_dir().join("vpcrouter")
}

/// The `-p`/`--port` value in `args`, if any.
fn port_arg(args: &[&str]) -> Option<u16> {
    let pos = args.iter().position(|a| *a == "-p" || *a == "--port")?;
    args.get(pos + 1)?.parse().ok()
}

/// The `--state-dir` of vpcrouters started by [`command`] (through `VPCROUTER_STATE_DIR`),
/// one per test process, so that tests never touch `/var/lib/vpcrouter`. [`Daemon`]s get
/// one of their own.
fn shared_state_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::Builder::new().prefix("vpcrouter-state-").tempdir().expect("state dir")).path()
}

/// A `Command` for vpcrouter with moto's environment and the build dir as plugin dir, for
/// runs the test drives itself (to completion, or with its own pipes); daemons that keep
/// running are started with [`Daemon::builder`].
///
/// Without `-p` in `args` the status server gets a free port, so that concurrent tests
/// (and a vpcrouter running on this machine) do not collide on the default port. The
/// state dir is a temporary one (`VPCROUTER_STATE_DIR`) unless `args` name `--state-dir`.
pub fn command(moto: Option<&Moto>, args: &[&str]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.arg("--plugin-dir").arg(build_dir()).args(args).stdin(Stdio::null());
    cmd.env("VPCROUTER_STATE_DIR", shared_state_dir());
    if port_arg(args).is_none() {
        cmd.arg("-p").arg(free_port().to_string());
    }
    cmd.env_remove("VPCROUTER_PLUGIN_DIR").env("VPCROUTER_LOG", "info,vpcrouter=debug");
    if let Some(m) = moto {
        cmd.envs(m.env());
    }
    cmd
}

/// Runs vpcrouter to completion (for argument errors and `--help`): (status, stdout, stderr).
pub fn run_once(args: &[&str]) -> (i32, String, String) {
    let out = command(None, args).output().expect("cannot run vpcrouter");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a subcommand that talks to a running daemon (`drain`, `drains`, `status`, ...) as an
/// operator types it, without a terminal and without `NO_COLOR`: (status, stdout, stderr).
pub fn run_client(args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let out = Command::new(binary()).args(args).env_remove("NO_COLOR").stdin(Stdio::null()).output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// How to start a vpcrouter: its arguments, where its EC2 is and its environment. Made by
/// [`Daemon::builder`], or [`Env::daemon`](crate::Env::daemon) for a test's world.
///
/// The process gets moto's environment, the build dir as plugin dir, a state dir of its
/// own, a log file, and a free status port unless the arguments name `-p`/`--port`.
#[must_use = "a builder starts nothing until `start`"]
pub struct DaemonBuilder<'a> {
    /// The emulator whose credentials and region the process gets (and EC2 by default).
    moto: &'a Moto,
    /// `AWS_ENDPOINT_URL`: moto's, or a proxy's in front of it.
    endpoint: String,
    /// The command line, in order.
    args: Vec<String>,
    /// Variables set after moto's (they win).
    envs: Vec<(String, String)>,
    /// Variables taken out of the environment last (e.g. moto's keys, to test a profile).
    removed: Vec<String>,
}

impl DaemonBuilder<'_> {
    /// Sends EC2 calls to `url` instead of moto (e.g. a fault proxy in front of it).
    pub fn endpoint(mut self, url: &str) -> Self {
        self.endpoint = url.to_string();
        self
    }

    /// Appends arguments (`&str`s or `String`s, in an array, a slice or a `Vec`).
    pub fn args<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// Sets an environment variable of the process.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.envs.push((name.to_string(), value.to_string()));
        self
    }

    /// Takes `name` out of the process's environment, whoever set it.
    pub fn without_env(mut self, name: &str) -> Self {
        self.removed.push(name.to_string());
        self
    }

    /// Starts the process; it runs until stopped or dropped. Waits for nothing.
    pub fn start(self) -> anyhow::Result<Daemon> {
        let dir = tempfile::tempdir()?;
        let log_path = dir.path().join("vpcrouter.log");
        let log = std::fs::File::create(&log_path)?;
        let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let port = port_arg(&args).unwrap_or_else(free_port);
        let port_text = port.to_string();
        if port_arg(&args).is_none() {
            args.extend(["-p", port_text.as_str()]);
        }
        let mut cmd = command(Some(self.moto), &args);
        cmd.env("VPCROUTER_STATE_DIR", dir.path().join("state"))
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .envs(self.envs.iter().map(|(k, v)| (k, v)));
        for name in &self.removed {
            cmd.env_remove(name);
        }
        let child = cmd.stdout(log.try_clone()?).stderr(log).spawn()?;
        Ok(Daemon { child: Some(child), log_path, port, _dir: dir })
    }
}

impl Daemon {
    /// A builder for vpcrouter against `moto`, with no arguments yet (add `-r`/`-v`, or use
    /// [`Env::daemon`](crate::Env::daemon)).
    pub fn builder(moto: &Moto) -> DaemonBuilder<'_> {
        DaemonBuilder { moto, endpoint: moto.endpoint.clone(), args: Vec::new(), envs: Vec::new(), removed: Vec::new() }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        wait_for(timeout, &format!("log line '{needle}'"), || self.log().contains(needle).then_some(()))
            .map_err(|e| anyhow::anyhow!("{e}\n--- log ---\n{}", self.log()))
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // Negative pids are never formed here: the id is our own child's.
            let _ = Command::new("kill").arg(format!("-{sig}")).arg(c.id().to_string()).status();
        }
    }

    /// Sends SIGTERM and waits for the exit status (at most `timeout`).
    pub fn stop(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.signal(libc::SIGTERM);
        self.wait(timeout)
    }

    /// Waits for the process to exit by itself.
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let child = self.child.as_mut().ok_or_else(|| anyhow::anyhow!("already stopped"))?;
        let status = wait_for(timeout, "vpcrouter to exit", || child.try_wait().ok().flatten())?;
        self.child = None;
        Ok(status)
    }

    /// The log path, for messages.
    pub fn log_file(&self) -> &Path {
        &self.log_path
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
