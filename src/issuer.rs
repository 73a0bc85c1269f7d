//! The use cases: turn an attested caller's request into a decision, a
//! grant, a signed credential and a store record. Knows nothing of gRPC,
//! TLS or Redis; everything arrives through plain types and traits.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;

use crate::audit::{AuditError, AuditLog, Auditor, EventKind, Record};
use crate::ca::{
    Actor, Authority, BACKDATE, CaError, Confirmation, CsrError, GrantExtension, JwtSvidClaims,
    LeafRequest, PresentedCredential, PresentedError, TrustBundle, VerifiedCsr,
    certificate_thumbprint,
};
use crate::clock::{Clock, unix_seconds, whole_seconds};
use crate::grant::{
    Action, Ancestor, ApprovalRecord, Credential, CredentialId, Delegation, Epoch, Grant, GrantId,
    GrantState, NameError, Shard, TaskId,
};
use crate::policy::{
    self, AccessRequest, Approval, Catalogue, Denial, Entitlement, IdPattern, IdentityMode,
    RequestContext,
};
use crate::spiffe_id::SpiffeId;
use crate::store::{
    AckOutcome, AddOutcome, CredentialRevocation, EndTarget, Ending, GrantStore, Liveness,
    LivenessQuery, RelyingParty, Review, ReviewAck, RevocationEvent, RevocationFeed, StoreError,
};

/// Most actions one request may name.
pub const MAX_ACTIONS: usize = 32;
/// Longest justification, in bytes.
pub const MAX_JUSTIFICATION_BYTES: usize = 1024;
/// Most audiences of one JWT-SVID.
pub const MAX_AUDIENCES: usize = 8;
/// Longest audience, in bytes.
pub const MAX_AUDIENCE_BYTES: usize = 256;
/// Longest ticket reference, in bytes.
pub const MAX_TICKET_BYTES: usize = 128;
/// Longest entitlement name in a request, in bytes.
pub const MAX_ENTITLEMENT_BYTES: usize = 64;
/// Longest delegation or relying party name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
pub use crate::store::{DEFAULT_ACK_BOUND, DEFAULT_PARTY_TTL};
/// Most revocation events one acknowledgement records.
const MAX_ACKED_EVENTS: usize = 10_000;

/// The attested workload making a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Its SPIFFE ID, from its client certificate.
    pub spiffe_id: SpiffeId,
    /// Its network address, when known.
    pub source: Option<IpAddr>,
    /// The `x5t#S256` thumbprint of the certificate it authenticated
    /// with, which JWT-SVIDs can be bound to.
    pub certificate_thumbprint: Option<String>,
}

/// What a caller asks a grant for, as received (not yet validated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantSpec {
    /// Entitlement name; empty means "find one covering `actions`".
    pub entitlement: String,
    /// Requested actions; empty means the entitlement's whole set.
    pub actions: Vec<String>,
    /// Task id; empty means "generate one".
    pub task_id: String,
    /// Requested TTL; `None` means the entitlement's default.
    pub ttl: Option<Duration>,
    /// Why the caller needs it.
    pub justification: String,
    /// A change or incident ticket reference.
    pub ticket: String,
    /// An emergency request: issued at once on an entitlement that allows
    /// it, flagged, and reviewed afterwards.
    pub break_glass: bool,
    /// Labels for the policy conditions (`context.labels`).
    pub labels: BTreeMap<String, String>,
    /// Mint under this approved grant instead of creating one; then only
    /// `ttl` may be set besides.
    pub grant_id: String,
}

/// An issued X.509-SVID.
#[derive(Debug, Clone)]
pub struct X509Issued {
    /// DER chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's serial, lowercase hex.
    pub serial: String,
    /// The SPIFFE ID it carries.
    pub spiffe_id: SpiffeId,
    /// The grant it was issued under.
    pub grant: Grant,
}

/// An issued JWT-SVID.
#[derive(Debug, Clone)]
pub struct JwtIssued {
    /// The compact JWS.
    pub token: String,
    /// Its `jti`.
    pub jti: String,
    /// The SPIFFE ID it carries (`sub`).
    pub spiffe_id: SpiffeId,
    /// The grant it was issued under.
    pub grant: Grant,
}

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
}

/// What to revoke, as named by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeTarget {
    /// A credential id (serial or `jti`).
    Credential(String),
    /// A grant id.
    Grant(String),
    /// A task id.
    Task(String),
    /// A subject's SPIFFE ID.
    Subject(String),
}

/// What a revocation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevokeOutcome {
    /// Grants ended by this call.
    pub grants: Vec<GrantId>,
    /// Whether a live credential was revoked.
    pub credential_revoked: bool,
    /// Whether the task was revoked for every holder.
    pub task_revoked: bool,
}

/// How a task ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Outcome {
    /// It did what it was for.
    #[default]
    Completed,
    /// It failed; its grants end all the same.
    Failed,
}

impl Outcome {
    /// `completed` or `failed`, as recorded.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

/// What a delegation asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DelegationSpec {
    /// The caller's grant to delegate from.
    pub parent_grant_id: String,
    /// The child's name: the last segment of its SPIFFE ID.
    pub name: String,
    /// Actions, a subset of the parent's; empty for all of them.
    pub actions: Vec<String>,
    /// Lifetime; `None` for what is left of the parent's.
    pub ttl: Option<Duration>,
    /// Why.
    pub justification: String,
}

/// One registered relying party's application of a revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartyRemoval {
    /// The party.
    pub party: RelyingParty,
    /// When it acknowledged the revocation, if it has.
    pub applied_at: Option<SystemTime>,
    /// Applied: from the revocation to the acknowledgement; otherwise how
    /// long it has been waiting.
    pub took: Duration,
    /// Not applied within the bound.
    pub overdue: bool,
}

/// How far the revocation of a grant has reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovalStatus {
    /// The grant.
    pub grant: Grant,
    /// The revocation event that ended it, with its cursor, if kept.
    pub event: Option<(String, RevocationEvent)>,
    /// The relying parties registered when it ended.
    pub parties: Vec<PartyRemoval>,
    /// How long a party may take before it is flagged.
    pub bound: Duration,
}

/// What the caller says is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompleteTarget {
    /// One of its grants.
    Grant(String),
    /// Its grants of a task.
    Task(String),
}

/// A credential presented to a relying party.
#[derive(Debug, Clone)]
pub enum Presented {
    /// An X.509-SVID chain, leaf first.
    X509(Vec<CertificateDer<'static>>),
    /// A JWT-SVID and the relying party's audience.
    Jwt {
        /// The token.
        token: String,
        /// The audience it is presented to.
        audience: String,
        /// The DER certificate its presenter authenticated with, if any:
        /// a bound token is valid only with the certificate it is bound to.
        presenter: Option<Vec<u8>>,
    },
}

/// The verdict on a presented credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyStatus {
    /// Authentic, unexpired, live.
    Valid,
    /// Authentic but ended (revoked, completed, or minted under a lost epoch).
    Revoked,
    /// Authentic but expired.
    Expired,
    /// Liveness unknown: the store is unreachable or has no record.
    Unknown,
    /// Not authentic, not for this audience, or not a jitid credential.
    Invalid,
}

impl VerifyStatus {
    /// The verdict's name, as the audit trail records it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::Unknown => "unknown",
            Self::Invalid => "invalid",
        }
    }
}

/// A verdict with its reason and what the credential claims.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The verdict.
    pub status: VerifyStatus,
    /// Why, in words.
    pub reason: String,
    /// What the credential claims, when it is authentic.
    pub credential: Option<PresentedCredential>,
}

