//! The entitlement catalogue and the request-time decision.
//!
//! [`evaluate`] is a pure, total function of the catalogue, the attested
//! caller, the request, its context and the time: no I/O, no clock, no
//! gRPC. It returns the decision together with an [`Explanation`]: the
//! inputs it looked at and the rules that produced it. The server maps a
//! [`Denial`] to a status in one place.

mod attestation;
mod catalogue;
pub mod conditions;
pub mod window;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub use self::attestation::{AttestationFacts, AttestationMethod};
pub use self::catalogue::RawEntitlement;
pub use self::conditions::Conditions;
pub use self::window::{ChangeWindow, RawWindow};
use crate::clock::unix_seconds;
use crate::grant::{Action, Grant, GrantState};
pub use crate::spiffe_id::IdPattern;
use crate::spiffe_id::{SpiffeId, TrustDomain};

/// Default TTL of an entitlement that names none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);
/// Default maximum TTL of an entitlement that names none.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(15 * 60);
/// Default ceiling on any entitlement's maximum TTL (`limits.max_ttl`).
pub const DEFAULT_TTL_CEILING: Duration = Duration::from_secs(60 * 60);
/// Shortest TTL a request may ask for.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// How long a request waiting for approval stays pending, by default.
pub const DEFAULT_PENDING_TTL: Duration = Duration::from_secs(15 * 60);
/// Longest a request may wait for approval.
pub const MAX_PENDING_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Most labels one request may carry.
pub const MAX_LABELS: usize = 16;
/// Fewest characters a break-glass justification may have.
pub const MIN_BREAK_GLASS_JUSTIFICATION: usize = 20;
/// Default of `break_glass.max_unreviewed`.
pub const DEFAULT_MAX_UNREVIEWED: usize = 3;
/// Longest label key, in bytes.
pub const MAX_LABEL_KEY_BYTES: usize = 64;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_BYTES: usize = 256;

const MINUTE: Duration = Duration::from_secs(60);

/// How much harm an entitlement's actions can do. It sets the defaults:
///
/// | risk | default TTL | default max TTL | ceiling (`limits.max_ttl_by_risk`) |
/// |---|---|---|---|
/// | low | 10m | 30m | 1h |
/// | medium (the default) | 5m | 15m | 30m |
/// | high | 5m | 10m | 15m |
/// | critical | 2m | 5m | 5m |
///
/// It also sets the approval path: low and medium entitlements are
/// auto-approved unless they name `approvers`; high and critical ones need
/// approval unless they say `approval = "auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    /// Read-only or easily undone.
    Low,
    /// Ordinary changes.
    #[default]
    Medium,
    /// Production changes.
    High,
    /// Could cause an outage or a breach.
    Critical,
}

/// What a request must carry for an entitlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Requirement {
    /// A non-empty justification.
    Justification,
    /// A change or incident ticket reference.
    Ticket,
}

/// Which SPIFFE ID credentials of an entitlement carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityMode {
    /// The attested workload's ID.
    #[default]
    Workload,
    /// The attested ID with `/task/<task-id>` appended: one identity per
    /// task, so relying parties can tell tasks apart.
    PerTask,
}

/// TTL ceilings: one for everything, and one per risk tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlLimits {
    /// No entitlement's max TTL may exceed it (`limits.max_ttl`).
    pub ceiling: Duration,
    /// Ceilings per risk tier, low to critical (`limits.max_ttl_by_risk`).
    pub by_risk: [Duration; 4],
}

