//! Approvals: approvers approve or deny pending grants (never their own:
//! separation of duties; N-of-M where configured), and requesters and
//! approvers watch them.

use super::events::about_grant;
use super::request::{check_comment, parse_grant_id};
use super::{Caller, IssueError, Issuer};
use crate::audit::event::{Approval, ApprovalDenied, Event};
use crate::clock::whole_seconds;
use crate::grant::{ApprovalRecord, Grant, GrantId, GrantState};
use crate::policy::{self, Entitlement};
use crate::store::StoreError;

// === impl Issuer ===

impl Issuer {
    /// Approves a pending grant. The approver must be one of the
    /// entitlement's approvers and not its requester, and may approve once;
    /// the grant turns active (its lifetime starting now) with the last
    /// approval needed.
    pub async fn approve(
        &self,
        caller: &Caller,
        grant_id: &str,
        comment: &str,
    ) -> Result<Grant, IssueError> {
        let id = parse_grant_id(grant_id)?;
        check_comment("comment", comment)?;
        for _ in 0..4 {
            let (current, entitlement) = self.pending_for_approver(caller, id).await?;
            // Approvals count principals: two identities of one person are
            // one approval.
            let catalogue = self.catalogue();
            let principal = catalogue.principal_of(&caller.spiffe_id);
            if let Some(earlier) = current
                .approvals
                .iter()
                .find(|approval| catalogue.principal_of(&approval.approver) == principal)
            {
                return Err(IssueError::FailedPrecondition(
                    if earlier.approver == caller.spiffe_id {
                        format!("{} has already approved grant {id}", caller.spiffe_id)
                    } else {
                        format!(
                            "{principal} has already approved grant {id} as {}; approvals count principals, not identities",
                            earlier.approver
                        )
                    },
                ));
            }
            let now = self.clock.now();
            let mut next = current.clone();
            next.approvals.push(ApprovalRecord {
                approver: caller.spiffe_id.clone(),
                at: now,
                comment: comment.to_owned(),
            });
            // A catalogue reload since the request may have lowered the
            // maximum or taken actions away: the grant never gets more than
            // the entitlement allows now.
            next.ttl = next.ttl.min(entitlement.max_ttl);
            let mut next = super::issue::within_entitlement(next, &entitlement)?;
            let needed = match &entitlement.approval {
                policy::ApprovalRule::Approvers { min_approvals, .. } => *min_approvals,
                policy::ApprovalRule::Auto => 1,
            };
            if next.approvals.len() >= needed as usize {
                next.state = GrantState::Active;
                next.expires_at = whole_seconds(now + next.ttl);
            }
            if self.store.update_pending(&current, &next).await? {
                let records = vec![about_grant(
                    caller,
                    &next,
                    now,
                    Event::Approval(Approval {
                        comment: comment.to_owned(),
                        entitlement: next.entitlement.clone(),
                        approvals: next.approvals.len() as u64,
                        needed: u64::from(needed),
                        state: next.state,
                        expires_at: next.expires_at,
                    }),
                )];
                self.audit_or_undo(records, || self.undo_decision(&next, &current))
                    .await?;
                self.changes.notify_waiters();
                return Ok(next);
            }
        }
        Err(IssueError::FailedPrecondition(format!(
            "grant {id} keeps changing; try again"
        )))
    }

    /// Denies a pending grant, with the same rules as [`Issuer::approve`].
    pub async fn deny(
        &self,
        caller: &Caller,
        grant_id: &str,
        reason: &str,
    ) -> Result<Grant, IssueError> {
        let id = parse_grant_id(grant_id)?;
        check_comment("reason", reason)?;
        for _ in 0..4 {
            let (current, _) = self.pending_for_approver(caller, id).await?;
            let mut next = current.clone();
            next.state = GrantState::Denied;
            next.end_reason = Some(if reason.is_empty() {
                format!("denied by {}", caller.spiffe_id)
            } else {
                format!("denied by {}: {reason}", caller.spiffe_id)
            });
            if self.store.update_pending(&current, &next).await? {
                let records = vec![about_grant(
                    caller,
                    &next,
                    self.clock.now(),
                    Event::ApprovalDenied(ApprovalDenied {
                        reason: reason.to_owned(),
                    }),
                )];
                self.audit_or_undo(records, || self.undo_decision(&next, &current))
                    .await?;
                self.changes.notify_waiters();
                return Ok(next);
            }
        }
        Err(IssueError::FailedPrecondition(format!(
            "grant {id} keeps changing; try again"
        )))
    }

