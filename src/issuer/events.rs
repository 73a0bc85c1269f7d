//! The audit records the use cases write: built here, so each kind of
//! event has one shape.

use std::time::SystemTime;

use super::Caller;
use super::request::GrantRequest;
use crate::audit::{EventKind, Record};
use crate::grant::{Action, Credential, CredentialId, Grant};
use crate::spiffe_id::SpiffeId;

/// The audit event of a request as received (validated, so bounded): what
/// was asked, never a key.
pub(super) fn received(
    caller: &Caller,
    request: &GrantRequest,
    rpc: &'static str,
    now: SystemTime,
) -> Record {
    let (entitlement, actions, ttl, justification, ticket, break_glass, labels) = match request {
        GrantRequest::New(new) => (
            new.entitlement.as_deref().unwrap_or_default(),
            new.actions.iter().map(Action::as_str).collect(),
            new.ttl,
            new.justification.as_str(),
            new.ticket.as_str(),
            new.break_glass,
            Some(&new.labels),
        ),
        GrantRequest::Existing(existing) => ("", Vec::new(), existing.ttl, "", "", false, None),
    };
    Record {
        kind: EventKind::RequestReceived,
        at: now,
        actor: caller.spiffe_id.to_string(),
        subject: Some(caller.spiffe_id.to_string()),
        grant: request.grant_id().map(|id| id.to_string()),
        task: request.task_id().map(ToString::to_string),
        details: serde_json::json!({
            "rpc": rpc,
            "entitlement": entitlement,
            "actions": actions,
            "ttl_seconds": ttl.map(|ttl| ttl.as_secs()),
            "justification": justification,
            "ticket": ticket,
            "break_glass": break_glass,
            "labels": labels.cloned().unwrap_or_default(),
            "source": caller.source.map(|ip| ip.to_string()),
        }),
    }
}

/// The audit event of a credential minted under `grant`: its id (serial
/// or jti), kind and expiry; never the credential itself.
pub(super) fn issued(
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
            "expires_at": rfc3339(credential.expires_at),
            "entitlement": grant.entitlement,
            "actions": grant.actions.iter().map(Action::as_str).collect::<Vec<_>>(),
            "break_glass": grant.break_glass,
        }),
    )
}

/// A time as audit events write it.
pub(super) fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Milliseconds from a revocation's or completion's start to `done`.
pub(super) fn lag_ms(start: SystemTime, done: SystemTime) -> u64 {
    done.duration_since(start)
        .map_or(0, |lag| u64::try_from(lag.as_millis()).unwrap_or(u64::MAX))
}

/// An audit event about `grant`, caused by `caller`.
pub(super) fn grant_event(
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
