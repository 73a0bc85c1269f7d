//! The entitlement catalogue and the request-time decision.
//!
//! [`evaluate`] is a pure, total function of the catalogue, the attested
//! caller, the request, its context and the time: no I/O, no clock, no
//! gRPC. It returns the decision together with an [`Explanation`]: the
//! inputs it looked at and the rules that produced it. The server maps a
//! [`Denial`] to a status in one place.

pub mod conditions;
pub mod window;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

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
    #[error("unknown entitlement {0:?}")]
    UnknownEntitlement(String),
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
    /// A break-glass request must say why.
    #[error("break-glass on entitlement {0:?} requires a justification")]
    BreakGlassNeedsJustification(String),
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

/// An entitlement as written in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntitlement {
    name: String,
    owner: Option<String>,
    purpose: Option<String>,
    actions: Vec<String>,
    requesters: Vec<String>,
    default_ttl: Option<String>,
    max_ttl: Option<String>,
    risk: Option<Risk>,
    #[serde(default)]
    require: Vec<Requirement>,
    audiences: Option<Vec<String>>,
    max_active: Option<u32>,
    identity: Option<IdentityMode>,
    approval: Option<ApprovalMode>,
    #[serde(default)]
    approvers: Vec<String>,
    min_approvals: Option<u32>,
    pending_ttl: Option<String>,
    break_glass: Option<RawBreakGlass>,
    conditions: Option<String>,
    delegation_depth: Option<u8>,
    #[serde(default)]
    bind_jwt: bool,
}

/// `approval` as written: whether grants wait for approvers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ApprovalMode {
    Auto,
    Required,
}

