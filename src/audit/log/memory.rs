//! [`MemoryAuditLog`]: the chain in process memory, for a single server.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::{AppendOutcome, AuditLog, AuditLogError, millis};
use crate::audit::upkeep::{Expiring, ExpiryEffect, SignedCheckpoint, expiry_effects};
use crate::audit::{AuditEvent, Chained, Head};

/// The chain in process memory, from a starting head (the genesis, or the
/// last event of a JSON-lines file a previous process wrote). Retention,
/// applied by the [`Auditor`](crate::audit::Auditor), bounds it.
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
    async fn head(&self) -> Result<Head, AuditLogError> {
        Ok(self.lock().head())
    }

    async fn append(
        &self,
        expected: &Head,
        chained: &Chained,
    ) -> Result<AppendOutcome, AuditLogError> {
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

    async fn read(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, AuditLogError> {
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

    async fn due(&self, now: SystemTime, limit: usize) -> Result<Vec<Expiring>, AuditLogError> {
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

    async fn checkpoint(&self) -> Result<Option<SignedCheckpoint>, AuditLogError> {
        Ok(self.lock().checkpoint.clone())
    }

    async fn trim(&self, checkpoint: &SignedCheckpoint) -> Result<(), AuditLogError> {
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

    async fn lease(&self, _holder: &str, _ttl: Duration) -> Result<bool, AuditLogError> {
        Ok(true)
    }
}

impl Default for MemoryAuditLog {
    fn default() -> Self {
        Self::new()
    }
}
