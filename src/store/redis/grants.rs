//! The [`GrantStore`] on Redis: grant records, credentials, reviews and
//! liveness. The revocation stream and relying parties are in `feed.rs`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use redis::RedisError;

use super::encoding::{
    credential_section, decode_grant, decode_review, encode_grant, encode_review, free_text,
    millis, state_code,
};
use super::{RedisStore, unavailable, unavailable_msg};
use crate::grant::{Credential, CredentialId, Epoch, Grant, GrantId, GrantState, TaskId};
use crate::spiffe_id::SpiffeId;
use crate::store::{
    AckOutcome, AddOutcome, CredentialRevocation, EndTarget, Ending, GrantStore, Liveness,
    LivenessQuery, MAX_CREDENTIALS_PER_GRANT, REVIEW_RETENTION, RelyingParty, Review, ReviewAck,
    RevocationEvent, RevocationFeed, StoreError, judge,
};

#[async_trait]
impl GrantStore for RedisStore {
    fn identities(&self) -> Option<&dyn crate::store::IdentityStore> {
        Some(self)
    }

    async fn epoch(&self) -> Result<Epoch, StoreError> {
        match self.cached_epoch() {
            Some(epoch) => Ok(epoch),
            None => self.refresh_epoch().await,
        }
    }

    async fn current_epoch(&self) -> Result<Epoch, StoreError> {
        self.refresh_epoch().await
    }

    async fn record_issuance(
        &self,
        grant: &Grant,
        credential: &Credential,
    ) -> Result<(), StoreError> {
        self.create(grant, Some(credential)).await
    }

    async fn record_grant(&self, grant: &Grant) -> Result<(), StoreError> {
        self.create(grant, None).await?;
        if grant.state == GrantState::Pending {
            // The index of pending grants spans every shard, so it is a
            // separate write: if it fails the grant still stands, and
            // approvers can still name it by id.
            let mut connection = self.redis.connection();
            let indexed: Result<(), RedisError> = redis::cmd("ZADD")
                .arg(self.pending_key())
                .arg(millis(grant.expires_at))
                .arg(grant.id.simple())
                .query_async(&mut connection)
                .await;
            if let Err(error) = indexed {
                tracing::warn!(%error, grant = %grant.id, "pending grant not indexed for approvers");
            }
        }
        Ok(())
    }

