//! `make install`/`uninstall`, the Debian package and the systemd unit lay out exactly the documented files.
//!
//! Also that PLUGINS.md shows the example plugins as they are. These run the Makefile's
//! no-build targets on what `make build` produced.

use std::path::Path;
use std::process::Command;

use vpcrouter_tests::{build_dir, repo_root};

fn make(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("make")
        .arg("-s")
        .args(args)
        .arg(format!("BUILD_DIR={}", build_dir().display()))
        .current_dir(repo_root())
        .output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    anyhow::ensure!(out.status.success(), "make {args:?} failed:\n{text}");
    Ok(text)
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).map(|r| r.display().to_string()).unwrap_or_default());
            }
        }
    }
    out.sort();
    out
}

/// `--list-plugins` of an installed binary, with no other plugin directory in play.
fn list_plugins(bin: &Path) -> anyhow::Result<String> {
    let out = Command::new(bin).arg("--list-plugins").env_remove("VPCROUTER_PLUGIN_DIR").output()?;
    anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn make_install_lays_out_everything_and_uninstall_removes_exactly_that() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let dest = format!("DESTDIR={}", root.path().display());
    make(&["install-files", &dest, "PREFIX=/usr/local"])?;
    let files = files_under(root.path());
    for want in [
        "usr/local/bin/vpcrouter",
        "usr/local/lib/vpcrouter/libvpcrouter_configfile.so",
        "usr/local/lib/vpcrouter/libvpcrouter_health_always.so",
        "usr/local/share/man/man1/vpcrouter.1",
        "usr/local/share/bash-completion/completions/vpcrouter",
        "usr/local/share/zsh/site-functions/_vpcrouter",
        "usr/local/share/fish/vendor_completions.d/vpcrouter.fish",
        "usr/local/lib/systemd/system/vpcrouter.service",
        "usr/local/share/doc/vpcrouter/route_spec.example.json",
        "usr/local/share/doc/vpcrouter/iam-policy.json",
        "usr/local/share/doc/vpcrouter/iam-policy-scoped.json",
        "usr/local/share/doc/vpcrouter/prometheus/vpcrouter-alerts.yml",
        "usr/local/share/doc/vpcrouter/prometheus/vpcrouter-alerts.test.yml",
        "usr/local/share/doc/vpcrouter/prometheus/grafana-dashboard.json",
        "usr/local/share/doc/vpcrouter/iam-policy-assume-role.json",
        "usr/local/share/doc/vpcrouter/iam-role-trust-policy.json",
    ] {
        assert!(files.iter().any(|f| f == want), "{want} missing from {files:#?}");
    }
    let listed = list_plugins(&root.path().join("usr/local/bin/vpcrouter"))?;
    assert!(
        listed.contains("configfile") && listed.contains("/usr/local/lib/vpcrouter/libvpcrouter_configfile.so"),
        "{listed}"
    );
    let man = std::fs::read_to_string(root.path().join("usr/local/share/man/man1/vpcrouter.1"))?;
    assert!(man.contains("ignore_routes"), "man page covers the options");
    for flag in [
        "http\\-token\\-file", "http\\-auth\\-all", "http\\-allow\\-unauthenticated", "tls\\-client\\-ca",
        "etcd\\-cacert", "etcd\\-password\\-file", "role\\-arn", "role\\-external\\-id", "role\\-session\\-name",
        "failback", "failback\\-after", "state\\-dir",
    ] {
        assert!(man.contains(flag), "the man page lacks --{flag}");
    }
    for sub in ["drain", "undrain", "drains"] {
        assert!(man.contains(&format!("vpcrouter\\-{sub}")) || man.contains(sub), "the man page lacks {sub}");
    }
    let unit = std::fs::read_to_string(root.path().join("usr/local/lib/systemd/system/vpcrouter.service"))?;
    assert!(unit.contains("StateDirectory=vpcrouter"), "drains.json lives in /var/lib/vpcrouter: {unit}");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/vpcrouter $VPCROUTER_ARGS")
            && unit.contains("/usr/local/etc/default/vpcrouter"),
        "{unit}"
    );

    make(&["uninstall", &dest, "PREFIX=/usr/local"])?;
    assert_eq!(files_under(root.path()), Vec::<String>::new(), "uninstall leaves files behind");
    Ok(())
}

