//! Reading the trail: which events a query selects ([`Filter`]), the
//! per-entitlement [`Report`], and the life of one grant ([`GrantLife`]),
//! the evidence that it was removed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::SystemTime;

use super::upkeep::ended_grants;
use super::{AuditEvent, EventKind};

/// Which events a query selects. Every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Events about this grant: its own, revocations and completions that
    /// ended it, and revocations of its task or subject.
    pub grant: Option<String>,
    /// Events about this task (revocations of it included).
    pub task: Option<String>,
    /// Events whose subject or actor is this SPIFFE ID (revocations of it
    /// included).
    pub subject: Option<String>,
    /// Events of these kinds (any kind if empty).
    pub kinds: Vec<EventKind>,
    /// Events at or after this time, RFC 3339.
    pub since: Option<String>,
}

/// Selects events with a [`Filter`] from a scan in chain order. A grant
/// filter learns the grant's task and subject from its first events, to
/// select the revocations of either that came later.
#[derive(Debug, Clone)]
pub struct Selector {
    filter: Filter,
    since: Option<String>,
    grant_task: Option<String>,
    grant_subject: Option<String>,
}

// === impl EventKind ===

impl EventKind {
    /// The name events carry, e.g. `credential_issued`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequestReceived => "request_received",
            Self::Decision => "decision",
            Self::Approval => "approval",
            Self::ApprovalDenied => "approval_denied",
            Self::BreakGlass => "break_glass",
            Self::CredentialIssued => "credential_issued",
            Self::Revocation => "revocation",
            Self::TaskCompleted => "task_completed",
            Self::GrantExpired => "grant_expired",
            Self::ReviewAcknowledged => "review_acknowledged",
            Self::CatalogueReloaded => "catalogue_reloaded",
            Self::AuthenticationFailure => "authentication_failure",
            Self::LivenessChecked => "liveness_checked",
            Self::RevocationApplied => "revocation_applied",
        }
    }

    /// Parses [`EventKind::as_str`]'s names.
    pub fn parse(name: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
    }
}

// === impl Selector ===

impl Selector {
    /// A selector for `filter`. `since` is compared as a timestamp, so any
    /// RFC 3339 form works; a `since` that is not one is an error.
    pub fn new(filter: Filter) -> Result<Self, String> {
        let since = match &filter.since {
            None => None,
            Some(text) => Some(normalize_time(text)?),
        };
        Ok(Self {
            filter,
            since,
            grant_task: None,
            grant_subject: None,
        })
    }

    /// Whether `event`, the next one of the scan, is selected.
    pub fn select(&mut self, event: &AuditEvent) -> bool {
        let filter = &self.filter;
        if let Some(grant) = &filter.grant {
            if event.grant.as_deref() == Some(grant) {
                if self.grant_task.is_none() {
                    self.grant_task = event.task.clone();
                }
                if self.grant_subject.is_none() {
                    self.grant_subject = event.subject.clone();
                }
            } else if !(ended_grants(event).any(|ended| ended == grant)
                || revokes(event, "task", self.grant_task.as_deref())
                || revokes(event, "subject", self.grant_subject.as_deref()))
            {
                return false;
            }
        }
        if let Some(task) = &filter.task
            && event.task.as_deref() != Some(task)
            && !revokes(event, "task", Some(task))
        {
            return false;
        }
        if let Some(subject) = &filter.subject
            && event.subject.as_deref() != Some(subject)
            && event.actor != *subject
            && !revokes(event, "subject", Some(subject))
        {
            return false;
        }
        if !filter.kinds.is_empty() && !filter.kinds.contains(&event.kind) {
            return false;
        }
        match &self.since {
            Some(since) => event.time >= *since,
            None => true,
        }
    }
}

/// Whether `event` revokes (or completes) `target` = `value`.
fn revokes(event: &AuditEvent, target: &str, value: Option<&str>) -> bool {
    let Some(value) = value else {
        return false;
    };
    matches!(event.kind, EventKind::Revocation | EventKind::TaskCompleted)
        && event.details.get("target").and_then(|t| t.as_str()) == Some(target)
        && event.details.get("value").and_then(|v| v.as_str()) == Some(value)
}

/// `text` as events write times (RFC 3339 UTC with milliseconds), so
/// times compare as strings.
pub fn normalize_time(text: &str) -> Result<String, String> {
    humantime::parse_rfc3339_weak(text)
        .map(|at| humantime::format_rfc3339_millis(at).to_string())
        .map_err(|error| format!("{text:?} is not an RFC 3339 time: {error}"))
}

