//! Finding, loading and checking plugin libraries: the plugins a command line names (the
//! health plugins a health plugin requires included), and their checks of their options.
//!
//! `-m NAME` loads `libvpcrouter_NAME.so`, `-H NAME` loads `libvpcrouter_health_NAME.so`.
//! Directories are searched in order: every `--plugin-dir`, then `$VPCROUTER_PLUGIN_DIR`
//! (colon-separated), then `../lib/vpcrouter` next to the binary, then `/usr/lib/vpcrouter`.
//! Each library is opened once with `abi_stable`, which checks the plugin-api version and
//! the layout of the root module; libraries are never unloaded.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use abi_stable::library::LibraryError;
use vpcrouter_plugin_api::{ArgSpec, PluginArgs, PluginKind, PluginMetadata, PluginModRef, PLUGIN_API_VERSION};

use crate::sync::lock;

/// Why a plugin could not be used. Each message names the plugin or file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The name is not `[a-z0-9_]+`.
    #[error("'{0}' is not a valid plugin name: use lower-case letters, digits and '_' only")]
    BadName(String),
    /// No file of that name in any search directory.
    #[error("no {kind} plugin '{name}' ({file}) in {searched}; available {kind} plugins: {available}")]
    NotFound {
        /// Watcher or health.
        kind: &'static str,
        /// Requested name.
        name: String,
        /// File name looked for.
        file: String,
        /// The directories searched.
        searched: String,
        /// Names found instead.
        available: String,
    },
    /// The file or its directory can be written by others.
    #[error("refusing to load '{path}': {what} is writable by group or others (mode {mode:o}); fix with 'chmod go-w {target}' or pass --allow-insecure-plugins")]
    Insecure {
        /// The plugin file.
        path: PathBuf,
        /// "the file" or "its directory".
        what: &'static str,
        /// The offending path.
        target: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file or its directory belongs to another user than root or the one vpcrouter
    /// runs as (as ssh's StrictModes refuses): that user could replace the code.
    #[error("refusing to load '{path}': {what} is owned by uid {owner}, not by root or the user vpcrouter runs as (uid {me}); fix with 'chown root {target}' or pass --allow-insecure-plugins")]
    NotOwned {
        /// The plugin file.
        path: PathBuf,
        /// "the file" or "its directory".
        what: &'static str,
        /// The offending path.
        target: PathBuf,
        /// Its owner.
        owner: u32,
        /// The effective uid of this process.
        me: u32,
    },
    /// A directory above the plugin's own can be written by group or others and has no
    /// sticky bit: whoever can write it can rename the plugin's directory and put another
    /// in its place.
    #[error("refusing to load '{path}': the directory {target} above it is writable by group or others without the sticky bit (mode {mode:o}); fix with 'chmod go-w {target}' or pass --allow-insecure-plugins")]
    InsecureAncestor {
        /// The plugin file.
        path: PathBuf,
        /// The offending directory.
        target: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The plugin's path names a FIFO, a device, a directory or a socket: nothing to load
    /// (and opening a FIFO for dlopen would block).
    #[error("plugin file '{path}' exists but is {kind}, not a regular file; replace it with the plugin's library (.so) or remove it")]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead ("a FIFO (named pipe)", "a directory", ...).
        kind: &'static str,
    },
    /// The file could not be opened or is not a vpcrouter plugin.
    #[error("'{path}' is not a usable vpcrouter plugin: {reason}")]
    NotAPlugin {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Built against another plugin-api.
    #[error("'{path}' was built against an incompatible plugin-api (host = {host}, plugin = {plugin}); rebuild the plugin against plugin-api {host}")]
    Incompatible {
        /// The file.
        path: PathBuf,
        /// The host's plugin-api version.
        host: String,
        /// The plugin's plugin-api version.
        plugin: String,
    },
    /// The file is a plugin of another name or kind.
    #[error(
        "'{path}' contains {found_kind} plugin '{found}', expected {kind} plugin '{name}'; rename or remove the file"
    )]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// What the file claims.
        found: String,
        /// Its kind.
        found_kind: &'static str,
        /// What was requested.
        name: String,
        /// Requested kind.
        kind: &'static str,
    },
}

impl LoadError {
    /// True when the command line is at fault: the plugin name is not valid or names no
    /// plugin file (exit status 2, as for other bad option values). A file that exists but
    /// cannot be used is an installation problem (exit status 1).
    pub fn is_usage(&self) -> bool {
        matches!(self, LoadError::BadName(_) | LoadError::NotFound { .. })
    }
}

/// The largest plugin library read (for the ELF check before the dynamic loader maps it):
/// a debug build of the largest bundled plugin is about 35 MB, a release build a few MB.
pub const MAX_PLUGIN_BYTES: u64 = 256 << 20;

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

    fn describe(&self) -> String {
        self.dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
    }
}

