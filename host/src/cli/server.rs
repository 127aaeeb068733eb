//! The status server's options: `-a/--address`, `-p/--port`, `--http-*`, `--tls-*`.

use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};
use vpcrouter_server::tls::TlsFiles;
use vpcrouter_server::ServerConfig;

use super::{check_address, CliError};

/// Help heading of the status server's security options.
const SECURITY_HEADING: &str = "Status server security";

/// Adds the status server's options.
pub(super) fn args(cmd: Command) -> Command {
    cmd
        .arg(Arg::new("address").short('a').long("address").value_name("ADDR").default_value("localhost")
            .help("address to listen on for HTTP requests"))
        .arg(Arg::new("port").short('p').long("port").value_name("PORT").default_value("33289")
            .value_parser(clap::value_parser!(u16).range(1..))
            .help("port to listen on for HTTP requests"))
        .arg(Arg::new("http_token_file").long("http-token-file").value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf)).help_heading(SECURITY_HEADING)
            .help("require 'Authorization: Bearer <token>' for requests that change state (all but GET and HEAD); the token is this file's content, re-read on SIGHUP"))
        .arg(Arg::new("http_auth_all").long("http-auth-all").action(ArgAction::SetTrue).requires("http_token_file")
            .help_heading(SECURITY_HEADING)
            .help("require the token for every request, read-only ones (/status, /metrics) included"))
        .arg(Arg::new("http_allow_unauthenticated").long("http-allow-unauthenticated").action(ArgAction::SetTrue)
            .conflicts_with("http_token_file").help_heading(SECURITY_HEADING)
            .help("serve state-changing endpoints (POST /route_spec) on a non-loopback address without authentication, as vpc-router did"))
        .arg(Arg::new("tls_cert").long("tls-cert").value_name("FILE").requires("tls_key")
            .value_parser(clap::value_parser!(PathBuf)).help_heading(SECURITY_HEADING)
            .help("serve HTTPS with this PEM certificate chain (with --tls-key); re-read on SIGHUP"))
        .arg(Arg::new("tls_key").long("tls-key").value_name("FILE").requires("tls_cert")
            .value_parser(clap::value_parser!(PathBuf)).help_heading(SECURITY_HEADING)
            .help("the PEM private key of --tls-cert"))
        .arg(Arg::new("tls_client_ca").long("tls-client-ca").value_name("FILE").requires("tls_cert")
            .value_parser(clap::value_parser!(PathBuf)).help_heading(SECURITY_HEADING)
            .help("require client certificates signed by this PEM CA (needs --tls-cert)"))
}

/// The status server's options, checked.
pub(super) fn config(m: &ArgMatches) -> Result<ServerConfig, CliError> {
    Ok(ServerConfig {
        address: check_address(m.get_one::<String>("address").map(String::as_str).unwrap_or("localhost"))?,
        port: m.get_one::<u16>("port").copied().unwrap_or(33289),
        token_file: m.get_one::<PathBuf>("http_token_file").cloned(),
        auth_all: m.get_flag("http_auth_all"),
        allow_unauthenticated: m.get_flag("http_allow_unauthenticated"),
        tls: m.get_one::<PathBuf>("tls_cert").zip(m.get_one::<PathBuf>("tls_key")).map(|(cert, key)| TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: m.get_one::<PathBuf>("tls_client_ca").cloned(),
        }),
    })
}
