//! `dirspec`, an example third-party vpcrouter watcher.
//!
//! `vpcrouter -m dirspec --spec_dir /etc/vpcrouter/routes.d` merges every `*.json` file of
//! the directory, each a route spec fragment like `{"10.55.0.0/16": ["10.1.0.5"]}`, into
//! one spec. A CIDR named in several fragments gets the union of their hosts. The
//! directory is polled every `--spec_dir_interval` seconds (default 2), which keeps the
//! plugin free of dependencies besides `vpcrouter-plugin-api`.
//!
//! The plugin is a spec source: [`WatcherRun::poll`] calls [`Scanner::scan`] on the SDK's
//! thread and offers each merged spec to the SDK's sink, which sends the FULL spec only
//! when it changed and counts specs and errors for the status server.
//!
//! A fragment that cannot be read or is not a valid spec is logged (once per problem) and
//! its new content skipped: the fragment's last valid content, if any, stays in the spec,
//! so a file caught half-written never makes routes disappear. Deleting a file removes
//! its routes. A directory that cannot be read keeps the last spec sent.

#![deny(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use vpcrouter_plugin_api::file;
use vpcrouter_plugin_api::prelude::*;

/// Problems of the fragments now, by file name (shared with the status server).
type Problems = Arc<Mutex<BTreeMap<String, String>>>;

/// The largest fragment read: a FIFO, a device or a bigger file is a problem of that
/// fragment, never a hang or a memory spike (`vpcrouter_plugin_api::file`).
const MAX_FRAGMENT_BYTES: u64 = 16 << 20;

/// `--spec_dir_interval`.
fn interval(args: &PluginArgs) -> Result<std::time::Duration, String> {
    args.seconds("spec_dir_interval", 2.0, 0.1..=3600.0)
}

/// Reads the fragments of a directory and remembers what it found.
struct Scanner {
    dir: PathBuf,
    log: Logger,
    /// Last valid content of each fragment, by file name.
    fragments: BTreeMap<String, RouteSpec>,
    /// The problem last logged for each fragment, by file name.
    problems: Problems,
    /// The last merged spec (to log new ones).
    last: Option<RouteSpec>,
}

impl Scanner {
    /// The `*.json` files of the directory, by name.
    fn list(&self) -> std::io::Result<BTreeMap<String, PathBuf>> {
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") && path.is_file() {
                files.insert(path.file_name().unwrap_or_default().to_string_lossy().into_owned(), path);
            }
        }
        Ok(files)
    }

    /// Re-reads the directory and merges the fragments; an error keeps the last spec.
    fn scan(&mut self) -> Result<RouteSpec, String> {
        let files = self.list().map_err(|e| format!("Cannot read spec directory '{}': {e}", self.dir.display()))?;
        let mut problems = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        self.fragments.retain(|name, _| files.contains_key(name));
        problems.retain(|name, _| files.contains_key(name));
        for (name, path) in files {
            let read = file::read_text(&path, MAX_FRAGMENT_BYTES).map_err(|e| e.to_string());
            match read.and_then(|text| RouteSpec::from_json(&text).map_err(|e| e.to_string())) {
                Ok(fragment) => {
                    if problems.remove(&name).is_some() {
                        self.log.info(format!("Fragment '{}' is valid again", path.display()));
                    }
                    self.fragments.insert(name, fragment);
                }
                Err(why) if problems.get(&name) != Some(&why) => {
                    let kept = if self.fragments.contains_key(&name) { "; its last valid content is kept" } else { "" };
                    self.log.error(format!("Fragment '{}' skipped: {why}{kept}", path.display()));
                    problems.insert(name, why);
                }
                Err(_) => {}
            }
        }
        let spec = merge(self.fragments.values())?;
        if self.last.as_ref() != Some(&spec) {
            self.log.info(format!("New route spec from '{}': {}", self.dir.display(), spec.to_json()));
            self.last = Some(spec.clone());
        }
        Ok(spec)
    }
}

/// Merges fragments into one spec; a CIDR in several fragments gets the union of hosts, in
/// the fragments' order (file names sorted), so the first fragment names its preferred router.
fn merge<'a>(fragments: impl IntoIterator<Item = &'a RouteSpec>) -> Result<RouteSpec, String> {
    let mut routes: BTreeMap<Cidr, Vec<Ipv4>> = BTreeMap::new();
    for entry in fragments.into_iter().flat_map(|f| f.routes.iter()) {
        routes.entry(entry.cidr).or_default().extend(entry.hosts.iter().copied());
    }
    RouteSpec::new(routes).map_err(|e| e.to_string())
}

