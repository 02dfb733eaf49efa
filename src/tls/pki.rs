//! Generated certificates: the embedded default's local CA and server certificate, the
//! `hl7d cert dev-pki` set, and test certificates. ECDSA P-256 keys, PKCS#8 PEM.
//!
//! This is a convenience PKI for trials, tests and a first run, not a production CA: no
//! revocation, no policy, keys in plain files (mode 0600 on Unix).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use thiserror::Error;
use time::OffsetDateTime;

use super::cert::Digests;
use super::load;
use crate::config::Thumbprint;

/// Organisation name written into every generated certificate, so that no one mistakes
/// one for a production certificate.
pub const NOT_FOR_PRODUCTION: &str = "hl7d generated - not for production";

/// Validity of the embedded default's local CA.
const LOCAL_CA_DAYS: u64 = 10 * 365;
/// Validity of the embedded default's server certificate (825 days: the longest that
/// Apple platforms accept for a server certificate).
const LOCAL_SERVER_DAYS: u64 = 825;
/// Validity of `dev-pki` certificates.
const DEV_DAYS: u64 = 365;

/// Failure to generate or write certificates.
#[derive(Debug, Error)]
pub enum PkiError {
    /// rcgen refused the parameters or a key.
    #[error("certificate generation failed")]
    Generate(#[from] rcgen::Error),
    /// A file could not be written or read.
    #[error("{}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file exists and overwriting was not asked for.
    #[error("{} already exists (use --force to overwrite)", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// An existing certificate could not be read back.
    #[error(transparent)]
    Load(#[from] load::TlsError),
}

/// Kind of end-entity certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKind {
    /// serverAuth extended key usage; names go into the SANs.
    Server,
    /// clientAuth extended key usage.
    Client,
}

/// When a generated certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// notBefore.
    pub not_before: OffsetDateTime,
    /// notAfter.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From one hour ago (tolerating clock skew) for `days` days.
    pub fn days_from_now(days: u64) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(days * 24 * 3600),
        }
    }
}

/// A generated certificate and its key, as PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// `BEGIN CERTIFICATE` PEM.
    pub cert_pem: String,
    /// `BEGIN PRIVATE KEY` (PKCS#8) PEM.
    pub key_pem: String,
    /// The certificate's DER bytes.
    pub der: Vec<u8>,
}

impl Issued {
    /// Thumbprints of the certificate.
    pub fn digests(&self) -> Digests {
        Digests::of(&self.der)
    }
}

/// A certificate authority that can issue certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's own certificate and key.
    pub cert: Issued,
}

impl Ca {
    /// A new self-signed CA.
    pub fn new(common_name: &str, validity: Validity) -> Result<Ca, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let cert = params.self_signed(&key)?;
        let issued = Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() };
        Ok(Ca { issuer: Issuer::new(params, key), cert: issued })
    }

    /// A CA from its PEM certificate and PKCS#8 PEM key (as written by [`Ca::new`]).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let der = load::certificates_from_bytes(Path::new("CA certificate"), cert_pem.as_bytes())?
            .remove(0)
            .to_vec();
        let issuer = Issuer::from_ca_cert_pem(cert_pem, KeyPair::from_pem(key_pem)?)?;
        Ok(Ca { issuer, cert: Issued { cert_pem: cert_pem.to_owned(), key_pem: key_pem.to_owned(), der } })
    }

    /// Issues an end-entity certificate with a fresh key. For a server, `names` become the
    /// SANs (IP addresses as IP SANs) and the first one the common name.
    pub fn issue(
        &self,
        kind: CertKind,
        common_name: &str,
        names: &[String],
        validity: Validity,
    ) -> Result<Issued, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = name(common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match kind {
            CertKind::Server => ExtendedKeyUsagePurpose::ServerAuth,
            CertKind::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.use_authority_key_identifier_extension = true;
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() })
    }
}

/// The embedded default's TLS files.
#[derive(Debug, Clone)]
pub struct LocalTls {
    /// The local CA certificate: what senders trust.
    pub ca_cert: PathBuf,
    /// The server certificate.
    pub server_cert: PathBuf,
    /// The server key.
    pub server_key: PathBuf,
    /// SHA-256 thumbprint of the server certificate: what senders may pin.
    pub server_thumbprint: Thumbprint,
    /// Files written by this call (empty when everything already existed).
    pub created: Vec<PathBuf>,
}

