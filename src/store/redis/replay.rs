//! [`ReplayGuard`] on Redis: one key per claimed token, written in one
//! round trip (`SET ... NX PXAT ... GET`, Redis 7), so two replicas given
//! the same token at once cannot both claim it.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::encoding::millis;
use super::{RedisStore, unavailable};
use crate::grant::GrantId;
use crate::store::{Claim, ReplayGuard, StoreError};

impl RedisStore {
    /// `jitid:tok:<SHA-256 of the token id>`: fixed length, whatever the
    /// issuer put in its `jti`.
    fn token_key(&self, token: &str) -> String {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let hex: String = digest
            .as_ref()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        format!("{}:tok:{hex}", self.prefix())
    }
}

#[async_trait]
impl ReplayGuard for RedisStore {
    async fn claim_token(
        &self,
        token: &str,
        grant: GrantId,
        until: SystemTime,
    ) -> Result<Claim, StoreError> {
        // A claim is kept at least a second, even for a token about to
        // expire: Redis refuses an expiry in the past.
        let until = until.max(SystemTime::now() + Duration::from_secs(1));
        let mut connection = self.redis.connection();
        let held: Option<String> = redis::cmd("SET")
            .arg(self.token_key(token))
            .arg(grant.simple())
            .arg("NX")
            .arg("PXAT")
            .arg(millis(until))
            .arg("GET")
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        match held {
            None => Ok(Claim::Claimed),
            Some(holder) => {
                GrantId::parse(&holder)
                    .map(Claim::HeldBy)
                    .ok_or_else(|| StoreError::Corrupt {
                        key: self.token_key(token),
                        message: "not a grant id".to_owned(),
                    })
            }
        }
    }

    async fn token_holder(&self, token: &str) -> Result<Option<GrantId>, StoreError> {
        let mut connection = self.redis.connection();
        let held: Option<String> = redis::cmd("GET")
            .arg(self.token_key(token))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        match held {
            None => Ok(None),
            Some(holder) => GrantId::parse(&holder)
                .map(Some)
                .ok_or_else(|| StoreError::Corrupt {
                    key: self.token_key(token),
                    message: "not a grant id".to_owned(),
                }),
        }
    }
}