fn text<'a>(event: &'a AuditEvent, key: &str) -> Option<&'a str> {
    event.details.get(key).and_then(|value| value.as_str())
}

fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text).ok()
}

/// One line about an event, for people.
pub fn summary(event: &AuditEvent) -> String {
    let d = &event.details;
    let field = |key: &str| text(event, key).unwrap_or("-");
    match event.kind {
        EventKind::RequestReceived => format!(
            "{} asked for {} {}",
            field("rpc"),
            field("entitlement"),
            d.get("actions")
                .map(ToString::to_string)
                .unwrap_or_default()
        ),
        EventKind::Decision => match text(event, "refused") {
            Some(reason) => format!("refused: {reason}"),
            None => format!(
                "{} → {} for {}s",
                d.get("outcome")
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                field("state"),
                d.get("ttl_seconds")
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ),
        },
        EventKind::Approval => format!(
            "approved ({} of {}) → {}",
            d.get("approvals")
                .map(ToString::to_string)
                .unwrap_or_default(),
            d.get("needed").map(ToString::to_string).unwrap_or_default(),
            field("state")
        ),
        EventKind::ApprovalDenied => format!("denied: {}", field("reason")),
        EventKind::BreakGlass => format!("break-glass: {}", field("justification")),
        EventKind::CredentialIssued => format!(
            "{} {} until {}",
            field("credential"),
            field("id"),
            field("expires_at")
        ),
        EventKind::Revocation | EventKind::TaskCompleted => format!(
            "{} {}: {} grant(s) ended{}",
            field("target"),
            field("value"),
            ended_grants(event).count(),
            text(event, "reason")
                .map(|reason| format!(" ({reason})"))
                .unwrap_or_default()
        ),
        EventKind::GrantExpired => format!("expired while {}", field("state")),
        EventKind::RevocationApplied => format!(
            "applied by all {} relying part(ies), slowest {} ms",
            d.get("relying_parties")
                .and_then(|parties| parties.as_array())
                .map_or(0, Vec::len),
            d.get("slowest_ms")
                .map(ToString::to_string)
                .unwrap_or_default()
        ),
        EventKind::ReviewAcknowledged => format!("review closed: {}", field("comment")),
        EventKind::LivenessChecked => format!(
            "Verify {} → {}",
            field("credential"),
            field("status").to_uppercase()
        ),
        _ => d.to_string(),
    }
}

/// What the trail says about one entitlement over a period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntitlementReport {
    /// Requests received.
    pub requests: u64,
    /// Grants decided active or pending.
    pub granted: u64,
    /// Requests refused.
    pub refused: u64,
    /// Approvals given.
    pub approvals: u64,
    /// Break-glass uses.
    pub break_glass: u64,
    /// Break-glass uses with no review acknowledgement.
    pub unreviewed: u64,
    /// Credentials issued.
    pub credentials: u64,
    /// Credentials unexpired and not ended at the report's time.
    pub live: u64,
    /// Grants ended by revocation.
    pub revoked: u64,
    /// Grants ended by completion.
    pub completed: u64,
    /// Grants that expired.
    pub expired: u64,
    /// For each revocation or completion: milliseconds from the request
    /// to the grant being ended and announced.
    pub end_lags_ms: Vec<u64>,
    /// `Verify` answers VALID for a credential of a grant after it ended.
    pub valid_after_end: u64,
}

/// The [`EntitlementReport`]s of a stretch of the trail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// By entitlement (`?` for grants whose entitlement the period does
    /// not show).
    pub entitlements: BTreeMap<String, EntitlementReport>,
    /// Events read.
    pub events: u64,
}

// === impl Report ===

