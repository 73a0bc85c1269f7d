//! TLS for the server: a rustls config that asks every client for a
//! certificate (checked after the handshake by
//! [`Attestor`](crate::attest::Attestor)), what the server knows of each
//! connection's peer, and the server's own rotating X509-SVID.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName};
use tokio::sync::watch;

use crate::attest::{AnchorError, AttestationError, Attestor};
use crate::ca::{Authority, CaError, LeafRequest};
use crate::clock::Clock;
use crate::config::ServerIdentityConfig;
use crate::issuer::Caller;

/// What the server knows about one connection's peer.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer's address.
    pub remote_addr: SocketAddr,
    /// The caller its client certificate attests, or why it does not.
    pub attestation: Result<Caller, AttestationError>,
}

/// Errors building the server's TLS configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// The attestation trust anchors are unusable.
    #[error(transparent)]
    TrustAnchors(#[from] AnchorError),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The server certificate could not be minted.
    #[error("server certificate: {0}")]
    Ca(#[from] CaError),
}

/// Asks every client for a certificate and checks that it holds the key;
/// the chain itself is validated by [`Attestor`] after the handshake.
#[derive(Debug)]
struct DeferredClientAuth {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for DeferredClientAuth {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // Clients without a certificate may still fetch the public bundle
        // and health; every other RPC refuses them with UNAUTHENTICATED.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Deferred to `Attestor::attest`, which runs on every connection
        // before any RPC can use it (see the module docs).
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Serves the newest server certificate published on a watch channel.
#[derive(Debug)]
struct RotatingCert {
    current: watch::Receiver<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for RotatingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.borrow().clone())
    }
}

/// The server's TLS configuration and the sender that rotates its
/// certificate.
pub(crate) struct ServerTls {
    pub(crate) config: Arc<rustls::ServerConfig>,
    pub(crate) attestor: Arc<Attestor>,
    pub(crate) cert_sender: watch::Sender<Arc<CertifiedKey>>,
}

/// Builds the server's TLS config: TLS 1.3, ALPN h2, a client certificate
/// requested from every client, and a freshly minted serving certificate.
pub(crate) fn server_tls(
    authority: &Authority,
    identity: &ServerIdentityConfig,
    attestation_anchors: &[CertificateDer<'static>],
    clock: &dyn Clock,
) -> Result<ServerTls, TlsSetupError> {
    let provider = crate::crypto::provider();
    let attestor = Arc::new(Attestor::new(
        attestation_anchors,
        authority.trust_domain().clone(),
        provider.clone(),
    )?);
    let first = mint_server_cert(authority, identity, clock.now(), &provider)?;
    let (cert_sender, current) = watch::channel(Arc::new(first));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(DeferredClientAuth {
            inner: attestor.handshake_verifier(),
        }))
        .with_cert_resolver(Arc::new(RotatingCert { current }));
    config.alpn_protocols = vec![b"h2".to_vec()];
    // Stateless session tickets (keys rotated by rustls every 6 hours) let
    // a client that reconnects resume without a full mTLS handshake; the
    // resumed session keeps the client's certificate, which is attested
    // again on every connection. One ticket is enough for one reconnect.
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    config.send_tls13_tickets = 1;
    Ok(ServerTls {
        config: Arc::new(config),
        attestor,
        cert_sender,
    })
}

/// Mints a serving certificate: an X509-SVID of the server's SPIFFE ID with
/// its DNS and IP names.
pub(crate) fn mint_server_cert(
    authority: &Authority,
    identity: &ServerIdentityConfig,
    now: SystemTime,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsSetupError> {
    let issued = authority.issue_server_identity(
        LeafRequest {
            spiffe_id: &identity.spiffe_id,
            expires_at: now + identity.cert_ttl,
            dns_names: &identity.dns_names,
            ip_addresses: &identity.ip_addresses,
        },
        now,
    )?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.key_pkcs8.clone()));
    Ok(CertifiedKey::from_der(issued.chain, key, provider)?)
}
