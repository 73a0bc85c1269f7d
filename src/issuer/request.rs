//! Requests as the use cases take them: parsed and size-capped once, where
//! the server turns the wire message into them, so no use case sees an
//! empty string standing for "none", and nothing malformed or oversized
//! reaches policy or the audit trail.

use std::collections::BTreeMap;
use std::time::Duration;

use super::IssueError;
use crate::grant::{Action, GrantId, NameError, TaskId};
use crate::policy;

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

/// A grant request's fields as they arrive on the wire, where an empty
/// string or list means "not set". Only [`GrantRequest::parse`] reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantFields {
    /// Entitlement name.
    pub entitlement: String,
    /// Requested actions.
    pub actions: Vec<String>,
    /// Task id.
    pub task_id: String,
    /// Requested TTL.
    pub ttl: Option<Duration>,
    /// Why the caller needs it.
    pub justification: String,
    /// A change or incident ticket reference.
    pub ticket: String,
    /// An emergency request.
    pub break_glass: bool,
    /// Labels for the policy conditions.
    pub labels: BTreeMap<String, String>,
    /// An existing grant to mint under.
    pub grant_id: String,
}

/// What a caller asks credentials (or a grant) for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantRequest {
    /// A new grant, decided by policy now.
    New(NewGrant),
    /// A credential under an active grant the caller holds.
    Existing(ExistingGrant),
}

/// A request for a new grant, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGrant {
    /// The entitlement named; `None` lets policy find one covering
    /// `actions`.
    pub(crate) entitlement: Option<String>,
    /// The actions asked for; empty for the entitlement's whole set.
    pub(crate) actions: Vec<Action>,
    /// The task; `None` to have one generated.
    pub(crate) task_id: Option<TaskId>,
    /// The lifetime asked for; `None` for the entitlement's default.
    pub(crate) ttl: Option<Duration>,
    /// Why (printable, capped).
    pub(crate) justification: String,
    /// Ticket reference (printable, capped).
    pub(crate) ticket: String,
    /// Asks for the break-glass path.
    pub(crate) break_glass: bool,
    /// Labels for the policy conditions (checked keys and values).
    pub(crate) labels: BTreeMap<String, String>,
}

/// A credential asked under an existing grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExistingGrant {
    /// The grant.
    pub(crate) grant_id: GrantId,
    /// The credential's lifetime; `None` for what is left of the grant.
    pub(crate) ttl: Option<Duration>,
}

/// A delegation request, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationRequest {
    /// The caller's grant to delegate from.
    pub(crate) parent: GrantId,
    /// The child's name: the last segment of its SPIFFE ID.
    pub(crate) name: String,
    /// Actions, a subset of the parent's; empty for all of them.
    pub(crate) actions: Vec<Action>,
    /// Lifetime; `None` for what is left of the parent's.
    pub(crate) ttl: Option<Duration>,
    /// Why.
    pub(crate) justification: String,
}

// === impl GrantRequest ===

impl GrantRequest {
    /// Validates a request as received.
    pub fn parse(fields: GrantFields) -> Result<Self, IssueError> {
        if !fields.grant_id.is_empty() {
            if !fields.entitlement.is_empty()
                || !fields.actions.is_empty()
                || !fields.task_id.is_empty()
                || !fields.justification.is_empty()
                || !fields.ticket.is_empty()
                || fields.break_glass
                || !fields.labels.is_empty()
            {
                return Err(invalid(
                    "grant_id",
                    "names an existing grant: leave entitlement, actions, task_id, \
                     justification, ticket, labels and break_glass unset"
                        .to_owned(),
                ));
            }
            return Ok(Self::Existing(ExistingGrant {
                grant_id: parse_grant_id(&fields.grant_id)?,
                ttl: fields.ttl,
            }));
        }
        let entitlement = match fields.entitlement.as_str() {
            "" => None,
            name if name.len() > MAX_ENTITLEMENT_BYTES => {
                return Err(invalid(
                    "entitlement",
                    format!("is longer than {MAX_ENTITLEMENT_BYTES} bytes"),
                ));
            }
            _ => Some(fields.entitlement),
        };
        if fields.actions.len() > MAX_ACTIONS {
            return Err(invalid(
                "actions",
                format!("more than {MAX_ACTIONS} actions"),
            ));
        }
        let actions = fields
            .actions
            .iter()
            .map(|action| Action::new(action).map_err(|error| name_error("actions", action, error)))
            .collect::<Result<Vec<_>, _>>()?;
        let task_id = match fields.task_id.as_str() {
            "" => None,
            task => Some(TaskId::new(task).map_err(|error| name_error("task_id", task, error))?),
        };
        if fields.justification.len() > MAX_JUSTIFICATION_BYTES
            || fields.justification.chars().any(char::is_control)
        {
            return Err(invalid(
                "justification",
                format!("must be at most {MAX_JUSTIFICATION_BYTES} bytes of printable text"),
            ));
        }
        if fields.ticket.len() > MAX_TICKET_BYTES || fields.ticket.chars().any(char::is_control) {
            return Err(invalid(
                "ticket",
                format!("must be at most {MAX_TICKET_BYTES} bytes of printable text"),
            ));
        }
        validate_labels(&fields.labels)?;
        Ok(Self::New(NewGrant {
            entitlement,
            actions,
            task_id,
            ttl: fields.ttl,
            justification: fields.justification,
            ticket: fields.ticket,
            break_glass: fields.break_glass,
            labels: fields.labels,
        }))
    }

