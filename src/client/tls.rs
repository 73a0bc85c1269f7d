//! rustls configuration of the client: TLS 1.3, ALPN h2, the server
//! verified against the configured roots, our attestation identity as the
//! client certificate.

use std::sync::Arc;

use rustls::RootCertStore;
use tokio_rustls::TlsConnector;

use super::{ClientConfig, ClientError};

/// Builds the TLS connector for `config`.
pub(super) fn connector(config: &ClientConfig) -> Result<TlsConnector, ClientError> {
    let mut roots = RootCertStore::empty();
    for root in &config.server_roots {
        roots
            .add(root.clone())
            .map_err(|error| ClientError::Config(format!("server root certificate: {error}")))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(crate::crypto::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| ClientError::Config(error.to_string()))?
        .with_root_certificates(roots);
    let mut tls = match &config.identity {
        Some(identity) => builder
            .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(|error| ClientError::Config(format!("client identity: {error}")))?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsConnector::from(Arc::new(tls)))
}
