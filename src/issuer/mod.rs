//! The use cases: turn an attested caller's request into a decision, a
//! grant, a signed credential and a store record. Knows nothing of gRPC,
//! TLS or Redis; everything arrives through plain types and traits.
//!
//! [`Issuer`] holds what every use case shares (authority, catalogue,
//! store, trail, clock); each use case has its own file:
//! [`request`] (the validated requests), `issue` (X.509 and JWT, new or
//! existing grant, and RequestGrant), `decide` (policy at request time),
//! `approval`, `review`, `revoke` (revocation and completion), `verify`,
//! `delegate`, `relying` (relying parties and proof of removal), `grants`
//! (reading grants), `identity` (attestation identities: the denylist
//! checked at every attestation, renewal, join tokens, revocation),
//! `events` (the audit records they write) and `token` (what a caller
//! attested by an OIDC token may do).
//!
//! Audit before effect: every use case that records a grant, a credential,
//! an approval, a review or a delegation appends its audit events before
//! the caller hears of it, and undoes the store write when the trail
//! refuses them (see `Issuer::audit_or_undo`).

mod approval;
mod caller;
mod decide;
mod delegate;
mod events;
mod grants;
mod identity;
mod issue;
mod mint;
mod relying;
pub mod request;
mod review;
mod revoke;
mod token;
mod verify;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::audit::{AuditError, AuditLog, Auditor, Record};
use crate::ca::{Authority, CaError, CsrError, TrustBundle};
use crate::clock::Clock;
use crate::grant::{Grant, GrantId};
use crate::policy::{Catalogue, Denial, IdPattern};
use crate::store::{GrantStore, StoreError};

pub use self::caller::{Attestation, AttestationMethod, Caller, IdentityEvidence, OidcEvidence};
pub use self::grants::GrantFilter;
pub use self::identity::{
    AttestationRefusal, CreatedJoinToken, DEFAULT_JOIN_TOKEN_TTL, IdentityIssuedOut,
    IdentityLimits, IdentityRevokeOutcome, IdentityTarget, JOIN_TOKEN_PREFIX, MAX_JOIN_TOKEN_TTL,
};
pub use self::issue::{JwtIssued, X509Issued};
pub use self::relying::{PartyRemoval, RemovalStatus};
pub use self::request::{
    DelegationRequest, ExistingGrant, GrantFields, GrantRequest, MAX_ACTIONS, MAX_AUDIENCE_BYTES,
    MAX_AUDIENCES, MAX_ENTITLEMENT_BYTES, MAX_JUSTIFICATION_BYTES, MAX_NAME_BYTES,
    MAX_TICKET_BYTES, NewGrant,
};
pub use self::revoke::{CompleteTarget, Outcome, RevokeOutcome, RevokeTarget};
pub use self::verify::{Presented, Verdict, VerifyStatus};

pub use crate::store::{DEFAULT_ACK_BOUND, DEFAULT_PARTY_TTL};

/// How long an attestation identity lives unless configured (and the
/// longest it may live).
pub const DEFAULT_IDENTITY_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why an issuance failed. Nothing was recorded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// Policy refused the request.
    #[error(transparent)]
    Denied(#[from] Denial),
    /// A request field is malformed.
    #[error("{field}: {message}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The CSR is unusable.
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// The grant store failed; nothing was issued.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Signing failed.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The named grant or credential is unknown or expired.
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this to that target.
    #[error("{0}")]
    Forbidden(String),
    /// The grant is not in a state that allows this (pending, denied,
    /// ended), or the entitlement needs approval first.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The audit trail could not be written; the operation did not
    /// complete (fail closed).
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The caller's evidence does not hold for this request (an OIDC token
    /// used before); nothing was recorded.
    #[error("{0}")]
    Unauthenticated(String),
}

/// The issuer: policy, CA, store and clock behind one API.
pub struct Issuer {
    authority: Arc<Authority>,
    /// Swapped whole on reload; each request works with one snapshot.
    catalogue: RwLock<Arc<Catalogue>>,
    store: Arc<dyn GrantStore>,
    clock: Arc<dyn Clock>,
    admins: Vec<IdPattern>,
    /// Callers besides admins that may read the audit trail.
    auditors: Vec<IdPattern>,
    environment: String,
    auditor: Option<Auditor>,
    /// Share of liveness checks recorded in the audit trail, 0 to 1.
    liveness_sample: f64,
    /// Woken whenever this issuer changes a grant's state, so watchers
    /// look again at once (they also poll, for changes made by replicas).
    changes: Arc<tokio::sync::Notify>,
    /// How long a relying party may take to apply a revocation.
    ack_bound: Duration,
    /// How long a silent relying party stays registered.
    party_ttl: Duration,
    /// Each relying-party name and the SPIFFE IDs that may use it.
    party_names: BTreeMap<String, IdPattern>,
    /// How long attestation identities live.
    identity_limits: IdentityLimits,
}

