//! The `configfile` watcher: the route spec is a JSON file, re-read when it changes.
//!
//! `vpcrouter -m configfile -f /etc/vpcrouter/routes.json` reads the file at start and
//! sends the spec if it is valid. The path is then followed with [`FileWatch`] (through
//! renames, symlink and directory swaps, Kubernetes' `..data` swaps; a completed write is read
//! at once, bare writes after 100 ms) and the file re-read after each change, and on SIGHUP; a
//! spec is only sent when it differs from the last one sent.
//!
//! Only a regular file of at most `--file_max_size` bytes (default 64 MiB) is read, without
//! ever blocking: at start anything else stops vpcrouter with one line, like a missing file.
//! Later, a file that is missing, unreadable, not a regular file, too large, not UTF-8, not
//! JSON or not a valid spec is reported as `Config ignored: <why>` and the last good spec
//! stays in effect.

#![deny(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use vpcrouter_filewatch::{FileWatch, Wake, RECHECK};
use vpcrouter_plugin_api::file::{check_file, read_text, FileError};
use vpcrouter_plugin_api::prelude::*;
use vpcrouter_plugin_api::sync::lock;
use vpcrouter_plugin_api::time::rfc3339;

/// `--file_max_size` when not given.
const DEFAULT_MAX_SIZE: &str = "64M";
/// Allowed range of `--file_max_size`, in bytes.
const MAX_SIZE_RANGE: std::ops::RangeInclusive<u64> = 1 << 10..=1 << 30;

/// Parses a size: bytes, or a number with `K`, `M` or `G` (powers of 1024; `KiB`, `MB`, ...
/// accepted too).
fn parse_size(raw: &str) -> Option<u64> {
    let raw = raw.trim();
    let digits = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(digits);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// `--file_max_size` in bytes; the error names the option, the value and what to give.
fn max_size_from(args: &PluginArgs) -> Result<u64, String> {
    let raw = args.get("file_max_size").unwrap_or(DEFAULT_MAX_SIZE);
    parse_size(raw).filter(|n| MAX_SIZE_RANGE.contains(n)).ok_or_else(|| {
        format!("--file_max_size: '{raw}' is not a size between 1K and 1G; give bytes or a number with K, M or G (e.g. 64M)")
    })
}

/// The watcher plugin.
pub struct Configfile {
    /// Shared with the watcher thread, so that `reload` (SIGHUP) can re-read too.
    reader: Arc<Reader>,
}

impl PluginDescription for Configfile {
    const NAME: &'static str = "configfile";
    const DESCRIPTION: &'static str = "Reads the route spec from a JSON file and follows its changes";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn arguments() -> Vec<ArgSpec> {
        vec![
            ArgSpec::value("file", "FILE", "config file for routing groups (only in configfile mode)")
                .short('f')
                .required(),
            ArgSpec::value(
                "file_max_size",
                "SIZE",
                "largest config file read, in bytes or with K, M or G (1K to 1G); a larger file is \
                 refused (only in configfile mode)",
            )
            .default(DEFAULT_MAX_SIZE),
        ]
    }

    fn validate_config(args: &PluginArgs) -> Result<(), String> {
        let file = args.require("file")?;
        let limit = max_size_from(args)?;
        check_file(Path::new(file), limit).map_err(|e| open_error(file, &e))
    }
}

/// The error at start: a missing or unreadable file keeps vpc-router's message.
fn open_error(file: &str, e: &FileError) -> String {
    match e {
        FileError::Io { source, .. } => format!("Cannot open config file '{file}': {source}"),
        other => format!("Cannot use config file: {other}"),
    }
}

/// Reads and validates the spec file, of at most `limit` bytes; the error says what is wrong
/// with it.
fn read_spec(path: &Path, limit: u64) -> Result<RouteSpec, String> {
    let text = read_text(path, limit).map_err(|e| match e {
        FileError::Io { source, .. } => format!("Cannot open file '{}': {source}", path.display()),
        other => other.to_string(),
    })?;
    spec::parse_json(&text).map_err(|e| e.to_string())
}

