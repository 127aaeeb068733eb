//! `dirspec`, an example third-party vpcrouter watcher.
//!
//! `vpcrouter -m dirspec --spec_dir /etc/vpcrouter/routes.d` merges every `*.json` file of
//! the directory, each a route spec fragment like `{"10.55.0.0/16": ["10.1.0.5"]}`, into
//! one spec. A CIDR named in several fragments gets the union of their hosts. The
//! directory is polled every `--spec_dir_interval` seconds (default 2), which keeps the
//! plugin free of dependencies besides `vpcrouter-plugin-api`, and the full spec is sent
//! whenever it changes.
//!
//! A fragment that cannot be read or is not a valid spec is logged (once per problem) and
//! its new content skipped: the fragment's last valid content, if any, stays in the spec,
//! so a file caught half-written never makes routes disappear. Deleting a file removes
//! its routes.

#![deny(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vpcrouter_plugin_api::export::PluginDescription;
use vpcrouter_plugin_api::serde_json;
use vpcrouter_plugin_api::worker::{StopToken, Worker};
use vpcrouter_plugin_api::{
    spec, ArgSpec, Logger, PluginArgs, PluginContext, RSender, RouteSpec, WatcherPlugin,
};

/// Allowed range of `--spec_dir_interval`, in seconds.
const INTERVAL_RANGE: (f64, f64) = (0.1, 3600.0);

/// Reads the fragments of a directory and remembers what it found.
struct Scanner {
    dir: PathBuf,
    log: Logger,
    /// Last valid content of each fragment, by file name.
    fragments: BTreeMap<String, RouteSpec>,
    /// The problem last logged for each fragment, by file name.
    problems: BTreeMap<String, String>,
    /// The problem last logged for the directory itself.
    dir_problem: Option<String>,
}

impl Scanner {
    fn new(dir: PathBuf, log: Logger) -> Self {
        Scanner {
            dir,
            log,
            fragments: BTreeMap::new(),
            problems: BTreeMap::new(),
            dir_problem: None,
        }
    }

    /// The `*.json` files of the directory, by name.
    fn list(&self) -> std::io::Result<Vec<(String, PathBuf)>> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let is_json = path.extension().is_some_and(|e| e == "json");
            if is_json && path.is_file() {
                let name =
                    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                files.push((name, path));
            }
        }
        Ok(files)
    }

    /// Re-reads the directory; `None` when it cannot be read (keep the last spec then).
    fn scan(&mut self) -> Option<RouteSpec> {
        let files = match self.list() {
            Ok(files) => files,
            Err(e) => {
                let why = format!("Cannot read spec directory '{}': {e}", self.dir.display());
                if self.dir_problem.as_ref() != Some(&why) {
                    self.log.error(&why);
                    self.dir_problem = Some(why);
                }
                return None;
            }
        };
        self.dir_problem = None;
        self.fragments.retain(|name, _| files.iter().any(|(n, _)| n == name));
        self.problems.retain(|name, _| files.iter().any(|(n, _)| n == name));
        for (name, path) in files {
            let read = std::fs::read_to_string(&path).map_err(|e| e.to_string());
            match read.and_then(|text| spec::parse_json(&text).map_err(|e| e.to_string())) {
                Ok(fragment) => {
                    if self.problems.remove(&name).is_some() {
                        self.log.info(format!("Fragment '{}' is valid again", path.display()));
                    }
                    self.fragments.insert(name, fragment);
                }
                Err(why) => {
                    if self.problems.get(&name) != Some(&why) {
                        let kept = if self.fragments.contains_key(&name) {
                            "; its last valid content is kept"
                        } else {
                            ""
                        };
                        self.log
                            .error(format!("Fragment '{}' skipped: {why}{kept}", path.display()));
                        self.problems.insert(name, why);
                    }
                }
            }
        }
        match merge(self.fragments.values()) {
            Ok(spec) => Some(spec),
            Err(why) => {
                self.log.error(format!("Cannot merge the fragments: {why}"));
                None
            }
        }
    }
}

/// Merges fragments into one spec; a CIDR in several fragments gets the union of hosts.
fn merge<'a>(fragments: impl IntoIterator<Item = &'a RouteSpec>) -> Result<RouteSpec, String> {
    let mut routes: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for fragment in fragments {
        for entry in fragment.routes.iter() {
            routes
                .entry(entry.cidr.as_str())
                .or_default()
                .extend(entry.hosts.iter().map(|h| h.as_str()));
        }
    }
    spec::from_pairs(routes).map_err(|e| e.to_string())
}

