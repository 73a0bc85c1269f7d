//! Offline checks of credentials presented to a relying party: signature
//! and validity against this trust domain's bundle. Liveness is the
//! store's business; this module only says whether the credential is
//! authentic and unexpired, and what it claims.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, RootCertStore};

use super::{Authority, GrantExtension, JwtAuthority, JwtSvidClaims, asn1_time};

/// What an authentic credential claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedCredential {
    /// The SPIFFE ID it names.
    pub spiffe_id: String,
    /// Serial (lowercase hex) or `jti`.
    pub credential_id: String,
    /// Whether it is an X.509-SVID (else a JWT-SVID).
    pub is_x509: bool,
    /// The grant, task, entitlement, actions and epoch it carries.
    pub grant: GrantExtension,
    /// When it expires.
    pub expires_at: SystemTime,
    /// Who delegated it, most recent first (a JWT's `act` chain; for an
    /// X.509-SVID, empty: its extension names the parent grants).
    pub actors: Vec<String>,
    /// The `x5t#S256` thumbprint of the certificate a JWT is bound to.
    pub confirmation: Option<String>,
}

/// Why a presented credential was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PresentedError {
    /// Authentic but past its expiry.
    #[error("credential expired")]
    Expired(Box<PresentedCredential>),
    /// Not authentic, not for this audience, or not a jitid credential.
    #[error("{0}")]
    Invalid(String),
}

/// Verifies X.509 chains against the bundle's roots.
pub(crate) fn x509_verifier(
    roots: &[CertificateDer<'static>],
) -> Option<Arc<dyn ClientCertVerifier>> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).ok()?;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(store),
        crate::crypto::provider(),
    )
    .build()
    .ok()
}

impl Authority {
    /// Checks an X.509-SVID chain (leaf first) against the trust bundle at
    /// `now` and reads its grant extension.
    pub fn verify_x509_svid(
        &self,
        chain: &[CertificateDer<'_>],
        now: SystemTime,
    ) -> Result<PresentedCredential, PresentedError> {
        let invalid = |message: &str| PresentedError::Invalid(message.to_owned());
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or_else(|| invalid("empty certificate chain"))?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
            .map_err(|_| invalid("leaf is not a DER X.509 certificate"))?;
        let uris = super::uri_sans(&cert).unwrap_or_default();
        let [spiffe_id] = uris.as_slice() else {
            return Err(invalid("leaf does not carry exactly one URI SAN"));
        };
        // Checked before the grant extension, for its own reason: it is
        // jitid's, and authentic, but never a credential.
        if crate::extension::is_attestation_identity(&cert) {
            return Err(invalid(
                "an attestation identity, not an SVID: it proves a workload to jitid and is \
                 never valid as a credential",
            ));
        }
        let grant = GrantExtension::from_certificate(leaf.as_ref())
            .map_err(|error| PresentedError::Invalid(format!("not a jitid X.509-SVID: {error}")))?;
        let presented = PresentedCredential {
            spiffe_id: (*spiffe_id).to_owned(),
            credential_id: cert
                .raw_serial()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            is_x509: true,
            grant,
            expires_at: asn1_time(&cert.validity().not_after),
            actors: Vec::new(),
            confirmation: None,
        };
        let verifier = self
            .x509_verifier
            .as_ref()
            .ok_or_else(|| invalid("trust bundle has no usable X.509 authority"))?;
        let unix_now = UnixTime::since_unix_epoch(
            now.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or(Duration::ZERO),
        );
        match verifier.verify_client_cert(leaf, intermediates, unix_now) {
            Ok(_) => Ok(presented),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            )) => {
                // webpki checks dates before signatures: only call it
                // EXPIRED if the chain verifies at a time it was valid.
                let while_valid = UnixTime::since_unix_epoch(
                    presented
                        .expires_at
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or(Duration::ZERO)
                        .saturating_sub(Duration::from_secs(1)),
                );
                match verifier.verify_client_cert(leaf, intermediates, while_valid) {
                    Ok(_) => Err(PresentedError::Expired(Box::new(presented))),
                    Err(error) => Err(PresentedError::Invalid(format!(
                        "chain does not verify: {error}"
                    ))),
                }
            }
            Err(error) => Err(PresentedError::Invalid(format!(
                "chain does not verify: {error}"
            ))),
        }
    }

    /// Checks a JWT-SVID's signature, audience and expiry at `now`.
    pub fn verify_jwt_svid(
        &self,
        token: &str,
        audience: &str,
        now: SystemTime,
    ) -> Result<PresentedCredential, PresentedError> {
        let invalid = |message: String| PresentedError::Invalid(message);
        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| invalid(format!("malformed JWT: {error}")))?;
        if header.alg != Algorithm::ES256 {
            return Err(invalid(format!("unsupported alg {:?}", header.alg)));
        }
        // The JWT-SVID spec allows `typ` JWT or JOSE, or none; anything else
        // (an audit checkpoint signed by the same key, say) is not an SVID.
        if let Some(typ) = header.typ.as_deref()
            && typ != "JWT"
            && typ != "JOSE"
        {
            let shown: String = typ.chars().take(64).collect();
            return Err(invalid(format!(
                "typ {shown:?} is not a JWT-SVID's (JWT, JOSE or none)"
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| invalid("JWT has no kid".to_owned()))?;
        let authority = self
            .bundle
            .jwt_authorities
            .iter()
            .find(|authority| authority.kid == kid)
            .ok_or_else(|| invalid(format!("no JWT authority with kid {kid}")))?;
        let key = DecodingKey::from_ec_components(&authority.key.x, &authority.key.y)
            .map_err(|error| invalid(format!("bundle key: {error}")))?;
        // Signature and audience first, with expiry checked below against
        // `now` (not the process clock).
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[audience]);
        validation.validate_exp = false;
        validation.required_spec_claims = ["exp", "sub", "aud"]
            .iter()
            .map(|c| (*c).to_owned())
            .collect();
        let claims = jsonwebtoken::decode::<JwtSvidClaims>(token, &key, &validation)
            .map_err(|error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                    invalid(format!("token is not for audience {audience:?}"))
                }
                jsonwebtoken::errors::ErrorKind::Json(_)
                | jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(_) => {
                    invalid("not a jitid JWT-SVID: missing claims".to_owned())
                }
                _ => invalid(format!("token does not verify: {error}")),
            })?
            .claims;
        let presented = PresentedCredential {
            spiffe_id: claims.sub.clone(),
            credential_id: claims.jti.clone(),
            is_x509: false,
            grant: GrantExtension {
                grant_id: claims.jitid_grant,
                task_id: claims.jitid_task,
                entitlement: claims.jitid_entitlement,
                actions: claims.scope.split(' ').map(str::to_owned).collect(),
                epoch: claims.jitid_epoch,
                break_glass: claims.jitid_break_glass,
                parent_grant_ids: claims.jitid_parents,
            },
            expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(claims.exp),
            actors: claims.act.map(|act| act.flatten()).unwrap_or_default(),
            confirmation: claims.cnf.map(|cnf| cnf.x5t_s256),
        };
        if presented.expires_at <= now {
            return Err(PresentedError::Expired(Box::new(presented)));
        }
        Ok(presented)
    }
}