/// A catalogue entry that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogueError {
    /// A field of an entry is invalid.
    #[error("entitlement {entry}: `{field}`: {message}")]
    Invalid {
        /// The entry's name, or `#<index>` when it has no valid name.
        entry: String,
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Two entries share a name.
    #[error("entitlement {0:?} is defined twice")]
    Duplicate(String),
    /// A change window is invalid.
    #[error("window {window:?}: `{field}`: {message}")]
    Window {
        /// The window's name.
        window: String,
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denial {
    /// Neither an entitlement nor actions were named.
    #[error("request names neither an entitlement nor actions")]
    NothingRequested,
    /// The named entitlement does not exist.
    #[error("unknown entitlement {name:?}{hint}")]
    UnknownEntitlement {
        /// The name asked for.
        name: String,
        /// `; did you mean "..."?`, or the entitlements the caller may
        /// request; from [`Catalogue::unknown_entitlement`].
        hint: String,
    },
    /// The caller is not among the entitlement's requesters.
    #[error("{caller} may not request entitlement {entitlement:?}")]
    NotARequester {
        /// The attested caller.
        caller: SpiffeId,
        /// The entitlement.
        entitlement: String,
    },
    /// Some requested actions are not in the entitlement's action set.
    #[error("actions {actions:?} are not in entitlement {entitlement:?}")]
    ActionsNotEntitled {
        /// The entitlement.
        entitlement: String,
        /// The actions outside its set.
        actions: Vec<String>,
    },
    /// No entitlement the caller may request covers the actions.
    #[error("no entitlement that {caller} may request covers actions {actions:?}")]
    NoEntitlementCovers {
        /// The attested caller.
        caller: SpiffeId,
        /// The requested actions.
        actions: Vec<String>,
    },
    /// The requested TTL is above the entitlement's maximum.
    #[error("ttl {} exceeds the maximum of {} for entitlement {entitlement:?}", humantime::format_duration(*.requested), humantime::format_duration(*.max))]
    TtlAboveMaximum {
        /// The entitlement.
        entitlement: String,
        /// What was asked for.
        requested: Duration,
        /// The entitlement's maximum.
        max: Duration,
    },
    /// The requested TTL is shorter than [`MIN_TTL`].
    #[error("ttl must be at least {}", humantime::format_duration(MIN_TTL))]
    TtlTooShort,
    /// The entitlement requires a justification and none was given.
    #[error("entitlement {0:?} requires a justification")]
    MissingJustification(String),
    /// The entitlement requires a ticket and none was given.
    #[error("entitlement {0:?} requires a ticket")]
    MissingTicket(String),
    /// A requested JWT audience is not among the entitlement's audiences.
    #[error("audience {audience:?} is not allowed for entitlement {entitlement:?}")]
    AudienceNotAllowed {
        /// The entitlement.
        entitlement: String,
        /// The audience.
        audience: String,
    },
    /// The entitlement has no break-glass path.
    #[error("entitlement {0:?} does not allow break-glass")]
    BreakGlassNotAllowed(String),
    /// A break-glass request must say why, in at least
    /// [`MIN_BREAK_GLASS_JUSTIFICATION`] characters.
    #[error(
        "break-glass on entitlement {0:?} requires a justification of at least {MIN_BREAK_GLASS_JUSTIFICATION} characters saying what is broken"
    )]
    BreakGlassNeedsJustification(String),
    /// The caller has as many unreviewed break-glass uses as the
    /// entitlement allows; a reviewer must acknowledge one first.
    #[error(
        "{count} break-glass uses of {subject} await review, the most entitlement {entitlement:?} allows (break_glass.max_unreviewed); a reviewer must acknowledge one first"
    )]
    BreakGlassUnreviewed {
        /// The entitlement.
        entitlement: String,
        /// The caller.
        subject: String,
        /// Its unreviewed uses.
        count: usize,
    },
    /// A `forbid` condition matched.
    #[error("conditions of entitlement {entitlement:?} forbid it: {}", .reasons.join("; "))]
    Forbidden {
        /// The entitlement.
        entitlement: String,
        /// The forbids that matched, with their `@reason`.
        reasons: Vec<String>,
    },
    /// No `permit` condition matched.
    #[error("conditions of entitlement {entitlement:?} do not permit {action:?} now: needs {}", .requires.join(" or "))]
    NotPermitted {
        /// The entitlement.
        entitlement: String,
        /// The action no permit covered.
        action: String,
        /// What the permits require, with their `@reason`.
        requires: Vec<String>,
    },
    /// A condition could not be evaluated; conditions fail closed.
    #[error("conditions of entitlement {entitlement:?} could not be evaluated: {message}")]
    ConditionError {
        /// The entitlement.
        entitlement: String,
        /// What went wrong.
        message: String,
    },
    /// The entitlement requires another attestation method.
    #[error(
        "entitlement {entitlement:?} requires attestation by {}; the caller was attested by {attested}",
        .allowed.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(" or ")
    )]
    AttestationNotAllowed {
        /// The entitlement.
        entitlement: String,
        /// The methods it allows.
        allowed: Vec<AttestationMethod>,
        /// How the caller was attested (`unknown` when not said).
        attested: String,
    },
    /// The caller already holds the most active grants allowed.
    #[error(
        "{caller} already holds {max} active grants of entitlement {entitlement:?} (max_active)"
    )]
    MaxActive {
        /// The attested caller.
        caller: SpiffeId,
        /// The entitlement.
        entitlement: String,
        /// Its `max_active`.
        max: u32,
    },
}

