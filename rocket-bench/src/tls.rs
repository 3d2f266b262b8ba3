//! `wss://` for the load generator: a rustls client (ring) that trusts exactly the
//! certificates of one PEM file (`--ca FILE`, e.g. the server's self-signed certificate),
//! and `rocket-bench cert`, which makes such a certificate for `127.0.0.1` and `localhost`.
//!
//! The connections stay non-blocking: [`crate::conn::WsConn`] moves ciphertext between its
//! socket and the [`rustls::ClientConnection`] and reads the plaintext out of it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// What every `wss://` connection of a run shares: the client configuration and the name
/// the server's certificate must carry.
#[derive(Debug, Clone)]
pub struct TlsClient {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl TlsClient {
    /// A client that trusts the certificates in `ca` (PEM) and nothing else, for a server
    /// reached as `host` (the URL's host, with or without its port).
    pub fn new(ca: &Path, host: &str) -> Result<Self, String> {
        let bad = |e: rustls::pki_types::pem::Error| format!("{}: {e}", ca.display());
        let certs = CertificateDer::pem_file_iter(ca)
            .map_err(bad)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate", ca.display()));
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", ca.display()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = host_name(host);
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| format!("{name}: not a TLS server name: {e}"))?;
        Ok(Self {
            config: Arc::new(config),
            name,
        })
    }

    /// A new client session, its ClientHello queued.
    pub fn start(&self) -> io::Result<rustls::ClientConnection> {
        rustls::ClientConnection::new(Arc::clone(&self.config), self.name.clone())
            .map_err(io::Error::other)
    }
}

/// The host of a `Host` header value: without its port, and an IPv6 address without
/// its brackets.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// The options of `rocket-bench cert`.
#[derive(Debug, Clone, clap::Args)]
pub struct CertArgs {
    /// Folder to write `cert.pem` and `key.pem` into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Names the certificate is valid for (IP addresses or DNS names).
    #[arg(long = "name", default_values = ["127.0.0.1", "localhost"])]
    pub names: Vec<String>,
}

/// Writes a fresh self-signed certificate (`cert.pem`) and its private key (`key.pem`),
/// for `rocket-cli --tls-cert DIR/cert.pem --tls-key DIR/key.pem` and
/// `rocket-bench run --ca DIR/cert.pem`.
pub fn write_self_signed(args: &CertArgs) -> Result<(), String> {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(args.names.clone()).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let write = |name: &str, text: String| {
        let path = args.out.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    write("cert.pem", cert.pem())?;
    write("key.pem", signing_key.serialize_pem())?;
    eprintln!(
        "wrote {0}/cert.pem and {0}/key.pem (self-signed, for {1})",
        args.out.display(),
        args.names.join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_their_port() {
        assert_eq!(host_name("127.0.0.1:9772"), "127.0.0.1");
        assert_eq!(host_name("localhost"), "localhost");
        assert_eq!(host_name("[::1]:9772"), "::1");
        assert_eq!(host_name("[::1]"), "::1");
    }

    /// A certificate from `rocket-bench cert` is trusted for the names it was made for.
    #[test]
    fn a_written_certificate_makes_a_client() {
        let dir = std::env::temp_dir().join(format!("rocket-bench-cert-{}", std::process::id()));
        let args = CertArgs {
            out: dir.clone(),
            names: vec!["127.0.0.1".into(), "localhost".into()],
        };
        write_self_signed(&args).unwrap();
        let client = TlsClient::new(&dir.join("cert.pem"), "127.0.0.1:9772").unwrap();
        assert!(client.start().unwrap().is_handshaking());
        assert!(TlsClient::new(&dir.join("key.pem"), "127.0.0.1").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
