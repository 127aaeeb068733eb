//! The status server lets only authorised clients write, serves HTTPS, and slow clients cannot starve it.
//!
//! Bearer token, refusal of unauthenticated writes off loopback, HTTPS with optional client
//! certificates, and clients that hold connections without finishing a request. Real binary,
//! real plugins, moto as EC2, loopback only.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vpcrouter_tests::certs::{Ca, Pem, Usage};
use vpcrouter_tests::daemon::{command, run_client, Daemon};
use vpcrouter_tests::http_client::{self, get, request, Response};
use vpcrouter_tests::slowclients::SlowClients;
use vpcrouter_tests::{free_port, tls_client, wait_for, world, Env};

const T: Duration = Duration::from_secs(20);
const SPEC: &str = r#"{"10.55.0.0/16": ["127.0.1.10"]}"#;
const JSON: (&str, &str) = ("Content-Type", "application/json");
const REFUSAL: &str = "add --http-token-file FILE, or listen on a loopback address (-a 127.0.0.1), or pass --http-allow-unauthenticated to accept this risk";

/// A token no other text contains, so that finding it anywhere means it leaked.
fn unique_token() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("vpcr-Tok3n-{}-{nanos}", std::process::id())
}

/// Writes `token` (with a newline, as editors do) to a file only the owner may read.
fn token_file(env: &Env, name: &str, token: &str) -> PathBuf {
    let path = env.path(name);
    std::fs::write(&path, format!("{token}\n")).expect("write the token file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod the token file");
    path
}

/// Waits until the status server answers anything (401 included).
fn wait_serving(d: &Daemon) -> anyhow::Result<()> {
    wait_for(T, "the status server", || get(d.port, "/status", None).ok().map(drop))
        .map_err(|e| anyhow::anyhow!("{e}\n--- log ---\n{}", d.log()))
}

fn post_spec(d: &Daemon, authorization: Option<&str>) -> anyhow::Result<Response> {
    let mut headers = vec![JSON];
    headers.extend(authorization.map(|a| ("Authorization", a)));
    request(d.port, "POST", "/route_spec", &headers, SPEC.as_bytes())
}

fn get_with(d: &Daemon, path: &str, authorization: &str) -> anyhow::Result<Response> {
    request(d.port, "GET", path, &[("Authorization", authorization)], b"")
}

/// vpcrouter run to completion with moto's environment: (status, stdout, stderr).
fn run_to_end(env: &Env, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let mut all = vec!["-r", world::REGION, "-v", env.world.vpc_id.as_str()];
    all.extend_from_slice(args);
    let out = command(Some(&env.moto), &all).output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// A daemon serving HTTPS with `server`'s certificate (`-m http -H always`), plus `extra`.
fn https_daemon(env: &Env, server: &Pem, extra: &[&str]) -> anyhow::Result<Daemon> {
    let (cert, key) = (server.cert.to_str().unwrap_or_default(), server.key.to_str().unwrap_or_default());
    let mut args = vec!["-m", "http", "-H", "always", "--tls-cert", cert, "--tls-key", key];
    args.extend_from_slice(extra);
    env.daemon().args(&args).start()
}

/// A scratch directory with a CA and the status server's certificate (localhost, 127.0.0.1).
fn server_pki() -> anyhow::Result<(tempfile::TempDir, Ca, Pem)> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new(dir.path(), "vpcr")?;
    let server = ca.issue("server", "vpcrouter", &["localhost", "127.0.0.1"], Usage::Server)?;
    Ok((dir, ca, server))
}