/// The watcher plugin; the scanner runs on the SDK's poll thread.
pub struct DirSpec {
    problems: Problems,
}

impl PluginDescription for DirSpec {
    const NAME: &'static str = "dirspec";
    const DESCRIPTION: &'static str = "Merges the *.json route spec fragments of a directory (example)";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn arguments() -> Vec<ArgSpec> {
        vec![
            ArgSpec::value("spec_dir", "DIR", "directory of *.json route spec fragments (only in dirspec mode)").required(),
            ArgSpec::value("spec_dir_interval", "SECS", "poll the directory this often, default 2 (only in dirspec mode)").default("2"),
        ]
    }

    fn validate_config(args: &PluginArgs) -> Result<(), String> {
        interval(args)?;
        let dir = args.require("spec_dir")?;
        std::fs::read_dir(dir).map_err(|e| format!("Cannot read spec directory '{dir}': {e}"))?;
        Ok(())
    }
}

impl WatcherPlugin for DirSpec {
    fn start(args: &PluginArgs, run: &WatcherRun) -> Result<Self, String> {
        let (dir, every) = (Path::new(args.require("spec_dir")?).to_path_buf(), interval(args)?);
        run.log().info(format!("Dirspec watcher plugin: Starting to poll '{}' every {} s", dir.display(), every.as_secs_f64()));
        let problems = Problems::default();
        let mut scanner = Scanner { dir, log: run.log().clone(), fragments: BTreeMap::new(), problems: problems.clone(), last: None };
        run.poll("DirSpec", every, move || scanner.scan())?;
        Ok(DirSpec { problems })
    }

    /// The fragments skipped now, and why.
    fn details(&self) -> serde_json::Value {
        serde_json::json!({ "skipped_fragments": *self.problems.lock().unwrap_or_else(|e| e.into_inner()) })
    }
}

