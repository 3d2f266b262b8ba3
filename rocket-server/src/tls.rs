//! Loading the `TLSCertFile` / `TLSKeyFile` pair into a rustls server configuration that
//! both frontends use (tokio-rustls and futures-rustls share rustls).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS files could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file is missing, unreadable or not PEM.
    #[error("cannot read {what} {path:?}: {reason}")]
    Read {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The certificate file holds no certificate.
    #[error("no certificate found in {0:?}")]
    NoCertificate(PathBuf),
    /// rustls rejected the pair (e.g. the key does not match the certificate).
    #[error("invalid TLS certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds a rustls server configuration (ring provider, TLS 1.2 and 1.3, no client
/// authentication) from PEM files.
pub(crate) fn load_tls_config(
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read_err = |what, path: &Path| {
        let path = path.to_owned();
        move |e: rustls::pki_types::pem::Error| TlsError::Read {
            what,
            path,
            reason: e.to_string(),
        }
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(read_err("certificate", cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err("certificate", cert))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(read_err("private key", key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}
