//! The SPIFFE peer verifier: authenticates the other side of an mTLS
//! connection by its X.509-SVID against the current trust bundle, with no
//! DNS name checks, and authorizes it by SPIFFE ID and, optionally, by a
//! live revocation check.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use tokio::sync::watch;
use x509_parser::extensions::GeneralName;

use super::{RotationError, TrustBundle};
use crate::spiffe_id::{IdPattern, SpiffeId};
use crate::{CacheError, RevocationCache};

/// Why a peer's certificate was refused after its chain verified (chain
/// errors are rustls' own [`CertificateError`]s).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The certificate is not a valid X.509-SVID leaf.
    #[error("peer certificate is not an X.509-SVID: {0}")]
    NotAnSvid(String),
    /// The peer's SPIFFE ID is in another trust domain.
    #[error("peer {0} is not in trust domain {1}")]
    ForeignTrustDomain(SpiffeId, String),
    /// The peer's SPIFFE ID is not in the allow-list.
    #[error("peer {0} is not allowed")]
    NotAllowed(SpiffeId),
    /// The revocation cache could not say whether the peer is revoked.
    #[error("cannot check whether peer {0} is revoked: {1}")]
    RevocationUnknown(SpiffeId, CacheError),
    /// The bundle has no X.509 authorities: the trust domain trusts no SVID.
    #[error("the trust bundle has no X.509 authorities")]
    EmptyBundle,
    /// The certificate is a jitid attestation identity: it proves a
    /// workload to jitid and is never an SVID.
    #[error("peer certificate is a jitid attestation identity, not an X.509-SVID")]
    AttestationIdentity,
}

/// What a verified X.509-SVID leaf says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SvidLeaf {
    pub(super) spiffe_id: SpiffeId,
    /// Lowercase hex, no colons.
    pub(super) serial: String,
    pub(super) not_after: SystemTime,
}

/// Authenticates SPIFFE peers for rustls, as a server verifying clients
/// ([`ClientCertVerifier`]) and as a client verifying servers
/// ([`ServerCertVerifier`]).
///
/// A peer is accepted when:
/// - its chain verifies (RFC 5280, expiry, key usage, extended key usage
///   for the side it plays) against the X.509 authorities of the trust
///   bundle current at the handshake;
/// - its leaf is an X.509-SVID: exactly one URI SAN, a SPIFFE ID with a
///   path, neither `keyCertSign` nor `cRLSign`, and not a jitid attestation
///   identity (which carries the attestation identity marker);
/// - that SPIFFE ID is in the bundle's trust domain and, if an allow-list
///   is set, matches one of its patterns;
/// - if a [`RevocationCache`] is set, the cache says it is not revoked. A
///   cache that cannot answer (not caught up, stale) refuses the peer.
///
/// Server names are not checked: SPIFFE peers are named by their URI SAN,
/// and the allow-list is the authorization.
///
/// Get one from [`RotatingIdentity::peer_verifier`](super::RotatingIdentity::peer_verifier).
#[derive(Clone)]
pub struct SpiffePeerVerifier {
    bundle: watch::Receiver<Arc<TrustBundle>>,
    allowed: Vec<IdPattern>,
    revocation: Option<RevocationCache>,
    algorithms: WebPkiSupportedAlgorithms,
}

// === impl SpiffePeerVerifier ===

impl SpiffePeerVerifier {
    pub(super) fn new(
        bundle: watch::Receiver<Arc<TrustBundle>>,
        provider: &CryptoProvider,
    ) -> Self {
        Self {
            bundle,
            allowed: Vec::new(),
            revocation: None,
            algorithms: provider.signature_verification_algorithms,
        }
    }

    /// Accepts only peers matching `pattern` (and those of earlier calls):
    /// `spiffe://<td>/exact/path`, or `spiffe://<td>/prefix/*` for every
    /// ID under a prefix. Without any, every SPIFFE ID of the trust domain
    /// is accepted.
    pub fn allow(mut self, pattern: &str) -> Result<Self, RotationError> {
        let pattern = IdPattern::parse(pattern).map_err(RotationError::Config)?;
        self.allowed.push(pattern);
        Ok(self)
    }

