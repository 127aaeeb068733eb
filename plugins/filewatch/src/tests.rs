use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;

use crossbeam_channel::{bounded, Sender};

use super::*;

/// The bound of every wait for a change that must come.
const WAIT: Duration = Duration::from_secs(3);
/// Longer than the debounce plus inotify delivery.
const QUIET: Duration = Duration::from_millis(400);

/// A watch on `file` and a stop channel that stays open.
fn watch(file: &Path) -> (FileWatch, Sender<()>, Receiver<()>) {
    let (stop_tx, stop) = bounded(0);
    (FileWatch::new(file).unwrap(), stop_tx, stop)
}

/// Waits for the next change until `until` (events and errors are skipped).
fn next_change(w: &mut FileWatch, stop: &Receiver<()>, until: Instant) -> Option<Trigger> {
    loop {
        match w.wait(stop, Some(until)) {
            Wake::Changed(trigger) => return Some(trigger),
            Wake::Event(_) | Wake::Error(_) => {}
            Wake::Stopped | Wake::Timeout => return None,
        }
    }
}

/// The next change within [`WAIT`].
fn changed(w: &mut FileWatch, stop: &Receiver<()>) -> Option<Trigger> {
    next_change(w, stop, Instant::now() + WAIT)
}

/// How many changes are reported within `within`.
fn changes(w: &mut FileWatch, stop: &Receiver<()>, within: Duration) -> usize {
    let until = Instant::now() + within;
    std::iter::from_fn(|| next_change(w, stop, until)).count()
}

/// Reads the file (as a plugin does) after each change until it holds `want`; false when
/// [`WAIT`] passes first.
fn follows(w: &mut FileWatch, stop: &Receiver<()>, file: &Path, want: &str) -> bool {
    let until = Instant::now() + WAIT;
    while next_change(w, stop, until).is_some() {
        if fs::read_to_string(file).is_ok_and(|s| s == want) {
            return true;
        }
    }
    false
}

/// Writes `text` to `dir/name` through a temporary file renamed into place.
fn write_renamed(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, dir.join(name)).unwrap();
}

#[test]
fn writes_renames_removals_and_recreation_are_seen_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.json");
    fs::write(&file, "a").unwrap();
    let (mut w, _stop_tx, stop) = watch(&file);

    fs::write(&file, "b").unwrap();
    assert_eq!(changed(&mut w, &stop), Some(Trigger::WriteClosed));
    assert_eq!(changes(&mut w, &stop, QUIET), 0, "one change per write");

    // Other files in the directory are ignored.
    fs::write(dir.path().join("other.json"), "x").unwrap();
    assert_eq!(changes(&mut w, &stop, QUIET), 0);

    write_renamed(dir.path(), "routes.json", "c");
    assert_eq!(changed(&mut w, &stop), Some(Trigger::MovedIn));
    fs::remove_file(&file).unwrap();
    assert_eq!(changed(&mut w, &stop), Some(Trigger::Settled));
    fs::write(&file, "d").unwrap();
    assert!(follows(&mut w, &stop, &file, "d"));
    assert_eq!(changes(&mut w, &stop, QUIET), 0);
}

#[test]
fn a_closed_write_is_reported_at_once_and_a_bare_write_after_the_debounce() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("h.txt");
    fs::write(&file, "").unwrap();
    let (mut w, _stop_tx, stop) = watch(&file);

    // A writer still writing: reported once, the debounce after its first write.
    let mut writer = fs::OpenOptions::new().append(true).open(&file).unwrap();
    let t = Instant::now();
    for i in 0..5 {
        write!(writer, "{i}").unwrap();
    }
    assert_eq!(changed(&mut w, &stop), Some(Trigger::Settled));
    let settled = t.elapsed();
    assert!(settled >= DEBOUNCE, "{settled:?}");
    assert_eq!(changes(&mut w, &stop, QUIET), 0, "a burst is one change");

    // Its close is a completed change: reported without the debounce.
    let t = Instant::now();
    drop(writer);
    assert_eq!(changed(&mut w, &stop), Some(Trigger::WriteClosed));
    let closed = t.elapsed();
    // A whole write (open, write, close) the same way.
    let t = Instant::now();
    fs::write(&file, "10.0.0.1\n").unwrap();
    assert_eq!(changed(&mut w, &stop), Some(Trigger::WriteClosed));
    let written = t.elapsed();
    // Renamed into place.
    let t = Instant::now();
    write_renamed(dir.path(), "h.txt", "10.0.0.2\n");
    assert_eq!(changed(&mut w, &stop), Some(Trigger::MovedIn));
    let renamed = t.elapsed();
    eprintln!("bare write settled after {settled:?}; close reported after {closed:?}, write after {written:?}, rename after {renamed:?}");
    for took in [closed, written, renamed] {
        assert!(took < DEBOUNCE, "a completed change waits for no debounce: {took:?}");
    }
}

