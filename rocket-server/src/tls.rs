//! Loading the `TLSCertFile` / `TLSKeyFile` pair into a rustls server configuration that
//! both frontends use (tokio-rustls and futures-rustls share rustls), and reloading it
//! (certificates are renewed while the server runs).

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

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
/// authentication) serving the PEM files' certificate, and the [`CertificateFiles`] it
/// reads the certificate from (a reload replaces it there).
pub(crate) fn load_tls_config(
    cert: &Path,
    key: &Path,
) -> Result<(Arc<rustls::ServerConfig>, Arc<CertificateFiles>), TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let files = Arc::new(CertificateFiles {
        current: RwLock::new(load_pair(cert, key, &provider)?),
        provider: Arc::clone(&provider),
    });
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(&files) as Arc<dyn ResolvesServerCert>);
    Ok((Arc::new(config), files))
}

/// The certificate the server presents, loaded from `TLSCertFile` and `TLSKeyFile`. A
/// reload ([`ServerState::reload`](crate::ServerState::reload), SIGHUP in `rocket-cli`)
/// reads the files again and replaces it: handshakes that follow present the new one,
/// connections already open keep theirs, and a pair that fails to load leaves the running
/// one in place.
#[derive(Debug)]
pub(crate) struct CertificateFiles {
    current: RwLock<Loaded>,
    provider: Arc<CryptoProvider>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl CertificateFiles {
    /// Reads `cert` and `key` again and, if they make a valid pair, presents them from the
    /// next handshake on.
    pub(crate) fn reload(&self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        let loaded = load_pair(cert, key, &self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = loaded;
        Ok(())
    }

    /// The files the certificate was last loaded from.
    pub(crate) fn paths(&self) -> (PathBuf, PathBuf) {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        (current.cert_file.clone(), current.key_file.clone())
    }
}

impl ResolvesServerCert for CertificateFiles {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        Some(Arc::clone(&current.key))
    }
}

/// Reads a PEM certificate chain and private key, and checks that the key is the
/// certificate's.
fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<Loaded, TlsError> {
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
    let private = PrivateKeyDer::from_pem_file(key).map_err(read_err("private key", key))?;
    let certified = CertifiedKey::from_der(certs, private, provider)?;
    Ok(Loaded {
        key: Arc::new(certified),
        cert_file: cert.to_owned(),
        key_file: key.to_owned(),
    })
}
