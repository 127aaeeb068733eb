//! The `file` health monitor: host health read from a file, for tests and drills.
//!
//! `vpcrouter -H file --health_file /run/vpcrouter/health.json` takes its verdicts from a
//! file an operator (or a test) edits. Two formats are accepted:
//!
//! * JSON: `{"failed": ["10.1.0.5"], "questionable": ["10.1.1.7"]}`, either key optional;
//! * plain text: one IPv4 address per line, all of them failed; blank lines and text
//!   after `#` are ignored.
//!
//! A missing file means every host is healthy. Content that cannot be parsed, and a file
//! that is not a regular file (a FIFO, a device, a directory: never opened in a way that can
//! block) or is larger than 1 MiB, is reported as an error and the previous verdict stays in
//! effect. The path is followed with [`FileWatch`] (through renames, symlink and directory
//! swaps, like the `configfile` watcher) and the file also re-read every
//! `--health_file_interval` seconds (default 1), in case events are missed.
//!
//! It is a source of verdicts for the SDK: one round per interval re-reads the file, a
//! change seen by the watch is read and reported at once (a write closed or a file renamed
//! into place at once, bare writes after the watch's debounce), and there is no hold-down: a
//! host is failed exactly while the file lists it. A host listed as both failed and
//! questionable is failed. The SDK sends the full report once
//! after the first host list and then whenever it changes, and counts a check per host of
//! each round and a failure per failed verdict.

#![deny(unsafe_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vpcrouter_filewatch::{FileWatch, Wake};
use vpcrouter_plugin_api::crossbeam_channel::{never, Receiver};
use vpcrouter_plugin_api::file::read_text;
use vpcrouter_plugin_api::prelude::*;

/// The largest health file read: a list of addresses is far smaller.
const MAX_SIZE: u64 = 1 << 20;

/// Allowed range of `--health_file_interval`, in seconds.
const INTERVAL_RANGE: std::ops::RangeInclusive<f64> = 0.1..=3600.0;

/// Failed and questionable hosts as the file lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Verdict {
    failed: BTreeSet<Ipv4>,
    questionable: BTreeSet<Ipv4>,
}

/// Parses one address for the list `list`; the error names it.
fn parse_ip(value: &str, list: &str) -> Result<Ipv4, String> {
    Ipv4::parse(value).ok_or_else(|| format!("'{value}' in {list} is not a valid IPv4 address"))
}

/// Parses the health file: a JSON object, or plain text with one failed IP per line.
fn parse_health(text: &str) -> Result<Verdict, String> {
    if text.trim_start().starts_with('{') {
        return parse_json_health(text);
    }
    let mut verdict = Verdict::default();
    for (n, line) in text.lines().enumerate() {
        let ip = line.split('#').next().unwrap_or_default().trim();
        if !ip.is_empty() {
            verdict.failed.insert(parse_ip(ip, &format!("line {}", n + 1))?);
        }
    }
    Ok(verdict)
}

fn parse_json_health(text: &str) -> Result<Verdict, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("the health file is not valid JSON: {e}"))?;
    let obj = value.as_object().ok_or("the health file must be a JSON object")?;
    let mut verdict = Verdict::default();
    for (key, list) in obj {
        let target = match key.as_str() {
            "failed" => &mut verdict.failed,
            "questionable" => &mut verdict.questionable,
            _ => return Err(format!("unknown key '{key}'; expected \"failed\" or \"questionable\"")),
        };
        let items = list.as_array().ok_or_else(|| format!("the value of '{key}' must be a list of IPv4 addresses"))?;
        for item in items {
            let ip = item.as_str().ok_or_else(|| format!("{item} in '{key}' is not a string"))?;
            target.insert(parse_ip(ip, &format!("'{key}'"))?);
        }
    }
    Ok(verdict)
}

/// What the last read of the file found, so each problem is logged once.
#[derive(Debug, PartialEq, Eq)]
enum FileState {
    Unread,
    Good,
    Missing,
    Bad(String),
}

