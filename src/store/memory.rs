//! The in-memory grant store: the embedded default for a single server.
//! Its epoch is random per process, since a restart loses every grant.
//! Expired grants are dropped as new ones arrive, so memory stays bounded
//! by the number of live grants. It keeps the attestation identity
//! registry too (`memory/identities.rs`).

mod identities;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{
    AckOutcome, AddOutcome, Claim, CredentialRevocation, DEFAULT_MAX_GRANTS_PER_SUBJECT, EndTarget,
    Ending, GrantStore, Liveness, LivenessQuery, REVIEW_RETENTION, RelyingParty, ReplayGuard,
    Review, ReviewAck, RevocationEvent, RevocationFeed, StoreError, judge,
};
use crate::clock::{Clock, SystemClock};
use crate::grant::{Credential, CredentialId, Epoch, Grant, GrantId, GrantState, TaskId};
use crate::spiffe_id::SpiffeId;

/// A [`GrantStore`] in process memory.
#[derive(Debug)]
pub struct MemoryStore {
    clock: Arc<dyn Clock>,
    epoch: Epoch,
    /// Most unexpired grants one subject may hold.
    grant_cap: usize,
    state: Mutex<State>,
    stream: Arc<Stream>,
    /// Claimed tokens: the grant each was used for, until it expires.
    tokens: Mutex<HashMap<String, (GrantId, SystemTime)>>,
    identities: Mutex<identities::Registry>,
}

/// The revocation stream: events by sequence number, kept until `until`.
#[derive(Debug, Default)]
struct Stream {
    events: Mutex<VecDeque<(u64, RevocationEvent, SystemTime)>>,
    next: std::sync::atomic::AtomicU64,
    appended: Notify,
}

/// A reader of the in-memory stream.
struct Feed {
    stream: Arc<Stream>,
}

#[derive(Debug, Default)]
struct State {
    grants: HashMap<GrantId, Entry>,
    /// Unexpired grants by subject, for the cap.
    by_subject: HashMap<SpiffeId, usize>,
    /// Grants by expiry, soonest first, for pruning.
    expiries: BinaryHeap<Reverse<(SystemTime, GrantId)>>,
    /// Revoked tasks: reason, when, and until when the entry is kept.
    revoked_tasks: HashMap<TaskId, (String, SystemTime, SystemTime)>,
    /// Break-glass reviews by grant.
    reviews: HashMap<GrantId, Review>,
    /// Relying parties by name, each kept until its `until`.
    parties: HashMap<String, (RelyingParty, SystemTime)>,
    /// Who applied each revocation event (by cursor), whether all had, and
    /// until when the entry is kept.
    applied: HashMap<String, Applied>,
}

