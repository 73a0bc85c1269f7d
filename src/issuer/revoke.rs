//! Ending grants: revocation (of a credential, grant, task or subject, by
//! its owner or an admin) and completion (by the task's owner), each
//! announced on the revocation stream relying parties follow.
//!
//! A revocation is never undone: when the trail refuses its event the
//! caller hears so and retries, which ends nothing new but announces and
//! records it again.

use super::events::lag_ms;
use super::events::record;
use super::request::{MAX_JUSTIFICATION_BYTES, invalid, name_error, parse_grant_id};
use super::{Caller, IssueError, Issuer};
use crate::audit::event::{Event, Revocation, Target, TaskCompleted};
use crate::ca::BACKDATE;
use crate::grant::{CredentialId, Epoch, Grant, GrantId, GrantState, TaskId};
use crate::spiffe_id::SpiffeId;
use crate::store::{CredentialRevocation, EndTarget, Ending, RevocationEvent, RevocationFeed};

/// What to revoke, as named by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeTarget {
    /// A credential id (serial or `jti`).
    Credential(String),
    /// A grant id.
    Grant(String),
    /// A task id.
    Task(String),
    /// A subject's SPIFFE ID.
    Subject(String),
}

/// What a revocation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevokeOutcome {
    /// Grants ended by this call.
    pub grants: Vec<GrantId>,
    /// Whether a live credential was revoked.
    pub credential_revoked: bool,
    /// Whether the task was revoked for every holder.
    pub task_revoked: bool,
}

/// How a task ended: completed or failed (its grants end all the same).
pub use crate::audit::event::TaskOutcome as Outcome;

/// What the caller says is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompleteTarget {
    /// One of its grants.
    Grant(String),
    /// Its grants of a task.
    Task(String),
}

// === impl Issuer ===