/// Which grants to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantFilter {
    /// Whose; `None` means the caller's.
    pub subject: Option<String>,
    /// Only this task.
    pub task: Option<String>,
    /// Only this state.
    pub state: Option<GrantState>,
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
        }
    }

    /// Sets how long a relying party may take to apply a revocation before
    /// it is flagged, and how long a silent one stays registered.
    pub fn with_relying_parties(mut self, ack_bound: Duration, party_ttl: Duration) -> Self {
        self.ack_bound = ack_bound;
        self.party_ttl = party_ttl;
        self
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

    /// Records a `Verify` answer, if it falls in the sample: the
    /// credential's id, grant and task, and the verdict with its reason.
    pub async fn audit_liveness(
        &self,
        caller: &Caller,
        verdict: &Verdict,
    ) -> Result<(), IssueError> {
        if self.auditor.is_none() || self.liveness_sample <= 0.0 {
            return Ok(());
        }
        if self.liveness_sample < 1.0 {
            let draw = f64::from(uuid::Uuid::new_v4().as_bytes()[0]) / 256.0;
            if draw >= self.liveness_sample {
                return Ok(());
            }
        }
        let claimed = verdict.credential.as_ref();
        self.audit(vec![Record {
            kind: EventKind::LivenessChecked,
            at: self.clock.now(),
            actor: caller.spiffe_id.to_string(),
            subject: claimed.map(|c| c.spiffe_id.clone()),
            grant: claimed.map(|c| c.grant.grant_id.clone()),
            task: claimed.map(|c| c.grant.task_id.clone()),
            details: serde_json::json!({
                "status": verdict.status.as_str(),
                "reason": verdict.reason,
                "credential": claimed.map(|c| c.credential_id.clone()),
            }),
        }])
        .await
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

    fn is_admin(&self, caller: &Caller) -> bool {
        self.admins
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

    /// Issues an X.509-SVID for `caller` from a DER CSR: under a new grant
    /// decided now, or under the approved grant `spec.grant_id` names.
    pub async fn issue_x509(
        &self,
        caller: &Caller,
        spec: &GrantSpec,
        csr_der: &[u8],
    ) -> Result<X509Issued, IssueError> {
        let now = self.clock.now();
        if !spec.grant_id.is_empty() {
            let csr = VerifiedCsr::from_der(csr_der)?;
            let (grant, spiffe_id, expires_at) = self.approved_grant(caller, spec, now).await?;
            let (chain, serial, credential) =
                self.sign_x509(&csr, &spiffe_id, &grant, expires_at, now)?;
            let grant = self
                .record_under_grant(
                    caller,
                    spec,
                    "IssueX509Svid",
                    grant,
                    &credential,
                    &spiffe_id,
                    now,
                )
                .await?;
            return Ok(X509Issued {
                chain,
                serial,
                spiffe_id,
                grant,
            });
        }
        let decided = self
            .decide(caller, spec, "IssueX509Svid", None, now)
            .await?;
        let csr = VerifiedCsr::from_der(csr_der)?;
        let spiffe_id = decided.spiffe_id.clone();
        let ((chain, serial, credential), grant) = self
            .issue_new(&decided, |grant| {
                let (chain, serial, credential) =
                    self.sign_x509(&csr, &spiffe_id, &grant, grant.expires_at, now)?;
                // The signing CA may expire before the grant; the grant
                // never outlives its credential's issuer.
                let grant = Grant {
                    expires_at: credential.expires_at,
                    ..grant
                };
                Ok(((chain, serial, credential.clone()), grant, credential))
            })
            .await?;
        self.audit(decided.records(caller, &grant, Some((&credential, &decided.spiffe_id)), now))
            .await?;
        Ok(X509Issued {
            chain,
            serial,
            spiffe_id: decided.spiffe_id,
            grant,
        })
    }

    /// Issues a JWT-SVID for `caller` with the given audiences: under a new
    /// grant decided now, or under the approved grant `spec.grant_id` names.
    ///
    /// With `bind` (or on an entitlement with `bind_jwt`), the token is
    /// bound to the certificate `caller` authenticated with.
    pub async fn issue_jwt(
        &self,
        caller: &Caller,
        spec: &GrantSpec,
        audiences: &[String],
        bind: bool,
    ) -> Result<JwtIssued, IssueError> {
        let now = self.clock.now();
        let audiences = validate_audiences(audiences)?;
        if !spec.grant_id.is_empty() {
            let (grant, spiffe_id, expires_at) = self.approved_grant(caller, spec, now).await?;
            let bound_to = self.binding(caller, &grant.entitlement, bind)?;
            let catalogue = self.catalogue();
            if let Some(allowed) = catalogue
                .entitlement(&grant.entitlement)
                .and_then(|entitlement| entitlement.audiences.as_ref())
                && let Some(audience) = audiences.iter().find(|a| !allowed.contains(a))
            {
                return Err(Denial::AudienceNotAllowed {
                    entitlement: grant.entitlement.clone(),
                    audience: audience.clone(),
                }
                .into());
            }
            let expires_at = expires_at.min(self.authority.signing_not_after());
            let (token, jti, credential) = self.sign_jwt(
                &spiffe_id,
                &audiences,
                &grant,
                expires_at,
                bound_to.as_deref(),
                now,
            )?;
            let grant = self
                .record_under_grant(
                    caller,
                    spec,
                    "IssueJwtSvid",
                    grant,
                    &credential,
                    &spiffe_id,
                    now,
                )
                .await?;
            return Ok(JwtIssued {
                token,
                jti,
                spiffe_id,
                grant,
            });
        }
        let mut decided = self
            .decide(caller, spec, "IssueJwtSvid", Some(&audiences), now)
            .await?;
        decided.grant.expires_at = decided
            .grant
            .expires_at
            .min(self.authority.signing_not_after());
        let bound_to = self.binding(caller, &decided.grant.entitlement, bind)?;
        let spiffe_id = decided.spiffe_id.clone();
        let ((token, jti, credential), grant) = self
            .issue_new(&decided, |grant| {
                let (token, jti, credential) = self.sign_jwt(
                    &spiffe_id,
                    &audiences,
                    &grant,
                    grant.expires_at,
                    bound_to.as_deref(),
                    now,
                )?;
                Ok(((token, jti, credential.clone()), grant, credential))
            })
            .await?;
        self.audit(decided.records(caller, &grant, Some((&credential, &decided.spiffe_id)), now))
            .await?;
        Ok(JwtIssued {
            token,
            jti,
            spiffe_id: decided.spiffe_id,
            grant,
        })
    }

    /// Creates a grant without minting anything: a request that waits for
    /// approval, or (for an auto-approved or break-glass request) an active
    /// grant that credentials are minted under later with
    /// [`GrantSpec::grant_id`].
    pub async fn request_grant(
        &self,
        caller: &Caller,
        spec: &GrantSpec,
    ) -> Result<Grant, IssueError> {
        if !spec.grant_id.is_empty() {
            return Err(invalid(
                "grant_id",
                "must be empty: a request creates a new grant".to_owned(),
            ));
        }
        let now = self.clock.now();
        let decided = self.decide(caller, spec, "RequestGrant", None, now).await?;
        let break_glass = decided.grant.break_glass;
        if break_glass {
            self.open_review(&decided.grant).await?;
        }
        let mut epoch = self.store.epoch().await?;
        for attempt in 0..2 {
            let grant = Grant {
                epoch: epoch.clone(),
                ..decided.grant.clone()
            };
            match self.store.record_grant(&grant).await {
                Ok(()) => {
                    self.audit(decided.records(caller, &grant, None, now))
                        .await?;
                    return Ok(grant);
                }
                Err(StoreError::EpochChanged(current)) if attempt == 0 => epoch = current,
                Err(error) => {
                    if break_glass && error.nothing_written() {
                        self.drop_review(grant.id).await;
                    }
                    return Err(error.into());
                }
            }
        }
        if break_glass {
            self.drop_review(decided.grant.id).await;
        }
        Err(StoreError::Unavailable("store epoch keeps changing".into()).into())
    }

    /// Approves a pending grant. The approver must be one of the
    /// entitlement's approvers and not its requester, and may approve once;
    /// the grant turns active (its lifetime starting now) with the last
    /// approval needed.
    pub async fn approve(
        &self,
        caller: &Caller,
        grant_id: &str,
        comment: &str,
    ) -> Result<Grant, IssueError> {
        let id = parse_grant_id(grant_id)?;
        check_comment("comment", comment)?;
        for _ in 0..4 {
            let (current, entitlement) = self.pending_for_approver(caller, id).await?;
            if current
                .approvals
                .iter()
                .any(|approval| approval.approver == caller.spiffe_id)
            {
                return Err(IssueError::FailedPrecondition(format!(
                    "{} has already approved grant {id}",
                    caller.spiffe_id
                )));
            }
            let now = self.clock.now();
            let mut next = current.clone();
            next.approvals.push(ApprovalRecord {
                approver: caller.spiffe_id.clone(),
                at: now,
                comment: comment.to_owned(),
            });
            // A catalogue reload since the request may have lowered the
            // maximum: the grant never gets more than the entitlement allows now.
            next.ttl = next.ttl.min(entitlement.max_ttl);
            let needed = match &entitlement.approval {
                policy::ApprovalRule::Approvers { min_approvals, .. } => *min_approvals,
                policy::ApprovalRule::Auto => 1,
            };
            if next.approvals.len() >= needed as usize {
                next.state = GrantState::Active;
                next.expires_at = whole_seconds(now + next.ttl);
            }
            if self.store.update_pending(&current, &next).await? {
                self.changes.notify_waiters();
                self.audit(vec![grant_event(
                    EventKind::Approval,
                    caller,
                    &next,
                    now,
                    serde_json::json!({
                        "comment": comment,
                        "entitlement": next.entitlement,
                        "approvals": next.approvals.len(),
                        "needed": needed,
                        "state": next.state.as_str(),
                        "expires_at": rfc3339(next.expires_at),
                    }),
                )])
                .await?;
                return Ok(next);
            }
        }
        Err(IssueError::FailedPrecondition(format!(
            "grant {id} keeps changing; try again"
        )))
    }

    /// Denies a pending grant, with the same rules as [`Issuer::approve`].
    pub async fn deny(
        &self,
        caller: &Caller,
        grant_id: &str,
        reason: &str,
    ) -> Result<Grant, IssueError> {
        let id = parse_grant_id(grant_id)?;
        check_comment("reason", reason)?;
        for _ in 0..4 {
            let (current, _) = self.pending_for_approver(caller, id).await?;
            let mut next = current.clone();
            next.state = GrantState::Denied;
            next.end_reason = Some(if reason.is_empty() {
                format!("denied by {}", caller.spiffe_id)
            } else {
                format!("denied by {}: {reason}", caller.spiffe_id)
            });
            if self.store.update_pending(&current, &next).await? {
                self.changes.notify_waiters();
                self.audit(vec![grant_event(
                    EventKind::ApprovalDenied,
                    caller,
                    &next,
                    self.clock.now(),
                    serde_json::json!({ "reason": reason }),
                )])
                .await?;
                return Ok(next);
            }
        }
        Err(IssueError::FailedPrecondition(format!(
            "grant {id} keeps changing; try again"
        )))
    }

    /// The pending grant `id` and its entitlement, if `caller` may decide
    /// on it.
    async fn pending_for_approver(
        &self,
        caller: &Caller,
        id: GrantId,
    ) -> Result<(Grant, Entitlement), IssueError> {
        let grant = self
            .store
            .grant(id)
            .await?
            .ok_or_else(|| IssueError::NotFound(format!("no live grant {id}")))?;
        let catalogue = self.catalogue();
        let entitlement = catalogue.entitlement(&grant.entitlement).ok_or_else(|| {
            IssueError::FailedPrecondition(format!(
                "entitlement {:?} is no longer in the catalogue",
                grant.entitlement
            ))
        })?;
        if !entitlement.approver(&caller.spiffe_id) {
            return Err(IssueError::Forbidden(format!(
                "{} is not an approver of entitlement {:?}",
                caller.spiffe_id, grant.entitlement
            )));
        }
        if grant.subject == caller.spiffe_id {
            return Err(IssueError::Forbidden(format!(
                "{} requested grant {id} and may not approve or deny it (separation of duties)",
                caller.spiffe_id
            )));
        }
        if grant.state != GrantState::Pending {
            return Err(IssueError::FailedPrecondition(format!(
                "grant {id} is {}, not pending",
                grant.state.as_str()
            )));
        }
        Ok((grant, entitlement.clone()))
    }

    /// The grant `id` as `caller` may watch it: its requester, its
    /// entitlement's approvers and admins may. `None` once it expired.
    pub async fn watched_grant(
        &self,
        caller: &Caller,
        id: GrantId,
    ) -> Result<Option<Grant>, IssueError> {
        let Some(grant) = self.store.grant(id).await? else {
            return Ok(None);
        };
        if !self.may_read(caller, &grant) {
            return Err(IssueError::Forbidden(format!(
                "{} may not watch grant {id}",
                caller.spiffe_id
            )));
        }
        Ok(Some(grant))
    }

    fn may_read(&self, caller: &Caller, grant: &Grant) -> bool {
        grant.subject == caller.spiffe_id
            || self.is_admin(caller)
            || self
                .catalogue()
                .entitlement(&grant.entitlement)
                .is_some_and(|entitlement| entitlement.approver(&caller.spiffe_id))
    }

    /// Pending grants `caller` may approve: of entitlements it approves,
    /// requested by someone else.
    pub async fn awaiting_approval(&self, caller: &Caller) -> Result<Vec<Grant>, IssueError> {
        let catalogue = self.catalogue();
        let mut pending = self.store.pending_grants().await?;
        pending.retain(|grant| {
            grant.subject != caller.spiffe_id
                && !grant
                    .approvals
                    .iter()
                    .any(|approval| approval.approver == caller.spiffe_id)
                && catalogue
                    .entitlement(&grant.entitlement)
                    .is_some_and(|entitlement| entitlement.approver(&caller.spiffe_id))
        });
        Ok(pending)
    }

    /// Break-glass reviews `caller` may see: those of entitlements it
    /// reviews (all, for admins). Open ones only, unless `all`.
    pub async fn reviews(&self, caller: &Caller, all: bool) -> Result<Vec<Review>, IssueError> {
        let admin = self.is_admin(caller);
        let catalogue = self.catalogue();
        let mut reviews = self.store.reviews().await?;
        reviews.retain(|review| {
            (all || review.ack.is_none())
                && (admin
                    || catalogue
                        .entitlement(&review.entitlement)
                        .is_some_and(|entitlement| entitlement.reviewer(&caller.spiffe_id)))
        });
        Ok(reviews)
    }

    /// Closes the review of a break-glass grant with a comment. Only the
    /// entitlement's reviewers may, and never the one who used it.
    pub async fn ack_review(
        &self,
        caller: &Caller,
        grant_id: &str,
        comment: &str,
    ) -> Result<Review, IssueError> {
        let id = parse_grant_id(grant_id)?;
        check_comment("comment", comment)?;
        if comment.trim().is_empty() {
            return Err(invalid(
                "comment",
                "is required: say what the review found".to_owned(),
            ));
        }
        let review = self
            .store
            .reviews()
            .await?
            .into_iter()
            .find(|review| review.grant_id == id)
            .ok_or_else(|| IssueError::NotFound(format!("no review of grant {id}")))?;
        // Reviews of an entitlement since removed from the catalogue fall
        // to the admins.
        let reviewer = match self.catalogue().entitlement(&review.entitlement) {
            Some(entitlement) => entitlement.reviewer(&caller.spiffe_id),
            None => self.is_admin(caller),
        };
        if !reviewer {
            return Err(IssueError::Forbidden(format!(
                "{} does not review break-glass uses of entitlement {:?}",
                caller.spiffe_id, review.entitlement
            )));
        }
        if review.subject == caller.spiffe_id {
            return Err(IssueError::Forbidden(format!(
                "{} used break-glass on grant {id} and may not review it",
                caller.spiffe_id
            )));
        }
        let ack = ReviewAck {
            by: caller.spiffe_id.clone(),
            at: self.clock.now(),
            comment: comment.to_owned(),
        };
        match self.store.ack_review(id, &ack).await? {
            AckOutcome::Acked(review) => {
                self.audit(vec![Record {
                    kind: EventKind::ReviewAcknowledged,
                    at: ack.at,
                    actor: caller.spiffe_id.to_string(),
                    subject: Some(review.subject.to_string()),
                    grant: Some(review.grant_id.to_string()),
                    task: Some(review.task_id.to_string()),
                    details: serde_json::json!({
                        "entitlement": review.entitlement,
                        "comment": ack.comment,
                    }),
                }])
                .await?;
                Ok(review)
            }
            AckOutcome::AlreadyAcked(review) => Err(IssueError::FailedPrecondition(format!(
                "review of grant {id} was already acknowledged by {}",
                review.ack.map(|ack| ack.by.to_string()).unwrap_or_default()
            ))),
            AckOutcome::NotFound => Err(IssueError::NotFound(format!("no review of grant {id}"))),
        }
    }

    async fn open_review(&self, grant: &Grant) -> Result<(), IssueError> {
        tracing::warn!(
            grant = %grant.id,
            subject = %grant.subject,
            entitlement = %grant.entitlement,
            "break-glass grant issued; a review is open"
        );
        let opened = self
            .store
            .open_review(&Review {
                grant_id: grant.id,
                subject: grant.subject.clone(),
                entitlement: grant.entitlement.clone(),
                actions: grant.actions.clone(),
                task_id: grant.task_id.clone(),
                justification: grant.justification.clone(),
                ticket: grant.ticket.clone(),
                opened_at: grant.created_at,
                expires_at: grant.expires_at,
                ack: None,
            })
            .await;
        if let Err(error) = opened {
            // Written but not replicated in time: nothing is issued, so
            // take it back rather than leave a review of nothing.
            if matches!(error, StoreError::NotReplicated { .. }) {
                self.drop_review(grant.id).await;
            }
            return Err(error.into());
        }
        Ok(())
    }

    /// Best effort: a review of an issuance that failed is noise, not harm.
    async fn drop_review(&self, id: GrantId) {
        if let Err(error) = self.store.drop_review(id).await {
            tracing::warn!(%error, grant = %id, "could not drop the review of a failed break-glass issuance");
        }
    }

    /// Records a new grant with its first credential; a break-glass grant
    /// opens its review first, so no break-glass credential exists without
    /// one.
    async fn issue_new<T>(
        &self,
        decided: &Decided,
        mint: impl FnMut(Grant) -> Result<(T, Grant, Credential), IssueError>,
    ) -> Result<(T, Grant), IssueError> {
        match decided.approval {
            Approval::Auto => self.mint_and_record(&decided.grant, mint).await,
            Approval::BreakGlass => {
                self.open_review(&decided.grant).await?;
                let issued = self.mint_and_record(&decided.grant, mint).await;
                // Only when the grant was certainly not written: a timeout
                // may hide a write, and a break-glass grant must never be
                // without its review.
                if let Err(IssueError::Store(error)) = &issued
                    && error.nothing_written()
                {
                    self.drop_review(decided.grant.id).await;
                }
                issued
            }
            Approval::Required { min_approvals, .. } => {
                Err(IssueError::FailedPrecondition(format!(
                    "entitlement {:?} needs {min_approvals} approval(s): request a grant \
                     (RequestGrant, or `jitid fetch --wait`), then issue under it once approved",
                    decided.grant.entitlement
                )))
            }
        }
    }

    /// The active grant `spec.grant_id` names, owned by `caller`, with the
    /// SPIFFE ID its credentials carry and when the next one expires.
    async fn approved_grant(
        &self,
        caller: &Caller,
        spec: &GrantSpec,
        now: SystemTime,
    ) -> Result<(Grant, SpiffeId, SystemTime), IssueError> {
        if !spec.entitlement.is_empty()
            || !spec.actions.is_empty()
            || !spec.task_id.is_empty()
            || !spec.justification.is_empty()
            || !spec.ticket.is_empty()
            || spec.break_glass
            || !spec.labels.is_empty()
        {
            return Err(invalid(
                "grant_id",
                "names an existing grant: leave entitlement, actions, task_id, justification, \
                 ticket, labels and break_glass unset"
                    .to_owned(),
            ));
        }
        let id = parse_grant_id(&spec.grant_id)?;
        let grant = self.owned_grant(caller, id).await?;
        match grant.state {
            GrantState::Active => {}
            GrantState::Pending => {
                return Err(IssueError::FailedPrecondition(format!(
                    "grant {id} is pending approval ({} approval(s) so far)",
                    grant.approvals.len()
                )));
            }
            GrantState::Denied | GrantState::Completed | GrantState::Revoked => {
                return Err(IssueError::FailedPrecondition(format!(
                    "grant {id} is {}: {}",
                    grant.state.as_str(),
                    grant.end_reason.clone().unwrap_or_default()
                )));
            }
        }
        self.still_requester(&self.catalogue(), caller, &grant.entitlement)?;
        let expires_at = within_grant(spec.ttl, &grant, now, "")?;
        let spiffe_id = grant_spiffe_id(&grant)?;
        Ok((grant, spiffe_id, expires_at))
    }

    /// Records a credential minted under an existing grant and audits it;
    /// returns the grant as the caller sees it: expiring when this
    /// credential does.
    #[allow(clippy::too_many_arguments)]
    async fn record_under_grant(
        &self,
        caller: &Caller,
        spec: &GrantSpec,
        rpc: &'static str,
        grant: Grant,
        credential: &Credential,
        spiffe_id: &SpiffeId,
        now: SystemTime,
    ) -> Result<Grant, IssueError> {
        self.add_credential(&grant, credential).await?;
        self.audit(vec![
            received(caller, spec, rpc, now),
            issued(caller, &grant, credential, spiffe_id, now),
        ])
        .await?;
        Ok(Grant {
            expires_at: credential.expires_at,
            ..grant
        })
    }

    async fn add_credential(
        &self,
        grant: &Grant,
        credential: &Credential,
    ) -> Result<(), IssueError> {
        match self.store.add_credential(grant, credential).await? {
            AddOutcome::Added => Ok(()),
            AddOutcome::NotActive => Err(IssueError::FailedPrecondition(format!(
                "grant {} ended while the credential was minted; nothing was issued",
                grant.id
            ))),
            AddOutcome::NotFound => {
                Err(IssueError::NotFound(format!("no live grant {}", grant.id)))
            }
            AddOutcome::Full => Err(IssueError::FailedPrecondition(format!(
                "grant {} already has {} credentials; request a new grant",
                grant.id,
                crate::store::MAX_CREDENTIALS_PER_GRANT
            ))),
        }
    }

    /// Signs an X.509-SVID under `grant`, expiring at `expires_at` (or
    /// when the signing CA does, if sooner).
    fn sign_x509(
        &self,
        csr: &VerifiedCsr,
        spiffe_id: &SpiffeId,
        grant: &Grant,
        expires_at: SystemTime,
        now: SystemTime,
    ) -> Result<(Vec<CertificateDer<'static>>, String, Credential), IssueError> {
        let (credential_id, serial) = CredentialId::new_x509(grant.id);
        let signed = self.authority.sign_x509_svid(
            csr,
            LeafRequest {
                spiffe_id,
                expires_at,
                dns_names: &[],
                ip_addresses: &[],
            },
            &GrantExtension {
                grant_id: grant.id.to_string(),
                task_id: grant.task_id.to_string(),
                entitlement: grant.entitlement.clone(),
                actions: grant
                    .actions
                    .iter()
                    .map(|a| a.as_str().to_owned())
                    .collect(),
                epoch: grant.epoch.to_string(),
                break_glass: grant.break_glass,
                parent_grant_ids: parent_grant_ids(grant),
            },
            &serial,
            now,
        )?;
        let credential = Credential {
            id: credential_id,
            grant_id: grant.id,
            expires_at: signed.not_after,
            revoked: false,
        };
        Ok((signed.chain, signed.serial, credential))
    }

    /// Signs a JWT-SVID under `grant`, expiring at `expires_at`, bound to
    /// the certificate with thumbprint `bound_to` if given.
    fn sign_jwt(
        &self,
        spiffe_id: &SpiffeId,
        audiences: &[String],
        grant: &Grant,
        expires_at: SystemTime,
        bound_to: Option<&str>,
        now: SystemTime,
    ) -> Result<(String, String, Credential), IssueError> {
        let credential_id = CredentialId::new_jwt(grant.id);
        let claims = JwtSvidClaims {
            sub: spiffe_id.to_string(),
            aud: audiences.to_vec(),
            exp: unix_seconds(expires_at),
            iat: unix_seconds(now - BACKDATE),
            jti: credential_id.value().to_owned(),
            scope: grant
                .actions
                .iter()
                .map(Action::as_str)
                .collect::<Vec<_>>()
                .join(" "),
            jitid_grant: grant.id.to_string(),
            jitid_task: grant.task_id.to_string(),
            jitid_entitlement: grant.entitlement.clone(),
            jitid_epoch: grant.epoch.to_string(),
            jitid_break_glass: grant.break_glass,
            jitid_parents: parent_grant_ids(grant),
            act: grant.delegation.as_ref().and_then(|delegation| {
                let actors: Vec<&str> = delegation
                    .chain
                    .iter()
                    .map(|ancestor| ancestor.spiffe_id.as_str())
                    .collect();
                Actor::chain(&actors)
            }),
            cnf: bound_to.map(|thumbprint| Confirmation {
                x5t_s256: thumbprint.to_owned(),
            }),
        };
        let token = self.authority.sign_jwt_svid(&claims)?;
        let credential = Credential {
            id: credential_id,
            grant_id: grant.id,
            expires_at,
            revoked: false,
        };
        Ok((token, claims.jti, credential))
    }

    /// Mints a credential under the store's epoch and records it with its
    /// grant. A changed epoch is learnt at the write (nothing was written);
    /// then it mints once more under the new one, so a credential never
    /// carries an epoch its store does not vouch for.
    async fn mint_and_record<T>(
        &self,
        decided: &Grant,
        mut mint: impl FnMut(Grant) -> Result<(T, Grant, Credential), IssueError>,
    ) -> Result<(T, Grant), IssueError> {
        let mut epoch = self.store.epoch().await?;
        for attempt in 0..2 {
            let (minted, grant, credential) = mint(Grant {
                epoch: epoch.clone(),
                ..decided.clone()
            })?;
            match self.store.record_issuance(&grant, &credential).await {
                Ok(()) => return Ok((minted, grant)),
                Err(StoreError::EpochChanged(current)) if attempt == 0 => epoch = current,
                Err(error) => return Err(error.into()),
            }
        }
        Err(StoreError::Unavailable("store epoch keeps changing".into()).into())
    }

    /// Revokes a credential, grant, task or subject on behalf of `caller`.
    pub async fn revoke(
        &self,
        caller: &Caller,
        target: &RevokeTarget,
        reason: &str,
    ) -> Result<RevokeOutcome, IssueError> {
        if reason.len() > MAX_JUSTIFICATION_BYTES {
            return Err(invalid(
                "reason",
                format!("is longer than {MAX_JUSTIFICATION_BYTES} bytes"),
            ));
        }
        let admin = self.is_admin(caller);
        let ending = Ending {
            state: GrantState::Revoked,
            reason: ending_reason(caller, reason),
            at: self.clock.now(),
        };
        let mut outcome = RevokeOutcome::default();
        // Grants delegated from the target grant: ended with it, and
        // announced with it.
        let mut descendants = Vec::new();
        match target {
            RevokeTarget::Credential(text) => {
                let id = CredentialId::parse(text).ok_or_else(|| {
                    invalid("credential_id", "is not a jitid serial or jti".to_owned())
                })?;
                let grant_id = id
                    .grant_id()
                    .ok_or_else(|| invalid("credential_id", "names no grant".to_owned()))?;
                if !admin {
                    self.owned_grant(caller, grant_id).await?;
                }
                match self.store.revoke_credential(&id, &ending).await? {
                    CredentialRevocation::Revoked => outcome.credential_revoked = true,
                    // A retry: announce it again below.
                    CredentialRevocation::AlreadyRevoked => {}
                    CredentialRevocation::NotFound => {
                        return Err(IssueError::NotFound(format!(
                            "no live credential {}",
                            id.value()
                        )));
                    }
                }
            }
            RevokeTarget::Grant(text) => {
                let grant_id = parse_grant_id(text)?;
                let grant = if admin {
                    self.store
                        .grant(grant_id)
                        .await?
                        .ok_or_else(|| IssueError::NotFound(format!("no live grant {grant_id}")))?
                } else {
                    self.owned_grant(caller, grant_id).await?
                };
                outcome.grants = self.store.end(EndTarget::Grant(grant_id), &ending).await?;
                let (ended, all) = self.end_descendants(&grant, &ending).await?;
                outcome.grants.extend(ended);
                descendants = all;
            }
            RevokeTarget::Task(text) => {
                let task = TaskId::new(text).map_err(|error| name_error("task_id", text, error))?;
                if admin {
                    self.store
                        // Kept until every grant requested before it has
                        // expired, pending ones included.
                        .revoke_task(
                            &task,
                            &ending,
                            self.catalogue().longest_grant_life() + BACKDATE,
                        )
                        .await?;
                    outcome.task_revoked = true;
                }
                outcome.grants = self
                    .store
                    .end(
                        EndTarget::Task {
                            subject: &caller.spiffe_id,
                            task: &task,
                        },
                        &ending,
                    )
                    .await?;
            }
            RevokeTarget::Subject(text) => {
                let subject =
                    SpiffeId::new(text).map_err(|error| invalid("subject", error.to_string()))?;
                if !admin && subject != caller.spiffe_id {
                    return Err(IssueError::Forbidden(format!(
                        "{} may not revoke {subject}: only admins may revoke another subject",
                        caller.spiffe_id
                    )));
                }
                outcome.grants = self
                    .store
                    .end(EndTarget::Subject(&subject), &ending)
                    .await?;
            }
        }
        let mut event = RevocationEvent {
            epoch: self.store.epoch().await?,
            at: ending.at,
            grants: outcome.grants.clone(),
            credential: None,
            task: None,
            reason: ending.reason.clone(),
        };
        // A repeated revocation announces its whole target again, so an
        // event lost to an earlier failure (after the store write) is sent
        // after all.
        match target {
            RevokeTarget::Grant(text) => {
                event.grants = std::iter::once(parse_grant_id(text)?)
                    .chain(descendants)
                    .collect();
            }
            RevokeTarget::Credential(text) => event.credential = CredentialId::parse(text),
            RevokeTarget::Task(text) => {
                let task = TaskId::new(text).ok();
                event.grants = self.ended_grants(&caller.spiffe_id, task.as_ref()).await?;
                if outcome.task_revoked {
                    event.task = task;
                }
            }
            RevokeTarget::Subject(text) => {
                if let Ok(subject) = SpiffeId::new(text) {
                    event.grants = self.ended_grants(&subject, None).await?;
                }
            }
        }
        self.changes.notify_waiters();
        self.announce(&event).await?;
        let (kind, value) = match target {
            RevokeTarget::Credential(value) => ("credential", value),
            RevokeTarget::Grant(value) => ("grant", value),
            RevokeTarget::Task(value) => ("task", value),
            RevokeTarget::Subject(value) => ("subject", value),
        };
        // A revocation of one grant or credential is about that grant.
        let grant = match target {
            RevokeTarget::Grant(text) => GrantId::parse(text),
            RevokeTarget::Credential(text) => {
                CredentialId::parse(text).and_then(|id| id.grant_id())
            }
            RevokeTarget::Task(_) | RevokeTarget::Subject(_) => None,
        };
        self.audit(vec![Record {
            kind: EventKind::Revocation,
            at: ending.at,
            actor: caller.spiffe_id.to_string(),
            subject: None,
            grant: grant.map(|id| id.to_string()),
            task: None,
            details: serde_json::json!({
                "target": kind,
                "value": value,
                "reason": reason,
                "grants_ended": outcome.grants.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "credential_revoked": outcome.credential_revoked,
                "task_revoked": outcome.task_revoked,
                "lag_ms": lag_ms(ending.at, self.clock.now()),
            }),
        }])
        .await?;
        Ok(outcome)
    }

    /// The unexpired grants of `subject` (of `task`, if given) that have
    /// ended.
    async fn ended_grants(
        &self,
        subject: &SpiffeId,
        task: Option<&TaskId>,
    ) -> Result<Vec<GrantId>, IssueError> {
        Ok(self
            .store
            .grants_of(subject)
            .await?
            .into_iter()
            .filter(|grant| grant.state != GrantState::Active)
            .filter(|grant| task.is_none_or(|task| &grant.task_id == task))
            .map(|grant| grant.id)
            .collect())
    }

    /// Puts a revocation on the stream that relying parties follow. The
    /// store has recorded it already; a failure here is reported so the
    /// caller retries, which announces it again.
    async fn announce(&self, event: &RevocationEvent) -> Result<(), IssueError> {
        if event.grants.is_empty() && event.credential.is_none() && event.task.is_none() {
            return Ok(());
        }
        self.store
            .publish(event, self.catalogue().longest_ttl() + BACKDATE)
            .await?;
        Ok(())
    }

    /// A reader of the revocation stream.
    pub async fn revocation_feed(&self) -> Result<Box<dyn RevocationFeed>, IssueError> {
        Ok(self.store.revocation_feed().await?)
    }

    /// The store's epoch, read afresh.
    pub async fn current_epoch(&self) -> Result<Epoch, IssueError> {
        Ok(self.store.current_epoch().await?)
    }

    /// Ends the caller's grant (and every grant delegated from it), or its
    /// grants of a task, as completed or failed.
    pub async fn complete(
        &self,
        caller: &Caller,
        target: &CompleteTarget,
        outcome: Outcome,
    ) -> Result<Vec<GrantId>, IssueError> {
        let ending = Ending {
            state: GrantState::Completed,
            reason: format!("{} by {}", outcome.as_str(), caller.spiffe_id),
            at: self.clock.now(),
        };
        let (ended, announced) = match target {
            CompleteTarget::Grant(text) => {
                let grant_id = parse_grant_id(text)?;
                let grant = self.owned_grant(caller, grant_id).await?;
                let mut ended = self.store.end(EndTarget::Grant(grant_id), &ending).await?;
                let (more, descendants) = self.end_descendants(&grant, &ending).await?;
                ended.extend(more);
                (
                    ended,
                    std::iter::once(grant_id).chain(descendants).collect(),
                )
            }
            CompleteTarget::Task(text) => {
                let task = TaskId::new(text).map_err(|error| name_error("task_id", text, error))?;
                let ended = self
                    .store
                    .end(
                        EndTarget::Task {
                            subject: &caller.spiffe_id,
                            task: &task,
                        },
                        &ending,
                    )
                    .await?;
                (
                    ended,
                    self.ended_grants(&caller.spiffe_id, Some(&task)).await?,
                )
            }
        };
        self.changes.notify_waiters();
        // As with revocations, a retry announces everything ended again.
        self.announce(&RevocationEvent {
            epoch: self.store.epoch().await?,
            at: ending.at,
            grants: announced,
            credential: None,
            task: None,
            reason: ending.reason.clone(),
        })
        .await?;
        let (kind, value, grant, task) = match target {
            CompleteTarget::Grant(value) => ("grant", value, GrantId::parse(value), None),
            CompleteTarget::Task(value) => ("task", value, None, Some(value.clone())),
        };
        self.audit(vec![Record {
            kind: EventKind::TaskCompleted,
            at: ending.at,
            actor: caller.spiffe_id.to_string(),
            subject: Some(caller.spiffe_id.to_string()),
            grant: grant.map(|id| id.to_string()),
            task,
            details: serde_json::json!({
                "target": kind,
                "value": value,
                "outcome": outcome.as_str(),
                "grants_ended": ended.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "lag_ms": lag_ms(ending.at, self.clock.now()),
            }),
        }])
        .await?;
        Ok(ended)
    }

    /// Checks a presented credential: authenticity and expiry offline, then
    /// liveness in the store. A store that cannot be reached gives
    /// [`VerifyStatus::Unknown`], never `Valid`.
    pub async fn verify(&self, presented: &Presented) -> Verdict {
        let now = self.clock.now();
        let checked = match presented {
            Presented::X509(chain) => self.authority.verify_x509_svid(chain, now),
            Presented::Jwt {
                token,
                audience,
                presenter,
            } => self
                .authority
                .verify_jwt_svid(token, audience, now)
                .and_then(|credential| {
                    check_confirmation(&credential, presenter.as_deref())?;
                    Ok(credential)
                }),
        };
        let credential = match checked {
            Ok(credential) => credential,
            Err(PresentedError::Expired(credential)) => {
                return Verdict {
                    status: VerifyStatus::Expired,
                    reason: "credential expired".to_owned(),
                    credential: Some(*credential),
                };
            }
            Err(error) => {
                return Verdict {
                    status: VerifyStatus::Invalid,
                    reason: error.to_string(),
                    credential: None,
                };
            }
        };
        let verdict = |status, reason: String| Verdict {
            status,
            reason,
            credential: Some(credential.clone()),
        };
        let id = if credential.is_x509 {
            CredentialId::parse(&credential.credential_id)
        } else {
            CredentialId::parse(&format!("jwt:{}", credential.credential_id))
        };
        let (Some(id), Ok(task)) = (id, TaskId::new(&credential.grant.task_id)) else {
            return verdict(
                VerifyStatus::Invalid,
                "credential id or task is malformed".to_owned(),
            );
        };
        let epoch = Epoch::from_string(credential.grant.epoch.clone());
        let liveness = self
            .store
            .liveness(LivenessQuery {
                credential: &id,
                epoch: &epoch,
                task: &task,
            })
            .await;
        match liveness {
            Ok(Liveness::Live(_)) => verdict(VerifyStatus::Valid, "live".to_owned()),
            Ok(Liveness::GrantEnded(grant)) => verdict(
                VerifyStatus::Revoked,
                format!(
                    "grant {} {}: {}",
                    grant.id,
                    grant.state.as_str(),
                    grant.end_reason.unwrap_or_default()
                ),
            ),
            Ok(Liveness::CredentialRevoked(_)) => {
                verdict(VerifyStatus::Revoked, "credential revoked".to_owned())
            }
            Ok(Liveness::TaskRevoked { reason }) => {
                verdict(VerifyStatus::Revoked, format!("task revoked: {reason}"))
            }
            Ok(Liveness::EpochReset) => verdict(
                VerifyStatus::Revoked,
                "epoch reset: minted before the grant store lost its data".to_owned(),
            ),
            Ok(Liveness::NotFound) => verdict(
                VerifyStatus::Unknown,
                "the grant store has no record of it".to_owned(),
            ),
            Err(error) => {
                tracing::warn!(%error, "liveness check failed; answering UNKNOWN");
                verdict(VerifyStatus::Unknown, "grant store unavailable".to_owned())
            }
        }
    }

    /// The thumbprint a JWT-SVID of `entitlement` is bound to: the
    /// caller's certificate's, when asked or when the entitlement binds
    /// every token.
    fn binding(
        &self,
        caller: &Caller,
        entitlement: &str,
        asked: bool,
    ) -> Result<Option<String>, IssueError> {
        let always = self
            .catalogue()
            .entitlement(entitlement)
            .is_some_and(|entitlement| entitlement.bind_jwt);
        if !asked && !always {
            return Ok(None);
        }
        caller
            .certificate_thumbprint
            .clone()
            .map(Some)
            .ok_or_else(|| {
                IssueError::FailedPrecondition(
                    "a bound JWT-SVID needs the caller's mTLS client certificate".to_owned(),
                )
            })
    }

    /// Creates a child grant under one of `caller`'s active grants: a
    /// subset of its actions, expiring no later, one level deeper, within
    /// the entitlement's `delegation_depth`. Nothing is minted; credentials
    /// are issued under the child like under any active grant.
    pub async fn delegate(
        &self,
        caller: &Caller,
        spec: &DelegationSpec,
    ) -> Result<Grant, IssueError> {
        let now = self.clock.now();
        let parent_id = GrantId::parse(&spec.parent_grant_id)
            .ok_or_else(|| invalid("parent_grant_id", "is not a grant id (a UUID)".to_owned()))?;
        check_name("name", &spec.name)?;
        check_comment("justification", &spec.justification)?;
        let parent = self.owned_grant(caller, parent_id).await?;
        self.check_live_chain(&parent)?;
        for ancestor in parent.delegation.iter().flat_map(|d| &d.chain) {
            match self.store.grant(ancestor.grant_id).await? {
                Some(grant) => self.check_live_chain(&grant)?,
                None => {
                    return Err(IssueError::FailedPrecondition(format!(
                        "ancestor grant {} has expired",
                        ancestor.grant_id
                    )));
                }
            }
        }
        let catalogue = self.catalogue();
        let entitlement = self.still_requester(&catalogue, caller, &parent.entitlement)?;
        let depth = parent.delegation.as_ref().map_or(0, Delegation::depth) + 1;
        if entitlement.delegation_depth == 0 {
            return Err(IssueError::Forbidden(format!(
                "entitlement {:?} is not delegable (delegation_depth = 0)",
                entitlement.name
            )));
        }
        if depth > usize::from(entitlement.delegation_depth) {
            return Err(IssueError::Forbidden(format!(
                "a delegation from grant {parent_id} would be {depth} levels deep; entitlement \
                 {:?} allows {}",
                entitlement.name, entitlement.delegation_depth
            )));
        }
        let actions = delegated_actions(&parent, &spec.actions)?;
        let expires_at = within_grant(
            spec.ttl,
            &parent,
            now,
            ": a delegation never outlives its parent",
        )?;
        let actor = grant_spiffe_id(&parent)?;
        let spiffe_id = SpiffeId::new(&format!("{actor}/sub/{}", spec.name))
            .map_err(|error| invalid("name", format!("makes an invalid SPIFFE ID: {error}")))?;
        let chain: Vec<Ancestor> = std::iter::once(Ancestor {
            grant_id: parent.id,
            spiffe_id: actor,
        })
        .chain(
            parent
                .delegation
                .iter()
                .flat_map(|d| d.chain.iter().cloned()),
        )
        .collect();
        let decision = serde_json::json!({
            "outcome": "delegated",
            "parent": parent.id.to_string(),
            "parent_actions": parent.actions.iter().map(Action::as_str).collect::<Vec<_>>(),
            "parent_expires_at": rfc3339(parent.expires_at),
            "depth": depth,
            "delegation_depth": entitlement.delegation_depth,
            "actions_asked": spec.actions,
            "ttl_asked_seconds": spec.ttl.map(|ttl| ttl.as_secs()),
        });
        let mut grant = Grant {
            id: GrantId::generate(Shard::of(&caller.spiffe_id)),
            subject: caller.spiffe_id.clone(),
            entitlement: parent.entitlement.clone(),
            actions,
            task_id: parent.task_id.clone(),
            parent: Some(parent.id),
            justification: spec.justification.clone(),
            ticket: parent.ticket.clone(),
            created_at: now,
            expires_at,
            state: GrantState::Active,
            end_reason: None,
            epoch: self.store.epoch().await?,
            break_glass: parent.break_glass,
            per_task: parent.per_task,
            ttl: expires_at.duration_since(now).unwrap_or_default(),
            approvals: Vec::new(),
            decision: decision.to_string(),
            delegation: Some(Delegation { spiffe_id, chain }),
        };
        for attempt in 0..2 {
            match self.store.record_grant(&grant).await {
                Ok(()) => break,
                Err(StoreError::EpochChanged(current)) if attempt == 0 => grant.epoch = current,
                Err(error) => return Err(error.into()),
            }
        }
        // The parent may have ended while the child was written; the child
        // would be dead anyway (liveness follows ancestors), but it must
        // not show as active either.
        let parent_now = self.store.grant(parent.id).await?;
        if parent_now.is_none_or(|parent| parent.state != GrantState::Active) {
            let ending = Ending {
                state: GrantState::Revoked,
                reason: format!("parent grant {} ended while delegating", parent.id),
                at: self.clock.now(),
            };
            self.store.end(EndTarget::Grant(grant.id), &ending).await?;
            return Err(IssueError::FailedPrecondition(format!(
                "grant {} ended while delegating from it",
                parent.id
            )));
        }
        let delegation = grant.delegation.as_ref().map(|d| d.spiffe_id.to_string());
        self.audit(vec![
            Record {
                kind: EventKind::RequestReceived,
                at: now,
                actor: caller.spiffe_id.to_string(),
                subject: Some(caller.spiffe_id.to_string()),
                grant: Some(parent.id.to_string()),
                task: Some(parent.task_id.to_string()),
                details: serde_json::json!({
                    "rpc": "Delegate",
                    "entitlement": parent.entitlement,
                    "name": spec.name,
                    "actions": spec.actions,
                    "ttl_seconds": spec.ttl.map(|ttl| ttl.as_secs()),
                    "justification": spec.justification,
                }),
            },
            Record {
                kind: EventKind::Decision,
                at: now,
                actor: caller.spiffe_id.to_string(),
                subject: Some(caller.spiffe_id.to_string()),
                grant: Some(grant.id.to_string()),
                task: Some(grant.task_id.to_string()),
                details: serde_json::json!({
                    "outcome": "delegated",
                    "state": "active",
                    "entitlement": grant.entitlement,
                    "actions": grant.actions.iter().map(Action::as_str).collect::<Vec<_>>(),
                    "spiffe_id": delegation,
                    "parent": parent.id.to_string(),
                    "depth": depth,
                    "expires_at": rfc3339(grant.expires_at),
                    "ttl_seconds": grant.ttl.as_secs(),
                    "explanation": decision,
                }),
            },
        ])
        .await?;
        Ok(grant)
    }

    /// The entitlement `name` of the catalogue in force, if `caller` may
    /// still request it: what minting under or delegating from an existing
    /// grant needs.
    fn still_requester<'a>(
        &self,
        catalogue: &'a Catalogue,
        caller: &Caller,
        name: &str,
    ) -> Result<&'a Entitlement, IssueError> {
        let entitlement = catalogue
            .entitlement(name)
            .ok_or_else(|| Denial::UnknownEntitlement(name.to_owned()))?;
        if !entitlement.admits(&caller.spiffe_id) {
            return Err(Denial::NotARequester {
                caller: caller.spiffe_id.clone(),
                entitlement: name.to_owned(),
            }
            .into());
        }
        Ok(entitlement)
    }

    /// Refuses to delegate from a grant that is not active.
    fn check_live_chain(&self, grant: &Grant) -> Result<(), IssueError> {
        if grant.state == GrantState::Active {
            return Ok(());
        }
        Err(IssueError::FailedPrecondition(format!(
            "grant {} is {}{}: nothing can be delegated from it",
            grant.id,
            grant.state.as_str(),
            grant
                .end_reason
                .as_deref()
                .map(|reason| format!(" ({reason})"))
                .unwrap_or_default()
        )))
    }

    /// Ends the active grants delegated (at any depth) from `grant`, which
    /// all belong to its subject; returns those ended now, and every
    /// descendant still kept (to announce them all again on a retry).
    async fn end_descendants(
        &self,
        grant: &Grant,
        ending: &Ending,
    ) -> Result<(Vec<GrantId>, Vec<GrantId>), IssueError> {
        // Only a delegable entitlement's grants have descendants, and
        // finding them lists every grant of the subject (a CI runner may
        // hold thousands), so other grants end without that read. Should
        // the catalogue stop allowing delegation while children live, they
        // still die with their parent: liveness follows the ancestors a
        // credential names.
        if self
            .catalogue()
            .entitlement(&grant.entitlement)
            .is_some_and(|entitlement| entitlement.delegation_depth == 0)
        {
            return Ok((Vec::new(), Vec::new()));
        }
        let descendants: Vec<Grant> = self
            .store
            .grants_of(&grant.subject)
            .await?
            .into_iter()
            .filter(|other| {
                other
                    .delegation
                    .as_ref()
                    .is_some_and(|delegation| delegation.descends_from(grant.id))
            })
            .collect();
        let mut ended = Vec::new();
        for descendant in &descendants {
            if descendant.state == GrantState::Active {
                ended.extend(
                    self.store
                        .end(EndTarget::Grant(descendant.id), ending)
                        .await?,
                );
            }
        }
        Ok((ended, descendants.iter().map(|grant| grant.id).collect()))
    }

    /// Relying party `name` of `caller` as heard from now at `cursor`, to
    /// be written, and its record before; refuses a name another identity
    /// holds.
    async fn relying_party(
        &self,
        caller: &Caller,
        name: &str,
        cursor: &str,
    ) -> Result<(RelyingParty, Option<RelyingParty>), IssueError> {
        check_name("relying_party", name)?;
        let now = self.clock.now();
        let previous = self
            .store
            .relying_parties()
            .await?
            .into_iter()
            .find(|party| party.name == name);
        if let Some(previous) = &previous
            && previous.spiffe_id != caller.spiffe_id
        {
            return Err(IssueError::Forbidden(format!(
                "relying party {name:?} is registered by {}",
                previous.spiffe_id
            )));
        }
        let party = RelyingParty {
            name: name.to_owned(),
            spiffe_id: caller.spiffe_id.clone(),
            registered_at: previous.as_ref().map_or(now, |party| party.registered_at),
            last_seen: now,
            cursor: cursor.to_owned(),
        };
        Ok((party, previous))
    }

    /// A relying party starts following the revocation stream from
    /// `cursor` under `name`.
    pub async fn register_relying_party(
        &self,
        caller: &Caller,
        name: &str,
        cursor: &str,
    ) -> Result<(), IssueError> {
        let (mut party, previous) = self.relying_party(caller, name, cursor).await?;
        // Re-registering (a reconnect) keeps the acknowledged cursor, so
        // nothing between it and the new one goes unrecorded.
        if let Some(previous) = previous {
            party.cursor = previous.cursor;
        }
        self.store
            .register_relying_party(&party, self.party_ttl)
            .await?;
        Ok(())
    }

    /// Relying party `name` has applied every revocation up to `cursor`:
    /// records when each event since its last acknowledgement was applied,
    /// and audits each event every registered party has now applied.
    /// Returns how many events it recorded.
    pub async fn ack_revocations(
        &self,
        caller: &Caller,
        name: &str,
        cursor: &str,
    ) -> Result<usize, IssueError> {
        let now = self.clock.now();
        let (mut party, previous) = self.relying_party(caller, name, cursor).await?;
        let from = previous.map(|party| party.cursor).unwrap_or_default();
        if cursor.is_empty() || cursor == from {
            party.cursor = from;
            self.store
                .register_relying_party(&party, self.party_ttl)
                .await?;
            return Ok(0);
        }
        // The events after the last acknowledgement, up to `cursor`; a
        // cursor that is not on the stream is refused before anything is
        // written.
        let mut feed = self.store.revocation_feed().await?;
        let mut events = Vec::new();
        let mut after = if from.is_empty() {
            "0".to_owned()
        } else {
            from
        };
        let mut reached = false;
        while !reached {
            if events.len() >= MAX_ACKED_EVENTS {
                // The rest is recorded with the next acknowledgement.
                party.cursor.clone_from(&after);
                break;
            }
            let batch = feed.read(&after, Duration::ZERO).await?;
            let Some((last, _)) = batch.last() else {
                return Err(invalid(
                    "cursor",
                    format!("{cursor:?} is not an event of the revocation stream"),
                ));
            };
            after = last.clone();
            for (at, event) in batch {
                reached = at == cursor;
                events.push((at, event));
                if reached {
                    break;
                }
            }
        }
        self.store
            .register_relying_party(&party, self.party_ttl)
            .await?;
        let keep_for = self.catalogue().longest_ttl() + BACKDATE;
        let parties = self.store.relying_parties().await?;
        let mut recorded = 0;
        for (at, event) in events {
            if event.at < party.registered_at {
                continue;
            }
            self.store.mark_applied(&at, name, now, keep_for).await?;
            recorded += 1;
            let expected: Vec<&RelyingParty> = parties
                .iter()
                .filter(|party| party.registered_at <= event.at)
                .collect();
            let applied = self.store.applied(&at).await?;
            let all = expected
                .iter()
                .all(|party| applied.iter().any(|(name, _)| *name == party.name));
            if all && self.store.mark_all_applied(&at, keep_for).await? {
                let slowest = applied
                    .iter()
                    .map(|(_, when)| lag_ms(event.at, *when))
                    .max()
                    .unwrap_or(0);
                self.audit(vec![Record {
                    kind: EventKind::RevocationApplied,
                    at: now,
                    actor: crate::audit::SYSTEM.to_owned(),
                    subject: None,
                    grant: (event.grants.len() == 1).then(|| event.grants[0].to_string()),
                    task: event.task.as_ref().map(ToString::to_string),
                    details: serde_json::json!({
                        "cursor": at,
                        "revoked_at": rfc3339(event.at),
                        "grants": event.grants.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "credential": event.credential.as_ref().map(|id| id.value().to_owned()),
                        "relying_parties": applied
                            .iter()
                            .map(|(name, when)| serde_json::json!({
                                "name": name,
                                "ms": lag_ms(event.at, *when),
                            }))
                            .collect::<Vec<_>>(),
                        "slowest_ms": slowest,
                    }),
                }])
                .await?;
            }
        }
        Ok(recorded)
    }

    /// Proof of removal: which relying parties have applied the
    /// revocation that ended grant `grant_id`, and how long each took.
    pub async fn revocation_status(
        &self,
        caller: &Caller,
        grant_id: &str,
    ) -> Result<RemovalStatus, IssueError> {
        let now = self.clock.now();
        let grant_id = parse_grant_id(grant_id)?;
        let grant = self.store.grant(grant_id).await?.ok_or_else(|| {
            IssueError::NotFound(format!(
                "no live grant {grant_id} (an expired grant's record is gone; its revocation \
                 is in the audit trail)"
            ))
        })?;
        if !self.may_read(caller, &grant) && self.audit_trail(caller).is_err() {
            return Err(IssueError::Forbidden(format!(
                "grant {grant_id} belongs to another subject"
            )));
        }
        let mut status = RemovalStatus {
            grant,
            event: None,
            parties: Vec::new(),
            bound: self.ack_bound,
        };
        if matches!(status.grant.state, GrantState::Active | GrantState::Pending) {
            return Ok(status);
        }
        let mut feed = self.store.revocation_feed().await?;
        let mut after = "0".to_owned();
        'scan: loop {
            let batch = feed.read(&after, Duration::ZERO).await?;
            let Some((last, _)) = batch.last() else {
                break;
            };
            after = last.clone();
            for (at, event) in batch {
                let names_grant = event.grants.contains(&grant_id)
                    || event.task.as_ref().is_some_and(|task| {
                        *task == status.grant.task_id && status.grant.created_at <= event.at
                    });
                if names_grant {
                    status.event = Some((at, event));
                    break 'scan;
                }
            }
        }
        let Some((cursor, event)) = &status.event else {
            return Ok(status);
        };
        let applied = self.store.applied(cursor).await?;
        for party in self.store.relying_parties().await? {
            if party.registered_at > event.at {
                continue;
            }
            let applied_at = applied
                .iter()
                .find(|(name, _)| *name == party.name)
                .map(|(_, at)| *at);
            let took = applied_at
                .unwrap_or(now)
                .duration_since(event.at)
                .unwrap_or_default();
            status.parties.push(PartyRemoval {
                overdue: applied_at.is_none() && took > self.ack_bound,
                party,
                applied_at,
                took,
            });
        }
        Ok(status)
    }

    /// Lists unexpired grants.
    pub async fn list_grants(
        &self,
        caller: &Caller,
        filter: &GrantFilter,
    ) -> Result<Vec<Grant>, IssueError> {
        let subject = match &filter.subject {
            None => caller.spiffe_id.clone(),
            Some(text) => {
                SpiffeId::new(text).map_err(|error| invalid("subject", error.to_string()))?
            }
        };
        if subject != caller.spiffe_id && !self.is_admin(caller) {
            return Err(IssueError::Forbidden(format!(
                "{} may not list the grants of {subject}",
                caller.spiffe_id
            )));
        }
        let mut grants = self.store.grants_of(&subject).await?;
        grants.retain(|grant| {
            filter
                .task
                .as_deref()
                .is_none_or(|task| grant.task_id.as_str() == task)
                && filter.state.is_none_or(|state| grant.state == state)
        });
        Ok(grants)
    }

    /// One grant with its unexpired credentials.
    pub async fn get_grant(
        &self,
        caller: &Caller,
        grant_id: &str,
    ) -> Result<(Grant, Vec<Credential>), IssueError> {
        let grant_id = parse_grant_id(grant_id)?;
        let grant = self
            .store
            .grant(grant_id)
            .await?
            .ok_or_else(|| IssueError::NotFound(format!("no live grant {grant_id}")))?;
        if !self.may_read(caller, &grant) {
            return Err(IssueError::Forbidden(format!(
                "grant {grant_id} belongs to another subject"
            )));
        }
        let credentials = self.store.credentials(grant_id).await?;
        Ok((grant, credentials))
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

    /// Validates the request and asks policy; returns the grant to create
    /// (pending when it needs approval), the SPIFFE ID its credentials
    /// carry, and how it proceeds. `audiences` is set for a JWT-SVID.
    async fn decide(
        &self,
        caller: &Caller,
        spec: &GrantSpec,
        rpc: &'static str,
        audiences: Option<&[String]>,
        now: SystemTime,
    ) -> Result<Decided, IssueError> {
        let received = received(caller, spec, rpc, now);
        let mut explanation = None;
        match self
            .decide_inner(caller, spec, audiences, now, &mut explanation)
            .await
        {
            Ok(decided) => Ok(Decided {
                received: Some(received),
                ..decided
            }),
            Err(error) => {
                // A refusal is recorded too; if the trail cannot take it the
                // caller still hears why it was refused.
                let refused = Record {
                    kind: EventKind::Decision,
                    at: now,
                    actor: caller.spiffe_id.to_string(),
                    subject: Some(caller.spiffe_id.to_string()),
                    grant: None,
                    task: Some(spec.task_id.clone()).filter(|task| !task.is_empty()),
                    details: serde_json::json!({
                        "outcome": format!("refused: {error}"),
                        "explanation": explanation,
                    }),
                };
                if let Err(audit) = self.audit(vec![received, refused]).await {
                    tracing::error!(%audit, "refusal not recorded in the audit trail");
                }
                Err(error)
            }
        }
    }

    async fn decide_inner(
        &self,
        caller: &Caller,
        spec: &GrantSpec,
        audiences: Option<&[String]>,
        now: SystemTime,
        explained: &mut Option<serde_json::Value>,
    ) -> Result<Decided, IssueError> {
        let entitlement = match spec.entitlement.as_str() {
            "" => None,
            name if name.len() > MAX_ENTITLEMENT_BYTES => {
                return Err(invalid(
                    "entitlement",
                    format!("is longer than {MAX_ENTITLEMENT_BYTES} bytes"),
                ));
            }
            name => Some(name),
        };
        if spec.actions.len() > MAX_ACTIONS {
            return Err(invalid(
                "actions",
                format!("more than {MAX_ACTIONS} actions"),
            ));
        }
        let actions = spec
            .actions
            .iter()
            .map(|action| Action::new(action).map_err(|error| name_error("actions", action, error)))
            .collect::<Result<Vec<_>, _>>()?;
        let task_id = match spec.task_id.as_str() {
            "" => TaskId::generate(),
            task => TaskId::new(task).map_err(|error| name_error("task_id", task, error))?,
        };
        if spec.justification.len() > MAX_JUSTIFICATION_BYTES
            || spec.justification.chars().any(char::is_control)
        {
            return Err(invalid(
                "justification",
                format!("must be at most {MAX_JUSTIFICATION_BYTES} bytes of printable text"),
            ));
        }
        if spec.ticket.len() > MAX_TICKET_BYTES || spec.ticket.chars().any(char::is_control) {
            return Err(invalid(
                "ticket",
                format!("must be at most {MAX_TICKET_BYTES} bytes of printable text"),
            ));
        }
        validate_labels(&spec.labels)?;

        let catalogue = self.catalogue();
        let context = RequestContext {
            environment: self.environment.clone(),
            labels: spec.labels.clone(),
            source: caller.source,
        };
        let mut request = AccessRequest {
            entitlement,
            actions: &actions,
            ttl: spec.ttl,
            justification: &spec.justification,
            ticket: &spec.ticket,
            audiences,
            break_glass: spec.break_glass,
            live_grants: &[],
        };
        let mut evaluation =
            policy::evaluate(&catalogue, &caller.spiffe_id, &request, &context, now);
        // Only an entitlement with max_active needs the caller's live
        // grants: that read is the only extra store round trip.
        let live;
        if evaluation
            .result
            .as_ref()
            .is_ok_and(|decision| decision.max_active.is_some())
        {
            live = self.store.grants_of(&caller.spiffe_id).await?;
            request.live_grants = &live;
            evaluation = policy::evaluate(&catalogue, &caller.spiffe_id, &request, &context, now);
        }
        *explained = serde_json::to_value(&evaluation.explanation).ok();
        let decision = match evaluation.result {
            Ok(decision) => decision,
            Err(denial) => {
                tracing::info!(outcome = %evaluation.explanation.outcome, matched = ?evaluation.explanation.matched, "request denied");
                return Err(denial.into());
            }
        };
        let per_task = decision.identity == IdentityMode::PerTask;
        let spiffe_id = credential_id(&caller.spiffe_id, &task_id, per_task)?;
        let (state, expires_at) = match decision.approval {
            Approval::Required { pending_ttl, .. } => {
                (GrantState::Pending, whole_seconds(now + pending_ttl))
            }
            // Certificates and JWTs carry whole seconds; so does the grant.
            Approval::Auto | Approval::BreakGlass => {
                (GrantState::Active, whole_seconds(now + decision.ttl))
            }
        };
        let explanation = explained.clone().unwrap_or_default();
        let grant = Grant {
            id: GrantId::generate(Shard::of(&caller.spiffe_id)),
            subject: caller.spiffe_id.clone(),
            entitlement: decision.entitlement,
            actions: decision.actions,
            task_id,
            parent: None,
            justification: spec.justification.clone(),
            ticket: spec.ticket.clone(),
            created_at: now,
            expires_at,
            state,
            end_reason: None,
            // Set by the caller once the store's epoch is known.
            epoch: Epoch::from_string(String::new()),
            break_glass: decision.approval == Approval::BreakGlass,
            per_task,
            ttl: decision.ttl,
            approvals: Vec::new(),
            decision: explanation.to_string(),
            delegation: None,
        };
        Ok(Decided {
            grant,
            spiffe_id,
            approval: decision.approval,
            received: None,
            explanation,
        })
    }
}

