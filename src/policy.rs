//! The entitlement catalogue and the request-time decision.
//!
//! [`evaluate`] is a pure, total function of the catalogue, the attested
//! caller and the request: no I/O, no clock, no gRPC. The server maps its
//! [`Denial`] to a status in one place.

use std::time::Duration;

use serde::Deserialize;

use crate::grant::Action;
use crate::spiffe_id::{SpiffeId, TrustDomain};

/// Default TTL of an entitlement that names none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);
/// Default maximum TTL of an entitlement that names none.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(15 * 60);
/// Default ceiling on any entitlement's maximum TTL (`limits.max_ttl`).
pub const DEFAULT_TTL_CEILING: Duration = Duration::from_secs(60 * 60);
/// Shortest TTL a request may ask for.
pub const MIN_TTL: Duration = Duration::from_secs(1);

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
}

/// Which SPIFFE IDs an entitlement accepts as requesters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdPattern {
    /// Exactly this ID.
    Exact(SpiffeId),
    /// Any ID of the trust domain whose path starts with `path_prefix`
    /// (which ends in `/`). Written `spiffe://<td>/<prefix>/*`.
    Prefix {
        /// The trust domain.
        trust_domain: TrustDomain,
        /// The path prefix, ending in `/`.
        path_prefix: String,
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
}

/// The validated list of entitlements, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalogue {
    entitlements: Vec<Entitlement>,
}

/// What a caller asks for.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    /// The entitlement, if named.
    pub entitlement: Option<&'a str>,
    /// The actions; empty means the entitlement's whole set.
    pub actions: &'a [Action],
    /// The TTL, if any; `None` means the entitlement's default.
    pub ttl: Option<Duration>,
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
}

