//! Log setup: the format, the file (reopened on SIGHUP) and the filter.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use vpcrouter_plugin_api::sync::lock;

/// How log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines with `key=value` fields.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The logging options.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `--verbose`: debug logging.
    pub verbose: bool,
    /// `-l/--logfile`: a path, or `-` for stdout.
    pub logfile: String,
    /// `--log-format`: text or json.
    pub format: LogFormat,
}

impl LogConfig {
    /// True when the log goes to stdout (where an error line would show twice).
    pub fn to_stdout(&self) -> bool {
        self.logfile == "-"
    }

    /// Sets up logging as configured (see [`init`]).
    pub fn init(&self) -> anyhow::Result<LogHandle> {
        init(self.verbose, &self.logfile, self.format)
    }
}

/// The log file, shared by every log line; reopened on SIGHUP (logrotate).
#[derive(Clone)]
struct SharedFile(Arc<Mutex<File>>);

impl Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        lock(&self.0).flush()
    }
}

/// Handle on the log output, to reopen the file after rotation.
#[derive(Clone)]
pub struct LogHandle {
    /// The log file's path and the file every line goes to; `None` for stdout.
    file: Option<(PathBuf, Arc<Mutex<File>>)>,
}

impl LogHandle {
    /// Reopens the log file under its name (a rotated file is left to logrotate). Logging to
    /// stdout has nothing to reopen.
    pub fn reopen(&self) -> std::io::Result<()> {
        let Some((path, file)) = &self.file else { return Ok(()) };
        let fresh = open_append(path)?;
        *lock(file) = fresh;
        Ok(())
    }
}

fn open_append(path: &std::path::Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Sets up logging to stdout (`-`) or to a file (appended). `--verbose` selects debug.
/// `VPCROUTER_LOG` (tracing's filter syntax) overrides the levels. Without `--verbose`,
/// aws-config's warning about a refused AssumeRole (a dump of the SDK's error) is left out:
/// vpcrouter reports that failure itself, on one line.
pub fn init(verbose: bool, logfile: &str, format: LogFormat) -> anyhow::Result<LogHandle> {
    let default = if verbose { "info,vpcrouter=debug" } else { "warn,vpcrouter=info,aws_config::sts=error" };
    let filter = EnvFilter::try_from_env("VPCROUTER_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let (writer, ansi, handle) = if logfile == "-" {
        (BoxMakeWriter::new(std::io::stdout), std::io::stdout().is_terminal(), LogHandle { file: None })
    } else {
        let path = PathBuf::from(logfile);
        let file = open_append(&path)
            .map_err(|e| anyhow::anyhow!("cannot open log file '{logfile}': {e}; check -l/--logfile"))?;
        let shared = Arc::new(Mutex::new(file));
        let make = SharedFile(shared.clone());
        (BoxMakeWriter::new(move || make.clone()), false, LogHandle { file: Some((path, shared)) })
    };
    let layer = match format {
        LogFormat::Text => {
            tracing_subscriber::fmt::layer().with_target(false).with_ansi(ansi).with_writer(writer).boxed()
        }
        LogFormat::Json => tracing_subscriber::fmt::layer().json().with_target(false).with_writer(writer).boxed(),
    };
    tracing_subscriber::registry().with(filter).with(layer).try_init()?;
    Ok(handle)
}
