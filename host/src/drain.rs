//! Drains (maintenance mode): routers an operator takes out of service before patching
//! them (`vpcrouter drain IP`, `POST /drain/IP`).
//!
//! A drained router is no candidate: the planner moves its routes to another healthy
//! candidate (reason `drained`) and routes nothing to it until it is undrained; when no
//! other candidate is healthy the route stays, with a warning. Undraining moves nothing
//! back by itself (vpc-router never fails back): the router is a candidate again.
//!
//! Where drains live:
//! * alone: in `drains.json` of `--state-dir` (default `/var/lib/vpcrouter`), written
//!   atomically (temporary file, fsync, rename, fsync of the directory) before a request is
//!   answered, so that drains survive a restart. A drain that cannot be stored is refused
//!   (the request fails) rather than kept in memory only; a corrupt file stops the start.
//! * in cluster mode: in etcd, `/vpcrouter/<cluster>/drains/<ip>` (no lease), so that every
//!   leader honours them; any instance takes requests, and every instance learns of them
//!   through its watch of the cluster's keys. The state file is not used then: etcd is the
//!   one truth, and a file per instance could only disagree with it.
//!
//! [`Drains`] is the handle the status server and the start-up share; the engine hears of
//! each change through the callback it was made with.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use crate::cluster::ClusterHandle;
use crate::sync::lock;

/// The state file's name in `--state-dir`.
pub const STATE_FILE: &str = "drains.json";
/// The longest reason kept, in characters.
pub const MAX_REASON: usize = 256;
/// The largest state file read or written: a drain takes about 100 bytes, at most about
/// 1.1 KiB with the longest reason, so this holds over 900 drains of the longest reasons
/// (about 9,000 with short ones), far more routers than a VPC has.
pub const MAX_STATE_FILE: u64 = 1 << 20;

/// One drained router.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Drain {
    /// The router, as the route spec names it.
    pub ip: Ipv4Addr,
    /// When it was drained (RFC 3339, UTC).
    pub since: String,
    /// Why, as the operator said (may be empty).
    #[serde(default)]
    pub reason: String,
}

impl Drain {
    /// A drain of `ip` starting now.
    pub fn now(ip: Ipv4Addr, reason: &str) -> Drain {
        Drain { ip, since: vpcrouter_plugin_api::time::rfc3339(SystemTime::now()), reason: reason.to_string() }
    }
}

/// The drains in force, by router.
pub type DrainSet = BTreeMap<Ipv4Addr, Drain>;

/// The state file's content.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    drains: Vec<Drain>,
}

/// Why drains could not be loaded or changed.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The state file exists but cannot be read.
    #[error("{}: cannot read the drain state file: {error}; {}", path.display(), read_advice(error))]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// Something else than a regular file has the state file's name.
    #[error("{}: the drain state file is {kind}, not a regular file; remove it (vpcrouter writes the file itself) to start with no router drained", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is ("a FIFO (named pipe)", "a directory", ...).
        kind: &'static str,
    },
    /// The state file is larger than vpcrouter ever writes it.
    #[error("{}: the drain state file is larger than {} MiB, more than vpcrouter writes; it is not vpcrouter's: move it away to start with no router drained", path.display(), MAX_STATE_FILE >> 20)]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The state file is not what vpcrouter wrote.
    #[error("{}: not a drain state file ({error}); fix it, or remove it to start with no router drained", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        error: String,
    },
    /// The drain could not be stored: it is not in force.
    #[error("cannot store the drain state in {}: {error}; the change is not made: give vpcrouter a writable --state-dir", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The drains would not fit in the state file.
    #[error("cannot store {count} drains: the drain state file would be larger than {} MiB; the change is not made: undrain the routers that are back in service, or use shorter reasons", MAX_STATE_FILE >> 20)]
    Full {
        /// How many drains the file would hold.
        count: usize,
    },
    /// Cluster mode: etcd did not take the change.
    #[error("cluster mode: the drain state is kept in etcd, and {0}; the change is not made")]
    Cluster(String),
}

/// What a drain request did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changed {
    /// The drain in force for the router (`None` once undrained).
    pub drain: Option<Drain>,
    /// False when the request changed nothing (the router was drained, or not, already).
    pub changed: bool,
}

/// Where the drains are kept.
enum Store {
    /// `drains.json` in this directory.
    File(PathBuf),
    /// etcd, through the cluster session (set once the cluster is joined).
    Cluster(OnceLock<ClusterHandle>),
}

