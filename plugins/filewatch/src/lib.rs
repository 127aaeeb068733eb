//! Follows one file, by its path, for the bundled plugins (`configfile`, the `file` health monitor).
//!
//! The path is resolved the way the kernel resolves it, one name at a time, following symlinks,
//! and every directory a name is looked up in is watched (inotify through `notify`, not
//! recursive): the file's own directory, each parent up to `/`, and the directories symlinks
//! lead through (Kubernetes' `..data` and its timestamped target). When a name is missing, the
//! walk stops at the directory that should hold it, which is watched until the name appears.
//! Any create, rename or remove of a name on the path resolves the path again and moves the
//! watches, so a symlink swap of a parent directory (`mv -T current.tmp current`, Kubernetes'
//! `..data` swap), a directory deleted and re-created, and a directory renamed away and
//! replaced are all followed. As a safety net the path is resolved again every [`RECHECK`] and
//! the file's identity (device, inode, size, mtime, ctime) compared with the one it had when it
//! was last read.
//!
//! A completed change is reported at once ([`Wake::Changed`]): a write closed, a file renamed
//! into place, a symlink created or renamed onto the path. Bare writes (a writer still writing),
//! creations and removals are debounced: they are reported [`DEBOUNCE`] after the first of
//! them, unless a completed change comes first.

#![deny(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{at, never, select, Receiver};
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

pub use notify;

/// How long a burst of bare writes, creations or removals may last before the file is read.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// How often the path is resolved again and the file compared with the one last read, in
/// case an event was missed (a hard link written elsewhere, a full inotify queue).
pub const RECHECK: Duration = Duration::from_secs(5);

/// Symlinks followed in one resolution before giving up, as Linux does (`ELOOP`).
const MAX_SYMLINKS: usize = 40;

/// Queued events looked at before a completed change is reported (all of them, normally).
const DRAIN_MAX: usize = 4096;

/// A directory or file that cannot be watched.
#[derive(Debug)]
pub struct WatchError {
    /// The directory (or, for an error of the watch as a whole, the file).
    pub path: PathBuf,
    /// What `notify` said.
    pub source: notify::Error,
}

impl fmt::Display for WatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cannot watch '{}' for changes: {}", self.path.display(), self.source)
    }
}

impl std::error::Error for WatchError {}

/// Why a change is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A writer closed the file.
    WriteClosed,
    /// A file, symlink or directory was renamed onto the path.
    MovedIn,
    /// A symlink on the path was created.
    LinkCreated,
    /// Bare writes, creations or removals, quiet for [`DEBOUNCE`] since the first.
    Settled,
    /// The periodic recheck found another file, or another size or time.
    Recheck,
    /// Events were lost (inotify's queue overflowed).
    Rescan,
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Trigger::WriteClosed => "write closed",
            Trigger::MovedIn => "renamed into place",
            Trigger::LinkCreated => "symlink created",
            Trigger::Settled => "changed",
            Trigger::Recheck => "periodic recheck",
            Trigger::Rescan => "events lost",
        })
    }
}

/// What [`FileWatch::wait`] returned for.
#[derive(Debug)]
pub enum Wake {
    /// The file may have changed: read it now.
    Changed(Trigger),
    /// An event that concerns the file (for the log); a read is due after the debounce.
    Event(Event),
    /// A watch error (for the log); the recheck timer still covers the file.
    Error(WatchError),
    /// The stop receiver is ready (a message, or its sender is gone).
    Stopped,
    /// The deadline passed.
    Timeout,
}

/// A directory's identity, to tell a re-created directory from the one watched.
type DirId = (u64, u64);

/// Where the path leads now: the directories a name is looked up in, and the names.
#[derive(Debug, Default)]
struct Walk {
    /// Each directory a name is looked up in, with its identity; no repeats.
    dirs: Vec<(PathBuf, DirId)>,
    /// Every entry looked up, as the path `notify` reports for it (directory joined with name).
    entries: Vec<PathBuf>,
}

/// One step of a path still to resolve.
enum Step {
    Root,
    Up,
    Name(OsString),
}

fn steps(path: &Path) -> impl Iterator<Item = Step> + '_ {
    path.components().filter_map(|c| match c {
        Component::RootDir | Component::Prefix(_) => Some(Step::Root),
        Component::ParentDir => Some(Step::Up),
        Component::Normal(name) => Some(Step::Name(name.to_os_string())),
        Component::CurDir => None,
    })
}