/// The library file name of a plugin.
pub fn file_name(kind: PluginKind, name: &str) -> String {
    match kind {
        PluginKind::Watcher => format!("libvpcrouter_{name}.so"),
        PluginKind::Health => format!("libvpcrouter_health_{name}.so"),
    }
}

/// The plugin name and kind a library file name stands for.
fn parse_file_name(file: &str) -> Option<(PluginKind, String)> {
    let stem = file.strip_prefix("libvpcrouter_")?.strip_suffix(".so")?;
    let (kind, name) = match stem.strip_prefix("health_") {
        Some(name) => (PluginKind::Health, name),
        None => (PluginKind::Watcher, stem),
    };
    valid_name(name).then(|| (kind, name.to_string()))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

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

/// A [`vpcrouter_plugin_api::file`] error about the plugin file at `path`.
fn file_error(path: &Path, e: vpcrouter_plugin_api::file::FileError) -> LoadError {
    use vpcrouter_plugin_api::file::FileError;
    match e {
        FileError::NotRegular { kind, .. } => LoadError::NotRegular { path: path.into(), kind },
        FileError::TooLarge { limit, .. } => LoadError::NotAPlugin {
            path: path.into(),
            reason: format!("it is larger than {} MiB, more than any plugin library", limit >> 20),
        },
        FileError::Io { source, .. } => LoadError::NotAPlugin { path: path.into(), reason: source.to_string() },
        other => LoadError::NotAPlugin { path: path.into(), reason: other.to_string() },
    }
}

/// The checks `--allow-insecure-plugins` skips, on the (canonical) file, its directory and
/// every directory above: nobody could replace the code the host loads.
fn check_permissions(path: &Path) -> Result<(), LoadError> {
    check_ownership(path, rustix::process::geteuid().as_raw())
}

/// The file and its directory: nobody but the owner may write them, and the owner is root or
/// the user vpcrouter runs as (as ssh's StrictModes). The directories above: the same owners,
/// and nobody else may write them unless they have the sticky bit (`/tmp`), which keeps
/// others from renaming what they hold.
fn check_ownership(path: &Path, me: u32) -> Result<(), LoadError> {
    use std::os::unix::fs::MetadataExt;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let checked = [("the file", path), ("its directory", dir)].into_iter();
    let above = dir.ancestors().skip(1).map(|a| ("a directory above it", a));
    for (what, target) in checked.chain(above) {
        let meta = std::fs::metadata(target)
            .map_err(|e| LoadError::NotAPlugin { path: path.into(), reason: e.to_string() })?;
        let mode = meta.permissions().mode() & 0o7777;
        let sticky = mode & 0o1000 != 0;
        if mode & 0o022 != 0 {
            if target == path || target == dir {
                return Err(LoadError::Insecure { path: path.into(), what, target: target.into(), mode });
            }
            if !sticky {
                return Err(LoadError::InsecureAncestor { path: path.into(), target: target.into(), mode });
            }
        }
        let owner = meta.uid();
        if owner != 0 && owner != me {
            return Err(LoadError::NotOwned { path: path.into(), what, target: target.into(), owner, me });
        }
    }
    Ok(())
}

/// ELF machine number of the running program.
#[cfg(target_arch = "x86_64")]
const ELF_MACHINE: u16 = 62;
/// ELF machine number of the running program.
#[cfg(target_arch = "aarch64")]
const ELF_MACHINE: u16 = 183;

/// Checks that `data` (a library file's content) is a complete 64-bit little-endian shared
/// object for this machine before the dynamic loader sees it: the loader maps segments by the offsets the file
/// claims, and a truncated library makes it crash the process (SIGBUS) instead of failing.
fn check_elf(data: &[u8]) -> Result<(), String> {
    let len = data.len() as u64;
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: u64| {
        let o = usize::try_from(o).ok()?;
        data.get(o..o + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
    };
    let bad = |what: &str| Err(format!("it is not a shared library for this machine ({what})"));
    if data.len() < 64 || &data[..4] != b"\x7fELF" {
        return bad("no ELF header");
    }
    if data[4] != 2 || data[5] != 1 || u16_at(16) != Some(3) || u16_at(18) != Some(ELF_MACHINE) {
        return bad("wrong class, byte order, type or architecture");
    }
    let truncated = || Err("it is truncated (its headers point past the end of the file)".to_string());
    let (Some(phoff), Some(shoff)) = (u64_at(0x20), u64_at(0x28)) else { return truncated() };
    let (Some(phentsize), Some(phnum), Some(shentsize), Some(shnum)) =
        (u16_at(0x36), u16_at(0x38), u16_at(0x3a), u16_at(0x3c))
    else {
        return truncated();
    };
    let table_end = |off: u64, size: u16, n: u16| off.checked_add(u64::from(size) * u64::from(n));
    if table_end(phoff, phentsize, phnum).is_none_or(|e| e > len)
        || table_end(shoff, shentsize, shnum).is_none_or(|e| e > len)
    {
        return truncated();
    }
    for i in 0..u64::from(phnum) {
        let entry = phoff + i * u64::from(phentsize);
        let (Some(offset), Some(filesz)) = (u64_at(entry + 8), u64_at(entry + 32)) else { return truncated() };
        if offset.checked_add(filesz).is_none_or(|e| e > len) {
            return truncated();
        }
    }
    Ok(())
}

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

fn first_line(s: &str) -> String {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string()
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
        .map(|((k, name), path)| {
            (if k == PluginKind::Watcher as u8 { PluginKind::Watcher } else { PluginKind::Health }, name, path)
        })
        .collect()
}

/// The text of `--list-plugins`.
pub fn list_text(loader: &Loader, search: &SearchPath) -> String {
    let mut out = String::new();
    for kind in [PluginKind::Watcher, PluginKind::Health] {
        out.push_str(match kind {
            PluginKind::Watcher => "Watcher plugins (-m NAME):\n",
            PluginKind::Health => "Health plugins (-H NAME):\n",
        });
        let mut any = false;
        for (_, name, path) in available(search).into_iter().filter(|(k, _, _)| *k == kind) {
            any = true;
            match loader.load(search, kind, &name) {
                Ok(lib) => out.push_str(&format!(
                    "  {:<12} {:<8} {} [plugin-api {}, {}]\n",
                    name,
                    lib.meta.version,
                    lib.meta.description,
                    lib.meta.api_version,
                    lib.path.display()
                )),
                Err(e) => out.push_str(&format!("  {:<12} UNUSABLE {} ({e})\n", name, path.display())),
            }
        }
        if !any {
            out.push_str("  (none found)\n");
        }
    }
    out.push_str(&format!("Searched: {}\n", search.describe()));
    out
}

/// Why the plugins a command line names cannot be used: a library that does not load, or
/// a plugin that refuses the command line or its options.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// A library could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Health plugins require each other in a loop.
    #[error("health plugins load each other in a loop: {chain}")]
    Loop {
        /// The names, from the first health plugin to the repeated one, ` -> `-joined.
        chain: String,
    },
    /// A health plugin refused the command line when asked which plugins it requires.
    #[error("health plugin '{name}': {reason}")]
    Required {
        /// The health plugin.
        name: String,
        /// What it said.
        reason: String,
    },
    /// A plugin refused the values of its options.
    #[error("{kind} plugin '{name}': {reason}")]
    Config {
        /// Watcher or health.
        kind: &'static str,
        /// The plugin.
        name: String,
        /// What it said.
        reason: String,
    },
}

impl PluginError {
    /// True when the command line is at fault (a plugin name that is not valid or names no
    /// plugin, or a plugin refused the command line or its options), false when a plugin
    /// cannot be loaded.
    pub fn is_usage(&self) -> bool {
        match self {
            PluginError::Load(e) => e.is_usage(),
            PluginError::Required { .. } | PluginError::Config { .. } => true,
            PluginError::Loop { .. } => false,
        }
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
    let argv_r: Vec<abi_stable::std_types::RString> = argv.iter().map(|s| s.as_str().into()).collect();
    let required = (lib.module.required_plugins())(argv_r.as_slice().into())
        .into_result()
        .map_err(|e| PluginError::Required { name: name.to_string(), reason: e.to_string() })?;
    chain.push(name.to_string());
    for sub in required.iter() {
        if !out.contains_key(sub.as_str()) {
            let sub_lib = load_health_chain(loader, search, argv, sub, chain, out)?;
            out.insert(sub.to_string(), sub_lib);
        }
    }
    chain.pop();
    Ok(lib)
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
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(file_name(PluginKind::Watcher, "configfile"), "libvpcrouter_configfile.so");
        assert_eq!(file_name(PluginKind::Health, "tcp"), "libvpcrouter_health_tcp.so");
        assert_eq!(parse_file_name("libvpcrouter_health_tcp.so"), Some((PluginKind::Health, "tcp".into())));
        assert_eq!(parse_file_name("libvpcrouter_http.so"), Some((PluginKind::Watcher, "http".into())));
        assert_eq!(parse_file_name("libvpcrouter_Bad.so"), None);
        assert_eq!(parse_file_name("libother.so"), None);
    }

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
    fn truncated_libraries_are_refused_before_dlopen() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        // The test binary is an executable (PIE: type 3 like a library), so only the
        // length checks can fail here.
        let err = check_elf(&exe[..4096]).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        assert_eq!(check_elf(&exe), Ok(()));
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
    fn a_world_writable_directory_above_without_the_sticky_bit_is_refused() {
        let top = tempfile::tempdir().unwrap();
        let ww = top.path().join("ww");
        let plugins = ww.join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        let path = plugins.join("libvpcrouter_junk.so");
        std::fs::write(&path, b"not an ELF file").unwrap();
        std::fs::set_permissions(&ww, std::fs::Permissions::from_mode(0o777)).unwrap();
        let me = rustix::process::geteuid().as_raw();
        let err = check_ownership(&path, me).unwrap_err();
        assert!(matches!(&err, LoadError::InsecureAncestor { target, mode: 0o777, .. } if *target == ww), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "refusing to load '{p}': the directory {w} above it is writable by group or others without the \
                 sticky bit (mode 777); fix with 'chmod go-w {w}' or pass --allow-insecure-plugins",
                p = path.display(),
                w = ww.display()
            )
        );
        // Through the loader, before the file is read; not with --allow-insecure-plugins.
        let search = SearchPath { dirs: vec![plugins.clone()], allow_insecure: false };
        let err = Loader::default().load(&search, PluginKind::Watcher, "junk").unwrap_err();
        assert!(matches!(err, LoadError::InsecureAncestor { .. }), "{err}");
        let search = SearchPath { dirs: vec![plugins.clone()], allow_insecure: true };
        let err = Loader::default().load(&search, PluginKind::Watcher, "junk").unwrap_err();
        assert!(matches!(err, LoadError::NotAPlugin { .. }), "{err}");
        // With the sticky bit (as /tmp), others cannot rename what it holds: accepted.
        std::fs::set_permissions(&ww, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(check_ownership(&path, me).is_ok());
        // The plugin's own directory may not be writable by others, sticky or not.
        std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let err = check_ownership(&path, me).unwrap_err();
        assert!(matches!(err, LoadError::Insecure { what: "its directory", .. }), "{err}");
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

    /// Changes the owner of `path` (the tests run as root; elsewhere they skip the chown cases).
    fn chown(path: &Path, uid: u32) -> bool {
        std::os::unix::fs::chown(path, Some(uid), None).is_ok()
    }

    #[test]
    fn files_and_directories_of_other_users_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("libvpcrouter_junk.so");
        std::fs::write(&path, b"not an ELF file").unwrap();
        let me = rustix::process::geteuid().as_raw();
        // Owned by this user (or root): passes the check.
        assert!(check_ownership(&path, me).is_ok());
        if !chown(&path, 65534) {
            eprintln!("not root: the ownership cases are skipped");
            return;
        }
        let err = check_ownership(&path, me).unwrap_err();
        assert!(matches!(err, LoadError::NotOwned { what: "the file", owner: 65534, .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "refusing to load '{p}': the file is owned by uid 65534, not by root or the user vpcrouter runs as \
                 (uid {me}); fix with 'chown root {p}' or pass --allow-insecure-plugins",
                p = path.display()
            )
        );
        // The user vpcrouter runs as may own it.
        assert!(check_ownership(&path, 65534).is_ok());
        assert!(chown(&path, 0));
        assert!(chown(dir.path(), 4242));
        let err = check_ownership(&path, me).unwrap_err();
        assert!(matches!(err, LoadError::NotOwned { what: "its directory", owner: 4242, .. }), "{err}");
        // Through the loader: refused before the file is read, unless insecure plugins are allowed.
        let search = SearchPath { dirs: vec![dir.path().into()], allow_insecure: false };
        let err = Loader::default().load(&search, PluginKind::Watcher, "junk").unwrap_err();
        assert!(matches!(err, LoadError::NotOwned { .. }), "{err}");
        let search = SearchPath { dirs: vec![dir.path().into()], allow_insecure: true };
        let err = Loader::default().load(&search, PluginKind::Watcher, "junk").unwrap_err();
        assert!(matches!(err, LoadError::NotAPlugin { .. }), "{err}");
        assert!(chown(dir.path(), me));
        // A directory above, owned by another user: refused, and named.
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let inner = sub.join("libvpcrouter_junk.so");
        std::fs::write(&inner, b"x").unwrap();
        assert!(chown(dir.path(), 4242));
        let err = check_ownership(&inner, me).unwrap_err();
        assert!(
            matches!(&err, LoadError::NotOwned { what: "a directory above it", owner: 4242, target, .. } if target == dir.path()),
            "{err}"
        );
        assert!(chown(dir.path(), me));
    }
}