/// The prober: the file, its watch and the verdict last read from it.
pub struct FileProber {
    path: PathBuf,
    log: Logger,
    watch: FileWatch,
    /// `FileWatch::wait` wants a stop signal; the SDK bounds each wait instead.
    no_stop: Receiver<()>,
    verdict: Verdict,
    file_state: FileState,
    hosts: Vec<Ipv4>,
    reads: u64,
    errors: u64,
}

impl FileProber {
    /// Reads the file; keeps the previous verdict when its content is bad.
    fn reread(&mut self) {
        self.reads += 1;
        let (state, verdict) = match read_text(&self.path, MAX_SIZE) {
            Err(e) if e.is_not_found() => (FileState::Missing, Some(Verdict::default())),
            Err(e) => (FileState::Bad(format!("Health file ignored: {e}")), None),
            Ok(text) => match parse_health(&text) {
                Ok(v) => (FileState::Good, Some(v)),
                Err(why) => (FileState::Bad(format!("Health file '{}' ignored: {why}", self.path.display())), None),
            },
        };
        if state != self.file_state {
            match &state {
                FileState::Missing => self
                    .log
                    .info(format!("Health file '{}' does not exist: all hosts are healthy", self.path.display())),
                FileState::Bad(why) => {
                    self.log.error(why);
                    self.errors += 1;
                }
                FileState::Good | FileState::Unread => {}
            }
            self.file_state = state;
        }
        if let Some(verdict) = verdict.filter(|v| *v != self.verdict) {
            self.log.debug(format!("Health file verdict: {verdict:?}"));
            self.verdict = verdict;
        }
    }

    /// The verdict for `hosts`; failed takes precedence over questionable.
    fn answer(&self, hosts: &[Ipv4], answers: &mut Answers) {
        for &h in hosts {
            if self.verdict.failed.contains(&h) {
                answers.failed(h, "listed as failed in the health file");
            } else if self.verdict.questionable.contains(&h) {
                answers.questionable(h);
            } else {
                answers.healthy(h);
            }
        }
    }
}

impl Prober for FileProber {
    fn probe(&mut self, _round: Round, hosts: &[Ipv4], answers: &mut Answers) {
        self.watch.clear();
        self.reread();
        self.answer(hosts, answers);
    }

    fn wait(&mut self, until: Instant, answers: &mut Answers) {
        match self.watch.wait(&self.no_stop, Some(until)) {
            Wake::Changed(trigger) => {
                self.log.debug(format!("Detected file change event for {} ({trigger})", self.path.display()));
                self.reread();
                self.answer(&self.hosts, answers);
            }
            Wake::Error(e) => self.log.warn(format!("{e}; the health file is still re-read every round")),
            Wake::Event(_) | Wake::Timeout | Wake::Stopped => {}
        }
    }

    fn answer_new_hosts(&mut self, hosts: &[Ipv4], answers: &mut Answers) {
        self.hosts = hosts.to_vec();
        self.answer(hosts, answers);
    }

    fn details(&self) -> serde_json::Value {
        let questionable: Vec<String> = self
            .hosts
            .iter()
            .filter(|h| self.verdict.questionable.contains(h) && !self.verdict.failed.contains(h))
            .map(|h| h.to_string())
            .collect();
        serde_json::json!({"reads": self.reads, "errors": self.errors, "questionable": questionable})
    }
}

/// The health plugin.
pub struct HealthFile;

fn interval_from(args: &PluginArgs) -> Result<Duration, String> {
    args.seconds("health_file_interval", 1.0, INTERVAL_RANGE)
}

impl PluginDescription for HealthFile {
    const NAME: &'static str = "file";
    const DESCRIPTION: &'static str = "Reads failed and questionable hosts from a file (tests, drills)";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn arguments() -> Vec<ArgSpec> {
        vec![
            ArgSpec::value(
                "health_file",
                "PATH",
                "file listing failed hosts: JSON {\"failed\": [...], \"questionable\": [...]} \
                 or one IP per line (only for 'file' health monitor plugin)",
            )
            .required(),
            ArgSpec::value(
                "health_file_interval",
                "SECS",
                "re-read the health file at least this often, default 1 (only for 'file' \
                 health monitor plugin)",
            )
            .default("1"),
        ]
    }

    fn validate_config(args: &PluginArgs) -> Result<(), String> {
        interval_from(args)?;
        let file = args.require("health_file")?;
        if file.is_empty() || Path::new(file).file_name().is_none() {
            return Err(format!("--health_file: '{file}' is not a file name"));
        }
        Ok(())
    }
}