/// Reads the file and offers its spec to the sink.
struct Reader {
    /// The path made absolute (symlinks are kept, not resolved).
    path: PathBuf,
    /// `--file_max_size`: a larger file is refused unread.
    limit: u64,
    log: Logger,
    sink: SpecSink,
    /// When a spec was last sent; held while reading, so that a SIGHUP and a file change
    /// read and offer one after the other and the newest content is the one sent last.
    last_update: Mutex<Option<SystemTime>>,
}

impl Reader {
    /// Re-reads the file; false when the spec queue is closed.
    fn reload(&self) -> bool {
        let mut last_update = lock(&self.last_update);
        match read_spec(&self.path, self.limit) {
            Ok(spec) => {
                let new = self.sink.last().as_ref() != Some(&spec);
                if !self.sink.offer(spec) {
                    self.log.debug("The route spec queue is closed");
                    return false;
                }
                if new {
                    *last_update = Some(SystemTime::now());
                }
                true
            }
            Err(why) => {
                self.sink.reject(format!("Config ignored: {why}"));
                !self.sink.is_closed()
            }
        }
    }
}

/// The watcher thread: re-reads the file after each change until stopped.
fn run(reader: &Reader, mut watch: FileWatch, stop: &StopToken) {
    loop {
        match watch.wait(stop.receiver(), None) {
            Wake::Changed(trigger) => {
                reader.log.info(format!("Detected file change event for {} ({trigger})", reader.path.display()));
                if !reader.reload() {
                    return;
                }
            }
            Wake::Event(event) => {
                reader.log.debug(format!("File event {:?} on {:?}", event.kind, event.paths));
            }
            Wake::Error(e) => reader.log.warn(format!("{e}; the file is still checked every {} s", RECHECK.as_secs())),
            Wake::Stopped | Wake::Timeout => return,
        }
    }
}

impl WatcherPlugin for Configfile {
    fn start(args: &PluginArgs, run: &WatcherRun) -> Result<Self, String> {
        let file = args.require("file")?;
        let limit = max_size_from(args)?;
        let path = std::path::absolute(file).map_err(|e| format!("Cannot open config file '{file}': {e}"))?;
        if path.file_name().is_none() {
            return Err(format!("Cannot open config file '{file}': not a file name"));
        }
        run.log().info(format!("Configfile watcher plugin: Starting to watch route spec file '{file}' for changes..."));
        // Watch first, then read, so that no change between the two is missed.
        let watch = FileWatch::new(&path).map_err(|e| e.to_string())?;
        let reader =
            Arc::new(Reader { path, limit, log: run.log().clone(), sink: run.sink(), last_update: Mutex::default() });
        reader.reload();
        let thread_reader = reader.clone();
        run.spawn("ConfMon", move |stop| self::run(&thread_reader, watch, &stop))?;
        Ok(Configfile { reader })
    }

    fn reload(&self) -> Result<(), String> {
        self.reader.log.info(format!("Re-reading route spec file {} (SIGHUP)", self.reader.path.display()));
        self.reader.reload();
        Ok(())
    }

    fn details(&self) -> serde_json::Value {
        let path = &self.reader.path;
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok().map(rfc3339);
        let last = lock(&self.reader.last_update).map_or_else(|| "(no update, yet)".to_string(), rfc3339);
        serde_json::json!({
            "path": path.display().to_string(),
            "file_mtime": mtime,
            "last_route_spec_update": last,
        })
    }
}

