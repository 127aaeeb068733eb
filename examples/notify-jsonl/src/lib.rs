//! `jsonl`, an example third-party vpcrouter notifier.
//!
//! `vpcrouter ... --notify jsonl --notify-jsonl-file /var/log/vpcrouter-events.jsonl`
//! appends every event to the file as one line of JSON (JSON Lines), exactly as the host
//! sent it: `{"event":"failover","time":"...","vpc":"vpc-...","routers":["10.0.1.10"],...}`.
//!
//! The plugin is a [`NotifierPlugin`]: `start` opens the file, `notify` writes one event.
//! The host does the rest: it queues the events, calls `notify` for one at a time in the
//! order they happened on a thread of the notifier's own, counts what was delivered or
//! failed, and shows the counters and [`NotifierPlugin::details`] on the status server.
//!
//! The file is opened once, for appending, and created when missing; a file that cannot be
//! opened stops vpcrouter at start with one line naming it. A write that fails (a full
//! disk) fails that event only: the host counts it and shows the error, and the next event
//! is written again.

#![deny(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::Write;

use vpcrouter_plugin_api::prelude::*;

/// The option naming the file, `--notify-jsonl-file PATH`.
const FILE_ARG: &str = "notify-jsonl-file";

/// `--notify-jsonl-file`, checked: present and not empty.
fn path(args: &PluginArgs) -> Result<&str, String> {
    let path = args.require(FILE_ARG)?;
    if path.trim().is_empty() {
        return Err(format!("--{FILE_ARG} must not be empty: give the file to append the events to"));
    }
    Ok(path)
}

/// The notifier plugin: the open file and what was written to it.
pub struct JsonLines {
    /// The file's path as given, for messages and the status.
    path: String,
    /// The file, opened for appending: every write goes to its end, even when another
    /// process (or a log rotation's `copytruncate`) changed it meanwhile.
    file: File,
    /// Lines written since the start, for the status.
    lines: u64,
}

impl PluginDescription for JsonLines {
    const NAME: &'static str = "jsonl";
    const DESCRIPTION: &'static str = "Appends each event to a file as one line of JSON (example)";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn arguments() -> Vec<ArgSpec> {
        vec![ArgSpec::value(
            FILE_ARG,
            "PATH",
            "append each event to this file as one line of JSON, required (only for the 'jsonl' notifier plugin)",
        )
        .required()]
    }

    /// Runs before anything starts, so a missing or empty option stops vpcrouter at once.
    fn validate_config(args: &PluginArgs) -> Result<(), String> {
        path(args).map(drop)
    }
}

impl NotifierPlugin for JsonLines {
    fn start(args: &PluginArgs, run: &NotifyRun) -> Result<JsonLines, String> {
        let path = path(args)?.to_string();
        let file = OpenOptions::new().append(true).create(true).open(&path).map_err(|e| {
            format!("Cannot open events file '{path}' for appending: {e}; give --{FILE_ARG} a file vpcrouter may write")
        })?;
        run.log().info(format!("jsonl notifier plugin: appending events to '{path}'"));
        Ok(JsonLines { path, file, lines: 0 })
    }

    fn notify(&mut self, event: &Event) -> Result<(), String> {
        // The host's JSON is one compact object (newlines inside strings are escaped), so the
        // event and its newline make exactly one line. They go out in ONE write_all: with
        // O_APPEND, lines of concurrent writers never interleave. `File` has no buffer, so the
        // line is in the file when write_all returns (a `BufWriter` would need a flush here).
        let line = format!("{}\n", event.json());
        self.file.write_all(line.as_bytes()).map_err(|e| format!("cannot append to '{}': {e}", self.path))?;
        self.lines += 1;
        Ok(())
    }

    /// Shown next to the counters on the status server.
    fn details(&self) -> serde_json::Value {
        serde_json::json!({ "file": self.path, "lines": self.lines })
    }
}

export_plugin!(notifier: JsonLines);

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use vpcrouter_plugin_api::testkit::{sample_event, start_notifier};

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("jsonl-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn events_are_appended_one_per_line_in_order_as_received() {
        let dir = scratch("append");
        let file = dir.join("events.jsonl");
        std::fs::write(&file, "{\"earlier\":true}\n").unwrap();
        let h = start_notifier::<JsonLines>(&[(FILE_ARG, file.to_str().unwrap())]).unwrap();
        let events = ["route_changed", "failover", "leader", "drained"].map(sample_event);
        for event in &events {
            h.notify(event).unwrap();
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let mut want = vec![r#"{"earlier":true}"#];
        want.extend(events.iter().map(|e| e.json()));
        assert_eq!(text.lines().collect::<Vec<_>>(), want, "{text}");
        assert!(text.ends_with('\n'));

        let details: serde_json::Value = serde_json::from_str(h.notifier.status().details.as_str()).unwrap();
        assert_eq!(details, serde_json::json!({ "file": file.to_str().unwrap(), "lines": 4 }));
        assert_eq!((h.stats().delivered, h.stats().failed), (4, 0));
        h.stop().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unwritable_path_refuses_the_start_naming_it() {
        let dir = scratch("unwritable");
        let err = start_notifier::<JsonLines>(&[(FILE_ARG, dir.to_str().unwrap())]).err().expect("a directory refused");
        assert!(err.starts_with(&format!("Cannot open events file '{}' for appending: ", dir.display())), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn options_are_checked() {
        let args = |file: &str| PluginArgs::from_pairs([(FILE_ARG, file)]);
        assert_eq!(JsonLines::validate_config(&args("/var/log/events.jsonl")), Ok(()));
        for empty in ["", " "] {
            let err = JsonLines::validate_config(&args(empty)).unwrap_err();
            assert!(err.starts_with("--notify-jsonl-file must not be empty"), "{err}");
        }
        let err = JsonLines::validate_config(&PluginArgs::default()).unwrap_err();
        assert!(err.contains("--notify-jsonl-file is required"), "{err}");
    }
}
