//! Every audit event kind and its fields as Rust types: [`Event`] has one
//! variant per [`EventKind`], each with one struct whose fields are the
//! event's `details`. Writers build an [`Event`] and turn it into a
//! [`Record`](super::Record) with [`Record::new`](super::Record::new), the
//! one place details are made (`event/codec.rs`); readers call
//! [`AuditEvent::event`](super::AuditEvent::event) and match on the types,
//! so no reader or writer spells a details key.
//!
//! **The canonical form does not change.** An event serializes to exactly
//! the `details` JSON the trail held before these types existed (same
//! keys, same value types, `null` where a value was absent and written as
//! `null`, no key where none was written), so old and new trails hash,
//! verify and read alike; `tests/fixtures/audit-trail-before-typed-events.jsonl`
//! is a trail the server wrote before, and the tests read every event of
//! it and write it back to the same hash.
//!
//! **Reading is tolerant of additions, strict about what it needs.** Keys a
//! kind does not know are ignored, so a newer writer's extra detail does
//! not stop an older reader; a key the kind needs that is missing or of
//! the wrong type is an [`EventError`], never a panic. Optional fields
//! missing from old events read as `None`. A typed view is a reading: the
//! hash is always over the stored `details`, never over a re-serialization.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::EventKind;
use crate::grant::{CredentialId, GrantState};

pub use self::identity::{
    IdentityIssued, IdentityRevoked, IdentityTargetKind, IssuedVia, JoinTokenCreated, JoinTokenUsed,
};

/// An audit event's kind and details, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A request arrived: what was asked.
    RequestReceived(RequestReceived),
    /// Policy decided a request.
    Decision(Decision),
    /// An approver approved a pending grant.
    Approval(Approval),
    /// An approver denied a pending grant.
    ApprovalDenied(ApprovalDenied),
    /// A grant was issued on the break-glass path.
    BreakGlass(BreakGlass),
    /// A credential was minted.
    CredentialIssued(CredentialIssued),
    /// A credential, grant, task or subject was revoked.
    Revocation(Revocation),
    /// A task or grant was completed by its owner.
    TaskCompleted(TaskCompleted),
    /// A grant expired.
    GrantExpired(GrantExpired),
    /// A reviewer acknowledged a break-glass use.
    ReviewAcknowledged(ReviewAcknowledged),
    /// The entitlement catalogue was reloaded, or a reload refused.
    CatalogueReloaded(CatalogueReloaded),
    /// A caller failed attestation.
    AuthenticationFailure(AuthenticationFailure),
    /// A relying party's liveness check (sampled).
    LivenessChecked(LivenessChecked),
    /// Every registered relying party had applied a revocation.
    RevocationApplied(RevocationApplied),
    /// An attestation identity was issued (renewed or bootstrapped).
    IdentityIssued(IdentityIssued),
    /// An attestation identity (or every one of a SPIFFE ID) was revoked.
    IdentityRevoked(IdentityRevoked),
    /// A join token was created.
    JoinTokenCreated(JoinTokenCreated),
    /// A join token was exchanged for an attestation identity.
    JoinTokenUsed(JoinTokenUsed),
}

/// What every event carries besides its details: when, who caused it,
/// and whose grant and task it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// When.
    pub at: SystemTime,
    /// The attested SPIFFE ID that caused it, or [`SYSTEM`](super::SYSTEM).
    pub actor: String,
    /// Whose grant it concerns.
    pub subject: Option<String>,
    /// The grant.
    pub grant: Option<String>,
    /// The task.
    pub task: Option<String>,
}

/// An event whose details do not fit its kind.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// A key the kind needs is missing or of the wrong type.
    #[error("audit event {seq} ({kind}): details do not fit the kind: {source}")]
    Details {
        /// The event's sequence number (0 before it is sealed).
        seq: u64,
        /// Its kind.
        kind: EventKind,
        /// What did not fit.
        #[source]
        source: serde_json::Error,
    },
}

/// `request_received`: one of the issuing RPCs, or a delegation.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestReceived {
    /// `IssueX509Svid`, `IssueJwtSvid` or `RequestGrant`.
    Grant(GrantRequested),
    /// `Delegate` (written with `"rpc": "Delegate"`).
    Delegation(DelegationRequested),
}

