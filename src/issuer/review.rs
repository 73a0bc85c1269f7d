//! Break-glass reviews: opened with every break-glass grant, listed for
//! reviewers, and closed by someone other than the one who used it.

use super::events::record;
use super::request::{check_comment, invalid, parse_grant_id};
use super::{Caller, IssueError, Issuer};
use crate::audit::event::{Event, ReviewAcknowledged};
use crate::grant::{Grant, GrantId};
use crate::store::{AckOutcome, Review, ReviewAck, StoreError};

// === impl Issuer ===

impl Issuer {
    /// Break-glass reviews `caller` may see: those of entitlements it
    /// reviews (all, for admins). Open ones only, unless `all`.
    pub async fn reviews(&self, caller: &Caller, all: bool) -> Result<Vec<Review>, IssueError> {
        super::token::refuse_token(caller, "review break-glass uses")?;
        let admin = self.is_admin(caller);
        let catalogue = self.catalogue();
        let mut reviews = self.store.reviews().await?;
        reviews.retain(|review| {
            (all || review.ack.is_none())
                && (admin
                    || catalogue
                        .entitlement(&review.entitlement)
                        .is_some_and(|entitlement| entitlement.reviewer(&caller.spiffe_id)))
        });
        Ok(reviews)
    }

    /// Closes the review of a break-glass grant with a comment. Only the
    /// entitlement's reviewers may, and never the one who used it.
    pub async fn ack_review(
        &self,
        caller: &Caller,
        grant_id: &str,
        comment: &str,
    ) -> Result<Review, IssueError> {
        super::token::refuse_token(caller, "review break-glass uses")?;
        let id = parse_grant_id(grant_id)?;
        check_comment("comment", comment)?;
        if comment.trim().is_empty() {
            return Err(invalid(
                "comment",
                "is required: say what the review found".to_owned(),
            ));
        }
        let review = self
            .store
            .reviews()
            .await?
            .into_iter()
            .find(|review| review.grant_id == id)
            .ok_or_else(|| IssueError::NotFound(format!("no review of grant {id}")))?;
        // Reviews of an entitlement since removed from the catalogue fall
        // to the admins.
        let reviewer = match self.catalogue().entitlement(&review.entitlement) {
            Some(entitlement) => entitlement.reviewer(&caller.spiffe_id),
            None => self.is_admin(caller),
        };
        if !reviewer {
            return Err(IssueError::Forbidden(format!(
                "{} does not review break-glass uses of entitlement {:?}",
                caller.spiffe_id, review.entitlement
            )));
        }
        let catalogue = self.catalogue();
        if catalogue.principal_of(&review.subject) == catalogue.principal_of(&caller.spiffe_id) {
            return Err(IssueError::Forbidden(
                if review.subject == caller.spiffe_id {
                    format!(
                        "{} used break-glass on grant {id} and may not review it",
                        caller.spiffe_id
                    )
                } else {
                    format!(
                        "{} acts for {}, who used break-glass on grant {id} as {}, and may not review it",
                        caller.spiffe_id,
                        catalogue.principal_of(&caller.spiffe_id),
                        review.subject
                    )
                },
            ));
        }
        let ack = ReviewAck {
            by: caller.spiffe_id.clone(),
            at: self.clock.now(),
            comment: comment.to_owned(),
        };
        match self.store.ack_review(id, &ack).await? {
            AckOutcome::Acked(review) => {
                let records = vec![record(
                    caller,
                    ack.at,
                    Some(review.subject.to_string()),
                    Some(review.grant_id.to_string()),
                    Some(review.task_id.to_string()),
                    Event::ReviewAcknowledged(ReviewAcknowledged {
                        entitlement: review.entitlement.clone(),
                        comment: ack.comment.clone(),
                    }),
                )];
                self.audit_or_undo(records, || self.reopen_review(&review))
                    .await?;
                Ok(review)
            }
            AckOutcome::AlreadyAcked(review) => Err(IssueError::FailedPrecondition(format!(
                "review of grant {id} was already acknowledged by {}",
                review.ack.map(|ack| ack.by.to_string()).unwrap_or_default()
            ))),
            AckOutcome::NotFound => Err(IssueError::NotFound(format!("no review of grant {id}"))),
        }
    }

    pub(super) async fn open_review(&self, grant: &Grant) -> Result<(), IssueError> {
        tracing::warn!(
            grant = %grant.id,
            subject = %grant.subject,
            entitlement = %grant.entitlement,
            "break-glass grant issued; a review is open"
        );
        let opened = self
            .store
            .open_review(&Review {
                grant_id: grant.id,
                subject: grant.subject.clone(),
                entitlement: grant.entitlement.clone(),
                actions: grant.actions.clone(),
                task_id: grant.task_id.clone(),
                justification: grant.justification.clone(),
                ticket: grant.ticket.clone(),
                opened_at: grant.created_at,
                expires_at: grant.expires_at,
                ack: None,
            })
            .await;
        if let Err(error) = opened {
            // Written but not replicated in time: nothing is issued, so
            // take it back rather than leave a review of nothing.
            if matches!(error, StoreError::NotReplicated { .. }) {
                self.drop_review(grant.id).await;
            }
            return Err(error.into());
        }
        Ok(())
    }

    /// Best effort: a review of an issuance that failed is noise, not harm.
    pub(super) async fn drop_review(&self, id: GrantId) {
        if let Err(error) = self.store.drop_review(id).await {
            tracing::warn!(%error, grant = %id, "could not drop the review of a failed break-glass issuance");
        }
    }

    /// Puts back open a review whose acknowledgement the trail refused.
    async fn reopen_review(&self, review: &Review) -> Result<(), StoreError> {
        self.store.drop_review(review.grant_id).await?;
        self.store
            .open_review(&Review {
                ack: None,
                ..review.clone()
            })
            .await
    }
}
