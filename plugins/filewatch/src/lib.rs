//! Follows one file for the bundled plugins (`configfile`, the `file` health monitor).
//!
//! The file's directory is watched (inotify through `notify`, not recursive) and any create,
//! modify, rename or remove event that names the file counts, so in-place writes, editors
//! that write a temporary file and rename it over the original, delete-and-recreate, and
//! Kubernetes ConfigMap volumes (where the file is a symlink through `..data`, swapped by
//! renaming a `..`-prefixed symlink) are all seen. A burst of events yields one
//! [`Wake::Changed`], [`DEBOUNCE`] after its first event.

#![deny(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{at, never, select, Receiver};
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

pub use notify;

/// How long a burst of file events may last before the file is read.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Why the file's directory cannot be watched.
#[derive(Debug)]
pub struct WatchError {
    /// The directory.
    pub dir: PathBuf,
    /// What `notify` said.
    pub source: notify::Error,
}

impl fmt::Display for WatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cannot watch directory '{}': {}", self.dir.display(), self.source)
    }
}

impl std::error::Error for WatchError {}

/// What [`FileWatch::wait`] returned for.
#[derive(Debug)]
pub enum Wake {
    /// The file may have changed and the burst is over: read it now.
    Changed,
    /// An event that concerns the file (for the log); a read is due after the debounce.
    Event(Event),
    /// A watch error (for the log); a read is due after the debounce, in case.
    Error(notify::Error),
    /// The stop receiver is ready (a message, or its sender is gone).
    Stopped,
    /// The deadline passed.
    Timeout,
}

/// A watch on one file; the watch ends when it is dropped.
pub struct FileWatch {
    name: OsString,
    events: Receiver<notify::Result<Event>>,
    /// When the pending change is to be reported.
    due: Option<Instant>,
    _watcher: Option<RecommendedWatcher>,
}

impl FileWatch {
    /// Watches `path` (absolute; a symlink is followed by name, not resolved).
    pub fn new(path: &Path) -> Result<FileWatch, WatchError> {
        let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let (tx, events) = crossbeam_channel::unbounded();
        let watcher = notify::recommended_watcher(move |res| {
            // The receiver goes with the watcher; nothing is left to tell then.
            let _ = tx.send(res);
        })
        .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
        match watcher {
            Ok(w) => Ok(FileWatch {
                name: path.file_name().map(OsStr::to_os_string).unwrap_or_default(),
                events,
                due: None,
                _watcher: Some(w),
            }),
            Err(source) => Err(WatchError { dir, source }),
        }
    }

    /// A watch that sees nothing, for when the directory cannot be watched.
    pub fn idle() -> FileWatch {
        FileWatch { name: OsString::new(), events: never(), due: None, _watcher: None }
    }

    /// Forgets a pending change (the file was just read for another reason).
    pub fn clear(&mut self) {
        self.due = None;
    }

    /// Waits until the file may have changed, `stop` is ready or `until` passes. Events for
    /// the file and watch errors are returned as they come, and start the debounce.
    pub fn wait(&mut self, stop: &Receiver<()>, until: Option<Instant>) -> Wake {
        loop {
            if self.due_passed() {
                self.due = None;
                return Wake::Changed;
            }
            let timer = self.due.into_iter().chain(until).min().map_or_else(never, at);
            select! {
                recv(stop) -> _ => return Wake::Stopped,
                recv(self.events) -> msg => match msg {
                    Ok(Ok(event)) if concerns(&event, &self.name) => {
                        self.due.get_or_insert_with(|| Instant::now() + DEBOUNCE);
                        return Wake::Event(event);
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        self.due.get_or_insert_with(|| Instant::now() + DEBOUNCE);
                        return Wake::Error(e);
                    }
                    // `notify` dropped its handler: no more events will come.
                    Err(_) => self.events = never(),
                },
                recv(timer) -> _ => {
                    if !self.due_passed() {
                        return Wake::Timeout;
                    }
                }
            }
        }
    }

    fn due_passed(&self) -> bool {
        self.due.is_some_and(|t| Instant::now() >= t)
    }
}

