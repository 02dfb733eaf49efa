//! Reading certificates and keys from files, with errors that name the file.
//!
//! Certificates may be PEM (one or more `BEGIN CERTIFICATE` blocks) or a single DER
//! certificate; keys are PEM in PKCS#8 (`BEGIN PRIVATE KEY`), PKCS#1 (`BEGIN RSA PRIVATE
//! KEY`) or SEC1 (`BEGIN EC PRIVATE KEY`) form.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use thiserror::Error;

use super::cert::{CertParseError, CertSummary};

/// A certificate or key file that cannot be used. Each message is complete on its own
/// (it names the file and includes the underlying error), because it goes whole into
/// reload reports and audit lines.
#[derive(Debug, Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The file holds no certificate.
    #[error("{}: no certificate found (expected PEM \"BEGIN CERTIFICATE\" blocks or one DER certificate)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A PEM block could not be decoded.
    #[error("{}: bad PEM: {detail}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        detail: String,
    },
    /// A certificate that does not parse as X.509.
    #[error("{}: certificate {index}: {error}", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// 1-based position in the file.
        index: usize,
        /// Why it does not parse.
        error: CertParseError,
    },
    /// The key file holds no private key.
    #[error("{}: no private key found (expected PEM PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// A private key file that other users can read (see [`check_key_permissions`]).
    #[error(
        "{}: permissions {mode:04o} are too open: a private key must not be readable by other users; \
         run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A private key the crypto provider cannot use.
    #[error("{}: unusable private key: {detail}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What the provider said.
        detail: String,
    },
    /// The private key does not belong to the certificate.
    #[error("private key {} does not match certificate {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// `client_ca` is unusable.
    #[error("client_ca {}: {detail}", path.display())]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// rustls refused the settings (should not happen with a valid config).
    #[error("TLS settings refused: {0}")]
    Settings(rustls::Error),
}

/// The server's certificate chain and key, checked to belong together.
#[derive(Debug, Clone)]
pub struct ServerIdentity {
    /// Chain and signing key, as rustls presents them.
    pub certified: Arc<CertifiedKey>,
    /// The leaf certificate.
    pub leaf: CertSummary,
}

/// Loads `cert` (leaf first, then intermediates) and `key`, and checks that the key is the
/// leaf's.
pub fn server_identity(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<ServerIdentity, TlsError> {
    let chain = certificates(cert)?;
    let leaf = CertSummary::parse(&chain[0]).map_err(|error| TlsError::Certificate {
        path: cert.to_owned(),
        index: 1,
        error,
    })?;
    for (i, der) in chain.iter().enumerate().skip(1) {
        CertSummary::parse(der).map_err(|error| TlsError::Certificate {
            path: cert.to_owned(),
            index: i + 1,
            error,
        })?;
    }
    let private_key = private_key(key)?;
    let signing_key = provider
        .key_provider
        .load_private_key(private_key)
        .map_err(|e| TlsError::Key { path: key.to_owned(), detail: e.to_string() })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::KeyMismatch { cert: cert.to_owned(), key: key.to_owned() });
        }
        // The provider could not derive the public key: the handshake's own signature
        // would then fail, so refuse rather than start a listener no one can reach.
        Err(e) => {
            return Err(TlsError::Key { path: key.to_owned(), detail: format!("cannot check it: {e}") })
        }
    }
    Ok(ServerIdentity { certified: Arc::new(certified), leaf })
}

/// Every certificate in `path`, in file order; at least one.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    certificates_from_bytes(path, &bytes)
}

/// As [`certificates`], over bytes already read (`path` only names them in errors).
pub fn certificates_from_bytes(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let is_pem = bytes.windows(11).any(|w| w == b"-----BEGIN ");
    if !is_pem {
        if bytes.first() == Some(&0x30) {
            return Ok(vec![CertificateDer::from(bytes.to_vec())]);
        }
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    let chain = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| TlsError::Pem { path: path.to_owned(), detail: e.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    Ok(chain)
}

/// The first private key in `path`, which must pass [`check_key_permissions`].
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    check_key_permissions(path)?;
    let bytes = read(path)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => Err(TlsError::NoKey { path: path.to_owned() }),
        Err(e) => Err(TlsError::Pem { path: path.to_owned(), detail: e.to_string() }),
    }
}

/// Refuses a private key file that other users can read, as sshd does: any permission bit
/// for others, or any for the group on a file that belongs to this process's user (who can
/// make it 0600). A key that belongs to another user (root) and is shared with hl7d's group
/// (`0640 root:hl7d`) passes: that group is how access was granted.
pub fn check_key_permissions(path: &Path) -> Result<(), TlsError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let metadata =
            std::fs::metadata(path).map_err(|error| TlsError::Read { path: path.to_owned(), error })?;
        let mode = metadata.mode() & 0o7777;
        let ours = metadata.uid() == rustix::process::geteuid().as_raw();
        if mode & 0o007 != 0 || (ours && mode & 0o070 != 0) {
            return Err(TlsError::KeyPermissions { path: path.to_owned(), mode });
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read { path: path.to_owned(), error })
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_key_others_can_read_is_refused_with_the_chmod_to_run() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dir");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("server.key");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        std::fs::write(&path, key.serialize_pem()).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660, 0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let result = private_key(&path);
            if mode & 0o077 == 0 {
                assert!(result.is_ok(), "{mode:o}: {result:?}");
            } else {
                let error = result.expect_err("too open").to_string();
                assert!(error.contains(&format!("run `chmod 600 {}`", path.display())), "{mode:o}: {error}");
                assert!(error.contains(&format!("permissions {mode:04o}")), "{error}");
            }
        }
        // Root can hand the file to another user (as `0640 root:hl7d` is for the service
        // user): then the group bit is the grant and passes; a bit for others never does.
        if std::os::unix::fs::chown(&path, Some(65534), None).is_ok() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
            assert!(private_key(&path).is_ok());
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(private_key(&path), Err(TlsError::KeyPermissions { mode: 0o644, .. })));
        }
    }
}
