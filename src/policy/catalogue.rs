//! The entitlement catalogue as the configuration writes it
//! ([`RawEntitlement`]) and its validation into a [`Catalogue`]: every
//! error names the entry and the field.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Deserialize;

use super::*;

/// An entitlement as written in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntitlement {
    name: String,
    owner: Option<String>,
    purpose: Option<String>,
    actions: Vec<String>,
    requesters: Vec<String>,
    attestation: Option<Vec<String>>,
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
    max_unreviewed: Option<usize>,
    #[serde(default)]
    reviewers: Vec<String>,
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
            principals: Vec::new(),
        })
    }

    /// Adds `[principals]`: each a person or a team's on-call, named with
    /// the SPIFFE ID patterns of its identities. An identity belongs to at
    /// most one principal.
    pub fn with_principals(
        mut self,
        principals: &BTreeMap<String, Vec<String>>,
    ) -> Result<Self, CatalogueError> {
        for (name, members) in principals {
            let invalid = |message: String| CatalogueError::Invalid {
                entry: format!("principal {name:?}"),
                field: "principals",
                message,
            };
            if members.is_empty() {
                return Err(invalid(
                    "needs at least one SPIFFE ID or pattern".to_owned(),
                ));
            }
            let patterns = members
                .iter()
                .map(|member| IdPattern::parse(member).map_err(&invalid))
                .collect::<Result<Vec<_>, _>>()?;
            self.principals.push((name.clone(), patterns));
        }
        Ok(self)
    }

    /// Who `id` acts for: the first principal with a pattern matching it,
    /// or else the identity itself. Separation of duties and N-of-M
    /// approvals count these, not identities.
    pub fn principal_of(&self, id: &SpiffeId) -> String {
        self.principals
            .iter()
            .find(|(_, patterns)| patterns.iter().any(|pattern| pattern.matches(id)))
            .map_or_else(|| id.to_string(), |(name, _)| format!("principal:{name}"))
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

    /// The refusal of an entitlement that does not exist, with a hint:
    /// the entitlement `caller` may request whose name is closest (a typo
    /// or two away), or else the names of all it may request. Only names
    /// the caller may request are shown.
    pub fn unknown_entitlement(&self, name: &str, caller: &SpiffeId) -> Denial {
        let mine: Vec<&str> = self
            .entitlements
            .iter()
            .filter(|e| e.admits(caller))
            .map(|e| e.name.as_str())
            .collect();
        let closest = mine
            .iter()
            .map(|known| (edit_distance(name, known), *known))
            .filter(|(distance, _)| *distance <= 2)
            .min();
        let hint = match (closest, mine.is_empty()) {
            (Some((_, known)), _) => format!("; did you mean {known:?}?"),
            (None, true) => "; you may request no entitlement".to_owned(),
            (None, false) => format!("; you may request: {}", mine.join(", ")),
        };
        Denial::UnknownEntitlement {
            name: name.to_owned(),
            hint,
        }
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

    /// Whether a caller attested as `context` says may use it: refused when
    /// the entitlement names methods and the caller's (or an unknown one)
    /// is not among them.
    pub fn check_method(&self, context: &RequestContext) -> Result<(), Denial> {
        let Some(allowed) = &self.attestation else {
            return Ok(());
        };
        let method = context.attestation.as_ref().map(|facts| facts.method);
        if method.is_some_and(|method| allowed.contains(&method)) {
            return Ok(());
        }
        Err(Denial::AttestationNotAllowed {
            entitlement: self.name.clone(),
            allowed: allowed.clone(),
            attested: method.map_or("an unknown method".to_owned(), |m| m.to_string()),
        })
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
        let attestation = match &raw.attestation {
            None => None,
            Some(names) if names.is_empty() => {
                return Err(invalid(
                    "attestation",
                    "needs at least one method (leave it out to allow any)".to_owned(),
                ));
            }
            Some(names) => Some(
                names
                    .iter()
                    .map(|name| {
                        AttestationMethod::parse(name).ok_or_else(|| {
                            invalid(
                                "attestation",
                                format!(
                                    "{name:?} is not an attestation method ({})",
                                    AttestationMethod::ALL
                                        .iter()
                                        .map(|m| m.as_str())
                                        .collect::<Vec<_>>()
                                        .join(" or ")
                                ),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };

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
                max_unreviewed,
                reviewers,
            }) => {
                let max_unreviewed = match max_unreviewed {
                    None => super::DEFAULT_MAX_UNREVIEWED,
                    Some(count) if (1..=100).contains(&count) => count,
                    Some(_) => {
                        return Err(invalid(
                            "break_glass.max_unreviewed",
                            "must be between 1 and 100".to_owned(),
                        ));
                    }
                };
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
                    max_unreviewed,
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
            attestation,
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

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            let insert = current[j] + 1;
            let delete = previous[j + 1] + 1;
            current.push(substitute.min(insert).min(delete));
        }
        previous = current;
    }
    previous[b.len()]
}