/// True when `event` may have changed the file called `name` in the watched directory.
///
/// Names starting with `..` are Kubernetes' `..data` symlink and its timestamped targets.
fn concerns(event: &Event, name: &OsStr) -> bool {
    let relevant_kind = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    };
    let names_file =
        event.paths.iter().filter_map(|p| p.file_name()).any(|n| n == name || n.as_encoded_bytes().starts_with(b".."));
    event.need_rescan() || (relevant_kind && names_file)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use crossbeam_channel::{bounded, Sender};

    use super::*;

    const WAIT: Duration = Duration::from_secs(3);
    /// Longer than the debounce plus inotify delivery.
    const QUIET: Duration = Duration::from_millis(400);

    /// A watch on `file` and a stop channel that stays open.
    fn watch(file: &Path) -> (FileWatch, Sender<()>, Receiver<()>) {
        let (stop_tx, stop) = bounded(0);
        (FileWatch::new(file).unwrap(), stop_tx, stop)
    }

    /// Waits for the next change until `until` (events and errors are skipped).
    fn next_change(w: &mut FileWatch, stop: &Receiver<()>, until: Instant) -> bool {
        loop {
            match w.wait(stop, Some(until)) {
                Wake::Changed => return true,
                Wake::Event(_) | Wake::Error(_) => {}
                Wake::Stopped | Wake::Timeout => return false,
            }
        }
    }

    /// True when a change is reported within [`WAIT`].
    fn changed(w: &mut FileWatch, stop: &Receiver<()>) -> bool {
        next_change(w, stop, Instant::now() + WAIT)
    }

    /// How many changes are reported within `within`.
    fn changes(w: &mut FileWatch, stop: &Receiver<()>, within: Duration) -> usize {
        let until = Instant::now() + within;
        std::iter::from_fn(|| next_change(w, stop, until).then_some(())).count()
    }

    #[test]
    fn writes_renames_removals_and_recreation_are_seen_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("routes.json");
        fs::write(&file, "a").unwrap();
        let (mut w, _stop_tx, stop) = watch(&file);

        fs::write(&file, "b").unwrap();
        assert!(changed(&mut w, &stop));
        assert_eq!(changes(&mut w, &stop, QUIET), 0, "one change per write");

        // Other files in the directory are ignored.
        fs::write(dir.path().join("other.json"), "x").unwrap();
        assert_eq!(changes(&mut w, &stop, QUIET), 0);

        let tmp = dir.path().join("routes.json.tmp");
        fs::write(&tmp, "c").unwrap();
        fs::rename(&tmp, &file).unwrap();
        assert!(changed(&mut w, &stop));
        fs::remove_file(&file).unwrap();
        assert!(changed(&mut w, &stop));
        fs::write(&file, "d").unwrap();
        assert!(changed(&mut w, &stop));
    }

    #[test]
    fn a_burst_is_one_change() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("h.txt");
        let (mut w, _stop_tx, stop) = watch(&file);
        for i in 0..5 {
            fs::write(&file, i.to_string()).unwrap();
        }
        assert_eq!(changes(&mut w, &stop, QUIET), 1);
    }

    #[cfg(unix)]
    #[test]
    fn kubernetes_symlink_swap_is_seen() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir(d.join("..2024_01")).unwrap();
        fs::write(d.join("..2024_01/routes.json"), "a").unwrap();
        symlink("..2024_01", d.join("..data")).unwrap();
        symlink("..data/routes.json", d.join("routes.json")).unwrap();
        let (mut w, _stop_tx, stop) = watch(&d.join("routes.json"));

        fs::create_dir(d.join("..2024_02")).unwrap();
        fs::write(d.join("..2024_02/routes.json"), "b").unwrap();
        symlink("..2024_02", d.join("..data_tmp")).unwrap();
        fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        fs::remove_dir_all(d.join("..2024_01")).unwrap();
        assert!(changed(&mut w, &stop));
        assert_eq!(changes(&mut w, &stop, QUIET), 0);
    }

    #[test]
    fn stop_deadline_clear_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        let (mut w, stop_tx, stop) = watch(&file);
        let started = Instant::now();
        assert!(matches!(w.wait(&stop, Some(started + QUIET)), Wake::Timeout));
        assert!(started.elapsed() >= QUIET);

        // A change that is cleared is not reported.
        fs::write(&file, "x").unwrap();
        let until = Instant::now() + QUIET;
        let mut events = 0;
        loop {
            match w.wait(&stop, Some(until)) {
                Wake::Event(_) => {
                    events += 1;
                    w.clear();
                }
                Wake::Timeout => break,
                other => panic!("{other:?}"),
            }
        }
        assert!(events > 0);

        drop(stop_tx);
        let started = Instant::now();
        assert!(matches!(w.wait(&stop, None), Wake::Stopped));
        assert!(matches!(FileWatch::idle().wait(&stop, None), Wake::Stopped));
        assert!(started.elapsed() < Duration::from_secs(1));

        let err = FileWatch::new(Path::new("/_no_such_dir/f")).err().unwrap();
        assert!(err.to_string().starts_with("Cannot watch directory '/_no_such_dir': "), "{err}");
    }

    #[test]
    fn event_filter() {
        use notify::event::{CreateKind, ModifyKind, RenameMode};
        let name = OsStr::new("routes.json");
        let ev = |kind, path: &str| Event::new(kind).add_path(PathBuf::from(path));
        assert!(concerns(&ev(EventKind::Modify(ModifyKind::Any), "/d/routes.json"), name));
        assert!(concerns(&ev(EventKind::Create(CreateKind::File), "/d/routes.json"), name));
        assert!(concerns(&ev(EventKind::Modify(ModifyKind::Name(RenameMode::To)), "/d/..data"), name));
        assert!(!concerns(&ev(EventKind::Modify(ModifyKind::Any), "/d/routes.json.bak"), name));
        assert!(!concerns(&ev(EventKind::Access(AccessKind::Read), "/d/routes.json"), name));
        let write_closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert!(concerns(&ev(write_closed, "/d/routes.json"), name));
    }
}
