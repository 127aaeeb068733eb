//! The client subcommands `vpcrouter drain IP`, `vpcrouter undrain IP`, `vpcrouter drains`
//! and `vpcrouter status`: one request to the running daemon's status server (`--url`, or
//! `-a`/`-p`), with the bearer token of `--http-token-file` and, for HTTPS, the CA of
//! `--tls-ca` (default: the system's roots). They print one line (or the table of drains,
//! or the status view of [`vpcrouter_status::console`]) and exit 0, or print a one-line
//! error and exit 1. `status --watch` repeats its request until interrupted.
//!
//! The HTTP client is hyper's HTTP/1.1 client on a current-thread runtime, over tokio's TCP
//! and tokio-rustls: the crates the status server is built on.

use std::io::{IsTerminal, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use serde_json::Value;
use vpcrouter_status::console::{status_text, Paint};

/// The longest a request may take, connection and TLS included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Where the daemon's status server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `https` when true.
    pub https: bool,
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path prefix (empty, or starting with `/`, no trailing `/`).
    pub prefix: String,
    /// `--http-token-file`.
    pub token_file: Option<PathBuf>,
    /// `--tls-ca`.
    pub tls_ca: Option<PathBuf>,
    /// `--tls-cert` and `--tls-key`: the client certificate a daemon started with
    /// `--tls-client-ca` demands.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl Target {
    /// The status server at `-a ADDRESS -p PORT` over HTTP; an unspecified address
    /// (`0.0.0.0`, `::`) means this machine.
    pub fn from_address(address: &str, port: u16) -> Target {
        let host = match address {
            "localhost" | "0.0.0.0" => "127.0.0.1".to_string(),
            "::" => "::1".to_string(),
            other => other.to_string(),
        };
        Target { https: false, host, port, prefix: String::new(), token_file: None, tls_ca: None, client_cert: None }
    }

    /// Parses `--url`: `http://HOST[:PORT][/PREFIX]` or `https://...`.
    pub fn from_url(url: &str) -> Result<Target, String> {
        let bad = |why: &str| format!("--url {url}: {why}; e.g. http://127.0.0.1:33289 or https://router-a:33289");
        let (https, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(bad("not an http:// or https:// URL"));
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if prefix.contains(['?', '#']) {
            return Err(bad("a query or fragment is not allowed"));
        }
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '[' in the host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse::<u16>().map_err(|_| bad("the port is not a number from 1 to 65535"))?,
                None if after.is_empty() => default_port,
                None => return Err(bad("junk after the host")),
            };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => {
                    (h.to_string(), p.parse::<u16>().map_err(|_| bad("the port is not a number from 1 to 65535"))?)
                }
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() || port == 0 || authority.contains('@') {
            return Err(bad("no host, port 0, or credentials in the URL (use --http-token-file)"));
        }
        Ok(Target { https, host, port, prefix: prefix.to_string(), token_file: None, tls_ca: None, client_cert: None })
    }

    /// `http://host:port` as the messages show it.
    pub fn base(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("{}://{host}:{}{}", if self.https { "https" } else { "http" }, self.port, self.prefix)
    }
}

/// What to ask the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `vpcrouter drain IP [--reason TEXT]`.
    Drain {
        /// The router.
        ip: Ipv4Addr,
        /// Why.
        reason: Option<String>,
    },
    /// `vpcrouter undrain IP`.
    Undrain {
        /// The router.
        ip: Ipv4Addr,
    },
    /// `vpcrouter drains [--json]`.
    List {
        /// Print the daemon's JSON instead of a table.
        json: bool,
    },
    /// `vpcrouter status [--json] [--watch [SECONDS]]`.
    Status {
        /// Print the daemon's JSON (`/status`) instead of the text view.
        json: bool,
        /// Redraw at this interval until interrupted.
        watch: Option<Duration>,
    },
}

/// A client subcommand, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCommand {
    /// The daemon.
    pub target: Target,
    /// The request.
    pub action: Action,
}

/// A status answer: code and body.
#[derive(Debug)]
struct Answer {
    /// The HTTP status: 2xx is success, the rest an error to explain.
    status: u16,
    /// The JSON body: the drains, or the daemon's `{"error": ...}`.
    body: String,
}

