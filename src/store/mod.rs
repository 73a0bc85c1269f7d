//! Where grants and the credentials minted under them are recorded, ended,
//! and checked for liveness.
//!
//! [`GrantStore`] is the seam between the issuer and its system of record.
//! [`MemoryStore`] is the embedded default; [`RedisStore`] shares grants
//! between replicas through Redis (standalone or Cluster). Both pass one
//! conformance suite (`tests/it/store_conformance.rs`).
//!
//! Rules every backend keeps:
//! - A grant and the first credential under it are recorded in one atomic
//!   step, or not at all.
//! - A grant is recorded under the store's current [`Epoch`]; a stale epoch
//!   is refused with [`StoreError::EpochChanged`], so a credential never
//!   carries an epoch its store does not vouch for.
//! - Ending a grant (completion or revocation) is final. A grant delegated
//!   from another is live only while every ancestor is.
//! - Nothing is kept past the expiry of what it describes.
//! - A token claimed for one grant ([`ReplayGuard`]) stays claimed until it
//!   expires.

pub mod identities;
mod memory;
mod redis;
mod replay;

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

pub use self::redis::{RedisStore, RedisStoreConfig};
pub use identities::IdentityStore;
pub use memory::MemoryStore;
pub use replay::{Claim, ReplayGuard};

use crate::grant::{Action, Credential, CredentialId, Epoch, Grant, GrantId, GrantState, TaskId};
use crate::spiffe_id::SpiffeId;

/// Most credentials one grant may carry.
pub const MAX_CREDENTIALS_PER_GRANT: usize = 64;

/// Most unexpired grants (live or ended) one subject may hold, unless
/// `[limits] max_grants_per_subject` says otherwise.
pub const DEFAULT_MAX_GRANTS_PER_SUBJECT: usize = 1000;

/// How long an acknowledged review is kept.
pub const REVIEW_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

pub use crate::grant::MAX_DELEGATION_DEPTH;

/// Errors returned by a [`GrantStore`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached; nothing was written. Callers may
    /// retry.
    #[error("grant store unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A grant with this id already exists; nothing was written.
    #[error("grant {0} already exists")]
    Conflict(GrantId),
    /// The grant carries an epoch that is no longer the store's; nothing
    /// was written. Mint again under the current epoch.
    #[error("store epoch changed to {0}")]
    EpochChanged(Epoch),
    /// A stored record could not be decoded.
    #[error("corrupt record {key}: {message}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The subject already holds as many unexpired grants as it may;
    /// nothing was written.
    #[error(
        "{subject} holds {cap} unexpired grants, the most one subject may (limits.max_grants_per_subject); complete tasks or let grants expire"
    )]
    SubjectFull {
        /// The subject.
        subject: SpiffeId,
        /// The cap.
        cap: usize,
    },
    /// A revocation was not acknowledged by enough replicas in time.
    #[error("revocation acknowledged by {acked} of {wanted} replicas")]
    NotReplicated {
        /// Replicas that acknowledged.
        acked: u64,
        /// Replicas required.
        wanted: u64,
    },
}

impl StoreError {
    /// Whether the store certainly wrote nothing (as opposed to, say, a
    /// timeout after which the write may have happened).
    pub fn nothing_written(&self) -> bool {
        matches!(
            self,
            Self::Conflict(_) | Self::EpochChanged(_) | Self::SubjectFull { .. }
        )
    }
}

/// How and why grants end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// `Completed` or `Revoked`.
    pub state: GrantState,
    /// Why, for the record: who ended it and what they said.
    pub reason: String,
    /// When.
    pub at: SystemTime,
}

/// Which grants to end.
#[derive(Debug, Clone, Copy)]
pub enum EndTarget<'a> {
    /// One grant.
    Grant(GrantId),
    /// Every active grant of `subject` for `task`.
    Task {
        /// The subject.
        subject: &'a SpiffeId,
        /// The task.
        task: &'a TaskId,
    },
    /// Every active grant of a subject.
    Subject(&'a SpiffeId),
}

