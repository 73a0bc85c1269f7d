//! Policy at request time: a validated request for a new grant becomes
//! the grant to create, or a refusal that the audit trail records with
//! its explanation.

use std::time::SystemTime;

use super::events::{about_grant, received, record};
use super::request::{GrantRequest, NewGrant, invalid};
use super::{Caller, IssueError, Issuer};
use crate::audit::Record;
use crate::audit::event::{BreakGlass, Decision, Event, Granted, Refused, Rpc};
use crate::clock::whole_seconds;
use crate::grant::{Credential, Epoch, Grant, GrantId, GrantState, Shard, TaskId};
use crate::policy::{self, AccessRequest, Approval, IdentityMode, RequestContext};
use crate::spiffe_id::SpiffeId;

/// A request that policy allowed: the grant to create and how.
pub(super) struct Decided {
    pub(super) grant: Grant,
    pub(super) spiffe_id: SpiffeId,
    pub(super) approval: Approval,
    /// For break-glass, the caller's uses still awaiting review before
    /// this one.
    unreviewed: usize,
    /// The request as received, for the audit trail.
    received: Record,
    /// The decision's explanation (the grant keeps it as text).
    explanation: serde_json::Value,
}

// === impl Issuer ===

impl Issuer {
    /// Asks policy about a new grant; returns the grant to create (pending
    /// when it needs approval), the SPIFFE ID its credentials carry, and
    /// how it proceeds. `audiences` is set for a JWT-SVID. A refusal is
    /// audited here, with its explanation.
    pub(super) async fn decide(
        &self,
        caller: &Caller,
        request: &GrantRequest,
        new: &NewGrant,
        rpc: Rpc,
        audiences: Option<&[String]>,
        now: SystemTime,
    ) -> Result<Decided, IssueError> {
        let received = received(caller, request, rpc, now);
        let mut explanation = None;
        match self
            .decide_inner(caller, new, audiences, now, &mut explanation)
            .await
        {
            Ok((grant, spiffe_id, approval, unreviewed)) => Ok(Decided {
                grant,
                spiffe_id,
                approval,
                unreviewed,
                received,
                explanation: explanation.unwrap_or_default(),
            }),
            Err(error) => {
                // A refusal is recorded too; if the trail cannot take it the
                // caller still hears why it was refused.
                let refused = record(
                    caller,
                    now,
                    Some(caller.spiffe_id.to_string()),
                    None,
                    new.task_id.as_ref().map(ToString::to_string),
                    Event::Decision(Decision::Refused(Refused {
                        outcome: format!("refused: {error}"),
                        explanation,
                    })),
                );
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
        new: &NewGrant,
        audiences: Option<&[String]>,
        now: SystemTime,
        explained: &mut Option<serde_json::Value>,
    ) -> Result<(Grant, SpiffeId, Approval, usize), IssueError> {
        let task_id = task_of(caller, new)?;
        let catalogue = self.catalogue();
        let context = RequestContext {
            environment: self.environment.clone(),
            labels: new.labels.clone(),
            source: caller.source,
            attestation: Some(caller.attestation_facts()),
        };
        let mut request = AccessRequest {
            entitlement: new.entitlement.as_deref(),
            actions: &new.actions,
            ttl: new.ttl,
            justification: &new.justification,
            ticket: &new.ticket,
            audiences,
            break_glass: new.break_glass,
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
        // Break-glass again before a reviewer has looked at the last uses
        // is refused past the entitlement's bound; the store is read only
        // on this path.
        let mut unreviewed = 0;
        if decision.approval == Approval::BreakGlass {
            let bound = catalogue
                .entitlement(&decision.entitlement)
                .and_then(|entitlement| entitlement.break_glass.as_ref())
                .map_or(policy::DEFAULT_MAX_UNREVIEWED, |rule| rule.max_unreviewed);
            unreviewed = self
                .store
                .reviews()
                .await?
                .iter()
                .filter(|review| review.subject == caller.spiffe_id && review.ack.is_none())
                .count();
            if unreviewed >= bound {
                return Err(policy::Denial::BreakGlassUnreviewed {
                    entitlement: decision.entitlement.clone(),
                    subject: caller.spiffe_id.to_string(),
                    count: unreviewed,
                }
                .into());
            }
        }
        let per_task = decision.identity == IdentityMode::PerTask;
        let spiffe_id = credential_id(&caller.spiffe_id, &task_id, per_task)?;
        if caller.by_token().is_some() && matches!(decision.approval, Approval::Required { .. }) {
            return Err(IssueError::FailedPrecondition(format!(
                "entitlement {:?} needs approval, and a grant attested by an OIDC token cannot \
                 wait for it (its lifetime would start at approval, past what the token bounds); \
                 use an attestation identity, or break-glass",
                decision.entitlement
            )));
        }
        let (state, mut expires_at) = match decision.approval {
            Approval::Required { pending_ttl, .. } => {
                (GrantState::Pending, whole_seconds(now + pending_ttl))
            }
            // Certificates and JWTs carry whole seconds; so does the grant.
            Approval::Auto | Approval::BreakGlass => {
                (GrantState::Active, whole_seconds(now + decision.ttl))
            }
        };
        let mut ttl = decision.ttl;
        // A grant attested by a token never outlives it.
        if let Some(until) = caller.attested_until()
            && until < expires_at
        {
            expires_at = until;
            ttl = until.duration_since(now).unwrap_or_default();
        }
        let grant = Grant {
            id: GrantId::generate(Shard::of(&caller.spiffe_id)),
            subject: caller.spiffe_id.clone(),
            entitlement: decision.entitlement,
            actions: decision.actions,
            task_id,
            parent: None,
            justification: new.justification.clone(),
            ticket: new.ticket.clone(),
            created_at: now,
            expires_at,
            state,
            end_reason: None,
            // Set by the caller once the store's epoch is known.
            epoch: Epoch::from_string(String::new()),
            break_glass: decision.approval == Approval::BreakGlass,
            per_task,
            ttl,
            approvals: Vec::new(),
            decision: grant_decision(explained.as_ref()),
            delegation: None,
        };
        // Last, once the request is allowed: a refused request leaves the
        // token unused.
        self.claim_token_for(caller, &grant).await?;
        Ok((grant, spiffe_id, decision.approval, unreviewed))
    }
}

/// The task of a new grant: the one a token's provider names (a request
/// naming another is refused), the one asked for, or a new one.
fn task_of(caller: &Caller, new: &NewGrant) -> Result<TaskId, IssueError> {
    let from_token = caller.by_token().and_then(|token| token.task.as_deref());
    match (from_token, &new.task_id) {
        (Some(task), Some(asked)) if asked.as_str() != task => Err(IssueError::Forbidden(format!(
            "task_id {asked}: a caller attested by an OIDC token works on the task its token \
             names ({task})"
        ))),
        (Some(task), _) => {
            TaskId::new(task).map_err(|error| invalid("task_id", format!("{task:?} {error}")))
        }
        (None, Some(asked)) => Ok(asked.clone()),
        (None, None) => Ok(TaskId::generate()),
    }
}

// === impl Decided ===

impl Decided {
    /// The audit events of this request once `grant` is recorded (with
    /// the credential minted under it, if any): the request, the decision,
    /// a break-glass use, the issuance.
    pub(super) fn records(
        &self,
        caller: &Caller,
        grant: &Grant,
        credential: Option<(&Credential, &SpiffeId)>,
        now: SystemTime,
    ) -> Vec<Record> {
        // The request as received, now that it has a grant.
        let mut received = self.received.clone();
        received.grant = Some(grant.id.to_string());
        received.task = Some(grant.task_id.to_string());
        let mut records = vec![received];
        let decision = &self.explanation;
        let outcome = match decision.get("outcome") {
            Some(serde_json::Value::String(outcome)) => outcome.clone(),
            _ => String::new(),
        };
        records.push(about_grant(
            caller,
            grant,
            now,
            Event::Decision(Decision::Granted(Granted {
                outcome,
                entitlement: grant.entitlement.clone(),
                state: grant.state,
                ttl_seconds: grant.ttl.as_secs(),
                expires_at: grant.expires_at,
                explanation: decision.clone(),
            })),
        ));
        if grant.break_glass {
            records.push(about_grant(
                caller,
                grant,
                now,
                Event::BreakGlass(BreakGlass {
                    entitlement: grant.entitlement.clone(),
                    justification: grant.justification.clone(),
                    ticket: grant.ticket.clone(),
                    unreviewed_before: u64::try_from(self.unreviewed)
                        .ok()
                        .filter(|count| *count > 0),
                }),
            ));
        }
        if let Some((credential, spiffe_id)) = credential {
            records.push(super::events::issued(
                caller, grant, credential, spiffe_id, now,
            ));
        }
        records
    }
}

/// The SPIFFE ID credentials carry: the caller's, or for a per-task
/// entitlement the caller's with `/task/<task>` appended.
pub(super) fn credential_id(
    caller: &SpiffeId,
    task: &TaskId,
    per_task: bool,
) -> Result<SpiffeId, IssueError> {
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

/// Most bytes of the decision a grant record keeps.
pub(super) const MAX_GRANT_DECISION_BYTES: usize = 2048;

/// The decision a grant keeps: the whole explanation when it is small, or
/// else its verdict without the request's context (its labels can add
/// kilobytes per grant); the audit trail keeps the whole of it.
fn grant_decision(explanation: Option<&serde_json::Value>) -> String {
    let Some(explanation) = explanation else {
        return String::new();
    };
    let whole = explanation.to_string();
    if whole.len() <= MAX_GRANT_DECISION_BYTES {
        return whole;
    }
    let mut kept = serde_json::Map::new();
    for key in [
        "caller",
        "entitlement",
        "risk",
        "time",
        "active_grants",
        "outcome",
        "matched",
    ] {
        if let Some(value) = explanation.get(key) {
            kept.insert(key.to_owned(), value.clone());
        }
    }
    kept.insert(
        "inputs".to_owned(),
        "left out of the grant record for size; the audit trail's decision event has them".into(),
    );
    let summary = serde_json::Value::Object(kept).to_string();
    if summary.len() <= MAX_GRANT_DECISION_BYTES {
        summary
    } else {
        serde_json::json!({
            "outcome": explanation.get("outcome"),
            "inputs": "left out of the grant record for size; the audit trail's decision event has them",
        })
        .to_string()
    }
}
