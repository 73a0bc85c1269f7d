//! The [`IdentityStore`] on Redis: the attestation identity registry in one
//! Cluster slot (`{ids}`), and join tokens, one key each.
//!
//! | key | type | content | expires |
//! |---|---|---|---|
//! | `jitid:{ids}:i:<serial>` | hash | `id` SPIFFE ID (empty: unseen), `nb`/`na` NotBefore/NotAfter ms, `at` issued ms, `via`, and once revoked `ra` ms, `rb` by, `rr` reason | `identity_max_ttl` after NotAfter |
//! | `jitid:{ids}:id:<SPIFFE ID>` | hash | a revocation by SPIFFE ID: `at` ms, `by`, `reason`; covers identities issued before `at` | `identity_max_ttl` after `at` |
//! | `jitid:{ids}:all` | sorted set | serials by when their record expires, for listing | with the last record it lists; members when a record is written after their time |
//! | `jitid:jt:<sha256 hex>` | string | a join token (JSON: SPIFFE ID, creator, created, expires); taken with `GETDEL` | when the token expires |
//!
//! The check made at every attestation is one script (`lua/identity_check.lua`)
//! on the `{ids}` slot: one round trip, which also registers an identity
//! seen for the first time. Revocations wait for replicas like the grant
//! store's (`wait_replicas`).

use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use redis::Script;

use super::encoding::{free_text, millis};
use super::{RedisStore, unavailable};
use crate::spiffe_id::SpiffeId;
use crate::store::StoreError;
use crate::store::identities::{
    IdentityCheck, IdentityRecord, IdentityRevocation, IdentityStore, IssuedVia, JoinToken,
    PresentedIdentity, SerialRevocation,
};

static CHECK: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/identity_check.lua")));
static RECORD: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/identity_record.lua")));
static REVOKE_SERIAL: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/identity_revoke_serial.lua")));
static REVOKE_ID: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/identity_revoke_id.lua")));

/// A join token as stored.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredToken {
    spiffe_id: String,
    created_by: String,
    created_ms: u64,
    expires_ms: u64,
}

impl RedisStore {
    fn identity_key(&self, serial: &str) -> String {
        format!("{}:{{ids}}:i:{serial}", self.prefix())
    }

    fn identity_id_key(&self, spiffe_id: &SpiffeId) -> String {
        format!("{}:{{ids}}:id:{spiffe_id}", self.prefix())
    }

    fn identity_index_key(&self) -> String {
        format!("{}:{{ids}}:all", self.prefix())
    }

    fn join_token_key(&self, hash: &str) -> String {
        format!("{}:jt:{hash}", self.prefix())
    }
}

#[async_trait]
impl IdentityStore for RedisStore {
    async fn check_identity(
        &self,
        presented: &PresentedIdentity<'_>,
        keep_for: Duration,
    ) -> Result<IdentityCheck, StoreError> {
        let mut connection = self.redis.connection();
        let answer: Vec<String> = CHECK
            .key(self.identity_key(presented.serial))
            .key(self.identity_id_key(presented.spiffe_id))
            .key(self.identity_index_key())
            .arg(presented.serial)
            .arg(presented.spiffe_id.as_str())
            .arg(millis(presented.not_before))
            .arg(millis(presented.not_after))
            .arg(millis(presented.issued_at))
            .arg(millis(presented.not_after + keep_for))
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        match answer.as_slice() {
            [ok] if ok == "ok" => Ok(IdentityCheck::Good),
            [revoked, at, by, reason] if revoked == "revoked" => {
                Ok(IdentityCheck::Revoked(IdentityRevocation {
                    at: from_millis(at),
                    by: by.clone(),
                    reason: reason.clone(),
                }))
            }
            other => Err(corrupt(presented.serial, other)),
        }
    }