/// Runs the subcommand; returns the exit status (0: done; 1: the one-line error printed).
pub fn run(cmd: ClientCommand) -> i32 {
    if let Action::Status { watch: Some(every), .. } = cmd.action {
        watch(&cmd, every);
    }
    match execute(&cmd) {
        Ok((out, warning)) => {
            print!("{out}");
            if let Some(w) = warning {
                eprintln!("warning: {w}");
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// Sends the request; the text to print and a warning, or the error line.
fn execute(cmd: &ClientCommand) -> Result<(String, Option<String>), String> {
    let (method, path, body) = match &cmd.action {
        Action::Drain { ip, reason } => {
            let body = reason.as_ref().map(|r| serde_json::json!({ "reason": r }).to_string());
            ("POST", format!("/drain/{ip}"), body)
        }
        Action::Undrain { ip } => ("DELETE", format!("/drain/{ip}"), None),
        Action::List { .. } => ("GET", "/drain".to_string(), None),
        Action::Status { .. } => ("GET", "/status".to_string(), None),
    };
    let answer = request(&cmd.target, method, &path, body)?;
    let doc: Value = serde_json::from_str(&answer.body).map_err(|_| {
        format!(
            "{} answered HTTP {} with a body that is not JSON: {}",
            cmd.target.base(),
            answer.status,
            one_line(&answer.body)
        )
    })?;
    if !(200..300).contains(&answer.status) {
        let msg = doc["error"].as_str().map_or_else(|| one_line(&answer.body), str::to_string);
        return Err(format!("{method} {path}: HTTP {}: {msg}", answer.status));
    }
    let text = |k: &str| doc[k].as_str().unwrap_or_default().to_string();
    Ok(match &cmd.action {
        Action::Drain { ip, .. } => {
            let how = if doc["changed"] == true { "drained" } else { "already drained" };
            let reason = text("reason");
            let reason = if reason.is_empty() { String::new() } else { format!(" ({reason})") };
            let line = format!(
                "{ip}: {how} since {}{reason}, {}; its routes move to other healthy candidates\n",
                text("since"),
                scope_text(&text("scope"))
            );
            (line, doc["warning"].as_str().map(str::to_string))
        }
        Action::Undrain { ip } => {
            let line = if doc["changed"] == true {
                format!("{ip}: undrained; it is a candidate again (routes are not moved back)\n")
            } else {
                format!("{ip}: was not drained\n")
            };
            (line, None)
        }
        Action::List { json: true } => (format!("{}\n", vpcrouter_status::document::indented(&doc)), None),
        Action::List { json: false } => (table(&doc), None),
        Action::Status { json: true, .. } => (format!("{}\n", vpcrouter_status::document::indented(&doc)), None),
        Action::Status { json: false, .. } => (status_text(&doc, paint()), None),
    })
}

/// Colour when stdout is a terminal and `NO_COLOR` is unset or empty (no-color.org).
fn paint() -> Paint {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    if std::io::stdout().is_terminal() && !no_color {
        Paint::Ansi
    } else {
        Paint::Plain
    }
}

/// `status --watch`: the view redrawn every `every` until interrupted (a terminal's screen
/// is cleared first; elsewhere each view follows the last). A failed request shows its
/// one-line error in the view's place, and the next try comes at the next interval.
fn watch(cmd: &ClientCommand, every: Duration) -> ! {
    let terminal = std::io::stdout().is_terminal();
    loop {
        let view = match execute(cmd) {
            Ok((text, _)) => text,
            Err(e) => format!("error: {e}\n"),
        };
        let title = format!("every {:.1} s: vpcrouter status (Ctrl-C to stop)\n\n", every.as_secs_f64());
        let clear = if terminal { "\x1b[H\x1b[2J" } else { "" };
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "{clear}{title}{view}");
        if !terminal {
            let _ = writeln!(out);
        }
        let _ = out.flush();
        drop(out);
        std::thread::sleep(every);
    }
}

fn scope_text(scope: &str) -> &'static str {
    match scope {
        "cluster" => "in the whole cluster (etcd)",
        _ => "on this vpcrouter (state file)",
    }
}

/// The drains as a table: router, since, scope, CIDRs it is a candidate of, reason.
fn table(doc: &Value) -> String {
    let Some(list) = doc.as_array().filter(|l| !l.is_empty()) else { return "no router is drained\n".into() };
    let mut rows = vec![["ROUTER".to_string(), "SINCE".into(), "SCOPE".into(), "CIDRS".into(), "REASON".into()]];
    for d in list {
        let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
        let cidrs: Vec<&str> =
            d["cidrs"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        let cidrs = if cidrs.is_empty() { "(none in the spec)".to_string() } else { cidrs.join(",") };
        rows.push([s("ip"), s("since"), s("scope"), cidrs, s("reason")]);
    }
    let widths: Vec<usize> = (0..4).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (c, w) in widths.iter().enumerate() {
            line.push_str(&format!("{:<w$}  ", r[c], w = *w));
        }
        line.push_str(&r[4]);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn one_line(s: &str) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 200 {
        format!("{}…", s.chars().take(200).collect::<String>())
    } else {
        s
    }
}

/// One request, within [`TIMEOUT`].
fn request(target: &Target, method: &str, path: &str, body: Option<String>) -> Result<Answer, String> {
    let token = match &target.token_file {
        None => None,
        Some(f) => {
            let t = vpcrouter_server::auth::read_token_text("--http-token-file", f)?;
            let t = t.trim().to_string();
            if t.is_empty() {
                return Err(format!("--http-token-file {}: the file is empty", f.display()));
            }
            Some(t)
        }
    };
    let tls = if target.https { Some(tls_connector(target)?) } else { None };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let full_path = format!("{}{path}", target.prefix);
    rt.block_on(async {
        match tokio::time::timeout(TIMEOUT, send(target, tls, method, &full_path, token, body)).await {
            // A daemon with --tls-client-ca ends the connection of a client without a
            // certificate (with TLS 1.3, after the handshake).
            Ok(Err(e)) if target.https && target.client_cert.is_none() && !e.starts_with("--") => {
                Err(format!("{e} (if the daemon runs with --tls-client-ca, pass --tls-cert FILE --tls-key FILE)"))
            }
            Ok(r) => r,
            Err(_) => Err(format!("{} did not answer within {} s", target.base(), TIMEOUT.as_secs())),
        }
    })
}

fn tls_connector(target: &Target) -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &target.tls_ca {
        Some(ca) => {
            for c in vpcrouter_server::tls::certificates("--tls-ca", ca)? {
                roots.add(c).map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    let mut config = match &target.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert_file, key_file)) => {
            let certs = vpcrouter_server::tls::certificates("--tls-cert", cert_file)?;
            let key = vpcrouter_server::tls::private_key("--tls-key", key_file)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("--tls-cert {} with --tls-key {}: {e}", cert_file.display(), key_file.display()))?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn send(
    target: &Target,
    tls: Option<tokio_rustls::TlsConnector>,
    method: &str,
    path: &str,
    token: Option<String>,
    body: Option<String>,
) -> Result<Answer, String> {
    let base = target.base();
    let unreachable = |e: &dyn std::fmt::Display| {
        format!("cannot reach vpcrouter at {base}: {e} (is it running? give its status server with --url or -a/-p)")
    };
    let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port)).await.map_err(|e| unreachable(&e))?;
    let host = if target.host.contains(':') { format!("[{}]", target.host) } else { target.host.clone() };
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, format!("{host}:{}", target.port))
        .header(hyper::header::ACCEPT, "application/json")
        .header(hyper::header::USER_AGENT, format!("vpcrouter/{}", crate::VERSION));
    if let Some(t) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| format!("bad request: {e}"))?;
    match tls {
        None => exchange(TokioIo::new(tcp), req, &base).await,
        Some(connector) => {
            let name = ServerName::try_from(target.host.clone())
                .map_err(|e| format!("--url: '{}' is not a TLS server name: {e}", target.host))?;
            let stream = connector.connect(name, tcp).await.map_err(|e| format!("HTTPS to {base}: {e}"))?;
            exchange(TokioIo::new(stream), req, &base).await
        }
    }
}