/// Polls until told to stop; sends the merged spec when it changes.
fn run(
    mut scanner: Scanner,
    mut last: Option<RouteSpec>,
    specs: RSender<RouteSpec>,
    interval: Duration,
    stop: &StopToken,
) {
    while !stop.wait(interval) {
        if !send_if_new(&mut scanner, &mut last, &specs) {
            return;
        }
    }
}

/// Scans once and sends a new spec; false when the host closed the queue.
fn send_if_new(
    scanner: &mut Scanner,
    last: &mut Option<RouteSpec>,
    specs: &RSender<RouteSpec>,
) -> bool {
    let Some(spec) = scanner.scan() else { return true };
    if last.as_ref() == Some(&spec) {
        return true;
    }
    scanner.log.info(format!(
        "New route spec from '{}': {}",
        scanner.dir.display(),
        spec.to_json()
    ));
    if specs.send(spec.clone()).is_err() {
        return false;
    }
    *last = Some(spec);
    true
}

fn interval_from(args: &PluginArgs) -> Result<f64, String> {
    let secs = args.parse::<f64>("spec_dir_interval")?.unwrap_or(2.0);
    let (min, max) = INTERVAL_RANGE;
    if !(min..=max).contains(&secs) {
        return Err(format!("--spec_dir_interval must be between {min} and {max} seconds"));
    }
    Ok(secs)
}

/// The watcher plugin.
pub struct DirSpec {
    dir: PathBuf,
    interval: f64,
    log: Option<Logger>,
    worker: Option<Worker>,
}

impl PluginDescription for DirSpec {
    const NAME: &'static str = "dirspec";
    const DESCRIPTION: &'static str =
        "Merges the *.json route spec fragments of a directory (example)";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn arguments() -> Vec<ArgSpec> {
        vec![
            ArgSpec::value(
                "spec_dir",
                "DIR",
                "directory of *.json route spec fragments (only in dirspec mode)",
            )
            .required(),
            ArgSpec::value(
                "spec_dir_interval",
                "SECS",
                "poll the directory this often, default 2 (only in dirspec mode)",
            )
            .default("2"),
        ]
    }

    fn validate_config(args: &PluginArgs) -> Result<(), String> {
        interval_from(args)?;
        let dir = args.require("spec_dir")?;
        std::fs::read_dir(dir).map_err(|e| format!("Cannot read spec directory '{dir}': {e}"))?;
        Ok(())
    }
}

impl WatcherPlugin for DirSpec {
    fn create(args: &PluginArgs) -> Result<Self, String> {
        Ok(DirSpec {
            dir: Path::new(args.require("spec_dir")?).to_path_buf(),
            interval: interval_from(args)?,
            log: None,
            worker: None,
        })
    }

    fn start(&mut self, ctx: PluginContext, specs: RSender<RouteSpec>) -> Result<(), String> {
        let log = ctx.log;
        log.info(format!(
            "Dirspec watcher plugin: Starting to poll '{}' every {} s",
            self.dir.display(),
            self.interval
        ));
        let mut scanner = Scanner::new(self.dir.clone(), log.clone());
        let mut last = None;
        send_if_new(&mut scanner, &mut last, &specs);
        let interval = Duration::from_secs_f64(self.interval);
        self.worker =
            Some(Worker::spawn("DirSpec", move |stop| run(scanner, last, specs, interval, &stop))?);
        self.log = Some(log);
        Ok(())
    }

    fn stop(&mut self) -> Result<(), String> {
        self.worker.take().map_or(Ok(()), |w| w.stop(Duration::from_secs(2)))?;
        if let Some(log) = &self.log {
            log.info("Dirspec watcher plugin: Stopped");
        }
        Ok(())
    }

    fn info(&self) -> serde_json::Value {
        serde_json::json!({
            "version": Self::VERSION,
            "params": {
                "spec_dir": self.dir.display().to_string(),
                "spec_dir_interval": self.interval,
            },
        })
    }
}

vpcrouter_plugin_api::export_plugin!(watcher: DirSpec);

#[cfg(test)]
mod tests {
    use std::fs;
    use std::sync::{Arc, Mutex};

    use vpcrouter_plugin_api::{HostLogger, LogLevel, RStr};

    use super::*;

    /// Collects log lines, as the host would print them.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<String>>>);

    impl HostLogger for Lines {
        fn log(&self, level: LogLevel, message: RStr<'_>) {
            self.0.lock().unwrap().push(format!("{level:?}: {message}"));
        }
        fn enabled(&self, _level: LogLevel) -> bool {
            true
        }
    }

