//! The one JSON form of typed events: [`Event::details`] writes an
//! event's `details` exactly as the trail always held them, and
//! [`Event::from_details`] reads them back; [`Record::new`] and
//! [`AuditEvent::event`] are built on the two.

use serde::{Serialize, de::DeserializeOwned};

use super::{CatalogueReloaded, Decision, Envelope, Event, EventError, RequestReceived};
use crate::audit::{AuditEvent, EventKind, Record};

// === impl Event ===

impl Event {
    /// The event's `details` object, as the trail stores it.
    pub fn details(&self) -> serde_json::Value {
        match self {
            Self::RequestReceived(RequestReceived::Grant(request)) => object(request, &[]),
            Self::RequestReceived(RequestReceived::Delegation(request)) => {
                object(request, &[("rpc", "Delegate".into())])
            }
            Self::Decision(Decision::Granted(granted)) => object(granted, &[]),
            Self::Decision(Decision::Delegated(delegated)) => {
                // The explanation says `"outcome": "delegated"` too.
                let explanation = delegated.explanation.to_value();
                object(
                    delegated,
                    &[
                        ("outcome", "delegated".into()),
                        ("state", "active".into()),
                        ("explanation", explanation),
                    ],
                )
            }
            Self::Decision(Decision::Refused(refused)) => object(refused, &[]),
            Self::Approval(approval) => object(approval, &[]),
            Self::ApprovalDenied(denied) => object(denied, &[]),
            Self::BreakGlass(break_glass) => object(break_glass, &[("review", "open".into())]),
            Self::CredentialIssued(issued) => object(issued, &[]),
            Self::Revocation(revocation) => object(revocation, &[]),
            Self::TaskCompleted(completed) => object(completed, &[]),
            Self::GrantExpired(expired) => object(expired, &[]),
            Self::ReviewAcknowledged(acknowledged) => object(acknowledged, &[]),
            Self::CatalogueReloaded(CatalogueReloaded::Reloaded(reloaded)) => {
                object(reloaded, &[("reloaded", true.into())])
            }
            Self::CatalogueReloaded(CatalogueReloaded::Refused(refused)) => {
                object(refused, &[("reloaded", false.into())])
            }
            Self::AuthenticationFailure(failure) => object(failure, &[]),
            Self::LivenessChecked(checked) => object(checked, &[]),
            Self::RevocationApplied(applied) => object(applied, &[]),
            Self::IdentityIssued(issued) => object(issued, &[]),
            Self::IdentityRevoked(revoked) => object(revoked, &[]),
            Self::JoinTokenCreated(created) => object(created, &[]),
            Self::JoinTokenUsed(used) => object(used, &[]),
        }
    }

    /// Reads `details` as an event of `kind`.
    pub fn from_details(
        kind: EventKind,
        details: &serde_json::Value,
    ) -> Result<Self, serde_json::Error> {
        let has = |key: &str| details.get(key).is_some();
        Ok(match kind {
            EventKind::RequestReceived => {
                if details.get("rpc").and_then(|rpc| rpc.as_str()) == Some("Delegate") {
                    Self::RequestReceived(RequestReceived::Delegation(read(details)?))
                } else {
                    Self::RequestReceived(RequestReceived::Grant(read(details)?))
                }
            }
            // A delegation names its parent; a refusal has no state.
            EventKind::Decision if has("parent") => {
                Self::Decision(Decision::Delegated(read(details)?))
            }
            EventKind::Decision if has("state") => {
                Self::Decision(Decision::Granted(read(details)?))
            }
            EventKind::Decision => Self::Decision(Decision::Refused(read(details)?)),
            EventKind::Approval => Self::Approval(read(details)?),
            EventKind::ApprovalDenied => Self::ApprovalDenied(read(details)?),
            EventKind::BreakGlass => Self::BreakGlass(read(details)?),
            EventKind::CredentialIssued => Self::CredentialIssued(read(details)?),
            EventKind::Revocation => Self::Revocation(read(details)?),
            EventKind::TaskCompleted => Self::TaskCompleted(read(details)?),
            EventKind::GrantExpired => Self::GrantExpired(read(details)?),
            EventKind::ReviewAcknowledged => Self::ReviewAcknowledged(read(details)?),
            EventKind::CatalogueReloaded => {
                if details
                    .get("reloaded")
                    .and_then(|reloaded| reloaded.as_bool())
                    == Some(true)
                {
                    Self::CatalogueReloaded(CatalogueReloaded::Reloaded(read(details)?))
                } else {
                    Self::CatalogueReloaded(CatalogueReloaded::Refused(read(details)?))
                }
            }
            EventKind::AuthenticationFailure => Self::AuthenticationFailure(read(details)?),
            EventKind::LivenessChecked => Self::LivenessChecked(read(details)?),
            EventKind::RevocationApplied => Self::RevocationApplied(read(details)?),
            EventKind::IdentityIssued => Self::IdentityIssued(read(details)?),
            EventKind::IdentityRevoked => Self::IdentityRevoked(read(details)?),
            EventKind::JoinTokenCreated => Self::JoinTokenCreated(read(details)?),
            EventKind::JoinTokenUsed => Self::JoinTokenUsed(read(details)?),
        })
    }
}