export_plugin!(watcher: DirSpec);

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::Duration;

    use vpcrouter_plugin_api::testkit::{context, nothing_within, start_watcher};
    use vpcrouter_plugin_api::{LogLevel, PluginStats};

    use super::*;

    const T: Duration = Duration::from_secs(2);

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dirspec-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn json(spec: Option<RouteSpec>) -> String {
        spec.expect("a spec in time").to_json()
    }

    #[test]
    fn merges_fragments_with_the_union_of_hosts() {
        let a = RouteSpec::from_json(r#"{"10.1.0.0/16": ["10.0.0.2"], "10.2.0.0/16": ["10.0.0.5"]}"#).unwrap();
        let b = RouteSpec::from_json(r#"{"10.1.0.0/16": ["10.0.0.1", "10.0.0.2"]}"#).unwrap();
        assert_eq!(merge([&a, &b]).unwrap().to_json(), r#"{"10.1.0.0/16":["10.0.0.2","10.0.0.1"],"10.2.0.0/16":["10.0.0.5"]}"#);
        assert!(merge([]).unwrap().is_empty());
    }

    #[test]
    fn scan_skips_bad_fragments_and_keeps_their_last_good_content() {
        let dir = scratch_dir("scan");
        let (ctx, logs) = context("dirspec");
        let mut scanner = Scanner { dir: dir.clone(), log: ctx.log, fragments: BTreeMap::new(), problems: Problems::default(), last: None };
        fs::write(dir.join("a.json"), r#"{"10.1.0.0/16": ["10.0.0.1"]}"#).unwrap();
        fs::write(dir.join("b.json"), r#"{"10.1.0.0/16": ["10.0.0.2"]}"#).unwrap();
        fs::write(dir.join("c.json"), r#"{"10.3.0.0/16": ["bad"]}"#).unwrap();
        fs::write(dir.join("notes.txt"), "not a fragment").unwrap();
        let spec = scanner.scan().unwrap();
        assert_eq!(spec.to_json(), r#"{"10.1.0.0/16":["10.0.0.1","10.0.0.2"]}"#);
        assert_eq!(logs.count(LogLevel::Error, "c.json' skipped: 'bad' (a router of '10.3.0.0/16')"), 1);

        // Logged once per problem; b.json broken now keeps its previous content.
        fs::write(dir.join("b.json"), r#"{"10.1.0.0/16": "#).unwrap();
        assert_eq!(scanner.scan().unwrap(), spec);
        assert_eq!(scanner.scan().unwrap(), spec);
        assert_eq!(logs.count(LogLevel::Error, "c.json' skipped"), 1);
        assert_eq!(logs.count(LogLevel::Error, "b.json' skipped"), 1);
        assert_eq!(logs.count(LogLevel::Error, "its last valid content is kept"), 1);
        assert_eq!(logs.count(LogLevel::Info, "New route spec from"), 1);
        fs::write(dir.join("b.json"), r#"{"10.1.0.0/16": ["10.0.0.2"]}"#).unwrap();
        assert_eq!(scanner.scan().unwrap(), spec);
        assert_eq!(logs.count(LogLevel::Info, "b.json' is valid again"), 1);

        // Deleting a fragment removes its routes; an unreadable directory is an error.
        fs::remove_file(dir.join("a.json")).unwrap();
        assert_eq!(scanner.scan().unwrap().to_json(), r#"{"10.1.0.0/16":["10.0.0.2"]}"#);
        fs::remove_dir_all(&dir).unwrap();
        assert!(scanner.scan().unwrap_err().starts_with("Cannot read spec directory"));
    }

    #[test]
    fn the_running_watcher_sends_changed_specs_and_keeps_the_last_on_errors() {
        let dir = scratch_dir("run");
        fs::write(dir.join("a.json"), r#"{"10.1.0.0/16": ["10.0.0.1"]}"#).unwrap();
        let w = start_watcher::<DirSpec>(&[("spec_dir", dir.to_str().unwrap()), ("spec_dir_interval", "0.1")]).unwrap();
        assert_eq!(json(w.next_spec(T)), r#"{"10.1.0.0/16":["10.0.0.1"]}"#);
        assert!(nothing_within(&w.specs, Duration::from_millis(300)), "unchanged");
        fs::write(dir.join("b.json"), r#"{"10.1.0.0/16": ["10.0.0.3"], "10.2.0.0/16": ["10.0.0.2"]}"#).unwrap();
        assert_eq!(json(w.next_spec(T)), r#"{"10.1.0.0/16":["10.0.0.1","10.0.0.3"],"10.2.0.0/16":["10.0.0.2"]}"#);
        fs::write(dir.join("c.json"), "[]").unwrap();
        assert!(nothing_within(&w.specs, Duration::from_millis(300)), "a bad new fragment changes nothing");
        let details: serde_json::Value = serde_json::from_str(w.watcher.status().details.as_str()).unwrap();
        assert!(details["skipped_fragments"]["c.json"].as_str().unwrap().contains("must be a JSON object"), "{details}");
        fs::remove_file(dir.join("a.json")).unwrap();
        assert_eq!(json(w.next_spec(T)), r#"{"10.1.0.0/16":["10.0.0.3"],"10.2.0.0/16":["10.0.0.2"]}"#);
        fs::remove_dir_all(&dir).unwrap();
        assert!(w.logs.wait_for(LogLevel::Error, "Cannot read spec directory", T), "{:?}", w.logs);
        assert!(nothing_within(&w.specs, Duration::from_millis(200)), "the last spec stays");
        let PluginStats::Watcher(stats) = w.watcher.status().stats else { panic!("not watcher stats") };
        assert_eq!(stats.specs_sent, 3);
        assert!(stats.errors >= 1 && stats.last_error.starts_with("Cannot read spec directory"), "{stats:?}");
        w.stop().unwrap();
    }

    #[test]
    fn options_are_checked() {
        let args = |dir: &str, i: &str| PluginArgs::from_pairs([("spec_dir", dir), ("spec_dir_interval", i)]);
        let tmp = std::env::temp_dir();
        let tmp = tmp.to_str().unwrap();
        assert_eq!(DirSpec::validate_config(&args(tmp, "2")), Ok(()));
        assert!(DirSpec::validate_config(&args(tmp, "0")).unwrap_err().contains("between"));
        let err = DirSpec::validate_config(&args("/_no_such_dir", "2")).unwrap_err();
        assert!(err.starts_with("Cannot read spec directory '/_no_such_dir'"), "{err}");
        let w = start_watcher::<DirSpec>(&[("spec_dir", tmp), ("spec_dir_interval", "0.5")]).unwrap();
        let params: Vec<(String, String)> = w.watcher.status().params.iter().map(|t| (t.0.to_string(), t.1.to_string())).collect();
        assert_eq!(params, [("spec_dir".into(), tmp.into()), ("spec_dir_interval".into(), "0.5".into())]);
        w.stop().unwrap();
    }
}