/// Makes sure `dir` holds a local CA (`ca.pem`, `ca.key`) and a server certificate signed
/// by it (`server.pem`, `server.key`) for `localhost`, `127.0.0.1`, `::1` and `hostname`.
/// Existing files are kept; a missing server certificate is issued again by the existing
/// CA (so deleting `server.*` renews it without senders having to trust a new CA); a
/// missing CA means a new CA and a new server certificate.
pub fn ensure_local_tls(dir: &Path, hostname: Option<&str>) -> Result<LocalTls, PkiError> {
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Io { path: dir.to_owned(), source })?;
    let ca_cert = dir.join("ca.pem");
    let ca_key = dir.join("ca.key");
    let server_cert = dir.join("server.pem");
    let server_key = dir.join("server.key");
    let mut created = Vec::new();

    let (ca, new_ca) = if ca_cert.exists() && ca_key.exists() {
        (Ca::from_pem(&read_text(&ca_cert)?, &read_text(&ca_key)?)?, false)
    } else {
        let common_name = match hostname {
            Some(host) => format!("hl7d local CA ({host})"),
            None => "hl7d local CA".to_owned(),
        };
        let ca = Ca::new(&common_name, Validity::days_from_now(LOCAL_CA_DAYS))?;
        write_file(&ca_cert, &ca.cert.cert_pem, false, true)?;
        write_file(&ca_key, &ca.cert.key_pem, true, true)?;
        created.extend([ca_cert.clone(), ca_key.clone()]);
        (ca, true)
    };
    if new_ca || !server_cert.exists() || !server_key.exists() {
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
        if let Some(host) = hostname.filter(|h| !h.is_empty() && !names.iter().any(|n| n == h)) {
            names.push(host.to_owned());
        }
        let common_name = names.last().cloned().unwrap_or_default();
        let server =
            ca.issue(CertKind::Server, &common_name, &names, Validity::days_from_now(LOCAL_SERVER_DAYS))?;
        write_file(&server_key, &server.key_pem, true, true)?;
        write_file(&server_cert, &server.cert_pem, false, true)?;
        created.extend([server_cert.clone(), server_key.clone()]);
    }
    let leaf = load::certificates(&server_cert)?.remove(0);
    let server_thumbprint = Digests::of(&leaf).sha256();
    Ok(LocalTls { ca_cert, server_cert, server_key, server_thumbprint, created })
}

/// The `hl7d cert dev-pki` output.
#[derive(Debug, Clone)]
pub struct DevPki {
    /// Files written, in order.
    pub files: Vec<PathBuf>,
    /// Thumbprints of the server certificate.
    pub server: Digests,
    /// Thumbprints of the client certificate.
    pub client: Digests,
    /// The server certificate's SANs.
    pub server_names: Vec<String>,
}

/// Writes a CA, a server certificate (SANs `localhost`, `127.0.0.1`, `::1` and `extra_sans`)
/// and a client certificate, each with its key, plus a README saying they are not for
/// production, into `out`. Refuses to overwrite unless `force`.
pub fn dev_pki(out: &Path, extra_sans: &[String], force: bool) -> Result<DevPki, PkiError> {
    std::fs::create_dir_all(out).map_err(|source| PkiError::Io { path: out.to_owned(), source })?;
    let validity = Validity::days_from_now(DEV_DAYS);
    let ca = Ca::new("hl7d development CA (NOT FOR PRODUCTION)", validity)?;
    let mut server_names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    for name in extra_sans {
        if !server_names.contains(name) {
            server_names.push(name.clone());
        }
    }
    let server =
        ca.issue(CertKind::Server, "hl7d development server (NOT FOR PRODUCTION)", &server_names, validity)?;
    let client = ca.issue(CertKind::Client, "hl7d development client (NOT FOR PRODUCTION)", &[], validity)?;

    let readme = format!(
        "hl7d development PKI - NOT FOR PRODUCTION\n\
         \n\
         Generated by `hl7d cert dev-pki` for trials and tests. The private keys are in\n\
         plain files and there is no revocation: never use these certificates for real\n\
         patient data.\n\
         \n\
         ca.pem, ca.key          CA that signed both certificates (senders trust ca.pem)\n\
         server.pem, server.key  [listener.tls] cert and key; SANs: {}\n\
         client.pem, client.key  a sender's certificate for mutual TLS\n\
         \n\
         client thumbprint (for client_thumbprints): {}\n\
         server thumbprint: {}\n",
        server_names.join(", "),
        client.digests().sha256(),
        server.digests().sha256(),
    );
    let files: [(&str, &str, bool); 7] = [
        ("ca.pem", &ca.cert.cert_pem, false),
        ("ca.key", &ca.cert.key_pem, true),
        ("server.pem", &server.cert_pem, false),
        ("server.key", &server.key_pem, true),
        ("client.pem", &client.cert_pem, false),
        ("client.key", &client.key_pem, true),
        ("README.txt", &readme, false),
    ];
    if !force {
        if let Some((name, _, _)) = files.iter().find(|(name, _, _)| out.join(name).exists()) {
            return Err(PkiError::Exists { path: out.join(name) });
        }
    }
    let mut written = Vec::new();
    for (name, contents, secret) in files {
        let path = out.join(name);
        write_file(&path, contents, secret, force)?;
        written.push(path);
    }
    Ok(DevPki { files: written, server: server.digests(), client: client.digests(), server_names })
}