/// Why a JWS signed with [`Authority::sign_jws`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwsError {
    /// Not a compact JWS with a readable header.
    #[error("malformed: {0}")]
    Malformed(String),
    /// Not ES256, or another `typ` than the one expected.
    #[error("wrong type")]
    WrongType,
    /// The header names no key.
    #[error("no kid")]
    NoKid,
    /// Signed by a key the bundle does not hold.
    #[error("signed by a key not in the bundle (kid {0})")]
    UnknownKey(String),
    /// The bundle's key cannot be used.
    #[error("bundle key: {0}")]
    BadKey(String),
    /// The signature or the claims do not verify.
    #[error("does not verify: {0}")]
    Invalid(String),
}

/// Checks a compact JWS of `typ` (signed by [`Authority::sign_jws`])
/// against the JWT keys of a trust bundle, and returns its claims. The
/// claims' meaning (and any expiry) is for the caller to judge.
pub fn verify_jws<T: serde::de::DeserializeOwned>(
    token: &str,
    typ: &str,
    authorities: &[JwtAuthority],
) -> Result<T, JwsError> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|error| JwsError::Malformed(error.to_string()))?;
    if header.alg != Algorithm::ES256 || header.typ.as_deref() != Some(typ) {
        return Err(JwsError::WrongType);
    }
    let kid = header.kid.ok_or(JwsError::NoKid)?;
    let authority = authorities
        .iter()
        .find(|authority| authority.kid == kid)
        .ok_or_else(|| JwsError::UnknownKey(kid.clone()))?;
    let key = DecodingKey::from_ec_components(&authority.key.x, &authority.key.y)
        .map_err(|error| JwsError::BadKey(error.to_string()))?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<T>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|error| JwsError::Invalid(error.to_string()))
}