impl HealthPlugin for HealthFile {
    type Prober = FileProber;

    fn start(args: &PluginArgs, run: &HealthRun) -> Result<(Schedule, FileProber), String> {
        Self::validate_config(args)?;
        let (file, interval) = (args.require("health_file")?, interval_from(args)?);
        let path = std::path::absolute(file).map_err(|e| format!("--health_file '{file}': {e}"))?;
        let log = run.log().clone();
        log.info(format!("File health monitor plugin: Starting to watch '{file}'."));
        let watch = FileWatch::new(&path).unwrap_or_else(|e| {
            log.warn(format!("{e}; re-reading the health file every {} s only", interval.as_secs_f64()));
            FileWatch::polling(&path)
        });
        let mut prober = FileProber {
            path,
            log,
            watch,
            no_stop: never(),
            verdict: Verdict::default(),
            file_state: FileState::Unread,
            hosts: Vec::new(),
            reads: 0,
            errors: 0,
        };
        prober.reread();
        Ok((Schedule::every(interval).probes_per_interval(1).hold_down(Duration::ZERO), prober))
    }
}

export_plugin!(health: HealthFile);

#[cfg(test)]
mod tests {
    use std::fs;

    use vpcrouter_plugin_api::testkit::{ips, nothing_within, start_health, HealthHarness};
    use vpcrouter_plugin_api::{HealthStats, PluginStats};

    use super::*;

    const WAIT: Duration = Duration::from_secs(3);
    const QUIET: Duration = Duration::from_millis(400);

    fn set(list: &[&str]) -> BTreeSet<Ipv4> {
        ips(list).into_iter().collect()
    }

