//! The central audit trail: an append-only chain that every replica
//! appends to. [`MemoryAuditLog`] serves a single server; with Redis the
//! chain is a stream plus a head key, and an append is one script that
//! checks the head and appends, so replicas sharing Redis keep one chain.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{AuditEvent, Head};
use crate::store::{RedisStore, StoreError};

/// What an append found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The events were appended; the new head.
    Appended(Head),
    /// Another writer appended first; nothing was written. The current
    /// head, to chain from and try again.
    Moved(Head),
}

/// Where the chain is kept.
#[async_trait]
pub trait AuditLog: Send + Sync + std::fmt::Debug + 'static {
    /// The chain's head now.
    async fn head(&self) -> Result<Head, StoreError>;

    /// Appends `events`, already chained from `expected`, if the head is
    /// still `expected`: all of them or none.
    async fn append(
        &self,
        expected: &Head,
        events: &[AuditEvent],
    ) -> Result<AppendOutcome, StoreError>;

    /// Up to `limit` events after sequence number `after`, in order.
    async fn read(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError>;
}

/// The chain in process memory, from a starting head (the genesis, or the
/// last event of a JSON-lines file a previous process wrote).
#[derive(Debug)]
pub struct MemoryAuditLog {
    events: Mutex<Vec<AuditEvent>>,
    base: Head,
}

/// The chain in Redis, through a [`RedisStore`]'s connection.
#[derive(Debug, Clone)]
pub struct RedisAuditLog {
    store: Arc<RedisStore>,
}

// === impl MemoryAuditLog ===

impl MemoryAuditLog {
    /// An empty chain.
    pub fn new() -> Self {
        Self::starting_at(Head::genesis())
    }

    /// A chain that continues after `head`.
    pub fn starting_at(head: Head) -> Self {
        Self {
            events: Mutex::default(),
            base: head,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<AuditEvent>> {
        self.events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl AuditLog for MemoryAuditLog {
    async fn head(&self) -> Result<Head, StoreError> {
        Ok(self
            .lock()
            .last()
            .map(AuditEvent::head)
            .unwrap_or_else(|| self.base.clone()))
    }

    async fn append(
        &self,
        expected: &Head,
        events: &[AuditEvent],
    ) -> Result<AppendOutcome, StoreError> {
        let mut chain = self.lock();
        let head = chain
            .last()
            .map(AuditEvent::head)
            .unwrap_or_else(|| self.base.clone());
        if &head != expected {
            return Ok(AppendOutcome::Moved(head));
        }
        chain.extend_from_slice(events);
        Ok(AppendOutcome::Appended(
            chain.last().map(AuditEvent::head).unwrap_or(head),
        ))
    }

    async fn read(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        Ok(self
            .lock()
            .iter()
            .filter(|event| event.seq > after)
            .take(limit)
            .cloned()
            .collect())
    }
}

impl Default for MemoryAuditLog {
    fn default() -> Self {
        Self::new()
    }
}

// === impl RedisAuditLog ===

impl RedisAuditLog {
    /// The chain kept by `store`'s Redis.
    pub fn new(store: Arc<RedisStore>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl AuditLog for RedisAuditLog {
    async fn head(&self) -> Result<Head, StoreError> {
        self.store.audit_head().await
    }

    async fn append(
        &self,
        expected: &Head,
        events: &[AuditEvent],
    ) -> Result<AppendOutcome, StoreError> {
        self.store.audit_append(expected, events).await
    }

    async fn read(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        self.store.audit_read(after, limit).await
    }
}