/// A named action set that callers may request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entitlement {
    /// Unique name.
    pub name: String,
    /// Who owns the entitlement (a team or person), for reviewers.
    pub owner: Option<String>,
    /// What it is for.
    pub purpose: Option<String>,
    /// The action set.
    pub actions: Vec<Action>,
    /// Who may request it.
    pub requesters: Vec<IdPattern>,
    /// The attestation methods a requester must have used; `None` allows
    /// any.
    pub attestation: Option<Vec<AttestationMethod>>,
    /// TTL when a request names none.
    pub default_ttl: Duration,
    /// Longest TTL a request may ask for.
    pub max_ttl: Duration,
    /// The risk tier.
    pub risk: Risk,
    /// What requests must carry.
    pub require: Vec<Requirement>,
    /// Audiences JWT-SVIDs may name; `None` allows any.
    pub audiences: Option<Vec<String>>,
    /// Most active grants one subject may hold at once; `None` for no limit.
    pub max_active: Option<u32>,
    /// Which SPIFFE ID the credentials carry.
    pub identity: IdentityMode,
    /// Who must approve a grant before credentials are minted under it.
    pub approval: ApprovalRule,
    /// The emergency path, if allowed.
    pub break_glass: Option<BreakGlassRule>,
    /// Cedar policies every request must satisfy, if any.
    pub conditions: Option<Conditions>,
    /// How many levels of delegation a grant of it allows below itself:
    /// 0 (the default) means its holders may not delegate.
    pub delegation_depth: u8,
    /// Whether every JWT-SVID of it is bound to the mTLS certificate it was
    /// requested with (`cnf` with `x5t#S256`, RFC 8705).
    pub bind_jwt: bool,
}

/// How grants of an entitlement are approved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalRule {
    /// Granted at once when policy allows.
    Auto,
    /// Pending until `min_approvals` distinct approvers, none of them the
    /// requester, approve.
    Approvers {
        /// Who may approve (group members and patterns).
        approvers: Vec<IdPattern>,
        /// As written in the catalogue, for display.
        names: Vec<String>,
        /// How many distinct approvals are needed.
        min_approvals: u32,
        /// How long a request waits before it expires.
        pending_ttl: Duration,
    },
}

/// The break-glass path of an entitlement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakGlassRule {
    /// Longest (and default) TTL of a break-glass grant.
    pub max_ttl: Duration,
    /// Most unreviewed break-glass uses one subject may have before a
    /// reviewer acknowledges one (`break_glass.max_unreviewed`, default
    /// [`DEFAULT_MAX_UNREVIEWED`]).
    pub max_unreviewed: usize,
    /// Who reviews each use (never the requester).
    pub reviewers: Vec<IdPattern>,
    /// As written in the catalogue, for display.
    pub names: Vec<String>,
}