named! {
/// The issuing RPCs.
pub enum Rpc {
    /// `IssueX509Svid`.
    IssueX509Svid => "IssueX509Svid",
    /// `IssueJwtSvid`.
    IssueJwtSvid => "IssueJwtSvid",
    /// `RequestGrant`.
    RequestGrant => "RequestGrant",
}
}

/// A request for a grant or a credential, as received: what was asked,
/// never a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRequested {
    /// Which RPC.
    pub rpc: Rpc,
    /// The entitlement named; `None` (written `""`) when the request named
    /// actions only, or minted under an existing grant.
    #[serde(default, with = "codec::empty_is_none")]
    pub entitlement: Option<String>,
    /// The actions asked for (empty: the entitlement's whole set).
    pub actions: Vec<String>,
    /// The TTL asked for, in seconds.
    pub ttl_seconds: Option<u64>,
    /// Why (may be empty).
    pub justification: String,
    /// A change or incident ticket (may be empty).
    pub ticket: String,
    /// Whether break-glass was asked for.
    pub break_glass: bool,
    /// Labels for the policy conditions.
    pub labels: BTreeMap<String, String>,
    /// The caller's address, when known.
    pub source: Option<String>,
    /// How the caller was attested (absent from events written before
    /// attestation methods were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<Attested>,
}

/// How a caller was attested, as the trail records it: the method and the
/// facts policy could use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attested {
    /// `x509` (an attestation identity) or `oidc` (a token).
    pub method: String,
    /// The `[[attestation.oidc]]` entry that accepted a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// What the evidence said: an identity's serial, a token's claims.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub facts: BTreeMap<String, serde_json::Value>,
}

/// A delegation request, as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegationRequested {
    /// The parent grant's entitlement.
    pub entitlement: String,
    /// The child's name.
    pub name: String,
    /// The actions asked for (empty: all of the parent's).
    pub actions: Vec<String>,
    /// The TTL asked for, in seconds.
    pub ttl_seconds: Option<u64>,
    /// Why.
    pub justification: String,
}

/// `decision`: a grant decided (active or pending), a delegation, or a
/// refusal.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Policy allowed the request: the grant is active or pending.
    Granted(Granted),
    /// A grant was delegated (written with `"outcome": "delegated"` and
    /// `"state": "active"`).
    Delegated(Delegated),
    /// The request was refused.
    Refused(Refused),
}

/// Policy allowed a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Granted {
    /// The outcome in words (the explanation's `outcome`).
    pub outcome: String,
    /// The entitlement.
    pub entitlement: String,
    /// `active`, or `pending` approval.
    #[serde(with = "codec::grant_state")]
    pub state: GrantState,
    /// The grant's TTL in seconds.
    pub ttl_seconds: u64,
    /// When the grant (or, pending, the wait for approval) expires.
    #[serde(with = "codec::seconds")]
    pub expires_at: SystemTime,
    /// Policy's explanation: what it looked at and which rules decided
    /// (`policy::Explanation`).
    pub explanation: serde_json::Value,
}

/// A delegated grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegated {
    /// The parent's entitlement.
    pub entitlement: String,
    /// The child's actions.
    pub actions: Vec<String>,
    /// The SPIFFE ID the child's credentials carry.
    pub spiffe_id: Option<String>,
    /// The parent grant.
    pub parent: String,
    /// The child's depth below the root grant.
    pub depth: u64,
    /// When the child expires.
    #[serde(with = "codec::seconds")]
    pub expires_at: SystemTime,
    /// Its TTL in seconds.
    pub ttl_seconds: u64,
    /// What the delegation looked at.
    pub explanation: DelegationExplanation,
}