fn dir_id(dir: &Path) -> Option<DirId> {
    fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

/// Resolves `path` (absolute) one name at a time, as the kernel does, and records where.
///
/// The walk stops at the first name that is missing, at a file, or after [`MAX_SYMLINKS`].
fn walk(path: &Path) -> Walk {
    let mut walk = Walk::default();
    let mut todo: VecDeque<Step> = steps(path).collect();
    // Always a real directory (no symlink in it), so `..` is its lexical parent.
    let mut dir = PathBuf::from("/");
    let mut links = 0;
    while let Some(step) = todo.pop_front() {
        let name = match step {
            Step::Root => {
                dir = PathBuf::from("/");
                continue;
            }
            Step::Up => {
                dir.pop();
                continue;
            }
            Step::Name(name) => name,
        };
        let Some(id) = dir_id(&dir) else { break };
        if !walk.dirs.iter().any(|(d, _)| *d == dir) {
            walk.dirs.push((dir.clone(), id));
        }
        let entry = dir.join(&name);
        walk.entries.push(entry.clone());
        let Ok(meta) = fs::symlink_metadata(&entry) else { break };
        if meta.is_symlink() {
            links += 1;
            let Some(target) = fs::read_link(&entry).ok().filter(|_| links <= MAX_SYMLINKS) else { break };
            for step in steps(&target).collect::<Vec<_>>().into_iter().rev() {
                todo.push_front(step);
            }
        } else if meta.is_dir() {
            dir = entry;
        } else {
            break;
        }
    }
    walk
}

/// True when `notify` could not watch a directory because it is gone.
fn is_gone(e: &notify::Error) -> bool {
    match &e.kind {
        notify::ErrorKind::PathNotFound => true,
        notify::ErrorKind::Io(io) => io.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

/// What a file was when it was last read, for the recheck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// The stamp of the file `path` leads to; `None` when there is none.
fn stamp(path: &Path) -> Option<Stamp> {
    fs::metadata(path).ok().map(|m| Stamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// What an event that concerns the path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Nothing (a read, an open).
    Ignore,
    /// A read after the debounce (a bare write, a metadata change).
    Debounce,
    /// Resolve the path again, then a read after the debounce (a removal, a rename away).
    ResolveDebounce,
    /// Resolve the path again, then a read now if the entry is a symlink, else after the
    /// debounce (a creation: a symlink is complete, a new file is still being written).
    ResolveCreated,
    /// Resolve the path again, then a read now (a rename onto the path).
    ResolveNow,
    /// A read now (a write closed).
    ReadNow,
}

fn action(kind: &EventKind) -> Action {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Action::ReadNow,
        EventKind::Access(_) => Action::Ignore,
        // `notify` follows each `To` (and `From`) with a `Both` for the same rename: seen already.
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => Action::Ignore,
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => Action::ResolveNow,
        EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) => Action::ResolveDebounce,
        EventKind::Create(_) => Action::ResolveCreated,
        EventKind::Modify(_) => Action::Debounce,
        EventKind::Any | EventKind::Other => Action::ResolveDebounce,
    }
}

/// A watch on one path; the watch ends when it is dropped.
pub struct FileWatch {
    /// The path as given (absolute); resolved again after each change on it, never kept resolved.
    path: PathBuf,
    /// `notify`'s watcher; `None` for a watch that only rechecks.
    watcher: Option<RecommendedWatcher>,
    /// Events from `notify`'s thread.
    events: Receiver<notify::Result<Event>>,
    /// Where the path led at the last resolution: which events concern it.
    walk: Walk,
    /// The directories watched, with the identity each had when its watch was added.
    watched: HashMap<PathBuf, DirId>,
    /// Directories that could not be watched, so that each is reported once.
    failed: Vec<PathBuf>,
    /// Errors not returned by [`FileWatch::wait`] yet.
    errors: VecDeque<WatchError>,
    /// When the pending debounced change is to be reported.
    due: Option<Instant>,
    /// The file as it was when last read, for the recheck.
    stamp: Option<Stamp>,
    /// How often the recheck runs.
    recheck_every: Duration,
    /// When the recheck runs next.
    next_recheck: Instant,
}

impl FileWatch {
    /// Watches `path` (absolute). Only the set-up of inotify can fail; a directory that cannot
    /// be watched is reported by [`FileWatch::wait`] and covered by the recheck.
    pub fn new(path: &Path) -> Result<FileWatch, WatchError> {
        let (tx, events) = crossbeam_channel::unbounded();
        let watcher = notify::recommended_watcher(move |res| {
            // The receiver goes with the watcher; nothing is left to tell then.
            let _ = tx.send(res);
        })
        .map_err(|source| WatchError { path: path.to_path_buf(), source })?;
        let mut watch = FileWatch { watcher: Some(watcher), events, ..FileWatch::polling(path) };
        watch.resolve();
        Ok(watch)
    }

    /// A watch without inotify, for when [`FileWatch::new`] failed: only the recheck.
    pub fn polling(path: &Path) -> FileWatch {
        FileWatch {
            path: path.to_path_buf(),
            watcher: None,
            events: never(),
            walk: Walk::default(),
            watched: HashMap::new(),
            failed: Vec::new(),
            errors: VecDeque::new(),
            due: None,
            stamp: stamp(path),
            recheck_every: RECHECK,
            next_recheck: Instant::now() + RECHECK,
        }
    }

    /// Rechecks every `every` instead of [`RECHECK`].
    pub fn recheck_every(mut self, every: Duration) -> FileWatch {
        self.recheck_every = every;
        self.next_recheck = Instant::now() + every;
        self
    }

    /// Forgets a pending change: the file was just read for another reason.
    pub fn clear(&mut self) {
        self.due = None;
        self.stamp = stamp(&self.path);
    }

    /// Waits until the file may have changed, `stop` is ready or `until` passes. Debounced
    /// events and watch errors are returned as they come, for the log.
    pub fn wait(&mut self, stop: &Receiver<()>, until: Option<Instant>) -> Wake {
        loop {
            if let Some(e) = self.errors.pop_front() {
                return Wake::Error(e);
            }
            let now = Instant::now();
            if self.due.is_some_and(|t| now >= t) {
                return self.changed(Trigger::Settled);
            }
            if now >= self.next_recheck {
                if let Some(wake) = self.recheck() {
                    return wake;
                }
                continue;
            }
            if until.is_some_and(|t| now >= t) {
                return Wake::Timeout;
            }
            let timer = [self.due, Some(self.next_recheck), until].into_iter().flatten().min().map_or_else(never, at);
            select! {
                recv(stop) -> _ => return Wake::Stopped,
                recv(self.events) -> msg => match msg {
                    Ok(event) => {
                        if let Some(wake) = self.on_event(event) {
                            return wake;
                        }
                    }
                    // `notify` dropped its handler: no more events will come.
                    Err(_) => self.events = never(),
                },
                recv(timer) -> _ => {}
            }
        }
    }

    /// Handles one message from `notify`; `Some` when `wait` returns for it.
    fn on_event(&mut self, event: notify::Result<Event>) -> Option<Wake> {
        let event = match event {
            Ok(event) => event,
            Err(source) => {
                self.due.get_or_insert_with(|| Instant::now() + DEBOUNCE);
                return Some(Wake::Error(WatchError { path: self.path.clone(), source }));
            }
        };
        if event.need_rescan() {
            self.resolve();
            return Some(self.changed_now(Trigger::Rescan));
        }
        let now = match self.absorb(&event)? {
            Action::ReadNow => Trigger::WriteClosed,
            Action::ResolveNow => Trigger::MovedIn,
            Action::ResolveCreated if event.paths.iter().any(|p| p.is_symlink()) => Trigger::LinkCreated,
            _ => {
                self.due.get_or_insert_with(|| Instant::now() + DEBOUNCE);
                return Some(Wake::Event(event));
            }
        };
        Some(self.changed_now(now))
    }

    /// Updates the watches for an event; its action, `None` when it does not concern the path.
    fn absorb(&mut self, event: &Event) -> Option<Action> {
        let concerns = event.paths.iter().any(|p| self.walk.entries.contains(p) || self.watched.contains_key(p));
        let action = action(&event.kind);
        if !concerns || action == Action::Ignore {
            return None;
        }
        if matches!(action, Action::ResolveDebounce | Action::ResolveCreated | Action::ResolveNow) {
            // A watched directory that is gone or moved: its watch, if any is left, is on the
            // wrong directory now.
            for p in &event.paths {
                if self.watched.remove(p).is_some() {
                    if let Some(w) = self.watcher.as_mut() {
                        let _ = w.unwatch(p);
                    }
                }
            }
            self.resolve();
        }
        Some(action)
    }

    /// Reports a completed change, after taking in the events already queued (the read that
    /// follows sees what they did).
    fn changed_now(&mut self, trigger: Trigger) -> Wake {
        for _ in 0..DRAIN_MAX {
            match self.events.try_recv() {
                Ok(Ok(event)) if event.need_rescan() => self.resolve(),
                Ok(Ok(event)) => {
                    self.absorb(&event);
                }
                Ok(Err(source)) => self.errors.push_back(WatchError { path: self.path.clone(), source }),
                Err(_) => break,
            }
        }
        self.changed(trigger)
    }

    /// Reports a change; the file is about to be read.
    fn changed(&mut self, trigger: Trigger) -> Wake {
        self.due = None;
        self.stamp = stamp(&self.path);
        Wake::Changed(trigger)
    }

    /// The safety net: resolves the path again and compares the file with the one last read.
    fn recheck(&mut self) -> Option<Wake> {
        self.next_recheck = Instant::now() + self.recheck_every;
        self.resolve();
        (stamp(&self.path) != self.stamp).then(|| self.changed(Trigger::Recheck))
    }

    /// Resolves the path and moves the watches to the directories it goes through now.
    fn resolve(&mut self) {
        self.walk = walk(&self.path);
        let Some(watcher) = self.watcher.as_mut() else { return };
        let stale: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|&(p, id)| !self.walk.dirs.contains(&(p.clone(), *id)))
            .map(|(p, _)| p.clone())
            .collect();
        for p in stale {
            // It may be gone already (notify drops the watch of a deleted directory).
            let _ = watcher.unwatch(&p);
            self.watched.remove(&p);
        }
        for (dir, id) in &self.walk.dirs {
            if self.watched.contains_key(dir) {
                continue;
            }
            match watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(dir.clone(), *id);
                    self.failed.retain(|f| f != dir);
                }
                // Gone since the walk: the event in its parent resolves the path again.
                Err(source) if is_gone(&source) => {}
                Err(source) if !self.failed.contains(dir) => {
                    self.failed.push(dir.clone());
                    self.errors.push_back(WatchError { path: dir.clone(), source });
                }
                Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