async fn exchange<I>(io: I, req: hyper::Request<Full<Bytes>>, base: &str) -> Result<Answer, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("HTTP to {base}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let res = sender.send_request(req).await.map_err(|e| format!("HTTP to {base}: {e}"))?;
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.map_err(|e| format!("HTTP to {base}: reading the answer: {e}"))?;
    Ok(Answer { status, body: String::from_utf8_lossy(&body.to_bytes()).into_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_addresses_name_the_status_server() {
        let t = Target::from_url("https://router-a:8443/vpcrouter/").unwrap();
        assert_eq!((t.https, t.host.as_str(), t.port, t.prefix.as_str()), (true, "router-a", 8443, "/vpcrouter"));
        assert_eq!(t.base(), "https://router-a:8443/vpcrouter");
        let t = Target::from_url("http://[::1]:33289").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.base()), ("::1", 33289, "http://[::1]:33289".to_string()));
        assert_eq!(Target::from_url("http://10.0.0.1").unwrap().port, 80);
        assert_eq!(Target::from_url("https://10.0.0.1").unwrap().port, 443);
        for bad in
            ["10.0.0.1:33289", "ftp://x", "http://", "http://x:0", "http://x:99999", "http://u:p@x:1", "http://x/?a"]
        {
            assert!(Target::from_url(bad).is_err(), "{bad}");
        }
        assert_eq!(Target::from_address("0.0.0.0", 1).host, "127.0.0.1");
        assert_eq!(Target::from_address("localhost", 1).base(), "http://127.0.0.1:1");
        assert_eq!(Target::from_address("::", 2).base(), "http://[::1]:2");
    }

    #[test]
    fn drains_print_as_a_table() {
        assert_eq!(table(&serde_json::json!([])), "no router is drained\n");
        let doc = serde_json::json!([
            {"ip": "10.0.0.1", "since": "2026-12-01T20:00:00.000Z", "reason": "kernel update", "scope": "local", "cidrs": ["10.55.0.0/16", "10.56.0.0/16"]},
            {"ip": "10.0.0.22", "since": "2026-12-01T20:01:00.000Z", "reason": "", "scope": "local", "cidrs": []},
        ]);
        assert_eq!(
            table(&doc),
            "ROUTER     SINCE                     SCOPE  CIDRS                      REASON\n\
             10.0.0.1   2026-12-01T20:00:00.000Z  local  10.55.0.0/16,10.56.0.0/16  kernel update\n\
             10.0.0.22  2026-12-01T20:01:00.000Z  local  (none in the spec)\n"
        );
    }

    #[test]
    fn an_unreachable_daemon_is_one_line() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cmd =
            ClientCommand { target: Target::from_address("127.0.0.1", port), action: Action::List { json: false } };
        let e = execute(&cmd).unwrap_err();
        assert!(e.starts_with(&format!("cannot reach vpcrouter at http://127.0.0.1:{port}: ")), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}
