//! Command-line arguments that plugins declare and the host parses for them.

use abi_stable::std_types::{ROption, RString, RVec, Tuple2};
use abi_stable::StableAbi;

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

    /// `--name` in seconds: `default` when absent; the error names the option and range.
    pub fn seconds(
        &self,
        name: &str,
        default: f64,
        range: std::ops::RangeInclusive<f64>,
    ) -> Result<std::time::Duration, String> {
        let secs = self.parse::<f64>(name)?.unwrap_or(default);
        if !secs.is_finite() || !range.contains(&secs) {
            return Err(format!(
                "--{name} must be between {} and {} seconds (got {})",
                range.start(),
                range.end(),
                self.get(name).unwrap_or_default()
            ));
        }
        Ok(std::time::Duration::from_secs_f64(secs))
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
        assert_eq!(PluginArgs::default().seconds("x", 2.0, 0.1..=3600.0), Ok(std::time::Duration::from_secs(2)));
        assert_eq!(args("0.1").seconds("x", 2.0, 0.1..=3600.0), Ok(std::time::Duration::from_millis(100)));
        for bad in ["0", "0.05", "3601", "-1", "NaN", "inf"] {
            let e = args(bad).seconds("x", 2.0, 0.1..=3600.0).unwrap_err();
            assert!(e.contains("--x must be between 0.1 and 3600 seconds"), "{bad}: {e}");
        }
        assert!(args("two").seconds("x", 2.0, 0.1..=3600.0).unwrap_err().contains("'two' is not a valid number"));
        assert_eq!(args("22").port("x"), Ok(Some(22)));
        assert_eq!(PluginArgs::default().port("x"), Ok(None));
        for bad in ["0", "65536", "ssh", "-1"] {
            assert!(args(bad).port("x").unwrap_err().contains("between 1 and 65535"), "{bad}");
        }
        assert_eq!(args(" a: b::c ").list("x", ':'), ["a", "b", "c"]);
        assert!(PluginArgs::default().list("x", ':').is_empty());
    }
}