struct Inner {
    store: Store,
    current: Mutex<DrainSet>,
    on_change: Box<dyn Fn(BTreeSet<Ipv4Addr>) + Send + Sync>,
}

/// The drains in force and the way to change them; cheap to clone.
#[derive(Clone)]
pub struct Drains {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Drains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drains").field("scope", &self.scope()).field("drains", &self.list()).finish()
    }
}

impl Drains {
    /// Drains kept in `dir`/[`STATE_FILE`]: loads the file (none yet: nothing drained). The
    /// directory is created if missing; when it cannot be, the start goes on (a later drain
    /// request fails and says why). `on_change` gets the drained routers after each change.
    pub fn open(
        dir: &Path,
        on_change: impl Fn(BTreeSet<Ipv4Addr>) + Send + Sync + 'static,
    ) -> Result<Drains, DrainError> {
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::warn!(
                state_dir = %dir.display(),
                "cannot create the state directory ({e}): drain requests will fail until it can be written"
            );
        }
        let current = load(&dir.join(STATE_FILE))?;
        Ok(Drains::with(Store::File(dir.to_path_buf()), current, on_change))
    }

    /// Drains kept in etcd (cluster mode); [`Drains::attach`] hands over the cluster.
    pub fn in_cluster(on_change: impl Fn(BTreeSet<Ipv4Addr>) + Send + Sync + 'static) -> Drains {
        Drains::with(Store::Cluster(OnceLock::new()), DrainSet::new(), on_change)
    }

    fn with(store: Store, current: DrainSet, on_change: impl Fn(BTreeSet<Ipv4Addr>) + Send + Sync + 'static) -> Drains {
        Drains { inner: Arc::new(Inner { store, current: Mutex::new(current), on_change: Box::new(on_change) }) }
    }

    /// Cluster mode: the session that stores the drains.
    pub fn attach(&self, cluster: ClusterHandle) {
        if let Store::Cluster(c) = &self.inner.store {
            let _ = c.set(cluster);
        }
    }

    /// `local` (the state file) or `cluster` (etcd).
    pub fn scope(&self) -> &'static str {
        match self.inner.store {
            Store::File(_) => "local",
            Store::Cluster(_) => "cluster",
        }
    }

    /// Where the drains are kept, for messages: the state file, or the etcd keys.
    pub fn location(&self) -> String {
        match &self.inner.store {
            Store::File(dir) => dir.join(STATE_FILE).display().to_string(),
            Store::Cluster(c) => c.get().map_or_else(|| "etcd".to_string(), |c| format!("etcd {}", c.drain_prefix())),
        }
    }

    /// The drains in force, by router.
    pub fn list(&self) -> Vec<Drain> {
        lock(&self.inner.current).values().cloned().collect()
    }

    /// The drained routers.
    pub fn ips(&self) -> BTreeSet<Ipv4Addr> {
        lock(&self.inner.current).keys().copied().collect()
    }

    /// Drains `ip` (idempotent: a drained router keeps its `since`; a new non-empty reason
    /// replaces the old one). Stored before it is in force.
    pub async fn drain(&self, ip: Ipv4Addr, reason: &str) -> Result<Changed, DrainError> {
        let existing = lock(&self.inner.current).get(&ip).cloned();
        let wanted = match existing {
            Some(d) if reason.is_empty() || d.reason == reason => {
                return Ok(Changed { drain: Some(d), changed: false });
            }
            Some(d) => Drain { reason: reason.to_string(), ..d },
            None => Drain::now(ip, reason),
        };
        self.store(ip, Some(wanted.clone())).await?;
        tracing::info!(router = %ip, reason = %wanted.reason, scope = self.scope(), "router drained: its routes move to other healthy candidates");
        Ok(Changed { drain: Some(wanted), changed: true })
    }

    /// Undrains `ip` (idempotent). Nothing moves back by itself: the router is a candidate
    /// again.
    pub async fn undrain(&self, ip: Ipv4Addr) -> Result<Changed, DrainError> {
        if !lock(&self.inner.current).contains_key(&ip) {
            return Ok(Changed { drain: None, changed: false });
        }
        self.store(ip, None).await?;
        tracing::info!(router = %ip, scope = self.scope(), "router undrained: it is a candidate again (routes are not moved back)");
        Ok(Changed { drain: None, changed: true })
    }

    /// Stores `ip`'s drain (`None`: its undrain), then puts it in force.
    async fn store(&self, ip: Ipv4Addr, drain: Option<Drain>) -> Result<(), DrainError> {
        match &self.inner.store {
            Store::File(_) => {
                let inner = self.inner.clone();
                run_blocking(move || inner.change_file(ip, drain)).await
            }
            Store::Cluster(c) => {
                let cluster = c.get().ok_or_else(|| DrainError::Cluster("the cluster is not joined yet".into()))?;
                match &drain {
                    Some(d) => cluster.put_drain(d).await,
                    None => cluster.delete_drain(ip).await,
                }
                .map_err(DrainError::Cluster)?;
                self.inner.update(|set| match drain {
                    Some(d) => {
                        set.insert(ip, d);
                    }
                    None => {
                        set.remove(&ip);
                    }
                });
                Ok(())
            }
        }
    }

    /// Cluster mode: the drains etcd holds now (from the session's watch).
    pub fn set_from_cluster(&self, drains: DrainSet) {
        self.inner.update(|set| *set = drains.clone());
    }
}

