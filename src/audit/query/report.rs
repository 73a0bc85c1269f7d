//! The per-entitlement [`Report`] of a stretch of the trail, and its
//! table as `jitid audit report` prints it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::SystemTime;

use super::parse_time;
use crate::audit::AuditEvent;
use crate::audit::event::{Decision, Event, RequestReceived, Target};

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
    /// not show, and requests refused before one was found).
    pub entitlements: BTreeMap<String, EntitlementReport>,
    /// Events read.
    pub events: u64,
    /// Events whose details do not fit their kind: not counted.
    pub unreadable: u64,
}

/// The row of events whose entitlement the period does not show.
const UNKNOWN: &str = "?";

// === impl Report ===

impl Report {
    /// The report of `events` (in chain order) as of `now`.
    ///
    /// A request counts for the entitlement it was for: the one it named;
    /// else, for a request under an existing grant or one that policy
    /// granted, the grant's; else, for a refused request, the one policy
    /// found for its actions (the refusal's explanation names it).
    pub fn of<'a>(events: impl IntoIterator<Item = &'a AuditEvent>, now: SystemTime) -> Self {
        let mut report = Self::default();
        let mut entitlement_of: HashMap<String, String> = HashMap::new();
        let mut ended: HashMap<String, SystemTime> = HashMap::new();
        let mut revoked_credentials: HashSet<String> = HashSet::new();
        let mut open_reviews: HashMap<String, String> = HashMap::new();
        // Credentials: (grant, id, expiry).
        let mut credentials: Vec<(String, String, SystemTime)> = Vec::new();
        // Grants by task and by subject, for revocations of either.
        let mut grants_of: HashMap<(Target, String), Vec<String>> = HashMap::new();
        // Requests that named no entitlement, counted once their grant's
        // is known (at the end).
        let mut requests_under: Vec<String> = Vec::new();
        // Requests with no grant (refused ones: the refusal follows),
        // by actor, with the entitlement each named.
        let mut awaiting: HashMap<String, Vec<Option<String>>> = HashMap::new();
        for event in events {
            report.events += 1;
            let Ok(typed) = event.event() else {
                report.unreadable += 1;
                continue;
            };
            if let (Some(grant), Some(entitlement)) = (&event.grant, typed.entitlement()) {
                entitlement_of.insert(grant.clone(), entitlement.to_owned());
            }
            let grant = event.grant.clone().unwrap_or_default();
            let entitlement = |grant: &str| {
                entitlement_of
                    .get(grant)
                    .cloned()
                    .unwrap_or_else(|| UNKNOWN.to_owned())
            };
            let at = parse_time(&event.time).unwrap_or(SystemTime::UNIX_EPOCH);
            match &typed {
                Event::RequestReceived(request) => {
                    let named = match request {
                        RequestReceived::Grant(request) => request.entitlement.clone(),
                        RequestReceived::Delegation(request) => Some(request.entitlement.clone()),
                    };
                    match (named, &event.grant) {
                        (Some(name), Some(_)) => report.row(name).requests += 1,
                        (None, Some(grant)) => requests_under.push(grant.clone()),
                        (named, None) => {
                            awaiting.entry(event.actor.clone()).or_default().push(named)
                        }
                    }
                }
                Event::Decision(Decision::Refused(refused)) => {
                    let request = awaiting
                        .get_mut(&event.actor)
                        .and_then(|requests| requests.pop());
                    let name = refused
                        .entitlement()
                        .map(str::to_owned)
                        .or_else(|| request.clone().flatten())
                        .unwrap_or_else(|| UNKNOWN.to_owned());
                    let row = report.row(name);
                    row.refused += 1;
                    if request.is_some() {
                        row.requests += 1;
                    }
                }
                Event::Decision(decision) => {
                    let name = decision
                        .entitlement()
                        .map_or_else(|| entitlement(&grant), str::to_owned);
                    report.row(name).granted += 1;
                    for (target, value) in [
                        (Target::Task, &event.task),
                        (Target::Subject, &event.subject),
                    ] {
                        if let Some(value) = value {
                            grants_of
                                .entry((target, value.clone()))
                                .or_default()
                                .push(grant.clone());
                        }
                    }
                }
                Event::Approval(_) => report.row(entitlement(&grant)).approvals += 1,
                Event::BreakGlass(_) => {
                    report.row(entitlement(&grant)).break_glass += 1;
                    open_reviews.insert(grant.clone(), entitlement(&grant));
                }
                Event::ReviewAcknowledged(_) => {
                    open_reviews.remove(&grant);
                }
                Event::CredentialIssued(issued) => {
                    report.row(entitlement(&grant)).credentials += 1;
                    credentials.push((grant.clone(), issued.id.clone(), issued.expires_at));
                }
                Event::Revocation(_) | Event::TaskCompleted(_) => {
                    let lag = match &typed {
                        Event::Revocation(revocation) => revocation.lag_ms,
                        Event::TaskCompleted(completed) => completed.lag_ms,
                        _ => 0,
                    };
                    let mut targets: Vec<String> = typed.ended_grants().to_vec();
                    match typed.ends() {
                        Some((Target::Credential, id)) => {
                            revoked_credentials.insert(id.to_owned());
                        }
                        Some((target @ (Target::Task | Target::Subject), value)) => {
                            targets.extend(
                                grants_of
                                    .get(&(target, value.to_owned()))
                                    .into_iter()
                                    .flatten()
                                    .cloned(),
                            );
                        }
                        _ => {}
                    }
                    targets.sort();
                    targets.dedup();
                    for ended_grant in &targets {
                        if ended.contains_key(ended_grant) {
                            continue;
                        }
                        ended.insert(ended_grant.clone(), at);
                        let row = report.row(entitlement(ended_grant));
                        if matches!(typed, Event::Revocation(_)) {
                            row.revoked += 1;
                        } else {
                            row.completed += 1;
                        }
                        row.end_lags_ms.push(lag);
                    }
                }
                // A grant its task's revocation ended is still recorded
                // as expiring later: it counts as revoked.
                Event::GrantExpired(_) if !ended.contains_key(&grant) => {
                    ended.insert(grant.clone(), at);
                    report.row(entitlement(&grant)).expired += 1;
                }
                Event::LivenessChecked(checked)
                    if checked.status == crate::audit::event::LivenessStatus::Valid
                        && ended.get(&grant).is_some_and(|end| *end <= at) =>
                {
                    report.row(entitlement(&grant)).valid_after_end += 1;
                }
                _ => {}
            }
        }
        let entitlement = |grant: &str| {
            entitlement_of
                .get(grant)
                .cloned()
                .unwrap_or_else(|| UNKNOWN.to_owned())
        };
        for grant in requests_under {
            report.row(entitlement(&grant)).requests += 1;
        }
        for named in awaiting.into_values().flatten() {
            report
                .row(named.unwrap_or_else(|| UNKNOWN.to_owned()))
                .requests += 1;
        }
        for name in open_reviews.into_values() {
            report.row(name).unreviewed += 1;
        }
        for (grant, id, expires) in credentials {
            if expires > now && !ended.contains_key(&grant) && !revoked_credentials.contains(&id) {
                report.row(entitlement(&grant)).live += 1;
            }
        }
        report
    }

    /// The report as `jitid audit report` prints it: a title naming
    /// `since`, then one row per entitlement.
    pub fn render(&self, since: SystemTime) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "audit report since {}: {} events",
            humantime::format_rfc3339_seconds(since),
            self.events
        );
        if self.unreadable > 0 {
            let _ = writeln!(
                out,
                "{} event(s) not counted: their details do not fit their kind",
                self.unreadable
            );
        }
        let _ = writeln!(
            out,
            "{:<20} {:>8} {:>7} {:>7} {:>9} {:>11} {:>10} {:>11} {:>5} {:>7} {:>9} {:>7} {:>16} {:>15}",
            "entitlement",
            "requests",
            "granted",
            "refused",
            "approvals",
            "break-glass",
            "unreviewed",
            "credentials",
            "live",
            "revoked",
            "completed",
            "expired",
            "lag p50/max (ms)",
            "valid-after-end"
        );
        for (name, row) in &self.entitlements {
            let mut lags = row.end_lags_ms.clone();
            lags.sort_unstable();
            let lag = match (lags.get(lags.len() / 2), lags.last()) {
                (Some(p50), Some(max)) => format!("{p50}/{max}"),
                _ => "-".to_owned(),
            };
            let _ = writeln!(
                out,
                "{:<20} {:>8} {:>7} {:>7} {:>9} {:>11} {:>10} {:>11} {:>5} {:>7} {:>9} {:>7} {:>16} {:>15}",
                name,
                row.requests,
                row.granted,
                row.refused,
                row.approvals,
                row.break_glass,
                row.unreviewed,
                row.credentials,
                row.live,
                row.revoked,
                row.completed,
                row.expired,
                lag,
                row.valid_after_end
            );
        }
        out
    }

    fn row(&mut self, name: String) -> &mut EntitlementReport {
        self.entitlements.entry(name).or_default()
    }
}