    async fn record_identity(
        &self,
        record: &IdentityRecord,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        let mut connection = self.redis.connection();
        let _: i64 = RECORD
            .key(self.identity_key(&record.serial))
            .key(self.identity_index_key())
            .arg(&record.serial)
            .arg(record.spiffe_id.as_ref().map_or("", SpiffeId::as_str))
            .arg(millis(record.not_before))
            .arg(millis(record.not_after))
            .arg(millis(record.issued_at))
            .arg(record.via.as_str())
            .arg(millis(record.not_after + keep_for))
            .arg(millis(SystemTime::now()))
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn discard_identity(&self, serial: &str) -> Result<(), StoreError> {
        let mut connection = self.redis.connection();
        redis::pipe()
            .cmd("DEL")
            .arg(self.identity_key(serial))
            .ignore()
            .cmd("ZREM")
            .arg(self.identity_index_key())
            .arg(serial)
            .ignore()
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn revoke_identity_serial(
        &self,
        serial: &str,
        revocation: &IdentityRevocation,
        keep_for: Duration,
    ) -> Result<SerialRevocation, StoreError> {
        let mut connection = self.redis.connection();
        let answer: Vec<String> = REVOKE_SERIAL
            .key(self.identity_key(serial))
            .key(self.identity_index_key())
            .arg(serial)
            .arg(millis(revocation.at))
            .arg(free_text(&revocation.by))
            .arg(free_text(&revocation.reason))
            .arg(millis(revocation.at + keep_for))
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        self.replicate().await?;
        let id = |text: &str| SpiffeId::new(text).ok();
        match answer.as_slice() {
            [outcome, spiffe_id] if outcome == "revoked" => match id(spiffe_id) {
                Some(spiffe_id) => Ok(SerialRevocation::Revoked(spiffe_id)),
                None => Ok(SerialRevocation::AlreadyRevoked(None)),
            },
            [outcome, spiffe_id] if outcome == "already" => {
                Ok(SerialRevocation::AlreadyRevoked(id(spiffe_id)))
            }
            [outcome, _] if outcome == "unseen" => Ok(SerialRevocation::Unseen),
            other => Err(corrupt(serial, other)),
        }
    }

    async fn revoke_identity_id(
        &self,
        spiffe_id: &SpiffeId,
        revocation: &IdentityRevocation,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        let mut connection = self.redis.connection();
        let _: i64 = REVOKE_ID
            .key(self.identity_id_key(spiffe_id))
            .arg(millis(revocation.at))
            .arg(free_text(&revocation.by))
            .arg(free_text(&revocation.reason))
            .arg(millis(revocation.at + keep_for))
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        self.replicate().await
    }

    async fn identities(&self) -> Result<Vec<IdentityRecord>, StoreError> {
        let mut connection = self.redis.connection();
        let index = self.identity_index_key();
        let (serials,): (Vec<String>,) = redis::pipe()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&index)
            .arg("-inf")
            .arg(millis(SystemTime::now()))
            .ignore()
            .cmd("ZRANGE")
            .arg(&index)
            .arg(0)
            .arg(-1)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        if serials.is_empty() {
            return Ok(Vec::new());
        }
        let mut reads = redis::pipe();
        for serial in &serials {
            reads.cmd("HGETALL").arg(self.identity_key(serial));
        }
        let hashes: Vec<HashMap<String, String>> = reads
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let mut records: Vec<IdentityRecord> = serials
            .iter()
            .zip(&hashes)
            // A record that expired since the index was read is gone.
            .filter(|(_, fields)| !fields.is_empty())
            .map(|(serial, fields)| decode_record(serial, fields))
            .collect::<Result<_, _>>()?;
        let ids: BTreeSet<SpiffeId> = records
            .iter()
            .filter(|record| record.revoked.is_none())
            .filter_map(|record| record.spiffe_id.clone())
            .collect();
        if !ids.is_empty() {
            let mut reads = redis::pipe();
            for id in &ids {
                reads.cmd("HGETALL").arg(self.identity_id_key(id));
            }
            let revocations: Vec<HashMap<String, String>> = reads
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            let by_id: HashMap<&SpiffeId, IdentityRevocation> = ids
                .iter()
                .zip(&revocations)
                .filter_map(|(id, fields)| {
                    Some((
                        id,
                        IdentityRevocation {
                            at: from_millis(fields.get("at")?),
                            by: fields.get("by").cloned().unwrap_or_default(),
                            reason: fields.get("reason").cloned().unwrap_or_default(),
                        },
                    ))
                })
                .collect();
            for record in &mut records {
                if record.revoked.is_none()
                    && let Some(revocation) = record.spiffe_id.as_ref().and_then(|id| by_id.get(id))
                    && record.issued_before(revocation.at)
                {
                    record.revoked = Some(revocation.clone());
                }
            }
        }
        records.sort_by(|a, b| (a.issued_at, &a.serial).cmp(&(b.issued_at, &b.serial)));
        Ok(records)
    }

    async fn put_join_token(&self, token: &JoinToken) -> Result<(), StoreError> {
        let stored = StoredToken {
            spiffe_id: token.spiffe_id.to_string(),
            created_by: token.created_by.clone(),
            created_ms: millis(token.created_at),
            expires_ms: millis(token.expires_at),
        };
        let value = serde_json::to_string(&stored).map_err(|error| StoreError::Corrupt {
            key: self.join_token_key(&token.hash),
            message: error.to_string(),
        })?;
        let mut connection = self.redis.connection();
        redis::cmd("SET")
            .arg(self.join_token_key(&token.hash))
            .arg(value)
            .arg("PXAT")
            .arg(stored.expires_ms.max(1))
            .arg("NX")
            .query_async::<Option<String>>(&mut connection)
            .await
            .map_err(unavailable)?;
        self.replicate().await
    }

    async fn take_join_token(&self, hash: &str) -> Result<Option<JoinToken>, StoreError> {
        let key = self.join_token_key(hash);
        let mut connection = self.redis.connection();
        let value: Option<String> = redis::cmd("GETDEL")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let Some(value) = value else {
            return Ok(None);
        };
        let corrupt = |message: String| StoreError::Corrupt {
            key: key.clone(),
            message,
        };
        let stored: StoredToken =
            serde_json::from_str(&value).map_err(|error| corrupt(error.to_string()))?;
        let token = JoinToken {
            hash: hash.to_owned(),
            spiffe_id: SpiffeId::new(&stored.spiffe_id).map_err(|e| corrupt(e.to_string()))?,
            created_by: stored.created_by,
            created_at: from_millis_u64(stored.created_ms),
            expires_at: from_millis_u64(stored.expires_ms),
        };
        // Redis expires keys lazily to the millisecond; the token's own
        // expiry decides.
        Ok((token.expires_at > SystemTime::now()).then_some(token))
    }
}

fn decode_record(
    serial: &str,
    fields: &HashMap<String, String>,
) -> Result<IdentityRecord, StoreError> {
    let corrupt = |message: &str| StoreError::Corrupt {
        key: format!("{{ids}}:i:{serial}"),
        message: message.to_owned(),
    };
    let time = |name: &str| {
        fields
            .get(name)
            .map(|text| from_millis(text))
            .ok_or_else(|| corrupt(&format!("no {name}")))
    };
    let spiffe_id = match fields.get("id").map(String::as_str) {
        None | Some("") => None,
        Some(text) => Some(SpiffeId::new(text).map_err(|_| corrupt("invalid SPIFFE ID"))?),
    };
    let via = fields
        .get("via")
        .and_then(|text| IssuedVia::parse(text))
        .ok_or_else(|| corrupt("unknown via"))?;
    let revoked = fields.get("ra").map(|at| IdentityRevocation {
        at: from_millis(at),
        by: fields.get("rb").cloned().unwrap_or_default(),
        reason: fields.get("rr").cloned().unwrap_or_default(),
    });
    Ok(IdentityRecord {
        serial: serial.to_owned(),
        spiffe_id,
        not_before: time("nb")?,
        not_after: time("na")?,
        via,
        issued_at: time("at")?,
        revoked,
    })
}

fn from_millis(text: &str) -> SystemTime {
    from_millis_u64(text.parse().unwrap_or(0))
}

fn from_millis_u64(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

fn corrupt(serial: &str, answer: &[String]) -> StoreError {
    StoreError::Corrupt {
        key: format!("{{ids}}:i:{serial}"),
        message: format!("unexpected script answer {answer:?}"),
    }
}
