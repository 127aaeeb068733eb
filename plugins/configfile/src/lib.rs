//! The `configfile` watcher: the route spec is a JSON file, re-read when it changes.
//!
//! `vpcrouter -m configfile -f /etc/vpcrouter/routes.json` reads the file at start and
//! sends the spec if it is valid. The file is then followed with [`FileWatch`] (rename-safe,
//! Kubernetes-aware, bursts merged over 100 ms) and re-read after each change; a spec is
//! only sent when it differs from the last one sent.
//!
//! A file that is missing, unreadable, not JSON or not a valid spec is reported as
//! `Config ignored: <why>` and the last good spec stays in effect.

#![deny(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use vpcrouter_filewatch::{FileWatch, Wake};
use vpcrouter_plugin_api::export::PluginDescription;
use vpcrouter_plugin_api::worker::{StopToken, Worker};
use vpcrouter_plugin_api::{
    spec, ArgSpec, Logger, PluginArgs, PluginContext, RSender, RouteSpec, WatcherPlugin,
};

/// How long `stop` waits for the watcher thread.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Counters for the status server.
#[derive(Debug, Default)]
struct Stats {
    last_update: Option<SystemTime>,
    specs_sent: u64,
    errors: u64,
}

/// The watcher plugin.
pub struct Configfile {
    /// The path as given on the command line.
    file: String,
    /// The same path made absolute (symlinks are kept, not resolved).
    path: PathBuf,
    stats: Arc<Mutex<Stats>>,
    log: Option<Logger>,
    /// Shared with the watcher thread, so that `reload` (SIGHUP) can re-read too.
    reader: Option<Arc<Mutex<Reader>>>,
    worker: Option<Worker>,
}

impl PluginDescription for Configfile {
    const NAME: &'static str = "configfile";
    const DESCRIPTION: &'static str =
        "Reads the route spec from a JSON file and follows its changes";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn arguments() -> Vec<ArgSpec> {
        vec![ArgSpec::value(
            "file",
            "FILE",
            "config file for routing groups (only in configfile mode)",
        )
        .short('f')
        .required()]
    }

    fn validate_config(args: &PluginArgs) -> Result<(), String> {
        let file = args.require("file")?;
        let opened = std::fs::File::open(file).and_then(|f| {
            if f.metadata()?.is_dir() {
                Err(std::io::Error::other("it is a directory"))
            } else {
                Ok(())
            }
        });
        opened.map_err(|e| format!("Cannot open config file '{file}': {e}"))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicked holder leaves plain data behind; keep using it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads and validates the spec file; the error says what is wrong with it.
fn read_spec(path: &Path) -> Result<RouteSpec, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("Cannot open file '{}': {e}", path.display()))?;
    spec::parse_json(&text).map_err(|e| e.to_string())
}


/// Reads the file and sends its spec when it is valid and new.
struct Reader {
    path: PathBuf,
    log: Logger,
    specs: RSender<RouteSpec>,
    last: Option<RouteSpec>,
    stats: Arc<Mutex<Stats>>,
}

impl Reader {
    /// Re-reads the file; false when the host closed the spec queue.
    fn reload(&mut self) -> bool {
        match read_spec(&self.path) {
            Ok(spec) if self.last.as_ref() == Some(&spec) => {
                self.log.debug("Route spec unchanged, not sending it again");
            }
            Ok(spec) => {
                // Counted before sending, so the status is current once the host has it.
                {
                    let mut stats = lock(&self.stats);
                    stats.last_update = Some(SystemTime::now());
                    stats.specs_sent += 1;
                }
                self.log.debug(format!("Sending route spec {}", spec.to_json()));
                if self.specs.send(spec.clone()).is_err() {
                    self.log.debug("The route spec queue is closed");
                    return false;
                }
                self.last = Some(spec);
            }
            Err(why) => {
                self.log.error(format!("Config ignored: {why}"));
                lock(&self.stats).errors += 1;
            }
        }
        true
    }
}

/// The watcher thread: re-reads the file after each change until stopped.
fn run(reader: Arc<Mutex<Reader>>, mut watch: FileWatch, stop: &StopToken) {
    loop {
        match watch.wait(stop.receiver(), None) {
            Wake::Changed => {
                let mut reader = lock(&reader);
                reader
                    .log
                    .info(format!("Detected file change event for {}", reader.path.display()));
                if !reader.reload() {
                    return;
                }
            }
            Wake::Event(event) => {
                lock(&reader).log.debug(format!("File event {:?} on {:?}", event.kind, event.paths));
            }
            Wake::Error(e) => {
                lock(&reader).log.warn(format!("File watch error, re-reading the file: {e}"))
            }
            Wake::Stopped | Wake::Timeout => return,
        }
    }
}

impl WatcherPlugin for Configfile {
    fn create(args: &PluginArgs) -> Result<Self, String> {
        let file = args.require("file")?;
        let path = std::path::absolute(file)
            .map_err(|e| format!("Cannot open config file '{file}': {e}"))?;
        if path.file_name().is_none() {
            return Err(format!("Cannot open config file '{file}': not a file name"));
        }
        Ok(Configfile {
            file: file.to_string(),
            path,
            stats: Arc::default(),
            log: None,
            reader: None,
            worker: None,
        })
    }

