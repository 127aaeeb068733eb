//! Certificates made by the tests (rcgen, aws-lc-rs): a CA, server and client certificates
//! signed by it, an expired one, and a second CA nobody trusts. Written as PEM files into a
//! directory the test owns, for etcd (`--cert-file`, `--trusted-ca-file`) and vpcrouter
//! (`--etcd-cacert`, `--tls-cert`, ...).

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use time::OffsetDateTime;

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Pem {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
}

/// A certificate authority that signs the test's certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM file), to trust.
    pub cert: PathBuf,
    dir: PathBuf,
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A TLS server (etcd, the status server).
    Server,
    /// A TLS client (vpcrouter talking to etcd, curl talking to the status server).
    Client,
    /// Both: etcd's peer and client certificates are often one.
    Both,
}

impl Ca {
    /// A new CA named `name`, its certificate written to `dir/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<Ca> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let path = dir.join(format!("{name}-ca.pem"));
        write(&path, &cert.pem())?;
        Ok(Ca { issuer: Issuer::new(params, key), cert: path, dir: dir.to_path_buf() })
    }

    /// A certificate for `names` (DNS names or IP addresses), valid from an hour ago for a
    /// day, written to `dir/<file>.pem` and `dir/<file>-key.pem`.
    pub fn issue(&self, file: &str, common_name: &str, names: &[&str], usage: Usage) -> anyhow::Result<Pem> {
        let now = time_now();
        self.issue_valid(file, common_name, names, usage, now - HOUR, now + 24 * HOUR)
    }

    /// Like [`Ca::issue`], but the certificate expired an hour ago.
    pub fn issue_expired(&self, file: &str, common_name: &str, names: &[&str], usage: Usage) -> anyhow::Result<Pem> {
        let now = time_now();
        self.issue_valid(file, common_name, names, usage, now - 48 * HOUR, now - HOUR)
    }

    fn issue_valid(
        &self,
        file: &str,
        common_name: &str,
        names: &[&str],
        usage: Usage,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> anyhow::Result<Pem> {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.not_before = not_before;
        params.not_after = not_after;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = match usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Both => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        };
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let pem = Pem { cert: self.dir.join(format!("{file}.pem")), key: self.dir.join(format!("{file}-key.pem")) };
        write(&pem.cert, &cert.pem())?;
        write(&pem.key, &key.serialize_pem())?;
        Ok(pem)
    }
}

const HOUR: time::Duration = time::Duration::HOUR;

fn time_now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Writes `text` to `path`, readable by the owner only (private keys among them).
fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_verifies_the_chain_and_sees_the_expired_one() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new(dir.path(), "t").unwrap();
        let good = ca.issue("server", "etcd", &["localhost", "127.0.0.1"], Usage::Server).unwrap();
        let old = ca.issue_expired("old", "vpcrouter", &[], Usage::Client).unwrap();
        let verify = |p: &Pem| {
            std::process::Command::new("openssl")
                .args(["verify", "-CAfile"])
                .arg(&ca.cert)
                .arg(&p.cert)
                .output()
                .unwrap()
        };
        let ok = verify(&good);
        assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));
        let expired = verify(&old);
        assert!(!expired.status.success());
        assert!(String::from_utf8_lossy(&expired.stderr).contains("certificate has expired"), "{expired:?}");
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&good.key).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
    }
}