/// A request that policy allowed: the grant to create and how.
struct Decided {
    grant: Grant,
    spiffe_id: SpiffeId,
    approval: Approval,
    /// The request as received, for the audit trail.
    received: Option<Record>,
    /// The decision's explanation (the grant keeps it as text).
    explanation: serde_json::Value,
}

impl Decided {
    /// The audit events of this request once `grant` is recorded (with
    /// the credential minted under it, if any): the request, the decision,
    /// a break-glass use, the issuance.
    fn records(
        &self,
        caller: &Caller,
        grant: &Grant,
        credential: Option<(&Credential, &SpiffeId)>,
        now: SystemTime,
    ) -> Vec<Record> {
        // The request as received, now that it has a grant.
        let mut records: Vec<Record> = self
            .received
            .iter()
            .cloned()
            .map(|mut received| {
                received.grant = Some(grant.id.to_string());
                received.task = Some(grant.task_id.to_string());
                received
            })
            .collect();
        let decision = &self.explanation;
        records.push(grant_event(
            EventKind::Decision,
            caller,
            grant,
            now,
            serde_json::json!({
                "outcome": decision.get("outcome").cloned().unwrap_or_default(),
                "entitlement": grant.entitlement,
                "state": grant.state.as_str(),
                "ttl_seconds": grant.ttl.as_secs(),
                "expires_at": rfc3339(grant.expires_at),
                "explanation": decision.clone(),
            }),
        ));
        if grant.break_glass {
            records.push(grant_event(
                EventKind::BreakGlass,
                caller,
                grant,
                now,
                serde_json::json!({
                    "entitlement": grant.entitlement,
                    "justification": grant.justification,
                    "ticket": grant.ticket,
                    "review": "open",
                }),
            ));
        }
        if let Some((credential, spiffe_id)) = credential {
            records.push(issued(caller, grant, credential, spiffe_id, now));
        }
        records
    }
}

