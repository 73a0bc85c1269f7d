//! [`RedisAuditLog`]: the chain in Redis, every key in the `{audit}` slot
//! (prefix `jitid`):
//!
//! | key | type | content | expires |
//! |---|---|---|---|
//! | `jitid:{audit}:log` | stream | the audit chain, entry id `<seq>-0`, field `e` = the event's JSON line | trimmed by retention |
//! | `jitid:{audit}:head` | string | `<seq> <hash>` of the chain's last event | never |
//! | `jitid:{audit}:checkpoint` | string | `<seq> <JWS>`: the signed head of the last event retention cut | never |
//! | `jitid:{audit}:expiring` | sorted set | grants (hex) the trail will record as expired, by expiry (ms) | members when recorded or ended |
//! | `jitid:{audit}:expiring:grants` | hash | those grants' subject, task, entitlement and state, JSON | with their member |
//! | `jitid:{audit}:upkeep` | string | the replica that records expiries and trims | after 3 upkeep intervals |
//!
//! Every write is one Lua script (`lua/*.lua`, one file each). The log may
//! share its connection with the grant store (`store::RedisStore`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use redis::Script;

use super::{AppendOutcome, AuditLog, AuditLogError, millis};
use crate::audit::upkeep::{Expiring, ExpiryEffect, SignedCheckpoint, expiry_effects};
use crate::audit::{AuditEvent, Chained, Head};
use crate::redis_conn::{RedisConnError, RedisHandle};

/// The chain in Redis, on a connection it may share with the grant store.
#[derive(Clone)]
pub struct RedisAuditLog {
    redis: RedisHandle,
    scripts: Arc<Scripts>,
}

/// The log's scripts, each in its own file under `lua/`.
struct Scripts {
    append: Script,
    due: Script,
    trim: Script,
    lease: Script,
}

// === impl RedisAuditLog ===

impl RedisAuditLog {
    /// The chain kept in the Redis that `redis` reaches: a [`RedisHandle`],
    /// or the `Arc<RedisStore>` whose connection it shares.
    pub fn new(redis: impl Into<RedisHandle>) -> Self {
        Self {
            redis: redis.into(),
            scripts: Arc::new(Scripts {
                append: Script::new(include_str!("lua/append.lua")),
                due: Script::new(include_str!("lua/due.lua")),
                trim: Script::new(include_str!("lua/trim.lua")),
                lease: Script::new(include_str!("lua/lease.lua")),
            }),
        }
    }

    fn audit_keys(&self) -> (String, String) {
        (self.audit_key("head"), self.audit_key("log"))
    }

    /// A key of the audit trail's slot.
    fn audit_key(&self, name: &str) -> String {
        format!("{}:{{audit}}:{name}", self.redis.key_prefix())
    }
}

impl std::fmt::Debug for RedisAuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAuditLog")
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl AuditLog for RedisAuditLog {
    async fn head(&self) -> Result<Head, AuditLogError> {
        let (head_key, _) = self.audit_keys();
        let mut connection = self.redis.connection();
        let head: Option<String> = redis::cmd("GET")
            .arg(&head_key)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        match head {
            None => Ok(Head::genesis()),
            Some(text) => Head::decode(&text).ok_or_else(|| AuditLogError::Corrupt {
                key: head_key,
                message: "bad audit head".to_owned(),
            }),
        }
    }

    async fn append(
        &self,
        expected: &Head,
        chained: &Chained,
    ) -> Result<AppendOutcome, AuditLogError> {
        let events = &chained.events;
        let Some(last) = events.last() else {
            return Ok(AppendOutcome::Appended(expected.clone()));
        };
        let (head_key, log_key) = self.audit_keys();
        let mut invocation = self.scripts.append.prepare_invoke();
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
        let mut connection = self.redis.connection();
        let (appended, head): (u32, String) = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let head = Head::decode(&head).ok_or_else(|| AuditLogError::Corrupt {
            key: head_key,
            message: "bad audit head".to_owned(),
        })?;
        if appended == 1 {
            self.redis.replicate().await?;
            Ok(AppendOutcome::Appended(head))
        } else {
            Ok(AppendOutcome::Moved(head))
        }
    }

    async fn read(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, AuditLogError> {
        let (_, log_key) = self.audit_keys();
        let mut connection = self.redis.connection();
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
                AuditEvent::from_line(&line).map_err(|message| AuditLogError::Corrupt {
                    key: format!("{log_key} {id}"),
                    message,
                })
            })
            .collect()
    }

    async fn due(&self, now: SystemTime, limit: usize) -> Result<Vec<Expiring>, AuditLogError> {
        let now_ms = millis(now);
        let mut invocation = self.scripts.due.prepare_invoke();
        invocation
            .key(self.audit_key("expiring"))
            .key(self.audit_key("expiring:grants"))
            .arg(now_ms)
            .arg(limit.max(1));
        let mut connection = self.redis.connection();
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

    async fn checkpoint(&self) -> Result<Option<SignedCheckpoint>, AuditLogError> {
        let key = self.audit_key("checkpoint");
        let mut connection = self.redis.connection();
        let text: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        text.map(|text| {
            SignedCheckpoint::decode(&text).ok_or_else(|| AuditLogError::Corrupt {
                key,
                message: "bad audit checkpoint".to_owned(),
            })
        })
        .transpose()
    }

    async fn trim(&self, checkpoint: &SignedCheckpoint) -> Result<(), AuditLogError> {
        let mut invocation = self.scripts.trim.prepare_invoke();
        invocation
            .key(self.audit_key("checkpoint"))
            .key(self.audit_key("log"))
            .arg(checkpoint.seq)
            .arg(checkpoint.encode());
        let mut connection = self.redis.connection();
        let _: u32 = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn lease(&self, holder: &str, ttl: Duration) -> Result<bool, AuditLogError> {
        let mut invocation = self.scripts.lease.prepare_invoke();
        invocation
            .key(self.audit_key("upkeep"))
            .arg(holder)
            .arg(ttl.as_millis().max(1) as u64);
        let mut connection = self.redis.connection();
        let taken: u32 = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(taken == 1)
    }
}

impl From<RedisConnError> for AuditLogError {
    fn from(error: RedisConnError) -> Self {
        match error {
            RedisConnError::NotReplicated { acked, wanted } => {
                AuditLogError::NotReplicated { acked, wanted }
            }
            other => AuditLogError::Unavailable(Box::new(other)),
        }
    }
}

fn unavailable(error: redis::RedisError) -> AuditLogError {
    AuditLogError::Unavailable(Box::new(error))
}