/// What revoking one credential found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialRevocation {
    /// It was live and is revoked now.
    Revoked,
    /// It was revoked before (a retry).
    AlreadyRevoked,
    /// No unexpired record of it.
    NotFound,
}

/// What a credential presented to a relying party says about itself.
#[derive(Debug, Clone, Copy)]
pub struct LivenessQuery<'a> {
    /// Its id (serial or `jti`), which names its grant.
    pub credential: &'a CredentialId,
    /// The epoch it carries.
    pub epoch: &'a Epoch,
    /// The task it carries.
    pub task: &'a TaskId,
}

/// What the store knows about a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// Its grant is active and the credential is recorded and not revoked.
    Live(Grant),
    /// Its grant, or an ancestor of it, was completed or revoked.
    GrantEnded(Grant),
    /// The credential itself was revoked.
    CredentialRevoked(Grant),
    /// Its task was revoked.
    TaskRevoked {
        /// Why.
        reason: String,
    },
    /// It was minted under another epoch: the store's data was lost since.
    EpochReset,
    /// The store has no record of it: never issued here, or expired.
    NotFound,
}

/// One revocation or completion, as relying parties see it on the
/// revocation stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationEvent {
    /// The store epoch when it happened.
    pub epoch: Epoch,
    /// When.
    pub at: SystemTime,
    /// Grants that ended (every credential under them is no longer live).
    pub grants: Vec<GrantId>,
    /// A single credential that was revoked.
    pub credential: Option<CredentialId>,
    /// A task revoked for every holder.
    pub task: Option<TaskId>,
    /// Why.
    pub reason: String,
}

/// A reader of the revocation stream with a resume cursor.
#[async_trait]
pub trait RevocationFeed: Send {
    /// Events after `cursor` (`"0"`: from the oldest kept), waiting up to
    /// `wait` for one to arrive. Each comes with its own cursor.
    async fn read(
        &mut self,
        cursor: &str,
        wait: Duration,
    ) -> Result<Vec<(String, RevocationEvent)>, StoreError>;
}

/// A break-glass use waiting for (or closed by) a reviewer. Open reviews
/// are kept until acknowledged, however long that takes; acknowledged ones
/// for [`REVIEW_RETENTION`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    /// The break-glass grant.
    pub grant_id: GrantId,
    /// Who used break-glass.
    pub subject: SpiffeId,
    /// The entitlement.
    pub entitlement: String,
    /// The actions granted.
    pub actions: Vec<Action>,
    /// The task.
    pub task_id: TaskId,
    /// Why, as the requester said.
    pub justification: String,
    /// The ticket given, if any.
    pub ticket: String,
    /// When the grant was issued.
    pub opened_at: SystemTime,
    /// When the grant expires (or expired).
    pub expires_at: SystemTime,
    /// The acknowledgement, once given.
    pub ack: Option<ReviewAck>,
}

/// A reviewer's acknowledgement of a break-glass use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewAck {
    /// The attested reviewer.
    pub by: SpiffeId,
    /// When.
    pub at: SystemTime,
    /// What the reviewer found.
    pub comment: String,
}

/// What acknowledging a review found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckOutcome {
    /// Acknowledged now.
    Acked(Review),
    /// It was acknowledged before; nothing changed.
    AlreadyAcked(Review),
    /// No such review.
    NotFound,
}

/// What adding a credential under an existing grant found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// Recorded.
    Added,
    /// The grant is not active (pending, denied or ended); nothing written.
    NotActive,
    /// The grant has [`MAX_CREDENTIALS_PER_GRANT`] credentials already.
    Full,
    /// No unexpired record of the grant.
    NotFound,
}