// === impl IssueError ===

impl IssueError {
    /// Whether the request itself was malformed (as opposed to refused,
    /// or failed on the server's side).
    pub fn is_invalid_argument(&self) -> bool {
        match self {
            Self::InvalidField { .. } | Self::Csr(_) => true,
            Self::Denied(denial) => matches!(
                denial,
                Denial::NothingRequested | Denial::TtlAboveMaximum { .. } | Denial::TtlTooShort
            ),
            Self::Ca(CaError::Invalid(_)) => false,
            _ => false,
        }
    }

    /// Whether the caller's evidence was refused.
    pub fn is_unauthenticated(&self) -> bool {
        matches!(self, Self::Unauthenticated(_))
    }

    /// Whether the target's state does not allow the operation.
    pub fn is_failed_precondition(&self) -> bool {
        matches!(self, Self::FailedPrecondition(_))
    }

    /// Whether policy or ownership refused the caller.
    pub fn is_permission_denied(&self) -> bool {
        (matches!(self, Self::Denied(_)) && !self.is_invalid_argument())
            || matches!(self, Self::Forbidden(_))
    }

    /// Whether the named target does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_))
    }

    /// Whether a dependency is down and a retry may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Store(
                StoreError::Unavailable(_)
                    | StoreError::NotReplicated { .. }
                    | StoreError::EpochChanged(_)
            ) | Self::Audit(_)
        )
    }
}

// === impl Issuer ===

// === impl Issuer ===

