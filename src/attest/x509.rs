//! Attestation by mTLS client certificate: an attestation identity,
//! validated against the attestation trust anchors after the handshake.
//!
//! During the handshake rustls checks only that the client holds the key
//! of the certificate it presents (the CertificateVerify signature); right
//! after it, [`Attestor::attest`] validates the chain and extracts the
//! SPIFFE ID. A failed attestation does not abort the connection: every
//! RPC that needs a caller then fails with UNAUTHENTICATED and a message
//! that says what was wrong (a TLS alert could only say "bad
//! certificate").

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::CertificateError;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

use crate::ca::{asn1_time, uri_sans};
use crate::extension::{ExtensionError, GrantExtension};
use crate::issuer::{Caller, IdentityEvidence};
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

/// The attestation trust anchors are unusable.
#[derive(Debug, thiserror::Error)]
#[error("attestation trust anchors: {0}")]
pub struct AnchorError(String);

/// Validates client certificates against the attestation trust anchors.
#[derive(Debug)]
pub struct Attestor {
    verifier: Arc<dyn ClientCertVerifier>,
    trust_domain: TrustDomain,
}

// === impl Attestor ===

impl Attestor {
    /// The verifier the TLS handshake uses to check that a client holds
    /// its certificate's key.
    pub fn handshake_verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.verifier.clone()
    }

    /// An attestor trusting `anchors` (DER CA certificates).
    pub fn new(
        anchors: &[CertificateDer<'static>],
        trust_domain: TrustDomain,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, AnchorError> {
        let mut roots = RootCertStore::empty();
        for anchor in anchors {
            roots
                .add(anchor.clone())
                .map_err(|error| AnchorError(error.to_string()))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|error| AnchorError(error.to_string()))?;
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
    ) -> Result<Caller, AttestationError> {
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
        Ok(Caller {
            spiffe_id,
            source: None,
            certificate_thumbprint: Some(crate::ca::certificate_thumbprint(end_entity.as_ref())),
            attestation: crate::issuer::Attestation::Identity(IdentityEvidence {
                serial: crate::ca::serial_hex(cert.raw_serial()),
                not_before: asn1_time(&cert.validity().not_before),
                not_after: asn1_time(&cert.validity().not_after),
            }),
        })
    }
}