// === impl Record ===

impl Record {
    /// The record of `event` in `envelope`: the one place an event's
    /// details are made.
    pub fn new(envelope: Envelope, event: &Event) -> Self {
        Self {
            kind: event.kind(),
            details: event.details(),
            at: envelope.at,
            actor: envelope.actor,
            subject: envelope.subject,
            grant: envelope.grant,
            task: envelope.task,
        }
    }

    /// The record's typed event.
    pub fn event(&self) -> Result<Event, EventError> {
        Event::from_details(self.kind, &self.details).map_err(|source| EventError::Details {
            seq: 0,
            kind: self.kind,
            source,
        })
    }
}

// === impl AuditEvent ===

impl AuditEvent {
    /// The event's kind and details, typed.
    pub fn event(&self) -> Result<Event, EventError> {
        Event::from_details(self.kind, &self.details).map_err(|source| EventError::Details {
            seq: self.seq,
            kind: self.kind,
            source,
        })
    }
}

/// `value`'s JSON object with `constants` added.
pub(super) fn object(
    value: &impl Serialize,
    constants: &[(&str, serde_json::Value)],
) -> serde_json::Value {
    // The details types are structs of strings, numbers, booleans, lists,
    // string-keyed maps and JSON values: serializing them cannot fail.
    let mut details = serde_json::to_value(value).unwrap_or_default();
    if let serde_json::Value::Object(map) = &mut details {
        for (key, constant) in constants {
            map.insert((*key).to_owned(), constant.clone());
        }
    }
    details
}

fn read<T: DeserializeOwned>(details: &serde_json::Value) -> Result<T, serde_json::Error> {
    T::deserialize(details)
}

/// Times written as RFC 3339 UTC in whole seconds, as grants and
/// credentials carry them.
pub(super) mod seconds {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(in crate::audit::event) fn serialize<S: Serializer>(
        at: &SystemTime,
        out: S,
    ) -> Result<S::Ok, S::Error> {
        out.collect_str(&humantime::format_rfc3339_seconds(*at))
    }

    pub(in crate::audit::event) fn deserialize<'de, D: Deserializer<'de>>(
        input: D,
    ) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(input)?;
        humantime::parse_rfc3339(&text)
            .map_err(|error| D::Error::custom(format!("{text:?} is not an RFC 3339 time: {error}")))
    }
}

/// A grant state by its one name, [`GrantState::as_str`].
pub(super) mod grant_state {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    use crate::grant::GrantState;

    const STATES: [GrantState; 5] = [
        GrantState::Pending,
        GrantState::Denied,
        GrantState::Active,
        GrantState::Completed,
        GrantState::Revoked,
    ];

    pub(in crate::audit::event) fn serialize<S: Serializer>(
        state: &GrantState,
        out: S,
    ) -> Result<S::Ok, S::Error> {
        out.serialize_str(state.as_str())
    }

    pub(in crate::audit::event) fn deserialize<'de, D: Deserializer<'de>>(
        input: D,
    ) -> Result<GrantState, D::Error> {
        let text = String::deserialize(input)?;
        STATES
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| {
                D::Error::unknown_variant(
                    &text,
                    &["pending", "denied", "active", "completed", "revoked"],
                )
            })
    }
}

/// Text where `""` means none.
pub(super) mod empty_is_none {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(in crate::audit::event) fn serialize<S: Serializer>(
        text: &Option<String>,
        out: S,
    ) -> Result<S::Ok, S::Error> {
        out.serialize_str(text.as_deref().unwrap_or_default())
    }

    pub(in crate::audit::event) fn deserialize<'de, D: Deserializer<'de>>(
        input: D,
    ) -> Result<Option<String>, D::Error> {
        let text = Option::<String>::deserialize(input)?;
        Ok(text.filter(|text| !text.is_empty()))
    }
}