    fn start(&mut self, ctx: PluginContext, specs: RSender<RouteSpec>) -> Result<(), String> {
        let log = ctx.log;
        log.info(format!(
            "Configfile watcher plugin: Starting to watch route spec file '{}' for changes...",
            self.file
        ));
        // Watch first, then read, so that no change between the two is missed.
        let watch = FileWatch::new(&self.path).map_err(|e| e.to_string())?;
        let mut reader = Reader {
            path: self.path.clone(),
            log: log.clone(),
            specs,
            last: None,
            stats: self.stats.clone(),
        };
        reader.reload();
        let reader = Arc::new(Mutex::new(reader));
        self.reader = Some(reader.clone());
        self.worker = Some(Worker::spawn("ConfMon", move |stop| run(reader, watch, &stop))?);
        self.log = Some(log);
        Ok(())
    }

    fn reload(&mut self) -> Result<(), String> {
        let Some(reader) = &self.reader else { return Ok(()) };
        let mut reader = lock(reader);
        reader.log.info(format!("Re-reading route spec file {} (SIGHUP)", reader.path.display()));
        reader.reload();
        Ok(())
    }

    fn stop(&mut self) -> Result<(), String> {
        self.worker.take().map_or(Ok(()), |w| w.stop(STOP_TIMEOUT))?;
        self.reader = None;
        if let Some(log) = &self.log {
            log.info("Configfile watcher plugin: Stopped");
        }
        Ok(())
    }

    fn info(&self) -> serde_json::Value {
        let stats = lock(&self.stats);
        let last = stats.last_update.map_or_else(|| "(no update, yet)".to_string(), vpcrouter_plugin_api::time::rfc3339);
        serde_json::json!({
            "version": Self::VERSION,
            "params": {"file": self.file},
            "stats": {
                "last_route_spec_update": last,
                "specs_sent": stats.specs_sent,
                "errors": stats.errors,
            },
        })
    }
}

