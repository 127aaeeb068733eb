//! Command-line arguments that plugins declare and the host parses for them.

use std::ops::RangeInclusive;
use std::time::Duration;

use abi_stable::std_types::{ROption, RString, RVec, Tuple2};
use abi_stable::StableAbi;

/// Parses the value `text` of option `--flag` as a number of seconds within `range`; the one
/// parser of every interval and timeout option, in plugins and in the host.
///
/// Accepts decimals (`0.5`, ` 2 `). The errors name the option and say what to give:
/// `--flag: 'two' is not a valid number`, or
/// `--flag must be between 0.1 and 3600 seconds (got 0)` (also for NaN and infinity).
pub fn parse_seconds(flag: &str, text: &str, range: RangeInclusive<f64>) -> Result<Duration, String> {
    let secs: f64 = text.trim().parse().map_err(|_| format!("--{flag}: '{text}' is not a valid number"))?;
    // NaN is in no range; infinity and negative numbers are no `Duration`.
    Some(secs)
        .filter(|s| range.contains(s))
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("--{flag} must be between {} and {} seconds (got {text})", range.start(), range.end()))
}

/// One command-line option a plugin adds to `vpcrouter` (shown by `--help`).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct ArgSpec {
    /// Long name without dashes, e.g. `tcp_check_port` for `--tcp_check_port`.
    pub long: RString,
    /// Optional one-letter short name without the dash, e.g. `f` for `-f`.
    pub short: ROption<RString>,
    /// One-line help text.
    pub help: RString,
    /// Placeholder shown in help, e.g. `FILE`.
    pub value_name: RString,
    /// Value used when the option is absent.
    pub default: ROption<RString>,
    /// The host refuses to start without it.
    pub required: bool,
    /// A switch without value; present means `"true"`.
    pub flag: bool,
}

impl ArgSpec {
    /// An option taking a value, optional, no default.
    pub fn value(long: &str, value_name: &str, help: &str) -> Self {
        ArgSpec {
            long: long.into(),
            short: ROption::RNone,
            help: help.into(),
            value_name: value_name.into(),
            default: ROption::RNone,
            required: false,
            flag: false,
        }
    }

    /// A switch without value.
    pub fn flag(long: &str, help: &str) -> Self {
        ArgSpec { flag: true, ..ArgSpec::value(long, "", help) }
    }

    /// Sets the one-letter short name.
    pub fn short(mut self, short: char) -> Self {
        self.short = ROption::RSome(short.to_string().into());
        self
    }

    /// Sets the default value.
    pub fn default(mut self, default: &str) -> Self {
        self.default = ROption::RSome(default.into());
        self
    }

    /// Marks the option as required.
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }
}

/// The parsed values of a plugin's options (defaults applied), by long name.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq, Eq)]
pub struct PluginArgs {
    /// `(long name, value)` pairs; absent options without default are not listed.
    pub values: RVec<Tuple2<RString, RString>>,
}

