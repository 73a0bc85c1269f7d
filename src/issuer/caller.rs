//! Who is asking: the attested caller every use case takes, and how it
//! proved its SPIFFE ID. The attestation methods themselves live in the
//! `attest` module; this is what they yield.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::SystemTime;

use crate::policy::AttestationFacts;
pub use crate::policy::AttestationMethod;
use crate::spiffe_id::SpiffeId;

/// The attested workload making a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Its SPIFFE ID, from attestation.
    pub spiffe_id: SpiffeId,
    /// Its network address, when known.
    pub source: Option<IpAddr>,
    /// The `x5t#S256` thumbprint of the certificate it authenticated
    /// with, which JWT-SVIDs can be bound to.
    pub certificate_thumbprint: Option<String>,
    /// How it proved its SPIFFE ID, and the facts policy may use.
    pub attestation: Attestation,
}

/// How a caller proved its SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attestation {
    /// An mTLS client certificate: an attestation identity.
    Identity(IdentityEvidence),
    /// An OIDC token from a configured issuer (a CI platform, a
    /// Kubernetes cluster).
    Oidc(OidcEvidence),
}

/// The attestation identity a caller authenticated with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityEvidence {
    /// Its serial number, lowercase hex.
    pub serial: String,
    /// Its NotBefore.
    pub not_before: SystemTime,
    /// Its NotAfter.
    pub not_after: SystemTime,
}

/// The OIDC token a caller presented, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcEvidence {
    /// The name of the `[[attestation.oidc]]` entry that accepted it.
    pub provider: String,
    /// What makes the token unique: its `jti`, or a hash of the token.
    pub token_id: String,
    /// Its `exp`: no grant it attests outlives it.
    pub expires_at: SystemTime,
    /// The task its `task` template names, if the provider has one.
    pub task: Option<String>,
    /// Its claims, for policy and the audit trail.
    pub claims: BTreeMap<String, serde_json::Value>,
}

// === impl Caller ===

impl Caller {
    /// A caller attested by an identity, for tests and tools that build
    /// callers by hand.
    pub fn with_identity(spiffe_id: SpiffeId, evidence: IdentityEvidence) -> Self {
        Self {
            spiffe_id,
            source: None,
            certificate_thumbprint: None,
            attestation: Attestation::Identity(evidence),
        }
    }

    /// What policy sees of the attestation: the method, and a token's
    /// claims.
    pub fn attestation_facts(&self) -> AttestationFacts {
        AttestationFacts {
            method: self.attestation.method(),
            claims: match &self.attestation {
                Attestation::Identity(_) => BTreeMap::new(),
                Attestation::Oidc(token) => token.claims.clone(),
            },
        }
    }

    /// Whether the caller presented a bearer token: such a caller may only
    /// use the one grant its token made, and nothing an admin does.
    pub fn by_token(&self) -> Option<&OidcEvidence> {
        match &self.attestation {
            Attestation::Identity(_) => None,
            Attestation::Oidc(token) => Some(token),
        }
    }

    /// When the evidence stops being good: a grant attested by a token
    /// never outlives it. `None` for an identity, whose grants are bound
    /// by policy alone.
    pub fn attested_until(&self) -> Option<SystemTime> {
        match &self.attestation {
            Attestation::Identity(_) => None,
            Attestation::Oidc(token) => Some(token.expires_at),
        }
    }
}

// === impl Attestation ===

impl Attestation {
    /// The method.
    pub fn method(&self) -> AttestationMethod {
        match self {
            Self::Identity(_) => AttestationMethod::X509,
            Self::Oidc(_) => AttestationMethod::Oidc,
        }
    }
}
