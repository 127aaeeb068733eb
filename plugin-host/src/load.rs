//! Loading plugin libraries: the plugins a command line names (the health plugins a health
//! plugin requires included), and their checks of their options.
//!
//! A library is found on the search path ([`SearchPath`]) and checked (`check`) before it is
//! opened. Each library is opened once with `abi_stable`, which checks the plugin-api version
//! and the layout of the root module; libraries are never unloaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use abi_stable::library::LibraryError;
use vpcrouter_plugin_api::{ArgSpec, PluginArgs, PluginKind, PluginMetadata, PluginModRef, PLUGIN_API_VERSION};

use vpcrouter_plugin_api::sync::lock;

pub use crate::check::MAX_PLUGIN_BYTES;
use crate::check::{check_elf, check_permissions, file_error};
pub use crate::error::{LoadError, PluginError};
use crate::find::valid_name;
pub use crate::find::{available, file_name, SearchPath, KINDS};

/// A loaded, checked plugin library.
#[derive(Clone)]
pub struct PluginLibrary {
    /// Where it was loaded from.
    pub path: PathBuf,
    /// Its root module.
    pub module: PluginModRef,
    /// Its metadata.
    pub meta: PluginMetadata,
    /// Options it declares.
    pub args: Vec<ArgSpec>,
}

impl std::fmt::Debug for PluginLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginLibrary").field("path", &self.path).field("meta", &self.meta).finish()
    }
}

/// Loads libraries once per path (libraries stay loaded for the life of the process).
#[derive(Clone, Default)]
pub struct Loader {
    /// Each library loaded so far, by canonical path: a second load of a path (a health
    /// plugin two others require, `--list-plugins`) gets the same library, unchecked.
    cache: Arc<Mutex<BTreeMap<PathBuf, PluginLibrary>>>,
}

impl Loader {
    /// Finds and loads plugin `name` of `kind`.
    pub fn load(&self, search: &SearchPath, kind: PluginKind, name: &str) -> Result<PluginLibrary, LoadError> {
        if !valid_name(name) {
            return Err(LoadError::BadName(name.to_string()));
        }
        let file = file_name(kind, name);
        // Anything of that name counts as found (a FIFO or a directory too, refused by
        // `load_path` with what it is); a dangling symlink does not.
        let Some(path) = search.dirs.iter().map(|d| d.join(&file)).find(|p| p.metadata().is_ok()) else {
            let available: Vec<String> =
                available(search).into_iter().filter(|(k, _, _)| *k == kind).map(|(_, n, _)| n).collect();
            return Err(LoadError::NotFound {
                kind: kind.as_str(),
                name: name.to_string(),
                file,
                searched: search.describe(),
                available: if available.is_empty() { "none".into() } else { available.join(", ") },
            });
        };
        let lib = self.load_path(&path, search.allow_insecure)?;
        if lib.meta.name.as_str() != name || lib.meta.kind != kind {
            return Err(LoadError::Mismatch {
                path,
                found: lib.meta.name.to_string(),
                found_kind: lib.meta.kind.as_str(),
                name: name.to_string(),
                kind: kind.as_str(),
            });
        }
        Ok(lib)
    }

    /// Loads the library at `path` after the checks: a regular file, the permission check,
    /// a complete shared library for this machine.
    pub fn load_path(&self, path: &Path, allow_insecure: bool) -> Result<PluginLibrary, LoadError> {
        let path =
            path.canonicalize().map_err(|e| LoadError::NotAPlugin { path: path.into(), reason: e.to_string() })?;
        if let Some(lib) = lock(&self.cache).get(&path) {
            return Ok(lib.clone());
        }
        // A FIFO or a device is refused first, for what it is (and before anything waits on it);
        // the permissions are checked before a byte is read.
        let refused = |e| file_error(&path, e);
        vpcrouter_plugin_api::file::check_file(&path, MAX_PLUGIN_BYTES).map_err(refused)?;
        if !allow_insecure {
            check_permissions(&path)?;
        }
        let data = vpcrouter_plugin_api::file::read_file(&path, MAX_PLUGIN_BYTES).map_err(refused)?;
        check_elf(&data).map_err(|reason| LoadError::NotAPlugin { path: path.clone(), reason })?;
        let module = vpcrouter_plugin_api::load::open(&path).map_err(|e| library_error(&path, e))?;
        let meta = (module.metadata())();
        let args = (module.arguments())().into_vec();
        let lib = PluginLibrary { path: path.clone(), module, meta, args };
        lock(&self.cache).insert(path, lib.clone());
        Ok(lib)
    }
}

