//! Plugins and hosts of different plugin-api releases load each other or refuse, as PLUGINS.md's ABI rules say.
//!
//! Proven with real builds (PLUGINS.md, "Evolving the ABI"):
//! * a plugin built against an earlier 0.x minor of plugin-api (0.1.0, from git history)
//!   is refused by this host, with both versions in the error;
//! * a field appended to `PluginMod` after its last prefix field in a later release (the
//!   next patch release, [`NEXT_RELEASE`]): a plugin of this release, which lacks the field,
//!   still loads and runs in a host of the later release, which reads the field as `None`; a
//!   plugin of the later release loads and runs there with the field, and in this host,
//!   which does not know it. Both hosts open plugins with `plugin_api::load::open`.
//!
//! Each test builds crates outside the workspace (tests/fixtures/, the examples) with
//! `cargo build --offline`, bounded by `thirdparty::BUILD_TIMEOUT`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vpcrouter_plugin_api::PLUGIN_API_VERSION;
use vpcrouter_tests::daemon::run_once;
use vpcrouter_tests::thirdparty::{
    build_example, build_example_against, cargo_build, concrete_manifest, copy_dir, plugin_dir, run_within,
};
use vpcrouter_tests::{repo_root, world};

/// The release after this one (`PLUGIN_API_VERSION`), as the test makes it: the next patch.
const NEXT_RELEASE: &str = "0.3.1";

/// The commit whose plugin-api is the 0.1.0 release.
const API_0_1_COMMIT: &str = "8edda1e";

/// Writes `git archive COMMIT PATHS` of this repository, unpacked, into `into`.
fn git_archive(commit: &str, paths: &[&str], into: &Path) -> anyhow::Result<()> {
    let root = repo_root();
    let found =
        Command::new("git").arg("-C").arg(&root).args(["cat-file", "-e", &format!("{commit}^{{commit}}")]).status();
    match found {
        Err(e) => anyhow::bail!("this test needs git to extract plugin-api 0.1 from commit {commit}: {e}"),
        Ok(s) if !s.success() => anyhow::bail!(
            "commit {commit} (plugin-api 0.1.0) is not in {}: this test needs the repository's full history (not a shallow clone)",
            root.display()
        ),
        Ok(_) => {}
    }
    let archive = into.join("archive.tar");
    let mut git = Command::new("git");
    git.arg("-C").arg(&root).args(["archive", "-o"]).arg(&archive).arg(commit).args(paths);
    run_within(git, Duration::from_secs(60), &format!("git archive {commit}"))?;
    let mut tar = Command::new("tar");
    tar.arg("-xf").arg(&archive).arg("-C").arg(into);
    run_within(tar, Duration::from_secs(60), "tar -x")?;
    Ok(())
}

#[test]
fn a_plugin_built_against_plugin_api_0_1_is_refused_with_both_versions() -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let old = scratch.path().join("old");
    std::fs::create_dir(&old)?;
    git_archive(API_0_1_COMMIT, &["plugin-api", "Cargo.toml"], &old)?;
    // The 0.1 plugin-api inherited its version, edition and dependencies from the workspace.
    let api = scratch.path().join("plugin-api");
    copy_dir(&old.join("plugin-api"), &api)?;
    let manifest = concrete_manifest(
        &std::fs::read_to_string(api.join("Cargo.toml"))?,
        &std::fs::read_to_string(old.join("Cargo.toml"))?,
    )?;
    anyhow::ensure!(
        manifest.contains("version = \"0.1.0\""),
        "commit {API_0_1_COMMIT} is not plugin-api 0.1.0:\n{manifest}"
    );
    std::fs::write(api.join("Cargo.toml"), manifest)?;
    let plugin = scratch.path().join("api-0.1-plugin");
    copy_dir(&repo_root().join("tests/fixtures/api-0.1-plugin"), &plugin)?;
    std::fs::copy(repo_root().join("Cargo.lock"), plugin.join("Cargo.lock"))?;
    let so = cargo_build(&plugin)?.join("libvpcrouter_oldapi.so");
    let dir = plugin_dir(&[&so])?;
    // Proof without the host that the build really is a 0.1 plugin: its header says so.
    anyhow::ensure!(std::fs::read(&so)?.windows(5).any(|w| w == b"0.1.0"), "{} names no 0.1.0", so.display());

    let args = [
        "--plugin-dir",
        dir.path().to_str().unwrap_or_default(),
        "-m",
        "oldapi",
        "-H",
        "always",
        "-r",
        world::REGION,
        "-v",
        "vpc-00000000",
    ];
    let (code, _, err) = run_once(&args);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one error line:\n{err}");
    assert!(err.contains("libvpcrouter_oldapi.so") && err.contains("incompatible plugin-api"), "{err}");
    assert!(err.contains(&format!("(host = {PLUGIN_API_VERSION}, plugin = 0.1.0)")), "{err}");
    assert_eq!(PLUGIN_API_VERSION, "0.3.0", "this release; the fixture proves 0.1 -> 0.3 is refused");
    Ok(())
}