/// The system of record for live grants.
#[async_trait]
pub trait GrantStore: ReplayGuard + Send + Sync + std::fmt::Debug + 'static {
    /// The attestation identity registry this backend keeps beside its
    /// grants, if it keeps one ([`MemoryStore`] and [`RedisStore`] do).
    fn identities(&self) -> Option<&dyn IdentityStore> {
        None
    }

    /// The epoch grants are recorded under now (may be cached).
    async fn epoch(&self) -> Result<Epoch, StoreError>;

    /// The epoch as the backend has it now, read afresh.
    async fn current_epoch(&self) -> Result<Epoch, StoreError> {
        self.epoch().await
    }

    /// Records a new grant together with the first credential minted under
    /// it: both are written, or neither is.
    async fn record_issuance(
        &self,
        grant: &Grant,
        credential: &Credential,
    ) -> Result<(), StoreError>;

    /// Records a grant with no credential yet: a request waiting for
    /// approval, or an approved grant credentials are minted under later.
    /// Refused like [`GrantStore::record_issuance`] on a stale epoch or an
    /// existing id.
    async fn record_grant(&self, grant: &Grant) -> Result<(), StoreError>;

    /// Replaces a pending grant (which has no credentials) by `next` if it
    /// is still exactly `current`; returns false when it changed meanwhile
    /// (another approval, a denial, a revocation), so the caller re-reads
    /// and decides again. Its expiry becomes `next`'s. With `current`
    /// decided and `next` pending, it puts back a decision the audit trail
    /// refused.
    async fn update_pending(&self, current: &Grant, next: &Grant) -> Result<bool, StoreError>;

    /// Removes grant `id` and its credentials as if never written: a grant
    /// whose audit events the trail refused, never handed out.
    async fn discard_grant(&self, id: GrantId) -> Result<(), StoreError>;

    /// Adds a credential under an active grant, under the grant's epoch.
    async fn add_credential(
        &self,
        grant: &Grant,
        credential: &Credential,
    ) -> Result<AddOutcome, StoreError>;

    /// Every unexpired grant that is still pending, any subject's, oldest
    /// first: what approvers work through.
    async fn pending_grants(&self) -> Result<Vec<Grant>, StoreError>;

    /// Opens a review of a break-glass use.
    async fn open_review(&self, review: &Review) -> Result<(), StoreError>;

    /// Open reviews, and acknowledged ones still kept, oldest first.
    async fn reviews(&self) -> Result<Vec<Review>, StoreError>;

    /// Acknowledges the review of grant `id`.
    async fn ack_review(&self, id: GrantId, ack: &ReviewAck) -> Result<AckOutcome, StoreError>;

    /// Removes the review of grant `id` (its issuance failed).
    async fn drop_review(&self, id: GrantId) -> Result<(), StoreError>;

    /// The grant with `id`, unless unknown or expired.
    async fn grant(&self, id: GrantId) -> Result<Option<Grant>, StoreError>;

    /// The unexpired credentials minted under grant `id`.
    async fn credentials(&self, id: GrantId) -> Result<Vec<Credential>, StoreError>;

    /// The unexpired grants of `subject` in any state, oldest first.
    async fn grants_of(&self, subject: &SpiffeId) -> Result<Vec<Grant>, StoreError>;

    /// Ends the active grants named by `target`; returns the ids ended now.
    /// Ending is idempotent: a grant already ended stays as it was.
    async fn end(&self, target: EndTarget<'_>, ending: &Ending)
    -> Result<Vec<GrantId>, StoreError>;

    /// Revokes one credential.
    async fn revoke_credential(
        &self,
        id: &CredentialId,
        ending: &Ending,
    ) -> Result<CredentialRevocation, StoreError>;

    /// Revokes every credential of `task`, whoever holds it, for `keep_for`
    /// (the longest any credential can live).
    async fn revoke_task(
        &self,
        task: &TaskId,
        ending: &Ending,
        keep_for: Duration,
    ) -> Result<(), StoreError>;

    /// Whether a credential is live.
    async fn liveness(&self, query: LivenessQuery<'_>) -> Result<Liveness, StoreError>;

    /// Appends an event to the revocation stream, which keeps events for
    /// `keep_for` (the longest any credential lives); returns its cursor.
    async fn publish(
        &self,
        event: &RevocationEvent,
        keep_for: Duration,
    ) -> Result<String, StoreError>;

    /// A reader of the revocation stream.
    async fn revocation_feed(&self) -> Result<Box<dyn RevocationFeed>, StoreError>;

    /// Records a relying party as heard from now (registering it if new);
    /// it is forgotten `keep_for` after it was last heard from.
    async fn register_relying_party(
        &self,
        party: &RelyingParty,
        keep_for: Duration,
    ) -> Result<(), StoreError>;

    /// The relying parties heard from within their `keep_for`, by name.
    async fn relying_parties(&self) -> Result<Vec<RelyingParty>, StoreError>;

    /// Records that relying party `party` applied the revocation event at
    /// `cursor` at `at`, kept for `keep_for`. The first record for a party
    /// stands.
    async fn mark_applied(
        &self,
        cursor: &str,
        party: &str,
        at: SystemTime,
        keep_for: Duration,
    ) -> Result<(), StoreError>;

    /// Who applied the event at `cursor`, and when.
    async fn applied(&self, cursor: &str) -> Result<Vec<(String, SystemTime)>, StoreError>;

    /// Marks the event at `cursor` as applied by everyone; true only for
    /// the first caller, so the fact is audited once.
    async fn mark_all_applied(&self, cursor: &str, keep_for: Duration) -> Result<bool, StoreError>;
}

/// How long a relying party may take to apply a revocation before it is
/// flagged, unless configured.
pub const DEFAULT_ACK_BOUND: Duration = Duration::from_secs(5);
/// How long a relying party stays registered without being heard from,
/// unless configured.
pub const DEFAULT_PARTY_TTL: Duration = Duration::from_secs(60);

/// A relying party that follows the revocation stream under a name and
/// acknowledges what it applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelyingParty {
    /// Its name: letters, digits, '.', '-', '_'.
    pub name: String,
    /// The identity that registered it.
    pub spiffe_id: SpiffeId,
    /// When it registered: revocations before that are not its to apply.
    pub registered_at: SystemTime,
    /// When it was last heard from.
    pub last_seen: SystemTime,
    /// The last cursor it acknowledged (empty: none yet).
    pub cursor: String,
}

