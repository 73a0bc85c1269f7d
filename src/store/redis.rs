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
//! | `jitid:{audit}:log` | stream | the audit chain, entry id `<seq>-0`, field `e` = the event's JSON line | trimmed by retention |
//! | `jitid:{audit}:head` | string | `<seq> <hash>` of the chain's last event | never |
//! | `jitid:{audit}:checkpoint` | string | `<seq> <JWS>`: the signed head of the last event retention cut | never |
//! | `jitid:{audit}:expiring` | sorted set | grants (hex) the trail will record as expired, by expiry (ms) | members when recorded or ended |
//! | `jitid:{audit}:expiring:grants` | hash | those grants' subject, task, entitlement and state, JSON | with their member |
//! | `jitid:{audit}:upkeep` | string | the replica that records expiries and trims | after 3 upkeep intervals |
//! | `jitid:{rp}:parties` | hash | relying parties by name: SPIFFE ID, registered, last seen, kept until (ms), cursor | parties when read after their time |
//! | `jitid:{rp}:applied:<cursor>` | hash | who applied that revocation event (name → ms), and `*all` once everyone had | after the longest TTL |
//! | `jitid:pending` | sorted set | ids (hex) of grants waiting for approval, by request expiry | members when read after their expiry or approval |
//!
//! Every write is one Lua script on one slot, so it is atomic and takes one
//! round trip. A shard whose epoch copy is missing (new, or its data was
//! lost) takes the global epoch on first use; credentials carry the epoch
//! they were minted under, and a lost dataset starts a new one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Script, Value};

use super::{
    AckOutcome, AddOutcome, CredentialRevocation, EndTarget, Ending, GrantStore, Liveness,
    LivenessQuery, REVIEW_RETENTION, RelyingParty, Review, ReviewAck, RevocationEvent,
    RevocationFeed, StoreError, judge,
};
use crate::audit::upkeep::{Expiring, ExpiryEffect, SignedCheckpoint, expiry_effects};
use crate::audit::{AppendOutcome, AuditEvent, Chained, Head};
use crate::grant::{
    Action, Ancestor, ApprovalRecord, Credential, CredentialId, Delegation, Epoch, Grant, GrantId,
    GrantState, Shard, TaskId,
};
use crate::keyfile;
use crate::spiffe_id::SpiffeId;

/// How to reach Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisStoreConfig {
    /// `redis://`, `rediss://` or `unix://` URLs; one for a standalone
    /// server, the seed nodes for a Cluster.
    pub urls: Vec<String>,
    /// Whether `urls` are Redis Cluster nodes.
    pub cluster: bool,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Replicas that must acknowledge a revocation before it is reported
    /// done (Redis `WAIT`); 0 for none. Standalone only.
    pub wait_replicas: u64,
    /// How long to wait for those acknowledgements.
    pub wait_timeout: Duration,
    /// Timeout of each command and connection attempt.
    pub timeout: Duration,
    /// For `rediss://`: PEM CA certificate(s) to trust instead of the
    /// system roots.
    pub ca_file: Option<PathBuf>,
    /// For `rediss://` with client authentication: PEM certificate and
    /// private key (the key must not be readable by group or others).
    pub client_identity: Option<(PathBuf, PathBuf)>,
}

/// A [`GrantStore`] on Redis.
pub struct RedisStore {
    connection: RedisConnection,
    config: RedisStoreConfig,
    epoch: Mutex<Option<Epoch>>,
    scripts: Scripts,
}

/// A standalone connection that reconnects, a plain one (for blocking
/// reads), or a Cluster connection.
#[derive(Clone)]
enum RedisConnection {
    Single(ConnectionManager),
    Multiplexed(redis::aio::MultiplexedConnection),
    Cluster(ClusterConnection),
}

struct Scripts {
    issue: Script,
    end_grant: Script,
    end_subject: Script,
    revoke_credential: Script,
    liveness: Script,
    update_pending: Script,
    add_credential: Script,
    swap_field: Script,
    audit_append: Script,
    audit_due: Script,
    audit_trim: Script,
    audit_lease: Script,
}

