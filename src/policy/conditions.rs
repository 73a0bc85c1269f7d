//! Context conditions of an entitlement, written as Cedar policies.
//!
//! Each request is put to Cedar once per requested action:
//! - principal: `Workload::"<spiffe id>"`, with attributes `trust_domain`
//!   and `path`, member of `Group::"<name>"` for each catalogue group it
//!   matches;
//! - action: `Action::"<action>"`;
//! - resource: `Entitlement::"<name>"`, with attributes `risk` and `owner`;
//! - context: see [`RequestContext`] and docs/policy.md; how the caller
//!   was attested is `context.attestation.method` (`"x509"`, `"oidc"`)
//!   and an OIDC token's claims are `context.attestation.claims`.
//!
//! An action is allowed when a `permit` matches and no `forbid` does. A
//! policy that fails to evaluate (say, it reads a context field that is not
//! there) denies: conditions fail closed.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::SystemTime;

use cedar_policy::{
    Authorizer, Context, Decision, Effect, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    PolicyId, PolicySet, Request, RestrictedExpression,
};

use super::{Entitlement, RequestContext};
use crate::clock::unix_seconds;
use crate::grant::Action;
use crate::spiffe_id::SpiffeId;

/// The Cedar policies of one entitlement.
#[derive(Clone)]
pub struct Conditions {
    source: String,
    set: PolicySet,
    types: Types,
    /// Policy ids in file order, with their effect and `@reason`.
    policies: Vec<(String, Effect, Option<String>)>,
}

/// What Cedar decided for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A permit matched for every action and no forbid did.
    Permit {
        /// Ids of the policies that matched.
        matched: Vec<String>,
    },
    /// A forbid matched.
    Forbid {
        /// Ids of the forbids that matched.
        matched: Vec<String>,
        /// Their `@reason` annotations (or ids).
        reasons: Vec<String>,
    },
    /// No permit matched for some action.
    NoPermit {
        /// The action.
        action: String,
        /// What the permits require: their `@reason` annotations (or ids).
        reasons: Vec<String>,
    },
    /// A policy could not be evaluated.
    Error {
        /// The message, naming the policy.
        message: String,
    },
}

/// Everything a condition may look at, besides the entitlement.
#[derive(Debug, Clone, Copy)]
pub struct ConditionInput<'a> {
    /// The attested caller.
    pub caller: &'a SpiffeId,
    /// Names of the catalogue groups the caller is in.
    pub groups: &'a [&'a str],
    /// The actions asked for (each is checked).
    pub actions: &'a [Action],
    /// The request's context.
    pub context: &'a RequestContext,
    /// Whether each change window is open now, by name.
    pub windows: &'a [(String, bool)],
    /// The TTL that would be granted.
    pub ttl_seconds: u64,
    /// The ticket given.
    pub ticket: &'a str,
    /// The justification given.
    pub justification: &'a str,
    /// Whether this is a break-glass request.
    pub break_glass: bool,
    /// When.
    pub now: SystemTime,
}

impl Conditions {
    /// Parses the policies. Each gets the id of its `@id("...")` annotation,
    /// or `<entitlement>.<n>` (from 1, in file order).
    pub fn parse(entitlement: &str, source: &str) -> Result<Self, String> {
        let parsed = PolicySet::from_str(source).map_err(|errors| {
            let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
            format!("not valid Cedar: {}", messages.join("; "))
        })?;
        if parsed.templates().next().is_some() {
            return Err(
                "templates (policies with ?principal or ?resource) are not supported".into(),
            );
        }
        let mut ordered: Vec<_> = parsed.policies().collect();
        // Default ids are policy0, policy1, ... in file order.
        ordered.sort_by_key(|policy| {
            policy
                .id()
                .to_string()
                .strip_prefix("policy")
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(usize::MAX)
        });
        let mut set = PolicySet::new();
        let mut policies = Vec::with_capacity(ordered.len());
        for (index, policy) in ordered.into_iter().enumerate() {
            let id = match policy.annotation("id") {
                Some(id) => id.to_owned(),
                None => format!("{entitlement}.{}", index + 1),
            };
            let reason = policy.annotation("reason").map(str::to_owned);
            let effect = policy.effect();
            set.add(policy.new_id(PolicyId::new(&id)))
                .map_err(|error| format!("policy {id:?}: {error}"))?;
            policies.push((id, effect, reason));
        }
        if !policies
            .iter()
            .any(|(_, effect, _)| *effect == Effect::Permit)
        {
            return Err(
                "has no permit policy, so it would deny every request; add one, e.g. \
                 `permit (principal, action, resource);` next to the forbids"
                    .to_owned(),
            );
        }
        Ok(Self {
            source: source.to_owned(),
            set,
            policies,
            types: Types::new()?,
        })
    }

