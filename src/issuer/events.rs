//! The audit events the use cases write, built from their typed form
//! ([`crate::audit::event`]) in one place, so each kind has one shape.

use std::time::SystemTime;

use super::request::GrantRequest;
use super::{Attestation, AttestationMethod, Caller};
use crate::audit::Record;
use crate::audit::event::{
    Attested, CredentialIssued, CredentialKind, Envelope, Event, GrantRequested, RequestReceived,
    Rpc,
};
use crate::grant::{Action, Credential, Grant};
use crate::spiffe_id::SpiffeId;

/// The record of `event`, caused by `caller`, about whom and what the
/// envelope's other fields name.
pub(super) fn record(
    caller: &Caller,
    at: SystemTime,
    subject: Option<String>,
    grant: Option<String>,
    task: Option<String>,
    event: Event,
) -> Record {
    let envelope = Envelope {
        at,
        actor: caller.spiffe_id.to_string(),
        subject,
        grant,
        task,
    };
    Record::new(envelope, &event)
}

/// The record of an event about `grant`, caused by `caller`.
pub(super) fn about_grant(caller: &Caller, grant: &Grant, now: SystemTime, event: Event) -> Record {
    record(
        caller,
        now,
        Some(grant.subject.to_string()),
        Some(grant.id.to_string()),
        Some(grant.task_id.to_string()),
        event,
    )
}

/// The audit event of a request as received (validated, so bounded): what
/// was asked, never a key.
pub(super) fn received(
    caller: &Caller,
    request: &GrantRequest,
    rpc: Rpc,
    now: SystemTime,
) -> Record {
    let asked = match request {
        GrantRequest::New(new) => GrantRequested {
            rpc,
            entitlement: new.entitlement.clone(),
            actions: strings(&new.actions),
            ttl_seconds: new.ttl.map(|ttl| ttl.as_secs()),
            justification: new.justification.clone(),
            ticket: new.ticket.clone(),
            break_glass: new.break_glass,
            labels: new.labels.clone(),
            source: caller.source.map(|ip| ip.to_string()),
            attestation: Some(attested(caller)),
        },
        GrantRequest::Existing(existing) => GrantRequested {
            rpc,
            entitlement: None,
            actions: Vec::new(),
            ttl_seconds: existing.ttl.map(|ttl| ttl.as_secs()),
            justification: String::new(),
            ticket: String::new(),
            break_glass: false,
            labels: Default::default(),
            source: caller.source.map(|ip| ip.to_string()),
            attestation: Some(attested(caller)),
        },
    };
    record(
        caller,
        now,
        Some(caller.spiffe_id.to_string()),
        request.grant_id().map(|id| id.to_string()),
        request.task_id().map(ToString::to_string),
        Event::RequestReceived(RequestReceived::Grant(asked)),
    )
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
    about_grant(
        caller,
        grant,
        now,
        Event::CredentialIssued(CredentialIssued {
            credential: CredentialKind::from(&credential.id),
            id: credential.id.value().to_owned(),
            spiffe_id: spiffe_id.to_string(),
            expires_at: credential.expires_at,
            entitlement: grant.entitlement.clone(),
            actions: strings(&grant.actions),
            break_glass: grant.break_glass,
        }),
    )
}

/// Actions as the trail lists them.
pub(super) fn strings(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|action| action.as_str().to_owned())
        .collect()
}

/// Milliseconds from a revocation's or completion's start to `done`.
pub(super) fn lag_ms(start: SystemTime, done: SystemTime) -> u64 {
    done.duration_since(start)
        .map_or(0, |lag| u64::try_from(lag.as_millis()).unwrap_or(u64::MAX))
}

/// How `caller` was attested, for the trail: the method and the facts
/// that policy saw.
pub(super) fn attested(caller: &Caller) -> Attested {
    match &caller.attestation {
        Attestation::Identity(identity) => Attested {
            method: AttestationMethod::X509.to_string(),
            provider: None,
            facts: [("serial".to_owned(), identity.serial.clone().into())].into(),
        },
        Attestation::Oidc(token) => Attested {
            method: AttestationMethod::Oidc.to_string(),
            provider: Some(token.provider.clone()),
            facts: token.claims.clone(),
        },
    }
}