/// The validated catalogue: entitlements in file order, the groups they
/// name and the change windows their conditions see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalogue {
    entitlements: Vec<Entitlement>,
    groups: Vec<(String, Vec<IdPattern>)>,
    windows: Vec<ChangeWindow>,
    /// `[principals]`: the people or teams behind several identities.
    principals: Vec<(String, Vec<IdPattern>)>,
}

/// Where and under what circumstances a request is made: what conditions
/// see besides the caller and the entitlement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RequestContext {
    /// The deployment's environment (`environment` in the config).
    pub environment: String,
    /// Labels the caller sent with the request.
    pub labels: BTreeMap<String, String>,
    /// The caller's network address, when known.
    pub source: Option<IpAddr>,
    /// How the caller was attested, when known: the method, and a token's
    /// claims (`context.attestation` in conditions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attestation: Option<AttestationFacts>,
}

/// How a granted request proceeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval {
    /// Active at once.
    Auto,
    /// Pending until approved.
    Required {
        /// Distinct approvals needed.
        min_approvals: u32,
        /// How long the request waits.
        pending_ttl: Duration,
    },
    /// Active at once on the emergency path, and opens a review.
    BreakGlass,
}

/// What a decision looked at and which rules produced it. Recorded on the
/// grant (as JSON); `jitid policy explain` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The attested caller.
    pub caller: String,
    /// Catalogue groups the caller is in.
    pub groups: Vec<String>,
    /// The entitlement named, or the one found for the actions.
    pub entitlement: Option<String>,
    /// The actions asked for.
    pub actions: Vec<String>,
    /// The TTL asked for, in seconds.
    pub ttl_requested: Option<u64>,
    /// Whether a justification was given.
    pub justification_given: bool,
    /// The ticket given.
    pub ticket: String,
    /// Whether break-glass was asked for.
    pub break_glass: bool,
    /// The request's context.
    pub context: RequestContext,
    /// When (Unix seconds).
    pub time: u64,
    /// Whether each change window was open.
    pub windows: BTreeMap<String, bool>,
    /// The entitlement's risk tier.
    pub risk: Option<&'static str>,
    /// The caller's active and pending grants of the entitlement, when
    /// `max_active` counted them.
    pub active_grants: Option<usize>,
    /// The rules that produced the decision, in the order applied, e.g.
    /// `requesters: spiffe://example.org/ci/*`, `conditions: deploy.1`,
    /// `approval: approvers group:sre (1 of)`.
    pub matched: Vec<String>,
    /// The outcome in words.
    pub outcome: String,
}

/// A decision with its explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// What the caller gets, or why not.
    pub result: Result<Decision, Denial>,
    /// What it looked at and which rules decided.
    pub explanation: Explanation,
}

/// What a caller asks for, with what the decision may look at.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    /// The entitlement, if named.
    pub entitlement: Option<&'a str>,
    /// The actions; empty means the entitlement's whole set.
    pub actions: &'a [Action],
    /// The TTL, if any; `None` means the entitlement's default.
    pub ttl: Option<Duration>,
    /// The justification given (may be empty).
    pub justification: &'a str,
    /// The ticket given (may be empty).
    pub ticket: &'a str,
    /// The JWT audiences asked for; `None` for an X.509-SVID.
    pub audiences: Option<&'a [String]>,
    /// Whether this is an emergency (break-glass) request.
    pub break_glass: bool,
    /// The caller's live grants, for `max_active`.
    pub live_grants: &'a [Grant],
}

/// What the caller gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The entitlement used.
    pub entitlement: String,
    /// The actions granted: exactly the requested ones, or the whole set.
    pub actions: Vec<Action>,
    /// The lifetime granted.
    pub ttl: Duration,
    /// Which SPIFFE ID the credentials carry.
    pub identity: IdentityMode,
    /// The entitlement's `max_active`: when set, the decision counted
    /// `live_grants`, so the caller must have passed them.
    pub max_active: Option<u32>,
    /// Whether the grant is active at once, pending, or break-glass.
    pub approval: Approval,
}

