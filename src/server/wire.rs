//! The wire edge of the service: proto messages to validated domain
//! requests and domain records back to proto, and the one mapping from
//! [`IssueError`] to a gRPC status.

use std::time::Duration;

use tonic::Status;

use crate::convert;
use crate::grant::{Action, Credential, CredentialId, Grant, GrantState};
use crate::issuer::{GrantFields, GrantRequest, IssueError, RemovalStatus};
use crate::proto::v1 as pb;
use crate::spiffe_id::SpiffeId;
use crate::store::{Review, StoreError};

pub(super) fn removal_status(removal: RemovalStatus) -> pb::RevocationStatusResponse {
    let record = grant_record(&removal.grant, &[]);
    let (cursor, ended_at) = match &removal.event {
        Some((cursor, event)) => (cursor.clone(), Some(convert::timestamp(event.at))),
        None => (String::new(), None),
    };
    pb::RevocationStatusResponse {
        grant_id: removal.grant.id.to_string(),
        state: record.state,
        reason: record.end_reason,
        cursor,
        ended_at,
        all_applied: removal.event.is_some()
            && removal
                .parties
                .iter()
                .all(|party| party.applied_at.is_some()),
        relying_parties: removal
            .parties
            .into_iter()
            .map(|party| pb::RelyingPartyStatus {
                name: party.party.name,
                spiffe_id: party.party.spiffe_id.to_string(),
                applied: party.applied_at.is_some(),
                took: Some(convert::duration(party.took)),
                overdue: party.overdue,
                last_seen: Some(convert::timestamp(party.party.last_seen)),
            })
            .collect(),
        ack_bound: Some(convert::duration(removal.bound)),
    }
}

/// A request's duration, refused if negative or not normalized.
pub(super) fn duration_of(duration: prost_types::Duration) -> Result<Duration, Status> {
    convert::std_duration(&duration).ok_or_else(|| {
        Status::invalid_argument("ttl: must not be negative, and its nanos must be below 10^9")
    })
}

/// A domain grant state on the wire.
fn wire_state(state: GrantState) -> pb::GrantState {
    match state {
        GrantState::Pending => pb::GrantState::Pending,
        GrantState::Denied => pb::GrantState::Denied,
        GrantState::Active => pb::GrantState::Active,
        GrantState::Completed => pb::GrantState::Completed,
        GrantState::Revoked => pb::GrantState::Revoked,
    }
}

/// A state filter from the wire: `None` for any state; refused for one no
/// live grant has.
pub(super) fn state_filter(state: i32) -> Result<Option<GrantState>, Status> {
    match pb::GrantState::try_from(state) {
        Ok(pb::GrantState::Unspecified) => Ok(None),
        Ok(pb::GrantState::Active) => Ok(Some(GrantState::Active)),
        Ok(pb::GrantState::Completed) => Ok(Some(GrantState::Completed)),
        Ok(pb::GrantState::Revoked) => Ok(Some(GrantState::Revoked)),
        Ok(pb::GrantState::Pending) => Ok(Some(GrantState::Pending)),
        Ok(pb::GrantState::Denied) => Ok(Some(GrantState::Denied)),
        Ok(pb::GrantState::Expired) | Err(_) => Err(Status::invalid_argument(
            "state: unknown grant state (expired grants are not listed)",
        )),
    }
}

pub(super) fn review_record(review: &Review) -> pb::Review {
    let ack = review.ack.as_ref();
    pb::Review {
        grant_id: review.grant_id.to_string(),
        subject: review.subject.to_string(),
        entitlement: review.entitlement.clone(),
        actions: review.actions.iter().map(Action::to_string).collect(),
        task_id: review.task_id.to_string(),
        justification: review.justification.clone(),
        ticket: review.ticket.clone(),
        opened_at: Some(convert::timestamp(review.opened_at)),
        expires_at: Some(convert::timestamp(review.expires_at)),
        acknowledged: ack.is_some(),
        acknowledged_by: ack.map(|ack| ack.by.to_string()).unwrap_or_default(),
        acknowledged_at: ack.map(|ack| convert::timestamp(ack.at)),
        comment: ack.map(|ack| ack.comment.clone()).unwrap_or_default(),
    }
}

pub(super) fn grant_record(grant: &Grant, credentials: &[Credential]) -> pb::GrantRecord {
    pb::GrantRecord {
        summary: Some(summary(grant, &grant.subject)),
        state: wire_state(grant.state).into(),
        end_reason: grant.end_reason.clone().unwrap_or_default(),
        created_at: Some(convert::timestamp(grant.created_at)),
        justification: grant.justification.clone(),
        parent_grant_id: grant.parent.map(|p| p.to_string()).unwrap_or_default(),
        break_glass: grant.break_glass,
        approvals: grant
            .approvals
            .iter()
            .map(|approval| pb::ApprovalRecord {
                approver: approval.approver.to_string(),
                at: Some(convert::timestamp(approval.at)),
                comment: approval.comment.clone(),
            })
            .collect(),
        decision: grant.decision.clone(),
        ticket: grant.ticket.clone(),
        ttl: Some(convert::duration(grant.ttl)),
        delegation: grant
            .delegation
            .as_ref()
            .map(|delegation| pb::DelegationRecord {
                spiffe_id: delegation.spiffe_id.to_string(),
                parent_grant_ids: delegation
                    .chain
                    .iter()
                    .map(|ancestor| ancestor.grant_id.to_string())
                    .collect(),
                actors: delegation
                    .chain
                    .iter()
                    .map(|ancestor| ancestor.spiffe_id.to_string())
                    .collect(),
            }),
        credentials: credentials
            .iter()
            .map(|credential| pb::CredentialRecord {
                id: credential.id.value().to_owned(),
                kind: match credential.id {
                    CredentialId::X509Serial(_) => "x509",
                    CredentialId::JwtId(_) => "jwt",
                }
                .to_owned(),
                expires_at: Some(convert::timestamp(credential.expires_at)),
                revoked: credential.revoked,
            })
            .collect(),
    }
}

