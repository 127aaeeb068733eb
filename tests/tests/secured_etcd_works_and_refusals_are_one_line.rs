//! etcd over TLS and with auth works; each refusal is one clear log line, and the instance neither leads nor writes.
//!
//! For cluster mode and the etcd watcher: real etcd 3.4 (https on loopback, certificates from
//! `vpcrouter_tests::certs`), real binaries, moto as EC2. The refusals: wrong CA, no client
//! certificate, an expired one, a host name the server certificate does not hold, a user
//! without the role, a wrong password. One etcd per test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use vpcrouter_tests::certs::{Ca, Pem, Usage};
use vpcrouter_tests::cluster::Instance;
use vpcrouter_tests::daemon::{command, run_once, Daemon};
use vpcrouter_tests::etcd::{Etcd, Permission, Tls};
use vpcrouter_tests::http_client::get;
use vpcrouter_tests::{wait_for, Env};

const T: Duration = Duration::from_secs(20);
const KEY: &str = "/vpcrouter/route_spec";
const CIDR: &str = "10.55.0.0/16";
const SPEC: &str = r#"{"10.55.0.0/16": ["127.0.1.10", "127.0.2.10"]}"#;
/// Longer than an instance that could lead needs to become leader (TTL 2 s).
const SETTLE: Duration = Duration::from_millis(2500);

/// The test's certificates: a CA etcd trusts, another one nobody trusts, etcd's server
/// certificate (for 127.0.0.1 only), vpcrouter's client certificate, an expired one, and
/// etcdctl's (common name `root`: etcd takes it for the user once auth is on).
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    other: Ca,
    server: Pem,
    client: Pem,
    expired: Pem,
    ctl: Pem,
}

fn pki() -> anyhow::Result<Pki> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new(dir.path(), "etcd")?;
    let other = Ca::new(dir.path(), "other")?;
    let server = ca.issue("server", "etcd", &["127.0.0.1"], Usage::Server)?;
    let client = ca.issue("client", "vpcrouter", &[], Usage::Client)?;
    let expired = ca.issue_expired("expired", "vpcrouter", &[], Usage::Client)?;
    let ctl = ca.issue("etcdctl", "root", &[], Usage::Client)?;
    Ok(Pki { dir, ca, other, server, client, expired, ctl })
}

/// etcd on https://127.0.0.1 demanding client certificates signed by `p.ca`.
fn tls_etcd(p: &Pki) -> anyhow::Result<Etcd> {
    Etcd::start_tls(Tls {
        ca: p.ca.cert.clone(),
        server: p.server.clone(),
        client_cert_auth: true,
        ctl_client: Some(p.ctl.clone()),
    })
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// `--etcd-cacert CA --etcd-cert C --etcd-key K` (each part optional).
fn tls_args(ca: Option<&Path>, client: Option<&Pem>) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(ca) = ca {
        args.extend(["--etcd-cacert".to_string(), s(ca)]);
    }
    if let Some(c) = client {
        args.extend(["--etcd-cert".to_string(), s(&c.cert), "--etcd-key".to_string(), s(&c.key)]);
    }
    args
}

/// A cluster instance driven by a local spec file (configfile) and healthy routers (always):
/// only leadership stands between it and an EC2 write.
fn file_instance(env: &Env, etcd: &str, id: &str, extra: &[String]) -> anyhow::Result<Instance> {
    let spec = env.write("spec.json", SPEC);
    let mut args = vec!["-m", "configfile", "-f", spec.to_str().unwrap_or_default(), "-H", "always"];
    args.extend(["--cluster-name", "c1"]);
    args.extend(extra.iter().map(String::as_str));
    Instance::start(env.daemon().args(&args), etcd, id, 2)
}

/// A cluster instance whose route spec comes from etcd (the etcd watcher, the same
/// `--etcd-*` options serving both).
fn etcd_instance(env: &Env, etcd: &str, watch: &str, id: &str, extra: &[String]) -> anyhow::Result<Instance> {
    let mut args = vec!["-m", "etcd", "--etcd_endpoints", watch, "--etcd_key", KEY, "-H", "always"];
    args.extend(["--cluster-name", "c1"]);
    args.extend(extra.iter().map(String::as_str));
    Instance::start(env.daemon().args(&args), etcd, id, 2)
}