/// The audit event of a request as received: what was asked, never a key.
fn received(caller: &Caller, spec: &GrantSpec, rpc: &'static str, now: SystemTime) -> Record {
    Record {
        kind: EventKind::RequestReceived,
        at: now,
        actor: caller.spiffe_id.to_string(),
        subject: Some(caller.spiffe_id.to_string()),
        grant: Some(spec.grant_id.clone()).filter(|id| !id.is_empty()),
        task: Some(spec.task_id.clone()).filter(|task| !task.is_empty()),
        details: serde_json::json!({
            "rpc": rpc,
            "entitlement": spec.entitlement,
            "actions": spec.actions,
            "ttl_seconds": spec.ttl.map(|ttl| ttl.as_secs()),
            "justification": spec.justification,
            "ticket": spec.ticket,
            "break_glass": spec.break_glass,
            "labels": spec.labels,
            "source": caller.source.map(|ip| ip.to_string()),
        }),
    }
}

/// The audit event of a credential minted under `grant`: its id (serial
/// or jti), kind and expiry; never the credential itself.
fn issued(
    caller: &Caller,
    grant: &Grant,
    credential: &Credential,
    spiffe_id: &SpiffeId,
    now: SystemTime,
) -> Record {
    let kind = match credential.id {
        CredentialId::X509Serial(_) => "x509",
        CredentialId::JwtId(_) => "jwt",
    };
    grant_event(
        EventKind::CredentialIssued,
        caller,
        grant,
        now,
        serde_json::json!({
            "credential": kind,
            "id": credential.id.value(),
            "spiffe_id": spiffe_id.as_str(),
            "expires_at": humantime::format_rfc3339_seconds(credential.expires_at).to_string(),
            "entitlement": grant.entitlement,
            "actions": grant.actions.iter().map(Action::as_str).collect::<Vec<_>>(),
            "break_glass": grant.break_glass,
        }),
    )
}

