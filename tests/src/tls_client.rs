//! A blocking HTTPS client (rustls, aws-lc-rs) for the status server's TLS tests: trusts one
//! CA, optionally presents a client certificate; one request per connection.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::certs::Pem;
use crate::http_client::{self, Response};

/// A client configuration trusting `ca`, presenting `client` if given.
pub fn config(ca: &Path, client: Option<&Pem>) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).context("CA file")? {
        roots.add(cert.context("CA certificate")?)?;
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let certs = CertificateDer::pem_file_iter(&pem.cert)?.collect::<Result<Vec<_>, _>>()?;
            builder.with_client_auth_cert(certs, PrivateKeyDer::from_pem_file(&pem.key)?)?
        }
    };
    Ok(Arc::new(config))
}

/// One HTTPS request to `localhost` (127.0.0.1) on `port`; reads until the server closes.
pub fn request(
    config: &Arc<ClientConfig>,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<Response> {
    let tcp = http_client::connect(port)?;
    let conn = ClientConnection::new(config.clone(), ServerName::try_from("localhost")?.to_owned())?;
    let mut tls = StreamOwned::new(conn, tcp);
    let head = http_client::request_head(method, path, &format!("localhost:{port}"), headers, body.len());
    tls.write_all(head.as_bytes()).context("TLS write")?;
    tls.write_all(body).context("TLS write")?;
    tls.flush()?;
    // A close without close_notify after a complete answer ends it too.
    http_client::parse(&http_client::read_until_closed(&mut tls, std::io::ErrorKind::UnexpectedEof)?)
}

/// `GET path` over HTTPS.
pub fn get(config: &Arc<ClientConfig>, port: u16, path: &str) -> anyhow::Result<Response> {
    request(config, port, "GET", path, &[], b"")
}
