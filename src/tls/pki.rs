//! Generated certificates: the embedded default's local CA and server certificate, the
//! `hl7d cert dev-pki` set, and test certificates. ECDSA P-256 keys, PKCS#8 PEM.
//!
//! This is a convenience PKI for trials, tests and a first run, not a production CA: no
//! revocation, no policy, keys in plain files (mode 0600 on Unix). Its CAs sign end-entity
//! certificates only (`pathlen:0`), and the embedded default's and `dev-pki`'s CA only for
//! the names they issue for (name constraints), so a leaked CA key cannot vouch for any
//! other server.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints,
};
use thiserror::Error;
use time::OffsetDateTime;
use tracing::{info, warn};

use super::cert::{CertSummary, Digests};
use super::load;
use super::thumbprint::Thumbprint;
use crate::private_files;

/// Organisation name written into every generated certificate, so that no one mistakes
/// one for a production certificate.
pub const NOT_FOR_PRODUCTION: &str = "hl7d generated - not for production";

/// Validity of the embedded default's local CA.
const LOCAL_CA_DAYS: u64 = 10 * 365;
/// Validity of the embedded default's server certificate: 397 days, so that with the hour
/// of back-dating it stays within the 398 days that browsers and Apple platforms accept.
pub const LOCAL_SERVER_DAYS: u64 = 397;
/// The embedded default's server certificate is issued again at start when fewer than this
/// many days are left.
pub const LOCAL_SERVER_RENEW_DAYS: i64 = 30;
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
    /// An existing certificate could not be read back, or a key file is open to others.
    #[error(transparent)]
    Load(#[from] load::TlsError),
    /// The directory cannot be made private (0700).
    #[error(transparent)]
    Dir(#[from] private_files::PrivateDirError),
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
    /// A new self-signed CA that signs end-entity certificates only (`pathlen:0`), for any
    /// name.
    pub fn new(common_name: &str, validity: Validity) -> Result<Ca, PkiError> {
        Ca::generate(common_name, validity, None)
    }

    /// As [`Ca::new`], limited by name constraints to `names`: each DNS name (and its
    /// subdomains) and each IP address exactly. Clients that verify the chain refuse a
    /// certificate from this CA for any other name.
    pub fn for_names(common_name: &str, validity: Validity, names: &[String]) -> Result<Ca, PkiError> {
        let permitted_subtrees = names
            .iter()
            .map(|name| match name.parse::<IpAddr>() {
                Ok(ip) => GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(
                    ip,
                    if ip.is_ipv4() { 32 } else { 128 },
                )),
                // A wildcard SAN's subtree is its domain (which covers the subdomains).
                Err(_) => GeneralSubtree::DnsName(name.trim_start_matches("*.").to_owned()),
            })
            .collect();
        let constraints = NameConstraints { permitted_subtrees, excluded_subtrees: Vec::new() };
        Ca::generate(common_name, validity, Some(constraints))
    }

    fn generate(
        common_name: &str,
        validity: Validity,
        name_constraints: Option<NameConstraints>,
    ) -> Result<Ca, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.name_constraints = name_constraints;
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
///
/// `dir` is made private (0700, see [`private_files::secure_dir`]) and key files are 0600;
/// existing key files must pass [`load::check_key_permissions`]. Existing files are kept. The
/// server certificate is issued again by the existing CA when it is missing or has fewer than
/// [`LOCAL_SERVER_RENEW_DAYS`] days left, so senders that trust the CA need no change; a
/// missing CA means a new CA and a new server certificate.
pub fn ensure_local_tls(dir: &Path, hostname: Option<&str>) -> Result<LocalTls, PkiError> {
    private_files::secure_dir(dir)?;
    let ca_cert = dir.join("ca.pem");
    let ca_key = dir.join("ca.key");
    let server_cert = dir.join("server.pem");
    let server_key = dir.join("server.key");
    let mut created = Vec::new();
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    if let Some(host) = hostname.filter(|h| !h.is_empty() && !names.iter().any(|n| n == h)) {
        names.push(host.to_owned());
    }

    let (ca, new_ca) = if ca_cert.exists() && ca_key.exists() {
        load::check_key_permissions(&ca_key)?;
        (Ca::from_pem(&read_text(&ca_cert)?, &read_text(&ca_key)?)?, false)
    } else {
        let common_name = match hostname {
            Some(host) => format!("hl7d local CA ({host})"),
            None => "hl7d local CA".to_owned(),
        };
        let ca = Ca::for_names(&common_name, Validity::days_from_now(LOCAL_CA_DAYS), &names)?;
        write_file(&ca_cert, &ca.cert.cert_pem, false, true)?;
        write_file(&ca_key, &ca.cert.key_pem, true, true)?;
        created.extend([ca_cert.clone(), ca_key.clone()]);
        (ca, true)
    };
    let issue = new_ca || !server_cert.exists() || !server_key.exists() || {
        let leaf = load::certificates(&server_cert)?.remove(0);
        let summary = CertSummary::parse(&leaf).map_err(|error| load::TlsError::Certificate {
            path: server_cert.clone(),
            index: 1,
            error,
        })?;
        let days_left = summary.days_until_expiry(OffsetDateTime::now_utc().unix_timestamp());
        if days_left < LOCAL_SERVER_RENEW_DAYS {
            info!(path = %server_cert.display(), days_left,
                "embedded default: server certificate expires soon; issuing a new one from the local CA");
        } else {
            load::check_key_permissions(&server_key)?;
        }
        days_left < LOCAL_SERVER_RENEW_DAYS
    };
    if issue {
        let names = covered_names(&ca, names);
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

/// Checks, without writing anything, what [`ensure_local_tls`] needs of `dir`: that it is
/// (or can be created as) a private directory this process can write in, and that the key
/// files already there pass [`load::check_key_permissions`].
pub fn check_local_tls(dir: &Path) -> Result<(), PkiError> {
    private_files::check_dir(dir)?;
    for key in ["ca.key", "server.key"] {
        let path = dir.join(key);
        if path.exists() {
            load::check_key_permissions(&path)?;
        }
    }
    Ok(())
}

/// The names among `names` that `ca`'s name constraints permit (all of them for a CA
/// without constraints). A certificate with one name outside them would be refused by
/// clients for every name, so a host name the CA was not made for is left out, with a warning.
fn covered_names(ca: &Ca, names: Vec<String>) -> Vec<String> {
    let Some(permitted) = permitted_names(&ca.cert.der) else {
        return names;
    };
    let (covered, left_out): (Vec<String>, Vec<String>) =
        names.into_iter().partition(|name| permitted.contains(&canonical_name(name)));
    if !left_out.is_empty() {
        warn!(left_out = %left_out.join(", "),
            "the local CA was made for other names: the server certificate leaves these out \
             (delete ca.pem and ca.key for a new CA; senders must then trust the new ca.pem)");
    }
    covered
}

/// The DNS names (lower case) and single IP addresses in a CA certificate's permitted
/// subtrees; `None` without name constraints.
fn permitted_names(ca_der: &[u8]) -> Option<Vec<String>> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(ca_der).ok()?;
    let constraints = cert.name_constraints().ok()??.value;
    let subtrees = constraints.permitted_subtrees.as_ref()?;
    let names = subtrees
        .iter()
        .filter_map(|subtree| match &subtree.base {
            GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
            GeneralName::IPAddress(bytes) if bytes.len() == 8 && bytes[4..] == [0xFF; 4] => {
                let octets: [u8; 4] = bytes[..4].try_into().ok()?;
                Some(IpAddr::from(octets).to_string())
            }
            GeneralName::IPAddress(bytes) if bytes.len() == 32 && bytes[16..] == [0xFF; 16] => {
                let octets: [u8; 16] = bytes[..16].try_into().ok()?;
                Some(IpAddr::from(octets).to_string())
            }
            _ => None,
        })
        .collect();
    Some(names)
}

fn canonical_name(name: &str) -> String {
    match name.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => name.to_ascii_lowercase(),
    }
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
    private_files::create_dir_all(out).map_err(|source| PkiError::Io { path: out.to_owned(), source })?;
    let validity = Validity::days_from_now(DEV_DAYS);
    let mut server_names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    for name in extra_sans {
        if !server_names.contains(name) {
            server_names.push(name.clone());
        }
    }
    let ca = Ca::for_names("hl7d development CA (NOT FOR PRODUCTION)", validity, &server_names)?;
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

/// Writes `contents`; `secret` files get mode 0600 whatever the umask (see
/// [`private_files::write`]), certificates 0644. Without `overwrite`, an existing file is an
/// error.
fn write_file(path: &Path, contents: &str, secret: bool, overwrite: bool) -> Result<(), PkiError> {
    let result = if secret {
        private_files::write(path, contents.as_bytes(), overwrite)
    } else {
        write_public(path, contents.as_bytes(), overwrite)
    };
    result.map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists => PkiError::Exists { path: path.to_owned() },
        _ => PkiError::Io { path: path.to_owned(), source },
    })
}

