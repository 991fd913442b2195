//! The only module that builds rustls configurations: TLS termination for the public listener
//! (PEM files) and the client side for an `https://` upstream (system roots).

use crate::config::TlsFiles;
use crate::error::StartupError;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server config for TLS termination, offering h2 and http/1.1 through ALPN.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, StartupError> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| StartupError::Tls(format!("server.tls_cert {}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(StartupError::Tls(format!("server.tls_cert {}: no certificate found", files.cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| StartupError::Tls(format!("server.tls_key {}: {e}", files.key.display())))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| StartupError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StartupError::Tls(format!("server.tls_cert / server.tls_key: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

pub type UpstreamConnector = hyper_rustls::HttpsConnector<HttpConnector>;

/// Connector for the upstream client: plain HTTP, or HTTPS verified against the system roots.
pub fn upstream_connector(http: HttpConnector, https: bool) -> Result<UpstreamConnector, StartupError> {
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = if https {
        builder
            .with_provider_and_native_roots(provider())
            .map_err(|e| StartupError::Tls(format!("upstream.url: no usable system CA roots: {e}")))?
    } else {
        let cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| StartupError::Tls(e.to_string()))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        builder.with_tls_config(cfg)
    };
    Ok(builder.https_or_http().enable_http1().enable_http2().wrap_connector(http))
}