/// What a delegation decision looked at (also kept as the grant's
/// decision text, with [`DelegationExplanation::to_text`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegationExplanation {
    /// The parent grant.
    pub parent: String,
    /// The parent's actions.
    pub parent_actions: Vec<String>,
    /// When the parent expires.
    #[serde(with = "codec::seconds")]
    pub parent_expires_at: SystemTime,
    /// The child's depth.
    pub depth: u64,
    /// How deep the entitlement allows.
    pub delegation_depth: u64,
    /// The actions asked for.
    pub actions_asked: Vec<String>,
    /// The TTL asked for, in seconds.
    pub ttl_asked_seconds: Option<u64>,
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refused {
    /// `refused: ` and why.
    pub outcome: String,
    /// Policy's explanation, when the request got as far as policy.
    pub explanation: Option<serde_json::Value>,
}

/// `approval`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The approver's comment.
    pub comment: String,
    /// The entitlement.
    pub entitlement: String,
    /// Approvals so far, this one included.
    pub approvals: u64,
    /// Approvals needed.
    pub needed: u64,
    /// `pending`, or `active` once enough approved.
    #[serde(with = "codec::grant_state")]
    pub state: GrantState,
    /// When the grant (or, pending, the wait) expires.
    #[serde(with = "codec::seconds")]
    pub expires_at: SystemTime,
}

/// `approval_denied`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalDenied {
    /// The approver's reason (may be empty).
    pub reason: String,
}

/// `break_glass`: an emergency grant, whose review is open (written with
/// `"review": "open"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlass {
    /// The entitlement.
    pub entitlement: String,
    /// Why.
    pub justification: String,
    /// The incident ticket.
    pub ticket: String,
    /// The requester's earlier uses still awaiting review, when there are
    /// any: a repeat, flagged for the reviewer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreviewed_before: Option<u64>,
}

named! {
/// Which kind of credential.
pub enum CredentialKind {
    /// An X.509-SVID, named by its serial.
    X509 => "x509",
    /// A JWT-SVID, named by its `jti`.
    Jwt => "jwt",
}
}

/// `credential_issued`: the credential's id, kind and expiry, never the
/// credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialIssued {
    /// X.509 or JWT.
    pub credential: CredentialKind,
    /// The serial (lowercase hex) or `jti`.
    pub id: String,
    /// The SPIFFE ID it carries.
    pub spiffe_id: String,
    /// When it expires.
    #[serde(with = "codec::seconds")]
    pub expires_at: SystemTime,
    /// The grant's entitlement.
    pub entitlement: String,
    /// The grant's actions.
    pub actions: Vec<String>,
    /// Whether the grant is break-glass.
    pub break_glass: bool,
}

named! {
/// What a revocation or completion names.
pub enum Target {
    /// A credential, by serial or `jti`.
    Credential => "credential",
    /// A grant.
    Grant => "grant",
    /// A task.
    Task => "task",
    /// A subject (SPIFFE ID).
    Subject => "subject",
}
}

/// `revocation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// What kind of thing was revoked.
    pub target: Target,
    /// Which, as the caller named it.
    pub value: String,
    /// Why (may be empty).
    pub reason: String,
    /// The grants it ended.
    pub grants_ended: Vec<String>,
    /// Whether a live credential was revoked.
    pub credential_revoked: bool,
    /// Whether the task was revoked for every holder.
    pub task_revoked: bool,
    /// Milliseconds from the request to the revocation being announced.
    pub lag_ms: u64,
}

named! {
/// How a task ended.
pub enum TaskOutcome {
    /// It did what it was for.
    Completed => "completed",
    /// It failed.
    Failed => "failed",
}
}

/// `task_completed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCompleted {
    /// [`Target::Grant`] or [`Target::Task`].
    pub target: Target,
    /// Which.
    pub value: String,
    /// How it ended.
    pub outcome: TaskOutcome,
    /// The grants it ended.
    pub grants_ended: Vec<String>,
    /// Milliseconds from the request to the end being announced.
    pub lag_ms: u64,
}

/// `grant_expired`: what the trail watched, as it watched it. The fields
/// stay text because a watch whose record was lost is still reported
/// (with an empty `expires_at` and state `unknown`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantExpired {
    /// When it expired, RFC 3339.
    pub expires_at: String,
    /// The entitlement.
    pub entitlement: Option<String>,
    /// `active` or `pending`, as the last event left it.
    pub state: String,
}

/// `review_acknowledged`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewAcknowledged {
    /// The entitlement.
    pub entitlement: String,
    /// The reviewer's comment.
    pub comment: String,
}