/// The etcd watcher's `info()` from `/status`.
fn watcher_info(d: &Daemon) -> Option<serde_json::Value> {
    let doc = get(d.port, "/status", None).ok()?.json().ok()?;
    doc["plugins"].as_array()?.iter().find(|p| p["name"] == "etcd").map(|p| p["info"].clone())
}

/// The log lines containing `needle`.
fn lines_with(log: &str, needle: &str) -> Vec<String> {
    log.lines().filter(|l| l.contains(needle)).map(String::from).collect()
}

/// Checks that a failed instance logged `want` once as the reason it cannot open a session,
/// does not lead, and wrote nothing to EC2. Returns the line. Call it [`SETTLE`] after the
/// start at the earliest, so that an instance that could lead would have.
fn refused(i: &Instance, want: &str) -> anyhow::Result<String> {
    let needle = "cluster: cannot open an etcd session yet";
    i.daemon.wait_log(want, T)?;
    let log = i.daemon.log();
    let lines = lines_with(&log, needle);
    anyhow::ensure!(lines.len() == 1, "{}: one warning per outage, got {lines:?}\n{log}", i.id);
    anyhow::ensure!(lines[0].contains(want), "{}: {:?} lacks {want:?}", i.id, lines[0]);
    anyhow::ensure!(i.role().as_deref() == Some("disconnected"), "{}: role {:?}\n{log}", i.id, i.role());
    anyhow::ensure!(i.writes() == Some(0), "{}: EC2 writes {:?}", i.id, i.writes());
    let st = i.status().unwrap_or_default();
    let last = st["cluster"]["last_error"].as_str().unwrap_or_default().to_string();
    anyhow::ensure!(last.contains(want), "{}: /status last_error {last:?}", i.id);
    Ok(lines[0].clone())
}

#[test]
fn over_tls_with_client_certificates_cluster_mode_leads_and_the_watcher_reads_the_spec() -> anyhow::Result<()> {
    let p = pki()?;
    let etcd = tls_etcd(&p)?;
    etcd.put(KEY, SPEC)?;
    let env = Env::new()?;
    let tables = [env.world.tables[0].as_str(), env.world.tables[1].as_str()];
    // A bare host:port is https:// when TLS files are given.
    let bare = format!("127.0.0.1:{}", etcd.port(0));
    let tls = tls_args(Some(&p.ca.cert), Some(&p.client));
    let i = etcd_instance(&env, &bare, &etcd.endpoint(0), "a", &tls)?;
    wait_for(T, "the instance to lead", || (i.role()? == "leader").then_some(()))
        .map_err(|e| anyhow::anyhow!("{e}\n{}", i.daemon.log()))?;
    env.wait_routed(&tables, CIDR, T).map_err(|e| anyhow::anyhow!("{e}\n{}", i.daemon.log()))?;
    let info = watcher_info(&i.daemon).unwrap_or_default();
    assert_eq!(info["connected"], true, "{info}");
    assert!(i.writes().unwrap_or(0) >= 2, "{:?}", i.writes());
    let log = i.daemon.log();
    assert!(log.contains(&format!("Connected to etcd; key '{KEY}' read at revision")), "{log}");
    assert!(log.contains(&format!("etcd=https://127.0.0.1:{}", etcd.port(0))), "{log}");
    // The cluster's keys are in etcd, written over TLS.
    assert_eq!(etcd.get("/vpcrouter/c1/leader")?.as_deref(), Some("a"));
    Ok(())
}