#[test]
fn writes_need_the_token_and_reads_do_not() -> anyhow::Result<()> {
    let env = Env::new()?;
    let rt1 = env.world.tables[0].clone();
    let token = unique_token();
    let file = token_file(&env, "token", &token);
    let d = env
        .daemon()
        .args(["-m", "http", "-H", "always", "--http-token-file", file.to_str().unwrap_or_default()])
        .start()?;
    wait_serving(&d)?;

    let missing = post_spec(&d, None)?;
    assert_eq!(missing.status, 401, "{}", missing.body);
    assert_eq!(missing.header("www-authenticate"), Some(r#"Bearer realm="vpcrouter""#));
    assert_eq!(missing.header("content-type"), Some("application/json"));
    assert!(
        missing.json()?["error"].as_str().unwrap_or_default().contains("Authorization: Bearer"),
        "{}",
        missing.body
    );
    let wrong = post_spec(&d, Some(&format!("Bearer {token}x")))?;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert_eq!(wrong.header("www-authenticate"), Some(r#"Bearer realm="vpcrouter", error="invalid_token""#));
    assert_eq!(wrong.json()?["error"], "invalid bearer token");
    // Another scheme, and the token without a scheme, are no bearer token.
    assert_eq!(post_spec(&d, Some(&format!("Basic {token}")))?.status, 401);
    assert_eq!(post_spec(&d, Some(&token))?.status, 401);
    // Refused writes changed nothing; unknown write paths are refused before routing.
    assert_eq!(get(d.port, "/route_spec", None)?.status, 404);
    assert_eq!(request(d.port, "DELETE", "/route_spec", &[], b"")?.status, 401);

    let ok = post_spec(&d, Some(&format!("bearer  {token} ")))?;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(env.wait_routed(&[&rt1], "10.55.0.0/16", T)?, "127.0.1.10");

    // Read-only endpoints stay open without --http-auth-all.
    let mut shown = vec![missing.body, wrong.body];
    for path in ["/status", "/metrics", "/route_spec", "/", "/ips", "/plugins"] {
        let r = get(d.port, path, None)?;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        shown.push(r.body);
    }
    assert_eq!(request(d.port, "HEAD", "/status", &[], b"")?.status, 200);

    // Refusals are logged with the remote address; the token is nowhere.
    d.wait_log("HTTP request refused: wrong bearer token", T)?;
    let log = d.log();
    for reason in ["no bearer token", "wrong bearer token"] {
        let line = log.lines().find(|l| l.contains(&format!("HTTP request refused: {reason}"))).unwrap_or_default();
        assert!(line.contains("remote=127.0.0.1:") && line.contains("/route_spec"), "{line}");
    }
    shown.push(log);
    for text in &shown {
        assert!(!text.contains(&token), "the token leaked: {text}");
    }
    Ok(())
}

#[test]
fn auth_all_covers_read_only_endpoints() -> anyhow::Result<()> {
    let env = Env::new()?;
    let token = unique_token();
    let file = token_file(&env, "token", &token);
    let d = env
        .daemon()
        .args(["-m", "http", "-H", "always", "--http-token-file", file.to_str().unwrap_or_default(), "--http-auth-all"])
        .start()?;
    wait_serving(&d)?;
    let bearer = format!("Bearer {token}");
    for path in ["/status", "/metrics", "/", "/ips", "/route_spec"] {
        let r = get(d.port, path, None)?;
        assert_eq!(r.status, 401, "{path}: {}", r.body);
        assert_eq!(r.header("www-authenticate"), Some(r#"Bearer realm="vpcrouter""#), "{path}");
        assert_eq!(get_with(&d, path, &format!("{bearer}0"))?.status, 401, "{path}");
    }
    assert_eq!(get_with(&d, "/status", &bearer)?.status, 200);
    let metrics = get_with(&d, "/metrics", &bearer)?;
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("vpcrouter_reconciles_total"), "{}", metrics.body);
    assert_eq!(post_spec(&d, None)?.status, 401);
    assert_eq!(post_spec(&d, Some(&bearer))?.status, 200);
    assert_eq!(get_with(&d, "/route_spec", &bearer)?.json()?, serde_json::from_str::<serde_json::Value>(SPEC)?);
    assert!(!d.log().contains(&token));
    Ok(())
}

#[test]
fn sighup_rereads_the_token_and_a_bad_file_keeps_it() -> anyhow::Result<()> {
    let env = Env::new()?;
    let (old, new) = (unique_token(), format!("{}-new", unique_token()));
    let file = token_file(&env, "token", &old);
    let d = env
        .daemon()
        .args(["-m", "http", "-H", "always", "--http-token-file", file.to_str().unwrap_or_default()])
        .start()?;
    wait_serving(&d)?;
    assert_eq!(post_spec(&d, Some(&format!("Bearer {old}")))?.status, 200);

    // Rewritten the plain way (umask 022): readable by others, which gets a warning.
    env.write("token", &format!("{new}\n"));
    d.signal(libc::SIGHUP);
    d.wait_log("token re-read from", T)?;
    d.wait_log("can be read by group or others (mode 644): chmod 600 it", T)?;
    let refused = post_spec(&d, Some(&format!("Bearer {old}")))?;
    assert_eq!(refused.status, 401, "the old token is refused after SIGHUP");
    assert_eq!(refused.header("www-authenticate"), Some(r#"Bearer realm="vpcrouter", error="invalid_token""#));
    assert_eq!(post_spec(&d, Some(&format!("Bearer {new}")))?.status, 200);

    // Emptied: the new token stays.
    env.write("token", "\n");
    d.signal(libc::SIGHUP);
    d.wait_log("the previous token stays in force", T)?;
    assert_eq!(post_spec(&d, Some(&format!("Bearer {new}")))?.status, 200);
    assert_eq!(post_spec(&d, None)?.status, 401, "an empty file does not turn authentication off");
    // A FIFO in its place: refused at once (the signal thread does not wait for a writer).
    std::fs::remove_file(&file)?;
    anyhow::ensure!(std::process::Command::new("mkfifo").arg(&file).status()?.success(), "mkfifo");
    d.signal(libc::SIGHUP);
    d.wait_log("is a FIFO (named pipe), not a regular file", T)?;
    wait_for(T, "the second refusal", || {
        (d.log().matches("the previous token stays in force").count() == 2).then_some(())
    })?;
    assert_eq!(post_spec(&d, Some(&format!("Bearer {new}")))?.status, 200);
    let log = d.log();
    assert!(log.contains("the file is empty"), "{log}");
    assert!(!log.contains(&old) && !log.contains(&new), "the token leaked into the log");
    Ok(())
}

/// Lines that appear more than once, timestamps left out.
fn repeated_lines(text: &str) -> Vec<String> {
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let body = match line.split_once(' ') {
            Some((first, rest)) if first.starts_with("20") && first.contains('T') => rest.trim_start(),
            _ => line,
        };
        *seen.entry(body.to_string()).or_default() += 1;
    }
    seen.into_iter().filter(|(_, n)| *n > 1).map(|(l, _)| l).collect()
}

#[test]
fn unauthenticated_writes_off_loopback_are_refused_at_start() -> anyhow::Result<()> {
    let env = Env::new()?;
    let port = free_port().to_string();
    let started = Instant::now();
    let (code, out, err) = run_to_end(&env, &["-m", "http", "-H", "always", "-a", "0.0.0.0", "-p", &port])?;
    assert_eq!(code, 1, "{out}{err}");
    let expected =
        format!("error: refusing to serve POST /route_spec on 0.0.0.0:{port} without authentication: {REFUSAL}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines, [expected.as_str()], "one line on stderr; stdout:\n{out}");
    assert_eq!(format!("{out}{err}").matches("refusing to serve").count(), 1, "printed once:\n{out}{err}");
    assert_eq!(repeated_lines(&format!("{out}\n{err}")), Vec::<String>::new(), "{out}{err}");
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());

    // The watcher without write endpoints, or a loopback address, starts as before
    // (covered by every other test); a token makes 0.0.0.0 acceptable too.
    Ok(())
}

#[test]
fn allow_unauthenticated_keeps_the_old_behaviour_with_a_warning() -> anyhow::Result<()> {
    let env = Env::new()?;
    let d =
        env.daemon().args(["-m", "http", "-H", "always", "-a", "0.0.0.0", "--http-allow-unauthenticated"]).start()?;
    wait_serving(&d)?;
    assert_eq!(post_spec(&d, None)?.status, 200);
    env.wait_routed(&[&env.world.tables[0]], "10.55.0.0/16", T)?;
    d.wait_log(
        &format!("--http-allow-unauthenticated: serving POST /route_spec on 0.0.0.0:{} without authentication", d.port),
        T,
    )?;
    let log = d.log();
    let line = log.lines().find(|l| l.contains("--http-allow-unauthenticated: serving")).unwrap_or_default();
    assert!(line.contains("WARN"), "{line}");
    Ok(())
}

#[test]
fn bad_security_files_are_clear_start_up_errors_without_the_token() -> anyhow::Result<()> {
    let env = Env::new()?;
    let (_dir, ca, server) = server_pki()?;
    let other = ca.issue("other", "vpcrouter", &["localhost"], Usage::Server)?;
    let garbage = env.write("garbage.pem", "not a PEM file\n");
    let token = unique_token();
    let spaced = env.write("spaced", &format!("{token} and more\n"));
    let empty = token_file(&env, "empty", "");
    let missing = env.path("missing");
    let p = |p: &std::path::Path| p.to_str().unwrap_or_default().to_string();
    let (cert, key) = (p(&server.cert), p(&server.key));
    let cases: Vec<(Vec<String>, String)> = vec![
        (vec!["--http-token-file".into(), p(&missing)], format!("--http-token-file {}: cannot read it", p(&missing))),
        (vec!["--http-token-file".into(), p(&empty)], format!("--http-token-file {}: the file is empty", p(&empty))),
        (vec!["--http-token-file".into(), p(&spaced)], format!("--http-token-file {}: the token must be", p(&spaced))),
        (
            vec!["--tls-cert".into(), p(&missing), "--tls-key".into(), key.clone()],
            format!("--tls-cert {}: cannot read it", p(&missing)),
        ),
        (
            vec!["--tls-cert".into(), p(&garbage), "--tls-key".into(), key.clone()],
            format!("--tls-cert {}: no PEM certificate", p(&garbage)),
        ),
        (
            vec!["--tls-cert".into(), cert.clone(), "--tls-key".into(), p(&garbage)],
            format!("--tls-key {}: no PEM private key", p(&garbage)),
        ),
        (
            vec!["--tls-cert".into(), cert.clone(), "--tls-key".into(), p(&other.key)],
            format!("--tls-cert {cert} with --tls-key {}", p(&other.key)),
        ),
        (
            vec![
                "--tls-cert".into(),
                cert.clone(),
                "--tls-key".into(),
                key.clone(),
                "--tls-client-ca".into(),
                p(&garbage),
            ],
            format!("--tls-client-ca {}: no PEM certificate", p(&garbage)),
        ),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["-m", "http", "-H", "always", "-a", "127.0.0.1"];
        args.extend(extra.iter().map(String::as_str));
        let (code, out, err) = run_to_end(&env, &args)?;
        assert_eq!(code, 1, "{extra:?}: {out}{err}");
        let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
        assert!(line.contains(&needle), "{extra:?}: {line}\n{err}");
        assert_eq!(format!("{out}{err}").matches(&needle).count(), 1, "printed once: {out}{err}");
        assert!(!format!("{out}{err}").contains(&token), "the token leaked: {out}{err}");
    }
    // Usage errors: the TLS options come in pairs, --http-auth-all needs a token.
    for args in [&["--tls-cert", cert.as_str()][..], &["--tls-client-ca", cert.as_str()], &["--http-auth-all"]] {
        let mut all = vec!["-m", "http", "-H", "always"];
        all.extend_from_slice(args);
        assert_eq!(run_to_end(&env, &all)?.0, 2, "{args:?}");
    }
    let (code, help, _) = run_to_end(&env, &["-m", "http", "--http-token-file", &p(&spaced), "--help"])?;
    assert_eq!(code, 0);
    assert!(help.contains("--http-token-file") && help.contains("--http-allow-unauthenticated"), "{help}");
    assert!(!help.contains(&token));
    Ok(())
}

#[test]
fn https_serves_with_the_ca_and_refuses_plain_http_cleanly() -> anyhow::Result<()> {
    let env = Env::new()?;
    let (dir, ca, server) = server_pki()?;
    let d = https_daemon(&env, &server, &[])?;
    let client = tls_client::config(&ca.cert, None)?;
    let st = wait_for(T, "the HTTPS server", || tls_client::get(&client, d.port, "/status").ok())
        .map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))?;
    assert_eq!(st.status, 200, "{}", st.body);
    assert_eq!(st.json()?["vpc_id"], env.world.vpc_id.as_str());
    let r = tls_client::request(&client, d.port, "POST", "/route_spec", &[JSON], SPEC.as_bytes())?;
    assert_eq!(r.status, 200, "{}", r.body);
    env.wait_routed(&[&env.world.tables[0]], "10.55.0.0/16", T)?;

    // Plain HTTP to the HTTPS port: a plain 400 saying so, and the connection closes.
    let plain = get(d.port, "/status", None)?;
    assert_eq!(plain.status, 400, "{}", plain.body);
    assert!(plain.body.contains("HTTPS"), "{}", plain.body);
    // A client that trusts another CA refuses the server.
    let stranger = Ca::new(dir.path(), "stranger")?;
    assert!(tls_client::get(&tls_client::config(&stranger.cert, None)?, d.port, "/status").is_err());
    // Connected, no handshake: closed within the head timeout, not after seconds.
    let started = Instant::now();
    let mut idle = http_client::connect(d.port)?;
    let mut buf = [0u8; 64];
    let _ = idle.read(&mut buf);
    assert!(started.elapsed() < Duration::from_secs(3), "closed after {:?}", started.elapsed());
    assert_eq!(tls_client::get(&client, d.port, "/status")?.status, 200);

    // SIGHUP re-reads certificate and key: now signed by the other CA.
    stranger.issue("server", "vpcrouter", &["localhost", "127.0.0.1"], Usage::Server)?;
    d.signal(libc::SIGHUP);
    d.wait_log("TLS certificate and key re-read", T)?;
    let renewed = tls_client::config(&stranger.cert, None)?;
    assert_eq!(tls_client::get(&renewed, d.port, "/status")?.status, 200);
    assert!(tls_client::get(&client, d.port, "/status").is_err(), "the old certificate is gone");
    // A broken file on SIGHUP: the certificate in force stays.
    std::fs::write(&server.cert, "not a certificate\n")?;
    d.signal(libc::SIGHUP);
    d.wait_log("the previous certificate and key stay in force", T)?;
    assert_eq!(tls_client::get(&renewed, d.port, "/status")?.status, 200);
    // A FIFO in its place: refused at once, the certificate in force stays.
    std::fs::remove_file(&server.cert)?;
    anyhow::ensure!(std::process::Command::new("mkfifo").arg(&server.cert).status()?.success(), "mkfifo");
    d.signal(libc::SIGHUP);
    d.wait_log("--tls-cert: '", T)?;
    assert!(d.log().contains("is a FIFO (named pipe), not a regular file"), "{}", d.log());
    assert_eq!(tls_client::get(&renewed, d.port, "/status")?.status, 200);
    Ok(())
}

#[test]
fn client_certificates_from_the_ca_are_required_with_tls_client_ca() -> anyhow::Result<()> {
    let env = Env::new()?;
    let (dir, ca, server) = server_pki()?;
    let good = ca.issue("client", "monitoring", &[], Usage::Client)?;
    let stranger = Ca::new(dir.path(), "stranger")?;
    let bad = stranger.issue("intruder", "monitoring", &[], Usage::Client)?;
    let expired = ca.issue_expired("old", "monitoring", &[], Usage::Client)?;
    let d = https_daemon(&env, &server, &["--tls-client-ca", ca.cert.to_str().unwrap_or_default()])?;
    let with_cert = tls_client::config(&ca.cert, Some(&good))?;
    let st = wait_for(T, "the HTTPS server", || tls_client::get(&with_cert, d.port, "/status").ok())
        .map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))?;
    assert_eq!(st.status, 200, "{}", st.body);
    for (name, config) in [
        ("no certificate", tls_client::config(&ca.cert, None)?),
        ("another CA's certificate", tls_client::config(&ca.cert, Some(&bad))?),
        ("an expired certificate", tls_client::config(&ca.cert, Some(&expired))?),
    ] {
        let r = tls_client::get(&config, d.port, "/status");
        assert!(r.is_err(), "{name}: served {r:?}");
    }
    d.wait_log("TLS handshake failed", T)?;
    let r = tls_client::request(&with_cert, d.port, "POST", "/route_spec", &[JSON], SPEC.as_bytes())?;
    assert_eq!(r.status, 200, "{}", r.body);

    // The client subcommands present a certificate with --tls-cert and --tls-key.
    let url = format!("https://localhost:{}", d.port);
    let ca_file = ca.cert.to_str().unwrap_or_default();
    let client = |extra: &[&str]| -> anyhow::Result<(i32, String)> {
        let mut args = vec!["drains", "--url", url.as_str(), "--tls-ca", ca_file];
        args.extend_from_slice(extra);
        let (status, _, stderr) = run_client(&args)?;
        Ok((status, stderr))
    };
    let (status, stderr) = client(&[])?;
    assert_eq!((status, stderr.lines().count()), (1, 1), "without a certificate: one line, exit 1: {stderr}");
    assert!(stderr.contains("pass --tls-cert FILE --tls-key FILE"), "{stderr}");
    let (cert, key) = (good.cert.to_str().unwrap_or_default(), good.key.to_str().unwrap_or_default());
    let (status, stderr) = client(&["--tls-cert", cert, "--tls-key", key])?;
    assert_eq!(status, 0, "with the client certificate: {stderr}");
    Ok(())
}

#[test]
fn slow_clients_holding_connections_do_not_starve_a_new_one() -> anyhow::Result<()> {
    let env = Env::new()?;
    let d = env.daemon().args(["-m", "http", "-H", "always"]).start()?;
    wait_serving(&d)?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], d.port));
    let started = Instant::now();
    let slow = SlowClients::start(addr, 200, started + Duration::from_secs(8))?;
    wait_for(Duration::from_secs(3), "the slow clients to connect", || (slow.open() >= 150).then_some(()))?;
    std::thread::sleep(Duration::from_millis(1500));
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let r = get(d.port, "/status", None)?;
        times.push(t.elapsed());
        assert_eq!(r.status, 200, "{}", r.body);
        std::thread::sleep(Duration::from_millis(200));
    }
    let (open, closed) = (slow.open(), slow.closed_by_server());
    slow.stop();
    assert!(times.iter().all(|t| *t < Duration::from_secs(2)), "{times:?}");
    // The head timeout closed slow clients (each reconnected).
    assert!(closed >= 100, "closed by the server: {closed}, open: {open}");
    assert!(started.elapsed() < Duration::from_secs(12), "{:?}", started.elapsed());
    Ok(())
}
