//! The registry of drains in force, [`Drains`]: changed through the state file when alone,
//! through the cluster's [`SharedStore`] (etcd) in cluster mode.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};

use vpcrouter_plugin_api::sync::lock;

use crate::drain::{Drain, DrainSet};
use crate::state_file::{load, save, DrainError, STATE_FILE};

/// A future a [`SharedStore`] returns.
pub type StoreFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// The store of drains a cluster's instances share (etcd, in cluster mode): the port the
/// cluster implements, so that drains need not know the cluster.
pub trait SharedStore: Send + Sync {
    /// Stores `drain` (replacing the router's drain, if any).
    fn put<'a>(&'a self, drain: &'a Drain) -> StoreFuture<'a>;
    /// Removes the drain of `ip`.
    fn delete(&self, ip: Ipv4Addr) -> StoreFuture<'_>;
    /// Where the drains are kept, for messages (e.g. `etcd /vpcrouter/vpc-1/drains/`).
    fn location(&self) -> String;
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
    Cluster(OnceLock<Arc<dyn SharedStore>>),
}

/// What every clone of [`Drains`] shares.
struct Inner {
    /// Where changes are stored before they are in force.
    store: Store,
    /// The drains in force.
    current: Mutex<DrainSet>,
    /// Tells the engine the drained routers after each change.
    on_change: Box<dyn Fn(BTreeSet<Ipv4Addr>) + Send + Sync>,
    /// Tells the notifiers each change with the drains' reasons (set once, at start).
    on_diff: OnceLock<DiffFn>,
}

/// A callback given the drains before and after a change.
type DiffFn = Box<dyn Fn(&DrainSet, &DrainSet) + Send + Sync>;

/// The drains in force and the way to change them; cheap to clone.
#[derive(Clone)]
pub struct Drains {
    /// The store, the drains in force and the engine's callback, shared by every clone
    /// (the status server's, the start-up's, the cluster's).
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
        let inner =
            Inner { store, current: Mutex::new(current), on_change: Box::new(on_change), on_diff: OnceLock::new() };
        Drains { inner: Arc::new(inner) }
    }

    /// Calls `f` with the drains before and after each change from now on (the notifiers'
    /// `drained` and `undrained` events); only the first call takes effect.
    pub fn on_diff(&self, f: impl Fn(&DrainSet, &DrainSet) + Send + Sync + 'static) {
        let _ = self.inner.on_diff.set(Box::new(f));
    }

    /// Cluster mode: the session that stores the drains.
    pub fn attach(&self, store: Arc<dyn SharedStore>) {
        if let Store::Cluster(c) = &self.inner.store {
            let _ = c.set(store);
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
            Store::Cluster(c) => c.get().map_or_else(|| "etcd".to_string(), |c| c.location()),
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
                    Some(d) => cluster.put(d).await,
                    None => cluster.delete(ip).await,
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
            let before = set.clone();
            change(&mut set);
            (before, set.clone())
        };
        self.changed(&before, &after);
    }

    /// Tells the engine (when the drained routers changed) and the notifiers (when any drain
    /// changed).
    fn changed(&self, before: &DrainSet, after: &DrainSet) {
        if before.keys().ne(after.keys()) {
            (self.on_change)(after.keys().copied().collect());
        }
        if before != after {
            if let Some(f) = self.on_diff.get() {
                f(before, after);
            }
        }
    }

    /// File mode: sets (or with `None` removes) the drain of `ip`, writing the file first.
    fn change_file(&self, ip: Ipv4Addr, drain: Option<Drain>) -> Result<(), DrainError> {
        let Store::File(dir) = &self.store else { return Ok(()) };
        let (before, after) = {
            let mut set = lock(&self.current);
            let mut next = set.clone();
            match drain {
                Some(d) => next.insert(ip, d),
                None => next.remove(&ip),
            };
            save(dir, &next)?;
            (std::mem::replace(&mut *set, next.clone()), next)
        };
        // The engine hears of every stored change, as before (a new reason included).
        (self.on_change)(after.keys().copied().collect());
        if let Some(f) = self.on_diff.get() {
            f(&before, &after);
        }
        Ok(())
    }
}

/// Runs file I/O off the server's event loop.
async fn run_blocking(f: impl FnOnce() -> Result<(), DrainError> + Send + 'static) -> Result<(), DrainError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(DrainError::Write { path: PathBuf::from("(state file)"), error: std::io::Error::other(e.to_string()) })
    })
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

    /// The drains before and after a change, as `ip reason` lines.
    type Diff = (Vec<String>, Vec<String>);

    #[test]
    fn every_change_is_told_with_the_drains_before_and_after() {
        let dir = tempfile::tempdir().unwrap();
        let drains = Drains::open(dir.path(), |_| {}).unwrap();
        let diffs: Arc<Mutex<Vec<Diff>>> = Arc::default();
        let d = diffs.clone();
        let reasons = |set: &DrainSet| set.values().map(|d| format!("{} {}", d.ip, d.reason)).collect::<Vec<_>>();
        drains.on_diff(move |before, after| lock(&d).push((reasons(before), reasons(after))));
        let rt = runtime();
        rt.block_on(drains.drain(ip("10.0.0.1"), "patching")).unwrap();
        rt.block_on(drains.drain(ip("10.0.0.1"), "")).unwrap(); // no change: not told
        rt.block_on(drains.undrain(ip("10.0.0.1"))).unwrap();
        let cluster = Drains::in_cluster(|_| {});
        let c = diffs.clone();
        cluster.on_diff(move |before, after| lock(&c).push((reasons(before), reasons(after))));
        cluster.set_from_cluster([(ip("10.0.0.3"), Drain::now(ip("10.0.0.3"), "from etcd"))].into());
        let none: Vec<String> = Vec::new();
        assert_eq!(
            *lock(&diffs),
            vec![
                (none.clone(), vec!["10.0.0.1 patching".to_string()]),
                (vec!["10.0.0.1 patching".to_string()], none.clone()),
                (none, vec!["10.0.0.3 from etcd".to_string()]),
            ]
        );
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
}
