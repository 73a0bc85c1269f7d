//! The Redis grant store: the system of record shared by jitid replicas,
//! on a standalone Redis or a Redis Cluster.
//!
//! Keys (prefix `jitid`; `{s}` is the subject's [`Shard`] as a hash tag, so
//! everything about one subject's grants lives in one Cluster slot):
//!
//! | key | type | content | expires |
//! |---|---|---|---|
//! | `jitid:epoch` | string | the dataset's epoch | never |
//! | `jitid:{s}:ep` | string | the epoch, copied into the shard's slot | never |
//! | `jitid:{s}:g:<grant id hex>` | string | the grant and its credentials, packed (`encode_grant`) | with the grant |
//! | `jitid:{s}:s:<subject>` | sorted set | the subject's grant ids (hex) by expiry | with its last grant |
//! | `jitid:{t:<task>}:revoked` | string | when (ms) and why the task was revoked: it ends grants created before | after the longest TTL |
//! | `jitid:revocations` | stream | revocation events; the entry id is the cursor | trimmed to the longest TTL |
//! | `jitid:reviews` | hash | break-glass reviews by grant id, JSON | acknowledged ones after 30 days |
//! | `jitid:{rp}:parties` | hash | relying parties by name: SPIFFE ID, registered, last seen, kept until (ms), cursor | parties when read after their time |
//! | `jitid:{rp}:applied:<cursor>` | hash | who applied that revocation event (name → ms), and `*all` once everyone had | after the longest TTL |
//! | `jitid:pending` | sorted set | ids (hex) of grants waiting for approval, by request expiry | members when read after their expiry or approval |
//! | `jitid:tok:<sha256 of token id>` | string | the grant (hex) an OIDC token was used for (`replay.rs`) | when the token expires |
//!
//! The audit trail keeps its own keys (`jitid:{audit}:*`, see
//! `audit::RedisAuditLog`) and may share this store's connection
//! ([`RedisStore::handle`]).
//!
//! Every write is one Lua script (`lua/*.lua`, one file each) on one slot,
//! so it is atomic and takes one round trip. A shard whose epoch copy is
//! missing (new, or its data was lost) takes the global epoch on first use;
//! credentials carry the epoch they were minted under, and a lost dataset
//! starts a new one.
//!
//! `grants.rs` holds the [`GrantStore`](super::GrantStore) implementation,
//! `feed.rs` the revocation stream and relying parties, `encoding.rs` the
//! record formats, `identities.rs` the attestation identity registry and
//! join tokens (with their keys).

mod encoding;
mod feed;
mod grants;
mod identities;
mod replay;

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use redis::{RedisError, Script};

use self::encoding::{decode_grant, encode_grant, free_text, millis};
use super::StoreError;
use crate::grant::{Credential, Epoch, Grant, GrantId, Shard, TaskId};
use crate::redis_conn::{RedisConnError, RedisHandle};
use crate::spiffe_id::SpiffeId;

pub use crate::redis_conn::RedisStoreConfig;

/// A [`GrantStore`](super::GrantStore) on Redis.
pub struct RedisStore {
    redis: RedisHandle,
    /// Most unexpired grants one subject may hold.
    grant_cap: usize,
    epoch: Mutex<Option<Epoch>>,
    scripts: Scripts,
}

/// The store's scripts, each in its own file under `lua/`.
struct Scripts {
    issue: Script,
    end_grant: Script,
    end_subject: Script,
    revoke_credential: Script,
    liveness: Script,
    update_pending: Script,
    add_credential: Script,
    swap_field: Script,
}

// === impl RedisStore ===

impl RedisStore {
    /// Connects (and fails if Redis cannot be reached now; later outages are
    /// reported per call and recovered from without a restart).
    pub async fn connect(config: RedisStoreConfig) -> Result<Self, StoreError> {
        Self::with_handle(RedisHandle::connect(config).await?).await
    }