impl Issuer {
    /// Revokes a credential, grant, task or subject on behalf of `caller`.
    pub async fn revoke(
        &self,
        caller: &Caller,
        target: &RevokeTarget,
        reason: &str,
    ) -> Result<RevokeOutcome, IssueError> {
        super::token::refuse_token(caller, "revoke (end its task with CompleteTask)")?;
        if reason.len() > MAX_JUSTIFICATION_BYTES {
            return Err(invalid(
                "reason",
                format!("is longer than {MAX_JUSTIFICATION_BYTES} bytes"),
            ));
        }
        let admin = self.is_admin(caller);
        let ending = Ending {
            state: GrantState::Revoked,
            reason: ending_reason(caller, reason),
            at: self.clock.now(),
        };
        let mut outcome = RevokeOutcome::default();
        // Grants delegated from the target grant: ended with it, and
        // announced with it.
        let mut descendants = Vec::new();
        match target {
            RevokeTarget::Credential(text) => {
                let id = CredentialId::parse(text).ok_or_else(|| {
                    invalid("credential_id", "is not a jitid serial or jti".to_owned())
                })?;
                let grant_id = id
                    .grant_id()
                    .ok_or_else(|| invalid("credential_id", "names no grant".to_owned()))?;
                if !admin {
                    self.owned_grant(caller, grant_id).await?;
                }
                match self.store.revoke_credential(&id, &ending).await? {
                    CredentialRevocation::Revoked => outcome.credential_revoked = true,
                    // A retry: announce it again below.
                    CredentialRevocation::AlreadyRevoked => {}
                    CredentialRevocation::NotFound => {
                        return Err(IssueError::NotFound(format!(
                            "no live credential {}",
                            id.value()
                        )));
                    }
                }
            }
            RevokeTarget::Grant(text) => {
                let grant_id = parse_grant_id(text)?;
                let grant = if admin {
                    self.store
                        .grant(grant_id)
                        .await?
                        .ok_or_else(|| IssueError::NotFound(format!("no live grant {grant_id}")))?
                } else {
                    self.owned_grant(caller, grant_id).await?
                };
                outcome.grants = self.store.end(EndTarget::Grant(grant_id), &ending).await?;
                let (ended, all) = self.end_descendants(&grant, &ending).await?;
                outcome.grants.extend(ended);
                descendants = all;
            }
            RevokeTarget::Task(text) => {
                let task = TaskId::new(text).map_err(|error| name_error("task_id", text, error))?;
                if admin {
                    self.store
                        // Kept until every grant requested before it has
                        // expired, pending ones included.
                        .revoke_task(
                            &task,
                            &ending,
                            self.catalogue().longest_grant_life() + BACKDATE,
                        )
                        .await?;
                    outcome.task_revoked = true;
                }
                outcome.grants = self
                    .store
                    .end(
                        EndTarget::Task {
                            subject: &caller.spiffe_id,
                            task: &task,
                        },
                        &ending,
                    )
                    .await?;
            }
            RevokeTarget::Subject(text) => {
                let subject =
                    SpiffeId::new(text).map_err(|error| invalid("subject", error.to_string()))?;
                if !admin && subject != caller.spiffe_id {
                    return Err(IssueError::Forbidden(format!(
                        "{} may not revoke {subject}: only admins may revoke another subject",
                        caller.spiffe_id
                    )));
                }
                outcome.grants = self
                    .store
                    .end(EndTarget::Subject(&subject), &ending)
                    .await?;
            }
        }
        let mut event = RevocationEvent {
            epoch: self.store.epoch().await?,
            at: ending.at,
            grants: outcome.grants.clone(),
            credential: None,
            task: None,
            reason: ending.reason.clone(),
        };
        // A repeated revocation announces its whole target again, so an
        // event lost to an earlier failure (after the store write) is sent
        // after all.
        match target {
            RevokeTarget::Grant(text) => {
                event.grants = std::iter::once(parse_grant_id(text)?)
                    .chain(descendants)
                    .collect();
            }
            RevokeTarget::Credential(text) => event.credential = CredentialId::parse(text),
            RevokeTarget::Task(text) => {
                let task = TaskId::new(text).ok();
                event.grants = self.ended_grants(&caller.spiffe_id, task.as_ref()).await?;
                if outcome.task_revoked {
                    event.task = task;
                }
            }
            RevokeTarget::Subject(text) => {
                if let Ok(subject) = SpiffeId::new(text) {
                    event.grants = self.ended_grants(&subject, None).await?;
                }
            }
        }
        self.changes.notify_waiters();
        self.announce(&event).await?;
        let (kind, value) = match target {
            RevokeTarget::Credential(value) => (Target::Credential, value),
            RevokeTarget::Grant(value) => (Target::Grant, value),
            RevokeTarget::Task(value) => (Target::Task, value),
            RevokeTarget::Subject(value) => (Target::Subject, value),
        };
        // A revocation of one grant or credential is about that grant.
        let grant = match target {
            RevokeTarget::Grant(text) => GrantId::parse(text),
            RevokeTarget::Credential(text) => {
                CredentialId::parse(text).and_then(|id| id.grant_id())
            }
            RevokeTarget::Task(_) | RevokeTarget::Subject(_) => None,
        };
        self.audit(vec![record(
            caller,
            ending.at,
            None,
            grant.map(|id| id.to_string()),
            None,
            Event::Revocation(Revocation {
                target: kind,
                value: value.clone(),
                reason: reason.to_owned(),
                grants_ended: outcome.grants.iter().map(ToString::to_string).collect(),
                credential_revoked: outcome.credential_revoked,
                task_revoked: outcome.task_revoked,
                lag_ms: lag_ms(ending.at, self.clock.now()),
            }),
        )])
        .await?;
        Ok(outcome)
    }

    /// The unexpired grants of `subject` (of `task`, if given) that have
    /// ended.
    async fn ended_grants(
        &self,
        subject: &SpiffeId,
        task: Option<&TaskId>,
    ) -> Result<Vec<GrantId>, IssueError> {
        Ok(self
            .store
            .grants_of(subject)
            .await?
            .into_iter()
            .filter(|grant| grant.state != GrantState::Active)
            .filter(|grant| task.is_none_or(|task| &grant.task_id == task))
            .map(|grant| grant.id)
            .collect())
    }

    /// Puts a revocation on the stream that relying parties follow. The
    /// store has recorded it already; a failure here is reported so the
    /// caller retries, which announces it again.
    async fn announce(&self, event: &RevocationEvent) -> Result<(), IssueError> {
        if event.grants.is_empty() && event.credential.is_none() && event.task.is_none() {
            return Ok(());
        }
        self.store
            .publish(event, self.catalogue().longest_ttl() + BACKDATE)
            .await?;
        Ok(())
    }

    /// A reader of the revocation stream.
    pub async fn revocation_feed(&self) -> Result<Box<dyn RevocationFeed>, IssueError> {
        Ok(self.store.revocation_feed().await?)
    }

