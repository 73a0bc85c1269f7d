//! Relying parties: they register to follow the revocation stream,
//! acknowledge what they have applied, and proof of removal reports which
//! of them have applied the revocation that ended a grant.

use std::time::{Duration, SystemTime};

use super::events::lag_ms;
use super::request::{check_name, invalid, parse_grant_id};
use super::{Caller, IssueError, Issuer};
use crate::audit::Record;
use crate::audit::event::{Envelope, Event, PartyApplied, RevocationApplied};
use crate::ca::BACKDATE;
use crate::grant::{Grant, GrantState};
use crate::store::{RelyingParty, RevocationEvent};

/// Most revocation events one acknowledgement records (each costs a few
/// store round trips); the rest wait for the next.
const MAX_ACKED_EVENTS: usize = 256;

/// One registered relying party's application of a revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartyRemoval {
    /// The party.
    pub party: RelyingParty,
    /// When it acknowledged the revocation, if it has.
    pub applied_at: Option<SystemTime>,
    /// Applied: from the revocation to the acknowledgement; otherwise how
    /// long it has been waiting.
    pub took: Duration,
    /// Not applied within the bound.
    pub overdue: bool,
}

/// How far the revocation of a grant has reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovalStatus {
    /// The grant.
    pub grant: Grant,
    /// The revocation event that ended it, with its cursor, if kept.
    pub event: Option<(String, RevocationEvent)>,
    /// The relying parties registered when it ended.
    pub parties: Vec<PartyRemoval>,
    /// How long a party may take before it is flagged.
    pub bound: Duration,
}

// === impl Issuer ===

impl Issuer {
    /// Relying party `name` of `caller` as heard from now at `cursor`, to
    /// be written, and its record before; refuses a name another identity
    /// holds.
    async fn relying_party(
        &self,
        caller: &Caller,
        name: &str,
        cursor: &str,
    ) -> Result<(RelyingParty, Option<RelyingParty>), IssueError> {
        super::token::refuse_token(caller, "register as a relying party")?;
        check_name("relying_party", name)?;
        // Names are bound to identities by the operator, so no workload can
        // take another's name and keep it from proving removal.
        match self.party_names.get(name) {
            None => {
                return Err(IssueError::Forbidden(format!(
                    "relying party {name:?} is not in [revocation.relying_parties]; an operator binds each name to the SPIFFE IDs that may use it"
                )));
            }
            Some(pattern) if !pattern.matches(&caller.spiffe_id) => {
                return Err(IssueError::Forbidden(format!(
                    "relying party {name:?} is bound to {pattern}, not to {}",
                    caller.spiffe_id
                )));
            }
            Some(_) => {}
        }
        let now = self.clock.now();
        let previous = self
            .store
            .relying_parties()
            .await?
            .into_iter()
            .find(|party| party.name == name);
        if let Some(previous) = &previous
            && previous.spiffe_id != caller.spiffe_id
        {
            return Err(IssueError::Forbidden(format!(
                "relying party {name:?} is registered by {}",
                previous.spiffe_id
            )));
        }
        let party = RelyingParty {
            name: name.to_owned(),
            spiffe_id: caller.spiffe_id.clone(),
            registered_at: previous.as_ref().map_or(now, |party| party.registered_at),
            last_seen: now,
            cursor: cursor.to_owned(),
        };
        Ok((party, previous))
    }

    /// A relying party starts following the revocation stream from
    /// `cursor` under `name`.
    pub async fn register_relying_party(
        &self,
        caller: &Caller,
        name: &str,
        cursor: &str,
    ) -> Result<(), IssueError> {
        let (mut party, previous) = self.relying_party(caller, name, cursor).await?;
        // Re-registering (a reconnect) keeps the acknowledged cursor, so
        // nothing between it and the new one goes unrecorded.
        if let Some(previous) = previous {
            party.cursor = previous.cursor;
        }
        self.store
            .register_relying_party(&party, self.party_ttl)
            .await?;
        Ok(())
    }