#[test]
fn tls_failures_are_one_clear_line_and_the_instance_neither_leads_nor_writes() -> anyhow::Result<()> {
    let p = pki()?;
    let etcd = tls_etcd(&p)?;
    etcd.put(KEY, SPEC)?;
    let env = Env::new()?;
    let url = etcd.endpoint(0);
    let wrong_ca = file_instance(&env, &url, "wrong-ca", &tls_args(Some(&p.other.cert), Some(&p.client)))?;
    let no_cert = file_instance(&env, &url, "no-cert", &tls_args(Some(&p.ca.cert), None))?;
    let expired = file_instance(&env, &url, "expired", &tls_args(Some(&p.ca.cert), Some(&p.expired)))?;
    let by_name = format!("https://localhost:{}", etcd.port(0));
    let mismatch = file_instance(&env, &by_name, "name", &tls_args(Some(&p.ca.cert), Some(&p.client)))?;
    // The etcd watcher with the wrong CA: the same line, in its own words.
    let tls = tls_args(Some(&p.other.cert), Some(&p.client));
    let mut args = vec!["-m", "etcd", "--etcd_endpoints", url.as_str(), "--etcd_key", KEY, "-H", "always"];
    args.extend(tls.iter().map(String::as_str));
    let watcher = env.daemon().args(&args).start()?;
    std::thread::sleep(SETTLE);

    let mut lines = Vec::new();
    let want_ca = format!(
        "etcd's server certificate is not signed by a trusted CA; check --etcd-cacert {}: it must hold the CA \
         that signed etcd's --cert-file",
        s(&p.other.cert)
    );
    lines.push(refused(&wrong_ca, &want_ca)?);
    lines.push(refused(
        &no_cert,
        "it demands a client certificate (--client-cert-auth): pass --etcd-cert and --etcd-key",
    )?);
    lines.push(refused(&expired, &format!("the client certificate --etcd-cert {} expired at ", s(&p.expired.cert)))?);
    lines.push(refused(
        &mismatch,
        "etcd's server certificate is not valid for 'localhost' (it holds 127.0.0.1): connect to a name or IP the \
         certificate holds, or reissue etcd's --cert-file with 'localhost' in it",
    )?);
    watcher.wait_log(&format!("Cannot read key '{KEY}' from etcd ({url}): read: {want_ca}"), T)?;
    lines.extend(lines_with(&watcher.log(), "Cannot read key"));
    assert_eq!(watcher_info(&watcher).unwrap_or_default()["connected"], false);

    // Nothing reached EC2: no instance may lead.
    assert_eq!(env.world.targets(&[&env.world.tables[0]], CIDR)?, [None], "{}", env.world.dump());
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

#[test]
fn with_etcd_auth_a_role_on_the_prefix_works_and_failures_name_the_cause_never_the_secrets() -> anyhow::Result<()> {
    let p = pki()?;
    let mut etcd = tls_etcd(&p)?;
    etcd.put(KEY, SPEC)?;
    etcd.enable_auth("root-pw-7Qx")?;
    let rw = [
        Permission { kind: "readwrite", key: "/vpcrouter/c1/", prefix: true },
        Permission { kind: "read", key: KEY, prefix: false },
    ];
    etcd.add_role("vpcrouter-c1", &rw)?;
    const PASSWORD: &str = "s3cret-Hq7-vr";
    etcd.add_user("vr", PASSWORD, &["vpcrouter-c1"])?;
    etcd.add_user("nobody", PASSWORD, &[])?;
    let pw_file = write_secret(p.dir.path(), "vr.pw", &format!("{PASSWORD}\n"))?;
    let env = Env::new()?;
    let tables = [env.world.tables[0].as_str(), env.world.tables[1].as_str()];
    let url = etcd.endpoint(0);
    let login = |user: &str| {
        let mut a = tls_args(Some(&p.ca.cert), Some(&p.client));
        a.extend(["--etcd-user".into(), user.into(), "--etcd-password-file".into(), s(&pw_file)]);
        a
    };

    // The role on the prefix (and read on the spec key) is enough for both.
    let good = etcd_instance(&env, &url, &url, "a", &login("vr"))?;
    wait_for(T, "the instance to lead", || (good.role()? == "leader").then_some(()))
        .map_err(|e| anyhow::anyhow!("{e}\n{}", good.daemon.log()))?;
    env.wait_routed(&tables, CIDR, T).map_err(|e| anyhow::anyhow!("{e}\n{}", good.daemon.log()))?;

    // A user without the role (cluster mode, and the etcd watcher), and a wrong password from
    // the environment: started together, checked once they had the time to lead.
    let nobody = file_instance(&env, &url, "b", &login("nobody"))?;
    let mut args = vec!["-m", "etcd", "--etcd_endpoints", url.as_str(), "--etcd_key", KEY, "-H", "always"];
    let watcher_login = login("nobody");
    args.extend(watcher_login.iter().map(String::as_str));
    let watcher = env.daemon().args(&args).start()?;
    let mut wrong = tls_args(Some(&p.ca.cert), Some(&p.client));
    wrong.extend(["--etcd-user".into(), "vr".into()]);
    let spec = env.write("spec.json", SPEC);
    let mut args = vec!["-m", "configfile", "-f", spec.to_str().unwrap_or_default(), "-H", "always"];
    args.extend(["--cluster-name", "c1"]);
    args.extend(wrong.iter().map(String::as_str));
    let daemon = env.daemon().args(&args).env("VPCROUTER_ETCD_PASSWORD", "not-the-password-9Zk");
    let wrong_pw = Instance::start(daemon, &url, "c", 2)?;
    std::thread::sleep(SETTLE);

    let want = "user 'nobody' may not read /vpcrouter/c1/members/b: grant the role readwrite on prefix \
                /vpcrouter/c1/ to a role of the user (etcdctl role grant-permission ROLE --prefix=true readwrite \
                /vpcrouter/c1/)";
    let nobody_line = refused(&nobody, want)?;
    let want_watch = format!(
        "Cannot read key '{KEY}' from etcd ({url}): read: user 'nobody' may not read {KEY}: grant the role read on \
         key {KEY} to a role of the user (etcdctl role grant-permission ROLE read {KEY})"
    );
    watcher.wait_log(&want_watch, T)?;
    let wrong_line = refused(
        &wrong_pw,
        "etcd refused user 'vr': wrong user name or password (check --etcd-user and the password from \
         VPCROUTER_ETCD_PASSWORD)",
    )?;
    assert_eq!(good.role().as_deref(), Some("leader"), "the others did not disturb the leader");
    let watcher_line = lines_with(&watcher.log(), "Cannot read key").join("\n");
    println!("{nobody_line}\n{watcher_line}\n{wrong_line}");

    // Secrets: the passwords and the private key are nowhere to be seen.
    let key_pem = std::fs::read_to_string(&p.client.key)?;
    let key_line = key_pem.lines().nth(1).unwrap_or_default().to_string();
    assert!(key_line.len() > 40, "{key_pem}");
    // --help and a usage error with the password in the environment (clap would print an
    // `.env()` option's value).
    let with_pw = |args: &[&str]| -> anyhow::Result<String> {
        let out = command(None, args).env("VPCROUTER_ETCD_PASSWORD", PASSWORD).output()?;
        Ok(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    let help = with_pw(&["-m", "etcd", "--help"])?;
    assert!(help.contains("--etcd-password-file") && help.contains("VPCROUTER_ETCD_PASSWORD"), "{help}");
    let usage = with_pw(&["-m", "etcd", "--etcd_endpoints", "h:1", "--etcd-user", "vr", "--etcd-cert", "/c"])?;
    assert!(usage.contains("--etcd-cert is given without --etcd-key"), "{usage}");
    let mut seen = vec![help, usage, nobody_line, wrong_line];
    for i in [&good, &nobody, &wrong_pw] {
        seen.push(i.daemon.log());
        seen.push(get(i.daemon.port, "/status", None)?.body);
        seen.push(get(i.daemon.port, "/metrics", None)?.body);
    }
    seen.push(watcher.log());
    seen.push(get(watcher.port, "/status", None)?.body);
    for text in &seen {
        for secret in [PASSWORD, "not-the-password-9Zk", "root-pw-7Qx", key_line.as_str(), "PRIVATE KEY"] {
            assert!(!text.contains(secret), "{secret:?} shown in:\n{text}");
        }
    }
    // A command-line error names the options, not the secrets.
    let (code, _, err) = run_once(&["-m", "etcd", "--etcd_endpoints", "h:1", "--etcd-user", "vr", "--etcd-cert", "/c"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--etcd-cert is given without --etcd-key"), "{err}");
    Ok(())
}

/// Writes a file only its owner may read.
fn write_secret(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(path)
}
