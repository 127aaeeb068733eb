//! The plugins a command line names (`-m`, `-H`, `--plugin-dir`,
//! `--allow-insecure-plugins`, `--list-plugins`) and the options they declare.
//!
//! Plugins declare their own options, so the command is built in two steps: a pre-scan
//! finds `-m`, `-H` and `--plugin-dir`, the plugins are loaded, and then the full clap
//! command (main options + plugin options) parses the arguments; the loaded plugins then
//! check their option values.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};
use vpcrouter_plugin_api::{ArgSpec, PluginArgs, PluginKind};
use vpcrouter_plugin_host::load::{self, LoadError, Loader, PluginLibrary, SearchPath};
use vpcrouter_plugin_host::{LoadedPlugin, PluginSet};

use super::CliError;

/// The default health plugin, as in vpc-router.
pub const DEFAULT_HEALTH: &str = "icmpecho";

/// The result of the pre-scan.
#[derive(Debug, Default, PartialEq)]
pub(super) struct PreScan {
    /// `-m`: the watcher's name.
    pub(super) mode: Option<String>,
    /// `-H`: the health plugin's name.
    pub(super) health: Option<String>,
    /// `--notify`: the notifiers' names, in order.
    pub(super) notify: Vec<String>,
    /// `--plugin-dir`, in order.
    pub(super) plugin_dirs: Vec<PathBuf>,
    /// `--allow-insecure-plugins`.
    pub(super) allow_insecure: bool,
    /// `--list-plugins`.
    pub(super) list: bool,
    /// `-h/--help`: plugins that fail to load become notes under the help.
    pub(super) help: bool,
}

/// Finds the options needed before plugins are loaded. Understands `-m X`, `-mX`,
/// `--mode X` and `--mode=X` (and likewise for `-H`/`--health`, `--notify`, `--plugin-dir`).
pub(super) fn prescan(argv: &[String]) -> PreScan {
    let mut scan = PreScan::default();
    let mut i = 1;
    while i < argv.len() {
        let arg = argv[i].as_str();
        if arg == "--" {
            break;
        }
        let mut take = |short: &str, long: &str| -> Option<String> {
            if arg == short || arg == long {
                i += 1;
                return argv.get(i).cloned();
            }
            if let Some(v) = arg.strip_prefix(long).and_then(|r| r.strip_prefix('=')) {
                return Some(v.to_string());
            }
            (!short.is_empty() && arg.len() > 2 && arg.starts_with(short)).then(|| arg[2..].to_string())
        };
        if let Some(v) = take("-m", "--mode") {
            scan.mode = Some(v);
        } else if let Some(v) = take("-H", "--health") {
            scan.health = Some(v);
        } else if let Some(v) = take("", "--notify") {
            scan.notify.push(v);
        } else if let Some(v) = take("", "--plugin-dir") {
            scan.plugin_dirs.push(PathBuf::from(v));
        } else {
            match arg {
                "--allow-insecure-plugins" => scan.allow_insecure = true,
                "--list-plugins" => scan.list = true,
                "-h" | "--help" => scan.help = true,
                _ => {}
            }
        }
        i += 1;
    }
    scan
}

/// Adds the plugin selection options.
pub(super) fn args(cmd: Command) -> Command {
    cmd.arg(
        Arg::new("mode")
            .short('m')
            .long("mode")
            .value_name("NAME")
            .required(true)
            .help("name of the watcher plugin (configfile, http, fixedconf, ...)"),
    )
    .arg(
        Arg::new("health")
            .short('H')
            .long("health")
            .value_name("NAME")
            .default_value(DEFAULT_HEALTH)
            .help("name of the health-check plugin"),
    )
    .arg(
        Arg::new("plugin_dir")
            .long("plugin-dir")
            .value_name("DIR")
            .action(ArgAction::Append)
            .value_parser(clap::value_parser!(PathBuf))
            .help("directory to search for plugins first (repeatable)"),
    )
    .arg(Arg::new("allow_insecure_plugins").long("allow-insecure-plugins").action(ArgAction::SetTrue).help(
        "load plugin files even if group or others may write them or another user than root or vpcrouter's owns them",
    ))
    .arg(
        Arg::new("list_plugins")
            .long("list-plugins")
            .action(ArgAction::SetTrue)
            .help("list the plugins found, with versions and descriptions, and exit"),
    )
}

