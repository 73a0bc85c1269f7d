//! Delegation: the holder of a delegable task's grant asks for a child
//! grant for a sub-task: a subset of its actions, expiring no later, one
//! level deeper, named by a SPIFFE ID under its own.

use super::events::{record, strings};
use super::issue::within_grant;
use super::mint::grant_spiffe_id;
use super::request::{DelegationRequest, invalid};
use super::{Caller, IssueError, Issuer};
use crate::audit::event::{
    Decision, Delegated, DelegationExplanation, DelegationRequested, Event, RequestReceived,
};
use crate::grant::{Action, Ancestor, Delegation, Grant, GrantId, GrantState, Shard};
use crate::policy::{Catalogue, Denial, Entitlement};
use crate::spiffe_id::SpiffeId;
use crate::store::StoreError;

// === impl Issuer ===

impl Issuer {
    /// Creates a child grant under one of `caller`'s active grants: a
    /// subset of its actions, expiring no later, one level deeper, within
    /// the entitlement's `delegation_depth`. Nothing is minted; credentials
    /// are issued under the child like under any active grant.
    pub async fn delegate(
        &self,
        caller: &Caller,
        spec: &DelegationRequest,
    ) -> Result<Grant, IssueError> {
        let now = self.clock.now();
        let parent_id = spec.parent;
        let parent = self.owned_grant(caller, parent_id).await?;
        self.check_token_grant(caller, &parent).await?;
        self.check_live_chain(&parent)?;
        for ancestor in parent.delegation.iter().flat_map(|d| &d.chain) {
            match self.store.grant(ancestor.grant_id).await? {
                Some(grant) => self.check_live_chain(&grant)?,
                None => {
                    return Err(IssueError::FailedPrecondition(format!(
                        "ancestor grant {} has expired",
                        ancestor.grant_id
                    )));
                }
            }
        }
        let catalogue = self.catalogue();
        let entitlement = self.still_requester(&catalogue, caller, &parent.entitlement)?;
        let depth = parent.delegation.as_ref().map_or(0, Delegation::depth) + 1;
        if entitlement.delegation_depth == 0 {
            return Err(IssueError::Forbidden(format!(
                "entitlement {:?} is not delegable (delegation_depth = 0)",
                entitlement.name
            )));
        }
        if depth > usize::from(entitlement.delegation_depth) {
            return Err(IssueError::Forbidden(format!(
                "a delegation from grant {parent_id} would be {depth} levels deep; entitlement \
                 {:?} allows {}",
                entitlement.name, entitlement.delegation_depth
            )));
        }
        // Only what the entitlement still allows is passed on.
        let parent = super::issue::within_entitlement(parent, entitlement)?;
        let actions = delegated_actions(&parent, &spec.actions)?;
        let expires_at = within_grant(
            spec.ttl,
            &parent,
            now,
            ": a delegation never outlives its parent",
        )?;
        let actor = grant_spiffe_id(&parent)?;
        let spiffe_id = SpiffeId::new(&format!("{actor}/sub/{}", spec.name))
            .map_err(|error| invalid("name", format!("makes an invalid SPIFFE ID: {error}")))?;
        let chain: Vec<Ancestor> = std::iter::once(Ancestor {
            grant_id: parent.id,
            spiffe_id: actor,
        })
        .chain(
            parent
                .delegation
                .iter()
                .flat_map(|d| d.chain.iter().cloned()),
        )
        .collect();
        let explanation = DelegationExplanation {
            parent: parent.id.to_string(),
            parent_actions: strings(&parent.actions),
            parent_expires_at: parent.expires_at,
            depth: depth as u64,
            delegation_depth: u64::from(entitlement.delegation_depth),
            actions_asked: strings(&spec.actions),
            ttl_asked_seconds: spec.ttl.map(|ttl| ttl.as_secs()),
        };
        let mut grant = Grant {
            id: GrantId::generate(Shard::of(&caller.spiffe_id)),
            subject: caller.spiffe_id.clone(),
            entitlement: parent.entitlement.clone(),
            actions,
            task_id: parent.task_id.clone(),
            parent: Some(parent.id),
            justification: spec.justification.clone(),
            ticket: parent.ticket.clone(),
            created_at: now,
            expires_at,
            state: GrantState::Active,
            end_reason: None,
            epoch: self.store.epoch().await?,
            break_glass: parent.break_glass,
            per_task: parent.per_task,
            ttl: expires_at.duration_since(now).unwrap_or_default(),
            approvals: Vec::new(),
            decision: explanation.to_text(),
            delegation: Some(Delegation { spiffe_id, chain }),
        };
        for attempt in 0..2 {
            match self.store.record_grant(&grant).await {
                Ok(()) => break,
                Err(StoreError::EpochChanged(current)) if attempt == 0 => grant.epoch = current,
                Err(error) => return Err(error.into()),
            }
        }
        // The parent may have ended while the child was written; the child
        // would be dead anyway (liveness follows ancestors), but it must
        // not show as active either: it goes as if never written.
        let parent_now = self.store.grant(parent.id).await?;
        if parent_now.is_none_or(|parent| parent.state != GrantState::Active) {
            self.store.discard_grant(grant.id).await?;
            return Err(IssueError::FailedPrecondition(format!(
                "grant {} ended while delegating from it",
                parent.id
            )));
        }
        let delegation = grant.delegation.as_ref().map(|d| d.spiffe_id.to_string());
        let records = vec![
            record(
                caller,
                now,
                Some(caller.spiffe_id.to_string()),
                Some(parent.id.to_string()),
                Some(parent.task_id.to_string()),
                Event::RequestReceived(RequestReceived::Delegation(DelegationRequested {
                    entitlement: parent.entitlement.clone(),
                    name: spec.name.clone(),
                    actions: strings(&spec.actions),
                    ttl_seconds: spec.ttl.map(|ttl| ttl.as_secs()),
                    justification: spec.justification.clone(),
                })),
            ),
            record(
                caller,
                now,
                Some(caller.spiffe_id.to_string()),
                Some(grant.id.to_string()),
                Some(grant.task_id.to_string()),
                Event::Decision(Decision::Delegated(Delegated {
                    entitlement: grant.entitlement.clone(),
                    actions: strings(&grant.actions),
                    spiffe_id: delegation,
                    parent: parent.id.to_string(),
                    depth: depth as u64,
                    expires_at: grant.expires_at,
                    ttl_seconds: grant.ttl.as_secs(),
                    explanation,
                })),
            ),
        ];
        self.audit_or_undo(records, || self.store.discard_grant(grant.id))
            .await?;
        Ok(grant)
    }