#[test]
fn debian_package_installs_into_a_scratch_root_and_finds_its_plugins() -> anyhow::Result<()> {
    let text = make(&["deb-package"])?;
    let deb = text
        .lines()
        .find_map(|l| l.strip_prefix("built: "))
        .ok_or_else(|| anyhow::anyhow!("no package built:\n{text}"))?;
    let root = tempfile::tempdir()?;
    let status = Command::new("dpkg-deb").arg("-x").arg(deb).arg(root.path()).status()?;
    anyhow::ensure!(status.success(), "dpkg-deb -x failed");
    let listed = list_plugins(&root.path().join("usr/bin/vpcrouter"))?;
    for name in ["configfile", "fixedconf", "always", "file"] {
        assert!(listed.contains(name), "{listed}");
    }
    assert!(listed.contains(&format!("{}/usr/lib/vpcrouter/", root.path().display())), "{listed}");
    let conffiles = Command::new("dpkg-deb").args(["-I", deb, "conffiles"]).output()?;
    assert!(String::from_utf8_lossy(&conffiles.stdout).contains("/etc/default/vpcrouter"));
    let default = std::fs::read_to_string(root.path().join("etc/default/vpcrouter"))?;
    assert!(default.contains("-f /etc/vpcrouter/route_spec.json"), "{default}");
    // The alert rules' unit tests run where the package put them.
    let tests = root.path().join("usr/share/doc/vpcrouter/prometheus/vpcrouter-alerts.test.yml");
    let out = Command::new("promtool").args(["test", "rules"]).arg(&tests).output()?;
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok(())
}

#[test]
fn systemd_unit_verifies_and_is_hardened() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    make(&["install-files", &format!("DESTDIR={}", root.path().display()), "PREFIX=/usr"])?;
    let installed = root.path().join("usr/lib/systemd/system/vpcrouter.service");
    let unit = std::fs::read_to_string(&installed)?;
    for line in [
        "AmbientCapabilities=CAP_NET_RAW",
        "CapabilityBoundingSet=CAP_NET_RAW",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "DynamicUser=yes",
        "EnvironmentFile=-/etc/default/vpcrouter",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing:\n{unit}");
    }
    // verify checks that ExecStart exists: point it at the binary installed above.
    let bin = root.path().join("usr/bin/vpcrouter");
    let check = root.path().join("vpcrouter.service");
    std::fs::write(&check, unit.replace("/usr/bin/vpcrouter", &bin.display().to_string()))?;
    let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&check).output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.trim().is_empty(), "systemd-analyze verify:\n{text}");
    Ok(())
}

#[test]
fn plugins_md_shows_the_example_plugins_as_they_are() -> anyhow::Result<()> {
    let root = vpcrouter_tests::repo_root();
    let doc = std::fs::read_to_string(root.join("PLUGINS.md"))?;
    for file in [
        "health-cmd/Cargo.toml", "health-cmd/src/lib.rs", "watcher-dir/Cargo.toml", "watcher-dir/src/lib.rs",
        "notify-jsonl/Cargo.toml", "notify-jsonl/src/lib.rs",
    ] {
        let source = std::fs::read_to_string(root.join("examples").join(file))?;
        let lang = if file.ends_with(".toml") { "toml" } else { "rust" };
        assert!(
            doc.contains(&format!("```{lang}\n{source}```\n")),
            "PLUGINS.md must show examples/{file} in full, as it is"
        );
    }
    Ok(())
}