/// What the dynamic loader or `abi_stable` refused in the library at `path`, as a
/// [`LoadError`] that says what to do.
fn library_error(path: &Path, err: LibraryError) -> LoadError {
    let path = path.to_path_buf();
    match err {
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => {
            LoadError::Incompatible { path, host: PLUGIN_API_VERSION.to_string(), plugin: actual_version.to_string() }
        }
        LibraryError::OpenError { err, .. } => {
            LoadError::NotAPlugin { path, reason: format!("cannot be opened as a shared library ({err})") }
        }
        LibraryError::GetSymbolError { .. } => LoadError::NotAPlugin {
            path,
            reason: "it exports no vpcrouter plugin module (not built with export_plugin!)".into(),
        },
        LibraryError::AbiInstability(e) => LoadError::NotAPlugin {
            path,
            reason: format!(
                "its plugin interface does not match this host's (plugin-api {PLUGIN_API_VERSION}); rebuild it: {}",
                first_line(&e.to_string())
            ),
        },
        other => LoadError::NotAPlugin { path, reason: first_line(&other.to_string()) },
    }
}

/// The first non-blank line of a multi-line error, trimmed: messages are one line.
fn first_line(s: &str) -> String {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string()
}

/// The text of `--list-plugins`; `builtin_notifiers` are the host's own notifiers (name and
/// description), listed with the notifier plugins.
pub fn list_text(loader: &Loader, search: &SearchPath, builtin_notifiers: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for kind in KINDS {
        out.push_str(match kind {
            PluginKind::Watcher => "Watcher plugins (-m NAME):\n",
            PluginKind::Health => "Health plugins (-H NAME):\n",
            PluginKind::Notifier => "Notifier plugins (--notify NAME):\n",
        });
        let mut any = false;
        if kind == PluginKind::Notifier {
            for (name, description) in builtin_notifiers {
                any = true;
                out.push_str(&format!("  {name:<12} {:<8} {description} [built in]\n", "-"));
            }
        }
        for (_, name, path) in available(search).into_iter().filter(|(k, _, _)| *k == kind) {
            any = true;
            out.push_str(&list_line(loader, search, kind, &name, &path));
        }
        if !any {
            out.push_str("  (none found)\n");
        }
    }
    out.push_str(&format!("Searched: {}\n", search.describe()));
    out
}

/// One plugin's line of `--list-plugins`.
fn list_line(loader: &Loader, search: &SearchPath, kind: PluginKind, name: &str, path: &Path) -> String {
    match loader.load(search, kind, name) {
        Ok(lib) => format!(
            "  {:<12} {:<8} {} [plugin-api {}, {}]\n",
            name,
            lib.meta.version,
            lib.meta.description,
            lib.meta.api_version,
            lib.path.display()
        ),
        Err(e) => format!("  {:<12} UNUSABLE {} ({e})\n", name, path.display()),
    }
}

/// Loads health plugin `name` and, recursively, the health plugins it requires for this
/// command line (`argv`); those go into `subs`, by name. On an error, `subs` keeps the
/// plugins loaded until then (`--help` shows their options).
pub fn load_health_tree(
    loader: &Loader,
    search: &SearchPath,
    argv: &[String],
    name: &str,
    subs: &mut BTreeMap<String, PluginLibrary>,
) -> Result<PluginLibrary, PluginError> {
    load_health_chain(loader, search, argv, name, &mut Vec::new(), subs)
}

/// [`load_health_tree`] below the plugins in `chain`.
fn load_health_chain(
    loader: &Loader,
    search: &SearchPath,
    argv: &[String],
    name: &str,
    chain: &mut Vec<String>,
    out: &mut BTreeMap<String, PluginLibrary>,
) -> Result<PluginLibrary, PluginError> {
    if chain.iter().any(|n| n == name) {
        chain.push(name.to_string());
        return Err(PluginError::Loop { chain: chain.join(" -> ") });
    }
    let lib = loader.load(search, PluginKind::Health, name)?;
    let required = required_plugins(&lib, &PluginArgs::from_argv(&lib.args, argv), argv)?;
    chain.push(name.to_string());
    for sub in &required {
        if !out.contains_key(sub.as_str()) {
            let sub_lib = load_health_chain(loader, search, argv, sub, chain, out)?;
            out.insert(sub.to_string(), sub_lib);
        }
    }
    chain.pop();
    Ok(lib)
}