/// Makes "the next release" of plugin-api in `scratch/plugin-api`: this one bumped to
/// [`NEXT_RELEASE`] with a field appended to `PluginMod` after its last field, which the
/// export code sets. Returns its directory.
fn next_release_api(scratch: &Path) -> anyhow::Result<std::path::PathBuf> {
    let root = repo_root();
    let api = scratch.join("plugin-api");
    copy_dir(&root.join("plugin-api"), &api)?;
    let manifest = concrete_manifest(
        &std::fs::read_to_string(api.join("Cargo.toml"))?,
        &std::fs::read_to_string(root.join("Cargo.toml"))?,
    )?;
    let bumped =
        manifest.replacen(&format!("version = \"{PLUGIN_API_VERSION}\""), &format!("version = \"{NEXT_RELEASE}\""), 1);
    anyhow::ensure!(bumped != manifest, "plugin-api/Cargo.toml has no version line for {PLUGIN_API_VERSION}");
    std::fs::write(api.join("Cargo.toml"), bumped)?;
    let edit = |file: &str, from: &str, to: &str| -> anyhow::Result<()> {
        let path = api.join(file);
        let text = std::fs::read_to_string(&path)?;
        anyhow::ensure!(text.matches(from).count() == 1, "plugin-api/{file} no longer has exactly one `{from}`");
        std::fs::write(&path, text.replacen(from, to, 1))?;
        Ok(())
    };
    let last = "    pub required_plugins_for: extern \"C\" fn(args: &PluginArgs) -> RResult<RVec<RString>, RString>,\n";
    edit("src/plugin.rs", last, &format!("{last}    /// Added in the next release: one line about the plugin.\n    pub describe: extern \"C\" fn() -> RString,\n"))?;
    let set = "            required_plugins_for: Self::required_plugins_for,\n";
    edit("src/export.rs", set, &format!("{set}            describe: next_describe,\n"))?;
    let export = api.join("src/export.rs");
    let mut text = std::fs::read_to_string(&export)?;
    text.push_str(&format!(
        "\nextern \"C\" fn next_describe() -> RString {{\n    \"added in {NEXT_RELEASE}\".into()\n}}\n"
    ));
    std::fs::write(&export, text)?;
    Ok(api)
}

#[test]
fn a_prefix_field_appended_in_a_later_release_keeps_plugins_and_hosts_of_both_releases_working() -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let root = repo_root();
    let api = next_release_api(scratch.path())?;
    let loader = scratch.path().join("api-next-loader");
    copy_dir(&root.join("tests/fixtures/api-next-loader"), &loader)?;
    std::fs::copy(root.join("Cargo.lock"), loader.join("Cargo.lock"))?;
    let loader_bin = cargo_build(&loader)?.join("vpcrouter-api-next-loader");
    // dirspec as this release builds it, and as the next one would.
    let now_so = build_example(&scratch.path().join("now"), "watcher-dir", "libvpcrouter_dirspec.so")?;
    let next_so = build_example_against(&scratch.path().join("next"), "watcher-dir", "libvpcrouter_dirspec.so", &api)?;

    let specs = scratch.path().join("routes.d");
    std::fs::create_dir(&specs)?;
    std::fs::write(specs.join("a.json"), r#"{"10.55.0.0/16": ["10.0.0.1"]}"#)?;
    let load = |so: &Path| -> anyhow::Result<String> {
        let mut run = Command::new(&loader_bin);
        run.arg(so).arg(&specs);
        run_within(run, Duration::from_secs(30), "api-next-loader")
    };

    let steps = |release: &str, describe: &str| {
        vec![
            format!("loader plugin-api {NEXT_RELEASE}"),
            format!("describe: {describe}"),
            format!("metadata: dirspec watcher plugin-api {release}"),
            "validate_config bad: --spec_dir_interval must be between 0.1 and 3600 seconds (got 0)".to_string(),
            "validate_config: ok".to_string(),
            r#"spec: {"10.55.0.0/16":["10.0.0.1"]}"#.to_string(),
            r#"status: version 0.1.0 specs_sent 1 details {"skipped_fragments":{}}"#.to_string(),
            "stop: ok".to_string(),
        ]
    };
    // A plugin of this release loads and runs in the newer host, which finds the
    // field it appended missing; a plugin of the newer release has it.
    let added = format!("added in {NEXT_RELEASE}");
    for (so, release, describe) in [(&now_so, PLUGIN_API_VERSION, "none"), (&next_so, NEXT_RELEASE, added.as_str())] {
        let out = load(so)?;
        let lines: Vec<String> = out.lines().map(String::from).collect();
        let want = steps(release, describe);
        assert_eq!(&lines[..want.len().min(lines.len())], &want[..], "{out}");
        let logged: usize =
            lines.last().and_then(|l| l.strip_prefix("log lines: ")).and_then(|n| n.parse().ok()).unwrap_or(0);
        assert!(logged >= 2, "the plugin logged through the loader's context:\n{out}");
    }

    // ... and in this (older, unchanged) host, which does not know the field.
    let dir = plugin_dir(&[&next_so])?;
    let (code, out, err) = run_once(&["--list-plugins", "--plugin-dir", dir.path().to_str().unwrap_or_default()]);
    assert_eq!(code, 0, "{err}");
    let line = out.lines().find(|l| l.trim_start().starts_with("dirspec")).unwrap_or_default();
    assert!(line.contains(&format!("[plugin-api {NEXT_RELEASE},")) && !line.contains("UNUSABLE"), "{out}");
    Ok(())
}