    /// The change windows the policies read as `context.windows.<name>`
    /// (or `context.windows["<name>"]`).
    pub fn window_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = self.source.as_str();
        while let Some(at) = rest.find("context.windows") {
            rest = &rest[at + "context.windows".len()..];
            let name: String = if let Some(after) = rest.strip_prefix('.') {
                after
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect()
            } else if let Some(after) = rest.trim_start().strip_prefix("[\"") {
                after.chars().take_while(|c| *c != '"').collect()
            } else {
                continue;
            };
            if !name.is_empty() && !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// Ids of the policies, in file order.
    pub fn policy_ids(&self) -> impl Iterator<Item = &str> {
        self.policies.iter().map(|(id, _, _)| id.as_str())
    }

    /// Puts the request to Cedar, once per action.
    pub fn evaluate(&self, entitlement: &Entitlement, input: &ConditionInput<'_>) -> Outcome {
        let built = build(&self.types, entitlement, input);
        let (principal, resource, entities, context) = match built {
            Ok(built) => built,
            Err(message) => return Outcome::Error { message },
        };
        let authorizer = Authorizer::new();
        let mut matched: Vec<String> = Vec::new();
        for action in input.actions {
            let action_uid = uid(&self.types.action, action.as_str());
            let request = match Request::new(
                principal.clone(),
                action_uid,
                resource.clone(),
                context.clone(),
                None,
            ) {
                Ok(request) => request,
                Err(error) => {
                    return Outcome::Error {
                        message: error.to_string(),
                    };
                }
            };
            let response = authorizer.is_authorized(&request, &self.set, &entities);
            if let Some(error) = response.diagnostics().errors().next() {
                return Outcome::Error {
                    message: error.to_string(),
                };
            }
            let reasons: Vec<String> = response
                .diagnostics()
                .reason()
                .map(ToString::to_string)
                .collect();
            match response.decision() {
                Decision::Allow => {
                    for id in reasons {
                        if !matched.contains(&id) {
                            matched.push(id);
                        }
                    }
                }
                Decision::Deny if !reasons.is_empty() => {
                    return Outcome::Forbid {
                        reasons: reasons.iter().map(|id| self.reason_of(id)).collect(),
                        matched: reasons,
                    };
                }
                Decision::Deny => {
                    return Outcome::NoPermit {
                        action: action.as_str().to_owned(),
                        reasons: self
                            .policies
                            .iter()
                            .filter(|(_, effect, _)| *effect == Effect::Permit)
                            .map(|(id, _, _)| self.reason_of(id))
                            .collect(),
                    };
                }
            }
        }
        matched.sort_by_key(|id| self.policies.iter().position(|(known, _, _)| known == id));
        Outcome::Permit { matched }
    }

    fn reason_of(&self, id: &str) -> String {
        self.policies
            .iter()
            .find(|(known, _, _)| known == id)
            .and_then(|(_, _, reason)| reason.clone())
            .map(|reason| format!("{id}: {reason}"))
            .unwrap_or_else(|| id.to_owned())
    }
}

type Built = (EntityUid, EntityUid, Entities, Context);

/// The entity types requests use, parsed once.
#[derive(Clone)]
struct Types {
    workload: EntityTypeName,
    group: EntityTypeName,
    action: EntityTypeName,
    entitlement: EntityTypeName,
}

impl Types {
    fn new() -> Result<Self, String> {
        let parse = |name: &str| EntityTypeName::from_str(name).map_err(|e| e.to_string());
        Ok(Self {
            workload: parse("Workload")?,
            group: parse("Group")?,
            action: parse("Action")?,
            entitlement: parse("Entitlement")?,
        })
    }
}

fn build(
    types: &Types,
    entitlement: &Entitlement,
    input: &ConditionInput<'_>,
) -> Result<Built, String> {
    let principal = uid(&types.workload, input.caller.as_str());
    let resource = uid(&types.entitlement, &entitlement.name);
    let groups: HashSet<EntityUid> = input
        .groups
        .iter()
        .map(|group| uid(&types.group, group))
        .collect();
    let string = |value: &str| RestrictedExpression::new_string(value.to_owned());
    let mut entities = vec![
        Entity::new(
            principal.clone(),
            HashMap::from([
                (
                    "trust_domain".to_owned(),
                    string(input.caller.trust_domain_name()),
                ),
                ("path".to_owned(), string(input.caller.path())),
            ]),
            groups.clone(),
        )
        .map_err(|error| error.to_string())?,
        Entity::new(
            resource.clone(),
            HashMap::from([
                ("risk".to_owned(), string(entitlement.risk.as_str())),
                (
                    "owner".to_owned(),
                    string(entitlement.owner.as_deref().unwrap_or("")),
                ),
            ]),
            HashSet::new(),
        )
        .map_err(|error| error.to_string())?,
    ];
    entities.extend(
        groups
            .into_iter()
            .map(|group| Entity::new_no_attrs(group, HashSet::new())),
    );
    let entities = Entities::from_entities(entities, None).map_err(|error| error.to_string())?;

    let now = unix_seconds(input.now);
    let long =
        |value: u64| RestrictedExpression::new_long(i64::try_from(value).unwrap_or(i64::MAX));
    let record = |fields: Vec<(String, RestrictedExpression)>| {
        RestrictedExpression::new_record(fields).map_err(|error| error.to_string())
    };
    let context = input.context;
    let mut pairs = vec![
        ("environment".to_owned(), string(&context.environment)),
        (
            "time".to_owned(),
            record(vec![
                ("unix".to_owned(), long(now)),
                ("hour".to_owned(), long((now % 86_400) / 3600)),
                ("minute".to_owned(), long((now % 3600) / 60)),
                (
                    "weekday".to_owned(),
                    string(super::window::weekday(input.now)),
                ),
            ])?,
        ),
        (
            "windows".to_owned(),
            record(
                input
                    .windows
                    .iter()
                    .map(|(name, open)| (name.clone(), RestrictedExpression::new_bool(*open)))
                    .collect(),
            )?,
        ),
        (
            "in_window".to_owned(),
            RestrictedExpression::new_bool(input.windows.iter().any(|(_, open)| *open)),
        ),
        ("risk".to_owned(), string(entitlement.risk.as_str())),
        ("ticket".to_owned(), string(input.ticket)),
        ("justification".to_owned(), string(input.justification)),
        (
            "break_glass".to_owned(),
            RestrictedExpression::new_bool(input.break_glass),
        ),
        ("ttl_seconds".to_owned(), long(input.ttl_seconds)),
        (
            "labels".to_owned(),
            record(
                context
                    .labels
                    .iter()
                    .map(|(key, value)| (key.clone(), string(value)))
                    .collect(),
            )?,
        ),
    ];
    if let Some(source) = context.source {
        pairs.push((
            "source_ip".to_owned(),
            RestrictedExpression::new_ip(source.to_string()),
        ));
    }
    if let Some(attestation) = &context.attestation {
        pairs.push((
            "attestation".to_owned(),
            record(vec![
                ("method".to_owned(), string(attestation.method.as_str())),
                (
                    "claims".to_owned(),
                    record(
                        attestation
                            .claims
                            .iter()
                            .filter_map(|(name, value)| {
                                cedar_value(value, 0).map(|value| (name.clone(), value))
                            })
                            .collect(),
                    )?,
                ),
            ])?,
        ));
    }
    let context = Context::from_pairs(pairs).map_err(|error| error.to_string())?;
    Ok((principal, resource, entities, context))
}

/// How deep claims nest into Cedar records; deeper objects are dropped.
const MAX_CLAIM_DEPTH: usize = 4;

/// A token claim as a Cedar value: strings, booleans and whole numbers as
/// themselves, other numbers as their text, lists as sets and objects as
/// records (of what maps); null, and objects nested too deep, as nothing.
fn cedar_value(value: &serde_json::Value, depth: usize) -> Option<RestrictedExpression> {
    use serde_json::Value;
    match value {
        Value::Null => None,
        Value::Bool(flag) => Some(RestrictedExpression::new_bool(*flag)),
        Value::String(text) => Some(RestrictedExpression::new_string(text.clone())),
        Value::Number(number) => Some(match number.as_i64() {
            Some(whole) => RestrictedExpression::new_long(whole),
            None => RestrictedExpression::new_string(number.to_string()),
        }),
        Value::Array(items) if depth < MAX_CLAIM_DEPTH => Some(RestrictedExpression::new_set(
            items.iter().filter_map(|item| cedar_value(item, depth + 1)),
        )),
        Value::Object(fields) if depth < MAX_CLAIM_DEPTH => RestrictedExpression::new_record(
            fields
                .iter()
                .filter_map(|(name, value)| {
                    cedar_value(value, depth + 1).map(|value| (name.clone(), value))
                })
                .collect::<Vec<_>>(),
        )
        .ok(),
        Value::Array(_) | Value::Object(_) => None,
    }
}

fn uid(kind: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(kind.clone(), EntityId::new(id))
}

impl std::fmt::Debug for Conditions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conditions")
            .field("policies", &self.policy_ids().collect::<Vec<_>>())
            .finish()
    }
}

impl PartialEq for Conditions {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Conditions {}
