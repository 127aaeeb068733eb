//! HTTPS for the status server (`--tls-cert`, `--tls-key`, `--tls-client-ca`): rustls with
//! the aws-lc-rs provider, TLS 1.2 and 1.3. With `--tls-client-ca`, clients must present a
//! certificate signed by that CA. The files are re-read on SIGHUP; a failed re-read keeps
//! the configuration in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use vpcrouter_plugin_api::sync::{read, write};

/// The PEM files of the TLS options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `--tls-cert`: the server certificate chain.
    pub cert: PathBuf,
    /// `--tls-key`: its private key.
    pub key: PathBuf,
    /// `--tls-client-ca`: clients need a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

/// The TLS configuration in force; new connections use the latest one.
pub struct TlsStore {
    /// The PEM files, re-read on SIGHUP.
    files: TlsFiles,
    /// The configuration built from them; a reload swaps it, connections keep the one
    /// they started with.
    config: RwLock<Arc<ServerConfig>>,
}

impl TlsStore {
    /// Loads the files; errors name the flag and the path.
    pub fn load(files: TlsFiles) -> Result<TlsStore, String> {
        let config = server_config(&files)?;
        Ok(TlsStore { files, config: RwLock::new(config) })
    }

    /// Re-reads the files; on failure the old configuration stays.
    pub fn reload(&self) -> Result<(), String> {
        let config = server_config(&self.files)?;
        *write(&self.config) = config;
        Ok(())
    }

    /// The configuration for a new connection.
    pub fn config(&self) -> Arc<ServerConfig> {
        read(&self.config).clone()
    }

    /// True when clients must present a certificate.
    pub fn requires_client_certificates(&self) -> bool {
        self.files.client_ca.is_some()
    }
}

/// The largest PEM file read: a certificate chain or a key is a few KiB, a CA bundle a few
/// hundred (the system's is about 220 KiB).
pub const MAX_PEM_FILE: u64 = 1 << 20;

/// The content of the PEM file of option `flag`: a regular file (a FIFO or a device is
/// refused at once) of at most [`MAX_PEM_FILE`] bytes.
fn read_file(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    vpcrouter_plugin_api::file::read_file(path, MAX_PEM_FILE).map_err(|e| crate::option_file_error(flag, path, e))
}

/// The PEM certificates in `path` (the file of option `flag`, for messages).
pub fn certificates(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_file(flag, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{flag} {}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{flag} {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it", path.display()));
    }
    Ok(certs)
}

/// The PEM private key in `path` (the file of option `flag`, for messages).
pub fn private_key(flag: &str, path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_file(flag, path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{flag} {}: no PEM private key in it ({e})", path.display()))
}

/// A rustls server configuration from the files.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs = certificates("--tls-cert", &files.cert)?;
    let key = private_key("--tls-key", &files.key)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("--tls-client-ca", ca)? {
                roots.add(cert).map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("--tls-cert {} with --tls-key {}: {e}", files.cert.display(), files.key.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn fifos_devices_and_huge_files_are_refused_at_once_naming_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("cert.pem");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let huge = dir.path().join("bundle.pem");
        std::fs::write(&huge, vec![b'#'; (MAX_PEM_FILE + 1) as usize]).unwrap();
        let started = Instant::now();
        let e = certificates("--tls-cert", &fifo).unwrap_err();
        assert_eq!(
            e,
            format!(
                "--tls-cert: '{}' is a FIFO (named pipe), not a regular file: give the path of a regular file",
                fifo.display()
            )
        );
        let e = private_key("--tls-key", Path::new("/dev/zero")).unwrap_err();
        assert!(e.starts_with("--tls-key: '/dev/zero' is a character device, not a regular file"), "{e}");
        let e = certificates("--tls-client-ca", &huge).unwrap_err();
        assert!(e.starts_with("--tls-client-ca: '") && e.contains("larger than the limit of 1 MiB"), "{e}");
        let files = TlsFiles { cert: fifo.clone(), key: fifo, client_ca: None };
        assert!(TlsStore::load(files).is_err());
        assert!(started.elapsed() < Duration::from_secs(1));
        let e = certificates("--tls-cert", &dir.path().join("missing.pem")).unwrap_err();
        assert!(e.contains("missing.pem: cannot read it: No such file"), "{e}");
    }
}