    /// The entitlement `name` of the catalogue in force, if `caller` may
    /// still request it: what minting under or delegating from an existing
    /// grant needs.
    pub(super) fn still_requester<'a>(
        &self,
        catalogue: &'a Catalogue,
        caller: &Caller,
        name: &str,
    ) -> Result<&'a Entitlement, IssueError> {
        let entitlement = catalogue
            .entitlement(name)
            .ok_or_else(|| catalogue.unknown_entitlement(name, &caller.spiffe_id))?;
        if !entitlement.admits(&caller.spiffe_id) {
            return Err(Denial::NotARequester {
                caller: caller.spiffe_id.clone(),
                entitlement: name.to_owned(),
            }
            .into());
        }
        Ok(entitlement)
    }

    /// Refuses to delegate from a grant that is not active.
    fn check_live_chain(&self, grant: &Grant) -> Result<(), IssueError> {
        if grant.state == GrantState::Active {
            return Ok(());
        }
        Err(IssueError::FailedPrecondition(format!(
            "grant {} is {}{}: nothing can be delegated from it",
            grant.id,
            grant.state.as_str(),
            grant
                .end_reason
                .as_deref()
                .map(|reason| format!(" ({reason})"))
                .unwrap_or_default()
        )))
    }
}

/// The actions a delegation asks for: all of the parent's when none are
/// named; never one the parent does not have.
fn delegated_actions(parent: &Grant, asked: &[Action]) -> Result<Vec<Action>, IssueError> {
    if asked.is_empty() {
        return Ok(parent.actions.clone());
    }
    let mut actions: Vec<Action> = Vec::with_capacity(asked.len());
    for action in asked {
        let text = action.as_str();
        if !parent.actions.contains(action) {
            return Err(IssueError::Forbidden(format!(
                "action {text:?} is not among parent grant {}'s actions [{}]: a delegation never \
                 widens them",
                parent.id,
                parent
                    .actions
                    .iter()
                    .map(Action::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if !actions.contains(action) {
            actions.push(action.clone());
        }
    }
    Ok(actions)
}