impl Report {
    /// The report of `events` (in chain order) as of `now`.
    pub fn of<'a>(events: impl IntoIterator<Item = &'a AuditEvent>, now: SystemTime) -> Self {
        let mut report = Self::default();
        let mut entitlement_of: HashMap<String, String> = HashMap::new();
        let mut ended: HashMap<String, SystemTime> = HashMap::new();
        let mut revoked_credentials: HashSet<String> = HashSet::new();
        let mut open_reviews: HashMap<String, String> = HashMap::new();
        // Credentials: (grant, id, expiry).
        let mut credentials: Vec<(String, String, SystemTime)> = Vec::new();
        // Grants by task and by subject, for revocations of either.
        let mut grants_of: HashMap<(&'static str, String), Vec<String>> = HashMap::new();
        for event in events {
            report.events += 1;
            if let (Some(grant), Some(entitlement)) = (&event.grant, text(event, "entitlement")) {
                entitlement_of.insert(grant.clone(), entitlement.to_owned());
            }
            let grant = event.grant.clone().unwrap_or_default();
            let entitlement = |grant: &str| {
                entitlement_of
                    .get(grant)
                    .cloned()
                    .unwrap_or_else(|| "?".to_owned())
            };
            let at = parse_time(&event.time).unwrap_or(SystemTime::UNIX_EPOCH);
            match event.kind {
                EventKind::RequestReceived => {
                    let name = text(event, "entitlement").unwrap_or("?").to_owned();
                    report.entitlements.entry(name).or_default().requests += 1;
                }
                EventKind::Decision => {
                    let name = match (&event.grant, text(event, "entitlement")) {
                        (_, Some(name)) => name.to_owned(),
                        (Some(grant), None) => entitlement(grant),
                        (None, None) => "?".to_owned(),
                    };
                    let row = report.entitlements.entry(name).or_default();
                    match text(event, "state") {
                        Some("active" | "pending") => {
                            row.granted += 1;
                            for (key, value) in [("task", &event.task), ("subject", &event.subject)]
                            {
                                if let Some(value) = value {
                                    grants_of
                                        .entry((key, value.clone()))
                                        .or_default()
                                        .push(grant.clone());
                                }
                            }
                        }
                        _ => row.refused += 1,
                    }
                }
                EventKind::Approval => {
                    report
                        .entitlements
                        .entry(entitlement(&grant))
                        .or_default()
                        .approvals += 1;
                }
                EventKind::BreakGlass => {
                    report
                        .entitlements
                        .entry(entitlement(&grant))
                        .or_default()
                        .break_glass += 1;
                    open_reviews.insert(grant.clone(), entitlement(&grant));
                }
                EventKind::ReviewAcknowledged => {
                    open_reviews.remove(&grant);
                }
                EventKind::CredentialIssued => {
                    report
                        .entitlements
                        .entry(entitlement(&grant))
                        .or_default()
                        .credentials += 1;
                    let expires = text(event, "expires_at")
                        .and_then(parse_time)
                        .unwrap_or(SystemTime::UNIX_EPOCH);
                    let id = text(event, "id").unwrap_or_default().to_owned();
                    credentials.push((grant.clone(), id, expires));
                }
                EventKind::Revocation | EventKind::TaskCompleted => {
                    if text(event, "target") == Some("credential")
                        && let Some(id) = text(event, "value")
                    {
                        revoked_credentials.insert(id.to_owned());
                    }
                    let lag = event.details.get("lag_ms").and_then(|lag| lag.as_u64());
                    let mut targets: Vec<String> = ended_grants(event).map(str::to_owned).collect();
                    if let (Some(key @ ("task" | "subject")), Some(value)) =
                        (text(event, "target"), text(event, "value"))
                    {
                        let key = if key == "task" { "task" } else { "subject" };
                        targets.extend(
                            grants_of
                                .get(&(key, value.to_owned()))
                                .into_iter()
                                .flatten()
                                .cloned(),
                        );
                    }
                    targets.sort();
                    targets.dedup();
                    for ended_grant in &targets {
                        if ended.contains_key(ended_grant) {
                            continue;
                        }
                        ended.insert(ended_grant.clone(), at);
                        let row = report
                            .entitlements
                            .entry(entitlement(ended_grant))
                            .or_default();
                        if event.kind == EventKind::Revocation {
                            row.revoked += 1;
                        } else {
                            row.completed += 1;
                        }
                        row.end_lags_ms.extend(lag);
                    }
                }
                // A grant its task's revocation ended is still recorded
                // as expiring later: it counts as revoked.
                EventKind::GrantExpired if !ended.contains_key(&grant) => {
                    ended.insert(grant.clone(), at);
                    report
                        .entitlements
                        .entry(entitlement(&grant))
                        .or_default()
                        .expired += 1;
                }
                EventKind::LivenessChecked
                    if text(event, "status") == Some("valid")
                        && ended.get(&grant).is_some_and(|end| *end <= at) =>
                {
                    report
                        .entitlements
                        .entry(entitlement(&grant))
                        .or_default()
                        .valid_after_end += 1;
                }
                _ => {}
            }
        }
        for entitlement in open_reviews.into_values() {
            report
                .entitlements
                .entry(entitlement)
                .or_default()
                .unreviewed += 1;
        }
        for (grant, id, expires) in credentials {
            if expires > now && !ended.contains_key(&grant) && !revoked_credentials.contains(&id) {
                report
                    .entitlements
                    .entry(
                        entitlement_of
                            .get(&grant)
                            .cloned()
                            .unwrap_or_else(|| "?".to_owned()),
                    )
                    .or_default()
                    .live += 1;
            }
        }
        report
    }
}

