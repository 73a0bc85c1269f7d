//! The attestation identity registry and join tokens: which attestation
//! identities were issued (or first seen), which are revoked, and the
//! one-time tokens that bootstrap a host's first identity.
//!
//! [`IdentityStore`] is kept by the same backends as grants ([`MemoryStore`]
//! and [`RedisStore`], which hand it out through
//! [`GrantStore::identities`](super::GrantStore::identities)); both pass one
//! conformance suite (`tests/it/store_conformance/identities.rs`).
//!
//! Rules every backend keeps:
//! - [`IdentityStore::check_identity`] answers, in one step (one round trip),
//!   whether a presented identity is revoked (by serial, or by SPIFFE ID for
//!   identities issued before the revocation) and registers an identity it
//!   has not seen, so that identities minted offline are listed too.
//! - A revocation by SPIFFE ID is kept for `keep_for` (the longest an
//!   identity may live): after that nothing it covers can still be valid.
//!   A record is kept `keep_for` past its NotAfter, so expired identities
//!   are still listed for a while.
//! - A join token is kept by the SHA-256 of its text only, and is taken at
//!   most once: two replicas cannot both take it.
//!
//! [`MemoryStore`]: super::MemoryStore
//! [`RedisStore`]: super::RedisStore

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::StoreError;
use crate::spiffe_id::SpiffeId;

/// How an attestation identity came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IssuedVia {
    /// Renewed by the server with the identity before it (`RenewIdentity`).
    Renewed,
    /// Exchanged for a join token (`BootstrapIdentity`).
    Bootstrapped,
    /// Minted offline (`jitid ca issue-identity`, `jitid dev`) and
    /// registered when first seen at attestation.
    Offline,
    /// Never seen: a serial revoked before it was ever presented.
    Unseen,
}

/// One attestation identity, as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRecord {
    /// Its serial number, lowercase hex.
    pub serial: String,
    /// Its SPIFFE ID; `None` for a serial revoked before it was seen.
    pub spiffe_id: Option<SpiffeId>,
    /// Its NotBefore (`UNIX_EPOCH` when unseen).
    pub not_before: SystemTime,
    /// Its NotAfter (`UNIX_EPOCH` when unseen).
    pub not_after: SystemTime,
    /// How it came to be.
    pub via: IssuedVia,
    /// When it was issued: by the server, the moment it signed; offline,
    /// its NotBefore plus the back-dating. A revocation by SPIFFE ID covers
    /// the identities issued before it.
    pub issued_at: SystemTime,
    /// Its revocation, by serial or by SPIFFE ID, if revoked.
    pub revoked: Option<IdentityRevocation>,
}

/// Who revoked an identity, when and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRevocation {
    /// When.
    pub at: SystemTime,
    /// The admin's SPIFFE ID.
    pub by: String,
    /// Why (may be empty).
    pub reason: String,
}

/// An identity presented at attestation.
#[derive(Debug, Clone, Copy)]
pub struct PresentedIdentity<'a> {
    /// Its serial, lowercase hex.
    pub serial: &'a str,
    /// Its SPIFFE ID.
    pub spiffe_id: &'a SpiffeId,
    /// Its NotBefore.
    pub not_before: SystemTime,
    /// Its NotAfter.
    pub not_after: SystemTime,
    /// When it was issued, if the registry has not recorded it: its
    /// NotBefore plus the back-dating.
    pub issued_at: SystemTime,
}

/// What [`IdentityStore::check_identity`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityCheck {
    /// Not revoked (and now registered, if it was not).
    Good,
    /// Revoked, by serial or by SPIFFE ID.
    Revoked(IdentityRevocation),
}

/// What revoking one serial found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialRevocation {
    /// It was registered and is revoked now.
    Revoked(SpiffeId),
    /// It was revoked before (a retry).
    AlreadyRevoked(Option<SpiffeId>),
    /// The registry had not seen it: it is revoked for whenever it is
    /// presented, for as long as such an identity could live.
    Unseen,
}

/// A join token, as stored: its hash, never its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// SHA-256 of the token's text, lowercase hex.
    pub hash: String,
    /// The SPIFFE ID the identity it bootstraps will carry.
    pub spiffe_id: SpiffeId,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: SystemTime,
    /// When it stops being good; it is forgotten then.
    pub expires_at: SystemTime,
}

/// The attestation identity registry and join tokens.
#[async_trait]
pub trait IdentityStore: Send + Sync + std::fmt::Debug + 'static {
    /// Whether `presented` is revoked; registers it as
    /// [`IssuedVia::Offline`] when the registry has not seen it (revoked or
    /// not, so the list shows it was presented), kept `keep_for` past its
    /// NotAfter. One round trip.
    async fn check_identity(
        &self,
        presented: &PresentedIdentity<'_>,
        keep_for: Duration,
    ) -> Result<IdentityCheck, StoreError>;

    /// Records an identity the server has just issued, kept `keep_for`
    /// past its NotAfter.
    async fn record_identity(
        &self,
        record: &IdentityRecord,
        keep_for: Duration,
    ) -> Result<(), StoreError>;

    /// Forgets an identity as if never recorded: one whose audit events
    /// the trail refused, never handed out.
    async fn discard_identity(&self, serial: &str) -> Result<(), StoreError>;

    /// Revokes one identity by serial. An unseen serial is revoked all the
    /// same, kept `keep_for` (the longest an identity may live).
    async fn revoke_identity_serial(
        &self,
        serial: &str,
        revocation: &IdentityRevocation,
        keep_for: Duration,
    ) -> Result<SerialRevocation, StoreError>;

    /// Revokes every identity of `spiffe_id` issued before
    /// `revocation.at`, kept `keep_for` (the longest an identity may live).
    /// A later revocation of the same ID replaces an earlier one.
    async fn revoke_identity_id(
        &self,
        spiffe_id: &SpiffeId,
        revocation: &IdentityRevocation,
        keep_for: Duration,
    ) -> Result<(), StoreError>;

    /// Every identity kept, oldest issued first, each with its revocation
    /// (by serial, else by SPIFFE ID) if revoked.
    async fn identities(&self) -> Result<Vec<IdentityRecord>, StoreError>;

    /// Keeps a join token until it expires. A token with the same hash is
    /// left as it is.
    async fn put_join_token(&self, token: &JoinToken) -> Result<(), StoreError>;

    /// Takes the token with `hash`: returns it and forgets it, in one
    /// atomic step; `None` if unknown, expired or taken before.
    async fn take_join_token(&self, hash: &str) -> Result<Option<JoinToken>, StoreError>;
}

// === impl IssuedVia ===

impl IssuedVia {
    /// Its one name: `renewed`, `bootstrapped`, `offline` or `unseen`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Renewed => "renewed",
            Self::Bootstrapped => "bootstrapped",
            Self::Offline => "offline",
            Self::Unseen => "unseen",
        }
    }

    /// Parses [`IssuedVia::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Renewed,
            Self::Bootstrapped,
            Self::Offline,
            Self::Unseen,
        ]
        .into_iter()
        .find(|via| via.as_str() == text)
    }
}

impl std::fmt::Display for IssuedVia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl IdentityRecord ===

impl IdentityRecord {
    /// Whether a revocation by SPIFFE ID at `at` covers this identity.
    pub fn issued_before(&self, at: SystemTime) -> bool {
        self.issued_at < at
    }
}