#[derive(Debug)]
struct Applied {
    by: Vec<(String, SystemTime)>,
    all: bool,
    until: SystemTime,
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
            epoch: Epoch::generate(),
            grant_cap: DEFAULT_MAX_GRANTS_PER_SUBJECT,
            state: Mutex::default(),
            stream: Arc::default(),
            tokens: Mutex::default(),
            identities: Mutex::default(),
        }
    }

    /// Caps the unexpired grants one subject may hold (default
    /// [`DEFAULT_MAX_GRANTS_PER_SUBJECT`]).
    pub fn with_grant_cap(mut self, cap: usize) -> Self {
        self.grant_cap = cap;
        self
    }

    /// How many grants are held, live or not yet pruned.
    pub fn grant_count(&self) -> usize {
        self.lock().grants.len()
    }

    /// Records a new grant with its credentials, under the current epoch.
    fn create(&self, grant: &Grant, credentials: Vec<Credential>) -> Result<(), StoreError> {
        if grant.epoch != self.epoch {
            return Err(StoreError::EpochChanged(self.epoch.clone()));
        }
        let now = self.clock.now();
        let mut state = self.lock();
        state.prune(now);
        if state.grants.contains_key(&grant.id) {
            return Err(StoreError::Conflict(grant.id));
        }
        let held = state.by_subject.entry(grant.subject.clone()).or_insert(0);
        if *held >= self.grant_cap {
            return Err(StoreError::SubjectFull {
                subject: grant.subject.clone(),
                cap: self.grant_cap,
            });
        }
        *held += 1;
        state.expiries.push(Reverse((grant.expires_at, grant.id)));
        state.grants.insert(
            grant.id,
            Entry {
                grant: grant.clone(),
                credentials,
            },
        );
        Ok(())
    }

    /// The record of who applied the event at `cursor`, made if missing;
    /// drops records past their time first.
    fn applied_entry<'a>(
        &self,
        state: &'a mut State,
        cursor: &str,
        keep_for: Duration,
    ) -> &'a mut Applied {
        let now = self.clock.now();
        state.applied.retain(|_, applied| applied.until > now);
        state
            .applied
            .entry(cursor.to_owned())
            .or_insert_with(|| Applied {
                by: Vec::new(),
                all: false,
                until: now + keep_for,
            })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation is a single insert, remove or field update, so a
        // panic elsewhere cannot leave a half-written entry behind.
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
    fn identities(&self) -> Option<&dyn super::IdentityStore> {
        Some(self)
    }

    async fn epoch(&self) -> Result<Epoch, StoreError> {
        Ok(self.epoch.clone())
    }

    async fn record_issuance(
        &self,
        grant: &Grant,
        credential: &Credential,
    ) -> Result<(), StoreError> {
        self.create(grant, vec![credential.clone()])
    }

    async fn record_grant(&self, grant: &Grant) -> Result<(), StoreError> {
        self.create(grant, Vec::new())
    }

    async fn update_pending(&self, current: &Grant, next: &Grant) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let mut state = self.lock();
        let Some(entry) = state.grants.get_mut(&current.id) else {
            return Ok(false);
        };
        if &entry.grant != current
            || entry.grant.expires_at <= now
            || (current.state != GrantState::Pending && next.state != GrantState::Pending)
        {
            return Ok(false);
        }
        entry.grant = next.clone();
        state.expiries.push(Reverse((next.expires_at, next.id)));
        Ok(true)
    }

    async fn discard_grant(&self, id: GrantId) -> Result<(), StoreError> {
        self.lock().remove(id);
        Ok(())
    }

    async fn add_credential(
        &self,
        grant: &Grant,
        credential: &Credential,
    ) -> Result<AddOutcome, StoreError> {
        if grant.epoch != self.epoch {
            return Err(StoreError::EpochChanged(self.epoch.clone()));
        }
        let now = self.clock.now();
        let mut state = self.lock();
        let Some(entry) = state
            .grants
            .get_mut(&grant.id)
            .filter(|entry| entry.grant.expires_at > now)
        else {
            return Ok(AddOutcome::NotFound);
        };
        if entry.grant.state != GrantState::Active {
            return Ok(AddOutcome::NotActive);
        }
        if entry.credentials.len() >= super::MAX_CREDENTIALS_PER_GRANT {
            return Ok(AddOutcome::Full);
        }
        entry.credentials.push(credential.clone());
        Ok(AddOutcome::Added)
    }

    async fn pending_grants(&self) -> Result<Vec<Grant>, StoreError> {
        let now = self.clock.now();
        let mut pending: Vec<Grant> = self
            .lock()
            .grants
            .values()
            .filter(|entry| {
                entry.grant.state == GrantState::Pending && entry.grant.expires_at > now
            })
            .map(|entry| entry.grant.clone())
            .collect();
        pending.sort_by_key(|grant| (grant.created_at, grant.id));
        Ok(pending)
    }

    async fn open_review(&self, review: &Review) -> Result<(), StoreError> {
        self.lock().reviews.insert(review.grant_id, review.clone());
        Ok(())
    }

    async fn reviews(&self) -> Result<Vec<Review>, StoreError> {
        let now = self.clock.now();
        let mut state = self.lock();
        state.reviews.retain(|_, review| {
            review
                .ack
                .as_ref()
                .is_none_or(|ack| ack.at + REVIEW_RETENTION > now)
        });
        let mut reviews: Vec<Review> = state.reviews.values().cloned().collect();
        reviews.sort_by_key(|review| (review.opened_at, review.grant_id));
        Ok(reviews)
    }

    async fn ack_review(&self, id: GrantId, ack: &ReviewAck) -> Result<AckOutcome, StoreError> {
        let mut state = self.lock();
        Ok(match state.reviews.get_mut(&id) {
            None => AckOutcome::NotFound,
            Some(review) if review.ack.is_some() => AckOutcome::AlreadyAcked(review.clone()),
            Some(review) => {
                review.ack = Some(ack.clone());
                AckOutcome::Acked(review.clone())
            }
        })
    }

    async fn drop_review(&self, id: GrantId) -> Result<(), StoreError> {
        self.lock().reviews.remove(&id);
        Ok(())
    }

    async fn grant(&self, id: GrantId) -> Result<Option<Grant>, StoreError> {
        let now = self.clock.now();
        Ok(self
            .lock()
            .grants
            .get(&id)
            .filter(|entry| entry.grant.expires_at > now)
            .map(|entry| entry.grant.clone()))
    }

    async fn credentials(&self, id: GrantId) -> Result<Vec<Credential>, StoreError> {
        let now = self.clock.now();
        Ok(self
            .lock()
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
        let mut grants: Vec<Grant> = self
            .lock()
            .grants
            .values()
            .filter(|entry| &entry.grant.subject == subject && entry.grant.expires_at > now)
            .map(|entry| entry.grant.clone())
            .collect();
        grants.sort_by_key(|grant| grant.created_at);
        Ok(grants)
    }

    async fn end(
        &self,
        target: EndTarget<'_>,
        ending: &Ending,
    ) -> Result<Vec<GrantId>, StoreError> {
        let now = self.clock.now();
        let mut state = self.lock();
        let mut ended = Vec::new();
        for entry in state.grants.values_mut() {
            let grant = &mut entry.grant;
            let selected = match target {
                EndTarget::Grant(id) => grant.id == id,
                EndTarget::Task { subject, task } => {
                    &grant.subject == subject && &grant.task_id == task
                }
                EndTarget::Subject(subject) => &grant.subject == subject,
            };
            if selected
                && matches!(grant.state, GrantState::Active | GrantState::Pending)
                && grant.expires_at > now
            {
                grant.state = ending.state;
                grant.end_reason = Some(ending.reason.clone());
                ended.push(grant.id);
            }
        }
        ended.sort();
        Ok(ended)
    }

    async fn revoke_credential(
        &self,
        id: &CredentialId,
        _ending: &Ending,
    ) -> Result<CredentialRevocation, StoreError> {
        let now = self.clock.now();
        let Some(grant_id) = id.grant_id() else {
            return Ok(CredentialRevocation::NotFound);
        };
        let mut state = self.lock();
        let credential = state
            .grants
            .get_mut(&grant_id)
            .and_then(|entry| entry.credentials.iter_mut().find(|c| &c.id == id))
            .filter(|credential| credential.expires_at > now);
        Ok(match credential {
            None => CredentialRevocation::NotFound,
            Some(credential) if credential.revoked => CredentialRevocation::AlreadyRevoked,
            Some(credential) => {
                credential.revoked = true;
                CredentialRevocation::Revoked
            }
        })
    }

    async fn revoke_task(
        &self,
        task: &TaskId,
        ending: &Ending,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        let until = self.clock.now() + keep_for;
        self.lock()
            .revoked_tasks
            .insert(task.clone(), (ending.reason.clone(), ending.at, until));
        Ok(())
    }

    async fn liveness(&self, query: LivenessQuery<'_>) -> Result<Liveness, StoreError> {
        if query.epoch != &self.epoch {
            return Ok(Liveness::EpochReset);
        }
        let now = self.clock.now();
        let (grant, credential, task_revocation) = {
            let state = self.lock();
            let Some(grant_id) = query.credential.grant_id() else {
                return Ok(Liveness::NotFound);
            };
            let Some(entry) = state
                .grants
                .get(&grant_id)
                .filter(|entry| entry.grant.expires_at > now)
            else {
                return Ok(Liveness::NotFound);
            };
            let Some(credential) = entry
                .credentials
                .iter()
                .find(|credential| &credential.id == query.credential)
            else {
                return Ok(Liveness::NotFound);
            };
            let task_revocation = state
                .revoked_tasks
                .get(query.task)
                .filter(|(_, _, until)| *until > now)
                .map(|(reason, at, _)| (*at, reason.clone()));
            (entry.grant.clone(), credential.clone(), task_revocation)
        };
        judge(self, grant, &credential, task_revocation).await
    }

    async fn publish(
        &self,
        event: &RevocationEvent,
        keep_for: Duration,
    ) -> Result<String, StoreError> {
        let now = self.clock.now();
        let sequence = {
            let mut events = self
                .stream
                .events
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // Numbered under the lock, so readers never see a later event
            // before an earlier one.
            let sequence = self
                .stream
                .next
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1;
            while events.front().is_some_and(|(_, _, until)| *until <= now) {
                events.pop_front();
            }
            events.push_back((sequence, event.clone(), now + keep_for));
            sequence
        };
        self.stream.appended.notify_waiters();
        Ok(sequence.to_string())
    }

    async fn revocation_feed(&self) -> Result<Box<dyn RevocationFeed>, StoreError> {
        Ok(Box::new(Feed {
            stream: self.stream.clone(),
        }))
    }

    async fn register_relying_party(
        &self,
        party: &RelyingParty,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        let until = party.last_seen + keep_for;
        self.lock()
            .parties
            .insert(party.name.clone(), (party.clone(), until));
        Ok(())
    }

    async fn relying_parties(&self) -> Result<Vec<RelyingParty>, StoreError> {
        let now = self.clock.now();
        let mut state = self.lock();
        state.parties.retain(|_, (_, until)| *until > now);
        let mut parties: Vec<RelyingParty> = state
            .parties
            .values()
            .map(|(party, _)| party.clone())
            .collect();
        parties.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(parties)
    }

    async fn mark_applied(
        &self,
        cursor: &str,
        party: &str,
        at: SystemTime,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        let entry = self.applied_entry(&mut state, cursor, keep_for);
        if !entry.by.iter().any(|(name, _)| name == party) {
            entry.by.push((party.to_owned(), at));
        }
        Ok(())
    }

    async fn applied(&self, cursor: &str) -> Result<Vec<(String, SystemTime)>, StoreError> {
        let now = self.clock.now();
        Ok(self
            .lock()
            .applied
            .get(cursor)
            .filter(|applied| applied.until > now)
            .map(|applied| applied.by.clone())
            .unwrap_or_default())
    }

    async fn mark_all_applied(&self, cursor: &str, keep_for: Duration) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let entry = self.applied_entry(&mut state, cursor, keep_for);
        Ok(!std::mem::replace(&mut entry.all, true))
    }
}