/// How a grant's life ended, as the trail tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Still active or pending as far as the trail shows.
    Open,
    /// Ended by the event of this sequence number (revocation,
    /// completion, denial, expiry).
    Ended {
        /// The event.
        seq: u64,
        /// Its kind.
        kind: EventKind,
        /// Its time.
        time: String,
    },
}

/// Everything the trail holds about one grant, and whether any `Verify`
/// answered VALID for it after it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantLife {
    /// The grant.
    pub grant: String,
    /// Its events in chain order.
    pub events: Vec<AuditEvent>,
    /// How it ended.
    pub ending: Ending,
    /// Credentials issued under it (kind and serial or jti).
    pub credentials: Vec<String>,
    /// Liveness checks recorded after it ended.
    pub checks_after_end: u64,
    /// Of those, the ones answered VALID (must be none): their sequence
    /// numbers.
    pub valid_after_end: Vec<u64>,
}

// === impl GrantLife ===

impl GrantLife {
    /// The life of `grant` from the events a [`Filter`] on it selected.
    pub fn of(grant: &str, events: Vec<AuditEvent>) -> Self {
        let mut ending = Ending::Open;
        let mut credentials = Vec::new();
        let mut checks_after_end = 0;
        let mut valid_after_end = Vec::new();
        for event in &events {
            let ends = match event.kind {
                EventKind::Revocation | EventKind::TaskCompleted => {
                    ended_grants(event).any(|ended| ended == grant)
                        || text(event, "target").is_some_and(|t| t == "task" || t == "subject")
                }
                EventKind::ApprovalDenied | EventKind::GrantExpired => true,
                EventKind::Decision => !matches!(text(event, "state"), Some("active" | "pending")),
                _ => false,
            };
            match event.kind {
                EventKind::CredentialIssued => credentials.push(format!(
                    "{} {}",
                    text(event, "credential").unwrap_or("?"),
                    text(event, "id").unwrap_or("?")
                )),
                EventKind::LivenessChecked if ending != Ending::Open => {
                    checks_after_end += 1;
                    if text(event, "status") == Some("valid") {
                        valid_after_end.push(event.seq);
                    }
                }
                _ => {}
            }
            if ends && ending == Ending::Open {
                ending = Ending::Ended {
                    seq: event.seq,
                    kind: event.kind,
                    time: event.time.clone(),
                };
            }
        }
        Self {
            grant: grant.to_owned(),
            events,
            ending,
            credentials,
            checks_after_end,
            valid_after_end,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::audit::{Head, Record};

    fn chain(records: Vec<(EventKind, Option<&str>, serde_json::Value)>) -> Vec<AuditEvent> {
        let mut head = Head::genesis();
        records
            .into_iter()
            .enumerate()
            .map(|(n, (kind, grant, details))| {
                let event = AuditEvent::seal(
                    Record {
                        kind,
                        at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_392_000 + n as u64),
                        actor: "spiffe://example.org/ci".to_owned(),
                        subject: Some("spiffe://example.org/ci".to_owned()),
                        grant: grant.map(str::to_owned),
                        task: grant.map(|_| "job-1".to_owned()),
                        details,
                    },
                    &head,
                );
                head = event.head();
                event
            })
            .collect()
    }

    fn story() -> Vec<AuditEvent> {
        use EventKind::*;
        use serde_json::json;
        chain(vec![
            (
                RequestReceived,
                None,
                json!({"entitlement": "deploy", "rpc": "IssueX509Svid"}),
            ),
            (
                Decision,
                Some("g1"),
                json!({"entitlement": "deploy", "state": "active"}),
            ),
            (
                CredentialIssued,
                Some("g1"),
                json!({"credential": "x509", "id": "01", "expires_at": "2026-11-23T01:00:00Z", "entitlement": "deploy"}),
            ),
            (LivenessChecked, Some("g1"), json!({"status": "valid"})),
            (
                Decision,
                Some("g2"),
                json!({"entitlement": "deploy", "state": "active"}),
            ),
            (BreakGlass, Some("g2"), json!({"entitlement": "deploy"})),
            (
                CredentialIssued,
                Some("g2"),
                json!({"credential": "jwt", "id": "g2.aa", "expires_at": "2026-11-23T01:00:00Z"}),
            ),
            (
                TaskCompleted,
                None,
                json!({"target": "grant", "value": "g1", "grants_ended": ["g1"], "lag_ms": 3}),
            ),
            (LivenessChecked, Some("g1"), json!({"status": "revoked"})),
            (
                Decision,
                None,
                json!({"entitlement": "deploy", "state": "denied", "refused": "no"}),
            ),
            (
                Revocation,
                None,
                json!({"target": "task", "value": "job-1", "grants_ended": [], "lag_ms": 1}),
            ),
            (LivenessChecked, Some("g2"), json!({"status": "valid"})),
            (GrantExpired, Some("g2"), json!({"state": "active"})),
        ])
    }

    #[test]
    fn a_grant_filter_follows_its_grant_and_the_revocations_of_its_task() {
        let events = story();
        let mut selector = Selector::new(Filter {
            grant: Some("g2".to_owned()),
            ..Filter::default()
        })
        .unwrap();
        let selected: Vec<u64> = events
            .iter()
            .filter(|event| selector.select(event))
            .map(|event| event.seq)
            .collect();
        assert_eq!(selected, [5, 6, 7, 11, 12, 13]);
        let mut kinds = Selector::new(Filter {
            kinds: vec![EventKind::LivenessChecked],
            since: Some("2026-11-23T00:00:05Z".to_owned()),
            ..Filter::default()
        })
        .unwrap();
        let selected: Vec<u64> = events
            .iter()
            .filter(|event| kinds.select(event))
            .map(|event| event.seq)
            .collect();
        assert_eq!(selected, [9, 12]);
        assert!(
            Selector::new(Filter {
                since: Some("yesterday".to_owned()),
                ..Filter::default()
            })
            .is_err()
        );
        assert_eq!(
            EventKind::parse("grant_expired"),
            Some(EventKind::GrantExpired)
        );
        assert_eq!(
            EventKind::parse(EventKind::Decision.as_str()),
            Some(EventKind::Decision)
        );
        assert_eq!(EventKind::parse("nope"), None);
    }

    #[test]
    fn a_grant_life_flags_a_valid_answer_after_its_end() {
        let events = story();
        let mut selector = Selector::new(Filter {
            grant: Some("g2".to_owned()),
            ..Filter::default()
        })
        .unwrap();
        let life = GrantLife::of(
            "g2",
            events
                .iter()
                .filter(|e| selector.select(e))
                .cloned()
                .collect(),
        );
        assert!(matches!(
            life.ending,
            Ending::Ended {
                seq: 11,
                kind: EventKind::Revocation,
                ..
            }
        ));
        assert_eq!(life.credentials, ["jwt g2.aa"]);
        assert_eq!(life.valid_after_end, [12]);
        let g1: Vec<AuditEvent> = events
            .iter()
            .filter(|e| e.grant.as_deref() == Some("g1") || e.seq == 8)
            .cloned()
            .collect();
        let life = GrantLife::of("g1", g1);
        assert!(matches!(life.ending, Ending::Ended { seq: 8, .. }));
        assert_eq!((life.checks_after_end, life.valid_after_end.len()), (1, 0));
    }

    #[test]
    fn the_report_counts_per_entitlement() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_392_100);
        let report = Report::of(&story(), now);
        let deploy = &report.entitlements["deploy"];
        assert_eq!(
            (
                deploy.requests,
                deploy.granted,
                deploy.refused,
                deploy.break_glass,
                deploy.unreviewed
            ),
            (1, 2, 1, 1, 1)
        );
        // g1 was completed; g2 ended when its task was revoked, and was
        // then answered VALID.
        assert_eq!(
            (
                deploy.credentials,
                deploy.live,
                deploy.completed,
                deploy.revoked
            ),
            (2, 0, 1, 1)
        );
        assert_eq!(deploy.end_lags_ms, [3, 1]);
        assert_eq!(deploy.valid_after_end, 1);
        assert_eq!(
            deploy.expired, 0,
            "g2 ended by revocation before it expired"
        );
        assert_eq!(report.events, 13);
    }
}
