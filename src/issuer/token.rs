//! What a caller attested by an OIDC token may do. A token is a bearer
//! secret that a CI platform hands one job, so it buys exactly one grant:
//!
//! - A request for a new grant claims the token for that grant in the
//!   store ([`ReplayGuard`](crate::store::ReplayGuard)) before the grant is
//!   recorded; a token claimed before is refused ("already used"), whichever
//!   replica it reaches, and nothing is written.
//! - Afterwards the token may mint, complete and delegate only under the
//!   grant it made (or its task), and read its own grants; nothing an admin,
//!   approver, reviewer, auditor or relying party does.
//! - The grant never outlives the token (`decide.rs` clamps its expiry),
//!   its task is the provider's `task` template's when it has one, and it
//!   cannot wait for approval: an approved grant's lifetime starts at
//!   approval, which the token's could not bound.

use super::{Caller, IssueError, Issuer, OidcEvidence};
use crate::grant::{Grant, GrantId, TaskId};
use crate::store::Claim;

// === impl Issuer ===

impl Issuer {
    /// Claims the caller's token, if it has one, for `grant`, which is
    /// about to be recorded.
    pub(super) async fn claim_token_for(
        &self,
        caller: &Caller,
        grant: &Grant,
    ) -> Result<(), IssueError> {
        let Some(token) = caller.by_token() else {
            return Ok(());
        };
        match self
            .store
            .claim_token(&replay_key(token), grant.id, token.expires_at)
            .await?
        {
            Claim::Claimed => Ok(()),
            Claim::HeldBy(_) => Err(IssueError::Unauthenticated(
                "OIDC token already used: a token makes one grant; ask the CI platform for a new \
                 token"
                    .to_owned(),
            )),
        }
    }

    /// Refuses a token caller that names another grant than the one its
    /// token made (or one delegated from it).
    pub(super) async fn check_token_grant(
        &self,
        caller: &Caller,
        grant: &Grant,
    ) -> Result<(), IssueError> {
        let Some(token) = caller.by_token() else {
            return Ok(());
        };
        let made = self.token_grant(token).await?;
        let delegated_from_it = grant
            .delegation
            .iter()
            .flat_map(|delegation| &delegation.chain)
            .any(|ancestor| ancestor.grant_id == made);
        if grant.id == made || delegated_from_it {
            return Ok(());
        }
        Err(IssueError::Forbidden(format!(
            "a caller attested by an OIDC token may use only the grant its token made \
             ({made}), not {}",
            grant.id
        )))
    }

    /// Refuses a token caller that names another task than its grant's.
    pub(super) async fn check_token_task(
        &self,
        caller: &Caller,
        task: &TaskId,
    ) -> Result<(), IssueError> {
        let Some(token) = caller.by_token() else {
            return Ok(());
        };
        let made = self.token_grant(token).await?;
        let grant = self
            .store
            .grant(made)
            .await?
            .ok_or_else(|| IssueError::NotFound(format!("no live grant {made}")))?;
        if grant.task_id == *task {
            return Ok(());
        }
        Err(IssueError::Forbidden(format!(
            "a caller attested by an OIDC token may end only the task of the grant its token \
             made ({}), not {task}",
            grant.task_id
        )))
    }

    /// The grant the token made.
    async fn token_grant(&self, token: &OidcEvidence) -> Result<GrantId, IssueError> {
        self.store
            .token_holder(&replay_key(token))
            .await?
            .ok_or_else(|| {
                IssueError::Forbidden(
                    "this OIDC token has made no grant yet: request a new grant with it first"
                        .to_owned(),
                )
            })
    }
}

/// Refuses a caller attested by a token what only a standing identity may
/// do: `what` completes "may not ...".
pub(super) fn refuse_token(caller: &Caller, what: &str) -> Result<(), IssueError> {
    match caller.by_token() {
        None => Ok(()),
        Some(_) => Err(IssueError::Forbidden(format!(
            "a caller attested by an OIDC token may not {what}"
        ))),
    }
}

/// The token's name in the replay guard: its provider and id, so two
/// issuers' `jti`s never collide.
fn replay_key(token: &OidcEvidence) -> String {
    format!("{}/{}", token.provider, token.token_id)
}