// A grant is one string: its state character, then fields separated by
// \x1f, then sections each opened by \x1e and a tag: `x`/`j` + the random
// part of a credential id + `:` + expiry (+ `:r` when revoked), or `e` +
// why the grant ended. See `encode_grant`.
const ISSUE: &str = r"
local marker = redis.call('GET', KEYS[1])
if not marker then return 'missing' end
if marker ~= ARGV[1] then return 'epoch:' .. marker end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'conflict' end
redis.call('SET', KEYS[2], ARGV[5], 'PXAT', ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
-- The index lives as long as its last grant; GT fails only on a new key.
if redis.call('PEXPIREAT', KEYS[3], ARGV[3], 'GT') == 0 and redis.call('PTTL', KEYS[3]) == -1 then
  redis.call('PEXPIREAT', KEYS[3], ARGV[3])
end
return 'ok'
";

// Active and pending grants can be ended.
const END_GRANT: &str = r"
local record = redis.call('GET', KEYS[1])
local state = record and string.sub(record, 1, 1)
if state == 'a' or state == 'p' then
  redis.call('SET', KEYS[1], ARGV[1] .. string.sub(record, 2) .. '\30e' .. ARGV[2], 'KEEPTTL')
  return 1
end
return 0
";

// Keys of the subject's grants are built here from the prefix in ARGV[1];
// they share the sorted set's hash tag, so they are in its slot.
const END_SUBJECT: &str = r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '+inf')
local ended = {}
for _, id in ipairs(ids) do
  local key = ARGV[1] .. id
  local record = redis.call('GET', key)
  local state = record and string.sub(record, 1, 1)
  if state == 'a' or state == 'p' then
    local task = string.match(record, '^[ap]\31([^\31]*)\31')
    if ARGV[5] == '' or task == ARGV[5] then
      redis.call('SET', key, ARGV[3] .. string.sub(record, 2) .. '\30e' .. ARGV[4], 'KEEPTTL')
      ended[#ended + 1] = id
    end
  end
end
return ended
";

const REVOKE_CREDENTIAL: &str = r"
local record = redis.call('GET', KEYS[1])
if not record then return 0 end
local _, last = string.find(record, ARGV[1], 1, true)
if not last then return 0 end
local expiry, flag = string.match(record, '^(%d+)(:?r?)', last + 1)
if not expiry or tonumber(expiry) <= tonumber(ARGV[2]) then return 0 end
if flag == ':r' then return 2 end
local at = last + string.len(expiry)
redis.call('SET', KEYS[1], string.sub(record, 1, at) .. ':r' .. string.sub(record, at + 1), 'KEEPTTL')
return 1
";

// A pending grant changes only if nothing else changed it meanwhile.
const UPDATE_PENDING: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
if redis.call('PEXPIREAT', KEYS[2], ARGV[3], 'GT') == 0 and redis.call('PTTL', KEYS[2]) == -1 then
  redis.call('PEXPIREAT', KEYS[2], ARGV[3])
end
return 1
";

const ADD_CREDENTIAL: &str = r"
local marker = redis.call('GET', KEYS[1])
if marker ~= ARGV[1] then return 'epoch:' .. (marker or '') end
local record = redis.call('GET', KEYS[2])
if not record then return 'missing' end
if string.sub(record, 1, 1) ~= 'a' then return 'inactive' end
local _, count = string.gsub(record, '\30[xj]', '')
if count >= tonumber(ARGV[3]) then return 'full' end
redis.call('SET', KEYS[2], record .. ARGV[2], 'KEEPTTL')
return 'ok'
";

// A hash field changes only if it still holds what the caller read.
const SWAP_FIELD: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
";

// Appends audit events only if the chain's head is still the one the
// writer chained them from: ARGV[1] the empty chain's head, ARGV[2] the
// expected head, ARGV[3] the new head, ARGV[4] the number of events, then
// (entry id, event) pairs, then the events' expiry effects as (op, grant,
// expiry ms, JSON) quadruples: `+` watches a grant, `-` forgets it.
const AUDIT_APPEND: &str = r"
local head = redis.call('GET', KEYS[1]) or ARGV[1]
if head ~= ARGV[2] then return {0, head} end
local effects = 5 + 2 * tonumber(ARGV[4])
for i = 5, effects - 1, 2 do
  redis.call('XADD', KEYS[2], ARGV[i], 'e', ARGV[i + 1])
end
for i = effects, #ARGV, 4 do
  if ARGV[i] == '+' then
    redis.call('ZADD', KEYS[3], ARGV[i + 2], ARGV[i + 1])
    redis.call('HSET', KEYS[4], ARGV[i + 1], ARGV[i + 3])
  else
    redis.call('ZREM', KEYS[3], ARGV[i + 1])
    redis.call('HDEL', KEYS[4], ARGV[i + 1])
  end
end
redis.call('SET', KEYS[1], ARGV[3])
return {1, ARGV[3]}
";

// Watched grants due by ARGV[1] (ms), at most ARGV[2]: their JSON.
const AUDIT_DUE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {}
for i, grant in ipairs(due) do
  out[i] = redis.call('HGET', KEYS[2], grant) or grant
end
return out
";

// Cuts the audit stream through event ARGV[1] and keeps the checkpoint
// ARGV[2], unless the trail was already cut as far.
const AUDIT_TRIM: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  local seq = tonumber(string.match(current, '^(%d+) '))
  if seq and seq >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('XTRIM', KEYS[2], 'MINID', ARGV[1] .. '-1')
return 1
";

// Takes or renews the upkeep lease for ARGV[1], for ARGV[2] ms.
const AUDIT_LEASE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

const LIVENESS: &str = r"
return {redis.call('GET', KEYS[1]) or '', redis.call('GET', KEYS[2]) or ''}
";

// === impl RedisStoreConfig ===

impl RedisStoreConfig {
    /// A standalone Redis at `url` with the defaults: prefix `jitid`, no
    /// `WAIT`, 500 ms timeouts, system TLS roots.
    pub fn new(url: &str) -> Self {
        Self {
            urls: vec![url.to_owned()],
            cluster: false,
            key_prefix: "jitid".to_owned(),
            wait_replicas: 0,
            wait_timeout: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
            ca_file: None,
            client_identity: None,
        }
    }
}

// === impl RedisStore ===

impl RedisStore {
    /// Connects (and fails if Redis cannot be reached now; later outages are
    /// reported per call and recovered from without a restart).
    pub async fn connect(config: RedisStoreConfig) -> Result<Self, StoreError> {
        if config.urls.is_empty() {
            return Err(unavailable_msg("no Redis URL configured"));
        }
        let connection = if config.cluster {
            let mut builder = redis::cluster::ClusterClient::builder(config.urls.clone())
                .connection_timeout(config.timeout)
                .response_timeout(config.timeout)
                .retries(1);
            if let Some(certificates) = tls_certificates(&config)? {
                builder = builder.certs(certificates);
            }
            let client = builder.build().map_err(unavailable)?;
            RedisConnection::Cluster(client.get_async_connection().await.map_err(unavailable)?)
        } else {
            let client = standalone_client(&config)?;
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.timeout))
                .set_response_timeout(Some(config.timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            RedisConnection::Single(
                client
                    .get_connection_manager_with_config(manager_config)
                    .await
                    .map_err(unavailable)?,
            )
        };
        let store = Self {
            connection,
            config,
            epoch: Mutex::new(None),
            scripts: Scripts {
                issue: Script::new(ISSUE),
                end_grant: Script::new(END_GRANT),
                end_subject: Script::new(END_SUBJECT),
                revoke_credential: Script::new(REVOKE_CREDENTIAL),
                liveness: Script::new(LIVENESS),
                update_pending: Script::new(UPDATE_PENDING),
                add_credential: Script::new(ADD_CREDENTIAL),
                swap_field: Script::new(SWAP_FIELD),
                audit_append: Script::new(AUDIT_APPEND),
                audit_due: Script::new(AUDIT_DUE),
                audit_trim: Script::new(AUDIT_TRIM),
                audit_lease: Script::new(AUDIT_LEASE),
            },
        };
        store.refresh_epoch().await?;
        Ok(store)
    }

    fn prefix(&self) -> &str {
        &self.config.key_prefix
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
        let mut connection = self.connection.clone();
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
        let mut connection = self.connection.clone();
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
            ));
        let mut connection = self.connection.clone();
        invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)
    }

    /// Waits for replicas to acknowledge the writes so far, if configured.
    async fn replicate(&self) -> Result<(), StoreError> {
        let wanted = self.config.wait_replicas;
        if wanted == 0 {
            return Ok(());
        }
        let mut connection = self.connection.clone();
        let acked: u64 = redis::cmd("WAIT")
            .arg(wanted)
            .arg(u64::try_from(self.config.wait_timeout.as_millis()).unwrap_or(u64::MAX))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        if acked < wanted {
            return Err(StoreError::NotReplicated { acked, wanted });
        }
        Ok(())
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs may carry a password: show only how many there are.
        f.debug_struct("RedisStore")
            .field("urls", &self.config.urls.len())
            .field("cluster", &self.config.cluster)
            .field("key_prefix", &self.config.key_prefix)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl GrantStore for RedisStore {
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
            let mut connection = self.connection.clone();
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
        let mut connection = self.connection.clone();
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
        let mut connection = self.connection.clone();
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
        Ok(changed == 1)
    }

    async fn discard_grant(&self, id: GrantId) -> Result<(), StoreError> {
        let Some(grant) = self.grant(id).await? else {
            return Ok(());
        };
        let mut connection = self.connection.clone();
        // The grant and its subject index share a slot; the pending index
        // spans every shard, so it is a command of its own.
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
        let mut connection = self.connection.clone();
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
            .arg(super::MAX_CREDENTIALS_PER_GRANT)
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
        let mut connection = self.connection.clone();
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
        let mut connection = self.connection.clone();
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
        let mut connection = self.connection.clone();
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
        let mut connection = self.connection.clone();
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
        let mut connection = self.connection.clone();
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
        let mut connection = self.connection.clone();
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
        let mut connection = self.connection.clone();
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
        let mut connection = self.connection.clone();
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
        let mut shard_connection = self.connection.clone();
        let mut task_connection = self.connection.clone();
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
        // Entry ids are milliseconds: MINID drops what no credential can
        // still need.
        let oldest = millis(SystemTime::now())
            .saturating_sub(u64::try_from(keep_for.as_millis()).unwrap_or(u64::MAX));
        let mut command = redis::cmd("XADD");
        command
            .arg(self.stream_key())
            .arg("MINID")
            .arg("~")
            .arg(oldest)
            .arg("*");
        for (field, value) in encode_event(event) {
            command.arg(field).arg(value);
        }
        let mut connection = self.connection.clone();
        let id: String = command
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        self.replicate().await?;
        Ok(id)
    }

    async fn revocation_feed(&self) -> Result<Box<dyn RevocationFeed>, StoreError> {
        let response_timeout = Some(MAX_FEED_WAIT + self.config.timeout);
        let connection = if self.config.cluster {
            let mut builder = redis::cluster::ClusterClient::builder(self.config.urls.clone())
                .connection_timeout(self.config.timeout)
                .response_timeout(MAX_FEED_WAIT + self.config.timeout);
            if let Some(certificates) = tls_certificates(&self.config)? {
                builder = builder.certs(certificates);
            }
            let client = builder.build().map_err(unavailable)?;
            RedisConnection::Cluster(client.get_async_connection().await.map_err(unavailable)?)
        } else {
            let client = standalone_client(&self.config)?;
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(self.config.timeout))
                .set_response_timeout(response_timeout);
            RedisConnection::Multiplexed(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(unavailable)?,
            )
        };
        Ok(Box::new(Feed {
            connection,
            key: self.stream_key(),
        }))
    }

    async fn register_relying_party(
        &self,
        party: &RelyingParty,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        let value = format!(
            "{} {} {} {} {}",
            party.spiffe_id,
            millis(party.registered_at),
            millis(party.last_seen),
            millis(party.last_seen + keep_for),
            party.cursor
        );
        let mut connection = self.connection.clone();
        let () = redis::cmd("HSET")
            .arg(self.parties_key())
            .arg(&party.name)
            .arg(value)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn relying_parties(&self) -> Result<Vec<RelyingParty>, StoreError> {
        let now = millis(SystemTime::now());
        let mut connection = self.connection.clone();
        let all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.parties_key())
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let mut parties = Vec::with_capacity(all.len());
        let mut stale = Vec::new();
        for (name, value) in all {
            match decode_party(&name, &value) {
                Some((party, until)) if until > now => parties.push(party),
                Some(_) => stale.push(name),
                None => {
                    tracing::error!(key = %self.parties_key(), %name, "dropping an unreadable relying party");
                    stale.push(name);
                }
            }
        }
        if !stale.is_empty() {
            let () = redis::cmd("HDEL")
                .arg(self.parties_key())
                .arg(stale)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
        }
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
        let key = self.applied_key(cursor);
        let mut connection = self.connection.clone();
        let () = redis::pipe()
            .atomic()
            .cmd("HSETNX")
            .arg(&key)
            .arg(party)
            .arg(millis(at))
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(millis_of(keep_for))
            .ignore()
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn applied(&self, cursor: &str) -> Result<Vec<(String, SystemTime)>, StoreError> {
        let mut connection = self.connection.clone();
        let all: HashMap<String, u64> = redis::cmd("HGETALL")
            .arg(self.applied_key(cursor))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let mut applied: Vec<(String, SystemTime)> = all
            .into_iter()
            .filter(|(name, _)| name != ALL_APPLIED)
            .map(|(name, ms)| (name, SystemTime::UNIX_EPOCH + Duration::from_millis(ms)))
            .collect();
        applied.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(applied)
    }

    async fn mark_all_applied(&self, cursor: &str, keep_for: Duration) -> Result<bool, StoreError> {
        let key = self.applied_key(cursor);
        let mut connection = self.connection.clone();
        let (first,): (u8,) = redis::pipe()
            .atomic()
            .cmd("HSETNX")
            .arg(&key)
            .arg(ALL_APPLIED)
            .arg(millis(SystemTime::now()))
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(millis_of(keep_for))
            .ignore()
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(first == 1)
    }
}

