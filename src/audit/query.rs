//! Reading the trail: which events a query selects ([`Filter`]), one line
//! about an event for people ([`summary`], [`line()`]), the per-entitlement
//! [`Report`], and the life of one grant ([`GrantLife`]), the evidence
//! that it was removed. Every reader here matches on typed events
//! ([`AuditEvent::event`]); none looks up a details key.

mod life;
mod report;

use std::time::SystemTime;

pub use self::life::{Ending, GrantLife};
pub use self::report::{EntitlementReport, Report};
use super::event::{CatalogueReloaded, Decision, Event, RequestReceived, Target};
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
        // Only revocations and completions are read past their envelope.
        let ending = ending(event);
        let ends = |target: Target, value: Option<&str>| {
            value.is_some_and(|value| {
                ending
                    .as_ref()
                    .and_then(Event::ends)
                    .is_some_and(|ended| ended == (target, value))
            })
        };
        if let Some(grant) = &filter.grant {
            if event.grant.as_deref() == Some(grant) {
                if self.grant_task.is_none() {
                    self.grant_task = event.task.clone();
                }
                if self.grant_subject.is_none() {
                    self.grant_subject = event.subject.clone();
                }
            } else if !(ending
                .as_ref()
                .is_some_and(|ending| ending.ended_grants().contains(grant))
                || ends(Target::Task, self.grant_task.as_deref())
                || ends(Target::Subject, self.grant_subject.as_deref()))
            {
                return false;
            }
        }
        if let Some(task) = &filter.task
            && event.task.as_deref() != Some(task)
            && !ends(Target::Task, Some(task))
        {
            return false;
        }
        if let Some(subject) = &filter.subject
            && event.subject.as_deref() != Some(subject)
            && event.actor != *subject
            && !ends(Target::Subject, Some(subject))
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

/// A revocation or completion, typed (`None` for other kinds, and for one
/// whose details do not fit).
fn ending(event: &AuditEvent) -> Option<Event> {
    matches!(event.kind, EventKind::Revocation | EventKind::TaskCompleted)
        .then(|| event.event().ok())
        .flatten()
}

/// `text` as events write times (RFC 3339 UTC with milliseconds), so
/// times compare as strings.
pub fn normalize_time(text: &str) -> Result<String, String> {
    humantime::parse_rfc3339_weak(text)
        .map(|at| humantime::format_rfc3339_millis(at).to_string())
        .map_err(|error| format!("{text:?} is not an RFC 3339 time: {error}"))
}

fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text).ok()
}

/// One line about an event, for people: its number, time, kind, actor,
/// grant and [`summary`].
pub fn line(event: &AuditEvent) -> String {
    format!(
        "{:>7}  {}  {:<22} {}  {}  {}",
        event.seq,
        event.time,
        event.kind.as_str(),
        event.actor,
        event.grant.as_deref().unwrap_or("-"),
        summary(event)
    )
}

/// What an event says, in a few words. Details that do not fit the
/// event's kind are shown as stored, after the reason.
pub fn summary(event: &AuditEvent) -> String {
    match event.event() {
        Ok(typed) => describe(&typed),
        Err(error) => format!("({error}) {}", event.details),
    }
}

fn describe(event: &Event) -> String {
    let seconds = |at: SystemTime| humantime::format_rfc3339_seconds(at).to_string();
    let list = |items: &[String]| serde_json::Value::from(items.to_vec()).to_string();
    match event {
        Event::RequestReceived(RequestReceived::Grant(request)) => format!(
            "{} asked for {} {}",
            request.rpc,
            request.entitlement.as_deref().unwrap_or("-"),
            list(&request.actions)
        ),
        Event::RequestReceived(RequestReceived::Delegation(request)) => format!(
            "Delegate asked for {} from {} {}",
            request.name,
            request.entitlement,
            list(&request.actions)
        ),
        Event::Decision(Decision::Granted(granted)) => format!(
            "{:?} → {} for {}s",
            granted.outcome,
            granted.state.as_str(),
            granted.ttl_seconds
        ),
        Event::Decision(Decision::Delegated(delegated)) => format!(
            "delegated from {} → active for {}s",
            delegated.parent, delegated.ttl_seconds
        ),
        Event::Decision(Decision::Refused(refused)) => format!("refused: {}", refused.reason()),
        Event::Approval(approval) => format!(
            "approved ({} of {}) → {}",
            approval.approvals,
            approval.needed,
            approval.state.as_str()
        ),
        Event::ApprovalDenied(denied) => format!("denied: {}", denied.reason),
        Event::BreakGlass(break_glass) => format!("break-glass: {}", break_glass.justification),
        Event::CredentialIssued(issued) => format!(
            "{} {} until {}",
            issued.credential,
            issued.id,
            seconds(issued.expires_at)
        ),
        Event::Revocation(revocation) => format!(
            "{} {}: {} grant(s) ended{}",
            revocation.target,
            revocation.value,
            revocation.grants_ended.len(),
            Some(&revocation.reason)
                .filter(|reason| !reason.is_empty())
                .map(|reason| format!(" ({reason})"))
                .unwrap_or_default()
        ),
        Event::TaskCompleted(completed) => format!(
            "{} {}: {} grant(s) ended ({})",
            completed.target,
            completed.value,
            completed.grants_ended.len(),
            completed.outcome
        ),
        Event::GrantExpired(expired) => format!("expired while {}", expired.state),
        Event::ReviewAcknowledged(acknowledged) => {
            format!("review closed: {}", acknowledged.comment)
        }
        Event::CatalogueReloaded(CatalogueReloaded::Reloaded(reloaded)) => format!(
            "{}: {} entitlement(s) in force",
            reloaded.file, reloaded.entitlements
        ),
        Event::CatalogueReloaded(CatalogueReloaded::Refused(refused)) => {
            format!("{}: not reloaded: {}", refused.file, refused.error)
        }
        Event::AuthenticationFailure(failure) => match (failure.repeated, failure.window_seconds) {
            (Some(repeated), Some(window)) => format!(
                "{}: {repeated} more in {window}s, first: {}",
                failure.remote, failure.reason
            ),
            _ => format!("{}: {}", failure.remote, failure.reason),
        },
        Event::LivenessChecked(checked) => format!(
            "Verify {} → {}",
            checked.credential.as_deref().unwrap_or("-"),
            checked.status.as_str().to_uppercase()
        ),
        Event::RevocationApplied(applied) => format!(
            "applied by all {} relying part(ies), slowest {} ms",
            applied.relying_parties.len(),
            applied.slowest_ms
        ),
        Event::IdentityIssued(issued) => format!(
            "identity {} {} ({}) until {}",
            issued.spiffe_id,
            issued.serial,
            issued.via,
            seconds(issued.not_after)
        ),
        Event::IdentityRevoked(revoked) => format!(
            "identity {} {} revoked: {} grant(s) ended{}",
            revoked.target,
            revoked.value,
            revoked.grants_ended.len(),
            Some(&revoked.reason)
                .filter(|reason| !reason.is_empty())
                .map(|reason| format!(" ({reason})"))
                .unwrap_or_default()
        ),
        Event::JoinTokenCreated(created) => format!(
            "join token {} for {} until {}",
            created.token,
            created.spiffe_id,
            seconds(created.expires_at)
        ),
        Event::JoinTokenUsed(used) => {
            format!("join token {} used: identity {}", used.token, used.serial)
        }
    }
}

#[cfg(test)]
mod tests;
