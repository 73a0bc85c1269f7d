//! The events of attestation identities and join tokens: an identity
//! issued (renewed or bootstrapped), revoked, and a join token created or
//! used. They name an identity by its serial and a join token by a short
//! prefix of its hash (its id), never by the token.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::codec;

named! {
/// How the server came to issue an attestation identity.
pub enum IssuedVia {
    /// Renewed with the identity before it.
    Renewed => "renewed",
    /// For a join token.
    Bootstrapped => "bootstrapped",
}
}

named! {
/// What an identity revocation names.
pub enum IdentityTargetKind {
    /// One identity, by serial.
    Serial => "serial",
    /// Every identity of a SPIFFE ID issued before the revocation.
    SpiffeId => "spiffe_id",
}
}

/// `identity_issued`: the server signed an attestation identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityIssued {
    /// Renewed or bootstrapped.
    pub via: IssuedVia,
    /// Its serial, lowercase hex.
    pub serial: String,
    /// The SPIFFE ID it carries.
    pub spiffe_id: String,
    /// When it expires.
    #[serde(with = "codec::seconds")]
    pub not_after: SystemTime,
    /// Renewed: the serial of the identity that asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewed_from: Option<String>,
    /// Bootstrapped: the join token's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_token: Option<String>,
}

/// `identity_revoked`: an admin revoked an attestation identity by serial,
/// or every identity of a SPIFFE ID issued before now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRevoked {
    /// A serial or a SPIFFE ID.
    pub target: IdentityTargetKind,
    /// Which, as the admin named it.
    pub value: String,
    /// The SPIFFE ID revoked, when known (a serial never seen has none).
    pub spiffe_id: Option<String>,
    /// Why (may be empty).
    pub reason: String,
    /// The grants of that SPIFFE ID it ended.
    pub grants_ended: Vec<String>,
}

/// `join_token_created`: an admin created a join token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenCreated {
    /// The token's id: the first 12 hex digits of its SHA-256.
    pub token: String,
    /// The SPIFFE ID the identity it bootstraps will carry.
    pub spiffe_id: String,
    /// When it expires, unused.
    #[serde(with = "codec::seconds")]
    pub expires_at: SystemTime,
}

/// `join_token_used`: a join token was exchanged for an attestation
/// identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenUsed {
    /// The token's id.
    pub token: String,
    /// Who created it.
    pub created_by: String,
    /// The serial of the identity issued for it.
    pub serial: String,
    /// The caller's address, when known.
    pub source: Option<String>,
}