/// The field of an applied hash marking that every party had applied it
/// (not a valid party name).
const ALL_APPLIED: &str = "*all";

/// A relying party record: `<spiffe id> <registered ms> <last seen ms>
/// <until ms> <cursor>`; returns it with its until.
fn decode_party(name: &str, value: &str) -> Option<(RelyingParty, u64)> {
    let mut parts = value.splitn(5, ' ');
    let spiffe_id = SpiffeId::new(parts.next()?).ok()?;
    let mut time = || -> Option<u64> { parts.next()?.parse().ok() };
    let (registered, seen, until) = (time()?, time()?, time()?);
    let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    Some((
        RelyingParty {
            name: name.to_owned(),
            spiffe_id,
            registered_at: at(registered),
            last_seen: at(seen),
            cursor: parts.next().unwrap_or_default().to_owned(),
        },
        until,
    ))
}

/// Longest a blocking stream read waits before returning empty.
const MAX_FEED_WAIT: Duration = Duration::from_secs(5);

/// A reader of the revocation stream on its own connection, since a
/// blocking `XREAD` would stall every other command sharing one.
struct Feed {
    connection: RedisConnection,
    key: String,
}

#[async_trait]
impl RevocationFeed for Feed {
    async fn read(
        &mut self,
        cursor: &str,
        wait: Duration,
    ) -> Result<Vec<(String, RevocationEvent)>, StoreError> {
        type Entries = Vec<(String, HashMap<String, String>)>;
        let wait = wait.min(MAX_FEED_WAIT);
        let reply: Option<Vec<(String, Entries)>> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(256)
            .arg("BLOCK")
            .arg(u64::try_from(wait.as_millis()).unwrap_or(1).max(1))
            .arg("STREAMS")
            .arg(&self.key)
            .arg(cursor)
            .query_async(&mut self.connection)
            .await
            .map_err(unavailable)?;
        let entries = reply
            .into_iter()
            .flatten()
            .flat_map(|(_, entries)| entries)
            .filter_map(|(id, fields)| decode_event(&fields).map(|event| (id, event)))
            .collect();
        Ok(entries)
    }
}