    impl Lines {
        fn count(&self, needle: &str) -> usize {
            self.0.lock().unwrap().iter().filter(|l| l.contains(needle)).count()
        }
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dirspec-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn merges_fragments_with_the_union_of_hosts() {
        let a = spec::parse_json(r#"{"10.1.0.0/16": ["10.0.0.2"], "10.2.0.0/16": ["10.0.0.5"]}"#)
            .unwrap();
        let b = spec::parse_json(r#"{"10.1.0.0/16": ["10.0.0.1", "10.0.0.2"]}"#).unwrap();
        assert_eq!(
            merge([&a, &b]).unwrap().to_json(),
            r#"{"10.1.0.0/16":["10.0.0.1","10.0.0.2"],"10.2.0.0/16":["10.0.0.5"]}"#
        );
        assert!(merge([]).unwrap().is_empty());
    }

    #[test]
    fn scan_skips_bad_fragments_and_keeps_their_last_good_content() {
        let dir = scratch_dir("scan");
        let lines = Lines::default();
        let mut scanner = Scanner::new(dir.clone(), Logger::new(lines.clone()));
        fs::write(dir.join("a.json"), r#"{"10.1.0.0/16": ["10.0.0.1"]}"#).unwrap();
        fs::write(dir.join("b.json"), r#"{"10.1.0.0/16": ["10.0.0.2"]}"#).unwrap();
        fs::write(dir.join("c.json"), r#"{"10.3.0.0/16": ["bad"]}"#).unwrap();
        fs::write(dir.join("notes.txt"), "not a fragment").unwrap();
        let spec = scanner.scan().unwrap();
        assert_eq!(spec.to_json(), r#"{"10.1.0.0/16":["10.0.0.1","10.0.0.2"]}"#);
        assert_eq!(lines.count("c.json' skipped: 'bad' (a router of '10.3.0.0/16')"), 1);

        // Logged once per problem; b.json broken now keeps its previous content.
        fs::write(dir.join("b.json"), r#"{"10.1.0.0/16": "#).unwrap();
        assert_eq!(scanner.scan().unwrap(), spec);
        assert_eq!(scanner.scan().unwrap(), spec);
        assert_eq!(lines.count("c.json' skipped"), 1);
        assert_eq!(lines.count("b.json' skipped"), 1);
        assert_eq!(lines.count("its last valid content is kept"), 1);

        // Deleting a fragment removes its routes.
        fs::remove_file(dir.join("a.json")).unwrap();
        assert_eq!(scanner.scan().unwrap().to_json(), r#"{"10.1.0.0/16":["10.0.0.2"]}"#);
        fs::remove_dir_all(&dir).unwrap();
        assert!(scanner.scan().is_none());
        assert_eq!(lines.count("Cannot read spec directory"), 1);
    }

    #[test]
    fn polling_sends_changed_specs_until_stopped() {
        let dir = scratch_dir("run");
        fs::write(dir.join("a.json"), r#"{"10.1.0.0/16": ["10.0.0.1"]}"#).unwrap();
        let mut scanner = Scanner::new(dir.clone(), Logger::new(Lines::default()));
        let (tx, rx) = vpcrouter_plugin_api::channel::unbounded();
        let mut last = None;
        assert!(send_if_new(&mut scanner, &mut last, &tx));
        assert_eq!(rx.try_recv().unwrap().to_json(), r#"{"10.1.0.0/16":["10.0.0.1"]}"#);
        let interval = Duration::from_millis(50);
        let worker =
            Worker::spawn("t", move |stop| run(scanner, last, tx, interval, &stop)).unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "unchanged");
        fs::write(dir.join("b.json"), r#"{"10.2.0.0/16": ["10.0.0.2"]}"#).unwrap();
        let spec = rx.recv_timeout(Duration::from_secs(2)).unwrap();
        assert_eq!(spec.to_json(), r#"{"10.1.0.0/16":["10.0.0.1"],"10.2.0.0/16":["10.0.0.2"]}"#);
        worker.stop(Duration::from_secs(2)).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn options_are_checked() {
        let args = |dir: &str, i: &str| {
            PluginArgs::from_pairs([("spec_dir", dir), ("spec_dir_interval", i)])
        };
        let tmp = std::env::temp_dir();
        let tmp = tmp.to_str().unwrap();
        assert_eq!(DirSpec::validate_config(&args(tmp, "2")), Ok(()));
        assert!(DirSpec::validate_config(&args(tmp, "0")).unwrap_err().contains("between"));
        let err = DirSpec::validate_config(&args("/_no_such_dir", "2")).unwrap_err();
        assert!(err.starts_with("Cannot read spec directory '/_no_such_dir'"), "{err}");
        let info = DirSpec::create(&args(tmp, "0.5")).unwrap().info();
        assert_eq!(info["params"], serde_json::json!({"spec_dir": tmp, "spec_dir_interval": 0.5}));
    }
}