/// Decides a request. Pure: the same inputs always give the same answer.
///
/// Rules apply in this order, and the first that refuses decides: the
/// entitlement (named, or the first covering the actions) and its
/// requesters; the actions; break-glass; the TTL; required justification
/// and ticket; audiences; `max_active`; the Cedar conditions; then the
/// approval path.
pub fn evaluate(
    catalogue: &Catalogue,
    caller: &SpiffeId,
    request: &AccessRequest<'_>,
    context: &RequestContext,
    now: SystemTime,
) -> Evaluation {
    let windows: Vec<(String, bool)> = catalogue
        .windows
        .iter()
        .map(|window| (window.name().to_owned(), window.contains(now)))
        .collect();
    let groups = catalogue.groups_of(caller);
    let mut explanation = Explanation {
        caller: caller.to_string(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        entitlement: None,
        actions: request
            .actions
            .iter()
            .map(|a| a.as_str().to_owned())
            .collect(),
        ttl_requested: request.ttl.map(|ttl| ttl.as_secs()),
        justification_given: !request.justification.trim().is_empty(),
        ticket: request.ticket.to_owned(),
        break_glass: request.break_glass,
        context: context.clone(),
        time: unix_seconds(now),
        windows: windows.iter().cloned().collect(),
        risk: None,
        active_grants: None,
        matched: Vec::new(),
        outcome: String::new(),
    };
    let result = decide(
        catalogue,
        caller,
        request,
        &Situation {
            context,
            now,
            windows: &windows,
            groups: &groups,
        },
        &mut explanation,
    );
    explanation.outcome = match &result {
        Ok(decision) => match &decision.approval {
            Approval::Auto => format!(
                "allow {} for {}",
                decision.entitlement,
                humantime::format_duration(decision.ttl)
            ),
            Approval::Required { min_approvals, .. } => format!(
                "needs {min_approvals} approval(s) for {} for {}",
                decision.entitlement,
                humantime::format_duration(decision.ttl)
            ),
            Approval::BreakGlass => format!(
                "allow {} for {} on break-glass (opens a review)",
                decision.entitlement,
                humantime::format_duration(decision.ttl)
            ),
        },
        Err(denial) => format!("deny: {denial}"),
    };
    Evaluation {
        result,
        explanation,
    }
}

/// What the decision sees besides the request.
struct Situation<'a> {
    context: &'a RequestContext,
    now: SystemTime,
    windows: &'a [(String, bool)],
    groups: &'a [&'a str],
}

