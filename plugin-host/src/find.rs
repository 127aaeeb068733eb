//! Where plugin libraries are: the search path, and the file name of each plugin.
//!
//! `-m NAME` loads `libvpcrouter_NAME.so`, `-H NAME` loads `libvpcrouter_health_NAME.so`,
//! `--notify NAME` loads `libvpcrouter_notify_NAME.so`.
//! Directories are searched in order: every `--plugin-dir`, then `$VPCROUTER_PLUGIN_DIR`
//! (colon-separated), then `../lib/vpcrouter` next to the binary, then `/usr/lib/vpcrouter`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vpcrouter_plugin_api::PluginKind;

/// Ordered directories to search for plugins.
#[derive(Clone, Debug)]
pub struct SearchPath {
    /// Directories, first match wins.
    pub dirs: Vec<PathBuf>,
    /// Load files that group/others can write.
    pub allow_insecure: bool,
}

impl SearchPath {
    /// The standard search path after the given `--plugin-dir`s.
    pub fn new(plugin_dirs: &[PathBuf], allow_insecure: bool) -> SearchPath {
        let mut dirs: Vec<PathBuf> = plugin_dirs.to_vec();
        if let Ok(env) = std::env::var("VPCROUTER_PLUGIN_DIR") {
            dirs.extend(env.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
        }
        if let Some(bin_dir) = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)) {
            dirs.push(bin_dir.join("../lib/vpcrouter"));
        }
        dirs.push(PathBuf::from("/usr/lib/vpcrouter"));
        SearchPath { dirs, allow_insecure }
    }

    /// The directories, for messages: `a, b, c`.
    pub(crate) fn describe(&self) -> String {
        self.dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
    }
}

/// The library file name of a plugin.
pub fn file_name(kind: PluginKind, name: &str) -> String {
    format!("libvpcrouter_{}{name}.so", kind.file_prefix())
}

/// Every plugin kind, in the order `--list-plugins` shows them.
pub const KINDS: [PluginKind; 3] = [PluginKind::Watcher, PluginKind::Health, PluginKind::Notifier];

/// The plugin name and kind a library file name stands for.
fn parse_file_name(file: &str) -> Option<(PluginKind, String)> {
    let stem = file.strip_prefix("libvpcrouter_")?.strip_suffix(".so")?;
    let (kind, name) = [PluginKind::Health, PluginKind::Notifier]
        .into_iter()
        .find_map(|k| stem.strip_prefix(k.file_prefix()).map(|name| (k, name)))
        .unwrap_or((PluginKind::Watcher, stem));
    valid_name(name).then(|| (kind, name.to_string()))
}

/// A plugin name: `[a-z0-9_]+`, so that it cannot name a path.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Every plugin file in the search path: `(kind, name, path)`, first occurrence of each.
pub fn available(search: &SearchPath) -> Vec<(PluginKind, String, PathBuf)> {
    let mut found: BTreeMap<(u8, String), PathBuf> = BTreeMap::new();
    for dir in &search.dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for entry in entries.flatten() {
            let file = entry.file_name();
            if let Some((kind, name)) = file.to_str().and_then(parse_file_name) {
                found.entry((kind as u8, name)).or_insert_with(|| entry.path());
            }
        }
    }
    found
        .into_iter()
        .filter_map(|((k, name), path)| KINDS.into_iter().find(|kind| *kind as u8 == k).map(|kind| (kind, name, path)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(file_name(PluginKind::Watcher, "configfile"), "libvpcrouter_configfile.so");
        assert_eq!(file_name(PluginKind::Health, "tcp"), "libvpcrouter_health_tcp.so");
        assert_eq!(parse_file_name("libvpcrouter_health_tcp.so"), Some((PluginKind::Health, "tcp".into())));
        assert_eq!(parse_file_name("libvpcrouter_http.so"), Some((PluginKind::Watcher, "http".into())));
        assert_eq!(file_name(PluginKind::Notifier, "exec"), "libvpcrouter_notify_exec.so");
        assert_eq!(parse_file_name("libvpcrouter_notify_exec.so"), Some((PluginKind::Notifier, "exec".into())));
        assert_eq!(parse_file_name("libvpcrouter_Bad.so"), None);
        assert_eq!(parse_file_name("libother.so"), None);
    }
}