    async fn pending_grants(&self) -> Result<Vec<Grant>, StoreError> {
        let now = SystemTime::now();
        let mut connection = self.redis.connection();
        let (): () = redis::cmd("ZREMRANGEBYSCORE")
            .arg(self.pending_key())
            .arg("-inf")
            .arg(millis(now))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.pending_key())
            .arg(0)
            .arg(-1)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let mut pending = Vec::new();
        let mut settled = Vec::new();
        for text in ids {
            let Some(id) = GrantId::parse(&text) else {
                settled.push(text);
                continue;
            };
            match self.grant(id).await {
                Ok(Some(grant)) if grant.state == GrantState::Pending => pending.push(grant),
                Ok(_) => settled.push(text),
                Err(error @ StoreError::Corrupt { .. }) => {
                    tracing::error!(%error, "skipping an unreadable grant record");
                }
                Err(error) => return Err(error),
            }
        }
        if !settled.is_empty() {
            let (): () = redis::cmd("ZREM")
                .arg(self.pending_key())
                .arg(settled)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
        }
        pending.sort_by_key(|grant| (grant.created_at, grant.id));
        Ok(pending)
    }

    async fn update_pending(&self, current: &Grant, next: &Grant) -> Result<bool, StoreError> {
        if current.state != GrantState::Pending && next.state != GrantState::Pending {
            return Ok(false);
        }
        let mut connection = self.redis.connection();
        let changed: u32 = self
            .scripts
            .update_pending
            .key(self.grant_key(current.id))
            .key(self.subject_key(&current.subject))
            .arg(encode_grant(current, &[]))
            .arg(encode_grant(next, &[]))
            .arg(millis(next.expires_at))
            .arg(next.id.simple())
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        if changed == 1 && current.state != GrantState::Pending {
            // A decision the trail refused, put back: approvers see the
            // grant again.
            let (): () = redis::cmd("ZADD")
                .arg(self.pending_key())
                .arg(millis(next.expires_at))
                .arg(next.id.simple())
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
        }
        Ok(changed == 1)
    }

    async fn discard_grant(&self, id: GrantId) -> Result<(), StoreError> {
        let Some(grant) = self.grant(id).await? else {
            return Ok(());
        };
        let mut connection = self.redis.connection();
        // The grant and its subject's index share a slot; the pending
        // index spans every shard, so it is a command of its own.
        let (): () = redis::pipe()
            .atomic()
            .del(self.grant_key(id))
            .zrem(self.subject_key(&grant.subject), id.simple())
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let (): () = redis::cmd("ZREM")
            .arg(self.pending_key())
            .arg(id.simple())
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn add_credential(
        &self,
        grant: &Grant,
        credential: &Credential,
    ) -> Result<AddOutcome, StoreError> {
        let mut connection = self.redis.connection();
        let outcome: String = self
            .scripts
            .add_credential
            .key(self.marker_key(grant.id.shard()))
            .key(self.grant_key(grant.id))
            .arg(grant.epoch.as_str())
            .arg(format!(
                "{}{}",
                credential_section(&credential.id),
                millis(credential.expires_at)
            ))
            .arg(MAX_CREDENTIALS_PER_GRANT)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        match outcome.as_str() {
            "ok" => Ok(AddOutcome::Added),
            "full" => Ok(AddOutcome::Full),
            "missing" => Ok(AddOutcome::NotFound),
            "inactive" => Ok(AddOutcome::NotActive),
            other => {
                let current = other.strip_prefix("epoch:").unwrap_or_default();
                let epoch = Epoch::from_string(current.to_owned());
                if !current.is_empty() {
                    self.cache_epoch(&epoch);
                }
                Err(StoreError::EpochChanged(epoch))
            }
        }
    }

    async fn open_review(&self, review: &Review) -> Result<(), StoreError> {
        let mut connection = self.redis.connection();
        let () = redis::cmd("HSET")
            .arg(self.reviews_key())
            .arg(review.grant_id.simple())
            .arg(encode_review(review))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        self.replicate().await
    }

    async fn reviews(&self) -> Result<Vec<Review>, StoreError> {
        let now = SystemTime::now();
        let mut connection = self.redis.connection();
        let all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.reviews_key())
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let mut reviews = Vec::with_capacity(all.len());
        let mut stale = Vec::new();
        for (field, value) in all {
            let Some(review) = decode_review(&value) else {
                tracing::error!(key = %self.reviews_key(), %field, "skipping an unreadable review");
                continue;
            };
            match &review.ack {
                Some(ack) if ack.at + REVIEW_RETENTION <= now => stale.push(field),
                _ => reviews.push(review),
            }
        }
        if !stale.is_empty() {
            let () = redis::cmd("HDEL")
                .arg(self.reviews_key())
                .arg(stale)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
        }
        reviews.sort_by_key(|review| (review.opened_at, review.grant_id));
        Ok(reviews)
    }

    async fn ack_review(&self, id: GrantId, ack: &ReviewAck) -> Result<AckOutcome, StoreError> {
        let mut connection = self.redis.connection();
        for _ in 0..8 {
            let current: Option<String> = redis::cmd("HGET")
                .arg(self.reviews_key())
                .arg(id.simple())
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            let Some(current) = current else {
                return Ok(AckOutcome::NotFound);
            };
            let mut review = decode_review(&current).ok_or_else(|| StoreError::Corrupt {
                key: format!("{} {}", self.reviews_key(), id.simple()),
                message: "bad review".to_owned(),
            })?;
            if review.ack.is_some() {
                return Ok(AckOutcome::AlreadyAcked(review));
            }
            review.ack = Some(ack.clone());
            let swapped: u32 = self
                .scripts
                .swap_field
                .key(self.reviews_key())
                .arg(id.simple())
                .arg(&current)
                .arg(encode_review(&review))
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            if swapped == 1 {
                self.replicate().await?;
                return Ok(AckOutcome::Acked(review));
            }
        }
        Err(unavailable_msg("review keeps changing"))
    }

    async fn drop_review(&self, id: GrantId) -> Result<(), StoreError> {
        let mut connection = self.redis.connection();
        let () = redis::cmd("HDEL")
            .arg(self.reviews_key())
            .arg(id.simple())
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn grant(&self, id: GrantId) -> Result<Option<Grant>, StoreError> {
        Ok(self.record(id).await?.map(|(grant, _)| grant))
    }

    async fn credentials(&self, id: GrantId) -> Result<Vec<Credential>, StoreError> {
        let now = SystemTime::now();
        let Some((_, credentials)) = self.record(id).await? else {
            return Ok(Vec::new());
        };
        let mut credentials: Vec<Credential> = credentials
            .into_iter()
            .filter(|credential| credential.expires_at > now)
            .collect();
        credentials.sort_by(|a, b| a.id.value().cmp(b.id.value()));
        Ok(credentials)
    }

    async fn grants_of(&self, subject: &SpiffeId) -> Result<Vec<Grant>, StoreError> {
        let now = SystemTime::now();
        let mut connection = self.redis.connection();
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.subject_key(subject))
            .arg(format!("({}", millis(now)))
            .arg("+inf")
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let mut grants = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(id) = GrantId::parse(&id) else {
                continue;
            };
            // One unreadable record must not hide the subject's others.
            match self.grant(id).await {
                Ok(Some(grant)) => grants.push(grant),
                Ok(None) => {}
                Err(error @ StoreError::Corrupt { .. }) => {
                    tracing::error!(%error, "skipping an unreadable grant record");
                }
                Err(error) => return Err(error),
            }
        }
        grants.sort_by_key(|grant| grant.created_at);
        Ok(grants)
    }

    async fn end(
        &self,
        target: EndTarget<'_>,
        ending: &Ending,
    ) -> Result<Vec<GrantId>, StoreError> {
        let state = state_code(ending.state);
        let mut connection = self.redis.connection();
        let ended = match target {
            EndTarget::Grant(id) => {
                let changed: u32 = self
                    .scripts
                    .end_grant
                    .key(self.grant_key(id))
                    .arg(state)
                    .arg(free_text(&ending.reason))
                    .invoke_async(&mut connection)
                    .await
                    .map_err(unavailable)?;
                if changed == 1 { vec![id] } else { Vec::new() }
            }
            EndTarget::Task { subject, task } => {
                self.end_subject(subject, Some(task), state, &ending.reason)
                    .await?
            }
            EndTarget::Subject(subject) => {
                self.end_subject(subject, None, state, &ending.reason)
                    .await?
            }
        };
        self.replicate().await?;
        Ok(ended)
    }

    async fn revoke_credential(
        &self,
        id: &CredentialId,
        _ending: &Ending,
    ) -> Result<CredentialRevocation, StoreError> {
        let Some(grant_id) = id.grant_id() else {
            return Ok(CredentialRevocation::NotFound);
        };
        let mut connection = self.redis.connection();
        let changed: u32 = self
            .scripts
            .revoke_credential
            .key(self.grant_key(grant_id))
            .arg(credential_section(id))
            .arg(millis(SystemTime::now()))
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        self.replicate().await?;
        Ok(match changed {
            1 => CredentialRevocation::Revoked,
            2 => CredentialRevocation::AlreadyRevoked,
            _ => CredentialRevocation::NotFound,
        })
    }

    async fn revoke_task(
        &self,
        task: &TaskId,
        ending: &Ending,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        let mut connection = self.redis.connection();
        let () = redis::cmd("SET")
            .arg(self.task_key(task))
            .arg(format!(
                "{}|{}",
                millis(ending.at),
                free_text(&ending.reason)
            ))
            .arg("PX")
            .arg(
                u64::try_from(keep_for.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            )
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        self.replicate().await
    }

    async fn liveness(&self, query: LivenessQuery<'_>) -> Result<Liveness, StoreError> {
        let Some(grant_id) = query.credential.grant_id() else {
            return Ok(Liveness::NotFound);
        };
        let grant_key = self.grant_key(grant_id);
        let mut shard_connection = self.redis.connection();
        let mut task_connection = self.redis.connection();
        let task_key = self.task_key(query.task);
        let mut shard_invocation = self.scripts.liveness.prepare_invoke();
        shard_invocation
            .key(self.marker_key(grant_id.shard()))
            .key(&grant_key);
        let shard_read = shard_invocation.invoke_async::<(String, String)>(&mut shard_connection);
        let mut task_command = redis::cmd("GET");
        task_command.arg(&task_key);
        let task_read = task_command.query_async::<Option<String>>(&mut task_connection);
        // Two slots, read concurrently: one round trip of latency.
        let (shard, task) = tokio::join!(shard_read, task_read);
        let (marker, record) = shard.map_err(unavailable)?;
        let task_revoked = task.map_err(unavailable)?;
        if marker.is_empty() || marker != query.epoch.as_str() {
            return Ok(Liveness::EpochReset);
        }
        let Some((grant, credentials)) = (if record.is_empty() {
            None
        } else {
            decode_grant(grant_id, &grant_key, &record, SystemTime::now())?
        }) else {
            return Ok(Liveness::NotFound);
        };
        let Some(credential) = credentials
            .into_iter()
            .find(|credential| &credential.id == query.credential)
        else {
            return Ok(Liveness::NotFound);
        };
        let task_revocation = task_revoked
            .as_deref()
            .and_then(|value| value.split_once('|'))
            .and_then(|(at, reason)| {
                let at: u64 = at.parse().ok()?;
                Some((
                    SystemTime::UNIX_EPOCH + Duration::from_millis(at),
                    reason.to_owned(),
                ))
            });
        judge(self, grant, &credential, task_revocation).await
    }

    async fn publish(
        &self,
        event: &RevocationEvent,
        keep_for: Duration,
    ) -> Result<String, StoreError> {
        self.publish_event(event, keep_for).await
    }

    async fn revocation_feed(&self) -> Result<Box<dyn RevocationFeed>, StoreError> {
        self.open_feed().await
    }

    async fn register_relying_party(
        &self,
        party: &RelyingParty,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        self.register_party(party, keep_for).await
    }

    async fn relying_parties(&self) -> Result<Vec<RelyingParty>, StoreError> {
        self.parties().await
    }

    async fn mark_applied(
        &self,
        cursor: &str,
        party: &str,
        at: SystemTime,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        self.mark_party_applied(cursor, party, at, keep_for).await
    }

    async fn applied(&self, cursor: &str) -> Result<Vec<(String, SystemTime)>, StoreError> {
        self.applied_by(cursor).await
    }

    async fn mark_all_applied(&self, cursor: &str, keep_for: Duration) -> Result<bool, StoreError> {
        self.mark_everyone_applied(cursor, keep_for).await
    }
}