    /// The store's epoch, read afresh.
    pub async fn current_epoch(&self) -> Result<Epoch, IssueError> {
        Ok(self.store.current_epoch().await?)
    }

    /// Ends the caller's grant (and every grant delegated from it), or its
    /// grants of a task, as completed or failed.
    pub async fn complete(
        &self,
        caller: &Caller,
        target: &CompleteTarget,
        outcome: Outcome,
    ) -> Result<Vec<GrantId>, IssueError> {
        let ending = Ending {
            state: GrantState::Completed,
            reason: format!("{} by {}", outcome.as_str(), caller.spiffe_id),
            at: self.clock.now(),
        };
        let (ended, announced) = match target {
            CompleteTarget::Grant(text) => {
                let grant_id = parse_grant_id(text)?;
                let grant = self.owned_grant(caller, grant_id).await?;
                self.check_token_grant(caller, &grant).await?;
                let mut ended = self.store.end(EndTarget::Grant(grant_id), &ending).await?;
                let (more, descendants) = self.end_descendants(&grant, &ending).await?;
                ended.extend(more);
                (
                    ended,
                    std::iter::once(grant_id).chain(descendants).collect(),
                )
            }
            CompleteTarget::Task(text) => {
                let task = TaskId::new(text).map_err(|error| name_error("task_id", text, error))?;
                self.check_token_task(caller, &task).await?;
                let ended = self
                    .store
                    .end(
                        EndTarget::Task {
                            subject: &caller.spiffe_id,
                            task: &task,
                        },
                        &ending,
                    )
                    .await?;
                (
                    ended,
                    self.ended_grants(&caller.spiffe_id, Some(&task)).await?,
                )
            }
        };
        self.changes.notify_waiters();
        // As with revocations, a retry announces everything ended again.
        self.announce(&RevocationEvent {
            epoch: self.store.epoch().await?,
            at: ending.at,
            grants: announced,
            credential: None,
            task: None,
            reason: ending.reason.clone(),
        })
        .await?;
        let (kind, value, grant, task) = match target {
            CompleteTarget::Grant(value) => (Target::Grant, value, GrantId::parse(value), None),
            CompleteTarget::Task(value) => (Target::Task, value, None, Some(value.clone())),
        };
        self.audit(vec![record(
            caller,
            ending.at,
            Some(caller.spiffe_id.to_string()),
            grant.map(|id| id.to_string()),
            task,
            Event::TaskCompleted(TaskCompleted {
                target: kind,
                value: value.clone(),
                outcome,
                grants_ended: ended.iter().map(ToString::to_string).collect(),
                lag_ms: lag_ms(ending.at, self.clock.now()),
            }),
        )])
        .await?;
        Ok(ended)
    }

    /// Ends the active grants delegated (at any depth) from `grant`, which
    /// all belong to its subject; returns those ended now, and every
    /// descendant still kept (to announce them all again on a retry).
    async fn end_descendants(
        &self,
        grant: &Grant,
        ending: &Ending,
    ) -> Result<(Vec<GrantId>, Vec<GrantId>), IssueError> {
        // Only a delegable entitlement's grants have descendants, and
        // finding them lists every grant of the subject (a CI runner may
        // hold thousands), so other grants end without that read. Should
        // the catalogue stop allowing delegation while children live, they
        // still die with their parent: liveness follows the ancestors a
        // credential names.
        if self
            .catalogue()
            .entitlement(&grant.entitlement)
            .is_some_and(|entitlement| entitlement.delegation_depth == 0)
        {
            return Ok((Vec::new(), Vec::new()));
        }
        let descendants: Vec<Grant> = self
            .store
            .grants_of(&grant.subject)
            .await?
            .into_iter()
            .filter(|other| {
                other
                    .delegation
                    .as_ref()
                    .is_some_and(|delegation| delegation.descends_from(grant.id))
            })
            .collect();
        let mut ended = Vec::new();
        for descendant in &descendants {
            if descendant.state == GrantState::Active {
                ended.extend(
                    self.store
                        .end(EndTarget::Grant(descendant.id), ending)
                        .await?,
                );
            }
        }
        Ok((ended, descendants.iter().map(|grant| grant.id).collect()))
    }
}

fn ending_reason(caller: &Caller, reason: &str) -> String {
    if reason.is_empty() {
        format!("revoked by {}", caller.spiffe_id)
    } else {
        format!("revoked by {}: {reason}", caller.spiffe_id)
    }
}