/// Decides a request. Pure: the same inputs always give the same answer.
pub fn evaluate(
    catalogue: &Catalogue,
    caller: &SpiffeId,
    request: &AccessRequest<'_>,
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

    let ttl = match request.ttl {
        None => entitlement.default_ttl,
        Some(ttl) if ttl.is_zero() => entitlement.default_ttl,
        Some(ttl) if ttl < MIN_TTL => return Err(Denial::TtlTooShort),
        Some(ttl) if ttl > entitlement.max_ttl => {
            return Err(Denial::TtlAboveMaximum {
                entitlement: entitlement.name.clone(),
                requested: ttl,
                max: entitlement.max_ttl,
            });
        }
        Some(ttl) => ttl,
    };
    let actions = if requested.is_empty() {
        entitlement.actions.clone()
    } else {
        requested
    };
    Ok(Decision {
        entitlement: entitlement.name.clone(),
        actions,
        ttl,
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
    /// Validates raw entries. Every requester pattern must lie in
    /// `trust_domain` and every maximum TTL at or below `ttl_ceiling`.
    pub fn from_raw(
        raw: Vec<RawEntitlement>,
        trust_domain: &TrustDomain,
        ttl_ceiling: Duration,
    ) -> Result<Self, CatalogueError> {
        let mut entitlements: Vec<Entitlement> = Vec::with_capacity(raw.len());
        for (index, entry) in raw.into_iter().enumerate() {
            let entitlement = Entitlement::from_raw(entry, index, trust_domain, ttl_ceiling)?;
            if entitlements.iter().any(|e| e.name == entitlement.name) {
                return Err(CatalogueError::Duplicate(entitlement.name));
            }
            entitlements.push(entitlement);
        }
        Ok(Self { entitlements })
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
}

// === impl Entitlement ===

impl Entitlement {
    /// Whether `caller` may request this entitlement.
    pub fn admits(&self, caller: &SpiffeId) -> bool {
        self.requesters
            .iter()
            .any(|pattern| pattern.matches(caller))
    }

    fn from_raw(
        raw: RawEntitlement,
        index: usize,
        trust_domain: &TrustDomain,
        ttl_ceiling: Duration,
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
        let requesters = raw
            .requesters
            .iter()
            .map(|text| {
                let pattern = IdPattern::parse(text).map_err(|m| invalid("requesters", m))?;
                if !pattern.is_in(trust_domain) {
                    return Err(invalid(
                        "requesters",
                        format!("{text:?} is not in trust domain {trust_domain}"),
                    ));
                }
                Ok(pattern)
            })
            .collect::<Result<Vec<_>, _>>()?;

        let parse_ttl = |field: &'static str, text: Option<String>, default: Duration| match text {
            None => Ok(default),
            Some(text) => crate::config::parse_duration(&text).map_err(|m| invalid(field, m)),
        };
        let max_ttl = parse_ttl("max_ttl", raw.max_ttl, DEFAULT_MAX_TTL.min(ttl_ceiling))?;
        let default_ttl = parse_ttl("default_ttl", raw.default_ttl, DEFAULT_TTL.min(max_ttl))?;
        if max_ttl > ttl_ceiling {
            return Err(invalid(
                "max_ttl",
                format!(
                    "{} is above the ceiling of {} (limits.max_ttl)",
                    humantime::format_duration(max_ttl),
                    humantime::format_duration(ttl_ceiling)
                ),
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

        Ok(Self {
            name: raw.name,
            owner: raw.owner,
            purpose: raw.purpose,
            actions,
            requesters,
            default_ttl,
            max_ttl,
        })
    }
}

// === impl IdPattern ===

impl IdPattern {
    /// Parses `spiffe://td/exact/path` or `spiffe://td/prefix/*`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(prefix) = text.strip_suffix("/*") {
            // Validate the prefix as an ID (or a bare trust domain).
            let (trust_domain, path) = match SpiffeId::new(prefix) {
                Ok(id) => (id.trust_domain_name().to_owned(), format!("{}/", id.path())),
                Err(_) => {
                    let name = prefix.strip_prefix("spiffe://").unwrap_or("");
                    (name.to_owned(), "/".to_owned())
                }
            };
            let trust_domain = TrustDomain::new(&trust_domain)
                .map_err(|error| format!("{text:?} is not a valid pattern: {error}"))?;
            return Ok(Self::Prefix {
                trust_domain,
                path_prefix: path,
            });
        }
        SpiffeId::new(text)
            .map(Self::Exact)
            .map_err(|error| format!("{text:?} is not a valid SPIFFE ID: {error}"))
    }

    /// Whether `id` matches.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            Self::Exact(exact) => exact == id,
            Self::Prefix {
                trust_domain,
                path_prefix,
            } => id.is_member_of(trust_domain) && id.path().starts_with(path_prefix.as_str()),
        }
    }

    fn is_in(&self, trust_domain: &TrustDomain) -> bool {
        match self {
            Self::Exact(id) => id.is_member_of(trust_domain),
            Self::Prefix {
                trust_domain: own, ..
            } => own == trust_domain,
        }
    }
}

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
        let td = TrustDomain::new("example.org").unwrap();
        Catalogue::from_raw(raw, &td, DEFAULT_TTL_CEILING).unwrap()
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
        };
        let got = match evaluate(&catalogue(), &caller, &request) {
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
        let td = TrustDomain::new("example.org").unwrap();
        let entry = |extra: &str| -> String {
            let text = format!(
                "name = \"e1\"\nactions = [\"a\"]\nrequesters = [\"spiffe://example.org/x\"]\n{extra}"
            );
            let raw: RawEntitlement = toml::from_str(&text).unwrap();
            Catalogue::from_raw(vec![raw], &td, DEFAULT_TTL_CEILING)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            entry("max_ttl = \"2h\""),
            "entitlement \"e1\": `max_ttl`: 2h is above the ceiling of 1h (limits.max_ttl)"
        );
        assert_eq!(
            entry("default_ttl = \"20m\""),
            "entitlement \"e1\": `default_ttl`: must be between 1s and max_ttl (15m)"
        );
        let raw: RawEntitlement = toml::from_str(
            "name = \"e1\"\nactions = [\"a b\"]\nrequesters = [\"spiffe://other.org/x\"]",
        )
        .unwrap();
        assert_eq!(
            Catalogue::from_raw(vec![raw], &td, DEFAULT_TTL_CEILING)
                .unwrap_err()
                .to_string(),
            "entitlement \"e1\": `actions`: \"a b\" contains ' ', which is not allowed"
        );
    }
}