impl Inner {
    /// Applies `change` to the drains in force; tells the engine if the routers changed.
    fn update(&self, change: impl FnOnce(&mut DrainSet)) {
        let (before, after) = {
            let mut set = lock(&self.current);
            let before: BTreeSet<Ipv4Addr> = set.keys().copied().collect();
            change(&mut set);
            (before, set.keys().copied().collect::<BTreeSet<_>>())
        };
        if before != after {
            (self.on_change)(after);
        }
    }

    /// File mode: sets (or with `None` removes) the drain of `ip`, writing the file first.
    fn change_file(&self, ip: Ipv4Addr, drain: Option<Drain>) -> Result<(), DrainError> {
        let Store::File(dir) = &self.store else { return Ok(()) };
        let after = {
            let mut set = lock(&self.current);
            let mut next = set.clone();
            match drain {
                Some(d) => next.insert(ip, d),
                None => next.remove(&ip),
            };
            save(dir, &next)?;
            let after: BTreeSet<Ipv4Addr> = next.keys().copied().collect();
            *set = next;
            after
        };
        (self.on_change)(after);
        Ok(())
    }
}

/// Runs file I/O off the server's event loop.
async fn run_blocking(f: impl FnOnce() -> Result<(), DrainError> + Send + 'static) -> Result<(), DrainError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(DrainError::Write { path: PathBuf::from("(state file)"), error: std::io::Error::other(e.to_string()) })
    })
}

/// What to do about a state file the system refuses to read.
fn read_advice(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::PermissionDenied => {
            "fix its permissions: the user vpcrouter runs as must read it (it lists the drained routers)"
        }
        _ => "check the file system of --state-dir (the file lists the drained routers)",
    }
}

/// Reads a state file (a regular file of at most [`MAX_STATE_FILE`] bytes, never waiting on
/// a FIFO); a missing one means nothing is drained.
pub fn load(path: &Path) -> Result<DrainSet, DrainError> {
    use vpcrouter_plugin_api::file::{read_text, FileError};
    let corrupt = |error: String| DrainError::Corrupt { path: path.to_path_buf(), error };
    let text = match read_text(path, MAX_STATE_FILE) {
        Ok(t) => t,
        // No file (or no directory to hold one): nothing is drained.
        Err(FileError::Io { source, .. })
            if matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) =>
        {
            return Ok(DrainSet::new())
        }
        Err(FileError::Io { source, .. }) => return Err(DrainError::Read { path: path.to_path_buf(), error: source }),
        Err(FileError::NotRegular { kind, .. }) => {
            return Err(DrainError::NotRegular { path: path.to_path_buf(), kind })
        }
        Err(FileError::TooLarge { .. }) => return Err(DrainError::TooLarge { path: path.to_path_buf() }),
        Err(FileError::NotUtf8 { offset, .. }) => {
            return Err(corrupt(format!("not UTF-8 text: invalid byte at offset {offset}")))
        }
    };
    let file: StateFile = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    if file.version != 1 {
        return Err(corrupt(format!("version {} is not known to this vpcrouter (it writes version 1)", file.version)));
    }
    let mut set = DrainSet::new();
    for d in file.drains {
        if set.insert(d.ip, d.clone()).is_some() {
            return Err(corrupt(format!("{} is listed twice", d.ip)));
        }
    }
    Ok(set)
}