/// The layout of a Kubernetes ConfigMap volume: `spec.json -> ..data/spec.json`,
/// `..data -> ..2026_x`.
#[test]
fn kubernetes_data_symlink_swap_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir(d.join("..2026_x")).unwrap();
    fs::write(d.join("..2026_x/spec.json"), "x").unwrap();
    symlink("..2026_x", d.join("..data")).unwrap();
    symlink("..data/spec.json", d.join("spec.json")).unwrap();
    let file = d.join("spec.json");
    let (mut w, _stop_tx, stop) = watch(&file);

    // The update, as the kubelet does it.
    fs::create_dir(d.join("..2026_y")).unwrap();
    fs::write(d.join("..2026_y/spec.json"), "y").unwrap();
    symlink("..2026_y", d.join("..data_tmp")).unwrap();
    fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    fs::remove_dir_all(d.join("..2026_x")).unwrap();
    assert_eq!(changed(&mut w, &stop), Some(Trigger::MovedIn));
    assert_eq!(fs::read_to_string(&file).unwrap(), "y");
    assert!(changes(&mut w, &stop, QUIET) <= 1, "the old directory's removal may count once");

    // The watch moved to the new target: a change there is seen; the kubelet's next update too.
    fs::write(d.join("..2026_y/spec.json"), "y2").unwrap();
    assert!(follows(&mut w, &stop, &file, "y2"));
    fs::create_dir(d.join("..2026_z")).unwrap();
    fs::write(d.join("..2026_z/spec.json"), "z").unwrap();
    symlink("..2026_z", d.join("..data_tmp")).unwrap();
    fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    assert!(follows(&mut w, &stop, &file, "z"));
}

#[test]
fn a_parent_symlink_swapped_with_mv_t_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (r, text) in [("r1", "one"), ("r2", "two")] {
        fs::create_dir(d.join(r)).unwrap();
        fs::write(d.join(r).join("spec.json"), text).unwrap();
    }
    symlink("r1", d.join("current")).unwrap();
    let file = d.join("current/spec.json");
    let (mut w, _stop_tx, stop) = watch(&file);

    // ln -sfn r2 current.tmp && mv -T current.tmp current
    symlink("r2", d.join("current.tmp")).unwrap();
    fs::rename(d.join("current.tmp"), d.join("current")).unwrap();
    assert_eq!(changed(&mut w, &stop), Some(Trigger::MovedIn));
    assert_eq!(fs::read_to_string(&file).unwrap(), "two");

    // The old target is no longer followed; the new one is.
    fs::write(d.join("r1/spec.json"), "one again").unwrap();
    assert_eq!(changes(&mut w, &stop, QUIET), 0);
    fs::write(d.join("r2/spec.json"), "two again").unwrap();
    assert!(follows(&mut w, &stop, &file, "two again"));
}

#[test]
fn a_directory_deleted_and_recreated_is_followed() {
    let base = tempfile::tempdir().unwrap();
    let d = base.path().join("dir");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("spec.json"), "old").unwrap();
    let file = d.join("spec.json");
    let (mut w, _stop_tx, stop) = watch(&file);

    // rm -rf dir; mkdir dir; echo ... > dir/spec.json
    fs::remove_dir_all(&d).unwrap();
    fs::create_dir(&d).unwrap();
    fs::write(&file, "new").unwrap();
    assert!(follows(&mut w, &stop, &file, "new"));
    // The new directory is watched.
    fs::write(&file, "newer").unwrap();
    assert!(follows(&mut w, &stop, &file, "newer"));
}

#[test]
fn a_directory_renamed_away_and_replaced_is_followed() {
    let base = tempfile::tempdir().unwrap();
    let d = base.path().join("dir");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("spec.json"), "old").unwrap();
    let file = d.join("spec.json");
    let (mut w, _stop_tx, stop) = watch(&file);

    // mv dir dir.old; mkdir dir; then a spec written into the new dir
    fs::rename(&d, base.path().join("dir.old")).unwrap();
    fs::create_dir(&d).unwrap();
    write_renamed(&d, "spec.json", "new");
    assert!(follows(&mut w, &stop, &file, "new"));

    // The renamed directory is no longer followed; the new one is.
    fs::write(base.path().join("dir.old/spec.json"), "stale").unwrap();
    assert_eq!(changes(&mut w, &stop, QUIET), 0);
    fs::write(&file, "newer").unwrap();
    assert!(follows(&mut w, &stop, &file, "newer"));
}

#[test]
fn missing_directories_are_watched_until_they_appear() {
    let base = tempfile::tempdir().unwrap();
    let file = base.path().join("a/b/spec.json");
    let (mut w, _stop_tx, stop) = watch(&file);
    fs::create_dir_all(base.path().join("a/b")).unwrap();
    fs::write(&file, "here").unwrap();
    assert!(follows(&mut w, &stop, &file, "here"));
    fs::write(&file, "again").unwrap();
    assert!(follows(&mut w, &stop, &file, "again"));
}