vpcrouter_plugin_api::export_plugin!(watcher: Configfile);

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::Instant;

    use vpcrouter_plugin_api::channel::unbounded;
    use vpcrouter_plugin_api::{LogLevel, RReceiver};
    use vpcrouter_testkit::{context, nothing_within, recv_within, LogCapture};

    use super::*;

    const WAIT: Duration = Duration::from_secs(3);
    /// Longer than the debounce plus inotify delivery.
    const QUIET: Duration = Duration::from_millis(400);
    const SPEC_A: &str = r#"{"10.1.0.0/16": ["1.1.1.1", "2.2.2.2"], "10.2.0.0/16": ["3.3.3.3"]}"#;
    const SPEC_B: &str = r#"{"10.1.0.0/16": ["2.2.2.2", "4.4.4.4"]}"#;

    struct Running {
        plugin: Configfile,
        specs: RReceiver<RouteSpec>,
        logs: LogCapture,
    }

    impl Running {
        fn next_json(&self) -> String {
            recv_within(&self.specs, WAIT).expect("a route spec").to_json()
        }
    }

    fn start(file: &Path) -> Running {
        let args = PluginArgs::from_pairs([("file", file.to_str().unwrap())]);
        let mut plugin = Configfile::create(&args).unwrap();
        let (ctx, logs) = context("configfile");
        let (tx, specs) = unbounded();
        plugin.start(ctx, tx).unwrap();
        Running { plugin, specs, logs }
    }

    fn canonical(text: &str) -> String {
        spec::parse_json(text).unwrap().to_json()
    }

    #[test]
    fn validate_config_needs_a_readable_file() {
        let args = PluginArgs::from_pairs([("file", "/_does_not_exists")]);
        let err = Configfile::validate_config(&args).unwrap_err();
        assert!(err.starts_with("Cannot open config file '/_does_not_exists': "), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let args = PluginArgs::from_pairs([("file", dir.path().to_str().unwrap())]);
        assert!(Configfile::validate_config(&args).unwrap_err().contains("directory"));
        let file = dir.path().join("r.spec");
        fs::write(&file, "not even JSON").unwrap();
        let args = PluginArgs::from_pairs([("file", file.to_str().unwrap())]);
        assert_eq!(Configfile::validate_config(&args), Ok(()));
    }

    #[test]
    fn in_place_writes_send_new_specs_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("routes.json");
        fs::write(&file, SPEC_A).unwrap();
        let mut r = start(&file);
        assert_eq!(r.next_json(), canonical(SPEC_A));

        fs::write(&file, SPEC_B).unwrap();
        assert_eq!(r.next_json(), canonical(SPEC_B));
        assert!(nothing_within(&r.specs, QUIET), "one spec per change");
        let event_line = format!("Detected file change event for {}", file.display());
        assert!(r.logs.contains(LogLevel::Info, &event_line), "{:?}", r.logs);

        // The same spec, written differently: nothing to send.
        fs::write(&file, r#"{"10.1.0.0/16": ["4.4.4.4", "2.2.2.2", "2.2.2.2"]}"#).unwrap();
        assert!(nothing_within(&r.specs, QUIET));

        // Other files in the directory are ignored.
        fs::write(dir.path().join("other.json"), SPEC_A).unwrap();
        assert!(nothing_within(&r.specs, QUIET));
        r.plugin.stop().unwrap();
        assert!(r.logs.contains(LogLevel::Info, "Configfile watcher plugin: Stopped"));
    }

    #[test]
    fn rename_over_and_recreate_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("routes.json");
        fs::write(&file, SPEC_A).unwrap();
        let mut r = start(&file);
        assert_eq!(r.next_json(), canonical(SPEC_A));

        let tmp = dir.path().join(".routes.json.tmp");
        fs::write(&tmp, SPEC_B).unwrap();
        fs::rename(&tmp, &file).unwrap();
        assert_eq!(r.next_json(), canonical(SPEC_B));

        fs::remove_file(&file).unwrap();
        assert!(r.logs.wait_for(LogLevel::Error, "Config ignored: Cannot open file", WAIT));
        assert!(nothing_within(&r.specs, QUIET), "a missing file keeps the last spec");
        fs::write(&file, SPEC_A).unwrap();
        assert_eq!(r.next_json(), canonical(SPEC_A));
        r.plugin.stop().unwrap();
    }

    #[test]
    fn invalid_content_is_ignored_and_the_last_spec_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("routes.json");
        fs::write(&file, SPEC_A).unwrap();
        let mut r = start(&file);
        assert_eq!(r.next_json(), canonical(SPEC_A));

        fs::write(&file, r#"{"10.1.0.0/16": ["1.1.1."]}"#).unwrap();
        assert!(r.logs.wait_for(
            LogLevel::Error,
            "Config ignored: '1.1.1.' (a router of '10.1.0.0/16')",
            WAIT
        ));
        fs::write(&file, r#""MALFORMED""#).unwrap();
        assert!(r.logs.wait_for(
            LogLevel::Error,
            "Config ignored: the route spec must be a JSON object",
            WAIT
        ));
        assert!(nothing_within(&r.specs, QUIET));

        // Back to the spec that is still in effect: nothing new to send.
        fs::write(&file, SPEC_A).unwrap();
        assert!(nothing_within(&r.specs, QUIET));
        fs::write(&file, SPEC_B).unwrap();
        assert_eq!(r.next_json(), canonical(SPEC_B));
        let info = r.plugin.info();
        assert_eq!(info["stats"]["specs_sent"], 2);
        assert_eq!(info["stats"]["errors"], 2);
        r.plugin.stop().unwrap();
    }

    #[test]
    fn invalid_or_missing_file_at_start_sends_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("routes.json");
        fs::write(&file, "{not json").unwrap();
        let mut r = start(&file);
        assert!(r
            .logs
            .contains(LogLevel::Error, "Config ignored: the route spec is not valid JSON"));
        assert!(nothing_within(&r.specs, QUIET));
        assert_eq!(r.plugin.info()["stats"]["last_route_spec_update"], "(no update, yet)");
        fs::remove_file(&file).unwrap();
        assert!(r.logs.wait_for(LogLevel::Error, "Config ignored: Cannot open file", WAIT));
        fs::write(&file, SPEC_B).unwrap();
        assert_eq!(r.next_json(), canonical(SPEC_B));
        let last = r.plugin.info()["stats"]["last_route_spec_update"].as_str().unwrap().to_string();
        assert!(last.ends_with('Z') && last.len() == 24, "{last}"); // 2026-11-23T14:05:09.123Z
        r.plugin.stop().unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn kubernetes_symlink_swap_is_seen() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir(d.join("..2024_01")).unwrap();
        fs::write(d.join("..2024_01/routes.json"), SPEC_A).unwrap();
        symlink("..2024_01", d.join("..data")).unwrap();
        symlink("..data/routes.json", d.join("routes.json")).unwrap();
        let mut r = start(&d.join("routes.json"));
        assert_eq!(r.next_json(), canonical(SPEC_A));

        fs::create_dir(d.join("..2024_02")).unwrap();
        fs::write(d.join("..2024_02/routes.json"), SPEC_B).unwrap();
        symlink("..2024_02", d.join("..data_tmp")).unwrap();
        fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        fs::remove_dir_all(d.join("..2024_01")).unwrap();
        assert_eq!(r.next_json(), canonical(SPEC_B));
        assert!(nothing_within(&r.specs, QUIET));
        r.plugin.stop().unwrap();
    }

    #[test]
    fn stop_is_prompt_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("routes.json");
        fs::write(&file, SPEC_A).unwrap();
        let mut r = start(&file);
        let started = Instant::now();
        r.plugin.stop().unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        r.plugin.stop().unwrap();
        let info = r.plugin.info();
        assert_eq!(info["params"]["file"], file.to_str().unwrap());
        assert_eq!(info["version"], Configfile::VERSION);
    }

}