    /// The pending grant `id` and its entitlement, if `caller` may decide
    /// on it.
    async fn pending_for_approver(
        &self,
        caller: &Caller,
        id: GrantId,
    ) -> Result<(Grant, Entitlement), IssueError> {
        super::token::refuse_token(caller, "approve or deny grants")?;
        let grant = self
            .store
            .grant(id)
            .await?
            .ok_or_else(|| IssueError::NotFound(format!("no live grant {id}")))?;
        let catalogue = self.catalogue();
        let entitlement = catalogue.entitlement(&grant.entitlement).ok_or_else(|| {
            IssueError::FailedPrecondition(format!(
                "entitlement {:?} is no longer in the catalogue",
                grant.entitlement
            ))
        })?;
        if !entitlement.approver(&caller.spiffe_id) {
            return Err(IssueError::Forbidden(format!(
                "{} is not an approver of entitlement {:?}",
                caller.spiffe_id, grant.entitlement
            )));
        }
        if catalogue.principal_of(&grant.subject) == catalogue.principal_of(&caller.spiffe_id) {
            return Err(IssueError::Forbidden(
                if grant.subject == caller.spiffe_id {
                    format!(
                        "{} requested grant {id} and may not approve or deny it (separation of duties)",
                        caller.spiffe_id
                    )
                } else {
                    format!(
                        "{} acts for {}, who requested grant {id} as {}, and may not approve or deny it (separation of duties)",
                        caller.spiffe_id,
                        catalogue.principal_of(&caller.spiffe_id),
                        grant.subject
                    )
                },
            ));
        }
        if grant.state != GrantState::Pending {
            return Err(IssueError::FailedPrecondition(format!(
                "grant {id} is {}, not pending",
                grant.state.as_str()
            )));
        }
        Ok((grant, entitlement.clone()))
    }

    /// The grant `id` as `caller` may watch it: its requester, its
    /// entitlement's approvers and admins may. `None` once it expired.
    pub async fn watched_grant(
        &self,
        caller: &Caller,
        id: GrantId,
    ) -> Result<Option<Grant>, IssueError> {
        let Some(grant) = self.store.grant(id).await? else {
            return Ok(None);
        };
        if !self.may_read(caller, &grant) {
            return Err(IssueError::Forbidden(format!(
                "{} may not watch grant {id}",
                caller.spiffe_id
            )));
        }
        Ok(Some(grant))
    }

    /// Pending grants `caller` may approve: of entitlements it approves,
    /// requested by someone else.
    pub async fn awaiting_approval(&self, caller: &Caller) -> Result<Vec<Grant>, IssueError> {
        super::token::refuse_token(caller, "approve grants")?;
        let catalogue = self.catalogue();
        let mut pending = self.store.pending_grants().await?;
        let principal = catalogue.principal_of(&caller.spiffe_id);
        pending.retain(|grant| {
            catalogue.principal_of(&grant.subject) != principal
                && !grant
                    .approvals
                    .iter()
                    .any(|approval| catalogue.principal_of(&approval.approver) == principal)
                && catalogue
                    .entitlement(&grant.entitlement)
                    .is_some_and(|entitlement| entitlement.approver(&caller.spiffe_id))
        });
        Ok(pending)
    }

    /// Puts a pending grant back as it was before a decision the trail
    /// refused.
    async fn undo_decision(&self, decided: &Grant, before: &Grant) -> Result<(), StoreError> {
        if !self.store.update_pending(decided, before).await? {
            tracing::error!(grant = %before.id, "could not undo an unaudited decision: the grant changed");
        }
        Ok(())
    }
}
