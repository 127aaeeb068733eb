//! The standard process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_open_fds`, ...) as client_golang's process collector defines them, read from
//! `/proc/self` at each scrape (Linux only). The parsers are pure; [`ProcessStats::read`]
//! only reads the files.

use std::path::Path;

/// What `/proc` said was wrong.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// A file could not be read (no `/proc` mounted?).
    #[error("cannot read {path}: {source} (process metrics need Linux's /proc)")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file did not have the expected layout.
    #[error("unexpected content in {path}: {what}")]
    Parse {
        /// The file.
        path: &'static str,
        /// What was missing or wrong.
        what: &'static str,
    },
}

/// The fields of `/proc/self/stat` the metrics use (proc(5)), in clock ticks and pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// User-mode CPU time, clock ticks (field 14).
    pub utime: u64,
    /// Kernel-mode CPU time, clock ticks (field 15).
    pub stime: u64,
    /// Start time after boot, clock ticks (field 22).
    pub starttime: u64,
    /// Virtual memory size, bytes (field 23).
    pub vsize: u64,
    /// Resident set size, pages (field 24).
    pub rss: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may hold
/// spaces and parentheses itself, so the fields are counted after the last `)`.
pub fn parse_stat(text: &str) -> Result<Stat, ProcessError> {
    let err = |what| ProcessError::Parse { path: "/proc/self/stat", what };
    let (_, rest) = text.rsplit_once(')').ok_or(err("no ')' closing the command name"))?;
    // Field n (1-based) is at index n - 3 after the command name.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64, ProcessError> {
        fields.get(n - 3).ok_or(err("fewer than 24 fields"))?.parse().map_err(|_| err("a field is not a number"))
    };
    Ok(Stat { utime: field(14)?, stime: field(15)?, starttime: field(22)?, vsize: field(23)?, rss: field(24)? })
}

/// The boot time (Unix seconds) from `/proc/stat`'s `btime` line.
pub fn parse_btime(text: &str) -> Result<u64, ProcessError> {
    let err = |what| ProcessError::Parse { path: "/proc/stat", what };
    let value = text.lines().find_map(|l| l.strip_prefix("btime ")).ok_or(err("no btime line"))?;
    value.trim().parse().map_err(|_| err("btime is not a number"))
}

/// The process metrics at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident memory, bytes.
    pub resident_bytes: u64,
    /// Virtual memory, bytes.
    pub virtual_bytes: u64,
    /// When the process started, Unix seconds.
    pub start_time_seconds: f64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on file descriptors (`None`: unlimited).
    pub max_fds: Option<u64>,
}

impl ProcessStats {
    /// Combines the parsed files with the clock tick rate and page size.
    pub fn from_parts(stat: Stat, btime: u64, ticks_per_second: u64, page_size: u64, open_fds: u64) -> Self {
        let ticks = ticks_per_second.max(1) as f64;
        ProcessStats {
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            resident_bytes: stat.rss.saturating_mul(page_size),
            virtual_bytes: stat.vsize,
            start_time_seconds: btime as f64 + stat.starttime as f64 / ticks,
            open_fds,
            max_fds: None,
        }
    }

    /// This process's metrics now, from `/proc/self/stat`, `/proc/stat`, `/proc/self/fd`
    /// and `getrlimit(RLIMIT_NOFILE)`.
    pub fn read() -> Result<ProcessStats, ProcessError> {
        let read = |path: &str| {
            std::fs::read_to_string(path).map_err(|source| ProcessError::Read { path: path.into(), source })
        };
        let stat = parse_stat(&read("/proc/self/stat")?)?;
        let btime = parse_btime(&read("/proc/stat")?)?;
        let fd_dir = Path::new("/proc/self/fd");
        let open_fds = std::fs::read_dir(fd_dir)
            .map_err(|source| ProcessError::Read { path: fd_dir.display().to_string(), source })?
            .count() as u64;
        let mut stats = ProcessStats::from_parts(
            stat,
            btime,
            rustix::param::clock_ticks_per_second(),
            rustix::param::page_size() as u64,
            open_fds,
        );
        stats.max_fds = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real line, with a command name holding spaces and a parenthesis.
    const STAT: &str = "4242 (vpc router) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 125 0 0 20 0 9 0 \
                        98765 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 4096 17987 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let s = parse_stat(STAT).unwrap();
        assert_eq!(s, Stat { utime: 250, stime: 125, starttime: 98765, vsize: 123_456_789, rss: 2048 });
        assert!(matches!(parse_stat("4242 vpcrouter S 1"), Err(ProcessError::Parse { .. })));
        assert!(parse_stat("4242 (vpcrouter) S 1 2 3").unwrap_err().to_string().contains("fewer than 24"));
        let bad = STAT.replace(" 250 ", " x ");
        assert!(parse_stat(&bad).unwrap_err().to_string().contains("not a number"));
    }

    #[test]
    fn btime_is_found_among_the_lines() {
        assert_eq!(parse_btime("cpu  1 2 3\nintr 5\nbtime 1795000000\nprocesses 9\n").unwrap(), 1_795_000_000);
        assert!(parse_btime("cpu 1\n").is_err());
        assert!(parse_btime("btime soon\n").is_err());
    }

    #[test]
    fn ticks_and_pages_become_seconds_and_bytes() {
        let s = parse_stat(STAT).unwrap();
        let p = ProcessStats::from_parts(s, 1_795_000_000, 100, 4096, 12);
        assert_eq!(p.cpu_seconds, 3.75);
        assert_eq!(p.resident_bytes, 2048 * 4096);
        assert_eq!(p.virtual_bytes, 123_456_789);
        assert_eq!(p.start_time_seconds, 1_795_000_000.0 + 987.65);
        assert_eq!(p.open_fds, 12);
    }

    #[test]
    fn this_process_reads_plausibly() {
        let p = ProcessStats::read().unwrap();
        assert!(p.resident_bytes > 0 && p.virtual_bytes >= p.resident_bytes, "{p:?}");
        assert!(p.open_fds >= 3, "{p:?}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(p.start_time_seconds > 1e9 && p.start_time_seconds <= now + 1.0, "{p:?}");
        assert!(p.max_fds.is_none_or(|m| m >= p.open_fds), "{p:?}");
    }
}