/// `break_glass` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBreakGlass {
    allowed: Option<bool>,
    max_ttl: Option<String>,
    #[serde(default)]
    reviewers: Vec<String>,
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
                .ok_or_else(|| Denial::UnknownEntitlement(name.to_owned()))?;
            if !entitlement.admits(caller) {
                return Err(Denial::NotARequester {
                    caller: caller.clone(),
                    entitlement: entitlement.name.clone(),
                });
            }
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
        None => catalogue
            .entitlements
            .iter()
            .find(|entitlement| {
                entitlement.admits(caller)
                    && requested
                        .iter()
                        .all(|action| entitlement.actions.contains(action))
            })
            .ok_or_else(|| Denial::NoEntitlementCovers {
                caller: caller.clone(),
                actions: requested.iter().map(|a| a.as_str().to_owned()).collect(),
            })?,
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
    if break_glass.is_some() && request.justification.trim().is_empty() {
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

// === impl Catalogue ===

impl Catalogue {
    /// Validates raw entries and windows. Every requester, approver and
    /// reviewer pattern must lie in `trust_domain` (`group:<name>` names a
    /// list in `groups`) and every maximum TTL at or below its ceiling.
    pub fn from_raw(
        raw: Vec<RawEntitlement>,
        groups: &HashMap<String, Vec<String>>,
        windows: BTreeMap<String, RawWindow>,
        trust_domain: &TrustDomain,
        limits: &TtlLimits,
    ) -> Result<Self, CatalogueError> {
        let windows = windows
            .into_iter()
            .map(|(name, raw)| ChangeWindow::from_raw(&name, raw))
            .collect::<Result<Vec<_>, _>>()?;
        let mut parsed_groups = Vec::with_capacity(groups.len());
        for (name, members) in groups {
            let patterns = members
                .iter()
                .map(|member| {
                    IdPattern::parse(member).map_err(|message| CatalogueError::Invalid {
                        entry: format!("group {name:?}"),
                        field: "groups",
                        message,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            parsed_groups.push((name.clone(), patterns));
        }
        parsed_groups.sort_by(|a, b| a.0.cmp(&b.0));
        let mut entitlements: Vec<Entitlement> = Vec::with_capacity(raw.len());
        for (index, entry) in raw.into_iter().enumerate() {
            let entitlement = Entitlement::from_raw(entry, index, groups, trust_domain, limits)?;
            if entitlements.iter().any(|e| e.name == entitlement.name) {
                return Err(CatalogueError::Duplicate(entitlement.name));
            }
            if let Some(conditions) = &entitlement.conditions
                && let Some(missing) = conditions
                    .window_names()
                    .into_iter()
                    .find(|name| !windows.iter().any(|window| window.name() == name))
            {
                return Err(CatalogueError::Invalid {
                    entry: format!("{:?}", entitlement.name),
                    field: "conditions",
                    message: format!("names window {missing:?}, which is not in [windows]"),
                });
            }
            entitlements.push(entitlement);
        }
        Ok(Self {
            entitlements,
            groups: parsed_groups,
            windows,
        })
    }

    /// Names of the groups `id` belongs to, sorted.
    pub fn groups_of(&self, id: &SpiffeId) -> Vec<&str> {
        self.groups
            .iter()
            .filter(|(_, patterns)| patterns.iter().any(|pattern| pattern.matches(id)))
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// The change windows.
    pub fn windows(&self) -> &[ChangeWindow] {
        &self.windows
    }

    /// The entitlement called `name`.
    pub fn entitlement(&self, name: &str) -> Option<&Entitlement> {
        self.entitlements.iter().find(|e| e.name == name)
    }

    /// All entitlements, in file order.
    pub fn entitlements(&self) -> &[Entitlement] {
        &self.entitlements
    }

    /// The longest TTL any entitlement allows: how long any credential can
    /// live.
    pub fn longest_ttl(&self) -> Duration {
        self.entitlements
            .iter()
            .map(|entitlement| entitlement.max_ttl)
            .max()
            .unwrap_or(DEFAULT_MAX_TTL)
    }

    /// How long after its request a grant can still be live at most: the
    /// longest pending time plus the longest TTL.
    pub fn longest_grant_life(&self) -> Duration {
        let pending = self
            .entitlements
            .iter()
            .filter_map(|entitlement| match entitlement.approval {
                ApprovalRule::Approvers { pending_ttl, .. } => Some(pending_ttl),
                ApprovalRule::Auto => None,
            })
            .max()
            .unwrap_or_default();
        pending + self.longest_ttl()
    }
}

// === impl Entitlement ===

impl Entitlement {
    /// Whether `caller` may request this entitlement.
    pub fn admits(&self, caller: &SpiffeId) -> bool {
        self.requesters
            .iter()
            .any(|pattern| pattern.matches(caller))
    }

    /// Whether `caller` is one of the entitlement's approvers.
    pub fn approver(&self, caller: &SpiffeId) -> bool {
        match &self.approval {
            ApprovalRule::Auto => false,
            ApprovalRule::Approvers { approvers, .. } => {
                approvers.iter().any(|pattern| pattern.matches(caller))
            }
        }
    }

    /// Whether `caller` reviews the entitlement's break-glass uses.
    pub fn reviewer(&self, caller: &SpiffeId) -> bool {
        self.break_glass
            .as_ref()
            .is_some_and(|rule| rule.reviewers.iter().any(|pattern| pattern.matches(caller)))
    }

    fn from_raw(
        raw: RawEntitlement,
        index: usize,
        groups: &HashMap<String, Vec<String>>,
        trust_domain: &TrustDomain,
        limits: &TtlLimits,
    ) -> Result<Self, CatalogueError> {
        let name_ok = !raw.name.is_empty()
            && raw.name.len() <= 64
            && raw
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        let entry = if name_ok {
            format!("{:?}", raw.name)
        } else {
            format!("#{}", index + 1)
        };
        let invalid = |field: &'static str, message: String| CatalogueError::Invalid {
            entry: entry.clone(),
            field,
            message,
        };
        if !name_ok {
            return Err(invalid(
                "name",
                "must be 1 to 64 letters, digits, '-', '_' or '.'".to_owned(),
            ));
        }

        if raw.actions.is_empty() {
            return Err(invalid("actions", "needs at least one action".to_owned()));
        }
        let actions = raw
            .actions
            .iter()
            .map(|action| {
                Action::new(action)
                    .map_err(|error| invalid("actions", format!("{action:?} {error}")))
            })
            .collect::<Result<Vec<_>, _>>()?;

        if raw.requesters.is_empty() {
            return Err(invalid(
                "requesters",
                "needs at least one SPIFFE ID or pattern".to_owned(),
            ));
        }
        let patterns = |field: &'static str, list: &[String]| {
            let mut patterns = Vec::new();
            for text in list {
                let members = match text.strip_prefix("group:") {
                    Some(group) => groups.get(group).ok_or_else(|| {
                        invalid(field, format!("{text:?} names no group in [groups]"))
                    })?,
                    None => std::slice::from_ref(text),
                };
                for member in members {
                    let pattern = IdPattern::parse(member).map_err(|m| invalid(field, m))?;
                    if !pattern.is_in(trust_domain) {
                        return Err(invalid(
                            field,
                            format!("{member:?} is not in trust domain {trust_domain}"),
                        ));
                    }
                    patterns.push(pattern);
                }
            }
            Ok(patterns)
        };
        let requesters = patterns("requesters", &raw.requesters)?;

        let parse_ttl = |field: &'static str, text: Option<String>, default: Duration| match text {
            None => Ok(default),
            Some(text) => crate::clock::parse_duration(&text).map_err(|m| invalid(field, m)),
        };
        let risk = raw.risk.unwrap_or_default();
        let (risk_ceiling, ceiling_key) = match limits.by_risk[risk as usize] {
            by_risk if by_risk < limits.ceiling => (by_risk, "limits.max_ttl_by_risk"),
            _ => (limits.ceiling, "limits.max_ttl"),
        };
        let (default_ttl_for_risk, max_ttl_for_risk) = risk.default_ttls();
        let max_ttl = parse_ttl("max_ttl", raw.max_ttl, max_ttl_for_risk.min(risk_ceiling))?;
        let default_ttl = parse_ttl(
            "default_ttl",
            raw.default_ttl,
            default_ttl_for_risk.min(max_ttl),
        )?;
        if max_ttl > risk_ceiling {
            return Err(invalid(
                "max_ttl",
                format!(
                    "{} is above the ceiling of {} ({ceiling_key}, {} risk)",
                    humantime::format_duration(max_ttl),
                    humantime::format_duration(risk_ceiling),
                    risk.as_str()
                ),
            ));
        }
        if raw.max_active == Some(0) {
            return Err(invalid("max_active", "must be at least 1".to_owned()));
        }
        if let Some(audiences) = &raw.audiences
            && (audiences.is_empty() || audiences.iter().any(String::is_empty))
        {
            return Err(invalid(
                "audiences",
                "needs at least one non-empty audience".to_owned(),
            ));
        }
        if default_ttl < MIN_TTL || default_ttl > max_ttl {
            return Err(invalid(
                "default_ttl",
                format!(
                    "must be between {} and max_ttl ({})",
                    humantime::format_duration(MIN_TTL),
                    humantime::format_duration(max_ttl)
                ),
            ));
        }

        let approval = match raw.approval {
            Some(ApprovalMode::Auto) => {
                if !raw.approvers.is_empty() || raw.min_approvals.is_some() {
                    return Err(invalid(
                        "approvers",
                        "is set, but approval = \"auto\" needs no approvers".to_owned(),
                    ));
                }
                ApprovalRule::Auto
            }
            None if raw.approvers.is_empty() && risk < Risk::High => {
                if raw.min_approvals.is_some() {
                    return Err(invalid(
                        "min_approvals",
                        "is set, but grants of this entitlement need no approval (name approvers)"
                            .to_owned(),
                    ));
                }
                ApprovalRule::Auto
            }
            Some(ApprovalMode::Required) | None => {
                if raw.approvers.is_empty() {
                    return Err(invalid(
                        "approvers",
                        format!(
                            "{} needs approvers (a {} risk entitlement needs approval unless it says approval = \"auto\")",
                            if raw.approval.is_some() {
                                "approval = \"required\""
                            } else {
                                "approval"
                            },
                            risk.as_str()
                        ),
                    ));
                }
                let min_approvals = raw.min_approvals.unwrap_or(1);
                if !(1..=10).contains(&min_approvals) {
                    return Err(invalid(
                        "min_approvals",
                        "must be between 1 and 10".to_owned(),
                    ));
                }
                let pending_ttl =
                    parse_ttl("pending_ttl", raw.pending_ttl.clone(), DEFAULT_PENDING_TTL)?;
                if pending_ttl < MIN_TTL || pending_ttl > MAX_PENDING_TTL {
                    return Err(invalid(
                        "pending_ttl",
                        format!(
                            "must be between 1s and {}",
                            humantime::format_duration(MAX_PENDING_TTL)
                        ),
                    ));
                }
                ApprovalRule::Approvers {
                    approvers: patterns("approvers", &raw.approvers)?,
                    names: raw.approvers.clone(),
                    min_approvals,
                    pending_ttl,
                }
            }
        };
        if matches!(approval, ApprovalRule::Auto) && raw.pending_ttl.is_some() {
            return Err(invalid(
                "pending_ttl",
                "is set, but grants of this entitlement need no approval".to_owned(),
            ));
        }

        let break_glass = match raw.break_glass {
            Some(RawBreakGlass {
                allowed: None | Some(true),
                max_ttl: break_glass_ttl,
                reviewers,
            }) => {
                let ttl = parse_ttl("break_glass.max_ttl", break_glass_ttl, default_ttl)?;
                if ttl < MIN_TTL || ttl > max_ttl {
                    return Err(invalid(
                        "break_glass.max_ttl",
                        format!(
                            "must be between 1s and max_ttl ({})",
                            humantime::format_duration(max_ttl)
                        ),
                    ));
                }
                if reviewers.is_empty() {
                    return Err(invalid(
                        "break_glass.reviewers",
                        "needs at least one reviewer: someone must review every use".to_owned(),
                    ));
                }
                Some(BreakGlassRule {
                    max_ttl: ttl,
                    reviewers: patterns("break_glass.reviewers", &reviewers)?,
                    names: reviewers,
                })
            }
            Some(RawBreakGlass {
                allowed: Some(false),
                ..
            })
            | None => None,
        };

        let conditions = raw
            .conditions
            .as_deref()
            .map(|source| Conditions::parse(&raw.name, source))
            .transpose()
            .map_err(|message| invalid("conditions", message))?;

        let delegation_depth = raw.delegation_depth.unwrap_or(0);
        if usize::from(delegation_depth) > crate::grant::MAX_DELEGATION_DEPTH {
            return Err(invalid(
                "delegation_depth",
                format!("must be at most {}", crate::grant::MAX_DELEGATION_DEPTH),
            ));
        }

        Ok(Self {
            approval,
            break_glass,
            conditions,
            delegation_depth,
            bind_jwt: raw.bind_jwt,
            name: raw.name,
            owner: raw.owner,
            purpose: raw.purpose,
            actions,
            requesters,
            default_ttl,
            max_ttl,
            risk,
            require: raw.require,
            audiences: raw.audiences,
            max_active: raw.max_active,
            identity: raw.identity.unwrap_or_default(),
        })
    }
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
mod tests {
    use super::*;

    fn catalogue() -> Catalogue {
        let raw: Vec<RawEntitlement> = toml::from_str::<toml::Table>(
            r#"
[[e]]
name = "ci-publish"
actions = ["publish:artifacts", "read:source"]
requesters = ["spiffe://example.org/ci/*"]
max_ttl = "10m"
[[e]]
name = "deploy"
actions = ["deploy:prod/payments", "read:source"]
requesters = ["spiffe://example.org/svc/deployer"]
default_ttl = "2m"
max_ttl = "5m"
"#,
        )
        .unwrap()["e"]
            .clone()
            .try_into()
            .unwrap();
        load(raw).unwrap()
    }

    fn load(raw: Vec<RawEntitlement>) -> Result<Catalogue, CatalogueError> {
        let td = TrustDomain::new("example.org").unwrap();
        let groups = HashMap::from([(
            "release".to_owned(),
            vec![
                "spiffe://example.org/ci/*".to_owned(),
                "spiffe://example.org/svc/deployer".to_owned(),
            ],
        )]);
        Catalogue::from_raw(raw, &groups, BTreeMap::new(), &td, &TtlLimits::default())
    }

    fn entry(text: &str) -> RawEntitlement {
        toml::from_str(&format!(
            "name = \"e1\"\nactions = [\"a\"]\nrequesters = [\"spiffe://example.org/x\"]\n{text}"
        ))
        .unwrap()
    }

    fn actions(list: &[&str]) -> Vec<Action> {
        list.iter().map(|a| Action::new(a).unwrap()).collect()
    }

    /// Runs one request and renders the outcome as text, so the table of
    /// cases below survives changes to the types.
    fn check(
        caller: &str,
        entitlement: Option<&str>,
        acts: &[&str],
        ttl: Option<u64>,
        expected: &str,
    ) {
        let caller = SpiffeId::new(caller).unwrap();
        let acts = actions(acts);
        let request = AccessRequest {
            entitlement,
            actions: &acts,
            ttl: ttl.map(Duration::from_secs),
            justification: "",
            ticket: "",
            audiences: None,
            break_glass: false,
            live_grants: &[],
        };
        let got = match evaluate(
            &catalogue(),
            &caller,
            &request,
            &RequestContext::default(),
            SystemTime::UNIX_EPOCH,
        )
        .result
        {
            Ok(decision) => format!(
                "allow {} [{}] {}s",
                decision.entitlement,
                decision
                    .actions
                    .iter()
                    .map(Action::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
                decision.ttl.as_secs()
            ),
            Err(denial) => format!("deny {denial}"),
        };
        assert_eq!(got, expected);
    }

    const CI: &str = "spiffe://example.org/ci/runner-7";
    const DEPLOYER: &str = "spiffe://example.org/svc/deployer";

    #[test]
    fn decisions() {
        check(
            CI,
            Some("ci-publish"),
            &[],
            None,
            "allow ci-publish [publish:artifacts read:source] 300s",
        );
        check(
            CI,
            Some("ci-publish"),
            &["read:source", "read:source"],
            Some(60),
            "allow ci-publish [read:source] 60s",
        );
        check(
            CI,
            None,
            &["read:source"],
            None,
            "allow ci-publish [read:source] 300s",
        );
        check(
            DEPLOYER,
            None,
            &["read:source"],
            None,
            "allow deploy [read:source] 120s",
        );
        check(
            CI,
            Some("ci-publish"),
            &[],
            Some(600),
            "allow ci-publish [publish:artifacts read:source] 600s",
        );
        check(
            CI,
            Some("ci-publish"),
            &[],
            Some(0),
            "allow ci-publish [publish:artifacts read:source] 300s",
        );
    }

    #[test]
    fn denials() {
        check(
            CI,
            None,
            &[],
            None,
            "deny request names neither an entitlement nor actions",
        );
        check(
            CI,
            Some("nope"),
            &[],
            None,
            "deny unknown entitlement \"nope\"",
        );
        check(
            CI,
            Some("deploy"),
            &[],
            None,
            "deny spiffe://example.org/ci/runner-7 may not request entitlement \"deploy\"",
        );
        check(
            CI,
            Some("ci-publish"),
            &["read:source", "deploy:prod/payments"],
            None,
            "deny actions [\"deploy:prod/payments\"] are not in entitlement \"ci-publish\"",
        );
        check(
            CI,
            None,
            &["deploy:prod/payments"],
            None,
            "deny no entitlement that spiffe://example.org/ci/runner-7 may request covers actions [\"deploy:prod/payments\"]",
        );
        check(
            CI,
            Some("ci-publish"),
            &[],
            Some(601),
            "deny ttl 10m 1s exceeds the maximum of 10m for entitlement \"ci-publish\"",
        );
        // A prefix pattern does not match the prefix itself.
        check(
            "spiffe://example.org/ci",
            Some("ci-publish"),
            &[],
            None,
            "deny spiffe://example.org/ci may not request entitlement \"ci-publish\"",
        );
        check(
            "spiffe://other.org/ci/x",
            Some("ci-publish"),
            &[],
            None,
            "deny spiffe://other.org/ci/x may not request entitlement \"ci-publish\"",
        );
    }

    #[test]
    fn catalogue_errors_name_entry_and_field() {
        let error = |extra: &str| load(vec![entry(extra)]).unwrap_err().to_string();
        assert_eq!(
            error("max_ttl = \"2h\""),
            "entitlement \"e1\": `max_ttl`: 2h is above the ceiling of 30m (limits.max_ttl_by_risk, medium risk)"
        );
        assert_eq!(
            error("risk = \"critical\"\nmax_ttl = \"10m\""),
            "entitlement \"e1\": `max_ttl`: 10m is above the ceiling of 5m (limits.max_ttl_by_risk, critical risk)"
        );
        assert_eq!(
            error("default_ttl = \"20m\""),
            "entitlement \"e1\": `default_ttl`: must be between 1s and max_ttl (15m)"
        );
        assert_eq!(
            error("max_active = 0"),
            "entitlement \"e1\": `max_active`: must be at least 1"
        );
        assert_eq!(
            error("audiences = []"),
            "entitlement \"e1\": `audiences`: needs at least one non-empty audience"
        );
        assert_eq!(
            error("risk = \"critical\""),
            "entitlement \"e1\": `approvers`: approval needs approvers (a critical risk entitlement needs approval unless it says approval = \"auto\")"
        );
        assert_eq!(
            error("approvers = [\"group:release\"]\nmin_approvals = 0"),
            "entitlement \"e1\": `min_approvals`: must be between 1 and 10"
        );
        assert_eq!(
            error("approval = \"auto\"\napprovers = [\"group:release\"]"),
            "entitlement \"e1\": `approvers`: is set, but approval = \"auto\" needs no approvers"
        );
        assert_eq!(
            error("break_glass = { max_ttl = \"1m\" }"),
            "entitlement \"e1\": `break_glass.reviewers`: needs at least one reviewer: someone must review every use"
        );
        assert_eq!(
            error("break_glass = { max_ttl = \"1h\", reviewers = [\"group:release\"] }"),
            "entitlement \"e1\": `break_glass.max_ttl`: must be between 1s and max_ttl (15m)"
        );
        assert!(
            error("conditions = \"permit (principal, action, resource) when { context.x \"")
                .starts_with("entitlement \"e1\": `conditions`: not valid Cedar: "),
        );
        assert!(
            error("conditions = \"forbid (principal, action, resource) when { context.risk == \\\"low\\\" };\"")
                .starts_with("entitlement \"e1\": `conditions`: has no permit policy"),
        );
        assert_eq!(
            error(
                "conditions = \"permit (principal, action, resource) when { context.windows.nightly };\""
            ),
            "entitlement \"e1\": `conditions`: names window \"nightly\", which is not in [windows]"
        );
        assert_eq!(
            error("min_approvals = 2"),
            "entitlement \"e1\": `min_approvals`: is set, but grants of this entitlement need no approval (name approvers)"
        );
        let raw: RawEntitlement = toml::from_str(
            "name = \"e1\"\nactions = [\"a b\"]\nrequesters = [\"spiffe://other.org/x\"]",
        )
        .unwrap();
        assert_eq!(
            load(vec![raw]).unwrap_err().to_string(),
            "entitlement \"e1\": `actions`: \"a b\" contains ' ', which is not allowed"
        );
        let raw: RawEntitlement =
            toml::from_str("name = \"e1\"\nactions = [\"a\"]\nrequesters = [\"group:nobody\"]")
                .unwrap();
        assert_eq!(
            load(vec![raw]).unwrap_err().to_string(),
            "entitlement \"e1\": `requesters`: \"group:nobody\" names no group in [groups]"
        );
    }

    #[test]
    fn risk_sets_the_default_ttls() {
        for (risk, default_ttl, max_ttl) in [
            ("low", 600, 1800),
            ("medium", 300, 900),
            ("high", 300, 600),
            ("critical", 120, 300),
        ] {
            let catalogue = load(vec![entry(&format!(
                "risk = \"{risk}\"\napproval = \"auto\""
            ))])
            .unwrap();
            let entitlement = catalogue.entitlement("e1").unwrap();
            assert_eq!(entitlement.default_ttl.as_secs(), default_ttl, "{risk}");
            assert_eq!(entitlement.max_ttl.as_secs(), max_ttl, "{risk}");
        }
    }

    /// A request for `e1` (configured by `extra`) by `spiffe://example.org/x`.
    fn decide<'a>(
        extra: &str,
        request: impl FnOnce(&mut AccessRequest<'a>),
    ) -> Result<Decision, Denial> {
        let catalogue = load(vec![entry(extra)]).unwrap();
        let caller = SpiffeId::new("spiffe://example.org/x").unwrap();
        let mut access = AccessRequest {
            entitlement: Some("e1"),
            actions: &[],
            ttl: None,
            justification: "",
            ticket: "",
            audiences: None,
            break_glass: false,
            live_grants: &[],
        };
        request(&mut access);
        evaluate(
            &catalogue,
            &caller,
            &access,
            &RequestContext::default(),
            SystemTime::UNIX_EPOCH,
        )
        .result
    }

    #[test]
    fn requirements_audiences_identity() {
        let require = "require = [\"justification\", \"ticket\"]";
        assert_eq!(
            decide(require, |_| {}).unwrap_err().to_string(),
            "entitlement \"e1\" requires a justification"
        );
        assert_eq!(
            decide(require, |r| r.justification = "hotfix")
                .unwrap_err()
                .to_string(),
            "entitlement \"e1\" requires a ticket"
        );
        assert!(
            decide(require, |r| {
                r.justification = "hotfix";
                r.ticket = "CHG-1";
            })
            .is_ok()
        );

        let audiences = ["kb.example.org".to_owned(), "x".to_owned()];
        let allowed = "audiences = [\"kb.example.org\"]";
        assert_eq!(
            decide(allowed, |r| r.audiences = Some(&audiences))
                .unwrap_err()
                .to_string(),
            "audience \"x\" is not allowed for entitlement \"e1\""
        );
        assert!(decide(allowed, |r| r.audiences = Some(&audiences[..1])).is_ok());
        assert!(
            decide(allowed, |_| {}).is_ok(),
            "X.509 requests name no audience"
        );

        assert_eq!(decide("", |_| {}).unwrap().identity, IdentityMode::Workload);
        assert_eq!(
            decide("identity = \"per-task\"", |_| {}).unwrap().identity,
            IdentityMode::PerTask
        );
    }

    #[test]
    fn max_active_counts_the_callers_active_grants_of_the_entitlement() {
        let caller = SpiffeId::new("spiffe://example.org/x").unwrap();
        let grant = |entitlement: &str, state| Grant {
            id: crate::grant::GrantId::generate(crate::grant::Shard::of(&caller)),
            subject: caller.clone(),
            entitlement: entitlement.to_owned(),
            actions: vec![Action::new("a").unwrap()],
            task_id: crate::grant::TaskId::new("t").unwrap(),
            parent: None,
            justification: String::new(),
            ticket: String::new(),
            created_at: std::time::SystemTime::UNIX_EPOCH,
            expires_at: std::time::SystemTime::UNIX_EPOCH,
            state,
            end_reason: None,
            epoch: crate::grant::Epoch::from_string(String::new()),
            break_glass: false,
            per_task: false,
            ttl: Duration::from_secs(60),
            approvals: Vec::new(),
            decision: String::new(),
            delegation: None,
        };
        let live = [
            grant("e1", GrantState::Active),
            grant("e1", GrantState::Completed),
            grant("other", GrantState::Active),
        ];
        assert_eq!(
            decide("max_active = 2", |r| r.live_grants = &live)
                .unwrap()
                .max_active,
            Some(2)
        );
        assert_eq!(
            decide("max_active = 1", |r| r.live_grants = &live)
                .unwrap_err()
                .to_string(),
            "spiffe://example.org/x already holds 1 active grants of entitlement \"e1\" (max_active)"
        );
    }

    #[test]
    fn groups_name_requesters() {
        let raw: RawEntitlement =
            toml::from_str("name = \"e1\"\nactions = [\"a\"]\nrequesters = [\"group:release\"]")
                .unwrap();
        let catalogue = load(vec![raw]).unwrap();
        let entitlement = catalogue.entitlement("e1").unwrap();
        assert!(entitlement.admits(&SpiffeId::new("spiffe://example.org/ci/a").unwrap()));
        assert!(entitlement.admits(&SpiffeId::new("spiffe://example.org/svc/deployer").unwrap()));
        assert!(!entitlement.admits(&SpiffeId::new("spiffe://example.org/svc/other").unwrap()));
    }
}