    /// The store on an existing connection, which others (the audit trail)
    /// may share.
    pub async fn with_handle(redis: RedisHandle) -> Result<Self, StoreError> {
        let store = Self {
            redis,
            grant_cap: super::DEFAULT_MAX_GRANTS_PER_SUBJECT,
            epoch: Mutex::new(None),
            scripts: Scripts {
                issue: Script::new(include_str!("lua/issue.lua")),
                end_grant: Script::new(include_str!("lua/end_grant.lua")),
                end_subject: Script::new(include_str!("lua/end_subject.lua")),
                revoke_credential: Script::new(include_str!("lua/revoke_credential.lua")),
                liveness: Script::new(include_str!("lua/liveness.lua")),
                update_pending: Script::new(include_str!("lua/update_pending.lua")),
                add_credential: Script::new(include_str!("lua/add_credential.lua")),
                swap_field: Script::new(include_str!("lua/swap_field.lua")),
            },
        };
        store.refresh_epoch().await?;
        Ok(store)
    }

    /// Caps the unexpired grants one subject may hold (default
    /// [`DEFAULT_MAX_GRANTS_PER_SUBJECT`](super::DEFAULT_MAX_GRANTS_PER_SUBJECT)).
    pub fn with_grant_cap(mut self, cap: usize) -> Self {
        self.grant_cap = cap;
        self
    }

    /// The connection the store uses, to share with the audit trail.
    pub fn handle(&self) -> RedisHandle {
        self.redis.clone()
    }

    fn prefix(&self) -> &str {
        self.redis.key_prefix()
    }

    fn marker_key(&self, shard: Shard) -> String {
        format!("{}:{{{shard}}}:ep", self.prefix())
    }

    fn grant_prefix(&self, shard: Shard) -> String {
        format!("{}:{{{shard}}}:g:", self.prefix())
    }

    fn grant_key(&self, id: GrantId) -> String {
        format!("{}{}", self.grant_prefix(id.shard()), id.simple())
    }

    fn subject_key(&self, subject: &SpiffeId) -> String {
        format!("{}:{{{}}}:s:{subject}", self.prefix(), Shard::of(subject))
    }

    fn task_key(&self, task: &TaskId) -> String {
        format!("{}:{{t:{task}}}:revoked", self.prefix())
    }

    fn cached_epoch(&self) -> Option<Epoch> {
        self.epoch
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn cache_epoch(&self, epoch: &Epoch) {
        *self
            .epoch
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(epoch.clone());
    }

    /// Reads the global epoch, starting a new one if the dataset has none.
    async fn refresh_epoch(&self) -> Result<Epoch, StoreError> {
        let key = format!("{}:epoch", self.prefix());
        let mut connection = self.redis.connection();
        let (current,): (String,) = redis::pipe()
            .cmd("SET")
            .arg(&key)
            .arg(Epoch::generate().as_str())
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let epoch = Epoch::from_string(current);
        self.cache_epoch(&epoch);
        Ok(epoch)
    }

    /// Copies the global epoch into a shard that has none; returns the
    /// shard's epoch.
    async fn init_shard(&self, shard: Shard) -> Result<Epoch, StoreError> {
        let global = self.refresh_epoch().await?;
        let mut connection = self.redis.connection();
        let (current,): (String,) = redis::pipe()
            .cmd("SET")
            .arg(self.marker_key(shard))
            .arg(global.as_str())
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(self.marker_key(shard))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(Epoch::from_string(current))
    }

    async fn run_issue(
        &self,
        grant: &Grant,
        credential: Option<&Credential>,
    ) -> Result<String, StoreError> {
        let shard = grant.id.shard();
        let mut invocation = self.scripts.issue.prepare_invoke();
        invocation
            .key(self.marker_key(shard))
            .key(self.grant_key(grant.id))
            .key(self.subject_key(&grant.subject))
            .arg(grant.epoch.as_str())
            .arg(grant.id.simple())
            .arg(millis(grant.expires_at))
            .arg(millis(grant.created_at))
            .arg(encode_grant(
                grant,
                credential.map(std::slice::from_ref).unwrap_or(&[]),
            ))
            .arg(self.grant_cap);
        let mut connection = self.redis.connection();
        invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)
    }