fn decide(
    catalogue: &Catalogue,
    caller: &SpiffeId,
    request: &AccessRequest<'_>,
    situation: &Situation<'_>,
    explanation: &mut Explanation,
) -> Result<Decision, Denial> {
    let requested = dedup(request.actions);
    let entitlement = match request.entitlement {
        Some(name) => {
            let entitlement = catalogue
                .entitlement(name)
                .ok_or_else(|| catalogue.unknown_entitlement(name, caller))?;
            if !entitlement.admits(caller) {
                return Err(Denial::NotARequester {
                    caller: caller.clone(),
                    entitlement: entitlement.name.clone(),
                });
            }
            entitlement.check_method(situation.context)?;
            let outside: Vec<String> = requested
                .iter()
                .filter(|action| !entitlement.actions.contains(action))
                .map(|action| action.as_str().to_owned())
                .collect();
            if !outside.is_empty() {
                return Err(Denial::ActionsNotEntitled {
                    entitlement: entitlement.name.clone(),
                    actions: outside,
                });
            }
            entitlement
        }
        None if requested.is_empty() => return Err(Denial::NothingRequested),
        None => {
            let covering = |entitlement: &&Entitlement| {
                entitlement.admits(caller)
                    && requested
                        .iter()
                        .all(|action| entitlement.actions.contains(action))
            };
            let found = catalogue
                .entitlements
                .iter()
                .filter(covering)
                .find(|entitlement| entitlement.check_method(situation.context).is_ok());
            match found {
                Some(entitlement) => entitlement,
                // One covers the actions but not for this method: say so.
                None => match catalogue.entitlements.iter().find(covering) {
                    Some(entitlement) => {
                        explanation.entitlement = Some(entitlement.name.clone());
                        return Err(entitlement
                            .check_method(situation.context)
                            .err()
                            .unwrap_or_else(|| Denial::NoEntitlementCovers {
                                caller: caller.clone(),
                                actions: requested.iter().map(|a| a.as_str().to_owned()).collect(),
                            }));
                    }
                    None => {
                        return Err(Denial::NoEntitlementCovers {
                            caller: caller.clone(),
                            actions: requested.iter().map(|a| a.as_str().to_owned()).collect(),
                        });
                    }
                },
            }
        }
    };
    explanation.entitlement = Some(entitlement.name.clone());
    explanation.risk = Some(entitlement.risk.as_str());
    if let Some(pattern) = entitlement
        .requesters
        .iter()
        .find(|pattern| pattern.matches(caller))
    {
        explanation.matched.push(format!("requesters: {pattern}"));
    }
    if let (Some(allowed), Some(facts)) = (&entitlement.attestation, &situation.context.attestation)
    {
        explanation.matched.push(format!(
            "attestation: {} (one of {})",
            facts.method,
            allowed
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    let break_glass = match (&entitlement.break_glass, request.break_glass) {
        (_, false) => None,
        (None, true) => return Err(Denial::BreakGlassNotAllowed(entitlement.name.clone())),
        (Some(rule), true) => Some(rule),
    };
    let (default_ttl, max_ttl) = match break_glass {
        Some(rule) => (rule.max_ttl, rule.max_ttl),
        None => (entitlement.default_ttl, entitlement.max_ttl),
    };
    let ttl = match request.ttl {
        None => default_ttl,
        Some(ttl) if ttl.is_zero() => default_ttl,
        Some(ttl) if ttl < MIN_TTL => return Err(Denial::TtlTooShort),
        Some(ttl) if ttl > max_ttl => {
            return Err(Denial::TtlAboveMaximum {
                entitlement: entitlement.name.clone(),
                requested: ttl,
                max: max_ttl,
            });
        }
        Some(ttl) => ttl,
    };
    if break_glass.is_some()
        && request.justification.trim().chars().count() < MIN_BREAK_GLASS_JUSTIFICATION
    {
        return Err(Denial::BreakGlassNeedsJustification(
            entitlement.name.clone(),
        ));
    }
    for requirement in &entitlement.require {
        match requirement {
            Requirement::Justification if request.justification.trim().is_empty() => {
                return Err(Denial::MissingJustification(entitlement.name.clone()));
            }
            Requirement::Ticket if request.ticket.trim().is_empty() => {
                return Err(Denial::MissingTicket(entitlement.name.clone()));
            }
            _ => {}
        }
    }
    if let (Some(allowed), Some(asked)) = (&entitlement.audiences, request.audiences)
        && let Some(audience) = asked.iter().find(|audience| !allowed.contains(audience))
    {
        return Err(Denial::AudienceNotAllowed {
            entitlement: entitlement.name.clone(),
            audience: audience.clone(),
        });
    }
    if let Some(max) = entitlement.max_active {
        let active = request
            .live_grants
            .iter()
            .filter(|grant| {
                grant.entitlement == entitlement.name
                    && matches!(grant.state, GrantState::Active | GrantState::Pending)
                    && &grant.subject == caller
            })
            .count();
        explanation.active_grants = Some(active);
        if active >= max as usize {
            return Err(Denial::MaxActive {
                caller: caller.clone(),
                entitlement: entitlement.name.clone(),
                max,
            });
        }
    }
    let actions = if requested.is_empty() {
        entitlement.actions.clone()
    } else {
        requested
    };

    if let Some(conditions) = &entitlement.conditions {
        let outcome = conditions.evaluate(
            entitlement,
            &conditions::ConditionInput {
                caller,
                groups: situation.groups,
                actions: &actions,
                context: situation.context,
                windows: situation.windows,
                ttl_seconds: ttl.as_secs(),
                ticket: request.ticket,
                justification: request.justification,
                break_glass: break_glass.is_some(),
                now: situation.now,
            },
        );
        match outcome {
            conditions::Outcome::Permit { matched } => explanation
                .matched
                .extend(matched.into_iter().map(|id| format!("conditions: {id}"))),
            conditions::Outcome::Forbid { matched, reasons } => {
                explanation
                    .matched
                    .extend(matched.into_iter().map(|id| format!("conditions: {id}")));
                return Err(Denial::Forbidden {
                    entitlement: entitlement.name.clone(),
                    reasons,
                });
            }
            // Break-glass needs no permit: only a forbid stops it.
            conditions::Outcome::NoPermit { .. } if break_glass.is_some() => explanation
                .matched
                .push("conditions: no permit matched; break-glass skips permits".to_owned()),
            conditions::Outcome::NoPermit { action, reasons } => {
                return Err(Denial::NotPermitted {
                    entitlement: entitlement.name.clone(),
                    action,
                    requires: reasons,
                });
            }
            conditions::Outcome::Error { message } => {
                return Err(Denial::ConditionError {
                    entitlement: entitlement.name.clone(),
                    message,
                });
            }
        }
    }

    let approval = match (break_glass, &entitlement.approval) {
        (Some(rule), _) => {
            explanation.matched.push(format!(
                "break_glass: max_ttl {}, reviewers {}",
                humantime::format_duration(rule.max_ttl),
                rule.names.join(", ")
            ));
            Approval::BreakGlass
        }
        (None, ApprovalRule::Auto) => {
            explanation.matched.push(format!(
                "approval: auto ({} risk)",
                entitlement.risk.as_str()
            ));
            Approval::Auto
        }
        (
            None,
            ApprovalRule::Approvers {
                names,
                min_approvals,
                pending_ttl,
                ..
            },
        ) => {
            explanation
                .matched
                .push(format!("approval: {min_approvals} of {}", names.join(", ")));
            Approval::Required {
                min_approvals: *min_approvals,
                pending_ttl: *pending_ttl,
            }
        }
    };
    Ok(Decision {
        entitlement: entitlement.name.clone(),
        actions,
        ttl,
        identity: entitlement.identity,
        max_active: entitlement.max_active,
        approval,
    })
}

fn dedup(actions: &[Action]) -> Vec<Action> {
    let mut unique: Vec<Action> = Vec::with_capacity(actions.len());
    for action in actions {
        if !unique.contains(action) {
            unique.push(action.clone());
        }
    }
    unique
}

// === impl Risk ===

impl Risk {
    /// The tier's name as written in the catalogue.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    /// Default TTL and default max TTL of an entitlement of this risk.
    pub fn default_ttls(self) -> (Duration, Duration) {
        match self {
            Self::Low => (10 * MINUTE, 30 * MINUTE),
            Self::Medium => (5 * MINUTE, 15 * MINUTE),
            Self::High => (5 * MINUTE, 10 * MINUTE),
            Self::Critical => (2 * MINUTE, 5 * MINUTE),
        }
    }
}

// === impl TtlLimits ===

impl Default for TtlLimits {
    fn default() -> Self {
        Self {
            ceiling: DEFAULT_TTL_CEILING,
            by_risk: [60 * MINUTE, 30 * MINUTE, 15 * MINUTE, 5 * MINUTE],
        }
    }
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests;
