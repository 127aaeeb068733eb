//! Building plugin crates outside the workspace, as a third party would: the example
//! plugins of `examples/` and the ABI fixtures of `tests/fixtures/`.
//!
//! Every build is one `cargo build --offline` in a copy of the crate in a temp dir, with
//! the target directory `$CARGO_TARGET_DIR-examples` (or `target/examples`) shared by all
//! of them, so `abi_stable` is compiled once. It is not `$CARGO_TARGET_DIR` itself: the
//! `cargo test` running these tests holds that directory's lock.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::repo_root;

/// How long one build may take (a cold build compiles `abi_stable` in about a minute).
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// The target directory shared by these builds.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(format!("{}-examples", t.to_string_lossy())),
        None => repo_root().join("target/examples"),
    }
}

/// Copies the directory tree `from` to `to` (created), skipping `target/`.
pub fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_name() == "target" {
            continue;
        }
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()))?;
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Runs `cmd` to completion within `timeout` (killed after it); fails with `what` and its
/// output unless it exits 0. Returns its stdout.
pub fn run_within(mut cmd: Command, timeout: Duration, what: &str) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()
        .map_err(|e| anyhow::anyhow!("{what}: cannot start {cmd:?}: {e}"))?;
    let end = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("{what}: still running after {timeout:?}, killed\n{}", std::fs::read_to_string(&err_path)?);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (std::fs::read_to_string(&out_path)?, std::fs::read_to_string(&err_path)?);
    anyhow::ensure!(status.success(), "{what} failed ({status}):\n{out}\n{err}");
    Ok(out)
}

/// Builds the crate in `dir` (debug, offline) with one cargo command; returns the
/// directory holding its artifacts (copy them before the next build of that name).
pub fn cargo_build(dir: &Path) -> anyhow::Result<PathBuf> {
    let target = target_dir();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--offline", "-q", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target);
    run_within(cmd, BUILD_TIMEOUT, &format!("cargo build of {}", dir.display()))?;
    Ok(target.join("debug"))
}

/// Copies `examples/<example>` into `scratch` (outside the workspace), points its
/// plugin-api path dependency at this repository's `plugin-api/`, gives it the
/// workspace's `Cargo.lock` (every crate offline), builds it and returns `lib`'s path.
pub fn build_example(scratch: &Path, example: &str, lib: &str) -> anyhow::Result<PathBuf> {
    build_example_against(scratch, example, lib, &repo_root().join("plugin-api"))
}

/// [`build_example`] against the plugin-api crate in `api` (a modified copy).
pub fn build_example_against(scratch: &Path, example: &str, lib: &str, api: &Path) -> anyhow::Result<PathBuf> {
    let root = repo_root().canonicalize()?;
    let dir = scratch.join(example);
    copy_dir(&root.join("examples").join(example), &dir)?;
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml"))?;
    anyhow::ensure!(
        manifest.contains("\"../../plugin-api\""),
        "examples/{example}/Cargo.toml no longer depends on ../../plugin-api"
    );
    let api = api.canonicalize()?;
    std::fs::write(
        dir.join("Cargo.toml"),
        manifest.replace("\"../../plugin-api\"", &format!("{:?}", api.display().to_string())),
    )?;
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock"))?;
    let built = cargo_build(&dir)?.join(lib);
    anyhow::ensure!(built.is_file(), "building examples/{example} made no {}", built.display());
    // The shared target directory keeps one file per name: take this build's copy.
    let so = dir.join(lib);
    std::fs::copy(&built, &so)?;
    Ok(so)
}

/// The value lines of section `[section]` of a TOML text, as (key, whole line).
fn section<'a>(toml: &'a str, section: &str) -> Vec<(&'a str, &'a str)> {
    let header = format!("[{section}]");
    toml.lines()
        .skip_while(|l| l.trim() != header)
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('['))
        .filter_map(|l| l.split_once('=').map(|(k, _)| (k.trim(), l)))
        .collect()
}

/// Rewrites the `KEY.workspace = true` lines of a member's manifest with the values of
/// the workspace manifest `workspace` (its `[workspace.package]` and
/// `[workspace.dependencies]`), so the crate builds outside that workspace.
pub fn concrete_manifest(manifest: &str, workspace: &str) -> anyhow::Result<String> {
    let (package, deps) = (section(workspace, "workspace.package"), section(workspace, "workspace.dependencies"));
    let mut in_package = false;
    let mut out = String::new();
    for line in manifest.lines() {
        if line.trim_start().starts_with('[') {
            in_package = line.trim() == "[package]";
        }
        let line = match line.split_once(".workspace = true") {
            Some((key, rest)) if rest.trim().is_empty() => {
                let from = if in_package { &package } else { &deps };
                let value = from.iter().find(|(k, _)| *k == key.trim()).map(|(_, l)| *l);
                let value = value.ok_or_else(|| anyhow::anyhow!("'{key}' is not in the workspace manifest"))?;
                anyhow::ensure!(!value.contains("path ="), "'{key}' is a path dependency of the workspace");
                value.to_string()
            }
            _ => line.to_string(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

/// A plugin directory only its owner can write (the host refuses others) holding copies
/// of `files` under their own names.
pub fn plugin_dir(files: &[&Path]) -> anyhow::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    for file in files {
        let dst = dir.path().join(file.file_name().unwrap_or_default());
        std::fs::copy(file, &dst)?;
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_lines_become_concrete() {
        let ws = "[workspace]\nmembers = []\n\n[workspace.package]\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace.dependencies]\nserde_json = \"1\"\nlocal = { path = \"x\" }\n";
        let m = "[package]\nname = \"a\"\nversion.workspace = true\nedition.workspace = true\n\n[dependencies]\nserde_json.workspace = true\nother = \"2\"\n";
        let out = concrete_manifest(m, ws).unwrap();
        assert_eq!(out, "[package]\nname = \"a\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nserde_json = \"1\"\nother = \"2\"\n");
        assert!(concrete_manifest("[dependencies]\nlocal.workspace = true\n", ws)
            .unwrap_err()
            .to_string()
            .contains("path dependency"));
        assert!(concrete_manifest("[dependencies]\nnope.workspace = true\n", ws).is_err());
    }
}