/// The machine's host name, when it is usable as a DNS SAN.
pub fn hostname() -> Option<String> {
    let name = gethostname::gethostname().into_string().ok()?;
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && name != "localhost";
    valid.then_some(name)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, NOT_FOR_PRODUCTION);
    name
}

fn read_text(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io { path: path.to_owned(), source })
}

/// Writes `contents`; `secret` files get mode 0600 on Unix. Without `overwrite`, an
/// existing file is an error.
fn write_file(path: &Path, contents: &str, secret: bool, overwrite: bool) -> Result<(), PkiError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if overwrite {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists => PkiError::Exists { path: path.to_owned() },
        _ => PkiError::Io { path: path.to_owned(), source },
    })?;
    file.write_all(contents.as_bytes()).map_err(|source| PkiError::Io { path: path.to_owned(), source })?;
    // An existing key file keeps its mode on truncate: tighten it explicitly.
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|source| PkiError::Io { path: path.to_owned(), source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::cert::CertSummary;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hl7d-pki-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn local_tls_is_generated_once_and_renewed_from_the_same_ca() {
        let dir = temp_dir("local");
        let first = ensure_local_tls(&dir, Some("hl7-box.example")).unwrap();
        assert_eq!(first.created.len(), 4);
        let summary = CertSummary::parse(&load::certificates(&first.server_cert).unwrap()[0]).unwrap();
        assert_eq!(summary.sans, ["DNS:localhost", "IP:127.0.0.1", "IP:::1", "DNS:hl7-box.example"]);
        assert!(summary.subject.contains(NOT_FOR_PRODUCTION));
        let ca_before = std::fs::read(&first.ca_cert).unwrap();

        let second = ensure_local_tls(&dir, Some("hl7-box.example")).unwrap();
        assert!(second.created.is_empty());
        assert_eq!(second.server_thumbprint, first.server_thumbprint);

        std::fs::remove_file(&first.server_cert).unwrap();
        let third = ensure_local_tls(&dir, Some("hl7-box.example")).unwrap();
        assert_eq!(third.created.len(), 2);
        assert_ne!(third.server_thumbprint, first.server_thumbprint);
        assert_eq!(std::fs::read(&third.ca_cert).unwrap(), ca_before);
        let renewed = CertSummary::parse(&load::certificates(&third.server_cert).unwrap()[0]).unwrap();
        assert_eq!(
            renewed.issuer,
            CertSummary::parse(&load::certificates(&third.ca_cert).unwrap()[0]).unwrap().subject
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&third.server_key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dev_pki_refuses_to_overwrite() {
        let dir = temp_dir("dev");
        let pki = dev_pki(&dir, &["lab.example".to_owned()], false).unwrap();
        assert_eq!(pki.files.len(), 7);
        assert!(pki.server_names.contains(&"lab.example".to_owned()));
        assert!(matches!(dev_pki(&dir, &[], false), Err(PkiError::Exists { .. })));
        assert!(dev_pki(&dir, &[], true).is_ok());
        let readme = std::fs::read_to_string(dir.join("README.txt")).unwrap();
        assert!(readme.contains("NOT FOR PRODUCTION"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