    /// Waits for replicas to acknowledge the writes so far, if configured.
    async fn replicate(&self) -> Result<(), StoreError> {
        Ok(self.redis.replicate().await?)
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs may carry a password: show only how many there are.
        f.debug_struct("RedisStore")
            .field("urls", &self.redis.config().urls.len())
            .field("cluster", &self.redis.config().cluster)
            .field("key_prefix", &self.redis.key_prefix())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A grant and its credentials, unless unknown or expired.
    async fn record(&self, id: GrantId) -> Result<Option<(Grant, Vec<Credential>)>, StoreError> {
        let key = self.grant_key(id);
        let mut connection = self.redis.connection();
        let record: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        match record {
            Some(record) => decode_grant(id, &key, &record, SystemTime::now()),
            None => Ok(None),
        }
    }

    /// Writes a new grant record, with its first credential if any.
    async fn create(
        &self,
        grant: &Grant,
        credential: Option<&Credential>,
    ) -> Result<(), StoreError> {
        let mut outcome = self.run_issue(grant, credential).await?;
        if outcome == "missing" {
            let shard_epoch = self.init_shard(grant.id.shard()).await?;
            if shard_epoch != grant.epoch {
                self.cache_epoch(&shard_epoch);
                return Err(StoreError::EpochChanged(shard_epoch));
            }
            outcome = self.run_issue(grant, credential).await?;
        }
        match outcome.as_str() {
            "ok" => Ok(()),
            "conflict" => Err(StoreError::Conflict(grant.id)),
            "full" => Err(StoreError::SubjectFull {
                subject: grant.subject.clone(),
                cap: self.grant_cap,
            }),
            other => match other.strip_prefix("epoch:") {
                Some(current) => {
                    let epoch = Epoch::from_string(current.to_owned());
                    self.cache_epoch(&epoch);
                    Err(StoreError::EpochChanged(epoch))
                }
                None => Err(unavailable_msg(&format!(
                    "unexpected script answer {other:?}"
                ))),
            },
        }
    }

    fn pending_key(&self) -> String {
        format!("{}:pending", self.prefix())
    }

    fn reviews_key(&self) -> String {
        format!("{}:reviews", self.prefix())
    }

    fn stream_key(&self) -> String {
        format!("{}:revocations", self.prefix())
    }

    fn parties_key(&self) -> String {
        format!("{}:{{rp}}:parties", self.prefix())
    }

    fn applied_key(&self, cursor: &str) -> String {
        format!("{}:{{rp}}:applied:{cursor}", self.prefix())
    }

    async fn end_subject(
        &self,
        subject: &SpiffeId,
        task: Option<&TaskId>,
        state: &str,
        reason: &str,
    ) -> Result<Vec<GrantId>, StoreError> {
        let mut connection = self.redis.connection();
        let ended: Vec<String> = self
            .scripts
            .end_subject
            .key(self.subject_key(subject))
            .arg(self.grant_prefix(Shard::of(subject)))
            .arg(millis(SystemTime::now()))
            .arg(state)
            .arg(free_text(reason))
            .arg(task.map(TaskId::as_str).unwrap_or(""))
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let mut ids: Vec<GrantId> = ended.iter().filter_map(|id| GrantId::parse(id)).collect();
        ids.sort();
        Ok(ids)
    }
}

impl From<Arc<RedisStore>> for RedisHandle {
    /// The store's connection: an audit trail on the store's Redis shares it.
    fn from(store: Arc<RedisStore>) -> Self {
        store.handle()
    }
}

impl From<RedisConnError> for StoreError {
    fn from(error: RedisConnError) -> Self {
        match error {
            RedisConnError::Redis(error) => unavailable(error),
            RedisConnError::NotReplicated { acked, wanted } => {
                StoreError::NotReplicated { acked, wanted }
            }
            other => unavailable_msg(&other.to_string()),
        }
    }
}

fn unavailable(error: RedisError) -> StoreError {
    StoreError::Unavailable(Box::new(error))
}

fn unavailable_msg(message: &str) -> StoreError {
    StoreError::Unavailable(message.into())
}
