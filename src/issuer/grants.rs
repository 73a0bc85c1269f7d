//! Reading grants: a caller's own, or any subject's for an admin; one
//! grant with its credentials for whoever may read it.

use super::request::{invalid, parse_grant_id};
use super::{Caller, IssueError, Issuer};
use crate::grant::{Credential, Grant, GrantState};
use crate::spiffe_id::SpiffeId;

/// Which grants to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantFilter {
    /// Whose; `None` means the caller's.
    pub subject: Option<String>,
    /// Only this task.
    pub task: Option<String>,
    /// Only this state.
    pub state: Option<GrantState>,
}

// === impl Issuer ===

impl Issuer {
    /// Lists unexpired grants.
    pub async fn list_grants(
        &self,
        caller: &Caller,
        filter: &GrantFilter,
    ) -> Result<Vec<Grant>, IssueError> {
        let subject = match &filter.subject {
            None => caller.spiffe_id.clone(),
            Some(text) => {
                SpiffeId::new(text).map_err(|error| invalid("subject", error.to_string()))?
            }
        };
        if subject != caller.spiffe_id && !self.is_admin(caller) {
            return Err(IssueError::Forbidden(format!(
                "{} may not list the grants of {subject}",
                caller.spiffe_id
            )));
        }
        let mut grants = self.store.grants_of(&subject).await?;
        grants.retain(|grant| {
            filter
                .task
                .as_deref()
                .is_none_or(|task| grant.task_id.as_str() == task)
                && filter.state.is_none_or(|state| grant.state == state)
        });
        Ok(grants)
    }

    /// One grant with its unexpired credentials.
    pub async fn get_grant(
        &self,
        caller: &Caller,
        grant_id: &str,
    ) -> Result<(Grant, Vec<Credential>), IssueError> {
        let grant_id = parse_grant_id(grant_id)?;
        let grant = self
            .store
            .grant(grant_id)
            .await?
            .ok_or_else(|| IssueError::NotFound(format!("no live grant {grant_id}")))?;
        if !self.may_read(caller, &grant) {
            return Err(IssueError::Forbidden(format!(
                "grant {grant_id} belongs to another subject"
            )));
        }
        let credentials = self.store.credentials(grant_id).await?;
        Ok((grant, credentials))
    }
}
