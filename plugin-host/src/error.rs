//! Why a plugin cannot be used: [`LoadError`] for one library, [`PluginError`] for the
//! plugins a command line names. Each message names the plugin or file and what to do.

use std::path::PathBuf;

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