    /// The grant it names, for one under an existing grant.
    pub fn grant_id(&self) -> Option<GrantId> {
        match self {
            Self::New(_) => None,
            Self::Existing(existing) => Some(existing.grant_id),
        }
    }

    /// The task it names, if any.
    pub fn task_id(&self) -> Option<&TaskId> {
        match self {
            Self::New(new) => new.task_id.as_ref(),
            Self::Existing(_) => None,
        }
    }
}

// === impl DelegationRequest ===

impl DelegationRequest {
    /// Validates a delegation request as received; `ttl` is `None` when
    /// unset.
    pub fn parse(
        parent_grant_id: &str,
        name: String,
        actions: &[String],
        ttl: Option<Duration>,
        justification: String,
    ) -> Result<Self, IssueError> {
        let parent = GrantId::parse(parent_grant_id)
            .ok_or_else(|| invalid("parent_grant_id", "is not a grant id (a UUID)".to_owned()))?;
        check_name("name", &name)?;
        check_comment("justification", &justification)?;
        if actions.len() > MAX_ACTIONS {
            return Err(invalid("actions", format!("at most {MAX_ACTIONS}")));
        }
        let actions = actions
            .iter()
            .map(|text| {
                Action::new(text).map_err(|error| invalid("actions", format!("{text:?} {error}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            parent,
            name,
            actions,
            ttl,
            justification,
        })
    }
}

/// The audiences of a JWT-SVID: 1 to [`MAX_AUDIENCES`] non-empty ones of at
/// most [`MAX_AUDIENCE_BYTES`], duplicates dropped.
pub fn validate_audiences(audiences: &[String]) -> Result<Vec<String>, IssueError> {
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

/// A name used as a path segment or key: 1 to [`MAX_NAME_BYTES`] letters,
/// digits, '.', '-' or '_'.
pub(crate) fn check_name(field: &'static str, name: &str) -> Result<(), IssueError> {
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

/// A comment, reason or justification: at most
/// [`MAX_JUSTIFICATION_BYTES`] of printable text (newlines allowed).
pub(crate) fn check_comment(field: &'static str, text: &str) -> Result<(), IssueError> {
    if text.len() > MAX_JUSTIFICATION_BYTES || text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(invalid(
            field,
            format!("must be at most {MAX_JUSTIFICATION_BYTES} bytes of printable text"),
        ));
    }
    Ok(())
}

pub(crate) fn parse_grant_id(text: &str) -> Result<GrantId, IssueError> {
    GrantId::parse(text).ok_or_else(|| invalid("grant_id", "is not a grant id (a UUID)".to_owned()))
}

pub(crate) fn invalid(field: &'static str, message: String) -> IssueError {
    IssueError::InvalidField { field, message }
}

pub(crate) fn name_error(field: &'static str, value: &str, error: NameError) -> IssueError {
    // Echo at most a short prefix of attacker-controlled input.
    let shown: String = value.chars().take(64).collect();
    invalid(field, format!("{shown:?} {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard() -> crate::grant::Shard {
        let subject = crate::spiffe_id::SpiffeId::new("spiffe://example.org/ci/runner").unwrap();
        crate::grant::Shard::of(&subject)
    }

    fn parse(fields: GrantFields) -> Result<GrantRequest, String> {
        GrantRequest::parse(fields).map_err(|error| error.to_string())
    }

    #[test]
    fn empty_fields_are_unset_not_values() {
        let GrantRequest::New(new) = parse(GrantFields::default()).unwrap() else {
            panic!("a request without grant_id is a new grant");
        };
        assert_eq!(new.entitlement, None);
        assert_eq!(new.task_id, None);
        assert!(new.actions.is_empty());
    }

    #[test]
    fn an_existing_grant_takes_only_a_ttl() {
        let id = GrantId::generate(shard());
        let request = parse(GrantFields {
            grant_id: id.to_string(),
            ttl: Some(Duration::from_secs(60)),
            ..GrantFields::default()
        })
        .unwrap();
        assert_eq!(request.grant_id(), Some(id));
        let mixed = parse(GrantFields {
            grant_id: id.to_string(),
            task_id: "t".to_owned(),
            ..GrantFields::default()
        });
        assert!(
            mixed
                .unwrap_err()
                .starts_with("grant_id: names an existing grant")
        );
        let bad = parse(GrantFields {
            grant_id: "nope".to_owned(),
            ..GrantFields::default()
        });
        assert_eq!(bad.unwrap_err(), "grant_id: is not a grant id (a UUID)");
    }

    #[test]
    fn oversized_and_malformed_fields_are_refused_by_name() {
        let cases: Vec<(GrantFields, &str)> = vec![
            (
                GrantFields {
                    justification: "x".repeat(60 * 1024),
                    ..GrantFields::default()
                },
                "justification:",
            ),
            (
                GrantFields {
                    ticket: "t\u{7}".to_owned(),
                    ..GrantFields::default()
                },
                "ticket:",
            ),
            (
                GrantFields {
                    entitlement: "e".repeat(MAX_ENTITLEMENT_BYTES + 1),
                    ..GrantFields::default()
                },
                "entitlement:",
            ),
            (
                GrantFields {
                    actions: vec!["a:b".to_owned(); MAX_ACTIONS + 1],
                    ..GrantFields::default()
                },
                "actions:",
            ),
            (
                GrantFields {
                    actions: vec!["bad action".to_owned()],
                    ..GrantFields::default()
                },
                "actions:",
            ),
            (
                GrantFields {
                    task_id: "a/b".to_owned(),
                    ..GrantFields::default()
                },
                "task_id:",
            ),
            (
                GrantFields {
                    labels: [("1x".to_owned(), "v".to_owned())].into(),
                    ..GrantFields::default()
                },
                "labels:",
            ),
        ];
        for (fields, field) in cases {
            let error = parse(fields).unwrap_err();
            assert!(error.starts_with(field), "{error}");
            // Never an echo of the whole oversized input.
            assert!(error.len() < 200, "{error}");
        }
    }

    #[test]
    fn delegation_requests_are_checked() {
        let id = GrantId::generate(shard()).to_string();
        let ok = DelegationRequest::parse(&id, "tool".to_owned(), &[], None, String::new());
        assert!(ok.is_ok());
        for (parent, name, message) in [
            ("nope", "tool", "parent_grant_id:"),
            (id.as_str(), "..", "name:"),
            (id.as_str(), "a/b", "name:"),
        ] {
            let error = DelegationRequest::parse(parent, name.to_owned(), &[], None, String::new())
                .unwrap_err()
                .to_string();
            assert!(error.starts_with(message), "{error}");
        }
    }

    #[test]
    fn audiences_are_deduplicated_and_capped() {
        let twice = vec!["a".to_owned(), "a".to_owned()];
        assert_eq!(validate_audiences(&twice).unwrap(), vec!["a".to_owned()]);
        assert!(validate_audiences(&[]).is_err());
        assert!(validate_audiences(&vec!["a".to_owned(); MAX_AUDIENCES + 1]).is_err());
        assert!(validate_audiences(&["x".repeat(MAX_AUDIENCE_BYTES + 1)]).is_err());
    }
}