/// The libraries the pre-scan names, loaded; with `--help`, a library that fails to load
/// is a note under the help instead of an error.
pub(super) struct Libraries {
    /// The watcher (`None` only with `--help` or without `-m`).
    pub(super) watcher: Option<PluginLibrary>,
    /// The health plugin.
    pub(super) health: Option<PluginLibrary>,
    /// The health plugins it requires, by name.
    pub(super) subs: BTreeMap<String, PluginLibrary>,
    /// The notifier plugins `--notify` names (not the built-in ones), in order.
    pub(super) notifiers: Vec<PluginLibrary>,
    /// Why a library could not be loaded, for the help.
    pub(super) notes: Vec<String>,
}

/// Loads the plugins `scan` names through `loader` from `search`.
pub(super) fn load(
    loader: &Loader,
    search: &SearchPath,
    argv: &[String],
    scan: &PreScan,
) -> Result<Libraries, CliError> {
    // Before anything is loaded: a notifier loaded twice would clash with its own options.
    if let Some((_, name)) = scan.notify.iter().enumerate().find(|(i, n)| scan.notify[..*i].contains(n)) {
        return Err(CliError::usage(format!("error: --notify {name} is given twice; name each notifier once")));
    }
    let health_name = scan.health.clone().unwrap_or_else(|| DEFAULT_HEALTH.to_string());
    let mut notes = Vec::new();
    let watcher = match &scan.mode {
        Some(mode) => match loader.load(search, PluginKind::Watcher, mode) {
            Ok(lib) => Some(lib),
            Err(e) if scan.help => {
                notes.push(e.to_string());
                None
            }
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let mut subs = BTreeMap::new();
    let health = match load::load_health_tree(loader, search, argv, &health_name, &mut subs) {
        Ok(lib) => Some(lib),
        Err(e) if scan.help || scan.mode.is_none() => {
            notes.push(CliError::from(e).message);
            None
        }
        Err(e) => return Err(e.into()),
    };
    let notifiers = load_notifiers(loader, search, scan, &mut notes)?;
    Ok(Libraries { watcher, health, subs, notifiers, notes })
}

/// Loads the notifier plugins `--notify` names; the built-in ones are the host's. With
/// `--help`, one that fails to load is a note.
fn load_notifiers(
    loader: &Loader,
    search: &SearchPath,
    scan: &PreScan,
    notes: &mut Vec<String>,
) -> Result<Vec<PluginLibrary>, CliError> {
    let mut libs = Vec::new();
    for name in scan.notify.iter().filter(|n| !super::notify::is_builtin(n)) {
        match loader.load(search, PluginKind::Notifier, name) {
            Ok(lib) => libs.push(lib),
            Err(e) if scan.help => notes.push(e.to_string()),
            Err(e @ LoadError::NotFound { .. }) => {
                let builtin: Vec<&str> = super::notify::BUILTIN.iter().map(|(n, _)| *n).collect();
                let mut err = CliError::from(e);
                err.message.push_str(&format!(" (built in: {})", builtin.join(", ")));
                return Err(err);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(libs)
}

impl Libraries {
    /// Every library loaded.
    pub(super) fn all(&self) -> impl Iterator<Item = &PluginLibrary> {
        self.watcher.iter().chain(self.health.iter()).chain(self.subs.values()).chain(&self.notifiers)
    }

    /// The plugins with their option values from `m`, checked by the plugins themselves.
    pub(super) fn configure(self, m: &ArgMatches, argv: &[String]) -> Result<PluginSet, CliError> {
        // Both are loaded when we get here: -m is required, and a health load error without
        // --help was returned by `load`.
        let (Some(watcher), Some(health)) = (self.watcher, self.health) else {
            return Err(CliError::usage(self.notes.join("\n")));
        };
        let with_args = |lib: PluginLibrary| LoadedPlugin { args: plugin_values(&lib, m), lib };
        let set = PluginSet {
            watcher: with_args(watcher),
            health: with_args(health),
            subs: self.subs.into_iter().map(|(n, lib)| (n, with_args(lib))).collect(),
            notifiers: self.notifiers.into_iter().map(with_args).collect(),
        };
        for p in set.all() {
            load::validate_config(&p.lib, &p.args)?;
        }
        check_required_loaded(&set, argv)?;
        check_etcd_options_used(m, &set)?;
        Ok(set)
    }
}

/// Asks the health plugins again which plugins they start, now with the values the full parse
/// gave their options: a plugin the first look at the command line missed was not loaded, and
/// its options were not parsed.
fn check_required_loaded(set: &PluginSet, argv: &[String]) -> Result<(), CliError> {
    for p in std::iter::once(&set.health).chain(set.subs.values()) {
        for name in load::required_plugins(&p.lib, &p.args, argv)? {
            if !set.subs.contains_key(&name) {
                return Err(CliError::usage(format!(
                    "error: health plugin '{}' starts health plugin '{name}', which was not loaded: write its options as --option VALUE or --option=VALUE",
                    p.lib.meta.name
                )));
            }
        }
    }
    Ok(())
}

/// Main options a plugin may declare too (by the same long name): the host adds them once,
/// and the plugin gets the host's value. The `--etcd-*` options are shared by cluster mode
/// and the etcd watcher, so that one set of TLS and login options serves both.
pub(super) fn shared_host_option(long: &str) -> bool {
    vpcrouter_etcd_conn::is_shared(long)
}

/// Adds a plugin's options under a heading of its own.
pub(super) fn add_plugin_args(mut cmd: Command, lib: &PluginLibrary) -> Result<Command, CliError> {
    let heading = format!("Options of {} plugin '{}'", lib.meta.kind.as_str(), lib.meta.name);
    for spec in &lib.args {
        let long = spec.long.to_string();
        if shared_host_option(&long) && !spec.flag {
            // The host's option: added once, its value handed to the plugin.
            continue;
        }
        if cmd.get_arguments().any(|a| a.get_long() == Some(long.as_str()) || a.get_id() == long.as_str()) {
            return Err(CliError {
                message: format!(
                    "error: plugin '{}' ({}) declares option --{long}, which is already taken",
                    lib.meta.name,
                    lib.path.display()
                ),
                status: 1,
            });
        }
        cmd = cmd.arg(plugin_arg(spec, &long).help_heading(heading.clone()));
    }
    Ok(cmd)
}

fn plugin_arg(spec: &ArgSpec, long: &str) -> Arg {
    let mut arg = Arg::new(long.to_string()).long(long.to_string()).help(spec.help.to_string());
    if let Some(c) = spec.short.as_ref().into_option().and_then(|s| s.chars().next()) {
        arg = arg.short(c);
    }
    if spec.flag {
        return arg.action(ArgAction::SetTrue);
    }
    arg = arg.value_name(spec.value_name.to_string()).required(spec.required && spec.default.is_rnone());
    if let Some(d) = spec.default.as_ref().into_option() {
        arg = arg.default_value(d.to_string());
    }
    arg
}

fn plugin_values(lib: &PluginLibrary, m: &ArgMatches) -> PluginArgs {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for spec in &lib.args {
        let id = spec.long.as_str();
        if spec.flag {
            if m.get_flag(id) {
                pairs.push((id.to_string(), "true".to_string()));
            }
        } else if let Some(v) = m.get_one::<String>(id) {
            pairs.push((id.to_string(), v.clone()));
        }
    }
    PluginArgs::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// Refuses `--etcd-*` options that nothing would use: no `--cluster-etcd`, and no loaded
/// plugin declares them (a typo such as `-m etcdd` would otherwise drop TLS silently).
fn check_etcd_options_used(m: &ArgMatches, plugins: &PluginSet) -> Result<(), CliError> {
    let Some(given) = vpcrouter_etcd_conn::OPTIONS.iter().find(|o| m.get_one::<String>(o.long).is_some()) else {
        return Ok(());
    };
    let used = m.get_one::<String>("cluster_etcd").is_some()
        || plugins.all().any(|p| p.lib.args.iter().any(|a| vpcrouter_etcd_conn::is_shared(a.long.as_str())));
    if used {
        return Ok(());
    }
    Err(CliError::usage(format!(
        "error: --{} is given, but neither --cluster-etcd nor the plugins loaded (e.g. -m etcd) connect to etcd",
        given.long
    )))
}