/// `catalogue_reloaded` (written with `"reloaded": true` or `false`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogueReloaded {
    /// The new catalogue is in force.
    Reloaded(Reloaded),
    /// The file did not load; the catalogue in force stays.
    Refused(ReloadRefused),
}

/// A catalogue put in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// The config file, as displayed (`Path::display`).
    pub file: String,
    /// How many entitlements it has.
    pub entitlements: u64,
}

/// A reload refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadRefused {
    /// The config file, as displayed (`Path::display`).
    pub file: String,
    /// Why it did not load.
    pub error: String,
}

/// `authentication_failure`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthenticationFailure {
    /// The peer's address.
    pub remote: String,
    /// Why (the first reason, for a tally).
    pub reason: String,
    /// For a tally of the failures from one address in one window after
    /// the first (which is recorded alone, at once): how many there were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeated: Option<u64>,
    /// The window a tally covers, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<u64>,
}

named! {
/// A `Verify` verdict.
pub enum LivenessStatus {
    /// Authentic, unexpired, live.
    Valid => "valid",
    /// Authentic but ended.
    Revoked => "revoked",
    /// Authentic but expired.
    Expired => "expired",
    /// Liveness unknown.
    Unknown => "unknown",
    /// Not authentic, or not for this audience.
    Invalid => "invalid",
}
}

/// `liveness_checked`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LivenessChecked {
    /// The verdict.
    pub status: LivenessStatus,
    /// Why, in words.
    pub reason: String,
    /// The credential's id, when it is authentic.
    pub credential: Option<String>,
}

/// `revocation_applied`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationApplied {
    /// The revocation's cursor on the stream.
    pub cursor: String,
    /// When it was revoked.
    #[serde(with = "codec::seconds")]
    pub revoked_at: SystemTime,
    /// The grants it ended.
    pub grants: Vec<String>,
    /// The credential it revoked, if one.
    pub credential: Option<String>,
    /// Each party and how long it took.
    pub relying_parties: Vec<PartyApplied>,
    /// The slowest party's milliseconds.
    pub slowest_ms: u64,
}

/// One relying party's application of a revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartyApplied {
    /// The party's name.
    pub name: String,
    /// Milliseconds from the revocation to its acknowledgement.
    pub ms: u64,
}

// === impl Event ===

impl Event {
    /// Its kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Self::RequestReceived(_) => EventKind::RequestReceived,
            Self::Decision(_) => EventKind::Decision,
            Self::Approval(_) => EventKind::Approval,
            Self::ApprovalDenied(_) => EventKind::ApprovalDenied,
            Self::BreakGlass(_) => EventKind::BreakGlass,
            Self::CredentialIssued(_) => EventKind::CredentialIssued,
            Self::Revocation(_) => EventKind::Revocation,
            Self::TaskCompleted(_) => EventKind::TaskCompleted,
            Self::GrantExpired(_) => EventKind::GrantExpired,
            Self::ReviewAcknowledged(_) => EventKind::ReviewAcknowledged,
            Self::CatalogueReloaded(_) => EventKind::CatalogueReloaded,
            Self::AuthenticationFailure(_) => EventKind::AuthenticationFailure,
            Self::LivenessChecked(_) => EventKind::LivenessChecked,
            Self::RevocationApplied(_) => EventKind::RevocationApplied,
            Self::IdentityIssued(_) => EventKind::IdentityIssued,
            Self::IdentityRevoked(_) => EventKind::IdentityRevoked,
            Self::JoinTokenCreated(_) => EventKind::JoinTokenCreated,
            Self::JoinTokenUsed(_) => EventKind::JoinTokenUsed,
        }
    }

    /// The entitlement the event names, if it names one: for a request,
    /// the one named; for a decision, the one decided on (a refusal's is
    /// the one policy found, when the request got that far).
    pub fn entitlement(&self) -> Option<&str> {
        match self {
            Self::RequestReceived(RequestReceived::Grant(request)) => {
                request.entitlement.as_deref()
            }
            Self::RequestReceived(RequestReceived::Delegation(request)) => {
                Some(&request.entitlement)
            }
            Self::Decision(decision) => decision.entitlement(),
            Self::Approval(Approval { entitlement, .. })
            | Self::BreakGlass(BreakGlass { entitlement, .. })
            | Self::CredentialIssued(CredentialIssued { entitlement, .. })
            | Self::ReviewAcknowledged(ReviewAcknowledged { entitlement, .. }) => Some(entitlement),
            Self::GrantExpired(expired) => expired.entitlement.as_deref(),
            Self::ApprovalDenied(_)
            | Self::Revocation(_)
            | Self::TaskCompleted(_)
            | Self::CatalogueReloaded(_)
            | Self::AuthenticationFailure(_)
            | Self::LivenessChecked(_)
            | Self::RevocationApplied(_)
            | Self::IdentityIssued(_)
            | Self::IdentityRevoked(_)
            | Self::JoinTokenCreated(_)
            | Self::JoinTokenUsed(_) => None,
        }
    }

    /// The grants a revocation or completion says it ended (none for
    /// other kinds).
    pub fn ended_grants(&self) -> &[String] {
        match self {
            Self::Revocation(revocation) => &revocation.grants_ended,
            Self::TaskCompleted(completed) => &completed.grants_ended,
            _ => &[],
        }
    }

    /// What a revocation or completion names, and which.
    pub fn ends(&self) -> Option<(Target, &str)> {
        match self {
            Self::Revocation(revocation) => Some((revocation.target, &revocation.value)),
            Self::TaskCompleted(completed) => Some((completed.target, &completed.value)),
            _ => None,
        }
    }
}

