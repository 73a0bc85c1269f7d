//! TLS for the server: a rustls config that asks every client for a
//! certificate, the attestation of that certificate to a [`Caller`], and
//! the server's own rotating X509-SVID.
//!
//! Attestation is deliberately split from the handshake. During the
//! handshake rustls checks only that the client holds the key of the
//! certificate it presents (the CertificateVerify signature); right after
//! it, [`Attestor::attest`] validates the chain against the attestation
//! trust anchors and extracts the SPIFFE ID. A failed attestation does not
//! abort the connection: every `Issuer` RPC on it then fails with
//! UNAUTHENTICATED and a message that says what was wrong (a TLS alert
//! could only say "bad certificate"). No RPC that needs a caller ever runs
//! without a successful attestation.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};
use tokio::sync::watch;

use crate::ca::{Authority, CaError, LeafRequest, asn1_time, uri_sans};
use crate::clock::Clock;
use crate::config::ServerIdentityConfig;
use crate::extension::{ExtensionError, GrantExtension};
use crate::issuer::Caller;
use crate::spiffe_id::{SpiffeId, TrustDomain};

/// Why a client certificate did not attest a caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttestationError {
    /// The client sent no certificate.
    #[error("no client certificate: jitid requires mTLS with an attestation identity")]
    NoCertificate,
    /// The certificate does not chain to an attestation trust anchor.
    #[error("client certificate is not issued by a trusted attestation CA")]
    UnknownIssuer,
    /// The certificate has expired.
    #[error("client certificate has expired")]
    Expired,
    /// The certificate is not valid yet.
    #[error("client certificate is not valid yet")]
    NotYetValid,
    /// The certificate is otherwise unusable (bad encoding, wrong key usage).
    #[error("client certificate is invalid: {0}")]
    Invalid(String),
    /// The certificate does not carry exactly one valid SPIFFE ID.
    #[error("client certificate must carry exactly one SPIFFE ID URI SAN, found {0}")]
    NotOneSpiffeId(String),
    /// The certificate is a credential jitid issued for one task, not an
    /// attestation identity.
    #[error(
        "client certificate is a jitid SVID (issued for grant {0}); authenticate with an attestation identity"
    )]
    IssuedCredential(String),
    /// The SPIFFE ID belongs to another trust domain.
    #[error("client certificate SPIFFE ID {id} is not in trust domain {trust_domain}")]
    ForeignTrustDomain {
        /// The ID presented.
        id: SpiffeId,
        /// The server's trust domain.
        trust_domain: TrustDomain,
    },
}

/// What the server knows about one connection's peer.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer's address.
    pub remote_addr: SocketAddr,
    /// The attested caller, or why attestation failed.
    pub attestation: Result<AttestedCaller, AttestationError>,
}

/// A caller attested by its client certificate.
#[derive(Debug, Clone)]
pub struct AttestedCaller {
    /// The caller.
    pub caller: Caller,
    /// When its certificate expires; RPCs after that are refused.
    pub not_after: SystemTime,
}

/// Validates client certificates against the attestation trust anchors.
#[derive(Debug)]
pub struct Attestor {
    verifier: Arc<dyn ClientCertVerifier>,
    trust_domain: TrustDomain,
}

/// Errors building the server's TLS configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// The attestation trust anchors are unusable.
    #[error("attestation trust anchors: {0}")]
    TrustAnchors(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The server certificate could not be minted.
    #[error("server certificate: {0}")]
    Ca(#[from] CaError),
}

// === impl Attestor ===

impl Attestor {
    /// An attestor trusting `anchors` (DER CA certificates).
    pub fn new(
        anchors: &[CertificateDer<'static>],
        trust_domain: TrustDomain,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsSetupError> {
        let mut roots = RootCertStore::empty();
        for anchor in anchors {
            roots
                .add(anchor.clone())
                .map_err(|error| TlsSetupError::TrustAnchors(error.to_string()))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|error| TlsSetupError::TrustAnchors(error.to_string()))?;
        Ok(Self {
            verifier,
            trust_domain,
        })
    }

    /// Attests the peer certificates of one connection at `now`.
    pub fn attest(
        &self,
        peer_certs: Option<&[CertificateDer<'_>]>,
        now: SystemTime,
    ) -> Result<AttestedCaller, AttestationError> {
        let Some((end_entity, intermediates)) = peer_certs.and_then(|certs| certs.split_first())
        else {
            return Err(AttestationError::NoCertificate);
        };
        let unix_now = UnixTime::since_unix_epoch(
            now.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or(Duration::ZERO),
        );
        self.verifier
            .verify_client_cert(end_entity, intermediates, unix_now)
            .map_err(|error| match error {
                rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer | CertificateError::BadSignature,
                ) => AttestationError::UnknownIssuer,
                rustls::Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. },
                ) => AttestationError::Expired,
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
                ) => AttestationError::NotYetValid,
                other => AttestationError::Invalid(other.to_string()),
            })?;

        let (_, cert) = x509_parser::parse_x509_certificate(end_entity.as_ref())
            .map_err(|_| AttestationError::Invalid("malformed certificate".to_owned()))?;
        // A task credential must not mint more credentials: revoking it
        // would not stop its holder, and it would widen a narrow identity
        // to everything its SPIFFE ID may request.
        match GrantExtension::from_certificate(end_entity.as_ref()) {
            Err(ExtensionError::Missing) => {}
            Ok(extension) => return Err(AttestationError::IssuedCredential(extension.grant_id)),
            Err(_) => {
                return Err(AttestationError::IssuedCredential("unreadable".to_owned()));
            }
        }
        let uris = uri_sans(&cert).ok_or_else(|| {
            AttestationError::Invalid("malformed or duplicate subjectAltName extension".to_owned())
        })?;
        let [uri] = uris.as_slice() else {
            return Err(AttestationError::NotOneSpiffeId(format!(
                "{} URI SANs",
                uris.len()
            )));
        };
        let spiffe_id = SpiffeId::new(uri).map_err(|error| {
            let shown: String = uri.chars().take(80).collect();
            AttestationError::NotOneSpiffeId(format!("{shown:?}, which is invalid: {error}"))
        })?;
        if !spiffe_id.is_member_of(&self.trust_domain) {
            return Err(AttestationError::ForeignTrustDomain {
                id: spiffe_id,
                trust_domain: self.trust_domain.clone(),
            });
        }
        Ok(AttestedCaller {
            caller: Caller {
                spiffe_id,
                source: None,
                certificate_thumbprint: Some(crate::ca::certificate_thumbprint(
                    end_entity.as_ref(),
                )),
            },
            not_after: asn1_time(&cert.validity().not_after),
        })
    }
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
            inner: attestor.verifier.clone(),
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
    let issued = authority.issue_identity(
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
