//! rustls configurations for both ends: the server requires a client certificate from the
//! node's CA (no plaintext, no anonymous clients), and the client presents its own and
//! verifies the server's against the same CA.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::error::{Error, Result};

/// gRPC is HTTP/2 only.
const ALPN_H2: &[u8] = b"h2";

/// The provider is named rather than taken from the process default: other crates in the
/// same binary may enable another one, and rustls refuses to guess between two.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            Error::Invalid(format!(
                "cannot read certificates from {}: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(Error::Invalid(format!(
            "{} holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        Error::Invalid(format!(
            "cannot read a private key from {}: {e}",
            path.display()
        ))
    })
}

fn roots(ca: &Path) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca)? {
        roots
            .add(c)
            .map_err(|e| Error::Invalid(format!("{} is not a usable CA: {e}", ca.display())))?;
    }
    Ok(Arc::new(roots))
}

fn tls_error(what: &str, e: &rustls::Error) -> Error {
    Error::Invalid(format!("{what}: {e}"))
}

/// The server side: the node's certificate, and client certificates required and
/// verified against the CA (chain, validity period, client-auth usage).
pub fn server_config(ca: &Path, crt: &Path, key_path: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
        .build()
        .map_err(|e| Error::Invalid(format!("cannot verify clients with {}: {e}", ca.display())))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("tls versions", &e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(crt)?, key(key_path)?)
        .map_err(|e| tls_error("the server certificate and key do not go together", &e))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The client side: trusts only the CA, presents the client certificate.
pub fn client_config(ca: &Path, crt: &Path, key_path: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("tls versions", &e))?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(certs(crt)?, key(key_path)?)
        .map_err(|e| tls_error("the client certificate and key do not go together", &e))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}