fn write_public(path: &Path, contents: &[u8], overwrite: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    private_files::open_for_write(path, 0o644, overwrite)?.write_all(contents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::cert::CertSummary;

    const DAY: i64 = 86_400;

    #[test]
    fn local_tls_is_generated_once_and_renewed_from_the_same_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("local");
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
    }

    /// pathlen, permitted subtrees (as "DNS:name" / "IP:addr/mask") and excluded subtrees
    /// of a CA certificate.
    fn ca_constraints(der: &[u8]) -> (Option<u32>, Vec<String>, usize) {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
        let basic = cert.basic_constraints().unwrap().expect("basicConstraints").value;
        assert!(basic.ca);
        let constraints = cert.name_constraints().unwrap().expect("nameConstraints");
        assert!(constraints.critical);
        let permitted = constraints.value.permitted_subtrees.as_ref().expect("permitted subtrees");
        let permitted = permitted
            .iter()
            .map(|subtree| match &subtree.base {
                GeneralName::DNSName(name) => format!("DNS:{name}"),
                GeneralName::IPAddress(bytes) => {
                    let (addr, mask) = bytes.split_at(bytes.len() / 2);
                    format!("IP:{addr:02x?}/{mask:02x?}")
                }
                other => panic!("unexpected subtree {other:?}"),
            })
            .collect();
        let excluded = constraints.value.excluded_subtrees.as_ref().map_or(0, Vec::len);
        (basic.path_len_constraint, permitted, excluded)
    }

    fn leaf(path: &Path) -> CertSummary {
        CertSummary::parse(&load::certificates(path).unwrap()[0]).unwrap()
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    #[cfg(unix)]
    fn local_ca_is_limited_to_its_names_and_the_server_certificate_to_398_days() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("limits");
        let local = ensure_local_tls(&dir, Some("hl7-box.example")).unwrap();
        let ca_der = load::certificates(&local.ca_cert).unwrap().remove(0);
        let (pathlen, permitted, excluded) = ca_constraints(&ca_der);
        assert_eq!(pathlen, Some(0));
        let v4 = format!("IP:{:02x?}/{:02x?}", [127u8, 0, 0, 1], [0xFFu8; 4]);
        let mut one = [0u8; 16];
        one[15] = 1;
        let v6 = format!("IP:{one:02x?}/{:02x?}", [0xFFu8; 16]);
        assert_eq!(permitted, ["DNS:localhost".to_owned(), v4, v6, "DNS:hl7-box.example".to_owned()]);
        assert_eq!(excluded, 0);

        let server = leaf(&local.server_cert);
        let span = server.not_after - server.not_before;
        assert!(span <= 398 * DAY, "{} days", span / DAY);
        assert!(span >= 397 * DAY, "{} days", span / DAY);

        // Files and directory are private, whatever the umask; an opened-up directory is
        // tightened on the next start.
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&local.server_key), 0o600);
        assert_eq!(mode(&dir.join("ca.key")), 0o600);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        ensure_local_tls(&dir, Some("hl7-box.example")).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    /// The constraints do what they say for a client that verifies the chain (rustls).
    #[test]
    fn clients_refuse_a_certificate_from_the_local_ca_for_another_name() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("constrained");
        let local = ensure_local_tls(&dir, Some("hl7-box.example")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(load::certificates(&local.ca_cert).unwrap().remove(0)).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            crate::tls::provider(),
        )
        .build()
        .unwrap();
        let verify = |der: &CertificateDer<'_>, name: &str| {
            let name = ServerName::try_from(name.to_owned()).unwrap();
            verifier.verify_server_cert(der, &[], &name, &[], UnixTime::now())
        };
        let server = load::certificates(&local.server_cert).unwrap().remove(0);
        for name in ["localhost", "127.0.0.1", "::1", "hl7-box.example"] {
            assert!(verify(&server, name).is_ok(), "{name}");
        }
        let ca = Ca::from_pem(&read_text(&local.ca_cert).unwrap(), &read_text(&dir.join("ca.key")).unwrap())
            .unwrap();
        let names = ["bank.example".to_owned()];
        let foreign = ca.issue(CertKind::Server, "bank", &names, Validity::days_from_now(30)).unwrap();
        let error = verify(&CertificateDer::from(foreign.der), "bank.example").unwrap_err();
        assert!(error.to_string().contains("NameConstraint"), "{error}");
    }

    #[test]
    #[cfg(unix)]
    fn a_server_certificate_with_less_than_30_days_left_is_renewed_at_start() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("renew");
        let first = ensure_local_tls(&dir, None).unwrap();
        let ca_pem = read_text(&first.ca_cert).unwrap();
        let ca = Ca::from_pem(&ca_pem, &read_text(&dir.join("ca.key")).unwrap()).unwrap();
        let names = ["localhost".to_owned()];
        let put_leaf = |days| {
            let issued =
                ca.issue(CertKind::Server, "localhost", &names, Validity::days_from_now(days)).unwrap();
            write_file(&first.server_cert, &issued.cert_pem, false, true).unwrap();
            write_file(&first.server_key, &issued.key_pem, true, true).unwrap();
            issued.digests().sha256()
        };

        // 31 days left: kept.
        let kept = put_leaf(31);
        let again = ensure_local_tls(&dir, None).unwrap();
        assert!(again.created.is_empty(), "{:?}", again.created);
        assert_eq!(again.server_thumbprint, kept);

        // 29 days left: issued again by the same CA, for the full term.
        let expiring = put_leaf(29);
        let renewed = ensure_local_tls(&dir, None).unwrap();
        assert_eq!(renewed.created, [first.server_cert.clone(), first.server_key.clone()]);
        assert_ne!(renewed.server_thumbprint, expiring);
        let server = leaf(&renewed.server_cert);
        let now = OffsetDateTime::now_utc().unix_timestamp();
        assert!(server.days_until_expiry(now) >= LOCAL_SERVER_DAYS as i64 - 1);
        assert_eq!(read_text(&renewed.ca_cert).unwrap(), ca_pem);
        assert_eq!(server.issuer, leaf(&renewed.ca_cert).subject);
        assert_eq!(mode(&renewed.server_key), 0o600);
    }

    #[test]
    fn a_new_host_name_outside_the_local_ca_is_left_out_of_a_renewed_certificate() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("rename");
        let first = ensure_local_tls(&dir, Some("old-name.example")).unwrap();
        std::fs::remove_file(&first.server_cert).unwrap();
        let renewed = ensure_local_tls(&dir, Some("new-name.example")).unwrap();
        assert_eq!(leaf(&renewed.server_cert).sans, ["DNS:localhost", "IP:127.0.0.1", "IP:::1"]);
    }

    #[test]
    #[cfg(unix)]
    fn a_local_ca_key_that_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca-key-mode");
        ensure_local_tls(&dir, None).unwrap();
        let ca_key = dir.join("ca.key");
        std::fs::set_permissions(&ca_key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = ensure_local_tls(&dir, None).unwrap_err().to_string();
        assert!(error.contains(&format!("chmod 600 {}", ca_key.display())), "{error}");
    }

    #[test]
    fn dev_pki_refuses_to_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dev");
        let pki = dev_pki(&dir, &["lab.example".to_owned()], false).unwrap();
        assert_eq!(pki.files.len(), 7);
        assert!(pki.server_names.contains(&"lab.example".to_owned()));
        assert!(matches!(dev_pki(&dir, &[], false), Err(PkiError::Exists { .. })));
        assert!(dev_pki(&dir, &[], true).is_ok());
        let readme = std::fs::read_to_string(dir.join("README.txt")).unwrap();
        assert!(readme.contains("NOT FOR PRODUCTION"));
        let ca_der = load::certificates(&dir.join("ca.pem")).unwrap().remove(0);
        let (pathlen, permitted, _) = ca_constraints(&ca_der);
        assert_eq!(pathlen, Some(0));
        assert_eq!(permitted[0], "DNS:localhost");
        assert_eq!(permitted.len(), 3, "{permitted:?}");
    }
}