    /// Relying party `name` has applied every revocation up to `cursor`:
    /// records when each event since its last acknowledgement was applied,
    /// and audits each event every registered party has now applied.
    /// Returns how many events it recorded.
    pub async fn ack_revocations(
        &self,
        caller: &Caller,
        name: &str,
        cursor: &str,
    ) -> Result<usize, IssueError> {
        let now = self.clock.now();
        let (mut party, previous) = self.relying_party(caller, name, cursor).await?;
        let from = previous.map(|party| party.cursor).unwrap_or_default();
        if cursor.is_empty() || cursor == from {
            party.cursor = from;
            self.store
                .register_relying_party(&party, self.party_ttl)
                .await?;
            return Ok(0);
        }
        // The events after the last acknowledgement, up to `cursor`; a
        // cursor that is not on the stream is refused before anything is
        // written.
        let mut feed = self.store.revocation_feed().await?;
        let mut events = Vec::new();
        let mut after = if from.is_empty() {
            "0".to_owned()
        } else {
            from
        };
        let mut reached = false;
        'read: while !reached {
            let batch = feed.read(&after, Duration::ZERO).await?;
            if batch.is_empty() {
                return Err(invalid(
                    "cursor",
                    format!("{cursor:?} is not an event of the revocation stream"),
                ));
            }
            for (at, event) in batch {
                if events.len() >= MAX_ACKED_EVENTS {
                    // The rest is recorded with the next acknowledgement.
                    party.cursor.clone_from(&after);
                    break 'read;
                }
                reached = at == cursor;
                after.clone_from(&at);
                events.push((at, event));
                if reached {
                    break;
                }
            }
        }
        self.store
            .register_relying_party(&party, self.party_ttl)
            .await?;
        let keep_for = self.catalogue().longest_ttl() + BACKDATE;
        let parties = self.store.relying_parties().await?;
        let mut recorded = 0;
        for (at, event) in events {
            if event.at < party.registered_at {
                continue;
            }
            self.store.mark_applied(&at, name, now, keep_for).await?;
            recorded += 1;
            let expected: Vec<&RelyingParty> = parties
                .iter()
                .filter(|party| party.registered_at <= event.at)
                .collect();
            let applied = self.store.applied(&at).await?;
            let all = expected
                .iter()
                .all(|party| applied.iter().any(|(name, _)| *name == party.name));
            if all && self.store.mark_all_applied(&at, keep_for).await? {
                let slowest = applied
                    .iter()
                    .map(|(_, when)| lag_ms(event.at, *when))
                    .max()
                    .unwrap_or(0);
                let envelope = Envelope {
                    at: now,
                    actor: crate::audit::SYSTEM.to_owned(),
                    subject: None,
                    grant: (event.grants.len() == 1).then(|| event.grants[0].to_string()),
                    task: event.task.as_ref().map(ToString::to_string),
                };
                let applied_event = Event::RevocationApplied(RevocationApplied {
                    cursor: at.clone(),
                    revoked_at: event.at,
                    grants: event.grants.iter().map(ToString::to_string).collect(),
                    credential: event.credential.as_ref().map(|id| id.value().to_owned()),
                    relying_parties: applied
                        .iter()
                        .map(|(name, when)| PartyApplied {
                            name: name.clone(),
                            ms: lag_ms(event.at, *when),
                        })
                        .collect(),
                    slowest_ms: slowest,
                });
                self.audit(vec![Record::new(envelope, &applied_event)])
                    .await?;
            }
        }
        Ok(recorded)
    }

    /// Proof of removal: which relying parties have applied the
    /// revocation that ended grant `grant_id`, and how long each took.
    pub async fn revocation_status(
        &self,
        caller: &Caller,
        grant_id: &str,
    ) -> Result<RemovalStatus, IssueError> {
        super::token::refuse_token(caller, "read proof of removal")?;
        let now = self.clock.now();
        let grant_id = parse_grant_id(grant_id)?;
        let grant = self.store.grant(grant_id).await?.ok_or_else(|| {
            IssueError::NotFound(format!(
                "no live grant {grant_id} (an expired grant's record is gone; its revocation \
                 is in the audit trail)"
            ))
        })?;
        if !self.may_read(caller, &grant) && self.audit_trail(caller).is_err() {
            return Err(IssueError::Forbidden(format!(
                "grant {grant_id} belongs to another subject"
            )));
        }
        let mut status = RemovalStatus {
            grant,
            event: None,
            parties: Vec::new(),
            bound: self.ack_bound,
        };
        if matches!(status.grant.state, GrantState::Active | GrantState::Pending) {
            return Ok(status);
        }
        let mut feed = self.store.revocation_feed().await?;
        let mut after = "0".to_owned();
        'scan: loop {
            let batch = feed.read(&after, Duration::ZERO).await?;
            let Some((last, _)) = batch.last() else {
                break;
            };
            after = last.clone();
            for (at, event) in batch {
                let names_grant = event.grants.contains(&grant_id)
                    || event.task.as_ref().is_some_and(|task| {
                        *task == status.grant.task_id && status.grant.created_at <= event.at
                    });
                if names_grant {
                    status.event = Some((at, event));
                    break 'scan;
                }
            }
        }
        let Some((cursor, event)) = &status.event else {
            return Ok(status);
        };
        let applied = self.store.applied(cursor).await?;
        for party in self.store.relying_parties().await? {
            if party.registered_at > event.at {
                continue;
            }
            let applied_at = applied
                .iter()
                .find(|(name, _)| *name == party.name)
                .map(|(_, at)| *at);
            let took = applied_at
                .unwrap_or(now)
                .duration_since(event.at)
                .unwrap_or_default();
            status.parties.push(PartyRemoval {
                overdue: applied_at.is_none() && took > self.ack_bound,
                party,
                applied_at,
                took,
            });
        }
        Ok(status)
    }
}