/// Converts the wire request into a validated domain request.
pub(super) fn grant_spec(grant: Option<pb::GrantSpec>) -> Result<GrantRequest, Status> {
    let grant = grant.unwrap_or_default();
    let ttl = grant.ttl.map(duration_of).transpose()?;
    GrantRequest::parse(GrantFields {
        entitlement: grant.entitlement,
        actions: grant.actions,
        task_id: grant.task_id,
        ttl,
        justification: grant.justification,
        ticket: grant.ticket,
        break_glass: grant.break_glass,
        labels: grant.labels.into_iter().collect(),
        grant_id: grant.grant_id,
    })
    .map_err(status)
}

pub(super) fn summary(grant: &Grant, spiffe_id: &SpiffeId) -> pb::GrantSummary {
    pb::GrantSummary {
        grant_id: grant.id.to_string(),
        spiffe_id: spiffe_id.to_string(),
        entitlement: grant.entitlement.clone(),
        actions: grant.actions.iter().map(Action::to_string).collect(),
        task_id: grant.task_id.to_string(),
        expires_at: Some(convert::timestamp(grant.expires_at)),
    }
}

/// The one mapping from issuer errors to gRPC statuses.
pub(super) fn status(error: IssueError) -> Status {
    if error.is_unauthenticated() {
        Status::unauthenticated(error.to_string())
    } else if error.is_invalid_argument() {
        Status::invalid_argument(error.to_string())
    } else if error.is_permission_denied() {
        Status::permission_denied(error.to_string())
    } else if error.is_not_found() {
        Status::not_found(error.to_string())
    } else if error.is_failed_precondition() {
        Status::failed_precondition(error.to_string())
    } else if let IssueError::Store(StoreError::NotReplicated { .. }) = &error {
        // Written on the primary but not yet durable on enough replicas:
        // not acknowledged, so the caller retries (revocations are
        // idempotent).
        tracing::warn!(error = %error, "revocation not replicated in time");
        Status::unavailable(format!("{error}; not acknowledged, retry"))
    } else if let IssueError::Store(StoreError::SubjectFull { .. }) = &error {
        // Not retried by clients: no pushback, and waiting alone may not help.
        Status::resource_exhausted(error.to_string())
    } else if let IssueError::Audit(audit) = &error {
        tracing::error!(error = %audit, "audit trail unavailable; failing closed");
        Status::unavailable("audit trail unavailable; the operation was not completed")
    } else if error.is_unavailable() {
        tracing::warn!(error = %error_chain(&error), "store unavailable");
        Status::unavailable("grant store unavailable; nothing was changed")
    } else {
        // Signing failures and store conflicts: log the cause, tell the
        // caller only that nothing was issued.
        tracing::error!(error = %error_chain(&error), "issuance failed");
        match error {
            IssueError::Store(StoreError::Conflict(_)) => {
                Status::aborted("grant id collision; nothing was issued, retry")
            }
            _ => Status::internal("internal error; nothing was issued"),
        }
    }
}

pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Grants in one `ListGrants` reply when the request does not say.
pub(super) const DEFAULT_PAGE_SIZE: usize = 100;
/// Most grants in one `ListGrants` reply.
pub(super) const MAX_PAGE_SIZE: usize = 1000;

/// One page of `grants` (ordered here oldest first, then by id): those
/// after `token`'s place, at most `page_size` of them, and the token of
/// the next page if more remain. A token is `<created, ms>.<grant id>` of
/// the last grant of the page before.
pub(super) fn grant_page(
    mut grants: Vec<Grant>,
    page_size: u32,
    token: &str,
) -> Result<(Vec<Grant>, String), Status> {
    let size = match page_size as usize {
        0 => DEFAULT_PAGE_SIZE,
        size if size <= MAX_PAGE_SIZE => size,
        _ => {
            return Err(Status::invalid_argument(format!(
                "page_size: at most {MAX_PAGE_SIZE}"
            )));
        }
    };
    let key = |grant: &Grant| {
        (
            crate::clock::unix_millis(grant.created_at),
            grant.id.simple(),
        )
    };
    grants.sort_by_key(key);
    if !token.is_empty() {
        let after = token
            .split_once('.')
            .and_then(|(millis, id)| Some((millis.parse::<u64>().ok()?, id)))
            .filter(|(_, id)| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| {
                Status::invalid_argument("page_token: not a token from a ListGrants reply")
            })?;
        grants.retain(|grant| {
            let (millis, id) = key(grant);
            (millis, id.as_str()) > (after.0, after.1)
        });
    }
    let next = if grants.len() > size {
        grants.truncate(size);
        grants
            .last()
            .map(|last| {
                let (millis, id) = key(last);
                format!("{millis}.{id}")
            })
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok((grants, next))
}
