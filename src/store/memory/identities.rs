//! The in-memory [`IdentityStore`]: the attestation identity registry and
//! join tokens of a [`MemoryStore`], pruned of what has expired every few
//! seconds (and before listing), so the check made at every attestation
//! stays a lookup. What lingers until then is past its time: a record or
//! a revocation by SPIFFE ID outlives every identity it concerns, and a
//! token is judged by its own expiry when taken.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::MemoryStore;
use crate::spiffe_id::SpiffeId;
use crate::store::StoreError;
use crate::store::identities::{
    IdentityCheck, IdentityRecord, IdentityRevocation, IdentityStore, IssuedVia, JoinToken,
    PresentedIdentity, SerialRevocation,
};

/// What a [`MemoryStore`] keeps about attestation identities.
#[derive(Debug, Default)]
pub(super) struct Registry {
    /// Records by serial, each kept until its time.
    records: HashMap<String, (IdentityRecord, SystemTime)>,
    /// Revocations by SPIFFE ID, each kept until its time.
    revoked_ids: HashMap<SpiffeId, (IdentityRevocation, SystemTime)>,
    /// Join tokens by hash.
    tokens: HashMap<String, JoinToken>,
    /// When expired entries were last dropped.
    pruned_at: Option<SystemTime>,
}

/// How often expired entries are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

impl Registry {
    fn prune(&mut self, now: SystemTime) {
        self.records.retain(|_, (_, until)| *until > now);
        self.revoked_ids.retain(|_, (_, until)| *until > now);
        self.tokens.retain(|_, token| token.expires_at > now);
        self.pruned_at = Some(now);
    }

    fn prune_now_and_then(&mut self, now: SystemTime) {
        if self
            .pruned_at
            .is_none_or(|at| now >= at + PRUNE_EVERY || now < at)
        {
            self.prune(now);
        }
    }

    /// The revocation that covers `record`, by serial first.
    fn revocation_of(&self, record: &IdentityRecord) -> Option<IdentityRevocation> {
        if let Some(revoked) = &record.revoked {
            return Some(revoked.clone());
        }
        let (revocation, _) = self.revoked_ids.get(record.spiffe_id.as_ref()?)?;
        record
            .issued_before(revocation.at)
            .then(|| revocation.clone())
    }
}

impl MemoryStore {
    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        // Every mutation is a single insert, remove or field update.
        let mut registry = self
            .identities
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        registry.prune_now_and_then(self.clock.now());
        registry
    }
}

#[async_trait]
impl IdentityStore for MemoryStore {
    async fn check_identity(
        &self,
        presented: &PresentedIdentity<'_>,
        keep_for: Duration,
    ) -> Result<IdentityCheck, StoreError> {
        let mut registry = self.registry();
        if let Some((record, _)) = registry.records.get(presented.serial) {
            return Ok(match registry.revocation_of(record) {
                Some(revocation) => IdentityCheck::Revoked(revocation),
                None => IdentityCheck::Good,
            });
        }
        let record = IdentityRecord {
            serial: presented.serial.to_owned(),
            spiffe_id: Some(presented.spiffe_id.clone()),
            not_before: presented.not_before,
            not_after: presented.not_after,
            via: IssuedVia::Offline,
            issued_at: presented.issued_at,
            revoked: None,
        };
        // Registered revoked or not, so the list shows it was presented.
        let check = match registry.revocation_of(&record) {
            Some(revocation) => IdentityCheck::Revoked(revocation),
            None => IdentityCheck::Good,
        };
        registry.records.insert(
            presented.serial.to_owned(),
            (record, presented.not_after + keep_for),
        );
        Ok(check)
    }

    async fn record_identity(
        &self,
        record: &IdentityRecord,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        self.registry().records.insert(
            record.serial.clone(),
            (record.clone(), record.not_after + keep_for),
        );
        Ok(())
    }

    async fn discard_identity(&self, serial: &str) -> Result<(), StoreError> {
        self.registry().records.remove(serial);
        Ok(())
    }

    async fn revoke_identity_serial(
        &self,
        serial: &str,
        revocation: &IdentityRevocation,
        keep_for: Duration,
    ) -> Result<SerialRevocation, StoreError> {
        let mut registry = self.registry();
        if let Some((record, _)) = registry.records.get_mut(serial) {
            if record.revoked.is_some() {
                return Ok(SerialRevocation::AlreadyRevoked(record.spiffe_id.clone()));
            }
            record.revoked = Some(revocation.clone());
            return Ok(match &record.spiffe_id {
                Some(id) => SerialRevocation::Revoked(id.clone()),
                None => SerialRevocation::AlreadyRevoked(None),
            });
        }
        let tombstone = IdentityRecord {
            serial: serial.to_owned(),
            spiffe_id: None,
            not_before: SystemTime::UNIX_EPOCH,
            not_after: SystemTime::UNIX_EPOCH,
            via: IssuedVia::Unseen,
            issued_at: revocation.at,
            revoked: Some(revocation.clone()),
        };
        registry
            .records
            .insert(serial.to_owned(), (tombstone, revocation.at + keep_for));
        Ok(SerialRevocation::Unseen)
    }

    async fn revoke_identity_id(
        &self,
        spiffe_id: &SpiffeId,
        revocation: &IdentityRevocation,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        self.registry().revoked_ids.insert(
            spiffe_id.clone(),
            (revocation.clone(), revocation.at + keep_for),
        );
        Ok(())
    }

    async fn identities(&self) -> Result<Vec<IdentityRecord>, StoreError> {
        let mut registry = self.registry();
        registry.prune(self.clock.now());
        let mut records: Vec<IdentityRecord> = registry
            .records
            .values()
            .map(|(record, _)| IdentityRecord {
                revoked: registry.revocation_of(record),
                ..record.clone()
            })
            .collect();
        records.sort_by(|a, b| (a.issued_at, &a.serial).cmp(&(b.issued_at, &b.serial)));
        Ok(records)
    }

    async fn put_join_token(&self, token: &JoinToken) -> Result<(), StoreError> {
        self.registry()
            .tokens
            .entry(token.hash.clone())
            .or_insert_with(|| token.clone());
        Ok(())
    }

    async fn take_join_token(&self, hash: &str) -> Result<Option<JoinToken>, StoreError> {
        let now = self.clock.now();
        Ok(self
            .registry()
            .tokens
            .remove(hash)
            .filter(|token| token.expires_at > now))
    }
}
