//! Where grants and the credentials minted under them are recorded.
//!
//! [`GrantStore`] is the seam between the issuer and its system of record.
//! [`MemoryStore`] is the embedded default. Every backend records a grant
//! and its credential in one atomic step, or not at all.

mod memory;

use async_trait::async_trait;

pub use memory::MemoryStore;

use crate::grant::{Credential, Grant, GrantId};
use crate::spiffe_id::SpiffeId;

/// Errors returned by a [`GrantStore`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached; nothing was written. Callers may
    /// retry.
    #[error("grant store unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A grant with this id already exists; nothing was written.
    #[error("grant {0} already exists")]
    Conflict(GrantId),
}

/// The system of record for live grants.
#[async_trait]
pub trait GrantStore: Send + Sync + 'static {
    /// Records a new grant together with the first credential minted under
    /// it: both are written, or neither is.
    async fn record_issuance(
        &self,
        grant: &Grant,
        credential: &Credential,
    ) -> Result<(), StoreError>;

    /// The grant with `id`, unless it is unknown or has expired.
    async fn grant(&self, id: GrantId) -> Result<Option<Grant>, StoreError>;

    /// The credentials minted under grant `id` that have not expired.
    async fn credentials(&self, id: GrantId) -> Result<Vec<Credential>, StoreError>;

    /// The live grants of `subject`, oldest first.
    async fn grants_of(&self, subject: &SpiffeId) -> Result<Vec<Grant>, StoreError>;
}
