//! The central audit trail: an append-only chain that every replica
//! appends to. [`MemoryAuditLog`] serves a single server; with Redis the
//! chain is a stream plus a head key, and an append is one script that
//! checks the head and appends, so replicas sharing Redis keep one chain.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::upkeep::{Expiring, ExpiryEffect, SignedCheckpoint, expiry_effects};
use super::{AuditEvent, Chained, Head};
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

/// Where the chain is kept, with what the trail keeps besides its events
/// (see [`upkeep`](super::upkeep)).
#[async_trait]
pub trait AuditLog: Send + Sync + std::fmt::Debug + 'static {
    /// The chain's head now.
    async fn head(&self) -> Result<Head, StoreError>;

    /// Appends `chained`, chained from `expected`, if the head is still
    /// `expected`: all of its events or none, together with their
    /// [`expiry_effects`].
    async fn append(&self, expected: &Head, chained: &Chained)
    -> Result<AppendOutcome, StoreError>;

    /// Up to `limit` events after sequence number `after`, in order.
    async fn read(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError>;

    /// Up to `limit` watched grants whose expiry is at or before `now`.
    async fn due(&self, now: SystemTime, limit: usize) -> Result<Vec<Expiring>, StoreError>;

    /// The checkpoint the trail starts after, if it was ever cut.
    async fn checkpoint(&self) -> Result<Option<SignedCheckpoint>, StoreError>;

    /// Cuts every event up to `checkpoint.seq` and keeps `checkpoint`;
    /// does nothing if the trail was already cut as far.
    async fn trim(&self, checkpoint: &SignedCheckpoint) -> Result<(), StoreError>;

    /// Takes or renews, for `ttl`, the right to look after the trail
    /// (record expiries, trim): with several replicas, one at a time.
    async fn lease(&self, holder: &str, ttl: Duration) -> Result<bool, StoreError>;
}

/// The chain in process memory, from a starting head (the genesis, or the
/// last event of a JSON-lines file a previous process wrote). Retention,
/// applied by the [`Auditor`](super::Auditor), bounds it.
#[derive(Debug)]
pub struct MemoryAuditLog {
    chain: Mutex<Chain>,
}

#[derive(Debug)]
struct Chain {
    events: VecDeque<AuditEvent>,
    /// The head before the first event kept.
    base: Head,
    checkpoint: Option<SignedCheckpoint>,
    /// Watched grants by id, and their ids by expiry.
    watched: HashMap<String, (u64, Expiring)>,
    by_expiry: BTreeSet<(u64, String)>,
}

impl Chain {
    fn head(&self) -> Head {
        self.events
            .back()
            .map(AuditEvent::head)
            .unwrap_or_else(|| self.base.clone())
    }

    fn apply(&mut self, effect: ExpiryEffect) {
        match effect {
            ExpiryEffect::Watch(expiring) => {
                let at = expiring.expires_ms();
                let grant = expiring.grant.clone();
                if let Some((old, _)) = self.watched.insert(grant.clone(), (at, expiring)) {
                    self.by_expiry.remove(&(old, grant.clone()));
                }
                self.by_expiry.insert((at, grant));
            }
            ExpiryEffect::Forget(grant) => {
                if let Some((at, _)) = self.watched.remove(&grant) {
                    self.by_expiry.remove(&(at, grant));
                }
            }
        }
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
        Self {
            chain: Mutex::new(Chain {
                events: VecDeque::new(),
                base: head,
                checkpoint: None,
                watched: HashMap::new(),
                by_expiry: BTreeSet::new(),
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
        chained: &Chained,
    ) -> Result<AppendOutcome, StoreError> {
        let mut chain = self.lock();
        let head = chain.head();
        if &head != expected {
            return Ok(AppendOutcome::Moved(head));
        }
        for event in &chained.events {
            for effect in expiry_effects(event) {
                chain.apply(effect);
            }
            chain.events.push_back(event.clone());
        }
        Ok(AppendOutcome::Appended(chain.head()))
    }

    async fn read(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let chain = self.lock();
        // Sequence numbers are consecutive from the base.
        let skip = after.saturating_sub(chain.base.seq);
        Ok(chain
            .events
            .iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn due(&self, now: SystemTime, limit: usize) -> Result<Vec<Expiring>, StoreError> {
        let now = millis(now);
        let chain = self.lock();
        Ok(chain
            .by_expiry
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .filter_map(|(_, grant)| chain.watched.get(grant).map(|(_, e)| e.clone()))
            .collect())
    }

    async fn checkpoint(&self) -> Result<Option<SignedCheckpoint>, StoreError> {
        Ok(self.lock().checkpoint.clone())
    }

    async fn trim(&self, checkpoint: &SignedCheckpoint) -> Result<(), StoreError> {
        let mut chain = self.lock();
        if chain
            .checkpoint
            .as_ref()
            .is_some_and(|current| current.seq >= checkpoint.seq)
        {
            return Ok(());
        }
        while chain
            .events
            .front()
            .is_some_and(|first| first.seq <= checkpoint.seq)
        {
            if let Some(cut) = chain.events.pop_front() {
                chain.base = cut.head();
            }
        }
        chain.checkpoint = Some(checkpoint.clone());
        Ok(())
    }

    async fn lease(&self, _holder: &str, _ttl: Duration) -> Result<bool, StoreError> {
        Ok(true)
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
        chained: &Chained,
    ) -> Result<AppendOutcome, StoreError> {
        self.store.audit_append(expected, chained).await
    }

    async fn read(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        self.store.audit_read(after, limit).await
    }

    async fn due(&self, now: SystemTime, limit: usize) -> Result<Vec<Expiring>, StoreError> {
        self.store.audit_due(millis(now), limit).await
    }

    async fn checkpoint(&self) -> Result<Option<SignedCheckpoint>, StoreError> {
        self.store.audit_checkpoint().await
    }

    async fn trim(&self, checkpoint: &SignedCheckpoint) -> Result<(), StoreError> {
        self.store.audit_trim(checkpoint).await
    }

    async fn lease(&self, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.store.audit_lease(holder, ttl).await
    }
}

/// Milliseconds since the Unix epoch.
fn millis(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}
