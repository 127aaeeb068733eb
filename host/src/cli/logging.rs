//! Logging options: `--verbose`, `-l/--logfile`, `--log-format`.

use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::logging::{LogConfig, LogFormat};

/// Adds the logging options.
pub(super) fn args(cmd: Command) -> Command {
    cmd.arg(Arg::new("verbose").long("verbose").action(ArgAction::SetTrue).help("produces more output"))
        .arg(
            Arg::new("logfile")
                .short('l')
                .long("logfile")
                .value_name("FILE")
                .default_value("-")
                .help("full path name for the logfile, or '-' for logging to stdout"),
        )
        .arg(
            Arg::new("log_format")
                .long("log-format")
                .value_name("FORMAT")
                .default_value("text")
                .value_parser(["text", "json"])
                .help("log line format: text, or json (one object per line) for log shippers"),
        )
}

/// The logging options, parsed.
pub(super) fn config(m: &ArgMatches) -> LogConfig {
    LogConfig {
        verbose: m.get_flag("verbose"),
        logfile: m.get_one::<String>("logfile").cloned().unwrap_or_else(|| "-".into()),
        format: match m.get_one::<String>("log_format").map(String::as_str) {
            Some("json") => LogFormat::Json,
            _ => LogFormat::Text,
        },
    }
}