impl PluginArgs {
    /// Builds from `(name, value)` pairs.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        PluginArgs { values: pairs.into_iter().map(|(k, v)| Tuple2(k.into(), v.into())).collect() }
    }

    /// The values of the options `specs` declares in a raw command line (`argv`, program
    /// name first), with defaults applied; the arguments are split as the host's parser
    /// splits them (`--name value`, `--name=value`, `-n value`, `-nvalue`, `--` ends the
    /// options).
    ///
    /// Best effort, for a look before the host's full parse (which plugins an option names):
    /// options `specs` does not declare are skipped, so a short option cluster stops at the
    /// first letter it does not declare, and the value of an undeclared option that looks
    /// like a declared option is read as one.
    pub fn from_argv(specs: &[ArgSpec], argv: &[String]) -> Self {
        let raw = clap_lex::RawArgs::new(argv.iter().map(String::as_str));
        let mut cursor = raw.cursor();
        let _program = raw.next_os(&mut cursor);
        let mut found: Vec<(&ArgSpec, String)> = Vec::new();
        let text = |v: &std::ffi::OsStr| v.to_string_lossy().into_owned();
        while let Some(arg) = raw.next(&mut cursor) {
            if arg.is_escape() {
                break;
            }
            if let Some((Ok(long), attached)) = arg.to_long() {
                let Some(spec) = specs.iter().find(|s| s.long.as_str() == long) else { continue };
                let value = match (spec.flag, attached) {
                    (true, _) => Some("true".to_string()),
                    (false, Some(v)) => Some(text(v)),
                    (false, None) => raw.next_os(&mut cursor).map(text),
                };
                found.extend(value.map(|v| (spec, v)));
            } else if let Some(mut shorts) = arg.to_short() {
                while let Some(Ok(c)) = shorts.next_flag() {
                    let short =
                        |s: &&ArgSpec| s.short.as_ref().into_option().is_some_and(|x| x.as_str() == c.to_string());
                    let Some(spec) = specs.iter().find(short) else { break };
                    if spec.flag {
                        found.push((spec, "true".to_string()));
                        continue;
                    }
                    // `-nvalue` and `-n=value` as clap reads them, else the next argument.
                    let attached = shorts.next_value_os().map(text).filter(|v| !v.is_empty());
                    let attached = attached.map(|v| v.strip_prefix('=').map(String::from).unwrap_or(v));
                    let value = attached.or_else(|| raw.next_os(&mut cursor).map(text));
                    found.extend(value.map(|v| (spec, v)));
                    break;
                }
            }
        }
        let defaults = specs.iter().filter(|s| !found.iter().any(|(f, _)| f.long == s.long));
        let defaults: Vec<(&ArgSpec, String)> =
            defaults.filter_map(|s| s.default.as_ref().into_option().map(|d| (s, d.to_string()))).collect();
        PluginArgs::from_pairs(defaults.iter().chain(&found).map(|(s, v)| (s.long.as_str(), v.as_str())))
    }

    /// The raw value of `--name`, if given or defaulted.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.iter().rev().find(|t| t.0.as_str() == name).map(|t| t.1.as_str())
    }

    /// The value of a required option, or an error naming it.
    pub fn require(&self, name: &str) -> Result<&str, String> {
        self.get(name).ok_or_else(|| format!("--{name} is required"))
    }

    /// Parses `--name` as a number; the error says which option and what was wrong.
    pub fn parse<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(raw) => raw.trim().parse::<T>().map(Some).map_err(|_| {
                let what = match std::any::type_name::<T>() {
                    "f32" | "f64" => "number",
                    "bool" => "true or false",
                    _ => "whole number in range",
                };
                format!("--{name}: '{raw}' is not a valid {what}")
            }),
        }
    }

    /// True when the switch `--name` was given.
    pub fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("true"))
    }

    /// `--name` in seconds, by [`parse_seconds`]: `default` when absent.
    pub fn seconds(&self, name: &str, default: f64, range: RangeInclusive<f64>) -> Result<Duration, String> {
        match self.get(name) {
            Some(raw) => parse_seconds(name, raw, range),
            None => parse_seconds(name, &default.to_string(), range),
        }
    }

    /// `--name` as a TCP/UDP port, 1..=65535, if given.
    pub fn port(&self, name: &str) -> Result<Option<u16>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(raw) => match raw.trim().parse::<u32>() {
                Ok(p @ 1..=65535) => Ok(Some(p as u16)),
                _ => Err(format!("--{name} must be a port number between 1 and 65535 (got '{raw}')")),
            },
        }
    }

    /// `--name` split at `separator`, items trimmed, empty items dropped.
    pub fn list(&self, name: &str, separator: char) -> Vec<String> {
        self.get(name)
            .map(|raw| raw.split(separator).map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_parse_with_the_errors_users_see() {
        let args = |v: &str| PluginArgs::from_pairs([("x", v)]);
        assert_eq!(PluginArgs::default().seconds("x", 2.0, 0.1..=3600.0), Ok(Duration::from_secs(2)));
        assert_eq!(args("0.1").seconds("x", 2.0, 0.1..=3600.0), Ok(Duration::from_millis(100)));
        for bad in ["0", "0.05", "3601", "-1", "NaN", "inf"] {
            let e = args(bad).seconds("x", 2.0, 0.1..=3600.0).unwrap_err();
            assert!(e.contains("--x must be between 0.1 and 3600 seconds"), "{bad}: {e}");
        }
        assert_eq!(args("two").seconds("x", 2.0, 0.1..=3600.0).unwrap_err(), "--x: 'two' is not a valid number");
        assert_eq!(
            parse_seconds("window", " 0 ", 0.0..=300.0),
            Ok(Duration::ZERO),
            "trimmed, and the range may start at 0"
        );
        assert_eq!(parse_seconds("window", "1.5", 0.0..=300.0), Ok(Duration::from_millis(1500)));
        assert_eq!(
            parse_seconds("window", "301", 0.0..=300.0).unwrap_err(),
            "--window must be between 0 and 300 seconds (got 301)"
        );
        assert_eq!(
            parse_seconds("window", "-0.5", 0.0..=300.0).unwrap_err(),
            "--window must be between 0 and 300 seconds (got -0.5)"
        );
        assert_eq!(args("22").port("x"), Ok(Some(22)));
        assert_eq!(PluginArgs::default().port("x"), Ok(None));
        for bad in ["0", "65536", "ssh", "-1"] {
            assert!(args(bad).port("x").unwrap_err().contains("between 1 and 65535"), "{bad}");
        }
        assert_eq!(args(" a: b::c ").list("x", ':'), ["a", "b", "c"]);
    }

    #[test]
    fn declared_options_are_read_from_a_raw_command_line() {
        let specs = [
            ArgSpec::value("plugins", "A:B", "").short('p'),
            ArgSpec::value("size", "N", "").default("5"),
            ArgSpec::flag("fast", "").short('F'),
        ];
        let read = |line: &str| {
            let argv: Vec<String> = line.split_whitespace().map(String::from).collect();
            let args = PluginArgs::from_argv(&specs, &argv);
            let pairs: Vec<String> = args.values.iter().map(|t| format!("{}={}", t.0, t.1)).collect();
            pairs.join(" ")
        };
        assert_eq!(read("vr -H multi --plugins a:b -r eu"), "size=5 plugins=a:b");
        assert_eq!(
            read("vr --plugins=a --size 7 --plugins b"),
            "plugins=a size=7 plugins=b",
            "in order; the last one counts"
        );
        assert_eq!(
            PluginArgs::from_argv(&specs, &["vr".into(), "--plugins=a".into(), "-pb".into()]).get("plugins"),
            Some("b")
        );
        assert_eq!(read("vr -p=a:b"), "size=5 plugins=a:b");
        assert_eq!(read("vr -Fp x --unknown --fast"), "size=5 fast=true plugins=x fast=true");
        assert_eq!(read("vr -vp x"), "size=5", "a cluster stops at a letter it does not declare");
        assert_eq!(read("vr -- --plugins a"), "size=5", "-- ends the options");
        assert_eq!(read("vr --plugins"), "size=5", "no value");
        assert_eq!(read("--plugins a"), "size=5", "the first argument is the program");
        assert_eq!(read(""), "size=5");
        assert!(PluginArgs::default().list("x", ':').is_empty());
    }
}
