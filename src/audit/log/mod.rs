//! The central audit trail: an append-only chain that every replica
//! appends to, behind [`AuditLog`]. [`MemoryAuditLog`] (`memory.rs`) serves
//! a single server; with Redis ([`RedisAuditLog`], `redis.rs`) the chain is
//! a stream plus a head key, and an append is one script that checks the
//! head and appends, so replicas sharing Redis keep one chain.

mod memory;
mod redis;

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::upkeep::{Expiring, SignedCheckpoint};
use super::{AuditEvent, Chained, Head};

pub use self::memory::MemoryAuditLog;
pub use self::redis::RedisAuditLog;

/// Why the trail could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditLogError {
    /// The backend could not be reached, or did not answer in time; the
    /// append may or may not have happened. Callers may retry.
    #[error("audit trail store unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored event, head or checkpoint could not be decoded.
    #[error("corrupt record {key}: {message}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// An append was not acknowledged by enough replicas in time.
    #[error("audit append acknowledged by {acked} of {wanted} replicas")]
    NotReplicated {
        /// Replicas that acknowledged.
        acked: u64,
        /// Replicas required.
        wanted: u64,
    },
}

/// What an append found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The events were appended; the new head.
    Appended(Head),
    /// Another writer appended first; nothing was written. The current
    /// head, to chain from and try again.
    Moved(Head),
}

/// Where the chain is kept, with what the trail keeps besides its events
/// (see [`upkeep`](super::upkeep)).
#[async_trait]
pub trait AuditLog: Send + Sync + std::fmt::Debug + 'static {
    /// The chain's head now.
    async fn head(&self) -> Result<Head, AuditLogError>;

    /// Appends `chained`, chained from `expected`, if the head is still
    /// `expected`: all of its events or none, together with their
    /// [`expiry_effects`](super::upkeep::expiry_effects).
    async fn append(
        &self,
        expected: &Head,
        chained: &Chained,
    ) -> Result<AppendOutcome, AuditLogError>;

    /// Up to `limit` events after sequence number `after`, in order.
    async fn read(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, AuditLogError>;

    /// Up to `limit` watched grants whose expiry is at or before `now`.
    async fn due(&self, now: SystemTime, limit: usize) -> Result<Vec<Expiring>, AuditLogError>;

    /// The checkpoint the trail starts after, if it was ever cut.
    async fn checkpoint(&self) -> Result<Option<SignedCheckpoint>, AuditLogError>;

    /// Cuts every event up to `checkpoint.seq` and keeps `checkpoint`;
    /// does nothing if the trail was already cut as far.
    async fn trim(&self, checkpoint: &SignedCheckpoint) -> Result<(), AuditLogError>;

    /// Takes or renews, for `ttl`, the right to look after the trail
    /// (record expiries, trim): with several replicas, one at a time.
    async fn lease(&self, holder: &str, ttl: Duration) -> Result<bool, AuditLogError>;
}

/// Milliseconds since the Unix epoch.
fn millis(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}
