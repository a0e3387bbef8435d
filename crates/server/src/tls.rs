//! TLS for `eshost serve` (`--tls-cert`, `--tls-key`): the certificate
//! chain and private key from PEM files, made once at start into the
//! acceptor [`crate::connections`] wraps each connection in. rustls with
//! ring, its safe default versions (TLS 1.2 and 1.3) and ciphers; ALPN
//! offers HTTP/1.1 only, the one protocol the server speaks.
//!
//! The handshake has the header deadline: a client that opens a
//! connection and never finishes the handshake is closed like one that
//! never sends its headers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the certificate or the key cannot be served. Each says which file
/// and what is wrong with it, and never shows the key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--tls-cert {}: {reason}", path.display())]
    Certificate { path: PathBuf, reason: String },
    #[error("--tls-key {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("--tls-cert and --tls-key cannot be served together: {0}")]
    Config(String),
}

/// The server's TLS: an acceptor for its certificate. Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    /// The chain in `certificate` (the server's certificate first, then
    /// any intermediates) and the private key in `key` (PKCS#8, PKCS#1 or
    /// SEC1), both PEM.
    pub fn from_pem_files(certificate: &Path, key: &Path) -> Result<Self, TlsError> {
        let cert_error = |reason: String| TlsError::Certificate {
            path: certificate.to_path_buf(),
            reason,
        };
        let chain = CertificateDer::pem_file_iter(certificate)
            .map_err(|e| cert_error(pem_reason(e)))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_error(pem_reason(e)))?;
        if chain.is_empty() {
            return Err(cert_error(
                "holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
            path: key.to_path_buf(),
            reason: pem_reason(e),
        })?;
        // The provider is named, not taken from the process default, so a
        // second TLS library in the build can never make it ambiguous.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

/// A PEM reading error in words: a missing file, or not PEM.
fn pem_reason(error: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match error {
        Error::Io(e) => e.to_string(),
        Error::NoItemsFound => {
            "holds no private key (expected PEM: -----BEGIN PRIVATE KEY-----)".into()
        }
        other => format!("not valid PEM: {other:?}"),
    }
}