impl Issuer {
    /// Wires the issuer.
    pub fn new(
        authority: Arc<Authority>,
        catalogue: Catalogue,
        store: Arc<dyn GrantStore>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            authority,
            catalogue: RwLock::new(Arc::new(catalogue)),
            store,
            clock,
            admins: Vec::new(),
            auditors: Vec::new(),
            environment: String::new(),
            auditor: None,
            liveness_sample: 1.0,
            changes: Arc::new(tokio::sync::Notify::new()),
            ack_bound: DEFAULT_ACK_BOUND,
            party_ttl: DEFAULT_PARTY_TTL,
            party_names: BTreeMap::new(),
            identity_limits: IdentityLimits {
                ttl: DEFAULT_IDENTITY_TTL,
                max_ttl: DEFAULT_IDENTITY_TTL,
            },
        }
    }

    /// Sets how long a relying party may take to apply a revocation before
    /// it is flagged, how long a silent one stays registered, and the
    /// relying-party names with the SPIFFE IDs that may use each (any
    /// other name is refused).
    pub fn with_relying_parties(
        mut self,
        ack_bound: Duration,
        party_ttl: Duration,
        names: BTreeMap<String, IdPattern>,
    ) -> Self {
        self.ack_bound = ack_bound;
        self.party_ttl = party_ttl;
        self.party_names = names;
        self
    }

    /// Whether `name` is a relying-party name of the config.
    pub fn is_relying_party_name(&self, name: &str) -> bool {
        self.party_names.contains_key(name)
    }

    /// Sets the environment conditions see as `context.environment`.
    pub fn with_environment(mut self, environment: String) -> Self {
        self.environment = environment;
        self
    }

    /// Records every request, decision, approval, issuance, revocation
    /// and review in `auditor`'s trail; operations fail when it cannot
    /// be written (unless it runs degraded).
    pub fn with_auditor(mut self, auditor: Auditor) -> Self {
        self.auditor = Some(auditor);
        self
    }

    /// Records this share (0 to 1, default 1: every one) of `Verify`
    /// answers in the audit trail.
    pub fn with_liveness_sample(mut self, share: f64) -> Self {
        self.liveness_sample = share.clamp(0.0, 1.0);
        self
    }

    /// Seals the audit trail's JSON-lines file now (at shutdown).
    pub async fn seal_audit(&self) {
        if let Some(auditor) = &self.auditor {
            auditor.seal().await;
        }
    }

    /// Appends events to the audit trail, if one is configured.
    pub async fn audit(&self, records: Vec<Record>) -> Result<(), IssueError> {
        match &self.auditor {
            Some(auditor) => Ok(auditor.record(records).await?),
            None => Ok(()),
        }
    }

    /// Notified whenever this issuer changes a grant's state.
    pub fn changes(&self) -> Arc<tokio::sync::Notify> {
        self.changes.clone()
    }

    /// Lets callers matching `admins` revoke anything and read any grant.
    pub fn with_admins(mut self, admins: Vec<IdPattern>) -> Self {
        self.admins = admins;
        self
    }

    /// Lets callers matching `auditors` (and admins) read the audit trail.
    pub fn with_auditors(mut self, auditors: Vec<IdPattern>) -> Self {
        self.auditors = auditors;
        self
    }

    /// The central audit trail, for an admin or auditor to read.
    pub fn audit_trail(&self, caller: &Caller) -> Result<Arc<dyn AuditLog>, IssueError> {
        token::refuse_token(caller, "read the audit trail")?;
        if !self.is_admin(caller)
            && !self
                .auditors
                .iter()
                .any(|pattern| pattern.matches(&caller.spiffe_id))
        {
            return Err(IssueError::Forbidden(format!(
                "{} may not read the audit trail: only admins and auditors may",
                caller.spiffe_id
            )));
        }
        match &self.auditor {
            Some(auditor) => Ok(auditor.log().clone()),
            None => Err(IssueError::FailedPrecondition(
                "this server keeps no audit trail".to_owned(),
            )),
        }
    }

    /// The entitlement catalogue in force now.
    pub fn catalogue(&self) -> Arc<Catalogue> {
        self.catalogue
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Puts a new catalogue in force for the requests that follow.
    pub fn replace_catalogue(&self, catalogue: Catalogue) {
        *self
            .catalogue
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(catalogue);
    }

    /// Whether `caller` is an admin: never one attested by a token, whose
    /// SPIFFE ID comes from claims a CI job's author controls.
    fn is_admin(&self, caller: &Caller) -> bool {
        caller.by_token().is_none()
            && self
                .admins
                .iter()
                .any(|pattern| pattern.matches(&caller.spiffe_id))
    }

    /// The certificate authority.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The trust bundle.
    pub fn bundle(&self) -> &TrustBundle {
        self.authority.bundle()
    }

    /// The clock the issuer reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Whether `caller` may read `grant`: its subject, an admin, or an
    /// approver of its entitlement.
    fn may_read(&self, caller: &Caller, grant: &Grant) -> bool {
        grant.subject == caller.spiffe_id
            || self.is_admin(caller)
            || (caller.by_token().is_none()
                && self
                    .catalogue()
                    .entitlement(&grant.entitlement)
                    .is_some_and(|entitlement| entitlement.approver(&caller.spiffe_id)))
    }

    /// The grant, if it exists and belongs to `caller`.
    async fn owned_grant(&self, caller: &Caller, grant_id: GrantId) -> Result<Grant, IssueError> {
        match self.store.grant(grant_id).await? {
            Some(grant) if grant.subject == caller.spiffe_id => Ok(grant),
            Some(_) => Err(IssueError::Forbidden(format!(
                "grant {grant_id} belongs to another subject"
            ))),
            None => Err(IssueError::NotFound(format!("no live grant {grant_id}"))),
        }
    }

    /// Appends the events of a store write that has just happened; if the
    /// trail refuses them, undoes the write first, so the store never
    /// keeps a grant, credential, approval, review or delegation the trail
    /// does not show. The caller hears of the write only after this
    /// returns `Ok`.
    ///
    /// An undo that fails too (the store went down with the trail) is
    /// logged: what it leaves was never handed out, and expires with its
    /// grant.
    async fn audit_or_undo<F>(
        &self,
        records: Vec<Record>,
        undo: impl FnOnce() -> F,
    ) -> Result<(), IssueError>
    where
        F: Future<Output = Result<(), StoreError>>,
    {
        let Err(error) = self.audit(records).await else {
            return Ok(());
        };
        if let Err(undo_error) = undo().await {
            tracing::error!(
                %error,
                %undo_error,
                "the audit trail refused a write and undoing it failed; the record stays \
                 until it expires, never handed out"
            );
        }
        self.changes.notify_waiters();
        Err(error)
    }
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("authority", &self.authority)
            .field("entitlements", &self.catalogue().entitlements().len())
            .finish_non_exhaustive()
    }
}
