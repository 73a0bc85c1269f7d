//! The rotating identity on the wire: rustls certificate resolvers that
//! present the current SVID, rustls client and server configs (TLS 1.3,
//! h2), a tonic [`Channel`] to a SPIFFE peer, and a stream of verified TLS
//! connections for tonic's `serve_with_incoming`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{SignatureScheme, version};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::verify::{SpiffePeerVerifier, parse_svid_leaf};
use super::{RotatingIdentity, RotationError};
use crate::incoming::{self, PeerStream};
use crate::spiffe_id::SpiffeId;

/// Presents the current SVID of a [`RotatingIdentity`] in every handshake,
/// as a rustls client ([`ResolvesClientCert`]) or server
/// ([`ResolvesServerCert`]). The [`CertifiedKey`] is built once per SVID,
/// not per handshake. An expired SVID (renewal kept failing) is not
/// presented, so the handshake fails rather than the peer's checks.
#[derive(Debug)]
pub struct SvidResolver {
    identity: RotatingIdentity,
}

/// The verified peer of a connection accepted by [`SpiffeIncoming`]; tonic
/// puts it in each request's extensions:
/// `request.extensions().get::<SpiffePeer>()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffePeer {
    /// The peer's address.
    pub remote_addr: SocketAddr,
    /// The SPIFFE ID of its X.509-SVID.
    pub spiffe_id: SpiffeId,
    /// The serial of its X.509-SVID, lowercase hex.
    pub serial: String,
    /// When its X.509-SVID expires.
    pub not_after: SystemTime,
}

/// A server-side TLS connection from a verified SPIFFE peer.
pub type SpiffeTlsStream = PeerStream<SpiffePeer>;

/// Verified TLS connections accepted on a listener, for tonic's
/// `Server::serve_with_incoming`. Handshakes run concurrently in their
/// own tasks; a failed one (a refused peer) is logged and dropped.
/// Dropping the stream stops accepting.
#[derive(Debug)]
pub struct SpiffeIncoming {
    connections: ReceiverStream<io::Result<SpiffeTlsStream>>,
    accept_loop: JoinHandle<()>,
}

// === impl RotatingIdentity (transport) ===

impl RotatingIdentity {
    /// A rustls client config (TLS 1.3, ALPN h2) that presents the current
    /// SVID and verifies servers with `peers`.
    pub fn client_config(
        &self,
        peers: SpiffePeerVerifier,
    ) -> Result<rustls::ClientConfig, RotationError> {
        let mut config = rustls::ClientConfig::builder_with_provider(self.shared.provider.clone())
            .with_protocol_versions(&[&version::TLS13])?
            // "Dangerous" only in that rustls' WebPKI verifier is replaced:
            // `SpiffePeerVerifier` verifies the chain itself, and checks the
            // SPIFFE ID instead of a DNS name.
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(peers))
            .with_client_cert_resolver(self.cert_resolver());
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }

    /// A rustls server config (TLS 1.3, ALPN h2) that presents the current
    /// SVID and requires clients that `peers` accepts.
    pub fn server_config(
        &self,
        peers: SpiffePeerVerifier,
    ) -> Result<rustls::ServerConfig, RotationError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.shared.provider.clone())
            .with_protocol_versions(&[&version::TLS13])?
            .with_client_cert_verifier(Arc::new(peers))
            .with_cert_resolver(self.cert_resolver());
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }

    /// A tonic channel to the SPIFFE peer at `server` (`https://host:port`),
    /// connected now. The host is only dialled, not checked: `peers`
    /// authorizes the server by its SPIFFE ID. Reconnections (and every
    /// handshake) use the SVID and bundle current at that time.
    pub async fn connect(
        &self,
        server: &str,
        peers: SpiffePeerVerifier,
    ) -> Result<Channel, RotationError> {
        let connector = TlsConnector::from(Arc::new(self.client_config(peers)?));
        Ok(crate::tls::tls_channel(server, connector, None).await?)
    }

    /// Accepts TLS connections on `listener` with [`Self::server_config`],
    /// for tonic:
    /// `Server::builder().add_service(svc).serve_with_incoming(incoming)`.
    pub fn incoming(
        &self,
        listener: TcpListener,
        peers: SpiffePeerVerifier,
    ) -> Result<SpiffeIncoming, RotationError> {
        let acceptor = TlsAcceptor::from(Arc::new(self.server_config(peers)?));
        let (connections, accept_loop) = incoming::accept(
            listener,
            acceptor,
            incoming::ConnectionLimits::default(),
            |tls, remote_addr| {
                // The verifier accepted this leaf; read what it says.
                let leaf = tls.get_ref().1.peer_certificates()?.first()?;
                let leaf = parse_svid_leaf(leaf.as_ref()).ok()?;
                Some(SpiffePeer {
                    remote_addr,
                    spiffe_id: leaf.spiffe_id,
                    serial: leaf.serial,
                    not_after: leaf.not_after,
                })
            },
        );
        Ok(SpiffeIncoming {
            connections,
            accept_loop,
        })
    }
}

// === impl SvidResolver ===

impl SvidResolver {
    pub(super) fn new(identity: RotatingIdentity) -> Self {
        Self { identity }
    }

    fn current(&self) -> Option<Arc<CertifiedKey>> {
        let svid = self.identity.svid();
        if svid.not_after() <= SystemTime::now() {
            tracing::warn!(serial = %svid.serial(), "the X.509-SVID has expired and could not be renewed; presenting none");
            return None;
        }
        Some(svid.certified_key().clone())
    }
}

impl ResolvesClientCert for SvidResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for SvidResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

// === impl SpiffeIncoming ===

impl Stream for SpiffeIncoming {
    type Item = io::Result<SpiffeTlsStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.connections).poll_next(cx)
    }
}

impl Drop for SpiffeIncoming {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}
