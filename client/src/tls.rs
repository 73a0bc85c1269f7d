//! rustls configuration of the client: TLS 1.3, ALPN h2, the server
//! verified against the configured roots, our attestation identity as the
//! client certificate; and the tonic channel over such a connector.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{ClientConfig, ClientError};

/// How long connecting (TCP + TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds the TLS connector for `config`.
pub(crate) fn connector(config: &ClientConfig) -> Result<TlsConnector, ClientError> {
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

/// A tonic channel to `server` (`https://host:port`) over `connector`:
/// TLS is done by the connector, so the scheme tonic sees is plain http.
/// The host is sent as SNI (not for an IP address) and checked by the
/// connector's verifier.
pub(crate) async fn tls_channel(
    server: &str,
    connector: tokio_rustls::TlsConnector,
    rpc_timeout: Option<Duration>,
) -> Result<Channel, ClientError> {
    let invalid = || ClientError::Config(format!("invalid server URL {server:?}"));
    let uri: Uri = server.parse().map_err(|_| invalid())?;
    if uri.scheme_str() != Some("https") {
        return Err(ClientError::Config(format!(
            "server URL {server:?} must start with https://"
        )));
    }
    let host = uri
        .host()
        .ok_or_else(|| ClientError::Config(format!("server URL {server:?} has no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let server_name = ServerName::try_from(host.clone())
        .map_err(|_| ClientError::Config(format!("invalid server host {host:?}")))?;
    let mut endpoint = Endpoint::from_shared(format!("http://{}", authority(&host, port)))
        .map_err(|_| invalid())?
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(timeout) = rpc_timeout {
        endpoint = endpoint.timeout(timeout);
    }
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            let server_name = server_name.clone();
            let host = host.clone();
            async move {
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|source| ClientError::Connect {
            server: server.to_owned(),
            source,
        })
}

fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