    /// Refuses peers that `cache` reports revoked, and every peer while the
    /// cache cannot answer (not caught up, stale). Peers must then hold
    /// SVIDs issued by jitid: one without the grant extension is refused.
    pub fn check_revocation(mut self, cache: RevocationCache) -> Self {
        self.revocation = Some(cache);
        self
    }

    /// Verifies a peer's chain at `now` for the side it plays and returns
    /// its leaf; `client_side` is true when the peer is a TLS client.
    pub(super) fn verify_peer(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        client_side: bool,
    ) -> Result<SvidLeaf, rustls::Error> {
        let bundle = self.bundle.borrow().clone();
        let Some(roots) = &bundle.roots else {
            return Err(refused(PeerError::EmptyBundle));
        };
        if client_side {
            roots
                .client_verifier
                .verify_client_cert(end_entity, intermediates, now)?;
        } else {
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &ParsedCertificate::try_from(end_entity)?,
                &roots.store,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        let leaf = parse_svid_leaf(end_entity).map_err(refused)?;
        if !leaf.spiffe_id.is_member_of(&bundle.trust_domain) {
            return Err(refused(PeerError::ForeignTrustDomain(
                leaf.spiffe_id,
                bundle.trust_domain.to_string(),
            )));
        }
        if !self.allowed.is_empty()
            && !self
                .allowed
                .iter()
                .any(|pattern| pattern.matches(&leaf.spiffe_id))
        {
            return Err(refused(PeerError::NotAllowed(leaf.spiffe_id)));
        }
        if let Some(cache) = &self.revocation {
            match cache.is_certificate_revoked(end_entity.as_ref()) {
                Ok(false) => {}
                Ok(true) => {
                    tracing::info!(peer = %leaf.spiffe_id, serial = %leaf.serial, "refused a revoked peer");
                    return Err(CertificateError::Revoked.into());
                }
                Err(error) => {
                    return Err(refused(PeerError::RevocationUnknown(leaf.spiffe_id, error)));
                }
            }
        }
        Ok(leaf)
    }
}

impl fmt::Debug for SpiffePeerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffePeerVerifier")
            .field("trust_domain", &self.bundle.borrow().trust_domain)
            .field("allowed", &self.allowed)
            .field("checks_revocation", &self.revocation.is_some())
            .finish()
    }
}

impl ServerCertVerifier for SpiffePeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify_peer(end_entity, intermediates, now, false)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for SpiffePeerVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The bundle rotates, and hints are optional: clients hold one SVID.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify_peer(end_entity, intermediates, now, true)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn refused(error: PeerError) -> rustls::Error {
    CertificateError::Other(OtherError(Arc::new(error))).into()
}

/// Reads an X.509-SVID leaf (X509-SVID §5.2 leaf checks): exactly one URI
/// SAN holding a SPIFFE ID with a path, no CA key usages.
pub(super) fn parse_svid_leaf(der: &[u8]) -> Result<SvidLeaf, PeerError> {
    let bad = |why: &str| PeerError::NotAnSvid(why.to_owned());
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|_| bad("malformed certificate"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|_| bad("malformed or duplicate subjectAltName"))?
        .ok_or_else(|| bad("no subjectAltName"))?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    let [uri] = uris.as_slice() else {
        return Err(PeerError::NotAnSvid(format!(
            "{} URI SANs, not exactly one",
            uris.len()
        )));
    };
    // `SpiffeId` also refuses an ID without a path (a trust domain's).
    let spiffe_id = SpiffeId::new(uri)
        .map_err(|error| PeerError::NotAnSvid(format!("invalid SPIFFE ID: {error}")))?;
    if cert.is_ca() {
        return Err(bad("a CA certificate is not a leaf"));
    }
    if crate::extension::is_attestation_identity(&cert) {
        return Err(PeerError::AttestationIdentity);
    }
    if let Ok(Some(key_usage)) = cert.key_usage()
        && (key_usage.value.key_cert_sign() || key_usage.value.crl_sign())
    {
        return Err(bad("a leaf must not have keyCertSign or cRLSign"));
    }
    let seconds = cert.validity().not_after.timestamp();
    let not_after =
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
    let serial = cert
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(SvidLeaf {
        spiffe_id,
        serial,
        not_after,
    })
}