/// A time as audit events write it.
fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Milliseconds from a revocation's or completion's start to `done`.
fn lag_ms(start: SystemTime, done: SystemTime) -> u64 {
    done.duration_since(start)
        .map_or(0, |lag| lag.as_millis() as u64)
}

/// An audit event about `grant`, caused by `caller`.
fn grant_event(
    kind: EventKind,
    caller: &Caller,
    grant: &Grant,
    now: SystemTime,
    details: serde_json::Value,
) -> Record {
    Record {
        kind,
        at: now,
        actor: caller.spiffe_id.to_string(),
        subject: Some(grant.subject.to_string()),
        grant: Some(grant.id.to_string()),
        task: Some(grant.task_id.to_string()),
        details,
    }
}

/// The SPIFFE ID credentials under `grant` carry.
fn grant_spiffe_id(grant: &Grant) -> Result<SpiffeId, IssueError> {
    match &grant.delegation {
        Some(delegation) => Ok(delegation.spiffe_id.clone()),
        None => credential_id(&grant.subject, &grant.task_id, grant.per_task),
    }
}

/// When something asked for `ttl` under `grant` expires: the grant's
/// expiry when no TTL is asked; refused below [`policy::MIN_TTL`] or past
/// what is left of the grant (`why` ends the message), never shortened.
fn within_grant(
    ttl: Option<Duration>,
    grant: &Grant,
    now: SystemTime,
    why: &str,
) -> Result<SystemTime, IssueError> {
    let left = grant.expires_at.duration_since(now).unwrap_or_default();
    match ttl.filter(|ttl| !ttl.is_zero()) {
        None => Ok(grant.expires_at),
        Some(ttl) if ttl < policy::MIN_TTL => Err(Denial::TtlTooShort.into()),
        Some(ttl) if ttl > left => Err(invalid(
            "ttl",
            format!(
                "{} exceeds what is left of grant {} ({}){why}",
                humantime::format_duration(ttl),
                grant.id,
                humantime::format_duration(Duration::from_secs(left.as_secs()))
            ),
        )),
        Some(ttl) => Ok(whole_seconds(now + ttl).min(grant.expires_at)),
    }
}