/// The health plugins `lib` starts, for the values of its own options: `args`, which the host
/// read for it. A plugin built before `required_plugins_for` is asked with the raw `argv`.
pub fn required_plugins(lib: &PluginLibrary, args: &PluginArgs, argv: &[String]) -> Result<Vec<String>, PluginError> {
    let answer = match lib.module.required_plugins_for() {
        Some(required_for) => required_for(args),
        None => {
            let argv: Vec<abi_stable::std_types::RString> = argv.iter().map(|s| s.as_str().into()).collect();
            (lib.module.required_plugins())(argv.as_slice().into())
        }
    };
    let names = answer
        .into_result()
        .map_err(|e| PluginError::Required { name: lib.meta.name.to_string(), reason: e.to_string() })?;
    Ok(names.iter().map(|n| n.to_string()).collect())
}

/// Asks a loaded plugin whether the values of its options are good.
pub fn validate_config(lib: &PluginLibrary, args: &PluginArgs) -> Result<(), PluginError> {
    (lib.module.validate_config())(args).into_result().map_err(|e| PluginError::Config {
        kind: lib.meta.kind.as_str(),
        name: lib.meta.name.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn names_cannot_traverse_paths() {
        let search = SearchPath { dirs: vec![], allow_insecure: false };
        for bad in ["../x", "a/b", "", "A", "x.so", "a-b"] {
            let err = Loader::default().load(&search, PluginKind::Watcher, bad).unwrap_err();
            assert!(matches!(err, LoadError::BadName(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn missing_plugin_lists_what_exists() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("libvpcrouter_health_file.so"), b"").unwrap();
        let search = SearchPath { dirs: vec![dir.path().into()], allow_insecure: false };
        let err = Loader::default().load(&search, PluginKind::Health, "nope").unwrap_err().to_string();
        assert!(err.contains("no health plugin 'nope'") && err.contains("available health plugins: file"), "{err}");
    }

    #[test]
    fn fifos_devices_and_directories_are_found_and_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("libvpcrouter_fifo.so");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("libvpcrouter_zero.so")).unwrap();
        std::fs::create_dir(dir.path().join("libvpcrouter_dir.so")).unwrap();
        let search = SearchPath { dirs: vec![dir.path().into()], allow_insecure: false };
        let started = std::time::Instant::now();
        for (name, kind) in [("fifo", "a FIFO"), ("zero", "a character device"), ("dir", "a directory")] {
            let err = Loader::default().load(&search, PluginKind::Watcher, name).unwrap_err();
            assert!(matches!(err, LoadError::NotRegular { .. }) && !err.is_usage(), "{name}: {err}");
            let text = err.to_string();
            assert!(text.contains(&format!("exists but is {kind}")) && text.contains("not a regular file"), "{text}");
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn unknown_and_invalid_names_are_usage_errors() {
        let search = SearchPath { dirs: vec![], allow_insecure: false };
        for name in ["nosuch", "Bad"] {
            let err = PluginError::from(Loader::default().load(&search, PluginKind::Watcher, name).unwrap_err());
            assert!(err.is_usage(), "{err}");
        }
        let err = LoadError::NotAPlugin { path: "/x".into(), reason: "truncated".into() };
        assert!(!PluginError::from(err).is_usage());
    }

    #[test]
    fn writable_files_and_garbage_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("libvpcrouter_junk.so");
        std::fs::write(&path, b"not an ELF file").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let search = SearchPath { dirs: vec![dir.path().into()], allow_insecure: false };
        let err = Loader::default().load(&search, PluginKind::Watcher, "junk").unwrap_err();
        assert!(matches!(err, LoadError::Insecure { .. }), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Loader::default().load(&search, PluginKind::Watcher, "junk").unwrap_err();
        assert!(matches!(err, LoadError::NotAPlugin { .. }), "{err}");
        assert!(err.to_string().contains("not a shared library for this machine"), "{err}");
    }
}