/// Writes `drains` to `dir`/[`STATE_FILE`] atomically: a temporary file in the same
/// directory, fsync, rename over the file, fsync of the directory. Mode 0644. The temporary
/// file is created new (`O_EXCL`): whatever has its name (a FIFO, a symlink) is removed
/// first, never opened, so nothing can make the write block or land elsewhere.
pub fn save(dir: &Path, drains: &DrainSet) -> Result<(), DrainError> {
    let path = dir.join(STATE_FILE);
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |error| DrainError::Write { path, error }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let file = StateFile { version: 1, drains: drains.values().cloned().collect() };
    let mut text = serde_json::to_string_pretty(&file).map_err(|e| err(&path)(std::io::Error::other(e)))?;
    text.push('\n');
    if text.len() as u64 > MAX_STATE_FILE {
        return Err(DrainError::Full { count: drains.len() });
    }
    let tmp = dir.join(format!(".{STATE_FILE}.{}.tmp", std::process::id()));
    let written = (|| {
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        // O_DIRECTORY: a FIFO swapped in for the directory is refused, not waited on.
        std::fs::OpenOptions::new().read(true).custom_flags(O_DIRECTORY).open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(err(&path))
}

/// `O_DIRECTORY` on Linux x86_64.
#[cfg(target_arch = "x86_64")]
const O_DIRECTORY: i32 = 0o200000;
/// `O_DIRECTORY` on Linux aarch64.
#[cfg(target_arch = "aarch64")]
const O_DIRECTORY: i32 = 0o40000;

/// Checks a drain reason: at most [`MAX_REASON`] characters, no control characters.
pub fn check_reason(reason: &str) -> Result<String, String> {
    let reason = reason.trim();
    if reason.chars().count() > MAX_REASON {
        return Err(format!("the reason is longer than {MAX_REASON} characters"));
    }
    if reason.chars().any(char::is_control) {
        return Err("the reason contains control characters (newlines, tabs, ...)".into());
    }
    Ok(reason.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    type Seen = Arc<Mutex<Vec<BTreeSet<Ipv4Addr>>>>;

    fn recorder() -> (Seen, impl Fn(BTreeSet<Ipv4Addr>) + Send + Sync + 'static) {
        let seen: Seen = Arc::default();
        let s = seen.clone();
        (seen, move |set| lock(&s).push(set))
    }

    #[test]
    fn drains_are_stored_atomically_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (seen, notify) = recorder();
        let drains = Drains::open(&state, notify).unwrap();
        assert!(state.is_dir(), "created");
        let rt = runtime();
        let first = rt.block_on(drains.drain(ip("10.0.0.1"), "patching")).unwrap();
        assert!(first.changed);
        let again = rt.block_on(drains.drain(ip("10.0.0.1"), "")).unwrap();
        assert_eq!((again.changed, again.drain.as_ref()), (false, first.drain.as_ref()), "idempotent");
        let reworded = rt.block_on(drains.drain(ip("10.0.0.1"), "kernel update")).unwrap();
        assert_eq!(
            reworded.drain.as_ref().map(|d| (&d.since, d.reason.as_str())),
            Some((&first.drain.unwrap().since, "kernel update"))
        );
        rt.block_on(drains.drain(ip("10.0.0.2"), "")).unwrap();
        assert_eq!(
            *lock(&seen),
            vec![[ip("10.0.0.1")].into(), [ip("10.0.0.1")].into(), [ip("10.0.0.1"), ip("10.0.0.2")].into()]
        );
        let names: Vec<String> =
            std::fs::read_dir(&state).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, [STATE_FILE], "no temporary file left");
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(state.join(STATE_FILE)).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o644);

        let reopened = Drains::open(&state, |_| {}).unwrap();
        assert_eq!(reopened.list(), drains.list());
        assert_eq!(reopened.ips(), [ip("10.0.0.1"), ip("10.0.0.2")].into());
        assert!(!rt.block_on(reopened.undrain(ip("10.0.0.9"))).unwrap().changed);
        assert!(rt.block_on(reopened.undrain(ip("10.0.0.1"))).unwrap().changed);
        assert_eq!(Drains::open(&state, |_| {}).unwrap().ips(), [ip("10.0.0.2")].into());
    }

    #[test]
    fn a_corrupt_state_file_is_one_line_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        for bad in [
            "{",
            r#"{"version": 1, "drains": [{"ip": "10.0.0.300", "since": "x"}]}"#,
            r#"{"version": 2, "drains": []}"#,
            r#"{"version": 1, "drains": [], "x": 1}"#,
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = Drains::open(dir.path(), |_| {}).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{}: not a drain state file (", path.display())), "{e}");
            assert!(!e.contains('\n') && e.ends_with("remove it to start with no router drained"), "{e}");
        }
        std::fs::write(
            &path,
            r#"{"version": 1, "drains": [{"ip": "10.0.0.1", "since": "a"}, {"ip": "10.0.0.1", "since": "b"}]}"#,
        )
        .unwrap();
        assert!(Drains::open(dir.path(), |_| {}).unwrap_err().to_string().contains("10.0.0.1 is listed twice"));
    }

    fn mkfifo(path: &Path) {
        assert!(std::process::Command::new("mkfifo").arg(path).status().unwrap().success());
    }

    #[test]
    fn a_state_file_that_is_no_file_or_too_large_says_what_to_do_for_that_cause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let mut seen = Vec::new();
        let mut open = || {
            let e = Drains::open(dir.path(), |_| {}).unwrap_err().to_string();
            seen.push(e.clone());
            e
        };
        let started = std::time::Instant::now();
        mkfifo(&path);
        let e = open();
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "no wait for a writer");
        assert_eq!(
            e,
            format!(
                "{}: the drain state file is a FIFO (named pipe), not a regular file; remove it (vpcrouter writes \
                 the file itself) to start with no router drained",
                path.display()
            )
        );
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let e = open();
        assert!(e.contains("is a directory, not a regular file; remove it"), "{e}");
        std::fs::remove_dir(&path).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let e = open();
        assert!(e.contains("is a character device, not a regular file"), "{e}");
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, vec![b' '; (MAX_STATE_FILE + 1) as usize]).unwrap();
        let e = open();
        assert!(e.contains("larger than 1 MiB, more than vpcrouter writes") && e.ends_with("no router drained"), "{e}");
        std::fs::write(&path, b"{\"version\": 1, \"drains\": [\xff]}").unwrap();
        let e = open();
        assert!(e.contains("not UTF-8 text: invalid byte at offset 26") && e.ends_with("no router drained"), "{e}");
        std::fs::write(&path, b"{\"version\": 1,").unwrap();
        let e = open();
        assert!(
            e.contains("not a drain state file (")
                && e.ends_with("fix it, or remove it to start with no router drained"),
            "{e}"
        );
        for e in seen {
            assert!(!e.contains("permissions") && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn the_state_file_is_never_written_larger_than_it_may_be_read() {
        let dir = tempfile::tempdir().unwrap();
        let reason = "\u{1d11e}".repeat(MAX_REASON);
        let full: DrainSet = (0..1100u32)
            .map(|i| {
                let ip = Ipv4Addr::from(0x0a00_0000 + i);
                (ip, Drain::now(ip, &reason))
            })
            .collect();
        let e = save(dir.path(), &full).unwrap_err().to_string();
        assert!(e.starts_with("cannot store 1100 drains: the drain state file would be larger than 1 MiB"), "{e}");
        assert!(!dir.path().join(STATE_FILE).exists());
        // The largest set that fits is read back.
        let fits: DrainSet = full.into_iter().take(900).collect();
        save(dir.path(), &fits).unwrap();
        assert_eq!(load(&dir.path().join(STATE_FILE)).unwrap().len(), 900);
    }

    #[test]
    fn a_fifo_in_place_of_the_temporary_file_does_not_block_the_write() {
        let dir = tempfile::tempdir().unwrap();
        mkfifo(&dir.path().join(format!(".{STATE_FILE}.{}.tmp", std::process::id())));
        let started = std::time::Instant::now();
        let set: DrainSet = [(ip("10.0.0.1"), Drain::now(ip("10.0.0.1"), "x"))].into();
        save(dir.path(), &set).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(load(&dir.path().join(STATE_FILE)).unwrap(), set);
    }

    #[test]
    fn an_unwritable_state_dir_refuses_the_drain() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file where the directory should be: not creatable, even for root.
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").unwrap();
        let (seen, notify) = recorder();
        let drains = Drains::open(&blocker.join("state"), notify).unwrap();
        let e = runtime().block_on(drains.drain(ip("10.0.0.1"), "")).unwrap_err().to_string();
        assert!(e.starts_with(&format!("cannot store the drain state in {}", blocker.join("state").display())), "{e}");
        assert!(e.ends_with("give vpcrouter a writable --state-dir"), "{e}");
        assert!(drains.ips().is_empty() && lock(&seen).is_empty(), "not in force");
    }

    #[test]
    fn reasons_are_short_single_lines() {
        assert_eq!(check_reason("  patching  ").unwrap(), "patching");
        assert!(check_reason("a\nb").is_err());
        assert!(check_reason(&"x".repeat(MAX_REASON + 1)).is_err());
        assert!(check_reason(&"é".repeat(MAX_REASON)).is_ok());
    }
}