impl RedisStore {
    /// A grant and its credentials, unless unknown or expired.
    async fn record(&self, id: GrantId) -> Result<Option<(Grant, Vec<Credential>)>, StoreError> {
        let key = self.grant_key(id);
        let mut connection = self.connection.clone();
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

    fn audit_keys(&self) -> (String, String) {
        (self.audit_key("head"), self.audit_key("log"))
    }

    /// A key of the audit trail's slot.
    fn audit_key(&self, name: &str) -> String {
        format!("{}:{{audit}}:{name}", self.prefix())
    }

    /// The audit chain's head.
    pub(crate) async fn audit_head(&self) -> Result<Head, StoreError> {
        let (head_key, _) = self.audit_keys();
        let mut connection = self.connection.clone();
        let head: Option<String> = redis::cmd("GET")
            .arg(&head_key)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        match head {
            None => Ok(Head::genesis()),
            Some(text) => Head::decode(&text).ok_or_else(|| StoreError::Corrupt {
                key: head_key,
                message: "bad audit head".to_owned(),
            }),
        }
    }

    /// Appends audit events if the head is still `expected`.
    pub(crate) async fn audit_append(
        &self,
        expected: &Head,
        chained: &Chained,
    ) -> Result<AppendOutcome, StoreError> {
        let events = &chained.events;
        let Some(last) = events.last() else {
            return Ok(AppendOutcome::Appended(expected.clone()));
        };
        let (head_key, log_key) = self.audit_keys();
        let mut invocation = self.scripts.audit_append.prepare_invoke();
        invocation
            .key(&head_key)
            .key(&log_key)
            .key(self.audit_key("expiring"))
            .key(self.audit_key("expiring:grants"))
            .arg(Head::genesis().encode())
            .arg(expected.encode())
            .arg(last.head().encode())
            .arg(events.len());
        for (event, line) in events.iter().zip(&chained.lines) {
            invocation.arg(format!("{}-0", event.seq)).arg(line);
        }
        for effect in events.iter().flat_map(expiry_effects) {
            match effect {
                ExpiryEffect::Watch(expiring) => invocation
                    .arg("+")
                    .arg(&expiring.grant)
                    .arg(expiring.expires_ms())
                    .arg(serde_json::to_string(&expiring).unwrap_or_default()),
                ExpiryEffect::Forget(grant) => invocation.arg("-").arg(grant).arg(0).arg(""),
            };
        }
        let mut connection = self.connection.clone();
        let (appended, head): (u32, String) = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let head = Head::decode(&head).ok_or_else(|| StoreError::Corrupt {
            key: head_key,
            message: "bad audit head".to_owned(),
        })?;
        if appended == 1 {
            self.replicate().await?;
            Ok(AppendOutcome::Appended(head))
        } else {
            Ok(AppendOutcome::Moved(head))
        }
    }

    /// Up to `limit` audit events after sequence number `after`.
    pub(crate) async fn audit_read(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let (_, log_key) = self.audit_keys();
        let mut connection = self.connection.clone();
        let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(&log_key)
            .arg(format!("{}-0", after.saturating_add(1)))
            .arg("+")
            .arg("COUNT")
            .arg(limit.max(1))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        entries
            .into_iter()
            .map(|(id, fields)| {
                let line = fields.get("e").cloned().unwrap_or_default();
                AuditEvent::from_line(&line).map_err(|message| StoreError::Corrupt {
                    key: format!("{log_key} {id}"),
                    message,
                })
            })
            .collect()
    }

    /// Up to `limit` watched grants due by `now_ms`.
    pub(crate) async fn audit_due(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<Expiring>, StoreError> {
        let mut invocation = self.scripts.audit_due.prepare_invoke();
        invocation
            .key(self.audit_key("expiring"))
            .key(self.audit_key("expiring:grants"))
            .arg(now_ms)
            .arg(limit.max(1));
        let mut connection = self.connection.clone();
        let due: Vec<String> = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(due
            .into_iter()
            .map(|text| {
                // A grant whose details are missing is still recorded.
                serde_json::from_str(&text).unwrap_or(Expiring {
                    grant: text,
                    expires_at: String::new(),
                    subject: None,
                    task: None,
                    entitlement: None,
                    state: "unknown".to_owned(),
                })
            })
            .collect())
    }

    /// The audit trail's checkpoint, if it was ever cut.
    pub(crate) async fn audit_checkpoint(&self) -> Result<Option<SignedCheckpoint>, StoreError> {
        let key = self.audit_key("checkpoint");
        let mut connection = self.connection.clone();
        let text: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        text.map(|text| {
            SignedCheckpoint::decode(&text).ok_or_else(|| StoreError::Corrupt {
                key,
                message: "bad audit checkpoint".to_owned(),
            })
        })
        .transpose()
    }

    /// Cuts the audit stream through `checkpoint.seq`, keeping `checkpoint`.
    pub(crate) async fn audit_trim(&self, checkpoint: &SignedCheckpoint) -> Result<(), StoreError> {
        let mut invocation = self.scripts.audit_trim.prepare_invoke();
        invocation
            .key(self.audit_key("checkpoint"))
            .key(self.audit_key("log"))
            .arg(checkpoint.seq)
            .arg(checkpoint.encode());
        let mut connection = self.connection.clone();
        let _: u32 = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Takes or renews the audit upkeep lease.
    pub(crate) async fn audit_lease(
        &self,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut invocation = self.scripts.audit_lease.prepare_invoke();
        invocation
            .key(self.audit_key("upkeep"))
            .arg(holder)
            .arg(ttl.as_millis().max(1) as u64);
        let mut connection = self.connection.clone();
        let taken: u32 = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(taken == 1)
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
        let mut connection = self.connection.clone();
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

/// A client for the first URL, with the configured TLS material.
fn standalone_client(config: &RedisStoreConfig) -> Result<redis::Client, StoreError> {
    let url = config.urls[0].as_str();
    match tls_certificates(config)? {
        Some(certificates) => redis::Client::build_with_tls(url, certificates).map_err(unavailable),
        None => redis::Client::open(url).map_err(unavailable),
    }
}

/// The CA and client identity for `rediss://`, when configured.
fn tls_certificates(
    config: &RedisStoreConfig,
) -> Result<Option<redis::TlsCertificates>, StoreError> {
    if config.ca_file.is_none() && config.client_identity.is_none() {
        return Ok(None);
    }
    let read = |path: &PathBuf| {
        std::fs::read(path)
            .map_err(|error| unavailable_msg(&format!("{}: {error}", path.display())))
    };
    let root_cert = config.ca_file.as_ref().map(read).transpose()?;
    let client_tls = match &config.client_identity {
        Some((cert, key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: keyfile::read_private(key)
                .map_err(|error| unavailable_msg(&error.to_string()))?
                .into_bytes(),
        }),
        None => None,
    };
    Ok(Some(redis::TlsCertificates {
        client_tls,
        root_cert,
    }))
}

// === impl RedisConnection ===

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Multiplexed(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Multiplexed(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Multiplexed(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

// === encoding ===

/// Separates a grant record's fields.
const FIELD: char = '\u{1f}';
/// Opens a section (a credential, or why the grant ended).
const SECTION: char = '\u{1e}';

/// A grant and its credentials as one compact string (one key, a few
/// hundred bytes; see BENCHMARKS.md):
/// `<state> FIELD task FIELD subject FIELD entitlement FIELD actions FIELD
/// parent FIELD created-ms FIELD expires-ms FIELD epoch FIELD ticket FIELD
/// justification FIELD flags FIELD ttl-ms FIELD decision`
/// then `SECTION p <approver> <ms>` per approval, `SECTION <credential>`
/// per credential and, once ended, `SECTION e <reason>`. Free text has the
/// two separators replaced. The encoding is canonical: decoding and
/// encoding again gives the same string, which `update_pending` relies on.
fn encode_grant(grant: &Grant, credentials: &[Credential]) -> String {
    let actions: Vec<&str> = grant.actions.iter().map(Action::as_str).collect();
    let fields = [
        grant.task_id.to_string(),
        grant.subject.to_string(),
        grant.entitlement.clone(),
        actions.join(" "),
        grant.parent.map(|p| p.simple()).unwrap_or_default(),
        millis(grant.created_at).to_string(),
        millis(grant.expires_at).to_string(),
        grant.epoch.to_string(),
        free_text(&grant.ticket),
        free_text(&grant.justification),
        format!(
            "{}{}",
            if grant.break_glass { "b" } else { "" },
            if grant.per_task { "t" } else { "" }
        ),
        u64::try_from(grant.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .to_string(),
        free_text(&grant.decision),
    ];
    let mut record = format!(
        "{}{FIELD}{}",
        state_code(grant.state),
        fields.join(&FIELD.to_string())
    );
    for approval in &grant.approvals {
        record.push_str(&format!(
            "{SECTION}p{} {} {}",
            approval.approver,
            millis(approval.at),
            free_text(&approval.comment)
        ));
    }
    for credential in credentials {
        record.push_str(&credential_section(&credential.id));
        record.push_str(&millis(credential.expires_at).to_string());
        if credential.revoked {
            record.push_str(":r");
        }
    }
    if let Some(delegation) = &grant.delegation {
        record.push_str(&format!("{SECTION}g{}", delegation.spiffe_id));
        for ancestor in &delegation.chain {
            record.push_str(&format!(
                " {}={}",
                ancestor.grant_id.simple(),
                ancestor.spiffe_id
            ));
        }
    }
    if let Some(reason) = &grant.end_reason {
        record.push_str(&format!("{SECTION}e{}", free_text(reason)));
    }
    record
}

/// The `g` section: `<spiffe id>( <ancestor grant>=<its spiffe id>)*`.
fn decode_delegation(text: &str) -> Option<Delegation> {
    let mut parts = text.split(' ');
    let spiffe_id = SpiffeId::new(parts.next()?).ok()?;
    let chain = parts
        .map(|part| {
            let (grant, id) = part.split_once('=')?;
            Some(Ancestor {
                grant_id: GrantId::parse(grant)?,
                spiffe_id: SpiffeId::new(id).ok()?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Delegation { spiffe_id, chain })
}

fn free_text(text: &str) -> String {
    text.replace([FIELD, SECTION], " ")
}

fn decode_grant(
    id: GrantId,
    key: &str,
    record: &str,
    now: SystemTime,
) -> Result<Option<(Grant, Vec<Credential>)>, StoreError> {
    let corrupt = |message: &str| StoreError::Corrupt {
        key: key.to_owned(),
        message: message.to_owned(),
    };
    let mut sections = record.split(SECTION);
    let core = sections.next().unwrap_or_default();
    let mut parts: Vec<&str> = core.splitn(15, FIELD).collect();
    // Records written before approvals (11 fields) read as active grants
    // with no flags, no decision, and their whole life as their TTL.
    let legacy_ttl;
    if parts.len() == 11 {
        let created: u64 = parts[6]
            .parse()
            .map_err(|_| corrupt("time is not a number"))?;
        let expires: u64 = parts[7]
            .parse()
            .map_err(|_| corrupt("time is not a number"))?;
        legacy_ttl = expires.saturating_sub(created).to_string();
        parts.extend(["", legacy_ttl.as_str(), ""]);
    }
    let [
        state,
        task,
        subject,
        entitlement,
        actions,
        parent,
        created,
        expires,
        epoch,
        ticket,
        justification,
        flags,
        ttl,
        decision,
    ] = parts.as_slice()
    else {
        return Err(corrupt("record has the wrong number of fields"));
    };
    let time = |text: &str| -> Result<SystemTime, StoreError> {
        let value: u64 = text.parse().map_err(|_| corrupt("time is not a number"))?;
        Ok(SystemTime::UNIX_EPOCH + Duration::from_millis(value))
    };
    let expires_at = time(expires)?;
    if expires_at <= now {
        return Ok(None);
    }
    let state = match *state {
        "p" => GrantState::Pending,
        "d" => GrantState::Denied,
        "a" => GrantState::Active,
        "c" => GrantState::Completed,
        "r" => GrantState::Revoked,
        _ => return Err(corrupt("bad state")),
    };
    let parent = match *parent {
        "" => None,
        text => Some(GrantId::parse(text).ok_or_else(|| corrupt("bad parent"))?),
    };
    let mut end_reason = None;
    let mut credentials = Vec::new();
    let mut approvals = Vec::new();
    let mut delegation = None;
    for section in sections {
        match section.split_at_checked(1) {
            Some(("e", reason)) => end_reason = Some(reason.to_owned()),
            Some(("g", text)) => {
                delegation =
                    Some(decode_delegation(text).ok_or_else(|| corrupt("bad delegation"))?);
            }
            Some(("p", approval)) => {
                let mut parts = approval.splitn(3, ' ');
                let (Some(approver), Some(at), Some(comment)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(corrupt("bad approval"));
                };
                approvals.push(ApprovalRecord {
                    approver: SpiffeId::new(approver).map_err(|_| corrupt("bad approver"))?,
                    at: time(at)?,
                    comment: comment.to_owned(),
                });
            }
            Some((kind, rest)) => credentials
                .push(decode_credential(id, kind, rest).ok_or_else(|| corrupt("bad credential"))?),
            None => return Err(corrupt("empty section")),
        }
    }
    let grant = Grant {
        id,
        subject: SpiffeId::new(subject).map_err(|_| corrupt("bad subject"))?,
        entitlement: (*entitlement).to_owned(),
        actions: actions
            .split(' ')
            .map(Action::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| corrupt("bad action"))?,
        task_id: TaskId::new(task).map_err(|_| corrupt("bad task"))?,
        parent,
        justification: (*justification).to_owned(),
        ticket: (*ticket).to_owned(),
        created_at: time(created)?,
        expires_at,
        state,
        end_reason,
        epoch: Epoch::from_string((*epoch).to_owned()),
        break_glass: flags.contains('b'),
        per_task: flags.contains('t'),
        ttl: Duration::from_millis(ttl.parse().map_err(|_| corrupt("bad ttl"))?),
        approvals,
        decision: (*decision).to_owned(),
        delegation,
    };
    Ok(Some((grant, credentials)))
}

fn encode_event(event: &RevocationEvent) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("ep", event.epoch.to_string()),
        ("at", millis(event.at).to_string()),
        ("r", event.reason.clone()),
    ];
    if !event.grants.is_empty() {
        let grants: Vec<String> = event.grants.iter().map(ToString::to_string).collect();
        fields.push(("g", grants.join(" ")));
    }
    if let Some(credential) = &event.credential {
        fields.push(("c", credential.to_string()));
    }
    if let Some(task) = &event.task {
        fields.push(("t", task.to_string()));
    }
    fields
}

fn decode_event(fields: &HashMap<String, String>) -> Option<RevocationEvent> {
    let at: u64 = fields.get("at")?.parse().ok()?;
    Some(RevocationEvent {
        epoch: Epoch::from_string(fields.get("ep")?.clone()),
        at: SystemTime::UNIX_EPOCH + Duration::from_millis(at),
        grants: fields
            .get("g")
            .map(|ids| ids.split(' ').filter_map(GrantId::parse).collect())
            .unwrap_or_default(),
        credential: fields.get("c").and_then(|id| CredentialId::parse(id)),
        task: fields.get("t").and_then(|task| TaskId::new(task).ok()),
        reason: fields.get("r").cloned().unwrap_or_default(),
    })
}

/// The section of a credential up to its expiry: `SECTION`, `x` or `j`,
/// the random part of its id (the grant id it embeds is the record's own),
/// `:`.
fn credential_section(id: &CredentialId) -> String {
    match id {
        CredentialId::X509Serial(serial) => format!(
            "{SECTION}x{}{}:",
            serial.get(..2).unwrap_or_default(),
            serial.get(34..).unwrap_or_default()
        ),
        CredentialId::JwtId(jti) => format!("{SECTION}j{}:", jti.get(33..).unwrap_or_default()),
    }
}

fn decode_credential(grant_id: GrantId, kind: &str, rest: &str) -> Option<Credential> {
    let grant = grant_id.simple();
    let (random, value) = rest.split_once(':')?;
    let id = match kind {
        "x" if random.len() == 8 => {
            CredentialId::X509Serial(format!("{}{grant}{}", &random[..2], &random[2..]))
        }
        "j" => CredentialId::JwtId(format!("{grant}.{random}")),
        _ => return None,
    };
    let (expiry, revoked) = match value.strip_suffix(":r") {
        Some(expiry) => (expiry, true),
        None => (value, false),
    };
    let expiry: u64 = expiry.parse().ok()?;
    Some(Credential {
        id,
        grant_id,
        expires_at: SystemTime::UNIX_EPOCH + Duration::from_millis(expiry),
        revoked,
    })
}

fn state_code(state: GrantState) -> &'static str {
    match state {
        GrantState::Pending => "p",
        GrantState::Denied => "d",
        GrantState::Active => "a",
        GrantState::Completed => "c",
        GrantState::Revoked => "r",
    }
}

fn encode_review(review: &Review) -> String {
    let mut value = serde_json::json!({
        "grant": review.grant_id.simple(),
        "subject": review.subject.as_str(),
        "entitlement": review.entitlement,
        "actions": review.actions.iter().map(Action::as_str).collect::<Vec<_>>(),
        "task": review.task_id.as_str(),
        "justification": review.justification,
        "ticket": review.ticket,
        "opened": millis(review.opened_at),
        "expires": millis(review.expires_at),
    });
    if let Some(ack) = &review.ack {
        value["ack"] = serde_json::json!({
            "by": ack.by.as_str(),
            "at": millis(ack.at),
            "comment": ack.comment,
        });
    }
    value.to_string()
}

fn decode_review(text: &str) -> Option<Review> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let string = |value: &serde_json::Value, key: &str| value.get(key)?.as_str().map(str::to_owned);
    let time = |value: &serde_json::Value, key: &str| {
        Some(SystemTime::UNIX_EPOCH + Duration::from_millis(value.get(key)?.as_u64()?))
    };
    let ack = match value.get("ack") {
        Some(ack) => Some(ReviewAck {
            by: SpiffeId::new(&string(ack, "by")?).ok()?,
            at: time(ack, "at")?,
            comment: string(ack, "comment")?,
        }),
        None => None,
    };
    Some(Review {
        grant_id: GrantId::parse(&string(&value, "grant")?)?,
        subject: SpiffeId::new(&string(&value, "subject")?).ok()?,
        entitlement: string(&value, "entitlement")?,
        actions: value
            .get("actions")?
            .as_array()?
            .iter()
            .map(|action| Action::new(action.as_str()?).ok())
            .collect::<Option<Vec<_>>>()?,
        task_id: TaskId::new(&string(&value, "task")?).ok()?,
        justification: string(&value, "justification")?,
        ticket: string(&value, "ticket")?,
        opened_at: time(&value, "opened")?,
        expires_at: time(&value, "expires")?,
        ack,
    })
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn millis_of(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn unavailable(error: RedisError) -> StoreError {
    StoreError::Unavailable(Box::new(error))
}

fn unavailable_msg(message: &str) -> StoreError {
    StoreError::Unavailable(message.into())
}
