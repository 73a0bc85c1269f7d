//! Single use of bearer evidence: an OIDC token is claimed for the one
//! grant it makes, in the store every replica shares, so a replayed token
//! is refused whichever replica it reaches.
//!
//! A claim is kept until the token expires (it could not be presented
//! after that anyway), and is never released: a token whose first use
//! failed half-way stays used, and the job asks its platform for a new one.

use std::time::SystemTime;

use async_trait::async_trait;

use super::StoreError;
use crate::grant::GrantId;

/// What claiming a token found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The token was unused; it is now held by the grant given.
    Claimed,
    /// The token was claimed before, by this grant.
    HeldBy(GrantId),
}

/// Remembers which grant each token was used for.
#[async_trait]
pub trait ReplayGuard: Send + Sync {
    /// Claims `token` (a provider-qualified token id) for `grant` until
    /// `until`, in one atomic step: [`Claim::Claimed`] if nobody had, else
    /// the grant that holds it (nothing changes).
    async fn claim_token(
        &self,
        token: &str,
        grant: GrantId,
        until: SystemTime,
    ) -> Result<Claim, StoreError>;

    /// The grant `token` was claimed for, if any (and not expired).
    async fn token_holder(&self, token: &str) -> Result<Option<GrantId>, StoreError>;
}
