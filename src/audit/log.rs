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

/// Most events [`MemoryAuditLog`] keeps; older ones are dropped from
/// memory (a JSON-lines file, if configured, keeps them all).
pub const MEMORY_AUDIT_EVENTS: usize = 100_000;

/// The chain in process memory, from a starting head (the genesis, or the
/// last event of a JSON-lines file a previous process wrote). It keeps the
/// last [`MEMORY_AUDIT_EVENTS`] events.
#[derive(Debug)]
pub struct MemoryAuditLog {
    chain: Mutex<Chain>,
}

#[derive(Debug)]
struct Chain {
    events: std::collections::VecDeque<AuditEvent>,
    /// The head before the first event kept.
    base: Head,
    /// Most events kept.
    capacity: usize,
}

impl Chain {
    fn head(&self) -> Head {
        self.events
            .back()
            .map(AuditEvent::head)
            .unwrap_or_else(|| self.base.clone())
    }
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
        Self::with_capacity(head, MEMORY_AUDIT_EVENTS)
    }

    /// A chain that continues after `head` and keeps the last `capacity`
    /// events in memory.
    pub fn with_capacity(head: Head, capacity: usize) -> Self {
        Self {
            chain: Mutex::new(Chain {
                events: std::collections::VecDeque::new(),
                base: head,
                capacity: capacity.max(1),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Chain> {
        self.chain
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl AuditLog for MemoryAuditLog {
    async fn head(&self) -> Result<Head, StoreError> {
        Ok(self.lock().head())
    }

    async fn append(
        &self,
        expected: &Head,
        events: &[AuditEvent],
    ) -> Result<AppendOutcome, StoreError> {
        let mut chain = self.lock();
        let head = chain.head();
        if &head != expected {
            return Ok(AppendOutcome::Moved(head));
        }
        chain.events.extend(events.iter().cloned());
        while chain.events.len() > chain.capacity {
            if let Some(dropped) = chain.events.pop_front() {
                chain.base = dropped.head();
            }
        }
        Ok(AppendOutcome::Appended(chain.head()))
    }

    async fn read(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        Ok(self
            .lock()
            .events
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

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::audit::{EventKind, Record};

    #[tokio::test]
    async fn memory_keeps_the_last_events_and_its_head() {
        let log = MemoryAuditLog::with_capacity(Head::genesis(), 3);
        let mut head = Head::genesis();
        for n in 0..5 {
            let event = AuditEvent::seal(
                Record {
                    kind: EventKind::Decision,
                    at: SystemTime::UNIX_EPOCH,
                    actor: "system".to_owned(),
                    subject: None,
                    grant: None,
                    task: None,
                    details: serde_json::json!({ "n": n }),
                },
                &head,
            );
            assert_eq!(
                log.append(&head, std::slice::from_ref(&event))
                    .await
                    .unwrap(),
                AppendOutcome::Appended(event.head())
            );
            head = event.head();
        }
        assert_eq!(log.head().await.unwrap(), head);
        let kept = log.read(0, 10).await.unwrap();
        assert_eq!(kept.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert!(matches!(
            log.append(&Head::genesis(), &[]).await.unwrap(),
            AppendOutcome::Moved(moved) if moved == head
        ));
    }
}