// === impl Decision ===

impl Decision {
    /// The entitlement decided on: a refusal's is the one policy found
    /// (named, or covering the actions asked), if it got that far.
    pub fn entitlement(&self) -> Option<&str> {
        match self {
            Self::Granted(granted) => Some(&granted.entitlement),
            Self::Delegated(delegated) => Some(&delegated.entitlement),
            Self::Refused(refused) => refused.entitlement(),
        }
    }

    /// The grant's state after the decision: `None` for a refusal.
    pub fn state(&self) -> Option<GrantState> {
        match self {
            Self::Granted(granted) => Some(granted.state),
            Self::Delegated(_) => Some(GrantState::Active),
            Self::Refused(_) => None,
        }
    }

    /// The inputs and rules that decided, as recorded.
    pub fn explanation(&self) -> serde_json::Value {
        match self {
            Self::Granted(granted) => granted.explanation.clone(),
            Self::Delegated(delegated) => delegated.explanation.to_value(),
            Self::Refused(refused) => refused.explanation.clone().unwrap_or_default(),
        }
    }
}

// === impl Refused ===

impl Refused {
    /// Why, without the `refused: ` prefix.
    pub fn reason(&self) -> &str {
        self.outcome
            .strip_prefix("refused: ")
            .unwrap_or(&self.outcome)
    }

    /// The entitlement policy found, if the request got that far.
    pub fn entitlement(&self) -> Option<&str> {
        self.explanation
            .as_ref()?
            .get(EXPLANATION_ENTITLEMENT)?
            .as_str()
    }
}

/// The key of `policy::Explanation::entitlement` in its JSON.
const EXPLANATION_ENTITLEMENT: &str = "entitlement";

// === impl DelegationExplanation ===

impl DelegationExplanation {
    /// As JSON, `"outcome": "delegated"` first.
    pub fn to_value(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        map.insert("outcome".to_owned(), "delegated".into());
        if let serde_json::Value::Object(fields) = codec::object(self, &[]) {
            map.extend(fields);
        }
        serde_json::Value::Object(map)
    }

    /// As the grant keeps it: its JSON text.
    pub fn to_text(&self) -> String {
        self.to_value().to_string()
    }
}

// === impl CredentialKind ===

impl From<&CredentialId> for CredentialKind {
    fn from(id: &CredentialId) -> Self {
        match id {
            CredentialId::X509Serial(_) => Self::X509,
            CredentialId::JwtId(_) => Self::Jwt,
        }
    }
}

mod codec;
mod identity;

#[cfg(test)]
mod tests;