#[async_trait]
impl RevocationFeed for Feed {
    async fn read(
        &mut self,
        cursor: &str,
        wait: Duration,
    ) -> Result<Vec<(String, RevocationEvent)>, StoreError> {
        let mut after: u64 = cursor.parse().unwrap_or(0);
        // A cursor from before a restart (this store numbers from 1 again)
        // is ahead of everything: replay from the start instead of
        // skipping what is new.
        if after > self.stream.next.load(std::sync::atomic::Ordering::SeqCst) {
            after = 0;
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register for a wake-up before looking, so an append between
            // the look and the wait is not missed.
            let appended = self.stream.appended.notified();
            let events: Vec<(String, RevocationEvent)> = self
                .stream
                .events
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .iter()
                .filter(|(sequence, _, _)| *sequence > after)
                .map(|(sequence, event, _)| (sequence.to_string(), event.clone()))
                .collect();
            if !events.is_empty() {
                return Ok(events);
            }
            if tokio::time::timeout_at(deadline, appended).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }
}

#[async_trait]
impl ReplayGuard for MemoryStore {
    async fn claim_token(
        &self,
        token: &str,
        grant: GrantId,
        until: SystemTime,
    ) -> Result<Claim, StoreError> {
        let now = self.clock.now();
        let mut tokens = self
            .tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tokens.retain(|_, (_, expires)| *expires > now);
        if let Some((holder, _)) = tokens.get(token) {
            return Ok(Claim::HeldBy(*holder));
        }
        tokens.insert(token.to_owned(), (grant, until));
        Ok(Claim::Claimed)
    }

    async fn token_holder(&self, token: &str) -> Result<Option<GrantId>, StoreError> {
        let now = self.clock.now();
        let tokens = self
            .tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(tokens
            .get(token)
            .filter(|(_, expires)| *expires > now)
            .map(|(holder, _)| *holder))
    }
}

// === impl State ===

impl State {
    fn prune(&mut self, now: SystemTime) {
        while let Some(Reverse((expires_at, _))) = self.expiries.peek() {
            if *expires_at > now {
                break;
            }
            // A grant whose expiry moved (approval) has a later entry too.
            if let Some(Reverse((_, id))) = self.expiries.pop()
                && self
                    .grants
                    .get(&id)
                    .is_some_and(|entry| entry.grant.expires_at <= now)
            {
                self.remove(id);
            }
        }
        self.revoked_tasks.retain(|_, (_, _, until)| *until > now);
    }

    /// Forgets grant `id`, and counts it off its subject's grants.
    fn remove(&mut self, id: GrantId) {
        let Some(entry) = self.grants.remove(&id) else {
            return;
        };
        if let Some(held) = self.by_subject.get_mut(&entry.grant.subject) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                self.by_subject.remove(&entry.grant.subject);
            }
        }
    }
}