export_plugin!(watcher: Configfile);

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::{Duration, Instant};

    use vpcrouter_plugin_api::testkit::{nothing_within, start_watcher, WatcherHarness};
    use vpcrouter_plugin_api::{PluginStats, WatcherStats};

    use super::*;

    const WAIT: Duration = Duration::from_secs(3);
    /// Longer than the debounce plus inotify delivery.
    const QUIET: Duration = Duration::from_millis(400);
    const SPEC_A: &str = r#"{"10.1.0.0/16": ["1.1.1.1", "2.2.2.2"], "10.2.0.0/16": ["3.3.3.3"]}"#;
    const SPEC_B: &str = r#"{"10.1.0.0/16": ["2.2.2.2", "4.4.4.4"]}"#;

    fn next_json(r: &WatcherHarness) -> String {
        r.next_spec(WAIT).expect("a route spec").to_json()
    }

    fn details(r: &WatcherHarness) -> serde_json::Value {
        serde_json::from_str(&r.watcher.status().details).unwrap()
    }

    fn stats(r: &WatcherHarness) -> WatcherStats {
        match r.watcher.status().stats {
            PluginStats::Watcher(s) => s,
            other => panic!("{other:?}"),
        }
    }

    fn start(file: &Path) -> WatcherHarness {
        start_watcher::<Configfile>(&[("file", file.to_str().unwrap())]).unwrap()
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

        // Never a hang: a FIFO or a device is refused at once; a file over the limit unread.
        let fifo = dir.path().join("fifo.json");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let started = Instant::now();
        for (path, what) in [(fifo.to_str().unwrap(), "is a FIFO"), ("/dev/zero", "is a character device")] {
            let err = Configfile::validate_config(&PluginArgs::from_pairs([("file", path)])).unwrap_err();
            assert!(err.starts_with("Cannot use config file: ") && err.contains(what), "{err}");
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        fs::write(&file, vec![b' '; 2048]).unwrap();
        let small = PluginArgs::from_pairs([("file", file.to_str().unwrap()), ("file_max_size", "1K")]);
        let err = Configfile::validate_config(&small).unwrap_err();
        assert!(err.contains("larger than the limit of 1 KiB"), "{err}");
    }

    #[test]
    fn the_size_limit_is_parsed_once_with_units() {
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size(" 512 KiB "), Some(512 << 10));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        for bad in ["", "M", "12X", "1.5M", "-1", "99999999999999999999G"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        let limit = |v: &str| max_size_from(&PluginArgs::from_pairs([("file_max_size", v)]));
        assert_eq!(max_size_from(&PluginArgs::default()), Ok(64 << 20));
        assert_eq!(limit("2M"), Ok(2 << 20));
        for bad in ["100", "2G", "lots"] {
            let err = limit(bad).unwrap_err();
            assert!(err.starts_with(&format!("--file_max_size: '{bad}' is not a size between 1K and 1G")), "{err}");
        }
    }

    #[test]
    fn files_that_cannot_be_specs_are_refused_in_one_line_and_the_last_spec_kept() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("routes.json");
        fs::write(&file, SPEC_A).unwrap();
        let r = start_watcher::<Configfile>(&[("file", file.to_str().unwrap()), ("file_max_size", "4K")]).unwrap();
        assert_eq!(next_json(&r), canonical(SPEC_A));

        let swap_in = |make: &dyn Fn(&Path)| {
            let tmp = dir.path().join("next");
            make(&tmp);
            fs::rename(&tmp, &file).unwrap();
        };
        swap_in(&|p| symlink("/dev/zero", p).unwrap());
        assert!(r.logs.wait_for(LogLevel::Error, "is a character device, not a regular file", WAIT));
        swap_in(&|p| assert!(std::process::Command::new("mkfifo").arg(p).status().unwrap().success()));
        assert!(r.logs.wait_for(LogLevel::Error, "is a FIFO (named pipe), not a regular file", WAIT));
        swap_in(&|p| fs::write(p, vec![b' '; 8 << 10]).unwrap());
        assert!(r.logs.wait_for(LogLevel::Error, "is larger than the limit of 4 KiB", WAIT));
        swap_in(&|p| fs::write(p, b"{\"10.1.0.0/16\": [\"1.1.1.1\"], \"caf\xe9\": []}").unwrap());
        let utf8 = format!("Config ignored: '{}' is not UTF-8 text (invalid byte at offset 33)", file.display());
        assert!(r.logs.wait_for(LogLevel::Error, &utf8, WAIT), "{:?}", r.logs);
        assert!(nothing_within(&r.specs, QUIET), "the last good spec stays");
        assert_eq!(stats(&r).errors, 4);

        // A valid file is followed again, SIGHUP still reads, stopping is prompt.
        swap_in(&|p| fs::write(p, SPEC_B).unwrap());
        assert_eq!(next_json(&r), canonical(SPEC_B));
        r.watcher.reload().into_result().unwrap();
        let started = Instant::now();
        r.stop().unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn in_place_writes_send_new_specs_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("routes.json");
        fs::write(&file, SPEC_A).unwrap();
        let r = start(&file);
        assert_eq!(next_json(&r), canonical(SPEC_A));

        fs::write(&file, SPEC_B).unwrap();
        assert_eq!(next_json(&r), canonical(SPEC_B));
        assert!(nothing_within(&r.specs, QUIET), "one spec per change");
        let event_line = format!("Detected file change event for {}", file.display());
        assert!(r.logs.contains(LogLevel::Info, &event_line), "{:?}", r.logs);

        // The same spec, written differently (a repeated router): nothing to send.
        fs::write(&file, r#"{"10.1.0.0/16": ["2.2.2.2", "4.4.4.4", "2.2.2.2"]}"#).unwrap();
        assert!(nothing_within(&r.specs, QUIET));
        // The same routers in another order: another preferred router, a new spec.
        fs::write(&file, r#"{"10.1.0.0/16": ["4.4.4.4", "2.2.2.2"]}"#).unwrap();
        assert_eq!(next_json(&r), r#"{"10.1.0.0/16":["4.4.4.4","2.2.2.2"]}"#);

        // Other files in the directory are ignored.
        fs::write(dir.path().join("other.json"), SPEC_A).unwrap();
        assert!(nothing_within(&r.specs, QUIET));
        r.stop().unwrap();
        assert!(r.logs.contains(LogLevel::Info, "configfile watcher plugin: Stopped"));
    }

    #[test]
    fn rename_over_and_recreate_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("routes.json");
        fs::write(&file, SPEC_A).unwrap();
        let r = start(&file);
        assert_eq!(next_json(&r), canonical(SPEC_A));

        let tmp = dir.path().join(".routes.json.tmp");
        fs::write(&tmp, SPEC_B).unwrap();
        fs::rename(&tmp, &file).unwrap();
        assert_eq!(next_json(&r), canonical(SPEC_B));

        fs::remove_file(&file).unwrap();
        assert!(r.logs.wait_for(LogLevel::Error, "Config ignored: Cannot open file", WAIT));
        assert!(nothing_within(&r.specs, QUIET), "a missing file keeps the last spec");
        assert_eq!(details(&r)["file_mtime"], serde_json::Value::Null);
        fs::write(&file, SPEC_A).unwrap();
        assert_eq!(next_json(&r), canonical(SPEC_A));
        r.stop().unwrap();
    }

    #[test]
    fn invalid_content_is_ignored_and_the_last_spec_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("routes.json");
        fs::write(&file, SPEC_A).unwrap();
        let r = start(&file);
        assert_eq!(next_json(&r), canonical(SPEC_A));

        fs::write(&file, r#"{"10.1.0.0/16": ["1.1.1."]}"#).unwrap();
        assert!(r.logs.wait_for(LogLevel::Error, "Config ignored: '1.1.1.' (a router of '10.1.0.0/16')", WAIT));
        fs::write(&file, r#""MALFORMED""#).unwrap();
        assert!(r.logs.wait_for(LogLevel::Error, "Config ignored: the route spec must be a JSON object", WAIT));
        assert!(nothing_within(&r.specs, QUIET));
        assert!(stats(&r).last_error.contains("must be a JSON object"), "{:?}", stats(&r));

        // Back to the spec that is still in effect: nothing new to send.
        fs::write(&file, SPEC_A).unwrap();
        assert!(nothing_within(&r.specs, QUIET));
        fs::write(&file, SPEC_B).unwrap();
        assert_eq!(next_json(&r), canonical(SPEC_B));
        let stats = stats(&r);
        assert_eq!((stats.specs_sent, stats.errors, stats.last_error.as_str()), (2, 2, ""));
        r.stop().unwrap();
    }

    #[test]
    fn invalid_or_missing_file_at_start_sends_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("routes.json");
        fs::write(&file, "{not json").unwrap();
        let r = start(&file);
        assert!(r.logs.contains(LogLevel::Error, "Config ignored: the route spec is not valid JSON"));
        assert!(nothing_within(&r.specs, QUIET));
        assert_eq!(details(&r)["last_route_spec_update"], "(no update, yet)");
        fs::remove_file(&file).unwrap();
        assert!(r.logs.wait_for(LogLevel::Error, "Config ignored: Cannot open file", WAIT));
        fs::write(&file, SPEC_B).unwrap();
        assert_eq!(next_json(&r), canonical(SPEC_B));
        let last = details(&r)["last_route_spec_update"].as_str().unwrap().to_string();
        assert!(last.ends_with('Z') && last.len() == 24, "{last}"); // 2026-11-23T14:05:09.123Z
        r.stop().unwrap();
    }

    #[test]
    fn sighup_rereads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("routes.json");
        fs::write(&file, SPEC_A).unwrap();
        let r = start(&file);
        assert_eq!(next_json(&r), canonical(SPEC_A));
        r.watcher.reload().into_result().unwrap();
        assert!(nothing_within(&r.specs, QUIET), "unchanged: not sent again");
        assert!(r.logs.contains(LogLevel::Info, &format!("Re-reading route spec file {} (SIGHUP)", file.display())));
        fs::write(&file, "{not json").unwrap();
        assert!(r.logs.wait_for(LogLevel::Error, "Config ignored: the route spec is not valid JSON", WAIT));
        std::thread::sleep(QUIET);
        assert_eq!(stats(&r).errors, 1);
        // The reload reads the file again (the watch saw nothing new): one more error.
        r.watcher.reload().into_result().unwrap();
        assert_eq!(stats(&r).errors, 2);
        r.stop().unwrap();
        fs::write(&file, SPEC_B).unwrap();
        // Stopped: the queue is closed and a reload sends nothing.
        r.watcher.reload().into_result().unwrap();
        assert!(r.next_spec(QUIET).is_none());
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
        let r = start(&d.join("routes.json"));
        assert_eq!(next_json(&r), canonical(SPEC_A));

        fs::create_dir(d.join("..2024_02")).unwrap();
        fs::write(d.join("..2024_02/routes.json"), SPEC_B).unwrap();
        symlink("..2024_02", d.join("..data_tmp")).unwrap();
        fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        fs::remove_dir_all(d.join("..2024_01")).unwrap();
        assert_eq!(next_json(&r), canonical(SPEC_B));
        assert!(nothing_within(&r.specs, QUIET));
        r.stop().unwrap();
    }

    #[test]
    fn stop_is_prompt_and_idempotent_and_the_status_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("routes.json");
        fs::write(&file, SPEC_A).unwrap();
        let r = start(&file);
        let started = Instant::now();
        r.stop().unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        r.stop().unwrap();
        let status = r.watcher.status();
        assert_eq!(status.version, Configfile::VERSION);
        assert_eq!(
            status.params.iter().map(|t| (t.0.as_str(), t.1.as_str())).collect::<Vec<_>>(),
            [("file", file.to_str().unwrap())]
        );
        let details = details(&r);
        assert_eq!(details["path"], file.to_str().unwrap());
        let mtime = details["file_mtime"].as_str().unwrap();
        assert!(mtime.ends_with('Z') && mtime.len() == 24, "{mtime}");
    }
}
