//! The revocation stream (`jitid:revocations`: publish, and a blocking
//! reader on a connection of its own) and the relying parties that follow
//! it, with which events each has applied.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::encoding::{decode_event, decode_party, encode_event, encode_party, millis, millis_of};
use super::{RedisStore, unavailable};
use crate::redis_conn::RedisConnection;
use crate::store::{RelyingParty, RevocationEvent, RevocationFeed, StoreError};

/// The field of an applied hash marking that every party had applied it
/// (not a valid party name).
const ALL_APPLIED: &str = "*all";

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
    pub(super) async fn publish_event(
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
        let mut connection = self.redis.connection();
        let id: String = command
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        self.replicate().await?;
        Ok(id)
    }

    pub(super) async fn open_feed(&self) -> Result<Box<dyn RevocationFeed>, StoreError> {
        let connection = self.redis.blocking_connection(MAX_FEED_WAIT).await?;
        Ok(Box::new(Feed {
            connection,
            key: self.stream_key(),
        }))
    }

    pub(super) async fn register_party(
        &self,
        party: &RelyingParty,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        let value = encode_party(party, keep_for);
        let mut connection = self.redis.connection();
        let () = redis::cmd("HSET")
            .arg(self.parties_key())
            .arg(&party.name)
            .arg(value)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(super) async fn parties(&self) -> Result<Vec<RelyingParty>, StoreError> {
        let now = millis(SystemTime::now());
        let mut connection = self.redis.connection();
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

    pub(super) async fn mark_party_applied(
        &self,
        cursor: &str,
        party: &str,
        at: SystemTime,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        let key = self.applied_key(cursor);
        let mut connection = self.redis.connection();
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

    pub(super) async fn applied_by(
        &self,
        cursor: &str,
    ) -> Result<Vec<(String, SystemTime)>, StoreError> {
        let mut connection = self.redis.connection();
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

    pub(super) async fn mark_everyone_applied(
        &self,
        cursor: &str,
        keep_for: Duration,
    ) -> Result<bool, StoreError> {
        let key = self.applied_key(cursor);
        let mut connection = self.redis.connection();
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
