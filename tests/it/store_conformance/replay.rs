//! The replay guard every backend keeps: a token is claimed once, for one
//! grant, atomically (one winner among concurrent claims), and forgotten
//! when it expires.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jitid::clock::ManualClock;
use jitid::grant::{GrantId, Shard};
use jitid::spiffe_id::SpiffeId;
use jitid::store::{Claim, GrantStore, MemoryStore, RedisStore, ReplayGuard};

use super::{ALICE, redis_config};
use crate::support::redis::RedisServer;

fn grant_id() -> GrantId {
    GrantId::generate(Shard::of(&SpiffeId::new(ALICE).unwrap()))
}

pub(super) async fn replay_conformance(store: &dyn GrantStore) {
    let until = SystemTime::now() + Duration::from_secs(300);
    let token = format!("github/{}", uuid::Uuid::new_v4());
    let (first, second) = (grant_id(), grant_id());
    assert_eq!(store.token_holder(&token).await.unwrap(), None);
    assert_eq!(
        store.claim_token(&token, first, until).await.unwrap(),
        Claim::Claimed
    );
    assert_eq!(store.token_holder(&token).await.unwrap(), Some(first));
    assert_eq!(
        store.claim_token(&token, second, until).await.unwrap(),
        Claim::HeldBy(first),
        "a replay finds the first grant"
    );
    assert_eq!(
        store.claim_token(&token, first, until).await.unwrap(),
        Claim::HeldBy(first),
        "even for the same grant: a claim is made once"
    );
    assert_eq!(store.token_holder(&token).await.unwrap(), Some(first));
    // Another provider's token with the same jti is another token.
    let other = token.replacen("github/", "gitlab/", 1);
    assert_eq!(
        store.claim_token(&other, second, until).await.unwrap(),
        Claim::Claimed
    );

    // Claims racing for one fresh token: exactly one wins, and every loser
    // is told who.
    let token = format!("github/{}", uuid::Uuid::new_v4());
    let grants: Vec<GrantId> = (0..16).map(|_| grant_id()).collect();
    let claims = futures_join(store, &token, &grants, until).await;
    let winners: Vec<GrantId> = grants
        .iter()
        .zip(&claims)
        .filter(|(_, claim)| **claim == Claim::Claimed)
        .map(|(grant, _)| *grant)
        .collect();
    assert_eq!(winners.len(), 1, "{claims:?}");
    assert!(
        claims
            .iter()
            .all(|claim| *claim == Claim::Claimed || *claim == Claim::HeldBy(winners[0])),
        "{claims:?}"
    );
}

async fn futures_join(
    store: &dyn GrantStore,
    token: &str,
    grants: &[GrantId],
    until: SystemTime,
) -> Vec<Claim> {
    let mut pending = Vec::new();
    for grant in grants {
        pending.push(store.claim_token(token, *grant, until));
    }
    let mut claims = Vec::new();
    // Polled together, so the store sees them interleaved.
    let results = join_all(pending).await;
    for result in results {
        claims.push(result.unwrap());
    }
    claims
}

/// Polls every future to completion together.
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|context| {
        let mut done = true;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(context) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[tokio::test]
async fn a_memory_claim_is_forgotten_when_its_token_expires() {
    let start = SystemTime::now();
    let clock = Arc::new(ManualClock::new(start));
    let store = MemoryStore::new(clock.clone());
    let (first, second) = (grant_id(), grant_id());
    let until = start + Duration::from_secs(60);
    store.claim_token("t", first, until).await.unwrap();
    clock.advance(Duration::from_secs(59));
    assert_eq!(store.token_holder("t").await.unwrap(), Some(first));
    assert_eq!(
        store.claim_token("t", second, until).await.unwrap(),
        Claim::HeldBy(first)
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(store.token_holder("t").await.unwrap(), None);
    assert_eq!(
        store
            .claim_token("t", second, until + Duration::from_secs(60))
            .await
            .unwrap(),
        Claim::Claimed
    );
}

#[tokio::test]
async fn a_redis_claim_expires_with_its_token_and_names_no_jti() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(redis_config(vec![redis.url()], false))
        .await
        .unwrap();
    let until = SystemTime::UNIX_EPOCH
        + Duration::from_secs(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 600,
        );
    let grant = grant_id();
    let token = "github/secret-looking-jti";
    store.claim_token(token, grant, until).await.unwrap();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let key = format!("jitid:tok:{hex}");
    assert_eq!(redis.command(&["GET", &key]), grant.simple());
    assert_eq!(
        redis.command(&["EXISTS", &format!("jitid:tok:{token}")]),
        "0"
    );
    let expires_ms: u128 = redis
        .command(&["PEXPIRETIME", &key])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        expires_ms,
        until
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
}