    #[test]
    fn parses_json() {
        let v = parse_health(r#"{"failed": ["10.0.0.2", "10.0.0.1"], "questionable": ["10.0.0.3"]}"#).unwrap();
        assert_eq!(v.failed, set(&["10.0.0.1", "10.0.0.2"]));
        assert_eq!(v.questionable, set(&["10.0.0.3"]));
        let v = parse_health(r#" {"questionable": []} "#).unwrap();
        assert_eq!(v, Verdict::default());
        assert_eq!(parse_health("{}").unwrap(), Verdict::default());
    }

    #[test]
    fn json_errors_name_the_problem() {
        let err = |text: &str| parse_health(text).unwrap_err();
        assert_eq!(err(r#"{"failled": []}"#), "unknown key 'failled'; expected \"failed\" or \"questionable\"");
        assert_eq!(err(r#"{"failed": ["1.1.1."]}"#), "'1.1.1.' in 'failed' is not a valid IPv4 address");
        assert_eq!(err(r#"{"failed": "10.0.0.1"}"#), "the value of 'failed' must be a list of IPv4 addresses");
        assert_eq!(err(r#"{"questionable": [7]}"#), "7 in 'questionable' is not a string");
        assert!(err(r#"{"failed": ["#).starts_with("the health file is not valid JSON"));
    }

    #[test]
    fn parses_plain_text() {
        let v = parse_health("# drill 3\n10.0.0.7\n\n  10.0.0.5  # the NAT box\n10.0.0.7\n").unwrap();
        assert_eq!(v.failed, set(&["10.0.0.5", "10.0.0.7"]));
        assert!(v.questionable.is_empty());
        assert_eq!(parse_health("").unwrap(), Verdict::default());
        assert_eq!(
            parse_health("10.0.0.1\nnot-an-ip\n").unwrap_err(),
            "'not-an-ip' in line 2 is not a valid IPv4 address"
        );
    }

    #[test]
    fn options_are_checked() {
        let args = |i: &str| PluginArgs::from_pairs([("health_file", "/tmp/h"), ("health_file_interval", i)]);
        assert_eq!(HealthFile::validate_config(&args("0.5")), Ok(()));
        assert!(HealthFile::validate_config(&args("0")).unwrap_err().contains("between"));
        assert!(HealthFile::validate_config(&args("NaN")).unwrap_err().contains("between"));
        assert!(HealthFile::validate_config(&args("x")).unwrap_err().starts_with("--health_file_interval: 'x'"));
        let no_file = PluginArgs::from_pairs([("health_file_interval", "1")]);
        assert_eq!(HealthFile::validate_config(&no_file), Err("--health_file is required".into()));
        assert!(HealthFile::validate_config(&PluginArgs::from_pairs([("health_file", "..")])).is_err());
        let h = start_health::<HealthFile>(&[("health_file", "h.json")]).unwrap();
        assert_eq!(h.monitor.interval_secs(), 1.0);
        assert!(h.logs.contains(LogLevel::Info, "Starting to watch 'h.json'"));
        h.stop().unwrap();
    }

    fn start(file: &Path, interval: &str) -> HealthHarness {
        start_health::<HealthFile>(&[("health_file", file.to_str().unwrap()), ("health_file_interval", interval)])
            .unwrap()
    }

    fn next(h: &HealthHarness) -> (Vec<Ipv4>, Vec<Ipv4>) {
        let r = h.next_report(WAIT).expect("a health report");
        (r.failed.into_vec(), r.questionable.into_vec())
    }

    fn status(h: &HealthHarness) -> (HealthStats, serde_json::Value) {
        let status = h.monitor.status();
        let PluginStats::Health(stats) = status.stats else { panic!("health stats") };
        (stats, serde_json::from_str(status.details.as_str()).unwrap())
    }

    #[test]
    fn follows_the_file_and_the_host_list() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("health.json");
        fs::write(&file, r#"{"failed": ["10.0.0.2", "10.0.0.99"]}"#).unwrap();
        let h = start(&file, "60");
        assert!(nothing_within(&h.reports, QUIET), "no report before the first host list");

        // The first report has the file's verdict, limited to the listed hosts.
        h.send_hosts(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert_eq!(next(&h), (ips(&["10.0.0.2"]), ips(&[])));
        assert!(h.logs.contains(LogLevel::Info, "Currently failed IPs: 10.0.0.2"));

        // Written elsewhere and renamed over the file: seen at once, not at the next poll.
        let tmp = dir.path().join("health.json.tmp");
        fs::write(&tmp, r#"{"failed": ["10.0.0.3"], "questionable": ["10.0.0.1"]}"#).unwrap();
        let t = Instant::now();
        fs::rename(&tmp, &file).unwrap();
        assert_eq!(next(&h), (ips(&["10.0.0.3"]), ips(&["10.0.0.1"])), "no hold-down: 10.0.0.2 is healthy at once");
        assert!(t.elapsed() < Duration::from_millis(600), "a change is reported after the debounce: {:?}", t.elapsed());

        // Bad content: logged, previous verdict kept.
        fs::write(&file, r#"{"failed": ["10.0.0.300"]}"#).unwrap();
        assert!(h.logs.wait_for(LogLevel::Error, "'10.0.0.300' in 'failed' is not a valid IPv4", WAIT));
        assert!(nothing_within(&h.reports, QUIET));

        // A host list change that does not change the report sends nothing; one that does, does.
        h.send_hosts(&["10.0.0.1", "10.0.0.3", "10.0.0.4"]);
        assert!(nothing_within(&h.reports, QUIET));
        h.send_hosts(&["10.0.0.1", "10.0.0.4"]);
        assert_eq!(next(&h), (ips(&[]), ips(&["10.0.0.1"])));
        assert_eq!(status(&h).1["questionable"], serde_json::json!(["10.0.0.1"]));

        // Plain text; then the file disappears: everyone healthy, logged once.
        fs::write(&file, "10.0.0.4\n").unwrap();
        assert_eq!(next(&h), (ips(&["10.0.0.4"]), ips(&[])));
        fs::remove_file(&file).unwrap();
        assert_eq!(next(&h), (ips(&[]), ips(&[])));
        assert_eq!(h.logs.count(LogLevel::Info, "does not exist: all hosts are healthy"), 1);

        let (stats, details) = status(&h);
        assert_eq!(stats.reports_sent, 5);
        assert!(stats.failures >= 3, "a failure per failed verdict: {stats:?}");
        assert_eq!(details["errors"], 1);
        assert!(details["reads"].as_u64() >= Some(5), "{details}");
        assert_eq!(details["hold_down_secs"], 0.0);
        let params = h.monitor.status().params;
        assert!(params.iter().any(|p| p.0 == "health_file_interval" && p.1 == "60"), "{params:?}");
        let started = Instant::now();
        h.stop().unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(h.logs.contains(LogLevel::Info, "file health monitor plugin: Stopped"));
    }

    #[cfg(unix)]
    #[test]
    fn the_fallback_poll_sees_changes_without_events() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("health.txt");
        fs::write(&file, "").unwrap();
        // A hard link elsewhere changes the file without an event in the watched directory.
        let other = tempfile::tempdir().unwrap();
        let link = other.path().join("link.txt");
        fs::hard_link(&file, &link).unwrap();

        let h = start(&file, "0.3");
        h.send_hosts(&["10.0.0.1"]);
        assert_eq!(next(&h), (ips(&[]), ips(&[])));
        fs::write(&link, "10.0.0.1\n").unwrap();
        assert_eq!(next(&h), (ips(&["10.0.0.1"]), ips(&[])));
        assert_eq!(h.monitor.interval_secs(), 0.3);
        let (stats, _) = status(&h);
        assert!(stats.checks >= 1 && stats.failures >= 1, "{stats:?}");
        h.stop().unwrap();
    }

    #[test]
    fn files_that_cannot_be_health_files_are_refused_and_the_verdict_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("health.txt");
        fs::write(&file, "10.0.0.1\n").unwrap();
        let h = start(&file, "60");
        h.send_hosts(&["10.0.0.1", "10.0.0.2"]);
        assert_eq!(next(&h), (ips(&["10.0.0.1"]), ips(&[])));

        let swap_in = |make: &dyn Fn(&Path)| {
            let tmp = dir.path().join("next");
            make(&tmp);
            fs::rename(&tmp, &file).unwrap();
        };
        let started = Instant::now();
        swap_in(&|p| assert!(std::process::Command::new("mkfifo").arg(p).status().unwrap().success()));
        assert!(h.logs.wait_for(LogLevel::Error, "is a FIFO (named pipe), not a regular file", WAIT));
        swap_in(&|p| std::os::unix::fs::symlink("/dev/zero", p).unwrap());
        assert!(h.logs.wait_for(LogLevel::Error, "is a character device, not a regular file", WAIT));
        swap_in(&|p| fs::write(p, vec![b'#'; (MAX_SIZE + 1) as usize]).unwrap());
        assert!(h.logs.wait_for(LogLevel::Error, "is larger than the limit of 1 MiB", WAIT));
        assert!(started.elapsed() < WAIT);
        assert!(nothing_within(&h.reports, QUIET), "the last verdict stays");

        swap_in(&|p| fs::write(p, "10.0.0.2\n").unwrap());
        assert_eq!(next(&h), (ips(&["10.0.0.2"]), ips(&[])));
        assert_eq!(status(&h).1["errors"], 3);
        let started = Instant::now();
        h.stop().unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn missing_file_at_start_means_healthy() {
        let dir = tempfile::tempdir().unwrap();
        let h = start(&dir.path().join("absent.json"), "1");
        assert!(h.logs.contains(LogLevel::Info, "does not exist: all hosts are healthy"));
        h.send_hosts(&["10.0.0.1"]);
        assert_eq!(next(&h), (ips(&[]), ips(&[])));
        h.stop().unwrap();
    }
}
