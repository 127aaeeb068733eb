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
}