/// The liveness of a recorded credential, by the same rules for every
/// backend: a task revocation ends grants created before it; an ended
/// grant ends its credentials; a revoked credential is revoked; and a
/// delegated grant lives only while its ancestors do.
async fn judge(
    store: &(impl GrantStore + ?Sized),
    grant: Grant,
    credential: &Credential,
    task_revocation: Option<(SystemTime, String)>,
) -> Result<Liveness, StoreError> {
    if let Some((at, reason)) = task_revocation
        && grant.created_at <= at
    {
        return Ok(Liveness::TaskRevoked { reason });
    }
    if grant.state != GrantState::Active {
        return Ok(Liveness::GrantEnded(grant));
    }
    if credential.revoked {
        return Ok(Liveness::CredentialRevoked(grant));
    }
    Ok(match ended_ancestor(store, &grant).await? {
        Some(ancestor) => Liveness::GrantEnded(ancestor),
        None => Liveness::Live(grant),
    })
}

/// Follows `grant`'s delegation chain; returns the first ancestor that is
/// no longer active (or missing), if any.
async fn ended_ancestor(
    store: &(impl GrantStore + ?Sized),
    grant: &Grant,
) -> Result<Option<Grant>, StoreError> {
    let mut next = grant.parent;
    for _ in 0..MAX_DELEGATION_DEPTH {
        let Some(parent_id) = next else {
            return Ok(None);
        };
        match store.grant(parent_id).await? {
            Some(parent) if parent.state == GrantState::Active => next = parent.parent,
            Some(parent) => return Ok(Some(parent)),
            // An expired or lost parent ends its children.
            None => return Ok(Some(grant.clone())),
        }
    }
    Ok(Some(grant.clone()))
}