/// A delegated grant's ancestors' ids, parent first, as credentials carry
/// them.
fn parent_grant_ids(grant: &Grant) -> Vec<String> {
    grant
        .delegation
        .iter()
        .flat_map(|delegation| &delegation.chain)
        .map(|ancestor| ancestor.grant_id.to_string())
        .collect()
}

/// The actions a delegation asks for: all of the parent's when none are
/// named; never one the parent does not have.
fn delegated_actions(parent: &Grant, asked: &[String]) -> Result<Vec<Action>, IssueError> {
    if asked.len() > MAX_ACTIONS {
        return Err(invalid("actions", format!("at most {MAX_ACTIONS}")));
    }
    if asked.is_empty() {
        return Ok(parent.actions.clone());
    }
    let mut actions: Vec<Action> = Vec::with_capacity(asked.len());
    for text in asked {
        let action =
            Action::new(text).map_err(|error| invalid("actions", format!("{text:?} {error}")))?;
        if !parent.actions.contains(&action) {
            return Err(IssueError::Forbidden(format!(
                "action {text:?} is not among parent grant {}'s actions [{}]: a delegation never \
                 widens them",
                parent.id,
                parent
                    .actions
                    .iter()
                    .map(Action::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if !actions.contains(&action) {
            actions.push(action);
        }
    }
    Ok(actions)
}

/// A bound token must come with the certificate it is bound to.
fn check_confirmation(
    credential: &PresentedCredential,
    presenter: Option<&[u8]>,
) -> Result<(), PresentedError> {
    let Some(expected) = &credential.confirmation else {
        return Ok(());
    };
    match presenter {
        None => Err(PresentedError::Invalid(
            "token is bound to a certificate (cnf x5t#S256); present the certificate it was \
             presented with"
                .to_owned(),
        )),
        Some(der) if certificate_thumbprint(der) != *expected => Err(PresentedError::Invalid(
            "token is bound to another certificate than its presenter's".to_owned(),
        )),
        Some(_) => Ok(()),
    }
}

/// A name used as a path segment or key: 1 to [`MAX_NAME_BYTES`] letters,
/// digits, '.', '-' or '_'.
fn check_name(field: &'static str, name: &str) -> Result<(), IssueError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        return Ok(());
    }
    Err(invalid(
        field,
        format!("must be 1 to {MAX_NAME_BYTES} letters, digits, '.', '-' or '_'"),
    ))
}

/// The SPIFFE ID credentials carry: the caller's, or for a per-task
/// entitlement the caller's with `/task/<task>` appended.
fn credential_id(caller: &SpiffeId, task: &TaskId, per_task: bool) -> Result<SpiffeId, IssueError> {
    if !per_task {
        return Ok(caller.clone());
    }
    SpiffeId::new(&format!("{caller}/task/{task}")).map_err(|error| {
        invalid(
            "task_id",
            format!("makes an invalid per-task SPIFFE ID: {error}"),
        )
    })
}

fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), IssueError> {
    if labels.len() > policy::MAX_LABELS {
        return Err(invalid(
            "labels",
            format!("more than {} labels", policy::MAX_LABELS),
        ));
    }
    for (key, value) in labels {
        let key_ok = !key.is_empty()
            && key.len() <= policy::MAX_LABEL_KEY_BYTES
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !key.starts_with(|c: char| c.is_ascii_digit());
        if !key_ok {
            let shown: String = key.chars().take(64).collect();
            return Err(invalid(
                "labels",
                format!(
                    "key {shown:?} must be 1 to {} letters, digits or '_', not starting with a digit",
                    policy::MAX_LABEL_KEY_BYTES
                ),
            ));
        }
        if value.len() > policy::MAX_LABEL_VALUE_BYTES || value.chars().any(char::is_control) {
            return Err(invalid(
                "labels",
                format!(
                    "value of {key:?} must be at most {} bytes of printable text",
                    policy::MAX_LABEL_VALUE_BYTES
                ),
            ));
        }
    }
    Ok(())
}

fn check_comment(field: &'static str, text: &str) -> Result<(), IssueError> {
    if text.len() > MAX_JUSTIFICATION_BYTES || text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(invalid(
            field,
            format!("must be at most {MAX_JUSTIFICATION_BYTES} bytes of printable text"),
        ));
    }
    Ok(())
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("authority", &self.authority)
            .field("entitlements", &self.catalogue().entitlements().len())
            .finish_non_exhaustive()
    }
}

fn validate_audiences(audiences: &[String]) -> Result<Vec<String>, IssueError> {
    if audiences.is_empty() {
        return Err(invalid(
            "audiences",
            "at least one audience is required".to_owned(),
        ));
    }
    if audiences.len() > MAX_AUDIENCES {
        return Err(invalid(
            "audiences",
            format!("more than {MAX_AUDIENCES} audiences"),
        ));
    }
    let mut unique: Vec<String> = Vec::with_capacity(audiences.len());
    for audience in audiences {
        if audience.is_empty() {
            return Err(invalid("audiences", "an audience is empty".to_owned()));
        }
        if audience.len() > MAX_AUDIENCE_BYTES {
            return Err(invalid(
                "audiences",
                format!("an audience is longer than {MAX_AUDIENCE_BYTES} bytes"),
            ));
        }
        if !unique.contains(audience) {
            unique.push(audience.clone());
        }
    }
    Ok(unique)
}

fn parse_grant_id(text: &str) -> Result<GrantId, IssueError> {
    GrantId::parse(text).ok_or_else(|| invalid("grant_id", "is not a grant id (a UUID)".to_owned()))
}

fn ending_reason(caller: &Caller, reason: &str) -> String {
    if reason.is_empty() {
        format!("revoked by {}", caller.spiffe_id)
    } else {
        format!("revoked by {}: {reason}", caller.spiffe_id)
    }
}

fn invalid(field: &'static str, message: String) -> IssueError {
    IssueError::InvalidField { field, message }
}

fn name_error(field: &'static str, value: &str, error: NameError) -> IssueError {
    // Echo at most a short prefix of attacker-controlled input.
    let shown: String = value.chars().take(64).collect();
    invalid(field, format!("{shown:?} {error}"))
}
