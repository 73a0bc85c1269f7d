//! The in-memory grant store: the embedded default for a single server.
//! Expired grants are dropped as new ones arrive, so memory stays bounded
//! by the number of live grants.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;

use super::{GrantStore, StoreError};
use crate::clock::{Clock, SystemClock};
use crate::grant::{Credential, Grant, GrantId};
use crate::spiffe_id::SpiffeId;

/// A [`GrantStore`] in process memory.
#[derive(Debug)]
pub struct MemoryStore {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    grants: HashMap<GrantId, Entry>,
    /// Grants by expiry, soonest first, for pruning.
    expiries: BinaryHeap<Reverse<(SystemTime, GrantId)>>,
}

#[derive(Debug)]
struct Entry {
    grant: Grant,
    credentials: Vec<Credential>,
}

// === impl MemoryStore ===

impl MemoryStore {
    /// An empty store that reads time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            state: Mutex::default(),
        }
    }

    /// How many grants are held, live or not yet pruned.
    pub fn grant_count(&self) -> usize {
        self.lock().grants.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-written entry:
        // every mutation is a single insert or remove.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

#[async_trait]
impl GrantStore for MemoryStore {
    async fn record_issuance(
        &self,
        grant: &Grant,
        credential: &Credential,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut state = self.lock();
        state.prune(now);
        if state.grants.contains_key(&grant.id) {
            return Err(StoreError::Conflict(grant.id));
        }
        state.expiries.push(Reverse((grant.expires_at, grant.id)));
        state.grants.insert(
            grant.id,
            Entry {
                grant: grant.clone(),
                credentials: vec![credential.clone()],
            },
        );
        Ok(())
    }

    async fn grant(&self, id: GrantId) -> Result<Option<Grant>, StoreError> {
        let now = self.clock.now();
        let state = self.lock();
        Ok(state
            .grants
            .get(&id)
            .filter(|entry| entry.grant.expires_at > now)
            .map(|entry| entry.grant.clone()))
    }

    async fn credentials(&self, id: GrantId) -> Result<Vec<Credential>, StoreError> {
        let now = self.clock.now();
        let state = self.lock();
        Ok(state
            .grants
            .get(&id)
            .map(|entry| {
                entry
                    .credentials
                    .iter()
                    .filter(|credential| credential.expires_at > now)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn grants_of(&self, subject: &SpiffeId) -> Result<Vec<Grant>, StoreError> {
        let now = self.clock.now();
        let state = self.lock();
        let mut grants: Vec<Grant> = state
            .grants
            .values()
            .filter(|entry| &entry.grant.subject == subject && entry.grant.expires_at > now)
            .map(|entry| entry.grant.clone())
            .collect();
        grants.sort_by_key(|grant| grant.created_at);
        Ok(grants)
    }
}

// === impl State ===

impl State {
    fn prune(&mut self, now: SystemTime) {
        while let Some(Reverse((expires_at, _))) = self.expiries.peek() {
            if *expires_at > now {
                break;
            }
            if let Some(Reverse((_, id))) = self.expiries.pop() {
                self.grants.remove(&id);
            }
        }
    }
}