#[test]
fn the_recheck_sees_a_change_without_events() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("health.txt");
    fs::write(&file, "").unwrap();
    // A hard link elsewhere changes the file without an event in a watched directory.
    let other = tempfile::tempdir().unwrap();
    let link = other.path().join("link.txt");
    fs::hard_link(&file, &link).unwrap();
    let (stop_tx, stop) = bounded(0);
    let mut w = FileWatch::new(&file).unwrap().recheck_every(Duration::from_millis(200));
    fs::write(&link, "10.0.0.1\n").unwrap();
    assert_eq!(changed(&mut w, &stop), Some(Trigger::Recheck));
    assert_eq!(changes(&mut w, &stop, QUIET), 0, "the same file again is no change");

    // A watch without inotify has the recheck alone.
    let mut w = FileWatch::polling(&file).recheck_every(Duration::from_millis(200));
    fs::write(&file, "10.0.0.2\n").unwrap();
    assert_eq!(changed(&mut w, &stop), Some(Trigger::Recheck));
    drop(stop_tx);
}

#[test]
fn stop_deadline_clear_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    let (mut w, stop_tx, stop) = watch(&file);
    let started = Instant::now();
    assert!(matches!(w.wait(&stop, Some(started + QUIET)), Wake::Timeout));
    assert!(started.elapsed() >= QUIET);

    // A debounced change that is cleared is not reported.
    fs::OpenOptions::new().create(true).truncate(false).write(true).open(&file).unwrap().write_all(b"x").ok();
    let until = Instant::now() + QUIET;
    let mut seen = 0;
    loop {
        match w.wait(&stop, Some(until)) {
            Wake::Event(_) => {
                seen += 1;
                w.clear();
            }
            Wake::Changed(Trigger::WriteClosed) => seen += 1,
            Wake::Timeout => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(seen > 0);

    drop(stop_tx);
    let started = Instant::now();
    assert!(matches!(w.wait(&stop, None), Wake::Stopped));
    assert!(matches!(FileWatch::polling(&file).wait(&stop, None), Wake::Stopped));
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn the_walk_follows_symlinks_and_stops_at_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    fs::create_dir(d.join("..2026_x")).unwrap();
    fs::write(d.join("..2026_x/spec.json"), "x").unwrap();
    symlink("..2026_x", d.join("..data")).unwrap();
    symlink("..data/spec.json", d.join("spec.json")).unwrap();
    let w = walk(&d.join("spec.json"));
    let entries: Vec<PathBuf> = w.entries.iter().filter(|e| e.starts_with(&d) && **e != d).cloned().collect();
    assert_eq!(entries, [d.join("spec.json"), d.join("..data"), d.join("..2026_x"), d.join("..2026_x/spec.json")]);
    assert_eq!(w.dirs.first().map(|(p, _)| p.as_path()), Some(Path::new("/")));
    let dirs: Vec<&Path> = w.dirs.iter().map(|(p, _)| p.as_path()).filter(|p| p.starts_with(&d)).collect();
    assert_eq!(dirs, [d.as_path(), d.join("..2026_x").as_path()]);

    // Missing: the walk stops at the directory that should hold the name.
    let w = walk(&d.join("a/b/c"));
    assert_eq!(w.entries.last(), Some(&d.join("a")));
    assert_eq!(w.dirs.last().map(|(p, _)| p), Some(&d));

    // `..` after a symlink goes to the parent of its target; a loop ends.
    fs::create_dir(d.join("real")).unwrap();
    symlink("real", d.join("link")).unwrap();
    let w = walk(&d.join("link/../spec.json"));
    assert!(w.entries.contains(&d.join("real")));
    symlink("loop", d.join("loop")).unwrap();
    let w = walk(&d.join("loop/spec.json"));
    assert_eq!(w.entries.iter().filter(|e| **e == d.join("loop")).count(), MAX_SYMLINKS + 1);
}

#[test]
fn event_actions() {
    use notify::event::{CreateKind, DataChange, RemoveKind};
    assert_eq!(action(&EventKind::Access(AccessKind::Close(AccessMode::Write))), Action::ReadNow);
    assert_eq!(action(&EventKind::Access(AccessKind::Open(AccessMode::Any))), Action::Ignore);
    assert_eq!(action(&EventKind::Modify(ModifyKind::Data(DataChange::Any))), Action::Debounce);
    assert_eq!(action(&EventKind::Modify(ModifyKind::Name(RenameMode::To))), Action::ResolveNow);
    assert_eq!(action(&EventKind::Modify(ModifyKind::Name(RenameMode::From))), Action::ResolveDebounce);
    assert_eq!(action(&EventKind::Modify(ModifyKind::Name(RenameMode::Both))), Action::Ignore);
    assert_eq!(action(&EventKind::Remove(RemoveKind::Folder)), Action::ResolveDebounce);
    assert_eq!(action(&EventKind::Create(CreateKind::File)), Action::ResolveCreated);
}
